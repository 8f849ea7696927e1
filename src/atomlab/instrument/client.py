"""A Nanonis TCP client on the shared protocol codec: timeouts that hold, reconnects, named fields.

Unlike the official ``nanonis-spm`` client, the per-call timeout stays in force for every call,
each reply is decoded into named fields, and a broken connection is reopened on the next call::

    with NanonisClient("127.0.0.1", 6501, call_timeout_s=2.0) as nanonis:
        nanonis.call("Bias.Set", {"bias_v": 0.5})
        frame = nanonis.call("Scan.FrameGet")          # frame["height_m"], frame["angle_deg"], ...
        current, z = nanonis.read_signals([0, 30])     # one Signals.ValsGet round trip
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from atomlab.core.errors import ConnectionFailedError, InvalidInputError, OperationTimeoutError
from atomlab.instrument import protocol
from atomlab.instrument.commands import CommandSpec
from atomlab.instrument.errors import FramingError, ProtocolError
from atomlab.instrument.protocol import HEADER_SIZE, CommandCodec, Reply

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 6501
DEFAULT_PORTS: Final = (6501, 6502, 6503, 6504)
DEFAULT_CONNECT_TIMEOUT_S: Final = 2.0
DEFAULT_CALL_TIMEOUT_S: Final = 5.0
MAX_TIMEOUT_S: Final = 86_400.0
"""A day: longer (inf, 1e308) overflows the kernel's timeout and is surely a typo."""
MAX_PORT: Final = 65535
MAX_HOST_CHARS: Final = 253
_RECV_CHUNK: Final = 65536
_KERNEL_TIMEOUTS: Final = sys.platform.startswith(("linux", "darwin"))


def is_idempotent(command: str) -> bool:
    """Reads and plain settings may be sent twice; actions (pulses, moves, scans) may not."""
    verb = command.rsplit(".", 1)[-1]
    return verb.endswith(("Get", "Set"))


class NanonisClient:
    """One TCP connection to a Nanonis controller; calls are serialised, so threads may share it.

    ``connect_timeout_s`` bounds opening the connection, ``call_timeout_s`` bounds every call from
    sending the request to the last reply byte (``call(..., timeout_s=...)`` overrides it once).
    After a timeout or a broken connection the socket is closed (a late reply must never be read
    as the answer to the next call) and the next call reconnects; a read or a plain setting is
    retried once on a fresh connection, an action is not.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        retry_idempotent: bool = True,
    ) -> None:
        for name, value in (
            ("connect_timeout_s", connect_timeout_s),
            ("call_timeout_s", call_timeout_s),
        ):
            if not (value > 0 and value <= MAX_TIMEOUT_S):
                raise InvalidInputError(
                    f"{name} must be > 0 and at most {MAX_TIMEOUT_S:g} seconds, got {value!r}",
                    field=name,
                )
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= MAX_PORT:
            raise InvalidInputError(
                f"port {port!r} is outside 1..{MAX_PORT}; the Nanonis TCP interface listens on "
                "6501-6504 by default",
                field="port",
                value=port if isinstance(port, int) else repr(port),
            )
        if not isinstance(host, str) or not host.strip() or len(host) > MAX_HOST_CHARS:
            shown = host[:80] + "..." if isinstance(host, str) and len(host) > 80 else host
            raise InvalidInputError(
                f"host {shown!r} is not an address or host name (at most {MAX_HOST_CHARS} "
                "characters); give one such as 127.0.0.1",
                field="host",
            )
        self.host = host
        self.port = port
        self.connect_timeout_s = connect_timeout_s
        self.call_timeout_s = call_timeout_s
        self.retry_idempotent = retry_idempotent
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._lock = threading.RLock()
        self._signal_names: list[str] | None = None
        self._codecs: dict[str, CommandCodec] = {}
        self._batch: _SignalBatch | None = None
        self._timeout_set: float | None = None
        self.reconnects = 0
        self._ever_connected = False

    def __repr__(self) -> str:
        state = "connected" if self._sock is not None else "closed"
        return f"NanonisClient({self.host!r}, {self.port}, {state})"

    # --- connection ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> Self:
        """Open the connection (no-op when open); ConnectionFailedError when it cannot."""
        with self._lock:
            if self._sock is None:
                self._sock = self._open()
                if self._ever_connected:
                    self.reconnects += 1
                self._ever_connected = True
        return self

    def _open(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout_s)
        except (UnicodeError, ValueError) as exc:  # IDNA cannot encode the host name
            raise InvalidInputError(
                f"host {self.host[:80]!r} is not a valid host name ({exc}); give an address such "
                "as 127.0.0.1",
                field="host",
            ) from None
        except TimeoutError:
            raise OperationTimeoutError(
                f"no answer from {self.address} within {self.connect_timeout_s} s; is the "
                "instrument (or `atomlab sim spm`) running and the port right?",
                address=self.address,
            ) from None
        except OSError as exc:
            raise ConnectionFailedError(
                f"cannot connect to {self.address}: {exc.strerror or exc}; start the instrument's "
                "TCP interface (or `atomlab sim spm`) or pass --host/--port",
                address=self.address,
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._timeout_set = None
        if _KERNEL_TIMEOUTS:
            sock.settimeout(None)  # blocking; SO_RCVTIMEO/SO_SNDTIMEO bound each call instead
        self._set_timeout(sock, self.call_timeout_s)
        self._buf.clear()
        return sock

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        self._buf.clear()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> Self:
        return self.connect()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- calls -----------------------------------------------------------------------------

    def call(
        self,
        command: str | CommandSpec,
        args: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        check: bool = True,
    ) -> Reply:
        """Send one command and return its reply decoded into named fields.

        Raises :class:`InstrumentError` when the instrument reports an error (unless
        ``check=False``), :class:`ArgumentError` for bad arguments (nothing is sent),
        :class:`OperationTimeoutError` / :class:`ConnectionFailedError` on transport failures.
        """
        key = command if isinstance(command, str) else command.name
        codec = self._codecs.get(key)
        if codec is None or (not isinstance(command, str) and codec.spec is not command):
            codec = self._codecs[key] = protocol.codec(command)
        request = codec.encode_request(args)
        reply = codec.decode_reply(self._send(codec, request, timeout_s))
        if check and reply.error is not None:
            reply.raise_for_error()
        return reply

    def _send(self, codec: CommandCodec, request: bytes, timeout_s: float | None) -> bytes:
        """One request/reply exchange under the lock (retried once if idempotent); the body."""
        timeout = self.call_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            try:
                return self._round_trip(codec, request, timeout)
            except ConnectionFailedError as exc:
                name = codec.spec.name
                if isinstance(exc, OperationTimeoutError) or not (
                    self.retry_idempotent and is_idempotent(name)
                ):
                    raise
                # logging (structlog) loads only here: a one-shot command never pays for it
                from atomlab.core.logging import get_logger

                get_logger("atomlab.instrument.client").info(
                    "retrying on a fresh connection", command=name, reason=exc.message
                )
                return self._round_trip(codec, request, timeout)

    def _round_trip(self, codec: CommandCodec, request: bytes, timeout: float) -> bytes:
        sock = self._sock or self.connect()._sock
        assert sock is not None
        name = codec.spec.name
        try:
            body = self._exchange(sock, codec.name32, request, timeout)
        except TimeoutError:
            self._drop()
            raise OperationTimeoutError(
                f"{name}: no reply from {self.address} within {timeout} s "
                "(the connection was closed; the next call reconnects)",
                command=name,
                address=self.address,
                timeout_s=timeout,
            ) from None
        except ProtocolError as exc:
            self._drop()
            raise ProtocolError(
                f"{name}: {self.address} sent bytes that are not its reply: "
                f"{exc.message}; connection closed",
                command=name,
            ) from None
        except OSError as exc:
            self._drop()
            raise ConnectionFailedError(
                f"{name}: connection to {self.address} broke: {exc.strerror or exc}",
                command=name,
                address=self.address,
            ) from None
        return body

    def _exchange(
        self, sock: socket.socket, name32: bytes, request: bytes, timeout: float
    ) -> bytes:
        """Send one request and return the body of its reply (the hot path: one send, one recv)."""
        if timeout != self._timeout_set:
            self._set_timeout(sock, timeout)
        try:
            sock.sendall(request)
        except BlockingIOError:  # SO_SNDTIMEO expired: the peer stopped reading
            raise TimeoutError from None
        buf = self._buf
        if not buf:
            try:
                chunk = sock.recv(_RECV_CHUNK)
            except BlockingIOError:  # SO_RCVTIMEO expired
                raise TimeoutError from None
            if (
                len(chunk) >= HEADER_SIZE
                and chunk[:32] == name32
                and len(chunk) == HEADER_SIZE + int.from_bytes(chunk[32:36], "big", signed=True)
            ):
                return chunk[HEADER_SIZE:]  # the whole reply arrived in one segment
            if not chunk:
                raise ConnectionResetError(0, "the instrument closed the connection")
            buf += chunk
        deadline = time.monotonic() + timeout
        self._fill(sock, HEADER_SIZE, deadline)
        if buf[:32] != name32:
            header = protocol.read_response_header(bytes(buf[:HEADER_SIZE]))  # FramingError
            raise ProtocolError(f"the reply is for {header.name!r}")
        size = int.from_bytes(buf[32:36], "big", signed=True)
        if not 0 <= size <= protocol.MAX_BODY_SIZE:
            raise FramingError(f"the reply header announces a body of {size} bytes")
        end = HEADER_SIZE + size
        self._fill(sock, end, deadline)
        body = bytes(buf[HEADER_SIZE:end])
        del buf[:end]
        return body

    def _fill(self, sock: socket.socket, n: int, deadline: float) -> None:
        """Read until the buffer holds ``n`` bytes (the slow path: a reply in several parts)."""
        buf = self._buf
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self._set_timeout(sock, remaining)
            try:
                chunk = sock.recv(max(_RECV_CHUNK, n - len(buf)))
            except BlockingIOError:  # SO_RCVTIMEO expired
                raise TimeoutError from None
            if not chunk:
                raise ConnectionResetError(0, "the instrument closed the connection")
            buf += chunk

    def _set_timeout(self, sock: socket.socket, timeout: float) -> None:
        """Kernel-level send/receive timeouts where available: no poll() before every recv."""
        if timeout == self._timeout_set:
            return
        if _KERNEL_TIMEOUTS:
            seconds = int(timeout)
            micros = max(int((timeout - seconds) * 1e6), 0 if seconds else 1)
            timeval = struct.pack("ll", seconds, micros)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        else:
            sock.settimeout(timeout)
        self._timeout_set = timeout

    # --- conveniences over the command table -----------------------------------------------

    def get(
        self, command: str, field: str | None = None, args: Mapping[str, Any] | None = None
    ) -> Any:
        """One reply field by name (the only field when ``field`` is None)."""
        reply = self.call(command, args)
        if field is None:
            if len(reply.values) != 1:
                raise InvalidInputError(
                    f"{command} replies with {list(reply.values)}; name the field to read",
                    command=command,
                )
            return next(iter(reply.values.values()))
        return reply[field]

    def signal_names(self, *, refresh: bool = False) -> list[str]:
        """Signal names, index 0 first (cached per client)."""
        with self._lock:
            if self._signal_names is None or refresh:
                self._signal_names = list(self.call("Signals.NamesGet")["names"])
            return list(self._signal_names)

    def signal_index(self, name: str) -> int:
        """The index of a signal by its full name (``"Current (A)"``) or its name without unit."""
        return signal_index(self.signal_names(), name, address=self.address)

    def read_signals(
        self, indexes: Sequence[int] | Iterable[int], *, wait: bool = False
    ) -> list[float]:
        """Values of several signals in one ``Signals.ValsGet`` round trip, in the order asked.

        A monitor polls the same signals again and again, so the last request and the layout of
        its reply are kept: a repeated read costs one send, one receive and one ``unpack``.
        """
        key = (tuple(indexes), int(wait))
        batch = self._batch
        if batch is None or batch.key != key:
            codec = protocol.codec("Signals.ValsGet")
            request = codec.encode_request({"indexes": list(key[0]), "wait": key[1]})
            batch = self._batch = _SignalBatch(key, codec, request, len(key[0]))
        body = self._send(batch.codec, batch.request, None)
        if len(body) == batch.reply.size:
            count, *values, status, length = batch.reply.unpack(body)
            if count == batch.count and status == 0 and length == 0:
                return values
        reply = batch.codec.decode_reply(body).raise_for_error()
        got: list[float] = reply["values"]
        if len(got) != batch.count:
            raise ProtocolError(
                f"Signals.ValsGet: asked for {batch.count} signals, got {len(got)} values",
                command="Signals.ValsGet",
            )
        return got


def signal_index(names: Sequence[str], name: str, *, address: str) -> int:
    """The index in ``names`` (``Signals.NamesGet``) of the signal called ``name``, by its full
    name (``"Current (A)"``) or its name without unit; exit 3 naming the signals if none is."""
    for i, candidate in enumerate(names):
        if candidate == name or candidate.split(" (", 1)[0] == name:
            return i
    raise InvalidInputError(
        f"no signal called {name!r} on {address}; signals: {list(names[:12])}...", signal=name
    )


class _SignalBatch:
    """A prepared ``Signals.ValsGet``: the request bytes and the reply layout it expects."""

    __slots__ = ("codec", "count", "key", "reply", "request")

    def __init__(
        self, key: tuple[tuple[int, ...], int], codec: CommandCodec, request: bytes, count: int
    ) -> None:
        self.key = key
        self.codec = codec
        self.request = request
        self.count = count
        self.reply = struct.Struct(f">i{count}fIi")


@dataclass(frozen=True)
class PortProbe:
    """What ``probe_ports`` found on one port."""

    port: int
    answers: bool
    connect_ms: float | None = None
    round_trip_ms: float | None = None
    bias_v: float | None = None
    error: str | None = None


def probe_port(
    host: str,
    port: int,
    *,
    timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    calls: int = 5,
) -> PortProbe:
    """Connect to one port; time the connect and the median ``Bias.Get`` round trip."""
    client = NanonisClient(host, port, connect_timeout_s=timeout_s, call_timeout_s=timeout_s)
    try:  # (bad ports and hosts raised above: they are the caller's input, not a probe result)
        start = time.perf_counter()
        client.connect()
        connect_ms = (time.perf_counter() - start) * 1e3
        samples = []
        bias = None
        for _ in range(max(calls, 1)):
            t0 = time.perf_counter()
            bias = client.get("Bias.Get")
            samples.append((time.perf_counter() - t0) * 1e3)
        samples.sort()
        return PortProbe(
            port, True, round(connect_ms, 3), round(samples[len(samples) // 2], 3), bias
        )
    except (ConnectionFailedError, ProtocolError) as exc:
        return PortProbe(port, False, error=exc.message)
    finally:
        client.close()


def probe_ports(
    host: str, ports: Iterable[int], *, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
) -> list[PortProbe]:
    """:func:`probe_port` on each port, in order."""
    return [probe_port(host, p, timeout_s=timeout_s) for p in ports]
