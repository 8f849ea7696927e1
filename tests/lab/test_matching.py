"""Precision and recall: one-to-one pairs within the stated tolerance, periodic distances."""

from __future__ import annotations

import pytest

from atomlab.lab import MATCH_TOLERANCE_NM, Located, match


def at(ident: str, x: float, y: float, kind: str = "adatom") -> Located:
    return Located(ident, x, y, kind, 5)


def test_pairs_within_the_tolerance_count_and_the_rest_are_named() -> None:
    truth = [at("d1", 1.0, 1.0), at("d2", 5.0, 5.0), at("d3", 9.0, 2.0)]
    found = [at("a", 1.2, 1.1), at("b", 5.0, 5.6), at("c", 15.0, 15.0)]
    report = match(found, truth, tolerance_nm=0.5)
    assert [(p.detected, p.truth) for p in report.pairs] == [("a", "d1")]
    assert report.false_positives == ["b", "c"]
    assert report.missed == ["d2", "d3"]
    assert report.precision == pytest.approx(1 / 3)
    assert report.recall == pytest.approx(1 / 3)
    assert report.to_dict()["mean_error_nm"] == pytest.approx(0.2236, abs=1e-4)


def test_one_defect_is_matched_by_one_detection_only() -> None:
    report = match([at("a", 1.0, 1.0), at("b", 1.1, 1.0)], [at("d1", 1.05, 1.0)])
    assert report.true_positives == 1
    assert len(report.false_positives) == 1


def test_the_assignment_is_the_one_with_the_least_total_distance() -> None:
    # Greedy nearest-first would pair a-d2 (0.1) and leave b without a partner within 0.5 nm.
    truth = [at("d1", 0.0, 0.0), at("d2", 0.4, 0.0)]
    found = [at("a", 0.3, 0.0), at("b", 0.75, 0.0)]
    report = match(found, truth, tolerance_nm=0.5)
    assert {(p.detected, p.truth) for p in report.pairs} == {("a", "d1"), ("b", "d2")}


def test_distances_wrap_around_a_periodic_surface() -> None:
    report = match([at("a", 19.9, 0.1)], [at("d1", 0.1, 19.9)], period_nm=(20.0, 20.0))
    assert report.true_positives == 1
    assert report.pairs[0].distance_nm == pytest.approx(0.2828, abs=1e-4)
    assert match([at("a", 19.9, 0.1)], [at("d1", 0.1, 19.9)]).true_positives == 0


def test_kinds_and_severities_are_compared_on_the_pairs() -> None:
    report = match([at("a", 1.0, 1.0, "vacancy")], [Located("d1", 1.0, 1.0, "adatom", 8)])
    data = report.to_dict()
    assert data["kind_accuracy"] == 0.0
    assert data["severity_mean_abs_error"] == 3.0
    assert data["tolerance_nm"] == MATCH_TOLERANCE_NM


def test_nothing_found_on_nothing_is_perfect_and_nothing_found_on_something_is_not() -> None:
    assert match([], []).precision == match([], []).recall == 1.0
    report = match([], [at("d1", 1.0, 1.0)])
    assert report.recall == 0.0 and report.missed == ["d1"]
