"""The recording loop on a fake clock: timing, missed ticks, errors, actions, attribution, stop."""

from __future__ import annotations

import itertools

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.errors import ConnectionFailedError, InvalidInputError
from atomlab.trajectory import Monitor, OwnWrites, open_store
from tests.trajectory.conftest import FakeSource


class LateClock(FakeClock):
    """Every sleep overshoots by 3 ms, like a real scheduler."""

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds + 0.003)


def record(source, config, clock, **run_kwargs):
    with open_store(config.db_path, read_only=False) as store:
        monitor = Monitor(source, config, store, clock=clock, **run_kwargs.pop("monitor", {}))
        summary = monitor.run(**run_kwargs)
    return summary, open_store(config.db_path)


def test_sampling_writes_dt_and_segment_rotation(make_config):
    clock = LateClock(start=50.0)
    summary, store = record(FakeSource(clock), make_config(rotate_entries=3), clock, max_samples=7)
    rows = list(store.samples("signals"))
    assert summary.samples == 7 and summary.status == "completed"
    assert [r["sample_idx"] for r in rows] == list(range(7))
    assert rows[-1]["segment_id"] == 2
    assert [r["segment_id"] for r in rows] == [0, 0, 0, 1, 1, 1, 2]
    for k, row in enumerate(rows):
        assert row["scheduled_dt_s"] == pytest.approx(k * 0.1)
        # dt_s is the real poll time, not the schedule: the 3 ms oversleep shows
        assert row["dt_s"] == pytest.approx(k * 0.1 + (0.003 if k else 0.0), abs=1e-9)
        assert row["latency_s"] == pytest.approx(0.001)
    assert rows[3]["Z Position"] == 3.0


def test_late_ticks_are_recorded_as_missed_never_made_up_in_a_burst(make_config, clock):
    source = FakeSource(clock)
    source.on_poll = lambda k: clock.advance(0.35) if k == 3 else None
    summary, store = record(source, make_config(), clock, max_samples=8)
    missed = store.missed()
    assert [(m.first_tick_idx, m.count, m.reason) for m in missed] == [(4, 3, "late")]
    assert summary.missed_ticks == 3 and store.run().missed_ticks == 3
    scheduled = [r["scheduled_dt_s"] for r in store.samples("signals")]
    assert scheduled == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.7, 0.8, 0.9, 1.0])
    starts = [r["dt_s"] for r in store.samples("signals")]
    assert min(b - a for a, b in itertools.pairwise(starts)) >= 0.05  # no burst


def test_poll_errors_are_recorded_and_the_run_goes_on_after_reconnecting(make_config, clock):
    def script(k):
        if k == 2:
            raise ConnectionFailedError("link dropped", command="Signals.ValsGet")
        if k == 5:
            raise InvalidInputError("Bias.Get failed on the instrument: busy", command="Bias.Get")
        return [float(k), 1e-10], [0.1, 1e-10]

    source = FakeSource(clock, script)
    source.reconnect_failures = 1
    summary, store = record(source, make_config(), clock, max_samples=6)
    errors = store.errors()
    assert [e.error_type for e in errors] == [
        "ConnectionFailedError",
        "ConnectionRefusedError",
        "InvalidInputError",
    ]
    assert errors[0].command == "Signals.ValsGet" and errors[2].command == "Bias.Get"
    assert source.reconnects == 1 and summary.reconnects == 1
    assert summary.status == "completed" and summary.samples == 6 and summary.errors == 3
    reasons = {m.reason for m in store.missed()}
    assert reasons == {"disconnected", "error"}
    assert store.run().errors == 3


def test_first_sample_is_the_baseline_and_changes_beyond_tolerance_are_actions(make_config, clock):
    def script(k):
        bias = 0.1 if k < 3 else 0.25
        setpoint = 1e-10 + (1e-13 if k >= 4 else 0.0)  # inside its tolerance: no action
        return [0.0, 0.0], [bias, setpoint]

    config = make_config(tolerances={"Z Setpoint": 1e-12}, action_window_s=1.5)
    summary, store = record(FakeSource(clock, script), config, clock, max_samples=6)
    actions = store.actions()
    assert summary.actions == 1 and len(actions) == 1
    action = actions[0]
    assert (action.action_idx, action.spec_label, action.sample_idx) == (0, "Bias", 3)
    assert (action.old_value, action.new_value) == (0.1, 0.25)
    assert action.delta == pytest.approx(0.15)
    assert action.source == "external" and action.steps == 1
    assert action.window_start_dt_s == pytest.approx(action.dt_s - 1.5)
    assert action.window_end_dt_s == pytest.approx(action.dt_s + 1.5)
    assert action.detected_at_utc.endswith("Z")


def test_a_slow_drift_in_steps_below_the_tolerance_still_becomes_an_action(make_config, clock):
    def script(k):
        return [0.0, 0.0], [round(0.1 + 0.0004 * k, 6), 1e-10]  # 0.4 mV per tick, tolerance 1 mV

    config = make_config(tolerances={"Bias": 0.001})
    _, store = record(FakeSource(clock, script), config, clock, max_samples=8)
    actions = store.actions()
    # measured from the last recorded value, not the previous sample: 0.1 -> 0.1012 -> 0.1024
    assert [(a.sample_idx, a.old_value, a.new_value) for a in actions] == [
        (3, 0.1, 0.1012),
        (6, 0.1012, 0.1024),
    ]


def test_a_ramp_coalesces_into_one_action_when_asked(make_config, clock):
    def script(k):
        bias = 0.1 + 0.1 * min(max(k - 2, 0), 5)  # steps at k = 3..7, then flat
        return [0.0, 0.0], [round(bias, 6), 1e-10]

    config = make_config(coalesce_s=0.25)
    _, store = record(FakeSource(clock, script), config, clock, max_samples=12)
    actions = store.actions()
    assert len(actions) == 1
    ramp = actions[0]
    assert (ramp.old_value, ramp.new_value, ramp.steps) == (0.1, 0.6, 5)
    assert ramp.end_dt_s == pytest.approx(0.7, abs=1e-6)
    assert ramp.window_end_dt_s == pytest.approx(ramp.end_dt_s + 2.5)

    config = make_config(run_name="run-2")
    _, store = record(FakeSource(clock, script), config, clock, max_samples=12)
    assert len(store.actions("run-2")) == 5  # without coalescing: one action per step


def test_a_write_noted_by_the_guard_is_self_anything_else_external(make_config, clock):
    own = OwnWrites()

    def on_poll(k):
        if k == 3:  # atomlab's guard wrote Bias just before this poll
            own.note("Bias", 0.3, clock.monotonic())

    def script(k):
        return [0.0, 0.0], [0.3 if k >= 3 else 0.1, 2e-10 if k >= 5 else 1e-10]

    source = FakeSource(clock, script)
    source.on_poll = on_poll
    _, store = record(source, make_config(), clock, max_samples=7, monitor={"own_writes": own})
    sources = {a.spec_label: a.source for a in store.actions()}
    assert sources == {"Bias": "self", "Z Setpoint": "external"}


def test_stop_flushes_everything_and_marks_the_run(make_config, clock):
    source = FakeSource(clock)
    with open_store(make_config().db_path, read_only=False) as store:
        monitor = Monitor(source, make_config(), store, clock=clock)

        def on_poll(k):
            if k == 4:
                with open_store(store.path) as reader:  # a reader while recording
                    assert reader.run().status == "running"
                    assert reader.run().writer_alive is True
                    assert reader.actions() == []
            if k == 40:
                monitor.stop("interrupted", "test")

        source.on_poll = on_poll
        summary = monitor.run()
    reader = open_store(store.path)
    run = reader.run()
    assert summary.status == "interrupted" and run.status == "interrupted"
    assert run.stop_reason == "test" and run.ended_at_utc is not None
    assert run.samples == summary.samples == len(list(reader.samples("specs"))) == 41


def test_run_without_a_run_name_is_refused(make_config, clock):
    with (
        open_store(make_config().db_path, read_only=False) as store,
        pytest.raises(InvalidInputError, match="config set"),
    ):
        Monitor(FakeSource(clock), make_config(run_name=""), store, clock=clock)


def test_a_keyboard_interrupt_inside_a_poll_still_flushes_and_marks_the_run(make_config, clock):
    source = FakeSource(clock)

    def on_poll(k):
        if k == 5:
            raise KeyboardInterrupt

    source.on_poll = on_poll
    with open_store(make_config().db_path, read_only=False) as store:
        monitor = Monitor(source, make_config(), store, clock=clock)
        with pytest.raises(KeyboardInterrupt):
            monitor.run()
    run = open_store(make_config().db_path).run()
    assert run.status == "interrupted" and run.samples == 5
