"""``atomlab doctor``: check Python, the data home, optional extras and free ports."""

from __future__ import annotations

from rich.console import Console

from atomlab.cli import output
from atomlab.core.doctor import run_checks, summarize
from atomlab.core.errors import UnavailableError

_MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


def doctor(json_out: output.JsonOption = False) -> None:
    """Check that this machine can run atomlab; exit 4 when a required check fails."""
    output.use_json(json_out)
    settings = output.state().loaded.settings
    checks = run_checks(settings.home)
    report = summarize(checks)
    failed = [check for check in checks if check.status == "fail"]
    if failed:
        # The error contract: {"ok": false, "error": {..., "details": the report}, "exit_code": 4}
        reasons = "; ".join(f"{check.name}: {check.detail}" for check in failed)
        raise UnavailableError(
            f"unhealthy: {reasons} (every check: atomlab doctor --json)", **report
        )

    def human(console: Console) -> None:
        for check in checks:
            console.print(
                f"[{_MARK[check.status]}] {check.name}: {check.detail}", markup=False, emoji=False
            )
        console.print("healthy")

    output.emit(report, json_flag=json_out, human=human)
