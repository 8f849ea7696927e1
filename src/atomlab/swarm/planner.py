"""Repair-route planning: severity classes first, then nearest neighbour + 2-opt within a class.

The deterministic planner is never longer than the naive route (property 8) by construction: it
returns the shorter of its own route and the naive one. The naive route visits the defects in
detection order inside each severity class, highest class first, because severity outranks
distance (the spec's precedence: safety > severity > fairness > distance)::

    path = plan_route([PlanStop("d1", Point(10, 0), 5, 0), ...], start=Point(0, 0))
    path.order, path.total_units, path.baseline_units

An LLM may propose an order (:class:`LlmRouteAdvisor`); it is used only when it is a valid
permutation, keeps the severity classes in order and is strictly shorter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby, pairwise
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, Field

from atomlab.core.clock import Clock, SystemClock
from atomlab.core.errors import CircuitOpenError
from atomlab.core.logging import get_logger
from atomlab.core.resilience import CircuitBreaker
from atomlab.llm import GenerationRequest, Provider, ProviderError
from atomlab.surface import units_to_nm
from atomlab.swarm.models import (
    Point,
)

MAX_TWO_OPT_PASSES = 30
IMPROVEMENT_EPSILON = 1e-9
LLM_FAILURE_THRESHOLD = 5
LLM_RESET_S = 30.0

PlanSource = Literal["heuristic", "naive", "llm", "empty"]
FloatArray = npt.NDArray[np.float64]

log = get_logger(__name__)


@dataclass(frozen=True)
class PlanStop:
    """One defect to visit; ``seq`` is its detection order."""

    defect_id: str
    position: Point
    severity: int
    seq: int


@dataclass(frozen=True)
class RepairPath:
    """A visiting order and its length, with the naive route's length for comparison."""

    order: tuple[str, ...]
    total_units: float
    baseline_units: float
    source: PlanSource

    @property
    def total_nm(self) -> float:
        return self.total_units / 10

    def describe(self) -> dict[str, object]:
        return {
            "order": list(self.order),
            "total_distance_nm": round(self.total_nm, 3),
            "naive_distance_nm": round(self.baseline_units / 10, 3),
            "source": self.source,
        }


def route_length(start: Point, stops: Sequence[PlanStop]) -> float:
    """Length (0.1 nm units) of the open route from ``start`` through ``stops`` in order."""
    total = 0.0
    here = start
    for stop in stops:
        total += here.distance(stop.position)
        here = stop.position
    return total


def naive_order(stops: Sequence[PlanStop]) -> list[PlanStop]:
    """Highest severity class first, detection order inside a class."""
    return sorted(stops, key=lambda s: (-s.severity, s.seq))


def plan_route(stops: Sequence[PlanStop], start: Point) -> RepairPath:
    """The deterministic plan: per severity class nearest neighbour then 2-opt; never worse
    than :func:`naive_order` (property 8)."""
    if not stops:
        return RepairPath((), 0.0, 0.0, "empty")
    naive = naive_order(stops)
    baseline = route_length(start, naive)
    planned: list[PlanStop] = []
    here = start
    for _, group in groupby(naive, key=lambda s: s.severity):
        members = list(group)
        ordered = _improve(here, _nearest_neighbour(here, members))
        planned.extend(ordered)
        here = ordered[-1].position
    length = route_length(start, planned)
    if length <= baseline:
        return RepairPath(tuple(s.defect_id for s in planned), length, baseline, "heuristic")
    return RepairPath(tuple(s.defect_id for s in naive), baseline, baseline, "naive")


def _coords(points: Sequence[Point]) -> FloatArray:
    return np.array([(p.x, p.y, p.z) for p in points], dtype=np.float64)


def _nearest_neighbour(start: Point, stops: list[PlanStop]) -> list[PlanStop]:
    if len(stops) <= 1:
        return list(stops)
    xyz = _coords([s.position for s in stops])
    remaining = np.ones(len(stops), dtype=bool)
    here = np.array((start.x, start.y, start.z), dtype=np.float64)
    order: list[int] = []
    for _ in range(len(stops)):
        d2 = ((xyz - here) ** 2).sum(axis=1)
        d2[~remaining] = np.inf
        nxt = int(np.argmin(d2))  # ties resolve to the earliest detected: deterministic
        order.append(nxt)
        remaining[nxt] = False
        here = xyz[nxt]
    return [stops[i] for i in order]


def _improve(start: Point, stops: list[PlanStop]) -> list[PlanStop]:
    """2-opt on an open route with a fixed start: reverse a segment while that shortens it."""
    n = len(stops)
    if n < 2:
        return stops
    order = np.arange(n)
    xyz = _coords([start] + [s.position for s in stops])  # row 0 is the start
    for _ in range(MAX_TWO_OPT_PASSES):
        improved = False
        for i in range(1, n):
            route = xyz[np.concatenate(([0], order + 1))]
            a, b = route[i - 1], route[i]
            c = route[i + 1 :]  # candidates j = i+1 .. n
            after = route[i + 2 :]  # Q[j+1] for j < n
            gain = _norm(c - a) - float(np.sqrt(((b - a) ** 2).sum()))
            closing = np.zeros(len(c))
            closing[: len(after)] = _norm(after - b) - _norm(after - c[: len(after)])
            delta = gain + closing
            j = int(np.argmin(delta))
            if delta[j] < -IMPROVEMENT_EPSILON:
                lo, hi = i - 1, i + j  # positions in ``order`` of Q[i] .. Q[i+1+j]
                order[lo : hi + 1] = order[lo : hi + 1][::-1]
                improved = True
        if not improved:
            break
    return [stops[int(k)] for k in order]


def _norm(v: FloatArray) -> FloatArray:
    result: FloatArray = np.sqrt((v * v).sum(axis=1))
    return result


# --- the advisory LLM planner ---------------------------------------------------------------


class RouteAnswer(BaseModel):
    """What the LLM is asked for: the defect ids in visiting order."""

    order: list[str] = Field(description="every defect id exactly once, in visiting order")


class LlmRouteAdvisor:
    """Asks an LLM for a route, with a timeout and a breaker (5 failures, 30 s); advisory only.

    :meth:`plan` always answers: the LLM's route when it is valid, keeps severity order and is
    strictly shorter than the deterministic plan, the deterministic plan otherwise.
    """

    def __init__(
        self,
        provider: Provider,
        *,
        timeout_s: float = 2.0,
        clock: Clock | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.provider = provider
        self.timeout_s = timeout_s
        self.clock = clock or SystemClock()
        self.breaker = breaker or CircuitBreaker(
            "swarm-llm",
            failure_threshold=LLM_FAILURE_THRESHOLD,
            reset_timeout_s=LLM_RESET_S,
            clock=self.clock,
            capability="swarm",
        )
        self.used = 0
        self.fallbacks = 0

    async def plan(
        self, stops: Sequence[PlanStop], start: Point, *, heuristic: RepairPath | None = None
    ) -> RepairPath:
        if heuristic is None:
            heuristic = plan_route(stops, start)
        if len(stops) < 3:
            return heuristic
        try:
            self.breaker.before_call()
        except CircuitOpenError:
            self.fallbacks += 1
            return heuristic
        try:
            answer = await asyncio.wait_for(self._ask(stops, start), timeout=self.timeout_s)
        except (TimeoutError, ProviderError) as exc:
            self.breaker.record_failure()
            self.fallbacks += 1
            log.warning("swarm.llm_planner_failed", error=str(exc) or type(exc).__name__)
            return heuristic
        self.breaker.record_success()
        candidate = self.accept(answer.order, stops, start, heuristic)
        if candidate is None:
            self.fallbacks += 1
            return heuristic
        self.used += 1
        return candidate

    @staticmethod
    def accept(
        order: Sequence[str], stops: Sequence[PlanStop], start: Point, heuristic: RepairPath
    ) -> RepairPath | None:
        """The LLM's order as a path when valid, severity-ordered and shorter; else None."""
        by_id = {s.defect_id: s for s in stops}
        if len(order) != len(by_id) or set(order) != set(by_id):
            return None
        route = [by_id[d] for d in order]
        if any(a.severity < b.severity for a, b in pairwise(route)):
            return None
        length = route_length(start, route)
        if length >= heuristic.total_units:
            return None
        return RepairPath(tuple(order), length, heuristic.baseline_units, "llm")

    async def _ask(self, stops: Sequence[PlanStop], start: Point) -> RouteAnswer:
        lines = [
            f"{s.defect_id}: x={units_to_nm(s.position.x)} y={units_to_nm(s.position.y)} "
            f"z={units_to_nm(s.position.z)} severity={s.severity}"
            for s in stops
        ]
        x, y, z = start.nm()
        prompt = (
            "Order these surface defects into the shortest open repair route starting at "
            f"x={x} y={y} z={z} nm. Visit higher severity first; inside one severity class "
            "minimise Euclidean travel. Answer with every id exactly once.\n" + "\n".join(lines)
        )
        request = GenerationRequest(prompt=prompt, schema=RouteAnswer)
        generation = await self.provider.generate(request)
        return generation.value
