"""The registry of simulated commands and what every handler shares: argument checks, waiting,
the session folder.

A handler is a method of :class:`~atomlab.sim.stm_commands.StmCommands` (or of one of the mixins
it is built from, one per instrument module) decorated with ``@handles("Module.Command")``. It
gets the decoded arguments by name and returns the reply values by name, or an awaitable of them
when the reply has to wait (a sweep, a tip move with ``wait = 1``). Raising
:class:`CommandRefusedError` sends an error reply with its message.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from atomlab.core.clock import Clock
from atomlab.core.errors import InvalidInputError
from atomlab.sim.stm_physics import StmPhysics

Args = dict[str, Any]
Values = dict[str, Any]
Handler = Callable[[Args], Any]
"""Returns reply values, or an awaitable of them when the reply has to wait."""

MAX_WAIT_S: Final = 600.0
WAIT_POLL_S: Final = 0.01

ROUTES: dict[str, str] = {}
"""Nanonis command name -> handler method name, filled by :func:`handles`."""


class CommandRefusedError(InvalidInputError):
    """The simulated instrument refuses a request; the message goes into the error reply."""

    type_name = "command_refused"


def handles(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated method as the handler of the command ``name``."""

    def register(method: Callable[..., Any]) -> Callable[..., Any]:
        if name in ROUTES and ROUTES[name] != method.__name__:
            raise ValueError(f"{name} has two handlers: {ROUTES[name]}, {method.__name__}")
        ROUTES[name] = method.__name__
        return method

    return register


def finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise CommandRefusedError(f"{name} = {value!r} must be a finite number")
    return value


def positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise CommandRefusedError(f"{name} = {value!r} must be a positive number")
    return value


def non_negative(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise CommandRefusedError(f"{name} = {value!r} must be zero or more")
    return value


def choice(name: str, value: int, allowed: range | tuple[int, ...]) -> int:
    if value not in allowed:
        raise CommandRefusedError(f"{name} = {value} is not one of {list(allowed)}")
    return value


def tristate(name: str, value: int, current: bool) -> bool:
    """Nanonis' "0 no change, 1 on/yes, 2 off/no" arguments."""
    return current if choice(name, value, (0, 1, 2)) == 0 else value == 1


class HandlerBase:
    """State every handler mixin may use: the physics, the clock, the session folder."""

    physics: StmPhysics
    clock: Clock
    _session_dir: Path | None

    @property
    def session_dir(self) -> Path:
        """Where saved files go (created on first use; a temporary folder unless given)."""
        if self._session_dir is None:
            self._session_dir = Path(tempfile.mkdtemp(prefix="atomlab-sim-session-"))
        self._session_dir.mkdir(parents=True, exist_ok=True)
        return self._session_dir

    async def _sleep_until(self, t_s: float) -> None:
        now = self.clock.monotonic()
        if t_s > now:
            await self.clock.sleep_async(min(t_s - now, MAX_WAIT_S))
        self.physics.advance_to(self.clock.monotonic())

    def _sampled(self, wait: int, read: Callable[[], Values]) -> Values | Awaitable[Values]:
        """``read()`` now (wait = 0: the last published sample, 0..Tap old), or after a full
        acquisition period measured after the call (wait = 1: the reply comes Tap..2Tap later)."""
        if not wait:
            return read()
        return self._read_fresh(read)

    async def _read_fresh(self, read: Callable[[], Values]) -> Values:
        physics = self.physics
        # the sample in flight (published next) is discarded; the one after it is returned
        wanted = physics.publications + 2
        wake = physics.published_at_s + 2 * physics.acq_period_s
        while physics.publications < wanted:
            await self._sleep_until(wake)
            wake = self.clock.monotonic() + physics.dt_s
        return read()
