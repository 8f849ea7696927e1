"""With the replay provider, answers are identical direct, through the queue, at any concurrency."""

from __future__ import annotations

import asyncio
from pathlib import Path

from atomlab.core.clock import FakeClock
from atomlab.llm import GenerationRequest, LlmQueue, OfflineProvider, ReplayProvider
from tests.llm.conftest import Triage


def _requests() -> list[GenerationRequest[Triage]]:
    return [
        GenerationRequest(prompt=f"defect {i}: pit depth {i * 0.1:.1f} nm", schema=Triage)
        for i in range(40)
    ]


async def test_queue_on_off_and_concurrency_give_byte_identical_answers(tmp_path: Path) -> None:
    recorder = ReplayProvider(tmp_path, inner=OfflineProvider(), model="m")
    recorded = [(await recorder.generate(r)).raw_text for r in _requests()]

    player = ReplayProvider(tmp_path, model="m")
    direct = [(await player.generate(r)).raw_text for r in _requests()]
    runs = [direct]
    for concurrency in (1, 7, 32):
        queue = LlmQueue(player, concurrency=concurrency, clock=FakeClock())
        answers = await asyncio.gather(*(queue.submit(r) for r in _requests()))
        runs.append([a.raw_text for a in answers])
    assert all(run == recorded for run in runs)
    assert len(set(recorded)) == len(recorded)
