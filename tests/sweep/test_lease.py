"""The driver lease (STUDY/driver.json): one driver per study, on a local store and on S3
(a real moto server), with real processes as the other driver."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from study.schema import LEASE_PATH
from study.store import Store
from study.sweep.lease import Lease, LeaseError, LeaseInfo, read_lease
from tests.conftest import ROOT
from tests.sweep._smoke import smoke_spec

HOLDER = """
import sys, time
from study.store import Store
from study.sweep.lease import Lease
lease = Lease.acquire(Store(sys.argv[1]), heartbeat_s=float(sys.argv[2]))
print(lease.lease_id, flush=True)
time.sleep(600)
"""


@pytest.fixture()
def holder():
    """Start another driver process that takes the lease of a store and keeps it."""
    procs = []

    def start(uri: str, heartbeat_s: float = 15.0) -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, uri, str(heartbeat_s)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        lease_id = proc.stdout.readline().strip()
        assert lease_id, proc.stderr.read()
        return proc, lease_id

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _write_lease(store: Store, age_s: float, **fields) -> LeaseInfo:
    """A lease as a driver on another host wrote it, its last heartbeat `age_s` ago."""
    beat = (datetime.now(UTC) - timedelta(seconds=age_s)).isoformat()
    info = LeaseInfo("feedc0de", "node-7", 4242, beat, beat, **fields)
    store.write_bytes(LEASE_PATH, info.to_bytes())
    return info


# --- one driver per study ------------------------------------------------------------------
def test_a_second_driver_refuses_naming_the_holder(tmp_path, holder):
    store = Store(str(tmp_path / "study"))
    proc, lease_id = holder(store.uri)
    with pytest.raises(LeaseError) as info:
        Lease.acquire(store)
    message = str(info.value)
    assert f"host {socket.gethostname()}, pid {proc.pid}, since " in message
    assert f"lease {lease_id}" in message and "--takeover" in message
    assert read_lease(store).lease_id == lease_id  # the holder's lease is untouched


def test_run_and_resume_refuse_before_writing_anything(tmp_path, holder, cache_dir, capsys):
    from study.cli import main
    from study.sweep.runner import run_study

    storage = tmp_path / "studies"
    proc, _ = holder(str(storage / "smoke"))
    with pytest.raises(LeaseError, match=f"pid {proc.pid}"):
        run_study(smoke_spec(), str(storage))
    assert sorted(p.name for p in (storage / "smoke").iterdir()) == ["driver.json"]
    spec_file = tmp_path / "smoke.yaml"
    spec_file.write_text(json.dumps({"name": "smoke", **_smoke_dict()}))
    code = main(["run", str(spec_file), "--storage", str(storage), "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and f"is being run by another driver: host {socket.gethostname()}" in err
    assert not (storage / "smoke" / "spec.yaml").exists()


def _smoke_dict() -> dict:
    from tests.sweep._smoke import SMOKE

    return {k: v for k, v in SMOKE.items() if k != "name"}


def test_an_expired_lease_is_taken_over_and_said_so(tmp_path, capsys):
    store = Store(str(tmp_path / "study"))
    _write_lease(store, age_s=600)
    with Lease.acquire(store) as lease:
        assert read_lease(store).lease_id == lease.lease_id
        assert read_lease(store).pid == os.getpid()
    err = capsys.readouterr().err
    assert "taking over the lease" in err and "host node-7, pid 4242" in err
    assert "90 s TTL" in err
    assert not store.exists(LEASE_PATH)  # released at exit


def test_the_lease_of_a_killed_driver_on_this_host_is_taken_over_at_once(tmp_path, holder, capsys):
    """SIGKILL leaves a fresh heartbeat behind; on the same host (and pid namespace) the
    dead pid shows the driver is gone, so `study resume` need not wait for the TTL."""
    store = Store(str(tmp_path / "study"))
    proc, lease_id = holder(store.uri)
    assert not read_lease(store).holder_dead()
    proc.kill()
    proc.wait()
    stale = read_lease(store)
    assert stale.lease_id == lease_id and not stale.expired() and stale.holder_dead()
    assert not stale.live()
    with Lease.acquire(store) as lease:
        assert read_lease(store).lease_id == lease.lease_id
    assert f"pid {proc.pid}" in capsys.readouterr().err
    # a holder on another host is never judged by a local pid
    info = LeaseInfo.new()
    assert not LeaseInfo(**{**info.__dict__, "host": "elsewhere", "pid": proc.pid}).holder_dead()


def test_an_unreadable_lease_is_taken_over(tmp_path):
    store = Store(str(tmp_path / "study"))
    store.write_bytes(LEASE_PATH, b"{not json")
    with Lease.acquire(store) as lease:
        assert read_lease(store).lease_id == lease.lease_id


def test_takeover_takes_a_live_lease_and_the_old_driver_learns_it_lost(tmp_path, capsys):
    store = Store(str(tmp_path / "study"))
    lost = threading.Event()
    old = Lease.acquire(store, on_lost=lost.set)
    with pytest.raises(LeaseError):
        Lease.acquire(store)
    new = Lease.acquire(store, takeover=True)
    assert "--takeover: taking the lease" in capsys.readouterr().err
    assert not old.renew()
    assert lost.is_set() and old.lost.is_set()
    with pytest.raises(LeaseError, match=f"lost its lease on study {store.uri}: host ") as info:
        old.check()
    assert f"lease {new.lease_id}" in str(info.value) and "study resume" in str(info.value)
    old.release()  # not ours any more: left alone
    assert read_lease(store).lease_id == new.lease_id
    new.release()
    assert read_lease(store) is None


def test_the_heartbeat_renews_and_notices_a_takeover(tmp_path):
    store = Store(str(tmp_path / "study"))
    lost = threading.Event()
    lease = Lease.acquire(store, heartbeat_s=0.2, on_lost=lost.set)
    first = read_lease(store).heartbeat_at
    time.sleep(0.6)
    assert read_lease(store).heartbeat_at > first
    other = Lease.acquire(store, takeover=True, heartbeat_s=60)
    assert lost.wait(5), "the heartbeat did not notice the takeover"
    assert other.lease_id in lease.lost_reason
    other.release()
    lease.release()


def test_of_many_drivers_starting_at_once_on_a_local_store_exactly_one_wins(tmp_path):
    store = Store(str(tmp_path / "study"))
    results: list = [None] * 8
    start = threading.Barrier(len(results))

    def claim(i: int) -> None:
        start.wait()
        try:
            results[i] = Lease.acquire(store)
        except LeaseError as e:
            results[i] = e

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    (won,) = [r for r in results if isinstance(r, Lease)]
    assert all(f"lease {won.lease_id}" in str(r) for r in results if r is not won)
    assert read_lease(store).lease_id == won.lease_id
    won.release()


def test_a_takeover_is_never_overwritten_by_the_old_drivers_heartbeat(tmp_path):
    store = Store(str(tmp_path / "study"))
    for _ in range(5):
        old = Lease.acquire(store, heartbeat_s=0.001)  # renewing all the time
        new = Lease.acquire(store, takeover=True, heartbeat_s=60)
        assert old.lost.wait(5)
        assert read_lease(store).lease_id == new.lease_id
        old.release()
        new.release()


def test_cli_run_and_resume_take_the_takeover_flag():
    from study.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["resume", "studies/x", "--takeover"]).takeover
    assert parser.parse_args(["run", "spec.yaml", "--takeover"]).takeover
    assert not parser.parse_args(["resume", "studies/x"]).takeover


def test_a_driver_that_loses_its_lease_is_interrupted_with_a_clear_error(tmp_path):
    """The runner's driver context: a lease lost while it runs interrupts the main thread,
    which ends in LeaseError naming the new holder."""
    from study.sweep.runner import _driver

    store = Store(str(tmp_path / "study"))
    with pytest.raises(LeaseError, match="lost its lease") as info:
        with _driver(store, takeover=False) as (lease, _):
            new = Lease.acquire(store, takeover=True)
            lease.renew()  # what the heartbeat does every HEARTBEAT_S
            time.sleep(10)  # interrupted long before this ends
    assert f"lease {new.lease_id}" in str(info.value)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    new.release()


# --- S3 -----------------------------------------------------------------------------------------
@pytest.fixture()
def s3_store(s3_server) -> Store:
    _, bucket, _ = s3_server
    return Store(f"s3://{bucket}/{uuid.uuid4().hex}/study")


def test_on_s3_a_second_driver_refuses_and_a_released_lease_is_free(s3_store, holder):
    proc, lease_id = holder(s3_store.uri)
    with pytest.raises(LeaseError, match=f"pid {proc.pid}, since .*lease {lease_id}"):
        Lease.acquire(s3_store, settle_s=0.2)
    with Lease.acquire(s3_store, takeover=True, settle_s=0.2) as lease:
        assert read_lease(s3_store).lease_id == lease.lease_id
        with pytest.raises(LeaseError, match=f"lease {lease.lease_id}"):
            Lease.acquire(s3_store, settle_s=0.2)
    assert read_lease(s3_store) is None
    _write_lease(s3_store, age_s=600)
    with Lease.acquire(s3_store, settle_s=0.2) as lease:
        assert read_lease(s3_store).lease_id == lease.lease_id


def test_on_s3_of_two_drivers_claiming_at_once_exactly_one_wins(s3_store):
    """Write, wait, read back: both write within the settle time, only the last writer
    reads itself back; the other refuses, naming the winner."""
    results: list = [None, None]
    start = threading.Barrier(2)

    def claim(i: int) -> None:
        start.wait()
        try:
            results[i] = Lease.acquire(s3_store, settle_s=1.5)
        except LeaseError as e:
            results[i] = e

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [r for r in results if isinstance(r, Lease)]
    refused = [r for r in results if isinstance(r, LeaseError)]
    assert len(won) == 1 and len(refused) == 1, results
    assert f"lease {won[0].lease_id}" in str(refused[0])
    assert read_lease(s3_store).lease_id == won[0].lease_id
    won[0].release()


# --- a real driver ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_running_driver_that_loses_its_lease_stops_and_exits(tmp_path, cache_dir):
    """`study run` under way; another driver takes over: within a heartbeat the first
    stops its units and exits 2 with a message naming the new holder."""
    spec = tmp_path / "smoke.yaml"
    data = {"name": "smoke", **_smoke_dict()}
    data["finetune"] = {**data["finetune"], "repeats": 3, "epochs": 4}
    spec.write_text(json.dumps(data))
    storage = tmp_path / "studies"
    store = Store(str(storage / "smoke"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["ECG_STUDY_CACHE"] = str(cache_dir)
    # a beat shorter than what is left of this tiny study, however fast the machine runs it
    env["STUDY_LEASE_HEARTBEAT_S"] = "1"
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
        while not store.list_names("results/trials", ".parquet"):
            assert driver.poll() is None and time.monotonic() < deadline, driver.stderr.read()
            time.sleep(0.5)
        new = Lease.acquire(store, takeover=True, heartbeat_s=60)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 2, err[-3000:]
    assert "lost its lease" in err and f"lease {new.lease_id}" in err
    assert "stopping (lost the lease" in err
    # it left the lease to the new holder; the units it was running read as interrupted
    assert read_lease(store).lease_id == new.lease_id
    from study.sweep.status import inspect_study

    assert inspect_study(store.uri).table.loc["total", "running"] == 0
    new.release()
