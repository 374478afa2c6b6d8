"""The Weimann & Conrad and Huerta et al. protocols through the study pipeline, in this
process (the Ray path is the same code; tests/sweep/test_smoke_local.py runs it under Ray):
frame-label pretraining on real CPSC 2021 annotations, and AlexNet on CWT scalograms."""

from __future__ import annotations

import json

import pytest

from study.store import Store
from study.sweep.execute import run_finetune_unit, run_pretrain_worker
from study.sweep.load import parse_spec
from study.sweep.runner import init_study, prepare_datasets
from tests.data.test_prepare_frames import _copy_cpsc2021_with_more_patients


def _run(spec: dict, tmp_path) -> tuple[list[dict], dict]:
    spec = parse_spec(spec)
    store = Store(str(tmp_path / spec.name))
    plan = init_study(store, spec)
    prepare_datasets(store, spec, plan.units)
    pre = {}
    for u in plan.by_stage("pretrain"):
        run_pretrain_worker(u, store, {}, rank=0, world_size=1)
        pre[u.config.pretrain_task] = store.read_json(f"pretrained/{u.unit_id}/model.json")
    rows = [run_finetune_unit(u, store, {}) for u in plan.units if u.stage != "pretrain"]
    return rows, pre


def test_weimann_conrad_frame_tasks_pretrain_then_fine_tune(realdata, tmp_path, cache_dir):
    src = _copy_cpsc2021_with_more_patients(realdata / "cpsc2021", tmp_path / "cpsc2021")
    spec = {
        "name": "wc",
        "architectures": [{"name": "resnet18v2", "options": {"base_width": 4}}],
        "upstream": ["cpsc2021"],
        "downstream": ["synth_tiny"],
        "datasets": {
            "cpsc2021": {
                "source": str(src),
                "options": {"frame_len": 1000, "frames_per_record": 2},
                "preprocessing": {"leads": ["I"]},
            },
            "synth_tiny": {"preprocessing": {"leads": ["II"]}},
        },
        "pretrain": {
            "task": ["beat", "rhythm", "heart_rate"],
            "epochs": 1,
            "num_workers": 1,
            "batch_size": 8,
        },
        "finetune": {
            "freeze_depths": [0],
            "data_fractions": [1.0],
            "repeats": 1,
            "epochs": 1,
            "batch_size": 8,
        },
    }
    rows, pre = _run(spec, tmp_path)
    # each task pretrained a single-label head over its own classes
    assert pre["beat"]["classes"] == ["undefined", "normal", "pac", "aberrated", "pvc"]
    assert pre["heart_rate"]["classes"] == ["tachy", "brady", "normal", "noise"]
    assert {p["objective"] for p in pre.values()} == {"single_label"}
    ft = [r for r in rows if r["init"] == "pretrained"]
    assert sorted(r["pretrain_task"] for r in ft) == ["beat", "heart_rate", "rhythm"]
    assert all(r["task"] == "multi_label" and r["n_train"] > 0 for r in rows)


def test_huerta_alexnet_on_scalograms_freezes_layers_one_to_k(tmp_path, cache_dir):
    scalogram = {"freqs": [1.0, 40.0], "n_scales": 16, "size": [64, 64]}
    spec = {
        "name": "huerta",
        "architectures": [{"name": "alexnet2d", "options": {"base_width": 4, "hidden_size": 32}}],
        "upstream": ["synth_tiny"],
        "downstream": ["synth_tiny"],
        "self_pairs": "patient_disjoint",
        "datasets": {"synth_tiny": {"preprocessing": {"leads": ["II"], "scalogram": scalogram}}},
        "pretrain": {"epochs": 1, "num_workers": 1, "batch_size": 8},
        "finetune": {
            "freeze_depths": [0, 3, 7],
            "data_fractions": [1.0],
            "repeats": 1,
            "epochs": 1,
            "batch_size": 8,
        },
    }
    rows, _ = _run(spec, tmp_path)
    by_depth = {r["freeze_depth"]: r for r in rows if r["init"] == "pretrained"}
    scratch = next(r for r in rows if r["init"] == "scratch")
    assert by_depth[0]["trainable_params"] == scratch["trainable_params"]
    assert (
        scratch["trainable_params"]
        > by_depth[3]["trainable_params"]
        > by_depth[7]["trainable_params"]
    )
    # depth 7 leaves only fc8, the classifier: 32 hidden units x 3 classes + 3 biases
    assert by_depth[7]["trainable_params"] == 32 * 3 + 3
    assert all(0.0 <= r["test_macro_auroc"] <= 1.0 for r in rows)
    assert len(json.loads(scratch["decision_thresholds"])) == 3


def test_a_frame_task_on_a_dataset_without_frames_is_refused():
    from study.errors import ConfigError

    with pytest.raises(ConfigError, match="the rhythm task trains on the upstream label set"):
        parse_spec(
            {
                "name": "x",
                "architectures": ["resnet18v2"],
                "upstream": ["synth_up_a"],
                "downstream": ["synth_down_x"],
                "pretrain": {"task": "rhythm"},
            }
        )
