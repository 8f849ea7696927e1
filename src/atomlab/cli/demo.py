"""``atomlab demo``: the whole lab end to end in one command (docs/demo.md)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from atomlab.cli import output

app = typer.Typer(
    help="Run the whole lab end to end: simulator, expert session, learning, scan, detection, "
    "swarm repair, triage and a report (docs/demo.md).",
    invoke_without_command=True,
)


@app.callback()
def demo(
    preset: Annotated[
        str,
        typer.Option("--preset", help="standard (20 nm surface, 12 defects) or small (14 nm, 5)."),
    ] = "standard",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the surface and the runs.")] = 0,
    skip: Annotated[
        list[str] | None,
        typer.Option("--skip", help="Leave out a stage: learning, triage or report (repeatable)."),
    ] = None,
    keep: Annotated[
        bool,
        typer.Option(
            "--keep", help="Leave the servers (and a dashboard) running and print their URLs."
        ),
    ] = False,
    json_out: output.JsonOption = False,
) -> None:
    """Run the demo in a fresh folder under the data home; live progress on stderr."""
    from atomlab.core.errors import InterruptedRunError, TerminatedError
    from atomlab.lab import StderrProgress, demo_config, run_demo

    settings = output.state().loaded.settings
    config = demo_config(preset, seed=seed, home=settings.home, keep=keep, skip=skip or ())
    try:
        result = run_demo(config, progress=StderrProgress())
    except (InterruptedRunError, TerminatedError) as stopped:
        # Every server is stopped and every file closed by now. Python's own shutdown (freeing
        # what numpy, scipy, httpx ... loaded) can take seconds on a busy machine, and a Ctrl-C
        # must end within 2 s: report, flush, and leave at once.
        code = output.emit_atomlab_error(stopped)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    payload = result.to_dict()

    def human(console: Console) -> None:
        console.print(_summary(payload))

    output.emit(payload, json_flag=json_out, human=human)


def _summary(payload: dict[str, Any]) -> str:
    stages = payload["stages"]
    lines = [f"atomlab demo finished in {payload['duration_s']:.0f} s (seed {payload['seed']})"]
    for k, (name, stage) in enumerate(stages.items(), start=1):
        status = stage["status"]
        note = f" - {stage['reason']}" if stage.get("reason") else ""
        lines.append(f"  {k}. {name:<9} {status:<8} {stage['duration_s']:6.1f} s{note}")
    survey = stages.get("survey", {}).get("survey")
    if survey:
        detection, verification = survey["detection"], survey["verification"]
        lines.append(
            f"  defects: {survey['seeded_defects']} seeded, {detection['detected']} detected "
            f"in the image (precision {detection['precision']:.2f}, recall "
            f"{detection['recall']:.2f} within {detection['tolerance_nm']} nm); "
            f"{verification['verified']} repairs verified by the re-scan"
        )
    lines.append(f"  data:   {payload['run_dir']}")
    if payload.get("report"):
        lines.append(f"  report: {payload['report']}")
    for server in payload.get("servers", []):
        where = server.get("url") or server.get("note", "")
        pid = f" (pid {server['pid']})" if "pid" in server else ""
        lines.append(f"  kept:   {server['name']}: {where}{pid}")
    if any("pid" in s for s in payload.get("servers", [])):
        pids = " ".join(str(s["pid"]) for s in payload["servers"] if "pid" in s)
        lines.append(f"  stop them with: kill {pids}")
    return "\n".join(lines)
