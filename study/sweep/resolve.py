"""What a spec means against the registries, in one place: the checks `parse_spec` runs
after the schema (`check_spec`), and the resolution of each dataset's preparation, label
kind and freeze depths that the plan and the runner use.

Every architecture is described once per (name, options) (`study.models.model_info` is
cached), never built per unit.
"""

from __future__ import annotations

from typing import Any

from study.data.config import DatasetConfig
from study.data.sources import dataset_source, list_datasets
from study.errors import ConfigError
from study.models import list_models, model_info
from study.sweep.search_spec import METRICS, STAGE_LR_PREFIX
from study.sweep.spec import ArchitectureSpec, Spec
from study.training.tasks import OBJECTIVES, PRETRAIN_TASKS, objective, pretrain_task

__all__ = [
    "check_spec",
    "upstream_config",
    "label_kind",
    "freeze_depths_for",
    "architecture_caps",
]

Problem = tuple[str, str]  # (where in the spec, what is wrong)
_UNLABELLED = tuple(name for name, o in OBJECTIVES.items() if o.label_kind is None)


def architecture_caps(arch: ArchitectureSpec) -> dict[str, Any]:
    """What `arch` is (study.models.model_info: cached per name and options).

    Raises:
        ConfigError: an unknown architecture or option.
    """
    return model_info(arch.name, **arch.options)


def upstream_config(spec: Spec, name: str, task: str) -> DatasetConfig:
    """How upstream `name` is prepared for pretraining `task`: the task's own label set
    where it trains on one (beat, rhythm, heart_rate, qrs), and the reader options it needs
    (the future task on a framed dataset takes frames of exactly the span CPC reads)."""
    cfg = spec.dataset_config(name)
    t = pretrain_task(task)
    update: dict[str, Any] = {}
    if t.label_set is not None:
        update["label_set"] = t.label_set
    source = dataset_source(spec.source_name(name))
    options = t.upstream_options(
        cfg.options, bool(source.frame_label_sets), spec.pretrain.task_options.get(task, {})
    )
    if options != cfg.options:
        update["options"] = options
    return cfg.model_copy(update=update) if update else cfg


def label_kind(spec: Spec, name: str, config: DatasetConfig | None = None) -> str:
    """The label kind dataset `name` (or a variant) is prepared with under `config`
    (default: its spec entry)."""
    config = config or spec.dataset_config(name)
    return dataset_source(spec.source_name(name)).label_kind(config.label_set)


def freeze_depths_for(spec: Spec, arch: ArchitectureSpec) -> list[int]:
    """The resolved freeze depths of `arch` ("all" = every freeze group: only the head
    trains)."""
    max_depth = architecture_caps(arch)["max_freeze_depth"]
    return sorted({max_depth if d == "all" else int(d) for d in spec.finetune.freeze_depths})


def check_spec(spec: Spec) -> list[Problem]:
    """Every rule `spec` breaks against the registries, as (key, message) pairs."""
    problems = _check_datasets(spec)
    if problems:  # the rest reads the datasets' sources
        return problems
    problems += _check_tasks(spec)
    if problems:  # the rest asks the tasks
        return problems
    known = list_models()
    for arch in spec.architectures:
        if arch.name not in known:
            problems.append(
                ("architectures", f"unknown architecture {arch.name!r}; known: {', '.join(known)}")
            )
            continue
        try:
            caps = architecture_caps(arch)
        except ConfigError as e:
            problems.append(("architectures", str(e)))
            continue
        problems += _check_architecture(spec, arch, caps)
    return problems + _check_search(spec)


def _check_datasets(spec: Spec) -> list[Problem]:
    out: list[Problem] = []
    if not spec.downstream:
        out.append(("downstream", "needs at least one dataset"))
    known = list_datasets()
    for role in ("upstream", "downstream"):
        for name in getattr(spec, role):
            if name not in known and name not in spec.datasets:
                out.append(
                    (
                        role,
                        f"unknown dataset {name!r}; known: {', '.join(known)} (or a variant: "
                        f"datasets.{name}.dataset names the dataset it varies)",
                    )
                )
    for name, cfg in spec.datasets.items():
        where = f"datasets.{name}"
        if cfg.dataset is not None and cfg.dataset not in known:
            out.append(
                (f"{where}.dataset", f"unknown dataset {cfg.dataset!r}; known: {', '.join(known)}")
            )
        elif cfg.dataset is None and name not in known:
            out.append(
                (
                    where,
                    f"{name} is not a dataset; a variant needs `dataset:` naming the dataset "
                    f"it varies (known: {', '.join(known)})",
                )
            )
        elif cfg.dataset is not None and name in known and cfg.dataset != name:
            out.append(
                (
                    f"{where}.dataset",
                    f"{name} is itself a dataset; give the variant a name of its own",
                )
            )
    used = set(spec.upstream) | set(spec.downstream)
    for name in sorted(set(spec.datasets) - used):
        out.append(
            (
                f"datasets.{name}",
                f"not an upstream or downstream dataset of this study (used: "
                f"{', '.join(sorted(used))})",
            )
        )
    if out:
        return out
    for alias in sorted(used):
        cfg, source = spec.dataset_config(alias), dataset_source(spec.source_name(alias))
        out += [(f"datasets.{alias}.{option}", msg) for option, msg in source.problems(cfg)]
    return out


def _check_tasks(spec: Spec) -> list[Problem]:
    out: list[Problem] = []
    for task in spec.pretrain.tasks:
        if task not in PRETRAIN_TASKS:
            out.append(
                ("pretrain.task", f"unknown task {task!r}; known: {', '.join(PRETRAIN_TASKS)}")
            )
    for task, options in spec.pretrain.task_options.items():
        where = f"pretrain.task_options.{task}"
        if task not in spec.pretrain.tasks:
            out.append((where, f"{task!r} is not a pretraining task of this study"))
            continue
        try:
            pretrain_task(task).check_options(options)
        except ConfigError as e:
            out.append((where, str(e)))
    if out or not spec.upstream:
        return out
    for task in spec.pretrain.tasks:
        t = pretrain_task(task)
        if spec.pretrain.loss == "weighted_bce" and t.objective_name in _UNLABELLED:
            out.append(("pretrain.loss", f"the {task} task has no labels to weight: use loss bce"))
        if t.label_set is None:
            continue
        for alias in spec.upstream:
            source = dataset_source(spec.source_name(alias))
            if t.label_set not in source.label_sets:
                having = [n for n in list_datasets() if t.label_set in dataset_source(n).label_sets]
                out.append(
                    (
                        "pretrain.task",
                        f"the {task} task trains on the upstream label set {t.label_set!r}, "
                        f"which {source.name} does not have (datasets with it: "
                        f"{', '.join(having) or 'none'})",
                    )
                )
    return out


def _check_architecture(spec: Spec, arch: ArchitectureSpec, caps: dict) -> list[Problem]:
    out: list[Problem] = []
    name = arch.label
    for task in spec.pretrain.tasks if spec.upstream else []:
        t = pretrain_task(task)
        kinds = {label_kind(spec, up, upstream_config(spec, up, task)) for up in spec.upstream}
        for kind in sorted(kinds):
            problem = t.architecture_problem(caps, kind)
            if problem:
                out.append(("pretrain.task", f"the {task} task cannot pretrain {name}: {problem}"))
    for down in spec.downstream:
        kind = label_kind(spec, down)
        problem = objective(kind).model_problem(caps)
        if problem:
            out.append(
                ("architectures", f"{name} cannot be fine-tuned on {down} ({kind}): {problem}")
            )
    for ds in sorted(set(spec.upstream) | set(spec.downstream)):
        image = spec.dataset_config(ds).preprocessing.scalogram is not None
        if caps["input_kind"] == "image" and not image:
            out.append(
                (
                    "architectures",
                    f"{name} takes scalogram images; give datasets.{ds}.preprocessing.scalogram "
                    f"so that {ds} is prepared as images",
                )
            )
        if caps["input_kind"] == "signal" and image:
            out.append(
                (
                    "architectures",
                    f"{name} takes signals, but datasets.{ds} is prepared as scalogram images "
                    "(preprocessing.scalogram)",
                )
            )
    for section in ("pretrain", "finetune"):
        for stage in getattr(spec, section).stage_lr or {}:
            if stage not in caps["freeze_groups"]:
                out.append(
                    (
                        f"{section}.stage_lr",
                        f"{name} has no stage {stage!r}; its freeze groups: "
                        f"{', '.join(caps['freeze_groups'])}",
                    )
                )
    for param in spec.search.space if spec.search else ():
        stage = param.removeprefix(STAGE_LR_PREFIX)
        if param.startswith(STAGE_LR_PREFIX) and stage not in caps["freeze_groups"]:
            out.append(
                (
                    f"search.space.{param}",
                    f"{name} has no stage {stage!r}; its freeze groups: "
                    f"{', '.join(caps['freeze_groups'])}",
                )
            )
    for d in spec.finetune.freeze_depths:
        if d != "all" and d > caps["max_freeze_depth"]:
            out.append(
                (
                    "finetune.freeze_depths",
                    f"freeze_depth must be <= {caps['max_freeze_depth']} for {name}, got {d}",
                )
            )
    return out


def _check_search(spec: Spec) -> list[Problem]:
    """What a `search:` section means against the study: units to search for, a metric
    every searched unit reports, something to tune in every group."""
    search = spec.search
    if search is None:
        return []
    out: list[Problem] = []
    if search.applies_to in ("pretrain", "both"):
        if not spec.upstream:
            out.append(
                ("search.applies_to", f"{search.applies_to}, but the study pretrains nothing")
            )
        if search.metric != "val_loss":
            for task in spec.pretrain.tasks:
                t = pretrain_task(task)
                if t.objective_name is not None and not objective(t.objective_name).scored:
                    out.append(
                        (
                            "search.metric",
                            f"the {task} pretraining task reports only val_loss, not "
                            f"{search.metric} (a search that applies to pretraining needs "
                            f"val_loss; known metrics: {', '.join(METRICS)})",
                        )
                    )
    own_arm = search.applies_to != "pretrain" and "init" in search.group_by
    if own_arm and spec.finetune.scratch:
        if all(p.startswith(STAGE_LR_PREFIX) for p in search.space):
            out.append(
                (
                    "search.space",
                    "every parameter is a stage_lr multiplier, which the from-scratch arm "
                    "does not have (it trains every layer at lr): its search would tune "
                    "nothing; add another parameter, or finetune.scratch: false",
                )
            )
    return out
