"""One surface shared by several processes through a JSON file (the STM and the swarm simulator).

The swarm simulator repairs defects; the STM simulator must then image the surface without them.
Each process holds its own :class:`~atomlab.surface.Surface`; one of them (the one that changes
it) writes the file after every change, the others follow it::

    save_surface(surface, path)                  # atomically: a reader never sees half a file
    follower = SurfaceFollower(surface, path)    # in the reading process
    follower.poll()                              # -> ids of the defects removed since last time

Following applies removals (repairs). A defect that appears in the file but not in the
follower's surface is added with the file's kind, position and severity (under a new id).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from atomlab.core.errors import InvalidInputError
from atomlab.surface.crystal import Surface
from atomlab.surface.defects import Defect


def save_surface(surface: Surface, path: Path | str) -> Path:
    """Write ``surface`` (with its current defects and version) to ``path`` atomically."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = {**surface.to_dict(), "version": surface.version}
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"))
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_surface_file(path: Path | str) -> dict[str, Any]:
    """The JSON description in ``path``; :class:`InvalidInputError` names the file and the fix."""
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read the surface file {source}: {exc.strerror or exc}",
            field="surface",
            value=str(source),
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(
            f"{source} is not a surface file (JSON written by atomlab): {exc}",
            field="surface",
            value=str(source),
        ) from None
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"{source} is not a surface file: expected a JSON object",
            field="surface",
            value=str(source),
        )
    return data


def load_surface(path: Path | str) -> Surface:
    """The surface described in ``path`` (written by :func:`save_surface`)."""
    data = read_surface_file(path)
    try:
        return Surface.from_dict(data)
    except InvalidInputError as exc:
        raise InvalidInputError(
            f"{path}: {exc.message}", field="surface", value=str(path)
        ) from None


class SurfaceFollower:
    """Keeps ``surface`` in step with the file another process writes (see module doc)."""

    def __init__(self, surface: Surface, path: Path | str) -> None:
        self.surface = surface
        self.path = Path(path)
        self._seen: tuple[int, int] | None = self._signature()
        self.removed: list[int] = []
        self.errors = 0

    def _signature(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def poll(self) -> list[int]:
        """Apply the file's changes since the last poll; returns the ids removed now.

        A file that cannot be read or parsed is skipped (counted in :attr:`errors`) and read
        again at the next change: a follower never fails its host process.
        """
        signature = self._signature()
        if signature is None or signature == self._seen:
            return []
        self._seen = signature
        try:
            data = read_surface_file(self.path)
            wanted = [Defect.from_dict(d) for d in data["defects"]]
        except (InvalidInputError, KeyError, TypeError, ValueError):
            self.errors += 1
            return []
        wanted_ids = {d.id for d in wanted}
        removed = []
        for defect in self.surface.defects:
            if defect.id not in wanted_ids:
                self.surface.remove_defect(defect.id)
                removed.append(defect.id)
        have = {(d.kind, d.x, d.y) for d in self.surface.defects}
        for defect in wanted:
            if defect.id not in {d.id for d in self.surface.defects} and (
                (defect.kind, defect.x, defect.y) not in have
            ):
                self.surface.add_defect(defect.kind, defect.x, defect.y, defect.severity)
        self.removed.extend(removed)
        return removed
