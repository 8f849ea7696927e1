"""The bias never passes through 0 V with the Z controller on (issue 15: the README's
`instrument set bias_v -0.3 --allow-writes` crashed the simulated tip), and plans stay finite."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.errors import InvalidInputError, PolicyRefusedError
from atomlab.instrument import NanonisClient, WriteGuard, load_catalog, parse_catalog
from atomlab.sim import Disturbances, SimulatorThread, start_simulator_in_thread

Cli = Callable[..., Any]
CATALOG = load_catalog()


@pytest.fixture
def quiet_sim(tmp_path: Path) -> Iterator[tuple[SimulatorThread, FakeClock]]:
    clock = FakeClock()
    sim = start_simulator_in_thread(
        seed=0, ports=[0], clock=clock, disturbances=Disturbances.none(), tick_interval_s=None,
        session_dir=tmp_path,
    )  # fmt: skip
    yield sim, clock
    sim.stop()


def guard_on(sim: SimulatorThread, clock: FakeClock) -> tuple[WriteGuard, list[float]]:
    client = NanonisClient("127.0.0.1", sim.ports[0]).connect()
    guard = WriteGuard(client, CATALOG, allow_writes=True, clock=clock)
    sent: list[float] = []
    guard.add_listener(lambda e: sent.append(e.value) if hasattr(e, "value") else None)
    clock.advance(0.5)
    return guard, sent


def test_a_bias_sign_change_with_feedback_crosses_0_v_in_one_step_and_the_tip_survives(
    quiet_sim: tuple[SimulatorThread, FakeClock],
) -> None:
    sim, clock = quiet_sim
    guard, sent = guard_on(sim, clock)
    result = guard.set("bias_v", -0.3)
    assert result.plan.steps == pytest.approx((0.05, -0.05, -0.15, -0.25, -0.3))
    assert any("crosses 0 V in one step" in note for note in result.plan.notes)
    assert min(abs(v) for v in sent) >= 0.05 - 1e-9
    assert max(abs(b - a) for a, b in zip([0.1, *sent], sent, strict=False)) <= 0.1 + 1e-9
    clock.advance(2.0)
    assert sim.physics.tip.crashes == 0 and result.readback == pytest.approx(-0.3)
    back = guard.set("bias_v", 0.1)  # and back again
    assert back.plan.steps[:3] == pytest.approx((-0.2, -0.1, -0.05))
    clock.advance(2.0)
    assert sim.physics.tip.crashes == 0


def test_the_old_way_through_0_v_crashes_the_simulated_tip(
    quiet_sim: tuple[SimulatorThread, FakeClock],
) -> None:
    """What the rule prevents: the same steps sent without it dwell at 0 V."""
    sim, clock = quiet_sim
    client = NanonisClient("127.0.0.1", sim.ports[0]).connect()
    clock.advance(0.5)
    for value in (0.0, -0.1, -0.2, -0.3):
        client.call("Bias.Set", {"bias_v": value})
        clock.advance(0.1)
    assert sim.physics.tip.crashes == 1


def test_zero_and_ramps_through_zero_are_refused_with_feedback_and_allowed_without(
    quiet_sim: tuple[SimulatorThread, FakeClock],
) -> None:
    sim, clock = quiet_sim
    guard, sent = guard_on(sim, clock)
    with pytest.raises(PolicyRefusedError, match="0 with the Z controller on"):
        guard.set("bias_v", 0.0)
    with pytest.raises(PolicyRefusedError, match="goes through 0 V"):
        guard.ramp("bias_v", 0.1, -0.1, 0.05, interval_s=0.1)
    with pytest.raises(PolicyRefusedError, match="goes through 0 V"):
        guard.ramp("bias_v", 0.1, 0.0, 0.05, interval_s=0.1)
    assert sent == [] and sim.physics.bias_v == pytest.approx(0.1)
    guard.ramp("bias_v", 0.1, 0.5, 0.1, interval_s=0.1)  # one side of 0 V: fine
    guard.set("bias_v", 0.1)
    clock.advance(1.5)  # the Z controller's cooldown (1 s)
    guard.set("zctrl_on", 0)
    result = guard.ramp("bias_v", 0.1, -0.1, 0.05, interval_s=0.1)  # feedback off: allowed
    assert result.outcome == "done" and 0.0 in result.plan.steps
    assert sim.physics.tip.crashes == 0


def test_a_ramp_with_a_tiny_step_is_refused_at_once_instead_of_hanging(
    quiet_sim: tuple[SimulatorThread, FakeClock],
) -> None:
    sim, clock = quiet_sim
    guard, _ = guard_on(sim, clock)
    started = time.monotonic()
    with pytest.raises(InvalidInputError, match="1e\\+08 steps"):
        guard.ramp("bias_v", 0.1, 0.2, 1e-9, interval_s=0.0)
    assert time.monotonic() - started < 30  # a bound for a hang, not a timing assertion


def test_the_cli_ramp_with_a_tiny_step_exits_3(cli: Cli, sim: SimulatorThread) -> None:
    result = cli(
        "instrument", "ramp", "bias_v", "0.1", "0.2", "1e-9", "--plan-only",
        "--port", str(sim.ports[0]), "--json",
    )  # fmt: skip
    assert result.exit_code == 3 and "steps" in result.json["error"]["message"]


def test_the_readme_bias_change_no_longer_crashes_the_tip(cli: Cli, sim: SimulatorThread) -> None:
    result = cli(
        "instrument", "set", "bias_v", "-0.3", "--allow-writes", "--port", str(sim.ports[0]),
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout
    assert min(abs(v) for v in result.json["plan"]["steps"]) >= 0.05 - 1e-9
    assert sim.call(lambda: sim.physics.tip.crashes) == 0


def test_the_watched_entry_must_exist_in_the_catalog() -> None:
    from importlib import resources

    import yaml

    from atomlab.core.errors import ConfigError

    data = yaml.safe_load(
        resources.files("atomlab.instrument").joinpath("catalog.yaml").read_text("utf-8")
    )
    data["specs"][0]["safety"]["zero_unsafe_while"] = "no_such_entry"
    with pytest.raises(ConfigError, match="no_such_entry"):
        parse_catalog(data)
