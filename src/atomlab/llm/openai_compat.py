"""An OpenAI-compatible chat-completions provider over httpx: OpenAI, Ollama, vLLM, llama.cpp.

Structured output uses ``response_format = {"type": "json_schema", ...}``, which all four
servers accept. ``llm.base_url`` points at the server (``http://127.0.0.1:11434/v1`` for Ollama,
``http://127.0.0.1:8000/v1`` for vLLM, ``http://127.0.0.1:8080/v1`` for llama.cpp); the key, when
the server needs one, comes from ``OPENAI_API_KEY``. No retries happen here::

    provider = OpenAICompatProvider(base_url="http://127.0.0.1:11434/v1", model="llama3.1")
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx

from atomlab.llm.provider import (
    Generation,
    GenerationRequest,
    InvalidResponseError,
    ModelT,
    ProviderConnectionError,
    ProviderTimeoutError,
    RateLimitHint,
    TokenUsage,
    error_for_status,
    parse_output,
)

OPENAI_PROVIDER_NAME = "openai"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TIMEOUT_S = 60.0
REQUEST_ID_HEADER = "X-Client-Request-Id"
_SCHEMA_NAME_CHARS = 64
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class OpenAICompatProvider:
    """Structured generation through ``POST {base_url}/chat/completions``."""

    name = OPENAI_PROVIDER_NAME

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.model = model
        self.base_url = (base_url or DEFAULT_OPENAI_BASE_URL).rstrip("/")
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout_s, transport=transport
        )

    def request_body(self, request: GenerationRequest[Any]) -> dict[str, Any]:
        """The JSON body sent for ``request``."""
        messages = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": request.temperature,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema.__name__[:_SCHEMA_NAME_CHARS],
                    "schema": request.json_schema(),
                },
            },
        }
        if request.max_output_tokens is not None:
            body["max_tokens"] = request.max_output_tokens
        return body

    async def generate(self, request: GenerationRequest[ModelT]) -> Generation[ModelT]:
        where: dict[str, Any] = dict(
            provider=self.name, model=self.model, request_id=request.request_id
        )
        started = time.perf_counter()
        try:
            response = await self._http.post(
                "/chat/completions",
                json=self.request_body(request),
                headers={REQUEST_ID_HEADER: request.request_id},
            )
        except httpx.TimeoutException as exc:
            raise ProviderTimeoutError(
                f"{self.base_url} did not answer within {self.timeout_s} s (llm.timeout_s)",
                **where,
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderConnectionError(
                f"{self.base_url} could not be reached ({exc!r}); is the server running? "
                "(llm.base_url)",
                **where,
            ) from exc
        if response.status_code >= 400:
            raise error_for_status(
                response.status_code,
                response.text,
                retry_after=_retry_after(response.headers),
                **where,
            )
        text, usage = self._content_of(response, where)
        value = parse_output(text, request.schema, **where)
        return Generation(
            value=value,
            usage=usage,
            request_id=request.request_id,
            model=self.model,
            provider=self.name,
            raw_text=text,
            latency_s=time.perf_counter() - started,
            rate_limit=rate_limit_hint(response.headers),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _content_of(
        self, response: httpx.Response, where: dict[str, Any]
    ) -> tuple[str, TokenUsage]:
        try:
            payload = response.json()
            choice = payload["choices"][0]
            message = choice["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise InvalidResponseError(
                f"{self.base_url} sent a body that is not a chat completion: "
                f"{response.text[:200]!r}",
                raw_text=response.text,
                **where,
            ) from exc
        content = message.get("content")
        if not isinstance(content, str) or not content:
            refusal = message.get("refusal")
            reason = f"refused: {refusal}" if refusal else f"finish {choice.get('finish_reason')}"
            raise InvalidResponseError(f"the model returned no content ({reason})", **where)
        if choice.get("finish_reason") == "length":
            raise InvalidResponseError(
                "the answer was cut off at max_output_tokens; raise it for this stage",
                raw_text=content,
                **where,
            )
        usage = payload.get("usage") or {}
        return content, TokenUsage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
        )

    def __repr__(self) -> str:
        return f"OpenAICompatProvider(base_url={self.base_url!r}, model={self.model!r})"


def _retry_after(headers: httpx.Headers) -> str | None:
    """``Retry-After`` as sent, or ``retry-after-ms`` converted to seconds."""
    if "retry-after-ms" in headers:
        try:
            return json.dumps(float(headers["retry-after-ms"]) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    return None if value is None else str(value)


def rate_limit_hint(headers: httpx.Headers) -> RateLimitHint | None:
    """The ``x-ratelimit-*`` headers OpenAI (and vLLM/LiteLLM proxies) send, or None."""
    requests = _int_header(headers, "x-ratelimit-remaining-requests")
    tokens = _int_header(headers, "x-ratelimit-remaining-tokens")
    if requests is None and tokens is None:
        return None
    resets = {
        kind: _duration_s(headers.get(f"x-ratelimit-reset-{kind}"))
        for kind in ("requests", "tokens")
    }
    exhausted = [resets[k] for k, left in (("requests", requests), ("tokens", tokens)) if left == 0]
    candidates = [r for r in (exhausted or resets.values()) if r is not None]
    reset = max(candidates) if exhausted and candidates else min(candidates, default=None)
    return RateLimitHint(remaining_requests=requests, remaining_tokens=tokens, reset_s=reset)


def _int_header(headers: httpx.Headers, name: str) -> int | None:
    try:
        return int(headers[name])
    except (KeyError, ValueError):
        return None


def _duration_s(text: str | None) -> float | None:
    """``"6m0s"``, ``"1.5s"``, ``"20ms"`` → seconds (Go duration format); None if unreadable."""
    if not text:
        return None
    parts = _DURATION_PART.findall(text.strip())
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        try:
            return max(float(text), 0.0)
        except ValueError:
            return None
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
