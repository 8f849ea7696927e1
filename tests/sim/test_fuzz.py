"""Whatever bytes follow a well-formed header, the simulator answers with a reply that decodes."""

from __future__ import annotations

import asyncio
import math
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomlab.core.clock import FakeClock
from atomlab.instrument import COMMANDS
from atomlab.instrument.protocol import decode_reply, read_response_header
from atomlab.sim import Disturbances, SpmSimulator
from atomlab.surface import Surface

NAMES = sorted(COMMANDS)


SURFACE = Surface.generate(0)  # read-only here, so shared


def fresh_simulator() -> SpmSimulator:
    return SpmSimulator(
        seed=0,
        surface=SURFACE,
        ports=[],
        clock=FakeClock(),
        disturbances=Disturbances.none(),
        tick_interval_s=None,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.one_of(st.sampled_from(NAMES), st.sampled_from(["Nope.Get", "Bias_Get", "Scan."])),
    body=st.binary(max_size=64),
)
def test_any_body_for_any_command_gets_a_decodable_reply(name: str, body: bytes) -> None:
    """The reply is one complete frame whose body decodes; the simulator never raises."""
    sim = fresh_simulator()
    reply = asyncio.run(sim.commands.dispatch(name, body))
    header = read_response_header(reply[:40])
    assert header.body_size == len(reply) - 40
    if name in COMMANDS:
        decoded = decode_reply(name, reply[40:])
        assert header.name == name
        if decoded.error is not None:
            assert decoded.error.status == 1 and decoded.error.description
    else:
        status, length = struct.unpack(">Ii", reply[40:48])
        description = reply[48:].decode()
        assert status == 1 and length == len(description) and "unknown command" in description


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    calls=st.lists(
        st.tuples(
            st.sampled_from(
                ["Bias.Set", "ZCtrl.SetpntSet", "ZCtrl.ZPosSet", "ZCtrl.OnOffSet", "Bias.Get"]
            ),
            st.floats(allow_nan=True, allow_infinity=True, width=32),
        ),
        max_size=12,
    )
)
def test_random_writes_never_leave_the_physics_in_a_nan_state(
    calls: list[tuple[str, float]],
) -> None:
    """Whatever an operator sends, Z, current and gap stay finite and Z within its limits."""
    sim = fresh_simulator()
    clock = sim.clock
    assert isinstance(clock, FakeClock)
    for name, value in calls:
        if name == "ZCtrl.OnOffSet":
            body = struct.pack(">I", int(value) % 2 if math.isfinite(value) else 0)
        elif name == "Bias.Get":
            body = b""
        else:
            body = struct.pack(">f", value)
        asyncio.run(sim.commands.dispatch(name, body))
        clock.advance(0.05)
    sim.physics.advance_to(clock.monotonic())
    snap = sim.physics.snapshot()
    for key in ("current_a", "z_m", "gap_m", "bias_v", "setpoint_a"):
        value = snap[key]
        assert isinstance(value, float) and value == value and abs(value) != float("inf")
    assert sim.physics.z.low_m <= sim.physics.z.z_m <= sim.physics.z.high_m
