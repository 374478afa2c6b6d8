"""A plain PyTorch fit/evaluate loop: early stopping and model selection on validation.

No Ray here: the loop runs in a plain process, in a Tune trial, or in each DDP worker of a
Ray Train run (it uses torch.distributed when a process group is initialised). Resuming is
the caller's business: `fit` takes the last epoch state and hands each new one to
`on_epoch`, which a caller persists wherever it likes.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from study.errors import TrainingError
from study.training.metrics import classification_metrics

__all__ = ["FitConfig", "FitResult", "fit", "predict", "seed_everything"]


@dataclass(frozen=True)
class FitConfig:
    """How one model is trained."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 5  # epochs without a better validation loss before stopping
    seed: int = 0
    grad_clip: float | None = 1.0
    device: str = "cpu"


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int  # 1-based
    epochs_run: int
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _loader(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, seed: int, epoch: int):
    ds = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    if dist.is_available() and dist.is_initialized() and shuffle:
        sampler = DistributedSampler(ds, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return DataLoader(ds, batch_size=batch_size, sampler=sampler)
    g = torch.Generator().manual_seed(seed * 10_007 + epoch)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256, device: str = "cpu"):
    """Sigmoid probabilities of `model` on `x`, in eval mode."""
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])).to(device)
        out.append(torch.sigmoid(model(xb)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def _val_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def fit(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: FitConfig,
    *,
    resume: dict | None = None,
    on_epoch: Callable[[dict, dict], None] | None = None,
) -> FitResult:
    """Train `model` with BCE on `train`, select the epoch with the lowest validation loss.

    Args:
        model: an ECG model; only its trainable parameters reach the optimizer, so frozen
            stages stay frozen. Under torch.distributed it is wrapped in DDP here.
        train: (signals, multi-hot labels) of the training subset.
        val: the validation split; used for early stopping and selection, never the test.
        cfg: the training configuration.
        resume: a state that an earlier `on_epoch` received; training goes on after it.
        on_epoch: called after each epoch with (state, record): `state` is everything needed
            to resume, `record` the epoch's losses, validation metrics and seconds.

    Returns:
        The best state (by validation loss), its epoch and the per-epoch history.
    """
    distributed = dist.is_available() and dist.is_initialized()
    device = torch.device(cfg.device)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("the model has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    net: nn.Module = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
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
    loss_fn = nn.BCEWithLogitsLoss()
    x_train, y_train = train
    for epoch in range(start_epoch, cfg.epochs):
        if epoch - best["epoch"] >= cfg.patience and best["epoch"] > 0:
            break
        t0 = time.perf_counter()
        net.train()
        total, count = 0.0, 0
        for xb, yb in _loader(x_train, y_train, cfg.batch_size, True, cfg.seed, epoch):
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xb), yb)
            if not torch.isfinite(loss):
                raise TrainingError(f"training loss is {loss.item()} at epoch {epoch + 1}")
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            total += loss.item() * len(xb)
            count += len(xb)
        sched.step()
        p_val = predict(model, val[0], device=cfg.device)
        v_loss = _val_loss(val[1], p_val)
        record = {
            "epoch": epoch + 1,
            "train_loss": total / max(count, 1),
            "val_loss": v_loss,
            **{f"val_{k}": v for k, v in classification_metrics(val[1], p_val).items()},
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
                "fit_config": asdict(cfg),
            }
            on_epoch(state, record)
    return FitResult(
        best_state=best["state"], best_epoch=best["epoch"], epochs_run=len(history), history=history
    )
