"""What a confused or rogue simulator can tell the coordinator: results for commands it was not
given, an endless stream of invented agents. None of it settles a repair or grows without bound."""

from __future__ import annotations

from atomlab.core.clock import FakeClock
from atomlab.swarm.coordinator import MAX_AGENTS
from atomlab.swarm.models import CommandStatus, DefectStatus
from tests.swarm.harness import agents_up, coordinator, ingest_and_plan, reading


def test_a_result_from_another_agent_or_for_another_action_settles_nothing() -> None:
    """Issue 13, found 3: a rogue peer got 20 of 20 defects marked 'completed - verified by
    re-scan'. A result counts only from the agent the command was given to, for its action."""
    coord = coordinator(FakeClock())
    agents_up(coord, {"a0": (1.0, 1.0), "a1": (15.0, 15.0)})
    ingest_and_plan(coord, [reading(2.0, 2.0)])
    [command] = coord.dispatch_round()
    other = "a1" if command.agent_id == "a0" else "a0"
    forged = {
        "command_id": command.command_id,
        "idempotency_key": command.command_id,
        "status": "completed",
        "defect_present": False,
    }
    coord.handle_event("command_result", {**forged, "agent_id": other, "action": "repair"})
    coord.handle_event("command_result", {**forged, "agent_id": command.agent_id, "action": "scan"})
    assert coord.book.get(command.command_id).status is CommandStatus.PENDING
    [defect] = coord.defects.values()
    assert defect.status is DefectStatus.REPAIRING
    assert coord.metrics.registry.get_sample_value("atomlab_swarm_rejected_results_total") == 2
    # The real agent's answer still counts.
    coord.handle_event(
        "command_result", {**forged, "agent_id": command.agent_id, "action": "repair"}
    )
    assert coord.book.get(command.command_id).status is CommandStatus.COMPLETED


def test_invented_agents_cannot_grow_the_service_without_bound() -> None:
    coord = coordinator(FakeClock())
    flood = [
        {"agent_id": f"ghost-{i}", "position": {"x": 1.0, "y": 1.0}, "status": "idle"}
        for i in range(MAX_AGENTS + 50)
    ]
    coord.handle_event("agent_status", {"agents": flood})
    assert len(coord.agents) == MAX_AGENTS
