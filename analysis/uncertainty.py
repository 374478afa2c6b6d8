"""Uncertainty of fine-tuned vs. from-scratch gains, from the stored test-set predictions.

The trials table holds one number per unit, so `analysis.report` can only show how the gain
varies over repeats. Every fine-tuning and from-scratch unit also stores its test-set
predictions (``results/predictions/<unit_id>.parquet``, `study.schema.PREDICTIONS_SCHEMA`),
and from those this module recomputes the test metrics on resampled test sets:

- `paired_bootstrap_gain`: a two-level paired bootstrap of the gain (pretrained minus
  scratch, averaged over repeats). Each replicate draws the repeats with replacement and the
  test patients with replacement (a patient's rows stay together: frames and records of one
  patient are not independent), the same draw for both arms and every repeat, and
  recomputes the metric of every unit on the resampled rows. It accounts for both sources of
  noise of a study: which model a training run produced, and which patients the test split
  happened to hold.
- `delong_test` / `delong_macro`: DeLong's test of two correlated AUROCs on one test split,
  for a single pretrained/scratch pair (records taken as independent: it ignores patients).
- `bootstrap_table`: both, for every pretrained cell of a trials table.

Metric convention (as the trials table's, with one stated difference): a macro metric is
the mean over the *scored* classes, a class being scored when the rows hold at least one
positive and one negative of it.

- ``test_macro_auroc``: mean per-class `roc_auc_score` (one class against the rest on the
  probabilities, multi_label and single_label alike).
- ``test_macro_f1``: multi_label at the per-class thresholds of the file's ``b"thresholds"``
  (predicted = prob >= threshold), single_label at the arg-max class; F1 = 2TP/(2TP+FP+FN)
  per class. The trials table's ``test_macro_f1`` averages *every* class (0 for a class
  never present nor predicted), so the two differ when a class has no test positive.
- ``test_accuracy`` (single_label): the fraction of rows whose arg-max class is the true one.
- ``test_qrs_f1`` (per_sample): a detection matches an unmatched reference beat within
  150 ms (0.15 * fs samples, inclusive); a maximum one-to-one matching; F1 = 2TP/(2TP+FP+FN)
  with TP, FP, FN summed over the rows (gross statistics, as ANSI/AAMI EC57).

A resample that leaves no class scored (or, for QRS, no beat and no detection) has no
metric: such a bootstrap replicate is *undefined*, counted and left out.

How far to trust the bootstrap interval (simulated studies of known gain, 100 patients of
2 records, 95% intervals): with 10 repeats that differ both in how good the run's model
came out and record by record, it covers the truth 96% of the time (the test of this
module). Where repeats differ only record by record it is conservative (about 99%): the
patient resample already carries that variation, and resampling the repeats counts it
again. With 3 repeats whose models differ a lot it is too narrow (about 80%), as any
bootstrap over 3 values is; the t-interval over repeats of `analysis.report` is then the
better guide.

DeLong for a macro AUROC. For class k with m_k positives and n_k negatives, DeLong's
structural components are V10_k(i) (for a positive i: the fraction of negatives scored
below it, ties counting one half) and V01_k(j) (for a negative j: the fraction of positives
scored above it); AUC_k is the mean of either. AUC_k is a two-sample U-statistic whose
first-order (Hoeffding) projection is a sum of one term per record,
``psi_k(r) = (V10_k(r) - AUC_k) / m_k`` if r is a positive of k, else
``(V01_k(r) - AUC_k) / n_k`` (the same form results from the delta method with m_k random),
so a linear combination ``L = sum_k c_k AUC_k`` has ``Var(L) ~ sum_r (sum_k c_k psi_k(r))^2``:
the squares hold DeLong's variances, the cross products over records the covariance between
classes (records are shared by all classes). DeLong's estimator divides the sums of squares
by m_k - 1 and n_k - 1 rather than m_k and n_k; scaling each record's term by
``sqrt(m_k / (m_k - 1))`` (positives) or ``sqrt(n_k / (n_k - 1))`` (negatives) makes
``sum_r psi_k(r)^2`` exactly ``S10_k / m_k + S01_k / n_k``, and between classes it is the
product of the two factors (1 + O(1/m), asymptotically nothing). `delong_macro` takes
``c_k = 1/K`` for predictor a and ``-1/K`` for b over the K scored classes; with one class it
equals `delong_test`.
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy import stats
from sklearn.metrics import f1_score, roc_auc_score
from tqdm import tqdm

from analysis._contract import (
    CELL,
    CELL_COLUMNS,
    PAIR_KEY,
    cell_fields,
    prepare_trials,
    sort_cells,
)
from study.errors import ConfigError, DataError
from study.schema import PREDICTIONS_SCHEMA, predictions_path
from study.store import Store

__all__ = [
    "TASKS",
    "Predictions",
    "load_predictions",
    "Metric",
    "metric_function",
    "supported_metrics",
    "BootstrapResult",
    "paired_bootstrap_gain",
    "DeLongResult",
    "delong_test",
    "delong_macro",
    "bootstrap_table",
]

#: The objectives whose predictions are stored (a file's b"task").
TASKS = ("multi_label", "single_label", "per_sample")
# The matching window of a QRS detection (ANSI/AAMI EC57). The same number as
# study.training.evaluation.QRS_TOLERANCE_S, which analysis/ must not import.
_QRS_TOLERANCE_S = 0.15
# Elements of one block of bootstrap row counts (rows x replicates, int32): bounds the memory
# of a block of replicates to some tens of MB whatever the size of the test split.
_CHUNK_ELEMENTS = 1 << 22
_TABLE_COLUMNS = [
    *CELL_COLUMNS,
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


# --- the stored predictions ----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Predictions:
    """The test-set predictions of one unit, as stored (arrays are read-only).

    Attributes:
        unit_id: The unit that made them.
        task: ``multi_label``, ``single_label`` or ``per_sample``.
        classes: The columns of ``y_true`` and ``y_prob`` (empty for per_sample).
        thresholds: The decision rule chosen on validation, parsed from its JSON (a list of
            per-class thresholds for multi_label; None or a list for single_label; a dict
            for per_sample).
        fs: The sampling rate (per_sample; None where the file has none).
        record_id: (n,) the test record of each row.
        patient_id: (n,) its patient, None where the file has none.
        frame_start: (n,) the first sample of the frame, -1 where the dataset has no frames.
        y_true: (n, K) uint8 labels; (n, 0) for per_sample.
        y_prob: (n, K) float32 probabilities; (n, 0) for per_sample.
        qrs_reference: per row, the reference QRS positions (samples); empty unless
            per_sample.
        qrs_detected: per row, the detected QRS positions; empty unless per_sample.
    """

    unit_id: str
    task: str
    classes: tuple[str, ...]
    thresholds: Any
    fs: float | None
    record_id: np.ndarray
    patient_id: np.ndarray
    frame_start: np.ndarray
    y_true: np.ndarray
    y_prob: np.ndarray
    qrs_reference: tuple[np.ndarray, ...]
    qrs_detected: tuple[np.ndarray, ...]

    @property
    def n_rows(self) -> int:
        return len(self.record_id)


def load_predictions(uri_or_store: str | Store, unit_ids: Iterable[str]) -> dict[str, Predictions]:
    """Read the stored test-set predictions of some units.

    Args:
        uri_or_store: The study's store, or its URI (a local path or s3://).
        unit_ids: The units to read.

    Returns:
        Unit id -> its predictions, in the order of ``unit_ids``.

    Raises:
        DataError: A unit has no predictions file, or its file is not a readable predictions
            table (not Parquet, columns or metadata missing, rows breaking the schema); the
            message names the file.
        StorageError: The store itself cannot be reached.
        ConfigError: ``unit_ids`` is a single string rather than a collection of ids.
    """
    if isinstance(unit_ids, str):
        raise ConfigError(f"unit_ids must be a collection of unit ids, got the string {unit_ids!r}")
    store = uri_or_store if isinstance(uri_or_store, Store) else Store(uri_or_store)
    return {uid: _read_predictions(store, uid) for uid in unit_ids}


def _read_predictions(store: Store, uid: str) -> Predictions:
    rel = predictions_path(uid)
    where = f"{rel} in store {store.uri}"
    if not store.exists(rel):
        raise DataError(
            f"no predictions for unit {uid}: {where} does not exist (units finished before "
            "predictions were stored have none)"
        )
    data = store.read_bytes(rel)
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"{where} is not a readable Parquet file: {error}") from None
    return _parse(table, uid, where)


def _parse(table: pa.Table, uid: str, where: str) -> Predictions:
    missing = [name for name in PREDICTIONS_SCHEMA.names if name not in table.column_names]
    if missing:
        raise DataError(f"{where} lacks the predictions column(s) {', '.join(missing)}")
    meta = table.schema.metadata or {}
    task = meta.get(b"task", b"").decode()
    if task not in TASKS:
        raise DataError(f"{where}: metadata task must be one of {', '.join(TASKS)}, got {task!r}")
    classes = _json_meta(meta, b"classes", where, required=True)
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{where}: metadata classes must be a JSON list of names, got {classes!r}")
    thresholds = _json_meta(meta, b"thresholds", where, required=False)
    fs = _fs(meta, where, required=task == "per_sample")
    n = table.num_rows
    if n == 0:
        raise DataError(f"{where} holds no rows: a unit's test split has at least one example")
    units = set(table.column("unit_id").to_pylist())
    if units != {uid}:
        raise DataError(f"{where} must hold unit {uid}'s rows only, got unit_id {sorted(units)}")
    record_id = _strings(table, "record_id", where, nullable=False)
    patient_id = _strings(table, "patient_id", where, nullable=True)
    try:
        frame = pc.fill_null(table.column("frame_start").cast(pa.int64()), -1)
    except pa.ArrowException as error:
        raise DataError(f"{where}: frame_start must be integer sample positions: {error}") from None
    frame_start = frame.to_numpy().astype(np.int64)
    if task == "per_sample":
        y_true = np.zeros((n, 0), np.uint8)
        y_prob = np.zeros((n, 0), np.float32)
        reference = _positions(table, "qrs_reference", where)
        detected = _positions(table, "qrs_detected", where)
    else:
        y_true = _matrix(table, "y_true", len(classes), where).astype(np.uint8)
        y_prob = _matrix(table, "y_prob", len(classes), where).astype(np.float32)
        if ((y_true != 0) & (y_true != 1)).any():
            raise DataError(f"{where}: y_true must hold 0/1 labels, got {np.unique(y_true)}")
        if not np.isfinite(y_prob).all():
            raise DataError(f"{where}: y_prob must be finite, row {_first_bad(y_prob)} is not")
        if task == "single_label" and (y_true.sum(axis=1) != 1).any():
            row = int(np.flatnonzero(y_true.sum(axis=1) != 1)[0])
            raise DataError(
                f"{where}: single_label y_true must be one-hot, row {row} has "
                f"{int(y_true[row].sum())} ones"
            )
        reference = detected = ()
    arrays = (record_id, patient_id, frame_start, y_true, y_prob, *reference, *detected)
    for array in arrays:
        array.setflags(write=False)
    return Predictions(
        unit_id=uid,
        task=task,
        classes=tuple(classes),
        thresholds=thresholds,
        fs=fs,
        record_id=record_id,
        patient_id=patient_id,
        frame_start=frame_start,
        y_true=y_true,
        y_prob=y_prob,
        qrs_reference=tuple(reference),
        qrs_detected=tuple(detected),
    )


def _json_meta(meta: dict, key: bytes, where: str, required: bool) -> Any:
    if key not in meta:
        if required:
            raise DataError(f"{where} lacks the schema metadata {key.decode()!r}")
        return None
    try:
        return json.loads(meta[key])
    except ValueError:
        raise DataError(
            f"{where}: metadata {key.decode()!r} must be JSON, got {meta[key][:80]!r}"
        ) from None


def _fs(meta: dict, where: str, required: bool) -> float | None:
    raw = meta.get(b"fs", b"").decode().strip()
    if not raw or raw == "null":
        if required:
            raise DataError(f"{where}: per_sample predictions need the schema metadata 'fs'")
        return None
    try:
        fs = float(raw)
    except ValueError:
        fs = math.nan
    if not fs > 0:
        raise DataError(f"{where}: metadata fs must be a positive number, got {raw!r}")
    return fs


def _strings(table: pa.Table, column: str, where: str, nullable: bool) -> np.ndarray:
    values = table.column(column).to_pylist()
    if not nullable and any(v is None for v in values):
        raise DataError(
            f"{where}: {column} must be set on every row, row {values.index(None)} lacks it"
        )
    return np.array(values, dtype=object)


def _matrix(table: pa.Table, column: str, k: int, where: str) -> np.ndarray:
    """A list column whose every row holds k values, as an (n, k) array."""
    array = table.column(column).combine_chunks()
    if array.null_count:
        row = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{where}: {column} must be set on every row, row {row} lacks it")
    lengths = array.value_lengths().to_numpy(zero_copy_only=False)
    if (lengths != k).any():
        row = int(np.flatnonzero(lengths != k)[0])
        raise DataError(
            f"{where}: {column} must hold one value per class ({k}), row {row} has {lengths[row]}"
        )
    values = array.flatten()
    if values.null_count:
        raise DataError(f"{where}: {column} holds null values")
    return values.to_numpy(zero_copy_only=False).reshape(len(array), k)


def _positions(table: pa.Table, column: str, where: str) -> list[np.ndarray]:
    out = []
    for row, value in enumerate(table.column(column).to_pylist()):
        if value is None or any(v is None for v in value):
            raise DataError(
                f"{where}: per_sample {column} must be set on every row, row {row} lacks it"
            )
        out.append(np.sort(np.asarray(value, dtype=np.int64)))
    return out


def _first_bad(values: np.ndarray) -> int:
    return int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])


# --- metrics ---------------------------------------------------------------------------------

_METRICS: dict[str, Metric] = {}


def _register(cls: type[Metric]) -> type[Metric]:
    _METRICS[cls.name] = cls()
    return cls


class Metric:
    """A test metric recomputed from stored predictions on any multiset of test rows.

    Calling it, ``metric(predictions, rows)``, is the reference (scikit-learn on the rows;
    ``rows`` may repeat a row, as a bootstrap resample does). `weighted` is the same number
    for many resamples at once, each given by how many times it holds every row: the form
    the bootstrap uses (tests check the two agree).
    """

    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]]

    def __call__(self, pred: Predictions, rows: np.ndarray | None = None) -> float:
        """The metric on ``pred``'s rows ``rows`` (every row when None); NaN if undefined."""
        self._check(pred)
        rows = np.arange(pred.n_rows) if rows is None else np.asarray(rows, dtype=np.intp)
        return self._value(pred, rows)

    def weighted(self, pred: Predictions) -> Callable[[np.ndarray], np.ndarray]:
        """A function of row counts -> the metric of each resample.

        The function takes an integer array (n_rows, b), entry (i, j) the number of times
        resample j holds row i, and returns the b metrics (NaN where undefined).
        """
        self._check(pred)
        return self._weighted(pred)

    def _check(self, pred: Predictions) -> None:
        if pred.task not in self.tasks:
            raise DataError(
                f"{self.name} is defined for {', '.join(self.tasks)} predictions; unit "
                f"{pred.unit_id} is {pred.task}"
            )

    def _value(self, pred: Predictions, rows: np.ndarray) -> float:
        raise NotImplementedError

    def _weighted(self, pred: Predictions) -> Callable[[np.ndarray], np.ndarray]:
        raise NotImplementedError


def supported_metrics(task: str | None = None) -> list[str]:
    """The metric names this module recomputes (those defined for ``task``, if given)."""
    return sorted(name for name, m in _METRICS.items() if task is None or task in m.tasks)


def metric_function(metric_name: str, task: str) -> Metric:
    """The metric ``metric_name`` of a ``task``'s predictions, as a callable `Metric`.

    Raises:
        DataError: The metric is not one this module recomputes, or not defined for ``task``;
            the message lists the supported ones.
    """
    if task not in TASKS:
        raise DataError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if metric_name not in _METRICS:
        raise DataError(
            f"metric must be one of {', '.join(supported_metrics())} (recomputed from stored "
            f"predictions), got {metric_name!r}"
        )
    metric = _METRICS[metric_name]
    if task not in metric.tasks:
        raise DataError(
            f"{metric_name} is defined for {', '.join(metric.tasks)} predictions, not {task}; "
            f"for {task} the supported metrics are {', '.join(supported_metrics(task))}"
        )
    return metric


def _scored(y: np.ndarray) -> np.ndarray:
    """The classes with at least one positive and one negative among the rows of ``y``."""
    positives = y.sum(axis=0)
    return np.flatnonzero((positives > 0) & (positives < len(y)))


def _macro(values: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """Column means of ``values`` (K, b) over the scored entries; NaN where none is scored."""
    count = scored.sum(axis=0)
    total = np.where(scored, values, 0.0).sum(axis=0)
    out = np.full(len(count), math.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


@_register
class _MacroAUROC(Metric):
    name = "test_macro_auroc"
    tasks = ("multi_label", "single_label")

    def _value(self, pred: Predictions, rows: np.ndarray) -> float:
        y, p = pred.y_true[rows], pred.y_prob[rows]
        cols = _scored(y)
        if cols.size == 0:
            return math.nan
        return float(np.mean([roc_auc_score(y[:, k], p[:, k]) for k in cols]))

    def _weighted(self, pred: Predictions) -> Callable[[np.ndarray], np.ndarray]:
        # Per class, sort the negatives once; a resample then only reweights them. The
        # Mann-Whitney count (what roc_auc_score's trapezoids compute) is the sum over the
        # positives of (negatives scored below + half those tied), from the cumulative
        # weights of the sorted negatives at the positive's two searchsorted ends (lo: below;
        # hi: below or tied), doubled to stay in integers: exact, and a few passes over the
        # counts per class.
        y = pred.y_true.astype(bool)
        classes = []
        for k in range(y.shape[1]):
            positive, negative = np.flatnonzero(y[:, k]), np.flatnonzero(~y[:, k])
            if positive.size == 0 or negative.size == 0:
                continue  # never scored in any resample
            negative = negative[np.argsort(pred.y_prob[negative, k], kind="stable")]
            ordered = pred.y_prob[negative, k]
            lo = np.searchsorted(ordered, pred.y_prob[positive, k], "left")
            hi = np.searchsorted(ordered, pred.y_prob[positive, k], "right")
            classes.append((positive, negative, lo, hi))

        def values(weights: np.ndarray) -> np.ndarray:
            total = weights.sum(axis=0, dtype=np.int64)
            auc = np.zeros((len(classes), weights.shape[1]))
            scored = np.zeros(auc.shape, dtype=bool)
            for c, (positive, negative, lo, hi) in enumerate(classes):
                below = np.zeros((negative.size + 1, weights.shape[1]), dtype=np.int64)
                np.cumsum(weights[negative], axis=0, out=below[1:])
                w_pos = weights[positive]
                twice = (w_pos * (below[lo] + below[hi])).sum(axis=0)
                n_pos = w_pos.sum(axis=0, dtype=np.int64)
                pairs = n_pos * (total - n_pos)
                scored[c] = pairs > 0
                np.divide(twice, 2.0 * pairs, out=auc[c], where=scored[c])
            return _macro(auc, scored)

        return values


@_register
class _MacroF1(Metric):
    name = "test_macro_f1"
    tasks = ("multi_label", "single_label")

    @staticmethod
    def _decisions(pred: Predictions) -> np.ndarray:
        """(n, K) bool: the classes predicted for each row."""
        if pred.task == "single_label":
            out = np.zeros(pred.y_prob.shape, dtype=bool)
            out[np.arange(pred.n_rows), pred.y_prob.argmax(axis=1)] = True
            return out
        k = len(pred.classes)
        thr = pred.thresholds
        if (
            not isinstance(thr, list)
            or len(thr) != k
            or not all(isinstance(t, int | float) and math.isfinite(t) for t in thr)
        ):
            raise DataError(
                f"multi_label macro F1 needs {k} per-class thresholds (the file's metadata "
                f"'thresholds', a JSON list of numbers); unit {pred.unit_id} has {thr!r}"
            )
        # in float64, as the trials' F1 compared the probabilities with the thresholds
        return pred.y_prob.astype(np.float64) >= np.asarray(thr, dtype=np.float64)[None, :]

    def _value(self, pred: Predictions, rows: np.ndarray) -> float:
        y, predicted = pred.y_true[rows], self._decisions(pred)[rows]
        cols = _scored(y)
        if cols.size == 0:
            return math.nan
        # column by column: scikit-learn reads a one-column indicator as a binary task
        return float(np.mean([f1_score(y[:, k], predicted[:, k], zero_division=0) for k in cols]))

    def _weighted(self, pred: Predictions) -> Callable[[np.ndarray], np.ndarray]:
        y = pred.y_true.astype(np.float64)
        predicted = self._decisions(pred).astype(np.float64)
        k = y.shape[1]
        columns = np.hstack([y, y * predicted, predicted])  # (n, 3K)

        def values(weights: np.ndarray) -> np.ndarray:
            w = weights.astype(np.float64)
            sums = columns.T @ w  # (3K, b)
            positives, tp, n_predicted = sums[:k], sums[k : 2 * k], sums[2 * k :]
            negatives = w.sum(axis=0) - positives
            scored = (positives > 0) & (negatives > 0)
            # 2TP / (2TP + FP + FN) = 2TP / (positives + predicted): > 0 where scored
            f1 = np.zeros_like(tp)
            np.divide(2 * tp, positives + n_predicted, out=f1, where=scored)
            return _macro(f1, scored)

        return values


@_register
class _Accuracy(Metric):
    name = "test_accuracy"
    tasks = ("single_label",)

    @staticmethod
    def _correct(pred: Predictions) -> np.ndarray:
        return (pred.y_prob.argmax(axis=1) == pred.y_true.argmax(axis=1)).astype(np.float64)

    def _value(self, pred: Predictions, rows: np.ndarray) -> float:
        return float(self._correct(pred)[rows].mean()) if rows.size else math.nan

    def _weighted(self, pred: Predictions) -> Callable[[np.ndarray], np.ndarray]:
        correct = self._correct(pred)

        def values(weights: np.ndarray) -> np.ndarray:
            w = weights.astype(np.float64)
            total = w.sum(axis=0)
            out = np.full(len(total), math.nan)
            np.divide(correct @ w, total, out=out, where=total > 0)
            return out

        return values


@_register
class _QRSF1(Metric):
    name = "test_qrs_f1"
    tasks = ("per_sample",)

    @staticmethod
    def _counts(pred: Predictions, rows: Iterable[int]) -> np.ndarray:
        """(len(rows), 3): TP, FP, FN of each of ``rows``."""
        tolerance = _QRS_TOLERANCE_S * pred.fs + 1e-9  # a hair of slack, as the trials' F1
        out = []
        for row in rows:
            ref, det = pred.qrs_reference[row], pred.qrs_detected[row]
            tp = _match_count(ref, det, tolerance)
            out.append((tp, len(det) - tp, len(ref) - tp))
        return np.array(out, dtype=np.float64).reshape(-1, 3)

    @staticmethod
    def _f1(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
        denominator = 2 * tp + fp + fn
        out = np.full(np.shape(tp), math.nan)
        np.divide(2 * tp, denominator, out=out, where=denominator > 0)
        return out

    def _value(self, pred: Predictions, rows: np.ndarray) -> float:
        unique, times = np.unique(rows, return_counts=True)
        tp, fp, fn = times @ self._counts(pred, unique)
        return float(self._f1(tp, fp, fn))

    def _weighted(self, pred: Predictions) -> Callable[[np.ndarray], np.ndarray]:
        counts = self._counts(pred, range(pred.n_rows))

        def values(weights: np.ndarray) -> np.ndarray:
            tp, fp, fn = counts.T @ weights.astype(np.float64)
            return self._f1(tp, fp, fn)

        return values


def _match_count(ref: np.ndarray, det: np.ndarray, tolerance: float) -> int:
    """The size of a maximum one-to-one matching of sorted positions within ``tolerance``.

    Every reference beat accepts the detections of an interval of one width around it, so
    taking the detections in time order and giving each to the earliest unmatched beat that
    accepts it is optimal (the greedy rule for intervals sorted by their end); it finds as
    many pairs as the trials' optimal assignment, e.g. beats at 0 and 250 ms, detections at
    130 and 380 ms: both matched.
    """
    i = tp = 0
    for d in det:
        while i < len(ref) and ref[i] < d - tolerance:  # too early for this and every later
            i += 1
        if i < len(ref) and ref[i] <= d + tolerance:
            tp += 1
            i += 1
    return tp


# --- the paired bootstrap --------------------------------------------------------------------


@dataclass(frozen=True)
class BootstrapResult:
    """The paired bootstrap of one gain (pretrained minus scratch, mean over repeats).

    Attributes:
        metric: The metric compared.
        gain: The point estimate: the mean over repeats of the two arms' difference on the
            full test split.
        low: Lower end of the percentile interval of the defined replicates.
        high: Upper end.
        p_value: Two-sided bootstrap p-value of "no gain",
            ``min(1, 2 min((1 + #{g* <= 0}) / (B + 1), (1 + #{g* >= 0}) / (B + 1)))`` over
            the B defined replicates g*.
        confidence: Of the interval.
        n_boot: Replicates drawn.
        n_undefined: Replicates without a metric (see the module docstring), left out.
        n_repeats: Repeat pairs.
        n_patients: Patients of the test split (the resampled clusters).
        n_rows: Rows of the test split.
    """

    metric: str
    gain: float
    low: float
    high: float
    p_value: float
    confidence: float
    n_boot: int
    n_undefined: int
    n_repeats: int
    n_patients: int
    n_rows: int


def paired_bootstrap_gain(
    pretrained: Sequence[Predictions],
    scratch: Sequence[Predictions],
    metric: str,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapResult:
    """The gain of pretraining on ``metric`` with a two-level paired bootstrap interval.

    Each replicate draws R repeats with replacement (the same draw for both arms: a repeat
    is a pair) and the test patients with replacement (all rows of a drawn patient, as many
    times as drawn; the same draw for every repeat and both arms), and computes
    ``gain* = mean over the drawn repeats of metric(pretrained_r) - metric(scratch_r)`` on
    the drawn rows. Rows without a patient id are clustered by their record. Replicates are
    drawn in blocks from two generators seeded by ``seed`` (patients, repeats), so the
    result depends only on the inputs and ``seed``.

    Args:
        pretrained: One unit's predictions per repeat.
        scratch: Its partners, the same repeat at the same position.
        metric: One of `supported_metrics` for the units' task.
        n_boot: Replicates.
        seed: Of the resampling.
        confidence: Of the percentile interval.

    Returns:
        The point estimate, interval, p-value and counts (`BootstrapResult`); the interval
        and p-value are NaN when no replicate is defined.

    Raises:
        DataError: The lists differ in length or are empty, the units were not tested on
            identical rows (the same record_id, frame_start, patient and labels, in the same
            order), or the metric does not apply to their task.
        ConfigError: ``n_boot`` < 1 or ``confidence`` outside (0, 1).
    """
    pretrained, scratch = list(pretrained), list(scratch)
    if len(pretrained) != len(scratch) or not pretrained:
        raise DataError(
            "pretrained and scratch must hold one unit's predictions per repeat, paired by "
            f"position; got {len(pretrained)} and {len(scratch)}"
        )
    _check_options(n_boot, confidence)
    reference = pretrained[0]
    for a, b in zip(pretrained, scratch, strict=True):
        _check_same_rows(reference, a)
        _check_same_rows(reference, b)
    score = metric_function(metric, reference.task)
    n_repeats, n_rows = len(pretrained), reference.n_rows

    point = float(np.mean([score(a) - score(b) for a, b in zip(pretrained, scratch, strict=True)]))
    patient_of_row, n_patients = _clusters(reference)
    arms = [
        (score.weighted(a), score.weighted(b)) for a, b in zip(pretrained, scratch, strict=True)
    ]
    patient_rng, repeat_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2)
    )
    uniform_patients = np.full(n_patients, 1.0 / n_patients)
    uniform_repeats = np.full(n_repeats, 1.0 / n_repeats)
    block = max(1, min(n_boot, _CHUNK_ELEMENTS // n_rows))
    gains = np.empty(n_boot)
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        drawn = patient_rng.multinomial(n_patients, uniform_patients, size=size)
        # (rows, size): how many times each replicate holds each row
        weights = np.ascontiguousarray(drawn.T, dtype=np.int32)[patient_of_row]
        repeats = repeat_rng.multinomial(n_repeats, uniform_repeats, size=size)
        diffs = np.column_stack([a(weights) - b(weights) for a, b in arms])  # (size, R)
        undefined = ((repeats > 0) & np.isnan(diffs)).any(axis=1)
        gain = (repeats * np.nan_to_num(diffs)).sum(axis=1) / n_repeats
        gains[start : start + size] = np.where(undefined, math.nan, gain)

    defined = gains[~np.isnan(gains)]
    low = high = p_value = math.nan
    if defined.size:
        alpha = 1.0 - confidence
        low, high = (float(q) for q in np.quantile(defined, [alpha / 2, 1 - alpha / 2]))
        below = (1 + np.count_nonzero(defined <= 0)) / (defined.size + 1)
        above = (1 + np.count_nonzero(defined >= 0)) / (defined.size + 1)
        p_value = float(min(1.0, 2 * min(below, above)))
    return BootstrapResult(
        metric=metric,
        gain=point,
        low=low,
        high=high,
        p_value=p_value,
        confidence=confidence,
        n_boot=int(n_boot),
        n_undefined=int(n_boot - defined.size),
        n_repeats=n_repeats,
        n_patients=n_patients,
        n_rows=n_rows,
    )


def _check_options(n_boot: int, confidence: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise ConfigError(f"n_boot must be an integer >= 1, got {n_boot!r}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence!r}")


def _check_same_rows(a: Predictions, b: Predictions) -> None:
    """Raise unless ``a`` and ``b`` were tested on the identical rows of one test split."""
    if a is b:
        return
    prefix = f"units {a.unit_id} and {b.unit_id} were not tested on identical rows"
    for what, left, right in (("task", a.task, b.task), ("classes", a.classes, b.classes)):
        if left != right:
            raise DataError(f"{prefix}: {what} {left!r} vs {right!r}")
    if a.n_rows != b.n_rows:
        raise DataError(f"{prefix}: {a.n_rows} vs {b.n_rows} rows")
    columns = [
        ("record_id", a.record_id, b.record_id),
        ("frame_start", a.frame_start, b.frame_start),
        ("patient_id", a.patient_id, b.patient_id),
        ("y_true", a.y_true, b.y_true),
    ]
    for what, left, right in columns:
        differs = (left != right).reshape(len(left), -1).any(axis=1)
        if differs.any():
            row = int(np.flatnonzero(differs)[0])
            raise DataError(
                f"{prefix}: {what} differs first at row {row} ({_plain(left[row])!r} vs "
                f"{_plain(right[row])!r}); a paired comparison needs every unit of every "
                "repeat on one prepared test split, in one order"
            )
    if a.task == "per_sample":
        if a.fs != b.fs:
            raise DataError(f"{prefix}: fs {a.fs} vs {b.fs}")
        for row, (left, right) in enumerate(zip(a.qrs_reference, b.qrs_reference, strict=True)):
            if not np.array_equal(left, right):
                raise DataError(f"{prefix}: qrs_reference differs first at row {row}")


def _plain(value: Any) -> Any:
    """A numpy value as the Python one, for messages."""
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def _clusters(pred: Predictions) -> tuple[np.ndarray, int]:
    """The patient index of every row (a row without a patient id is its own record's)."""
    keys = [
        f"patient:{patient}" if patient is not None else f"record:{record}"
        for patient, record in zip(pred.patient_id, pred.record_id, strict=True)
    ]
    uniques, index = np.unique(np.array(keys, dtype=object), return_inverse=True)
    return index.astype(np.intp), len(uniques)


# --- DeLong ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeLongResult:
    """DeLong's test of two correlated AUROCs (or macro AUROCs) on one test set.

    Attributes:
        auc_a: (Macro) AUROC of predictor a.
        auc_b: Of predictor b.
        diff: ``auc_a - auc_b``.
        var: DeLong's estimate of the variance of ``diff``.
        z: ``diff / sqrt(var)``; 0 when both are 0; NaN when var is 0 and diff is not.
        p_value: Two-sided normal p-value of ``z``; 1 when diff and var are 0 (identical
            rankings: nothing tells the predictors apart); NaN when var is 0 and diff is
            not (a degenerate case, e.g. a perfect predictor against one that scores all
            positives alike and all negatives alike, where the normal theory says nothing).
        n_classes: Classes averaged (1 for `delong_test`).
    """

    auc_a: float
    auc_b: float
    diff: float
    var: float
    z: float
    p_value: float
    n_classes: int


def delong_test(y_true: np.ndarray, p_a: np.ndarray, p_b: np.ndarray) -> DeLongResult:
    """DeLong's paired test of two AUROCs on one binary-labelled test set.

    The structural components come from midranks (Sun & Xu 2014): with Tz the midranks of
    all scores, Tx those of the positives among themselves and Ty of the negatives,
    ``V10 = (Tz - Tx) / n`` per positive and ``V01 = 1 - (Tz - Ty) / m`` per negative
    (m positives, n negatives); ``var = S10 / m + S01 / n`` for the contrast (1, -1), with
    S10, S01 the sample (ddof=1) variances of the differences of the two predictors'
    components, which equals ``L S Lᵀ`` of DeLong's covariance matrices.

    Args:
        y_true: (n,) 0/1 labels.
        p_a: (n,) scores of predictor a.
        p_b: (n,) scores of predictor b.

    Raises:
        DataError: Shapes differ, labels are not 0/1, scores are not finite, or there are
            fewer than 2 positives or 2 negatives (no DeLong variance).
    """
    y = _labels(y_true, 1)
    a, b = _scores(p_a, y.shape, "p_a"), _scores(p_b, y.shape, "p_b")
    _check_delong_counts(y, "the labels")
    auc_a, v10_a, v01_a = _components(y, a)
    auc_b, v10_b, v01_b = _components(y, b)
    m, n = len(v10_a), len(v01_a)
    var = float(np.var(v10_a - v10_b, ddof=1) / m + np.var(v01_a - v01_b, ddof=1) / n)
    return _result(auc_a, auc_b, var, 1)


def delong_macro(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray) -> DeLongResult:
    """DeLong's paired test of two macro AUROCs (the mean over the scored classes).

    The variance of the difference of the class means comes from the per-record influence
    of each class's AUROC, with DeLong's small-sample factor, and includes the covariance
    between classes (module docstring). With one scored class it equals `delong_test`.

    Args:
        y: (n, K) 0/1 labels (one-hot for single-label tasks).
        p_a: (n, K) probabilities of predictor a.
        p_b: (n, K) probabilities of predictor b.

    Raises:
        DataError: Shapes differ, labels are not 0/1, scores are not finite, no class is
            scored, or a scored class has fewer than 2 positives or 2 negatives.
    """
    labels = _labels(y, 2)
    a, b = _scores(p_a, labels.shape, "p_a"), _scores(p_b, labels.shape, "p_b")
    scored = _scored(labels)
    if scored.size == 0:
        raise DataError(
            "no class is scored (has both a positive and a negative), so there is no macro AUROC"
        )
    influence = np.zeros(len(labels))
    aucs_a, aucs_b = [], []
    for k in scored:
        column = labels[:, k]
        _check_delong_counts(column, f"class {k}")
        psi_a, auc_a = _influence(column, a[:, k])
        psi_b, auc_b = _influence(column, b[:, k])
        influence += (psi_a - psi_b) / scored.size
        aucs_a.append(auc_a)
        aucs_b.append(auc_b)
    var = float(np.sum(influence**2))
    return _result(float(np.mean(aucs_a)), float(np.mean(aucs_b)), var, int(scored.size))


def _labels(y: np.ndarray, ndim: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != ndim:
        raise DataError(f"labels must be {ndim}-dimensional, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"labels must be 0/1, got values {np.unique(y)[:10]}")
    return y.astype(bool)


def _scores(p: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.shape != shape:
        raise DataError(f"{name} must have the labels' shape {shape}, got {p.shape}")
    if not np.isfinite(p).all():
        raise DataError(f"{name} must be finite")
    return p


def _check_delong_counts(y: np.ndarray, what: str) -> None:
    m = int(y.sum())
    n = len(y) - m
    if m < 2 or n < 2:
        raise DataError(
            f"DeLong's variance needs at least 2 positives and 2 negatives; {what} has "
            f"{m} positive(s) and {n} negative(s)"
        )


def _components(y: np.ndarray, p: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """AUROC and DeLong's V10 (per positive) and V01 (per negative), from midranks."""
    positives, negatives = p[y], p[~y]
    m, n = len(positives), len(negatives)
    tz = stats.rankdata(np.concatenate([positives, negatives]))
    tx, ty = stats.rankdata(positives), stats.rankdata(negatives)
    auc = float((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
    return auc, (tz[:m] - tx) / n, 1.0 - (tz[m:] - ty) / m


def _influence(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, float]:
    """Each record's term of DeLong's variance (module docstring), and the AUROC."""
    auc, v10, v01 = _components(y, p)
    m, n = len(v10), len(v01)
    out = np.empty(len(y))
    out[y] = (v10 - auc) / math.sqrt(m * (m - 1))
    out[~y] = (v01 - auc) / math.sqrt(n * (n - 1))
    return out, auc


def _result(auc_a: float, auc_b: float, var: float, n_classes: int) -> DeLongResult:
    diff = auc_a - auc_b
    if var > 0:
        z = diff / math.sqrt(var)
        p_value = float(2 * stats.norm.sf(abs(z)))
    elif diff == 0:
        z, p_value = 0.0, 1.0
    else:
        z = p_value = math.nan
    return DeLongResult(auc_a, auc_b, diff, var, z, p_value, n_classes)


# --- one row per pretrained cell -------------------------------------------------------------


def bootstrap_table(
    trials: pd.DataFrame,
    uri_or_store: str | Store,
    metric: str = "test_macro_auroc",
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """`paired_bootstrap_gain` (and DeLong's test for a single pair) per pretrained cell.

    Cells are `analysis.report`'s: (downstream, architecture, arm, data_fraction), a
    pretrained unit paired with the scratch unit of the same (architecture, downstream,
    data_fraction, repeat). Every cell uses the same ``seed``. A cell gets NaN statistics
    and a ``note`` instead of an error when it has no scratch partner, when its units have
    no stored predictions (units finished before predictions were stored), or when the
    metric does not apply to its task; repeat pairs lacking predictions while others have
    them are left out and named in the note. ``delong_p`` is `delong_macro`'s p-value where
    the cell has exactly one repeat pair and the metric is test_macro_auroc (it treats
    records as independent, ignoring patients), NaN otherwise.

    Args:
        trials: The results table (`analysis.load.load_trials`).
        uri_or_store: The study's store, where the predictions are.
        metric: One of `supported_metrics`.
        n_boot: Replicates per cell.
        seed: Of every cell's resampling.
        confidence: Of the intervals.

    Returns:
        One row per pretrained cell, with the columns metric, downstream, architecture, arm,
        upstream, pretrain_task, freeze_depth, data_fraction, n_repeats, n_patients, n_rows,
        boot_gain, boot_low, boot_high, boot_p, n_boot, n_undefined, delong_p, note; sorted
        as `analysis.report.paired_differences`.

    Raises:
        DataError: The table breaks the results contract, ``metric`` is not supported, or a
            cell's stored predictions are unreadable or not on identical test rows.
        ConfigError: ``n_boot`` < 1 or ``confidence`` outside (0, 1).
    """
    if metric not in _METRICS:
        raise DataError(
            f"metric must be one of {', '.join(supported_metrics())} (recomputed from stored "
            f"predictions), got {metric!r}"
        )
    _check_options(n_boot, confidence)
    frame = prepare_trials(trials, ())
    store = uri_or_store if isinstance(uri_or_store, Store) else Store(uri_or_store)
    scratch_units = {
        key: dict(zip(group["repeat"], group["unit_id"], strict=True))
        for key, group in frame[frame["init"] == "scratch"].groupby(PAIR_KEY, sort=False)
    }
    cells = list(frame[frame["init"] == "pretrained"].groupby(CELL, sort=False))
    rows = []
    progress = tqdm(cells, desc=f"bootstrap {metric}", disable=not sys.stderr.isatty())
    for cell, group in progress:
        downstream, architecture, arm, fraction = cell
        row = dict.fromkeys(_TABLE_COLUMNS, math.nan) | {
            **cell_fields(metric, cell, group),
            "n_repeats": 0,
            "note": "",
        }
        ours = dict(zip(group["repeat"], group["unit_id"], strict=True))
        theirs = scratch_units.get((architecture, downstream, fraction), {})
        pairs = [(ours[r], theirs[r]) for r in sorted(set(ours) & set(theirs))]
        try:
            row |= _cell_statistics(store, pairs, metric, n_boot, seed, confidence)
        except DataError as error:
            raise DataError(
                f"cell ({downstream}, {architecture}, {arm}, data_fraction "
                f"{float(fraction):g}): {error}"
            ) from None
        rows.append(row)
    return sort_cells(pd.DataFrame(rows, columns=_TABLE_COLUMNS))


def _cell_statistics(
    store: Store,
    pairs: list[tuple[str, str]],
    metric: str,
    n_boot: int,
    seed: int,
    confidence: float,
) -> dict[str, Any]:
    """The statistics columns of one cell from its (pretrained, scratch) unit pairs."""
    if not pairs:
        return {"note": "no scratch trial of the same architecture, downstream, fraction, repeat"}
    stored = {uid for pair in pairs for uid in pair if store.exists(predictions_path(uid))}
    kept = [pair for pair in pairs if set(pair) <= stored]
    lacking = [uid for pair in pairs for uid in pair if uid not in stored]
    if not kept:
        return {
            "note": f"no stored predictions ({len(lacking)} unit(s), e.g. {lacking[0]}): "
            "units finished before predictions were stored have none"
        }
    predictions = load_predictions(store, [uid for pair in kept for uid in pair])
    task = predictions[kept[0][0]].task
    if task not in _METRICS[metric].tasks:
        return {"note": f"{metric} does not apply to {task} predictions"}
    result = paired_bootstrap_gain(
        [predictions[a] for a, _ in kept],
        [predictions[b] for _, b in kept],
        metric,
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
    )
    notes = []
    if lacking:
        notes.append(
            f"{len(pairs) - len(kept)} of {len(pairs)} repeat pairs left out: no stored "
            f"predictions for {len(lacking)} unit(s), e.g. {lacking[0]}"
        )
    out = {
        "n_repeats": result.n_repeats,
        "n_patients": result.n_patients,
        "n_rows": result.n_rows,
        "boot_gain": result.gain,
        "boot_low": result.low,
        "boot_high": result.high,
        "boot_p": result.p_value,
        "n_boot": result.n_boot,
        "n_undefined": result.n_undefined,
    }
    if len(kept) == 1 and metric == "test_macro_auroc":
        a, b = predictions[kept[0][0]], predictions[kept[0][1]]
        try:
            out["delong_p"] = delong_macro(a.y_true, a.y_prob, b.y_prob).p_value
        except DataError as error:
            notes.append(f"no DeLong test: {error}")
    out["note"] = "; ".join(notes)
    return out
