"""Checks that this machine can run atomlab: Python, the data home, optional extras, free ports."""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

MIN_PYTHON = (3, 11)

# extra name -> the modules it must make importable
OPTIONAL_EXTRAS: dict[str, tuple[str, ...]] = {
    "qcodes": ("qcodes",),
    "gpu": ("pynvml",),
    "tensorboard": ("tensorboard",),
    "plot": ("matplotlib",),
    "parquet": ("pyarrow",),
    "gemini": ("google.genai",),
    "swarm": ("fastapi", "uvicorn", "websockets", "sqlalchemy", "scipy"),
    "postgres": ("psycopg",),
    "dashboard": ("fastapi", "uvicorn", "sse_starlette", "plotly"),
}

DEFAULT_PORTS: tuple[int, ...] = (6501, 6502, 6503, 6504, 8000)

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """One doctor check and its outcome."""

    name: str
    status: Status
    detail: str


def check_python(version: Sequence[int] = tuple(sys.version_info[:3])) -> Check:
    shown = ".".join(str(part) for part in version)
    if tuple(version[:2]) >= MIN_PYTHON:
        return Check("python", "ok", f"Python {shown}")
    need = ".".join(map(str, MIN_PYTHON))
    return Check("python", "fail", f"Python {shown} is too old; install Python >= {need}")


def check_home(home: Path) -> Check:
    try:
        home.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".doctor-", delete=True) as handle:
            handle.write(b"ok")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        return Check("home", "fail", f"data home {home} is not writable: {exc.strerror or exc}")
    return Check("home", "ok", f"data home {home} is writable")


def check_extras(extras: dict[str, tuple[str, ...]] = OPTIONAL_EXTRAS) -> list[Check]:
    checks = []
    for extra, modules in extras.items():
        missing = [name for name in modules if not _importable(name)]
        if missing:
            detail = f"missing {', '.join(missing)}; install with: uv sync --extra {extra}"
            checks.append(Check(f"extra:{extra}", "warn", detail))
        else:
            checks.append(Check(f"extra:{extra}", "ok", "installed"))
    return checks


def check_ports(ports: Iterable[int], host: str = "127.0.0.1") -> list[Check]:
    checks = []
    for port in ports:
        free = port_is_free(host, port)
        status: Status = "ok" if free else "warn"
        detail = "free" if free else "in use (another program, or a running atomlab simulator)"
        checks.append(Check(f"port:{port}", status, detail))
    return checks


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def run_checks(home: Path, ports: Iterable[int] = DEFAULT_PORTS) -> list[Check]:
    """Every check, in the order the CLI prints them."""
    return [check_python(), check_home(home), *check_extras(), *check_ports(ports)]


def summarize(checks: Sequence[Check]) -> dict[str, object]:
    """A JSON-ready report; ``healthy`` is False when any check failed."""
    return {
        "healthy": all(check.status != "fail" for check in checks),
        "checks": [asdict(check) for check in checks],
    }


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
