"""Pipelines as data: YAML specs, injected loaders, templates, schemas and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from atomlab.engine import (
    DirectoryPromptLoader,
    InMemoryMappingLoader,
    InMemoryPromptLoader,
    PipelineError,
    list_pipelines,
    load_pipeline,
)
from tests.engine.conftest import TINY_CATALOGUES, TINY_PROMPTS, tiny_pipeline


def test_shipped_pipelines_are_listed() -> None:
    names = [row["name"] for row in list_pipelines()]
    assert names == ["defect-triage", "service-evolution"]


def test_service_evolution_fans_out_over_five_plateaus() -> None:
    pipeline = load_pipeline("service-evolution")
    levels = pipeline.level_entries({"service_id": "s"})
    assert [name for _, name in [(i, e["name"]) for i, e in levels]] == [
        "Foundational",
        "Enhanced",
        "Autonomous",
        "Outcome-Driven",
        "Transformative",
    ]
    assert [s.name for s in pipeline.level_map_stages] == ["mapping"]


def test_loaders_are_injected_so_no_package_file_is_read() -> None:
    names = ("system", "descriptions", "features", "mapping")
    prompts = InMemoryPromptLoader({name: f"{name} {{{{ item }}}}" for name in names})
    asked: list[str] = []

    class CountingCatalogues(InMemoryMappingLoader):
        def load_catalogue(self, name: str) -> list[dict[str, Any]]:
            asked.append(name)
            return [{"id": f"{name}-1"}, {"id": f"{name}-2"}]

    catalogues = CountingCatalogues({})
    pipeline = load_pipeline("service-evolution", prompts=prompts, catalogues=catalogues)
    assert set(asked) == {"plateaus", "roles", "applications", "technologies", "data"}
    assert pipeline.stages[0].template.text == "descriptions {{ item }}"


def test_a_user_pipeline_reads_its_resources_next_to_the_yaml(tmp_path: Path) -> None:
    (tmp_path / "mine" / "prompts").mkdir(parents=True)
    (tmp_path / "mine" / "catalogues").mkdir()
    (tmp_path / "mine" / "prompts" / "ask.md").write_text("Say {{ item.text }}")
    (tmp_path / "mine.yaml").write_text(
        "name: mine\nstages:\n  - {name: ask, prompt: ask, output: Out}\n"
        "schemas:\n  Out: {said: str}\n"
    )
    pipeline = load_pipeline(tmp_path / "mine.yaml")
    assert pipeline.stages[0].template.render({"item": {"text": "hi"}}) == "Say hi"


def test_templates_insert_strings_as_is_and_other_values_as_sorted_json() -> None:
    template = tiny_pipeline().stages[1].template
    text = template.render(
        {"level": {"id": "2"}, "item": {"id": "x"}, "stages": {"summary": {"summary": "s"}}}
    )
    assert text == "Level 2 of x after s"
    mapping = (
        tiny_pipeline()
        .stages[2]
        .template.render(
            {
                "sources": {"S1": {"b": 1, "a": 2}},
                "catalogue": {"name": "tools", "entries": []},
                "level": {"id": "1"},
            }
        )
    )
    assert mapping == 'Map {"S1":{"a":2,"b":1}} onto tools [] at 1'


def test_declared_schemas_become_strict_models() -> None:
    model = tiny_pipeline().stages[1].output_model
    assert model is not None
    model.model_validate({"things": [{"name": "n", "grade": "a"}]})
    for bad in ({"things": []}, {"things": [{"name": "n", "grade": "z"}]}, {"things": [], "x": 1}):
        with pytest.raises(ValidationError):
            model.model_validate(bad)


def test_map_answers_are_keyed_by_source_position_and_checked_against_the_catalogue() -> None:
    pipeline = tiny_pipeline()
    stage = pipeline.level_map_stages[0]
    model = pipeline.map_model(stage, "tools", 2)
    assert pipeline.map_model(stage, "tools", 2) is model
    model.model_validate({"S1": ["T1"], "S2": ["T1", "T2"]})
    with pytest.raises(ValidationError):
        model.model_validate({"S1": ["T9"], "S2": ["T1"]})
    with pytest.raises(ValidationError):
        model.model_validate({"S1": ["T1"]})


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        (
            {"stages": [{"name": "a", "prompt": "summary", "output": "Nope"}]},
            "'Nope' is not declared",
        ),
        (
            {"stages": [{"name": "a", "prompt": "missing", "output": "Summary"}]},
            "'missing' is not defined",
        ),
        ({"fanout": {"catalogue": "levels", "field": "x"}}, "exactly one of"),
        ({"schemas": {"Summary": {"x": {"type": "decimal"}}}}, "unknown type 'decimal'"),
        ({"fanout": {"catalogue": "absent"}}, "catalogue 'absent' is not defined"),
        (
            {"stages": [{"name": "A b", "prompt": "summary", "output": "Summary"}]},
            "must be unique, lowercase",
        ),
    ],
)
def test_invalid_pipelines_fail_with_a_message_naming_the_problem(
    changes: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(PipelineError) as caught:
        tiny_pipeline(**changes)
    assert fragment in caught.value.message
    assert caught.value.exit_code == 3


def test_unknown_pipeline_names_the_shipped_ones() -> None:
    with pytest.raises(PipelineError, match="shipped pipelines: defect-triage, service-evolution"):
        load_pipeline("nope")


def test_the_digest_changes_with_prompts_and_catalogues() -> None:
    base = tiny_pipeline().digest
    assert tiny_pipeline().digest == base
    assert tiny_pipeline(description="other").digest != base
    from atomlab.engine import PipelineSpec, build_pipeline
    from tests.engine.conftest import TINY_SPEC

    other = build_pipeline(
        PipelineSpec.model_validate(TINY_SPEC),
        prompts=InMemoryPromptLoader({**TINY_PROMPTS, "summary": "Other {{ item.text }}"}),
        catalogues=InMemoryMappingLoader(TINY_CATALOGUES),
    )
    assert other.digest != base


def test_tuning_knobs_do_not_change_the_digest() -> None:
    base = tiny_pipeline().digest
    assert tiny_pipeline(fanout={"catalogue": "levels", "max_concurrent": 4}).digest == base
    stages = tiny_pipeline().spec.model_dump()["stages"]
    stages[1]["max_concurrent"] = 3
    assert tiny_pipeline(stages=stages).digest == base
    stages[1]["temperature"] = 0.5
    assert tiny_pipeline(stages=stages).digest != base


def test_files_that_are_not_utf8_are_pipeline_errors_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "classify.md").write_bytes(b"Classify \xe9")
    with pytest.raises(PipelineError, match=r"'classify' at .*classify\.md is not UTF-8"):
        DirectoryPromptLoader(tmp_path).load_prompt("classify")
    bad_yaml = tmp_path / "triage.yaml"
    bad_yaml.write_bytes(b"name: triage \xe9\n")
    with pytest.raises(PipelineError, match=r"triage\.yaml' is not UTF-8"):
        load_pipeline(bad_yaml)
