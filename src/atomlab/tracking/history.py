"""The run history: a SQLite index of run summaries, the crash reaper and safe retention.

``run.json`` stays the source of truth; the index (``<home>/runs/index.sqlite``, WAL) holds one
small row per run plus per-step durations, so listing and filtering never parse manifests::

    index = RunIndex.open(home)
    index.reap()                                  # kill -9'd runs become "crashed"
    rows = index.list_runs(status="failed", limit=20)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import statistics
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from atomlab.core.clock import Clock, SystemClock, utc_iso
from atomlab.core.errors import InvalidInputError, NotFoundError
from atomlab.core.logging import get_logger
from atomlab.core.sqlite import Migration, connect, migrate
from atomlab.tracking.groups import stop_group
from atomlab.tracking.models import PerfResult, RunRecord, RunStatus, StepStatus
from atomlab.tracking.store import (
    EVENTS_FILE,
    RUN_FILE,
    JsonlAppender,
    RunLock,
    read_run,
    runs_root,
    save_run,
)

INDEX_FILE = "index.sqlite"
DEFAULT_LIST_LIMIT = 20
DEFAULT_STALE_AFTER_S = 15.0
HISTORY_RUNS = 5
MAX_SQL_INT = 2**63 - 1
#: Run ids are ``<16-char time>-<pipeline slug up to 24>-<6 hex>``; anything much longer is a typo.
MAX_RUN_HINT = 256

_log = get_logger(__name__)

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT,
    heartbeat_at TEXT,
    duration_s REAL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    steps_done INTEGER NOT NULL DEFAULT 0,
    steps_total INTEGER NOT NULL DEFAULT 0,
    current_step TEXT,
    eta_s REAL,
    reason TEXT,
    run_dir TEXT NOT NULL,
    throughput REAL
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);
CREATE INDEX IF NOT EXISTS runs_status_created ON runs (status, created_at);
CREATE INDEX IF NOT EXISTS runs_pipeline_created ON runs (pipeline, created_at);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    pipeline TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    duration_s REAL,
    units_done REAL,
    ended_at TEXT,
    PRIMARY KEY (run_id, name)
);
CREATE INDEX IF NOT EXISTS steps_pipeline_name ON steps (pipeline, name, ended_at);
CREATE TABLE IF NOT EXISTS perf_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    suite TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    unit TEXT NOT NULL DEFAULT '',
    higher_is_better INTEGER NOT NULL DEFAULT 1,
    baseline REAL,
    status TEXT NOT NULL,
    note TEXT,
    created_at TEXT NOT NULL,
    run_id TEXT
);
CREATE INDEX IF NOT EXISTS perf_suite ON perf_results (suite, metric, created_at);
"""

MIGRATIONS: Sequence[Migration] = (_SCHEMA_V1,)
_TERMINAL = tuple(s.value for s in RunStatus if not s.is_active)


@dataclass(frozen=True)
class RunSummary:
    """One row of the index: what ``runs list`` shows without opening any run directory."""

    run_id: str
    pipeline: str
    status: str
    created_at: str
    started_at: str | None
    ended_at: str | None
    heartbeat_at: str | None
    duration_s: float | None
    host: str
    pid: int
    steps_done: int
    steps_total: int
    current_step: str | None
    eta_s: float | None
    reason: str | None
    run_dir: str
    throughput: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> RunSummary:
        return cls(**{key: row[key] for key in row.keys()})  # noqa: SIM118

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_since(value: str) -> str:
    """Accept an ISO date/time or a relative ``30m``/``2h``/``7d`` and return stored-form UTC."""
    text = value.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].replace(".", "", 1).isdigit():
        age_s = float(text[:-1]) * units[text[-1]]
        try:
            return utc_iso(datetime.now(UTC) - timedelta(seconds=age_s))
        except (OverflowError, ValueError):
            return utc_iso(datetime(1, 1, 1, tzinfo=UTC))  # older than any run: all of them
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        shown = value[:60]
        raise InvalidInputError(
            f"--since {shown!r} is not a date; use ISO-8601 (2026-01-31 or 2026-01-31T12:00Z) "
            "or a relative age such as 30m, 2h, 7d",
            field="since",
            value=shown,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return utc_iso(parsed)


class RunIndex:
    """The SQLite index of run summaries under ``<home>/runs``. Thread-safe; one per process."""

    def __init__(self, root: Path, conn: sqlite3.Connection, *, clock: Clock | None = None) -> None:
        self.root = root
        self._conn = conn
        self._lock = threading.Lock()
        self._clock = clock or SystemClock()

    @classmethod
    def open(cls, home: Path, *, clock: Clock | None = None, create: bool = True) -> RunIndex:
        """Open (or create) the index. The index is derived data (``run.json`` files are the
        truth): a damaged one — not a database, malformed, a folder — is moved aside as
        ``index.sqlite.broken-<time>`` and rebuilt from the run directories.

        ``create=False`` is for readers: a data home that has never tracked a run (no index, no
        run directory) gets an empty index in memory, so a query there — even one refused, such
        as an unknown run id — creates nothing on disk.
        """
        root = runs_root(home)
        if not create and not _has_history(root):
            return cls._open_empty(root, clock)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInputError(
                f"cannot use {_short(str(root))!r} for the run history "
                f"({exc.strerror or exc}); pass --home a writable folder",
                field="home",
                value=_short(str(root)),
            ) from None
        try:
            return cls._open_checked(root, clock)
        except sqlite3.DatabaseError as exc:
            if _is_busy(exc):
                raise
            broken = _move_aside(root, exc)
            reason = str(exc)
        index = cls._open_checked(root, clock)
        count = index.rebuild()
        _log.warning("runs.index_rebuilt", broken=str(broken), reason=reason, runs=count)
        return index

    @classmethod
    def _open_empty(cls, root: Path, clock: Clock | None) -> RunIndex:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.row_factory = sqlite3.Row
        migrate(conn, MIGRATIONS)
        return cls(root, conn, clock=clock)

    @classmethod
    def _open_checked(cls, root: Path, clock: Clock | None) -> RunIndex:
        path = root / INDEX_FILE
        if path.exists() and not path.is_file():
            raise sqlite3.DatabaseError(f"{path} is not a file")
        conn = connect(path)
        try:
            migrate(conn, MIGRATIONS)
            problem = conn.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {problem}")
        except BaseException:
            conn.close()
            raise
        return cls(root, conn, clock=clock)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RunIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------

    def upsert(self, record: RunRecord) -> None:
        """Store the summary of ``record`` (and its finished steps) in one transaction."""
        current = record.current_step
        row = (
            record.run_id,
            record.pipeline,
            record.status.value,
            record.created_at,
            record.started_at,
            record.ended_at,
            record.heartbeat_at,
            record.duration_s,
            record.host,
            record.pid,
            record.steps_done,
            record.steps_total,
            current.name if current else None,
            record.eta.remaining_s,
            record.reason,
            record.run_dir,
            record.summary.get("throughput"),
        )
        steps = [
            (
                record.run_id,
                record.pipeline,
                s.name,
                s.status.value,
                s.duration_s,
                s.units_done,
                s.ended_at,
            )
            for s in record.steps
            if s.status.is_done
        ]
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row
            )
            self._conn.executemany("INSERT OR REPLACE INTO steps VALUES (?,?,?,?,?,?,?)", steps)

    def delete(self, run_id: str) -> None:
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
            self._conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    # -- reading -----------------------------------------------------------------------------

    def list_runs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        since: str | None = None,
        pipeline: str | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
    ) -> list[RunSummary]:
        """Newest first, filtered by status (one or several), creation time and pipeline."""
        if limit < 1:
            raise InvalidInputError(f"--limit {str(limit)[:40]} must be at least 1", field="limit")
        limit = min(limit, MAX_SQL_INT)  # a huge limit means "all of them"
        where: list[str] = []
        args: list[Any] = []
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            check_statuses(wanted)
            where.append(f"status IN ({','.join('?' * len(wanted))})")
            args.extend(wanted)
        if since is not None:
            where.append("created_at >= ?")
            args.append(parse_since(since))
        if pipeline is not None:
            where.append("pipeline = ?")
            args.append(pipeline)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, run_id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [RunSummary.from_row(r) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def pipelines(self) -> list[str]:
        """Every pipeline name in the index, sorted (read from its pipeline index, not the rows)."""
        with self._lock:
            rows = self._conn.execute("SELECT DISTINCT pipeline FROM runs ORDER BY pipeline")
            return [str(r[0]) for r in rows]

    def resolve(self, hint: str | None) -> RunSummary:
        """A run by exact id, unique id prefix, or the newest run when ``hint`` is None/latest.

        An empty or blank hint is refused (it must not silently mean the newest run).
        """
        check_run_hint(hint)
        with self._lock:
            if hint in (None, "latest"):
                rows = self._conn.execute(
                    "SELECT * FROM runs ORDER BY created_at DESC, run_id DESC LIMIT 1"
                ).fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT * FROM runs WHERE run_id = ? OR run_id LIKE ? "
                    "ORDER BY run_id = ? DESC, created_at DESC LIMIT 2",
                    (hint, f"{hint}%", hint),
                ).fetchall()
        if not rows:
            what = "no runs recorded yet" if hint in (None, "latest") else f"no run {hint!r}"
            raise NotFoundError(
                f"{what} in {self.root}; see `atomlab runs list` (or pass --home)",
                run=hint,
            )
        if len(rows) > 1 and rows[0]["run_id"] != hint:
            raise InvalidInputError(
                f"run id prefix {hint!r} matches several runs; give more characters",
                run=hint,
            )
        return RunSummary.from_row(rows[0])

    def load(self, hint: str | None) -> RunRecord:
        """The full record (``run.json``) of the run ``hint`` names."""
        return read_run(Path(self.resolve(hint).run_dir))

    def step_durations(
        self, pipeline: str, *, runs: int = HISTORY_RUNS, exclude: str | None = None
    ) -> dict[str, list[float]]:
        """Per step, the durations of its last ``runs`` completions in this pipeline."""
        sql = (
            "SELECT name, duration_s FROM steps WHERE pipeline = ? AND status = 'completed' "
            "AND duration_s IS NOT NULL AND run_id != ? ORDER BY ended_at DESC"
        )
        durations: dict[str, list[float]] = {}
        with self._lock:
            rows = self._conn.execute(sql, (pipeline, exclude or "")).fetchall()
        for name, duration in rows:
            bucket = durations.setdefault(name, [])
            if len(bucket) < runs:
                bucket.append(float(duration))
        return durations

    def step_history(
        self, pipeline: str, *, runs: int = HISTORY_RUNS, exclude: str | None = None
    ) -> list[dict[str, float]]:
        """``{step: duration_s}`` of each of the last ``runs`` completed runs of ``pipeline``."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT s.run_id, s.name, s.duration_s FROM steps s JOIN ("
                "  SELECT run_id, created_at FROM runs WHERE pipeline = ? AND status = 'completed'"
                "  AND run_id != ? ORDER BY created_at DESC LIMIT ?) r ON r.run_id = s.run_id "
                "WHERE s.status = 'completed' AND s.duration_s IS NOT NULL "
                "ORDER BY r.created_at DESC",
                (pipeline, exclude or "", runs),
            ).fetchall()
        per_run: dict[str, dict[str, float]] = {}
        for run_id, name, duration in rows:
            per_run.setdefault(run_id, {})[name] = float(duration)
        return list(per_run.values())

    def throughput_baseline(
        self, pipeline: str, *, runs: int = HISTORY_RUNS, exclude: str | None = None
    ) -> tuple[float | None, int]:
        """Median throughput of the last ``runs`` completed runs of ``pipeline`` and how many."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT throughput FROM runs WHERE pipeline = ? AND status = 'completed' "
                "AND throughput IS NOT NULL AND run_id != ? ORDER BY created_at DESC LIMIT ?",
                (pipeline, exclude or "", runs),
            ).fetchall()
        values = [float(r[0]) for r in rows]
        return (statistics.median(values) if values else None), len(values)

    # -- perf results --------------------------------------------------------------------------

    def add_perf_result(self, result: PerfResult) -> None:
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO perf_results (suite, metric, value, unit, higher_is_better, baseline,"
                " status, note, created_at, run_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    result.suite,
                    result.metric,
                    result.value,
                    result.unit,
                    int(result.higher_is_better),
                    result.baseline,
                    result.status,
                    result.note,
                    result.created_at,
                    result.run_id,
                ),
            )

    def perf_history(self, suite: str, metric: str, *, runs: int = HISTORY_RUNS) -> list[float]:
        """Values of the last ``runs`` non-failed results of ``suite``/``metric``, newest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT value FROM perf_results WHERE suite = ? AND metric = ? AND value IS NOT "
                "NULL AND status != 'failed' ORDER BY created_at DESC, id DESC LIMIT ?",
                (suite, metric, runs),
            ).fetchall()
        return [float(r[0]) for r in rows]

    # -- liveness and retention ------------------------------------------------------------------

    def reap(self, *, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> list[str]:
        """Mark runs whose tracking process died without a word as ``crashed``; return their ids.

        A run is crashed when its lock is free (no live process holds it) and it is either on
        this host or its heartbeat is older than ``stale_after_s``. The status is re-read under
        the lock, so a run that just finished normally is never touched.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT run_id, run_dir, host, heartbeat_at FROM runs "
                "WHERE status IN ('pending', 'running')"
            ).fetchall()
        crashed: list[str] = []
        here = socket.gethostname()
        now = self._clock.now()
        for run_id, run_dir, host, heartbeat_at in rows:
            age = _age_s(heartbeat_at, now)
            if host != here and (age is None or age < stale_after_s):
                continue
            if self._mark_crashed(Path(run_dir), age):
                crashed.append(run_id)
        return crashed

    def _mark_crashed(self, run_dir: Path, heartbeat_age_s: float | None) -> bool:
        lock = RunLock(run_dir)
        if not run_dir.exists():
            return False
        if not lock.acquire():
            return False
        try:
            try:
                record = read_run(run_dir)
            except (NotFoundError, InvalidInputError):
                return False
            if not record.status.is_active:
                self.upsert(record)  # the run finished; the index just lagged behind
                return False
            now = utc_iso(self._clock.now())
            record.status = RunStatus.CRASHED
            record.ended_at = now
            record.reason = (
                "the tracking process died without recording an end (killed with SIGKILL, "
                "out of memory or power loss)"
            )
            stopped: list[int] = []
            unreachable: list[int] = []
            for step in record.steps:
                if step.status is StepStatus.RUNNING:
                    step.status = StepStatus.FAILED
                    step.ended_at = now
                    step.reason = "run crashed"
                    if step.pid is None:
                        continue
                    if record.host != socket.gethostname():
                        unreachable.append(step.pid)  # another machine's processes
                        continue
                    started = step.pid_started or _stamp_s(step.started_at)
                    if stop_group(step.pid, started):
                        stopped.append(step.pid)
            if stopped:
                record.reason = (record.reason or "") + (
                    f"; the step process group(s) {stopped} left running were stopped "
                    "(SIGTERM, then SIGKILL after 5 s)"
                )
            if unreachable:
                record.reason = (record.reason or "") + (
                    f"; the step process group(s) {unreachable} on {record.host} may still be "
                    f"running there (check with `ps -g {unreachable[0]}` on {record.host})"
                )
            save_run(record)
            appender = JsonlAppender(run_dir / EVENTS_FILE)
            try:
                appender.append(
                    {
                        "t": now,
                        "event": "run.crashed",
                        "heartbeat_age_s": heartbeat_age_s,
                        "stopped_step_groups": stopped,
                        "unreachable_step_groups": unreachable,
                        "detected_by_pid": os.getpid(),
                    }
                )
            finally:
                appender.close()
            self.upsert(record)
            _log.warning("run.crashed", run_id=record.run_id, heartbeat_age_s=heartbeat_age_s)
            return True
        finally:
            lock.release()

    def prune(self, *, keep: int, dry_run: bool = False) -> list[str]:
        """Delete the oldest finished runs beyond the newest ``keep``; never an active run.

        Only directories that hold a ``run.json`` and whose lock is free are removed.
        """
        with self._lock:
            rows = self._conn.execute(
                "SELECT run_id, run_dir FROM runs WHERE status IN (?, ?, ?, ?) "
                "ORDER BY created_at DESC, run_id DESC LIMIT -1 OFFSET ?",
                (*_TERMINAL, keep),
            ).fetchall()
        removed: list[str] = []
        for run_id, run_dir in rows:
            path = Path(run_dir)
            if path.parent.resolve() != self.root.resolve() or not (path / RUN_FILE).exists():
                continue  # not a run directory of ours: never delete it
            lock = RunLock(path)
            if not lock.acquire():
                continue
            try:
                if dry_run:
                    removed.append(run_id)
                    continue
                shutil.rmtree(path, ignore_errors=True)
            finally:
                lock.release()
            self.delete(run_id)
            removed.append(run_id)
        return removed

    def rebuild(self) -> int:
        """Re-create every index row from the run directories (after damage or a manual copy)."""
        count = 0
        for run_file in sorted(self.root.glob(f"*/{RUN_FILE}")):
            with contextlib.suppress(NotFoundError, InvalidInputError):
                record = read_run(run_file.parent)
                record.run_dir = str(run_file.parent)
                self.upsert(record)
                count += 1
        return count


def _is_busy(exc: sqlite3.Error) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def _move_aside(root: Path, exc: BaseException) -> Path:
    """Rename a damaged index (and its -wal/-shm) out of the way; never delete it."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = root / f"{INDEX_FILE}.broken-{stamp}"
    try:
        (root / INDEX_FILE).rename(target)
        for suffix in ("-wal", "-shm"):
            side = root / f"{INDEX_FILE}{suffix}"
            if side.exists():
                side.rename(root / f"{INDEX_FILE}.broken-{stamp}{suffix}")
    except OSError as err:
        raise InvalidInputError(
            f"the run index {root / INDEX_FILE} is damaged ({exc}) and cannot be moved aside "
            f"({err.strerror or err}); move it away by hand, then run `atomlab runs reindex`",
            field="index",
        ) from None
    return target


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def check_statuses(values: Iterable[str]) -> None:
    """Refuse (exit 3) any value that is not a run status; callers check before opening."""
    valid = [s.value for s in RunStatus]
    for value in values:
        if value not in valid:
            raise InvalidInputError(
                f"--status {value[:40]!r} is not a run status; use one of {', '.join(valid)}",
                field="status",
                value=value[:40],
            )


def check_run_hint(hint: str | None) -> None:
    """Refuse (exit 3) a run id that can name no run: empty or blank (it must not silently mean
    the newest run), or longer than any run id. ``None`` means the newest run."""
    if hint is not None and not hint.strip():
        raise InvalidInputError(
            "the run id is empty; give a run id or unique prefix, or 'latest' "
            "(see `atomlab runs list`)",
            field="run",
            value=hint,
        )
    if hint is not None and len(hint) > MAX_RUN_HINT:
        raise InvalidInputError(
            f"run id {hint[:40]!r}... is {len(hint)} characters long; run ids are at most "
            f"{MAX_RUN_HINT} (see `atomlab runs list`)",
            field="run",
            value=hint[:40],
        )


def _has_history(root: Path) -> bool:
    """Whether ``root`` holds an index or a run directory (a reader then opens it for real)."""
    try:
        return (root / INDEX_FILE).exists() or any(root.glob(f"*/{RUN_FILE}"))
    except OSError:
        return True  # let the real open say what is wrong with the folder


def _stamp_s(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _age_s(stamp: str | None, now: datetime) -> float | None:
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (now - moment).total_seconds()


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


__all__ = [
    "DEFAULT_LIST_LIMIT",
    "DEFAULT_STALE_AFTER_S",
    "INDEX_FILE",
    "RunIndex",
    "RunSummary",
    "check_run_hint",
    "check_statuses",
    "median_or_none",
    "parse_since",
]
