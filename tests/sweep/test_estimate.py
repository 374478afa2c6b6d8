"""`study plan --estimate`: unit-hours and GPU-hours per stage from the durations of a
calibration study's finished units, checked against hand-computed values. Real Parquet rows
in a real local store; no Ray."""

from __future__ import annotations

import copy
import json

import pytest

from study.cli import main
from study.store import Store
from study.sweep.estimate import DurationModel, estimate_from_store, measurements, scan_durations
from study.sweep.load import parse_spec
from study.sweep.plan import make_plan
from study.sweep.runner import init_study
from tests.sweep._rows import unit, write_row
from tests.sweep._smoke import SMOKE

ALL = 5  # the freeze depth "all" resolves to for resnet1d18


def _spec_data(name: str, **changes) -> dict:
    data = copy.deepcopy(SMOKE)
    data["name"] = name
    for section, values in changes.items():
        data[section].update(values)
    return data


# The study to estimate: pretraining for 4 epochs on 2 GPUs, fine-tuning and from scratch
# for 10 epochs at fractions 0.5 and 1.0, 2 repeats, half a GPU per trial.
TARGET = _spec_data(
    "target",
    pretrain={"epochs": 4, "use_gpu": True, "num_workers": 2},
    finetune={"epochs": 10, "data_fractions": [0.5, 1.0], "repeats": 2, "gpus_per_trial": 0.5},
)
# Its calibration: every unit once, at fraction 0.5, for 2 epochs.
CALIBRATION = _spec_data(
    "calibration", finetune={"epochs": 2, "data_fractions": [0.5], "repeats": 1}
)


@pytest.fixture()
def target(tmp_path):
    path = tmp_path / "target.yaml"
    path.write_text(json.dumps(TARGET))
    return path, make_plan(parse_spec(TARGET))


@pytest.fixture()
def calibration(tmp_path):
    store = Store(str(tmp_path / "studies" / "calibration"))
    return store, init_study(store, parse_spec(CALIBRATION))


def _calibrate(store: Store, plan) -> None:
    write_row(store, unit(plan, "pretrain"), 100.0, 2, hardware="cuda:NVIDIA A10G")
    write_row(store, unit(plan, "scratch"), 12.0, 2)
    write_row(store, unit(plan, "finetune", depth=0), 16.0, 2)
    write_row(store, unit(plan, "finetune", depth=ALL), 6.0, 1)  # stopped early: 1 of 2


def test_unit_and_gpu_hours_per_stage_from_a_calibration(target, calibration, capsys):
    """Hand-computed, seconds = rate x fraction x max epochs x stop share:
    pretrain: rate 100/(2 x 1) = 50, share 1: 50 x 4 = 200 s, on 2 GPUs;
    scratch: rate 12/(2 x 0.5) = 12, share 1: 2 x (12 x 0.5 x 10) + 2 x (12 x 1 x 10) = 360;
    finetune depth 0: rate 16: 2 x 80 + 2 x 160 = 480; depth all: rate 6/(1 x 0.5) = 12,
    share 1/2: 2 x (12 x 0.5 x 5) + 2 x (12 x 1 x 5) = 180; on half a GPU each."""
    path, plan = target
    store, cal = calibration
    _calibrate(store, cal)
    est = estimate_from_store(plan, parse_spec(TARGET), store)
    assert (est.source, est.measured, est.left_out) == (store.uri, 4, 0)
    got = {
        e.stage: (
            e.units,
            round(e.unit_hours * 3600, 6),
            e.gpus_per_unit,
            round(e.gpu_hours * 3600, 6),
        )
        for e in est.stages
    }
    assert got == {
        "pretrain": (1, 200.0, 2.0, 400.0),
        "finetune": (8, 660.0, 0.5, 330.0),
        "scratch": (4, 360.0, 0.5, 180.0),
    }
    pre, ft, sc = est.stages
    assert ft.by_level == {0: 4, 1: 4}  # fraction 0.5 measured; 1.0 scaled from it
    assert pre.hardware == ("cuda:NVIDIA A10G",) and sc.hardware == ("cpu:test",)

    assert main(["plan", str(path), "--from", store.uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"estimate from 4 finished units of {store.uri}" in out
    assert any(line.startswith("  model: time ~ data fraction x epochs") for line in out)
    assert "  pretrain       1       0.056          2      0.111" in out
    assert "  finetune       8       0.183        0.5      0.092" in out
    assert "  scratch        4       0.100        0.5      0.050" in out
    assert "  total         13       0.339                 0.253" in out
    assert (
        "      basis: 2 measured units; units predicted from group 4, group at other "
        "fractions 4; on cpu:test"
    ) in out
    assert "      basis: 1 measured unit; units predicted from group 1; on cuda:NVIDIA A10G" in out

    assert main(["plan", str(path), "--from", store.uri, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["estimate"]
    assert data["stages"]["pretrain"]["gpu_hours"] == pytest.approx(400 / 3600)
    assert data["gpu_hours"] == pytest.approx((400 + 330 + 180) / 3600)


def test_a_stage_without_measurements_rests_on_relative_cost_only(target, calibration, capsys):
    path, plan = target
    store, cal = calibration
    write_row(store, unit(cal, "pretrain"), 100.0, 2)  # 50 s per epoch of the whole data
    est = estimate_from_store(plan, parse_spec(TARGET), store)
    pre, ft, sc = est.stages
    assert pre.unit_hours * 3600 == pytest.approx(200)
    # 50 x fraction x 10 epochs: 2 x (250 + 500) per freeze depth, and for scratch
    assert ft.unit_hours * 3600 == pytest.approx(3000) and ft.by_level == {5: 8}
    assert sc.unit_hours * 3600 == pytest.approx(1500) and sc.measured == 0
    assert main(["plan", str(path), "--estimate", "--from", store.uri]) == 0
    out = capsys.readouterr().out
    assert "basis: no measurements: relative cost only (data fraction x epochs" in out


def test_rows_without_a_readable_config_or_duration_are_left_out(target, calibration):
    _, plan = target
    store, cal = calibration
    _calibrate(store, cal)
    write_row(store, unit(cal, "finetune", depth=ALL), 6.0, 1, config='{"stage": "nope"}')
    rows = scan_durations(store)[1]
    assert len(rows) == 4 and len(DurationModel(measurements(rows))) == 3
    est = estimate_from_store(plan, parse_spec(TARGET), store)
    assert (est.measured, est.left_out) == (3, 1)


def test_the_study_run_would_write_is_used_without_from(target, tmp_path, monkeypatch, capsys):
    path, _ = target
    storage = tmp_path / "storage"
    monkeypatch.setenv("STUDY_STORAGE", str(storage))
    assert main(["plan", str(path), "--estimate"]) == 1
    err = capsys.readouterr().err
    assert f"no estimate: no study at {storage}/target (where `study run {path}` writes it)" in err
    assert "Run a short calibration study first" in err
    assert f"--from {storage}/target-calibration" in err

    store = Store(str(storage / "target"))
    plan = init_study(store, parse_spec(TARGET))
    assert main(["plan", str(path), "--estimate"]) == 1
    assert f"no estimate: {store.uri} has no finished unit" in capsys.readouterr().err

    write_row(store, unit(plan, "pretrain"), 360.0, 4)  # its own units: 90 s per epoch
    assert main(["plan", str(path), "--estimate"]) == 0
    out = capsys.readouterr().out
    assert f"estimate from 1 finished units of {store.uri}" in out
    assert "  pretrain       1       0.100          2      0.200" in out


def test_from_must_name_a_study(target, tmp_path, capsys):
    path, _ = target
    assert main(["plan", str(path), "--from", str(tmp_path / "nothing")]) == 2
    assert "is not a study (no spec.yaml)" in capsys.readouterr().err
