"""Property: the offline provider answers ANY generated schema with a valid object."""

from __future__ import annotations

from typing import Any, Literal

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, create_model

from atomlab.llm import GenerationRequest, OfflineProvider

_bound = st.integers(min_value=-1_000, max_value=1_000)


@st.composite
def int_field(draw: st.DrawFn) -> tuple[Any, Any]:
    low = draw(st.none() | _bound)
    span = draw(st.integers(min_value=2, max_value=500))
    high = draw(st.none() | st.just(None if low is None else low + span) | _bound)
    if low is not None and high is not None and high <= low + 1:
        high = low + span
    exclusive = draw(st.booleans())
    kw = {"gt" if exclusive else "ge": low, "lt" if exclusive else "le": high}
    return int, Field(**{k: v for k, v in kw.items() if v is not None})


@st.composite
def float_field(draw: st.DrawFn) -> tuple[Any, Any]:
    low = draw(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
    span = draw(st.floats(min_value=0.01, max_value=1e6, allow_nan=False))
    kinds = draw(st.sampled_from(["both", "low", "high", "none", "exclusive"]))
    kw: dict[str, float] = {
        "both": {"ge": low, "le": low + span},
        "low": {"ge": low},
        "high": {"le": low},
        "none": {},
        "exclusive": {"gt": low, "lt": low + span},
    }[kinds]
    return float, Field(**kw)


@st.composite
def str_field(draw: st.DrawFn) -> tuple[Any, Any]:
    low = draw(st.integers(min_value=0, max_value=80))
    high = draw(st.none() | st.integers(min_value=max(low, 1), max_value=120))
    return str, Field(min_length=low, max_length=high)


def literal_field() -> st.SearchStrategy[tuple[Any, Any]]:
    values = st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5, unique=True)
    return values.map(lambda v: (Literal[tuple(v)], ...))  # type: ignore[valid-type]


scalar = st.one_of(int_field(), float_field(), str_field(), literal_field(), st.just((bool, ...)))


@st.composite
def list_field(draw: st.DrawFn, inner: st.SearchStrategy[tuple[Any, Any]]) -> tuple[Any, Any]:
    item_type, _ = draw(inner)
    low = draw(st.integers(min_value=0, max_value=4))
    high = draw(st.integers(min_value=max(low, 1), max_value=6))
    return list[item_type], Field(min_length=low, max_length=high)  # type: ignore[valid-type]


@st.composite
def model(draw: st.DrawFn, depth: int = 0) -> type[BaseModel]:
    kinds = [scalar, list_field(st.one_of(int_field(), str_field(), literal_field()))]
    if depth < 2:
        kinds.append(st.builds(lambda m: (m, ...), model(depth + 1)))
        kinds.append(st.builds(lambda m: (m | None, None), model(depth + 1)))
        kinds.append(st.builds(lambda m: (dict[str, m], ...), model(depth + 1)))
    names = draw(
        st.lists(
            st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True), min_size=1, max_size=5, unique=True
        )
    )
    fields = {name: draw(st.one_of(*kinds)) for name in names}
    return create_model(f"M{depth}_{'_'.join(names)}"[:60], **fields)  # type: ignore[call-overload, no-any-return]


@settings(max_examples=80, deadline=None)
@given(schema=model(), prompt=st.text(max_size=80))
async def test_every_generated_schema_gets_a_valid_answer(
    schema: type[BaseModel], prompt: str
) -> None:
    provider = OfflineProvider()
    generation = await provider.generate(GenerationRequest(prompt=prompt, schema=schema))
    assert schema.model_validate_json(generation.raw_text) == generation.value
