"""Files out of a recording: a run's tables as CSV or Parquet, and a figure of an action's window.

Every file is written to a temporary name and renamed into place, so an interrupted export never
leaves half a file behind::

    paths = export_run(store, "tip-conditioning-3", "parquet", out_dir)   # needs atomlab[parquet]
    plot_window(window, action, Path("action-7.png"))                    # needs atomlab[plot]
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Literal

from atomlab.core.errors import InvalidInputError, UnavailableError
from atomlab.trajectory.records import ActionEvent
from atomlab.trajectory.store import SignalWindow, TrajectoryStore

ExportFormat = Literal["csv", "parquet"]
FORMATS: tuple[str, ...] = ("csv", "parquet")
TABLES: tuple[str, ...] = ("signals", "specs", "actions")
PARQUET_BATCH_ROWS = 50_000
FILE_MODE = 0o644


def export_run(store: TrajectoryStore, run_name: str, fmt: str, out_dir: Path) -> dict[str, Path]:
    """Write the run's signal samples, spec samples and actions; return ``{table: path}``."""
    if fmt not in FORMATS:
        raise InvalidInputError(
            f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}",
            field="format",
            value=fmt,
        )
    run = store.run(run_name)
    _make_dir(out_dir, "out", "--out DIR")
    writer = _write_parquet if fmt == "parquet" else _write_csv
    if fmt == "parquet":
        _require("pyarrow", "parquet")
    stem = _file_stem(run.name)
    paths: dict[str, Path] = {}
    for table in TABLES:
        path = out_dir / f"{stem}-{table}.{fmt}"
        columns, rows = _table(store, run.name, table)
        _atomic(path, partial(writer, columns=columns, rows=rows))
        paths[table] = path
    return paths


def _table(
    store: TrajectoryStore, run_name: str, table: str
) -> tuple[list[str], Iterator[dict[str, Any]]]:
    if table == "actions":
        columns = list(ActionEvent.__dataclass_fields__)
        return columns, (_action_row(a) for a in store.actions(run_name))
    labels = [ch.label for ch in store.catalog(table, run_name)]
    columns = ["sample_idx", "segment_id", "dt_s", "scheduled_dt_s", "latency_s", *labels]
    return columns, store.samples(table, run_name)


def _action_row(action: ActionEvent) -> dict[str, Any]:
    """One action as flat columns: a command's args and reply payload as JSON text."""
    row = asdict(action)
    for key in ("args", "payload"):
        if row[key] is not None:
            row[key] = json.dumps(row[key], ensure_ascii=False)
    return row


def _write_csv(path: Path, *, columns: list[str], rows: Iterator[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


def _write_parquet(path: Path, *, columns: list[str], rows: Iterator[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    schema = None
    try:
        while True:
            chunk = [row for _, row in zip(range(PARQUET_BATCH_ROWS), rows, strict=False)]
            if not chunk and writer is not None:
                break
            data = {name: [row.get(name) for row in chunk] for name in columns}
            table = pa.table(data) if schema is None else pa.table(data, schema=schema)
            if writer is None:
                schema = table.schema
                writer = pq.ParquetWriter(str(path), schema)
            writer.write_table(table)
            if len(chunk) < PARQUET_BATCH_ROWS:
                break
    finally:
        if writer is not None:
            writer.close()


def plot_window(window: SignalWindow, action: ActionEvent, path: Path, *, title: str = "") -> Path:
    """A PNG with one panel per signal over the window and the action marked; returns ``path``."""
    _require("matplotlib", "plot")
    _make_dir(path.parent, "plot", "--plot FILE.png")
    if path.is_dir():
        raise InvalidInputError(
            f"cannot write the plot to {str(path)!r}: it is a folder; pass --plot FILE.png",
            field="plot",
            value=str(path),
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(window.labels) or ["(no signals)"]
    fig, axes = plt.subplots(
        len(labels), 1, sharex=True, figsize=(8, 1.6 * len(labels) + 1), squeeze=False
    )
    for ax, label in zip(axes[:, 0], labels, strict=True):
        values = window.values.get(label, [])
        ax.plot(window.dt_s, values, lw=1)
        unit = window.units.get(label, "")
        ax.set_ylabel(f"{label}\n[{unit}]" if unit else label, fontsize=8)
        ax.axvspan(action.dt_s, max(action.end_dt_s, action.dt_s), color="tab:red", alpha=0.15)
        ax.axvline(action.dt_s, color="tab:red", lw=1)
    axes[-1, 0].set_xlabel("dt_s (s since the run start)")
    state = "complete" if window.complete else f"partial: {window.partial_reason}"
    heading = title or (
        f"action {action.action_idx}: {action.spec_label} {action.old_value} -> "
        f"{action.new_value} ({action.source}), window {state}"
    )
    fig.suptitle(heading, fontsize=9)
    fig.tight_layout()
    try:
        _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
    return path


def _make_dir(folder: Path, field: str, fix: str) -> None:
    """Create ``folder`` (and parents) or say which option to fix (exit 3, not a traceback)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write into {str(folder)!r} ({exc.strerror or exc}); pass {fix} in a "
            "writable folder",
            field=field,
            value=str(folder),
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
