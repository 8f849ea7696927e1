"""The dashboard's web app: ``create_app(config)``, one router per resource, read-only.

    app = create_app(from_settings(load_settings().settings))   # serve with uvicorn

Every route is a GET: nothing the dashboard serves can change a run, a recording or the swarm.
Stores are opened read-only per request or per live stream. Errors have one shape on ``/api``
(``{"error": {"code", "message", "field", "value"}}``) and are a page elsewhere; a bad query
parameter is a 400 naming it, never a 500.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from atomlab import __version__
from atomlab.core.clock import Clock, SystemClock
from atomlab.core.errors import (
    AtomlabError,
    InvalidInputError,
    NotFoundError,
    PolicyRefusedError,
    UnavailableError,
)
from atomlab.core.logging import get_logger
from atomlab.dashboard.config import DashboardConfig, host_of, is_loopback
from atomlab.dashboard.live import StreamStats
from atomlab.dashboard.scan import ScanSource
from atomlab.dashboard.shell import StrictJSONResponse, error_page
from atomlab.views.page import plotly_js_path

STATIC_DIR = __file__.rsplit("/", 1)[0] + "/static"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'"
)
PLOTLY_MAX_AGE_S = 86_400

log = get_logger(__name__)


@dataclass
class Dashboard:
    """Everything one app owns; routes reach it through :func:`dashboard`."""

    config: DashboardConfig
    clock: Clock
    streams: StreamStats = field(default_factory=StreamStats)
    scan: ScanSource | None = None
    started_at: float = field(default_factory=time.monotonic)
    stopping: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        """End every live stream (within a quarter second): call before stopping the server,
        whose graceful shutdown otherwise waits for streams that never end by themselves."""
        self.stopping.set()


async def dashboard(request: Request) -> Dashboard:
    state: Dashboard = request.app.state.dashboard
    return state


DashboardDep = Annotated[Dashboard, Depends(dashboard)]


def create_app(config: DashboardConfig, *, clock: Clock | None = None) -> FastAPI:
    """Build one dashboard over ``config``'s data home (see the module docstring)."""
    # The routers import this module (for DashboardDep), so they are imported here.
    from atomlab.dashboard.engine import router as engine_router
    from atomlab.dashboard.runs import router as runs_router
    from atomlab.dashboard.swarm import router as swarm_router
    from atomlab.dashboard.trajectory import router as trajectory_router

    state = Dashboard(config=config, clock=clock or SystemClock())
    if config.instrument is not None:
        state.scan = ScanSource(*config.instrument, clock=state.clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        log.info("dashboard.start", home=str(config.home), trajectory_db=str(config.trajectory_db))
        try:
            yield
        finally:
            state.stop()
            if state.scan is not None:
                state.scan.close()

    app = FastAPI(
        title="atomlab dashboard",
        version=__version__,
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
        default_response_class=StrictJSONResponse,
    )
    app.state.dashboard = state
    app.middleware("http")(_security_headers)
    _install_error_handlers(app)
    app.include_router(trajectory_router)
    app.include_router(runs_router)
    app.include_router(swarm_router)
    app.include_router(engine_router)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/instrument", status_code=307)

    @app.get("/static/plotly.min.js", include_in_schema=False)
    async def plotly_js() -> FileResponse:
        """plotly.js as the installed plotly package ships it (no copy in this repository)."""
        return FileResponse(
            plotly_js_path(),
            media_type="text/javascript",
            headers={"Cache-Control": f"public, max-age={PLOTLY_MAX_AGE_S}"},
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health")
    async def health(svc: DashboardDep) -> dict[str, Any]:
        """Liveness and what the live streams are doing (open, served, failures)."""
        scan = svc.scan.status() if svc.scan is not None else {"enabled": False}
        return {
            "status": "healthy",
            "version": __version__,
            "uptime_s": round(time.monotonic() - svc.started_at, 3),
            "home": str(svc.config.home),
            "trajectory_db": str(svc.config.trajectory_db),
            "streams": svc.streams.to_dict(),
            "scan": scan,
        }

    return app


async def _security_headers(request: Request, call_next: Any) -> Response:
    """Refuse foreign ``Host`` headers (DNS rebinding: a web page whose domain resolves to
    127.0.0.1 must not read the dashboard), then add the security headers to every answer."""
    config: DashboardConfig = request.app.state.dashboard.config
    host = host_of(request.headers.get("host", ""))
    if not config.allow_remote and not is_loopback(host):
        return PlainTextResponse(
            f"refused: Host {host!r} is not this machine's loopback address", status_code=400
        )
    response: Response = await call_next(request)
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def _status_for(exc: AtomlabError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, InvalidInputError):
        return 400
    if isinstance(exc, PolicyRefusedError):
        return 403
    if isinstance(exc, UnavailableError):
        return 503
    return 500


def _error(request: Request, status: int, code: str, message: str, **details: Any) -> Response:
    field_name = details.get("field")
    if request.url.path.startswith("/api/"):
        body: dict[str, Any] = {"code": code, "message": message}
        body.update({k: v for k, v in details.items() if v is not None})
        return StrictJSONResponse({"error": body}, status_code=status)
    return error_page(status, message, field_name)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def bad_query(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        where = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "body")]
        name = ".".join(where) or "request"
        value = first.get("input")
        message = f"invalid {name}={value!r}: {first.get('msg', 'not valid')}"
        return _error(request, 400, "VALIDATION_ERROR", message, field=name, value=_jsonable(value))

    @app.exception_handler(AtomlabError)
    async def atomlab_error(request: Request, exc: AtomlabError) -> Response:
        status = _status_for(exc)
        if status == 500:
            log.error("dashboard.error", path=request.url.path, error=exc.message)
        details = {k: _jsonable(v) for k, v in exc.details.items()}
        return _error(request, status, exc.type_name.upper(), exc.message, **details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = "NOT_FOUND" if exc.status_code == 404 else "HTTP_ERROR"
        return _error(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("dashboard.unexpected", path=request.url.path)
        return _error(
            request, 500, "INTERNAL_ERROR", f"unexpected {type(exc).__name__}; see the server log"
        )


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
