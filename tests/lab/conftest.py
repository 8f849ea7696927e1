"""Synthetic scan images: the seeded surface as a perfectly tracking STM would image it."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from atomlab.lab.detection import ScanImage
from atomlab.sim import Disturbances, SimulatorThread, start_simulator_in_thread
from atomlab.surface import Surface

NOISE_M = 3e-12


def synthetic_scan(
    surface: Surface, *, margin_nm: float = 1.5, pixel_nm: float = 0.16, seed: int = 0
) -> ScanImage:
    """The whole surface plus a margin, imaged as a height map with white noise (no feedback
    lag, so forward and backward traces are the same up to their noise)."""
    side_nm = surface.width / 10
    frame = side_nm + 2 * margin_nm
    pixels = int(-(-frame / pixel_nm // 16) * 16)
    centres = (np.arange(pixels) + 0.5) * frame / pixels - margin_nm  # surface frame, nm
    xs, ys = np.meshgrid(centres * 1e-9, centres[::-1] * 1e-9)  # row 0 is the top
    heights = surface.heights(xs, ys)
    rng = np.random.default_rng(seed)
    return ScanImage(
        forward=heights + rng.normal(0, NOISE_M, heights.shape),
        backward=heights + rng.normal(0, NOISE_M, heights.shape),
        frame_center_nm=(0.0, 0.0),
        frame_size_nm=(frame, frame),
        origin_nm=(side_nm / 2, side_nm / 2),
    )


@pytest.fixture
def small_stm() -> Iterator[tuple[SimulatorThread, Surface]]:
    """The STM simulator (real Nanonis TCP on 127.0.0.1:0) over a 10 x 10 nm surface with a
    vacancy and an adatom, no tip changes or drift."""
    surface = Surface.generate(6, width=100, height=100, n_defects=2, n_steps=0)
    with start_simulator_in_thread(
        seed=6, ports=[0], surface=surface, disturbances=Disturbances.none()
    ) as sim:
        yield sim, surface
