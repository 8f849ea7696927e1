"""The command line's fast path: ``--version`` and ``instrument get``, answered before Typer,
Rich, pydantic(-settings), YAML or structlog load.

An agent reads one value per process: loading the full command line (about 0.5 s here) would
cost ten times the instrument round trip. The fast path handles exactly the simple forms and
prints the same bytes and exit codes as the full path; anything else returns None and the full
command line runs:

* ``atomlab [--json] [--debug] --version``;
* ``atomlab [--json] instrument get NAME [--json] [--host H] [--port P] [--timeout-s T]``, when
  no ``--config``/``./atomlab.yaml`` and no ``ATOMLAB_*`` variable (``ATOMLAB_HOME`` aside) can
  change a setting, and the packaged catalog's index is current (``catalog_index``).

``tests/cli/test_startup.py`` compares both paths' output and guards which modules the fast
path imports; ``benchmarks/instrument.py`` times it against ``nspmctl``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, Final

# instrument.* defaults of atomlab.core.settings (kept equal: test_startup checks)
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 6501
DEFAULT_CONNECT_TIMEOUT_S: Final = 2.0
DEFAULT_CALL_TIMEOUT_S: Final = 5.0

_VALUED_GLOBALS: Final = frozenset({"--config", "--home", "--log-level", "--log-format"})
_GET_OPTIONS: Final = frozenset({"--host", "--port", "--timeout-s"})
INTERRUPTED: Final = 130
UNEXPECTED: Final = 1


def run(argv: Sequence[str]) -> int | None:
    """Answer ``argv`` on the fast path and return the exit code, or None to take the full one."""
    args = list(argv)
    command_at = _first_command(args)
    head = args if command_at is None else args[:command_at]
    if "--version" in head and all(
        a in ("--json", "--debug", "--version") or a in _VALUED_GLOBALS for a in head
    ):
        if not _values_ok(head):
            return None
        from atomlab import __version__

        sys.stdout.write(f"atomlab {__version__}\n")
        return 0
    if command_at is None or any(a != "--json" for a in head):
        return None
    rest = args[command_at:]
    if rest[:2] != ["instrument", "get"]:
        return None
    parsed = _parse_get(rest[2:])
    if parsed is None or not _settings_are_defaults():
        return None
    name, options, json_mode = parsed
    json_mode = json_mode or "--json" in head
    return _get(name, options, json_mode)


def _first_command(args: list[str]) -> int | None:
    skip = False
    for i, arg in enumerate(args):
        if skip:
            skip = False
            continue
        if arg == "--":
            return None
        if arg.startswith("-"):
            skip = arg in _VALUED_GLOBALS
            continue
        return i
    return None


def _values_ok(head: list[str]) -> bool:
    """Every valued global option has its value (else Click's usage error decides)."""
    for i, arg in enumerate(head):
        if arg in _VALUED_GLOBALS and (i + 1 >= len(head) or head[i + 1].startswith("-")):
            return False
    return True


def _parse_get(args: list[str]) -> tuple[str, dict[str, str], bool] | None:
    """``NAME [--json] [--host H] [--port P] [--timeout-s T]`` in any order, else None."""
    name: str | None = None
    options: dict[str, str] = {}
    json_mode = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--json":
            json_mode = True
        elif arg in _GET_OPTIONS:
            if i + 1 >= len(args) or arg in options:
                return None
            options[arg] = args[i + 1]
            i += 1
        elif "=" in arg and arg.split("=", 1)[0] in _GET_OPTIONS:
            key, value = arg.split("=", 1)
            if key in options:
                return None
            options[key] = value
        elif arg.startswith("-") or name is not None:
            return None  # --help, --catalog, a second name ...: the full command line decides
        else:
            name = arg
        i += 1
    if name is None:
        return None
    return name, options, json_mode


def _settings_are_defaults() -> bool:
    """No settings file and no ATOMLAB_ variable but the data home can change a setting."""
    for key in os.environ:
        upper = key.upper()
        if upper.startswith("ATOMLAB_") and upper != "ATOMLAB_HOME":
            return False
    from pathlib import Path

    return not Path("atomlab.yaml").exists()


def _get(name: str, options: dict[str, str], json_mode: bool) -> int | None:
    try:
        port = int(options["--port"]) if "--port" in options else DEFAULT_PORT
        timeout = (
            float(options["--timeout-s"]) if "--timeout-s" in options else DEFAULT_CALL_TIMEOUT_S
        )
    except ValueError:
        return None  # not a number: Click's usage error (exit 3) from the full path
    host = options.get("--host", DEFAULT_HOST)
    from atomlab.cli.envelope import write_error, write_success, write_text
    from atomlab.core.errors import AtomlabError, NotFoundError

    try:
        from atomlab.instrument.commands import is_known

        if "." in name and is_known(name):
            values = _read_command(name, host, port, timeout)
            if json_mode:
                write_success({"command": name, "values": values})
            else:
                text = "\n".join(f"{k} = {v}" for k, v in values.items())
                write_text(text or f"{name}: ok")
            return 0
        from atomlab.instrument import catalog_index

        entries = catalog_index.load_index()
        if entries is None:
            return None  # the packaged catalog changed since its index was built
        entry = catalog_index.find(entries, name)
        if entry is None:
            raise NotFoundError(catalog_index.not_found_message(entries, name), name=name)
        value = _read_entry(entry, host, port, timeout)
        if json_mode:
            write_success(
                {"name": entry.name, "label": entry.label, "unit": entry.unit, "value": value}
            )
        else:
            write_text(f"{entry.name} = {value:g} {entry.unit}".rstrip())
        return 0
    except AtomlabError as exc:
        write_error(
            exc.type_name,
            exc.message,
            int(exc.exit_code),
            json_mode=json_mode,
            details=exc.details or None,
        )
        return int(exc.exit_code)
    except KeyboardInterrupt:
        write_error("interrupted", "interrupted by the operator", INTERRUPTED, json_mode=json_mode)
        return INTERRUPTED
    except Exception as exc:
        message = f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
        write_error("unexpected", message, UNEXPECTED, json_mode=json_mode)
        return UNEXPECTED


def _client(host: str, port: int, timeout: float) -> Any:
    from atomlab.instrument.client import NanonisClient

    return NanonisClient(
        host, port, connect_timeout_s=DEFAULT_CONNECT_TIMEOUT_S, call_timeout_s=timeout
    )


def _read_command(name: str, host: str, port: int, timeout: float) -> dict[str, Any]:
    with _client(host, port, timeout) as client:
        return dict(client.call(name).display_values())


def _read_entry(entry: Any, host: str, port: int, timeout: float) -> float | int | bool:
    from atomlab.instrument.catalog_index import coerce_value
    from atomlab.instrument.commands import WireType, lookup

    with _client(host, port, timeout) as client:
        reply = client.call(entry.command, entry.args)
    is_f32 = lookup(entry.command).reply_field(entry.field).type is WireType.F32
    return coerce_value(entry.type, reply[entry.field], float32=is_f32)
