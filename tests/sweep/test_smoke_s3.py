"""The smoke study against S3: a moto server on 127.0.0.1, results read back from it."""

from __future__ import annotations

import boto3
import pytest

from analysis import load_trials
from study.store import Store
from study.sweep.runner import run_study
from tests.conftest import start_local_ray
from tests.sweep._smoke import assert_complete, smoke_spec


@pytest.fixture(scope="module")
def s3_then_ray(s3_server):
    # Ray starts after the S3 variables are set, so its raylet and every worker inherit
    # them: the only way credentials reach a trial (none travel in a runtime_env; see
    # tests/sweep/test_secrets.py).
    ray = start_local_ray()
    try:
        yield s3_server
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_smoke_study_on_s3(s3_then_ray, cache_dir):
    endpoint, bucket, _ = s3_then_ray
    spec = smoke_spec(data_fractions=[1.0])
    outcome = run_study(spec, f"s3://{bucket}/studies")
    assert outcome.complete, outcome.failed
    store = Store(f"s3://{bucket}/studies/smoke")
    df = assert_complete(store, spec)
    assert len(df) == 3
    # the rows really are objects in the bucket, one part per unit named by its id
    keys = {
        o["Key"]
        for o in boto3.client("s3", endpoint_url=endpoint).list_objects_v2(
            Bucket=bucket, Prefix="studies/smoke/results/trials/"
        )["Contents"]
    }
    assert keys == {f"studies/smoke/results/trials/{u}.parquet" for u in df.unit_id}
    assert len(load_trials(store.uri)) == 3
