"""How long units take, from the durations of finished ones: the ETA of `study status` and
the unit-hours and GPU-hours of `study plan --estimate`.

The model. A unit's duration is proportional to its data fraction times the epochs it runs:
    seconds = rate x data_fraction x expected epochs,
    expected epochs = max epochs (the unit's `train.epochs`) x stop share,
where, over a group of finished units, rate = sum(train_seconds) / sum(epochs run x data
fraction) (seconds per epoch over the whole training split) and stop share = sum(epochs run)
/ sum(max epochs) (early stopping; a short calibration rarely stops early, so its estimate
is near the upper bound at the maximum epochs). Over a group of units at one fraction and
one maximum this is the group's mean duration.

The group of a unit is the finest one with finished units, of (LEVELS):
  0. same stage, architecture, dataset, setting and data fraction;
  1. same stage, architecture, dataset and setting, other fractions (scaled as above);
  2. same stage, architecture and dataset;  3. same stage and architecture;  4. same stage;
  5. finished units of other stages: the plan's relative cost (fraction x epochs) only.
The dataset is the upstream of a pretraining unit, the downstream of the others; the setting
is the pretraining task, or the freeze depth. Durations are those of the hardware the units
ran on (each row's `hardware`), and of pretraining at the num_workers it ran with.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
from pydantic import ValidationError

from study.schema import RESULT_TABLES, TRIALS_SCHEMA
from study.store import Store
from study.sweep.plan import STAGES, Plan, UnitConfig
from study.sweep.runner import ResultScan
from study.sweep.spec import Spec

__all__ = [
    "LEVELS",
    "MODEL",
    "Measurement",
    "Prediction",
    "DurationModel",
    "StageEstimate",
    "PlanEstimate",
    "estimate_from_store",
    "scan_durations",
    "measurements",
    "gpus_per_unit",
    "estimate_plan",
]

#: Where a unit's duration is predicted from, finest first (see the module docstring): its
#: group (stage, architecture, dataset, setting, data fraction), then coarser ones.
LEVELS = (
    "group",
    "group at other fractions",
    "stage+architecture+dataset",
    "stage+architecture",
    "stage",
    "other stages",
)
#: What the numbers assume, in two lines.
MODEL = (
    "time ~ data fraction x epochs, at the rate and early-stopping share of the closest "
    "group of finished units",
    "group: stage, architecture, dataset, setting (freeze depth or pretraining task) and "
    "data fraction; coarser where it has none",
)
_KEY_LEN = len(LEVELS) - 1

# The columns of a result part that time a unit (the same types in every result table).
_DURATION_SCHEMA = pa.schema(
    [
        TRIALS_SCHEMA.field(n)
        for n in ("unit_id", "epochs", "train_seconds", "hardware", "finished_at", "config")
    ]
)


def duration_key(config: UnitConfig) -> tuple:
    """What predicts a unit's duration, coarsest first: stage, architecture, dataset,
    setting (pretraining task or freeze depth), data fraction."""
    pretrain = config.stage == "pretrain"
    return (
        config.stage,
        config.architecture_label,
        config.upstream if pretrain else config.downstream,
        config.pretrain_task if pretrain else config.freeze_depth,
        config.data_fraction or 1.0,
    )


@dataclass(frozen=True)
class Measurement:
    """One finished unit's duration and what predicts it."""

    config: UnitConfig
    seconds: float  # train_seconds of its row
    epochs: int  # epochs it ran
    hardware: str | None = None


@dataclass(frozen=True)
class Prediction:
    """A unit's expected duration: `per_epoch` seconds x `epochs` expected epochs.

    Attributes:
        level: the LEVELS index of the group it comes from.
        n: the finished units of that group.
    """

    per_epoch: float
    epochs: float
    level: int
    n: int

    @property
    def seconds(self) -> float:
        return self.per_epoch * self.epochs


@dataclass
class _Group:
    n: int = 0
    seconds: float = 0.0
    work: float = 0.0  # sum of epochs run x data fraction
    epochs: int = 0
    max_epochs: int = 0

    def add(self, m: Measurement) -> None:
        self.n += 1
        self.seconds += m.seconds
        self.work += m.epochs * (m.config.data_fraction or 1.0)
        self.epochs += m.epochs
        self.max_epochs += m.config.train.epochs


class DurationModel:
    """Predicts a unit's duration from finished units (see the module docstring)."""

    def __init__(self, measured: Iterable[Measurement]) -> None:
        self._groups: list[dict[tuple, _Group]] = [{} for _ in LEVELS]
        self.measured: list[Measurement] = []
        for m in measured:
            if not (m.epochs >= 1 and m.seconds >= 0 and math.isfinite(m.seconds)):
                continue  # a row without a usable duration times nothing
            self.measured.append(m)
            key = duration_key(m.config)
            for level, groups in enumerate(self._groups):
                groups.setdefault(key[: _KEY_LEN - level], _Group()).add(m)

    def __len__(self) -> int:
        return len(self.measured)

    def measured_in(self, stage: str) -> list[Measurement]:
        return [m for m in self.measured if m.config.stage == stage]

    def predict(self, config: UnitConfig) -> Prediction | None:
        """The unit's expected duration from its closest group; None with no measurement."""
        key = duration_key(config)
        fraction = config.data_fraction or 1.0
        for level, groups in enumerate(self._groups):
            g = groups.get(key[: _KEY_LEN - level])
            if g is None or g.work <= 0:
                continue
            return Prediction(
                per_epoch=g.seconds / g.work * fraction,
                epochs=config.train.epochs * g.epochs / g.max_epochs,
                level=level,
                n=g.n,
            )
        return None


def scan_durations(store: Store) -> tuple[ResultScan, dict[str, dict]]:
    """The study's result parts, as `study.sweep.runner.scan_results` sees them (done:
    a readable row), with each row's timing columns (unit_id -> epochs, train_seconds,
    hardware, finished_at, config), read in the same pass (one read per part)."""
    done: set[str] = set()
    corrupt: dict[str, str] = {}
    rows: dict[str, dict] = {}
    for table, schema in RESULT_TABLES.items():
        scan = store.scan_parts(
            f"results/{table}", schema.field("unit_id"), schema=_DURATION_SCHEMA
        )
        done |= scan.ids
        corrupt.update({f"results/{table}/{name}": why for name, why in scan.corrupt.items()})
        if scan.tables:  # one row per part (scan_parts checked it), named by unit_id
            rows.update(
                {r["unit_id"]: r for r in pa.concat_tables(scan.tables.values()).to_pylist()}
            )
    return ResultScan(done, corrupt), rows


def measurements(rows: dict[str, dict], plan: Plan | None = None) -> list[Measurement]:
    """The rows as measurements: each unit's config from `plan` (the units of this study),
    else from the row's own `config` (a calibration study's units); a row whose config this
    code cannot read, or without a duration, is left out."""
    index = {u.unit_id: u.config for u in plan.units} if plan is not None else {}
    out = []
    for uid, row in rows.items():
        config = index.get(uid)
        if plan is not None and config is None:
            continue  # not a unit of this plan
        if config is None:
            try:
                config = UnitConfig.model_validate_json(row.get("config") or "")
            except ValidationError:
                continue
        if row.get("train_seconds") is None or row.get("epochs") is None:
            continue
        out.append(Measurement(config, row["train_seconds"], row["epochs"], row.get("hardware")))
    return out


def gpus_per_unit(spec: Spec, stage: str) -> float:
    """GPUs one unit of `stage` holds: a pretraining run one per DDP worker when
    `pretrain.use_gpu`, a fine-tuning or from-scratch trial `finetune.gpus_per_trial`."""
    if stage == "pretrain":
        return float(spec.pretrain.num_workers) if spec.pretrain.use_gpu else 0.0
    return spec.finetune.gpus_per_trial


@dataclass(frozen=True)
class StageEstimate:
    """What one stage of a plan costs.

    Attributes:
        units: planned units of the stage.
        unit_hours: the sum of their expected durations.
        gpus_per_unit, gpu_hours: unit-hours x GPUs per unit.
        measured: finished units of this stage the estimate rests on.
        by_level: planned units predicted at each LEVELS index.
        hardware: what the measured units of the stage ran on.
    """

    stage: str
    units: int
    unit_hours: float
    gpus_per_unit: float
    gpu_hours: float
    measured: int
    by_level: dict[int, int] = field(default_factory=dict)
    hardware: tuple[str, ...] = ()

    @property
    def basis(self) -> str:
        """What the numbers rest on, in words."""
        if not self.units:
            return "no units"
        if not self.measured:
            return (
                "no measurements: relative cost only (data fraction x epochs, at the rate of "
                "the other stages' finished units)"
            )
        s = "" if self.measured == 1 else "s"
        levels = ", ".join(f"{LEVELS[k]} {n}" for k, n in sorted(self.by_level.items()))
        on = f"; on {', '.join(self.hardware)}" if self.hardware else ""
        return f"{self.measured} measured unit{s}; units predicted from {levels}{on}"


@dataclass(frozen=True)
class PlanEstimate:
    """A plan's cost per stage (STAGES order), and the store whose durations it rests on.

    Attributes:
        source: the store's URI.
        measured: finished units it rests on.
        left_out: stored rows without a usable duration or config (not measured).
    """

    source: str
    measured: int
    left_out: int
    stages: list[StageEstimate]

    @property
    def units(self) -> int:
        return sum(e.units for e in self.stages)

    @property
    def unit_hours(self) -> float:
        return sum(e.unit_hours for e in self.stages)

    @property
    def gpu_hours(self) -> float:
        return sum(e.gpu_hours for e in self.stages)

    def to_dict(self) -> dict:
        """JSON-able: the totals and, per stage, its numbers and basis."""
        return {
            "source": self.source,
            "model": " ".join(MODEL),
            "measured_units": self.measured,
            "left_out_rows": self.left_out,
            "unit_hours": self.unit_hours,
            "gpu_hours": self.gpu_hours,
            "stages": {
                e.stage: {
                    "units": e.units,
                    "unit_hours": e.unit_hours,
                    "gpus_per_unit": e.gpus_per_unit,
                    "gpu_hours": e.gpu_hours,
                    "measured_units": e.measured,
                    "basis": e.basis,
                }
                for e in self.stages
            },
        }


def estimate_plan(plan: Plan, spec: Spec, model: DurationModel) -> list[StageEstimate]:
    """Unit-hours and GPU-hours per stage of `plan` (STAGES order), from `model`.

    Raises:
        ValueError: `model` has no measurement (nothing to estimate from).
    """
    if not len(model):
        raise ValueError("no finished unit to estimate durations from")
    out = []
    for stage in STAGES:
        units = plan.by_stage(stage)
        measured = model.measured_in(stage)
        seconds, by_level = 0.0, {}
        for u in units:
            p = model.predict(u.config)
            seconds += p.seconds
            by_level[p.level] = by_level.get(p.level, 0) + 1
        gpus = gpus_per_unit(spec, stage)
        out.append(
            StageEstimate(
                stage=stage,
                units=len(units),
                unit_hours=seconds / 3600,
                gpus_per_unit=gpus,
                gpu_hours=seconds / 3600 * gpus,
                measured=len(measured),
                by_level=by_level,
                hardware=tuple(sorted({m.hardware for m in measured if m.hardware})),
            )
        )
    return out


def estimate_from_store(plan: Plan, spec: Spec, store: Store) -> PlanEstimate:
    """`plan`'s cost from the finished units stored in `store` (any study: this one, or a
    calibration run of a smaller spec; each row's own config says what it measured).
    `PlanEstimate.measured` is 0, and `stages` empty, when it holds no finished unit."""
    rows = scan_durations(store)[1]
    model = DurationModel(measurements(rows))
    stages = estimate_plan(plan, spec, model) if len(model) else []
    return PlanEstimate(store.uri, len(model), len(rows) - len(model), stages)
