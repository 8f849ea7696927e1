"""The trajectory database: create runs with their catalogs, write records in batches, read back.

    store = open_store(db_path)                  # read-only: safe while a recording runs
    for action in store.actions():               # the latest run's actions
        window = store.signal_window(action.window_start_dt_s, action.window_end_dt_s)

Writers use ``open_store(path, read_only=False)``, :meth:`TrajectoryStore.create_run` and
:meth:`TrajectoryStore.record_writer` (a background :class:`BatchWriter`).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from atomlab import __version__
from atomlab.core.errors import InvalidInputError, NotFoundError, UnavailableError
from atomlab.core.sqlite import BatchWriter, connect, migrate, schema_version
from atomlab.trajectory.config import MonitorConfig
from atomlab.trajectory.records import (
    ActionEvent,
    ChannelInfo,
    MissedTicks,
    MonitorError,
    Record,
    RunStatus,
    Sample,
    Value,
)
from atomlab.trajectory.schema import MIGRATIONS, ensure_value_columns

CATALOG_TABLES = {"signals": "signal_catalog", "specs": "spec_catalog"}
SAMPLE_TABLES = {"signals": "signal_samples", "specs": "spec_samples"}
ACTION_COLUMNS = (
    "action_idx, sample_idx, dt_s, end_dt_s, detected_at_utc, spec_label, old_value, new_value, "
    "delta, steps, source, window_start_dt_s, window_end_dt_s"
)


@dataclass(frozen=True)
class RunInfo:
    """One recording as the ``runs`` table holds it (plus whether its writer is still alive)."""

    id: int
    name: str
    status: RunStatus
    started_at_utc: str
    ended_at_utc: str | None
    stop_reason: str | None
    interval_s: float
    rotate_entries: int
    action_window_s: float
    config: dict[str, Any]
    atomlab_version: str
    instrument: dict[str, Any]
    hostname: str
    pid: int
    samples: int
    actions: int
    errors: int
    missed_ticks: int
    last_dt_s: float | None
    last_write_utc: str | None
    writer_alive: bool | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SignalWindow:
    """The signals around an action, columnar: ``values[label][i]`` was read at ``dt_s[i]``."""

    start_dt_s: float
    end_dt_s: float
    complete: bool
    partial_reason: str | None
    missed_ticks: int
    labels: tuple[str, ...]
    units: dict[str, str]
    sample_idx: list[int]
    dt_s: list[float]
    values: dict[str, list[Value]]

    @property
    def count(self) -> int:
        return len(self.sample_idx)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for JSON (shallow: the value lists are already plain)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["labels"] = list(self.labels)
        out["count"] = self.count
        return out


def _unusable(path: Path, exc: BaseException) -> InvalidInputError | UnavailableError:
    """A database that cannot be opened: busy (exit 4), or a wrong path or file (exit 3)."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return UnavailableError(
            f"trajectory database {str(path)!r} is busy ({text}); try again in a moment",
            path=str(path),
        )
    return InvalidInputError(
        f"cannot use {str(path)!r} as a trajectory database ({text}); pass --db-path (or "
        "`config set --db-path`) a trajectory database or a new file in a writable folder",
        field="db_path",
        value=str(path),
    )


def open_store(path: Path | str, *, read_only: bool = True) -> TrajectoryStore:
    """Open the trajectory database at ``path``. Read-only stores never create or change files."""
    return TrajectoryStore(Path(path), read_only=read_only)


class TrajectoryStore:
    """One trajectory database. Use :func:`open_store`; close it (or use ``with``) when done."""

    def __init__(self, path: Path, *, read_only: bool = True) -> None:
        self.path = path
        self.read_only = read_only
        try:
            self._conn = connect(path, read_only=read_only)
        except (sqlite3.Error, OSError) as exc:
            raise _unusable(path, exc) from None
        try:
            self._check_or_migrate()
        except (sqlite3.Error, OSError) as exc:
            self._conn.close()
            raise _unusable(path, exc) from None

    def _check_or_migrate(self) -> None:
        path, read_only = self.path, self.read_only
        if read_only:
            version = schema_version(self._conn)
            if version == 0:
                self._conn.close()
                raise NotFoundError(
                    f"{str(path)!r} holds no trajectory data yet; record a run with "
                    "`atomlab trajectory monitor run` or pass the right --db-path",
                    path=str(path),
                )
            if version > len(MIGRATIONS):
                self._conn.close()
                raise UnavailableError(
                    f"database schema version {version} is newer than this atomlab supports "
                    f"({len(MIGRATIONS)}); upgrade atomlab",
                    path=str(path),
                )
        else:
            migrate(self._conn, MIGRATIONS)

    @property
    def connection(self) -> sqlite3.Connection:
        """The store's connection, for SQL of your own (read-only stores refuse writes)."""
        return self._conn

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> TrajectoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writing

    def has_run(self, name: str) -> bool:
        return (
            self._conn.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone() is not None
        )

    def require_new_run_name(self, name: str) -> None:
        """Raise :class:`InvalidInputError` (exit 3) when a run called ``name`` exists."""
        if self.has_run(name):
            raise _duplicate_run(name)

    def create_run(
        self,
        config: MonitorConfig,
        *,
        signals: Sequence[ChannelInfo],
        specs: Sequence[ChannelInfo],
        instrument: Mapping[str, Any],
        started_at_utc: str,
    ) -> RunInfo:
        """Insert the run and its catalogs in one transaction; a duplicate name writes nothing."""
        self.require_new_run_name(config.run_name)
        try:
            with self._conn:
                ensure_value_columns(self._conn, "signal_samples", len(signals))
                ensure_value_columns(self._conn, "spec_samples", len(specs))
                cursor = self._conn.execute(
                    "INSERT INTO runs (name, status, started_at_utc, interval_s, rotate_entries,"
                    " action_window_s, config_json, atomlab_version, instrument_json, hostname,"
                    " pid) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        config.run_name,
                        started_at_utc,
                        config.interval_s,
                        config.rotate_entries,
                        config.action_window_s,
                        json.dumps(config.model_dump(mode="json")),
                        __version__,
                        json.dumps(dict(instrument), default=str),
                        socket.gethostname(),
                        os.getpid(),
                    ),
                )
                run_id = int(cursor.lastrowid or 0)
                self._insert_catalog(run_id, "signals", signals, config)
                self._insert_catalog(run_id, "specs", specs, config)
        except sqlite3.IntegrityError as exc:
            if "runs.name" in str(exc):
                raise _duplicate_run(config.run_name) from None
            raise
        return self.run(config.run_name)

    def _insert_catalog(
        self, run_id: int, kind: str, channels: Sequence[ChannelInfo], config: MonitorConfig
    ) -> None:
        for k, ch in enumerate(channels):
            common = (run_id, k, ch.label, ch.unit, ch.source_command, ch.source_field)
            limits = (ch.value_type, ch.min_value, ch.max_value)
            if kind == "signals":
                self._conn.execute(
                    "INSERT INTO signal_catalog VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*common, ch.signal_index, *limits, ch.description),
                )
            else:
                tolerance = config.tolerances.get(ch.label, 0.0)
                self._conn.execute(
                    "INSERT INTO spec_catalog VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*common, ch.set_command, *limits, tolerance, ch.description),
                )

    def finish_run(
        self,
        run_id: int,
        *,
        status: RunStatus,
        ended_at_utc: str,
        reason: str,
        started_at_utc: str | None = None,
    ) -> None:
        """Mark the run ended; ``started_at_utc`` refines the anchor to the exact ``dt_s = 0``."""
        with self._conn:
            self._conn.execute(
                "UPDATE runs SET status = ?, ended_at_utc = ?, stop_reason = ?,"
                " started_at_utc = coalesce(?, started_at_utc) WHERE id = ?",
                (status, ended_at_utc, reason, started_at_utc, run_id),
            )

    def record_writer(
        self,
        run: RunInfo,
        *,
        n_signals: int,
        n_specs: int,
        flush_interval_s: float,
        max_batch: int,
    ) -> BatchWriter[Record]:
        """A started background writer that commits records of ``run`` in batches."""
        write = _RecordWriter(run.id, run.rotate_entries, n_signals, n_specs)
        return BatchWriter(
            self.path,
            write,
            max_batch=max_batch,
            flush_interval_s=flush_interval_s,
            max_queue=max(10_000, 4 * max_batch),
            name=f"trajectory-writer-{run.id}",
        ).start()

    # ------------------------------------------------------------------ reading

    def runs(self) -> list[RunInfo]:
        """Every run, newest first."""
        rows = self._conn.execute("SELECT * FROM runs ORDER BY id DESC").fetchall()
        return [_run_info(row) for row in rows]

    def run(self, name: str | None = None) -> RunInfo:
        """The run called ``name``, or the latest run when ``name`` is None."""
        if name is None:
            row = self._conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
            if row is None:
                raise NotFoundError(
                    f"{str(self.path)!r} holds no runs yet; record one with "
                    "`atomlab trajectory monitor run`",
                    path=str(self.path),
                )
            return _run_info(row)
        row = self._conn.execute("SELECT * FROM runs WHERE name = ?", (name,)).fetchone()
        if row is None:
            known = [r[0] for r in self._conn.execute("SELECT name FROM runs ORDER BY id DESC")]
            raise NotFoundError(
                f"no run named {name!r} in {str(self.path)!r}; known runs: "
                f"{', '.join(known[:10]) or '(none)'} (see `atomlab trajectory runs list`)",
                field="run_name",
                value=name,
            )
        return _run_info(row)

    def catalog(self, kind: str, run_name: str | None = None) -> list[ChannelInfo]:
        """The run's ``signals`` or ``specs`` catalog, in column order."""
        run = self.run(run_name)
        rows = self._conn.execute(
            f"SELECT * FROM {CATALOG_TABLES[kind]} WHERE run_id = ? ORDER BY column_index",  # noqa: S608
            (run.id,),
        ).fetchall()
        return [_channel_info(row) for row in rows]

    def actions(self, run_name: str | None = None) -> list[ActionEvent]:
        """The run's actions in ``action_idx`` order (the latest run when no name is given)."""
        run = self.run(run_name)
        rows = self._conn.execute(
            f"SELECT {ACTION_COLUMNS} FROM action_events WHERE run_id = ? ORDER BY action_idx",  # noqa: S608
            (run.id,),
        ).fetchall()
        return [ActionEvent(**dict(row)) for row in rows]

    def action(self, action_idx: int, run_name: str | None = None) -> ActionEvent:
        run = self.run(run_name)
        row = self._conn.execute(
            f"SELECT {ACTION_COLUMNS} FROM action_events WHERE run_id = ? AND action_idx = ?",  # noqa: S608
            (run.id, action_idx),
        ).fetchone()
        if row is None:
            count = self._conn.execute(
                "SELECT count(*) FROM action_events WHERE run_id = ?", (run.id,)
            ).fetchone()[0]
            held = f"it has {count} actions (indexes 0..{count - 1})" if count else "it has none"
            if run.status == "running":
                held += " so far (while recording, a change is stored seconds after it is seen)"
            raise NotFoundError(
                f"run {run.name!r} has no action {action_idx}; {held}; "
                "see `atomlab trajectory action list`",
                field="action_idx",
                value=action_idx,
            )
        return ActionEvent(**dict(row))

    def signal_window(
        self,
        start_dt_s: float,
        end_dt_s: float,
        run_name: str | None = None,
        *,
        kind: str = "signals",
    ) -> SignalWindow:
        """Samples with ``start_dt_s <= dt_s <= end_dt_s``, marked complete or partial."""
        run = self.run(run_name)
        channels = self.catalog(kind, run.name)
        labels = tuple(ch.label for ch in channels)
        columns = ", ".join(f"v{k}" for k in range(len(channels)))
        table = SAMPLE_TABLES[kind]
        rows = self._conn.execute(
            f"SELECT sample_idx, dt_s, {columns} FROM {table} "  # noqa: S608
            "WHERE run_id = ? AND dt_s BETWEEN ? AND ? ORDER BY dt_s",
            (run.id, start_dt_s, end_dt_s),
        ).fetchall()
        values: dict[str, list[Value]] = {label: [] for label in labels}
        for row in rows:
            for k, label in enumerate(labels):
                values[label].append(row[2 + k])
        complete, reason = self._coverage(run, table, start_dt_s, end_dt_s)
        return SignalWindow(
            start_dt_s=start_dt_s,
            end_dt_s=end_dt_s,
            complete=complete,
            partial_reason=reason,
            missed_ticks=self._missed_between(run, start_dt_s, end_dt_s),
            labels=labels,
            units={ch.label: ch.unit for ch in channels},
            sample_idx=[int(row[0]) for row in rows],
            dt_s=[float(row[1]) for row in rows],
            values=values,
        )

    def _coverage(
        self, run: RunInfo, table: str, start_dt_s: float, end_dt_s: float
    ) -> tuple[bool, str | None]:
        last = self._conn.execute(
            f"SELECT max(dt_s) FROM {table} WHERE run_id = ?",  # noqa: S608
            (run.id,),
        ).fetchone()[0]
        if start_dt_s < 0:
            return False, "the window starts before the run started"
        if last is None or last < end_dt_s:
            if run.status == "running":
                return False, "the recording has not reached the window end yet"
            return False, "the run ended before the window end"
        return True, None

    def _missed_between(self, run: RunInfo, start_dt_s: float, end_dt_s: float) -> int:
        """Missed ticks scheduled inside the window (ranges clipped to it)."""
        lo = math.ceil(start_dt_s / run.interval_s - 1e-9)
        hi = math.floor(end_dt_s / run.interval_s + 1e-9)
        rows = self._conn.execute(
            "SELECT first_tick_idx, count FROM missed_ticks WHERE run_id = ? "
            "AND scheduled_dt_s <= ?",
            (run.id, end_dt_s),
        ).fetchall()
        return sum(max(0, min(hi, first + count - 1) - max(lo, first) + 1) for first, count in rows)

    def errors(self, run_name: str | None = None) -> list[MonitorError]:
        run = self.run(run_name)
        rows = self._conn.execute(
            "SELECT dt_s, at_utc, error_type, message, command, details_json FROM monitor_errors "
            "WHERE run_id = ? ORDER BY id",
            (run.id,),
        ).fetchall()
        return [
            MonitorError(
                dt_s=row["dt_s"],
                at_utc=row["at_utc"],
                error_type=row["error_type"],
                message=row["message"],
                command=row["command"],
                details=json.loads(row["details_json"]),
            )
            for row in rows
        ]

    def missed(self, run_name: str | None = None) -> list[MissedTicks]:
        run = self.run(run_name)
        rows = self._conn.execute(
            "SELECT first_tick_idx, count, scheduled_dt_s, detected_dt_s, reason FROM missed_ticks "
            "WHERE run_id = ? ORDER BY first_tick_idx",
            (run.id,),
        ).fetchall()
        return [MissedTicks(**dict(row)) for row in rows]

    def samples(
        self, kind: str = "signals", run_name: str | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every sample of the run as a dict (timing columns, then one key per label), in order."""
        run = self.run(run_name)
        labels = [ch.label for ch in self.catalog(kind, run.name)]
        columns = ", ".join(f"v{k}" for k in range(len(labels)))
        cursor = self._conn.execute(
            f"SELECT sample_idx, segment_id, dt_s, scheduled_dt_s, latency_s, {columns} "  # noqa: S608
            f"FROM {SAMPLE_TABLES[kind]} WHERE run_id = ? ORDER BY sample_idx",
            (run.id,),
        )
        timing = ("sample_idx", "segment_id", "dt_s", "scheduled_dt_s", "latency_s")
        for row in cursor:
            record = dict(zip(timing, row[:5], strict=True))
            record.update(zip(labels, row[5:], strict=True))
            yield record

    def samples_after(
        self,
        after_sample_idx: int,
        run_name: str | None = None,
        *,
        kind: str = "signals",
        limit: int = 10_000,
    ) -> dict[str, Any]:
        """A cursor tail: up to ``limit`` samples with ``sample_idx > after_sample_idx``, columnar.

        ``{"sample_idx": [...], "dt_s": [...], "values": {label: [...]}, "last_sample_idx"}``;
        pass ``last_sample_idx`` back as the next cursor (-1 starts from the first sample). One
        range read on the primary key, however long the run is, so a live view can call it
        several times a second while the recorder writes.
        """
        run = self.run(run_name)
        labels = [ch.label for ch in self.catalog(kind, run.name)]
        columns = "".join(f", v{k}" for k in range(len(labels)))
        rows = self._conn.execute(
            f"SELECT sample_idx, dt_s{columns} FROM {SAMPLE_TABLES[kind]} "  # noqa: S608
            "WHERE run_id = ? AND sample_idx > ? ORDER BY sample_idx LIMIT ?",
            (run.id, after_sample_idx, max(1, limit)),
        ).fetchall()
        return {
            "sample_idx": [int(r[0]) for r in rows],
            "dt_s": [float(r[1]) for r in rows],
            "values": {label: [r[2 + k] for r in rows] for k, label in enumerate(labels)},
            "last_sample_idx": int(rows[-1][0]) if rows else after_sample_idx,
        }

    def actions_after(
        self, after_action_idx: int, run_name: str | None = None
    ) -> list[ActionEvent]:
        """The run's actions with ``action_idx > after_action_idx`` (a cursor tail, in order)."""
        run = self.run(run_name)
        rows = self._conn.execute(
            f"SELECT {ACTION_COLUMNS} FROM action_events "  # noqa: S608
            "WHERE run_id = ? AND action_idx > ? ORDER BY action_idx",
            (run.id, after_action_idx),
        ).fetchall()
        return [ActionEvent(**dict(row)) for row in rows]


class _RecordWriter:
    """Writes one batch of records of one run: executemany per table, then the run's counters."""

    def __init__(self, run_id: int, rotate_entries: int, n_signals: int, n_specs: int) -> None:
        self.run_id = run_id
        self.rotate_entries = rotate_entries
        self.sql_signals = _sample_insert("signal_samples", n_signals)
        self.sql_specs = _sample_insert("spec_samples", n_specs)

    def __call__(self, conn: sqlite3.Connection, batch: list[Record]) -> None:
        samples = [r for r in batch if isinstance(r, Sample)]
        actions = [r for r in batch if isinstance(r, ActionEvent)]
        errors = [r for r in batch if isinstance(r, MonitorError)]
        missed = [r for r in batch if isinstance(r, MissedTicks)]
        if samples:
            heads = [
                (
                    self.run_id,
                    s.sample_idx,
                    s.sample_idx // self.rotate_entries,
                    s.dt_s,
                    s.scheduled_dt_s,
                    s.latency_s,
                )
                for s in samples
            ]
            conn.executemany(
                self.sql_signals, [(*h, *s.signals) for h, s in zip(heads, samples, strict=True)]
            )
            conn.executemany(
                self.sql_specs,
                [(*h, *map(_storable, s.specs)) for h, s in zip(heads, samples, strict=True)],
            )
        if actions:
            conn.executemany(
                f"INSERT INTO action_events (run_id, {ACTION_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        self.run_id,
                        a.action_idx,
                        a.sample_idx,
                        a.dt_s,
                        a.end_dt_s,
                        a.detected_at_utc,
                        a.spec_label,
                        _storable(a.old_value),
                        _storable(a.new_value),
                        a.delta,
                        a.steps,
                        a.source,
                        a.window_start_dt_s,
                        a.window_end_dt_s,
                    )
                    for a in actions
                ],
            )
        if errors:
            conn.executemany(
                "INSERT INTO monitor_errors (run_id, dt_s, at_utc, error_type, message, command,"
                " details_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        self.run_id,
                        e.dt_s,
                        e.at_utc,
                        e.error_type,
                        e.message,
                        e.command,
                        json.dumps(e.details, default=str),
                    )
                    for e in errors
                ],
            )
        if missed:
            conn.executemany(
                "INSERT INTO missed_ticks (run_id, first_tick_idx, count, scheduled_dt_s,"
                " detected_dt_s, reason) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (
                        self.run_id,
                        m.first_tick_idx,
                        m.count,
                        m.scheduled_dt_s,
                        m.detected_dt_s,
                        m.reason,
                    )
                    for m in missed
                ],
            )
        last_dt = max((s.dt_s for s in samples), default=None)
        conn.execute(
            "UPDATE runs SET samples = samples + ?, actions = actions + ?, errors = errors + ?,"
            " missed_ticks = missed_ticks + ?, last_dt_s = coalesce(?, last_dt_s),"
            " last_write_utc = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = ?",
            (
                len(samples),
                len(actions),
                len(errors),
                sum(m.count for m in missed),
                last_dt,
                self.run_id,
            ),
        )


def _sample_insert(table: str, n_values: int) -> str:
    columns = "".join(f", v{k}" for k in range(n_values))
    marks = ", ?" * n_values
    head = "run_id, sample_idx, segment_id, dt_s, scheduled_dt_s, latency_s"
    return f"INSERT INTO {table} ({head}{columns}) VALUES (?, ?, ?, ?, ?, ?{marks})"  # noqa: S608


def _storable(value: Value) -> Value:
    return int(value) if isinstance(value, bool) else value


def _duplicate_run(name: str) -> InvalidInputError:
    return InvalidInputError(
        f"the database already holds a run named {name!r}; run names are single-use, stage a new "
        "one with `atomlab trajectory monitor config set --run-name NAME`",
        field="run_name",
        value=name,
    )


def _run_info(row: sqlite3.Row) -> RunInfo:
    data = dict(row)
    data["config"] = json.loads(data.pop("config_json"))
    data["instrument"] = json.loads(data.pop("instrument_json"))
    data["writer_alive"] = _writer_alive(data["status"], data["hostname"], data["pid"])
    if data["status"] == "running" and data["writer_alive"] is False:
        data["status"] = "abandoned"
        data["stop_reason"] = (
            "the recorder process is gone (killed?); samples up to last_dt_s were kept"
        )
    return RunInfo(**data)


def _writer_alive(status: str, hostname: str, pid: int) -> bool | None:
    """For a ``running`` run on this host: is its recorder still alive? (None: cannot tell)."""
    if status != "running":
        return False
    if hostname != socket.gethostname():
        return None
    import psutil

    return bool(psutil.pid_exists(pid))


def _channel_info(row: sqlite3.Row) -> ChannelInfo:
    data = dict(row)
    return ChannelInfo(
        label=data["label"],
        unit=data["unit"],
        source_command=data["source_command"],
        source_field=data["source_field"],
        value_type=data["value_type"],
        min_value=data["min_value"],
        max_value=data["max_value"],
        set_command=data.get("set_command", ""),
        signal_index=data.get("signal_index", -1),
        description=data["description"],
    )
