"""Fixtures for the trajectory tests: a scripted source on a fake clock, and the real simulator."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.clock import FakeClock
from atomlab.sim import Disturbances, SimulatorThread, start_simulator_in_thread
from atomlab.trajectory import ChannelInfo, MonitorConfig, Value

SIGNALS = ("Z Position", "Tunnel Current")
SPECS = ("Bias", "Z Setpoint")


class FakeSource:
    """A source whose polls take ``latency_s`` of fake time and return scripted values.

    ``script(k)`` gives the k-th poll's ``(signals, specs)``, or raises to simulate a failure.
    ``on_poll`` runs before each poll (a test moves the clock or stops the monitor there).
    """

    def __init__(
        self,
        clock: FakeClock,
        script: Callable[[int], tuple[Sequence[Value], Sequence[Value]]] | None = None,
        *,
        latency_s: float = 0.001,
        signals: Sequence[str] = SIGNALS,
        specs: Sequence[str] = SPECS,
    ) -> None:
        self.clock = clock
        self.script = script or (lambda k: ([float(k), 1e-10], [0.1, 1e-10]))
        self.latency_s = latency_s
        self.polls = 0
        self.reconnects = 0
        self.reconnect_failures = 0
        self.on_poll: Callable[[int], None] | None = None
        self._signals = tuple(signals)
        self._specs = tuple(specs)

    def identity(self) -> dict[str, Any]:
        return {"kind": "fake"}

    def channels(
        self, signals: Sequence[str], specs: Sequence[str]
    ) -> tuple[list[ChannelInfo], list[ChannelInfo]]:
        return (
            [
                ChannelInfo(label=s, unit="m", source_command="Fake.Get", source_field=s)
                for s in signals
            ],
            [
                ChannelInfo(label=s, unit="V", source_command="Fake.Get", source_field=s)
                for s in specs
            ],
        )

    def poll(self) -> tuple[Sequence[Value], Sequence[Value]]:
        k = self.polls
        self.polls += 1
        if self.on_poll is not None:
            self.on_poll(k)
        self.clock.advance(self.latency_s)
        return self.script(k)

    def reconnect(self) -> None:
        if self.reconnect_failures:
            self.reconnect_failures -= 1
            raise ConnectionRefusedError("still down")
        self.reconnects += 1


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1000.0)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "traj.sqlite"


@pytest.fixture
def make_config(db: Path) -> Callable[..., MonitorConfig]:
    def make(**changes: Any) -> MonitorConfig:
        base: dict[str, Any] = {
            "run_name": "run-1",
            "signals": SIGNALS,
            "specs": SPECS,
            "db_path": db,
        }
        base.update(changes)
        return MonitorConfig(**base)

    return make


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    """The STM simulator (no random disturbances) on 127.0.0.1 and a free port."""
    with start_simulator_in_thread(seed=0, ports=[0], disturbances=Disturbances.none()) as s:
        yield s


@pytest.fixture
def state_server() -> Iterator[Any]:
    """The small Nanonis-protocol state server of the instrument tests (answers from state)."""
    from tests.instrument.conftest import StateServer

    server = StateServer()
    yield server
    server.close()
