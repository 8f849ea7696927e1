"""Background tasks that cannot die silently: supervised, logged, counted and shown in /health.

Every long-running task of the service (planner, dispatcher, sender, watchdog, database writer)
runs under one :class:`Supervisor`. A task that raises is logged with its traceback, counted
(``atomlab_swarm_task_failures_total{task}``) and started again after a short back-off; a task
that fails :data:`MAX_RESTARTS` times within :data:`RESTART_WINDOW_S` is given up on, and the
supervisor calls ``on_fatal`` so the service stops with a clear exit code instead of limping on.
Failures a task survives by itself (one bad batch, one bad event) are reported with
:meth:`Supervisor.record_failure`. Either kind makes ``/health`` say ``degraded`` for
:data:`DEGRADED_FOR_S` seconds::

    supervisor = Supervisor(clock=clock, metrics=metrics, on_fatal=stop_the_server)
    supervisor.start("swarm-planner", coordinator.plan_worker)
    supervisor.status()   # "healthy" | "degraded" | "failing"
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from atomlab.core.clock import Clock, SystemClock, utc_iso
from atomlab.core.logging import get_logger
from atomlab.swarm.metrics import SwarmMetrics

MAX_RESTARTS = 5  # ... within RESTART_WINDOW_S, then the service stops
RESTART_WINDOW_S = 60.0
DEGRADED_FOR_S = 300.0  # /health says "degraded" this long after the last failure
RESTART_DELAYS_S = (0.05, 0.2, 1.0)  # real seconds between a crash and the restart
ERROR_TEXT_LIMIT = 300

TaskState = Literal["running", "restarting", "failed", "stopped"]
HealthStatus = Literal["healthy", "degraded", "failing"]
Worker = Callable[[], Coroutine[Any, Any, None]]

log = get_logger(__name__)


@dataclass
class TaskHealth:
    """What /health shows about one task."""

    state: TaskState = "running"
    failures: int = 0
    restarts: int = 0
    last_error: str | None = None
    last_failure_at: str | None = None  # UTC ISO-8601
    _failed_at: deque[float] = field(default_factory=lambda: deque(maxlen=64), repr=False)
    _last_failure_mono: float | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "failures": self.failures,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_failure_at": self.last_failure_at,
        }


def describe(exc: BaseException) -> str:
    """``OverflowError: int too large`` (bounded: an exception text may carry input)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_TEXT_LIMIT else text[:ERROR_TEXT_LIMIT] + "..."


class Supervisor:
    """Runs named tasks, restarts them when they crash and keeps the score (see module doc)."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        metrics: SwarmMetrics | None = None,
        on_fatal: Callable[[str], None] | None = None,
        max_restarts: int = MAX_RESTARTS,
        restart_window_s: float = RESTART_WINDOW_S,
        degraded_for_s: float = DEGRADED_FOR_S,
    ) -> None:
        self.clock = clock or SystemClock()
        self.metrics = metrics or SwarmMetrics()
        self.on_fatal = on_fatal
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.degraded_for_s = degraded_for_s
        self.tasks: dict[str, TaskHealth] = {}
        self.fatal: str | None = None
        self._running: dict[str, asyncio.Task[None]] = {}

    # --- tasks ------------------------------------------------------------------------------

    def start(self, name: str, worker: Worker) -> None:
        """Run ``worker()`` as task ``name`` (inside a running loop), restarting it on a crash."""
        self.tasks.setdefault(name, TaskHealth())
        self.tasks[name].state = "running"
        self.metrics.task_up.labels(task=name).set(1)
        self._running[name] = asyncio.create_task(self._run(name, worker), name=name)

    async def stop(self, names: Iterable[str] | None = None) -> None:
        """Cancel the named tasks (default: all) and wait for them (a clean stop is no
        failure)."""
        wanted = set(self._running) if names is None else set(names) & set(self._running)
        running = {name: self._running.pop(name) for name in sorted(wanted)}
        for task in running.values():
            task.cancel()
        for name, task in running.items():
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.tasks[name].state = "stopped"
            self.metrics.task_up.labels(task=name).set(0)

    async def _run(self, name: str, worker: Worker) -> None:
        health = self.tasks[name]
        attempt = 0
        while True:
            try:
                await worker()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.record_failure(name, exc, crashed=True)
                if self._too_many(health):
                    self._give_up(name, exc)
                    return
                health.state = "restarting"
                self.metrics.task_up.labels(task=name).set(0)
                await asyncio.sleep(RESTART_DELAYS_S[min(attempt, len(RESTART_DELAYS_S) - 1)])
                attempt += 1
                health.restarts += 1
                health.state = "running"
                self.metrics.task_restarts.labels(task=name).inc()
                self.metrics.task_up.labels(task=name).set(1)
                log.warning("swarm.task_restarted", task=name, restarts=health.restarts)
                continue
            # A worker loops forever; one that returns has nothing left to do.
            health.state = "stopped"
            self.metrics.task_up.labels(task=name).set(0)
            return

    def _too_many(self, health: TaskHealth) -> bool:
        now = self.clock.monotonic()
        recent = [t for t in health._failed_at if now - t <= self.restart_window_s]
        return len(recent) > self.max_restarts

    def _give_up(self, name: str, exc: BaseException) -> None:
        health = self.tasks[name]
        health.state = "failed"
        self.metrics.task_up.labels(task=name).set(0)
        reason = (
            f"background task {name} failed {len(health._failed_at)} times within "
            f"{self.restart_window_s:g} s (last: {describe(exc)}); the service stops"
        )
        self.fatal = reason
        log.critical("swarm.task_given_up", task=name, reason=reason)
        if self.on_fatal is not None:
            self.on_fatal(reason)

    # --- failures a task survives -----------------------------------------------------------

    def record_failure(self, name: str, exc: BaseException, *, crashed: bool = False) -> None:
        """Log, count and remember one failure of task ``name`` (it keeps running)."""
        health = self.tasks.setdefault(name, TaskHealth())
        now = self.clock.monotonic()
        health.failures += 1
        health.last_error = describe(exc)
        health.last_failure_at = utc_iso(self.clock.now())
        health._last_failure_mono = now
        health._failed_at.append(now)
        self.metrics.task_failures.labels(task=name).inc()
        event = "swarm.task_crashed" if crashed else "swarm.task_error"
        log.error(event, task=name, error=health.last_error, exc_info=exc)

    # --- health -----------------------------------------------------------------------------

    def status(self) -> HealthStatus:
        """``failing`` once a task was given up on; ``degraded`` while a task restarts or
        failed within the last ``degraded_for_s`` seconds; ``healthy`` otherwise."""
        if self.fatal is not None:
            return "failing"
        now = self.clock.monotonic()
        for health in self.tasks.values():
            if health.state in ("restarting", "failed"):
                return "degraded"
            last = health._last_failure_mono
            if last is not None and now - last <= self.degraded_for_s:
                return "degraded"
        return "healthy"

    def report(self) -> dict[str, dict[str, Any]]:
        return {name: health.public() for name, health in sorted(self.tasks.items())}


__all__ = ["Supervisor", "TaskHealth", "describe"]
