"""Multi-label classification metrics, computed with scikit-learn.

Thresholds for macro F1 are chosen per class on the validation split and then applied to the
test split; the support-weighted F1 uses a fixed 0.5 threshold, as Nguyen & Do report it.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score

__all__ = ["macro_auroc", "choose_thresholds", "macro_f1", "weighted_f1", "classification_metrics"]


def _scorable(y: np.ndarray) -> np.ndarray:
    """Classes that have both positives and negatives (AUROC is undefined otherwise)."""
    pos = y.sum(axis=0)
    return np.flatnonzero((pos > 0) & (pos < len(y)))


def macro_auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Macro AUROC over the classes that have both positives and negatives; NaN if none."""
    cols = _scorable(y)
    if len(cols) == 0:
        return float("nan")
    return float(roc_auc_score(y[:, cols], p[:, cols], average="macro"))


def choose_thresholds(y_val: np.ndarray, p_val: np.ndarray) -> np.ndarray:
    """Per-class thresholds that maximise F1 on validation (0.5 for a class with no positives)."""
    thr = np.full(y_val.shape[1], 0.5)
    for k in range(y_val.shape[1]):
        if y_val[:, k].sum() == 0:
            continue
        precision, recall, t = precision_recall_curve(y_val[:, k], p_val[:, k])
        f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
        thr[k] = t[int(np.argmax(f1[:-1]))]
    return thr


def macro_f1(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> float:
    return float(f1_score(y, p >= thresholds[None, :], average="macro", zero_division=0))


def weighted_f1(y: np.ndarray, p: np.ndarray) -> float:
    return float(f1_score(y, p >= 0.5, average="weighted", zero_division=0))


def classification_metrics(
    y: np.ndarray, p: np.ndarray, thresholds: np.ndarray | None = None
) -> dict[str, float]:
    """macro_auroc, macro_f1 (at `thresholds`, default 0.5) and weighted_f1 of one split."""
    y = np.asarray(y).astype(int)
    thr = thresholds if thresholds is not None else np.full(y.shape[1], 0.5)
    return {
        "macro_auroc": macro_auroc(y, p),
        "macro_f1": macro_f1(y, p, thr),
        "weighted_f1": weighted_f1(y, p),
    }
