"""How a running tracker shows itself: a rich bar on a terminal, plain log lines elsewhere.

Both views receive the same :class:`ProgressState`; the plain one prints a line at every step
event and at least every ``interval_s`` while a step runs, so logs of CI jobs show life.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.text import Text

from atomlab.tracking.eta import format_duration
from atomlab.tracking.models import EtaEstimate

DEFAULT_PLAIN_INTERVAL_S = 10.0


@dataclass(frozen=True)
class ProgressState:
    """What a progress view shows at one moment."""

    run_id: str
    pipeline: str
    position: int
    total: int
    step: str | None
    step_elapsed_s: float | None
    run_elapsed_s: float
    eta: EtaEstimate
    fraction: float | None

    def headline(self) -> str:
        step = f"Step {self.position}/{self.total}: {self.step}" if self.step else "between steps"
        parts = [
            f"elapsed {format_duration(self.run_elapsed_s)}",
            f"step {format_duration(self.step_elapsed_s)}",
            f"ETA {format_duration(self.eta.remaining_s)}",
        ]
        if self.eta.remaining_s is not None and self.eta.low_s != self.eta.high_s:
            parts[-1] += f" ({format_duration(self.eta.low_s)}-{format_duration(self.eta.high_s)})"
        if self.fraction is not None:
            parts.append(f"{self.fraction * 100:.0f}%")
        return f"{step} ({', '.join(parts)})"


class ProgressView(Protocol):
    def event(self, message: str) -> None: ...

    def update(self, state: ProgressState) -> None: ...

    def close(self) -> None: ...


class NullProgress:
    """Shows nothing (library use, tests)."""

    def event(self, message: str) -> None:
        return None

    def update(self, state: ProgressState) -> None:
        return None

    def close(self) -> None:
        return None


class PlainProgress:
    """One log line per step event, and one at least every ``interval_s`` while a step runs."""

    def __init__(
        self, stream: TextIO | None = None, *, interval_s: float = DEFAULT_PLAIN_INTERVAL_S
    ) -> None:
        self._stream = stream
        self._interval = interval_s
        self._last: float | None = None
        self._lock = threading.Lock()

    def _write(self, line: str) -> None:
        stream = self._stream or sys.stderr
        with self._lock:
            stream.write(line + "\n")
            stream.flush()

    def event(self, message: str) -> None:
        self._write(message)

    def update(self, state: ProgressState) -> None:
        if self._last is not None and state.run_elapsed_s - self._last < self._interval:
            return
        self._last = state.run_elapsed_s
        self._write(f"[{state.run_id}] {state.headline()}")

    def close(self) -> None:
        return None


class RichProgress:
    """A live two-line display on a terminal: the headline and a bar for the current step."""

    live = True

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(file=sys.stderr)
        self._live = Live(Text(""), console=self._console, refresh_per_second=4, transient=True)
        self._live.start()

    def event(self, message: str) -> None:
        self._live.console.print(message, markup=False, highlight=False)

    def update(self, state: ProgressState) -> None:
        bar = ProgressBar(
            total=1.0 if state.fraction is not None else None,
            completed=state.fraction or 0.0,
            width=40,
        )
        self._live.update(Group(Text(state.headline()), bar))

    def close(self) -> None:
        self._live.stop()


def auto_view(
    *,
    json_mode: bool,
    stream: TextIO | None = None,
    interval_s: float = DEFAULT_PLAIN_INTERVAL_S,
) -> ProgressView:
    """Rich on an interactive terminal, plain lines when piped, logged or in ``--json`` mode."""
    out = stream or sys.stderr
    if not json_mode and out.isatty():
        return RichProgress(Console(file=out))
    return PlainProgress(out, interval_s=interval_s)


__all__ = [
    "DEFAULT_PLAIN_INTERVAL_S",
    "NullProgress",
    "PlainProgress",
    "ProgressState",
    "ProgressView",
    "RichProgress",
    "auto_view",
]
