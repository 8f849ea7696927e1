"""The response cache: content addresses, self-checking entries; damage costs at most a miss.

The damage matrix below is the contract of the cache: for every kind of damage a reader never
raises, a run reads exactly the entries ``validate`` calls valid, ``validate`` reports the damage,
``validate --fix`` repairs it (a second ``validate`` finds nothing), and nothing outside the
cache folder is touched.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from atomlab.core.errors import InvalidInputError, NotFoundError, UnavailableError
from atomlab.core.sqlite import connect
from atomlab.engine import ManifestDamagedError, ResponseCache, cache_key
from atomlab.engine.cache import MANIFEST_VERSION, schema_id
from atomlab.engine.cache_entry import encode_entry


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
        cache.put(
            key, {"text": f"answer {n}"}, provider="offline", model="m", schema=Answer, stage="s"
        )
    cache.close()
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


def test_an_entry_names_its_schema_and_carries_its_own_checksum(tmp_path: Path) -> None:
    cache, keys = _filled(tmp_path, 1)
    entry = json.loads(cache.entry_path(keys[0]).read_bytes())
    assert entry["schema"] == schema_id(Answer)
    assert (tmp_path / "schemas" / f"{schema_id(Answer)}.json").is_file()
    assert entry["stage"] == "s" and entry["provider"] == "offline" and len(entry["sha256"]) == 64


@pytest.mark.parametrize("damage", ["truncate", "alter", "not-the-schema"])
def test_a_damaged_entry_is_a_counted_miss_and_is_removed(damage: str, tmp_path: Path) -> None:
    cache, keys = _filled(tmp_path, 1)
    path = cache.entry_path(keys[0])
    body = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(body[:10])
    elif damage == "alter":
        path.write_bytes(body.replace(b"answer", b"ANSWER"))
    events: list[str] = []
    cache = ResponseCache(tmp_path, on_event=events.append)
    schema = AnswerV2 if damage == "not-the-schema" else Answer
    assert cache.get(keys[0], schema) is None
    assert events == ["corrupt", "miss"]
    assert not path.exists()


def test_a_deleted_entry_is_a_plain_miss(tmp_path: Path) -> None:
    cache, keys = _filled(tmp_path, 1)
    cache.entry_path(keys[0]).unlink()
    events: list[str] = []
    assert ResponseCache(tmp_path, on_event=events.append).get(keys[0], Answer) is None
    assert events == ["miss"]


def test_read_only_mode_counts_damage_but_changes_nothing(tmp_path: Path) -> None:
    cache, keys = _filled(tmp_path, 1)
    path = cache.entry_path(keys[0])
    path.write_bytes(b"garbage")
    before = _snapshot(tmp_path)
    reader = ResponseCache(tmp_path, mode="read-only")
    assert reader.get(keys[0], Answer) is None
    reader.put(_key(prompt="new"), {"text": "x"}, provider="offline", model="m", schema=Answer)
    reader.close()
    assert reader.corrupt == 1
    assert _snapshot(tmp_path) == before


def test_off_and_refresh_modes_never_read(tmp_path: Path) -> None:
    _, keys = _filled(tmp_path, 1)
    assert ResponseCache(tmp_path, mode="off").get(keys[0], Answer) is None
    refresh = ResponseCache(tmp_path, mode="refresh")
    assert refresh.get(keys[0], Answer) is None
    refresh.put(keys[0], {"text": "fresh"}, provider="offline", model="m", schema=Answer)
    refresh.close()
    assert ResponseCache(tmp_path).get(keys[0], Answer) == {"text": "fresh"}


def test_purge_by_stage_and_all(tmp_path: Path) -> None:
    cache, _ = _filled(tmp_path, 3)
    other = _key(prompt="other")
    cache.put(other, {"text": "o"}, provider="offline", model="m", schema=Answer, stage="t")
    assert cache.purge(stage="t") == 1
    stats = cache.stats()
    assert stats["stages"] == {"s": {"entries": 3, "bytes": stats["bytes"]}}
    assert cache.purge() == 3
    assert cache.stats()["entries"] == 0
    assert list((tmp_path / "entries").glob("*/*.json")) == []


def test_an_entry_whose_index_row_was_never_written_is_still_a_hit(tmp_path: Path) -> None:
    """A hard kill between the entry file and the batched index write loses nothing."""
    writer = ResponseCache(tmp_path)
    key = _key(prompt="killed")
    writer.put(key, {"text": "x"}, provider="offline", model="m", schema=Answer)
    reader = ResponseCache(tmp_path)  # the writer died without flushing
    assert reader.get(key, Answer) == {"text": "x"}
    report = reader.validate()
    assert report.kinds == {"unindexed": 1}  # a note: the entry works, --fix indexes it
    assert report.damage == []
    assert report.valid_keys == {key}


def test_manifest_schema_is_versioned(tmp_path: Path) -> None:
    cache, _ = _filled(tmp_path, 1)
    cache.close()
    conn = connect(tmp_path / "manifest.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == MANIFEST_VERSION == 3
    conn.close()


def test_read_only_mode_on_a_missing_cache_creates_nothing(tmp_path: Path) -> None:
    reader = ResponseCache(tmp_path / "none", mode="read-only")
    assert reader.get(_key(), Answer) is None
    assert not (tmp_path / "none").exists()
    with pytest.raises(NotFoundError, match="no cache at"):
        reader.stats()
    with pytest.raises(NotFoundError, match="no cache at"):
        reader.validate()


def test_a_cache_folder_that_is_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    target = tmp_path / "cache"
    target.write_text("not a folder")
    with pytest.raises(InvalidInputError, match="is a file"):
        ResponseCache(target).check_location()
    with pytest.raises(InvalidInputError, match="is a file, not a folder"):
        ResponseCache(target / "below").check_location()
    with pytest.raises(InvalidInputError, match="longer than 255 bytes"):
        ResponseCache(tmp_path / ("x" * 10_000)).check_location()
    assert target.read_text() == "not a folder"
    fresh = tmp_path / "new" / "cache"
    ResponseCache(fresh).check_location()
    assert not fresh.parent.exists()  # checked, not created: the first stored answer makes it


def _open_after(barrier: Any, directory: Path) -> None:
    cache = ResponseCache(directory)
    barrier.wait()
    cache.stats()  # opens the manifest at once: the racy moment
    cache.put(
        _key(prompt=str(directory)), {"text": "x"}, provider="offline", model="m", schema=Answer
    )
    cache.close()


def test_processes_opening_a_new_cache_at_once_all_succeed(tmp_path: Path) -> None:
    """Unserialised, most rounds failed: 'table entries already exists' / 'database is locked'."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(5):
        directory = tmp_path / f"cache{round_}"
        directory.mkdir()
        ResponseCache(directory).stats()
        barrier = ctx.Barrier(6)
        workers = [ctx.Process(target=_open_after, args=(barrier, directory)) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        assert [w.exitcode for w in workers] == [0] * 6
        assert ResponseCache(directory).validate().entries == 1


# --- the damage matrix -----------------------------------------------------------------------

COUNT = 4


def _manifest(root: Path) -> Path:
    return root / "manifest.sqlite"


def _drop_side_files(root: Path) -> None:
    for suffix in ("-wal", "-shm"):
        (root / f"manifest.sqlite{suffix}").unlink(missing_ok=True)


def _rewrite_manifest(root: Path, body: bytes | None) -> None:
    _drop_side_files(root)
    if body is None:
        _manifest(root).unlink()
    else:
        _manifest(root).write_bytes(body)


def _with_sql(root: Path, sql: str, *params: Any) -> None:
    conn = sqlite3.connect(_manifest(root))
    with conn:
        conn.execute(sql, params)
    conn.close()


def _entry(root: Path, key: str) -> Path:
    return root / "entries" / key[:2] / f"{key}.json"


def _schema_file(root: Path) -> Path:
    return root / "schemas" / f"{schema_id(Answer)}.json"


def _turn_into_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside").write_text("x")


def _schema_invalid_but_checksum_ok(root: Path, key: str) -> None:
    body = encode_entry(
        key, {"text": 5}, provider="offline", model="m", stage="s", schema=schema_id(Answer)
    )
    _entry(root, key).write_bytes(body)
    _with_sql(
        root,
        "UPDATE entries SET sha256 = ?, size = ? WHERE key = ?",
        hashlib.sha256(body).hexdigest(),
        len(body),
        key,
    )


def _outdated(root: Path, key: str) -> None:
    body = json.dumps({"format": 1, "key": key, "value": {"text": "old"}}).encode()
    _entry(root, key).write_bytes(body)


def _newer(root: Path, key: str) -> None:
    _entry(root, key).write_bytes(json.dumps({"format": 9, "key": key, "blob": "?"}).encode())


def _misplaced(root: Path, key: str) -> None:
    (root / "entries" / "00").mkdir(exist_ok=True)
    _entry(root, key).replace(root / "entries" / "00" / f"{key}.json")


def _fifo(root: Path, key: str) -> None:
    _entry(root, key).unlink()
    os.mkfifo(_entry(root, key))


def _symlink(root: Path, keys: list[str]) -> None:
    _entry(root, keys[0]).unlink()
    _entry(root, keys[0]).symlink_to(_entry(root, keys[1]))


def _shard_is_file(root: Path, key: str) -> None:
    shard = _entry(root, key).parent
    for child in shard.iterdir():
        child.unlink()
    shard.rmdir()
    shard.write_text("a file where a shard folder was")


Damage = Callable[[Path, list[str]], None]

# name -> (damage, the finding kind(s) validate must report, entries a run can no longer read)
DAMAGE: dict[str, tuple[Damage, set[str], int]] = {
    "manifest garbage": (
        lambda r, k: _rewrite_manifest(r, b"garbage" * 100),
        {"manifest_damaged"},
        0,
    ),
    "manifest truncated": (
        lambda r, k: _rewrite_manifest(r, _manifest(r).read_bytes()[:1000]),
        {"manifest_damaged"},
        0,
    ),
    "manifest empty": (lambda r, k: _rewrite_manifest(r, b""), {"manifest_missing"}, 0),
    "manifest is a folder": (
        lambda r, k: (_rewrite_manifest(r, None), _manifest(r).mkdir()),
        {"manifest_damaged"},
        0,
    ),
    "manifest wal is a folder": (
        lambda r, k: (_drop_side_files(r), (r / "manifest.sqlite-wal").mkdir()),
        {"manifest_damaged"},
        0,
    ),
    "manifest deleted beside entries": (
        lambda r, k: _rewrite_manifest(r, None),
        {"manifest_missing"},
        0,
    ),
    "index row escaping the folder": (
        lambda r, k: _with_sql(
            r, "INSERT INTO entries VALUES ('../../../x', 'h', 1, 'p', 'm', 's', '')"
        ),
        {"bad_row"},
        0,
    ),
    "entry file deleted": (lambda r, k: _entry(r, k[0]).unlink(), {"dangling_row"}, 1),
    "entry truncated": (
        lambda r, k: _entry(r, k[0]).write_bytes(_entry(r, k[0]).read_bytes()[:-7]),
        {"not_json"},
        1,
    ),
    "entry empty": (lambda r, k: _entry(r, k[0]).write_bytes(b""), {"not_json"}, 1),
    "entry garbage": (lambda r, k: _entry(r, k[0]).write_bytes(b"\xff\x00" * 50), {"not_json"}, 1),
    "entry value edited": (
        lambda r, k: _entry(r, k[0]).write_bytes(
            _entry(r, k[0]).read_bytes().replace(b"answer", b"ANSWER")
        ),
        {"checksum_mismatch"},
        1,
    ),
    "entry schema-invalid with a matching checksum": (
        lambda r, k: _schema_invalid_but_checksum_ok(r, k[0]),
        {"schema_mismatch"},
        1,
    ),
    "entry holds another key": (
        lambda r, k: _entry(r, k[0]).write_bytes(_entry(r, k[1]).read_bytes()),
        {"key_mismatch"},
        1,
    ),
    "entry of an older format": (lambda r, k: _outdated(r, k[0]), {"outdated_format"}, 1),
    "entry is a folder": (lambda r, k: _turn_into_folder(_entry(r, k[0])), {"not_a_file"}, 1),
    "entry is a FIFO": (lambda r, k: _fifo(r, k[0]), {"not_a_file"}, 1),
    "entry is a symbolic link": (lambda r, k: _symlink(r, k), {"not_a_file"}, 1),
    "entry far too large": (
        lambda r, k: os.truncate(_entry(r, k[0]), 17 << 20),
        {"too_large"},
        1,
    ),
    "shard folder is a file": (
        lambda r, k: _shard_is_file(r, k[0]),
        {"shard_not_a_folder", "dangling_row"},
        1,
    ),
    "entries folder is a file": (
        lambda r, k: (
            shutil.rmtree(r / "entries"),
            (r / "entries").write_text("x"),
        ),
        {"entries_not_a_folder", "dangling_row"},
        COUNT,
    ),
    "schema file deleted": (lambda r, k: _schema_file(r).unlink(), {"schema_missing"}, COUNT),
    "schema file edited": (
        lambda r, k: _schema_file(r).write_text('{"type": "object"}'),
        {"schema_damaged", "schema_missing"},
        COUNT,
    ),
    "schemas folder is a file": (
        lambda r, k: (
            shutil.rmtree(r / "schemas"),
            (r / "schemas").write_text("x"),
        ),
        {"schemas_not_a_folder", "schema_missing"},
        COUNT,
    ),
    "stray files and a killed write's temp file": (
        lambda r, k: (
            (r / "entries" / "notes.txt").write_text("x"),
            (_entry(r, k[0]).parent / "copy.json").write_text("{}"),
            (_entry(r, k[0]).parent / ".tmp-abc.json").write_text("{"),
        ),
        {"stray", "temp_leftover"},
        0,
    ),
    "valid entry in the wrong shard": (lambda r, k: _misplaced(r, k[0]), {"misplaced"}, 1),
}


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        state[str(path.relative_to(root))] = (info.st_mode, info.st_size)
    return state


def _matrix_cache(tmp_path: Path) -> tuple[Path, list[str], Path]:
    root = tmp_path / "cache"
    _, keys = _filled(root, COUNT)
    keys.sort(key=lambda k: k[:2] == "00")  # the misplaced case moves keys[0] into shard 00
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    return root, keys, outside


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_damage_costs_at_most_a_miss_and_validate_fix_repairs_it(name: str, tmp_path: Path) -> None:
    damage, kinds, unreadable = DAMAGE[name]
    root, keys, outside = _matrix_cache(tmp_path)
    damage(root, keys)
    outside_before = _snapshot(outside)

    # 1. A run never fails: read-only it reads exactly what validate calls valid.
    reader = ResponseCache(root, mode="read-only")
    hits = {key for key in keys if reader.get(key, Answer) == {"text": f"answer {keys.index(key)}"}}
    reader.close()
    assert len(hits) == COUNT - unreadable
    report = ResponseCache(root, mode="read-only").validate()
    assert report.valid_keys == hits, "a run and validate must agree on every entry"

    # 2. validate reports the damage.
    assert kinds <= set(report.kinds), report.kinds
    assert report.damage, "damage must make validate fail (exit 3)"

    # 3. --fix repairs it; a second validate is clean and every intact answer is still there.
    fixed = ResponseCache(root).validate(fix=True)
    assert fixed.unfixed == [], [f.to_dict() for f in fixed.unfixed]
    again = ResponseCache(root, mode="read-only").validate()
    assert again.findings == [], [f.to_dict() for f in again.findings]
    moved_back = {keys[0]} if name == "valid entry in the wrong shard" else set()
    assert again.valid_keys == hits | moved_back
    assert ResponseCache(root).stats()["entries"] == len(again.valid_keys)

    # 4. A read-write run over the repaired cache re-stores what was lost; nothing outside moved.
    writer = ResponseCache(root)
    for n, key in enumerate(keys):
        if writer.get(key, Answer) is None:
            writer.put(key, {"text": f"answer {n}"}, provider="offline", model="m", schema=Answer)
    writer.close()
    final = ResponseCache(root, mode="read-only").validate()
    assert final.findings == [] and final.valid_keys == set(keys)
    assert _snapshot(outside) == outside_before


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_a_read_write_run_on_damage_goes_on_and_counts_it(name: str, tmp_path: Path) -> None:
    damage, _kinds, unreadable = DAMAGE[name]
    root, keys, _ = _matrix_cache(tmp_path)
    damage(root, keys)
    events: list[str] = []
    cache = ResponseCache(root, on_event=events.append)
    served = 0
    for n, key in enumerate(keys):
        value = cache.get(key, Answer)
        if value is None:
            cache.put(key, {"text": f"answer {n}"}, provider="offline", model="m", schema=Answer)
        else:
            served += 1
    cache.close()
    assert served >= COUNT - unreadable - 1  # at most one more miss than validate predicts
    assert events.count("hit") == served


def test_a_manifest_from_a_newer_atomlab_is_left_alone(tmp_path: Path) -> None:
    root, keys, _ = _matrix_cache(tmp_path)
    _with_sql(root, "PRAGMA user_version = 99")
    before = _manifest(root).read_bytes()
    cache = ResponseCache(root)
    assert cache.get(keys[0], Answer) == {"text": "answer 0"}  # entries need no manifest
    cache.put(_key(prompt="new"), {"text": "n"}, provider="offline", model="m", schema=Answer)
    cache.close()  # the index write is skipped with a warning, the entry is stored
    assert cache.index_problem is not None and "newer atomlab" in cache.index_problem
    with pytest.raises(UnavailableError, match="newer atomlab"):
        ResponseCache(root).validate(fix=True)
    assert _manifest(root).read_bytes() == before


def test_an_entry_from_a_newer_atomlab_is_a_miss_that_fix_leaves_alone(tmp_path: Path) -> None:
    root, keys, _ = _matrix_cache(tmp_path)
    _newer(root, keys[0])
    assert ResponseCache(root).get(keys[0], Answer) is None
    assert _entry(root, keys[0]).exists()
    report = ResponseCache(root).validate(fix=True)
    assert report.kinds.get("newer_format") == 1 and report.unfixed == []
    assert _entry(root, keys[0]).exists()


def test_stats_and_stage_purge_on_a_damaged_manifest_name_the_fix(tmp_path: Path) -> None:
    root, _, _ = _matrix_cache(tmp_path)
    _rewrite_manifest(root, b"garbage" * 100)
    with pytest.raises(ManifestDamagedError, match="validate --fix"):
        ResponseCache(root).stats()
    with pytest.raises(ManifestDamagedError, match="validate --fix"):
        ResponseCache(root).purge(stage="s")
    assert ResponseCache(root).purge() == COUNT  # purging everything needs no index


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_entry_is_a_miss_and_reported(tmp_path: Path) -> None:
    root, keys, _ = _matrix_cache(tmp_path)
    _entry(root, keys[0]).chmod(0)
    assert ResponseCache(root, mode="read-only").get(keys[0], Answer) is None
    assert "unreadable" in ResponseCache(root, mode="read-only").validate().kinds
