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

Everything a peer sends is bounded here, at the boundary (see :func:`decode`): a frame is at most
``max_bytes`` long and nested at most :data:`MAX_DEPTH` deep; numbers are finite and inside
physical ranges (coordinates within :data:`MAX_COORDINATE_NM`, temperatures, intervals); ids and
texts have a maximum length; lists a maximum size. A frame that breaks a rule is refused on its
own (an ``error`` frame), the connection stays up.
"""

from __future__ import annotations

import enum
import json
import uuid
from typing import Annotated, Any, Literal

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

# Limits on what a peer may send (docs/swarm-link.md "Limits").
MAX_FRAME_BYTES = 4 * 1024 * 1024  # default; the service's swarm.max_frame_bytes overrides it
MAX_DEPTH = 16  # JSON nesting (the deepest real frame, agent_status, is 5)
MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 4096
MAX_ITEMS = 10_000  # sensor readings, waypoints ... in one frame
MAX_AGENTS = 4096  # agents in one frame (the service keeps track of at most this many)
MAX_SEQ = 2**53  # exact in every JSON implementation
MAX_COORDINATE_NM = 1_000_000.0  # 1 mm: beyond any probe's reach
MIN_TEMPERATURE_C = -273.15
MAX_REPORTED_TEMPERATURE_C = 10_000.0
MAX_INTERVAL_S = 3600.0
MAX_SPEED_NM_S = 1_000_000.0
MAX_DURATION_S = 1e9

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
ShortText = Annotated[str, Field(max_length=64)]
Text = Annotated[str, Field(max_length=MAX_TEXT_LENGTH)]
# Numbers are strict: a JSON number only (not "12", not true), finite (see _Model).
Coordinate = Annotated[float, Field(strict=True, ge=-MAX_COORDINATE_NM, le=MAX_COORDINATE_NM)]
Temperature = Annotated[
    float, Field(strict=True, ge=MIN_TEMPERATURE_C, le=MAX_REPORTED_TEMPERATURE_C)
]
Interval = Annotated[float, Field(strict=True, gt=0, le=MAX_INTERVAL_S)]
SimTime = Annotated[float, Field(strict=True, ge=0, le=MAX_DURATION_S)]
Count = Annotated[int, Field(strict=True, ge=0, le=MAX_SEQ)]
Seq = Annotated[int, Field(strict=True, ge=1, le=MAX_SEQ)]


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
    # NaN and infinity are refused everywhere: JSON has neither, and they poison arithmetic.
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class GridPoint(_Model):
    """A lattice point in nm (each coordinate a multiple of 0.1 nm)."""

    x: Coordinate
    y: Coordinate
    z: Coordinate = 0.0

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

    x: Coordinate
    y: Coordinate
    z: Coordinate = 0.0


class AgentInfo(_Model):
    agent_id: Id
    position: Position
    status: ShortText = "idle"
    temperature_c: Temperature = 25.0
    speed_nm_s: Annotated[float, Field(gt=0, le=MAX_SPEED_NM_S)] | None = None


class Bounds(_Model):
    """The surface's extent in nm (inclusive)."""

    x_min: Coordinate = 0.0
    x_max: Coordinate
    y_min: Coordinate = 0.0
    y_max: Coordinate
    z_min: Coordinate = 0.0
    z_max: Coordinate = 0.0


class HandshakePayload(_Model):
    """Both ends introduce themselves; the simulator's also carries its credential.

    ``auth_token`` is the service's link token (``swarm.link_token`` or the tokens file); it is
    never logged and never passed on (see :meth:`public`).
    """

    protocol_version: ShortText = PROTOCOL_VERSION
    role: Literal["coordinator", "simulator"]
    session_id: Id
    heartbeat_interval_s: Interval = DEFAULT_HEARTBEAT_INTERVAL_S
    ack_timeout_s: Interval = DEFAULT_ACK_TIMEOUT_S
    capabilities: list[ShortText] = Field(default_factory=list, max_length=64)
    agents: list[AgentInfo] = Field(default_factory=list, max_length=MAX_AGENTS)
    bounds: Bounds | None = None
    separation_nm: Annotated[float, Field(ge=0, le=MAX_COORDINATE_NM)] | None = None
    drift_max_nm: Annotated[float, Field(ge=0, le=MAX_COORDINATE_NM)] | None = None
    auth_token: Annotated[str, Field(max_length=1024)] | None = Field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        """The handshake as JSON without the credential (what the service passes on)."""
        return self.model_dump(mode="json", exclude={"auth_token"})


CommandAction = Literal["move", "repair", "scan", "halt"]


class CommandPayload(_Model):
    """One instruction to one agent.

    Every action except ``halt`` first moves the agent in straight lines through ``waypoints``
    to ``target`` at its speed, then acts: ``move`` nothing, ``repair`` repairs the defect at
    the target (heating the agent), ``scan`` reports whether a defect is still there. ``halt``
    stops the agent at once and fails its current command (``reason="halted"``).
    """

    command_id: Id
    agent_id: Id
    action: CommandAction
    target: GridPoint | None = None
    waypoints: list[GridPoint] = Field(default_factory=list, max_length=MAX_ITEMS)
    thermal_budget_c: float = Field(default=MAX_THERMAL_BUDGET_C, gt=0, le=MAX_THERMAL_BUDGET_C)
    defect_id: Annotated[str, Field(max_length=MAX_ID_LENGTH)] | None = None

    @model_validator(mode="after")
    def _target_unless_halt(self) -> CommandPayload:
        if self.action != "halt" and self.target is None:
            raise ValueError(f"a {self.action!r} command needs a target")
        return self


class AckPayload(_Model):
    """``received``: processed (or a duplicate of one that was); ``rejected``: the frame was
    valid as an envelope but its payload broke a rule, so it is not processed and must not be
    resent (``reason`` says why)."""

    message_id: Id
    seq: Seq
    status: Literal["received", "rejected"] = "received"
    duplicate: bool = False
    reason: Text | None = None


CommandStatusLiteral = Literal["processing", "completed", "failed"]


class CommandResultPayload(_Model):
    command_id: Id
    agent_id: Id
    idempotency_key: Id
    action: CommandAction
    status: CommandStatusLiteral
    reason: Text | None = None
    position: Position | None = None
    temperature_c: Temperature | None = None
    defect_present: bool | None = None  # scans: is a defect still at the target?
    repaired: bool | None = None  # repairs: did the repair remove the defect?
    duration_s: Annotated[float, Field(ge=0, le=MAX_DURATION_S)] | None = None


class AgentState(_Model):
    agent_id: Id
    position: Position
    status: Literal["idle", "moving", "repairing", "scanning", "halted", "stuck", "error"]
    temperature_c: Temperature
    current_command_id: Annotated[str, Field(max_length=MAX_ID_LENGTH)] | None = None
    queued_commands: Count = 0


class AgentStatusPayload(_Model):
    t_s: SimTime
    agents: list[AgentState] = Field(max_length=MAX_AGENTS)


class HeartbeatPayload(_Model):
    role: Literal["coordinator", "simulator"]
    sent_at: ShortText
    agents_alive: list[Id] = Field(default_factory=list, max_length=MAX_AGENTS)


class SensorReading(_Model):
    x: Coordinate
    y: Coordinate
    z: Coordinate = 0.0
    defect_type: ShortText
    severity: int = Field(ge=1, le=10)
    defect_id: Annotated[str, Field(max_length=MAX_ID_LENGTH)] | None = None

    @field_validator("x", "y", "z")
    @classmethod
    def _on_grid(cls, value: float) -> float:
        return units_to_nm(nm_to_units(value))


class SensorDataPayload(_Model):
    coordinates: list[SensorReading] = Field(max_length=MAX_ITEMS)


class ProximityAlertPayload(_Model):
    agent_ids: list[Id] = Field(max_length=64)
    distance_nm: Annotated[float, Field(ge=0, le=MAX_COORDINATE_NM)]
    positions: dict[Id, Position] = Field(max_length=64)
    t_s: SimTime


class GroundTruthPayload(_Model):
    t_s: SimTime
    ticks: Count
    min_separation_nm: Annotated[float, Field(ge=0)] | None
    violations: Count
    repairs_succeeded: Count
    repairs_failed: Count
    commands_executed: Count
    defects_remaining: Count


class ErrorPayload(_Model):
    code: ShortText
    message: Text
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
    timestamp: ShortText
    correlation_id: Id
    message_id: Id
    seq: Seq | None = None
    idempotency_key: Id | None = None

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


def decode(text: str | bytes, *, max_bytes: int = MAX_FRAME_BYTES) -> Envelope:
    """Parse one frame; raises :class:`WireError` naming what is wrong.

    Refused before any model sees them: frames longer than ``max_bytes`` (characters of a
    text frame), nested deeper than :data:`MAX_DEPTH`, or not a JSON object.
    """
    if len(text) > max_bytes:
        raise WireError(f"frame of {len(text)} bytes is larger than the limit of {max_bytes}")
    try:
        raw = json.loads(text)
    except RecursionError:
        raise WireError(f"frame is nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError(f"frame is not JSON: {str(exc)[:200]}") from None
    if not isinstance(raw, dict):
        raise WireError("frame is not a JSON object")
    hazard = json_hazard(raw, MAX_DEPTH)
    if hazard == "deep":
        raise WireError(f"frame is nested deeper than {MAX_DEPTH} levels")
    if hazard == "surrogate":
        raise WireError("frame holds an unpaired UTF-16 surrogate (a \\ud800-style escape)")
    try:
        envelope = Envelope.model_validate(raw)
    except ValidationError as exc:
        raise WireError(f"invalid envelope: {_first_error(exc)}") from exc
    if envelope.reliable and envelope.seq is None:
        raise WireError(f"a {envelope.type.value} frame needs a seq")
    if envelope.type is MessageType.COMMAND and not envelope.idempotency_key:
        raise WireError("a command frame needs an idempotency_key")
    return envelope


def nested_deeper_than(value: Any, limit: int) -> bool:
    """True when ``value`` (parsed JSON) has containers nested more than ``limit`` deep."""
    return json_hazard(value, limit) == "deep"


def json_hazard(value: Any, max_depth: int) -> str | None:
    """What makes parsed JSON unsafe to process: ``"deep"`` (containers nested more than
    ``max_depth``), ``"surrogate"`` (a string or key with an unpaired UTF-16 surrogate, which
    JSON's ``\\ud800`` escape allows but no UTF-8 text, database or log line can hold), or None.

    Iterative, so it cannot itself run out of stack on hostile input."""
    if isinstance(value, str):
        return "surrogate" if _unpaired_surrogate(value) else None
    if not isinstance(value, dict | list):
        return None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            return "deep"
        if isinstance(item, dict):
            children: Any = item.values()
            if any(_unpaired_surrogate(key) for key in item):
                return "surrogate"
        else:
            children = item
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif isinstance(child, str) and _unpaired_surrogate(child):
                return "surrogate"
    return None


def _unpaired_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable(text: str) -> str:
    """``text`` safe to put in a frame, a log line or a JSON answer (surrogates escaped)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _first_error(exc: ValidationError) -> str:
    """Where and why, never the offending value itself (it may be huge or a secret)."""
    err = exc.errors()[0]
    where = printable(".".join(str(part) for part in err.get("loc", ())))[:200] or "value"
    return f"{where}: {printable(str(err.get('msg', 'invalid')))[:300]}"


__all__ = [
    "MAX_DEPTH",
    "MAX_FRAME_BYTES",
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
    "json_hazard",
    "make_envelope",
    "nested_deeper_than",
    "new_id",
    "nm_to_units",
    "printable",
    "units_to_nm",
]
