"""Servers for the instrument tests: the real STM simulator, and a small state server.

``sim`` is :mod:`atomlab.sim` (what users run), started in-process on a free port. ``StateServer``
is a small Nanonis-protocol server built on our own protocol module: it decodes every request and
answers from state (a ``X.Set`` stores its arguments, the matching ``X.Get`` returns them), and it
can misbehave on purpose (hang, drop the connection), which the simulator does not offer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from atomlab.instrument import protocol
from atomlab.instrument.commands import COMMANDS, lookup
from atomlab.instrument.errors import ProtocolError
from atomlab.instrument.protocol import HEADER_SIZE, ErrorInfo
from atomlab.sim import SimulatorThread, start_simulator_in_thread

SIGNALS = ["Current (A)", "Bias (V)", "Z (m)", "X (m)", "Y (m)"]


class StateServer:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.state: dict[str, dict[str, Any]] = {
            "Bias.Get": {"bias_v": 0.1},
            "ZCtrl.OnOffGet": {"on": 1},
        }
        self.signals = {name: float(i) for i, name in enumerate(SIGNALS)}
        self.requests: list[str] = []
        self.hang = threading.Event()  # while set, requests are read but never answered
        self.drop_next = threading.Event()  # close the connection on the next request
        self.connections = 0
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                while True:
                    head = _recv_exactly(conn, HEADER_SIZE)
                    if head is None:
                        return
                    try:
                        header = protocol.read_request_header(head)
                    except ProtocolError:
                        return
                    body = _recv_exactly(conn, header.body_size) or b""
                    self.requests.append(header.name)
                    if self.drop_next.is_set():
                        self.drop_next.clear()
                        return
                    if self.hang.is_set():
                        continue
                    conn.sendall(self._answer(header.name, body))
            except OSError:
                return

    def _answer(self, name: str, body: bytes) -> bytes:
        try:
            spec = lookup(name)
            args = protocol.decode_args(spec, body)
        except ProtocolError as exc:
            return protocol.encode_error_reply(name, exc.message)
        with self._lock:
            if name == "Signals.NamesGet":
                return protocol.encode_reply(spec, {"names": list(self.signals)})
            if name == "Signals.ValsGet":
                values = list(self.signals.values())
                if any(not 0 <= i < len(values) for i in args["indexes"]):
                    return protocol.encode_reply(
                        spec, None, ErrorInfo.of("signal index out of range")
                    )
                return protocol.encode_reply(spec, {"values": [values[i] for i in args["indexes"]]})
            if name.endswith("Set"):
                getter = name[:-3] + "Get"
                if getter in COMMANDS:
                    self.state[getter] = args
                return protocol.encode_reply(spec, {})
            if spec.reply and name in self.state:
                return protocol.encode_reply(spec, self.state[name])
            if spec.reply:
                return protocol.encode_reply(spec, None, ErrorInfo.of(f"{name} has no value yet"))
            return protocol.encode_reply(spec, {})

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()


def _recv_exactly(conn: socket.socket, n: int) -> bytes | None:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


@pytest.fixture
def state_server() -> Iterator[StateServer]:
    server = StateServer()
    yield server
    server.close()


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    """The STM simulator on 127.0.0.1 and a free port (``sim.ports[0]``)."""
    with start_simulator_in_thread(seed=0, ports=[0]) as simulator:
        yield simulator
