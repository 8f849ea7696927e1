"""Deterministic migrations of output records between schema versions.

``1.0`` is the service-evolution layout of the origin tool (``{meta, service, plateaus[]}``,
see docs/engine.md); ``1.1`` is the engine's record (``{schema_version, pipeline, id, input,
stages, levels[], meta}``). A migration is a pure function of the record: no clock, no random
ids, keys sorted, so the same input file always gives the same bytes, in the same line order,
with every ``meta`` field kept::

    migrate_file(Path("old.jsonl"), Path("new.jsonl"), source="1.0", target="1.1")
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from atomlab.core.errors import InvalidInputError, NotFoundError
from atomlab.engine.pipeline import canonical_json

Record = dict[str, Any]
LATEST_VERSION = "1.1"


class LevelRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    entry: dict[str, Any]
    stages: dict[str, dict[str, Any]]


class RecordV11(BaseModel):
    """The engine's output record, schema 1.1 (what every migration must produce)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal["1.1"]
    pipeline: str
    id: str
    input: dict[str, Any]
    stages: dict[str, dict[str, Any]]
    levels: list[LevelRecord]
    meta: dict[str, Any]


def _v10_to_v11(record: Record) -> Record:
    meta = dict(record.get("meta") or {})
    meta.pop("schema_version", None)
    meta["migrated_from"] = "1.0"
    service = record["service"]
    plateaus = sorted(record.get("plateaus") or [], key=lambda p: int(p["plateau"]))
    descriptions = [
        {"plateau": int(p["plateau"]), "description": p.get("service_description", "")}
        for p in plateaus
    ]
    return {
        "schema_version": "1.1",
        "pipeline": "service-evolution",
        "id": str(service["service_id"]),
        "input": service,
        "stages": {"descriptions": {"descriptions": descriptions}},
        "levels": [_v10_level(p) for p in plateaus],
        "meta": meta,
    }


def _v10_level(plateau: Record) -> Record:
    features = plateau.get("features") or []
    level_id = str(plateau["plateau"])
    converted = [
        {
            "role": f.get("role", f.get("customer_type", "")),
            "name": f.get("name", ""),
            "description": f.get("description", ""),
            "maturity": int((f.get("score") or {}).get("level", f.get("maturity", 1))),
        }
        for f in features
    ]
    sources = [
        {"id": str(f["feature_id"]), "path": f"features.features.{n}"}
        for n, f in enumerate(features)
    ]
    catalogues: dict[str, dict[str, list[str]]] = {}
    for name, rows in sorted((plateau.get("mappings") or {}).items()):
        per_feature: dict[str, set[str]] = {s["id"]: set() for s in sources}
        for row in rows:
            per_feature.setdefault(str(row["feature_id"]), set()).update(
                str(i) for i in row.get("ids", [])
            )
        catalogues[name] = {fid: sorted(ids) for fid, ids in per_feature.items()}
    return {
        "id": level_id,
        "entry": {"id": level_id, "name": plateau.get("plateau_name", "")},
        "stages": {
            "features": {"features": converted},
            "mapping": {"sources": sources, "catalogues": catalogues},
        },
    }


def _version_of(record: Record) -> str | None:
    if "schema_version" in record:
        return str(record["schema_version"])
    meta = record.get("meta")
    if isinstance(meta, dict) and "schema_version" in meta:
        return str(meta["schema_version"])
    return None


MIGRATIONS: dict[tuple[str, str], Callable[[Record], Record]] = {("1.0", "1.1"): _v10_to_v11}
VALIDATORS: dict[str, type[BaseModel]] = {"1.1": RecordV11}


def migrate_record(record: Record, *, source: str, target: str) -> Record:
    """``record`` (schema ``source``) converted to ``target`` and validated against it."""
    step = MIGRATIONS.get((source, target))
    if step is None:
        known = ", ".join(f"{a} → {b}" for a, b in MIGRATIONS)
        raise InvalidInputError(
            f"no migration from {source} to {target}; known: {known}",
            field="--from/--to",
            value=f"{source}->{target}",
        )
    migrated = step(record)
    VALIDATORS[target].model_validate(migrated)
    return migrated


def migrate_file(input_path: Path, output_path: Path, *, source: str, target: str) -> int:
    """Migrate every line of ``input_path`` into ``output_path`` (written atomically)."""
    if not input_path.is_file():
        raise NotFoundError(f"input file {str(input_path)!r} does not exist", path=str(input_path))
    if (source, target) not in MIGRATIONS:
        migrate_record({}, source=source, target=target)  # raises the "no migration" error
    created = _missing_folders(output_path.parent)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=output_path.parent, prefix=f".{output_path.name}.")
    count = 0
    try:
        with (
            os.fdopen(handle, "w", encoding="utf-8") as out,
            input_path.open("rb") as src,
        ):
            for line_no, data in enumerate(src, start=1):
                raw = _decoded(data, line_no, input_path)
                if not raw.strip():
                    continue
                out.write(canonical_json(_migrate_line(raw, line_no, input_path, source, target)))
                out.write("\n")
                count += 1
            out.flush()
            os.fsync(out.fileno())
        Path(tmp).replace(output_path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        for folder in created:  # a refused migration leaves nothing behind, not even a folder
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return count


def _missing_folders(folder: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` would create for ``folder``, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _decoded(data: bytes, line_no: int, path: Path) -> str:
    """One input line as text; a UTF-8 byte order mark on the first line is dropped."""
    try:
        return data.decode("utf-8-sig" if line_no == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{path.name} line {line_no} is not UTF-8 (byte {exc.start + 1}); save it as UTF-8",
            line=line_no,
        ) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _migrate_line(raw: str, line_no: int, path: Path, source: str, target: str) -> Record:
    where = f"{path.name} line {line_no}"
    try:
        record = json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{where} is not valid JSON ({exc.msg})", line=line_no) from None
    except RecursionError:
        raise InvalidInputError(f"{where} is nested too deeply", line=line_no) from None
    except ValueError as exc:  # NaN / Infinity
        raise InvalidInputError(f"{where}: {exc}; use finite numbers", line=line_no) from None
    if not isinstance(record, dict):
        raise InvalidInputError(f"{where} is not a JSON object", line=line_no)
    found = _version_of(record)
    if found != source:
        hint = (
            f"{found} is already the --to version: a file at {found} needs no migration"
            if found == target
            else f"pass --from {found}"
        )
        raise InvalidInputError(
            f"{where} has schema_version {found!r}, not {source!r}; {hint}",
            line=line_no,
            field="schema_version",
            value=found,
        )
    try:
        return migrate_record(record, source=source, target=target)
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        raise InvalidInputError(
            f"{where} cannot be migrated from {source} to {target}: {exc}",
            line=line_no,
        ) from None


__all__ = ["LATEST_VERSION", "MIGRATIONS", "RecordV11", "migrate_file", "migrate_record"]
