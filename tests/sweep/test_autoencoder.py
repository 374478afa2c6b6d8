"""Jang et al.'s protocol: pretrain a convolutional autoencoder on lead II, fine-tune its
encoder (no Ray: the units run in this process)."""

from __future__ import annotations

import math

import pytest

from study.errors import ConfigError
from study.store import Store
from study.sweep.execute import run_finetune_unit, run_pretrain_worker
from study.sweep.load import parse_spec
from study.sweep.runner import init_study, prepare_datasets

SPEC = {
    "name": "ae",
    "architectures": [{"name": "cae", "options": {"base_width": 4, "depth": 2}}],
    "upstream": ["synth_tiny"],
    "downstream": ["synth_tiny"],
    "self_pairs": "patient_disjoint",
    "datasets": {"synth_tiny": {"preprocessing": {"leads": ["II"]}}},
    "pretrain": {
        "task": "autoencoder",
        "epochs": 4,
        "num_workers": 1,
        "batch_size": 8,
        "lr": 0.003,
    },
    "finetune": {
        "freeze_depths": [0, "all"],
        "data_fractions": [1.0],
        "repeats": 1,
        "epochs": 2,
        "batch_size": 8,
    },
}


def test_autoencoder_pretraining_then_fine_tuning(tmp_path, cache_dir):
    spec = parse_spec(SPEC)
    store = Store(str(tmp_path / "ae"))
    plan = init_study(store, spec)
    prepare_datasets(store, spec)
    pre = plan.by_stage("pretrain")[0]
    assert pre.config.pretrain_task == "autoencoder"
    run_pretrain_worker(pre, store, {}, rank=0, world_size=1)
    epochs = store.read_dataset("results/epochs").to_pandas()
    losses = epochs[epochs.unit_id == pre.unit_id].sort_values("epoch").val_loss.tolist()
    assert losses[-1] < losses[0]  # it learns to reconstruct
    assert all(math.isnan(v) for v in epochs.val_macro_auroc)  # no labels were used
    rows = [run_finetune_unit(u, store, {}) for u in plan.units if u.stage != "pretrain"]
    by_init = {(r["init"], r["freeze_depth"]): r for r in rows}
    assert by_init[("pretrained", 0)]["pretrain_task"] == "autoencoder"
    # the classifiers carry no decoder: the fine-tuned and scratch models are the same model
    assert (
        by_init[("pretrained", 0)]["trainable_params"]
        == by_init[("scratch", 0)]["trainable_params"]
    )
    linear_probe = by_init[("pretrained", 3)]
    assert linear_probe["trainable_params"] < by_init[("scratch", 0)]["trainable_params"]


def test_autoencoder_task_needs_an_architecture_that_reconstructs():
    bad = {**SPEC, "architectures": [{"name": "resnet1d18", "options": {"base_width": 4}}]}
    with pytest.raises(
        ConfigError,
        match=r"autoencoder task cannot pretrain resnet1d18\[base_width=4\]: it does not",
    ):
        parse_spec(bad)
    no_decoder = {**SPEC, "architectures": [{"name": "cae", "options": {"with_decoder": False}}]}
    with pytest.raises(
        ConfigError, match=r"cannot pretrain cae\[with_decoder=False\]: it does not reconstruct"
    ):
        parse_spec(no_decoder)
