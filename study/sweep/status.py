"""`study status`: every planned unit's state, what runs where, and an ETA, from the store
alone.

A unit is done when its result row can be read; a unit with a run marker is running only
while the lease the marker was written under is live (study.sweep.lease), else it was
interrupted; unreadable result parts are corrupt. The ETA is the work left, predicted from
the durations of the study's finished units (study.sweep.estimate), over the number of
units running now.

A study whose spec has a `search:` section also gets each search group's progress
(`SearchProgress`): its stored trials by state against the budget, the best so far, and
whether its values are chosen; one scan of the group's folder (study.sweep.search).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from study.errors import StudyError
from study.schema import run_marker_path, search_choice_path, search_trial_path
from study.store import Store
from study.sweep.estimate import LEVELS, DurationModel, measurements, scan_durations
from study.sweep.lease import LeaseInfo, read_lease
from study.sweep.plan import STAGES, Plan, Unit
from study.sweep.runner import done_ids, load_study
from study.sweep.spec import Spec

__all__ = [
    "STATES",
    "Eta",
    "SearchProgress",
    "StudyState",
    "inspect_study",
    "study_status",
    "failures",
]

#: The columns of the status table, in order.
STATES = ("done", "running", "interrupted", "failed", "corrupt", "pending")

# The run marker fields `StudyState.units` carries (None where a marker lacks one: markers
# written before a field existed).
_MARKER_FIELDS = ("host", "node", "updated_at", "started_at", "attempt", "epoch", "lease_id")
_COLUMNS = ("stage", "state", "unit_id", "max_epochs", *_MARKER_FIELDS, "error")


@dataclass(frozen=True)
class Eta:
    """The work left and when it should end.

    Attributes:
        work_left_s: predicted unit-seconds of every unit not done (a running unit: its
            epochs still to run); None when no unit has finished (nothing to predict from).
        units_left: units not done.
        finished: finished units of the study the prediction rests on.
        running: units running now (the parallelism the ETA assumes).
        relative_only: units left of a stage without a finished unit, predicted from the
            other stages' rate (relative cost only).
    """

    work_left_s: float | None
    units_left: int
    finished: int
    running: int
    relative_only: int = 0

    @property
    def wall_s(self) -> float | None:
        """Seconds until the last unit ends, at the number of units running now; None when
        there is nothing to predict from or nothing runs."""
        if self.work_left_s is None or not self.running:
            return None
        return self.work_left_s / self.running


@dataclass(frozen=True)
class SearchProgress:
    """One search group's progress, from its stored trials (study.sweep.search).

    Attributes:
        group_id: the group's id (SearchGroup.group_id).
        section: "finetune" or "pretrain".
        key: the group's key values (axis -> value).
        arm: "pretrained" or "scratch"; None when both arms share the search, and for
            pretraining groups.
        budget: the search's trials per group.
        complete, pruned, failed: readable stored trials in each state.
        metric: the validation metric searched; direction: "minimize" or "maximize".
        best_number, best_value, best_params: the best complete trial so far on `metric`
            (its number, value and sampled values; of equals the lowest number, as
            `study.sweep.search.choose` picks); None while no trial completed.
        chosen: the group's chosen.json exists (its values are final).
        corrupt: unreadable trial parts ("results/search/<group_id>/<file>" -> why), not
            counted as trials.
    """

    group_id: str
    section: str
    key: dict[str, Any]
    arm: str | None
    budget: int
    complete: int
    pruned: int
    failed: int
    metric: str
    direction: str
    best_number: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] | None = None
    chosen: bool = False
    corrupt: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        """Trials that spent budget (complete, pruned and failed), at most the budget."""
        return min(self.complete + self.pruned + self.failed, self.budget)


@dataclass
class StudyState:
    """What the store says about a study (the `study status` command prints it).

    Attributes:
        table: units per stage (rows, and "total") and state (STATES).
        units: one row per planned unit: stage, state, unit_id, max_epochs (its
            configured maximum), and from its run marker host, node, updated_at,
            started_at, attempt, epoch (epochs completed), error and lease_id (None where
            there is no marker or the marker has no such field).
        corrupt: unreadable result parts ("results/<table>/<file>" -> why).
        lease: the driver lease in the store (None: no driver holds the study).
        eta: the work left and the ETA (see Eta).
        checked_at: when the store was read (UTC).
        search: each search group's progress, in plan order (None: the spec has no
            `search:` section).
    """

    table: pd.DataFrame
    units: pd.DataFrame
    corrupt: dict[str, str]
    lease: LeaseInfo | None
    eta: Eta | None = None
    checked_at: datetime | None = None
    search: list[SearchProgress] | None = None

    def markers(self, state: str) -> list[dict]:
        """The units in `state`, with their marker's host, node, times, epoch and error."""
        rows = self.units[self.units.state == state]
        return rows.to_dict("records")


def _unit_state(marker: dict | None, live: LeaseInfo | None) -> str:
    """A unit without a readable row, from its run marker: a "running" marker counts as
    running only while the lease it was written under is the live one; else its driver is
    gone and the unit was interrupted."""
    if marker is None:
        return "pending"
    state = marker.get("state")
    if state in ("failed", "interrupted"):
        return state
    if state == "running":
        running = live is not None and marker.get("lease_id") == live.lease_id
        return "running" if running else "interrupted"
    return "pending"  # "done" without a readable row: it runs again


def inspect_study(uri: str) -> StudyState:
    """Every planned unit's state, from the store alone: the result parts (read, not only
    listed: an unreadable one is "corrupt"; their durations feed the ETA), the run markers
    and the driver lease; with a `search:` section, each search group's stored trials."""
    store, spec, plan = load_study(uri)
    scan, rows_read = scan_durations(store)
    live = lease = read_lease(store)
    if live is not None and not live.live():
        live = None
    corrupt_ids = scan.corrupt_ids
    with_marker = {n.removesuffix(".json") for n in store.list_names("runs", ".json")}
    wanted = [
        u.unit_id
        for u in plan.units
        if u.unit_id not in scan.done and u.unit_id not in corrupt_ids and u.unit_id in with_marker
    ]

    def read(uid: str) -> dict | None:
        try:
            marker = store.read_json(run_marker_path(uid))
        except (StudyError, ValueError):  # removed meanwhile, or not JSON: no marker
            return None
        return marker if isinstance(marker, dict) else None  # JSON, but not a marker

    with ThreadPoolExecutor(max(1, min(16, len(wanted)))) as pool:
        markers = dict(zip(wanted, pool.map(read, wanted), strict=True))
    rows = []
    for u in plan.units:
        marker = markers.get(u.unit_id)
        if u.unit_id in scan.done:
            state = "done"
        elif u.unit_id in corrupt_ids:
            state = "corrupt"
        else:
            state = _unit_state(marker, live)
        m = marker or {}
        error = m.get("error")
        if state == "interrupted" and m.get("state") == "running":
            epoch = f" at epoch {m['epoch']}" if m.get("epoch") else ""
            error = (
                f"marked running{epoch} by a driver that is no longer running "
                f"(lease {m.get('lease_id') or 'none recorded'})"
            )
        rows.append(
            {
                "stage": u.stage,
                "state": state,
                "unit_id": u.unit_id,
                "max_epochs": u.config.train.epochs,
                **{k: m.get(k) for k in _MARKER_FIELDS},
                "error": error,
            }
        )
    # object columns: a marker's ints stay ints and its absent fields None (not NaN)
    units = pd.DataFrame({k: pd.Series([r[k] for r in rows], dtype=object) for k in _COLUMNS})
    table = (
        units.groupby(["stage", "state"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=list(STAGES), columns=list(STATES), fill_value=0)
    )
    table.loc["total"] = table.sum()
    eta = _eta(plan.units, rows, DurationModel(measurements(rows_read, plan)))
    search = _search_progress(store, spec, plan) if spec.search is not None else None
    return StudyState(table, units, scan.corrupt, lease, eta, datetime.now(UTC), search)


def _search_progress(store: Store, spec: Spec, plan: Plan) -> list[SearchProgress]:
    """Each search group's progress: one scan of its folder (its trial parts read, the
    unreadable ones named) and one existence check of its chosen.json, groups in
    parallel (an S3 store answers each request in tens of milliseconds)."""
    # Imported here: the search brings Optuna, which a study without one does not need.
    from study.sweep.search import SearchGroup, best_trial, scan_search_trials, search_groups

    search = spec.search
    groups = search_groups(spec, plan)

    def one(group: SearchGroup) -> SearchProgress:
        scan = scan_search_trials(store, group.group_id)
        folder = search_trial_path(group.group_id, 0).rsplit("/", 1)[0]
        states = [t.state for t in scan.trials]
        best = best_trial(scan.trials, search.metric)  # what the choice will take
        return SearchProgress(
            group_id=group.group_id,
            section=group.section,
            key=group.key_values,
            arm=group.arm,
            budget=search.trials,
            complete=states.count("complete"),
            pruned=states.count("pruned"),
            failed=states.count("failed"),
            metric=search.metric,
            direction=search.direction,
            best_number=None if best is None else best.number,
            best_value=None if best is None else best.value,
            best_params=None if best is None else dict(best.params),
            chosen=store.exists(search_choice_path(group.group_id)),
            corrupt={f"{folder}/{name}": why for name, why in scan.corrupt.items()},
        )

    with ThreadPoolExecutor(max(1, min(16, len(groups)))) as pool:
        return list(pool.map(one, groups))


def _eta(planned: list[Unit], rows: list[dict], model: DurationModel) -> Eta:
    """The work left: each unit not done at its predicted duration, a running one for the
    epochs it has still to run (`rows`: the units' states, in the order of `planned`)."""
    left = [(u, r) for u, r in zip(planned, rows, strict=True) if r["state"] != "done"]
    running = sum(r["state"] == "running" for _, r in left)
    if not len(model):
        return Eta(None, len(left), 0, running)
    work, relative = 0.0, 0
    for u, r in left:
        p = model.predict(u.config)
        relative += p.level == len(LEVELS) - 1
        ran = r["epoch"] if r["state"] == "running" and isinstance(r["epoch"], int) else 0
        work += p.per_epoch * max(p.epochs - ran, 0.0)
    return Eta(work, len(left), len(model), running, relative)


def study_status(uri: str) -> pd.DataFrame:
    """Units per stage and state (done / running / interrupted / failed / corrupt /
    pending), from the store alone (see `inspect_study`)."""
    return inspect_study(uri).table


def failures(uri: str) -> list[dict]:
    """The failure markers of the study's unfinished units (unit, host, error)."""
    store, _, plan = load_study(uri)
    done = done_ids(store, plan.units)
    out = []
    for n in store.list_names("runs", ".json"):
        m = store.read_json(f"runs/{n}")
        if m["state"] == "failed" and m["unit_id"] not in done:
            out.append(m)
    return out
