"""A content-addressed response cache whose every entry is checked against a SHA-256 manifest.

Entries are JSON files ``entries/<k[:2]>/<k>.json`` where ``k`` hashes everything that decides
an answer: provider, model, system and user prompt, output schema (and its version) and the
generation settings. ``manifest.sqlite`` holds each entry's SHA-256. A read that finds a missing,
truncated, altered or schema-invalid entry counts it as corrupt, deletes it when writes are
allowed, and reports a miss: a damaged cache costs one call, never the run::

    cache = ResponseCache(home / "engine" / "cache")
    value = cache.get(key, Triage)          # None on a miss (or a corrupt entry)
    cache.put(key, answer.model_dump(mode="json"), provider="offline", model="offline-v1")
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from atomlab.core.errors import NotFoundError
from atomlab.core.sqlite import connect, migrate
from atomlab.engine.pipeline import canonical_json

CacheMode = Literal["read-write", "read-only", "refresh", "off"]
CACHE_MODES: tuple[CacheMode, ...] = ("read-write", "read-only", "refresh", "off")
MANIFEST_NAME = "manifest.sqlite"
ENTRIES_DIR = "entries"
ENTRY_FORMAT = 1
MANIFEST_BATCH = 64

MANIFEST_MIGRATIONS = [
    """
    CREATE TABLE entries (
        key TEXT PRIMARY KEY,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        stage TEXT NOT NULL DEFAULT ''
    );
    """,
    "CREATE INDEX entries_stage ON entries (stage);",
]

_schema_ids: dict[type[BaseModel], str] = {}


def schema_id(schema: type[BaseModel]) -> str:
    """SHA-256 of ``schema``'s JSON schema, computed once per class (it is not cheap)."""
    cached = _schema_ids.get(schema)
    if cached is None:
        cached = hashlib.sha256(canonical_json(schema.model_json_schema()).encode()).hexdigest()
        _schema_ids[schema] = cached
    return cached


def cache_key(
    *,
    provider: str,
    model: str,
    prompt: str,
    system: str | None,
    schema: type[BaseModel],
    schema_version: str,
    temperature: float,
    max_output_tokens: int | None = None,
) -> str:
    """The content address of one generation: equal inputs give equal keys, any change a new one.

    Each field goes into the hash with its length in front, so no two field lists collide.
    """
    digest = hashlib.sha256(b"atomlab-engine-cache-key-v1")
    fields = (
        provider,
        model,
        "\x00none" if system is None else system,
        prompt,
        schema_id(schema),
        schema_version,
        repr(float(temperature)),
        "" if max_output_tokens is None else str(max_output_tokens),
    )
    for value in fields:
        encoded = value.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.hexdigest()


@dataclass
class CacheReport:
    """What :meth:`ResponseCache.validate` found."""

    entries: int = 0
    ok: int = 0
    corrupt: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    purged: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "ok": self.ok,
            "corrupt": len(self.corrupt),
            "corrupt_keys": self.corrupt,
            "orphans": len(self.orphans),
            "purged": self.purged,
        }


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an ``flock`` on ``path`` (the cache folder) while the manifest is opened and migrated.

    Two runs opening a new cache at once would otherwise race: both switch it to WAL ("database
    is locked") or both read schema version 0 and create its tables ("table entries already
    exists"). SQLite's own locks are ``fcntl`` locks, which ``flock`` does not touch.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class ResponseCache:
    """The cache of one directory. ``mode`` decides what a run may do with it.

    ``read-write`` (default) reads and stores; ``read-only`` reads, never changes anything (corrupt
    entries are counted, not purged); ``refresh`` never reads but stores every answer; ``off``
    neither reads nor stores. ``on_event`` receives ``"hit"``, ``"miss"`` or ``"corrupt"``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        mode: CacheMode = "read-write",
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.mode = mode
        self._on_event = on_event or (lambda _event: None)
        self.hits = 0
        self.misses = 0
        self.corrupt = 0
        self._conn: sqlite3.Connection | None = None
        self._pending: dict[str, tuple[str, int, str, str, str]] = {}

    @property
    def readable(self) -> bool:
        return self.mode in ("read-write", "read-only")

    @property
    def writable(self) -> bool:
        return self.mode in ("read-write", "refresh")

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if not self.writable and not (self.directory / MANIFEST_NAME).exists():
                raise NotFoundError(
                    f"no cache at {str(self.directory)!r} (no {MANIFEST_NAME}); "
                    "check --cache-dir or engine.cache_dir",
                    path=str(self.directory),
                )
            self.directory.mkdir(parents=True, exist_ok=True)
            with _exclusive(self.directory):
                self._conn = connect(self.directory / MANIFEST_NAME)
                migrate(self._conn, MANIFEST_MIGRATIONS)
        return self._conn

    def flush(self) -> None:
        """Write buffered manifest rows (puts are batched; a hard kill leaves orphans, not harm)."""
        if self._pending:
            conn = self._db()
            with conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO entries (key, sha256, size, provider, model, stage) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(key, *row) for key, row in self._pending.items()],
                )
            self._pending.clear()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.flush()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def entry_path(self, key: str) -> Path:
        return self.directory / ENTRIES_DIR / key[:2] / f"{key}.json"

    def get(self, key: str, schema: type[BaseModel]) -> dict[str, Any] | None:
        """The cached answer for ``key`` (checked and validated), or None."""
        if not self.readable:
            return None
        pending = self._pending.get(key)
        if pending is not None:
            expected = pending[0]
        elif self._conn is None and not (self.directory / MANIFEST_NAME).exists():
            self._count("miss")  # nothing stored yet (read-only mode must not create files)
            return None
        else:
            row = self._db().execute("SELECT sha256 FROM entries WHERE key = ?", (key,)).fetchone()
            if row is None:
                self._count("miss")
                return None
            expected = row["sha256"]
        value = self._read_checked(key, expected, schema)
        if value is None:
            self._count("corrupt")
            if self.writable:
                self._remove(key)
            self._count("miss")
            return None
        self._count("hit")
        return value

    def put(
        self, key: str, value: dict[str, Any], *, provider: str, model: str, stage: str = ""
    ) -> None:
        """Store ``value`` under ``key``: the file atomically, then its SHA-256 in the manifest."""
        if not self.writable:
            return
        body = canonical_json({"format": ENTRY_FORMAT, "key": key, "value": value}).encode()
        path = self.entry_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(body)
            Path(tmp).replace(path)
        except BaseException:
            with contextlib.suppress(OSError):
                Path(tmp).unlink()
            raise
        digest = hashlib.sha256(body).hexdigest()
        self._pending[key] = (digest, len(body), provider, model, stage)
        if len(self._pending) >= MANIFEST_BATCH:
            self.flush()

    def validate(self, *, fix: bool = False) -> CacheReport:
        """Check every entry's hash and JSON; with ``fix``, delete the bad ones and orphans."""
        report = CacheReport()
        self.flush()
        conn = self._db()
        known: set[str] = set()
        for row in conn.execute("SELECT key, sha256 FROM entries ORDER BY key").fetchall():
            report.entries += 1
            known.add(row["key"])
            if self._read_checked(row["key"], row["sha256"], None) is None:
                report.corrupt.append(row["key"])
            else:
                report.ok += 1
        orphan_paths = [
            path
            for path in sorted((self.directory / ENTRIES_DIR).glob("*/*.json"))
            if path.stem not in known or path != self.entry_path(path.stem)
        ]
        report.orphans = [path.stem for path in orphan_paths]
        if fix:
            for key in report.corrupt:
                self._remove(key)
                report.purged += 1
            for path in orphan_paths:  # by path: a stray file may not sit where its key would
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                report.purged += 1
        return report

    def purge(self, *, stage: str | None = None) -> int:
        """Delete every entry (or those of one ``stage``); return how many."""
        self.flush()
        conn = self._db()
        if stage is None:
            keys = [r["key"] for r in conn.execute("SELECT key FROM entries").fetchall()]
            for path in (self.directory / ENTRIES_DIR).glob("*/*.json"):
                keys.append(path.stem)
                if path != self.entry_path(path.stem):  # a stray file: remove it where it is
                    path.unlink(missing_ok=True)
        else:
            rows = conn.execute("SELECT key FROM entries WHERE stage = ?", (stage,)).fetchall()
            keys = [r["key"] for r in rows]
        unique = sorted(set(keys))
        for key in unique:
            self._remove(key)
        return len(unique)

    def stats(self) -> dict[str, Any]:
        """Entry count and bytes, overall and per stage, plus this instance's hit/miss counters."""
        self.flush()
        conn = self._db()
        total = conn.execute("SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS b FROM entries")
        row = total.fetchone()
        per_stage = {
            r["stage"] or "-": {"entries": r["n"], "bytes": r["b"]}
            for r in conn.execute(
                "SELECT stage, COUNT(*) AS n, SUM(size) AS b FROM entries GROUP BY stage "
                "ORDER BY stage"
            ).fetchall()
        }
        return {
            "directory": str(self.directory),
            "entries": row["n"],
            "bytes": row["b"],
            "stages": per_stage,
            "hits": self.hits,
            "misses": self.misses,
            "corrupt": self.corrupt,
        }

    def _read_checked(
        self, key: str, expected: str, schema: type[BaseModel] | None
    ) -> dict[str, Any] | None:
        try:
            body = self.entry_path(key).read_bytes()
        except OSError:
            return None
        if hashlib.sha256(body).hexdigest() != expected:
            return None
        try:
            envelope = json.loads(body)
            value = envelope["value"]
            if envelope.get("key") != key or not isinstance(value, dict):
                return None
            if schema is not None:
                schema.model_validate(value)
        except (ValueError, KeyError, TypeError, ValidationError):
            return None
        return value

    def _remove(self, key: str) -> None:
        self._pending.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            self.entry_path(key).unlink()
        conn = self._db()
        with conn:
            conn.execute("DELETE FROM entries WHERE key = ?", (key,))

    def _count(self, event: str) -> None:
        if event == "hit":
            self.hits += 1
        elif event == "miss":
            self.misses += 1
        else:
            self.corrupt += 1
        self._on_event(event)


__all__ = [
    "CACHE_MODES",
    "MANIFEST_MIGRATIONS",
    "CacheMode",
    "CacheReport",
    "ResponseCache",
    "cache_key",
    "schema_id",
]
