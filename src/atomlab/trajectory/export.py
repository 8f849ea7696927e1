"""Files out of a recording: a run's tables as CSV or Parquet, and a figure of an action's window.

Every file is written to a temporary name and renamed into place, so an interrupted export never
leaves half a file behind::

    paths = export_run(store, "tip-conditioning-3", "parquet", out_dir)   # needs atomlab[parquet]
    plot_window(window, action, Path("action-7.png"))                    # needs atomlab[plot]
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal

from atomlab.core.errors import InvalidInputError, UnavailableError
from atomlab.trajectory.records import ActionEvent
from atomlab.trajectory.store import RunInfo, SignalWindow, TrajectoryStore

ExportFormat = Literal["csv", "parquet"]
FORMATS: tuple[str, ...] = ("csv", "parquet")
TABLES: tuple[str, ...] = ("signals", "specs", "actions")
PARQUET_BATCH_ROWS = 50_000
FILE_MODE = 0o644
TIMING = ("sample_idx", "segment_id", "time_utc", "dt_s", "scheduled_dt_s", "latency_s")
TIMING_UNITS = {"time_utc": "UTC", "dt_s": "s", "scheduled_dt_s": "s", "latency_s": "s"}


def export_run(store: TrajectoryStore, run_name: str, fmt: str, out_dir: Path) -> dict[str, Path]:
    """Write the run's signal samples, spec samples and actions, and a ``-meta.json`` with the
    run, the instrument and every column's unit; return ``{table: path}``.

    Every row carries ``time_utc``, the absolute UTC time (the run's ``started_at_utc`` +
    ``dt_s``). Parquet files hold it as a UTC timestamp (actions' ``detected_at_utc`` too), the
    unit of each column as field metadata and the run, instrument and units as schema metadata
    (``atomlab.run``, ``atomlab.instrument``, ``atomlab.units``, JSON); CSV holds ISO-8601 text.
    """
    if fmt not in FORMATS:
        raise InvalidInputError(
            f"unknown export format {fmt[:40]!r}; use one of {', '.join(FORMATS)}",
            field="format",
            value=fmt[:40],
        )
    run = store.run(run_name)
    _make_dir(out_dir, "out", "--out DIR")
    if fmt == "parquet":
        _require("pyarrow", "parquet")
    stem = _file_stem(run.name)
    anchor = _parse_utc(run.started_at_utc)
    meta = {
        "run": _run_meta(run),
        "instrument": run.instrument,
        "units": {},
    }
    paths: dict[str, Path] = {}
    for table in TABLES:
        path = out_dir / f"{stem}-{table}.{fmt}"
        columns, rows, units, types = _table(store, run.name, table, anchor)
        meta["units"][table] = units
        if fmt == "parquet":
            write = partial(
                _write_parquet, columns=columns, rows=rows, types=types, units=units, meta=meta
            )
        else:
            write = partial(_write_csv, columns=columns, rows=rows)
        _atomic(path, write)
        paths[table] = path
    meta_path = out_dir / f"{stem}-meta.json"
    body = json.dumps(meta, indent=2, ensure_ascii=False, default=str) + "\n"
    _atomic(meta_path, partial(_write_text, body=body))
    paths["meta"] = meta_path
    return paths


def _write_text(path: Path, *, body: str) -> None:
    path.write_text(body, encoding="utf-8")


def _run_meta(run: RunInfo) -> dict[str, Any]:
    keep = ("name", "id", "status", "started_at_utc", "ended_at_utc", "interval_s", "hostname")
    data = {key: getattr(run, key) for key in keep}
    data["atomlab_version"] = run.atomlab_version
    return data


def _table(
    store: TrajectoryStore, run_name: str, table: str, anchor: datetime
) -> tuple[list[str], Iterator[dict[str, Any]], dict[str, str], dict[str, str]]:
    """Columns, rows, each column's unit and its type (float, int, str, time, json)."""
    if table == "actions":
        columns = ["time_utc", *ActionEvent.__dataclass_fields__]
        actions = store.actions(run_name)
        value_type = (
            "float"
            if all(_is_number(v) or v is None for a in actions for v in (a.old_value, a.new_value))
            else "str"
        )
        types = {c: "float" for c in ("dt_s", "end_dt_s", "delta")}
        types.update(
            {
                "window_start_dt_s": "float",
                "window_end_dt_s": "float",
                "action_idx": "int",
                "sample_idx": "int",
                "steps": "int",
                "time_utc": "time",
                "detected_at_utc": "time",
                "old_value": value_type,
                "new_value": value_type,
                "args": "json",
                "payload": "json",
            }
        )
        units = {c: "s" for c in ("dt_s", "end_dt_s", "window_start_dt_s", "window_end_dt_s")}
        units.update({"time_utc": "UTC", "detected_at_utc": "UTC"})
        rows = (_action_row(a, anchor) for a in actions)
        return columns, rows, units, types
    channels = store.catalog(table, run_name)
    labels = [ch.label for ch in channels]
    units = {**TIMING_UNITS, **{ch.label: ch.unit for ch in channels}}
    types = {"sample_idx": "int", "segment_id": "int", "time_utc": "time"}
    types.update({c: "float" for c in ("dt_s", "scheduled_dt_s", "latency_s")})
    for ch in channels:
        types[ch.label] = "int" if ch.value_type in ("int", "bool") else "float"
    rows = (_with_time(row, anchor) for row in store.samples(table, run_name))
    return [*TIMING, *labels], rows, units, types


def _with_time(row: dict[str, Any], anchor: datetime) -> dict[str, Any]:
    row["time_utc"] = anchor + timedelta(seconds=row["dt_s"])
    return row


def _action_row(action: ActionEvent, anchor: datetime) -> dict[str, Any]:
    """One action as flat columns: a command's args and reply payload as JSON text."""
    row = asdict(action)
    row["time_utc"] = anchor + timedelta(seconds=action.dt_s)
    with contextlib.suppress(ValueError):
        row["detected_at_utc"] = _parse_utc(action.detected_at_utc)
    for key in ("args", "payload"):
        if row[key] is not None:
            row[key] = json.dumps(row[key], ensure_ascii=False)
    return row


def _parse_utc(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _csv_cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def _write_csv(path: Path, *, columns: list[str], rows: Iterator[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: _csv_cell(value) for key, value in row.items()})


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {
        "float": pa.float64(),
        "int": pa.int64(),
        "str": pa.string(),
        "json": pa.string(),
        "time": pa.timestamp("us", tz="UTC"),
    }.get(kind, pa.string())


def _write_parquet(
    path: Path,
    *,
    columns: list[str],
    rows: Iterator[dict[str, Any]],
    types: dict[str, str],
    units: dict[str, str],
    meta: dict[str, Any],
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [
        pa.field(
            name,
            _arrow_type(types.get(name, "str")),
            metadata={"unit": units[name]} if units.get(name) else None,
        )
        for name in columns
    ]
    schema = pa.schema(
        fields,
        metadata={
            "atomlab.run": json.dumps(meta["run"], default=str),
            "atomlab.instrument": json.dumps(meta["instrument"], default=str),
            "atomlab.units": json.dumps(units),
        },
    )
    with pq.ParquetWriter(str(path), schema) as writer:
        while True:
            chunk = [row for _, row in zip(range(PARQUET_BATCH_ROWS), rows, strict=False)]
            data = {name: [_arrow_value(row.get(name), types.get(name)) for row in chunk]
                    for name in columns}  # fmt: skip
            writer.write_table(pa.table(data, schema=schema))
            if len(chunk) < PARQUET_BATCH_ROWS:
                break


def _arrow_value(value: Any, kind: str | None) -> Any:
    if value is None:
        return None
    if kind == "str" and not isinstance(value, str):
        return json.dumps(value)
    if kind == "float" and isinstance(value, bool | int):
        return float(value)
    if kind == "int" and isinstance(value, float):
        return int(value) if value.is_integer() else None
    return value


def check_plot_target(path: Path) -> None:
    """Refuse a ``--plot`` target that cannot be written (exit 3) or a missing extra (exit 4)
    before any work is done; matplotlib itself is only imported to draw."""
    _require_spec("matplotlib", "plot")
    try:
        is_dir = path.is_dir()
    except OSError as exc:
        raise _bad_plot(path, exc.strerror or str(exc)) from None
    if is_dir:
        raise _bad_plot(path, "it is a folder")
    _make_dir(path.parent, "plot", "--plot FILE.png")


def _bad_plot(path: Path, reason: str) -> InvalidInputError:
    return InvalidInputError(
        f"cannot write the plot to {str(path)[:200]!r}: {reason}; pass --plot FILE.png",
        field="plot",
        value=str(path)[:200],
    )


def plot_window(window: SignalWindow, action: ActionEvent, path: Path, *, title: str = "") -> Path:
    """A PNG with one panel per signal over the window and the action marked; returns ``path``.

    Uses matplotlib's object API with the Agg canvas (no ``pyplot``, no GUI backend), which
    keeps the import to what drawing a PNG needs.
    """
    check_plot_target(path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = list(window.labels) or ["(no signals)"]
    fig = Figure(figsize=(8, 1.6 * len(labels) + 1))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(labels), 1, sharex=True, squeeze=False)
    for ax, label in zip(axes[:, 0], labels, strict=True):
        values = window.values.get(label, [])
        ax.plot(window.dt_s, values, lw=1)
        unit = window.units.get(label, "")
        ax.set_ylabel(f"{label}\n[{unit}]" if unit else label, fontsize=8)
        ax.axvspan(action.dt_s, max(action.end_dt_s, action.dt_s), color="tab:red", alpha=0.15)
        ax.axvline(action.dt_s, color="tab:red", lw=1)
    axes[-1, 0].set_xlabel("dt_s (s since the run start)")
    state = "complete" if window.complete else f"partial: {window.partial_reason}"
    what = (
        f"{action.command} {action.args or {}}"
        if action.kind == "command"
        else f"{action.spec_label} {action.old_value} -> {action.new_value}"
    )
    heading = title or f"action {action.action_idx}: {what} ({action.source}), window {state}"
    fig.suptitle(heading, fontsize=9)
    fig.tight_layout()
    _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path


def _make_dir(folder: Path, field: str, fix: str) -> None:
    """Create ``folder`` (and parents) or say which option to fix (exit 3, not a traceback)."""
    shown = str(folder) if len(str(folder)) <= 200 else str(folder)[:200] + "..."
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write into {shown!r} ({exc.strerror or exc}); pass {fix} in a writable folder",
            field=field,
            value=shown,
        ) from None


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(FILE_MODE)  # mkstemp makes 0600; an export is an ordinary file
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _require_spec(module: str, extra: str) -> None:
    """Like :func:`_require` without importing the module (a cheap check before the work)."""
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found or sys.modules.get(module, False) is None:
        raise UnavailableError(
            f"this needs the optional package {module!r}; install it with "
            f"`pip install 'atomlab[{extra}]'` (or `uv sync --extra {extra}`)",
            extra=extra,
        )


def _require(module: str, extra: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise UnavailableError(
            f"this needs the optional package {module!r}; install it with "
            f"`pip install 'atomlab[{extra}]'` (or `uv sync --extra {extra}`)",
            extra=extra,
        ) from None


def _file_stem(run_name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", run_name).strip("._") or "run"
