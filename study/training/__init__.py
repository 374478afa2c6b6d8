"""Training layer: a plain PyTorch loop, metrics and checkpoint (de)serialisation; no Ray."""

from study.training.checkpoint import load_state_bytes, state_to_bytes
from study.training.loop import FitConfig, FitResult, fit, predict, seed_everything
from study.training.metrics import choose_thresholds, classification_metrics

__all__ = [
    "FitConfig",
    "FitResult",
    "fit",
    "predict",
    "seed_everything",
    "choose_thresholds",
    "classification_metrics",
    "state_to_bytes",
    "load_state_bytes",
]
