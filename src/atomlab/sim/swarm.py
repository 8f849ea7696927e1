"""The swarm simulator as a WebSocket peer of the swarm service (``atomlab sim swarm``).

It dials ``/ws/isaac``, answers the handshake with its agents, reports the defects of its
surface, executes commands at most once per idempotency key, reports results reliably, sends
telemetry and heartbeats, and reconnects with back-off 1, 2, 4 … 60 s. Faults (lost, duplicated
or malformed frames, lost acks, cut connections, dead and stuck agents) come from a seeded
:class:`~atomlab.sim.swarm_world.FaultInjector`::

    world = SwarmWorld(SwarmConfig(agents=16, seed=3), ground_truth=GroundTruthLog("gt.jsonl"))
    sim = SwarmSimulator(world, url="ws://127.0.0.1:8000/ws/isaac")
    summary = await sim.run(duration_s=120)
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from atomlab.core.clock import Clock, SystemClock, utc_iso
from atomlab.core.errors import ConnectionFailedError, InvalidInputError, PolicyRefusedError
from atomlab.core.logging import get_logger
from atomlab.sim.swarm_channel import Backoff, ReliableReceiver, ReliableSender
from atomlab.sim.swarm_wire import (
    PROTOCOL_VERSION,
    AckPayload,
    CommandPayload,
    CommandResultPayload,
    Envelope,
    GroundTruthPayload,
    HandshakePayload,
    HeartbeatPayload,
    MessageType,
    WireError,
    decode,
    make_envelope,
)
from atomlab.sim.swarm_world import SwarmWorld

DEFAULT_ACK_TIMEOUT_S = 2.0
DEFAULT_MAX_RESENDS = 5
DEFAULT_OPEN_TIMEOUT_S = 10.0
DEFAULT_POLL_INTERVAL_S = 0.02  # real seconds between looks at the (possibly fake) clock
SERVER_SILENCE_BEATS = 3
CLOSE_UNAUTHORIZED = 4401  # the service refused the link token: retrying cannot help
CLOSE_PEER_REFUSED = 4409  # another simulator is connected: retried with back-off


class LinkRefusedError(PolicyRefusedError):
    """The swarm service refused this simulator's credential (exit 2)."""

    type_name = "link_refused"


_log = get_logger(__name__)


class ScaledClock:
    """A clock running ``scale`` times faster than ``base``: a 10 s sleep takes 10/scale s."""

    def __init__(self, scale: float, base: Clock | None = None) -> None:
        if scale <= 0:
            raise InvalidInputError(f"time scale must be > 0, got {scale}", field="time_scale")
        self.scale = scale
        self._base = base or SystemClock()
        self._t0 = self._base.monotonic()
        self._wall0 = self._base.now()

    def monotonic(self) -> float:
        return (self._base.monotonic() - self._t0) * self.scale

    def now(self) -> datetime:
        return self._wall0 + timedelta(seconds=self.monotonic())

    def sleep(self, seconds: float) -> None:
        self._base.sleep(seconds / self.scale)

    async def sleep_async(self, seconds: float) -> None:
        await self._base.sleep_async(seconds / self.scale)

    def __repr__(self) -> str:
        return f"ScaledClock(scale={self.scale})"


class SwarmSimulator:
    """Runs a :class:`SwarmWorld` in (scaled) real time and connects it to the service."""

    def __init__(
        self,
        world: SwarmWorld,
        *,
        url: str,
        clock: Clock | None = None,
        ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S,
        max_resends: int = DEFAULT_MAX_RESENDS,
        backoff: Backoff | None = None,
        report_defects: bool = True,
        open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        token: str | None = None,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise InvalidInputError(
                f"url {url!r} must start with ws:// or wss:// (e.g. ws://127.0.0.1:8000/ws/isaac)",
                field="url",
                value=url,
            )
        self.world = world
        self.url = url
        self.token = token  # the service's link token, sent in the handshake (never logged)
        self.clock = clock or SystemClock()
        self.backoff = backoff or Backoff()
        self.report_defects = report_defects
        self.open_timeout_s = open_timeout_s
        self.poll_interval_s = poll_interval_s
        self.faults = world.faults
        self.time_scale = self.clock.scale if isinstance(self.clock, ScaledClock) else 1.0
        self.sender = ReliableSender(
            clock=self.clock, ack_timeout_s=ack_timeout_s, max_resends=max_resends
        )
        self.receiver = ReliableReceiver()
        self.reconnect_delays: list[float] = []
        self.connections = 0
        self.commands_received = 0
        self.duplicates_received = 0
        self._ws: ClientConnection | None = None
        self._server_heartbeat_s = 10.0
        self._last_heard = 0.0
        self._reported_defects = False
        self._correlation: dict[str, str] = {}  # idempotency key -> the command's correlation id
        self._stopping = asyncio.Event()
        self._connected = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def stop(self) -> None:
        """Ask :meth:`run` to finish after the current tick."""
        self._stopping.set()

    async def run(
        self, *, duration_s: float | None = None, max_connect_attempts: int | None = None
    ) -> GroundTruthPayload:
        """Simulate until :meth:`stop` or ``duration_s`` simulated seconds; returns the summary.

        Raises :class:`ConnectionFailedError` when ``max_connect_attempts`` attempts in a row
        fail (by default it keeps trying).
        """
        link = asyncio.create_task(
            self.connect_loop(max_attempts=max_connect_attempts), name="swarm-sim-link"
        )
        try:
            await self._world_loop(duration_s, link)
        finally:
            self._stopping.set()
            await self._drop_connection()
            if not link.done():
                link.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionFailedError):
                await link
            summary = self.world.summary()
            self.world.close()
        return summary

    # --- the world ----------------------------------------------------------------------------

    async def _world_loop(self, duration_s: float | None, link: asyncio.Task[None]) -> None:
        config = self.world.config
        next_status = 0.0
        next_heartbeat = 0.0
        while not self._stopping.is_set():
            failure = link.exception() if link.done() and not link.cancelled() else None
            if failure is not None:
                raise failure
            if duration_s is not None and self.world.t >= duration_s - 1e-9:
                return
            await self.clock.sleep_async(config.tick_s)
            for event in self.world.step(config.tick_s):
                message_type = (
                    MessageType.COMMAND_RESULT
                    if isinstance(event, CommandResultPayload)
                    else MessageType.PROXIMITY_ALERT
                )
                cid = None
                if isinstance(event, CommandResultPayload):
                    cid = self._correlation.get(event.idempotency_key)
                await self._send_reliable(message_type, event, cid)
            t = self.world.t
            if t >= next_status:
                next_status = t + config.status_interval_s
                await self._send_plain(MessageType.AGENT_STATUS, self.world.status())
            if t >= next_heartbeat:
                next_heartbeat = t + config.heartbeat_interval_s
                beat = HeartbeatPayload(
                    role="simulator",
                    sent_at=utc_iso(self.clock.now()),
                    agents_alive=self.world.alive(),
                )
                await self._send_plain(MessageType.HEARTBEAT, beat)
                await self._send_plain(MessageType.GROUND_TRUTH, self.world.summary())
            if self.faults.disconnect(t, config.tick_s) and self._ws is not None:
                self.world.note_fault("disconnect")
                await self._drop_connection(abort=True)

    # --- the link -----------------------------------------------------------------------------

    async def connect_loop(self, *, max_attempts: int | None = None) -> None:
        """Connect, serve, and reconnect with back-off until stopped.

        Raises :class:`ConnectionFailedError` after ``max_attempts`` failed attempts in a row.
        """
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._session()
                failures = 0
            except (
                OSError,
                InvalidHandshake,
                TimeoutError,
                ConnectionClosed,
                WireError,
                ConnectionFailedError,
            ) as exc:
                failures += 1
                _log.info("swarm_sim.connect_failed", url=self.url, error=str(exc))
                if max_attempts is not None and failures >= max_attempts:
                    raise ConnectionFailedError(
                        f"could not connect to {self.url} after {failures} attempts: {exc}",
                        url=self.url,
                    ) from exc
            except InvalidURI as exc:
                raise InvalidInputError(
                    f"url {self.url!r} is not valid: {exc}", field="url"
                ) from exc
            except LinkRefusedError:
                raise  # a wrong credential stays wrong: no point in retrying
            if self._stopping.is_set():
                return
            delay = self.backoff.next_delay()
            self.reconnect_delays.append(delay)
            await self.clock.sleep_async(delay)

    async def _session(self) -> None:
        async with connect(self.url, open_timeout=self.open_timeout_s, max_queue=None) as ws:
            async with asyncio.timeout(self.open_timeout_s):
                theirs = decode(await ws.recv())
            body = theirs.parsed()
            if not isinstance(body, HandshakePayload):
                raise WireError(f"expected a handshake, got {theirs.type.value}")
            if body.protocol_version.split(".")[0] != PROTOCOL_VERSION.split(".")[0]:
                raise WireError(f"service speaks protocol {body.protocol_version}")
            # The service counts real seconds; this clock may run faster (ScaledClock).
            self._server_heartbeat_s = body.heartbeat_interval_s * self.time_scale
            self.receiver.peer_changed(body.session_id)
            await ws.send(self._handshake().encode())
            self._ws = ws
            self._last_heard = self.clock.monotonic()
            self.connections += 1
            self.backoff.reset()
            self._connected.set()
            try:
                if self.report_defects and not self._reported_defects:
                    self._reported_defects = True
                    for report in self.world.sensor_reports():
                        await self._send_reliable(MessageType.SENSOR_DATA, report)
                while self.world.restart_results:  # a resumed world: say what was cut off
                    result = self.world.restart_results.pop(0)
                    await self._send_reliable(MessageType.COMMAND_RESULT, result)
                for envelope in self.sender.unsent():
                    await self._transmit(envelope)
                supervisor = asyncio.create_task(self._supervise(ws))
                try:
                    await self._read_loop(ws)
                finally:
                    supervisor.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await supervisor
                self._check_refusal(ws)
            finally:
                if self._ws is ws:
                    self._ws = None
                self._connected.clear()
                self.sender.disconnected()

    def _check_refusal(self, ws: ClientConnection) -> None:
        """Turn the service's refusals into errors: a wrong token is fatal, a busy link is
        retried (with back-off, and counted against ``max_connect_attempts``)."""
        code = ws.close_code
        if code == CLOSE_UNAUTHORIZED:
            raise LinkRefusedError(
                f"the swarm service at {self.url} refused this simulator's link token; use "
                "the same data home as 'atomlab swarm serve' (its tokens file) or set "
                "ATOMLAB_SWARM__LINK_TOKEN to the service's link token",
                url=self.url,
            )
        if code == CLOSE_PEER_REFUSED:
            _log.warning("swarm_sim.link_busy", reason=ws.close_reason)
            raise ConnectionFailedError(
                f"another simulator is connected to {self.url} ({ws.close_reason})", url=self.url
            )

    def _handshake(self) -> Envelope:
        config = self.world.config
        scale = self.time_scale  # the service lives in real time: speeds and periods in it
        agents = [
            info.model_copy(update={"speed_nm_s": (info.speed_nm_s or 0.0) * scale})
            for info in self.world.agent_infos()
        ]
        payload = HandshakePayload(
            role="simulator",
            session_id=self.sender.session_id,
            heartbeat_interval_s=config.heartbeat_interval_s / scale,
            ack_timeout_s=self.sender.ack_timeout_s / scale,
            capabilities=["seq", "ack", "idempotency", "heartbeat", "resend"],
            agents=agents,
            bounds=self.world.bounds(),
            separation_nm=config.separation_nm,
            drift_max_nm=config.drift_max_units / 10,
            auth_token=self.token,
        )
        return make_envelope(MessageType.HANDSHAKE, payload, clock=self.clock)

    async def _read_loop(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                self._last_heard = self.clock.monotonic()
                if self.faults.drop():
                    continue  # lost on the way in
                try:
                    envelope = decode(frame)
                except WireError as exc:
                    _log.warning("swarm_sim.invalid_frame", error=exc.message)
                    continue
                await self._on_frame(envelope)

    async def _on_frame(self, envelope: Envelope) -> None:
        if envelope.type is MessageType.ACK:
            try:
                ack = envelope.parsed()
            except WireError:
                return
            assert isinstance(ack, AckPayload)
            self.sender.ack(ack.seq)
        elif envelope.type is MessageType.COMMAND:
            await self._on_command(envelope)
        elif envelope.type is MessageType.ERROR:
            _log.warning("swarm_sim.service_error", payload=envelope.payload)
        elif envelope.reliable:
            await self._ack(envelope, duplicate=False)

    async def _on_command(self, envelope: Envelope) -> None:
        assert envelope.seq is not None and envelope.idempotency_key is not None
        self.commands_received += 1
        duplicate = self.receiver.seen(envelope.seq)
        if duplicate:
            self.duplicates_received += 1
        else:
            try:
                command = envelope.parsed()
            except WireError as exc:
                _log.warning("swarm_sim.bad_command", error=exc.message)
                command = None
            if isinstance(command, CommandPayload):
                self._correlation.setdefault(envelope.idempotency_key, envelope.correlation_id)
                for result in self.world.submit(command, envelope.idempotency_key):
                    await self._send_reliable(
                        MessageType.COMMAND_RESULT, result, envelope.correlation_id
                    )
            self.receiver.mark(envelope.seq)
        await self._ack(envelope, duplicate=duplicate)

    async def _ack(self, envelope: Envelope, *, duplicate: bool) -> None:
        if self.faults.lose_ack():
            return
        assert envelope.seq is not None
        ack = AckPayload(message_id=envelope.message_id, seq=envelope.seq, duplicate=duplicate)
        reply = make_envelope(
            MessageType.ACK, ack, clock=self.clock, correlation_id=envelope.correlation_id
        )
        await self._send_frame(reply)

    async def _supervise(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            now = self.clock.monotonic()
            if now - self._last_heard >= SERVER_SILENCE_BEATS * self._server_heartbeat_s:
                _log.warning("swarm_sim.service_silent")
                await self._drop_connection(abort=True)
                return
            if self.sender.exhausted():
                _log.warning("swarm_sim.acks_missing", pending=len(self.sender))
                await self._drop_connection(abort=True)
                return
            for envelope in self.sender.due():
                await self._transmit(envelope)

    async def _drop_connection(self, *, abort: bool = False) -> None:
        ws = self._ws
        if ws is None:
            return
        self._ws = None
        if abort:
            ws.transport.abort()  # an abrupt cut, as a network failure would be
        else:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), self.open_timeout_s)

    # --- sending ----------------------------------------------------------------------------

    async def _send_reliable(
        self, message_type: MessageType, payload: BaseModel, correlation_id: str | None = None
    ) -> None:
        envelope = self.sender.stamp(message_type, payload, correlation_id=correlation_id)
        if self._ws is not None:
            await self._transmit(envelope)

    async def _transmit(self, envelope: Envelope) -> None:
        assert envelope.seq is not None
        if await self._send_frame(envelope):
            self.sender.mark_sent(envelope.seq)

    async def _send_plain(self, message_type: MessageType, payload: BaseModel) -> None:
        if self._ws is not None:
            await self._send_frame(make_envelope(message_type, payload, clock=self.clock))

    async def _send_frame(self, envelope: Envelope) -> bool:
        """Send one frame through the fault injector; True if it left (or was 'lost')."""
        ws = self._ws
        if ws is None:
            return False
        try:
            if self.faults.malformed():
                await ws.send('{"type": "garbage", ')
            if self.faults.drop():
                return True  # lost on the way out: the sender will resend it
            text = envelope.encode()
            await ws.send(text)
            if self.faults.duplicate():
                await ws.send(text)
        except ConnectionClosed:
            return False
        return True


__all__ = ["ScaledClock", "SwarmSimulator"]
