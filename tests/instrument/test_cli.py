"""`atomlab instrument ...` against the STM simulator, as a user runs it."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from atomlab.instrument import read_audit_log
from atomlab.sim import SimulatorThread

from .conftest import StateServer

Cli = Callable[..., Any]


def at(sim: SimulatorThread) -> tuple[str, str]:
    return ("--port", str(sim.ports[0]))


def bias(sim: SimulatorThread) -> float:
    return sim.call(lambda: sim.physics.bias_v)


def test_doctor_reports_answering_ports_and_latency(cli: Cli, sim: SimulatorThread) -> None:
    result = cli("instrument", "doctor", *at(sim), "--json")
    assert result.exit_code == 0, result.stdout
    assert result.json["answering"] == [sim.ports[0]]
    assert result.json["ports"][0]["round_trip_ms"] > 0
    text = cli("instrument", "doctor", *at(sim))
    assert f"127.0.0.1:{sim.ports[0]}  ok" in text.stdout and "Bias.Get" in text.stdout


def test_doctor_exits_5_when_nothing_answers(cli: Cli) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    result = cli("instrument", "doctor", "--port", str(port), "--json")
    assert result.exit_code == 5
    assert result.json["ok"] is False and "atomlab sim spm" in result.json["error"]["message"]


def test_signals_and_specs_list_the_catalog_with_values(cli: Cli, sim: SimulatorThread) -> None:
    signals = cli("instrument", "signals", "--read", *at(sim), "--json")
    assert signals.exit_code == 0, signals.stdout
    by_name = {row["name"]: row for row in signals.json["signals"]}
    assert by_name["current_a"]["unit"] == "A" and by_name["current_a"]["value"] > 0
    assert by_name["zctrl_status"]["value"] == 2
    specs = cli("instrument", "specs", "--json")
    rows = {row["name"]: row for row in specs.json["specs"]}
    assert rows["bias_v"]["limits"] == {"min": -5.0, "max": 5.0}
    assert rows["bias_v"]["safety"]["max_step"] == 0.1
    human = cli("instrument", "specs", "--read", *at(sim))
    assert "bias_v" in human.stdout and "= 0.1" in human.stdout


def test_get_a_spec_and_a_whole_command(cli: Cli, sim: SimulatorThread) -> None:
    result = cli("instrument", "get", "Bias", *at(sim), "--json")
    assert result.exit_code == 0, result.stdout
    assert result.json["name"] == "bias_v" and result.json["value"] == 0.1
    frame = cli("instrument", "get", "Scan.FrameGet", *at(sim), "--json")
    assert set(frame.json["values"]) == {
        "center_x_m",
        "center_y_m",
        "width_m",
        "height_m",
        "angle_deg",
    }
    assert cli("instrument", "get", "bias_v", *at(sim)).stdout.strip() == "bias_v = 0.1 V"


def test_each_scan_frame_field_set_through_the_cli_reads_back(
    cli: Cli, sim: SimulatorThread
) -> None:
    wanted = {
        "scan_frame_center_x_m": "1.5e-08",
        "scan_frame_center_y_m": "-2.5e-08",
        "scan_frame_width_m": "3e-08",
        "scan_frame_height_m": "4e-08",
        "scan_frame_angle_deg": "-12.5",
    }
    for name, value in wanted.items():
        result = cli("instrument", "set", name, value, "--allow-writes", *at(sim), "--json")
        assert result.exit_code == 0, result.stdout
    for name, value in wanted.items():
        assert cli("instrument", "get", name, *at(sim), "--json").json["value"] == float(value)
    frame = cli("instrument", "get", "Scan.FrameGet", *at(sim), "--json").json["values"]
    assert frame == {name.removeprefix("scan_frame_"): float(v) for name, v in wanted.items()}


def test_set_accepts_negative_numbers_and_writes_the_audit_log(
    cli: Cli, sim: SimulatorThread, isolated_home: Path
) -> None:
    result = cli(
        "instrument", "set", "bias_v", "-0.05", "--allow-writes", "--who", "ada", *at(sim), "--json"
    )
    assert result.exit_code == 0, result.stdout
    assert result.json["outcome"] == "done" and result.json["readback"] == -0.05
    # 0.15 V > max_step 0.1, and the Z controller is on: 0 V is crossed in one step
    assert result.json["plan"]["steps"] == pytest.approx([0.05, -0.05])
    assert bias(sim) == pytest.approx(-0.05)
    (record,) = read_audit_log(isolated_home / "instrument-audit.jsonl")
    assert record["who"] == "ada" and record["new"] == -0.05 and record["old"] == 0.1
    exp = cli("instrument", "set", "bias_v", "-1e-2", "--allow-writes", *at(sim), "--json")
    assert exp.exit_code == 0 and exp.json["readback"] == -0.01


def test_writes_are_refused_with_exit_2_and_nothing_is_sent(cli: Cli, sim: SimulatorThread) -> None:
    disabled = cli("instrument", "set", "bias_v", "0.2", *at(sim), "--json")
    assert disabled.exit_code == 2 and disabled.json["error"]["type"] == "policy_refused"
    beyond = cli("instrument", "set", "bias_v", "-7", "--allow-writes", *at(sim), "--json")
    assert beyond.exit_code == 2 and "outside its limits -5..5 V" in beyond.json["error"]["message"]
    text = cli("instrument", "set", "zctrl_setpoint_a", "2e-6", "--allow-writes", *at(sim))
    assert text.exit_code == 2 and text.stderr.startswith("error: zctrl_setpoint_a = 2e-06 A")
    assert bias(sim) == pytest.approx(0.1)
    assert sim.call(lambda: sim.physics.z.setpoint_a) == pytest.approx(1e-10)


def test_plan_only_prints_the_plan_and_sends_nothing(cli: Cli, sim: SimulatorThread) -> None:
    result = cli("instrument", "set", "bias_v", "0.45", "--plan-only", *at(sim), "--json")
    assert result.exit_code == 0, result.stdout
    assert result.json["outcome"] == "dry_run"
    assert result.json["plan"]["steps"] == pytest.approx([0.2, 0.3, 0.4, 0.45])
    assert result.json["plan"]["interval_s"] == pytest.approx(0.1)
    human = cli("instrument", "set", "bias_v", "0.45", "--plan-only", *at(sim))
    assert "plan (nothing sent)" in human.stdout and "4 step(s) via Bias.Set" in human.stdout
    assert bias(sim) == pytest.approx(0.1)


def test_ramp_runs_its_steps_and_refuses_a_slew_violation(cli: Cli, sim: SimulatorThread) -> None:
    base = ("instrument", "ramp", "bias_v", "0.1", "0.3", "0.1")
    done = cli(*base, "--interval-s", "0.1", "--allow-writes", *at(sim), "--json")
    assert done.exit_code == 0, done.stdout
    assert done.json["plan"]["steps"] == pytest.approx([0.1, 0.2, 0.3])
    assert bias(sim) == pytest.approx(0.3)
    fast = cli(
        "instrument",
        "ramp",
        "bias_v",
        "0.3",
        "0.1",
        "0.1",
        "--interval-s",
        "0.01",
        "--allow-writes",
        *at(sim),
        "--json",
    )
    assert fast.exit_code == 2 and "--interval-s 0.1" in fast.json["error"]["message"]


def test_user_errors_have_their_exit_codes(cli: Cli, sim: SimulatorThread) -> None:
    unknown = cli("instrument", "get", "volts", *at(sim), "--json")
    assert unknown.exit_code == 3 and "bias_v" in unknown.json["error"]["message"]
    read_only = cli("instrument", "set", "current_a", "1e-9", *at(sim), "--json")
    assert read_only.exit_code == 3 and "read-only" in read_only.json["error"]["message"]
    not_a_number = cli("instrument", "set", "bias_v", "abc", *at(sim), "--json")
    assert not_a_number.exit_code == 3
    with socket.create_server(("127.0.0.1", 0)) as probe:
        closed = str(probe.getsockname()[1])
    refused = cli("instrument", "get", "bias_v", "--port", closed, "--json")
    assert refused.exit_code == 5 and refused.json["error"]["type"] == "connection_error"


def test_host_timeout_and_settings_from_the_environment(
    cli: Cli, state_server: StateServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = str(state_server.port)
    ok = cli("instrument", "get", "bias_v", "--host", "127.0.0.1", "--port", port, "--json")
    assert ok.exit_code == 0 and ok.json["value"] == 0.1
    state_server.hang.set()
    late = cli("instrument", "get", "bias_v", "--port", port, "--timeout-s", "0.2", "--json")
    assert late.exit_code == 5 and late.json["error"]["type"] == "timeout"
    state_server.hang.clear()
    monkeypatch.setenv("ATOMLAB_INSTRUMENT__PORT", port)
    monkeypatch.setenv("ATOMLAB_INSTRUMENT__ALLOW_WRITES", "1")
    written = cli("instrument", "set", "bias_v", "0.2", "--json")
    assert written.exit_code == 0 and written.json["readback"] == 0.2


def test_a_lab_catalog_file_replaces_the_packaged_one(
    cli: Cli, sim: SimulatorThread, tmp_path: Path
) -> None:
    catalog = tmp_path / "lab.yaml"
    catalog.write_text(
        "specs:\n"
        "  - {label: Gap Voltage, name: gap_v, unit: V, get: {command: Bias.Get, field: bias_v},\n"
        "     set: {command: Bias.Set, field: bias_v}, limits: {min: -1, max: 1}}\n",
        encoding="utf-8",
    )
    specs = cli("instrument", "specs", "--catalog", str(catalog), "--read", *at(sim), "--json")
    assert specs.exit_code == 0, specs.stdout
    assert [(r["name"], r["value"]) for r in specs.json["specs"]] == [("gap_v", 0.1)]
    beyond = cli(
        "instrument",
        "set",
        "gap_v",
        "2",
        "--catalog",
        str(catalog),
        "--allow-writes",
        *at(sim),
        "--json",
    )
    assert beyond.exit_code == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text("signals:\n  - {label: X, name: x, get: {command: Nope.Get, field: v}}\n")
    bad = cli("instrument", "specs", "--catalog", str(broken), "--json")
    assert bad.exit_code == 3 and "Nope.Get" in bad.json["error"]["message"]
