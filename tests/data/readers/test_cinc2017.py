"""CinC 2017 reader on a folder in the challenge's layout (WFDB header + MATLAB v4 .mat)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import wfdb

from study.cli import main
from study.data import PreparedDataset, prepare
from study.data.config import DatasetConfig
from study.data.readers import READERS, BadRecord
from study.data.readers.cinc2017 import Cinc2017Reader
from study.errors import ConfigError, DataError

GOOD = {"A00001": "N", "A00002": "A", "A00003": "O", "A00004": "~"}
NESTED = {"A01005": "A"}  # PhysioNet's tree: training/A01/A01005.hea
BAD = {
    "A00005": ("N", r"listed in REFERENCE.csv but A00005.hea is not on disk"),
    "A00006": ("X", r"unknown label 'X' in REFERENCE.csv \(known: \['N', 'A', 'O', '~'\]\)"),
    "A00007": ("N", r"shorter than the header's 900 samples \(truncated\?\)"),
    "A00008": ("O", r"every lead is flat"),
    "A00009": ("A", r"sampling rate 500(\.0)? Hz, the dataset records at 300\.0 Hz"),
    "A00010": ("N", r"leads \['ECG', 'ECG2'\], expected the single lead \['ECG'\]"),
    "A00011": ("N", r"1 NaN or infinite samples"),
    "A00012": ("~", r"listed in REFERENCE.csv but A00012.mat is not on disk"),
}


def digital(n: int, seed: int, leads: int = 1) -> np.ndarray:
    """(samples, leads) int16 ADC values (1000 per mV, as the challenge's headers say)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 300
    x = 800 * np.sin(2 * np.pi * rng.uniform(1, 3, leads) * t[:, None]) + rng.normal(0, 20, (n, 1))
    return np.round(x).astype(np.int16)


def write_cinc_record(folder: Path, name: str, d: np.ndarray, fs: int = 300, names=None) -> None:
    """Header as the challenge ships it ("A00001.mat 16+24 1000/mV ... ECG") and the signal
    as MATLAB v4 variable `val` (24 bytes of MAT header, then the int16 samples)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = names or ["ECG"]
    wfdb.wrsamp(
        name,
        fs=fs,
        units=["mV"] * len(names),
        sig_name=names,
        d_signal=d,
        fmt=["16"] * len(names),
        adc_gain=[1000.0] * len(names),
        baseline=[0] * len(names),
        write_dir=str(folder),
    )
    (folder / f"{name}.dat").unlink()
    scipy.io.savemat(folder / f"{name}.mat", {"val": d.T}, format="4")
    hea = folder / f"{name}.hea"
    lines = hea.read_text().splitlines()
    lines[0] += " 05:05:15 1/05/2000"
    lines[1:] = [
        re.sub(rf"^{name}\.dat 16 1000(\.0)?\(0\)/mV", f"{name}.mat 16+24 1000/mV", line)
        for line in lines[1:]
    ]
    assert all(line.startswith(f"{name}.mat 16+24 1000/mV ") for line in lines[1:])
    hea.write_text("\n".join(lines) + "\n")


def write_cinc(root: Path) -> dict[str, np.ndarray]:
    training = root / "training"
    written = {}
    for k, name in enumerate([*GOOD, *NESTED]):
        d = digital(900 + 300 * k, seed=k)
        folder = training / "A01" if name in NESTED else training
        write_cinc_record(folder, name, d)
        written[name] = d
    write_cinc_record(training, "A00006", digital(900, 6))  # fine signal, unknown label
    write_cinc_record(training, "A00007", digital(900, 7))
    mat = training / "A00007.mat"
    mat.write_bytes(mat.read_bytes()[:-600])
    write_cinc_record(training, "A00008", np.zeros((900, 1), dtype=np.int16))
    write_cinc_record(training, "A00009", digital(900, 9), fs=500)
    write_cinc_record(training, "A00010", digital(900, 10, leads=2), names=["ECG", "ECG2"])
    nan = digital(900, 11)
    nan[17, 0] = -32768  # WFDB's invalid-sample value in format 16
    write_cinc_record(training, "A00011", nan)
    write_cinc_record(training, "A00012", digital(900, 12))
    (training / "A00012.mat").unlink()
    write_cinc_record(training, "A09999", digital(900, 99))  # on disk, not in the reference
    rows = [*GOOD.items(), *NESTED.items(), *((k, v[0]) for k, v in BAD.items())]
    (root / "REFERENCE.csv").write_text("".join(f"{k},{v}\n" for k, v in rows))
    return written


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("cinc2017")
    return root, write_cinc(root)


@pytest.fixture(scope="module")
def reader(fixture) -> Cinc2017Reader:
    return Cinc2017Reader(fixture[0])


def by_id(reader: Cinc2017Reader) -> dict:
    return {r.record_id: r for r in reader.records()}


def test_registered_under_its_name():
    assert READERS.get("cinc2017") is Cinc2017Reader


def test_the_fixture_header_looks_like_the_challenge(fixture):
    head = (fixture[0] / "training" / "A00001.hea").read_text().splitlines()
    assert head[0] == "A00001 1 300 900 05:05:15 1/05/2000"
    assert head[1].startswith("A00001.mat 16+24 1000/mV 16 0 ") and head[1].endswith(" ECG")
    assert (fixture[0] / "training" / "A00001.mat").read_bytes()[20:24] == b"val\x00"


def test_records_follow_the_reference_file(reader):
    recs = reader.records()
    assert [r.record_id for r in recs] == [*GOOD, *NESTED, *BAD]
    r = by_id(reader)
    assert r["A00002"].labels == ("A",) and r["A00002"].patient_id == "A00002"
    assert (r["A00001"].fs, r["A00001"].lead_names, r["A00001"].fold) == (300.0, ("ECG",), None)
    assert r["A01005"].meta["file"] == "training/A01/A01005"


def test_read_returns_the_written_millivolts(fixture, reader):
    recs = by_id(reader)
    for name, d in fixture[1].items():
        sig = reader.read(recs[name])
        assert sig.data.dtype == np.float32 and sig.data.shape == (1, len(d))
        assert sig.fs == 300.0 and sig.lead_names == ("ECG",)
        np.testing.assert_allclose(sig.data[0], d[:, 0] / 1000, atol=1e-6)


def test_labels_are_one_hot_n_a_o_noise(reader):
    recs = [by_id(reader)[k] for k in [*GOOD, *NESTED, "A00006"]]
    assert reader.label_sets["cinc2017"] == ("N", "A", "O", "~")
    np.testing.assert_array_equal(
        reader.label_matrix(recs),
        np.array(
            [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0]],
            dtype=np.uint8,
        ),
    )
    with pytest.raises(
        ConfigError, match="no label set 'af'; known: cinc2017, af_normal, af_other"
    ):
        reader.classes_of(recs[0], "af")


def test_every_label_set_is_single_label_with_the_positive_class_second():
    assert Cinc2017Reader.label_sets == {
        "cinc2017": ("N", "A", "O", "~"),
        "af_normal": ("N", "A"),
        "af_other": ("non_A", "A"),
    }
    assert Cinc2017Reader.label_kinds == dict.fromkeys(Cinc2017Reader.label_sets, "single_label")


# letters N, A, O, ~ (GOOD), A (NESTED), then X (unknown): the row each set gives
BINARY = {
    "af_normal": [[1, 0], [0, 1], [0, 0], [0, 0], [0, 1], [0, 0]],  # O and ~ have no class
    "af_other": [[1, 0], [0, 1], [1, 0], [1, 0], [0, 1], [0, 0]],  # N, O, ~ are all non_A
}


@pytest.mark.parametrize("label_set", BINARY)
def test_binary_af_label_sets(reader, label_set):
    recs = [by_id(reader)[k] for k in [*GOOD, *NESTED, "A00006"]]
    np.testing.assert_array_equal(
        reader.label_matrix(recs, label_set), np.array(BINARY[label_set], dtype=np.uint8)
    )
    assert reader.classes_of(recs[0], label_set) == {"N" if label_set == "af_normal" else "non_A"}
    assert reader.classes_of(recs[1], label_set) == {"A"}


@pytest.mark.parametrize(("name", "reason"), [(k, v[1]) for k, v in BAD.items()])
def test_bad_records_name_their_reason(reader, name, reason):
    with pytest.raises(BadRecord, match=reason) as err:
        reader.read(by_id(reader)[name])
    assert err.value.record_id == name


def test_missing_files_and_unknown_letters_are_counted_when_listing(reader):
    recs = by_id(reader)
    assert [p.record_id for p in reader.listing_problems] == ["A00005", "A00006", "A00012"]
    assert "not on disk" in recs["A00005"].meta["problem"]
    assert recs["A00006"].labels == () and recs["A00006"].meta["label"] == "X"
    assert "A09999" not in recs  # on disk but unlabelled: not a record of the dataset


def test_another_reference_file_can_be_named(fixture, tmp_path):
    root = fixture[0]
    (root / "REFERENCE-v3.csv").write_text("A00001,O\n")
    try:
        reader = Cinc2017Reader(root, reference="REFERENCE-v3.csv")
        (rec,) = reader.records()
        assert rec.labels == ("O",)
    finally:
        (root / "REFERENCE-v3.csv").unlink()


def test_wrong_layouts_say_what_was_expected_and_found(tmp_path):
    (tmp_path / "RECORDS").write_text("A00001\n")
    with pytest.raises(DataError, match=r"expected training/ with .* found RECORDS"):
        Cinc2017Reader(tmp_path)

    (tmp_path / "training").mkdir()
    (tmp_path / "REFERENCE-v3.csv").write_text("A00001,N\n")
    with pytest.raises(DataError, match=r"REFERENCE.csv is missing .* \['REFERENCE-v3.csv'\]"):
        Cinc2017Reader(tmp_path)  # never an empty reader

    (tmp_path / "REFERENCE.csv").write_text("\n")
    with pytest.raises(DataError, match="must list at least one record, got none"):
        Cinc2017Reader(tmp_path)
    (tmp_path / "REFERENCE.csv").write_text("A00001,N\nA00002\n")
    with pytest.raises(DataError, match=r"line 2 of .* must be 'record,label' .* got 'A00002'"):
        Cinc2017Reader(tmp_path)
    (tmp_path / "REFERENCE.csv").write_text("A00001,N\nA00001,A\n")
    with pytest.raises(DataError, match=r"lists record A00001 twice \(line 2\)"):
        Cinc2017Reader(tmp_path)


def write_labelled_cinc(root: Path, letters: dict[str, int]) -> list[tuple[str, str]]:
    """A challenge-layout folder with `letters[L]` good 3-s records of each letter L."""
    rows: list[tuple[str, str]] = []
    for letter, n in letters.items():
        for _ in range(n):
            rows.append((f"A{len(rows) + 1:05d}", letter))
    for k, (name, _) in enumerate(rows):
        write_cinc_record(root / "training", name, digital(900, seed=100 + k))
    (root / "REFERENCE-v3.csv").write_text("".join(f"{k},{v}\n" for k, v in rows))
    return rows


def test_af_normal_prepares_n_and_a_records_and_drops_the_rest(tmp_path):
    rows = write_labelled_cinc(tmp_path / "src", {"N": 20, "A": 20, "O": 6, "~": 4})
    cfg = DatasetConfig(
        source=str(tmp_path / "src"),
        label_set="af_normal",
        options={"reference": "REFERENCE-v3.csv"},
    )
    data = PreparedDataset(prepare("cinc2017", tmp_path / "cache", cfg))
    report = data.meta["report"]
    assert data.classes == ["N", "A"] and data.label_kind == "single_label"
    assert (report["records_kept"], report["unlabelled_dropped"]) == (40, 10)
    letter = dict(rows)
    kept = data.records.record_id.tolist()
    assert sorted(kept) == sorted(k for k, v in rows if v in "NA")
    np.testing.assert_array_equal(
        data.labels, np.array([[letter[k] == "N", letter[k] == "A"] for k in kept], np.uint8)
    )


def test_prepare_says_the_split_is_by_record(tmp_path, capsys):
    # CinC 2017 publishes no patient ids: each record is its own patient, and the prepared
    # copy and `study data prepare` say so instead of claiming a patient-level split.
    write_labelled_cinc(tmp_path / "src", {"N": 20, "A": 20})
    cache = tmp_path / "cache"
    argv = ["data", "prepare", "cinc2017", "--source", str(tmp_path / "src")]
    argv += ["--cache", str(cache), "--option", "reference=REFERENCE-v3.csv"]
    assert main(argv) == 0
    assert "  split by record: CinC 2017 publishes no patient ids\n" in capsys.readouterr().out
    (folder,) = cache.iterdir()
    meta = PreparedDataset(folder).meta
    assert meta["split_by"] == "record"
    assert meta["split_basis"] == "CinC 2017 publishes no patient ids"
    assert meta["n_patients"] == meta["n_records"] == 40
    # A copy prepared before meta.json recorded it: the reader's declaration is printed.
    meta_path = folder / "meta.json"
    old = {k: v for k, v in meta.items() if k not in ("split_by", "split_basis")}
    meta_path.write_text(json.dumps(old))
    assert main(argv) == 0
    assert "  split by record: CinC 2017 publishes no patient ids\n" in capsys.readouterr().out
