"""Migrations 1.0 → 1.1: deterministic, order and meta kept, output valid against 1.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atomlab.core.errors import InvalidInputError
from atomlab.engine import RecordV11, migrate_file
from atomlab.engine.pipeline import builtin_pipelines_dir

SAMPLE = builtin_pipelines_dir() / "service-evolution" / "sample-1.0.jsonl"


def _sample(tmp_path: Path) -> Path:
    path = tmp_path / "old.jsonl"
    path.write_bytes(SAMPLE.read_bytes())
    return path


def test_migration_is_deterministic_keeps_order_and_meta(tmp_path: Path) -> None:
    src = _sample(tmp_path)
    assert migrate_file(src, tmp_path / "a.jsonl", source="1.0", target="1.1") == 2
    migrate_file(src, tmp_path / "b.jsonl", source="1.0", target="1.1")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    old = [json.loads(line) for line in src.read_text().splitlines()]
    new = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["id"] for r in new] == [r["service"]["service_id"] for r in old]
    for before, after in zip(old, new, strict=True):
        RecordV11.model_validate(after)
        kept = {k: v for k, v in before["meta"].items() if k != "schema_version"}
        assert after["meta"] == {**kept, "migrated_from": "1.0"}


def test_mappings_and_features_survive_the_migration(tmp_path: Path) -> None:
    migrate_file(_sample(tmp_path), tmp_path / "n.jsonl", source="1.0", target="1.1")
    record = json.loads((tmp_path / "n.jsonl").read_text().splitlines()[0])
    level = record["levels"][1]
    assert level["entry"] == {"id": "2", "name": "Enhanced"}
    assert level["stages"]["features"]["features"][0]["maturity"] == 3
    assert level["stages"]["mapping"]["catalogues"]["applications"] == {
        "P9XW2D": ["APP-BOOK", "APP-PORTAL"]
    }


def test_a_line_of_another_version_is_refused_with_its_line_number(tmp_path: Path) -> None:
    src = tmp_path / "mixed.jsonl"
    lines = SAMPLE.read_text().splitlines()
    src.write_text(lines[0] + "\n" + json.dumps({"schema_version": "1.1"}) + "\n")
    with pytest.raises(InvalidInputError, match=r"line 2 has schema_version '1\.1'"):
        migrate_file(src, tmp_path / "out.jsonl", source="1.0", target="1.1")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_file_already_at_the_target_version_is_told_so(tmp_path: Path) -> None:
    """Not "pass --from 1.1": there is no 1.1 → 1.1 migration to pass it to."""
    first = tmp_path / "new.jsonl"
    migrate_file(_sample(tmp_path), first, source="1.0", target="1.1")
    with pytest.raises(InvalidInputError, match=r"1\.1 is already the --to version") as refused:
        migrate_file(first, tmp_path / "again.jsonl", source="1.0", target="1.1")
    assert "pass --from" not in refused.value.message


def test_a_byte_order_mark_is_accepted_and_a_non_utf8_line_named(tmp_path: Path) -> None:
    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + SAMPLE.read_bytes())
    migrate_file(with_bom, tmp_path / "a.jsonl", source="1.0", target="1.1")
    migrate_file(_sample(tmp_path), tmp_path / "b.jsonl", source="1.0", target="1.1")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(SAMPLE.read_bytes() + b'{"meta": {"note": "\xe9"}}\n')
    with pytest.raises(InvalidInputError, match="line 3 is not UTF-8"):
        migrate_file(latin1, tmp_path / "c.jsonl", source="1.0", target="1.1")
    assert not (tmp_path / "c.jsonl").exists()


def test_an_unknown_migration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"no migration from 0\.9 to 1\.1"):
        migrate_file(_sample(tmp_path), tmp_path / "o.jsonl", source="0.9", target="1.1")
