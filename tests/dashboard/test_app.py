"""The dashboard's HTTP surface without a browser: pages on an empty home, hostile query
parameters (400 naming the field, never 500), read-only routes, the host guard, plotly.js."""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomlab.core.errors import PolicyRefusedError
from atomlab.dashboard import check_host, create_app, is_loopback
from atomlab.trajectory import ChannelInfo, MonitorConfig, Sample, open_store
from atomlab.views.page import plotly_js_path
from tests.dashboard.conftest import Server, make_config, tracked_run

PAGES = ("/instrument", "/runs", "/swarm", "/engine")


@pytest.fixture
def client(isolated_home: Path) -> Iterator[TestClient]:
    app = create_app(make_config(isolated_home))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c


def test_every_page_answers_on_an_empty_home_and_creates_nothing(
    client: TestClient, isolated_home: Path
) -> None:
    for path in PAGES:
        response = client.get(path)
        assert response.status_code == 200, (path, response.text[:300])
        assert "<main>" in response.text
    assert client.get("/", follow_redirects=False).headers["location"] == "/instrument"
    assert client.get("/api/engine/runs").json() == {"runs": []}
    assert client.get("/api/runs").json() == {"runs": []}
    assert not isolated_home.exists()  # read-only: not even the home folder was made


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/runs?status=bogus", "status"),
        ("/runs?status=running&status=nope", "status"),
        ("/api/runs?since=yesterday-ish", "since"),
        ("/runs?since=7x", "since"),
        ("/api/runs?limit=0", "limit"),
        ("/api/runs?limit=abc", "limit"),
        ("/runs?limit=100000", "limit"),
        ("/instrument?window_s=0", "window_s"),
        ("/instrument?action=-1", "action"),
        ("/api/runs/stream?newest=soon", "newest"),
        ("/api/trajectory/stream?after=-5", "after"),
        ("/api/runs/compare/stream", "run"),
    ],
)
def test_a_bad_query_parameter_is_a_400_naming_it(client: TestClient, url: str, field: str) -> None:
    response = client.get(url)
    assert response.status_code == 400, response.text[:300]
    if url.startswith("/api/"):
        error = response.json()["error"]
        assert error["field"] == field
        assert field in error["message"]
    else:
        assert f"<code>{field}</code>" in response.text  # the error page names it too


def test_a_filter_naming_an_unrecorded_signal_is_refused(
    client: TestClient, isolated_home: Path
) -> None:
    _recording(isolated_home / "trajectories.sqlite", samples=3)
    response = client.get("/instrument?signals=Z Position,Nope")
    assert response.status_code == 400
    assert "'Nope' not recorded" in html.unescape(response.text)


def test_unknown_runs_and_actions_are_404(client: TestClient, isolated_home: Path) -> None:
    _recording(isolated_home / "trajectories.sqlite", samples=3)
    tracked_run(isolated_home)
    assert client.get("/api/runs/nope").status_code == 404
    assert client.get("/runs/nope").status_code == 404
    assert client.get("/api/trajectory/runs/nope/actions").status_code == 404
    response = client.get("/api/trajectory/runs/rec/actions/7/window")
    assert response.status_code == 404
    assert "has no action 7" in response.json()["error"]["message"]
    assert client.get("/instrument?run=nope").status_code == 404


ROUTES = (
    "/runs",
    "/api/runs",
    "/instrument",
    "/api/trajectory/runs/rec/actions/0/window",
    "/api/runs/compare/stream",
    "/runs/compare",
)
PARAMS = ("status", "since", "limit", "pipeline", "run", "action", "signals", "window_s", "metric")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(ROUTES),
    params=st.lists(st.tuples(st.sampled_from(PARAMS), st.text(max_size=80)), max_size=4),
)
def test_hostile_query_parameters_never_make_a_500(
    client: TestClient, isolated_home: Path, route: str, params: list[tuple[str, str]]
) -> None:
    if not (isolated_home / "trajectories.sqlite").exists():
        _recording(isolated_home / "trajectories.sqlite", samples=3)
    response = client.get(route, params=params)
    assert response.status_code in (200, 400, 404), (route, params, response.text[:300])
    if response.status_code == 400 and route.startswith("/api/"):
        assert response.json()["error"]["field"]


def test_nothing_but_get_is_served(client: TestClient) -> None:
    for path in ("/api/runs", "/runs", "/api/engine/runs"):
        response = client.post(path, json={})
        assert response.status_code == 405
    assert client.delete("/api/runs").json()["error"]["code"] == "HTTP_ERROR"


def test_a_foreign_host_header_is_refused(isolated_home: Path) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read the data."""
    app = create_app(make_config(isolated_home))
    with TestClient(app, base_url="http://evil.example") as c:
        assert c.get("/runs").status_code == 400
    for loopback in ("http://localhost:8090", "http://[::1]:8090", "http://127.0.0.2"):
        with TestClient(app, base_url=loopback) as c:
            assert c.get("/runs").status_code == 200, loopback
    open_app = create_app(make_config(isolated_home, allow_remote=True))
    with TestClient(open_app, base_url="http://lab-pc.example") as c:
        assert c.get("/runs").status_code == 200  # --allow-remote: any name


def test_plotly_js_comes_from_the_plotly_package_and_pages_forbid_inline_script(
    client: TestClient,
) -> None:
    response = client.get("/static/plotly.min.js")
    assert response.status_code == 200
    assert response.content == plotly_js_path().read_bytes()
    page = client.get("/runs")
    policy = page.headers["content-security-policy"]
    assert (
        "script-src 'self'" in policy
        and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    )
    assert "cdn" not in page.text.lower()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"])
def test_loopback_hosts_are_served(host: str) -> None:
    assert is_loopback(host)
    check_host(host, allow_remote=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.org"])
def test_other_hosts_are_refused_unless_allowed(host: str) -> None:
    with pytest.raises(PolicyRefusedError, match="--allow-remote"):
        check_host(host, allow_remote=False)
    check_host(host, allow_remote=True)


def test_the_cli_refuses_a_public_host_and_a_bad_instrument_address(
    cli: Callable[..., Any],
) -> None:
    result = cli("dashboard", "--host", "0.0.0.0", "--json")
    assert result.exit_code == 2
    assert result.json["error"]["details"]["field"] == "host"
    result = cli("dashboard", "--instrument", "nohost", "--json")
    assert result.exit_code == 3
    assert "HOST:PORT" in result.json["error"]["message"]


def test_runs_api_filters_by_status_pipeline_and_since(
    client: TestClient, isolated_home: Path
) -> None:
    tracked_run(isolated_home, "imitation")
    tracked_run(isolated_home, "calibration", ("sweep",))
    runs = client.get("/api/runs").json()["runs"]
    assert {r["pipeline"] for r in runs} == {"imitation", "calibration"}
    only = client.get("/api/runs", params={"pipeline": "calibration"}).json()["runs"]
    assert [r["pipeline"] for r in only] == ["calibration"]
    assert client.get("/api/runs", params={"status": "failed"}).json()["runs"] == []
    assert len(client.get("/api/runs", params={"since": "1h"}).json()["runs"]) == 2
    assert client.get("/api/runs", params={"since": "2999-01-01"}).json()["runs"] == []
    page = client.get("/runs", params={"status": "completed", "pipeline": "imitation"})
    assert page.text.count('<tr data-run="') == 1
    assert 'value="completed" checked' in page.text  # the form shows the filter it applied


def _recording(db: Path, *, samples: int, name: str = "rec") -> None:
    """A finished recording of ``samples`` samples of two signals (written by the real store)."""
    config = MonitorConfig(run_name=name, signals=("Z Position", "Tunnel Current"), specs=("Bias",))
    with open_store(db, read_only=False) as store:
        run = store.create_run(
            config,
            signals=[ChannelInfo(label=s, unit="m") for s in config.signals],
            specs=[ChannelInfo(label="Bias", unit="V")],
            instrument={"kind": "test"},
            started_at_utc="2026-01-01T00:00:00.000000Z",
        )
        writer = store.record_writer(
            run, n_signals=2, n_specs=1, flush_interval_s=0.05, max_batch=100
        )
        for k in range(samples):
            writer.put(
                Sample(
                    k,
                    k,
                    k * 0.1,
                    k * 0.1,
                    0.001,
                    (k * 1e-9, float("nan") if k == 1 else 1e-10),
                    (0.1,),
                )
            )
        writer.close()
        store.finish_run(
            run.id, status="completed", ended_at_utc="2026-01-01T00:01:00Z", reason="done"
        )


def _events(
    server: Server, path: str, headers: dict[str, str] | None = None, *, want: int
) -> list[tuple[str, Any, str | None]]:
    """The first ``want`` events of a live stream (name, decoded data, id)."""
    out: list[tuple[str, Any, str | None]] = []
    with (
        httpx.Client(base_url=server.url, timeout=30) as http,
        http.stream("GET", path, headers=headers) as response,
    ):
        assert response.status_code == 200
        name, data, ident = "message", "", None
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data += line.split(":", 1)[1].strip()
            elif line.startswith("id:"):
                ident = line.split(":", 1)[1].strip()
            elif line == "" and data:
                out.append((name, json.loads(data), ident))
                name, data, ident = "message", "", None
                if len(out) >= want:
                    break
    return out


def test_the_sample_stream_is_a_cursor_tail_that_resumes_after_last_event_id(
    serve: Callable[..., Server], isolated_home: Path
) -> None:
    db = isolated_home / "trajectories.sqlite"
    _recording(db, samples=20)
    server = serve(make_config(isolated_home))
    [(name, first, ident), *_] = _events(server, "/api/trajectory/stream?run=rec&backlog=5", want=1)
    assert name == "samples"
    assert first["sample_idx"] == [15, 16, 17, 18, 19]  # the last `backlog` samples
    assert ident == "19"
    [(_, resumed, _), *_] = _events(
        server, "/api/trajectory/stream?run=rec", {"Last-Event-ID": "16"}, want=1
    )
    assert resumed["sample_idx"] == [17, 18, 19]  # a reconnect loses nothing, repeats nothing
    [(_, picked, _), *_] = _events(
        server, "/api/trajectory/stream?run=rec&after=0&signals=Tunnel Current", want=1
    )
    assert list(picked["values"]) == ["Tunnel Current"]
    assert picked["values"]["Tunnel Current"][0] is None  # NaN travels as null


def test_nan_and_damaged_lines_in_a_runs_files_are_drawn_as_gaps_not_500s(
    client: TestClient, isolated_home: Path
) -> None:
    run_dir = tracked_run(isolated_home, metrics={"loss": [1.0, 0.5]})
    with (run_dir / "telemetry.jsonl").open("a", encoding="utf-8") as handle:
        handle.write("not json at all\n")
        handle.write(
            '{"t": "x", "dt_s": 1.0, "proc_cpu_pct": NaN, '
            '"gpus": [{"index": 0, "util_pct": Infinity}]}\n'
        )
    with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(
            '{"name": "loss", "value": NaN, "step": 2, "at": "x", "dt_s": 2.0}\n{"name": \n'
        )
    answer = client.get(f"/api/runs/{run_dir.name}")
    assert answer.status_code == 200
    last = answer.json()["run"]["last_sample"]
    assert last["proc_cpu_pct"] is None and last["gpus"][0]["util_pct"] is None
    assert client.get(f"/runs/{run_dir.name}").status_code == 200


def test_the_command_serves_until_sigterm_and_exits_143(isolated_home: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "ATOMLAB_HOME": str(isolated_home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "atomlab", "dashboard", "--port", "0", "--no-instrument", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        listening = json.loads(proc.stdout.readline())  # the first line: where it listens
        assert listening["event"] == "listening" and listening["host"] == "127.0.0.1"
        assert httpx.get(listening["url"] + "runs", timeout=30).status_code == 200
        assert httpx.get(listening["url"] + "health", timeout=30).json()["status"] == "healthy"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    assert json.loads(out.splitlines()[-1])["error"]["type"] == "terminated"
    assert b"Traceback" not in err
