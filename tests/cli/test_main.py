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


def test_each_group_is_listed_in_help_and_runs_when_called_first(cli):
    from atomlab.cli.main import COMMAND_GROUPS

    listing = cli("--help").stdout
    for group in COMMAND_GROUPS:
        assert group in listing
        result = cli(group, "--help")
        assert result.exit_code == 0, (group, result.stderr)
        assert f"atomlab {group}" in result.stdout


def test_global_options_with_values_are_not_taken_for_the_command(cli, tmp_path):
    result = cli(
        "--home", str(tmp_path / "config"), "--log-level", "INFO", "config", "show", "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert result.json["settings"]["home"] == str(tmp_path / "config")


def test_a_command_imports_only_its_own_group(tmp_path):
    """Start-up stays fast: `atomlab config show` never imports the engine or the swarm service."""
    import os
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from atomlab.cli.main import run\n"
        "code = run(['config', 'show', '--json'])\n"
        "heavy = [m for m in ('atomlab.engine', 'atomlab.swarm', 'atomlab.instrument') "
        "if m in sys.modules]\n"
        "print(code, heavy, file=sys.stderr)\n"
        "sys.exit(1 if code or heavy else 0)\n"
    )
    env = {**os.environ, "ATOMLAB_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_ctrl_c_while_the_cli_is_still_importing_exits_130_without_traceback(tmp_path):
    """A SIGINT that lands during start-up (before the CLI's own handler exists) is no crash."""
    import os
    import subprocess
    import sys

    # Deliver SIGINT to ourselves from inside the import of atomlab.cli.main, the slow part.
    script = (
        "import os, signal, sys, builtins\n"
        "real_import = builtins.__import__\n"
        "def interrupting_import(name, *args, **kwargs):\n"
        "    if name == 'atomlab.cli.main':\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    return real_import(name, *args, **kwargs)\n"
        "builtins.__import__ = interrupting_import\n"
        "from atomlab.cli.entry import main\n"
        "main()\n"
    )
    env = {**os.environ, "ATOMLAB_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-c", script, "--help"],  # --version never imports cli.main
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "interrupted" in proc.stderr


def test_the_group_listing_help_is_each_groups_own(cli):
    """`atomlab --help` lists the groups from GROUP_HELP without importing them; the text must
    stay the groups' own."""
    import importlib

    from atomlab.cli.main import COMMAND_GROUPS, GROUP_HELP

    assert set(GROUP_HELP) <= set(COMMAND_GROUPS)
    for name, help_text in GROUP_HELP.items():
        module = importlib.import_module(COMMAND_GROUPS[name])
        assert module.app.info.help == help_text, name


def test_help_imports_no_group(tmp_path):
    import os
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from atomlab.cli.main import COMMAND_GROUPS, GROUP_HELP, run\n"
        "code = run(['--help'])\n"
        "loaded = [m for n, m in COMMAND_GROUPS.items() if n in GROUP_HELP and m in sys.modules]\n"
        "print(code, loaded, file=sys.stderr)\n"
        "sys.exit(1 if code or loaded else 0)\n"
    )
    env = {**os.environ, "ATOMLAB_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_help_never_shows_a_value_type_for_a_flag(cli):
    """Typer's rich help printed every flag as '--json <bool>' although flags take no value."""
    from atomlab.cli.command_tree import build_command, walk
    from atomlab.cli.main import app, register_groups

    register_groups()
    for path, command in walk(build_command(app)):
        result = cli(*path, "--help")
        assert result.exit_code == 0, (path, result.stderr)
        assert "<bool>" not in result.stdout, path
        options = [p for p in command.params if getattr(p, "is_flag", False)]
        for option in options:
            assert option.opts[0] in result.stdout or option.hidden, (path, option.opts)
