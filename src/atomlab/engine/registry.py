"""Where the engine's runs are, and how far each got: for tools that show them (the dashboard).

A run's files live beside its output, anywhere on disk; ``atomlab engine run`` appends one line
per start to ``<home>/engine/runs.jsonl`` so they can be found again::

    for ref in known_runs(home):
        progress = run_progress(ref.output)      # read-only: status, items finished, ok, rejected
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomlab.core.clock import Clock, utc_now_iso
from atomlab.core.errors import AtomlabError
from atomlab.core.sqlite import connect
from atomlab.engine.journal import RunPaths, live_status
from atomlab.tracking import tail_jsonl

REGISTRY_RELATIVE = Path("engine") / "runs.jsonl"
DEFAULT_KNOWN_RUNS = 200
RECENT_REJECTS = 5


@dataclass(frozen=True)
class RunRef:
    """One start of ``atomlab engine run``: what it read and wrote, and who started it when."""

    output: Path
    input: Path
    pipeline: str
    started_at: str
    host: str
    pid: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "input": str(self.input),
            "pipeline": self.pipeline,
            "started_at": self.started_at,
            "host": self.host,
            "pid": self.pid,
        }


def registry_path(home: Path) -> Path:
    return home / REGISTRY_RELATIVE


def register_run(
    home: Path, *, output: Path, input_path: Path, pipeline: str, clock: Clock | None = None
) -> RunRef:
    """Append the start of a run to the registry (one ``write`` on an ``O_APPEND`` descriptor)."""
    ref = RunRef(
        output=output.resolve(),
        input=input_path.resolve(),
        pipeline=pipeline,
        started_at=utc_now_iso(clock),
        host=socket.gethostname(),
        pid=os.getpid(),
    )
    path = registry_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(ref.to_dict(), sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return ref


def known_runs(home: Path, *, limit: int = DEFAULT_KNOWN_RUNS) -> list[RunRef]:
    """The latest start of each output, newest first (at most ``limit``)."""
    seen: set[str] = set()
    refs: list[RunRef] = []
    for record in reversed(tail_jsonl(registry_path(home), limit * 4)):
        try:
            ref = RunRef(
                output=Path(record["output"]),
                input=Path(record["input"]),
                pipeline=str(record["pipeline"]),
                started_at=str(record["started_at"]),
                host=str(record.get("host", "")),
                pid=int(record.get("pid", 0)),
            )
        except (KeyError, TypeError, ValueError):
            continue  # a line of another version or a damaged one: skip it, keep the rest
        if str(ref.output) in seen:
            continue
        seen.add(str(ref.output))
        refs.append(ref)
        if len(refs) >= limit:
            break
    return refs


def run_progress(output: Path) -> dict[str, Any]:
    """How far the run writing ``output`` got, read without writing anything.

    ``{"status", "items_finished", "ok", "rejected", "updated_at_epoch", "recent_rejects"}``;
    status is the journal's (``running``, ``interrupted``, ``failed``, ``complete``; ``crashed``
    when it says running but its process is gone, as ``engine status`` reports it), or
    ``missing`` when the journal is gone (removed, or the run was refused before it began).
    """
    paths = RunPaths(output)
    try:
        conn = connect(paths.journal, read_only=True)
    except (AtomlabError, sqlite3.Error, OSError):  # gone, or not a journal: reads as missing
        return _missing()
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        outcomes = dict(
            conn.execute("SELECT outcome, COUNT(*) FROM items GROUP BY outcome").fetchall()
        )
    except sqlite3.Error:
        return _missing()
    finally:
        conn.close()
    ok, rejected = int(outcomes.get("ok", 0)), int(outcomes.get("rejected", 0))
    return {
        "status": live_status(paths, str(meta.get("status", "new")), meta.get("writer")),
        "items_finished": sum(int(n) for n in outcomes.values()),
        "ok": ok,
        "rejected": rejected,
        "updated_at_epoch": _mtime(paths.journal),
        "recent_rejects": _recent_rejects(paths) if rejected else [],
    }


def count_items(input_path: Path) -> int | None:
    """Items in an input file (its non-blank lines), or None when it cannot be read."""
    count = 0
    try:
        with input_path.open("rb") as handle:
            for line in handle:
                if line.strip():
                    count += 1
    except OSError:
        return None
    return count


def _missing() -> dict[str, Any]:
    return {
        "status": "missing",
        "items_finished": 0,
        "ok": 0,
        "rejected": 0,
        "updated_at_epoch": None,
        "recent_rejects": [],
    }


def _mtime(path: Path) -> float | None:
    """When the journal (or its WAL, which a running run writes first) last changed."""
    times = []
    for candidate in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(OSError):
            times.append(candidate.stat().st_mtime)
    return max(times) if times else None


def _recent_rejects(paths: RunPaths) -> list[dict[str, Any]]:
    """The last rejected items (id, stage, error) from the rejects file the run writes."""
    source = paths.rejects_part if paths.rejects_part.exists() else paths.rejects
    return [
        {"id": r.get("id"), "stage": r.get("stage"), "error": r.get("error")}
        for r in tail_jsonl(source, RECENT_REJECTS)
    ]


__all__ = [
    "REGISTRY_RELATIVE",
    "RunRef",
    "count_items",
    "known_runs",
    "register_run",
    "registry_path",
    "run_progress",
]
