"""Multi-label classification metrics, computed with scikit-learn.

Thresholds for macro F1 are chosen per class on the validation split and then applied to the
test split; the support-weighted F1 uses a fixed 0.5 threshold, as Nguyen & Do report it.

One convention for every macro metric (macro AUROC and macro F1, multi-label and
single-label alike): the mean over the *scored* classes of the split, a class being scored
when the split holds at least one positive and one negative for it (`scored_classes`). A
class absent from a small test split has no AUROC and an F1 that only says it is absent, so
it is left out of both, never counted as 0; a trial row stores how many classes were scored
(`test_n_classes_scored`, beside `n_classes`). The support-weighted F1 gives an absent class
weight 0, so it needs no rule.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score, precision_recall_curve, roc_auc_score

__all__ = [
    "macro_auroc",
    "choose_thresholds",
    "macro_f1",
    "weighted_f1",
    "classification_metrics",
    "single_label_metrics",
    "column_f1",
    "scored_classes",
]


def scored_classes(y: np.ndarray) -> np.ndarray:
    """The columns of `y` (n, K) that hold both positives and negatives: the classes every
    macro metric here averages over (the module's convention)."""
    pos = np.asarray(y).astype(int).sum(axis=0)
    return np.flatnonzero((pos > 0) & (pos < len(y)))


def macro_auroc(y: np.ndarray, p: np.ndarray) -> float:
    """Macro AUROC over the scored classes (`scored_classes`); NaN if none is scored."""
    cols = scored_classes(y)
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


def column_f1(y: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """F1 of each column of a multi-label task (0 for a column never present nor predicted).

    Column by column, because scikit-learn reads a one-column indicator matrix as a binary
    task and would average the F1 of its positives and its negatives.
    """
    y, predicted = np.asarray(y).astype(int), np.asarray(predicted).astype(int)
    return np.array(
        [f1_score(y[:, k], predicted[:, k], zero_division=0) for k in range(y.shape[1])]
    )


def macro_f1(y: np.ndarray, p: np.ndarray, thresholds: np.ndarray) -> float:
    """Mean F1 over the scored classes (`scored_classes`) at per-class `thresholds`; NaN if
    no class is scored."""
    cols = scored_classes(y)
    if len(cols) == 0:
        return float("nan")
    return float(column_f1(y, p >= thresholds[None, :])[cols].mean())


def weighted_f1(y: np.ndarray, p: np.ndarray) -> float:
    support = np.asarray(y).sum(axis=0)
    if support.sum() == 0:
        return 0.0
    return float(np.average(column_f1(y, p >= 0.5), weights=support))


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


def single_label_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """macro_auroc (one class against the rest), macro_f1 and weighted_f1 of the arg-max
    class, for a single-label task with one-hot `y` and softmax probabilities `p`.

    The predicted class is the most probable one (no thresholds: exactly one class is
    predicted per record, as Weimann & Conrad's softmax heads do); the macro F1 averages the
    scored classes (`scored_classes`: a class is left out when the split has none of it; a
    scored class never predicted counts 0).
    """
    y = np.asarray(y)
    true, pred = y.argmax(axis=1), np.asarray(p).argmax(axis=1)
    labels = np.arange(y.shape[1])
    scored = scored_classes(y)
    macro = (
        float(f1_score(true, pred, labels=scored, average="macro", zero_division=0))
        if len(scored)
        else float("nan")
    )
    return {
        "macro_auroc": macro_auroc(y.astype(int), p),
        "macro_f1": macro,
        "weighted_f1": float(
            f1_score(true, pred, labels=labels, average="weighted", zero_division=0)
        ),
    }
