"""Fixtures of the engine tests: a tiny in-memory pipeline and providers that misbehave on cue."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.logging import configure_logging
from atomlab.engine import (
    InMemoryMappingLoader,
    InMemoryPromptLoader,
    Pipeline,
    PipelineSpec,
    build_pipeline,
)
from atomlab.llm import Generation, GenerationRequest, OfflineProvider

Hook = Callable[[GenerationRequest[Any]], Awaitable[None]]

TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "description": "one item stage, levels from a catalogue, one map stage",
    "item": {"id": "id", "required": ["id", "text"]},
    "fanout": {"catalogue": "levels", "max_concurrent": 2},
    "schemas": {
        "Summary": {"summary": {"type": "str", "min_length": 1}},
        "Things": {"things": {"type": "list", "items": "Thing", "min_length": 1, "max_length": 3}},
        "Thing": {"name": "str", "grade": {"type": "enum", "values": ["a", "b"]}},
    },
    "stages": [
        {"name": "summary", "scope": "item", "prompt": "summary", "output": "Summary"},
        {"name": "things", "scope": "level", "prompt": "things", "output": "Things"},
        {
            "name": "mapping",
            "scope": "level",
            "kind": "map",
            "source": "things.things",
            "catalogues": ["tools"],
            "prompt": "mapping",
        },
    ],
}
TINY_PROMPTS = {
    "summary": "Summarise {{ item.text }}",
    "things": "Level {{ level.id }} of {{ item.id }} after {{ stages.summary.summary }}",
    "mapping": (
        "Map {{ sources }} onto {{ catalogue.name }} {{ catalogue.entries }} at {{ level.id }}"
    ),
}
TINY_CATALOGUES = {
    "levels": [{"id": str(n), "name": f"L{n}"} for n in range(1, 5)],
    "tools": [{"id": "T1", "name": "hammer"}, {"id": "T2", "name": "probe"}],
}


def tiny_pipeline(**changes: Any) -> Pipeline:
    spec = {**TINY_SPEC, **changes}
    return build_pipeline(
        PipelineSpec.model_validate(spec),
        prompts=InMemoryPromptLoader(TINY_PROMPTS),
        catalogues=InMemoryMappingLoader(TINY_CATALOGUES),
    )


def write_items(path: Path, count: int, *, start: int = 0) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for n in range(start, start + count):
            out.write(json.dumps({"id": f"item-{n:03d}", "text": f"text number {n}"}) + "\n")
    return path


class FakeProvider:
    """The offline answers, plus an async ``hook`` run before each call (block, fail, record)."""

    def __init__(self, hook: Hook | None = None, *, name: str = "fake", model: str = "fake-1"):
        self.name = name
        self.model = model
        self._inner = OfflineProvider(model=model)
        self._hook = hook
        self.requests: list[GenerationRequest[Any]] = []

    async def generate(self, request: GenerationRequest[Any]) -> Generation[Any]:
        self.requests.append(request)
        if self._hook is not None:
            await self._hook(request)
        generation = await self._inner.generate(request)
        return replace(generation, provider=self.name)

    def stages_called(self) -> list[str]:
        return [r.request_id.split(":", 2)[2] for r in self.requests]


@pytest.fixture(autouse=True)
def fresh_logging() -> None:
    """Bind logging to this test's stderr (a CLI test before may have bound a closed stream)."""
    configure_logging("WARNING", "console")


@pytest.fixture
def tiny() -> Pipeline:
    return tiny_pipeline()
