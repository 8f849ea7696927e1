"""Gemini through ``google-genai`` (extra ``gemini``), with the SDK's own retries switched off.

The model id is a setting (``llm.model``, default ``gemini-2.5-flash``; Gemini 1.5 Pro is gone),
the key comes from ``GEMINI_API_KEY`` / ``GOOGLE_API_KEY``. The SDK is given our own
``httpx.AsyncClient`` (so tests put an ``httpx.MockTransport`` under the real SDK) and
``HttpRetryOptions(attempts=1)``: the queue is the only retry loop, so attempts are exactly
``llm.max_attempts``::

    provider = GeminiProvider(api_key=key, model="gemini-2.5-flash")
    generation = await provider.generate(GenerationRequest(prompt=..., schema=Triage))
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx

from atomlab.core.errors import UnavailableError
from atomlab.llm.provider import (
    Generation,
    GenerationRequest,
    InvalidResponseError,
    ModelT,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    TokenUsage,
    error_for_status,
    parse_output,
)

if TYPE_CHECKING:
    from google.genai import Client

GEMINI_PROVIDER_NAME = "gemini"
DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"
DEFAULT_TIMEOUT_S = 60.0
REQUEST_ID_HEADER = "x-request-id"
_SDK_NO_RETRIES = 1  # HttpRetryOptions.attempts: the original call only


class GeminiProvider:
    """Structured generation with Gemini's JSON-schema response mode."""

    name = GEMINI_PROVIDER_NAME

    def __init__(
        self,
        *,
        api_key: str,
        model: str = DEFAULT_GEMINI_MODEL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
        base_url: str | None = None,
    ) -> None:
        self.model = model
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout_s)
        self._client = _make_client(api_key, self._http, timeout_s, base_url)

    async def generate(self, request: GenerationRequest[ModelT]) -> Generation[ModelT]:
        from google.genai import types

        config = types.GenerateContentConfig(
            response_mime_type="application/json",
            response_json_schema=request.json_schema(),
            system_instruction=request.system,
            temperature=request.temperature,
            max_output_tokens=request.max_output_tokens,
            http_options=types.HttpOptions(headers={REQUEST_ID_HEADER: request.request_id}),
        )
        started = time.perf_counter()
        try:
            response = await self._client.aio.models.generate_content(
                model=self.model, contents=request.prompt, config=config
            )
        except Exception as exc:
            raise self._translate(exc, request) from exc
        text = self._text_of(response, request)
        value = parse_output(
            text,
            request.schema,
            provider=self.name,
            model=self.model,
            request_id=request.request_id,
        )
        return Generation(
            value=value,
            usage=_usage_of(response),
            request_id=request.request_id,
            model=response.model_version or self.model,
            provider=self.name,
            raw_text=text,
            latency_s=time.perf_counter() - started,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _text_of(self, response: Any, request: GenerationRequest[Any]) -> str:
        text = response.text
        if text:
            return str(text)
        feedback = getattr(response, "prompt_feedback", None)
        blocked = getattr(feedback, "block_reason", None)
        reason = f"prompt blocked: {blocked}" if blocked else "no candidates"
        if response.candidates:
            reason = f"finish reason {response.candidates[0].finish_reason}"
        hint = "; raise max_output_tokens" if "MAX_TOKENS" in reason else ""
        raise InvalidResponseError(
            f"gemini returned no text ({reason}){hint}",
            provider=self.name,
            model=self.model,
            request_id=request.request_id,
        )

    def _translate(self, exc: Exception, request: GenerationRequest[Any]) -> ProviderError:
        from google.genai import errors

        where: dict[str, Any] = dict(
            provider=self.name, model=self.model, request_id=request.request_id
        )
        if isinstance(exc, errors.APIError):
            headers = getattr(exc.response, "headers", None) or {}
            body = f"{exc.status or ''} {exc.message or ''}".strip()
            retry_after = headers.get("retry-after") or _retry_delay(exc.details)
            return error_for_status(int(exc.code), body, retry_after=retry_after, **where)
        if isinstance(exc, httpx.TimeoutException):
            return ProviderTimeoutError(
                f"gemini did not answer within {self.timeout_s} s (llm.timeout_s)", **where
            )
        if isinstance(exc, httpx.TransportError):
            return ProviderConnectionError(f"gemini could not be reached: {exc!r}", **where)
        if isinstance(exc, ProviderError):
            return exc
        return InvalidResponseError(f"gemini call failed unexpectedly: {exc!r}", **where)

    def __repr__(self) -> str:
        return f"GeminiProvider(model={self.model!r})"


def _make_client(
    api_key: str, http: httpx.AsyncClient, timeout_s: float, base_url: str | None
) -> Client:
    try:
        from google import genai
        from google.genai import types
    except ImportError as exc:
        raise UnavailableError(
            "the gemini provider needs google-genai; install the extra: "
            "pip install 'atomlab[gemini]' (or use llm.provider=offline)",
            extra="gemini",
        ) from exc
    options = types.HttpOptions(
        httpx_async_client=http,
        retry_options=types.HttpRetryOptions(attempts=_SDK_NO_RETRIES),
        timeout=int(timeout_s * 1000),
        base_url=base_url,
    )
    return genai.Client(api_key=api_key, http_options=options)


def _usage_of(response: Any) -> TokenUsage:
    meta = response.usage_metadata
    if meta is None:
        return TokenUsage()
    # Thinking tokens are billed as output.
    output = (meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0)
    return TokenUsage(prompt_tokens=meta.prompt_token_count or 0, output_tokens=output)


def _retry_delay(details: Any) -> str | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"retryDelay": "37s"``), if present.

    Gemini's 429s usually carry the wait there rather than in a ``Retry-After`` header.
    """
    error = details.get("error", {}) if isinstance(details, dict) else {}
    for item in error.get("details", []) if isinstance(error, dict) else []:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo"):
            delay = str(item.get("retryDelay", "")).strip()
            if delay.endswith("s") and delay[:-1].replace(".", "", 1).isdigit():
                return delay[:-1]
    return None
