"""Many agents and a long queue must not freeze the service (issue 13, found 4: 100 agents with
a queue blocked the event loop for over 60 s). Small sizes here; benchmarks/swarm.py runs 256
agents and 5,000 queued defects and measures /health."""

from __future__ import annotations

import asyncio

from atomlab.core.clock import FakeClock
from atomlab.swarm.coordinator import DISPATCH_SLICE, closest_violation
from atomlab.swarm.reservations import min_clearance
from tests.swarm.harness import agents_up, coordinator, reading

AGENTS = 96
DEFECTS = 1500


def _grid(count: int, spacing_nm: float, columns: int) -> dict[str, tuple[float, float]]:
    return {
        f"a{i:03d}": (
            round((i % columns) * spacing_nm + 1.0, 1),
            round((i // columns) * spacing_nm + 1.0, 1),
        )
        for i in range(count)
    }


async def test_a_big_dispatch_round_lets_the_event_loop_run_between_slices() -> None:
    coord = coordinator(FakeClock(), bounds_x_nm=(0.0, 100.0), bounds_y_nm=(0.0, 100.0))
    agents_up(coord, _grid(AGENTS, 8.0, 12))
    coord.ingest(
        [
            reading((i % 100) + 0.5, (i // 100) * 6 + 0.3, severity=1 + i % 10)
            for i in range(DEFECTS)
        ],
        correlation_id="bulk",
    )
    while coord._inbox:  # planned in turns of PLAN_MAX_BATCH
        await coord.plan_pending()
    assert len(coord.queue) == DEFECTS

    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    beat = asyncio.create_task(ticker())
    issued = await coord.dispatch()
    done = True
    await beat
    slices = -(-AGENTS // DISPATCH_SLICE)
    assert ticks >= slices - 1  # the loop ran between the slices, not after the whole round
    repairs = [c for c in issued if c.defect_id]  # the rest are step-aside moves
    # Most agents got work at once; the rest are kept off paths that cross (safety first).
    assert len(repairs) >= AGENTS // 2
    assert len({c.agent_id for c in issued}) == len(issued)
    assert min_clearance(coord.reservations.reservations()) >= coord.limits.clearance_units
    # Severity before everything else: nothing issued is less severe than what still waits.
    waiting = max((d.severity for d in coord.queue.peek()), default=0)
    assert min(coord.defects[c.defect_id].severity for c in repairs) >= waiting


def test_the_separation_check_finds_the_first_close_pair_at_any_size() -> None:
    far = [(float(10 * i), 0.0, 0.0) for i in range(2000)]  # above the pairwise limit: k-d tree
    assert closest_violation(far, 5.0) is None
    close = far[:]
    close[700] = (7001.0, 0.0, 0.0)  # its neighbours stay 9 and 11 units away
    close[1500] = (7003.0, 0.0, 0.0)  # 2 units from point 700
    found = closest_violation(close, 5.0)
    assert found is not None and found[:2] == (700, 1500)
    small = [(0.0, 0.0, 0.0), (100.0, 0.0, 0.0), (102.0, 0.0, 0.0)]
    assert closest_violation(small, 5.0) == (1, 2, 2.0)
    assert closest_violation([(1e300, 0.0, 0.0), (0.0, 0.0, 0.0)], 5.0) is None
