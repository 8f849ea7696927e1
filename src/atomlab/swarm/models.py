"""The swarm service's data: lattice points in 0.1 nm units, defects, commands and agents.

Positions are integers counting 0.1 nm steps, so grid alignment is exact and never a float
comparison. Nanometres appear only at the edges (the HTTP API, the wire, the docs)::

    p = Point.from_nm(1.2, 3.4, 0.0)   # Point(x=12, y=34, z=0)
    p.nm()                              # (1.2, 3.4, 0.0)
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from atomlab.surface import nm_to_units, units_to_nm


@dataclass(frozen=True, slots=True, order=True)
class Point:
    """A lattice point; coordinates count 0.1 nm steps."""

    x: int
    y: int
    z: int = 0

    @classmethod
    def from_nm(cls, x: float, y: float, z: float = 0.0) -> Point:
        return cls(nm_to_units(x), nm_to_units(y), nm_to_units(z))

    def nm(self) -> tuple[float, float, float]:
        return (units_to_nm(self.x), units_to_nm(self.y), units_to_nm(self.z))

    def as_nm_dict(self) -> dict[str, float]:
        x, y, z = self.nm()
        return {"x": x, "y": y, "z": z}

    def distance(self, other: Point) -> float:
        """Euclidean distance in 0.1 nm units."""
        return math.dist((self.x, self.y, self.z), (other.x, other.y, other.z))


class DefectStatus(enum.StrEnum):
    DETECTED = "detected"
    QUEUED = "queued"
    REPAIRING = "repairing"
    COMPLETED = "completed"
    FAILED = "failed"
    UNREPAIRABLE = "unrepairable"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_DEFECT


_TERMINAL_DEFECT = {DefectStatus.COMPLETED, DefectStatus.FAILED, DefectStatus.UNREPAIRABLE}


class CommandStatus(enum.StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (CommandStatus.COMPLETED, CommandStatus.FAILED)


#: The only status changes a command may make (property 9).
COMMAND_TRANSITIONS: dict[CommandStatus, frozenset[CommandStatus]] = {
    CommandStatus.PENDING: frozenset({CommandStatus.IN_PROGRESS, CommandStatus.FAILED}),
    CommandStatus.IN_PROGRESS: frozenset({CommandStatus.COMPLETED, CommandStatus.FAILED}),
    CommandStatus.COMPLETED: frozenset(),
    CommandStatus.FAILED: frozenset(),
}


class Action(enum.StrEnum):
    MOVE = "move"
    REPAIR = "repair"
    SCAN = "scan"
    HALT = "halt"


class AgentStatus(enum.StrEnum):
    IDLE = "idle"
    MOVING = "moving"
    REPAIRING = "repairing"
    ERROR = "error"
    DEAD = "dead"


@dataclass
class Defect:
    """One reported defect and where its repair stands."""

    defect_id: str
    position: Point
    defect_type: str
    severity: int
    detected_at: datetime
    correlation_id: str
    seq: int = 0  # detection order
    status: DefectStatus = DefectStatus.QUEUED
    attempts: int = 0
    reason: str | None = None
    agent_id: str | None = None
    completed_at: datetime | None = None

    @property
    def dedupe_key(self) -> tuple[int, int, int, str]:
        return (self.position.x, self.position.y, self.position.z, self.defect_type)


@dataclass
class Command:
    """One instruction to one agent; ``idempotency_key`` makes a resend harmless."""

    command_id: str
    defect_id: str
    agent_id: str
    action: Action
    target: Point
    thermal_budget_c: float
    correlation_id: str
    created_at: datetime
    severity: int = 1
    status: CommandStatus = CommandStatus.PENDING
    updated_at: datetime | None = None
    detail: str | None = None

    @property
    def idempotency_key(self) -> str:
        return self.command_id


@dataclass
class AgentState:
    """What the coordinator knows about one agent (property 21)."""

    agent_id: str
    position: Point  # rounded to the 0.1 nm grid for display and storage
    status: AgentStatus = AgentStatus.IDLE
    location: tuple[float, float, float] | None = None  # exact, in 0.1 nm units
    speed_units_s: float | None = None
    home: tuple[float, float, float] | None = None  # where it was first seen, in 0.1 nm units
    temperature_c: float = 25.0
    last_heartbeat: float = 0.0  # clock.monotonic() of the last sign of life
    last_update: datetime | None = None
    current_command: str | None = None
    assigned_total: int = 0

    @property
    def xyz(self) -> tuple[float, float, float]:
        if self.location is not None:
            return self.location
        return (float(self.position.x), float(self.position.y), float(self.position.z))


# --- HTTP models (nm at the edge) -------------------------------------------------------------

DefectType = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$", examples=["vacancy"])
]
MAX_COORDINATE_NM = 1_000_000.0  # a sanity bound; the configured work area is stricter
MAX_BATCH = 10_000
GRID_NM = 0.1
CORRELATION_ID_PATTERN = r"^[!-~]{1,64}$"  # printable ASCII, no spaces
Nanometres = Annotated[
    float,
    Field(
        ge=-MAX_COORDINATE_NM,
        le=MAX_COORDINATE_NM,
        description="nm, a multiple of 0.1 inside the configured work area (swarm.bounds_*_nm)",
        json_schema_extra={"multipleOf": GRID_NM},
    ),
]


class SensorCoordinateIn(BaseModel):
    """One detected defect, in nm with at most one decimal (0.1 nm grid).

    Strict: a number must be a JSON number (not ``"1.2"``, not ``true``), finite."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    x: Nanometres = Field(examples=[1.2])
    y: Nanometres = Field(examples=[3.4])
    z: Nanometres = Field(default=0.0, examples=[0.0])
    defect_type: DefectType = "vacancy"
    severity: int = Field(ge=1, le=10, description="1 (cosmetic) to 10 (critical)")

    @field_validator("x", "y", "z")
    @classmethod
    def _on_grid(cls, value: float) -> float:
        nm_to_units(value)  # raises OffGridError (a ValueError) with the reason
        return value

    @field_validator("severity", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        # JSON has one number type: 5.0 is the integer 5 (as JSON Schema says); 5.5 is not.
        if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
            return int(value)
        return value


class SensorDataIn(BaseModel):
    """A batch of detected defects (the ``sensor_data`` message's payload)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    coordinates: list[SensorCoordinateIn] = Field(min_length=1, max_length=MAX_BATCH)
    correlation_id: str | None = Field(default=None, pattern=CORRELATION_ID_PATTERN)


class IngestAccepted(BaseModel):
    accepted: int
    defect_ids: list[str]
    duplicates: int
    unrepairable: int
    correlation_id: str


class PointOut(BaseModel):
    x: float
    y: float
    z: float


class DefectOut(BaseModel):
    defect_id: str
    position: PointOut
    defect_type: str
    severity: int
    status: DefectStatus
    attempts: int
    reason: str | None
    agent_id: str | None
    detected_at: datetime
    completed_at: datetime | None
    correlation_id: str


class CommandOut(BaseModel):
    command_id: str
    defect_id: str
    agent_id: str
    action: Action
    target: PointOut
    thermal_budget_c: float
    status: CommandStatus
    idempotency_key: str
    created_at: datetime
    updated_at: datetime | None
    correlation_id: str
    detail: str | None


class AgentOut(BaseModel):
    agent_id: str
    position: PointOut
    status: AgentStatus
    temperature_c: float
    last_update: datetime | None
    seconds_since_heartbeat: float
    current_command: str | None
    assigned_total: int


class DistributeOut(BaseModel):
    dispatched: int
    command_ids: list[str]


class LinkOut(BaseModel):
    """The simulator link as ``/health`` shows it."""

    connected: bool
    pending: int = Field(description="commands sent or buffered, not yet acknowledged")
    session_id: str
    peer_session_id: str | None
    breaker: str = Field(description="closed, open or half_open", examples=["closed"])


class TaskOut(BaseModel):
    """One background task as /health shows it."""

    state: Literal["running", "restarting", "failed", "stopped"]
    failures: int
    restarts: int
    last_error: str | None
    last_failure_at: str | None


class DatabaseOut(BaseModel):
    """The database writer as /health shows it."""

    backlog: int = Field(description="rows handed to the writer, not yet committed")
    written: int
    rejected_rows: int = Field(description="rows the database refused (logged, dropped)")
    unavailable: str | None = Field(description="why the database cannot be written now")


class HealthOut(BaseModel):
    """Liveness and a one-glance summary of the service.

    ``status``: ``healthy``; ``degraded`` while a background task restarts, within 5 minutes of
    any task failure, or while the database cannot be written; ``failing`` (HTTP 503) once a
    task was given up on and the service is stopping."""

    status: Literal["healthy", "degraded", "failing"] = Field(examples=["healthy"])
    timestamp: str = Field(description="ISO-8601, UTC")
    uptime_s: float
    link: LinkOut
    queue_depth: int = Field(description="planned repairs waiting for an agent")
    defects: int
    defects_by_status: dict[str, int]
    commands: dict[str, int] = Field(description="count per command status")
    agents: dict[str, int] = Field(description="count per agent status")
    halted: bool = Field(description="the proximity E-stop fired; POST /api/agents/resume")
    halt_reason: str | None
    planner: str = Field(examples=["heuristic", "llm+heuristic"])
    tasks: dict[str, TaskOut] = Field(description="background tasks by name")
    database: DatabaseOut
    reads_public: bool = Field(description="GET routes answer without a token")


class ResumeOut(BaseModel):
    halted: bool
    previous_reason: str | None


class ErrorDetails(BaseModel):
    field: str | None = None
    value: Any = None
    constraint: str | None = None


class ErrorInfo(BaseModel):
    code: str = Field(examples=["VALIDATION_ERROR"])
    message: str
    details: ErrorDetails | None = None
    correlation_id: str | None = None
    timestamp: str


class ErrorBody(BaseModel):
    """The one error format every endpoint answers with."""

    error: ErrorInfo


def point_out(point: Point) -> PointOut:
    x, y, z = point.nm()
    return PointOut(x=x, y=y, z=z)


def defect_out(defect: Defect) -> DefectOut:
    return DefectOut(
        defect_id=defect.defect_id,
        position=point_out(defect.position),
        defect_type=defect.defect_type,
        severity=defect.severity,
        status=defect.status,
        attempts=defect.attempts,
        reason=defect.reason,
        agent_id=defect.agent_id,
        detected_at=defect.detected_at,
        completed_at=defect.completed_at,
        correlation_id=defect.correlation_id,
    )


def command_out(command: Command) -> CommandOut:
    return CommandOut(
        command_id=command.command_id,
        defect_id=command.defect_id,
        agent_id=command.agent_id,
        action=command.action,
        target=point_out(command.target),
        thermal_budget_c=command.thermal_budget_c,
        status=command.status,
        idempotency_key=command.idempotency_key,
        created_at=command.created_at,
        updated_at=command.updated_at,
        correlation_id=command.correlation_id,
        detail=command.detail,
    )
