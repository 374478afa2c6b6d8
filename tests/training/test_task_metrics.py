"""Per-task metrics against hand-computed cases and the official scorers' behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from study.errors import ConfigError, DataError
from study.training.metrics import macro_f1
from study.training.task_metrics import (
    CINC2021_EQUIVALENT_CLASSES,
    binary_metrics,
    challenge_confusion_matrix,
    challenge_score,
    cinc2017_score,
    load_challenge_weights,
    macro_f1_4class,
    per_class_f1,
    qrs_metrics,
    qrs_metrics_records,
    reconstruction_mse,
)

NAN = float("nan")


def _close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        if isinstance(v, float) and math.isnan(v):
            assert math.isnan(got[k]), k
        else:
            assert got[k] == pytest.approx(v), k


# --- per-class F1 ------------------------------------------------------------------------------


def test_per_class_f1_by_hand_and_its_mean_is_macro_f1():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    p = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.3], [0.1, 0.8]])
    thr = np.array([0.5, 0.25])
    # class a at 0.5: pred [1,0,1,0] vs [1,0,1,0] -> TP 2 FP 0 FN 0 -> F1 1.0
    # class b at 0.25: pred [0,1,1,1] vs [0,1,1,0] -> TP 2 FP 1 FN 0 -> 4 / 5 = 0.8
    got = per_class_f1(y, p, thr, ["a", "b"])
    assert list(got) == ["a", "b"]
    _close(got, {"a": 1.0, "b": 0.8})
    assert np.mean(list(got.values())) == pytest.approx(macro_f1(y, p, thr))


def test_per_class_f1_rejects_names_that_do_not_match_columns():
    y = np.zeros((3, 2))
    with pytest.raises(DataError, match="one class name and one threshold per column"):
        per_class_f1(y, y, np.full(2, 0.5), ["only_one"])


# --- binary tasks ------------------------------------------------------------------------------


def test_binary_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    s = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.35, 0.7])
    # threshold 0.35 (inclusive): pred [1,1,0,1,0,0,1,1]
    # TP 3 (0.9, 0.8, 0.7), FN 1 (0.3), FP 2 (0.6, 0.35), TN 2 (0.2, 0.1)
    # Se 3/4, Sp 2/4, Acc 5/8, F1 6/(6+2+1) = 2/3
    # AUROC: positives {.9,.8,.7,.3} vs negatives {.6,.35,.2,.1}: .9,.8,.7 win 4 each, .3 wins 2
    #   -> 14/16
    _close(
        binary_metrics(y, s, 0.35),
        {"sensitivity": 0.75, "specificity": 0.5, "accuracy": 0.625, "f1": 2 / 3, "auroc": 14 / 16},
    )


def test_binary_metrics_undefined_rates_are_nan_and_labels_must_be_binary():
    # no positives: TN 1, FP 1 -> Se, F1 and AUROC undefined, Sp 1/2, Acc 1/2
    _close(
        binary_metrics([0, 0], [0.2, 0.7], 0.5),
        {"sensitivity": NAN, "specificity": 0.5, "accuracy": 0.5, "f1": 0.0, "auroc": NAN},
    )
    with pytest.raises(DataError, match="must be 0/1"):
        binary_metrics([0, 2], [0.1, 0.9], 0.5)


# --- CinC 2017 ---------------------------------------------------------------------------------


def test_cinc2017_scores_by_hand():
    y_true = ["N", "N", "N", "A", "A", "O", "O", "~"]
    y_pred = ["N", "N", "A", "A", "O", "O", "N", "~"]
    # confusion (rows reference, columns prediction, order N A O ~):
    #   N: 2 1 0 0   row 3        column totals: N 3, A 2, O 2, ~ 1
    #   A: 0 1 1 0   row 2
    #   O: 1 0 1 0   row 2
    #   ~: 0 0 0 1   row 1
    # F1_N = 2*2/(3+3) = 2/3, F1_A = 2*1/(2+2) = 1/2, F1_O = 2*1/(2+2) = 1/2, F1_~ = 2/(1+1) = 1
    assert cinc2017_score(y_true, y_pred) == pytest.approx((2 / 3 + 0.5 + 0.5) / 3)  # 5/9
    assert macro_f1_4class(y_true, y_pred) == pytest.approx((2 / 3 + 0.5 + 0.5 + 1) / 4)  # 2/3
    # 2 TP / (row + column) is scikit-learn's F1
    assert macro_f1_4class(y_true, y_pred) == pytest.approx(
        f1_score(y_true, y_pred, labels=["N", "A", "O", "~"], average="macro")
    )


def test_cinc2017_noise_predictions_count_as_misses_and_unknown_labels_raise():
    # An AF record called noise: F1_A = 0 (TP 0), F1_N = F1_O = 1; noise F1 not averaged.
    assert cinc2017_score(["N", "A", "O"], ["N", "~", "O"]) == pytest.approx(2 / 3)
    with pytest.raises(DataError, match=r"\['X'\] are not among the classes"):
        cinc2017_score(["N", "A"], ["N", "X"])


# --- PhysioNet/CinC 2020-2021 challenge metric -------------------------------------------------


def test_shipped_weights_are_the_official_2021_matrix():
    classes, w = load_challenge_weights()
    assert len(classes) == 26 and w.shape == (26, 26)
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_array_equal(np.diag(w), 1.0)
    assert ((w > 0) & (w <= 1)).all()
    assert classes[:6] == [
        "164889003",
        "164890007",
        "6374002",
        "426627000",
        "733534002|164909002",
        "713427006|59118001",
    ]
    assert {c for c in classes if "|" in c} == {
        "|".join(p)
        for p in (
            ("733534002", "164909002"),
            ("713427006", "59118001"),
            ("284470004", "63593006"),
            ("427172004", "17338001"),
        )
    }
    # a few entries read off the official weights.csv
    ix = classes.index
    assert w[ix("164889003"), ix("164890007")] == 0.5  # AF vs AFL
    assert w[ix("426783006"), ix("164917005")] == 0.15  # NSR vs Q-wave abnormal
    assert w[ix("284470004|63593006"), ix("10370003")] == 0.4625
    # the loader hands out copies: the cached matrix cannot be altered through them
    w[0, 0] = 9
    assert load_challenge_weights()[1][0, 0] == 1.0


def test_shipped_weights_cover_exactly_the_scored_snomed_codes():
    from study.data.snomed import SNOMED

    classes, _ = load_challenge_weights()
    codes = {code for name in classes for code in name.split("|")}
    assert codes == {code for code, d in SNOMED.items() if d.scored}


def test_confusion_matrix_divides_each_record_by_its_label_output_union():
    # record 1: labels {0}, outputs {0, 1}: union 2 -> A[0,0] += 1/2, A[0,1] += 1/2
    # record 2: labels {1, 2}, outputs {}: union 2 -> nothing (no output)
    # record 3: nothing at all: union clipped to 1 -> nothing
    lab = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    out = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_allclose(
        challenge_confusion_matrix(lab, out), [[0.5, 0.5, 0], [0, 0, 0], [0, 0, 0]]
    )


def test_challenge_score_on_a_hand_computed_three_class_case():
    classes = ["A", "B", "N"]
    w = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.25], [0.0, 0.25, 1.0]])
    lab = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0]])
    out = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 1]])
    # observed, each record over |labels ∪ outputs|:
    #   r1 {A}->{A}    /1: A[A,A] 1                  -> 1*1               = 1
    #   r2 {A,B}->{B}  /2: A[A,B] 1/2, A[B,B] 1/2    -> .5*.5 + 1*.5      = 0.75
    #   r3 {N}->{A}    /2: A[N,A] 1/2                -> 0*.5              = 0
    #   r4 {B}->{B,N}  /2: A[B,B] 1/2, A[B,N] 1/2    -> 1*.5 + .25*.5     = 0.625
    #   observed = 2.375 = 57/24
    # correct (outputs = labels): r1 1, r2 (1 + .5 + .5 + 1)/2 = 1.5, r3 1, r4 1 -> 4.5 = 108/24
    # inactive (always {N}): r1 {A}->{N} /2: 0; r2 {A,B}->{N} /3: (0 + .25)/3 = 1/12;
    #   r3 1; r4 {B}->{N} /2: .25/2 = 1/8  -> 1 + 1/12 + 1/8 = 29/24
    # normalised = (57 - 29) / (108 - 29) = 28/79
    got = challenge_score(lab, out, classes, weights=w, normal_class="N", equivalent_classes=())
    assert got == pytest.approx(28 / 79)


def test_challenge_score_anchors_perfect_one_and_always_normal_zero():
    classes, _ = load_challenge_weights()
    rng = np.random.default_rng(0)
    lab = (rng.random((40, len(classes))) < 0.15).astype(int)
    lab[0] = 0  # a record with no scored label
    assert challenge_score(lab, lab, classes) == pytest.approx(1.0)
    normal = np.zeros_like(lab)
    normal[:, classes.index("426783006")] = 1
    assert challenge_score(lab, normal, classes) == pytest.approx(0.0)
    # outputting nothing scores below the inactive classifier on these records
    assert challenge_score(lab, np.zeros_like(lab), classes) < 0


def test_challenge_score_is_zero_when_correct_and_inactive_tie():
    # every record is sinus rhythm only: the correct and inactive classifiers coincide
    classes, _ = load_challenge_weights()
    lab = np.zeros((3, len(classes)), dtype=int)
    lab[:, classes.index("426783006")] = 1
    out = np.zeros_like(lab)
    out[:, 0] = 1
    assert challenge_score(lab, out, classes) == 0.0


def test_challenge_score_treats_equivalent_codes_as_one_and_ignores_unscored_ones():
    # columns: RBBB, CRBBB (one scored class), NSR, LVH (not scored in 2021)
    codes = ["59118001", "713427006", "426783006", "164873001"]
    lab = np.array([[1, 0, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0]])
    out = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 1, 1, 0]])
    # labels RBBB answered CRBBB, and the missed LVH is unscored: a perfect score
    assert challenge_score(lab, out, codes) == pytest.approx(1.0)
    # the same with "a|b" names, as load_challenge_weights spells them
    merged = ["713427006|59118001", "426783006"]
    assert challenge_score(lab[:, [0, 2]], out[:, [1, 2]], merged) == pytest.approx(1.0)
    # custom weights: equivalent columns must carry identical weights
    w = np.eye(3)
    with pytest.raises(ConfigError, match="have different weights"):
        challenge_score(lab[:, :3], out[:, :3], codes[:3], weights=w)
    w2 = np.array([[1.0, 1.0, 0.2], [1.0, 1.0, 0.2], [0.2, 0.2, 1.0]])
    assert challenge_score(lab[:, :3], out[:, :3], codes[:3], weights=w2) == pytest.approx(1.0)


def _reference_challenge_score(w, lab, out, normal):
    """The definition written record by record with loops (no matrix algebra), as a check."""

    def total(o):
        s = 0.0
        for li, oi in zip(lab, o, strict=True):
            union = max(int(np.logical_or(li, oi).sum()), 1)
            s += sum(w[j, k] / union for j in np.flatnonzero(li) for k in np.flatnonzero(oi))
        return s

    inactive = np.zeros_like(out)
    inactive[:, normal] = 1
    obs, cor, ina = total(out), total(lab), total(inactive)
    return 0.0 if cor == ina else (obs - ina) / (cor - ina)


def test_challenge_score_agrees_with_a_loop_transcription_on_random_outputs():
    classes, w = load_challenge_weights()
    normal = classes.index("426783006")
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(1, 25))
        lab = (rng.random((n, 26)) < 0.12).astype(int)
        out = (rng.random((n, 26)) < rng.uniform(0.05, 0.4)).astype(int)
        want = _reference_challenge_score(w, lab, out, normal)
        assert challenge_score(lab, out, classes) == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(outputs=np.full((2, 2), 0.7)), DataError, "must be binary"),
        (dict(outputs=np.zeros((3, 2))), DataError, r"must have shape \(2, 2\)"),
        (dict(classes=["1", "2"]), ConfigError, "none of the classes"),
        (dict(normal_class="1"), ConfigError, "normal class '1' is not among"),
        (dict(weights=np.eye(3)), ConfigError, r"weights must be \(2, 2\)"),
    ],
)
def test_challenge_score_errors(kwargs, error, message):
    args = dict(
        labels=np.eye(2, dtype=int),
        outputs=np.eye(2, dtype=int),
        classes=["426783006", "164889003"],
    )
    with pytest.raises(error, match=message):
        challenge_score(**{**args, **kwargs})


def test_equivalent_classes_constant_is_the_official_list():
    assert [list(p) for p in CINC2021_EQUIVALENT_CLASSES] == [
        ["713427006", "59118001"],
        ["284470004", "63593006"],
        ["427172004", "17338001"],
        ["733534002", "164909002"],
    ]


# --- QRS detection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fs", "offset", "tp"),
    [
        (1000, 150, 1),  # 150 ms: on the edge, inside (inclusive)
        (1000, -150, 1),
        (1000, 151, 0),  # 151 ms: outside -> one FP and one FN
        (250, 37, 1),  # 148 ms
        (250, 38, 0),  # 152 ms
        (360, 54, 1),  # 150 ms at MIT-BIH's rate (0.15 * 360 is not an exact float)
        (360, 55, 0),  # 152.8 ms
    ],
)
def test_qrs_tolerance_edges(fs, offset, tp):
    got = qrs_metrics([2 * fs], [2 * fs + offset], fs)
    assert (got["tp"], got["fp"], got["fn"]) == (tp, 1 - tp, 1 - tp)


def test_qrs_double_detection_is_one_tp_and_one_fp():
    # beats at 1.0 s and 2.0 s; detections 1.0 s, 1.01 s (double), 2.0 s
    # TP 2, FP 1, FN 0 -> Se 1, PPV 2/3, F1 4/5
    _close(
        qrs_metrics([1000, 2000], [1000, 1010, 2000], fs=1000),
        {"sensitivity": 1.0, "ppv": 2 / 3, "f1": 0.8, "tp": 2, "fp": 1, "fn": 0},
    )


def test_qrs_matching_maximises_matched_pairs_where_greedy_would_not():
    # beats 0 and 250 ms, detections 130 and 380 ms: greedy nearest-first pairs 250-130 (120 ms)
    # and leaves both others unmatched (TP 1); the assignment pairs 0-130 and 250-380 (TP 2).
    got = qrs_metrics([0, 250], [380, 130], fs=1000)  # unsorted on purpose
    assert (got["tp"], got["fp"], got["fn"]) == (2, 0, 0)


def test_qrs_empty_lists():
    _close(
        qrs_metrics([], [], fs=250),
        {"sensitivity": NAN, "ppv": NAN, "f1": NAN, "tp": 0, "fp": 0, "fn": 0},
    )
    # beats, no detections: TP 0, FN 2 -> Se 0, PPV undefined, F1 0
    _close(
        qrs_metrics([100, 400], [], fs=250),
        {"sensitivity": 0.0, "ppv": NAN, "f1": 0.0, "tp": 0, "fp": 0, "fn": 2},
    )
    # detections, no beats: FP 1 -> Se undefined, PPV 0, F1 0
    _close(
        qrs_metrics([], [100], fs=250),
        {"sensitivity": NAN, "ppv": 0.0, "f1": 0.0, "tp": 0, "fp": 1, "fn": 0},
    )


def test_qrs_records_sum_counts_before_the_rates():
    refs = [[100, 300, 500], [], [1000]]
    dets = [[100, 320, 900], [50], [1000, 1030]]
    # fs 100 Hz, tolerance 15 samples:
    #   record 1: 100-100 TP, 300-320 (200 ms) no, 500 FN, 320 FP, 900 FP -> TP 1 FP 2 FN 2
    #   record 2: FP 1;  record 3: 1000-1000 TP, 1030 FP -> TP 1 FP 1
    # total TP 2, FP 4, FN 2 -> Se 2/4, PPV 2/6, F1 4/(4+4+2) = 0.4
    _close(
        qrs_metrics_records(refs, dets, fs=100),
        {"sensitivity": 0.5, "ppv": 1 / 3, "f1": 0.4, "tp": 2, "fp": 4, "fn": 2},
    )
    with pytest.raises(DataError, match="one detection list per reference list"):
        qrs_metrics_records(refs, dets[:2], fs=100)


def test_qrs_a_long_record_matches_quickly_and_exactly():
    rng = np.random.default_rng(2)
    fs = 250
    ref = np.cumsum(rng.integers(150, 300, size=20_000))  # ~6 h of beats
    det = np.concatenate([ref[::2] + rng.integers(-30, 31, size=len(ref[::2])), ref[1::50] + 5])
    got = qrs_metrics(ref, det, fs)
    # every even beat is found (|jitter| <= 120 ms < 150 ms), odd beats only every 50th
    assert got["tp"] == len(ref[::2]) + len(ref[1::50])
    assert got["fp"] == 0 and got["fn"] == len(ref) - got["tp"]


def test_qrs_rejects_bad_rates():
    with pytest.raises(ConfigError, match="fs and tolerance_s must be > 0"):
        qrs_metrics([1], [1], fs=0)


# --- reconstruction ----------------------------------------------------------------------------


def test_reconstruction_mse_by_hand_and_shape_check():
    x = np.array([[[0.0, 1.0], [2.0, 3.0]]])
    x_hat = np.array([[[0.0, 0.0], [2.0, 5.0]]])
    # squared errors 0, 1, 0, 4 over 4 elements -> 5/4
    assert reconstruction_mse(x, x_hat) == pytest.approx(1.25)
    with pytest.raises(DataError, match="of one shape"):
        reconstruction_mse(np.zeros((2, 3)), np.zeros((3, 2)))
