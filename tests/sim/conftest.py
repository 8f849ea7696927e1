"""A simulator on free loopback ports, driven by a fake clock, and a minimal wire client."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.clock import FakeClock
from atomlab.instrument.protocol import (
    HEADER_SIZE,
    Reply,
    decode_reply,
    encode_request,
    read_response_header,
)
from atomlab.sim import Disturbances, SimulatorThread, start_simulator_in_thread


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the simulator closed the connection")
        data += chunk
    return bytes(data)


class Wire:
    """One Nanonis TCP connection speaking through atomlab's protocol module."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_reply(self, command: str) -> Reply:
        header = read_response_header(recv_exactly(self.sock, HEADER_SIZE))
        return decode_reply(command, recv_exactly(self.sock, header.body_size))

    def call(self, command: str, **args: Any) -> Reply:
        self.sock.sendall(encode_request(command, args))
        return self.read_reply(command)

    def ok(self, command: str, **args: Any) -> Reply:
        return self.call(command, **args).raise_for_error()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock, tmp_path: Path) -> Iterator[SimulatorThread]:
    """A quiet simulator (no drift, no tip changes) on two free ports, on the fake clock."""
    handle = start_simulator_in_thread(
        seed=0,
        ports=[0, 0],
        clock=clock,
        disturbances=Disturbances.none(),
        tick_interval_s=None,
        session_dir=tmp_path / "session",
    )
    yield handle
    handle.stop()


@pytest.fixture
def wire(sim: SimulatorThread) -> Iterator[Wire]:
    connection = Wire(sim.ports[0])
    yield connection
    connection.close()
