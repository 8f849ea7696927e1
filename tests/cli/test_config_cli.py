"""`atomlab config show` as a user runs it: env vars and YAML change it; bad values exit 3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_config_show_json_reports_env_and_file_sources(cli, monkeypatch, tmp_path):
    Path("atomlab.yaml").write_text("llm:\n  model: yaml-model\n", encoding="utf-8")
    monkeypatch.setenv("ATOMLAB_ENGINE__CONCURRENCY", "3")
    result = cli("config", "show", "--json")
    assert result.exit_code == 0, result.stderr
    body = result.json
    assert body["ok"] is True
    assert body["settings"]["llm"]["model"] == "yaml-model"
    assert body["sources"]["llm.model"] == "file"
    assert body["settings"]["engine"]["concurrency"] == 3
    assert body["sources"]["engine.concurrency"] == "env"


def test_home_flag_overrides_environment(cli, tmp_path):
    result = cli("--home", str(tmp_path / "flag-home"), "config", "show", "--json")
    assert result.json["settings"]["home"] == str(tmp_path / "flag-home")
    assert result.json["sources"]["home"] == "cli"


def test_explicit_config_flag(cli, tmp_path):
    config = tmp_path / "lab.yaml"
    config.write_text("swarm:\n  port: 8123\n", encoding="utf-8")
    result = cli("--config", str(config), "config", "show", "--json")
    assert result.json["settings"]["swarm"]["port"] == 8123
    assert result.json["config_path"] == str(config)


def test_invalid_setting_exits_3_naming_the_field(cli, monkeypatch):
    monkeypatch.setenv("ATOMLAB_TRAJECTORY__INTERVAL_S", "fast")
    result = cli("config", "show", "--json")
    assert result.exit_code == 3
    assert result.json["ok"] is False
    assert result.json["exit_code"] == 3
    assert "trajectory.interval_s" in result.json["error"]["message"]
    assert "ATOMLAB_TRAJECTORY__INTERVAL_S" in result.json["error"]["message"]


def test_invalid_setting_in_text_mode_is_one_line_on_stderr(cli):
    Path("atomlab.yaml").write_text("log:\n  level: LOUD\n", encoding="utf-8")
    result = cli("config", "show")
    assert result.exit_code == 3
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "log.level" in lines[0]
    assert "Traceback" not in result.stderr


def test_config_show_human_output_lists_sources(cli):
    result = cli("config", "show")
    assert result.exit_code == 0
    assert "trajectory.interval_s" in result.stdout
    assert "default" in result.stdout


def test_console_script_runs_as_a_real_subprocess(tmp_path):
    env = {**os.environ, "ATOMLAB_HOME": str(tmp_path / "h"), "ATOMLAB_LLM__MODEL": "sub-model"}
    proc = subprocess.run(
        [sys.executable, "-m", "atomlab", "config", "show", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["settings"]["llm"]["model"] == "sub-model"


BAD_SETTINGS = [
    # (variable or YAML text, the setting named in the error)
    ({"ATOMLAB_TRAJECTORY__INTERVAL_S": "inf"}, None, "trajectory.interval_s"),
    ({"ATOMLAB_TRAJECTORY__ACTION_WINDOW_S": "nan"}, None, "trajectory.action_window_s"),
    ({"ATOMLAB_LLM__TIMEOUT_S": "1e308"}, None, "llm.timeout_s"),
    ({"ATOMLAB_LLM__REQUESTS_PER_MINUTE": "inf"}, None, "llm.requests_per_minute"),
    ({"ATOMLAB_SWARM__SEPARATION_NM": "Infinity"}, None, "swarm.separation_nm"),
    ({"ATOMLAB_ENGINE__CONCURRENCY": str(2**70)}, None, "engine.concurrency"),
    ({"ATOMLAB_SIM__PORTS": "[70000]"}, None, "sim.ports"),
    ({"ATOMLAB_LLM__BASE_URL": "not a url"}, None, "llm.base_url"),
    ({"ATOMLAB_LLM__BASE_URL": "http://127.0.0.1:99999/v1"}, None, "llm.base_url"),
    ({"ATOMLAB_LOGGING__LEVEL": "DEBUG"}, None, "logging"),
    ({}, "instrument:\n  port: -1\n", "instrument.port"),
    ({}, "logging:\n  level: DEBUG\n", "logging"),
    ({}, "llm:\n  modle: x\n", "llm.modle"),
]


@pytest.mark.parametrize(("environ", "yaml_text", "field"), BAD_SETTINGS)
def test_config_show_refuses_every_bad_setting_with_exit_3(
    cli, monkeypatch, environ, yaml_text, field
):
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    if yaml_text:
        Path("atomlab.yaml").write_text(yaml_text, encoding="utf-8")
    result = cli("config", "show", "--json")
    assert result.exit_code == 3, result.stdout
    error = result.json["error"]
    assert error["type"] == "config_error"
    assert error["details"]["field"].startswith(field)
    assert field in error["message"]
    expected_source = "env" if environ else "file"
    assert error["details"]["source"] == expected_source


def test_a_misspelt_section_suggests_the_right_one(cli, monkeypatch):
    monkeypatch.setenv("ATOMLAB_LOGGING__LEVEL", "DEBUG")
    result = cli("config", "show")
    assert result.exit_code == 3
    assert "did you mean 'log'" in result.stderr
    assert "ATOMLAB_LOGGING__LEVEL" in result.stderr


def test_process_variables_without_a_section_are_not_settings(cli, monkeypatch):
    # The run tracker passes ATOMLAB_RUN_ID and friends to its steps; they are not settings.
    monkeypatch.setenv("ATOMLAB_RUN_ID", "r-1")
    monkeypatch.setenv("ATOMLAB_STEP", "fetch")
    assert cli("config", "show", "--json").exit_code == 0
