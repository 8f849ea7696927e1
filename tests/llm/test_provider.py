"""The provider port: error classification, output parsing, request fingerprints."""

from __future__ import annotations

import pytest

from atomlab.core.errors import ConfigError, ConnectionFailedError, ExitCode
from atomlab.llm import (
    GenerationRequest,
    InvalidResponseError,
    ProviderAuthError,
    ProviderRequestError,
    ProviderServerError,
    RateLimitedError,
    error_for_status,
    is_retryable,
    parse_output,
)
from tests.llm.conftest import Triage

WHERE = {"provider": "p", "model": "m", "request_id": "r-1"}


@pytest.mark.parametrize(
    ("status", "kind", "retryable", "exit_code"),
    [
        (429, RateLimitedError, True, ExitCode.CONNECTION),
        (500, ProviderServerError, True, ExitCode.CONNECTION),
        (503, ProviderServerError, True, ExitCode.CONNECTION),
        (408, ProviderServerError, True, ExitCode.CONNECTION),
        (401, ProviderAuthError, False, ExitCode.INVALID_INPUT),
        (403, ProviderAuthError, False, ExitCode.INVALID_INPUT),
        (400, ProviderRequestError, False, ExitCode.INVALID_INPUT),
        (404, ProviderRequestError, False, ExitCode.INVALID_INPUT),
        (422, ProviderRequestError, False, ExitCode.INVALID_INPUT),
    ],
)
def test_http_status_maps_to_an_error_that_says_whether_to_retry(
    status: int, kind: type[Exception], retryable: bool, exit_code: ExitCode
) -> None:
    error = error_for_status(status, "body text", retry_after="2", **WHERE)
    assert isinstance(error, kind)
    assert is_retryable(error) is retryable
    assert error.exit_code == exit_code
    assert error.details["request_id"] == "r-1"
    assert error.details["status"] == status


def test_rate_limit_carries_retry_after_for_the_retry_policy() -> None:
    error = error_for_status(429, "slow down", retry_after="7", **WHERE)
    assert isinstance(error, RateLimitedError)
    assert isinstance(error, ConnectionFailedError)  # what core RetryPolicy retries by default
    assert error.retry_after == "7"
    assert "7 s" in error.message


def test_auth_error_is_a_config_error_pointing_at_the_key() -> None:
    error = error_for_status(401, "bad key", **WHERE)
    assert isinstance(error, ConfigError)
    assert "key" in error.message


def test_parse_output_names_the_bad_field() -> None:
    with pytest.raises(InvalidResponseError) as caught:
        parse_output('{"defect_class": "crater"}', Triage, **WHERE)
    assert "defect_class" in caught.value.message
    assert caught.value.raw_text == '{"defect_class": "crater"}'
    assert not is_retryable(caught.value)


def test_parse_output_says_when_the_answer_is_not_json() -> None:
    with pytest.raises(InvalidResponseError, match="is not JSON"):
        parse_output("Sure! Here is your JSON:", Triage, **WHERE)


def test_fingerprint_depends_on_content_not_on_request_id() -> None:
    a = GenerationRequest(prompt="x", schema=Triage, request_id="1")
    b = GenerationRequest(prompt="x", schema=Triage, request_id="2")
    c = GenerationRequest(prompt="y", schema=Triage, request_id="1")
    d = GenerationRequest(prompt="x", schema=Triage, temperature=0.7)
    fp = a.fingerprint(provider="p", model="m")
    assert fp == b.fingerprint(provider="p", model="m")
    assert fp != c.fingerprint(provider="p", model="m")
    assert fp != d.fingerprint(provider="p", model="m")
    assert fp != a.fingerprint(provider="p", model="other")


def test_requests_get_distinct_ids_by_default() -> None:
    a = GenerationRequest(prompt="x", schema=Triage)
    b = GenerationRequest(prompt="x", schema=Triage)
    assert a.request_id != b.request_id


def test_json_schema_keeps_field_order_and_is_a_fresh_copy_each_time() -> None:
    request = GenerationRequest(prompt="x", schema=Triage)
    first = request.json_schema()
    assert list(first["properties"]) == list(Triage.model_fields)
    first["properties"].clear()
    assert request.json_schema() == Triage.model_json_schema()
