"""Test helpers: serve a SimulatorLink on uvicorn (127.0.0.1, port 0) and talk to it raw."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from websockets.asyncio.client import ClientConnection, connect

from atomlab.core.clock import Clock, FakeClock
from atomlab.core.logging import current_correlation_id
from atomlab.core.metrics import Metrics
from atomlab.sim.swarm_wire import (
    AckPayload,
    Envelope,
    HandshakePayload,
    MessageType,
    decode,
    make_envelope,
    new_id,
)
from atomlab.swarm.link import SimulatorLink

WAIT_S = 10.0  # safety net against a hang, never a timing assertion


def make_link(clock: FakeClock, **options: Any) -> tuple[SimulatorLink, EventRecorder, Metrics]:
    """A link on ``clock`` with its own metrics and an :class:`EventRecorder` as ``on_event``."""
    events = EventRecorder()
    metrics = Metrics("swarm")
    link = SimulatorLink(clock=clock, metrics=metrics, on_event=events, **options)
    return link, events, metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    """A metric's current value (0 before it was first counted)."""
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


async def time_out_handshakes(url: str, clock: FakeClock, count: int, timeout_s: float) -> None:
    """``count`` peers connect and never answer the handshake; each is told it timed out
    once ``clock`` passes the link's ``handshake_timeout_s`` (``timeout_s``)."""
    for _ in range(count):
        async with raw_peer(url, clock) as peer:
            await peer.recv(MessageType.HANDSHAKE)
            clock.advance(timeout_s)
            error = await peer.recv(MessageType.ERROR)
            assert error.payload["code"] == "handshake_timeout"


@asynccontextmanager
async def serve_app(app: Any, *, lifespan: str = "off", port: int = 0) -> AsyncIterator[int]:
    """Run ``app`` on uvicorn in this event loop; yields the port (``lifespan="on"`` for apps
    whose lifespan starts workers)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)  # connections queue in the backlog until uvicorn accepts them
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan=lifespan, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, WAIT_S)


@asynccontextmanager
async def serve_link(link: SimulatorLink) -> AsyncIterator[str]:
    """Serve ``link.handle`` at ``/ws/isaac``; yields the URL."""
    app = Starlette(routes=[WebSocketRoute("/ws/isaac", link.handle)])
    async with serve_app(app) as port:
        yield f"ws://127.0.0.1:{port}/ws/isaac"


class EventRecorder:
    """An ``on_event`` callback that remembers every event and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.correlation_ids: list[tuple[str, str | None]] = []  # in force during each call
        self._changed = asyncio.Condition()

    async def __call__(self, event_type: str, payload: dict[str, Any]) -> None:
        async with self._changed:
            self.events.append((event_type, payload))
            self.correlation_ids.append((event_type, current_correlation_id()))
            self._changed.notify_all()

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [payload for kind, payload in self.events if kind == event_type]

    async def wait_for(self, event_type: str, count: int = 1) -> list[dict[str, Any]]:
        async with asyncio.timeout(WAIT_S), self._changed:
            await self._changed.wait_for(lambda: len(self.of(event_type)) >= count)
        return self.of(event_type)


class RawPeer:
    """A hand-driven simulator end: every frame is sent and read explicitly."""

    def __init__(self, ws: ClientConnection, clock: Clock) -> None:
        self.ws = ws
        self.clock = clock
        self.session_id = new_id()
        self._seq = 0

    async def recv(self, *types: MessageType) -> Envelope:
        """The next frame of one of ``types`` (any type if none given); others are skipped."""
        async with asyncio.timeout(WAIT_S):
            while True:
                envelope = decode(await self.ws.recv())
                if not types or envelope.type in types:
                    return envelope

    async def send(self, envelope: Envelope) -> None:
        await self.ws.send(envelope.encode())

    async def handshake(self, session_id: str | None = None, token: str | None = None) -> Envelope:
        """Read the service's handshake and answer it (with ``token`` as the link credential);
        returns the service's."""
        theirs = await self.recv(MessageType.HANDSHAKE)
        ours = HandshakePayload(
            role="simulator", session_id=session_id or self.session_id, auth_token=token
        )
        await self.send(make_envelope(MessageType.HANDSHAKE, ours, clock=self.clock))
        return theirs

    async def ack(self, envelope: Envelope) -> None:
        assert envelope.seq is not None
        body = AckPayload(message_id=envelope.message_id, seq=envelope.seq)
        await self.send(make_envelope(MessageType.ACK, body, clock=self.clock))

    def reliable(self, message_type: MessageType, payload: dict[str, Any]) -> Envelope:
        self._seq += 1
        return make_envelope(message_type, payload, clock=self.clock, seq=self._seq)


@asynccontextmanager
async def raw_peer(
    url: str, clock: Clock, headers: dict[str, str] | None = None
) -> AsyncIterator[RawPeer]:
    async with connect(url, open_timeout=WAIT_S, additional_headers=headers) as ws:
        yield RawPeer(ws, clock)
