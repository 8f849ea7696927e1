"""The replay provider: records answers to cassettes and replays them byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atomlab.llm import (
    CassetteMissError,
    GenerationRequest,
    InvalidResponseError,
    OfflineProvider,
    ReplayProvider,
)
from tests.llm.conftest import Triage


def _request(prompt: str = "vacancy at (3, 4)") -> GenerationRequest[Triage]:
    return GenerationRequest(prompt=prompt, schema=Triage, system="You triage STM defects.")


async def test_record_then_replay_is_byte_identical(tmp_path: Path) -> None:
    inner = OfflineProvider()
    recorder = ReplayProvider(tmp_path, inner=inner, model="gemini-2.5-flash")
    recorded = await recorder.generate(_request())
    player = ReplayProvider(tmp_path, model="gemini-2.5-flash")
    replayed = await player.generate(_request())
    assert replayed.raw_text == recorded.raw_text
    assert replayed.value == recorded.value
    assert replayed.usage == recorded.usage
    assert (recorder.recorded, player.replayed, inner.calls) == (1, 1, 1)


async def test_a_recorded_entry_is_not_recorded_twice(tmp_path: Path) -> None:
    inner = OfflineProvider()
    recorder = ReplayProvider(tmp_path, inner=inner)
    await recorder.generate(_request())
    await recorder.generate(_request())
    assert inner.calls == 1
    assert recorder.recorded == 1


async def test_a_miss_in_replay_mode_names_the_key_and_folder(tmp_path: Path) -> None:
    player = ReplayProvider(tmp_path, model="m")
    request = _request("never recorded")
    with pytest.raises(CassetteMissError) as caught:
        await player.generate(request)
    key = player.key_for(request)
    assert key in caught.value.message
    assert str(tmp_path) in caught.value.message
    assert caught.value.details["key"] == key


async def test_cassettes_of_another_model_do_not_match(tmp_path: Path) -> None:
    await ReplayProvider(tmp_path, inner=OfflineProvider(), model="a").generate(_request())
    with pytest.raises(CassetteMissError):
        await ReplayProvider(tmp_path, model="b").generate(_request())


async def test_a_tampered_entry_is_reported_not_replayed(tmp_path: Path) -> None:
    recorder = ReplayProvider(tmp_path, inner=OfflineProvider(), model="m")
    await recorder.generate(_request())
    path = recorder.path_for(recorder.key_for(_request()))
    entry = json.loads(path.read_text())
    entry["raw_text"] = entry["raw_text"] + " "
    path.write_text(json.dumps(entry))
    with pytest.raises(InvalidResponseError, match="corrupt"):
        await ReplayProvider(tmp_path, model="m").generate(_request())


async def test_record_mode_rerecords_a_corrupt_entry(tmp_path: Path) -> None:
    inner = OfflineProvider()
    recorder = ReplayProvider(tmp_path, inner=inner, model="m")
    first = await recorder.generate(_request())
    recorder.path_for(recorder.key_for(_request())).write_text("{not json")
    second = await recorder.generate(_request())
    assert second.raw_text == first.raw_text
    assert inner.calls == 2
