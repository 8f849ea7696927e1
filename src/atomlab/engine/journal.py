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
import socket
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import psutil

from atomlab.core.errors import InvalidInputError, NotFoundError, UnavailableError
from atomlab.core.sqlite import connect, migrate
from atomlab.engine.errors import JournalDamagedError, ResumeRefusedError, RunBusyError
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
    # Per input line a short digest, so a refused resume can name the first changed line.
    """
    CREATE TABLE lines (
        item_index INTEGER PRIMARY KEY,
        line_no INTEGER NOT NULL,
        item_id TEXT NOT NULL,
        digest BLOB NOT NULL
    );
    """,
]
JOURNAL_VERSION = len(JOURNAL_MIGRATIONS)
PID_START_TOLERANCE_S = 1.0  # process start times are compared to this precision


@dataclass(frozen=True)
class InputLine:
    """One item of an input file: its 1-based line, its id and a digest of the line's bytes."""

    line_no: int
    item_id: str
    digest: bytes


def first_input_change(old: Sequence[InputLine], new: Sequence[InputLine]) -> dict[str, Any] | None:
    """Where ``new`` first differs from ``old``: ``{"line", "item_id", "sentence"}`` or None."""
    for before, after in zip(old, new, strict=False):
        if before.digest != after.digest or before.line_no != after.line_no:
            same_id = before.item_id == after.item_id
            what = (
                f"item {after.item_id!r} changed"
                if same_id
                else f"item {before.item_id!r} became {after.item_id!r}"
            )
            return _change_at(after, f"the first changed line is line {after.line_no} ({what})")
    if len(new) > len(old):
        added = new[len(old)]
        return _change_at(
            added, f"line {added.line_no} (item {added.item_id!r}) and after were added"
        )
    if len(old) > len(new):
        gone = old[len(new)]
        return _change_at(
            gone,
            f"the input now ends before line {gone.line_no} (item {gone.item_id!r}); "
            f"the run had {len(old)} items, the input has {len(new)}",
        )
    return None


def _change_at(line: InputLine, sentence: str) -> dict[str, Any]:
    return {"line": line.line_no, "item_id": line.item_id, "sentence": sentence}


@dataclass(frozen=True)
class Writer:
    """The process writing a run: checked by readers, so a killed run is not shown as running."""

    pid: int
    host: str
    started: float  # the process's start time (seconds since the epoch)

    @classmethod
    def this_process(cls) -> Writer:
        return cls(os.getpid(), socket.gethostname(), psutil.Process().create_time())

    def alive(self) -> bool | None:
        """True/False on this host; None when it ran on another host (cannot be checked)."""
        if self.host != socket.gethostname():
            return None
        try:
            started = psutil.Process(self.pid).create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return False
        return abs(started - self.started) < PID_START_TOLERANCE_S

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": self.host, "started": self.started}


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

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._stage_rows: list[tuple[int, str, str]] = []
        with self.reading():
            self._conn: sqlite3.Connection = connect(path, read_only=read_only)
            try:
                if read_only:
                    self._check_read_only()
                else:
                    migrate(self._conn, JOURNAL_MIGRATIONS)
            except BaseException:
                self._conn.close()
                raise

    def _check_read_only(self) -> None:
        version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        if version > JOURNAL_VERSION:
            raise UnavailableError(
                f"run journal {str(self.path)!r} was written by a newer atomlab "
                f"(version {version}); upgrade atomlab",
                path=str(self.path),
            )
        if version < 1:
            raise sqlite3.DatabaseError("no journal tables (schema version 0)")
        self._conn.execute("SELECT COUNT(*) FROM items").fetchone()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Turn what a damaged journal raises into :class:`JournalDamagedError` (exit 3)."""
        try:
            yield
        except (sqlite3.Error, OSError, ValueError, TypeError, KeyError) as exc:
            if isinstance(exc, OSError) and exc.filename not in (None, str(self.path)):
                raise
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            raise JournalDamagedError(
                f"the run journal {str(self.path)!r} is damaged ({reason}); run without --resume "
                "to start over (the cache keeps every finished call)",
                journal=str(self.path),
                reason=reason,
            ) from None

    def close(self) -> None:
        if not self.read_only:
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
        with self.reading():
            rows = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
            if "manifest" not in rows:
                return None
            data = json.loads(rows["manifest"])
            manifest = RunManifest(**data)
            if not isinstance(manifest.settings, dict):
                raise ValueError("the manifest's settings are not an object")
            return manifest

    def status(self) -> str:
        with self.reading():
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()
        return str(row["value"]) if row else "new"

    def writer(self) -> Writer | None:
        """The process that last started or resumed the run (None in an older journal)."""
        with self.reading():
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'writer'").fetchone()
            if row is None:
                return None
            data = json.loads(row["value"])
            return Writer(int(data["pid"]), str(data["host"]), float(data["started"]))

    def input_lines(self) -> list[InputLine]:
        with self.reading():
            rows = self._conn.execute(
                "SELECT line_no, item_id, digest FROM lines ORDER BY item_index"
            ).fetchall()
        return [InputLine(int(r["line_no"]), str(r["item_id"]), bytes(r["digest"])) for r in rows]

    def begin(self, manifest: RunManifest, lines: Sequence[InputLine] = ()) -> None:
        payload = canonical_json(manifest.__dict__)
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('manifest', ?)", (payload,)
            )
            self._conn.execute("DELETE FROM lines")
            self._conn.executemany(
                "INSERT INTO lines (item_index, line_no, item_id, digest) VALUES (?, ?, ?, ?)",
                [(n, line.line_no, line.item_id, line.digest) for n, line in enumerate(lines)],
            )
        self.set_status("running")

    def claim(self) -> None:
        """Record this process as the run's writer (readers check it is alive)."""
        payload = canonical_json(Writer.this_process().to_dict())
        with self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('writer', ?)", (payload,)
            )

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
        with self.reading():
            row = self._conn.execute(
                "SELECT COUNT(*) AS n, MAX(item_index) AS last FROM items"
            ).fetchone()
            count = int(row["n"])
            if count and int(row["last"]) != count - 1:
                raise JournalDamagedError(
                    f"the run journal {str(self.path)!r} is inconsistent (finished items are not "
                    "a prefix); run without --resume to start over",
                    journal=str(self.path),
                )
            ends = self._conn.execute(
                "SELECT out_end, rejects_end FROM items ORDER BY item_index DESC LIMIT 1"
            ).fetchone()
            outcomes = {
                str(r["outcome"]): int(r["n"])
                for r in self._conn.execute(
                    "SELECT outcome, COUNT(*) AS n FROM items GROUP BY outcome"
                ).fetchall()
            }
            if ends is None:
                return 0, 0, 0, {}
            out_end, rejects_end = int(ends["out_end"]), int(ends["rejects_end"])
            if out_end < 0 or rejects_end < 0:
                raise ValueError("negative file lengths")
            return count, out_end, rejects_end, outcomes


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
    if not paths.journal.is_file():
        raise InvalidInputError(
            f"{str(paths.journal)!r} is not a run journal (a folder?); pass the --output of a run",
            path=str(paths.journal),
        )
    journal = Journal(paths.journal, read_only=True)
    try:
        manifest = journal.manifest()
        done, out_end, rejects_end, outcomes = journal.finished()
        status = journal.status()
        writer = journal.writer()
    finally:
        journal.close()
    state: dict[str, Any] = {
        "output": str(output),
        "journal": str(paths.journal),
        "status": status,
        "items_finished": done,
        "ok": outcomes.get("ok", 0),
        "rejected": outcomes.get("rejected", 0),
        "output_bytes": out_end,
        "rejects_bytes": rejects_end,
        "manifest": manifest.__dict__ if manifest else None,
        "writer": writer.to_dict() if writer else None,
    }
    if status == "running":
        alive = _writer_alive(paths, writer)
        if alive is False:
            # Killed (SIGKILL, power cut) before it could mark the journal: say so.
            state["status"] = "crashed"
            state["hint"] = "the process writing this run is gone; continue with --resume"
        elif alive is None:
            state["hint"] = f"written from host {writer.host if writer else '?'}; not checked here"
    return state


def live_status(paths: RunPaths, status: str, writer_json: str | None) -> str:
    """The journal's status, with ``running`` turned into ``crashed`` when its writer is gone."""
    if status != "running":
        return status
    writer = None
    if writer_json:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            data = json.loads(writer_json)
            writer = Writer(int(data["pid"]), str(data["host"]), float(data["started"]))
    return "crashed" if _writer_alive(paths, writer) is False else status


def _writer_alive(paths: RunPaths, writer: Writer | None) -> bool | None:
    """Is the run's process alive? Its pid and start time; None when that cannot be told.

    The reader never touches the run's lock (a shared lock taken at the wrong moment would make
    a starting run refuse as "busy").
    """
    if writer is None:  # an older journal: a lock file left behind is all there is
        return None if os.path.lexists(paths.lock) else False
    return writer.alive()


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


def discard(paths: RunPaths) -> None:
    """Remove a previous run's journal and part files (a fresh run starts from nothing).

    Only files: a folder in their place is refused (exit 3), never deleted.
    """
    for path in (
        paths.part,
        paths.rejects_part,
        paths.journal,
        paths.journal.with_name(paths.journal.name + "-wal"),
        paths.journal.with_name(paths.journal.name + "-shm"),
    ):
        if path.is_dir() and not path.is_symlink():
            raise InvalidInputError(
                f"{str(path)!r} is a folder, but the run writes a file there; move it away or "
                "choose another --output",
                path=str(path),
            )
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
    "InputLine",
    "Journal",
    "OrderedSink",
    "RunLock",
    "RunManifest",
    "RunPaths",
    "Writer",
    "describe_run",
    "discard",
    "finalise",
    "first_input_change",
    "live_status",
    "write_atomically",
]
