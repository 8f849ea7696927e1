"""The defect-free crystal: a square atomic lattice on terraces separated by straight step edges.

Lattice coordinates are integers in units of 0.1 nm (:data:`LATTICE_UNIT_M`); heights are metres.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

LATTICE_UNIT_M = 1e-10
"""One lattice coordinate unit in metres (0.1 nm)."""

UNITS_PER_NM = 10
"""Lattice coordinate units per nanometre."""

GRID_TOLERANCE = 1e-6
"""In lattice units: ``12.0000001`` is on the 0.1 nm grid (float noise), ``12.5`` is not."""


class OffGridError(ValueError):
    """A value in nm is not a multiple of 0.1 nm (more than one decimal), or not finite."""


def nm_to_units(value: float) -> int:
    """``1.2`` → ``12`` (lattice units); :class:`OffGridError` for ``1.25``, NaN or infinity."""
    if not math.isfinite(value):
        raise OffGridError(f"{value!r} is not a finite number of nm")
    scaled = value * UNITS_PER_NM
    units = round(scaled)
    if abs(scaled - units) > GRID_TOLERANCE:
        raise OffGridError(f"{value!r} nm is not on the 0.1 nm grid (use at most one decimal)")
    return int(units)


def units_to_nm(units: int) -> float:
    """``12`` → ``1.2`` (the nearest float, suitable for JSON)."""
    return round(units / UNITS_PER_NM, 1)


DEFAULT_LATTICE_CONSTANT = 3
"""Atom spacing in lattice units (0.3 nm, close to a (100) face of a noble metal)."""

DEFAULT_CORRUGATION_M = 1.0e-11
"""Peak-to-peak amplitude of the atomic corrugation (10 pm)."""

DEFAULT_STEP_HEIGHT_M = 2.0e-10
"""Height of one monatomic step (0.2 nm)."""

STEP_WIDTH_M = 1.5e-10
"""Width of the tanh profile that smooths a step edge."""


@dataclass(frozen=True, slots=True)
class StepEdge:
    """A straight step edge along y at lattice column ``x``; the terrace beyond it is higher."""

    x: int

    @property
    def x_m(self) -> float:
        return self.x * LATTICE_UNIT_M


@dataclass(frozen=True, slots=True)
class Lattice:
    """Geometry of the clean surface: its size, atom spacing, corrugation and terraces.

    The surface repeats periodically outside ``[0, width) x [0, height)`` so a scan frame anywhere
    images something.
    """

    width: int
    height: int
    lattice_constant: int = DEFAULT_LATTICE_CONSTANT
    corrugation_m: float = DEFAULT_CORRUGATION_M
    step_height_m: float = DEFAULT_STEP_HEIGHT_M
    steps: tuple[StepEdge, ...] = ()

    def __post_init__(self) -> None:
        if self.width < 10 or self.height < 10:
            raise ValueError(
                "a surface must be at least 10 x 10 lattice units, "
                f"got {self.width} x {self.height}"
            )
        if self.lattice_constant < 1:
            raise ValueError(f"lattice_constant must be >= 1, got {self.lattice_constant}")

    @property
    def width_m(self) -> float:
        return self.width * LATTICE_UNIT_M

    @property
    def height_m(self) -> float:
        return self.height * LATTICE_UNIT_M

    def snap(self, x: int, y: int) -> tuple[int, int]:
        """The atom site nearest to ``(x, y)``, wrapped into the surface."""
        a = self.lattice_constant
        return (round(x / a) * a) % self.width, (round(y / a) * a) % self.height

    def base_height_at(self, x_m: float, y_m: float) -> float:
        """Height of the clean surface (terraces plus atomic corrugation) at a point, in metres."""
        xw = x_m % self.width_m
        z = 0.0
        for step in self.steps:
            z += 0.5 * self.step_height_m * (1.0 + math.tanh((xw - step.x_m) / STEP_WIDTH_M))
        k = 2.0 * math.pi / (self.lattice_constant * LATTICE_UNIT_M)
        return z + 0.25 * self.corrugation_m * (math.cos(k * x_m) + math.cos(k * y_m))

    def base_heights(
        self, xs_m: NDArray[np.float64], ys_m: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """Vectorised :meth:`base_height_at`."""
        xw = np.mod(xs_m, self.width_m)
        z = np.zeros(np.broadcast(xs_m, ys_m).shape, dtype=np.float64)
        for step in self.steps:
            z += 0.5 * self.step_height_m * (1.0 + np.tanh((xw - step.x_m) / STEP_WIDTH_M))
        k = 2.0 * math.pi / (self.lattice_constant * LATTICE_UNIT_M)
        return z + 0.25 * self.corrugation_m * (np.cos(k * xs_m) + np.cos(k * ys_m))
