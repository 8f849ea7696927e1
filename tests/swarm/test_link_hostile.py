"""/ws/isaac against a rogue or broken peer: no credential, a second simulator, NaN and 1e308,
100k-deep nesting, oversized frames, floods, handler crashes. Each gets its own error frame or
refusal, and the live simulator keeps its link."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State
from websockets.uri import parse_uri

from atomlab.core.clock import FakeClock
from atomlab.core.metrics import Metrics
from atomlab.sim.swarm_wire import HandshakePayload, MessageType, make_envelope, new_id
from atomlab.swarm.link import SimulatorLink
from tests.swarm import link_harness
from tests.swarm.link_harness import (
    WAIT_S,
    EventRecorder,
    RawPeer,
    raw_peer,
    sample,
    serve_link,
    time_out_handshakes,
)

TOKEN = "link-token-for-tests-0123"
STATUS = {
    "t_s": 1.0,
    "agents": [
        {"agent_id": "a0", "position": {"x": 1.0, "y": 1.0}, "status": "idle", "temperature_c": 25}
    ],
}


def make_link(clock: FakeClock, **options: Any) -> tuple[SimulatorLink, EventRecorder, Metrics]:
    """A link that takes only a peer with ``TOKEN`` (unless ``link_token`` says otherwise)."""
    return link_harness.make_link(clock, **{"link_token": TOKEN, **options})


async def closed_with(peer: RawPeer) -> int:
    """Read until the service closes the connection; its close code."""
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(WAIT_S):
            while True:
                await peer.ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def raw(kind: str, payload: Any, **extra: Any) -> str:
    """A frame built by hand (make_envelope would refuse the bad payloads)."""
    frame = {
        "type": kind,
        "payload": payload,
        "timestamp": "2026-01-01T00:00:00Z",
        "correlation_id": new_id(),
        "message_id": new_id(),
        **extra,
    }
    return json.dumps(frame)


async def still_up(peer: RawPeer, clock: FakeClock, events: EventRecorder, count: int) -> None:
    """The link still works: a good agent_status after the bad frames is delivered."""
    await peer.send(make_envelope(MessageType.AGENT_STATUS, STATUS, clock=clock))
    await events.wait_for("agent_status", count=count)


async def test_a_peer_without_the_token_never_becomes_the_simulator() -> None:
    clock = FakeClock()
    link, events, metrics = make_link(clock)
    async with serve_link(link) as url:
        for token in (None, "wrong-token-wrong-token"):
            async with raw_peer(url, clock) as peer:
                await peer.handshake(token=token)
                error = await peer.recv(MessageType.ERROR)
                assert error.payload["code"] == "unauthorized"
                assert await closed_with(peer) == 4401
        assert events.of("link_up") == [] and not link.connected
        assert sample(metrics, "atomlab_swarm_link_connections_total", outcome="unauthorized") == 2
        # A wrong bearer token on the upgrade is refused before any WebSocket exists.
        with pytest.raises(InvalidStatus) as refused:
            async with raw_peer(url, clock, headers={"Authorization": "Bearer nope"}):
                pass
        assert refused.value.response.status_code == 403
        # The right one on the upgrade is enough (no token in the handshake needed).
        async with raw_peer(url, clock, headers={"Authorization": f"Bearer {TOKEN}"}) as peer:
            await peer.handshake()
            await events.wait_for("link_up")
            assert link.connected


async def test_strangers_failing_handshakes_cannot_open_the_breaker() -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock, handshake_timeout_s=1.0)
    async with serve_link(link) as url:
        await time_out_handshakes(url, clock, 5, timeout_s=1.0)
        async with raw_peer(url, clock) as peer:
            await peer.handshake(token=TOKEN)
            await events.wait_for("link_up")
        assert link.breaker.state.value == "closed"


async def test_a_second_simulator_is_refused_and_the_live_one_keeps_its_commands() -> None:
    clock = FakeClock()
    link, events, metrics = make_link(clock)
    async with serve_link(link) as url, raw_peer(url, clock) as live:
        await live.handshake(token=TOKEN)
        await events.wait_for("link_up")
        async with raw_peer(url, clock) as rogue:
            await rogue.handshake(token=TOKEN)  # even with the token
            error = await rogue.recv(MessageType.ERROR)
            assert error.payload["code"] == "peer_refused"
            assert await closed_with(rogue) == 4409
        command = {
            "command_id": "c1",
            "agent_id": "a0",
            "action": "scan",
            "target": {"x": 1.0, "y": 1.0},
        }
        await link.send_command(command, idempotency_key="c1")
        frame = await live.recv(MessageType.COMMAND)
        assert frame.idempotency_key == "c1"
        assert link.connected and len(events.of("link_up")) == 1
        assert events.of("link_down") == []
        assert (
            sample(metrics, "atomlab_swarm_link_connections_total", outcome="second_peer_refused")
            == 1
        )


async def test_a_peer_claiming_the_live_session_id_needs_the_token_too() -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock)
    async with serve_link(link) as url, raw_peer(url, clock) as live:
        await live.handshake(token=TOKEN)
        await events.wait_for("link_up")
        async with raw_peer(url, clock) as rogue:
            await rogue.handshake(session_id=live.session_id)  # no token
            assert await closed_with(rogue) == 4401
        assert link.connected and link.peer is not None
        # The real simulator reconnecting with its session replaces its old connection.
        async with raw_peer(url, clock) as again:
            await again.handshake(session_id=live.session_id, token=TOKEN)
            await events.wait_for("link_up", count=2)
            assert await closed_with(live) == 4002


async def test_with_takeover_the_newcomer_replaces_the_live_simulator() -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock, peer_policy="takeover")
    async with serve_link(link) as url, raw_peer(url, clock) as old:
        await old.handshake(token=TOKEN)
        await events.wait_for("link_up")
        async with raw_peer(url, clock) as new:
            await new.handshake(token=TOKEN)
            await events.wait_for("link_up", count=2)
            assert await closed_with(old) == 4002
            assert link.peer is not None and link.peer.session_id == new.session_id


@pytest.mark.parametrize(
    "bad_x",
    ["NaN", "Infinity", "-Infinity", "1e308", "1e18", "1e400", '"12"', "true", "null"],
)
async def test_absurd_telemetry_is_refused_per_frame_and_the_link_stays_up(bad_x: str) -> None:
    clock = FakeClock()
    link, events, metrics = make_link(clock)
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.handshake(token=TOKEN)
        await events.wait_for("link_up")
        agent = (
            '{"agent_id": "a0", "position": {"x": ' + bad_x + ', "y": 1.0}, "status": "idle", '
            '"temperature_c": 25}'
        )
        frame = raw("agent_status", {"t_s": 1.0, "agents": []})
        frame = frame.replace('"agents": []', '"agents": [' + agent + "]")
        await peer.ws.send(frame)
        error = await peer.recv(MessageType.ERROR)
        assert error.payload["code"] == "invalid_payload"
        assert "position.x" in error.payload["message"]
        await still_up(peer, clock, events, count=1)
        assert sample(metrics, "atomlab_swarm_link_invalid_frames_total") == 1
        assert link.connected


@pytest.mark.parametrize(
    "frame",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"type": "heartbeat", "payload": ' + "[" * 5000 + "]" * 5000 + "}",
        '{"type": "agent_status", "payload": {"t_s": 1, "agents": [' + "[" * 30 + "]" * 30 + "]}}",
        "\x00\xff garbage",
        '{"type": "nonsense", "payload": {}}',
        "1" + "0" * 5000,
        '{"type": "heartbeat", "payload": {"role": "simulator", "sent_at": "\\ud800"}}',
        '{"type": "proximity_alert", "payload": {"positions": {"\\udfff": {"x": 1, "y": 1}}}}',
    ],
)
async def test_malformed_and_deep_frames_get_an_error_and_the_link_stays_up(frame: str) -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock)
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.handshake(token=TOKEN)
        await events.wait_for("link_up")
        await peer.ws.send(frame)
        error = await peer.recv(MessageType.ERROR)
        assert error.payload["code"] == "invalid_frame"
        await still_up(peer, clock, events, count=1)


async def test_a_frame_over_the_size_limit_is_refused_without_parsing_it() -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock, max_frame_bytes=64 * 1024)
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.handshake(token=TOKEN)
        await events.wait_for("link_up")
        await peer.ws.send(raw("heartbeat", {"role": "simulator", "sent_at": "x" * 100_000}))
        error = await peer.recv(MessageType.ERROR)
        assert "larger than the limit" in error.payload["message"]
        await still_up(peer, clock, events, count=1)


async def test_a_bad_reliable_frame_is_acked_as_rejected_so_it_is_not_resent() -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock)
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.handshake(token=TOKEN)
        await events.wait_for("link_up")
        result = {
            "command_id": "c1",
            "agent_id": "a0",
            "idempotency_key": "c1",
            "action": "scan",
            "status": "completed",
            "temperature_c": "NaN",
        }
        frame = raw("command_result", result, seq=1).replace('"NaN"', "NaN")
        await peer.ws.send(frame)
        ack = await peer.recv(MessageType.ACK)
        assert (ack.payload["seq"], ack.payload["status"]) == (1, "rejected")
        assert "temperature_c" in ack.payload["reason"]
        error = await peer.recv(MessageType.ERROR)
        assert error.payload["code"] == "invalid_payload"
        assert events.of("command_result") == []
        # A seq absurdly far ahead cannot make the service remember an unbounded window.
        await peer.ws.send(raw("command_result", {**result, "temperature_c": 30}, seq=2**52))
        error = await peer.recv(MessageType.ERROR)
        assert error.payload["code"] == "seq_out_of_window"
        await still_up(peer, clock, events, count=1)


async def test_a_handler_that_raises_costs_one_frame_not_the_link() -> None:
    """Regression: the fallback in the link's _emit itself raised TypeError, closing the link
    with 1006 on any handler exception."""
    clock = FakeClock()
    failures: list[tuple[str, BaseException]] = []
    seen: list[str] = []

    async def flaky(event_type: str, payload: dict[str, Any]) -> None:
        seen.append(event_type)
        if event_type == "agent_status" and len(seen) <= 2:
            raise OverflowError("int too large to convert")

    link = SimulatorLink(
        clock=clock,
        metrics=Metrics("swarm"),
        on_event=flaky,
        link_token=TOKEN,
        on_failure=lambda task, exc: failures.append((task, exc)),
    )
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.handshake(token=TOKEN)
        await peer.send(make_envelope(MessageType.AGENT_STATUS, STATUS, clock=clock))
        error = await peer.recv(MessageType.ERROR)
        assert error.payload["code"] == "processing_failed"
        sensor = peer.reliable(MessageType.SENSOR_DATA, {"coordinates": []})
        await peer.send(sensor)
        ack = await peer.recv(MessageType.ACK)
        assert ack.payload["status"] == "received"
        await peer.send(make_envelope(MessageType.AGENT_STATUS, STATUS, clock=clock))
        async with asyncio.timeout(WAIT_S):
            while seen.count("agent_status") < 2:  # noqa: ASYNC110 - a plain list, no event
                await asyncio.sleep(0.01)
        assert link.connected
        assert [task for task, _ in failures] == ["swarm-link-events"]
        assert isinstance(failures[0][1], OverflowError)


async def test_a_flood_of_bad_frames_is_counted_but_answered_only_so_often() -> None:
    clock = FakeClock()
    link, events, metrics = make_link(clock)
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.handshake(token=TOKEN)
        await events.wait_for("link_up")
        for _ in range(200):
            await peer.ws.send("{")
        # A reliable frame after the flood: its ack comes after every error frame answered.
        await peer.send(peer.reliable(MessageType.SENSOR_DATA, {"coordinates": []}))
        errors = 0
        while (frame := await peer.recv()).type is not MessageType.ACK:
            errors += frame.type is MessageType.ERROR
        assert sample(metrics, "atomlab_swarm_link_invalid_frames_total") == 200
        await still_up(peer, clock, events, count=1)
        assert errors <= 20


async def test_connections_stuck_in_their_handshake_are_capped() -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock, max_candidates=2)
    async with serve_link(link) as url, raw_peer(url, clock) as one, raw_peer(url, clock) as two:
        await one.recv(MessageType.HANDSHAKE)
        await two.recv(MessageType.HANDSHAKE)
        async with raw_peer(url, clock) as third:
            error = await third.recv(MessageType.ERROR)
            assert error.payload["code"] == "too_many_handshakes"
            assert await closed_with(third) == 1013
        ours = HandshakePayload(role="simulator", session_id=one.session_id, auth_token=TOKEN)
        await one.send(make_envelope(MessageType.HANDSHAKE, ours, clock=clock))
        await events.wait_for("link_up")


def _peer_that_never_reads(url: str, clock: FakeClock) -> socket.socket:
    """A simulator at the socket level: it handshakes with the token, then reads nothing more,
    with a 4 kB receive buffer (a websockets client would keep buffering in memory)."""
    protocol = ClientProtocol(parse_uri(url), max_size=None)
    protocol.send_request(protocol.connect())
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(WAIT_S)
    sock.connect((host, int(port)))
    sock.sendall(b"".join(protocol.data_to_send()))
    while protocol.state is not State.OPEN:
        protocol.receive_data(sock.recv(4096))
    ours = HandshakePayload(role="simulator", session_id="stuck", auth_token=TOKEN)
    protocol.send_text(make_envelope(MessageType.HANDSHAKE, ours, clock=clock).encode().encode())
    sock.sendall(b"".join(protocol.data_to_send()))
    return sock


async def test_a_peer_that_stops_reading_cannot_freeze_the_link() -> None:
    """Once the socket is full a send waits for room; without a bound a peer that never reads
    held acks, heartbeats and every command forever. Now it is dropped after the send timeout,
    and its commands wait for the next connection."""
    clock = FakeClock()
    link, events, metrics = make_link(clock, send_timeout_s=0.5, max_buffer=50_000)
    path = [{"x": i % 100 / 10, "y": 1.0} for i in range(2000)]  # ~90 kB per frame
    command = {"agent_id": "a0", "action": "scan", "target": {"x": 1.0, "y": 1.0}}
    command["waypoints"] = path
    async with serve_link(link) as url:
        stuck = await asyncio.to_thread(_peer_that_never_reads, url, clock)
        try:
            await events.wait_for("link_up")
            n = 0
            async with asyncio.timeout(WAIT_S):
                while link.connected:  # its socket fills up, then a send times out
                    n += 1
                    cid = f"c{n}"
                    await link.send_command({**command, "command_id": cid}, idempotency_key=cid)
            await events.wait_for("link_down")
        finally:
            stuck.close()
        reason = "peer_not_reading"
        assert sample(metrics, "atomlab_swarm_link_dead_peer_total", reason=reason) == 1
        assert link.pending == n  # nothing lost: every command waits for the next simulator
        async with raw_peer(url, clock) as fresh:
            await fresh.handshake(token=TOKEN)
            frames = [await fresh.recv(MessageType.COMMAND) for _ in range(n)]
            assert [f.payload["command_id"] for f in frames] == [f"c{i}" for i in range(1, n + 1)]
