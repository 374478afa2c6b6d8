"""Per-task metrics: the numbers each paper of the study reports, computed as it defines them.

- `per_class_f1`: the per-class breakdown of `metrics.macro_f1` (same thresholds, same rule).
- `binary_metrics`: sensitivity, specificity, accuracy, F1, AUROC of a binary task (Huerta et al.).
- `cinc2017_score`, `macro_f1_4class`: PhysioNet/CinC 2017 AF classification (Clifford et al.
  2017; Weimann & Conrad 2021).
- `challenge_score`: the PhysioNet/CinC 2020-2021 challenge metric with its official weights.
- `qrs_metrics`, `qrs_metrics_records`: beat-by-beat QRS detection scores (ANSI/AAMI EC57).
- `reconstruction_mse`: the autoencoder pretraining objective (Jang et al.).

Counts come from scikit-learn's `confusion_matrix`/`f1_score` and beat matching from SciPy's
`linear_sum_assignment`; only the challenge metric's weighted multi-label confusion matrix, which
no library provides, is written out here.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import confusion_matrix, mean_squared_error

from study.errors import ConfigError, DataError
from study.training.metrics import column_f1, macro_auroc

__all__ = [
    "CINC2021_EQUIVALENT_CLASSES",
    "CINC2021_NORMAL_CLASS",
    "per_class_f1",
    "binary_metrics",
    "cinc2017_score",
    "macro_f1_4class",
    "load_challenge_weights",
    "challenge_confusion_matrix",
    "challenge_score",
    "qrs_metrics",
    "qrs_metrics_records",
    "reconstruction_mse",
]

# physionetchallenges/evaluation-2021 evaluate_model.py: the sinus-rhythm class the "inactive"
# classifier always outputs, and the code pairs scored as one diagnosis (the weights file names
# each pair "a|b").
CINC2021_NORMAL_CLASS = "426783006"
CINC2021_EQUIVALENT_CLASSES: tuple[tuple[str, ...], ...] = (
    ("713427006", "59118001"),  # CRBBB | RBBB
    ("284470004", "63593006"),  # PAC | SVPB
    ("427172004", "17338001"),  # PVC | VPB
    ("733534002", "164909002"),  # CLBBB | LBBB
)
_WEIGHTS_FILE = Path(__file__).with_name("challenge_weights.csv")
_CINC2017_CLASSES = ("N", "A", "O", "~")


def _ratio(num: float, den: float) -> float:
    """num / den, NaN when the denominator is zero (an undefined rate, not a zero one)."""
    return float(num) / float(den) if den else float("nan")


# ---------------------------------------------------------------------------------------------
# Multi-label and binary classification
# ---------------------------------------------------------------------------------------------


def per_class_f1(
    y: np.ndarray, p: np.ndarray, thresholds: np.ndarray, classes: Sequence[str]
) -> dict[str, float]:
    """F1 of each class of a multi-label task, at per-class decision thresholds.

    The per-class terms of `study.training.metrics.macro_f1` (their mean is that macro F1): a
    class is predicted when its score is >= its threshold, and F1 = 2TP / (2TP + FP + FN)
    (van Rijsbergen's F-measure with beta = 1), 0 for a class with no positives and no
    predictions (scikit-learn's `zero_division=0`, as `macro_f1`).

    Args:
        y: binary labels, shape (n_records, n_classes).
        p: scores, same shape.
        thresholds: one threshold per class (e.g. from `choose_thresholds` on validation).
        classes: the class names, in column order.

    Returns:
        Class name -> F1, in column order.

    Raises:
        DataError: shapes that disagree with each other or with `classes`.
    """
    y, p = np.asarray(y), np.asarray(p)
    thr = np.asarray(thresholds, dtype=float)
    if y.ndim != 2 or y.shape != p.shape:
        raise DataError(f"y and p must be 2-D of one shape, got {y.shape} and {p.shape}")
    if len(classes) != y.shape[1] or thr.shape != (y.shape[1],):
        raise DataError(
            f"need one class name and one threshold per column ({y.shape[1]}), "
            f"got {len(classes)} names and thresholds of shape {thr.shape}"
        )
    f1 = column_f1(y, p >= thr[None, :])
    return {str(c): float(v) for c, v in zip(classes, f1, strict=True)}


def binary_metrics(y_true: np.ndarray, y_score: np.ndarray, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity, accuracy, F1 and AUROC of a binary task.

    The set Huerta et al. report for their binary (e.g. AF vs. non-AF) scalogram classifiers.
    With TN, FP, FN, TP from scikit-learn's `confusion_matrix` at `y_score >= threshold`:
    sensitivity = TP / (TP + FN), specificity = TN / (TN + FP),
    accuracy = (TP + TN) / n, F1 = 2TP / (2TP + FP + FN), and AUROC from the scores.

    Args:
        y_true: 0/1 labels, shape (n,).
        y_score: scores of the positive class, shape (n,).
        threshold: decision threshold (chosen on validation); a score equal to it is positive.

    Returns:
        Dict with keys sensitivity, specificity, accuracy, f1, auroc. A rate whose
        denominator is zero (sensitivity without positives, specificity without negatives,
        F1 with neither positives nor positive predictions) and AUROC of a one-class set
        are NaN.

    Raises:
        DataError: shapes that differ, or labels other than 0/1.
    """
    y = np.asarray(y_true).ravel()
    s = np.asarray(y_score, dtype=float).ravel()
    if y.shape != s.shape or len(y) == 0:
        raise DataError(
            f"y_true and y_score must be non-empty and of one length, got "
            f"{np.shape(y_true)} and {np.shape(y_score)}"
        )
    if not np.isin(y, (0, 1)).all():
        raise DataError(f"y_true must be 0/1, got values {np.unique(y).tolist()}")
    y = y.astype(int)
    tn, fp, fn, tp = confusion_matrix(y, (s >= threshold).astype(int), labels=[0, 1]).ravel()
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "accuracy": _ratio(tp + tn, len(y)),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auroc": macro_auroc(y[:, None], s[:, None]),  # NaN when only one class is present
    }


# ---------------------------------------------------------------------------------------------
# PhysioNet/CinC 2017: AF classification from a short single-lead ECG
# ---------------------------------------------------------------------------------------------


def _cinc2017_f1(
    y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str]
) -> np.ndarray:
    """Per-class F1 = 2 * C[k, k] / (row total k + column total k) of the confusion matrix C."""
    if len(classes) < 2:
        raise ConfigError(f"need at least two classes, the last being noise, got {classes!r}")
    yt, yp = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if yt.shape != yp.shape or len(yt) == 0:
        raise DataError(
            f"y_true and y_pred must be non-empty and of one length, got "
            f"{np.shape(y_true)} and {np.shape(y_pred)}"
        )
    unknown = sorted((set(yt.tolist()) | set(yp.tolist())) - set(classes))
    if unknown:
        # confusion_matrix would drop these records silently.
        raise DataError(f"labels {unknown} are not among the classes {list(classes)}")
    c = confusion_matrix(yt, yp, labels=list(classes))  # rows: reference, columns: prediction
    total = c.sum(axis=1) + c.sum(axis=0)
    # A class absent from both reference and prediction scores 0, as f1_score(zero_division=0).
    return np.divide(2 * np.diag(c), total, out=np.zeros(len(classes)), where=total > 0)


def cinc2017_score(
    y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str] = _CINC2017_CLASSES
) -> float:
    """The PhysioNet/CinC Challenge 2017 score: mean F1 of normal, AF and other rhythm.

    Clifford et al., "AF Classification from a Short Single Lead ECG Recording: the
    PhysioNet/Computing in Cardiology Challenge 2017", CinC 2017. The official scorer
    (score2017Challenge.m) builds the 4x4 confusion matrix (rows: reference, columns:
    prediction) and scores class k as F1_k = 2 C[k,k] / (row total + column total); the
    challenge score is (F1_N + F1_A + F1_O) / 3. Noisy records count in the matrix (a noise
    prediction for an AF record is a missed AF) but F1 of noise is not averaged.

    Args:
        y_true: reference labels, one per record.
        y_pred: predicted labels, one per record.
        classes: the label names in the order normal, AF, other, noise; the last one is the
            noise class, left out of the mean.

    Returns:
        The challenge F1 in [0, 1].

    Raises:
        DataError: lengths that differ, or a label not in `classes`.
    """
    return float(_cinc2017_f1(y_true, y_pred, classes)[:-1].mean())


def macro_f1_4class(
    y_true: Sequence[str], y_pred: Sequence[str], classes: Sequence[str] = _CINC2017_CLASSES
) -> float:
    """Macro F1 over all four CinC 2017 classes, noise included.

    The figure Weimann & Conrad ("Transfer learning for ECG classification", Sci. Rep. 11,
    5251, 2021) report on CinC 2017: the unweighted mean of the per-class F1 of N, A, O and
    noise, each F1 defined as in `cinc2017_score`.

    Args:
        y_true: reference labels, one per record.
        y_pred: predicted labels, one per record.
        classes: the four label names.

    Returns:
        The macro F1 in [0, 1].

    Raises:
        DataError: lengths that differ, or a label not in `classes`.
    """
    return float(_cinc2017_f1(y_true, y_pred, classes).mean())


# ---------------------------------------------------------------------------------------------
# PhysioNet/CinC 2020-2021: the challenge metric
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _official_weights() -> tuple[tuple[str, ...], np.ndarray]:
    if not _WEIGHTS_FILE.is_file():
        raise DataError(
            f"the official weights file {_WEIGHTS_FILE} is missing: a wheel carries it only "
            "when pyproject.toml lists it under [tool.setuptools.package-data]"
        )
    with _WEIGHTS_FILE.open(newline="") as f:
        rows = [[cell.strip() for cell in row] for row in csv.reader(f) if row]
    header, body = rows[0][1:], rows[1:]
    names = [r[0] for r in body]
    if names != header or any(len(r) != len(header) + 1 for r in body):
        raise DataError(f"{_WEIGHTS_FILE} is not a square table with matching row/column names")
    w = np.array([[float(v) for v in r[1:]] for r in body])
    w.setflags(write=False)
    return tuple(header), w


def load_challenge_weights() -> tuple[list[str], np.ndarray]:
    """The official PhysioNet/CinC 2021 weight matrix of the challenge metric.

    `challenge_weights.csv` is weights.csv of physionetchallenges/evaluation-2021 (final 2021
    version): 26 scored classes named by SNOMED-CT code, an equivalent pair named "a|b"
    (e.g. "733534002|164909002", complete LBBB | LBBB). Entry [i, j] is the credit for
    outputting class j on a record labelled i: 1 on the diagonal, partial credit for
    clinically similar mistakes (Reyna et al., "Will Two Do? Varying Dimensions in
    Electrocardiography: the PhysioNet/Computing in Cardiology Challenge 2021", CinC 2021).

    Returns:
        (classes, weights): the 26 class names in file order and a fresh (26, 26) array.
    """
    classes, w = _official_weights()
    return list(classes), w.copy()


def challenge_confusion_matrix(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """The multi-label confusion matrix of the CinC 2020/2021 challenge metric.

    A[j, k] sums, over records labelled j and given output k, 1 / |labels ∪ outputs| of
    that record (at least 1), so each record contributes 1 in total however many classes it
    has or is given (evaluate_model.py: compute_modified_confusion_matrix).

    Args:
        labels: binary, shape (n_records, n_classes).
        outputs: binary, same shape.

    Returns:
        A, shape (n_classes, n_classes); rows are labels, columns outputs.
    """
    lab, out = np.asarray(labels, dtype=bool), np.asarray(outputs, dtype=bool)
    norm = np.maximum((lab | out).sum(axis=1), 1).astype(float)
    return lab.T.astype(float) @ (out / norm[:, None])


def _code_group(name: str, equivalent: Sequence[Sequence[str]]) -> frozenset[str]:
    """The codes a class name stands for: its "|"-separated codes plus their equivalents."""
    codes = {c.strip() for c in str(name).split("|")}
    for pair in equivalent:
        if codes & set(pair):
            codes |= set(pair)
    return frozenset(codes)


def _merge_weight_classes(
    names: Sequence[str], w: np.ndarray, equivalent: Sequence[Sequence[str]]
) -> tuple[list[frozenset[str]], np.ndarray]:
    """Scoring classes (weight classes with equivalents merged) and their weight matrix."""
    groups: list[frozenset[str]] = []
    keep: list[int] = []
    for i, name in enumerate(names):
        g = _code_group(name, equivalent)
        j = next((m for m, h in enumerate(groups) if h & g), None)
        if j is None:
            groups.append(g)
            keep.append(i)
            continue
        # As the official load_weights: equivalent classes must carry identical weights.
        first = keep[j]
        if not (np.array_equal(w[i], w[first]) and np.array_equal(w[:, i], w[:, first])):
            raise ConfigError(
                f"equivalent classes {names[first]!r} and {name!r} have different weights"
            )
        groups[j] = groups[j] | g
    return groups, w[np.ix_(keep, keep)]


def _binary(a: np.ndarray, what: str, shape: tuple[int, int]) -> np.ndarray:
    a = np.asarray(a)
    if a.shape != shape:
        raise DataError(f"{what} must have shape {shape} (records, classes), got {a.shape}")
    if not np.isin(a, (0, 1)).all():
        raise DataError(f"{what} must be binary (0/1 or bool): threshold scores first")
    return a.astype(bool)


def challenge_score(
    labels: np.ndarray,
    outputs: np.ndarray,
    classes: Sequence[str],
    weights: np.ndarray | None = None,
    normal_class: str = CINC2021_NORMAL_CLASS,
    equivalent_classes: Sequence[Sequence[str]] = CINC2021_EQUIVALENT_CLASSES,
) -> float:
    """The PhysioNet/CinC 2020-2021 challenge metric, normalised as the official code.

    Perez Alday et al., "Classification of 12-lead ECGs: the PhysioNet/Computing in
    Cardiology Challenge 2020", Physiol. Meas. 41, 2020; Reyna et al., CinC 2021. As
    physionetchallenges/evaluation-2021 evaluate_model.py (compute_challenge_metric): with A
    the `challenge_confusion_matrix` and W the weights, a classifier scores nansum(W * A);
    the observed score is normalised as (observed - inactive) / (correct - inactive), where
    "correct" outputs the labels and "inactive" outputs only `normal_class` on every
    record; 1 is perfect, 0 is no better than always answering normal (it can go below 0).
    When correct and inactive tie (e.g. every record is only normal), the score is 0.0.

    Classes are SNOMED-CT codes, or "a|b" for an equivalent pair. Columns whose codes are
    equivalent (`equivalent_classes`, or one "a|b" name) are one diagnosis: a record has it
    (or is given it) when any of those columns is set.

    Args:
        labels: binary labels, shape (n_records, len(classes)).
        outputs: binary outputs, same shape.
        classes: the column names.
        weights: a (len(classes), len(classes)) weight matrix in column order; None scores
            with the official 2021 weights (`load_challenge_weights`) over its 26 classes, and
            columns whose classes it does not score are ignored, as the official scorer
            ignores unscored diagnoses.
        normal_class: the code the inactive classifier outputs (sinus rhythm).
        equivalent_classes: code groups scored as one class.

    Returns:
        The normalised challenge score.

    Raises:
        DataError: arrays that are not binary or disagree with `classes` in shape.
        ConfigError: weights of the wrong shape, equivalent classes with different weights,
            no scored class among `classes`, or a normal class that is not scored.
    """
    n_cols = len(classes)
    if np.ndim(labels) != 2:
        raise DataError(f"labels must be 2-D (records, classes), got shape {np.shape(labels)}")
    lab_in = _binary(labels, "labels", (np.shape(labels)[0], n_cols))
    out_in = _binary(outputs, "outputs", lab_in.shape)

    if weights is None:
        w_names, w = _official_weights()
    else:
        w_names, w = list(classes), np.asarray(weights, dtype=float)
        if w.shape != (n_cols, n_cols):
            raise ConfigError(
                f"weights must be ({n_cols}, {n_cols}) for {n_cols} classes, got {w.shape}"
            )
    groups, w = _merge_weight_classes(w_names, w, equivalent_classes)

    def scoring_index(name: str) -> int | None:
        hits = [j for j, g in enumerate(groups) if g & _code_group(name, equivalent_classes)]
        if len(hits) > 1:
            raise ConfigError(f"class {name!r} matches several scored classes of the weights")
        return hits[0] if hits else None

    cols = [scoring_index(c) for c in classes]
    if all(j is None for j in cols):
        raise ConfigError(f"none of the classes {list(classes)[:5]}... is scored by the weights")
    normal = scoring_index(normal_class)
    if normal is None:
        raise ConfigError(f"normal class {normal_class!r} is not among the scored classes")

    lab = np.zeros((len(lab_in), len(groups)), dtype=bool)
    out = np.zeros_like(lab)
    for src, dst in enumerate(cols):
        if dst is not None:  # equivalent columns merge by logical OR
            lab[:, dst] |= lab_in[:, src]
            out[:, dst] |= out_in[:, src]
    inactive = np.zeros_like(lab)
    inactive[:, normal] = True

    def score(o: np.ndarray) -> float:
        return float(np.nansum(w * challenge_confusion_matrix(lab, o)))

    observed, correct, base = score(out), score(lab), score(inactive)
    if correct == base:
        return 0.0
    return (observed - base) / (correct - base)


# ---------------------------------------------------------------------------------------------
# QRS detection
# ---------------------------------------------------------------------------------------------


def _positions(x: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    if not np.isfinite(a).all():
        raise DataError(f"{what} must be finite sample positions")
    return np.sort(a)


def _match_count(ref: np.ndarray, det: np.ndarray, tol: float) -> int:
    """Size of a maximum one-to-one matching of sorted `ref` and `det` within `tol`."""
    if len(ref) == 0 or len(det) == 0:
        return 0
    # Split the merged time line where consecutive events are more than `tol` apart: no
    # admissible pair crosses such a gap, so each block is matched alone (blocks are a few
    # beats long, which keeps the assignment cheap on a 24-h recording).
    t = np.concatenate([ref, det])
    is_ref = np.concatenate([np.ones(len(ref), bool), np.zeros(len(det), bool)])
    order = np.argsort(t, kind="stable")
    t, is_ref = t[order], is_ref[order]
    cuts = np.flatnonzero(np.diff(t) > tol) + 1
    tp = 0
    for block_t, block_ref in zip(np.split(t, cuts), np.split(is_ref, cuts), strict=True):
        r, d = block_t[block_ref], block_t[~block_ref]
        if len(r) == 0 or len(d) == 0:
            continue
        dist = np.abs(r[:, None] - d[None, :])
        ok = dist <= tol
        # A cost above any sum of admissible distances makes the assignment first maximise
        # the number of admissible pairs, then minimise their total distance.
        big = (min(len(r), len(d)) + 1) * (tol + 1.0)
        rows, cols = linear_sum_assignment(np.where(ok, dist, big))
        tp += int(ok[rows, cols].sum())
    return tp


def _qrs_scores(tp: int, fp: int, fn: int) -> dict[str, float]:
    return {
        "sensitivity": _ratio(tp, tp + fn),
        "ppv": _ratio(tp, tp + fp),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def _qrs_counts(
    ref_positions: Sequence[float], det_positions: Sequence[float], fs: float, tolerance_s: float
) -> tuple[int, int, int]:
    if not fs > 0 or not tolerance_s > 0:
        raise ConfigError(f"fs and tolerance_s must be > 0, got fs={fs}, tolerance_s={tolerance_s}")
    ref = _positions(ref_positions, "ref_positions")
    det = _positions(det_positions, "det_positions")
    # A hair of slack so that a detection exactly at the tolerance is not lost to rounding
    # (0.15 s * fs is rarely an exact float).
    tp = _match_count(ref, det, tolerance_s * fs + 1e-9)
    return tp, len(det) - tp, len(ref) - tp


def qrs_metrics(
    ref_positions: Sequence[float],
    det_positions: Sequence[float],
    fs: float,
    tolerance_s: float = 0.15,
) -> dict[str, float]:
    """Beat-by-beat QRS detection scores of one record.

    ANSI/AAMI EC57 (as implemented by WFDB's bxb, Moody & Mark): a detection within 150 ms of
    a reference beat is a true positive; each reference beat matches at most one detection
    and each detection at most one beat, so a double detection is one TP and one FP.
    Sensitivity = TP / (TP + FN), positive predictive value = TP / (TP + FP),
    F1 = 2TP / (2TP + FP + FN).

    Matching is an optimal one-to-one assignment (scipy.optimize.linear_sum_assignment over
    |reference - detection|, pairs beyond the tolerance forbidden): it finds the largest
    number of matched pairs and, among those, the nearest. A greedy nearest-first match can
    miss pairs: with beats at 0 and 250 ms and detections at 130 and 380 ms, greedy pairs
    250-130 (120 ms) and leaves two unmatched, while both beats have a detection 130 ms away.

    Args:
        ref_positions: reference QRS positions in samples (any order).
        det_positions: detected QRS positions in samples (any order).
        fs: sampling frequency in Hz.
        tolerance_s: matching window in seconds (inclusive).

    Returns:
        Dict with sensitivity, ppv, f1 (NaN when undefined: no beats, no detections, or
        neither) and the counts tp, fp, fn.

    Raises:
        ConfigError: fs or tolerance_s not positive.
        DataError: positions that are not finite numbers.
    """
    return _qrs_scores(*_qrs_counts(ref_positions, det_positions, fs, tolerance_s))


def qrs_metrics_records(
    list_of_refs: Sequence[Sequence[float]],
    list_of_dets: Sequence[Sequence[float]],
    fs: float,
    tolerance_s: float = 0.15,
) -> dict[str, float]:
    """Gross QRS detection scores of a database: TP, FP and FN summed over records first.

    EC57's gross statistics (every beat weighs the same), as opposed to averaging per-record
    rates. Each record is matched alone by `qrs_metrics`.

    Args:
        list_of_refs: reference positions (samples) of each record.
        list_of_dets: detected positions (samples) of each record, in the same order.
        fs: sampling frequency in Hz, shared by the records.
        tolerance_s: matching window in seconds (inclusive).

    Returns:
        As `qrs_metrics`, over all records.

    Raises:
        DataError: lists of different lengths, or positions that are not finite.
        ConfigError: fs or tolerance_s not positive.
    """
    if len(list_of_refs) != len(list_of_dets):
        raise DataError(
            f"need one detection list per reference list, got "
            f"{len(list_of_refs)} and {len(list_of_dets)}"
        )
    tp = fp = fn = 0
    for ref, det in zip(list_of_refs, list_of_dets, strict=True):
        a, b, c = _qrs_counts(ref, det, fs, tolerance_s)
        tp, fp, fn = tp + a, fp + b, fn + c
    return _qrs_scores(tp, fp, fn)


# ---------------------------------------------------------------------------------------------
# Autoencoder pretraining
# ---------------------------------------------------------------------------------------------


def reconstruction_mse(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Mean squared reconstruction error over every sample of every lead and record.

    The autoencoder objective of Jang et al.'s pretraining: mean of (x - x_hat)^2 over all
    elements (scikit-learn's `mean_squared_error` on the flattened arrays).

    Args:
        x: signals, any shape (e.g. records x leads x samples).
        x_hat: reconstructions, same shape.

    Returns:
        The mean squared error.

    Raises:
        DataError: shapes that differ, or empty arrays.
    """
    a, b = np.asarray(x, dtype=float), np.asarray(x_hat, dtype=float)
    if a.shape != b.shape or a.size == 0:
        raise DataError(
            f"x and x_hat must be non-empty and of one shape, got {a.shape} and {b.shape}"
        )
    return float(mean_squared_error(a.ravel(), b.ravel()))
