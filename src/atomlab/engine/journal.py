"""The run journal and the ordered output: what makes a run resumable exactly.

For ``OUT.jsonl`` a run writes ``OUT.jsonl.tmp.part`` (records, in input order),
``OUT.rejects.jsonl.tmp.part`` (failed items) and ``OUT.jsonl.journal`` (SQLite): the run's
manifest (input SHA-256, pipeline digest, settings), every finished (item, stage) answer, and
for every finished item the byte length both files had after its line. Items finish in input
order, so the journal always describes a prefix of the input; resuming truncates the files to
that prefix and replays journaled stages instead of calling the provider again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from atomlab.core.errors import NotFoundError
from atomlab.core.sqlite import connect, migrate
from atomlab.engine.errors import ResumeRefusedError, RunBusyError
from atomlab.engine.pipeline import canonical_json

PART_SUFFIX = ".tmp.part"
JOURNAL_SUFFIX = ".journal"
REJECTS_SUFFIX = ".rejects.jsonl"
METRICS_SUFFIX = ".metrics.prom"
LOCK_SUFFIX = ".lock"

JOURNAL_MIGRATIONS = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE stages (
        item_index INTEGER NOT NULL,
        stage_key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (item_index, stage_key)
    );
    CREATE TABLE items (
        item_index INTEGER PRIMARY KEY,
        item_id TEXT NOT NULL,
        outcome TEXT NOT NULL,
        out_end INTEGER NOT NULL,
        rejects_end INTEGER NOT NULL
    );
    """,
]


@dataclass(frozen=True)
class RunPaths:
    """Every file a run with output ``output`` reads or writes; all derive from that path."""

    output: Path

    @property
    def part(self) -> Path:
        return self.output.with_name(self.output.name + PART_SUFFIX)

    @property
    def journal(self) -> Path:
        return self.output.with_name(self.output.name + JOURNAL_SUFFIX)

    @property
    def rejects(self) -> Path:
        return self.output.with_name(self.output.stem + REJECTS_SUFFIX)

    @property
    def rejects_part(self) -> Path:
        return self.rejects.with_name(self.rejects.name + PART_SUFFIX)

    @property
    def metrics(self) -> Path:
        return self.output.with_name(self.output.stem + METRICS_SUFFIX)

    @property
    def lock(self) -> Path:
        return self.output.with_name(self.output.name + LOCK_SUFFIX)


class RunLock:
    """One run at a time per output: an exclusive ``flock`` on ``OUT.jsonl.lock``.

    The kernel drops the lock when its process dies (even on SIGKILL), so a stale lock file never
    blocks a resume. The file is removed on release; a process that opened the old file before
    the removal notices the inode changed and takes the lock again on the new file.
    """

    def __init__(self, paths: RunPaths) -> None:
        self.path = paths.lock
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                output = str(self.path)[: -len(LOCK_SUFFIX)]
                raise RunBusyError(
                    f"another run (pid {holder}) is writing {output}; wait for it to finish "
                    "or stop it (Ctrl-C), then resume with --resume",
                    output=output,
                    pid=holder,
                ) from None
            try:
                same = os.fstat(fd).st_ino == self.path.stat().st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # released and removed by its holder meanwhile: lock the new file
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


@dataclass(frozen=True)
class RunManifest:
    """What a run was started with; a resume must match it exactly."""

    input_sha256: str
    pipeline: str
    pipeline_digest: str
    settings: dict[str, Any]

    def differences(self, other: RunManifest) -> list[str]:
        """Human sentences naming each thing that differs between ``self`` (old) and ``other``."""
        changes = []
        if self.input_sha256 != other.input_sha256:
            changes.append(
                f"the input changed (sha256 {self.input_sha256[:12]}… → {other.input_sha256[:12]}…)"
            )
        if self.pipeline != other.pipeline:
            changes.append(f"the pipeline changed ({self.pipeline!r} → {other.pipeline!r})")
        elif self.pipeline_digest != other.pipeline_digest:
            changes.append(
                f"the pipeline {self.pipeline!r} changed (its YAML, prompts or catalogues; "
                f"digest {self.pipeline_digest[:12]}… → {other.pipeline_digest[:12]}…)"
            )
        for key in sorted(set(self.settings) | set(other.settings)):
            old, new = self.settings.get(key), other.settings.get(key)
            if old != new:
                changes.append(f"setting {key} changed ({old!r} → {new!r})")
        return changes


STAGE_BATCH = 64


class Journal:
    """The SQLite journal of one output path (WAL, ``synchronous=NORMAL``).

    Stage answers are buffered and written in the transaction of the next finished item (or
    every ``STAGE_BATCH`` answers): a hard kill loses at most that many answers, which the
    response cache still holds. Finished items are committed one by one, after their line.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection = connect(path)
        migrate(self._conn, JOURNAL_MIGRATIONS)
        self._stage_rows: list[tuple[int, str, str]] = []

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.flush()
        self._conn.close()

    def flush(self) -> None:
        """Write buffered stage answers."""
        if self._stage_rows:
            with self._conn:
                self._write_stage_rows()

    def _write_stage_rows(self) -> None:
        self._conn.executemany(
            "INSERT OR REPLACE INTO stages (item_index, stage_key, value) VALUES (?, ?, ?)",
            self._stage_rows,
        )
        self._stage_rows = []

    def manifest(self) -> RunManifest | None:
        rows = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if "manifest" not in rows:
            return None
        data = json.loads(rows["manifest"])
        return RunManifest(**data)

    def status(self) -> str:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()
        return str(row["value"]) if row else "new"

    def begin(self, manifest: RunManifest) -> None:
        payload = canonical_json(manifest.__dict__)
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('manifest', ?)", (payload,)
            )
        self.set_status("running")

    def set_status(self, status: str) -> None:
        self.flush()
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('status', ?)", (status,)
            )

    def stages_for(self, index: int) -> dict[str, dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT stage_key, value FROM stages WHERE item_index = ?", (index,)
        ).fetchall()
        return {row["stage_key"]: json.loads(row["value"]) for row in rows}

    def record_stage(self, index: int, stage_key: str, value: dict[str, Any]) -> None:
        self._stage_rows.append((index, stage_key, canonical_json(value)))
        if len(self._stage_rows) >= STAGE_BATCH:
            self.flush()

    def record_item(
        self, index: int, item_id: str, outcome: str, out_end: int, rejects_end: int
    ) -> None:
        with self._conn:
            if self._stage_rows:
                self._write_stage_rows()
            self._conn.execute(
                "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?)",
                (index, item_id, outcome, out_end, rejects_end),
            )
            # A finished item's stage answers live on in its line; keep the journal small.
            self._conn.execute("DELETE FROM stages WHERE item_index = ?", (index,))

    def finished(self) -> tuple[int, int, int, dict[str, int]]:
        """(items finished, output length, rejects length, count per outcome)."""
        row = self._conn.execute(
            "SELECT COUNT(*) AS n, MAX(item_index) AS last FROM items"
        ).fetchone()
        count = int(row["n"])
        if count and int(row["last"]) != count - 1:
            raise ResumeRefusedError(
                f"journal {str(self.path)!r} is inconsistent (finished items are not a prefix); "
                "run without --resume to start over",
                journal=str(self.path),
            )
        ends = self._conn.execute(
            "SELECT out_end, rejects_end FROM items ORDER BY item_index DESC LIMIT 1"
        ).fetchone()
        outcomes = {
            r["outcome"]: int(r["n"])
            for r in self._conn.execute(
                "SELECT outcome, COUNT(*) AS n FROM items GROUP BY outcome"
            ).fetchall()
        }
        if ends is None:
            return 0, 0, 0, {}
        return count, int(ends["out_end"]), int(ends["rejects_end"]), outcomes


class OrderedSink:
    """Appends finished items' lines to the part files and journals each one after it is written."""

    def __init__(
        self, paths: RunPaths, journal: Journal, *, out_end: int, rejects_end: int
    ) -> None:
        self._journal = journal
        self._out = _open_at(paths.part, out_end)
        self._rejects = _open_at(paths.rejects_part, rejects_end)
        self.out_end = out_end
        self.rejects_end = rejects_end

    def write(self, index: int, item_id: str, outcome: str, line: bytes) -> None:
        target = self._out if outcome == "ok" else self._rejects
        target.write(line)
        target.flush()
        if outcome == "ok":
            self.out_end += len(line)
        else:
            self.rejects_end += len(line)
        self._journal.record_item(index, item_id, outcome, self.out_end, self.rejects_end)

    def sync(self) -> None:
        for handle in (self._out, self._rejects):
            handle.flush()
            os.fsync(handle.fileno())

    def close(self) -> None:
        for handle in (self._out, self._rejects):
            with contextlib.suppress(OSError):
                handle.close()


def _open_at(path: Path, length: int) -> BinaryIO:
    """Open ``path`` for appending after truncating it to ``length`` (created when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if length > 0 and not path.exists():
        raise ResumeRefusedError(
            f"{str(path)!r} is missing, but the journal records {length} bytes of it: it was "
            "moved or deleted (or the machine crashed). Run without --resume to start over "
            "(the cache keeps every finished call)",
            path=str(path),
        )
    handle = path.open("r+b" if path.exists() else "w+b")
    size = handle.seek(0, os.SEEK_END)
    if size < length:
        handle.close()
        raise ResumeRefusedError(
            f"{str(path)!r} is shorter ({size} bytes) than the journal records ({length}); "
            "the machine probably crashed. Run without --resume to start over "
            "(the cache keeps every finished call)",
            path=str(path),
        )
    handle.truncate(length)
    handle.seek(length)
    return handle


def finalise(paths: RunPaths) -> None:
    """Move the part files onto their final names (atomic rename, directory synced)."""
    paths.part.replace(paths.output)
    if paths.rejects_part.exists() and paths.rejects_part.stat().st_size > 0:
        paths.rejects_part.replace(paths.rejects)
    else:
        with contextlib.suppress(FileNotFoundError):
            paths.rejects_part.unlink()
        with contextlib.suppress(FileNotFoundError):
            paths.rejects.unlink()
    with contextlib.suppress(OSError):
        fd = os.open(paths.output.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def describe_run(output: Path) -> dict[str, Any]:
    """The state of the run writing ``output``: status, items finished, what it was started with."""
    paths = RunPaths(output)
    if not paths.journal.exists():
        raise NotFoundError(
            f"no run journal for {str(output)!r} (looked for {str(paths.journal)!r})",
            path=str(paths.journal),
        )
    journal = Journal(paths.journal)
    try:
        manifest = journal.manifest()
        done, out_end, rejects_end, outcomes = journal.finished()
        return {
            "output": str(output),
            "journal": str(paths.journal),
            "status": journal.status(),
            "items_finished": done,
            "ok": outcomes.get("ok", 0),
            "rejected": outcomes.get("rejected", 0),
            "output_bytes": out_end,
            "rejects_bytes": rejects_end,
            "manifest": manifest.__dict__ if manifest else None,
        }
    finally:
        journal.close()


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


def discard(paths: RunPaths) -> None:
    """Remove a previous run's journal and part files (a fresh run starts from nothing)."""
    for path in (
        paths.part,
        paths.rejects_part,
        paths.journal,
        paths.journal.with_name(paths.journal.name + "-wal"),
        paths.journal.with_name(paths.journal.name + "-shm"),
    ):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


__all__ = [
    "JOURNAL_MIGRATIONS",
    "Journal",
    "OrderedSink",
    "RunLock",
    "RunManifest",
    "RunPaths",
    "describe_run",
    "discard",
    "finalise",
    "write_atomically",
]
