"""Where a running swarm service listens, so clients in the same data home find it.

``atomlab swarm serve`` writes ``<home>/swarm/service.json`` once it listens (``{"url",
"ws_url", "pid", "host", "port"}``) and removes it when it stops. ``swarm ingest``, ``swarm
status``, ``sim swarm`` and the demo use it when neither ``--url`` nor ``swarm.host`` /
``swarm.port`` was given, so ``serve --port 0`` (or any port) needs no flags on the clients.
A file left by a killed service is ignored (its process is gone)::

    url = service_url(loaded_settings)          # "http://127.0.0.1:8000" or the running one
    ws = link_url(loaded_settings)              # "ws://127.0.0.1:8000/ws/isaac"
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomlab.core.settings import LoadedSettings

SERVICE_SUBDIR = "swarm"
SERVICE_FILENAME = "service.json"
LINK_PATH = "/ws/isaac"
ANY_INTERFACE = ("0.0.0.0", "::", "")  # noqa: S104 - compared against, never bound here


@dataclass(frozen=True)
class ServiceEndpoint:
    url: str  # http://host:port
    ws_url: str  # ws://host:port/ws/isaac
    pid: int
    host: str
    port: int


def service_file_path(home: Path) -> Path:
    return home / SERVICE_SUBDIR / SERVICE_FILENAME


def client_host(host: str) -> str:
    """The address a client on this machine dials for a service bound to ``host``."""
    if host in ANY_INTERFACE:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def endpoint_for(host: str, port: int, pid: int | None = None) -> ServiceEndpoint:
    where = f"{client_host(host)}:{port}"
    return ServiceEndpoint(
        url=f"http://{where}",
        ws_url=f"ws://{where}{LINK_PATH}",
        pid=os.getpid() if pid is None else pid,
        host=host,
        port=port,
    )


def write_service_file(home: Path, endpoint: ServiceEndpoint) -> Path:
    """Record where this service listens (atomically: readers never see half a file)."""
    path = service_file_path(home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{endpoint.pid}.tmp")
    body = {
        "url": endpoint.url,
        "ws_url": endpoint.ws_url,
        "pid": endpoint.pid,
        "host": endpoint.host,
        "port": endpoint.port,
    }
    temporary.write_text(json.dumps(body) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def remove_service_file(home: Path, pid: int | None = None) -> None:
    """Remove the record, but only if it is this process's (another service may own it now)."""
    path = service_file_path(home)
    found = read_service_file(home, check_alive=False)
    if found is not None and found.pid == (os.getpid() if pid is None else pid):
        with contextlib.suppress(OSError):
            path.unlink()


def read_service_file(home: Path, *, check_alive: bool = True) -> ServiceEndpoint | None:
    """The running service's endpoint, or None (no file, a damaged one, or a dead process)."""
    path = service_file_path(home)
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        endpoint = ServiceEndpoint(
            url=str(data["url"]),
            ws_url=str(data["ws_url"]),
            pid=int(data["pid"]),
            host=str(data["host"]),
            port=int(data["port"]),
        )
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None
    if not endpoint.url.startswith("http://") or not endpoint.ws_url.startswith("ws://"):
        return None
    if check_alive and not _alive(endpoint.pid):
        return None
    return endpoint


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def _explicit(loaded: LoadedSettings) -> bool:
    """True when swarm.host or swarm.port was set (file, environment or flag)."""
    return any(
        loaded.sources.get(key, "default") != "default" for key in ("swarm.host", "swarm.port")
    )


def _client_endpoint(loaded: LoadedSettings) -> ServiceEndpoint:
    """The running service's endpoint unless host or port were set explicitly; else the
    configured one (see the module docstring for the order)."""
    if not _explicit(loaded):
        running = read_service_file(loaded.settings.home)
        if running is not None:
            return running
    swarm = loaded.settings.swarm
    return endpoint_for(swarm.host, swarm.port)


def service_url(loaded: LoadedSettings) -> str:
    """The HTTP base URL a client should use (see the module docstring for the order)."""
    return _client_endpoint(loaded).url


def link_url(loaded: LoadedSettings) -> str:
    """The simulator link's WebSocket URL, found the same way as :func:`service_url`."""
    return _client_endpoint(loaded).ws_url


__all__ = [
    "ServiceEndpoint",
    "endpoint_for",
    "link_url",
    "read_service_file",
    "remove_service_file",
    "service_file_path",
    "service_url",
    "write_service_file",
]
