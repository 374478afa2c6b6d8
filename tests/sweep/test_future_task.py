"""Weimann & Conrad's `future` (CPC) task through the study pipeline, in this process: a
resnet18v2 encoder pretrained contrastively, then fine-tuned; and a task list as an axis."""

from __future__ import annotations

import json

import pytest

from study.errors import ConfigError
from study.store import Store
from study.sweep.execute import run_finetune_unit, run_pretrain_worker
from study.sweep.load import parse_spec
from study.sweep.runner import init_study, prepare_datasets

# synth_tiny records are 500 samples: 4 context windows + 1 future window of 100 samples.
SPEC = {
    "name": "cpc",
    "architectures": [{"name": "resnet18v2", "options": {"base_width": 4}}],
    "upstream": ["synth_tiny"],
    "downstream": ["synth_tiny"],
    "self_pairs": "patient_disjoint",
    "datasets": {"synth_tiny": {"preprocessing": {"leads": ["II"]}}},
    "pretrain": {
        "task": ["future", "classification"],
        "task_options": {
            "future": {"window_length": 100, "context_windows": 4, "num_negatives": 2}
        },
        "epochs": 2,
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


def test_future_pretraining_then_fine_tuning_from_its_encoder(tmp_path, cache_dir):
    spec = parse_spec(SPEC)
    store = Store(str(tmp_path / "cpc"))
    plan = init_study(store, spec)
    prepare_datasets(store, spec, plan.units)
    pre = {u.config.pretrain_task: u for u in plan.by_stage("pretrain")}
    assert set(pre) == {"future", "classification"}
    assert pre["future"].config.task_options["window_length"] == 100
    run_pretrain_worker(pre["future"], store, {}, rank=0, world_size=1)
    info = store.read_json(f"pretrained/{pre['future'].unit_id}/model.json")
    assert info["objective"] == "contrastive"
    # the stored weights are the encoder's alone (no context network)
    from study.training import load_state_bytes

    weights = load_state_bytes(store.read_bytes(f"pretrained/{pre['future'].unit_id}/model.pt"))
    assert not any(k.startswith(("context.", "encoder.")) for k in weights)
    ft = next(u for u in plan.by_stage("finetune") if u.config.pretrain_task == "future")
    row = run_finetune_unit(ft, store, {})
    assert row["pretrain_task"] == "future" and row["task"] == "multi_label"
    assert 0.0 <= row["test_macro_auroc"] <= 1.0
    assert set(json.loads(row["test_per_class_f1"])) == {"NORM", "AF", "RBBB"}


def test_future_task_options_are_checked_at_load_time():
    bad = json.loads(json.dumps(SPEC))
    bad["pretrain"]["task_options"]["future"]["windows"] = 3
    with pytest.raises(
        ConfigError, match="pretrain.task_options.future: the future task has no option 'windows'"
    ):
        parse_spec(bad)
