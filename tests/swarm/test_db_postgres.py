"""The swarm store on a real PostgreSQL, scenario for scenario the same as on SQLite.

Every test runs once per backend (``db_url`` is parametrised): SQLite in tmp_path and PostgreSQL
at ``ATOMLAB_TEST_POSTGRES_URL``, each test in a schema of its own that is dropped afterwards.
``eval "$(bash .ci/postgres.sh)"`` starts a throw-away server and sets the variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from atomlab.core.clock import FakeClock
from atomlab.core.errors import UnavailableError
from atomlab.core.settings import AtomlabSettings, load_settings
from atomlab.sim.swarm_world import FaultConfig
from atomlab.swarm import SwarmCoordinator, create_app
from atomlab.swarm.db import StoreWriter, SwarmStore, agent_row, command_row, defect_row
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
from tests.swarm import test_e2e as e2e
from tests.swarm.harness import operator_client

POSTGRES_URL = os.environ.get("ATOMLAB_TEST_POSTGRES_URL", "")
if not POSTGRES_URL:
    pytest.skip(
        'ATOMLAB_TEST_POSTGRES_URL is not set; `eval "$(bash .ci/postgres.sh)"` starts a '
        "throw-away PostgreSQL and sets it",
        allow_module_level=True,
    )

NOW = FakeClock().now()
TABLES = {"defects", "commands", "agent_states", "repair_events"}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database no test has used yet: a new SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'swarm.sqlite'}"
        return
    schema = f"swarm_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def _defect(defect_id: str = "d1", status: DefectStatus = DefectStatus.QUEUED) -> Defect:
    return Defect(defect_id, Point(12, 34, 0), "vacancy", 7, NOW, "cid", seq=3, status=status)


def _command(
    command_id: str = "c1", status: CommandStatus = CommandStatus.PENDING, at_s: float = 0.0
) -> Command:
    created = NOW + timedelta(seconds=at_s)
    return Command(
        command_id, "d1", "a0", Action.REPAIR, Point(12, 34, 0), 95.0, "cid", created, 7, status
    )


def test_the_schema_is_created_once_and_a_reopened_store_keeps_its_rows(db_url: str) -> None:
    store = SwarmStore.open(db_url)
    assert set(inspect(store.engine).get_table_names()) >= TABLES
    store.write([("defect", defect_row(_defect()))])
    store.close()
    reopened = SwarmStore.open(db_url)  # creating the tables again must leave them as they are
    assert [d.defect_id for d in reopened.load().defects] == ["d1"]
    reopened.close()


def test_rows_round_trip_and_the_newest_state_of_a_row_wins(db_url: str) -> None:
    store = SwarmStore.open(db_url)
    agent = AgentState(
        "a0", Point(5, 6, 0), AgentStatus.MOVING, temperature_c=41.5, assigned_total=2
    )
    detail = "tip crash at 0.3 nm — résumé ✓"
    store.write(
        [
            ("defect", defect_row(_defect())),
            ("command", command_row(_command())),
            # the same key twice in one batch: one upsert row, never "affect row a second time"
            ("command", command_row(_command(status=CommandStatus.IN_PROGRESS))),
            ("agent", agent_row(agent)),
            ("event", {"at": "t", "event": "retry", "defect_id": "d1", "detail": detail}),
        ]
    )
    store.write([("defect", defect_row(_defect(status=DefectStatus.COMPLETED)))])
    snapshot = store.load()
    [defect] = snapshot.defects
    assert defect.status is DefectStatus.COMPLETED and defect.position == Point(12, 34, 0)
    assert defect.detected_at == NOW and defect.completed_at is None
    [command] = snapshot.commands
    assert command.status is CommandStatus.IN_PROGRESS and command.action is Action.REPAIR
    assert command.thermal_budget_c == 95.0 and command.created_at == NOW
    [loaded] = snapshot.agents
    assert (loaded.position, loaded.status, loaded.temperature_c, loaded.assigned_total) == (
        Point(5, 6, 0),
        AgentStatus.MOVING,
        41.5,
        2,
    )
    [event] = store.events("d1")
    assert (event["event"], event["detail"]) == ("retry", detail)
    store.close()


def test_commands_load_in_the_order_they_were_created_after_updates(db_url: str) -> None:
    store = SwarmStore.open(db_url)
    store.write([("command", command_row(_command(f"c{i}", at_s=float(i)))) for i in range(5)])
    for _ in range(3):  # updating a row must not move it to the end of the list
        store.write([("command", command_row(_command("c0", CommandStatus.IN_PROGRESS)))])
    assert [c.command_id for c in store.load().commands] == [f"c{i}" for i in range(5)]
    store.close()


def test_events_keep_their_order_and_filter_by_defect(db_url: str) -> None:
    store = SwarmStore.open(db_url)
    names = ["detected", "dispatched", "retry", "completed"]
    for name in names:
        store.write([("event", {"at": "t", "event": name, "defect_id": "d1", "detail": None})])
    store.write([("event", {"at": "t", "event": "detected", "defect_id": "d2", "detail": None})])
    assert [e["event"] for e in store.events("d1")] == names
    ids = [e["event_id"] for e in store.events()]
    assert ids == sorted(ids) and len(ids) == 5
    store.write([("event", {"at": "t", "event": "halt", "defect_id": None, "detail": "0.4 nm"})])
    assert store.load().halt_reason == "0.4 nm"  # the newest halt/resume event decides
    store.write([("event", {"at": "t", "event": "resume", "defect_id": None, "detail": None})])
    assert store.load().halt_reason is None
    store.close()


def test_long_ids_and_nul_characters_are_stored_and_the_batch_is_not_lost(db_url: str) -> None:
    store = SwarmStore.open(db_url)
    agent = AgentState("agent-" + "x" * 100, Point(1, 1, 0))  # VARCHAR(64) on paper
    odd = Defect("d2", Point(3, 4, 0), "vacancy", 5, NOW, "scan\x007", seq=4)
    store.write(
        [
            ("defect", defect_row(_defect())),
            ("defect", defect_row(odd)),
            ("agent", agent_row(agent)),
            ("event", {"at": "t", "event": "failed", "defect_id": "d2", "detail": "tip\x00"}),
        ]
    )
    snapshot = store.load()
    assert [d.defect_id for d in snapshot.defects] == ["d1", "d2"]
    assert [a.agent_id for a in snapshot.agents] == [agent.agent_id]
    # PostgreSQL text cannot hold NUL: it reads back as U+FFFD there, as NUL on SQLite
    assert snapshot.defects[1].correlation_id.replace("\ufffd", "\x00") == "scan\x007"
    [event] = store.events("d2")
    assert event["detail"].replace("\ufffd", "\x00") == "tip\x00"
    store.close()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_connection_the_server_dropped_is_replaced_before_the_next_write(db_url: str) -> None:
    store = SwarmStore.open(db_url)
    store.write([("defect", defect_row(_defect("d1")))])
    with store.engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:  # as a server restart or an idle timeout would
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    admin.dispose()
    store.write([("defect", defect_row(_defect("d2")))])
    assert [d.defect_id for d in store.load().defects] == ["d1", "d2"]
    store.close()


async def test_the_writer_commits_everything_put_before_a_flush(db_url: str) -> None:
    store = SwarmStore.open(db_url)
    writer = StoreWriter(store, flush_interval_s=0.0)
    writer.start()
    for i in range(1200):  # more than one batch of MAX_BATCH rows
        writer.put("defect", defect_row(_defect(f"d{i}")))
    await writer.flush()
    assert len((await asyncio.to_thread(store.load)).defects) == 1200
    assert writer.written == 1200 and writer.errors == 0
    await writer.close()
    store.close()


def test_a_wrong_password_is_refused_without_showing_the_password() -> None:
    url = make_url(POSTGRES_URL).set(password="not-the-password-42")
    with pytest.raises(UnavailableError) as raised:
        SwarmStore.open(url.render_as_string(hide_password=False))
    assert "not-the-password-42" not in str(raised.value)
    assert "--db-url" in str(raised.value) or "db_url" in str(raised.value.details)


# --- the service restarted on the same database -----------------------------------------------


def _settings(home: Path) -> AtomlabSettings:
    return load_settings(overrides={"home": home}, environ={}).settings


def _link_up(client: TestClient, agents: dict[str, tuple[float, float]]) -> None:
    client.app.state.swarm.coordinator.handle_event(  # type: ignore[attr-defined]
        "link_up",
        {
            "agents": [
                {"agent_id": a, "position": {"x": x, "y": y}, "status": "idle"}
                for a, (x, y) in agents.items()
            ]
        },
    )


def _reading(x: float, y: float, severity: int = 5) -> dict[str, Any]:
    return {"x": x, "y": y, "z": 0.0, "defect_type": "vacancy", "severity": severity}


def test_a_restarted_service_resumes_queued_and_in_flight_work(db_url: str, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with operator_client(create_app(settings, db_url=db_url)) as first:
        _link_up(first, {"a0": (0.0, 0.0)})
        body = {"coordinates": [_reading(1.2, 3.4), _reading(9.0, 9.0, severity=1)]}
        ids = first.post("/api/sensor-data", json=body).json()["defect_ids"]
        first.post("/api/commands/distribute")
        [in_flight] = first.get("/api/commands").json()
    with operator_client(create_app(settings, db_url=db_url)) as second:
        defects = {d["defect_id"]: d for d in second.get("/api/defects").json()}
        assert set(defects) == set(ids)
        assert defects[in_flight["defect_id"]]["status"] == "repairing"
        [other] = [d for d in ids if d != in_flight["defect_id"]]
        assert defects[other]["status"] == "queued"
        assert second.get(f"/api/commands/{in_flight['command_id']}").json()["status"] == "pending"
        [agent] = second.get("/api/agents").json()
        assert (agent["agent_id"], agent["current_command"]) == ("a0", in_flight["command_id"])
        _link_up(second, {"a0": (0.0, 0.0)})
        second.post("/api/commands/distribute")
        commands = second.get("/api/commands").json()
        assert [c["command_id"] for c in commands] == [in_flight["command_id"]]  # not run twice
    store = SwarmStore.open(db_url)
    assert {d.defect_id for d in store.load().defects} == set(ids)  # nothing lost on the way
    store.close()


@contextlib.asynccontextmanager
async def _serving(
    home: Path, db_url: str, port: int = 0
) -> AsyncIterator[tuple[SwarmCoordinator, int]]:
    """The whole service on uvicorn (as in test_e2e), on the database at ``db_url``."""
    app = create_app(e2e._settings(home), db_url=db_url)
    sock = e2e._socket(port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await e2e._until(lambda: server.started or task.done())
    try:
        yield app.state.swarm.coordinator, sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, e2e.WAIT_S)
        sock.close()


async def test_a_restart_mid_run_loses_nothing_and_runs_nothing_twice(
    db_url: str, tmp_path: Path
) -> None:
    """Judged on the simulator's ground truth: every defect settles, no key executes twice."""
    home = tmp_path / "home"
    async with _serving(home, db_url) as (first, port):
        sim = e2e._simulator(tmp_path, port, FaultConfig(), agents=4, defects=8)
        run = asyncio.create_task(sim.run())
        await e2e._until(lambda: len(first.book) >= 2)
        issued_before = {c.command_id for c in first.book.active()}
    async with _serving(home, db_url, port) as (second, _):
        await e2e._until(lambda: e2e._settled(second, 8))
        sim.stop()
        await run
        assert issued_before <= {c.command_id for c in second.book.select()}
        e2e._check_against_ground_truth(second, sim, tmp_path)
    assert sim.connections >= 2


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    from atomlab.core.logging import configure_logging

    configure_logging("WARNING", "console")
