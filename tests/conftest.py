"""Fixtures shared by every test: an isolated data home and an in-process CLI runner."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from atomlab.cli.main import run


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        """The single JSON object the command printed on stdout."""
        return json.loads(self.stdout)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own data home and no ATOMLAB_ variables from the developer's shell."""
    import os

    for key in list(os.environ):
        if key.upper().startswith("ATOMLAB_"):
            monkeypatch.delenv(key)
    home = tmp_path / "atomlab-home"
    monkeypatch.setenv("ATOMLAB_HOME", str(home))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    yield home
    _reset_logging()


def _reset_logging() -> None:
    """Undo any configure_logging() a test (or a CLI call) made, so log levels never leak."""
    import logging

    import structlog

    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_atomlab", False):
            root.removeHandler(handler)
    root.setLevel(logging.WARNING)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``atomlab ARGS...`` in-process and capture its exit code, stdout and stderr."""

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        code = run(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke
