"""The trajectory database: create runs with their catalogs, write records in batches, read back.

    store = open_store(db_path)                  # read-only: safe while a recording runs
    for action in store.actions():               # the latest run's actions
        window = store.signal_window(action.window_start_dt_s, action.window_end_dt_s)

Writers use ``open_store(path, read_only=False)``, :meth:`TrajectoryStore.create_run` and
:meth:`TrajectoryStore.record_writer` (a background :class:`BatchWriter`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from atomlab import __version__
from atomlab.core.clock import utc_iso
from atomlab.core.errors import InvalidInputError, NotFoundError, UnavailableError
from atomlab.core.sqlite import BatchWriter, connect, migrate, schema_version
from atomlab.trajectory.config import MonitorConfig
from atomlab.trajectory.records import (
    ActionEvent,
    ActionKind,
    ChannelInfo,
    MissedTicks,
    MonitorError,
    Record,
    RunAnchor,
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
#: Columns version 2 added to ``action_events`` (NULL for spec changes).
COMMAND_COLUMNS = "action_kind, command, args_json, payload_json"
#: The recorder renews its lease this often (a renewal is committed like any record) ...
LEASE_RENEW_S = 1.0
#: ... for this long: a ``running`` run whose lease expired this long ago reads as crashed when
#: its recorder's process cannot be checked (another host). On this host the process is checked.
LEASE_TIMEOUT_S = 10.0
#: The writer copies the WAL into the main file (a passive checkpoint) at least this often, and
#: at every segment rotation, so the ``.sqlite`` file alone holds the run up to then.
CHECKPOINT_INTERVAL_S = 5.0
#: Batches are committed after this fraction of ``flush_interval_s``: the rest of the interval
#: absorbs poll latency, the commit itself and scheduling delays on a loaded machine, so a
#: sample is durable within ``flush_interval_s`` of its poll.
COMMIT_FRACTION = 0.5
#: A process whose start time differs more than this from the recorder's is not it (pid reuse).
PID_REUSE_SLACK_S = 1.0


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
    lease_expires_utc: str | None = None
    pid_started: float | None = None

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
    #: The run's wall-clock anchor (``dt_s = 0``) and name, for absolute times.
    started_at_utc: str | None = None
    run_name: str | None = None

    @property
    def count(self) -> int:
        return len(self.sample_idx)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict for JSON (shallow: the value lists are already plain)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["labels"] = list(self.labels)
        out["count"] = self.count
        return out

    def to_pandas(self) -> Any:
        """The window as a ``pandas.DataFrame`` (needs the ``analysis`` extra).

        Columns: ``sample_idx``, ``time_utc`` (a UTC timestamp: the run's start + ``dt_s``),
        ``dt_s``, then one column per signal label. ``df.attrs`` holds ``units`` (label -> unit),
        ``run_name``, ``started_at_utc``, ``start_dt_s``, ``end_dt_s``, ``complete``,
        ``partial_reason`` and ``missed_ticks``.
        """
        pd = _pandas()
        frame = pd.DataFrame(
            {"sample_idx": pd.array(self.sample_idx, dtype="int64"), "dt_s": self.dt_s}
        )
        if self.started_at_utc:
            anchor = pd.Timestamp(self.started_at_utc.replace("Z", "+00:00")).tz_convert("UTC")
            times = anchor + pd.to_timedelta(frame["dt_s"], unit="s")
            frame.insert(1, "time_utc", times.astype("datetime64[us, UTC]"))
        for label in self.labels:
            frame[label] = pd.Series(self.values.get(label, []), dtype="float64")
        frame.attrs.update(
            units=dict(self.units),
            run_name=self.run_name,
            started_at_utc=self.started_at_utc,
            start_dt_s=self.start_dt_s,
            end_dt_s=self.end_dt_s,
            complete=self.complete,
            partial_reason=self.partial_reason,
            missed_ticks=self.missed_ticks,
        )
        return frame


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise UnavailableError(
            "DataFrames need pandas; install it with `pip install 'atomlab[analysis]'` "
            "(or `uv sync --extra analysis`)",
            extra="analysis",
        ) from None
    return pandas


def _unusable(path: Path, exc: BaseException) -> InvalidInputError | UnavailableError:
    """A database that cannot be opened: busy (exit 4), or a wrong path or file (exit 3)."""
    text = str(exc)
    shown = _short(str(path))
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return UnavailableError(
            f"trajectory database {shown!r} is busy ({text}); try again in a moment",
            path=shown,
        )
    return InvalidInputError(
        f"cannot use {shown!r} as a trajectory database ({_short(text)}); pass --db-path (or "
        "`config set --db-path`) a trajectory database or a new file in a writable folder",
        field="db_path",
        value=shown,
    )


def _short(text: str, limit: int = 200) -> str:
    """``text`` cut for a message (a 10,000-character path or name stays readable)."""
    return text if len(text) <= limit else text[:limit] + "..."


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
            self.version = version
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
            self.version = migrate(self._conn, MIGRATIONS)
            self.mark_crashed_runs()

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
                    " pid, lease_expires_utc, pid_started)"
                    " VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        lease_expiry(),
                        _process_started(os.getpid()),
                    ),
                )
                run_id = int(cursor.lastrowid or 0)
                self._insert_catalog(run_id, "signals", signals, config)
                self._insert_catalog(run_id, "specs", specs, config)
        except sqlite3.IntegrityError as exc:
            if "runs.name" in str(exc):
                raise _duplicate_run(config.run_name) from None
            raise
        checkpoint(self._conn)  # the .sqlite file alone holds the schema and the run row
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
                " started_at_utc = coalesce(?, started_at_utc), lease_expires_utc = NULL"
                " WHERE id = ?",
                (status, ended_at_utc, reason, started_at_utc, run_id),
            )
        checkpoint(self._conn)

    def mark_crashed_runs(self) -> list[str]:
        """Mark ``running`` runs whose recorder is gone as ``crashed``; return their names.

        Only on a writable store (the CLI's query commands open one briefly, see
        :func:`mark_crashed_runs`); a run whose recorder is alive, or cannot be judged, is left.
        """
        if self.read_only or self.version < len(MIGRATIONS):
            return []
        return _mark_crashed(self._conn)

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
            flush_interval_s=flush_interval_s * COMMIT_FRACTION,
            max_queue=max(10_000, 4 * max_batch),
            name=f"trajectory-writer-{run.id}",
            on_commit=write.after_commit,
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
            known = [
                r[0] for r in self._conn.execute("SELECT name FROM runs ORDER BY id DESC LIMIT 10")
            ]
            raise NotFoundError(
                f"no run named {_short(name, 80)!r} in {_short(str(self.path))!r}; known runs: "
                f"{', '.join(known) or '(none)'} (see `atomlab trajectory runs list`)",
                field="run_name",
                value=_short(name, 80),
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

    def _action_select(self) -> str:
        extra = (
            COMMAND_COLUMNS
            if self.version >= 2
            else "action_kind, NULL AS command, NULL AS args_json, NULL AS payload_json"
        )
        return f"SELECT {ACTION_COLUMNS}, {extra} FROM action_events"  # noqa: S608

    def actions(self, run_name: str | None = None, *, kind: str | None = None) -> list[ActionEvent]:
        """The run's actions in ``action_idx`` order (the latest run when no name is given);
        ``kind`` keeps only ``spec-change`` or ``command`` actions."""
        run = self.run(run_name)
        sql = self._action_select() + " WHERE run_id = ?"
        args: list[Any] = [run.id]
        if kind is not None:
            sql += " AND action_kind = ?"
            args.append(kind)
        rows = self._conn.execute(sql + " ORDER BY action_idx", args).fetchall()
        return [_action_event(row) for row in rows]

    def action(self, action_idx: int, run_name: str | None = None) -> ActionEvent:
        run = self.run(run_name)
        if not isinstance(action_idx, int) or not 0 <= action_idx <= MAX_SQL_INT:
            raise InvalidInputError(
                f"action index {str(action_idx)[:40]} is not valid; use a whole number >= 0 "
                "(see `atomlab trajectory action list`)",
                field="action_idx",
                value=str(action_idx)[:40],
            )
        row = self._conn.execute(
            self._action_select() + " WHERE run_id = ? AND action_idx = ?",
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
        return _action_event(row)

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
            started_at_utc=run.started_at_utc,
            run_name=run.name,
        )

    def window_frame(
        self,
        start_dt_s: float | None = None,
        end_dt_s: float | None = None,
        run_name: str | None = None,
        *,
        action: ActionEvent | int | None = None,
        kind: str = "signals",
    ) -> Any:
        """:meth:`signal_window` as a ``pandas.DataFrame`` (see :meth:`SignalWindow.to_pandas`).

        Give the window's bounds, or ``action`` (an :class:`ActionEvent` or its index) to take
        the action's own window.
        """
        if action is not None:
            event = self.action(action, run_name) if isinstance(action, int) else action
            start_dt_s, end_dt_s = event.window_start_dt_s, event.window_end_dt_s
        if start_dt_s is None or end_dt_s is None:
            raise InvalidInputError(
                "window_frame needs start_dt_s and end_dt_s, or an action", field="window"
            )
        return self.signal_window(start_dt_s, end_dt_s, run_name, kind=kind).to_pandas()

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
            self._action_select() + " WHERE run_id = ? AND action_idx > ? ORDER BY action_idx",
            (run.id, after_action_idx),
        ).fetchall()
        return [_action_event(row) for row in rows]


class _RecordWriter:
    """Writes one batch of records of one run: executemany per table, then the run's counters
    and lease; after the commit, a passive WAL checkpoint when a segment rotated or
    ``CHECKPOINT_INTERVAL_S`` passed (both on the writer thread)."""

    def __init__(self, run_id: int, rotate_entries: int, n_signals: int, n_specs: int) -> None:
        self.run_id = run_id
        self.rotate_entries = rotate_entries
        self.sql_signals = _sample_insert("signal_samples", n_signals)
        self.sql_specs = _sample_insert("spec_samples", n_specs)
        self._conn: sqlite3.Connection | None = None
        self._rotated = False
        self._last_checkpoint = time.monotonic()
        self.checkpoints = 0

    def after_commit(self, count: int) -> None:
        due = time.monotonic() - self._last_checkpoint >= CHECKPOINT_INTERVAL_S
        if self._conn is not None and (self._rotated or due):
            checkpoint(self._conn)
            self._last_checkpoint = time.monotonic()
            self._rotated = False
            self.checkpoints += 1

    def __call__(self, conn: sqlite3.Connection, batch: list[Record]) -> None:
        self._conn = conn
        samples = [r for r in batch if isinstance(r, Sample)]
        actions = [r for r in batch if isinstance(r, ActionEvent)]
        errors = [r for r in batch if isinstance(r, MonitorError)]
        missed = [r for r in batch if isinstance(r, MissedTicks)]
        if any(s.sample_idx % self.rotate_entries == 0 and s.sample_idx for s in samples):
            self._rotated = True
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
                f"INSERT INTO action_events (run_id, {ACTION_COLUMNS}, {COMMAND_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        a.kind,
                        a.command,
                        None if a.args is None else json.dumps(a.args, default=str),
                        None if a.payload is None else json.dumps(a.payload, default=str),
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
        for anchor in (r for r in batch if isinstance(r, RunAnchor)):
            conn.execute(
                "UPDATE runs SET started_at_utc = ? WHERE id = ?",
                (anchor.started_at_utc, self.run_id),
            )
        last_dt = max((s.dt_s for s in samples), default=None)
        conn.execute(
            "UPDATE runs SET samples = samples + ?, actions = actions + ?, errors = errors + ?,"
            " missed_ticks = missed_ticks + ?, last_dt_s = coalesce(?, last_dt_s),"
            " last_write_utc = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), lease_expires_utc = ?,"
            # a recorder judged dead (e.g. from another host) that is writing again is alive
            " status = CASE status WHEN 'crashed' THEN 'running' ELSE status END,"
            " stop_reason = CASE status WHEN 'crashed' THEN NULL ELSE stop_reason END,"
            " ended_at_utc = CASE status WHEN 'crashed' THEN NULL ELSE ended_at_utc END"
            " WHERE id = ?",
            (
                len(samples),
                len(actions),
                len(errors),
                sum(m.count for m in missed),
                last_dt,
                lease_expiry(),
                self.run_id,
            ),
        )


def _sample_insert(table: str, n_values: int) -> str:
    columns = "".join(f", v{k}" for k in range(n_values))
    marks = ", ?" * n_values
    head = "run_id, sample_idx, segment_id, dt_s, scheduled_dt_s, latency_s"
    return f"INSERT INTO {table} ({head}{columns}) VALUES (?, ?, ?, ?, ?, ?{marks})"  # noqa: S608


MAX_SQL_INT = 2**63 - 1


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
    data.setdefault("lease_expires_utc", None)
    data.setdefault("pid_started", None)
    status, alive, reason = _liveness(data)
    data["writer_alive"] = alive
    if status != data["status"]:
        data["status"] = status
        data["stop_reason"] = reason
        data["ended_at_utc"] = data["ended_at_utc"] or data["last_write_utc"]
    return RunInfo(**data)


def _liveness(row: Mapping[str, Any]) -> tuple[RunStatus, bool | None, str | None]:
    """How a run reads now: ``(status, writer_alive, reason)``.

    A ``running`` run is ``crashed`` when its recorder's process is gone (same host: the pid is
    free, or taken by a process younger than the run) or, where the process cannot be checked
    (another host), when its lease expired. A live process with an expired lease is hung or
    stopped, not dead: it stays ``running``.
    """
    status = str(row["status"])
    if status != "running":
        return status, False, row.get("stop_reason")  # type: ignore[return-value]
    lease = row.get("lease_expires_utc")
    if row.get("hostname") == socket.gethostname():
        if _process_alive(int(row["pid"]), row.get("pid_started")):
            return "running", True, None
        return (
            "crashed",
            False,
            f"the recorder process (pid {row['pid']}) is gone without finishing the run (killed "
            "with SIGKILL, out of memory or power loss); samples up to last_dt_s were kept",
        )
    if lease and lease < utc_iso(datetime.now(UTC)):
        return (
            "crashed",
            False,
            f"the recorder on {row.get('hostname')} stopped renewing its lease (expired "
            f"{lease}); samples up to last_dt_s were kept",
        )
    return "running", None, None


def _process_alive(pid: int, pid_started: float | None) -> bool:
    """Is process ``pid`` alive and the same process that started at ``pid_started``?"""
    import psutil

    try:
        created = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # exists, but we may not look at it
    return pid_started is None or abs(created - float(pid_started)) <= PID_REUSE_SLACK_S


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def lease_expiry(now: datetime | None = None) -> str:
    """The lease's end if it is renewed now."""
    return utc_iso((now or datetime.now(UTC)) + timedelta(seconds=LEASE_TIMEOUT_S))


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy committed WAL pages into the database file (passive: never waits for readers)."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def mark_crashed_runs(path: Path | str) -> list[str]:
    """Mark the runs of the database at ``path`` whose recorder died as ``crashed``.

    Best effort (a read-only file, a busy or damaged database, an old schema: nothing happens);
    returns the names marked. The CLI's query commands call it before they read.
    """
    target = Path(path)
    try:
        if not target.is_file():
            return []
        conn = connect(target, busy_timeout_s=1.0)
    except (sqlite3.Error, OSError, ValueError):
        return []
    try:
        if schema_version(conn) < len(MIGRATIONS):
            return []
        return _mark_crashed(conn)
    except (sqlite3.Error, OSError):
        return []
    finally:
        conn.close()


def _mark_crashed(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT * FROM runs WHERE status = 'running'").fetchall()
    marked: list[str] = []
    for row in rows:
        status, _alive, reason = _liveness(dict(row))
        if status != "crashed":
            continue
        with conn:  # only if nothing renewed the lease since we looked
            updated = conn.execute(
                "UPDATE runs SET status = 'crashed', stop_reason = ?,"
                " ended_at_utc = coalesce(last_write_utc, started_at_utc)"
                " WHERE id = ? AND status = 'running' AND"
                " coalesce(lease_expires_utc, '') = coalesce(?, '')",
                (reason, row["id"], row["lease_expires_utc"]),
            ).rowcount
        if updated:
            marked.append(str(row["name"]))
    return marked


def _action_event(row: sqlite3.Row) -> ActionEvent:
    data = dict(row)
    kind: ActionKind = "command" if data.pop("action_kind", None) == "command" else "spec-change"
    args = data.pop("args_json", None)
    payload = data.pop("payload_json", None)
    return ActionEvent(
        **data,
        kind=kind,
        args=json.loads(args) if args else None,
        payload=json.loads(payload) if payload else None,
    )


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
