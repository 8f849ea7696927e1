"""The swarm service's HTTP and WebSocket surface: ``create_app(settings)``.

One router per resource, the service object injected with ``Depends``, no globals: every call
of :func:`create_app` builds an independent service (its own registry, database, coordinator and
simulator link), started and stopped by the app's lifespan::

    app = create_app(load_settings().settings)
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
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
from atomlab.core.settings import AtomlabSettings
from atomlab.llm import Provider, make_provider, resolve_provider_name
from atomlab.swarm.coordinator import SwarmCoordinator
from atomlab.swarm.db import StoreWriter, SwarmStore, default_db_url
from atomlab.swarm.link import SimulatorLink
from atomlab.swarm.metrics import SwarmMetrics
from atomlab.swarm.models import (
    AgentOut,
    AgentStatus,
    CommandOut,
    CommandStatus,
    DefectOut,
    DefectStatus,
    DistributeOut,
    ErrorBody,
    HealthOut,
    IngestAccepted,
    LinkOut,
    ResumeOut,
    SensorDataIn,
    command_out,
    defect_out,
    point_out,
)
from atomlab.swarm.planner import LLM_FAILURE_THRESHOLD, LLM_RESET_S, LlmRouteAdvisor
from atomlab.swarm.validation import Rejection

CORRELATION_HEADER = "x-correlation-id"
LOGGED_IDS = 100  # defect ids named in an ingest's log line (the count is always there)
API_VERSION = "1.0"
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Invalid input; nothing was queued."},
    500: {"model": ErrorBody, "description": "Unexpected server error."},
}
# Every route answers errors in the one ErrorBody format (not FastAPI's HTTPValidationError).
QUERY_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Invalid query parameter."},
    500: {"model": ErrorBody, "description": "Unexpected server error."},
}

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
    store: SwarmStore | None = None
    writer: StoreWriter | None = None


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
) -> FastAPI:
    """Build one independent swarm service (see the module docstring)."""
    clock = clock or SystemClock()
    registry = registry if registry is not None else new_registry()
    swarm = settings.swarm
    metrics = SwarmMetrics(registry)
    link = SimulatorLink(
        clock=clock,
        metrics=Metrics("swarm", registry),
        ack_timeout_s=swarm.ack_timeout_s,
        heartbeat_interval_s=swarm.heartbeat_interval_s,
        missed_heartbeats=swarm.missed_heartbeats,
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
            "nano-agents over the /ws/isaac WebSocket and verifies every repair by re-scan."
        ),
        lifespan=lifespan,
    )
    app.state.swarm = svc
    app.add_middleware(CorrelationMiddleware, metrics=metrics)
    _install_error_handlers(app)
    for router in (health_router, sensor_router, defects_router, commands_router, agents_router):
        app.include_router(router)
    app.add_api_websocket_route("/ws/isaac", link.handle)
    return app


def _llm_planner_wanted(settings: AtomlabSettings) -> bool:
    """``auto``: ask an LLM only when a real one is configured (a key or a server URL); the
    offline provider cannot beat the deterministic planner, so it is not asked by default."""
    choice = settings.swarm.llm_planner
    if choice != "auto":
        return choice == "on"
    return resolve_provider_name(settings.llm, os.environ) not in ("offline", "replay")


async def _start(svc: SwarmService) -> None:
    store = await asyncio.to_thread(SwarmStore.open, svc.db_url)
    snapshot = await asyncio.to_thread(store.load)
    svc.store = store

    def on_written(count: int, error: BaseException | None) -> None:
        if error is None:
            svc.metrics.db_writes.inc(count)
        else:
            svc.metrics.db_errors.inc()

    svc.writer = StoreWriter(store, on_written=on_written)
    svc.writer.start()
    svc.coordinator.writer = svc.writer
    svc.coordinator.restore(
        snapshot.defects, snapshot.commands, snapshot.agents, halt_reason=snapshot.halt_reason
    )
    svc.coordinator.start()
    # Everything loaded so far (modules, the app, the restored state) lives as long as the
    # process: keep it out of the collector's full passes, which otherwise stall the event loop
    # for tens of milliseconds on the ingest path.
    gc.freeze()
    log.info("swarm.started", db_url=_redacted(svc.db_url), defects=len(snapshot.defects))


async def _stop(svc: SwarmService) -> None:
    await svc.coordinator.stop()
    await svc.link.close()
    if svc.writer is not None:
        await svc.writer.close()
    if svc.store is not None:
        await asyncio.to_thread(svc.store.close)
    log.info("swarm.stopped")


def _redacted(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


# --- middleware and errors ------------------------------------------------------------------


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
        cid = incoming[:64] if incoming else uuid.uuid4().hex[:16]
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
                log.error("http.unexpected_error", error=repr(exc), exc_info=exc)
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
                    method=scope.get("method"),
                    path=scope.get("path"),
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
) -> JSONResponse:
    details = None
    if field is not None or constraint is not None:
        details = {"field": field, "value": _jsonable(value), "constraint": constraint}
    body = {
        "error": {
            "code": code,
            "message": message,
            "details": details,
            "correlation_id": current_correlation_id(),
            "timestamp": utc_iso(SystemClock().now()),
        }
    }
    return JSONResponse(body, status_code=status)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no inf / nan: "inf", "nan"
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)[:200]


_STATUS_CODES = {
    400: "BAD_REQUEST",
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
            field = "body"  # FastAPI reports the character offset as the location
        reason = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return error_body(
            422,
            "VALIDATION_ERROR",
            f"{field}: {reason}",
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
        return error_body(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("http.unexpected_error", error=repr(exc), exc_info=exc)
        return error_body(500, "INTERNAL_ERROR", f"unexpected {type(exc).__name__}; see the log")


# --- routers --------------------------------------------------------------------------------

health_router = APIRouter(tags=["health"])


def _tally(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


@health_router.get("/health", response_model=HealthOut)
async def health(svc: Service) -> HealthOut:
    """Liveness and a one-glance summary: link, queue, agents, halt state."""
    coordinator = svc.coordinator
    agents = _tally(a.status.value for a in coordinator.agents.values())
    return HealthOut(
        status="healthy",
        timestamp=utc_iso(svc.clock.now()),
        uptime_s=round(svc.clock.monotonic() - svc.started_at, 3),
        link=LinkOut(**svc.link.stats()),
        queue_depth=len(coordinator.queue),
        defects=len(coordinator.defects),
        defects_by_status=_tally(d.status.value for d in coordinator.defects.values()),
        commands=coordinator.book.counts(),
        agents=agents,
        halted=coordinator.halted,
        halt_reason=coordinator.halt_reason,
        planner="llm+heuristic" if coordinator.advisor is not None else "heuristic",
    )


@health_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(svc: Service) -> Response:
    """Prometheus text exposition of this service's registry."""
    return Response(Metrics("swarm", svc.registry).exposition(), media_type=CONTENT_TYPE)


sensor_router = APIRouter(prefix="/api", tags=["sensor data"])


@sensor_router.post(
    "/sensor-data", status_code=202, response_model=IngestAccepted, responses=ERROR_RESPONSES
)
async def sensor_data(batch: SensorDataIn, request: Request, svc: Service) -> IngestAccepted:
    """Validate a batch of detected defects and queue it; persistence happens afterwards.

    Every coordinate must be in nm with at most one decimal and inside the configured bounds;
    otherwise the whole batch is refused with 422 and nothing is queued.
    """
    began = time.perf_counter()
    rejections = svc.coordinator.check_batch(batch.coordinates)
    if rejections:
        raise RequestRejectedError(rejections)
    cid = batch.correlation_id or current_correlation_id() or uuid.uuid4().hex[:16]
    result = svc.coordinator.ingest(batch.coordinates, correlation_id=cid, log_it=False)
    svc.metrics.ingest_seconds.observe(time.perf_counter() - began)
    # One log line per request: the middleware's, carrying what this batch did.
    request.state.log_fields = {
        "sensor_data": len(batch.coordinates),
        "accepted": len(result.defect_ids) - result.duplicates,
        "duplicates": result.duplicates,
        "unrepairable": result.unrepairable,
        "defect_ids": result.defect_ids[:LOGGED_IDS],
    }
    return IngestAccepted(
        accepted=len(result.defect_ids) - result.duplicates,
        defect_ids=result.defect_ids,
        duplicates=result.duplicates,
        unrepairable=result.unrepairable,
        correlation_id=cid,
    )


defects_router = APIRouter(prefix="/api/defects", tags=["defects"], responses=QUERY_ERRORS)


@defects_router.get("", response_model=list[DefectOut])
async def list_defects(
    svc: Service,
    status: DefectStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[DefectOut]:
    """Defects in detection order, optionally only those with ``status``."""
    found = [d for d in svc.coordinator.defects.values() if status is None or d.status is status]
    found.sort(key=lambda d: d.seq)
    return [defect_out(d) for d in found[offset : offset + limit]]


@defects_router.get("/{defect_id}", response_model=DefectOut, responses={404: {"model": ErrorBody}})
async def get_defect(defect_id: str, svc: Service) -> DefectOut:
    defect = svc.coordinator.defects.get(defect_id)
    if defect is None:
        raise NotFoundError(
            f"no defect {defect_id!r}; list defects with GET /api/defects",
            field="defect_id",
            value=defect_id,
        )
    return defect_out(defect)


commands_router = APIRouter(prefix="/api/commands", tags=["commands"], responses=QUERY_ERRORS)


@commands_router.get("", response_model=list[CommandOut])
async def list_commands(
    svc: Service,
    status: CommandStatus | None = None,
    agent_id: str | None = None,
    defect_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[CommandOut]:
    """Commands with their status: pending → in_progress → completed / failed."""
    found = svc.coordinator.book.select(status=status, agent_id=agent_id, defect_id=defect_id)
    found.sort(key=lambda c: c.created_at)
    return [command_out(c) for c in found[:limit]]


@commands_router.post("/distribute", response_model=DistributeOut)
async def distribute(svc: Service) -> DistributeOut:
    """Run one dispatch round now (the dispatcher also runs on every event)."""
    await svc.coordinator.plan_pending()
    issued = svc.coordinator.dispatch_round()
    return DistributeOut(dispatched=len(issued), command_ids=[c.command_id for c in issued])


@commands_router.get(
    "/{command_id}", response_model=CommandOut, responses={404: {"model": ErrorBody}}
)
async def get_command(command_id: str, svc: Service) -> CommandOut:
    return command_out(svc.coordinator.book.get(command_id))


agents_router = APIRouter(prefix="/api/agents", tags=["agents"], responses=QUERY_ERRORS)


@agents_router.get("", response_model=list[AgentOut])
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


@agents_router.post("/resume", response_model=ResumeOut)
async def resume(svc: Service) -> ResumeOut:
    """Clear an E-stop (halt) after the cause is understood; dispatch starts again."""
    was = svc.coordinator.halt_reason
    svc.coordinator.resume()
    return ResumeOut(halted=False, previous_reason=was)
