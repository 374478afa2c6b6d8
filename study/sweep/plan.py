"""Expand a spec into units: pretraining runs and fine-tuning / from-scratch trials.

Not a blind Cartesian product:
- one pretraining unit per (architecture, upstream, pretraining task): it does not vary with the
  downstream dataset, the freeze depth, the fraction or the repeat;
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

import pandas as pd

from study.data import prepared_key
from study.sweep.spec import Spec

__all__ = ["Unit", "Plan", "make_plan", "unit_id"]

STAGES = ("pretrain", "finetune", "scratch")
# The patient-disjoint halves of the training folds of a dataset used in both roles.
UPSTREAM_FOLDS = [1, 2, 3, 4]
DOWNSTREAM_FOLDS = [5, 6, 7, 8]
_PREFIX = {"pretrain": "pt", "finetune": "ft", "scratch": "sc"}


def unit_id(stage: str, config: dict) -> str:
    """A stable id: stage prefix + the hash of the canonical JSON of the config."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return f"{_PREFIX[stage]}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Unit:
    """One unit of work. `config` determines its result; `depends_on` must finish first."""

    unit_id: str
    stage: str
    config: dict
    depends_on: str | None = None

    @property
    def axes(self) -> dict:
        c = self.config
        return {
            "architecture": c["architecture_label"],
            "upstream": c.get("upstream"),
            "pretrain_task": c.get("task") or c.get("pretrain_task"),
            "downstream": c.get("downstream"),
            "init": {"pretrain": None, "finetune": "pretrained", "scratch": "scratch"}[self.stage],
            "freeze_depth": c.get("freeze_depth"),
            "data_fraction": c.get("data_fraction"),
            "repeat": c.get("repeat"),
        }


@dataclass
class Plan:
    units: list[Unit]
    excluded: list[str] = field(default_factory=list)  # why some combinations are absent

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
                    "stage": u.stage,
                    **u.axes,
                    "depends_on": u.depends_on,
                    "config": json.dumps(u.config, sort_keys=True),
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


_TRAIN_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "patience",
    "optimizer",
    "schedule",
    "loss",
    "grad_clip",
    "amp",
    "deterministic",
    "stage_lr",
)


def _train_cfg(section) -> dict:
    """The training settings of a unit (every one of them is part of its id)."""
    return {k: getattr(section, k) for k in _TRAIN_KEYS if hasattr(section, k)}


def make_plan(spec: Spec) -> Plan:
    """Expand `spec` into its units (deterministic order: pretraining first)."""
    units: list[Unit] = []
    excluded: list[str] = []
    pretrain_ids: dict[tuple[str, str, str], str] = {}
    # Roles are by the dataset read, so a variant (a noisy copy) counts as its dataset.
    src = spec.source_name
    both_roles = {src(u) for u in spec.upstream} & {src(d) for d in spec.downstream}
    split_roles = both_roles if spec.self_pairs == "patient_disjoint" else set()
    for arch in spec.architectures:
        arch_cfg = {
            "architecture": arch.name,
            "architecture_options": dict(arch.options),
            "architecture_label": arch.label,
        }
        for up in spec.upstream:
            roles = {"train_folds": UPSTREAM_FOLDS} if src(up) in split_roles else {}
            for task in spec.pretrain.tasks:
                options = spec.pretrain.task_options.get(task)
                cfg = {
                    **arch_cfg,
                    **roles,
                    "stage": "pretrain",
                    "upstream": up,
                    "upstream_key": prepared_key(
                        spec.source_name(up), spec.upstream_config(up, task)
                    ),
                    "task": task,
                    **({"task_options": dict(options)} if options else {}),
                    "seed": spec.seed,
                    "num_workers": spec.pretrain.num_workers,
                    "train": _train_cfg(spec.pretrain),
                }
                uid = unit_id("pretrain", cfg)
                pretrain_ids[(arch.label, up, task)] = uid
                units.append(Unit(uid, "pretrain", cfg))
    for arch in spec.architectures:
        arch_cfg = {
            "architecture": arch.name,
            "architecture_options": dict(arch.options),
            "architecture_label": arch.label,
        }
        depths = spec.freeze_depths_for(arch)
        for down in spec.downstream:
            base = {
                **arch_cfg,
                **({"train_folds": DOWNSTREAM_FOLDS} if src(down) in split_roles else {}),
                "downstream": down,
                "downstream_key": prepared_key(spec.source_name(down), spec.dataset_config(down)),
                "train": _train_cfg(spec.finetune),
            }
            for frac in spec.finetune.data_fractions:
                for rep in range(spec.finetune.repeats):
                    # The seed depends on the repeat only, so both arms of a pair share it.
                    common = {**base, "data_fraction": frac, "repeat": rep, "seed": spec.seed + rep}
                    if spec.finetune.scratch:
                        # The control arm trains every layer at the one learning rate:
                        # per-stage rates (0 = frozen) belong to the pretrained arm only.
                        train = {k: v for k, v in common["train"].items() if k != "stage_lr"}
                        cfg = {**common, "train": train, "stage": "scratch", "freeze_depth": 0}
                        units.append(Unit(unit_id("scratch", cfg), "scratch", cfg))
                    for up in spec.upstream:
                        if src(up) == src(down) and not split_roles:
                            continue
                        for task in spec.pretrain.tasks:
                            pt = pretrain_ids[(arch.label, up, task)]
                            for depth in depths:
                                cfg = {
                                    **common,
                                    "stage": "finetune",
                                    "upstream": up,
                                    "pretrain_task": task,
                                    "pretrain_unit": pt,
                                    "freeze_depth": depth,
                                }
                                units.append(Unit(unit_id("finetune", cfg), "finetune", cfg, pt))
            for up in spec.upstream:
                if src(up) == src(down) and not split_roles:
                    excluded.append(
                        f"{up} as upstream of {down} (the same records; self_pairs: "
                        "patient_disjoint includes it)"
                    )
    # A pretraining unit that no fine-tuning unit uses is still planned: its weights are a
    # result of the study in their own right (and the plan stays a function of the spec).
    return Plan(units=units, excluded=sorted(set(excluded)))
