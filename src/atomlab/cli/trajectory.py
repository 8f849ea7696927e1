"""``atomlab trajectory``: stage and run the monitor, query runs and actions, export (JSON output).

Every command prints one JSON object (the seed's ``nqctl`` contract); errors use the common
envelope and exit codes of docs/cli.md.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from atomlab.cli import output
from atomlab.core import paths
from atomlab.core.clock import SystemClock
from atomlab.core.errors import (
    ConfigError,
    InterruptedRunError,
    InvalidInputError,
    TerminatedError,
)
from atomlab.core.metrics import Metrics, new_registry
from atomlab.core.settings import AtomlabSettings
from atomlab.instrument import AUDIT_LOG_NAME, NanonisClient, load_catalog
from atomlab.trajectory import (
    ActionEvent,
    MissedTicks,
    Monitor,
    MonitorConfig,
    MonitorError,
    MonitorMetrics,
    OwnWrites,
    Record,
    RunInfo,
    RunSummary,
    Sample,
    catalog_listing,
    check_labels,
    clear_staged,
    clear_staged_run_name,
    default_config_path,
    defaults_from_settings,
    load_staged,
    mark_crashed_runs,
    open_store,
    save_staged,
)
from atomlab.trajectory.export import FORMATS, check_plot_target, export_run, plot_window
from atomlab.trajectory.source import InstrumentSource

app = typer.Typer(
    name="trajectory",
    help="Record every signal and operator action into SQLite; query and export recordings.",
    no_args_is_help=True,
)
monitor_app = typer.Typer(help="Stage and run the trajectory monitor.", no_args_is_help=True)
config_app = typer.Typer(help="The staged monitor config (run name, signals, specs, timing).")
runs_app = typer.Typer(help="Recorded runs.", no_args_is_help=True)
action_app = typer.Typer(help="Inferred operator actions and their signal windows.")


@app.callback()
def _json_by_default() -> None:
    """JSON output by default for this group (results and error envelopes alike)."""
    output.use_json(True)


app.add_typer(monitor_app, name="monitor")
monitor_app.add_typer(config_app, name="config", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(action_app, name="action", no_args_is_help=True)

ConfigPathOption = Annotated[
    Path | None,
    typer.Option(
        "--config-path",
        help="Staged monitor config (default: <home>/trajectory/monitor-config.json).",
    ),
]
DbPathOption = Annotated[
    Path | None,
    typer.Option("--db-path", help="Trajectory database (default: the staged config's db_path)."),
]
RunNameOption = Annotated[
    str | None, typer.Option("--run-name", help="Run to query (default: the latest run).")
]
CatalogOption = Annotated[
    Path | None, typer.Option("--catalog", help="Catalog YAML (default: the packaged one).")
]


ACTION_KINDS = ("spec-change", "command")
MAX_SQL_INT = 2**63 - 1
MAX_HOST_LENGTH = 253
#: `runs show` lists at most this many of the latest errors and missed-tick records.
SHOW_LIMIT = 100
PROGRESS_EVERY_S = 10.0


def _settings() -> AtomlabSettings:
    return output.state().loaded.settings


def _config_path(path: Path | None) -> Path:
    """``--config-path`` (refused, exit 3, when no file can ever be there), else the default."""
    if path is not None:
        return _file_place(path, option="--config-path", field="config_path")
    return default_config_path(_settings())


def _file_place(path: Path, *, option: str, field: str) -> Path:
    """``path`` if a file can be made there (nothing is created): else exit 3, the message naming
    the option and ``details.field`` the config field, as every monitor config error does."""
    try:
        return paths.output_file(path, option=option)
    except InvalidInputError as exc:
        raise ConfigError(exc.message, field=field, value=exc.details.get("path")) from None


def _staged(path: Path | None) -> MonitorConfig:
    return load_staged(_config_path(path), defaults=defaults_from_settings(_settings()))


def _db_path(db_path: Path | None, config_path: Path | None = None) -> Path:
    """The database a query reads; runs whose recorder died are marked ``crashed`` first."""
    path = (
        db_path if db_path is not None else _staged(config_path).resolved_db_path(_settings().home)
    )
    mark_crashed_runs(path)
    return path


def _emit(payload: dict[str, Any]) -> None:
    output.emit(payload)


def _split(csv_labels: str | None) -> tuple[str, ...] | None:
    if csv_labels is None:
        return None
    return tuple(part.strip() for part in csv_labels.split(",") if part.strip())


# ---------------------------------------------------------------------- monitor config


@config_app.command("show")
def config_show(config_path: ConfigPathOption = None, json_out: output.JsonOption = False) -> None:
    """Print the staged config (defaults where nothing is staged)."""
    path = _config_path(config_path)
    config = _staged(config_path)
    _emit({"config_path": path, "staged": path.exists(), "config": config.model_dump(mode="json")})


@config_app.command("set")
def config_set(
    config_path: ConfigPathOption = None,
    run_name: Annotated[
        str | None, typer.Option("--run-name", help="Name of the next run (single-use).")
    ] = None,
    signals: Annotated[
        str | None, typer.Option("--signals", help="Comma-separated signal labels.")
    ] = None,
    specs: Annotated[
        str | None, typer.Option("--specs", help="Comma-separated spec labels.")
    ] = None,
    interval_s: Annotated[
        float | None, typer.Option("--interval-s", help="Seconds between ticks (default 0.1).")
    ] = None,
    rotate_entries: Annotated[
        int | None,
        typer.Option("--rotate-entries", help="Samples per segment (default 6000)."),
    ] = None,
    action_window_s: Annotated[
        float | None,
        typer.Option("--action-window-s", help="Signal context before/after an action (2.5)."),
    ] = None,
    db_path: Annotated[
        Path | None, typer.Option("--db-path", help="Database to record into.")
    ] = None,
    tolerance: Annotated[
        list[str] | None,
        typer.Option(
            "--tolerance", help="LABEL=VALUE: ignore changes of a spec up to VALUE (repeatable)."
        ),
    ] = None,
    coalesce_s: Annotated[
        float | None,
        typer.Option("--coalesce-s", help="Merge changes of one spec closer than this (0: off)."),
    ] = None,
    flush_interval_s: Annotated[
        float | None,
        typer.Option("--flush-interval-s", help="Longest time a sample waits to be committed."),
    ] = None,
    json_out: output.JsonOption = False,
) -> None:
    """Change staged values; only the options given change."""
    path = _config_path(config_path)
    if db_path is not None:  # recorded into later: refuse now a place no file can be made
        db_path = _file_place(db_path.expanduser().absolute(), option="--db-path", field="db_path")
    current = _staged(config_path)
    tolerances = None
    if tolerance:
        tolerances = dict(current.tolerances)
        tolerances.update(_parse_tolerances(tolerance))
    config = current.with_changes(
        run_name=run_name,
        signals=_split(signals),
        specs=_split(specs),
        interval_s=interval_s,
        rotate_entries=rotate_entries,
        action_window_s=action_window_s,
        # absolute: the stage is shared by every working directory the queries run from
        db_path=db_path,
        tolerances=tolerances,
        coalesce_s=coalesce_s,
        flush_interval_s=flush_interval_s,
    )
    config.require_tolerances_known()
    if signals is not None or specs is not None:
        check_labels(
            load_catalog(_settings().instrument.catalog_path),
            signals=config.signals if signals is not None else (),
            specs=config.specs if specs is not None else (),
        )
    save_staged(path, config)
    _emit({"config_path": path, "staged": True, "config": config.model_dump(mode="json")})


def _parse_tolerances(items: list[str]) -> dict[str, float]:
    parsed: dict[str, float] = {}
    for item in items:
        label, sep, value = item.rpartition("=")
        try:
            parsed[label.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not label.strip():
            raise ConfigError(
                f"invalid --tolerance {item!r}: write LABEL=VALUE, e.g. --tolerance 'Bias=0.001'",
                field="tolerances",
                value=item,
            )
    return parsed


@config_app.command("clear")
def config_clear(config_path: ConfigPathOption = None, json_out: output.JsonOption = False) -> None:
    """Forget the staged config (back to the defaults, no run name)."""
    path = _config_path(config_path)
    existed = clear_staged(path)
    config = _staged(config_path)
    _emit(
        {
            "config_path": path,
            "cleared": existed,
            "staged": False,
            "config": config.model_dump(mode="json"),
        }
    )


# ---------------------------------------------------------------------- monitor catalog + run


@monitor_app.command("list-signals")
def list_signals(catalog: CatalogOption = None, json_out: output.JsonOption = False) -> None:
    """Read-only signals the monitor can record (any entry of Signals.NamesGet works too)."""
    loaded = load_catalog(catalog or _settings().instrument.catalog_path)
    rows = catalog_listing(loaded, "signals")
    _emit({"catalog": loaded.source, "count": len(rows), "signals": rows})


@monitor_app.command("list-specs")
def list_specs(catalog: CatalogOption = None, json_out: output.JsonOption = False) -> None:
    """Settable specs whose changes the monitor records as actions, with units and limits."""
    loaded = load_catalog(catalog or _settings().instrument.catalog_path)
    rows = catalog_listing(loaded, "specs")
    _emit({"catalog": loaded.source, "count": len(rows), "specs": rows})


@monitor_app.command("run")
def monitor_run(
    config_path: ConfigPathOption = None,
    duration: Annotated[
        float | None,
        typer.Option("--duration", min=0, help="Stop after this many seconds (default: Ctrl-C)."),
    ] = None,
    max_samples: Annotated[
        int | None,
        typer.Option("--max-samples", min=1, max=MAX_SQL_INT, help="Stop after this many samples."),
    ] = None,
    host: Annotated[str | None, typer.Option("--host", help="Instrument address.")] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=1, max=65535, help="Instrument TCP port.")
    ] = None,
    catalog: CatalogOption = None,
    metrics_file: Annotated[
        Path | None,
        typer.Option(
            "--metrics-file", help="Write atomlab_trajectory_* Prometheus metrics here (textfile)."
        ),
    ] = None,
    json_out: output.JsonOption = False,
) -> None:
    """Record the staged config until --duration / --max-samples / Ctrl-C / SIGTERM.

    The staged run name is consumed when the run starts (so not even kill -9 leaves it staged);
    a run refused before it starts (bad input, no instrument) leaves it staged.
    """
    path = _config_path(config_path)
    settings = _settings()
    if duration is not None and not math.isfinite(duration):
        raise InvalidInputError(
            f"--duration {duration} is not a number of seconds; leave it out to record until "
            "Ctrl-C",
            field="duration",
            value=str(duration),
        )
    if host is not None:
        _check_host(host)
    if metrics_file is not None:
        _check_metrics_file(metrics_file)
    config = _staged(config_path)
    config.require_runnable()
    summary = _record(
        config,
        settings,
        duration,
        max_samples,
        host,
        port,
        catalog,
        on_start=lambda _run: clear_staged_run_name(path),  # consumed even if killed -9
        metrics_file=metrics_file,
    )
    payload = summary.to_dict()
    if summary.status == "interrupted":
        raise InterruptedRunError(_stopped_message(summary), **payload)
    if summary.status == "terminated":
        raise TerminatedError(_stopped_message(summary), **payload)
    _emit(payload)


def _check_host(host: str) -> None:
    try:
        ok = 0 < len(host) <= MAX_HOST_LENGTH and bool(host.encode("idna"))
    except UnicodeError:
        ok = False
    if not ok:
        raise InvalidInputError(
            f"--host {host[:60]!r} is not a host name or address (1-{MAX_HOST_LENGTH} characters, "
            "IDNA-encodable); pass e.g. --host 127.0.0.1",
            field="host",
            value=host[:60],
        )


def _check_metrics_file(path: Path) -> None:
    """Refuse an unwritable metrics textfile before recording starts (not after)."""
    try:
        is_dir = path.is_dir()
        parent_ok = path.parent.is_dir() or not path.parent.exists()
    except OSError as exc:
        raise _bad_metrics_file(path, exc.strerror or str(exc)) from None
    if is_dir:
        raise _bad_metrics_file(path, "it is a folder")
    if not parent_ok:
        raise _bad_metrics_file(path, "its folder is a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _bad_metrics_file(path, exc.strerror or str(exc)) from None
    if not os.access(path.parent, os.W_OK):
        raise _bad_metrics_file(path, "its folder is not writable")


def _bad_metrics_file(path: Path, reason: str) -> InvalidInputError:
    return InvalidInputError(
        f"cannot write --metrics-file {str(path)[:200]!r}: {reason}; pass a .prom file in a "
        "writable folder (nothing was recorded)",
        field="metrics_file",
        value=str(path)[:200],
    )


def _stopped_message(summary: RunSummary) -> str:
    return (
        f"run {summary.run_name!r} {summary.status} after {summary.duration_s:.1f} s; "
        f"{summary.samples} samples and {summary.actions} actions flushed to {summary.db_path}"
    )


def _record(
    config: MonitorConfig,
    settings: AtomlabSettings,
    duration: float | None,
    max_samples: int | None,
    host: str | None,
    port: int | None,
    catalog: Path | None,
    *,
    on_start: Callable[[RunInfo], None],
    metrics_file: Path | None,
) -> RunSummary:
    if duration is not None and max_samples is not None:
        raise typer.BadParameter("give --duration or --max-samples, not both")
    inst = settings.instrument
    entries = load_catalog(catalog or inst.catalog_path)
    with open_store(config.resolved_db_path(settings.home), read_only=False) as store:
        store.require_new_run_name(config.run_name)
        client = NanonisClient(
            host or inst.host,
            port or inst.port,
            connect_timeout_s=inst.connect_timeout_s,
            call_timeout_s=inst.call_timeout_s,
        )
        with client:
            client.connect()
            progress = _Progress(metrics_file)
            own = OwnWrites()
            own.follow_audit_log(inst.audit_log or settings.home / AUDIT_LOG_NAME, SystemClock())
            monitor = Monitor(
                InstrumentSource(client, entries),
                config,
                store,
                own_writes=own,
                on_start=on_start,
                on_record=progress,
            )
            sys.stderr.write(
                f"recording run {config.run_name!r} into {store.path} from {client.address}: "
                f"{len(config.signals)} signals, {len(config.specs)} specs every "
                f"{config.interval_s} s; Ctrl-C or SIGTERM stops it cleanly\n"
            )
            try:
                with _stop_on_signals(monitor):
                    return monitor.run(duration_s=duration, max_samples=max_samples)
            finally:
                progress.write_metrics()


class _Progress:
    """A line on stderr every ``PROGRESS_EVERY_S`` while recording, so people see it working;
    with a metrics file, the Prometheus textfile is rewritten at the same pace and at the end."""

    def __init__(self, metrics_file: Path | None) -> None:
        self.counts = {"samples": 0, "actions": 0, "errors": 0, "missed ticks": 0}
        self._last = time.monotonic()
        self.metrics_file = metrics_file
        self.metrics = MonitorMetrics(Metrics("trajectory", new_registry()))

    def write_metrics(self) -> None:
        if self.metrics_file is not None:
            self.metrics.metrics.write_textfile(self.metrics_file)

    def __call__(self, record: Record) -> None:
        self.metrics(record)
        key = {Sample: "samples", ActionEvent: "actions", MonitorError: "errors"}.get(
            type(record), "missed ticks"
        )
        self.counts[key] += record.count if isinstance(record, MissedTicks) else 1
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY_S:
            self._last = now
            sys.stderr.write(", ".join(f"{v} {k}" for k, v in self.counts.items()) + "\n")
            sys.stderr.flush()
            self.write_metrics()


@contextmanager
def _stop_on_signals(monitor: Monitor) -> Iterator[None]:
    """SIGINT/SIGTERM end the run cleanly (flush, mark, summary); a second SIGINT forces it."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and monitor.stopping:
            raise KeyboardInterrupt
        if signum == signal.SIGTERM:
            monitor.stop("terminated", "SIGTERM")
        else:
            monitor.stop("interrupted", "SIGINT (Ctrl-C)")

    previous: dict[signal.Signals, Any] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: the caller stops the monitor itself
        pass
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# ---------------------------------------------------------------------- queries


@runs_app.command("list")
def runs_list(db_path: DbPathOption = None, json_out: output.JsonOption = False) -> None:
    """Every recorded run, newest first."""
    path = _db_path(db_path)
    with open_store(path) as store:
        runs = [_run_row(run.to_dict()) for run in store.runs()]
    _emit({"db_path": path, "count": len(runs), "runs": runs})


def _run_row(run: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "name",
        "status",
        "started_at_utc",
        "ended_at_utc",
        "samples",
        "actions",
        "errors",
        "missed_ticks",
        "interval_s",
        "writer_alive",
    )
    return {key: run[key] for key in keep}


@runs_app.command("show")
def runs_show(
    db_path: DbPathOption = None,
    run_name: RunNameOption = None,
    json_out: output.JsonOption = False,
) -> None:
    """One run: config, instrument, counters, catalogs, the latest 100 errors and missed ticks."""
    path = _db_path(db_path)
    with open_store(path) as store:
        run = store.run(run_name)
        payload = {
            "db_path": path,
            "run": run.to_dict(),
            "signals": [ch.__dict__ for ch in store.catalog("signals", run.name)],
            "specs": [ch.__dict__ for ch in store.catalog("specs", run.name)],
            "errors": [e.__dict__ for e in store.errors(run.name)[-SHOW_LIMIT:]],
            "missed": [m.__dict__ for m in store.missed(run.name)[-SHOW_LIMIT:]],
        }
    _emit(payload)


@action_app.command("list")
def action_list(
    db_path: DbPathOption = None,
    run_name: RunNameOption = None,
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="Only spec-change or command actions (default: both)."),
    ] = None,
    json_out: output.JsonOption = False,
) -> None:
    """The run's actions: spec changes and guarded commands (the latest run unless --run-name).

    A command's reply payload is listed by field name only; `action show` prints it whole.
    """
    if kind is not None and kind not in ACTION_KINDS:
        raise InvalidInputError(
            f"--kind {kind[:40]!r} is not an action kind; use {' or '.join(ACTION_KINDS)}",
            field="kind",
            value=kind[:40],
        )
    path = _db_path(db_path)
    with open_store(path) as store:
        run = store.run(run_name)
        actions = [_listed(a) for a in store.actions(run.name, kind=kind)]
    _emit({"db_path": path, "run_name": run.name, "count": len(actions), "actions": actions})


def _listed(action: ActionEvent) -> dict[str, Any]:
    row = dict(action.__dict__)
    payload = row.pop("payload")
    row["payload_fields"] = sorted(payload) if payload is not None else None
    return row


@action_app.command("show")
def action_show(
    action_idx: Annotated[
        int, typer.Option("--action-idx", min=0, max=MAX_SQL_INT, help="Which action (0-based).")
    ],
    db_path: DbPathOption = None,
    run_name: RunNameOption = None,
    with_signal_window: Annotated[
        bool, typer.Option("--with-signal-window", help="Add the signals around the action.")
    ] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also draw the window to this PNG file.")
    ] = None,
    json_out: output.JsonOption = False,
) -> None:
    """One action; with its signal window (marked complete or partial) and an optional plot."""
    if plot is not None:
        check_plot_target(plot)  # a bad target or a missing extra fails before any work
    path = _db_path(db_path)
    with open_store(path) as store:
        run = store.run(run_name)
        action = store.action(action_idx, run.name)
        payload: dict[str, Any] = {"db_path": path, "run_name": run.name, "action": action.__dict__}
        if with_signal_window or plot is not None:
            window = store.signal_window(action.window_start_dt_s, action.window_end_dt_s, run.name)
            if with_signal_window:
                payload["signal_window"] = window.to_dict()
            if plot is not None:
                payload["plot"] = plot_window(window, action, plot)
    _emit(payload)


@app.command("export")
def export(
    run_name: Annotated[str, typer.Option("--run-name", help="Run to export.")],
    fmt: Annotated[str, typer.Option("--format", help=f"One of {', '.join(FORMATS)}.")] = "csv",
    db_path: DbPathOption = None,
    out: Annotated[
        Path, typer.Option("--out", help="Directory for the files (default: current).")
    ] = Path(),
    json_out: output.JsonOption = False,
) -> None:
    """Write the run's signals, specs and actions as CSV or Parquet (Parquet: the parquet extra)."""
    path = _db_path(db_path)
    with open_store(path) as store:
        files = export_run(store, run_name, fmt, out)
    _emit({"db_path": path, "run_name": run_name, "format": fmt, "files": files})
