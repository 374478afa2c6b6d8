"""The CinC 2020/2021 readers (cpsc2018, georgia, chapman) and the original CPSC 2018 reader.

Real records come from ../shared/realdata; bad records are fixtures written in the exact
CinC on-disk format: the header by wfdb's header writer (the one `wfdb.wrsamp` uses) with the
'# Age/Sex/Dx' comments, the signal as a MATLAB v4 int16 matrix `val` at byte offset 24.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb

from study.data.readers import READERS, STANDARD_LEADS, BadRecord
from study.data.readers.cinc import (
    ChapmanReader,
    CincReader,
    Cpsc2018Reader,
    GeorgiaReader,
    _parse_header,
    standard_lead_name,
)
from study.data.readers.cpsc2018_original import Cpsc2018OriginalReader
from study.errors import ConfigError, DataError

REALDATA = Path(__file__).parents[3].parent / "shared" / "realdata"
CINC2021 = REALDATA / "cinc2021"
CPSC2018 = REALDATA / "cpsc2018"
needs_cinc2021 = pytest.mark.skipif(
    not CINC2021.is_dir(), reason=f"real CinC 2021 samples not found at {CINC2021}"
)


# --- fixtures in the on-disk format ------------------------------------------------------


def ecg_like(n_leads: int = 12, n_samples: int = 5000, seed: int = 0) -> np.ndarray:
    """int16 (leads, samples) in microvolt steps (gain 1000/mV), a beat-like waveform."""
    t = np.arange(n_samples) / 500.0
    rng = np.random.default_rng(seed)
    beats = np.exp(-(((t % 0.8) - 0.4) ** 2) / 2e-4)  # a narrow spike every 0.8 s
    x = np.stack(
        [(0.5 + 0.1 * k) * beats + 0.02 * rng.standard_normal(n_samples) for k in range(n_leads)]
    )
    return np.round(x * 1000).astype(np.int16)


def write_cinc(
    folder: Path,
    rid: str,
    digital: np.ndarray | None = None,
    *,
    fs: float = 500,
    leads: tuple[str, ...] = STANDARD_LEADS,
    units: str = "mV",
    gain: float = 1000.0,
    dx: str | None = "426783006",
    age: str = "60",
    sex: str = "Male",
    mat: bool = True,
) -> Path:
    """One CinC record: `<rid>.hea` with comments and `<rid>.mat` (MATLAB v4 int16 'val')."""
    folder.mkdir(parents=True, exist_ok=True)
    d = ecg_like(len(leads)) if digital is None else digital
    n_sig, sig_len = d.shape
    comments = [f"Age: {age}", f"Sex: {sex}"] + ([f"Dx: {dx}"] if dx is not None else [])
    comments += ["Rx: Unknown", "Hx: Unknown", "Sx: Unknown"]
    wide = d.astype(np.int64)
    record = wfdb.Record(
        record_name=rid,
        n_sig=n_sig,
        fs=fs,
        sig_len=sig_len,
        file_name=[f"{rid}.mat"] * n_sig,
        fmt=["16"] * n_sig,
        samps_per_frame=[1] * n_sig,
        byte_offset=[24] * n_sig,
        adc_gain=[gain] * n_sig,
        baseline=[0] * n_sig,
        units=[units] * n_sig,
        adc_res=[16] * n_sig,
        adc_zero=[0] * n_sig,
        init_value=[int(v) for v in wide[:, 0]],
        checksum=[int((s + 2**15) % 2**16 - 2**15) for s in wide.sum(axis=1)],
        block_size=[0] * n_sig,
        sig_name=list(leads),
        comments=comments,
    )
    record.wrheader(write_dir=str(folder))
    if mat:
        scipy.io.savemat(folder / f"{rid}.mat", {"val": d}, format="4")
    return folder / f"{rid}.hea"


def read_one(reader_cls, root: Path, rid: str):
    reader = reader_cls(root)
    (record,) = [r for r in reader.records() if r.record_id == rid]
    return reader.read(record)


def test_fixture_matches_the_real_on_disk_format(tmp_path):
    write_cinc(tmp_path, "E00001")
    header_line = (tmp_path / "E00001.hea").read_text().splitlines()[1].split()
    assert header_line[:3] == ["E00001.mat", "16x1+24", "1000.0(0)/mV"]
    with open(tmp_path / "E00001.mat", "rb") as f:
        head = f.read(24)
    assert np.frombuffer(head[:20], "<i4").tolist() == [30, 12, 5000, 0, 4]
    assert head[20:] == b"val\x00"
    if CINC2021.is_dir():
        with open(CINC2021 / "E07500.mat", "rb") as f:
            assert f.read(24) == head
        real_line = (CINC2021 / "E07500.hea").read_text().splitlines()[1].split()
        assert real_line[1:3] == header_line[1:3]


# --- real CinC 2021 records --------------------------------------------------------------


def header_text(rid: str) -> tuple[list[float], dict[str, str]]:
    """Gains and '# Key: value' comments, parsed from the header's text without wfdb."""
    lines = (CINC2021 / f"{rid}.hea").read_text().splitlines()
    n_sig = int(lines[0].split()[1])
    gains = [float(line.split()[2].split("(")[0].split("/")[0]) for line in lines[1 : 1 + n_sig]]
    comments = {}
    for line in lines:
        if line.startswith("#") and ":" in line:
            key, value = line[1:].split(":", 1)
            comments[key.strip()] = value.strip()
    return gains, comments


def _same_as_wfdb(path: Path) -> None:
    ours = _parse_header(path)
    theirs = wfdb.rdheader(str(path.with_suffix("")))
    assert (ours.record_name, ours.n_sig, ours.fs, ours.sig_len) == (
        theirs.record_name,
        theirs.n_sig,
        theirs.fs,
        theirs.sig_len,
    )
    assert list(ours.file_name) == theirs.file_name
    assert list(ours.fmt) == theirs.fmt
    assert list(ours.byte_offset) == theirs.byte_offset
    assert list(ours.units) == theirs.units
    assert list(ours.sig_name) == theirs.sig_name
    assert list(ours.comments) == theirs.comments


@needs_cinc2021
def test_header_parser_agrees_with_wfdb_on_real_headers():
    for path in sorted(CINC2021.glob("*.hea")):
        _same_as_wfdb(path)


def test_header_parser_agrees_with_wfdb_on_fixtures(tmp_path):
    _same_as_wfdb(write_cinc(tmp_path, "E00001", units="uV", fs=250, dx="1,2"))
    wfdb.wrsamp(
        "100",
        fs=360,
        units=["mV", "mV"],
        sig_name=["MLII", "V5"],
        p_signal=np.zeros((100, 2)),
        fmt=["212", "212"],
        write_dir=str(tmp_path),
    )
    _same_as_wfdb(tmp_path / "100.hea")


@needs_cinc2021
@pytest.mark.parametrize(
    "reader_cls, prefix, count",
    [(GeorgiaReader, "E", 20), (ChapmanReader, "JS", 20), (CincReader, "", 50)],
)
def test_real_records_signal_shape_fs_leads(reader_cls, prefix, count):
    reader = reader_cls(CINC2021)
    records = reader.records()
    assert len(records) == count
    assert all(r.record_id.startswith(prefix) and r.patient_id == r.record_id for r in records)
    for record in records:
        assert (record.fs, record.n_samples, record.lead_names) == (500.0, 5000, STANDARD_LEADS)
        signal = reader.read(record)
        assert signal.data.shape == (12, 5000)
        assert signal.data.dtype == np.float32
        assert signal.fs == 500.0
        assert signal.lead_names == STANDARD_LEADS


@needs_cinc2021
@pytest.mark.parametrize("rid", ["E07500", "HR06000", "JS20000"])  # HR06000 spells it 'mv'
def test_real_signal_is_mat_values_over_header_gain(rid):
    gains, _ = header_text(rid)
    raw = scipy.io.loadmat(CINC2021 / f"{rid}.mat")["val"]
    expected = raw / np.asarray(gains)[:, None]
    signal = read_one(CincReader, CINC2021, rid)
    np.testing.assert_allclose(signal.data, expected, rtol=1e-6, atol=1e-6)
    for lead, sample in [(0, 0), (1, 100), (6, 2500), (11, 4999)]:
        assert signal.data[lead, sample] == pytest.approx(raw[lead, sample] / gains[lead])
    assert 0.05 < np.abs(signal.data).max() < 20  # millivolts, not microvolts or ADC units


@needs_cinc2021
def test_real_labels_are_the_header_dx_codes():
    reader = CincReader(CINC2021)
    for record in reader.records():
        _, comments = header_text(record.record_id)
        assert record.labels == tuple(comments["Dx"].split(","))
        assert record.meta["sex"] == comments["Sex"]
        assert record.meta["age"] == int(comments["Age"])
        assert record.meta["dx_malformed"] == record.meta["dx_duplicates"] == ()


@needs_cinc2021
def test_real_label_sets():
    georgia = GeorgiaReader(CINC2021)
    records = {r.record_id: r for r in georgia.records()}
    # E07500: left atrial enlargement + sinus bradycardia
    assert georgia.classes_of(records["E07500"], "georgia10") == {"SB"}
    assert georgia.classes_of(records["E07500"], "snomed") == {"SB", "HYP"}
    # E07509: RBBB + SB; RBBB is outside georgia10, dropped and reported
    assert georgia.classes_of(records["E07509"], "georgia10") == {"SB"}
    # E07505: LVH only: no georgia10 class, and not NORM
    assert georgia.classes_of(records["E07505"], "georgia10") == set()
    report = georgia.label_report(list(records.values()), "georgia10")
    assert "E07505" in report.unlabelled and report.unmapped["59118001"] == 2
    matrix = georgia.label_matrix(list(records.values()))
    assert matrix.shape == (20, 10) and matrix.dtype == np.uint8
    assert matrix[list(records).index("E07505")].sum() == 0

    chapman = ChapmanReader(CINC2021)
    records = {r.record_id: r for r in chapman.records()}
    assert chapman.classes_of(records["JS20000"], "rhythm") == {"ST"}
    assert chapman.classes_of(records["JS20000"], "snomed") == {
        "PAC",
        "STach",
        "NSIVCB",
        "CD",
        "STTC",
    }
    assert chapman.classes_of(records["JS20002"], "rhythm") == set()  # no rhythm code at all

    generic = CincReader(CINC2021)
    hr = {r.record_id: r for r in generic.records()}["HR06000"]
    assert generic.classes_of(hr, "snomed") == {"NORM", "TAb", "STTC"}


@needs_cinc2021
def test_real_root_without_this_readers_records_fails_clearly():
    with pytest.raises(
        DataError,
        match=r"cpsc2018: expected WFDB headers A\\d\+\.hea .* "
        r"found E07500\.hea",
    ):
        Cpsc2018Reader(CINC2021)


# --- bad records, fixtures ---------------------------------------------------------------


def _truncate(path: Path) -> None:
    mat = path.with_suffix(".mat")
    mat.write_bytes(mat.read_bytes()[:60_000])


def _short_mat(path: Path) -> None:
    scipy.io.savemat(path.with_suffix(".mat"), {"val": ecg_like(12, 4000)}, format="4")


def _matlab5(path: Path) -> None:
    scipy.io.savemat(path.with_suffix(".mat"), {"val": ecg_like()})


def _delete_mat(path: Path) -> None:
    path.with_suffix(".mat").unlink()


NAN = ecg_like()
NAN[3, 100:110] = -32768  # WFDB's invalid-sample value: NaN in physical units

BAD_RECORDS = [
    ("missing mat", {}, _delete_mat, "signal file E00002.mat is missing"),
    ("truncated", {}, _truncate, "E00002.mat is truncated: 60000 bytes, 120024 needed"),
    ("fewer samples", {}, _short_mat, "E00002.mat holds 4000 samples, header promises 5000"),
    ("not MATLAB v4", {}, _matlab5, "E00002.mat is not a MATLAB v4 int16 matrix"),
    ("flat", {"digital": np.zeros((12, 5000), np.int16)}, None, "every lead is flat"),
    ("NaN", {"digital": NAN}, None, "10 NaN or infinite samples"),
    ("wrong fs", {"fs": 250}, None, "header sampling rate 250 Hz; georgia records are 500 Hz"),
    ("V7", {"leads": STANDARD_LEADS[:11] + ("V7",)}, None, "are not the 12 standard leads"),
    ("8 leads", {"leads": STANDARD_LEADS[:8]}, None, "are not the 12 standard leads"),
    ("units", {"units": "mmHg"}, None, "header units ['mmhg'] are not mV, uV or V"),
]


@pytest.mark.parametrize(
    "case, kwargs, damage, message", BAD_RECORDS, ids=[c[0] for c in BAD_RECORDS]
)
def test_bad_record_names_record_and_reason(tmp_path, case, kwargs, damage, message):
    write_cinc(tmp_path, "E00001")
    path = write_cinc(tmp_path, "E00002", **kwargs)
    if damage is not None:
        damage(path)
    reader = GeorgiaReader(tmp_path)
    good, bad = reader.records()
    assert reader.read(good).data.shape == (12, 5000)
    with pytest.raises(BadRecord, match=re.escape(message)) as info:
        reader.read(bad)
    assert info.value.record_id == "E00002"
    assert str(info.value).startswith("record E00002: ")


def test_uv_units_are_converted_to_mv(tmp_path):
    d = ecg_like()
    write_cinc(tmp_path, "E00001", d, units="uV", gain=1.0)
    signal = read_one(GeorgiaReader, tmp_path, "E00001")
    np.testing.assert_allclose(signal.data, d / 1000.0, rtol=1e-6)


def test_lead_names_are_mapped_to_the_standard_spelling(tmp_path):
    upper = tuple(lead.upper() for lead in STANDARD_LEADS)
    write_cinc(tmp_path, "E00001", leads=upper)
    reader = GeorgiaReader(tmp_path)
    (record,) = reader.records()
    assert record.lead_names == STANDARD_LEADS
    assert reader.read(record).lead_names == STANDARD_LEADS
    assert standard_lead_name(" avl ") == "aVL" and standard_lead_name("MLII") == "MLII"


def test_malformed_and_duplicate_dx_codes_are_counted(tmp_path):
    write_cinc(tmp_path, "E00001", dx="164889003,abc,,164889003, 59118001,164889003")
    write_cinc(tmp_path, "E00002", dx="")
    reader = GeorgiaReader(tmp_path)
    first, second = reader.records()
    assert first.labels == ("164889003", "59118001")
    assert first.meta["dx_malformed"] == ("abc", "")
    assert first.meta["dx_duplicates"] == ("164889003", "164889003")
    assert reader.classes_of(first, "georgia10") == {"AF"}
    assert second.labels == () and reader.classes_of(second, "georgia10") == set()
    report = reader.label_report([first, second])
    assert report.label_set == "georgia10" and report.n_records == 2
    assert report.unlabelled == ("E00002",)
    assert report.unmapped == {"59118001": 1}
    assert report.malformed == {"abc": 1, "": 1}
    assert report.duplicates == {"164889003": 2}


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda p: write_cinc(p.parent, "E00002", dx=None),
            "header E00002.hea has no '# Dx:' line",
        ),
        (lambda p: p.write_text("this is not a header\n"), "header E00002.hea cannot be parsed"),
        (lambda p: p.write_text("E00002 12\n"), "gives no sampling rate"),
        (
            lambda p: p.write_text(p.read_text().replace("E00002 12 500", "E00002 11 500")),
            "record line promises 11 signals, found 12 lines",
        ),
    ],
)
def test_bad_header_is_listed_and_read_raises(tmp_path, damage, message):
    write_cinc(tmp_path, "E00001")
    damage(write_cinc(tmp_path, "E00002"))
    reader = GeorgiaReader(tmp_path)
    good, bad = reader.records()
    assert bad.labels == () and message in bad.meta["header_error"]
    assert reader.classes_of(bad, "georgia10") == set()  # unknown, and counted as unlabelled
    assert reader.label_report([good, bad]).unlabelled == ("E00002",)
    with pytest.raises(BadRecord, match=re.escape("record E00002: ")) as info:
        reader.read(bad)
    assert message in info.value.reason
    assert reader.read(good).data.shape == (12, 5000)


def test_age_unknown_is_none(tmp_path):
    write_cinc(tmp_path, "E00001", age="NaN", sex="Female")
    (record,) = GeorgiaReader(tmp_path).records()
    assert record.meta["age"] is None and record.meta["sex"] == "Female"


@pytest.mark.parametrize(
    "dx, cpsc9",
    [
        ("164909002", {"LBBB"}),
        ("733534002", {"LBBB"}),
        ("59118001", {"RBBB"}),
        ("713427006", {"RBBB"}),
        ("284470004", {"PAC"}),
        ("63593006", {"PAC"}),
        ("427172004", {"PVC"}),
        ("17338001", {"PVC"}),
        ("164884008", {"PVC"}),
        ("426783006,429622005,164931005", {"NORM", "STD", "STE"}),
    ],
)
def test_cpsc2018_repack_equivalences(tmp_path, dx, cpsc9):
    write_cinc(tmp_path / "g1", "A0001", dx=dx)
    reader = Cpsc2018Reader(tmp_path)
    (record,) = reader.records()
    assert reader.classes_of(record, "cpsc9") == cpsc9


@pytest.mark.parametrize(
    "dx, rhythm",
    [
        ("233896004", {"AVNRT"}),
        ("251166008", {"AVNRT"}),
        ("195101003", {"SAAWR"}),
        ("17366009", {"SAAWR"}),
        ("164890007,427393009", {"AF", "SI"}),
    ],
)
def test_chapman_ecg_arrhythmia_layout(tmp_path, dx, rhythm):
    # PhysioNet ecg-arrhythmia: WFDBRecords/<two digits>/<three digits>/JSxxxxx.{hea,mat}
    write_cinc(tmp_path / "WFDBRecords" / "01" / "010", "JS00001", dx=dx)
    reader = ChapmanReader(tmp_path)
    (record,) = reader.records()
    assert reader.classes_of(record, "rhythm") == rhythm
    assert reader.read(record).data.shape == (12, 5000)


def test_wrong_layout_root(tmp_path):
    # An MIT-BIH-style WFDB record (.hea + .dat), written by wfdb.wrsamp
    wfdb.wrsamp(
        "100",
        fs=360,
        units=["mV", "mV"],
        sig_name=["MLII", "V5"],
        p_signal=np.zeros((100, 2)),
        fmt=["212", "212"],
        write_dir=str(tmp_path),
    )
    with pytest.raises(
        DataError,
        match=r"georgia: expected WFDB headers E\\d\+\.hea with a "
        r"MATLAB v4 \.mat .* found 100\.dat, 100\.hea",
    ):
        GeorgiaReader(tmp_path)


def test_root_with_headers_but_no_mat(tmp_path):
    write_cinc(tmp_path, "E00001", mat=False)
    with pytest.raises(DataError, match="found 1 headers and no .mat beside any of them"):
        GeorgiaReader(tmp_path)


def test_empty_root_and_missing_root(tmp_path):
    with pytest.raises(DataError, match="found no files"):
        ChapmanReader(tmp_path)
    with pytest.raises(DataError, match="is not a directory"):
        ChapmanReader(tmp_path / "absent")


def test_duplicate_record_id_fails(tmp_path):
    write_cinc(tmp_path / "g1", "E00001")
    write_cinc(tmp_path / "g2", "E00001")
    with pytest.raises(DataError, match="record ids must be unique"):
        GeorgiaReader(tmp_path)


def test_registry_and_label_sets():
    assert READERS.get("cpsc2018") is Cpsc2018Reader
    assert READERS.get("georgia") is GeorgiaReader
    assert READERS.get("chapman") is ChapmanReader
    assert READERS.get("cpsc2018_original") is Cpsc2018OriginalReader
    assert list(Cpsc2018Reader.label_sets) == ["cpsc9", "snomed"]
    assert list(GeorgiaReader.label_sets) == ["georgia10", "snomed"]
    assert list(ChapmanReader.label_sets) == ["rhythm", "snomed"]
    assert list(Cpsc2018OriginalReader.label_sets) == ["cpsc9", "snomed"]


def test_unknown_label_set(tmp_path):
    write_cinc(tmp_path, "E00001")
    reader = GeorgiaReader(tmp_path)
    (record,) = reader.records()
    with pytest.raises(
        ConfigError, match="georgia has no label set 'rhythm'; known: georgia10, snomed"
    ):
        reader.classes_of(record, "rhythm")
    with pytest.raises(ConfigError, match="no label set 'rhythm'"):
        reader.label_matrix([record], "rhythm")


# --- the original CPSC 2018 release ------------------------------------------------------

CPSC_REFERENCE = """Recording,First_label,Second_label,Third_label
A1980,1,,
A1981,2,6,
A1982,5,,
A1983,7,8,
A1984,3,,
A1985,9,1,
A1986,4,,
A1987,2,2,
A1988,6,7,8
A1989,8,,
"""


@pytest.fixture()
def cpsc_root(tmp_path) -> Path:
    if not CPSC2018.is_dir():
        pytest.skip(f"real CPSC 2018 samples not found at {CPSC2018}")
    root = tmp_path / "cpsc2018"
    (root / "TrainingSet1").mkdir(parents=True)
    for mat in sorted(CPSC2018.glob("*.mat")):
        shutil.copy(mat, root / "TrainingSet1" / mat.name)
    (root / "REFERENCE.csv").write_text(CPSC_REFERENCE)
    return root


def test_cpsc_original_reads_real_mats(cpsc_root):
    reader = Cpsc2018OriginalReader(cpsc_root)
    records = reader.records()
    assert [r.record_id for r in records] == [f"A{n}" for n in range(1980, 1990)]
    assert reader.unreferenced == ()
    for record in records:
        ecg = scipy.io.loadmat(CPSC2018 / f"{record.record_id}.mat")["ECG"][0, 0]
        signal = reader.read(record)
        assert signal.data.shape == ecg["data"].shape and signal.data.shape[0] == 12
        assert signal.data.dtype == np.float32
        assert (signal.fs, signal.lead_names) == (500.0, STANDARD_LEADS)
        np.testing.assert_allclose(signal.data, ecg["data"], rtol=1e-6, atol=1e-6)  # mV
        demo = reader.demographics(record)
        assert demo == {"age": float(ecg["age"][0, 0]), "sex": str(ecg["sex"][0])}


def test_cpsc_original_labels(cpsc_root):
    reader = Cpsc2018OriginalReader(cpsc_root)
    records = {r.record_id: r for r in reader.records()}
    assert records["A1987"].labels == ("2",)  # a repeated label counts once
    assert reader.classes_of(records["A1981"], "cpsc9") == {"AF", "PAC"}
    assert reader.classes_of(records["A1983"], "cpsc9") == {"PVC", "STD"}
    assert reader.classes_of(records["A1983"], "snomed") == {"PVC", "STD", "STTC"}
    assert reader.classes_of(records["A1985"], "cpsc9") == {"STE", "NORM"}
    matrix = reader.label_matrix(list(records.values()))
    assert matrix.shape == (10, 9)
    assert matrix.sum(axis=0).tolist() == [2, 2, 1, 1, 1, 2, 2, 3, 1]


def test_cpsc_original_missing_reference_fails(cpsc_root):
    (cpsc_root / "REFERENCE.csv").unlink()
    with pytest.raises(
        DataError,
        match=r"expected REFERENCE\.csv and A\*\.mat files .* found "
        r"no REFERENCE\.csv and 10 \.mat files",
    ):
        Cpsc2018OriginalReader(cpsc_root)


@pytest.mark.parametrize(
    "reference, message",
    [
        ("Recording,Label\nA1980,1\n", "missing First_label, Second_label, Third_label"),
        (CPSC_REFERENCE + "A1980,1,,\n", "recording A1980 is listed twice"),
        (
            CPSC_REFERENCE.replace("A1989,8,,", "A1989,10,,"),
            "recording A1989 has label '10'; labels must be 1-9",
        ),
        (CPSC_REFERENCE.replace("A1989,8,,", "A1989,,,"), "recording A1989 has no label"),
    ],
)
def test_cpsc_original_bad_reference(cpsc_root, reference, message):
    (cpsc_root / "REFERENCE.csv").write_text(reference)
    with pytest.raises(DataError, match=re.escape(message)):
        Cpsc2018OriginalReader(cpsc_root)


def test_cpsc_original_bad_records(cpsc_root):
    (cpsc_root / "TrainingSet1" / "A1989.mat").unlink()
    scipy.io.savemat(
        cpsc_root / "TrainingSet1" / "A1988.mat",
        {"ECG": {"sex": "Male", "age": 60, "data": np.zeros((12, 5000))}},
    )
    scipy.io.savemat(
        cpsc_root / "TrainingSet1" / "A1987.mat",
        {"ECG": {"sex": "Male", "age": 60, "data": np.ones((8, 5000))}},
    )
    nan = np.random.default_rng(0).standard_normal((12, 5000))
    nan[0, 0] = np.nan
    scipy.io.savemat(
        cpsc_root / "TrainingSet1" / "A1986.mat", {"ECG": {"sex": "Male", "age": 60, "data": nan}}
    )
    scipy.io.savemat(cpsc_root / "TrainingSet1" / "A1985.mat", {"val": nan})
    shutil.copy(CPSC2018 / "A1980.mat", cpsc_root / "A1990.mat")
    reader = Cpsc2018OriginalReader(cpsc_root)
    assert reader.unreferenced == ("A1990",)
    records = {r.record_id: r for r in reader.records()}
    for rid, message in [
        ("A1989", "REFERENCE.csv lists it but A1989.mat is missing"),
        ("A1988", "every lead is flat"),
        ("A1987", "ECG.data has 8 rows, expected 12 leads x samples"),
        ("A1986", "1 NaN or infinite samples"),
        ("A1985", "A1985.mat has no struct ECG with a field data"),
    ]:
        with pytest.raises(BadRecord, match=re.escape(f"record {rid}: {message}")):
            reader.read(records[rid])
    assert reader.read(records["A1980"]).data.shape == (12, 5000)


def test_cpsc_original_wrong_layout(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="found no REFERENCE.csv and 0 .mat files"):
        Cpsc2018OriginalReader(tmp_path)
    (tmp_path / "REFERENCE.csv").write_text(CPSC_REFERENCE)
    with pytest.raises(DataError, match="found REFERENCE.csv and no .mat file"):
        Cpsc2018OriginalReader(tmp_path)
