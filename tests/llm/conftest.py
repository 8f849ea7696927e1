"""Shared test doubles for the llm tests: schemas and a scripted provider."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from atomlab.llm import Generation, GenerationRequest, TokenUsage


class Score(BaseModel):
    level: int = Field(ge=1, le=5)
    label: str = Field(min_length=3, max_length=12)


class Triage(BaseModel):
    """A defect classification, the shape the defect-triage pipeline asks for."""

    defect_class: Literal["vacancy", "adatom", "step_edge", "contamination"]
    severity: int = Field(ge=1, le=5)
    confidence: float = Field(gt=0.0, lt=1.0)
    rationale: str = Field(min_length=10)
    tags: list[str] = Field(min_length=1, max_length=4)
    score: Score
    note: str | None = None


DEFAULT_USAGE = TokenUsage(100, 50)


class ScriptedProvider:
    """Answers from a script: each entry is an exception to raise or None for a good answer.

    ``hold`` (an Event) keeps calls inside ``generate`` until set, so tests can see how many
    run at once.
    """

    name = "scripted"
    model = "scripted-1"

    def __init__(
        self,
        script: list[BaseException | None] | None = None,
        *,
        usage: TokenUsage = DEFAULT_USAGE,
        hold: asyncio.Event | None = None,
        on_call: Callable[[GenerationRequest[Any]], None] | None = None,
    ) -> None:
        self.script = list(script or [])
        self.usage = usage
        self.hold = hold
        self.on_call = on_call
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self._entered = asyncio.Condition()

    async def until_active(self, count: int) -> None:
        """Return once ``count`` calls are inside :meth:`generate` at the same time."""
        async with self._entered:
            await self._entered.wait_for(lambda: self.active >= count)

    async def generate(self, request: GenerationRequest[Any]) -> Generation[Any]:
        self.calls += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        async with self._entered:
            self._entered.notify_all()
        try:
            if self.on_call is not None:
                self.on_call(request)
            if self.hold is not None:
                await self.hold.wait()
            else:
                for _ in range(3):
                    await asyncio.sleep(0)
            outcome = self.script.pop(0) if self.script else None
            if outcome is not None:
                raise outcome
            text = '{"ok": true}'
            return Generation(
                value=request.schema.model_validate_json(text),
                usage=self.usage,
                request_id=request.request_id,
                model=self.model,
                provider=self.name,
                raw_text=text,
            )
        finally:
            self.active -= 1


class Ok(BaseModel):
    ok: bool
