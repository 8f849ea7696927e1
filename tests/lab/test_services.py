"""Server processes: started in their own process group, ready by their log, stopped together."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from atomlab.core.errors import UnavailableError
from atomlab.lab.services import (
    ServiceSet,
    child_env,
    json_event,
    line_match,
    stop_descendants,
)

# The child: prints what argv[1] says, optionally starts a grandchild and ignores SIGTERM.
CHILD = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    mode = sys.argv[1]
    if mode == "fail":
        print("cannot start: port taken", flush=True)
        sys.exit(4)
    if "stubborn" in mode:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "family" in mode:
        kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"grandchild {kid.pid}", flush=True)
    if "silent" not in mode:
        print(json.dumps({"event": "listening", "ports": [1234], "pid": os.getpid()}), flush=True)
    while True:
        time.sleep(0.2)
    """
)


def service_set(tmp_path: Path) -> ServiceSet:
    return ServiceSet(tmp_path, command=[sys.executable, "-c", CHILD], die_with_parent=True)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_server_is_ready_when_its_line_appears_and_runs_in_its_own_group(
    tmp_path: Path,
) -> None:
    services = service_set(tmp_path)
    try:
        server = services.start("echo", ["plain"], ready=json_event("listening"), timeout_s=60)
        assert server.ready_value["ports"] == [1234]
        assert os.getpgid(server.pid) == server.pid != os.getpgid(0)
        assert server.log_path == tmp_path / "logs" / "echo.log"
    finally:
        codes = services.stop_all()
    assert codes["echo"] == -signal.SIGTERM


def test_stop_all_kills_a_server_that_ignores_sigterm_and_its_children(tmp_path: Path) -> None:
    services = service_set(tmp_path)
    server = services.start(
        "stubborn", ["stubborn-family"], ready=json_event("listening"), timeout_s=60
    )
    grandchild = int(line_match(r"grandchild (\d+)")(server.log_text())[0])
    assert alive(grandchild)
    codes = services.stop_all(grace_s=0.5)
    assert codes["stubborn"] == -signal.SIGKILL
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(grandchild).wait(timeout=30)  # killed with its group; gone once reaped
    assert not alive(grandchild)


def test_a_server_that_exits_before_it_is_ready_is_reported_with_its_log(tmp_path: Path) -> None:
    services = service_set(tmp_path)
    with pytest.raises(UnavailableError) as caught:
        services.start("broken", ["fail"], ready=json_event("listening"), timeout_s=60)
    assert "exited with status 4" in caught.value.message
    assert "port taken" in caught.value.message


def test_a_server_that_is_never_ready_is_stopped_when_the_wait_ends(tmp_path: Path) -> None:
    services = service_set(tmp_path)
    server = services.launch("mute", ["silent"])
    with pytest.raises(UnavailableError, match="not ready"):
        services.wait_ready(server, json_event("listening"), timeout_s=60, should_stop=lambda: True)
    assert server.process.wait(timeout=30) is not None


def test_detached_servers_are_left_running(tmp_path: Path) -> None:
    services = ServiceSet(tmp_path, command=[sys.executable, "-c", CHILD], die_with_parent=False)
    server = services.start("kept", ["plain"], ready=json_event("listening"), timeout_s=60)
    try:
        assert services.detach() == [server]
        assert services.stop_all() == {}
        assert server.alive
    finally:
        server.process.kill()
        server.process.wait(timeout=30)


def test_stop_descendants_stops_what_in_process_code_started_but_spares_kept_ones(
    tmp_path: Path,
) -> None:
    import subprocess

    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    kept = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        stopped = stop_descendants(keep=[kept.pid])
        assert stray.pid in stopped and kept.pid not in stopped
        assert stray.wait(timeout=30) is not None
        assert kept.poll() is None
    finally:
        for proc in (stray, kept):
            proc.kill()
            proc.wait(timeout=30)


def test_ready_checks_read_json_events_and_patterns() -> None:
    text = 'noise\n{"event": "other"}\n{"event": "listening", "ports": [5]}\n'
    assert json_event("listening")(text) == {"event": "listening", "ports": [5]}
    assert json_event("listening")("{not json listening}") is None
    assert line_match(r"on (http://\S+) ")("swarm service on http://x:1 (db)") == ("http://x:1",)
    assert line_match(r"nothing")("text") is None


def test_the_servers_get_no_atomlab_settings_from_the_callers_shell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ATOMLAB_SWARM__PORT", "9")
    monkeypatch.setenv("SOMETHING_ELSE", "1")
    env = child_env({"EXTRA": "2"})
    assert "ATOMLAB_SWARM__PORT" not in env
    assert env["SOMETHING_ELSE"] == "1" and env["EXTRA"] == "2"
