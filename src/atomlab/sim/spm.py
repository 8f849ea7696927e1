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
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, TypeVar

from atomlab.core.clock import Clock, SystemClock
from atomlab.core.errors import UnavailableError
from atomlab.core.logging import get_logger
from atomlab.instrument import FramingError
from atomlab.instrument.protocol import HEADER_SIZE, read_request_header
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
_WRITE_HIGH_WATER: Final = 1 << 20
_log = get_logger("atomlab.sim")
T = TypeVar("T")


class SpmSimulator:
    """The simulated STM server. Physics and handlers are reachable as ``.physics``/``.commands``.

    ``clock`` defaults to the system clock; pass a :class:`~atomlab.core.clock.FakeClock` to
    drive time from a test (waits then complete instantly, and the background tick is idle).
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
    ) -> None:
        self.seed = seed
        self.host = host
        self.requested_ports = tuple(ports)
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
        self.commands = StmCommands(self.physics, self.clock)
        self.tick_interval_s = tick_interval_s
        self.ports: list[int] = []
        self.connections_served = 0
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen on every port; raises :class:`UnavailableError` if one is taken."""
        try:
            for port in self.requested_ports:
                server = await asyncio.start_server(self._serve, self.host, port)
                self._servers.append(server)
                self.ports.append(server.sockets[0].getsockname()[1])
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
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        self.connections_served += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = writer.get_extra_info("peername")
        dispatch = self.commands.dispatch
        try:
            while True:
                head = await reader.readexactly(HEADER_SIZE)
                try:
                    header = read_request_header(head)
                except FramingError as exc:
                    _log.warning("closing connection after garbage", peer=peer, reason=exc.message)
                    break
                body = await reader.readexactly(header.body_size) if header.body_size else b""
                reply = await dispatch(header.name, body)
                if header.send_response:
                    writer.write(reply)
                    if writer.transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # never let one connection's failure reach the event loop
            with contextlib.suppress(Exception):
                _log.exception("connection handler failed; closing it", peer=peer)
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)


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
