"""SQLite helpers on real files: pragmas, read-only mode, migrations, the background writer."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from atomlab.core.errors import NotFoundError, OperationTimeoutError, UnavailableError
from atomlab.core.sqlite import BatchWriter, BatchWriterError, connect, migrate, schema_version

SCHEMA_V1 = """
CREATE TABLE samples (idx INTEGER PRIMARY KEY, value REAL NOT NULL);
CREATE INDEX samples_value ON samples(value);
"""


def insert(conn: sqlite3.Connection, items: list[int]) -> None:
    conn.executemany(
        "INSERT INTO samples (idx, value) VALUES (?, ?)", [(i, i * 0.5) for i in items]
    )


def count(path) -> int:
    with connect(path, read_only=True) as conn:
        return int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "data" / "store.sqlite"
    conn = connect(path)
    migrate(conn, [SCHEMA_V1])
    conn.close()
    return path


def test_connect_sets_wal_normal_sync_busy_timeout_and_foreign_keys(tmp_path):
    conn = connect(tmp_path / "a.sqlite", busy_timeout_s=2.5)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2500


def test_read_only_connection_cannot_write_and_never_creates_files(db, tmp_path):
    conn = connect(db, read_only=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("INSERT INTO samples VALUES (1, 1.0)")
    with pytest.raises(NotFoundError):
        connect(tmp_path / "missing.sqlite", read_only=True)
    assert not (tmp_path / "missing.sqlite").exists()


def test_migrations_run_once_in_order(db):
    def add_column(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE samples ADD COLUMN unit TEXT DEFAULT 'A'")

    conn = connect(db)
    assert migrate(conn, [SCHEMA_V1, add_column]) == 2
    assert migrate(conn, [SCHEMA_V1, add_column]) == 2  # idempotent
    columns = [row["name"] for row in conn.execute("PRAGMA table_info(samples)")]
    assert columns == ["idx", "value", "unit"]


def test_a_failing_migration_leaves_the_previous_version(db):
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("disk full")

    conn = connect(db)
    with pytest.raises(RuntimeError):
        migrate(conn, [SCHEMA_V1, broken])
    assert schema_version(conn) == 1
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half_done" not in tables


def test_a_database_newer_than_the_code_is_refused(db):
    conn = connect(db)
    conn.execute("PRAGMA user_version = 9")
    with pytest.raises(UnavailableError, match="newer"):
        migrate(conn, [SCHEMA_V1])


def test_batch_writer_commits_everything_on_close(db):
    with BatchWriter(db, insert, max_batch=7, flush_interval_s=60) as writer:
        for i in range(100):
            writer.put(i)
    assert writer.written == 100
    assert count(db) == 100


def test_batch_writer_flushes_on_size_without_waiting_for_the_interval(db):
    committed = threading.Event()
    writer = BatchWriter(
        db, insert, max_batch=10, flush_interval_s=3600, on_commit=lambda n: committed.set()
    ).start()
    for i in range(10):
        writer.put(i)
    assert committed.wait(10), "a full batch was not written before the (hour-long) interval"
    writer.close()
    assert count(db) == 10


def test_batch_writer_flushes_a_partial_batch_on_the_interval(db):
    commits: list[int] = []
    committed = threading.Event()

    def record(n: int) -> None:
        commits.append(n)
        committed.set()

    writer = BatchWriter(
        db, insert, max_batch=1000, flush_interval_s=0.05, on_commit=record
    ).start()
    writer.put(1)
    assert committed.wait(10)
    assert count(db) == 1
    assert commits == [1]
    writer.close()


def test_flush_makes_items_visible_to_readers(db):
    writer = BatchWriter(db, insert, max_batch=1000, flush_interval_s=3600).start()
    for i in range(5):
        writer.put(i)
    writer.flush()
    assert count(db) == 5
    writer.close()


def test_full_queue_applies_back_pressure_instead_of_dropping(db):
    gate = threading.Event()

    def slow_insert(conn: sqlite3.Connection, items: list[int]) -> None:
        gate.wait(10)
        insert(conn, items)

    writer = BatchWriter(db, slow_insert, max_batch=1, max_queue=2, flush_interval_s=3600).start()
    writer.put(0)  # taken by the writer, which now blocks on the gate
    accepted = 1
    with pytest.raises(OperationTimeoutError):
        for i in range(1, 10):
            writer.put(i, timeout=0.2)
            accepted += 1
    assert accepted <= 3
    gate.set()
    writer.close()
    assert count(db) == accepted


def test_writer_errors_surface_to_the_caller(db):
    def bad_insert(conn: sqlite3.Connection, items: list[int]) -> None:
        conn.executemany("INSERT INTO samples (idx, value) VALUES (?, NULL)", [(i,) for i in items])

    writer = BatchWriter(db, bad_insert, max_batch=1).start()
    writer.put(1)
    with pytest.raises(BatchWriterError, match="NOT NULL"):
        writer.flush(timeout=10)
    with pytest.raises(BatchWriterError):
        writer.put(2)
    with pytest.raises(BatchWriterError):
        writer.close()
    assert count(db) == 0


def test_a_failed_batch_is_rolled_back_as_a_whole(db):
    def half_then_fail(conn: sqlite3.Connection, items: list[int]) -> None:
        insert(conn, items[:1])
        raise RuntimeError("boom")

    writer = BatchWriter(db, half_then_fail, max_batch=3).start()
    for i in range(3):
        writer.put(i)
    with pytest.raises(BatchWriterError, match="boom"):
        writer.flush(timeout=10)
    assert count(db) == 0


def test_two_connections_migrating_at_once_apply_each_step_once(tmp_path):
    """The version is read under the write lock: a second migrator waits, then finds it done."""
    path = tmp_path / "race.sqlite"
    first, second = connect(path), connect(path)
    errors: list[BaseException] = []
    applied: list[str] = []

    def other_migrator() -> None:
        try:
            migrate(second, [create_table])
        except BaseException as exc:
            errors.append(exc)

    def create_table(conn: sqlite3.Connection) -> None:
        applied.append("step")
        if len(applied) == 1:
            # While this step holds the write lock, let the other connection try to migrate.
            racer = threading.Thread(target=other_migrator)
            racer.start()
            racer.join(0.5)
            threads.append(racer)
        conn.execute("CREATE TABLE once (x INTEGER)")

    threads: list[threading.Thread] = []
    assert migrate(first, [create_table]) == 1
    for racer in threads:
        racer.join(10)
    assert errors == []
    assert applied == ["step"]
    assert schema_version(second) == 1


def test_connect_waits_while_another_connection_is_creating_the_same_new_database(tmp_path):
    """Switching a new file to WAL needs it alone; SQLite says "locked" at once, without its
    busy handler, so several recorders opening one new database at once used to fail."""
    path = tmp_path / "new.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE t (x INTEGER)")
    result: dict[str, object] = {}

    def opener() -> None:
        try:
            result["conn"] = connect(path)
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=opener)
    thread.start()
    thread.join(0.3)  # the opener meets the lock (a bound, not a wait for an outcome)
    holder.execute("COMMIT")
    holder.close()
    thread.join(10)
    assert "error" not in result, result.get("error")
    conn = result["conn"]
    assert isinstance(conn, sqlite3.Connection)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
