"""The JSON side of the output contract (docs/cli.md), without Typer, Rich or settings.

Shared by :mod:`atomlab.cli.output` (every command) and :mod:`atomlab.cli.fastpath` (the few
commands answered before the full command line loads), so both print the same bytes::

    write_success({"name": "bias_v", "value": 0.1})            # {"ok": true, ...} on stdout
    write_error("not_found", "no signal ...", 3, json_mode=True) # the error envelope
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any


def to_jsonable(value: Any) -> Any:
    """Convert paths, datetimes, enums, dataclasses and pydantic models for ``json.dumps``.

    A non-finite float (``nan``, ``inf``) becomes ``null``: JSON has no such numbers, and a reader
    that follows the standard (``jq``, JavaScript) rejects the whole object over one of them.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, Enum):
        return value.value
    return value


def write_success(payload: Mapping[str, Any]) -> None:
    """``{"ok": true, ...payload}`` as one line on stdout."""
    body = {"ok": True, **to_jsonable(dict(payload))}
    sys.stdout.write(dumps(body) + "\n")
    sys.stdout.flush()


def write_text(text: str) -> None:
    """A result for people, on stdout."""
    sys.stdout.write(text + ("" if text.endswith("\n") else "\n"))
    sys.stdout.flush()


def write_error(
    error_type: str, message: str, exit_code: int, *, json_mode: bool, details: Any = None
) -> None:
    """The error envelope on stdout (JSON mode) or one ``error:`` line on stderr."""
    if json_mode:
        err: dict[str, Any] = {"type": error_type, "message": message}
        if details:
            err["details"] = to_jsonable(details)
        envelope = {"ok": False, "error": err, "exit_code": exit_code}
        sys.stdout.write(dumps(envelope) + "\n")
        sys.stdout.flush()
    else:
        one_line = " ".join(message.split("\n"))  # the contract: one line on stderr
        sys.stderr.write(f"error: {one_line}\n")
        sys.stderr.flush()


def dumps(body: Mapping[str, Any]) -> str:
    """Strict JSON on one line; anything without a JSON form is written as its text."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, default=str)
