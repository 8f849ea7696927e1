"""The shared world: a crystal surface on an integer lattice (0.1 nm units) with seeded defects.

The STM simulator images it; the swarm service repairs it. It imports only :mod:`atomlab.core`::

    from atomlab.surface import Surface
    surface = Surface.generate(seed=0)
    surface.defects[0]             # Defect(id=1, kind=DefectKind.VACANCY, x=39, y=15, ...)
    surface.height_at(2e-9, 3e-9) # metres
"""

from atomlab.surface.crystal import Surface
from atomlab.surface.defects import MAX_SEVERITY, MIN_SEVERITY, Defect, DefectKind
from atomlab.surface.lattice import (
    DEFAULT_LATTICE_CONSTANT,
    DEFAULT_STEP_HEIGHT_M,
    GRID_TOLERANCE,
    LATTICE_UNIT_M,
    UNITS_PER_NM,
    Lattice,
    OffGridError,
    StepEdge,
    nm_to_units,
    units_to_nm,
)
from atomlab.surface.shared import SurfaceFollower, load_surface, save_surface

__all__ = [
    "DEFAULT_LATTICE_CONSTANT",
    "DEFAULT_STEP_HEIGHT_M",
    "GRID_TOLERANCE",
    "LATTICE_UNIT_M",
    "MAX_SEVERITY",
    "MIN_SEVERITY",
    "UNITS_PER_NM",
    "Defect",
    "DefectKind",
    "Lattice",
    "OffGridError",
    "StepEdge",
    "Surface",
    "SurfaceFollower",
    "load_surface",
    "nm_to_units",
    "save_surface",
    "units_to_nm",
]
