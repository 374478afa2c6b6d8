"""Autoscaling: the tiny study, submitted as a job to a head with no CPU and no worker node,
gets worker nodes of cluster.yaml's worker type from Ray's autoscaler (the fake multi-node
provider, tests/sweep/_fake_cluster.py), completes with exactly the planned rows, and the
nodes go away once idle."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from study.store import Store
from study.sweep.load import parse_spec
from tests.conftest import ROOT
from tests.sweep._fake_cluster import (
    CLUSTER_YAML,
    FakeCluster,
    autoscaler_config,
    fake_cluster,
    worker_type_name,
)
from tests.sweep._smoke import SMOKE, assert_complete

MAX_WORKERS = 2
WORKER_CPUS = 1
IDLE_TIMEOUT_MINUTES = 0.2
SCALE_DOWN_LIMIT_S = 90  # after the job: the idle timeout (12 s) plus a margin for 2 cores


class NodeWatcher:
    """Samples the cluster's alive worker nodes about once a second, in a thread."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        self.samples: list[tuple[float, int]] = []  # (monotonic time, alive worker nodes)
        self.cpus: set[float] = set()  # the CPUs of every worker node seen
        self.seen: set[str] = set()  # the id of every worker node seen alive
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                workers = self.cluster.workers()
            except Exception as e:  # a busy dashboard: try again
                self.errors.append(f"{type(e).__name__}: {e}")
            else:
                self.samples.append((time.monotonic(), len(workers)))
                self.cpus.update(w["cpus"] for w in workers)
                self.seen.update(w["node_id"] for w in workers)
            self._stop.wait(1.0)

    def __enter__(self) -> NodeWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    @property
    def peak(self) -> int:
        return max((n for _, n in self.samples), default=0)

    def first_time_with_workers(self) -> float | None:
        return next((t for t, n in self.samples if n > 0), None)

    def time_all_gone(self, after: float) -> float | None:
        """When the worker count last fell to 0 and stayed 0 (`after` if that was earlier);
        None while a worker node is alive."""
        if not self.samples or self.samples[-1][1] != 0:
            return None
        t_gone = self.samples[-1][0]
        for t, n in reversed(self.samples):
            if n > 0:
                break
            t_gone = t
        return max(t_gone, after)

    def summary(self) -> str:
        counts = [n for _, n in self.samples]
        return (
            f"{len(counts)} samples of the alive worker-node count: {counts}; "
            f"{len(self.errors)} failed (last: {self.errors[-1:]})"
        )


def test_the_fake_cluster_is_cluster_yaml_with_a_fake_provider_and_ray_accepts_it(tmp_path):
    """What the slow test runs on: cluster.yaml's keys, head resources and worker type name;
    Ray's own preparation and validation (as `ray up` runs them) pass."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    source = yaml.safe_load(CLUSTER_YAML.read_text())
    config = autoscaler_config(6379, tmp_path, worker_cpus=WORKER_CPUS, max_workers=MAX_WORKERS)
    assert set(config) == set(source)
    types = config["available_node_types"]
    worker = types[worker_type_name()]
    assert worker["min_workers"] == 0 and worker["max_workers"] == MAX_WORKERS
    assert worker["resources"] == {"CPU": WORKER_CPUS}
    head = types[config["head_node_type"]]
    assert (
        head["resources"] == source["available_node_types"][source["head_node_type"]]["resources"]
    )
    assert head["resources"]["CPU"] == 0  # nothing trains on the head, as in cluster.yaml
    validate_config(prepare_config(copy.deepcopy(config)))


def _job_dir(dest: Path, spec: dict) -> Path:
    """What `study submit` uploads: the code and the spec (not the project's checkout, where
    the test must write nothing)."""
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("study", "analysis"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    (dest / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return dest


@pytest.mark.slow
def test_a_study_on_a_cluster_without_workers_gets_nodes_completes_and_they_go_away(
    tmp_path, monkeypatch
):
    # SMOKE, one epoch per stage: its pretraining has 2 DDP workers of 1 CPU each, so with
    # 1-CPU nodes it needs both nodes the autoscaler may start; its 6 fine-tuning units
    # (1 CPU each) keep both busy.
    spec = copy.deepcopy(SMOKE)
    spec["name"] = "autoscaled"
    spec["pretrain"]["epochs"] = 1
    spec["finetune"]["epochs"] = 1
    assert spec["pretrain"]["num_workers"] == MAX_WORKERS
    job_dir = _job_dir(tmp_path / "job", spec)
    storage = tmp_path / "studies"
    client_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    client_env.pop("RAY_API_SERVER_ADDRESS", None)
    client_env.update(RAY_AUTH_MODE="disabled", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # for this process's state API calls
    with fake_cluster(
        tmp_path,
        env={"ECG_STUDY_CACHE": str(tmp_path / "cache")},
        worker_cpus=WORKER_CPUS,
        max_workers=MAX_WORKERS,
        idle_timeout_minutes=IDLE_TIMEOUT_MINUTES,
    ) as cluster:
        _run_and_watch(cluster, job_dir, storage, client_env)
    assert_complete(Store(str(storage / "autoscaled")), parse_spec(spec))


def _run_and_watch(cluster: FakeCluster, job_dir: Path, storage: Path, env: dict) -> None:
    nodes = cluster.nodes()
    assert [(n["is_head"], n["cpus"]) for n in nodes] == [(True, 0)], (
        f"before the study the cluster must be only its head, with no CPU: {nodes}\n"
        + cluster.log_tails()
    )
    with NodeWatcher(cluster) as watcher:
        submitted = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "study.cli", "submit", "spec.yaml"]
                + ["--storage", str(storage), "--address", cluster.job_server]
                + ["--wait", "--", "--no-report"],
                cwd=job_dir,
                env=env,
                capture_output=True,
                text=True,
                timeout=480,
            )
        except subprocess.TimeoutExpired as e:
            pytest.fail(
                f"the study did not end within {e.timeout} s; {watcher.summary()}\n"
                f"{e.stdout}\n{e.stderr}\n{cluster.log_tails()}"
            )
        ended = time.monotonic()
        assert done.returncode == 0 and "SUCCEEDED" in done.stdout, (
            f"study submit --wait exited {done.returncode}\n{done.stdout}\n{done.stderr}\n"
            f"{watcher.summary()}\n{cluster.log_tails()}"
        )
        while time.monotonic() < ended + SCALE_DOWN_LIMIT_S:
            if watcher.time_all_gone(ended) is not None:
                break
            time.sleep(1)
    first = watcher.first_time_with_workers()
    gone = watcher.time_all_gone(ended)
    context = f"{watcher.summary()}\n{cluster.log_tails()}"
    assert first is not None, f"no worker node ever appeared; {context}"
    assert watcher.peak == MAX_WORKERS, f"peak {watcher.peak} worker nodes; {context}"
    assert watcher.cpus == {WORKER_CPUS}, f"worker nodes' CPUs {watcher.cpus}; {context}"
    launched = cluster.launches()
    assert launched and set(launched) == {worker_type_name()}, (
        f"the autoscaler launched {launched}; {context}"
    )
    assert gone is not None, (
        f"worker nodes still alive {SCALE_DOWN_LIMIT_S} s after the study ended; {context}"
    )
    # the autoscaler removed every worker node, and only for being idle
    terminated = cluster.terminations()
    assert set(terminated) >= watcher.seen, (
        f"worker nodes seen {sorted(watcher.seen)}, terminated {terminated}; {context}"
    )
    assert set(terminated.values()) == {"idle"}, f"terminated {terminated}; {context}"
    print(
        f"\nautoscaling: first worker node {first - submitted:.1f} s after submission, "
        f"peak {watcher.peak} worker nodes, study ended {ended - submitted:.1f} s after "
        f"submission, all worker nodes gone {gone - ended:.1f} s after it ended; "
        f"{len(watcher.seen)} worker nodes in all"
    )
