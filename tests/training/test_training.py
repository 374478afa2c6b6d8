"""The plain training loop and its metrics (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from study.errors import TrainingError
from study.models import create_model
from study.training import (
    ArrayRows,
    FitConfig,
    choose_thresholds,
    classification_metrics,
    fit,
    objective,
    predict,
)
from study.training.checkpoint import load_backbone, load_state_bytes, state_to_bytes
from study.training.metrics import macro_auroc

torch.set_num_threads(1)


def test_metrics_against_hand_computed_values():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    p = np.array([[0.9, 0.2], [0.4, 0.7], [0.6, 0.3], [0.1, 0.8]])
    # class 0: positives 0.9, 0.6 vs negatives 0.4, 0.1 -> AUROC 1.0
    # class 1: positives 0.7, 0.3 vs negatives 0.2, 0.8 -> pairs won: (0.7>0.2),(0.3>0.2) = 2/4
    assert macro_auroc(y, p) == pytest.approx(0.75)
    m = classification_metrics(y, p)
    # at 0.5: class 0 pred [1,0,1,0] -> F1 1.0; class 1 pred [0,1,0,1] -> tp1 fp1 fn1 -> 0.5
    assert m["macro_f1"] == pytest.approx(0.75)
    # weighted by support (2 and 2) -> same as macro here
    assert m["weighted_f1"] == pytest.approx(0.75)


def test_auroc_skips_classes_without_both_outcomes_and_is_nan_when_none_left():
    y = np.array([[1, 0], [0, 0], [1, 0]])
    p = np.array([[0.9, 0.1], [0.2, 0.5], [0.8, 0.3]])
    assert macro_auroc(y, p) == pytest.approx(1.0)
    assert np.isnan(macro_auroc(np.zeros((3, 2)), p))


def test_thresholds_are_chosen_on_validation_to_maximise_f1():
    y = np.array([[1], [1], [0], [0]])
    p = np.array([[0.35], [0.3], [0.2], [0.1]])
    thr = choose_thresholds(y, p)
    assert 0.2 < thr[0] <= 0.3
    assert classification_metrics(y, p, thr)["macro_f1"] == pytest.approx(1.0)
    assert choose_thresholds(np.zeros((4, 1)), p)[0] == 0.5


def _toy(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, 32)).astype(np.float32)
    y = np.stack([x[:, 0].mean(1) > 0, x[:, 1].std(1) > 1], axis=1).astype(np.float32)
    return x, y


def _model():
    return create_model("resnet1d18", in_channels=2, num_classes=2, base_width=4)


def test_fit_interrupted_and_resumed_equals_an_uninterrupted_fit():
    train, val = _toy(64, 0), _toy(32, 1)
    cfg = FitConfig(epochs=4, batch_size=16, patience=10, seed=3)
    torch.manual_seed(0)
    full = fit(_model(), train, val, cfg)

    saved = {}

    class Crash(Exception):
        pass

    def crash_after_two(state, record):
        saved["state"] = load_state_bytes(state_to_bytes(state))
        if record["epoch"] == 2:
            raise Crash

    torch.manual_seed(0)
    with pytest.raises(Crash):
        fit(_model(), train, val, cfg, on_epoch=crash_after_two)
    assert saved["state"]["epoch"] == 2
    torch.manual_seed(0)
    resumed = fit(_model(), train, val, cfg, resume=saved["state"])
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.best_epoch == full.best_epoch
    for a, b in zip(full.history, resumed.history, strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_early_stopping_selects_best_validation_epoch():
    train, val = _toy(64, 0), _toy(32, 1)
    res = fit(_model(), train, val, FitConfig(epochs=30, batch_size=16, patience=2, lr=0.05))
    losses = [h["val_loss"] for h in res.history]
    assert res.best_epoch == int(np.argmin(losses)) + 1
    assert res.epochs_run <= res.best_epoch + 2
    model = _model()
    model.load_state_dict(res.best_state)
    assert predict(model, val[0]).shape == (32, 2)


def test_frozen_model_optimises_only_trainable_parameters():
    model = _model()
    model.freeze(model.max_freeze_depth)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, _toy(32, 0), _toy(16, 1), FitConfig(epochs=1, batch_size=8))
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("head.") for k in changed), changed


def test_nan_loss_is_a_training_error():
    x, y = _toy(16, 0)
    x[0, 0, 0] = np.nan
    with pytest.raises(TrainingError, match="loss is nan"):
        fit(_model(), (x, y), _toy(8, 1), FitConfig(epochs=1, batch_size=16))


def test_load_backbone_checks_keys_and_shapes():
    src = create_model("resnet1d18", in_channels=12, num_classes=5, base_width=4)
    dst = create_model("resnet1d18", in_channels=12, num_classes=3, base_width=4)
    load_backbone(dst, src.state_dict(), dst.classifier_prefixes)
    assert torch.equal(dst.state_dict()["stem.conv.weight"], src.state_dict()["stem.conv.weight"])
    one_lead = create_model("resnet1d18", in_channels=1, num_classes=3, base_width=4)
    with pytest.raises(TrainingError, match="shapes differ"):
        load_backbone(one_lead, src.state_dict(), one_lead.classifier_prefixes)
    with pytest.raises(TrainingError, match="missing"):
        load_backbone(dst, {"x": torch.zeros(1)}, dst.classifier_prefixes)


def test_stage_learning_rates_scale_groups_and_zero_freezes():
    from study.training.loop import _param_groups

    model = _model()
    groups = _param_groups(model, FitConfig(lr=1e-3, stage_lr={"stem": 0.0, "stages.0": 0.1}))
    lrs = sorted(g["lr"] for g in groups)
    assert lrs == pytest.approx([1e-4, 1e-3])
    assert not any(p.requires_grad for p in model.stem.parameters())  # rate 0 freezes
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert not {id(p) for p in model.stem.parameters()} & in_groups
    assert {id(p) for p in model.stages[0].parameters()} <= in_groups
    # a fit with it moves stages.0 but never the stem
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(
        model,
        _toy(32, 0),
        _toy(16, 1),
        FitConfig(epochs=1, batch_size=8, stage_lr={"stem": 0.0, "stages.0": 0.1}),
    )
    after = model.state_dict()
    assert all(
        torch.equal(before[k], after[k])
        for k in before
        if k.startswith("stem.") and "num_batches" not in k and "running" not in k
    )
    assert not torch.equal(before["stages.0.0.conv1.weight"], after["stages.0.0.conv1.weight"])
    with pytest.raises(TrainingError, match="freeze groups: stem, stages.0"):
        _param_groups(_model(), FitConfig(stage_lr={"layer9": 0.1}))


def _weight(y: np.ndarray, cfg: FitConfig):
    from study.training.loop import class_weight

    rows = ArrayRows(np.zeros((len(y), 1, 4), dtype=np.float32), y)
    return class_weight(objective(cfg.task), rows, cfg)


def test_weighted_bce_weights_rare_positives():
    y = np.array([[1, 0], [0, 0], [0, 0], [0, 1]], dtype=np.float32)
    y[:, 1] = [1, 1, 1, 0]
    w = _weight(y, FitConfig(loss="weighted_bce"))
    assert w.tolist() == pytest.approx([3.0, 1 / 3])  # negatives / positives
    assert _weight(y, FitConfig(loss="bce")) is None
    w0 = _weight(np.zeros((4, 1), dtype=np.float32), FitConfig(loss="weighted_bce"))
    assert w0.tolist() == [1.0]


def test_weighted_loss_of_single_label_and_per_sample_tasks():
    # one-hot, 3 classes: counts 2, 1, 0 of 3 records -> 3 / (3 * count), absent -> 0
    y = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)
    w = _weight(y, FitConfig(loss="weighted_bce", task="single_label"))
    assert w.tolist() == pytest.approx([0.5, 1.0, 0.0])
    # per-sample masks: 2 positive samples of 8 -> one weight 6 / 2
    m = np.zeros((2, 4), dtype=np.float32)
    m[0, 1] = m[1, 2] = 1
    w = _weight(m, FitConfig(loss="weighted_bce", task="per_sample"))
    assert w.tolist() == pytest.approx([3.0])


def test_deterministic_mode_gives_identical_runs_and_options_are_checked():
    cfg = FitConfig(
        epochs=2,
        batch_size=16,
        deterministic=True,
        optimizer="sgd",
        schedule="constant",
        loss="weighted_bce",
    )
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(fit(_model(), _toy(48, 0), _toy(16, 1), cfg).history)
    torch.use_deterministic_algorithms(False)
    assert [h["val_loss"] for h in runs[0]] == [h["val_loss"] for h in runs[1]]
    for bad, msg in (
        (dict(optimizer="lamb"), "optimizer\n  Input should be 'adamw' or 'sgd'"),
        (dict(schedule="poly"), "schedule\n  Input should be 'cosine' or 'constant'"),
        (dict(loss="focal"), "loss\n  Input should be 'bce' or 'weighted_bce'"),
    ):
        with pytest.raises(ValidationError, match=msg):
            FitConfig(epochs=1, **bad)


def test_single_label_task_learns_with_cross_entropy_and_argmax_metrics():
    rng = np.random.default_rng(0)

    def data(n):
        x = rng.normal(size=(n, 1, 64)).astype(np.float32)
        cls = rng.integers(0, 3, n)
        x[:, 0, :] += (cls[:, None] - 1) * 3.0  # the class shifts the mean
        return x, np.eye(3, dtype=np.float32)[cls]

    train, val = data(120), data(60)
    cfg = FitConfig(epochs=6, batch_size=16, lr=3e-3, patience=10, task="single_label")
    torch.manual_seed(0)
    model = create_model("resnet1d18", in_channels=1, num_classes=3, base_width=4)
    result = fit(model, train, val, cfg)
    first, best = result.history[0], result.history[result.best_epoch - 1]
    assert best["val_loss"] < first["val_loss"]
    assert best["val_macro_f1"] > 0.6  # chance is 1/3
    model.load_state_dict(result.best_state)
    p = predict(model, val[0], task="single_label")
    assert p.shape == (60, 3) and np.allclose(p.sum(axis=1), 1, atol=1e-5)


def test_per_sample_task_trains_a_unet_on_masks():
    rng = np.random.default_rng(1)

    def data(n):
        x = rng.normal(scale=0.1, size=(n, 1, 128)).astype(np.float32)
        m = np.zeros((n, 128), dtype=np.float32)
        for i in range(n):
            for c in rng.choice(np.arange(8, 120), 3, replace=False):
                x[i, 0, c - 2 : c + 3] += 2.0
                m[i, c - 2 : c + 3] = 1
        return x, m

    train, val = data(48), data(16)
    cfg = FitConfig(epochs=5, batch_size=8, lr=5e-3, patience=10, task="per_sample")
    torch.manual_seed(0)
    model = create_model("unet1d", in_channels=1, num_classes=1, base_width=4, depth=2)
    result = fit(model, train, val, cfg)
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert np.isnan(result.history[0]["val_macro_auroc"])
    p = predict(model, val[0], task="per_sample")
    assert p.shape == (16, 128) and ((0 <= p) & (p <= 1)).all()


def test_unknown_task_and_predict_for_a_loss_task_fail_clearly():
    with pytest.raises(TrainingError, match="task must be one of"):
        fit(_model(), _toy(8), _toy(8), FitConfig(epochs=1, task="segmentation"))
    with pytest.raises(TrainingError, match="not 'contrastive' outputs"):
        predict(_model(), _toy(4)[0], task="contrastive")


def test_single_label_metrics_by_hand():
    from study.training.metrics import single_label_metrics

    y = np.eye(3)[[0, 0, 1, 2]]
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.5, 0.2, 0.3]])
    m = single_label_metrics(y, p)
    # predictions 0, 1, 1, 0: F1 class0 = 2*1/(2+1+1)=0.5, class1 = 2*1/(2+1+0)=2/3, class2 = 0
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert m["weighted_f1"] == pytest.approx((2 * 0.5 + 1 * 2 / 3 + 0) / 4)
