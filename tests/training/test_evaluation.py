"""Test-split scoring: every decision rule comes from validation, each task's numbers by hand."""

import json

import numpy as np
import pytest

from study.data.snomed import LABEL_SETS
from study.training.evaluation import as_row, challenge_codes, score_classification
from study.training.tasks import score_split


def test_multi_label_thresholds_come_from_validation_only():
    y_val = np.array([[1], [1], [0], [0]])
    p_val = np.array([[0.30], [0.25], [0.20], [0.10]])  # best F1 threshold on val: 0.25
    y_test = np.array([[1], [0], [1], [0]])
    p_test = np.array([[0.28], [0.26], [0.10], [0.05]])
    m = score_split("multi_label", ["AF"], (y_val, p_val), (y_test, p_test))
    assert m["thresholds"] == [pytest.approx(0.25)]
    # at 0.25: predictions 1, 1, 0, 0 -> TP 1, FP 1, FN 1, TN 1
    assert m["sensitivity"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx(0.5)
    # the test labels never move the threshold
    m2 = score_split("multi_label", ["AF"], (y_val, p_val), (1 - y_test, p_test))
    assert m2["thresholds"] == m["thresholds"]


def test_two_class_set_scores_the_second_class_as_positive():
    y = np.eye(2)[[0, 0, 1, 1]]
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2]])
    m = score_split("single_label", ["HC", "MI"], (y, p), (y, p))
    # arg-max: 0, 1, 1, 0 -> MI: TP 1 (rec 3), FN 1 (rec 4), FP 1 (rec 2), TN 1
    assert (m["sensitivity"], m["specificity"], m["accuracy"]) == (0.5, 0.5, 0.5)
    assert json.loads(as_row(m)["test_per_class_f1"]) == {"HC": 0.5, "MI": 0.5}


def test_single_label_cinc2017_score_by_hand():
    classes = ["N", "A", "O", "~"]
    true = [0, 0, 1, 2, 3]
    pred = [0, 1, 1, 2, 2]
    y, p = np.eye(4)[true], np.eye(4)[pred] * 0.9 + 0.025
    m = score_split("single_label", classes, (y, p), (y, p))
    # confusion (rows ref): N: [1,1,0,0]; A: [0,1,0,0]; O: [0,0,1,0]; ~: [0,0,1,0]
    f1_n, f1_a, f1_o, f1_noise = 2 / 3, 2 / 3, 2 / 3, 0.0
    assert m["cinc2017_score"] == pytest.approx((f1_n + f1_a + f1_o) / 3)
    assert m["macro_f1"] == pytest.approx((f1_n + f1_a + f1_o + f1_noise) / 4)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert "sensitivity" not in m


def test_challenge_score_on_a_snomed_label_set():
    classes = list(LABEL_SETS["cpsc9"])
    codes = {c: sorted(LABEL_SETS["cpsc9"][c]) for c in classes}
    names = challenge_codes(classes, codes)
    assert names[classes.index("NORM")] == "426783006"
    rng = np.random.default_rng(0)
    y = (rng.random((40, len(classes))) < 0.2).astype(int)
    y[y.sum(1) == 0, 0] = 1
    perfect = score_split(
        "multi_label", classes, (y, y * 0.8 + 0.1), (y, y * 0.8 + 0.1), class_codes=codes
    )
    assert perfect["challenge_score"] == pytest.approx(1.0)
    normal_only = np.zeros_like(y, dtype=float)
    normal_only[:, classes.index("NORM")] = 1.0
    # validation thresholds from a perfect model, then a test model that says only normal
    m = score_split("multi_label", classes, (y, y * 0.8 + 0.1), (y, normal_only), class_codes=codes)
    assert m["challenge_score"] == pytest.approx(0.0)
    # without codes (a non-SNOMED label set) there is no challenge score
    assert "challenge_score" not in score_split("multi_label", classes, (y, y * 1.0), (y, y * 1.0))


def test_a_class_covering_several_scored_codes_is_left_unscored():
    codes = {"NORM": ["426783006"], "STTC": sorted(LABEL_SETS["ptbxl_super"]["STTC"])}
    assert challenge_codes(["NORM", "STTC"], codes) == ["426783006", "unscored:STTC"]


def _trace(n, beats, height):
    p = np.zeros(n)
    for b in beats:
        p[max(b - 3, 0) : b + 4] = (
            height * np.array([0.2, 0.5, 0.8, 1, 0.8, 0.5, 0.2])[: len(p[max(b - 3, 0) : b + 4])]
        )
    return p


def test_qrs_probability_is_chosen_on_validation_and_scored_with_150ms_tolerance():
    fs, n = 100.0, 1000
    beats_val = [np.array([100, 300, 500]), np.array([200, 600])]
    # validation peaks are low (0.45): a threshold of 0.5 would miss them all
    p_val = np.stack([_trace(n, b, 0.45) for b in beats_val])
    beats_test = [np.array([100, 400, 700])]
    # test: beats detected 10 samples (100 ms) late, one spurious peak far from any beat
    p_test = np.stack([_trace(n, [110, 410, 710, 900], 0.45)])
    m = score_split(
        "per_sample", ["qrs"], (None, p_val), (None, p_test), fs=fs, beats=(beats_val, beats_test)
    )
    thr = m["thresholds"]["qrs_probability"]
    assert thr <= 0.45
    assert m["qrs_sensitivity"] == pytest.approx(1.0)
    assert m["qrs_ppv"] == pytest.approx(3 / 4)
    assert m["qrs_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1))


def test_one_column_f1_is_the_positive_class_f1():
    from study.training.metrics import macro_f1, weighted_f1

    y = np.array([[1], [0], [0], [0]])
    p = np.array([[0.9], [0.9], [0.1], [0.1]])
    # TP 1, FP 1: F1 = 2/3 (averaging in the negatives' F1 0.8 would give 0.733)
    assert macro_f1(y, p, np.array([0.5])) == pytest.approx(2 / 3)
    assert weighted_f1(y, p) == pytest.approx(2 / 3)


@pytest.mark.parametrize("kind", ["multi_label", "single_label"])
def test_every_macro_metric_averages_the_same_scored_classes(kind):
    """A class absent from the test split is left out of macro AUROC and macro F1 alike (one
    convention), and the row says how many classes were scored."""
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    true = np.array([0, 1] * 20)  # class c never occurs in the test split
    y_test = np.eye(3, dtype=int)[true]
    p_test = np.clip(y_test * 0.6 + rng.uniform(0, 0.4, y_test.shape), 0, 1)
    p_test[:3, 2] = 0.99  # ... but is predicted a few times
    if kind == "single_label":
        p_test = p_test / p_test.sum(axis=1, keepdims=True)
    got = score_classification(kind, classes, y_test, p_test, y_test, p_test, None)
    assert got["n_classes_scored"] == 2
    auroc = np.mean([roc_auc_score(y_test[:, k], p_test[:, k]) for k in (0, 1)])
    assert got["macro_auroc"] == pytest.approx(auroc)
    if kind == "single_label":
        f1 = f1_score(true, p_test.argmax(axis=1), labels=[0, 1], average="macro")
    else:
        thr = np.asarray(got["thresholds"])
        f1 = np.mean([f1_score(y_test[:, k], p_test[:, k] >= thr[k]) for k in (0, 1)])
    assert got["macro_f1"] == pytest.approx(f1)
    # the per-class breakdown still lists every class of the label set
    assert set(got["per_class_f1"]) == set(classes)
