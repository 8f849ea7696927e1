"""Dashboard benchmark, in headless Chromium against a real server: the Runs page with 1,000
tracked runs, and the Instrument page's strip chart following a 100 Hz recording. Baselines
(the same page with 10 runs; the same chart at 10 Hz) are measured in the same run.

    uv run python benchmarks/dashboard.py        # about a minute on 2 cores

Prints one JSON object (and a short summary on stderr):
  * runs_page: time to first byte, DOMContentLoaded, load and "ready" (figures drawn, live
    stream open) for 1,000 and 10 runs, cold (plotly.js not cached) and warm; HTML bytes;
  * strip_chart: samples written at 100 Hz for --seconds, samples the browser drew, the lag
    between the newest sample written and the newest drawn (p50/p95/max), the time to catch up
    after the last write, and the browser main thread's busy share (Chrome's TaskDuration).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn

from atomlab.core.clock import utc_iso
from atomlab.core.logging import configure_logging
from atomlab.dashboard import DashboardConfig, create_app
from atomlab.tracking import RunIndex, RunRecord, RunStatus, StepRecord, StepStatus, runs_root
from atomlab.tracking.store import save_run
from atomlab.trajectory import ChannelInfo, MonitorConfig, Sample, open_store

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-dev-shm-usage",
]
PIPELINES = ("imitation", "calibration", "tip-prep", "nightly")
STATUSES = (
    RunStatus.COMPLETED,
    RunStatus.COMPLETED,
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.CANCELLED,
)


def say(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# ------------------------------------------------------------------------------ server, browser


@contextlib.contextmanager
def serve(config: DashboardConfig) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        app.state.dashboard.stop()
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def config_for(home: Path, **changes: Any) -> DashboardConfig:
    base: dict[str, Any] = {
        "home": home,
        "trajectory_db": home / "trajectories.sqlite",
        "swarm_db_url": f"sqlite:///{home / 'swarm.sqlite'}",
        "instrument": None,
    }
    base.update(changes)
    return DashboardConfig(**base)


# ------------------------------------------------------------------------------ 1,000 runs


def make_runs(home: Path, count: int) -> None:
    """``count`` finished runs in the real index and run.json files, as the tracker leaves them."""
    root = runs_root(home)
    root.mkdir(parents=True, exist_ok=True)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with RunIndex.open(home) as index:
        for k in range(count):
            moment = start + timedelta(minutes=17 * k)
            pipeline = PIPELINES[k % len(PIPELINES)]
            run_id = f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{pipeline}-{k:06x}"
            run_dir = root / run_id
            run_dir.mkdir()
            status = STATUSES[k % len(STATUSES)]
            steps = [
                StepRecord(
                    name=name,
                    order=i + 1,
                    status=StepStatus.COMPLETED
                    if status is RunStatus.COMPLETED or i == 0
                    else StepStatus.SKIPPED,
                    duration_s=30.0 + i * 12 + k % 7,
                )
                for i, name in enumerate(("collect", "train", "evaluate"))
            ]
            record = RunRecord(
                run_id=run_id,
                pipeline=pipeline,
                status=status,
                created_at=utc_iso(moment),
                started_at=utc_iso(moment),
                ended_at=utc_iso(moment + timedelta(seconds=120)),
                duration_s=120.0 + k % 13,
                host="bench",
                pid=1,
                run_dir=str(run_dir),
                steps=steps,
            )
            save_run(record)
            index.upsert(record)


def navigation_times(page: Any) -> dict[str, float]:
    return page.evaluate(
        """() => {
          const n = performance.getEntriesByType('navigation')[0];
          return {ttfb_ms: n.responseStart, dom_ms: n.domContentLoadedEventEnd,
                  load_ms: n.loadEventEnd, ready_ms: window.__readyAt, bytes: n.transferSize};
        }"""
    )


def time_page(browser: Any, url: str, *, repeats: int) -> dict[str, Any]:
    """Median cold (fresh context: plotly.js fetched and compiled) and warm (reload) timings."""
    cold: list[dict[str, float]] = []
    warm: list[dict[str, float]] = []
    for _ in range(repeats):
        context = browser.new_context()
        page = context.new_page()
        for sink in (cold, warm):
            if sink is cold:
                page.goto(url, wait_until="load")
            else:
                page.reload(wait_until="load")
            page.wait_for_function("() => window.atomlab && window.atomlab.ready")
            page.evaluate("() => { window.__readyAt = performance.now(); }")
            sink.append(navigation_times(page))
        rows = page.locator("#runs tbody tr").count()
        context.close()

    def median(samples: list[dict[str, float]]) -> dict[str, float]:
        return {key: round(statistics.median(s[key] for s in samples), 1) for key in samples[0]}

    return {"rows": rows, "cold": median(cold), "warm": median(warm)}


def bench_runs_page(browser: Any, work: Path, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for count in (10, 1000):
        home = work / f"runs-{count}"
        made = time.perf_counter()
        make_runs(home, count)
        say(f"runs page: {count} runs made in {time.perf_counter() - made:.1f} s")
        with serve(config_for(home)) as url:
            out[str(count)] = time_page(browser, f"{url}/runs?limit=1000", repeats=repeats)
    big, small = out["1000"], out["10"]
    out["ratio_ready_cold_1000_vs_10"] = round(
        big["cold"]["ready_ms"] / small["cold"]["ready_ms"], 2
    )
    out["ratio_ready_warm_1000_vs_10"] = round(
        big["warm"]["ready_ms"] / small["warm"]["ready_ms"], 2
    )
    out["target_ms"] = 1000
    return out


# ------------------------------------------------------------------------------ strip chart


def record_at(
    db: Path, name: str, rate_hz: float, seconds: float, progress: list[int], done: threading.Event
) -> None:
    """Write ``rate_hz`` samples a second through the real store writer (as the monitor does)."""
    config = MonitorConfig(
        run_name=name,
        signals=("Z Position", "Tunnel Current", "Bias Signal"),
        specs=("Bias",),
        interval_s=1 / rate_hz,
    )
    with open_store(db, read_only=False) as store:
        run = store.create_run(
            config,
            signals=[
                ChannelInfo(label=s, unit="m" if s == "Z Position" else "A") for s in config.signals
            ],
            specs=[ChannelInfo(label="Bias", unit="V")],
            instrument={"kind": "benchmark"},
            started_at_utc=utc_iso(datetime.now(UTC)),
        )
        writer = store.record_writer(
            run, n_signals=3, n_specs=1, flush_interval_s=config.flush_interval_s, max_batch=500
        )
        origin = time.perf_counter()
        total = int(seconds * rate_hz)
        for k in range(total):
            due = origin + k / rate_hz
            while (now := time.perf_counter()) < due:
                time.sleep(min(0.002, due - now))
            t = k / rate_hz
            writer.put(
                Sample(
                    k,
                    k,
                    t,
                    t,
                    0.0002,
                    (1e-9 * math.sin(t), 1e-10 * (1 + 0.1 * math.cos(7 * t)), 0.1),
                    (0.1,),
                )
            )
            progress[0] = k
        writer.close()
        store.finish_run(
            run.id, status="completed", ended_at_utc=utc_iso(datetime.now(UTC)), reason="benchmark"
        )
    done.set()


def bench_strip(browser: Any, work: Path, rate_hz: float, seconds: float) -> dict[str, Any]:
    home = work / f"strip-{int(rate_hz)}"
    home.mkdir(parents=True)
    db = home / "trajectories.sqlite"
    name = f"strip-{int(rate_hz)}hz"
    progress = [-1]
    done = threading.Event()
    # The run must exist before the page opens it: write one sample's worth first.
    writer = threading.Thread(target=record_at, args=(db, name, rate_hz, seconds, progress, done))
    writer.start()
    while progress[0] < 0:
        time.sleep(0.01)
    lags: list[float] = []
    with serve(config_for(home)) as url:
        context = browser.new_context()
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        page.goto(f"{url}/instrument?run={name}&window_s=60")
        page.wait_for_function("() => window.atomlab && window.atomlab.points > 0")
        busy0 = metric(cdp, "TaskDuration")
        wall0 = time.perf_counter()
        while not done.is_set():
            time.sleep(0.5)
            drawn = page.evaluate("window.atomlab.lastSample") or 0
            lags.append(max(0, progress[0] - drawn) / rate_hz)
        last = progress[0]
        finished = time.perf_counter()
        page.wait_for_function(f"() => window.atomlab.lastSample >= {last}", timeout=30_000)
        catch_up = time.perf_counter() - finished
        busy = (metric(cdp, "TaskDuration") - busy0) / (time.perf_counter() - wall0)
        points = page.evaluate("window.atomlab.points")
        trace_len = page.evaluate("document.getElementById('strip').data[0].x.length")
        context.close()
    writer.join()
    lags.sort()
    return {
        "rate_hz": rate_hz,
        "written": last + 1,
        "drawn": points,
        "kept_in_chart": trace_len,
        "lag_s": {
            "p50": round(statistics.median(lags), 3),
            "p95": round(lags[int(0.95 * (len(lags) - 1))], 3),
            "max": round(lags[-1], 3),
        },
        "catch_up_s": round(catch_up, 3),
        "browser_busy_share": round(busy, 3),
    }


def metric(cdp: Any, name: str) -> float:
    for item in cdp.send("Performance.getMetrics")["metrics"]:
        if item["name"] == name:
            return float(item["value"])
    return 0.0


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each recording")
    args = parser.parse_args()
    configure_logging("WARNING", "console")  # logs to stderr: stdout is the JSON result
    with tempfile.TemporaryDirectory(prefix="atomlab-dash-bench-") as tmp, chromium() as browser:
        work = Path(tmp)
        runs = bench_runs_page(browser, work, args.repeats)
        big, small = runs["1000"], runs["10"]
        say(
            f"runs page, 1,000 runs: ready {big['cold']['ready_ms']:.0f} ms cold, "
            f"{big['warm']['ready_ms']:.0f} ms warm (10 runs: {small['cold']['ready_ms']:.0f} / "
            f"{small['warm']['ready_ms']:.0f} ms; target 1000 ms)"
        )
        strips = {}
        for rate in (10.0, 100.0):
            strips[f"{int(rate)}hz"] = result = bench_strip(browser, work, rate, args.seconds)
            lag = result["lag_s"]
            say(
                f"strip chart at {rate:.0f} Hz: {result['drawn']}/{result['written']} samples "
                f"drawn, lag p50 {lag['p50']} s max {lag['max']} s, caught up "
                f"{result['catch_up_s']} s after the last write, browser busy "
                f"{result['browser_busy_share']:.0%}"
            )
        strips["ratio_busy_100_vs_10"] = round(
            strips["100hz"]["browser_busy_share"] / max(strips["10hz"]["browser_busy_share"], 1e-6),
            2,
        )
    print(json.dumps({"runs_page": runs, "strip_chart": strips}, indent=2))


if __name__ == "__main__":
    main()
