"""analysis.figures: files written, words not ids, legible sizes, colour-blind-safe colours."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import Collection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.text import Text

from analysis import figures
from analysis.figures import (
    DIVERGING_CMAP,
    PALETTE,
    architecture_words,
    arm_words,
    critical_difference_figure,
    dataset_words,
    figure_texts,
    gain_heatmap_figures,
    gain_vs_fraction_figures,
    gain_vs_freeze_figures,
    learning_curve_figures,
    plot_critical_difference,
    plot_gain_heatmap,
    plot_gain_vs_fraction,
    plot_gain_vs_freeze,
    plot_learning_curves,
)
from study.errors import DataError

UNIT_ID = re.compile(r"\b(?:pt|ft|sc)-[0-9a-f]{16}\b")
# Column names and codes a reader of the paper should never see in a figure.
RAW_NAMES = (
    "mean_diff",
    "data_fraction",
    "freeze_depth",
    "pretrain_task",
    "test_macro_auroc",
    "ci_low",
    "boot_low",
    "holm_p",
    "val_loss",
    "unit_id",
    "pretrained:",
    "freeze=",
    "ptbxl",
    "icentia11k",
    "resnet1d18",
)
MIN_POINTS = 9.0
# Okabe-Ito, and neutral greys (axes, text, reference lines) which read in any colour vision.
ALLOWED = {to_rgba(c)[:3] for c in PALETTE.values()}
DIVERGING_OK = {"RdBu", "RdBu_r", "PuOr", "PuOr_r", "coolwarm"}


def make_paired(boot: bool = True, holm: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for arch, down, (up, task), depth, fraction in itertools.product(
        ["resnet1d18[base_width=16]", "resnet18v2"],
        ["cinc2017", "cpsc2018"],
        [("ptbxl", "classification"), ("icentia11k", "future")],
        [0, 2],
        [0.01, 0.1, 1.0],
    ):
        gain = float(rng.normal(0.03 / (10 * fraction + 0.5), 0.01))
        row = {
            "metric": "test_macro_auroc",
            "downstream": down,
            "architecture": arch,
            "arm": f"pretrained:{up}/{task}/freeze={depth}",
            "upstream": up,
            "pretrain_task": task,
            "freeze_depth": depth,
            "data_fraction": fraction,
            "n_pairs": 5,
            "mean_diff": gain,
            "ci_low": gain - 0.02,
            "ci_high": gain + 0.02,
        }
        if boot:
            row |= {"boot_low": gain - 0.03, "boot_high": gain + 0.025}
        if holm:
            row["holm_p"] = 0.001 if down == "cinc2017" else 0.4
        rows.append(row)
    return pd.DataFrame(rows)


def make_curves() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(1)
    trials, epochs = [], []
    arms = [None, ("ptbxl", "classification", 0), ("ptbxl", "classification", 2)]
    for n, (down, fraction, repeat, arm) in enumerate(
        itertools.product(["cinc2017", "cpsc2018"], [0.1, 1.0], range(3), arms)
    ):
        uid = f"{'sc' if arm is None else 'ft'}-{n:016x}"
        trials.append(
            {
                "unit_id": uid,
                "init": "scratch" if arm is None else "pretrained",
                "upstream": None if arm is None else arm[0],
                "pretrain_task": None if arm is None else arm[1],
                "freeze_depth": 0 if arm is None else arm[2],
                "architecture": "resnet1d18",
                "downstream": down,
                "data_fraction": fraction,
                "repeat": repeat,
            }
        )
        start = 1.2 if arm is None else 0.8
        for epoch in range(1, int(rng.integers(8, 12)) + 1):
            loss = start * np.exp(-epoch / 4) + 0.3 + rng.normal(0, 0.01)
            epochs.append({"unit_id": uid, "epoch": epoch, "val_loss": loss, "train_loss": 1.0})
    return pd.DataFrame(trials), pd.DataFrame(epochs)


RANKS = pd.Series(
    {
        "scratch": 3.4,
        "pretrained:ptbxl/classification/freeze=0": 1.5,
        "pretrained:ptbxl/classification/freeze=2": 2.1,
        "pretrained:icentia11k/future/freeze=0": 2.6,
        "pretrained:icentia11k/beat/freeze=0": 5.4,
    }
)


def all_figures() -> list[tuple[str, Figure]]:
    paired = make_paired()
    trials, epochs = make_curves()
    built = [
        *(("fraction", f) for f in gain_vs_fraction_figures(paired, "macro AUROC")),
        *(("freeze", f) for f in gain_vs_freeze_figures(paired, "macro AUROC")),
        *(("heatmap", f) for f in gain_heatmap_figures(paired, "macro AUROC")),
        ("cd", critical_difference_figure(RANKS, 1.2, "Arms ranked by macro AUROC")),
        *(("curves", f) for f in learning_curve_figures(trials, epochs)),
    ]
    return built


@pytest.fixture(scope="module")
def built() -> list[tuple[str, Figure]]:
    return all_figures()


def _colours(figure: Figure) -> tuple[set[tuple[float, float, float]], set[str]]:
    """The RGB colours drawn (alpha ignored, invisible ones left out) and the colour maps."""
    colours: list = []
    cmaps: set[str] = set()
    for artist in figure.findobj():
        if not artist.get_visible() or artist.get_alpha() == 0:
            continue
        if isinstance(artist, AxesImage) or (
            isinstance(artist, Collection) and artist.get_array() is not None
        ):
            cmaps.add(artist.get_cmap().name)  # data mapped through a colour map
            continue
        if isinstance(artist, Line2D):
            colours += [artist.get_color(), artist.get_markerfacecolor()]
            colours.append(artist.get_markeredgecolor())
        elif isinstance(artist, Collection):
            colours += list(artist.get_facecolors()) + list(artist.get_edgecolors())
        elif isinstance(artist, Patch):
            colours += [artist.get_facecolor(), artist.get_edgecolor()]
        elif isinstance(artist, Text):
            colours.append(artist.get_color())
    rgb = set()
    for colour in colours:
        if isinstance(colour, str) and colour.lower() == "none":
            continue
        rgba = to_rgba(colour)
        if rgba[3] == 0:
            continue
        rgb.add(tuple(round(float(c), 4) for c in rgba[:3]))
    return rgb, cmaps


def _allowed(rgb: tuple[float, float, float]) -> bool:
    neutral = max(rgb) - min(rgb) < 0.01  # black, white, greys
    return neutral or any(np.allclose(rgb, ok, atol=0.003) for ok in ALLOWED)


def test_figures_have_words_not_ids(built) -> None:
    for name, figure in built:
        texts = [t.get_text() for t in figure_texts(figure)]
        assert texts, name
        for text in texts:
            assert not UNIT_ID.search(text), (name, text)
            for raw in RAW_NAMES:
                assert raw not in text, (name, raw, text)


def test_figures_are_legible(built) -> None:
    for name, figure in built:
        small = [
            (t.get_text(), t.get_fontsize())
            for t in figure_texts(figure)
            if t.get_fontsize() < MIN_POINTS
        ]
        assert not small, (name, small)
        assert figure.dpi == figures.DPI


def test_figures_use_colour_blind_safe_colours(built) -> None:
    for name, figure in built:
        rgb, cmaps = _colours(figure)
        bad = sorted(c for c in rgb if not _allowed(c))
        assert not bad, (name, bad)
        assert cmaps <= DIVERGING_OK, (name, cmaps)
        # the series are told apart by colour: something other than greys is drawn
        if name in ("fraction", "freeze", "curves"):
            assert any(not max(c) - min(c) < 0.01 for c in rgb), name


def test_series_differ_by_marker_or_line_style_too(built) -> None:
    """Greyscale: every pretrained arm in a panel differs from the others by marker or dash."""
    for name, figure in built:
        if name not in ("fraction", "curves"):
            continue
        for ax in figure.axes:
            styles = [
                (line.get_marker(), line.get_linestyle())
                for line in ax.get_lines()
                if len(line.get_xdata()) > 1 and line.get_linestyle() not in ("None", "")
            ]
            assert len(styles) == len(set(styles)), (name, styles)


@pytest.mark.parametrize(
    "plot",
    [
        lambda p, path: plot_gain_vs_fraction(make_paired(), "macro AUROC", path),
        lambda p, path: plot_gain_vs_freeze(make_paired(), "macro AUROC", path),
        lambda p, path: plot_gain_heatmap(make_paired(), "macro AUROC", path),
        lambda p, path: [plot_critical_difference(RANKS, 1.2, path, "Ranks")],
        lambda p, path: plot_learning_curves(*make_curves(), path),
    ],
    ids=["fraction", "freeze", "heatmap", "cd", "curves"],
)
def test_plot_writes_a_png(plot, tmp_path) -> None:
    path = tmp_path / "sub" / "figure.png"
    written = plot(None, path)
    assert written[0] == path
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000  # a drawn figure, not an empty canvas


def test_panels_beyond_the_cap_go_to_further_files(tmp_path) -> None:
    written = plot_gain_vs_fraction(
        make_paired(), "macro AUROC", tmp_path / "gain.png", max_panels=3
    )
    # 2 architectures x 2 downstreams = 4 panels: 3 + 1
    assert [p.name for p in written] == ["gain.png", "gain_2.png"]
    assert all(p.stat().st_size > 10_000 for p in written)
    pages = gain_vs_fraction_figures(make_paired(), "macro AUROC", max_panels=3)
    assert [len([a for a in f.axes if a.get_visible()]) for f in pages] == [3, 1]


def test_interval_words_follow_the_columns() -> None:
    def words(frame: pd.DataFrame) -> str:
        figure = gain_vs_fraction_figures(frame, "macro AUROC")[0]
        return " ".join(t.get_text() for t in figure_texts(figure))

    assert "bootstrap" in words(make_paired(boot=True))
    without = words(make_paired(boot=False))
    assert "t-interval" in without and "bootstrap" not in without


def test_heatmap_marks_significant_cells_and_says_what_it_shows() -> None:
    figure = gain_heatmap_figures(make_paired(), "macro AUROC")[0]
    texts = [t.get_text() for t in figure_texts(figure)]
    marked = [t for t in texts if re.fullmatch(r"[+-]\d\.\d{3}\*", t)]
    plain = [t for t in texts if re.fullmatch(r"[+-]\d\.\d{3}", t)]
    # holm_p < 0.05 on cinc2017 only: 2 sources x 2 architectures marked, as many not
    assert len(marked) == 4 and len(plain) == 4
    joined = " ".join(" ".join(texts).split())
    assert "100% of the training set" in joined and "all layers fine-tuned" in joined
    assert "Holm" in joined
    image = next(a for a in figure.findobj(AxesImage))
    assert image.get_cmap().name == DIVERGING_CMAP
    assert image.norm.vmin == -image.norm.vmax  # centred on 0

    chosen = gain_heatmap_figures(make_paired(), "macro AUROC", data_fraction=0.1, freeze_depth=2)
    joined = " ".join(" ".join(t.get_text() for t in figure_texts(chosen[0])).split())
    assert "10% of the training set" in joined and "2 stages frozen" in joined
    with pytest.raises(DataError, match="no gain at data fraction 0.5"):
        gain_heatmap_figures(make_paired(), "macro AUROC", data_fraction=0.5)


@pytest.mark.parametrize("k", [2, 5, 12])
def test_critical_difference_diagram_scales(k) -> None:
    ranks = pd.Series({f"method {i}": 1 + i * 0.45 for i in range(k)})
    figure = critical_difference_figure(ranks, 1.0, "Ranks")
    texts = [t.get_text() for t in figure_texts(figure)]
    assert "CD = 1.00" in texts
    assert sum(t.startswith("method ") for t in texts) == k
    # bars join runs whose ranks differ by < 1.0: spans of 3 consecutive methods (0.9 apart)
    bars = [line for line in figure.axes[0].get_lines() if line.get_linewidth() > 3]
    assert len(bars) == max(1, k - 2)


def test_critical_difference_groups() -> None:
    ranks = pd.Series({"a": 1.0, "b": 1.5, "c": 3.0, "d": 3.2})
    figure = critical_difference_figure(ranks, 1.0, "Ranks")
    bars = [line for line in figure.axes[0].get_lines() if line.get_linewidth() > 3]
    assert len(bars) == 2  # {a, b} and {c, d}; b-c differ by 1.5 >= CD
    words = " ".join(t.get_text() for t in figure_texts(figure))
    assert "a (1.00)" in words and "d (3.20)" in words


@pytest.mark.parametrize(
    "call",
    [
        lambda: gain_vs_fraction_figures(make_paired().iloc[:0], "AUROC"),
        lambda: gain_vs_freeze_figures(make_paired().iloc[:0], "AUROC"),
        lambda: gain_heatmap_figures(make_paired().iloc[:0], "AUROC"),
        lambda: critical_difference_figure(pd.Series(dtype=float), 1.0, "t"),
        lambda: learning_curve_figures(make_curves()[0].iloc[:0], make_curves()[1]),
        lambda: learning_curve_figures(make_curves()[0], make_curves()[1].iloc[:0]),
    ],
    ids=["fraction", "freeze", "heatmap", "cd", "curves-trials", "curves-epochs"],
)
def test_empty_input_raises(call) -> None:
    with pytest.raises(DataError, match="empty"):
        call()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: gain_vs_fraction_figures(make_paired().drop(columns="ci_high"), "AUROC"),
            "lacks column.*ci_high",
        ),
        (
            lambda: learning_curve_figures(
                make_curves()[0], make_curves()[1].drop(columns="epoch")
            ),
            "epochs lacks column.*epoch",
        ),
        (lambda: critical_difference_figure(pd.Series({"a": 1.0}), 1.0, "t"), ">= 2 treatments"),
        (
            lambda: critical_difference_figure(pd.Series({"a": 1.0, "b": 2.0}), 0.0, "t"),
            "cd must be a positive number",
        ),
        (
            lambda: critical_difference_figure(pd.Series({"a": 0.5, "b": 2.0}), 1.0, "t"),
            "finite and >= 1",
        ),
        (
            lambda: gain_vs_fraction_figures(make_paired(), "AUROC", max_panels=0),
            "max_panels must be >= 1",
        ),
        (
            lambda: gain_vs_fraction_figures(make_paired().assign(mean_diff=np.nan), "AUROC"),
            "no row with a mean gain",
        ),
    ],
)
def test_bad_input_raises_with_a_message(call, message) -> None:
    with pytest.raises(DataError, match=message):
        call()


def test_names_in_words() -> None:
    assert arm_words("ptbxl", "classification", 2) == (
        "pretrained on PTB-XL (classification), 2 stages frozen"
    )
    assert arm_words("icentia11k", "heart_rate", 0) == (
        "pretrained on Icentia11k (heart-rate classification), all layers fine-tuned"
    )
    assert arm_words(None, None, 0) == "from scratch"
    assert arm_words("ptbxl", "qrs") == "pretrained on PTB-XL (QRS detection)"
    assert architecture_words("resnet1d18[base_width=16]") == "1-D ResNet-18 (base width 16)"
    assert architecture_words("somenet") == "somenet"
    assert dataset_words("synth_up_a") == "synthetic upstream A"
    assert dataset_words("unknown_set") == "unknown_set"


def test_import_pulls_in_neither_torch_nor_ray() -> None:
    code = (
        "import sys, analysis.figures, analysis.page\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')\n"
        "             or m.startswith(('study.training', 'study.sweep')))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
