"""The tiny study the Ray tests run, and checks they share."""

from __future__ import annotations

import copy
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq

from study.schema import TRIALS_SCHEMA
from study.store import Store
from study.sweep.load import parse_spec
from study.sweep.plan import make_plan

SMOKE = {
    "name": "smoke",
    "architectures": [{"name": "resnet1d18", "options": {"base_width": 4}}],
    "upstream": ["synth_tiny"],
    "downstream": ["synth_tiny"],
    # synth_tiny is small: it serves as its own upstream, split by patient between the
    # two roles (pretraining on folds 1-4, downstream training on folds 5-8).
    "self_pairs": "patient_disjoint",
    "pretrain": {"epochs": 2, "batch_size": 32, "num_workers": 2},
    "finetune": {
        "freeze_depths": [0, "all"],
        "data_fractions": [0.5, 1.0],
        "repeats": 1,
        "epochs": 2,
        "batch_size": 16,
    },
}


def smoke_spec(**finetune):
    data = copy.deepcopy(SMOKE)
    data["finetune"].update(finetune)
    return parse_spec(data)


def search_smoke(epochs: int = 3, trials: int = 6, pruner: str = "none", **search) -> dict:
    """SMOKE with a learning-rate search (random sampler, seed 0) over a range whose low
    end cannot learn in `epochs`, one freeze depth and fraction, deterministic kernels (the
    same spec gives the same values, not only the same proposals)."""
    data = copy.deepcopy(SMOKE)
    data["finetune"].update(
        data_fractions=[1.0],
        freeze_depths=[0],
        epochs=epochs,
        batch_size=8,
        patience=10,
        deterministic=True,
    )
    data["pretrain"].update(num_workers=1, epochs=1)
    data["search"] = {
        "space": {"lr": {"loguniform": [1.0e-7, 1.0e-1]}},
        "trials": trials,
        "sampler": "random",
        "pruner": pruner,
        "seed": 0,
        **search,
    }
    return data


def study_cmd(*args: str) -> list[str]:
    """The `study` command line with `args`, in this interpreter."""
    return [sys.executable, "-m", "study.cli", *args]


def study_cli(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `study ARGS` to its end in a subprocess (output captured as text)."""
    return subprocess.run(
        study_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout
    )


def trials(store: Store) -> pd.DataFrame:
    table = store.read_dataset("results/trials", schema=TRIALS_SCHEMA)
    return table.to_pandas() if table is not None else pd.DataFrame(columns=TRIALS_SCHEMA.names)


def assert_complete(store: Store, spec) -> pd.DataFrame:
    """Every planned unit has exactly one result row, and nothing else has one."""
    plan = make_plan(spec)
    df = trials(store)
    planned = {u.unit_id for u in plan.units if u.stage != "pretrain"}
    assert len(df) == len(planned), (len(df), len(planned))
    assert set(df.unit_id) == planned
    assert not df.unit_id.duplicated().any()
    pre = store.read_dataset("results/pretrain")
    assert pre is not None
    assert set(pre.column("unit_id").to_pylist()) == {u.unit_id for u in plan.by_stage("pretrain")}
    assert df.test_macro_auroc.notna().all()
    assert set(df.init) == {"pretrained", "scratch"}
    return df


def part_schema_ok(store: Store, uid: str) -> bool:
    with store.fs.open_input_file(store.path(f"results/trials/{uid}.parquet")) as f:
        return pq.read_schema(f).equals(TRIALS_SCHEMA, check_metadata=False)
