"""A stateful property test: random ingests, completions, failures, agent deaths, link flaps.

Rules drive the coordinator the way the simulator link would; invariants state properties 9,
19, 20 and 22 over every reachable state.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from atomlab.core.clock import FakeClock
from atomlab.swarm.models import COMMAND_TRANSITIONS, AgentStatus, CommandStatus
from atomlab.swarm.reservations import min_clearance
from tests.swarm.harness import agents_up, coordinator, ingest_and_plan, reading, result

START = {"a0": (1.0, 1.0), "a1": (19.0, 1.0), "a2": (1.0, 19.0), "a3": (19.0, 19.0)}


class SwarmMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.coord = coordinator(self.clock, heartbeat_interval_s=2.0, retry_budget=2)
        agents_up(self.coord, START)
        self.silent: set[str] = set()
        self.seen: dict[str, CommandStatus] = {}

    @rule(x=st.integers(0, 200), y=st.integers(0, 200), severity=st.integers(1, 10))
    def ingest(self, x: int, y: int, severity: int) -> None:
        ingest_and_plan(self.coord, [reading(x / 10, y / 10, severity)])
        self.coord.dispatch_round()

    @rule(
        agent=st.sampled_from(sorted(START)),
        outcome=st.sampled_from(["done", "failed"]),
        gone=st.booleans(),
    )
    def finish_current_command(self, agent: str, outcome: str, gone: bool) -> None:
        job = self.coord.jobs.get(agent)
        if job is None or agent in self.silent:
            return
        if not job.defect_id:  # a step-aside move
            result(self.coord, job.command_id, "completed")
            self.coord.dispatch_round()
            return
        extra = {"defect_present": not gone, "repaired": gone}
        result(self.coord, job.command_id, "completed" if outcome == "done" else "failed", **extra)
        self.coord.dispatch_round()

    @rule(agent=st.sampled_from(sorted(START)))
    def agent_goes_silent(self, agent: str) -> None:
        self.silent.add(agent)

    @rule()
    def link_flaps_with_stale_positions(self) -> None:
        self.coord.handle_event("link_down", {"reason": "test"})
        live = {a: p for a, p in START.items() if a not in self.silent}
        agents_up(self.coord, live)
        self.coord.dispatch_round()

    @rule(seconds=st.sampled_from([1.0, 2.5, 4.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        alive = [a for a in START if a not in self.silent]
        self.coord.handle_event("heartbeat", {"agents_alive": alive})
        self.coord.check_agents()
        self.coord.dispatch_round()

    @invariant()
    def property_9_command_statuses_only_move_forward(self) -> None:
        for command in self.coord.book.select():
            before = self.seen.get(command.command_id, CommandStatus.PENDING)
            assert (
                command.status is before
                or command.status in COMMAND_TRANSITIONS[before]
                or (before is CommandStatus.PENDING and command.status.terminal)
            )
            self.seen[command.command_id] = command.status

    @invariant()
    def property_22_no_open_work_belongs_to_a_failed_agent(self) -> None:
        for agent_id, job in self.coord.jobs.items():
            assert self.coord.agents[agent_id].status is not AgentStatus.DEAD
            assert not self.coord.book.get(job.command_id).status.terminal
        for command in self.coord.book.active():
            assert self.coord.jobs[command.agent_id].command_id == command.command_id

    @invariant()
    def every_open_defect_is_queued_or_in_hand_exactly_once(self) -> None:
        in_hand = [job.defect_id for job in self.coord.jobs.values() if job.defect_id]
        assert len(in_hand) == len(set(in_hand))
        for defect in self.coord.defects.values():
            if defect.status.terminal:
                assert defect.defect_id not in self.coord.queue
                assert defect.defect_id not in in_hand
            elif defect.status.value in ("queued", "repairing"):
                assert (defect.defect_id in self.coord.queue) != (defect.defect_id in in_hand)

    @invariant()
    def property_19_reserved_paths_keep_the_clearance(self) -> None:
        """Paths the coordinator plans keep the clearance from each other. A standing agent's
        reservation comes from its reports, which may be stale or drifted: it may eat into the
        margin, but never into the separation of a reserved path unless the swarm is E-stopped."""
        reservations = self.coord.reservations.reservations()
        limits = self.coord.limits
        moving = [r for r in reservations if r.start != r.end]
        assert min_clearance(moving) >= limits.clearance_units
        if not self.coord.halted:
            assert min_clearance(reservations) >= limits.separation_units

    @invariant()
    def property_20_no_idle_live_agent_while_it_could_take_queued_work(self) -> None:
        # dispatch ran after every rule: a leftover queued defect must be blocked for everyone
        for defect in self.coord.queue.peek():
            for agent in self.coord.eligible_agents():
                target = (float(defect.position.x), float(defect.position.y), 0.0)
                assert not self.coord.reservations.is_free(agent.agent_id, agent.xyz, target)


SwarmMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=25, deadline=None)
test_swarm_state_machine = SwarmMachine.TestCase


def test_a_stale_report_after_a_link_flap_never_breaks_a_reserved_path() -> None:
    """Found by the machine above: a0 fails twice at (0, 1.1) nm, a1 is sent past it, then a link
    flap reports a0 back at its start (1, 1) nm, 0.66 nm from a1's path - inside the margin."""
    machine = SwarmMachine()
    machine.ingest(severity=1, x=0, y=11)
    machine.finish_current_command(agent="a0", gone=False, outcome="failed")
    machine.finish_current_command(agent="a0", gone=False, outcome="failed")
    machine.ingest(severity=1, x=0, y=3)
    machine.link_flaps_with_stale_positions()
    machine.property_19_reserved_paths_keep_the_clearance()
    assert not machine.coord.halted  # 0.66 nm: the margin absorbs it, nobody is stopped


def test_a_standing_agent_reported_inside_a_reserved_path_stops_the_swarm() -> None:
    machine = SwarmMachine()
    machine.ingest(severity=1, x=0, y=11)  # a0 is sent from (1, 1) to (0, 1.1) nm
    assert "a0" in machine.coord.jobs
    agents_up(machine.coord, {"a1": (0.5, 1.05)})  # a1 (idle) reported on a0's path
    assert machine.coord.halted
    assert "reserved path of a0" in (machine.coord.halt_reason or "")
