"""`study status`: what runs where (node, epoch, for how long), an ETA from the durations of
finished units, and the failures with their error. Store contents written directly (real
Parquet rows, real marker files, a real lease file): no Ray."""

from __future__ import annotations

import pytest

from study.cli import main
from study.schema import LEASE_PATH
from study.store import Store
from study.sweep.runner import init_study
from study.sweep.status import inspect_study
from tests.sweep._rows import ago, hold_lease, unit, write_marker, write_row
from tests.sweep._smoke import smoke_spec

ALL = 5  # the freeze depth "all" resolves to for resnet1d18


@pytest.fixture()
def study(tmp_path):
    """7 planned units, none run: a pretraining unit (2 epochs), and at fractions 0.5 and
    1.0 a from-scratch unit and fine-tuning units at freeze depths 0 and all (10 epochs)."""
    store = Store(str(tmp_path / "studies" / "smoke"))
    plan = init_study(store, smoke_spec(epochs=10))
    assert len(plan.units) == 7
    return store, plan


def _status(store: Store, capsys, *extra: str) -> list[str]:
    assert main(["status", store.uri, *extra]) == 0
    return capsys.readouterr().out.splitlines()


def test_running_units_show_node_epoch_and_how_long(study, capsys):
    store, plan = study
    lease = hold_lease(store)
    sc = unit(plan, "scratch", 0.5)
    ft = unit(plan, "finetune", 1.0, 0)
    node = "10.0.0.5 1a2b3c4d"
    write_marker(
        store,
        sc,
        "running",
        lease.lease_id,
        epoch=3,
        node=node,
        started_at=ago(725),
        updated_at=ago(50),
        attempt=2,
    )
    # a marker written before node, started_at and attempt existed, before its first epoch
    write_marker(store, ft, "running", lease.lease_id, updated_at=ago(130))

    state = inspect_study(store.uri)
    assert state.table.loc["total", "running"] == 2
    (row,) = [m for m in state.markers("running") if m["unit_id"] == sc.unit_id]
    assert (row["node"], row["epoch"], row["attempt"], row["max_epochs"]) == (node, 3, 2, 10)
    (old,) = [m for m in state.markers("running") if m["unit_id"] == ft.unit_id]
    assert old["node"] is None and old["started_at"] is None and old["epoch"] is None

    out = _status(store, capsys)
    assert (
        f"running {sc.unit_id} scratch on {node}, epoch 3/10, for 12 min, "
        "last marker 50 s ago, attempt 2"
    ) in out
    assert (
        f"running {ft.unit_id} finetune on {old['host']}, epoch 0/10, last marker 2 min ago" in out
    )
    assert "no ETA yet: no unit has finished" in out

    out = _status(store, capsys, "--show-running", "1")
    assert sum(line.startswith("running ") for line in out) == 1
    assert "... and 1 more running (--show-running N)" in out


def test_eta_is_the_work_left_from_finished_durations_over_the_units_running_now(study, capsys):
    """Hand-computed: seconds = rate x fraction x max epochs x stop share, rate and share
    from the closest group of finished units (study.sweep.estimate)."""
    store, plan = study
    lease = hold_lease(store)
    write_row(store, unit(plan, "pretrain"), 100.0, 2)
    write_row(store, unit(plan, "scratch", 0.5), 30.0, 6)  # rate 30/(6 x 0.5) = 10, share 0.6
    write_row(store, unit(plan, "finetune", 0.5, 0), 40.0, 10)  # rate 40/(10 x 0.5) = 8, share 1
    write_marker(store, unit(plan, "scratch", 1.0), "running", lease.lease_id, epoch=4)
    write_marker(store, unit(plan, "finetune", 1.0, 0), "running", lease.lease_id)

    eta = inspect_study(store.uri).eta
    # scratch 1.0, at epoch 4 of the 6 expected (10 x 0.6): 10 s x 1.0 x (6 - 4) = 20
    # finetune 1.0 depth 0 (not started): 8 x 1.0 x 10 = 80
    # finetune 0.5 and 1.0 at depth all (no finished unit at that depth: the fine-tuning
    # units of that architecture and dataset): 8 x 0.5 x 10 = 40, 8 x 1.0 x 10 = 80
    assert eta.work_left_s == pytest.approx(20 + 80 + 40 + 80)
    assert (eta.units_left, eta.finished, eta.running, eta.relative_only) == (4, 3, 2, 0)
    assert eta.wall_s == pytest.approx(110)

    out = _status(store, capsys)
    assert "ETA: 1 min, from 3 finished units; 2 running" in out
    assert "  0.06 unit-hours left in 4 units, 2 at a time" in out


def test_without_a_running_unit_there_is_work_left_but_no_eta(study, capsys):
    store, plan = study
    write_row(store, unit(plan, "pretrain"), 100.0, 2)  # rate 50 s per epoch, share 1
    error = "RuntimeError: CUDA out of memory.\n  Tried to allocate 2 GiB\n" + "x" * 400
    ft = unit(plan, "finetune", 0.5, 0)
    write_marker(store, ft, "failed", "gone-driver", error=error, traceback="Traceback ...")
    write_marker(store, unit(plan, "scratch", 0.5), "running", "gone-driver", epoch=2)

    state = inspect_study(store.uri)
    assert state.table.loc["total", "interrupted"] == 1 and state.table.loc["total", "failed"] == 1
    # no finished fine-tuning or from-scratch unit: the pretraining rate, x fraction x 10
    # epochs (an interrupted unit starts again: none of its epochs count)
    assert state.eta.work_left_s == pytest.approx(50 * (0.5 + 0.5 + 0.5 + 1 + 1 + 1) * 10)
    assert state.eta.relative_only == 6 and state.eta.wall_s is None

    out = _status(store, capsys)
    assert (
        f"no ETA: no unit is running (from 1 finished unit; 0 running; `study resume "
        f"{store.uri}` runs the rest)"
    ) in out
    assert (
        "  0.62 unit-hours left in 6 units; 6 of them of a stage without a finished unit "
        "(relative cost only)"
    ) in out
    (line,) = [x for x in out if x.startswith("failed ")]
    assert line.startswith(f"failed {ft.unit_id} on ")
    assert ": RuntimeError: CUDA out of memory. Tried to allocate 2 GiB xxx" in line
    assert line.endswith("x...") and len(line.split(": ", 1)[1]) < 400
    assert f"(each failed unit's whole error and traceback: {store.uri}/runs/UNIT_ID.json)" in out


def test_a_failure_names_the_node_it_ran_on(study, capsys):
    store, plan = study
    ft = unit(plan, "finetune", 1.0, ALL)
    m = write_marker(store, ft, "failed", None, node="10.0.0.7 9f8e7d6c", error="ValueError: x")
    out = _status(store, capsys)
    assert (
        f"failed {ft.unit_id} on {m['host']} (node 10.0.0.7 9f8e7d6c) at {m['updated_at']}: "
        "ValueError: x" in out
    )


def test_a_finished_study_has_nothing_left(study, capsys):
    store, plan = study
    for u in plan.units:
        write_row(store, u, 10.0, 2)
    assert not store.exists(LEASE_PATH)
    state = inspect_study(store.uri)
    assert state.table.loc["total", "done"] == 7 and state.eta.work_left_s == 0
    assert "ETA: nothing left to run (every planned unit is done)" in _status(store, capsys)
