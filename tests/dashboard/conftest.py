"""Fixtures for the dashboard tests: a real server on 127.0.0.1:0, and real data to show.

The data is made the way users make it: a Monitor recording the STM simulator into a SQLite
file, runs tracked by RunTracker, the swarm store written by SwarmStore, engine runs by the CLI.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.settings import TrackingSettings
from atomlab.dashboard import DashboardConfig, create_app
from atomlab.tracking import RunTracker

SERVER_STOP_S = 10.0


def make_config(home: Path, **changes: Any) -> DashboardConfig:
    base: dict[str, Any] = {
        "home": home,
        "trajectory_db": home / "trajectories.sqlite",
        "swarm_db_url": f"sqlite:///{home / 'swarm.sqlite'}",
        "instrument": None,
    }
    base.update(changes)
    return DashboardConfig(**base)


@dataclass
class Server:
    """A dashboard served by uvicorn in a thread on a socket bound before it starts."""

    config: DashboardConfig
    url: str = ""
    _server: Any = None
    _thread: threading.Thread | None = None
    _sock: socket.socket | None = field(default=None, repr=False)

    def start(self) -> Server:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(128)
        # Connections wait in the listen backlog until uvicorn accepts them: no start-up race.
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(self.config),
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.config.app.state.dashboard.stop()  # live streams end first
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(SERVER_STOP_S)
            assert not self._thread.is_alive(), "the dashboard server did not stop"
        if self._sock is not None:
            self._sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[[DashboardConfig], Server]]:
    """Start dashboards on free ports; every one is stopped at the end of the test."""
    servers: list[Server] = []

    def start(config: DashboardConfig) -> Server:
        server = Server(config).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def tracked_run(
    home: Path,
    pipeline: str = "imitation",
    steps: tuple[str, ...] = ("collect", "train", "evaluate"),
    *,
    metrics: dict[str, list[float]] | None = None,
) -> Path:
    """A completed tracked run with ``metrics`` logged (C1's metrics.jsonl); its run dir."""
    with RunTracker(
        pipeline,
        list(steps),
        home=home,
        settings=TrackingSettings(gpu=False),
        handle_signals=False,
        monitor=False,
    ) as run:
        for name in steps:
            with run.step(name):
                pass
        run_dir = run.run_dir
    write_metrics(run_dir, metrics or {})
    return run_dir


def write_metrics(run_dir: Path, metrics: dict[str, list[float]], *, first_step: int = 0) -> None:
    """Append metric points in contract C1's format (one JSON object a line)."""
    lines = []
    for name, values in metrics.items():
        for k, value in enumerate(values):
            step = first_step + k
            lines.append(
                json.dumps(
                    {
                        "name": name,
                        "value": value,
                        "step": step,
                        "at": "2026-01-01T00:00:00Z",
                        "dt_s": float(step),
                    }
                )
            )
    if lines:
        with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
