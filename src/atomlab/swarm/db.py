"""Persistence of defects, commands, agent states and repair events through SQLAlchemy 2.

SQLite (``<home>/swarm.sqlite``, WAL) by default, PostgreSQL by URL. Writes never happen on the
event loop: the coordinator hands rows to :class:`StoreWriter`, a background task that batches
them into one transaction per flush (group commit); an ingest waits for its rows' commit before
answering 202 (:meth:`StoreWriter.durable`)::

    store = SwarmStore.open("sqlite:///tmp/swarm.sqlite")
    snapshot = store.load()        # what a restarted service resumes from
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.types import TypeEngine

from atomlab.core.clock import utc_iso
from atomlab.core.errors import (
    AtomlabError,
    ConnectionFailedError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from atomlab.core.logging import get_logger
from atomlab.swarm.models import (
    Action,
    AgentState,
    AgentStatus,
    Command,
    CommandStatus,
    Defect,
    DefectStatus,
    Point,
)

DEFAULT_DB_FILENAME = "swarm.sqlite"
MAX_BATCH = 500
FLUSH_INTERVAL_S = 0.1
FIRST_RETRY_DELAY_S = 0.05
MAX_RETRY_DELAY_S = 5.0
DROPPED_SEQS_KEPT = 10_000
PG_CONNECT_TIMEOUT_S = 10

log = get_logger(__name__)
metadata = MetaData()


def _text(length: int) -> TypeEngine[str]:
    """VARCHAR(length) as on SQLite, which never enforces it; unbounded on PostgreSQL, which would
    refuse a longer id (an agent id from the simulator) and lose the whole batch with it."""
    return String(length).with_variant(Text(), "postgresql")


defects_table = Table(
    "defects",
    metadata,
    Column("defect_id", _text(64), primary_key=True),
    Column("x", Integer, nullable=False),
    Column("y", Integer, nullable=False),
    Column("z", Integer, nullable=False),
    Column("defect_type", _text(64), nullable=False),
    Column("severity", Integer, nullable=False),
    Column("status", _text(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False),
    Column("reason", Text),
    Column("agent_id", _text(64)),
    Column("seq", Integer, nullable=False),
    Column("detected_at", _text(32), nullable=False),
    Column("completed_at", _text(32)),
    Column("correlation_id", _text(64), nullable=False),
)

commands_table = Table(
    "commands",
    metadata,
    Column("command_id", _text(64), primary_key=True),
    Column("defect_id", _text(64), nullable=False, index=True),
    Column("agent_id", _text(64), nullable=False),
    Column("action", _text(16), nullable=False),
    Column("target_x", Integer, nullable=False),
    Column("target_y", Integer, nullable=False),
    Column("target_z", Integer, nullable=False),
    Column("thermal_budget_c", Float, nullable=False),
    Column("severity", Integer, nullable=False),
    Column("status", _text(16), nullable=False, index=True),
    Column("created_at", _text(32), nullable=False),
    Column("updated_at", _text(32)),
    Column("correlation_id", _text(64), nullable=False),
    Column("detail", Text),
)

agent_states_table = Table(
    "agent_states",
    metadata,
    Column("agent_id", _text(64), primary_key=True),
    Column("x", Integer, nullable=False),
    Column("y", Integer, nullable=False),
    Column("z", Integer, nullable=False),
    Column("status", _text(16), nullable=False),
    Column("temperature_c", Float, nullable=False),
    Column("assigned_total", Integer, nullable=False),
    Column("last_update", _text(32)),
)

repair_events_table = Table(
    "repair_events",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("at", _text(32), nullable=False),
    Column("event", _text(32), nullable=False),
    Column("defect_id", _text(64)),
    Column("command_id", _text(64)),
    Column("agent_id", _text(64)),
    Column("detail", Text),
    Column("correlation_id", _text(64)),
)

RowKind = Literal["defect", "command", "agent", "event"]
Synchronous = Literal["normal", "full"]


@dataclass
class Snapshot:
    """Everything a restarted service needs: defects, commands and agents as they were."""

    defects: list[Defect] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    agents: list[AgentState] = field(default_factory=list)
    halt_reason: str | None = None  # an E-stop in force when the service stopped


def default_db_url(home: Path) -> str:
    return f"sqlite:///{home / DEFAULT_DB_FILENAME}"


def _iso(moment: datetime | None) -> str | None:
    return utc_iso(moment) if moment is not None else None


def _dt(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def defect_row(d: Defect) -> dict[str, Any]:
    return {
        "defect_id": d.defect_id,
        "x": d.position.x,
        "y": d.position.y,
        "z": d.position.z,
        "defect_type": d.defect_type,
        "severity": d.severity,
        "status": d.status.value,
        "attempts": d.attempts,
        "reason": d.reason,
        "agent_id": d.agent_id,
        "seq": d.seq,
        "detected_at": _iso(d.detected_at),
        "completed_at": _iso(d.completed_at),
        "correlation_id": d.correlation_id,
    }


def command_row(c: Command) -> dict[str, Any]:
    return {
        "command_id": c.command_id,
        "defect_id": c.defect_id,
        "agent_id": c.agent_id,
        "action": c.action.value,
        "target_x": c.target.x,
        "target_y": c.target.y,
        "target_z": c.target.z,
        "thermal_budget_c": c.thermal_budget_c,
        "severity": c.severity,
        "status": c.status.value,
        "created_at": _iso(c.created_at),
        "updated_at": _iso(c.updated_at),
        "correlation_id": c.correlation_id,
        "detail": c.detail,
    }


def agent_row(a: AgentState) -> dict[str, Any]:
    return {
        "agent_id": a.agent_id,
        "x": a.position.x,
        "y": a.position.y,
        "z": a.position.z,
        "status": a.status.value,
        "temperature_c": a.temperature_c,
        "assigned_total": a.assigned_total,
        "last_update": _iso(a.last_update),
    }


_TABLES: dict[RowKind, tuple[Table, str | None]] = {
    "defect": (defects_table, "defect_id"),
    "command": (commands_table, "command_id"),
    "agent": (agent_states_table, "agent_id"),
    "event": (repair_events_table, None),
}


class SwarmStore:
    """The database behind the service; every method is synchronous (run it off the loop)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str, *, synchronous: Synchronous = "normal") -> SwarmStore:
        """Connect to ``url``, create the tables if needed and check they are a swarm store's.

        Raises :class:`InvalidInputError` for a URL or file that cannot be a swarm database (a
        bad scheme, a folder, another program's file), :class:`UnavailableError` when a driver
        is missing or the server refuses the credentials, :class:`ConnectionFailedError` when a
        database server cannot be reached. Messages never show a password.
        """
        shown = _without_password(url)
        fix = "pass sqlite:///PATH or postgresql+psycopg://USER@HOST/DB to --db-url"
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError, TypeError):
            raise InvalidInputError(
                f"{shown!r} is not a database URL; {fix}", field="db_url", value=shown
            ) from None
        sqlite_path = _sqlite_file(parsed)
        if sqlite_path is not None:
            _prepare_sqlite_path(sqlite_path, shown)
        try:
            # A server may drop idle connections (a restart, a proxy): test one before using it.
            pre_ping = parsed.get_backend_name() != "sqlite"
            connect_args: dict[str, Any] = {}
            if parsed.get_driver_name() == "psycopg":
                connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
            engine = create_engine(
                parsed, future=True, pool_pre_ping=pre_ping, connect_args=connect_args
            )
        except ImportError as exc:
            raise UnavailableError(
                f"the driver for {shown!r} is not installed ({exc.name or exc}); install the "
                "'postgres' extra for PostgreSQL, or use sqlite:///PATH",
                field="db_url",
                value=shown,
            ) from None
        except (SQLAlchemyError, ValueError, TypeError) as exc:
            raise InvalidInputError(
                f"cannot use database URL {shown!r}: {_scrub(str(exc), parsed)}; {fix}",
                field="db_url",
                value=shown,
            ) from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas(synchronous))
        try:
            metadata.create_all(engine)
            with engine.connect() as conn:  # a table of the same name but another shape
                for table in metadata.sorted_tables:
                    conn.execute(select(*table.columns).limit(0))
        except SQLAlchemyError as exc:
            engine.dispose()
            raise _open_error(exc, parsed, shown) from None
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    def write(self, batch: Sequence[tuple[RowKind, dict[str, Any]]]) -> int:
        """Upsert defects/commands/agents and append events in one transaction."""
        latest: dict[tuple[RowKind, str], dict[str, Any]] = {}
        events: list[dict[str, Any]] = []
        for kind, row in batch:
            _, key = _TABLES[kind]
            if key is None:
                events.append(row)
            else:
                latest[(kind, row[key])] = row  # the newest state of a row wins
        with self.engine.begin() as conn:
            for kind in ("defect", "command", "agent"):
                rows = [row for (k, _), row in latest.items() if k == kind]
                if rows:
                    _upsert(conn, kind, rows)
            if events:
                conn.execute(insert(repair_events_table), _storable(conn, events))
        return len(latest) + len(events)

    def load(self) -> Snapshot:
        """Everything a restarted service resumes from; InvalidInputError naming a row the
        service cannot read back (it never writes such rows)."""
        try:
            return self._load()
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidInputError(
                f"the swarm database holds a row this version cannot read ({exc}); restore a "
                "backup or start with a new --db-url",
                field="db_url",
            ) from None

    def _load(self) -> Snapshot:
        with self.engine.connect() as conn:
            defects = [_defect(r._mapping) for r in conn.execute(select(defects_table))]
            commands = [_command(r._mapping) for r in conn.execute(select(commands_table))]
            agents = [_agent(r._mapping) for r in conn.execute(select(agent_states_table))]
            events = repair_events_table.c
            last = conn.execute(
                select(events.event, events.detail)
                .where(events.event.in_(("halt", "resume")))
                .order_by(events.event_id.desc())
                .limit(1)
            ).first()
        defects.sort(key=lambda d: d.seq)
        # SQLite hands rows back in insertion order; PostgreSQL moves an updated row to the end.
        commands.sort(key=lambda c: c.created_at)
        halt_reason = (
            (last.detail or "halted") if last is not None and last.event == "halt" else None
        )
        return Snapshot(defects, commands, agents, halt_reason)

    def events(self, defect_id: str | None = None) -> list[dict[str, Any]]:
        query = select(repair_events_table).order_by(repair_events_table.c.event_id)
        if defect_id is not None:
            query = query.where(repair_events_table.c.defect_id == defect_id)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    # -- reads for live views (the dashboard); none of them writes ---------------------------

    @classmethod
    def open_read_only(cls, url: str) -> SwarmStore:
        """Open an existing database to read: never creates a file, a table or a WAL switch.

        A SQLite file is opened with ``mode=ro`` (safe beside a running service); a missing one
        is a NotFoundError naming it.
        """
        shown = _without_password(url)
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            path = Path(url.removeprefix("sqlite:///"))
            if not path.is_file():
                raise NotFoundError(
                    f"no swarm database at {str(path)!r}; start `atomlab swarm serve` (it creates "
                    "it) or point at the service's database with --db-url",
                    field="db_url",
                    value=shown,
                )
            url = f"sqlite:///file:{path.resolve()}?mode=ro&uri=true"
        try:
            engine = create_engine(url, future=True, pool_pre_ping=not url.startswith("sqlite"))
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise UnavailableError(
                f"cannot use database URL {shown!r}: {exc}", field="db_url", value=shown
            ) from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_busy_timeout)
        return cls(engine)

    def agents(self) -> list[AgentState]:
        """Every agent as last stored (position, status, temperature)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(agent_states_table).order_by(agent_states_table.c.agent_id))
            return [_agent(r._mapping) for r in rows]

    def defects(self) -> list[Defect]:
        """Every defect, in detection order."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(defects_table).order_by(defects_table.c.seq))
            return [_defect(r._mapping) for r in rows]

    def defect_counts(self) -> dict[str, int]:
        """How many defects have each status (only statuses that occur)."""
        status = defects_table.c.status
        with self.engine.connect() as conn:
            rows = conn.execute(select(status, func.count()).group_by(status))
            return {str(s): int(n) for s, n in rows}

    def commands_created_after(self, moment: str | None = None) -> list[Command]:
        """Commands created after ``moment`` (stored ISO form; None: all), oldest first."""
        query = select(commands_table).order_by(commands_table.c.created_at)
        if moment is not None:
            query = query.where(commands_table.c.created_at > moment)
        with self.engine.connect() as conn:
            return [_command(r._mapping) for r in conn.execute(query)]

    def events_after(self, event_id: int, *, limit: int = 1000) -> list[dict[str, Any]]:
        """A cursor tail of repair events: up to ``limit`` with ``event_id > event_id``."""
        events = repair_events_table.c
        query = select(repair_events_table).where(events.event_id > event_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(events.event_id).limit(max(1, limit)))
            return [dict(r._mapping) for r in rows]

    def halt_reason(self) -> str | None:
        """The E-stop in force (its reason), or None: the latest halt or resume event decides."""
        events = repair_events_table.c
        with self.engine.connect() as conn:
            last = conn.execute(
                select(events.event, events.detail)
                .where(events.event.in_(("halt", "resume")))
                .order_by(events.event_id.desc())
                .limit(1)
            ).first()
        return (last.detail or "halted") if last is not None and last.event == "halt" else None


def _sqlite_file(parsed: URL) -> Path | None:
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _prepare_sqlite_path(path: Path, shown: str) -> None:
    """A folder, or a path through a file, is refused with the fix; the parent is created."""
    if path.is_dir():
        raise InvalidInputError(
            f"{shown!r} names a folder, not a database file; pass sqlite:///{path}/swarm.sqlite",
            field="db_url",
            value=shown,
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot create the folder of {shown!r}: {exc.strerror or exc}; pick another path",
            field="db_url",
            value=shown,
        ) from None


def _open_error(exc: SQLAlchemyError, parsed: URL, shown: str) -> AtomlabError:
    reason = _scrub(f"{exc.__class__.__name__}: {getattr(exc, 'orig', None) or exc}", parsed)
    reason = reason.splitlines()[0][:300] if reason else exc.__class__.__name__
    if parsed.get_backend_name() == "sqlite":
        return InvalidInputError(
            f"cannot open {shown!r} as a swarm database ({reason}); pass a new or existing "
            "swarm database file to --db-url",
            field="db_url",
            value=shown,
        )
    if isinstance(exc, OperationalError | InterfaceError) and not _is_auth_failure(reason):
        return ConnectionFailedError(
            f"cannot reach the database server of {shown!r} ({reason}); start it, or check "
            "the host and port in --db-url",
            field="db_url",
            value=shown,
        )
    return UnavailableError(
        f"cannot open the swarm database {shown!r}: {reason}; check --db-url and the server",
        field="db_url",
        value=shown,
    )


def _is_auth_failure(reason: str) -> bool:
    lowered = reason.lower()
    return "authentication" in lowered or "password" in lowered or "permission" in lowered


def _scrub(text: str, parsed: URL) -> str:
    """An error text with the URL's password removed, wherever the driver put it."""
    password = parsed.password
    if password:
        text = text.replace(str(password), "***")
    return text


def _without_password(url: str) -> str:
    """The URL as error messages show it."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _storable(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """PostgreSQL text cannot hold NUL (SQLite's can): it becomes U+FFFD there, not a lost batch."""
    if conn.dialect.name != "postgresql":
        return rows
    return [
        {k: v.replace("\x00", "\ufffd") if isinstance(v, str) else v for k, v in row.items()}
        for row in rows
    ]


def _sqlite_pragmas(synchronous: Synchronous) -> Callable[[Any, Any], None]:
    """WAL; ``full`` syncs the log at every commit (a 202 survives a power cut too), ``normal``
    only at checkpoints (it survives a crash of this process, kill -9 included)."""
    level = "FULL" if synchronous == "full" else "NORMAL"

    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={level}")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    return on_connect


def _sqlite_busy_timeout(dbapi_conn: Any, _record: Any) -> None:
    """A reader waits out a writer's lock instead of failing at once (and changes nothing)."""
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _upsert(conn: Connection, kind: RowKind, rows: list[dict[str, Any]]) -> None:
    table, key = _TABLES[kind]
    assert key is not None
    dialect = conn.dialect.name
    if dialect == "sqlite":
        stmt: Any = sqlite_insert(table)
    elif dialect == "postgresql":
        stmt = pg_insert(table)
    else:  # any other database: delete + insert inside the transaction
        conn.execute(table.delete().where(table.c[key].in_([r[key] for r in rows])))
        conn.execute(insert(table), rows)
        return
    columns = {c.name: stmt.excluded[c.name] for c in table.columns if c.name != key}
    upsert = stmt.on_conflict_do_update(index_elements=[key], set_=columns)
    conn.execute(upsert, _storable(conn, rows))


def _defect(r: Any) -> Defect:
    return Defect(
        defect_id=r["defect_id"],
        position=Point(r["x"], r["y"], r["z"]),
        defect_type=r["defect_type"],
        severity=r["severity"],
        detected_at=_dt(r["detected_at"]) or datetime.fromtimestamp(0),
        correlation_id=r["correlation_id"],
        seq=r["seq"],
        status=DefectStatus(r["status"]),
        attempts=r["attempts"],
        reason=r["reason"],
        agent_id=r["agent_id"],
        completed_at=_dt(r["completed_at"]),
    )


def _command(r: Any) -> Command:
    return Command(
        command_id=r["command_id"],
        defect_id=r["defect_id"],
        agent_id=r["agent_id"],
        action=Action(r["action"]),
        target=Point(r["target_x"], r["target_y"], r["target_z"]),
        thermal_budget_c=r["thermal_budget_c"],
        correlation_id=r["correlation_id"],
        created_at=_dt(r["created_at"]) or datetime.fromtimestamp(0),
        severity=r["severity"],
        status=CommandStatus(r["status"]),
        updated_at=_dt(r["updated_at"]),
        detail=r["detail"],
    )


def _agent(r: Any) -> AgentState:
    return AgentState(
        agent_id=r["agent_id"],
        position=Point(r["x"], r["y"], r["z"]),
        status=AgentStatus(r["status"]),
        temperature_c=r["temperature_c"],
        assigned_total=r["assigned_total"],
        last_update=_dt(r["last_update"]),
    )


class RowsRejectedError(UnavailableError):
    """Rows the database refused on their own (logged and dropped; the rest was written)."""

    type_name = "rows_rejected"


@dataclass(eq=False)
class _Waiter:
    first: int
    last: int
    future: asyncio.Future[None]


_Item = tuple[int, RowKind, dict[str, Any]]


class StoreWriter:
    """Writes the rows the coordinator hands over, in batches, off the event loop.

    * **Group commit**: rows wait at most ``flush_interval_s`` to share a transaction, but as
      soon as somebody waits for durability (:meth:`durable`) everything pending is committed at
      once; rows arriving during a commit share the next one.
    * **Nothing is dropped for a passing fault**: a batch that fails on a lost connection, a
      locked or unreachable database is kept and written again (back-off up to
      :data:`MAX_RETRY_DELAY_S`); the failure is reported to ``on_failure`` each time.
    * **One bad row costs one row**: a batch refused for its content is split until the rows
      the database refuses are found; those are logged, counted and dropped, the rest written.
    * A batch interrupted by a crash of the task is written first when it is started again.
    """

    def __init__(
        self,
        store: SwarmStore,
        *,
        on_written: Callable[[int, BaseException | None], None] | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        on_rejected: Callable[[RowKind, str, BaseException], None] | None = None,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        on_committed: Callable[[float], None] | None = None,
    ) -> None:
        self.store = store
        self.flush_interval_s = flush_interval_s
        self._on_written = on_written
        self._on_failure = on_failure
        self._on_rejected = on_rejected
        self._on_committed = on_committed
        self._pending: deque[_Item] = deque()
        self._inflight: list[_Item] = []
        self._ready = asyncio.Event()
        self._urgent = asyncio.Event()
        self._waiters: list[_Waiter] = []
        self._dropped: deque[int] = deque(maxlen=DROPPED_SEQS_KEPT)
        self._seq = 0  # the last row handed over
        self._settled = 0  # every row up to here is committed or rejected
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.errors = 0
        self.rejected = 0
        self.unavailable: str | None = None  # why the database cannot be written right now

    # --- handing rows over ------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The number of the last row handed over (see :meth:`durable`)."""
        return self._seq

    @property
    def backlog(self) -> int:
        return self._seq - self._settled

    def put(self, kind: RowKind, row: dict[str, Any]) -> int:
        """Queue one row; returns its number."""
        self._seq += 1
        self._pending.append((self._seq, kind, row))
        self._ready.set()
        return self._seq

    def put_many(self, items: Iterable[tuple[RowKind, dict[str, Any]]]) -> None:
        for kind, row in items:
            self.put(kind, row)

    async def durable(self, since: int = 0, upto: int | None = None) -> None:
        """Wait until rows ``since+1 .. upto`` (default: everything handed over so far) are
        committed. Raises :class:`RowsRejectedError` if the database refused one of them."""
        last = self._seq if upto is None else upto
        if last <= self._settled:
            self._raise_if_dropped(since, last)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(since + 1, last, future))
        self._urgent.set()
        self._ready.set()
        await future

    async def flush(self) -> None:
        """Wait until every row put so far is committed (or rejected)."""
        with contextlib.suppress(RowsRejectedError):
            await self.durable()

    def start(self) -> None:
        """Run the writer as a plain task (the service runs :meth:`run` under its supervisor)."""
        self._task = asyncio.create_task(self.run(), name="swarm-db-writer")

    async def close(self, timeout_s: float | None = None) -> None:
        """Write what is pending (waiting at most ``timeout_s``), then stop the plain task."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.flush()
        except TimeoutError:
            log.error("swarm.db_rows_unwritten", rows=self.backlog, reason=self.unavailable)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Write batches until cancelled (restartable: an interrupted batch goes first)."""
        while True:
            if not self._inflight:
                await self._next_batch()
            await self._write(self._inflight)
            self._inflight = []

    async def _next_batch(self) -> None:
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
        if not self._urgent.is_set() and len(self._pending) < MAX_BATCH:
            # Let a batch gather: one transaction per interval instead of one per row keeps
            # the writer thread (and its hold on the GIL) off the ingest path's back. Anyone
            # waiting for durability cuts the wait short.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval_s):
                    await self._urgent.wait()
        count = min(len(self._pending), MAX_BATCH)
        self._inflight = [self._pending.popleft() for _ in range(count)]
        if not self._pending:
            self._ready.clear()

    async def _write(self, batch: list[_Item]) -> None:
        delay = FIRST_RETRY_DELAY_S
        while True:
            began = time.perf_counter()
            try:
                rejected = await asyncio.to_thread(self._commit, batch)
            except Exception as exc:
                if not _transient(exc):
                    raise  # a bug in this code: the supervisor logs it and restarts the task
                self.errors += 1
                self.unavailable = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                if self._on_written is not None:
                    self._on_written(0, exc)
                if self._on_failure is not None:
                    self._on_failure(exc)
                await asyncio.sleep(delay)  # real time: the database recovers in real time
                delay = min(delay * 2, MAX_RETRY_DELAY_S)
                continue
            break
        self.unavailable = None
        if self._on_committed is not None:
            self._on_committed(time.perf_counter() - began)
        written = len(batch) - len(rejected)
        for (seq, kind, row), why in rejected:
            self.rejected += 1
            self._dropped.append(seq)
            key = _TABLES[kind][1]
            name = str(row.get(key, "?"))[:64] if key is not None else "event"
            log.error("swarm.db_row_rejected", kind=kind, key=name, error=repr(why)[:300])
            if self._on_rejected is not None:
                self._on_rejected(kind, name, why)
        self.written += written
        if self._on_written is not None:
            self._on_written(written, None)
        self._settled = max(self._settled, batch[-1][0]) if batch else self._settled
        self._wake_waiters()

    def _commit(self, batch: list[_Item]) -> list[tuple[_Item, BaseException]]:
        """Write ``batch`` (in a worker thread); the rows refused on their own, with why."""
        try:
            self.store.write([(kind, row) for _, kind, row in batch])
            return []
        except Exception as exc:
            if _transient(exc):
                raise
            if len(batch) == 1:
                return [(batch[0], exc)]
            middle = len(batch) // 2
            return self._commit(batch[:middle]) + self._commit(batch[middle:])

    def _wake_waiters(self) -> None:
        still: list[_Waiter] = []
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            if waiter.last > self._settled:
                still.append(waiter)
                continue
            try:
                self._raise_if_dropped(waiter.first - 1, waiter.last)
            except RowsRejectedError as exc:
                waiter.future.set_exception(exc)
            else:
                waiter.future.set_result(None)
        self._waiters = still
        if not still:
            self._urgent.clear()

    def _raise_if_dropped(self, since: int, upto: int) -> None:
        dropped = [seq for seq in self._dropped if since < seq <= upto]
        if dropped:
            raise RowsRejectedError(
                f"the database refused {len(dropped)} row(s) of this request; see the log "
                "(swarm.db_row_rejected)",
                rows=len(dropped),
            )


def _transient(exc: BaseException) -> bool:
    """A fault of the connection or the server, worth retrying (not one of the rows)."""
    return isinstance(exc, OperationalError | InterfaceError | DisconnectionError | PoolTimeout)
