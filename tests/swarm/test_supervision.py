"""No background task dies silently: crashes are logged, counted, shown in /health and the task
restarted (or the service stopped); the database writer survives bad rows and a database that
comes and goes; a 202 means the batch is in the database."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from atomlab.core.clock import FakeClock
from atomlab.core.metrics import new_registry
from atomlab.core.settings import load_settings
from atomlab.swarm import create_app
from atomlab.swarm.db import RowsRejectedError, StoreWriter, SwarmStore, agent_row, defect_row
from atomlab.swarm.metrics import SwarmMetrics
from atomlab.swarm.models import AgentState, Defect, DefectStatus, Point
from atomlab.swarm.supervision import Supervisor
from tests.swarm.harness import operator_client

WAIT_S = 10.0


def _supervisor(**kwargs: Any) -> tuple[Supervisor, SwarmMetrics]:
    metrics = SwarmMetrics(new_registry())
    return Supervisor(clock=FakeClock(), metrics=metrics, **kwargs), metrics


def _count(metrics: SwarmMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


async def test_a_crashed_task_is_logged_counted_restarted_and_shown_degraded() -> None:
    supervisor, metrics = _supervisor()
    runs: list[int] = []
    second_run = asyncio.Event()

    async def worker() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise OverflowError("int too large to convert to SQLite INTEGER")
        second_run.set()
        await asyncio.Event().wait()

    assert supervisor.status() == "healthy"
    supervisor.start("swarm-db-writer", worker)
    async with asyncio.timeout(WAIT_S):
        await second_run.wait()
    report = supervisor.report()["swarm-db-writer"]
    assert (report["state"], report["failures"], report["restarts"]) == ("running", 1, 1)
    assert report["last_error"].startswith("OverflowError")
    assert supervisor.status() == "degraded"
    assert _count(metrics, "atomlab_swarm_task_failures_total", task="swarm-db-writer") == 1
    assert _count(metrics, "atomlab_swarm_task_restarts_total", task="swarm-db-writer") == 1
    assert isinstance(supervisor.clock, FakeClock)
    supervisor.clock.advance(301.0)  # long after the failure: healthy again
    assert supervisor.status() == "healthy"
    await supervisor.stop()
    assert supervisor.report()["swarm-db-writer"]["state"] == "stopped"


async def test_a_task_that_keeps_crashing_stops_the_service_with_a_reason() -> None:
    reasons: list[str] = []
    supervisor, _ = _supervisor(on_fatal=reasons.append, max_restarts=2)

    async def worker() -> None:
        raise RuntimeError("always")

    supervisor.start("swarm-dispatcher", worker)
    async with asyncio.timeout(WAIT_S):
        while not reasons:  # noqa: ASYNC110 - the callback appends; nothing to await on
            await asyncio.sleep(0.01)
    assert "swarm-dispatcher failed 3 times" in reasons[0]
    assert supervisor.status() == "failing"
    assert supervisor.report()["swarm-dispatcher"]["state"] == "failed"
    await supervisor.stop()


def _defect(defect_id: str, x: int = 12) -> Defect:
    now = FakeClock().now()
    return Defect(
        defect_id, Point(x, 34, 0), "vacancy", 5, now, "cid", seq=1, status=DefectStatus.QUEUED
    )


async def test_a_row_the_database_refuses_costs_that_row_only(tmp_path: Path) -> None:
    """Regression (issue 13, found 1): one agent row with x >= 1e18 nm killed the writer; a NaN
    temperature dropped its whole batch."""
    store = SwarmStore.open(f"sqlite:///{tmp_path / 'swarm.sqlite'}")
    rejected: list[str] = []
    writer = StoreWriter(store, on_rejected=lambda kind, key, exc: rejected.append(key))
    writer.start()
    huge = AgentState("far", Point(2**70, 0, 0))  # too large for an SQLite INTEGER
    hot = AgentState("nan", Point(1, 1, 0), temperature_c=math.nan)
    since = writer.last_seq
    writer.put("defect", defect_row(_defect("before")))
    writer.put("agent", agent_row(huge))
    writer.put("agent", agent_row(hot))
    writer.put("defect", defect_row(_defect("after", x=13)))
    with pytest.raises(RowsRejectedError):
        await writer.durable(since)
    writer.put("defect", defect_row(_defect("later", x=14)))
    await writer.flush()
    snapshot = await asyncio.to_thread(store.load)
    assert {d.defect_id for d in snapshot.defects} == {"before", "after", "later"}
    assert sorted(rejected) == ["far", "nan"]
    assert writer.rejected == 2
    await writer.close()
    store.close()


class FlakyStore:
    """The real store behind a fault injector: the first ``failures`` writes raise the error a
    lost database connection raises (``OperationalError``), then it recovers."""

    def __init__(self, store: SwarmStore, failures: int) -> None:
        self.store = store
        self.failures = failures
        self.attempts = 0

    def write(self, batch: Any) -> int:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise OperationalError("INSERT ...", {}, sqlite3.OperationalError("disk I/O error"))
        return self.store.write(batch)


async def test_a_database_that_fails_for_a_while_loses_nothing(tmp_path: Path) -> None:
    store = SwarmStore.open(f"sqlite:///{tmp_path / 'swarm.sqlite'}")
    flaky = FlakyStore(store, failures=3)
    failures: list[BaseException] = []
    writer = StoreWriter(flaky, on_failure=failures.append)  # type: ignore[arg-type]
    writer.start()
    for i in range(5):
        writer.put("defect", defect_row(_defect(f"d{i}", x=i)))
    async with asyncio.timeout(WAIT_S):
        await writer.durable()
    assert len(failures) == 3 and writer.unavailable is None
    assert len((await asyncio.to_thread(store.load)).defects) == 5
    await writer.close()
    store.close()


def _settings(home: Path) -> Any:
    return load_settings(overrides={"home": home}, environ={}).settings


def test_a_202_means_the_batch_is_already_in_the_database(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path))
    with operator_client(app) as client:
        for i in range(5):
            body = {"coordinates": [{"x": 1.0 + i, "y": 2.0, "severity": 4}]}
            response = client.post("/api/sensor-data", json=body)
            assert response.status_code == 202
            [defect_id] = response.json()["defect_ids"]
            # Another connection to the file, right after the answer: the row is committed.
            with sqlite3.connect(tmp_path / "swarm.sqlite") as conn:
                rows = conn.execute(
                    "SELECT defect_id FROM defects WHERE defect_id = ?", (defect_id,)
                ).fetchall()
            assert rows == [(defect_id,)]


def test_a_poisoned_agent_report_degrades_health_but_the_service_keeps_working(
    tmp_path: Path,
) -> None:
    """Defence in depth (issue 13, found 1 and 2): even a report that slipped past the wire
    validation (here handed to the coordinator directly) is ignored, shows in /health, and
    stops nothing: later reports and ingests are processed and stored."""
    app = create_app(_settings(tmp_path))
    with operator_client(app) as client:
        coordinator = app.state.swarm.coordinator
        for x in (1e18, 1e300, math.inf, math.nan):
            report = {"agent_id": "a0", "position": {"x": x, "y": 0.0}, "status": "idle"}
            coordinator.handle_event("agent_status", {"agents": [report]})
        good = {"agent_id": "a0", "position": {"x": 2.5, "y": 0.0}, "status": "idle"}
        coordinator.handle_event("agent_status", {"agents": [good]})
        body = {"coordinates": [{"x": 5.0, "y": 5.0, "severity": 4}]}
        assert client.post("/api/sensor-data", json=body).status_code == 202
        health = client.get("/health").json()
        assert health["status"] == "degraded"
        assert health["tasks"]["swarm-coordinator"]["failures"] == 4
        assert health["tasks"]["swarm-db-writer"]["state"] == "running"
        [agent] = client.get("/api/agents").json()
        assert agent["position"] == {"x": 2.5, "y": 0.0, "z": 0.0}
        metrics = client.get("/metrics").text
        assert 'atomlab_swarm_task_failures_total{task="swarm-coordinator"} 4.0' in metrics
    # A clean stop happened (the with-block): the accepted defect and the agent are stored.
    with sqlite3.connect(tmp_path / "swarm.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM defects").fetchone() == (1,)
        assert conn.execute("SELECT x FROM agent_states").fetchone() == (25,)


def test_a_task_given_up_on_makes_health_503_and_stops_the_server(tmp_path: Path) -> None:
    """The service does not limp on: /health says failing (503) and the stop hook the CLI
    installs (server.should_exit, then exit 4) is called with the reason."""
    import time

    app = create_app(_settings(tmp_path))
    svc = app.state.swarm
    reasons: list[str] = []
    svc.on_fatal.append(reasons.append)
    svc.supervisor.max_restarts = 1

    async def broken() -> None:
        raise RuntimeError("the planner's invariant broke")

    with operator_client(app) as client:
        assert client.get("/health").status_code == 200
        client.portal.call(svc.supervisor.start, "swarm-planner-2", broken)  # type: ignore[union-attr]
        deadline = time.monotonic() + WAIT_S
        while not reasons:
            assert time.monotonic() < deadline, "the supervisor never gave up"
            client.get("/health")  # lets the server's loop run; no sleep needed
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "failing"
        assert health.json()["tasks"]["swarm-planner-2"]["state"] == "failed"
    assert "swarm-planner-2 failed 2 times" in reasons[0]
