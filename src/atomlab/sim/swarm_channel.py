"""Exactly-once messaging over a link that drops, duplicates and reconnects.

Both ends of ``/ws/isaac`` use the same two halves, driven by an injectable clock:

* :class:`ReliableSender` numbers reliable messages (``seq`` 1, 2, 3 … per session), keeps them
  until acked, says which are due for a resend, and on a reconnect hands them all back in order.
* :class:`ReliableReceiver` remembers which ``(peer session, seq)`` it has processed so a
  duplicate is acked again but processed once.

:class:`Backoff` is the reconnect schedule 1, 2, 4 … 60 s (property 4)::

    backoff = Backoff()
    [backoff.next_delay() for _ in range(8)]   # [1, 2, 4, 8, 16, 32, 60, 60]
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from atomlab.core.clock import Clock
from atomlab.core.errors import UnavailableError
from atomlab.sim.swarm_wire import Envelope, MessageType, make_envelope, new_id

DEFAULT_MAX_PENDING = 10_000
RECEIVE_WINDOW = 100_000  # a seq this far past the last in-order one is refused (memory bound)
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 60.0
BACKOFF_MULTIPLIER = 2.0


class Backoff:
    """Reconnect delays: ``initial``, ×``multiplier`` each failure, capped at ``maximum``."""

    def __init__(
        self,
        *,
        initial_s: float = BACKOFF_INITIAL_S,
        maximum_s: float = BACKOFF_MAX_S,
        multiplier: float = BACKOFF_MULTIPLIER,
    ) -> None:
        if initial_s <= 0 or maximum_s < initial_s or multiplier < 1:
            raise ValueError("need 0 < initial_s <= maximum_s and multiplier >= 1")
        self.initial_s = initial_s
        self.maximum_s = maximum_s
        self.multiplier = multiplier
        self._attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (and count this attempt)."""
        delay = min(self.initial_s * self.multiplier**self._attempt, self.maximum_s)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        """After a successful connection the next failure waits ``initial_s`` again."""
        self._attempt = 0


@dataclass
class _Pending:
    envelope: Envelope
    sent_at: float | None = None  # clock.monotonic() of the latest send on this connection
    first_sent_at: float | None = None
    sends_this_connection: int = 0


class ReliableSender:
    """Seq numbers, unacked messages and the resend schedule of one sender session."""

    def __init__(
        self,
        *,
        clock: Clock,
        ack_timeout_s: float,
        max_resends: int,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if ack_timeout_s <= 0 or max_resends < 0 or max_pending < 1:
            raise ValueError("need ack_timeout_s > 0, max_resends >= 0, max_pending >= 1")
        self.session_id = new_id()
        self.ack_timeout_s = ack_timeout_s
        self.max_resends = max_resends
        self.max_pending = max_pending
        self._clock = clock
        self._next_seq = 1
        self._pending: OrderedDict[int, _Pending] = OrderedDict()

    def stamp(
        self,
        message_type: MessageType,
        payload: BaseModel | dict[str, Any],
        *,
        correlation_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> Envelope:
        """A new reliable envelope with the next ``seq``, kept until acked."""
        if len(self._pending) >= self.max_pending:
            raise UnavailableError(
                f"{len(self._pending)} messages are waiting for the peer (limit "
                f"max_pending={self.max_pending}); wait for the simulator to reconnect",
                pending=len(self._pending),
            )
        envelope = make_envelope(
            message_type,
            payload,
            clock=self._clock,
            seq=self._next_seq,
            correlation_id=correlation_id,
            idempotency_key=idempotency_key,
        )
        self._pending[self._next_seq] = _Pending(envelope)
        self._next_seq += 1
        return envelope

    def mark_sent(self, seq: int) -> None:
        entry = self._pending.get(seq)
        if entry is None:
            return
        now = self._clock.monotonic()
        entry.sent_at = now
        entry.first_sent_at = entry.first_sent_at if entry.first_sent_at is not None else now
        entry.sends_this_connection += 1

    def ack(self, seq: int) -> tuple[Envelope, float | None] | None:
        """Forget ``seq``; returns it and its first-send time, or None if unknown or acked."""
        entry = self._pending.pop(seq, None)
        if entry is None:
            return None
        return entry.envelope, entry.first_sent_at

    def due(self) -> list[Envelope]:
        """Sent messages whose ack is overdue (oldest first)."""
        now = self._clock.monotonic()
        return [
            entry.envelope
            for entry in self._pending.values()
            if entry.sent_at is not None and now - entry.sent_at >= self.ack_timeout_s
        ]

    def exhausted(self) -> bool:
        """True when some message was sent ``1 + max_resends`` times on this connection."""
        limit = 1 + self.max_resends
        return any(
            entry.sends_this_connection >= limit
            and entry.sent_at is not None
            and self._clock.monotonic() - entry.sent_at >= self.ack_timeout_s
            for entry in self._pending.values()
        )

    def unsent(self) -> list[Envelope]:
        """Messages never sent on the current connection, in ``seq`` order."""
        return [entry.envelope for entry in self._pending.values() if entry.sent_at is None]

    def disconnected(self) -> None:
        """A connection ended: everything unacked goes again on the next one."""
        for entry in self._pending.values():
            entry.sent_at = None
            entry.sends_this_connection = 0

    def pending(self) -> list[Envelope]:
        return [entry.envelope for entry in self._pending.values()]

    def __len__(self) -> int:
        return len(self._pending)


class ReliableReceiver:
    """Which reliable messages of the peer's current session were already processed."""

    def __init__(self) -> None:
        self.peer_session: str | None = None
        self._contiguous = 0  # every seq <= this was processed
        self._above: set[int] = set()

    def peer_changed(self, session_id: str) -> bool:
        """Follow the peer's session; a new session (a restarted peer) starts from seq 1."""
        if session_id == self.peer_session:
            return False
        self.peer_session = session_id
        self._contiguous = 0
        self._above.clear()
        return True

    def seen(self, seq: int) -> bool:
        return seq <= self._contiguous or seq in self._above

    def in_window(self, seq: int) -> bool:
        """False for a seq so far ahead that remembering it could grow without bound."""
        return seq <= self._contiguous + RECEIVE_WINDOW

    def mark(self, seq: int) -> None:
        if self.seen(seq):
            return
        self._above.add(seq)
        while self._contiguous + 1 in self._above:
            self._contiguous += 1
            self._above.discard(self._contiguous)


__all__ = ["Backoff", "ReliableReceiver", "ReliableSender"]
