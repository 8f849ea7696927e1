"""The monitor against the STM simulator over TCP: the right value for every field, few calls,
and changes attributed to atomlab's guard (``self``) or to anyone else (``external``)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from atomlab.core.errors import InvalidInputError
from atomlab.instrument import NanonisClient, WriteGuard, load_catalog
from atomlab.trajectory import (
    InstrumentSource,
    Monitor,
    MonitorConfig,
    OwnWrites,
    Sample,
    open_store,
)

ALL_SPECS = tuple(entry.label for entry in load_catalog().specs)
FRAME = {
    "center_x_m": 1e-9,
    "center_y_m": -2e-9,
    "width_m": 3e-8,
    "height_m": 4e-8,
    "angle_deg": 15.0,
}


class CountingClient(NanonisClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []

    def call(self, command, args=None, **kwargs):  # type: ignore[no-untyped-def]
        self.commands.append(str(command))
        return super().call(command, args, **kwargs)

    def read_signals(self, indexes, **kwargs):  # type: ignore[no-untyped-def]
        self.commands.append("Signals.ValsGet")
        return super().read_signals(indexes, **kwargs)


def test_every_multi_field_spec_is_read_from_its_own_field(sim):
    port = sim.ports[0]
    with NanonisClient("127.0.0.1", port) as operator:
        operator.call("Scan.FrameSet", FRAME)
        operator.call("ZCtrl.GainSet", {"p_gain": 3e-12, "time_constant_s": 2e-4, "i_gain": 0.0})
    with NanonisClient("127.0.0.1", port) as client:
        source = InstrumentSource(client, load_catalog())
        _, specs = source.channels(["Tunnel Current"], ALL_SPECS)
        _, values = source.poll()
    got = dict(zip([s.label for s in specs], values, strict=True))
    assert got["Scan Frame Center X"] == pytest.approx(1e-9, rel=1e-6)
    assert got["Scan Frame Center Y"] == pytest.approx(-2e-9, rel=1e-6)
    assert got["Scan Frame Width"] == pytest.approx(3e-8, rel=1e-6)
    assert got["Scan Frame Height"] == pytest.approx(4e-8, rel=1e-6)
    assert got["Scan Frame Angle"] == pytest.approx(15.0)
    assert got["Z Controller P Gain"] == pytest.approx(3e-12, rel=1e-6)
    assert got["Z Controller Time Constant"] == pytest.approx(2e-4, rel=1e-6)
    frame = {s.label: (s.source_command, s.source_field) for s in specs}
    assert frame["Scan Frame Angle"] == ("Scan.FrameGet", "angle_deg")


def test_one_call_per_command_per_tick_with_signals_batched(sim):
    with CountingClient("127.0.0.1", sim.ports[0]) as client:
        source = InstrumentSource(client, load_catalog())
        signals = ["Tunnel Current", "Z Position", "Tip X", "Input 3 (V)", "Z Controller I Gain"]
        channels, _ = source.channels(signals, ALL_SPECS)
        client.commands.clear()
        values, _ = source.poll()
    assert client.commands.count("Signals.ValsGet") == 1
    assert len(client.commands) == len(set(client.commands))  # no command twice in one tick
    assert "Scan.FrameGet" in client.commands and "ZCtrl.GainGet" in client.commands
    assert channels[3].unit == "V" and channels[3].source_command == "Signals.ValsGet"
    assert all(isinstance(v, float) for v in values)


def test_unknown_or_misplaced_labels_are_refused_with_the_fix(sim):
    with NanonisClient("127.0.0.1", sim.ports[0]) as client:
        source = InstrumentSource(client, load_catalog())
        with pytest.raises(InvalidInputError, match="list-signals"):
            source.channels(["No Such Signal"], ["Bias"])
        with pytest.raises(InvalidInputError, match="is a spec"):
            source.channels(["Bias"], ["Z Setpoint"])
        with pytest.raises(InvalidInputError, match="read-only signal"):
            source.channels(["Z Position"], ["Tunnel Current"])


def test_guard_writes_are_self_and_another_clients_writes_are_external(sim, tmp_path):
    port = sim.ports[0]
    db = tmp_path / "traj.sqlite"
    config = MonitorConfig(
        run_name="attribution",
        signals=("Tunnel Current",),
        specs=("Bias", "Z Setpoint"),
        interval_s=0.02,
        db_path=db,
    )
    own = OwnWrites()
    seen: dict[str, threading.Event] = {
        "sample": threading.Event(),
        "Bias": threading.Event(),
        "Z Setpoint": threading.Event(),
    }

    def on_record(record: Any) -> None:
        if isinstance(record, Sample):  # not a missed tick: the baseline is really taken
            seen["sample"].set()
        label = getattr(record, "spec_label", None)
        if label in seen:
            seen[label].set()

    with (
        NanonisClient("127.0.0.1", port) as client,
        open_store(db, read_only=False) as store,
    ):
        monitor = Monitor(
            InstrumentSource(client, load_catalog()),
            config,
            store,
            own_writes=own,
            on_record=on_record,
            attribution_grace_s=2.0,  # generous: this machine may be busy
        )
        thread = threading.Thread(target=monitor.run, kwargs={"duration_s": 60})
        thread.start()
        try:
            assert seen["sample"].wait(10)
            with NanonisClient("127.0.0.1", port) as guarded:
                guard = WriteGuard(guarded, load_catalog(), allow_writes=True)
                guard.add_listener(own.observe)
                guard.set("bias_v", 0.2)
            assert seen["Bias"].wait(10)
            with NanonisClient("127.0.0.1", port) as other:
                other.call("ZCtrl.SetpntSet", {"setpoint": 2e-10})
            assert seen["Z Setpoint"].wait(10)
        finally:
            monitor.stop("completed", "test done")
            thread.join(10)
    actions = {a.spec_label: a for a in open_store(db).actions()}
    assert actions["Bias"].source == "self"
    assert actions["Bias"].new_value == pytest.approx(0.2)
    assert actions["Z Setpoint"].source == "external"
    assert actions["Z Setpoint"].new_value == pytest.approx(2e-10, rel=1e-6)


def test_a_write_by_atomlab_instrument_set_in_another_guard_is_self(sim, tmp_path, cli):
    """`atomlab instrument set` uses its own guard; the recorder learns of it from the audit log."""
    from atomlab.core.clock import SystemClock
    from atomlab.instrument import AUDIT_LOG_NAME

    port = sim.ports[0]
    db = tmp_path / "traj.sqlite"
    audit = tmp_path / "atomlab-home" / AUDIT_LOG_NAME  # the guard's log in the isolated home
    config = MonitorConfig(
        run_name="audit", signals=("Tunnel Current",), specs=("Bias",), interval_s=0.02, db_path=db
    )
    own = OwnWrites()
    own.follow_audit_log(audit, SystemClock())
    sampled, acted = threading.Event(), threading.Event()

    def on_record(record: Any) -> None:
        if isinstance(record, Sample):  # not a missed tick: the baseline is really taken
            sampled.set()
        if getattr(record, "spec_label", None) == "Bias":
            acted.set()

    with NanonisClient("127.0.0.1", port) as client, open_store(db, read_only=False) as store:
        monitor = Monitor(
            InstrumentSource(client, load_catalog()),
            config,
            store,
            own_writes=own,
            on_record=on_record,
        )
        thread = threading.Thread(target=monitor.run, kwargs={"duration_s": 60})
        thread.start()
        try:
            assert sampled.wait(10)
            result = cli(
                "instrument",
                "set",
                "bias_v",
                "0.2",
                "--allow-writes",
                "--port",
                str(port),
                "--json",
            )
            assert result.exit_code == 0, result.stdout
            assert acted.wait(10)
        finally:
            monitor.stop("completed", "test done")
            thread.join(10)
    (action,) = open_store(db).actions()
    assert action.source == "self" and action.new_value == pytest.approx(0.2)


def test_the_recording_survives_the_instrument_going_away_and_coming_back(tmp_path):
    from atomlab.sim import Disturbances, start_simulator_in_thread
    from atomlab.trajectory import MonitorError, Sample

    first = start_simulator_in_thread(seed=0, ports=[0], disturbances=Disturbances.none())
    port = first.ports[0]
    db = tmp_path / "traj.sqlite"
    config = MonitorConfig(
        run_name="outage", signals=("Tunnel Current",), specs=("Bias",), interval_s=0.02, db_path=db
    )
    sampled, failed, resumed = threading.Event(), threading.Event(), threading.Event()

    def on_record(record: Any) -> None:
        if isinstance(record, MonitorError):
            failed.set()
        elif isinstance(record, Sample):
            (resumed if failed.is_set() else sampled).set()

    second = None
    with NanonisClient("127.0.0.1", port, call_timeout_s=1.0) as client, \
            open_store(db, read_only=False) as store:  # fmt: skip
        monitor = Monitor(
            InstrumentSource(client, load_catalog()), config, store, on_record=on_record
        )
        thread = threading.Thread(target=monitor.run, kwargs={"duration_s": 120})
        thread.start()
        try:
            assert sampled.wait(10)
            first.stop()
            assert failed.wait(20)
            second = start_simulator_in_thread(
                seed=0, ports=[port], disturbances=Disturbances.none()
            )
            assert resumed.wait(30)
        finally:
            monitor.stop("completed", "test done")
            thread.join(20)
            if second is not None:
                second.stop()
    reader = open_store(db)
    assert reader.run().status == "completed"
    assert reader.errors() and {m.reason for m in reader.missed()} >= {"disconnected"}
    assert reader.run().samples >= 2
