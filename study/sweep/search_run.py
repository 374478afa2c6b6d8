"""Running a search group's trials (issue 11): the body of a trial (which a Ray task, or
each worker of a Ray Train run, calls: study.sweep.remote) and an in-process driver.

A trial trains its group's representative unit (`study.sweep.search.search_unit`) with the
sampled values, as `study.sweep.execute.run_finetune_unit` trains a unit (the same data
subset, model and pretrained weights), but it selects on the validation split only and
never asks the dataset for its test split. A pretraining group's trial trains its
representative pretraining unit as a pretraining worker does (`run_pretrain_trial_worker`:
DDP, the upstream's training folds and validation split), without writing weights. After
each epoch the search metric is reported to the pruner, which decides against the group's
trials stored when the trial started. The trial's row (`SearchTrial`) is its "done":
written once, atomically, when it ends.

`run_search_group` is the sequential driver of one group: it runs the pending trial
numbers in order, each proposed from the study rebuilt from the stored rows, and writes
the chosen values (chosen.json) last, once every trial of the budget has a row. Killed and
run again, it goes on from the stored rows and proposes what an uninterrupted run would
have (study.sweep.search's docstring).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from study.errors import StorageError
from study.schema import search_trial_path, weights_path
from study.store import Store
from study.sweep.execute import (
    finetune_indices,
    finetune_model,
    hardware_string,
    open_prepared,
    unit_fit_config,
    unit_objective,
)
from study.sweep.plan import Plan, Unit
from study.sweep.search import (
    SearchGroup,
    SearchTrial,
    apply_choice,
    pending_numbers,
    read_choice,
    rebuild_study,
    scan_search_trials,
    search_pruner,
    search_unit,
    suggest,
    write_choice,
    write_search_trial,
)
from study.sweep.search_spec import METRICS
from study.sweep.spec import Spec
from study.training import fit, seed_everything

__all__ = [
    "run_search_trial",
    "run_pretrain_trial_worker",
    "run_search_group",
    "search_error_path",
]


class _Pruned(Exception):
    """Raised from `fit`'s epoch callback to stop a trial the pruner stops."""


def _best(values: list[float], metric: str) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    return min(finite) if METRICS[metric] == "minimize" else max(finite)


def run_search_trial(
    store: Store,
    spec: Spec,
    group: SearchGroup,
    unit: Unit,
    number: int,
    params: Mapping[str, Any],
    env: dict,
    device: str = "cpu",
) -> SearchTrial:
    """Train trial `number` of `group` with `params` and store its row.

    The trial trains on the representative unit's training subset and reports the search
    metric after each epoch; with `pruner: asha` it stops when Optuna's
    SuccessiveHalvingPruner says so (after any epoch but the last), deciding against the
    group's trials stored when it started. The test split is never asked for.

    Args:
        unit: the group's representative unit (`search_unit(spec, plan, group)`).
        params: the sampled values (`suggest`).
        env: run facts (code_version; loader_workers).
        device: "cpu" or "cuda".

    Returns:
        The stored row (or the one stored already for `number`, and nothing is run). Its
        state is "complete" (every epoch ran, or early stopping ended it), "pruned" (with
        the epochs it reached) or "failed" (an exception while training, e.g. a non-finite
        loss, or no finite metric at any epoch; the error is kept at `search_error_path`);
        its value is the best value of the metric over the epochs it ran.

    Raises:
        ConfigError: `params` that are not training options.
        StorageError, DataError: the prepared data or the pretrained weights cannot be
            read (not the sampled values' fault: no row is written, the trial runs again).
    """
    if group.section == "pretrain":  # one process: a DDP group's trial is run_pretrain_trial_worker
        return run_pretrain_trial_worker(
            store, spec, group, unit, number, params, env, rank=0, world_size=1, device=device
        )
    unit = Unit.of(apply_choice(unit.config, params), depends_on=unit.depends_on)
    stored = scan_search_trials(store, group.group_id).trials
    done = next((r for r in stored if r.number == number), None)
    if done is not None:  # a trial with a row is never run again
        return done
    c = unit.config
    seed_everything(c.seed)
    data = open_prepared(store, c.data_key)
    obj = unit_objective(unit, data.label_kind, f"{data.name} ({data.path})")
    train_idx, val_idx = finetune_indices(unit, data)
    train, val = data.split(train_idx), data.split(val_idx)
    model = finetune_model(unit, store, data)
    config = unit_fit_config(unit, env, device, obj)
    return _run_trial(
        store, spec, group, number, params, stored, env, device, model, train, val, config
    )


def _run_trial(
    store: Store,
    spec: Spec,
    group: SearchGroup,
    number: int,
    params: Mapping[str, Any],
    stored: list[SearchTrial],
    env: dict,
    device: str,
    model,
    train,
    val,
    config,
    rank: int = 0,
    world_size: int = 1,
) -> SearchTrial | None:
    """Fit `model` as trial `number`, reporting the search metric to the pruner after each
    epoch, and (rank 0) store its row. Under DDP every rank runs this: rank 0 asks the
    pruner and broadcasts its answer, so that every rank stops at the same epoch."""
    search = spec.search
    trial = None
    if search.pruner != "none" and rank == 0:  # the stored trials, their rungs, this one
        study = rebuild_study(group, stored, spec, number=number, pruner=search_pruner(spec))
        trial = study.ask()
    values: list[float] = []

    def on_epoch(state: dict, record: dict) -> None:
        value = float(record[search.metric])
        values.append(value)
        # Never stopped at its last epoch (nothing left to save; as Ray Tune's ASHA ends a
        # trial at max_t): a trial that ran every epoch is complete, and can be chosen.
        if search.pruner == "none" or record["epoch"] >= config.epochs:
            return
        stop = False
        if trial is not None:
            trial.report(value, record["epoch"])
            stop = trial.should_prune()
        if world_size > 1:
            import torch.distributed as dist

            decision = [stop]
            dist.broadcast_object_list(decision, src=0)
            stop = bool(decision[0])
        if stop:
            raise _Pruned

    state, error = "complete", None
    t0 = time.perf_counter()
    try:
        fit(model, train, val, config, on_epoch=on_epoch)
    except _Pruned:
        state = "pruned"
    except Exception as e:  # the sampled values' failure (a NaN loss ...): a row, not a raise
        state, error = "failed", f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - t0
    if rank != 0:
        return None
    value = _best(values, search.metric)
    if state == "complete" and value is None:
        state = "failed"
        error = f"{search.metric} was not finite at any of {len(values)} epochs"
    row = SearchTrial(
        group_id=group.group_id,
        number=number,
        params=dict(params),
        state=state,
        metric=search.metric,
        value=value,
        values=tuple(values),
        epochs=len(values),
        seconds=seconds,
        hardware=hardware_string(device),
        code_version=env.get("code_version", ""),
    )
    if error is not None:  # before the row: the row is the trial's "done"
        store.write_json(
            search_error_path(group.group_id, number), {"number": number, "error": error[:4000]}
        )
    write_search_trial(store, row)
    return row


def run_pretrain_trial_worker(
    store: Store,
    spec: Spec,
    group: SearchGroup,
    unit: Unit,
    number: int,
    params: Mapping[str, Any],
    env: dict,
    rank: int,
    world_size: int,
    device: str = "cpu",
) -> SearchTrial | None:
    """One DDP worker of trial `number` of pretraining group `group` (torch.distributed
    set up by the caller, as for a pretraining unit): the representative pretraining unit
    with `params`, on the upstream's training folds, judged on its validation split after
    each epoch (every rank evaluates it whole, so all see the same value). Rank 0 asks the
    pruner, broadcasts its answer and writes the row (returned; None on other ranks).

    A trial keeps no checkpoint: one whose worker group restarts (a lost node) trains
    again from its first epoch.
    """
    from study.sweep.execute import pretrain_setup

    unit = Unit.of(apply_choice(unit.config, params))
    stored = scan_search_trials(store, group.group_id).trials
    done = next((r for r in stored if r.number == number), None)
    if done is not None:  # every rank reads the same store: all return here alike
        return done if rank == 0 else None
    p = pretrain_setup(unit, store, env, world_size, device)
    return _run_trial(
        store,
        spec,
        group,
        number,
        params,
        stored,
        env,
        device,
        p.trained,
        p.train,
        p.val,
        p.fit_config,
        rank=rank,
        world_size=world_size,
    )


def search_error_path(group_id: str, number: int) -> str:
    """Where a failed trial's error is kept, beside its row (SEARCH_SCHEMA has no column
    for it): results/search/<group_id>/<number:05d>.error.json."""
    return search_trial_path(group_id, number).removesuffix(".parquet") + ".error.json"


def run_search_group(
    store: Store,
    spec: Spec,
    plan: Plan,
    group: SearchGroup,
    env: dict,
    log: Callable[[str], None] = print,
    device: str = "cpu",
) -> dict[str, Any]:
    """Run `group`'s search to its budget, in this process, and return the chosen values.

    Each pending trial number, lowest first, is proposed from the study rebuilt from the
    stored rows and then run; a number with a row is never run again, so a driver run
    again after a kill finishes the budget exactly. chosen.json is written last, when
    every trial number has a row; when it is there, it is returned and nothing runs.

    Raises:
        StorageError: the pretrained arm's weights are not in the store (run the
            pretraining unit first), or the store cannot be read or written.
        TrainingError: every trial failed or was pruned (nothing to choose).
    """
    chosen = read_choice(store, group)
    if chosen is not None:
        return chosen
    unit = search_unit(spec, plan, group)
    if unit.depends_on and not store.exists(weights_path(unit.depends_on)):
        # checked once here: otherwise each trial would fail alike, spending the budget
        raise StorageError(
            f"search group {group.group_id} starts from pretraining unit {unit.depends_on}, "
            f"whose weights are not in store {store.uri}: run it first"
        )
    rows = scan_search_trials(store, group.group_id).trials
    for number in pending_numbers(group, rows, spec):
        params = suggest(group, rows, spec, number)
        row = run_search_trial(store, spec, group, unit, number, params, env, device)
        best = "" if row.value is None else f", {row.metric} {row.value:.4g}"
        log(f"search {group.group_id} trial {number}: {row.state} after {row.epochs} epochs{best}")
        rows = scan_search_trials(store, group.group_id).trials
    chosen = write_choice(store, spec, group, rows)
    log(f"search {group.group_id}: chose {chosen}")
    return chosen
