"""The runner: pipelining, bounds, ordered output, errors, strictness, resume and its guards."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.errors import InterruptedRunError, TerminatedError
from atomlab.engine import (
    MappingError,
    PipelineRunner,
    ProcessingError,
    ResponseCache,
    ResumeRefusedError,
    RunOptions,
    RunPaths,
    load_pipeline,
    sample_input,
)
from atomlab.llm import (
    GenerationRequest,
    InvalidResponseError,
    LlmQueue,
    OfflineProvider,
    ProviderServerError,
    ReplayProvider,
)
from tests.engine.conftest import FakeProvider, tiny_pipeline, write_items

WAIT_S = 10.0  # generous deadline so a broken overlap fails instead of hanging


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def _run(pipeline: Any, provider: Any, src: Path, out: Path, **options: Any) -> Any:
    cache = options.pop("cache", None)
    queue = options.pop("queue", None)
    runner = PipelineRunner(
        pipeline,
        provider,
        cache=cache,
        queue=queue,
        options=RunOptions(write_metrics=False, **options),
    )
    return await runner.run(src, out)


@pytest.mark.parametrize("name", ["service-evolution", "defect-triage"])
async def test_shipped_pipelines_run_offline_and_every_item_is_ok(
    name: str, tmp_path: Path
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(sample_input(name).read_bytes())
    summary = await _run(load_pipeline(name), OfflineProvider(), src, tmp_path / "out.jsonl")
    records = _lines(tmp_path / "out.jsonl")
    assert summary.status == "complete"
    assert summary.ok == len(records) == 4
    assert all(r["pipeline"] == name and r["schema_version"] == "1.1" for r in records)
    if name == "service-evolution":
        assert records[0]["levels"][0]["entry"]["name"] == "Foundational"
        assert len(records[0]["levels"]) == 5
        mapping = records[0]["levels"][0]["stages"]["mapping"]
        assert set(mapping["catalogues"]) == {"applications", "technologies", "data"}
        ids = {s["id"] for s in mapping["sources"]}
        assert set(mapping["catalogues"]["data"]) == ids


async def test_output_is_byte_identical_at_any_concurrency(tiny: Any, tmp_path: Path) -> None:
    src = write_items(tmp_path / "in.jsonl", 12)
    outputs = []
    for concurrency in (1, 3, 16):
        out = tmp_path / f"out-{concurrency}.jsonl"
        await _run(tiny, FakeProvider(), src, out, concurrency=concurrency)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]


async def test_output_keeps_input_order_when_items_finish_out_of_order(
    tiny: Any, tmp_path: Path
) -> None:
    src = write_items(tmp_path / "in.jsonl", 3)
    release_first = asyncio.Event()
    finished_others = 0

    async def hook(request: GenerationRequest[Any]) -> None:
        nonlocal finished_others
        if request.request_id.split(":")[1] == "item-000":
            await asyncio.wait_for(release_first.wait(), WAIT_S)
        elif request.request_id.endswith("mapping.tools@4"):
            finished_others += 1
            if finished_others == 2:
                release_first.set()

    await _run(tiny, FakeProvider(hook), src, tmp_path / "out.jsonl", concurrency=8)
    assert [r["id"] for r in _lines(tmp_path / "out.jsonl")] == ["item-000", "item-001", "item-002"]


async def test_next_level_generation_overlaps_previous_level_mapping(tmp_path: Path) -> None:
    """Level 1's mapping only finishes once level 2's generation has started."""
    src = write_items(tmp_path / "in.jsonl", 1)
    level2_started = asyncio.Event()

    async def hook(request: GenerationRequest[Any]) -> None:
        stage = request.request_id.split(":", 2)[2]
        if stage == "things@2":
            level2_started.set()
        if stage == "mapping.tools@1":
            await asyncio.wait_for(level2_started.wait(), WAIT_S)

    summary = await _run(tiny_pipeline(), FakeProvider(hook), src, tmp_path / "o.jsonl")
    assert summary.ok == 1


async def test_concurrent_levels_per_item_never_exceed_the_bound(tmp_path: Path) -> None:
    pipeline = tiny_pipeline(fanout={"catalogue": "levels", "max_concurrent": 2})
    src = write_items(tmp_path / "in.jsonl", 1)
    active: set[str] = set()
    peak = 0

    async def hook(request: GenerationRequest[Any]) -> None:
        nonlocal peak
        stage = request.request_id.split(":", 2)[2]
        level = stage.split("@")[-1] if "@" in stage else None
        if level is None:
            return
        if stage.startswith("things"):
            active.add(level)
            peak = max(peak, len(active))
        for _ in range(3):
            await asyncio.sleep(0)  # let other levels try to start
        if stage.startswith("mapping"):
            active.discard(level)

    await _run(pipeline, FakeProvider(hook), src, tmp_path / "o.jsonl", concurrency=16)
    assert peak == 2


async def test_failed_stage_names_item_and_stage_and_goes_to_rejects(
    tiny: Any, tmp_path: Path
) -> None:
    src = write_items(tmp_path / "in.jsonl", 3)

    async def hook(request: GenerationRequest[Any]) -> None:
        if request.request_id.endswith(":item-001:things@3"):
            raise InvalidResponseError("answer does not match Things", request_id="req-42")

    out = tmp_path / "out.jsonl"
    summary = await _run(tiny, FakeProvider(hook), src, out)
    assert [r["id"] for r in _lines(out)] == ["item-000", "item-002"]
    rejects = _lines(RunPaths(out).rejects)
    assert rejects[0]["id"] == "item-001"
    assert rejects[0]["stage"] == "things@3"
    assert rejects[0]["request_id"] == "req-42"
    assert summary.rejected == 1
    assert summary.failed[0].item_id == "item-001"


async def test_mapping_failure_is_a_mapping_error_with_context(tiny: Any, tmp_path: Path) -> None:
    src = write_items(tmp_path / "in.jsonl", 2)

    async def hook(request: GenerationRequest[Any]) -> None:
        if request.request_id.endswith(":item-000:mapping.tools@2"):
            raise InvalidResponseError("unknown catalogue id T9")

    with pytest.raises(MappingError) as caught:
        await _run(tiny, FakeProvider(hook), src, tmp_path / "o.jsonl", strict=True)
    assert caught.value.item_id == "item-000"
    assert caught.value.stage == "mapping.tools@2"
    assert caught.value.exit_code == 3


async def test_strict_mode_stops_and_the_item_can_be_resumed(tiny: Any, tmp_path: Path) -> None:
    src = write_items(tmp_path / "in.jsonl", 4)
    out = tmp_path / "out.jsonl"
    broken = True

    async def hook(request: GenerationRequest[Any]) -> None:
        if broken and request.request_id.endswith(":item-002:summary"):
            raise InvalidResponseError("not JSON")

    with pytest.raises(ProcessingError) as caught:
        await _run(tiny, FakeProvider(hook), src, out, strict=True, concurrency=1)
    assert not out.exists()
    rejects = _lines(RunPaths(out).rejects)
    assert [(r["id"], r["stage"]) for r in rejects] == [("item-002", "summary")]
    assert caught.value.details["rejects"] == str(RunPaths(out).rejects)
    broken = False
    summary = await _run(tiny, FakeProvider(hook), src, out, strict=True, resume=True)
    expected = tmp_path / "expected.jsonl"
    await _run(tiny, FakeProvider(), src, expected)
    assert out.read_bytes() == expected.read_bytes()
    assert summary.resumed_items == 2
    assert not RunPaths(out).rejects.exists()  # the resumed run had no failure


async def test_transport_failure_in_strict_mode_keeps_its_exit_code(
    tiny: Any, tmp_path: Path
) -> None:
    src = write_items(tmp_path / "in.jsonl", 2)

    async def hook(request: GenerationRequest[Any]) -> None:
        raise ProviderServerError("HTTP 503", status=503)

    with pytest.raises(ProviderServerError) as caught:
        await _run(tiny, FakeProvider(hook), src, tmp_path / "o.jsonl", strict=True)
    assert caught.value.exit_code == 5
    assert caught.value.details["stage"] == "summary"


async def test_stop_request_leaves_a_state_that_resumes_exactly(tiny: Any, tmp_path: Path) -> None:
    src = write_items(tmp_path / "in.jsonl", 10)
    out = tmp_path / "out.jsonl"
    expected = tmp_path / "expected.jsonl"
    await _run(tiny, FakeProvider(), src, expected)
    runner: PipelineRunner | None = None

    async def hook(request: GenerationRequest[Any]) -> None:
        if request.request_id.endswith(":item-004:things@2"):
            assert runner is not None
            runner.request_stop("interrupt")
            await asyncio.sleep(WAIT_S)  # cancelled by the stop

    first = FakeProvider(hook)
    runner = PipelineRunner(tiny, first, options=RunOptions(concurrency=2, write_metrics=False))
    with pytest.raises(InterruptedRunError) as caught:
        await runner.run(src, out)
    assert caught.value.exit_code == 130
    assert RunPaths(out).part.exists() and not out.exists()
    second = FakeProvider()
    summary = await _run(tiny, second, src, out, resume=True)
    assert out.read_bytes() == expected.read_bytes()
    assert summary.resumed_items >= 1
    done_before = {r.request_id.split(":", 1)[1] for r in first.requests[:-1]}
    repeated = done_before & {r.request_id.split(":", 1)[1] for r in second.requests}
    assert len(repeated) <= 2  # at most the calls cut off in flight


async def test_terminate_request_raises_terminated(tiny: Any, tmp_path: Path) -> None:
    src = write_items(tmp_path / "in.jsonl", 3)
    runner: PipelineRunner | None = None

    async def hook(request: GenerationRequest[Any]) -> None:
        assert runner is not None
        runner.request_stop("terminate")

    runner = PipelineRunner(tiny, FakeProvider(hook), options=RunOptions(write_metrics=False))
    with pytest.raises(TerminatedError):
        await runner.run(src, tmp_path / "out.jsonl")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("input", "the input changed"),
        ("model", "setting model changed ('fake-1' → 'fake-2')"),
        ("strict", "setting strict changed (False → True)"),
        ("pipeline", "the pipeline 'tiny' changed"),
    ],
)
async def test_resume_refuses_when_the_run_changed(
    change: str, message: str, tmp_path: Path
) -> None:
    src = write_items(tmp_path / "in.jsonl", 2)
    out = tmp_path / "out.jsonl"
    await _run(tiny_pipeline(), FakeProvider(), src, out)
    pipeline, provider, strict = tiny_pipeline(), FakeProvider(), False
    if change == "input":
        write_items(src, 3)
    elif change == "model":
        provider = FakeProvider(model="fake-2")
    elif change == "strict":
        strict = True
    else:
        pipeline = tiny_pipeline(description="changed")
    with pytest.raises(ResumeRefusedError) as caught:
        await _run(pipeline, provider, src, out, resume=True, strict=strict)
    assert message in caught.value.message
    assert caught.value.exit_code == 2


async def test_resume_without_a_journal_is_refused(tiny: Any, tmp_path: Path) -> None:
    src = write_items(tmp_path / "in.jsonl", 1)
    with pytest.raises(ResumeRefusedError, match="nothing to resume"):
        await _run(tiny, FakeProvider(), src, tmp_path / "out.jsonl", resume=True)


async def test_the_journal_is_named_after_the_output(tiny: Any, tmp_path: Path) -> None:
    src = write_items(tmp_path / "in.jsonl", 1)
    for name in ("a.jsonl", "b.jsonl"):
        await _run(tiny, FakeProvider(), src, tmp_path / name)
    assert (tmp_path / "a.jsonl.journal").exists() and (tmp_path / "b.jsonl.journal").exists()


async def test_a_corrupt_cache_entry_costs_one_call_not_the_run(tiny: Any, tmp_path: Path) -> None:
    src = write_items(tmp_path / "in.jsonl", 2)
    cache_dir = tmp_path / "cache"
    await _run(tiny, FakeProvider(), src, tmp_path / "a.jsonl", cache=ResponseCache(cache_dir))
    victim = sorted((cache_dir / "entries").glob("*/*.json"))[0]
    victim.write_text('{"truncated', encoding="utf-8")
    provider = FakeProvider()
    cache = ResponseCache(cache_dir)
    summary = await _run(tiny, provider, src, tmp_path / "b.jsonl", cache=cache)
    assert summary.status == "complete"
    assert len(provider.requests) == 1
    assert cache.corrupt == 1
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


async def test_output_is_identical_with_queue_on_or_off_through_replay(
    tiny: Any, tmp_path: Path
) -> None:
    """Parity: record once, then replay with the queue on and off at several concurrencies."""
    src = write_items(tmp_path / "in.jsonl", 6)
    cassettes = tmp_path / "cassettes"
    recorder = ReplayProvider(cassettes, inner=OfflineProvider())
    await _run(tiny, recorder, src, tmp_path / "recorded.jsonl")
    outputs = set()
    for use_queue in (False, True):
        for concurrency in (1, 8):
            player = ReplayProvider(cassettes, model=recorder.model)
            queue = LlmQueue(player, concurrency=concurrency) if use_queue else None
            out = tmp_path / f"out-{use_queue}-{concurrency}.jsonl"
            await _run(tiny, player, src, out, queue=queue, concurrency=concurrency)
            outputs.add(out.read_bytes())
    assert len(outputs) == 1


async def test_item_without_levels_still_produces_a_record(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(
        json.dumps({"scan_id": "s1", "sample": "HOPG", "size_nm": 10, "defects": []}) + "\n"
    )
    summary = await _run(load_pipeline("defect-triage"), OfflineProvider(), src, tmp_path / "o.j")
    assert summary.ok == 1
    assert _lines(tmp_path / "o.j")[0]["levels"] == []


async def test_resume_after_a_kill_during_the_final_rename_reports_complete(
    tiny: Any, tmp_path: Path
) -> None:
    src = write_items(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    await _run(tiny, FakeProvider(), src, out)
    before = out.read_bytes()
    from atomlab.engine.journal import Journal

    journal = Journal(RunPaths(out).journal)
    journal.set_status("running")  # as if killed right after the rename
    journal.close()
    summary = await _run(tiny, FakeProvider(), src, out, resume=True)
    assert summary.status == "complete" and summary.calls == 0
    assert out.read_bytes() == before


async def test_a_fresh_run_replaces_an_old_output(tiny: Any, tmp_path: Path) -> None:
    src = write_items(tmp_path / "in.jsonl", 2)
    out = tmp_path / "out.jsonl"
    await _run(tiny, FakeProvider(), src, out)
    src.write_text("")
    summary = await _run(tiny, FakeProvider(), src, out)
    assert summary.status == "complete" and summary.items == 0
    assert out.read_bytes() == b""


async def test_a_stage_bound_limits_that_stage_s_calls_at_once(tmp_path: Path) -> None:
    stages = [dict(s) for s in tiny_pipeline().spec.model_dump()["stages"]]
    stages[2]["max_concurrent"] = 1  # the map stage
    pipeline = tiny_pipeline(stages=stages)
    src = write_items(tmp_path / "in.jsonl", 4)
    active = peak = 0

    async def hook(request: GenerationRequest[Any]) -> None:
        nonlocal active, peak
        if ":mapping." not in request.request_id:
            return
        active += 1
        peak = max(peak, active)
        for _ in range(3):
            await asyncio.sleep(0)
        active -= 1

    await _run(pipeline, FakeProvider(hook), src, tmp_path / "o.jsonl", concurrency=16)
    assert peak == 1


async def test_a_mapping_failure_with_one_level_slot_rejects_the_item_without_hanging(
    tmp_path: Path,
) -> None:
    pipeline = tiny_pipeline(fanout={"catalogue": "levels", "max_concurrent": 1})
    src = write_items(tmp_path / "in.jsonl", 2)

    async def hook(request: GenerationRequest[Any]) -> None:
        if request.request_id.endswith(":item-000:mapping.tools@1"):
            raise InvalidResponseError("unknown id")

    out = tmp_path / "out.jsonl"
    summary = await asyncio.wait_for(_run(pipeline, FakeProvider(hook), src, out), WAIT_S)
    assert (summary.ok, summary.rejected) == (1, 1)
    assert _lines(RunPaths(out).rejects)[0]["stage"] == "mapping.tools@1"
