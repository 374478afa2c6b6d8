"""The test numbers of one trained model: every metric its task has, with every decision
rule (thresholds, QRS probability) chosen on the validation split and only then applied to
the test split.

The objectives of `study.training.tasks` score a trained model with these functions
(`Objective.score`); a trial row's `test_*` columns come from them:

- all classification tasks: macro AUROC, macro F1, support-weighted F1, per-class F1, and
  the number of classes the macro numbers average over (`n_classes_scored`: the classes
  with at least one positive and one negative test record, `metrics.scored_classes`; one
  convention for every macro metric);
- multi_label: per-class thresholds that maximise F1 on validation (`choose_thresholds`);
  macro F1 and per-class F1 at them, weighted F1 at 0.5 (Nguyen & Do), and the PhysioNet/
  CinC 2020-2021 challenge metric when the classes carry SNOMED-CT codes the official
  weights score (see `challenge_codes`);
- single_label: the arg-max class (macro F1 over every class of the label set, which on
  CinC 2017 is Weimann & Conrad's 4-class macro F1), accuracy, and the CinC 2017 score when
  the classes are N, A, O, ~;
- binary tasks (one class, or two classes with the positive one second, e.g. HC/MI):
  sensitivity, specificity and accuracy at the validation threshold (Huerta et al.);
- per_sample (QRS): QRS positions by `unet1d.qrs_positions` (peaks >= a probability at
  least 200 ms apart) with the probability chosen on validation from a fixed grid to
  maximise gross F1, then sensitivity, PPV and F1 with a 150 ms tolerance.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import f1_score

from study.errors import ConfigError
from study.training.metrics import (
    choose_thresholds,
    classification_metrics,
    scored_classes,
    single_label_metrics,
)
from study.training.task_metrics import (
    binary_metrics,
    challenge_score,
    cinc2017_score,
    load_challenge_weights,
    per_class_f1,
    qrs_metrics_records,
)

__all__ = [
    "score_classification",
    "score_qrs",
    "as_row",
    "detect_qrs",
    "challenge_codes",
    "QRS_THRESHOLDS",
    "QRS_TOLERANCE_S",
    "QRS_MIN_RR_S",
]

#: Probabilities tried on validation for the QRS peak criterion.
QRS_THRESHOLDS = tuple(np.round(np.arange(0.1, 0.91, 0.05), 2).tolist())
#: Matching tolerance of a detection (ANSI/AAMI EC57).
QRS_TOLERANCE_S = 0.15
#: Smallest distance between two detected QRS complexes (the refractory period).
QRS_MIN_RR_S = 0.2

_CINC2017 = ("N", "A", "O", "~")
_NORMAL = "426783006"


def challenge_codes(classes: Sequence[str], class_codes: Mapping[str, Sequence[str]]) -> list[str]:
    """Column names for `challenge_score`: each class's scored SNOMED-CT code.

    A class whose codes hit exactly one scored class of the official weights is named by
    that class; a class hitting none, or several (e.g. PTB-XL's STTC superclass, a union of
    many scored codes), cannot be scored one-to-one and is named "unscored:<class>", which
    the metric ignores, as the official scorer ignores unscored diagnoses.
    """
    scored, _ = load_challenge_weights()
    groups = [set(name.split("|")) for name in scored]
    out = []
    for c in classes:
        codes = set(class_codes.get(c, ()))
        hits = [scored[i] for i, g in enumerate(groups) if g & codes]
        out.append(hits[0] if len(hits) == 1 else f"unscored:{c}")
    return out


def _binary_columns(classes: Sequence[str]) -> int | None:
    """The positive column of a binary task (None if the task is not binary)."""
    if len(classes) == 1:
        return 0
    if len(classes) == 2:
        return 1
    return None


def score_classification(
    kind: str,
    classes: Sequence[str],
    y_val: np.ndarray,
    p_val: np.ndarray,
    y_test: np.ndarray,
    p_test: np.ndarray,
    class_codes: Mapping[str, Sequence[str]] | None,
) -> dict:
    """Test metrics of a classifier ("multi_label" or "single_label" `kind`), thresholds
    chosen on (y_val, p_val) (module docstring).

    Returns:
        Column name (without the "test_" prefix) -> value: floats, `per_class_f1` as a
        dict, and `thresholds` (the validation-chosen decision rule, JSON-able).
    """
    y_test = np.asarray(y_test).astype(int)
    out: dict = {}
    pos = _binary_columns(classes)
    if kind == "single_label":
        out.update(single_label_metrics(y_test, p_test))
        true, pred = y_test.argmax(axis=1), p_test.argmax(axis=1)
        f1 = f1_score(true, pred, labels=np.arange(len(classes)), average=None, zero_division=0)
        out["per_class_f1"] = {str(c): float(v) for c, v in zip(classes, f1, strict=True)}
        out["accuracy"] = float((true == pred).mean())
        if tuple(classes) == _CINC2017:
            names = np.asarray(classes)
            out["cinc2017_score"] = cinc2017_score(names[true], names[pred], _CINC2017)
        # arg-max: no threshold; over two softmax classes p1 >= 0.5 is the arg-max decision
        thresholds = None if pos is None else [0.5] * len(classes)
    else:
        thr = choose_thresholds(np.asarray(y_val).astype(int), p_val)
        thresholds = thr.tolist()
        out.update(classification_metrics(y_test, p_test, thr))
        out["per_class_f1"] = per_class_f1(y_test, p_test, thr, classes)
        if class_codes:
            names = challenge_codes(classes, class_codes)
            if _NORMAL in names:
                try:
                    out["challenge_score"] = challenge_score(y_test, p_test >= thr[None, :], names)
                except ConfigError:
                    pass  # e.g. no scored class besides normal: the metric does not apply
    out["n_classes_scored"] = len(scored_classes(y_test))
    if pos is not None:
        b = binary_metrics(y_test[:, pos], p_test[:, pos], thresholds[pos])
        out.update({k: b[k] for k in ("sensitivity", "specificity", "accuracy")})
    out["thresholds"] = thresholds
    return out


def detect_qrs(p: np.ndarray, fs: float, threshold: float) -> list[np.ndarray]:
    """QRS positions of each row of per-sample probabilities `p` (N, L) at `threshold`."""
    from study.models.unet1d import qrs_positions

    return [qrs_positions(row, fs, QRS_MIN_RR_S, threshold) for row in p]


def score_qrs(
    p_val: np.ndarray,
    beats_val: Sequence[np.ndarray],
    p_test: np.ndarray,
    beats_test: Sequence[np.ndarray],
    fs: float,
) -> dict:
    """QRS sensitivity, PPV and F1 on the test records, the peak probability chosen on the
    validation records (module docstring); `beats_*` are the reference QRS positions."""
    best_thr, best_f1 = QRS_THRESHOLDS[0], -1.0
    for thr in QRS_THRESHOLDS:
        f1 = qrs_metrics_records(beats_val, detect_qrs(p_val, fs, thr), fs, QRS_TOLERANCE_S)["f1"]
        f1 = -1.0 if np.isnan(f1) else f1
        if f1 > best_f1:  # ties keep the lower threshold
            best_thr, best_f1 = thr, f1
    m = qrs_metrics_records(beats_test, detect_qrs(p_test, fs, best_thr), fs, QRS_TOLERANCE_S)
    return {
        "qrs_sensitivity": m["sensitivity"],
        "qrs_ppv": m["ppv"],
        "qrs_f1": m["f1"],
        "thresholds": {"qrs_probability": best_thr},
    }


def as_row(metrics: dict) -> dict:
    """A score's result as trial-row columns (dicts and lists as JSON strings)."""
    row = {}
    for k, v in metrics.items():
        if k == "thresholds":
            row["decision_thresholds"] = json.dumps(v)
        elif isinstance(v, dict):
            row[f"test_{k}"] = json.dumps(v)
        else:
            row[f"test_{k}"] = v
    return row
