"""CODE test-set reader on a folder laid out as the extracted data.zip (HDF5 + CSV)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from study.data.readers import READERS, BadRecord
from study.data.readers.code15 import ABNORMALITIES, STORED_LEADS, Code15TestReader
from study.errors import ConfigError, DataError

FS = 400
# exam -> (recorded samples, gold-standard flags in ABNORMALITIES order)
EXAMS = {
    0: (4000, (0, 1, 0, 0, 0, 0)),  # 10 s: 48 zeros each side
    1: (2800, (1, 0, 0, 1, 0, 0)),  # 7 s: 648 zeros each side
    2: (4096, (0, 0, 0, 0, 0, 0)),  # fills the array; none of the six
    3: (4000, (0, 0, 1, 0, 0, 0)),  # all zeros: bad
    4: (4000, (0, 0, 0, 0, 0, 0)),  # a NaN: bad
    5: (4000, (0, 0, 0, 0, 1, 0)),  # columns 3-5 hold aVR, aVL, aVF: bad order
    6: (4000, (2, 0, 0, 0, 0, 0)),  # a flag that is not 0/1
    7: (4000, (0, 0, 0, 0, 1, 1)),
}


def exam(n: int, seed: int, order: tuple[str, ...] = STORED_LEADS) -> np.ndarray:
    """(n, 12) mV in `order`: I and II and V1-V6 drawn, the other limb leads derived."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / FS

    def wave() -> np.ndarray:
        phase = rng.uniform(0, 2 * np.pi)
        return rng.uniform(0.3, 1.5) * np.sin(2 * np.pi * rng.uniform(1, 3) * t + phase)

    lead_i, lead_ii = wave(), wave()
    leads = {
        "I": lead_i,
        "II": lead_ii,
        "III": lead_ii - lead_i,
        "aVR": -(lead_i + lead_ii) / 2,
        "aVL": lead_i - lead_ii / 2,
        "aVF": lead_ii - lead_i / 2,
    }
    leads.update({f"V{k}": wave() for k in range(1, 7)})
    return np.stack([leads[name] for name in order], axis=1)


def write_code(root: Path) -> dict[int, np.ndarray]:
    """ecg_tracings.hdf5, attributes.csv and annotations/gold_standard.csv; returns the
    recorded (unpadded) part of each exam."""
    tracings = np.zeros((len(EXAMS), 4096, 12))
    recorded = {}
    for i, (n, _) in EXAMS.items():
        order = STORED_LEADS
        if i == 5:  # the order of the model README, not of the data
            order = ("I", "II", "III", "aVR", "aVL", "aVF", *STORED_LEADS[6:])
        x = exam(n, seed=i, order=order)
        if i == 0:
            x[1000:1010] = 0.0  # a zero stretch inside the recording stays
        if i == 3:
            x[:] = 0.0
        if i == 4:
            x[100, 2] = np.nan
        start = (4096 - n) // 2
        tracings[i, start : start + n] = x
        recorded[i] = x
    with h5py.File(root / "ecg_tracings.hdf5", "w") as f:
        f.create_dataset("tracings", data=tracings)  # float64, as in the published file
    gold = pd.DataFrame([flags for _, flags in EXAMS.values()], columns=list(ABNORMALITIES))
    (root / "annotations").mkdir()
    gold.to_csv(root / "annotations" / "gold_standard.csv", index=False)
    gold.to_csv(root / "annotations" / "cardiologist1.csv", index=False)
    attributes = pd.DataFrame({"age": [50 + i for i in EXAMS], "sex": ["M", "F"] * 4})
    attributes.to_csv(root / "attributes.csv", index=False)
    return recorded


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("code")
    return root, write_code(root)


@pytest.fixture(scope="module")
def reader(fixture) -> Code15TestReader:
    return Code15TestReader(fixture[0])


def test_registered_under_its_name():
    assert READERS.get("code15_test") is Code15TestReader


def test_records_are_exams_in_file_order(reader):
    recs = reader.records()
    assert [r.record_id for r in recs] == [str(i) for i in EXAMS]
    assert [r.patient_id for r in recs] == [str(i) for i in EXAMS]  # one exam per patient
    assert recs[1].labels == ("1dAVb", "SB") and recs[7].labels == ("AF", "ST")
    assert (recs[0].fs, recs[0].n_samples, recs[0].lead_names, recs[0].fold) == (
        400.0,
        None,  # known only once the padding is trimmed
        STORED_LEADS,
        None,
    )
    assert recs[3].meta == {"stored_samples": 4096, "age": 53, "sex": "F"}


@pytest.mark.parametrize("i", [0, 1, 2, 7])
def test_read_trims_the_padding_and_keeps_millivolts(fixture, reader, i):
    sig = reader.read(reader.records()[i])
    n = EXAMS[i][0]
    assert sig.data.dtype == np.float32 and sig.data.shape == (12, n)
    assert sig.fs == 400.0 and sig.lead_names == STORED_LEADS
    np.testing.assert_allclose(sig.data, fixture[1][i].T, atol=1e-6)


def test_untrimmed_exams_keep_all_4096_samples(fixture):
    reader = Code15TestReader(fixture[0], trim_padding=False)
    rec = reader.records()[1]
    assert rec.n_samples == 4096
    sig = reader.read(rec)
    assert sig.data.shape == (12, 4096)
    assert not sig.data[:, :648].any() and not sig.data[:, -648:].any()
    np.testing.assert_allclose(sig.data[:, 648:-648], fixture[1][1].T, atol=1e-6)


def test_the_stored_order_is_aVL_aVF_aVR(fixture, reader):
    x = reader.read(reader.records()[0]).data
    names = dict(zip(STORED_LEADS, x, strict=True))
    np.testing.assert_allclose(names["aVR"], -(names["I"] + names["II"]) / 2, atol=1e-5)
    np.testing.assert_allclose(names["aVL"], (names["I"] - names["III"]) / 2, atol=1e-5)
    np.testing.assert_allclose(names["aVF"], (names["II"] + names["III"]) / 2, atol=1e-5)


CODE6 = [
    (0, 1, 0, 0, 0, 0),
    (1, 0, 0, 1, 0, 0),
    (0, 0, 0, 0, 0, 0),
    (0, 0, 1, 0, 0, 0),
    (0, 0, 0, 0, 0, 0),
    (0, 0, 0, 0, 1, 0),
    (0, 0, 0, 0, 0, 0),  # its row is malformed: no labels
    (0, 0, 0, 0, 1, 1),
]
NORM = [0, 0, 1, 0, 1, 0, 0, 0]  # none of the six (not for the malformed row)


def test_code6_and_code7(reader):
    recs = reader.records()
    assert reader.label_sets["code6"] == ("1dAVb", "RBBB", "LBBB", "SB", "AF", "ST")
    assert reader.label_sets["code7"] == (*reader.label_sets["code6"], "NORM")
    np.testing.assert_array_equal(reader.label_matrix(recs), np.array(CODE6, dtype=np.uint8))
    want7 = np.column_stack([np.array(CODE6), NORM]).astype(np.uint8)
    np.testing.assert_array_equal(reader.label_matrix(recs, "code7"), want7)
    assert reader.classes_of(recs[2], "code7") == {"NORM"}
    with pytest.raises(ConfigError, match="no label set 'code5'; known: code6, code7"):
        reader.classes_of(recs[0], "code5")


@pytest.mark.parametrize(
    ("i", "reason"),
    [
        (3, r"every sample of every lead is 0"),
        (4, r"1 NaN or infinite samples"),
        (5, r"do not fit the stored order .* columns 2-5 fit \['III', 'aVR', 'aVL', 'aVF'\]"),
        (6, r"gold_standard.csv values must be 0 or 1, got \{'1dAVb': 2\}"),
    ],
)
def test_bad_records_name_their_reason(reader, i, reason):
    with pytest.raises(BadRecord, match=reason) as err:
        reader.read(reader.records()[i])
    assert err.value.record_id == str(i)


def test_lead_order_check_can_be_turned_off(fixture):
    reader = Code15TestReader(fixture[0], check_lead_order=False)
    assert reader.read(reader.records()[5]).data.shape == (12, 4000)


def test_malformed_annotation_is_counted(reader):
    reader.records()
    assert [p.record_id for p in reader.listing_problems] == ["6"]


def _layout(root: Path, tracings: np.ndarray, rows: int, name: str = "tracings") -> Path:
    root.mkdir()
    with h5py.File(root / "ecg_tracings.hdf5", "w") as f:
        f.create_dataset(name, data=tracings)
    (root / "annotations").mkdir()
    gold = pd.DataFrame(np.zeros((rows, 6), dtype=int), columns=list(ABNORMALITIES))
    gold.to_csv(root / "annotations" / "gold_standard.csv", index=False)
    return root


def test_wrong_layouts_say_what_was_expected_and_found(tmp_path):
    (tmp_path / "data").mkdir()  # data.zip extracted one level too high
    with pytest.raises(DataError, match=r"expected ecg_tracings.hdf5 and .* found data/"):
        Code15TestReader(tmp_path)

    ok = np.zeros((3, 4096, 12), dtype=np.float32)
    with pytest.raises(DataError, match=r"must hold a dataset 'tracings', found \['x'\]"):
        Code15TestReader(_layout(tmp_path / "a", ok, 3, name="x"))
    with pytest.raises(DataError, match=r"shape \(exams, 4096, 12\), got \(3, 4096, 8\)"):
        Code15TestReader(_layout(tmp_path / "b", ok[..., :8], 3))
    with pytest.raises(DataError, match=r"one row per exam of 'tracings' \(3\), got 2"):
        Code15TestReader(_layout(tmp_path / "c", ok, 2))

    root = _layout(tmp_path / "d", ok, 3)
    gold = pd.read_csv(root / "annotations" / "gold_standard.csv").drop(columns=["AF"])
    gold.to_csv(root / "annotations" / "gold_standard.csv", index=False)
    with pytest.raises(DataError, match=r"missing \['AF'\]"):
        Code15TestReader(root)

    root = _layout(tmp_path / "e", ok, 3)
    (root / "ecg_tracings.hdf5").write_text("not hdf5")
    with pytest.raises(DataError, match="is not readable HDF5"):
        Code15TestReader(root)
