"""Which code made a result: the version every row and the plan record, in a checkout, in a
job's working dir (which Ray ships without .git), and through `study submit` to a real
Ray job server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from study import __version__
from study.store import Store
from study.sweep.runner import CODE_VERSION_ENV, code_version, describe_commit, init_study
from tests.conftest import free_port
from tests.sweep._smoke import SMOKE, smoke_spec, trials

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"


def _git(cwd: Path, *args: str) -> str:
    """git in a throwaway repository of the test's own (never the project's checkout)."""
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    done = subprocess.run(
        ["git", *identity, *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _checkout(dest: Path, spec: dict | None = None) -> str:
    """A copy of this code committed into a new repository at `dest`; its `git describe`."""
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("study", "analysis"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    if spec is not None:
        (dest / "tiny.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    _git(dest, "init", "-q")
    _git(dest, "add", ".")
    _git(dest, "commit", "-q", "-m", "snapshot")
    return _git(dest, "describe", "--always", "--dirty")


def _job_dir(dest: Path) -> Path:
    """What a Ray job's working dir holds: the code, without .git."""
    shutil.copytree(ROOT / "study", dest / "study", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _version_in(workdir: Path, env: dict) -> str:
    """code_version() as a job's driver computes it, run from `workdir`'s copy of the code."""
    script = (
        "import study, study.sweep.runner as r; "
        f"assert study.__file__.startswith({str(workdir)!r}), study.__file__; "
        "print(r.code_version())"
    )
    env = {k: v for k, v in os.environ.items() if k != CODE_VERSION_ENV} | env
    env["PYTHONPATH"] = str(workdir)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


# --- the version logic, without a cluster -----------------------------------------------------
def test_a_job_working_dir_without_git_takes_the_commit_from_the_environment(tmp_path):
    workdir = _job_dir(tmp_path / "job")
    assert _version_in(workdir, {CODE_VERSION_ENV: "g1a2b3c4-dirty"}) == (
        f"{__version__}+g1a2b3c4-dirty"
    )


def test_without_git_or_the_environment_the_commit_is_unknown(tmp_path):
    workdir = _job_dir(tmp_path / "job")
    assert _version_in(workdir, {}) == f"{__version__} (unknown commit)"


def test_the_environment_wins_over_the_checkout(tmp_path, monkeypatch):
    commit = _checkout(tmp_path / "repo")
    monkeypatch.delenv(CODE_VERSION_ENV, raising=False)
    assert code_version(tmp_path / "repo") == f"{__version__}+{commit}"
    monkeypatch.setenv(CODE_VERSION_ENV, "gfeedbee")
    assert code_version(tmp_path / "repo") == f"{__version__}+gfeedbee"


def test_describe_commit_of_a_checkout_a_dirty_one_and_a_folder_inside_one(tmp_path):
    repo = tmp_path / "repo"
    commit = _checkout(repo)
    assert commit == _git(repo, "rev-parse", "--short", "HEAD")
    assert describe_commit(repo) == commit
    (repo / "study" / "__init__.py").write_text("# edited\n")
    assert describe_commit(repo) == f"{commit}-dirty"
    # a folder inside a checkout is not one: it must not lend the outer repository's commit
    assert describe_commit(repo / "study") is None
    assert describe_commit(tmp_path) is None


def test_the_plan_records_the_submitted_commit(tmp_path, monkeypatch):
    monkeypatch.setenv(CODE_VERSION_ENV, "g0c0ffee")
    store = Store(str(tmp_path / "s"))
    init_study(store, smoke_spec())
    meta = pq.read_metadata(store.path("plan.parquet")).metadata
    assert meta[b"code_version"].decode() == f"{__version__}+g0c0ffee"


# --- study submit against a real Ray job server -----------------------------------------------
_HEAD = """
import sys, ray
ray.init(address="local", num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=True,
         dashboard_host="127.0.0.1", dashboard_port=int(sys.argv[1]), _temp_dir=sys.argv[2],
         log_to_driver=False, configure_logging=False)
print("ready", flush=True)
sys.stdin.read()  # until the test closes it
ray.shutdown()
"""


def _wait_for_job_server(head: subprocess.Popen, port: int, limit_s: float = 90) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        assert head.poll() is None, head.stderr.read()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=2):
                return
        except urllib.error.HTTPError:  # it answers (401: Ray's token auth, which the
            return  # job client passes)
        except OSError:
            time.sleep(1)
    pytest.fail(f"no job server on 127.0.0.1:{port} after {limit_s} s")


@pytest.mark.slow
def test_submit_runs_the_study_as_a_job_and_every_row_records_the_commit(tmp_path):
    spec = {
        **SMOKE,
        "name": "submitted",
        "pretrain": {**SMOKE["pretrain"], "epochs": 1, "num_workers": 1},
        "finetune": {**SMOKE["finetune"], "freeze_depths": [0], "data_fractions": [1.0]},
    }
    spec["finetune"]["epochs"] = 1
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    commit = _checkout(checkout, spec)
    port = free_port()
    # this head only: its own temp dir (short: Ray's socket paths must fit in 107 bytes),
    # its own process group, shut down by the test; never `ray stop` (it stops every Ray)
    temp_dir = tempfile.mkdtemp(prefix="rayjob-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # the job's `python`
    env.pop(CODE_VERSION_ENV, None)
    env.pop("RAY_API_SERVER_ADDRESS", None)
    # a local head enables Ray's token authentication (token in ~/.ray/auth_token); a client
    # that names an address must say so, as on a real cluster
    env["RAY_AUTH_MODE"] = "token"
    head = subprocess.Popen(
        [sys.executable, "-c", _HEAD, str(port), temp_dir],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    storage = tmp_path / "studies"
    try:
        _wait_for_job_server(head, port)
        done = subprocess.run(
            [
                str(VENV_BIN / "study"),
                "submit",
                "tiny.yaml",
                "--storage",
                str(storage),
                "--address",
                f"http://127.0.0.1:{port}",
                "--wait",
                "--",
                "--no-report",
            ],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"commit {commit})" in done.stdout
        assert "SUCCEEDED" in done.stdout
    finally:
        _stop_head(head, port)
        shutil.rmtree(temp_dir, ignore_errors=True)
    store = Store(str(storage / "submitted"))
    rows = trials(store)
    assert len(rows) == 2 and set(rows.init) == {"pretrained", "scratch"}
    assert set(rows.code_version) == {f"{__version__}+{commit}"}
    pretrain = store.read_dataset("results/pretrain").to_pandas()
    assert set(pretrain.code_version) == {f"{__version__}+{commit}"}
    meta = pq.read_metadata(store.path("plan.parquet")).metadata
    assert meta[b"code_version"].decode() == f"{__version__}+{commit}"


def _stop_head(head: subprocess.Popen, port: int) -> None:
    """Stop any job still running, shut the head down, and make sure its processes (its own
    process group, started by this test) are gone."""
    import signal

    try:
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(f"http://127.0.0.1:{port}")
        for job in client.list_jobs():
            if not job.status.is_terminal():
                client.stop_job(job.submission_id)
    except Exception:  # the head may be gone already
        pass
    try:
        head.communicate(input="", timeout=60)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(head.pid, signal.SIGKILL)  # only this test's head and what it started
    except ProcessLookupError:
        pass
