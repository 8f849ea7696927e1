"""Spectra through the guard: bounded by the catalog, audited, and recorded by a monitored run as
a command action that carries the data."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.errors import InvalidInputError, NotFoundError, PolicyRefusedError
from atomlab.instrument import NanonisClient, WriteGuard, load_catalog
from atomlab.instrument.spectroscopy import (
    BiasSweep,
    Spectroscopy,
    Spectrum,
    SpectrumPlan,
    ZSweep,
    barrier_height_ev,
    derivative,
)
from atomlab.sim import BARRIER_EV, Disturbances, SimulatorThread, start_simulator_in_thread

CATALOG = load_catalog()


@pytest.fixture
def fake_sim(tmp_path: Path) -> Iterator[tuple[SimulatorThread, FakeClock]]:
    clock = FakeClock()
    sim = start_simulator_in_thread(
        seed=0,
        ports=[0],
        clock=clock,
        disturbances=Disturbances.none(),
        tick_interval_s=None,
        session_dir=tmp_path / "session",
    )
    yield sim, clock
    sim.stop()


def guarded(sim: SimulatorThread, tmp_path: Path, **kwargs: object) -> tuple[Spectroscopy, Path]:
    client = NanonisClient("127.0.0.1", sim.ports[0], call_timeout_s=60.0).connect()
    audit = tmp_path / "audit.jsonl"
    guard = WriteGuard(client, CATALOG, audit_log=audit, **kwargs)  # type: ignore[arg-type]
    return Spectroscopy(client, guard), audit


def test_a_bias_spectrum_through_the_guard_gives_iv_and_didv(
    fake_sim: tuple[SimulatorThread, FakeClock], tmp_path: Path
) -> None:
    sim, clock = fake_sim
    clock.advance(0.5)
    spectroscopy, audit = guarded(sim, tmp_path, allow_writes=True)
    spectrum = spectroscopy.bias(
        BiasSweep(start_v=-0.5, end_v=0.5, points=51, lockin_amplitude_v=0.01)
    )
    assert isinstance(spectrum, Spectrum)
    assert spectrum.sweep_channel == "Bias calc (V)" and spectrum.points == 51
    assert spectrum.sweep_values[0] == pytest.approx(-0.5) and spectrum.sweep_values[-1] == 0.5
    current = spectrum["Current (A)"]
    assert current[0] < 0 < current[-1]  # I(V) changes sign with the bias
    didv = spectrum.didv()
    assert all(g > 0 for g in didv)  # a metal: positive conductance everywhere
    numeric = derivative(spectrum.sweep_values, current)
    assert didv[25] == pytest.approx(numeric[25], rel=0.15)
    assert spectrum.command_id is not None
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    sent = [line["command"] for line in lines if line.get("kind") == "command"]
    assert sent == [
        "BiasSpectr.LimitsSet",
        "BiasSpectr.PropsSet",
        "BiasSpectr.TimingSet",
        "BiasSpectr.AdvPropsSet",
        "LockIn.ModAmpSet",
        "LockIn.ModOnOffSet",
        "BiasSpectr.Start",
        "LockIn.ModOnOffSet",
    ]
    start = next(line for line in lines if line.get("command") == "BiasSpectr.Start")
    assert start["reply"]["channels_names"][0] == "Bias calc (V)"
    assert len(start["reply"]["data"][1]) == 51  # the audit line holds the spectrum
    assert sim.physics.lockin.modulator(1).on is False  # the modulation is off again


def test_a_z_spectrum_gives_the_barrier_height(
    fake_sim: tuple[SimulatorThread, FakeClock], tmp_path: Path
) -> None:
    sim, clock = fake_sim
    clock.advance(0.5)
    spectroscopy, _ = guarded(sim, tmp_path, allow_writes=True)
    spectrum = spectroscopy.z(ZSweep(distance_m=3e-10, points=64))
    assert isinstance(spectrum, Spectrum) and spectrum.sweep_channel == "Z rel (m)"
    barrier = barrier_height_ev(spectrum.sweep_values, spectrum["Current (A)"])
    assert barrier == pytest.approx(BARRIER_EV - 0.05, rel=0.03)


def test_writes_disabled_or_out_of_bounds_sweeps_are_refused_and_nothing_moves(
    fake_sim: tuple[SimulatorThread, FakeClock], tmp_path: Path
) -> None:
    sim, _ = fake_sim
    spectroscopy, audit = guarded(sim, tmp_path)
    with pytest.raises(PolicyRefusedError, match="writes are disabled"):
        spectroscopy.bias(BiasSweep())
    allowed, _ = guarded(sim, tmp_path, allow_writes=True)
    with pytest.raises(PolicyRefusedError, match="start_value_v = -8"):
        allowed.bias(BiasSweep(start_v=-8.0, end_v=1.0))
    with pytest.raises(PolicyRefusedError, match="z_sweep_distance_m"):
        allowed.z(ZSweep(distance_m=-2e-9))  # 2 nm into the surface
    with pytest.raises(PolicyRefusedError, match="amplitude"):
        allowed.bias(BiasSweep(lockin_amplitude_v=0.5))
    with pytest.raises(InvalidInputError, match="points"):
        allowed.bias(BiasSweep(points=1))
    with pytest.raises(NotFoundError, match="Frequency Sweep"):
        allowed.bias(BiasSweep(channels=("Frequency Sweep (Hz)",)))
    assert sim.physics.tip.crashes == 0
    assert sim.sim.commands.bias_spectr.start_v == -1.0  # the refused range never arrived
    assert "refused" in audit.read_text()


def test_plan_only_lists_the_commands_and_sends_nothing(
    fake_sim: tuple[SimulatorThread, FakeClock], tmp_path: Path
) -> None:
    sim, _ = fake_sim
    spectroscopy, audit = guarded(sim, tmp_path)  # writes disabled: a plan needs none
    plan = spectroscopy.bias(BiasSweep(start_v=-0.3, end_v=0.3, points=11), plan_only=True)
    assert isinstance(plan, SpectrumPlan)
    commands = [c["command"] for c in plan.commands]
    assert commands[0] == "BiasSpectr.ChsSet" and commands[-1] == "BiasSpectr.Start"
    assert plan.commands[1]["args"] == {"start_value_v": -0.3, "end_value_v": 0.3}
    assert sim.sim.commands.bias_spectr.start_v == -1.0
    assert not audit.exists() or "done" not in audit.read_text()


def test_a_spectrum_taken_during_a_monitored_run_is_a_command_action_with_its_data(
    tmp_path: Path,
) -> None:
    """End to end (contract C2): the monitor's in-process listener records the spectrum."""
    from atomlab.trajectory import (
        ActionEvent,
        InstrumentSource,
        Monitor,
        MonitorConfig,
        OwnWrites,
        Record,
        open_store,
    )

    db = tmp_path / "traj.sqlite"
    config = MonitorConfig(
        run_name="sts", signals=("Tunnel Current",), specs=("Bias",), db_path=db, interval_s=0.05
    )
    own = OwnWrites()
    sampled, recorded = threading.Event(), threading.Event()

    def on_record(record: Record) -> None:
        if getattr(record, "sample_idx", -1) >= 3:
            sampled.set()
        if isinstance(record, ActionEvent) and record.command == "BiasSpectr.Start":
            recorded.set()

    with start_simulator_in_thread(seed=0, ports=[0], disturbances=Disturbances.none(),
                                   session_dir=tmp_path / "session") as sim:  # fmt: skip
        port = sim.ports[0]
        with (
            NanonisClient("127.0.0.1", port) as recorder_link,
            NanonisClient("127.0.0.1", port, call_timeout_s=60.0) as operator_link,
            open_store(db, read_only=False) as store,
        ):
            guard = WriteGuard(operator_link, CATALOG, allow_writes=True)
            guard.add_listener(own.observe)
            monitor = Monitor(
                InstrumentSource(recorder_link, CATALOG), config, store, own_writes=own,
                on_record=on_record,
            )  # fmt: skip
            thread = threading.Thread(target=monitor.run)
            thread.start()
            try:
                assert sampled.wait(60)
                spectrum = Spectroscopy(operator_link, guard).bias(
                    BiasSweep(start_v=-0.2, end_v=0.2, points=21)
                )
                assert recorded.wait(60)
            finally:
                monitor.stop()
                thread.join(60)
    reader = open_store(db)
    (action,) = [a for a in reader.actions(kind="command") if a.command == "BiasSpectr.Start"]
    assert isinstance(spectrum, Spectrum)
    assert action.source == "self" and action.args == {"get_data": 1, "save_base_name": ""}
    names, data = action.payload["channels_names"], action.payload["data"]
    assert names == list(spectrum.channels)
    assert data[1] == pytest.approx(spectrum["Current (A)"])
    configured = [a.command for a in reader.actions(kind="command")]
    assert configured[:2] == ["BiasSpectr.LimitsSet", "BiasSpectr.PropsSet"]
