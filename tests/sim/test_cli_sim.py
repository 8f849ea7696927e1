"""``atomlab sim spm`` as a user runs it: a real process that answers and stops cleanly."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult
from tests.sim.conftest import Wire

LAUNCH = [sys.executable, "-c", "from atomlab.cli.main import main; main()"]


def launch(*extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*LAUNCH, "sim", "spm", "--port", "0", "--port", "0", "--seed", "3", "--json", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_listening(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the process announces itself once it listens
    if not line:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the simulator did not start: {err}")
    ready: dict[str, object] = json.loads(line)
    return ready


def test_the_simulator_process_answers_and_stops_cleanly_on_sigterm_and_sigint() -> None:
    """Two servers start side by side (to halve the wait); one gets SIGTERM, one SIGINT."""
    cases = {signal.SIGTERM: (143, "terminated"), signal.SIGINT: (130, "interrupted")}
    procs = {signum: launch("--no-disturbances") for signum in cases}
    try:
        for signum, proc in procs.items():
            ready = wait_listening(proc)
            assert ready["ok"] is True and ready["seed"] == 3 and ready["disturbances"] is False
            ports = ready["ports"]
            assert isinstance(ports, list) and len(ports) == 2
            for port in ports:
                wire = Wire(port)
                assert wire.ok("Bias.Get")["bias_v"] > 0
                wire.close()
            proc.send_signal(signum)
        for signum, proc in procs.items():
            out, _err = proc.communicate(timeout=30)
            exit_code, error_type = cases[signum]
            assert proc.returncode == exit_code
            envelope = json.loads(out.strip().splitlines()[-1])
            assert envelope["error"]["type"] == error_type
            assert envelope["exit_code"] == exit_code
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_a_taken_port_exits_4_and_names_the_port(cli: Callable[..., CliResult]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("sim", "spm", "--port", str(port), "--json")
    assert result.exit_code == 4
    assert result.json["error"]["type"] == "unavailable"
    assert str(port) in result.json["error"]["message"]


def test_sim_group_lists_spm(cli: Callable[..., CliResult]) -> None:
    result = cli("sim", "--help")
    assert result.exit_code == 0 and "spm" in result.stdout


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("--port", "70000"), "port"),
        (("--port", "-1"), "port"),
        (("--host", "x" * 10_000), "host"),
        (("--host", "ñandú." + "é" * 70 + ".example"), "host"),
    ],
)
def test_out_of_range_ports_and_impossible_hosts_are_invalid_input(
    cli: Callable[..., CliResult], args: tuple[str, ...], field: str, isolated_home: Path
) -> None:
    """Issue 15: `sim spm --port 70000` exited 5 and a 10,000-character host 1 (IDNA error).
    Refused, it creates nothing (the session folder neither)."""
    result = cli("sim", "spm", *args, "--json")
    assert not isolated_home.exists()
    assert result.exit_code == 3, result.stdout
    error = result.json["error"]
    assert field in error["message"] and "Traceback" not in result.stdout + result.stderr
    assert len(result.stdout) < 2000  # a 10,000-character value is not echoed back whole


def test_a_session_dir_that_is_a_file_is_refused(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    taken = tmp_path / "file"
    taken.write_text("x")
    result = cli("sim", "spm", "--port", "0", "--session-dir", str(taken), "--json")
    assert result.exit_code == 3 and "session-dir" in result.json["error"]["message"]
