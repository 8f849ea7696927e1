"""Guarded writes: gate, bounds, ramps, slew, cooldown, dry run, audit log, listeners."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomlab.core.clock import FakeClock
from atomlab.core.errors import InvalidInputError, PolicyRefusedError
from atomlab.instrument.catalog import load_catalog
from atomlab.instrument.client import NanonisClient
from atomlab.instrument.guard import WriteEvent, WriteGuard, read_audit_log

from .conftest import StateServer

CATALOG = load_catalog()


@pytest.fixture
def client(state_server: StateServer) -> Iterator[NanonisClient]:
    with NanonisClient("127.0.0.1", state_server.port) as nanonis:
        yield nanonis


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def make_guard(
    client: NanonisClient, audit: Path, clock: FakeClock | None = None, **kw: bool
) -> WriteGuard:
    return WriteGuard(
        client,
        CATALOG,
        allow_writes=kw.get("allow_writes", True),
        dry_run=kw.get("dry_run", False),
        audit_log=audit,
        who="test-operator",
        clock=clock or FakeClock(),
    )


def sets(server: StateServer) -> list[str]:
    return [r for r in server.requests if r.endswith("Set")]


def test_small_set_is_one_write_with_readback_and_an_audit_record(
    client: NanonisClient, state_server: StateServer, audit: Path
) -> None:
    result = make_guard(client, audit).set("bias_v", 0.15)
    assert result.outcome == "done" and result.steps_sent == 1
    assert result.readback == pytest.approx(0.15)
    (record,) = read_audit_log(audit)
    assert record["what"] == "bias_v" and record["who"] == "test-operator"
    assert record["old"] == pytest.approx(0.1) and record["new"] == 0.15
    assert record["plan"]["steps"] == [0.15] and record["when"].endswith("Z")


def test_a_write_outside_limits_is_refused_and_nothing_is_sent(
    client: NanonisClient, state_server: StateServer, audit: Path
) -> None:
    with pytest.raises(
        PolicyRefusedError, match=r"bias_v = 9 V is outside its limits -5\.\.5 V"
    ) as info:
        make_guard(client, audit).set("bias_v", 9.0)
    assert info.value.exit_code == 2
    assert sets(state_server) == []
    assert read_audit_log(audit)[-1]["outcome"] == "refused"


def test_writes_are_refused_until_allowed(
    client: NanonisClient, state_server: StateServer, audit: Path
) -> None:
    with pytest.raises(PolicyRefusedError, match=r"writes are disabled.*--allow-writes"):
        make_guard(client, audit, allow_writes=False).set("bias_v", 0.2)
    assert sets(state_server) == []


def test_a_large_change_becomes_a_ramp_paced_by_the_slew_limit(
    client: NanonisClient, state_server: StateServer, audit: Path
) -> None:
    clock = FakeClock()
    events: list[WriteEvent] = []
    guard = make_guard(client, audit, clock)
    guard.add_listener(events.append)
    result = guard.set("bias_v", 0.5)
    assert result.plan.steps == pytest.approx([0.2, 0.3, 0.4, 0.5])
    assert result.plan.interval_s == pytest.approx(0.1)  # 0.1 V steps at 1 V/s
    assert clock.sleeps == pytest.approx([0.1, 0.1, 0.1])
    assert sets(state_server) == ["Bias.Set"] * 4
    assert [e.value for e in events] == pytest.approx([0.2, 0.3, 0.4, 0.5])
    assert {e.plan_id for e in events} == {result.plan.id}


def test_plan_only_and_dry_run_send_nothing(
    client: NanonisClient, state_server: StateServer, audit: Path
) -> None:
    plan = make_guard(client, audit).set("bias_v", -0.3, plan_only=True)
    # the Z controller is on: 0 V is crossed in one step (0.05 -> -0.05)
    assert plan.outcome == "dry_run" and len(plan.plan.steps) == 5
    assert (
        make_guard(client, audit, dry_run=True, allow_writes=False).set("bias_v", 0.2).outcome
        == "dry_run"
    )
    assert sets(state_server) == []
    assert [r["outcome"] for r in read_audit_log(audit)] == ["dry_run", "dry_run"]


def test_ramp_steps_and_limits(
    client: NanonisClient, state_server: StateServer, audit: Path
) -> None:
    state_server.state["ZCtrl.OnOffGet"] = {"on": 0}  # feedback off: a ramp may pass 0 V
    guard = make_guard(client, audit)
    result = guard.ramp("bias_v", 0.1, -0.2, 0.1, interval_s=0.2)
    assert result.plan.steps == pytest.approx([0.1, 0.0, -0.1, -0.2])
    with pytest.raises(PolicyRefusedError, match="exceeds max_step"):
        guard.ramp("bias_v", -0.2, 1.0, 0.5)
    with pytest.raises(PolicyRefusedError, match=r"slew limit.*--interval-s 0\.1"):
        guard.ramp("bias_v", -0.2, 0.2, 0.1, interval_s=0.01)
    with pytest.raises(PolicyRefusedError, match="starts 2 V away"):
        guard.ramp("bias_v", 1.8, 2.0, 0.1)
    with pytest.raises(PolicyRefusedError, match="outside its limits"):
        guard.ramp("bias_v", -0.2, 7.0, 0.1)
    assert sets(state_server) == ["Bias.Set"] * 4


def test_cooldown_holds_across_guards_sharing_an_audit_log(
    client: NanonisClient, state_server: StateServer, audit: Path
) -> None:
    client.call("ZCtrl.OnOffSet", {"on": 0})
    clock = FakeClock()
    make_guard(client, audit, clock).set("zctrl_on", 1)
    with pytest.raises(PolicyRefusedError, match=r"cooldown is 1 s, retry in 1 s"):
        make_guard(client, audit, clock).set("zctrl_on", 0)  # a new process reads the audit log
    clock.advance(1.0)
    assert make_guard(client, audit, clock).set("zctrl_on", 0).readback == 0


def test_writing_one_field_keeps_the_other_fields_of_the_command(
    client: NanonisClient, state_server: StateServer, audit: Path
) -> None:
    frame = {
        "center_x_m": 1e-8,
        "center_y_m": 2e-8,
        "width_m": 3e-8,
        "height_m": 4e-8,
        "angle_deg": 5.0,
    }
    client.call("Scan.FrameSet", frame)
    client.call("ZCtrl.GainSet", {"p_gain": 1e-10, "time_constant_s": 1e-3, "i_gain": 1e-7})
    guard = make_guard(client, audit)
    guard.set("scan_frame_height_m", 6e-8)
    guard.set("zctrl_p_gain", 1.2e-10)
    assert client.call("Scan.FrameGet").values == pytest.approx({**frame, "height_m": 6e-8})
    gains = client.call("ZCtrl.GainGet").values
    assert gains["time_constant_s"] == pytest.approx(1e-3) and gains["p_gain"] == pytest.approx(
        1.2e-10
    )


def test_bad_values_are_invalid_input(client: NanonisClient, audit: Path) -> None:
    guard = make_guard(client, audit)
    with pytest.raises(InvalidInputError, match="whole numbers"):
        guard.set("zctrl_on", 0.5)
    with pytest.raises(InvalidInputError, match="finite"):
        guard.set("bias_v", float("nan"))
    with pytest.raises(InvalidInputError, match="read-only"):
        guard.set("current_a", 1e-9)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(old=st.floats(-5.0, 5.0, width=32), target=st.floats(-5.0, 5.0))
def test_no_planned_step_exceeds_max_step_or_leaves_the_limits(
    client: NanonisClient, state_server: StateServer, audit: Path, old: float, target: float
) -> None:
    """Invariant: a set plan ends on the target, and every step stays in limits and <= max_step;
    with the Z controller on no step comes nearer 0 V than max_step / 2 (or the end points)."""
    state_server.state["Bias.Get"] = {"bias_v": old}
    guard = make_guard(client, audit)
    if target == 0.0:
        with pytest.raises(PolicyRefusedError, match="0 with the Z controller on"):
            guard.plan_set("bias_v", target)
        return
    plan = guard.plan_set("bias_v", target)
    assert np.float32(plan.old) == np.float32(old) and plan.steps[-1] == target
    for a, b in itertools.pairwise((plan.old, *plan.steps)):
        assert abs(b - a) <= 0.1 * (1 + 1e-6)
        assert -5.0 <= b <= 5.0
    floor = min(0.05, abs(plan.old), abs(target))
    assert min(abs(v) for v in plan.steps) >= floor - 1e-9


def test_an_interrupted_ramp_is_audited_with_the_steps_sent(
    client: NanonisClient, state_server: StateServer, audit: Path
) -> None:
    class InterruptingClock(FakeClock):
        def sleep(self, seconds: float) -> None:
            if len(self.sleeps) == 1:
                raise KeyboardInterrupt
            super().sleep(seconds)

    with pytest.raises(KeyboardInterrupt):
        make_guard(client, audit, InterruptingClock()).set("bias_v", 0.5)
    record = read_audit_log(audit)[-1]
    assert record["outcome"] == "failed" and record["steps_sent"] == 2
    assert "interrupted" in record["reason"]
    assert sets(state_server) == ["Bias.Set", "Bias.Set"]
