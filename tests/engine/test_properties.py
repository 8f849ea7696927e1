"""Invariants over generated schedules: whatever order calls finish in, the output is the same."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomlab.engine import PipelineRunner, RunOptions
from atomlab.llm import GenerationRequest
from tests.engine.conftest import FakeProvider, tiny_pipeline, write_items


def _run(items: int, concurrency: int, levels: int, salt: int) -> bytes:
    async def hook(request: GenerationRequest[Any]) -> None:
        # A pseudo-random number of event-loop turns per call reorders completions.
        turns = hashlib.sha256(f"{salt}:{request.request_id.split(':', 1)[1]}".encode()).digest()
        for _ in range(turns[0] % 6):
            await asyncio.sleep(0)

    with tempfile.TemporaryDirectory() as tmp:
        src = write_items(Path(tmp) / "in.jsonl", items)
        out = Path(tmp) / "out.jsonl"
        pipeline = tiny_pipeline(fanout={"catalogue": "levels", "max_concurrent": levels})
        runner = PipelineRunner(
            pipeline,
            FakeProvider(hook),
            options=RunOptions(concurrency=concurrency, write_metrics=False),
        )
        asyncio.run(runner.run(src, out))
        return out.read_bytes()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.integers(min_value=1, max_value=6),
    concurrency=st.integers(min_value=1, max_value=12),
    levels=st.integers(min_value=1, max_value=4),
    salt=st.integers(min_value=0, max_value=10_000),
)
def test_output_bytes_do_not_depend_on_schedule_concurrency_or_level_bound(
    items: int, concurrency: int, levels: int, salt: int
) -> None:
    """Same input and answers → same bytes, in input order, for every schedule."""
    assert _run(items, concurrency, levels, salt) == _run(items, 1, 1, 0)
