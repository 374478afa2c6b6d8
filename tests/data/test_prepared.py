"""Prepared cache, patient-level splits (and what they group by) and nested fractions."""

from __future__ import annotations

import numpy as np
import pytest

from study.cli import main
from study.data import PreparedDataset, dataset_source, list_datasets, prepare, prepared_key
from study.data.readers import READERS, DatasetReader
from study.data.sources import SPLIT_BY, ReaderSource
from study.data.splits import assign_folds, nested_subset, primary_label
from study.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def down_x(tmp_path_factory) -> PreparedDataset:
    return PreparedDataset(prepare("synth_down_x", tmp_path_factory.mktemp("cache")))


def test_list_datasets_has_the_synthetic_domains():
    assert {
        "synth_up_a",
        "synth_up_b",
        "synth_up_c",
        "synth_down_x",
        "synth_down_y",
        "synth_tiny",
    } <= set(list_datasets())


def test_splits_are_patient_disjoint_and_cover_every_record(down_x):
    rec = down_x.records
    by_split = {s: set(rec.patient_id[rec.split == s]) for s in ("train", "val", "test")}
    assert not by_split["train"] & by_split["val"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["val"] & by_split["test"]
    assert sum(len(down_x.split_indices(s)) for s in ("train", "val", "test")) == len(rec)
    assert set(rec.fold) == set(range(1, 11))
    # every class is present in the test split, so its AUROC is defined
    assert down_x.labels[down_x.split_indices("test")].sum(axis=0).min() > 0


def test_prepare_is_idempotent_and_keyed(tmp_path, down_x):
    a = prepare("synth_tiny", tmp_path)
    mtime = (a / "signals.npy").stat().st_mtime_ns
    b = prepare("synth_tiny", tmp_path)
    assert a == b and (b / "signals.npy").stat().st_mtime_ns == mtime
    assert a.name == prepared_key("synth_tiny") != prepared_key("synth_down_x")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    # the split is a function of the data alone: preparing again gives the same folds
    again = PreparedDataset(prepare("synth_down_x", tmp_path))
    assert (again.records.fold.to_numpy() == down_x.records.fold.to_numpy()).all()


def test_nested_fractions_are_nested_stratified_and_seeded_by_repeat(down_x):
    train = set(down_x.split_indices("train"))
    for repeat in range(3):
        small, mid, full = (set(down_x.train_subset(f, repeat)) for f in (0.1, 0.3, 1.0))
        assert small <= mid <= full == train
        assert len(small) < len(mid) < len(full)
        # every class with training examples keeps at least one in the smallest subset
        assert down_x.labels[sorted(small)].sum(axis=0).min() > 0
    assert set(down_x.train_subset(0.1, 0)) != set(down_x.train_subset(0.1, 1))
    assert (down_x.train_subset(0.1, 2) == down_x.train_subset(0.1, 2)).all()


# What each real dataset's "patient-level" split groups by, decided from its source: only
# these identify patients (PTB-XL's patient_id column, PTB's and Icentia11k's patient folders,
# CPSC 2021's file names; the CODE test set is one exam per patient, as published).
SPLIT_BY_OF = {
    "ptbxl": "patient",
    "ptb": "patient",
    "icentia11k": "patient",
    "cpsc2021": "patient",
    "code15_test": "patient",
    "cinc2017": "record",
    "cpsc2018": "record",
    "cpsc2018_original": "record",
    "georgia": "record",
    "chapman": "record",
    "cpsc2019": "record",
}


@pytest.mark.parametrize("name", list_datasets())
def test_every_dataset_declares_what_its_split_groups_by(name):
    source = dataset_source(name)  # the class's declaration: no data is read
    assert source.split_by in SPLIT_BY and source.split_basis.strip()
    if source.kind == "synthetic":  # the generator makes patients with several records
        assert source.split_by == "patient"
        return
    assert source.split_by == SPLIT_BY_OF[name]
    # Declared by the registered reader itself, not inherited from a family's base class.
    assert {"split_by", "split_basis"} <= set(vars(READERS.get(name)))
    if source.split_by == "record":
        assert source.describe_split().startswith("split by record: ")
        assert source.split_basis.endswith("no patient ids")
    else:
        assert source.describe_split() == f"split by patient ({source.split_basis})"


def test_every_real_dataset_is_in_the_split_table():
    assert sorted(SPLIT_BY_OF) == READERS.names()


def test_a_reader_without_a_split_declaration_is_refused():
    assert not hasattr(DatasetReader, "split_by")  # no default to inherit silently

    class Undecided(DatasetReader):
        name = "undecided"

    with pytest.raises(ConfigError, match="'undecided' .* must declare split_by, one of patient"):
        ReaderSource(Undecided)

    class Misspelt(DatasetReader):
        name = "misspelt"
        split_by = "patients"
        split_basis = "ids"

    with pytest.raises(ConfigError, match="got split_by='patients'"):
        ReaderSource(Misspelt)


def test_prepared_meta_and_prepare_output_say_what_the_split_groups_by(tmp_path, capsys):
    assert main(["data", "prepare", "synth_tiny", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "  split by patient (patient_id: the generator's patients)\n" in out
    meta = PreparedDataset(prepare("synth_tiny", tmp_path)).meta
    assert (meta["split_by"], meta["split_basis"]) == (
        "patient",
        dataset_source("synth_tiny").split_basis,
    )
    # meta.json gained the keys without a new cache key (tests/data/test_cache_key.py pins them)
    assert meta["key"] == prepared_key("synth_tiny")


def test_primary_label_is_the_rarest_positive():
    labels = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    # prevalence: class0 3, class1 3, class2 1 -> rarest first
    assert primary_label(labels).tolist() == [0, 0, 3, 2, 1]


def test_folds_keep_patients_together():
    rng = np.random.default_rng(0)
    patients = np.repeat(np.arange(40), 3)
    labels = (rng.random((120, 3)) < 0.3).astype(np.uint8)
    folds = assign_folds(labels, patients, seed=1)
    for p in range(40):
        assert len(set(folds[patients == p])) == 1


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda: assign_folds(np.zeros((5, 2)), np.arange(5), 0), DataError, ">= 10 patients"),
        (
            lambda: nested_subset(np.arange(4), np.zeros((4, 1)), 0.0, 0, "d"),
            DataError,
            "(0, 1], got 0.0",
        ),
        (lambda: prepare("no_such_dataset"), ConfigError, "unknown dataset 'no_such_dataset'"),
        (lambda: PreparedDataset("/nonexistent"), DataError, "not a prepared dataset"),
    ],
)
def test_bad_input_errors(call, error, fragment):
    with pytest.raises(error) as exc:
        call()
    assert fragment in str(exc.value)
