"""Every command of the table through the official ``nanonis_spm`` client, against the simulator.

A simulated command must answer without an error and with sensible values: a getter returns
finite numbers; a setter takes back what its getter returned (and the getter then returns it
again); an action runs with the arguments a script would give it. A command the simulator does
not simulate must come back as the error a real controller sends for it: value fields present
and zeroed, so the official client reports the error instead of misreading the bytes.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.clock import FakeClock
from atomlab.instrument import protocol
from atomlab.instrument.commands import COMMANDS, CommandSpec, WireType
from atomlab.sim import Disturbances, SimulatorThread, start_simulator_in_thread
from atomlab.sim.stm_routes import ROUTES
from tests.instrument.test_official_table import DOCUMENTED_DEVIATIONS
from tests.instrument.test_protocol import OFFICIAL_BROKEN
from tests.sim.conftest import Wire

nanonis_spm = pytest.importorskip("nanonis_spm")

# Values for the arguments that select something (a modulator, a signal, a gain...), by name.
SELECTORS: dict[str, Any] = {
    "modulator_number": 1,
    "demodulator_number": 1,
    "index": 0,
    "signal_index": 0,
    "gain_index": -1,
    "axis": 0,
    "wait": 0,
    "group": 0,
    "timeout_ms": 500,
    "channel_index": 0,
    "forward": 1,
    "reset_x": 0,
    "reset_y": 0,
    "reset_z": 0,
    "indexes": [0, 24, 30],
}

# Actions, and setters whose getter does not return their arguments: what a script would send.
ACTIONS: dict[str, dict[str, Any]] = {
    "Bias.Pulse": {
        "wait_until_done": 1,
        "width_s": 0.05,
        "bias_v": 1.0,
        "z_hold": 1,
        "absolute": 1,
    },
    "ZCtrl.Withdraw": {"wait": 1, "timeout_ms": 1000},
    "ZCtrl.Home": {},
    "ZCtrl.ZPosSet": {"z_m": 1e-9},  # refused while the controller is on: switched off first
    "FolMe.XYPosSet": {"x_m": 2e-9, "y_m": -1e-9, "wait": 1},
    "FolMe.Stop": {},
    "Scan.Action": {"action": 0, "direction_up": 1},
    "Scan.WaitEndOfScan": {"timeout_ms": 100},
    "Scan.Save": {"wait_until_saved": 1, "timeout_ms": 1000},
    "Motor.StartMove": {"direction": 4, "steps": 2, "group": 0, "wait": 1},
    "Motor.StopMove": {},
    "TipShaper.Start": {"wait": 1, "timeout_ms": -1},
    "AutoApproach.Open": {},
    "AutoApproach.OnOffSet": {"on_off": 1},
    "BiasSpectr.Open": {},
    "BiasSpectr.Start": {"get_data": 1, "save_base_name": "table"},
    "BiasSpectr.Stop": {},
    "ZSpectr.Open": {},
    "ZSpectr.Start": {"get_data": 1, "save_base_name": "table"},
    "ZSpectr.Stop": {},
    "GenSwp.Open": {},
    "GenSwp.Start": {
        "get_data": 1,
        "sweep_direction": 1,
        "save_base_name": "table",
        "reset_signal": 1,
        "z_controller": 2,
    },
    "GenSwp.Stop": {},
    "BiasSwp.Open": {},
    "BiasSwp.Start": {
        "get_data": 1,
        "sweep_direction": 1,
        "z_controller_status": 1,
        "save_base_name": "table",
        "reset_bias": 1,
    },
    "Util.Lock": {},
    "Util.UnLock": {},
    "Util.SettingsSave": {"settings_file_path": "table-settings.json", "save_session_settings": 1},
    "Signals.InSlotSet": {"slot": 23, "signal_index": 35},
    "DataLog.PropsSet": {
        "acquisition_mode": 2,
        "duration_hours": 0,
        "duration_minutes": 0,
        "duration_seconds": 0.5,
        "averaging": 2,
        "basename": "log",
        "comment": "table",
        "modules": ["Bias"],
    },
    "DataLog.ChsSet": {"channel_indexes": [0, 2]},
    "Util.SettingsLoad": {"settings_file_path": "table-settings.json", "load_session_settings": 1},
    "Current.GainSet": {"gain_index": 2, "filter_index": 1},
    "Current.CalibrSet": {"gain_index": 3, "calibration": 1e-9, "offset": 1e-13},
    "Scan.FrameDataGrab": {"channel_index": 2, "forward": 0},
    "BiasSpectr.PropsSet": {
        "save_all": 2,
        "number_of_sweeps": 2,
        "backward_sweep": 1,
        "number_of_points": 64,
        "z_offset_m": 0.0,
        "autosave": 1,
        "show_save_dialog": 2,
    },
    "ZSpectr.PropsSet": {
        "backward_sweep": 1,
        "number_of_points": 32,
        "number_of_sweeps": 1,
        "autosave": 1,
        "show_save_dialog": 2,
        "save_all": 2,
    },
    "BiasSwp.PropsSet": {
        "number_of_steps": 32,
        "period_ms": 5,
        "autosave": 1,
        "save_dialog_box": 2,
    },
    "Scan.PropsSet": {
        "continuous_scan": 2,
        "bouncy_scan": 2,
        "autosave": 1,
        "series_name": "table_",
        "comment": "from the table test ±",
        "modules_names": ["Bias", "Z-Controller"],
        "autopaste": 3,
    },
}
# the official client sends strings as UTF-8 (see docs/instrument.md): keep its arguments ASCII
ACTIONS["Scan.PropsSet"]["comment"] = "from the table test"

SIMULATED = sorted(n for n in COMMANDS if n in ROUTES)
NOT_SIMULATED = sorted(n for n in COMMANDS if n not in ROUTES)


def _official_method(name: str) -> Any:
    return getattr(nanonis_spm.Nanonis, name.replace(".", "_", 1), None)


def _call(client: Any, spec: CommandSpec, args: dict[str, Any]) -> tuple[str, list[Any]]:
    method = getattr(client, spec.name.replace(".", "_", 1))
    error, _raw, decoded = method(*[args[f.name] for f in spec.args])
    return error, list(decoded)


def _zero_args(spec: CommandSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in spec.args:
        if f.name in SELECTORS:
            out[f.name] = SELECTORS[f.name]
        elif f.type.is_integer:
            out[f.name] = 0
        elif f.type.is_scalar:
            out[f.name] = 0.0
        elif f.type is WireType.STR:
            out[f.name] = ""
        elif f.type is WireType.F32_2D:
            out[f.name] = [[0.0]]
        else:
            out[f.name] = []
    return out


def _finite(values: dict[str, Any]) -> bool:
    def ok(v: Any) -> bool:
        if isinstance(v, float):
            return math.isfinite(v)
        if isinstance(v, list):
            return all(ok(x) or (isinstance(x, float) and math.isnan(x)) for x in v)
        return True

    return all(ok(v) for v in values.values())


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[SimulatorThread, Any, Wire]]:
    sim = start_simulator_in_thread(
        seed=0,
        ports=[0],
        clock=FakeClock(),
        disturbances=Disturbances.none(),
        tick_interval_s=None,
        session_dir=tmp_path,
    )
    sock = socket.create_connection(("127.0.0.1", sim.ports[0]), timeout=30)
    client = nanonis_spm.Nanonis(sock)
    wire = Wire(sim.ports[0])
    yield sim, client, wire
    client.close()
    wire.close()
    sim.stop()


def _getter_of(name: str) -> str | None:
    if not name.endswith("Set"):
        return None
    getter = name[: -len("Set")] + "Get"
    return getter if getter in ROUTES else None


@pytest.mark.parametrize("name", SIMULATED)
def test_a_simulated_command_works_through_the_official_client(
    name: str,
    fresh: tuple[SimulatorThread, Any, Wire],
    capsys: pytest.CaptureFixture[str],
) -> None:
    _sim, client, wire = fresh
    spec = COMMANDS[name]
    if _official_method(name) is None:
        pytest.skip(f"the official client 1.0.9 has no {name} (atomlab's own client has)")
    if name in OFFICIAL_BROKEN or name in DOCUMENTED_DEVIATIONS:
        reply = wire.call(name, **_zero_args(spec))  # the official client cannot decode it
        assert reply.ok, reply.error
        assert _finite(reply.values)
        return
    if name == "ZCtrl.ZPosSet":
        wire.ok("ZCtrl.OnOffSet", on=0)
    if name == "Util.SettingsLoad":
        wire.ok("Util.SettingsSave", **ACTIONS["Util.SettingsSave"])
    if name == "Scan.FrameDataGrab":  # a small scan first: there is nothing to grab before
        wire.ok("Scan.BufferSet", channels=[0, 2], pixels=16, lines=4)
        wire.ok(
            "Scan.FrameSet",
            center_x_m=0.0,
            center_y_m=0.0,
            width_m=2e-9,
            height_m=2e-9,
            angle_deg=0.0,
        )
        wire.ok("Scan.Action", action=0, direction_up=1)
        wire.ok("Scan.WaitEndOfScan", timeout_ms=-1)
    getter = _getter_of(name)
    if name in ACTIONS:
        args = {**_zero_args(spec), **ACTIONS[name]}
    elif getter is not None:
        get_spec = COMMANDS[getter]
        get_args = {f.name: SELECTORS[f.name] for f in get_spec.args if f.name in SELECTORS}
        current = wire.ok(getter, **get_args).values
        args = {**get_args, **current}
        args = {f.name: args[f.name] for f in spec.args if f.name in args}
        missing = [f.name for f in spec.args if f.name not in args]
        assert not missing, f"{name}: no value for {missing} from {getter}; add it to ACTIONS"
    else:
        args = _zero_args(spec)
    error, decoded = _call(client, spec, args)
    assert error == "", f"{name}{args}: {error}"
    assert "error" not in capsys.readouterr().out
    if spec.reply:
        assert decoded, name
    if getter is not None and name not in ACTIONS:
        get_spec = COMMANDS[getter]
        get_args = {f.name: SELECTORS[f.name] for f in get_spec.args if f.name in SELECTORS}
        again = wire.ok(getter, **get_args).values
        for key, value in current.items():
            expected = pytest.approx(value) if isinstance(value, float) else value
            assert again[key] == expected, f"{getter}[{key}] after {name}"
    if not spec.args or name.endswith("Get"):
        values = wire.call(name, **args).values if spec.reply else {}
        assert _finite(values), f"{name}: {values}"


def test_every_command_of_the_official_client_is_in_the_table() -> None:
    names = {n.replace("_", ".", 1) for n in dir(nanonis_spm.Nanonis) if "_" in n[1:]}
    official = {n for n in names if n[0].isupper() and _official_method(n) is not None}
    assert official <= set(COMMANDS)
    assert len(SIMULATED) >= 170


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Wire]]:
    sim = start_simulator_in_thread(
        seed=0,
        ports=[0],
        clock=FakeClock(),
        disturbances=Disturbances.none(),
        tick_interval_s=None,
        session_dir=tmp_path_factory.mktemp("session"),
    )
    sock = socket.create_connection(("127.0.0.1", sim.ports[0]), timeout=30)
    client = nanonis_spm.Nanonis(sock)
    wire = Wire(sim.ports[0])
    yield client, wire
    client.close()
    wire.close()
    sim.stop()


@pytest.mark.parametrize("name", NOT_SIMULATED)
def test_an_unsimulated_command_is_an_error_the_official_client_reports(
    name: str, shared: tuple[Any, Wire], capsys: pytest.CaptureFixture[str]
) -> None:
    client, wire = shared
    spec = COMMANDS[name]
    args = _zero_args(spec)
    reply = wire.call(name, **args)
    assert reply.error is not None and "is not simulated" in reply.error.description
    zero = protocol.encode_reply(spec, error=reply.error)
    assert protocol.decode_reply(spec, zero[40:]).values == reply.values  # zeroed value fields
    if _official_method(name) is None or name in OFFICIAL_BROKEN:
        return
    error, _decoded = _call(client, spec, args)
    assert f"{name} is not simulated" in error
    assert "The following error appeared" in capsys.readouterr().out
    assert wire.ok("Bias.Get")  # the connection is still in step
