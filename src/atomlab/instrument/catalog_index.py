"""The packaged catalog's signals and specs as a small JSON index, read without YAML or pydantic.

Validating ``catalog.yaml`` (YAML parsing, pydantic models) costs more than the whole of a
``atomlab instrument get`` on the fast path, so the packaged catalog also ships as
``catalog_index.json``: each entry's name, label, unit, type and how to read it, plus the
SHA-256 of the ``catalog.yaml`` it was built from. :func:`load_index` returns None when the hash
no longer matches (someone edited the YAML and did not rebuild the index): callers then take the
full path, so a stale index is never used. Rebuild with::

    uv run python -m atomlab.instrument.catalog_index

and ``tests/instrument/test_catalog_index.py`` fails while the checked-in index is stale.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

PACKAGED_CATALOG: Final = "catalog.yaml"
INDEX_FILE: Final = "catalog_index.json"
SOURCE: Final = f"atomlab/instrument/{PACKAGED_CATALOG}"
_HERE: Final = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """What reading one catalog entry needs."""

    name: str
    label: str
    kind: str
    unit: str
    type: str
    command: str
    field: str
    args: dict[str, Any]


def coerce_value(type_: str, value: Any, *, float32: bool = False) -> float | int | bool:
    """A raw wire value as a catalog type (``float``, ``int``, ``bool``).

    ``float32``: the value came off the wire as a float32, so give the shortest decimal that is
    the same float32 (0.1, not 0.10000000149011612); it re-encodes bit-identically.
    """
    if type_ == "int":
        return round(float(value))
    if type_ == "bool":
        return bool(round(float(value)))
    if float32:
        from atomlab.instrument.protocol import shortest_float32

        return shortest_float32(value)
    return float(value)


def yaml_digest() -> str:
    return hashlib.sha256((_HERE / PACKAGED_CATALOG).read_bytes()).hexdigest()


def load_index() -> list[IndexEntry] | None:
    """The packaged catalog's entries, or None when the index is missing or stale."""
    try:
        data = json.loads((_HERE / INDEX_FILE).read_text(encoding="utf-8"))
        if data.get("sha256") != yaml_digest():
            return None
        return [IndexEntry(**raw) for raw in data["entries"]]
    except (OSError, ValueError, TypeError, KeyError):
        return None


def find(entries: list[IndexEntry], key: str) -> IndexEntry | None:
    """The entry whose name or label is ``key`` (case-insensitive), as ``Catalog.find``."""
    wanted = key.strip().lower()
    for entry in entries:
        if entry.name.lower() == wanted or entry.label.lower() == wanted:
            return entry
    return None


def not_found_message(entries: list[IndexEntry], key: str) -> str:
    """The message ``Catalog.find`` gives for an unknown name (the same words)."""
    names = ", ".join(e.name for e in entries)
    return f"no signal or spec called {key!r} in the catalog ({SOURCE}); known: {names}"


def build_index() -> dict[str, Any]:
    """The index of the packaged catalog, from the validated YAML."""
    from atomlab.instrument.catalog import load_catalog

    entries = [
        {
            "name": e.name,
            "label": e.label,
            "kind": e.kind,
            "unit": e.unit,
            "type": e.type,
            "command": e.get.command,
            "field": e.get.field,
            "args": dict(e.get.args),
        }
        for e in load_catalog()
    ]
    return {"sha256": yaml_digest(), "entries": entries}


def render_index() -> str:
    return json.dumps(build_index(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render_index()
    target = _HERE / INDEX_FILE
    if "--check" in args:
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        return 0 if current == text else 1
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
