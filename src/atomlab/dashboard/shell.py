"""The HTML around every page: navigation, the live indicator, and the page's data for the script.

Pages are rendered on the server (a table of 1,000 runs is one string, drawn at once); the
script (``static/dashboard.js``) reads its data from a JSON block, draws the figures and opens
the live stream. No inline script runs, so the content security policy can forbid them.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.responses import HTMLResponse, JSONResponse

NAV: tuple[tuple[str, str, str], ...] = (
    ("instrument", "/instrument", "Instrument"),
    ("runs", "/runs", "Runs"),
    ("swarm", "/swarm", "Swarm"),
    ("engine", "/engine", "Engine"),
)
STATIC = "/static"


def esc(value: Any) -> str:
    """``value`` as text safe in HTML content and quoted attributes (None is empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None, for strict JSON (a hostile file or
    a broken reading must not turn an answer into a 500)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def strict_json(value: Any) -> str:
    """Compact strict JSON of ``value`` (non-finite numbers as null, unknown types as text)."""
    return json.dumps(finite(value), separators=(",", ":"), allow_nan=False, default=str)


def data_json(data: Mapping[str, Any]) -> str:
    """JSON for a ``<script type="application/json">`` block: no ``<`` can close the element."""
    return strict_json(data).replace("<", "\\u003c")


class StrictJSONResponse(JSONResponse):
    """The API's responses: strict JSON whatever the data holds (see :func:`finite`)."""

    def render(self, content: Any) -> bytes:
        return strict_json(content).encode("utf-8")


def page(
    *,
    title: str,
    active: str,
    body: str,
    data: Mapping[str, Any] | None = None,
    status_code: int = 200,
    charts: bool = True,
) -> HTMLResponse:
    """A whole page: ``body`` is HTML built with :func:`esc`; ``data`` is for the script.

    ``charts=False`` leaves plotly.js out: 4.8 MB of script to compile is most of the cost of a
    page with no figure (the runs list)."""
    links = "".join(
        f'<a href="{href}"{" class=active" if key == active else ""}>{label}</a>'
        for key, href, label in NAV
    )
    payload = {"page": active, **(data or {})}
    text = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)} · atomlab</title>\n"
        '<link rel="icon" href="data:,">\n'  # no favicon request (and no 404 for it)
        f'<link rel="stylesheet" href="{STATIC}/dashboard.css">\n'
        + (f'<script src="{STATIC}/plotly.min.js" defer></script>\n' if charts else "")
        + f'<script src="{STATIC}/dashboard.js" defer></script>\n'
        f'</head>\n<body data-page="{esc(active)}">\n'
        f'<header><span class="brand">atomlab</span><nav>{links}</nav>'
        '<span id="live" class="live" title="live updates">offline</span></header>\n'
        f"<main>\n<h1>{esc(title)}</h1>\n{body}\n</main>\n"
        f'<script type="application/json" id="page-data">{data_json(payload)}</script>\n'
        "</body>\n</html>\n"
    )
    return HTMLResponse(text, status_code=status_code)


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, table_id: str, empty: str
) -> str:
    """A table whose cells are already-escaped HTML; ``empty`` (text) when there are no rows."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    note = "" if rows else f'<p class="empty" id="{esc(table_id)}-empty">{esc(empty)}</p>'
    return (
        f'<table id="{esc(table_id)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        + note
    )


def notice(text: str, *, kind: str = "info") -> str:
    return f'<p class="notice {esc(kind)}">{esc(text)}</p>'


def error_page(status_code: int, message: str, field: str | None) -> HTMLResponse:
    body = notice(message, kind="error")
    if field:
        body += f"<p>Field: <code>{esc(field)}</code></p>"
    body += '<p><a href="/">back to the dashboard</a></p>'
    return page(
        title=f"Error {status_code}", active="", body=body, status_code=status_code, charts=False
    )
