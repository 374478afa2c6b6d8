"""Expand a spec into units: pretraining runs and fine-tuning / from-scratch trials.

Not a blind Cartesian product:
- one pretraining unit per (architecture, upstream, pretraining task, pretraining seed): it
  does not vary with the downstream dataset, the freeze depth, the fraction or the repeat;
  with `pretrain.repeats: P`, fine-tuning repeat r starts from pretraining seed r mod P;
- a from-scratch unit does not vary with the upstream dataset or the freeze depth;
- a dataset is not paired with itself unless `self_pairs: patient_disjoint`. Then every
  dataset that is both upstream and downstream is split by patient for the whole study:
  its pretraining trains on folds 1-4 (UPSTREAM_FOLDS), its downstream role trains on folds
  5-8 (DOWNSTREAM_FOLDS), both arms of every comparison alike; validation (9) and test (10)
  are as always, so no patient is trained on in both roles and the test is never seen.

Every unit has an id hashed from everything that determines its result (its resolved config,
including the id of the pretraining unit it starts from), so two specs that share a unit
share its id and its stored result.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from study.data import dataset_source, prepared_key
from study.models import model_revision
from study.sweep.resolve import freeze_depths_for, upstream_config
from study.sweep.spec import Spec, architecture_label
from study.training.config import TrainOptions

__all__ = ["UnitConfig", "Unit", "Plan", "make_plan", "unit_id"]

STAGES = ("pretrain", "finetune", "scratch")
# The patient-disjoint halves of the training folds of a dataset used in both roles.
UPSTREAM_FOLDS = (1, 2, 3, 4)
DOWNSTREAM_FOLDS = (5, 6, 7, 8)
_PREFIX = {"pretrain": "pt", "finetune": "ft", "scratch": "sc"}
# Fields each stage must set, and fields it must leave unset.
_STAGE_FIELDS = {
    "pretrain": (
        {"upstream", "pretrain_task", "num_workers"},
        {"downstream", "pretrain_unit", "val_fraction"},
    ),
    "finetune": (
        {"downstream", "data_fraction", "repeat", "freeze_depth", "upstream", "pretrain_task"},
        {"num_workers", "task_options", "pretrain_repeat"},
    ),
    "scratch": (
        {"downstream", "data_fraction", "repeat", "freeze_depth"},
        {
            "upstream",
            "pretrain_task",
            "pretrain_unit",
            "num_workers",
            "task_options",
            "pretrain_repeat",
        },
    ),
}


class UnitConfig(BaseModel):
    """Everything that determines one unit's result; its id is a hash of this.

    Attributes:
        stage: "pretrain", "finetune" (from a pretraining unit's weights) or "scratch".
        architecture, architecture_options: the registry name and its options.
        architecture_revision: the model's revision (`study.models.model_revision`) when
            it is 2 or more (None: the first), so a changed model gets new unit ids.
        seed: the unit's seed (the spec's seed plus the repeat).
        train: the training options.
        data_key: the prepared dataset the unit trains on (`study.data.prepared_key`).
        train_folds: the training folds it may use (a dataset in both roles), else None.
        upstream: the upstream dataset (pretraining, fine-tuning).
        pretrain_task: the pretraining task (of the unit, or of the one it starts from).
        task_options: the pretraining task's options (pretraining only).
        num_workers: DDP workers (pretraining only: the global batch is split over them).
        downstream, data_fraction, repeat, freeze_depth: the fine-tuning grid's axes.
        pretrain_unit: the id of the pretraining unit a fine-tuning unit starts from.
        pretrain_repeat: the pretraining seed's number, >= 1 (pretraining only; None is
            seed 0, so adding pretraining seeds to a study keeps its first pretraining).
        val_fraction: "match" when the unit validates on the patients of the validation
            split subsampled with its data fraction (None: the whole split; fraction 1 is
            the whole split either way, so it is None there too).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: Literal["pretrain", "finetune", "scratch"]
    architecture: str
    architecture_options: dict[str, Any] = {}
    architecture_revision: int | None = Field(None, ge=2)
    seed: int
    train: TrainOptions
    data_key: str
    train_folds: tuple[int, ...] | None = None
    upstream: str | None = None
    pretrain_task: str | None = None
    task_options: dict[str, Any] | None = None
    num_workers: int | None = None
    downstream: str | None = None
    data_fraction: float | None = None
    repeat: int | None = None
    freeze_depth: int | None = None
    pretrain_unit: str | None = None
    pretrain_repeat: int | None = Field(None, ge=1)
    val_fraction: Literal["match"] | None = None

    @model_validator(mode="after")
    def _stage_fields(self) -> UnitConfig:
        need, forbid = _STAGE_FIELDS[self.stage]
        missing = sorted(f for f in need if getattr(self, f) is None)
        extra = sorted(f for f in forbid if getattr(self, f) is not None)
        if missing or extra:
            raise ValueError(f"a {self.stage} unit needs {missing} and takes no {extra}")
        return self

    @property
    def architecture_label(self) -> str:
        """A readable name that tells options apart ("resnet1d18[base_width=16]")."""
        return architecture_label(self.architecture, self.architecture_options)

    def canonical(self) -> dict:
        """The JSON-able config that the id hashes (unset fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)


def unit_id(config: UnitConfig) -> str:
    """A stable id: stage prefix + the hash of the config's canonical JSON."""
    canonical = json.dumps(config.canonical(), sort_keys=True, separators=(",", ":"))
    return f"{_PREFIX[config.stage]}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Unit:
    """One unit of work. `config` determines its result; `depends_on` must finish first."""

    unit_id: str
    config: UnitConfig
    depends_on: str | None = None

    @classmethod
    def of(cls, config: UnitConfig, depends_on: str | None = None) -> Unit:
        return cls(unit_id(config), config, depends_on)

    @property
    def stage(self) -> str:
        return self.config.stage

    @property
    def axes(self) -> dict:
        c = self.config
        return {
            "architecture": c.architecture_label,
            "upstream": c.upstream,
            "pretrain_task": c.pretrain_task,
            "downstream": c.downstream,
            "init": {"pretrain": None, "finetune": "pretrained", "scratch": "scratch"}[c.stage],
            "freeze_depth": c.freeze_depth,
            "data_fraction": c.data_fraction,
            "repeat": c.repeat,
            "pretrain_repeat": (c.pretrain_repeat or 0) if c.stage == "pretrain" else None,
        }


@dataclass
class Plan:
    units: list[Unit]
    excluded: list[str] = field(default_factory=list)  # why some combinations are absent
    # unit id -> the id the spec alone plans for it, for units whose searched training
    # options were replaced by a search group's chosen values (study.sweep.search)
    base_ids: dict[str, str] = field(default_factory=dict)

    def base_id(self, uid: str) -> str:
        """The id the spec alone plans for unit `uid` (its own id unless a search chose
        its training options)."""
        return self.base_ids.get(uid, uid)

    def by_stage(self, stage: str) -> list[Unit]:
        return [u for u in self.units if u.stage == stage]

    def get(self, uid: str) -> Unit:
        return self._index[uid]

    @property
    def _index(self) -> dict[str, Unit]:
        return {u.unit_id: u for u in self.units}

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            [
                {
                    "unit_id": u.unit_id,
                    "base_unit_id": self.base_id(u.unit_id),
                    "stage": u.stage,
                    **u.axes,
                    "depends_on": u.depends_on,
                    "config": json.dumps(u.config.canonical(), sort_keys=True),
                }
                for u in self.units
            ]
        )

    def counts(self) -> dict:
        """Units per stage, and per axis value within each stage."""
        out: dict = {"total": len(self.units), "stages": {}}
        for stage in STAGES:
            units = self.by_stage(stage)
            axes: dict[str, Counter] = {}
            for u in units:
                for k, v in u.axes.items():
                    if v is not None and k != "init":
                        axes.setdefault(k, Counter())[v] += 1
            out["stages"][stage] = {
                "units": len(units),
                "axes": {k: dict(sorted(c.items())) for k, c in axes.items()},
            }
        return out


def _arch_config(arch) -> dict:
    revision = model_revision(arch.name)
    return {
        "architecture": arch.name,
        "architecture_options": dict(arch.options),
        "architecture_revision": revision if revision > 1 else None,
    }


def recordings(name: str) -> str:
    """The collection of recordings the dataset `name` reads (`DatasetSource.recordings`)."""
    return dataset_source(name).recordings


def make_plan(spec: Spec) -> Plan:
    """Expand `spec` into its units (deterministic order: pretraining first)."""
    units: list[Unit] = []
    excluded: list[str] = []
    pretrain_ids: dict[tuple[str, str, str, int], str] = {}
    # Roles are by the dataset read, so a variant (a noisy copy) counts as its dataset.
    src = spec.source_name
    both_roles = {src(u) for u in spec.upstream} & {src(d) for d in spec.downstream}

    def same_recordings(up: str, down: str) -> bool:
        # Two sources publishing the same recordings (cpsc2018_original / cpsc2018) are
        # split independently, so not even patient_disjoint can separate their patients.
        return src(up) != src(down) and recordings(src(up)) == recordings(src(down))

    split_roles = both_roles if spec.self_pairs == "patient_disjoint" else set()
    pretrain_train = spec.pretrain.train_options()
    for arch in spec.architectures:
        arch_cfg = _arch_config(arch)
        for up in spec.upstream:
            folds = UPSTREAM_FOLDS if src(up) in split_roles else None
            for task in spec.pretrain.tasks:
                for p_rep in range(spec.pretrain.repeats):
                    cfg = UnitConfig(
                        **arch_cfg,
                        stage="pretrain",
                        seed=spec.seed + p_rep,
                        train=pretrain_train,
                        data_key=prepared_key(src(up), upstream_config(spec, up, task)),
                        train_folds=folds,
                        upstream=up,
                        pretrain_task=task,
                        task_options=spec.pretrain.task_options.get(task) or None,
                        num_workers=spec.pretrain.num_workers,
                        pretrain_repeat=p_rep or None,
                    )
                    unit = Unit.of(cfg)
                    pretrain_ids[(arch.label, up, task, p_rep)] = unit.unit_id
                    units.append(unit)
    for arch in spec.architectures:
        arch_cfg = _arch_config(arch)
        depths = freeze_depths_for(spec, arch)
        for down in spec.downstream:
            base = {
                **arch_cfg,
                "downstream": down,
                "data_key": prepared_key(src(down), spec.dataset_config(down)),
                "train_folds": DOWNSTREAM_FOLDS if src(down) in split_roles else None,
            }
            for frac in spec.finetune.data_fractions:
                for rep in range(spec.finetune.repeats):
                    # The seed depends on the repeat only, so both arms of a pair share it.
                    common = {**base, "data_fraction": frac, "repeat": rep, "seed": spec.seed + rep}
                    if spec.finetune.val_fraction == "match" and frac < 1.0:
                        common["val_fraction"] = "match"
                    if spec.finetune.scratch:
                        cfg = UnitConfig(
                            **common,
                            stage="scratch",
                            train=spec.finetune.train_options(pretrained=False),
                            freeze_depth=0,
                        )
                        units.append(Unit.of(cfg))
                    for up in spec.upstream:
                        if (src(up) == src(down) and not split_roles) or same_recordings(up, down):
                            continue
                        for task in spec.pretrain.tasks:
                            pt = pretrain_ids[(arch.label, up, task, rep % spec.pretrain.repeats)]
                            for depth in depths:
                                cfg = UnitConfig(
                                    **common,
                                    stage="finetune",
                                    train=spec.finetune.train_options(pretrained=True),
                                    upstream=up,
                                    pretrain_task=task,
                                    pretrain_unit=pt,
                                    freeze_depth=depth,
                                )
                                units.append(Unit.of(cfg, depends_on=pt))
            for up in spec.upstream:
                if src(up) == src(down) and not split_roles:
                    excluded.append(
                        f"{up} as upstream of {down} (the same records; self_pairs: "
                        "patient_disjoint includes it)"
                    )
                elif same_recordings(up, down):
                    excluded.append(
                        f"{up} as upstream of {down} (both read the {recordings(src(up))} "
                        "recordings, split independently: pretraining would see the "
                        "downstream's test patients; no setting includes it)"
                    )
    # A pretraining unit that no fine-tuning unit uses is still planned: its weights are a
    # result of the study in their own right (and the plan stays a function of the spec).
    return Plan(units=units, excluded=sorted(set(excluded)))
