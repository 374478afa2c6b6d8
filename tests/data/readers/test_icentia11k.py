"""Icentia11k and CPSC 2021 readers: real CPSC 2021 files, and an Icentia11k-layout fixture
written with wfdb.wrsamp / wfdb.wrann (good and bad records)."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np
import pytest
import wfdb

from study.data.pretext import RHYTHM_CLASSES, frame_labels
from study.data.readers import READERS, BadRecord
from study.data.readers.icentia11k import (
    Cpsc2021Reader,
    Icentia11kReader,
    RhythmInterval,
    parse_annotations,
)
from study.errors import ConfigError, DataError

REALDATA = Path(__file__).parents[3].parent / "shared" / "realdata"
CPSC = REALDATA / "cpsc2021"


@pytest.fixture(scope="module")
def cpsc() -> Cpsc2021Reader:
    if not CPSC.is_dir():
        pytest.skip(f"real CPSC 2021 samples not found at {CPSC} (../shared/realdata/cpsc2021)")
    return Cpsc2021Reader(CPSC)


def test_both_readers_are_registered():
    assert READERS.get("icentia11k") is Icentia11kReader
    assert READERS.get("cpsc2021") is Cpsc2021Reader


# --- real CPSC 2021 files -------------------------------------------------------------------


def test_cpsc_lists_18_records_of_6_patients(cpsc):
    recs = cpsc.records()
    assert len(recs) == 18
    assert {r.patient_id for r in recs} == {"8", "21", "35", "84", "92", "101"}
    assert collections.Counter(r.patient_id for r in recs) == {
        p: 3 for p in ("8", "21", "35", "84", "92", "101")
    }
    for r in recs:
        m = re.fullmatch(r"data_(\d+)_(\d+)", r.record_id)
        assert m and m.group(1) == r.patient_id
        assert r.fs == 200.0 and r.lead_names == ("I", "II")
        assert r.n_samples == wfdb.rdheader(str(CPSC / r.record_id)).sig_len


def _header_scaling(hea: Path) -> tuple[int, list[float], list[float]]:
    """(n_samples, gains, baselines) parsed from the header text, without wfdb."""
    lines = [ln for ln in hea.read_text().splitlines() if ln and not ln.startswith("#")]
    n_samples = int(lines[0].split()[3])
    gains, baselines = [], []
    for ln in lines[1:]:
        m = re.fullmatch(r"([-\d.eE+]+)\((-?\d+)\)/mV", ln.split()[2])
        assert m, ln
        gains.append(float(m.group(1)))
        baselines.append(float(m.group(2)))
    return n_samples, gains, baselines


@pytest.mark.parametrize("record_id", ["data_101_6", "data_8_4", "data_35_4"])
def test_cpsc_signal_is_the_dat_file_in_millivolts(cpsc, record_id):
    rec = next(r for r in cpsc.records() if r.record_id == record_id)
    sig = cpsc.read(rec)
    n, gains, baselines = _header_scaling(CPSC / f"{record_id}.hea")
    raw = np.fromfile(CPSC / f"{record_id}.dat", dtype="<i2").reshape(-1, 2).T
    assert sig.data.dtype == np.float32
    assert sig.data.shape == (2, n) == raw.shape
    assert sig.fs == 200.0 and sig.lead_names == ("I", "II")
    expected = (raw - np.array(baselines)[:, None]) / np.array(gains)[:, None]
    np.testing.assert_allclose(sig.data, expected, rtol=1e-5, atol=1e-5)


def test_cpsc_annotations_match_rdann(cpsc):
    for rec in cpsc.records():
        ann = cpsc.read_annotations(rec)
        ref = wfdb.rdann(str(CPSC / rec.record_id), "atr")
        beat = np.array([s != "+" for s in ref.symbol])
        np.testing.assert_array_equal(ann.samples, ref.sample[beat])
        assert ann.symbols.tolist() == [s for s in ref.symbol if s != "+"]
        assert ann.fs == 200.0 and ann.n_samples == rec.n_samples
        changes = [a for s, a in zip(ref.symbol, ref.aux_note, strict=True) if s == "+"]
        # every rhythm change opens a zone, except one sitting on the record's last sample+1
        assert len(ann.rhythms) <= len(changes)
        assert [f"({r.name}" for r in ann.rhythms] == changes[: len(ann.rhythms)]


def test_cpsc_rhythm_zones_of_known_records(cpsc):
    recs = {r.record_id: r for r in cpsc.records()}
    zones = cpsc.read_annotations(recs["data_101_6"]).rhythms
    assert zones[0] == RhythmInterval(3132, 5639, "AFIB")
    assert zones[1] == RhythmInterval(5639, 8468, "N")
    # '(N' at sample 22355 == the record's length: the last AF episode runs to the end
    assert zones[-1] == RhythmInterval(21303, 22355, "AFIB")
    assert cpsc.read_annotations(recs["data_84_1"]).rhythms == (
        RhythmInterval(0, 103807, "AFIB"),
        RhythmInterval(103807, 103808, "N"),
    )
    assert cpsc.read_annotations(recs["data_21_7"]).rhythms == ()


def test_cpsc_af_type_labels(cpsc):
    recs = cpsc.records()
    y = cpsc.label_matrix(recs)
    assert y.shape == (18, 3) and (y.sum(axis=1) == 1).all()
    assert y.sum(axis=0).tolist() == [6, 6, 6]
    by_patient = {r.patient_id: cpsc.classes_of(r, "af_type") for r in recs}
    assert by_patient["21"] == {"non-AF"} and by_patient["84"] == {"persistent-AF"}
    with pytest.raises(ConfigError, match="no label set 'af'"):
        cpsc.classes_of(recs[0], "af")
    with pytest.raises(ConfigError, match="label set 'rhythm' labels frames, not records"):
        cpsc.classes_of(recs[0], "rhythm")


def test_cpsc_frames_inside_an_af_episode_are_afib(cpsc):
    rec = next(r for r in cpsc.records() if r.record_id == "data_101_6")
    ann = cpsc.read_annotations(rec)
    labels = frame_labels(ann, [3200, 12000, 6000], 1000, 200.0)
    assert [RHYTHM_CLASSES[i] for i in labels["rhythm"]] == ["afib", "afib", "normal"]


# --- Icentia11k layout fixture --------------------------------------------------------------

FS = 250
N = 30 * FS
BEATS = np.arange(100, N - 100, 200)  # 75 bpm


def _write_segment(root: Path, patient: str, seg: int, fs: int = FS, atr: bool = True) -> Path:
    folder = root / patient[:3] / patient
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{patient}_s{seg:02d}"
    t = np.arange(N) / fs
    x = 0.8 * np.sin(2 * np.pi * 1.25 * t) + 0.05 * seg
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"],
        sig_name=["ecg"],
        p_signal=x[:, None],
        fmt=["16"],
        adc_gain=[(2**15 - 1) * 6 / (0.9375 * 2820)],  # the release's gain
        baseline=[0],
        write_dir=str(folder),
    )
    if atr:
        # the release's conventions: '+' '(N' on a zone's first beat, ')' on its last,
        # '(AFL)' for a one-beat zone, nothing for noise
        samples, symbols, notes = [], [], []
        for i, b in enumerate(BEATS):
            sym = {5: "S", 6: "V", 30: "Q"}.get(i, "N")
            samples.append(int(b))
            symbols.append(sym)
            notes.append("")
            note = {0: "(N", 9: ")", 10: "(AFIB", 19: ")", 25: "(AFL)"}.get(i)
            if note:
                samples.append(int(b))
                symbols.append("+")
                notes.append(note)
        wfdb.wrann(
            name,
            "atr",
            np.array(samples),
            symbol=symbols,
            aux_note=notes,
            fs=fs,
            write_dir=str(folder),
        )
    return folder / name


@pytest.fixture()
def icentia_root(tmp_path) -> Path:
    root = tmp_path / "icentia11k"
    _write_segment(root, "p00012", 0)
    _write_segment(root, "p00012", 1, atr=False)  # segment without annotations
    _write_segment(root, "p01003", 0)
    _write_segment(root, "p01003", 1, fs=200)  # header at another rate
    truncated = _write_segment(root, "p01003", 2).with_suffix(".dat")
    truncated.write_bytes(truncated.read_bytes()[: N // 2])
    (root / "RECORDS").write_text("p00/p00012/\np01/p01003/\n")  # extra files are fine
    return root


def test_icentia_lists_segments_by_patient(icentia_root):
    recs = Icentia11kReader(icentia_root).records()
    assert [r.record_id for r in recs] == [
        "p00012_s00",
        "p00012_s01",
        "p01003_s00",
        "p01003_s01",
        "p01003_s02",
    ]
    assert [r.patient_id for r in recs] == ["p00012"] * 2 + ["p01003"] * 3
    assert all(r.fs == 250.0 and r.lead_names == ("ecg",) for r in recs)
    assert recs[1].meta == {"segment": 1}


def test_icentia_reads_signal_in_millivolts(icentia_root):
    reader = Icentia11kReader(icentia_root)
    rec = reader.records()[0]
    sig = reader.read(rec)
    assert sig.data.shape == (1, N) and sig.data.dtype == np.float32
    assert sig.fs == 250.0 and sig.lead_names == ("ecg",)
    t = np.arange(N) / FS
    np.testing.assert_allclose(sig.data[0], 0.8 * np.sin(2 * np.pi * 1.25 * t), atol=0.01)


def test_icentia_annotations_follow_the_release_conventions(icentia_root):
    reader = Icentia11kReader(icentia_root)
    ann = reader.read_annotations(reader.records()[0])
    np.testing.assert_array_equal(ann.samples, BEATS)
    assert collections.Counter(ann.symbols.tolist()) == {
        "N": len(BEATS) - 3,
        "S": 1,
        "V": 1,
        "Q": 1,
    }
    assert ann.rhythms == (
        RhythmInterval(int(BEATS[0]), int(BEATS[9]) + 1, "N"),
        RhythmInterval(int(BEATS[10]), int(BEATS[19]) + 1, "AFIB"),
        RhythmInterval(int(BEATS[25]), int(BEATS[25]) + 1, "AFL"),
    )
    assert ann.fs == 250.0 and ann.n_samples == N and ann.record_id == "p00012_s00"


def test_icentia_bad_records(icentia_root):
    reader = Icentia11kReader(icentia_root)
    recs = {r.record_id: r for r in reader.records()}
    # no .atr: the signal is usable, the annotations are not
    assert reader.read(recs["p00012_s01"]).data.shape == (1, N)
    with pytest.raises(BadRecord, match=r"p00012_s01: annotation file .*\.atr is missing"):
        reader.read_annotations(recs["p00012_s01"])
    with pytest.raises(BadRecord, match="truncated") as e:
        reader.read(recs["p01003_s02"])
    assert e.value.record_id == "p01003_s02"
    with pytest.raises(BadRecord, match="sampling rate 200.0 Hz, header promises 250.0 Hz"):
        reader.read(recs["p01003_s01"])
    (icentia_root / "p00" / "p00012" / "p00012_s00.dat").unlink()
    with pytest.raises(BadRecord, match=r"signal file .*p00012_s00\.dat is missing"):
        reader.read(recs["p00012_s00"])


def test_icentia_has_no_record_level_labels(icentia_root):
    reader = Icentia11kReader(icentia_root)
    with pytest.raises(ConfigError, match="no record-level label sets"):
        reader.label_matrix(reader.records())


def _empty(tmp: Path) -> Path:
    (tmp / "root").mkdir()
    return tmp / "root"


def _patient_folder_as_root(tmp: Path) -> Path:
    return _write_segment(tmp / "root", "p00012", 0).parent


def _patient_in_wrong_group(tmp: Path) -> Path:
    _write_segment(tmp / "root", "p00012", 0)
    (tmp / "root" / "p01").mkdir()
    (tmp / "root" / "p00" / "p00012").rename(tmp / "root" / "p01" / "p00012")
    return tmp / "root"


def _no_headers(tmp: Path) -> Path:
    (tmp / "root" / "p00" / "p00012").mkdir(parents=True)
    return tmp / "root"


@pytest.mark.parametrize(
    "make, message",
    [
        (_empty, r"expected folders pXX/pXXXXX/ with pXXXXX_sYY.hea under .*, found nothing"),
        (_patient_folder_as_root, r"expected folders pXX/pXXXXX/.*found \['p00012_s00.atr'"),
        (_patient_in_wrong_group, r"p01/p00012 is not a patient folder of group p01"),
        (_no_headers, r"p00012 holds no p00012_sYY.hea segment header"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_icentia_wrong_layout_fails_at_once(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        Icentia11kReader(make(tmp_path))


def test_each_reader_rejects_the_other_layout(icentia_root, tmp_path):
    with pytest.raises(DataError, match="cpsc2021: expected data_<patient>_<n>.hea"):
        Cpsc2021Reader(icentia_root)
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in (icentia_root / "p00" / "p00012").iterdir():
        (flat / f.name.replace("p00012_s", "data_12_")).write_bytes(f.read_bytes())
    with pytest.raises(DataError, match="icentia11k: expected folders"):
        Icentia11kReader(flat)
    with pytest.raises(DataError, match="is not a directory"):
        Cpsc2021Reader(tmp_path / "missing")


# --- annotation parsing rules ---------------------------------------------------------------


def _parse(samples, symbols, notes, n=1000):
    return parse_annotations("r1", np.array(samples), symbols, notes, 250.0, n)


def test_parse_rhythm_changes_close_the_open_zone():
    ann = _parse(
        [0, 10, 100, 110, 500, 990],
        ["+", "N", "+", "N", "N", "+"],
        ["(AFIB", "", "(N", "", "", ")"],
    )
    assert ann.rhythms == (
        RhythmInterval(0, 100, "AFIB"),
        RhythmInterval(100, 991, "N"),
    )
    open_to_end = _parse([5, 6], ["+", "N"], ["(AFL", ""])
    assert open_to_end.rhythms == (RhythmInterval(5, 1000, "AFL"),)


@pytest.mark.parametrize(
    "samples, symbols, notes, message",
    [
        ([5], ["+"], [")"], r"rhythm end '\)' at sample 5 closes no rhythm"),
        ([5], ["+"], ["AFIB"], "aux note 'AFIB'; expected"),
        ([5], ["~"], [""], "symbol '~' at sample 5 is neither a beat"),
        ([1000], ["N"], [""], "beat at sample 1000 lies past the record's 1000 samples"),
        ([1001], ["+"], ["(N"], "annotation at sample 1001 lies outside"),
        ([9, 5], ["N", "N"], ["", ""], "not sorted"),
    ],
)
def test_parse_errors_name_record_and_rule(samples, symbols, notes, message):
    with pytest.raises(BadRecord, match=message) as e:
        _parse(samples, symbols, notes)
    assert e.value.record_id == "r1"
