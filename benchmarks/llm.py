"""Benchmark: the LLM request queue against a bare asyncio semaphore (the baseline).

Run: ``uv run python benchmarks/llm.py [--latency-ms 20] [--calls-per-slot 30]``. Prints:

1. overhead per call: queue vs a direct call to a provider that does no work;
2. throughput against concurrency with a fixed simulated latency: calls/s as a fraction of the
   ideal C/L, for the bare semaphore and for the queue;
3. a 429 flood: a simulated server that admits K concurrent calls and answers 429 with
   ``Retry-After`` beyond that; the queue starts at 64, with a fixed limit (baseline) and
   adaptive (AIMD). Reports the 429 share and throughput against the ideal K/L;
4. a request quota (RPM) enforced by the simulated server: AIMD alone against the client-side
   ``requests_per_minute`` bucket. Reports the achieved share of the quota and the 429 share.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from pydantic import BaseModel

from atomlab.core.logging import configure_logging
from atomlab.core.resilience import CircuitBreaker, RetryPolicy
from atomlab.llm import (
    Generation,
    GenerationRequest,
    LlmQueue,
    RateLimitedError,
    RateLimits,
    TokenUsage,
)


class Answer(BaseModel):
    ok: bool


MAX_ATTEMPTS = 1_000  # the floods below measure throughput, not the retry cap
TEXT = '{"ok":true}'
VALUE = Answer(ok=True)


class QuotaServer:
    """A server quota of ``per_minute`` requests (token bucket, one second of burst)."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate, 1.0)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def admit(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class SimulatedProvider:
    """Sleeps ``latency_s``; with ``capacity`` set, answers 429 above that many calls at once."""

    name = "simulated"
    model = "offline-v1"

    def __init__(
        self,
        latency_s: float,
        capacity: int | None = None,
        retry_after_s: float = 0.05,
        quota: QuotaServer | None = None,
    ) -> None:
        self.latency_s = latency_s
        self.capacity = capacity
        self.quota = quota
        self.retry_after_s = retry_after_s
        self.active = 0
        self.calls = 0
        self.rejected = 0

    async def generate(self, request: GenerationRequest[Any]) -> Generation[Any]:
        self.calls += 1
        over_quota = self.quota is not None and not self.quota.admit()
        if over_quota or (self.capacity is not None and self.active >= self.capacity):
            self.rejected += 1
            await asyncio.sleep(0.001)  # a rejection still costs a round trip
            raise RateLimitedError("HTTP 429", retry_after=self.retry_after_s)
        self.active += 1
        try:
            if self.latency_s > 0:
                await asyncio.sleep(self.latency_s)
        finally:
            self.active -= 1
        return Generation(
            value=VALUE,
            usage=TokenUsage(10, 5),
            request_id=request.request_id,
            model=self.model,
            provider=self.name,
            raw_text=TEXT,
        )


def _request(i: int) -> GenerationRequest[Answer]:
    return GenerationRequest(prompt=f"p{i}", schema=Answer, request_id=f"r{i}")


def _queue(provider: SimulatedProvider, concurrency: int, **kw: Any) -> LlmQueue:
    return LlmQueue(
        provider,
        concurrency=concurrency,
        retry=RetryPolicy(max_attempts=MAX_ATTEMPTS, initial_delay_s=0.01, max_delay_s=0.2),
        breaker=CircuitBreaker("bench", failure_threshold=10_000),
        **kw,
    )


async def overhead(calls: int) -> tuple[float, float]:
    provider = SimulatedProvider(0.0)
    requests = [_request(i) for i in range(calls)]
    start = time.perf_counter()
    for request in requests:
        await provider.generate(request)
    direct = (time.perf_counter() - start) / calls
    queue = _queue(provider, 1)
    start = time.perf_counter()
    for request in requests:
        await queue.submit(request)
    queued = (time.perf_counter() - start) / calls
    return direct, queued


async def bare_semaphore(concurrency: int, calls: int, latency_s: float) -> float:
    provider = SimulatedProvider(latency_s)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await provider.generate(_request(i))

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    return calls / (time.perf_counter() - start)


async def through_queue(concurrency: int, calls: int, latency_s: float) -> float:
    queue = _queue(SimulatedProvider(latency_s), concurrency)
    start = time.perf_counter()
    await asyncio.gather(*(queue.submit(_request(i)) for i in range(calls)))
    return calls / (time.perf_counter() - start)


async def flood(
    capacity: int, calls: int, latency_s: float, *, adaptive: bool
) -> tuple[float, float, int]:
    provider = SimulatedProvider(latency_s, capacity=capacity)
    queue = _queue(provider, 64, adaptive=adaptive)
    start = time.perf_counter()
    await asyncio.gather(*(queue.submit(_request(i)) for i in range(calls)))
    rate = calls / (time.perf_counter() - start)
    return rate, provider.rejected / provider.calls, queue.stats().concurrency_limit


async def quota(
    per_minute: float, calls: int, latency_s: float, *, client_rpm: bool
) -> tuple[float, float, int]:
    server = QuotaServer(per_minute)
    provider = SimulatedProvider(latency_s, quota=server, retry_after_s=0.02)
    limits = RateLimits(requests_per_minute=per_minute) if client_rpm else None
    queue = _queue(provider, 64, rate_limits=limits)
    start = time.perf_counter()
    results = await asyncio.gather(
        *(queue.submit(_request(i)) for i in range(calls)), return_exceptions=True
    )
    elapsed = time.perf_counter() - start
    failed = sum(isinstance(r, Exception) for r in results)
    # The quota's ideal: the first second's burst at once, the rest at the quota's rate.
    ideal = max(calls - failed - server.capacity, 0) / server.rate + latency_s
    return ideal / elapsed, provider.rejected / provider.calls, failed


async def main(latency_ms: float, calls_per_slot: int) -> None:
    configure_logging("ERROR", "console")  # one line per retry would drown the figures
    latency_s = latency_ms / 1000
    direct, queued = await overhead(20_000)
    print("1. overhead per call (provider doing no work, 20,000 sequential calls)")
    print(f"   direct call      {direct * 1e6:8.1f} µs")
    print(f"   through queue    {queued * 1e6:8.1f} µs   overhead {(queued - direct) * 1e6:.1f} µs")
    print()
    print(f"2. throughput vs concurrency, latency {latency_ms:g} ms (fraction of ideal C/L)")
    print("   C     bare semaphore   queue   queue/bare")
    for concurrency in (1, 4, 16, 64):
        calls = concurrency * calls_per_slot
        ideal = concurrency / latency_s
        bare = await bare_semaphore(concurrency, calls, latency_s) / ideal
        ours = await through_queue(concurrency, calls, latency_s) / ideal
        print(f"   {concurrency:<5} {bare:10.1%}     {ours:8.1%}   {ours / bare:6.2f}")
    print()
    capacity = 8
    print(f"3. 429 flood: server admits {capacity} at once, queue starts at 64 (600 calls)")
    for label, adaptive in (("fixed limit (baseline)", False), ("adaptive (AIMD)", True)):
        rate, rejected, limit = await flood(capacity, 600, latency_s, adaptive=adaptive)
        print(
            f"   {label:<24} throughput {rate / (capacity / latency_s):6.1%} of ideal K/L, "
            f"429 share {rejected:6.1%}, final limit {limit}"
        )
    print()
    rpm = 3_000.0
    print(f"4. server quota {rpm:,.0f} requests/min, concurrency 64, 300 calls")
    for label, client_rpm in (("no client rate (AIMD only)", False), ("requests_per_minute", True)):
        achieved, rejected, failed = await quota(rpm, 300, latency_s, client_rpm=client_rpm)
        print(
            f"   {label:<27} achieved {achieved:6.1%} of the quota, 429 share {rejected:6.1%}, "
            f"{failed} gave up"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--calls-per-slot", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(main(args.latency_ms, args.calls_per_slot))
