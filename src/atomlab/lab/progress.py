"""Live progress of the demo: one line per event on stderr, prefixed with the stage and the time.

::

    progress = StderrProgress()
    progress.stage(3, 5, "swarm", "scan, detect, repair")
    progress.note("7 of 12 defects repaired")
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO

from atomlab.tracking import ProgressState

LEARNING_UPDATE_EVERY_S = 5.0
"""The learning pipeline's own progress is shown at most this often (plus every event)."""


class DemoProgress(Protocol):
    """Where the demo reports what it is doing."""

    def stage(self, number: int, total: int, name: str, title: str) -> None: ...

    def note(self, message: str) -> None: ...

    def done(self, summary: str) -> None: ...

    def skipped(self, reason: str) -> None: ...


class SilentProgress:
    """Reports nothing (library use, tests)."""

    def stage(self, number: int, total: int, name: str, title: str) -> None:
        return None

    def note(self, message: str) -> None:
        return None

    def done(self, summary: str) -> None:
        return None

    def skipped(self, reason: str) -> None:
        return None


class StderrProgress:
    """Plain lines, ``[  12.3 s] 3/5 swarm: message``: readable live, in a log and in CI."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._started = time.monotonic()
        self._prefix = ""
        self._lock = threading.Lock()

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr
        elapsed = time.monotonic() - self._started
        with self._lock:
            stream.write(f"[{elapsed:6.1f} s] {self._prefix}{text}\n")
            stream.flush()

    def stage(self, number: int, total: int, name: str, title: str) -> None:
        self._prefix = f"{number}/{total} {name}: "
        self._write(title)

    def note(self, message: str) -> None:
        self._write(message)

    def done(self, summary: str) -> None:
        self._write(f"done - {summary}")

    def skipped(self, reason: str) -> None:
        self._write(f"skipped - {reason}")


class LearningProgressView:
    """A :class:`atomlab.tracking.ProgressView` that shows the learning pipeline's own run
    tracker through the demo's progress (its events, and its step line every few seconds)."""

    def __init__(self, progress: DemoProgress, *, every_s: float = LEARNING_UPDATE_EVERY_S) -> None:
        self._progress = progress
        self._every_s = every_s
        self._last = 0.0
        self._last_headline = ""

    def event(self, message: str) -> None:
        self._progress.note(message)

    def update(self, state: ProgressState) -> None:
        now = time.monotonic()
        headline = state.headline()
        step_changed = headline.split(" (", 1)[0] != self._last_headline.split(" (", 1)[0]
        if step_changed or now - self._last >= self._every_s:
            self._last = now
            self._last_headline = headline
            self._progress.note(headline)

    def close(self) -> None:
        return None
