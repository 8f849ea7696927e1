"""An STM behind the Nanonis TCP Programming Interface: an asyncio server on ports 6501–6504.

In an async program or test::

    async with SpmSimulator(seed=0, ports=[0]) as sim:
        host, port = sim.host, sim.ports[0]          # talk Nanonis TCP to it

From synchronous code (a test, the official ``nanonis_spm`` client, a benchmark)::

    with start_simulator_in_thread(seed=0, ports=[0]) as sim:
        sim.ports                                    # [<free port>]

Every connection is served in order; all connections share one instrument. Malformed headers
(garbage bytes) close only the connection that sent them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TypeVar

from atomlab.core.clock import Clock, SystemClock
from atomlab.core.errors import InvalidInputError, UnavailableError
from atomlab.core.logging import get_logger
from atomlab.instrument import FramingError
from atomlab.instrument.protocol import HEADER_SIZE, RequestHeader, read_request_header
from atomlab.sim.stm_commands import StmCommands
from atomlab.sim.stm_physics import (
    DEFAULT_ACQ_PERIOD_S,
    DEFAULT_LOOP_RATE_HZ,
    Disturbances,
    StmPhysics,
)
from atomlab.surface import Surface

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORTS: Final = (6501, 6502, 6503, 6504)
DEFAULT_TICK_S: Final = 0.01
"""How often the server advances the physics when no request does (real clock only)."""
_log = get_logger("atomlab.sim")
T = TypeVar("T")


class SpmSimulator:
    """The simulated STM server. Physics and handlers are reachable as ``.physics``/``.commands``.

    ``clock`` defaults to the system clock; pass a :class:`~atomlab.core.clock.FakeClock` to
    drive time from a test (waits then complete instantly, and the background tick is idle).
    ``session_dir`` is where saved scans and spectra go (``Util.SessionPathGet``; a new
    temporary folder when not given).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        surface: Surface | None = None,
        host: str = DEFAULT_HOST,
        ports: Sequence[int] = DEFAULT_PORTS,
        clock: Clock | None = None,
        disturbances: Disturbances | None = None,
        loop_rate_hz: float = DEFAULT_LOOP_RATE_HZ,
        acq_period_s: float = DEFAULT_ACQ_PERIOD_S,
        tick_interval_s: float | None = DEFAULT_TICK_S,
        session_dir: Path | None = None,
    ) -> None:
        self.seed = seed
        self.host = _checked_host(host)
        self.requested_ports = tuple(_checked_port(p) for p in ports)
        self.clock: Clock = clock or SystemClock()
        self.surface = surface if surface is not None else Surface.generate(seed)
        self.physics = StmPhysics(
            self.surface,
            seed=seed,
            start_s=self.clock.monotonic(),
            loop_rate_hz=loop_rate_hz,
            acq_period_s=acq_period_s,
            disturbances=disturbances,
        )
        self.commands = StmCommands(self.physics, self.clock, session_dir=session_dir)
        self.tick_interval_s = tick_interval_s
        self.ports: list[int] = []
        self.connections_served = 0
        self._servers: list[asyncio.Server] = []
        self._connections: set[_Connection] = set()
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen on every port; raises :class:`UnavailableError` if one is taken."""
        loop = asyncio.get_running_loop()
        try:
            for port in self.requested_ports:
                server = await loop.create_server(lambda: _Connection(self), self.host, port)
                self._servers.append(server)
                self.ports.append(server.sockets[0].getsockname()[1])
        except (UnicodeError, ValueError) as exc:  # a host the resolver cannot even encode
            await self.stop()
            raise InvalidInputError(
                f"cannot listen on host {self.host[:80]!r}: {exc}; give an address such as "
                "127.0.0.1 or a valid host name",
                field="host",
            ) from None
        except OSError as exc:
            await self.stop()
            raise UnavailableError(
                f"cannot listen on {self.host} port {port}: {exc.strerror or exc}; "
                "stop what uses it or pick another port with --port",
                host=self.host,
                port=port,
            ) from None
        if self.tick_interval_s is not None:
            self._ticker = asyncio.create_task(self._tick(self.tick_interval_s))
        _log.info("simulator listening", host=self.host, ports=self.ports, seed=self.seed)

    async def stop(self) -> None:
        """Stop listening, close every connection and wait for the handlers to finish."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        for server in self._servers:
            server.close()
        tasks = [task for c in list(self._connections) if (task := c.close()) is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> SpmSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _tick(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.physics.advance_to(self.clock.monotonic())


MAX_PORT: Final = 65535
MAX_HOST_CHARS: Final = 253
"""The longest host name DNS allows."""


def _checked_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= MAX_PORT:
        raise InvalidInputError(
            f"port {port!r} is outside 0..{MAX_PORT} (0 picks any free port); give a port such "
            "as 6501",
            field="port",
            value=port if isinstance(port, int) else repr(port),
        )
    return port


def _checked_host(host: str) -> str:
    if not isinstance(host, str) or not host.strip() or len(host) > MAX_HOST_CHARS:
        shown = host[:80] + "..." if isinstance(host, str) and len(host) > 80 else host
        raise InvalidInputError(
            f"host {shown!r} is not an address or host name (at most {MAX_HOST_CHARS} "
            "characters); give one such as 127.0.0.1",
            field="host",
        )
    try:
        host.encode("idna")  # what the resolver does when it listens; checked before anything
    except UnicodeError as exc:
        raise InvalidInputError(
            f"host {host[:80]!r} is not a valid host name ({exc}); give an address such as "
            "127.0.0.1",
            field="host",
        ) from None
    return host


_HEADER_CACHE: dict[bytes, RequestHeader] = {}
_HEADER_CACHE_SIZE: Final = 4096


def _parse_header(raw: bytes) -> RequestHeader:
    """:func:`read_request_header`, remembered: polling clients send the same headers again."""
    header = _HEADER_CACHE.get(raw)
    if header is None:
        header = read_request_header(raw)  # garbage raises and is never remembered
        if len(_HEADER_CACHE) < _HEADER_CACHE_SIZE:
            _HEADER_CACHE[raw] = header
    return header


class _Connection(asyncio.Protocol):
    """One client connection: requests are parsed from the byte stream and answered in order.

    Requests whose handler never waits are answered inside ``data_received`` (the fast path);
    a waiting one (``wait = 1``, ``Scan.WaitEndOfScan``...) runs as a task and holds back the
    requests behind it, so each connection stays serial as on Nanonis.
    """

    def __init__(self, simulator: SpmSimulator) -> None:
        self._simulator = simulator
        self._commands = simulator.commands
        self._buffer = bytearray()
        self._pending: deque[tuple[RequestHeader, bytes]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._closed = False
        self._peer: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peer = transport.get_extra_info("peername")
        self._simulator._connections.add(self)
        self._simulator.connections_served += 1

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while len(buffer) >= HEADER_SIZE:
            try:
                header = _parse_header(bytes(buffer[:HEADER_SIZE]))
            except FramingError as exc:
                _log.warning(
                    "closing connection after garbage", peer=self._peer, reason=exc.message
                )
                self.close()
                return
            end = HEADER_SIZE + header.body_size
            if len(buffer) < end:
                break
            self._pending.append((header, bytes(buffer[HEADER_SIZE:end])))
            del buffer[:end]
        self._answer_pending()

    def _answer_pending(self) -> None:
        handle = self._commands.handle
        pending = self._pending
        while pending and self._task is None and not self._closed:
            header, body = pending.popleft()
            reply = handle(header.name, body)
            if isinstance(reply, bytes):
                self._send(header, reply)
            else:
                self._task = asyncio.get_running_loop().create_task(
                    self._answer_later(header, reply)
                )

    async def _answer_later(self, header: RequestHeader, reply: Coroutine[Any, Any, bytes]) -> None:
        try:
            self._send(header, await reply)
        finally:
            self._task = None
        self._answer_pending()

    def _send(self, header: RequestHeader, reply: bytes) -> None:
        if header.send_response and self._transport is not None and not self._closed:
            self._transport.write(reply)

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()  # a client that does not read gets no more answers

    def resume_writing(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        self._simulator._connections.discard(self)

    def close(self) -> asyncio.Task[None] | None:
        """Close the connection; returns the cancelled in-flight task, if any, to await."""
        self._closed = True
        task = self._task
        if task is not None:
            task.cancel()
        if self._transport is not None:
            self._transport.close()
        return task


class SimulatorThread:
    """A simulator running on its own event loop in a daemon thread (for synchronous callers).

    ``call(fn)`` runs ``fn()`` on the simulator's loop and returns its result, which is the safe
    way to inspect or change the physics while clients are connected.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="spm-simulator", daemon=True)
        self.simulator: SpmSimulator | None = None

    @property
    def sim(self) -> SpmSimulator:
        if self.simulator is None:
            raise RuntimeError("the simulator thread has not started")
        return self.simulator

    @property
    def ports(self) -> list[int]:
        return self.sim.ports

    @property
    def host(self) -> str:
        return self.sim.host

    @property
    def physics(self) -> StmPhysics:
        return self.sim.physics

    def start(self, timeout_s: float = 10.0) -> SimulatorThread:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise UnavailableError(f"the simulator did not start within {timeout_s} s")
        if self._error is not None:
            self._thread.join(timeout_s)
            raise self._error
        return self

    def call(self, fn: Callable[[], T], timeout_s: float = 10.0) -> T:
        """Run ``fn()`` on the simulator's event loop and return its result."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server and join the thread (idempotent)."""
        if self._thread.is_alive() and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout_s)

    def __enter__(self) -> SimulatorThread:
        return self if self._ready.is_set() else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        try:
            self.simulator = SpmSimulator(**self._kwargs)
            await self.simulator.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            await self.simulator.stop()


def start_simulator_in_thread(**kwargs: Any) -> SimulatorThread:
    """Start an :class:`SpmSimulator` (same keyword arguments) in a background thread."""
    return SimulatorThread(**kwargs).start()
