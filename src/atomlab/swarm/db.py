"""Persistence of defects, commands, agent states and repair events through SQLAlchemy 2.

SQLite (``<home>/swarm.sqlite``, WAL) by default, PostgreSQL by URL. Writes never happen on the
request path: the coordinator hands rows to :class:`StoreWriter`, a background task that
batches them into one transaction per flush::

    store = SwarmStore.open("sqlite:///tmp/swarm.sqlite")
    snapshot = store.load()        # what a restarted service resumes from
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
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
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.types import TypeEngine

from atomlab.core.clock import utc_iso
from atomlab.core.errors import NotFoundError, UnavailableError
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
    def open(cls, url: str) -> SwarmStore:
        """Connect to ``url`` and create the tables if needed; raises UnavailableError."""
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        shown = _without_password(url)
        try:
            # A server may drop idle connections (a restart, a proxy): test one before using it.
            pre_ping = not url.startswith("sqlite")
            engine = create_engine(url, future=True, pool_pre_ping=pre_ping)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise UnavailableError(
                f"cannot use database URL {shown!r}: {exc}; pass sqlite:///PATH or "
                "postgresql+psycopg://USER@HOST/DB to --db-url",
                field="db_url",
                value=shown,
            ) from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        try:
            metadata.create_all(engine)
        except SQLAlchemyError as exc:
            raise UnavailableError(
                f"cannot open the swarm database {shown!r}: {exc.__class__.__name__}: {exc}",
                field="db_url",
                value=shown,
            ) from None
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


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


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


class StoreWriter:
    """Batches rows handed over by the coordinator and writes them off the event loop."""

    def __init__(
        self,
        store: SwarmStore,
        *,
        on_written: Any = None,
        flush_interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        self.store = store
        self.flush_interval_s = flush_interval_s
        self._queue: asyncio.Queue[tuple[RowKind, dict[str, Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._on_written = on_written
        self.written = 0
        self.errors = 0

    def put(self, kind: RowKind, row: dict[str, Any]) -> None:
        self._queue.put_nowait((kind, row))

    def put_many(self, items: Iterable[tuple[RowKind, dict[str, Any]]]) -> None:
        for item in items:
            self._queue.put_nowait(item)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="swarm-db-writer")

    async def flush(self) -> None:
        """Wait until every row put so far is committed."""
        await self._queue.join()

    async def close(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            if self._queue.qsize() < MAX_BATCH:
                # Let a batch gather: one transaction per interval instead of one per row keeps
                # the writer thread (and its hold on the GIL) off the ingest path's back.
                await asyncio.sleep(self.flush_interval_s)
            batch = [first]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                count = await asyncio.to_thread(self.store.write, batch)
                self.written += count
                if self._on_written is not None:
                    self._on_written(count, None)
            except SQLAlchemyError as exc:
                self.errors += 1
                log.error("swarm.db_write_failed", error=str(exc), rows=len(batch))
                if self._on_written is not None:
                    self._on_written(0, exc)
            finally:
                for _ in batch:
                    self._queue.task_done()
