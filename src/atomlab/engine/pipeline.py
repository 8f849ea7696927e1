"""Pipelines as data: a YAML file declares the stages, their prompts, schemas and catalogues.

An *item* (one input JSONL line) flows through ``item`` stages once, then fans out into *levels*
(the entries of a catalogue, e.g. 5 maturity plateaus, or a list in the item, e.g. its defects).
Each level runs its ``generate`` stages in order, then its ``map`` stages, which map the
generated things onto catalogues. See docs/engine.md for the format::

    pipeline = load_pipeline("defect-triage")
    pipeline.level_entries(item)          # the fan-out of one item
    pipeline.render("classify", context)  # a prompt with {{ placeholders }} filled in
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from atomlab.engine.errors import PipelineError
from atomlab.engine.loaders import (
    CatalogueEntry,
    DirectoryMappingLoader,
    DirectoryPromptLoader,
    MappingLoader,
    PromptLoader,
)

PIPELINE_SUFFIX = ".yaml"
DEFAULT_MAX_CONCURRENT_LEVELS = 2
DEFAULT_MAX_TARGETS = 5
SOURCE_REF_PREFIX = "S"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}")
_SCALARS: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ItemSpec(_Spec):
    id: str = "id"
    required: tuple[str, ...] = ()


class FanoutSpec(_Spec):
    """Levels come from a catalogue (``catalogue: plateaus``) or a list field of the item."""

    catalogue: str | None = None
    field: str | None = None
    id: str = "id"
    max_concurrent: int = Field(default=DEFAULT_MAX_CONCURRENT_LEVELS, ge=1)


class StageSpec(_Spec):
    name: str
    scope: Literal["item", "level"] = "item"
    kind: Literal["generate", "map"] = "generate"
    prompt: str
    output: str | None = None
    source: str | None = None
    catalogues: tuple[str, ...] = ()
    max_targets: int = Field(default=DEFAULT_MAX_TARGETS, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_concurrent: int | None = Field(default=None, ge=1)  # calls of this stage at once


class PipelineSpec(_Spec):
    name: str
    description: str = ""
    schema_version: str = "1.1"
    system: str | None = None
    item: ItemSpec = ItemSpec()
    fanout: FanoutSpec | None = None
    catalogues: tuple[str, ...] = ()
    schemas: dict[str, dict[str, Any]] = {}
    stages: tuple[StageSpec, ...]


@dataclass(frozen=True)
class Template:
    """A prompt with ``{{ dotted.path }}`` placeholders; strings go in as-is, the rest as JSON."""

    name: str
    text: str

    @cached_property
    def paths(self) -> tuple[str, ...]:
        return tuple(_PLACEHOLDER.findall(self.text))

    def render(self, context: Mapping[str, Any]) -> str:
        def fill(match: re.Match[str]) -> str:
            return _as_text(lookup(context, match.group(1), where=f"prompt {self.name!r}"))

        return _PLACEHOLDER.sub(fill, self.text)


def lookup(data: Any, dotted: str, *, where: str) -> Any:
    """``data["a"]["b"]`` for ``"a.b"`` (list indices allowed); a clear error when missing."""
    current = data
    for part in dotted.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise KeyError(f"{where}: {dotted!r} is not available (no {part!r})")
    return current


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: the same value always gives the same bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class JsonList(list[Any]):
    """A list that is never changed after creation and renders its JSON once (catalogues)."""

    _text: str | None = None

    def canonical(self) -> str:
        if self._text is None:
            self._text = canonical_json(self)
        return self._text


class JsonDict(dict[str, Any]):
    """A dict that is never changed after creation and renders its JSON once (items, answers)."""

    _text: str | None = None

    def canonical(self) -> str:
        if self._text is None:
            self._text = canonical_json(self)
        return self._text


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, JsonList | JsonDict):
        return value.canonical()
    return canonical_json(value)


@dataclass(frozen=True)
class Stage:
    """One compiled stage: its spec, its template and (for generate stages) its output model."""

    spec: StageSpec
    template: Template
    output_model: type[BaseModel] | None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_map(self) -> bool:
        return self.spec.kind == "map"


@dataclass
class Pipeline:
    """A loaded, validated pipeline (see :func:`load_pipeline` and :func:`build_pipeline`)."""

    spec: PipelineSpec
    stages: tuple[Stage, ...]
    catalogues: dict[str, list[CatalogueEntry]]
    system: Template | None
    digest: str
    _map_models: dict[tuple[str, str, int], type[BaseModel]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def schema_version(self) -> str:
        return self.spec.schema_version

    @property
    def item_stages(self) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages if s.spec.scope == "item")

    @property
    def level_generate_stages(self) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages if s.spec.scope == "level" and not s.is_map)

    @property
    def level_map_stages(self) -> tuple[Stage, ...]:
        return tuple(s for s in self.stages if s.spec.scope == "level" and s.is_map)

    @property
    def max_concurrent_levels(self) -> int:
        return self.spec.fanout.max_concurrent if self.spec.fanout else 1

    def item_id(self, item: Mapping[str, Any]) -> str:
        return str(item[self.spec.item.id])

    def level_entries(self, item: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """``(level_id, entry)`` for each level of ``item``, in declared order."""
        fanout = self.spec.fanout
        if fanout is None:
            return []
        if fanout.catalogue is not None:
            entries: Any = self.catalogues[fanout.catalogue]
        else:
            entries = item.get(fanout.field or "", [])
        return [(str(entry[fanout.id]), dict(entry)) for entry in entries]

    def map_model(self, stage: Stage, catalogue: str, sources: int) -> type[BaseModel]:
        """The answer model of one map call: ``{"S1": [ids...], ..., "Sk": [ids...]}``.

        Sources are referred to by position so the model is reused for every call with the same
        count, and every catalogue id in an answer is checked by the schema itself.
        """
        key = (stage.name, catalogue, sources)
        model = self._map_models.get(key)
        if model is None:
            ids = tuple(entry["id"] for entry in self.catalogues[catalogue])
            targets = list[Literal[ids]]  # type: ignore[valid-type]
            fields: dict[str, Any] = {
                f"{SOURCE_REF_PREFIX}{index}": (
                    targets,
                    Field(min_length=1, max_length=stage.spec.max_targets),
                )
                for index in range(1, sources + 1)
            }
            model = create_model(
                f"{_camel(catalogue)}Mapping{sources}",
                __config__=ConfigDict(extra="forbid"),
                **fields,
            )
            self._map_models[key] = model
        return model


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]", name))


# --- loading ---------------------------------------------------------------------------------


_BUILTIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def builtin_pipelines_dir() -> Traversable:
    """The folder of pipelines shipped with atomlab (package data)."""
    return files("atomlab.engine") / "pipelines"


def list_pipelines() -> list[dict[str, str]]:
    """Name and description of every shipped pipeline, sorted by name."""
    found = []
    for entry in builtin_pipelines_dir().iterdir():
        if entry.name.endswith(PIPELINE_SUFFIX):
            spec = _parse_spec(entry.read_text(encoding="utf-8"), str(entry))
            found.append({"name": spec.name, "description": spec.description})
    return sorted(found, key=lambda row: row["name"])


def load_pipeline(
    name_or_path: str | Path,
    *,
    prompts: PromptLoader | None = None,
    catalogues: MappingLoader | None = None,
) -> Pipeline:
    """A shipped pipeline by name, or a YAML file by path.

    Prompts and catalogues are read from the folder next to the YAML named after it
    (``triage.yaml`` → ``triage/prompts/*.md``, ``triage/catalogues/*.json``) unless loaders
    are passed.
    """
    text, resources = _locate(name_or_path)
    spec = _parse_spec(text, str(name_or_path))
    return build_pipeline(
        spec,
        prompts=prompts or DirectoryPromptLoader(resources / "prompts"),
        catalogues=catalogues or DirectoryMappingLoader(resources / "catalogues"),
    )


def sample_input(name: str) -> Traversable:
    """The sample input JSONL shipped with the pipeline ``name``."""
    return builtin_pipelines_dir() / name / "sample.jsonl"


def _locate(name_or_path: str | Path) -> tuple[str, Path | Traversable]:
    candidate = Path(name_or_path)
    shown = str(candidate) if len(str(candidate)) <= 120 else str(candidate)[:120] + "…"
    try:
        is_file = candidate.is_file()
        is_dir = not is_file and candidate.is_dir()
    except OSError as exc:  # too long a name, a loop of links ...
        raise PipelineError(
            f"pipeline {shown!r} cannot be read ({exc.strerror or exc}); pass a shipped "
            "pipeline name or the path of a pipeline YAML file",
            field="pipeline",
            value=shown,
        ) from None
    if candidate.suffix in (PIPELINE_SUFFIX, ".yml") or is_file:
        if not is_file:
            what = "is a folder" if is_dir else "does not exist"
            raise PipelineError(
                f"pipeline file {shown!r} {what}; pass a pipeline YAML file",
                field="pipeline",
                value=shown,
            )
        try:
            return candidate.read_text(encoding="utf-8"), candidate.with_suffix("")
        except UnicodeDecodeError as exc:
            raise PipelineError(
                f"pipeline file {shown!r} is not UTF-8 (byte {exc.start + 1}); save it as UTF-8",
                field="pipeline",
                value=shown,
            ) from None
        except OSError as exc:
            raise PipelineError(
                f"pipeline file {shown!r} cannot be read ({exc.strerror or exc})",
                field="pipeline",
                value=shown,
            ) from None
    builtin = builtin_pipelines_dir() / f"{name_or_path}{PIPELINE_SUFFIX}"
    if not _BUILTIN_NAME.fullmatch(str(name_or_path)) or not builtin.is_file():
        known = ", ".join(row["name"] for row in list_pipelines())
        raise PipelineError(
            f"unknown pipeline {shown!r}; shipped pipelines: {known} "
            "(or pass the path of a pipeline YAML file)",
            field="pipeline",
            value=shown,
        )
    return builtin.read_text(encoding="utf-8"), builtin_pipelines_dir() / str(name_or_path)


def _parse_spec(text: str, where: str) -> PipelineSpec:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PipelineError(f"pipeline {where}: invalid YAML: {exc}", field="pipeline") from None
    except RecursionError:
        raise PipelineError(
            f"pipeline {where}: the YAML is nested too deeply", field="pipeline"
        ) from None
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        dotted = ".".join(str(p) for p in first["loc"])
        raise PipelineError(
            f"pipeline {where}: {dotted}: {first['msg']}", field=dotted, value=where
        ) from None


def build_pipeline(
    spec: PipelineSpec, *, prompts: PromptLoader, catalogues: MappingLoader
) -> Pipeline:
    """Compile ``spec``: load templates and catalogues, build the output models, check names."""
    _check_structure(spec)
    names = set(spec.catalogues)
    if spec.fanout and spec.fanout.catalogue:
        names.add(spec.fanout.catalogue)
    for stage in spec.stages:
        names.update(stage.catalogues)
    loaded: dict[str, list[CatalogueEntry]] = {
        name: JsonList(catalogues.load_catalogue(name)) for name in sorted(names)
    }
    models = _SchemaBuilder(spec.schemas, loaded).build_all()
    stages = []
    for stage in spec.stages:
        template = Template(stage.prompt, prompts.load_prompt(stage.prompt))
        output = None
        if stage.kind == "generate":
            if stage.output not in models:
                raise PipelineError(
                    f"stage {stage.name!r}: output schema {stage.output!r} is not declared "
                    f"under 'schemas'; declared: {sorted(models)}",
                    field=f"stages.{stage.name}.output",
                    value=stage.output,
                )
            output = models[stage.output]
        stages.append(Stage(stage, template, output))
    system = Template("system", prompts.load_prompt(spec.system)) if spec.system else None
    digest = _digest(spec, stages, system, loaded)
    return Pipeline(spec, tuple(stages), loaded, system, digest)


def _check_structure(spec: PipelineSpec) -> None:
    seen: set[str] = set()
    for stage in spec.stages:
        where = f"stages.{stage.name}"
        if not _NAME.match(stage.name) or stage.name in seen:
            raise PipelineError(
                f"stage name {stage.name!r} must be unique, lowercase, start with a letter",
                field=where,
                value=stage.name,
            )
        seen.add(stage.name)
        if stage.scope == "level" and spec.fanout is None:
            raise PipelineError(
                f"stage {stage.name!r} has scope 'level' but the pipeline declares no 'fanout'",
                field=where,
            )
        if stage.kind == "map" and (stage.scope != "level" or not stage.catalogues):
            raise PipelineError(
                f"map stage {stage.name!r} needs scope 'level', a 'source' and 'catalogues'",
                field=where,
            )
        if stage.kind == "map" and not stage.source:
            raise PipelineError(f"map stage {stage.name!r} needs a 'source'", field=where)
    fanout = spec.fanout
    if fanout and (fanout.catalogue is None) == (fanout.field is None):
        raise PipelineError(
            "fanout needs exactly one of 'catalogue' (levels from a catalogue) or 'field' "
            "(levels from a list in each item)",
            field="fanout",
        )
    order = [s.kind for s in spec.stages if s.scope == "level"]
    if "map" in order and "generate" in order[order.index("map") :]:
        raise PipelineError(
            "level stages must list all 'generate' stages before the 'map' stages",
            field="stages",
        )


def _digest(
    spec: PipelineSpec,
    stages: Sequence[Stage],
    system: Template | None,
    catalogues: Mapping[str, list[CatalogueEntry]],
) -> str:
    # Tuning knobs (how many levels or calls at once) never change the output: leave them out,
    # so changing them neither changes the records nor refuses a resume.
    tuning: dict[str, Any] = {
        "fanout": {"max_concurrent"},
        "stages": {"__all__": {"max_concurrent"}},
    }
    payload = {
        "spec": spec.model_dump(mode="json", exclude=tuning),
        "prompts": {s.template.name: s.template.text for s in stages},
        "system": system.text if system else None,
        "catalogues": catalogues,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


class _SchemaBuilder:
    """Turns the ``schemas`` section into pydantic models (extra keys forbidden)."""

    def __init__(
        self, schemas: Mapping[str, Mapping[str, Any]], catalogues: Mapping[str, list[Any]]
    ) -> None:
        self._schemas = schemas
        self._catalogues = catalogues
        self._built: dict[str, type[BaseModel]] = {}
        self._building: set[str] = set()

    def build_all(self) -> dict[str, type[BaseModel]]:
        for name in self._schemas:
            self.model(name)
        return self._built

    def model(self, name: str) -> type[BaseModel]:
        if name in self._built:
            return self._built[name]
        if name in self._building:
            raise PipelineError(f"schema {name!r} refers to itself", field=f"schemas.{name}")
        self._building.add(name)
        fields: dict[str, Any] = {
            field_name: self.field(f"schemas.{name}.{field_name}", spec)
            for field_name, spec in self._schemas[name].items()
        }
        model = create_model(name, __config__=ConfigDict(extra="forbid"), **fields)
        self._built[name] = model
        return model

    def field(self, where: str, spec: Any) -> tuple[Any, Any]:
        if isinstance(spec, str):
            spec = {"type": spec}
        if not isinstance(spec, Mapping) or "type" not in spec:
            raise PipelineError(f"{where}: a field needs a 'type'", field=where)
        constraints = {
            key: spec[key]
            for key in ("ge", "le", "min_length", "max_length", "description")
            if key in spec
        }
        return self.annotation(where, spec), Field(**constraints)

    def annotation(self, where: str, spec: Mapping[str, Any]) -> Any:
        kind = spec["type"]
        if kind in _SCALARS:
            return _SCALARS[kind]
        if kind == "enum":
            values = spec.get("values")
            if "catalogue" in spec:
                if spec["catalogue"] not in self._catalogues:
                    raise PipelineError(
                        f"{where}: catalogue {spec['catalogue']!r} is not declared under "
                        "'catalogues'",
                        field=where,
                    )
                values = [entry["id"] for entry in self._catalogues[spec["catalogue"]]]
            if not values:
                raise PipelineError(f"{where}: an enum needs 'values' or 'catalogue'", field=where)
            return Literal[tuple(values)]
        if kind == "list":
            item = spec.get("items")
            if item is None:
                raise PipelineError(f"{where}: a list needs 'items'", field=where)
            inner = item if isinstance(item, Mapping) else {"type": item}
            return list[self.annotation(where + "[]", inner)]  # type: ignore[misc]
        if kind in self._schemas:
            return self.model(kind)
        raise PipelineError(
            f"{where}: unknown type {kind!r}; use str, int, float, bool, enum, list "
            f"or a schema name ({sorted(self._schemas)})",
            field=where,
            value=kind,
        )


__all__ = [
    "FanoutSpec",
    "JsonDict",
    "JsonList",
    "Pipeline",
    "PipelineSpec",
    "Stage",
    "StageSpec",
    "Template",
    "build_pipeline",
    "builtin_pipelines_dir",
    "canonical_json",
    "list_pipelines",
    "load_pipeline",
    "lookup",
    "sample_input",
]
