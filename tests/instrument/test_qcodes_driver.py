"""The QCodes driver inside a qcodes.Station, against the STM simulator."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.errors import PolicyRefusedError
from atomlab.instrument import read_audit_log
from atomlab.sim import SimulatorThread

qcodes = pytest.importorskip("qcodes")

from atomlab.instrument.qcodes_driver import NanonisSTM  # noqa: E402


@pytest.fixture
def stm(sim: SimulatorThread, tmp_path: Path) -> Iterator[Any]:
    instrument = NanonisSTM(
        f"stm_{uuid.uuid4().hex[:8]}",
        port=sim.ports[0],
        allow_writes=True,
        audit_log=tmp_path / "audit.jsonl",
        who="qcodes-test",
    )
    yield instrument
    instrument.close()


def test_one_parameter_per_catalog_entry_with_units(stm: Any) -> None:
    names = {entry.name for entry in stm.catalog}
    assert names <= set(stm.parameters)
    assert stm.bias_v.unit == "V" and stm.bias_v.label == "Bias"
    assert stm.current_a.settable is False and stm.bias_v.settable is True


def test_works_in_a_station_and_snapshots(stm: Any) -> None:
    station = qcodes.Station(stm)
    snapshot = station.snapshot(update=True)
    params = snapshot["instruments"][stm.name]["parameters"]
    assert params["bias_v"]["value"] == 0.1
    assert params["zctrl_on"]["value"] == 1
    assert stm.get_idn()["vendor"] == "SPECS Nanonis"


def test_each_scan_frame_parameter_sets_and_reads_its_own_field(
    stm: Any, sim: SimulatorThread
) -> None:
    wanted = {
        "scan_frame_center_x_m": 1e-8,
        "scan_frame_center_y_m": -2e-8,
        "scan_frame_width_m": 3e-8,
        "scan_frame_height_m": 4e-8,
        "scan_frame_angle_deg": 15.0,
    }
    for name, value in wanted.items():
        stm.parameters[name](value)
    for name, value in wanted.items():
        assert stm.parameters[name]() == value, name
    frame = sim.call(lambda: sim.physics.scan.frame)
    assert frame.height_m == pytest.approx(4e-8) and frame.angle_deg == pytest.approx(15.0)


def test_sets_go_through_the_guard(stm: Any, sim: SimulatorThread, tmp_path: Path) -> None:
    stm.bias_v(0.2)
    assert stm.bias_v() == 0.2
    (record,) = read_audit_log(tmp_path / "audit.jsonl")
    assert record["who"] == "qcodes-test" and record["new"] == 0.2
    with pytest.raises(ValueError, match="bias_v"):
        stm.bias_v(9.0)  # the QCodes validator from the catalog limits
    stm.guard.allow_writes = False
    with pytest.raises(PolicyRefusedError, match="writes are disabled"):
        stm.bias_v(0.3)
    assert sim.call(lambda: sim.physics.bias_v) == pytest.approx(0.2)


def test_the_audit_log_may_be_given_as_a_str(sim: SimulatorThread, tmp_path: Path) -> None:
    """docs/instrument.md's example passes a path string; it must work as a Path does."""
    audit = tmp_path / "str-audit.jsonl"
    stm = NanonisSTM(
        f"stm_{uuid.uuid4().hex[:8]}", port=sim.ports[0], allow_writes=True, audit_log=str(audit)
    )
    try:
        stm.bias_v(0.2)
    finally:
        stm.close()
    assert read_audit_log(audit)[0]["new"] == 0.2


def test_a_spectrum_is_a_parameter_with_the_bias_as_setpoints(stm: Any) -> None:
    stm.spectrum_start_v(-0.3)
    stm.spectrum_end_v(0.3)
    stm.spectrum_points(31)
    stm.spectrum_lockin_amplitude_v(0.01)
    bias = stm.spectrum_bias_v()
    current = stm.spectrum_current_a()
    assert bias.shape == current.shape == (31,)
    assert bias[0] == pytest.approx(-0.3) and current[0] < 0 < current[-1]
    didv = stm.spectrum_didv_s()
    assert didv.shape == (31,) and (didv > 0).all()
    assert stm.spectrum_current_a.setpoints == (stm.spectrum_bias_v,)
    starts = [
        r for r in read_audit_log(stm.guard.audit_log) if r.get("command") == "BiasSpectr.Start"
    ]
    assert len(starts) == 1  # dI/dV came from the same spectrum
    stm.guard.allow_writes = False
    with pytest.raises(PolicyRefusedError):
        stm.spectrum_current_a()
