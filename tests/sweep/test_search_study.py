"""A study with a `search:` section run on Ray (issue 11): each arm's search runs its budget
as tasks of the streaming scheduler, its chosen values enter its units (and their ids),
a rerun does nothing, and a driver killed mid-search resumes to exactly the budget without
running a finished trial again, on a local and an S3 store, proposing what an
uninterrupted run proposed."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time

import pyarrow.parquet as pq
import pytest
import yaml

from study.schema import search_choice_path
from study.store import Store
from study.sweep.load import parse_spec
from study.sweep.plan import make_plan
from study.sweep.runner import run_study, study_plan
from study.sweep.search import choose, read_choice, scan_search_trials, search_groups
from tests.sweep._smoke import search_smoke, study_cli, study_cmd, trials

TRIALS = 5


def _groups(spec):
    return {g.arm: g for g in search_groups(spec, make_plan(spec))}


def _search_rows(store: Store, spec) -> dict[str, list]:
    out = {}
    for arm, group in _groups(spec).items():
        scan = scan_search_trials(store, group.group_id)
        assert scan.corrupt == {}
        out[arm] = scan.trials
    return out


def _check_searched_study(store: Store, spec) -> dict[str, list]:
    """Every group ran exactly its budget and chose its best trial; every unit of the
    study has one row, trained with its group's chosen values; plan.parquet lists them."""
    rows = _search_rows(store, spec)
    plan = study_plan(store, spec)
    df = trials(store).set_index("unit_id")
    assert set(df.index) == {u.unit_id for u in plan.units if u.stage != "pretrain"}
    for arm, group in _groups(spec).items():
        assert [r.number for r in rows[arm]] == list(range(TRIALS)), arm
        chosen = read_choice(store, group)
        assert chosen == choose(rows[arm], "val_loss")
        units = [u for u in plan.units if plan.base_id(u.unit_id) in group.unit_ids]
        assert units and all(u.unit_id not in group.unit_ids for u in units)  # new ids
        for u in units:
            assert json.loads(df.loc[u.unit_id, "config"])["train"]["lr"] == chosen["lr"]
            assert u.config.train.lr == chosen["lr"]
    stored = pq.read_table(io.BytesIO(store.read_bytes("plan.parquet"))).to_pandas()
    assert set(stored.unit_id) == {u.unit_id for u in plan.units}
    return rows


def test_each_arm_is_searched_then_its_units_run_with_the_chosen_values(
    ray_local, tmp_path, cache_dir
):
    spec = parse_spec(search_smoke(epochs=3, trials=TRIALS))
    out = run_study(spec, str(tmp_path / "studies"))
    assert out.complete, out.failed
    rows = _check_searched_study(out.store, spec)
    for arm in ("pretrained", "scratch"):
        # 1e-7 .. 1e-1: the search leaves the region that cannot learn in 3 epochs
        assert read_choice(out.store, _groups(spec)[arm])["lr"] >= 1e-4, rows[arm]
    # run again: nothing trains, nothing is proposed, nothing is rewritten
    stamps = {
        g.group_id: out.store.read_bytes(search_choice_path(g.group_id))
        for g in _groups(spec).values()
    }
    again = run_study(spec, str(tmp_path / "studies"))
    assert again.complete and again.done == out.done
    assert _search_rows(out.store, spec) == rows
    assert all(out.store.read_bytes(search_choice_path(k)) == v for k, v in stamps.items())


def test_a_search_of_the_pretraining_runs_chooses_before_the_pretrained_arm_searches(
    ray_local, tmp_path, cache_dir
):
    """applies_to both: the pretraining group's trials are DDP runs (2 gloo workers, the
    pruner's answer broadcast from rank 0); its choice trains the pretraining unit, and the
    pretrained arm's search then starts from those weights."""
    data = search_smoke(epochs=2, trials=2, pruner="asha", applies_to="both")
    data["pretrain"].update(num_workers=2, epochs=3)
    spec = parse_spec(data)
    out = run_study(spec, str(tmp_path / "studies"))
    assert out.complete, out.failed
    store = out.store
    plan = study_plan(store, spec)
    groups = {(g.section, g.arm): g for g in search_groups(spec, plan)}
    assert set(groups) == {("pretrain", None), ("finetune", "scratch"), ("finetune", "pretrained")}
    chosen = {}
    for key, group in groups.items():
        rows = scan_search_trials(store, group.group_id).trials
        assert [r.number for r in rows] == [0, 1], key
        chosen[key] = read_choice(store, group)
        assert chosen[key] == choose(rows, "val_loss")
    pre_rows = scan_search_trials(store, groups["pretrain", None].group_id).trials
    assert all(1 <= r.epochs <= 3 and r.state in ("complete", "pruned") for r in pre_rows)
    (pt,) = plan.by_stage("pretrain")
    assert pt.config.train.lr == chosen["pretrain", None]["lr"]
    assert store.exists(f"results/pretrain/{pt.unit_id}.parquet")
    assert pt.unit_id not in make_plan(spec)._index  # a new id: the chosen values are in it
    df = trials(store).set_index("unit_id")
    for u in plan.by_stage("finetune"):
        assert u.depends_on == pt.unit_id
        lr = json.loads(df.loc[u.unit_id, "config"])["train"]["lr"]
        assert lr == chosen["finetune", "pretrained"]["lr"]
    for u in plan.by_stage("scratch"):
        lr = json.loads(df.loc[u.unit_id, "config"])["train"]["lr"]
        assert lr == chosen["finetune", "scratch"]["lr"]


def _trial_parts(store: Store, spec) -> dict[str, bytes]:
    """Every trial part of the study's search groups, by path."""
    out = {}
    for group in _groups(spec).values():
        folder = f"results/search/{group.group_id}"
        for name in store.list_names(folder, ".parquet"):
            out[f"{folder}/{name}"] = store.read_bytes(f"{folder}/{name}")
    return out


def _run_until_killed(cmd, env: dict, store: Store, spec, log_path, parts: int) -> None:
    """Start a driver and SIGKILL it once `parts` trial rows are in the store."""
    with open(log_path, "w") as log:
        driver = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        if len(_trial_parts(store, spec)) >= parts:
            break
        time.sleep(0.3)
    assert driver.poll() is None, log_path.read_text()[-3000:]
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_driver_killed_mid_search_resumes_to_exactly_the_budget(
    where, s3_server, ray_address, tmp_path, cache_dir
):
    """Killed once 3 trial rows are stored; resumed: exactly the budget per group, the
    stored trials untouched, and (local) the same proposals as an uninterrupted run."""
    data = search_smoke(epochs=3, trials=TRIALS)
    spec = parse_spec(data)
    spec_path = tmp_path / "search.yaml"
    spec_path.write_text(yaml.safe_dump(data))
    env = {**os.environ, "RAY_ADDRESS": ray_address, "ECG_STUDY_CACHE": str(cache_dir)}
    if where == "s3":  # the Ray head started with the S3 server's settings (fixture order)
        _, bucket, s3_env = s3_server
        env.update(s3_env)
        storage = f"s3://{bucket}/{tmp_path.name}"
    else:
        storage = str(tmp_path / "studies")
    store = Store(storage).child(spec.name)

    run = study_cmd("run", str(spec_path), "--storage", storage, "--no-report")
    _run_until_killed(run, env, store, spec, tmp_path / "driver.log", parts=3)
    before = _trial_parts(store, spec)
    assert 3 <= len(before) < 2 * TRIALS
    assert not any(store.exists(search_choice_path(g.group_id)) for g in _groups(spec).values())

    resumed = study_cli("resume", store.uri, "--no-report", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = _check_searched_study(store, spec)
    after = _trial_parts(store, spec)
    assert len(after) == 2 * TRIALS
    # a finished trial is never run again: its part is the same bytes (finished_at, seconds)
    assert all(after[k] == v for k, v in before.items())
    if where == "local":  # the same proposals as a driver that was never killed
        whole = study_cli(
            "run", str(spec_path), "--storage", str(tmp_path / "whole"), "--no-report", env=env
        )
        assert whole.returncode == 0, whole.stderr[-3000:]
        expected = _search_rows(Store(str(tmp_path / "whole" / spec.name)), spec)
        for arm in rows:
            assert [r.params for r in rows[arm]] == [r.params for r in expected[arm]], arm
