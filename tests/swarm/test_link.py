"""The service end of /ws/isaac, served by uvicorn on 127.0.0.1 and driven by a raw peer."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import ConnectionClosed

from atomlab.core.clock import FakeClock
from atomlab.core.errors import InvalidInputError
from atomlab.sim.swarm_wire import PROTOCOL_VERSION, HandshakePayload, MessageType, make_envelope
from tests.swarm.link_harness import (
    WAIT_S,
    make_link,
    raw_peer,
    sample,
    serve_link,
    time_out_handshakes,
)

COMMAND = {"command_id": "c1", "agent_id": "a0", "action": "repair", "target": {"x": 1.2, "y": 3.4}}


def command(n: int) -> dict[str, object]:
    return {**COMMAND, "command_id": f"c{n}"}


async def test_handshake_announces_version_and_marks_the_link_up() -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock)
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        theirs = await peer.handshake()
        body = theirs.parsed()
        assert isinstance(body, HandshakePayload)
        assert body.role == "coordinator"
        assert body.protocol_version == PROTOCOL_VERSION
        assert body.heartbeat_interval_s == 10.0
        (up,) = await events.wait_for("link_up")
        assert up["session_id"] == peer.session_id
        assert link.connected


async def test_commands_carry_increasing_seq_and_the_idempotency_key() -> None:
    clock = FakeClock()
    link, _, _ = make_link(clock)
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.handshake()
        await link.send_command(command(1), idempotency_key="k1")
        await link.send_command(command(2), idempotency_key="k2")
        first = await peer.recv(MessageType.COMMAND)
        second = await peer.recv(MessageType.COMMAND)
        assert (first.seq, first.idempotency_key) == (1, "k1")
        assert (second.seq, second.idempotency_key) == (2, "k2")
        assert first.payload["target"] == {"x": 1.2, "y": 3.4, "z": 0.0}


async def test_an_unacked_command_is_resent_with_the_same_seq_until_acked() -> None:
    clock = FakeClock()
    link, events, metrics = make_link(clock, ack_timeout_s=2.0)
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.handshake()
        await link.send_command(command(1), idempotency_key="k1")
        first = await peer.recv(MessageType.COMMAND)
        clock.advance(2.0)
        again = await peer.recv(MessageType.COMMAND)
        assert (again.seq, again.message_id) == (first.seq, first.message_id)
        await peer.ack(again)
        (delivered,) = await events.wait_for("command_delivered")
        assert delivered == {"idempotency_key": "k1", "command_id": "c1", "agent_id": "a0"}
        assert link.pending == 0
        clock.advance(10.0)  # long past the ack timeout: only a heartbeat may come now
        nxt = await peer.recv()
        assert nxt.type is MessageType.HEARTBEAT
        assert sample(metrics, "atomlab_swarm_link_resends_total") == 1


async def test_a_pending_idempotency_key_is_not_queued_twice() -> None:
    clock = FakeClock()
    link, _, _ = make_link(clock)
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.handshake()
        await link.send_command(command(1), idempotency_key="k1")
        await link.send_command(command(1), idempotency_key="k1")
        await link.send_command(command(2), idempotency_key="k2")
        frames = [await peer.recv(MessageType.COMMAND) for _ in range(2)]
        assert [f.idempotency_key for f in frames] == ["k1", "k2"]
        assert link.pending == 2


async def test_commands_sent_while_disconnected_are_delivered_in_order_after_reconnect() -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock)
    async with serve_link(link) as url:
        async with raw_peer(url, clock) as peer:
            await peer.handshake()
            await link.send_command(command(1), idempotency_key="k1")
            unacked = await peer.recv(MessageType.COMMAND)
        await events.wait_for("link_down")
        assert not link.connected
        await link.send_command(command(2), idempotency_key="k2")
        await link.send_command(command(3), idempotency_key="k3")
        async with raw_peer(url, clock) as peer:
            await peer.handshake()
            frames = [await peer.recv(MessageType.COMMAND) for _ in range(3)]
            assert [f.seq for f in frames] == [1, 2, 3]
            assert frames[0].message_id == unacked.message_id
            for frame in frames:
                await peer.ack(frame)
            await events.wait_for("command_delivered", count=3)
            assert link.pending == 0


async def test_a_duplicated_result_is_acked_twice_but_processed_once() -> None:
    clock = FakeClock()
    link, events, metrics = make_link(clock)
    result = {
        "command_id": "c1",
        "agent_id": "a0",
        "idempotency_key": "k1",
        "action": "repair",
        "status": "completed",
    }
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.handshake()
        frame = peer.reliable(MessageType.COMMAND_RESULT, result)
        await peer.send(frame)
        await peer.send(frame)
        acks = [await peer.recv(MessageType.ACK) for _ in range(2)]
        assert [a.payload["seq"] for a in acks] == [1, 1]
        assert [a.payload["duplicate"] for a in acks] == [False, True]
        assert acks[0].correlation_id == frame.correlation_id
        assert events.of("command_result") == [{**result, **frame.payload}]
        assert sample(metrics, "atomlab_swarm_link_duplicates_total") == 1


async def test_a_restarted_simulator_session_starts_its_seq_again() -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock)
    data = {"coordinates": [{"x": 1.0, "y": 2.0, "defect_type": "vacancy", "severity": 3}]}
    async with serve_link(link) as url:
        for session in ("first", "second"):
            async with raw_peer(url, clock) as peer:
                await peer.handshake(session_id=session)
                await peer.send(peer.reliable(MessageType.SENSOR_DATA, data))
                await peer.recv(MessageType.ACK)
    assert len(events.of("sensor_data")) == 2


async def test_heartbeat_every_interval_and_a_silent_peer_is_dropped() -> None:
    clock = FakeClock()
    link, events, metrics = make_link(clock, heartbeat_interval_s=10.0, missed_heartbeats=3)
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.handshake()
        await events.wait_for("link_up")
        clock.advance(10.0)
        beat = await peer.recv(MessageType.HEARTBEAT)
        assert beat.payload["role"] == "coordinator"
        clock.advance(20.0)  # 30 s without a word from the peer = 3 missed heartbeats
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(WAIT_S):
                while True:
                    await peer.ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
        await events.wait_for("link_down")
        assert not link.connected
        assert sample(metrics, "atomlab_swarm_link_dead_peer_total", reason="peer_silent") == 1


async def test_a_peer_that_never_acks_is_disconnected_and_its_command_kept() -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock, ack_timeout_s=1.0, max_resends=1)
    async with serve_link(link) as url:
        async with raw_peer(url, clock) as peer:
            await peer.handshake()
            await link.send_command(command(1), idempotency_key="k1")
            await peer.recv(MessageType.COMMAND)
            clock.advance(1.0)
            await peer.recv(MessageType.COMMAND)
            clock.advance(1.0)
            error = await peer.recv(MessageType.ERROR)
            assert error.payload["code"] == "acks_missing"
        await events.wait_for("link_down")
        assert link.pending == 1


async def test_a_wrong_protocol_version_is_refused_with_an_error_frame() -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock)
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.recv(MessageType.HANDSHAKE)
        ours = HandshakePayload(role="simulator", session_id="s", protocol_version="2.0")
        await peer.send(make_envelope(MessageType.HANDSHAKE, ours, clock=clock))
        error = await peer.recv(MessageType.ERROR)
        assert error.payload["code"] == "version_mismatch"
        assert "2.0" in error.payload["message"]
    assert not link.connected
    assert events.of("link_up") == []


async def test_three_failed_handshakes_open_the_breaker_for_ten_seconds() -> None:
    clock = FakeClock()
    link, _, _ = make_link(clock, handshake_timeout_s=1.0)
    async with serve_link(link) as url:
        await time_out_handshakes(url, clock, 3, timeout_s=1.0)
        async with raw_peer(url, clock) as peer:
            refused = await peer.recv()
            assert refused.type is MessageType.ERROR
            assert refused.payload["code"] == "circuit_open"
        clock.advance(10.0)
        async with raw_peer(url, clock) as peer:
            await peer.handshake()
            await peer.send(peer.reliable(MessageType.SENSOR_DATA, {"coordinates": []}))
            await peer.recv(MessageType.ACK)
            assert link.connected


async def test_a_malformed_frame_is_answered_with_an_error_and_the_link_stays_up() -> None:
    clock = FakeClock()
    link, events, metrics = make_link(clock)
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.handshake()
        await events.wait_for("link_up")
        await peer.ws.send("{not json")
        error = await peer.recv(MessageType.ERROR)
        assert error.payload["code"] == "invalid_frame"
        assert link.connected
        assert sample(metrics, "atomlab_swarm_link_invalid_frames_total") == 1


async def test_with_the_takeover_policy_a_newer_connection_replaces_the_older_one() -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock, peer_policy="takeover")
    async with serve_link(link) as url, raw_peer(url, clock) as old:
        await old.handshake()
        await events.wait_for("link_up")
        async with raw_peer(url, clock) as new:
            await new.handshake()
            await events.wait_for("link_up", count=2)
            await link.send_command(command(1), idempotency_key="k1")
            frame = await new.recv(MessageType.COMMAND)
            assert frame.idempotency_key == "k1"
            assert link.connected


async def test_telemetry_and_heartbeats_from_the_simulator_reach_on_event() -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock)
    status = {
        "t_s": 1.0,
        "agents": [
            {
                "agent_id": "a0",
                "position": {"x": 1.0, "y": 1.0},
                "status": "idle",
                "temperature_c": 25.0,
            }
        ],
    }
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.handshake()
        await peer.send(make_envelope(MessageType.AGENT_STATUS, status, clock=clock))
        beat = {"role": "simulator", "sent_at": "2026-01-01T00:00:00Z", "agents_alive": ["a0"]}
        await peer.send(make_envelope(MessageType.HEARTBEAT, beat, clock=clock))
        (got,) = await events.wait_for("heartbeat")
        assert got["agents_alive"] == ["a0"]
        assert events.of("agent_status")[0]["agents"][0]["agent_id"] == "a0"


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({**COMMAND, "target": {"x": 1.25, "y": 0.0}}, "target.x"),
        ({**COMMAND, "thermal_budget_c": 150.0}, "thermal_budget_c"),
        ({**COMMAND, "action": "explode"}, "action"),
    ],
)
async def test_a_malformed_command_is_refused_naming_the_field(
    bad: dict[str, object], field: str
) -> None:
    link, _, _ = make_link(FakeClock())
    with pytest.raises(InvalidInputError) as refused:
        await link.send_command(bad, idempotency_key="k")
    assert refused.value.details["field"] == field
    assert link.pending == 0


async def test_buffered_commands_go_out_before_anything_sent_when_the_link_comes_up() -> None:
    clock = FakeClock()
    link, events, _ = make_link(clock)

    async def on_event(event_type: str, payload: dict[str, object]) -> None:
        await events(event_type, payload)
        if event_type == "link_up":  # e.g. a coordinator halting an agent on reconnect
            await link.send_command(command(9), idempotency_key="k9")

    link.on_event = on_event
    for n in (1, 2, 3):
        await link.send_command(command(n), idempotency_key=f"k{n}")
    async with serve_link(link) as url, raw_peer(url, clock) as peer:
        await peer.handshake()
        frames = [await peer.recv(MessageType.COMMAND) for _ in range(4)]
        assert [f.idempotency_key for f in frames] == ["k1", "k2", "k3", "k9"]
        assert [f.seq for f in frames] == [1, 2, 3, 4]
