"""The hyperparameter search's foundations (issue 11), without Ray: the `search:` section's
rules, the groups of units, trials as Parquet rows in a real store, the Optuna study rebuilt
from them (proposing what an uninterrupted search would), the budget, the choice and its
place in the units' ids, and the refusal to plan or run a search before it is built."""

from __future__ import annotations

import copy
import json
import math

import optuna
import pytest
import yaml

from study.cli import main
from study.errors import ConfigError, TrainingError
from study.schema import EPOCHS_SCHEMA, search_choice_path, search_trial_path
from study.store import Store
from study.sweep.load import parse_spec, spec_to_yaml
from study.sweep.plan import make_plan, unit_id
from study.sweep.runner import init_study
from study.sweep.search import (
    SearchTrial,
    apply_choice,
    choose,
    group_sampler,
    optuna_distributions,
    pending_numbers,
    rebuild_study,
    remaining_budget,
    scan_search_trials,
    search_groups,
    suggest,
    write_search_trial,
)
from study.sweep.search_spec import METRICS

SEARCH = {
    "space": {
        "lr": {"loguniform": [1.0e-5, 1.0e-2]},
        "batch_size": {"choice": [16, 32, 64]},
        "stage_lr.stages.0": {"uniform": [0.0, 1.0]},
    },
    "trials": 16,
}
GOOD = {
    "name": "s",
    "architectures": [{"name": "resnet1d18", "options": {"base_width": 8}}, "gru"],
    "upstream": ["synth_up_a", "synth_up_b"],
    "downstream": ["synth_down_x", "synth_down_y"],
    "finetune": {"freeze_depths": [0, "all"], "data_fractions": [0.5, 1.0], "repeats": 2},
    "search": SEARCH,
}


def _with(path: str, value) -> dict:
    spec = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = spec
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return spec


def _space(**params) -> dict:
    return _with("search.space", params)


# --- the section's rules ------------------------------------------------------------------
BAD = [
    (_space(lr={"loguniform": [1e-2, 1e-5]}), ["search.space.lr", "lo < hi, got [0.01, 1e-05]"]),
    (_space(lr={"uniform": [0.1, 0.1]}), ["uniform needs lo < hi, got [0.1, 0.1]"]),
    (_space(weight_decay={"loguniform": [0.0, 1e-2]}), ["loguniform needs lo > 0", "[0.0, 0.01]"]),
    (_space(lr={"uniform": [1e-4]}), ["uniform takes [lo, hi], got [0.0001]"]),
    (_space(lr={"uniform": ["low", 1]}), ["uniform bounds must be floats, got ['low', 1]"]),
    (_space(epochs={"int": [1.5, 9]}), ["int bounds must be ints, got [1.5, 9]"]),
    (_space(lr={"normal": [0, 1]}), ["unknown range 'normal'", "loguniform, uniform, int, choice"]),
    (_space(lr={"uniform": [0, 1], "int": [1, 2]}), ["a parameter's range is one of"]),
    (_space(lr=1e-3), ["a parameter's range is one of", "got 0.001"]),
    (_space(learning_rate={"uniform": [0.1, 1]}), ["unknown parameter 'learning_rate'", "lr,"]),
    (_space(stage_lr={"uniform": [0, 1]}), ["stage_lr cannot be searched", "stage_lr.<group>"]),
    (_space(deterministic={"choice": [True]}), ["deterministic cannot be searched"]),
    (_space(batch_size={"choice": []}), ["choice needs at least one value, got []"]),
    (_space(batch_size={"choice": [16, 16]}), ["choice values must be distinct, got [16, 16]"]),
    (_space(batch_size={"uniform": [16, 64]}), ["batch_size takes int values: use int or choice"]),
    (_space(lr={"int": [1, 3]}), ["lr takes float values: use uniform, loguniform or choice"]),
    (_space(lr={"uniform": [0.0, 1.0]}), ["0.0 is not a valid lr", "greater than 0"]),
    (_space(optimizer={"choice": ["adamw", "adam"]}), ["'adam' is not a valid optimizer"]),
    (
        _space(**{"stage_lr.stages.0": {"uniform": [-1, 1]}}),
        ["-1.0 is not a valid stage_lr.stages.0"],
    ),
    (_space(), ["search.space", "needs at least one parameter"]),
    (
        _with("search.metric", "test_macro_auroc"),
        ["search.metric", "never reads the test split", "got 'test_macro_auroc'"],
    ),
    (_with("search.metric", "test"), ["never reads the test split"]),
    (_with("search.metric", "val_accuracy"), ["unknown metric 'val_accuracy'", "val_loss"]),
    (_with("search.trials", 0), ["search.trials", "greater than or equal to 1"]),
    (
        _with("search", {k: v for k, v in SEARCH.items() if k != "trials"}),
        ["search.trials: required key is missing"],
    ),
    (_with("search.group_by", ["repeat"]), ["search.group_by.0", "'architecture'"]),
    (_with("search.group_by", ["init", "init"]), ["group_by keys must be distinct"]),
    (_with("search.fraction", 0.0), ["search.fraction", "greater than 0"]),
    (_with("search.fraction", 1.5), ["search.fraction", "less than or equal to 1"]),
    (_with("search.pruner", "median"), ["search.pruner", "'asha' or 'none'"]),
    (_with("search.sampler", "cmaes"), ["search.sampler", "'tpe' or 'random'"]),
    (_with("search.applies_to", "scratch"), ["search.applies_to"]),
    (_with("search.max_concurrent", 0), ["search.max_concurrent", "greater than or equal to 1"]),
    (_with("search.budget", 3), ["search.budget: unknown key", "valid keys: space, trials"]),
    # what needs the registries (study.sweep.resolve)
    (
        _space(**{"stage_lr.layer9": {"uniform": [0, 1]}}),
        ["search.space.stage_lr.layer9: resnet1d18[base_width=8] has no stage 'layer9'"],
    ),
    (
        _with("upstream", []) | {"search": SEARCH | {"applies_to": "pretrain"}},
        ["pretrains nothing"],
    ),
    (
        _space(**{"stage_lr.stages.0": {"uniform": [0, 1]}}),
        ["search.space: every parameter is a stage_lr multiplier", "finetune.scratch: false"],
    ),
    (
        _with("pretrain.task", "autoencoder")
        | {"search": SEARCH | {"applies_to": "both", "metric": "val_macro_auroc"}},
        ["search.metric: the autoencoder pretraining task reports only val_loss"],
    ),
]


@pytest.mark.parametrize("spec, fragments", BAD)
def test_bad_search_sections_fail_naming_key_rule_and_value(spec, fragments):
    with pytest.raises(ConfigError) as err:
        parse_spec(spec)
    for fragment in fragments:
        assert fragment in str(err.value)


def test_a_good_section_round_trips_through_spec_yaml_with_its_defaults():
    # PyYAML reads 1e-5 (no dot) as a string: the bound still becomes a float
    text = yaml.safe_dump(_space(lr={"loguniform": ["1e-5", 1e-2]}, batch_size={"choice": [16]}))
    spec = parse_spec(yaml.safe_load(text))
    s = spec.search
    assert s.space["lr"].values == (1e-5, 1e-2)
    assert (s.group_by, s.fraction, s.metric, s.pruner, s.sampler) == (
        ["architecture", "downstream", "init"],
        1.0,
        "val_loss",
        "asha",
        "tpe",
    )
    assert (s.applies_to, s.seed, s.max_concurrent, s.resolved_seed(spec.seed)) == (
        "finetune",
        None,
        1,
        0,
    )
    again = parse_spec(yaml.safe_load(spec_to_yaml(spec)))
    assert again == spec and again.digest() == spec.digest()
    assert "lr:\n      loguniform:" in spec_to_yaml(spec)


def test_the_metrics_are_the_validation_columns_of_the_epochs_table():
    assert set(METRICS) == {n for n in EPOCHS_SCHEMA.names if n.startswith("val_")}
    assert METRICS["val_loss"] == "minimize" and METRICS["val_macro_auroc"] == "maximize"


def test_group_by_is_kept_in_the_axes_order():
    spec = parse_spec(_with("search.group_by", ["downstream", "architecture"]))
    assert spec.search.group_by == ["architecture", "downstream"]


# --- distributions --------------------------------------------------------------------------
def test_distributions_are_optunas_in_sorted_order():
    spec = parse_spec(
        _space(
            weight_decay={"loguniform": [1e-6, 1e-2]},
            lr={"uniform": [1e-4, 1e-2]},
            epochs={"int": [2, 8]},
            optimizer={"choice": ["adamw", "sgd"]},
        )
    )
    d = optuna_distributions(spec.search.space)
    assert list(d) == ["epochs", "lr", "optimizer", "weight_decay"]
    assert d["weight_decay"] == optuna.distributions.FloatDistribution(1e-6, 1e-2, log=True)
    assert d["lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-2)
    assert d["epochs"] == optuna.distributions.IntDistribution(2, 8)
    assert d["optimizer"] == optuna.distributions.CategoricalDistribution(("adamw", "sgd"))


# --- groups ----------------------------------------------------------------------------------
def _groups(spec_dict: dict):
    spec = parse_spec(spec_dict)
    plan = make_plan(spec)
    return spec, plan, search_groups(spec, plan)


def test_default_groups_are_one_per_architecture_downstream_and_arm():
    spec, plan, groups = _groups(GOOD)
    assert len(groups) == 2 * 2 * 2  # architectures x downstream x arms
    members = [uid for g in groups for uid in g.unit_ids]
    downstream_units = [u for u in plan.units if u.stage != "pretrain"]
    assert sorted(members) == sorted(u.unit_id for u in downstream_units)  # each once
    for g in groups:
        key = g.key_values
        assert set(key) == {"architecture", "downstream", "init"} and g.arm == key["init"]
        units = [plan.get(uid) for uid in g.unit_ids]
        assert {u.stage for u in units} == {"scratch" if g.arm == "scratch" else "finetune"}
        assert {u.axes["architecture"] for u in units} == {key["architecture"]}
        assert {u.axes["downstream"] for u in units} == {key["downstream"]}
        if g.arm == "scratch":  # 2 fractions x 2 repeats; no stage_lr in that arm
            assert len(units) == 4 and g.params == ("batch_size", "lr") and not g.pretrain_units
        else:  # 2 upstream x 2 depths x 2 fractions x 2 repeats
            assert len(units) == 16 and g.params == ("batch_size", "lr", "stage_lr.stages.0")
            assert (
                set(g.pretrain_units) == {u.depends_on for u in units}
                and len(g.pretrain_units) == 2
            )
    assert len({g.group_id for g in groups}) == len(groups)
    assert [g.group_id for g in search_groups(spec, make_plan(spec))] == [
        g.group_id for g in groups
    ]


def test_without_init_one_search_serves_both_arms():
    _, plan, groups = _groups(_with("search.group_by", ["architecture", "downstream"]))
    assert len(groups) == 4
    for g in groups:
        assert g.arm is None and g.params == ("batch_size", "lr", "stage_lr.stages.0")
        assert {plan.get(uid).stage for uid in g.unit_ids} == {"finetune", "scratch"}


@pytest.mark.parametrize(
    "group_by, count",
    [([], 1), (["architecture"], 2), (["init"], 2), (["freeze_depth"], 3), (["upstream"], 3)],
)
def test_group_by_variants(group_by, count):
    # freeze depths: 0 for scratch and both, 5 (resnet1d18's all), 1 (gru's all);
    # upstream: synth_up_a, synth_up_b, and none for the from-scratch arm
    _, plan, groups = _groups(_with("search.group_by", group_by))
    assert len(groups) == count
    assert sum(len(g.unit_ids) for g in groups) == len(plan.units) - len(plan.by_stage("pretrain"))


def test_pretraining_groups_split_by_the_pretraining_axes_only():
    _, plan, groups = _groups(_with("search.applies_to", "pretrain"))
    assert len(groups) == 2  # by architecture; downstream and init are not pretraining axes
    assert {g.section for g in groups} == {"pretrain"} and {g.arm for g in groups} == {None}
    assert sorted(u for g in groups for u in g.unit_ids) == sorted(
        u.unit_id for u in plan.by_stage("pretrain")
    )
    _, _, both = _groups(_with("search.applies_to", "both"))
    assert [g.section for g in both] == ["pretrain"] * 2 + ["finetune"] * 8


def test_group_ids_move_with_what_trains_the_search_and_only_with_it():
    base = {g.key: g.group_id for g in _groups(GOOD)[2]}

    def ids(spec_dict):
        return {g.key: g.group_id for g in _groups(spec_dict)[2]}

    # the axes a search does not vary, and an option it overrides
    assert ids(_with("finetune.repeats", 3)) == base
    assert ids(_with("finetune.data_fractions", [0.25, 0.5, 1.0])) == base
    assert ids(_with("finetune.lr", 0.01)) == base
    # what its trials would train with, and the search itself
    for changed in (
        _with("finetune.epochs", 7),
        _with("search.trials", 17),
        _with("search.seed", 5),
        _with("seed", 5),
    ):
        assert set(ids(changed).values()).isdisjoint(base.values())


def test_a_group_id_is_pinned():
    # A change here orphans the stored trials of every search: make it on purpose.
    spec = {
        "name": "pinned",
        "architectures": [{"name": "resnet1d18", "options": {"base_width": 8}}],
        "upstream": ["synth_up_a"],
        "downstream": ["synth_down_x"],
        "finetune": {"repeats": 1},
        "search": {"space": {"lr": {"loguniform": [1e-5, 1e-2]}}, "trials": 4},
    }
    assert [(g.arm, g.group_id) for g in _groups(spec)[2]] == [
        ("scratch", "sg-47e8a663cb8fa0d9"),
        ("pretrained", "sg-75a2fd7dd0c16883"),
    ]


# --- trials in the store, and the study rebuilt from them ------------------------------------
def _toy_values(params: dict, number: int) -> tuple[str, list[float]]:
    """A deterministic 'training': validation loss per epoch, best near lr = 1e-3."""
    base = (math.log10(params["lr"]) + 3) ** 2 + 0.3 * params.get("stage_lr.stages.0", 0)
    base += {16: 0.02, 32: 0.0, 64: 0.05}[params["batch_size"]]
    values = [base + 1.0 / epoch for epoch in range(1, 5)]
    if number == 5:
        return "failed", values[:1]
    if number >= 8 and values[1] > 0.9:  # what a pruner does: stop a poor trial early
        return "pruned", values[:2]
    return "complete", values


def _search_run(group, spec, n: int, reseed: bool = True):
    """An uninterrupted search of `n` trials through Optuna's ask/tell, and its rows.

    With `reseed` it seeds the sampler per trial number, as `suggest` does; without it, one
    seeded sampler proposes every trial (what a rebuilt study cannot continue)."""
    dists = optuna_distributions({p: spec.search.space[p] for p in group.params})
    study = optuna.create_study(direction="minimize", sampler=group_sampler(group, spec, 0))
    asked, rows = [], []
    for number in range(n + 1):
        if reseed:
            study.sampler = group_sampler(group, spec, number)
        trial = study.ask(dists)
        asked.append(dict(trial.params))
        if number == n:  # the next proposal, for comparison
            break
        state, values = _toy_values(trial.params, number)
        for epoch, v in enumerate(values, start=1):
            trial.report(v, epoch)
        if state == "complete":
            study.tell(trial, min(values))
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
                value=min(values),
                values=tuple(values),
                epochs=len(values),
                seconds=0.5,
                hardware="cpu",
                code_version="test",
            )
        )
    return asked, rows


@pytest.fixture
def pretrained_group():
    spec = parse_spec(GOOD)
    group = next(g for g in search_groups(spec, make_plan(spec)) if g.arm == "pretrained")
    return spec, group


def test_a_rebuilt_study_proposes_what_the_uninterrupted_search_did(tmp_path, pretrained_group):
    spec, group = pretrained_group
    n = 15  # past TPE's 10 random start-up trials: TPE proper decides the last ones
    asked, rows = _search_run(group, spec, n)
    assert {r.state for r in rows} == {"complete", "pruned", "failed"}
    store = Store(str(tmp_path))
    for row in rows:
        write_search_trial(store, row)
    scan = scan_search_trials(store, group.group_id)
    assert scan.corrupt == {} and scan.trials == rows  # Parquet round trip, exactly
    # A driver killed after any k trials, resumed: it proposes trial k as the
    # uninterrupted search did, from the stored rows alone.
    for k in range(n + 1):
        assert suggest(group, scan.trials[:k], spec, k) == asked[k], k
    assert suggest(group, scan.trials[:12], spec, n) != asked[n]  # (the history matters)
    study = rebuild_study(group, scan.trials, spec)
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(t.value == t.intermediate_values[2] for t in pruned)
    assert (
        study.ask(optuna_distributions({p: spec.search.space[p] for p in group.params})).params
        == asked[n]
    )


def test_one_seeded_sampler_for_every_trial_cannot_be_rebuilt(pretrained_group):
    # Why the sampler is seeded per trial number: a sampler's random state advances with
    # each proposal, and a rebuilt study starts it afresh.
    spec, group = pretrained_group
    asked, rows = _search_run(group, spec, 12, reseed=False)
    rebuilt = rebuild_study(group, rows, spec, number=0)  # seeded as the run's sampler was
    dists = optuna_distributions({p: spec.search.space[p] for p in group.params})
    assert rebuilt.ask(dists).params != asked[12]


def test_unreadable_parts_are_reported_not_read(tmp_path, pretrained_group):
    spec, group = pretrained_group
    _, rows = _search_run(group, spec, 3)
    store = Store(str(tmp_path))
    for row in rows:
        write_search_trial(store, row)
    store.write_bytes(search_trial_path(group.group_id, 7), b"not parquet")
    store.write_table(search_trial_path(group.group_id, 8), rows[0].to_table())  # trial 0
    store.write_json(search_choice_path(group.group_id), {"lr": 1e-3})  # not a trial part
    scan = scan_search_trials(store, group.group_id)
    assert [t.number for t in scan.trials] == [0, 1, 2]
    assert set(scan.corrupt) == {"00007.parquet", "00008.parquet"}
    assert "holds trial 0" in scan.corrupt["00008.parquet"]


def _row(number: int, state: str, value: float | None, lr: float = 1e-3) -> SearchTrial:
    return SearchTrial(
        group_id="sg-x",
        number=number,
        params={"lr": lr, "batch_size": 32},
        state=state,
        metric="val_loss",
        value=value,
        values=() if value is None else (value,),
    )


def test_the_budget_counts_every_finished_trial_and_never_goes_negative(pretrained_group):
    spec, group = pretrained_group  # 16 trials
    rows = [_row(0, "complete", 0.5), _row(1, "pruned", 0.9), _row(2, "failed", None)]
    assert remaining_budget(group, rows, spec) == 13
    assert pending_numbers(group, rows, spec) == list(range(3, 16))
    assert remaining_budget(group, [], spec) == 16
    full = [_row(n, "complete", 1.0) for n in range(18)]  # more than the budget
    assert remaining_budget(group, full, spec) == 0 and pending_numbers(group, full, spec) == []


def test_a_row_breaking_its_rules_is_refused():
    with pytest.raises(ValueError, match="finite value"):
        _row(0, "complete", float("nan"))
    with pytest.raises(ValueError, match="state must be one of"):
        _row(0, "done", 1.0)


# --- the choice --------------------------------------------------------------------------------
def test_choose_takes_the_best_complete_trial_and_the_lowest_number_of_equals():
    rows = [
        _row(0, "complete", 0.40, lr=1e-2),
        _row(1, "pruned", 0.10, lr=1e-5),  # better, but stopped early: not a candidate
        _row(2, "complete", 0.30, lr=1e-3),
        _row(3, "complete", 0.30, lr=1e-4),
        _row(4, "failed", None),
    ]
    assert choose(rows, "val_loss") == {"lr": 1e-3, "batch_size": 32}
    auroc = [SearchTrial(**{**r.__dict__, "metric": "val_macro_auroc"}) for r in rows]
    assert choose(auroc, "val_macro_auroc")["lr"] == 1e-2  # maximised
    with pytest.raises(TrainingError, match="no search trial completed"):
        choose([rows[1], rows[4]], "val_loss")
    with pytest.raises(ValueError, match="rows searched val_loss"):
        choose(rows, "val_macro_auroc")


def test_the_chosen_values_enter_the_units_configs_and_ids():
    spec = parse_spec(GOOD)
    plan = make_plan(spec)
    ft, sc = plan.by_stage("finetune")[0], plan.by_stage("scratch")[0]
    chosen = {"lr": 3e-4, "batch_size": 64, "stage_lr.stages.0": 0.25}
    ft2, sc2 = apply_choice(ft.config, chosen), apply_choice(sc.config, chosen)
    assert (ft2.train.lr, ft2.train.batch_size, ft2.train.stage_lr) == (
        3e-4,
        64,
        {"stages.0": 0.25},
    )
    assert (sc2.train.lr, sc2.train.batch_size, sc2.train.stage_lr) == (3e-4, 64, None)
    assert unit_id(ft2) != ft.unit_id and unit_id(sc2) != sc.unit_id
    assert unit_id(ft2)[:3] == "ft-" and unit_id(sc2)[:3] == "sc-"
    # values equal to the spec's own: the same unit, the same id
    same = {"lr": ft.config.train.lr, "batch_size": ft.config.train.batch_size}
    assert unit_id(apply_choice(ft.config, same)) == ft.unit_id
    # a multiplier merges into the spec's own per-stage rates
    with_rates = _with("finetune.stage_lr", {"stages.0": 0.5, "stages.1": 0.1})
    with_rates["architectures"] = GOOD["architectures"][:1]  # resnet1d18: stages.0 .. 3
    unit = make_plan(parse_spec(with_rates)).by_stage("finetune")[0]
    merged = apply_choice(unit.config, {"stage_lr.stages.0": 0.0})
    assert merged.train.stage_lr == {"stages.0": 0.0, "stages.1": 0.1}
    with pytest.raises(ConfigError, match="not valid training options"):
        apply_choice(unit.config, {"batch_size": 0})


# --- not built yet: run refuses, plan shows ---------------------------------------------------
def test_a_finetune_search_is_planned_with_the_spec_ids_until_a_group_chooses(tmp_path):
    """plan.parquet lists the spec's own ids while no group has chosen; a choice changes its
    group's unit ids (the chosen values are in their configs), and the stored plan is
    checked by the spec's ids, so a resumed study accepts it."""
    store = Store(str(tmp_path / "study"))
    spec = parse_spec(GOOD)
    base = make_plan(spec)
    assert {u.unit_id for u in init_study(store, spec).units} == {u.unit_id for u in base.units}
    group = search_groups(spec, base)[0]
    values = {"lr": 0.003, "batch_size": 32, "stage_lr.stages.0": 0.5}
    chosen = {p: values[p] for p in group.params}
    choice = {"group_id": group.group_id, "metric": "val_loss", "params": chosen}
    store.write_json(search_choice_path(group.group_id), choice)
    plan = init_study(store, spec)  # the stored plan still has the spec's ids: accepted
    moved = {u.unit_id for u in plan.units} - {u.unit_id for u in base.units}
    assert len(moved) == len(group.unit_ids)
    for uid in moved:
        assert plan.get(uid).config.train.lr == 0.003
        assert plan.base_id(uid) in group.unit_ids
    # the groups keep their ids in the plan with the choice (status and resume find them)
    assert [g.group_id for g in search_groups(spec, plan)] == [
        g.group_id for g in search_groups(spec, base)
    ]
    # another group's choice file, or one with other parameters, is not a choice
    store.write_json(search_choice_path(group.group_id), {**choice, "params": {"lr": 0.1}})
    assert {u.unit_id for u in init_study(store, spec).units} == {u.unit_id for u in base.units}


def test_plan_shows_the_search_groups_their_budget_and_waiting_units(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    spec = parse_spec(GOOD)
    groups = search_groups(spec, make_plan(spec))
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"search: {len(groups)} groups x {spec.search.trials} trials" in out
    for g in groups:
        assert f"{g.group_id}  " in out
        assert f"{len(g.unit_ids)} units wait for its values" in out
    assert "`study run` runs each group's trials first" in out
    assert main(["plan", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["search"]
    assert [g["group_id"] for g in shown] == [g.group_id for g in groups]
    assert [g["waiting_units"] for g in shown] == [len(g.unit_ids) for g in groups]
    path.write_text(yaml.safe_dump({k: v for k, v in GOOD.items() if k != "search"}))
    assert main(["plan", str(path), "--json"]) == 0
    assert "search" not in json.loads(capsys.readouterr().out)
