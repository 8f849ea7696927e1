"""Settings precedence: CLI flag > environment > atomlab.yaml > defaults, one test per level."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomlab.core.errors import ConfigError, ExitCode
from atomlab.core.settings import AtomlabSettings, load_settings


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_apply_without_file_env_or_flags(tmp_path):
    loaded = load_settings(environ={}, cwd=tmp_path)
    assert loaded.settings.trajectory.interval_s == 0.1
    assert loaded.sources["trajectory.interval_s"] == "default"
    assert loaded.config_path is None


def test_yaml_file_in_cwd_overrides_defaults(tmp_path):
    write_yaml(tmp_path / "atomlab.yaml", "trajectory:\n  interval_s: 0.05\n")
    loaded = load_settings(environ={}, cwd=tmp_path)
    assert loaded.settings.trajectory.interval_s == 0.05
    assert loaded.sources["trajectory.interval_s"] == "file"
    assert loaded.config_path == tmp_path / "atomlab.yaml"


def test_explicit_config_path_is_used_instead_of_cwd_file(tmp_path):
    write_yaml(tmp_path / "atomlab.yaml", "llm:\n  model: from-cwd\n")
    other = write_yaml(tmp_path / "other.yaml", "llm:\n  model: from-flag-file\n")
    loaded = load_settings(config_path=other, environ={}, cwd=tmp_path)
    assert loaded.settings.llm.model == "from-flag-file"


def test_environment_overrides_yaml(tmp_path):
    write_yaml(tmp_path / "atomlab.yaml", "trajectory:\n  interval_s: 0.05\n")
    loaded = load_settings(environ={"ATOMLAB_TRAJECTORY__INTERVAL_S": "0.02"}, cwd=tmp_path)
    assert loaded.settings.trajectory.interval_s == 0.02
    assert loaded.sources["trajectory.interval_s"] == "env"


def test_environment_variable_names_are_case_insensitive_and_home_is_top_level(tmp_path):
    loaded = load_settings(
        environ={"atomlab_llm__model": "m-1", "ATOMLAB_HOME": str(tmp_path / "h")}, cwd=tmp_path
    )
    assert loaded.settings.llm.model == "m-1"
    assert loaded.settings.home == tmp_path / "h"
    assert loaded.sources["home"] == "env"


def test_cli_override_beats_environment(tmp_path):
    loaded = load_settings(
        environ={"ATOMLAB_TRAJECTORY__INTERVAL_S": "0.02"},
        overrides={"trajectory": {"interval_s": 0.01}},
        cwd=tmp_path,
    )
    assert loaded.settings.trajectory.interval_s == 0.01
    assert loaded.sources["trajectory.interval_s"] == "cli"


def test_cli_override_of_one_key_keeps_other_keys_of_the_section(tmp_path):
    write_yaml(tmp_path / "atomlab.yaml", "trajectory:\n  rotate_entries: 10\n")
    loaded = load_settings(overrides={"trajectory": {"interval_s": 0.5}}, environ={}, cwd=tmp_path)
    assert loaded.settings.trajectory.rotate_entries == 10
    assert loaded.settings.trajectory.interval_s == 0.5


@pytest.mark.parametrize(
    ("environ", "yaml_text", "field", "source"),
    [
        ({"ATOMLAB_TRAJECTORY__INTERVAL_S": "-1"}, None, "trajectory.interval_s", "env"),
        ({}, "swarm:\n  port: 70000\n", "swarm.port", "file"),
        ({}, "log:\n  level: LOUD\n", "log.level", "file"),
        ({}, "trajectory:\n  intervall_s: 1\n", "trajectory.intervall_s", "file"),
    ],
)
def test_invalid_values_name_field_value_and_source(tmp_path, environ, yaml_text, field, source):
    if yaml_text:
        write_yaml(tmp_path / "atomlab.yaml", yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ, cwd=tmp_path)
    assert info.value.exit_code == ExitCode.INVALID_INPUT
    assert info.value.details["field"] == field
    assert info.value.details["source"] == source
    assert field in info.value.message


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_path=tmp_path / "nope.yaml", environ={}, cwd=tmp_path)


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path):
    write_yaml(tmp_path / "atomlab.yaml", "- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(environ={}, cwd=tmp_path)


def test_describe_lists_every_leaf_with_its_source(tmp_path):
    loaded = load_settings(environ={"ATOMLAB_SWARM__PORT": "8100"}, cwd=tmp_path)
    described = loaded.describe()
    assert described["swarm.port"] == {"value": 8100, "source": "env"}
    assert set(described) >= {f"{name}" for name in ("home", "log.level", "llm.model")}
    assert all(entry["source"] in {"default", "file", "env", "cli"} for entry in described.values())


def test_settings_model_has_a_section_per_capability():
    sections = set(AtomlabSettings.model_fields)
    assert {"instrument", "sim", "trajectory", "tracking", "llm", "engine", "swarm"} <= sections


def test_an_unknown_section_in_the_environment_is_an_error_like_an_unknown_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting section 'logging'") as info:
        load_settings(environ={"ATOMLAB_LOGGING__LEVEL": "DEBUG"}, cwd=tmp_path)
    assert info.value.details["variable"] == "ATOMLAB_LOGGING__LEVEL"
    with pytest.raises(ConfigError, match=r"unknown setting llm\.bogus"):
        load_settings(environ={"ATOMLAB_LLM__BOGUS": "1"}, cwd=tmp_path)


def test_an_unknown_yaml_section_names_its_source_and_the_known_sections(tmp_path):
    write_yaml(tmp_path / "atomlab.yaml", "trajectroy:\n  interval_s: 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, cwd=tmp_path)
    assert info.value.details == {
        "field": "trajectroy",
        "value": "{'interval_s': 1}",
        "source": "file",
    }
    assert "did you mean 'trajectory'" in info.value.message


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e308"])
def test_durations_must_be_finite_and_within_a_week(tmp_path, value):
    with pytest.raises(ConfigError, match=r"trajectory\.flush_interval_s"):
        load_settings(environ={"ATOMLAB_TRAJECTORY__FLUSH_INTERVAL_S": value}, cwd=tmp_path)


def test_every_float_setting_refuses_infinity():
    # allow_inf_nan=False on the common Section base covers sections added later too.
    from atomlab.core.settings import Section

    assert Section.model_config.get("allow_inf_nan") is False


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://127.0.0.1:11434/v1", True),
        ("https://api.openai.com/v1", True),
        ("not a url", False),
        ("ftp://host/v1", False),
        ("http://", False),
        ("http://host:70000/v1", False),
    ],
)
def test_the_llm_base_url_must_be_an_http_url(tmp_path, url, ok):
    environ = {"ATOMLAB_LLM__BASE_URL": url}
    if ok:
        assert load_settings(environ=environ, cwd=tmp_path).settings.llm.base_url == url
    else:
        with pytest.raises(ConfigError, match=r"llm\.base_url"):
            load_settings(environ=environ, cwd=tmp_path)
