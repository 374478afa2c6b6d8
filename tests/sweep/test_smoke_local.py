"""A whole tiny study through real Ray: TorchTrainer pretraining (2 DDP workers over gloo),
Tune fine-tuning, one result row per planned unit, and a report from the store alone."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import report_study
from study.store import Store
from study.sweep.runner import run_study
from study.sweep.status import study_status
from tests.sweep._smoke import assert_complete, part_schema_ok, smoke_spec, trials


def test_smoke_study_end_to_end_then_rerun_does_nothing(ray_local, tmp_path, cache_dir):
    spec = smoke_spec()
    outcome = run_study(spec, str(tmp_path / "studies"))
    assert outcome.complete, outcome.failed
    store = Store(str(tmp_path / "studies" / "smoke"))
    df = assert_complete(store, spec)
    assert len(df) == 6  # 2 fractions x (1 scratch + 2 freeze depths)
    assert all(part_schema_ok(store, uid) for uid in df.unit_id)
    epochs = store.read_dataset("results/epochs").to_pandas()
    assert set(df.unit_id) <= set(epochs.unit_id)
    # the paired arms trained on the same subset
    for frac, group in df.groupby("data_fraction"):
        assert group.n_train.nunique() == 1, (frac, group.n_train)
    # checkpoints of finished units are gone; pretrained weights and their config remain
    assert not store.list_names("checkpoints")
    pt = df[df.init == "pretrained"].pretrain_unit.iloc[0]
    assert store.exists(f"pretrained/{pt}/model.pt")
    assert store.read_json(f"pretrained/{pt}/model.json")["model"]["name"] == "resnet1d18"

    status = study_status(store.uri)
    assert status.loc["total", "done"] == 7 and status.loc["total", "pending"] == 0

    before = trials(store).set_index("unit_id").finished_at
    again = run_study(spec, str(tmp_path / "studies"))
    assert again.complete
    after = trials(store).set_index("unit_id").finished_at
    assert before.equals(after)  # nothing was re-run

    paths = report_study(store.uri, tmp_path / "report", n_boot=200)
    assert (tmp_path / "report" / "summary.md").stat().st_size > 0
    assert any(str(p).endswith(".png") for p in paths.values())
    # the stored test predictions give every pretrained cell a bootstrap interval, and
    # DeLong's test where one repeat pair is compared (this study has one repeat)
    boot = pd.read_csv(paths["bootstrap.csv"])
    assert len(boot) == 4 and boot["boot_low"].notna().all(), boot
    assert (boot["boot_low"] <= boot["boot_gain"]).all()
    assert boot["delong_p"].between(0, 1).all()
    for name in ("gain_vs_fraction.png", "gain_vs_freeze_depth.png", "learning_curves.png"):
        assert name in paths, sorted(paths)
    # the page: self-contained, every figure loads, nothing logged to the console
    from tests.analysis.test_page import load

    attributes, console = load(paths["index.html"], tmp_path)
    assert attributes.get("data-images-ok") == "true", attributes
    assert int(attributes["data-images-total"]) >= 5
    assert console == []
    html = paths["index.html"].read_text()
    assert "Headlines (chosen on validation)" in html and "spec.yaml" in html


@pytest.mark.slow
def test_a_failing_unit_is_reported_and_a_rerun_completes_it(ray_local, tmp_path, cache_dir):
    from study.schema import checkpoint_path
    from study.sweep.plan import make_plan
    from study.sweep.status import failures

    spec = smoke_spec(data_fractions=[1.0], freeze_depths=[0])
    victim = make_plan(spec).by_stage("scratch")[0].unit_id
    store = Store(str(tmp_path / "studies" / "smoke"))
    # the unit fails on purpose: its checkpoint slot holds bytes that are no checkpoint
    store.write_bytes(checkpoint_path(victim), b"not a checkpoint")
    outcome = run_study(spec, str(tmp_path / "studies"))
    assert outcome.failed == [victim] and outcome.done == 2
    status = study_status(store.uri)
    assert status.loc["scratch", "failed"] == 1 and status.loc["finetune", "done"] == 1
    (marker,) = failures(store.uri)
    assert marker["unit_id"] == victim and "cannot be read" in marker["error"]
    assert len(trials(store)) == 1

    store.delete_dir(f"checkpoints/{victim}")
    again = run_study(spec, str(tmp_path / "studies"))
    assert again.complete
    assert_complete(store, spec)
