"""The driver: run and resume a study whose source of truth is its store.

`run` writes the resolved spec and the plan to the store, prepares the datasets into it,
and runs the units on Ray as their dependencies land (study.sweep.scheduler: a Ray task per
unit; a pretraining unit's task drives its Ray Train DDP run). `resume` is the same with the
spec read back from the store: it runs exactly the planned units whose result row is
missing, whatever happened to the previous driver.

A unit is done when its row can be read (`scan_results`): an unreadable part is moved aside
to results/corrupt/ and its unit runs again. One driver runs a study at a time: `run` and
`resume` hold the study's lease (study.sweep.lease) from before their first write to their
end; a run marker records the lease of the driver that started the unit, and
study.sweep.status shows a unit as running only while that lease is live.
"""

from __future__ import annotations

import _thread
import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from study.data import dataset_source, prepared_key
from study.data.config import DatasetConfig
from study.data.prepared import cache_folder, check_fingerprint, default_cache_dir, prepare_to
from study.errors import ConfigError, DataError, LeaseError, StudyError
from study.schema import RESULT_TABLES, corrupt_path, run_marker_path
from study.store import Store
from study.sweep.lease import Lease
from study.sweep.load import load_stored_spec, spec_to_yaml
from study.sweep.plan import Plan, Unit, make_plan
from study.sweep.resolve import upstream_config
from study.sweep.spec import Spec

__all__ = [
    "run_study",
    "resume_study",
    "load_study",
    "scan_results",
    "StudyOutcome",
    "ResultScan",
]


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


#: The commit a submitted job runs (`study submit` sets it in the job's runtime env: Ray
#: ships the working dir without `.git`, so the job cannot ask git itself).
CODE_VERSION_ENV = "STUDY_CODE_VERSION"


def code_version(root: Path | None = None) -> str:
    """The version every row, the plan and the report record: the package version and the
    commit, "0.1.0+g1a2b3c4[-dirty]".

    The commit is STUDY_CODE_VERSION when set (a job from `study submit`), else `git
    describe` of the checkout this code is in. Where neither is known the version says
    "unknown commit" rather than passing the package version off as a build.

    Args:
        root: the folder whose checkout to ask (default: the one holding this package).
    """
    from study import __version__

    commit = os.environ.get(CODE_VERSION_ENV, "").strip() or describe_commit(
        root or Path(__file__).resolve().parents[2]
    )
    return f"{__version__}+{commit}" if commit else f"{__version__} (unknown commit)"


def describe_commit(root: Path) -> str | None:
    """`git describe --always --dirty` of the checkout at `root`; None where `root` is not
    the top of a checkout (a folder inside another repository must not lend it its
    commit) or git is missing."""
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=root,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def _log(msg: str) -> None:
    print(f"[study] {msg}", file=sys.stderr, flush=True)


# --- the store side -------------------------------------------------------------------------
def init_study(store: Store, spec: Spec) -> Plan:
    """Write spec and plan into a new study root, or check that they match an existing one."""
    plan = study_plan(store, spec)
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


def study_plan(store: Store, spec: Spec, base: Plan | None = None) -> Plan:
    """The plan a driver runs: the spec's own (`make_plan`), with the chosen values of each
    search group whose choice is in the store (study.sweep.search.plan_with_choices): a
    function of the spec and the stored choices."""
    base = base or make_plan(spec)
    if spec.search is None:
        return base
    # Imported here: the search brings Optuna, which a study without one does not need.
    from study.sweep.search import plan_with_choices, stored_choices

    return plan_with_choices(spec, base, stored_choices(store, spec, base))


def write_plan(store: Store, plan: Plan) -> None:
    """plan.parquet: every unit with its axes and config (and the id the spec alone plans
    for it, which differs once a search chose its training options), and (in the file's
    metadata) the code version that planned them and when."""
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

    Units are compared by the id the spec alone plans for them (`Plan.base_id`): a search
    group's choice changes its units' ids (the chosen values are in their configs), not
    what the spec plans. A study without plan.parquet (deleted) is not checked here;
    `init_study` rewrites it.
    """
    if not store.exists("plan.parquet"):
        return
    plan_bytes = io.BytesIO(store.read_bytes("plan.parquet"))
    stored = pq.read_table(plan_bytes, use_threads=False)
    column = "base_unit_id" if "base_unit_id" in stored.column_names else "unit_id"
    old = set(stored.column(column).to_pylist())
    new = {plan.base_id(u.unit_id) for u in plan.units}
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
    """The study's stored spec.yaml, validated (see `study.sweep.load.load_stored_spec`).

    Raises:
        StorageError: no study there, or its spec.yaml is damaged (the line is named).
        ConfigError: the stored spec breaks a rule of this code's spec.
    """
    return load_stored_spec(store)


def load_study(uri: str, *, check_plan: bool = True) -> tuple[Store, Spec, Plan]:
    """The study at `uri`: its store, spec and plan (with the stored search choices:
    `study_plan`), checked against the stored plan.

    A deleted plan.parquet is written again from the stored spec, as `init_study` does.

    Args:
        check_plan: refuse a study whose stored plan holds other unit ids than this code
            plans (resume, status); a report reads the results as they are.

    Raises:
        StorageError: no study there (a missing S3 bucket is named), or its spec.yaml is
            damaged.
        ConfigError: the stored plan holds other unit ids than this code plans.
    """
    store = Store(uri)
    store.check_bucket()
    spec = load_spec_from_store(store)
    plan = study_plan(store, spec)
    if not store.exists("plan.parquet"):
        _log(f"{store.uri}/plan.parquet is missing: writing it again from its spec.yaml")
        write_plan(store, plan)
    elif check_plan:
        check_stored_plan(store, plan)
    return store, spec, plan


@dataclass(frozen=True)
class ResultScan:
    """The result parts of a study: the ids with a readable row, and the parts that cannot
    be read ("results/<table>/<file>" -> why)."""

    done: set[str]
    corrupt: dict[str, str]

    @property
    def corrupt_ids(self) -> set[str]:
        return {rel.rsplit("/", 1)[1].removesuffix(".parquet") for rel in self.corrupt}


def scan_results(store: Store) -> ResultScan:
    """Which units have a readable result row: one listing per result table, then each
    part's footer and unit_id column, read in parallel (Store.scan_parts). A part that is
    not Parquet, lacks the schema's unit_id, or does not hold exactly one row of the unit
    its name says is not a result.

    Raises:
        StorageError: the store cannot be listed or read (never taken for corrupt parts).
    """
    done: set[str] = set()
    corrupt: dict[str, str] = {}
    for table, schema in RESULT_TABLES.items():
        scan = store.scan_parts(f"results/{table}", schema.field("unit_id"))
        done |= scan.ids
        corrupt.update({f"results/{table}/{name}": why for name, why in scan.corrupt.items()})
    return ResultScan(done, corrupt)


def stored_result_ids(store: Store) -> set[str]:
    """Ids of every unit whose result row is in the store and readable (see scan_results)."""
    return scan_results(store).done


def done_ids(store: Store, units: Iterable[Unit]) -> set[str]:
    """Ids of the units whose readable result row is in the store (see scan_results)."""
    present = stored_result_ids(store)
    return {u.unit_id for u in units if u.unit_id in present}


def quarantine_corrupt(store: Store, corrupt: dict[str, str]) -> dict[str, str]:
    """Move each unreadable result part aside, under results/corrupt/<table>/ with the UTC
    time appended (never deleted: it may be looked at), so that its unit runs again.

    Returns:
        Where each part went (old path -> new path).
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    moved = {}
    for rel, why in sorted(corrupt.items()):
        _, table, name = rel.split("/")
        dest = corrupt_path(table, name, stamp)
        if store.move(rel, dest):
            moved[rel] = dest
            _log(
                f"{store.uri}/{rel} is not a readable result ({why}): moved to {dest}; "
                "its unit runs again"
            )
    return moved


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
#: Seconds to wait for a cluster's GCS port to accept a connection before saying there is
#: no cluster (ray.init itself retries an unreachable address for minutes).
RAY_PROBE_TIMEOUT_S = 5.0
_START_A_CLUSTER = (
    "start one with `ray start --head --port=6379` on the head node and pass HEAD:6379, "
    "submit the study to a cluster's job server with `study submit`, or leave out "
    "--address and RAY_ADDRESS to run on a local Ray"
)


def check_ray_address(address: str | None = None) -> str | None:
    """The cluster address `ensure_ray` connects to (`address`, else RAY_ADDRESS), checked
    within seconds; None for a local Ray of our own.

    A HOST:PORT address (the head's GCS port) must accept a TCP connection within
    RAY_PROBE_TIMEOUT_S. "auto" is left to Ray (it finds a cluster started on this machine).
    A Ray Client (`ray://`) or job server (`http://`) address is refused: Ray Train and Tune
    run their controllers in the driver, which then runs outside the cluster and cannot see
    a local store; `study submit` runs the driver on the cluster instead.

    Raises:
        ConfigError: naming the address, where it came from and how to start a cluster.
    """
    origin = "--address" if address else "RAY_ADDRESS"
    address = (address or os.environ.get("RAY_ADDRESS") or "").strip()
    if not address or address == "local":
        return None
    if address == "auto":
        return address
    if "://" in address:
        scheme = address.split("://", 1)[0]
        if scheme in ("http", "https"):
            why = (
                "that is a job server (dashboard) address: run the study there with "
                f"`study submit SPEC --address {address}`, or give the head's GCS address "
                "HEAD:6379 from a machine inside the cluster"
            )
        else:
            why = (
                "Ray Client and other protocol addresses are not supported (Ray Train and "
                "Tune would run their driver outside the cluster): submit the study as a job "
                "with `study submit SPEC --address http://HEAD:8265`, or give the head's GCS "
                "address HEAD:6379 from a machine inside the cluster"
            )
        raise ConfigError(f"{origin} {address}: {why}")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(
            f"{origin} must be a Ray cluster address HOST:PORT (the head's GCS port, 6379 by "
            f"default), got {address!r}"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), RAY_PROBE_TIMEOUT_S):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise ConfigError(
            f"no Ray cluster at {address} ({origin}): its GCS port does not accept "
            f"connections ({reason} within {RAY_PROBE_TIMEOUT_S:g} s); {_START_A_CLUSTER}"
        ) from None
    return address


def ensure_ray(address: str | None = None) -> None:
    """Connect to a cluster (address or RAY_ADDRESS), or start a local one on loopback.

    Raises:
        ConfigError: no cluster at the address (see `check_ray_address`).
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    origin = "--address" if address else "RAY_ADDRESS"
    address = check_ray_address(address)
    if address:
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as e:  # "auto" without a cluster on this machine
            raise ConfigError(
                f"no Ray cluster at {address} ({origin}): {' '.join(str(e).split())}; "
                f"{_START_A_CLUSTER}"
            ) from None
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


def _short_error(e: BaseException | str) -> str:
    """The line of an error that says what it was (Ray wraps a task's or a worker's error
    in a traceback: its last line is the original `Type: message`)."""
    text = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else text)[:500]


def expected_seconds(unit: Unit) -> float:
    """A unit's relative expected duration, for the scheduler's longest-first order: its
    epochs times the share of the data it trains on; a pretraining unit (the whole upstream
    dataset, usually far larger) counts 100 times more. Only the order matters."""
    c = unit.config
    epochs = float(c.train.epochs)
    if unit.stage == "pretrain":
        return 100.0 * epochs
    return epochs * float(c.data_fraction)


def _remote_tasks(spec: Spec, unit_fn, pretrain_fn) -> tuple:
    """`unit_fn` as a Ray task with a fine-tuning unit's resources, `pretrain_fn` as a task
    that drives a Ray Train run (no resources of its own, soft affinity to the driver's
    node), and the spec's pretraining resources, for both kinds of work the scheduler runs
    (units, search trials)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    f, p = spec.finetune, spec.pretrain
    # Ray retries nothing itself: the scheduler does (a retried unit resumes from its
    # checkpoint), and it counts attempts for the markers.
    unit_task = ray.remote(unit_fn).options(
        num_cpus=f.cpus_per_trial, num_gpus=f.gpus_per_trial, max_retries=0
    )
    pretrain_task = ray.remote(pretrain_fn).options(
        num_cpus=0,
        max_retries=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=True
        ),
    )
    pretrain = {
        "num_workers": p.num_workers,
        "use_gpu": p.use_gpu,
        "cpus_per_worker": p.cpus_per_worker,
    }
    return unit_task, pretrain_task, pretrain


def _jobs(store: Store, spec: Spec, units: list[Unit], env: dict) -> list:
    """One scheduler Job per unit: a Ray task (study.sweep.remote) with the unit's resources;
    a fine-tuning unit depends on its pretraining unit."""
    from study.sweep import remote
    from study.sweep.scheduler import Job

    f = spec.finetune
    unit_task, pretrain_task, pretrain = _remote_tasks(
        spec, remote.run_unit, remote.run_pretraining
    )
    attempts: dict[str, int] = {}

    def submit(u: Unit):
        def start():
            attempts[u.unit_id] = attempts.get(u.unit_id, 0) + 1
            run_env = {**env, "attempt": attempts[u.unit_id]}
            if u.stage == "pretrain":
                return pretrain_task.remote(
                    u, store.uri, run_env, pretrain, spec.execution.max_failures
                )
            return unit_task.remote(u, store.uri, run_env, f.cpus_per_trial, f.gpus_per_trial > 0)

        return start

    return [
        Job(
            key=u.unit_id,
            submit=submit(u),
            depends_on=u.depends_on,
            expected_seconds=expected_seconds(u),
            kind="pretrain" if u.stage == "pretrain" else "unit",
        )
        for u in units
    ]


def _trial_submitter(store: Store, spec: Spec, env: dict):
    """Starts a search trial on the cluster (study.sweep.search_stage): a fine-tuning
    group's as a Ray task with a unit's resources, a pretraining group's as a task that
    drives its Ray Train run, placed as a pretraining unit's is."""
    from study.sweep import remote

    f = spec.finetune
    trial_task, pretrain_task, pretrain = _remote_tasks(
        spec, remote.run_search_trial, remote.run_pretrain_search_trial
    )

    def submit(group, unit: Unit, number: int, params: dict):
        trial = (store.uri, spec, group, unit, number, params, env)
        if group.section == "pretrain":
            return pretrain_task.remote(*trial, pretrain, spec.execution.max_failures)
        return trial_task.remote(*trial, f.cpus_per_trial, f.gpus_per_trial > 0)

    return submit


def _room_for_ddp(spec: Spec) -> bool:
    """Whether the cluster has the free resources of one more pretraining worker group now
    (its workers would otherwise wait for room, and fail after worker_start_timeout_s)."""
    import ray

    p = spec.pretrain
    free = ray.available_resources()
    if free.get("CPU", 0.0) < p.num_workers * p.cpus_per_worker:
        return False
    return not p.use_gpu or free.get("GPU", 0.0) >= p.num_workers


class _Progress:
    """The driver's progress bar and log, fed by the scheduler's events; failed units'
    errors go into `errors`."""

    def __init__(self, bar, errors: dict[str, str]) -> None:
        self.bar = bar
        self.errors = errors
        self.running = {"pretrain": 0, "search": 0, "unit": 0}
        self.blocked: dict[str, list[str]] = {}  # failed unit -> units waiting on it

    def __call__(self, job, outcome) -> None:
        state = outcome.state
        if state == "started":
            self.running[job.kind] += 1
        elif state in ("done", "failed", "retrying", "stopped"):
            self.running[job.kind] -= 1
        what = "search trial" if job.key.startswith("search:") else "unit"
        if state == "retrying":
            _log(
                f"{what} {job.key} (attempt {outcome.attempts}) failed, trying again: "
                f"{_short_error(outcome.error or '')}"
            )
        elif state == "failed":
            self.errors[job.key] = _short_error(outcome.error or "its task failed")
            _log(f"{what} {job.key} failed: {self.errors[job.key]}")
        elif state == "blocked":
            self.blocked.setdefault(job.depends_on or "?", []).append(job.key)
        if state in ("done", "failed", "blocked"):
            self.bar.update(1)
        failed = len(self.errors)
        trials = f"{self.running['search']} search trials, " if self.running["search"] else ""
        self.bar.set_postfix_str(
            f"{self.running['pretrain']} pretraining, {trials}"
            f"{self.running['unit']} units in flight" + (f", {failed} failed" if failed else ""),
            refresh=False,
        )

    def grow(self, n: int) -> None:
        """`n` more jobs to run than the bar's total counted (search trials)."""
        self.bar.total += n
        self.bar.refresh()

    def summary(self) -> None:
        keys = [k for v in self.blocked.values() for k in v]
        if keys:
            trials = sum(k.startswith("search:") for k in keys)
            what = f"{len(keys) - trials} units"
            if trials:
                what += f" and {trials} search trials"
            needed = sorted(
                {k.split(":")[1] if k.startswith("search:") else k for k in self.blocked}
            )
            _log(f"{what} not started: what they need failed ({', '.join(needed)})")


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


class DriverInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM reached the driver (a KeyboardInterrupt: `study` exits 130)."""


class _StopSignals:
    """While a driver runs in the main thread: SIGINT and SIGTERM raise DriverInterrupted
    there (`ray job stop` sends SIGTERM, which ray.init would turn into a plain exit).
    `interrupt` raises it from another thread (a lost lease).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self.armed = self.active  # whether `interrupt` interrupts (off once the driver ends)
        self._saved: dict = {}
        self.received: str | None = None  # the last stop signal's name

    def install(self) -> None:
        """(Again after ray.init, which replaces the SIGTERM handler.)"""
        if not self.active:
            return
        for sig in self.SIGNALS:
            current = signal.getsignal(sig)
            if current != self._raise:
                self._saved.setdefault(sig, current)
                signal.signal(sig, self._raise)

    def _raise(self, signum, frame) -> None:
        # Remembered: Ray turns an exception raised while it waits into a plain
        # KeyboardInterrupt.
        self.received = signal.Signals(signum).name
        raise DriverInterrupted(self.received)

    def interrupt(self) -> None:
        if self.armed:
            _thread.interrupt_main(signal.SIGINT)

    def restore(self) -> None:
        if not self.active:
            return
        self.active = False
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _driver(store: Store, takeover: bool):
    """Hold the study's lease (study.sweep.lease) for the life of a driver, with the stop
    signals caught; a driver that loses its lease is interrupted and raises LeaseError."""
    signals = _StopSignals()
    signals.install()
    lease = None
    try:
        lease = Lease.acquire(store, takeover, on_lost=signals.interrupt)
        yield lease, signals
    except BaseException as e:
        if lease is not None and lease.lost.is_set() and not isinstance(e, LeaseError):
            raise LeaseError(lease.lost_message()) from None
        raise
    finally:
        signals.armed = False  # a lease lost from here on interrupts nothing
        if lease is not None:
            lease.release()
        signals.restore()


_STOPPED: weakref.WeakSet = weakref.WeakSet()  # the leases whose driver said it stops


def _stop_units(lease: Lease, why: str) -> None:
    """Say once that the driver stops, and record it in the lease (unless the lease was
    lost): a unit failing from now on records an interruption (its workers are being torn
    down), and no other driver starts meanwhile."""
    if lease in _STOPPED:
        return
    _STOPPED.add(lease)
    _log(f"stopping ({why}): ending the units in flight")
    if not lease.lost.is_set():
        lease.mark_stopping(why)


#: Set by the `study` command (never for a driver run from Python): seconds a stopping
#: driver may take to shut Ray down before the process releases its lease and exits anyway
#: with 130 (its units' markers are settled before the shutdown starts).
STOP_GRACE_S: float | None = None


def _shutdown_ray(lease: Lease) -> None:
    """End the driver's Ray connection (and the local cluster it started), within
    STOP_GRACE_S when that is set."""
    import ray

    if not ray.is_initialized():
        return
    if STOP_GRACE_S is not None:

        def give_up() -> None:
            _log(f"stopping took over {STOP_GRACE_S:.0f} s (Ray's shutdown is stuck): exiting")
            lease.release()
            sys.stderr.flush()
            os._exit(130)

        timer = threading.Timer(STOP_GRACE_S, give_up)
        timer.daemon = True
        timer.start()
    ray.shutdown()


def _why_stopped(e: BaseException | None, lease: Lease, signals: _StopSignals | None = None) -> str:
    if lease.lost.is_set():
        return f"lost the lease: {lease.lost_reason}"
    if e is None:
        return lease.info.reason or "asked to stop"
    if isinstance(e, KeyboardInterrupt) and signals is not None and signals.received:
        return f"{signals.received} received"
    if isinstance(e, DriverInterrupted):
        return f"{e.args[0] if e.args else 'interrupted'} received"
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return f"the driver failed: {_short_error(e)}"


def close_markers(store: Store, units: Iterable[Unit], errors: dict[str, str], lease: Lease) -> int:
    """When a driver ends, settle the markers of the units it ran that ended without a row:
    a "running" marker of this driver's lease becomes "failed" (with the error its task
    ended with: the unit's own record may never have been written, e.g. its node died
    or the store was unreachable) or "interrupted" (no error: the driver stopped it).
    Markers of another lease, and units with a row, are left alone.

    Returns:
        How many markers were rewritten.
    """
    from study.sweep.execute import mark_failed, mark_interrupted

    present = {n.removesuffix(".json") for n in store.list_names("runs", ".json")}
    candidates = [u for u in units if u.unit_id in present]
    if not candidates:
        return 0

    def settle(u: Unit) -> bool:
        try:
            marker = store.read_json(run_marker_path(u.unit_id))
        except StudyError:
            return False
        if marker.get("state") != "running" or marker.get("lease_id") != lease.lease_id:
            return False
        table = "pretrain" if u.stage == "pretrain" else "trials"
        if store.exists(f"results/{table}/{u.unit_id}.parquet"):
            return False
        if u.unit_id in errors:
            mark_failed(store, u, errors[u.unit_id], lease.lease_id)
        else:
            why = lease.info.reason if lease.stopping else "its run ended without a result"
            mark_interrupted(store, u, lease.lease_id, f"stopped by the driver ({why})")
        return True

    with ThreadPoolExecutor(min(16, len(candidates))) as pool:
        return sum(pool.map(settle, candidates))


def _execute(
    store: Store,
    spec: Spec,
    plan: Plan,
    address: str | None,
    lease: Lease,
    signals: _StopSignals | None = None,
) -> StudyOutcome:
    """Run the plan's units that have no readable row, under `lease`.

    Unreadable result parts are moved aside first (their units run again). However the
    run ends (normally, an error, Ctrl-C/SIGTERM, a lost lease), the units it ran that
    ended without a row are left marked failed or interrupted, never "running"
    (`close_markers`): a stopping driver records that it stops (so that its units' failures
    read as interruptions), kills its units' tasks, settles their markers, and only then
    shuts Ray down.
    """
    env = {
        "code_version": code_version(),
        "loader_workers": spec.execution.loader_workers,
        "lease_id": lease.lease_id,  # recorded in every run marker of this driver's units
    }
    os.environ.setdefault(
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", str(spec.execution.worker_start_timeout_s)
    )
    scan = scan_results(store)
    if scan.corrupt:
        quarantine_corrupt(store, scan.corrupt)
    stage = None
    if spec.search is not None:  # its groups' choices so far (and any left unwritten)
        from study.sweep.search_stage import SearchStage

        stage = SearchStage(
            store,
            spec,
            make_plan(spec),
            done=set(scan.done),
            unit_jobs=lambda units: _jobs(store, spec, units, env),
            expected_seconds=expected_seconds,
            on_choice=lambda chosen: write_plan(store, chosen),
        )
        plan = stage.plan
        sync_stored_plan(store, plan)
    waiting = stage.waiting() if stage is not None else set()
    done = {u.unit_id for u in plan.units if u.unit_id in scan.done}
    pending = [u for u in plan.units if u.unit_id not in done and u.unit_id not in waiting]
    trials = stage.pending_trials if stage is not None else 0
    _log(
        f"study {spec.name} at {store.uri}: {len(plan.units)} units planned, "
        f"{len(done)} already done, {len(pending)} to run"
        + (
            f", {len(waiting)} waiting for {len(stage.waiting_groups())} search groups "
            f"({trials} trials to run now)"
            if waiting
            else ""
        )
    )
    if not pending and not trials:
        return _outcome(store, plan, done)
    errors: dict[str, str] = {}  # unit id -> the error its task ended with

    def settle() -> None:
        if lease.lost.is_set():  # its units' markers are now the new holder's business
            return
        try:
            ran = stage.added if stage is not None else pending
            close_markers(store, ran, errors, lease)
        except StudyError as e:  # e.g. the store is unreachable: never hide the cause
            _log(
                f"could not settle the run markers ({e}); `study status` still tells "
                "running units from interrupted ones by the lease"
            )

    try:
        _run_pending(
            store, spec, pending, done, address, lease, signals, env, errors, stage, len(waiting)
        )
    except BaseException as e:
        _stop_units(lease, _why_stopped(e, lease, signals))
        if isinstance(e, KeyboardInterrupt | SystemExit) or lease.lost.is_set():
            settle()  # before the shutdown, which may hang
            _shutdown_ray(lease)
        if lease.lost.is_set() and not isinstance(e, LeaseError):
            raise LeaseError(lease.lost_message()) from None
        raise
    finally:
        settle()
    lease.check()
    if stage is not None:
        plan = stage.plan
    return _outcome(store, plan, done_ids(store, plan.units))


def sync_stored_plan(store: Store, plan: Plan) -> None:
    """Rewrite plan.parquet when its unit ids are not `plan`'s (a search group's choice
    landed after it was written: the driver that wrote the choice was stopped before it
    wrote the plan)."""
    if store.exists("plan.parquet"):
        data = io.BytesIO(store.read_bytes("plan.parquet"))
        stored = pq.read_table(data, columns=["unit_id"], use_threads=False)
        if set(stored.column("unit_id").to_pylist()) == {u.unit_id for u in plan.units}:
            return
    write_plan(store, plan)


def _run_pending(
    store: Store,
    spec: Spec,
    pending: list[Unit],
    done: set[str],
    address: str | None,
    lease: Lease,
    signals: _StopSignals | None,
    env: dict,
    errors: dict[str, str],
    stage=None,
    waiting: int = 0,
) -> None:
    """Prepare the data, then run the pending units on Ray as their dependencies land
    (study.sweep.scheduler): from-scratch units at once, a pretraining unit's fine-tuning
    units as soon as its row is in the store. With a search (`stage`, a
    study.sweep.search_stage.SearchStage), its trials run too, and each group's `waiting`
    units are added once the group has chosen."""
    from study.sweep.scheduler import Scheduler

    prepare_datasets(store, spec, stage.base.units if stage is not None else pending)
    lease.check()
    ensure_ray(address)
    if signals is not None:
        signals.install()  # ray.init replaced the SIGTERM handler
    bar = tqdm(
        total=len(pending) + waiting,
        desc="units" if stage is None else "units and search trials",
        unit="unit",
        mininterval=2,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    progress = _Progress(bar, errors)
    if stage is None:
        jobs = _jobs(store, spec, pending, env)
    else:
        stage.submit_trial = _trial_submitter(store, spec, env)
        stage.on_trials = progress.grow
        jobs = stage.jobs()
    limits = {"pretrain": spec.pretrain.max_concurrent}
    if spec.finetune.max_concurrent is not None:
        limits["unit"] = spec.finetune.max_concurrent
    try:
        Scheduler(
            jobs,
            limits=limits,
            window=spec.execution.max_in_flight,
            done=done,
            max_retries=spec.execution.max_failures,
            on_event=progress,
            should_stop=lambda: lease.lost.is_set() or lease.stopping,
            on_stop=lambda e: _stop_units(lease, _why_stopped(e, lease, signals)),
            admit=lambda job, busy: job.kind != "pretrain" or _room_for_ddp(spec),
        ).run()
    finally:
        bar.close()
    progress.summary()
    if stage is not None and stage.failed:
        _log(
            f"{len(stage.failed)} search groups chose nothing (no trial completed): their "
            f"units did not run ({', '.join(sorted(stage.failed))}); widen the search space "
            "or raise the budget in a new study"
        )
    lease.check()


def run_study(
    spec: Spec,
    storage: str,
    name: str | None = None,
    address: str | None = None,
    takeover: bool = False,
) -> StudyOutcome:
    """Run (or continue) the study `spec` under `storage/name` (name defaults to spec.name).

    The driver holds the study's lease (study.sweep.lease) from before its first write to
    its end.

    Args:
        takeover: take the lease from a driver whose heartbeat is still fresh (one whose
            heartbeat is older than its TTL is taken over without it).

    Raises:
        LeaseError: another driver runs the study (the message names it), or this driver
            lost its lease while it ran (it stopped its units first).
    """
    store = Store(storage).child(name or spec.name)
    with _driver(store, takeover) as (lease, signals):
        plan = init_study(store, spec)
        return _execute(store, spec, plan, address, lease, signals)


def resume_study(uri: str, address: str | None = None, takeover: bool = False) -> StudyOutcome:
    """Run exactly the planned units of the study at `uri` whose results are missing (or
    unreadable: such a part is moved aside to results/corrupt/ and its unit runs again).

    Args:
        takeover: as for `run_study`.

    Raises:
        ConfigError: the stored plan holds other unit ids than this code plans (ids moved:
            the message says how many, and which code version planned them).
        LeaseError: as for `run_study`.
    """
    store, spec, plan = load_study(uri)
    with _driver(store, takeover) as (lease, signals):
        if not store.exists("plan.parquet"):
            write_plan(store, plan)
        return _execute(store, spec, plan, address, lease, signals)
