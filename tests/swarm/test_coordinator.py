"""The coordinator with simulated link events: properties 5, 6, 9, 15 (halt), 16, 17, 20, 21,
22, the closed repair loop and failure detection."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from atomlab.core.clock import FakeClock
from atomlab.swarm.models import Action, AgentStatus, CommandStatus, DefectStatus
from atomlab.swarm.reservations import min_clearance
from tests.swarm.harness import (
    PROPERTY,
    Sent,
    agents_up,
    coordinator,
    finish,
    finish_all,
    ingest_and_plan,
    reading,
    repair_cycle,
    result,
)

FOUR = {"a0": (1.0, 1.0), "a1": (19.0, 1.0), "a2": (1.0, 19.0), "a3": (19.0, 19.0)}


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_property_5_pipeline_integrity_coordinate_reaches_the_link_with_its_correlation_id() -> (
    None
):
    """Property 5: valid coordinate → queued → planned → command → link, one correlation id."""
    coord = coordinator()
    sent = Sent()
    coord.send = sent
    agents_up(coord, {"a0": (0.0, 0.0)})
    ingest_and_plan(coord, [reading(5.0, 5.0)], cid="corr-42")
    [command] = coord.dispatch_round()
    seen: list[str | None] = []

    async def capture(payload: dict[str, object], *, idempotency_key: str) -> None:
        from atomlab.core.logging import current_correlation_id

        seen.append(current_correlation_id())
        await sent(payload, idempotency_key=idempotency_key)

    coord.send = capture
    asyncio.run(coord.flush_outbox())
    assert command.correlation_id == "corr-42"
    assert seen == ["corr-42"]
    assert sent.payloads[0]["target"] == {"x": 5.0, "y": 5.0, "z": 0.0}
    assert sent.keys == [command.command_id]


@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(0, 200), st.integers(0, 200), st.integers(1, 10)),
        min_size=1,
        max_size=12,
    )
)
def test_property_6_repair_path_structure_every_command_names_agent_target_action_and_budget(
    rows: list[tuple[int, int, int]],
) -> None:
    """Property 6: every command carries agent id, x/y/z on the grid, action and thermal budget."""
    coord = coordinator()
    agents_up(coord, FOUR)
    ingest_and_plan(coord, [reading(x / 10, y / 10, s) for x, y, s in rows])
    for command in coord.dispatch_round():
        payload = coord.wire_payload(command)
        assert payload["agent_id"] in FOUR
        assert payload["action"] in {"move", "repair", "scan"}
        assert set(payload["target"]) == {"x", "y", "z"}
        assert all(round(v * 10) == v * 10 for v in payload["target"].values())
        assert 0 < payload["thermal_budget_c"] <= 120.0


def test_property_9_status_tracking_pending_in_progress_completed_and_nothing_else() -> None:
    """Property 9: a command is pending until acknowledged, then in progress, then final."""
    coord = coordinator()
    agents_up(coord, {"a0": (0.0, 0.0)})
    ingest_and_plan(coord, [reading(3.0, 3.0)])
    [command] = coord.dispatch_round()
    assert coord.book.get(command.command_id).status is CommandStatus.PENDING
    coord.handle_event("command_delivered", {"command_id": command.command_id})
    assert command.status is CommandStatus.IN_PROGRESS
    result(coord, command.command_id, "completed")
    assert command.status is CommandStatus.COMPLETED
    result(coord, command.command_id, "failed")  # a late contradiction changes nothing
    assert command.status is CommandStatus.COMPLETED


def test_closed_loop_a_repair_counts_only_when_the_rescan_finds_the_defect_gone() -> None:
    coord = coordinator(retry_budget=2)
    agents_up(coord, {"a0": (0.0, 0.0)})
    [defect_id] = ingest_and_plan(coord, [reading(4.0, 4.0)]).defect_ids
    [repair] = coord.dispatch_round()
    repair_cycle(coord, repair.command_id, gone=False)
    defect = coord.defects[defect_id]
    assert defect.status is DefectStatus.REPAIRING and defect.attempts == 1
    retry = coord.jobs["a0"].command_id
    assert coord.book.get(retry).action is Action.REPAIR
    repair_cycle(coord, retry, gone=False)
    assert defect.status is DefectStatus.FAILED
    assert "gave up after 2" in (defect.reason or "")
    assert "a0" not in coord.jobs

    [other] = ingest_and_plan(coord, [reading(8.0, 8.0)]).defect_ids
    [repair] = coord.dispatch_round()
    repair_cycle(coord, repair.command_id, gone=True)
    assert coord.defects[other].status is DefectStatus.COMPLETED
    registry = coord.metrics.registry
    assert _sample(registry, "atomlab_swarm_defects_total", outcome="repaired") == 1
    assert _sample(registry, "atomlab_swarm_defects_total", outcome="failed") == 1


def test_property_16_unrepairable_defects_never_produce_a_command() -> None:
    """Property 16: a defect in a no-go zone is marked unrepairable and excluded from commands."""
    coord = coordinator(no_go_zones=[{"x": [6.0, 6.5], "y": [3.0, 4.0]}])
    agents_up(coord, {"a0": (0.0, 0.0)})
    ids = ingest_and_plan(coord, [reading(6.2, 3.5, 10), reading(2.0, 2.0, 1)]).defect_ids
    assert coord.defects[ids[0]].status is DefectStatus.UNREPAIRABLE
    assert "no-go zone" in (coord.defects[ids[0]].reason or "")
    [command] = coord.dispatch_round()
    assert command.defect_id == ids[1]
    assert coord.book.select(defect_id=ids[0]) == []


def test_duplicates_of_an_active_defect_are_not_queued_twice() -> None:
    coord = coordinator()
    first = ingest_and_plan(coord, [reading(2.0, 2.0)])
    again = ingest_and_plan(coord, [reading(2.0, 2.0), reading(2.0, 2.0, kind="adatom")])
    assert again.duplicates == 1
    assert again.defect_ids[0] == first.defect_ids[0]
    assert len(coord.queue) == 2


@PROPERTY
@given(
    st.lists(
        st.sampled_from(["repaired", "failed_scan", "unrepairable", "duplicate"]),
        min_size=1,
        max_size=10,
    )
)
def test_property_17_metrics_tracking_every_outcome_moves_its_counter(outcomes: list[str]) -> None:
    """Property 17: each repair outcome moves exactly its own counter; pending tracks the rest."""
    coord = coordinator(retry_budget=1, no_go_zones=[{"x": [19.0, 20.0], "y": [19.0, 20.0]}])
    agents_up(coord, {"a0": (0.0, 0.0)})
    expected = {"repaired": 0, "failed": 0, "unrepairable": 0, "duplicate": 0}
    for i, outcome in enumerate(outcomes):
        if outcome == "unrepairable":
            ingest_and_plan(coord, [reading(19.5, 19.5, kind=f"k{i}")])
            expected["unrepairable"] += 1
            continue
        ingest_and_plan(coord, [reading(1.0 + i, 2.0, kind=f"k{i}")])
        if outcome == "duplicate":
            ingest_and_plan(coord, [reading(1.0 + i, 2.0, kind=f"k{i}")])
            expected["duplicate"] += 1
        [command] = coord.dispatch_round()
        repair_cycle(coord, command.command_id, gone=outcome != "failed_scan")
        expected["failed" if outcome == "failed_scan" else "repaired"] += 1
    registry = coord.metrics.registry
    for name, count in expected.items():
        assert _sample(registry, "atomlab_swarm_defects_total", outcome=name) == count
    assert _sample(registry, "atomlab_swarm_pending_operations") == 0


def test_property_20_command_queue_assignment_a_finished_agent_gets_the_next_command_at_once() -> (
    None
):
    """Property 20: when an agent completes and work is queued, the same event round assigns it."""
    coord = coordinator()
    agents_up(coord, {"a0": (0.0, 0.0)})
    ingest_and_plan(coord, [reading(2.0, 2.0, 9), reading(6.0, 6.0, 3)])
    [first] = coord.dispatch_round()
    repair_cycle(coord, first.command_id, gone=True)
    [second] = coord.dispatch_round()
    assert second.agent_id == "a0" and second.defect_id != first.defect_id


def test_property_21_agent_state_tracking_position_status_temperature_and_last_update() -> None:
    """Property 21: every agent's position, status, temperature and last update are tracked."""
    clock = FakeClock()
    coord = coordinator(clock)
    agents_up(coord, {"a0": (0.0, 0.0), "a1": (5.0, 5.0)})
    clock.advance(3.0)
    coord.handle_event(
        "agent_status",
        {
            "t_s": 3.0,
            "agents": [
                {
                    "agent_id": "a0",
                    "position": {"x": 1.23, "y": 0.5},
                    "status": "moving",
                    "temperature_c": 61.5,
                },
                {
                    "agent_id": "a1",
                    "position": {"x": 5.0, "y": 5.0},
                    "status": "idle",
                    "temperature_c": 30.0,
                },
            ],
        },
    )
    a0 = coord.agents["a0"]
    assert a0.position.nm() == (1.2, 0.5, 0.0)
    assert a0.status is AgentStatus.MOVING and a0.temperature_c == 61.5
    assert a0.last_update == clock.now() and a0.last_heartbeat == 3.0


def _heartbeat(coord, clock: FakeClock, alive: list[str], seconds: float) -> None:  # type: ignore[no-untyped-def]
    clock.advance(seconds)
    coord.handle_event("heartbeat", {"role": "simulator", "sent_at": "", "agents_alive": alive})


def test_property_22_a_silent_agent_is_failed_after_3_missed_beats_and_its_work_reassigned() -> (
    None
):
    """Property 22: an agent silent past 3 heartbeat intervals loses all its pending work."""
    clock = FakeClock()
    coord = coordinator(clock, heartbeat_interval_s=10.0, missed_heartbeats=3)
    agents_up(coord, {"a0": (0.0, 0.0), "a1": (10.0, 0.0)})
    [defect_id] = ingest_and_plan(coord, [reading(2.0, 0.0)]).defect_ids
    [command] = coord.dispatch_round()
    assert command.agent_id == "a0"
    for _ in range(2):
        _heartbeat(coord, clock, ["a1"], 10.0)
        assert coord.check_agents() == []
    _heartbeat(coord, clock, ["a1"], 10.5)
    assert coord.check_agents() == ["a0"]
    assert coord.agents["a0"].status is AgentStatus.DEAD
    assert command.status is CommandStatus.FAILED
    [again] = coord.dispatch_round()
    assert again.agent_id == "a1" and again.defect_id == defect_id
    assert again.command_id != command.command_id  # a new key: never "the same command twice"
    registry = coord.metrics.registry
    assert _sample(registry, "atomlab_swarm_reassignments_total") == 1
    assert _sample(registry, "atomlab_swarm_reassignment_seconds_count") == 1


def test_no_failure_is_declared_while_the_link_is_down() -> None:
    clock = FakeClock()
    up = {"value": False}
    coord = coordinator(clock)
    coord._link_connected = lambda: up["value"]
    agents_up(coord, {"a0": (0.0, 0.0)})
    clock.advance(1000.0)
    assert coord.check_agents() == []
    up["value"] = True
    agents_up(coord, {"a0": (0.0, 0.0)})  # reconnect: the handshake counts as a sign of life
    assert coord.check_agents() == []


def test_a_stuck_command_times_out_and_its_defect_goes_to_another_agent() -> None:
    clock = FakeClock()
    coord = coordinator(clock, command_timeout_s=30.0, heartbeat_interval_s=10.0)
    agents_up(coord, {"a0": (0.0, 0.0), "a1": (15.0, 0.0)})
    ingest_and_plan(coord, [reading(3.0, 0.0)])
    [command] = coord.dispatch_round()
    for _ in range(4):
        _heartbeat(coord, clock, ["a0", "a1"], 8.0)
    assert coord.check_agents() == [command.agent_id]
    assert coord.agents[command.agent_id].status is AgentStatus.ERROR
    assert coord.check_agents() == []  # failed once, not again on every check
    # Until its halt lands the stuck agent may still be moving: its path stays reserved.
    assert coord.dispatch_round() == []
    halted = {
        "agent_id": "a0",
        "position": {"x": 1.0, "y": 0.0},
        "status": "halted",
        "temperature_c": 25,
    }
    coord.handle_event("agent_status", {"t_s": 0, "agents": [halted]})
    [again] = coord.dispatch_round()
    assert again.agent_id == "a1" and again.defect_id == command.defect_id


def test_an_agent_running_a_command_the_service_never_recorded_is_halted() -> None:
    """After a crash the last commands sent may be missing from the database while the
    simulator runs them: an agent on such an unreserved path is stopped, not planned around."""
    coord = coordinator()
    sent = Sent()
    coord.send = sent
    agents_up(coord, {"a0": (1.0, 1.0), "a1": (10.0, 10.0)})
    moving = {
        "agent_id": "a0",
        "position": {"x": 2.0, "y": 1.0},
        "status": "moving",
        "temperature_c": 25,
        "current_command_id": "cmd-lost-in-the-crash",
    }
    coord.handle_event("agent_status", {"agents": [moving]})
    coord.handle_event("agent_status", {"agents": [moving]})  # one halt, not one per report
    asyncio.run(coord.flush_outbox())
    assert [p["agent_id"] for p in sent.payloads if p["action"] == "halt"] == ["a0"]
    assert coord.agents["a0"].status is AgentStatus.ERROR
    ingest_and_plan(coord, [reading(3.0, 1.0)])
    [command] = coord.dispatch_round()
    assert command.agent_id == "a1"  # a0 is out of service until its halt lands
    halted = {**moving, "status": "halted", "current_command_id": None}
    coord.handle_event("agent_status", {"agents": [halted]})
    assert coord.agents["a0"].status is AgentStatus.IDLE


def test_property_15_collision_prevention_a_proximity_report_halts_all_movement() -> None:
    """Property 15: two agents reported closer than 0.5 nm → halt; no movement commands after."""
    coord = coordinator()
    sent = Sent()
    coord.send = sent
    agents_up(coord, {"a0": (0.0, 0.0), "a1": (10.0, 10.0)})
    coord.handle_event(
        "agent_status",
        {
            "t_s": 1.0,
            "agents": [
                {
                    "agent_id": "a0",
                    "position": {"x": 5.0, "y": 5.0},
                    "status": "idle",
                    "temperature_c": 25,
                },
                {
                    "agent_id": "a1",
                    "position": {"x": 5.3, "y": 5.0},
                    "status": "idle",
                    "temperature_c": 25,
                },
            ],
        },
    )
    assert coord.halted
    asyncio.run(coord.flush_outbox())
    assert sorted(p["agent_id"] for p in sent.payloads if p["action"] == "halt") == ["a0", "a1"]
    ingest_and_plan(coord, [reading(15.0, 15.0)])
    assert coord.dispatch_round() == []
    coord.resume()
    assert len(coord.dispatch_round()) == 1


def test_thermal_tracking_a_hot_agent_is_not_given_a_repair() -> None:
    coord = coordinator(repair_thermal_budget_c=95.0)
    agents_up(coord, {"hot": (0.0, 0.0), "cool": (15.0, 15.0)})
    coord.handle_event(
        "agent_status",
        {
            "t_s": 0,
            "agents": [
                {
                    "agent_id": "hot",
                    "position": {"x": 0, "y": 0},
                    "status": "idle",
                    "temperature_c": 90.0,
                }
            ],
        },
    )
    ingest_and_plan(coord, [reading(0.5, 0.5)])
    [command] = coord.dispatch_round()
    assert command.agent_id == "cool"


@PROPERTY
@given(
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 200)), min_size=1, max_size=25),
    st.lists(st.integers(0, 3), max_size=30),
)
def test_planned_paths_of_the_swarm_never_come_within_the_clearance(
    defects: list[tuple[int, int]], finishing: list[int]
) -> None:
    """Safety first: across dispatch rounds and completions, the reserved swept paths of any
    two agents stay at least 0.5 nm + margin apart (so do their active targets, property 19)."""
    coord = coordinator()
    agents_up(coord, FOUR)
    ingest_and_plan(
        coord, [reading(x / 10, y / 10, kind=f"k{i}") for i, (x, y) in enumerate(defects)]
    )
    coord.dispatch_round()
    for index in finishing:
        finish(coord, f"a{index}")
        coord.dispatch_round()
        assert min_clearance(coord.reservations.reservations()) >= coord.limits.clearance_units
    targets = [coord.defects[j.defect_id].position for j in coord.jobs.values() if j.defect_id]
    assert all(a.distance(b) >= 5.0 for i, a in enumerate(targets) for b in targets[i + 1 :])


def test_stale_position_reports_never_shrink_the_path_an_agent_still_travels() -> None:
    """Safety under reconnects: a handshake or late report placing a moving agent back at its
    start must not free the rest of its path for another agent (a found bug, kept as a test)."""
    coord = coordinator()
    agents_up(coord, {"a0": (1.0, 1.0), "a1": (19.0, 10.0)})
    ingest_and_plan(coord, [reading(19.0, 1.0, 9)])
    [first] = coord.dispatch_round()
    assert first.agent_id == "a0"  # a0 travels (1, 1) -> (19, 1)
    agents_up(coord, {"a0": (1.0, 1.0), "a1": (19.0, 10.0)})  # reconnect: a stale a0 position
    coord.handle_event(
        "agent_status",
        {
            "t_s": 1,
            "agents": [
                {
                    "agent_id": "a0",
                    "position": {"x": 1.0, "y": 1.0},
                    "status": "moving",
                    "temperature_c": 25,
                }
            ],
        },
    )
    ingest_and_plan(coord, [reading(10.0, 1.2, 5)])  # on a0's path
    assert coord.dispatch_round() == []
    reservation = coord.reservations.get("a0")
    assert reservation is not None and reservation.end == (190.0, 10.0, 0.0)


def test_a_retry_after_a_failure_on_the_way_reserves_the_rest_of_the_path() -> None:
    """A repair cut off before the agent arrived (the simulator restarted) is retried from
    where the agent stands: that path must be reserved like any move, or another agent's path
    can be planned across it (found end to end: two agents 0.44 nm apart, E-stop)."""
    coord = coordinator()
    agents_up(coord, {"a0": (14.1, 13.4), "a1": (10.2, 14.0)})
    ingest_and_plan(coord, [reading(14.8, 11.6, 9)])
    [first] = coord.dispatch_round()
    assert first.agent_id == "a0"
    # cut off on the way, reported from where it stands
    on_the_way = {"x": 14.1, "y": 13.4, "z": 0.0}
    result(coord, first.command_id, "failed", reason="simulator_restarted", position=on_the_way)
    retry = coord.jobs["a0"].command_id
    assert coord.book.get(retry).action is Action.REPAIR
    reservation = coord.reservations.get("a0")
    assert reservation is not None and reservation.end == (148.0, 116.0, 0.0)
    ingest_and_plan(coord, [reading(19.8, 8.0, 5)])  # a1's way there passes 0.44 nm from a0's
    assert coord.dispatch_round() == []
    assert min_clearance(coord.reservations.reservations()) >= coord.limits.clearance_units


@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(0, 200), st.integers(0, 200)), min_size=1, max_size=6, unique=True
    ),
    st.text(alphabet="abcdef0123456789", min_size=4, max_size=16),
)
def test_property_5_pipeline_integrity_every_valid_batch_reaches_the_link_under_its_id(
    sites: list[tuple[int, int]], cid: str
) -> None:
    """Property 5: every valid coordinate of a batch is queued, planned and turned into a
    command handed to the link, all under the batch's correlation id."""
    coord = coordinator()
    sent = Sent()
    coord.send = sent
    agents_up(coord, {f"a{i}": (float(i), 0.0) for i in range(len(sites))})
    ids = ingest_and_plan(
        coord, [reading(x / 10, y / 10, kind=f"k{i}") for i, (x, y) in enumerate(sites)], cid=cid
    ).defect_ids
    issued: list[str] = []
    for _ in range(3 * len(sites)):
        issued += [c.defect_id for c in coord.dispatch_round() if c.defect_id]
        finish_all(coord)
    asyncio.run(coord.flush_outbox())
    assert sorted(set(issued)) == sorted(ids)
    assert all(coord.book.get(key).correlation_id == cid for key in sent.keys)
    assert {p["defect_id"] for p in sent.payloads if p["action"] != "move"} == set(ids)


@PROPERTY
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a0", "a1", "a2"]),
            st.integers(0, 200),
            st.integers(0, 200),
            st.sampled_from(["idle", "moving", "repairing", "stuck"]),
            st.floats(20, 119, allow_nan=False),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_property_21_agent_state_tracking_reflects_the_latest_report_of_every_agent(
    reports: list[tuple[str, int, int, str, float]],
) -> None:
    """Property 21: each agent's queryable position, status, temperature and last update are
    those of its latest report."""
    clock = FakeClock()
    coord = coordinator(clock)
    latest: dict[str, tuple[int, int, str, float, float]] = {}
    for agent, x, y, status, temp in reports:
        clock.advance(0.5)
        coord.handle_event(
            "agent_status",
            {
                "t_s": 0,
                "agents": [
                    {
                        "agent_id": agent,
                        "position": {"x": x / 10, "y": y / 10},
                        "status": status,
                        "temperature_c": temp,
                    }
                ],
            },
        )
        latest[agent] = (x, y, status, temp, clock.monotonic())
    for agent, (x, y, status, temp, at) in latest.items():
        state = coord.agents[agent]
        assert (state.position.x, state.position.y) == (x, y)
        expected = {
            "idle": AgentStatus.IDLE,
            "moving": AgentStatus.MOVING,
            "repairing": AgentStatus.REPAIRING,
            "stuck": AgentStatus.ERROR,
        }
        assert state.status is expected[status]
        assert state.temperature_c == temp and state.last_heartbeat == at


def test_idle_agents_parked_around_a_defect_step_aside_so_it_can_be_reached() -> None:
    """Two idle agents 1 nm apart with a defect between them block each other's approach;
    one is sent home (a move command) and the other then takes the defect."""
    coord = coordinator()
    agents_up(coord, {"a0": (2.0, 2.0), "a1": (15.0, 15.0)})
    for agent, (x, y) in {"a0": (5.0, 5.0), "a1": (6.0, 5.0)}.items():
        coord.handle_event(
            "agent_status",
            {
                "t_s": 0,
                "agents": [
                    {
                        "agent_id": agent,
                        "position": {"x": x, "y": y},
                        "status": "idle",
                        "temperature_c": 25,
                    }
                ],
            },
        )
    ingest_and_plan(coord, [reading(5.5, 5.3)])
    [move] = coord.dispatch_round()
    assert move.action is Action.MOVE and move.defect_id == ""
    result(coord, move.command_id, "completed")
    [repair] = coord.dispatch_round()
    assert repair.action is Action.REPAIR and repair.agent_id != move.agent_id


def test_a_restart_keeps_in_flight_paths_reserved_and_resends_them_with_the_same_key() -> None:
    """Restart: every command still in flight (repairs and step-aside moves alike) keeps its
    agent's whole path reserved and is sent again under its own idempotency key on reconnect."""
    coord = coordinator()
    agents_up(coord, {"a0": (2.0, 2.0), "a1": (15.0, 15.0)})
    for agent, (x, y) in {"a0": (5.0, 5.0), "a1": (6.0, 5.0)}.items():
        coord.handle_event(
            "agent_status",
            {
                "t_s": 0,
                "agents": [
                    {
                        "agent_id": agent,
                        "position": {"x": x, "y": y},
                        "status": "idle",
                        "temperature_c": 25,
                    }
                ],
            },
        )
    ingest_and_plan(coord, [reading(5.5, 5.3)])
    in_flight = coord.dispatch_round()  # a step-aside move
    ingest_and_plan(coord, [reading(18.0, 2.0, 1)])
    in_flight += coord.dispatch_round()  # and a repair
    assert {c.action for c in in_flight} == {Action.MOVE, Action.REPAIR}

    restarted = coordinator()
    sent = Sent()
    restarted.send = sent
    restarted.restore(
        list(coord.defects.values()), coord.book.select(), list(coord.agents.values())
    )
    assert {j.command_id for j in restarted.jobs.values()} == {c.command_id for c in in_flight}
    for command in in_flight:
        reservation = restarted.reservations.get(command.agent_id)
        assert reservation is not None and reservation.end == (
            float(command.target.x),
            float(command.target.y),
            0.0,
        )
    agents_up(restarted, {"a0": (5.0, 5.0), "a1": (6.0, 5.0)})
    asyncio.run(restarted.flush_outbox())
    assert sorted(sent.keys) == sorted(c.command_id for c in in_flight)
