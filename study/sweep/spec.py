"""The experiment spec: YAML validated into frozen, typed config objects.

Unknown keys, wrong types and impossible values fail at load time with a message that names
the key, the rule and the value, before anything runs. Nothing past this module reads a raw
config dict.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from study.data._sources import is_synthetic
from study.data.config import DatasetConfig
from study.errors import ConfigError

__all__ = ["Spec", "ArchitectureSpec", "load_spec", "parse_spec", "spec_to_yaml"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ArchitectureSpec(_Strict):
    """One architecture of the grid and the options its factory takes."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from study.models import list_models

        if v not in list_models():
            raise ValueError(f"unknown architecture {v!r}; known: {', '.join(list_models())}")
        return v

    @property
    def label(self) -> str:
        """A readable name that tells options apart ("resnet1d18[base_width=16]")."""
        if not self.options:
            return self.name
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.name}[{opts}]"


class _TrainingOptions(_Strict):
    """Options shared by pretraining and fine-tuning (all part of a unit's identity)."""

    optimizer: Literal["adamw", "sgd"] = "adamw"
    schedule: Literal["cosine", "constant"] = "cosine"
    loss: Literal["bce", "weighted_bce"] = "bce"  # weighted: negatives/positives per class
    grad_clip: float | None = Field(1.0, gt=0)
    amp: bool = True  # bf16 autocast on CUDA; no effect on CPU
    deterministic: bool = False  # deterministic kernels: same seed, same metrics


#: Pretraining tasks (see README): what a pretraining unit optimises.
#: - classification: the upstream dataset's own labels (Nguyen & Do);
#: - beat, rhythm, heart_rate: Weimann & Conrad's frame labels (the upstream is prepared
#:   with the label set of that name: icentia11k, cpsc2021);
#: - future: contrastive prediction of future frames (their CPC task), labels unused;
#: - autoencoder: reconstruct the upstream signals, labels unused (Jang et al.);
#: - qrs: per-sample QRS segmentation (the upstream prepared with label set "qrs").
Task = Literal["classification", "beat", "rhythm", "heart_rate", "future", "autoencoder", "qrs"]
#: The CPC options that set the span of one input row.
_CPC_LAYOUT = ("window_length", "context_windows", "positive_offset", "context_overlap")
#: Tasks whose labels are the upstream dataset's label set of the same name.
LABEL_SET_TASKS = ("beat", "rhythm", "heart_rate", "qrs")


class PretrainSpec(_TrainingOptions):
    """Pretraining on each upstream dataset: one Ray Train (DDP) run per (architecture,
    upstream, task)."""

    # One task, or a list of them (an axis of the grid: each is pretrained and fine-tuned).
    task: Task | list[Task] = "classification"
    # Options of a task's pretext module, by task (e.g. {future: {steps: 4}}); only the
    # `future` task takes any (study.training.cpc.CPC).
    task_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(5, ge=1)
    num_workers: int = Field(2, ge=1)  # DDP workers; one GPU each when use_gpu
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    max_concurrent: int = Field(1, ge=1)  # pretraining runs at once (a cluster can hold more)

    @field_validator("task")
    @classmethod
    def _tasks(cls, v):
        if isinstance(v, list):
            if not v:
                raise ValueError("needs at least one task")
            if len(set(v)) != len(v):
                raise ValueError(f"tasks must be distinct, got {v}")
        return v

    @field_validator("task_options")
    @classmethod
    def _task_options(cls, v):
        import inspect

        from study.training.cpc import CPC

        known = [n for n in inspect.signature(CPC).parameters if n != "encoder"]
        for task, options in v.items():
            if task != "future":
                raise ValueError(f"only the future task takes options, got options for {task!r}")
            for name in options:
                if name not in known:
                    raise ValueError(
                        f"pretrain.task_options.future: unknown option {name!r}; "
                        f"known: {', '.join(known)}"
                    )
        return v

    @property
    def tasks(self) -> list[str]:
        """The pretraining tasks, as a list."""
        return list(self.task) if isinstance(self.task, list) else [self.task]


class FinetuneSpec(_TrainingOptions):
    """The fine-tuning and from-scratch grid, one Ray Tune trial per unit."""

    freeze_depths: list[int | Literal["all"]] = Field(default_factory=lambda: [0])
    data_fractions: list[float] = Field(default_factory=lambda: [1.0])
    repeats: int = Field(10, ge=1)
    scratch: bool = True  # also run the from-scratch arm (the paired control)
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(5, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)  # fractional GPUs share one card between trials
    max_concurrent: int | None = Field(None, ge=1)
    # Learning-rate multiplier per freeze group, e.g. {stem: 0.0, stages.0: 0.1}
    # (discriminative fine-tuning; 0 freezes the group, as in the QRS study).
    stage_lr: dict[str, float] | None = None

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


class ExecutionSpec(_Strict):
    """How the sweep is run (never part of a unit's identity)."""

    tune_chunk_size: int = Field(500, ge=1)  # trials per Tune experiment (driver memory)
    max_failures: int = Field(1, ge=0)  # retries of a failing unit within one run
    worker_start_timeout_s: float = Field(600.0, gt=0)  # give up placing DDP workers after this


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

    @model_validator(mode="after")
    def _cross(self) -> Spec:
        from study.data import list_datasets
        from study.data.readers import READERS
        from study.models import model_info

        if not self.downstream:
            raise ValueError("downstream: needs at least one dataset")
        known = list_datasets()
        for role in ("upstream", "downstream"):
            for name in getattr(self, role):
                if name not in known and name not in self.datasets:
                    raise ValueError(
                        f"{role}: unknown dataset {name!r}; known: {', '.join(known)} (or a "
                        f"variant: datasets.{name}.dataset names the dataset it varies)"
                    )
        for name, cfg in self.datasets.items():
            if cfg.dataset is not None and cfg.dataset not in known:
                raise ValueError(
                    f"datasets.{name}.dataset: unknown dataset {cfg.dataset!r}; known: "
                    f"{', '.join(known)}"
                )
            if cfg.dataset is None and name not in known:
                raise ValueError(
                    f"datasets.{name}: {name} is not a dataset; a variant needs `dataset:` "
                    f"naming the dataset it varies (known: {', '.join(known)})"
                )
            if cfg.dataset is not None and name in known and cfg.dataset != name:
                raise ValueError(
                    f"datasets.{name}.dataset: {name} is itself a dataset; give the variant "
                    "a name of its own"
                )
        used = set(self.upstream) | set(self.downstream)
        for name in sorted(set(self.datasets) - used):
            raise ValueError(
                f"datasets.{name}: not an upstream or downstream dataset of this "
                f"study (used: {', '.join(sorted(used))})"
            )
        for alias in sorted(used):
            cfg, name = self.dataset_config(alias), self.source_name(alias)
            if is_synthetic(name):
                if cfg.source or cfg.label_set or cfg.options:
                    raise ValueError(
                        f"datasets.{alias}: a synthetic dataset takes no source, "
                        "label_set or options"
                    )
                continue
            if cfg.source is None:
                raise ValueError(
                    f"datasets.{alias}.source: {name} is a real dataset; give the "
                    f"folder it was downloaded to (`study data download {name} DIR`)"
                )
            sets = READERS.get(name).label_sets
            if cfg.label_set is not None and sets and cfg.label_set not in sets:
                raise ValueError(
                    f"datasets.{alias}.label_set: unknown label set "
                    f"{cfg.label_set!r}; known: {', '.join(sets)}"
                )
        for arch in self.architectures:
            try:
                info = model_info(arch.name, **arch.options)
            except ConfigError as e:
                raise ValueError(f"architectures: {e}") from None
            max_depth = info["max_freeze_depth"]
            self._check_architecture(arch.name, info)
            groups = model_info(arch.name, **arch.options)["freeze_groups"]
            for stage in self.finetune.stage_lr or {}:
                if stage not in groups:
                    raise ValueError(
                        f"finetune.stage_lr: {arch.name} has no stage {stage!r}; its freeze "
                        f"groups: {', '.join(groups)}"
                    )
            for d in self.finetune.freeze_depths:
                if d != "all" and d > max_depth:
                    raise ValueError(
                        f"finetune.freeze_depths: freeze_depth must be <= {max_depth} "
                        f"for {arch.name}, got {d}"
                    )
        return self

    def _check_architecture(self, name: str, info: dict) -> None:
        """Each architecture fits every task and every dataset's input of the study."""
        from study.data.readers import READERS

        for task in self.pretrain.tasks if self.upstream else []:
            if task == "autoencoder" and not info["can_reconstruct"]:
                raise ValueError(
                    f"pretrain.task: autoencoder pretraining needs an architecture that "
                    f"reconstructs its input (cae); {name} does not"
                )
            if task == "qrs" and info["output_kind"] != "per_sample":
                raise ValueError(
                    f"pretrain.task: qrs segmentation needs a per-sample architecture "
                    f"(unet1d); {name} gives one output per record"
                )
            if task != "qrs" and info["output_kind"] == "per_sample":
                raise ValueError(
                    f"pretrain.task: {name} gives per-sample outputs; it pretrains on the "
                    f"qrs task only, not {task!r}"
                )
            if task == "future" and info["input_kind"] != "signal":
                raise ValueError(
                    f"pretrain.task: the future (CPC) task encodes signals; {name} "
                    f"takes {info['input_kind']} input"
                )
            if task in LABEL_SET_TASKS:
                for alias in self.upstream:
                    up = self.source_name(alias)
                    sets = () if is_synthetic(up) else READERS.get(up).label_sets
                    if task not in sets:
                        raise ValueError(
                            f"pretrain.task: the {task} task trains on the upstream label set "
                            f"{task!r}, which {up} does not have (datasets with it: "
                            f"{', '.join(_datasets_with_label_set(task)) or 'none'})"
                        )
        for ds in sorted(set(self.upstream) | set(self.downstream)):
            image = getattr(self.dataset_config(ds).preprocessing, "scalogram", None) is not None
            if info["input_kind"] == "image" and not image:
                raise ValueError(
                    f"architectures: {name} takes scalogram images; give datasets.{ds}."
                    f"preprocessing.scalogram so that {ds} is prepared as images"
                )
            if info["input_kind"] == "signal" and image:
                raise ValueError(
                    f"architectures: {name} takes signals, but datasets.{ds} is prepared as "
                    "scalogram images (preprocessing.scalogram)"
                )

    def dataset_config(self, name: str) -> DatasetConfig:
        """How dataset `name` is prepared (the defaults when the spec says nothing)."""
        return self.datasets.get(name, DatasetConfig())

    def source_name(self, name: str) -> str:
        """The dataset that `name` (a dataset or a variant under `datasets`) reads."""
        return self.dataset_config(name).dataset or name

    def upstream_config(self, name: str, task: str) -> DatasetConfig:
        """How upstream `name` is prepared for pretraining `task`.

        A task named after a label set (beat, rhythm, heart_rate, qrs) trains on that label
        set. The future (CPC) task on a dataset cut into frames (icentia11k, cpsc2021) takes
        frames of exactly the span CPC reads: its context windows plus the future one
        (`study.training.cpc.cpc_input_length` of its task options).
        """
        from study.data.readers import READERS

        cfg, source = self.dataset_config(name), self.source_name(name)
        if task in LABEL_SET_TASKS:
            return cfg.model_copy(update={"label_set": task})
        if task == "future" and not is_synthetic(source):
            if getattr(READERS.get(source), "frame_label_sets", None):
                from study.training.cpc import cpc_input_length

                opts = self.pretrain.task_options.get("future", {})
                span = cpc_input_length(
                    **{k: opts[k] for k in _CPC_LAYOUT if k in opts},
                )
                options = {**cfg.options, "frame_len": span}
                return cfg.model_copy(update={"options": options})
        return cfg

    def freeze_depths_for(self, arch: ArchitectureSpec) -> list[int]:
        """The resolved freeze depths of `arch` ("all" = every stage: a linear probe)."""
        from study.models import model_info

        max_depth = model_info(arch.name, **arch.options)["max_freeze_depth"]
        return sorted({max_depth if d == "all" else int(d) for d in self.finetune.freeze_depths})

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()


def _datasets_with_label_set(label_set: str) -> list[str]:
    from study.data.readers import READERS

    return [n for n in READERS.names() if label_set in READERS.get(n).label_sets]


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid experiment spec {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            parent = _model_at(Spec, e["loc"][:-1])
            if parent is not None:
                msg += f"; valid keys: {', '.join(parent.model_fields)}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        value = e.get("input")
        shown = (
            ""
            if e["type"] in ("missing", "extra_forbidden") or isinstance(value, dict)
            else f" (got {value!r})"
        )
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class at `loc` inside `model`, if the path leads to one."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        inner = getattr(ann, "__args__", (ann,))
        found = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if found is None:
            return None
        model = found
    return model


def parse_spec(data: Any, source: str = "<dict>") -> Spec:
    """Validate a mapping (e.g. parsed YAML) into a Spec.

    Raises:
        ConfigError: listing every broken rule with its key and value.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid experiment spec {source}: expected a mapping at the top level,"
            f" got {type(data).__name__}"
        )
    try:
        return Spec.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate an experiment YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment spec {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"experiment spec {path} is not valid YAML: {e}") from None
    return parse_spec(data, str(path))


def spec_to_yaml(spec: Spec) -> str:
    """The resolved spec (every default filled in), as written beside the results."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
