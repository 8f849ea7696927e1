"""A content-addressed response cache that any damage costs at most a miss, never the run.

Entries are JSON files ``entries/<k[:2]>/<k>.json`` where ``k`` hashes everything that decides
an answer: provider, model, system and user prompt, output schema (and its version) and the
generation settings. Each entry carries its own checksum and names its JSON schema (stored once in
``schemas/``), so a read checks it from the file alone (:mod:`atomlab.engine.cache_entry`, the same
check ``engine cache validate`` makes). ``manifest.sqlite`` is an index for stats and purges; a
damaged manifest switches the index off for the run (with a warning), never the cache::

    cache = ResponseCache(home / "engine" / "cache")
    value = cache.get(key, Triage)          # None on a miss (or a damaged entry)
    cache.put(key, answer.model_dump(mode="json"), provider="offline", model="offline-v1",
              schema=Triage)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from atomlab.core.errors import InvalidInputError, NotFoundError, UnavailableError
from atomlab.core.logging import get_logger
from atomlab.core.paths import folder_problem, shown
from atomlab.core.sqlite import connect, migrate, schema_version
from atomlab.engine.cache_entry import (
    ENTRIES_DIR,
    SCHEMAS_DIR,
    Problem,
    SchemaStore,
    check_entry,
    encode_entry,
    is_key,
    schema_json,
    write_file_atomically,
)

if TYPE_CHECKING:
    from atomlab.engine.cache_validate import CacheReport

log = get_logger("atomlab.engine.cache")

CacheMode = Literal["read-write", "read-only", "refresh", "off"]
CACHE_MODES: tuple[CacheMode, ...] = ("read-write", "read-only", "refresh", "off")
MANIFEST_NAME = "manifest.sqlite"
MANIFEST_BATCH = 64
VALIDATE_FIX_HINT = "run 'atomlab engine cache validate --fix'"

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
    "ALTER TABLE entries ADD COLUMN schema TEXT NOT NULL DEFAULT '';",
]
MANIFEST_VERSION = len(MANIFEST_MIGRATIONS)
INDEX_COLUMNS = ("sha256", "size", "provider", "model", "stage", "schema")

_schema_ids: dict[type[BaseModel], str] = {}


def schema_id(schema: type[BaseModel]) -> str:
    """SHA-256 of ``schema``'s JSON schema, computed once per class (it is not cheap)."""
    cached = _schema_ids.get(schema)
    if cached is None:
        cached = hashlib.sha256(schema_json(schema).encode()).hexdigest()
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


class ManifestDamagedError(InvalidInputError):
    """``manifest.sqlite`` cannot be used (not a database, malformed, a folder ...)."""

    type_name = "cache_manifest_damaged"


class ManifestNewerError(UnavailableError):
    """``manifest.sqlite`` was written by a newer atomlab; this one leaves it alone."""

    type_name = "cache_manifest_newer"


@dataclass(frozen=True)
class IndexRow:
    sha256: str
    size: int
    provider: str
    model: str
    stage: str
    schema: str


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


def manifest_files(directory: Path) -> tuple[Path, Path, Path]:
    """The manifest and its SQLite side files (``-wal``, ``-shm``)."""
    path = directory / MANIFEST_NAME
    return path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def open_manifest(directory: Path, *, writable: bool) -> sqlite3.Connection | None:
    """Open (and, when ``writable``, create or upgrade) the index; None when read-only and absent
    (or still empty).

    Raises :class:`ManifestDamagedError` or :class:`ManifestNewerError` naming the file.
    """
    path = directory / MANIFEST_NAME
    if not writable and not os.path.lexists(path):
        return None
    for part in manifest_files(directory):
        if os.path.lexists(part) and (part.is_symlink() or not part.is_file()):
            raise ManifestDamagedError(
                f"the cache manifest file {str(part)!r} is a folder or a link, not a file; "
                f"{VALIDATE_FIX_HINT} to rebuild it from the entries",
                path=str(part),
                reason=f"{part.name} is not a regular file",
            )
    conn: sqlite3.Connection | None = None
    try:
        if writable:
            directory.mkdir(parents=True, exist_ok=True)
            with _exclusive(directory):
                conn = connect(path)
                migrate(conn, MANIFEST_MIGRATIONS)
        else:
            conn = connect(path, read_only=True)
            version = schema_version(conn)
            if version > MANIFEST_VERSION:
                raise ManifestNewerError(_newer_message(path, version), path=str(path))
            if version == 0:  # an empty file, or one a writer is creating right now
                conn.close()
                return None
            conn.execute("SELECT COUNT(*) FROM entries").fetchone()
        return conn
    except UnavailableError as exc:
        if conn is not None:
            conn.close()
        version = int(exc.details.get("schema_version", 0))
        raise ManifestNewerError(_newer_message(path, version), path=str(path)) from None
    except (sqlite3.Error, OSError) as exc:
        if conn is not None:
            conn.close()
        raise ManifestDamagedError(
            f"the cache manifest {str(path)!r} is damaged ({_reason(exc)}); {VALIDATE_FIX_HINT} "
            "to rebuild it from the entries",
            path=str(path),
            reason=_reason(exc),
        ) from None


def _newer_message(path: Path, version: int) -> str:
    return (
        f"the cache manifest {str(path)!r} was written by a newer atomlab (version {version}, "
        f"this one knows {MANIFEST_VERSION}); upgrade atomlab or use another --cache-dir"
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def check_cache_location(directory: Path, *, create: bool, option: str = "--cache-dir") -> None:
    """Refuse a cache folder that is a file or could never be created (exit 3, before any work).

    Nothing is created unless ``create``: a run makes the folder with its first stored answer.
    """
    fail = folder_problem(directory)
    if fail is None and create:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail = f"cannot be used: {_reason(exc)}"
    if fail is not None:
        raise InvalidInputError(
            f"cache folder {shown(directory)} {fail}; pass a folder to {option} "
            "(engine.cache_dir), or --cache-mode off",
            field=option,
            value=str(directory)[:200],
        )


class ResponseCache:
    """The cache of one directory. ``mode`` decides what a run may do with it.

    ``read-write`` (default) reads and stores; ``read-only`` reads, never changes anything (damaged
    entries are counted, not removed); ``refresh`` never reads but stores every answer; ``off``
    neither reads nor stores. ``on_event`` receives ``"hit"``, ``"miss"``, ``"corrupt"`` or
    ``"store_error"``.
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
        self.store_errors = 0
        self.schemas = SchemaStore(self.directory)
        self._conn: sqlite3.Connection | None = None
        self._index_problem: str | None = None
        self._store_problems: set[str] = set()
        self._pending: dict[str, IndexRow] = {}

    @property
    def readable(self) -> bool:
        return self.mode in ("read-write", "read-only")

    @property
    def writable(self) -> bool:
        return self.mode in ("read-write", "refresh")

    @property
    def index_problem(self) -> str | None:
        """Why the manifest index is switched off for this instance (None while it works)."""
        return self._index_problem

    def check_location(self) -> None:
        """Refuse a cache folder that is a file or cannot be created (before a run starts)."""
        if self.mode != "off":
            check_cache_location(self.directory, create=False)

    # --- reads and writes (a run) ----------------------------------------------------------

    def entry_path(self, key: str) -> Path:
        if not is_key(key):
            raise ValueError(f"not a cache key: {key[:80]!r}")
        return self.directory / ENTRIES_DIR / key[:2] / f"{key}.json"

    def get(self, key: str, schema: type[BaseModel]) -> dict[str, Any] | None:
        """The cached answer for ``key`` (checked as ``validate`` checks it), or None."""
        if not self.readable:
            return None
        path = self.entry_path(key)
        try:
            found = check_entry(path, key, self.schemas, expected_schema=schema_id(schema))
        except FileNotFoundError:
            self._count("miss")
            return None
        if found.problem is not None:
            self._count("corrupt")
            log.debug("engine.cache_entry_damaged", key=key, problem=found.problem.value)
            if self.writable and found.problem is not Problem.NEWER_FORMAT:
                self._discard_file(path)
            self._count("miss")
            return None
        self._count("hit")
        return found.value

    def put(
        self,
        key: str,
        value: dict[str, Any],
        *,
        provider: str,
        model: str,
        schema: type[BaseModel],
        stage: str = "",
    ) -> None:
        """Store ``value`` under ``key`` (schema file, then entry file, atomically; then its row).

        A failure to store (disk full, a damaged folder) is logged and counted, never raised: the
        answer is in the run's output and journal anyway.
        """
        if not self.writable:
            return
        if self._conn is None and self._index_problem is None:
            self._index()  # the index exists before the first entry: a kill leaves only notes
        sid = schema_id(schema)
        body = encode_entry(key, value, provider=provider, model=model, stage=stage, schema=sid)
        path = self.entry_path(key)
        try:
            self.schemas.ensure(schema, sid)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_file_atomically(path, body)
        except OSError as exc:
            self._store_failed(path, exc)
            return
        digest = hashlib.sha256(body).hexdigest()
        self._pending[key] = IndexRow(digest, len(body), provider, model, stage, sid)
        if len(self._pending) >= MANIFEST_BATCH:
            self.flush()

    def flush(self) -> None:
        """Write buffered index rows (a hard kill leaves unindexed entries: still hits)."""
        if not self._pending:
            return
        rows = [(key, *_row_values(row)) for key, row in self._pending.items()]
        self._pending.clear()
        conn = self._index()
        if conn is None:
            return
        try:
            with conn:
                conn.executemany(
                    "INSERT OR REPLACE INTO entries (key, sha256, size, provider, model, stage, "
                    "schema) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        except sqlite3.Error as exc:
            self._index_off(_reason(exc))

    def close(self) -> None:
        self.flush()
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _index(self) -> sqlite3.Connection | None:
        """The manifest for writing rows, or None once it proved unusable (logged once)."""
        if self._conn is None and self._index_problem is None:
            try:
                self._conn = open_manifest(self.directory, writable=True)
            except (ManifestDamagedError, ManifestNewerError) as exc:
                self._index_off(exc.message)
            except OSError as exc:
                self._index_off(_reason(exc))
        return self._conn

    def _index_off(self, reason: str) -> None:
        if self._index_problem is None:
            self._index_problem = reason
            log.warning(
                "engine.cache_index_unusable",
                directory=str(self.directory),
                reason=reason,
                effect="answers are still cached and read; stats and purges lack them",
                fix="atomlab engine cache validate --fix",
            )
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _store_failed(self, path: Path, exc: OSError) -> None:
        self.store_errors += 1
        self._on_event("store_error")
        reason = _reason(exc)
        if reason not in self._store_problems:  # once per kind, not once per answer
            self._store_problems.add(reason)
            log.warning(
                "engine.cache_store_failed",
                path=str(path),
                reason=reason,
                effect="this answer is not cached (the run goes on)",
                fix="atomlab engine cache validate --fix",
            )

    def _discard_file(self, path: Path) -> None:
        """Remove a damaged entry file; anything else there is left to ``validate --fix``."""
        with contextlib.suppress(OSError):
            if not path.is_symlink() and path.is_dir():
                return
            path.unlink()

    def _count(self, event: str) -> None:
        if event == "hit":
            self.hits += 1
        elif event == "miss":
            self.misses += 1
        else:
            self.corrupt += 1
        self._on_event(event)

    # --- maintenance (the CLI's cache commands) --------------------------------------------

    def validate(self, *, fix: bool = False) -> CacheReport:
        """Check every entry, schema file and index row; with ``fix``, repair what is damaged."""
        from atomlab.engine.cache_validate import validate_cache

        self.flush()
        self.close()
        return validate_cache(self, fix=fix)

    def purge(self, *, stage: str | None = None) -> int:
        """Delete every entry (or those of one ``stage``); return how many entry files went."""
        self.flush()
        self.check_location()
        if stage is None:
            return self._purge_all()
        conn = self._require_index(writable=True)
        assert conn is not None
        rows = conn.execute("SELECT key FROM entries WHERE stage = ?", (stage,)).fetchall()
        keys = [row["key"] for row in rows if is_key(row["key"])]
        removed = 0
        for key in keys:
            path = self.entry_path(key)
            if os.path.lexists(path):
                remove_path(path)
                removed += 1
        with conn:
            conn.execute("DELETE FROM entries WHERE stage = ?", (stage,))
        return removed

    def _purge_all(self) -> int:
        entries = self.directory / ENTRIES_DIR
        removed = 0
        if entries.is_dir() and not entries.is_symlink():
            for shard in list(entries.iterdir()):
                if shard.is_dir() and not shard.is_symlink():
                    removed += sum(1 for child in shard.iterdir() if is_key(child.stem))
                remove_path(shard)
        elif os.path.lexists(entries):
            remove_path(entries)
        if os.path.lexists(self.directory / SCHEMAS_DIR):
            remove_path(self.directory / SCHEMAS_DIR)
        self.close()
        try:
            conn = open_manifest(self.directory, writable=True)
        except (ManifestDamagedError, ManifestNewerError):
            for path in manifest_files(self.directory):
                if os.path.lexists(path):
                    remove_path(path)
            conn = open_manifest(self.directory, writable=True)
        assert conn is not None
        with conn:
            conn.execute("DELETE FROM entries")
        conn.close()
        return removed

    def stats(self) -> dict[str, Any]:
        """Entry count and bytes, overall and per stage (from the index), plus hit counters."""
        self.flush()
        conn = self._require_index(writable=False)
        if conn is None:
            per_stage: dict[str, dict[str, int]] = {}
            count, size = 0, 0
        else:
            try:
                total = conn.execute(
                    "SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS b FROM entries"
                ).fetchone()
                per_stage = {
                    r["stage"] or "-": {"entries": r["n"], "bytes": r["b"]}
                    for r in conn.execute(
                        "SELECT stage, COUNT(*) AS n, SUM(size) AS b FROM entries "
                        "GROUP BY stage ORDER BY stage"
                    ).fetchall()
                }
            except sqlite3.Error as exc:
                raise ManifestDamagedError(
                    f"the cache manifest {str(self.directory / MANIFEST_NAME)!r} is damaged "
                    f"({_reason(exc)}); {VALIDATE_FIX_HINT} to rebuild it",
                    path=str(self.directory / MANIFEST_NAME),
                ) from None
            finally:
                conn.close()
            count, size = int(total["n"]), int(total["b"])
        return {
            "directory": str(self.directory),
            "entries": count,
            "bytes": size,
            "stages": per_stage,
            "hits": self.hits,
            "misses": self.misses,
            "corrupt": self.corrupt,
        }

    def _require_index(self, *, writable: bool) -> sqlite3.Connection | None:
        """The manifest, or a clear error: a missing cache, a damaged or a missing manifest."""
        check_cache_location(self.directory, create=False)
        if not self.directory.exists():
            raise NotFoundError(
                f"no cache at {shown(self.directory)}; check --cache-dir or engine.cache_dir",
                path=str(self.directory),
            )
        # Entries first: a writer creates the manifest before its first entry, so once an entry
        # is seen the manifest is there unless it is damaged (looking the other way round, a
        # writer could create both between the two looks).
        had_entries = _has_entries(self.directory)
        conn = open_manifest(self.directory, writable=writable)
        if conn is None and had_entries:
            raise ManifestDamagedError(
                f"the cache at {shown(self.directory)} has entries but no {MANIFEST_NAME}; "
                f"{VALIDATE_FIX_HINT} to rebuild it from the entries",
                path=str(self.directory / MANIFEST_NAME),
            )
        return conn


def _row_values(row: IndexRow) -> tuple[str, int, str, str, str, str]:
    return (row.sha256, row.size, row.provider, row.model, row.stage, row.schema)


def _has_entries(directory: Path) -> bool:
    entries = directory / ENTRIES_DIR
    with contextlib.suppress(OSError):
        return any(entries.iterdir())
    return False


def remove_path(path: Path) -> None:
    """Remove a file, a symbolic link (never its target) or a whole folder."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)


__all__ = [
    "CACHE_MODES",
    "MANIFEST_MIGRATIONS",
    "MANIFEST_NAME",
    "CacheMode",
    "ManifestDamagedError",
    "ManifestNewerError",
    "ResponseCache",
    "cache_key",
    "check_cache_location",
    "schema_id",
]
