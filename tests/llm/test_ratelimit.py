"""Client-side RPM/TPM limits: calls start no faster than the quota allows."""

from __future__ import annotations

import asyncio

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.settings import LlmSettings
from atomlab.llm import GenerationRequest, LlmQueue, RateLimits, TokenUsage
from tests.llm.conftest import Ok, ScriptedProvider


def _timed(clock: FakeClock, **kw: object) -> tuple[ScriptedProvider, list[float]]:
    starts: list[float] = []
    provider = ScriptedProvider(on_call=lambda _: starts.append(clock.monotonic()), **kw)  # type: ignore[arg-type]
    return provider, starts


def _req(i: int, max_tokens: int | None = 50) -> GenerationRequest[Ok]:
    return GenerationRequest(prompt=f"p{i}", schema=Ok, max_output_tokens=max_tokens)


async def test_requests_per_minute_space_the_calls() -> None:
    clock = FakeClock()
    provider, starts = _timed(clock)
    queue = LlmQueue(
        provider, concurrency=8, clock=clock, rate_limits=RateLimits(requests_per_minute=60)
    )
    await asyncio.gather(*(queue.submit(_req(i)) for i in range(6)))
    assert starts == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])


async def test_a_burst_of_one_second_worth_goes_at_once() -> None:
    clock = FakeClock()
    provider, starts = _timed(clock)
    queue = LlmQueue(
        provider, concurrency=16, clock=clock, rate_limits=RateLimits(requests_per_minute=240)
    )
    await asyncio.gather(*(queue.submit(_req(i)) for i in range(8)))
    assert starts == pytest.approx([0, 0, 0, 0, 0.25, 0.5, 0.75, 1.0])


async def test_tokens_per_minute_charge_the_real_usage() -> None:
    clock = FakeClock()
    provider, starts = _timed(clock, usage=TokenUsage(600, 0))
    queue = LlmQueue(provider, clock=clock, rate_limits=RateLimits(tokens_per_minute=6_000))
    await queue.submit(_req(1))
    await queue.submit(_req(2))
    # 100 tokens/s, bucket 100: the first call used 600 (500 of debt); the second reserves
    # 51 (1 prompt token + max_output_tokens 50) and waits until the bucket holds them.
    assert starts == pytest.approx([0.0, 5.51], abs=1e-6)


async def test_an_overestimate_is_given_back() -> None:
    clock = FakeClock()
    provider, starts = _timed(clock, usage=TokenUsage(5, 5))
    queue = LlmQueue(provider, clock=clock, rate_limits=RateLimits(tokens_per_minute=6_000))
    for i in range(5):
        await queue.submit(_req(i, max_tokens=40))  # reserves 41 of the 100 held, uses 10
    assert starts == [0.0] * 5  # without the correction the third call would wait


async def test_no_limits_means_no_waiting() -> None:
    clock = FakeClock()
    provider, _ = _timed(clock)
    queue = LlmQueue(provider, clock=clock)
    await asyncio.gather(*(queue.submit(_req(i)) for i in range(20)))
    assert clock.sleeps == []


def test_rate_settings_reach_the_queue() -> None:
    settings = LlmSettings(requests_per_minute=500, tokens_per_minute=90_000)
    queue = LlmQueue.from_settings(ScriptedProvider(), settings)
    assert queue.rate_limits == RateLimits(500, 90_000)


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="requests_per_minute"):
        RateLimits(requests_per_minute=0)


async def test_calls_refused_by_the_breaker_give_their_tokens_back() -> None:
    from atomlab.core.errors import CircuitOpenError
    from atomlab.core.resilience import CircuitBreaker

    clock = FakeClock()
    breaker = CircuitBreaker("p", failure_threshold=1, reset_timeout_s=10, clock=clock)
    breaker.record_failure()
    provider, starts = _timed(clock)
    queue = LlmQueue(
        provider, clock=clock, breaker=breaker, rate_limits=RateLimits(tokens_per_minute=6_000)
    )
    for i in range(3):
        with pytest.raises(CircuitOpenError):
            await queue.submit(_req(i, max_tokens=60))  # each reserves 61 of the 100 held
    clock.advance(10)
    await queue.submit(_req(9, max_tokens=60))
    assert clock.sleeps == []
    assert starts == [10.0]
