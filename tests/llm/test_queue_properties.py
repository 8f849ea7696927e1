"""Invariants of the queue over generated workloads (hypothesis)."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from atomlab.core.clock import FakeClock
from atomlab.core.resilience import CircuitBreaker, RetryPolicy
from atomlab.llm import (
    InvalidResponseError,
    LlmQueue,
    ProviderServerError,
    RateLimitedError,
)
from tests.llm.conftest import ScriptedProvider
from tests.llm.test_queue import req

OUTCOMES = st.sampled_from(["ok", "ok", "ok", "429", "503", "invalid"])


def _exception(kind: str) -> BaseException | None:
    if kind == "429":
        return RateLimitedError("429", retry_after=0.5)
    if kind == "503":
        return ProviderServerError("503")
    if kind == "invalid":
        return InvalidResponseError("bad")
    return None


@settings(max_examples=60, deadline=None)
@given(
    script=st.lists(OUTCOMES, max_size=60),
    requests=st.integers(min_value=1, max_value=30),
    concurrency=st.integers(min_value=1, max_value=8),
    cancel_every=st.integers(min_value=0, max_value=7),
)
async def test_bounds_hold_and_every_request_is_accounted_for(
    script: list[str], requests: int, concurrency: int, cancel_every: int
) -> None:
    """Never more than `concurrency` calls at once; afterwards nothing is in flight or waiting,
    and every submitted request ended exactly once (completed, failed or cancelled)."""
    clock = FakeClock()
    provider = ScriptedProvider([_exception(kind) for kind in script])
    queue = LlmQueue(
        provider,
        concurrency=concurrency,
        clock=clock,
        retry=RetryPolicy(max_attempts=3, clock=clock),
        breaker=CircuitBreaker("p", failure_threshold=1_000, clock=clock),
    )
    tasks = [asyncio.create_task(queue.submit(req(i))) for i in range(requests)]
    await asyncio.sleep(0)
    cancelled = {i for i in range(requests) if cancel_every and i % cancel_every == 0}
    for i in cancelled:
        tasks[i].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    stats = queue.stats()
    assert provider.max_active <= concurrency
    assert (stats.in_flight, stats.waiting) == (0, 0)
    assert stats.submitted == requests
    n_cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
    assert stats.completed + stats.failed + n_cancelled == requests
    assert stats.attempts <= requests * 3
    assert 1 <= stats.concurrency_limit <= concurrency
