"""analysis.uncertainty: loading stored predictions, the metrics recomputed from them, the
paired two-level bootstrap (with a coverage study of known truth), DeLong's test (checked
against its definitions and for calibration under the null) and the per-cell table."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

import analysis.uncertainty as uncertainty
from analysis.uncertainty import (
    Predictions,
    bootstrap_table,
    delong_macro,
    delong_test,
    load_predictions,
    metric_function,
    paired_bootstrap_gain,
    supported_metrics,
)
from study.errors import ConfigError, DataError
from study.schema import PREDICTIONS_SCHEMA, predictions_path
from study.store import Store

# --- fixtures: predictions in memory and on disk ---------------------------------------------


def _pred(
    uid: str,
    y: np.ndarray,
    p: np.ndarray,
    *,
    task: str = "multi_label",
    thresholds: object = None,
    patients: list | None = None,
) -> Predictions:
    """Predictions as `load_predictions` returns them, without the file (for the statistics)."""
    y, p = np.asarray(y), np.asarray(p)
    n, k = y.shape
    return Predictions(
        unit_id=uid,
        task=task,
        classes=tuple(f"c{i}" for i in range(k)),
        thresholds=[0.5] * k if thresholds is None and task == "multi_label" else thresholds,
        fs=None,
        record_id=np.array([f"r{i}" for i in range(n)], dtype=object),
        patient_id=np.array(patients if patients is not None else [None] * n, dtype=object),
        frame_start=np.full(n, -1, dtype=np.int64),
        y_true=y.astype(np.uint8),
        y_prob=p.astype(np.float32),
        qrs_reference=(),
        qrs_detected=(),
    )


def _qrs_pred(uid: str, refs: list, dets: list, fs: float = 1000.0) -> Predictions:
    n = len(refs)
    return Predictions(
        unit_id=uid,
        task="per_sample",
        classes=(),
        thresholds={"qrs_probability": 0.5},
        fs=fs,
        record_id=np.array([f"r{i}" for i in range(n)], dtype=object),
        patient_id=np.array([None] * n, dtype=object),
        frame_start=np.full(n, -1, dtype=np.int64),
        y_true=np.zeros((n, 0), np.uint8),
        y_prob=np.zeros((n, 0), np.float32),
        qrs_reference=tuple(np.asarray(r, dtype=np.int64) for r in refs),
        qrs_detected=tuple(np.asarray(d, dtype=np.int64) for d in dets),
    )


def write_predictions(
    root: Path,
    uid: str,
    y: np.ndarray | None = None,
    p: np.ndarray | None = None,
    *,
    task: str = "multi_label",
    classes: list[str] | None = None,
    thresholds: object = None,
    records: list[str] | None = None,
    patients: list | None = None,
    frames: list | None = None,
    refs: list | None = None,
    dets: list | None = None,
    fs: float | None = None,
    metadata: dict[bytes, bytes] | None = None,
) -> None:
    """One unit's predictions file, in PREDICTIONS_SCHEMA, written as the store writes."""
    n = len(y) if y is not None else len(refs)
    if classes is None:
        classes = [f"c{i}" for i in range(0 if y is None else np.shape(y)[1])]
    meta = {b"classes": json.dumps(classes).encode(), b"task": task.encode()}
    meta[b"thresholds"] = json.dumps(thresholds).encode()
    if fs is not None:
        meta[b"fs"] = str(fs).encode()
    meta.update(metadata or {})
    meta = {k: v for k, v in meta.items() if v is not None}
    columns = {
        "unit_id": [uid] * n,
        "record_id": records or [f"r{i}" for i in range(n)],
        "patient_id": patients or [f"p{i}" for i in range(n)],
        "frame_start": frames or [None] * n,
        "y_true": None if y is None else [list(map(int, row)) for row in y],
        "y_prob": None if p is None else [list(map(float, row)) for row in p],
        "qrs_reference": refs,
        "qrs_detected": dets,
    }
    arrays = [
        pa.array(columns[f.name] if columns[f.name] is not None else [None] * n, type=f.type)
        for f in PREDICTIONS_SCHEMA
    ]
    table = pa.Table.from_arrays(arrays, schema=PREDICTIONS_SCHEMA.with_metadata(meta))
    Store(str(root)).write_table(predictions_path(uid), table)


Y4 = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]])
P4 = np.array([[0.9, 0.8, 0.1], [0.2, 0.8, 0.7], [0.5, 0.3, 0.2], [0.1, 0.1, 0.6]])


# --- loading ---------------------------------------------------------------------------------


def test_load_round_trip_multi_label(tmp_path):
    write_predictions(
        tmp_path,
        "u1",
        Y4,
        P4,
        thresholds=[0.5, 0.3, 0.5],
        patients=["p0", "p0", None, "p2"],
        frames=[0, 2048, None, None],
    )
    got = load_predictions(str(tmp_path), ["u1"])["u1"]
    assert (got.unit_id, got.task, got.classes) == ("u1", "multi_label", ("c0", "c1", "c2"))
    assert got.thresholds == [0.5, 0.3, 0.5] and got.fs is None
    assert list(got.record_id) == ["r0", "r1", "r2", "r3"]
    assert list(got.patient_id) == ["p0", "p0", None, "p2"]
    assert list(got.frame_start) == [0, 2048, -1, -1]
    assert got.y_true.dtype == np.uint8 and got.y_prob.dtype == np.float32
    np.testing.assert_array_equal(got.y_true, Y4)
    np.testing.assert_allclose(got.y_prob, P4.astype(np.float32))
    assert got.qrs_reference == () and got.n_rows == 4
    with pytest.raises(ValueError, match="read-only"):
        got.y_prob[0, 0] = 1.0
    # a Store works as well as its URI
    assert load_predictions(Store(str(tmp_path)), ["u1"])["u1"].n_rows == 4


def test_load_per_sample(tmp_path):
    write_predictions(
        tmp_path, "q", task="per_sample", refs=[[300, 100], []], dets=[[110], [5]], fs=250
    )
    got = load_predictions(str(tmp_path), ["q"])["q"]
    assert (got.task, got.fs, got.classes) == ("per_sample", 250.0, ())
    assert got.y_true.shape == (2, 0)
    assert [list(r) for r in got.qrs_reference] == [[100, 300], []]  # sorted
    assert [list(d) for d in got.qrs_detected] == [[110], [5]]


def _garbage(root: Path) -> None:
    Store(str(root)).write_bytes(predictions_path("u"), b"this is not parquet")


def _renamed(root: Path) -> None:
    """Unit v's file stored under u's name."""
    write_predictions(root, "v", Y4, P4)
    folder = root / "results" / "predictions"
    (folder / "v.parquet").rename(folder / "u.parquet")


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda root: None, r"no predictions for unit u: results/predictions/u\.parquet"),
        (_garbage, r"results/predictions/u\.parquet .* is not a readable Parquet file"),
        (
            lambda root: write_predictions(root, "u", Y4, P4, metadata={b"classes": None}),
            r"u\.parquet .* lacks the schema metadata 'classes'",
        ),
        (
            lambda root: write_predictions(root, "u", Y4, P4, task="regression"),
            r"task must be one of multi_label, single_label, per_sample, got 'regression'",
        ),
        (
            lambda root: write_predictions(root, "u", Y4, P4, classes=["a", "b"]),
            r"y_true must hold one value per class \(2\), row 0 has 3",
        ),
        (_renamed, r"must hold unit u's rows only, got unit_id \['v'\]"),
        (
            lambda root: write_predictions(root, "u", Y4 * 2, P4),
            r"y_true must hold 0/1 labels",
        ),
        (
            lambda root: write_predictions(root, "u", Y4, P4, task="single_label"),
            r"single_label y_true must be one-hot, row 0 has 2 ones",
        ),
        (
            lambda root: write_predictions(
                root, "u", task="per_sample", refs=[[1]], dets=[[1]], fs=None
            ),
            r"per_sample predictions need the schema metadata 'fs'",
        ),
    ],
)
def test_load_errors_name_the_file_and_the_rule(tmp_path, write, message):
    write(tmp_path)
    with pytest.raises(DataError, match=message) as caught:
        load_predictions(str(tmp_path), ["u"])
    assert caught.value.__cause__ is None  # no pyarrow traceback chained under it


def test_load_refuses_a_single_string(tmp_path):
    with pytest.raises(ConfigError, match="collection of unit ids, got the string 'u1'"):
        load_predictions(str(tmp_path), "u1")


# --- metrics ---------------------------------------------------------------------------------


def test_macro_auroc_over_scored_classes_by_hand():
    # class 0: positives 0.9, 0.2 vs negatives 0.5, 0.1 -> 3 of 4 pairs = 0.75
    # class 1: positives 0.8, 0.3 vs negatives 0.8, 0.1 -> (0.5 + 1 + 0 + 1) / 4 = 0.625
    # class 2: no positive -> not scored
    auroc = metric_function("test_macro_auroc", "multi_label")
    assert auroc(_pred("u", Y4, P4)) == pytest.approx((0.75 + 0.625) / 2)
    # rows 0 and 3 only: class 1 has a positive (0.8) and a negative (0.1) -> 1; class 0 -> 1
    assert auroc(_pred("u", Y4, P4), np.array([0, 3])) == pytest.approx(1.0)
    # no scored class: undefined
    assert math.isnan(auroc(_pred("u", Y4, P4), np.array([3, 3])))


def test_macro_f1_multi_label_at_stored_thresholds_by_hand():
    # class 0 at 0.5: predicted [1, 0, 1, 0] vs [1, 1, 0, 0] -> TP 1, FP 1, FN 1 -> 0.5
    # class 1 at 0.3: predicted [1, 1, 1, 0] vs [1, 0, 1, 0] -> TP 2, FP 1, FN 0 -> 0.8
    # class 2 (no positive) is not scored, although it has false positives at 0.5
    f1 = metric_function("test_macro_f1", "multi_label")
    assert f1(_pred("u", Y4, P4, thresholds=[0.5, 0.3, 0.5])) == pytest.approx(0.65)
    with pytest.raises(DataError, match=r"needs 3 per-class thresholds .* has \[0.5\]"):
        f1(_pred("u", Y4, P4, thresholds=[0.5]))


def test_single_label_f1_and_accuracy_by_hand():
    y = np.eye(3)[[0, 0, 1, 1, 2, 0]]
    p = np.eye(3)[[0, 1, 1, 1, 0, 0]] * 0.6 + 0.1  # arg-max classes 0, 1, 1, 1, 0, 0
    pred = _pred("u", y, p, task="single_label")
    # class 0: TP 2 (rows 0, 5), FP 1 (row 4), FN 1 (row 1) -> 4/6; class 1: TP 2, FP 1,
    # FN 0 -> 4/5; class 2: TP 0, FN 1 -> 0
    f1 = metric_function("test_macro_f1", "single_label")
    assert f1(pred) == pytest.approx((4 / 6 + 4 / 5 + 0) / 3)
    assert metric_function("test_accuracy", "single_label")(pred) == pytest.approx(4 / 6)


def test_qrs_f1_by_hand():
    # fs 1000: samples are ms. Record 0: beats 0, 250, detections 130, 380 -> both match
    # (130 ms each; a greedy nearest-first match would find one). Record 1: beat 1000,
    # detections 1010 and 1200 -> TP 1, FP 1. Record 2: a missed beat -> FN 1.
    # Record 3: a detection exactly 150 ms away matches (the window is inclusive).
    pred = _qrs_pred("q", [[0, 250], [1000], [500], [0]], [[130, 380], [1010, 1200], [], [150]])
    qrs = metric_function("test_qrs_f1", "per_sample")
    assert qrs(pred) == pytest.approx(2 * 4 / (2 * 4 + 1 + 1))
    # rows may repeat: record 0 twice and record 2: TP 4, FN 1
    assert qrs(pred, np.array([0, 0, 2])) == pytest.approx(8 / 9)
    # nothing to detect and nothing detected: undefined
    assert math.isnan(qrs(_qrs_pred("q", [[]], [[]])))


@pytest.mark.parametrize(
    ("name", "task", "message"),
    [
        (
            "test_weighted_f1",
            "multi_label",
            r"metric must be one of test_accuracy, test_macro_auroc, test_macro_f1, "
            r"test_qrs_f1 \(recomputed from stored predictions\), got 'test_weighted_f1'",
        ),
        (
            "test_qrs_f1",
            "multi_label",
            r"test_qrs_f1 is defined for per_sample predictions, not multi_label; for "
            r"multi_label the supported metrics are test_macro_auroc, test_macro_f1",
        ),
        ("test_accuracy", "multi_label", r"test_accuracy is defined for single_label"),
        ("test_macro_auroc", "ranking", r"task must be one of multi_label, .* got 'ranking'"),
    ],
)
def test_unsupported_metrics_say_which_are(name, task, message):
    with pytest.raises(DataError, match=message):
        metric_function(name, task)


def test_supported_metrics_by_task():
    assert supported_metrics("per_sample") == ["test_qrs_f1"]
    assert supported_metrics("single_label") == [
        "test_accuracy",
        "test_macro_auroc",
        "test_macro_f1",
    ]


def _random_classification(task: str, seed: int, n: int = 60, k: int = 4) -> Predictions:
    rng = np.random.default_rng(seed)
    if task == "single_label":
        y = np.eye(k)[rng.integers(0, k, n)]
    else:
        y = (rng.random((n, k)) < [0.5, 0.3, 0.1, 0.03]).astype(int)
        y[:, 3] = 0
        y[7, 3] = 1  # a class with one positive: often not scored in a resample
    p = np.round(np.clip(y * 0.3 + rng.random((n, k)) * 0.7, 0, 1), 1)  # many ties
    return _pred("u", y, p, task=task, thresholds=[0.5, 0.4, 0.3, 0.2], patients=None)


@pytest.mark.parametrize(
    ("name", "task"),
    [
        ("test_macro_auroc", "multi_label"),
        ("test_macro_auroc", "single_label"),
        ("test_macro_f1", "multi_label"),
        ("test_macro_f1", "single_label"),
        ("test_accuracy", "single_label"),
        ("test_qrs_f1", "per_sample"),
    ],
)
def test_weighted_form_equals_the_reference_on_resampled_rows(name, task):
    if task == "per_sample":
        rng = np.random.default_rng(3)
        refs = [np.sort(rng.choice(5000, rng.integers(0, 6), replace=False)) for _ in range(30)]
        dets = [np.sort(r + rng.integers(-200, 200, len(r)))[: rng.integers(0, 6)] for r in refs]
        pred = _qrs_pred("q", refs, dets)
    else:
        pred = _random_classification(task, seed=1)
    metric = metric_function(name, task)
    rng = np.random.default_rng(0)
    n = pred.n_rows
    counts = rng.multinomial(n, np.full(n, 1 / n), size=40).T.astype(np.int32)  # (n, 40)
    counts[:, 0] = 0
    counts[0, 0] = 5  # one row only: nothing is scored
    got = metric.weighted(pred)(counts)
    want = np.array([metric(pred, np.repeat(np.arange(n), counts[:, j])) for j in range(40)])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    if task != "per_sample" and name != "test_accuracy":
        assert np.isnan(got[0])


def test_weighted_auroc_equals_sklearn_directly():
    pred = _random_classification("multi_label", seed=5)
    counts = np.random.default_rng(1).integers(0, 3, size=(pred.n_rows, 1)).astype(np.int32)
    rows = np.repeat(np.arange(pred.n_rows), counts[:, 0])
    y, p = pred.y_true[rows], pred.y_prob[rows]
    scored = [k for k in range(4) if 0 < y[:, k].sum() < len(y)]
    want = np.mean([roc_auc_score(y[:, k], p[:, k]) for k in scored])
    got = metric_function("test_macro_auroc", "multi_label").weighted(pred)(counts)
    assert got[0] == pytest.approx(want, abs=1e-12)


# --- the paired bootstrap --------------------------------------------------------------------


def _study(
    seed: int, n_patients: int = 40, per_patient: int = 2, repeats: int = 3, k: int = 2
) -> tuple[list[Predictions], list[Predictions]]:
    """Two arms, the pretrained one better, rows grouped in patients."""
    rng = np.random.default_rng(seed)
    y = np.repeat(rng.random((n_patients, k)) < 0.4, per_patient, axis=0).astype(int)
    patients = [f"p{i // per_patient}" for i in range(len(y))]

    def arm(name: str, separation: float) -> list[Predictions]:
        return [
            _pred(f"{name}{r}", y, y * separation + rng.normal(size=y.shape), patients=patients)
            for r in range(repeats)
        ]

    return arm("a", 1.5), arm("b", 0.8)


def test_bootstrap_point_estimate_and_reproducibility(monkeypatch):
    pretrained, scratch = _study(0)
    auroc = metric_function("test_macro_auroc", "multi_label")
    result = paired_bootstrap_gain(pretrained, scratch, "test_macro_auroc", n_boot=300, seed=7)
    want = np.mean([auroc(a) - auroc(b) for a, b in zip(pretrained, scratch, strict=True)])
    assert result.gain == pytest.approx(want)
    assert result.low < result.gain < result.high
    assert (result.n_boot, result.n_undefined, result.n_repeats) == (300, 0, 3)
    assert (result.n_patients, result.n_rows, result.confidence) == (40, 80, 0.95)
    assert 0 < result.p_value <= 1
    assert paired_bootstrap_gain(pretrained, scratch, "test_macro_auroc", 300, seed=7) == result
    assert paired_bootstrap_gain(pretrained, scratch, "test_macro_auroc", 300, seed=8) != result
    # the memory blocks replicates are drawn in do not change them
    monkeypatch.setattr(uncertainty, "_CHUNK_ELEMENTS", 80 * 7)
    assert paired_bootstrap_gain(pretrained, scratch, "test_macro_auroc", 300, seed=7) == result


def test_bootstrap_p_value_and_interval_rules():
    pretrained, scratch = _study(1)
    # identical arms: every replicate's gain is 0 -> interval [0, 0], p = 1
    same = paired_bootstrap_gain(pretrained, pretrained, "test_macro_f1", n_boot=200)
    assert (same.gain, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    # a clear gain: no replicate <= 0 -> p = 2 * 1 / (B + 1), the smallest it can be
    clear = paired_bootstrap_gain(pretrained, scratch, "test_macro_auroc", n_boot=199)
    assert clear.low > 0
    assert clear.p_value == pytest.approx(2 / 200)
    # the interval narrows with the confidence
    narrow = paired_bootstrap_gain(pretrained, scratch, "test_macro_auroc", 199, confidence=0.5)
    assert clear.low < narrow.low < narrow.high < clear.high


def test_bootstrap_resamples_patients_not_rows():
    # Every row doubled within its patient: the same patient draws give the same metrics
    # (a patient's rows always come together), so the result is identical.
    rng = np.random.default_rng(2)
    y = (rng.random((30, 2)) < 0.4).astype(int)
    a, b = y * 1.2 + rng.normal(size=y.shape), y * 0.6 + rng.normal(size=y.shape)
    patients = [f"p{i}" for i in range(30)]
    single = paired_bootstrap_gain(
        [_pred("a", y, a, patients=patients)],
        [_pred("b", y, b, patients=patients)],
        "test_macro_auroc",
        n_boot=200,
    )
    twice = np.repeat(np.arange(30), 2)
    doubled = paired_bootstrap_gain(
        [_pred("a", y[twice], a[twice], patients=[patients[i] for i in twice])],
        [_pred("b", y[twice], b[twice], patients=[patients[i] for i in twice])],
        "test_macro_auroc",
        n_boot=200,
    )
    assert (doubled.gain, doubled.low, doubled.high) == pytest.approx(
        (single.gain, single.low, single.high), abs=1e-12
    )
    assert (doubled.n_patients, doubled.n_rows) == (30, 60)
    # rows without a patient id are clustered by record (here one row each): one by one
    loose = paired_bootstrap_gain(
        [_pred("a", y[twice], a[twice])], [_pred("b", y[twice], b[twice])], "test_macro_auroc"
    )
    assert loose.n_patients == 60


def test_bootstrap_draws_repeats_and_patients_apart():
    # Three copies of one repeat pair: whatever repeats are drawn the mean is the same, and
    # patients are drawn from their own stream, so the result is the single pair's.
    pretrained, scratch = _study(3, repeats=1)
    one = paired_bootstrap_gain(pretrained, scratch, "test_macro_auroc", n_boot=100, seed=4)
    three = paired_bootstrap_gain(pretrained * 3, scratch * 3, "test_macro_auroc", 100, seed=4)
    assert (three.gain, three.low, three.high) == pytest.approx((one.gain, one.low, one.high))
    assert three.n_repeats == 3


def test_bootstrap_counts_undefined_replicates():
    # One class, one positive patient among 20: a replicate without that patient has no
    # scored class; (1 - 1/20)^20 = 0.36 of them
    y = np.zeros((20, 1), int)
    y[4] = 1
    rng = np.random.default_rng(0)
    pretrained = [_pred("a", y, rng.random((20, 1)), patients=list(range(20)))]
    scratch = [_pred("b", y, rng.random((20, 1)), patients=list(range(20)))]
    result = paired_bootstrap_gain(pretrained, scratch, "test_macro_auroc", n_boot=400)
    assert 0.25 < result.n_undefined / 400 < 0.48
    assert not math.isnan(result.low)
    # a second class that every replicate scores: the first is dropped, nothing undefined
    y2 = np.column_stack([y[:, 0], np.arange(20) % 2])
    pretrained = [_pred("a", y2, rng.random((20, 2)), patients=list(range(20)))]
    scratch = [_pred("b", y2, rng.random((20, 2)), patients=list(range(20)))]
    # (a replicate that draws only odd or only even patients has probability ~1e-6)
    result = paired_bootstrap_gain(pretrained, scratch, "test_macro_auroc", n_boot=400)
    assert result.n_undefined == 0


def _swap(pred: Predictions, **changes: object) -> Predictions:
    return dataclasses.replace(pred, **changes)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: _swap(p, record_id=p.record_id[[1, 0, *range(2, p.n_rows)]]),
            r"units a0 and b0 were not tested on identical rows: record_id differs first "
            r"at row 0 \('r1' vs 'r0'\)",
        ),
        (
            lambda p: _swap(p, frame_start=np.where(np.arange(p.n_rows) == 5, 2048, -1)),
            r"frame_start differs first at row 5 \(2048 vs -1\)",
        ),
        (lambda p: _swap(p, y_true=1 - p.y_true), r"y_true differs first at row 0"),
        (lambda p: _swap(p, classes=("x", "y")), r"classes \('x', 'y'\) vs \('c0', 'c1'\)"),
    ],
)
def test_bootstrap_refuses_pairs_on_different_rows(change, message):
    pretrained, scratch = _study(0, repeats=1)
    with pytest.raises(DataError, match=message):
        paired_bootstrap_gain([change(pretrained[0])], scratch, "test_macro_auroc", n_boot=10)


def test_bootstrap_refuses_repeats_on_different_rows_and_bad_options():
    pretrained, scratch = _study(0, repeats=2)
    other = _swap(pretrained[1], record_id=pretrained[1].record_id[::-1].copy())
    with pytest.raises(
        DataError,
        match="units a0 and a1 were not tested on identical rows: record_id differs first at row 0",
    ):
        paired_bootstrap_gain([pretrained[0], other], scratch, "test_macro_auroc", n_boot=10)
    with pytest.raises(DataError, match="paired by position; got 2 and 1"):
        paired_bootstrap_gain(pretrained, scratch[:1], "test_macro_auroc")
    with pytest.raises(ConfigError, match="n_boot must be an integer >= 1, got 0"):
        paired_bootstrap_gain(pretrained, scratch, "test_macro_auroc", n_boot=0)
    with pytest.raises(ConfigError, match=r"confidence must be in \(0, 1\), got 95"):
        paired_bootstrap_gain(pretrained, scratch, "test_macro_auroc", confidence=95)
    with pytest.raises(DataError, match="test_accuracy is defined for single_label"):
        paired_bootstrap_gain(pretrained, scratch, "test_accuracy")


def test_bootstrap_qrs_f1():
    rng = np.random.default_rng(0)
    refs = [np.arange(0, 10_000, 800) + rng.integers(0, 50) for _ in range(12)]
    good = [r + rng.integers(-40, 40, len(r)) for r in refs]  # within 150 ms at 1 kHz
    bad = [np.sort(np.r_[r[::2], rng.integers(0, 10_000, 3)]) for r in refs]
    result = paired_bootstrap_gain(
        [_qrs_pred("a", refs, good)], [_qrs_pred("b", refs, bad)], "test_qrs_f1", n_boot=200
    )
    qrs = metric_function("test_qrs_f1", "per_sample")
    assert result.gain == pytest.approx(
        qrs(_qrs_pred("a", refs, good)) - qrs(_qrs_pred("b", refs, bad))
    )
    assert 0 < result.low < result.gain < result.high


def test_bootstrap_is_fast_at_study_size():
    # 2000 replicates x 10 repeats x 2000 records of 5 classes: about 2.5 s on one core (the
    # bound leaves room for a loaded machine; minutes would mean the vectorisation is lost)
    rng = np.random.default_rng(0)
    y = (rng.random((2000, 5)) < 0.2).astype(int)
    patients = [f"p{i // 2}" for i in range(2000)]
    pretrained = [
        _pred(f"a{r}", y, y * 1.5 + rng.normal(size=y.shape), patients=patients) for r in range(10)
    ]
    scratch = [
        _pred(f"b{r}", y, y * 1.2 + rng.normal(size=y.shape), patients=patients) for r in range(10)
    ]
    start = time.perf_counter()
    result = paired_bootstrap_gain(pretrained, scratch, "test_macro_auroc", n_boot=2000)
    assert time.perf_counter() - start < 60
    assert result.low > 0


def _coverage_run(
    rng: np.random.Generator,
    y: np.ndarray,
    u: np.ndarray,
    sigma: float,
    tau: float,
    patients: list[str],
) -> Predictions:
    """One repeat of one arm of the coverage study (its docstring)."""
    d = 1.5 + tau * rng.normal()
    v = rng.normal(size=y.shape)
    return _pred(
        "run", y, d * y + sigma * (math.sqrt(0.5) * u + math.sqrt(0.5) * v), patients=patients
    )


def test_bootstrap_interval_covers_a_known_gain():
    """Coverage of the 95% interval over 200 simulated studies whose gain is known.

    A study: 100 patients of 2 records; a patient's label y ~ Bernoulli(0.4) and a patient
    effect u ~ N(0, 1) are shared by its records, every repeat and both arms. A repeat of an
    arm with noise sigma scores a record ``d_r * y + sigma * (sqrt(.5) u + sqrt(.5) v)``: v a
    fresh N(0, 1) per record (what differs between two models on one record) and
    ``d_r = 1.5 + 0.3 e_r``, e_r ~ N(0, 1) per repeat (how good the run's model came out).
    A record's score is then N(d_r y, sigma^2) given d_r, and positives and negatives are
    different patients, so a repeat's expected AUROC is Phi(d_r / (sigma sqrt 2)) and its
    mean over repeats Phi(1.5 / sqrt(2 sigma^2 + 0.3^2)) (E Phi(a + bZ) = Phi(a /
    sqrt(1 + b^2))). The true gain is that of sigma 1.0 minus that of sigma 1.4 (0.077).
    10 repeats, as the study's experiments run.
    """
    sigma_a, sigma_b, tau, n_patients, repeats = 1.0, 1.4, 0.3, 100, 10
    truth = norm.cdf(1.5 / math.sqrt(2 * sigma_a**2 + tau**2)) - norm.cdf(
        1.5 / math.sqrt(2 * sigma_b**2 + tau**2)
    )
    covered = 0
    studies = 200
    for study in range(studies):
        rng = np.random.default_rng(50_000 + study)
        y = np.repeat(rng.random(n_patients) < 0.4, 2)[:, None].astype(int)
        u = np.repeat(rng.normal(size=n_patients), 2)[:, None]
        patients = [f"p{i // 2}" for i in range(2 * n_patients)]

        result = paired_bootstrap_gain(
            [_coverage_run(rng, y, u, sigma_a, tau, patients) for _ in range(repeats)],
            [_coverage_run(rng, y, u, sigma_b, tau, patients) for _ in range(repeats)],
            "test_macro_auroc",
            n_boot=300,
            seed=study,
        )
        covered += result.low <= truth <= result.high
    assert 0.88 <= covered / studies <= 0.99


# --- DeLong ----------------------------------------------------------------------------------


def _by_definition(y: np.ndarray, p: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUROC, V10 and V01 from DeLong's definitions, with plain loops."""
    pos, neg = p[y == 1], p[y == 0]

    def psi(x: float, z: float) -> float:
        return 1.0 if x > z else 0.5 if x == z else 0.0

    v10 = np.array([sum(psi(x, z) for z in neg) / len(neg) for x in pos])
    v01 = np.array([sum(psi(x, z) for x in pos) / len(pos) for z in neg])
    return float(v10.mean()), v10, v01


def test_delong_binary_against_its_definition():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 0])
    p_a = np.array([0.9, 0.8, 0.4, 0.6, 0.3, 0.4, 0.2, 0.7, 0.1, 0.55, 0.35])
    p_b = np.array([0.7, 0.3, 0.5, 0.6, 0.6, 0.2, 0.1, 0.5, 0.3, 0.45, 0.2])
    auc_a, v10_a, v01_a = _by_definition(y, p_a)
    auc_b, v10_b, v01_b = _by_definition(y, p_b)
    m, n = len(v10_a), len(v01_a)
    s10, s01 = np.cov(np.vstack([v10_a, v10_b])), np.cov(np.vstack([v01_a, v01_b]))
    s = s10 / m + s01 / n
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    z = (auc_a - auc_b) / math.sqrt(var)

    got = delong_test(y, p_a, p_b)
    assert got.auc_a == pytest.approx(roc_auc_score(y, p_a)) == pytest.approx(auc_a)
    assert got.auc_b == pytest.approx(auc_b)
    assert got.diff == pytest.approx(auc_a - auc_b)
    assert got.var == pytest.approx(var)
    assert got.z == pytest.approx(z)
    assert got.p_value == pytest.approx(2 * norm.sf(abs(z)))
    assert got.n_classes == 1


def test_delong_macro_of_one_class_is_the_binary_test():
    rng = np.random.default_rng(0)
    y = (rng.random(80) < 0.3).astype(int)
    p_a = np.round(y + rng.normal(size=80), 1)
    p_b = np.round(0.5 * y + rng.normal(size=80), 1)
    binary = delong_test(y, p_a, p_b)
    # a second column with no positive is not scored
    macro = delong_macro(
        np.column_stack([y, 0 * y]), np.column_stack([p_a, p_a]), np.column_stack([p_b, p_a])
    )
    for field in ("auc_a", "auc_b", "diff", "var", "z", "p_value", "n_classes"):
        assert getattr(macro, field) == pytest.approx(getattr(binary, field), rel=1e-12)


def test_delong_identical_and_degenerate_predictors():
    rng = np.random.default_rng(1)
    y = (rng.random((50, 3)) < 0.4).astype(int)
    p = rng.random((50, 3))
    same = delong_macro(y, p, p)
    assert (same.diff, same.var, same.z, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    same = delong_test(y[:, 0], p[:, 0], p[:, 0])
    assert (same.diff, same.var, same.z, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    # perfect vs all tied: every component constant, var 0 but diff 0.5 -> no test
    labels = np.array([0, 0, 1, 1])
    degenerate = delong_test(labels, labels * 1.0, np.ones(4))
    assert degenerate.diff == 0.5 and degenerate.var == 0
    assert math.isnan(degenerate.z) and math.isnan(degenerate.p_value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: delong_test([1, 0, 0, 0], [1, 2, 3, 4], [1, 2, 3, 4]), "1 positive"),
        (lambda: delong_test([1, 1, 0, 0], [1, 2, 3], [1, 2, 3, 4]), r"p_a must have .* \(4,\)"),
        (lambda: delong_test([1, 2, 0, 0], [1, 2, 3, 4], [1, 2, 3, 4]), "labels must be 0/1"),
        (lambda: delong_test([[1, 0]], [[1, 0]], [[1, 0]]), "1-dimensional, got shape"),
        (
            lambda: delong_macro(np.zeros((5, 2)), np.zeros((5, 2)), np.zeros((5, 2))),
            "no class is scored",
        ),
        (
            lambda: delong_macro(
                np.array([[1, 1], [1, 0], [0, 0], [0, 0]]), np.eye(4)[:, :2], np.eye(4)[:, :2]
            ),
            r"class 1 has 1 positive\(s\) and 3 negative\(s\)",
        ),
    ],
)
def test_delong_errors(call, message):
    with pytest.raises(DataError, match=message):
        call()


def _null_study(seed: int, k: int, n: int = 150) -> tuple[np.ndarray, ...]:
    """Two predictors of equal true AUROC per class, correlated through a shared term."""
    rng = np.random.default_rng(seed)
    base = rng.random(n) < 0.4
    y = np.column_stack([base ^ (rng.random(n) < 0.15 * j) for j in range(k)]).astype(int)
    shared = rng.normal(size=(n, 1))

    def scores() -> np.ndarray:
        return y + math.sqrt(0.5) * shared + math.sqrt(0.5) * rng.normal(size=(n, k))

    return y, scores(), scores()


@pytest.mark.parametrize("k", [1, 3])
def test_delong_is_calibrated_under_the_null(k):
    p_values = []
    for seed in range(300):
        y, a, b = _null_study(seed, k)
        test = delong_test(y[:, 0], a[:, 0], b[:, 0]) if k == 1 else delong_macro(y, a, b)
        p_values.append(test.p_value)
    p_values = np.array(p_values)
    assert 0.02 <= (p_values < 0.05).mean() <= 0.09
    # roughly uniform: each fifth of [0, 1] holds 60 +- 3 sd
    counts = np.histogram(p_values, bins=5, range=(0, 1))[0]
    assert counts.min() >= 35 and counts.max() <= 90


def test_delong_macro_variance_includes_the_covariance_between_classes():
    # Classes share most labels and each predictor's noise is mostly shared across classes,
    # so the class differences move together: the variance of the macro difference is near
    # that of one class, far above the sum of per-class variances / K^2.
    diffs, estimated, without_covariance = [], [], []
    for seed in range(400):
        rng = np.random.default_rng(10_000 + seed)
        base = rng.random(200) < 0.4
        y = np.column_stack([base ^ (rng.random(200) < 0.1) for _ in range(3)]).astype(int)
        a = 1.2 * y + rng.normal(size=(200, 1)) + 0.3 * rng.normal(size=(200, 3))
        b = 0.9 * y + rng.normal(size=(200, 1)) + 0.3 * rng.normal(size=(200, 3))
        test = delong_macro(y, a, b)
        diffs.append(test.diff)
        estimated.append(test.var)
        without_covariance.append(
            sum(delong_test(y[:, j], a[:, j], b[:, j]).var for j in range(3)) / 9
        )
    empirical = np.var(diffs, ddof=1)
    assert 0.8 <= np.mean(estimated) / empirical <= 1.25
    assert np.mean(without_covariance) / empirical < 0.6


# --- the per-cell table ----------------------------------------------------------------------


def _trial(uid: str, init: str, fraction: float, repeat: int, freeze: int = 0) -> dict:
    pretrained = init == "pretrained"
    return {
        "unit_id": uid,
        "architecture": "tiny",
        "init": init,
        "upstream": "up" if pretrained else None,
        "pretrain_task": "cls" if pretrained else None,
        "downstream": "down",
        "freeze_depth": freeze,
        "data_fraction": fraction,
        "repeat": repeat,
        "test_macro_auroc": 0.7,
    }


def test_bootstrap_table(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random((60, 2)) < 0.4).astype(int)
    patients = [f"p{i // 2}" for i in range(60)]
    rows, arrays = [], {}
    # fraction 1.0: one repeat pair (DeLong); fraction 0.5: three, one of them without a
    # stored scratch file; freeze 2 at 0.5: no file at all (units of before predictions)
    for fraction, repeats in ((1.0, 1), (0.5, 3)):
        for r in range(repeats):
            for init, freeze, separation in (("scratch", 0, 0.5), ("pretrained", 0, 1.5)):
                uid = f"{init}{freeze}-{fraction}-{r}"
                rows.append(_trial(uid, init, fraction, r, freeze))
                arrays[uid] = y * separation + rng.normal(size=y.shape)
                if not (init == "scratch" and fraction == 0.5 and r == 2):
                    write_predictions(
                        tmp_path, uid, y, arrays[uid], thresholds=[0.5, 0.5], patients=patients
                    )
            rows.append(_trial(f"pretrained2-{fraction}-{r}", "pretrained", fraction, r, 2))
    rows.append(_trial("pretrained0-0.1-0", "pretrained", 0.1, 0))  # no scratch partner
    table = bootstrap_table(pd.DataFrame(rows), str(tmp_path), n_boot=200, seed=3)

    assert list(table.columns) == [
        "metric",
        "downstream",
        "architecture",
        "arm",
        "upstream",
        "pretrain_task",
        "freeze_depth",
        "data_fraction",
        "n_repeats",
        "n_patients",
        "n_rows",
        "boot_gain",
        "boot_low",
        "boot_high",
        "boot_p",
        "n_boot",
        "n_undefined",
        "delong_p",
        "note",
    ]
    assert len(table) == 5  # (freeze 0, freeze 2) x (0.5, 1.0) + freeze 0 at 0.1

    def cell(freeze: int, fraction: float) -> pd.Series:
        return table[(table.freeze_depth == freeze) & (table.data_fraction == fraction)].iloc[0]

    def direct(fraction: float, repeats: list[int]):
        def units(init):
            return [
                _pred(f"{init}", y, arrays[f"{init}0-{fraction}-{r}"], patients=patients)
                for r in repeats
            ]

        return paired_bootstrap_gain(
            units("pretrained"), units("scratch"), "test_macro_auroc", n_boot=200, seed=3
        )

    one = cell(0, 1.0)
    want = direct(1.0, [0])
    assert (one.n_repeats, one.n_patients, one.n_rows, one.n_boot) == (1, 30, 60, 200)
    assert (one.boot_gain, one.boot_low, one.boot_high, one.boot_p) == pytest.approx(
        (want.gain, want.low, want.high, want.p_value)
    )
    pretrained_p = arrays["pretrained0-1.0-0"]
    assert one.delong_p == pytest.approx(
        delong_macro(y, pretrained_p, arrays["scratch0-1.0-0"]).p_value, rel=1e-6
    )
    assert one.note == ""

    partial = cell(0, 0.5)
    want = direct(0.5, [0, 1])
    assert partial.n_repeats == 2 and math.isnan(partial.delong_p)
    assert partial.boot_gain == pytest.approx(want.gain)
    assert "1 of 3 repeat pairs left out" in partial.note and "scratch0-0.5-2" in partial.note

    missing = cell(2, 0.5)
    assert missing.n_repeats == 0
    assert math.isnan(missing.boot_gain) and math.isnan(missing.boot_p)
    assert "no stored predictions" in missing.note
    assert "units finished before predictions were stored" in missing.note
    assert "no scratch trial" in cell(0, 0.1).note

    # a metric of another task is a note, not a crash; an unknown one an error
    qrs = bootstrap_table(pd.DataFrame(rows), str(tmp_path), metric="test_qrs_f1", n_boot=10)
    assert "test_qrs_f1 does not apply to multi_label predictions" in cell_note(qrs, 0, 1.0)
    with pytest.raises(DataError, match="metric must be one of"):
        bootstrap_table(pd.DataFrame(rows), str(tmp_path), metric="test_weighted_f1")


def cell_note(table: pd.DataFrame, freeze: int, fraction: float) -> str:
    return table[(table.freeze_depth == freeze) & (table.data_fraction == fraction)].iloc[0].note


def test_bootstrap_table_names_the_cell_of_mismatched_rows(tmp_path):
    y = np.array([[1], [0], [1], [0], [1], [0]])
    p = np.linspace(0, 1, 6)[:, None]
    write_predictions(tmp_path, "s", y, p, thresholds=[0.5])
    write_predictions(tmp_path, "f", y, p, thresholds=[0.5], records=list("abcdef"))
    trials = pd.DataFrame([_trial("s", "scratch", 1.0, 0), _trial("f", "pretrained", 1.0, 0)])
    with pytest.raises(
        DataError,
        match=r"cell \(down, tiny, pretrained:up/cls/freeze=0, "
        r"data_fraction 1\): units f and s were not tested on identical rows",
    ):
        bootstrap_table(trials, str(tmp_path), n_boot=10)


def test_uncertainty_imports_no_training_layer():
    source = Path(uncertainty.__file__).read_text()
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
    forbidden = ("torch", "ray", "study.training", "study.sweep")
    assert not {n for n in names if n.startswith(forbidden)}, names
