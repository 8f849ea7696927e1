"""SQLite done one way everywhere: WAL, ``synchronous=NORMAL``, busy timeout, foreign keys,
forward migrations on ``PRAGMA user_version``, and a background :class:`BatchWriter`.

    conn = connect(db_path)
    migrate(conn, [SCHEMA_V1, add_index_v2])
    with BatchWriter(db_path, insert_samples, max_batch=500) as writer:
        writer.put(sample)          # blocks when the queue is full, never drops
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Generic, TypeVar

from atomlab.core.errors import (
    AtomlabError,
    NotFoundError,
    OperationTimeoutError,
    UnavailableError,
)

T = TypeVar("T")
Migration = str | Callable[[sqlite3.Connection], None]

DEFAULT_BUSY_TIMEOUT_S = 5.0
DEFAULT_MAX_BATCH = 500
DEFAULT_FLUSH_INTERVAL_S = 0.25
DEFAULT_MAX_QUEUE = 10_000


def connect(
    path: Path | str, *, read_only: bool = False, busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S
) -> sqlite3.Connection:
    """Open ``path`` with atomlab's pragmas. Read-only mode never creates or changes the file.

    Transactions are explicit: use ``with conn:`` to commit a block of writes.
    """
    target = Path(path)
    if read_only:
        if not target.exists():
            raise NotFoundError(
                f"database {str(target)!r} does not exist; check the path or record a run first",
                path=str(target),
            )
        conn = sqlite3.connect(
            f"{target.resolve().as_uri()}?mode=ro",
            uri=True,
            timeout=busy_timeout_s,
            check_same_thread=False,
        )
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(target, timeout=busy_timeout_s, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    conn.execute("PRAGMA foreign_keys = ON")
    if not read_only:
        _enter_wal(conn, busy_timeout_s)
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _enter_wal(conn: sqlite3.Connection, busy_timeout_s: float) -> None:
    """Switch to WAL (a no-op once the file is in WAL). The switch needs the file to itself, and
    SQLite answers "locked" at once, without its busy handler, while another connection is just
    creating the same new database: so wait and retry, as long as the busy timeout."""
    deadline = time.monotonic() + busy_timeout_s
    pause = 0.005
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> int:
    """Apply ``migrations[v:]`` where ``v`` is the current ``user_version``; return the new version.

    Migration ``i`` moves the schema from version ``i`` to ``i + 1`` inside one transaction, so a
    failed migration leaves the database at the version before it. The version is read under the
    write lock, so processes opening a new database at once apply each step exactly once. A
    database newer than the code is refused rather than touched.
    """
    target = len(migrations)
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(conn)
            if current > target:
                raise UnavailableError(
                    f"database schema version {current} is newer than this atomlab supports "
                    f"({target}); upgrade atomlab",
                    schema_version=current,
                    supported=target,
                )
            if current == target:
                conn.rollback()
                return target
            step = migrations[current]
            if isinstance(step, str):
                for statement in _split_sql(step):
                    conn.execute(statement)
            else:
                step(conn)
            conn.execute(f"PRAGMA user_version = {current + 1}")
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def _split_sql(script: str) -> list[str]:
    """Split a script into statements (``executescript`` would commit our transaction)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        statements.append(buffer.strip())
    return statements


class BatchWriterError(AtomlabError):
    """The background writer failed; the items of the failed batch were not committed."""

    type_name = "batch_writer_error"


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_CLOSE = object()


class BatchWriter(Generic[T]):
    """Writes items to SQLite on a background thread, in batches, one transaction per batch.

    A batch is committed when it reaches ``max_batch`` items, when ``flush_interval_s`` has
    passed since its first item, on :meth:`flush` and on :meth:`close`; ``on_commit(n)`` is
    called on the writer thread after each commit. :meth:`put` blocks
    while the queue is full (back-pressure, never a silent drop) and raises the writer's error
    once the writer has failed.
    """

    def __init__(
        self,
        path: Path | str,
        write: Callable[[sqlite3.Connection, list[T]], None],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S,
        max_queue: int = DEFAULT_MAX_QUEUE,
        name: str = "batch-writer",
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or flush_interval_s <= 0:
            raise ValueError("max_batch and max_queue must be >= 1 and flush_interval_s > 0")
        self._path = Path(path)
        self._write = write
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._flush_interval_s = flush_interval_s
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._error: BaseException | None = None
        self._written = 0
        self._closed = False
        self._started = False

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def written(self) -> int:
        """Items committed so far."""
        return self._written

    def start(self) -> BatchWriter[T]:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def put(self, item: T, timeout: float | None = None) -> None:
        """Queue ``item``; blocks while the queue is full, up to ``timeout`` seconds if given."""
        self._raise_if_failed()
        if self._closed:
            raise BatchWriterError("the batch writer is closed; no more items can be written")
        self._enqueue(item, timeout)

    def flush(self, timeout: float | None = None) -> None:
        """Block until every item put before this call is committed."""
        self._raise_if_failed()
        if not self._started or self._closed:
            return
        marker = _Flush()
        self._enqueue(marker, timeout)
        if not marker.done.wait(timeout):
            raise OperationTimeoutError(f"batch writer did not flush within {timeout} s")
        self._raise_if_failed()

    def close(self, timeout: float | None = None) -> None:
        """Flush everything queued and stop the writer thread; raises the writer's error."""
        if self._closed:
            self._raise_if_failed()
            return
        self._closed = True
        if self._started:
            if self._error is None:
                self._queue.put(_CLOSE)
            self._thread.join(timeout)
        self._raise_if_failed()

    def __enter__(self) -> BatchWriter[T]:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except BatchWriterError:
            if exc is None:
                raise

    def _enqueue(self, item: object, timeout: float | None) -> None:
        if not self._started:
            self.start()
        try:
            self._queue.put(item, timeout=timeout)
        except queue.Full:
            raise OperationTimeoutError(
                f"batch writer queue stayed full for {timeout} s; the database is too slow"
            ) from None

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise BatchWriterError(
                f"background writer to {str(self._path)!r} failed: {self._error}",
                path=str(self._path),
            ) from self._error

    def _run(self) -> None:
        try:
            conn = connect(self._path)
        except BaseException as exc:
            self._fail(exc)
            return
        try:
            self._loop(conn)
        except BaseException as exc:
            self._fail(exc)
        finally:
            conn.close()

    def _loop(self, conn: sqlite3.Connection) -> None:
        batch: list[T] = []
        waiting: list[_Flush] = []
        deadline = 0.0
        while True:
            # The interval counts from the first item of a batch, so a steady trickle of items
            # is still committed every flush_interval_s.
            timeout = max(deadline - time.monotonic(), 0.0) if batch else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._commit(conn, batch, waiting)
                continue
            if item is _CLOSE:
                self._commit(conn, batch, waiting)
                return
            if isinstance(item, _Flush):
                waiting.append(item)
                self._commit(conn, batch, waiting)
                continue
            if not batch:
                deadline = time.monotonic() + self._flush_interval_s
            batch.append(item)  # type: ignore[arg-type]
            if len(batch) >= self._max_batch:
                self._commit(conn, batch, waiting)

    def _commit(self, conn: sqlite3.Connection, batch: list[T], waiting: list[_Flush]) -> None:
        if batch:
            with conn:
                self._write(conn, batch)
            self._written += len(batch)
            if self._on_commit is not None:
                self._on_commit(len(batch))
            batch.clear()
        for marker in waiting:
            marker.done.set()
        waiting.clear()

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        # Wake every flush waiter and unblock producers: nothing more will be written.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Flush):
                item.done.set()
