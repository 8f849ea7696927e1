"""Retries (on tenacity) and a circuit breaker, both driven by an injectable clock.

    policy = RetryPolicy(max_attempts=5, initial_delay_s=0.5, max_delay_s=30)
    reply = policy.call(client.get, "Bias.Get")                 # sync
    reply = await policy.call_async(provider.generate, request)  # async

    breaker = CircuitBreaker("gemini", failure_threshold=5, reset_timeout_s=30)
    answer = await breaker.call_async(provider.generate, request)  # CircuitOpenError while open

Why the breaker is our own: the maintained breakers we looked at (pybreaker, aiobreaker,
purgatory, circuitbreaker) each miss something we need — one object usable from both sync and
async code, a success threshold for closing from half-open, an injectable clock for tests, and
per-instance Prometheus metrics. The state machine is small; its lock only guards state and is
never held across a call or a sleep (the seed-003 origin slept under its lock).
"""

from __future__ import annotations

import asyncio
import enum
import random
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ParamSpec, TypeVar

from prometheus_client import CollectorRegistry
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

from atomlab.core.clock import Clock, SystemClock
from atomlab.core.errors import CircuitOpenError, ConnectionFailedError
from atomlab.core.metrics import Metrics

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_RETRY_ON: tuple[type[BaseException], ...] = (
    ConnectionFailedError,
    ConnectionError,
    TimeoutError,
)
NEVER_RETRIED: tuple[type[BaseException], ...] = (asyncio.CancelledError, KeyboardInterrupt)


class RetryableError(ConnectionFailedError):
    """A transient failure; ``retry_after`` holds the wait the peer asked for, if any."""

    type_name = "retryable"

    def __init__(
        self, message: str, *, retry_after: float | str | None = None, **details: Any
    ) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


def retry_after_seconds(exc: BaseException, *, now: datetime | None = None) -> float | None:
    """Seconds to wait that ``exc`` carries in a ``retry_after`` attribute, or None.

    Accepts a number of seconds, or a ``Retry-After`` header value: delta-seconds or an HTTP
    date (then relative to ``now``). Never negative.
    """
    value = getattr(exc, "retry_after", None)
    if value is None:
        return None
    if isinstance(value, int | float):
        return max(float(value), 0.0)
    if isinstance(value, datetime):
        moment = value
    else:
        text = str(value).strip()
        try:
            return max(float(text), 0.0)
        except ValueError:
            pass
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    reference = now or datetime.now(UTC)
    return max((moment - reference).total_seconds(), 0.0)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with full jitter; honours ``Retry-After``; never retries cancellation.

    Attempt ``n`` (1-based) that fails waits ``uniform(0, min(max_delay_s, initial_delay_s *
    multiplier ** (n - 1)))`` before the next, unless the error carries ``retry_after``, which is
    then waited exactly.
    """

    max_attempts: int = 5
    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    multiplier: float = 2.0
    retry_on: tuple[type[BaseException], ...] = DEFAULT_RETRY_ON
    clock: Clock | None = None
    rng: random.Random | None = None
    on_retry: Callable[[int, BaseException, float], None] | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_delay_s < 0 or self.max_delay_s < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and multiplier >= 1")

    def should_retry(self, exc: BaseException) -> bool:
        return isinstance(exc, self.retry_on) and not isinstance(exc, NEVER_RETRIED)

    def delay_for(self, attempt: int, exc: BaseException | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        clock = self.clock or SystemClock()
        if exc is not None:
            after = retry_after_seconds(exc, now=clock.now())
            if after is not None:
                return after
        ceiling = min(self.max_delay_s, self.initial_delay_s * self.multiplier ** (attempt - 1))
        return (self.rng or random).uniform(0.0, ceiling)

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        clock = self.clock or SystemClock()
        retrying = Retrying(sleep=clock.sleep, **self._tenacity_kwargs())
        return retrying(fn, *args, **kwargs)

    async def call_async(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        clock = self.clock or SystemClock()
        retrying = AsyncRetrying(sleep=clock.sleep_async, **self._tenacity_kwargs())
        return await retrying(fn, *args, **kwargs)

    def _tenacity_kwargs(self) -> dict[str, Any]:
        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return self.delay_for(state.attempt_number, exc)

        def before_sleep(state: RetryCallState) -> None:
            if self.on_retry is not None and state.outcome is not None:
                exc = state.outcome.exception()
                delay = state.upcoming_sleep
                if exc is not None:
                    self.on_retry(state.attempt_number, exc, delay)

        return {
            "stop": stop_after_attempt(self.max_attempts),
            "wait": wait,
            "retry": retry_if_exception(self.should_retry),
            "reraise": True,
            "before_sleep": before_sleep,
        }


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.OPEN: 1, BreakerState.HALF_OPEN: 2}


@dataclass(frozen=True)
class StateChange:
    """One transition of a breaker, as passed to ``on_state_change`` listeners."""

    breaker: str
    old: BreakerState
    new: BreakerState
    at_monotonic: float
    reason: str


class CircuitBreaker:
    """closed → open after ``failure_threshold`` consecutive failures → half-open after
    ``reset_timeout_s`` → closed after ``success_threshold`` successes (a failure re-opens).

    While open, calls fail fast with :class:`CircuitOpenError` and the protected function is
    not called. In half-open at most ``half_open_max_calls`` trial calls run at once; others are
    refused like in the open state. Exceptions in ``excluded`` (and cancellation) count neither
    as success nor as failure.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        success_threshold: int = 1,
        half_open_max_calls: int = 1,
        clock: Clock | None = None,
        metrics_registry: CollectorRegistry | None = None,
        capability: str = "core",
        on_state_change: Callable[[StateChange], None] | None = None,
        excluded: tuple[type[BaseException], ...] = (),
    ) -> None:
        if failure_threshold < 1 or success_threshold < 1 or half_open_max_calls < 1:
            raise ValueError("thresholds and half_open_max_calls must be >= 1")
        if reset_timeout_s <= 0:
            raise ValueError(f"reset_timeout_s must be > 0, got {reset_timeout_s}")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.success_threshold = success_threshold
        self.half_open_max_calls = half_open_max_calls
        self.excluded = excluded
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0
        self._trials = 0
        self._listeners: list[Callable[[StateChange], None]] = []
        if on_state_change is not None:
            self._listeners.append(on_state_change)
        metrics = Metrics(capability, metrics_registry)
        self._state_gauge = metrics.gauge(
            "circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
            labels=("breaker",),
        )
        self._transitions = metrics.counter(
            "circuit_breaker_transitions_total",
            "Circuit breaker state changes, by the state entered.",
            labels=("breaker", "state"),
        )
        self._rejected = metrics.counter(
            "circuit_breaker_rejected_total",
            "Calls refused because the circuit was open.",
            labels=("breaker",),
        )
        self._state_gauge.labels(breaker=name).set(0)

    def add_listener(self, listener: Callable[[StateChange], None]) -> None:
        self._listeners.append(listener)

    @property
    def state(self) -> BreakerState:
        with self._lock:
            change = self._maybe_half_open()
            state = self._state
        self._publish(change)
        return state

    def before_call(self) -> None:
        """Claim permission for one call; raises :class:`CircuitOpenError` when refused."""
        with self._lock:
            change = self._maybe_half_open()
            refused_for: float | None = None
            if self._state is BreakerState.OPEN:
                refused_for = self._opened_at + self.reset_timeout_s - self._clock.monotonic()
            elif self._state is BreakerState.HALF_OPEN:
                if self._trials >= self.half_open_max_calls:
                    refused_for = 0.0
                else:
                    self._trials += 1
        self._publish(change)
        if refused_for is not None:
            self._rejected.labels(breaker=self.name).inc()
            raise CircuitOpenError(self.name, max(refused_for, 0.0))

    def record_success(self) -> None:
        with self._lock:
            change = None
            if self._state is BreakerState.HALF_OPEN:
                self._trials = max(self._trials - 1, 0)
                self._successes += 1
                if self._successes >= self.success_threshold:
                    change = self._transition(BreakerState.CLOSED, "trial calls succeeded")
            else:
                self._failures = 0
        self._publish(change)

    def record_failure(self) -> None:
        with self._lock:
            change = None
            if self._state is BreakerState.HALF_OPEN:
                self._trials = max(self._trials - 1, 0)
                change = self._transition(BreakerState.OPEN, "a trial call failed")
            elif self._state is BreakerState.CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    reason = f"{self._failures} consecutive failures"
                    change = self._transition(BreakerState.OPEN, reason)
        self._publish(change)

    def record_neutral(self) -> None:
        """Release a half-open trial slot without counting the outcome."""
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._trials = max(self._trials - 1, 0)

    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        self.before_call()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self._record_exception(exc)
            raise
        self.record_success()
        return result

    async def call_async(
        self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        self.before_call()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            self._record_exception(exc)
            raise
        self.record_success()
        return result

    def _record_exception(self, exc: BaseException) -> None:
        if isinstance(exc, self.excluded) or not isinstance(exc, Exception):
            self.record_neutral()
        else:
            self.record_failure()

    def _maybe_half_open(self) -> StateChange | None:
        if self._state is BreakerState.OPEN and (
            self._clock.monotonic() - self._opened_at >= self.reset_timeout_s
        ):
            return self._transition(BreakerState.HALF_OPEN, "reset timeout elapsed")
        return None

    def _transition(self, new: BreakerState, reason: str) -> StateChange:
        old = self._state
        now = self._clock.monotonic()
        self._state = new
        self._failures = 0
        self._successes = 0
        self._trials = 0
        if new is BreakerState.OPEN:
            self._opened_at = now
        self._state_gauge.labels(breaker=self.name).set(_STATE_VALUE[new])
        self._transitions.labels(breaker=self.name, state=new.value).inc()
        return StateChange(self.name, old, new, now, reason)

    def _publish(self, change: StateChange | None) -> None:
        # Listeners run outside the lock so they may call back into the breaker.
        if change is None:
            return
        for listener in list(self._listeners):
            listener(change)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state.value})"
