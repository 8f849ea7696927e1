"""The standalone page: plotly.js inlined from the installed package, data escaped, and every
figure drawn by a real browser with no network and no console error."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atomlab.views import metric_curves, scan_heatmap
from atomlab.views.page import Section, plotly_js_path, standalone_html
from tests.browser import launch, watch

HOSTILE = "</script><script>window.__pwned = 1</script><b>bold</b>"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch() as b:
        yield b


def test_plotly_js_comes_from_the_installed_plotly_package() -> None:
    path = plotly_js_path()
    assert path.name == "plotly.min.js"
    assert "plotly" in path.parts
    assert "plotly.js v" in path.read_text(encoding="utf-8")[:200]


def test_the_page_inlines_plotly_and_loads_nothing_from_elsewhere() -> None:
    page = standalone_html(
        "Report", [Section("Scan", figure=scan_heatmap([[1.0]], width_nm=1, height_nm=1))]
    )
    assert plotly_js_path().read_text(encoding="utf-8")[:500] in page
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=", page)


def test_text_tables_and_figure_json_cannot_inject_markup() -> None:
    figure = metric_curves({HOSTILE: {"loss": [(0, 1.0)]}})
    page = standalone_html(
        HOSTILE,
        [{"title": HOSTILE, "text": HOSTILE, "table": [{"name": HOSTILE}], "figure": figure}],
    )
    body = page.split("</head>", 1)[1]
    assert "<b>bold</b>" not in body
    assert body.count("<script") == 2  # the figure's JSON and the renderer, nothing injected
    data = re.search(r'class="atomlab-figure"[^>]*>(.*?)</script>', body, re.S)
    assert data is not None
    assert json.loads(data.group(1))["data"][0]["name"] == HOSTILE


def test_a_browser_draws_every_figure_offline_without_errors(browser: Any, tmp_path: Path) -> None:
    sections = [
        Section("Scan", figure=scan_heatmap([[1.0, 2.0], [3.0, 4.0]], width_nm=2, height_nm=2)),
        Section(
            "Curves",
            text="two runs",
            figure=metric_curves({"a": {"loss": [(0, 1.0)]}, "b": {"loss": [(0, 2.0)]}}),
        ),
        Section("Table only", table=[{"policy": "bc", "score": 0.5}]),
        {"title": HOSTILE, "text": HOSTILE},
    ]
    path = tmp_path / "report.html"
    path.write_text(standalone_html("Report", sections), encoding="utf-8")
    context = browser.new_context(offline=True)
    page = context.new_page()
    log = watch(page)
    page.goto(path.as_uri())
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length === 2")
    assert page.locator("#figure-0 .heatmaplayer").count() == 1
    assert page.locator("#figure-1 .scatterlayer .trace").count() == 2
    assert page.locator("table td", has_text="bc").count() == 1
    assert page.evaluate("window.__pwned === undefined")
    assert log.errors == []
    context.close()
