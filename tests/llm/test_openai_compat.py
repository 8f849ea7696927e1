"""The OpenAI-compatible provider at the HTTP level (httpx.MockTransport sees real requests)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.resilience import RetryPolicy
from atomlab.llm import (
    GenerationRequest,
    InvalidResponseError,
    LlmQueue,
    OpenAICompatProvider,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitedError,
)
from tests.llm.conftest import Triage

GOOD = {
    "defect_class": "vacancy",
    "severity": 3,
    "confidence": 0.8,
    "rationale": "a missing atom in the lattice",
    "tags": ["point"],
    "score": {"level": 2, "label": "minor"},
}

Handler = Callable[[httpx.Request], httpx.Response]


def completion(content: str, *, finish: str = "stop") -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                }
            ],
            "usage": {"prompt_tokens": 31, "completion_tokens": 17, "total_tokens": 48},
        },
    )


def provider(handler: Handler, **kw: object) -> OpenAICompatProvider:
    return OpenAICompatProvider(
        model="llama3.1",
        base_url="http://127.0.0.1:11434/v1",
        transport=httpx.MockTransport(handler),
        **kw,  # type: ignore[arg-type]
    )


def request() -> GenerationRequest[Triage]:
    return GenerationRequest(
        prompt="Classify: dark spot 0.3 nm deep",
        schema=Triage,
        system="You triage STM defects.",
        max_output_tokens=256,
        request_id="req-42",
    )


async def test_sends_a_chat_completion_with_a_json_schema_response_format() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return completion(json.dumps(GOOD))

    generation = await provider(handler, api_key="sk-test").generate(request())

    (sent,) = seen
    assert sent.method == "POST"
    assert str(sent.url) == "http://127.0.0.1:11434/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.headers["x-client-request-id"] == "req-42"
    body = json.loads(sent.content)
    assert body["model"] == "llama3.1"
    assert body["messages"] == [
        {"role": "system", "content": "You triage STM defects."},
        {"role": "user", "content": "Classify: dark spot 0.3 nm deep"},
    ]
    assert body["temperature"] == 0.0
    assert body["max_tokens"] == 256
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["name"] == "Triage"
    assert body["response_format"]["json_schema"]["schema"] == Triage.model_json_schema()
    assert generation.value == Triage.model_validate(GOOD)
    assert (generation.usage.prompt_tokens, generation.usage.output_tokens) == (31, 17)
    assert generation.request_id == "req-42"


async def test_no_key_means_no_authorization_header() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return completion(json.dumps(GOOD))

    await provider(handler).generate(request())
    assert "authorization" not in seen[0].headers


async def test_429_carries_the_retry_after_header() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"Retry-After": "12"}, text="rate limited")

    with pytest.raises(RateLimitedError) as caught:
        await provider(handler).generate(request())
    assert caught.value.retry_after == "12"
    assert caught.value.details["request_id"] == "req-42"


async def test_retry_after_ms_is_converted_to_seconds() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(429, headers={"retry-after-ms": "1500"})

    with pytest.raises(RateLimitedError) as caught:
        await provider(handler).generate(request())
    assert float(caught.value.retry_after or 0) == 1.5


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_a_retryable_server_error(status: int) -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(status, text="upstream broke")

    with pytest.raises(ProviderServerError, match=str(status)):
        await provider(handler).generate(request())


async def test_401_is_an_auth_error() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": "Incorrect API key"}})

    with pytest.raises(ProviderAuthError, match="Incorrect API key"):
        await provider(handler).generate(request())


async def test_a_timeout_becomes_a_provider_timeout() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow", request=req)

    with pytest.raises(ProviderTimeoutError, match=r"llm\.timeout_s"):
        await provider(handler).generate(request())


async def test_a_refused_connection_names_the_base_url() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=req)

    with pytest.raises(ProviderConnectionError, match=r"127\.0\.0\.1:11434"):
        await provider(handler).generate(request())


async def test_a_body_that_is_not_json_is_an_invalid_response() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>proxy error</html>")

    with pytest.raises(InvalidResponseError, match=r"not a chat completion"):
        await provider(handler).generate(request())


async def test_malformed_json_content_is_an_invalid_response_with_the_raw_text() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return completion('{"defect_class": "vacancy", ')

    with pytest.raises(InvalidResponseError, match=r"not JSON") as caught:
        await provider(handler).generate(request())
    assert caught.value.raw_text == '{"defect_class": "vacancy", '


async def test_an_answer_cut_at_max_tokens_says_so() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return completion('{"defect_class": "vac', finish="length")

    with pytest.raises(InvalidResponseError, match="max_output_tokens"):
        await provider(handler).generate(request())


async def test_through_the_queue_429s_are_waited_out_exactly_and_then_succeed() -> None:
    statuses = [429, 429, 503]
    sent: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        sent.append(req)
        if statuses:
            status = statuses.pop(0)
            headers = {"Retry-After": "3"} if status == 429 else {}
            return httpx.Response(status, headers=headers)
        return completion(json.dumps(GOOD))

    clock = FakeClock()
    queue = LlmQueue(
        provider(handler),
        clock=clock,
        retry=RetryPolicy(max_attempts=5, initial_delay_s=0.5, max_delay_s=0.5, clock=clock),
    )
    generation = await queue.submit(request())
    assert generation.attempts == 4
    assert len(sent) == 4
    # Retry-After waited exactly (3 s, twice); the 5xx back-off is jittered within 0..0.5 s.
    assert clock.sleeps[:2] == [3.0, 3.0]
    assert len(clock.sleeps) == 3
    assert 0.0 <= clock.sleeps[2] <= 0.5


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("2.5", 2.5)],
)
def test_rate_limit_reset_durations_are_parsed(header: str, seconds: float) -> None:
    from atomlab.llm.openai_compat import rate_limit_hint

    hint = rate_limit_hint(
        httpx.Headers({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": header})
    )
    assert hint is not None and hint.exhausted
    assert hint.reset_s == pytest.approx(seconds)


async def test_a_spent_request_quota_in_the_headers_pauses_new_calls_until_reset() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        response = completion(json.dumps(GOOD))
        response.headers.update(
            {
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "1.5s",
                "x-ratelimit-remaining-tokens": "9000",
                "x-ratelimit-reset-tokens": "80ms",
            }
        )
        return response

    clock = FakeClock()
    queue = LlmQueue(provider(handler), clock=clock)
    first = await queue.submit(request())
    assert first.rate_limit is not None
    assert (first.rate_limit.remaining_requests, first.rate_limit.remaining_tokens) == (0, 9000)
    assert clock.sleeps == []
    await queue.submit(request())
    assert clock.sleeps == [1.5]  # waited for the quota to refill instead of collecting a 429


async def test_without_rate_limit_headers_there_is_no_hint() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return completion(json.dumps(GOOD))

    assert (await provider(handler).generate(request())).rate_limit is None
