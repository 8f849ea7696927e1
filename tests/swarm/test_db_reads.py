"""Read-only access to the swarm store for live views: nothing is created or changed, and cursor
reads see what a running service writes afterwards."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from atomlab.core.clock import FakeClock, utc_iso
from atomlab.core.errors import NotFoundError
from atomlab.swarm.db import SwarmStore, agent_row, command_row, defect_row
from atomlab.swarm.models import (
    Action,
    AgentState,
    AgentStatus,
    Command,
    Defect,
    DefectStatus,
    Point,
)

NOW = FakeClock().now()


def _defect(defect_id: str, seq: int, status: DefectStatus) -> Defect:
    return Defect(
        defect_id, Point(seq, 2 * seq, 0), "vacancy", 5, NOW, "cid", seq=seq, status=status
    )


def _command(command_id: str, seconds: int) -> Command:
    created = NOW + timedelta(seconds=seconds)
    return Command(command_id, "d1", "a0", Action.REPAIR, Point(1, 2, 0), 95.0, "cid", created)


def test_opening_read_only_never_creates_a_database(tmp_path: Path) -> None:
    path = tmp_path / "swarm.sqlite"
    with pytest.raises(NotFoundError, match="no swarm database"):
        SwarmStore.open_read_only(f"sqlite:///{path}")
    assert not path.exists()


def test_a_read_only_store_reads_what_the_service_writes_and_cannot_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'swarm.sqlite'}"
    writer = SwarmStore.open(url)
    writer.write(
        [
            ("defect", defect_row(_defect("d2", 2, DefectStatus.QUEUED))),
            ("defect", defect_row(_defect("d1", 1, DefectStatus.COMPLETED))),
            ("agent", agent_row(AgentState("a1", Point(3, 4, 0), AgentStatus.MOVING))),
            ("agent", agent_row(AgentState("a0", Point(1, 1, 0)))),
            ("command", command_row(_command("c1", 1))),
            ("event", {"at": "t1", "event": "halt", "detail": "proximity 0.4 nm"}),
        ]
    )
    reader = SwarmStore.open_read_only(url)
    assert [d.defect_id for d in reader.defects()] == ["d1", "d2"]  # detection order
    assert reader.defect_counts() == {"completed": 1, "queued": 1}
    assert [(a.agent_id, a.position) for a in reader.agents()] == [
        ("a0", Point(1, 1, 0)),
        ("a1", Point(3, 4, 0)),
    ]
    assert reader.halt_reason() == "proximity 0.4 nm"
    [first] = reader.events_after(0)
    cursor = first["event_id"]
    assert reader.events_after(cursor) == []
    [c1] = reader.commands_created_after(None)

    writer.write(
        [
            ("command", command_row(_command("c2", 2))),
            ("event", {"at": "t2", "event": "resume", "detail": None}),
            ("agent", agent_row(AgentState("a1", Point(5, 4, 0), AgentStatus.IDLE))),
        ]
    )
    assert [e["event"] for e in reader.events_after(cursor)] == ["resume"]
    assert reader.halt_reason() is None
    stored_form = utc_iso(c1.created_at)
    assert [c.command_id for c in reader.commands_created_after(stored_form)] == ["c2"]
    assert reader.agents()[1].position == Point(5, 4, 0)
    with pytest.raises(OperationalError, match="readonly"):
        reader.write([("event", {"at": "t3", "event": "x"})])
    reader.close()
    writer.close()
