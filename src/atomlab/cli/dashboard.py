"""``atomlab dashboard``: serve the web dashboard over the data home until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path
from typing import Annotated, Any

import typer

from atomlab.cli import output
from atomlab.core import paths
from atomlab.core.errors import (
    InterruptedRunError,
    InvalidInputError,
    TerminatedError,
    UnavailableError,
)
from atomlab.core.logging import configure_logging
from atomlab.core.settings import load_settings

app = typer.Typer(
    help="The web dashboard: instrument, runs, swarm and engine, live (docs/dashboard.md).",
    invoke_without_command=True,
)

GRACEFUL_SHUTDOWN_S = 2.0
"""Open live streams get this long to end when the server stops (they never end by themselves)."""
INSTALL_HINT = "uv sync --extra dashboard (or pip install 'atomlab[dashboard]')"


@app.callback()
def serve(
    host: Annotated[
        str | None, typer.Option("--host", help="Interface (default 127.0.0.1, loopback only).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free one).")
    ] = None,
    home: Annotated[
        Path | None, typer.Option("--home", help="Data home to show (overrides ATOMLAB_HOME).")
    ] = None,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote", help="Serve on a non-loopback --host (the dashboard has no login)."
        ),
    ] = False,
    trajectory_db: Annotated[
        Path | None,
        typer.Option("--trajectory-db", help="Trajectory database (default: the staged one)."),
    ] = None,
    swarm_db_url: Annotated[
        str | None,
        typer.Option("--swarm-db-url", help="Swarm database URL (default: swarm.db_url)."),
    ] = None,
    instrument: Annotated[
        str | None,
        typer.Option(
            "--instrument",
            help="HOST:PORT to read the latest scan image from (default: the instrument settings).",
        ),
    ] = None,
    no_instrument: Annotated[
        bool, typer.Option("--no-instrument", help="Show no scan image; never connect.")
    ] = False,
    json_out: output.JsonOption = False,
) -> None:
    """Serve the dashboard (read-only; bound to 127.0.0.1 unless --allow-remote)."""
    try:
        import uvicorn

        from atomlab.dashboard import check_host, create_app, from_settings
    except ImportError as exc:
        raise UnavailableError(
            f"the dashboard needs the dashboard extra ({exc.name} is missing): {INSTALL_HINT}",
            package=exc.name,
        ) from None
    state = output.state()
    overrides: dict[str, Any] = dict(state.overrides)
    if home is not None:
        overrides["home"] = home
    flags = {"host": host, "port": port, "allow_remote": True if allow_remote else None}
    overrides["dashboard"] = {k: v for k, v in flags.items() if v is not None}
    settings = load_settings(config_path=state.config_path, overrides=overrides).settings
    configure_logging(settings.log.level, settings.log.format)
    section = settings.dashboard
    check_host(section.host, allow_remote=section.allow_remote)
    config = from_settings(
        settings,
        trajectory_db=trajectory_db,
        swarm_db_url=swarm_db_url,
        instrument=_address(instrument) if instrument else None,
        scan_image=False if no_instrument else None,
    )
    # A data home or database that can never exist is a mistake to name now, not an empty page.
    paths.folder(config.home, option="--home")
    paths.output_file(config.trajectory_db, option="--trajectory-db")
    sock = _listen(section.host, section.port)
    bound = sock.getsockname()[1]
    shown_host = f"[{section.host}]" if ":" in section.host else section.host
    url = f"http://{shown_host}:{bound}/"
    scan = f"{config.instrument[0]}:{config.instrument[1]}" if config.instrument else "off"
    output.emit(
        {
            "event": "listening",
            "url": url,
            "host": section.host,
            "port": bound,
            "home": config.home,
            "trajectory_db": config.trajectory_db,
            "swarm_db_url": _without_password(config.swarm_db_url),
            "instrument": scan,
        },
        json_flag=json_out,
        human=f"dashboard on {url} (data home {config.home}, scan images: {scan}); Ctrl-C stops it",
    )
    web = create_app(config)

    class Server(uvicorn.Server):
        """uvicorn's server, ending the live streams first when a signal asks it to stop (its
        graceful shutdown waits for open requests, and a stream never ends by itself)."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            web.state.dashboard.stop()
            super().handle_exit(sig, frame)

    server = Server(
        uvicorn.Config(
            web,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_S),
        )
    )
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again: these handlers
    # turn that into the CLI's exit codes 130 and 143.
    signal.signal(signal.SIGTERM, _stopped)
    signal.signal(signal.SIGINT, _stopped)
    asyncio.run(server.serve(sockets=[sock]))


def _stopped(signum: int, _frame: object) -> None:
    if signum == signal.SIGTERM:
        raise TerminatedError("dashboard stopped on SIGTERM")
    raise InterruptedRunError("dashboard stopped on Ctrl-C")


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(
            f"--instrument {text!r} is not HOST:PORT (e.g. 127.0.0.1:6502)",
            field="instrument",
            value=text,
        )
    return host.strip("[]"), int(port)


def _without_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        credentials, _, where = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{where}"
    return url


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UnavailableError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port "
            "(or stop what is using it)",
            field="port",
            value=port,
        ) from None
    sock.listen(512)
    sock.set_inheritable(True)
    return sock
