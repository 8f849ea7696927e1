"""NanonisClient against a live protocol server: fields, timeouts, reconnects, threads."""

from __future__ import annotations

import socket
import struct
import threading

import pytest

from atomlab.core.errors import ConnectionFailedError, OperationTimeoutError
from atomlab.instrument.client import NanonisClient, probe_ports
from atomlab.instrument.commands import COMMANDS
from atomlab.instrument.errors import ArgumentError, InstrumentError, UnknownCommandError
from atomlab.sim import SimulatorThread

from .conftest import StateServer


def client_for(server: StateServer, **kw: float) -> NanonisClient:
    return NanonisClient("127.0.0.1", server.port, **kw)


def sim_client(sim: SimulatorThread, **kw: float) -> NanonisClient:
    return NanonisClient(sim.host, sim.ports[0], **kw)


def test_set_then_get_round_trips_the_bias_exactly(sim: SimulatorThread) -> None:
    with sim_client(sim) as nanonis:
        nanonis.call("Bias.Set", {"bias_v": -0.5})
        assert nanonis.get("Bias.Get") == -0.5
        nanonis.call("Bias.Set", {"bias_v": 0.123})
        assert nanonis.get("Bias.Get") == struct.unpack(">f", struct.pack(">f", 0.123))[0]


def test_each_scan_frame_field_reads_back_its_own_value(sim: SimulatorThread) -> None:
    frame = {
        "center_x_m": 1e-8,
        "center_y_m": -2e-8,
        "width_m": 3e-8,
        "height_m": 4e-8,
        "angle_deg": 12.5,
    }
    with sim_client(sim) as nanonis:
        nanonis.call("Scan.FrameSet", frame)
        reply = nanonis.call("Scan.FrameGet")
        for name, value in frame.items():
            assert reply[name] == pytest.approx(value, rel=1e-6), name
            assert nanonis.get("Scan.FrameGet", name) == reply[name]


def test_gain_reply_keeps_p_t_and_i_apart(sim: SimulatorThread) -> None:
    with sim_client(sim) as nanonis:
        nanonis.call("ZCtrl.GainSet", {"p_gain": 2e-10, "time_constant_s": 1e-4, "i_gain": 0.0})
        gains = nanonis.call("ZCtrl.GainGet").values
    assert gains == pytest.approx({"p_gain": 2e-10, "time_constant_s": 1e-4, "i_gain": 2e-6})


def test_every_multi_field_get_of_the_simulator_decodes_into_named_fields(
    sim: SimulatorThread,
) -> None:
    """The origin returned the first field of every reply; here each field keeps its name."""
    required = {"index": 0, "channel_index": 0}  # Signals.CalibrGet/RangeGet, Scan.FrameDataGrab
    described = [COMMANDS[name] for name in COMMANDS.described()]
    multi = [
        spec
        for spec in described
        if len(spec.reply) > 1 and all(not f.required or f.name in required for f in spec.args)
    ]
    assert len(multi) == sum(len(spec.reply) > 1 for spec in described)
    with sim_client(sim) as nanonis:
        for spec in multi:
            args = {f.name: required[f.name] for f in spec.args if f.required}
            reply = nanonis.call(spec, args, check=False)  # FrameDataGrab: no scan yet
            assert tuple(reply.values) == spec.reply_names, spec.name


def test_signals_are_read_in_one_batched_call(sim: SimulatorThread) -> None:
    with sim_client(sim) as nanonis:
        nanonis.call("Bias.Set", {"bias_v": 0.25})
        nanonis.call("ZCtrl.SetpntSet", {"setpoint": 2e-10})
        bias, setpoint = nanonis.signal_index("Bias"), nanonis.signal_index("Z Ctrl Setpoint (A)")
        values = nanonis.read_signals([setpoint, bias], wait=True)
    assert values == pytest.approx([2e-10, 0.25])
    assert sim.sim.commands.calls == 4  # Bias.Set, SetpntSet, NamesGet (cached), ValsGet


def test_instrument_errors_raise_or_come_back_unchecked(state_server: StateServer) -> None:
    with client_for(state_server) as nanonis:
        with pytest.raises(InstrumentError, match="out of range"):
            nanonis.read_signals([99])
        reply = nanonis.call("ZCtrl.SetpntGet", check=False)
        assert not reply.ok and "no value yet" in reply.error.description  # type: ignore[union-attr]


def test_bad_arguments_and_unknown_commands_send_nothing(state_server: StateServer) -> None:
    with client_for(state_server) as nanonis:
        with pytest.raises(ArgumentError, match="bias_v"):
            nanonis.call("Bias.Set", {})
        with pytest.raises(UnknownCommandError):
            nanonis.call("Bias.Explode")
    assert state_server.requests == []


def test_call_timeout_stays_in_force_after_the_first_call(state_server: StateServer) -> None:
    nanonis = client_for(state_server, call_timeout_s=0.2)
    with nanonis:
        assert nanonis.get("Bias.Get") == pytest.approx(0.1)
        state_server.hang.set()
        for _ in range(2):
            with pytest.raises(OperationTimeoutError, match=r"within 0\.2 s"):
                nanonis.get("Bias.Get")
        assert not nanonis.connected  # a late reply must never answer the next call
        state_server.hang.clear()
        assert nanonis.get("Bias.Get") == pytest.approx(0.1)
        with pytest.raises(OperationTimeoutError, match=r"within 0\.05 s"):
            state_server.hang.set()
            nanonis.call("Bias.Get", timeout_s=0.05)


def test_a_broken_connection_is_reopened_and_a_read_retried(state_server: StateServer) -> None:
    with client_for(state_server) as nanonis:
        assert nanonis.get("Bias.Get") == pytest.approx(0.1)
        state_server.drop_next.set()
        assert nanonis.get("Bias.Get") == pytest.approx(0.1)
        assert nanonis.reconnects == 1
    assert state_server.connections == 2


def test_an_action_is_not_resent_after_a_broken_connection(state_server: StateServer) -> None:
    with client_for(state_server) as nanonis:
        state_server.drop_next.set()
        with pytest.raises(ConnectionFailedError, match="broke"):
            nanonis.call("Bias.Pulse", {"width_s": 0.01, "bias_v": 1.0})
        assert state_server.requests.count("Bias.Pulse") == 1
        nanonis.call("Bias.Pulse", {"width_s": 0.01, "bias_v": 1.0})
    assert state_server.requests.count("Bias.Pulse") == 2


def test_connect_to_a_closed_port_names_the_address_and_the_fix() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionFailedError, match=rf"127\.0\.0\.1:{port}.*atomlab sim spm"):
        NanonisClient("127.0.0.1", port, connect_timeout_s=1.0).connect()


def test_threads_share_one_client_without_mixing_replies(state_server: StateServer) -> None:
    nanonis = client_for(state_server)
    failures: list[str] = []

    def worker(index: int) -> None:
        for _ in range(40):
            got = nanonis.read_signals([index, 0])
            if got != [float(index), 0.0]:
                failures.append(f"{index}: {got}")
            frame = nanonis.call("Bias.Get")
            if frame.command != "Bias.Get":
                failures.append(f"{index}: {frame.command}")

    threads = [threading.Thread(target=worker, args=(i % 5,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    nanonis.close()
    assert failures == []
    assert state_server.connections == 1


def test_probe_ports_reports_which_ports_answer(sim: SimulatorThread) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed = probe.getsockname()[1]
    found = probe_ports("127.0.0.1", [sim.ports[0], closed], timeout_s=1.0)
    assert [p.answers for p in found] == [True, False]
    assert found[0].round_trip_ms is not None and found[0].bias_v == pytest.approx(
        sim.physics.bias_v, rel=1e-6
    )
    assert "cannot connect" in (found[1].error or "")
