"""An S3 endpoint that stops answering mid-sweep (moto's server frozen with SIGSTOP): the
driver's lease and the study ride it out, nothing is lost, no `study resume` is needed.

moto runs in a process of its own (tests/_s3_process.py): a stopped process still accepts
connections (the kernel's backlog) and never answers, which is what a hung endpoint does.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
import time
import uuid

import pyarrow.parquet as pq
import pytest
import yaml

from study.schema import LEASE_PATH, RESULT_TABLES, run_marker_path
from study.store import RETRY_ENV, TIMEOUT_ENV, Store
from study.sweep.lease import Lease, read_lease
from tests import _s3_process
from tests.conftest import ROOT
from tests.sweep._smoke import SMOKE

BUCKET = "lab-bucket"


@pytest.fixture(scope="module")
def moto_process():
    with _s3_process.moto_process() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture()
def s3_env(moto_process, monkeypatch):
    for key, value in moto_process.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    return moto_process


# --- the lease through a freeze ---------------------------------------------------------
def test_heartbeat_through_a_short_freeze_keeps_the_lease(s3_env, monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "1")
    store = Store(f"s3://{BUCKET}/{uuid.uuid4().hex}")
    lease = Lease.acquire(store, heartbeat_s=0.5, settle_s=0.1)
    try:
        s3_env.freeze_for(5)  # every beat meanwhile times out and is retried
        time.sleep(5)
        deadline = time.monotonic() + 30
        thawed = time.time()
        while True:  # a heartbeat lands after the freeze
            info = read_lease(store)
            if info is not None and info.age_s() < time.time() - thawed:
                break
            assert time.monotonic() < deadline, "no heartbeat after the freeze"
            time.sleep(0.2)
        assert info.lease_id == lease.lease_id
        assert not lease.lost.is_set(), lease.lost_reason
        lease.check()
    finally:
        lease.release()
    assert not store.exists(LEASE_PATH)


def test_freeze_longer_than_the_lease_can_wait_loses_it_before_its_ttl(s3_env, monkeypatch):
    """A heartbeat stops retrying before its lease could expire (here a 6 s TTL: writable for
    4 s after the last beat), so it never lands on a lease another driver has taken over;
    the driver is told it lost the lease."""
    monkeypatch.setenv(TIMEOUT_ENV, "1")
    store = Store(f"s3://{BUCKET}/{uuid.uuid4().hex}")
    lease = Lease.acquire(store, ttl_s=6, heartbeat_s=0.5, settle_s=0.1)
    try:
        frozen_wall = time.time()
        s3_env.freeze_for(15)
        frozen_at = time.monotonic()
        assert lease.lost.wait(timeout=14), "the lease was not given up during the freeze"
        assert time.monotonic() - frozen_at < 14
        assert "could not be renewed for" in lease.lost_reason
        assert "6 s TTL" in lease.lost_reason
    finally:
        s3_env.thaw()
        lease.release()  # lost: leaves the store alone
    # no heartbeat landed after the freeze began (give or take one in flight then): the
    # stored lease expires 6 s after it, and a new driver may take it over from then on
    info = read_lease(store)
    assert info is not None and info.lease_id == lease.lease_id
    assert info.age_s() >= time.time() - frozen_wall - 1


# --- a study through a 30 s freeze -----------------------------------------------------
def _objects(server, prefix: str) -> dict[str, tuple[bytes, object]]:
    """key -> (bytes, LastModified) of every object under `prefix`."""
    client = server.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/"):
                continue  # pyarrow's empty "dir/" markers
            body = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
            found[obj["Key"]] = (body, obj["LastModified"])
    return found


@pytest.mark.slow
def test_study_rides_out_a_30_s_s3_freeze_without_resume(s3_env, tmp_path):
    moto_process = s3_env
    spec = copy.deepcopy(SMOKE)
    spec["name"] = f"outage-{uuid.uuid4().hex[:8]}"
    # 1 pretraining + 6 fine-tuning/scratch units: when the first of those lands, others are
    # running or waiting to, and write through the freeze
    spec["finetune"]["data_fractions"] = [0.5, 1.0]
    # no unit is run again after an error: the store itself must ride the outage out
    # (a unit retried after it would hide a write that failed)
    spec["execution"] = {"max_failures": 0}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    prefix = f"studies/{spec['name']}/"
    env = {
        **os.environ,
        **moto_process.env,
        "ECG_STUDY_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
        # the driver itself meets the freeze (its heartbeat): with units as Ray tasks its
        # own store requests are otherwise few, and a 15 s beat may fall outside 30 s
        "STUDY_LEASE_HEARTBEAT_S": "2",
    }
    for key in ("RAY_ADDRESS", "AWS_ENDPOINT_URL_S3", RETRY_ENV, TIMEOUT_ENV):
        env.pop(key, None)  # the defaults: 120 s of retrying, 5 s per request
    log = tmp_path / "driver.log"
    command = [sys.executable, "-m", "study.cli", "run", str(spec_path)]
    command += ["--storage", f"s3://{BUCKET}/studies", "--no-report"]
    with open(log, "wb") as out:
        driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        try:
            before = _freeze_after_first_row(moto_process, driver, prefix, freeze_s=30)
            rc = driver.wait(timeout=300)
        finally:
            moto_process.thaw()
            if driver.poll() is None:
                driver.kill()
                driver.wait()
    text = log.read_text(errors="replace").replace("\r", "\n")
    assert rc == 0, text[-6000:]
    assert "does not answer" in text and "answers again" in text, text[-6000:]

    store = Store(f"s3://{BUCKET}/{prefix.rstrip('/')}")
    plan = pq.read_table(io.BytesIO(store.read_bytes("plan.parquet")))
    planned: dict[str, set[str]] = {"pretrain": set(), "trials": set()}
    for uid, stage in zip(plan["unit_id"].to_pylist(), plan["stage"].to_pylist(), strict=True):
        planned["pretrain" if stage == "pretrain" else "trials"].add(uid)
    for table, schema in RESULT_TABLES.items():
        # exactly one readable one-row part per planned unit, and no other part
        scan = store.scan_parts(f"results/{table}", schema.field("unit_id"))
        assert scan.corrupt == {}, (table, scan.corrupt)
        assert scan.ids == planned[table], table
        rows = store.read_dataset(f"results/{table}", schema=schema)
        assert rows.num_rows == len(planned[table])
    # what was written before the freeze is untouched (same bytes, never rewritten)
    after = _objects(moto_process, prefix + "results/")
    assert {k: after.get(k) for k in before} == before
    states = {
        uid: json.loads(store.read_bytes(run_marker_path(uid)))["state"]
        for uid in planned["pretrain"] | planned["trials"]
        if store.exists(run_marker_path(uid))
    }
    assert not {u: s for u, s in states.items() if s in ("running", "failed")}, states
    assert not store.exists(LEASE_PATH)  # released at the end


def _freeze_after_first_row(
    server, driver: subprocess.Popen, prefix: str, freeze_s: float
) -> dict[str, tuple[bytes, object]]:
    """Wait for the first fine-tuning or from-scratch row, snapshot every result object,
    freeze the server for `freeze_s` and continue it; the snapshot is returned.

    (Not the pretraining row: it may land while no other unit runs, and the freeze would
    then meet only the driver's own reads and heartbeats.)"""
    rows = f"{prefix}results/trials/"
    deadline = time.monotonic() + 240
    while True:
        assert driver.poll() is None, "the driver ended before any row landed"
        assert time.monotonic() < deadline, "no result row within 240 s"
        before = _objects(server, prefix + "results/")
        if any(key.startswith(rows) for key in before):
            break
        time.sleep(0.5)
    server.freeze()
    try:
        time.sleep(freeze_s)
    finally:
        server.thaw()
    return before
