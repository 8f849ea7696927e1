"""The provider port: one structured-generation call (prompt + pydantic schema -> validated object).

Every LLM backend (Gemini, an OpenAI-compatible server, the offline and replay programs) is a
:class:`Provider`; callers build a :class:`GenerationRequest` and get a :class:`Generation`::

    request = GenerationRequest(prompt="Classify this defect: ...", schema=Triage)
    generation = await provider.generate(request)
    generation.value.severity, generation.usage.total_tokens, generation.request_id

Failures are :class:`ProviderError` subclasses that are also core errors (so the CLI maps them to
exit codes) and say whether a retry can help: rate limits, server errors, timeouts and lost
connections are retryable; auth failures, bad requests and invalid responses are not. An answer
that does not match the schema is never asked for again ("one-shot generation"): only transport
failures are retried, by exactly one retry loop (the queue's).
"""

from __future__ import annotations

import functools
import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from atomlab.core.errors import (
    AtomlabError,
    ConfigError,
    ConnectionFailedError,
    InvalidInputError,
    OperationTimeoutError,
    UnavailableError,
)

ModelT = TypeVar("ModelT", bound=BaseModel)
ModelT_co = TypeVar("ModelT_co", bound=BaseModel, covariant=True)

DEFAULT_TEMPERATURE = 0.0
RAW_TEXT_PREVIEW_CHARS = 200
SCHEMA_CACHE_SIZE = 1024


@functools.lru_cache(maxsize=SCHEMA_CACHE_SIZE)
def schema_json(schema: type[BaseModel]) -> str:
    """The JSON text of ``schema`` 's JSON schema (compact, pydantic's key order), cached.

    pydantic rebuilds a model's JSON schema on every call (about 1 ms for a small nested model),
    which would dominate the cost of a cached or offline call.
    """
    # Key order is kept: property order is part of the schema (models generate in that order).
    return json.dumps(schema.model_json_schema(), separators=(",", ":"), ensure_ascii=False)


def new_request_id() -> str:
    """A fresh request id (32 hex characters)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class TokenUsage:
    """Tokens one call (or a sum of calls) consumed."""

    prompt_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens, self.output_tokens + other.output_tokens
        )


@dataclass(frozen=True, kw_only=True)
class GenerationRequest(Generic[ModelT]):
    """What to generate: the prompt, the pydantic model the answer must validate against, options.

    ``request_id`` travels with the call (logs, ``--trace-ids``, provider headers); pass a
    stable one (e.g. ``"item-7:features:2"``) when you want to find the call again.
    """

    prompt: str
    schema: type[ModelT]
    system: str | None = None
    temperature: float = DEFAULT_TEMPERATURE
    max_output_tokens: int | None = None
    request_id: str = field(default_factory=new_request_id)

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of :attr:`schema` (what structured-output APIs get); a fresh copy."""
        loaded: dict[str, Any] = json.loads(schema_json(self.schema))
        return loaded

    def fingerprint(self, *, provider: str, model: str) -> str:
        """SHA-256 over everything that determines the answer (not the request id).

        Two requests with the same fingerprint should get the same answer from a deterministic
        backend; the replay cassettes and the engine's cache key on it.
        """
        canonical = json.dumps(
            {
                "provider": provider,
                "model": model,
                "system": self.system,
                "prompt": self.prompt,
                "temperature": self.temperature,
                "max_output_tokens": self.max_output_tokens,
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        digest = hashlib.sha256(canonical.encode("utf-8"))
        digest.update(b"\x00")
        digest.update(schema_json(self.schema).encode("utf-8"))
        return digest.hexdigest()


@dataclass(frozen=True)
class RateLimitHint:
    """What the server's rate-limit headers said (``x-ratelimit-remaining-*``, ``-reset-*``).

    ``reset_s`` is the wait until the exhausted limit (or the soonest, when none is) refills.
    """

    remaining_requests: int | None = None
    remaining_tokens: int | None = None
    reset_s: float | None = None

    @property
    def exhausted(self) -> bool:
        return self.remaining_requests == 0 or self.remaining_tokens == 0


@dataclass(frozen=True, kw_only=True)
class Generation(Generic[ModelT_co]):
    """A validated answer plus what it cost and where it came from."""

    value: ModelT_co
    usage: TokenUsage
    request_id: str
    model: str
    provider: str
    raw_text: str
    latency_s: float = 0.0
    attempts: int = 1
    rate_limit: RateLimitHint | None = None


@runtime_checkable
class Provider(Protocol):
    """A backend that answers :class:`GenerationRequest` s with validated objects.

    Implementations raise :class:`ProviderError` subclasses and never retry on their own.
    """

    name: str
    model: str

    async def generate(self, request: GenerationRequest[ModelT]) -> Generation[ModelT]:
        """Make one call; return the validated answer or raise a :class:`ProviderError`."""
        ...


# --- errors -------------------------------------------------------------------------------


class ProviderError(AtomlabError):
    """A provider call failed. ``retryable`` says whether trying again can help.

    Every concrete subclass is also a core error (see the class bases) so it carries the right
    exit code; ``details`` name the provider, model, request id and HTTP status when known.
    """

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        model: str = "",
        request_id: str = "",
        status: int | None = None,
        **details: Any,
    ) -> None:
        extra = {k: v for k, v in details.items() if v is not None}
        super().__init__(
            message,
            provider=provider,
            model=model,
            request_id=request_id,
            **({"status": status} if status is not None else {}),
            **extra,
        )
        self.provider = provider
        self.model = model
        self.request_id = request_id
        self.status = status


class RetryableProviderError(ProviderError, ConnectionFailedError):
    """A transient failure: the same request may succeed later."""

    retryable = True


class RateLimitedError(RetryableProviderError):
    """HTTP 429 / RESOURCE_EXHAUSTED. ``retry_after`` (seconds, or the raw header) is honoured."""

    type_name = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | str | None = None, **kw: Any) -> None:
        super().__init__(message, retry_after=retry_after, **kw)
        self.retry_after = retry_after


class ProviderServerError(RetryableProviderError):
    """HTTP 5xx (or 408/409): the provider failed; retry with back-off."""

    type_name = "provider_server_error"

    def __init__(self, message: str, *, retry_after: float | str | None = None, **kw: Any) -> None:
        super().__init__(message, retry_after=retry_after, **kw)
        self.retry_after = retry_after


class ProviderConnectionError(RetryableProviderError):
    """The provider could not be reached (refused, reset, DNS)."""

    type_name = "provider_connection_error"


class ProviderTimeoutError(ProviderError, OperationTimeoutError):
    """The call did not complete within ``llm.timeout_s``."""

    retryable = True
    type_name = "provider_timeout"


class ProviderAuthError(ProviderError, ConfigError):
    """HTTP 401/403: the API key is missing, wrong, or lacks access. Never retried."""

    type_name = "provider_auth_error"


class ProviderRequestError(ProviderError, InvalidInputError):
    """HTTP 400/404/422: the request itself is wrong (unknown model, bad schema). Never retried."""

    type_name = "provider_request_error"


class InvalidResponseError(ProviderError, UnavailableError):
    """The provider answered, but not with JSON matching the schema. Never asked again.

    ``raw_text`` keeps the answer (for the rejects file); ``errors`` the validation messages.
    """

    type_name = "invalid_response"

    def __init__(
        self, message: str, *, raw_text: str = "", errors: list[str] | None = None, **kw: Any
    ) -> None:
        super().__init__(message, errors=errors, **kw)
        self.raw_text = raw_text
        self.errors = errors or []


def is_retryable(exc: BaseException) -> bool:
    """True when trying the same request again can help (never for cancellation)."""
    return isinstance(exc, ProviderError) and exc.retryable


def error_for_status(
    status: int,
    body: str,
    *,
    provider: str,
    model: str,
    request_id: str,
    retry_after: str | None = None,
) -> ProviderError:
    """Map an HTTP error status to the :class:`ProviderError` that says what to do about it."""
    snippet = body.strip().replace("\n", " ")[:RAW_TEXT_PREVIEW_CHARS]
    where: dict[str, Any] = dict(
        provider=provider, model=model, request_id=request_id, status=status
    )
    if status == 429:
        wait = f"; the server asks to wait {retry_after} s" if retry_after else ""
        return RateLimitedError(
            f"{provider} rate limit hit (HTTP 429) for model {model!r}{wait}: {snippet}",
            retry_after=retry_after,
            **where,
        )
    if status in (401, 403):
        return ProviderAuthError(
            f"{provider} refused the API key (HTTP {status}): {snippet}; "
            "check the key in the environment (see docs/llm.md)",
            **where,
        )
    if status in (408, 409) or status >= 500:
        return ProviderServerError(
            f"{provider} server error (HTTP {status}): {snippet}", retry_after=retry_after, **where
        )
    if status == 404:
        return ProviderRequestError(
            f"{provider} does not know model {model!r} or the endpoint (HTTP 404): {snippet}; "
            "set llm.model (ATOMLAB_LLM__MODEL) to a model the server serves",
            **where,
        )
    return ProviderRequestError(
        f"{provider} rejected the request (HTTP {status}): {snippet}", **where
    )


def parse_output(
    text: str,
    schema: type[ModelT],
    *,
    provider: str,
    model: str,
    request_id: str,
) -> ModelT:
    """Validate the JSON ``text`` against ``schema``; raise :class:`InvalidResponseError` if not."""
    where: dict[str, Any] = dict(provider=provider, model=model, request_id=request_id)
    try:
        return schema.model_validate_json(text)
    except ValidationError as exc:
        errors = [
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        ]
        kind = "is not JSON" if _is_json_error(exc) else f"does not match {schema.__name__}"
        preview = text[:RAW_TEXT_PREVIEW_CHARS]
        raise InvalidResponseError(
            f"{provider} answer {kind}: {'; '.join(errors[:5])} (answer starts {preview!r})",
            raw_text=text,
            errors=errors,
            **where,
        ) from exc


def _is_json_error(exc: ValidationError) -> bool:
    return any(err["type"] == "json_invalid" for err in exc.errors())
