"""What a model is trained to do: one object per kind, owning everything that varies by kind.

Two layers of names, each defined once here:

- An *objective* (`OBJECTIVES`) is what the training loop optimises: its loss and class
  weights, the probabilities a model's outputs mean, its validation loss and metrics, the
  labels it needs (a label kind of `study.data.records.LABEL_KINDS`, or none) and the
  models it can train. The five: multi_label, single_label, per_sample, reconstruction,
  contrastive.
- A *pretraining task* (`PRETRAIN_TASKS`) is what a spec names under `pretrain.task`: the
  objective it trains (classification: the upstream's own label kind), the upstream label
  set it reads (beat, rhythm, heart_rate, qrs), the options it takes (future: CPC's), and
  its checks against an architecture.

The training loop, the sweep and the spec ask these objects; none of them branches on a
kind's name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from study.data.frames import FRAME_LABEL_SETS
from study.errors import ConfigError, DataError, TrainingError
from study.training.data import Rows
from study.training.evaluation import score_classification, score_qrs
from study.training.metrics import classification_metrics, single_label_metrics

__all__ = [
    "predict",
    "score_split",
    "Objective",
    "OBJECTIVES",
    "objective",
    "PretrainTask",
    "PRETRAIN_TASKS",
    "pretrain_task",
]

_NAN_METRICS = {k: float("nan") for k in ("macro_auroc", "macro_f1", "weighted_f1")}
_EVAL_BATCH = 256


def _needs(caps: Mapping[str, Any], key: str, value: Any, what: str) -> str | None:
    return None if caps[key] == value else what


class Objective:
    """The base: a supervised objective on one row of logits per record.

    Attributes:
        name: the objective's name (a `FitConfig.task`).
        label_kind: the data label kind it trains on; None when labels are unused.
        scored: whether `predict` and the test metrics apply (not to pretext objectives).
        needs_full_batches: a batch's rows serve each other (contrastive negatives).
    """

    name: str = ""
    label_kind: str | None = None
    scored: bool = True
    # whether a batch's rows serve each other (CPC's negatives): no batch of one in
    # training, and validation in batches of the training size
    needs_full_batches: bool = False

    # --- what it can train ------------------------------------------------------------
    def model_problem(self, caps: Mapping[str, Any]) -> str | None:
        """Why a model with these capabilities (`study.models.model_info`) cannot be
        trained on this objective, or None."""
        if caps["output_kind"] != "record":
            return f"it gives {caps['output_kind']} outputs; {self.name} needs one per record"
        return None

    def check_data(self, label_kind: str, dataset: str) -> None:
        """Raise DataError unless data of `label_kind` can train this objective."""
        if self.label_kind is not None and label_kind != self.label_kind:
            raise DataError(
                f"the {self.name} objective needs {self.label_kind} labels, but {dataset} has "
                f"{label_kind} labels"
            )

    # --- training ---------------------------------------------------------------------
    def train_module(self, model: nn.Module) -> nn.Module:
        """The module whose forward the loop trains (and DDP wraps): the model itself, or
        a router to the part of it this objective trains."""
        return model

    def class_weight(self, rows: Rows) -> np.ndarray:
        """Per-class weights of the weighted loss, from the training rows."""
        raise TrainingError(f"the {self.name} objective has no class-weighted loss")

    def loss(self, weight: torch.Tensor | None) -> Callable:
        """fn(out, x, y) -> the training loss of a batch (weighted by `weight`, if given)."""
        raise NotImplementedError

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """What the model's outputs mean as probabilities."""
        return torch.sigmoid(logits.float())

    def find_unused_parameters(self) -> bool:
        """Whether DDP must allow parameters that get no gradient (a decoder-only pass)."""
        return False

    # --- validation -------------------------------------------------------------------
    def evaluate(
        self, net: nn.Module, rows: Rows, device: str, batch_size: int
    ) -> tuple[float, dict[str, float]]:
        """(loss, metrics) of `net` (the train_module) on `rows`, in eval mode: the loss
        unweighted, whatever the training loss, so epochs compare on one scale."""
        p = predict(net, rows, device=device, task=self.name)
        return self.val_loss(rows.labels, p), self.val_metrics(rows.labels, p)

    def val_loss(self, y: np.ndarray, p: np.ndarray) -> float:
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())

    def val_metrics(self, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
        return classification_metrics(y, p)

    # --- test -------------------------------------------------------------------------
    def score(
        self,
        classes: Sequence[str],
        val: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
        *,
        class_codes: Mapping[str, Sequence[str]] | None = None,
        fs: float | None = None,
        beats: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    ) -> dict:
        """The test metrics of one model, every decision rule chosen on validation
        (study.training.evaluation).

        Args:
            classes: the label set's classes, in column order.
            val, test: (targets, probabilities) of the validation and test splits.
            class_codes: class -> SNOMED-CT codes, for the challenge metric.
            fs: the sampling rate (per-sample objectives).
            beats: reference QRS positions of each (val, test) record (per-sample).

        Returns:
            Column name (without "test_") -> value, and `thresholds`.
        """
        return score_classification(self.name, classes, *val, *test, class_codes)


class MultiLabel(Objective):
    """Multi-hot labels (N, K): BCE on the logits; sigmoid probabilities."""

    name = "multi_label"
    label_kind = "multi_label"

    def class_weight(self, rows: Rows) -> np.ndarray:
        # positive weight negatives / positives per class (1 for a class without positives)
        y = rows.labels
        pos = y.sum(axis=0)
        return np.where(pos > 0, (len(y) - pos) / np.maximum(pos, 1), 1.0)

    def loss(self, weight: torch.Tensor | None) -> Callable:
        fn = nn.BCEWithLogitsLoss(pos_weight=weight)
        return lambda out, x, y: fn(out.float(), y)


class SingleLabel(Objective):
    """One class per record (one-hot labels): softmax cross-entropy; arg-max metrics."""

    name = "single_label"
    label_kind = "single_label"

    def class_weight(self, rows: Rows) -> np.ndarray:
        # n / (K * count) per class: scikit-learn's "balanced" (0 for an absent class)
        y = rows.labels
        count = y.sum(axis=0)
        return np.where(count > 0, len(y) / (y.shape[1] * np.maximum(count, 1)), 0.0)

    def loss(self, weight: torch.Tensor | None) -> Callable:
        fn = nn.CrossEntropyLoss(weight=weight)
        return lambda out, x, y: fn(out.float(), y.argmax(dim=1))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=1)

    def val_loss(self, y: np.ndarray, p: np.ndarray) -> float:
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return float(-np.log((p * y).sum(axis=1)).mean())

    def val_metrics(self, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
        return single_label_metrics(y, p)


class PerSample(Objective):
    """A target per sample (N, L) (QRS masks): BCE on logits (N, 1, L); sigmoid per sample."""

    name = "per_sample"
    label_kind = "per_sample"

    def model_problem(self, caps: Mapping[str, Any]) -> str | None:
        return _needs(
            caps, "output_kind", "per_sample", "it gives one output per record, not per sample"
        )

    def class_weight(self, rows: Rows) -> np.ndarray:
        # one positive weight: negative / positive samples over the whole training set
        pos, total = rows.targets_sum()
        return np.array([(total - pos) / pos if pos > 0 else 1.0])

    def loss(self, weight: torch.Tensor | None) -> Callable:
        fn = nn.BCEWithLogitsLoss(pos_weight=weight)
        return lambda out, x, y: fn(out.float().squeeze(1), y)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.float()).squeeze(1)  # (N, 1, L) -> (N, L)

    def score(self, classes, val, test, *, class_codes=None, fs=None, beats=None) -> dict:
        if fs is None or beats is None:
            raise DataError("QRS scoring needs the sampling rate and the reference beats")
        return score_qrs(val[1], beats[0], test[1], beats[1], fs)

    @torch.no_grad()
    def evaluate(self, net, rows, device, batch_size):
        # streamed: the (N, L) probabilities of a large split are never all in memory
        net.eval()
        total, count = 0.0, 0
        for xb, yb in rows.batches(_EVAL_BATCH):
            out = net(torch.from_numpy(np.ascontiguousarray(xb)).to(device))
            p = np.clip(self.probabilities(out).cpu().numpy(), 1e-7, 1 - 1e-7)
            total += float(-(yb * np.log(p) + (1 - yb) * np.log(1 - p)).sum())
            count += yb.size
        return total / max(count, 1), dict(_NAN_METRICS)


class _Reconstructor(nn.Module):
    """Routes forward() to model.reconstruct, so DDP sees reconstruction as the forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not hasattr(model, "reconstruct"):
            raise TrainingError(f"{type(model).__name__} cannot reconstruct its input")
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.reconstruct(x)


class _Pretext(Objective):
    """An objective with no test metrics: its model is kept for fine-tuning."""

    scored = False

    def score(self, classes, val, test, **context) -> dict:
        raise ConfigError(f"no test metrics for the {self.name} objective")


class Reconstruction(_Pretext):
    """MSE of model.reconstruct(x) against x; labels unused (autoencoders)."""

    name = "reconstruction"

    def model_problem(self, caps: Mapping[str, Any]) -> str | None:
        if not caps["can_reconstruct"]:
            return "it does not reconstruct its input (an autoencoder such as cae does)"
        return None

    def train_module(self, model: nn.Module) -> nn.Module:
        return _Reconstructor(model)

    def find_unused_parameters(self) -> bool:
        return True  # the classification head takes no part in reconstruction

    def loss(self, weight: torch.Tensor | None) -> Callable:
        fn = nn.MSELoss()
        return lambda out, x, y: fn(out.float(), x)

    @torch.no_grad()
    def evaluate(self, net, rows, device, batch_size):
        net.eval()
        total, count = 0.0, 0
        for xb, _ in rows.batches(_EVAL_BATCH):
            x = torch.from_numpy(np.ascontiguousarray(xb)).to(device)
            total += float(((net(x).float() - x) ** 2).sum())
            count += x.numel()
        return total / max(count, 1), dict(_NAN_METRICS)


class Contrastive(_Pretext):
    """The model's forward returns its own loss (CPC, study.training.cpc); labels unused."""

    name = "contrastive"
    needs_full_batches = True

    def model_problem(self, caps: Mapping[str, Any]) -> str | None:
        return _needs(caps, "input_kind", "signal", f"it takes {caps['input_kind']} input")

    def loss(self, weight: torch.Tensor | None) -> Callable:
        return lambda out, x, y: out.float()

    @torch.no_grad()
    def evaluate(self, net, rows, device, batch_size):
        # Batches of at least `batch_size` rows (a short last batch joins the one before):
        # the negatives come from the other rows of a batch, so a batch of one cannot be
        # scored, and the loss means the same as in training.
        net.eval()
        total, count = 0.0, 0
        for pos in np.array_split(np.arange(len(rows)), max(1, len(rows) // batch_size)):
            x = torch.from_numpy(np.ascontiguousarray(rows.x(pos))).to(device)
            total += float(net(x)) * len(x)
            count += len(x)
        return total / max(count, 1), dict(_NAN_METRICS)


OBJECTIVES: dict[str, Objective] = {
    o.name: o for o in (MultiLabel(), SingleLabel(), PerSample(), Reconstruction(), Contrastive())
}


def objective(name: str) -> Objective:
    """The objective called `name`.

    Raises:
        TrainingError: an unknown name (the message lists the known ones).
    """
    if name not in OBJECTIVES:
        raise TrainingError(f"task must be one of {', '.join(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name]


def score_split(kind: str, classes: Sequence[str], val, test, **context) -> dict:
    """The test metrics of objective `kind` (`Objective.score`)."""
    return objective(kind).score(classes, val, test, **context)


@torch.no_grad()
def predict(
    model: nn.Module,
    data: Rows | np.ndarray,
    batch_size: int = _EVAL_BATCH,
    device: str = "cpu",
    task: str = "multi_label",
) -> np.ndarray:
    """Probabilities of `model` on `data` (rows, or an array of inputs), in eval mode."""
    obj = objective(task)
    if not obj.scored:
        raise TrainingError(f"predict gives class or sample probabilities, not {task!r} outputs")
    model.eval()
    if isinstance(data, np.ndarray):
        chunks = (data[s : s + batch_size] for s in range(0, len(data), batch_size))
    else:
        chunks = (xb for xb, _ in data.batches(batch_size))
    out = [
        obj.probabilities(model(torch.from_numpy(np.ascontiguousarray(xb)).to(device)))
        .cpu()
        .numpy()
        for xb in chunks
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


class PretrainTask:
    """A pretraining task a spec can name (`pretrain.task`).

    Attributes:
        name: its name in a spec.
        paper: whose task it is (for messages and the README).
        objective_name: the objective it trains; None: the upstream's own label kind
            (classification).
        label_set: the upstream label set it trains on (None: the dataset's configured one).
    """

    def __init__(
        self,
        name: str,
        paper: str,
        objective_name: str | None,
        label_set: str | None = None,
    ) -> None:
        self.name = name
        self.paper = paper
        self.objective_name = objective_name
        self.label_set = label_set

    def objective(self, label_kind: str) -> Objective:
        """The objective this task trains on data of `label_kind` (whether the data fits it
        is the objective's `check_data`)."""
        if self.objective_name is None:  # classification: the data's own kind of labels
            return objective(label_kind)
        return objective(self.objective_name)

    def option_names(self) -> list[str]:
        """The options `pretrain.task_options.<name>` may set (none, but for future)."""
        return []

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Raise ConfigError for an option this task does not take."""
        known = self.option_names()
        for key in options:
            if key not in known:
                if not known:
                    raise ConfigError(f"the {self.name} task takes no options, got {key!r}")
                raise ConfigError(
                    f"the {self.name} task has no option {key!r}; known: {', '.join(known)}"
                )

    def architecture_problem(self, caps: Mapping[str, Any], label_kind: str | None) -> str | None:
        """Why an architecture with `caps` cannot pretrain on this task, or None.

        Args:
            label_kind: the upstream's label kind where the task does not fix it.
        """
        obj = objective(self.objective_name or label_kind or "multi_label")
        return obj.model_problem(caps)

    def upstream_options(
        self, options: Mapping[str, Any], framed: bool, task_options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The reader options an upstream is prepared with for this task (`framed`: the
        upstream cuts frames from long records, as icentia11k and cpsc2021 do)."""
        return dict(options)

    def build(self, model: nn.Module, task_options: Mapping[str, Any]) -> nn.Module:
        """The module pretraining trains around `model` (the model itself, or a pretext
        wrapper such as CPC whose `encoder` is the model)."""
        return model


class FutureTask(PretrainTask):
    """Weimann & Conrad's CPC: the options and the input span are CPC's."""

    _LAYOUT = ("window_length", "context_windows", "positive_offset", "context_overlap")

    def option_names(self) -> list[str]:
        from study.training.cpc import CPC

        return [n for n in inspect.signature(CPC).parameters if n != "encoder"]

    def check_options(self, options: Mapping[str, Any]) -> None:
        super().check_options(options)
        from study.training.cpc import cpc_input_length

        cpc_input_length(**{k: options[k] for k in self._LAYOUT if k in options})

    def upstream_options(self, options, framed, task_options):
        if not framed:
            return dict(options)
        from study.training.cpc import cpc_input_length

        # frames of exactly the span CPC reads: its context windows plus the future one
        span = cpc_input_length(**{k: task_options[k] for k in self._LAYOUT if k in task_options})
        return {**options, "frame_len": span}

    def build(self, model: nn.Module, task_options: Mapping[str, Any]) -> nn.Module:
        from study.training.cpc import CPC

        return CPC(model, **task_options)


def _frame_task(name: str) -> PretrainTask:
    s = FRAME_LABEL_SETS[name]
    return PretrainTask(name, "Weimann & Conrad 2021", s.label_kind, label_set=name)


PRETRAIN_TASKS: dict[str, PretrainTask] = {
    t.name: t
    for t in (
        PretrainTask("classification", "Nguyen & Do 2024", None),
        _frame_task("beat"),
        _frame_task("rhythm"),
        _frame_task("heart_rate"),
        FutureTask("future", "Weimann & Conrad 2021", "contrastive"),
        PretrainTask("autoencoder", "Jang et al. 2021", "reconstruction"),
        PretrainTask("qrs", "QRS detection under noise", "per_sample", label_set="qrs"),
    )
}


def pretrain_task(name: str) -> PretrainTask:
    """The pretraining task called `name`.

    Raises:
        ConfigError: an unknown name (the message lists the known ones).
    """
    if name not in PRETRAIN_TASKS:
        raise ConfigError(f"unknown pretraining task {name!r}; known: {', '.join(PRETRAIN_TASKS)}")
    return PRETRAIN_TASKS[name]
