"""``atomlab swarm``: serve the swarm repair service, send it defects, ask how it is doing."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import httpx
import typer
from rich.console import Console

from atomlab.cli import output
from atomlab.core.errors import (
    ConnectionFailedError,
    InterruptedRunError,
    InvalidInputError,
    PolicyRefusedError,
    TerminatedError,
    UnavailableError,
)
from atomlab.core.logging import configure_logging
from atomlab.core.settings import load_settings

if TYPE_CHECKING:
    from atomlab.swarm.auth import Scope

app = typer.Typer(help="The QNMS swarm repair service.", no_args_is_help=True)

DEFAULT_TIMEOUT_S = 30.0  # an ingest waits for its commit: allow for a slow disk
INGEST_BATCH = 1000
MAX_INPUT_BYTES = 512 * 2**20
MAX_URL_LENGTH = 2048
MAX_HOST_LENGTH = 255
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
HOST_PATTERN = re.compile(r"[A-Za-z0-9._:%-]{1,255}")  # a name or an address, nothing else
GRACEFUL_SHUTDOWN_S = 2  # open connections get this long after SIGTERM (then closed)
WS_FRAME_OVERHEAD = 64 * 1024  # the link refuses big frames itself, with an error frame

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="The service's base URL (default: the service running in this data home, else "
        "http://<swarm.host>:<swarm.port>).",
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
    json_out: output.JsonOption = False,
) -> None:
    """Run the service (HTTP API, /metrics, /ws/isaac) until Ctrl-C or SIGTERM.

    On its first start it writes random tokens to <home>/swarm/tokens.json (mode 0600) unless
    tokens are configured; clients in the same data home read them from there.
    """
    output.use_json(json_out)
    state = output.state()
    flags = {"host": host, "port": port, "db_url": db_url}
    overrides = {**state.overrides, "swarm": {k: v for k, v in flags.items() if v is not None}}
    settings = load_settings(config_path=state.config_path, overrides=overrides).settings
    configure_logging(settings.log.level, settings.log.format)
    swarm = settings.swarm
    if len(swarm.host) > MAX_HOST_LENGTH:
        raise InvalidInputError(
            f"--host is {len(swarm.host)} characters long; give an interface address",
            field="host",
        )
    # The socket first: a taken port fails at once, and clients can connect (they queue in
    # the backlog) while the service finishes loading.
    sock = _listen(swarm.host, swarm.port)
    try:
        import uvicorn

        from atomlab.swarm.auth import load_tokens
        from atomlab.swarm.db import SwarmStore, default_db_url

        url = swarm.db_url or default_db_url(settings.home)
        # Opened before anything listens for real: a bad --db-url is one clean error line.
        store = SwarmStore.open(url, synchronous=swarm.db_synchronous)
    except BaseException:
        sock.close()
        raise
    try:
        tokens = load_tokens(settings, create=True)
    except BaseException:
        store.close()
        sock.close()
        raise
    from atomlab.core.settings import redact_url_password
    from atomlab.swarm import create_app
    from atomlab.swarm.service_file import (
        endpoint_for,
        remove_service_file,
        write_service_file,
    )

    bound = sock.getsockname()[1]
    app_ = create_app(settings, tokens=tokens, store=store)
    svc = app_.state.swarm
    endpoint = endpoint_for(swarm.host, bound)
    config = uvicorn.Config(
        app_,
        log_level="warning",
        access_log=False,
        ws="websockets-sansio",
        ws_max_size=swarm.max_frame_bytes + WS_FRAME_OVERHEAD,
        limit_concurrency=swarm.max_connections,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = uvicorn.Server(config)
    svc.on_fatal.append(lambda _reason: setattr(server, "should_exit", True))
    details = {"url": endpoint.url, "ws_url": endpoint.ws_url, "db_url": svc.db_url_shown}
    write_service_file(settings.home, endpoint)
    where = tokens.path or "the environment"
    sys.stderr.write(
        f"swarm service on {endpoint.url} (simulator WebSocket {endpoint.ws_url}, database "
        f"{redact_url_password(url)}, tokens in {where}); Ctrl-C stops\n"
    )
    if swarm.host not in LOOPBACK_HOSTS:
        sys.stderr.write(
            f"note: listening on {swarm.host}, not only this machine: every client needs a "
            "token; put TLS (deploy/nginx) in front of it\n"
        )
    sys.stderr.flush()
    # uvicorn stops gracefully on SIGINT/SIGTERM, then raises the signal again: these handlers
    # turn that into the CLI's exit codes 130 and 143.
    signal.signal(signal.SIGTERM, _stopped_with(details))
    signal.signal(signal.SIGINT, _stopped_with(details))
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        remove_service_file(settings.home)
        sock.close()
    if svc.supervisor.fatal is not None:
        raise UnavailableError(f"swarm service stopped: {svc.supervisor.fatal}", **details)
    if not server.started:
        raise UnavailableError(
            "the swarm service could not start; see the log lines above", **details
        )


def _stopped_with(details: dict[str, Any]) -> Any:
    def stopped(signum: int, _frame: object) -> None:
        if signum == signal.SIGTERM:
            raise TerminatedError("swarm service stopped on SIGTERM", **details)
        raise InterruptedRunError("swarm service stopped on Ctrl-C", **details)

    return stopped


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio disables Nagle only on sockets that say they are TCP; without
    # it every keep-alive response waited ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, UnicodeError, OverflowError) as exc:
        sock.close()
        reason = getattr(exc, "strerror", None) or str(exc)[:200]
        if isinstance(exc, socket.gaierror | UnicodeError):
            raise InvalidInputError(
                f"cannot listen on {host[:100]!r}: {reason}; give an interface address such "
                "as 127.0.0.1",
                field="host",
                value=host[:100],
            ) from None
        raise UnavailableError(
            f"cannot listen on {host[:100]}:{port}: {reason}; pick another --port "
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

    Accepts {"coordinates": [...]}, a JSON list, or one JSON object per line. Sends the ingest
    token of this data home (or ATOMLAB_SWARM__INGEST_TOKEN).
    """
    coordinates = _read_coordinates(source)
    base = _base_url(url)
    headers = _auth_headers("ingest")
    accepted, duplicates, unrepairable, ids = 0, 0, 0, []
    with _client(base, headers) as client:
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
    with _client(base, _auth_headers("read")) as client:
        health = _call(client, "GET", "/health")
        agents = _call(client, "GET", "/api/agents")
    if not isinstance(health, dict) or not isinstance(agents, list):
        raise UnavailableError(f"{base} did not answer like a swarm service", url=base)
    payload = {"url": base, **health, "agent_list": agents}

    def human(console: Console) -> None:
        link = "connected" if health["link"]["connected"] else "not connected"
        console.print(f"swarm service {base}: {health['status']}, simulator {link}")
        if health["halted"]:
            console.print(f"HALTED: {health['halt_reason']} (POST /api/agents/resume)")
        console.print(f"defects: {_counts(health['defects_by_status'])}")
        console.print(f"queue: {health['queue_depth']}; commands: {_counts(health['commands'])}")
        for name, task in health.get("tasks", {}).items():
            if task.get("failures"):
                console.print(
                    f"task {name}: {task['state']}, {task['failures']} failures, last: "
                    f"{task['last_error']}"
                )
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
    """``--url``, else the service running in this data home, else swarm.host/port."""
    if url is None:
        from atomlab.swarm.service_file import service_url

        return service_url(output.state().loaded)
    if len(url) > MAX_URL_LENGTH or not url.startswith(("http://", "https://")):
        raise InvalidInputError(
            f"--url {url[:100]!r} is not an http(s) URL; give e.g. http://127.0.0.1:8000",
            field="url",
            value=url[:100],
        )
    try:
        parsed = httpx.URL(url)
        host = urlsplit(url).hostname or ""
        if not parsed.host or not HOST_PATTERN.fullmatch(host):
            raise ValueError("no valid host")
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise InvalidInputError(
            f"--url {url[:100]!r} is not a valid URL ({str(exc)[:100]}); give e.g. "
            "http://127.0.0.1:8000",
            field="url",
            value=url[:100],
        ) from None
    return url.rstrip("/")


def _auth_headers(scope: Scope) -> dict[str, str]:
    from atomlab.swarm.auth import bearer_headers

    return bearer_headers(output.state().loaded.settings, scope)


def _client(base: str, headers: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=DEFAULT_TIMEOUT_S, headers=headers)


def _call(client: httpx.Client, method: str, path: str, offset: int = 0, **kw: Any) -> Any:
    try:
        response = client.request(method, path, **kw)
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError, ValueError) as exc:
        raise ConnectionFailedError(
            f"cannot reach the swarm service at {client.base_url}: {str(exc)[:200]}; start it "
            "with 'atomlab swarm serve' or pass --url",
            url=str(client.base_url),
        ) from None
    if response.status_code >= 400:
        _refused(response, offset)
    try:
        return response.json()
    except ValueError:
        raise UnavailableError(
            f"{client.base_url} answered {response.status_code} with something that is not "
            "JSON; is it a swarm service?",
            url=str(client.base_url),
        ) from None


def _refused(response: httpx.Response, offset: int) -> None:
    try:
        error = response.json()["error"]
        message_text = str(error["message"])
    except (ValueError, KeyError, TypeError):
        error = {"details": None}
        message_text = response.text[:200]
    details = error.get("details") if isinstance(error, dict) else None
    details = details if isinstance(details, dict) else {}
    field = details.get("field")
    if isinstance(field, str) and field.startswith("coordinates.") and offset:
        index, _, rest = field.removeprefix("coordinates.").partition(".")
        field = f"coordinates.{int(index) + offset}.{rest}" if index.isdigit() else field
    code = response.status_code
    message = f"the service refused the request ({code}): {message_text}"
    if code in (401, 403):
        raise PolicyRefusedError(
            f"{message}; use the same data home as 'atomlab swarm serve' (its tokens file) or "
            "set ATOMLAB_SWARM__INGEST_TOKEN / _CONTROL_TOKEN / _READ_TOKEN",
            status=code,
        )
    if code in (400, 413, 415, 422):
        raise InvalidInputError(
            message + "; nothing of that batch was queued",
            field=field,
            value=details.get("value"),
        )
    raise UnavailableError(message, status=code)


def _read_coordinates(source: str) -> list[dict[str, Any]]:
    if source == "-":
        raw = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        name = "stdin"
    else:
        path = Path(source)
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_INPUT_BYTES + 1)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)[:100]
            raise InvalidInputError(
                f"cannot read {source[:200]!r}: {reason}; pass a JSON file or - for stdin",
                field="source",
                value=source[:200],
            ) from None
        name = source[:200]
    if len(raw) > MAX_INPUT_BYTES:
        raise InvalidInputError(
            f"{name} is larger than {MAX_INPUT_BYTES // 2**20} MiB; split it into smaller files",
            field="source",
            value=name,
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{name} is not UTF-8 text (byte {exc.start}); pass a JSON or JSON-lines file",
            field="source",
            value=name,
        ) from None
    try:
        data: Any = json.loads(text)
    except RecursionError:
        raise InvalidInputError(
            f"{name} is nested too deeply to be defects", field="source"
        ) from None
    except ValueError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except RecursionError:
            raise InvalidInputError(
                f"{name} is nested too deeply to be defects", field="source"
            ) from None
        except json.JSONDecodeError as exc:
            raise InvalidInputError(
                f"{name} is neither JSON nor JSON lines (line {exc.lineno}: {exc.msg})",
                field="source",
                value=name,
            ) from None
        except ValueError as exc:
            raise InvalidInputError(
                f"{name} is not JSON: {str(exc)[:100]}", field="source", value=name
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
