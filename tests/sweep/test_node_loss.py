"""A worker node dies mid-study on a multi-node Ray cluster on this machine: the units it ran
are run again on another node and go on from their last epoch checkpoint (the test checks
the epoch), and the study ends with exactly the planned rows, no duplicates, and the rows
written before the loss untouched.

The cluster is `ray.cluster_utils.Cluster` (a head with no CPU, worker nodes added and
removed from this process's main thread); the driver is `study run --address` in a
subprocess, as on a real head node.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from study.schema import EPOCHS_SCHEMA
from study.store import Store
from study.sweep.load import parse_spec
from study.sweep.plan import make_plan
from tests.conftest import ROOT
from tests.sweep._smoke import SMOKE, assert_complete, trials

pytestmark = pytest.mark.slow


@pytest.fixture()
def cluster(monkeypatch):
    """A head with no CPU (only the driver's tasks that need none run there, as on a real
    head node), on loopback, without token auth; worker nodes are the test's to add."""
    from ray.cluster_utils import Cluster

    # ray.init(address="127.0.0.1:PORT") would rewrite loopback to this machine's external
    # address, which is not routed here (see benchmarks/bench_scheduler.py).
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    c = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    try:
        yield c
    finally:
        c.shutdown()


def _driver(spec: dict, tmp_path, cache_dir, address: str) -> tuple[subprocess.Popen, Store]:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    storage = tmp_path / "studies"
    env = {
        **os.environ,
        "RAY_ADDRESS": address,
        "ECG_STUDY_CACHE": str(cache_dir),
        "STUDY_LEASE_HEARTBEAT_S": "2",
    }
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115 (the driver's lifetime)
    driver = subprocess.Popen(
        [sys.executable, "-m", "study.cli", "run", str(path), "--storage", str(storage)]
        + ["--no-report"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return driver, Store(str(storage / spec["name"]))


def _markers(store: Store) -> dict[str, dict]:
    out = {}
    for name in store.list_names("runs", ".json"):
        try:
            out[name.removesuffix(".json")] = store.read_json(f"runs/{name}")
        except Exception:  # being rewritten
            continue
    return out


def _wait_for(driver, tmp_path, what, check, timeout: float = 400.0):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        log = (tmp_path / "driver.log").read_text()[-3000:]
        assert driver.poll() is None, f"the driver ended before {what}:\n{log}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s:\n{log}"
        time.sleep(0.3)


def _node_of(marker: dict, cluster) -> object:
    """The cluster's worker node the marker was written on ("IP node_id[:8]")."""
    node = (marker.get("node") or "").split(" ")[-1]
    for n in cluster.worker_nodes:
        if n.node_id.startswith(node) and node:
            return n
    raise AssertionError(f"marker {marker} names no worker node of the cluster")


def _finish(driver, tmp_path, timeout: float = 600.0) -> str:
    try:
        driver.wait(timeout=timeout)
    finally:
        if driver.poll() is None:
            driver.kill()
    log = (tmp_path / "driver.log").read_text()
    assert driver.returncode == 0, log[-4000:]
    return log


def _epochs(store: Store, uid: str) -> list[int]:
    table = pq.read_table(io.BytesIO(store.read_bytes(f"results/epochs/{uid}.parquet")))
    assert table.schema.equals(EPOCHS_SCHEMA, check_metadata=False)
    return table.column("epoch").to_pylist()


def test_a_node_dies_during_fine_tuning_its_units_resume_elsewhere(cluster, tmp_path, cache_dir):
    spec = json.loads(json.dumps(SMOKE))
    # long enough runs that the node dies in the middle of one (no early stop)
    spec["finetune"].update(
        {"freeze_depths": [0], "data_fractions": [1.0], "epochs": 12, "patience": 12}
    )
    spec["pretrain"].update({"num_workers": 1, "cpus_per_worker": 1})
    doomed = cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    driver, store = _driver(spec, tmp_path, cache_dir, cluster.address)

    def running_unit_past_epoch_1():
        for uid, m in _markers(store).items():
            if m["stage"] != "pretrain" and m["state"] == "running" and m.get("epoch", 0) >= 1:
                return uid, m
        return None

    uid, marker = _wait_for(
        driver, tmp_path, "a fine-tuning unit at epoch 1", running_unit_past_epoch_1
    )
    assert _node_of(marker, cluster) is doomed
    before = trials(store).set_index("unit_id").finished_at
    cluster.remove_node(doomed, allow_graceful=False)
    cluster.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    log = _finish(driver, tmp_path)

    df = assert_complete(store, parse_spec(spec))
    after = df.set_index("unit_id").finished_at
    assert after[before.index].tolist() == before.tolist()  # rows from before: untouched
    done = store.read_json(f"runs/{uid}.json")
    assert done["state"] == "done" and done["attempt"] >= 2, done
    # the second attempt went on from the checkpoint the first left, not from epoch 0
    assert done["resumed_from_epoch"] >= marker["epoch"], (done, marker)
    assert done["node"] != marker["node"]
    assert _epochs(store, uid) == list(range(1, 13))  # each epoch once, none lost
    assert "trying again" in log


def test_a_node_dies_during_ddp_pretraining_the_run_completes(cluster, tmp_path, cache_dir):
    spec = json.loads(json.dumps(SMOKE))
    spec["pretrain"].update({"num_workers": 2, "cpus_per_worker": 1, "epochs": 10, "patience": 10})
    spec["finetune"].update({"freeze_depths": [0], "data_fractions": [1.0], "scratch": False})
    # two 1-CPU nodes: the DDP group spans both
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    second = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    driver, store = _driver(spec, tmp_path, cache_dir, cluster.address)

    def pretraining_past_epoch_1():
        for m in _markers(store).values():
            if m["stage"] == "pretrain" and m["state"] == "running" and m.get("epoch", 0) >= 1:
                return m
        return None

    marker = _wait_for(driver, tmp_path, "pretraining at epoch 1", pretraining_past_epoch_1)
    cluster.remove_node(second, allow_graceful=False)
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    _finish(driver, tmp_path)

    plan = make_plan(parse_spec(spec))
    df = trials(store)
    assert sorted(df.unit_id) == sorted(u.unit_id for u in plan.by_stage("finetune"))
    (uid,) = [n.removesuffix(".parquet") for n in store.list_names("results/pretrain", ".parquet")]
    done = store.read_json(f"runs/{uid}.json")
    assert done["state"] == "done", done
    # the worker group (or the unit) restarted from the checkpoint of the lost run
    assert done["resumed_from_epoch"] >= marker["epoch"], (done, marker)
    assert _epochs(store, uid) == list(range(1, len(_epochs(store, uid)) + 1))
