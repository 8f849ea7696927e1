"""The world model: reproducible generation, imaging heights and repairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atomlab.core.errors import InvalidInputError, NotFoundError
from atomlab.surface import (
    DEFAULT_STEP_HEIGHT_M,
    LATTICE_UNIT_M,
    Defect,
    DefectKind,
    Surface,
)


def test_same_seed_gives_the_same_surface() -> None:
    assert Surface.generate(3).to_dict() == Surface.generate(3).to_dict()


def test_different_seeds_give_different_defects() -> None:
    assert Surface.generate(1).defects != Surface.generate(2).defects


def test_every_defect_kind_occurs_with_integer_sites_and_severity_in_range() -> None:
    surface = Surface.generate(0, n_defects=12)
    assert {d.kind for d in surface.defects} == set(DefectKind)
    for defect in surface.defects:
        assert isinstance(defect.x, int) and isinstance(defect.y, int)
        assert 0 <= defect.x < surface.width and 0 <= defect.y < surface.height
        assert 1 <= defect.severity <= 10
        assert defect.x % surface.lattice.lattice_constant == 0


def test_step_edge_defects_sit_on_a_step() -> None:
    surface = Surface.generate(5, n_defects=20)
    step_xs = {s.x for s in surface.steps}
    edges = [d for d in surface.defects if d.kind is DefectKind.STEP_EDGE]
    assert edges and all(d.x in step_xs for d in edges)


def test_defect_ids_are_unique_and_ordered() -> None:
    ids = [d.id for d in Surface.generate(9, n_defects=40).defects]
    assert ids == sorted(set(ids))


def test_adatoms_rise_and_vacancies_sink_relative_to_a_clean_copy() -> None:
    surface = Surface.generate(4, n_defects=12)
    clean = Surface(surface.lattice, seed=surface.seed)
    for defect in surface.defects:
        here = surface.height_at(defect.x_m, defect.y_m)
        base = clean.height_at(defect.x_m, defect.y_m)
        if defect.kind is DefectKind.VACANCY:
            assert here < base - 0.4e-10
        else:
            assert here > base + 0.4e-10


def test_terraces_rise_by_one_step_height_across_each_edge() -> None:
    surface = Surface.generate(0, n_defects=0, n_steps=2)
    step = surface.steps[0]
    # sample on atom rows so the corrugation cancels out of the difference
    a = surface.lattice.lattice_constant
    low = surface.height_at((step.x - 10 * a) * LATTICE_UNIT_M, 0.0)
    high = surface.height_at((step.x + 10 * a) * LATTICE_UNIT_M, 0.0)
    assert high - low == pytest.approx(DEFAULT_STEP_HEIGHT_M, rel=1e-3)


def test_atomic_corrugation_peak_to_peak_matches_the_lattice_setting() -> None:
    surface = Surface.generate(0, n_defects=0, n_steps=0)
    a_m = surface.lattice.lattice_constant * LATTICE_UNIT_M
    on_atom = surface.height_at(10 * a_m, 10 * a_m)
    hollow = surface.height_at(10.5 * a_m, 10.5 * a_m)
    assert on_atom - hollow == pytest.approx(surface.lattice.corrugation_m, rel=1e-6)


def test_removing_a_defect_repairs_the_height_map_and_bumps_the_version() -> None:
    surface = Surface.generate(2, n_defects=6)
    target = next(d for d in surface.defects if d.kind is DefectKind.ADATOM)
    before = surface.height_at(target.x_m, target.y_m)
    version = surface.version
    assert surface.remove_defect(target.id) == target
    assert target not in surface.defects
    assert surface.height_at(target.x_m, target.y_m) < before - 0.5e-10
    assert surface.version == version + 1
    with pytest.raises(NotFoundError, match=str(target.id)):
        surface.remove_defect(target.id)


def test_add_defect_snaps_to_a_site_and_gets_a_fresh_id() -> None:
    surface = Surface.generate(2, n_defects=3)
    new = surface.add_defect("adatom", 101, 52, 5)
    assert new.id == 4 and (new.x, new.y) == surface.lattice.snap(101, 52)
    assert surface.defect(new.id) == new
    with pytest.raises(InvalidInputError, match="kind"):
        surface.add_defect("crater", 0, 0, 5)
    with pytest.raises(InvalidInputError, match="severity"):
        surface.add_defect("adatom", 0, 0, 11)


def test_to_dict_is_json_and_round_trips_with_repairs() -> None:
    surface = Surface.generate(8)
    surface.remove_defect(surface.defects[0].id)
    text = json.dumps(surface.to_dict())
    again = Surface.from_dict(json.loads(text))
    assert again.to_dict() == surface.to_dict()
    assert again.height_at(1e-9, 2e-9) == surface.height_at(1e-9, 2e-9)


def test_from_dict_rejects_garbage() -> None:
    with pytest.raises(InvalidInputError):
        Surface.from_dict({"width": 5})


def test_defect_rejects_out_of_range_severity() -> None:
    with pytest.raises(ValueError, match="severity"):
        Defect(1, DefectKind.ADATOM, 0, 0, 0)


def test_generate_rejects_a_tiny_surface() -> None:
    with pytest.raises(InvalidInputError, match="10 x 10"):
        Surface.generate(0, width=5, height=5)


def test_defects_within_finds_neighbours_across_the_periodic_border() -> None:
    surface = Surface(Surface.generate(0, n_defects=0).lattice)
    corner = surface.add_defect("vacancy", 498, 0, 3)
    assert surface.defects_within(3, 0, 10) == [corner]
    assert surface.defects_within(250, 250, 10) == []


@settings(max_examples=30, deadline=None)
@given(
    xs=st.lists(st.floats(-1e-7, 1e-7), min_size=1, max_size=8),
    seed=st.integers(0, 5),
)
def test_vectorised_heights_match_pointwise_heights(xs: list[float], seed: int) -> None:
    """heights() and height_at() are the same function of position."""
    surface = Surface.generate(seed, n_defects=15)
    ys = [x * 0.7 + 3e-9 for x in xs]
    vector = surface.heights(np.array(xs), np.array(ys))
    pointwise = [surface.height_at(x, y) for x, y in zip(xs, ys, strict=True)]
    assert np.allclose(vector, pointwise, rtol=0, atol=1e-15)


def test_repairs_from_another_thread_never_break_a_reader() -> None:
    """Readers see a whole snapshot: every height is finite while defects come and go."""
    import threading

    surface = Surface.generate(6, n_defects=40)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                for d in surface.defects:
                    assert np.isfinite(surface.height_at(d.x_m, d.y_m))
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for defect in list(surface.defects):
            surface.remove_defect(defect.id)
            surface.add_defect("adatom", defect.x, defect.y, 3)
    finally:
        stop.set()
        reader.join()
    assert errors == []
    assert len(surface.defects) == 40 and surface.version == 80
