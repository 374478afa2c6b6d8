"""PTB Diagnostic ECG Database reader on a folder written in ptbdb's own layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from study.data.readers import READERS, STANDARD_LEADS, BadRecord
from study.data.readers.ptb import PtbReader, parse_comments
from study.errors import ConfigError, DataError

FILE_LEADS = ["i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6"]
FRANK = ["vx", "vy", "vz"]
N = 2000  # 2 s per record keeps the test fast; the real ones are 32-120 s

# The comment block of a real header (patient001/s0010_re.hea), reason swapped per record.
COMMENTS = [
    "age: 81",
    "sex: female",
    "ECG date: 01/10/1990",
    "Diagnose:",
    "Reason for admission: {reason}",
    "Acute infarction (localization): infero-latera",
    "Former infarction (localization): no",
    "Additional diagnoses: Diabetes mellitus",
    "Smoker: no",
    "Number of coronary vessels involved: 1",
    "Infarction date (acute): 29-Sep-90",
    "Previous infarction (1) date: n/a",
    "Previous infarction (2) date: n/a",
    "Catheterization date: 16-Oct-90",
    "Ventriculography: Akinesia inferior wall",
    "Therapy:",
    "Infarction date: 29-Sep-90",
]

# record -> reason for admission (None: no such comment line)
GOOD = {
    "patient001/s0010_re": "Myocardial infarction",
    "patient001/s0014lre": "Myocardial infarction",
    "patient104/s0306lre": "Healthy control",
    "patient105/s0303lre": "Cardiomyopathy",
    "patient106/s0030_re": "n/a",
    "patient107/s0040_re": None,
}
BAD = {
    "patient200/s0500lre": ("missing .dat", r"signal file .*s0500lre\.dat is missing"),
    "patient201/s0501lre": ("truncated .dat", r"shorter than the header's 2000 samples"),
    "patient202/s0502lre": ("flat", r"every lead is flat"),
    "patient203/s0503lre": ("NaN", r"2 NaN or infinite samples"),
    "patient204/s0504lre": ("500 Hz", r"sampling rate 500(\.0)? Hz, the dataset records at 1000"),
    "patient205/s0505lre": ("no v6", r"lack \['V6'\]"),
    "patient206/s0506lre": ("missing .hea", r"header file patient206/s0506lre\.hea is missing"),
}


def signal(n: int, seed: int, leads: int = 15) -> np.ndarray:
    """(samples, leads) in mV on the 1/2000 mV grid of PTB's gain of 2000 adu/mV."""
    t = np.arange(n) / 1000
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.2, 2.0, leads) * np.sin(2 * np.pi * rng.uniform(1, 9, leads) * t[:, None])
    return np.round(x * 2000) / 2000


def write_ptb_record(
    root: Path, line: str, x: np.ndarray, reason: str | None, fs: float = 1000.0, names=None
) -> None:
    """One record as ptbdb has it: 12 leads in .dat, vx vy vz in .xyz, gain 2000 with no
    unit field, CRLF line ends, the clinical summary in the comments."""
    names = names or FILE_LEADS + FRANK
    folder, record = line.split("/")
    (root / folder).mkdir(parents=True, exist_ok=True)
    comments = [
        c.format(reason=reason) for c in COMMENTS if reason is not None or "{reason}" not in c
    ]
    rec = wfdb.Record(
        record_name=record,
        fs=fs,
        p_signal=x,
        file_name=[f"{record}.dat"] * 12 + [f"{record}.xyz"] * 3,
        fmt=["16"] * 15,
        adc_gain=[2000.0] * 15,
        baseline=[0] * 15,
        units=["mV"] * 15,
        sig_name=names,
        comments=comments,
    )
    rec.set_d_features(do_adc=True)
    rec.set_defaults()
    rec.wrsamp(write_dir=str(root / folder))  # wfdb.wrsamp writes one file; PTB has two
    hea = root / folder / f"{record}.hea"
    text = hea.read_text().replace("2000.0(0)/mV", "2000").replace("\n", "\r\n")
    hea.write_bytes(text.encode())


def clone(root: Path, src: str, dst: str, edit=lambda text: text) -> Path:
    """A copy of record `src` named `dst`, its header passed through `edit` (cheaper than
    another write)."""
    a, b = root / src, root / dst
    b.parent.mkdir(parents=True, exist_ok=True)
    for ext in (".dat", ".xyz"):
        b.with_suffix(ext).write_bytes(a.with_suffix(ext).read_bytes())
    text = a.with_suffix(".hea").read_bytes().decode().replace(a.name, b.name)
    b.with_suffix(".hea").write_bytes(edit(text).encode())
    return b


def write_ptb(root: Path) -> dict[str, np.ndarray]:
    written = {}
    lines = [*GOOD, *BAD]
    (root / "RECORDS").write_text("".join(f"{line}\n" for line in lines))
    (root / "CONTROLS").write_text("patient104/s0306lre\n")
    for k, (line, reason) in enumerate(GOOD.items()):
        x = signal(N, seed=k)
        write_ptb_record(root, line, x, reason)
        written[line] = x
    good = "patient001/s0010_re"
    clone(root, good, "patient200/s0500lre").with_suffix(".dat").unlink()
    dat = clone(root, good, "patient201/s0501lre").with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[: dat.stat().st_size // 3])
    write_ptb_record(root, "patient202/s0502lre", np.zeros((N, 15)), "Myocardial infarction")
    x = signal(N, seed=3)
    x[5, 0] = x[6, 11] = np.nan
    x[7, 13] = np.nan  # in the .xyz: not read, not counted
    write_ptb_record(root, "patient203/s0503lre", x, "Myocardial infarction")
    clone(root, good, "patient204/s0504lre", lambda t: t.replace(" 15 1000 ", " 15 500 ", 1))
    clone(root, good, "patient205/s0505lre", lambda t: t.replace(" 0 v6\r\n", " 0 v7\r\n"))
    clone(root, good, "patient206/s0506lre").with_suffix(".hea").unlink()
    return written


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("ptbdb")
    return root, write_ptb(root)


@pytest.fixture(scope="module")
def reader(fixture) -> PtbReader:
    return PtbReader(fixture[0])


def by_id(reader: PtbReader) -> dict:
    return {r.record_id: r for r in reader.records()}


def test_registered_under_its_name():
    assert READERS.get("ptb") is PtbReader


def test_the_fixture_header_looks_like_ptbdb(fixture):
    head = (fixture[0] / "patient001" / "s0010_re.hea").read_bytes().split(b"\r\n")
    assert head[0] == b"s0010_re 15 1000 2000"
    assert head[1].startswith(b"s0010_re.dat 16 2000 16 0 ") and head[1].endswith(b" i")
    assert head[13].startswith(b"s0010_re.xyz 16 2000 16 0 ") and head[15].endswith(b" vz")
    assert b"# Reason for admission: Myocardial infarction" in head


def test_records_carry_patients_reasons_and_meta(reader):
    recs = reader.records()
    assert [r.record_id for r in recs] == [*GOOD, *BAD]
    r = by_id(reader)
    assert r["patient001/s0014lre"].patient_id == "patient001"
    assert r["patient104/s0306lre"].labels == ("Healthy control",)
    assert (
        r["patient106/s0030_re"].labels == () and r["patient106/s0030_re"].meta["reason"] == "n/a"
    )
    assert r["patient107/s0040_re"].labels == () and r["patient107/s0040_re"].meta["reason"] is None
    meta = r["patient001/s0010_re"].meta
    assert (meta["age"], meta["sex"], meta["ecg_date"]) == (81, "female", "01/10/1990")
    first = r["patient001/s0010_re"]
    assert (first.fs, first.n_samples, first.lead_names, first.fold) == (
        1000.0,
        N,
        STANDARD_LEADS,
        None,
    )


def test_read_keeps_the_12_standard_leads_in_millivolts(fixture, reader):
    root, written = fixture
    recs = by_id(reader)
    for line in GOOD:
        sig = reader.read(recs[line])
        assert sig.data.dtype == np.float32 and sig.data.shape == (12, N)
        assert sig.fs == 1000.0 and sig.lead_names == STANDARD_LEADS
        np.testing.assert_allclose(sig.data, written[line][:, :12].T, atol=1e-6)


def test_the_xyz_file_is_not_needed(fixture, tmp_path):
    root, written = fixture
    line = "patient001/s0010_re"
    (tmp_path / "patient001").mkdir()
    for ext in ("hea", "dat"):
        (tmp_path / f"{line}.{ext}").write_bytes((root / f"{line}.{ext}").read_bytes())
    (tmp_path / "RECORDS").write_text(line + "\n")
    reader = PtbReader(tmp_path)
    sig = reader.read(reader.records()[0])
    np.testing.assert_allclose(sig.data, written[line][:, :12].T, atol=1e-6)


def test_leads_are_returned_in_standard_order_whatever_the_file_order(tmp_path):
    shuffled = [*FILE_LEADS[6:], *FILE_LEADS[:6], *FRANK]  # v1-v6 first
    x = signal(N, seed=7)
    write_ptb_record(tmp_path, "patient009/s0101lre", x, "Healthy control", names=shuffled)
    (tmp_path / "RECORDS").write_text("patient009/s0101lre\n")
    reader = PtbReader(tmp_path)
    sig = reader.read(reader.records()[0])
    assert sig.lead_names == STANDARD_LEADS
    np.testing.assert_allclose(sig.data[0], x[:, 6], atol=1e-6)  # lead I was column 6
    np.testing.assert_allclose(sig.data[6], x[:, 0], atol=1e-6)  # V1 was column 0


def test_mi_vs_healthy(reader):
    recs = [by_id(reader)[line] for line in GOOD]
    want = [{"MI"}, {"MI"}, {"HC"}, set(), set(), set()]
    assert [reader.classes_of(r, "mi_vs_healthy") for r in recs] == want
    np.testing.assert_array_equal(
        reader.label_matrix(recs),  # the default set
        np.array([[0, 1], [0, 1], [1, 0], [0, 0], [0, 0], [0, 0]], dtype=np.uint8),
    )
    assert reader.label_sets == {"mi_vs_healthy": ("HC", "MI")}
    with pytest.raises(ConfigError, match="ptb has no label set 'mi'; known: mi_vs_healthy"):
        reader.classes_of(recs[0], "mi")


@pytest.mark.parametrize(("line", "reason"), [(k, v[1]) for k, v in BAD.items()])
def test_bad_records_name_their_reason(reader, line, reason):
    with pytest.raises(BadRecord, match=reason) as err:
        reader.read(by_id(reader)[line])
    assert err.value.record_id == line


def test_missing_header_is_a_listing_problem(reader):
    recs = by_id(reader)
    assert [p.record_id for p in reader.listing_problems] == ["patient206/s0506lre"]
    assert recs["patient206/s0506lre"].labels == ()


def test_parse_comments_skips_section_titles():
    fields = parse_comments(["Diagnose:", "Reason for admission: Healthy control", "age: 42"])
    assert fields == {"reason for admission": "Healthy control", "age": "42"}


def test_wrong_layouts_say_what_was_expected_and_found(tmp_path):
    (tmp_path / "patient001").mkdir()
    with pytest.raises(DataError, match=r"expected a RECORDS file .* found patient001/"):
        PtbReader(tmp_path)
    (tmp_path / "RECORDS").write_text("records100/00000/00001_lr\n")  # a PTB-XL RECORDS
    with pytest.raises(DataError, match=r"must be patientNNN/<record> .*'records100/00000/"):
        PtbReader(tmp_path)
    (tmp_path / "RECORDS").write_text("\n")
    with pytest.raises(DataError, match="must list at least one record"):
        PtbReader(tmp_path)
