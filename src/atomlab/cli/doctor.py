"""``atomlab doctor``: check Python, the data home, optional extras and free ports."""

from __future__ import annotations

import typer
from rich.console import Console

from atomlab.cli import output
from atomlab.core.doctor import run_checks, summarize
from atomlab.core.errors import ExitCode

_MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


def doctor(json_out: output.JsonOption = False) -> None:
    """Check that this machine can run atomlab; exit 4 when a required check fails."""
    settings = output.state().loaded.settings
    checks = run_checks(settings.home)
    report = summarize(checks)

    def human(console: Console) -> None:
        for check in checks:
            console.print(
                f"[{_MARK[check.status]}] {check.name}: {check.detail}", markup=False, emoji=False
            )
        console.print("healthy" if report["healthy"] else "unhealthy: fix the FAIL lines above")

    output.emit(report, json_flag=json_out, human=human)
    if not report["healthy"]:
        raise typer.Exit(int(ExitCode.UNAVAILABLE))
