"""Weimann & Conrad's frame-level pretext labels on hand-made annotations."""

from __future__ import annotations

import numpy as np
import pytest

from study.data.pretext import (
    BEAT_CLASSES,
    HR_CLASSES,
    RHYTHM_CLASSES,
    beat_label,
    complete_beats,
    frame_labels,
    heart_rate_label,
    rhythm_label,
)
from study.data.readers.icentia11k import Annotations, RhythmInterval
from study.errors import DataError


def test_class_orders_are_weimann_and_conrads():
    # transplant/datasets/icentia11k.py: ds_beat_names, ds_rhythm_names, ds_hr_names
    assert BEAT_CLASSES == ("undefined", "normal", "pac", "aberrated", "pvc")
    assert RHYTHM_CLASSES == ("undefined", "end", "noise", "normal", "afib", "aflut")
    assert HR_CLASSES == ("tachy", "brady", "normal", "noise")


@pytest.mark.parametrize(
    "symbols, expected",
    [
        (["N", "N", "V"], "pvc"),  # any ectopic beat outranks normal beats
        (["N", "S", "S", "V"], "pac"),
        (["S", "V", "V"], "pvc"),  # the most frequent ectopic class
        (["N", "S", "V"], "pac"),  # tie: the first of pac / aberrated / pvc
        (["a", "V"], "aberrated"),  # tie: aberrated before pvc
        (["N", "N", "Q"], "normal"),
        (["N", "Q"], "undefined"),  # tie: undefined before normal
        ([], "undefined"),  # no beats
    ],
)
def test_beat_label(symbols, expected):
    assert BEAT_CLASSES[beat_label(symbols)] == expected


def test_beat_label_rejects_an_unknown_symbol():
    with pytest.raises(DataError, match="beat symbol 'A' has no beat class"):
        beat_label(["N", "A"])
    assert BEAT_CLASSES[beat_label(["N", "A"], {"N": "normal", "A": "pac"})] == "pac"


@pytest.mark.parametrize(
    "durations, expected",
    [
        ({"noise": 2000, "afib": 1}, "afib"),  # any afib / aflut outranks the rest
        ({"normal": 900, "afib": 100, "aflut": 200}, "aflut"),
        ({"afib": 10, "aflut": 10}, "afib"),  # tie: afib before aflut
        ({"normal": 600, "noise": 400}, "normal"),
        ({"normal": 400, "noise": 600}, "noise"),
        ({"normal": 500, "noise": 500}, "noise"),  # tie: noise before normal
        ({}, "undefined"),
        ({"normal": 0}, "undefined"),
    ],
)
def test_rhythm_label(durations, expected):
    assert RHYTHM_CLASSES[rhythm_label(durations)] == expected


def test_rhythm_label_rejects_unknown_classes_and_negative_durations():
    with pytest.raises(DataError, match="rhythm class 'AFIB' is unknown"):
        rhythm_label({"AFIB": 3})
    with pytest.raises(DataError, match="duration of afib must be >= 0, got -1"):
        rhythm_label({"afib": -1})


@pytest.mark.parametrize(
    "rr_samples, expected",
    [
        (250, "normal"),  # 60 bpm exactly: normal (brady is < 60)
        (251, "brady"),  # 59.8 bpm
        (150, "normal"),  # 100 bpm exactly: normal (tachy is > 100)
        (149, "tachy"),  # 100.7 bpm
    ],
)
def test_heart_rate_thresholds(rr_samples, expected):
    beats = np.arange(5) * rr_samples
    assert HR_CLASSES[heart_rate_label(beats, 250.0)] == expected


def test_heart_rate_uses_the_mean_rr_and_needs_two_beats():
    # RR 0.5 s and 1.5 s: mean 1 s = 60 bpm, though each alone would be tachy / brady
    assert HR_CLASSES[heart_rate_label([0, 125, 500], 250.0)] == "normal"
    assert HR_CLASSES[heart_rate_label([100], 250.0)] == "noise"
    assert HR_CLASSES[heart_rate_label([], 250.0)] == "noise"
    with pytest.raises(DataError, match="non-decreasing"):
        heart_rate_label([500, 100], 250.0)


def test_complete_beats_drop_the_first_beat_of_the_frame():
    pos = np.array([100.0, 300, 500, 700, 1000])
    # beat i counts when pos[i-1] >= start and pos[i] < end
    assert complete_beats(pos, 0, 1000).tolist() == [1, 2, 3]
    assert complete_beats(pos, 100, 1001).tolist() == [1, 2, 3, 4]
    assert complete_beats(pos, 101, 1000).tolist() == [2, 3]
    assert complete_beats(pos, 800, 900).tolist() == []


# A 40 s record at 250 Hz: beats every 200 samples (75 bpm) until sample 6000, none after.
# Rhythm: N on [0, 3000), AFIB on [3000, 5000), nothing (noise) on [5000, 10000).
FS = 250.0
BEATS = np.arange(100, 6000, 200)


def _annotations(symbols: dict[int, str] | None = None) -> Annotations:
    sym = np.array(["N"] * BEATS.size)
    for i, s in (symbols or {}).items():
        sym[i] = s
    return Annotations(
        samples=BEATS,
        symbols=sym,
        rhythms=(RhythmInterval(0, 3000, "N"), RhythmInterval(3000, 5000, "AFIB")),
        fs=FS,
        n_samples=10_000,
        record_id="hand",
    )


def _names(labels: dict[str, np.ndarray]) -> list[tuple[str, str, str]]:
    return [
        (BEAT_CLASSES[b], RHYTHM_CLASSES[r], HR_CLASSES[h])
        for b, r, h in zip(labels["beat"], labels["rhythm"], labels["hr"], strict=True)
    ]


def test_frame_labels_of_known_frames():
    # beat 0 (sample 100) is V: the first beat of frame [0, 1000), so not complete there
    # beat 2 (sample 500) is S, beat 3 (sample 700) is V: a tie, pac wins
    ann = _annotations({0: "V", 2: "S", 3: "V", 12: "V"})
    labels = frame_labels(ann, [0, 200, 2000, 2500, 4800, 5000, 9000], 1000, FS)
    assert {k: v.dtype for k, v in labels.items()} == {k: np.int64 for k in labels}
    assert _names(labels) == [
        ("pac", "normal", "normal"),  # [0, 1000)
        ("pac", "normal", "normal"),  # [200, 1200)
        ("pvc", "normal", "normal"),  # [2000, 3000): beat 12 at 2500
        # [2500, 3500): the V at 2500 is the frame's first beat, so not complete;
        # N 500, AFIB 500 -> afib (rhythm change inside the frame)
        ("normal", "afib", "normal"),
        ("normal", "afib", "normal"),  # [4800, 5800): AFIB 200 < noise 800 -> afib
        ("normal", "noise", "normal"),  # [5000, 6000): no zone covers it
        ("undefined", "noise", "noise"),  # [9000, 10000): no beats at all
    ]


def test_frame_with_too_few_complete_beats_is_hr_noise():
    ann = _annotations()
    # [5700, 6000): beats at 5700 and 5900; only 5900 is complete -> one beat, no RR
    assert _names(frame_labels(ann, [5700], 300, FS)) == [("normal", "noise", "noise")]


def test_frames_on_a_resampled_signal_rescale_the_annotations():
    ann = _annotations({3: "V"})
    at_250 = frame_labels(ann, [0, 2500, 4800, 9000], 1000, 250.0)
    at_125 = frame_labels(ann, [0, 1250, 2400, 4500], 500, 125.0)
    for k in at_250:
        np.testing.assert_array_equal(at_250[k], at_125[k])


@pytest.mark.parametrize(
    "starts, frame_len, message",
    [
        ([9500], 1000, r"frame \[9500, 10500\) lies outside the record's 10000 samples"),
        ([-1], 10, r"frame \[-1, 9\) lies outside"),
        ([0], 0, "frame_len must be >= 1, got 0"),
    ],
)
def test_frame_labels_rejects_frames_outside_the_record(starts, frame_len, message):
    with pytest.raises(DataError, match=message):
        frame_labels(_annotations(), starts, frame_len, FS)


def test_frame_labels_rejects_unknown_symbols_and_rhythms():
    with pytest.raises(DataError, match=r"beat symbols \['A'\] have no beat class"):
        frame_labels(_annotations({4: "A"}), [0], 1000, FS)
    odd = Annotations(BEATS, ["N"] * BEATS.size, (RhythmInterval(0, 50, "SVTA"),), FS, 10_000)
    with pytest.raises(DataError, match="rhythm 'SVTA' has no rhythm class"):
        frame_labels(odd, [0], 1000, FS)


def test_annotations_reject_overlapping_zones():
    with pytest.raises(DataError, match="non-overlapping"):
        Annotations(
            BEATS,
            ["N"] * BEATS.size,
            (RhythmInterval(0, 3000, "N"), RhythmInterval(2000, 4000, "AFIB")),
            FS,
            10_000,
        )
