"""How a model is trained: the options every unit's identity includes, each default defined
once, and the run-time settings the loop adds to them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["TrainOptions", "FitConfig"]


class TrainOptions(BaseModel):
    """Training options: part of a unit's id (they change its result).

    The spec's `pretrain` and `finetune` sections are these options (with the fine-tuning
    defaults of epochs and batch size of its own); a unit's `train` holds them resolved.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)  # global: split over the DDP workers of a pretraining run
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(5, ge=1)  # epochs without a better validation loss before stopping
    optimizer: Literal["adamw", "sgd"] = "adamw"  # sgd: momentum 0.9, Nesterov
    schedule: Literal["cosine", "constant"] = "cosine"  # cosine: to 0 over `epochs`
    # weighted_bce: class weights from the training subset (the objective's rule)
    loss: Literal["bce", "weighted_bce"] = "bce"
    grad_clip: float | None = Field(1.0, gt=0)  # gradient-norm clipping
    amp: bool = True  # bf16 autocast on CUDA (no effect on CPU)
    deterministic: bool = False  # deterministic kernels: same seed, same metrics
    # Learning-rate multiplier per freeze group (e.g. {"stem": 0.0, "stages.0": 0.1}):
    # discriminative fine-tuning; 0 freezes the group's weights (its batch-norm statistics
    # still adapt, exactly as under a zero learning rate). Groups not named train at `lr`.
    stage_lr: dict[str, float] | None = None


class FitConfig(TrainOptions):
    """Everything `fit` needs: the training options, the seed and where to run.

    The run-time fields (device, channels_last, loader_workers) never change a result.
    """

    seed: int = 0
    device: str = "cpu"
    task: str = "multi_label"  # an objective of study.training.tasks.OBJECTIVES
    channels_last: bool = True  # memory format for 2-D models on CUDA (no effect otherwise)
    loader_workers: int = Field(0, ge=0)  # DataLoader worker processes reading batches
