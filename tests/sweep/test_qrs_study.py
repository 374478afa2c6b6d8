"""The QRS-under-noise protocol on the real CPSC 2019 records, in this process: a U-Net
pretrained for QRS segmentation on clean ECG, fine-tuned on a noisy copy with its encoder
frozen by a zero learning rate, scored beat by beat on the test split."""

from __future__ import annotations

import json

import pytest

from study.store import Store
from study.sweep.execute import run_finetune_unit, run_pretrain_worker
from study.sweep.load import parse_spec
from study.sweep.runner import init_study, prepare_datasets


def _spec(source: str) -> dict:
    return {
        "name": "qrs",
        "architectures": [{"name": "unet1d", "options": {"base_width": 8, "depth": 3}}],
        "upstream": ["cpsc2019"],
        "downstream": ["cpsc2019_snr0"],
        "self_pairs": "patient_disjoint",
        "datasets": {
            "cpsc2019": {"source": source, "preprocessing": {"fs": 250, "normalize": "zscore"}},
            "cpsc2019_snr0": {
                "dataset": "cpsc2019",
                "source": source,
                "preprocessing": {
                    "fs": 250,
                    "normalize": "zscore",
                    "noise": {"kind": "mixed", "snr_db": 0},
                },
            },
        },
        "pretrain": {
            "task": "qrs",
            "epochs": 12,
            "num_workers": 1,
            "batch_size": 4,
            "lr": 0.01,
            "patience": 12,
        },
        "finetune": {
            "freeze_depths": [0],
            "data_fractions": [1.0],
            "repeats": 1,
            "epochs": 2,
            "batch_size": 4,
            "stage_lr": {"stem": 0.0, "stages.0": 0.0},
        },
    }


def test_qrs_pretraining_then_noisy_fine_tuning_on_cpsc2019(tmp_path, cache_dir, realdata):
    spec = parse_spec(_spec(str(realdata / "cpsc2019")))
    store = Store(str(tmp_path / "qrs"))
    plan = init_study(store, spec)
    prepare_datasets(store, spec, plan.units)
    (pre,) = plan.by_stage("pretrain")
    run_pretrain_worker(pre, store, {}, rank=0, world_size=1)
    epochs = store.read_dataset("results/epochs").to_pandas().sort_values("epoch")
    assert epochs.val_loss.iloc[-1] < epochs.val_loss.iloc[0]
    rows = {u.stage: run_finetune_unit(u, store, {}) for u in plan.units if u.stage != "pretrain"}
    ft, sc = rows["finetune"], rows["scratch"]
    assert ft["task"] == sc["task"] == "per_sample"
    assert ft["n_train"] == sc["n_train"] and ft["seed"] == sc["seed"]  # paired
    # the frozen stem and first stage (learning rate 0) train nothing
    assert ft["trainable_params"] < sc["trainable_params"]
    for row in (ft, sc):
        assert 0.0 <= row["test_qrs_f1"] <= 1.0
        assert 0.1 <= json.loads(row["decision_thresholds"])["qrs_probability"] <= 0.9
        assert "test_macro_auroc" not in row  # no class scores for a per-sample task
    # pretrained on clean QRS, the fine-tuned detector already finds beats in noise
    assert ft["test_qrs_f1"] > 0.5, ft
    # the stored predictions give back the row's QRS F1 (gross over the test records)
    import pyarrow.parquet as pq

    from study.schema import predictions_path
    from study.training.task_metrics import qrs_metrics_records

    for unit in plan.units:
        if unit.stage == "pretrain":
            continue
        table = pq.read_table(store.path(predictions_path(unit.unit_id)))
        fs = json.loads(table.schema.metadata[b"fs"])
        frame = table.to_pandas()
        assert frame["y_prob"].isna().all()  # no per-sample probabilities are kept
        got = qrs_metrics_records(list(frame["qrs_reference"]), list(frame["qrs_detected"]), fs)
        assert got["f1"] == pytest.approx(rows[unit.stage]["test_qrs_f1"])
        from analysis.uncertainty import load_predictions, metric_function

        (pred,) = load_predictions(store, [unit.unit_id]).values()
        assert metric_function("test_qrs_f1", "per_sample")(pred) == pytest.approx(got["f1"])
