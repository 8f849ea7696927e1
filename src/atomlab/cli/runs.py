"""``atomlab runs``: track a pipeline of commands, watch it, and inspect the run history.

Every ``runs`` command checks its arguments first, so a refused one changes nothing (not even a
fresh data home); then, when it opens the history, the reaper marks runs whose process died
(``kill -9``) as crashed, so no run stays "running" forever.
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from atomlab.cli import output
from atomlab.core import paths
from atomlab.core.errors import (
    AtomlabError,
    InterruptedRunError,
    InvalidInputError,
    TerminatedError,
)
from atomlab.core.logging import get_logger
from atomlab.tracking import (
    TABLE_FORMATS,
    RunCancelled,
    RunIndex,
    RunStatus,
    RunTracker,
    StepSpec,
    TensorBoardMirror,
    auto_view,
    check_logdir,
    check_run_hint,
    check_statuses,
    export_tables,
    format_duration,
    parse_since,
    perf,
    read_metrics,
    report,
)

app = typer.Typer(
    help="Track long pipelines: run commands as steps, watch them, list and inspect runs.",
    no_args_is_help=True,
)

FormatOption = Annotated[str, typer.Option("--format", "-f", help="text, json or md.")]
RunArg = Annotated[str | None, typer.Argument(help="Run id or unique prefix (default: newest).")]
WATCH_INTERVAL_S = 2.0
WATCH_INTERVAL_RANGE_S = (0.2, 3600.0)

_log = get_logger(__name__)


def _index(*, create: bool = False) -> RunIndex:
    """The history, opened once the command's arguments are checked, after the reaper ran.

    Readers pass ``create=False``: on a data home that never tracked a run nothing is created.
    """
    settings = output.state().loaded.settings
    index = RunIndex.open(settings.home, create=create)
    try:
        index.reap(stale_after_s=settings.tracking.stale_after_s)
    except (sqlite3.Error, OSError) as exc:  # a read-only home still lists its runs
        _log.warning("runs.reap_failed", error=str(exc))
    return index


@app.callback()
def runs_root_command() -> None:
    """Track long pipelines and inspect the run history (kept under <home>/runs)."""


def _parse_pairs(values: list[str], option: str, example: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise InvalidInputError(
                f"{option} {value!r} must look like {example}", field=option, value=value
            )
        pairs.append((name.strip(), rest.strip()))
    return pairs


@app.command("exec")
def exec_command(
    pipeline: Annotated[str, typer.Option("--pipeline", "-p", help="Pipeline name.")],
    step: Annotated[list[str], typer.Option("--step", "-s", help="NAME=COMMAND, repeat in order.")],
    expect: Annotated[
        list[str] | None,
        typer.Option("--expect", help="NAME=SECONDS prior duration for the ETA."),
    ] = None,
    shell: Annotated[
        bool, typer.Option("--shell", help="Run each COMMAND with /bin/sh -c.")
    ] = False,
    telemetry: Annotated[bool, typer.Option("--telemetry/--no-telemetry")] = True,
    tensorboard: Annotated[
        Path | None, typer.Option("--tensorboard", help="Mirror telemetry to this logdir.")
    ] = None,
    json_out: output.JsonOption = False,
) -> None:
    """Run COMMANDs as the steps of a tracked run (each in its own process group)."""
    json_mode = output.use_json(json_out)
    settings = output.state().loaded.settings
    steps = _parse_pairs(step, "--step", "NAME=COMMAND (e.g. train='python train.py')")
    priors = {
        name: _positive_float(value, "--expect")
        for name, value in _parse_pairs(expect or [], "--expect", "NAME=SECONDS")
    }
    try:
        specs = [StepSpec(name=name, expected_s=priors.get(name)) for name, _ in steps]
    except ValueError as exc:  # pydantic names the rule the step name broke
        reason = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
        raise InvalidInputError(f"invalid --step name: {reason}", field="step") from None
    # Every command line is checked before the first step runs.
    commands: list[str | list[str]] = [
        command if shell else _split(command, name) for name, command in steps
    ]
    unknown = set(priors) - {name for name, _ in steps}
    if unknown:
        raise InvalidInputError(
            f"--expect names unknown steps {sorted(unknown)}; use the names given to --step",
            field="expect",
        )
    mirrors = []
    logdir = tensorboard or settings.tracking.tensorboard_dir
    if logdir is not None:
        mirrors.append(TensorBoardMirror(logdir))  # exit 4 when the extra is missing
    tracker = RunTracker(
        pipeline,
        specs,
        home=settings.home,
        settings=settings.tracking,
        progress=auto_view(json_mode=json_mode, interval_s=settings.tracking.progress_interval_s),
        telemetry=telemetry,
        mirrors=mirrors,
    )
    if logdir is not None:
        check_logdir(logdir)  # after every other check: it may create the folder
    try:
        with tracker:
            for (name, _), argv in zip(steps, commands, strict=True):
                tracker.run_step(name, argv, shell=shell)
    except RunCancelled as exc:
        raise _cancelled_error(exc.signum, tracker.run_id) from None
    record = tracker.record
    assert record is not None
    output.emit(
        {"run": record.model_dump(mode="json")},
        human=f"run {record.run_id} {record.status.value} in {record.duration_s:.1f} s "
        f"({record.steps_done}/{record.steps_total} steps)\n"
        + "\n".join(report.recommendations_text(record.recommendations)),
    )


def _split(command: str, name: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise InvalidInputError(
            f"--step {name}={command!r} is not a valid command line ({exc}); check the quoting",
            field="step",
            value=command,
        ) from None
    if not argv:
        raise InvalidInputError(f"--step {name} has an empty command", field="step")
    return argv


def _positive_float(value: str, option: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not (number > 0 and math.isfinite(number)):
        raise InvalidInputError(
            f"{option} value {value[:40]!r} must be a positive, finite number of seconds",
            field=option,
        )
    return number


def _cancelled_error(signum: int, run_id: str) -> AtomlabError:
    message = f"run {run_id} cancelled by {signal.Signals(signum).name}"
    if signum == signal.SIGINT:
        return InterruptedRunError(message, run_id=run_id)
    return TerminatedError(message, run_id=run_id)


@app.command("status")
def status_command(run: RunArg = None, json_out: output.JsonOption = False) -> None:
    """Where a run is now: step X/N, elapsed, a fresh ETA, every step's state."""
    check_run_hint(run)
    with _index() as index:
        record = index.load(run)
        view = report.live_view(record, index)
    output.emit({"run": view}, json_flag=json_out, human=report.status_text(view))


@app.command("watch")
def watch_command(
    run: Annotated[
        str | None,
        typer.Argument(help="Run id or unique prefix (default: the newest live run, else newest)."),
    ] = None,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between looks, 0.2-3600.")
    ] = WATCH_INTERVAL_S,
    json_out: output.JsonOption = False,
) -> None:
    """Follow a run until it ends; exit 1 if it failed, was cancelled or crashed."""
    json_mode = output.use_json(json_out)
    settings = output.state().loaded.settings
    low, high = WATCH_INTERVAL_RANGE_S
    if not low <= interval <= high:  # NaN fails this too
        raise InvalidInputError(
            f"--interval {interval} is not between {low} and {high:g} seconds; pass e.g. "
            f"--interval {WATCH_INTERVAL_S}",
            field="interval",
            value=str(interval),
        )
    check_run_hint(run)
    with _index() as index:
        run_id = _watch_target(index, run)
        while True:
            index.reap(stale_after_s=settings.tracking.stale_after_s)
            record = index.load(run_id)
            view = report.live_view(record, index)
            if not json_mode:
                sys.stderr.write(report.status_text(view).splitlines()[0] + "\n")
                if view.get("current_step"):
                    sys.stderr.write(report.status_text(view).splitlines()[1] + "\n")
                sys.stderr.flush()
            if not record.status.is_active:
                break
            time.sleep(interval)
    output.emit({"run": view}, human=report.status_text(view))
    if record.status is not RunStatus.COMPLETED:
        raise typer.Exit(1)


def _watch_target(index: RunIndex, hint: str | None) -> str:
    """The run ``hint`` names; without one, the newest run still going, else the newest."""
    if hint is None:
        active = [status.value for status in RunStatus if status.is_active]
        live = index.list_runs(status=active, limit=1)
        if live:
            return live[0].run_id
    return index.resolve(hint).run_id


@app.command("list")
def list_command(
    status: Annotated[
        list[str] | None, typer.Option("--status", help="Filter by status (repeatable).")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="ISO date/time or age such as 2h, 7d.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Most rows.")] = 20,
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p")] = None,
    json_out: output.JsonOption = False,
) -> None:
    """Past and current runs, newest first, from the index (no manifest is parsed)."""
    if limit < 1:
        raise InvalidInputError(f"--limit {str(limit)[:40]} must be at least 1", field="limit")
    check_statuses(status or [])
    if since is not None:
        parse_since(since)
    with _index() as index:
        rows = index.list_runs(status=status, since=since, pipeline=pipeline, limit=limit)

    table = [
        (
            r.run_id,
            r.status,
            f"{r.steps_done}/{r.steps_total}",
            r.created_at[:19].replace("T", " "),
            format_duration(r.duration_s),
            r.pipeline + (f" (now: {r.current_step})" if r.current_step else ""),
        )
        for r in rows
    ]
    header = ("RUN", "STATUS", "STEPS", "CREATED (UTC)", "TIME", "PIPELINE")
    widths = [max(len(str(row[k])) for row in [header, *table]) for k in range(len(header))]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *table]
    ]
    human = "\n".join(lines) if rows else "no runs match"
    output.emit({"runs": [r.to_dict() for r in rows]}, json_flag=json_out, human=human)


def _render(run: str | None, fmt: str) -> tuple[dict[str, Any], str]:
    if fmt not in ("text", "json", "md", "markdown"):
        raise InvalidInputError(
            f"--format {fmt[:40]!r} is not known; use text, json or md", field="format"
        )
    check_run_hint(run)
    with _index() as index:
        record = index.load(run)
        view = report.live_view(record, index)
    if fmt in ("md", "markdown"):
        return view, report.markdown(record)
    text = report.status_text(view)
    if record.summary or record.recommendations:
        text += "\n" + "\n".join(
            [f"  {line}" for line in report.summary_lines(record.summary)]
            + report.recommendations_text(record.recommendations)
        )
    return view, text


@app.command("show")
def show_command(
    run: Annotated[str, typer.Argument(help="Run id or unique prefix, or 'latest'.")],
    fmt: FormatOption = "text",
    json_out: output.JsonOption = False,
) -> None:
    """One run in full: steps, summary, recommendations (text, json or md)."""
    view, text = _render(run, fmt)
    json_mode = json_out or fmt == "json"
    output.emit({"run": view}, json_flag=json_mode, human=text)


@app.command("export")
def export_command(
    run: Annotated[str, typer.Argument(help="Run id or unique prefix, or 'latest'.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="json, md, csv or parquet.")] = "md",
    output_path: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="File to write (json, md; default: stdout), or the folder for csv/parquet "
            "tables (default: ./<run_id>-export).",
        ),
    ] = None,
    json_out: output.JsonOption = False,
) -> None:
    """Write a run as JSON or Markdown, or its steps, telemetry and metrics as CSV/Parquet."""
    if fmt not in ("json", "md", "markdown", *TABLE_FORMATS):
        raise InvalidInputError(
            f"--format {fmt[:40]!r} is not known; use json, md, csv or parquet", field="format"
        )
    check_run_hint(run)
    if fmt in TABLE_FORMATS:
        if output_path is not None:
            paths.folder(output_path, option="--output")
        with _index() as index:
            record = index.load(run)
        folder = output_path if output_path is not None else Path(f"{record.run_id}-export")
        files = export_tables(record, fmt, folder)
        output.emit(
            {"run_id": record.run_id, "format": fmt, "files": files},
            json_flag=json_out,
            human="\n".join(f"wrote {path}" for path in files.values()),
        )
        return
    if output_path is not None:
        paths.output_file(output_path, option="--output")
    view, text = _render(run, fmt)
    body = output.to_jsonable(view) if fmt == "json" else None
    content = json.dumps(body, indent=2, ensure_ascii=False) + "\n" if body else text
    if output_path is None:
        if output.use_json(json_out):
            output.emit({"run_id": view["run_id"], "format": fmt, "content": content})
        else:
            sys.stdout.write(content)
        return
    tmp = output_path.with_name(f".{output_path.name}.tmp")
    try:
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(output_path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InvalidInputError(
            f"cannot write --output {str(output_path)[:200]!r}: {exc.strerror}; pick a writable "
            "path",
            field="output",
        ) from None
    output.emit(
        {"run_id": view["run_id"], "format": fmt, "path": str(output_path)},
        json_flag=json_out,
        human=f"wrote {output_path}",
    )


@app.command("summary")
def summary_command(run: RunArg = None, json_out: output.JsonOption = False) -> None:
    """Telemetry aggregates and recommendations, recomputed from the run's telemetry."""
    check_run_hint(run)
    with _index() as index:
        record = index.load(run)
        data = report.summarise(record, index)
    output.emit(data, json_flag=json_out, human=report.summary_text(data))


@app.command("ps")
def ps_command(json_out: output.JsonOption = False) -> None:
    """Tracked runs alive on this machine now, with their step, ETA and CPU."""
    import socket

    with _index() as index:
        rows = index.list_runs(status=["running", "pending"], limit=1000)
        here = socket.gethostname()
        views = [report.live_view(index.load(r.run_id), index) for r in rows if r.host == here]
    lines = []
    for v in views:
        sample = v.get("last_sample") or {}
        eta = (v.get("eta") or {}).get("remaining_s")
        lines.append(
            f"{v['run_id']}  pid {v['pid']}  {v['pipeline']}  step {v.get('position') or '-'}"
            f"/{v['steps_total']} {v.get('current_step') or ''}  ETA "
            f"{format_duration(eta)}  cpu {sample.get('proc_cpu_pct', '-')}%  "
            f"rss {sample.get('proc_rss_mb', '-')} MB"
        )
    output.emit(
        {"runs": views},
        json_flag=json_out,
        human="\n".join(lines) if lines else "no tracked run is alive on this machine",
    )


@app.command("prune")
def prune_command(
    keep: Annotated[int | None, typer.Option("--keep", min=1, help="Runs to keep.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would go.")] = False,
    json_out: output.JsonOption = False,
) -> None:
    """Delete the oldest finished runs beyond --keep (or tracking.retention_runs); never a live
    run. --dry-run lists what would go and deletes nothing."""
    settings = output.state().loaded.settings
    count = keep if keep is not None else settings.tracking.retention_runs
    if count is None:
        with _index():  # reaps, as every runs command does; deletes nothing
            pass
        note = (
            "no retention is configured, so nothing is deleted; pass --keep N (see what it "
            "would delete with --dry-run) or set tracking.retention_runs"
        )
        output.emit(
            {"removed": [], "dry_run": dry_run, "kept": None, "note": note},
            json_flag=json_out,
            human=note,
        )
        return
    with _index() as index:
        removed = index.prune(keep=count, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    output.emit(
        {"removed": removed, "dry_run": dry_run, "kept": count},
        json_flag=json_out,
        human=f"{verb} {len(removed)} run(s)" + "".join(f"\n  {r}" for r in removed),
    )


@app.command("reindex")
def reindex_command(json_out: output.JsonOption = False) -> None:
    """Rebuild the history index from the run directories."""
    with _index(create=True) as index:
        count = index.rebuild()
    output.emit({"indexed": count}, json_flag=json_out, human=f"indexed {count} run(s)")


@app.command("tensorboard")
def tensorboard_command(
    run: Annotated[str, typer.Argument(help="Run id or unique prefix, or 'latest'.")],
    logdir: Annotated[Path, typer.Option("--logdir", help="TensorBoard log directory.")],
    json_out: output.JsonOption = False,
) -> None:
    """Write a recorded run's telemetry and steps as TensorBoard event files."""
    from atomlab.tracking.tensorboard import export_run

    check_run_hint(run)
    paths.folder(logdir, option="--logdir")
    TensorBoardMirror(logdir)  # exit 4 when the extra is missing, before touching the logdir
    with _index() as index:
        record = index.load(run)
    check_logdir(logdir)  # makes the folder, so only once the run is known
    target = export_run(
        record, report.load_samples(record), logdir, metrics=read_metrics(record.run_dir)
    )
    output.emit(
        {"run_id": record.run_id, "logdir": str(target)},
        json_flag=json_out,
        human=f"wrote {target} (view with: tensorboard --logdir {logdir})",
    )


def _sim_physics_steps() -> float:
    """Simulated STM control-loop steps per second (idle), through atomlab.sim's public API."""
    from atomlab.sim import Disturbances, StmPhysics
    from atomlab.surface import Surface

    physics = StmPhysics(Surface.generate(0), seed=0, disturbances=Disturbances())
    simulated_s = 2.0
    start = time.perf_counter()
    physics.advance_to(simulated_s)
    return simulated_s * physics.loop_rate_hz / (time.perf_counter() - start)


def _register_capability_suites() -> None:
    """Suites of capabilities above tracking in the layers, registered from the CLI."""
    perf.register_suite(
        perf.PerfSuite(
            "sim.physics",
            "loop_steps_per_s",
            "steps/s",
            _sim_physics_steps,
            description="STM simulator control-loop steps per second, idle (real time needs 1 kHz)",
        )
    )


@app.command("perf-tests")
def perf_tests_command(
    suite: Annotated[
        list[str] | None, typer.Option("--suite", help="Suite name (repeatable; default all).")
    ] = None,
    list_only: Annotated[bool, typer.Option("--list", help="List the suites and exit.")] = False,
    json_out: output.JsonOption = False,
) -> None:
    """Run performance suites, judge them against their stored history; exit 1 on a failure."""
    json_mode = output.use_json(json_out)
    settings = output.state().loaded.settings
    _register_capability_suites()
    suites = perf.select_suites(settings.tracking, suite or [])
    if list_only:
        rows = [
            {"name": s.name, "metric": s.metric, "unit": s.unit, "description": s.description}
            for s in suites
        ]
        output.emit(
            {"suites": rows},
            human="\n".join(
                f"{r['name']}: {r['metric']} ({r['unit']}) {r['description']}" for r in rows
            ),
        )
        return
    try:
        specs = [StepSpec(name=s.name) for s in suites]
    except ValueError as exc:
        raise InvalidInputError(f"invalid perf suite name: {exc}", field="suite") from None
    tracker = RunTracker(
        "perf-tests",
        specs,
        home=settings.home,
        settings=settings.tracking,
        progress=auto_view(json_mode=json_mode, interval_s=settings.tracking.progress_interval_s),
    )
    try:
        with _index(create=True) as index, tracker:
            results = perf.run_suites(
                index, suites, run_id=tracker.run_id, on_suite=lambda s: tracker.step(s.name)
            )
            assert tracker.record is not None
            tracker.record.summary["perf"] = [r.model_dump(mode="json") for r in results]
    except RunCancelled as exc:
        raise _cancelled_error(exc.signum, tracker.run_id) from None
    findings = perf.recommendations_for(results)
    lines = [
        f"{r.status.upper():12} {r.suite}: {r.metric} = "
        + (f"{r.value:.4g} {r.unit}" if r.value is not None else "none")
        + (f" (baseline {r.baseline:.4g}, ratio {r.ratio})" if r.baseline is not None else "")
        + (f" [{r.note}]" if r.note else "")
        for r in results
    ]
    output.emit(
        {
            "run_id": tracker.run_id,
            "results": [r.model_dump(mode="json") for r in results],
            "recommendations": [f.model_dump(mode="json") for f in findings],
        },
        human="\n".join(lines + report.recommendations_text(findings)),
    )
    if any(r.status == "failed" for r in results):
        raise typer.Exit(1)
