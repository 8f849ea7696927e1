"""The trajectory database schema, as forward migrations on ``PRAGMA user_version``.

Samples use the wide layout: one row per tick, one value column ``v<k>`` per recorded signal (or
spec), mapped to a label by the run's catalog row with ``column_index = k``. It is 4x faster to
write, half the bytes and 4x faster to read back as a window than one row per value (measured:
docs/trajectory.md, "Why one column per signal"). Value columns beyond the first
``BASE_VALUE_COLUMNS`` are added on demand by :func:`ensure_value_columns`.
"""

from __future__ import annotations

import sqlite3

from atomlab.core.sqlite import Migration

BASE_VALUE_COLUMNS = 16


def _value_columns(affinity: str, count: int = BASE_VALUE_COLUMNS) -> str:
    return ",\n    ".join(f"v{k} {affinity}".rstrip() for k in range(count))


SCHEMA_V1 = f"""
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN
        ('running', 'completed', 'interrupted', 'terminated', 'failed')),
    started_at_utc TEXT NOT NULL,
    ended_at_utc TEXT,
    stop_reason TEXT,
    interval_s REAL NOT NULL,
    rotate_entries INTEGER NOT NULL,
    action_window_s REAL NOT NULL,
    config_json TEXT NOT NULL,
    atomlab_version TEXT NOT NULL,
    instrument_json TEXT NOT NULL,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    samples INTEGER NOT NULL DEFAULT 0,
    actions INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    missed_ticks INTEGER NOT NULL DEFAULT 0,
    last_dt_s REAL,
    last_write_utc TEXT
);

CREATE TABLE signal_catalog (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    column_index INTEGER NOT NULL,
    label TEXT NOT NULL,
    unit TEXT NOT NULL,
    source_command TEXT NOT NULL,
    source_field TEXT NOT NULL,
    signal_index INTEGER NOT NULL,
    value_type TEXT NOT NULL,
    min_value REAL,
    max_value REAL,
    description TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, column_index),
    UNIQUE (run_id, label)
);

CREATE TABLE spec_catalog (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    column_index INTEGER NOT NULL,
    label TEXT NOT NULL,
    unit TEXT NOT NULL,
    source_command TEXT NOT NULL,
    source_field TEXT NOT NULL,
    set_command TEXT NOT NULL,
    value_type TEXT NOT NULL,
    min_value REAL,
    max_value REAL,
    tolerance REAL NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, column_index),
    UNIQUE (run_id, label)
);

CREATE TABLE signal_samples (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    sample_idx INTEGER NOT NULL,
    segment_id INTEGER NOT NULL,
    dt_s REAL NOT NULL,
    scheduled_dt_s REAL NOT NULL,
    latency_s REAL NOT NULL,
    {_value_columns("REAL")},
    PRIMARY KEY (run_id, sample_idx)
);
CREATE INDEX signal_samples_by_time ON signal_samples (run_id, dt_s);
CREATE INDEX signal_samples_by_segment ON signal_samples (run_id, segment_id);

CREATE TABLE spec_samples (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    sample_idx INTEGER NOT NULL,
    segment_id INTEGER NOT NULL,
    dt_s REAL NOT NULL,
    scheduled_dt_s REAL NOT NULL,
    latency_s REAL NOT NULL,
    {_value_columns("")},
    PRIMARY KEY (run_id, sample_idx)
);
CREATE INDEX spec_samples_by_time ON spec_samples (run_id, dt_s);

CREATE TABLE action_events (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    action_idx INTEGER NOT NULL,
    action_kind TEXT NOT NULL DEFAULT 'spec-change',
    sample_idx INTEGER NOT NULL,
    dt_s REAL NOT NULL,
    end_dt_s REAL NOT NULL,
    detected_at_utc TEXT NOT NULL,
    spec_label TEXT NOT NULL,
    old_value,
    new_value,
    delta REAL,
    steps INTEGER NOT NULL DEFAULT 1,
    source TEXT NOT NULL CHECK (source IN ('self', 'external')),
    window_start_dt_s REAL NOT NULL,
    window_end_dt_s REAL NOT NULL,
    UNIQUE (run_id, action_idx)
);
CREATE INDEX action_events_by_time ON action_events (run_id, dt_s);
CREATE INDEX action_events_by_spec ON action_events (run_id, spec_label, dt_s);

CREATE TABLE monitor_errors (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    dt_s REAL NOT NULL,
    at_utc TEXT NOT NULL,
    error_type TEXT NOT NULL,
    message TEXT NOT NULL,
    command TEXT NOT NULL DEFAULT '',
    details_json TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX monitor_errors_by_time ON monitor_errors (run_id, dt_s);

CREATE TABLE missed_ticks (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    first_tick_idx INTEGER NOT NULL,
    count INTEGER NOT NULL CHECK (count >= 1),
    scheduled_dt_s REAL NOT NULL,
    detected_dt_s REAL NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('late', 'disconnected', 'error'))
);
CREATE INDEX missed_ticks_by_time ON missed_ticks (run_id, scheduled_dt_s);
"""

#: Statuses a run may have once version 2 is applied (``crashed``: a reader found the recorder
#: dead, by its process or its expired lease).
RUN_STATUSES = ("running", "completed", "interrupted", "terminated", "failed", "crashed")


def _schema_v2(conn: sqlite3.Connection) -> None:
    """Guarded commands as actions, the recorder's lease, and the ``crashed`` status.

    The status CHECK is widened by rewriting the table's SQL text (SQLite's documented way to
    change a CHECK constraint without rebuilding the table): rebuilding ``runs`` would cascade
    its implicit DELETE into every sample row, and the old rows all satisfy the wider check.
    """
    conn.execute("ALTER TABLE action_events ADD COLUMN command TEXT")
    conn.execute("ALTER TABLE action_events ADD COLUMN args_json TEXT")
    conn.execute("ALTER TABLE action_events ADD COLUMN payload_json TEXT")
    conn.execute("ALTER TABLE runs ADD COLUMN lease_expires_utc TEXT")
    # The recorder process's start time (epoch s): a pid taken later by another process is not it.
    conn.execute("ALTER TABLE runs ADD COLUMN pid_started REAL")
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'runs'")
    old = str(sql.fetchone()[0])
    narrow = "('running', 'completed', 'interrupted', 'terminated', 'failed')"
    if narrow not in old:  # pragma: no cover - a schema this code did not write
        raise sqlite3.DatabaseError("unexpected runs table definition; cannot migrate")
    wide = "(" + ", ".join(f"'{status}'" for status in RUN_STATUSES) + ")"
    version = int(conn.execute("PRAGMA schema_version").fetchone()[0])
    conn.execute("PRAGMA writable_schema = ON")
    try:
        conn.execute(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'runs'",
            (old.replace(narrow, wide),),
        )
        conn.execute(f"PRAGMA schema_version = {version + 1}")
    finally:
        conn.execute("PRAGMA writable_schema = OFF")


MIGRATIONS: tuple[Migration, ...] = (SCHEMA_V1, _schema_v2)

SAMPLE_TABLES = ("signal_samples", "spec_samples")


def value_column_count(conn: sqlite3.Connection, table: str) -> int:
    """How many ``v<k>`` columns ``table`` has."""
    names = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
    return sum(1 for name in names if name.startswith("v") and name[1:].isdigit())


def ensure_value_columns(conn: sqlite3.Connection, table: str, needed: int) -> None:
    """Add ``v<k>`` columns to ``table`` until it has ``needed`` (in the caller's transaction)."""
    if table not in SAMPLE_TABLES:
        raise ValueError(f"not a sample table: {table}")
    affinity = " REAL" if table == "signal_samples" else ""
    for k in range(value_column_count(conn, table), needed):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN v{k}{affinity}")
