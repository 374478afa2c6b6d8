"""Every experiment file shipped in experiments/ validates and expands into a plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.sweep.load import load_spec
from study.sweep.plan import make_plan

EXPERIMENTS = sorted((Path(__file__).resolve().parents[1] / "experiments").glob("*.yaml"))


def test_there_are_experiments():
    assert {p.name for p in EXPERIMENTS} >= {
        "quickstart.yaml",
        "nguyen_do_2024.yaml",
        "jang_2021.yaml",
    }


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_experiment_validates_and_plans(path):
    spec = load_spec(path)
    plan = make_plan(spec)
    assert plan.by_stage("pretrain") and plan.by_stage("finetune")
    if spec.finetune.scratch:
        assert plan.by_stage("scratch")


def test_nguyen_do_grid_size():
    plan = make_plan(load_spec(EXPERIMENTS[[p.stem for p in EXPERIMENTS].index("nguyen_do_2024")]))
    # 6 architectures x 3 upstream = 18 pretraining runs; scratch 6 x 4 down x 4 fractions x
    # 10 repeats = 960; fine-tune 6 x (3 x 4 - 3 self-pairs) x 4 x 10 = 2160
    counts = plan.counts()["stages"]
    assert (
        counts["pretrain"]["units"],
        counts["scratch"]["units"],
        counts["finetune"]["units"],
    ) == (18, 960, 2160)
