"""The search stage's bookkeeping on the driver, without Ray: trial jobs in lanes of
max_concurrent, what waits for which group, and choices made from the store before
anything runs (a driver killed between a group's last trial and its choice)."""

from __future__ import annotations

import pytest

from study.schema import search_choice_path
from study.store import Store
from study.sweep.load import parse_spec
from study.sweep.plan import make_plan
from study.sweep.search import SearchTrial, search_groups, search_unit, write_search_trial
from study.sweep.search_stage import SearchStage, trial_key
from tests.sweep._smoke import search_smoke


def _stage(store: Store, spec) -> SearchStage:
    return SearchStage(
        store,
        spec,
        make_plan(spec),
        unit_jobs=lambda units: [],
        expected_seconds=lambda unit: float(unit.config.train.epochs),
    )


def _row(group, number: int, state: str = "complete", value: float | None = 1.0, lr=1e-3):
    return SearchTrial(
        group_id=group.group_id,
        number=number,
        params={"lr": lr},
        state=state,
        metric="val_loss",
        value=value,
        values=() if value is None else (value,),
        epochs=0 if value is None else 1,
    )


@pytest.mark.parametrize("lanes", [1, 2])
def test_trials_run_in_lanes_of_max_concurrent_after_the_pretraining_unit(tmp_path, lanes):
    spec = parse_spec(search_smoke(trials=5, max_concurrent=lanes))
    store = Store(str(tmp_path / "s"))
    base = make_plan(spec)
    groups = {g.arm: g for g in search_groups(spec, base)}
    write_search_trial(store, _row(groups["scratch"], 1))  # trial 1 is stored already
    stage = _stage(store, spec)
    jobs = {j.key: j for j in stage.jobs()}
    assert stage.pending_trials == 9 and stage.choices == {}
    assert stage.waiting() == set(groups["scratch"].unit_ids) | set(groups["pretrained"].unit_ids)
    pre = groups["pretrained"]
    pretraining = search_unit(spec, base, pre).depends_on
    assert pretraining in pre.pretrain_units
    numbers = [0, 1, 2, 3, 4]
    for i, n in enumerate(numbers):
        job = jobs[trial_key(pre.group_id, n)]
        assert job.kind == "search"
        assert job.depends_on == (
            trial_key(pre.group_id, numbers[i - lanes]) if i >= lanes else pretraining
        )
    sc = groups["scratch"]
    assert trial_key(sc.group_id, 1) not in jobs  # stored: never run again
    pending = [0, 2, 3, 4]
    for i, n in enumerate(pending):
        dep = jobs[trial_key(sc.group_id, n)].depends_on
        assert dep == (trial_key(sc.group_id, pending[i - lanes]) if i >= lanes else None)
    # a lane's first trial outranks its later ones: the longest path starts there
    first, last = jobs[trial_key(sc.group_id, 0)], jobs[trial_key(sc.group_id, 4)]
    assert first.expected_seconds > last.expected_seconds


def test_a_group_whose_trials_are_all_stored_is_chosen_before_anything_runs(tmp_path):
    spec = parse_spec(search_smoke(trials=3))
    store = Store(str(tmp_path / "s"))
    groups = {g.arm: g for g in search_groups(spec, make_plan(spec))}
    sc = groups["scratch"]
    for n, (value, lr) in enumerate([(0.9, 1e-5), (0.4, 3e-3), (0.6, 1e-2)]):
        write_search_trial(store, _row(sc, n, value=value, lr=lr))
    stage = _stage(store, spec)
    assert stage.choices == {sc.group_id: {"lr": 3e-3}}
    assert store.read_json(search_choice_path(sc.group_id))["params"] == {"lr": 3e-3}
    assert not any(j.key.startswith(f"search:{sc.group_id}") for j in stage.jobs())
    assert stage.waiting() == set(groups["pretrained"].unit_ids)
    plan = stage.plan
    chosen = [u for u in plan.units if plan.base_id(u.unit_id) in sc.unit_ids]
    assert chosen and all(u.config.train.lr == 3e-3 for u in chosen)


def test_a_group_in_which_no_trial_completed_chooses_nothing_and_its_units_wait(tmp_path):
    spec = parse_spec(search_smoke(trials=2))
    store = Store(str(tmp_path / "s"))
    sc = next(g for g in search_groups(spec, make_plan(spec)) if g.arm == "scratch")
    write_search_trial(store, _row(sc, 0, state="failed", value=None))
    write_search_trial(store, _row(sc, 1, state="pruned", value=2.0))
    stage = _stage(store, spec)
    assert sc.group_id in stage.failed and "no search trial completed" in stage.failed[sc.group_id]
    assert sc.group_id not in stage.choices and set(sc.unit_ids) <= stage.waiting()
    assert not store.exists(search_choice_path(sc.group_id))


def test_a_pretraining_choice_frees_its_units_then_the_search_that_starts_from_them(tmp_path):
    """applies_to both: the pretraining group and the from-scratch group search at once;
    the pretrained arm's search waits for the pretraining choice, which gives its
    pretraining unit, its fine-tuning units and their search group new ids."""
    spec = parse_spec(search_smoke(trials=2, applies_to="both"))
    store = Store(str(tmp_path / "s"))
    base = make_plan(spec)
    groups = {(g.section, g.arm): g for g in search_groups(spec, base)}
    pre, sc, ft = (
        groups["pretrain", None],
        groups["finetune", "scratch"],
        groups["finetune", "pretrained"],
    )
    handed: list = []
    stage = SearchStage(store, spec, base, unit_jobs=lambda units: handed.extend(units) or [])
    jobs = {j.key: j for j in stage.jobs()}
    assert set(jobs) == {trial_key(g.group_id, n) for g in (pre, sc) for n in (0, 1)}
    assert handed == []  # every unit waits for a choice
    assert jobs[trial_key(pre.group_id, 0)].kind == "pretrain"
    assert jobs[trial_key(pre.group_id, 0)].depends_on is None
    for n, (value, lr) in enumerate([(0.7, 1e-3), (0.5, 2e-2)]):
        write_search_trial(store, _row(pre, n, value=value, lr=lr))
    assert list(jobs[trial_key(pre.group_id, 0)].then(None)) == []
    added = {j.key: j for j in jobs[trial_key(pre.group_id, 1)].then(None)}
    assert stage.choices[pre.group_id] == {"lr": 2e-2}
    (pt,) = handed  # the pretraining unit, with the chosen values: a new id
    assert pt.stage == "pretrain" and pt.config.train.lr == 2e-2
    assert pt.unit_id not in pre.unit_ids and stage.plan.base_id(pt.unit_id) in pre.unit_ids
    (moved,) = [g for g in stage.groups() if g.section == "finetune" and g.arm == "pretrained"]
    assert moved.group_id != ft.group_id
    assert set(added) == {trial_key(moved.group_id, n) for n in (0, 1)}
    assert added[trial_key(moved.group_id, 0)].depends_on == pt.unit_id
    assert stage.waiting() == set(moved.unit_ids) | set(sc.unit_ids)
