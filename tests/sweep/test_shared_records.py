"""The data-side self-pair check: a downstream whose test records an upstream pretrained on
is refused before anything trains, whatever the datasets are called."""

from __future__ import annotations

import pandas as pd
import pytest

from study.errors import DataError
from study.store import Store
from study.sweep.load import parse_spec
from study.sweep.plan import make_plan
from study.sweep.runner import check_shared_records

SPEC = {
    "name": "shared",
    "architectures": ["gru"],
    "upstream": ["synth_up_a"],
    "downstream": ["synth_down_x"],
    "finetune": {"repeats": 1},
}


def _records(ids, patients, splits, folds):
    return pd.DataFrame({"record_id": ids, "patient_id": patients, "split": splits, "fold": folds})


def _write(store: Store, key: str, frame: pd.DataFrame) -> None:
    path = store.path(f"prepared/{key}")
    import os

    os.makedirs(path, exist_ok=True)
    frame.to_parquet(f"{path}/records.parquet", index=False)


@pytest.mark.parametrize("shared", [0, 1, 40])
def test_a_downstream_test_split_inside_the_upstreams_training_is_refused(tmp_path, shared):
    plan = make_plan(parse_spec(SPEC))
    (pre,) = plan.by_stage("pretrain")
    down_key = plan.by_stage("finetune")[0].config.data_key
    store = Store(str(tmp_path))
    n = 100
    up_ids = [f"A{i:04d}" for i in range(n)]
    _write(store, pre.config.data_key, _records(up_ids, up_ids, ["train"] * n, [1] * n))
    # the downstream's 50 test records: `shared` of them are upstream records (same id and
    # patient), the rest its own; its training records are upstream ones too (no matter)
    test_ids = up_ids[:shared] + [f"B{i:04d}" for i in range(50 - shared)]
    down = _records(
        test_ids + up_ids[50:60],
        test_ids + up_ids[50:60],
        ["test"] * 50 + ["train"] * 10,
        [10] * 50 + [1] * 10,
    )
    _write(store, down_key, down)
    if shared >= 5:  # at least a tenth of the test split
        with pytest.raises(DataError, match=r"pretrains on 40 of the 50 test records"):
            check_shared_records(store, plan.units)
    else:
        check_shared_records(store, plan.units)  # a chance overlap of ids is not refused


def test_records_of_the_upstreams_other_folds_are_not_shared(tmp_path):
    """patient_disjoint: the upstream pretrains on folds 1-4 only, so the downstream's test
    fold of the same dataset is not among its records."""
    spec = {**SPEC, "downstream": ["synth_up_a"], "self_pairs": "patient_disjoint"}
    plan = make_plan(parse_spec(spec))
    (pre,) = plan.by_stage("pretrain")
    store = Store(str(tmp_path))
    ids = [f"r{i}" for i in range(100)]
    folds = [i % 10 + 1 for i in range(100)]
    splits = ["test" if f == 10 else "val" if f == 9 else "train" for f in folds]
    frame = _records(ids, ids, splits, folds)
    _write(store, pre.config.data_key, frame)
    check_shared_records(store, plan.units)
