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
from collections.abc import Callable, Iterable, Mapping
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
    """The search groups of one driver's run (module docstring).

    Args:
        store, spec: the study.
        base: the spec's own plan (`make_plan(spec)`: no choices applied).
        env: run facts for the trials' tasks (code_version, loader_workers, lease_id).
        unit_jobs: the scheduler jobs of a list of units (the runner's).
        expected_seconds: a unit's relative expected duration (the runner's).
        on_choice: called on the driver with the plan once a group's choice is written
            (e.g. to rewrite plan.parquet).
    """

    store: Store
    spec: Spec
    base: Plan
    env: dict
    unit_jobs: Callable[[list[Unit]], list[Job]]
    expected_seconds: Callable[[Unit], float]
    on_choice: Callable[[Plan], None] | None = None
    groups: list[SearchGroup] = field(init=False)
    choices: dict[str, dict[str, Any]] = field(init=False, default_factory=dict)
    added: list[Unit] = field(init=False, default_factory=list)  # units added at run time
    failed: dict[str, str] = field(init=False, default_factory=dict)  # group id -> why
    _remaining: dict[str, set[int]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        search = self.spec.search
        if search is None:
            raise ConfigError(f"study {self.spec.name} has no search: section")
        self.groups = search_groups(self.spec, self.base)
        for group in self.groups:
            params = read_choice(self.store, group)
            if params is None:
                rows = scan_search_trials(self.store, group.group_id).trials
                pending = pending_numbers(group, rows, self.spec)
                if not pending:  # its trials ended, its driver did not write the choice
                    try:
                        params = self._choose(group, rows)
                    except TrainingError as e:  # its units cannot run; the others can
                        self.failed[group.group_id] = str(e)
                        _log(f"search {group.group_id} ({_describe(group)}): {e}")
                        continue
                else:
                    self._remaining[group.group_id] = set(pending)
            if params is not None:
                self.choices[group.group_id] = params

    def waiting_groups(self) -> list[SearchGroup]:
        """The groups without a choice (their trials pending, or none of them completed)."""
        return [g for g in self.groups if g.group_id not in self.choices]

    @property
    def plan(self) -> Plan:
        """The plan with every choice made so far (units of unchosen groups keep the
        spec's ids, and wait)."""
        return plan_with_choices(self.spec, self.base, self.choices)

    @property
    def waiting(self) -> set[str]:
        """Ids of the units whose group has not chosen yet."""
        return {uid for g in self.waiting_groups() for uid in g.unit_ids}

    @property
    def pending_trials(self) -> int:
        return sum(len(v) for v in self._remaining.values())

    def _choose(self, group: SearchGroup, rows) -> dict[str, Any]:
        params = write_choice(self.store, self.spec, group, rows)
        states = [r.state for r in rows]
        counts = ", ".join(f"{states.count(s)} {s}" for s in ("complete", "pruned", "failed"))
        _log(f"search {group.group_id} ({_describe(group)}): {counts}; chose {params}")
        return params

    def jobs(self, trial_task: Any, resources: Mapping[str, Any]) -> list[Job]:
        """The pending trials of every unchosen group, as scheduler jobs.

        Args:
            trial_task: the Ray remote function of a trial (study.sweep.remote).
            resources: threads and use_gpu of a trial's task.
        """
        search = self.spec.search
        lanes = search.max_concurrent
        out = []
        for group in self.groups:
            if group.group_id not in self._remaining:
                continue
            unit = search_unit(self.spec, self.base, group)
            trial_seconds = self.expected_seconds(unit)
            ids = set(group.unit_ids)
            after = max(
                (self.expected_seconds(u) for u in self.base.units if u.unit_id in ids),
                default=0.0,
            )
            pending = sorted(self._remaining[group.group_id])
            for i, number in enumerate(pending):
                ahead = math.ceil((len(pending) - i) / lanes)  # trials left in its lane
                out.append(
                    Job(
                        key=trial_key(group.group_id, number),
                        submit=self._submit(group, unit, number, trial_task, resources),
                        depends_on=(
                            trial_key(group.group_id, pending[i - lanes])
                            if i >= lanes
                            else unit.depends_on
                        ),
                        # the longest path through it: its lane's trials, then the units
                        expected_seconds=trial_seconds * ahead + after,
                        kind="search",
                        then=self._then(group, number),
                    )
                )
        return out

    def _submit(self, group: SearchGroup, unit: Unit, number: int, task, resources):
        def start():
            rows = scan_search_trials(self.store, group.group_id).trials
            params = suggest(group, rows, self.spec, number)
            return task.remote(
                self.store.uri,
                self.spec,
                group,
                unit,
                number,
                params,
                self.env,
                resources["threads"],
                resources["use_gpu"],
            )

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
            plan = self.plan
            if self.on_choice is not None:
                self.on_choice(plan)
            return self.unit_jobs(self._units_of(group, plan))

        return then

    def _units_of(self, group: SearchGroup, plan: Plan) -> list[Unit]:
        """`group`'s units in `plan` (with its choice), in plan order."""
        ids = set(group.unit_ids)
        units = [u for u in plan.units if plan.base_id(u.unit_id) in ids]
        self.added.extend(units)
        return units
