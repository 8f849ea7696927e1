"""The Instrument page: trajectory runs, the live strip chart, actions, an action's signal window,
and the latest scan image.

The strip chart follows the recording with cursor reads (``samples_after``/``actions_after``:
one primary-key range read per tick, however long the run), sent as server-sent events; the
browser appends them with ``Plotly.extendTraces`` so the user's zoom stays.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from atomlab.core.errors import InvalidInputError, NotFoundError
from atomlab.dashboard.app import DashboardDep
from atomlab.dashboard.config import MAX_STRIP_POINTS
from atomlab.dashboard.live import event, last_event_id, stream
from atomlab.dashboard.shell import esc, notice, page, table
from atomlab.trajectory import ActionEvent, RunInfo, TrajectoryStore, open_store
from atomlab.views import scan_heatmap, signal_window_figure, strip_chart_figure

router = APIRouter(tags=["trajectory"])

RunName = Annotated[str | None, Query(max_length=128, description="Run name (default: latest).")]
SignalsCsv = Annotated[
    str | None,
    Query(max_length=4000, description="Comma-separated signal labels (default: all)."),
]
WindowS = Annotated[
    float, Query(ge=1.0, le=3600.0, description="Seconds of signal the strip chart keeps.")
]
MAX_TAIL = 5000
RUNS_SHOWN = 200
ACTION_COLUMNS = ("#", "t (s)", "spec", "old → new", "source")


def _open(request: Request) -> TrajectoryStore:
    svc = request.app.state.dashboard
    return open_store(svc.config.trajectory_db)


def _labels(
    store: TrajectoryStore, run: RunInfo, signals: str | None
) -> tuple[list[str], dict[str, str]]:
    """The signals to show (all, or the ``signals`` filter, checked against the catalog)."""
    catalog = store.catalog("signals", run.name)
    units = {ch.label: ch.unit for ch in catalog}
    if not signals:
        return [ch.label for ch in catalog], units
    wanted = [part.strip() for part in signals.split(",") if part.strip()]
    unknown = [label for label in wanted if label not in units]
    if unknown or not wanted:
        raise InvalidInputError(
            f"signals={signals!r}: {', '.join(map(repr, unknown)) or 'none given'} not recorded "
            f"in run {run.name!r}; recorded: {', '.join(units)}",
            field="signals",
            value=signals,
        )
    return wanted, units


def _action_row(a: ActionEvent, run: str) -> dict[str, Any]:
    return {
        "action_idx": a.action_idx,
        "dt_s": round(a.dt_s, 3),
        "spec_label": a.spec_label,
        "old_value": a.old_value,
        "new_value": a.new_value,
        "source": a.source,
        "run": run,
    }


def _action_cells(row: dict[str, Any]) -> list[str]:
    return [
        f'<a href="?run={esc(row["run"])}&amp;action={row["action_idx"]}" '
        f'data-action="{row["action_idx"]}">{row["action_idx"]}</a>',
        esc(f"{row['dt_s']:.2f}"),
        esc(row["spec_label"]),
        f"{esc(row['old_value'])} → {esc(row['new_value'])}",
        esc(row["source"]),
    ]


def _run_summary(run: RunInfo) -> dict[str, Any]:
    return {
        "name": run.name,
        "status": run.status,
        "samples": run.samples,
        "actions": run.actions,
        "errors": run.errors,
        "missed_ticks": run.missed_ticks,
        "last_dt_s": run.last_dt_s,
        "started_at_utc": run.started_at_utc,
        "interval_s": run.interval_s,
    }


@router.get("/instrument", response_class=HTMLResponse, include_in_schema=False)
def instrument_page(
    request: Request,
    svc: DashboardDep,
    run: RunName = None,
    action: Annotated[int | None, Query(ge=0, le=2**31)] = None,
    signals: SignalsCsv = None,
    window_s: WindowS = 30.0,
) -> HTMLResponse:
    """Runs, the live strip chart, actions, a signal window and the scan image."""
    scan_data: dict[str, Any] = {
        "scan_stream": "/api/instrument/scan/stream" if svc.scan is not None else None,
    }
    scan_html = (
        '<div id="scan" class="figure square"></div><p id="scan-status" class="muted"></p>'
        if svc.scan is not None
        else notice("scan images are off (--no-instrument)")
    )
    try:
        store = _open(request)
    except NotFoundError as exc:
        body = notice(
            f"No recordings yet ({exc.message}). Record one: atomlab trajectory monitor config set "
            "--run-name NAME, then atomlab trajectory monitor run."
        )
        body += f"<h2>Latest scan image</h2>{scan_html}"
        return page(title="Instrument", active="instrument", body=body, data=scan_data)
    with store:
        runs = store.runs()[:RUNS_SHOWN]
        if not runs:
            return page(
                title="Instrument",
                active="instrument",
                body=notice("The database holds no runs yet.")
                + f"<h2>Latest scan image</h2>{scan_html}",
                data=scan_data,
            )
        current = store.run(run)
        labels, units = _labels(store, current, signals)
        actions = [_action_row(a, current.name) for a in store.actions(current.name)]
    if action is not None and action >= max(current.actions, len(actions)):
        raise NotFoundError(
            f"run {current.name!r} has no action {action}; it has {len(actions)}",
            field="action",
            value=action,
        )
    max_points = min(MAX_STRIP_POINTS, max(10, math.ceil(window_s / current.interval_s)))
    last_action = actions[-1]["action_idx"] if actions else -1  # the stream sends only newer
    query = f"run={_q(current.name)}&after_action={last_action}" + (
        f"&signals={_q(signals)}" if signals else ""
    )
    data = {
        **scan_data,
        "run": current.name,
        "follow_latest": run is None,
        "strip": strip_chart_figure(labels, units),
        "labels": labels,
        "max_points": max_points,
        "stream": f"/api/trajectory/stream?{query}",
        "window_url": f"/api/trajectory/runs/{_q(current.name)}/actions/{{idx}}/window",
        "action": action,
        "actions": actions,
    }
    return page(
        title="Instrument",
        active="instrument",
        body=_instrument_body(runs, current, labels, signals, window_s, actions, scan_html),
        data=data,
    )


def _q(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _instrument_body(
    runs: list[RunInfo],
    current: RunInfo,
    labels: list[str],
    signals: str | None,
    window_s: float,
    actions: list[dict[str, Any]],
    scan_html: str,
) -> str:
    run_rows = [
        [
            f'<a href="/instrument?run={esc(_q(r.name))}"'
            f"{' class=current' if r.name == current.name else ''}>{esc(r.name)}</a>",
            f'<span class="status {esc(r.status)}">{esc(r.status)}</span>',
            esc(r.samples),
            esc(r.actions),
            esc(r.started_at_utc[:19].replace("T", " ")),
        ]
        for r in runs
    ]
    runs_table = table(
        ["run", "status", "samples", "actions", "started (UTC)"],
        run_rows,
        table_id="trajectory-runs",
        empty="no runs",
    )
    counters = (
        f'<dl class="counters" id="run-counters">'
        f"<dt>status</dt><dd data-key=status>{esc(current.status)}</dd>"
        f"<dt>samples</dt><dd data-key=samples>{current.samples}</dd>"
        f"<dt>actions</dt><dd data-key=actions>{current.actions}</dd>"
        f"<dt>errors</dt><dd data-key=errors>{current.errors}</dd>"
        f"<dt>missed ticks</dt><dd data-key=missed_ticks>{current.missed_ticks}</dd>"
        f"<dt>interval</dt><dd>{current.interval_s:g} s</dd></dl>"
    )
    form = (
        '<form method="get" action="/instrument" class="filters" id="signal-filter">'
        f'<input type="hidden" name="run" value="{esc(current.name)}">'
        f'<label>signals <input name="signals" value="{esc(signals or "")}" '
        f'placeholder="{esc(", ".join(labels))}" size="40"></label>'
        f'<label>window (s) <input name="window_s" type="number" min="1" max="3600" '
        f'value="{window_s:g}"></label><button type="submit">show</button></form>'
    )
    actions_table = table(
        list(ACTION_COLUMNS),
        [_action_cells(row) for row in actions],
        table_id="actions",
        empty="no actions yet",
    )
    return (
        '<div class="split"><aside><h2>Recordings</h2>'
        f"{runs_table}</aside><div>"
        f'<h2 id="run-title">{esc(current.name)}</h2>{counters}{form}'
        '<div id="strip" class="figure tall"></div>'
        f"<h2>Actions</h2>{actions_table}"
        '<h2>Signal window</h2><div id="window" class="figure">'
        '<p class="muted">pick an action to see the signals around it</p></div>'
        f"<h2>Latest scan image</h2>{scan_html}</div></div>"
    )


@router.get("/api/trajectory/runs")
def list_runs(request: Request) -> dict[str, Any]:
    """Every recording, newest first."""
    with _open(request) as store:
        return {"runs": [_run_summary(r) for r in store.runs()]}


@router.get("/api/trajectory/runs/{run}/actions")
def list_actions(request: Request, run: str) -> dict[str, Any]:
    """A run's actions in order."""
    with _open(request) as store:
        current = store.run(run)
        return {
            "run": current.name,
            "actions": [_action_row(a, current.name) for a in store.actions(current.name)],
        }


@router.get("/api/trajectory/runs/{run}/actions/{action_idx}/window")
def action_window(
    request: Request, run: str, action_idx: Annotated[int, PathParam(ge=0, le=2**31)]
) -> dict[str, Any]:
    """The signal window of one action as a figure (``signal_window_figure``)."""
    with _open(request) as store:
        act = store.action(action_idx, run)
        window = store.signal_window(act.window_start_dt_s, act.window_end_dt_s, run)
    return {"figure": signal_window_figure(window, act), "complete": window.complete}


@router.get("/api/trajectory/stream")
def trajectory_stream(
    request: Request,
    svc: DashboardDep,
    run: RunName = None,
    signals: SignalsCsv = None,
    after: Annotated[int | None, Query(ge=-1, le=2**62)] = None,
    after_action: Annotated[int, Query(ge=-1, le=2**62)] = -1,
    backlog: Annotated[int, Query(ge=0, le=MAX_STRIP_POINTS)] = MAX_STRIP_POINTS,
) -> EventSourceResponse:
    """Live samples (``samples``), new actions (``actions``), run counters (``run``) and a newer
    run (``newrun``) of one recording; resumes from ``Last-Event-ID`` after a reconnect."""
    store = _open(request)
    try:
        current = store.run(run)
        labels, _ = _labels(store, current, signals)
    except Exception:
        store.close()
        raise
    resumed = last_event_id(request)
    cursor = resumed if resumed is not None else after
    if cursor is None:
        cursor = max(-1, current.samples - 1 - backlog)  # start with the last `backlog` samples
    follower = _Follower(store, current, labels, cursor, after_action, follow_latest=run is None)
    return stream(
        request,
        "trajectory",
        follower.poll,
        tick_s=svc.config.sample_tick_s,
        clock=svc.clock,
        stats=svc.streams,
        stopping=svc.stopping,
        on_close=store.close,
    )


class _Follower:
    """The state of one live strip chart: cursors into the samples and actions of one run."""

    def __init__(
        self,
        store: TrajectoryStore,
        run: RunInfo,
        labels: list[str],
        cursor: int,
        action_cursor: int,
        *,
        follow_latest: bool,
    ) -> None:
        self.store, self.run, self.labels = store, run, labels
        self.cursor, self.action_cursor = cursor, action_cursor
        self.follow_latest = follow_latest
        self.ticks = 0
        self.last_run: dict[str, Any] | None = None

    def poll(self) -> list[ServerSentEvent]:
        out: list[ServerSentEvent] = []
        tail = self.store.samples_after(self.cursor, self.run.name, limit=MAX_TAIL)
        if tail["sample_idx"]:
            self.cursor = tail["last_sample_idx"]
            values = {label: _json_values(tail["values"][label]) for label in self.labels}
            out.append(
                event(
                    "samples",
                    {"sample_idx": tail["sample_idx"], "dt_s": tail["dt_s"], "values": values},
                    event_id=str(self.cursor),
                )
            )
        actions = self.store.actions_after(self.action_cursor, self.run.name)
        if actions:
            self.action_cursor = actions[-1].action_idx
            out.append(event("actions", [_action_row(a, self.run.name) for a in actions]))
        if self.ticks % 10 == 0:  # counters and a newer run: once a second is plenty
            out.extend(self._slow())
        self.ticks += 1
        return out

    def _slow(self) -> list[ServerSentEvent]:
        out: list[ServerSentEvent] = []
        summary = _run_summary(self.store.run(self.run.name))
        if summary != self.last_run:
            self.last_run = summary
            out.append(event("run", summary))
        if self.follow_latest:
            latest = self.store.run()
            if latest.name != self.run.name:
                out.append(event("newrun", {"name": latest.name}))
        return out


def _json_values(values: list[Any]) -> list[Any]:
    """Sample values for JSON: a NaN or infinity (a broken reading) is null, a gap."""
    return [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]


@router.get("/api/instrument/scan")
def scan_image(svc: DashboardDep) -> dict[str, Any]:
    """The latest scan image from the instrument as a heat-map figure."""
    if svc.scan is None:
        raise NotFoundError("scan images are off (the dashboard runs with --no-instrument)")
    return _scan_payload(svc.scan.latest())


def _scan_payload(image: Any) -> dict[str, Any]:
    state = "scanning" if image.scanning else "idle"
    title = (
        f"{image.channel} · {image.width_nm:.1f} × {image.height_nm:.1f} nm · {state}, "
        f"{image.scanned_fraction:.0%} scanned"
    )
    return {
        "figure": scan_heatmap(
            image.image,
            width_nm=image.width_nm,
            height_nm=image.height_nm,
            title=title,
            unit=image.unit,
            center_nm=image.center_nm,
        ),
        "digest": image.digest,
        "grabbed_at": image.grabbed_at,
        "channel": image.channel,
    }


@router.get("/api/instrument/scan/stream")
def scan_stream(request: Request, svc: DashboardDep) -> EventSourceResponse:
    """The scan image (``scan``) whenever it changed, or why there is none (``problem``)."""
    source = svc.scan
    if source is None:
        raise NotFoundError("scan images are off (the dashboard runs with --no-instrument)")
    last: dict[str, str | None] = {"digest": None}

    def poll() -> list[ServerSentEvent]:
        image = source.latest()
        if image.digest == last["digest"]:
            return []
        last["digest"] = image.digest
        return [event("scan", _scan_payload(image))]

    return stream(
        request,
        "scan",
        poll,
        tick_s=svc.config.scan_tick_s,
        clock=svc.clock,
        stats=svc.streams,
        stopping=svc.stopping,
    )
