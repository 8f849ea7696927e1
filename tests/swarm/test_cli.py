"""``atomlab swarm serve | ingest | status`` as a user runs them (a real server subprocess)."""

from __future__ import annotations

import json
import os
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
from tests.swarm.server_harness import READY_S, serving


@pytest.fixture
def server(isolated_home: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``atomlab swarm serve --port 0`` in a subprocess, in the tests' data home (so the CLI
    clients find its tokens and port there); yields its base URL and the process."""
    with serving(isolated_home) as served:
        yield served.url, served.proc


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


# --- the bad-input sweep (issue 15) and a data home shared by the service and its clients ---


def test_clients_in_the_service_data_home_need_no_flags(
    server: tuple[str, subprocess.Popen[str]], cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    """serve --port 0 picked a free port and wrote its tokens; ingest and status find both."""
    url, _ = server
    scan = tmp_path / "scan.json"
    scan.write_text('[{"x": 3.0, "y": 3.0, "severity": 4}]')
    sent = cli("swarm", "ingest", str(scan), "--json")
    assert sent.exit_code == 0, sent.stdout
    assert sent.json["url"] == url and sent.json["accepted"] == 1
    status = cli("swarm", "status", "--json")
    assert status.exit_code == 0 and status.json["defects"] == 1


def test_a_client_without_the_token_is_refused_with_exit_2(
    server: tuple[str, subprocess.Popen[str]],
    cli: Callable[..., CliResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = server
    monkeypatch.setenv("ATOMLAB_HOME", str(tmp_path / "another-home"))
    scan = tmp_path / "scan.json"
    scan.write_text('[{"x": 3.0, "y": 3.0, "severity": 4}]')
    refused = cli("swarm", "ingest", str(scan), "--url", url, "--json")
    assert refused.exit_code == 2
    assert "tokens file" in refused.json["error"]["message"]
    monkeypatch.setenv("ATOMLAB_SWARM__INGEST_TOKEN", "w" * 32)  # a wrong one
    assert cli("swarm", "ingest", str(scan), "--url", url).exit_code == 2


@pytest.mark.parametrize(
    ("db_url", "code", "words"),
    [
        ("nosuchdialect://x", 3, "--db-url"),
        ("not a url at all", 3, "not a database URL"),
        ("sqlite:///{tmp}", 3, "names a folder"),
        ("sqlite:///{tmp}/not-a-database.sqlite", 3, "file is not a database"),
        ("sqlite:///{tmp}/a-file.txt/inside.sqlite", 3, "cannot create the folder"),
        ("postgresql+psycopg://lab:hunter2@127.0.0.1:1/swarm", 5, "cannot reach"),
    ],
)
def test_a_bad_database_url_is_one_clean_error_before_listening(
    cli: Callable[..., CliResult], tmp_path: Path, db_url: str, code: int, words: str
) -> None:
    """Regression: serve printed a uvicorn traceback after 'listening' and exited 3 with no
    error line or JSON."""
    (tmp_path / "not-a-database.sqlite").write_bytes(b"this is no sqlite file" * 100)
    (tmp_path / "a-file.txt").write_text("x")
    url = db_url.format(tmp=tmp_path)
    result = cli("--json", "swarm", "serve", "--port", "0", "--db-url", url)
    assert result.exit_code == code, result.stdout
    assert words in result.json["error"]["message"]
    assert "Traceback" not in result.stdout + result.stderr
    assert "hunter2" not in result.stdout + result.stderr
    plain = cli("swarm", "serve", "--port", "0", "--db-url", url)
    assert plain.exit_code == code and plain.stderr.startswith("error: ")
    assert plain.stdout == "" and "swarm service on" not in plain.stderr


def test_serve_accepts_json_and_prints_one_object_when_stopped(isolated_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMLAB_")}
    env["ATOMLAB_HOME"] = str(isolated_home)
    proc = subprocess.Popen(
        [sys.executable, "-m", "atomlab", "swarm", "serve", "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        if "swarm service on" in line:
            break
    service = json.loads((isolated_home / "swarm" / "service.json").read_text())
    deadline = time.monotonic() + READY_S
    while True:
        try:
            if httpx.get(f"{service['url']}/health", timeout=2.0).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=READY_S)
    assert proc.returncode == 143
    [line] = out.splitlines()
    body = json.loads(line)
    assert body["exit_code"] == 143 and body["error"]["details"]["url"] == service["url"]
    assert not (isolated_home / "swarm" / "service.json").exists()  # removed on a clean stop


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not UTF-8"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"x": 1' + b"0" * 5000 + b"}", "not JSON"),
    ],
)
def test_binary_or_hostile_input_files_exit_3(
    cli: Callable[..., CliResult], tmp_path: Path, content: bytes, message: str
) -> None:
    """Regression: a binary file gave 'unexpected UnicodeDecodeError' (exit 1)."""
    path = tmp_path / "scan.bin"
    path.write_bytes(content)
    result = cli("swarm", "ingest", str(path), "--url", "http://127.0.0.1:9", "--json")
    assert result.exit_code == 3, result.stdout
    assert message in result.json["error"]["message"]


@pytest.mark.parametrize(
    "url", ["not a url", "ftp://x", "http://" + "x" * 10_000, "http://ex ample.com", "http://[::1"]
)
def test_a_bad_url_exits_3(cli: Callable[..., CliResult], tmp_path: Path, url: str) -> None:
    scan = tmp_path / "scan.json"
    scan.write_text('[{"x": 1.0, "y": 1.0, "severity": 3}]')
    assert cli("swarm", "status", "--url", url).exit_code == 3
    assert cli("swarm", "ingest", str(scan), "--url", url).exit_code == 3


@pytest.mark.parametrize(
    "args",
    [
        ["--width-nm", "inf"],
        ["--width-nm", "1e308"],
        ["--height-nm", "nan"],
        ["--defects", "100000000"],
        ["--defects", "1e8"],
        ["--agents", "1000000"],
        ["--speed", "1e308"],
    ],
)
def test_sim_swarm_refuses_absurd_sizes_with_exit_3(
    cli: Callable[..., CliResult], args: list[str]
) -> None:
    """Regression: --width-nm inf/1e308 overflowed (exit 1), --defects 1e8 hung."""
    result = cli("--json", "sim", "swarm", *args, "--connect-attempts", "1", "--duration", "0")
    assert result.exit_code == 3, result.stdout


async def test_the_served_socket_is_tcp_so_answers_are_not_held_back_by_nagle() -> None:
    """Regression: the socket was created with protocol 0, so asyncio left Nagle's algorithm on
    for every accepted connection and each keep-alive answer waited ~40 ms for a delayed ACK."""
    import asyncio

    from atomlab.cli.swarm import _listen

    sock = _listen("127.0.0.1", 0)
    seen: list[int] = []

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("socket")
        seen.append(peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(accepted, sock=sock)
    async with server:
        _, writer = await asyncio.open_connection(*sock.getsockname())
        async with asyncio.timeout(READY_S):
            while not seen:  # noqa: ASYNC110 - the callback fills it
                await asyncio.sleep(0.01)
        writer.close()
    assert seen == [1]
