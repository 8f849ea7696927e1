"""The swarm service's HTTP and WebSocket surface: ``create_app(settings)``.

One router per resource, the service object injected with ``Depends``, no globals: every call
of :func:`create_app` builds an independent service (its own registry, database, coordinator,
simulator link, tokens and supervisor), started and stopped by the app's lifespan::

    app = create_app(load_settings().settings)
    uvicorn.run(app, host="127.0.0.1", port=8000)

In front of the routes, :class:`~atomlab.swarm.guard.RequestGuard` checks credentials, media
type, size and depth of every mutating request; a ``202`` from ``POST /api/sensor-data`` is
sent only after the batch is committed (group commit), so an accepted defect survives kill -9.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atomlab.core.clock import Clock, SystemClock, utc_iso
from atomlab.core.errors import (
    AtomlabError,
    ConnectionFailedError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from atomlab.core.logging import correlation_scope, current_correlation_id, get_logger
from atomlab.core.metrics import CONTENT_TYPE, Metrics, new_registry
from atomlab.core.resilience import CircuitBreaker
from atomlab.core.settings import AtomlabSettings, redact_url_password
from atomlab.llm import Provider, make_provider, resolve_provider_name
from atomlab.sim.swarm_wire import printable
from atomlab.swarm.auth import SwarmTokens, load_tokens
from atomlab.swarm.coordinator import SwarmCoordinator
from atomlab.swarm.db import RowsRejectedError, StoreWriter, SwarmStore, default_db_url
from atomlab.swarm.guard import Protected, RequestGuard
from atomlab.swarm.link import SimulatorLink
from atomlab.swarm.metrics import SwarmMetrics
from atomlab.swarm.models import (
    GRID_NM,
    AgentOut,
    AgentStatus,
    CommandOut,
    CommandStatus,
    DatabaseOut,
    DefectOut,
    DefectStatus,
    DistributeOut,
    ErrorBody,
    HealthOut,
    IngestAccepted,
    LinkOut,
    ResumeOut,
    SensorDataIn,
    TaskOut,
    command_out,
    defect_out,
    point_out,
)
from atomlab.swarm.planner import LLM_FAILURE_THRESHOLD, LLM_RESET_S, LlmRouteAdvisor
from atomlab.swarm.supervision import Supervisor
from atomlab.swarm.validation import Rejection

CORRELATION_HEADER = "x-correlation-id"
CORRELATION_ID_LIMIT = 64
CORRELATION_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:/+=-]")
LOGGED_IDS = 100  # defect ids named in an ingest's log line (the count is always there)
ECHO_LIMIT = 200  # characters of a refused value echoed back in an error
ID_LIMIT = 128
API_VERSION = "1.1"
SHUTDOWN_FLUSH_S = 3.0  # the writer gets this long to commit what is pending at a stop
BEARER_SCHEME = "bearer"

# (method, path) -> what the guard checks; also what the OpenAPI document says is protected.
PROTECTED_ROUTES: dict[tuple[str, str], Protected] = {
    ("POST", "/api/sensor-data"): Protected("ingest", body=True),
    ("POST", "/api/commands/distribute"): Protected("control", body=False),
    ("POST", "/api/agents/resume"): Protected("control", body=False),
}
READ_PATHS = ("/api", "/metrics")  # need the read scope when a read token is configured


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


BAD_REQUEST = _error("The body cannot be read: not UTF-8, not JSON, or nested too deeply.")
UNAUTHORIZED = _error("No valid bearer token (send 'Authorization: Bearer <token>').")
FORBIDDEN = _error("The token is valid but lacks this route's scope.")
TOO_LARGE = _error("The body is larger than swarm.max_body_bytes.")
NOT_JSON = _error("The body is not application/json.")
INVALID = _error("Invalid input; nothing was queued.")
INVALID_QUERY = _error("Invalid query or path parameter.")
SERVER_ERROR = _error("Unexpected server error (never a traceback).")
UNAVAILABLE = _error("The database did not confirm the write in time; nothing is promised.")
NOT_FOUND = _error("No such resource.")

log = get_logger(__name__)


class RequestRejectedError(InvalidInputError):
    """Input the API refuses (422), naming each field, its value and the rule it broke."""

    type_name = "validation_error"

    def __init__(self, rejections: list[Rejection]) -> None:
        first = rejections[0]
        super().__init__(first.message, field=first.field, value=first.value)
        self.rejections = rejections


@dataclass
class SwarmService:
    """Everything one app instance owns; reached from routes through :func:`service`."""

    settings: AtomlabSettings
    clock: Clock
    registry: CollectorRegistry
    metrics: SwarmMetrics
    coordinator: SwarmCoordinator
    link: SimulatorLink
    db_url: str
    started_at: float
    tokens: SwarmTokens
    supervisor: Supervisor
    store: SwarmStore | None = None
    writer: StoreWriter | None = None
    # Called when a background task is given up on: the CLI stops the server with it.
    on_fatal: list[Callable[[str], None]] = field(default_factory=list)

    @property
    def db_url_shown(self) -> str:
        """The database URL as logs and banners show it (never the password)."""
        return redact_url_password(self.db_url)


async def service(request: Request) -> SwarmService:
    """The app's service (async: FastAPI would run a plain function in its thread pool)."""
    svc: SwarmService = request.app.state.swarm
    return svc


Service = Annotated[SwarmService, Depends(service)]


def create_app(
    settings: AtomlabSettings,
    *,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    db_url: str | None = None,
    provider: Provider | None = None,
    tokens: SwarmTokens | None = None,
    store: SwarmStore | None = None,
) -> FastAPI:
    """Build one independent swarm service (see the module docstring).

    ``tokens`` default to :func:`~atomlab.swarm.auth.load_tokens` with ``create=True`` (the
    tokens file is written on first use). ``store``: an already opened database (``swarm
    serve`` opens it before it listens, so a bad ``--db-url`` is a clean error, not a crash).
    """
    clock = clock or SystemClock()
    registry = registry if registry is not None else new_registry()
    swarm = settings.swarm
    tokens = tokens if tokens is not None else load_tokens(settings, create=True)
    metrics = SwarmMetrics(registry)
    fatal_hooks: list[Callable[[str], None]] = []

    def on_fatal(reason: str) -> None:
        for hook in list(fatal_hooks):
            hook(reason)

    supervisor = Supervisor(clock=clock, metrics=metrics, on_fatal=on_fatal)
    link = SimulatorLink(
        clock=clock,
        metrics=Metrics("swarm", registry),
        ack_timeout_s=swarm.ack_timeout_s,
        heartbeat_interval_s=swarm.heartbeat_interval_s,
        missed_heartbeats=swarm.missed_heartbeats,
        link_token=tokens.link,
        peer_policy=swarm.link_peer_policy,
        max_frame_bytes=swarm.max_frame_bytes,
        on_failure=supervisor.record_failure,
    )
    advisor = None
    if provider is not None or _llm_planner_wanted(settings):
        breaker = CircuitBreaker(
            "swarm_llm",
            failure_threshold=LLM_FAILURE_THRESHOLD,
            reset_timeout_s=LLM_RESET_S,
            clock=clock,
            metrics_registry=registry,
            capability="swarm",
        )
        chosen = provider or make_provider(settings.llm, home=settings.home)
        advisor = LlmRouteAdvisor(
            chosen, timeout_s=swarm.llm_timeout_s, clock=clock, breaker=breaker
        )
    coordinator = SwarmCoordinator(
        settings=swarm,
        clock=clock,
        metrics=metrics,
        send=link.send_command,
        advisor=advisor,
        link_connected=lambda: link.connected,
        supervisor=supervisor,
    )
    link.on_event = coordinator.on_link_event
    svc = SwarmService(
        settings=settings,
        clock=clock,
        registry=registry,
        metrics=metrics,
        coordinator=coordinator,
        link=link,
        db_url=db_url or swarm.db_url or default_db_url(settings.home),
        started_at=clock.monotonic(),
        tokens=tokens,
        supervisor=supervisor,
        store=store,
        on_fatal=fatal_hooks,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _start(svc)
        try:
            yield
        finally:
            await _stop(svc)

    app = FastAPI(
        title="atomlab swarm repair service",
        version=API_VERSION,
        description=(
            "Validates detected surface defects, plans repair routes, dispatches a swarm of "
            "nano-agents over the /ws/isaac WebSocket and verifies every repair by re-scan. "
            "Mutating routes need a bearer token (scopes ingest, control); reads are public "
            "unless a read token is configured. A 202 means the batch is committed."
        ),
        lifespan=lifespan,
    )
    app.state.swarm = svc
    app.add_middleware(
        RequestGuard,
        tokens=tokens,
        routes=PROTECTED_ROUTES,
        read_paths=READ_PATHS,
        max_body_bytes=swarm.max_body_bytes,
        metrics=metrics,
        error=error_body,
    )
    app.add_middleware(CorrelationMiddleware, metrics=metrics)
    _install_error_handlers(app)
    # The control routes first: for OPTIONS /api/commands/distribute the first route whose
    # path matches names the allowed methods, and that must be this POST, not GET {command_id}.
    for router in (
        health_router,
        sensor_router,
        control_router,
        defects_router,
        commands_router,
        agents_router,
    ):
        app.include_router(router)
    app.add_api_websocket_route("/ws/isaac", link.handle)
    app.openapi = lambda: _openapi(app, settings, tokens)  # type: ignore[method-assign]
    return app


def _llm_planner_wanted(settings: AtomlabSettings) -> bool:
    """``auto``: ask an LLM only when a real one is configured (a key or a server URL); the
    offline provider cannot beat the deterministic planner, so it is not asked by default."""
    choice = settings.swarm.llm_planner
    if choice != "auto":
        return choice == "on"
    return resolve_provider_name(settings.llm, os.environ) not in ("offline", "replay")


async def _start(svc: SwarmService) -> None:
    store = svc.store
    if store is None:
        store = await asyncio.to_thread(
            SwarmStore.open, svc.db_url, synchronous=svc.settings.swarm.db_synchronous
        )
        svc.store = store
    snapshot = await asyncio.to_thread(store.load)
    metrics = svc.metrics

    def on_written(count: int, error: BaseException | None) -> None:
        if error is None:
            metrics.db_writes.inc(count)
        else:
            metrics.db_errors.inc()

    def on_rejected(_kind: str, _key: str, exc: BaseException) -> None:
        metrics.db_rejected_rows.inc()
        svc.supervisor.record_failure("swarm-db-writer", exc)

    svc.writer = StoreWriter(
        store,
        on_written=on_written,
        on_failure=lambda exc: svc.supervisor.record_failure("swarm-db-writer", exc),
        on_rejected=on_rejected,
        on_committed=metrics.db_commit_seconds.observe,
    )
    svc.supervisor.start("swarm-db-writer", svc.writer.run)
    svc.coordinator.writer = svc.writer
    svc.coordinator.restore(
        snapshot.defects, snapshot.commands, snapshot.agents, halt_reason=snapshot.halt_reason
    )
    svc.coordinator.start()
    # Everything loaded so far (modules, the app, the restored state) lives as long as the
    # process: keep it out of the collector's full passes, which otherwise stall the event loop
    # for tens of milliseconds on the ingest path.
    gc.freeze()
    log.info(
        "swarm.started",
        db_url=svc.db_url_shown,
        defects=len(snapshot.defects),
        tokens=svc.tokens.describe(),
    )


async def _stop(svc: SwarmService) -> None:
    await svc.coordinator.stop()  # the planner, dispatcher, sender and watchdog
    await svc.link.close()
    writer = svc.writer
    if writer is not None:
        try:
            async with asyncio.timeout(SHUTDOWN_FLUSH_S):
                await writer.flush()
        except TimeoutError:
            log.error("swarm.db_rows_unwritten", rows=writer.backlog, reason=writer.unavailable)
    await svc.supervisor.stop()  # the writer last: it commits what the others left
    if svc.store is not None:
        await asyncio.to_thread(svc.store.close)
    log.info("swarm.stopped")


# --- middleware and errors ------------------------------------------------------------------


def clean_correlation_id(incoming: str | None) -> str:
    """A caller's id made safe to log and echo (64 characters of ``[A-Za-z0-9._:/+=-]``), or a
    new one."""
    if incoming:
        cleaned = CORRELATION_ID_UNSAFE.sub("", incoming[: CORRELATION_ID_LIMIT * 4])
        cleaned = cleaned[:CORRELATION_ID_LIMIT]
        if cleaned:
            return cleaned
    return uuid.uuid4().hex[:16]


class CorrelationMiddleware:
    """Gives every request a correlation id (``X-Correlation-ID`` in and out) and logs it."""

    def __init__(self, app: ASGIApp, metrics: SwarmMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, CORRELATION_HEADER) or _header(scope, "x-request-id")
        cid = clean_correlation_id(incoming)
        began = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                headers = list(message.get("headers", []))
                headers.append((CORRELATION_HEADER.encode(), cid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with correlation_scope(cid):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                # Answered here, inside the correlation scope, so that even an unexpected
                # error carries the request's id (body and header) like every other answer.
                if started:
                    raise
                log.error("http.unexpected_error", error=repr(exc)[:300], exc_info=exc)
                response = error_body(
                    500, "INTERNAL_ERROR", f"unexpected {type(exc).__name__}; see the log"
                )
                await response(scope, receive, send_with_id)
            finally:
                route = scope.get("route")
                path = getattr(route, "path", "unmatched")
                self.metrics.http_requests.labels(route=path, code=str(status)).inc()
                state = scope.get("state") or {}
                log.info(
                    "http.request",
                    method=str(scope.get("method"))[:16],
                    path=str(scope.get("path"))[:ECHO_LIMIT],
                    status=status,
                    duration_ms=round((time.perf_counter() - began) * 1000, 3),
                    **state.get("log_fields", {}),
                )


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            text: str = value.decode("latin-1")
            return text
    return None


def error_body(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    value: Any = None,
    constraint: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    details = None
    if field is not None or constraint is not None:
        details = {
            "field": _clip(field),
            "value": _jsonable(value),
            "constraint": _clip(constraint),
        }
    body = {
        "error": {
            "code": code,
            "message": _clip(message, 4 * ECHO_LIMIT),
            "details": details,
            "correlation_id": current_correlation_id(),
            "timestamp": utc_iso(SystemClock().now()),
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _clip(text: str | None, limit: int = ECHO_LIMIT) -> str | None:
    """At most ``limit`` characters of a text that may carry a caller's input, always
    encodable (an unpaired surrogate is escaped, not a 500)."""
    if text is None:
        return None
    text = printable(text)
    if len(text) <= limit:
        return text
    return text[:limit] + f"... ({len(text)} characters)"


def _jsonable(value: Any) -> Any:
    """A refused value as JSON, never whole: a 100 MB string comes back as 200 characters."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no inf / nan: "inf", "nan"
    if isinstance(value, str):
        return _clip(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return _clip(str(value))
    if value is None or isinstance(value, int | float | bool):
        return value
    try:
        shown = repr(value)
    except RecursionError:
        shown = f"<{type(value).__name__}>"
    return _clip(shown)


_STATUS_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        field = ".".join(loc) or "body"
        if first.get("type") == "json_invalid":
            return error_body(
                400, "BAD_REQUEST", "the body is not JSON", field="body", constraint="not_json"
            )
        reason = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return error_body(
            422,
            "VALIDATION_ERROR",
            f"{_clip(field)}: {reason}",
            field=field,
            value=first.get("input"),
            constraint=reason,
        )

    @app.exception_handler(RequestRejectedError)
    async def _rejected(_request: Request, exc: RequestRejectedError) -> JSONResponse:
        first = exc.rejections[0]
        return error_body(
            422,
            "VALIDATION_ERROR",
            first.message,
            field=first.field,
            value=first.value,
            constraint=first.constraint,
        )

    @app.exception_handler(AtomlabError)
    async def _atomlab(_request: Request, exc: AtomlabError) -> JSONResponse:
        status, code = 500, "INTERNAL_ERROR"
        if isinstance(exc, NotFoundError):
            status, code = 404, "NOT_FOUND"
        elif isinstance(exc, InvalidInputError):
            status, code = 422, "VALIDATION_ERROR"
        elif isinstance(exc, UnavailableError):
            status, code = 503, "UNAVAILABLE"
        elif isinstance(exc, ConnectionFailedError):
            status, code = 502, "CONNECTION_ERROR"
        return error_body(
            status,
            code,
            exc.message,
            field=exc.details.get("field"),
            value=exc.details.get("value"),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, f"HTTP_{exc.status_code}")
        # Keep the framework's headers: a 405 names the allowed methods in ``Allow``.
        headers = dict(exc.headers) if exc.headers else None
        return error_body(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("http.unexpected_error", error=repr(exc)[:300], exc_info=exc)
        return error_body(500, "INTERNAL_ERROR", f"unexpected {type(exc).__name__}; see the log")


# --- the OpenAPI document -------------------------------------------------------------------


def _openapi(app: FastAPI, settings: AtomlabSettings, tokens: SwarmTokens) -> dict[str, Any]:
    """FastAPI's document plus what it cannot know: the configured work area and grid on the
    coordinates, the bearer scheme on the protected routes, links for stateful clients."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A token of the route's scope: ingest, control (or read, when set).",
    }
    coordinate = components.get("schemas", {}).get("SensorCoordinateIn", {})
    swarm = settings.swarm
    for axis, (low, high) in zip(
        "xyz", (swarm.bounds_x_nm, swarm.bounds_y_nm, swarm.bounds_z_nm), strict=True
    ):
        prop = coordinate.get("properties", {}).get(axis)
        if prop is not None:
            prop["minimum"], prop["maximum"] = low, high
            prop["multipleOf"] = GRID_NM
    protected_reads = not tokens.reads_public
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            guarded = PROTECTED_ROUTES.get((method.upper(), path))
            reads = method.upper() == "GET" and any(
                path == p or path.startswith(p + "/") for p in READ_PATHS
            )
            if guarded is not None or (protected_reads and reads):
                operation["security"] = [{BEARER_SCHEME: []}]
                responses = operation.setdefault("responses", {})
                for status, description in (("401", UNAUTHORIZED), ("403", FORBIDDEN)):
                    responses[status] = {
                        "description": description["description"],
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ErrorBody"}
                            }
                        },
                    }
    ingest = schema.get("paths", {}).get("/api/sensor-data", {}).get("post")
    if ingest is not None:
        ingest["responses"]["202"]["links"] = {
            "GetDefect": {
                "operationId": "get_defect",
                "parameters": {"defect_id": "$response.body#/defect_ids/0"},
            }
        }
    distribute_op = schema.get("paths", {}).get("/api/commands/distribute", {}).get("post")
    if distribute_op is not None:
        distribute_op["responses"]["200"]["links"] = {
            "GetCommand": {
                "operationId": "get_command",
                "parameters": {"command_id": "$response.body#/command_ids/0"},
            }
        }
    app.openapi_schema = schema
    return schema


# --- routers --------------------------------------------------------------------------------

health_router = APIRouter(tags=["health"])


def _tally(values: Iterable[str]) -> dict[str, int]:
    return dict(Counter(values))


@health_router.get(
    "/health",
    response_model=HealthOut,
    operation_id="health",
    responses={503: {"model": HealthOut, "description": "A background task was given up on."}},
)
async def health(svc: Service) -> Response:
    """Liveness and a one-glance summary: link, queue, agents, halt state, background tasks.

    Always public. ``degraded`` while a task restarts or failed in the last 5 minutes, or the
    database cannot be written; ``failing`` (503) when the service is stopping on a fault."""
    coordinator = svc.coordinator
    writer = svc.writer
    status = svc.supervisor.status()
    if status == "healthy" and writer is not None and writer.unavailable is not None:
        status = "degraded"
    body = HealthOut(
        status=status,
        timestamp=utc_iso(svc.clock.now()),
        uptime_s=round(svc.clock.monotonic() - svc.started_at, 3),
        link=LinkOut(**svc.link.stats()),
        queue_depth=len(coordinator.queue),
        defects=len(coordinator.defects),
        defects_by_status=_tally(d.status.value for d in coordinator.defects.values()),
        commands=coordinator.book.counts(),
        agents=_tally(a.status.value for a in coordinator.agents.values()),
        halted=coordinator.halted,
        halt_reason=coordinator.halt_reason,
        planner="llm+heuristic" if coordinator.advisor is not None else "heuristic",
        tasks={name: TaskOut(**task) for name, task in svc.supervisor.report().items()},
        database=DatabaseOut(
            backlog=writer.backlog if writer else 0,
            written=writer.written if writer else 0,
            rejected_rows=writer.rejected if writer else 0,
            unavailable=writer.unavailable if writer else None,
        ),
        reads_public=svc.tokens.reads_public,
    )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=503 if status == "failing" else 200
    )


@health_router.get(
    "/metrics",
    response_class=Response,
    operation_id="metrics",
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(svc: Service) -> Response:
    """Prometheus text exposition of this service's registry."""
    return Response(Metrics("swarm", svc.registry).exposition(), media_type=CONTENT_TYPE)


sensor_router = APIRouter(prefix="/api", tags=["sensor data"])


@sensor_router.post(
    "/sensor-data",
    status_code=202,
    response_model=IngestAccepted,
    operation_id="ingest_sensor_data",
    responses={
        400: BAD_REQUEST,
        413: TOO_LARGE,
        415: NOT_JSON,
        422: INVALID,
        500: SERVER_ERROR,
        503: UNAVAILABLE,
    },
)
async def sensor_data(batch: SensorDataIn, request: Request, svc: Service) -> IngestAccepted:
    """Validate a batch of detected defects, queue it and answer once it is committed.

    Every coordinate must be in nm with at most one decimal and inside the configured bounds;
    otherwise the whole batch is refused with 422 and nothing is queued. The 202 comes after
    the database committed the batch (group commit), so an accepted defect survives a crash.
    """
    began = time.perf_counter()
    rejections = svc.coordinator.check_batch(batch.coordinates)
    if rejections:
        raise RequestRejectedError(rejections)
    cid = batch.correlation_id or current_correlation_id() or uuid.uuid4().hex[:16]
    writer = svc.writer
    since = writer.last_seq if writer is not None else 0
    result = svc.coordinator.ingest(batch.coordinates, correlation_id=cid, log_it=False)
    # One log line per request: the middleware's, carrying what this batch did.
    request.state.log_fields = {
        "sensor_data": len(batch.coordinates),
        "accepted": len(result.defect_ids) - result.duplicates,
        "duplicates": result.duplicates,
        "unrepairable": result.unrepairable,
        "defect_ids": result.defect_ids[:LOGGED_IDS],
    }
    if writer is not None:
        await _durable(svc, writer, since)
    svc.metrics.ingest_seconds.observe(time.perf_counter() - began)
    return IngestAccepted(
        accepted=len(result.defect_ids) - result.duplicates,
        defect_ids=result.defect_ids,
        duplicates=result.duplicates,
        unrepairable=result.unrepairable,
        correlation_id=cid,
    )


async def _durable(svc: SwarmService, writer: StoreWriter, since: int) -> None:
    """Wait for the commit of everything handed to the writer up to now (503 on a timeout)."""
    limit = svc.settings.swarm.durable_timeout_s
    try:
        async with asyncio.timeout(limit):
            await writer.durable(since)
    except TimeoutError:
        raise UnavailableError(
            f"the database did not confirm this batch within {limit:g} s "
            f"({writer.unavailable or 'busy'}); it is kept in memory and written when the "
            "database recovers, but nothing is promised: send it again (repeats are "
            "recognised as duplicates)",
            field="db",
        ) from None
    except RowsRejectedError as exc:
        raise UnavailableError(exc.message, field="db") from None


defects_router = APIRouter(
    prefix="/api/defects", tags=["defects"], responses={422: INVALID_QUERY, 500: SERVER_ERROR}
)


@defects_router.get("", response_model=list[DefectOut], operation_id="list_defects")
async def list_defects(
    svc: Service,
    status: DefectStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[DefectOut]:
    """Defects in detection order, optionally only those with ``status``."""
    found = [d for d in svc.coordinator.defects.values() if status is None or d.status is status]
    found.sort(key=lambda d: d.seq)
    return [defect_out(d) for d in found[offset : offset + limit]]


@defects_router.get(
    "/{defect_id}",
    response_model=DefectOut,
    operation_id="get_defect",
    responses={404: NOT_FOUND},
)
async def get_defect(
    defect_id: Annotated[str, Path(min_length=1, max_length=ID_LIMIT)], svc: Service
) -> DefectOut:
    defect = svc.coordinator.defects.get(defect_id)
    if defect is None:
        raise NotFoundError(
            f"no defect {_clip(defect_id, 64)!r}; list defects with GET /api/defects",
            field="defect_id",
            value=defect_id,
        )
    return defect_out(defect)


commands_router = APIRouter(
    prefix="/api/commands", tags=["commands"], responses={422: INVALID_QUERY, 500: SERVER_ERROR}
)

IdQuery = Annotated[str | None, Query(max_length=ID_LIMIT)]


@commands_router.get("", response_model=list[CommandOut], operation_id="list_commands")
async def list_commands(
    svc: Service,
    status: CommandStatus | None = None,
    agent_id: IdQuery = None,
    defect_id: IdQuery = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[CommandOut]:
    """Commands with their status: pending → in_progress → completed / failed."""
    found = svc.coordinator.book.select(status=status, agent_id=agent_id, defect_id=defect_id)
    found.sort(key=lambda c: c.created_at)
    return [command_out(c) for c in found[:limit]]


@commands_router.get(
    "/{command_id}",
    response_model=CommandOut,
    operation_id="get_command",
    responses={404: NOT_FOUND},
)
async def get_command(
    command_id: Annotated[str, Path(min_length=1, max_length=ID_LIMIT)], svc: Service
) -> CommandOut:
    command = svc.coordinator.book.find(command_id)
    if command is None:
        raise NotFoundError(
            f"no command {_clip(command_id, 64)!r}; list commands with GET /api/commands",
            field="command_id",
            value=command_id,
        )
    return command_out(command)


agents_router = APIRouter(
    prefix="/api/agents", tags=["agents"], responses={422: INVALID_QUERY, 500: SERVER_ERROR}
)


@agents_router.get("", response_model=list[AgentOut], operation_id="list_agents")
async def list_agents(svc: Service, status: AgentStatus | None = None) -> list[AgentOut]:
    """Every agent's position, status, temperature and time since it was last heard."""
    now = svc.clock.monotonic()
    agents = sorted(svc.coordinator.agents.values(), key=lambda a: a.agent_id)
    return [
        AgentOut(
            agent_id=a.agent_id,
            position=point_out(a.position),
            status=a.status,
            temperature_c=round(a.temperature_c, 3),
            last_update=a.last_update,
            seconds_since_heartbeat=round(max(now - a.last_heartbeat, 0.0), 3),
            current_command=a.current_command,
            assigned_total=a.assigned_total,
        )
        for a in agents
        if status is None or a.status is status
    ]


CONTROL_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: BAD_REQUEST,
    413: TOO_LARGE,
    415: NOT_JSON,
    500: SERVER_ERROR,
}
control_router = APIRouter(prefix="/api", tags=["control"], responses=CONTROL_RESPONSES)


@control_router.post(
    "/commands/distribute", response_model=DistributeOut, operation_id="distribute"
)
async def distribute(svc: Service) -> DistributeOut:
    """Run one planning + dispatch round now (the dispatcher also runs on every event)."""
    await svc.coordinator.plan_pending()
    issued = await svc.coordinator.dispatch()
    return DistributeOut(dispatched=len(issued), command_ids=[c.command_id for c in issued])


@control_router.post("/agents/resume", response_model=ResumeOut, operation_id="resume")
async def resume(svc: Service) -> ResumeOut:
    """Clear an E-stop (halt) after the cause is understood; dispatch starts again."""
    was = svc.coordinator.halt_reason
    svc.coordinator.resume()
    return ResumeOut(halted=False, previous_reason=was)
