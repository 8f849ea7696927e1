"""Following append-only JSONL files (a run's telemetry and metrics) from a byte offset.

A writer appends whole lines with one ``write()``; a reader may still catch a line half-written,
so the offset only moves past complete lines and a torn last line is read again next time.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MAX_READ_BYTES = 8 * 1024 * 1024
"""Most bytes read per call: a huge backlog arrives over several ticks, never in one answer."""
METRIC_NAME = re.compile(r"[A-Za-z0-9_./-]{1,128}")


def read_new(
    path: Path, offset: int, *, limit: int = MAX_READ_BYTES
) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of the complete lines after ``offset``, and the offset to read from next.

    A line that is not a JSON object is skipped (a damaged file costs that line only). A file
    shorter than ``offset`` was replaced: reading starts again from 0.
    """
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, 2)
            if size < offset:
                offset = 0
            handle.seek(offset)
            data = handle.read(min(limit, size - offset))
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    records: list[dict[str, Any]] = []
    for line in data[: end + 1].splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            records.append(item)
    return records, offset + end + 1


def metric_points(records: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``metrics.jsonl`` records (contract C1) grouped by name, each ``{"step", "value", ...}``.

    A record that breaks C1 (a bad name, a non-finite value, a negative or missing step) is
    skipped: a file is input, and one bad line must not hide the rest.
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        name, value, step = record.get("name"), record.get("value"), record.get("step")
        if not isinstance(name, str) or not METRIC_NAME.fullmatch(name):
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if not math.isfinite(float(value)):
            continue
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            continue
        out.setdefault(name, []).append(
            {"step": step, "value": float(value), "dt_s": record.get("dt_s")}
        )
    return out
