"""`study status` with a `search:` section: each search group's trials by state of its
budget, the best so far, whether its values are chosen, the unreadable trial parts, and a
total. Store contents written directly (spec.yaml, plan.parquet, trial parts, chosen.json):
no Ray. The store is written as `init_study` writes it, less its refusal of a search (issue
11: `study run` cannot run one yet)."""

from __future__ import annotations

import copy

import pytest

from study.cli import main
from study.schema import search_choice_path, search_trial_path
from study.store import Store
from study.sweep.load import parse_spec, spec_to_yaml
from study.sweep.plan import make_plan
from study.sweep.runner import init_study, write_plan
from study.sweep.search import SearchTrial, search_groups, write_search_trial
from study.sweep.status import inspect_study
from tests.sweep._smoke import SMOKE, smoke_spec

SEARCH = {
    "space": {
        "lr": {"loguniform": [1.0e-5, 1.0e-2]},
        "batch_size": {"choice": [16, 32]},
        "stage_lr.stages.0": {"uniform": [0.0, 1.0]},
    },
    "trials": 4,
}


def _trial(group_id: str, number: int, state: str, values: tuple[float, ...], **params):
    return SearchTrial(
        group_id=group_id,
        number=number,
        params=params,
        state=state,
        metric="val_loss",
        value=min(values) if values else None,
        values=values,
        epochs=len(values),
        seconds=1.0,
        hardware="cpu:test",
        code_version="test",
    )


@pytest.fixture()
def study(tmp_path):
    """Two search groups (default group_by: one per arm), budget 4: the pretrained arm's
    finished and chosen (3 complete, 1 pruned), the from-scratch arm's part-way (complete,
    pruned and failed trials, and a part that is not Parquet)."""
    data = copy.deepcopy(SMOKE) | {"search": SEARCH}
    spec = parse_spec(data)
    store = Store(str(tmp_path / "studies" / "smoke"))
    plan = make_plan(spec)
    store.write_bytes("spec.yaml", spec_to_yaml(spec).encode())  # as init_study does
    write_plan(store, plan)
    groups = search_groups(spec, plan)
    assert sorted(g.arm for g in groups) == ["pretrained", "scratch"]
    a, b = (next(g.group_id for g in groups if g.arm == arm) for arm in ("pretrained", "scratch"))
    stem = "stage_lr.stages.0"
    for t in (
        _trial(a, 0, "complete", (0.9, 0.7), lr=1e-3, batch_size=16, **{stem: 0.5}),
        _trial(a, 1, "pruned", (1.4,), lr=1e-5, batch_size=32, **{stem: 0.1}),
        _trial(a, 2, "complete", (0.8, 0.41234), lr=3.1623e-4, batch_size=32, **{stem: 0.25}),
        _trial(a, 3, "complete", (0.6, 0.5), lr=2e-3, batch_size=16, **{stem: 0.75}),
        _trial(b, 0, "pruned", (1.2,), lr=1e-5, batch_size=16),
        _trial(b, 1, "complete", (0.95, 0.8), lr=5e-3, batch_size=32),
        _trial(b, 2, "failed", (), lr=1e-2, batch_size=16),
    ):
        write_search_trial(store, t)
    store.write_json(search_choice_path(a), {"lr": 3.1623e-4, "batch_size": 32, stem: 0.25})
    store.write_bytes(search_trial_path(b, 3), b"not parquet")
    return store, a, b, [g.group_id for g in groups]


def test_status_shows_each_groups_trials_best_so_far_and_choice(study, capsys):
    store, a, b, order = study
    state = inspect_study(store.uri)
    assert [g.group_id for g in state.search] == order  # plan order
    pre, scratch = sorted(state.search, key=lambda g: g.group_id != a)
    assert (pre.group_id, pre.complete, pre.pruned, pre.failed, pre.finished) == (a, 3, 1, 0, 4)
    assert (pre.best_number, pre.best_value, pre.chosen) == (2, 0.41234, True)
    assert (scratch.complete, scratch.pruned, scratch.failed, scratch.finished) == (1, 1, 1, 3)
    assert (scratch.best_number, scratch.best_params, scratch.chosen) == (
        1,
        {"lr": 5e-3, "batch_size": 32},
        False,
    )
    corrupt = f"results/search/{b}/00003.parquet"
    assert list(scratch.corrupt) == [corrupt]
    assert state.corrupt == {}  # result parts only: a search part is the search's own

    assert main(["status", store.uri]) == 0
    out = capsys.readouterr().out.splitlines()
    start = out.index("search: 2 groups, on val_loss (minimize)")
    assert out[start - 1].startswith("total ")  # right after the per-stage table
    key = "architecture: resnet1d18[base_width=4], downstream: synth_tiny"
    lines = {
        a: [
            f"  {a}  {key}, init: pretrained  4/4 trials (3 complete, 1 pruned, 0 failed); "
            "best val_loss 0.4123 (trial 2: batch_size=32, lr=0.0003162, "
            "stage_lr.stages.0=0.25); chosen"
        ],
        b: [
            f"  {b}  {key}, init: scratch  3/4 trials (1 complete, 1 pruned, 1 failed, "
            "1 corrupt); best val_loss 0.8 (trial 1: batch_size=32, lr=0.005)",
            f"  corrupt {corrupt}: {scratch.corrupt[corrupt]} (not counted as a trial)",
        ],
    }
    assert out[start + 1 : start + 5] == [
        *lines[order[0]],
        *lines[order[1]],
        "search total: 1 of 2 groups chosen, 7 of 8 trials finished",
    ]


def test_a_study_without_a_search_prints_no_search_block(tmp_path, capsys):
    store = Store(str(tmp_path / "studies" / "smoke"))
    init_study(store, smoke_spec())
    assert inspect_study(store.uri).search is None
    assert main(["status", store.uri]) == 0
    assert not any(line.startswith("search") for line in capsys.readouterr().out.splitlines())
