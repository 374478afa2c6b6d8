"""The prepared cache's key: one definition, the source folder's content in it, pinned.

A prepared dataset is found again by `prepared_key` (everything the spec and the code decide:
dataset, source version, label set and reader options with their defaults, bad-record
policy, `Preprocessing.key()` with the preprocessing code's constants, cache format) and,
for a real dataset, by the fingerprint of its source folder (file names and sizes), so
another folder never gets an earlier folder's arrays.
"""

from __future__ import annotations

import json
import shutil

import pytest

from study.cli import main
from study.data import PreparedDataset, prepare, prepared_key
from study.data import preprocess as pre_module
from study.data.config import DatasetConfig
from study.data.sources import folder_fingerprint
from study.errors import DataError
from tests.data.readers.test_ptbxl import write_ptbxl


@pytest.fixture(scope="module")
def ptbxl(tmp_path_factory):
    root = tmp_path_factory.mktemp("ptbxl") / "ptbxl"
    root.mkdir()
    write_ptbxl(root)
    return root


def test_a_prepared_dataset_is_not_reused_for_another_source_folder(ptbxl, tmp_path, capsys):
    """The defect: after preparing PTB-XL, a folder holding only readme.txt was answered with
    the earlier folder's arrays ("prepared ptbxl: 37 records of 20 patients", exit 0)."""
    cache = tmp_path / "cache"
    assert main(["data", "prepare", "ptbxl", "--source", str(ptbxl), "--cache", str(cache)]) == 0
    assert "prepared ptbxl:" in capsys.readouterr().out
    other = tmp_path / "other"
    other.mkdir()
    (other / "readme.txt").write_text("not PTB-XL")
    assert main(["data", "prepare", "ptbxl", "--source", str(other), "--cache", str(cache)]) == 2
    captured = capsys.readouterr()
    assert "prepared ptbxl" not in captured.out
    assert "ptbxl_database.csv" in captured.err and "readme.txt" in captured.err
    missing = tmp_path / "nowhere"
    assert main(["data", "prepare", "ptbxl", "--source", str(missing), "--cache", str(cache)]) == 2
    assert f"dataset folder {missing} does not exist" in capsys.readouterr().err


def test_moving_a_folder_keeps_its_cache_and_changing_it_does_not(ptbxl, tmp_path):
    cache = tmp_path / "cache"
    first = prepare("ptbxl", cache, DatasetConfig(source=str(ptbxl)))
    moved = tmp_path / "moved" / "ptbxl-copy"
    shutil.copytree(ptbxl, moved)
    assert prepare("ptbxl", cache, DatasetConfig(source=str(moved))) == first
    assert folder_fingerprint(moved) == folder_fingerprint(ptbxl)
    # a corrected download: one file of another size
    csv = moved / "ptbxl_database.csv"
    csv.write_text(csv.read_text() + "\n")
    changed = prepare("ptbxl", cache, DatasetConfig(source=str(moved)))
    assert changed != first and changed.parent == first.parent
    assert changed.name.startswith(prepared_key("ptbxl", DatasetConfig(source=str(moved))))
    # a file added, or one removed, moves the fingerprint too
    (moved / "extra.txt").write_text("x")
    assert folder_fingerprint(moved) != folder_fingerprint(ptbxl)
    # hidden files and unfinished downloads are not content
    (ptbxl / ".download-verified.json").write_text("{}")
    (ptbxl / "records100" / "x.dat.part").write_bytes(b"12")
    try:
        assert folder_fingerprint(ptbxl).digest == PreparedDataset(first).fingerprint
    finally:
        (ptbxl / ".download-verified.json").unlink()
        (ptbxl / "records100" / "x.dat.part").unlink()
    meta = json.loads((first / "meta.json").read_text())
    assert meta["source_files"] == folder_fingerprint(ptbxl).files


def test_a_folder_given_another_preparations_copy_is_refused(ptbxl, tmp_path):
    from study.data.prepared import prepare_to

    cfg = DatasetConfig(source=str(ptbxl))
    dest = tmp_path / "study" / "prepared" / prepared_key("ptbxl", cfg)
    prepare_to("ptbxl", cfg, dest, folder_fingerprint(ptbxl))
    other = tmp_path / "other"
    shutil.copytree(ptbxl, other)
    (other / "scp_statements.csv").write_text((other / "scp_statements.csv").read_text() + " ")
    with pytest.raises(DataError, match="was prepared from a ptbxl folder with other content"):
        prepare_to("ptbxl", DatasetConfig(source=str(other)), dest, folder_fingerprint(other))


def test_the_key_covers_the_preprocessing_codes_own_constants(monkeypatch):
    """The defect: the key in use (DatasetConfig.key_fields) left out the filters', the
    resampler's and the noise models' constants and the preprocessing version, so a change
    to them served stale caches."""
    noisy = DatasetConfig(
        preprocessing={"bandpass": [0.5, 40], "fs": 100, "noise": {"kind": "muscle", "snr_db": 6}}
    )
    scal = DatasetConfig(preprocessing={"leads": ["II"], "scalogram": {}})
    before = (prepared_key("synth_tiny", noisy), prepared_key("synth_tiny", scal))
    for name, value in (
        ("PREPROCESS_VERSION", 2),
        ("BANDPASS_ORDER", 4),
        ("_RESAMPLE_WINDOW", ("kaiser", 8.0)),
        ("_MUSCLE_BAND", (20.0, 100.0)),
        ("_WANDER_COMPONENTS", 5),
    ):
        with monkeypatch.context() as m:
            m.setattr(pre_module, name, value)
            assert prepared_key("synth_tiny", noisy) != before[0], name
    for name, value in (("_NORM", "energy"), ("_RESIZE", "scipy.ndimage.zoom order=3")):
        with monkeypatch.context() as m:
            m.setattr(pre_module, name, value)
            assert prepared_key("synth_tiny", scal) != before[1], name


def test_defaults_named_or_left_out_give_one_key():
    assert prepared_key("ptbxl", DatasetConfig(source="/a")) == prepared_key(
        "ptbxl",
        DatasetConfig(source="/b", label_set="superdiagnostic", options={"sampling_rate": 100}),
    )
    assert prepared_key("icentia11k", DatasetConfig(label_set="beat")) == prepared_key(
        "icentia11k",
        DatasetConfig(label_set="beat", options={"frame_len": 2048, "frames_per_record": 8}),
    )


# The keys of a few fixed preparations. A change here means every prepared cache and every
# unit id of a study that uses such a dataset moves: make it on purpose (bump a version,
# say so in the release note), never by accident.
GOLDEN_KEYS = [
    ("synth_tiny", {}, "synth_tiny-508fa6877b"),
    (
        "synth_down_x",
        {"preprocessing": {"fs": 250, "length": 2500, "normalize": "zscore"}},
        "synth_down_x-c6fbc7c5ad",
    ),
    (
        "ptbxl",
        {"source": "/data/ptbxl", "preprocessing": {"fs": 100, "bandpass": [0.5, 40]}},
        "ptbxl-b9165473b9",
    ),
    (
        "cpsc2019",
        {
            "source": "/data/cpsc2019",
            "preprocessing": {"fs": 250, "noise": {"kind": "mixed", "snr_db": 0, "seed": 1}},
        },
        "cpsc2019-f2f5e31ad5",
    ),
    (
        "icentia11k",
        {"source": "/d", "label_set": "rhythm", "options": {"frames_per_record": 4}},
        "icentia11k-b0a8bb4434",
    ),
    (
        "cinc2017",
        {
            "source": "/d",
            "label_set": "af_normal",
            "preprocessing": {"fs": 300, "length": 1500, "leads": ["I"], "scalogram": {}},
        },
        "cinc2017-508affe10a",
    ),
]


@pytest.mark.parametrize(("name", "config", "key"), GOLDEN_KEYS, ids=[g[0] for g in GOLDEN_KEYS])
def test_golden_keys(name, config, key):
    assert prepared_key(name, DatasetConfig(**config)) == key
