"""CPSC 2019 reader: the real sample files, and a folder in the release's layout written with
scipy.io.savemat (good and bad records)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from study.data.readers import READERS, BadRecord
from study.data.readers.cpsc2019 import Cpsc2019Reader
from study.errors import ConfigError, DataError

FS = 500
N = 5000


def spike_train(peaks: np.ndarray, seed: int) -> np.ndarray:
    """(5000, 1) float mV: a wandering baseline with a 1-sample 2 mV spike on each peak, so a
    test can find the peaks again in the prepared signal."""
    rng = np.random.default_rng(seed)
    t = np.arange(N) / FS
    x = 0.2 * np.sin(2 * np.pi * 0.3 * t) + rng.normal(0, 0.01, N)
    peaks = np.asarray(peaks, dtype=np.int64)
    x[peaks[(peaks >= 0) & (peaks < N)]] += 2.0
    return x[:, None]


def write_cpsc2019(root: Path, number: int, peaks, ecg: np.ndarray | None = None) -> None:
    """data/data_<n>.mat (`ecg`, 5000 x 1) and ref/R_<n>.mat (`R_peak`, n x 1 uint16), as the
    release stores them; `peaks=None` writes no reference file."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "ref").mkdir(parents=True, exist_ok=True)
    if ecg is None:
        ecg = spike_train(GOOD_PEAKS if peaks is None else peaks, number)
    scipy.io.savemat(root / "data" / f"data_{number:05d}.mat", {"ecg": ecg})
    if peaks is not None:
        r_peak = np.asarray(peaks, dtype=np.uint16).reshape(-1, 1)
        scipy.io.savemat(root / "ref" / f"R_{number:05d}.mat", {"R_peak": r_peak})


GOOD_PEAKS = np.arange(150, 4900, 400)  # 75 bpm
BAD = {
    3: "file .*R_00003.mat is missing",
    4: "R_peak 5000 lies outside the record's 5000 samples",
    5: "2500 samples, header promises 5000",
    6: "unreadable file",
    7: "R_peak is not strictly increasing",
    8: "has no variable 'R_peak'",
}


@pytest.fixture()
def cpsc2019_root(tmp_path) -> Path:
    """12 good records (1, 2, 9..18) and the bad ones of BAD, plus files the reader ignores."""
    root = tmp_path / "cpsc2019"
    for n in (1, 2, *range(9, 19)):
        write_cpsc2019(root, n, GOOD_PEAKS + n)
    write_cpsc2019(root, 3, None)
    write_cpsc2019(root, 4, [100, 2000, 5000])
    write_cpsc2019(root, 5, GOOD_PEAKS[:5], ecg=spike_train(GOOD_PEAKS, 5)[:2500])
    write_cpsc2019(root, 6, GOOD_PEAKS)
    (root / "data" / "data_00006.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    write_cpsc2019(root, 7, [300, 200, 900])
    write_cpsc2019(root, 8, GOOD_PEAKS)
    scipy.io.savemat(root / "ref" / "R_00008.mat", {"peaks": GOOD_PEAKS[:, None]})
    # what the reader leaves alone on purpose: notes, and files of other formats at the root
    (root / "README.txt").write_text("CPSC 2019 training set\n")
    (root / "data_00001.hea").write_text("data_00001 1 500 5000\n")
    (root / "data" / "notes.txt").write_text("x\n")
    return root


def test_registered_and_listed():
    from study.data import list_datasets

    assert READERS.get("cpsc2019") is Cpsc2019Reader
    assert "cpsc2019" in list_datasets()
    assert Cpsc2019Reader.label_sets == {"qrs": ("qrs",)}
    assert Cpsc2019Reader.label_kinds == {"qrs": "per_sample"}
    assert "no patient ids" in Cpsc2019Reader.caveats[0]


# --- real files -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real(realdata) -> Cpsc2019Reader:
    return Cpsc2019Reader(realdata / "cpsc2019")


def test_real_records_signals_and_peaks(real, realdata):
    recs = real.records()
    assert len(recs) == 50
    assert all(r.patient_id == r.record_id for r in recs)  # no patient ids published
    assert [r.record_id for r in recs] == sorted(
        p.stem for p in (realdata / "cpsc2019" / "data").glob("data_*.mat")
    )
    for rec in recs[:5]:
        sig = real.read(rec)
        mat = scipy.io.loadmat(realdata / "cpsc2019" / "data" / f"{rec.record_id}.mat")
        assert sig.data.shape == (1, N) and sig.fs == FS and sig.lead_names == ("ecg",)
        np.testing.assert_allclose(sig.data[0], mat["ecg"][:, 0], rtol=1e-6)
        ref = scipy.io.loadmat(
            realdata / "cpsc2019" / "ref" / f"R_{rec.record_id.removeprefix('data_')}.mat"
        )["R_peak"]
        np.testing.assert_array_equal(real.read_beats(rec), ref.ravel().astype(np.int64))


# --- fixture in the release's layout --------------------------------------------------------


def test_fixture_lists_every_data_file_and_ignores_other_files(cpsc2019_root):
    reader = Cpsc2019Reader(cpsc2019_root)
    assert [r.record_id for r in reader.records()] == [f"data_{n:05d}" for n in range(1, 19)]
    rec = reader.records()[0]
    np.testing.assert_array_equal(reader.read_beats(rec), GOOD_PEAKS + 1)
    assert reader.classes_of(rec, "qrs") == {"qrs"}
    with pytest.raises(ConfigError, match="no label set 'beat'; known: qrs"):
        reader.classes_of(rec, "beat")


@pytest.mark.parametrize("number", sorted(BAD))
def test_bad_records_name_their_reason(cpsc2019_root, number):
    reader = Cpsc2019Reader(cpsc2019_root)
    rec = next(r for r in reader.records() if r.record_id == f"data_{number:05d}")
    with pytest.raises(BadRecord, match=BAD[number]) as e:
        reader.read(rec)
        reader.read_beats(rec)
    assert e.value.record_id == rec.record_id


def _no_data(root: Path) -> None:
    (root / "ref").mkdir(parents=True)


def _misnamed(root: Path) -> None:
    write_cpsc2019(root, 1, GOOD_PEAKS)
    scipy.io.savemat(root / "data" / "A0001.mat", {"ecg": np.zeros((N, 1))})


def _no_ref(root: Path) -> None:
    write_cpsc2019(root, 1, GOOD_PEAKS)
    for f in (root / "ref").iterdir():
        f.unlink()
    (root / "ref").rmdir()


@pytest.mark.parametrize(
    "make, message",
    [
        (_no_data, r"expected data/data_<n>.mat and ref/R_<n>.mat under .*, found \['ref'\]"),
        (_misnamed, r"A0001.mat is not named data_<n>.mat"),
        (_no_ref, r"the reference folder .*ref .* is missing"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_wrong_layouts_fail_at_once(tmp_path, make, message):
    root = tmp_path / "root"
    make(root)
    with pytest.raises(DataError, match=message):
        Cpsc2019Reader(root)
