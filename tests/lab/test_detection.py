"""Defects found in a topography image only, scored against the seeded surface afterwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atomlab.core.errors import InvalidInputError
from atomlab.lab import MATCH_TOLERANCE_NM, Located, ScanImage, detect_defects, match
from atomlab.surface import Defect, DefectKind, Lattice, StepEdge, Surface
from tests.lab.conftest import synthetic_scan


def truth_of(surface: Surface) -> list[Located]:
    return [
        Located(f"d{d.id}", d.x / 10, d.y / 10, d.kind.value, d.severity) for d in surface.defects
    ]


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_every_seeded_defect_is_found_within_the_tolerance_and_nothing_else(seed: int) -> None:
    surface = Surface.generate(seed, width=200, height=200, n_defects=12, n_steps=1)
    found = detect_defects(synthetic_scan(surface, seed=seed), keep_within_nm=(20.0, 20.0))
    detected = [Located(d.id, d.x_nm, d.y_nm, d.kind, d.severity) for d in found.detections]
    report = match(detected, truth_of(surface), period_nm=(20.0, 20.0))
    assert report.missed == []
    assert report.false_positives == []
    assert report.precision == report.recall == 1.0
    assert max(p.distance_nm for p in report.pairs) <= MATCH_TOLERANCE_NM
    # every kind the generator makes is named right (the kinds are what triage starts from)
    assert all(p.kind_detected == p.kind_true for p in report.pairs)


def test_a_defect_at_the_edge_is_reported_once_though_the_margin_shows_it_twice() -> None:
    lattice = Lattice(width=150, height=150, steps=())
    surface = Surface(lattice, [Defect(1, DefectKind.ADATOM, 3, 75, 6)], seed=1)
    found = detect_defects(synthetic_scan(surface), keep_within_nm=(15.0, 15.0))
    assert len(found.detections) == 1
    assert found.detections[0].x_nm == pytest.approx(0.3, abs=0.1)
    unfiltered = detect_defects(synthetic_scan(surface))
    assert len(unfiltered.detections) == 2  # the copy beyond the opposite edge, at x ~ 15.3


def test_a_clean_terraced_surface_gives_no_detections_and_finds_its_step() -> None:
    lattice = Lattice(width=150, height=150, steps=(StepEdge(75),))
    found = detect_defects(synthetic_scan(Surface(lattice, [])), keep_within_nm=(15.0, 15.0))
    assert found.detections == []
    assert any(abs(x - 7.5) < 0.15 for x in found.step_edges_nm)


def test_a_step_edge_defect_is_placed_on_the_edge() -> None:
    lattice = Lattice(width=150, height=150, steps=(StepEdge(75),))
    surface = Surface(lattice, [Defect(1, DefectKind.STEP_EDGE, 75, 60, 8)], seed=0)
    [found] = detect_defects(synthetic_scan(surface), keep_within_nm=(15.0, 15.0)).detections
    assert found.kind == "step_edge" and found.on_step
    assert found.x_nm == pytest.approx(7.5, abs=0.1)
    assert found.y_nm == pytest.approx(6.0, abs=0.2)


def test_a_pit_is_a_vacancy_and_a_broad_mound_is_contamination() -> None:
    lattice = Lattice(width=200, height=200, steps=())
    surface = Surface(
        lattice,
        [
            Defect(1, DefectKind.VACANCY, 60, 60, 9),
            Defect(2, DefectKind.CONTAMINATION, 150, 150, 6),
            Defect(3, DefectKind.ADATOM, 60, 150, 4),
        ],
        seed=5,
    )
    found = detect_defects(synthetic_scan(surface), keep_within_nm=(20.0, 20.0))
    kinds = {(round(d.x_nm), round(d.y_nm)): d.kind for d in found.detections}
    assert kinds == {(6, 6): "vacancy", (15, 15): "contamination", (6, 15): "adatom"}
    pit = next(d for d in found.detections if d.kind == "vacancy")
    assert pit.height_pm < 0


def test_two_defects_whose_skirts_touch_are_two_detections() -> None:
    lattice = Lattice(width=200, height=200, steps=())
    surface = Surface(
        lattice,
        [
            Defect(1, DefectKind.CONTAMINATION, 60, 100, 10),
            Defect(2, DefectKind.ADATOM, 93, 100, 9),
        ],
        seed=2,
    )
    found = detect_defects(synthetic_scan(surface), keep_within_nm=(20.0, 20.0))
    assert len(found.detections) == 2


def test_an_image_with_unscanned_lines_is_refused() -> None:
    surface = Surface.generate(0, width=100, height=100, n_defects=2, n_steps=0)
    image = synthetic_scan(surface)
    half = image.forward.copy()
    half[: half.shape[0] // 2] = np.nan
    with pytest.raises(InvalidInputError, match="incomplete"):
        detect_defects(ScanImage(half, None, image.frame_center_nm, image.frame_size_nm))


def test_a_too_small_or_mismatched_image_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="at least 8 x 8"):
        ScanImage(np.zeros((4, 4)), None, (0.0, 0.0), (1.0, 1.0))
    with pytest.raises(InvalidInputError, match="differ in shape"):
        ScanImage(np.zeros((16, 16)), np.zeros((16, 32)), (0.0, 0.0), (1.0, 1.0))


def test_pixel_positions_map_to_the_surface_frame() -> None:
    image = ScanImage(np.zeros((10, 20)), None, (1.0, -1.0), (20.0, 10.0), origin_nm=(5.0, 5.0))
    assert image.pixel_nm == (1.0, 1.0)
    assert image.surface_xy(0, 0) == (1.0 - 10 + 0.5 + 5, -1.0 + 5 - 0.5 + 5)
    assert image.surface_xy(9, 19) == (1.0 + 10 - 0.5 + 5, -1.0 - 5 + 0.5 + 5)


def test_on_a_periodic_surface_a_defect_on_its_edge_is_reported_once_inside() -> None:
    lattice = Lattice(width=150, height=150, steps=())
    surface = Surface(lattice, [Defect(1, DefectKind.ADATOM, 0, 75, 6)], seed=1)
    found = detect_defects(synthetic_scan(surface), period_nm=(15.0, 15.0))
    [only] = found.detections
    assert 0.0 <= only.x_nm < 15.0 and 0.0 <= only.y_nm < 15.0
    assert min(only.x_nm, 15.0 - only.x_nm) < 0.1 and only.y_nm == pytest.approx(7.5, abs=0.1)


def test_a_scan_saved_to_a_file_reads_back_the_same(tmp_path: Path) -> None:
    surface = Surface.generate(2, width=100, height=100, n_defects=2, n_steps=0)
    image = synthetic_scan(surface)
    loaded = ScanImage.load(image.save(tmp_path / "scans" / "before.npz"))
    assert np.array_equal(loaded.forward, image.forward)
    assert loaded.backward is not None and np.array_equal(loaded.backward, image.backward)
    assert (loaded.frame_size_nm, loaded.origin_nm, loaded.channel) == (
        image.frame_size_nm,
        image.origin_nm,
        image.channel,
    )
    only_forward = ScanImage(image.forward, None, image.frame_center_nm, image.frame_size_nm)
    assert ScanImage.load(only_forward.save(tmp_path / "f.npz")).backward is None
