"""Running a search group in this process (issue 11), without Ray: trials train the group's
representative unit on synth_tiny and select on validation only, ASHA prunes through
Optuna's own pruner (its rungs rebuilt from the stored rows), and the driver resumes from
the store to exactly its budget, proposing what an uninterrupted run did."""

from __future__ import annotations

import copy
import math

import optuna
import pytest
import torch

from study.data.prepared import PreparedDataset
from study.errors import DataError, StorageError, TrainingError
from study.schema import search_choice_path, search_trial_path
from study.store import Store
from study.sweep import search_run
from study.sweep.execute import run_finetune_unit, run_pretrain_worker
from study.sweep.load import parse_spec
from study.sweep.plan import make_plan
from study.sweep.runner import prepare_datasets
from study.sweep.search import (
    SearchTrial,
    plan_with_choices,
    rebuild_study,
    remaining_budget,
    scan_search_trials,
    search_groups,
    search_pruner,
    search_unit,
)
from study.sweep.search_run import run_search_group, search_error_path
from tests.sweep._smoke import SMOKE, search_smoke

LR = {"lr": {"loguniform": [1.0e-7, 1.0e-1]}}


def _spec(epochs: int = 3, trials: int = 6, pruner: str = "none", **search):
    return parse_spec(search_smoke(epochs, trials, pruner, **search))


@pytest.fixture(autouse=True)
def _nondeterministic_after():
    yield
    torch.use_deterministic_algorithms(False)  # fit's deterministic mode is process-wide


def _setup(path, spec, arm: str = "scratch"):
    store = Store(str(path))
    prepare_datasets(store, spec)
    plan = make_plan(spec)
    group = next(g for g in search_groups(spec, plan) if g.arm == arm)
    return store, plan, group


def _rows(store, group) -> list[SearchTrial]:
    scan = scan_search_trials(store, group.group_id)
    assert scan.corrupt == {}
    return scan.trials


def _quiet(_msg: str) -> None:
    pass


# --- the representative unit ------------------------------------------------------------
def test_a_groups_trials_train_repeat_0_at_the_search_fraction():
    data = copy.deepcopy(SMOKE)
    data["finetune"].update(data_fractions=[0.25, 1.0], repeats=2, val_fraction="match")
    data["pretrain"]["repeats"] = 2
    data["search"] = {"space": {**LR, "stage_lr.stem": {"uniform": [0.0, 1.0]}}, "trials": 2}
    data["search"]["fraction"] = 0.5
    spec = parse_spec(data)
    plan = make_plan(spec)
    by_arm = {g.arm: g for g in search_groups(spec, plan)}
    params = {"lr": 0.01, "stage_lr.stem": 0.5}
    pre = search_unit(spec, plan, by_arm["pretrained"], params).config
    assert (pre.data_fraction, pre.repeat, pre.seed, pre.val_fraction) == (
        0.5,
        0,
        spec.seed,
        "match",
    )
    assert pre.train.lr == 0.01 and pre.train.stage_lr == {"stem": 0.5}
    repeat0 = [u for u in plan.by_stage("pretrain") if u.config.pretrain_repeat is None]
    assert pre.pretrain_unit == repeat0[0].unit_id
    scratch = search_unit(spec, plan, by_arm["scratch"], {"lr": 0.01}).config
    assert scratch.stage == "scratch" and scratch.train.stage_lr is None
    # at fraction 1 the whole validation split, as the units of fraction 1 validate
    data["search"]["fraction"] = 1.0
    spec = parse_spec(data)
    group = next(g for g in search_groups(spec, make_plan(spec)) if g.arm == "scratch")
    assert search_unit(spec, make_plan(spec), group).config.val_fraction is None


def test_a_pretraining_groups_trials_train_its_first_seed_on_the_whole_upstream():
    data = search_smoke(applies_to="both", fraction=0.5)
    data["pretrain"]["repeats"] = 2
    spec = parse_spec(data)
    plan = make_plan(spec)
    pre = next(g for g in search_groups(spec, plan) if g.section == "pretrain")
    assert len(pre.unit_ids) == 2 and pre.arm is None
    unit = search_unit(spec, plan, pre, {"lr": 0.02})
    first = plan.get(pre.unit_ids[0]).config
    assert unit.depends_on is None and unit.config.stage == "pretrain"
    assert (unit.config.pretrain_repeat or 0) == 0 and unit.config.train.lr == 0.02
    assert unit.config.model_dump(exclude={"train"}) == first.model_dump(exclude={"train"})


def test_a_pretraining_choice_moves_the_units_and_searches_that_start_from_it():
    """Chosen pretraining values give the pretraining units new ids; the fine-tuning units
    that start from them, and the fine-tuning search groups over those, move with them;
    from-scratch units and their search do not."""
    spec = _spec(applies_to="both")
    base = make_plan(spec)
    groups = {(g.section, g.arm): g for g in search_groups(spec, base)}
    pre = groups[("pretrain", None)]
    plan = plan_with_choices(spec, base, {pre.group_id: {"lr": 0.02}})
    (pt,) = plan.by_stage("pretrain")
    assert pt.config.train.lr == 0.02 and plan.base_id(pt.unit_id) == pre.unit_ids[0]
    for u in plan.by_stage("finetune"):
        assert u.depends_on == u.config.pretrain_unit == pt.unit_id
        assert u.unit_id not in base._index and plan.base_id(u.unit_id) in base._index
    assert {u.unit_id for u in plan.by_stage("scratch")} == {
        u.unit_id for u in base.by_stage("scratch")
    }
    moved = {(g.section, g.arm): g.group_id for g in search_groups(spec, plan)}
    assert moved[("pretrain", None)] == pre.group_id
    assert moved[("finetune", "scratch")] == groups[("finetune", "scratch")].group_id
    assert moved[("finetune", "pretrained")] != groups[("finetune", "pretrained")].group_id
    # the moved fine-tuning group's choice applies on top; the base group's id does not
    both = plan_with_choices(
        spec, base, {pre.group_id: {"lr": 0.02}, moved[("finetune", "pretrained")]: {"lr": 0.003}}
    )
    assert {u.config.train.lr for u in both.by_stage("finetune")} == {0.003}
    stale = plan_with_choices(
        spec,
        base,
        {pre.group_id: {"lr": 0.02}, groups[("finetune", "pretrained")].group_id: {"lr": 0.003}},
    )
    assert {u.config.train.lr for u in stale.by_stage("finetune")} != {0.003}


# --- ASHA's rungs, rebuilt ----------------------------------------------------------------
CURVES = [  # (per-epoch val_loss, how the trial ends), in trial order
    ([0.9, 0.8, 0.7, 0.6, 0.5, 0.45], "complete"),
    ([0.95, 0.9, 0.85, 0.8, 0.75, 0.7], "complete"),
    ([0.85, 0.7, 0.6, 0.5, 0.4, 0.3], "complete"),
    ([0.8, 0.7, 0.65, 0.45], "failed"),  # an exception after epoch 4
    ([0.82, 0.75, 0.72, 0.7, 0.6, 0.5], "complete"),
    ([0.7, float("nan"), 0.6, 0.5, 0.4, 0.3], "complete"),
    ([0.75, 0.6, 0.5, 0.45, 0.42, 0.41], "complete"),
    ([0.78, 0.72, 0.7, 0.69, 0.68, 0.67], "complete"),
    ([float("nan"), 0.5], "complete"),  # NaN at a rung: pruned, no rung recorded
]


def _live_search(spec, group):
    """CURVES through a live Optuna study with the search's pruner: the trials as Optuna
    holds them, and each as the row a search would store."""
    study = optuna.create_study(direction="minimize", pruner=search_pruner(spec))
    dist = optuna.distributions.FloatDistribution(1e-7, 1e-1, log=True)
    rows = []
    for number, (curve, end) in enumerate(CURVES):
        trial = study.ask({"lr": dist})
        reached, state = [], "complete"
        for epoch, v in enumerate(curve, start=1):
            trial.report(v, epoch)
            reached.append(v)
            if trial.should_prune():
                state = "pruned"
                break
        if state == "complete" and end == "failed":
            state = "failed"
        if state == "complete":
            study.tell(trial, min(v for v in reached if not math.isnan(v)))
        else:
            study.tell(
                trial, state=optuna.trial.TrialState[{"failed": "FAIL"}.get(state, "PRUNED")]
            )
        rows.append(
            SearchTrial(
                group_id=group.group_id,
                number=number,
                params=dict(trial.params),
                state=state,
                metric="val_loss",
                value=min((v for v in reached if not math.isnan(v)), default=None),
                values=tuple(reached),
                epochs=len(reached),
            )
        )
    return study, rows


def test_rebuilt_trials_hold_the_rungs_a_live_study_records():
    spec = _spec(pruner="asha")
    group = next(g for g in search_groups(spec, make_plan(spec)) if g.arm == "scratch")
    live, rows = _live_search(spec, group)
    assert {r.state for r in rows} == {"complete", "pruned", "failed"}
    rebuilt = rebuild_study(group, rows, spec, pruner=search_pruner(spec))

    def rungs(t):
        return {k: v for k, v in t.system_attrs.items() if k.startswith("completed_rung_")}

    assert [rungs(t) for t in rebuilt.trials] == [rungs(t) for t in live.trials]
    assert any("completed_rung_1" in rungs(t) for t in live.trials)  # (more than rung 0)
    # and a new trial is stopped where the live study would stop it
    for curve in ([0.74, 0.7, 0.69, 0.68, 0.5], [0.7, 0.65, 0.6, 0.3, 0.2], [0.99, 0.5]):
        decisions = []
        for study in (live, rebuild_study(group, rows, spec, pruner=search_pruner(spec))):
            trial, stopped = study.ask(), None
            for epoch, v in enumerate(curve, start=1):
                trial.report(v, epoch)
                if trial.should_prune():
                    stopped = epoch
                    break
            decisions.append(stopped)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # (leave live as it was)
        assert decisions[0] == decisions[1], curve


# --- running groups -----------------------------------------------------------------------
def test_the_search_finds_the_learning_rate_region_that_learns(tmp_path, cache_dir):
    spec = _spec(epochs=3, trials=8)
    store, plan, group = _setup(tmp_path, spec)
    chosen = run_search_group(store, spec, plan, group, {}, log=_quiet)
    assert chosen["lr"] >= 1e-4
    rows = _rows(store, group)
    assert [r.number for r in rows] == list(range(8)) and {r.state for r in rows} == {"complete"}
    assert all(r.epochs == 3 and len(r.values) == 3 for r in rows)
    assert all(r.value == min(r.values) for r in rows)
    tiny = [r.value for r in rows if r.params["lr"] < 1e-5]
    learning = [r.value for r in rows if 1e-3 <= r.params["lr"] <= 3e-2]
    assert tiny and learning
    assert max(learning) < min(tiny)
    assert store.read_json(search_choice_path(group.group_id)) == {
        "group_id": group.group_id,
        "metric": "val_loss",
        "params": chosen,
        "key": [list(kv) for kv in group.key],
        "arm": group.arm,
    }


def test_the_test_split_is_never_read(tmp_path, cache_dir, monkeypatch):
    spec = _spec(epochs=1, trials=2)
    store, plan, group = _setup(tmp_path, spec)
    original = PreparedDataset.split_indices

    def no_test(self, split, folds=None):
        if split == "test":
            raise DataError("the test split was asked for")
        return original(self, split, folds)

    monkeypatch.setattr(PreparedDataset, "split_indices", no_test)
    run_search_group(store, spec, plan, group, {}, log=_quiet)
    assert [r.state for r in _rows(store, group)] == ["complete", "complete"]
    # the patch bites: a unit of the ablation itself does read the test split
    with pytest.raises(DataError, match="the test split was asked for"):
        run_finetune_unit(plan.by_stage("scratch")[0], store, {})


def test_asha_prunes_and_none_never_does(tmp_path, cache_dir):
    spec = _spec(epochs=4, trials=8, pruner="asha")
    store, plan, group = _setup(tmp_path / "asha", spec)
    run_search_group(store, spec, plan, group, {}, log=_quiet)
    rows = _rows(store, group)
    pruned = [r for r in rows if r.state == "pruned"]
    # stopped after the first epoch (ASHA's rung 0), never at the last (nothing to save)
    assert pruned and all(r.epochs < 4 and r.epochs == len(r.values) for r in pruned)
    assert {r.epochs for r in pruned} == {1}
    assert any(r.state == "complete" and r.epochs == 4 for r in rows)

    spec = _spec(epochs=4, trials=8, pruner="none")
    store, plan, group = _setup(tmp_path / "none", spec)
    run_search_group(store, spec, plan, group, {}, log=_quiet)
    assert [(r.state, r.epochs) for r in _rows(store, group)] == [("complete", 4)] * 8


class Killed(BaseException):
    """The driver killed between two trials (not an Exception: no trial records it)."""


def test_a_killed_driver_resumes_to_exactly_its_budget(tmp_path, cache_dir, monkeypatch):
    spec = _spec(epochs=2, trials=5, pruner="asha")
    whole, plan, group = _setup(tmp_path / "whole", spec)
    run_search_group(whole, spec, plan, group, {}, log=_quiet)
    expected = [(r.params, r.state, r.values) for r in _rows(whole, group)]

    store, _, _ = _setup(tmp_path / "killed", spec)
    run_trial, real_fit, fits = search_run.run_search_trial, search_run.fit, []

    def killed_in_trial_2(*args, **kw):  # killed while training trial 2
        fits.append(1)
        if len(fits) == 3:
            raise Killed
        return real_fit(*args, **kw)

    monkeypatch.setattr(search_run, "fit", killed_in_trial_2)
    with pytest.raises(Killed):
        run_search_group(store, spec, plan, group, {}, log=_quiet)
    assert [r.number for r in _rows(store, group)] == [0, 1]
    assert not store.exists(search_choice_path(group.group_id))
    first = {n: store.read_bytes(search_trial_path(group.group_id, n)) for n in (0, 1)}

    ran = []

    def counted(store, spec, group, unit, number, *args, **kw):
        ran.append(number)
        return run_trial(store, spec, group, unit, number, *args, **kw)

    monkeypatch.setattr(search_run, "fit", real_fit)
    monkeypatch.setattr(search_run, "run_search_trial", counted)
    chosen = run_search_group(store, spec, plan, group, {}, log=_quiet)
    assert ran == [2, 3, 4]
    rows = _rows(store, group)
    assert [r.number for r in rows] == [0, 1, 2, 3, 4]
    assert all(store.read_bytes(search_trial_path(group.group_id, n)) == first[n] for n in (0, 1))
    assert [(r.params, r.state, r.values) for r in rows] == expected
    # done: chosen.json is the answer, nothing runs again, the budget is never exceeded
    assert run_search_group(store, spec, plan, group, {}, log=_quiet) == chosen
    assert ran == [2, 3, 4] and len(_rows(store, group)) == 5
    # killed after the last row, before chosen.json: it is written, nothing runs
    written = store.read_json(search_choice_path(group.group_id))
    store.delete(search_choice_path(group.group_id))
    assert run_search_group(store, spec, plan, group, {}, log=_quiet) == chosen
    assert ran == [2, 3, 4] and store.read_json(search_choice_path(group.group_id)) == written
    # and a trial asked to run again returns its row (whatever values it is handed)
    again = run_trial(store, spec, group, search_unit(spec, plan, group), 0, {"lr": 0.05}, {})
    assert again == rows[0] and store.read_bytes(search_trial_path(group.group_id, 0)) == first[0]


def test_the_same_spec_twice_proposes_the_same_values_in_the_same_order(tmp_path, cache_dir):
    spec = _spec(epochs=2, trials=4, pruner="asha", sampler="tpe")
    runs = []
    for name in ("a", "b"):
        store, plan, group = _setup(tmp_path / name, spec)
        chosen = run_search_group(store, spec, plan, group, {}, log=_quiet)
        runs.append((chosen, [(r.params, r.state, r.values) for r in _rows(store, group)]))
    assert runs[0] == runs[1]
    assert len({r[0]["lr"] for r in runs[0][1]}) == 4


def test_a_failed_trial_is_a_row_and_spends_budget(tmp_path, cache_dir, monkeypatch):
    spec = _spec(epochs=2, trials=3)
    store, plan, group = _setup(tmp_path, spec)
    real_fit, calls = search_run.fit, []

    def fit(model, train, val, cfg, **kw):
        calls.append(cfg.lr)
        if len(calls) == 2:
            raise TrainingError("training loss is nan at epoch 1")
        return real_fit(model, train, val, cfg, **kw)

    monkeypatch.setattr(search_run, "fit", fit)
    run_search_group(store, spec, plan, group, {}, log=_quiet)
    rows = _rows(store, group)
    assert [r.state for r in rows] == ["complete", "failed", "complete"]
    assert rows[1].epochs == 0 and rows[1].value is None
    assert remaining_budget(group, rows, spec) == 0 and len(calls) == 3
    error = store.read_json(search_error_path(group.group_id, 1))
    assert error == {"number": 1, "error": "TrainingError: training loss is nan at epoch 1"}


def test_a_search_where_every_trial_fails_chooses_nothing(tmp_path, cache_dir, monkeypatch):
    spec = _spec(epochs=1, trials=2)
    store, plan, group = _setup(tmp_path, spec)

    def fit(*args, **kw):
        raise TrainingError("training loss is nan at epoch 1")

    monkeypatch.setattr(search_run, "fit", fit)
    with pytest.raises(TrainingError, match="no search trial completed"):
        run_search_group(store, spec, plan, group, {}, log=_quiet)
    assert [r.state for r in _rows(store, group)] == ["failed", "failed"]
    assert not store.exists(search_choice_path(group.group_id))


def test_the_pretrained_arm_searches_from_its_pretraining_weights(tmp_path, cache_dir):
    spec = _spec(epochs=1, trials=2, space={**LR, "stage_lr.stem": {"uniform": [0.0, 1.0]}})
    store, plan, group = _setup(tmp_path, spec, arm="pretrained")
    with pytest.raises(StorageError, match="whose weights are not in store .*: run it first"):
        run_search_group(store, spec, plan, group, {}, log=_quiet)
    assert _rows(store, group) == []  # no budget spent on a missing dependency
    run_pretrain_worker(plan.by_stage("pretrain")[0], store, {}, rank=0, world_size=1)
    chosen = run_search_group(store, spec, plan, group, {}, log=_quiet)
    assert set(chosen) == {"lr", "stage_lr.stem"}
    assert [r.state for r in _rows(store, group)] == ["complete", "complete"]
