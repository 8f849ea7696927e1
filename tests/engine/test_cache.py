"""The response cache: content addresses, SHA-256 checks on read, self-healing, validate/purge."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from atomlab.core.errors import NotFoundError
from atomlab.core.sqlite import connect
from atomlab.engine import ResponseCache, cache_key


class Answer(BaseModel):
    text: str


class AnswerV2(BaseModel):
    text: str
    score: int


def _key(**changes: object) -> str:
    base: dict[str, object] = {
        "provider": "offline",
        "model": "m",
        "prompt": "p",
        "system": None,
        "schema": Answer,
        "schema_version": "1.1",
        "temperature": 0.0,
    }
    base.update(changes)
    return cache_key(**base)  # type: ignore[arg-type]


def _filled(directory: Path, count: int) -> tuple[ResponseCache, list[str]]:
    cache = ResponseCache(directory)
    keys = [_key(prompt=f"prompt {n}") for n in range(count)]
    for n, key in enumerate(keys):
        cache.put(key, {"text": f"answer {n}"}, provider="offline", model="m", stage="s")
    cache.flush()
    return cache, keys


@pytest.mark.parametrize(
    "change",
    [
        {"provider": "gemini"},
        {"model": "m2"},
        {"prompt": "q"},
        {"system": "be brief"},
        {"schema": AnswerV2},
        {"schema_version": "1.2"},
        {"temperature": 0.7},
        {"max_output_tokens": 100},
    ],
)
def test_every_input_of_a_generation_changes_the_key(change: dict[str, object]) -> None:
    assert _key(**change) != _key()
    assert _key() == _key()


def test_stored_answers_are_read_back(tmp_path: Path) -> None:
    cache, keys = _filled(tmp_path, 2)
    assert cache.get(keys[1], Answer) == {"text": "answer 1"}
    assert cache.get(_key(prompt="never stored"), Answer) is None
    assert (cache.hits, cache.misses, cache.corrupt) == (1, 1, 0)


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete", "not-the-schema"])
def test_a_damaged_entry_is_a_counted_miss_and_is_purged(damage: str, tmp_path: Path) -> None:
    cache, keys = _filled(tmp_path, 1)
    path = cache.entry_path(keys[0])
    body = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(body[:10])
    elif damage == "alter":
        path.write_bytes(body.replace(b"answer", b"ANSWER"))
    elif damage == "delete":
        path.unlink()
    events: list[str] = []
    cache = ResponseCache(tmp_path, on_event=events.append)
    schema = AnswerV2 if damage == "not-the-schema" else Answer
    assert cache.get(keys[0], schema) is None
    assert events == ["corrupt", "miss"]
    assert not path.exists()
    assert cache.validate().entries == 0


def test_read_only_mode_counts_corruption_but_changes_nothing(tmp_path: Path) -> None:
    cache, keys = _filled(tmp_path, 1)
    path = cache.entry_path(keys[0])
    path.write_bytes(b"garbage")
    reader = ResponseCache(tmp_path, mode="read-only")
    assert reader.get(keys[0], Answer) is None
    reader.put(_key(prompt="new"), {"text": "x"}, provider="offline", model="m")
    assert reader.corrupt == 1
    assert path.read_bytes() == b"garbage"
    assert reader.stats()["entries"] == 1


def test_off_and_refresh_modes_never_read(tmp_path: Path) -> None:
    _, keys = _filled(tmp_path, 1)
    assert ResponseCache(tmp_path, mode="off").get(keys[0], Answer) is None
    refresh = ResponseCache(tmp_path, mode="refresh")
    assert refresh.get(keys[0], Answer) is None
    refresh.put(keys[0], {"text": "fresh"}, provider="offline", model="m")
    refresh.close()
    assert ResponseCache(tmp_path).get(keys[0], Answer) == {"text": "fresh"}


def test_validate_reports_exactly_the_corrupt_entries_and_fix_removes_them(
    tmp_path: Path,
) -> None:
    cache, keys = _filled(tmp_path, 6)
    for key in keys[:3]:
        cache.entry_path(key).write_bytes(b"{}")
    orphan = cache.entry_path("ff" + "0" * 62)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_text("{}")
    report = cache.validate()
    assert sorted(report.corrupt) == sorted(keys[:3])
    assert report.ok == 3
    assert report.orphans == [orphan.stem]
    fixed = cache.validate(fix=True)
    assert fixed.purged == 4
    again = cache.validate()
    assert (again.entries, again.ok, again.corrupt, again.orphans) == (3, 3, [], [])


@pytest.mark.parametrize("fix", ["validate", "purge"])
def test_a_stray_file_outside_its_key_folder_is_removed_where_it_lies(
    fix: str, tmp_path: Path
) -> None:
    cache, keys = _filled(tmp_path, 2)
    stray = tmp_path / "entries" / "00" / "copy of an entry.json"
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(cache.entry_path(keys[0]).read_bytes())
    assert cache.validate().orphans == [stray.stem]
    if fix == "validate":
        assert cache.validate(fix=True).purged == 1
        assert cache.validate().ok == 2
    else:
        cache.purge()
    assert not stray.exists()
    assert cache.validate().orphans == []


def test_purge_by_stage_and_all(tmp_path: Path) -> None:
    cache, _ = _filled(tmp_path, 3)
    cache.put(_key(prompt="other"), {"text": "o"}, provider="offline", model="m", stage="t")
    assert cache.purge(stage="t") == 1
    assert cache.stats()["stages"] == {"s": {"entries": 3, "bytes": cache.stats()["bytes"]}}
    assert cache.purge() == 3
    assert cache.stats()["entries"] == 0
    assert list((tmp_path / "entries").glob("*/*.json")) == []


def test_an_entry_whose_manifest_row_was_never_written_is_an_orphan_and_a_miss(
    tmp_path: Path,
) -> None:
    """A hard kill between the entry file and the batched manifest write."""
    writer = ResponseCache(tmp_path)
    key = _key(prompt="killed")
    writer.put(key, {"text": "x"}, provider="offline", model="m")
    assert writer.get(key, Answer) == {"text": "x"}  # the writer sees its own pending rows
    reader = ResponseCache(tmp_path)  # the writer died without flushing
    assert reader.get(key, Answer) is None
    assert reader.validate().orphans == [key]


def test_manifest_schema_is_versioned(tmp_path: Path) -> None:
    cache, _ = _filled(tmp_path, 1)
    cache.close()
    conn = connect(tmp_path / "manifest.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()


def test_read_only_mode_on_a_missing_cache_creates_nothing(tmp_path: Path) -> None:
    reader = ResponseCache(tmp_path / "none", mode="read-only")
    assert reader.get(_key(), Answer) is None
    assert not (tmp_path / "none").exists()
    with pytest.raises(NotFoundError, match="no cache at"):
        reader.stats()


def _open_after(barrier: Any, directory: Path) -> None:
    cache = ResponseCache(directory)
    barrier.wait()
    cache.stats()  # opens the manifest at once: the racy moment
    cache.put(_key(prompt=str(directory)), {"text": "x"}, provider="offline", model="m", stage="s")
    cache.close()


def test_processes_opening_a_new_cache_at_once_all_succeed(tmp_path: Path) -> None:
    """Unserialised, most rounds failed: 'table entries already exists' / 'database is locked'."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(5):
        directory = tmp_path / f"cache{round_}"
        barrier = ctx.Barrier(6)
        workers = [ctx.Process(target=_open_after, args=(barrier, directory)) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert [w.exitcode for w in workers] == [0] * 6
        assert ResponseCache(directory).validate().entries == 1
