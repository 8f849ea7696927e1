"""Models and safety validators: properties 1, 12, 13, 14, 15 (detector) and 16."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from atomlab.core.clock import FakeClock
from atomlab.surface import OffGridError, nm_to_units, units_to_nm
from atomlab.swarm.models import (
    Action,
    Command,
    Point,
    SensorCoordinateIn,
)
from atomlab.swarm.validation import (
    AtomicPrecisionValidator,
    Box,
    SafetyLimits,
    SafetyValidator,
)
from tests.swarm.harness import PROPERTY, swarm_settings

LIMITS = SafetyLimits(
    bounds=Box(Point(0, 0, 0), Point(200, 200, 20)),
    no_go=(Box(Point(60, 30, 0), Point(65, 40, 20)),),
)
grid_units = st.integers(min_value=-100_000, max_value=100_000)
off_grid_nm = st.integers(min_value=-10_000, max_value=10_000).flatmap(
    lambda whole: st.integers(min_value=1, max_value=9).map(lambda k: whole / 10 + k / 100)
)


@PROPERTY
@given(grid_units)
def test_property_1_coordinate_precision_every_one_decimal_value_is_accepted_exactly(
    units: int,
) -> None:
    """Property 1: a value with at most one decimal converts to exact 0.1 nm units and back."""
    nm = units / 10
    assert nm_to_units(nm) == units
    assert units_to_nm(nm_to_units(nm)) == round(nm, 1)


@PROPERTY
@given(off_grid_nm)
def test_property_1_coordinate_precision_values_off_the_grid_are_refused(nm: float) -> None:
    """Property 1: a value with a second decimal (not a multiple of 0.1 nm) is refused."""
    with pytest.raises(OffGridError, match=r"0\.1 nm grid"):
        nm_to_units(nm)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(OffGridError, match="finite"):
        nm_to_units(bad)


def test_sensor_coordinate_model_names_the_field_that_is_off_grid() -> None:
    with pytest.raises(ValidationError) as err:
        SensorCoordinateIn(x=1.0, y=2.25, severity=3)
    assert err.value.errors()[0]["loc"] == ("y",)
    assert "0.1 nm grid" in str(err.value)


@PROPERTY
@given(
    st.integers(-50, 250).map(lambda u: u / 10),
    st.integers(-50, 250).map(lambda u: u / 10),
)
def test_property_1_bounds_values_outside_the_configured_box_are_refused_with_their_field(
    x: float, y: float
) -> None:
    """Property 1: accepted coordinates lie inside the configured bounds; others name the axis."""
    rejections = AtomicPrecisionValidator(LIMITS).check_coordinate(
        SensorCoordinateIn(x=x, y=y, severity=1), "coordinates.0"
    )
    inside_x, inside_y = 0.0 <= x <= 20.0, 0.0 <= y <= 20.0
    assert {r.field for r in rejections} == (
        ({"coordinates.0.x"} if not inside_x else set())
        | ({"coordinates.0.y"} if not inside_y else set())
    )
    assert all("out of bounds" in r.constraint for r in rejections)


def _command(budget: float, target: Point) -> Command:
    return Command(
        command_id="c",
        defect_id="d",
        agent_id="a",
        action=Action.REPAIR,
        target=target,
        thermal_budget_c=budget,
        correlation_id="x",
        created_at=FakeClock().now(),
    )


@PROPERTY
@given(st.floats(min_value=0.1, max_value=400, allow_nan=False))
def test_property_12_thermal_safety_no_command_may_exceed_120_c(budget: float) -> None:
    """Property 12: a command's thermal budget above 120 °C is a violation; at or below is not."""
    violations = SafetyValidator(LIMITS).command_violations(_command(budget, Point(10, 10, 0)))
    assert bool(violations) == (budget > 120.0)


def test_thermal_limit_cannot_be_configured_above_120_c() -> None:
    from atomlab.core.errors import ConfigError

    with pytest.raises(ConfigError, match="max_temperature_c"):
        swarm_settings(max_temperature_c=150.0)


@PROPERTY
@given(st.integers(0, 200), st.integers(0, 200), st.integers(0, 20))
def test_property_13_no_go_zone_avoidance_targets_inside_a_zone_are_refused(
    x: int, y: int, z: int
) -> None:
    """Property 13: a command whose target lies in a no-go zone is a violation."""
    target = Point(x, y, z)
    inside = 60 <= x <= 65 and 30 <= y <= 40
    violations = SafetyValidator(LIMITS).command_violations(_command(90.0, target))
    assert bool(violations) == inside
    if inside:
        assert "no-go zone 0" in violations[0]


@PROPERTY
@given(st.integers(-1000, 1000), st.integers(-1000, 1000), st.integers(0, 20))
def test_property_14_atomic_grid_alignment_command_targets_are_multiples_of_0_1_nm(
    x: int, y: int, z: int
) -> None:
    """Property 14: every target converts to nm with at most one decimal and back exactly."""
    nm = Point(x, y, z).nm()
    assert AtomicPrecisionValidator.aligned(nm)
    assert Point.from_nm(*nm) == Point(x, y, z)


@PROPERTY
@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), min_size=2, max_size=8))
def test_property_15_collision_detector_flags_exactly_the_pairs_closer_than_0_5_nm(
    coords: list[tuple[int, int]],
) -> None:
    """Property 15 (the backstop): every pair of agents closer than 0.5 nm is reported."""
    positions = {f"a{i}": Point(x, y) for i, (x, y) in enumerate(coords)}
    found = {(a, b) for a, b, _ in SafetyValidator(LIMITS).collision.violations(positions)}
    names = sorted(positions)
    expected = {
        (a, b)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if positions[a].distance(positions[b]) < 5.0
    }
    assert found == expected


@PROPERTY
@given(st.integers(0, 200), st.integers(0, 200))
def test_property_16_unrepairable_marking_a_defect_failing_a_safety_rule_gets_a_reason(
    x: int, y: int
) -> None:
    """Property 16: a defect breaking a safety rule is marked unrepairable with the reason."""
    reason = SafetyValidator(LIMITS).unrepairable_reason(Point(x, y, 0))
    assert (reason is not None) == (60 <= x <= 65 and 30 <= y <= 40)


def test_limits_from_settings_convert_nm_to_units() -> None:
    s = swarm_settings(no_go_zones=[{"x": [6.0, 6.5], "y": [3.0, 4.0]}], separation_nm=0.5)
    limits = SafetyLimits.from_settings(s)
    assert limits.no_go[0] == Box(Point(60, 30, 0), Point(65, 40, 20))
    assert limits.separation_units == 5.0
    assert limits.bounds.hi == Point(200, 200, 20)
