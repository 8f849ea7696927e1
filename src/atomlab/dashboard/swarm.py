"""The Swarm page: the surface map (defects by status, agents moving live, their paths) and
the halt state, read from the swarm service's database.

Why the database and not the service's HTTP API: it works whether or not the service runs (a
post-mortem looks the same as a live view), needs no token when the API is protected, and puts
no load on the service. It is opened read-only (``SwarmStore.open_read_only``); each tick reads
the agents (a row per agent), the repair events after a cursor, and the defects only when their
counts or the events changed. The database trails the service by its writer interval (0.1 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from atomlab.core.clock import utc_iso
from atomlab.core.errors import NotFoundError
from atomlab.dashboard.app import Dashboard, DashboardDep
from atomlab.dashboard.live import event, stream
from atomlab.dashboard.shell import esc, notice, page, table
from atomlab.surface import units_to_nm
from atomlab.views import swarm_map_figure

if TYPE_CHECKING:
    from atomlab.swarm import AgentState, Command, Defect, SwarmStore

router = APIRouter(tags=["swarm"])

PATH_POINTS = 30
"""Targets kept per agent path: the recent route, not the whole day's wandering."""
EVENTS_SHOWN = 50


def _open(svc: Dashboard) -> SwarmStore:
    from atomlab.swarm import SwarmStore  # the service stack loads only when this page is used

    return SwarmStore.open_read_only(svc.config.swarm_db_url)


class SwarmView:
    """One viewer's picture of the swarm, brought up to date by :meth:`refresh`."""

    def __init__(self, svc: Dashboard) -> None:
        self.svc = svc
        self.store: SwarmStore | None = None
        self.defects: list[Defect] = []
        self.agents: list[AgentState] = []
        self.counts: dict[str, int] | None = None
        self.paths: dict[str, list[tuple[float, float]]] = {}
        self.last_command_at: str | None = None
        self.event_cursor = 0
        self.events: list[dict[str, Any]] = []
        self.halted: str | None = None
        self.shown: tuple[Any, ...] | None = None

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def refresh(self) -> bool:
        """Read what changed; True when the picture differs from the last one shown."""
        if self.store is None:
            self.store = _open(self.svc)
        store = self.store
        self.agents = store.agents()
        new_events = store.events_after(self.event_cursor)
        if new_events:
            self.event_cursor = int(new_events[-1]["event_id"])
            self.events = (self.events + new_events)[-EVENTS_SHOWN:]
        counts = store.defect_counts()
        if counts != self.counts or new_events or self.counts is None:
            self.counts = counts
            self.defects = store.defects()
            self.halted = store.halt_reason()
        self._extend_paths(store.commands_created_after(self.last_command_at))
        picture = (
            tuple((a.agent_id, a.position, a.status) for a in self.agents),
            tuple(sorted(self.counts.items())),
            self.event_cursor,
            self.halted,
            self.last_command_at,
        )
        if picture == self.shown:
            return False
        self.shown = picture
        return True

    def _extend_paths(self, commands: Sequence[Command]) -> None:
        for command in commands:
            self.last_command_at = utc_iso(command.created_at)
            if command.action.value == "halt":
                continue
            path = self.paths.setdefault(command.agent_id, [])
            path.append((units_to_nm(command.target.x), units_to_nm(command.target.y)))
            del path[:-PATH_POINTS]

    def figure(self) -> dict[str, Any]:
        paths = {
            agent.agent_id: [
                *self.paths.get(agent.agent_id, []),
                (units_to_nm(agent.position.x), units_to_nm(agent.position.y)),
            ]
            for agent in self.agents
        }
        cfg = self.svc.config
        return swarm_map_figure(
            self.defects,
            self.agents,
            paths,
            bounds_nm=cfg.swarm_bounds_nm,
            no_go_zones=[{"x": z["x"], "y": z["y"]} for z in cfg.swarm_no_go_zones],
            halted=self.halted,
        )

    def panels(self) -> dict[str, str]:
        """The HTML of the side panels: halt banner, counts, agents and recent events."""
        halt = (
            notice(
                f"HALTED (E-stop): {self.halted}; resume with POST /api/agents/resume on the "
                "swarm service",
                kind="error",
            )
            if self.halted
            else '<p class="notice ok">running: no E-stop in force</p>'
        )
        counts = " · ".join(f"{esc(k)} {v}" for k, v in sorted((self.counts or {}).items()))
        agents = table(
            ["agent", "status", "x (nm)", "y (nm)", "°C", "repairs"],
            [
                [
                    esc(a.agent_id),
                    f'<span class="status {esc(a.status.value)}">{esc(a.status.value)}</span>',
                    f"{units_to_nm(a.position.x):.1f}",
                    f"{units_to_nm(a.position.y):.1f}",
                    f"{a.temperature_c:.1f}",
                    esc(a.assigned_total),
                ]
                for a in self.agents
            ],
            table_id="agents",
            empty="no agents have reported yet",
        )
        events = table(
            ["at", "event", "defect", "agent", "detail"],
            [
                [
                    esc(str(e.get("at", ""))[:19].replace("T", " ")),
                    esc(e.get("event")),
                    esc(e.get("defect_id")),
                    esc(e.get("agent_id")),
                    esc(e.get("detail")),
                ]
                for e in reversed(self.events)
            ],
            table_id="events",
            empty="no repair events yet",
        )
        return {
            "halt": halt,
            "counts": f"defects: {counts or 'none'}",
            "agents": agents,
            "events": events,
        }


@router.get("/swarm", response_class=HTMLResponse, include_in_schema=False)
def swarm_page(svc: DashboardDep) -> HTMLResponse:
    """The surface map, agents, halt state and recent repair events."""
    view = SwarmView(svc)
    try:
        view.refresh()
        panels, figure = view.panels(), view.figure()
    except NotFoundError as exc:
        body = notice(f"{exc.message}. This page follows it as soon as it exists.")
        body += '<div id="halt"></div><p id="counts"></p><div id="map" class="figure square"></div>'
        body += '<div id="agents"></div><div id="events"></div>'
        return page(title="Swarm", active="swarm", body=body, data={"stream": "/api/swarm/stream"})
    finally:
        view.close()
    body = (
        f'<div id="halt">{panels["halt"]}</div><p id="counts">{panels["counts"]}</p>'
        '<div class="split wide"><div id="map" class="figure square"></div>'
        f'<aside><h2>Agents</h2><div id="agents">{panels["agents"]}</div></aside></div>'
        f'<h2>Recent repair events</h2><div id="events">{panels["events"]}</div>'
    )
    data = {"stream": "/api/swarm/stream", "figure": figure}
    return page(title="Swarm", active="swarm", body=body, data=data)


@router.get("/api/swarm")
def swarm_state(svc: DashboardDep) -> dict[str, Any]:
    """The map as a figure, the defect counts by status and the halt state."""
    view = SwarmView(svc)
    try:
        view.refresh()
        return {"figure": view.figure(), "counts": view.counts, "halted": view.halted}
    finally:
        view.close()


@router.get("/api/swarm/stream")
def swarm_stream(request: Request, svc: DashboardDep) -> EventSourceResponse:
    """``swarm`` events (the map figure and the side panels) whenever the picture changed."""
    view = SwarmView(svc)

    def poll() -> list[ServerSentEvent]:
        if not view.refresh():
            return []
        return [event("swarm", {"figure": view.figure(), **view.panels()})]

    return stream(
        request,
        "swarm",
        poll,
        tick_s=svc.config.swarm_tick_s,
        clock=svc.clock,
        stats=svc.streams,
        stopping=svc.stopping,
        on_close=view.close,
    )
