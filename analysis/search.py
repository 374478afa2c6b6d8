"""The hyperparameter searches of a study (issue 11), from their stored rows only: per search
group the optimisation history, the parameter importances (Optuna's fANOVA), the chosen
values, and a table comparing the chosen values between the arms.

A group's rows are results/search/<group_id>/<number:05d>.parquet (SEARCH_SCHEMA, one row
per finished trial) and its chosen values results/search/<group_id>/chosen.json, written
when its budget is spent. A part that cannot be read is skipped with a warning on stderr
naming it (as analysis.load does for result parts); other files (e.g. *.error.json) are
not read.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import matplotlib
import numpy as np
import optuna
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
from matplotlib.ticker import MaxNLocator

from analysis.figures import _STYLE, PALETTE, _new_figure, save_figure
from analysis.page import PageFigure, PageTable, Section
from study.errors import StorageError
from study.schema import SEARCH_SCHEMA, read_search_part, search_choice_path, search_trial_path
from study.store import Store

__all__ = [
    "SEARCH_METRICS",
    "SearchGroupResult",
    "load_search",
    "search_history_figure",
    "plot_search_history",
    "param_importances",
    "group_table",
    "chosen_by_arm",
    "NOT_ENOUGH_TRIALS",
    "search_section",
]

#: The metrics a search may optimise and their directions: a copy of
#: study.sweep.search_spec.METRICS (analysis never imports the sweep layer; a test checks
#: that the two are equal).
SEARCH_METRICS: dict[str, Literal["minimize", "maximize"]] = {
    "val_loss": "minimize",
    "val_macro_auroc": "maximize",
    "val_macro_f1": "maximize",
    "val_weighted_f1": "maximize",
}
#: What a group's importance column says when fANOVA has too little to go on.
NOT_ENOUGH_TRIALS = "not enough trials"
_STATES = ("complete", "pruned", "failed")
_SEARCH_DIR = search_trial_path("g", 0).split("/g/")[0]  # results/search


@dataclass(frozen=True)
class SearchGroupResult:
    """One search group as stored.

    Attributes:
        group_id: the group's id (its folder's name).
        rows: the readable trials in number order, SEARCH_SCHEMA's columns with `params`
            decoded (a dict per row).
        chosen: the chosen values (parameter -> value) from chosen.json; None while the
            group's budget is not spent (or chosen.json cannot be read).
        metric: the validation metric searched.
        direction: "minimize" or "maximize" (SEARCH_METRICS).
        key: the group's key (axis -> value) when chosen.json holds it ("key"); else None.
        arm: "pretrained" or "scratch" when chosen.json says so ("arm", or `init` in its
            key); None when it does not, or when both arms share the group.
    """

    group_id: str
    rows: pd.DataFrame
    chosen: dict[str, Any] | None
    metric: str
    direction: Literal["minimize", "maximize"]
    key: dict[str, Any] | None = None
    arm: str | None = None

    def count(self, state: str) -> int:
        return int((self.rows["state"] == state).sum()) if not self.rows.empty else 0


def _warn(uri: str, rel: str, why: str) -> None:
    print(f"warning: skipping {uri}/{rel}: {why}", file=sys.stderr, flush=True)


def _group_ids(store: Store) -> list[str]:
    """The folders under results/search, by name."""
    selector = pafs.FileSelector(store.path(_SEARCH_DIR), allow_not_found=True, recursive=False)
    try:
        infos = store.fs.get_file_info(selector)
    except OSError as e:
        raise StorageError(f"cannot list {_SEARCH_DIR} in store {store.uri}: {e}") from None
    return sorted(
        i.base_name
        for i in infos
        if i.type == pafs.FileType.Directory and not i.base_name.startswith((".", "_"))
    )


def _read_row(data: bytes, group_id: str, name: str) -> dict[str, Any]:
    """The one row of a trial part, params decoded; ValueError/ArrowException if it is not
    one."""
    row = read_search_part(data)
    if (
        row["group_id"] != group_id
        or row["number"] is None
        or name != f"{row['number']:05d}.parquet"
    ):
        raise ValueError(f"holds trial {row['number']} of group {row['group_id']}")
    if row["state"] not in _STATES:
        raise ValueError(f"state {row['state']!r} is not one of {', '.join(_STATES)}")
    if row["metric"] not in SEARCH_METRICS:
        raise ValueError(f"unknown metric {row['metric']!r}")
    params = json.loads(row["params"] or "null")
    if not isinstance(params, dict):
        raise ValueError(f"params are not a JSON object, got {row['params']!r}")
    row["params"] = params
    return row


def _read_choice(store: Store, group_id: str) -> dict[str, Any] | None:
    rel = search_choice_path(group_id)
    data = store.read_if_exists(rel)
    if data is None:
        return None
    try:
        choice = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        _warn(store.uri, rel, f"not JSON ({e})")
        return None
    if not isinstance(choice, dict) or not isinstance(choice.get("params"), dict):
        _warn(store.uri, rel, "no 'params' object")
        return None
    return choice


def _key(raw: object) -> dict[str, Any] | None:
    """A group key as chosen.json may hold it: {axis: value} or [[axis, value], ...]."""
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, list) and all(isinstance(kv, list | tuple) and len(kv) == 2 for kv in raw):
        return {str(k): v for k, v in raw}
    return None


def load_search(store: Store) -> dict[str, SearchGroupResult]:
    """Every search group of the study in `store`, by group id (sorted).

    A group is reported when it has a readable trial or a readable chosen.json. Trial parts
    that cannot be read (not Parquet, not one row of SEARCH_SCHEMA, another group's or
    number's row, an unknown state or metric, params not a JSON object) and rows of another
    metric than the group's are skipped with a warning on stderr naming the file.

    Returns:
        {} when the study has no results/search.

    Raises:
        StorageError: the store cannot be listed or read.
    """
    out: dict[str, SearchGroupResult] = {}
    for group_id in _group_ids(store):
        rel_dir = f"{_SEARCH_DIR}/{group_id}"
        rows = []
        for name in store.list_names(rel_dir, ".parquet"):
            data = store.read_if_exists(f"{rel_dir}/{name}")
            if data is None:  # removed since the listing
                continue
            try:
                rows.append(_read_row(data, group_id, name))
            except (pa.ArrowException, ValueError, TypeError) as e:
                _warn(store.uri, f"{rel_dir}/{name}", " ".join(str(e).split())[:200])
        choice = _read_choice(store, group_id)
        metric = (choice or {}).get("metric") or (rows[0]["metric"] if rows else None)
        if metric not in SEARCH_METRICS:
            if rows or choice:
                _warn(store.uri, rel_dir, f"no known metric ({metric!r})")
            continue
        kept = []
        for row in rows:
            if row["metric"] != metric:
                _warn(
                    store.uri,
                    search_trial_path(group_id, row["number"]),
                    f"searched {row['metric']}, the group {metric}",
                )
            else:
                kept.append(row)
        frame = pd.DataFrame(kept, columns=SEARCH_SCHEMA.names)
        frame = frame.sort_values("number", ignore_index=True)
        key = _key((choice or {}).get("key"))
        arm = (choice or {}).get("arm") or (key or {}).get("init")
        out[group_id] = SearchGroupResult(
            group_id=group_id,
            rows=frame,
            chosen=dict(choice["params"]) if choice else None,
            metric=metric,
            direction=SEARCH_METRICS[metric],
            key=key,
            arm=arm if arm in ("pretrained", "scratch") else None,
        )
    return out


# --- the optimisation history ------------------------------------------------------------

_STATE_STYLE = {  # colour, marker, filled: each state readable in greyscale too
    "complete": (PALETTE["blue"], "o", True),
    "pruned": (PALETTE["orange"], "s", False),
    "failed": (PALETTE["vermillion"], "x", True),
}


def _shown_value(row: pd.Series) -> float | None:
    """A trial's point: its value, or for a pruned trial without one its last epoch's."""
    value = row["value"]
    if value is not None and not pd.isna(value):
        return float(value)
    values = [v for v in (row["values"] if row["values"] is not None else ()) if math.isfinite(v)]
    return float(values[-1]) if values and row["state"] != "failed" else None


def search_history_figure(result: SearchGroupResult, title: str | None = None):
    """The optimisation history of one group: the metric of each trial against its number
    (complete: filled circles; pruned: open squares, at the best value reached before it
    was stopped; failed, or without any value: crosses on the lower edge), and the best
    complete value so far as a step line.

    Returns:
        A matplotlib Figure (not saved).
    """
    with matplotlib.rc_context(_STYLE):
        figure = _new_figure(6.4, 3.8)
        ax = figure.add_subplot()
        rows = result.rows
        for state in _STATES:
            colour, marker, filled = _STATE_STYLE[state]
            part = rows[rows["state"] == state]
            shown = [(int(r["number"]), _shown_value(r)) for _, r in part.iterrows()]
            with_value = [(n, v) for n, v in shown if v is not None]
            without = [n for n, v in shown if v is None]
            label = f"{state} ({len(part)})"
            if with_value:
                xs, ys = zip(*with_value, strict=True)
                ax.plot(
                    xs,
                    ys,
                    linestyle="none",
                    marker=marker,
                    markersize=6,
                    color=colour,
                    markerfacecolor=colour if filled else "white",
                    label=label,
                )
                label = None
            if without:
                ax.plot(
                    without,
                    [0.02] * len(without),
                    linestyle="none",
                    marker="x",
                    markersize=7,
                    color=colour,
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                    label=label,
                )
        complete = rows[rows["state"] == "complete"]
        if not complete.empty:
            values = complete["value"].astype(float).to_numpy()
            best = (
                np.minimum.accumulate(values)
                if result.direction == "minimize"
                else np.maximum.accumulate(values)
            )
            numbers = complete["number"].astype(int).to_numpy()
            last = int(rows["number"].max())
            ax.step(
                [*numbers, last],
                [*best, best[-1]],
                where="post",
                color=PALETTE["black"],
                linestyle="--",
                label="best so far",
            )
        ax.set_xlabel("trial number")
        ax.set_ylabel(
            f"{result.metric} ({'lower' if result.direction == 'minimize' else 'higher'} is better)"
        )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title or f"Search {result.group_id}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return figure


def plot_search_history(result: SearchGroupResult, path: str | Path, title: str | None = None):
    """Save `search_history_figure` as a PNG at DPI; returns the path."""
    return save_figure(search_history_figure(result, title), path)


# --- parameter importances ---------------------------------------------------------------


def _distribution(values: list) -> optuna.distributions.BaseDistribution:
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return optuna.distributions.IntDistribution(min(values), max(values))
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        low, high = float(min(values)), float(max(values))
        return optuna.distributions.FloatDistribution(low, high, log=low > 0 and high / low >= 100)
    return optuna.distributions.CategoricalDistribution(sorted(set(values), key=repr))


def param_importances(result: SearchGroupResult, seed: int = 0) -> pd.Series | None:
    """Each varying parameter's importance for the group's metric: Optuna's fANOVA
    (FanovaImportanceEvaluator(seed)) on an in-memory study of the group's complete trials.

    The stored rows do not carry the search space, so the distributions are rebuilt from
    the values observed in the complete trials: a number parameter is a FloatDistribution
    over [min, max] (log scale when every value is > 0 and max/min >= 100), an integer one
    an IntDistribution over [min, max], anything else a CategoricalDistribution over the
    observed choices. A parameter with one observed value, or missing from a complete
    trial, is left out. So the importances describe the region the search explored, not
    the whole space of the spec.

    Returns:
        parameter -> importance (summing to 1), most important first; None when there are
        fewer than 2 complete trials or no parameter varies.
    """
    complete = result.rows[result.rows["state"] == "complete"]
    if len(complete) < 2:
        return None
    params = list(complete["params"])
    names = sorted(set.intersection(*(set(p) for p in params)))
    distributions = {}
    for name in names:
        values = [p[name] for p in params]
        values = [json.dumps(v) if isinstance(v, list | dict) else v for v in values]
        if len({json.dumps(v, sort_keys=True) for v in values}) > 1:
            distributions[name] = _distribution(values)
    if not distributions:
        return None
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" lines
    try:
        study = optuna.create_study(direction=result.direction)
        for p, value in zip(params, complete["value"], strict=True):
            shown = {
                n: json.dumps(p[n]) if isinstance(p[n], list | dict) else p[n]
                for n in distributions
            }
            study.add_trial(
                optuna.trial.create_trial(
                    params=shown, distributions=distributions, value=float(value)
                )
            )
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed)
        )
    finally:
        optuna.logging.set_verbosity(verbosity)
    return pd.Series(importances, name="importance", dtype=float)


def group_table(result: SearchGroupResult, seed: int = 0) -> pd.DataFrame:
    """One row per parameter of the group: its chosen value (None until chosen) and its
    fANOVA importance (`param_importances`; NOT_ENOUGH_TRIALS when there is too little to
    compute it), most important first."""
    params: set[str] = set(result.chosen or {})
    for p in result.rows["params"]:
        params.update(p)
    importances = param_importances(result, seed)
    rows = []
    for name in sorted(params):
        if importances is None:
            importance: object = NOT_ENOUGH_TRIALS
        else:
            importance = float(importances[name]) if name in importances else None
        rows.append(
            {"parameter": name, "chosen": (result.chosen or {}).get(name), "importance": importance}
        )
    frame = pd.DataFrame(rows, columns=["parameter", "chosen", "importance"])
    if importances is not None and not frame.empty:
        order = frame["importance"].astype(float).fillna(-1.0)
        frame = frame.iloc[np.argsort(-order.to_numpy(), kind="stable")].reset_index(drop=True)
    return frame


# --- the arms ----------------------------------------------------------------------------


def chosen_by_arm(results: Mapping[str, SearchGroupResult]) -> pd.DataFrame:
    """The chosen values of the pretrained and the from-scratch arm side by side: one row
    per (group key without `init`, parameter), with the key's axes as columns, then
    `parameter`, `pretrained`, `scratch` (the chosen value, None where that arm has no such
    parameter or no chosen values yet) and the two group ids.

    Only groups whose chosen.json holds their key and arm take part (both arms need their
    own group: `init` in group_by); the frame is empty when none does.
    """
    cells: dict[tuple, dict[str, Any]] = {}
    axes: list[str] = []
    for result in results.values():
        if result.key is None or result.arm is None or result.chosen is None:
            continue
        key = {k: v for k, v in result.key.items() if k != "init"}
        axes.extend(k for k in key if k not in axes)
        ident = tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in key.items()))
        cell = cells.setdefault(ident, {"key": key})
        cell[result.arm] = result
    rows = []
    for cell in cells.values():
        pre, scratch = cell.get("pretrained"), cell.get("scratch")
        params = sorted(set(pre.chosen if pre else {}) | set(scratch.chosen if scratch else {}))
        for name in params:
            rows.append(
                {
                    **{a: cell["key"].get(a) for a in axes},
                    "parameter": name,
                    "pretrained": pre.chosen.get(name) if pre else None,
                    "scratch": scratch.chosen.get(name) if scratch else None,
                    "pretrained_group": pre.group_id if pre else None,
                    "scratch_group": scratch.group_id if scratch else None,
                }
            )
    columns = [*axes, "parameter", "pretrained", "scratch", "pretrained_group", "scratch_group"]
    frame = pd.DataFrame(rows, columns=columns)
    if frame.empty:
        return frame
    order = [*axes, "parameter"]
    return frame.sort_values(order, key=lambda s: s.astype(str), ignore_index=True)


# --- the report's section ----------------------------------------------------------------


def _group_words(result: SearchGroupResult) -> str:
    if result.key:
        key = ", ".join(f"{k} {v}" for k, v in result.key.items())
        return f"search group {result.group_id} ({key})"
    return f"search group {result.group_id}"


def search_section(
    results: Mapping[str, SearchGroupResult], out: str | Path, seed: int = 0
) -> tuple[Section, list[Path]]:
    """The report page's "Hyperparameter search" section and the files it wrote into `out`:
    per group its history figure (search_history_<group_id>.png) and a table of its
    parameters (chosen value, fANOVA importance); then the arms' chosen values side by side
    (`chosen_by_arm`) when chosen.json says which group is which arm."""
    out = Path(out)
    figures, tables, paragraphs = [], [], []
    for group_id, result in results.items():
        words = _group_words(result)
        counts = ", ".join(f"{result.count(s)} {s}" for s in _STATES)
        done = "values chosen" if result.chosen is not None else "budget not spent yet"
        better = "lower" if result.direction == "minimize" else "higher"
        paragraphs.append(
            f"{words.capitalize()}: {len(result.rows)} trials stored ({counts}) on "
            f"{result.metric} ({better} is better); {done}."
        )
        if not result.rows.empty:
            path = plot_search_history(result, out / f"search_history_{group_id}.png", words)
            figures.append(
                PageFigure(
                    path,
                    f"Optimisation history of {words}: {result.metric} of each trial by its "
                    "number (circles: complete; open squares: pruned, at the best value "
                    "reached before it was stopped; crosses on the lower edge: failed or "
                    "without a value) and the best complete value so far (dashed).",
                    f"optimisation history of {group_id}",
                )
            )
        tables.append(
            PageTable(
                f"Parameters of {words}: the chosen value and the fANOVA importance (Optuna, "
                "over the range the complete trials explored; they sum to 1).",
                group_table(result, seed),
                {"importance": ".3f"},
            )
        )
    by_arm = chosen_by_arm(results)
    if not by_arm.empty:
        tables.append(
            PageTable(
                "Chosen values per arm: each group key (without init) and parameter, the "
                "value chosen by the pretrained arm's search and by the from-scratch arm's.",
                by_arm,
            )
        )
    else:
        paragraphs.append(
            "The chosen values are not compared between arms: no stored choice says which "
            "arm's search it is (or the arms share one search: init not in group_by)."
        )
    section = Section(
        "Hyperparameter search", paragraphs=paragraphs, figures=figures, tables=tables
    )
    return section, [Path(f.path) for f in figures]
