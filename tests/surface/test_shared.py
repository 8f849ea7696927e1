"""One surface shared by two processes through a file: atomic saves, followers that apply it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atomlab.core.errors import InvalidInputError
from atomlab.surface import Surface, SurfaceFollower, load_surface, save_surface


def test_a_saved_surface_loads_back_as_the_same_surface(tmp_path: Path) -> None:
    surface = Surface.generate(4, width=150, height=150, n_defects=6, n_steps=1)
    surface.remove_defect(surface.defects[0].id)
    path = save_surface(surface, tmp_path / "shared" / "surface.json")
    loaded = load_surface(path)
    assert loaded.to_dict() == surface.to_dict()
    assert json.loads(path.read_text())["version"] == surface.version
    assert [p.name for p in path.parent.iterdir()] == ["surface.json"]  # no temp file left


def test_a_follower_applies_the_repairs_another_process_wrote(tmp_path: Path) -> None:
    path = tmp_path / "surface.json"
    writer = Surface.generate(2, width=200, height=200, n_defects=5, n_steps=1)
    save_surface(writer, path)
    reader = load_surface(path)
    follower = SurfaceFollower(reader, path)
    assert follower.poll() == []  # nothing changed since it started following

    repaired = [writer.defects[1].id, writer.defects[3].id]
    for defect_id in repaired:
        writer.remove_defect(defect_id)
    save_surface(writer, path)

    assert sorted(follower.poll()) == sorted(repaired)
    assert [d.id for d in reader.defects] == [d.id for d in writer.defects]
    assert follower.poll() == []  # the same file again changes nothing


def test_a_defect_added_to_the_file_appears_in_the_follower(tmp_path: Path) -> None:
    path = tmp_path / "surface.json"
    writer = Surface.generate(1, width=120, height=120, n_defects=2, n_steps=0)
    save_surface(writer, path)
    reader = load_surface(path)
    follower = SurfaceFollower(reader, path)
    added = writer.add_defect("adatom", 60, 30, 7)
    save_surface(writer, path)
    follower.poll()
    assert any(
        (d.kind, d.x, d.y, d.severity) == (added.kind, added.x, added.y, 7) for d in reader.defects
    )
    follower.poll()
    assert len(reader.defects) == 3  # not added twice


def test_a_broken_file_is_skipped_and_counted_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "surface.json"
    surface = Surface.generate(3, width=100, height=100, n_defects=3, n_steps=0)
    save_surface(surface, path)
    follower = SurfaceFollower(load_surface(path), path)
    path.write_text("{ half a file", encoding="utf-8")
    assert follower.poll() == []
    assert follower.errors == 1
    assert len(follower.surface.defects) == 3


@pytest.mark.parametrize(
    ("content", "needle"),
    [("not json", "not a surface file"), ("[1, 2]", "expected a JSON object"), ("{}", "surface")],
)
def test_a_bad_surface_file_is_refused_with_its_path(
    tmp_path: Path, content: str, needle: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InvalidInputError) as caught:
        load_surface(path)
    assert needle in caught.value.message
    assert str(path) in caught.value.message


def test_a_missing_surface_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot read the surface file"):
        load_surface(tmp_path / "nope.json")
