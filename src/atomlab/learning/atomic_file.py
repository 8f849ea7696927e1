"""Files that appear whole or not at all: write beside the target, then rename over it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from atomlab.core.errors import InvalidInputError


@contextlib.contextmanager
def atomic_output(path: Path, *, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename.

    On any error the temporary file is removed and ``path`` is left as it was. A target that is
    a folder, or a folder that cannot be written, is :class:`InvalidInputError` (exit 3).
    """
    path = Path(path)
    if path.is_dir():
        raise InvalidInputError(
            f"{what} {str(path)!r} is a folder; give a file name", field=what, value=str(path)
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot create the folder of {what} {str(path)!r}: {exc.strerror or exc}",
            field=what,
            value=str(path),
        ) from None
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield temp
        temp.replace(path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise InvalidInputError(
            f"cannot write {what} {str(path)!r}: {exc.strerror or exc}",
            field=what,
            value=str(path),
        ) from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
