"""`study status`: every planned unit's state, from the store alone.

A unit is done when its result row can be read; a unit with a run marker is running only
while the lease the marker was written under is live (study.sweep.lease), else it was
interrupted; unreadable result parts are corrupt.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pandas as pd

from study.errors import StudyError
from study.schema import run_marker_path
from study.sweep.lease import LeaseInfo, read_lease
from study.sweep.plan import STAGES
from study.sweep.runner import done_ids, load_study, scan_results

__all__ = ["STATES", "StudyState", "inspect_study", "study_status", "failures"]

#: The columns of the status table, in order.
STATES = ("done", "running", "interrupted", "failed", "corrupt", "pending")


@dataclass
class StudyState:
    """What the store says about a study (the `study status` command prints it).

    Attributes:
        table: units per stage (rows, and "total") and state (STATES).
        units: one row per planned unit: stage, state, unit_id, and from its run marker
            host, updated_at, error and lease_id (None where there is no marker).
        corrupt: unreadable result parts ("results/<table>/<file>" -> why).
        lease: the driver lease in the store (None: no driver holds the study).
    """

    table: pd.DataFrame
    units: pd.DataFrame
    corrupt: dict[str, str]
    lease: LeaseInfo | None

    def markers(self, state: str) -> list[dict]:
        """The units in `state`, with their marker's host, time and error."""
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
    listed: an unreadable one is "corrupt"), the run markers and the driver lease."""
    store, _, plan = load_study(uri)
    scan = scan_results(store)
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
            return store.read_json(run_marker_path(uid))
        except (StudyError, ValueError):  # removed meanwhile, or not JSON: no marker
            return None

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
                "host": m.get("host"),
                "updated_at": m.get("updated_at"),
                "error": error,
                "lease_id": m.get("lease_id"),
            }
        )
    units = pd.DataFrame(rows)
    table = (
        units.groupby(["stage", "state"])
        .size()
        .unstack(fill_value=0)
        .reindex(index=list(STAGES), columns=list(STATES), fill_value=0)
    )
    table.loc["total"] = table.sum()
    return StudyState(table, units, scan.corrupt, lease)


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
