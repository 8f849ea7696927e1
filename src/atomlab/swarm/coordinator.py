"""The swarm coordinator: from validated defects to verified repairs.

It owns the service's state (defects, the repair queue, commands, agents, reservations) and
three background workers started by the app's lifespan: the planner (orders new defects), the
dispatcher (assigns queued defects to idle agents, event-driven) and the watchdog (heartbeat
failure detection and stuck commands). The simulator link feeds it events through
:meth:`SwarmCoordinator.on_link_event`.

A defect's life: detected → queued (planned) → repairing (a ``repair`` command: the agent moves
there and repairs, then a ``scan`` command re-checks the site) → completed when the scan finds it
gone; otherwise repaired again up to the retry budget, then failed. A defect whose target breaks a
safety rule is unrepairable and never produces a command.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atomlab.core.clock import Clock, SystemClock
from atomlab.core.logging import correlation_scope, current_correlation_id, get_logger
from atomlab.core.settings import SwarmSettings
from atomlab.sim.swarm_wire import MAX_AGENTS  # agents kept track of; reports of more ignored
from atomlab.surface import UNITS_PER_NM
from atomlab.swarm.allocation import AgentSlot, Assignment, JobSlot, Strategy, allocate
from atomlab.swarm.commands import CommandBook, RepairQueue
from atomlab.swarm.db import StoreWriter, agent_row, command_row, defect_row
from atomlab.swarm.metrics import SwarmMetrics
from atomlab.swarm.models import (
    Action,
    AgentState,
    AgentStatus,
    Command,
    CommandStatus,
    Defect,
    DefectStatus,
    Point,
    SensorCoordinateIn,
)
from atomlab.swarm.planner import LlmRouteAdvisor, PlanStop, RepairPath, plan_route
from atomlab.swarm.reservations import ReservationTable, Vec
from atomlab.swarm.supervision import Supervisor
from atomlab.swarm.validation import Rejection, SafetyLimits, SafetyValidator

CommandSender = Callable[..., Awaitable[None]]

HALT_REASONS = frozenset({"halted", "proximity_halt"})  # not the repair's fault: no attempt used
WATCHDOG_MIN_PERIOD_S = 0.05
DISPATCH_ERROR_PAUSE_S = 0.1
DISPATCH_COALESCE_S = 0.02  # real seconds between rounds, so events share one
PLAN_IN_THREAD_ABOVE = 40  # plan bigger batches off the event loop
DISPATCH_LOOKAHEAD = 4  # jobs considered per idle agent in one round ...
DISPATCH_MIN_LOOKAHEAD = 64  # ... but at least this many, so blocked jobs do not starve others
DISPATCH_SLICE = 16  # idle agents decided together; the event loop runs between slices
FEASIBILITY_BLOCK = 8  # jobs whose feasibility is computed together for a slice
CLEAR_DEFECTS = 8  # queued defects checked for a blocked approach per round ...
CLEAR_NEAREST = 16  # ... each against this many of the nearest idle agents
PLAN_MAX_BATCH = 256  # defects planned together; a bigger inbox is planned in turns
MAX_POSITION_UNITS = 10_000_000  # 1 mm in 0.1 nm units: no report can be beyond it
SEPARATION_PAIRWISE_UP_TO = 1024  # agents; above, a k-d tree finds the close pairs

log = get_logger(__name__)

_SIM_STATUS = {
    "idle": AgentStatus.IDLE,
    "moving": AgentStatus.MOVING,
    "repairing": AgentStatus.REPAIRING,
    "scanning": AgentStatus.REPAIRING,
    "halted": AgentStatus.IDLE,  # a halted agent takes the next command it is given
    "stuck": AgentStatus.ERROR,
    "error": AgentStatus.ERROR,
}


@dataclass
class Job:
    """The defect an agent is working on and the command it is executing for it."""

    defect_id: str
    agent_id: str
    command_id: str
    started_at: float  # clock.monotonic() when the current command was issued


@dataclass
class IngestResult:
    defect_ids: list[str] = field(default_factory=list)
    duplicates: int = 0
    unrepairable: int = 0


def _to_units(xyz_nm: dict[str, Any]) -> Vec:
    return (
        float(xyz_nm.get("x", 0.0)) * UNITS_PER_NM,
        float(xyz_nm.get("y", 0.0)) * UNITS_PER_NM,
        float(xyz_nm.get("z", 0.0)) * UNITS_PER_NM,
    )


def _temperature(reported: Any, current: float) -> float:
    """A reported temperature, or the one known before when the report is not a number."""
    try:
        value = float(reported)
    except (TypeError, ValueError):
        return current
    return value if math.isfinite(value) else current


def _point(v: Vec) -> Point:
    return Point(round(v[0]), round(v[1]), round(v[2]))


def _vec(p: Point) -> Vec:
    return (float(p.x), float(p.y), float(p.z))


def closest_violation(points: Sequence[Vec], separation: float) -> tuple[int, int, float] | None:
    """The first pair (in index order) of ``points`` closer than ``separation``, or None.

    Vectorised: all pairs at once up to :data:`SEPARATION_PAIRWISE_UP_TO` points, a k-d tree
    above, so a report of hundreds of agents costs a millisecond, not a Python double loop."""
    n = len(points)
    if n < 2:
        return None
    xyz = np.asarray(points, dtype=float)
    if n <= SEPARATION_PAIRWISE_UP_TO:
        diff = xyz[:, None, :] - xyz[None, :, :]
        with np.errstate(over="ignore", invalid="ignore"):  # far apart is simply not close
            d2 = np.einsum("ijk,ijk->ij", diff, diff)
        close = np.argwhere(np.triu(d2 < separation * separation, k=1))
        if len(close) == 0:
            return None
        i, j = (int(v) for v in close[0])  # argwhere is row-major: the first pair in order
        return i, j, float(np.sqrt(d2[i, j]))
    from scipy.spatial import cKDTree

    # Each point's nearest other point (O(n log n), even when many coincide): the first point
    # with one too close opens the first pair, and its partner comes after it (else the
    # partner would have been first).
    tree = cKDTree(xyz)
    nearest, _ = tree.query(xyz, k=2)
    too_close = np.flatnonzero(nearest[:, 1] < separation)
    if len(too_close) == 0:
        return None
    i = int(too_close[0])
    partners = [j for j in tree.query_ball_point(xyz[i], r=separation) if j > i]
    for j in sorted(partners):
        distance = math.dist(points[i], points[j])
        if distance < separation:
            return i, j, distance
    return None


def plan_slice(
    table: ReservationTable,
    slots: list[JobSlot],
    agent_slots: list[AgentSlot],
    strategy: Strategy,
) -> list[Assignment]:
    """Pair the agents of one dispatch slice with queued jobs (pure: reads ``table`` only, so it
    can run in a worker thread on a copy). Feasibility is computed lazily, a block of jobs at a
    time for every agent: the allocation asks about jobs in priority order and usually stops
    early."""
    agent_index = {a.agent_id: i for i, a in enumerate(agent_slots)}
    job_index = {j.job_id: i for i, j in enumerate(slots)}
    blocks: dict[int, Any] = {}

    def feasible(agent: AgentSlot, job: JobSlot) -> bool:
        j = job_index[job.job_id]
        block = blocks.get(j // FEASIBILITY_BLOCK)
        if block is None:
            first = (j // FEASIBILITY_BLOCK) * FEASIBILITY_BLOCK
            block = table.feasibility(
                [a.agent_id for a in agent_slots],
                [a.position for a in agent_slots],
                [s.position for s in slots[first : first + FEASIBILITY_BLOCK]],
            )
            blocks[j // FEASIBILITY_BLOCK] = block
        return bool(block[agent_index[agent.agent_id], j % FEASIBILITY_BLOCK])

    return allocate(slots, agent_slots, feasible=feasible, strategy=strategy)


def warm_up_imports() -> None:
    """Import what the first dispatch and separation check need, off the event loop."""
    import scipy.optimize
    import scipy.spatial  # noqa: F401


class SwarmCoordinator:
    """State and workers of one swarm service instance (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: SwarmSettings,
        clock: Clock | None = None,
        metrics: SwarmMetrics | None = None,
        send: CommandSender | None = None,
        writer: StoreWriter | None = None,
        advisor: LlmRouteAdvisor | None = None,
        link_connected: Callable[[], bool] | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.metrics = metrics or SwarmMetrics()
        self.limits = SafetyLimits.from_settings(settings)
        self.validator = SafetyValidator(self.limits)
        self.send = send
        self.writer = writer
        self.advisor = advisor
        self._link_connected = link_connected or (lambda: True)
        self.supervisor = supervisor or Supervisor(clock=self.clock, metrics=self.metrics)
        self._ignored_agents = 0
        self.defects: dict[str, Defect] = {}
        self.queue = RepairQueue()
        self.book = CommandBook()
        self.agents: dict[str, AgentState] = {}
        self.jobs: dict[str, Job] = {}
        self.reservations = ReservationTable(self.limits.clearance_units)
        self.halted = False
        self.halt_reason: str | None = None
        self.ground_truth: dict[str, Any] | None = None
        self._active_keys: dict[tuple[int, int, int, str], str] = {}  # open defects by site
        self._inbox: list[Defect] = []
        self._inbox_ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._outbox: asyncio.Queue[Command] = asyncio.Queue()
        self._failed_at: dict[str, float] = {}
        self._resend_on_link_up: list[str] = []
        self._saved_at: dict[str, Vec] = {}  # each agent's position as last stored
        self._down_since: float | None = None
        self._halting: dict[str, str] = {}  # agent -> halt command not yet confirmed
        self._seq = 0
        self._rank = 0
        self._warm: asyncio.Task[None] | None = None
        self._fruitless: tuple[object, ...] | None = None  # inputs of a round that did nothing
        self._bind_gauges()

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the planner, dispatcher, sender and watchdog under the supervisor (inside a
        running loop): a crash is logged, counted, shown in /health and the task restarted."""
        self._warm = asyncio.create_task(asyncio.to_thread(warm_up_imports), name="swarm-warm")
        for name, worker in self.workers().items():
            self.supervisor.start(name, worker)

    def workers(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        return {
            "swarm-planner": self._plan_worker,
            "swarm-dispatcher": self._dispatch_worker,
            "swarm-sender": self._send_worker,
            "swarm-watchdog": self._watch_worker,
        }

    async def stop(self) -> None:
        await self.supervisor.stop(self.workers())
        warm = self._warm
        if warm is not None and not warm.done():
            warm.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await warm

    # --- ingest -----------------------------------------------------------------------------

    def check_batch(self, coordinates: Sequence[SensorCoordinateIn]) -> list[Rejection]:
        """Grid and bounds check of a batch; field names like ``coordinates.3.x``."""
        found: list[Rejection] = []
        for index, coordinate in enumerate(coordinates):
            found.extend(
                self.validator.precision.check_coordinate(coordinate, f"coordinates.{index}")
            )
        return found

    def ingest(
        self,
        coordinates: Sequence[SensorCoordinateIn],
        *,
        correlation_id: str,
        defect_ids: Sequence[str | None] | None = None,
        log_it: bool = True,
    ) -> IngestResult:
        """Record a validated batch and hand it to the planner; returns at once (no I/O).

        ``log_it=False`` when the caller logs the batch itself (the HTTP request line does)."""
        result = IngestResult()
        now = self.clock.now()
        for index, c in enumerate(coordinates):
            position = Point.from_nm(c.x, c.y, c.z)
            key = (position.x, position.y, position.z, c.defect_type)
            existing = self._active_keys.get(key)
            if existing is not None:
                result.duplicates += 1
                result.defect_ids.append(existing)
                self.metrics.defects.labels(outcome="duplicate").inc()
                continue
            given = defect_ids[index] if defect_ids is not None else None
            defect_id = given if given and given not in self.defects else uuid.uuid4().hex[:12]
            self._seq += 1
            defect = Defect(
                defect_id=defect_id,
                position=position,
                defect_type=c.defect_type,
                severity=c.severity,
                detected_at=now,
                correlation_id=correlation_id,
                seq=self._seq,
                status=DefectStatus.DETECTED,
            )
            self.defects[defect_id] = defect
            result.defect_ids.append(defect_id)
            self.metrics.defects.labels(outcome="detected").inc()
            reason = self.validator.unrepairable_reason(position)
            if reason is not None:
                defect.status = DefectStatus.UNREPAIRABLE
                defect.reason = reason
                result.unrepairable += 1
                self.metrics.defects.labels(outcome="unrepairable").inc()
                self._event("unrepairable", defect, detail=reason)
            else:
                self._active_keys[key] = defect_id
                self._inbox.append(defect)
            self._save_defect(defect)
        if self._inbox:
            self._inbox_ready.set()
        if not log_it:
            return result
        log.info(
            "swarm.sensor_data",
            accepted=len(result.defect_ids),
            duplicates=result.duplicates,
            unrepairable=result.unrepairable,
            correlation_id=correlation_id,
        )
        return result

    # --- planning ---------------------------------------------------------------------------

    async def plan_pending(self) -> RepairPath | None:
        """Order the inbox (at most :data:`PLAN_MAX_BATCH` defects) and queue it (the planner
        worker's one step; a bigger inbox is planned in turns)."""
        batch, self._inbox = self._inbox[:PLAN_MAX_BATCH], self._inbox[PLAN_MAX_BATCH:]
        if not self._inbox:
            self._inbox_ready.clear()
        batch = [d for d in batch if d.status is DefectStatus.DETECTED]
        if not batch:
            return None
        stops = [PlanStop(d.defect_id, d.position, d.severity, d.seq) for d in batch]
        start = self._swarm_centre()
        began = self.clock.monotonic()
        if len(stops) > PLAN_IN_THREAD_ABOVE:
            path = await asyncio.to_thread(plan_route, stops, start)
        else:
            path = plan_route(stops, start)
        if self.advisor is not None:
            path = await self.advisor.plan(stops, start, heuristic=path)
        self.metrics.planning_seconds.observe(max(self.clock.monotonic() - began, 0.0))
        self.metrics.plans.labels(source=path.source).inc()
        by_id = {d.defect_id: d for d in batch}
        for defect_id in path.order:
            defect = by_id[defect_id]
            if defect.status is not DefectStatus.DETECTED:
                continue
            self._rank += 1
            defect.status = DefectStatus.QUEUED
            self.queue.push(defect, rank=self._rank)
            self._save_defect(defect)
        self._wake.set()
        return path

    def _swarm_centre(self) -> Point:
        live = [a for a in self.agents.values() if a.status is not AgentStatus.DEAD]
        if not live:
            return self.limits.bounds.lo
        n = len(live)
        return Point(
            round(sum(a.position.x for a in live) / n),
            round(sum(a.position.y for a in live) / n),
            round(sum(a.position.z for a in live) / n),
        )

    # --- dispatch ---------------------------------------------------------------------------

    def eligible_agents(self) -> list[AgentState]:
        """Idle agents that may take a job now, fewest assignments first (fairness order)."""
        found = [a for a in self.agents.values() if self._eligible(a)]
        found.sort(key=lambda a: (a.assigned_total, a.agent_id))
        return found

    def _eligible(self, agent: AgentState) -> bool:
        budget = self.settings.repair_thermal_budget_c
        return (
            agent.status is AgentStatus.IDLE
            and agent.agent_id not in self.jobs
            and agent.agent_id not in self._halting
            and agent.temperature_c <= budget - self.settings.thermal_headroom_c
        )

    def dispatch_round(self) -> list[Command]:
        """Assign queued defects to idle agents (safety > severity > fairness > distance).

        Everything at once, on the caller's thread; the dispatcher worker and the HTTP route use
        :meth:`dispatch`, which plans each slice off the event loop."""
        start = self._round_start()
        if start is None:
            return []
        agents, inputs = start
        issued: list[Command] = []
        for chunk in self._chunks(agents):
            prepared = self._prepare_slice(chunk)
            if prepared is not None:
                pairs = plan_slice(self.reservations, *prepared, self.settings.assignment)
                issued.extend(self._commit_slice(pairs, prepared[0]))
        issued.extend(self._finish_round(inputs, issued))
        return issued

    async def dispatch(self) -> list[Command]:
        """:meth:`dispatch_round`, with each slice planned in a worker thread on a copy of the
        reservations, then re-checked and committed on the loop: a round among hundreds of
        agents never holds the event loop for more than one commit."""
        start = self._round_start()
        if start is None:
            return []
        agents, inputs = start
        issued: list[Command] = []
        for chunk in self._chunks(agents):
            prepared = self._prepare_slice(chunk)
            if prepared is None:
                continue
            table = self.reservations.copy()
            strategy = self.settings.assignment
            pairs = await asyncio.to_thread(plan_slice, table, *prepared, strategy)
            issued.extend(self._commit_slice(pairs, prepared[0]))
        issued.extend(self._finish_round(inputs, issued))
        return issued

    def _round_start(self) -> tuple[list[AgentState], tuple[object, ...]] | None:
        """The idle agents of a round and what the round reads, or None: nothing to do, or a
        round with the same inputs already found nothing (it would find nothing again: this
        keeps hundreds of blocked idle agents from costing a round on every telemetry frame)."""
        if self.halted or not self.queue:
            return None
        agents = self.eligible_agents()
        if not agents:
            return None
        inputs = (
            self.queue.version,
            self.reservations.version,
            tuple(a.agent_id for a in agents),
        )
        if inputs == self._fruitless:
            return None
        return agents, inputs

    def _chunks(self, agents: list[AgentState]) -> Iterator[list[AgentState]]:
        """Slices of :data:`DISPATCH_SLICE` agents in fairness order, re-checked when reached."""
        for start in range(0, len(agents), DISPATCH_SLICE):
            if self.halted or not self.queue:
                return
            chunk = [a for a in agents[start : start + DISPATCH_SLICE] if self._eligible(a)]
            if chunk:
                yield chunk

    def _finish_round(self, inputs: tuple[object, ...], issued: list[Command]) -> list[Command]:
        moves: list[Command] = []
        if not issued and not self.halted and self.queue:
            moves = self._clear_the_way()
        self._fruitless = inputs if not issued and not moves else None
        return moves

    def _prepare_slice(
        self, agents: list[AgentState]
    ) -> tuple[list[JobSlot], list[AgentSlot]] | None:
        lookahead = max(DISPATCH_LOOKAHEAD * len(agents), DISPATCH_MIN_LOOKAHEAD)
        self._give_up_blocked(self.queue.peek(limit=lookahead))
        candidates = self.queue.peek(limit=lookahead)
        if not candidates:
            return None
        slots = [JobSlot(d.defect_id, _vec(d.position), d.severity) for d in candidates]
        agent_slots = [AgentSlot(a.agent_id, a.xyz, a.assigned_total) for a in agents]
        return slots, agent_slots

    def _commit_slice(self, pairs: list[Assignment], slots: list[JobSlot]) -> list[Command]:
        """Start the planned jobs that are still possible: the agent still free, the defect
        still queued, and its path still clear of everything reserved since (earlier pairs of
        this round, or events while the slice was planned)."""
        priority = {j.job_id: i for i, j in enumerate(slots)}
        issued: list[Command] = []
        for pair in sorted(pairs, key=lambda p: priority[p.job_id]):
            agent = self.agents.get(pair.agent_id)
            defect = self.defects.get(pair.job_id)
            if agent is None or defect is None or not self._eligible(agent):
                continue
            if defect.defect_id not in self.queue:
                continue
            if not self.reservations.is_free(agent.agent_id, agent.xyz, _vec(defect.position)):
                continue
            issued.append(self._start_job(agent, defect))
        return issued

    def _clear_the_way(self) -> list[Command]:
        """Idle agents parked around a queued defect can block every approach to it (each
        keeps the others out): one of them steps aside so the defect can be reached.

        Bounded: the first :data:`CLEAR_DEFECTS` queued defects, each against its
        :data:`CLEAR_NEAREST` nearest idle agents."""
        idle = {a.agent_id: a for a in self.eligible_agents()}
        moves: list[Command] = []
        for defect in self.queue.peek(limit=CLEAR_DEFECTS):
            if not idle:
                break
            target = _vec(defect.position)
            nearest = sorted(idle.values(), key=lambda a: math.dist(a.xyz, target))
            nearest = nearest[:CLEAR_NEAREST]
            blocked_by = self.reservations.blocked_by(
                [a.agent_id for a in nearest], [a.xyz for a in nearest], target
            )
            if not all(blocked_by.values()):
                continue  # someone can go: nothing to clear
            blockers = {blocker for found in blocked_by.values() for blocker in found}
            for blocker_id in sorted(blockers):
                blocker = idle.get(blocker_id)
                if blocker is None:
                    continue
                spot = self._retreat(blocker, target)
                if spot is not None:
                    moves.append(self._issue_move(blocker, spot, defect.correlation_id))
                    idle.pop(blocker_id)
                    break
        return moves

    def _retreat(self, agent: AgentState, away_from: Vec) -> Point | None:
        """A free place for ``agent`` to step aside to: home, else straight away from the
        blocked defect, else to either side of it (on the grid, in bounds, off no-go zones)."""
        clearance = self.limits.clearance_units
        here = agent.xyz
        dx, dy = here[0] - away_from[0], here[1] - away_from[1]
        norm = math.hypot(dx, dy)
        ux, uy = (dx / norm, dy / norm) if norm > 1e-9 else (1.0, 0.0)
        candidates: list[Vec] = [agent.home] if agent.home is not None else []
        for reach in (1.5 * clearance, 3.0 * clearance):
            for cx, cy in ((ux, uy), (-uy, ux), (uy, -ux), (-ux, -uy)):
                candidates.append((here[0] + cx * reach, here[1] + cy * reach, here[2]))
        for candidate in candidates:
            spot = _point(candidate)
            if (
                math.dist(_vec(spot), away_from) >= clearance
                and math.dist(_vec(spot), here) >= 1.0
                and self.validator.structural.violation(spot) is None
                and self.reservations.is_free(agent.agent_id, here, _vec(spot))
            ):
                return spot
        return None

    def _issue_move(self, agent: AgentState, target: Point, correlation_id: str) -> Command:
        command = Command(
            command_id=f"cmd-{uuid.uuid4().hex[:16]}",
            defect_id="",
            agent_id=agent.agent_id,
            action=Action.MOVE,
            target=target,
            thermal_budget_c=min(
                self.settings.repair_thermal_budget_c, self.limits.max_temperature_c
            ),
            correlation_id=correlation_id,  # on behalf of the defect it makes reachable
            created_at=self.clock.now(),
        )
        self.book.add(command)
        self.jobs[agent.agent_id] = Job(
            "", agent.agent_id, command.command_id, self.clock.monotonic()
        )
        agent.current_command = command.command_id
        agent.status = AgentStatus.MOVING
        self.reservations.reserve(agent.agent_id, agent.xyz, _vec(target))
        self.metrics.commands.labels(action="move", status="pending").inc()
        self._save_command(command)
        self._outbox.put_nowait(command)
        log.info("swarm.step_aside", agent_id=agent.agent_id, target=target.as_nm_dict())
        return command

    def _moved(self, agent: AgentState) -> None:
        self.reservations.park(agent.agent_id, agent.xyz)
        self.jobs.pop(agent.agent_id, None)
        agent.current_command = None
        if agent.status is not AgentStatus.DEAD:
            agent.status = AgentStatus.IDLE
        self._save_agent(agent)

    def _give_up_blocked(self, candidates: list[Defect]) -> None:
        """Yield protection: a defect a failed agent sits on cannot be reached safely.

        Checked for the defects a dispatch slice considers (the rest when they come up)."""
        dead = [a for a in self.agents.values() if a.status is AgentStatus.DEAD]
        if not dead:
            return
        clearance = self.limits.clearance_units
        for defect in candidates:
            for agent in dead:
                if math.dist(agent.xyz, _vec(defect.position)) < clearance:
                    self.queue.remove(defect.defect_id)
                    self._active_keys.pop(defect.dedupe_key, None)
                    defect.status = DefectStatus.UNREPAIRABLE
                    defect.reason = f"blocked by failed agent {agent.agent_id}"
                    defect.completed_at = self.clock.now()
                    self.metrics.defects.labels(outcome="unrepairable").inc()
                    self._event("unrepairable", defect, detail=defect.reason)
                    self._save_defect(defect)
                    break

    def _start_job(self, agent: AgentState, defect: Defect) -> Command:
        self.queue.remove(defect.defect_id)
        defect.status = DefectStatus.REPAIRING
        defect.agent_id = agent.agent_id
        agent.assigned_total += 1
        agent.status = AgentStatus.MOVING
        self.reservations.reserve(agent.agent_id, agent.xyz, _vec(defect.position))
        command = self._issue(agent, defect, Action.REPAIR)
        failed_at = self._failed_at.pop(defect.defect_id, None)
        if failed_at is not None:
            self.metrics.dispatch_seconds.observe(max(self.clock.monotonic() - failed_at, 0.0))
        self._save_defect(defect)
        self._save_agent(agent)
        return command

    def _issue(self, agent: AgentState, defect: Defect, action: Action) -> Command:
        budget = min(self.settings.repair_thermal_budget_c, self.limits.max_temperature_c)
        command = Command(
            command_id=f"cmd-{uuid.uuid4().hex[:16]}",
            defect_id=defect.defect_id,
            agent_id=agent.agent_id,
            action=action,
            target=defect.position,
            thermal_budget_c=budget,
            correlation_id=defect.correlation_id,
            created_at=self.clock.now(),
            severity=defect.severity,
        )
        violations = self.validator.command_violations(command)
        if violations:  # unreachable for validated defects; a last line of defence
            raise AssertionError(f"refusing unsafe command: {violations}")
        self.book.add(command)
        self.jobs[agent.agent_id] = Job(
            defect.defect_id, agent.agent_id, command.command_id, self.clock.monotonic()
        )
        agent.current_command = command.command_id
        self.metrics.commands.labels(action=action.value, status="pending").inc()
        self._save_command(command)
        self._event("command_issued", defect, command=command)
        self._outbox.put_nowait(command)
        return command

    def wire_payload(self, command: Command) -> dict[str, Any]:
        """The ``command`` message's payload (nm on the wire)."""
        if command.action is Action.HALT:
            return {
                "command_id": command.command_id,
                "agent_id": command.agent_id,
                "action": "halt",
            }
        return {
            "command_id": command.command_id,
            "agent_id": command.agent_id,
            "action": command.action.value,
            "target": command.target.as_nm_dict(),
            "thermal_budget_c": command.thermal_budget_c,
            "defect_id": command.defect_id,
        }

    # --- link events ------------------------------------------------------------------------

    async def on_link_event(self, event_type: str, payload: dict[str, Any]) -> None:
        """The link's ``on_event`` callback (see :mod:`atomlab.sim.swarm_wire` for the types)."""
        self.handle_event(event_type, payload)

    def handle_event(self, event_type: str, payload: dict[str, Any]) -> None:
        """Apply one simulator event to the state; wakes the dispatcher."""
        handler = {
            "link_up": self._on_link_up,
            "link_down": self._on_link_down,
            "command_delivered": self._on_delivered,
            "command_result": self._on_result,
            "agent_status": self._on_agent_status,
            "heartbeat": self._on_heartbeat,
            "sensor_data": self._on_sensor_data,
            "proximity_alert": self._on_proximity_alert,
            "ground_truth": self._on_ground_truth,
        }.get(event_type)
        if handler is None:
            log.info("swarm.link_event_ignored", event_type=event_type)
            return
        handler(payload)
        self._wake.set()

    def _on_link_up(self, payload: dict[str, Any]) -> None:
        now = self.clock.monotonic()
        for info in payload.get("agents", []):
            agent = self._agent(str(info["agent_id"]))
            if agent is None:
                continue
            self._place(agent, _to_units(info.get("position", {})))
            agent.temperature_c = _temperature(info.get("temperature_c"), agent.temperature_c)
            speed = info.get("speed_nm_s")
            agent.speed_units_s = float(speed) * UNITS_PER_NM if speed else None
            if agent.agent_id not in self.jobs and agent.status is not AgentStatus.DEAD:
                agent.status = _SIM_STATUS.get(str(info.get("status", "idle")), AgentStatus.IDLE)
            agent.last_heartbeat = now
            self._save_agent(agent)
        # Agents the simulator did not list were silent before the link went down too; they
        # get credit only for the time nobody could hear them.
        listed = {str(info["agent_id"]) for info in payload.get("agents", [])}
        downtime = now - self._down_since if self._down_since is not None else 0.0
        self._down_since = None
        for agent in self.agents.values():
            if agent.agent_id not in listed:
                agent.last_heartbeat = min(agent.last_heartbeat + downtime, now)
        resend, self._resend_on_link_up = self._resend_on_link_up, []
        for command_id in resend:
            command = self.book.find(command_id)
            if command is not None and not command.status.terminal:
                self._outbox.put_nowait(command)
        if resend and self.halted:
            self._halt_everyone()  # halted before a restart: whatever a resend started, stops
        log.info("swarm.link_up", agents=len(payload.get("agents", [])), resent=len(resend))

    def _on_link_down(self, payload: dict[str, Any]) -> None:
        self._down_since = self.clock.monotonic()
        log.warning("swarm.link_down", reason=payload.get("reason"))

    def _on_delivered(self, payload: dict[str, Any]) -> None:
        command = self.book.find(str(payload.get("command_id")))
        if command is not None and command.status is CommandStatus.PENDING:
            self._advance(command, CommandStatus.IN_PROGRESS, "delivered")

    def _on_result(self, payload: dict[str, Any]) -> None:
        command = self.book.find(str(payload.get("command_id")))
        if command is not None and (
            command.agent_id != payload.get("agent_id")
            or command.action.value != payload.get("action", command.action.value)
        ):
            # A result must come from the agent the command was given to, for that action: one
            # claiming otherwise (a confused or rogue peer) settles nothing.
            self.metrics.rejected_results.inc()
            log.warning(
                "swarm.result_mismatch",
                command_id=command.command_id,
                agent_id=str(payload.get("agent_id"))[:64],
            )
            return
        agent = self.agents.get(str(payload.get("agent_id")))
        if agent is not None and self._halting.get(agent.agent_id) == payload.get("command_id"):
            del self._halting[agent.agent_id]  # the halt landed: it stands still now
        if agent is not None:
            self._touch(agent)
            job = self.jobs.get(agent.agent_id)
            current = job is None or job.command_id == payload.get("command_id")
            if payload.get("position") and current:  # an old command's answer is old news
                self._place(agent, _to_units(payload["position"]))
            if payload.get("temperature_c") is not None:
                agent.temperature_c = _temperature(payload["temperature_c"], agent.temperature_c)
        if command is None or command.status.terminal:
            return  # a late answer to a command we already gave up on: nothing to do
        status = payload.get("status")
        if status == "processing":
            if command.status is CommandStatus.PENDING:
                self._advance(command, CommandStatus.IN_PROGRESS, "processing")
            return
        if command.status is CommandStatus.PENDING:
            self._advance(command, CommandStatus.IN_PROGRESS, "acknowledged")
        reason = payload.get("reason")
        if status == "completed":
            self._advance(command, CommandStatus.COMPLETED, reason)
            self._after_completed(command, payload)
        elif status == "failed":
            self._advance(command, CommandStatus.FAILED, reason or "failed")
            self._after_failed(command, str(reason or "failed"))

    def _settle(self, command: Command) -> tuple[Defect, AgentState] | None:
        """Common end of any command: a finished move frees the agent; otherwise park the agent
        where it is and return the defect and agent the command was about (None if either is
        gone)."""
        defect = self.defects.get(command.defect_id)
        agent = self.agents.get(command.agent_id)
        if agent is not None and command.action is Action.MOVE:
            self._moved(agent)
            return None
        if defect is None or agent is None:
            return None
        self.reservations.park(agent.agent_id, agent.xyz)
        return defect, agent

    def _after_completed(self, command: Command, payload: dict[str, Any]) -> None:
        settled = self._settle(command)
        if settled is None:
            return
        defect, agent = settled
        if command.action is Action.REPAIR:
            defect.attempts += 1
            self._save_defect(defect)
            agent.status = AgentStatus.REPAIRING
            self._issue(agent, defect, Action.SCAN)  # closed loop: verify before believing
            return
        if command.action is Action.SCAN:
            if payload.get("defect_present") is False:
                self._finish(defect, agent, DefectStatus.COMPLETED, "verified by re-scan")
            else:
                self._retry_or_fail(defect, agent, "defect still present after repair")

    def _after_failed(self, command: Command, reason: str) -> None:
        settled = self._settle(command)
        if settled is None:
            return
        defect, agent = settled
        if reason in HALT_REASONS:
            self._release(defect, agent, reason)
            return
        if command.action is Action.REPAIR:
            defect.attempts += 1
        self._retry_or_fail(defect, agent, reason)

    def _retry_or_fail(self, defect: Defect, agent: AgentState, reason: str) -> None:
        if defect.attempts >= self.settings.retry_budget:
            note = f"{reason}; gave up after {defect.attempts} repair attempts"
            self._finish(defect, agent, DefectStatus.FAILED, note)
            return
        self.metrics.defects.labels(outcome="retried").inc()
        self._event("retry", defect, detail=reason)
        budget = self.settings.repair_thermal_budget_c
        if self.halted or agent.temperature_c > budget - self.settings.thermal_headroom_c:
            self._release(defect, agent, f"{reason}; agent too hot or swarm halted")
            return
        # A command can fail before the agent reached the defect (cut off by a simulator
        # restart, a lost link): the retry is a move like any other and needs its path reserved.
        here, there = agent.xyz, _vec(defect.position)
        if not self.reservations.is_free(agent.agent_id, here, there):
            self._release(defect, agent, f"{reason}; the way to the defect is taken")
            return
        self.reservations.reserve(agent.agent_id, here, there)
        self._issue(agent, defect, Action.REPAIR)

    def _release(self, defect: Defect, agent: AgentState, reason: str) -> None:
        """Give the defect back to the queue and free the agent."""
        self.jobs.pop(agent.agent_id, None)
        agent.current_command = None
        if agent.status is not AgentStatus.DEAD:
            agent.status = AgentStatus.IDLE
        defect.status = DefectStatus.QUEUED
        defect.agent_id = None
        self._rank += 1
        self.queue.push(defect, rank=self._rank)
        self._event("requeued", defect, detail=reason)
        self._save_defect(defect)
        self._save_agent(agent)

    def _finish(self, defect: Defect, agent: AgentState, status: DefectStatus, note: str) -> None:
        defect.status = status
        defect.reason = note
        defect.completed_at = self.clock.now()
        self._active_keys.pop(defect.dedupe_key, None)
        self.jobs.pop(agent.agent_id, None)
        agent.current_command = None
        if agent.status is not AgentStatus.DEAD:
            agent.status = AgentStatus.IDLE
        outcome = "repaired" if status is DefectStatus.COMPLETED else "failed"
        self.metrics.defects.labels(outcome=outcome).inc()
        if status is DefectStatus.COMPLETED:
            elapsed = (defect.completed_at - defect.detected_at).total_seconds()
            self.metrics.repair_seconds.observe(max(elapsed, 0.0))
        self._event(outcome, defect, detail=note)
        self._save_defect(defect)
        self._save_agent(agent)

    def _on_agent_status(self, payload: dict[str, Any]) -> None:
        for info in payload.get("agents", []):
            agent = self._agent(str(info["agent_id"]))
            if agent is None:
                continue
            revived = agent.status is AgentStatus.DEAD
            self._touch(agent)
            self._place(agent, _to_units(info.get("position", {})))
            agent.temperature_c = _temperature(info.get("temperature_c"), agent.temperature_c)
            reported = _SIM_STATUS.get(str(info.get("status")), AgentStatus.ERROR)
            self._stop_unknown_work(agent, info.get("current_command_id"))
            if info.get("status") == "halted" and self._halting.pop(agent.agent_id, None):
                self._place(agent, agent.xyz)  # halted: its reservation shrinks to where it is
            if agent.agent_id in self._halting:
                agent.status = AgentStatus.ERROR  # out of service until the halt lands
            elif agent.agent_id in self.jobs:
                if reported is AgentStatus.ERROR:
                    agent.status = AgentStatus.ERROR
            else:
                agent.status = reported
                if reported is AgentStatus.IDLE:
                    self.reservations.park(agent.agent_id, agent.xyz)
            if revived or self._saved_at.get(agent.agent_id) != agent.xyz:
                # Stored as last heard: after a restart a dead agent is parked where it really
                # stopped, not where its last command began (found end to end: a defect next
                # to a dead agent was given to another agent, E-stop at 0.40 nm).
                self._save_agent(agent)
        self._check_separation()

    def _stop_unknown_work(self, agent: AgentState, command_id: object) -> None:
        """An agent running a command this service has no record of (issued just before a
        crash, lost with the last unwritten rows) moves on a path nobody reserved: halt it."""
        if not command_id or str(command_id).startswith("halt-"):
            return
        if self.book.find(str(command_id)) is not None or agent.agent_id in self._halting:
            return
        log.warning("swarm.unknown_command", agent_id=agent.agent_id, command_id=command_id)
        halt = self._halt_command(agent)
        self._halting[agent.agent_id] = halt.command_id
        self._outbox.put_nowait(halt)

    def _on_heartbeat(self, payload: dict[str, Any]) -> None:
        for agent_id in payload.get("agents_alive", []):
            agent = self.agents.get(str(agent_id))
            if agent is not None:
                self._touch(agent)

    def _on_sensor_data(self, payload: dict[str, Any]) -> None:
        coordinates: list[SensorCoordinateIn] = []
        ids: list[str | None] = []
        for raw in payload.get("coordinates", []):
            try:
                reading = SensorCoordinateIn.model_validate(
                    {k: raw[k] for k in ("x", "y", "z", "defect_type", "severity") if k in raw}
                )
            except ValueError as exc:
                log.warning("swarm.sensor_reading_rejected", error=str(exc)[:200])
                continue
            if self.check_batch([reading]):
                log.warning("swarm.sensor_reading_out_of_bounds", reading=raw)
                continue
            coordinates.append(reading)
            ids.append(raw.get("defect_id"))
        if coordinates:
            with correlation_scope() as cid:
                self.ingest(coordinates, correlation_id=cid, defect_ids=ids)

    def _on_proximity_alert(self, payload: dict[str, Any]) -> None:
        self.metrics.separation_alerts.inc()
        self.halt(
            f"simulator reported agents {payload.get('agent_ids')} "
            f"{payload.get('distance_nm')} nm apart"
        )

    def _on_ground_truth(self, payload: dict[str, Any]) -> None:
        self.ground_truth = payload

    # --- agents -----------------------------------------------------------------------------

    def _agent(self, agent_id: str) -> AgentState | None:
        """The agent, created on first report; None once :data:`MAX_AGENTS` are known (a peer
        inventing ids cannot grow the service's memory without bound)."""
        agent = self.agents.get(agent_id)
        if agent is None:
            if len(self.agents) >= MAX_AGENTS:
                self._ignored_agents += 1
                if self._ignored_agents == 1 or self._ignored_agents % 1000 == 0:
                    log.warning(
                        "swarm.agents_ignored", limit=MAX_AGENTS, count=self._ignored_agents
                    )
                return None
            agent = AgentState(agent_id=agent_id, position=Point(0, 0, 0))
            agent.last_heartbeat = self.clock.monotonic()
            self.agents[agent_id] = agent
        return agent

    def _touch(self, agent: AgentState) -> None:
        agent.last_heartbeat = self.clock.monotonic()
        agent.last_update = self.clock.now()
        if agent.status is AgentStatus.DEAD:
            agent.status = AgentStatus.IDLE if agent.agent_id not in self.jobs else agent.status
            log.info("swarm.agent_back", agent_id=agent.agent_id)

    def _place(self, agent: AgentState, location: Vec) -> None:
        """Record a reported position. A report never changes the reservation of an agent with
        work in hand: reports can be stale (resent after a reconnect, reordered), so the whole
        swept segment stays reserved until the command itself finishes.

        A position no probe can have (not finite, beyond 1 mm) is ignored and reported: the
        wire refuses such reports, so one here is a bug worth seeing in /health."""
        if not all(math.isfinite(v) and abs(v) <= MAX_POSITION_UNITS for v in location):
            log.warning("swarm.position_ignored", agent_id=agent.agent_id)
            self.supervisor.record_failure(
                "swarm-coordinator", ValueError(f"agent {agent.agent_id} reported {location}")
            )
            return
        if agent.home is None:
            agent.home = location  # where it first stood: a spread-out place to step aside to
        agent.location = location
        agent.position = _point(location)
        agent.last_update = self.clock.now()
        if agent.agent_id not in self.jobs and agent.agent_id not in self._halting:
            before = self.reservations.version
            self.reservations.park(agent.agent_id, location)
            if self.reservations.version != before:
                self._check_parked_clear(agent, location)

    def _check_parked_clear(self, agent: AgentState, location: Vec) -> None:
        """A standing agent reported inside the separation of another agent's reserved path
        (a stale or drifted report the plan did not know): the mover would pass too close, so
        E-stop. Closer than the clearance but not the separation is what the margin is for."""
        nearest = self.reservations.nearest(agent.agent_id, location)
        if nearest is None or nearest[1] >= self.limits.separation_units:
            return
        other, distance = nearest
        self.metrics.separation_alerts.inc()
        self.halt(
            f"agent {agent.agent_id} reported {distance / UNITS_PER_NM:.2f} nm from the "
            f"reserved path of {other}"
        )

    def _check_separation(self) -> None:
        live = sorted(
            (a.agent_id, a.xyz) for a in self.agents.values() if a.status is not AgentStatus.DEAD
        )
        pair = closest_violation([xyz for _, xyz in live], self.limits.separation_units)
        if pair is None:
            return
        i, j, distance = pair
        self.metrics.separation_alerts.inc()
        self.halt(
            f"agents {live[i][0]} and {live[j][0]} reported {distance / UNITS_PER_NM:.2f} nm apart"
        )

    def halt(self, reason: str) -> None:
        """E-stop: stop every agent and issue no further movement until :meth:`resume`."""
        if self.halted:
            return
        self.halted = True
        self.halt_reason = reason
        self.metrics.halts.inc()
        log.error("swarm.halt", reason=reason)
        self._service_event("halt", reason)  # an E-stop survives a restart
        self._halt_everyone()

    def _halt_everyone(self) -> None:
        for agent in self.agents.values():
            if agent.status is not AgentStatus.DEAD:
                self._outbox.put_nowait(self._halt_command(agent))

    def resume(self) -> None:
        if self.halted:
            self._service_event("resume", self.halt_reason)
        self.halted = False
        self.halt_reason = None
        self._wake.set()

    def _service_event(self, event: str, detail: str | None) -> None:
        if self.writer is not None:
            self.writer.put(
                "event",
                {
                    "at": self.clock.now().isoformat(),
                    "event": event,
                    "defect_id": None,
                    "command_id": None,
                    "agent_id": None,
                    "detail": detail,
                    "correlation_id": current_correlation_id(),
                },
            )

    def _halt_command(self, agent: AgentState) -> Command:
        return Command(
            command_id=f"halt-{uuid.uuid4().hex[:16]}",
            defect_id="",
            agent_id=agent.agent_id,
            action=Action.HALT,
            target=agent.position,
            thermal_budget_c=self.limits.max_temperature_c,
            correlation_id=uuid.uuid4().hex[:16],
            created_at=self.clock.now(),
        )

    def check_agents(self) -> list[str]:
        """Declare agents silent for ``missed_heartbeats`` intervals failed; stuck commands too."""
        if not self._link_connected():
            return []
        now = self.clock.monotonic()
        deadline = self.settings.heartbeat_interval_s * self.settings.missed_heartbeats
        failed: list[str] = []
        for agent in list(self.agents.values()):
            if agent.status is AgentStatus.DEAD:
                continue
            if now - agent.last_heartbeat > deadline:
                self.fail_agent(agent.agent_id, "missed heartbeats", dead=True)
                failed.append(agent.agent_id)
                continue
            job = self.jobs.get(agent.agent_id)
            if job is not None and now - job.started_at > self._command_timeout(agent, job):
                self.fail_agent(agent.agent_id, "command timed out", dead=False)
                failed.append(agent.agent_id)
        return failed

    def _command_timeout(self, agent: AgentState, job: Job) -> float:
        defect = self.defects.get(job.defect_id)
        travel = 0.0
        if defect is not None and agent.speed_units_s:
            travel = math.dist(agent.xyz, _vec(defect.position)) / agent.speed_units_s
        return self.settings.command_timeout_s + 3 * travel

    def fail_agent(self, agent_id: str, reason: str, *, dead: bool) -> None:
        """Take the agent out of service and give its work to others (property 22)."""
        agent = self.agents[agent_id]
        agent.status = AgentStatus.DEAD if dead else AgentStatus.ERROR
        self.metrics.agent_failures.labels(reason=reason).inc()
        log.warning("swarm.agent_failed", agent_id=agent_id, reason=reason)
        job = self.jobs.pop(agent_id, None)
        agent.current_command = None
        halt = self._halt_command(agent)
        self._outbox.put_nowait(halt)
        if dead:
            # A silent agent is taken to stand where it was last heard (the simulator's dead
            # agents stop), so the defect it was heading for can be given to another agent.
            self.reservations.park(agent.agent_id, agent.xyz)
        else:
            # A live one may still be moving until the halt lands: keep its path reserved.
            self._halting[agent_id] = halt.command_id
        if job is not None:
            command = self.book.find(job.command_id)
            if command is not None and not command.status.terminal:
                self.book.advance(
                    command.command_id,
                    CommandStatus.FAILED,
                    at=self.clock.now(),
                    detail=f"agent failed: {reason}",
                )
                self.metrics.commands.labels(action=command.action.value, status="failed").inc()
                self._save_command(command)
            defect = self.defects.get(job.defect_id)
            if defect is not None and not defect.status.terminal:
                self._failed_at[defect.defect_id] = self.clock.monotonic()
                self.metrics.reassignments.inc()
                self._release(defect, agent, f"agent {agent_id} failed: {reason}")
        agent.status = AgentStatus.DEAD if dead else AgentStatus.ERROR
        self._save_agent(agent)
        self._wake.set()

    # --- workers ----------------------------------------------------------------------------

    async def _plan_worker(self) -> None:
        while True:
            await self._inbox_ready.wait()
            try:
                await self.plan_pending()
            except Exception as exc:  # one batch that cannot be planned must not stop the rest
                self.supervisor.record_failure("swarm-planner", exc)
            await asyncio.sleep(0)

    async def _dispatch_worker(self) -> None:
        if self._warm is not None:
            with contextlib.suppress(Exception):
                await self._warm  # scipy imported off the loop first
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.dispatch()
            except Exception as exc:
                self.supervisor.record_failure("swarm-dispatcher", exc)
                await asyncio.sleep(DISPATCH_ERROR_PAUSE_S)  # no hot loop on a repeating fault
            # Events arriving meanwhile are served by one round, not one round each.
            await asyncio.sleep(DISPATCH_COALESCE_S)

    async def _send_worker(self) -> None:
        while True:
            command = await self._outbox.get()
            await self._deliver(command)

    async def flush_outbox(self) -> int:
        """Hand every command issued so far to the link now; returns how many."""
        count = 0
        while not self._outbox.empty():
            await self._deliver(self._outbox.get_nowait())
            count += 1
        return count

    async def _deliver(self, command: Command) -> None:
        if self.send is None:
            return
        payload = self.wire_payload(command)
        try:
            with correlation_scope(command.correlation_id):
                await self.send(payload, idempotency_key=command.command_id)
        except Exception as exc:
            log.error("swarm.command_send_failed", command_id=command.command_id)
            self.supervisor.record_failure("swarm-sender", exc)
            return
        log.info(
            "swarm.command_sent",
            command_id=command.command_id,
            agent_id=command.agent_id,
            action=payload["action"],
            correlation_id=command.correlation_id,
        )

    async def _watch_worker(self) -> None:
        period = max(self.settings.heartbeat_interval_s / 4, WATCHDOG_MIN_PERIOD_S)
        while True:
            await self.clock.sleep_async(period)
            if self._wake.is_set():
                await asyncio.sleep(0)
            try:
                self.check_agents()
            except Exception as exc:
                self.supervisor.record_failure("swarm-watchdog", exc)

    # --- persistence and bookkeeping --------------------------------------------------------

    def _advance(self, command: Command, status: CommandStatus, detail: str | None) -> None:
        self.book.advance(command.command_id, status, at=self.clock.now(), detail=detail)
        self.metrics.commands.labels(action=command.action.value, status=status.value).inc()
        self._save_command(command)
        log.info(
            "swarm.command_status",
            command_id=command.command_id,
            status=status.value,
            correlation_id=command.correlation_id,
        )

    def _save_defect(self, defect: Defect) -> None:
        if self.writer is not None:
            self.writer.put("defect", defect_row(defect))

    def _save_command(self, command: Command) -> None:
        if self.writer is not None:
            self.writer.put("command", command_row(command))

    def _save_agent(self, agent: AgentState) -> None:
        self._saved_at[agent.agent_id] = agent.xyz
        if self.writer is not None:
            self.writer.put("agent", agent_row(agent))

    def _event(
        self,
        event: str,
        defect: Defect,
        *,
        detail: str | None = None,
        command: Command | None = None,
    ) -> None:
        if self.writer is None:
            return
        self.writer.put(
            "event",
            {
                "at": self.clock.now().isoformat(),
                "event": event,
                "defect_id": defect.defect_id,
                "command_id": command.command_id if command else None,
                "agent_id": command.agent_id if command else defect.agent_id,
                "detail": detail,
                "correlation_id": defect.correlation_id,
            },
        )

    def _bind_gauges(self) -> None:
        """Gauges read the state when scraped: nothing to update on the request path."""
        self.metrics.queue_depth.set_function(lambda: len(self.queue))
        self.metrics.pending_operations.set_function(lambda: len(self._active_keys))
        for status in AgentStatus:
            self.metrics.agents.labels(status=status.value).set_function(
                lambda s=status: sum(1 for a in self.agents.values() if a.status is s)  # type: ignore[misc]
            )

    # --- restart ----------------------------------------------------------------------------

    def restore(
        self,
        defects: Sequence[Defect],
        commands: Sequence[Command],
        agents: Sequence[AgentState],
        *,
        halt_reason: str | None = None,
    ) -> None:
        """Resume from a snapshot: queue what waited, keep in-flight commands to resend. An
        E-stop that was not cleared before the stop stays in force (``halt_reason``)."""
        now = self.clock.monotonic()
        if halt_reason is not None:
            self.halted, self.halt_reason = True, halt_reason
            log.error("swarm.still_halted", reason=halt_reason)
        self.book.load(commands)
        for agent in agents:
            agent.last_heartbeat = now
            if agent.status not in (AgentStatus.DEAD,):
                agent.status = AgentStatus.IDLE
            self.agents[agent.agent_id] = agent
            self.reservations.park(agent.agent_id, agent.xyz)
        in_hand: set[str] = set()
        for command in self.book.active():
            owner = self.agents.get(command.agent_id)
            if owner is None or owner.agent_id in self.jobs or owner.status is AgentStatus.DEAD:
                self._advance(command, CommandStatus.FAILED, "not resumable after a restart")
                continue
            # The simulator may still be executing it: keep its whole path reserved and send
            # it again with the same key (a finished key is answered from the simulator's record).
            self.jobs[owner.agent_id] = Job(
                command.defect_id, owner.agent_id, command.command_id, now
            )
            owner.current_command = command.command_id
            owner.status = AgentStatus.MOVING
            self.reservations.reserve(owner.agent_id, owner.xyz, _vec(command.target))
            self._resend_on_link_up.append(command.command_id)
            in_hand.add(command.defect_id)
        for defect in defects:
            self.defects[defect.defect_id] = defect
            self._seq = max(self._seq, defect.seq)
            if defect.status.terminal:
                continue
            self._active_keys[defect.dedupe_key] = defect.defect_id
            if defect.defect_id in in_hand:
                defect.status = DefectStatus.REPAIRING
            else:
                defect.status = DefectStatus.QUEUED
                defect.agent_id = None
                self._rank += 1
                self.queue.push(defect, rank=self._rank)
        log.info(
            "swarm.restored",
            defects=len(self.defects),
            queued=len(self.queue),
            in_flight=len(self._resend_on_link_up),
        )
