"""``atomlab swarm serve | ingest | status`` as a user runs them (a real server subprocess)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import CliResult

READY_S = 60.0  # generous: the shared CI machine may be slow to import; never a timing assertion


@pytest.fixture
def server(isolated_home: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``atomlab swarm serve --port 0`` in a subprocess, in the tests' data home (so the CLI
    clients find its tokens and port there); yields its base URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMLAB_")}
    env["ATOMLAB_HOME"] = str(isolated_home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "atomlab", "swarm", "serve", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    url = None
    for line in proc.stderr:  # the first line names the bound port
        match = re.search(r"swarm service on (http://\S+)", line)
        if match:
            url = match.group(1)
            break
    assert url, "the server did not start"
    deadline = time.monotonic() + READY_S
    while True:  # cross-process readiness: poll the health endpoint with a deadline
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the server never became healthy"
        time.sleep(0.1)
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=READY_S)
        proc.stderr.close()


def test_serve_ingest_bad_input_status_and_a_clean_stop(
    server: tuple[str, subprocess.Popen[str]],
    cli: Callable[..., CliResult],
    tmp_path: Path,
    isolated_home: Path,
) -> None:
    url, proc = server
    lines = tmp_path / "bad.jsonl"
    lines.write_text('{"x": 1.0, "y": 1.0, "severity": 3}\n{"x": 1.05, "y": 1.0, "severity": 3}\n')
    refused = cli("swarm", "ingest", str(lines), "--url", url, "--json")
    assert refused.exit_code == 3
    assert refused.json["error"]["details"]["field"] == "coordinates.1.x"
    assert "0.1 nm grid" in refused.json["error"]["message"]
    assert cli("swarm", "status", "--url", url, "--json").json["defects"] == 0  # nothing queued

    scan = tmp_path / "scan.json"
    coordinates = [{"x": 1.2, "y": 3.4, "severity": 7}, {"x": 2.0, "y": 2.0, "severity": 2}]
    scan.write_text(json.dumps({"coordinates": coordinates}))
    sent = cli("swarm", "ingest", str(scan), "--url", url, "--json")
    assert sent.exit_code == 0, sent.stdout
    assert sent.json["accepted"] == 2 and len(sent.json["defect_ids"]) == 2

    status = cli("swarm", "status", "--url", url, "--json")
    assert status.exit_code == 0
    assert status.json["status"] == "healthy"
    assert sum(status.json["defects_by_status"].values()) == 2

    human = cli("swarm", "status", "--url", url)
    assert "defects: 2 queued" in human.stdout and "simulator not connected" in human.stdout
    assert "{" not in human.stdout  # counts read as words, not Python dicts

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=READY_S) == 143  # stopped cleanly, the contract's exit code
    assert (isolated_home / "swarm.sqlite").stat().st_size > 0


def test_an_unreachable_service_exits_5_with_the_fix(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    scan = tmp_path / "scan.json"
    scan.write_text('[{"x": 1.0, "y": 1.0, "severity": 3}]')
    result = cli("swarm", "ingest", str(scan), "--url", f"http://127.0.0.1:{port}")
    assert result.exit_code == 5
    assert "atomlab swarm serve" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("not json", "neither JSON"), ("[]", "no defects")],
)
def test_unreadable_input_files_exit_3(
    cli: Callable[..., CliResult], tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "scan.json"
    if content is not None:
        path.write_text(content)
    result = cli("swarm", "ingest", str(path), "--url", "http://127.0.0.1:9")
    assert result.exit_code == 3
    assert message in result.stderr


def test_serve_on_a_busy_port_exits_4(cli: Callable[..., CliResult]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = cli("--json", "swarm", "serve", "--port", str(port))
    assert result.exit_code == 4
    assert result.json["error"]["details"]["field"] == "port"
