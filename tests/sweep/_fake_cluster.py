"""An autoscaling Ray cluster on this one machine: Ray's fake multi-node provider, with the
worker node type of the project's cluster.yaml.

`ray.cluster_utils.AutoscalingCluster` is not used: in Ray 2.60 it reads
`fake_multi_node/example.yaml`, which the wheel does not ship, and it runs `ray stop --force`,
which would stop every Ray on the machine. Instead the head is
`RAY_FAKE_CLUSTER=1 ray start --head --block --autoscaling-config FILE` in a session of its
own, with its own --temp-dir; the autoscaler (the head's monitor process) starts each fake
worker node as a raylet of its own on 127.0.0.1, in that same session, so stopping the
session stops the whole cluster and nothing else. The provider is Ray's
FakeMultiNodeProvider with a temp dir per worker node (tests/sweep/_fake_provider.py says
why).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.conftest import ROOT, free_port
from tests.sweep import _fake_provider as fake_provider

CLUSTER_YAML = ROOT / "cluster.yaml"
VENV_BIN = Path(sys.executable).parent
# The fake provider tags its head node with this type name whatever the config calls it;
# under any other name the autoscaler finds no type for the head and keeps launching and
# terminating nodes of the head type (measured with Ray 2.60).
FAKE_HEAD_TYPE = "ray.head.default"


def autoscaler_config(
    gcs_port: int,
    temp_dir_root: Path,
    *,
    worker_cpus: int = 1,
    max_workers: int = 2,
    idle_timeout_minutes: float = 0.2,
    cluster_yaml: Path = CLUSTER_YAML,
) -> dict:
    """cluster.yaml turned into a fake multi-node autoscaler config.

    Kept from cluster.yaml: every top-level key (Ray fills a missing one from its own
    defaults), the upscaling speed, the head's resources (no CPU: nothing trains there) and
    the worker node type's name with min_workers 0. Changed: the provider (fake_multinode,
    joining the head at 127.0.0.1:`gcs_port`, which lifts its default of port 6379, each
    worker node with a temp dir of its own under `temp_dir_root`), the head type's name
    (FAKE_HEAD_TYPE), no setup or start commands (there is nothing to install on a fake
    node), explicit worker resources (the fake provider cannot detect an instance type's),
    fewer workers and a short idle timeout.

    Args:
        gcs_port: the head's GCS port (`ray start --port`).
        temp_dir_root: where the worker nodes' temp dirs go (short: Unix socket paths).
        worker_cpus: CPUs of each fake worker node.
        max_workers: the most worker nodes the autoscaler may start.
        idle_timeout_minutes: how long a worker node may sit idle before it is removed.
        cluster_yaml: the cluster config to start from.

    Returns:
        The config, ready for `yaml.safe_dump`.
    """
    source = yaml.safe_load(cluster_yaml.read_text())
    head = source["available_node_types"][source["head_node_type"]]
    worker_type = worker_type_name(cluster_yaml)
    config = {
        key: ([] if isinstance(value, list) else value)
        for key, value in source.items()
        if key not in ("provider", "available_node_types", "head_node_type")
    }
    config.update(
        cluster_name=f"{source['cluster_name']}-fake",
        max_workers=max_workers,
        idle_timeout_minutes=idle_timeout_minutes,
        file_mounts={},
        provider={
            "type": "external",  # Ray's fake_multinode, one temp dir per node
            "module": fake_provider.MODULE,
            "temp_dir_root": str(temp_dir_root),
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": f"127.0.0.1:{gcs_port}",
        },
        available_node_types={
            FAKE_HEAD_TYPE: {"node_config": {}, "resources": dict(head["resources"])},
            worker_type: {
                "node_config": {},
                "resources": {"CPU": worker_cpus},
                "min_workers": 0,
                "max_workers": max_workers,
            },
        },
        head_node_type=FAKE_HEAD_TYPE,
    )
    return config


def worker_type_name(cluster_yaml: Path = CLUSTER_YAML) -> str:
    """The name of cluster.yaml's one worker node type."""
    source = yaml.safe_load(cluster_yaml.read_text())
    names = [n for n in source["available_node_types"] if n != source["head_node_type"]]
    if len(names) != 1:
        raise ValueError(f"{cluster_yaml} must have one worker node type, has {names}")
    return names[0]


@dataclass
class FakeCluster:
    """A running fake autoscaling cluster (see `fake_cluster`)."""

    gcs_port: int
    dashboard_port: int
    temp_dir: Path
    head: subprocess.Popen
    head_log: Path

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def job_server(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def nodes(self) -> list[dict]:
        """The alive nodes, as the GCS knows them: {node_id, is_head, cpus}."""
        from ray.util.state import list_nodes

        return [
            {
                "node_id": n.node_id,
                "is_head": n.is_head_node,
                "cpus": (n.resources_total or {}).get("CPU", 0),
            }
            for n in list_nodes(address=self.job_server, limit=1000, raise_on_missing_output=False)
            if n.state == "ALIVE"
        ]

    def workers(self) -> list[dict]:
        return [n for n in self.nodes() if not n["is_head"]]

    def logs_dir(self) -> Path:
        return self.temp_dir / "session_latest" / "logs"

    def _monitor_lines(self) -> list[str]:
        log = self.logs_dir() / "monitor.log"
        return log.read_text(errors="replace").splitlines() if log.exists() else []

    def launches(self) -> list[str]:
        """The node type of each launch the autoscaler logged (monitor.log). A launch of
        "N nodes" starts one node: the fake provider creates one per call by default."""
        found = (re.search(r"Launching \d+ nodes, type (\S+)\.", x) for x in self._monitor_lines())
        return [f.group(1) for f in found if f]

    def terminations(self) -> dict[str, str]:
        """Node id -> why the autoscaler terminated it (monitor.log)."""
        pattern = r"Terminating the node with id (\S+) and ip \S+ \((\w+)\)"
        found = (re.search(pattern, x) for x in self._monitor_lines())
        return {f.group(1): f.group(2) for f in found if f}

    def log_tails(self, lines: int = 40) -> str:
        """The last lines of the head's output and of the autoscaler's logs, for a failure
        message."""
        parts = []
        logs = self.logs_dir()
        for path in (
            self.head_log,
            logs / "monitor.log",
            logs / "monitor.err",
            logs / "monitor.out",
        ):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
            else:
                parts.append(f"--- {path}: missing")
        return "\n".join(parts)


def _head_is_up(cluster: FakeCluster) -> bool:
    try:
        socket.create_connection(("127.0.0.1", cluster.gcs_port), timeout=1).close()
        try:
            with urllib.request.urlopen(f"{cluster.job_server}/api/version", timeout=5):
                pass
        except urllib.error.HTTPError:  # it answers
            pass
        # the job server answers before the head's raylet has registered
        return any(n["is_head"] for n in cluster.nodes())
    except Exception:  # not yet
        return False


def _wait_until_up(cluster: FakeCluster, limit_s: float) -> None:
    """Wait for the GCS, the job server and the head node (alive in the GCS)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if cluster.head.poll() is not None:
            raise RuntimeError(
                f"the fake cluster's head exited ({cluster.head.returncode}) while starting\n"
                + cluster.log_tails()
            )
        if _head_is_up(cluster):
            return
        time.sleep(1)
    raise TimeoutError(
        f"the fake cluster's head did not come up within {limit_s:.0f} s "
        f"(GCS {cluster.gcs_address}, job server {cluster.job_server})\n" + cluster.log_tails()
    )


def _session_members(session: int) -> dict[int, str]:
    """The live processes of a session (pid -> command line)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            # the fields after the command name (which may hold spaces): state is first,
            # the session id fourth
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != session or fields[0] in ("Z", "X"):
                continue
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        out[int(proc.name)] = args[:200]
    return out


def _stop(cluster: FakeCluster, limit_s: float = 30) -> list[str]:
    """Stop everything of the cluster and nothing else: the head's session (the head was
    started as a session leader; the fake worker nodes and every Ray worker process are in
    that session, the workers in process groups of their own). Returns what was still
    alive `limit_s` after SIGKILL (nothing, normally)."""
    session = cluster.head.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(session, signal.SIGTERM)  # `ray start --block` stops its processes
    try:
        cluster.head.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + limit_s
    while (members := _session_members(session)) and time.monotonic() < deadline:
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    with contextlib.suppress(subprocess.TimeoutExpired):
        cluster.head.wait(timeout=5)
    return [f"{pid}: {args}" for pid, args in _session_members(session).items()]


@contextlib.contextmanager
def fake_cluster(
    workdir: Path, env: dict[str, str] | None = None, start_limit_s: float = 180, **config
) -> Iterator[FakeCluster]:
    """A fake autoscaling cluster from cluster.yaml: a head with no CPU and no worker, an
    autoscaler that adds worker nodes on demand and removes idle ones.

    Args:
        workdir: where the autoscaler config and the head's output are written.
        env: extra environment for the head, which every node, task and job inherits
            (e.g. ECG_STUDY_CACHE).
        start_limit_s: how long the head may take to come up.
        **config: passed to `autoscaler_config` (worker_cpus, max_workers, ...).

    Yields:
        The running cluster; on exit every process of its session is stopped.
    """
    gcs_port, dashboard_port = free_port(), free_port()
    # Short (Unix socket paths must fit in 107 bytes) and this cluster's alone; the worker
    # nodes' temp dirs go inside it.
    temp_dir = Path(tempfile.mkdtemp(prefix="rfake-", dir="/tmp"))
    config_path = workdir / "autoscaler.yaml"
    config_path.write_text(yaml.safe_dump(autoscaler_config(gcs_port, temp_dir, **config)))
    head_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    head_env.pop("RAY_API_SERVER_ADDRESS", None)
    head_env.update(
        {
            "PATH": f"{VENV_BIN}{os.pathsep}{head_env.get('PATH', '')}",  # the job's `python`
            "RAY_FAKE_CLUSTER": "1",
            # where the autoscaler imports the provider from (the job's working dir still
            # comes first on its workers' path)
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), head_env.get("PYTHONPATH")])),
            # A loopback-only test cluster: no token (Ray turns token auth on for a head
            # started where ~/.ray/auth_token exists); clients say the same.
            "RAY_AUTH_MODE": "disabled",
            # Ray resolves "this node" to 127.0.0.1, not to the machine's external address
            # (which this sandbox does not route): for the fake worker nodes, which the
            # autoscaler starts without an address, and for the job's driver.
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",  # 5 s by default
            "RAY_USAGE_STATS_ENABLED": "0",
            "OMP_NUM_THREADS": "1",
        }
    )
    head_env.update(env or {})
    head_log = workdir / "head.out"
    command = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs_port}",
        f"--autoscaling-config={config_path}",
        "--num-cpus=0",
        "--num-gpus=0",
        f"--temp-dir={temp_dir}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        # not the defaults (52365, 10001), which another Ray on the machine may hold
        f"--dashboard-agent-listen-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        "--disable-usage-stats",
    ]
    with head_log.open("w") as out:
        head = subprocess.Popen(
            command,
            env=head_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own session: stopped as one, nothing else
        )
    cluster = FakeCluster(gcs_port, dashboard_port, temp_dir, head, head_log)
    failed = True  # a failed start or test: keep the logs
    try:
        _wait_until_up(cluster, start_limit_s)
        yield cluster
        failed = False
    finally:
        left = _stop(cluster)
        if failed:  # keep the cluster's logs beside the test's other files
            with contextlib.suppress(OSError):
                shutil.copytree(cluster.logs_dir(), workdir / "ray-logs", symlinks=True)
        shutil.rmtree(temp_dir, ignore_errors=True)
        if left and not failed:  # else the test's own failure says more
            raise RuntimeError(
                "processes of the fake cluster still alive after SIGKILL: " + "; ".join(left)
            )
