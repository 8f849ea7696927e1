"""``atomlab swarm``: serve the swarm repair service, send it defects, ask how it is doing."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from atomlab.cli import output
from atomlab.core.errors import (
    ConnectionFailedError,
    InterruptedRunError,
    InvalidInputError,
    TerminatedError,
    UnavailableError,
)
from atomlab.core.logging import configure_logging
from atomlab.core.settings import load_settings

app = typer.Typer(help="The QNMS swarm repair service.", no_args_is_help=True)

DEFAULT_TIMEOUT_S = 10.0
INGEST_BATCH = 1000

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url", help="The service's base URL (default http://<swarm.host>:<swarm.port>)."
    ),
]


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Interface to listen on.")] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free one).")
    ] = None,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db-url",
            help="SQLAlchemy URL (default sqlite:///<home>/swarm.sqlite; PostgreSQL works too).",
        ),
    ] = None,
) -> None:
    """Run the service (HTTP API, /metrics, /ws/isaac) until Ctrl-C or SIGTERM."""
    import uvicorn

    from atomlab.swarm import create_app

    state = output.state()
    flags = {"host": host, "port": port, "db_url": db_url}
    overrides = {**state.overrides, "swarm": {k: v for k, v in flags.items() if v is not None}}
    settings = load_settings(config_path=state.config_path, overrides=overrides).settings
    configure_logging(settings.log.level, settings.log.format)
    sock = _listen(settings.swarm.host, settings.swarm.port)
    bound = sock.getsockname()[1]
    app_ = create_app(settings)
    where = f"http://{settings.swarm.host}:{bound}"
    sys.stderr.write(
        f"swarm service on {where} (simulator WebSocket ws://{settings.swarm.host}:{bound}"
        f"/ws/isaac, database {app_.state.swarm.db_url}); Ctrl-C stops\n"
    )
    sys.stderr.flush()
    config = uvicorn.Config(app_, log_level="warning", access_log=False, ws="websockets-sansio")
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again: these handlers
    # turn that into the CLI's exit codes 130 and 143.
    signal.signal(signal.SIGTERM, _stopped)
    signal.signal(signal.SIGINT, _stopped)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


def _stopped(signum: int, _frame: object) -> None:
    if signum == signal.SIGTERM:
        raise TerminatedError("swarm service stopped on SIGTERM")
    raise InterruptedRunError("swarm service stopped on Ctrl-C")


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
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
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@app.command("ingest")
def ingest(
    source: Annotated[
        str,
        typer.Argument(help="JSON/JSONL file of defects (x, y, z nm; severity), or - for stdin."),
    ],
    url: UrlOption = None,
    json_out: output.JsonOption = False,
) -> None:
    """Send detected defects to a running service (POST /api/sensor-data).

    Accepts {"coordinates": [...]}, a JSON list, or one JSON object per line.
    """
    coordinates = _read_coordinates(source)
    base = _base_url(url)
    accepted, duplicates, unrepairable, ids = 0, 0, 0, []
    with httpx.Client(base_url=base, timeout=DEFAULT_TIMEOUT_S) as client:
        for start in range(0, len(coordinates), INGEST_BATCH):
            batch = coordinates[start : start + INGEST_BATCH]
            body = _call(
                client, "POST", "/api/sensor-data", json={"coordinates": batch}, offset=start
            )
            accepted += body["accepted"]
            duplicates += body["duplicates"]
            unrepairable += body["unrepairable"]
            ids.extend(body["defect_ids"])
    payload = {
        "url": base,
        "sent": len(coordinates),
        "accepted": accepted,
        "duplicates": duplicates,
        "unrepairable": unrepairable,
        "defect_ids": ids,
    }
    output.emit(
        payload,
        json_flag=json_out,
        human=f"sent {len(coordinates)} defects to {base}: {accepted} queued, "
        f"{duplicates} duplicates, {unrepairable} unrepairable",
    )


@app.command("status")
def status(url: UrlOption = None, json_out: output.JsonOption = False) -> None:
    """Show the service's link, queue, defects, commands and agents."""
    base = _base_url(url)
    with httpx.Client(base_url=base, timeout=DEFAULT_TIMEOUT_S) as client:
        health = _call(client, "GET", "/health")
        agents = _call(client, "GET", "/api/agents")
    payload = {"url": base, **health, "agent_list": agents}

    def human(console: Console) -> None:
        link = "connected" if health["link"]["connected"] else "not connected"
        console.print(f"swarm service {base}: {health['status']}, simulator {link}")
        if health["halted"]:
            console.print(f"HALTED: {health['halt_reason']} (POST /api/agents/resume)")
        console.print(f"defects: {_counts(health['defects_by_status'])}")
        console.print(f"queue: {health['queue_depth']}; commands: {_counts(health['commands'])}")
        for agent in agents:
            p = agent["position"]
            console.print(
                f"  {agent['agent_id']:>10}  {agent['status']:<9} ({p['x']}, {p['y']}) nm  "
                f"{agent['temperature_c']:.1f} °C"
            )

    output.emit(payload, json_flag=json_out, human=human)


def _counts(tally: dict[str, int]) -> str:
    """``{"completed": 12, "failed": 0}`` → ``12 completed``."""
    shown = [f"{count} {name.replace('_', ' ')}" for name, count in tally.items() if count]
    return ", ".join(shown) or "none"


def _base_url(url: str | None) -> str:
    if url:
        return url.rstrip("/")
    swarm = output.state().loaded.settings.swarm
    host = "127.0.0.1" if swarm.host in ("0.0.0.0", "::") else swarm.host  # noqa: S104
    return f"http://{host}:{swarm.port}"


def _call(client: httpx.Client, method: str, path: str, offset: int = 0, **kw: Any) -> Any:
    try:
        response = client.request(method, path, **kw)
    except httpx.HTTPError as exc:
        raise ConnectionFailedError(
            f"cannot reach the swarm service at {client.base_url}: {exc}; start it with "
            "'atomlab swarm serve' or pass --url",
            url=str(client.base_url),
        ) from None
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = {"message": response.text[:200], "details": None}
        details = error.get("details") or {}
        field = details.get("field")
        if field and field.startswith("coordinates.") and offset:
            index, _, rest = field.removeprefix("coordinates.").partition(".")
            field = f"coordinates.{int(index) + offset}.{rest}" if index.isdigit() else field
        message = f"the service refused the request ({response.status_code}): {error['message']}"
        if response.status_code == 422:
            raise InvalidInputError(
                message + "; nothing of that batch was queued",
                field=field,
                value=details.get("value"),
            )
        raise UnavailableError(message, status=response.status_code)
    return response.json()


def _read_coordinates(source: str) -> list[dict[str, Any]]:
    if source == "-":
        text = sys.stdin.read()
        name = "stdin"
    else:
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(
                f"cannot read {source!r}: {exc.strerror or exc}; pass a JSON file or - for stdin",
                field="source",
                value=source,
            ) from None
        name = source
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"{name} is neither JSON nor JSON lines (line {exc.lineno}: {exc.msg})",
                field="source",
                value=name,
            ) from None
    if isinstance(data, dict) and isinstance(data.get("coordinates"), list):
        data = data["coordinates"]
    elif isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
        raise InvalidInputError(
            f'{name} holds no defects: expected {{"coordinates": [{{"x": 1.2, "y": 3.4, '
            '"severity": 5}]}, a list of such objects, or one object per line',
            field="source",
            value=name,
        )
    return data
