"""Run one unit: the body of a unit's Ray task or of a Ray Train worker, with no Ray import.

Each function takes the unit, the store and a `report` callable (ray.train.report in a
DDP worker; None elsewhere), so a single unit can be run and debugged with `python -c`
and no cluster.

A unit's life in the store: a running marker; a checkpoint after each epoch (a re-run
resumes from it); at the end the epochs table, then the result row (the row is written last:
its presence means the unit is done); then the checkpoint is removed.

Every marker records the lease id of the driver that started the unit (`env["lease_id"]`,
study.sweep.lease), so a "running" marker whose driver is gone reads as interrupted, and a
run that fails while its driver is stopping is recorded as interrupted, not failed. Markers also
record where and which attempt: host, Ray node, attempt (the driver's count), started_at,
the epoch reached and resumed_from_epoch (the checkpoint's epoch an attempt went on from: 0
when it started afresh); the "done" marker keeps the last attempt's.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from study.data import PreparedDataset, dataset_source
from study.data.prepared import cache_folder, default_cache_dir
from study.data.splits import nested_patient_subset
from study.errors import DataError, StorageError, TrainingError
from study.models import create_model, model_info
from study.schema import (
    EPOCHS_SCHEMA,
    PREDICTIONS_SCHEMA,
    PRETRAIN_SCHEMA,
    TRIALS_SCHEMA,
    checkpoint_path,
    epochs_path,
    predictions_path,
    pretrain_path,
    run_marker_path,
    trial_path,
    weights_path,
)
from study.store import Store
from study.sweep.lease import driver_stopped
from study.sweep.plan import Unit
from study.training import (
    FitConfig,
    fit,
    load_state_bytes,
    predict,
    seed_everything,
    state_to_bytes,
)
from study.training.checkpoint import load_backbone
from study.training.evaluation import as_row, detect_qrs
from study.training.tasks import Objective, objective, pretrain_task

__all__ = [
    "run_finetune_unit",
    "run_pretrain_worker",
    "finetune_indices",
    "finetune_model",
    "unit_fit_config",
    "open_prepared",
    "unit_objective",
    "hardware_string",
    "mark_interrupted",
    "mark_failed",
]

Report = Callable[[dict], None] | None


def hardware_string(device: str = "cpu") -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(torch.device(device))}"
    return f"cpu:{platform.machine()}x{os.cpu_count()}:threads={torch.get_num_threads()}"


def open_prepared(store: Store, key: str) -> PreparedDataset:
    """The prepared dataset `key` from the store, readable on this node.

    A local store is read in place; a remote one is copied once into this node's cache,
    under the key and the fingerprint of the source it was prepared from (so a copy of
    another source's preparation is never taken for it), under a temporary name and then
    renamed, so concurrent trials never see half a copy.
    """
    rel = f"prepared/{key}"
    if store.is_local:
        path = Path(store.path(rel))
    else:
        try:
            fingerprint = store.read_json(f"{rel}/meta.json").get("source_fingerprint")
        except StorageError as e:
            raise DataError(f"prepared dataset {key} is not in store {store.uri}: {e}") from e
        path = default_cache_dir() / cache_folder(key, fingerprint)
        if not (path / "meta.json").exists():
            tmp = path.parent / f".tmp-{os.getpid()}-{time.time_ns()}"
            store.download_dir(rel, tmp)
            try:
                os.rename(tmp, path)
            except OSError:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
    if not (path / "meta.json").exists():
        raise DataError(f"prepared dataset {key} is not in store {store.uri}")
    return PreparedDataset(path)


def _mark_ended(store: Store, unit: Unit, e: BaseException, lease_id: str | None) -> None:
    """Record why a unit stopped: an error is a failure; Ctrl-C, a stopped actor, or an
    error while the unit's driver is stopping (its lease stopping, gone or another's: e.g.
    gloo's "Connection reset" when the driver tore the DDP group down) is an interruption.
    The store may be unreachable (that may be why the unit failed): then nothing is
    recorded here, and the driver or `study status` (from the lease) says what happened."""
    error = f"{type(e).__name__}: {e}"
    try:
        if isinstance(e, Exception) and not driver_stopped(store, lease_id):
            _mark(
                store,
                unit,
                "failed",
                lease_id,
                error=error,
                traceback=traceback.format_exc()[-4000:],
            )
        elif isinstance(e, Exception):
            mark_interrupted(
                store, unit, lease_id, f"its driver stopped (the run then saw {error})"
            )
        else:
            mark_interrupted(store, unit, lease_id, type(e).__name__)
    except StorageError:
        pass  # the error that ended the unit is what propagates


def mark_interrupted(
    store: Store, unit: Unit, lease_id: str | None = None, error: str = "stopped by the driver"
) -> None:
    """Record that `unit` was stopped, not broken (its workers may have had no chance to)."""
    _mark(store, unit, "interrupted", lease_id, error=error)


def mark_failed(store: Store, unit: Unit, error: str, lease_id: str | None = None) -> None:
    """Record that `unit` failed with `error` (the driver's record, where the unit's own
    could not be written, e.g. its node died or the store was unreachable)."""
    _mark(store, unit, "failed", lease_id, error=error)


def _node() -> str | None:
    """The Ray node this process runs on ("IP node-id[:8]"), or None outside Ray."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        node_id = ray.get_runtime_context().get_node_id()
        return f"{ray.util.get_node_ip_address()} {node_id[:8]}"
    except Exception:  # a driver torn down meanwhile: the marker still says the host
        return None


def _run_facts(env: dict) -> dict:
    """What every marker of one attempt at a unit records: the attempt (the scheduler's
    count, 1 for the first) and when it started."""
    return {"attempt": int(env.get("attempt", 1)), "started_at": datetime.now(UTC).isoformat()}


def _mark(store: Store, unit: Unit, state: str, lease_id: str | None = None, **extra) -> None:
    store.write_json(
        run_marker_path(unit.unit_id),
        {
            "unit_id": unit.unit_id,
            "stage": unit.stage,
            "state": state,
            "host": socket.gethostname(),
            "node": _node(),
            "pid": os.getpid(),
            "lease_id": lease_id,
            "updated_at": datetime.now(UTC).isoformat(),
            **extra,
        },
    )


def _load_checkpoint(store: Store, uid: str) -> dict | None:
    if not store.exists(checkpoint_path(uid)):
        return None
    data = store.read_bytes(checkpoint_path(uid))  # a StorageError stays one
    try:
        return load_state_bytes(data)
    except Exception as e:  # torch.load raises many kinds (UnpicklingError, RuntimeError, ...)
        # No silent restart: a checkpoint that cannot be read is a fact the user must see.
        raise TrainingError(
            f"checkpoint {store.uri}/{checkpoint_path(uid)} cannot be read ({e}); "
            f"delete it to restart unit {uid} from epoch 0"
        ) from e


def unit_objective(unit: Unit, label_kind: str, dataset: str) -> Objective:
    """What `unit` trains its model to do on a dataset with `label_kind` labels (`dataset`:
    its name, for messages): its pretraining task's objective, or for fine-tuning the
    objective of the downstream's labels.

    Raises:
        DataError: the dataset's labels, or the architecture's outputs, are not what the
            objective needs (e.g. a qrs task on a dataset without per-sample targets, or a
            per-sample model on record labels).
    """
    c = unit.config
    if unit.stage == "pretrain":
        obj = pretrain_task(c.pretrain_task).objective(label_kind)
    else:
        obj = objective(label_kind)
    obj.check_data(label_kind, dataset)
    problem = obj.model_problem(model_info(c.architecture, **c.architecture_options))
    if problem:
        raise DataError(f"{c.architecture} cannot train on {dataset}: {problem}")
    return obj


def _class_codes(data: PreparedDataset) -> dict[str, list[str]] | None:
    """SNOMED-CT codes of each class, when the label set is one of the SNOMED tables."""
    from study.data.snomed import LABEL_SETS

    label_set = (data.meta.get("config") or {}).get("label_set")
    if label_set is None:
        label_set = dataset_source(data.name).default_label_set()
    if label_set not in LABEL_SETS:
        return None
    table = LABEL_SETS[label_set]
    return {c: sorted(table[c]) for c in data.classes if c in table}


def unit_fit_config(
    unit: Unit, env: dict, device: str, obj: Objective, batch_size: int | None = None
) -> FitConfig:
    """What `fit` trains `unit` with: its training options (`batch_size`: a DDP worker's
    share), seed, device and objective."""
    train = unit.config.train
    if batch_size is not None:
        train = train.model_copy(update={"batch_size": batch_size})
    return FitConfig(
        **train.model_dump(),
        seed=unit.config.seed,
        device=device,
        task=obj.name,
        loader_workers=env.get("loader_workers", 0),
    )


def _epoch_callback(
    store: Store,
    unit: Unit,
    report: Report,
    lease_id: str | None,
    facts: dict,
    persist: bool = True,
):
    """What `fit` calls after each epoch: checkpoint and marker (when `persist`), report.
    `facts` are the attempt's marker fields (`_run_facts`, and resumed_from_epoch)."""

    def on_epoch(state: dict, record: dict) -> None:
        if persist:
            store.write_bytes(checkpoint_path(unit.unit_id), state_to_bytes(state))
            _mark(store, unit, "running", lease_id, epoch=record["epoch"], **facts)
        if report is not None:
            report({k: v for k, v in record.items() if isinstance(v, int | float)})

    return on_epoch


def _train_seconds(result, resumed: bool, t0: float) -> float:
    # After a resume, the seconds of the epochs run before the interruption count too.
    return sum(h["seconds"] for h in result.history) if resumed else time.perf_counter() - t0


def _common_fields(unit: Unit, result, train_seconds: float, env: dict, device: str) -> dict:
    """The columns every result row shares: selection, timing, hardware, provenance."""
    best = result.history[result.best_epoch - 1]
    return {
        "unit_id": unit.unit_id,
        "val_macro_auroc": best["val_macro_auroc"],
        "val_loss": best["val_loss"],
        "best_epoch": result.best_epoch,
        "epochs": result.epochs_run,
        "train_seconds": train_seconds,
        "hardware": hardware_string(device),
        "code_version": env.get("code_version", ""),
        "finished_at": datetime.now(UTC),
        "config": json.dumps(unit.config.canonical(), sort_keys=True),
    }


def _commit(
    store: Store,
    unit: Unit,
    row: dict,
    history: list[dict],
    rel: str,
    schema,
    lease_id: str | None,
    facts: dict,
    predictions: pa.Table | None = None,
) -> None:
    """Epochs and test predictions first, the result row last (its presence means done),
    then tidy up."""
    store.write_table(epochs_path(unit.unit_id), _epochs_table(unit.unit_id, history))
    if predictions is not None:
        store.write_table(predictions_path(unit.unit_id), predictions)
    store.write_table(rel, pa.Table.from_pylist([row], schema=schema))
    store.delete_dir(f"checkpoints/{unit.unit_id}")
    _mark(store, unit, "done", lease_id, **facts)


def _predictions_table(
    uid: str,
    data: PreparedDataset,
    test_idx: np.ndarray,
    targets: np.ndarray,
    p_test: np.ndarray,
    task: str,
    score: dict,
) -> pa.Table:
    """The test predictions of a unit (study.schema.PREDICTIONS_SCHEMA), one row per test
    example in the test split's order: labels and probabilities per class, or for a
    per-sample (QRS) task the reference and detected QRS positions at the threshold chosen
    on validation (the per-sample probabilities themselves are not kept)."""
    records = data.records.iloc[np.sort(np.asarray(test_idx))]
    n = len(records)
    columns: dict = {
        "unit_id": [uid] * n,
        "record_id": records["record_id"].astype(str).tolist(),
        "patient_id": records["patient_id"].astype(str).tolist(),
        "frame_start": (
            records["frame_start"].astype("int64").tolist()
            if "frame_start" in records
            else [None] * n
        ),
    }
    meta = {"classes": data.classes, "task": task, "thresholds": score.get("thresholds")}
    if task == "per_sample":
        fs = float(data.meta["fs"])
        detected = detect_qrs(p_test, fs, score["thresholds"]["qrs_probability"])
        reference = data.beats(test_idx)
        columns["qrs_reference"] = [np.asarray(b, dtype=np.int32).tolist() for b in reference]
        columns["qrs_detected"] = [np.asarray(b, dtype=np.int32).tolist() for b in detected]
        meta["fs"] = fs
    else:
        y = np.asarray(targets, dtype=np.uint8)
        p = np.asarray(p_test, dtype=np.float32)
        columns["y_true"] = pa.FixedSizeListArray.from_arrays(y.reshape(-1), y.shape[1])
        columns["y_prob"] = pa.FixedSizeListArray.from_arrays(p.reshape(-1), p.shape[1])
    arrays = []
    for f in PREDICTIONS_SCHEMA:  # the columns the task has no use for are all null
        value = columns.get(f.name)
        if value is None:
            arrays.append(pa.nulls(n, type=f.type))
        elif isinstance(value, pa.Array):
            arrays.append(value.cast(f.type))
        else:
            arrays.append(pa.array(value, type=f.type))
    table = pa.Table.from_arrays(arrays, schema=PREDICTIONS_SCHEMA)
    # the task as plain text, the rest as JSON (study.schema.PREDICTIONS_SCHEMA)
    encoded = {k.encode(): (v if k == "task" else json.dumps(v)).encode() for k, v in meta.items()}
    return table.replace_schema_metadata(encoded)


def _epochs_table(uid: str, history: list[dict]) -> pa.Table:
    rows = [
        {"unit_id": uid, **{k: h.get(k) for k in EPOCHS_SCHEMA.names if k != "unit_id"}}
        for h in history
    ]
    return pa.Table.from_pylist(rows, schema=EPOCHS_SCHEMA)


def finetune_indices(unit: Unit, data: PreparedDataset) -> tuple[np.ndarray, np.ndarray]:
    """The training and validation rows of a fine-tuning or from-scratch unit: its
    nested training subset of (data fraction, repeat), and the validation split (its
    patients subsampled like training under val_fraction "match"). The test split is not
    asked for here: a search trial (study.sweep.search_run) trains through this too."""
    c = unit.config
    train_idx = data.train_subset(c.data_fraction, c.repeat, c.train_folds)
    val_idx = data.split_indices("val")
    if c.val_fraction == "match":  # the validation patients, subsampled like training
        val_idx = nested_patient_subset(
            val_idx,
            data.labels,
            data.records["patient_id"].to_numpy(),
            c.data_fraction,
            c.repeat,
            data.name,
        )
    return train_idx, val_idx


def finetune_model(unit: Unit, store: Store, data: PreparedDataset) -> torch.nn.Module:
    """The classifier a fine-tuning or from-scratch unit trains: built for `data`, and for
    the pretrained arm loaded with its pretraining unit's backbone and frozen to its depth.

    Raises:
        StorageError: the pretraining unit's weights are not in the store.
    """
    c = unit.config
    info = model_info(c.architecture, **c.architecture_options)
    options = dict(c.architecture_options)
    if "with_decoder" in info["options"]:
        options["with_decoder"] = False  # a classifier has no use for a pretext decoder
    model = create_model(
        c.architecture,
        in_channels=data.in_channels,
        num_classes=len(data.classes),
        input_length=data.n_samples,
        **options,
    )
    if unit.stage == "finetune":
        weights = load_state_bytes(store.read_bytes(weights_path(c.pretrain_unit)))
        skip = tuple(model.classifier_prefixes) + tuple(info["pretext_prefixes"])
        load_backbone(model, weights, skip)
        model.freeze(c.freeze_depth)
    return model


def run_finetune_unit(
    unit: Unit, store: Store, env: dict, report: Report = None, device: str = "cpu"
) -> dict | None:
    """Run a fine-tuning or from-scratch unit to its result row (or return the stored one).

    Args:
        unit: a "finetune" or "scratch" unit.
        store: the study's store.
        env: run facts that are not part of the unit's identity (code_version, and the
            lease_id of the driver, recorded in the unit's run markers).
        report: called with each epoch's record (none in a unit's Ray task).
        device: "cpu" or "cuda".

    Returns:
        The result row, or None when the store already held it (nothing was re-run).
    """
    uid = unit.unit_id
    if store.exists(trial_path(uid)):
        return None
    c = unit.config
    lease_id = env.get("lease_id")
    facts = _run_facts(env)
    _mark(store, unit, "running", lease_id, **facts)
    try:
        seed_everything(c.seed)
        data = open_prepared(store, c.data_key)
        obj = unit_objective(unit, data.label_kind, f"{data.name} ({data.path})")
        train_idx, val_idx = finetune_indices(unit, data)
        test_idx = data.split_indices("test")
        train, val, test = data.split(train_idx), data.split(val_idx), data.split(test_idx)
        model = finetune_model(unit, store, data)

        t0 = time.perf_counter()
        resume = _load_checkpoint(store, uid)
        facts["resumed_from_epoch"] = resume["epoch"] if resume is not None else 0
        on_epoch = _epoch_callback(store, unit, report, lease_id, facts)
        result = fit(
            model,
            train,
            val,
            unit_fit_config(unit, env, device, obj),
            resume=resume,
            on_epoch=on_epoch,
        )
        train_seconds = _train_seconds(result, resume is not None, t0)
        model.load_state_dict(result.best_state)
        p_val = predict(model, val, device=device, task=obj.name)
        p_test = predict(model, test, device=device, task=obj.name)
        beats = None
        if obj.label_kind == "per_sample":
            beats = (data.beats(val_idx), data.beats(test_idx))
        y_test = _targets(test)
        test_m = obj.score(
            data.classes,
            (_targets(val), p_val),
            (y_test, p_test),
            class_codes=_class_codes(data),
            fs=data.meta.get("fs"),
            beats=beats,
        )
        row = {
            **_common_fields(unit, result, train_seconds, env, device),
            "architecture": c.architecture_label,
            "init": "pretrained" if unit.stage == "finetune" else "scratch",
            "upstream": c.upstream,
            "pretrain_task": c.pretrain_task,
            "pretrain_unit": c.pretrain_unit,
            "downstream": c.downstream,
            "freeze_depth": c.freeze_depth,
            "data_fraction": c.data_fraction,
            "repeat": c.repeat,
            "seed": c.seed,
            "n_train": len(train),
            "n_val": len(val),
            "n_test": len(test),
            "task": obj.name,
            "n_classes": None if obj.label_kind == "per_sample" else len(data.classes),
            **as_row(test_m),
            "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "trained_layers": ", ".join(model.trained_parts()),
        }
        predictions = _predictions_table(uid, data, test_idx, y_test, p_test, obj.name, test_m)
        _commit(
            store,
            unit,
            row,
            result.history,
            trial_path(uid),
            TRIALS_SCHEMA,
            lease_id,
            facts,
            predictions,
        )
        return row
    except BaseException as e:
        _mark_ended(store, unit, e, lease_id)
        raise


def _targets(rows) -> np.ndarray:
    """What the test metrics compare with: the labels, or the per-sample targets (read
    whole: the per-sample splits scored here are small, e.g. CPSC 2019's records)."""
    if rows.label_kind == "per_sample":
        return rows.arrays()[1]
    return rows.labels


@dataclass
class PretrainSetup:
    """What a pretraining worker trains: the data, the model, the module pretraining trains
    (the model, or a pretext wrapper such as CPC's holding it as its `encoder`: only the
    model's weights are kept) and the fit config with this worker's share of the batch."""

    data: PreparedDataset
    obj: Objective
    train: object
    val: object
    model: torch.nn.Module
    trained: torch.nn.Module
    fit_config: object


def pretrain_setup(
    unit: Unit, store: Store, env: dict, world_size: int, device: str
) -> PretrainSetup:
    """Seed, open the upstream data (training folds, validation split) and build the model
    of pretraining unit `unit`, as each of its `world_size` DDP workers does."""
    c = unit.config
    seed_everything(c.seed)
    data = open_prepared(store, c.data_key)
    obj = unit_objective(unit, data.label_kind, f"{data.name} ({data.path})")
    train_idx = data.split_indices("train", c.train_folds)
    train, val = data.split(train_idx), data.split(data.split_indices("val"))
    model = create_model(
        c.architecture,
        in_channels=data.in_channels,
        num_classes=len(data.classes),
        input_length=data.n_samples,
        **c.architecture_options,
    )
    trained = pretrain_task(c.pretrain_task).build(model, c.task_options or {})
    # The spec's batch size is global: each of the DDP workers takes its share.
    per_worker = max(1, c.train.batch_size // world_size)
    config = unit_fit_config(unit, env, device, obj, per_worker)
    return PretrainSetup(data, obj, train, val, model, trained, config)


def run_pretrain_worker(
    unit: Unit,
    store: Store,
    env: dict,
    rank: int,
    world_size: int,
    report: Report = None,
    device: str = "cpu",
) -> None:
    """The body of one DDP worker of a pretraining unit (torch.distributed set up by caller).

    Every rank trains on its shard and evaluates the whole validation split (so all ranks
    take the same early-stopping decision); rank 0 alone writes checkpoints and results.
    """
    uid = unit.unit_id
    c = unit.config
    lease_id = env.get("lease_id")
    facts = _run_facts(env)
    if rank == 0:
        _mark(store, unit, "running", lease_id, **facts)
    try:
        p = pretrain_setup(unit, store, env, world_size, device)
        data, obj, train, val, model, trained = p.data, p.obj, p.train, p.val, p.model, p.trained

        # Every rank reports (a Train report is collective); rank 0 alone writes.
        t0 = time.perf_counter()
        resume = _load_checkpoint(store, uid)
        facts["resumed_from_epoch"] = resume["epoch"] if resume is not None else 0
        on_epoch = _epoch_callback(store, unit, report, lease_id, facts, persist=rank == 0)
        result = fit(
            trained,
            train,
            val,
            p.fit_config,
            resume=resume,
            on_epoch=on_epoch,
        )
        if rank != 0:
            return
        train_seconds = _train_seconds(result, resume is not None, t0)
        trained.load_state_dict(result.best_state)
        store.write_bytes(weights_path(uid), state_to_bytes(model.state_dict()))
        store.write_json(
            f"pretrained/{uid}/model.json",
            {
                "model": model.config,
                "classifier_prefixes": list(model.classifier_prefixes),
                "classes": data.classes,
                "task": c.pretrain_task,
                "objective": obj.name,
                "lead_names": data.meta["lead_names"],
                "fs": data.meta["fs"],
                "n_samples": data.n_samples,
                "unit": c.canonical(),
            },
        )
        row = {
            **_common_fields(unit, result, train_seconds, env, device),
            "architecture": c.architecture_label,
            "upstream": c.upstream,
            "pretrain_task": c.pretrain_task,
            "num_workers": world_size,
            "n_train": len(train),
        }
        _commit(
            store, unit, row, result.history, pretrain_path(uid), PRETRAIN_SCHEMA, lease_id, facts
        )
    except BaseException as e:
        if rank == 0:
            _mark_ended(store, unit, e, lease_id)
        raise
