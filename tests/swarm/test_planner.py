"""Route planning: properties 7 and 8, and the advisory LLM planner (timeout, breaker)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atomlab.core.clock import FakeClock
from atomlab.core.resilience import BreakerState
from atomlab.core.settings import load_settings
from atomlab.llm import Generation, GenerationRequest, ProviderServerError, TokenUsage
from atomlab.llm.factory import make_provider
from atomlab.swarm.models import Point
from atomlab.swarm.planner import (
    LlmRouteAdvisor,
    PlanStop,
    RepairPath,
    RouteAnswer,
    naive_order,
    plan_route,
    route_length,
)
from tests.swarm.harness import PROPERTY

stop_lists = st.lists(
    st.tuples(st.integers(0, 500), st.integers(0, 500), st.integers(0, 20), st.integers(1, 10)),
    min_size=0,
    max_size=40,
).map(
    lambda rows: [
        PlanStop(f"d{i}", Point(x, y, z), severity, i) for i, (x, y, z, severity) in enumerate(rows)
    ]
)
starts = st.builds(Point, st.integers(0, 500), st.integers(0, 500), st.integers(0, 20))


@PROPERTY
@given(stop_lists, starts)
def test_property_8_path_optimization_route_is_never_longer_than_the_naive_route(
    stops: list[PlanStop], start: Point
) -> None:
    """Property 8: the planned route is never longer than visiting the defects in detection
    order (inside each severity class, highest class first: severity outranks distance)."""
    path = plan_route(stops, start)
    assert path.total_units <= route_length(start, naive_order(stops)) + 1e-9
    by_id = {s.defect_id: s for s in stops}
    assert path.total_units == pytest.approx(route_length(start, [by_id[d] for d in path.order]))


@PROPERTY
@given(
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500)), min_size=1, max_size=40),
    starts,
)
def test_property_8_path_optimization_single_class_is_never_longer_than_detection_order(
    rows: list[tuple[int, int]], start: Point
) -> None:
    """Property 8, literally: with one severity class, never longer than detection order."""
    stops = [PlanStop(f"d{i}", Point(x, y), 5, i) for i, (x, y) in enumerate(rows)]
    assert plan_route(stops, start).total_units <= route_length(start, stops) + 1e-9


@PROPERTY
@given(stop_lists, starts)
def test_property_7_severity_prioritization_higher_severity_is_visited_first(
    stops: list[PlanStop], start: Point
) -> None:
    """Property 7: no defect is visited before one of higher severity; every defect exactly once."""
    path = plan_route(stops, start)
    by_id = {s.defect_id: s for s in stops}
    severities = [by_id[d].severity for d in path.order]
    assert severities == sorted(severities, reverse=True)
    assert sorted(path.order) == sorted(by_id)


def test_heuristic_beats_detection_order_on_a_zigzag() -> None:
    stops = [PlanStop(f"d{i}", Point(0 if i % 2 else 1000, i * 10), 5, i) for i in range(20)]
    path = plan_route(stops, Point(0, 0))
    assert path.source == "heuristic"
    assert path.total_units < 0.5 * path.baseline_units


class ScriptedProvider:
    """A Provider that answers from a script: an order, an exception, or a hang."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, answers: Sequence[object]) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def generate(self, request: GenerationRequest) -> Generation:  # type: ignore[type-arg]
        self.calls += 1
        answer = self.answers[min(self.calls - 1, len(self.answers) - 1)]
        if answer == "hang":
            await asyncio.Event().wait()
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, list)
        return Generation(
            value=RouteAnswer(order=answer),
            usage=TokenUsage(),
            request_id=request.request_id,
            model=self.model,
            provider=self.name,
            raw_text="",
        )


LINE = [PlanStop(f"d{i}", Point(i * 10, 0), 5, i) for i in range(5)]


def _inflated(path: RepairPath) -> RepairPath:
    return RepairPath(path.order, path.total_units * 3, path.baseline_units * 3, "heuristic")


def test_llm_route_is_used_only_when_valid_severity_ordered_and_shorter() -> None:
    start = Point(0, 0)
    worse = _inflated(plan_route(LINE, start))
    good = ["d0", "d1", "d2", "d3", "d4"]
    assert LlmRouteAdvisor.accept(good, LINE, start, worse) is not None
    assert LlmRouteAdvisor.accept(good[:-1], LINE, start, worse) is None  # misses one
    assert LlmRouteAdvisor.accept([*good[:-1], "zz"], LINE, start, worse) is None  # unknown id
    assert LlmRouteAdvisor.accept(good, LINE, start, plan_route(LINE, start)) is None  # not shorter
    mixed = [PlanStop("hi", Point(100, 0), 9, 0), PlanStop("lo", Point(1, 0), 1, 1), *LINE[:2]]
    bad_order = ["lo", "hi", "d0", "d1"]
    assert (
        LlmRouteAdvisor.accept(bad_order, mixed, start, _inflated(plan_route(mixed, start))) is None
    )


def test_llm_advisor_falls_back_on_timeout_and_counts_it() -> None:
    provider = ScriptedProvider(["hang"])
    advisor = LlmRouteAdvisor(provider, timeout_s=0.01, clock=FakeClock())
    path = asyncio.run(advisor.plan(LINE, Point(0, 0)))
    assert path.source in {"heuristic", "naive"}
    assert advisor.fallbacks == 1 and advisor.used == 0


def test_llm_breaker_opens_after_5_failures_and_half_opens_after_30_s() -> None:
    clock = FakeClock()
    provider = ScriptedProvider([ProviderServerError("boom")])
    advisor = LlmRouteAdvisor(provider, timeout_s=1.0, clock=clock)

    async def run(times: int) -> None:
        for _ in range(times):
            await advisor.plan(LINE, Point(0, 0))

    asyncio.run(run(5))
    assert provider.calls == 5
    assert advisor.breaker.state is BreakerState.OPEN
    asyncio.run(run(3))
    assert provider.calls == 5  # open: the provider is not called
    clock.advance(30.0)
    assert advisor.breaker.state is BreakerState.HALF_OPEN
    asyncio.run(run(1))
    assert provider.calls == 6


def test_offline_provider_answer_never_makes_the_plan_worse() -> None:
    provider = make_provider(load_settings(environ={}).settings.llm, environ={})
    advisor = LlmRouteAdvisor(provider, clock=FakeClock())
    stops = [PlanStop(f"d{i}", Point(i * 7 % 50, i * 13 % 50), 5, i) for i in range(10)]
    path = asyncio.run(advisor.plan(stops, Point(0, 0)))
    assert path.total_units <= plan_route(stops, Point(0, 0)).total_units
    assert sorted(path.order) == sorted(s.defect_id for s in stops)
