"""Compatibility: the official ``nanonis_spm`` client (not written by us) drives the simulator.

Every value the client writes must come back bit for bit (float32 fields as float32, float64 as
float64), and the client must never see a malformed reply.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from atomlab.core.clock import FakeClock
from atomlab.sim import SIGNAL_NAMES, SimulatorThread

nanonis_spm = pytest.importorskip("nanonis_spm")


def f32(value: float) -> float:
    return float(np.float32(value))


@pytest.fixture
def official(sim: SimulatorThread) -> Iterator[Any]:
    sock = socket.create_connection(("127.0.0.1", sim.ports[0]), timeout=10)
    client = nanonis_spm.Nanonis(sock)
    yield client
    client.close()


def values(reply: tuple[Any, ...]) -> list[Any]:
    """The official client's (error, raw, values) tuple, asserting that no error came back."""
    error, _raw, decoded = reply
    assert error == ""
    return list(decoded)


def test_bias_round_trips_exactly(official: Any) -> None:
    values(official.Bias_Set(-1.2345))
    assert values(official.Bias_Get()) == [f32(-1.2345)]


def test_current_reads_near_the_setpoint(official: Any, clock: FakeClock) -> None:
    clock.advance(0.5)
    (current,) = values(official.Current_Get())
    assert current == pytest.approx(100e-12, rel=0.2)


def test_z_controller_switch_and_z_position_round_trip(official: Any) -> None:
    values(official.ZCtrl_OnOffSet(0))
    assert values(official.ZCtrl_OnOffGet()) == [0]
    values(official.ZCtrl_ZPosSet(12.5e-9))
    assert values(official.ZCtrl_ZPosGet()) == [f32(12.5e-9)]
    values(official.ZCtrl_OnOffSet(1))
    assert values(official.ZCtrl_OnOffGet()) == [1]


def test_setpoint_round_trips(official: Any) -> None:
    values(official.ZCtrl_SetpntSet(2.5e-10))
    assert values(official.ZCtrl_SetpntGet()) == [f32(2.5e-10)]


def test_gains_keep_p_and_t_and_derive_i(official: Any) -> None:
    values(official.ZCtrl_GainSet(4e-11, 2e-3, 123.0))  # the I argument is ignored, as on Nanonis
    p, t, i = values(official.ZCtrl_GainGet())
    assert (p, t) == (f32(4e-11), f32(2e-3))
    assert i == f32(f32(4e-11) / f32(2e-3))


def test_z_limits_are_readable(official: Any) -> None:
    high, low = values(official.ZCtrl_LimitsGet())
    assert high > 0 > low


def test_folme_position_and_speed_round_trip(official: Any) -> None:
    values(official.FolMe_SpeedSet(55e-9, 1))
    assert values(official.FolMe_SpeedGet()) == [f32(55e-9), 1]
    values(official.FolMe_XYPosSet(5e-9, -5e-9, 1))
    assert values(official.FolMe_XYPosGet(1)) == [5e-9, -5e-9]


def test_every_scan_frame_field_round_trips_separately(official: Any) -> None:
    frame = [1.5e-9, -2.5e-9, 30e-9, 20e-9, 12.5]
    values(official.Scan_FrameSet(*frame))
    assert values(official.Scan_FrameGet()) == [f32(v) for v in frame]


def test_scan_buffer_round_trips_with_pixels_in_multiples_of_16(official: Any) -> None:
    values(official.Scan_BufferSet([0, 2, 5], 64, 32))
    count, channels, pixels, lines = values(official.Scan_BufferGet())
    assert count == 3 and [c[0] for c in channels] == [0, 2, 5]
    assert (pixels, lines) == (64, 32)


def test_scan_speed_round_trips(official: Any) -> None:
    values(official.Scan_FrameSet(0.0, 0.0, 20e-9, 20e-9, 0.0))
    values(official.Scan_SpeedSet(80e-9, 160e-9, 0.0, 0.0, 1, 2.0))
    fwd, bwd, fwd_t, bwd_t, keep, ratio = values(official.Scan_SpeedGet())
    assert (fwd, bwd, keep, ratio) == (f32(80e-9), f32(160e-9), 1, 2.0)
    assert fwd_t == pytest.approx(0.25, rel=1e-6) and bwd_t == pytest.approx(0.125, rel=1e-6)


def test_scan_action_status_wait_and_grab(official: Any) -> None:
    values(official.Scan_FrameSet(0.0, 0.0, 4e-9, 4e-9, 0.0))
    values(official.Scan_BufferSet([0, 2], 16, 4))
    values(official.Scan_Action(0, 1))
    assert values(official.Scan_StatusGet()) == [1]
    timed_out, _length, path = values(official.Scan_WaitEndOfScan(-1))
    assert timed_out == 0 and path.endswith(".sxm")
    assert values(official.Scan_StatusGet()) == [0]
    _n, name, rows, cols, data, up = values(official.Scan_FrameDataGrab(2, 1))
    assert (name, rows, cols, up) == ("Z (m)", 4, 16, 1)
    assert np.isfinite(np.asarray(data, dtype=float)).all()


def test_scan_can_be_stopped(official: Any) -> None:
    values(official.Scan_Action(0, 0))
    values(official.Scan_Action(1, 0))
    assert values(official.Scan_StatusGet()) == [0]


def test_signal_names_and_values(official: Any) -> None:
    size, count, names = values(official.Signals_NamesGet())
    assert names == list(SIGNAL_NAMES) and count == len(SIGNAL_NAMES)
    assert size == sum(4 + len(n) for n in SIGNAL_NAMES)
    values(official.Bias_Set(0.75))
    count, vals = values(official.Signals_ValsGet(list(range(128)), 1))
    assert count == 128 and vals[24] == (f32(0.75),)
    assert values(official.Signals_ValGet(24, 1)) == [f32(0.75)]


def test_the_vendor_example_indexes_read_what_the_vendor_says(official: Any) -> None:
    """Example_CustomBiasSweep reads [0, 24] as current and bias, Example_SimpleSignal-
    Acquisition 30 as the tip height, Example_LockInSweep [86, 87] as LI Demod 1 X and Y."""
    _size, _count, names = values(official.Signals_NamesGet())
    assert names[0] == "Current (A)" and names[24] == "Bias (V)" and names[30] == "Z (m)"
    assert (names[86], names[87]) == ("LI Demod 1 X (A)", "LI Demod 1 Y (A)")
    values(official.Bias_Set(0.2))
    _n, (current, bias) = values(official.Signals_ValsGet([0, 24], 1))
    (z,) = values(official.Signals_ValGet(30, 1))
    (z_direct,) = values(official.ZCtrl_ZPosGet())
    assert bias == (f32(0.2),) and 20e-12 < current[0] < 1e-9
    assert z == pytest.approx(z_direct, abs=5e-11)


def test_acquisition_period_round_trips(official: Any) -> None:
    values(official.Util_AcqPeriodSet(0.05))
    assert values(official.Util_AcqPeriodGet()) == [f32(0.05)]
    assert values(official.Util_RTFreqGet()) == [1000.0]


def test_bias_pulse_and_tip_shaper_are_accepted(official: Any) -> None:
    values(official.Bias_Pulse(1, 0.1, 3.0, 0, 2))
    values(official.TipShaper_Start(1, -1))


def test_an_error_reaches_the_official_client_as_its_error_string(
    official: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    error, _raw, _values = official.Scan_Action(9, 1)
    assert "action = 9" in error
    assert values(official.Bias_Get())  # the connection still works


def test_the_official_client_shows_plus_minus_as_it_is(official: Any) -> None:
    """Strings travel in the controller's 8-bit encoding: UTF-8 showed up as "Â±10 V"."""
    _size, _count, ranges, index = values(official.Bias_RangeGet())
    assert ranges == ["±10 V", "±1 V"] and index == 0


def test_an_unsimulated_command_is_an_error_the_official_client_reports(
    official: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    error, _raw, decoded = official.PLL_CenterFreqGet(1)
    assert error == "PLL.CenterFreqGet is not simulated"
    assert decoded == [0.0]  # the value field is there, zeroed
    assert "The following error appeared" in capsys.readouterr().out
    assert values(official.Bias_Get())  # the connection is still in step
