"""Server-sent events: each live view is a loop that reads what changed and sends it.

A stream calls a synchronous ``poll`` (a cursor read: samples after N, events after M, the bytes
after offset K) in a worker thread every tick and sends the events it returns. A failed poll is
logged, counted (``/health``), sent to the page as a ``problem`` event, and retried with back-off:
the stream never dies silently and never spins.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request

from atomlab.core.clock import Clock
from atomlab.core.errors import AtomlabError
from atomlab.core.logging import get_logger
from atomlab.dashboard.shell import strict_json

PING_S = 15
MAX_BACKOFF_S = 10.0
STOP_CHECK_S = 0.25
"""Longest a stream sleeps without looking at the stop flag (a server stopping ends it fast)."""
Poll = Callable[[], list[ServerSentEvent]]

log = get_logger(__name__)


@dataclass
class StreamStats:
    """What ``/health`` reports about the live streams of one app."""

    open: int = 0
    served: int = 0
    errors: int = 0
    last_error: str | None = None
    by_stream: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "served": self.served,
            "errors": self.errors,
            "last_error": self.last_error,
            "open_by_stream": dict(self.by_stream),
        }


def event(name: str, data: Any, *, event_id: str | None = None) -> ServerSentEvent:
    """One SSE event with a strict JSON body (a NaN or infinity travels as null)."""
    return ServerSentEvent(data=strict_json(data), event=name, id=event_id)


def stream(
    request: Request,
    name: str,
    poll: Poll,
    *,
    tick_s: float,
    clock: Clock,
    stats: StreamStats,
    stopping: threading.Event,
    first: list[ServerSentEvent] | None = None,
    on_close: Callable[[], None] | None = None,
) -> EventSourceResponse:
    """An SSE response that sends ``first``, then whatever ``poll`` returns, every ``tick_s``;
    ``on_close`` (closing the stream's store) runs when the client goes or the server stops;
    ``stopping`` set ends the stream within :data:`STOP_CHECK_S`."""

    async def events() -> AsyncIterator[ServerSentEvent]:
        stats.open += 1
        stats.served += 1
        stats.by_stream[name] = stats.by_stream.get(name, 0) + 1
        failures = 0
        try:
            for item in first or []:
                yield item
            while not stopping.is_set():
                try:
                    # Not abandoned on cancel: a disconnect waits for the read in flight, so
                    # on_close never closes a store under a running query.
                    batch = await anyio.to_thread.run_sync(poll)
                    failures = 0
                except AtomlabError as exc:  # a database busy or gone: say so, keep trying
                    failures += 1
                    batch = [event("problem", {"message": exc.message})]
                except Exception as exc:  # a bug: log and count it, tell the page, back off
                    failures += 1
                    stats.errors += 1
                    stats.last_error = f"{name}: {type(exc).__name__}: {exc}"
                    log.exception("dashboard.stream_failed", stream=name)
                    batch = [event("problem", {"message": f"live updates failed: {exc}"})]
                for item in batch:
                    yield item
                pause = tick_s if not failures else min(MAX_BACKOFF_S, tick_s * 2**failures)
                while pause > 0 and not stopping.is_set():
                    await clock.sleep_async(min(pause, STOP_CHECK_S))
                    pause -= STOP_CHECK_S
        finally:
            stats.open -= 1
            stats.by_stream[name] -= 1
            if on_close is not None:
                on_close()

    return EventSourceResponse(
        events(),
        ping=PING_S,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def last_event_id(request: Request) -> int | None:
    """The ``Last-Event-ID`` an EventSource sends when it reconnects (our ids are integers)."""
    raw = request.headers.get("last-event-id")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None
