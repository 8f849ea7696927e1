"""The in-process simulator answers exactly what the same simulator answers over TCP."""

from __future__ import annotations

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.errors import InvalidInputError
from atomlab.instrument import InstrumentError, NanonisClient
from atomlab.sim import Disturbances, LoopbackNanonis, start_simulator_in_thread

CALLS: list[tuple[str, dict[str, object]]] = [
    ("Bias.Get", {}),
    ("ZCtrl.GainGet", {}),
    (
        "Scan.FrameSet",
        {
            "center_x_m": 1e-9,
            "center_y_m": 0.0,
            "width_m": 5e-9,
            "height_m": 5e-9,
            "angle_deg": 0.0,
        },
    ),
    ("Scan.FrameGet", {}),
    ("Scan.Action", {"action": 0, "direction_up": 1}),
    ("Signals.ValsGet", {"indexes": [0, 2], "wait": 1}),
    (
        "Bias.Pulse",
        {"wait_until_done": 1, "width_s": 0.05, "bias_v": 3.0, "z_hold": 1, "absolute": 2},
    ),
    ("Signals.ValsGet", {"indexes": [0, 2], "wait": 0}),
    ("TipShaper.Start", {"wait": 1, "timeout_ms": -1}),
    ("ZCtrl.ZPosGet", {}),
]


def test_loopback_replies_match_the_tcp_simulator() -> None:
    loop = LoopbackNanonis.create(seed=5, disturbances=Disturbances.none(), start_s=0.0)
    with (
        start_simulator_in_thread(
            seed=5, ports=[0], clock=FakeClock(0.0), disturbances=Disturbances.none()
        ) as sim,
        NanonisClient("127.0.0.1", sim.ports[0]) as tcp,
    ):
        for command, args in CALLS:
            over_tcp = tcp.call(command, args).values
            in_process = loop.call(command, args).values
            assert in_process == over_tcp, command
        assert loop.physics.t_s == sim.physics.t_s  # the same waits moved time the same way
        assert loop.signal_names() == tcp.signal_names()


def test_waiting_commands_advance_the_fake_clock_at_once() -> None:
    loop = LoopbackNanonis.create(seed=1, disturbances=Disturbances.none())
    before = loop.clock.monotonic()
    loop.call("TipShaper.Start", {"wait": 1, "timeout_ms": -1})
    shaper = loop.call("TipShaper.PropsGet").values
    took = sum(
        shaper[k]
        for k in ("lift_time_1_s", "bias_settling_time_s", "lift_time_2_s", "end_wait_time_s")
    )
    assert loop.clock.monotonic() - before == pytest.approx(took, rel=1e-6)
    assert loop.physics.t_s > before + took - 2 * loop.physics.dt_s  # stepped to the end


def test_an_error_reply_raises_like_the_tcp_client() -> None:
    loop = LoopbackNanonis.create(seed=1)
    with pytest.raises(InstrumentError, match="signal index 999"):
        loop.call("Signals.ValGet", {"index": 999, "wait": 0})
    assert loop.call("Signals.ValGet", {"index": 999, "wait": 0}, check=False).error is not None
    assert loop.signal_index("Current") == loop.signal_names().index("Current (A)")
    with pytest.raises(InvalidInputError, match="no signal called 'Curent' on loopback") as bad:
        loop.signal_index("Curent")
    assert bad.value.exit_code == 3 and "Current (A)" in bad.value.message
