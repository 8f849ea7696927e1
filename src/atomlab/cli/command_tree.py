"""The command tree behind the Typer app: built once per invocation, walked by tests.

Typer's rich help prints a type for every option, so a flag such as ``--json`` showed as
``--json <bool>`` although it takes no value. :func:`build_command` clears the type column of
flags (``metavar=""``), the way click's plain help does it. (Typer carries its own copy of click,
so the tree is walked by its attributes, not by click's classes.)
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import typer
import typer.main

HELP_OPTION_NAMES = ("-h", "--help")  # the root's context_settings; every group inherits them


def build_command(app: typer.Typer) -> Any:
    """The click-style command of ``app`` with every flag's help free of a value type."""
    command = typer.main.get_command(app)
    names = SimpleNamespace(help_option_names=list(HELP_OPTION_NAMES))
    for _path, each in walk(command):
        help_option = each.get_help_option(names)  # made once and cached by the command
        for param in [*each.params, help_option]:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
    return command


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of the tree with its path of names (the root's path is empty)."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, (*path, name))


__all__ = ["build_command", "walk"]
