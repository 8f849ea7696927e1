"""The swarm simulator's physics: agents moving, heating and repairing on the shared surface.

Deterministic for a seed and a sequence of commands: :meth:`SwarmWorld.step` advances time in
fixed ticks, every random draw comes from a seeded stream, and a ground-truth log records what
really happened (positions, executions, repairs, separation) so tests need not trust the
coordinator's bookkeeping::

    world = SwarmWorld(SwarmConfig(agents=4, seed=1), ground_truth=GroundTruthLog(path))
    world.submit(CommandPayload(...), idempotency_key="c1")
    events = world.step(0.1)       # command results and proximity alerts to report
"""

from __future__ import annotations

import json
import math
import random
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from atomlab.core.errors import InvalidInputError
from atomlab.sim.swarm_wire import (
    AgentInfo,
    AgentState,
    AgentStatusPayload,
    Bounds,
    CommandPayload,
    CommandResultPayload,
    GroundTruthPayload,
    Position,
    ProximityAlertPayload,
    SensorDataPayload,
    SensorReading,
    units_to_nm,
)
from atomlab.surface import UNITS_PER_NM, Surface

AMBIENT_C = 25.0
SENSOR_BATCH = 1000  # readings per sensor_data frame the simulator sends


@dataclass(frozen=True)
class FaultConfig:
    """How often things go wrong; rates are per second of simulated time, probs per event."""

    drop_prob: float = 0.0  # an outgoing or incoming frame is lost
    duplicate_prob: float = 0.0  # an outgoing frame is sent twice
    ack_loss_prob: float = 0.0  # an ack this side owes is never sent
    malformed_prob: float = 0.0  # a garbage frame is sent before a real one
    disconnect_rate_per_s: float = 0.0  # the connection is cut
    disconnect_every_s: float | None = None  # ... or cut on a fixed period
    agent_death_rate_per_s: float = 0.0  # per agent
    max_dead_agents: int = 0
    stuck_prob: float = 0.0  # a command hangs (acked, never finished) until halted

    def __post_init__(self) -> None:
        for name in (
            "drop_prob",
            "duplicate_prob",
            "ack_loss_prob",
            "malformed_prob",
            "stuck_prob",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidInputError(
                    f"fault {name} must be between 0 and 1, got {value}", field=name, value=value
                )
        for name in ("disconnect_rate_per_s", "agent_death_rate_per_s"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"fault {name} must be >= 0", field=name)
        if self.disconnect_every_s is not None and self.disconnect_every_s <= 0:
            raise InvalidInputError("disconnect_every_s must be > 0", field="disconnect_every_s")


class FaultInjector:
    """Seeded fault decisions; each kind of fault draws from its own stream.

    Separate streams keep one kind's decisions independent of how often another was asked,
    so the same seed gives the same drops, deaths and hangs whatever the network timing.
    """

    def __init__(self, config: FaultConfig, seed: int) -> None:
        self.config = config
        self._streams: dict[str, random.Random] = {}
        self._seed = seed
        self._next_disconnect = config.disconnect_every_s
        self.counts: dict[str, int] = {}

    def _draw(self, kind: str, probability: float) -> bool:
        if probability <= 0.0:
            return False
        stream = self._streams.get(kind)
        if stream is None:
            stream = self._streams[kind] = random.Random(f"swarm-fault:{self._seed}:{kind}")
        hit = stream.random() < probability
        if hit:
            self.counts[kind] = self.counts.get(kind, 0) + 1
        return hit

    def drop(self) -> bool:
        return self._draw("drop", self.config.drop_prob)

    def duplicate(self) -> bool:
        return self._draw("duplicate", self.config.duplicate_prob)

    def lose_ack(self) -> bool:
        return self._draw("ack_loss", self.config.ack_loss_prob)

    def malformed(self) -> bool:
        return self._draw("malformed", self.config.malformed_prob)

    def stuck(self) -> bool:
        return self._draw("stuck", self.config.stuck_prob)

    def agent_dies(self, dt: float) -> bool:
        return self._draw("death", 1.0 - math.exp(-self.config.agent_death_rate_per_s * dt))

    def disconnect(self, t: float, dt: float) -> bool:
        """Should the link be cut in the tick ending at simulated time ``t``?"""
        every = self.config.disconnect_every_s
        if every is not None and self._next_disconnect is not None and t >= self._next_disconnect:
            self._next_disconnect += every
            self.counts["disconnect"] = self.counts.get("disconnect", 0) + 1
            return True
        return self._draw("disconnect", 1.0 - math.exp(-self.config.disconnect_rate_per_s * dt))


@dataclass(frozen=True)
class SwarmConfig:
    """The simulated swarm and surface (lengths in nm, times in simulated seconds)."""

    agents: int = 16
    seed: int = 0
    width_nm: float = 20.0
    height_nm: float = 20.0
    defects: int = 12
    speed_nm_s: float = 2.0
    tick_s: float = 0.1
    repair_s: float = 2.0
    scan_s: float = 0.5
    heat_rate_c_s: float = 20.0
    cooling_tau_s: float = 8.0
    repair_success_prob: float = 0.8
    silent_failure_fraction: float = 0.25  # failed repairs the agent reports as done
    severity_penalty: float = 0.3  # severity 10 repairs succeed this much less often
    drift_prob: float = 0.1  # an arrival lands one lattice step off target
    drift_max_units: int = 1
    reach_units: int = 2  # a repair/scan acts on defects this close (0.1 nm units)
    separation_nm: float = 0.5
    halt_on_proximity: bool = True
    heartbeat_interval_s: float = 10.0
    status_interval_s: float = 0.5
    faults: FaultConfig = field(default_factory=FaultConfig)

    def __post_init__(self) -> None:
        checks = {
            "agents": self.agents >= 1,
            "width_nm": self.width_nm >= 1.0,
            "height_nm": self.height_nm >= 1.0,
            "defects": self.defects >= 0,
            "speed_nm_s": self.speed_nm_s > 0,
            "tick_s": self.tick_s > 0,
            "repair_success_prob": 0.0 <= self.repair_success_prob <= 1.0,
            "drift_prob": 0.0 <= self.drift_prob <= 1.0,
            "heartbeat_interval_s": self.heartbeat_interval_s > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise InvalidInputError(
                    f"swarm simulator setting {name}={getattr(self, name)!r} is out of range",
                    field=name,
                    value=getattr(self, name),
                )


class GroundTruthLog:
    """What really happened, one JSON object per line (``kind``: meta, tick, execute, result,
    repair, violation, fault, summary); positions in nm."""

    def __init__(self, path: Path | str, *, append: bool = False) -> None:
        self.path = Path(path)
        # Line-buffered: the log can be followed live, and a killed run leaves whole lines.
        mode = "a" if append else "w"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] | None = self.path.open(mode, encoding="utf-8", buffering=1)
        except OSError as exc:
            raise InvalidInputError(
                f"cannot write the ground-truth log {str(self.path)[:200]!r}: "
                f"{exc.strerror or exc}; pass a file path in a writable folder to --ground-truth",
                field="ground_truth",
                value=str(self.path)[:200],
            ) from None

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_ground_truth(path: Path | str) -> list[dict[str, Any]]:
    """The records of a ground-truth log; a last line cut short by a killed run is skipped."""
    records: list[dict[str, Any]] = []
    try:
        with Path(path).open(encoding="utf-8") as handle:
            lines = [line for line in handle if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        reason = "it is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror
        raise InvalidInputError(
            f"cannot read the ground-truth log {str(path)[:200]!r}: {reason}; is this a "
            "ground-truth log?",
            path=str(path)[:200],
        ) from None
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            records.append(record)
        except (ValueError, RecursionError):
            if number == len(lines) and not line.endswith("\n"):
                break
            raise InvalidInputError(
                f"{path}: line {number} is not JSON; is this a ground-truth log?",
                path=str(path),
                line=number,
            ) from None
    return records


@dataclass
class _Job:
    command: CommandPayload
    key: str
    path: list[tuple[float, float]]
    phase: str = "move"  # move -> act
    remaining_s: float = 0.0
    started_t: float = 0.0
    stuck: bool = False


@dataclass
class _Agent:
    agent_id: str
    x: float  # 0.1 nm units
    y: float
    success_prob: float
    temperature_c: float = AMBIENT_C
    alive: bool = True
    halted: bool = False
    job: _Job | None = None
    queue: deque[_Job] = field(default_factory=deque)

    @property
    def status(self) -> str:
        if self.job is None:
            return "halted" if self.halted else "idle"
        if self.job.stuck:
            return "stuck"
        if self.job.phase == "move":
            return "moving"
        return {"repair": "repairing", "scan": "scanning"}.get(self.job.command.action, "moving")

    def position(self) -> Position:
        return Position(x=round(self.x / UNITS_PER_NM, 4), y=round(self.y / UNITS_PER_NM, 4))


Event = CommandResultPayload | ProximityAlertPayload


class SwarmWorld:
    """Agents on a surface, advanced tick by tick; never touches the network."""

    def __init__(
        self,
        config: SwarmConfig,
        *,
        surface: Surface | None = None,
        ground_truth: GroundTruthLog | None = None,
        faults: FaultInjector | None = None,
    ) -> None:
        self.config = config
        self.width = round(config.width_nm * UNITS_PER_NM)
        self.height = round(config.height_nm * UNITS_PER_NM)
        self.surface = surface or Surface.generate(
            config.seed, width=self.width, height=self.height, n_defects=config.defects, n_steps=1
        )
        self.faults = faults or FaultInjector(config.faults, config.seed)
        self.ground_truth = ground_truth
        self.t = 0.0
        self.ticks = 0
        self._rng = random.Random(f"swarm-world:{config.seed}")
        self._separation = config.separation_nm * UNITS_PER_NM
        self._executions: dict[str, CommandResultPayload | None] = {}
        self._halted_pairs: set[tuple[str, str]] = set()
        # Results of commands cut off by a restart, to report once connected (see resume()).
        self.restart_results: list[CommandResultPayload] = []
        self.min_separation_nm: float | None = None
        self.violations = 0
        self.repairs_succeeded = 0
        self.repairs_failed = 0
        self.agents = self._place_agents()
        self._write_meta()

    @classmethod
    def resume(
        cls, config: SwarmConfig, path: Path | str, *, faults: FaultInjector | None = None
    ) -> SwarmWorld:
        """Continue the world a ground-truth log left off (after a stop, a crash or a kill).

        Repaired defects stay repaired, agents stand where they last stood (cooled down), dead
        agents stay dead, and no key the log shows as executed runs again: a key cut off
        mid-command answers ``failed`` with reason ``simulator_restarted``. Later lines are
        appended to the same log.
        """
        records = read_ground_truth(path)
        if not records or records[0].get("kind") != "meta":
            raise InvalidInputError(
                f"{path} does not start with a meta record; is it a ground-truth log?",
                path=str(path),
            )
        world = cls(config, faults=faults)  # no log attached yet: no second meta line
        meta = records[0]
        same = (
            meta.get("seed") == config.seed
            and sorted(meta.get("agents", {})) == sorted(world.agents)
            and meta.get("defects") == [d.to_dict() for d in world.surface.defects]
        )
        if not same:
            raise InvalidInputError(
                f"{path} was written by another world (seed {meta.get('seed')}, "
                f"{len(meta.get('agents', {}))} agents); resume with the same --seed, --agents "
                "and surface options, or start a new log",
                path=str(path),
                seed=meta.get("seed"),
            )
        try:
            cut_off = world._replay(records[1:])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidInputError(
                f"{path} holds a record this simulator cannot replay ({type(exc).__name__}: "
                f"{str(exc)[:100]}); start a new log without --resume",
                path=str(path),
            ) from None
        world.ground_truth = GroundTruthLog(path, append=True)
        world._log({"kind": "resume", "t": round(world.t, 6), "cut_off": sorted(cut_off)})
        for key, command in sorted(cut_off.items()):
            result = world._record(
                CommandResultPayload(
                    command_id=command["command_id"],
                    agent_id=command["agent_id"],
                    idempotency_key=key,
                    action=command["action"],
                    status="failed",
                    reason="simulator_restarted",
                )
            )
            world.restart_results.append(result)
        return world

    def _replay(self, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Apply a log's records; returns the executions that never finished."""
        started: dict[str, dict[str, Any]] = {}
        for record in records:
            kind = record.get("kind")
            self.t = max(self.t, float(record.get("t", 0.0)))
            if kind == "tick":
                self.ticks += 1
                for agent_id, (x, y) in record["positions"].items():
                    if agent_id in self.agents:
                        self.agents[agent_id].x = x * UNITS_PER_NM
                        self.agents[agent_id].y = y * UNITS_PER_NM
                gap = record.get("min_sep_nm")
                if gap is not None and (
                    self.min_separation_nm is None or gap < self.min_separation_nm
                ):
                    self.min_separation_nm = gap
            elif kind == "execute":
                started[record["key"]] = record
                self._executions.setdefault(record["key"], None)
            elif kind == "result" and "result" in record:
                self._executions[record["key"]] = CommandResultPayload.model_validate(
                    record["result"]
                )
                started.pop(record["key"], None)
            elif kind == "repair":
                if record["success"]:
                    self.repairs_succeeded += 1
                    if any(d.id == record["defect_id"] for d in self.surface.defects):
                        self.surface.remove_defect(record["defect_id"])
                else:
                    self.repairs_failed += 1
            elif kind == "fault" and record.get("fault") == "agent_dead":
                if record.get("agent_id") in self.agents:
                    self.agents[record["agent_id"]].alive = False
            elif kind == "violation":
                self.violations += 1
        return started

    # --- setup ------------------------------------------------------------------------------

    def _place_agents(self) -> dict[str, _Agent]:
        n = self.config.agents
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        agents: dict[str, _Agent] = {}
        for i in range(n):
            row, col = divmod(i, cols)
            x = round((col + 1) * self.width / (cols + 1))
            y = round((row + 1) * self.height / (rows + 1))
            spread = self._rng.uniform(-0.1, 0.1)
            agent_id = f"agent-{i:02d}"
            prob = min(max(self.config.repair_success_prob + spread, 0.0), 1.0)
            agents[agent_id] = _Agent(agent_id, float(x), float(y), success_prob=prob)
        spacing = min(self.width / (cols + 1), self.height / (rows + 1))
        if n > 1 and spacing < self._separation:
            raise InvalidInputError(
                f"{n} agents do not fit {self.config.width_nm} x {self.config.height_nm} nm with "
                f"{self.config.separation_nm} nm between them; use fewer agents or a larger "
                "surface",
                field="agents",
                value=n,
            )
        return agents

    def _write_meta(self) -> None:
        self._log(
            {
                "kind": "meta",
                "seed": self.config.seed,
                "separation_nm": self.config.separation_nm,
                "config": asdict(self.config),
                "agents": {
                    a.agent_id: [a.position().x, a.position().y] for a in self.agents.values()
                },
                "defects": [d.to_dict() for d in self.surface.defects],
            }
        )

    # --- what the link asks -----------------------------------------------------------------

    def bounds(self) -> Bounds:
        return Bounds(x_max=units_to_nm(self.width), y_max=units_to_nm(self.height))

    def agent_infos(self) -> list[AgentInfo]:
        return [
            AgentInfo(
                agent_id=a.agent_id,
                position=a.position(),
                status=a.status,
                temperature_c=round(a.temperature_c, 2),
                speed_nm_s=self.config.speed_nm_s,
            )
            for a in self.agents.values()
            if a.alive
        ]

    def alive(self) -> list[str]:
        return [a.agent_id for a in self.agents.values() if a.alive]

    def status(self) -> AgentStatusPayload:
        return AgentStatusPayload(
            t_s=round(self.t, 6),
            agents=[
                AgentState(
                    agent_id=a.agent_id,
                    position=a.position(),
                    status=a.status,
                    temperature_c=round(a.temperature_c, 2),
                    current_command_id=a.job.command.command_id if a.job else None,
                    queued_commands=len(a.queue),
                )
                for a in self.agents.values()
                if a.alive
            ],
        )

    def sensor_data(self) -> SensorDataPayload:
        """A scan of the whole surface: every defect still there (one payload; a surface with
        more than the wire's 10,000 readings per frame needs :meth:`sensor_reports`)."""
        return SensorDataPayload(coordinates=self._readings())

    def sensor_reports(self, batch: int = SENSOR_BATCH) -> list[SensorDataPayload]:
        """The same scan as payloads of at most ``batch`` readings (what the simulator sends)."""
        readings = self._readings()
        return [
            SensorDataPayload(coordinates=readings[start : start + batch])
            for start in range(0, len(readings), batch)
        ]

    def _readings(self) -> list[SensorReading]:
        return [
            SensorReading(
                x=units_to_nm(d.x),
                y=units_to_nm(d.y),
                defect_type=d.kind.value,
                severity=d.severity,
                defect_id=f"d{d.id}",
            )
            for d in self.surface.defects
        ]

    def summary(self) -> GroundTruthPayload:
        return GroundTruthPayload(
            t_s=round(self.t, 6),
            ticks=self.ticks,
            min_separation_nm=self.min_separation_nm,
            violations=self.violations,
            repairs_succeeded=self.repairs_succeeded,
            repairs_failed=self.repairs_failed,
            commands_executed=len(self._executions),
            defects_remaining=len(self.surface.defects),
        )

    def submit(self, command: CommandPayload, idempotency_key: str) -> list[CommandResultPayload]:
        """Accept one command; a repeated key is never executed again.

        Returns results to report now: the stored result of a finished repeat, a refusal, or
        the end of a halt. Commands to a dead agent are swallowed (it cannot answer).
        """
        if idempotency_key in self._executions:
            stored = self._executions[idempotency_key]
            if stored is None:
                return []
            # Answered from the record, but with where the agent stands *now*: the recorded
            # position can be long out of date (a service restarted after a crash resends a
            # command the agent finished before doing more work, and parks the agent where the
            # answer says it is; found end to end: E-stop at 0.48 nm).
            holder = self.agents.get(stored.agent_id)
            if holder is None or stored.position is None:
                return [stored]
            now = {"position": holder.position(), "temperature_c": round(holder.temperature_c, 2)}
            return [stored.model_copy(update=now)]
        self._executions[idempotency_key] = None
        agent = self.agents.get(command.agent_id)
        self._log(
            {
                "kind": "execute",
                "t": round(self.t, 6),
                "key": idempotency_key,
                "command_id": command.command_id,
                "agent_id": command.agent_id,
                "action": command.action,
                "target": command.target.model_dump() if command.target else None,
            }
        )
        if agent is None:
            return [self._finish_unstarted(command, idempotency_key, "unknown_agent")]
        if not agent.alive:
            return []
        if command.action == "halt":
            return self._halt(agent, command, idempotency_key)
        assert command.target is not None
        tx, ty, _ = command.target.units()
        if not (0 <= tx <= self.width and 0 <= ty <= self.height):
            return [self._finish_unstarted(command, idempotency_key, "out_of_bounds")]
        waypoints = [(float(p.units()[0]), float(p.units()[1])) for p in command.waypoints]
        agent.queue.append(_Job(command, idempotency_key, [*waypoints, (float(tx), float(ty))]))
        agent.halted = False
        return []

    # --- time -------------------------------------------------------------------------------

    def step(self, dt: float | None = None) -> list[Event]:
        """Advance ``dt`` simulated seconds (one tick by default)."""
        dt = self.config.tick_s if dt is None else dt
        self.t += dt
        self.ticks += 1
        before = {a.agent_id: (a.x, a.y) for a in self.agents.values()}
        events: list[Event] = []
        for agent in self.agents.values():
            if agent.alive:
                events.extend(self._advance(agent, dt))
        events.extend(self._check_separation(before))
        return events

    def _advance(self, agent: _Agent, dt: float) -> list[Event]:
        if self.faults.agent_dies(dt) and self._dead() < self.config.faults.max_dead_agents:
            agent.alive = False
            agent.job = None
            agent.queue.clear()
            self._log(
                {
                    "kind": "fault",
                    "t": round(self.t, 6),
                    "fault": "agent_dead",
                    "agent_id": agent.agent_id,
                }
            )
            return []
        events: list[Event] = []
        if agent.job is None and agent.queue:
            agent.job = agent.queue.popleft()
            agent.job.started_t = self.t
            agent.job.stuck = self.faults.stuck()
            if agent.job.stuck:
                self._log(
                    {
                        "kind": "fault",
                        "t": round(self.t, 6),
                        "fault": "stuck",
                        "agent_id": agent.agent_id,
                        "key": agent.job.key,
                    }
                )
            events.append(self._result(agent, agent.job, "processing"))
        job = agent.job
        heating = False
        if job is not None and not job.stuck:
            if job.phase == "move":
                self._move(agent, job, dt)
            else:
                heating = job.command.action == "repair"
                if heating:
                    agent.temperature_c += self.config.heat_rate_c_s * dt
                job.remaining_s -= dt
                if heating and agent.temperature_c > job.command.thermal_budget_c:
                    events.append(self._end(agent, job, "failed", "thermal_budget_exceeded"))
                elif job.remaining_s <= 1e-9:
                    events.append(self._complete(agent, job))
        if not heating:
            decay = math.exp(-dt / self.config.cooling_tau_s)
            agent.temperature_c = AMBIENT_C + (agent.temperature_c - AMBIENT_C) * decay
        return events

    def _move(self, agent: _Agent, job: _Job, dt: float) -> None:
        budget = self.config.speed_nm_s * UNITS_PER_NM * dt
        while budget > 1e-9 and job.path:
            wx, wy = job.path[0]
            dx, dy = wx - agent.x, wy - agent.y
            dist = math.hypot(dx, dy)
            if dist <= budget:
                agent.x, agent.y = wx, wy
                budget -= dist
                job.path.pop(0)
            else:
                agent.x += dx / dist * budget
                agent.y += dy / dist * budget
                budget = 0.0
        if not job.path:
            self._drift(agent)
            job.phase = "act"
            job.remaining_s = {"repair": self.config.repair_s, "scan": self.config.scan_s}.get(
                job.command.action, 0.0
            )

    def _drift(self, agent: _Agent) -> None:
        if self._rng.random() >= self.config.drift_prob:
            return
        step = self._rng.randint(1, max(self.config.drift_max_units, 1))
        dx, dy = self._rng.choice([(step, 0), (-step, 0), (0, step), (0, -step)])
        agent.x = float(min(max(agent.x + dx, 0), self.width))
        agent.y = float(min(max(agent.y + dy, 0), self.height))

    def _complete(self, agent: _Agent, job: _Job) -> CommandResultPayload:
        action = job.command.action
        if action == "scan":
            present = bool(self._defects_near(agent))
            return self._end(agent, job, "completed", None, defect_present=present)
        if action != "repair":
            return self._end(agent, job, "completed", None)
        near = self._defects_near(agent)
        if not near:
            return self._end(agent, job, "completed", None, repaired=True)
        defect = min(near, key=lambda d: math.hypot(d.x - agent.x, d.y - agent.y))
        penalty = self.config.severity_penalty * (defect.severity - 1) / 9
        success = self._rng.random() < agent.success_prob * (1.0 - penalty)
        self._log(
            {
                "kind": "repair",
                "t": round(self.t, 6),
                "defect_id": defect.id,
                "agent_id": agent.agent_id,
                "success": success,
            }
        )
        if success:
            self.surface.remove_defect(defect.id)
            self.repairs_succeeded += 1
            return self._end(agent, job, "completed", None, repaired=True)
        self.repairs_failed += 1
        if self._rng.random() < self.config.silent_failure_fraction:
            return self._end(agent, job, "completed", None, repaired=True)  # only a scan tells
        return self._end(agent, job, "failed", "repair_failed", repaired=False)

    def _defects_near(self, agent: _Agent) -> list[Any]:
        x, y = round(agent.x), round(agent.y)
        reach = self.config.reach_units
        return [
            d
            for d in self.surface.defects
            if abs(d.x - x) <= reach
            and abs(d.y - y) <= reach
            and math.hypot(d.x - x, d.y - y) <= reach
        ]

    def _halt(self, agent: _Agent, command: CommandPayload, key: str) -> list[CommandResultPayload]:
        results = []
        for job in [*([agent.job] if agent.job else []), *agent.queue]:
            results.append(self._end(agent, job, "failed", "halted"))
        agent.job = None
        agent.queue.clear()
        agent.halted = True
        results.append(self._finish_unstarted(command, key, None, agent=agent))
        return results

    def _check_separation(self, before: dict[str, tuple[float, float]]) -> list[Event]:
        ids = list(self.agents)
        start = np.array([before[i] for i in ids], dtype=np.float64)
        end = np.array([(self.agents[i].x, self.agents[i].y) for i in ids], dtype=np.float64)
        moved = bool(np.any(start != end))
        events: list[Event] = []
        if len(ids) >= 2:
            rows, cols = np.triu_indices(len(ids), k=1)
            d0 = start[rows] - start[cols]
            vel = (end[rows] - start[rows]) - (end[cols] - start[cols])
            speed2 = np.einsum("ij,ij->i", vel, vel)
            s = np.where(speed2 > 0, -np.einsum("ij,ij->i", d0, vel) / np.maximum(speed2, 1e-12), 0)
            s = np.clip(s, 0.0, 1.0)
            closest = np.hypot(*(d0 + vel * s[:, None]).T)
            k = int(np.argmin(closest))
            tick_min = float(closest[k]) / UNITS_PER_NM
            if self.min_separation_nm is None or tick_min < self.min_separation_nm:
                self.min_separation_nm = round(tick_min, 6)
            violating = {
                (ids[rows[idx]], ids[cols[idx]]): float(closest[idx])
                for idx in np.nonzero(closest < self._separation - 1e-9)[0]
            }
            for pair, distance in violating.items():
                if pair not in self._halted_pairs:  # a pair is reported once per encounter
                    events.extend(self._violation(*pair, distance))
            self._halted_pairs = set(violating)
        else:
            tick_min = None
        if moved or self.ticks == 1:
            self._log(
                {
                    "kind": "tick",
                    "t": round(self.t, 6),
                    "positions": {
                        a.agent_id: [round(a.x / UNITS_PER_NM, 4), round(a.y / UNITS_PER_NM, 4)]
                        for a in self.agents.values()
                    },
                    "min_sep_nm": None if tick_min is None else round(tick_min, 6),
                }
            )
        return events

    def _violation(self, a: str, b: str, distance_units: float) -> list[Event]:
        self.violations += 1
        distance_nm = round(distance_units / UNITS_PER_NM, 4)
        self._log(
            {
                "kind": "violation",
                "t": round(self.t, 6),
                "agents": [a, b],
                "distance_nm": distance_nm,
            }
        )
        events: list[Event] = [
            ProximityAlertPayload(
                agent_ids=[a, b],
                distance_nm=distance_nm,
                positions={i: self.agents[i].position() for i in (a, b)},
                t_s=round(self.t, 6),
            )
        ]
        if self.config.halt_on_proximity:
            for agent_id in (a, b):
                agent = self.agents[agent_id]
                for job in [*([agent.job] if agent.job else []), *agent.queue]:
                    events.append(self._end(agent, job, "failed", "proximity_halt"))
                agent.job = None
                agent.queue.clear()
                agent.halted = True
        return events

    # --- results ----------------------------------------------------------------------------

    def _result(
        self, agent: _Agent, job: _Job, status: str, reason: str | None = None, **extra: Any
    ) -> CommandResultPayload:
        return CommandResultPayload(
            command_id=job.command.command_id,
            agent_id=agent.agent_id,
            idempotency_key=job.key,
            action=job.command.action,
            status=status,
            reason=reason,
            position=agent.position(),
            temperature_c=round(agent.temperature_c, 2),
            duration_s=round(self.t - job.started_t, 6) if status != "processing" else None,
            **extra,
        )

    def _end(
        self, agent: _Agent, job: _Job, status: str, reason: str | None, **extra: Any
    ) -> CommandResultPayload:
        result = self._result(agent, job, status, reason, **extra)
        if agent.job is job:
            agent.job = None
        return self._record(result)

    def _record(self, result: CommandResultPayload) -> CommandResultPayload:
        """Remember a final result (a repeat of its key gets it again) and log it in full."""
        self._executions[result.idempotency_key] = result
        self._log(
            {
                "kind": "result",
                "t": round(self.t, 6),
                "key": result.idempotency_key,
                "status": result.status,
                "reason": result.reason,
                "agent_id": result.agent_id,
                "result": result.model_dump(mode="json"),
            }
        )
        return result

    def _finish_unstarted(
        self, command: CommandPayload, key: str, reason: str | None, agent: _Agent | None = None
    ) -> CommandResultPayload:
        job = _Job(command, key, [], started_t=self.t)
        status = "failed" if reason else "completed"
        if agent is None:
            result = CommandResultPayload(
                command_id=command.command_id,
                agent_id=command.agent_id,
                idempotency_key=key,
                action=command.action,
                status=status,
                reason=reason,
            )
            return self._record(result)
        return self._end(agent, job, status, reason)

    def note_fault(self, fault: str, **detail: Any) -> None:
        """Record a fault injected outside the world (a cut connection) in the ground truth."""
        self._log({"kind": "fault", "t": round(self.t, 6), "fault": fault, **detail})

    def _dead(self) -> int:
        return sum(1 for a in self.agents.values() if not a.alive)

    def _log(self, record: dict[str, Any]) -> None:
        if self.ground_truth is not None:
            self.ground_truth.write(record)

    def close(self) -> None:
        if self.ground_truth is not None:
            self._log({"kind": "summary", **self.summary().model_dump()})
            self.ground_truth.close()


__all__ = [
    "FaultConfig",
    "FaultInjector",
    "GroundTruthLog",
    "SwarmConfig",
    "SwarmWorld",
    "read_ground_truth",
]
