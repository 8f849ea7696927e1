"""The engine behind the LLM queue: 429 floods, budgets and the wording of its logs."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.errors import PolicyRefusedError
from atomlab.core.logging import configure_logging
from atomlab.core.resilience import RetryPolicy
from atomlab.engine import EngineMetrics, PipelineRunner, RunOptions, RunPaths
from atomlab.llm import (
    Budget,
    GenerationRequest,
    InvalidResponseError,
    LlmQueue,
    QuotaExhaustedError,
    RateLimitedError,
)
from tests.engine.conftest import FakeProvider, tiny_pipeline, write_items

ENGINE_SRC = Path(__file__).resolve().parents[2] / "src" / "atomlab" / "engine"
# Generation is one-shot: only transport retries exist, and logs must never say otherwise.
GENERATION_RETRY = re.compile(r"regenerat|retry(ing)? (the )?generation|re-?ask", re.IGNORECASE)
ANY_RETRY = re.compile(r"retr(y|ies|ied|ying)", re.IGNORECASE)


def _queue(provider: Any, **kw: Any) -> LlmQueue:
    clock = FakeClock()
    retry = RetryPolicy(max_attempts=6, initial_delay_s=0.1, clock=clock)
    return LlmQueue(provider, concurrency=4, retry=retry, clock=clock, **kw)


async def _run(provider: Any, src: Path, out: Path, **kw: Any) -> tuple[Any, EngineMetrics]:
    metrics = EngineMetrics()
    runner = PipelineRunner(
        tiny_pipeline(), provider, metrics=metrics, options=RunOptions(write_metrics=False), **kw
    )
    return await runner.run(src, out), metrics


async def test_a_flood_of_429s_is_retried_and_the_output_is_unchanged(tmp_path: Path) -> None:
    src = write_items(tmp_path / "in.jsonl", 4)
    await _run(FakeProvider(), src, tmp_path / "expected.jsonl")
    flood = 0

    async def hook(request: GenerationRequest[Any]) -> None:
        nonlocal flood
        if flood < 12:
            flood += 1
            raise RateLimitedError("HTTP 429", retry_after="0.5", status=429)

    provider = FakeProvider(hook)
    summary, metrics = await _run(provider, src, tmp_path / "out.jsonl", queue=_queue(provider))
    assert summary.ok == 4
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "expected.jsonl").read_bytes()
    retried = sum(
        s.value for m in metrics.retries.collect() for s in m.samples if s.name.endswith("_total")
    )
    assert retried == 12


async def test_an_exhausted_budget_stops_the_run_cleanly_and_resumably(tmp_path: Path) -> None:
    src = write_items(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out.jsonl"
    provider = FakeProvider()
    queue = _queue(provider, budget=Budget(max_tokens=400))
    with pytest.raises(PolicyRefusedError) as caught:
        await _run(provider, src, out, queue=queue)
    assert caught.value.type_name == "budget_exceeded"
    assert RunPaths(out).journal.exists() and not out.exists()
    resumed = PipelineRunner(
        tiny_pipeline(), FakeProvider(), options=RunOptions(resume=True, write_metrics=False)
    )
    assert (await resumed.run(src, out)).status == "complete"
    expected = tmp_path / "expected.jsonl"
    await _run(FakeProvider(), src, expected)
    assert out.read_bytes() == expected.read_bytes()


async def test_a_quota_spent_for_longer_than_the_queue_waits_stops_the_run_resumably(
    tmp_path: Path,
) -> None:
    """Not one rejected item after another: those would be final, and 'resume later' a no-op."""
    src = write_items(tmp_path / "in.jsonl", 6)
    out = tmp_path / "out.jsonl"

    async def quota_spent(request: GenerationRequest[Any]) -> None:
        raise RateLimitedError("HTTP 429", retry_after="3600", status=429)

    provider = FakeProvider(quota_spent)
    with pytest.raises(QuotaExhaustedError) as caught:
        await _run(provider, src, out, queue=_queue(provider))
    assert "resume later" in caught.value.message
    assert not out.exists() and not RunPaths(out).rejects.exists()
    resumed = PipelineRunner(
        tiny_pipeline(), FakeProvider(), options=RunOptions(resume=True, write_metrics=False)
    )
    summary = await resumed.run(src, out)
    assert (summary.status, summary.ok, summary.rejected) == ("complete", 6, 0)


async def test_logs_never_speak_of_a_retry_when_none_happens(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)
    try:
        src = write_items(tmp_path / "in.jsonl", 3)

        async def hook(request: GenerationRequest[Any]) -> None:
            if request.request_id.endswith("item-001:summary"):
                raise InvalidResponseError("answer is not JSON")

        provider = FakeProvider(hook)
        await _run(provider, src, tmp_path / "out.jsonl", queue=_queue(provider))
    finally:
        configure_logging("WARNING", "console")
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    assert any(line.get("event") == "engine.item_rejected" for line in lines)
    for line in lines:
        assert not ANY_RETRY.search(json.dumps(line)), line


def test_engine_log_messages_never_promise_a_generation_retry() -> None:
    """Static lint: every string literal in a log call of the engine's source."""
    offenders = []
    for path in sorted(ENGINE_SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in {"debug", "info", "warning", "error", "exception"}:
                continue
            for arg in ast.walk(node):
                text = arg.value if isinstance(arg, ast.Constant) else None
                if isinstance(text, str) and GENERATION_RETRY.search(text):
                    offenders.append(f"{path.name}:{node.lineno}: {text!r}")
    assert offenders == []
    assert GENERATION_RETRY.search("will regenerate the answer")  # the lint can fail


async def test_a_rejection_is_logged_with_item_stage_model_and_request_id(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:

        async def hook(request: GenerationRequest[Any]) -> None:
            if request.request_id.endswith("item-000:things@2"):
                raise InvalidResponseError("not JSON", request_id="req-7")

        await _run(FakeProvider(hook), write_items(tmp_path / "in.jsonl", 1), tmp_path / "o.j")
    finally:
        configure_logging("WARNING", "console")
    events = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    rejected = next(e for e in events if e["event"] == "engine.item_rejected")
    assert {k: rejected[k] for k in ("item_id", "stage", "model", "request_id", "cause")} == {
        "item_id": "item-000",
        "stage": "things@2",
        "model": "fake-1",
        "request_id": "req-7",
        "cause": "invalid_response",
    }


def _inflight(metrics: EngineMetrics) -> float | None:
    return metrics.metrics.registry.get_sample_value("atomlab_engine_queue_inflight")


async def test_the_inflight_gauge_counts_calls_in_flight_not_free_slots(tmp_path: Path) -> None:
    metrics = EngineMetrics()
    seen: list[float] = []
    three_in = asyncio.Event()
    started = 0

    async def hook(request: GenerationRequest[Any]) -> None:
        nonlocal started
        started += 1
        if started == 3:
            three_in.set()
        if started <= 3:
            await asyncio.wait_for(three_in.wait(), 10)
            seen.append(_inflight(metrics))

    runner = PipelineRunner(
        tiny_pipeline(),
        FakeProvider(hook),
        metrics=metrics,
        options=RunOptions(concurrency=3, write_metrics=False),
    )
    await runner.run(write_items(tmp_path / "in.jsonl", 4), tmp_path / "out.jsonl")
    assert seen[0] == 3  # three calls in flight, zero free slots
    assert _inflight(metrics) == 0
