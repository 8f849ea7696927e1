"""The shared world model: a seeded crystal surface whose defects can be imaged and repaired.

::

    surface = Surface.generate(seed=7, width=500, height=500, n_defects=30)
    worst = max(surface.defects, key=lambda d: d.severity)
    z = surface.height_at(worst.x_m, worst.y_m)   # metres
    surface.remove_defect(worst.id)               # repaired: the bump is gone
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from atomlab.core.errors import InvalidInputError, NotFoundError
from atomlab.surface.defects import (
    MAX_SEVERITY,
    MIN_SEVERITY,
    Blob,
    Defect,
    DefectKind,
    blob_height,
    blob_heights,
    defect_blobs,
)
from atomlab.surface.lattice import (
    DEFAULT_CORRUGATION_M,
    DEFAULT_LATTICE_CONSTANT,
    DEFAULT_STEP_HEIGHT_M,
    LATTICE_UNIT_M,
    Lattice,
    StepEdge,
)

DEFAULT_WIDTH = 500
DEFAULT_HEIGHT = 500
DEFAULT_N_DEFECTS = 30
DEFAULT_N_STEPS = 2
MIN_DEFECT_SPACING = 40
"""Defects are placed at least this far apart (lattice units), so each images as itself."""

KIND_WEIGHTS: tuple[tuple[DefectKind, float], ...] = (
    (DefectKind.VACANCY, 0.35),
    (DefectKind.ADATOM, 0.30),
    (DefectKind.CONTAMINATION, 0.20),
    (DefectKind.STEP_EDGE, 0.15),
)

_CELL = 50
"""Side of a spatial-index cell in lattice units (5 nm)."""


@dataclass(frozen=True, slots=True)
class _Index:
    """Immutable snapshot of the defects and a cell -> blobs lookup; swapped whole on mutation."""

    defects: tuple[Defect, ...]
    by_id: dict[int, Defect]
    blobs: tuple[Blob, ...]
    cells: dict[tuple[int, int], tuple[Blob, ...]]
    shape: tuple[int, int]


class Surface:
    """A crystal surface with seeded defects; the same seed always gives the same surface.

    Reads are lock-free (they see an immutable snapshot); mutations (:meth:`remove_defect`,
    :meth:`add_defect`) are serialised and bump :attr:`version`. Safe to share between threads.
    """

    def __init__(self, lattice: Lattice, defects: Iterable[Defect] = (), *, seed: int = 0) -> None:
        self.lattice = lattice
        self.seed = seed
        self._lock = threading.Lock()
        self._version = 0
        defects = tuple(defects)
        ids = [d.id for d in defects]
        if len(set(ids)) != len(ids):
            raise InvalidInputError("defect ids must be unique", ids=ids)
        self._next_id = max(ids, default=0) + 1
        self._index = self._build_index(defects)

    # ----------------------------------------------------------------- construction
    @classmethod
    def generate(
        cls,
        seed: int = 0,
        *,
        width: int = DEFAULT_WIDTH,
        height: int = DEFAULT_HEIGHT,
        n_defects: int = DEFAULT_N_DEFECTS,
        n_steps: int = DEFAULT_N_STEPS,
        lattice_constant: int = DEFAULT_LATTICE_CONSTANT,
        corrugation_m: float = DEFAULT_CORRUGATION_M,
        step_height_m: float = DEFAULT_STEP_HEIGHT_M,
    ) -> Surface:
        """A random but reproducible surface.

        With ``n_defects >= 4`` every kind occurs at least once (step-edge defects need
        ``n_steps >= 1``).
        """
        if n_defects < 0 or n_steps < 0:
            raise InvalidInputError(
                f"n_defects and n_steps must be >= 0, got {n_defects} and {n_steps}",
                n_defects=n_defects,
                n_steps=n_steps,
            )
        try:
            lattice_probe = Lattice(width, height, lattice_constant)
        except ValueError as exc:
            raise InvalidInputError(str(exc), width=width, height=height) from None
        rng = random.Random(f"surface:{seed}")
        steps = tuple(
            StepEdge(lattice_probe.snap(int(width * (k + 1) / (n_steps + 1)), 0)[0])
            for k in range(n_steps)
        )
        lattice = Lattice(
            width=width,
            height=height,
            lattice_constant=lattice_constant,
            corrugation_m=corrugation_m,
            step_height_m=step_height_m,
            steps=steps,
        )
        defects = _place_defects(rng, lattice, n_defects)
        return cls(lattice, defects, seed=seed)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Surface:
        """Rebuild a surface written by :meth:`to_dict` (repairs included)."""
        try:
            lattice = Lattice(
                width=int(data["width"]),
                height=int(data["height"]),
                lattice_constant=int(data["lattice_constant"]),
                corrugation_m=float(data["corrugation_m"]),
                step_height_m=float(data["step_height_m"]),
                steps=tuple(StepEdge(int(x)) for x in data["steps"]),
            )
            defects = [Defect.from_dict(d) for d in data["defects"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"not a surface description: {exc}") from None
        return cls(lattice, defects, seed=int(data.get("seed", 0)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description; ``Surface.from_dict(s.to_dict())`` is the same surface."""
        lat = self.lattice
        return {
            "seed": self.seed,
            "unit_m": LATTICE_UNIT_M,
            "width": lat.width,
            "height": lat.height,
            "lattice_constant": lat.lattice_constant,
            "corrugation_m": lat.corrugation_m,
            "step_height_m": lat.step_height_m,
            "steps": [s.x for s in lat.steps],
            "defects": [d.to_dict() for d in self.defects],
        }

    # ----------------------------------------------------------------- reading
    @property
    def width(self) -> int:
        return self.lattice.width

    @property
    def height(self) -> int:
        return self.lattice.height

    @property
    def steps(self) -> tuple[StepEdge, ...]:
        return self.lattice.steps

    @property
    def defects(self) -> tuple[Defect, ...]:
        """The defects still present, ordered by id."""
        return self._index.defects

    @property
    def version(self) -> int:
        """Increases by one on every change (repair or new defect)."""
        return self._version

    def defect(self, defect_id: int) -> Defect:
        """The defect with ``defect_id``; raises :class:`NotFoundError` if absent (or repaired)."""
        found = self._index.by_id.get(defect_id)
        if found is None:
            raise NotFoundError(
                f"no defect with id {defect_id} on this surface (it may have been repaired)",
                defect_id=defect_id,
            )
        return found

    def defects_within(self, x: int, y: int, radius: int) -> list[Defect]:
        """Defects whose site lies within ``radius`` lattice units of ``(x, y)`` (periodic)."""
        w, h = self.width, self.height
        found = []
        for d in self._index.defects:
            dx = (d.x - x + w / 2) % w - w / 2
            dy = (d.y - y + h / 2) % h - h / 2
            if dx * dx + dy * dy <= radius * radius:
                found.append(d)
        return found

    def height_at(self, x_m: float, y_m: float) -> float:
        """Surface height in metres at ``(x_m, y_m)``: terraces, atomic corrugation and defects."""
        z = self.lattice.base_height_at(x_m, y_m)
        index = self._index
        w_m, h_m = self.lattice.width_m, self.lattice.height_m
        nx, ny = index.shape
        cell = (
            int((x_m % w_m) / (_CELL * LATTICE_UNIT_M)) % nx,
            int((y_m % h_m) / (_CELL * LATTICE_UNIT_M)) % ny,
        )
        for blob in index.cells.get(cell, ()):
            dx = (x_m - blob.x_m + 0.5 * w_m) % w_m - 0.5 * w_m
            dy = (y_m - blob.y_m + 0.5 * h_m) % h_m - 0.5 * h_m
            z += blob_height(blob, dx, dy)
        return z

    def heights(self, xs_m: NDArray[np.float64], ys_m: NDArray[np.float64]) -> NDArray[np.float64]:
        """Vectorised :meth:`height_at` over arrays of the same shape."""
        xs = np.asarray(xs_m, dtype=np.float64)
        ys = np.asarray(ys_m, dtype=np.float64)
        z = self.lattice.base_heights(xs, ys)
        w_m, h_m = self.lattice.width_m, self.lattice.height_m
        for blob in self._index.blobs:
            dx = np.mod(xs - blob.x_m + 0.5 * w_m, w_m) - 0.5 * w_m
            dy = np.mod(ys - blob.y_m + 0.5 * h_m, h_m) - 0.5 * h_m
            z += blob_heights(blob, dx, dy)
        return z

    def height_map(self, pixels: int = 128) -> NDArray[np.float64]:
        """The whole surface as a ``pixels x pixels`` height image (row = y, column = x), metres."""
        xs = (np.arange(pixels) + 0.5) * self.lattice.width_m / pixels
        ys = (np.arange(pixels) + 0.5) * self.lattice.height_m / pixels
        gx, gy = np.meshgrid(xs, ys)
        return self.heights(gx, gy)

    # ----------------------------------------------------------------- changing
    def remove_defect(self, defect_id: int) -> Defect:
        """Repair a defect: it disappears from :attr:`defects` and from the height map."""
        with self._lock:
            removed = self.defect(defect_id)
            remaining = tuple(d for d in self._index.defects if d.id != defect_id)
            self._index = self._build_index(remaining)
            self._version += 1
            return removed

    repair = remove_defect

    def add_defect(self, kind: DefectKind | str, x: int, y: int, severity: int) -> Defect:
        """Create a defect (a tip crash, a new adsorbate) at the atom site nearest ``(x, y)``."""
        try:
            kind = DefectKind(kind)
        except ValueError:
            choices = ", ".join(k.value for k in DefectKind)
            raise InvalidInputError(
                f"unknown defect kind {kind!r}; use one of {choices}", field="kind", value=kind
            ) from None
        if not MIN_SEVERITY <= severity <= MAX_SEVERITY:
            raise InvalidInputError(
                f"severity must be {MIN_SEVERITY}..{MAX_SEVERITY}, got {severity}",
                field="severity",
                value=severity,
            )
        sx, sy = self.lattice.snap(x, y)
        with self._lock:
            defect = Defect(self._next_id, kind, sx, sy, severity)
            self._next_id += 1
            self._index = self._build_index((*self._index.defects, defect))
            self._version += 1
            return defect

    def __repr__(self) -> str:
        return (
            f"Surface(seed={self.seed}, width={self.width}, height={self.height}, "
            f"defects={len(self.defects)})"
        )

    # ----------------------------------------------------------------- internals
    def _build_index(self, defects: tuple[Defect, ...]) -> _Index:
        ordered = tuple(sorted(defects, key=lambda d: d.id))
        blobs: list[Blob] = []
        cells: dict[tuple[int, int], list[Blob]] = {}
        nx = max(1, math.ceil(self.lattice.width / _CELL))
        ny = max(1, math.ceil(self.lattice.height / _CELL))
        cell_m = _CELL * LATTICE_UNIT_M
        for defect in ordered:
            for blob in defect_blobs(
                defect, step_height_m=self.lattice.step_height_m, seed=self.seed
            ):
                blobs.append(blob)
                reach = blob.reach_m
                for cx in range(
                    math.floor((blob.x_m - reach) / cell_m),
                    math.floor((blob.x_m + reach) / cell_m) + 1,
                ):
                    for cy in range(
                        math.floor((blob.y_m - reach) / cell_m),
                        math.floor((blob.y_m + reach) / cell_m) + 1,
                    ):
                        key = (cx % nx, cy % ny)
                        bucket = cells.setdefault(key, [])
                        if blob not in bucket:
                            bucket.append(blob)
        return _Index(
            defects=ordered,
            by_id={d.id: d for d in ordered},
            blobs=tuple(blobs),
            cells={key: tuple(value) for key, value in cells.items()},
            shape=(nx, ny),
        )


def _place_defects(rng: random.Random, lattice: Lattice, n_defects: int) -> list[Defect]:
    kinds = [k for k, _ in KIND_WEIGHTS if lattice.steps or k is not DefectKind.STEP_EDGE]
    weights = [w for k, w in KIND_WEIGHTS if k in kinds]
    chosen = kinds[: min(n_defects, len(kinds))]
    chosen += rng.choices(kinds, weights=weights, k=n_defects - len(chosen))
    placed: list[Defect] = []
    for number, kind in enumerate(chosen, start=1):
        x, y = _free_site(rng, lattice, kind, placed)
        placed.append(Defect(number, kind, x, y, rng.randint(MIN_SEVERITY, MAX_SEVERITY)))
    return placed


def _free_site(
    rng: random.Random, lattice: Lattice, kind: DefectKind, placed: list[Defect]
) -> tuple[int, int]:
    """A site for a new defect, at least MIN_DEFECT_SPACING from the others if one can be found."""
    w, h = lattice.width, lattice.height
    candidate = (0, 0)
    for _ in range(200):
        if kind is DefectKind.STEP_EDGE:
            step = rng.choice(lattice.steps)
            candidate = lattice.snap(step.x, rng.randrange(h))
        else:
            candidate = lattice.snap(rng.randrange(w), rng.randrange(h))
            if _near_step(lattice, candidate[0]):
                continue
        if all(_distance(lattice, candidate, (d.x, d.y)) >= MIN_DEFECT_SPACING for d in placed):
            return candidate
    return candidate


def _near_step(lattice: Lattice, x: int) -> bool:
    return any(abs(x - step.x) < MIN_DEFECT_SPACING // 2 for step in lattice.steps)


def _distance(lattice: Lattice, a: tuple[int, int], b: tuple[int, int]) -> float:
    w, h = lattice.width, lattice.height
    dx = (a[0] - b[0] + w / 2) % w - w / 2
    dy = (a[1] - b[1] + h / 2) % h - h / 2
    return math.hypot(dx, dy)
