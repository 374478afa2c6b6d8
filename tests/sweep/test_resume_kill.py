"""Resume after the driver is SIGKILLed part-way: exactly the planned rows, no duplicates,
and the units that had finished before the kill are not re-run."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml

from study.store import Store
from tests.sweep._smoke import SMOKE, assert_complete, smoke_spec, study_cli, study_cmd, trials

FINETUNE = {"data_fractions": [0.5, 1.0], "repeats": 3, "epochs": 3}


@pytest.mark.slow
def test_sigkill_driver_then_resume(ray_address, tmp_path, cache_dir):
    spec_path = tmp_path / "smoke.yaml"
    data = {**SMOKE, "finetune": {**SMOKE["finetune"], **FINETUNE}}
    spec_path.write_text(yaml.safe_dump(data))
    spec = smoke_spec(**FINETUNE)
    storage = tmp_path / "studies"
    store = Store(str(storage / "smoke"))
    env = {**os.environ, "RAY_ADDRESS": ray_address, "ECG_STUDY_CACHE": str(cache_dir)}
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(
        study_cmd("run", str(spec_path), "--storage", str(storage), "--no-report"),
        env=env,
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        if len(store.list_names("results/trials", ".parquet")) >= 3:
            break
        time.sleep(0.5)
    assert driver.poll() is None, (tmp_path / "driver.log").read_text()[-3000:]
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    before = trials(store).set_index("unit_id").finished_at
    assert 3 <= len(before) < 18

    status = study_cli("status", store.uri, env=env, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "total" in status.stdout

    resumed = study_cli("resume", store.uri, "--no-report", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    df = assert_complete(store, spec)
    assert len(df) == 18
    after = df.set_index("unit_id").finished_at
    # the rows present before the kill are untouched: those units were not re-run
    assert after[before.index].equals(before)


def _rows(store: Store) -> dict[str, object]:
    """unit id -> finished_at of every result row (pretraining and fine-tuning)."""
    out = {}
    for table in ("results/pretrain", "results/trials"):
        data = store.read_dataset(table)
        if data is not None:
            df = data.select(["unit_id", "finished_at"]).to_pandas()
            out.update(dict(zip(df.unit_id, df.finished_at, strict=True)))
    return out


def _pretraining_running(store: Store) -> bool:
    for name in store.list_names("runs", ".json"):
        try:
            marker = store.read_json(f"runs/{name}")
        except Exception:  # being written
            continue
        if marker.get("stage") == "pretrain" and marker.get("state") == "running":
            return True
    return False


@pytest.mark.slow
def test_driver_killed_five_times_at_random_points_then_resumed(ray_address, tmp_path, cache_dir):
    """SIGKILL the driver five times (while it prepares the data, while it pretrains, while
    it fine-tunes, and at two random moments), resuming each time: the study ends with
    exactly the planned rows, and every row written before a kill is never rewritten."""
    import random

    spec_path = tmp_path / "smoke.yaml"
    finetune = {"data_fractions": [0.5, 1.0], "repeats": 3, "epochs": 3}
    data = {**SMOKE, "finetune": {**SMOKE["finetune"], **finetune}}
    data["pretrain"] = {**SMOKE["pretrain"], "epochs": 4, "patience": 4}
    spec_path.write_text(yaml.safe_dump(data))
    storage = tmp_path / "studies"
    store = Store(str(storage / "smoke"))
    env = {**os.environ, "RAY_ADDRESS": ray_address, "ECG_STUDY_CACHE": str(cache_dir)}
    rng = random.Random(20261202)

    def trial_rows() -> int:
        return len(store.list_names("results/trials", ".parquet"))

    # (where, reached(seconds since the driver started, trial rows when it started))
    points = [
        ("preparing the data", lambda s, n: store.exists("plan.parquet")),
        ("pretraining", lambda s, n: _pretraining_running(store)),
        ("fine-tuning", lambda s, n: trial_rows() > n),
    ]
    for t in (rng.uniform(3.0, 15.0), rng.uniform(3.0, 15.0)):
        points.append((f"{t:.1f} s after start", lambda s, n, t=t: s > t))
    kept: dict[str, object] = {}
    for i, (where, reached) in enumerate(points):
        cmd = (
            study_cmd("run", str(spec_path), "--storage", str(storage), "--no-report")
            if i == 0
            else study_cmd("resume", store.uri, "--no-report")
        )
        log_path = tmp_path / f"driver{i}.log"
        with open(log_path, "w") as log:
            driver = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
        started, rows_before = time.monotonic(), trial_rows()
        while driver.poll() is None and time.monotonic() < started + 300:
            if reached(time.monotonic() - started, rows_before):
                break
            time.sleep(0.2)
        assert driver.poll() is None, (
            f"kill {i + 1} ({where}): the driver ended first:\n" + (log_path.read_text()[-3000:])
        )
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        rows = _rows(store)
        for uid, finished in kept.items():  # nothing finished before is rewritten
            assert rows[uid] == finished, (where, uid)
        kept = rows
    resumed = study_cli("resume", store.uri, "--no-report", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    from study.sweep.load import parse_spec

    df = assert_complete(store, parse_spec(data))
    assert len(df) == 2 * 2 * 3 + 2 * 3  # pretrained: depths x fractions x repeats; scratch
    rows = _rows(store)
    assert all(rows[uid] == finished for uid, finished in kept.items())
