"""One self-contained HTML page for a study's report: figures, tables, the spec, provenance.

``write_page`` writes ``index.html`` that needs nothing else: figures are embedded as base64
``data:`` URIs, the CSS is inline, there is no external script or font, and a Content
Security Policy forbids the page from loading anything that is not embedded (a mistake shows
as a console error instead of a silent network fetch). It opens offline from a ``file://``
URL. Every text is HTML-escaped.

A tiny inline script checks, on load, that every image decoded (``complete`` and
``naturalWidth > 0``) and records the result on ``<body>``: ``data-images-ok`` ("true" or
"false"), ``data-images-total``, ``data-images-broken`` (the alt texts of the broken ones)
and ``data-script-errors`` (uncaught script errors); on a broken image it also calls
``console.error`` and shows a warning at the top of the page. A headless browser reads these
(tests/analysis/test_page.py).
"""

from __future__ import annotations

import base64
import hashlib
import html
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from study.errors import DataError

__all__ = ["PageFigure", "PageTable", "Section", "PROVENANCE_FIELDS", "write_page"]

# The provenance rows every page shows, in order (key -> words); a missing one reads
# "not recorded". Other keys of the provenance dict follow, their names in words.
PROVENANCE_FIELDS: dict[str, str] = {
    "study": "Study",
    "code_version": "Code version",
    "hardware": "Hardware",
    "started": "First unit finished",
    "finished": "Last unit finished",
    "generated": "Report generated",
    "units_planned": "Units planned",
    "units_done": "Units done",
    "units_failed": "Units failed",
    "failures": "Failures",
}
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
_SIGNATURES = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
_CSS_PX_PER_INCH = 96  # a CSS pixel is 1/96 inch: a figure shown at its printed size


class PageFigure(NamedTuple):
    """A figure file to embed, its caption (shown under it) and its alt text (for screen
    readers and when the image cannot be shown)."""

    path: str | Path
    caption: str
    alt: str


class PageTable(NamedTuple):
    """A table: its caption, the frame (shown without its index; column names as given, so
    name them in words) and optional per-column format specs ("+.3f", ".2g", ...)."""

    caption: str
    frame: pd.DataFrame
    formats: Mapping[str, str] = {}


@dataclass(frozen=True)
class Section:
    """A section of the page, rendered in this order: heading, paragraphs, figures, tables,
    then `preformatted` (e.g. the spec's YAML) in a <pre> block under `preformatted_caption`.

    Figures and tables may be given as plain tuples: (path, caption, alt) and
    (caption, frame) or (caption, frame, formats).
    """

    heading: str
    paragraphs: Sequence[str] = ()
    figures: Sequence[PageFigure | tuple] = ()
    tables: Sequence[PageTable | tuple] = ()
    preformatted: str | None = None
    preformatted_caption: str = ""
    anchor: str | None = None  # the id to link to; default: made from the heading


# On load: check every image, record on <body>, warn loudly when one is broken.
_SCRIPT = """\
(function () {
  var errors = [];
  window.addEventListener("error", function (event) {
    if (event.target && event.target.tagName === "IMG") { return; }
    errors.push(String(event.message));
    if (document.body) { document.body.setAttribute("data-script-errors", errors.length); }
  }, true);
  window.addEventListener("load", function () {
    var broken = [];
    var images = document.images;
    for (var i = 0; i < images.length; i++) {
      if (!images[i].complete || images[i].naturalWidth === 0) {
        broken.push(images[i].alt || images[i].id || String(i));
      }
    }
    var body = document.body;
    body.setAttribute("data-images-total", images.length);
    body.setAttribute("data-images-broken", broken.join(" | "));
    body.setAttribute("data-images-ok", broken.length === 0 ? "true" : "false");
    body.setAttribute("data-script-errors", errors.length);
    if (broken.length > 0) {
      console.error("report page: " + broken.length + " image(s) failed to load: " +
                    broken.join(" | "));
      var warning = document.createElement("p");
      warning.className = "warning";
      warning.textContent = broken.length + " figure(s) failed to load: " + broken.join(" | ");
      body.insertBefore(warning, body.firstChild);
    }
  });
})();
"""

_CSS = """\
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial,
       sans-serif; font-size: 16px; line-height: 1.5; color: #1a1a1a; background: #ffffff;
       max-width: 1180px; margin: 0 auto; padding: 1.5rem 1.25rem 4rem; }
h1 { font-size: 1.8rem; margin: 0 0 0.5rem; }
h2 { font-size: 1.35rem; margin-top: 2.5rem; border-bottom: 1px solid #cccccc;
     padding-bottom: 0.2rem; }
nav ol { padding-left: 1.4rem; }
figure { margin: 1.5rem 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #e0e0e0; }
figcaption, caption { font-size: 0.95rem; color: #333333; margin-top: 0.4rem;
                      text-align: left; caption-side: top; margin-bottom: 0.4rem; }
.table-wrap { overflow-x: auto; margin: 1.5rem 0; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.6rem; vertical-align: top; }
th { background: #f2f2f2; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tbody tr:nth-child(even) { background: #fafafa; }
pre { background: #f6f6f6; border: 1px solid #dddddd; padding: 0.8rem; overflow-x: auto;
      font-size: 0.85rem; line-height: 1.4; }
.warning { background: #fff3cd; border: 1px solid #b58900; padding: 0.6rem; font-weight: bold; }
.missing { color: #8a1f11; }
"""


def write_page(
    out_dir: str | Path,
    *,
    title: str,
    provenance: Mapping[str, object],
    sections: Sequence[Section],
) -> Path:
    """Write ``out_dir/index.html``: the title, a table of contents, the sections, and a
    provenance table (PROVENANCE_FIELDS first; ``failures`` may be a list of strings or of
    mappings, or a DataFrame, and is listed as a table).

    Figures are shown at their printed size (the PNG's DPI: text drawn at 9 pt reads at
    9 pt), never wider than the page.

    Args:
        out_dir: Directory to write into (created if missing); index.html is overwritten.
        title: The page's title and top heading.
        provenance: Code version, hardware, dates, unit counts, failures (see
            PROVENANCE_FIELDS); ``generated`` defaults to now (UTC).
        sections: The sections, in order.

    Returns:
        The path of index.html.

    Raises:
        DataError: A figure file that is missing, of an unknown type, or not the image its
            suffix says; a section that is not a Section.
    """
    out = Path(out_dir)
    if not isinstance(provenance, Mapping):
        raise DataError(f"provenance must be a mapping, got {type(provenance).__name__}")
    provenance = dict(provenance)
    provenance.setdefault("generated", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    body: list[str] = []
    toc: list[str] = []
    counters = {"figure": 0, "table": 0}
    used: set[str] = set()
    for section in sections:
        if not isinstance(section, Section):
            raise DataError(f"sections must hold Section objects, got {type(section).__name__}")
        anchor = _anchor(section.anchor or section.heading, used)
        toc.append(f'<li><a href="#{anchor}">{_e(section.heading)}</a></li>')
        body.append(_section(section, anchor, counters))
    provenance_anchor = _anchor("provenance", used)
    toc.append(f'<li><a href="#{provenance_anchor}">Provenance</a></li>')
    body.append(_provenance(provenance, provenance_anchor))

    script_hash = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    policy = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{script_hash}'; base-uri 'none'; form-action 'none'"
    )
    page = "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>",
            f"<style>\n{_CSS}</style>",
            f"<script>{_SCRIPT}</script>",
            "</head>",
            "<body>",
            f"<h1>{_e(title)}</h1>",
            '<nav aria-label="Contents"><ol>',
            *toc,
            "</ol></nav>",
            *body,
            "</body>",
            "</html>",
            "",
        ]
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


# --- sections -------------------------------------------------------------------------------


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _anchor(text: str, used: set[str]) -> str:
    """A unique, URL-safe id from `text`."""
    base = "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-") or "section"
    base = "-".join(part for part in base.split("-") if part)
    anchor, n = base, 2
    while anchor in used:
        anchor, n = f"{base}-{n}", n + 1
    used.add(anchor)
    return anchor


def _section(section: Section, anchor: str, counters: dict[str, int]) -> str:
    parts = [f'<section id="{anchor}">', f"<h2>{_e(section.heading)}</h2>"]
    paragraphs = section.paragraphs
    if isinstance(paragraphs, str):  # one paragraph given as a bare string
        paragraphs = [paragraphs]
    parts += [f"<p>{_e(paragraph)}</p>" for paragraph in paragraphs]
    for item in section.figures:
        counters["figure"] += 1
        parts.append(_figure(PageFigure(*item), counters["figure"]))
    for item in section.tables:
        counters["table"] += 1
        table = PageTable(*item)
        parts.append(
            _table(table.frame, f"Table {counters['table']}. {table.caption}", table.formats)
        )
    if section.preformatted is not None:
        if section.preformatted_caption:
            parts.append(f"<p>{_e(section.preformatted_caption)}</p>")
        parts.append(f"<pre>{_e(section.preformatted)}</pre>")
    parts.append("</section>")
    return "\n".join(parts)


def _figure(figure: PageFigure, number: int) -> str:
    path = Path(figure.path)
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise DataError(
            f"figure {path} has an unknown type {path.suffix!r}; known: {', '.join(_MIME)}"
        )
    if not path.is_file():
        raise DataError(f"figure {path} does not exist")
    data = path.read_bytes()
    signature = _SIGNATURES.get(mime)
    if signature is not None and not data.startswith(signature):
        raise DataError(
            f"figure {path} is not a valid {path.suffix} file: it lacks the {mime} signature"
        )
    width = _png_css_width(data) if mime == "image/png" else None
    size = f' width="{width}"' if width else ""
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return (
        f'<figure id="figure-{number}">'
        f'<img src="{uri}" alt="{_e(figure.alt)}"{size}>'
        f"<figcaption>Figure {number}. {_e(figure.caption)}</figcaption></figure>"
    )


def _png_css_width(data: bytes) -> int | None:
    """The PNG's width in CSS pixels at its printed size (from its pHYs chunk), or None."""
    width = struct.unpack(">I", data[16:20])[0]  # IHDR is the first chunk
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"pHYs" and length == 9:
            per_unit, _, unit = struct.unpack(">IIB", data[position + 8 : position + 17])
            if unit == 1 and per_unit > 0:  # pixels per metre
                return round(width * _CSS_PX_PER_INCH / (per_unit * 0.0254))
            return None
        if kind in (b"IDAT", b"IEND"):  # pHYs must come before the image data
            return None
        position += 12 + length
    return None


def _cell(value: object, spec: str | None) -> tuple[str, bool]:
    """The escaped text of a table cell and whether it is a number."""
    try:
        missing = bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or other container: not one missing value
        missing = False
    if missing:
        return "n/a", False
    if isinstance(value, (bool, np.bool_)):
        return _e(value), False
    if isinstance(value, (int, np.integer)):
        return _e(format(int(value), spec or "d")), True
    if isinstance(value, (float, np.floating)):
        return _e(format(float(value), spec or ".4g")), True
    if isinstance(value, (datetime, date, pd.Timestamp)):
        return _e(value.isoformat()), False
    return _e(value), False


def _table(frame: pd.DataFrame, caption: str, formats: Mapping[str, str] = {}) -> str:
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"a table must be a pandas DataFrame, got {type(frame).__name__}")
    head = "".join(f'<th scope="col">{_e(column)}</th>' for column in frame.columns)
    rows = []
    for values in frame.itertuples(index=False, name=None):
        cells = []
        for column, value in zip(frame.columns, values, strict=True):
            text, numeric = _cell(value, formats.get(column))
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    if not rows:
        rows.append(f'<tr><td colspan="{max(1, len(frame.columns))}">(no rows)</td></tr>')
    return (
        f'<div class="table-wrap"><table><caption>{_e(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


# --- provenance -----------------------------------------------------------------------------


def _provenance(provenance: Mapping[str, object], anchor: str) -> str:
    keys = list(PROVENANCE_FIELDS) + [k for k in provenance if k not in PROVENANCE_FIELDS]
    rows = []
    for key in keys:
        words = PROVENANCE_FIELDS.get(key, str(key).replace("_", " ").capitalize())
        if key == "failures":
            continue
        if key not in provenance or provenance[key] is None:
            value = '<span class="missing">not recorded</span>'
        else:
            value = _value(provenance[key])
        rows.append(f'<tr><th scope="row">{_e(words)}</th><td>{value}</td></tr>')
    parts = [
        f'<section id="{anchor}">',
        "<h2>Provenance</h2>",
        '<div class="table-wrap"><table><caption>Where these results come from.</caption>'
        f"<tbody>{''.join(rows)}</tbody></table></div>",
        _failures(provenance.get("failures", None), "failures" in provenance),
        "</section>",
    ]
    return "\n".join(parts)


def _value(value: object) -> str:
    if isinstance(value, Mapping):
        return "<br>".join(f"{_e(k)}: {_e(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return "<br>".join(_e(v) for v in value)
    return _cell(value, None)[0]


def _failures(failures: object, recorded: bool) -> str:
    """The failed units as a table (a DataFrame, a list of mappings, or a list of texts)."""
    if not recorded or failures is None:
        return '<p class="missing">Failures: not recorded.</p>'
    if isinstance(failures, pd.DataFrame):
        frame = failures
    else:
        items = list(failures)  # type: ignore[call-overload]
        if all(isinstance(item, Mapping) for item in items):
            frame = pd.DataFrame(items)
        else:
            frame = pd.DataFrame({"failure": [str(item) for item in items]})
    if frame.empty:
        return "<p>Failures: none.</p>"
    return _table(frame, f"Failures ({len(frame)}).")
