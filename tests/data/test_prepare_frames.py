"""The prepared cache's label kinds, frames and per-sample targets: CPSC 2019 and CPSC 2021
on ../shared/realdata, Icentia11k on a fixture in the PhysioNet layout (wfdb.wrsamp /
wfdb.wrann), CPSC 2019's layout written with scipy.io.savemat; streaming; old caches."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb

from study.data import PreparedDataset, prepare
from study.data.config import DatasetConfig
from study.data.frames import frame_starts, qrs_half_width
from study.data.pretext import BEAT_CLASSES, HR_CLASSES, RHYTHM_CLASSES, frame_labels
from study.data.readers import BadRecord
from study.data.readers.icentia11k import Cpsc2021Reader, Icentia11kReader
from study.errors import ConfigError, DataError
from tests.data.readers.test_cpsc2019 import GOOD_PEAKS, write_cpsc2019


def windows(beats: np.ndarray, length: int, half: int) -> np.ndarray:
    """The mask the contract promises: 1 within `half` samples of a beat, by brute force."""
    t = np.arange(length)[:, None]
    return (np.abs(t - np.asarray(beats)[None, :]) <= half).any(axis=1).astype(np.uint8)


# --- CPSC 2019: per-sample targets of whole records -----------------------------------------


@pytest.fixture(scope="module")
def cpsc2019(realdata, tmp_path_factory) -> PreparedDataset:
    cfg = DatasetConfig(source=str(realdata / "cpsc2019"))
    return PreparedDataset(prepare("cpsc2019", tmp_path_factory.mktemp("cache"), cfg))


def test_cpsc2019_real_files_prepare_as_per_sample_qrs(cpsc2019, realdata):
    d = cpsc2019
    assert d.signals.shape == (50, 1, 5000) and d.meta["fs"] == 500.0
    assert (d.label_kind, d.input_kind, d.input_shape) == ("per_sample", "signal", (1, 5000))
    assert d.classes == ["qrs"] and d.labels.shape == (50, 1) and d.labels.all()
    assert d.targets.shape == (50, 5000) and d.targets.dtype == np.uint8
    assert d.n_samples == 5000 and d.in_channels == 1
    assert d.records.patient_id.tolist() == d.records.record_id.tolist()
    assert "no patient ids" in d.meta["report"]["caveats"][0]
    half = qrs_half_width(500.0)
    assert half == 25  # 50 ms at 500 Hz
    idx = np.arange(50)
    for i, (rid, beats) in enumerate(zip(d.records.record_id, d.beats(idx), strict=True)):
        ref = scipy.io.loadmat(realdata / "cpsc2019" / "ref" / f"R_{rid[5:]}.mat")["R_peak"]
        np.testing.assert_array_equal(beats, ref.ravel().astype(np.int64))
        np.testing.assert_array_equal(d.targets[i], windows(beats, 5000, half))
        mat = scipy.io.loadmat(realdata / "cpsc2019" / "data" / f"{rid}.mat")
        np.testing.assert_allclose(d.signals[i, 0], mat["ecg"][:, 0], rtol=1e-6)
    x, y = d.split(np.array([3, 1])).arrays()
    assert x.shape == (2, 1, 5000) and y.shape == (2, 5000) and y.dtype == np.float32
    np.testing.assert_array_equal(y, d.targets[[1, 3]])


def test_cpsc2019_bad_records_are_listed_or_fail(tmp_path):
    root = tmp_path / "cpsc2019"
    for n in range(1, 13):
        write_cpsc2019(root, n, GOOD_PEAKS + n)
    write_cpsc2019(root, 13, None)  # no reference file
    write_cpsc2019(root, 14, [100, 2000, 5000])  # an R peak outside the record
    d = PreparedDataset(prepare("cpsc2019", tmp_path / "c1", DatasetConfig(source=str(root))))
    bad = {b["record_id"]: b["reason"] for b in d.meta["report"]["bad_records"]}
    assert set(bad) == {"data_00013", "data_00014"}
    assert "R_00013.mat is missing" in bad["data_00013"]
    assert "R_peak 5000 lies outside the record's 5000 samples" in bad["data_00014"]
    # the arrays were sized for 14 records and cut to the 12 written
    assert d.signals.shape == (12, 1, 5000) and d.targets.shape == (12, 5000)
    assert (d.path / "signals.npy").stat().st_size == d.signals.offset + 12 * 5000 * 4
    with pytest.raises(BadRecord, match="data_00013"):
        prepare(
            "cpsc2019",
            tmp_path / "c2",
            DatasetConfig(source=str(root), on_bad_record="fail"),
        )


def test_cpsc2019_targets_follow_resampling_and_a_centre_crop(tmp_path):
    root = tmp_path / "cpsc2019"
    for n in range(1, 11):
        write_cpsc2019(root, n, GOOD_PEAKS + 7 * n)  # spikes on the peaks
    cfg = DatasetConfig(source=str(root), preprocessing={"fs": 250, "length": 2000})
    d = PreparedDataset(prepare("cpsc2019", tmp_path / "c", cfg))
    assert d.signals.shape == (10, 1, 2000) and d.meta["fs"] == 250.0
    offset = (2500 - 2000) // 2  # "center" keeps [(n - length) // 2, ... + length)
    for i, beats in enumerate(d.beats(np.arange(10))):
        n = int(d.records.record_id[i][5:])
        expected = np.floor((GOOD_PEAKS + 7 * n) / 2 - offset + 0.5)
        np.testing.assert_array_equal(beats, expected[(expected >= 0) & (expected < 2000)])
        # the spikes sit where the beats say (to a sample: resampling smears a 1-sample spike)
        x = d.signals[i, 0]
        found = [b - 2 + int(np.argmax(x[max(0, b - 2) : b + 3])) for b in beats if b >= 2]
        assert np.abs(np.array(found) - beats[beats >= 2]).max() <= 1
        inner = (GOOD_PEAKS + 7 * n) / 2 - offset
        np.testing.assert_array_equal(d.targets[i], windows(np.floor(inner + 0.5), 2000, 13))
    with pytest.raises(ConfigError, match="crop 'start' or 'center' only"):
        prepare(
            "cpsc2019",
            tmp_path / "c",
            DatasetConfig(source=str(root), preprocessing={"length": 4000, "crop": "random-fixed"}),
        )


# --- CPSC 2021: frames of the real records ---------------------------------------------------


def test_cpsc2021_frames_carry_weimann_and_conrads_labels(realdata):
    from study.data.sources import dataset_source

    src = realdata / "cpsc2021"
    reader = Cpsc2021Reader(src)
    recs = {r.record_id: r for r in reader.records()}
    pre = {"fs": 250}
    names = {}
    for label_set, key, classes in (
        ("beat", "beat", BEAT_CLASSES),
        ("rhythm", "rhythm", RHYTHM_CLASSES),
        ("heart_rate", "hr", HR_CLASSES),
    ):
        cfg = DatasetConfig(
            source=str(src),
            label_set=label_set,
            options={"frames_per_record": 4},
            preprocessing=pre,
        )
        source = dataset_source("cpsc2021").open(cfg, progress=False)
        assert source.classes == classes and source.label_kind == "single_label"
        rows = list(source.rows)
        assert len(rows) == 18 and source.report["records_kept"] == 18
        for r in rows:
            rec = recs[r.record_id]
            assert r.patient_id == rec.record_id.split("_")[1]  # data_<patient>_<n>
            assert r.x.shape == (4, 2, 2048) and r.fs == 250.0
            n = int(np.floor(rec.n_samples * 250 / 200))
            np.testing.assert_array_equal(r.frame_start, frame_starts(n, 2048, 4))
            ann = reader.read_annotations(rec)
            expected = frame_labels(
                ann, r.frame_start, 2048, 250.0, Cpsc2021Reader.beat_symbol_classes
            )[key]
            assert (r.labels.sum(axis=1) == 1).all()  # one-hot
            np.testing.assert_array_equal(r.labels.argmax(axis=1), expected)
            names[label_set, r.record_id] = [classes[i] for i in r.labels.argmax(axis=1)]
    # by hand: data_84_1 is AF from start to end; data_21_7 has no rhythm annotation at all
    assert names["rhythm", "data_84_1"] == ["afib"] * 4
    assert names["rhythm", "data_21_7"] == ["noise"] * 4


def _copy_cpsc2021_with_more_patients(src: Path, dest: Path) -> Path:
    """The 18 real records plus a copy of each under patient <p> + 1000: 12 patients, enough
    for ten patient-level folds (the sample holds 6)."""
    dest.mkdir()
    for f in src.iterdir():
        shutil.copy(f, dest / f.name)
        _, p, n = f.stem.split("_")
        twin = f"data_{int(p) + 1000}_{n}"
        if f.suffix == ".hea":
            (dest / f"{twin}.hea").write_text(f.read_text().replace(f.stem, twin))
        else:
            shutil.copy(f, dest / f"{twin}{f.suffix}")
    return dest


@pytest.fixture(scope="module")
def cpsc2021_twelve(realdata, tmp_path_factory) -> Path:
    return _copy_cpsc2021_with_more_patients(
        realdata / "cpsc2021", tmp_path_factory.mktemp("src") / "cpsc2021"
    )


def test_cpsc2021_rhythm_frames_through_the_cache(cpsc2021_twelve, tmp_path):
    cfg = DatasetConfig(
        source=str(cpsc2021_twelve), label_set="rhythm", options={"frames_per_record": 3}
    )
    d = PreparedDataset(prepare("cpsc2021", tmp_path, cfg))
    assert d.label_kind == "single_label" and d.classes == list(RHYTHM_CLASSES)
    assert d.signals.shape == (36 * 3, 2, 2048) and d.meta["fs"] == 200.0
    assert (d.labels.sum(axis=1) == 1).all()
    rec = d.records
    assert rec.groupby("record_id").frame_start.count().eq(3).all()
    assert not rec.duplicated(["record_id", "frame_start"]).any()
    # a patient's frames share one fold: the split stays patient-level
    assert rec.groupby("patient_id").fold.nunique().eq(1).all()
    assert d.meta["n_patients"] == 12 and d.targets is None
    assert d.meta["report"]["frames"]["frame_len"] == 2048
    with pytest.raises(DataError, match="only per-sample datasets have beats"):
        d.beats([0])
    x, y = d.split([0, 1]).arrays()
    assert y.shape == (2, len(RHYTHM_CLASSES))


def test_cpsc2021_qrs_frames_and_frames_that_do_not_fit(cpsc2021_twelve, realdata, tmp_path):
    cfg = DatasetConfig(
        source=str(cpsc2021_twelve),
        label_set="qrs",
        options={"frame_len": 10000, "frames_per_record": 2},
    )
    d = PreparedDataset(prepare("cpsc2021", tmp_path, cfg))
    bad = {b["record_id"]: b["reason"] for b in d.meta["report"]["bad_records"]}
    # data_8_4 (8235 samples) and data_92_12 (9779) and their twins hold no 10000-sample frame
    assert set(bad) == {"data_8_4", "data_92_12", "data_1008_4", "data_1092_12"}
    assert "8235 samples at 200 Hz, shorter than one frame of 10000" in bad["data_8_4"]
    assert d.label_kind == "per_sample" and d.targets.shape == (32 * 2, 10000)
    reader = Cpsc2021Reader(realdata / "cpsc2021")
    recs = {r.record_id: r for r in reader.records()}
    half = qrs_half_width(200.0)
    for i in np.flatnonzero(d.records.record_id.isin(recs)):  # the originals, not twins
        row = d.records.iloc[i]
        ann = reader.read_annotations(recs[row.record_id])
        s = int(row.frame_start)
        inside = ann.samples[(ann.samples >= s) & (ann.samples < s + 10000)] - s
        np.testing.assert_array_equal(d.beats([i])[0], inside)
        np.testing.assert_array_equal(d.targets[i], windows(ann.samples - s, 10000, half))


# --- Icentia11k: frames of a fixture in the PhysioNet layout ---------------------------------

FS = 250
SYMBOL_AT = {5: "S", 6: "V", 30: "Q"}


def write_segment(root: Path, patient: str, seg: int, n: int, symbols=SYMBOL_AT) -> None:
    """pXX/pXXXXX/pXXXXX_sYY.{hea,dat,atr} as the release writes them: one lead "ecg" at
    250 Hz, a beat every 200 samples (75 bpm), rhythm zones N (beats 0-9), AFIB (10-19) and
    a one-beat AFL (25)."""
    folder = root / patient[:3] / patient
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{patient}_s{seg:02d}"
    t = np.arange(n) / FS
    x = 0.8 * np.sin(2 * np.pi * 1.25 * t) + 0.01 * int(patient[1:])
    wfdb.wrsamp(
        name,
        fs=FS,
        units=["mV"],
        sig_name=["ecg"],
        p_signal=x[:, None],
        fmt=["16"],
        adc_gain=[200.0],
        baseline=[0],
        write_dir=str(folder),
    )
    samples, syms, notes = [], [], []
    for i, b in enumerate(range(100, n - 100, 200)):
        samples.append(b)
        syms.append(symbols.get(i, "N"))
        notes.append("")
        note = {0: "(N", 9: ")", 10: "(AFIB", 19: ")", 25: "(AFL)"}.get(i)
        if note:
            samples.append(b)
            syms.append("+")
            notes.append(note)
    wfdb.wrann(
        name, "atr", np.array(samples), symbol=syms, aux_note=notes, fs=FS, write_dir=str(folder)
    )


@pytest.fixture()
def icentia_root(tmp_path) -> Path:
    root = tmp_path / "icentia11k"
    for p in range(11):
        write_segment(root, f"p{p // 10:02d}{p:03d}", 0, 30 * FS)
    write_segment(root, "p00001", 1, 30 * FS, symbols={3: "A"})  # 'A': no Icentia11k class
    write_segment(root, "p00002", 1, 1500)  # shorter than one frame
    return root


def test_icentia11k_beat_frames(icentia_root, tmp_path):
    cfg = DatasetConfig(
        source=str(icentia_root), label_set="beat", options={"frames_per_record": 3}
    )
    d = PreparedDataset(prepare("icentia11k", tmp_path, cfg))
    bad = {b["record_id"]: b["reason"] for b in d.meta["report"]["bad_records"]}
    assert set(bad) == {"p00001_s01", "p00002_s01"}
    assert "beat symbols ['A'] have no beat class" in bad["p00001_s01"]
    assert "1500 samples at 250 Hz, shorter than one frame of 2048" in bad["p00002_s01"]
    assert d.signals.shape == (33, 1, 2048) and d.meta["fs"] == 250.0
    rec = d.records
    assert set(rec.patient_id) == {f"p{p // 10:02d}{p:03d}" for p in range(11)}
    assert (rec.patient_id + "_s00" == rec.record_id).all()
    # starts: floor((2k + 1) * (7500 - 2048) / 6) = 908, 2726, 4543
    assert rec.frame_start[:3].tolist() == [908, 2726, 4543]
    # by hand: frame [908, 2956) holds complete beats 6..14 with the PVC at 6; frame
    # [4543, 6591) beats 24..32 with one Q among N
    first = [BEAT_CLASSES[i] for i in d.labels[:3].argmax(axis=1)]
    assert first[0] == "pvc" and first[2] == "normal"
    reader = Icentia11kReader(icentia_root)
    ann = reader.read_annotations(reader.records()[0])
    expected = frame_labels(ann, [908, 2726, 4543], 2048, 250.0)["beat"]
    np.testing.assert_array_equal(d.labels[:3].argmax(axis=1), expected)
    # the frames are the record's samples
    sig = reader.read(reader.records()[0])
    np.testing.assert_array_equal(d.signals[1, 0], sig.data[0, 2726 : 2726 + 2048])


def test_icentia11k_rhythm_and_heart_rate_frames(icentia_root, tmp_path):
    rhythm = PreparedDataset(
        prepare(
            "icentia11k",
            tmp_path,
            DatasetConfig(
                source=str(icentia_root), label_set="rhythm", options={"frames_per_record": 3}
            ),
        )
    )
    # frame 0 overlaps N and AFIB (AFIB outranks), frame 2 holds the one-beat AFL
    assert [RHYTHM_CLASSES[i] for i in rhythm.labels[:3].argmax(axis=1)] == [
        "afib",
        "afib",
        "aflut",
    ]
    # pretext.frame_labels labels the three tasks at once: an unknown beat symbol makes the
    # record bad for the rhythm set too
    assert [b["record_id"] for b in rhythm.meta["report"]["bad_records"]] == [
        "p00001_s01",
        "p00002_s01",
    ]
    hr = PreparedDataset(
        prepare(
            "icentia11k",
            tmp_path,
            DatasetConfig(
                source=str(icentia_root), label_set="heart_rate", preprocessing={"fs": 125}
            ),
        )
    )
    assert hr.meta["fs"] == 125.0 and hr.input_shape == (1, 2048)
    # 30 s at 125 Hz is 3750 samples: 8 frames of 2048 (overlapping); 75 bpm is normal
    assert hr.meta["report"]["frames"]["frames_per_record"] == 8
    assert {HR_CLASSES[i] for i in hr.labels.argmax(axis=1)} == {"normal"}


def test_icentia11k_qrs_frames(icentia_root, tmp_path):
    cfg = DatasetConfig(
        source=str(icentia_root),
        label_set="qrs",
        options={"frame_len": 1000, "frames_per_record": 2},
    )
    d = PreparedDataset(prepare("icentia11k", tmp_path, cfg))
    assert d.label_kind == "per_sample" and d.targets.shape == (d.signals.shape[0], 1000)
    beats_all = np.arange(100, 30 * FS - 100, 200)
    for i in range(4):
        s = int(d.records.frame_start[i])
        inside = beats_all[(beats_all >= s) & (beats_all < s + 1000)] - s
        np.testing.assert_array_equal(d.beats([i])[0], inside)
        np.testing.assert_array_equal(d.targets[i], windows(beats_all - s, 1000, 13))


@pytest.mark.parametrize(
    "config, error, message",
    [
        (
            {"label_set": "beat", "preprocessing": {"length": 1000}},
            ConfigError,
            r"beat frames are 2048 samples long \(option frame_len\); preprocessing.length 1000",
        ),
        (
            {"label_set": "beat", "options": {"frame_len": 0}},
            ConfigError,
            "option frame_len must be an integer >= 1, got 0",
        ),
        (
            {"label_set": "beat", "options": {"frame_size": 8}},
            ConfigError,
            r"unknown reader options \['frame_size'\]; valid: \['frame_len', 'frames_per_record'\]",
        ),
        ({"label_set": "af"}, ConfigError, "unknown label set 'af'; known: beat, rhythm"),
    ],
)
def test_frame_options_are_checked(icentia_root, tmp_path, config, error, message):
    with pytest.raises(error, match=message):
        prepare("icentia11k", tmp_path, DatasetConfig(source=str(icentia_root), **config))


def test_frame_options_of_a_record_level_set_are_refused(realdata, tmp_path):
    cfg = DatasetConfig(
        source=str(realdata / "cpsc2021"), label_set="af_type", options={"frame_len": 512}
    )
    with pytest.raises(ConfigError, match=r"options \['frame_len'\] cut frames.*not 'af_type'"):
        prepare("cpsc2021", tmp_path, cfg)


def test_preprocessing_length_equal_to_frame_len_is_accepted(icentia_root, tmp_path):
    cfg = DatasetConfig(
        source=str(icentia_root),
        label_set="beat",
        options={"frames_per_record": 1},
        preprocessing={"length": 2048},
    )
    assert PreparedDataset(prepare("icentia11k", tmp_path, cfg)).input_shape == (1, 2048)


# --- streaming ------------------------------------------------------------------------------


def test_preparation_streams_instead_of_holding_the_dataset(tmp_path):
    root = tmp_path / "icentia11k"
    for p in range(10):
        for seg in range(2):
            write_segment(root, f"p00{p:03d}", seg, 5 * 60 * FS)
    cfg = DatasetConfig(source=str(root), label_set="qrs", options={"frames_per_record": 256})
    tracemalloc.start()
    try:
        path = prepare("icentia11k", tmp_path / "cache", cfg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    d = PreparedDataset(path)
    assert d.signals.shape == (20 * 256, 1, 2048)
    written = (path / "signals.npy").stat().st_size + (path / "targets.npy").stat().st_size
    assert written > 50e6
    # what one record's frames take (signals float32 + targets uint8): 2.6 MB of the 52 MB
    one_record = 256 * 2048 * (4 + 1)
    assert peak < 3 * one_record < written / 6, (peak, one_record, written)


# --- other label kinds and older caches -----------------------------------------------------


def test_single_label_sets_of_record_datasets():
    from study.data.readers import READERS

    assert set(READERS.get("cinc2017").label_kinds.values()) == {"single_label"}
    assert READERS.get("cpsc2021").label_kinds["af_type"] == "single_label"
    assert READERS.get("ptbxl").label_kinds == {}  # multi-label, the default


def test_a_cache_without_label_kind_reads_as_multi_label(tmp_path):
    path = prepare("synth_tiny", tmp_path)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["label_kind"] == "multi_label" and meta["input_kind"] == "signal"
    for key in ("label_kind", "input_kind", "input_shape"):
        del meta[key]
    (path / "meta.json").write_text(json.dumps(meta))
    d = PreparedDataset(path)
    assert (d.label_kind, d.input_kind) == ("multi_label", "signal")
    assert d.input_shape == d.signals.shape[1:] and d.targets is None
    x, y = d.split(np.arange(3)).arrays()
    assert y.shape == (3, len(d.classes))
    with pytest.raises(DataError, match="only per-sample datasets have beats"):
        d.beats([0])


def _source(shapes, kind="multi_label"):
    from study.data.records import Rows, RowSource

    def rows():
        for i, shape in enumerate(shapes):
            yield Rows(
                f"r{i}",
                f"p{i}",
                np.ones((1, *shape), np.float32),
                np.ones((1, 1), np.uint8),
                100.0,
                ("I",),
            )

    return RowSource(("a",), kind, len(shapes), rows())


def test_images_are_written_with_the_shape_of_the_first_record(tmp_path):
    from study.data.prepared import _write

    out = tmp_path / "img"
    out.mkdir()
    _write(_source([(3, 8, 8)] * 12), "synth_tiny", out, DatasetConfig(), None)
    d = PreparedDataset(out)
    assert d.input_kind == "image" and d.input_shape == (3, 8, 8) and d.in_channels == 3
    assert d.n_samples == 8  # the width: a scalogram's time axis
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(DataError, match=r"record r1 prepares to shape \(3, 8, 9\), earlier"):
        _write(_source([(3, 8, 8), (3, 8, 9)]), "synth_tiny", bad, DatasetConfig(), None)
