"""Real datasets through the prepared cache: labels, preprocessing, bad records, cache keys,
and a spec that uses them, on ../shared/realdata."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from study.data import PreparedDataset, prepare, prepared_key
from study.data.config import DatasetConfig
from study.data.readers import BadRecord
from study.errors import ConfigError, DataError
from study.sweep.load import parse_spec

PRE = {"fs": 100, "length": 1000, "normalize": "zscore"}


@pytest.fixture()
def cinc(realdata):
    return realdata / "cinc2021"


def test_georgia_prepared_from_the_real_files(cinc, tmp_path):
    cfg = DatasetConfig(source=str(cinc), preprocessing=PRE)
    data = PreparedDataset(prepare("georgia", tmp_path, cfg))
    report = data.meta["report"]
    assert report["records_listed"] == 20  # E07500-E07519
    assert data.signals.shape == (report["records_kept"], 12, 1000)
    assert data.meta["fs"] == 100 and data.meta["lead_names"][:3] == ["I", "II", "III"]
    assert data.classes[:3] == ["NORM", "AF", "IAVB"]
    # z-scored per record and lead
    x = np.asarray(data.signals[0])
    assert np.allclose(x.mean(axis=1), 0, atol=1e-3) and np.allclose(x.std(axis=1), 1, atol=1e-2)
    # every kept record has a label of the set; the dropped ones are counted
    assert data.labels.sum(axis=1).min() >= 1
    assert report["records_kept"] + report["unlabelled_dropped"] == 20
    assert set(data.records.record_id) <= {f"E075{i:02d}" for i in range(20)}


def test_cache_key_follows_every_choice_but_not_the_folder(cinc, tmp_path):
    base = DatasetConfig(source=str(cinc), preprocessing=PRE)
    keys = {
        prepared_key("georgia", base),
        prepared_key("georgia", DatasetConfig(source=str(cinc), preprocessing={**PRE, "fs": 250})),
        prepared_key(
            "georgia", DatasetConfig(source=str(cinc), preprocessing=PRE, label_set="snomed")
        ),
        prepared_key(
            "georgia", DatasetConfig(source=str(cinc), preprocessing=PRE, on_bad_record="fail")
        ),
    }
    assert len(keys) == 4
    moved = DatasetConfig(source=str(tmp_path / "elsewhere"), preprocessing=PRE)
    assert prepared_key("georgia", moved) == prepared_key("georgia", base)


def test_bad_records_are_skipped_and_listed_or_fail(cinc, tmp_path):
    src = tmp_path / "georgia"
    src.mkdir()
    for p in sorted(cinc.glob("E075*")):
        shutil.copy(p, src / p.name)
    mat = src / "E07503.mat"
    mat.write_bytes(mat.read_bytes()[:2000])  # truncated
    skip = PreparedDataset(
        prepare("georgia", tmp_path / "c1", DatasetConfig(source=str(src), preprocessing=PRE))
    )
    bad = skip.meta["report"]["bad_records"]
    assert [b["record_id"] for b in bad] == ["E07503"]
    assert "E07503" not in set(skip.records.record_id)
    with pytest.raises(BadRecord, match="E07503"):
        prepare(
            "georgia",
            tmp_path / "c2",
            DatasetConfig(source=str(src), preprocessing=PRE, on_bad_record="fail"),
        )


def test_chapman_rhythm_and_cpsc2021_af_type(realdata, tmp_path):
    chap = PreparedDataset(
        prepare(
            "chapman",
            tmp_path,
            DatasetConfig(source=str(realdata / "cinc2021"), label_set="rhythm", preprocessing=PRE),
        )
    )
    assert chap.classes[:2] == ["SB", "SR"] and len(chap.records) >= 10
    assert all(r.startswith("JS") for r in chap.records.record_id)
    # CPSC 2021's sample has 18 records of 6 patients: too few for ten patient-level folds,
    # which is an error, not a split with an empty validation or test set.
    with pytest.raises(DataError, match="needs >= 10 patients, got 6"):
        prepare(
            "cpsc2021",
            tmp_path,
            DatasetConfig(
                source=str(realdata / "cpsc2021"), preprocessing={"fs": 100, "length": 500}
            ),
        )


def _spec(**datasets):
    return {
        "name": "real",
        "architectures": [{"name": "resnet1d18", "options": {"base_width": 4}}],
        "upstream": ["chapman"],
        "downstream": ["georgia"],
        "datasets": datasets,
    }


@pytest.mark.parametrize(
    ("datasets", "fragment"),
    [
        ({"chapman": {"source": "/x"}}, "datasets.georgia.source: georgia is a real dataset"),
        (
            {"chapman": {"source": "/x"}, "georgia": {"source": "/x", "label_set": "nope"}},
            "unknown label set 'nope'; known: georgia10, snomed",
        ),
        (
            {"chapman": {"source": "/x"}, "georgia": {"source": "/x"}, "synth_tiny": {}},
            "datasets.synth_tiny: not an upstream or downstream",
        ),
        (
            {"chapman": {"source": "/x"}, "georgia": {"source": "/x", "preprocessing": {"fs": -1}}},
            "datasets.georgia.preprocessing.fs",
        ),
        (
            {"chapman": {"source": "/x"}, "georgia": {"source": "/x", "colour": 1}},
            "datasets.georgia.colour: unknown key",
        ),
    ],
)
def test_spec_dataset_entries_are_validated(datasets, fragment):
    with pytest.raises(ConfigError) as exc:
        parse_spec(_spec(**datasets))
    assert fragment in str(exc.value), str(exc.value)


def test_a_study_on_real_data_runs_one_unit_in_process(realdata, tmp_path, cache_dir):
    from study.store import Store
    from study.sweep.execute import run_finetune_unit, run_pretrain_worker
    from study.sweep.plan import make_plan
    from study.sweep.runner import init_study, prepare_datasets

    src = str(realdata / "cinc2021")
    spec = parse_spec(
        {
            **_spec(
                chapman={"source": src, "label_set": "rhythm", "preprocessing": PRE},
                georgia={"source": src, "preprocessing": PRE},
            ),
            "pretrain": {"epochs": 1, "num_workers": 1},
            "finetune": {"epochs": 1, "repeats": 1},
        }
    )
    store = Store(str(tmp_path / "real"))
    plan = init_study(store, spec)
    prepare_datasets(store, spec)
    run_pretrain_worker(plan.by_stage("pretrain")[0], store, {}, rank=0, world_size=1)
    row = run_finetune_unit(plan.by_stage("finetune")[0], store, {})
    assert row["downstream"] == "georgia" and row["n_train"] >= 10
    meta = json.loads(
        (
            tmp_path
            / "real"
            / "prepared"
            / plan.by_stage("finetune")[0].config.data_key
            / "meta.json"
        ).read_text()
    )
    assert meta["config"]["preprocessing"]["fs"] == 100
    assert len(make_plan(spec).units) == 3
