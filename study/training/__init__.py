"""Training layer: a plain PyTorch loop, objectives and pretraining tasks, metrics and
checkpoint (de)serialisation; no Ray."""

from study.training.checkpoint import load_state_bytes, state_to_bytes
from study.training.config import FitConfig, TrainOptions
from study.training.data import ArrayRows
from study.training.loop import FitResult, evaluate, fit, seed_everything
from study.training.metrics import choose_thresholds, classification_metrics
from study.training.tasks import (
    OBJECTIVES,
    PRETRAIN_TASKS,
    objective,
    predict,
    pretrain_task,
    score_split,
)

__all__ = [
    "ArrayRows",
    "FitConfig",
    "FitResult",
    "TrainOptions",
    "OBJECTIVES",
    "PRETRAIN_TASKS",
    "objective",
    "pretrain_task",
    "evaluate",
    "fit",
    "predict",
    "score_split",
    "seed_everything",
    "choose_thresholds",
    "classification_metrics",
    "state_to_bytes",
    "load_state_bytes",
]
