"""Shared fixtures: real data location, a loopback S3 server, Ray started once per module."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The real ECG records tests read: ../shared/realdata beside the checkout (defined here only).
REALDATA = ROOT.parent / "shared" / "realdata"

# Set for the whole session, before any test module imports torch or starts Ray (keep torch
# to one thread per process: tests run beside Ray workers on 2 cores); the values they
# replace are put back when the session ends.
_SESSION_ENV = {
    "OMP_NUM_THREADS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_V2_ENABLED": "1",
}
_SAVED_ENV = {k: os.environ.get(k) for k in _SESSION_ENV}
for _key, _value in _SESSION_ENV.items():
    os.environ.setdefault(_key, _value)


def pytest_unconfigure(config) -> None:
    for key, value in _SAVED_ENV.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def realdata_dir(path: Path = REALDATA) -> Path:
    """`path` (../shared/realdata) if it is there. Missing, its tests are skipped on a
    developer's machine, and fail under CI (CI=true): CI must never pass by skipping them."""
    if not path.is_dir():
        message = f"real ECG samples not found at {path} (../shared/realdata)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{message}; under CI they must be there")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def realdata() -> Path:
    return realdata_dir()


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A private prepared-data cache, so tests never touch ~/.cache."""
    path = tmp_path / "cache"
    monkeypatch.setenv("ECG_STUDY_CACHE", str(path))
    return path


@pytest.fixture(scope="module")
def s3_server():
    """A moto S3 server on 127.0.0.1 with one bucket; yields (endpoint, bucket, env)."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="lab-bucket"
    )
    try:
        yield endpoint, "lab-bucket", env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


def start_local_ray():
    """A new 2-CPU Ray instance on loopback (never one left running on the machine)."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    return ray


@pytest.fixture(scope="module")
def ray_local():
    """Ray started once for the module."""
    ray = start_local_ray()
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ray_address():
    """A Ray head on loopback that outlives the drivers the test starts and kills."""
    port = free_port()
    # A loopback-only test cluster: its drivers connect without the token handshake
    # (restored when the module's tests are done).
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    # --block: the head lives as long as this process, and stopping it stops only its own
    # Ray processes (`ray stop` would stop every Ray on the machine).
    head = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--port",
            str(port),
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the test's Ray head did not start") from None
                time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
