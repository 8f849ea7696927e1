"""Property 4 of the QNMS spec: the simulator's reconnect back-off."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atomlab.core.clock import FakeClock
from atomlab.core.errors import ConnectionFailedError
from atomlab.sim.swarm import SwarmSimulator
from atomlab.sim.swarm_channel import Backoff
from atomlab.sim.swarm_world import SwarmConfig, SwarmWorld


def expected(failures: int) -> list[float]:
    return [float(min(2**k, 60)) for k in range(failures)]


# Feature: quantum-nano-maintenance-swarm, Property 4: Exponential Backoff Reconnection
@settings(max_examples=200)
@given(outcomes=st.lists(st.booleans(), min_size=1, max_size=80))
def test_property_4_backoff_doubles_from_1_s_to_at_most_60_s_and_restarts_after_success(
    outcomes: list[bool],
) -> None:
    backoff = Backoff()
    streak = 0
    for connected in outcomes:
        if connected:
            backoff.reset()
            streak = 0
        else:
            assert backoff.next_delay() == expected(streak + 1)[-1]
            streak += 1


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"ws://127.0.0.1:{sock.getsockname()[1]}/ws/isaac"


# Feature: quantum-nano-maintenance-swarm, Property 4: Exponential Backoff Reconnection
@settings(max_examples=100, deadline=None)
@given(attempts=st.integers(min_value=1, max_value=10))
def test_property_4_the_simulator_waits_1_2_4_up_to_60_s_between_real_connection_attempts(
    attempts: int,
) -> None:
    clock = FakeClock()
    sim = SwarmSimulator(
        SwarmWorld(SwarmConfig(agents=1, defects=0)), url=closed_port_url(), clock=clock
    )
    with pytest.raises(ConnectionFailedError):
        asyncio.run(sim.connect_loop(max_attempts=attempts))
    assert sim.reconnect_delays == expected(attempts - 1)
    assert clock.sleeps == sim.reconnect_delays
