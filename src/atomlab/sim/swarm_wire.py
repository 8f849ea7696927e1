"""The wire protocol between the swarm service (``/ws/isaac``) and a swarm simulator.

Every frame is one JSON object, the **envelope**::

    {"type": "command", "payload": {...}, "timestamp": "2026-01-01T00:00:00.000000Z",
     "correlation_id": "3f2a...", "message_id": "9c1d...", "seq": 7,
     "idempotency_key": "cmd-42"}

* ``type``, ``payload``, ``timestamp`` (UTC ISO-8601, ``Z``) and ``correlation_id`` are the spec's
  envelope; ``message_id`` (unique per logical message, kept on every resend), ``seq`` and
  ``idempotency_key`` are our additions for exactly-once processing.
* **Reliable** types (:data:`RELIABLE_TYPES`) carry ``seq`` (1, 2, 3 … per sender and per sender
  session, never reused, kept on resends). The receiver answers each with an ``ack`` naming that
  ``seq`` and ``message_id``, processes a ``(session, seq)`` at most once and re-acks duplicates.
  The sender resends a message that is not acked within the ack timeout, and keeps it (in order)
  across disconnects until it is acked.
* A ``command`` also carries ``idempotency_key``: the simulator executes each key at most once,
  whatever the transport does; a repeat of a finished key is answered with its stored result.
  A key names one execution by one agent: a command moved to another agent needs a new key.
* Other types are fire-and-forget (``seq`` is null): the newest one wins, losing one is harmless.

Message types (``type`` → payload model), direction S = service, M = simulator:

=================== ============ ===================== ==========================================
type                direction    payload               meaning
=================== ============ ===================== ==========================================
``handshake``       S→M then M→S HandshakePayload      version, session ids, timings; the
                                                       simulator's reply lists its agents
``command``         S→M          CommandPayload        move / repair / scan / halt for one agent
                                                       (reliable, idempotency key)
``ack``             both         AckPayload            transport ack of one reliable message
``command_result``  M→S          CommandResultPayload  ``processing`` when an agent starts,
                                                       then ``completed`` / ``failed`` (reliable)
``agent_status``    M→S          AgentStatusPayload    telemetry of every live agent: position,
                                                       status, temperature (each tick)
``heartbeat``       both         HeartbeatPayload      liveness every 10 s; the simulator's lists
                                                       the agents that are alive
``sensor_data``     M→S          SensorDataPayload     defects found by a scan, in nm (reliable)
``proximity_alert`` M→S          ProximityAlertPayload two agents came closer than 0.5 nm; the
                                                       simulator halted them (reliable)
``ground_truth``    M→S          GroundTruthPayload    the simulator's own summary: min pairwise
                                                       separation, repairs, commands executed
``error``           both         ErrorPayload          a frame was refused (bad JSON, version)
=================== ============ ===================== ==========================================

Events the service's :class:`atomlab.swarm.link.SimulatorLink` raises locally (never on the wire)
through its ``on_event(type, payload)`` callback, besides the inbound types above:
``link_up`` (payload: the simulator's handshake), ``link_down`` (``{"reason": str}``) and
``command_delivered`` (``{"idempotency_key", "command_id", "agent_id"}``, the simulator acked it).

Coordinates: command targets and sensor readings are nanometres on the 0.1 nm grid (at most one
decimal, checked here); telemetry positions are free floats (an agent between lattice points).
"""

from __future__ import annotations

import enum
import json
import uuid
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from atomlab.core.clock import Clock, utc_iso
from atomlab.core.errors import InvalidInputError
from atomlab.surface import nm_to_units, units_to_nm

PROTOCOL_VERSION = "1.0"
MAX_THERMAL_BUDGET_C = 120.0
DEFAULT_HEARTBEAT_INTERVAL_S = 10.0
DEFAULT_ACK_TIMEOUT_S = 2.0


class MessageType(enum.StrEnum):
    HANDSHAKE = "handshake"
    COMMAND = "command"
    ACK = "ack"
    COMMAND_RESULT = "command_result"
    AGENT_STATUS = "agent_status"
    HEARTBEAT = "heartbeat"
    SENSOR_DATA = "sensor_data"
    PROXIMITY_ALERT = "proximity_alert"
    GROUND_TRUTH = "ground_truth"
    ERROR = "error"


#: Types that carry a ``seq`` and are acked, resent and de-duplicated.
RELIABLE_TYPES = frozenset(
    {
        MessageType.COMMAND,
        MessageType.COMMAND_RESULT,
        MessageType.SENSOR_DATA,
        MessageType.PROXIMITY_ALERT,
    }
)


class LinkEvent(enum.StrEnum):
    """Local events of the service-side link (not wire types)."""

    LINK_UP = "link_up"
    LINK_DOWN = "link_down"
    COMMAND_DELIVERED = "command_delivered"


class WireError(InvalidInputError):
    """A frame that is not a valid envelope or payload."""

    type_name = "wire_error"


class _Model(BaseModel):
    # Unknown fields are ignored so a newer peer can add fields without breaking an older one.
    model_config = ConfigDict(extra="ignore", frozen=True)


class GridPoint(_Model):
    """A lattice point in nm (each coordinate a multiple of 0.1 nm)."""

    x: float
    y: float
    z: float = 0.0

    @field_validator("x", "y", "z")
    @classmethod
    def _on_grid(cls, value: float) -> float:
        return units_to_nm(nm_to_units(value))

    def units(self) -> tuple[int, int, int]:
        """The point in 0.1 nm units."""
        return (nm_to_units(self.x), nm_to_units(self.y), nm_to_units(self.z))

    @classmethod
    def from_units(cls, x: int, y: int, z: int = 0) -> GridPoint:
        return cls(x=units_to_nm(x), y=units_to_nm(y), z=units_to_nm(z))


class Position(_Model):
    """A measured position in nm (any float: agents move between lattice points)."""

    x: float
    y: float
    z: float = 0.0


class AgentInfo(_Model):
    agent_id: str
    position: Position
    status: str = "idle"
    temperature_c: float = 25.0
    speed_nm_s: float | None = None


class Bounds(_Model):
    """The surface's extent in nm (inclusive)."""

    x_min: float = 0.0
    x_max: float
    y_min: float = 0.0
    y_max: float
    z_min: float = 0.0
    z_max: float = 0.0


class HandshakePayload(_Model):
    protocol_version: str = PROTOCOL_VERSION
    role: Literal["coordinator", "simulator"]
    session_id: str
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S
    capabilities: list[str] = Field(default_factory=list)
    agents: list[AgentInfo] = Field(default_factory=list)
    bounds: Bounds | None = None
    separation_nm: float | None = None
    drift_max_nm: float | None = None


CommandAction = Literal["move", "repair", "scan", "halt"]


class CommandPayload(_Model):
    """One instruction to one agent.

    Every action except ``halt`` first moves the agent in straight lines through ``waypoints``
    to ``target`` at its speed, then acts: ``move`` nothing, ``repair`` repairs the defect at
    the target (heating the agent), ``scan`` reports whether a defect is still there. ``halt``
    stops the agent at once and fails its current command (``reason="halted"``).
    """

    command_id: str = Field(min_length=1)
    agent_id: str = Field(min_length=1)
    action: CommandAction
    target: GridPoint | None = None
    waypoints: list[GridPoint] = Field(default_factory=list)
    thermal_budget_c: float = Field(default=MAX_THERMAL_BUDGET_C, gt=0, le=MAX_THERMAL_BUDGET_C)
    defect_id: str | None = None

    @model_validator(mode="after")
    def _target_unless_halt(self) -> CommandPayload:
        if self.action != "halt" and self.target is None:
            raise ValueError(f"a {self.action!r} command needs a target")
        return self


class AckPayload(_Model):
    message_id: str
    seq: int = Field(ge=1)
    status: Literal["received"] = "received"
    duplicate: bool = False


CommandStatusLiteral = Literal["processing", "completed", "failed"]


class CommandResultPayload(_Model):
    command_id: str
    agent_id: str
    idempotency_key: str
    action: CommandAction
    status: CommandStatusLiteral
    reason: str | None = None
    position: Position | None = None
    temperature_c: float | None = None
    defect_present: bool | None = None  # scans: is a defect still at the target?
    repaired: bool | None = None  # repairs: did the repair remove the defect?
    duration_s: float | None = None


class AgentState(_Model):
    agent_id: str
    position: Position
    status: Literal["idle", "moving", "repairing", "scanning", "halted", "stuck", "error"]
    temperature_c: float
    current_command_id: str | None = None
    queued_commands: int = 0


class AgentStatusPayload(_Model):
    t_s: float
    agents: list[AgentState]


class HeartbeatPayload(_Model):
    role: Literal["coordinator", "simulator"]
    sent_at: str
    agents_alive: list[str] = Field(default_factory=list)


class SensorReading(_Model):
    x: float
    y: float
    z: float = 0.0
    defect_type: str
    severity: int = Field(ge=1, le=10)
    defect_id: str | None = None

    @field_validator("x", "y", "z")
    @classmethod
    def _on_grid(cls, value: float) -> float:
        return units_to_nm(nm_to_units(value))


class SensorDataPayload(_Model):
    coordinates: list[SensorReading]


class ProximityAlertPayload(_Model):
    agent_ids: list[str]
    distance_nm: float
    positions: dict[str, Position]
    t_s: float


class GroundTruthPayload(_Model):
    t_s: float
    ticks: int
    min_separation_nm: float | None
    violations: int
    repairs_succeeded: int
    repairs_failed: int
    commands_executed: int
    defects_remaining: int


class ErrorPayload(_Model):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


PAYLOAD_MODELS: dict[MessageType, type[_Model]] = {
    MessageType.HANDSHAKE: HandshakePayload,
    MessageType.COMMAND: CommandPayload,
    MessageType.ACK: AckPayload,
    MessageType.COMMAND_RESULT: CommandResultPayload,
    MessageType.AGENT_STATUS: AgentStatusPayload,
    MessageType.HEARTBEAT: HeartbeatPayload,
    MessageType.SENSOR_DATA: SensorDataPayload,
    MessageType.PROXIMITY_ALERT: ProximityAlertPayload,
    MessageType.GROUND_TRUTH: GroundTruthPayload,
    MessageType.ERROR: ErrorPayload,
}


class Envelope(_Model):
    """One frame on the wire."""

    type: MessageType
    payload: dict[str, Any]
    timestamp: str
    correlation_id: str
    message_id: str
    seq: int | None = Field(default=None, ge=1)
    idempotency_key: str | None = None

    @property
    def reliable(self) -> bool:
        return self.type in RELIABLE_TYPES

    def parsed(self) -> _Model:
        """The payload validated against its type's model; raises :class:`WireError`."""
        model = PAYLOAD_MODELS[self.type]
        try:
            return model.model_validate(self.payload)
        except ValidationError as exc:
            raise WireError(
                f"invalid {self.type.value} payload: {_first_error(exc)}",
                message_type=self.type.value,
            ) from exc

    def encode(self) -> str:
        return self.model_dump_json(exclude_none=False)


def new_id() -> str:
    return uuid.uuid4().hex


def make_envelope(
    message_type: MessageType,
    payload: BaseModel | dict[str, Any],
    *,
    clock: Clock,
    seq: int | None = None,
    correlation_id: str | None = None,
    idempotency_key: str | None = None,
    message_id: str | None = None,
) -> Envelope:
    """Build an envelope; the payload is validated against ``message_type``'s model."""
    model = PAYLOAD_MODELS[message_type]
    try:
        body = payload if isinstance(payload, model) else model.model_validate(payload)
    except ValidationError as exc:
        raise WireError(
            f"invalid {message_type.value} payload: {_first_error(exc)}",
            message_type=message_type.value,
        ) from exc
    if (message_type in RELIABLE_TYPES) != (seq is not None):
        raise ValueError(f"{message_type.value}: seq is required exactly for reliable types")
    return Envelope(
        type=message_type,
        payload=body.model_dump(mode="json"),
        timestamp=utc_iso(clock.now()),
        correlation_id=correlation_id or new_id(),
        message_id=message_id or new_id(),
        seq=seq,
        idempotency_key=idempotency_key,
    )


def decode(text: str | bytes) -> Envelope:
    """Parse one frame; raises :class:`WireError` naming what is wrong."""
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"frame is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise WireError("frame is not a JSON object")
    try:
        envelope = Envelope.model_validate(raw)
    except ValidationError as exc:
        raise WireError(f"invalid envelope: {_first_error(exc)}") from exc
    if envelope.reliable and envelope.seq is None:
        raise WireError(f"a {envelope.type.value} frame needs a seq")
    if envelope.type is MessageType.COMMAND and not envelope.idempotency_key:
        raise WireError("a command frame needs an idempotency_key")
    return envelope


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err.get("loc", ())) or "value"
    return f"{where}: {err.get('msg', 'invalid')}"


__all__ = [
    "PAYLOAD_MODELS",
    "PROTOCOL_VERSION",
    "RELIABLE_TYPES",
    "AckPayload",
    "AgentInfo",
    "AgentState",
    "AgentStatusPayload",
    "Bounds",
    "CommandPayload",
    "CommandResultPayload",
    "Envelope",
    "ErrorPayload",
    "GridPoint",
    "GroundTruthPayload",
    "HandshakePayload",
    "HeartbeatPayload",
    "LinkEvent",
    "MessageType",
    "Position",
    "ProximityAlertPayload",
    "SensorDataPayload",
    "SensorReading",
    "WireError",
    "decode",
    "make_envelope",
    "new_id",
    "nm_to_units",
    "units_to_nm",
]
