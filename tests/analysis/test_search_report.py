"""analysis.search on search rows written in the exact on-disk format (SEARCH_SCHEMA parts
through the Store, chosen.json as study.sweep.search_run writes it): the loader, the history
figure, the fANOVA importances, the arms' table and the report page's section."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import report_study
from analysis.search import (
    NOT_ENOUGH_TRIALS,
    SEARCH_METRICS,
    chosen_by_arm,
    group_table,
    load_search,
    param_importances,
    plot_search_history,
)
from study.schema import search_choice_path, search_trial_path
from study.store import Store
from study.sweep.search import SearchTrial, write_search_trial
from tests.analysis.test_study_report import study  # noqa: F401 (a fixture)

G1, G2 = "sg-00000000000000a1", "sg-00000000000000b2"


def _trial(group: str, number: int, params: dict, state: str = "complete", value=None, **kw):
    if value is None and state == "complete":
        value = 0.5
    values = kw.pop("values", () if value is None else (value + 0.1, value))
    return SearchTrial(
        group_id=group,
        number=number,
        params=params,
        state=state,
        metric=kw.pop("metric", "val_loss"),
        value=value,
        values=values,
        epochs=len(values),
        **kw,
    )


def _toy_group(store: Store, group: str, n: int = 24, seed: int = 0) -> None:
    """A group where `lr` alone sets val_loss (a bowl in log lr); `dropout` and the batch
    size are noise-free distractors that change nothing."""
    rng = np.random.default_rng(seed)
    for number in range(n):
        lr = float(10 ** rng.uniform(-5, -1))
        params = {
            "lr": lr,
            "dropout": float(rng.uniform(0.0, 0.5)),
            "batch_size": int(rng.choice([16, 32, 64])),
        }
        value = (math.log10(lr) + 3.0) ** 2
        write_search_trial(store, _trial(group, number, params, value=value))


def test_the_metric_directions_are_the_sweep_layers():
    from study.sweep.search_spec import METRICS

    assert SEARCH_METRICS == METRICS


def test_no_search_is_no_group(tmp_path):
    assert load_search(Store(str(tmp_path / "s"))) == {}


def test_load_search_reads_rows_and_choice_and_skips_a_corrupt_part(tmp_path, capsys):
    store = Store(str(tmp_path / "s"))
    write_search_trial(store, _trial(G1, 0, {"lr": 1e-3}, value=0.4))
    write_search_trial(store, _trial(G1, 1, {"lr": 1e-2}, state="pruned", value=0.9))
    write_search_trial(store, _trial(G1, 2, {"lr": 1e-5}, state="failed"))
    store.write_bytes(search_trial_path(G1, 3), b"not parquet")
    store.write_json(f"results/search/{G1}/00004.error.json", {"error": "boom"})  # not read
    store.write_json(
        search_choice_path(G1), {"group_id": G1, "metric": "val_loss", "params": {"lr": 1e-3}}
    )
    write_search_trial(
        store, _trial(G2, 0, {"lr": 1e-3}, value=0.7, metric="val_macro_auroc")
    )  # not chosen yet

    found = load_search(store)

    assert sorted(found) == [G1, G2]
    g1 = found[G1]
    assert list(g1.rows["number"]) == [0, 1, 2]
    assert list(g1.rows["state"]) == ["complete", "pruned", "failed"]
    assert g1.rows["params"][0] == {"lr": 1e-3}
    assert g1.chosen == {"lr": 1e-3}
    assert (g1.metric, g1.direction) == ("val_loss", "minimize")
    assert (g1.key, g1.arm) == (None, None)  # the writer does not store them (yet)
    assert (g1.count("complete"), g1.count("pruned"), g1.count("failed")) == (1, 1, 1)
    assert found[G2].chosen is None and found[G2].direction == "maximize"
    err = capsys.readouterr().err
    assert f"results/search/{G1}/00003.parquet" in err and "warning: skipping" in err
    assert "error.json" not in err


def test_a_part_of_another_number_or_group_is_skipped(tmp_path, capsys):
    store = Store(str(tmp_path / "s"))
    write_search_trial(store, _trial(G1, 0, {"lr": 1e-3}))
    store.write_table(search_trial_path(G1, 1), _trial(G2, 1, {"lr": 1e-3}).to_table())
    store.write_table(search_trial_path(G1, 2), _trial(G1, 7, {"lr": 1e-3}).to_table())
    found = load_search(store)
    assert list(found[G1].rows["number"]) == [0]
    err = capsys.readouterr().err
    assert "00001.parquet" in err and "00002.parquet" in err


def test_the_history_figure_is_written(tmp_path):
    store = Store(str(tmp_path / "s"))
    _toy_group(store, G1, n=6)
    write_search_trial(store, _trial(G1, 6, {"lr": 1e-2}, state="pruned", value=None))
    write_search_trial(
        store, _trial(G1, 7, {"lr": 1e-2}, state="pruned", value=None, values=(1.0, 0.9))
    )
    write_search_trial(store, _trial(G1, 8, {"lr": 1e-5}, state="failed"))
    path = plot_search_history(load_search(store)[G1], tmp_path / "out" / "history.png")
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fanova_ranks_the_parameter_that_sets_the_value_first(tmp_path):
    store = Store(str(tmp_path / "s"))
    _toy_group(store, G1)
    write_search_trial(store, _trial(G1, 24, {"lr": 1e-3}, state="failed"))  # left out
    result = load_search(store)[G1]
    importances = param_importances(result)
    assert list(importances.index)[0] == "lr", importances
    assert importances["lr"] > 0.8 and math.isclose(importances.sum(), 1.0)
    table = group_table(result)
    assert list(table["parameter"])[0] == "lr"
    assert table["chosen"].isna().all()  # no chosen.json yet


@pytest.mark.parametrize(
    "trials",
    [
        [({"lr": 1e-3}, "complete")],  # one complete trial
        [({"lr": 1e-3}, "complete"), ({"lr": 1e-3}, "complete")],  # nothing varies
        [({"lr": 1e-3}, "complete"), ({"lr": 1e-2}, "pruned")],  # one complete
    ],
)
def test_too_few_trials_say_so_in_the_table(tmp_path, trials):
    store = Store(str(tmp_path / "s"))
    for number, (params, state) in enumerate(trials):
        write_search_trial(store, _trial(G1, number, params, state=state, value=0.3 + number))
    result = load_search(store)[G1]
    assert param_importances(result) is None
    assert list(group_table(result)["importance"]) == [NOT_ENOUGH_TRIALS]


def _choice(store: Store, group: str, params: dict, arm: str, key: list | dict) -> None:
    store.write_json(
        search_choice_path(group),
        {"group_id": group, "metric": "val_loss", "params": params, "key": key, "arm": arm},
    )


def test_the_arms_chosen_values_side_by_side(tmp_path):
    store = Store(str(tmp_path / "s"))
    groups = {
        "sg-pre-ptbxl": ("pretrained", "cpsc2018", {"lr": 1e-4, "stage_lr.stages.0": 0.1}),
        "sg-scr-ptbxl": ("scratch", "cpsc2018", {"lr": 1e-3}),
        "sg-pre-other": ("pretrained", "chapman", {"lr": 3e-4}),
    }
    for group, (arm, downstream, params) in groups.items():
        write_search_trial(store, _trial(group, 0, params))
        key = [["architecture", "resnet1d18"], ["downstream", downstream], ["init", arm]]
        _choice(store, group, params, arm, key)
    _choice(store, G2, {"lr": 1e-2}, "scratch", {"architecture": "x"})  # chosen, no rows
    found = load_search(store)
    assert found["sg-pre-ptbxl"].key == {
        "architecture": "resnet1d18",
        "downstream": "cpsc2018",
        "init": "pretrained",
    }
    table = chosen_by_arm(found)
    assert list(table.columns) == [
        "architecture",
        "downstream",
        "parameter",
        "pretrained",
        "scratch",
        "pretrained_group",
        "scratch_group",
    ]
    cpsc = table[table["downstream"] == "cpsc2018"].set_index("parameter")
    assert cpsc.loc["lr", "pretrained"] == 1e-4 and cpsc.loc["lr", "scratch"] == 1e-3
    assert cpsc.loc["stage_lr.stages.0", "pretrained"] == 0.1
    assert pd.isna(cpsc.loc["stage_lr.stages.0", "scratch"])  # the scratch arm has none
    assert set(cpsc["scratch_group"]) == {"sg-scr-ptbxl"}
    chapman = table[table["downstream"] == "chapman"]
    assert len(chapman) == 1 and chapman["scratch"].isna().all()  # no scratch group
    assert len(table[table["architecture"] == "x"]) == 1


def test_without_key_and_arm_there_is_no_arm_table(tmp_path):
    store = Store(str(tmp_path / "s"))
    write_search_trial(store, _trial(G1, 0, {"lr": 1e-3}))
    store.write_json(
        search_choice_path(G1), {"group_id": G1, "metric": "val_loss", "params": {"lr": 1e-3}}
    )
    assert chosen_by_arm(load_search(store)).empty


def test_the_report_page_has_the_search_section(study, tmp_path):  # noqa: F811
    _toy_group(study, G1, n=8)
    _choice(study, G1, {"lr": 1e-3}, "pretrained", [["downstream", "cpsc2018"]])
    write_search_trial(study, _trial(G2, 0, {"lr": 1e-3}))
    _choice(study, G2, {"lr": 1e-2}, "scratch", [["downstream", "cpsc2018"]])
    out = tmp_path / "report"
    paths = report_study(study.uri, out, n_boot=0, log=lambda line: None)
    assert f"search_history_{G1}.png" in paths and f"search_history_{G2}.png" in paths
    html = paths["index.html"].read_text()
    assert "Hyperparameter search" in html
    assert "Chosen values per arm" in html
    assert f"Optimisation history of search group {G1}" in html
    assert html.index("Hyperparameter search") < html.index("The study&#x27;s spec")


def test_no_search_no_section(study, tmp_path):  # noqa: F811
    paths = report_study(study.uri, tmp_path / "report", n_boot=0, log=lambda line: None)
    assert not [p for p in paths if p.startswith("search_")]
    assert "Hyperparameter search" not in paths["index.html"].read_text()
