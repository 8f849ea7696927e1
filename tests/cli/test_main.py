from __future__ import annotations

import atomlab


def test_version_prints_the_package_version(cli):
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"atomlab {atomlab.__version__}"


def test_unknown_command_is_invalid_input_without_traceback(cli):
    result = cli("no-such-command")
    assert result.exit_code == 3
    assert "Traceback" not in result.stderr + result.stdout
    assert "no-such-command" in result.stderr


def test_unknown_command_in_json_mode_prints_the_error_envelope(cli):
    result = cli("--json", "no-such-command")
    assert result.exit_code == 3
    assert result.json["ok"] is False
    assert result.json["exit_code"] == 3
    assert result.json["error"]["type"] == "usage_error"


def test_help_lists_only_registered_groups_and_exits_0(cli):
    result = cli("--help")
    assert result.exit_code == 0
    assert "config" in result.stdout and "doctor" in result.stdout


def test_no_arguments_prints_help_and_exits_0(cli):
    result = cli()
    assert result.exit_code == 0
    assert "Usage" in result.stdout
    assert result.stderr == ""
