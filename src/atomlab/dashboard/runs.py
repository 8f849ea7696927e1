"""The Runs pages: the tracked runs with filters kept in the URL, one run live (step X/N, ETA,
telemetry, logged metrics), and several runs' metrics compared on one chart.

The list reads only the history index (never a manifest), so 1,000 rows are one query and one
string. Live views follow ``run.json`` and the append-only ``telemetry.jsonl`` and
``metrics.jsonl`` from byte offsets; the figures grow with ``Plotly.extendTraces``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from atomlab.core.errors import InvalidInputError, NotFoundError
from atomlab.dashboard.app import Dashboard, DashboardDep
from atomlab.dashboard.jsonl_tail import metric_points, read_new
from atomlab.dashboard.live import event, stream
from atomlab.dashboard.shell import esc, notice, page, table
from atomlab.tracking import (
    RunIndex,
    RunRecord,
    RunStatus,
    RunSummary,
    format_duration,
    parse_since,
    read_metrics,
    report,
    runs_root,
)
from atomlab.views import Figure, metric_curves, point_pairs, telemetry_figure, telemetry_value

router = APIRouter(tags=["runs"])

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_COMPARED = 12
MAX_TELEMETRY_KEPT = 20_000
"""Telemetry samples a live chart keeps; beyond it every other one is dropped (a day at 1 Hz
is 86,400 samples; the chart is a few hundred pixels wide)."""
TELEMETRY_FILE = "telemetry.jsonl"
METRICS_FILE = "metrics.jsonl"
STATUSES = tuple(s.value for s in RunStatus)
ACTIVE = tuple(s.value for s in RunStatus if s.is_active)
LIST_COLUMNS = ("", "run", "pipeline", "status", "steps", "now", "created (UTC)", "time", "ETA")

StatusFilter = Annotated[
    list[str] | None, Query(max_length=len(STATUSES), description="Statuses (repeatable).")
]
PipelineFilter = Annotated[str | None, Query(max_length=200)]
SinceFilter = Annotated[
    str | None, Query(max_length=64, description="ISO date/time or an age: 30m, 2h, 7d.")
]
LimitFilter = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
RunIds = Annotated[list[str], Query(min_length=1, max_length=MAX_COMPARED)]


def _filters(
    status: list[str] | None, pipeline: str | None, since: str | None
) -> tuple[list[str] | None, str | None, str | None]:
    """The filters checked, with empty form fields read as "not given" (a form sends them)."""
    wanted = [value for value in status or [] if value] or None
    for value in wanted or []:
        if value not in STATUSES:
            raise InvalidInputError(
                f"status={value!r} is not a run status; use one of {', '.join(STATUSES)}",
                field="status",
                value=value,
            )
    since = since.strip() if since and since.strip() else None
    if since is not None:
        parse_since(since)  # raises InvalidInputError naming `since`
    return wanted, pipeline or None, since


def _index(svc: Dashboard) -> RunIndex | None:
    """The history index, or None when this home has never tracked a run (nothing is created)."""
    if not runs_root(svc.config.home).is_dir():
        return None
    return RunIndex.open(svc.config.home)


# ------------------------------------------------------------------------------ the list


def _row_cells(r: RunSummary) -> list[str]:
    steps = f"{r.steps_done}/{r.steps_total}"
    status = r.status
    return [
        f'<input type="checkbox" class="pick" value="{esc(r.run_id)}" aria-label="compare">',
        f'<a href="/runs/{esc(quote(r.run_id, safe=""))}">{esc(r.run_id)}</a>',
        esc(r.pipeline),
        f'<span class="status {esc(status)}">{esc(status)}</span>',
        esc(steps),
        esc(r.current_step or ""),
        esc(r.created_at[:19].replace("T", " ")),
        esc(format_duration(r.duration_s)),
        esc(format_duration(r.eta_s) if r.status in ACTIVE else ""),
    ]


def row_html(r: RunSummary) -> str:
    """One row of the runs table (the live stream sends rows in this same form)."""
    cells = "".join(f"<td>{c}</td>" for c in _row_cells(r))
    return f'<tr data-run="{esc(r.run_id)}" data-created="{esc(r.created_at)}">{cells}</tr>'


@router.get("/runs", response_class=HTMLResponse, include_in_schema=False)
def runs_page(
    svc: DashboardDep,
    status: StatusFilter = None,
    pipeline: PipelineFilter = None,
    since: SinceFilter = None,
    limit: LimitFilter = DEFAULT_LIMIT,
) -> HTMLResponse:
    """Tracked runs, newest first, filtered by status, pipeline and age (all in the URL)."""
    status, pipeline, since = _filters(status, pipeline, since)
    index = _index(svc)
    rows: list[RunSummary] = []
    pipelines: list[str] = []
    if index is not None:
        with index:
            rows = index.list_runs(status=status, since=since, pipeline=pipeline, limit=limit)
            pipelines = index.pipelines()
    newest = rows[0].created_at if rows else None
    query = urlencode(
        [("status", s) for s in status or []]
        + [(k, v) for k, v in (("pipeline", pipeline), ("since", since), ("newest", newest)) if v]
    )
    body = _filters_form(status or [], pipeline, since, limit, pipelines)
    body += (
        '<p class="toolbar"><a id="compare" class="button disabled" href="/runs/compare">'
        "compare selected</a> <span class=muted>tick two or more runs</span> · "
        f'<span id="shown">{len(rows)}</span> runs shown</p>'
    )
    body += _runs_table(rows)
    if index is None:
        body += notice(f"No runs tracked in {svc.config.home} yet (atomlab runs exec ...).")
    data = {
        "stream": "/api/runs/stream" + (f"?{query}" if query else ""),
        "limit": limit,
    }
    return page(title="Runs", active="runs", body=body, data=data, charts=False)


def _runs_table(rows: Sequence[RunSummary]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in LIST_COLUMNS)
    body = "".join(row_html(r) for r in rows)
    empty = "" if rows else '<p class="empty" id="runs-empty">no runs match</p>'
    return f'<table id="runs"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{empty}'


def _filters_form(
    status: list[str], pipeline: str | None, since: str | None, limit: int, pipelines: list[str]
) -> str:
    boxes = "".join(
        f'<label><input type="checkbox" name="status" value="{s}"'
        f"{' checked' if s in status else ''}> {s}</label>"
        for s in STATUSES
    )
    options = '<option value="">any</option>' + "".join(
        f"<option{' selected' if p == pipeline else ''}>{esc(p)}</option>" for p in pipelines
    )
    return (
        '<form method="get" action="/runs" class="filters" id="run-filters">'
        f"<fieldset><legend>status</legend>{boxes}</fieldset>"
        f'<label>pipeline <select name="pipeline">{options}</select></label>'
        f'<label>since <input name="since" value="{esc(since or "")}" placeholder="7d" size="8">'
        f'</label><label>at most <input name="limit" type="number" min="1" max="{MAX_LIMIT}" '
        f'value="{limit}"></label><button type="submit">filter</button>'
        ' <a href="/runs">clear</a></form>'
    )


@router.get("/api/runs")
def list_runs_api(
    svc: DashboardDep,
    status: StatusFilter = None,
    pipeline: PipelineFilter = None,
    since: SinceFilter = None,
    limit: LimitFilter = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """Runs from the index, newest first, filtered as on the page."""
    status, pipeline, since = _filters(status, pipeline, since)
    index = _index(svc)
    if index is None:
        return {"runs": []}
    with index:
        rows = index.list_runs(status=status, since=since, pipeline=pipeline, limit=limit)
    return {"runs": [r.to_dict() for r in rows]}


@router.get("/api/runs/stream")
def runs_stream(
    request: Request,
    svc: DashboardDep,
    status: StatusFilter = None,
    pipeline: PipelineFilter = None,
    since: SinceFilter = None,
    newest: Annotated[
        str | None, Query(max_length=64, description="created_at of the newest row shown.")
    ] = None,
) -> EventSourceResponse:
    """Rows that changed (``rows``: run id and its table row): runs going on, new runs, runs
    that just ended. Reads the active and the newest rows of the index, never the whole of it.
    The first answer repeats the rows the page already has (it may have changed meanwhile)."""
    status, pipeline, since = _filters(status, pipeline, since)
    if newest is not None:
        try:
            parse_since(newest)
        except InvalidInputError:
            raise InvalidInputError(
                f"newest={newest!r} is not a time; it is the created_at of a run",
                field="newest",
                value=newest,
            ) from None
    watcher = _ListWatcher(svc, status, pipeline, since, newest)
    return stream(
        request,
        "runs",
        watcher.poll,
        tick_s=svc.config.slow_tick_s,
        clock=svc.clock,
        stats=svc.streams,
        stopping=svc.stopping,
        on_close=watcher.close,
    )


class _ListWatcher:
    """What one runs page shows: active runs, runs newer than the newest seen, and runs that
    were active at the last tick (they just ended). Rows whose state changed are sent."""

    def __init__(
        self,
        svc: Dashboard,
        status: list[str] | None,
        pipeline: str | None,
        since: str | None,
        newest: str | None,
    ) -> None:
        self.svc = svc
        self.status, self.pipeline, self.since = status, pipeline, since
        self.index: RunIndex | None = None
        self.seen: dict[str, tuple[Any, ...]] = {}
        self.active: set[str] = set()
        self.newest = newest

    def close(self) -> None:
        if self.index is not None:
            self.index.close()

    def _matches(self, r: RunSummary) -> bool:
        wanted = not self.status or r.status in self.status
        return wanted and (self.pipeline is None or r.pipeline == self.pipeline)

    def _candidates(self, index: RunIndex) -> dict[str, RunSummary]:
        found = {
            r.run_id: r
            for r in index.list_runs(
                status=list(ACTIVE), pipeline=self.pipeline, since=self.since, limit=MAX_LIMIT
            )
        }
        newer_than = self.newest or self.since
        if newer_than is not None:
            for r in index.list_runs(since=newer_than, pipeline=self.pipeline, limit=MAX_LIMIT):
                found[r.run_id] = r
        for run_id in self.active - set(found):
            try:
                found[run_id] = index.resolve(run_id)  # it just ended
            except (NotFoundError, InvalidInputError):
                continue  # pruned meanwhile
        return found

    def poll(self) -> list[ServerSentEvent]:
        if self.index is None:
            self.index = _index(self.svc)
            if self.index is None:
                return []
        index = self.index
        candidates = self._candidates(index)
        changed = []
        for r in candidates.values():
            signature = (
                r.status,
                r.steps_done,
                r.steps_total,
                r.current_step,
                r.heartbeat_at,
                r.eta_s,
                r.duration_s,
            )
            if self.seen.get(r.run_id) != signature:
                self.seen[r.run_id] = signature
                if self._matches(r):
                    changed.append(r)
            if self.newest is None or r.created_at > self.newest:
                self.newest = r.created_at
        self.active = {r.run_id for r in candidates.values() if r.status in ACTIVE}
        if not changed:
            return []
        changed.sort(key=lambda r: r.created_at)
        rows = [
            {"run_id": r.run_id, "created_at": r.created_at, "html": row_html(r)} for r in changed
        ]
        return [event("rows", rows)]


# ------------------------------------------------------------------------------ one run


def _load(svc: Dashboard, run_id: str) -> tuple[RunRecord, dict[str, Any]]:
    index = _index(svc)
    if index is None:
        raise NotFoundError(f"no run {run_id!r}: no runs tracked in {svc.config.home}", run=run_id)
    with index:
        record = index.load(run_id)
        view = report.live_view(record, index)
    return record, view


def live_html(view: dict[str, Any], stale_after_s: float) -> str:
    """The run's headline and step table (replaced whole at every live update)."""
    status = str(view["status"])
    parts = [
        f'<p class="headline"><span class="status {esc(status)}">{esc(status)}</span> '
        f"{view['steps_done']}/{view['steps_total']} steps · elapsed "
        f"{esc(format_duration(view.get('elapsed_s')))}"
    ]
    if view.get("current_step"):
        eta = view.get("eta") or {}
        parts.append(
            f' · <b id="step-position">Step {view["position"]}/{view["steps_total"]}: '
            f'{esc(view["current_step"])}</b> · ETA <b id="eta">'
            f"{esc(format_duration(eta.get('remaining_s')))}</b> "
            f"({esc(format_duration(eta.get('low_s')))}–{esc(format_duration(eta.get('high_s')))}, "
            f"{esc(eta.get('basis', 'none'))})"
        )
    age = view.get("heartbeat_age_s")
    if status in ACTIVE and age is not None and age > stale_after_s:
        parts.append(
            f' <span class="warn">no heartbeat for {esc(format_duration(age))}: crashed? '
            "(atomlab runs list marks it)</span>"
        )
    parts.append("</p>")
    if view.get("reason"):
        parts.append(notice(f"reason: {view['reason']}", kind="error"))
    rows = []
    for step in view["steps"]:
        units = ""
        if step.get("units_total"):
            units = f"{step['units_done']:g}/{step['units_total']:g}"
        rows.append(
            [
                esc(step["order"]),
                esc(step.get("title") or step["name"]),
                f'<span class="status {esc(step["status"])}">{esc(step["status"])}</span>',
                esc(format_duration(step.get("duration_s"))),
                esc(units),
                esc(step.get("reason") or ""),
            ]
        )
    parts.append(
        table(
            ["#", "step", "status", "time", "units", "note"],
            rows,
            table_id="steps",
            empty="no steps",
        )
    )
    return "".join(parts)


@router.get("/runs/compare", response_class=HTMLResponse, include_in_schema=False)
def compare_page(
    svc: DashboardDep, run: RunIds, metric: Annotated[list[str] | None, Query(max_length=50)] = None
) -> HTMLResponse:
    """Logged metrics of several runs overlaid: one panel per metric, one colour per run."""
    records = [_load(svc, r)[0] for r in run]
    ids = [r.run_id for r in records]
    items = "".join(
        f'<li><a href="/runs/{esc(quote(r.run_id, safe=""))}">{esc(r.run_id)}</a> '
        f'({esc(r.pipeline)}, <span class="status {esc(r.status.value)}">'
        f"{esc(r.status.value)}</span>)</li>"
        for r in records
    )
    query = urlencode([("run", i) for i in ids] + [("metric", m) for m in metric or []])
    body = (
        f"<ul>{items}</ul>"
        + '<div id="metrics" class="figure tall"><p class="muted">loading metrics…</p></div>'
    )
    data = {"stream": f"/api/runs/compare/stream?{query}"}
    return page(title=f"Compare {len(ids)} runs", active="runs", body=body, data=data)


@router.get("/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
def run_page(svc: DashboardDep, run_id: str) -> HTMLResponse:
    """One run: step X/N and ETA, steps, telemetry and logged metrics, all live."""
    record, view = _load(svc, run_id)
    params = view.get("params") or {}
    artifacts = view.get("artifacts") or []
    extra = ""
    if params:
        extra += "<h2>Parameters</h2>" + table(
            ["name", "value"],
            [[esc(k), esc(v)] for k, v in sorted(params.items())],
            table_id="params",
            empty="",
        )
    if artifacts:
        extra += "<h2>Artifacts</h2>" + table(
            ["name", "kind", "bytes", "path"],
            [
                [esc(a.get("name")), esc(a.get("kind")), esc(a.get("bytes")), esc(a.get("path"))]
                for a in artifacts
            ],
            table_id="artifacts",
            empty="",
        )
    compare = f"/runs?{urlencode({'pipeline': record.pipeline})}"
    body = (
        f'<p class="muted">pipeline <a href="{esc(compare)}">{esc(record.pipeline)}</a> · '
        f"host {esc(record.host)} · created {esc(record.created_at)} · "
        f"<code>{esc(record.run_dir)}</code></p>"
        f'<div id="run-live">{live_html(view, svc.config.stale_after_s)}</div>'
        '<h2>Logged metrics</h2><div id="metrics" class="figure">'
        '<p class="muted">loading…</p></div>'
        '<h2>Telemetry</h2><div id="telemetry" class="figure">'
        '<p class="muted">loading…</p></div>'
        f"{extra}"
    )
    data = {"run_id": record.run_id, "stream": f"/api/runs/{quote(record.run_id, safe='')}/stream"}
    return page(title=f"Run {record.run_id}", active="runs", body=body, data=data)


@router.get("/api/runs/{run_id}")
def run_api(svc: DashboardDep, run_id: str) -> dict[str, Any]:
    """One run as ``atomlab runs status --json`` shows it (live elapsed and ETA)."""
    return {"run": _load(svc, run_id)[1]}


@router.get("/api/runs/compare/stream")
def compare_stream(
    request: Request,
    svc: DashboardDep,
    run: RunIds,
    metric: Annotated[list[str] | None, Query(max_length=50)] = None,
) -> EventSourceResponse:
    """The compared runs' metrics: a whole figure first (``metrics_figure``), then appends."""
    dirs = {}
    for hint in run:
        record, _ = _load(svc, hint)
        dirs[record.run_id] = Path(record.run_dir)
    follower = _MetricsFollower(dirs, metrics=metric)
    return stream(
        request,
        "compare",
        follower.poll,
        tick_s=svc.config.slow_tick_s,
        clock=svc.clock,
        stats=svc.streams,
        stopping=svc.stopping,
    )


@router.get("/api/runs/{run_id}/stream")
def run_stream(request: Request, svc: DashboardDep, run_id: str) -> EventSourceResponse:
    """``live`` (headline and steps), ``metrics_figure``/``telemetry_figure`` (whole figures,
    first and when a new curve appears) and ``metrics_extend``/``telemetry_extend`` (appends)."""
    record, _ = _load(svc, run_id)
    run_dir = Path(record.run_dir)
    metrics = _MetricsFollower({record.run_id: run_dir})
    telemetry = _TelemetryFollower(run_dir / TELEMETRY_FILE)
    state: dict[str, Any] = {"live": None}

    def poll() -> list[ServerSentEvent]:
        out = metrics.poll() + telemetry.poll()
        _, view = _load(svc, record.run_id)
        html = live_html(view, svc.config.stale_after_s)
        if html != state["live"]:
            state["live"] = html
            out.append(event("live", {"html": html, "status": view["status"]}))
        return out

    return stream(
        request,
        "run",
        poll,
        tick_s=svc.config.slow_tick_s,
        clock=svc.clock,
        stats=svc.streams,
        stopping=svc.stopping,
    )


def _extend_payload(
    traces: Sequence[dict[str, Any]],
    key_of: Callable[[dict[str, Any]], Any],
    new: dict[Any, tuple[list[Any], list[Any]]],
) -> dict[str, Any] | None:
    """``Plotly.extendTraces`` arguments for new points of existing traces (None: none new)."""
    indices, xs, ys = [], [], []
    for k, trace in enumerate(traces):
        points = new.get(key_of(trace))
        if points and points[0]:
            indices.append(k)
            xs.append(points[0])
            ys.append(points[1])
    return {"indices": indices, "x": xs, "y": ys} if indices else None


class _MetricsFollower:
    """Metrics of one or several runs: the whole figure first, then appends; a new metric or a
    first point of a run rebuilds the figure (the browser keeps its zoom: same uirevision).

    The first read is the tracker's own reader (``read_metrics``); from the file size taken
    before it, new lines are followed by byte offset. Steps of a name only ever increase (C1),
    so a point at or below the last step seen was already drawn and is dropped.
    """

    def __init__(self, dirs: dict[str, Path], *, metrics: Sequence[str] | None = None) -> None:
        self.dirs = dirs
        self.wanted = list(metrics) if metrics else None
        self.points: dict[str, dict[str, list[Any]]] = {run: {} for run in dirs}
        self.last_step: dict[tuple[str, str], int] = {}
        self.offsets = dict.fromkeys(dirs, 0)
        self.figure: Figure | None = None

    def _build(self) -> Figure:
        return metric_curves(self.points, metrics=self.wanted)

    def _first_read(self) -> None:
        for run, run_dir in self.dirs.items():
            with contextlib.suppress(OSError):
                self.offsets[run] = (run_dir / METRICS_FILE).stat().st_size
            for name, series in read_metrics(run_dir).items():
                if self.wanted is None or name in self.wanted:
                    self.points[run][name] = list(series)
                    if series:
                        self.last_step[(run, name)] = series[-1].step

    def poll(self) -> list[ServerSentEvent]:
        if self.figure is None:
            self._first_read()
            self.figure = self._build()
            return [event("metrics_figure", self.figure)]
        new: dict[tuple[str, str], tuple[list[Any], list[Any]]] = {}
        for run, run_dir in self.dirs.items():
            records, self.offsets[run] = read_new(run_dir / METRICS_FILE, self.offsets[run])
            for name, items in metric_points(records).items():
                if self.wanted is not None and name not in self.wanted:
                    continue
                last = self.last_step.get((run, name), -1)
                fresh = [p for p in items if p["step"] > last]
                if not fresh:
                    continue
                self.last_step[(run, name)] = fresh[-1]["step"]
                self.points[run].setdefault(name, []).extend(fresh)
                new[(run, name)] = point_pairs(fresh)
        if not new:
            return []
        keys = {(t["meta"]["run"], t["meta"]["metric"]) for t in self.figure["data"] if "meta" in t}
        if not set(new) <= keys:
            self.figure = self._build()
            return [event("metrics_figure", self.figure)]
        payload = _extend_payload(
            self.figure["data"], lambda t: (t["meta"]["run"], t["meta"]["metric"]), new
        )
        return [event("metrics_extend", payload)] if payload else []


class _TelemetryFollower:
    """A run's telemetry: the whole figure first, then appends; a GPU appearing rebuilds it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.samples: list[dict[str, Any]] = []
        self.figure: Figure | None = None

    def poll(self) -> list[ServerSentEvent]:
        records, self.offset = read_new(self.path, self.offset)
        self.samples.extend(records)
        if len(self.samples) > MAX_TELEMETRY_KEPT:
            self.samples = self.samples[::2]
            self.figure = None  # thinned: redraw whole
        if self.figure is None or (records and _has_new_gpu(self.figure, records)):
            self.figure = telemetry_figure(self.samples)
            return [event("telemetry_figure", self.figure)]
        if not records:
            return []
        new = {
            t["meta"]["field"]: (
                [_dt(s) for s in records],
                [telemetry_value(s, t["meta"]["field"]) for s in records],
            )
            for t in self.figure["data"]
            if "meta" in t
        }
        payload = _extend_payload(
            self.figure["data"], lambda t: t.get("meta", {}).get("field"), new
        )
        return [event("telemetry_extend", payload)] if payload else []


def _dt(sample: dict[str, Any]) -> float | None:
    value = sample.get("dt_s")
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _has_new_gpu(figure: Figure, records: list[dict[str, Any]]) -> bool:
    shown = {t.get("meta", {}).get("field") for t in figure["data"]}
    if not figure["data"]:
        return True  # it was the "no telemetry yet" figure
    for sample in records:
        for gpu in sample.get("gpus") or []:
            if gpu and f"gpus.{gpu.get('index')}.util_pct" not in shown:
                return True
    return False
