"""A run's data as tables for analysis: steps, telemetry and metrics as CSV or Parquet.

    export_tables(record, "parquet", Path("out"))   # {"steps": ..., "telemetry": ..., ...}

Times are absolute UTC (ISO-8601 text in CSV, UTC timestamps in Parquet); each Parquet column
carries its unit as field metadata and the file the run, its params and the units as schema
metadata (``atomlab.run``, ``atomlab.params``, ``atomlab.units``, JSON). A ``<run>-meta.json``
beside the tables holds the same for CSV readers. Files are written under a temporary name and
renamed, never left half-written. Parquet needs ``pyarrow`` (the ``parquet`` extra).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from atomlab.core.errors import InvalidInputError, UnavailableError
from atomlab.tracking.metrics import read_metrics
from atomlab.tracking.models import RunRecord
from atomlab.tracking.store import TELEMETRY_FILE, iter_jsonl

TABLE_FORMATS: tuple[str, ...] = ("csv", "parquet")
FILE_MODE = 0o644
STEP_COLUMNS = (
    "order",
    "name",
    "title",
    "status",
    "started_at",
    "ended_at",
    "duration_s",
    "units_done",
    "units_total",
    "exit_code",
    "reason",
)
TELEMETRY_FIRST = ("t", "dt_s", "step")
METRIC_COLUMNS = ("name", "step", "value", "at", "dt_s")
_SUFFIX_UNITS = (("_mb_s", "MB/s"), ("_pct", "%"), ("_mb", "MB"), ("_c", "°C"), ("_w", "W"))
_TIME_COLUMNS = {"t", "at", "started_at", "ended_at"}


def export_tables(record: RunRecord, fmt: str, out_dir: Path) -> dict[str, Path]:
    """Write ``steps``, ``telemetry`` and ``metrics`` tables and a meta file into ``out_dir``."""
    if fmt not in TABLE_FORMATS:
        raise InvalidInputError(
            f"--format {fmt[:40]!r} is not a table format; use csv or parquet",
            field="format",
            value=fmt[:40],
        )
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UnavailableError(
                "Parquet export needs pyarrow; install it with `pip install 'atomlab[parquet]'`",
                extra="parquet",
            ) from None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write into {str(out_dir)[:200]!r} ({exc.strerror or exc}); pass --output a "
            "writable folder",
            field="output",
            value=str(out_dir)[:200],
        ) from None
    run_dir = Path(record.run_dir)
    samples = list(iter_jsonl(run_dir / TELEMETRY_FILE))
    tables = {
        "steps": (list(STEP_COLUMNS), [s.model_dump(mode="json") for s in record.steps]),
        "telemetry": _telemetry(samples),
        "metrics": (
            list(METRIC_COLUMNS),
            [
                {"name": name, **point.to_dict()}
                for name, points in sorted(read_metrics(run_dir).items())
                for point in points
            ],
        ),
    }
    meta: dict[str, Any] = {
        "run": _run_meta(record),
        "params": record.params,
        "artifacts": [a.model_dump(mode="json") for a in record.artifacts],
        "units": {name: _units(columns) for name, (columns, _) in tables.items()},
    }
    paths: dict[str, Path] = {}
    for name, (columns, rows) in tables.items():
        path = out_dir / f"{record.run_id}-{name}.{fmt}"
        units = meta["units"][name]
        if fmt == "parquet":
            writer = partial(_write_parquet, columns=columns, rows=rows, units=units, meta=meta)
        else:
            writer = partial(_write_csv, columns=columns, rows=rows)
        _atomic(path, writer)
        paths[name] = path
    meta_path = out_dir / f"{record.run_id}-meta.json"
    _atomic(meta_path, partial(_write_json, data=meta))
    paths["meta"] = meta_path
    return paths


def _run_meta(record: RunRecord) -> dict[str, Any]:
    data = record.model_dump(mode="json", exclude={"steps", "params", "artifacts", "eta"})
    data.pop("recommendations", None)
    return data


def _telemetry(samples: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """One flat row per sample; each GPU's values as ``gpu<i>_<key>`` columns."""
    rows: list[dict[str, Any]] = []
    seen: dict[str, None] = {}
    for sample in samples:
        row: dict[str, Any] = {}
        for key, value in sample.items():
            if key == "gpus" and isinstance(value, list):
                for gpu in value:
                    if not isinstance(gpu, Mapping):
                        continue
                    index = gpu.get("index", 0)
                    for gkey, gvalue in gpu.items():
                        if isinstance(gvalue, int | float) and gkey != "index":
                            row[f"gpu{index}_{gkey}"] = gvalue
            elif isinstance(value, str | int | float) or value is None:
                row[key] = value
        rows.append(row)
        for key in row:
            seen.setdefault(key, None)
    rest = [k for k in seen if k not in TELEMETRY_FIRST]
    columns = [k for k in TELEMETRY_FIRST if k in seen or not rows] + rest
    return columns, rows


def _units(columns: Iterable[str]) -> dict[str, str]:
    units: dict[str, str] = {}
    for column in columns:
        if column in _TIME_COLUMNS:
            units[column] = "UTC"
        elif column.endswith("_s") and not column.endswith("_mb_s"):
            units[column] = "s"
        else:
            for suffix, unit in _SUFFIX_UNITS:
                if column.endswith(suffix):
                    units[column] = unit
                    break
    return units


def _write_csv(path: Path, *, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _write_parquet(
    path: Path,
    *,
    columns: list[str],
    rows: list[dict[str, Any]],
    units: dict[str, str],
    meta: dict[str, Any],
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = []
    data: dict[str, list[Any]] = {}
    for name in columns:
        values = [row.get(name) for row in rows]
        if name in _TIME_COLUMNS:
            kind = pa.timestamp("us", tz="UTC")
            values = [_timestamp(v) for v in values]
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values if v is not None):
            kind = pa.int64() if any(v is not None for v in values) else pa.string()
        elif all(isinstance(v, int | float) for v in values if v is not None):
            kind = pa.float64()
            values = [None if v is None else float(v) for v in values]
        else:
            kind = pa.string()
            values = [None if v is None else str(v) for v in values]
        unit = units.get(name)
        fields.append(pa.field(name, kind, metadata={"unit": unit} if unit else None))
        data[name] = values
    schema = pa.schema(
        fields,
        metadata={
            "atomlab.run": json.dumps(meta["run"]),
            "atomlab.params": json.dumps(meta["params"]),
            "atomlab.units": json.dumps(units),
        },
    )
    pq.write_table(pa.table(data, schema=schema), str(path))


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    with contextlib.suppress(ValueError):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None


def _write_json(path: Path, *, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(FILE_MODE)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["TABLE_FORMATS", "export_tables"]
