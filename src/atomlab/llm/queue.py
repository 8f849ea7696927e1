"""The request queue every LLM call of a batch goes through: limits, retries, breaker, budget.

One :class:`LlmQueue` wraps one provider::

    queue = LlmQueue.from_settings(provider, settings.llm, concurrency=16)
    generation = await queue.submit(request, key="features")   # key = the stage
    queue.stats().cost_usd

Per attempt, in this order: the budget is checked (an exhausted budget refuses *new* calls with
:class:`BudgetExceededError`; calls already running finish and are counted), a server-requested
pause (``Retry-After``) is waited out, a slot is taken for the key (per-stage bound) and then a
global slot (an AIMD limit: halves on a 429, grows by one per window of successes back to the
maximum), the circuit breaker is asked (no provider call while it is open), the provider is
called. Transient failures (429, 5xx, timeouts, lost connections) are retried by the core
:class:`~atomlab.core.resilience.RetryPolicy`: full-jitter back-off, ``Retry-After`` waited
exactly. Answers that do not match the schema are never asked for again. Cancellation is never
retried and always gives back slots and gauges. All waits go through the injectable clock.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import CollectorRegistry

from atomlab.core.clock import Clock, SystemClock
from atomlab.core.errors import CircuitOpenError, ConfigError, PolicyRefusedError
from atomlab.core.logging import get_logger
from atomlab.core.metrics import Metrics
from atomlab.core.resilience import CircuitBreaker, RetryPolicy, retry_after_seconds
from atomlab.core.settings import LlmSettings
from atomlab.llm.provider import (
    Generation,
    GenerationRequest,
    InvalidResponseError,
    ModelT,
    Provider,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderRequestError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitedError,
    RateLimitHint,
    RetryableProviderError,
    TokenUsage,
)
from atomlab.llm.ratelimit import RateLimits, TokenBucket, estimate_tokens

DEFAULT_CONCURRENCY = 8
DEFAULT_KEY = "default"
MIN_CONCURRENCY = 1
DECREASE_FACTOR = 0.5
TOKENS_PER_MTOK = 1_000_000
DEFAULT_BUDGET_WARN_FRACTION = 0.8
TIMEOUT_GRACE_S = 5.0
# A Retry-After longer than this means a spent quota, not a burst: fail instead of sleeping.
DEFAULT_MAX_RETRY_AFTER_S = 300.0  # the whole-call deadline sits above the transport's own timeout
# Request latencies of LLMs run from ~0.1 s to minutes; prometheus' default buckets stop at 10 s.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
RETRYABLE: tuple[type[BaseException], ...] = (RetryableProviderError, ProviderTimeoutError)

_log = get_logger("atomlab.llm.queue")


@dataclass(frozen=True)
class ModelPrice:
    """List price in US dollars per million tokens."""

    input_per_mtok: float
    output_per_mtok: float

    def cost(self, usage: TokenUsage) -> float:
        return (
            usage.prompt_tokens * self.input_per_mtok + usage.output_tokens * self.output_per_mtok
        ) / TOKENS_PER_MTOK


# Published list prices (USD per million tokens, standard tier, short prompts) when this table
# was written; override or extend with the ``llm.prices`` setting ({model: [input, output]}).
DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "gemini-2.5-pro": ModelPrice(1.25, 10.0),
    "gemini-2.5-flash": ModelPrice(0.30, 2.50),
    "gemini-2.5-flash-lite": ModelPrice(0.10, 0.40),
    "gpt-4o": ModelPrice(2.50, 10.0),
    "gpt-4o-mini": ModelPrice(0.15, 0.60),
    "offline-v1": ModelPrice(0.0, 0.0),
}


@dataclass(frozen=True)
class Budget:
    """Limits for a whole batch; ``None`` means unlimited.

    Reaching ``warn_fraction`` of a limit logs one warning (the soft limit); reaching the limit
    refuses new calls (the hard limit).
    """

    max_usd: float | None = None
    max_tokens: int | None = None
    warn_fraction: float = DEFAULT_BUDGET_WARN_FRACTION

    def used_fraction(self, usd: float, tokens: int) -> float:
        """The larger of the spent fractions of the two limits (0 when unlimited)."""
        fractions = [0.0]
        if self.max_usd:
            fractions.append(usd / self.max_usd)
        if self.max_tokens:
            fractions.append(tokens / self.max_tokens)
        return max(fractions)


class BudgetExceededError(PolicyRefusedError):
    """The batch's token or cost budget is spent; no new provider call is made."""

    type_name = "budget_exceeded"


class QuotaExhaustedError(RateLimitedError):
    """The provider asks to wait longer than the queue ever waits: the quota is spent for a while.

    Not an item's fault: a batch should stop resumably rather than reject item after item.
    """

    type_name = "quota_exhausted"


@dataclass(frozen=True)
class QueueStats:
    """A snapshot of what the queue has done."""

    submitted: int
    completed: int
    failed: int
    in_flight: int
    waiting: int
    attempts: int
    retries: int
    rate_limited: int
    prompt_tokens: int
    output_tokens: int
    cost_usd: float
    concurrency_limit: int
    budget_exhausted: bool


class _AdaptiveLimit:
    """A FIFO concurrency limit that halves on overload and grows back by one per window (AIMD).

    A 429 from a call that started before the last decrease does not decrease again, so one
    burst of rejections halves the limit once, not once per rejected call. A released slot is
    handed to the oldest waiter directly (no thundering herd, no overtaking).
    """

    def __init__(self, maximum: int, minimum: int, *, adaptive: bool) -> None:
        self.maximum = maximum
        self.minimum = min(minimum, maximum)
        self.adaptive = adaptive
        self.limit = float(maximum)
        self.in_use = 0
        self.epoch = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def current(self) -> int:
        return max(self.minimum, int(self.limit))

    async def acquire(self) -> int:
        if not self._waiters and self.in_use < self.current:
            self.in_use += 1
            return self.epoch
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        return self.epoch

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def on_success(self) -> None:
        if self.adaptive and self.limit < self.maximum:
            self.limit = min(float(self.maximum), self.limit + 1.0 / max(self.limit, 1.0))
            self._wake()

    def on_overload(self, epoch: int) -> bool:
        if not self.adaptive or epoch != self.epoch:
            return False
        self.limit = max(float(self.minimum), self.limit * DECREASE_FACTOR)
        self.epoch += 1
        return True

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.current:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_use += 1
                waiter.set_result(None)


class _Instruments:
    def __init__(self, metrics: Metrics) -> None:
        self.requests = metrics.counter(
            "requests_total",
            "Provider calls by outcome (ok, rate_limited, server_error, timeout, ...).",
            labels=("provider", "model", "key", "outcome"),
        )
        self.retries = metrics.counter(
            "retries_total", "Transport retries scheduled, by reason.", labels=("reason",)
        )
        self.inflight = metrics.gauge("inflight", "Provider calls in progress right now.")
        self.waiting = metrics.gauge("waiting", "Requests waiting for a concurrency slot.")
        self.limit = metrics.gauge("concurrency_limit", "Current adaptive concurrency limit.")
        self.tokens = metrics.counter(
            "tokens_total", "Tokens used, by direction.", labels=("model", "direction")
        )
        self.cost = metrics.counter("cost_usd_total", "Estimated spend in USD.", labels=("model",))
        self.duration = metrics.histogram(
            "request_duration_seconds",
            "Duration of one provider call.",
            labels=("key",),
            buckets=LATENCY_BUCKETS,
        )
        self.queue_wait = metrics.histogram(
            "queue_wait_seconds",
            "Time a request waited for its slots.",
            buckets=LATENCY_BUCKETS,
        )


class LlmQueue:
    """Bounded, retried, metered access to one provider. Safe to share between tasks."""

    def __init__(
        self,
        provider: Provider,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        per_key: Mapping[str, int] | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        budget: Budget | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        adaptive: bool = True,
        min_concurrency: int = MIN_CONCURRENCY,
        call_timeout_s: float | None = None,
        max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S,
        rate_limits: RateLimits | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.provider = provider
        self._clock = clock or SystemClock()
        self.retry = replace(retry or RetryPolicy(), retry_on=RETRYABLE)
        metrics = Metrics("llm", registry)
        self.metrics = metrics
        self.breaker = breaker or CircuitBreaker(
            f"{provider.name}:{provider.model}",
            clock=self._clock,
            metrics_registry=metrics.registry,
            capability="llm",
        )
        self.budget = budget or Budget()
        self.prices = {**DEFAULT_PRICES, **(prices or {})}
        if self.budget.max_usd is not None and self.price_of(provider.model) is None:
            raise ConfigError(
                f"llm.budget_usd is set but model {provider.model!r} has no price; add it to "
                f"llm.prices as {{{provider.model!r}: [input_usd_per_mtok, output_usd_per_mtok]}}",
                field="llm.prices",
            )
        self.call_timeout_s = call_timeout_s
        self.max_retry_after_s = max_retry_after_s
        self.rate_limits = rate_limits or RateLimits()
        rpm, tpm = self.rate_limits.requests_per_minute, self.rate_limits.tokens_per_minute
        self._request_bucket = TokenBucket(rpm, self._clock) if rpm else None
        self._token_bucket = TokenBucket(tpm, self._clock) if tpm else None
        self._limit = _AdaptiveLimit(concurrency, min_concurrency, adaptive=adaptive)
        self._per_key_bounds = dict(per_key or {})
        self._per_key: dict[str, asyncio.Semaphore] = {}
        self._paused_until = 0.0
        self._last_failure: str | None = None  # what made the breaker count a failure
        self._m = _Instruments(metrics)
        # Gauges are read when scraped, so they are exact and cost nothing per call.
        self._m.inflight.set_function(lambda: self._in_flight)
        self._m.waiting.set_function(lambda: self._counts["waiting"])
        self._m.limit.set_function(lambda: self._limit.current)
        self._children: dict[tuple[str, ...], Any] = {}
        self._counts = dict.fromkeys(
            ("submitted", "completed", "failed", "attempts", "retries", "rate_limited", "waiting"),
            0,
        )
        self._in_flight = 0
        self._usage = TokenUsage()
        self._cost = 0.0
        self._exhausted = False
        self._warned = False

    @classmethod
    def from_settings(
        cls,
        provider: Provider,
        settings: LlmSettings,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        per_key: Mapping[str, int] | None = None,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
    ) -> LlmQueue:
        """A queue configured from the ``llm`` settings section (retries, breaker, budget)."""
        clock = clock or SystemClock()
        registry = registry if registry is not None else Metrics("llm").registry
        retry = RetryPolicy(
            max_attempts=settings.max_attempts,
            initial_delay_s=settings.retry_initial_delay_s,
            max_delay_s=settings.retry_max_delay_s,
            clock=clock,
        )
        breaker = CircuitBreaker(
            f"{provider.name}:{provider.model}",
            failure_threshold=settings.breaker_failure_threshold,
            reset_timeout_s=settings.breaker_reset_s,
            clock=clock,
            metrics_registry=registry,
            capability="llm",
        )
        prices = {model: ModelPrice(*pair) for model, pair in settings.prices.items()}
        return cls(
            provider,
            concurrency=concurrency,
            per_key=per_key,
            retry=retry,
            breaker=breaker,
            budget=Budget(settings.budget_usd, settings.budget_tokens),
            prices=prices,
            call_timeout_s=settings.timeout_s + TIMEOUT_GRACE_S,
            rate_limits=RateLimits(settings.requests_per_minute, settings.tokens_per_minute),
            clock=clock,
            registry=registry,
        )

    # --- public API ----------------------------------------------------------------------

    async def submit(
        self, request: GenerationRequest[ModelT], *, key: str = DEFAULT_KEY
    ) -> Generation[ModelT]:
        """Run ``request`` through the queue; return the answer or raise the final error.

        ``key`` (usually the stage name) selects the per-key concurrency bound and labels
        metrics. Raises :class:`BudgetExceededError`, :class:`CircuitOpenError` or the
        provider's :class:`ProviderError` once retries are spent or not allowed.
        """
        self._counts["submitted"] += 1
        attempt = 0
        while True:
            attempt += 1
            try:
                generation = await self._attempt(request, key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if attempt >= self.retry.max_attempts or not self.retry.should_retry(exc):
                    self._counts["failed"] += 1
                    raise
                delay = self.retry.delay_for(attempt, exc)
                if delay > self.max_retry_after_s:
                    self._counts["failed"] += 1
                    raise self._too_long_to_wait(exc, delay, request) from exc
                self._note_retry(request, key, attempt, exc, delay)
                await self._clock.sleep_async(delay)
                continue
            self._counts["completed"] += 1
            return generation if attempt == 1 else replace(generation, attempts=attempt)

    def _too_long_to_wait(
        self, exc: Exception, delay: float, request: GenerationRequest[Any]
    ) -> Exception:
        if not isinstance(exc, RateLimitedError):
            return exc
        return QuotaExhaustedError(
            f"{self.provider.name} asks to wait {delay:.0f} s before the next call, longer "
            f"than the queue waits ({self.max_retry_after_s:.0f} s): the quota is probably "
            "spent for a long period; resume later or use another key or model",
            retry_after=delay,
            provider=self.provider.name,
            model=self.provider.model,
            request_id=request.request_id,
            status=exc.status,
        )

    async def aclose(self) -> None:
        """Close the provider's connections (when it has any)."""
        close = getattr(self.provider, "aclose", None)
        if close is not None:
            await close()

    def stats(self) -> QueueStats:
        return QueueStats(
            submitted=self._counts["submitted"],
            completed=self._counts["completed"],
            failed=self._counts["failed"],
            in_flight=self._in_flight,
            waiting=self._counts["waiting"],
            attempts=self._counts["attempts"],
            retries=self._counts["retries"],
            rate_limited=self._counts["rate_limited"],
            prompt_tokens=self._usage.prompt_tokens,
            output_tokens=self._usage.output_tokens,
            cost_usd=round(self._cost, 9),
            concurrency_limit=self._limit.current,
            budget_exhausted=self._exhausted,
        )

    @property
    def budget_exhausted(self) -> bool:
        return self._exhausted

    def price_of(self, model: str) -> ModelPrice | None:
        """The price of ``model``: an exact entry, else the longest entry it starts with
        (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``)."""
        if model in self.prices:
            return self.prices[model]
        prefixes = [name for name in self.prices if model.startswith(name)]
        return self.prices[max(prefixes, key=len)] if prefixes else None

    # --- one attempt ---------------------------------------------------------------------

    async def _attempt(self, request: GenerationRequest[ModelT], key: str) -> Generation[ModelT]:
        self._check_budget(request, key)
        await self._wait_for_pause()
        waited_from = self._clock.monotonic()
        self._counts["waiting"] += 1
        key_slot = self._key_semaphore(key)
        try:
            if key_slot is not None:
                await key_slot.acquire()
            try:
                epoch = await self._limit.acquire()
            except BaseException:
                if key_slot is not None:
                    key_slot.release()
                raise
        finally:
            self._counts["waiting"] -= 1
        try:
            reserved = await self._admit(request, key, waited_from)
            return await self._call(request, key, epoch, reserved)
        finally:
            self._limit.release()
            if key_slot is not None:
                key_slot.release()

    async def _admit(self, request: GenerationRequest[Any], key: str, waited_from: float) -> int:
        """The last checks before a call (holding its slots): rates, budget, breaker.

        Returns the tokens reserved in the token bucket; gives them back when refused.
        """
        reserved = 0
        try:
            reserved = await self._take_rate(request)
            self._m.queue_wait.observe(self._clock.monotonic() - waited_from)
            self._check_budget(request, key)  # the budget may have run out while we waited
            self.breaker.before_call()
        except CircuitOpenError as exc:
            self._outcome(key, "circuit_open")
            self._settle_tokens(reserved, 0)
            if self._last_failure is not None and "last_error" not in exc.details:
                # Without the cause a user only learns "repeated failures", not what failed.
                exc.message = f"{exc.message}; last failure: {self._last_failure}"
                exc.args = (exc.message,)
                exc.details["last_error"] = self._last_failure
            raise
        except BaseException:
            self._settle_tokens(reserved, 0)
            raise
        return reserved

    async def _take_rate(self, request: GenerationRequest[Any]) -> int:
        """Wait for the request and token rates; return the tokens reserved for the call."""
        if self._request_bucket is not None:
            await self._request_bucket.take(1)
        if self._token_bucket is None:
            return 0
        reserved = estimate_tokens(request.prompt, request.system, request.max_output_tokens)
        await self._token_bucket.take(reserved)
        return reserved

    async def _call(
        self, request: GenerationRequest[ModelT], key: str, epoch: int, reserved: int
    ) -> Generation[ModelT]:
        self._counts["attempts"] += 1
        self._in_flight += 1
        started = time.perf_counter()
        try:
            generation = await self._generate(request)
        except asyncio.CancelledError:
            self.breaker.record_neutral()
            self._outcome(key, "cancelled")
            self._settle_tokens(reserved, 0)
            raise
        except Exception as exc:
            self._on_failure(exc, key, epoch)
            self._settle_tokens(reserved, 0)
            raise
        finally:
            self._in_flight -= 1
            self._child(self._m.duration, key).observe(time.perf_counter() - started)
        self._settle_tokens(reserved, generation.usage.total_tokens)
        self.breaker.record_success()
        self._limit.on_success()
        self._heed(generation.rate_limit)
        self._account(generation)
        self._outcome(key, "ok")
        return generation

    async def _generate(self, request: GenerationRequest[ModelT]) -> Generation[ModelT]:
        if self.call_timeout_s is None:
            return await self.provider.generate(request)
        try:
            async with asyncio.timeout(self.call_timeout_s):
                return await self.provider.generate(request)
        except TimeoutError as exc:
            raise ProviderTimeoutError(
                f"{self.provider.name} call took longer than {self.call_timeout_s} s "
                "(llm.timeout_s)",
                provider=self.provider.name,
                model=self.provider.model,
                request_id=request.request_id,
            ) from exc

    def _settle_tokens(self, reserved: int, used: int) -> None:
        """Replace the estimate taken from the token bucket by what the call really used."""
        if self._token_bucket is not None and reserved:
            self._token_bucket.give_back(reserved - used)

    def _heed(self, hint: RateLimitHint | None) -> None:
        """The server says a limit is spent: start nothing new until it refills."""
        if hint is None or not hint.exhausted or not hint.reset_s:
            return
        pause = min(hint.reset_s, self.max_retry_after_s)
        self._paused_until = max(self._paused_until, self._clock.monotonic() + pause)

    def _on_failure(self, exc: Exception, key: str, epoch: int) -> None:
        outcome = _outcome_of(exc)
        self._outcome(key, outcome)
        if isinstance(exc, RateLimitedError):
            self._counts["rate_limited"] += 1
            self.breaker.record_neutral()  # rate limiting is the limiter's job, not the breaker's
            if self._limit.on_overload(epoch):
                _log.info(
                    "llm concurrency reduced after a rate limit",
                    limit=self._limit.current,
                    provider=self.provider.name,
                )
            pause = retry_after_seconds(exc, now=self._clock.now())
            if pause and pause <= self.max_retry_after_s:
                self._paused_until = max(self._paused_until, self._clock.monotonic() + pause)
        elif isinstance(exc, RETRYABLE):
            self._last_failure = str(exc)
            self.breaker.record_failure()
        else:
            self.breaker.record_neutral()

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: prometheus' own lookup costs microseconds."""
        cache_key = (metric._name, *labels)
        child = self._children.get(cache_key)
        if child is None:
            child = self._children[cache_key] = metric.labels(*labels)
        return child

    def _outcome(self, key: str, outcome: str) -> None:
        self._child(self._m.requests, self.provider.name, self.provider.model, key, outcome).inc()

    def _account(self, generation: Generation[Any]) -> None:
        usage = generation.usage
        self._usage = self._usage + usage
        self._child(self._m.tokens, generation.model, "prompt").inc(usage.prompt_tokens)
        self._child(self._m.tokens, generation.model, "output").inc(usage.output_tokens)
        price = self.price_of(generation.model) or self.price_of(self.provider.model)
        if price is not None:
            cost = price.cost(usage)
            self._cost += cost
            self._child(self._m.cost, generation.model).inc(cost)
        if not self._warned and (
            self.budget.used_fraction(self._cost, self._usage.total_tokens)
            >= self.budget.warn_fraction
        ):
            self._warned = True
            _log.warning(
                "llm budget nearly spent; new calls stop at the limit", **self._budget_details()
            )

    def _check_budget(self, request: GenerationRequest[Any], key: str) -> None:
        budget = self.budget
        over_usd = budget.max_usd is not None and self._cost >= budget.max_usd
        over_tokens = (
            budget.max_tokens is not None and self._usage.total_tokens >= budget.max_tokens
        )
        if not (over_usd or over_tokens):
            return
        if not self._exhausted:
            _log.warning("llm budget exhausted; refusing new calls", **self._budget_details())
        self._exhausted = True
        self._outcome(key, "budget")
        limit = (
            f"${budget.max_usd:.4f} (llm.budget_usd)"
            if over_usd
            else f"{budget.max_tokens} tokens (llm.budget_tokens)"
        )
        raise BudgetExceededError(
            f"the LLM budget of {limit} is spent (${self._cost:.4f}, "
            f"{self._usage.total_tokens} tokens so far); no new calls are made. "
            "Raise the budget and resume to continue",
            request_id=request.request_id,
            **self._budget_details(),
        )

    def _budget_details(self) -> dict[str, Any]:
        return {
            "spent_usd": round(self._cost, 6),
            "spent_tokens": self._usage.total_tokens,
            "budget_usd": self.budget.max_usd,
            "budget_tokens": self.budget.max_tokens,
        }

    async def _wait_for_pause(self) -> None:
        while (remaining := self._paused_until - self._clock.monotonic()) > 0:
            await self._clock.sleep_async(remaining)

    def _key_semaphore(self, key: str) -> asyncio.Semaphore | None:
        bound = self._per_key_bounds.get(key)
        if bound is None:
            return None
        if key not in self._per_key:
            self._per_key[key] = asyncio.Semaphore(bound)
        return self._per_key[key]

    def _note_retry(
        self,
        request: GenerationRequest[Any],
        key: str,
        attempt: int,
        exc: Exception,
        delay: float,
    ) -> None:
        reason = _outcome_of(exc)
        self._counts["retries"] += 1
        self._child(self._m.retries, reason).inc()
        _log.info(
            "llm call failed transiently; transport retry scheduled",
            request_id=request.request_id,
            key=key,
            attempt=attempt,
            reason=reason,
            delay_s=round(delay, 3),
        )

    def __repr__(self) -> str:
        return f"LlmQueue({self.provider!r}, limit={self._limit.current})"


def _outcome_of(exc: BaseException) -> str:
    outcomes: tuple[tuple[type[BaseException], str], ...] = (
        (RateLimitedError, "rate_limited"),
        (ProviderServerError, "server_error"),
        (ProviderTimeoutError, "timeout"),
        (ProviderConnectionError, "connection"),
        (InvalidResponseError, "invalid_response"),
        (ProviderAuthError, "auth"),
        (ProviderRequestError, "request_error"),
        (BudgetExceededError, "budget"),
        (ProviderError, "provider_error"),
    )
    return next((name for kind, name in outcomes if isinstance(exc, kind)), "error")
