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
from study.training.metrics import classification_metrics, single_label_metrics

__all__ = ["TASKS", "FitConfig", "FitResult", "fit", "predict", "evaluate", "seed_everything"]

#: What a model is trained to do, and so its loss and its validation numbers:
#: - multi_label: multi-hot labels (N, K), BCE on the logits; sigmoid probabilities.
#: - single_label: one class per record (one-hot labels (N, K)), softmax cross-entropy.
#: - per_sample: a per-sample target (N, L) (QRS masks), BCE on logits (N, 1, L).
#: - reconstruction: MSE of model.reconstruct(x) against x; labels unused (autoencoders).
#: - contrastive: the model's forward returns its own loss (CPC); labels unused.
TASKS = ("multi_label", "single_label", "per_sample", "reconstruction", "contrastive")
_ALIASES = {"classification": "multi_label"}


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
    optimizer: str = "adamw"  # "adamw" or "sgd" (momentum 0.9, Nesterov)
    schedule: str = "cosine"  # "cosine" (to 0 over `epochs`) or "constant"
    loss: str = "bce"  # "bce" or "weighted_bce" (pos_weight = negatives/positives per class)
    # Learning-rate multiplier per freeze group (e.g. {"stem": 0.0, "stages.0": 0.1}):
    # discriminative fine-tuning; 0 freezes the group's weights (its batch-norm statistics
    # still adapt, exactly as under a zero learning rate). Groups not named train at `lr`.
    stage_lr: dict[str, float] | None = None
    amp: bool = True  # bf16 autocast on CUDA (no effect on CPU)
    channels_last: bool = True  # memory format for 2-D models on CUDA (no effect otherwise)
    deterministic: bool = False  # deterministic kernels (same seed -> same metrics)
    # One of TASKS ("classification" is read as "multi_label"); see TASKS for each loss.
    task: str = "multi_label"

    @property
    def kind(self) -> str:
        """The task, aliases resolved."""
        return _ALIASES.get(self.task, self.task)


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int  # 1-based
    epochs_run: int
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _loader(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    drop_last: bool = False,
):
    ds = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    if dist.is_available() and dist.is_initialized() and shuffle:
        sampler = DistributedSampler(ds, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, drop_last=drop_last)
    g = torch.Generator().manual_seed(seed * 10_007 + epoch)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g, drop_last=drop_last)


def _probabilities(logits: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "single_label":
        return torch.softmax(logits.float(), dim=1)
    if kind == "per_sample":
        return torch.sigmoid(logits.float()).squeeze(1)  # (N, 1, L) -> (N, L)
    return torch.sigmoid(logits.float())


@torch.no_grad()
def predict(
    model: nn.Module,
    x: np.ndarray,
    batch_size: int = 256,
    device: str = "cpu",
    task: str = "multi_label",
):
    """Probabilities of `model` on `x`, in eval mode: sigmoid per class (multi_label),
    softmax over classes (single_label), or sigmoid per sample, (N, L) (per_sample)."""
    kind = _ALIASES.get(task, task)
    if kind not in ("multi_label", "single_label", "per_sample"):
        raise TrainingError(f"predict gives class or sample probabilities, not {task!r} outputs")
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])).to(device)
        out.append(_probabilities(model(xb), kind).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


class _Reconstructor(nn.Module):
    """Routes forward() to model.reconstruct, so DDP sees reconstruction as the forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, "reconstruct"):
            raise TrainingError(f"{type(model).__name__} cannot reconstruct its input")
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.reconstruct(x)


@torch.no_grad()
def reconstruction_loss(
    model: nn.Module, x: np.ndarray, batch_size: int = 256, device: str = "cpu"
) -> float:
    """Mean squared reconstruction error of `model` on `x`, in eval mode."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])).to(device)
        total += float(((model.reconstruct(xb) - xb) ** 2).sum())
        count += xb.numel()
    return total / max(count, 1)


def _is_2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _class_weight(y: np.ndarray, cfg: FitConfig) -> torch.Tensor | None:
    """Class weights of the "weighted_bce" loss (None for plain "bce"), from training labels.

    multi_label: per-class positive weight negatives / positives (1 for an absent class);
    single_label: n / (K * count) per class (scikit-learn's "balanced"; 0 for an absent
    class, which then never counts); per_sample: one positive weight, negative / positive
    samples over the whole training set.
    """
    if cfg.loss == "bce":
        return None
    if cfg.loss != "weighted_bce":
        raise TrainingError(f"loss must be bce or weighted_bce, got {cfg.loss!r}")
    if cfg.kind == "single_label":
        count = y.sum(axis=0)
        w = np.where(count > 0, len(y) / (y.shape[1] * np.maximum(count, 1)), 0.0)
    elif cfg.kind == "per_sample":
        pos = float(y.sum())
        w = np.array([(y.size - pos) / pos if pos > 0 else 1.0])
    else:
        pos = y.sum(axis=0)
        w = np.where(pos > 0, (len(y) - pos) / np.maximum(pos, 1), 1.0)
    return torch.as_tensor(w, dtype=torch.float32)


class _Loss:
    """The training loss of a task, applied to what the (wrapped) network returns."""

    def __init__(self, cfg: FitConfig, y_train: np.ndarray, device: torch.device) -> None:
        self.kind = cfg.kind
        w = None if self.kind in ("reconstruction", "contrastive") else _class_weight(y_train, cfg)
        w = w.to(device) if w is not None else None
        if self.kind == "single_label":
            self.fn = nn.CrossEntropyLoss(weight=w)
        elif self.kind in ("multi_label", "per_sample"):
            self.fn = nn.BCEWithLogitsLoss(pos_weight=w)
        else:
            self.fn = nn.MSELoss()

    def __call__(self, out: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        out = out.float()
        if self.kind == "contrastive":
            return out
        if self.kind == "reconstruction":
            return self.fn(out, xb)
        if self.kind == "single_label":
            return self.fn(out, yb.argmax(dim=1))
        if self.kind == "per_sample":
            return self.fn(out.squeeze(1), yb)
        return self.fn(out, yb)


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


def _val_loss(y: np.ndarray, p: np.ndarray, kind: str = "multi_label") -> float:
    """Unweighted loss of probabilities `p` (cross-entropy for single_label, else BCE)."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    if kind == "single_label":
        return float(-np.log((p * y).sum(axis=1)).mean())
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


_NAN_METRICS = {k: float("nan") for k in ("macro_auroc", "macro_f1", "weighted_f1")}


@torch.no_grad()
def _contrastive_loss(model: nn.Module, x: np.ndarray, batch_size: int, device: str) -> float:
    # Batches of at least `batch_size` rows (a short last batch joins the one before): the
    # negatives come from the other rows of a batch, so a batch of one cannot be scored.
    model.eval()
    total, count = 0.0, 0
    for idx in np.array_split(np.arange(len(x)), max(1, len(x) // batch_size)):
        xb = torch.from_numpy(np.ascontiguousarray(x[idx])).to(device)
        total += float(model(xb)) * len(xb)
        count += len(xb)
    return total / max(count, 1)


def evaluate(
    model: nn.Module,
    data: tuple[np.ndarray, np.ndarray],
    task: str = "multi_label",
    device: str = "cpu",
    batch_size: int = 256,
) -> tuple[float, dict[str, float]]:
    """(loss, metrics) of `model` on `data` in eval mode: what `fit` selects epochs on.

    The loss is unweighted whatever the training loss (so epochs compare on one scale); the
    metrics are macro AUROC, macro F1 (threshold 0.5, or the arg-max class for
    single_label) and support-weighted F1, NaN where a task has none (per_sample,
    reconstruction, contrastive: their own scores are computed on the selected model).
    """
    kind = _ALIASES.get(task, task)
    x, y = data
    if kind == "reconstruction":
        return reconstruction_loss(model, x, batch_size, device), dict(_NAN_METRICS)
    if kind == "contrastive":
        # a contrastive model draws its negatives from the batch: evaluate with the
        # training batch size so the loss means the same as in training
        return _contrastive_loss(model, x, batch_size, device), dict(_NAN_METRICS)
    p = predict(model, x, device=device, task=kind)
    loss = _val_loss(y, p, kind)
    if kind == "per_sample":
        return loss, dict(_NAN_METRICS)
    if kind == "single_label":
        return loss, single_label_metrics(y, p)
    return loss, classification_metrics(y, p)


def fit(
    model: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: FitConfig,
    *,
    resume: dict | None = None,
    on_epoch: Callable[[dict, dict], None] | None = None,
) -> FitResult:
    """Train `model` on `train` for `cfg.task`; select the epoch of lowest validation loss.

    Args:
        model: an ECG model; only its trainable parameters reach the optimizer, so frozen
            stages stay frozen. Under torch.distributed it is wrapped in DDP here.
        train: (inputs, targets) of the training subset: labels (N, K) for multi_label
            and single_label, per-sample targets (N, L) for per_sample; ignored by
            reconstruction and contrastive tasks.
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
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
    groups = _param_groups(model, cfg)
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise TrainingError("the model has no trainable parameters")
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "sgd":
        opt = torch.optim.SGD(
            groups, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay
        )
    else:
        raise TrainingError(f"optimizer must be adamw or sgd, got {cfg.optimizer!r}")
    if cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1))
    elif cfg.schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    else:
        raise TrainingError(f"schedule must be cosine or constant, got {cfg.schedule!r}")
    use_cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and use_cuda)
    if cfg.channels_last and use_cuda and _is_2d(model):
        model.to(memory_format=torch.channels_last)
    if cfg.kind not in TASKS:
        raise TrainingError(f"task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    reconstructing = cfg.kind == "reconstruction"
    # Training goes through forward() so that DDP's gradient hooks fire.
    net: nn.Module = _Reconstructor(model) if reconstructing else model
    if distributed:
        net = nn.parallel.DistributedDataParallel(
            net,
            device_ids=[device.index] if device.type == "cuda" else None,
            # the classification head takes no part in reconstruction (CPC freezes its own)
            find_unused_parameters=reconstructing,
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
    x_train, y_train = train
    loss_fn = _Loss(cfg, y_train, device)
    for epoch in range(start_epoch, cfg.epochs):
        if epoch - best["epoch"] >= cfg.patience and best["epoch"] > 0:
            break
        t0 = time.perf_counter()
        net.train()
        total, count = 0.0, 0
        # a contrastive batch draws its negatives from its other rows: never a batch of one
        drop_last = cfg.kind == "contrastive" and len(x_train) > cfg.batch_size
        for xb, yb in _loader(x_train, y_train, cfg.batch_size, True, cfg.seed, epoch, drop_last):
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
        v_batch = cfg.batch_size if cfg.kind == "contrastive" else 256
        v_loss, val_metrics = evaluate(model, val, cfg.kind, cfg.device, v_batch)
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
                "fit_config": asdict(cfg),
            }
            on_epoch(state, record)
    return FitResult(
        best_state=best["state"], best_epoch=best["epoch"], epochs_run=len(history), history=history
    )
