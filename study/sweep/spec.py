"""The experiment spec: YAML validated into frozen, typed config objects.

Unknown keys, wrong types and impossible values fail at load time with a message that names
the key, the rule and the value, before anything runs. Nothing past this module reads a raw
config dict.

The pydantic models here are the schema alone: shapes, types and values. What a spec means
against the registries (known datasets, architectures and their options, tasks that fit an
architecture, freeze depths an architecture has) is checked in one place,
`study.sweep.resolve.check_spec`; `study.sweep.load` reads a file through both.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from study.data.config import DatasetConfig
from study.sweep.search_spec import SearchSpec
from study.training.config import TrainOptions

__all__ = [
    "Spec",
    "ArchitectureSpec",
    "PretrainSpec",
    "FinetuneSpec",
    "ExecutionSpec",
    "SearchSpec",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


def architecture_label(name: str, options: dict[str, Any]) -> str:
    """A readable name that tells options apart ("resnet1d18[base_width=16]"): the
    architecture column of every result row."""
    if not options:
        return name
    opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{name}[{opts}]"


class ArchitectureSpec(_Strict):
    """One architecture of the grid and the options its factory takes."""

    name: str  # a name of study.models.list_models() (checked by resolve.check_spec)
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return architecture_label(self.name, self.options)


class PretrainSpec(TrainOptions):
    """Pretraining on each upstream dataset: one Ray Train (DDP) run per (architecture,
    upstream, task). The training options and their defaults are TrainOptions'."""

    # One task, or a list of them (an axis of the grid: each is pretrained and fine-tuned);
    # names of study.training.tasks.PRETRAIN_TASKS (see README).
    task: str | list[str] = "classification"
    # Options of a task's pretext module, by task (e.g. {future: {context_windows: 4}}).
    task_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    num_workers: int = Field(2, ge=1)  # DDP workers; one GPU each when use_gpu
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    # Pretraining runs at once, at most; beyond the first, a run starts only while the
    # cluster has free CPUs (and GPUs) for its whole worker group.
    max_concurrent: int = Field(4, ge=1)
    # Pretraining seeds per (architecture, upstream, task): with P > 1, fine-tuning repeat r
    # starts from pretraining seed r mod P, so the spread of the gain over repeats includes
    # the pretraining seed; 1 pretrains once (seed 0 is the same unit at any P).
    repeats: int = Field(1, ge=1)

    @field_validator("task")
    @classmethod
    def _tasks(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("needs at least one task")
            if len(set(v)) != len(v):
                raise ValueError(f"tasks must be distinct, got {v}")
        return v

    @property
    def tasks(self) -> list[str]:
        """The pretraining tasks, as a list."""
        return list(self.task) if isinstance(self.task, list) else [self.task]

    def train_options(self) -> TrainOptions:
        """The options that train a pretraining unit (part of its id)."""
        return TrainOptions(**{k: getattr(self, k) for k in TrainOptions.model_fields})


class FinetuneSpec(TrainOptions):
    """The fine-tuning and from-scratch grid, one Ray task per unit. The training
    options are TrainOptions', with longer training and smaller batches by default."""

    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    # ints, or "all": every freeze group frozen, only the head trains (a linear probe for
    # most architectures, the two-layer MLP head for resnet1d*; see the README's Models)
    freeze_depths: list[int | Literal["all"]] = Field(default_factory=lambda: [0])
    data_fractions: list[float] = Field(default_factory=lambda: [1.0])
    repeats: int = Field(10, ge=1)
    # The validation split of a unit at data fraction f: "full" (the whole split, at every
    # fraction) or "match" (its patients subsampled with the same f: stratified, nested,
    # seeded by the repeat, shared by both arms), so that at 1% of the data early stopping
    # and thresholds are not chosen on ten times more records than were trained on.
    val_fraction: Literal["full", "match"] = "full"
    scratch: bool = True  # also run the from-scratch arm (the paired control)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)  # fractional GPUs share one card between trials
    max_concurrent: int | None = Field(None, ge=1)

    @field_validator("stage_lr")
    @classmethod
    def _stage_lr(cls, v):
        for k, m in (v or {}).items():
            if m < 0:
                raise ValueError(f"every stage_lr multiplier must be >= 0, got {k}: {m}")
        return v

    @field_validator("data_fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("needs at least one data fraction")
        for f in v:
            if not 0.0 < f <= 1.0:
                raise ValueError(f"every data fraction must be in (0, 1], got {f}")
        if len(set(v)) != len(v):
            raise ValueError(f"data fractions must be distinct, got {v}")
        return sorted(v)

    @field_validator("freeze_depths")
    @classmethod
    def _depths(cls, v: list) -> list:
        if not v:
            raise ValueError("needs at least one freeze depth")
        for d in v:
            if d != "all" and d < 0:
                raise ValueError(f"every freeze depth must be >= 0 or 'all', got {d}")
        return v

    def train_options(self, pretrained: bool) -> TrainOptions:
        """The options that train a fine-tuning unit (`pretrained`) or a from-scratch one:
        the control arm trains every layer at the one learning rate, so per-stage rates
        (0 = frozen) belong to the pretrained arm only."""
        options = {k: getattr(self, k) for k in TrainOptions.model_fields}
        if not pretrained:
            options["stage_lr"] = None
        return TrainOptions(**options)


class ExecutionSpec(_Strict):
    """How the sweep is run (never part of a unit's identity)."""

    # Units submitted to Ray at once (the scheduler's window, refilled as units end): more
    # than the cluster's slots, so that an autoscaler sees the demand and idle slots fill at
    # once; bounded, so that the driver's memory does not grow with the study.
    max_in_flight: int = Field(256, ge=1)
    max_failures: int = Field(1, ge=0)  # retries of a failing unit within one run
    worker_start_timeout_s: float = Field(600.0, gt=0)  # give up placing DDP workers after this
    # DataLoader worker processes per training process, reading batches ahead (0: the
    # training process reads them itself; raise it on GPU nodes where reading keeps the GPU
    # waiting). Never changes a result.
    loader_workers: int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, v):
        # `tune_chunk_size` (fine-tuning in Tune experiments of that many units) went with
        # the streaming scheduler; studies stored before still load.
        if isinstance(v, dict) and "tune_chunk_size" in v:
            v = {k: x for k, x in v.items() if k != "tune_chunk_size"}
        return v


class Spec(_Strict):
    """A whole study."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    seed: int = 0
    architectures: list[ArchitectureSpec]
    upstream: list[str]
    downstream: list[str]
    # A dataset in both roles: "exclude" its self-pairing, or "patient_disjoint": split it
    # by patient for the whole study (pretraining on folds 1-4, downstream training on 5-8).
    self_pairs: Literal["exclude", "patient_disjoint"] = "exclude"
    # How each dataset is prepared (source folder, label set, preprocessing); a real dataset
    # needs at least its source, a synthetic one needs no entry.
    datasets: dict[str, DatasetConfig] = Field(default_factory=dict)
    pretrain: PretrainSpec = Field(default_factory=PretrainSpec)
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec)
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)
    # A hyperparameter search per group of units before they run (issue 11); None: every
    # unit trains with the fixed options of `pretrain` / `finetune`.
    search: SearchSpec | None = None

    @field_validator("architectures", mode="before")
    @classmethod
    def _arch_strings(cls, v):
        if isinstance(v, list):
            return [{"name": a} if isinstance(a, str) else a for a in v]
        return v

    @field_validator("upstream", "downstream")
    @classmethod
    def _datasets(cls, v: list[str]) -> list[str]:
        # (whether each name is a dataset or a variant under `datasets` is checked in _cross)
        if len(set(v)) != len(v):
            raise ValueError(f"datasets must be distinct, got {v}")
        return v

    @field_validator("architectures")
    @classmethod
    def _archs(cls, v: list[ArchitectureSpec]) -> list[ArchitectureSpec]:
        if not v:
            raise ValueError("needs at least one architecture")
        labels = [a.label for a in v]
        if len(set(labels)) != len(labels):
            raise ValueError(f"architectures must be distinct, got {labels}")
        return v

    def dataset_config(self, name: str) -> DatasetConfig:
        """How dataset `name` is prepared (the defaults when the spec says nothing)."""
        return self.datasets.get(name, DatasetConfig())

    def source_name(self, name: str) -> str:
        """The dataset that `name` (a dataset or a variant under `datasets`) reads."""
        return self.dataset_config(name).dataset or name

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()
