"""The offline provider: deterministic, schema-valid answers derived from the request, no network.

It walks the pydantic JSON schema of the requested model and fills every field from a SHA-256 of
(model, prompt, field path): the same request always gets the same answer, different prompts get
different answers, and strings reuse words of the prompt so the output reads as belonging to
its input::

    provider = OfflineProvider()
    answer = await provider.generate(GenerationRequest(prompt="Defect at (3, 4)", schema=Triage))

Enums, ``Literal`` s, bounds (``ge``/``le``/``gt``/``lt``), string and list lengths, nested
models, ``$ref`` and ``anyOf`` are honoured. ``latency_s`` simulates a slow model (through the
injectable clock), which benchmarks use.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from dataclasses import dataclass
from typing import Any

from atomlab.core.clock import Clock, SystemClock
from atomlab.llm.provider import (
    Generation,
    GenerationRequest,
    ModelT,
    ProviderRequestError,
    TokenUsage,
    parse_output,
)

OFFLINE_PROVIDER_NAME = "offline"
OFFLINE_MODEL = "offline-v1"
DEFAULT_LIST_ITEMS = (1, 3)  # inclusive range when the schema sets no bounds
DEFAULT_INT_RANGE = (0, 100)
DEFAULT_NUMBER_RANGE = (0.0, 1.0)
DEFAULT_WORDS = (2, 6)
SHORT_STRING_CHARS = 24  # below this maxLength, no "field:" prefix
CHARS_PER_TOKEN = 4  # rough token estimate for usage accounting
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_-]{2,}")
_FALLBACK_WORDS = ("sample", "offline", "answer", "lattice", "probe", "surface")
_FORMAT_VALUES = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "email": "offline@example.org",
    "uri": "https://example.org/offline",
}


class OfflineSchemaError(ProviderRequestError):
    """The schema uses something the offline provider cannot satisfy (e.g. a regex pattern)."""

    type_name = "offline_schema_unsupported"


@dataclass(frozen=True)
class _Seed:
    """Deterministic numbers for one field path."""

    digest: bytes

    def number(self, salt: int = 0) -> int:
        start = (salt * 4) % (len(self.digest) - 4)
        return int.from_bytes(self.digest[start : start + 4], "big")

    def unit(self, salt: int = 0) -> float:
        return self.number(salt) / 0xFFFFFFFF


class OfflineProvider:
    """Answers any structured request deterministically from its content. Never fails."""

    name = OFFLINE_PROVIDER_NAME

    def __init__(
        self,
        *,
        model: str = OFFLINE_MODEL,
        latency_s: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        self.model = model
        self.latency_s = latency_s
        self._clock = clock or SystemClock()
        self.calls = 0

    async def generate(self, request: GenerationRequest[ModelT]) -> Generation[ModelT]:
        self.calls += 1
        started = self._clock.monotonic()
        if self.latency_s > 0:
            await self._clock.sleep_async(self.latency_s)
        text = self.answer_text(request)
        value = parse_output(
            text,
            request.schema,
            provider=self.name,
            model=self.model,
            request_id=request.request_id,
        )
        prompt_chars = len(request.prompt) + len(request.system or "")
        return Generation(
            value=value,
            usage=TokenUsage(
                prompt_tokens=max(1, prompt_chars // CHARS_PER_TOKEN),
                output_tokens=max(1, len(text) // CHARS_PER_TOKEN),
            ),
            request_id=request.request_id,
            model=self.model,
            provider=self.name,
            raw_text=text,
            latency_s=self._clock.monotonic() - started,
        )

    def answer_text(self, request: GenerationRequest[Any]) -> str:
        """The JSON text answering ``request`` (compact, in the schema's key order)."""
        schema = request.json_schema()
        builder = _AnswerBuilder(
            defs=schema.get("$defs", {}),
            context=f"{self.model}\x00{request.system or ''}\x00{request.prompt}",
            words=_words_of(request.prompt),
        )
        return json.dumps(builder.value(schema, "$"), separators=(",", ":"), ensure_ascii=False)

    async def aclose(self) -> None:
        """Nothing to close; here so every built-in provider can be closed the same way."""

    def __repr__(self) -> str:
        return f"OfflineProvider(model={self.model!r}, latency_s={self.latency_s})"


def _words_of(prompt: str) -> list[str]:
    seen: dict[str, None] = {}
    for word in _WORD.findall(prompt):
        seen.setdefault(word.lower(), None)
    return list(seen) or list(_FALLBACK_WORDS)


@dataclass
class _AnswerBuilder:
    defs: dict[str, Any]
    context: str
    words: list[str]

    def seed(self, path: str) -> _Seed:
        return _Seed(hashlib.sha256(f"{self.context}\x00{path}".encode()).digest())

    def value(self, schema: dict[str, Any], path: str) -> Any:
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            options = schema["enum"]
            return options[self.seed(path).number() % len(options)]
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.value(self.pick_variant(schema[key]), path)
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                merged.update(self.resolve(part))
            return self.value(merged, path)
        return self.typed(schema, path)

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in self.defs:
                raise OfflineSchemaError(
                    f"schema reference {schema['$ref']!r} is not defined", provider="offline"
                )
            schema = {**self.defs[name], **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    def pick_variant(self, variants: list[dict[str, Any]]) -> dict[str, Any]:
        # The first variant that carries content and can be generated: pydantic lists the
        # declared type first and lenient alternatives (Decimal's string form) after it.
        concrete = [v for v in variants if self.resolve(v).get("type") != "null"]
        generable = [v for v in concrete if "pattern" not in self.resolve(v)]
        return (generable or concrete or variants)[0]

    def typed(self, schema: dict[str, Any], path: str) -> Any:
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object" or "properties" in schema:
            return self.object(schema, path)
        if kind == "array":
            return self.array(schema, path)
        if kind == "string":
            return self.string(schema, path)
        if kind == "integer":
            return self.integer(schema, path)
        if kind == "number":
            return self.number(schema, path)
        if kind == "boolean":
            return self.seed(path).number() % 2 == 0
        if kind == "null":
            return None
        return self.string({}, path)  # an unconstrained value: text is always valid JSON

    def object(self, schema: dict[str, Any], path: str) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties", {})
        result = {name: self.value(sub, f"{path}.{name}") for name, sub in properties.items()}
        extra = schema.get("additionalProperties")
        if not properties and isinstance(extra, dict):
            count = max(int(schema.get("minProperties", 1)), 1)
            for index in range(count):
                key = self.words[(self.seed(path).number(index) + index) % len(self.words)]
                result[f"{key}_{index}"] = self.value(extra, f"{path}[{index}]")
        return result

    def array(self, schema: dict[str, Any], path: str) -> list[Any]:
        low = int(schema.get("minItems", DEFAULT_LIST_ITEMS[0]))
        high = int(schema.get("maxItems", max(low, DEFAULT_LIST_ITEMS[1])))
        count = low + self.seed(path + "|len").number() % (max(high, low) - low + 1)
        if "prefixItems" in schema:
            items = schema["prefixItems"]
            return [self.value(sub, f"{path}[{i}]") for i, sub in enumerate(items)]
        item_schema = schema.get("items", {})
        values = [self.value(item_schema, f"{path}[{i}]") for i in range(count)]
        if schema.get("uniqueItems"):
            unique: list[Any] = []
            for value in values:
                if value not in unique:
                    unique.append(value)
            values = unique
        return values

    def string(self, schema: dict[str, Any], path: str) -> str:
        if "pattern" in schema:
            raise OfflineSchemaError(
                f"field {path} has a regex pattern {schema['pattern']!r}; the offline provider "
                "cannot generate for patterns, use an enum or an unconstrained string",
                provider=OFFLINE_PROVIDER_NAME,
            )
        if schema.get("format") == "uuid":
            return str(uuid.UUID(bytes=self.seed(path).digest[:16]))
        if schema.get("format") in _FORMAT_VALUES:
            return _FORMAT_VALUES[schema["format"]]
        seed = self.seed(path)
        field = path.rsplit(".", 1)[-1].split("[", 1)[0].strip("$") or "value"
        count = DEFAULT_WORDS[0] + seed.number() % (DEFAULT_WORDS[1] - DEFAULT_WORDS[0] + 1)
        picked = [self.words[seed.number(i + 1) % len(self.words)] for i in range(count)]
        low = int(schema.get("minLength", 0))
        high = schema.get("maxLength")
        short = high is not None and int(high) < SHORT_STRING_CHARS
        text = " ".join(picked) if short else f"{field.replace('_', ' ')}: {' '.join(picked)}"
        while len(text) < low:
            text += " " + picked[len(text) % len(picked)]
        if high is not None:
            text = text[: int(high)].rstrip() or text[: int(high)]
        return text if len(text) >= low else text.ljust(low, "x")

    def integer(self, schema: dict[str, Any], path: str) -> int:
        low, high = _bounds(schema, DEFAULT_INT_RANGE, integer=True)
        step = int(schema.get("multipleOf", 1)) or 1
        first = -(-int(low) // step) * step  # the smallest multiple of step >= low
        choices = max((int(high) - first) // step + 1, 1)
        return first + step * (self.seed(path).number() % choices)

    def number(self, schema: dict[str, Any], path: str) -> float:
        low, high = _bounds(schema, DEFAULT_NUMBER_RANGE, integer=False)
        step = schema.get("multipleOf")
        if step:
            first = math.ceil(low / step)
            choices = max(math.floor(high / step) - first + 1, 1)
            return float((first + self.seed(path).number() % choices) * step)
        fraction = 0.05 + 0.9 * self.seed(path).unit()  # stays clear of exclusive bounds
        return round(low + (high - low) * fraction, 6)


def _bounds(
    schema: dict[str, Any], default: tuple[float, float], *, integer: bool
) -> tuple[float, float]:
    """The inclusive range a number may take (exclusive bounds moved inwards for integers)."""
    low: float | None = schema.get("minimum")
    high: float | None = schema.get("maximum")
    nudge = 1 if integer else 0  # float exclusive bounds are avoided by the fraction instead
    if "exclusiveMinimum" in schema:
        low = (
            math.floor(schema["exclusiveMinimum"]) + nudge
            if integer
            else schema["exclusiveMinimum"]
        )
    if "exclusiveMaximum" in schema:
        high = (
            math.ceil(schema["exclusiveMaximum"]) - nudge if integer else schema["exclusiveMaximum"]
        )
    span = default[1] - default[0]
    if low is None and high is None:
        return default
    if low is None:
        return float(high) - span, float(high)  # type: ignore[arg-type]
    if high is None:
        return float(low), float(low) + span
    return float(low), max(float(high), float(low))
