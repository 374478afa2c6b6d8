"""One unit in a plain process (no Ray): crash after an epoch, re-run resumes from there."""

from __future__ import annotations

import pytest

from study.errors import StorageError
from study.schema import checkpoint_path, run_marker_path, trial_path
from study.store import Store
from study.sweep.execute import run_finetune_unit, run_pretrain_worker
from study.sweep.runner import init_study, prepare_datasets
from tests.sweep._smoke import smoke_spec


class Boom(Exception):
    pass


def _crash_at(epoch: int):
    def report(record: dict) -> None:
        if record["epoch"] == epoch:
            raise Boom(f"crash after epoch {epoch}")

    return report


@pytest.fixture()
def study(tmp_path, cache_dir):
    spec = smoke_spec(data_fractions=[1.0], freeze_depths=[0], epochs=3, patience=10)
    store = Store(str(tmp_path / "smoke"))
    plan = init_study(store, spec)
    prepare_datasets(store, spec)
    return store, plan


def test_a_crashed_unit_resumes_from_its_last_epoch(study):
    store, plan = study
    pre = plan.by_stage("pretrain")[0]
    with pytest.raises(Boom):
        run_pretrain_worker(pre, store, {}, rank=0, world_size=1, report=_crash_at(1))
    assert store.read_json(run_marker_path(pre.unit_id))["state"] == "failed"
    assert store.exists(checkpoint_path(pre.unit_id))
    run_pretrain_worker(pre, store, {}, rank=0, world_size=1)
    assert not store.exists(checkpoint_path(pre.unit_id))

    unit = plan.by_stage("finetune")[0]
    seen = []
    with pytest.raises(Boom):
        run_finetune_unit(unit, store, {}, report=_crash_at(2))
    assert not store.exists(trial_path(unit.unit_id))
    row = run_finetune_unit(unit, store, {}, report=lambda r: seen.append(r["epoch"]))
    assert seen == [3]  # epochs 1-2 came from the checkpoint, not trained again
    assert row["epochs"] == 3
    epochs = store.read_dataset("results/epochs").to_pandas()
    mine = epochs[epochs.unit_id == unit.unit_id]
    assert sorted(mine.epoch) == [1, 2, 3]
    # a finished unit is never run again
    assert run_finetune_unit(unit, store, {}) is None
    assert store.read_json(run_marker_path(unit.unit_id))["state"] == "done"


def test_fine_tuning_needs_its_pretrained_weights(study):
    store, plan = study
    unit = plan.by_stage("finetune")[0]
    with pytest.raises(StorageError, match=r"pretrained/pt-\w+/model.pt is not in store"):
        run_finetune_unit(unit, store, {})
    assert store.read_json(run_marker_path(unit.unit_id))["state"] == "failed"


def test_paired_arms_train_on_identical_records(study):
    from study.sweep.execute import open_prepared

    store, plan = study
    ft, sc = plan.by_stage("finetune")[0], plan.by_stage("scratch")[0]
    data = open_prepared(store, ft.config.data_key)
    a = data.train_subset(ft.config.data_fraction, ft.config.repeat)
    b = data.train_subset(sc.config.data_fraction, sc.config.repeat)
    assert (a == b).all()
    test = set(data.split_indices("test"))
    assert not test & set(a)


def test_a_relative_store_path_names_the_same_folder_from_any_working_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    store = Store("studies/x")
    store.write_json("a.json", {"k": 1})
    monkeypatch.chdir("/")
    assert Store(store.uri).read_json("a.json") == {"k": 1}
    assert store.uri == str(tmp_path / "studies" / "x")


def test_a_dataset_in_both_roles_trains_on_disjoint_patients(study):
    from study.sweep.execute import open_prepared

    store, plan = study
    pre, ft = plan.by_stage("pretrain")[0], plan.by_stage("finetune")[0]
    data = open_prepared(store, ft.config.data_key)
    patients = data.records.patient_id.to_numpy()
    up = set(patients[data.split_indices("train", pre.config.train_folds)])
    down = set(patients[data.train_subset(1.0, 0, ft.config.train_folds)])
    held_out = set(patients[data.split_indices("val")]) | set(patients[data.split_indices("test")])
    assert up and down and not up & down
    assert not (up | down) & held_out


def test_a_units_objective_is_checked_against_its_datas_labels():
    from study.errors import DataError
    from study.sweep.execute import unit_objective
    from study.sweep.load import parse_spec
    from study.sweep.plan import make_plan

    spec = parse_spec(
        {
            "name": "kinds",
            "architectures": [{"name": "unet1d", "options": {"base_width": 4, "depth": 2}}],
            "upstream": ["cpsc2019"],
            "downstream": ["cpsc2019_noisy"],
            "self_pairs": "patient_disjoint",
            "datasets": {
                "cpsc2019": {"source": "/data/cpsc2019"},
                "cpsc2019_noisy": {"dataset": "cpsc2019", "source": "/data/cpsc2019"},
            },
            "pretrain": {"task": "qrs"},
            "finetune": {"repeats": 1},
        }
    )
    plan = make_plan(spec)
    pre, fine = plan.by_stage("pretrain")[0], plan.by_stage("finetune")[0]
    assert unit_objective(pre, "per_sample", "cpsc2019").name == "per_sample"
    with pytest.raises(DataError, match="per_sample objective needs per_sample labels, but d"):
        unit_objective(pre, "multi_label", "d")
    with pytest.raises(DataError, match="unet1d cannot train on d: it gives per_sample outputs"):
        unit_objective(fine, "multi_label", "d")


def test_a_unit_stores_its_test_predictions_before_its_row(study):
    """results/predictions/<id>.parquet: one row per test record, in the test split's order,
    with labels, probabilities and the record and patient ids; the trials row's macro AUROC
    is recomputed from it exactly, and the number of classes scored is stored."""
    import json

    import numpy as np
    import pyarrow.parquet as pq
    from sklearn.metrics import roc_auc_score

    from study.schema import PREDICTIONS_SCHEMA, predictions_path
    from study.sweep.execute import open_prepared

    store, plan = study
    unit = plan.by_stage("scratch")[0]
    order = []
    real_write = store.write_table
    store.write_table = lambda rel, table: (order.append(rel), real_write(rel, table))[1]
    row = run_finetune_unit(unit, store, {})
    assert order.index(predictions_path(unit.unit_id)) < order.index(trial_path(unit.unit_id))
    assert order[-1] == trial_path(unit.unit_id)

    table = pq.read_table(store.path(predictions_path(unit.unit_id)))
    assert table.schema.remove_metadata() == PREDICTIONS_SCHEMA
    meta = table.schema.metadata
    data = open_prepared(store, unit.config.data_key)
    assert json.loads(meta[b"classes"]) == data.classes and meta[b"task"].decode() == row["task"]
    # the analysis layer reads it back and recomputes the row's number from it
    from analysis.uncertainty import load_predictions, metric_function

    (pred,) = load_predictions(store, [unit.unit_id]).values()
    assert metric_function("test_macro_auroc", pred.task)(pred) == pytest.approx(
        row["test_macro_auroc"], abs=1e-6
    )
    test_idx = data.split_indices("test")
    frame = table.to_pandas()
    assert frame["record_id"].tolist() == data.records["record_id"].iloc[test_idx].tolist()
    assert frame["patient_id"].tolist() == data.records["patient_id"].iloc[test_idx].tolist()
    y = np.stack(frame["y_true"].to_numpy()).astype(int)
    p = np.stack(frame["y_prob"].to_numpy())
    assert (y == data.labels[test_idx]).all()
    scored = [k for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
    assert row["test_n_classes_scored"] == len(scored) and row["n_classes"] == y.shape[1]
    expected = np.mean([roc_auc_score(y[:, k], p[:, k]) for k in scored])
    assert row["test_macro_auroc"] == pytest.approx(expected, abs=1e-6)


def test_matched_validation_subsamples_validation_patients_like_training(tmp_path, cache_dir):
    """val_fraction: match validates a unit at fraction f on its repeat's nested subset of
    the validation patients (the same for both arms); the test split is never subsampled."""
    from study.data.splits import nested_patient_subset
    from study.sweep.execute import open_prepared

    spec = smoke_spec(data_fractions=[0.5], freeze_depths=[0], val_fraction="match")
    store = Store(str(tmp_path / "matched"))
    plan = init_study(store, spec)
    prepare_datasets(store, spec)
    unit = plan.by_stage("scratch")[0]
    assert unit.config.val_fraction == "match"
    row = run_finetune_unit(unit, store, {})
    data = open_prepared(store, unit.config.data_key)
    val = data.split_indices("val")
    expected = nested_patient_subset(
        val, data.labels, data.records["patient_id"].to_numpy(), 0.5, 0, data.name
    )
    # synth_tiny: a few validation patients, one kept per class
    assert row["n_val"] == len(expected) <= len(val)
    assert row["n_test"] == len(data.split_indices("test"))
