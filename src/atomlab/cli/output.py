"""The output contract every command follows (docs/cli.md).

* ``--json``: exactly one JSON object on stdout.
* Errors: ``{"ok": false, "error": {"type", "message"}, "exit_code"}`` on stdout in JSON mode,
  one line ``error: <message>`` on stderr otherwise; never a traceback unless ``--debug``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from atomlab.core.errors import AtomlabError, ExitCode
from atomlab.core.settings import LoadedSettings, load_settings

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout instead of text.")
]


@dataclass
class CliState:
    """Per-invocation state set by the root callback."""

    json: bool = False
    debug: bool = False
    config_path: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    _loaded: LoadedSettings | None = None

    @property
    def loaded(self) -> LoadedSettings:
        """Settings, loaded lazily so commands that need none never fail on them."""
        if self._loaded is None:
            self._loaded = load_settings(config_path=self.config_path, overrides=self.overrides)
        return self._loaded


_state = CliState()


def reset_state(new: CliState) -> None:
    global _state
    _state = new


def state() -> CliState:
    """The state of the running invocation."""
    return _state


def use_json(flag: bool = False) -> bool:
    """True when this command should print JSON (its own ``--json`` or the global one)."""
    if flag:
        _state.json = True
    return _state.json


def to_jsonable(value: Any) -> Any:
    """Convert paths, datetimes, enums, dataclasses and pydantic models for ``json.dumps``.

    A non-finite float (``nan``, ``inf``) becomes ``null``: JSON has no such numbers, and a reader
    that follows the standard (``jq``, JavaScript) rejects the whole object over one of them.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Enum):
        return value.value
    return value


def emit(
    payload: Mapping[str, Any],
    *,
    json_flag: bool = False,
    human: str | Callable[[Console], None] | None = None,
) -> None:
    """Print a command's result: ``payload`` as one JSON object, or ``human`` for people."""
    if use_json(json_flag) or human is None:
        body = {"ok": True, **to_jsonable(dict(payload))}
        sys.stdout.write(_dumps(body) + "\n")
        sys.stdout.flush()
        return
    if isinstance(human, str):
        sys.stdout.write(human + ("" if human.endswith("\n") else "\n"))
        sys.stdout.flush()
        return
    human(Console(file=sys.stdout, soft_wrap=True, emoji=False))


def emit_error(error_type: str, message: str, exit_code: int, *, details: Any = None) -> None:
    """Print an error in the contract's shape (JSON envelope or one stderr line)."""
    if _state.json:
        err: dict[str, Any] = {"type": error_type, "message": message}
        if details:
            err["details"] = to_jsonable(details)
        envelope = {"ok": False, "error": err, "exit_code": exit_code}
        sys.stdout.write(_dumps(envelope) + "\n")
        sys.stdout.flush()
    else:
        one_line = " ".join(message.split("\n"))  # the contract: one line on stderr
        sys.stderr.write(f"error: {one_line}\n")
        sys.stderr.flush()


def _dumps(body: Mapping[str, Any]) -> str:
    """Strict JSON on one line; anything without a JSON form is written as its text."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, default=str)


def emit_atomlab_error(exc: AtomlabError) -> int:
    emit_error(exc.type_name, exc.message, int(exc.exit_code), details=exc.details or None)
    return int(exc.exit_code)


__all__ = [
    "CliState",
    "ExitCode",
    "JsonOption",
    "emit",
    "emit_atomlab_error",
    "emit_error",
    "state",
    "to_jsonable",
    "use_json",
]
