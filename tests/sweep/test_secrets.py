"""Credentials never enter Ray's session folder, the store or the report.

Ray Tune copies the driver's AWS_* variables into every trial actor's runtime_env, and Ray's
runtime-env agent logs each runtime_env it creates (logs/runtime_env_agent.log): the secret
key ended up there 7 times per study when units ran as Tune trials. Units now run as Ray
tasks with no runtime_env, and `keep_credentials_out_of_tune` stops that propagation for any
Tune experiment; workers read the credentials from their node's own chain (here: the
environment the raylet inherited).
"""

from __future__ import annotations

import os
import pickle
import secrets
import shutil
import tempfile
from pathlib import Path

import boto3
import pytest

from analysis import report_study
from study.errors import StorageError
from study.store import Store
from study.sweep.remote import keep_credentials_out_of_tune
from study.sweep.runner import run_study
from tests.sweep._smoke import assert_complete, smoke_spec

CANARY = f"canary-{secrets.token_hex(12)}"  # a secret moto accepts, found nowhere by chance


def hits_in_folder(root: Path, needle: str) -> dict[str, int]:
    """Occurrences of `needle` in every regular file under `root` (links and sockets
    skipped), by path relative to `root`."""
    found = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_file():
                continue
            try:
                count = path.read_bytes().count(needle.encode())
            except OSError:  # a file removed while walking
                continue
            if count:
                found[str(path.relative_to(root))] = count
    return found


def hits_in_bucket(endpoint: str, bucket: str, needle: str) -> dict[str, int]:
    """Occurrences of `needle` in every object of the bucket (hidden prefixes included)."""
    s3 = boto3.client("s3", endpoint_url=endpoint)
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            if count := body.count(needle.encode()):
                found[obj["Key"]] = count
    return found


def start_ray(temp_dir: Path):
    """Local Ray like tests.conftest.start_local_ray, in its own temp dir (only this test's
    sessions are grepped, and no other Ray on the machine is touched)."""
    import ray

    ray.init(
        address="local",
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _temp_dir=str(temp_dir),
    )
    return ray


@pytest.fixture()
def canary_env(monkeypatch):
    """The canary as the secret key of the standard AWS variables (no network for region or
    instance metadata)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# --- fast: the mechanisms one by one ---------------------------------------------------------
def test_tune_stops_copying_aws_variables_into_trial_runtime_env(canary_env, monkeypatch):
    from ray.tune.execution import class_cache

    # Ray 2.60's own behaviour, restored for this test whatever ran before in this process
    monkeypatch.setattr(
        class_cache,
        "ENV_VARS_TO_PROPAGATE",
        class_cache.ENV_VARS_TO_PROPAGATE | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
    )

    class Before:
        pass

    class After:
        pass

    leaked = class_cache._ActorClassCache().get(Before)._default_options["runtime_env"]
    assert leaked["env_vars"]["AWS_SECRET_ACCESS_KEY"] == CANARY  # what Ray does by default
    keep_credentials_out_of_tune()
    runtime_env = class_cache._ActorClassCache().get(After)._default_options["runtime_env"]
    assert not [k for k in runtime_env["env_vars"] if k.startswith("AWS_")]
    assert CANARY not in repr(runtime_env)
    assert runtime_env["env_vars"]["PL_DISABLE_FORK"] == "1"  # Tune's own variables stay


def test_store_and_its_filesystem_pickle_without_credentials(canary_env):
    # Ray pickles the store into task arguments and `store.fs` (storage_filesystem) into
    # every trial and into Tune's state in the store
    store = Store("s3://lab-bucket/studies/x?endpoint_override=127.0.0.1:9&scheme=http")
    for obj in (store, store.fs, store.child("y"), store.child("y").fs):
        assert CANARY.encode() not in pickle.dumps(obj)
    again = pickle.loads(pickle.dumps(store))
    assert again.uri == store.uri
    assert again.fs.region == "us-east-1"  # options travel; keys come from the node's chain
    assert pickle.loads(pickle.dumps(store.fs)).region == "us-east-1"


@pytest.mark.parametrize(
    ("uri", "named"),
    [
        (f"s3://lab-bucket/p?secret_key={CANARY}&access_key=AK", "access_key, secret_key"),
        (f"s3://lab-bucket/p?endpoint_override=h:1&session_token={CANARY}", "session_token"),
        (f"s3://lab-bucket/p?AWS_SECRET_ACCESS_KEY={CANARY}", "aws_secret_access_key"),
        (f"s3://AK:{CANARY}@lab-bucket/p", "user info before the bucket"),
    ],
)
def test_credentials_in_a_store_uri_are_refused_without_echoing_them(uri, named):
    with pytest.raises(StorageError, match="must not hold credentials") as info:
        Store(uri)
    assert f"(found {named})" in str(info.value)
    assert CANARY not in str(info.value)


def test_the_greps_find_a_planted_canary(tmp_path):
    # the folder grep must be able to fail: a planted file is found, a link to it is not
    # counted twice
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "x.log").write_text(f"line\nkey={CANARY} and {CANARY}\n")
    (tmp_path / "latest").symlink_to(tmp_path / "logs")
    assert hits_in_folder(tmp_path, CANARY) == {"logs/x.log": 2}
    assert hits_in_folder(tmp_path, "canary-not-there") == {}


# --- slow: a whole study on S3 --------------------------------------------------------------
@pytest.fixture()
def ray_temp_dir():
    # short and under /tmp: Ray's socket paths must stay under the Unix limit (107 bytes)
    path = Path(tempfile.mkdtemp(prefix="ray-secrets-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_a_study_on_s3_leaves_its_secret_nowhere(
    s3_server, canary_env, cache_dir, ray_temp_dir, tmp_path, capfd
):
    endpoint, bucket, _ = s3_server
    # Ray starts after the canary is set: the raylet, and so every worker, inherits it,
    # which is how the trials below reach S3 at all
    ray = start_ray(ray_temp_dir)
    try:
        spec = smoke_spec(data_fractions=[1.0])
        outcome = run_study(spec, f"s3://{bucket}/studies")
        assert outcome.complete, outcome.failed
    finally:
        ray.shutdown()  # every Ray process gone, every log flushed, before the grep
    store = Store(f"s3://{bucket}/studies/smoke")
    assert len(assert_complete(store, spec)) == 3  # the trials did write to S3
    report = tmp_path / "report"
    report_study(store.uri, report, n_boot=50, log=lambda line: None)
    assert (report / "index.html").is_file()

    sessions = [p for p in ray_temp_dir.glob("session_*") if not p.is_symlink()]
    assert len(sessions) == 1
    agent_log = sessions[0] / "logs" / "runtime_env_agent.log"
    # runtime environments were created and logged (the Train controller's carries Train's
    # variables): it is this log that held the canary 7 times when units were Tune trials
    assert "RAY_TRAIN_V2_ENABLED" in agent_log.read_text()
    assert hits_in_folder(ray_temp_dir, CANARY) == {}
    assert hits_in_bucket(endpoint, bucket, CANARY) == {}
    assert hits_in_folder(tmp_path, CANARY) == {}  # the report and the prepared-data cache
    out, err = capfd.readouterr()
    assert CANARY not in out + err  # the driver's own output

    # Sanity: the same greps find the canary where it is put. A second Ray session in the
    # same temp dir, with Tune propagating AWS_SECRET_ACCESS_KEY as Ray 2.60 does by
    # default (what the runner turns off), logs it; so does an object planted in the bucket.
    from ray import tune
    from ray.tune.execution import class_cache

    saved = class_cache.ENV_VARS_TO_PROPAGATE
    class_cache.ENV_VARS_TO_PROPAGATE = saved | {"AWS_SECRET_ACCESS_KEY"}
    ray = start_ray(ray_temp_dir)
    try:
        tune.Tuner(
            lambda config: tune.report({"x": 1}),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0),
        ).fit()
    finally:
        ray.shutdown()
        class_cache.ENV_VARS_TO_PROPAGATE = saved
    leaked = hits_in_folder(ray_temp_dir, CANARY)
    assert any(path.endswith("logs/runtime_env_agent.log") for path in leaked), leaked
    assert not any(path.startswith(sessions[0].name) for path in leaked)
    boto3.client("s3", endpoint_url=endpoint).put_object(
        Bucket=bucket, Key="studies/smoke/.tmp/planted", Body=f"x{CANARY}x".encode()
    )
    assert hits_in_bucket(endpoint, bucket, CANARY) == {"studies/smoke/.tmp/planted": 1}
