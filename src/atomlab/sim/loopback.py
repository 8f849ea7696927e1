"""A simulated STM answered in-process: the Nanonis client API with no socket and no thread.

Requests are encoded and replies decoded with the same codec as on the wire, and answered by the
same command handlers as ``atomlab sim spm``, so anything written against
:class:`~atomlab.instrument.NanonisClient` (the trajectory monitor's source, the write guard) sees
exactly what it would see over TCP, at in-process speed. Time is a
:class:`~atomlab.core.clock.FakeClock`: the physics only moves when the caller advances the clock
(or a waiting command such as ``TipShaper.Start`` does), so a simulated minute takes milliseconds::

    sim = LoopbackNanonis.create(seed=3)
    sim.call("Bias.Set", {"bias_v": 0.2})
    sim.clock.advance(0.1)
    current, z = sim.read_signals([sim.signal_index("Current"), sim.signal_index("Z")])
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, Final, Self

from atomlab.core.clock import FakeClock
from atomlab.instrument import Reply, signal_index
from atomlab.instrument.protocol import HEADER_SIZE, codec
from atomlab.sim.stm_commands import StmCommands
from atomlab.sim.stm_physics import DEFAULT_LOOP_RATE_HZ, Disturbances, StmPhysics
from atomlab.surface import Surface

LOOPBACK_ADDRESS: Final = "loopback"
DEFAULT_START_S: Final = 1000.0
"""Where the fake clock starts (any value; not zero so that a time of 0 never means 'unset')."""


class LoopbackNanonis:
    """A Nanonis client whose instrument is a simulator in this process (single-threaded)."""

    def __init__(self, physics: StmPhysics, clock: FakeClock) -> None:
        self.physics = physics
        self.clock = clock
        self.commands = StmCommands(physics, clock)
        self._signal_names: list[str] | None = None

    @classmethod
    def create(
        cls,
        *,
        seed: int = 0,
        surface: Surface | None = None,
        disturbances: Disturbances | None = None,
        loop_rate_hz: float = DEFAULT_LOOP_RATE_HZ,
        start_s: float = DEFAULT_START_S,
    ) -> LoopbackNanonis:
        """A fresh simulated instrument (seeded surface and disturbances) on a fake clock."""
        clock = FakeClock(start_s)
        physics = StmPhysics(
            surface if surface is not None else Surface.generate(seed),
            seed=seed,
            start_s=start_s,
            loop_rate_hz=loop_rate_hz,
            disturbances=disturbances,
        )
        return cls(physics, clock)

    # --- the NanonisClient surface ---------------------------------------------------------

    @property
    def address(self) -> str:
        return LOOPBACK_ADDRESS

    @property
    def connected(self) -> bool:
        return True

    def connect(self) -> Self:
        return self

    def close(self) -> None:
        """Nothing to close; present so code written for a TCP client can call it."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(
        self,
        command: str,
        args: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        check: bool = True,
    ) -> Reply:
        """Encode, answer and decode one command exactly as on the wire."""
        compiled = codec(command)
        request = compiled.encode_request(args)
        answer = self.commands.handle(compiled.spec.name, request[HEADER_SIZE:])
        if not isinstance(answer, bytes):
            answer = _run_at_once(answer)
        reply = compiled.decode_reply(answer[HEADER_SIZE:])
        if check and reply.error is not None:
            reply.raise_for_error()
        return reply

    def signal_names(self, *, refresh: bool = False) -> list[str]:
        if self._signal_names is None or refresh:
            self._signal_names = list(self.call("Signals.NamesGet")["names"])
        return list(self._signal_names)

    def signal_index(self, name: str) -> int:
        """The index of a signal by its full name (``"Current (A)"``) or its name without unit."""
        return signal_index(self.signal_names(), name, address=self.address)

    def read_signals(
        self, indexes: Sequence[int] | Iterable[int], *, wait: bool = False
    ) -> list[float]:
        """Values of several signals in one ``Signals.ValsGet``, in the order asked."""
        reply = self.call("Signals.ValsGet", {"indexes": list(indexes), "wait": int(wait)})
        return list(reply["values"])


def _run_at_once(pending: Coroutine[Any, Any, bytes]) -> bytes:
    """Drive a waiting handler to its end: with a fake clock its sleeps return at once."""
    try:
        while True:
            if pending.send(None) is not None:
                pending.close()
                raise RuntimeError(
                    "a loopback simulator needs a clock whose sleeps return at once (FakeClock)"
                )
    except StopIteration as done:
        result: bytes = done.value
        return result
