"""Which idle agent takes which queued job in one dispatch round.

Precedence (the spec's conflicts resolved): safety > severity > fairness > distance.

1. **safety**: a pair the caller's ``feasible`` check refuses is never made;
2. **severity**: only the highest-priority jobs that some agent can safely take are served;
3. **fairness**: round-robin: the agents with the fewest assignments so far are served first,
   so every agent gets one before any gets a second (property 18);
4. **distance**: among those agents and jobs, the Hungarian method
   (``scipy.optimize.linear_sum_assignment``) pairs them for the least total travel.

    pairs = allocate(jobs, agents, feasible=lambda a, j: True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Strategy = Literal["hungarian", "round_robin"]
INFEASIBLE_COST = 1e12


@dataclass(frozen=True)
class JobSlot:
    """A job waiting for an agent; the sequence given to :func:`allocate` is priority order."""

    job_id: str
    position: tuple[float, float, float]
    severity: int


@dataclass(frozen=True)
class AgentSlot:
    """An idle agent that may take a job."""

    agent_id: str
    position: tuple[float, float, float]
    assigned_total: int


@dataclass(frozen=True)
class Assignment:
    agent_id: str
    job_id: str
    distance: float


Feasible = Callable[[AgentSlot, JobSlot], bool]


def fairness_order(agents: Sequence[AgentSlot]) -> list[AgentSlot]:
    """Fewest assignments first; the agent id breaks ties so a round is deterministic."""
    return sorted(agents, key=lambda a: (a.assigned_total, a.agent_id))


def allocate(
    jobs: Sequence[JobSlot],
    agents: Sequence[AgentSlot],
    *,
    feasible: Feasible | None = None,
    strategy: Strategy = "hungarian",
) -> list[Assignment]:
    """Assign at most one job to each agent and at most one agent to each job."""
    if not jobs or not agents:
        return []
    ok: Feasible = feasible or (lambda _a, _j: True)
    chosen_jobs = _servable_jobs(jobs, agents, ok)
    able = [a for a in fairness_order(agents) if any(ok(a, job) for job in chosen_jobs)]
    chosen_agents = able[: len(chosen_jobs)]
    if strategy == "round_robin":
        return _round_robin(chosen_jobs, chosen_agents, ok)
    return _hungarian(chosen_jobs, chosen_agents, ok)


def _servable_jobs(
    jobs: Sequence[JobSlot], agents: Sequence[AgentSlot], ok: Feasible
) -> list[JobSlot]:
    """The highest-priority jobs, skipping any job no agent can take safely right now."""
    chosen: list[JobSlot] = []
    for job in jobs:
        if len(chosen) == len(agents):
            break
        if any(ok(agent, job) for agent in agents):
            chosen.append(job)
    return chosen


def _round_robin(
    jobs: Sequence[JobSlot], agents: Sequence[AgentSlot], ok: Feasible
) -> list[Assignment]:
    taken: set[str] = set()
    result: list[Assignment] = []
    for agent in agents:
        for job in jobs:
            if job.job_id not in taken and ok(agent, job):
                taken.add(job.job_id)
                result.append(Assignment(agent.agent_id, job.job_id, _dist(agent, job)))
                break
    return result


def _hungarian(
    jobs: Sequence[JobSlot], agents: Sequence[AgentSlot], ok: Feasible
) -> list[Assignment]:
    # Imported here: scipy.optimize costs most of a second, and only dispatch needs it.
    from scipy.optimize import linear_sum_assignment

    cost = np.full((len(agents), len(jobs)), INFEASIBLE_COST)
    for i, agent in enumerate(agents):
        for j, job in enumerate(jobs):
            if ok(agent, job):
                cost[i, j] = _dist(agent, job)
    rows, cols = linear_sum_assignment(cost)
    return [
        Assignment(agents[i].agent_id, jobs[j].job_id, float(cost[i, j]))
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True)
        if cost[i, j] < INFEASIBLE_COST
    ]


def _dist(agent: AgentSlot, job: JobSlot) -> float:
    return math.dist(agent.position, job.position)
