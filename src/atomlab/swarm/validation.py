"""Safety rules every defect and command passes before anything moves.

Thermal budget (≤ 120 °C), no-go zones, the 0.1 nm grid, 0.5 nm separation and the
"unrepairable" verdict for a defect that cannot be repaired safely::

    limits = SafetyLimits.from_settings(settings.swarm)
    validator = SafetyValidator(limits)
    validator.unrepairable_reason(Point(65, 35, 0))   # "inside no-go zone 0 ..." or None
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

from atomlab.core.settings import SwarmSettings
from atomlab.surface import UNITS_PER_NM, OffGridError, nm_to_units
from atomlab.swarm.models import (
    Command,
    Point,
    SensorCoordinateIn,
)

MAX_TEMPERATURE_C = 120.0
SEPARATION_NM = 0.5


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in 0.1 nm units, bounds inclusive."""

    lo: Point
    hi: Point

    def contains(self, p: Point) -> bool:
        return (
            self.lo.x <= p.x <= self.hi.x
            and self.lo.y <= p.y <= self.hi.y
            and self.lo.z <= p.z <= self.hi.z
        )

    def describe(self) -> str:
        (x0, y0, z0), (x1, y1, z1) = self.lo.nm(), self.hi.nm()
        return f"x {x0}–{x1} nm, y {y0}–{y1} nm, z {z0}–{z1} nm"


@dataclass(frozen=True)
class Rejection:
    """Why one input value was refused: the field, the value and the rule it broke."""

    field: str
    value: object
    constraint: str

    @property
    def message(self) -> str:
        return f"{self.field}={self.value!r} rejected: {self.constraint}"


@dataclass(frozen=True)
class SafetyLimits:
    """The numbers the validators enforce, in lattice units where they are lengths."""

    bounds: Box = Box(Point(0, 0, 0), Point(200, 200, 20))
    max_temperature_c: float = MAX_TEMPERATURE_C
    separation_units: float = SEPARATION_NM * UNITS_PER_NM
    margin_units: float = 2.0
    no_go: tuple[Box, ...] = field(default_factory=tuple)

    @property
    def clearance_units(self) -> float:
        """The distance planned paths keep from each other: separation plus a drift margin."""
        return self.separation_units + self.margin_units

    @classmethod
    def from_settings(cls, swarm: SwarmSettings) -> SafetyLimits:
        def box(x: tuple[float, float], y: tuple[float, float], z: tuple[float, float]) -> Box:
            lo = Point(_snap(min(x)), _snap(min(y)), _snap(min(z)))
            hi = Point(_snap(max(x)), _snap(max(y)), _snap(max(z)))
            return Box(lo, hi)

        return cls(
            bounds=box(swarm.bounds_x_nm, swarm.bounds_y_nm, swarm.bounds_z_nm),
            max_temperature_c=min(swarm.max_temperature_c, MAX_TEMPERATURE_C),
            separation_units=swarm.separation_nm * UNITS_PER_NM,
            margin_units=swarm.planning_margin_nm * UNITS_PER_NM,
            no_go=tuple(box(zone.x, zone.y, zone.z) for zone in swarm.no_go_zones),
        )


def _snap(value_nm: float) -> int:
    return round(value_nm * UNITS_PER_NM)


class AtomicPrecisionValidator:
    """Sensor input must already lie on the 0.1 nm grid and inside the configured bounds."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits

    def check_coordinate(self, coordinate: SensorCoordinateIn, prefix: str) -> list[Rejection]:
        rejections: list[Rejection] = []
        lo, hi = self.limits.bounds.lo.nm(), self.limits.bounds.hi.nm()
        for axis, low, high in zip("xyz", lo, hi, strict=True):
            value = getattr(coordinate, axis)
            name = f"{prefix}.{axis}"
            try:
                nm_to_units(value)
            except OffGridError as exc:
                rejections.append(Rejection(name, value, str(exc)))
                continue
            if not low <= value <= high:
                constraint = f"out of bounds: must be within [{low}, {high}] nm"
                rejections.append(Rejection(name, value, constraint))
        return rejections

    @staticmethod
    def aligned(values_nm: Sequence[float]) -> bool:
        try:
            for value in values_nm:
                nm_to_units(value)
        except OffGridError:
            return False
        return True


class ThermalSafetyValidator:
    """No command may allow a temperature above the limit (120 °C at most)."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.limit = limits.max_temperature_c

    def violation(self, command: Command) -> str | None:
        if not command.thermal_budget_c <= self.limit:
            return f"thermal budget {command.thermal_budget_c} °C exceeds {self.limit} °C"
        return None

    def agent_may_heat(self, temperature_c: float, budget_c: float) -> bool:
        """An agent at ``temperature_c`` may start a job whose budget is ``budget_c``."""
        return temperature_c < min(budget_c, self.limit)


class StructuralSafetyValidator:
    """No target inside a configured no-go zone (e.g. the gate dielectric)."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.zones = limits.no_go
        self.bounds = limits.bounds

    def violation(self, target: Point) -> str | None:
        for index, zone in enumerate(self.zones):
            if zone.contains(target):
                return f"inside no-go zone {index} ({zone.describe()})"
        if not self.bounds.contains(target):
            return f"outside the work area ({self.bounds.describe()})"
        return None


class CollisionDetector:
    """Two agents closer than the separation radius is a collision (the E-stop backstop)."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.separation = limits.separation_units

    def violations(self, positions: dict[str, Point]) -> list[tuple[str, str, float]]:
        """Pairs of agents closer than the separation, with their distance in units."""
        found = []
        for (a, pa), (b, pb) in combinations(sorted(positions.items()), 2):
            d = pa.distance(pb)
            if d < self.separation:
                found.append((a, b, d))
        return found


class SafetyValidator:
    """All rules together: the verdict for a defect, the violations of a command."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        self.precision = AtomicPrecisionValidator(limits)
        self.thermal = ThermalSafetyValidator(limits)
        self.structural = StructuralSafetyValidator(limits)
        self.collision = CollisionDetector(limits)

    def unrepairable_reason(self, target: Point) -> str | None:
        """Yield protection: why a defect at ``target`` must not be repaired, or None."""
        return self.structural.violation(target)

    def command_violations(self, command: Command) -> list[str]:
        found = [self.thermal.violation(command), self.structural.violation(command.target)]
        return [v for v in found if v is not None]
