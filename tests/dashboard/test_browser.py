"""Every page in a real browser (Debian's Chromium, headless, through Playwright): live data
arrives while it is being recorded, zoom and selections survive updates and reloads, filters
live in the URL, and no page logs a console error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.settings import TrackingSettings
from atomlab.instrument import NanonisClient, load_catalog
from atomlab.sim import Disturbances, start_simulator_in_thread
from atomlab.swarm.db import SwarmStore, agent_row, defect_row
from atomlab.swarm.models import AgentState, AgentStatus, Defect, DefectStatus, Point
from atomlab.tracking import RunTracker
from atomlab.trajectory import InstrumentSource, Monitor, MonitorConfig, open_store
from tests.browser import launch, watch
from tests.dashboard.conftest import Server, make_config, tracked_run, write_metrics

pytestmark = pytest.mark.slow

WAIT_MS = 30_000
Serve = Callable[..., Server]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch() as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    tab.log = watch(tab)
    yield tab
    context.close()


def drag_zoom(page: Any, figure_id: str) -> list[float]:
    """Zoom the way a user does (drag a box across the plot); the x range it leaves."""
    box = page.locator(f"#{figure_id} .nsewdrag").first.bounding_box()
    y = box["y"] + box["height"] * 0.5
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, y + 2, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.6, y + 2, steps=5)
    page.mouse.up()
    page.wait_for_function(
        f"() => document.getElementById('{figure_id}').layout.xaxis.autorange === false"
    )
    return list(page.evaluate(f"document.getElementById('{figure_id}').layout.xaxis.range"))


def strip_points(page: Any) -> int:
    return int(page.evaluate("document.getElementById('strip').data[0].x.length"))


def test_the_instrument_page_follows_a_monitor_recording_live(
    page: Any, serve: Serve, isolated_home: Path
) -> None:
    db = isolated_home / "trajectories.sqlite"
    config = MonitorConfig(
        run_name="live-1",
        signals=("Z Position", "Tunnel Current"),
        specs=("Bias", "Z Setpoint"),
        interval_s=0.02,
        db_path=db,
    )
    recording = threading.Event()
    with (
        start_simulator_in_thread(seed=0, ports=[0], disturbances=Disturbances.none()) as sim,
        NanonisClient("127.0.0.1", sim.ports[0]) as client,
        open_store(db, read_only=False) as store,
    ):
        monitor = Monitor(
            InstrumentSource(client, load_catalog()),
            config,
            store,
            on_record=lambda _r: recording.set(),
            attribution_grace_s=0.5,
        )
        thread = threading.Thread(target=monitor.run, kwargs={"duration_s": 120})
        thread.start()
        try:
            assert recording.wait(20)
            with NanonisClient("127.0.0.1", sim.ports[0]) as operator:
                operator.call("Scan.Action", {"action": 0, "direction_up": 1})
            server = serve(make_config(isolated_home, instrument=("127.0.0.1", sim.ports[0])))
            page.goto(f"{server.url}/instrument")
            page.wait_for_function("() => window.atomlab && window.atomlab.points > 0")
            before = strip_points(page)
            page.wait_for_function(
                f"() => document.getElementById('strip').data[0].x.length > {before}"
            )  # the chart gains points while the monitor records

            # Zoom in as a user does; later appends must leave the view alone.
            zoomed = drag_zoom(page, "strip")
            seen = page.evaluate("window.atomlab.points")
            page.wait_for_function(f"() => window.atomlab.points > {seen + 25}")
            assert page.evaluate("document.getElementById('strip').layout.xaxis.range") == zoomed

            # The scan image comes from the instrument, as a heat map in nm.
            page.wait_for_function("() => document.querySelector('#scan .heatmaplayer') !== null")
            assert "nm" in page.inner_text("#scan")

            # An operator changes the setpoint from another program: an action appears live.
            with NanonisClient("127.0.0.1", sim.ports[0]) as other:
                other.call("ZCtrl.SetpntSet", {"setpoint": 2e-10})
            page.wait_for_selector("#actions tbody tr a[data-action]")
            assert page.locator("#actions tbody tr").count() == 1
            page.click("#actions tbody tr a[data-action]")
            page.wait_for_function(
                "() => document.querySelector('#window.js-plotly-plot') !== null"
            )
            assert "action=0" in page.url
            assert page.evaluate("document.getElementById('window').data.length") == 2
        finally:
            monitor.stop("completed", "test done")
            thread.join(20)
        page.reload()  # the selected action is in the URL: it survives a reload
        page.wait_for_function("() => document.querySelector('#window.js-plotly-plot') !== null")
        page.wait_for_function("() => window.atomlab.events.run > 0")  # the stream is open ...
        assert page.locator("#actions tbody tr").count() == 1  # ... and repeats no action
        assert "Z Setpoint" in page.inner_text("#window")
    assert page.log.errors == []


def test_the_runs_pages_filter_in_the_url_follow_a_run_and_compare_runs(
    page: Any, serve: Serve, isolated_home: Path
) -> None:
    first = tracked_run(isolated_home, metrics={"loss": [1.0, 0.6, 0.4]})
    second = tracked_run(isolated_home, metrics={"loss": [1.2, 0.9], "return": [3.0]})
    tracked_run(isolated_home, "calibration", ("sweep",))
    server = serve(make_config(isolated_home))

    page.goto(f"{server.url}/runs")
    assert page.locator("#runs tbody tr").count() == 3
    page.check("input[name=status][value=completed]")
    page.select_option("select[name=pipeline]", "imitation")
    page.click("#run-filters button[type=submit]")
    page.wait_for_url("**/runs?*")
    assert "status=completed" in page.url and "pipeline=imitation" in page.url
    assert page.locator("#runs tbody tr").count() == 2
    page.reload()  # the filters are the URL: a refresh keeps the view
    assert page.locator("#runs tbody tr").count() == 2
    assert page.is_checked("input[name=status][value=completed]")

    # Compare the two imitation runs on one chart.
    for box in page.locator("#runs input.pick").all():
        box.check()
    page.click("#compare")
    page.wait_for_url("**/runs/compare?*")
    page.wait_for_function("() => document.querySelector('#metrics.js-plotly-plot') !== null")
    runs_drawn = page.evaluate(
        "[...new Set(document.getElementById('metrics').data.map(t => t.meta.run))].sort()"
    )
    assert runs_drawn == sorted([first.name, second.name])

    # A run that is going on: a new row appears on the list; its page follows its steps.
    page.goto(f"{server.url}/runs")
    with RunTracker(
        "imitation",
        ["collect", "train"],
        home=isolated_home,
        settings=TrackingSettings(gpu=False),
        handle_signals=False,
        monitor=False,
    ) as run:
        page.wait_for_selector(f'#runs tr[data-run="{run.run_id}"]')
        with run.step("collect"):
            page.goto(f"{server.url}/runs/{run.run_id}")
            page.wait_for_function("() => document.getElementById('step-position') !== null")
            assert "Step 1/2: collect" in page.inner_text("#run-live")
            page.wait_for_function(
                "() => document.querySelector('#metrics.js-plotly-plot') !== null"
            )
            write_metrics(run.run_dir, {"loss": [2.0, 1.5]})
            page.wait_for_function(
                "() => document.getElementById('metrics').data.length === 1 && "
                "document.getElementById('metrics').data[0].x.length === 2"
            )
            write_metrics(run.run_dir, {"loss": [1.1]}, first_step=2)
            page.wait_for_function(
                "() => document.getElementById('metrics').data[0].x.length === 3"
            )
        with run.step("train"):
            page.wait_for_function(
                "() => document.getElementById('run-live').innerText.includes('Step 2/2: train')"
            )
    page.wait_for_function(
        "() => document.getElementById('run-live').innerText.includes('completed')"
    )
    assert page.log.errors == []


def test_the_swarm_page_moves_agents_live_and_shows_a_halt(
    page: Any, serve: Serve, isolated_home: Path
) -> None:
    url = f"sqlite:///{isolated_home / 'swarm.sqlite'}"
    now = FakeClock().now()
    store = SwarmStore.open(url)
    store.write(
        [
            ("defect", defect_row(Defect("d1", Point(42, 70), "vacancy", 5, now, "c", seq=1))),
            ("defect", defect_row(Defect("d2", Point(100, 20), "adatom", 3, now, "c", seq=2))),
            ("agent", agent_row(AgentState("agent-01", Point(10, 10), AgentStatus.IDLE))),
        ]
    )
    server = serve(make_config(isolated_home))
    page.goto(f"{server.url}/swarm")
    page.wait_for_function("() => document.querySelector('#map.js-plotly-plot') !== null")
    agents_x = "document.getElementById('map').data.find(t => t.meta.kind === 'agents').x[0]"
    assert page.evaluate(agents_x) == 1.0
    store.write(
        [
            ("agent", agent_row(AgentState("agent-01", Point(35, 60), AgentStatus.MOVING))),
            (
                "defect",
                defect_row(
                    Defect(
                        "d1",
                        Point(42, 70),
                        "vacancy",
                        5,
                        now,
                        "c",
                        seq=1,
                        status=DefectStatus.REPAIRING,
                    )
                ),
            ),
        ]
    )
    page.wait_for_function(f"() => {agents_x} === 3.5")  # the agent moved, without a reload
    zoomed = drag_zoom(page, "map")
    store.write(
        [("event", {"at": "2026-01-01T00:00:01Z", "event": "halt", "detail": "proximity 0.4 nm"})]
    )
    page.wait_for_function("() => document.getElementById('halt').innerText.includes('HALTED')")
    assert page.evaluate("window.atomlab.events.swarm") >= 2  # the map was redrawn ...
    assert page.evaluate("document.getElementById('map').layout.xaxis.range") == zoomed  # kept
    store.close()
    assert page.log.errors == []


def test_the_engine_page_lists_runs_with_items_done_of_the_total(
    page: Any, serve: Serve, isolated_home: Path, tmp_path: Path
) -> None:
    src = tmp_path / "scans.jsonl"
    out = tmp_path / "triage.jsonl"
    env = {**os.environ, "ATOMLAB_HOME": str(isolated_home)}
    atomlab = [sys.executable, "-m", "atomlab"]
    subprocess.run(
        [*atomlab, "engine", "sample", "defect-triage", "-o", str(src)],
        env=env,
        check=True,
        capture_output=True,
    )
    done = subprocess.run(
        [*atomlab, "engine", "run", "defect-triage", "-i", str(src), "-o", str(out), "--json"],
        env=env,
        check=True,
        capture_output=True,
    )
    items = json.loads(done.stdout)["items"]
    server = serve(make_config(isolated_home))
    page.goto(f"{server.url}/engine")
    row = page.locator("#engine-runs tbody tr").first
    assert "complete" in row.inner_text()
    assert f"{items}/{items}" in row.inner_text()
    page.wait_for_function("() => document.querySelector('#engine-figure.js-plotly-plot') !== null")
    assert page.log.errors == []
