"""The offline provider: deterministic, schema-valid answers derived from the request."""

from __future__ import annotations

import datetime
import decimal
import enum
import uuid
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from atomlab.core.clock import FakeClock
from atomlab.llm import GenerationRequest, OfflineProvider
from atomlab.llm.offline import OfflineSchemaError
from tests.llm.conftest import Triage


class Feature(BaseModel):
    feature_id: str
    name: str = Field(min_length=1, max_length=40)
    maturity: Score5


class Score5(BaseModel):
    level: int = Field(ge=1, le=5)


class Plateau(BaseModel):
    """Nested models, dicts of lists, optional and literal fields (the seed's shapes)."""

    plateau: int = Field(ge=1, le=5)
    features_by_role: dict[str, list[Feature]]
    summary: str
    kind: Literal["plateau"] = "plateau"
    weight: float | None = Field(default=None, ge=10, le=20)
    flags: list[bool] = Field(default_factory=list, max_length=2)


Feature.model_rebuild()


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Edges(BaseModel):
    """Bounds and types that a naive schema walker gets wrong."""

    long: str = Field(min_length=50, max_length=60)
    tiny: str = Field(max_length=3)
    exact: str = Field(min_length=5, max_length=5)
    five: list[int] = Field(min_length=5, max_length=5)
    sevens: int = Field(multiple_of=7, ge=10, le=100)
    halves: float = Field(multiple_of=0.5, ge=0, le=10)
    below: int = Field(lt=-5)
    at_most: float = Field(le=-1.0)
    open_unit: float = Field(gt=0, lt=1)
    only_one: int = Field(gt=0, lt=2)
    when: datetime.datetime
    day: datetime.date
    uid: uuid.UUID
    amount: decimal.Decimal
    color: Color
    pair: tuple[int, str]
    tags: set[str]
    scores: dict[str, int]
    maybe: list[Score5] | None


async def _answer(schema: type[BaseModel], prompt: str, **kw: Any) -> Any:
    provider = OfflineProvider(**kw)
    return await provider.generate(GenerationRequest(prompt=prompt, schema=schema))


@pytest.mark.parametrize("schema", [Triage, Plateau, Edges])
async def test_answers_validate_against_the_schema(schema: type[BaseModel]) -> None:
    generation = await _answer(schema, "Vacancy cluster near the step edge at (12, 40)")
    assert isinstance(generation.value, schema)
    assert schema.model_validate_json(generation.raw_text) == generation.value
    assert generation.provider == "offline"
    assert generation.usage.prompt_tokens > 0
    assert generation.usage.output_tokens > 0


async def test_same_request_gives_byte_identical_answers() -> None:
    first = await _answer(Plateau, "service: library lending")
    second = await _answer(Plateau, "service: library lending")
    assert first.raw_text == second.raw_text


async def test_different_prompts_give_different_answers() -> None:
    answers = {(await _answer(Triage, f"defect number {i}")).raw_text for i in range(8)}
    assert len(answers) == 8


async def test_strings_are_built_from_the_prompt_words() -> None:
    generation = await _answer(Triage, "adatom contamination beside dislocation")
    words = {"adatom", "contamination", "beside", "dislocation"}
    assert any(word in generation.value.rationale for word in words)


async def test_latency_is_simulated_through_the_clock() -> None:
    clock = FakeClock()
    generation = await _answer(Triage, "x", latency_s=0.25, clock=clock)
    assert clock.sleeps == [0.25]
    assert generation.latency_s == pytest.approx(0.25)


async def test_a_regex_pattern_is_refused_with_the_field_name() -> None:
    class Coded(BaseModel):
        code: str = Field(pattern=r"^[A-Z]{3}-\d+$")

    with pytest.raises(OfflineSchemaError, match=r"\$\.code"):
        await _answer(Coded, "x")


@settings(max_examples=40, deadline=None)
@given(prompt=st.text(max_size=200), system=st.none() | st.text(max_size=50))
async def test_any_prompt_yields_a_valid_answer(prompt: str, system: str | None) -> None:
    provider = OfflineProvider()
    request = GenerationRequest(prompt=prompt, schema=Plateau, system=system)
    generation = await provider.generate(request)
    assert Plateau.model_validate_json(generation.raw_text) == generation.value


async def test_edge_bounds_hold_for_many_prompts() -> None:
    provider = OfflineProvider()
    for i in range(25):
        request = GenerationRequest(prompt=f"edge case {i}", schema=Edges)
        value = (await provider.generate(request)).value
        assert value.only_one == 1
        assert value.sevens % 7 == 0
        assert value.maybe is not None  # optional fields carry content
