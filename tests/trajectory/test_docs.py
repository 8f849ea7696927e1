"""docs/trajectory.md stays in step with the CLI: every command, every option, the defaults."""

from __future__ import annotations

from pathlib import Path

import typer

from atomlab.cli.trajectory import app
from atomlab.trajectory import (
    DEFAULT_ACTION_WINDOW_S,
    DEFAULT_INTERVAL_S,
    DEFAULT_ROTATE_ENTRIES,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "trajectory.md"


def _leaves(command, path: tuple[str, ...] = ()):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _leaves(sub, (*path, name))
    else:
        yield path, command


def test_every_command_and_option_is_documented():
    text = DOC.read_text(encoding="utf-8")
    reference = text[text.index("## CLI reference") :]
    leaves = list(_leaves(typer.main.get_command(app)))
    assert len(leaves) >= 11
    for path, command in leaves:
        line = f"atomlab trajectory {' '.join(path)}"
        assert line in reference, f"{line} is not in the CLI reference of {DOC.name}"
        entry = reference[reference.index(line) :].split("\n- ", 1)[0]
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if opt.startswith("--") and opt != "--help":
                    assert opt in entry, f"{line}: option {opt} is not documented"


def test_defaults_tables_and_run_name_rules_are_documented():
    text = DOC.read_text(encoding="utf-8")
    for value in (DEFAULT_INTERVAL_S, DEFAULT_ROTATE_ENTRIES, DEFAULT_ACTION_WINDOW_S):
        assert f"**{value}**" in text
    for table in (
        "runs",
        "signal_catalog",
        "spec_catalog",
        "signal_samples",
        "spec_samples",
        "action_events",
        "monitor_errors",
        "missed_ticks",
    ):
        assert f"| `{table}` |" in text
    assert "config set" in text and "run_name" in text and "consumed when the run starts" in text
    assert "refused before it starts" in text
    assert "Why one column per signal" in text
