"""The screenshots of docs/dashboard.md: one data home made the way users make one, every page
shot in headless Chromium.

    uv run python benchmarks/dashboard_screens.py docs/img

The recording is the STM simulator recorded by the trajectory monitor on a shared fake clock
(so a minute of session takes a second), with setpoint and bias changes made by "another
program" as actions and a scan under way; runs are tracked by RunTracker with metrics logged
through its C1 API and real telemetry; the swarm rows are written by the swarm store; the engine
run is `atomlab engine run` itself.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from atomlab.core.clock import FakeClock
from atomlab.core.logging import configure_logging
from atomlab.core.settings import TrackingSettings
from atomlab.instrument import NanonisClient, load_catalog
from atomlab.sim import Disturbances, start_simulator_in_thread
from atomlab.swarm.db import SwarmStore, agent_row, command_row, defect_row
from atomlab.swarm.models import (
    Action,
    AgentState,
    AgentStatus,
    Command,
    CommandStatus,
    Defect,
    DefectStatus,
    Point,
)
from atomlab.tracking import RunTracker, StepSpec
from atomlab.trajectory import InstrumentSource, Monitor, MonitorConfig, open_store
from dashboard import chromium, config_for, serve

VIEWPORT = {"width": 1400, "height": 900}
CHANGES = {
    150: ("ZCtrl.SetpntSet", {"setpoint": 1.5e-10}),
    320: ("Bias.Set", {"bias_v": 0.35}),
    470: ("ZCtrl.SetpntSet", {"setpoint": 1.0e-10}),
}


def record_session(db: Path, port: int, clock: FakeClock) -> None:
    """A minute of recording at 10 Hz, with three changes made from another client."""
    config = MonitorConfig(
        run_name="tip-prep-1",
        signals=("Z Position", "Tunnel Current"),
        specs=("Bias", "Z Setpoint"),
        interval_s=0.1,
        db_path=db,
    )
    with NanonisClient("127.0.0.1", port) as client, NanonisClient("127.0.0.1", port) as other:
        other.call("Scan.Action", {"action": 0, "direction_up": 1})
        polls = [0]

        def on_record(record: Any) -> None:
            if type(record).__name__ != "Sample":
                return
            polls[0] += 1
            change = CHANGES.get(polls[0])
            if change:
                other.call(*change)

        with open_store(db, read_only=False) as store:
            Monitor(
                InstrumentSource(client, load_catalog()),
                config,
                store,
                clock=clock,
                on_record=on_record,
            ).run(max_samples=600)


def tracked_runs(home: Path) -> threading.Event:
    """Three finished imitation runs with curves, and one still going (stopped by the event)."""
    settings = TrackingSettings(gpu=False, telemetry_interval_s=0.2)
    for k, (lr, noise) in enumerate(((3e-4, 0.05), (1e-3, 0.12), (1e-4, 0.02))):
        with RunTracker(
            "imitation",
            [StepSpec(name="collect", units=20), "train_bc", "evaluate"],
            home=home,
            settings=settings,
            handle_signals=False,
        ) as run:
            run.log_params({"learning_rate": lr, "epochs": 40, "seed": k})
            with run.step("collect"):
                for _ in range(20):
                    sum(i * i for i in range(40_000))  # real work, for real telemetry
                    run.advance()
            with run.step("train_bc"):
                for epoch in range(40):
                    decay = math.exp(-epoch * (0.04 + 0.03 * k))
                    run.log_metrics(
                        {
                            "loss": 0.1 + 2.0 * decay + noise * math.sin(epoch * (1.7 + k)),
                            "val/loss": 0.2 + 2.1 * decay + noise * math.cos(epoch),
                        },
                        step=epoch,
                    )
            with run.step("evaluate"):
                for episode in range(10):
                    run.log_metric(
                        "return", 40 + 6 * episode * (1 + k) / 3 - 8 * noise, step=episode
                    )
    with (
        RunTracker(
            "calibration", ["sweep"], home=home, settings=settings, handle_signals=False
        ) as run,
        run.step("sweep"),
    ):
        pass
    finished = threading.Event()
    started = threading.Event()

    def going() -> None:
        with RunTracker(
            "imitation",
            ["collect", StepSpec(name="train_bc", expected_s=600, units=40), "evaluate"],
            home=home,
            settings=settings,
            handle_signals=False,
        ) as run:
            with run.step("collect"):
                pass
            with run.step("train_bc"):
                for epoch in range(14):
                    run.log_metric("loss", 0.3 + 2.0 * math.exp(-epoch * 0.06), step=epoch)
                    run.advance()
                started.set()
                finished.wait(120)

    threading.Thread(target=going, daemon=True).start()
    started.wait(60)
    return finished


def swarm_rows(home: Path) -> None:
    store = SwarmStore.open(f"sqlite:///{home / 'swarm.sqlite'}")
    now = FakeClock().now()
    statuses = (
        [DefectStatus.COMPLETED] * 9
        + [DefectStatus.REPAIRING] * 3
        + [DefectStatus.QUEUED] * 5
        + [DefectStatus.FAILED, DefectStatus.UNREPAIRABLE]
    )
    rows: list[tuple[str, dict[str, Any]]] = []
    for k, status in enumerate(statuses):
        x, y = (17 + 37 * k) % 190 + 5, (53 + 71 * k) % 190 + 5
        rows.append(
            (
                "defect",
                defect_row(
                    Defect(
                        f"d{k + 1}",
                        Point(x, y),
                        "vacancy",
                        1 + k % 9,
                        now,
                        "demo",
                        seq=k,
                        status=status,
                    )
                ),
            )
        )
    agents = [
        ("agent-01", (40, 60), AgentStatus.MOVING),
        ("agent-02", (150, 30), AgentStatus.REPAIRING),
        ("agent-03", (90, 170), AgentStatus.IDLE),
        ("agent-04", (170, 150), AgentStatus.MOVING),
    ]
    for n, (agent_id, (x, y), status) in enumerate(agents):
        rows.append(
            (
                "agent",
                agent_row(
                    AgentState(
                        agent_id,
                        Point(x, y),
                        status,
                        temperature_c=31 + 9 * n,
                        assigned_total=3 + n,
                    )
                ),
            )
        )
        for j in range(4):
            target = Point(
                (x + 23 * (j + 1) * (1 if n % 2 else -1)) % 200, (y + 31 * (j + 1)) % 200
            )
            command = Command(
                f"cmd-{n}-{j}",
                f"d{1 + (n * 4 + j) % 19}",
                agent_id,
                Action.REPAIR,
                target,
                95.0,
                "demo",
                now + timedelta(seconds=10 * j + n),
                status=CommandStatus.COMPLETED,
            )
            rows.append(("command", command_row(command)))
    rows.append(
        (
            "event",
            {
                "at": "2026-01-01T00:00:05Z",
                "event": "completed",
                "defect_id": "d1",
                "agent_id": "agent-01",
                "detail": "re-scan: gone",
            },
        )
    )
    store.write(rows)
    store.close()


def engine_run(home: Path, work: Path) -> None:
    env = {**os.environ, "ATOMLAB_HOME": str(home)}
    src, out = work / "scans.jsonl", work / "triage.jsonl"
    cmd = [sys.executable, "-m", "atomlab"]
    subprocess.run(
        [*cmd, "engine", "sample", "defect-triage", "-o", str(src)],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *cmd,
            "engine",
            "run",
            "defect-triage",
            "-i",
            str(src),
            "-o",
            str(out),
            "--provider",
            "offline",
        ],
        env=env,
        check=True,
        capture_output=True,
    )


def take_screenshots(browser: Any, work: Path, out_dir: Path) -> list[Path]:
    home = work / "home"
    home.mkdir(parents=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    clock = FakeClock(start=0.0)
    shots: list[Path] = []
    with start_simulator_in_thread(
        seed=3, ports=[0], disturbances=Disturbances.none(), clock=clock
    ) as sim:
        record_session(home / "trajectories.sqlite", sim.ports[0], clock)
        finished = tracked_runs(home)
        swarm_rows(home)
        engine_run(home, work)
        with serve(config_for(home, instrument=("127.0.0.1", sim.ports[0]))) as url:
            context = browser.new_context(viewport=VIEWPORT)
            page = context.new_page()
            from atomlab.tracking import RunIndex

            with RunIndex.open(home) as index:
                imitation = [
                    r.run_id for r in index.list_runs(pipeline="imitation", status="completed")
                ]
                live = index.list_runs(status="running")[0].run_id
            pages = {
                "dashboard-instrument.png": ("/instrument?action=1", "#scan .heatmaplayer"),
                "dashboard-runs.png": ("/runs", "#runs tbody tr"),
                "dashboard-run.png": (f"/runs/{live}", "#metrics.js-plotly-plot"),
                "dashboard-compare.png": (
                    "/runs/compare?" + "&".join(f"run={r}" for r in imitation),
                    "#metrics.js-plotly-plot",
                ),
                "dashboard-swarm.png": ("/swarm", "#map.js-plotly-plot"),
                "dashboard-engine.png": ("/engine", "#engine-figure.js-plotly-plot"),
            }
            for name, (path, ready) in pages.items():
                page.goto(url + path)
                page.wait_for_selector(ready)
                time.sleep(1.5)  # let the live stream's first answers land before the shot
                target = out_dir / name
                page.screenshot(path=str(target), full_page=True)
                shots.append(target)
            context.close()
        finished.set()
    return shots


def main() -> None:
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/img")
    configure_logging("WARNING", "console")
    with tempfile.TemporaryDirectory(prefix="atomlab-dash-shots-") as tmp, chromium() as browser:
        for shot in take_screenshots(browser, Path(tmp), out_dir):
            print(shot)


if __name__ == "__main__":
    main()
