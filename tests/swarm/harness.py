"""Helpers for the swarm tests: settings, a coordinator, simulated link events."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings

from atomlab.core.clock import FakeClock
from atomlab.core.metrics import new_registry
from atomlab.core.settings import SwarmSettings, load_settings
from atomlab.swarm.coordinator import SwarmCoordinator
from atomlab.swarm.metrics import SwarmMetrics
from atomlab.swarm.models import SensorCoordinateIn

settings.register_profile(
    "swarm",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PROPERTY = settings.get_profile("swarm")


def swarm_settings(**overrides: Any) -> SwarmSettings:
    return load_settings(overrides={"swarm": overrides}, environ={}).settings.swarm


@dataclass
class Sent:
    """What the coordinator handed to the link."""

    payloads: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    async def __call__(self, payload: dict[str, Any], *, idempotency_key: str) -> None:
        self.payloads.append(payload)
        self.keys.append(idempotency_key)


def coordinator(clock: FakeClock | None = None, **overrides: Any) -> SwarmCoordinator:
    return SwarmCoordinator(
        settings=swarm_settings(**overrides),
        clock=clock or FakeClock(),
        metrics=SwarmMetrics(new_registry()),
    )


def agents_up(coord: SwarmCoordinator, positions: dict[str, tuple[float, float]]) -> None:
    """Deliver a simulator handshake listing agents at ``positions`` (nm)."""
    payload = {
        "agents": [
            {"agent_id": a, "position": {"x": x, "y": y, "z": 0.0}, "status": "idle"}
            for a, (x, y) in positions.items()
        ]
    }
    coord.handle_event("link_up", payload)


def reading(x: float, y: float, severity: int = 5, kind: str = "vacancy") -> SensorCoordinateIn:
    return SensorCoordinateIn(x=x, y=y, z=0.0, defect_type=kind, severity=severity)


def ingest_and_plan(coord: SwarmCoordinator, readings: list[SensorCoordinateIn], cid: str = "c1"):
    result = coord.ingest(readings, correlation_id=cid)
    asyncio.run(coord.plan_pending())
    return result


def result(coord: SwarmCoordinator, command_id: str, status: str, **extra: Any) -> None:
    """The simulator reports ``status`` for a command (and the agent stands at its target)."""
    command = coord.book.get(command_id)
    x, y, z = command.target.nm()
    payload = {
        "command_id": command_id,
        "agent_id": command.agent_id,
        "idempotency_key": command_id,
        "action": command.action.value,
        "status": status,
        "position": {"x": x, "y": y, "z": z},
        **extra,
    }
    coord.handle_event("command_result", payload)


def repair_cycle(coord: SwarmCoordinator, command_id: str, *, gone: bool) -> str:
    """Complete a repair command and answer the scan it triggers; returns the scan's id."""
    agent = coord.book.get(command_id).agent_id
    result(coord, command_id, "completed", repaired=gone)
    scan = coord.jobs[agent].command_id
    result(coord, scan, "completed", defect_present=not gone)
    return scan


def finish(coord: SwarmCoordinator, agent: str, *, gone: bool = True) -> None:
    """``agent`` finishes what it is doing (a repair and its re-scan, or a move), if anything."""
    job = coord.jobs.get(agent)
    if job is None:
        return
    if coord.book.get(job.command_id).action.value == "move":
        result(coord, job.command_id, "completed")
    else:
        repair_cycle(coord, job.command_id, gone=gone)


def finish_all(coord: SwarmCoordinator, *, gone: bool = True) -> None:
    """Every agent finishes what it is doing."""
    for agent in list(coord.jobs):
        finish(coord, agent, gone=gone)


def operator_client(app: Any, **kwargs: Any) -> Any:
    """A TestClient that sends the app's control token: it may do what an operator may."""
    from fastapi.testclient import TestClient

    token = app.state.swarm.tokens.control
    return TestClient(app, headers={"Authorization": f"Bearer {token}"}, **kwargs)
