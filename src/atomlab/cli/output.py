"""The output contract every command follows (docs/cli.md).

* ``--json``: exactly one JSON object on stdout.
* Errors: ``{"ok": false, "error": {"type", "message"}, "exit_code"}`` on stdout in JSON mode,
  one line ``error: <message>`` on stderr otherwise; never a traceback unless ``--debug``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from atomlab.cli.envelope import to_jsonable, write_error, write_success, write_text
from atomlab.core.errors import AtomlabError, ExitCode

if TYPE_CHECKING:
    from atomlab.core.settings import LoadedSettings

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
            # pydantic-settings and YAML load here, for commands that read settings
            from atomlab.core.settings import load_settings

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


def emit(
    payload: Mapping[str, Any],
    *,
    json_flag: bool = False,
    human: str | Callable[[Console], None] | None = None,
) -> None:
    """Print a command's result: ``payload`` as one JSON object, or ``human`` for people."""
    if use_json(json_flag) or human is None:
        write_success(payload)
        return
    if isinstance(human, str):
        write_text(human)
        return
    human(Console(file=sys.stdout, soft_wrap=True, emoji=False))


def emit_error(error_type: str, message: str, exit_code: int, *, details: Any = None) -> None:
    """Print an error in the contract's shape (JSON envelope or one stderr line)."""
    write_error(error_type, message, exit_code, json_mode=_state.json, details=details)


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
