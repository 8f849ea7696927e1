"""Allocation and reservations: properties 18 and 19, precedence, swept-path clearance."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from atomlab.swarm.allocation import AgentSlot, JobSlot, allocate
from atomlab.swarm.reservations import ReservationTable, min_clearance, segment_distance
from tests.swarm.harness import PROPERTY

xy = st.tuples(st.integers(0, 200).map(float), st.integers(0, 200).map(float))


def _agents(points: list[tuple[float, float]], counts: list[int] | None = None) -> list[AgentSlot]:
    counts = counts or [0] * len(points)
    return [
        AgentSlot(f"a{i:02d}", (x, y, 0.0), c)
        for i, ((x, y), c) in enumerate(zip(points, counts, strict=True))
    ]


def _jobs(points: list[tuple[float, float]], severities: list[int] | None = None) -> list[JobSlot]:
    severities = severities or [5] * len(points)
    return [
        JobSlot(f"j{i:02d}", (x, y, 0.0), s)
        for i, ((x, y), s) in enumerate(zip(points, severities, strict=True))
    ]


@PROPERTY
@given(
    st.lists(xy, min_size=1, max_size=8),
    st.lists(xy, min_size=1, max_size=30),
    st.sampled_from(["hungarian", "round_robin"]),
)
def test_property_18_command_distribution_every_agent_gets_one_before_any_gets_a_second(
    agent_points: list[tuple[float, float]], job_points: list[tuple[float, float]], strategy: str
) -> None:
    """Property 18: over successive rounds with all agents idle, assignment counts never differ
    by more than one (round-robin fairness), whatever the distances."""
    counts = [0] * len(agent_points)
    remaining = _jobs(job_points)
    while remaining:
        pairs = allocate(remaining, _agents(agent_points, counts), strategy=strategy)  # type: ignore[arg-type]
        assert pairs, "an idle swarm must take work while work remains"
        for pair in pairs:
            counts[int(pair.agent_id[1:])] += 1
        assert max(counts) - min(counts) <= 1
        done = {p.job_id for p in pairs}
        remaining = [j for j in remaining if j.job_id not in done]


@PROPERTY
@given(
    st.lists(xy, min_size=1, max_size=6),
    st.lists(st.tuples(xy, st.integers(1, 10)), min_size=1, max_size=20),
)
def test_severity_outranks_distance_the_served_jobs_are_the_most_severe(
    agent_points: list[tuple[float, float]], jobs: list[tuple[tuple[float, float], int]]
) -> None:
    """Precedence: in one round the served jobs are the highest-priority ones, not the nearest."""
    ordered = sorted(enumerate(jobs), key=lambda item: -item[1][1])
    slots = [JobSlot(f"j{i:02d}", (p[0], p[1], 0.0), s) for i, (p, s) in ordered]
    pairs = allocate(slots, _agents(agent_points))
    served = {p.job_id for p in pairs}
    assert served == {s.job_id for s in slots[: len(pairs)]}
    assert len(pairs) == min(len(agent_points), len(slots))


@PROPERTY
@given(st.lists(xy, min_size=1, max_size=8), st.lists(xy, min_size=1, max_size=8))
def test_hungarian_total_distance_is_never_worse_than_round_robin(
    agent_points: list[tuple[float, float]], job_points: list[tuple[float, float]]
) -> None:
    """Distance comes last but still counts: per round, Hungarian ≤ round-robin travel."""
    agents, jobs = _agents(agent_points), _jobs(job_points)
    hungarian = sum(p.distance for p in allocate(jobs, agents, strategy="hungarian"))
    robin = sum(p.distance for p in allocate(jobs, agents, strategy="round_robin"))
    assert hungarian <= robin + 1e-6


@PROPERTY
@given(st.lists(xy, min_size=1, max_size=6), st.lists(xy, min_size=1, max_size=10), st.randoms())
def test_safety_outranks_everything_an_infeasible_pair_is_never_made(
    agent_points: list[tuple[float, float]], job_points: list[tuple[float, float]], rnd: object
) -> None:
    """Precedence: a pair the safety check refuses is never assigned, by either strategy."""
    forbidden = {
        (a, j)
        for a in range(len(agent_points))
        for j in range(len(job_points))
        if (a * 7 + j * 3) % 3 == 0
    }

    def feasible(agent: AgentSlot, job: JobSlot) -> bool:
        return (int(agent.agent_id[1:]), int(job.job_id[1:])) not in forbidden

    for strategy in ("hungarian", "round_robin"):
        pairs = allocate(
            _jobs(job_points), _agents(agent_points), feasible=feasible, strategy=strategy
        )  # type: ignore[arg-type]
        assert all(
            feasible(AgentSlot(p.agent_id, (0, 0, 0), 0), JobSlot(p.job_id, (0, 0, 0), 1))
            for p in pairs
        )
        assert len({p.agent_id for p in pairs}) == len(pairs) == len({p.job_id for p in pairs})


seg = st.tuples(*[st.integers(-50, 50).map(float)] * 3)


@PROPERTY
@given(seg, seg, seg, seg)
def test_segment_distance_matches_dense_sampling(p1, q1, p2, q2) -> None:  # type: ignore[no-untyped-def]
    """The closed-form segment distance is never above a sampled distance and close to the min."""
    exact = segment_distance(p1, q1, p2, q2)
    t = np.linspace(0.0, 1.0, 61)[:, None]
    a = np.array(p1) + (np.array(q1) - np.array(p1)) * t
    b = np.array(p2) + (np.array(q2) - np.array(p2)) * t
    sampled = float(np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)).min())
    assert exact <= sampled + 1e-6
    assert sampled - exact <= 2.0  # sampling resolution: segments ≤ ~175 units long


moves = st.lists(st.tuples(st.integers(0, 11), xy), min_size=1, max_size=60)


@PROPERTY
@given(st.lists(xy, min_size=2, max_size=12, unique=True), moves)
def test_property_19_coordinate_conflict_prevention_reserved_paths_keep_the_clearance(
    starts: list[tuple[float, float]], requests: list[tuple[int, tuple[float, float]]]
) -> None:
    """Property 19 (and the planning side of 15): whatever moves are requested, the moves the
    table admits keep every pair of agents' swept paths — so also their targets — at least the
    clearance (0.5 nm + margin) apart."""
    clearance = 7.0
    table = ReservationTable(clearance)
    spaced = [
        p for i, p in enumerate(starts) if all(math.dist(p, q) >= clearance for q in starts[:i])
    ]
    for i, (x, y) in enumerate(spaced):
        table.park(f"a{i}", (x, y, 0.0))
    for index, (x, y) in requests:
        agent = f"a{index % len(spaced)}"
        current = table.get(agent)
        assert current is not None
        here = current.end  # arrive first, then ask for the next move
        table.park(agent, here)
        if table.is_free(agent, here, (x, y, 0.0)):
            table.reserve(agent, here, (x, y, 0.0))
        assert min_clearance(table.reservations()) >= clearance
