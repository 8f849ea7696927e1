"""The store: rows round-trip, the newest state of a row wins, the writer batches off the loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.errors import InvalidInputError
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

NOW = FakeClock().now()


def _defect(defect_id: str = "d1", status: DefectStatus = DefectStatus.QUEUED) -> Defect:
    return Defect(defect_id, Point(12, 34, 0), "vacancy", 7, NOW, "cid", seq=3, status=status)


def _command(status: CommandStatus = CommandStatus.PENDING) -> Command:
    return Command("c1", "d1", "a0", Action.REPAIR, Point(12, 34, 0), 95.0, "cid", NOW, 7, status)


def test_rows_round_trip_and_the_newest_state_of_a_row_wins(tmp_path: Path) -> None:
    store = SwarmStore.open(f"sqlite:///{tmp_path / 'swarm.sqlite'}")
    agent = AgentState(
        "a0", Point(5, 6, 0), AgentStatus.MOVING, temperature_c=41.5, assigned_total=2
    )
    store.write(
        [
            ("defect", defect_row(_defect())),
            ("command", command_row(_command())),
            ("command", command_row(_command(CommandStatus.IN_PROGRESS))),
            ("agent", agent_row(agent)),
            ("event", {"at": "t", "event": "retry", "defect_id": "d1", "detail": "still there"}),
        ]
    )
    store.write([("defect", defect_row(_defect(status=DefectStatus.COMPLETED)))])
    snapshot = store.load()
    [defect] = snapshot.defects
    assert defect.status is DefectStatus.COMPLETED and defect.position == Point(12, 34, 0)
    assert defect.detected_at == NOW
    [command] = snapshot.commands
    assert command.status is CommandStatus.IN_PROGRESS and command.action is Action.REPAIR
    [loaded] = snapshot.agents
    assert (loaded.position, loaded.status, loaded.temperature_c) == (
        Point(5, 6, 0),
        AgentStatus.MOVING,
        41.5,
    )
    assert [e["event"] for e in store.events("d1")] == ["retry"]
    store.close()


def test_an_unusable_database_url_is_refused_with_the_fix() -> None:
    with pytest.raises(InvalidInputError, match="--db-url"):
        SwarmStore.open("nosuchdialect://x")


async def test_the_writer_commits_everything_put_before_a_flush(tmp_path: Path) -> None:
    store = SwarmStore.open(f"sqlite:///{tmp_path / 'swarm.sqlite'}")
    writer = StoreWriter(store, flush_interval_s=0.0)
    writer.start()
    for i in range(1200):
        writer.put("defect", defect_row(_defect(f"d{i}")))
    await writer.flush()
    assert len((await asyncio.to_thread(store.load)).defects) == 1200
    assert writer.written == 1200
    await writer.close()
    store.close()
