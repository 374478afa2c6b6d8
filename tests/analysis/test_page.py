"""analysis.page: a self-contained index.html, checked in headless Chromium.

What this Chromium (Debian's, 156) prints with ``--enable-logging=stderr --v=0``: every
console message, whatever its level (console.log, .warn, .error), an uncaught exception and a
Content-Security-Policy violation alike, is one stderr line
``[pid:tid:time:INFO:CONSOLE:<line>] "<message>", source: <url> (<line>)``. A broken image
prints nothing at all: the page's own script finds it (``naturalWidth == 0``), records it on
<body> and logs it with console.error. So the checks are: <body data-images-ok="true"> in the
DOM dumped after load, and no ``:CONSOLE`` line on stderr (a good page logs nothing). The
negative tests show that both checks fail on a page with a bad image or a blocked script.

Without Chromium these tests skip on a developer's machine and fail under CI (CI=true), which
installs it (.ci/run).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.figures import plot_critical_difference, plot_gain_vs_fraction
from analysis.page import PageFigure, PageTable, Section, write_page
from study.errors import DataError

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CONSOLE = re.compile(r":CONSOLE(?::\d+)?\]")
PNG = b"\x89PNG\r\n\x1a\n"


def chromium() -> str:
    """The headless browser; missing: skip locally, fail under CI (CI must run these)."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    message = f"no headless browser found (looked for {', '.join(BROWSERS)})"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message}; under CI it must be installed (.ci/run installs chromium)")
    pytest.skip(message)


def browse(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",  # tests may run as root (CI containers)
        "--disable-gpu",
        "--disable-dev-shm-usage",  # small /dev/shm in containers
        f"--user-data-dir={profile}",  # a fresh profile: no state shared between runs
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",  # let onload run before the dump or screenshot
        *args,
        page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def load(page: Path, tmp_path: Path) -> tuple[dict[str, str], list[str]]:
    """The data-* attributes of <body> after load, and the console lines logged."""
    result = browse(page, tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", result.stdout)
    assert body, f"no <body> in the dumped DOM: {result.stdout[:500]!r}"
    attributes = dict(re.findall(r'(data-[\w-]+)="([^"]*)"', body[1]))
    console = [line for line in result.stderr.splitlines() if CONSOLE.search(line)]
    return attributes, console


@pytest.fixture(scope="module")
def figure_paths(tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("figures")
    rows = []
    for down in ("cinc2017", "cpsc2018"):
        for fraction in (0.1, 1.0):
            rows.append(
                {
                    "downstream": down,
                    "architecture": "resnet1d18",
                    "upstream": "ptbxl",
                    "pretrain_task": "classification",
                    "freeze_depth": 0,
                    "data_fraction": fraction,
                    "mean_diff": 0.02 / fraction / 10,
                    "ci_low": 0.0,
                    "ci_high": 0.04,
                }
            )
    gain = plot_gain_vs_fraction(pd.DataFrame(rows), "macro AUROC", out / "gain.png")
    ranks = pd.Series({"scratch": 2.5, "pretrained:ptbxl/classification/freeze=0": 1.2, "x": 2.3})
    cd = plot_critical_difference(ranks, 1.1, out / "cd.png", "Ranks by macro AUROC")
    return [*gain, cd]


def sample_page(out_dir: Path, figure_paths: list[Path]) -> Path:
    table = pd.DataFrame(
        {
            "downstream": ["CinC 2017", "<b>not bold</b>"],
            "gain in macro AUROC": [0.0312, np.nan],
            "pairs": [5, 4],
        }
    )
    return write_page(
        out_dir,
        title="Transfer study <demo>",
        provenance={
            "code_version": "abc1234",
            "hardware": "1x CPU",
            "started": "2025-01-01 10:00 UTC",
            "finished": "2025-01-02 10:00 UTC",
            "units_planned": 10,
            "units_done": 9,
            "units_failed": 1,
            "failures": [{"unit": "ft-0123456789abcdef", "error": "diverged <NaN>"}],
        },
        sections=[
            Section(
                "Gains",
                paragraphs=["Pretrained minus from scratch, paired on the repeat & seed."],
                figures=[(figure_paths[0], "Gain against data fraction.", "gain plot")],
                tables=[("Paired gains.", table, {"gain in macro AUROC": "+.3f"})],
            ),
            Section(
                "Ranks",
                figures=[PageFigure(figure_paths[1], "Critical differences.", "CD diagram")],
            ),
            Section("Spec", preformatted="name: demo\nnote: <script>alert(1)</script>\n"),
        ],
    )


# --- in the browser -------------------------------------------------------------------------


def test_every_figure_loads_and_nothing_is_logged(figure_paths, tmp_path) -> None:
    page = sample_page(tmp_path / "site", figure_paths)
    attributes, console = load(page, tmp_path)
    assert attributes.get("data-images-ok") == "true", attributes
    assert attributes["data-images-total"] == "2"
    assert attributes["data-images-broken"] == ""
    assert attributes["data-script-errors"] == "0"
    assert console == []


def test_a_broken_image_is_caught(figure_paths, tmp_path) -> None:
    """The check can fail: a page whose first figure is a bad data URI."""
    page = sample_page(tmp_path / "site", figure_paths)
    text = page.read_text(encoding="utf-8")
    good = re.search(r'src="(data:image/png;base64,[^"]+)"', text)[1]
    page.write_text(text.replace(good, "data:image/png;base64,AAAA", 1), encoding="utf-8")
    attributes, console = load(page, tmp_path)
    assert attributes["data-images-ok"] == "false"
    assert attributes["data-images-broken"] == "gain plot"
    assert any("1 image(s) failed to load: gain plot" in line for line in console), console


def test_a_console_error_is_caught(figure_paths, tmp_path) -> None:
    """The console check can fail: a script the page did not vouch for is refused and logged,
    and so is anything loaded from outside the page."""
    page = sample_page(tmp_path / "site", figure_paths)
    text = page.read_text(encoding="utf-8").replace(
        "</body>", '<script>console.error("injected")</script></body>'
    )
    page.write_text(text, encoding="utf-8")
    _, console = load(page, tmp_path)
    assert any("Content Security Policy" in line for line in console), console


def test_screenshot_renders(figure_paths, tmp_path) -> None:
    page = sample_page(tmp_path / "site", figure_paths)
    shot = tmp_path / "page.png"
    result = browse(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400")
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes().startswith(PNG)
    assert shot.stat().st_size > 50_000  # figures drawn, not a blank page


# --- the HTML itself ------------------------------------------------------------------------


def test_page_is_self_contained_and_escaped(figure_paths, tmp_path) -> None:
    page = sample_page(tmp_path / "site", figure_paths)
    assert page == tmp_path / "site" / "index.html"
    text = page.read_text(encoding="utf-8")
    # nothing is fetched: every src is a data: URI, every link an anchor on the page
    assert re.findall(r'src="(?!data:)', text) == []
    assert re.findall(r'href="(?!#)', text) == []
    assert "<link" not in text and "@import" not in text and "url(" not in text
    assert text.count('<img src="data:image/png;base64,') == 2
    # every text is escaped
    assert "<demo>" not in text and "&lt;demo&gt;" in text
    assert "<b>not bold</b>" not in text and "&lt;b&gt;not bold&lt;/b&gt;" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "repeat &amp; seed" in text
    # numbers formatted, missing ones said
    assert "+0.031" in text and "n/a" in text
    # captions numbered; the spec in a <pre>
    assert "Figure 1. Gain against data fraction." in text and "Table 1. Paired gains." in text
    assert "<pre>name: demo" in text


def test_provenance_lists_counts_and_failures(figure_paths, tmp_path) -> None:
    text = sample_page(tmp_path / "site", figure_paths).read_text(encoding="utf-8")
    for words, value in [
        ("Code version", "abc1234"),
        ("Hardware", "1x CPU"),
        ("Units planned", "10"),
        ("Units done", "9"),
        ("Units failed", "1"),
    ]:
        assert re.search(rf"<th[^>]*>{words}</th><td>{value}</td>", text), words
    assert "Report generated" in text  # filled in when not given
    assert "ft-0123456789abcdef" in text and "diverged &lt;NaN&gt;" in text

    bare = write_page(tmp_path / "bare", title="t", provenance={}, sections=[])
    bare_text = bare.read_text(encoding="utf-8")
    assert bare_text.count("not recorded") == len(
        ["study", "code_version", "hardware", "started", "finished"]
        + ["units_planned", "units_done", "units_failed", "failures"]
    )


def test_figures_show_at_their_printed_size(figure_paths, tmp_path) -> None:
    """A 150-dpi PNG w pixels wide is shown w * 96 / 150 CSS pixels wide (9 pt reads 9 pt)."""
    text = sample_page(tmp_path / "site", figure_paths).read_text(encoding="utf-8")
    data = figure_paths[0].read_bytes()
    pixels = int.from_bytes(data[16:20], "big")
    assert f'width="{round(pixels * 96 / 150)}"' in text


def test_sections_take_typed_or_plain_items(figure_paths, tmp_path) -> None:
    frame = pd.DataFrame({"a": [1]})
    typed = Section(
        "Same",
        figures=[PageFigure(figure_paths[1], "c", "alt")],
        tables=[PageTable("t", frame)],
    )
    plain = Section("Same", figures=[(figure_paths[1], "c", "alt")], tables=[("t", frame)])
    text = write_page(
        tmp_path / "site", title="t", provenance={"generated": "now"}, sections=[typed, plain]
    ).read_text(encoding="utf-8")
    assert 'id="same"' in text and 'id="same-2"' in text  # unique anchors
    assert "Figure 2. c" in text and "Table 2. t" in text


def _written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.png", "does not exist"),
        (lambda d: _written(d / "fake.png", b"not a png"), "not a valid .png file"),
        (lambda d: _written(d / "fig.gif", b"GIF89a"), "unknown type '.gif'"),
    ],
    ids=["missing", "not-png", "unknown-type"],
)
def test_bad_figure_files_raise(make, message, tmp_path) -> None:
    section = Section("s", figures=[(make(tmp_path), "caption", "alt")])
    with pytest.raises(DataError, match=message):
        write_page(tmp_path / "site", title="t", provenance={}, sections=[section])
    assert not (tmp_path / "site" / "index.html").exists()  # nothing half-written
