"""Retry policy and circuit breaker under the fake clock: nothing here waits for real."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import timedelta
from email.utils import format_datetime

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.errors import CircuitOpenError, ConnectionFailedError, InvalidInputError
from atomlab.core.metrics import exposition, new_registry
from atomlab.core.resilience import (
    BreakerState,
    CircuitBreaker,
    RetryableError,
    RetryPolicy,
    retry_after_seconds,
)


class Flaky:
    """Fails ``failures`` times with ``error``, then returns ``"ok"``."""

    def __init__(self, failures: int, error: BaseException) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def test_retries_until_success_with_full_jitter_exponential_backoff():
    clock = FakeClock()
    policy = RetryPolicy(
        max_attempts=5, initial_delay_s=1.0, max_delay_s=30.0, clock=clock, rng=random.Random(7)
    )
    flaky = Flaky(4, ConnectionFailedError("down"))
    assert policy.call(flaky) == "ok"
    assert flaky.calls == 5
    assert len(clock.sleeps) == 4
    for attempt, slept in enumerate(clock.sleeps, start=1):
        assert 0.0 <= slept <= 2 ** (attempt - 1)
    assert len(set(clock.sleeps)) == 4  # jittered, not a fixed ladder


def test_delay_never_exceeds_max_delay():
    policy = RetryPolicy(initial_delay_s=1.0, max_delay_s=3.0, rng=random.Random(1))
    delays = [policy.delay_for(attempt, None) for attempt in range(1, 40) for _ in range(5)]
    assert max(delays) <= 3.0
    assert max(delays) > 2.0  # the cap is reached, not just approached from below


def test_gives_up_after_max_attempts_and_reraises_the_last_error():
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=3, clock=clock)
    flaky = Flaky(10, ConnectionFailedError("still down"))
    with pytest.raises(ConnectionFailedError, match="still down"):
        policy.call(flaky)
    assert flaky.calls == 3


def test_errors_outside_retry_on_are_not_retried():
    policy = RetryPolicy(clock=FakeClock())
    flaky = Flaky(1, InvalidInputError("bad field"))
    with pytest.raises(InvalidInputError):
        policy.call(flaky)
    assert flaky.calls == 1


def test_retry_after_in_seconds_is_waited_exactly():
    clock = FakeClock()
    policy = RetryPolicy(clock=clock, max_delay_s=1.0)
    flaky = Flaky(2, RetryableError("429", retry_after="12"))
    assert policy.call(flaky) == "ok"
    assert clock.sleeps == [12.0, 12.0]


def test_retry_after_as_http_date_is_relative_to_the_clock():
    clock = FakeClock()
    header = format_datetime(clock.now() + timedelta(seconds=42), usegmt=True)
    assert retry_after_seconds(RetryableError("x", retry_after=header), now=clock.now()) == 42.0
    policy = RetryPolicy(clock=clock)
    assert policy.call(Flaky(1, RetryableError("503", retry_after=header))) == "ok"
    assert clock.sleeps == [42.0]


def test_retry_after_in_the_past_or_garbage():
    assert retry_after_seconds(RetryableError("x", retry_after="-5")) == 0.0
    assert retry_after_seconds(RetryableError("x", retry_after="soon")) is None
    assert retry_after_seconds(ConnectionFailedError("x")) is None


@pytest.mark.parametrize("error", [KeyboardInterrupt(), asyncio.CancelledError()])
def test_cancellation_is_never_retried_even_if_listed(error):
    policy = RetryPolicy(retry_on=(BaseException,), clock=FakeClock())
    flaky = Flaky(1, error)
    with pytest.raises(type(error)):
        policy.call(flaky)
    assert flaky.calls == 1


async def test_async_retry_uses_the_async_sleep_of_the_clock():
    clock = FakeClock()
    policy = RetryPolicy(clock=clock, rng=random.Random(3))
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TimeoutError("slow")
        return "done"

    assert await policy.call_async(flaky) == "done"
    assert calls == 3
    assert clock.monotonic() == pytest.approx(sum(clock.sleeps))


async def test_async_cancellation_propagates_without_retry():
    policy = RetryPolicy(retry_on=(BaseException,), clock=FakeClock())
    calls = 0

    async def cancelled() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await policy.call_async(cancelled)
    assert calls == 1


def test_on_retry_hook_sees_attempt_error_and_delay():
    seen = []
    policy = RetryPolicy(clock=FakeClock(), on_retry=lambda n, e, d: seen.append((n, str(e), d)))
    policy.call(Flaky(1, RetryableError("busy", retry_after=2)))
    assert seen == [(1, "busy", 2.0)]


def fail() -> None:
    raise ConnectionFailedError("peer down")


def make_breaker(clock: FakeClock, **kwargs) -> tuple[CircuitBreaker, list]:
    changes: list = []
    breaker = CircuitBreaker(
        "peer",
        clock=clock,
        on_state_change=changes.append,
        metrics_registry=new_registry(),
        **kwargs,
    )
    return breaker, changes


def test_breaker_opens_after_n_consecutive_failures_and_fails_fast():
    clock = FakeClock()
    breaker, changes = make_breaker(clock, failure_threshold=3, reset_timeout_s=10)
    for _ in range(3):
        with pytest.raises(ConnectionFailedError):
            breaker.call(fail)
    assert breaker.state is BreakerState.OPEN
    called = []
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: called.append(1))
    assert called == []
    assert info.value.retry_in_s == pytest.approx(10)
    assert [c.new for c in changes] == [BreakerState.OPEN]


def test_a_success_resets_the_consecutive_failure_count():
    breaker, _ = make_breaker(FakeClock(), failure_threshold=2)
    with pytest.raises(ConnectionFailedError):
        breaker.call(fail)
    assert breaker.call(lambda: 1) == 1
    with pytest.raises(ConnectionFailedError):
        breaker.call(fail)
    assert breaker.state is BreakerState.CLOSED


def test_half_open_after_reset_timeout_then_closed_after_m_successes():
    clock = FakeClock()
    breaker, changes = make_breaker(
        clock, failure_threshold=1, reset_timeout_s=5, success_threshold=2
    )
    with pytest.raises(ConnectionFailedError):
        breaker.call(fail)
    clock.advance(4.9)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.1)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.call(lambda: None)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.call(lambda: None)
    assert breaker.state is BreakerState.CLOSED
    assert [c.new for c in changes] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def test_failure_in_half_open_reopens_and_restarts_the_timeout():
    clock = FakeClock()
    breaker, _ = make_breaker(clock, failure_threshold=1, reset_timeout_s=5)
    with pytest.raises(ConnectionFailedError):
        breaker.call(fail)
    clock.advance(5)
    with pytest.raises(ConnectionFailedError):
        breaker.call(fail)
    assert breaker.state is BreakerState.OPEN
    clock.advance(4)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)


def test_half_open_admits_only_the_allowed_number_of_trial_calls():
    clock = FakeClock()
    breaker, _ = make_breaker(clock, failure_threshold=1, reset_timeout_s=1)
    with pytest.raises(ConnectionFailedError):
        breaker.call(fail)
    clock.advance(1)
    breaker.before_call()  # the one trial in flight
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED


def test_excluded_errors_count_neither_way():
    breaker, _ = make_breaker(FakeClock(), failure_threshold=1, excluded=(InvalidInputError,))

    def invalid() -> None:
        raise InvalidInputError("bad")

    for _ in range(3):
        with pytest.raises(InvalidInputError):
            breaker.call(invalid)
    assert breaker.state is BreakerState.CLOSED


def test_a_slow_call_never_blocks_other_callers():
    """The lock guards state only: while one call is in flight, others get answers at once."""
    breaker, _ = make_breaker(FakeClock(), failure_threshold=1)
    inside = threading.Event()
    release = threading.Event()

    def slow() -> str:
        inside.set()
        release.wait(5)
        return "slow"

    worker = threading.Thread(target=breaker.call, args=(slow,))
    worker.start()
    assert inside.wait(5)
    answered = threading.Event()

    def other() -> None:
        breaker.call(lambda: None)
        _ = breaker.state
        answered.set()

    checker = threading.Thread(target=other)
    checker.start()
    assert answered.wait(5), "a second caller was blocked by the call in flight"
    release.set()
    worker.join(5)
    checker.join(5)


async def test_async_calls_and_metrics_exposition():
    clock = FakeClock()
    registry = new_registry()
    breaker = CircuitBreaker(
        "llm", failure_threshold=2, clock=clock, metrics_registry=registry, capability="llm"
    )

    async def down() -> None:
        raise ConnectionFailedError("503")

    for _ in range(2):
        with pytest.raises(ConnectionFailedError):
            await breaker.call_async(down)
    with pytest.raises(CircuitOpenError):
        await breaker.call_async(down)
    text = exposition(registry).decode()
    assert 'atomlab_llm_circuit_breaker_state{breaker="llm"} 1.0' in text
    assert 'atomlab_llm_circuit_breaker_rejected_total{breaker="llm"} 1.0' in text
    assert 'atomlab_llm_circuit_breaker_transitions_total{breaker="llm",state="open"} 1.0' in text


async def test_async_cancellation_releases_the_half_open_slot():
    clock = FakeClock()
    breaker, _ = make_breaker(clock, failure_threshold=1, reset_timeout_s=1)
    with pytest.raises(ConnectionFailedError):
        breaker.call(fail)
    clock.advance(1)

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await breaker.call_async(cancelled)
    assert breaker.state is BreakerState.HALF_OPEN
    assert await breaker.call_async(asyncio.sleep, 0) is None
    assert breaker.state is BreakerState.CLOSED


def test_two_breakers_share_one_registry():
    registry = new_registry()
    first = CircuitBreaker("a", metrics_registry=registry, clock=FakeClock())
    second = CircuitBreaker("b", metrics_registry=registry, clock=FakeClock())
    assert first.state is second.state is BreakerState.CLOSED
    text = exposition(registry).decode()
    assert 'breaker="a"' in text and 'breaker="b"' in text
