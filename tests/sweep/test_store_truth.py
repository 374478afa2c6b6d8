"""What the store says is true: a unit is done only when its row can be read; a unit is
"running" only while a live driver runs it; a run torn down by its stopping driver is an
interruption, not a failure. Real pyarrow, real processes, real Ray for the resume."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from study.schema import (
    LEASE_PATH,
    TRIALS_SCHEMA,
    epochs_path,
    pretrain_path,
    run_marker_path,
    trial_path,
)
from study.store import Store
from study.sweep.execute import run_finetune_unit, run_pretrain_worker
from study.sweep.lease import Lease, LeaseInfo, read_lease
from study.sweep.runner import (
    close_markers,
    done_ids,
    init_study,
    prepare_datasets,
    stored_result_ids,
)
from study.sweep.status import inspect_study
from tests.conftest import ROOT
from tests.sweep._smoke import SMOKE, smoke_spec, trials

GLOO_RESET = "[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection reset by peer"


def _spec():
    return smoke_spec(data_fractions=[0.5, 1.0], freeze_depths=[0], epochs=2)


@pytest.fixture()
def study(tmp_path, cache_dir):
    """A finished study of 5 units (1 pretraining, 2 fine-tuning, 2 from scratch), each
    run in this process (no Ray)."""
    spec = _spec()
    store = Store(str(tmp_path / "studies" / "smoke"))
    plan = init_study(store, spec)
    prepare_datasets(store, spec)
    run_pretrain_worker(plan.by_stage("pretrain")[0], store, {}, rank=0, world_size=1)
    for u in plan.units:
        if u.stage != "pretrain":
            run_finetune_unit(u, store, {})
    return store, plan


def _truncate(store: Store, rel: str, size: int = 10) -> None:
    path = store.path(rel)
    with open(path, "r+b") as f:
        f.truncate(size)


def _part(**columns) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


# --- done means a readable row ------------------------------------------------------------
@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    _, bucket, _ = request.getfixturevalue("s3_server")
    return Store(f"s3://{bucket}/{uuid.uuid4().hex}")


CASES = {
    "good": (_part(unit_id=["good"], x=[1.0]), None),
    "truncated": (_part(unit_id=["truncated"], x=[1.0])[:10], "Parquet magic bytes not found"),
    "empty": (b"", "Parquet file size is 0 bytes"),
    "json": (b'{"unit_id": "json"}', "not a readable Parquet file"),
    "two": (_part(unit_id=["two", "two"]), "2 rows, not exactly one"),
    "other": (_part(unit_id=["someone-else"]), "its unit_id \\('someone-else'\\) is not its file"),
    "int": (_part(unit_id=[7]), "unit_id is of type int64, not string"),
    "none": (_part(x=[1.0]), "no unit_id column"),
}


def test_only_readable_one_row_parts_named_by_their_id_count(store):
    for name, (data, _) in CASES.items():
        store.write_bytes(f"results/trials/{name}.parquet", data)
    scan = store.scan_parts("results/trials", TRIALS_SCHEMA.field("unit_id"))
    assert scan.ids == {"good"}
    assert sorted(scan.corrupt) == sorted(f"{n}.parquet" for n in CASES if n != "good")
    for name, (_, why) in CASES.items():
        if why is not None:
            assert re.search(why, scan.corrupt[f"{name}.parquet"]), (name, scan.corrupt)


def test_a_truncated_row_is_corrupt_not_done_and_status_names_it(study, capsys):
    from study.cli import main

    store, plan = study
    victim = plan.by_stage("scratch")[0].unit_id
    pre = plan.by_stage("pretrain")[0].unit_id
    _truncate(store, trial_path(victim))
    _truncate(store, pretrain_path(pre))
    assert victim not in stored_result_ids(store) and pre not in done_ids(store, plan.units)
    assert len(done_ids(store, plan.units)) == 3

    state = inspect_study(store.uri)
    assert state.table.loc["scratch", "corrupt"] == 1 and state.table.loc["scratch", "done"] == 1
    assert state.table.loc["pretrain", "corrupt"] == 1
    assert state.table.loc["total", "done"] == 3 and state.table.loc["total", "corrupt"] == 2
    assert set(state.corrupt) == {trial_path(victim), pretrain_path(pre)}

    assert main(["status", store.uri]) == 0
    out = capsys.readouterr().out
    assert f"corrupt {trial_path(victim)}: not a readable Parquet file (Parquet magic" in out
    assert f"corrupt {pretrain_path(pre)}: " in out
    assert "driver: none" in out


def test_analysis_skips_unreadable_parts_with_a_warning_and_reports_the_rest(
    study, tmp_path, capfd
):
    from analysis import load_epochs, load_trials, report_study

    store, plan = study
    victim = plan.by_stage("scratch")[0].unit_id
    _truncate(store, trial_path(victim))
    _truncate(store, epochs_path(victim), 0)
    df = load_trials(store.uri)
    assert len(df) == 3 and victim not in set(df.unit_id)
    assert list(df.columns) == TRIALS_SCHEMA.names
    assert victim not in set(load_epochs(store.uri).unit_id)
    err = capfd.readouterr().err
    assert f"warning: skipping {store.uri}/{trial_path(victim)}: not a readable Parquet" in err
    assert f"warning: skipping {store.uri}/{epochs_path(victim)}: not a readable Parquet" in err
    assert "Traceback" not in err and "ArrowInvalid" not in err

    paths = report_study(store.uri, tmp_path / "report", n_boot=0)
    assert (tmp_path / "report" / "summary.md").stat().st_size > 0 and "index.html" in paths


def test_resume_moves_corrupt_rows_aside_and_reruns_exactly_their_units(study, ray_local):
    from study.sweep.runner import resume_study

    store, plan = study
    victim = plan.by_stage("finetune")[0].unit_id
    pre = plan.by_stage("pretrain")[0].unit_id
    before = trials(store).set_index("unit_id").finished_at
    _truncate(store, trial_path(victim))
    _truncate(store, pretrain_path(pre))

    outcome = resume_study(store.uri)
    assert outcome.complete, outcome.failed
    after = trials(store).set_index("unit_id").finished_at
    assert len(after) == 4 and not after.index.duplicated().any()
    untouched = [u for u in before.index if u != victim]
    assert after[untouched].equals(before[untouched])  # not re-run
    assert after[victim] > before[victim]  # re-run
    assert pre in stored_result_ids(store)
    # the unreadable parts were kept, aside, byte for byte
    for table, uid in (("trials", victim), ("pretrain", pre)):
        (name,) = store.list_names(f"results/corrupt/{table}")
        assert name.startswith(f"{uid}.parquet.")
        assert len(store.read_bytes(f"results/corrupt/{table}/{name}")) == 10
    state = inspect_study(store.uri)
    assert state.table.loc["total", "done"] == 5 and not state.corrupt
    assert not store.exists(LEASE_PATH)  # the driver released its lease


# --- "running" only under a live driver --------------------------------------------------------
DIES_AFTER_EPOCH_1 = """
import os, sys
from study.sweep.runner import load_study
from study.sweep.execute import run_pretrain_worker
store, spec, plan = load_study(sys.argv[1])
unit = plan.by_stage("pretrain")[0]
def die(record):
    os._exit(9)  # killed with its node: no chance to write anything
run_pretrain_worker(unit, store, {"lease_id": sys.argv[2]}, rank=0, world_size=1, report=die)
"""


@pytest.fixture()
def fresh(tmp_path, cache_dir):
    """A study with nothing run yet."""
    spec = _spec()
    store = Store(str(tmp_path / "studies" / "smoke"))
    plan = init_study(store, spec)
    prepare_datasets(store, spec)
    return store, plan


def _kill_a_worker(store: Store, lease_id: str, cache_dir) -> dict:
    env = {**os.environ, "ECG_STUDY_CACHE": str(cache_dir)}
    proc = subprocess.run(
        [sys.executable, "-c", DIES_AFTER_EPOCH_1, store.uri, lease_id],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 9, proc.stderr[-3000:]
    return store.read_json(run_marker_path(_pre(store)))


def _pre(store: Store) -> str:
    from study.sweep.runner import load_study

    return load_study(store.uri)[2].by_stage("pretrain")[0].unit_id


def test_a_running_marker_is_running_only_while_its_driver_lease_is_live(fresh, cache_dir, capsys):
    from study.cli import main

    store, plan = fresh
    lease = Lease.acquire(store)
    marker = _kill_a_worker(store, lease.lease_id, cache_dir)
    assert marker["state"] == "running" and marker["lease_id"] == lease.lease_id
    state = inspect_study(store.uri)
    assert state.table.loc["pretrain", "running"] == 1  # its driver is alive
    assert state.lease.lease_id == lease.lease_id

    lease.release()  # the driver exits
    state = inspect_study(store.uri)
    assert state.table.loc["total", "running"] == 0
    assert state.table.loc["pretrain", "interrupted"] == 1
    assert main(["status", store.uri]) == 0
    out = capsys.readouterr().out
    host = socket.gethostname()
    assert f"interrupted {_pre(store)} on {host} at {marker['updated_at']}: marked running " in out
    assert f"(lease {lease.lease_id})" in out

    # a lease whose holder stopped heartbeating (SIGKILLed driver) is not live either
    beat = (datetime.now(UTC) - timedelta(seconds=600)).isoformat()
    store.write_bytes(LEASE_PATH, LeaseInfo(lease.lease_id, host, 1, beat, beat).to_bytes())
    state = inspect_study(store.uri)
    assert state.table.loc["pretrain", "running"] == 0
    assert state.table.loc["pretrain", "interrupted"] == 1
    assert main(["status", store.uri]) == 0
    assert "driver: lease expired: host " in capsys.readouterr().out


def test_a_driver_that_ends_settles_the_markers_of_its_units(fresh):
    """close_markers, as every driver runs it when it ends: its units that ended without a
    row are failed (the error Tune or Train reported) or interrupted, never running."""
    from study.sweep.execute import _mark

    store, plan = fresh
    lease = Lease.acquire(store)
    sc, ft = plan.by_stage("scratch")
    pre = plan.by_stage("pretrain")[0]
    other = plan.by_stage("finetune")[0]
    for u in (sc, ft, pre):
        _mark(store, u, "running", lease.lease_id, epoch=1)
    _mark(store, other, "running", "another-driver")
    errors = {sc.unit_id: "ActorDiedError: the actor died unexpectedly"}
    assert close_markers(store, plan.units, errors, lease) == 3
    failed = store.read_json(run_marker_path(sc.unit_id))
    assert failed["state"] == "failed" and failed["error"] == errors[sc.unit_id]
    for u in (ft, pre):
        assert store.read_json(run_marker_path(u.unit_id))["state"] == "interrupted"
    assert store.read_json(run_marker_path(other.unit_id))["lease_id"] == "another-driver"
    state = inspect_study(store.uri).table
    assert state.loc["scratch", "failed"] == 1 and state.loc["total", "interrupted"] == 3
    assert state.loc["total", "running"] == 0
    lease.release()


# --- an interrupted driver's units are interrupted, not failed ----------------------------------
def _gloo_after_epoch_1(before=None):
    def report(record: dict) -> None:
        if before is not None:
            before()
        raise RuntimeError(GLOO_RESET)

    return report


@pytest.mark.parametrize("driver", ["live", "stopping", "lost"])
def test_a_run_torn_down_by_its_stopping_driver_is_interrupted(fresh, driver):
    store, plan = fresh
    pre = plan.by_stage("pretrain")[0]
    lease = Lease.acquire(store)
    what_the_driver_does = {
        "live": None,
        "stopping": lambda: lease.mark_stopping("SIGTERM received"),
        "lost": lambda: Lease.acquire(store, takeover=True),
    }[driver]
    with pytest.raises(RuntimeError, match="Connection reset"):
        run_pretrain_worker(
            pre,
            store,
            {"lease_id": lease.lease_id},
            rank=0,
            world_size=1,
            report=_gloo_after_epoch_1(what_the_driver_does),
        )
    marker = store.read_json(run_marker_path(pre.unit_id))
    table = inspect_study(store.uri).table
    if driver == "live":  # a live driver's DDP group broke on its own: a failure
        assert marker["state"] == "failed" and "Connection reset" in marker["error"]
        assert table.loc["pretrain", "failed"] == 1
    else:
        assert marker["state"] == "interrupted", marker
        assert marker["error"].startswith("its driver stopped (the run then saw RuntimeError")
        assert table.loc["pretrain", "interrupted"] == 1 and table.loc["pretrain", "failed"] == 0


def pretraining_marker(store: Store) -> dict:
    for name in store.list_names("runs", ".json"):
        marker = store.read_json(f"runs/{name}")
        if marker["stage"] == "pretrain":
            return marker
    return {}


@pytest.mark.slow
def test_sigterm_during_pretraining_leaves_interrupted_units_and_no_lease(tmp_path, cache_dir):
    """`study run` gets SIGTERM (`ray job stop`) while its DDP pretraining runs: the gloo
    errors its workers then see are not failures; nothing is left "running"."""
    spec = tmp_path / "smoke.yaml"
    data = json.loads(json.dumps(SMOKE))
    data["pretrain"]["epochs"] = 30
    data["pretrain"]["patience"] = 30
    spec.write_text(json.dumps(data))
    storage = tmp_path / "studies"
    store = Store(str(storage / "smoke"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["ECG_STUDY_CACHE"] = str(cache_dir)
    driver = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "run", str(spec), "--storage", str(storage)]
        + ["--no-report"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 400
        while True:
            assert driver.poll() is None and time.monotonic() < deadline, driver.stderr.read()
            if pretraining_marker(store).get("epoch", 0) >= 1:
                break
            time.sleep(0.5)
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, err[-3000:]
    assert "stopping (SIGTERM received)" in err, err[-3000:]
    marker = pretraining_marker(store)
    assert marker["state"] == "interrupted", marker
    # the from-scratch units ran beside the pretraining (no stage barrier): none is left
    # "running" either
    for name in store.list_names("runs", ".json"):
        assert store.read_json(f"runs/{name}")["state"] in ("done", "interrupted")
    state = inspect_study(store.uri)
    assert state.table.loc["total", "running"] == 0 and state.table.loc["total", "failed"] == 0
    assert state.table.loc["pretrain", "interrupted"] == 1
    assert read_lease(store) is None
