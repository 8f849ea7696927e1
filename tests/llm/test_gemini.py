"""The Gemini provider through the real google-genai SDK, with httpx.MockTransport underneath."""

from __future__ import annotations

import json

import httpx
import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.resilience import RetryPolicy
from atomlab.llm import (
    GeminiProvider,
    GenerationRequest,
    InvalidResponseError,
    LlmQueue,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitedError,
)
from tests.llm.conftest import Triage

pytest.importorskip("google.genai")

GOOD = {
    "defect_class": "adatom",
    "severity": 2,
    "confidence": 0.6,
    "rationale": "a bright protrusion on a terrace",
    "tags": ["point"],
    "score": {"level": 1, "label": "minor"},
}


def answer(text: str, *, finish: str = "STOP") -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "candidates": [
                {"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": finish}
            ],
            "usageMetadata": {
                "promptTokenCount": 40,
                "candidatesTokenCount": 20,
                "thoughtsTokenCount": 5,
                "totalTokenCount": 65,
            },
            "modelVersion": "gemini-2.5-flash",
            "responseId": "resp-1",
        },
    )


def error(status: int, state: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"code": status, "message": f"{state} happened", "status": state}}
    return httpx.Response(status, json=body, headers=headers)


def provider(handler: object) -> GeminiProvider:
    return GeminiProvider(
        api_key="test-key",
        model="gemini-2.5-flash",
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
    )


def request() -> GenerationRequest[Triage]:
    return GenerationRequest(
        prompt="Classify: bright spot",
        schema=Triage,
        system="You triage STM defects.",
        temperature=0.2,
        max_output_tokens=512,
        request_id="req-g1",
    )


async def test_sends_generate_content_with_the_json_schema_and_key() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return answer(json.dumps(GOOD))

    generation = await provider(handler).generate(request())

    (sent,) = seen
    assert sent.method == "POST"
    assert sent.url.path.endswith("/models/gemini-2.5-flash:generateContent")
    assert sent.headers["x-goog-api-key"] == "test-key"
    assert sent.headers["x-request-id"] == "req-g1"
    body = json.loads(sent.content)
    assert body["contents"] == [{"parts": [{"text": "Classify: bright spot"}], "role": "user"}]
    assert body["systemInstruction"]["parts"] == [{"text": "You triage STM defects."}]
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == Triage.model_json_schema()
    assert config["temperature"] == 0.2
    assert config["maxOutputTokens"] == 512
    assert generation.value == Triage.model_validate(GOOD)
    # thinking tokens are billed as output
    assert (generation.usage.prompt_tokens, generation.usage.output_tokens) == (40, 25)
    assert generation.model == "gemini-2.5-flash"


async def test_the_sdk_makes_exactly_one_http_call_per_attempt() -> None:
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return error(503, "UNAVAILABLE")

    with pytest.raises(ProviderServerError):
        await provider(handler).generate(request())
    assert len(calls) == 1  # the SDK's own retry loop is off


async def test_429_carries_retry_after() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return error(429, "RESOURCE_EXHAUSTED", {"Retry-After": "9"})

    with pytest.raises(RateLimitedError, match="RESOURCE_EXHAUSTED") as caught:
        await provider(handler).generate(request())
    assert caught.value.retry_after == "9"


async def test_429_without_header_uses_the_retry_info_detail() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        body = {
            "error": {
                "code": 429,
                "message": "Quota exceeded",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"},
                ],
            }
        }
        return httpx.Response(429, json=body)

    with pytest.raises(RateLimitedError) as caught:
        await provider(handler).generate(request())
    assert caught.value.retry_after == "37"


async def test_403_is_an_auth_error() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return error(403, "PERMISSION_DENIED")

    with pytest.raises(ProviderAuthError):
        await provider(handler).generate(request())


async def test_a_timeout_becomes_a_provider_timeout() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=req)

    with pytest.raises(ProviderTimeoutError):
        await provider(handler).generate(request())


async def test_a_refused_connection_is_retryable() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    with pytest.raises(ProviderConnectionError):
        await provider(handler).generate(request())


async def test_malformed_json_is_an_invalid_response() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return answer('{"defect_class": ')

    with pytest.raises(InvalidResponseError, match="not JSON"):
        await provider(handler).generate(request())


async def test_an_empty_answer_cut_at_max_tokens_says_so() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"candidates": [{"content": {"parts": []}, "finishReason": "MAX_TOKENS"}]}
        )

    with pytest.raises(InvalidResponseError, match="max_output_tokens"):
        await provider(handler).generate(request())


async def test_through_the_queue_total_http_attempts_equal_max_attempts() -> None:
    calls: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req)
        return error(500, "INTERNAL")

    clock = FakeClock()
    queue = LlmQueue(provider(handler), clock=clock, retry=RetryPolicy(max_attempts=3, clock=clock))
    with pytest.raises(ProviderServerError):
        await queue.submit(request())
    assert len(calls) == 3
    assert queue.stats().retries == 2
