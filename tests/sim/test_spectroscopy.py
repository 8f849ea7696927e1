"""Spectroscopy on the simulated STM: dI/dV tells defects apart, I(z) gives the barrier back,
sweeps hold Z, stop, average and save real .dat files a Nanonis reader opens."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atomlab.core.clock import FakeClock
from atomlab.instrument import NanonisClient
from atomlab.instrument.spectroscopy import barrier_height_ev
from atomlab.sim import (
    BARRIER_EV,
    Disturbances,
    SimulatorThread,
    start_simulator_in_thread,
    stm_tunnel,
)
from atomlab.surface import Defect, DefectKind, Surface

SITES = {  # lattice units; piezo (0, 0) is the centre of the 500 x 500 cell
    DefectKind.ADATOM: (100, 100),
    DefectKind.VACANCY: (200, 100),
    DefectKind.CONTAMINATION: (300, 100),
    DefectKind.STEP_EDGE: (400, 100),
}
CLEAN_SITE = (250, 400)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[SimulatorThread, NanonisClient, FakeClock]]:
    clean = Surface.generate(0, n_defects=0)
    defects = [Defect(i + 1, kind, x, y, 10) for i, (kind, (x, y)) in enumerate(SITES.items())]
    clock = FakeClock()
    sim = start_simulator_in_thread(
        seed=0,
        ports=[0],
        clock=clock,
        surface=Surface(clean.lattice, defects),
        disturbances=Disturbances.none(),
        tick_interval_s=None,
        session_dir=tmp_path / "session",
    )
    client = NanonisClient("127.0.0.1", sim.ports[0], call_timeout_s=60.0)
    with client:
        yield sim, client, clock
    sim.stop()


def move_to(client: NanonisClient, clock: FakeClock, site: tuple[int, int]) -> None:
    half = 250e-10
    client.call("FolMe.XYPosSet", {"x_m": site[0] * 1e-10 - half, "y_m": site[1] * 1e-10 - half})
    clock.advance(0.5)  # let the feedback settle at the new place


def sts(client: NanonisClient, *, points: int = 101, backward: bool = False) -> dict[str, Any]:
    client.call("BiasSpectr.ChsSet", {"channel_indexes": [0, 86]})  # Current, LI Demod 1 X
    client.call("BiasSpectr.LimitsSet", {"start_value_v": -1.0, "end_value_v": 1.0})
    client.call(
        "BiasSpectr.PropsSet",
        {
            "save_all": 0,
            "number_of_sweeps": 1,
            "backward_sweep": 1 if backward else 2,
            "number_of_points": points,
            "z_offset_m": 0.0,
            "autosave": 0,
            "show_save_dialog": 2,
        },
    )
    client.call("LockIn.ModAmpSet", {"modulator_number": 1, "amplitude": 0.02})
    client.call("LockIn.ModOnOffSet", {"modulator_number": 1, "on": 1})
    reply = client.call("BiasSpectr.Start", {"get_data": 1, "save_base_name": ""})
    return dict(zip(reply["channels_names"], reply["data"], strict=True))


SIGNATURE_PEAK_V = {
    DefectKind.ADATOM: 0.45,
    DefectKind.VACANCY: 0.8,
    DefectKind.CONTAMINATION: -0.7,
    DefectKind.STEP_EDGE: -0.25,
}


def test_didv_tells_each_defect_kind_apart_from_the_clean_surface(
    rig: tuple[SimulatorThread, NanonisClient, FakeClock],
) -> None:
    """Normalised by the clean surface's dI/dV (same setpoint), each kind peaks at its own
    energy: what an STS map uses to classify defects."""
    _, client, clock = rig
    move_to(client, clock, CLEAN_SITE)
    reference = sts(client)
    peaks = {}
    for kind, site in SITES.items():
        move_to(client, clock, site)
        spectrum = sts(client)
        ratio = np.asarray(spectrum["LI Demod 1 X (A)"]) / np.asarray(reference["LI Demod 1 X (A)"])
        peaks[kind] = float(np.asarray(spectrum["Bias calc (V)"])[int(np.argmax(ratio))])
        assert ratio.max() > 1.5, kind  # a resonance stands well above the clean surface
    for kind, peak in peaks.items():
        assert peak == pytest.approx(SIGNATURE_PEAK_V[kind], abs=0.15), (kind, peaks)
    assert len({round(p, 1) for p in peaks.values()}) == len(peaks)


def test_the_lockin_x_is_the_modulation_amplitude_times_didv(
    rig: tuple[SimulatorThread, NanonisClient, FakeClock],
) -> None:
    _, client, clock = rig
    move_to(client, clock, SITES[DefectKind.ADATOM])
    client.call(
        "BiasSpectr.TimingSet",
        {
            "z_averaging_time_s": 0.1,
            "z_offset_m": 0.0,
            "initial_settling_time_s": 0.01,
            "maximum_slew_rate_v_s": 10.0,
            "settling_time_s": 0.005,
            "integration_time_s": 0.2,
            "end_settling_time_s": 0.01,
            "z_control_time_s": 0.1,
        },
    )  # long integration: the numerical derivative of I(V) amplifies its noise
    spectrum = sts(client, points=101)
    bias = np.asarray(spectrum["Bias calc (V)"])
    numeric = np.gradient(np.asarray(spectrum["Current (A)"]), bias)
    lockin = np.asarray(spectrum["LI Demod 1 X (A)"]) / 0.02
    inner = slice(10, -10)
    assert np.corrcoef(numeric[inner], lockin[inner])[0, 1] > 0.98
    assert np.median(lockin[inner] / numeric[inner]) == pytest.approx(1.0, rel=0.05)


def test_a_bias_sweep_holds_z_and_puts_everything_back(
    rig: tuple[SimulatorThread, NanonisClient, FakeClock],
) -> None:
    sim, client, clock = rig
    clock.advance(0.5)
    z_before = client.call("ZCtrl.ZPosGet")["z_m"]
    spectrum = sts(client, backward=True)
    assert "Current [bwd] (A)" in spectrum and "LI Demod 1 X [bwd] (A)" in spectrum
    fwd, bwd = np.asarray(spectrum["Current (A)"]), np.asarray(spectrum["Current [bwd] (A)"])
    assert np.allclose(fwd, bwd, rtol=0.1, atol=2e-12)  # the same I(V) both ways: Z was held
    assert client.call("Bias.Get")["bias_v"] == pytest.approx(0.1)  # reset bias (default)
    assert client.call("ZCtrl.OnOffGet")["on"] == 1
    assert client.call("ZCtrl.ZPosGet")["z_m"] == pytest.approx(z_before, abs=2e-11)
    assert client.call("BiasSpectr.StatusGet")["status"] == 0
    assert sim.physics.tip.crashes == 0


def test_without_the_hold_a_sweep_through_zero_bias_crashes_the_tip(
    rig: tuple[SimulatorThread, NanonisClient, FakeClock],
) -> None:
    sim, client, _clock = rig
    client.call(
        "BiasSpectr.AdvPropsSet",
        {"reset_bias": 0, "z_controller_hold": 2, "record_final_z": 0, "lockin_run": 0},
    )
    sts(client)
    assert sim.physics.tip.crashes == 1
    assert any(e.kind == "tip_crash" and "0" in e.detail for e in sim.physics.events)


def test_a_z_spectrum_gives_the_barrier_height_back(
    rig: tuple[SimulatorThread, NanonisClient, FakeClock],
) -> None:
    sim, client, clock = rig
    move_to(client, clock, CLEAN_SITE)
    client.call("ZSpectr.ChsSet", {"channel_indexes": [0, 30]})  # Current, Z
    client.call("ZSpectr.RangeSet", {"z_offset_m": 0.0, "z_sweep_distance_m": 3e-10})
    reply = client.call("ZSpectr.Start", {"get_data": 1, "save_base_name": ""})
    data = dict(zip(reply["channels_names"], reply["data"], strict=True))
    barrier = barrier_height_ev(data["Z rel (m)"], data["Current (A)"])
    assert barrier == pytest.approx(BARRIER_EV - 0.1 / 2, rel=0.03)  # φ − |V|/2 at 0.1 V
    assert np.diff(data["Z (m)"]) == pytest.approx(1e-10 * 3 / 255, rel=1e-3)
    assert sim.physics.tip.crashes == 0


def test_the_auto_retract_stops_a_z_spectrum_before_the_tip_touches(
    rig: tuple[SimulatorThread, NanonisClient, FakeClock],
) -> None:
    sim, client, _ = rig
    client.call("ZSpectr.ChsSet", {"channel_indexes": [0]})
    client.call("ZSpectr.RangeSet", {"z_offset_m": 0.0, "z_sweep_distance_m": -8e-10})
    client.call(
        "ZSpectr.RetractSet", {"enable": 1, "threshold": 5e-9, "signal_index": 0, "comparison": 0}
    )
    reply = client.call("ZSpectr.Start", {"get_data": 1, "save_base_name": ""})
    current = np.asarray(reply["data"][1])
    assert np.isnan(current[-1]) and np.nanmax(current) < 1e-8
    assert sim.physics.tip.crashes == 0
    client.call(
        "ZSpectr.RetractSet", {"enable": 2, "threshold": 5e-9, "signal_index": -1, "comparison": 2}
    )
    client.call("ZSpectr.Start", {"get_data": 0, "save_base_name": ""})
    assert sim.physics.tip.crashes == 1  # without it, 0.8 nm towards the surface is a crash


def test_spectra_are_saved_as_dat_files_a_nanonis_reader_opens(
    rig: tuple[SimulatorThread, NanonisClient, FakeClock], tmp_path: Path
) -> None:
    read = pytest.importorskip("nanonispy2.read")
    sim, client, _ = rig
    client.call("BiasSpectr.ChsSet", {"channel_indexes": [0, 30]})
    client.call(
        "BiasSpectr.PropsSet",
        {
            "save_all": 0,
            "number_of_sweeps": 3,
            "backward_sweep": 1,
            "number_of_points": 32,
            "z_offset_m": 0.0,
            "autosave": 1,
            "show_save_dialog": 2,
        },
    )
    reply = client.call("BiasSpectr.Start", {"get_data": 1, "save_base_name": "STS_"})
    path = Path(sim.sim.commands.saved_spectra[-1])
    assert path.parent == tmp_path / "session" and path.name == "STS_00001.dat"
    spec = read.Spec(str(path))
    assert spec.header["Experiment"] == "bias spectroscopy"
    for name, row in zip(reply["channels_names"], reply["data"], strict=True):
        assert np.allclose(spec.signals[name], row, rtol=1e-5, atol=1e-20), name
    assert client.call("BiasSpectr.Start", {"get_data": 0, "save_base_name": ""}).values == {
        "channels_names": [],
        "data": [],
        "parameters": [],
    }
    assert (tmp_path / "session" / "STS_00002.dat").is_file()


def test_a_sweep_can_be_stopped_from_another_connection(tmp_path: Path) -> None:
    """On the system clock: a long sweep is stopped by BiasSpectr.Stop on a second port."""
    sim = start_simulator_in_thread(
        seed=0, ports=[0, 0], disturbances=Disturbances.none(), session_dir=tmp_path
    )
    try:
        first = NanonisClient("127.0.0.1", sim.ports[0], call_timeout_s=60.0)
        second = NanonisClient("127.0.0.1", sim.ports[1])
        with first, second:
            first.call(
                "BiasSpectr.PropsSet",
                {
                    "save_all": 0,
                    "number_of_sweeps": 1,
                    "backward_sweep": 2,
                    "number_of_points": 400,
                    "z_offset_m": 0.0,
                    "autosave": 2,
                    "show_save_dialog": 2,
                },
            )  # 400 points x 12 ms: about 5 s
            import threading

            result: dict[str, Any] = {}
            worker = threading.Thread(
                target=lambda: result.update(
                    first.call("BiasSpectr.Start", {"get_data": 1, "save_base_name": ""}).values
                )
            )
            start = sim.call(lambda: sim.physics.t_s)
            worker.start()
            # the sweep has measured points once the simulated instrument is 1 s into it
            while sim.call(lambda: sim.physics.t_s) < start + 1.0 and worker.is_alive():
                second.call("BiasSpectr.StatusGet")
            assert second.call("BiasSpectr.StatusGet")["status"] == 1
            second.call("BiasSpectr.Stop")
            worker.join(30)
            current = np.asarray(result["data"][1])
            assert np.isnan(current[-1]) and np.isfinite(current[0])
    finally:
        sim.stop()


def test_the_generic_sweeper_sweeps_the_lockin_frequency_and_records_channels(
    rig: tuple[SimulatorThread, NanonisClient, FakeClock],
) -> None:
    _, client, _ = rig
    names = client.call("Signals.MeasNamesGet")["names"]
    client.call("GenSwp.SwpSignalSet", {"sweep_channel_name": "Bias (V)"})
    client.call("GenSwp.LimitsSet", {"lower_limit": 0.05, "upper_limit": 0.5})
    client.call(
        "GenSwp.AcqChsSet",
        {
            "channel_indexes": [names.index("Current (A)"), names.index("Bias (V)")],
            "channel_names": ["Current (A)", "Bias (V)"],
        },
    )
    client.call(
        "GenSwp.PropsSet",
        {
            "initial_settling_time_ms": 5.0,
            "maximum_slew_rate": 10.0,
            "number_of_steps": 10,
            "period_ms": 20,
            "autosave": 2,
            "save_dialog_box": 2,
            "settling_time_ms": 5.0,
        },
    )
    reply = client.call(
        "GenSwp.Start",
        {
            "get_data": 1,
            "sweep_direction": 1,
            "save_base_name": "",
            "reset_signal": 1,
            "z_controller": 2,
        },
    )
    assert reply["channels_names"] == ["Bias (V)", "Current (A)", "Bias (V)"]
    swept, current, bias = (np.asarray(r) for r in reply["data"])
    assert swept == pytest.approx(np.linspace(0.05, 0.5, 10))
    assert bias == pytest.approx(swept, abs=1e-6)
    assert np.all(current > 50e-12) and np.all(current < 200e-12)  # the feedback follows
    assert client.call("Bias.Get")["bias_v"] == pytest.approx(0.1)  # reset


def test_math_of_the_model_dos_is_consistent() -> None:
    """The closed-form integral is the integral of the density (a Riemann sum agrees)."""
    dos = stm_tunnel.local_dos([(Defect(1, DefectKind.ADATOM, 0, 0, 7), 1e-10)])
    energies = np.linspace(0.0, 0.9, 9001)
    riemann = float(np.trapezoid([dos.density(e) for e in energies], energies))
    assert dos.integral(0.9) == pytest.approx(riemann, rel=1e-4)
    assert stm_tunnel.barrier_ev_of_kappa(stm_tunnel.kappa_per_m(3.1)) == pytest.approx(3.1)
    assert math.isclose(stm_tunnel.conductance(0.05, 5e-10), stm_tunnel.conductance(0.05, 5e-10))
