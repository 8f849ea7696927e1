"""The request queue: bounds, retries, breaker, AIMD, budget, gauges, cancellation, metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.errors import CircuitOpenError
from atomlab.core.resilience import BreakerState, CircuitBreaker, RetryPolicy
from atomlab.core.settings import LlmSettings
from atomlab.llm import (
    Budget,
    BudgetExceededError,
    GenerationRequest,
    InvalidResponseError,
    LlmQueue,
    ModelPrice,
    ProviderAuthError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitedError,
    TokenUsage,
)
from tests.llm.conftest import Ok, ScriptedProvider


def server_error() -> ProviderServerError:
    return ProviderServerError("HTTP 503", provider="scripted", status=503)


def rate_limited(after: float | str | None = None) -> RateLimitedError:
    return RateLimitedError("HTTP 429", retry_after=after, provider="scripted", status=429)


def make_queue(provider: ScriptedProvider, clock: FakeClock, **kw: Any) -> LlmQueue:
    kw.setdefault("retry", RetryPolicy(max_attempts=5, initial_delay_s=1.0, clock=clock))
    return LlmQueue(provider, clock=clock, **kw)


def req(n: int = 0) -> GenerationRequest[Ok]:
    return GenerationRequest(prompt=f"p{n}", schema=Ok, request_id=f"r{n}")


def sample(queue: LlmQueue, name: str, **labels: str) -> float:
    value = queue.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


# --- retries -------------------------------------------------------------------------------


async def test_transient_failures_are_retried_with_bounded_jittered_backoff() -> None:
    clock = FakeClock()
    provider = ScriptedProvider([server_error(), ProviderTimeoutError("slow"), None])
    queue = make_queue(provider, clock)
    generation = await queue.submit(req())
    assert generation.attempts == 3
    assert provider.calls == 3
    assert len(clock.sleeps) == 2
    assert 0.0 <= clock.sleeps[0] <= 1.0  # full jitter under initial_delay_s * 2**0
    assert 0.0 <= clock.sleeps[1] <= 2.0
    assert queue.stats().retries == 2


async def test_retry_after_is_waited_exactly() -> None:
    clock = FakeClock()
    provider = ScriptedProvider([rate_limited("4.5"), None])
    queue = make_queue(provider, clock)
    await queue.submit(req())
    assert clock.sleeps == [4.5]


async def test_a_retry_after_pauses_other_new_calls_too() -> None:
    clock = FakeClock()
    provider = ScriptedProvider([rate_limited(10), None])
    queue = make_queue(provider, clock)
    await queue.submit(req(1))
    started = clock.monotonic()
    assert started == 10.0
    await queue.submit(req(2))
    assert clock.sleeps == [10.0]  # the second call found the pause already over


@pytest.mark.parametrize(
    "error",
    [InvalidResponseError("bad json"), ProviderAuthError("bad key")],
    ids=["invalid-response", "auth"],
)
async def test_non_transient_errors_are_not_retried(error: Exception) -> None:
    clock = FakeClock()
    provider = ScriptedProvider([error])
    queue = make_queue(provider, clock)
    with pytest.raises(type(error)):
        await queue.submit(req())
    assert provider.calls == 1
    assert clock.sleeps == []
    assert queue.stats().failed == 1


async def test_attempts_stop_at_max_attempts_and_the_last_error_surfaces() -> None:
    clock = FakeClock()
    provider = ScriptedProvider([server_error() for _ in range(10)])
    queue = make_queue(provider, clock, retry=RetryPolicy(max_attempts=4, clock=clock))
    with pytest.raises(ProviderServerError):
        await queue.submit(req())
    assert provider.calls == 4


async def test_cancellation_is_never_retried_and_restores_gauges() -> None:
    clock = FakeClock()
    hold = asyncio.Event()
    provider = ScriptedProvider(hold=hold)
    queue = make_queue(provider, clock, concurrency=1)
    first = asyncio.create_task(queue.submit(req(1)))
    second = asyncio.create_task(queue.submit(req(2)))  # waits for the only slot
    await provider.until_active(1)
    for _ in range(3):
        await asyncio.sleep(0)  # let the second task reach the slot it must wait for
    assert queue.stats().waiting == 1
    assert sample(queue, "atomlab_llm_inflight") == 1
    first.cancel()
    second.cancel()
    for task in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await task
    stats = queue.stats()
    assert (stats.in_flight, stats.waiting, stats.retries) == (0, 0, 0)
    assert provider.calls == 1
    assert sample(queue, "atomlab_llm_inflight") == 0
    assert sample(queue, "atomlab_llm_waiting") == 0
    hold.set()
    assert (await queue.submit(req(3))).attempts == 1  # slots were given back


# --- concurrency ---------------------------------------------------------------------------


async def test_global_concurrency_is_bounded() -> None:
    provider = ScriptedProvider()
    queue = make_queue(provider, FakeClock(), concurrency=4)
    await asyncio.gather(*(queue.submit(req(i)) for i in range(40)))
    assert provider.max_active == 4
    assert queue.stats().completed == 40


async def test_per_key_concurrency_is_bounded_within_the_global_bound() -> None:
    active: dict[str, int] = {"features": 0}
    peak: dict[str, int] = {"features": 0}
    provider = ScriptedProvider()
    original = provider.generate

    async def generate(request: GenerationRequest[Any]) -> Any:
        key = request.request_id.split(":")[0]
        active[key] = active.get(key, 0) + 1
        peak[key] = max(peak.get(key, 0), active[key])
        try:
            return await original(request)
        finally:
            active[key] -= 1

    provider.generate = generate  # type: ignore[method-assign]
    queue = make_queue(provider, FakeClock(), concurrency=6, per_key={"features": 2})
    jobs = [
        queue.submit(GenerationRequest(prompt="x", schema=Ok, request_id=f"{key}:{i}"), key=key)
        for i in range(12)
        for key in ("features", "mapping")
    ]
    await asyncio.gather(*jobs)
    assert peak["features"] == 2
    assert provider.max_active == 6


async def test_in_flight_gauge_counts_calls_in_progress_not_free_slots() -> None:
    hold = asyncio.Event()
    provider = ScriptedProvider(hold=hold)
    queue = make_queue(provider, FakeClock(), concurrency=8)
    tasks = [asyncio.create_task(queue.submit(req(i))) for i in range(3)]
    await provider.until_active(3)
    assert sample(queue, "atomlab_llm_inflight") == 3
    assert queue.stats().in_flight == 3
    hold.set()
    await asyncio.gather(*tasks)
    assert sample(queue, "atomlab_llm_inflight") == 0


async def test_concurrency_halves_on_429_and_recovers_on_success() -> None:
    clock = FakeClock()
    provider = ScriptedProvider([rate_limited(1)])
    queue = make_queue(provider, clock, concurrency=8)
    await queue.submit(req())
    assert queue.stats().concurrency_limit == 4
    assert sample(queue, "atomlab_llm_concurrency_limit") == 4
    await asyncio.gather(*(queue.submit(req(i)) for i in range(60)))
    assert queue.stats().concurrency_limit == 8


async def test_a_burst_of_429s_halves_the_limit_once() -> None:
    clock = FakeClock()
    hold = asyncio.Event()
    provider = ScriptedProvider([rate_limited(), rate_limited(), rate_limited()], hold=hold)
    queue = make_queue(provider, clock, concurrency=8)
    tasks = [asyncio.create_task(queue.submit(req(i))) for i in range(3)]
    await provider.until_active(3)
    hold.set()
    await asyncio.gather(*tasks)
    assert queue.stats().rate_limited == 3
    assert queue.stats().concurrency_limit >= 4


async def test_concurrency_never_drops_below_the_minimum() -> None:
    clock = FakeClock()
    provider = ScriptedProvider([rate_limited() for _ in range(5)])
    queue = make_queue(
        provider, clock, concurrency=4, retry=RetryPolicy(max_attempts=5, clock=clock)
    )
    with pytest.raises(RateLimitedError):
        await queue.submit(req())
    assert queue.stats().concurrency_limit == 1  # 4 -> 2 -> 1 -> 1 -> 1


# --- circuit breaker -----------------------------------------------------------------------


async def test_breaker_opens_and_no_provider_call_is_made_while_open() -> None:
    clock = FakeClock()
    provider = ScriptedProvider([server_error() for _ in range(3)])
    breaker = CircuitBreaker("scripted", failure_threshold=3, reset_timeout_s=30, clock=clock)
    queue = make_queue(
        provider, clock, breaker=breaker, retry=RetryPolicy(max_attempts=1, clock=clock)
    )
    for i in range(3):
        with pytest.raises(ProviderServerError):
            await queue.submit(req(i))
    assert breaker.state is BreakerState.OPEN
    calls_before = provider.calls
    for i in range(5):
        with pytest.raises(CircuitOpenError):
            await queue.submit(req(10 + i))
    assert provider.calls == calls_before
    assert (
        sample(
            queue,
            "atomlab_llm_requests_total",
            provider="scripted",
            model="scripted-1",
            key="default",
            outcome="circuit_open",
        )
        == 5
    )
    clock.advance(30)
    await queue.submit(req(99))  # the half-open probe succeeds and closes the circuit
    assert breaker.state is BreakerState.CLOSED


async def test_an_open_breaker_says_what_the_last_failure_was() -> None:
    clock = FakeClock()
    provider = ScriptedProvider([server_error() for _ in range(2)])
    breaker = CircuitBreaker("scripted", failure_threshold=2, reset_timeout_s=30, clock=clock)
    queue = make_queue(
        provider, clock, breaker=breaker, retry=RetryPolicy(max_attempts=1, clock=clock)
    )
    causes = []
    for i in range(2):
        with pytest.raises(ProviderServerError) as failed:
            await queue.submit(req(i))
        causes.append(str(failed.value))
    with pytest.raises(CircuitOpenError) as refused:
        await queue.submit(req(10))
    assert refused.value.message.endswith(f"; last failure: {causes[-1]}")
    assert refused.value.details["last_error"] == causes[-1]


async def test_rate_limits_and_bad_answers_do_not_trip_the_breaker() -> None:
    clock = FakeClock()
    script: list[BaseException | None] = [rate_limited(), InvalidResponseError("x")] * 3
    provider = ScriptedProvider(script)
    breaker = CircuitBreaker("scripted", failure_threshold=2, clock=clock)
    queue = make_queue(
        provider, clock, breaker=breaker, retry=RetryPolicy(max_attempts=1, clock=clock)
    )
    for i in range(6):
        with pytest.raises((RateLimitedError, InvalidResponseError)):
            await queue.submit(req(i))
    assert breaker.state is BreakerState.CLOSED


# --- tokens, cost, budget ------------------------------------------------------------------


async def test_tokens_and_cost_are_accounted_with_the_price_table() -> None:
    provider = ScriptedProvider(usage=TokenUsage(1_000, 500))
    queue = make_queue(provider, FakeClock(), prices={"scripted-1": ModelPrice(2.0, 10.0)})
    for i in range(4):
        await queue.submit(req(i))
    stats = queue.stats()
    assert (stats.prompt_tokens, stats.output_tokens) == (4_000, 2_000)
    assert stats.cost_usd == pytest.approx(4 * (1_000 * 2.0 + 500 * 10.0) / 1e6)
    assert (
        sample(queue, "atomlab_llm_tokens_total", model="scripted-1", direction="output") == 2_000
    )
    assert sample(queue, "atomlab_llm_cost_usd_total", model="scripted-1") == pytest.approx(
        stats.cost_usd
    )


async def test_a_spent_budget_refuses_new_calls_cleanly() -> None:
    provider = ScriptedProvider(usage=TokenUsage(600, 400))
    queue = make_queue(provider, FakeClock(), budget=Budget(max_tokens=2_500))
    for i in range(3):
        await queue.submit(req(i))  # 1000, 2000, 3000 tokens: the third started under budget
    with pytest.raises(BudgetExceededError) as caught:
        await queue.submit(req(9))
    assert provider.calls == 3
    assert "llm.budget_tokens" in caught.value.message
    assert caught.value.exit_code == 2
    assert queue.budget_exhausted
    assert queue.stats().budget_exhausted


async def test_a_usd_budget_names_the_setting() -> None:
    provider = ScriptedProvider(usage=TokenUsage(1_000_000, 0))
    queue = make_queue(
        provider,
        FakeClock(),
        budget=Budget(max_usd=0.5),
        prices={"scripted-1": ModelPrice(1.0, 1.0)},
    )
    await queue.submit(req())
    with pytest.raises(BudgetExceededError, match=r"llm\.budget_usd"):
        await queue.submit(req(1))


async def test_calls_in_flight_when_the_budget_runs_out_finish_and_are_counted() -> None:
    hold = asyncio.Event()
    provider = ScriptedProvider(usage=TokenUsage(1_000, 0), hold=hold)
    queue = make_queue(provider, FakeClock(), budget=Budget(max_tokens=1_500), concurrency=4)
    tasks = [asyncio.create_task(queue.submit(req(i))) for i in range(3)]
    await provider.until_active(3)
    hold.set()
    results = await asyncio.gather(*tasks)
    assert len(results) == 3
    assert queue.stats().prompt_tokens == 3_000
    with pytest.raises(BudgetExceededError):
        await queue.submit(req(5))


# --- settings and metrics ------------------------------------------------------------------


async def test_from_settings_uses_the_llm_section() -> None:
    clock = FakeClock()
    settings = LlmSettings(
        max_attempts=2,
        breaker_failure_threshold=1,
        budget_tokens=10,
        prices={"scripted-1": (1.0, 2.0)},
    )
    provider = ScriptedProvider([server_error(), server_error()])
    queue = LlmQueue.from_settings(provider, settings, concurrency=3, clock=clock)
    with pytest.raises(CircuitOpenError):
        await queue.submit(req())
    assert provider.calls == 1  # the breaker (threshold 1) opened after the first failure
    assert queue.retry.max_attempts == 2
    assert queue.budget == Budget(max_usd=None, max_tokens=10)
    assert queue.price_of("scripted-1") == ModelPrice(1.0, 2.0)
    assert queue.stats().concurrency_limit == 3


async def test_metrics_use_the_atomlab_llm_prefix() -> None:
    clock = FakeClock()
    queue = make_queue(ScriptedProvider([server_error(), None]), clock)
    await queue.submit(req(), key="features")
    text = queue.metrics.exposition().decode()
    for name in (
        "atomlab_llm_requests_total",
        "atomlab_llm_retries_total",
        "atomlab_llm_inflight",
        "atomlab_llm_request_duration_seconds_bucket",
        "atomlab_llm_queue_wait_seconds_bucket",
        "atomlab_llm_tokens_total",
        "atomlab_llm_circuit_breaker_state",
    ):
        assert name in text
    assert 'le="300.0"' in text  # latency buckets reach minutes
    assert sample(queue, "atomlab_llm_retries_total", reason="server_error") == 1
    assert (
        sample(
            queue,
            "atomlab_llm_requests_total",
            provider="scripted",
            model="scripted-1",
            key="features",
            outcome="ok",
        )
        == 1
    )


async def test_retry_logs_speak_of_transport_retries_only() -> None:
    from structlog.testing import capture_logs

    clock = FakeClock()
    with capture_logs() as logs:
        await make_queue(ScriptedProvider([server_error(), None]), clock).submit(req())
        with pytest.raises(InvalidResponseError):
            await make_queue(ScriptedProvider([InvalidResponseError("bad")]), clock).submit(req())
    events = [str(entry["event"]).lower() for entry in logs]
    assert events == ["llm call failed transiently; transport retry scheduled"]
    assert not any("regenerat" in e or "retry the generation" in e for e in events)


async def test_a_call_that_hangs_past_the_deadline_is_a_retryable_timeout() -> None:
    clock = FakeClock()
    provider = ScriptedProvider(hold=asyncio.Event())  # never released
    queue = make_queue(
        provider, clock, call_timeout_s=0.01, retry=RetryPolicy(max_attempts=2, clock=clock)
    )
    with pytest.raises(ProviderTimeoutError, match=r"llm\.timeout_s"):
        await queue.submit(req())
    assert provider.calls == 2
    assert queue.stats().in_flight == 0


def test_a_usd_budget_for_an_unpriced_model_is_refused_at_start() -> None:
    from atomlab.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"llm\.prices"):
        LlmQueue(ScriptedProvider(), budget=Budget(max_usd=1.0))


async def test_a_retry_after_beyond_the_cap_fails_instead_of_sleeping() -> None:
    clock = FakeClock()
    provider = ScriptedProvider([rate_limited(3600), None])
    queue = make_queue(provider, clock, max_retry_after_s=300)
    with pytest.raises(RateLimitedError, match="3600 s") as caught:
        await queue.submit(req())
    assert clock.sleeps == []
    assert provider.calls == 1
    await queue.submit(req(2))  # no global hour-long pause either
    assert clock.sleeps == []
    assert caught.value.details["request_id"] == "r0"


def test_versioned_model_names_find_their_family_price() -> None:
    queue = LlmQueue(ScriptedProvider())
    assert queue.price_of("gpt-4o-mini-2024-07-18") == queue.price_of("gpt-4o-mini")
    assert queue.price_of("gpt-4o-mini") != queue.price_of("gpt-4o")
    assert queue.price_of("gemini-2.5-flash-preview-05-20") == queue.price_of("gemini-2.5-flash")
    assert queue.price_of("unknown-model") is None


async def test_the_soft_budget_limit_warns_once_before_the_hard_limit() -> None:
    from structlog.testing import capture_logs

    provider = ScriptedProvider(usage=TokenUsage(100, 0))
    queue = make_queue(provider, FakeClock(), budget=Budget(max_tokens=1_000, warn_fraction=0.5))
    with capture_logs() as logs:
        for i in range(4):
            await queue.submit(req(i))
        assert not any("budget" in str(entry["event"]) for entry in logs)
        for i in range(4):
            await queue.submit(req(10 + i))
    warnings = [entry for entry in logs if "nearly spent" in str(entry["event"])]
    assert len(warnings) == 1
    assert warnings[0]["spent_tokens"] == 500
