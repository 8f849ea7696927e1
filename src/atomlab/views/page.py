"""A self-contained HTML page of figures, and where plotly.js comes from.

    html = standalone_html("Demo report", [Section("Scan", figure=scan_heatmap(...)), ...])

The page inlines the plotly.js that the installed ``plotly`` Python package ships, so it opens
offline, from a file, years later; nothing is fetched from a CDN and no chart code is copied into
this repository.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from atomlab.core.errors import UnavailableError
from atomlab.views.figure import FONT_FAMILY, Figure

PLOTLY_JS_RELATIVE = Path("package_data") / "plotly.min.js"
INSTALL_HINT = (
    "install the dashboard extra: uv sync --extra dashboard (or pip install 'atomlab[dashboard]')"
)
PLOT_CONFIG = {"responsive": True, "displaylogo": False}
_SCRIPT_END = re.compile(r"</(script)", re.IGNORECASE)

PAGE_CSS = f"""
body {{ font-family: {FONT_FAMILY}; margin: 0; color: #222; background: #fafafa; }}
header {{ background: #1f2937; color: white; padding: 14px 24px; }}
header h1 {{ margin: 0; font-size: 20px; font-weight: 600; }}
main {{ max-width: 1200px; margin: 0 auto; padding: 16px 24px 48px; }}
section {{ background: white; border: 1px solid #e5e5e5; border-radius: 6px; margin: 16px 0;
  padding: 12px 16px; }}
section h2 {{ font-size: 16px; margin: 4px 0 8px; }}
table {{ border-collapse: collapse; font-size: 13px; margin: 8px 0; }}
th, td {{ border-bottom: 1px solid #eee; padding: 4px 10px; text-align: left;
  vertical-align: top; }}
th {{ background: #f3f4f6; }}
.figure {{ width: 100%; min-height: 200px; }}
"""

RENDER_SCRIPT = """
document.querySelectorAll("script.atomlab-figure").forEach(function (node) {
  var fig = JSON.parse(node.textContent);
  Plotly.newPlot(node.dataset.target, fig.data, fig.layout, %s);
});
"""


@dataclass(frozen=True)
class Section:
    """One part of a page: a heading, then optional text, a table (rows of dicts) and a figure."""

    title: str
    figure: Figure | None = None
    text: str = ""
    table: Sequence[Mapping[str, Any]] | None = None


def plotly_js_path() -> Path:
    """The ``plotly.min.js`` bundled with the installed ``plotly`` package (not imported)."""
    spec = importlib.util.find_spec("plotly")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / PLOTLY_JS_RELATIVE
        if path.is_file():
            return path
    raise UnavailableError(
        f"plotly.js not found (the plotly package is missing or has no {PLOTLY_JS_RELATIVE}); "
        + INSTALL_HINT,
        package="plotly",
    )


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """The text of the bundled plotly.js, safe to put inside a ``<script>`` element."""
    return _SCRIPT_END.sub(r"<\\/\1", plotly_js_path().read_text(encoding="utf-8"))


def figure_json(figure: Figure) -> str:
    """``figure`` as JSON that is safe inside HTML (no ``<`` can end a script element)."""
    return json.dumps(figure, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def standalone_html(title: str, sections: Sequence[Section | Mapping[str, Any]]) -> str:
    """A complete HTML page: ``title``, then each section, with plotly.js inlined.

    A section is a :class:`Section` or a mapping with the same keys. Text and table cells are
    escaped, so data can never inject markup. Raises UnavailableError without ``plotly``.
    """
    parts = [_section_html(k, _as_section(s)) for k, s in enumerate(sections)]
    config = json.dumps(PLOT_CONFIG)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{PAGE_CSS}</style>\n"
        f"<script>{plotly_js()}</script>\n</head>\n<body>\n"
        f"<header><h1>{html.escape(title)}</h1></header>\n<main>\n"
        + "\n".join(parts)
        + f"\n</main>\n<script>{RENDER_SCRIPT % config}</script>\n</body>\n</html>\n"
    )


def _as_section(item: Section | Mapping[str, Any]) -> Section:
    if isinstance(item, Section):
        return item
    return Section(
        title=str(item.get("title", "")),
        figure=item.get("figure"),
        text=str(item.get("text") or ""),
        table=item.get("table"),
    )


def _section_html(k: int, section: Section) -> str:
    out = [f"<section>\n<h2>{html.escape(section.title)}</h2>"]
    for paragraph in (p.strip() for p in section.text.split("\n\n")):
        if paragraph:
            out.append(f"<p>{html.escape(paragraph)}</p>")
    if section.table:
        out.append(table_html(section.table))
    if section.figure is not None:
        target = f"figure-{k}"
        out.append(f'<div class="figure" id="{target}"></div>')
        out.append(
            f'<script type="application/json" class="atomlab-figure" data-target="{target}">'
            f"{figure_json(section.figure)}</script>"
        )
    out.append("</section>")
    return "\n".join(out)


def table_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of dicts as an HTML table (columns in first-seen order; every cell escaped)."""
    columns: list[str] = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)
