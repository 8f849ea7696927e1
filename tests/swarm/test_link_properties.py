"""Properties 10 and 11 of the QNMS spec, checked against the real SimulatorLink over an
in-memory WebSocket (each Hypothesis example is a whole conversation, so no sockets here; the
socket-level behaviour is in test_link.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.websockets import WebSocketState

from atomlab.core.clock import FakeClock
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

CLOCK = FakeClock()


class MemorySocket:
    """Just enough of Starlette's WebSocket for SimulatorLink.handle, in memory."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[Envelope] = []
        self.application_state = WebSocketState.CONNECTED

    async def accept(self) -> None:
        return None

    async def receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def send_text(self, text: str) -> None:
        if self.application_state is WebSocketState.DISCONNECTED:
            raise RuntimeError("closed")
        self.sent.append(decode(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.application_state = WebSocketState.DISCONNECTED
        self.inbox.put_nowait({"type": "websocket.disconnect", "code": code})

    def feed(self, envelope: Envelope) -> None:
        self.inbox.put_nowait({"type": "websocket.receive", "text": envelope.encode()})

    def sent_of(self, message_type: MessageType) -> list[Envelope]:
        return [e for e in self.sent if e.type is message_type]


async def settle() -> None:
    for _ in range(30):  # let the link's reader drain what was fed (no real time passes)
        await asyncio.sleep(0)


async def open_connection(
    link: SimulatorLink, session: str
) -> tuple[MemorySocket, asyncio.Task[None]]:
    ws = MemorySocket()
    task = asyncio.create_task(link.handle(ws))  # type: ignore[arg-type]
    hello = HandshakePayload(role="simulator", session_id=session)
    ws.feed(make_envelope(MessageType.HANDSHAKE, hello, clock=CLOCK))
    await settle()
    return ws, task


async def hang_up(ws: MemorySocket, task: asyncio.Task[None]) -> None:
    await ws.close()
    await task


def ack_for(envelope: Envelope) -> Envelope:
    assert envelope.seq is not None
    body = AckPayload(message_id=envelope.message_id, seq=envelope.seq)
    return make_envelope(MessageType.ACK, body, clock=CLOCK)


def command(key: str) -> dict[str, Any]:
    return {"command_id": key, "agent_id": "a0", "action": "move", "target": {"x": 1.0, "y": 1.0}}


# Actions of a schedule: ("send",), ("drop",) = the link goes down and comes back,
# ("ack", fraction) = the peer acks that share of what it has seen so far.
actions = st.lists(
    st.one_of(
        st.just(("send",)),
        st.just(("drop",)),
        st.tuples(st.just("ack"), st.floats(min_value=0.0, max_value=1.0)),
    ),
    min_size=1,
    max_size=25,
)


# Feature: quantum-nano-maintenance-swarm, Property 10: Connection Buffering and Retry
@settings(max_examples=100, deadline=None)
@given(schedule=actions)
def test_property_10_buffering_commands_sent_across_disconnects_all_arrive_in_order(
    schedule: list[tuple[Any, ...]],
) -> None:
    async def scenario() -> None:
        link = SimulatorLink(clock=CLOCK, poll_interval_s=60.0)
        ws, task = await open_connection(link, "sim")
        connected = True
        keys: list[str] = []
        seen: dict[int, Envelope] = {}
        for action in schedule:
            if action[0] == "send":
                keys.append(new_id())
                await link.send_command(command(keys[-1]), idempotency_key=keys[-1])
            elif action[0] == "drop":
                if connected:
                    await hang_up(ws, task)
                    connected = False
                else:
                    ws, task = await open_connection(link, "sim")
                    connected = True
            elif connected:
                await settle()
                received = ws.sent_of(MessageType.COMMAND)
                for frame in received[: int(len(received) * action[1])]:
                    ws.feed(ack_for(frame))
            if connected:
                await settle()
                for frame in ws.sent_of(MessageType.COMMAND):
                    assert frame.seq is not None
                    seen.setdefault(frame.seq, frame)
                seqs = [f.seq for f in ws.sent_of(MessageType.COMMAND) if f.seq is not None]
                first = {s: i for i, s in reversed(list(enumerate(seqs)))}
                assert sorted(first, key=first.__getitem__) == sorted(first)  # seq order
        if not connected:
            ws, task = await open_connection(link, "sim")
        await settle()
        for frame in ws.sent_of(MessageType.COMMAND):
            assert frame.seq is not None
            seen.setdefault(frame.seq, frame)
            ws.feed(ack_for(frame))
        await settle()
        assert [seen[s].idempotency_key for s in sorted(seen)] == keys  # nothing lost or doubled
        assert link.pending == 0
        await hang_up(ws, task)

    asyncio.run(scenario())


reliable_frames = st.lists(
    st.tuples(
        st.sampled_from(["command_result", "sensor_data", "proximity_alert"]),
        st.integers(min_value=1, max_value=3),  # how many times the frame is delivered
    ),
    min_size=1,
    max_size=15,
)

PAYLOADS: dict[str, dict[str, Any]] = {
    "command_result": {
        "command_id": "c",
        "agent_id": "a0",
        "idempotency_key": "k",
        "action": "move",
        "status": "completed",
    },
    "sensor_data": {"coordinates": []},
    "proximity_alert": {"agent_ids": ["a0", "a1"], "distance_nm": 0.4, "positions": {}, "t_s": 1},
}


# Feature: quantum-nano-maintenance-swarm, Property 11: Message Acknowledgment
@settings(max_examples=100, deadline=None)
@given(frames=reliable_frames)
def test_property_11_acknowledgment_every_reliable_message_is_acked_with_its_ids_and_processed_once(
    frames: list[tuple[str, int]],
) -> None:
    async def scenario() -> None:
        processed: list[tuple[str, str | None]] = []

        async def on_event(kind: str, payload: dict[str, Any]) -> None:
            if kind in PAYLOADS:
                processed.append((kind, payload.get("command_id")))

        link = SimulatorLink(clock=CLOCK, poll_interval_s=60.0, on_event=on_event)
        ws, task = await open_connection(link, new_id())
        sent: list[Envelope] = []
        for seq, (kind, copies) in enumerate(frames, start=1):
            frame = make_envelope(MessageType(kind), PAYLOADS[kind], clock=CLOCK, seq=seq)
            sent.append(frame)
            for _ in range(copies):
                ws.feed(frame)
        await settle()
        acks = ws.sent_of(MessageType.ACK)
        assert len(acks) == sum(copies for _, copies in frames)
        by_seq: dict[int, list[Envelope]] = {}
        for ack in acks:
            by_seq.setdefault(ack.payload["seq"], []).append(ack)
        for frame in sent:
            assert frame.seq is not None
            for ack in by_seq[frame.seq]:
                assert ack.payload["message_id"] == frame.message_id
                assert ack.correlation_id == frame.correlation_id
        assert [kind for kind, _ in processed] == [kind for kind, _ in frames]  # once each
        await hang_up(ws, task)

    asyncio.run(scenario())
