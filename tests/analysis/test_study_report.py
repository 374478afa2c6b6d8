"""`report_study` on a store written in the exact on-disk format (trials, epochs, predictions,
plan, spec, run markers): every file of the report, the page in Chromium, and a bad
predictions file named instead of crashing the report."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import report_study
from study.schema import (
    EPOCHS_SCHEMA,
    PREDICTIONS_SCHEMA,
    TRIALS_SCHEMA,
    epochs_path,
    predictions_path,
    run_marker_path,
    trial_path,
)
from study.store import Store
from tests.analysis.test_page import load

N_TEST = 80
FRACTIONS = (0.25, 1.0)
REPEATS = 3


def _predictions(uid: str, y: np.ndarray, p: np.ndarray) -> pa.Table:
    n, k = y.shape
    columns = {
        "unit_id": pa.array([uid] * n),
        "record_id": pa.array([f"r{i:03d}" for i in range(n)]),
        "patient_id": pa.array([f"p{i // 2:03d}" for i in range(n)]),  # two records each
        "frame_start": pa.nulls(n, pa.int64()),
        "y_true": pa.array(y.astype(np.uint8).tolist(), pa.list_(pa.uint8())),
        "y_prob": pa.array(p.astype(np.float32).tolist(), pa.list_(pa.float32())),
        "qrs_reference": pa.nulls(n, pa.list_(pa.int32())),
        "qrs_detected": pa.nulls(n, pa.list_(pa.int32())),
    }
    table = pa.Table.from_arrays(
        [columns[f.name] for f in PREDICTIONS_SCHEMA], schema=PREDICTIONS_SCHEMA
    )
    meta = {b"classes": b'["AF", "RBBB"]', b"task": b"multi_label", b"thresholds": b"[0.5, 0.5]"}
    return table.replace_schema_metadata(meta)


def _write(store: Store, rel: str, table: pa.Table) -> None:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store.write_bytes(rel, buf.getvalue())


@pytest.fixture()
def study(tmp_path) -> Store:
    """A finished study of one architecture on one downstream: scratch and a pretrained arm
    that is better by construction, three repeats at two fractions, one failed unit."""
    from sklearn.metrics import roc_auc_score

    store = Store(str(tmp_path / "toy"))
    rng = np.random.default_rng(0)
    y = (rng.random((N_TEST, 2)) < 0.4).astype(int)
    y[0], y[1] = [1, 1], [0, 0]  # every class scored
    plan = []
    for fraction in FRACTIONS:
        for repeat in range(REPEATS):
            for init, signal in (("scratch", 0.8), ("pretrained", 1.6)):
                uid = f"{init[:2]}-{fraction:g}-{repeat}"
                p = 1 / (1 + np.exp(-(signal * (2 * y - 1) + rng.normal(0, 1, y.shape))))
                _write(store, predictions_path(uid), _predictions(uid, y, p))
                row = {
                    "unit_id": uid,
                    "architecture": "resnet1d18",
                    "init": init,
                    "upstream": "ptbxl" if init == "pretrained" else None,
                    "pretrain_task": "classification" if init == "pretrained" else None,
                    "downstream": "cpsc2018",
                    "freeze_depth": 0,
                    "data_fraction": fraction,
                    "repeat": repeat,
                    "seed": repeat,
                    "test_macro_auroc": float(
                        np.mean([roc_auc_score(y[:, k], p[:, k]) for k in range(2)])
                    ),
                    "val_macro_auroc": 0.7 + (0.05 if init == "pretrained" else 0.0),
                    "val_loss": 0.5,
                    "task": "multi_label",
                    "code_version": "0.1.0+test",
                    "hardware": "cpu:test",
                    "finished_at": pd.Timestamp("2026-12-01 10:00", tz="UTC"),
                }
                _write(store, trial_path(uid), pa.Table.from_pylist([row], schema=TRIALS_SCHEMA))
                epochs = [
                    {"unit_id": uid, "epoch": e, "train_loss": 1 / e, "val_loss": 1 / e + 0.1}
                    for e in range(1, 4)
                ]
                _write(store, epochs_path(uid), pa.Table.from_pylist(epochs, schema=EPOCHS_SCHEMA))
                plan.append(
                    {"unit_id": uid, "stage": "finetune" if init == "pretrained" else "scratch"}
                )
    plan.append({"unit_id": "sc-failed", "stage": "scratch"})
    _write(store, "plan.parquet", pa.Table.from_pylist(plan))
    store.write_json(
        run_marker_path("sc-failed"),
        {
            "unit_id": "sc-failed",
            "state": "failed",
            "host": "node-1",
            "error": "Boom: out of memory",
        },
    )
    store.write_bytes("spec.yaml", b"name: toy\nseed: 0\n")
    return store


def test_report_study_writes_every_part_and_the_page_loads(study, tmp_path):
    out = tmp_path / "report"
    paths = report_study(study.uri, out, n_boot=200, log=lambda line: None)
    for name in (
        "index.html",
        "summary.md",
        "paired.csv",
        "bootstrap.csv",
        "gain_vs_fraction.png",
        "gain_vs_freeze_depth.png",
        "gain_heatmap.png",
        "learning_curves.png",
        "data_efficiency.csv",
    ):
        assert name in paths, (name, sorted(paths))
    boot = pd.read_csv(paths["bootstrap.csv"])
    assert len(boot) == len(FRACTIONS) and (boot["boot_low"] > 0).all(), boot  # better by design
    paired = pd.read_csv(paths["paired.csv"])
    assert paired["boot_low"].notna().sum() == len(FRACTIONS)
    html = paths["index.html"].read_text()
    for words in (
        "Headlines (chosen on validation)",
        "Boom: out of memory",
        "0.1.0+test",
        "seed: 0",
    ):
        assert words in html, words
    attributes, console = load(paths["index.html"], tmp_path)
    assert attributes.get("data-images-ok") == "true", attributes
    assert console == []


def test_a_bad_predictions_file_is_named_and_the_report_still_written(study, tmp_path):
    study.write_bytes(predictions_path("pr-1-0"), b"not parquet")
    lines = []
    paths = report_study(study.uri, tmp_path / "report", n_boot=50, log=lines.append)
    assert "bootstrap.csv" not in paths and "index.html" in paths
    assert any("pr-1-0.parquet" in line for line in lines), lines
    assert "pr-1-0.parquet" in paths["index.html"].read_text()
    assert json.loads(json.dumps(sorted(paths)))  # the rest of the report is there
