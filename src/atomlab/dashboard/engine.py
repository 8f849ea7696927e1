"""The Engine page: the LLM engine's runs with items done out of the total, rate and errors.

Runs are found in the registry ``engine run`` keeps in the data home (``known_runs``); each
one's journal is read read-only (``run_progress``). The total is the input's item count (its
non-blank lines, counted once per input version). The live rate is measured by the stream from
successive readings (items per second over the last readings); a finished run shows its
average over its journal's life.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from atomlab.dashboard.app import Dashboard, DashboardDep
from atomlab.dashboard.live import event, stream
from atomlab.dashboard.shell import esc, notice, page, table
from atomlab.engine import RunRef, count_items, known_runs, run_progress
from atomlab.views import engine_progress_figure

router = APIRouter(tags=["engine"])

RUNS_SHOWN = 50
RATE_WINDOW = 10
"""Readings the live rate spans (10 s at one reading a second)."""
COLUMNS = ("pipeline", "output", "status", "done", "ok", "rejected", "rate", "started", "errors")


class EngineView:
    """The engine runs one viewer sees, with the readings its live rate is measured from."""

    def __init__(self, svc: Dashboard) -> None:
        self.svc = svc
        self.totals: dict[tuple[str, int, int], int | None] = {}
        self.readings: dict[str, deque[tuple[float, int]]] = {}
        self.rows: list[dict[str, Any]] = []
        self.shown: list[tuple[Any, ...]] | None = None

    def _total(self, path: Path) -> int | None:
        try:
            stat = path.stat()
        except OSError:
            return None
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if key not in self.totals:
            self.totals[key] = count_items(path)
        return self.totals[key]

    def _rate(self, ref: RunRef, progress: dict[str, Any], now: float) -> float | None:
        readings = self.readings.setdefault(str(ref.output), deque(maxlen=RATE_WINDOW))
        readings.append((now, int(progress["items_finished"])))
        if progress["status"] == "running":
            if len(readings) >= 2 and readings[-1][0] > readings[0][0]:
                (t0, n0), (t1, n1) = readings[0], readings[-1]
                return (n1 - n0) / (t1 - t0)
            return None
        started = _epoch(ref.started_at)
        updated = progress.get("updated_at_epoch")
        if started is None or updated is None or float(updated) <= started:
            return None
        return int(progress["items_finished"]) / (float(updated) - started)

    def refresh(self) -> bool:
        """Read every known run's progress; True when something shown changed."""
        now = time.monotonic()
        rows = []
        for ref in known_runs(self.svc.config.home, limit=RUNS_SHOWN):
            progress = run_progress(ref.output)
            rows.append(
                {
                    **ref.to_dict(),
                    **progress,
                    "name": f"{ref.pipeline} → {ref.output.name}",
                    "items_total": self._total(ref.input),
                    "rate": self._rate(ref, progress, now),
                }
            )
        self.rows = rows
        shown = [
            (r["output"], r["status"], r["items_finished"], r["rejected"], r["items_total"])
            for r in rows
        ]
        if shown == self.shown:
            return False
        self.shown = shown
        return True

    def figure(self) -> dict[str, Any]:
        return engine_progress_figure(self.rows, title="items per run")

    def table_html(self) -> str:
        return table(
            list(COLUMNS),
            [_cells(r) for r in self.rows],
            table_id="engine-runs",
            empty="no engine runs recorded in this data home yet",
        )


def _epoch(text: str) -> float | None:
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    return None


def _cells(r: dict[str, Any]) -> list[str]:
    total = r["items_total"]
    done = f"{r['items_finished']}/{total if total is not None else '?'}"
    rate = r["rate"]
    rate_text = (
        "" if rate is None else f"{rate:.2f}/s" + ("" if r["status"] == "running" else " avg")
    )
    errors = "; ".join(
        f"{x.get('id')}@{x.get('stage')}: {(x.get('error') or {}).get('message', '')}"
        for x in r.get("recent_rejects") or []
    )
    return [
        esc(r["pipeline"]),
        f'<code title="{esc(r["output"])}">{esc(Path(r["output"]).name)}</code>',
        f'<span class="status {esc(r["status"])}">{esc(r["status"])}</span>',
        esc(done),
        esc(r["ok"]),
        esc(r["rejected"]),
        esc(rate_text),
        esc(str(r["started_at"])[:19].replace("T", " ")),
        f'<span class="errors">{esc(errors)}</span>',
    ]


@router.get("/engine", response_class=HTMLResponse, include_in_schema=False)
def engine_page(svc: DashboardDep) -> HTMLResponse:
    """Engine runs: items done/total, ok, rejected, rate, recent errors."""
    view = EngineView(svc)
    view.refresh()
    body = (
        f'<div id="engine-table">{view.table_html()}</div>'
        '<div id="engine-figure" class="figure"></div>'
    )
    if not view.rows:
        body += notice(
            "Runs appear here once `atomlab engine run` has been used with this data home "
            f"({svc.config.home})."
        )
    data = {"stream": "/api/engine/stream", "figure": view.figure()}
    return page(title="Engine", active="engine", body=body, data=data)


@router.get("/api/engine/runs")
def engine_runs(svc: DashboardDep) -> dict[str, Any]:
    """Every known engine run with its progress."""
    view = EngineView(svc)
    view.refresh()
    return {"runs": view.rows}


@router.get("/api/engine/stream")
def engine_stream(request: Request, svc: DashboardDep) -> EventSourceResponse:
    """``engine`` events (table and figure) whenever a run's progress changed."""
    view = EngineView(svc)

    def poll() -> list[ServerSentEvent]:
        if not view.refresh():
            return []
        return [event("engine", {"table": view.table_html(), "figure": view.figure()})]

    return stream(
        request,
        "engine",
        poll,
        tick_s=svc.config.slow_tick_s,
        clock=svc.clock,
        stats=svc.streams,
        stopping=svc.stopping,
    )
