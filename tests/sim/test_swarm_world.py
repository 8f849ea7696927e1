"""The swarm simulator's world: motion, heat, repairs, faults and the ground-truth log."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.errors import InvalidInputError
from atomlab.sim.swarm_wire import CommandPayload, CommandResultPayload, GridPoint
from atomlab.sim.swarm_world import (
    FaultConfig,
    FaultInjector,
    GroundTruthLog,
    SwarmConfig,
    SwarmWorld,
    read_ground_truth,
)
from atomlab.surface import Defect, DefectKind, Lattice, Surface

CALM = {"drift_prob": 0.0, "repair_success_prob": 1.0, "severity_penalty": 0.0}


def world_with_defect(tmp_path: Path, **config: Any) -> SwarmWorld:
    """4 agents on 20 x 20 nm (agent-00 starts at 6.7, 6.7 nm); one defect at 9.0, 6.0 nm."""
    surface = Surface(Lattice(200, 200), [Defect(1, DefectKind.ADATOM, 90, 60, 5)])
    settings = {"agents": 4, "seed": 1, **CALM, **config}
    return SwarmWorld(
        SwarmConfig(**settings), surface=surface, ground_truth=GroundTruthLog(tmp_path / "gt.jsonl")
    )


def cmd(n: int, action: str, x: float, y: float, agent: str = "agent-00", **kw: Any) -> Any:
    return CommandPayload(
        command_id=f"c{n}", agent_id=agent, action=action, target=GridPoint(x=x, y=y), **kw
    )


def run_until_done(world: SwarmWorld, key: str, max_s: float = 60.0) -> list[CommandResultPayload]:
    results: list[CommandResultPayload] = []
    while world.t < max_s:
        for event in world.step():
            if isinstance(event, CommandResultPayload) and event.idempotency_key == key:
                results.append(event)
                if event.status != "processing":
                    return results
    raise AssertionError(f"{key} did not finish within {max_s} s: {results}")


def test_an_agent_moves_at_its_finite_speed(tmp_path: Path) -> None:
    world = world_with_defect(tmp_path, speed_nm_s=2.0)
    world.submit(cmd(1, "move", 8.7, 6.7), "k1")  # 2 nm to the right
    for _ in range(5):
        world.step(0.1)
    halfway = world.status().agents[0]
    assert halfway.status == "moving"
    assert halfway.position.x == pytest.approx(7.7, abs=0.05)
    results = run_until_done(world, "k1")
    assert results[-1].status == "completed"
    assert results[-1].position is not None and results[-1].position.x == pytest.approx(8.7)
    assert world.t == pytest.approx(1.0, abs=0.15)


def test_a_successful_repair_heats_the_agent_and_removes_the_defect(tmp_path: Path) -> None:
    world = world_with_defect(tmp_path, heat_rate_c_s=20.0, repair_s=2.0)
    world.submit(cmd(1, "repair", 9.0, 6.0), "k1")
    done = run_until_done(world, "k1")[-1]
    assert (done.status, done.repaired) == ("completed", True)
    assert done.temperature_c is not None and done.temperature_c > 55.0
    assert world.surface.defects == ()
    for _ in range(100):
        world.step(0.1)
    assert world.status().agents[0].temperature_c < done.temperature_c - 10
    world.submit(cmd(2, "scan", 9.0, 6.0), "k2")
    assert run_until_done(world, "k2")[-1].defect_present is False


def test_a_repair_over_its_thermal_budget_is_aborted(tmp_path: Path) -> None:
    world = world_with_defect(tmp_path)
    world.submit(cmd(1, "repair", 9.0, 6.0, thermal_budget_c=40.0), "k1")
    done = run_until_done(world, "k1")[-1]
    assert (done.status, done.reason) == ("failed", "thermal_budget_exceeded")
    assert len(world.surface.defects) == 1


def test_a_failed_repair_leaves_the_defect_for_the_scan_to_find(tmp_path: Path) -> None:
    world = world_with_defect(tmp_path, repair_success_prob=0.0, silent_failure_fraction=0.0)
    world.submit(cmd(1, "repair", 9.0, 6.0), "k1")
    done = run_until_done(world, "k1")[-1]
    assert (done.status, done.reason) == ("failed", "repair_failed")
    world.submit(cmd(2, "scan", 9.0, 6.0), "k2")
    assert run_until_done(world, "k2")[-1].defect_present is True


def test_a_repeated_idempotency_key_runs_once_and_replays_its_result(tmp_path: Path) -> None:
    world = world_with_defect(tmp_path)
    assert world.submit(cmd(1, "move", 8.0, 6.7), "k1") == []
    assert world.submit(cmd(1, "move", 8.0, 6.7), "k1") == []  # still running: nothing new
    done = run_until_done(world, "k1")[-1]
    assert world.submit(cmd(1, "move", 8.0, 6.7), "k1") == [done]
    world.close()
    executions = [r for r in read_ground_truth(tmp_path / "gt.jsonl") if r["kind"] == "execute"]
    assert [r["key"] for r in executions] == ["k1"]


def test_a_repeat_answered_from_the_record_says_where_the_agent_is_now(tmp_path: Path) -> None:
    """A service restarted after a crash resends a command the agent finished long ago; the
    replayed answer must not send the service back to the old position (it parks the agent
    there and plans other paths around a place the agent has left)."""
    world = world_with_defect(tmp_path)
    world.submit(cmd(1, "move", 8.0, 6.7), "k1")
    first = run_until_done(world, "k1")[-1]
    world.submit(cmd(2, "move", 8.0, 12.0), "k2")
    run_until_done(world, "k2")
    [again] = world.submit(cmd(1, "move", 8.0, 6.7), "k1")
    assert (again.status, again.idempotency_key) == (first.status, "k1")
    assert first.position is not None and first.position.y == pytest.approx(6.7)
    assert again.position is not None and again.position.y == pytest.approx(12.0)
    world.close()
    executions = [r for r in read_ground_truth(tmp_path / "gt.jsonl") if r["kind"] == "execute"]
    assert [r["key"] for r in executions] == ["k1", "k2"]


def test_halt_stops_an_agent_and_fails_its_commands(tmp_path: Path) -> None:
    world = world_with_defect(tmp_path)
    world.submit(cmd(1, "move", 16.0, 6.7), "k1")
    world.step()
    world.step()
    results = world.submit(
        CommandPayload(command_id="h", agent_id="agent-00", action="halt"), "halt-1"
    )
    assert [(r.idempotency_key, r.status, r.reason) for r in results] == [
        ("k1", "failed", "halted"),
        ("halt-1", "completed", None),
    ]
    where = world.status().agents[0].position.x
    world.step()
    assert world.status().agents[0].position.x == where
    assert world.status().agents[0].status == "halted"


def test_a_stuck_command_never_finishes_until_halted(tmp_path: Path) -> None:
    world = world_with_defect(tmp_path, faults=FaultConfig(stuck_prob=1.0))
    world.submit(cmd(1, "move", 8.0, 6.7), "k1")
    seen = [e for _ in range(200) for e in world.step() if isinstance(e, CommandResultPayload)]
    assert [e.status for e in seen] == ["processing"]
    assert world.status().agents[0].status == "stuck"
    halt = CommandPayload(command_id="h", agent_id="agent-00", action="halt")
    assert world.submit(halt, "h")[0].reason == "halted"


def test_dead_agents_stop_reporting_and_never_answer(tmp_path: Path) -> None:
    faults = FaultConfig(agent_death_rate_per_s=100.0, max_dead_agents=1)
    world = world_with_defect(tmp_path, faults=faults)
    world.step()
    assert len(world.alive()) == 3
    (dead,) = set(world.agents) - set(world.alive())
    assert world.submit(cmd(1, "move", 1.0, 1.0, agent=dead), "k1") == []
    for _ in range(50):
        assert not any(isinstance(e, CommandResultPayload) for e in world.step())
    assert dead not in {a.agent_id for a in world.status().agents}


def test_agents_closer_than_the_separation_are_reported_and_halted(tmp_path: Path) -> None:
    world = world_with_defect(tmp_path)
    world.submit(cmd(1, "move", 10.0, 6.7, agent="agent-00"), "k1")
    world.submit(cmd(2, "move", 10.2, 6.7, agent="agent-01"), "k2")
    events = [e for _ in range(60) for e in world.step()]
    alerts = [e for e in events if not isinstance(e, CommandResultPayload)]
    assert len(alerts) == 1
    assert alerts[0].distance_nm < 0.5
    assert {e.reason for e in events if isinstance(e, CommandResultPayload)} >= {"proximity_halt"}
    world.close()
    records = read_ground_truth(tmp_path / "gt.jsonl")
    assert [r["agents"] for r in records if r["kind"] == "violation"] == [["agent-00", "agent-01"]]
    assert records[-1]["kind"] == "summary" and records[-1]["violations"] == 1


def test_separation_is_checked_along_the_path_not_only_at_tick_ends(tmp_path: Path) -> None:
    world = world_with_defect(tmp_path, speed_nm_s=100.0)
    # agent-00 (6.7, 6.7) and agent-01 (13.3, 6.7) swap places within one long tick.
    world.submit(cmd(1, "move", 13.3, 6.7, agent="agent-00"), "k1")
    world.submit(cmd(2, "move", 6.7, 6.7, agent="agent-01"), "k2")
    world.step(0.1)  # both start
    world.step(0.1)
    assert world.violations == 1
    assert world.min_separation_nm is not None and world.min_separation_nm < 0.5


def test_arrival_drift_stays_within_one_lattice_step(tmp_path: Path) -> None:
    world = world_with_defect(tmp_path, drift_prob=1.0, drift_max_units=1)
    world.submit(cmd(1, "move", 8.0, 8.0), "k1")
    done = run_until_done(world, "k1")[-1]
    assert done.position is not None
    off = math.hypot(done.position.x - 8.0, done.position.y - 8.0)
    assert off == pytest.approx(0.1)


def scripted_run(path: Path, seed: int) -> list[dict[str, Any]]:
    faults = FaultConfig(agent_death_rate_per_s=0.05, max_dead_agents=2, stuck_prob=0.2)
    config = SwarmConfig(agents=6, seed=seed, defects=8, drift_prob=0.3, faults=faults)
    world = SwarmWorld(config, ground_truth=GroundTruthLog(path))
    for i, defect in enumerate(world.surface.defects):
        agent = f"agent-{i % 6:02d}"
        target = GridPoint.from_units(defect.x, defect.y)
        world.submit(CommandPayload(command_id=f"c{i}", agent_id=agent, action="repair",
                                    target=target), f"k{i}")  # fmt: skip
    for _ in range(400):
        world.step()
    world.close()
    return read_ground_truth(path)


def test_the_same_seed_gives_the_same_ground_truth(tmp_path: Path) -> None:
    first = scripted_run(tmp_path / "a.jsonl", seed=7)
    second = scripted_run(tmp_path / "b.jsonl", seed=7)
    other = scripted_run(tmp_path / "c.jsonl", seed=8)
    assert first == second
    assert first != other
    kinds = {r["kind"] for r in first}
    assert {"meta", "tick", "execute", "result", "repair", "summary"} <= kinds


def test_fault_decisions_depend_only_on_the_seed() -> None:
    config = FaultConfig(drop_prob=0.3, duplicate_prob=0.2, ack_loss_prob=0.1, stuck_prob=0.5)

    def decisions(seed: int, interleave: bool) -> list[bool]:
        faults = FaultInjector(config, seed)
        drops = []
        for _ in range(200):
            if interleave:
                faults.duplicate()  # asking about another fault must not shift the drops
            drops.append(faults.drop())
        return drops

    assert decisions(3, False) == decisions(3, True)
    assert decisions(3, False) != decisions(4, False)
    assert 30 < sum(decisions(3, False)) < 90


def test_disconnects_on_a_fixed_period() -> None:
    faults = FaultInjector(FaultConfig(disconnect_every_s=5.0), seed=0)
    cuts = [round(t * 0.1, 1) for t in range(1, 201) if faults.disconnect(t * 0.1, 0.1)]
    assert cuts == [5.0, 10.0, 15.0, 20.0]


@pytest.mark.parametrize(
    ("field", "value"),
    [("agents", 0), ("speed_nm_s", 0.0), ("drift_prob", 1.5)],
)
def test_bad_settings_name_the_field(field: str, value: Any) -> None:
    with pytest.raises(InvalidInputError) as refused:
        SwarmConfig(**{field: value})
    assert refused.value.details["field"] == field


def test_too_many_agents_for_the_surface_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="do not fit"):
        SwarmWorld(SwarmConfig(agents=400, width_nm=2.0, height_nm=2.0, defects=0))


def test_a_log_cut_short_by_a_killed_run_still_reads(tmp_path: Path) -> None:
    world = world_with_defect(tmp_path)
    world.step()
    world.close()
    path = tmp_path / "gt.jsonl"
    whole = read_ground_truth(path)
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"kind": "tick", "t": 0.2, "posi')
    assert read_ground_truth(path) == whole
    path.write_text("not json\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(InvalidInputError, match="line 1"):
        read_ground_truth(path)


def test_a_killed_world_resumes_from_its_log_without_rerunning_anything(tmp_path: Path) -> None:
    config = SwarmConfig(agents=4, seed=1, defects=3, **CALM)
    path = tmp_path / "gt.jsonl"
    world = SwarmWorld(config, ground_truth=GroundTruthLog(path))
    first = world.surface.defects[0]
    world.submit(cmd(1, "repair", first.x / 10, first.y / 10), "done")
    finished = run_until_done(world, "done")[-1]
    world.submit(cmd(2, "move", 1.0, 1.0, agent="agent-01"), "cut")
    for _ in range(5):
        world.step()
    where = world.status().agents[1].position
    world.ground_truth.flush()  # the process dies here: no close, no summary

    again = SwarmWorld.resume(config, path)
    assert first.id not in {d.id for d in again.surface.defects}
    assert again.status().agents[1].position.x == pytest.approx(where.x, abs=1e-3)
    [replayed] = again.submit(cmd(1, "repair", first.x / 10, first.y / 10), "done")
    now = {"position", "temperature_c"}  # a replay says where the agent is now, and how hot
    assert replayed.model_dump(exclude=now) == finished.model_dump(exclude=now)
    (cut,) = again.submit(cmd(2, "move", 1.0, 1.0, agent="agent-01"), "cut")
    assert (cut.status, cut.reason) == ("failed", "simulator_restarted")
    again.submit(cmd(3, "move", 8.0, 6.7), "new")
    assert run_until_done(again, "new")[-1].status == "completed"
    again.close()
    records = read_ground_truth(path)
    keys = [r["key"] for r in records if r["kind"] == "execute"]
    assert keys == ["done", "cut", "new"]
    assert [r["kind"] for r in records].count("resume") == 1


def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gt.jsonl"
    SwarmWorld(SwarmConfig(agents=4, seed=1), ground_truth=GroundTruthLog(path)).close()
    with pytest.raises(InvalidInputError, match="another world"):
        SwarmWorld.resume(SwarmConfig(agents=4, seed=2), path)
