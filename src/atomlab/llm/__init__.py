"""LLM services: providers for structured generation and the resilient request queue.

A :class:`Provider` turns a :class:`GenerationRequest` (prompt + pydantic schema) into a
validated :class:`Generation`; :func:`make_provider` picks Gemini, an OpenAI-compatible server,
or the offline/replay programs from the settings. See docs/llm.md.
"""

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
    RetryableProviderError,
    TokenUsage,
    error_for_status,
    is_retryable,
    new_request_id,
    parse_output,
)

__all__ = [
    "Generation",
    "GenerationRequest",
    "InvalidResponseError",
    "Provider",
    "ProviderAuthError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderRequestError",
    "ProviderServerError",
    "ProviderTimeoutError",
    "RateLimitedError",
    "RetryableProviderError",
    "TokenUsage",
    "error_for_status",
    "is_retryable",
    "new_request_id",
    "parse_output",
]
