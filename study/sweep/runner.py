"""The driver: run, resume and inspect a study whose source of truth is its store.

`run` writes the resolved spec and the plan to the store, prepares the datasets into it,
runs the pretraining units (Ray Train, DDP) and then fans the fine-tuning and from-scratch
units out over Ray Tune, in chunks. `resume` is the same with the spec read back from the
store: it runs exactly the planned units whose result row is missing, whatever happened to
the previous driver or to Tune's own state.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from tqdm.auto import tqdm

from study.data import dataset_source, prepared_key
from study.data.config import DatasetConfig
from study.data.prepared import cache_folder, check_fingerprint, default_cache_dir, prepare_to
from study.errors import ConfigError, DataError, StorageError, StudyError
from study.schema import run_marker_path
from study.store import Store
from study.sweep.load import parse_spec, spec_to_yaml
from study.sweep.plan import STAGES, Plan, Unit, make_plan
from study.sweep.resolve import upstream_config
from study.sweep.spec import Spec

__all__ = [
    "run_study",
    "resume_study",
    "study_status",
    "load_study",
    "failures",
    "StudyOutcome",
]

# A running marker not touched for this long is reported as stale (its driver is gone).
STALE_AFTER_S = 30 * 60


@dataclass
class StudyOutcome:
    store: Store
    planned: int  # every unit, pretraining included
    done: int
    failed: list[str]  # ids of the planned units without a result
    trials_planned: int = 0  # fine-tuning and from-scratch units (rows of results/trials)
    trials_done: int = 0

    @property
    def complete(self) -> bool:
        return self.done == self.planned


def code_version() -> str:
    """`git describe` of the checkout the driver runs from, else the package version."""
    from study import __version__

    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parents[2],
        )
        if out.returncode == 0 and out.stdout.strip():
            return f"{__version__}+{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__


def _log(msg: str) -> None:
    print(f"[study] {msg}", file=sys.stderr, flush=True)


# --- the store side -------------------------------------------------------------------------
def init_study(store: Store, spec: Spec) -> Plan:
    """Write spec and plan into a new study root, or check that they match an existing one."""
    plan = make_plan(spec)
    if store.exists("spec.yaml"):
        stored = load_spec_from_store(store)
        if stored.digest() != spec.digest():
            raise ConfigError(
                f"{store.uri} already holds study {stored.name!r} with a different spec; "
                f"use `study resume {store.uri}` to finish it, or another --name"
            )
        check_stored_plan(store, plan)
    else:
        store.write_bytes("spec.yaml", spec_to_yaml(spec).encode())
    if not store.exists("plan.parquet"):
        write_plan(store, plan)
    return plan


def write_plan(store: Store, plan: Plan) -> None:
    """plan.parquet: every unit with its axes and config, and (in the file's metadata) the
    code version that planned them and when."""
    table = pa.Table.from_pandas(plan.table(), preserve_index=False)
    meta = {
        b"code_version": code_version().encode(),
        b"planned_at": datetime.now(UTC).isoformat().encode(),
    }
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **meta}), buf)
    store.write_bytes("plan.parquet", buf.getvalue())


def check_stored_plan(store: Store, plan: Plan) -> None:
    """Raise ConfigError when the study's stored plan holds other unit ids than this code
    plans from its spec: resuming would re-run the moved units and orphan their rows.

    A study without plan.parquet (deleted) is not checked here; `init_study` rewrites it.
    """
    if not store.exists("plan.parquet"):
        return
    plan_bytes = io.BytesIO(store.read_bytes("plan.parquet"))
    stored = pq.read_table(plan_bytes, columns=["unit_id"], use_threads=False)
    old, new = set(stored.column("unit_id").to_pylist()), {u.unit_id for u in plan.units}
    if old == new:
        return
    meta = stored.schema.metadata or {}
    version = meta.get(b"code_version", b"an unrecorded version").decode()
    when = meta.get(b"planned_at", b"").decode()
    done = stored_result_ids(store) & old
    raise ConfigError(
        f"{store.uri}: its stored plan does not match what this code plans from its spec. "
        f"Stored: {len(old)} units, planned by code version {version}"
        f"{' at ' + when if when else ''}; this code ({code_version()}) plans {len(new)}, "
        f"{len(old - new)} of the stored ids no longer among them and {len(new - old)} new. "
        "Unit ids moved (the code changed what identifies a unit, e.g. a cache key), so "
        f"resuming would run {len(new - old)} units again and leave {len(done)} stored rows "
        "orphaned. Finish the study with the code version that planned it, or start a new "
        "study (another --name) with this one."
    )


def load_spec_from_store(store: Store) -> Spec:
    if not store.exists("spec.yaml"):
        raise StorageError(f"{store.uri} is not a study (no spec.yaml)")
    return parse_spec(yaml.safe_load(store.read_bytes("spec.yaml")), f"{store.uri}/spec.yaml")


def load_study(uri: str) -> tuple[Store, Spec, Plan]:
    """The study at `uri`: its store, spec and plan (checked against the stored plan).

    Raises:
        StorageError: no study there.
        ConfigError: the stored plan holds other unit ids than this code plans.
    """
    store = Store(uri)
    spec = load_spec_from_store(store)
    plan = make_plan(spec)
    check_stored_plan(store, plan)
    return store, spec, plan


def stored_result_ids(store: Store) -> set[str]:
    """Ids of every unit whose result row is in the store (one listing per table)."""
    return {
        n.removesuffix(".parquet")
        for d in ("trials", "pretrain")
        for n in store.list_names(f"results/{d}", ".parquet")
    }


def done_ids(store: Store, units: Iterable[Unit]) -> set[str]:
    """Ids of the units whose result row is in the store (listing, not one probe per unit)."""
    present = stored_result_ids(store)
    return {u.unit_id for u in units if u.unit_id in present}


def study_datasets(spec: Spec) -> dict[str, tuple[str, DatasetConfig]]:
    """Every prepared dataset a study reads, by key, as (dataset, config): each downstream
    dataset or variant, and each upstream once per distinct preparation its pretraining
    tasks need."""
    out: dict[str, tuple[str, DatasetConfig]] = {}
    for name in spec.downstream:
        config, source = spec.dataset_config(name), spec.source_name(name)
        out[prepared_key(source, config)] = (source, config)
    for name in spec.upstream:
        for task in spec.pretrain.tasks:
            config, source = upstream_config(spec, name, task), spec.source_name(name)
            out[prepared_key(source, config)] = (source, config)
    return dict(sorted(out.items()))


def prepare_datasets(store: Store, spec: Spec, units: list | None = None) -> None:
    """Prepare each dataset of the study once into the store (meta.json last: it marks a
    complete copy). Real datasets are read from their source folder on this machine.

    A dataset already in the store is the study's: it is used as it is, and its source
    folder is not needed (a study resumes on a machine without the raw data). Where the
    folder is here, its fingerprint is checked against the one the study was prepared
    from, so a changed download never mixes into a study half-way.

    With `units`, also check that each unit's objective fits its prepared dataset (label
    kind, per-sample vs per-record model) before anything is trained: once per
    (architecture, dataset, task), not once per unit.

    Raises:
        DataError: a dataset cannot be prepared, its folder holds other content than the
            study was prepared from, or a unit's task does not fit its data.
    """
    from study.sweep.execute import unit_objective

    local = Path(store.path("prepared")) if store.is_local else default_cache_dir()
    for key, (name, config) in study_datasets(spec).items():
        source = dataset_source(name)
        in_store = store.exists(f"prepared/{key}/meta.json")
        folder_here = source.reads_folder and Path(config.source or "").is_dir()
        if in_store and folder_here:
            _log(f"checking the source of dataset {name} ({key}) against the study's copy")
            check_fingerprint(
                store.read_json(f"prepared/{key}/meta.json"),
                f"{store.uri}/prepared/{key}",
                source.fingerprint(config, progress=True),
                config.source,
            )
        elif not in_store:
            _log(f"preparing dataset {name} ({key})")
            fingerprint = source.fingerprint(config, progress=True)  # walked once
            if store.is_local:
                prepare_to(name, config, local / key, fingerprint, progress=True)
            else:
                dest = local / cache_folder(key, fingerprint)
                path = prepare_to(name, config, dest, fingerprint, progress=True)
                store.upload_dir(path, f"prepared/{key}", last="meta.json")
    # what each prepared dataset's labels are: its meta.json in the store (local or S3)
    kinds: dict[str, tuple[str, str]] = {}
    seen: set[tuple] = set()
    for unit in units or []:
        c = unit.config
        check = (c.architecture, str(c.architecture_options), c.data_key, c.pretrain_task)
        if check in seen:
            continue
        seen.add(check)
        if c.data_key not in kinds:
            meta = store.read_json(f"prepared/{c.data_key}/meta.json")
            kinds[c.data_key] = (meta.get("label_kind", "multi_label"), meta["name"])
        label_kind, name = kinds[c.data_key]
        unit_objective(unit, label_kind, f"{name} ({store.uri}/prepared/{c.data_key})")
    if units:
        check_shared_records(store, make_plan(spec).units)


#: Share of a downstream's test records found in an upstream's pretraining records from
#: which the two are taken to hold the same recordings.
SHARED_RECORDS_LIMIT = 0.1


def check_shared_records(store: Store, units: list) -> None:
    """Refuse to fine-tune on a downstream whose test records the upstream pretrained on.

    The plan already leaves out sources declared to read the same recordings
    (`DatasetSource.recordings`); this is the check from the data itself, for what no
    declaration knows of: a record is the pair (record_id, patient_id), and a pretraining
    unit's records are its training records (within its folds) and its validation records.
    Two unrelated datasets can share a few ids by chance, so the pairing is refused when at
    least SHARED_RECORDS_LIMIT of the downstream's test records are among them.

    Raises:
        DataError: names both datasets, the count and a few of the shared records.
    """
    by_id = {u.unit_id: u for u in units}
    pairs = {}
    for u in units:
        pre = by_id.get(u.config.pretrain_unit) if u.stage == "finetune" else None
        if pre is not None:
            key = (pre.config.data_key, pre.config.train_folds, u.config.data_key)
            pairs.setdefault(key, (pre.config.upstream, u.config.downstream))
    records: dict[str, pd.DataFrame] = {}

    def read(key: str) -> pd.DataFrame:
        if key not in records:
            data = store.read_bytes(f"prepared/{key}/records.parquet")
            table = pq.read_table(
                io.BytesIO(data), columns=["record_id", "patient_id", "fold", "split"]
            )
            records[key] = table.to_pandas()
        return records[key]

    for (up_key, folds, down_key), (up, down) in pairs.items():
        upstream, downstream = read(up_key), read(down_key)
        used = upstream[
            (upstream["split"] == "val")
            | ((upstream["split"] == "train") & (folds is None or upstream["fold"].isin(folds)))
        ]
        test = downstream[downstream["split"] == "test"]
        seen = set(zip(used["record_id"].astype(str), used["patient_id"].astype(str), strict=True))
        shared = [
            r
            for r in zip(test["record_id"].astype(str), test["patient_id"].astype(str), strict=True)
            if r in seen
        ]
        if shared and len(shared) >= SHARED_RECORDS_LIMIT * len(test):
            raise DataError(
                f"upstream {up} pretrains on {len(shared)} of the {len(test)} test records "
                f"of downstream {down} (same record and patient ids, e.g. "
                f"{', '.join(r for r, _ in shared[:3])}): they are the same recordings, so "
                f"fine-tuning {down} from {up} would be tested on records it was trained on. "
                f"Remove {up} from upstream or {down} from downstream"
            )


# --- Ray ------------------------------------------------------------------------------------
def ensure_ray(address: str | None = None) -> None:
    """Connect to a cluster (address or RAY_ADDRESS), or start a local one on loopback."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # "local": always a new instance of our own; without it ray.init() joins whatever
        # cluster last started on this machine (/tmp/ray/ray_current_cluster).
        ray.init(
            address="local",
            _node_ip_address="127.0.0.1",
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=True,
            logging_level="WARNING",
        )


def _pretrain_loop(config: dict) -> None:
    """The Ray Train worker function of a pretraining unit."""
    import ray.train
    import ray.train.torch
    import torch

    from study.sweep.execute import run_pretrain_worker

    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, int(config["threads"])))
    run_pretrain_worker(
        config["unit"],
        Store(config["store_uri"]),
        config["env"],
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        report=ray.train.report,
        device=str(device),
    )


def _run_pretrain_unit(unit: Unit, store: Store, spec: Spec, env: dict) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    p = spec.pretrain
    trainer = TorchTrainer(
        _pretrain_loop,
        train_loop_config={
            "unit": unit,
            "store_uri": store.uri,
            "env": env,
            "threads": p.cpus_per_worker,
        },
        scaling_config=ScalingConfig(
            num_workers=p.num_workers,
            use_gpu=p.use_gpu,
            resources_per_worker={"CPU": p.cpus_per_worker},
        ),
        torch_config=TorchConfig(backend="nccl" if p.use_gpu else "gloo"),
        run_config=RunConfig(
            # A fresh name per attempt: our own checkpoint in the store does the resuming.
            name=f"{unit.unit_id}-{uuid.uuid4().hex[:8]}",
            storage_path=store.path("_ray", "train"),
            storage_filesystem=store.fs,
            # Never retry forever: a unit whose workers cannot be placed must fail, not hang.
            failure_config=FailureConfig(
                max_failures=spec.execution.max_failures,
                controller_failure_limit=spec.execution.max_failures,
            ),
        ),
    )
    trainer.fit()


def _tune_trial(
    config: dict, units: dict, store_uri: str, env: dict, threads: float, use_gpu: bool
) -> None:
    """A Tune trial: one fine-tuning or from-scratch unit."""
    import ray.tune
    import torch

    from study.sweep.execute import run_finetune_unit

    torch.set_num_threads(max(1, int(threads)))
    device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
    run_finetune_unit(
        units[config["unit_id"]], Store(store_uri), env, report=ray.tune.report, device=device
    )


def _run_tune_chunk(units: list[Unit], store: Store, spec: Spec, env: dict, bar) -> None:
    from ray import tune

    from study.sweep._progress import Progress

    f = spec.finetune

    trainable = tune.with_resources(
        tune.with_parameters(
            _tune_trial,
            units={u.unit_id: u for u in units},
            store_uri=store.uri,
            env=env,
            threads=f.cpus_per_trial,
            use_gpu=f.gpus_per_trial > 0,
        ),
        {"cpu": f.cpus_per_trial, "gpu": f.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"unit_id": tune.grid_search([u.unit_id for u in units])},
        tune_config=tune.TuneConfig(max_concurrent_trials=f.max_concurrent, reuse_actors=True),
        run_config=tune.RunConfig(
            name=f"finetune-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
            storage_path=store.path("_ray", "tune"),
            storage_filesystem=store.fs,
            failure_config=tune.FailureConfig(max_failures=spec.execution.max_failures),
            callbacks=[Progress(bar)],
            verbose=0,
        ),
    )
    tuner.fit()


def _outcome(store: Store, plan: Plan, done: set[str]) -> StudyOutcome:
    trials = [u.unit_id for u in plan.units if u.stage != "pretrain"]
    return StudyOutcome(
        store,
        planned=len(plan.units),
        done=len(done),
        failed=[u.unit_id for u in plan.units if u.unit_id not in done],
        trials_planned=len(trials),
        trials_done=len(done.intersection(trials)),
    )


def _pretrain_progress(store: Store, units: list[Unit], epochs: int) -> str:
    """'pretraining pt-1234 epoch 3/12, ...' from the units' run markers."""
    parts = []
    for u in units:
        try:
            marker = store.read_json(run_marker_path(u.unit_id))
        except StudyError:
            continue
        if marker.get("state") == "running":
            parts.append(f"{u.unit_id} epoch {marker.get('epoch', 0)}/{epochs}")
    return "pretraining " + (", ".join(parts) if parts else "(starting workers)")


def _execute(store: Store, spec: Spec, plan: Plan, address: str | None) -> StudyOutcome:
    env = {"code_version": code_version(), "loader_workers": spec.execution.loader_workers}
    os.environ.setdefault(
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(spec.execution.worker_start_timeout_s)
    )
    done = done_ids(store, plan.units)
    pending = [u for u in plan.units if u.unit_id not in done]
    _log(
        f"study {spec.name} at {store.uri}: {len(plan.units)} units planned, "
        f"{len(done)} already done, {len(pending)} to run"
    )
    if not pending:
        return _outcome(store, plan, done)
    prepare_datasets(store, spec, pending)
    ensure_ray(address)
    bar = tqdm(
        total=len(pending),
        desc="units",
        unit="unit",
        mininterval=2,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    try:
        pre = [u for u in pending if u.stage == "pretrain"]
        if pre:
            bar.set_postfix_str("pretraining")

            def one(u: Unit) -> None:
                try:
                    _run_pretrain_unit(u, store, spec, env)
                except Exception as e:  # the unit's marker holds the traceback
                    _log(f"pretraining unit {u.unit_id} failed: {type(e).__name__}: {e}")
                finally:
                    bar.update(1)

            with ThreadPoolExecutor(spec.pretrain.max_concurrent) as pool:
                futures = [pool.submit(one, u) for u in pre]
                try:
                    while not all(f.done() for f in futures):
                        bar.set_postfix_str(_pretrain_progress(store, pre, spec.pretrain.epochs))
                        time.sleep(2)
                except KeyboardInterrupt:
                    # The trainers run in pool threads, which Ctrl-C does not reach: stopping
                    # Ray ends their fit() so the pool can close and the interrupt go through.
                    for f in futures:
                        f.cancel()
                    _log("interrupted: stopping the pretraining runs")
                    import ray

                    from study.sweep.execute import mark_interrupted

                    ray.shutdown()
                    finished = done_ids(store, pre)
                    for u in pre:
                        if u.unit_id not in finished:
                            mark_interrupted(store, u)
                    raise
        # A fine-tuning unit starts from a pretraining unit that is done (its row is in the
        # store), never from weights an unfinished run happened to leave.
        have_weights = done_ids(store, plan.by_stage("pretrain"))
        trials = [u for u in pending if u.stage != "pretrain"]
        runnable = [u for u in trials if u.depends_on is None or u.depends_on in have_weights]
        blocked = len(trials) - len(runnable)
        if blocked:
            _log(f"{blocked} fine-tuning units skipped: their pretraining unit failed")
            bar.update(blocked)
        bar.set_postfix_str("fine-tuning")
        size = spec.execution.tune_chunk_size
        for start in range(0, len(runnable), size):
            _run_tune_chunk(runnable[start : start + size], store, spec, env, bar)
    finally:
        bar.close()
    done = done_ids(store, plan.units)
    return _outcome(store, plan, done)


def run_study(
    spec: Spec, storage: str, name: str | None = None, address: str | None = None
) -> StudyOutcome:
    """Run (or continue) the study `spec` under `storage/name` (name defaults to spec.name)."""
    store = Store(storage).child(name or spec.name)
    plan = init_study(store, spec)
    return _execute(store, spec, plan, address)


def resume_study(uri: str, address: str | None = None) -> StudyOutcome:
    """Run exactly the planned units of the study at `uri` whose results are missing.

    Raises:
        ConfigError: the stored plan holds other unit ids than this code plans (ids moved:
            the message says how many, and which code version planned them).
    """
    store, spec, plan = load_study(uri)
    if not store.exists("plan.parquet"):
        write_plan(store, plan)
    return _execute(store, spec, plan, address)


def study_status(uri: str) -> pd.DataFrame:
    """done / running / failed / pending units per stage, from the store alone."""
    store, _, plan = load_study(uri)
    done = done_ids(store, plan.units)
    markers = {n.removesuffix(".json") for n in store.list_names("runs", ".json")}
    now = time.time()
    rows = []
    for u in plan.units:
        state = "pending"
        if u.unit_id in done:
            state = "done"
        elif u.unit_id in markers:
            m = store.read_json(run_marker_path(u.unit_id))
            age = now - datetime.fromisoformat(m["updated_at"]).timestamp()
            if m["state"] == "failed":
                state = "failed"
            elif m["state"] == "running" and age < STALE_AFTER_S:
                state = "running"
        rows.append({"stage": u.stage, "state": state, "unit_id": u.unit_id})
    df = pd.DataFrame(rows)
    table = (
        df.groupby(["stage", "state"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=list(STAGES), columns=["done", "running", "failed", "pending"], fill_value=0)
    )
    table.loc["total"] = table.sum()
    return table


def failures(uri: str) -> list[dict]:
    """The failure markers of the study's unfinished units (unit, host, error)."""
    store, _, plan = load_study(uri)
    done = done_ids(store, plan.units)
    out = []
    for n in store.list_names("runs", ".json"):
        m = store.read_json(f"runs/{n}")
        if m["state"] == "failed" and m["unit_id"] not in done:
            out.append(m)
    return out
