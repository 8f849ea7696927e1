"""LLM services: providers for structured generation and the resilient request queue.

A :class:`Provider` turns a :class:`GenerationRequest` (prompt + pydantic schema) into a
validated :class:`Generation`; :func:`make_provider` picks Gemini, an OpenAI-compatible server,
or the offline/replay programs from the settings. See docs/llm.md.
"""

from atomlab.llm.factory import make_provider, resolve_provider_name
from atomlab.llm.gemini import GeminiProvider
from atomlab.llm.offline import OfflineProvider
from atomlab.llm.openai_compat import OpenAICompatProvider
from atomlab.llm.provider import (
    Generation,
    GenerationRequest,
    InvalidResponseError,
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
    error_for_status,
    is_retryable,
    new_request_id,
    parse_output,
    schema_json,
)
from atomlab.llm.queue import (
    DEFAULT_PRICES,
    Budget,
    BudgetExceededError,
    LlmQueue,
    ModelPrice,
    QueueStats,
    QuotaExhaustedError,
)
from atomlab.llm.ratelimit import RateLimits
from atomlab.llm.replay import CassetteMissError, ReplayProvider

__all__ = [
    "DEFAULT_PRICES",
    "Budget",
    "BudgetExceededError",
    "CassetteMissError",
    "GeminiProvider",
    "Generation",
    "GenerationRequest",
    "InvalidResponseError",
    "LlmQueue",
    "ModelPrice",
    "OfflineProvider",
    "OpenAICompatProvider",
    "Provider",
    "ProviderAuthError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderRequestError",
    "ProviderServerError",
    "ProviderTimeoutError",
    "QueueStats",
    "QuotaExhaustedError",
    "RateLimitHint",
    "RateLimitedError",
    "RateLimits",
    "ReplayProvider",
    "RetryableProviderError",
    "TokenUsage",
    "error_for_status",
    "is_retryable",
    "make_provider",
    "new_request_id",
    "parse_output",
    "resolve_provider_name",
    "schema_json",
]
