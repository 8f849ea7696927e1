"""The QNMS swarm repair service: validate detected defects, plan, dispatch, verify.

Needs the ``swarm`` extra (FastAPI, uvicorn, websockets, SQLAlchemy, SciPy)::

    from atomlab.swarm import create_app
    app = create_app(load_settings().settings)      # serve with uvicorn; see docs/swarm.md

The pure parts work without a server::

    plan_route([PlanStop("d1", Point(12, 34), severity=5, seq=0)], start=Point(0, 0))
"""

from atomlab.surface import UNITS_PER_NM, OffGridError, nm_to_units, units_to_nm
from atomlab.swarm.allocation import AgentSlot, Assignment, JobSlot, allocate
from atomlab.swarm.api import SwarmService, create_app
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
from atomlab.swarm.validation import SafetyLimits, SafetyValidator

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
    "SensorCoordinateIn",
    "SensorDataIn",
    "SwarmCoordinator",
    "SwarmMetrics",
    "SwarmService",
    "SwarmStore",
    "allocate",
    "create_app",
    "default_db_url",
    "min_clearance",
    "naive_order",
    "nm_to_units",
    "plan_route",
    "route_length",
    "segment_distance",
    "units_to_nm",
]
