"""The simulator as a Nanonis TCP server: shared state, error replies, garbage, freshness, scans."""

from __future__ import annotations

import math
import socket
import struct

import numpy as np
import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.errors import UnavailableError
from atomlab.instrument.protocol import encode_request, pad_name
from atomlab.sim import SIGNAL_NAMES, Disturbances, SimulatorThread, SpmSimulator
from tests.sim.conftest import Wire


def test_two_clients_on_two_ports_share_one_instrument(sim: SimulatorThread, wire: Wire) -> None:
    other = Wire(sim.ports[1])
    try:
        wire.ok("Bias.Set", bias_v=-0.75)
        assert other.ok("Bias.Get")["bias_v"] == -0.75
        other.ok("ZCtrl.SetpntSet", setpoint=2.5e-10)
        assert wire.ok("ZCtrl.SetpntGet")["setpoint"] == np.float32(2.5e-10)
    finally:
        other.close()


def test_many_connections_on_one_port_are_served(sim: SimulatorThread) -> None:
    wires = [Wire(sim.ports[0]) for _ in range(6)]
    try:
        for w in wires:
            assert w.ok("Bias.Get")["bias_v"] == pytest.approx(0.1)
    finally:
        for w in wires:
            w.close()


def test_unknown_command_gets_an_error_reply_and_the_connection_lives(wire: Wire) -> None:
    body = b""
    wire.send_raw(pad_name("Bias.Explode") + struct.pack(">iHH", len(body), 1, 0))
    reply = wire.read_reply("Bias.Get")
    assert reply.error is not None and "unknown command 'Bias.Explode'" in reply.error.description
    assert wire.ok("Bias.Get")["bias_v"] == pytest.approx(0.1)


def test_wrong_body_size_gets_an_error_reply(wire: Wire) -> None:
    wire.send_raw(pad_name("Bias.Set") + struct.pack(">iHH", 2, 1, 0) + b"\x00\x01")
    reply = wire.read_reply("Bias.Set")
    assert reply.error is not None and "2 bytes" in reply.error.description
    wire.send_raw(pad_name("Bias.Get") + struct.pack(">iHH", 4, 1, 0) + b"\x00\x00\x00\x00")
    reply = wire.read_reply("Bias.Get")
    assert reply.error is not None
    assert wire.ok("Bias.Get")["bias_v"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("Scan.Action", {"action": 9, "direction_up": 1}, "action = 9"),
        ("Bias.Set", {"bias_v": 50.0}, "outside the selected range"),
        ("Bias.Set", {"bias_v": math.nan}, "finite"),
        ("ZCtrl.GainSet", {"p_gain": 1e-11, "time_constant_s": 0.0, "i_gain": 0.0}, "positive"),
        ("Signals.ValsGet", {"indexes": [0, 128], "wait": 0}, "signal index 128"),
        (
            "Scan.FrameSet",
            {"center_x_m": 0, "center_y_m": 0, "width_m": -1e-9, "height_m": 1e-9, "angle_deg": 0},
            "width_m",
        ),
        ("ZCtrl.ZPosSet", {"z_m": 1e-9}, "switch it off"),
        ("Scan.FrameDataGrab", {"channel_index": 5, "forward": 1}, "not recorded"),
        ("Scan.BufferSet", {"channels": [], "pixels": 64, "lines": 64}, "channels"),
    ],
)
def test_bad_arguments_get_an_error_reply_that_names_them(
    wire: Wire, command: str, args: dict[str, object], message: str
) -> None:
    reply = wire.call(command, **args)
    assert reply.error is not None and reply.error.status == 1
    assert message in reply.error.description
    assert wire.ok("Bias.Get")["bias_v"] == pytest.approx(0.1)


def test_a_known_command_the_simulator_does_not_implement_is_an_error_reply(
    sim: SimulatorThread, wire: Wire
) -> None:
    sim.call(lambda: sim.sim.commands.routes.pop("Piezo.TiltGet"))
    reply = wire.call("Piezo.TiltGet")
    assert reply.error is not None and "not simulated" in reply.error.description


def test_garbage_closes_only_that_connection(sim: SimulatorThread, wire: Wire) -> None:
    bystander = Wire(sim.ports[0])
    try:
        wire.send_raw(b"\xff\xfe GET / HTTP/1.1\r\n" + bytes(range(256)))
        wire.sock.settimeout(10)
        assert wire.sock.recv(1) == b""  # closed by the server
        assert bystander.ok("Bias.Get")["bias_v"] == pytest.approx(0.1)
        fresh = Wire(sim.ports[0])
        assert fresh.ok("Current.Get")["current_a"] != 0.0
        fresh.close()
    finally:
        bystander.close()


def test_a_client_vanishing_mid_request_does_not_hurt_the_server(sim: SimulatorThread) -> None:
    half = Wire(sim.ports[0])
    half.send_raw(encode_request("Bias.Set", {"bias_v": 0.2})[:42])
    half.close()
    survivor = Wire(sim.ports[0])
    assert survivor.ok("Bias.Get")["bias_v"] == pytest.approx(0.1)
    survivor.close()


def test_no_response_flag_means_no_reply(wire: Wire) -> None:
    wire.send_raw(encode_request("Bias.Set", {"bias_v": 0.3}, send_response=False))
    assert wire.ok("Bias.Get")["bias_v"] == pytest.approx(0.3)


def test_signal_names_and_values_agree_with_the_dedicated_getters(
    clock: FakeClock, wire: Wire
) -> None:
    names = wire.ok("Signals.NamesGet")["names"]
    assert names == list(SIGNAL_NAMES) and len(names) == 128
    assert names[:2] == ["Current (A)", "Input 2 (V)"]
    assert names[24:32] == [
        "Bias (V)",
        "Output 2 (V)",
        "Output 3 (V)",
        "Output 4 (V)",
        "X (m)",
        "Y (m)",
        "Z (m)",
        "Output 8 (V)",
    ]
    wire.ok("Bias.Set", bias_v=0.5)
    clock.advance(0.5)
    values = wire.ok("Signals.ValsGet", indexes=list(range(128)), wait=1)["values"]
    assert len(values) == 128
    assert values[24] == pytest.approx(0.5)
    assert values[30] == pytest.approx(wire.ok("ZCtrl.ZPosGet")["z_m"], abs=5e-12)
    assert values[0] == pytest.approx(1e-10, rel=0.2)
    assert wire.ok("Signals.ValGet", index=24, wait=1)["value"] == pytest.approx(0.5)


def test_the_slots_name_their_signals_and_can_be_reassigned(wire: Wire) -> None:
    slots = wire.ok("Signals.InSlotsGet")
    assert len(slots["names"]) == len(slots["indexes"]) == 24
    assert slots["names"][:3] == ["Current (A)", "Bias (V)", "Z (m)"]
    assert slots["indexes"][:3] == [0, 24, 30]
    wire.ok("Signals.InSlotSet", slot=23, signal_index=35)
    assert wire.ok("Signals.InSlotsGet")["names"][23] == "Temperature 1 (K)"
    error = wire.call("Signals.InSlotSet", slot=24, signal_index=0).error
    assert error is not None and "slot" in error.description
    assert "Bias (V)" in wire.ok("Signals.MeasNamesGet")["names"]


def test_wait_one_returns_a_sample_taken_entirely_after_the_call(
    sim: SimulatorThread, clock: FakeClock, wire: Wire
) -> None:
    period = wire.ok("Util.AcqPeriodGet")["period_s"]
    clock.advance(1.0)
    wire.ok("Signals.ValGet", index=0, wait=0)
    wire.ok("Bias.Set", bias_v=0.4)
    stale = wire.ok("Signals.ValGet", index=24, wait=0)["value"]
    assert stale == pytest.approx(0.1)  # published before the change: 0..Tap old
    start = clock.monotonic()
    fresh = wire.ok("Signals.ValGet", index=24, wait=1)["value"]
    waited = clock.monotonic() - start
    assert fresh == pytest.approx(0.4)
    assert period <= waited <= 2 * period + 1e-9
    assert sim.physics.published_at_s > start


def test_folme_moves_the_tip_at_its_speed(clock: FakeClock, wire: Wire) -> None:
    wire.ok("FolMe.SpeedSet", speed_m_s=10e-9, custom=1)
    start = clock.monotonic()
    wire.ok("FolMe.XYPosSet", x_m=3e-9, y_m=-4e-9, wait=1)
    assert clock.monotonic() - start == pytest.approx(0.5, rel=0.01)
    reply = wire.ok("FolMe.XYPosGet", wait=0)
    assert (reply["x_m"], reply["y_m"]) == (3e-9, -4e-9)


def test_a_scan_runs_to_its_end_and_its_image_can_be_grabbed(clock: FakeClock, wire: Wire) -> None:
    wire.ok("Scan.BufferSet", channels=[0, 2], pixels=40, lines=8)
    assert wire.ok("Scan.BufferGet")["pixels"] == 48  # multiples of 16
    wire.ok("Scan.FrameSet", center_x_m=0, center_y_m=0, width_m=5e-9, height_m=5e-9, angle_deg=0)
    wire.ok("Scan.Action", action=0, direction_up=1)
    assert wire.ok("Scan.StatusGet")["running"] == 1
    clock.advance(0.1)
    wire.ok("Scan.Action", action=2)
    assert wire.ok("Scan.StatusGet")["running"] == 0
    wire.ok("Scan.Action", action=3)
    done = wire.ok("Scan.WaitEndOfScan", timeout_ms=-1)
    assert done["timed_out"] == 0 and done["file_path"].endswith(".sxm")
    assert wire.ok("Scan.StatusGet")["running"] == 0
    grab = wire.ok("Scan.FrameDataGrab", channel_index=2, forward=1)
    image = np.array(grab["data"])
    assert grab["channel_name"] == "Z (m)" and image.shape == (8, 48)
    assert np.isfinite(image).all() and image.std() > 0


def test_wait_end_of_scan_times_out(clock: FakeClock, wire: Wire) -> None:
    wire.ok("Scan.Action", action=0, direction_up=0)
    reply = wire.ok("Scan.WaitEndOfScan", timeout_ms=200)
    assert reply["timed_out"] == 1
    wire.ok("Scan.Action", action=1)
    assert wire.ok("Scan.StatusGet")["running"] == 0


def test_withdraw_home_and_crash_recovery_with_the_tip_shaper(
    sim: SimulatorThread, clock: FakeClock, wire: Wire
) -> None:
    wire.ok("ZCtrl.OnOffSet", on=0)
    surface_z = sim.call(sim.physics.surface_height)
    wire.ok("ZCtrl.ZPosSet", z_m=surface_z)
    clock.advance(0.01)
    wire.ok("Current.Get")
    assert sim.call(lambda: sim.physics.tip.crashed)
    wire.ok("ZCtrl.Withdraw", wait=1, timeout_ms=-1)
    assert wire.ok("ZCtrl.ZPosGet")["z_m"] == pytest.approx(wire.ok("ZCtrl.LimitsGet")["high_m"])
    assert wire.ok("ZCtrl.StatusGet")["status"] == 1
    wire.ok("TipShaper.Start", wait=1, timeout_ms=-1)
    assert sim.call(lambda: sim.physics.tip.healthy)


async def test_async_api_serves_on_a_free_port() -> None:
    import asyncio

    from atomlab.instrument.protocol import decode_reply, read_response_header

    async with SpmSimulator(seed=1, ports=[0], disturbances=Disturbances.none()) as sim:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.ports[0])
        writer.write(encode_request("Bias.Get"))
        header = read_response_header(await reader.readexactly(40))
        reply = decode_reply("Bias.Get", await reader.readexactly(header.body_size))
        assert reply["bias_v"] == pytest.approx(0.1)
        writer.close()
        await writer.wait_closed()


async def test_a_taken_port_is_reported_as_unavailable() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UnavailableError, match=str(port)):
            async with SpmSimulator(ports=[0, port]):
                pass


def test_the_thread_runner_reports_a_taken_port() -> None:
    from atomlab.sim import start_simulator_in_thread

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UnavailableError, match=str(port)):
            start_simulator_in_thread(ports=[port])


def test_a_command_name_with_an_underscore_is_unknown_on_the_wire(wire: Wire) -> None:
    wire.send_raw(pad_name("Bias_Get") + struct.pack(">iHH", 0, 1, 0))
    reply = wire.read_reply("Bias.Get")
    assert reply.error is not None and "did you mean 'Bias.Get'" in reply.error.description


def test_pipelined_requests_are_answered_in_order_even_behind_a_wait(wire: Wire) -> None:
    wire.ok("Scan.BufferSet", channels=[2], pixels=16, lines=2)
    wire.ok("Scan.Action", action=0, direction_up=1)
    wire.send_raw(
        encode_request("Scan.WaitEndOfScan", {"timeout_ms": -1})
        + encode_request("Signals.ValGet", {"index": 24, "wait": 1})
        + encode_request("Bias.Get")
    )
    assert wire.read_reply("Scan.WaitEndOfScan").raise_for_error()["timed_out"] == 0
    assert wire.read_reply("Signals.ValGet").raise_for_error()["value"] == pytest.approx(0.1)
    assert wire.read_reply("Bias.Get").raise_for_error()["bias_v"] == pytest.approx(0.1)


def test_a_waiting_client_does_not_hold_up_the_others() -> None:
    """Real clock: one connection waits a full acquisition period, another is served meanwhile."""
    import select

    from atomlab.sim import start_simulator_in_thread

    with start_simulator_in_thread(ports=[0], acq_period_s=0.5) as sim:
        waiting, other = Wire(sim.ports[0]), Wire(sim.ports[0])
        try:
            waiting.send_raw(encode_request("Signals.ValGet", {"index": 0, "wait": 1}))
            assert other.ok("Bias.Get")["bias_v"] == pytest.approx(0.1)
            ready, _, _ = select.select([waiting.sock], [], [], 0)
            assert ready == []  # still waiting for its fresh sample
            assert waiting.read_reply("Signals.ValGet").raise_for_error()["value"] > 0
        finally:
            waiting.close()
            other.close()
