"""The search stage of a study run (issue 11): each search group's trials as jobs of the
streaming scheduler (study.sweep.scheduler), and its ablation units added to the run when
its values are chosen.

- A group's pending trial numbers run as Ray tasks (study.sweep.remote.run_search_trial),
  at most `search.max_concurrent` of a group at once: trial i waits for trial
  i - max_concurrent (a lane), the first ones for the group's pretraining unit (the
  pretrained arm's trials start from its weights). With max_concurrent 1, trial n is
  proposed only once trials 0 .. n-1 are in the store, as an uninterrupted in-process
  search would (study.sweep.search's docstring).
- A trial's values are proposed on the driver when it starts (`suggest`, from the group's
  stored rows), never before: a trial retried or resumed is proposed from what the store
  holds then.
- When a group's last trial ends, the driver writes its chosen values (chosen.json) and
  the group's units, trained with them (`plan_with_choices`: new ids), become jobs; a
  group whose trials are all in the store but that has no choice yet (a driver killed in
  between) is chosen before anything runs.

A trial's job is keyed "search:<group id>:<number>"; units never wait for a trial's key,
only for the group's choice, which the scheduler learns of from the last trial's `then`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from study.errors import ConfigError, TrainingError
from study.store import Store
from study.sweep.plan import Plan, Unit
from study.sweep.scheduler import Job
from study.sweep.search import (
    SearchGroup,
    pending_numbers,
    plan_with_choices,
    read_choice,
    scan_search_trials,
    search_groups,
    search_unit,
    suggest,
    write_choice,
)
from study.sweep.spec import Spec

__all__ = ["SearchStage", "trial_key"]


def trial_key(group_id: str, number: int) -> str:
    """The scheduler key of trial `number` of group `group_id`."""
    return f"search:{group_id}:{number:05d}"


def _log(msg: str) -> None:
    print(f"[study] {msg}", file=sys.stderr, flush=True)


def _describe(group: SearchGroup) -> str:
    return " / ".join(str(v) for _, v in group.key) or "all units"


@dataclass
class SearchStage:
    """The search groups of one driver's run, and the jobs of the units they free (module
    docstring).

    Args:
        store, spec: the study.
        base: the spec's own plan (`make_plan(spec)`: no choices applied).
        done: ids of the units whose rows were in the store when the driver started.
        unit_jobs: the scheduler jobs of a list of units (the runner's).
        submit_trial: starts a trial on the cluster: (group, representative unit, number,
            values) -> its ObjectRef (the runner's: a Ray task, or for a pretraining group
            a task driving a Ray Train run).
        expected_seconds: a unit's relative expected duration (the runner's).
        on_choice: called on the driver with the plan once a group's choice is written
            (e.g. to rewrite plan.parquet).
        on_trials: called with the number of trial jobs each `jobs` call adds (a progress
            bar's total grows as pretraining choices make fine-tuning groups ready).
    """

    store: Store
    spec: Spec
    base: Plan
    done: set[str] = field(default_factory=set)
    unit_jobs: Callable[[list[Unit]], list[Job]] = lambda units: []
    submit_trial: Callable[[SearchGroup, Unit, int, dict], Any] | None = None
    expected_seconds: Callable[[Unit], float] = lambda unit: 1.0
    on_choice: Callable[[Plan], None] | None = None
    on_trials: Callable[[int], None] | None = None  # told how many trial jobs `jobs` adds
    choices: dict[str, dict[str, Any]] = field(init=False, default_factory=dict)
    failed: dict[str, str] = field(init=False, default_factory=dict)  # group id -> why
    added: list[Unit] = field(init=False, default_factory=list)  # units handed to the run
    _remaining: dict[str, set[int]] = field(init=False, default_factory=dict)
    _scheduled: set[str] = field(init=False, default_factory=set)  # unit and group ids
    # (the groups chosen, the plan with their choices, its search groups): both walk every
    # unit, so they are made once per new choice, not at each question asked of them
    _view: tuple[frozenset, Plan, list[SearchGroup]] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.spec.search is None:
            raise ConfigError(f"study {self.spec.name} has no search: section")
        self._settle()

    # --- what the store says ------------------------------------------------------------
    def _current(self) -> tuple[Plan, list[SearchGroup]]:
        chosen = frozenset(self.choices)  # a group's chosen values never change
        if self._view is None or self._view[0] != chosen:
            plan = plan_with_choices(self.spec, self.base, self.choices)
            self._view = (chosen, plan, search_groups(self.spec, plan))
        return self._view[1], self._view[2]

    @property
    def plan(self) -> Plan:
        """The plan with every choice made so far (units waiting for a choice keep the
        spec's ids)."""
        return self._current()[0]

    def groups(self) -> list[SearchGroup]:
        """The search groups of `plan`: a fine-tuning group over units whose pretraining
        is still searched has an id that changes with that choice."""
        return self._current()[1]

    def _unchosen_pretraining(self, groups: list[SearchGroup]) -> set[str]:
        return {
            uid
            for g in groups
            if g.section == "pretrain" and g.group_id not in self.choices
            for uid in g.unit_ids
        }

    def _ready(self, group: SearchGroup, unchosen: set[str]) -> bool:
        """Whether `group`'s trials can run: a fine-tuning group's pretraining units must
        have their final ids (no pretraining search left to choose them)."""
        return group.section == "pretrain" or not (set(group.pretrain_units) & unchosen)

    def _settle(self) -> None:
        """Take every choice the store holds or allows, group by group, until none is left:
        a pretraining choice gives new fine-tuning groups, whose choices may be stored."""
        while True:
            groups = self.groups()
            unchosen = self._unchosen_pretraining(groups)
            changed = False
            for group in groups:
                gid = group.group_id
                if gid in self.choices or gid in self.failed or gid in self._remaining:
                    continue
                if not self._ready(group, unchosen):
                    continue
                params = read_choice(self.store, group)
                if params is None:
                    rows = scan_search_trials(self.store, gid).trials
                    pending = pending_numbers(group, rows, self.spec)
                    if pending:
                        self._remaining[gid] = set(pending)
                        continue
                    try:  # its trials ended, its driver did not write the choice
                        params = self._choose(group, rows)
                    except TrainingError as e:  # its units cannot run; the others can
                        self.failed[gid] = str(e)
                        _log(f"search {gid} ({_describe(group)}): {e}")
                        continue
                self.choices[gid] = params
                changed = True
            if not changed:
                return

    def waiting(self) -> set[str]:
        """Ids of `plan`'s units that wait for a choice: those of groups without one, and
        the fine-tuning units that start from a pretraining unit that waits."""
        plan, groups = self._current()
        out = {uid for g in groups if g.group_id not in self.choices for uid in g.unit_ids}
        return out | {u.unit_id for u in plan.units if u.depends_on in out}

    def waiting_groups(self) -> list[SearchGroup]:
        """The groups of the current plan without a choice."""
        return [g for g in self.groups() if g.group_id not in self.choices]

    @property
    def pending_trials(self) -> int:
        """Trials known to run: those of the groups whose trials can run now (a fine-tuning
        group over pretraining units still searched is counted once they are chosen)."""
        return sum(len(v) for v in self._remaining.values())

    def _choose(self, group: SearchGroup, rows) -> dict[str, Any]:
        params = write_choice(self.store, self.spec, group, rows)
        states = [r.state for r in rows]
        counts = ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "failed"))
        _log(f"search {group.group_id} ({_describe(group)}): {counts}; chose {params}")
        return params

    # --- jobs ---------------------------------------------------------------------------
    def jobs(self) -> list[Job]:
        """What can run now and was not handed to the run yet: the units that wait for no
        choice (and have no row), and the pending trials of every group ready to search."""
        plan, groups = self._current()
        waiting = self.waiting()
        units = [
            u
            for u in plan.units
            if u.unit_id not in waiting
            and u.unit_id not in self.done
            and u.unit_id not in self._scheduled
        ]
        self._scheduled.update(u.unit_id for u in units)
        self.added.extend(units)
        out = self.unit_jobs(units)
        trials = []
        for group in groups:
            gid = group.group_id
            if gid in self._remaining and gid not in self._scheduled:
                self._scheduled.add(gid)
                trials.extend(self._trial_jobs(group, plan))
        if trials and self.on_trials is not None:
            self.on_trials(len(trials))
        return out + trials

    def _trial_jobs(self, group: SearchGroup, plan: Plan) -> list[Job]:
        lanes = self.spec.search.max_concurrent
        unit = search_unit(self.spec, plan, group)
        trial_seconds = self.expected_seconds(unit)
        ids = set(group.unit_ids)
        after = max((self.expected_seconds(u) for u in plan.units if u.unit_id in ids), default=0.0)
        pending = sorted(self._remaining[group.group_id])
        out = []
        for i, number in enumerate(pending):
            ahead = math.ceil((len(pending) - i) / lanes)  # trials left in its lane
            out.append(
                Job(
                    key=trial_key(group.group_id, number),
                    submit=self._submit(group, unit, number),
                    depends_on=(
                        trial_key(group.group_id, pending[i - lanes])
                        if i >= lanes
                        else unit.depends_on
                    ),
                    # the longest path through it: its lane's trials, then the units
                    expected_seconds=trial_seconds * ahead + after,
                    # a pretraining trial is a DDP run: it takes a pretraining slot
                    kind="pretrain" if group.section == "pretrain" else "search",
                    then=self._then(group, number),
                )
            )
        return out

    def _submit(self, group: SearchGroup, unit: Unit, number: int):
        def start():
            rows = scan_search_trials(self.store, group.group_id).trials
            params = suggest(group, rows, self.spec, number)
            if self.submit_trial is None:
                raise RuntimeError("SearchStage has no submit_trial")
            return self.submit_trial(group, unit, number, params)

        return start

    def _then(self, group: SearchGroup, number: int) -> Callable[[Any], Iterable[Job]]:
        def then(_value: Any) -> list[Job]:
            remaining = self._remaining[group.group_id]
            remaining.discard(number)
            if remaining:
                return []
            del self._remaining[group.group_id]
            rows = scan_search_trials(self.store, group.group_id).trials
            try:
                self.choices[group.group_id] = self._choose(group, rows)
            except TrainingError as e:
                self.failed[group.group_id] = str(e)
                raise
            self._settle()  # fine-tuning groups a pretraining choice made ready
            if self.on_choice is not None:
                self.on_choice(self.plan)
            return self.jobs()

        return then
