"""`atomlab instrument spectrum bias|z` against the STM simulator."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atomlab.instrument import read_audit_log
from atomlab.sim import BARRIER_EV, SimulatorThread

Cli = Callable[..., Any]


def at(sim: SimulatorThread) -> tuple[str, str]:
    return ("--port", str(sim.ports[0]), "--timeout-s", "60")


def test_a_bias_spectrum_with_didv_and_a_csv_file(
    cli: Cli, sim: SimulatorThread, isolated_home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sts.csv"
    result = cli(
        "instrument", "spectrum", "bias", "--start", "-0.4", "--end", "0.4", "--points", "41",
        "--lockin-amplitude-v", "0.01", "--output", str(out), "--allow-writes", *at(sim),
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout
    body = result.json
    assert body["kind"] == "bias" and body["points"] == 41
    assert list(body["channels"]) == ["Bias calc (V)", "Current (A)", "LI Demod 1 X (A)"]
    assert body["channels"]["Bias calc (V)"][0] == -0.4
    rows = list(csv.reader(out.open()))
    assert rows[0] == list(body["channels"]) and len(rows) == 42
    starts = [
        r for r in read_audit_log(isolated_home / "instrument-audit.jsonl")
        if r.get("command") == "BiasSpectr.Start"
    ]  # fmt: skip
    assert starts and starts[-1]["outcome"] == "done"
    human = cli("instrument", "spectrum", "bias", "--points", "11", "--allow-writes", *at(sim))
    assert human.exit_code == 0 and "bias spectrum: 11 points" in human.stdout


def test_a_z_spectrum_reports_the_barrier_height(cli: Cli, sim: SimulatorThread) -> None:
    result = cli(
        "instrument", "spectrum", "z", "--distance-m", "3e-10", "--points", "64",
        "--allow-writes", *at(sim), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout
    assert abs(result.json["barrier_height_ev"] - (BARRIER_EV - 0.05)) < 0.3


def test_refusals_and_plans_send_nothing(cli: Cli, sim: SimulatorThread) -> None:
    refused = cli("instrument", "spectrum", "bias", *at(sim), "--json")
    assert refused.exit_code == 2 and "writes are disabled" in refused.json["error"]["message"]
    wide = cli("instrument", "spectrum", "bias", "--start", "-9", "--allow-writes", *at(sim),
               "--json")  # fmt: skip
    assert wide.exit_code == 2 and "start_value_v" in wide.json["error"]["message"]
    into = cli("instrument", "spectrum", "z", "--distance-m", "-2e-9", "--allow-writes",
               *at(sim), "--json")  # fmt: skip
    assert into.exit_code == 2
    bad = cli("instrument", "spectrum", "bias", "--points", "1", *at(sim), "--json")
    assert bad.exit_code == 3 and "points" in bad.json["error"]["message"]
    plan = cli("instrument", "spectrum", "bias", "--plan-only", *at(sim), "--json")
    assert plan.exit_code == 0 and plan.json["outcome"] == "dry_run"
    assert plan.json["commands"][-1]["command"] == "BiasSpectr.Start"
    assert sim.call(lambda: sim.sim.commands.bias_spectr.start_v) == -1.0
    assert sim.call(lambda: sim.physics.tip.crashes) == 0
    folder = cli("instrument", "spectrum", "bias", "--output", "/", "--allow-writes", *at(sim))
    assert folder.exit_code == 3 and "directory" in folder.stderr
