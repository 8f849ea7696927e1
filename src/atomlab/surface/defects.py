"""Surface defects: their kinds, severities and the height bump or pit each one adds to the surface.

A defect sits on an atom site (integer lattice coordinates, 0.1 nm units). Its severity (1–10)
scales how large it looks in an image and how urgent a repair is.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from atomlab.surface.lattice import LATTICE_UNIT_M

MIN_SEVERITY = 1
MAX_SEVERITY = 10


class DefectKind(StrEnum):
    """What is wrong at a site."""

    VACANCY = "vacancy"
    """A missing surface atom: a shallow pit."""
    ADATOM = "adatom"
    """An extra atom on top of the surface: a sharp bump."""
    CONTAMINATION = "contamination"
    """An adsorbed cluster (molecules, dirt): a broad, irregular mound."""
    STEP_EDGE = "step_edge"
    """A kink or protrusion on a step edge, elongated along the step."""


@dataclass(frozen=True, slots=True)
class Defect:
    """One defect: ``id`` is unique within its surface; ``x``/``y`` are lattice units (0.1 nm)."""

    id: int
    kind: DefectKind
    x: int
    y: int
    severity: int

    def __post_init__(self) -> None:
        if not MIN_SEVERITY <= self.severity <= MAX_SEVERITY:
            raise ValueError(
                f"defect severity must be {MIN_SEVERITY}..{MAX_SEVERITY}, got {self.severity}"
            )

    @property
    def x_m(self) -> float:
        return self.x * LATTICE_UNIT_M

    @property
    def y_m(self) -> float:
        return self.y * LATTICE_UNIT_M

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "x": self.x,
            "y": self.y,
            "severity": self.severity,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Defect:
        return cls(
            id=int(data["id"]),
            kind=DefectKind(data["kind"]),
            x=int(data["x"]),
            y=int(data["y"]),
            severity=int(data["severity"]),
        )


@dataclass(frozen=True, slots=True)
class Blob:
    """An anisotropic Gaussian height term: ``amplitude * exp(-dx²/2sx² - dy²/2sy²)``, metres."""

    x_m: float
    y_m: float
    amplitude_m: float
    sigma_x_m: float
    sigma_y_m: float

    @property
    def reach_m(self) -> float:
        """Distance beyond which the term is negligible (4 sigma)."""
        return 4.0 * max(self.sigma_x_m, self.sigma_y_m)


ANGSTROM = 1e-10


def defect_blobs(defect: Defect, *, step_height_m: float, seed: int) -> tuple[Blob, ...]:
    """The Gaussian terms that draw ``defect`` in the height map; deterministic per (seed, id)."""
    s = defect.severity
    x, y = defect.x_m, defect.y_m
    if defect.kind is DefectKind.VACANCY:
        sigma = (2.0 + 0.15 * s) * ANGSTROM
        return (Blob(x, y, -(0.5 + 0.05 * s) * ANGSTROM, sigma, sigma),)
    if defect.kind is DefectKind.ADATOM:
        sigma = (2.5 + 0.15 * s) * ANGSTROM
        return (Blob(x, y, (1.0 + 0.1 * s) * ANGSTROM, sigma, sigma),)
    if defect.kind is DefectKind.STEP_EDGE:
        return (
            Blob(
                x, y, step_height_m * (0.4 + 0.05 * s), 3.0 * ANGSTROM, (4.0 + 1.5 * s) * ANGSTROM
            ),
        )
    rng = random.Random(f"contamination:{seed}:{defect.id}")
    sigma = (4.0 + 0.8 * s) * ANGSTROM
    height = (1.5 + 0.35 * s) * ANGSTROM
    blobs = [Blob(x, y, height, sigma, sigma)]
    for _ in range(2):
        angle = rng.uniform(0.0, 2.0 * math.pi)
        dist = rng.uniform(0.4, 0.9) * sigma
        sub = sigma * rng.uniform(0.4, 0.7)
        blobs.append(
            Blob(
                x + dist * math.cos(angle),
                y + dist * math.sin(angle),
                height * rng.uniform(0.3, 0.7),
                sub,
                sub * rng.uniform(0.7, 1.3),
            )
        )
    return tuple(blobs)


def blob_height(blob: Blob, dx_m: float, dy_m: float) -> float:
    """The height ``blob`` adds at offset ``(dx, dy)`` from its centre (none beyond its reach, in
    x or y: the surface's cell index finds a blob only that far, so both paths cut it there)."""
    reach = blob.reach_m
    if abs(dx_m) > reach or abs(dy_m) > reach:
        return 0.0
    ex = dx_m / blob.sigma_x_m
    ey = dy_m / blob.sigma_y_m
    return blob.amplitude_m * math.exp(-0.5 * (ex * ex + ey * ey))


def blob_heights(
    blob: Blob, dx_m: NDArray[np.float64], dy_m: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Vectorised :func:`blob_height`."""
    ex = dx_m / blob.sigma_x_m
    ey = dy_m / blob.sigma_y_m
    reach = blob.reach_m
    inside = (np.abs(dx_m) <= reach) & (np.abs(dy_m) <= reach)
    result: NDArray[np.float64] = np.where(
        inside, blob.amplitude_m * np.exp(-0.5 * (ex * ex + ey * ey)), 0.0
    )
    return result
