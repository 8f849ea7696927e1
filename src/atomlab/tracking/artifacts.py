"""Artifacts of a run: files copied into ``<run_dir>/artifacts/<name>`` with their size and hash.

``run.log_artifact("model.pt", kind="model")`` copies the file (through a temporary name and a
rename, so a reader never finds half a file), hashes it and returns the stored copy's path; the
run's ``run.json`` lists it under ``artifacts``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from pathlib import Path

from atomlab.core.errors import InvalidInputError
from atomlab.tracking.models import ArtifactRecord

ARTIFACTS_DIR = "artifacts"
ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=@-]{0,127}$")
ARTIFACT_KIND = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CHUNK = 1 << 20


def store_artifact(
    run_dir: Path, source: Path | str, *, name: str | None = None, kind: str | None = None
) -> ArtifactRecord:
    """Copy ``source`` into the run's artifacts folder; return its record (path relative)."""
    path = Path(source)
    try:
        is_file = path.is_file()
    except OSError as exc:  # a 10k-character name, a loop of links
        raise _bad_source(path, exc.strerror or str(exc)) from None
    if not is_file:
        reason = "it is a folder; log its files one by one" if path.is_dir() else "no such file"
        raise _bad_source(path, reason)
    stored_name = name if name is not None else path.name
    if not isinstance(stored_name, str) or not ARTIFACT_NAME.match(stored_name):
        raise InvalidInputError(
            f"artifact name {str(stored_name)[:80]!r} is not valid; use 1-128 letters, digits or "
            "'_ . + = @ -', starting with a letter, digit or '_' (no folders)",
            field="name",
            value=str(stored_name)[:80],
        )
    if kind is not None and (not isinstance(kind, str) or not ARTIFACT_KIND.match(kind)):
        raise InvalidInputError(
            f"artifact kind {str(kind)[:80]!r} is not valid; use 1-64 letters, digits or '_ . -'",
            field="kind",
            value=str(kind)[:80],
        )
    folder = Path(run_dir) / ARTIFACTS_DIR
    folder.mkdir(exist_ok=True)
    target = folder / stored_name
    tmp = folder / f".{stored_name}.{os.getpid()}.tmp"
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as src, tmp.open("wb") as dst:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copymode(path, tmp)
        tmp.replace(target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _bad_source(path, exc.strerror or str(exc)) from None
    return ArtifactRecord(
        name=stored_name,
        path=f"{ARTIFACTS_DIR}/{stored_name}",
        bytes=size,
        sha256=digest.hexdigest(),
        kind=kind,
    )


def _bad_source(path: Path, reason: str) -> InvalidInputError:
    shown = str(path)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return InvalidInputError(
        f"cannot log artifact {shown!r}: {reason}; pass the path of a readable file",
        field="path",
        value=shown,
    )


__all__ = ["ARTIFACTS_DIR", "store_artifact"]
