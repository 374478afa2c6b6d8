"""PTB-XL reader on a folder written in PTB-XL's own layout (CSV files + WFDB via wrsamp)."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from study.data.readers import READERS, STANDARD_LEADS, BadRecord
from study.data.readers.ptbxl import PtbXlReader
from study.errors import ConfigError, DataError

# Lead names as PTB-XL's headers spell them ("00001_lr.dat 16 1000.0(0)/mV ... AVR").
FILE_LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]

# Twelve rows of the real scp_statements.csv (release 1.0.3), every column as published.
# fmt: off
STATEMENT_COLUMNS = [
    "", "description", "diagnostic", "form", "rhythm", "diagnostic_class",
    "diagnostic_subclass", "Statement Category", "SCP-ECG Statement Description", "AHA code",
    "aECG REFID", "CDISC Code", "DICOM Code",
]
STATEMENT_ROWS = [
    ("NDT", "non-diagnostic T abnormalities", "1.0", "1.0", "", "STTC", "STTC",
     "other ST-T descriptive statements", "non-diagnostic T abnormalities", "", "", "", ""),
    ("NST_", "non-specific ST changes", "1.0", "1.0", "", "STTC", "NST_",
     "Basic roots for coding ST-T changes and abnormalities", "non-specific ST changes", "145",
     "MDC_ECG_RHY_STHILOST", "", ""),
    ("NORM", "normal ECG", "1.0", "", "", "NORM", "NORM", "Normal/abnormal", "normal ECG", "1",
     "", "", "F-000B7"),
    ("IMI", "inferior myocardial infarction", "1.0", "", "", "MI", "IMI",
     "Myocardial Infarction", "inferior myocardial infarction", "161", "", "", ""),
    ("ASMI", "anteroseptal myocardial infarction", "1.0", "", "", "MI", "AMI",
     "Myocardial Infarction", "anteroseptal myocardial infarction", "165", "", "", ""),
    ("LVH", "left ventricular hypertrophy", "1.0", "", "", "HYP", "LVH",
     "Ventricular Hypertrophy", "left ventricular hypertrophy", "142", "", "C71076", ""),
    ("1AVB", "first degree AV block", "1.0", "", "", "CD", "_AVB",
     "Sinus node dysfunction, atrial and AV-conduction defects", "first degree AV block", "",
     "MDC_ECG_RHY_AV_HEART_BLK_DEG_1", "C111088", ""),
    ("CLBBB", "complete left bundle branch block", "1.0", "", "", "CD", "CLBBB",
     "Intraventricular and intra-atrial Conduction disturbances",
     "(complete) left bundle branch block", "104", "MDC_ECG_BEAT_LBB_BLK_COMP", "C62269",
     "D3-33120 or 122752"),
    ("PVC", "ventricular premature complex", "", "1.0", "", "", "",
     "Statements related to ectopic rhythm abnormalities",
     "ventricular premature complex (beat)", "60", "MDC_ECG_BEAT_V_P_C", "", ""),
    ("SR", "sinus rhythm", "", "", "1.0", "", "",
     "Statements related to impulse formation (abnormalities)", "sinus rhythm", "20",
     "MDC_ECG_RHY_SINUS_RHY", "", ""),
    ("AFIB", "atrial fibrillation", "", "", "1.0", "", "",
     "Statements related to impulse formation (abnormalities)", "atrial fibrillation", "50",
     "MDC_ECG_RHY_ATR_FIB", "", "D3-31520"),
    ("STACH", "sinus tachycardia", "", "", "1.0", "", "",
     "Statements related to impulse formation (abnormalities)", "sinus tachycardia", "21",
     "MDC_ECG_RHY_SINUS_TACHY", "", ""),
]
# fmt: on


def statements_csv() -> str:
    """The twelve statements as scp_statements.csv writes them (csv quoting included)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([STATEMENT_COLUMNS, *STATEMENT_ROWS])
    return buf.getvalue()


# All 71 statements of the real scp_statements.csv (1.0.3), the columns the reader uses.
ALL_STATEMENTS = """\
,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass
NDT,1.0,1.0,,STTC,STTC
NST_,1.0,1.0,,STTC,NST_
DIG,1.0,1.0,,STTC,STTC
LNGQT,1.0,1.0,,STTC,STTC
NORM,1.0,,,NORM,NORM
IMI,1.0,,,MI,IMI
ASMI,1.0,,,MI,AMI
LVH,1.0,,,HYP,LVH
LAFB,1.0,,,CD,LAFB/LPFB
ISC_,1.0,,,STTC,ISC_
IRBBB,1.0,,,CD,IRBBB
1AVB,1.0,,,CD,_AVB
IVCD,1.0,,,CD,IVCD
ISCAL,1.0,,,STTC,ISCA
CRBBB,1.0,,,CD,CRBBB
CLBBB,1.0,,,CD,CLBBB
ILMI,1.0,,,MI,IMI
LAO/LAE,1.0,,,HYP,LAO/LAE
AMI,1.0,,,MI,AMI
ALMI,1.0,,,MI,AMI
ISCIN,1.0,,,STTC,ISCI
INJAS,1.0,,,MI,AMI
LMI,1.0,,,MI,LMI
ISCIL,1.0,,,STTC,ISCI
LPFB,1.0,,,CD,LAFB/LPFB
ISCAS,1.0,,,STTC,ISCA
INJAL,1.0,,,MI,AMI
ISCLA,1.0,,,STTC,ISCA
RVH,1.0,,,HYP,RVH
ANEUR,1.0,,,STTC,STTC
RAO/RAE,1.0,,,HYP,RAO/RAE
EL,1.0,,,STTC,STTC
WPW,1.0,,,CD,WPW
ILBBB,1.0,,,CD,ILBBB
IPLMI,1.0,,,MI,IMI
ISCAN,1.0,,,STTC,ISCA
IPMI,1.0,,,MI,IMI
SEHYP,1.0,,,HYP,SEHYP
INJIN,1.0,,,MI,IMI
INJLA,1.0,,,MI,AMI
PMI,1.0,,,MI,PMI
3AVB,1.0,,,CD,_AVB
INJIL,1.0,,,MI,IMI
2AVB,1.0,,,CD,_AVB
ABQRS,,1.0,,,
PVC,,1.0,,,
STD_,,1.0,,,
VCLVH,,1.0,,,
QWAVE,,1.0,,,
LOWT,,1.0,,,
NT_,,1.0,,,
PAC,,1.0,,,
LPR,,1.0,,,
INVT,,1.0,,,
LVOLT,,1.0,,,
HVOLT,,1.0,,,
TAB_,,1.0,,,
STE_,,1.0,,,
PRC(S),,1.0,,,
SR,,,1.0,,
AFIB,,,1.0,,
STACH,,,1.0,,
SARRH,,,1.0,,
SBRAD,,,1.0,,
PACE,,,1.0,,
SVARR,,,1.0,,
BIGU,,,1.0,,
AFLT,,,1.0,,
SVTAC,,,1.0,,
PSVT,,,1.0,,
TRIGU,,,1.0,,
"""

# ecg_id -> (patient_id, strat_fold, scp_codes as written in the CSV)
GOOD = {
    1: (15709.0, 3, "{'NORM': 100.0, 'SR': 0.0}"),
    2: (13243.0, 9, "{'IMI': 50.0, 'NDT': 100.0, 'PVC': 0.0, 'AFIB': 0.0}"),
    3: (20372.0, 10, "{'ASMI': 100.0, 'LVH': 0.0, 'CLBBB': 100.0, 'STACH': 0.0}"),
    4: (15709.0, 3, "{'1AVB': 100.0, 'NST_': 50.0, 'SR': 0.0}"),  # same patient as 1
}

# Each bad record, how it is written, and what read() must say.
BAD = {
    5: ("missing .dat", r"signal file .*00005_lr\.dat is missing"),
    6: ("truncated .dat", r"shorter than the header's 1000 samples \(truncated\?\)"),
    7: ("flat", r"every lead is flat"),
    8: ("NaN", r"1 NaN or infinite samples"),
    9: ("250 Hz", r"sampling rate 250(\.0)? Hz, the dataset records at 100\.0 Hz"),
    10: ("V6 is V7", r"lack \['V6'\]"),
    11: ("9 s", r"header promises 900 samples; PTB-XL records are 10 s \(1000 samples"),
    12: ("missing .hea", r"header file .*00012_lr\.hea is missing"),
}
MALFORMED = {
    13: ("{'NORM': 100.0", r"scp_codes is not a dict literal"),
    14: ("{'XYZ': 100.0}", r"statements not in scp_statements.csv: \['XYZ'\]"),
    15: ("['NORM']", r"scp_codes must map statement names to likelihoods"),
}


def signal(n: int, seed: int, leads: int = 12) -> np.ndarray:
    """(samples, leads) in mV on the 1/1000 mV grid a gain of 1000 stores exactly."""
    t = np.arange(n) / n
    rng = np.random.default_rng(seed)
    amp = rng.uniform(0.2, 2.0, leads)
    freq = rng.integers(3, 15, leads)
    x = amp * np.sin(2 * np.pi * freq * t[:, None]) + rng.normal(0, 0.05, (n, leads))
    return np.round(x, 3)


def write_wfdb(path: Path, x: np.ndarray, fs: float, names=FILE_LEADS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    k = x.shape[1]
    wfdb.wrsamp(
        path.name,
        fs=fs,
        units=["mV"] * k,
        sig_name=list(names),
        p_signal=x,
        fmt=["16"] * k,
        adc_gain=[1000.0] * k,
        baseline=[0] * k,
        write_dir=str(path.parent),
    )


def rel(ecg_id: int, fs: int) -> str:
    suffix = "lr" if fs == 100 else "hr"
    return f"records{fs}/{ecg_id // 1000 * 1000:05d}/{ecg_id:05d}_{suffix}"


def database(rows: dict[int, tuple[float, int, str]]) -> pd.DataFrame:
    """ptbxl_database.csv with PTB-XL's columns, in its order."""
    out = []
    for ecg_id, (patient, fold, codes) in rows.items():
        out.append(
            {
                "ecg_id": ecg_id,
                "patient_id": patient,
                "age": 56.0 + ecg_id,
                "sex": ecg_id % 2,
                "height": np.nan,
                "weight": 63.0,
                "nurse": 2.0,
                "site": 0.0,
                "device": "CS-12   E",
                "recording_date": "1984-11-09 09:17:34",
                "report": "sinusrhythmus periphere niederspannung",
                "scp_codes": codes,
                "heart_axis": np.nan,
                "infarction_stadium1": np.nan,
                "infarction_stadium2": np.nan,
                "validated_by": np.nan,
                "second_opinion": False,
                "initial_autogenerated_report": False,
                "validated_by_human": True,
                "baseline_drift": np.nan,
                "static_noise": np.nan,
                "burst_noise": np.nan,
                "electrodes_problems": np.nan,
                "extra_beats": np.nan,
                "pacemaker": np.nan,
                "strat_fold": fold,
                "filename_lr": rel(ecg_id, 100),
                "filename_hr": rel(ecg_id, 500),
            }
        )
    return pd.DataFrame(out)


def clone(root: Path, src: str, dst: str, edit=lambda text: text) -> Path:
    """A copy of record `src` named `dst`, its header passed through `edit` (cheaper than
    another wrsamp)."""
    a, b = root / src, root / dst
    b.parent.mkdir(parents=True, exist_ok=True)
    b.with_suffix(".dat").write_bytes(a.with_suffix(".dat").read_bytes())
    text = a.with_suffix(".hea").read_text().replace(a.name, b.name)
    b.with_suffix(".hea").write_text(edit(text))
    return b


def write_ptbxl(root: Path) -> dict[tuple[int, int], np.ndarray]:
    """The whole fixture; returns the signal written per (ecg_id, fs)."""
    rows = dict(GOOD)
    rows.update({i: (30000.0 + i, 1, "{'NORM': 100.0}") for i in BAD})
    rows.update({i: (30000.0 + i, 2, codes) for i, (codes, _) in MALFORMED.items()})
    database(rows).to_csv(root / "ptbxl_database.csv", index=False)
    (root / "scp_statements.csv").write_text(statements_csv())
    written = {}
    for ecg_id in GOOD:
        for fs in (100, 500):
            x = signal(10 * fs, seed=ecg_id)
            write_wfdb(root / rel(ecg_id, fs), x, fs)
            written[ecg_id, fs] = x
    good = rel(1, 100)
    for ecg_id in MALFORMED:  # a sound signal: only the labels are wrong
        clone(root, good, rel(ecg_id, 100))
    clone(root, good, rel(5, 100)).with_suffix(".dat").unlink()
    dat = clone(root, good, rel(6, 100)).with_suffix(".dat")
    dat.write_bytes(dat.read_bytes()[: dat.stat().st_size // 2])
    x = np.zeros((1000, 12))
    write_wfdb(root / rel(7, 100), x, 100)
    x = signal(1000, seed=8)
    x[10, 3] = np.nan
    write_wfdb(root / rel(8, 100), x, 100)
    clone(root, good, rel(9, 100), lambda t: t.replace(" 12 100 1000", " 12 250 1000", 1))
    clone(root, good, rel(10, 100), lambda t: t.replace(" 0 V6", " 0 V7"))
    write_wfdb(root / rel(11, 100), signal(900, seed=11), 100)
    clone(root, good, rel(12, 100)).with_suffix(".hea").unlink()
    return written


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("ptbxl")
    written = write_ptbxl(root)
    return root, written


@pytest.fixture(scope="module")
def reader(fixture) -> PtbXlReader:
    return PtbXlReader(fixture[0])


def by_id(reader: PtbXlReader) -> dict[str, object]:
    return {r.record_id: r for r in reader.records()}


def test_registered_under_its_name():
    assert READERS.get("ptbxl") is PtbXlReader


def test_records_carry_ids_patients_folds_and_meta(reader):
    recs = reader.records()
    assert [r.record_id for r in recs] == [str(i) for i in range(1, 16)]
    r = by_id(reader)
    assert (r["1"].patient_id, r["4"].patient_id, r["2"].patient_id) == ("15709", "15709", "13243")
    assert [r[i].fold for i in "1234"] == [3, 9, 10, 3]
    assert r["3"].labels == ("ASMI", "LVH", "CLBBB", "STACH")
    assert r["3"].meta["scp_codes"] == {"ASMI": 100.0, "LVH": 0.0, "CLBBB": 100.0, "STACH": 0.0}
    assert r["2"].meta["age"] == 58.0 and r["2"].meta["sex"] == 0
    assert (r["1"].fs, r["1"].n_samples, r["1"].lead_names) == (100.0, 1000, STANDARD_LEADS)


@pytest.mark.parametrize("fs", [100, 500])
def test_read_returns_the_written_millivolts(fixture, fs):
    root, written = fixture
    reader = PtbXlReader(root, sampling_rate=fs)
    recs = by_id(reader)
    for ecg_id in GOOD:
        sig = reader.read(recs[str(ecg_id)])
        assert sig.data.dtype == np.float32
        assert sig.data.shape == (12, 10 * fs)
        assert sig.fs == fs and sig.lead_names == STANDARD_LEADS
        np.testing.assert_allclose(sig.data, written[ecg_id, fs].T, atol=1e-6)


def test_class_lists_come_from_the_statements_file(reader):
    assert reader.label_sets == {
        "superdiagnostic": ("CD", "HYP", "MI", "NORM", "STTC"),
        "subdiagnostic": ("AMI", "CLBBB", "IMI", "LVH", "NORM", "NST_", "STTC", "_AVB"),
        "diagnostic": ("1AVB", "ASMI", "CLBBB", "IMI", "LVH", "NDT", "NORM", "NST_"),
        "form": ("NDT", "NST_", "PVC"),
        "rhythm": ("AFIB", "SR", "STACH"),
        "all": (
            "1AVB", "AFIB", "ASMI", "CLBBB", "IMI", "LVH",
            "NDT", "NORM", "NST_", "PVC", "SR", "STACH",
        ),
    }  # fmt: skip
    assert next(iter(reader.label_sets)) == "superdiagnostic"  # the default


# Hand-computed: every statement counts whatever its likelihood (LVH: 0.0 in record 3).
EXPECTED = {
    "superdiagnostic": [{"NORM"}, {"MI", "STTC"}, {"MI", "HYP", "CD"}, {"CD", "STTC"}],
    "subdiagnostic": [{"NORM"}, {"IMI", "STTC"}, {"AMI", "LVH", "CLBBB"}, {"_AVB", "NST_"}],
    "diagnostic": [{"NORM"}, {"IMI", "NDT"}, {"ASMI", "LVH", "CLBBB"}, {"1AVB", "NST_"}],
    "form": [set(), {"NDT", "PVC"}, set(), {"NST_"}],
    "rhythm": [{"SR"}, {"AFIB"}, {"STACH"}, {"SR"}],
    "all": [
        {"NORM", "SR"},
        {"IMI", "NDT", "PVC", "AFIB"},
        {"ASMI", "LVH", "CLBBB", "STACH"},
        {"1AVB", "NST_", "SR"},
    ],
}


@pytest.mark.parametrize("label_set", sorted(EXPECTED))
def test_labels_per_label_set(reader, label_set):
    recs = [by_id(reader)[str(i)] for i in GOOD]
    classes = reader.label_sets[label_set]
    want = np.array([[c in s for c in classes] for s in EXPECTED[label_set]], dtype=np.uint8)
    assert [reader.classes_of(r, label_set) for r in recs] == EXPECTED[label_set]
    np.testing.assert_array_equal(reader.label_matrix(recs, label_set), want)


def test_the_real_statements_give_the_published_class_counts(tmp_path):
    (tmp_path / "records100").mkdir()
    (tmp_path / "scp_statements.csv").write_text(ALL_STATEMENTS)
    database({1: GOOD[1]}).to_csv(tmp_path / "ptbxl_database.csv", index=False)
    sets = PtbXlReader(tmp_path).label_sets
    assert {k: len(v) for k, v in sets.items()} == {
        "superdiagnostic": 5,
        "subdiagnostic": 23,
        "diagnostic": 44,
        "form": 19,
        "rhythm": 12,
        "all": 71,
    }
    assert sets["superdiagnostic"] == ("CD", "HYP", "MI", "NORM", "STTC")


@pytest.mark.parametrize(("ecg_id", "reason"), [(k, v[1]) for k, v in BAD.items()])
def test_bad_records_name_their_reason(reader, ecg_id, reason):
    rec = by_id(reader)[str(ecg_id)]
    with pytest.raises(BadRecord, match=reason) as err:
        reader.read(rec)
    assert err.value.record_id == str(ecg_id)


def test_malformed_scp_codes_are_counted_not_fatal(reader):
    recs = by_id(reader)
    assert sorted(p.record_id for p in reader.listing_problems) == ["13", "14", "15"]
    for ecg_id, (_, reason) in MALFORMED.items():
        rec = recs[str(ecg_id)]
        assert rec.labels == () and rec.fold == 2
        assert reader.label_matrix([rec], "all").sum() == 0
        with pytest.raises(BadRecord, match=reason):
            reader.read(rec)  # the signal is fine, the labels are not: never used unlabelled
    assert len(recs) == 15  # listed, not dropped


def test_wrong_sampling_rate_option():
    with pytest.raises(ConfigError, match="sampling_rate must be 100 or 500, got 250"):
        PtbXlReader("/nonexistent", sampling_rate=250)


def test_unknown_label_set_lists_the_known_ones(reader):
    rec = by_id(reader)["1"]
    with pytest.raises(ConfigError, match="no label set 'super'; known: superdiagnostic, sub"):
        reader.classes_of(rec, "super")
    with pytest.raises(ConfigError, match="no label set 'super'"):
        reader.label_matrix([rec], "super")


def _copy_meta(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in ("ptbxl_database.csv", "scp_statements.csv"):
        shutil.copy(src / name, dst / name)
    (dst / "records100").mkdir()
    return dst


def test_wrong_layouts_say_what_was_expected_and_found(fixture, tmp_path):
    root = fixture[0]
    with pytest.raises(DataError, match=r"expected ptbxl_database.csv, .* found nothing"):
        PtbXlReader(tmp_path)

    no_statements = _copy_meta(root, tmp_path / "a")
    (no_statements / "scp_statements.csv").unlink()
    with pytest.raises(DataError, match=r"found ptbxl_database.csv, records100/"):
        PtbXlReader(no_statements)

    only_lr = _copy_meta(root, tmp_path / "b")
    with pytest.raises(DataError, match=r"sampling_rate=500: expected .* records500/"):
        PtbXlReader(only_lr, sampling_rate=500)

    no_column = _copy_meta(root, tmp_path / "c")
    table = pd.read_csv(no_column / "ptbxl_database.csv").drop(columns=["strat_fold"])
    table.to_csv(no_column / "ptbxl_database.csv", index=False)
    with pytest.raises(DataError, match=r"missing \['strat_fold'\]"):
        PtbXlReader(no_column)

    statements_without_class = _copy_meta(root, tmp_path / "d")
    text = pd.read_csv(io.StringIO(statements_csv()), index_col=0).drop(
        columns=["diagnostic_class"]
    )
    text.to_csv(statements_without_class / "scp_statements.csv")
    with pytest.raises(DataError, match=r"scp_statements.csv must have .* \['diagnostic_class'\]"):
        PtbXlReader(statements_without_class)

    with pytest.raises(DataError, match="is not a directory"):
        PtbXlReader(tmp_path / "absent")
