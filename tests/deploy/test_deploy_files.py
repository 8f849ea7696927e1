"""The deployment files stay in step with the CLI and the service: every command they run parses,
and the nginx site really upgrades the simulator's WebSocket."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def exec_start(unit: Path) -> list[str]:
    line = next(ln for ln in unit.read_text().splitlines() if ln.startswith("ExecStart="))
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv[0].endswith("/.venv/bin/atomlab"), argv[0]
    return argv[1:]


def containerfile_command() -> list[str]:
    text = (DEPLOY / "container" / "Containerfile").read_text()
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert entry and cmd
    import json

    return [*json.loads(entry.group(1))[1:], *json.loads(cmd.group(1))]


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(exec_start(DEPLOY / "systemd" / "atomlab-swarm.service"), id="swarm-unit"),
        pytest.param(exec_start(DEPLOY / "systemd" / "atomlab-sim-spm.service"), id="sim-unit"),
        pytest.param(containerfile_command(), id="container"),
    ],
)
def test_every_deployed_command_line_parses(argv, cli):
    """Each command line is valid: asking it for --help with the same options exits 0."""
    result = cli(*argv, "--help")
    assert result.exit_code == 0, (argv, result.stderr, result.stdout)


def test_units_treat_sigterm_exit_143_as_a_clean_stop():
    for unit in (DEPLOY / "systemd").glob("*.service"):
        text = unit.read_text()
        assert "SuccessExitStatus=143" in text, unit.name
        assert "User=atomlab" in text, unit.name


def test_nginx_upgrades_the_simulator_websocket():
    text = (DEPLOY / "nginx" / "atomlab-swarm.conf").read_text()
    block = text[text.index("location /ws/isaac") :]
    block = block[: block.index("}")]
    assert "proxy_http_version 1.1" in block
    assert "proxy_set_header Upgrade $http_upgrade" in block
    assert "proxy_set_header Connection $connection_upgrade" in block
    assert "127.0.0.1:8000" in text


def test_env_example_names_only_settings_that_exist(tmp_path):
    """Every ATOMLAB_ variable in the example file is accepted by the settings model."""
    from atomlab.core.settings import load_settings

    example = (DEPLOY / "atomlab.env.example").read_text()
    assignments = re.findall(r"^#?\s*(ATOMLAB_[A-Z_]+)=(.+)$", example, re.M)
    assert assignments
    environ = dict(assignments)
    load_settings(environ=environ, cwd=tmp_path)  # raises ConfigError on an unknown or bad one
