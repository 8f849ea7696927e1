"""The demo's server processes: started as ``atomlab`` subprocesses, each in its own process
group, watched until ready, and stopped together within a bounded time.

::

    services = ServiceSet(run_dir, env=child_env(run_dir))
    spm = services.start("sim-spm", ["sim", "spm", "--port", "0", "--json"],
                         ready=json_event("listening"))
    spm.ready_value["ports"]
    services.stop_all()          # SIGTERM to every group, SIGKILL what is left after the grace

Output goes to ``<run>/logs/<name>.log`` (a file, not a pipe: a server left running with
``--keep`` must not die writing to a reader that is gone).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from atomlab.core.errors import UnavailableError

READY_POLL_S = 0.05
"""How often a starting server's log is read for its ready line."""
DEFAULT_READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 0.8
"""After SIGTERM, how long every server together gets to stop cleanly before SIGKILL; with the
kill and the reaping this keeps a Ctrl-C of the demo within 2 s."""
KILL_WAIT_S = 0.3
_PR_SET_PDEATHSIG = 1

ReadyCheck = Callable[[str], Any]
"""Given the log so far, returns a value once the server is ready (``None``: not yet)."""


def json_event(event: str) -> ReadyCheck:
    """Ready once a JSON line ``{"event": event, ...}`` was printed; the value is that object."""

    def check(text: str) -> Any:
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{") and f'"{event}"' in line:
                with contextlib.suppress(ValueError):
                    data = json.loads(line)
                    if isinstance(data, dict) and data.get("event") == event:
                        return data
        return None

    return check


def line_match(pattern: str) -> ReadyCheck:
    """Ready once a line matches ``pattern``; the value is the match's groups."""
    compiled = re.compile(pattern)

    def check(text: str) -> Any:
        found = compiled.search(text)
        return found.groups() if found else None

    return check


def atomlab_command() -> list[str]:
    """How to run this atomlab: the same interpreter and package as the demo itself."""
    return [sys.executable, "-m", "atomlab"]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the demo's servers: this one without ``ATOMLAB_*`` settings (the demo
    gives them their own settings file and data home, so a setting of the caller's shell cannot
    bend them), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMLAB_")}
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


@dataclass
class Service:
    """One started server process."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes]
    ready_value: Any = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 12) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])


class ServiceSet:
    """The servers of one demo run; :meth:`stop_all` ends every one of them."""

    def __init__(
        self,
        run_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        die_with_parent: bool = True,
        command: Sequence[str] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.command = list(command) if command is not None else atomlab_command()
        self.log_dir = run_dir / "logs"
        self.env = dict(env) if env is not None else child_env()
        self.die_with_parent = die_with_parent
        self.services: dict[str, Service] = {}

    def start(
        self,
        name: str,
        args: Sequence[str],
        *,
        ready: ReadyCheck,
        timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        should_stop: Callable[[], bool] | None = None,
    ) -> Service:
        """Start ``atomlab <args>`` and wait until ``ready`` finds its ready line in the log.

        A server that exits first, or is not ready in ``timeout_s``, raises
        :class:`UnavailableError` with the end of its log (and is stopped).
        """
        service = self.launch(name, args)
        return self.wait_ready(service, ready, timeout_s=timeout_s, should_stop=should_stop)

    def launch(self, name: str, args: Sequence[str]) -> Service:
        """Start ``atomlab <args>`` (``command`` + ``args``) in a new process group (session)
        without waiting."""
        if name in self.services:
            raise ValueError(f"a service named {name!r} was already started")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        argv = [*self.command, *args]
        log: IO[bytes]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.run_dir,
                # Its own session: a Ctrl-C at the terminal reaches the demo only, which stops
                # the servers itself, and with --keep they outlive it.
                start_new_session=True,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
        service = Service(name=name, argv=argv, log_path=log_path, process=process)
        self.services[name] = service
        return service

    def wait_ready(
        self,
        service: Service,
        ready: ReadyCheck,
        *,
        timeout_s: float = DEFAULT_READY_TIMEOUT_S,
        should_stop: Callable[[], bool] | None = None,
    ) -> Service:
        deadline = time.monotonic() + timeout_s
        while True:
            value = ready(service.log_text())
            if value is not None:
                service.ready_value = value
                return service
            if not service.alive:
                raise UnavailableError(
                    f"{service.name} exited with status {service.returncode} before it was "
                    f"ready; the end of its log ({service.log_path}):\n{service.log_tail()}",
                    service=service.name,
                    log=str(service.log_path),
                )
            if time.monotonic() > deadline or (should_stop is not None and should_stop()):
                self.stop(service)
                raise UnavailableError(
                    f"{service.name} was not ready within {timeout_s:.0f} s; the end of its log "
                    f"({service.log_path}):\n{service.log_tail()}",
                    service=service.name,
                    log=str(service.log_path),
                )
            time.sleep(READY_POLL_S)

    def stop(self, service: Service, *, grace_s: float = STOP_GRACE_S) -> int | None:
        """Stop one server's process group: SIGTERM, then SIGKILL after ``grace_s``."""
        _signal_group(service.pid, signal.SIGTERM)
        _wait_all([service], grace_s)
        if service.alive:
            _signal_group(service.pid, signal.SIGKILL)
            _wait_all([service], KILL_WAIT_S)
        return service.returncode

    def stop_all(self, *, grace_s: float = STOP_GRACE_S) -> dict[str, int | None]:
        """Stop every server at once (SIGTERM to each group, SIGKILL after ``grace_s``)."""
        running = [s for s in self.services.values() if s.alive]
        for service in running:
            _signal_group(service.pid, signal.SIGTERM)
        _wait_all(running, grace_s)
        leftovers = [s for s in running if s.alive]
        for service in leftovers:
            _signal_group(service.pid, signal.SIGKILL)
        _wait_all(leftovers, KILL_WAIT_S)
        for service in self.services.values():
            # Whatever the leader left behind in its group goes too (it may have exited first).
            _signal_group(service.pid, signal.SIGKILL)
        return {name: s.returncode for name, s in self.services.items()}

    def detach(self) -> list[Service]:
        """Leave the servers running (``--keep``): the demo forgets them."""
        kept = [s for s in self.services.values() if s.alive]
        self.services.clear()
        return kept


def _wait_all(services: Sequence[Service], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for service in services:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        with contextlib.suppress(subprocess.TimeoutExpired):
            service.process.wait(timeout=remaining)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _find_prctl() -> Any:
    # Resolved here, in the parent: the child, between fork and exec, only makes the call.
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _find_prctl()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGTERM when the demo dies, even by SIGKILL (best effort)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def stop_descendants(keep: Sequence[int] = (), *, grace_s: float = 0.3) -> list[int]:
    """Stop every process this one started, directly or not, except ``keep`` (and their
    children): what a capability called in-process may have started (the learning pipeline's
    simulators). Returns the pids it had to stop."""
    import psutil

    me = psutil.Process()
    protected: set[int] = set()
    for pid in keep:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            protected.add(pid)
            protected.update(c.pid for c in proc.children(recursive=True))
    try:
        children = [c for c in me.children(recursive=True) if c.pid not in protected]
    except psutil.Error:
        return []
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _gone, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=KILL_WAIT_S)
    return [c.pid for c in children]
