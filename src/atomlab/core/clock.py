"""Clocks: the system clock and a fake one whose sleeps advance time at once.

Anything in atomlab that waits, times out or stamps time takes a :class:`Clock`, so tests drive
time explicitly instead of sleeping::

    clock = FakeClock()
    clock.sleep(30)          # returns at once
    assert clock.monotonic() == 30
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Time source used by everything that waits or measures."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    def now(self) -> datetime:
        """Timezone-aware UTC wall time."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def sleep_async(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def sleep_async(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))

    def __repr__(self) -> str:
        return "SystemClock()"


DEFAULT_FAKE_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    """A clock for tests: time only moves when code sleeps or the test calls :meth:`advance`.

    Sleeps (sync and async) advance the clock by the requested amount and return at once;
    the async sleep yields to the event loop once so other tasks can run.
    """

    def __init__(self, start: float = 0.0, *, epoch: datetime = DEFAULT_FAKE_EPOCH) -> None:
        self._now = start
        self._start = start
        self._epoch = epoch
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._now

    def now(self) -> datetime:
        with self._lock:
            return self._epoch + timedelta(seconds=self._now - self._start)

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance by {seconds})")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))

    async def sleep_async(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        await asyncio.sleep(0)

    def __repr__(self) -> str:
        return f"FakeClock(t={self._now})"


def utc_iso(moment: datetime) -> str:
    """UTC ISO-8601 with a ``Z`` suffix and microseconds, the form atomlab stores wall times in."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now_iso(clock: Clock | None = None) -> str:
    """The current UTC time as ISO-8601 with ``Z``."""
    return utc_iso((clock or SystemClock()).now())
