"""One run's directory on disk: unique creation, the OS lock, atomic ``run.json``, JSONL appends.

<home>/runs/<run_id>/run.json         latest state, replaced atomically (temp file + rename)
<home>/runs/<run_id>/events.jsonl     append-only life-cycle events
<home>/runs/<run_id>/telemetry.jsonl  append-only samples
<home>/runs/<run_id>/run.lock         fcntl lock held by the tracking process for the run's life
<home>/runs/<run_id>/logs/            output of subprocess steps
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import re
import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from atomlab.core.errors import InvalidInputError, NotFoundError, UnavailableError
from atomlab.tracking.models import RunRecord

RUN_FILE = "run.json"
EVENTS_FILE = "events.jsonl"
TELEMETRY_FILE = "telemetry.jsonl"
LOCK_FILE = "run.lock"
LOGS_DIR = "logs"
PROGRESS_DIR = "progress"
RUNS_DIR = "runs"
MAX_ID_ATTEMPTS = 20
_SLUG = re.compile(r"[^a-z0-9]+")
_tmp_counter = itertools.count()


def runs_root(home: Path) -> Path:
    """Where every run directory and the index live."""
    return Path(home).expanduser() / RUNS_DIR


def new_run_id(pipeline: str, moment: datetime) -> str:
    """A sortable, unique-enough id: ``20260101T120000Z-<pipeline>-<6 hex>``."""
    slug = _SLUG.sub("-", pipeline.lower()).strip("-")[:24] or "run"
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{slug}-{secrets.token_hex(3)}"


def create_run_dir(root: Path, pipeline: str, moment: datetime) -> tuple[str, Path]:
    """Create a fresh run directory with an atomic ``mkdir``; a collision draws a new id."""
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(MAX_ID_ATTEMPTS):
        run_id = new_run_id(pipeline, moment)
        path = root / run_id
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return run_id, path
    raise UnavailableError(
        f"could not find a free run id under {root} after {MAX_ID_ATTEMPTS} tries"
    )


class RunLock:
    """An exclusive ``fcntl.flock`` on ``run.lock``; the OS frees it when the process dies."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def lock_is_free(run_dir: Path) -> bool:
    """True when no live process holds the run's lock (probing takes and drops it)."""
    if not (run_dir / LOCK_FILE).exists():
        return True
    probe = RunLock(run_dir)
    if probe.acquire():
        probe.release()
        return True
    return False


def write_json_atomic(path: Path, data: dict[str, Any], *, fsync: bool = False) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it over: readers never see half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_tmp_counter)}.tmp")
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, body)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class JsonlAppender:
    """Appends one JSON object per line with a single ``write`` on an ``O_APPEND`` descriptor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        self.lines = 0

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        os.write(self._fd, line.encode())
        self.lines += 1

    def fsync(self) -> None:
        with contextlib.suppress(OSError):
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def read_run(run_dir: Path) -> RunRecord:
    """Load ``run.json``; a missing or unreadable file is a clear error, never a traceback."""
    path = run_dir / RUN_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFoundError(
            f"no run record at {path}; the directory is not a run or was pruned",
            path=str(path),
        ) from None
    try:
        return RunRecord.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidInputError(
            f"run record {path} is not valid ({exc.errors()[0]['msg']}); "
            "it was written by another tool or damaged",
            path=str(path),
        ) from None


def save_run(record: RunRecord, *, fsync: bool = False) -> None:
    write_json_atomic(Path(record.run_dir) / RUN_FILE, record.model_dump(mode="json"), fsync=fsync)


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete JSON line of ``path``; a torn last line (a writer mid-append) is skipped."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict):
                yield item


def tail_jsonl(path: Path, count: int, *, chunk: int = 64 * 1024) -> list[dict[str, Any]]:
    """The last ``count`` complete records of ``path``, reading only the end of the file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return []
    with path.open("rb") as handle:
        data = b""
        pos = size
        while pos > 0 and data.count(b"\n") <= count:
            step = min(chunk, pos)
            pos -= step
            handle.seek(pos)
            data = handle.read(step) + data
    lines = data.split(b"\n")
    complete = lines[:-1]  # whatever follows the last newline is a torn line
    if pos > 0:
        complete = complete[1:]  # the first piece may start mid-line
    records: list[dict[str, Any]] = []
    for line in complete[-count:]:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            records.append(item)
    return records


__all__ = [
    "EVENTS_FILE",
    "LOCK_FILE",
    "RUN_FILE",
    "TELEMETRY_FILE",
    "JsonlAppender",
    "RunLock",
    "create_run_dir",
    "iter_jsonl",
    "lock_is_free",
    "read_run",
    "runs_root",
    "save_run",
    "tail_jsonl",
    "write_json_atomic",
]
