"""The QNMS swarm repair service: validate detected defects, plan, dispatch, verify.

Needs the ``swarm`` extra (FastAPI, uvicorn, websockets, SQLAlchemy, SciPy)::

    from atomlab.swarm import create_app
    app = create_app(load_settings().settings)      # serve with uvicorn; see docs/swarm.md

The pure parts work without a server::

    plan_route([PlanStop("d1", Point(12, 34), severity=5, seq=0)], start=Point(0, 0))

Clients find a service and its credentials without loading it (both modules are light)::

    from atomlab.swarm import bearer_headers, service_url
    headers = bearer_headers(settings, "ingest")     # {"Authorization": "Bearer ..."}

Names are imported on first use, so ``atomlab.swarm.auth`` costs no FastAPI import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atomlab.surface import UNITS_PER_NM, OffGridError, nm_to_units, units_to_nm
    from atomlab.swarm.allocation import AgentSlot, Assignment, JobSlot, allocate
    from atomlab.swarm.api import SwarmService, create_app
    from atomlab.swarm.auth import (
        Scope,
        SwarmTokens,
        bearer_headers,
        client_token,
        load_tokens,
        tokens_path,
    )
    from atomlab.swarm.commands import CommandBook, IllegalTransitionError, RepairQueue
    from atomlab.swarm.coordinator import IngestResult, SwarmCoordinator
    from atomlab.swarm.db import SwarmStore, default_db_url
    from atomlab.swarm.metrics import SwarmMetrics
    from atomlab.swarm.models import (
        Action,
        AgentState,
        AgentStatus,
        Command,
        CommandStatus,
        Defect,
        DefectStatus,
        Point,
        SensorCoordinateIn,
        SensorDataIn,
    )
    from atomlab.swarm.planner import (
        LlmRouteAdvisor,
        PlanStop,
        RepairPath,
        naive_order,
        plan_route,
        route_length,
    )
    from atomlab.swarm.reservations import ReservationTable, min_clearance, segment_distance
    from atomlab.swarm.service_file import link_url, read_service_file, service_url
    from atomlab.swarm.supervision import Supervisor
    from atomlab.swarm.validation import SafetyLimits, SafetyValidator

_HOMES: dict[str, str] = {
    "atomlab.surface": "UNITS_PER_NM OffGridError nm_to_units units_to_nm",
    "atomlab.swarm.allocation": "AgentSlot Assignment JobSlot allocate",
    "atomlab.swarm.api": "SwarmService create_app",
    "atomlab.swarm.auth": "Scope SwarmTokens bearer_headers client_token load_tokens tokens_path",
    "atomlab.swarm.commands": "CommandBook IllegalTransitionError RepairQueue",
    "atomlab.swarm.coordinator": "IngestResult SwarmCoordinator",
    "atomlab.swarm.db": "SwarmStore default_db_url",
    "atomlab.swarm.metrics": "SwarmMetrics",
    "atomlab.swarm.models": (
        "Action AgentState AgentStatus Command CommandStatus Defect DefectStatus Point "
        "SensorCoordinateIn SensorDataIn"
    ),
    "atomlab.swarm.planner": (
        "LlmRouteAdvisor PlanStop RepairPath naive_order plan_route route_length"
    ),
    "atomlab.swarm.reservations": "ReservationTable min_clearance segment_distance",
    "atomlab.swarm.service_file": "link_url read_service_file service_url",
    "atomlab.swarm.supervision": "Supervisor",
    "atomlab.swarm.validation": "SafetyLimits SafetyValidator",
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names.split()}

__all__ = [
    "UNITS_PER_NM",
    "Action",
    "AgentSlot",
    "AgentState",
    "AgentStatus",
    "Assignment",
    "Command",
    "CommandBook",
    "CommandStatus",
    "Defect",
    "DefectStatus",
    "IllegalTransitionError",
    "IngestResult",
    "JobSlot",
    "LlmRouteAdvisor",
    "OffGridError",
    "PlanStop",
    "Point",
    "RepairPath",
    "RepairQueue",
    "ReservationTable",
    "SafetyLimits",
    "SafetyValidator",
    "Scope",
    "SensorCoordinateIn",
    "SensorDataIn",
    "Supervisor",
    "SwarmCoordinator",
    "SwarmMetrics",
    "SwarmService",
    "SwarmStore",
    "SwarmTokens",
    "allocate",
    "bearer_headers",
    "client_token",
    "create_app",
    "default_db_url",
    "link_url",
    "load_tokens",
    "min_clearance",
    "naive_order",
    "nm_to_units",
    "plan_route",
    "read_service_file",
    "route_length",
    "segment_distance",
    "service_url",
    "tokens_path",
    "units_to_nm",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'atomlab.swarm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
