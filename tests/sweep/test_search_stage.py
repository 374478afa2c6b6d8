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
        env={},
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
    jobs = {j.key: j for j in stage.jobs(trial_task=None, resources={})}
    assert stage.pending_trials == 9 and stage.choices == {}
    assert stage.waiting == set(groups["scratch"].unit_ids) | set(groups["pretrained"].unit_ids)
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
    assert not any(j.key.startswith(f"search:{sc.group_id}") for j in stage.jobs(None, {}))
    assert stage.waiting == set(groups["pretrained"].unit_ids)
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
    assert sc.group_id not in stage.choices and set(sc.unit_ids) <= stage.waiting
    assert not store.exists(search_choice_path(sc.group_id))
