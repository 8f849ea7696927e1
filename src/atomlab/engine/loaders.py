"""Where a pipeline's prompt templates and catalogues come from, injected so tests use fakes.

The engine never opens files by itself: a :class:`PromptLoader` returns template text by name and
a :class:`MappingLoader` returns catalogue entries by name. The shipped pipelines read their
package data through :class:`DirectoryPromptLoader` / :class:`DirectoryMappingLoader`; tests pass
:class:`InMemoryPromptLoader` / :class:`InMemoryMappingLoader`::

    prompts = InMemoryPromptLoader({"classify": "Classify {{ level }}"})
    catalogues = InMemoryMappingLoader({"repairs": [{"id": "R1", "name": "Anneal"}]})
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from atomlab.engine.errors import PipelineError

CatalogueEntry = dict[str, Any]

PROMPT_SUFFIX = ".md"
CATALOGUE_SUFFIX = ".json"


@runtime_checkable
class PromptLoader(Protocol):
    """Returns the text of the prompt template called ``name``."""

    def load_prompt(self, name: str) -> str: ...


@runtime_checkable
class MappingLoader(Protocol):
    """Returns the entries of the catalogue called ``name``; each entry has a string ``id``."""

    def load_catalogue(self, name: str) -> list[CatalogueEntry]: ...


class InMemoryPromptLoader:
    """Templates held in a dict (tests, and pipelines built in Python)."""

    def __init__(self, templates: Mapping[str, str]) -> None:
        self._templates = dict(templates)

    def load_prompt(self, name: str) -> str:
        if name not in self._templates:
            raise PipelineError(
                f"prompt template {name!r} is not defined; known: {sorted(self._templates)}",
                field="prompt",
                value=name,
            )
        return self._templates[name]


class InMemoryMappingLoader:
    """Catalogues held in a dict (tests, and pipelines built in Python)."""

    def __init__(self, catalogues: Mapping[str, list[CatalogueEntry]]) -> None:
        self._catalogues = {name: list(entries) for name, entries in catalogues.items()}

    def load_catalogue(self, name: str) -> list[CatalogueEntry]:
        if name not in self._catalogues:
            raise PipelineError(
                f"catalogue {name!r} is not defined; known: {sorted(self._catalogues)}",
                field="catalogue",
                value=name,
            )
        return validate_catalogue(name, self._catalogues[name])


class DirectoryPromptLoader:
    """Templates stored as ``<directory>/<name>.md`` (a folder or package data)."""

    def __init__(self, directory: Path | Traversable) -> None:
        self._directory = directory

    def load_prompt(self, name: str) -> str:
        path = self._directory / f"{name}{PROMPT_SUFFIX}"
        if not path.is_file():
            raise PipelineError(
                f"prompt template {name!r} not found at {path}; add {name}{PROMPT_SUFFIX} there",
                field="prompt",
                value=name,
            )
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise PipelineError(
                f"prompt template {name!r} at {path} is not UTF-8 (byte {exc.start + 1}); "
                "save it as UTF-8",
                field="prompt",
                value=name,
            ) from None
        except OSError as exc:
            raise PipelineError(
                f"prompt template {name!r} at {path} cannot be read ({exc.strerror or exc})",
                field="prompt",
                value=name,
            ) from None


class DirectoryMappingLoader:
    """Catalogues stored as ``<directory>/<name>.json`` holding a list of entries."""

    def __init__(self, directory: Path | Traversable) -> None:
        self._directory = directory

    def load_catalogue(self, name: str) -> list[CatalogueEntry]:
        path = self._directory / f"{name}{CATALOGUE_SUFFIX}"
        if not path.is_file():
            raise PipelineError(
                f"catalogue {name!r} not found at {path}; add {name}{CATALOGUE_SUFFIX} there",
                field="catalogue",
                value=name,
            )
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, OSError) as exc:
            raise PipelineError(
                f"catalogue {name!r} at {path} is not valid JSON: {exc}",
                field="catalogue",
                value=name,
            ) from None
        return validate_catalogue(name, entries)


def validate_catalogue(name: str, entries: Any) -> list[CatalogueEntry]:
    """Check ``entries`` is a list of objects with unique string ``id`` s; return it."""
    if not isinstance(entries, list) or not entries:
        raise PipelineError(
            f"catalogue {name!r} must be a non-empty JSON list of objects",
            field="catalogue",
            value=name,
        )
    seen: set[str] = set()
    for position, entry in enumerate(entries):
        entry_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(entry_id, str) or not entry_id:
            raise PipelineError(
                f"catalogue {name!r} entry {position} needs a non-empty string 'id'",
                field="catalogue",
                value=name,
            )
        if entry_id in seen:
            raise PipelineError(
                f"catalogue {name!r} repeats id {entry_id!r}; ids must be unique",
                field="catalogue",
                value=name,
            )
        seen.add(entry_id)
    return entries


__all__ = [
    "CatalogueEntry",
    "DirectoryMappingLoader",
    "DirectoryPromptLoader",
    "InMemoryMappingLoader",
    "InMemoryPromptLoader",
    "MappingLoader",
    "PromptLoader",
    "validate_catalogue",
]
