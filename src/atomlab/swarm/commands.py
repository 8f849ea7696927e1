"""The repair queue (priority by severity, deduplicated) and the book of issued commands.

:class:`RepairQueue` holds defects waiting for an agent, highest severity first, then the
planner's route rank; an :class:`asyncio.Event` wakes the dispatcher when work arrives.
:class:`CommandBook` holds every command with its status, which only moves
pending → in_progress → completed / failed (property 9)::

    queue.push(defect, rank=3)
    book.add(command); book.advance(command.command_id, CommandStatus.IN_PROGRESS)
"""

from __future__ import annotations

import asyncio
import bisect
from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from atomlab.core.errors import InvalidInputError, NotFoundError
from atomlab.swarm.models import (
    COMMAND_TRANSITIONS,
    Command,
    CommandStatus,
    Defect,
)

QueueKey = tuple[int, int, int, str]


class IllegalTransitionError(InvalidInputError):
    """A command status change that property 9 forbids (e.g. completed → pending)."""

    type_name = "illegal_transition"


class RepairQueue:
    """Defects awaiting an agent; ordered by (-severity, rank, detection order), no duplicates."""

    def __init__(self) -> None:
        self._keys: list[QueueKey] = []
        self._defects: dict[str, Defect] = {}
        self._key_of: dict[str, QueueKey] = {}
        self.changed = asyncio.Event()
        self.enqueued_total = 0
        self.version = 0  # changes with every push and removal

    def push(self, defect: Defect, rank: int = 0) -> bool:
        """Queue ``defect``; False (and nothing changes) when it is already queued."""
        if defect.defect_id in self._defects:
            return False
        key = (-defect.severity, rank, defect.seq, defect.defect_id)
        bisect.insort(self._keys, key)
        self._defects[defect.defect_id] = defect
        self._key_of[defect.defect_id] = key
        self.enqueued_total += 1
        self.version += 1
        self.changed.set()
        return True

    def remove(self, defect_id: str) -> Defect | None:
        defect = self._defects.pop(defect_id, None)
        if defect is not None:
            self.version += 1
            key = self._key_of.pop(defect_id)
            index = bisect.bisect_left(self._keys, key)
            del self._keys[index]
        return defect

    def peek(self, limit: int | None = None) -> list[Defect]:
        """Queued defects in priority order (the first ``limit``)."""
        keys = self._keys if limit is None else self._keys[:limit]
        return [self._defects[key[3]] for key in keys]

    def __contains__(self, defect_id: object) -> bool:
        return defect_id in self._defects

    def __len__(self) -> int:
        return len(self._keys)


class CommandBook:
    """Every command issued, by id, with status changes checked against property 9."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(self, command: Command) -> None:
        if command.command_id in self._commands:
            raise InvalidInputError(f"command {command.command_id!r} already exists")
        self._commands[command.command_id] = command

    def get(self, command_id: str) -> Command:
        try:
            return self._commands[command_id]
        except KeyError:
            raise NotFoundError(
                f"no command {command_id!r}; list commands with GET /api/commands",
                field="command_id",
                value=command_id,
            ) from None

    def find(self, command_id: str) -> Command | None:
        return self._commands.get(command_id)

    def advance(
        self, command_id: str, status: CommandStatus, *, at: datetime, detail: str | None = None
    ) -> Command:
        """Move a command to ``status``; raises :class:`IllegalTransitionError` if forbidden."""
        command = self.get(command_id)
        if status not in COMMAND_TRANSITIONS[command.status]:
            raise IllegalTransitionError(
                f"command {command_id} cannot go from {command.status} to {status}",
                field="status",
                value=str(status),
            )
        command.status = status
        command.updated_at = at
        if detail is not None:
            command.detail = detail
        return command

    def select(
        self,
        *,
        status: CommandStatus | None = None,
        agent_id: str | None = None,
        defect_id: str | None = None,
    ) -> list[Command]:
        return [
            c
            for c in self._commands.values()
            if (status is None or c.status is status)
            and (agent_id is None or c.agent_id == agent_id)
            and (defect_id is None or c.defect_id == defect_id)
        ]

    def active(self) -> list[Command]:
        return [c for c in self._commands.values() if not c.status.terminal]

    def counts(self) -> dict[str, int]:
        tally = Counter(c.status.value for c in self._commands.values())
        return {status.value: tally.get(status.value, 0) for status in CommandStatus}

    def load(self, commands: Iterable[Command]) -> None:
        for command in commands:
            self._commands[command.command_id] = command

    def __len__(self) -> int:
        return len(self._commands)
