"""Guarded commands recorded as ``command`` actions (contract C2), end to end on the simulator:
a guard in the recorder's process (listener) and in another process (the audit log)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from atomlab.instrument import NanonisClient, WriteGuard, load_catalog
from atomlab.trajectory import (
    ActionEvent,
    InstrumentSource,
    Monitor,
    MonitorConfig,
    OwnWrites,
    Record,
    open_store,
    save_staged,
)

CATALOG = load_catalog()
DEADLINE_S = 60.0
CLI = [sys.executable, "-c", "from atomlab.cli.main import main; main()"]
PULSE = {"width_s": 0.02, "bias_v": 2.5}


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_commands_through_an_in_process_guard_become_command_actions(sim, make_config, cli):
    config = make_config(interval_s=0.05)
    own = OwnWrites()
    sampled, recorded = threading.Event(), threading.Event()
    commands: list[ActionEvent] = []

    def on_record(record: Record) -> None:
        if not sampled.is_set() and getattr(record, "sample_idx", -1) >= 5:
            sampled.set()
        if isinstance(record, ActionEvent) and record.kind == "command":
            commands.append(record)
            if len(commands) == 2:
                recorded.set()

    port = sim.ports[0]
    with (
        NanonisClient("127.0.0.1", port) as recorder_link,
        NanonisClient("127.0.0.1", port) as operator_link,
        open_store(config.db_path, read_only=False) as store,
    ):
        guard = WriteGuard(operator_link, CATALOG, allow_writes=True)
        guard.add_listener(own.observe)
        monitor = Monitor(
            InstrumentSource(recorder_link, CATALOG), config, store, own_writes=own,
            on_record=on_record,
        )  # fmt: skip
        summaries = []
        thread = threading.Thread(target=lambda: summaries.append(monitor.run()))
        thread.start()
        try:
            assert sampled.wait(DEADLINE_S)
            pulse = guard.command("Bias.Pulse", PULSE)
            shaped = guard.command("TipShaper.Start", {"wait": 1})
            assert recorded.wait(DEADLINE_S)
        finally:
            monitor.stop()
            thread.join(DEADLINE_S)
    reader = open_store(config.db_path)
    run = reader.run()
    actions = reader.actions(kind="command")
    assert [a.command for a in actions] == ["Bias.Pulse", "TipShaper.Start"]
    first, second = actions
    assert first.kind == "command" and first.source == "self" and first.spec_label == "Bias.Pulse"
    assert first.args == pulse.args and first.payload == {} and first.old_value is None
    assert second.args == {"wait": 1, "timeout_ms": -1}
    assert second.end_dt_s - second.dt_s == pytest.approx(shaped.duration_s, abs=1e-6)
    # The action's time is the command's, on the run's axis (anchored at started_at_utc).
    for action, result in ((first, pulse), (second, shaped)):
        assert _seconds(run.started_at_utc) + action.dt_s == pytest.approx(
            _seconds(result.at_utc), abs=0.05
        )
        assert action.window_start_dt_s == pytest.approx(action.dt_s - config.action_window_s)
        assert action.window_end_dt_s == pytest.approx(action.end_dt_s + config.action_window_s)
        assert 0 <= action.sample_idx <= run.samples
    listed = cli("trajectory", "action", "list", "--db-path", str(config.db_path), "--kind",
                 "command").json  # fmt: skip
    assert [a["command"] for a in listed["actions"]] == ["Bias.Pulse", "TipShaper.Start"]
    shown = cli("trajectory", "action", "show", "--db-path", str(config.db_path),
                "--action-idx", str(second.action_idx), "--json").json  # fmt: skip
    assert shown["action"]["kind"] == "command" and shown["action"]["args"]["wait"] == 1


def _wait_for(condition, proc: subprocess.Popen[str]):
    """Cross-process readiness: poll the database read-only until ``condition`` holds."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            value = condition()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("the recorder did not get there in time")


def test_commands_of_a_guard_in_another_process_are_recorded_from_the_audit_log(
    sim, isolated_home: Path
):
    db = isolated_home / "trajectories.sqlite"
    save_staged(
        isolated_home / "trajectory" / "monitor-config.json",
        MonitorConfig(run_name="cross", interval_s=0.05),
    )
    proc = subprocess.Popen(
        [*CLI, "trajectory", "monitor", "run", "--port", str(sim.ports[0])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ATOMLAB_HOME": str(isolated_home)},
    )
    try:

        def samples() -> int:
            with open_store(db) as store:
                return store.run("cross").samples

        _wait_for(lambda: samples() >= 5, proc)
        with NanonisClient("127.0.0.1", sim.ports[0]) as link:
            guard = WriteGuard(
                link, CATALOG, allow_writes=True, audit_log=isolated_home / "instrument-audit.jsonl"
            )
            pulse = guard.command("Bias.Pulse", PULSE)
            guard.command("TipShaper.Start")

        def recorded() -> list[ActionEvent]:
            with open_store(db) as store:
                found = store.actions("cross", kind="command")
            return found if len(found) == 2 else []

        actions = _wait_for(recorded, proc)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 130, err
    assert json.loads(out)["error"]["details"]["actions"] >= 2
    assert [a.command for a in actions] == ["Bias.Pulse", "TipShaper.Start"]
    assert actions[0].args == pulse.args and actions[0].source == "self"
    with open_store(db) as store:
        run = store.run("cross")
    assert _seconds(run.started_at_utc) + actions[0].dt_s == pytest.approx(
        _seconds(pulse.at_utc), abs=0.05
    )


def test_a_spectrum_command_is_stored_with_its_reply_arrays(make_config, state_server):
    """BiasSpectr.Start through the guard over TCP (the protocol server of the instrument
    tests answers it with a spectrum): the action's payload keeps the arrays."""
    spectrum = {
        "channels_names": ["Bias (V)", "Current (A)"],
        "data": [[-1.0, 0.0, 1.0], [-2e-10, 0.0, 2e-10]],
        "parameters": [0.5],
    }
    state_server.state["BiasSpectr.Start"] = spectrum
    config = make_config(specs=("Bias",), interval_s=0.05)
    own = OwnWrites()
    sampled, recorded = threading.Event(), threading.Event()

    def on_record(record: Record) -> None:
        if getattr(record, "sample_idx", -1) >= 3:
            sampled.set()
        if isinstance(record, ActionEvent) and record.kind == "command":
            recorded.set()

    with (
        NanonisClient("127.0.0.1", state_server.port) as recorder_link,
        NanonisClient("127.0.0.1", state_server.port) as operator_link,
        open_store(config.db_path, read_only=False) as store,
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
            assert sampled.wait(DEADLINE_S)
            guard.command("BiasSpectr.Start", {"save_base_name": "sweep_1"})
            assert recorded.wait(DEADLINE_S)
        finally:
            monitor.stop()
            thread.join(DEADLINE_S)
    (action,) = open_store(config.db_path).actions(kind="command")
    assert action.command == "BiasSpectr.Start"
    assert action.args == {"get_data": 1, "save_base_name": "sweep_1"}
    assert action.payload is not None
    assert action.payload["channels_names"] == spectrum["channels_names"]
    assert action.payload["data"][1] == pytest.approx(spectrum["data"][1])
