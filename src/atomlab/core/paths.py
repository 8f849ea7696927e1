"""Checks of user-given paths at a command's boundary: each names the option, the path and the fix.

A path from a user may be 10,000 characters long, a folder where a file belongs, a file where a
folder belongs, or missing; :func:`input_file` and :func:`output_file` say so with exit 3 before
any work starts, instead of an ``OSError`` from deep inside::

    input_file(path, option="--input")             # an existing, readable regular file
    output_file(path, option="--output")           # a file name that can be created there
    folder(path, option="--logdir")                # a folder, or one that can be made there
"""

from __future__ import annotations

import os
from pathlib import Path

from atomlab.core.errors import InvalidInputError, NotFoundError

SHOWN_CHARS = 120
NAME_MAX = 255  # bytes per path component on every common file system


def shown(path: Path | str, limit: int = SHOWN_CHARS) -> str:
    """``path`` quoted, cut to ``limit`` characters (with its length) when longer."""
    text = str(path)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _too_long(path: Path) -> bool:
    return any(len(os.fsencode(part)) > NAME_MAX for part in path.parts)


def input_file(path: Path, *, option: str, what: str = "file") -> Path:
    """``path`` if it is an existing regular file (or a FIFO such as ``<(cmd)``); else exit 3."""
    try:
        if _too_long(path):
            raise InvalidInputError(
                f"{option} {shown(path)} has a name longer than {NAME_MAX} bytes; pass another "
                f"{what}",
                field=option,
                path=str(path)[:SHOWN_CHARS],
            )
        exists = os.path.lexists(path)
        if not exists:
            raise NotFoundError(
                f"{option} {shown(path)} does not exist; pass an existing {what}",
                field=option,
                path=str(path)[:SHOWN_CHARS],
            )
        if path.is_dir():
            raise InvalidInputError(
                f"{option} {shown(path)} is a folder; pass a {what}",
                field=option,
                path=str(path)[:SHOWN_CHARS],
            )
        if not path.exists():
            raise NotFoundError(
                f"{option} {shown(path)} is a broken link; pass an existing {what}",
                field=option,
                path=str(path)[:SHOWN_CHARS],
            )
        if not os.access(path, os.R_OK):
            raise InvalidInputError(
                f"{option} {shown(path)} cannot be read (permission denied); check its permissions",
                field=option,
                path=str(path)[:SHOWN_CHARS],
            )
    except OSError as exc:
        raise InvalidInputError(
            f"{option} {shown(path)} cannot be used: {_reason(exc)}; pass another {what}",
            field=option,
            path=str(path)[:SHOWN_CHARS],
        ) from None
    return path


def output_file(path: Path, *, option: str) -> Path:
    """``path`` if a file can be written there (nothing is created): not a folder, no file where
    one of its folders should be, no name longer than the file system allows; else exit 3."""
    fail = None
    try:
        if _too_long(path):
            fail = f"has a name longer than {NAME_MAX} bytes"
        elif path.is_dir():
            raise InvalidInputError(
                f"{option} {shown(path)} is a folder; pass a file name such as "
                f"{shown(path / 'out.jsonl')}",
                field=option,
                path=str(path)[:SHOWN_CHARS],
            )
        else:
            fail = _uncreatable(path)
    except OSError as exc:
        fail = f"cannot be written: {_reason(exc)}"
    if fail is not None:
        raise InvalidInputError(
            f"{option} {shown(path)} {fail}; pass another path",
            field=option,
            path=str(path)[:SHOWN_CHARS],
        )
    return path


def _uncreatable(path: Path) -> str | None:
    """Why ``path`` (which does not exist) could never be created, or None: the nearest
    existing ancestor must be a folder."""
    ancestor = path.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.is_dir():
        return None
    return f"cannot be created: {shown(ancestor)} is a file, not a folder"


def folder_problem(path: Path) -> str | None:
    """Why ``path`` can serve as no folder (nothing is created), or None: it is a file, a file
    stands where one of its parents should be, or a name is longer than the file system allows.
    The reason reads after the path: ``f"{shown(path)} {reason}"``."""
    try:
        if _too_long(path):
            return f"has a name longer than {NAME_MAX} bytes"
        if os.path.lexists(path):
            return None if path.is_dir() else "is a file, not a folder"
        return _uncreatable(path)
    except OSError as exc:
        return f"cannot be used: {_reason(exc)}"


def folder(path: Path, *, option: str) -> Path:
    """``path`` if it is a folder or one could be made there (:func:`folder_problem`); else
    exit 3."""
    fail = folder_problem(path)
    if fail is not None:
        raise InvalidInputError(
            f"{option} {shown(path)} {fail}; pass a folder",
            field=option,
            path=str(path)[:SHOWN_CHARS],
        )
    return path


__all__ = ["folder", "folder_problem", "input_file", "output_file", "shown"]
