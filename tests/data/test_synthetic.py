"""Contract and physiology checks of the synthetic ECG domains."""

from __future__ import annotations

import dataclasses
from functools import cache

import numpy as np
import pytest
from scipy.signal import butter, find_peaks, sosfiltfilt

from study.data.synthetic import DOMAINS, LEAD_NAMES, SyntheticData, SyntheticDomain, generate
from study.errors import ConfigError

# Patients draw from generators seeded by (domain seed, patient), so the first k patients of a
# domain are the same whatever n_patients is: a prefix of a large domain stands for all of it
# at a fraction of the time.
_PREFIX = 400


@cache
def _data(name: str) -> SyntheticData:
    dom = DOMAINS[name]
    return generate(dataclasses.replace(dom, n_patients=min(dom.n_patients, _PREFIX)))


def _column(data: SyntheticData, name: str) -> np.ndarray:
    return data.labels[:, data.classes.index(name)].astype(bool)


def _only(data: SyntheticData, name: str) -> np.ndarray:
    """Records whose one label is `name`."""
    return _column(data, name) & (data.labels.sum(1) == 1)


def _r_peaks(x: np.ndarray, fs: float) -> np.ndarray:
    # Band-pass to the QRS band and rectify, so inverted or small QRS complexes count too.
    sos = butter(2, [5, 30], btype="band", fs=fs, output="sos")
    y = np.abs(sosfiltfilt(sos, x))
    peaks, _ = find_peaks(y, height=0.4 * y.max(), distance=int(0.25 * fs))
    return peaks


def _qrs_width(sig: np.ndarray, fs: float) -> float:
    """Median time per beat that the spatial velocity stays above 20% of the beat's peak."""
    v = np.abs(np.diff(sig, axis=1)).sum(0)
    peaks, _ = find_peaks(v, height=0.5 * v.max(), distance=int(0.3 * fs))
    half = int(0.12 * fs)
    return float(
        np.median([(v[max(0, p - half) : p + half] > 0.2 * v[p]).sum() / fs for p in peaks])
    )


def test_generate_is_deterministic() -> None:
    a, b = generate("synth_tiny"), generate(dataclasses.replace(DOMAINS["synth_tiny"]))
    assert np.array_equal(a.signals, b.signals)
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.patient_id, b.patient_id)
    assert np.array_equal(a.record_id, b.record_id)


def test_domains_and_seeds_give_different_data() -> None:
    tiny = generate("synth_tiny")
    reseeded = generate(dataclasses.replace(DOMAINS["synth_tiny"], seed=8))
    assert not np.allclose(tiny.signals[0], reseeded.signals[0])
    x, y = _data("synth_down_x"), _data("synth_down_y")
    assert not np.allclose(x.signals[0], y.signals[0])


def test_prefix_of_patients_is_a_prefix_of_records() -> None:
    full = generate("synth_tiny")
    part = generate(dataclasses.replace(DOMAINS["synth_tiny"], n_patients=10))
    assert np.array_equal(part.signals, full.signals[: len(part)])
    assert np.array_equal(part.record_id, full.record_id[: len(part)])


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_shapes_dtypes_and_labels(name: str) -> None:
    dom, data = DOMAINS[name], _data(name)
    n = len(data)
    assert data.signals.shape == (n, 12, int(dom.fs * dom.seconds))
    assert data.signals.dtype == np.float32 and np.isfinite(data.signals).all()
    assert data.labels.shape == (n, len(dom.classes)) and data.labels.dtype == np.uint8
    assert data.patient_id.shape == (n,) and data.patient_id.dtype == np.int64
    assert data.record_id.shape == (n,) and len(set(data.record_id)) == n
    assert data.classes == dom.classes and data.lead_names == LEAD_NAMES and data.fs == dom.fs
    # Millivolts: QRS complexes of a few mV at most, not raw ADC units or volts.
    peak = np.abs(data.signals).max(axis=(1, 2))
    assert 0.3 < np.median(peak) < 3.0
    assert set(np.unique(data.labels)) <= {0, 1}
    assert data.labels.sum(1).max() <= dom.max_labels
    positives = data.labels.sum(0)
    assert positives.min() >= 5, dict(zip(dom.classes, positives.tolist(), strict=True))
    if "NORM" in dom.classes:
        norm = _column(data, "NORM")
        assert np.array_equal(norm, data.labels.sum(1) == norm)  # NORM iff nothing else


@pytest.mark.parametrize("name", ["synth_tiny", "synth_down_y"])
def test_records_of_a_patient_share_the_patient(name: str) -> None:
    dom, data = DOMAINS[name], _data(name)
    lo, hi = dom.records_per_patient
    for rid, pid in zip(data.record_id, data.patient_id, strict=True):
        assert rid.startswith(f"{name}-p{pid:05d}-r")
    counts = np.bincount(data.patient_id)
    assert counts.min() >= lo and counts.max() <= hi
    # One patient's records look alike: the per-lead amplitude profiles of two records of
    # one patient are closer than those of two patients, so splits must be patient-level.
    profile = np.ptp(data.signals, axis=2)
    profile = np.log(profile / profile.mean(1, keepdims=True))
    same, other = [], []
    for i in range(len(data) - 1):
        d = np.linalg.norm(profile[i] - profile[i + 1])
        (same if data.patient_id[i] == data.patient_id[i + 1] else other).append(d)
    assert np.median(same) < 0.7 * np.median(other)


def test_limb_leads_obey_einthoven() -> None:
    s = _data("synth_down_x").signals.astype(np.float64)
    i, ii, iii, avr, avl, avf = (s[:, k] for k in range(6))
    np.testing.assert_allclose(iii, ii - i, atol=1e-5)
    np.testing.assert_allclose(avr, -(i + ii) / 2, atol=1e-5)
    np.testing.assert_allclose(avl, i - ii / 2, atol=1e-5)
    np.testing.assert_allclose(avf, ii - i / 2, atol=1e-5)


def test_normal_lead_relationships() -> None:
    data = _data("synth_up_a")
    s = data.signals[_only(data, "NORM")]
    s = s - np.median(s, axis=2, keepdims=True)
    polarity = np.median(s.max(axis=2) + s.min(axis=2), axis=0)  # > 0: mostly upright QRS
    lead = dict(zip(LEAD_NAMES, polarity, strict=True))
    assert lead["aVR"] < 0 and lead["V1"] < 0
    assert lead["II"] > 0 and lead["V5"] > 0 and lead["V6"] > 0
    r_wave = dict(zip(LEAD_NAMES, np.median(s.max(axis=2), axis=0), strict=True))
    assert r_wave["V1"] < r_wave["V3"] < r_wave["V5"]  # R-wave progression


def test_tachycardia_beats_faster_than_bradycardia() -> None:
    data = _data("synth_up_b")
    ii = data.lead_names.index("II")
    rate = np.array([len(_r_peaks(s[ii], data.fs)) / 5.0 * 60 for s in data.signals])
    brady, tachy = rate[_only(data, "BRADY")], rate[_only(data, "TACHY")]
    assert np.median(tachy) > 1.8 * np.median(brady)
    assert np.mean(tachy > np.median(brady)) > 0.95
    assert (data.heart_rate[_only(data, "TACHY")] > 105).all()
    assert (data.heart_rate[_only(data, "BRADY")] < 55).all()


def test_af_has_irregular_rr() -> None:
    data = _data("synth_up_b")
    ii = data.lead_names.index("II")

    def rr_cv(sig: np.ndarray) -> float:
        rr = np.diff(_r_peaks(sig[ii], data.fs))
        return float(np.std(rr) / np.mean(rr))

    af = [rr_cv(s) for s in data.signals[_only(data, "AF")]]
    norm = [rr_cv(s) for s in data.signals[_only(data, "NORM")]]
    assert np.median(af) > 3 * np.median(norm)


def test_bundle_branch_block_widens_qrs() -> None:
    data = _data("synth_up_a")
    width = {
        k: np.median([_qrs_width(s, data.fs) for s in data.signals[_only(data, k)]])
        for k in ("NORM", "RBBB", "LBBB")
    }
    assert width["RBBB"] >= width["NORM"] + 0.015, width
    assert width["LBBB"] >= width["NORM"] + 0.04, width


def test_lead_subset_and_gain() -> None:
    tiny = DOMAINS["synth_tiny"]
    full = generate(tiny)
    sub = generate(dataclasses.replace(tiny, lead_names=("V1", "II"), lead_gain=(2.0, 1.0)))
    assert sub.lead_names == ("V1", "II")
    np.testing.assert_array_equal(sub.signals[:, 0], 2 * full.signals[:, 6])
    np.testing.assert_array_equal(sub.signals[:, 1], full.signals[:, 1])


def test_unknown_domain_name_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown synthetic domain 'nope'.*synth_up_a"):
        generate("nope")


_BASE = dict(name="t", classes=("NORM", "AF"), prevalence=(("AF", 0.2),), n_patients=3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classes": ("NORM", "XYZ")}, "unknown class 'XYZ'"),
        ({"prevalence": (("RBBB", 0.2),)}, "prevalence must name each class"),
        ({"prevalence": (("AF", 1.5),)}, r"prevalence of AF must be in \[0, 1\]"),
        ({"records_per_patient": (3, 1)}, "records_per_patient must satisfy"),
        ({"noise_std": -0.1}, "noise_std must be >= 0"),
        ({"fs": 0.0}, "fs must be > 0"),
        ({"label_miss": 2.0}, r"label_miss must be in \[0, 1\]"),
        ({"lead_names": ("II", "V7")}, "lead_names must be from"),
        ({"lead_gain": (1.0, 1.0)}, "lead_gain needs 12 values"),
    ],
)
def test_invalid_domain_is_a_config_error(change: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SyntheticDomain(**{**_BASE, **change})
