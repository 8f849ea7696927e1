"""A real ``atomlab swarm serve`` process for tests: port 0, its own data home, ready-checked."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

READY_S = 60.0  # generous: a loaded CI machine may be slow to import; never a timing assertion


@dataclass
class Served:
    proc: subprocess.Popen[str]
    url: str
    home: Path

    def token(self, scope: str) -> str:
        """A token the service wrote to its data home's tokens file."""
        tokens: dict[str, str] = json.loads((self.home / "swarm" / "tokens.json").read_text())
        return tokens[scope]


def start_server(home: Path, *args: str) -> Served:
    """``atomlab swarm serve --port 0 ARGS`` with ATOMLAB_HOME=home, once /health answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMLAB_")}
    env["ATOMLAB_HOME"] = str(home)
    command = [sys.executable, "-m", "atomlab", "--log-level", "WARNING", "swarm", "serve"]
    proc = subprocess.Popen(
        [*command, "--port", "0", *args],
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
                return Served(proc, url, home)
        except httpx.HTTPError:
            pass
        if time.monotonic() >= deadline:
            proc.kill()
            raise AssertionError("the server never became healthy")
        time.sleep(0.05)


def stop_server(served: Served) -> int:
    """SIGTERM (unless it already ended); its exit code."""
    proc = served.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=READY_S)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stderr is not None:
            proc.stderr.close()


@contextmanager
def serving(home: Path, *args: str) -> Iterator[Served]:
    served = start_server(home, *args)
    try:
        yield served
    finally:
        stop_server(served)
