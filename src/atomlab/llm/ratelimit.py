"""Client-side request and token rates, so a batch stays under a provider's RPM/TPM quota.

Providers meter requests and tokens per minute and answer 429 past the quota; waiting here
before the call is cheaper than collecting 429s (which some providers count against the quota
too)::

    queue = LlmQueue(provider, rate_limits=RateLimits(requests_per_minute=1_000,
                                                      tokens_per_minute=200_000))

Tokens are estimated before the call (prompt characters / 4 + ``max_output_tokens``, the way
providers reserve them) and corrected with the real usage afterwards.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from atomlab.core.clock import Clock

SECONDS_PER_MINUTE = 60.0
CHARS_PER_TOKEN = 4
DEFAULT_OUTPUT_TOKENS_ESTIMATE = 1_024  # when a request sets no max_output_tokens
_SLACK = 1e-9  # float refill arithmetic may land a hair under the amount waited for


@dataclass(frozen=True)
class RateLimits:
    """Per-minute quotas to stay under; ``None`` means not limited."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be > 0 (or None for no limit), got {value}")


class TokenBucket:
    """Holds up to one second's worth of a per-minute rate and refills continuously.

    ``take(n)`` waits until the bucket holds ``n`` (or is full, when ``n`` is more than it can
    hold), then takes ``n``; the bucket may go into debt, so a request larger than the bucket
    still goes through and the next one waits longer. Waiters are served in arrival order.
    """

    def __init__(self, per_minute: float, clock: Clock) -> None:
        self.rate_per_s = per_minute / SECONDS_PER_MINUTE
        self.capacity = max(self.rate_per_s, 1.0)
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock.monotonic()
        self._turn = asyncio.Lock()

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    async def take(self, amount: float) -> float:
        """Take ``amount``; return the seconds waited."""
        need = min(amount, self.capacity)
        waited = 0.0
        async with self._turn:
            self._refill()
            while self._tokens + _SLACK < need:
                delay = (need - self._tokens) / self.rate_per_s
                await self._clock.sleep_async(delay)
                waited += delay
                self._refill()
            self._tokens -= amount
        return waited

    def give_back(self, amount: float) -> None:
        """Correct an estimate: positive gives tokens back, negative takes more (debt)."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens + amount)

    def _refill(self) -> None:
        now = self._clock.monotonic()
        elapsed = now - self._stamp
        if elapsed > 0:
            self._tokens = min(self.capacity, self._tokens + elapsed * self.rate_per_s)
            self._stamp = now


def estimate_tokens(prompt: str, system: str | None, max_output_tokens: int | None) -> int:
    """What a provider reserves for a call: the prompt's tokens plus the output ceiling."""
    prompt_tokens = (len(prompt) + len(system or "")) // CHARS_PER_TOKEN + 1
    return prompt_tokens + (max_output_tokens or DEFAULT_OUTPUT_TOKENS_ESTIMATE)
