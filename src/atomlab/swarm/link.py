"""The service's end of ``/ws/isaac``: one simulator connection with exactly-once commands.

The simulator dials in (it owns reconnect and back-off); this side owns the handshake, acks,
resends, buffering while nobody is connected, the 10 s application heartbeat and dead-peer
detection.

A connection is a *candidate* until its handshake is accepted: with a ``link_token`` the peer
must present it (``Authorization: Bearer`` on the upgrade, or ``auth_token`` in its handshake),
compared in constant time. Only then does the peer policy decide what happens to a live
simulator: ``refuse`` (default) closes the newcomer (4409), ``takeover`` closes the live one
(4002); a reconnect of the same session always replaces its old connection. Both are logged.
A frame that breaks a rule gets an ``error`` frame (a reliable one is acked as ``rejected``)
and the connection stays up. Mount :meth:`SimulatorLink.handle` as a WebSocket route::

    link = SimulatorLink(clock=SystemClock(), metrics=Metrics("swarm", registry))
    link.on_event = coordinator.on_link_event        # async (type, payload) -> None
    app.add_api_websocket_route("/ws/isaac", link.handle)
    await link.send_command({"command_id": "c1", "agent_id": "a0", "action": "repair",
                             "target": {"x": 1.2, "y": 3.4}}, idempotency_key="c1")

The wire format and every event type are described in :mod:`atomlab.sim.swarm_wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocket, WebSocketState

from atomlab.core.clock import Clock, SystemClock, utc_iso
from atomlab.core.errors import CircuitOpenError, InvalidInputError
from atomlab.core.logging import correlation_scope, current_correlation_id, get_logger
from atomlab.core.metrics import Metrics
from atomlab.core.resilience import BreakerState, CircuitBreaker
from atomlab.sim.swarm_channel import ReliableReceiver, ReliableSender
from atomlab.sim.swarm_wire import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    AckPayload,
    CommandPayload,
    Envelope,
    ErrorPayload,
    HandshakePayload,
    HeartbeatPayload,
    LinkEvent,
    MessageType,
    WireError,
    decode,
    make_envelope,
)

EventHandler = Callable[[str, dict[str, Any]], Awaitable[None]]
FailureHandler = Callable[[str, BaseException], None]
PeerPolicy = Literal["refuse", "takeover"]

DEFAULT_ACK_TIMEOUT_S = 2.0
DEFAULT_MAX_RESENDS = 5
DEFAULT_HEARTBEAT_INTERVAL_S = 10.0
DEFAULT_MISSED_HEARTBEATS = 3
DEFAULT_HANDSHAKE_TIMEOUT_S = 10.0
DEFAULT_MAX_BUFFER = 10_000
# How often (in real seconds) the supervisor looks at the clock. Deadlines themselves are read
# from the injected clock, so a FakeClock in tests decides when anything is due.
DEFAULT_POLL_INTERVAL_S = 0.02
BREAKER_FAILURES = 3
BREAKER_RESET_S = 10.0
DEFAULT_MAX_CANDIDATES = 8  # connections still in their handshake; more are refused at once
DEFAULT_SEND_TIMEOUT_S = 10.0  # real seconds a frame may wait for a peer that is not reading
ERROR_REPLIES_PER_S = 20  # error frames answered per second (no amplification); all counted

CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_PEER_SILENT = 4000
CLOSE_ACKS_MISSING = 4001
CLOSE_REPLACED = 4002
CLOSE_HANDSHAKE_TIMEOUT = 4003
CLOSE_UNAUTHORIZED = 4401
CLOSE_PEER_REFUSED = 4409

CAPABILITIES = ["seq", "ack", "idempotency", "heartbeat", "resend"]

_log = get_logger(__name__)


@dataclass(eq=False)  # identity: a connection is hashed and compared as itself
class _Connection:
    websocket: WebSocket
    opened_at: float
    last_heard: float
    last_heartbeat_sent: float
    handshaken: bool = False
    closing: bool = False
    detached: bool = False
    flushing: bool = False
    failed: bool = False
    authenticated: bool = False  # presented the link token (or none is required)
    session_id: str | None = None
    error_window_start: float = 0.0
    errors_in_window: int = 0
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class _LinkMetrics:
    def __init__(self, metrics: Metrics) -> None:
        self.connected = metrics.gauge("link_connected", "1 while a simulator is connected.")
        self.connections = metrics.counter(
            "link_connections_total",
            "Simulator connection attempts, by outcome.",
            labels=("outcome",),
        )
        self.sent = metrics.counter(
            "link_messages_sent_total", "Frames sent to the simulator.", labels=("type",)
        )
        self.received = metrics.counter(
            "link_messages_received_total", "Frames received from the simulator.", labels=("type",)
        )
        self.resends = metrics.counter(
            "link_resends_total", "Reliable messages sent again because no ack came in time."
        )
        self.duplicates = metrics.counter(
            "link_duplicates_total", "Reliable messages received again and not processed again."
        )
        self.invalid = metrics.counter(
            "link_invalid_frames_total", "Frames refused as malformed or out of protocol."
        )
        self.handler_errors = metrics.counter(
            "link_handler_errors_total",
            "Valid frames the service failed to process (a bug; logged with a traceback).",
            labels=("type",),
        )
        self.pending = metrics.gauge(
            "link_pending_messages", "Reliable messages buffered or waiting for an ack."
        )
        self.dropped_peers = metrics.counter(
            "link_dead_peer_total",
            "Connections closed by this side, by reason.",
            labels=("reason",),
        )
        self.ack_latency = metrics.histogram(
            "link_ack_latency_seconds",
            "Time from the first send of a reliable message to its ack.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )


class SimulatorLink:
    """Serves one simulator at a time and delivers commands to it exactly once."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
        max_resends: int = DEFAULT_MAX_RESENDS,
        heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
        missed_heartbeats: int = DEFAULT_MISSED_HEARTBEATS,
        handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        breaker: CircuitBreaker | None = None,
        on_event: EventHandler | None = None,
        link_token: str | None = None,
        peer_policy: PeerPolicy = "refuse",
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_candidates: int = DEFAULT_MAX_CANDIDATES,
        on_failure: FailureHandler | None = None,
        send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
    ) -> None:
        if heartbeat_interval_s <= 0 or missed_heartbeats < 1 or handshake_timeout_s <= 0:
            raise ValueError(
                "need heartbeat_interval_s > 0, missed_heartbeats >= 1, handshake_timeout_s > 0"
            )
        self.clock = clock or SystemClock()
        self.metrics = metrics or Metrics("swarm")
        self.heartbeat_interval_s = heartbeat_interval_s
        self.dead_after_s = heartbeat_interval_s * missed_heartbeats
        self.handshake_timeout_s = handshake_timeout_s
        self.poll_interval_s = poll_interval_s
        self.on_event: EventHandler | None = on_event
        self.on_failure: FailureHandler | None = on_failure
        self.peer_policy: PeerPolicy = peer_policy
        self.max_frame_bytes = max_frame_bytes
        self.max_candidates = max_candidates
        self._link_token = link_token.encode() if link_token is not None else None
        self._candidates: set[_Connection] = set()
        self._abandoned: set[asyncio.Task[None]] = set()
        self.send_timeout_s = send_timeout_s
        self.peer: HandshakePayload | None = None
        self.breaker = breaker or CircuitBreaker(
            "simulator_link",
            failure_threshold=BREAKER_FAILURES,
            reset_timeout_s=BREAKER_RESET_S,
            clock=self.clock,
            metrics_registry=self.metrics.registry,
            capability=self.metrics.capability,
        )
        self._sender = ReliableSender(
            clock=self.clock,
            ack_timeout_s=ack_timeout_s,
            max_resends=max_resends,
            max_pending=max_buffer,
        )
        self._receiver = ReliableReceiver()
        self._conn: _Connection | None = None
        self._keys_pending: dict[str, int] = {}  # idempotency key -> seq while unacked
        self._m = _LinkMetrics(self.metrics)
        self._m.connected.set(0)

    # --- public API -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a simulator is connected and has completed the handshake."""
        conn = self._conn
        return conn is not None and conn.handshaken and not conn.closing

    @property
    def session_id(self) -> str:
        return self._sender.session_id

    @property
    def pending(self) -> int:
        """Reliable messages buffered or waiting for an ack."""
        return len(self._sender)

    def stats(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "pending": self.pending,
            "session_id": self.session_id,
            "peer_session_id": self.peer.session_id if self.peer else None,
            "breaker": self.breaker.state.value,
        }

    async def send_command(
        self,
        command: Mapping[str, Any] | CommandPayload,
        *,
        idempotency_key: str,
        correlation_id: str | None = None,
    ) -> None:
        """Queue ``command`` for the simulator; delivered exactly once, now or after a reconnect.

        A key that is still waiting for its ack is not queued again. A key that was delivered
        before is sent again; the simulator answers it from its record without re-running it.
        Raises :class:`InvalidInputError` for a malformed command and
        :class:`~atomlab.core.errors.UnavailableError` when the buffer is full.
        """
        if not idempotency_key:
            raise InvalidInputError("idempotency_key must not be empty", field="idempotency_key")
        payload = _command_payload(command)
        if idempotency_key in self._keys_pending:
            return
        cid = correlation_id or current_correlation_id()
        if cid is None and isinstance(command, Mapping):
            raw_cid = command.get("correlation_id")
            cid = str(raw_cid) if raw_cid else None
        envelope = self._sender.stamp(
            MessageType.COMMAND, payload, correlation_id=cid, idempotency_key=idempotency_key
        )
        assert envelope.seq is not None
        self._keys_pending[idempotency_key] = envelope.seq
        self._m.pending.set(len(self._sender))
        conn = self._conn
        if conn is not None and conn.handshaken and not conn.closing and not conn.flushing:
            await self._transmit(conn, envelope)  # while flushing, the flush sends it in order

    async def handle(self, websocket: WebSocket) -> None:
        """Serve one simulator connection until it closes (mount as the ``/ws/isaac`` route)."""
        header_ok = self._header_credential(websocket)
        if header_ok is False:
            # A wrong token on the upgrade: refused before any WebSocket exists (HTTP 403).
            self._m.connections.labels(outcome="unauthorized").inc()
            _log.warning("swarm_link.unauthorized", where="upgrade")
            with contextlib.suppress(Exception):
                await websocket.close(code=CLOSE_UNAUTHORIZED)
            return
        await websocket.accept()
        if len(self._candidates) >= self.max_candidates:
            self._m.connections.labels(outcome="refused").inc()
            message = f"{len(self._candidates)} connections are already in their handshake"
            await self._refuse(websocket, "too_many_handshakes", message, CLOSE_TRY_AGAIN_LATER)
            return
        try:
            self.breaker.before_call()
        except CircuitOpenError as exc:
            self._m.connections.labels(outcome="refused").inc()
            await self._refuse(websocket, "circuit_open", exc.message, CLOSE_TRY_AGAIN_LATER)
            return
        now = self.clock.monotonic()
        conn = _Connection(websocket, opened_at=now, last_heard=now, last_heartbeat_sent=now)
        conn.authenticated = self._link_token is None or header_ok is True
        self._candidates.add(conn)
        supervisor = asyncio.create_task(self._supervise(conn), name="swarm-link-supervisor")
        try:
            await self._send_raw(conn, self._handshake())
            await self._read_loop(conn)
        finally:
            self._candidates.discard(conn)
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
            await self._detach(conn, "connection closed")
            if not conn.handshaken and not conn.failed:
                self.breaker.record_neutral()

    def _header_credential(self, websocket: WebSocket) -> bool | None:
        """True/False for a valid/wrong ``Authorization: Bearer`` on the upgrade; None: none."""
        if self._link_token is None:
            return None
        header = websocket.headers.get("authorization")
        if not header:
            return None
        kind, _, token = header.strip().partition(" ")
        if kind.lower() != "bearer":
            return False
        return self._token_ok(token.strip())

    def _token_ok(self, presented: str | None) -> bool:
        if self._link_token is None:
            return True
        if presented is None:
            return False
        return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), self._link_token)

    async def close(self) -> None:
        """Close the current connection (the buffer is kept)."""
        conn = self._conn
        if conn is not None:
            await self._close(conn, CLOSE_GOING_AWAY, "service shutting down")

    # --- connection lifecycle ---------------------------------------------------------------

    def _handshake(self) -> Envelope:
        payload = HandshakePayload(
            role="coordinator",
            session_id=self._sender.session_id,
            heartbeat_interval_s=self.heartbeat_interval_s,
            ack_timeout_s=self._sender.ack_timeout_s,
            capabilities=CAPABILITIES,
        )
        return make_envelope(MessageType.HANDSHAKE, payload, clock=self.clock)

    async def _read_loop(self, conn: _Connection) -> None:
        while not conn.closing:
            try:
                message = await conn.websocket.receive()
            except (RuntimeError, OSError):
                return
            if message.get("type") == "websocket.disconnect":
                return
            frame: str | bytes | None = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            conn.last_heard = self.clock.monotonic()
            await self._on_frame(conn, frame)

    async def _on_frame(self, conn: _Connection, frame: str | bytes) -> None:
        try:
            envelope = decode(frame, max_bytes=self.max_frame_bytes)
        except WireError as exc:
            await self._invalid(conn, "invalid_frame", exc.message)
            return
        try:
            body = envelope.parsed()
        except WireError as exc:
            if not conn.handshaken:
                await self._invalid(conn, "invalid_frame", exc.message)
                return
            await self._invalid(conn, "invalid_payload", exc.message, envelope)
            return
        self._m.received.labels(type=envelope.type.value).inc()
        if not conn.handshaken:
            await self._on_handshake(conn, envelope, body)
            return
        if envelope.type is MessageType.ACK:
            assert isinstance(body, AckPayload)
            await self._on_ack(body)
        elif envelope.reliable:
            await self._on_reliable(conn, envelope, body)
        elif envelope.type in (MessageType.HANDSHAKE, MessageType.COMMAND):
            await self._invalid(conn, "unexpected", f"unexpected {envelope.type.value} frame")
        elif envelope.type is MessageType.ERROR:
            _log.warning("swarm_link.peer_error", code=body.model_dump().get("code"))
        else:
            with correlation_scope(envelope.correlation_id):
                await self._emit(conn, envelope.type.value, body.model_dump())

    async def _invalid(
        self, conn: _Connection, code: str, message: str, envelope: Envelope | None = None
    ) -> None:
        """One refused frame: counted, logged, answered (rate-limited); the link stays up. A
        reliable frame is acked as ``rejected`` so that the peer does not send it again."""
        self._m.invalid.inc()
        seq = envelope.seq if envelope is not None and envelope.reliable else None
        if envelope is not None and seq is not None and self._receiver.in_window(seq):
            self._receiver.mark(seq)
            await self._send_ack(conn, envelope, status="rejected", reason=message[:500])
        now = self.clock.monotonic()
        if now - conn.error_window_start >= 1.0:
            conn.error_window_start, conn.errors_in_window = now, 0
        conn.errors_in_window += 1
        if conn.errors_in_window <= ERROR_REPLIES_PER_S:  # a flood is counted, not echoed
            _log.warning("swarm_link.invalid_frame", code=code, error=message[:300])
            await self._send_error(conn, code, message)
        elif conn.errors_in_window == ERROR_REPLIES_PER_S + 1:
            _log.warning("swarm_link.invalid_frames_suppressed", per_second=ERROR_REPLIES_PER_S)

    async def _on_handshake(self, conn: _Connection, envelope: Envelope, body: BaseModel) -> None:
        if not isinstance(body, HandshakePayload) or body.role != "simulator":
            reason = f"expected the simulator's handshake first, got {envelope.type.value}"
            await self._fail_connection(conn, "bad_handshake", reason, CLOSE_PROTOCOL_ERROR)
            return
        if body.protocol_version.split(".")[0] != PROTOCOL_VERSION.split(".")[0]:
            reason = (
                f"protocol_version {body.protocol_version!r} is not supported "
                f"(this service speaks {PROTOCOL_VERSION})"
            )
            await self._fail_connection(conn, "version_mismatch", reason, CLOSE_PROTOCOL_ERROR)
            return
        if not conn.authenticated and not self._token_ok(body.auth_token):
            self._m.connections.labels(outcome="unauthorized").inc()
            _log.warning("swarm_link.unauthorized", where="handshake", peer=body.session_id)
            reason = (
                "the link token is missing or wrong; give the simulator the service's link "
                "token (swarm.link_token, or the tokens file of the service's data home)"
            )
            await self._reject(conn, "unauthorized", reason, CLOSE_UNAUTHORIZED)
            return
        conn.authenticated = True
        conn.session_id = body.session_id
        live = self._conn
        if live is not None and live is not conn and not live.closing:
            if live.session_id == body.session_id:
                _log.info("swarm_link.reconnected", peer_session=body.session_id)
                await self._close(live, CLOSE_REPLACED, "replaced by a reconnect of this session")
            elif self.peer_policy == "takeover":
                _log.warning(
                    "swarm_link.taken_over",
                    live_session=live.session_id,
                    new_session=body.session_id,
                    policy="takeover",
                )
                await self._close(live, CLOSE_REPLACED, "replaced by a new simulator (takeover)")
            else:
                self._m.connections.labels(outcome="second_peer_refused").inc()
                _log.warning(
                    "swarm_link.second_peer_refused",
                    live_session=live.session_id,
                    new_session=body.session_id,
                    policy="refuse",
                )
                reason = (
                    f"another simulator (session {live.session_id}) is connected and the "
                    "service's link_peer_policy is 'refuse'; stop it first, or set "
                    "swarm.link_peer_policy=takeover"
                )
                await self._reject(conn, "peer_refused", reason, CLOSE_PEER_REFUSED)
                return
        self._candidates.discard(conn)
        self._conn = conn
        self._sender.disconnected()  # everything unacked goes again on this connection
        conn.handshaken = True
        self.peer = body
        if self._receiver.peer_changed(body.session_id):
            _log.info("swarm_link.new_peer_session", peer_session=body.session_id)
        self.breaker.record_success()
        self._m.connections.labels(outcome="accepted").inc()
        self._m.connected.set(1)
        _log.info("swarm_link.up", agents=len(body.agents), pending=len(self._sender))
        await self._flush(conn)
        await self._emit(conn, LinkEvent.LINK_UP.value, body.public())

    async def _flush(self, conn: _Connection) -> None:
        """Send everything buffered, strictly in ``seq`` order, before anything newer."""
        conn.flushing = True
        try:
            while not conn.closing:
                batch = self._sender.unsent()
                if not batch:
                    return
                for envelope in batch:
                    if not await self._transmit(conn, envelope):
                        return
        finally:
            conn.flushing = False

    async def _on_ack(self, body: AckPayload) -> None:
        acked = self._sender.ack(body.seq)
        self._m.pending.set(len(self._sender))
        if acked is None:
            return
        envelope, first_sent = acked
        if first_sent is not None:
            self._m.ack_latency.observe(max(self.clock.monotonic() - first_sent, 0.0))
        if envelope.type is MessageType.COMMAND and envelope.idempotency_key:
            if self._keys_pending.get(envelope.idempotency_key) == envelope.seq:
                del self._keys_pending[envelope.idempotency_key]
            payload = envelope.payload
            await self._emit(
                None,
                LinkEvent.COMMAND_DELIVERED.value,
                {
                    "idempotency_key": envelope.idempotency_key,
                    "command_id": payload.get("command_id"),
                    "agent_id": payload.get("agent_id"),
                },
            )

    async def _on_reliable(self, conn: _Connection, envelope: Envelope, body: BaseModel) -> None:
        assert envelope.seq is not None
        if not self._receiver.in_window(envelope.seq):
            why = f"seq {envelope.seq} is too far ahead of the last one in order"
            await self._invalid(conn, "seq_out_of_window", why)
            return
        duplicate = self._receiver.seen(envelope.seq)
        status: Literal["received", "rejected"] = "received"
        reason: str | None = None
        if duplicate:
            self._m.duplicates.inc()
        else:
            # Processed before the ack goes out: if this process dies first, the peer resends.
            with correlation_scope(envelope.correlation_id):
                ok = await self._emit(conn, envelope.type.value, body.model_dump())
            if not ok:
                status, reason = "rejected", "the service failed to process it (see its log)"
            self._receiver.mark(envelope.seq)
        await self._send_ack(conn, envelope, status=status, duplicate=duplicate, reason=reason)

    async def _send_ack(
        self,
        conn: _Connection,
        envelope: Envelope,
        *,
        status: Literal["received", "rejected"] = "received",
        duplicate: bool = False,
        reason: str | None = None,
    ) -> None:
        assert envelope.seq is not None
        ack = AckPayload(
            message_id=envelope.message_id,
            seq=envelope.seq,
            status=status,
            duplicate=duplicate,
            reason=reason,
        )
        await self._send_raw(
            conn,
            make_envelope(
                MessageType.ACK, ack, clock=self.clock, correlation_id=envelope.correlation_id
            ),
        )

    async def _supervise(self, conn: _Connection) -> None:
        """Handshake deadline, resends, heartbeats and dead-peer detection, read off the clock.

        A fault in here must not leave a connection without heartbeats or resends: it is
        reported and the connection is closed, so the simulator reconnects to a fresh one."""
        try:
            await self._supervise_loop(conn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._report("swarm-link-supervisor", exc)
            await self._close(conn, CLOSE_GOING_AWAY, "link supervisor failed; reconnect")

    async def _supervise_loop(self, conn: _Connection) -> None:
        while not conn.closing:
            await asyncio.sleep(self.poll_interval_s)
            now = self.clock.monotonic()
            if not conn.handshaken:
                if now - conn.opened_at >= self.handshake_timeout_s:
                    reason = f"no handshake within {self.handshake_timeout_s:g} s"
                    await self._fail_connection(
                        conn, "handshake_timeout", reason, CLOSE_HANDSHAKE_TIMEOUT
                    )
                continue
            if now - conn.last_heard >= self.dead_after_s:
                reason = f"nothing heard for {now - conn.last_heard:.1f} s"
                await self._fail_connection(conn, "peer_silent", reason, CLOSE_PEER_SILENT)
                continue
            if self._sender.exhausted():
                reason = f"no ack after {1 + self._sender.max_resends} sends"
                await self._fail_connection(conn, "acks_missing", reason, CLOSE_ACKS_MISSING)
                continue
            for envelope in self._sender.due():
                self._m.resends.inc()
                await self._transmit(conn, envelope)
            if now - conn.last_heartbeat_sent >= self.heartbeat_interval_s:
                conn.last_heartbeat_sent = now
                beat = HeartbeatPayload(role="coordinator", sent_at=utc_iso(self.clock.now()))
                await self._send_raw(
                    conn, make_envelope(MessageType.HEARTBEAT, beat, clock=self.clock)
                )

    async def _fail_connection(
        self, conn: _Connection, reason: str, message: str, code: int
    ) -> None:
        _log.warning("swarm_link.closing", reason=reason, detail=message)
        self._m.dropped_peers.labels(reason=reason).inc()
        if not conn.handshaken:
            self._m.connections.labels(outcome="handshake_failed").inc()
        conn.failed = True
        if conn.authenticated:
            # Only a peer that holds the credential can open the breaker: a stranger failing
            # handshakes must not lock the real simulator out.
            self.breaker.record_failure()
        await self._send_error(conn, reason, message)
        await self._close(conn, code, message)

    async def _reject(self, conn: _Connection, reason: str, message: str, code: int) -> None:
        """Close a candidate that may not become the live peer (no breaker failure)."""
        self._m.dropped_peers.labels(reason=reason).inc()
        conn.failed = True
        await self._send_error(conn, reason, message)
        await self._close(conn, code, message)

    async def _detach(self, conn: _Connection, reason: str) -> None:
        """Forget ``conn`` once: unacked messages wait for the next connection."""
        conn.closing = True
        if conn.detached:
            return
        conn.detached = True
        self._candidates.discard(conn)
        if self._conn is not conn:
            return  # a candidate that never became the live connection
        self._conn = None
        self._sender.disconnected()
        self._m.connected.set(0)
        if conn.handshaken:
            _log.info("swarm_link.down", reason=reason, pending=len(self._sender))
            await self._emit(None, LinkEvent.LINK_DOWN.value, {"reason": reason})

    async def _close(self, conn: _Connection, code: int, reason: str) -> None:
        await self._detach(conn, reason)
        if conn.websocket.application_state is not WebSocketState.DISCONNECTED:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.send_timeout_s):  # a peer may not be reading
                    await conn.websocket.close(code=code, reason=reason[:120])

    async def _refuse(self, websocket: WebSocket, code_name: str, message: str, code: int) -> None:
        error = ErrorPayload(code=code_name, message=message)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.send_timeout_s):  # a peer may not be reading
                await websocket.send_text(
                    make_envelope(MessageType.ERROR, error, clock=self.clock).encode()
                )
                await websocket.close(code=code, reason=message[:120])

    # --- sending ----------------------------------------------------------------------------

    async def _transmit(self, conn: _Connection, envelope: Envelope) -> bool:
        assert envelope.seq is not None
        if await self._send_raw(conn, envelope):
            self._sender.mark_sent(envelope.seq)
            return True
        return False

    async def _send_raw(self, conn: _Connection, envelope: Envelope) -> bool:
        if conn.closing:
            return False
        try:
            # A peer that stops reading fills the socket, and a send then waits for room: bounded
            # (real time), or one stuck peer would freeze acks, heartbeats and every command.
            async with asyncio.timeout(self.send_timeout_s), conn.send_lock:
                await conn.websocket.send_text(envelope.encode())
        except TimeoutError:
            await self._not_reading(conn)
            return False
        except Exception as exc:  # a dead socket surfaces here in several shapes
            _log.info("swarm_link.send_failed", error=f"{type(exc).__name__}: {exc}")
            return False
        self._m.sent.labels(type=envelope.type.value).inc()
        return True

    async def _not_reading(self, conn: _Connection) -> None:
        """Give up on a peer that has not taken a frame for ``send_timeout_s``: the link is down
        (everything unacked waits for the next connection) and its socket is closed."""
        if conn.detached:
            return
        _log.warning("swarm_link.closing", reason="peer_not_reading", timeout_s=self.send_timeout_s)
        self._m.dropped_peers.labels(reason="peer_not_reading").inc()
        conn.failed = True
        await self._detach(conn, "peer not reading")
        task = asyncio.create_task(self._abandon(conn), name="swarm-link-abandon")
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)

    async def _abandon(self, conn: _Connection) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.send_timeout_s):
                await conn.websocket.close(code=CLOSE_PEER_SILENT, reason="peer not reading")

    async def _send_error(self, conn: _Connection, code: str, message: str) -> None:
        error = ErrorPayload(code=code, message=message)
        await self._send_raw(conn, make_envelope(MessageType.ERROR, error, clock=self.clock))

    async def _emit(
        self, conn: _Connection | None, event_type: str, payload: dict[str, Any]
    ) -> bool:
        """Hand one event to ``on_event``; False (reported, the link stays up) if it raised."""
        handler = self.on_event
        if handler is None:
            return True
        try:
            await handler(event_type, payload)
        except Exception as exc:  # the link outlives a faulty subscriber
            self._m.handler_errors.labels(type=event_type).inc()
            self._report("swarm-link-events", exc, event_type=event_type)
            if conn is not None:
                await self._send_error(
                    conn, "processing_failed", f"the service failed to process a {event_type}"
                )
            return False
        return True

    def _report(self, task: str, exc: BaseException, **context: Any) -> None:
        if self.on_failure is not None:
            self.on_failure(task, exc)
        else:
            _log.error("swarm_link.failure", task=task, error=repr(exc)[:300], **context)


def _command_payload(command: Mapping[str, Any] | CommandPayload) -> CommandPayload:
    if isinstance(command, CommandPayload):
        return command
    try:
        return CommandPayload.model_validate(dict(command))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err.get("loc", ())) or "command"
        raise InvalidInputError(
            f"command field {where!r}: {err.get('msg', 'invalid')}",
            field=where,
            value=repr(err.get("input"))[:80],
        ) from exc


__all__ = ["BreakerState", "EventHandler", "SimulatorLink"]
