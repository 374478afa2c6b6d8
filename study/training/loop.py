"""A plain PyTorch fit loop: early stopping and model selection on validation.

No Ray here: the loop runs in a plain process, in a Tune trial, or in each DDP worker of a
Ray Train run (it uses torch.distributed when a process group is initialised). Batches are
read from the prepared dataset's files as they are needed (study.training.data), so a
training process never holds a split in memory. What varies by task (loss, probabilities,
validation numbers) is the objective's (study.training.tasks). Resuming is the caller's
business: `fit` takes the last epoch state and hands each new one to `on_epoch`, which a
caller persists wherever it likes.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from study.errors import TrainingError
from study.training.config import FitConfig
from study.training.data import Rows, as_rows, batch_loader
from study.training.tasks import Objective, objective, predict

__all__ = ["FitConfig", "FitResult", "fit", "predict", "evaluate", "seed_everything"]

_EVAL_BATCH = 256


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int  # 1-based
    epochs_run: int
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _is_2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def class_weight(obj: Objective, rows: Rows, cfg: FitConfig) -> torch.Tensor | None:
    """The class weights of the "weighted_bce" loss (None for plain "bce"), from the
    training rows by the objective's rule."""
    if cfg.loss == "bce":
        return None
    return torch.as_tensor(obj.class_weight(rows), dtype=torch.float32)


def _param_groups(model: nn.Module, cfg: FitConfig) -> list[dict]:
    """Optimizer groups: trainable parameters only, with per-stage learning-rate multipliers.

    A multiplier of 0 freezes its group (requires_grad off, so it never reaches the
    optimizer), which is how the QRS study's "learning rate 0" layers are expressed.
    """
    named = dict(model.named_parameters())
    assigned: set[str] = set()
    groups = []
    for stage, mult in (cfg.stage_lr or {}).items():
        try:
            module = model.get_submodule(stage)
        except AttributeError:
            known = getattr(model, "freeze_groups", ())
            raise TrainingError(
                f"stage_lr names {stage!r}, which the model does not have; its freeze "
                f"groups: {', '.join(known)}"
            ) from None
        if mult < 0:
            raise TrainingError(f"stage_lr[{stage!r}] must be >= 0, got {mult}")
        params = []
        for name, p in module.named_parameters(prefix=stage):
            assigned.add(name)
            if mult == 0:
                p.requires_grad_(False)
            elif p.requires_grad:
                params.append(p)
        if params:
            groups.append({"params": params, "lr": cfg.lr * mult})
    rest = [p for n, p in named.items() if n not in assigned and p.requires_grad]
    if rest:
        groups.append({"params": rest, "lr": cfg.lr})
    return groups


def evaluate(
    model: nn.Module,
    data: Rows | tuple[np.ndarray, np.ndarray],
    task: str = "multi_label",
    device: str = "cpu",
    batch_size: int = _EVAL_BATCH,
) -> tuple[float, dict[str, float]]:
    """(loss, metrics) of `model` on `data` in eval mode: what `fit` selects epochs on.

    The loss is unweighted whatever the training loss (so epochs compare on one scale); the
    metrics are macro AUROC, macro F1 (threshold 0.5, or the arg-max class for
    single_label) and support-weighted F1, NaN where an objective has none (per_sample,
    reconstruction, contrastive: their own scores are computed on the selected model).
    """
    obj = objective(task)
    return obj.evaluate(obj.train_module(model), as_rows(data), device, batch_size)


def _optimizer(groups: list[dict], cfg: FitConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: FitConfig):
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))


def fit(
    model: nn.Module,
    train: Rows | tuple[np.ndarray, np.ndarray],
    val: Rows | tuple[np.ndarray, np.ndarray],
    cfg: FitConfig,
    *,
    resume: dict | None = None,
    on_epoch: Callable[[dict, dict], None] | None = None,
) -> FitResult:
    """Train `model` on `train` for `cfg.task`; select the epoch of lowest validation loss.

    Args:
        model: an ECG model (or a pretext wrapper such as CPC); only its trainable
            parameters reach the optimizer, so frozen stages stay frozen. Under
            torch.distributed it is wrapped in DDP here.
        train: the training rows (a `study.data.Split` read batch by batch, or an (x, y)
            pair of arrays): labels (N, K) for multi_label and single_label, per-sample
            targets (N, L) for per_sample; ignored by reconstruction and contrastive tasks.
            Under torch.distributed each rank trains on its DistributedSampler shard.
        val: the validation rows; used for early stopping and selection, never the test.
        cfg: the training configuration.
        resume: a state that an earlier `on_epoch` received; training goes on after it.
        on_epoch: called after each epoch with (state, record): `state` is everything needed
            to resume, `record` the epoch's losses, validation metrics and seconds.

    Returns:
        The best state (by validation loss), its epoch and the per-epoch history.

    Raises:
        TrainingError: an unknown task, no trainable parameters, or a non-finite loss.
    """
    obj = objective(cfg.task)
    train, val = as_rows(train), as_rows(val)
    distributed = dist.is_available() and dist.is_initialized()
    device = torch.device(cfg.device)
    model.to(device)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
    groups = _param_groups(model, cfg)
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise TrainingError("the model has no trainable parameters")
    opt = _optimizer(groups, cfg)
    sched = _scheduler(opt, cfg)
    use_cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and use_cuda)
    if cfg.channels_last and use_cuda and _is_2d(model):
        model.to(memory_format=torch.channels_last)
    # Training goes through forward() so that DDP's gradient hooks fire.
    net: nn.Module = obj.train_module(model)
    evaluated = net
    if distributed:
        net = nn.parallel.DistributedDataParallel(
            net,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=obj.find_unused_parameters(),
        )
    history: list[dict] = []
    best = {"loss": math.inf, "epoch": 0, "state": copy.deepcopy(model.state_dict())}
    start_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        history = list(resume["history"])
        best = {
            "loss": resume["best_loss"],
            "epoch": resume["best_epoch"],
            "state": resume["best_state"],
        }
        start_epoch = resume["epoch"]
    weight = class_weight(obj, train, cfg)
    loss_fn = obj.loss(weight.to(device) if weight is not None else None)
    # an objective that draws negatives from a batch's other rows never gets a batch of one
    drop_last = obj.needs_full_batches and len(train) > cfg.batch_size
    v_batch = cfg.batch_size if obj.needs_full_batches else _EVAL_BATCH
    for epoch in range(start_epoch, cfg.epochs):
        if epoch - best["epoch"] >= cfg.patience and best["epoch"] > 0:
            break
        t0 = time.perf_counter()
        net.train()
        total, count = 0.0, 0
        loader = batch_loader(
            train,
            cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            epoch=epoch,
            drop_last=drop_last,
            workers=cfg.loader_workers,
            pin_memory=use_cuda,
        )
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with autocast:
                out = net(xb)
            loss = loss_fn(out, xb, yb)
            if not torch.isfinite(loss):
                raise TrainingError(f"training loss is {loss.item()} at epoch {epoch + 1}")
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            total += loss.item() * len(xb)
            count += len(xb)
        sched.step()
        v_loss, val_metrics = obj.evaluate(evaluated, val, cfg.device, v_batch)
        record = {
            "epoch": epoch + 1,
            "train_loss": total / max(count, 1),
            "val_loss": v_loss,
            **{f"val_{k}": v for k, v in val_metrics.items()},
            "lr": sched.get_last_lr()[0],
            "seconds": time.perf_counter() - t0,
        }
        history.append(record)
        if v_loss < best["loss"]:
            best = {"loss": v_loss, "epoch": epoch + 1, "state": copy.deepcopy(model.state_dict())}
        if on_epoch is not None:
            state = {
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "history": history,
                "best_loss": best["loss"],
                "best_epoch": best["epoch"],
                "best_state": best["state"],
                "fit_config": cfg.model_dump(),
            }
            on_epoch(state, record)
    return FitResult(
        best_state=best["state"], best_epoch=best["epoch"], epochs_run=len(history), history=history
    )
