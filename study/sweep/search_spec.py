"""The `search:` section of a spec: a hyperparameter search before the ablation (issue 11).

    search:
      space:
        lr: {loguniform: [1.0e-5, 1.0e-2]}
        batch_size: {choice: [16, 32, 64]}
        stage_lr.stem: {uniform: [0.0, 1.0]}
      trials: 30                 # per search group: the same budget for every arm
      group_by: [architecture, downstream, init]
      metric: val_loss

The schema alone (shapes, types, values), as study.sweep.spec is for the other sections;
what needs the registries (a `stage_lr.<group>` every architecture has, a metric the
pretraining tasks report) is checked in study.sweep.resolve. The search itself (groups,
stored trials, Optuna) is study.sweep.search.

This module is apart from study.sweep.search because study.sweep.spec imports it, and the
search's functions import the spec and the plan: one module would be an import cycle.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from study.training.config import TrainOptions

__all__ = [
    "SearchSpec",
    "ParamRange",
    "METRICS",
    "GROUP_KEYS",
    "DEFAULT_GROUP_BY",
    "STAGE_LR_PREFIX",
]

#: The validation metrics a search may optimise, with their direction: the `val_` columns
#: of the per-epoch table (study.schema.EPOCHS_SCHEMA), which every unit reports each epoch.
#: The test split is never a search's metric.
METRICS: dict[str, Literal["minimize", "maximize"]] = {
    "val_loss": "minimize",
    "val_macro_auroc": "maximize",
    "val_macro_f1": "maximize",
    "val_weighted_f1": "maximize",
}
#: The axes of a unit (study.sweep.plan.Unit.axes) a search can be grouped by.
GROUP_KEYS = ("architecture", "upstream", "downstream", "init", "freeze_depth", "pretrain_task")
# One search per architecture, downstream dataset and arm: each arm tuned with the same
# budget on the data it is judged on.
DEFAULT_GROUP_BY = ("architecture", "downstream", "init")
#: A per-freeze-group learning-rate multiplier is searched as `stage_lr.<group>`.
STAGE_LR_PREFIX = "stage_lr."
# Training options a search does not tune: `stage_lr` as a whole (searched per group), and
# `deterministic`, a run-time switch that makes a result reproducible, not better.
_NOT_SEARCHED = {
    "stage_lr": "search each freeze group's multiplier as stage_lr.<group> (e.g. stage_lr.stem)",
    "deterministic": "a run-time switch (reproducible kernels), not a hyperparameter",
}
_KINDS = ("loguniform", "uniform", "int", "choice")
_RANGE_KINDS = ("loguniform", "uniform", "int")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamRange(_Section):
    """Where one parameter is searched, written `{kind: values}` in the spec.

    Attributes:
        kind: "loguniform" or "uniform" (a float in [lo, hi], sampled on a log or linear
            scale), "int" (an integer in [lo, hi], both included) or "choice" (one of the
            listed values).
        values: (lo, hi) for a range; the candidates for a choice.
    """

    kind: Literal["loguniform", "uniform", "int", "choice"]
    values: tuple[Any, ...]

    @model_validator(mode="before")
    @classmethod
    def _from_mapping(cls, v: Any) -> Any:
        if isinstance(v, ParamRange) or (isinstance(v, dict) and set(v) == {"kind", "values"}):
            return v
        if not isinstance(v, dict) or len(v) != 1:
            raise ValueError(
                "a parameter's range is one of {loguniform: [lo, hi]}, {uniform: [lo, hi]}, "
                f"{{int: [lo, hi]}}, {{choice: [a, b, ...]}}; got {v!r}"
            )
        ((kind, values),) = v.items()
        if kind not in _KINDS:
            raise ValueError(f"unknown range {kind!r}; known: {', '.join(_KINDS)}")
        if not isinstance(values, list | tuple):
            raise ValueError(f"{kind} takes a list, got {values!r}")
        return {"kind": kind, "values": tuple(values)}

    @field_validator("values")
    @classmethod
    def _values(cls, v: tuple[Any, ...], info: ValidationInfo) -> tuple[Any, ...]:
        kind = info.data.get("kind")
        if kind == "choice":
            if not v:
                raise ValueError("choice needs at least one value, got []")
            if len(set(map(repr, v))) != len(v):
                raise ValueError(f"choice values must be distinct, got {list(v)}")
            return v
        if kind not in _RANGE_KINDS:  # (an unknown kind is reported on its own)
            return v
        if len(v) != 2:
            raise ValueError(f"{kind} takes [lo, hi], got {list(v)}")
        number = int if kind == "int" else float
        try:
            if any(isinstance(x, bool) for x in v):
                raise ValueError
            lo, hi = (TypeAdapter(number).validate_python(x) for x in v)
        except (ValidationError, ValueError):
            raise ValueError(f"{kind} bounds must be {number.__name__}s, got {list(v)}") from None
        if not lo < hi:
            raise ValueError(f"{kind} needs lo < hi, got [{lo}, {hi}]")
        if kind == "loguniform" and lo <= 0:
            raise ValueError(f"loguniform needs lo > 0 (a log scale), got [{lo}, {hi}]")
        return (lo, hi)  # "1e-5" (a string to YAML) -> 1e-05

    @model_serializer(mode="plain")
    def _as_mapping(self) -> dict[str, list[Any]]:
        # written back as the user wrote it: spec.yaml round-trips, and the spec's digest
        # and the search groups' ids hash this form
        return {self.kind: list(self.values)}

    @property
    def low(self) -> Any:
        return self.values[0]

    @property
    def high(self) -> Any:
        return self.values[1]


def _option_adapter(name: str) -> tuple[TypeAdapter, str]:
    """A validator of one value of training option `name` (`stage_lr.<group>`: a
    multiplier), and what kind of number it is ("float", "int" or "other").

    Raises:
        ValueError: not an option a search can tune.
    """
    if name.startswith(STAGE_LR_PREFIX):
        if not name.removeprefix(STAGE_LR_PREFIX):
            raise ValueError(f"{name!r} names no freeze group: stage_lr.<group>")
        # the rule of FinetuneSpec's stage_lr: a multiplier >= 0 (0 freezes the group)
        return TypeAdapter(Annotated[float, Field(ge=0)]), "float"
    if name in _NOT_SEARCHED:
        raise ValueError(f"{name} cannot be searched: {_NOT_SEARCHED[name]}")
    field = TrainOptions.model_fields.get(name)
    if field is None:
        known = [k for k in TrainOptions.model_fields if k not in _NOT_SEARCHED]
        raise ValueError(
            f"unknown parameter {name!r}: a search tunes training options "
            f"({', '.join(known)}) or stage_lr.<group>"
        )
    args = getattr(field.annotation, "__args__", (field.annotation,))
    kind = "float" if float in args else "int" if field.annotation is int else "other"
    return TypeAdapter(Annotated[field.annotation, field]), kind


def _check_param(name: str, rng: ParamRange) -> ParamRange:
    """`rng` with its values validated as values of option `name` (choices converted)."""
    adapter, number = _option_adapter(name)
    if rng.kind in ("loguniform", "uniform") and number != "float":
        raise ValueError(f"{name} takes {number} values: use int or choice, not {rng.kind}")
    if rng.kind == "int" and number != "int":
        raise ValueError(f"{name} takes {number} values: use uniform, loguniform or choice")
    checked = []
    for value in rng.values:
        try:
            checked.append(adapter.validate_python(value))
        except ValidationError as e:
            why = "; ".join(err["msg"] for err in e.errors())
            raise ValueError(f"{value!r} is not a valid {name} ({why})") from None
    if rng.kind == "choice":
        return ParamRange(kind="choice", values=tuple(checked))
    return rng


class SearchSpec(_Section):
    """A hyperparameter search per group of ablation units, before they run (issue 11).

    Each group's best trial is frozen into its units' training options, so their ids
    include the chosen values.
    """

    # Parameter -> range: training options of `finetune` / `pretrain` (TrainOptions'
    # keys), or stage_lr.<group> for one freeze group's learning-rate multiplier.
    space: dict[str, ParamRange]
    trials: int = Field(ge=1)  # the budget of every group: the same for each arm
    # One search per distinct value of these unit axes (pretraining units have only
    # architecture, upstream and pretrain_task of them).
    group_by: list[Literal[GROUP_KEYS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(DEFAULT_GROUP_BY)
    )
    fraction: float = Field(1.0, gt=0, le=1)  # the data fraction a search trains on (repeat 0's)
    metric: str = "val_loss"  # a key of METRICS; its direction is METRICS'
    pruner: Literal["asha", "none"] = "asha"  # ASHA on the per-epoch metric, or every epoch
    sampler: Literal["tpe", "random"] = "tpe"  # Optuna's TPE or random sampling, seeded
    # finetune: the downstream units of both arms; pretrain: the pretraining units; both
    applies_to: Literal["finetune", "pretrain", "both"] = "finetune"
    seed: int | None = None  # the samplers' seed; None: the spec's seed
    # Trials of one group at once. Above 1, which trials have finished when TPE proposes
    # the next depends on the order trials complete, so the sequence of configurations is
    # no longer a function of the seed alone.
    max_concurrent: int = Field(1, ge=1)

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, ParamRange]) -> dict[str, ParamRange]:
        if not v:
            raise ValueError("needs at least one parameter to search")
        out = {}
        for name, rng in v.items():
            try:
                out[name] = _check_param(name, rng)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        return out

    @field_validator("group_by")
    @classmethod
    def _group_by(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"group_by keys must be distinct, got {v}")
        # in the axes' own order, so that [downstream, architecture] is the same search
        return [k for k in GROUP_KEYS if k in v]

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v.startswith("test"):
            raise ValueError(
                f"a search never reads the test split: metric must be a validation metric "
                f"({', '.join(METRICS)}), got {v!r}"
            )
        if v not in METRICS:
            raise ValueError(f"unknown metric {v!r}; known: {', '.join(METRICS)}")
        return v

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        """Optuna's direction for `metric`."""
        return METRICS[self.metric]

    def resolved_seed(self, spec_seed: int) -> int:
        """The samplers' seed: `seed`, else the spec's."""
        return spec_seed if self.seed is None else self.seed

    def stages(self) -> tuple[str, ...]:
        """The plan stages whose units the search tunes."""
        downstream = ("finetune", "scratch")
        return {
            "finetune": downstream,
            "pretrain": ("pretrain",),
            "both": ("pretrain",) + downstream,
        }[self.applies_to]
