"""The simulator's ground truth as a file: every tip change, crash and restoration, as it happens.

A real instrument never says when its tip changed; the simulator knows. Writing
``physics.events`` to a JSON-lines file lets another process (a scripted expert operator that is
allowed privileged knowledge, a scorer) follow them without touching the Nanonis protocol::

    log = EventLogWriter(simulator.physics, path)   # appends; one line per event
    log.flush()                                      # call often (the CLI does every 50 ms)

Each line is ``{"t_s": ..., "kind": ..., "detail": ...}``; ``t_s`` is the simulator clock, which
for the system clock is this host's monotonic clock (``time.monotonic()`` in any process).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from atomlab.core.logging import get_logger
from atomlab.sim.stm_physics import SimEvent, StmPhysics

_log = get_logger("atomlab.sim")


class EventLogWriter:
    """Appends the physics' events that are new since the last :meth:`flush` to ``path``."""

    def __init__(self, physics: StmPhysics, path: Path) -> None:
        self.physics = physics
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = path.open("a", encoding="utf-8")
        self._last: SimEvent | None = None
        self.written = 0

    def flush(self) -> int:
        """Write the new events (oldest first); returns how many were written."""
        fresh: list[SimEvent] = []
        found = self._last is None
        for event in reversed(self.physics.events):
            if event is self._last:
                found = True
                break
            fresh.append(event)
        if not found:  # the bounded event log wrapped past the last event written
            _log.warning(
                "simulator events were dropped before they were logged", path=str(self.path)
            )
        if not fresh:
            return 0
        fresh.reverse()
        self._fh.write(
            "".join(
                json.dumps({"t_s": e.t_s, "kind": e.kind, "detail": e.detail}) + "\n" for e in fresh
            )
        )
        self._fh.flush()
        self._last = fresh[-1]
        self.written += len(fresh)
        return len(fresh)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._fh.close()


def read_event_log(path: Path) -> list[SimEvent]:
    """The events in a log written by :class:`EventLogWriter` (a torn last line is skipped)."""
    events: list[SimEvent] = []
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return events
    for line in text.splitlines():
        try:
            record = json.loads(line)
            events.append(
                SimEvent(float(record["t_s"]), str(record["kind"]), str(record["detail"]))
            )
        except (ValueError, KeyError, TypeError):
            continue
    return events
