"""Hyperparameter search before the ablation (issue 11): the groups of units each search
serves, its trials as rows of the store, and the Optuna study rebuilt from those rows.

The store is the search's source of truth, as it is the units': a group's budget is the
trial numbers 0 .. trials-1, trial n is done when results/search/<group_id>/<n:05d>.parquet
can be read, and the Optuna study is never kept anywhere else. Every proposal comes from a
study rebuilt from the stored rows (`suggest`), so a driver that resumes after a kill asks
exactly what an uninterrupted one would have asked:

- the sampler is seeded per trial number (`group_sampler`): an Optuna sampler carries a
  random state that advances with each proposal, which a rebuilt study would start afresh;
  seeded from (search seed, group id, trial number) the proposal of trial n depends on
  the stored trials and n only;
- stored trials enter the study in trial-number order, with what a live study would
  hold: a complete trial with the best value its epochs reached, a pruned one with its
  per-epoch values (its value the last of them, as `Study.tell` records it), a failed one
  with no value.

A group's chosen values (chosen.json, written last, once every trial of its budget has a
row) enter its units' training options, and so their ids (`plan_with_choices`): the plan
a driver runs is a function of the spec and the stored choices. This module holds the pure
parts (no Ray); study.sweep.search_stage runs the trials on the cluster and adds the
chosen units to the run. The `search:` section's schema is study.sweep.search_spec
(re-exported here).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import optuna
import pyarrow as pa
from pydantic import ValidationError

from study.errors import ConfigError, StorageError, TrainingError
from study.schema import (
    SEARCH_SCHEMA,
    read_search_part,
    search_choice_path,
    search_trial_path,
)
from study.store import Store
from study.sweep.plan import Plan, Unit, UnitConfig
from study.sweep.search_spec import (
    METRICS,
    STAGE_LR_PREFIX,
    ParamRange,
    SearchSpec,
)
from study.sweep.spec import Spec
from study.training.config import TrainOptions

__all__ = [
    "SearchSpec",
    "ParamRange",
    "SearchGroup",
    "SearchTrial",
    "SearchScan",
    "optuna_distributions",
    "search_groups",
    "group_sampler",
    "rebuild_study",
    "suggest",
    "pending_numbers",
    "remaining_budget",
    "best_trial",
    "choose",
    "apply_choice",
    "read_choice",
    "write_choice",
    "plan_with_choices",
    "stored_choices",
    "write_search_trial",
    "scan_search_trials",
    "search_unit",
    "search_pruner",
    "rung_attrs",
    "ASHA_MIN_RESOURCE",
    "ASHA_REDUCTION_FACTOR",
]

TrialState = Literal["complete", "pruned", "failed"]
_OPTUNA_STATE = {
    "complete": optuna.trial.TrialState.COMPLETE,
    "pruned": optuna.trial.TrialState.PRUNED,
    "failed": optuna.trial.TrialState.FAIL,
}
# The unit axes each section's units have (study.sweep.plan.Unit.axes): a pretraining unit
# has no downstream dataset, arm or freeze depth, so group_by's other keys do not split it.
_SECTION_KEYS = {
    "pretrain": ("architecture", "upstream", "pretrain_task"),
    "finetune": ("architecture", "upstream", "downstream", "init", "freeze_depth", "pretrain_task"),
}
# Config fields a search does not vary over (it trains at its own fraction and seed), left
# out of a group's identity: adding repeats or data fractions keeps the stored search.
_NOT_SEARCH_IDENTITY = ("repeat", "seed", "data_fraction", "val_fraction", "pretrain_repeat")
#: `pruner: asha`: Optuna's SuccessiveHalvingPruner with rungs at epochs 1, 4, 16, 64 ...
#: A trial may be stopped after its first epoch (epochs are the resource: a search trial
#: reports once per epoch), and about a quarter go on past each rung: Optuna's and Ray
#: Tune's ASHA default reduction factor, so a later Ray driver prunes alike.
ASHA_MIN_RESOURCE = 1
ASHA_REDUCTION_FACTOR = 4


# --- distributions ----------------------------------------------------------------------
def optuna_distributions(
    space: Mapping[str, ParamRange],
) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna's distribution of each parameter, by name in sorted order (a sampler draws
    them in this order, so it must not depend on how the YAML was written)."""
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for name in sorted(space):
        r = space[name]
        if r.kind == "loguniform":
            out[name] = optuna.distributions.FloatDistribution(r.low, r.high, log=True)
        elif r.kind == "uniform":
            out[name] = optuna.distributions.FloatDistribution(r.low, r.high)
        elif r.kind == "int":
            out[name] = optuna.distributions.IntDistribution(r.low, r.high)
        else:
            out[name] = optuna.distributions.CategoricalDistribution(r.values)
    return out


# --- groups -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchGroup:
    """One search: the units that wait for its chosen values, and what it tunes.

    Attributes:
        group_id: "sg-" + 16 hex digits, a hash of the section, the key values, the search
            section (seed resolved) and what trains the group's units apart from the axes a
            search does not vary (repeat, seed, data fraction): a spec change that would
            change a search trial's result gives new ids, and a stored search is never
            reused for other units.
        section: "finetune" (downstream units, either arm) or "pretrain".
        key: (axis, value) for each key of group_by that units of the section have.
        arm: "pretrained" or "scratch" when `init` is in group_by; None when both arms share
            the search (init not in group_by) and for pretraining groups.
        unit_ids: the units that wait for the chosen values, in plan order.
        params: the parameters this group tunes (sorted): the from-scratch arm's own group
            leaves out stage_lr.<group>, which that arm does not have.
        pretrain_units: the pretraining units the group's fine-tuning units start from.
    """

    group_id: str
    section: Literal["finetune", "pretrain"]
    key: tuple[tuple[str, Any], ...]
    arm: Literal["pretrained", "scratch"] | None
    unit_ids: tuple[str, ...]
    params: tuple[str, ...]
    pretrain_units: tuple[str, ...] = ()

    @property
    def key_values(self) -> dict[str, Any]:
        return dict(self.key)


def _search(spec: Spec) -> SearchSpec:
    if spec.search is None:
        raise ConfigError(f"study {spec.name} has no search: section")
    return spec.search


def _search_identity(search: SearchSpec, spec_seed: int) -> dict:
    data = search.model_dump(mode="json")
    data["seed"] = search.resolved_seed(spec_seed)
    return data


def _basis(config: UnitConfig, search: SearchSpec) -> str:
    """What trains a unit, less the axes a search does not vary and the searched options
    (a changed `lr` that the search overrides does not change the search)."""
    data = config.canonical()
    for key in _NOT_SEARCH_IDENTITY:
        data.pop(key, None)
    train = data["train"]
    for param in search.space:
        if param.startswith(STAGE_LR_PREFIX):
            (train.get("stage_lr") or {}).pop(param.removeprefix(STAGE_LR_PREFIX), None)
        else:
            train.pop(param, None)
    if train.get("stage_lr") == {}:
        del train["stage_lr"]
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def search_groups(spec: Spec, plan: Plan) -> list[SearchGroup]:
    """The search groups of `spec` and the units of `plan` each serves.

    The units are those of the stages `search.applies_to` names (fine-tuning and
    from-scratch units for "finetune", pretraining units for "pretrain"), grouped by the
    values of their `group_by` axes. With `init` in group_by each arm has its own search
    with the same budget; without it, one search serves both arms (its chosen values go to
    both, stage_lr multipliers to the pretrained arm only), which is not an equal tuning
    effort per arm.

    Args:
        plan: the plan of `spec` before any chosen values are applied (`make_plan(spec)`).

    Returns:
        The groups in plan order of their first unit (pretraining groups first).

    Raises:
        ConfigError: `spec` has no search section.
    """
    search = _search(spec)
    stages = search.stages()
    buckets: dict[tuple, list[Unit]] = {}
    for unit in plan.units:
        if unit.stage not in stages:
            continue
        section = "pretrain" if unit.stage == "pretrain" else "finetune"
        axes = unit.axes
        key = tuple((k, axes[k]) for k in search.group_by if k in _SECTION_KEYS[section])
        buckets.setdefault((section, key), []).append(unit)
    identity = _search_identity(search, spec.seed)
    groups = []
    for (section, key), units in buckets.items():
        arm = dict(key).get("init") if section == "finetune" else None
        params = tuple(
            p
            for p in sorted(search.space)
            if not (arm == "scratch" and p.startswith(STAGE_LR_PREFIX))
        )
        ident = {
            "section": section,
            "key": [list(kv) for kv in key],
            "search": identity,
            "units": sorted({_basis(u.config, search) for u in units}),
        }
        digest = hashlib.sha256(
            json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        groups.append(
            SearchGroup(
                group_id=f"sg-{digest[:16]}",
                section=section,
                key=key,
                arm=arm,
                unit_ids=tuple(u.unit_id for u in units),
                params=params,
                pretrain_units=tuple(sorted({u.depends_on for u in units if u.depends_on})),
            )
        )
    return groups


# --- stored trials ----------------------------------------------------------------------
@dataclass(frozen=True)
class SearchTrial:
    """One finished trial of a search group: a row of SEARCH_SCHEMA.

    Attributes:
        number: its place in the group's budget, 0 .. trials-1.
        params: the sampled values, by parameter.
        state: "complete", "pruned" (stopped early by the pruner) or "failed".
        value: the best value of `metric` its epochs reached (None: no epoch ended).
        values: the metric after each epoch, epoch 1 first.
    """

    group_id: str
    number: int
    params: dict[str, Any]
    state: TrialState
    metric: str
    value: float | None
    values: tuple[float, ...] = ()
    epochs: int = 0
    seconds: float = 0.0
    hardware: str = ""
    code_version: str = ""
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.state not in _OPTUNA_STATE:
            raise ValueError(f"state must be one of {', '.join(_OPTUNA_STATE)}, got {self.state!r}")
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; known: {', '.join(METRICS)}")
        if self.number < 0:
            raise ValueError(f"a trial number is >= 0, got {self.number}")
        if self.state == "complete" and (self.value is None or not math.isfinite(self.value)):
            raise ValueError(f"a complete trial needs a finite value, got {self.value}")

    def to_table(self) -> pa.Table:
        """The trial's one-row part (SEARCH_SCHEMA)."""
        row = {
            "group_id": self.group_id,
            "number": self.number,
            "params": json.dumps(self.params, sort_keys=True),
            "state": self.state,
            "metric": self.metric,
            "value": self.value,
            "values": list(self.values),
            "epochs": self.epochs,
            "seconds": self.seconds,
            "hardware": self.hardware,
            "code_version": self.code_version,
            "finished_at": self.finished_at,
        }
        return pa.Table.from_pylist([row], schema=SEARCH_SCHEMA)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SearchTrial:
        """A trial from a row of SEARCH_SCHEMA (e.g. `table.to_pylist()[0]`).

        Raises:
            ValueError: a value breaks a rule of the row (params not JSON, unknown state).
        """
        missing = [
            f.name
            for f in SEARCH_SCHEMA
            if row.get(f.name) is None and f.name not in ("value", "values")
        ]
        if missing:
            raise ValueError(f"no {', '.join(missing)}")
        try:
            params = json.loads(row["params"])
        except json.JSONDecodeError as e:
            raise ValueError(f"params are not JSON ({e})") from None
        if not isinstance(params, dict):
            raise ValueError(f"params are not a JSON object, got {row['params']!r}")
        return cls(
            group_id=row["group_id"],
            number=int(row["number"]),
            params=params,
            state=row["state"],
            metric=row["metric"],
            value=row["value"],
            values=tuple(row["values"] or ()),
            epochs=int(row["epochs"]),
            seconds=float(row["seconds"]),
            hardware=row["hardware"],
            code_version=row["code_version"],
            finished_at=row["finished_at"],
        )


@dataclass(frozen=True)
class SearchScan:
    """A group's stored trials, and the parts that cannot be read (file name -> why)."""

    trials: list[SearchTrial]
    corrupt: dict[str, str]


def _group_dir(group_id: str) -> str:
    return search_trial_path(group_id, 0).rsplit("/", 1)[0]


def write_search_trial(store: Store, trial: SearchTrial) -> None:
    """Write `trial`'s part atomically (rewriting it is idempotent: same name, one row)."""
    store.write_table(search_trial_path(trial.group_id, trial.number), trial.to_table())


def scan_search_trials(store: Store, group_id: str) -> SearchScan:
    """The readable trials of group `group_id`, in number order.

    A part is a trial when it is Parquet, holds exactly one row of SEARCH_SCHEMA's columns,
    and its group_id and number are those of its path; anything else is reported in
    `SearchScan.corrupt`, never raised (a result that cannot be read is not a result).

    Raises:
        StorageError: the store cannot be listed or read.
    """
    rel_dir = _group_dir(group_id)
    trials, corrupt = [], {}
    for name in store.list_names(rel_dir, ".parquet"):
        data = store.read_if_exists(f"{rel_dir}/{name}")
        if data is None:  # removed since the listing
            continue
        try:
            trial = SearchTrial.from_row(read_search_part(data))
        except (pa.ArrowException, ValueError, TypeError) as e:
            corrupt[name] = " ".join(str(e).split())[:200]
            continue
        if (
            trial.group_id != group_id
            or name != search_trial_path(group_id, trial.number).rsplit("/", 1)[1]
        ):
            corrupt[name] = f"holds trial {trial.number} of group {trial.group_id}"
            continue
        trials.append(trial)
    return SearchScan(sorted(trials, key=lambda t: t.number), corrupt)


# --- the Optuna study -------------------------------------------------------------------
def _group_distributions(
    group: SearchGroup, search: SearchSpec
) -> dict[str, optuna.distributions.BaseDistribution]:
    return optuna_distributions({p: search.space[p] for p in group.params})


def group_sampler(group: SearchGroup, spec: Spec, number: int) -> optuna.samplers.BaseSampler:
    """The sampler that proposes trial `number` of `group`: TPE or random, seeded from the
    search's seed, the group id and `number` (so the proposal never depends on how many
    proposals this process made before: see the module docstring).

    TPE keeps Optuna 5.1's defaults: its first 10 trials are random (n_startup_trials).
    """
    search = _search(spec)
    text = f"{search.resolved_seed(spec.seed)}:{group.group_id}:{number}"
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def _frozen_trial(
    trial: SearchTrial, distributions: Mapping[str, optuna.distributions.BaseDistribution]
) -> optuna.trial.FrozenTrial:
    """`trial` as a live study holds it once told (see the module docstring)."""
    unknown = sorted(set(trial.params) - set(distributions))
    if unknown:
        raise ValueError(
            f"trial {trial.number} of {trial.group_id} has parameters the group does not "
            f"search: {', '.join(unknown)}"
        )
    value = None
    if trial.state == "complete":
        value = trial.value
    elif trial.state == "pruned" and trial.values and math.isfinite(trial.values[-1]):
        value = trial.values[-1]  # what Study.tell records for a pruned trial
    return optuna.trial.create_trial(
        state=_OPTUNA_STATE[trial.state],
        value=value,
        params=dict(trial.params),
        distributions={p: distributions[p] for p in trial.params},
        intermediate_values={epoch: v for epoch, v in enumerate(trial.values, start=1)},
        user_attrs={"number": trial.number},
    )


def pending_numbers(group: SearchGroup, rows: Iterable[SearchTrial], spec: Spec) -> list[int]:
    """The trial numbers of `group`'s budget without a stored row, lowest first."""
    done = {r.number for r in rows}
    return [n for n in range(_search(spec).trials) if n not in done]


def remaining_budget(group: SearchGroup, rows: Iterable[SearchTrial], spec: Spec) -> int:
    """Trials `group` still runs: the budget less its finished trials (complete, pruned and
    failed alike: a failed trial spends budget too, so a failing search ends); never
    negative."""
    finished = {r.number for r in rows if r.state in _OPTUNA_STATE}
    return max(0, _search(spec).trials - len(finished))


def rebuild_study(
    group: SearchGroup,
    rows: Sequence[SearchTrial],
    spec: Spec,
    number: int | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """An in-memory Optuna study of `group` holding its stored trials, in number order.

    Args:
        rows: the group's stored trials (`scan_search_trials(...).trials`).
        number: the trial the study's sampler is seeded to propose (`group_sampler`);
            default: the lowest pending number (the budget's end when none is pending).
        pruner: the study's pruner (`search_pruner`), for a trial that decides whether to
            stop against the stored ones; each stored trial then also holds the rungs it
            completed (`rung_attrs`), as a live study's trials do. None: Optuna's default,
            and no rungs (a study that only proposes).

    Raises:
        ValueError: a row of another group, a number stored twice, or parameters the
            group does not search.
    """
    search = _search(spec)
    numbers = [r.number for r in rows]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"trial numbers stored twice in {group.group_id}: {sorted(numbers)}")
    foreign = sorted({r.group_id for r in rows} - {group.group_id})
    if foreign:
        raise ValueError(f"rows of other groups ({', '.join(foreign)}) in {group.group_id}")
    if number is None:
        pending = pending_numbers(group, rows, spec)
        number = pending[0] if pending else max([search.trials - 1, *numbers]) + 1
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" lines
    try:
        study = optuna.create_study(
            direction=search.direction,
            sampler=group_sampler(group, spec, number),
            study_name=group.group_id,
            pruner=pruner,
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    distributions = _group_distributions(group, search)
    frozen = [_frozen_trial(r, distributions) for r in sorted(rows, key=lambda r: r.number)]
    if isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner):
        for trial, row in zip(frozen, sorted(rows, key=lambda r: r.number), strict=True):
            trial.system_attrs.update(rung_attrs(row.values))
    study.add_trials(frozen)
    return study


def suggest(
    group: SearchGroup, rows: Sequence[SearchTrial], spec: Spec, number: int
) -> dict[str, Any]:
    """The values trial `number` of `group` trains with: one proposal of the study rebuilt
    from the stored `rows`, its sampler seeded for `number`.

    With max_concurrent 1 (every earlier trial stored before the next is asked) the
    sequence of proposals is a function of the spec alone, whether or not the driver was
    killed in between.
    """
    study = rebuild_study(group, rows, spec, number=number)
    trial = study.ask(_group_distributions(group, _search(spec)))
    return dict(trial.params)


# --- the choice -------------------------------------------------------------------------
def best_trial(rows: Iterable[SearchTrial], metric: str) -> SearchTrial | None:
    """The best complete trial on `metric` (in its direction); of equally good ones, the
    lowest trial number; None when no trial of `metric` completed."""
    complete = [r for r in rows if r.state == "complete" and r.metric == metric]
    if not complete:
        return None
    sign = 1.0 if METRICS[metric] == "minimize" else -1.0
    return min(complete, key=lambda r: (sign * r.value, r.number))


def choose(rows: Iterable[SearchTrial], metric: str) -> dict[str, Any]:
    """The values of the best complete trial on `metric` (`best_trial`).

    Raises:
        ValueError: a row searched another metric.
        TrainingError: no trial completed (every one failed or was pruned).
    """
    rows = list(rows)
    other = sorted({r.metric for r in rows} - {metric})
    if other:
        raise ValueError(f"choosing on {metric}, but rows searched {', '.join(other)}")
    best = best_trial(rows, metric)
    if best is None:
        raise TrainingError(
            f"no search trial completed ({len(rows)} pruned or failed): nothing to choose"
        )
    return dict(best.params)


def apply_choice(unit_config: UnitConfig, params: Mapping[str, Any]) -> UnitConfig:
    """`unit_config` training with the chosen `params` (so its unit id includes them).

    `stage_lr.<group>` values are merged into `train.stage_lr`, except in a from-scratch
    unit: that arm trains every layer at `lr` (FinetuneSpec.train_options).

    Raises:
        ConfigError: a value that is not a valid training option.
    """
    train = unit_config.train.model_dump()
    stage_lr = dict(train.get("stage_lr") or {})
    for name, value in params.items():
        if name.startswith(STAGE_LR_PREFIX):
            stage_lr[name.removeprefix(STAGE_LR_PREFIX)] = value
        else:
            train[name] = value
    if unit_config.stage != "scratch" and stage_lr:
        train["stage_lr"] = dict(sorted(stage_lr.items()))
    try:
        options = TrainOptions(**train)
    except ValidationError as e:
        raise ConfigError(
            f"chosen values {dict(params)} are not valid training options: {e}"
        ) from None
    return unit_config.model_copy(update={"train": options})


def read_choice(store: Store, group: SearchGroup) -> dict[str, Any] | None:
    """`group`'s chosen values from its chosen.json; None while there is none, or when the
    one there is not this group's choice (another group id, other parameters, not JSON):
    the driver then chooses again from the stored trials (`write_choice`), which gives the
    same values.

    Raises:
        StorageError: the store cannot be read.
    """
    data = store.read_if_exists(search_choice_path(group.group_id))
    if data is None:
        return None
    try:
        doc = json.loads(data)
        params = doc["params"]
        if doc["group_id"] != group.group_id or sorted(params) != list(group.params):
            return None
    except (ValueError, KeyError, TypeError):
        return None
    return dict(params)


def write_choice(
    store: Store, spec: Spec, group: SearchGroup, rows: Sequence[SearchTrial]
) -> dict[str, Any]:
    """Choose `group`'s values from its stored trials (`choose`) and write chosen.json
    (atomically; its group's units then train with them). Returns the chosen values.

    Raises:
        StorageError: trials of the budget have no readable row.
        TrainingError: no trial completed.
    """
    search = _search(spec)
    pending = pending_numbers(group, rows, spec)
    if pending:
        raise StorageError(
            f"search group {group.group_id}: trials {pending} have no readable row; "
            "run the study again to run them"
        )
    chosen = choose(rows, search.metric)
    store.write_json(
        search_choice_path(group.group_id),
        {
            "group_id": group.group_id,
            "metric": search.metric,
            "params": chosen,
            # what the report compares between arms (analysis reads no plan)
            "key": [list(kv) for kv in group.key],
            "arm": group.arm,
        },
    )
    return chosen


def plan_with_choices(spec: Spec, plan: Plan, choices: Mapping[str, Mapping[str, Any]]) -> Plan:
    """`plan` (the spec's own, `make_plan(spec)`) with each unit of a group in `choices`
    trained with the group's chosen values: a new config, so a new id (`Plan.base_ids`
    keeps the spec's id of each). Units of groups without a choice keep the spec's fixed
    training options and id: they wait for their search, and never run with those.

    Pretraining groups first: a pretraining unit with chosen values has a new id, so the
    fine-tuning units that start from it do too (their config names it), and so do the
    fine-tuning search groups over them (a search from other weights is another search):
    fine-tuning choices are looked up by the groups of the plan with the pretraining
    choices applied.

    Args:
        choices: group id -> chosen values (`read_choice`).
    """
    if spec.search is None or not choices:
        return plan
    plan = _apply_choices(spec, plan, choices, "pretrain")
    return _apply_choices(spec, plan, choices, "finetune")


def _apply_choices(
    spec: Spec, plan: Plan, choices: Mapping[str, Mapping[str, Any]], section: str
) -> Plan:
    by_unit = {}
    for group in search_groups(spec, plan):
        if group.section == section and group.group_id in choices:
            for uid in group.unit_ids:
                by_unit[uid] = choices[group.group_id]
    if not by_unit:
        return plan
    units, base, moved = [], dict(plan.base_ids), {}
    for unit in plan.units:
        params = by_unit.get(unit.unit_id)
        config = unit.config
        if params is not None:
            config = apply_choice(config, params)
        elif unit.depends_on in moved:  # starts from a pretraining unit that moved
            config = config.model_copy(update={"pretrain_unit": moved[unit.depends_on]})
        else:
            units.append(unit)
            continue
        new = Unit.of(config, depends_on=config.pretrain_unit)
        moved[unit.unit_id] = new.unit_id
        base[new.unit_id] = plan.base_id(unit.unit_id)
        units.append(new)
    return Plan(units, list(plan.excluded), base)


def stored_choices(store: Store, spec: Spec, plan: Plan) -> dict[str, dict[str, Any]]:
    """The chosen values of each of `spec`'s search groups that has a valid chosen.json:
    the pretraining groups' first, then the fine-tuning groups of the plan with those
    applied (their ids depend on the pretraining choices: `plan_with_choices`).

    Args:
        plan: the spec's own plan (`make_plan(spec)`).
    """
    if spec.search is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for section in ("pretrain", "finetune"):
        current = _apply_choices(spec, plan, out, "pretrain")
        for group in search_groups(spec, current):
            if group.section == section:
                params = read_choice(store, group)
                if params is not None:
                    out[group.group_id] = params
    return out


# --- pruning ----------------------------------------------------------------------------
def search_pruner(spec: Spec) -> optuna.pruners.BasePruner:
    """The pruner of `spec`'s search: SuccessiveHalvingPruner (ASHA_MIN_RESOURCE,
    ASHA_REDUCTION_FACTOR) for `asha`, NopPruner for `none`."""
    if _search(spec).pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=ASHA_MIN_RESOURCE, reduction_factor=ASHA_REDUCTION_FACTOR
        )
    return optuna.pruners.NopPruner()


def rung_attrs(values: Sequence[float]) -> dict[str, float]:
    """The rungs a trial reporting `values` (epoch 1 first) completed, as the system
    attributes SuccessiveHalvingPruner records on a live trial ("completed_rung_<r>": the
    value at rung r's epoch).

    The pruner records rung r when a trial reports at its epoch (min_resource *
    reduction_factor ** r) a value that is not NaN, then stops the trial unless it is
    promoted; a trial that went on past rung r was promoted there. So every rung up to its
    last epoch, until the first NaN, is recorded: for complete, pruned and failed trials
    alike (the pruner compares a rung's value with every trial's, whatever its state).
    """
    out: dict[str, float] = {}
    rung = 0
    while (epoch := ASHA_MIN_RESOURCE * ASHA_REDUCTION_FACTOR**rung) <= len(values):
        value = values[epoch - 1]
        if math.isnan(value):
            break
        out[f"completed_rung_{rung}"] = value
        rung += 1
    return out


def search_unit(
    spec: Spec, plan: Plan, group: SearchGroup, params: Mapping[str, Any] | None = None
) -> Unit:
    """The unit a trial of group `group` trains, with `params` (`apply_choice`).

    A fine-tuning group's: its first waiting unit of repeat 0 (plan order), at the
    search's data fraction (repeat 0's nested subset, seed and validation rule). A
    pretraining group's: its first unit of the lowest pretraining repeat, on the whole
    upstream training split (`search.fraction` is the fine-tuning groups' only).

    Where group_by leaves an axis out (e.g. freeze_depth), the group's units differ on it
    and the first one in plan order represents them.

    Raises:
        ConfigError: `params` that are not valid training options.
    """
    search = _search(spec)
    ids = set(group.unit_ids)
    if group.section == "pretrain":  # the whole upstream training split, pretraining seed 0
        first = min(
            (u for u in plan.units if u.unit_id in ids),
            key=lambda u: u.config.pretrain_repeat or 0,
        )
        config = apply_choice(first.config, params) if params else first.config
        return Unit.of(config)
    first = next(u for u in plan.units if u.unit_id in ids and u.config.repeat == 0)
    match = spec.finetune.val_fraction == "match" and search.fraction < 1.0
    config = first.config.model_copy(
        update={
            "data_fraction": search.fraction,
            "repeat": 0,
            "seed": spec.seed,  # repeat 0's (study.sweep.plan.make_plan)
            "val_fraction": "match" if match else None,
        }
    )
    config = UnitConfig.model_validate(config.model_dump())
    if params:
        config = apply_choice(config, params)
    return Unit.of(config, depends_on=config.pretrain_unit)
