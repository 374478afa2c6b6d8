"""Store contents written directly, in the project's formats (no Ray, no training): result
rows with a duration, run markers, a driver lease."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from study.schema import LEASE_PATH, RESULT_TABLES, run_marker_path
from study.store import Store
from study.sweep.lease import LeaseInfo
from study.sweep.plan import Plan, Unit


def unit(plan: Plan, stage: str, fraction: float | None = None, depth: int | None = None) -> Unit:
    """The one unit of `plan` with this stage, data fraction and freeze depth (the smallest
    repeat)."""
    found = [
        u
        for u in plan.by_stage(stage)
        if (fraction is None or u.config.data_fraction == fraction)
        and (depth is None or u.config.freeze_depth == depth)
        and not u.config.repeat
    ]
    assert len(found) == 1, (stage, fraction, depth, found)
    return found[0]


def write_row(
    store: Store,
    u: Unit,
    seconds: float,
    epochs: int,
    *,
    hardware: str = "cpu:test",
    config: str | None = None,
) -> None:
    """`u`'s result row (every other column null), as the unit would write it."""
    table = "pretrain" if u.stage == "pretrain" else "trials"
    row = {
        "unit_id": u.unit_id,
        "train_seconds": seconds,
        "epochs": epochs,
        "hardware": hardware,
        "finished_at": datetime.now(UTC),
        "config": json.dumps(u.config.canonical(), sort_keys=True) if config is None else config,
    }
    part = pa.Table.from_pylist([row], schema=RESULT_TABLES[table])
    store.write_table(f"results/{table}/{u.unit_id}.parquet", part)


def ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


def write_marker(store: Store, u: Unit, state: str, lease_id: str | None, **fields) -> dict:
    """`u`'s run marker, with the fields study.sweep.execute writes (plus `fields`)."""
    marker = {
        "unit_id": u.unit_id,
        "stage": u.stage,
        "state": state,
        "host": socket.gethostname(),
        "pid": 1,
        "lease_id": lease_id,
        "updated_at": ago(0),
        **fields,
    }
    store.write_json(run_marker_path(u.unit_id), marker)
    return marker


def hold_lease(store: Store) -> LeaseInfo:
    """A live driver lease, held by this process (no heartbeat thread: the test is short)."""
    info = LeaseInfo.new()
    store.write_bytes(LEASE_PATH, info.to_bytes())
    return info
