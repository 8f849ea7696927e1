"""What a trajectory monitor recorded of one run, as plain arrays: the learner's only input.

A :class:`Recording` holds samples (time, signal values and spec values, by label) and the
commands sent during the run, with their times. The environment fills one as it polls its
in-process simulator; the dataset builder fills one from a trajectory database. Nothing here can
reach a simulator: it holds numbers and names only.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

Value = float | int | bool | str | None


@dataclass(frozen=True)
class CommandRecord:
    """A command sent during the run (a pulse, the tip shaper ...); ``dt_s`` from its start."""

    dt_s: float
    command: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SampleWindow:
    """The samples with ``start <= dt_s < end``: one float array per label."""

    dt_s: NDArray[np.float64]
    signals: dict[str, NDArray[np.float64]]
    specs: dict[str, NDArray[np.float64]]

    @property
    def count(self) -> int:
        return int(self.dt_s.size)


class Recording:
    """Samples and commands of one run, appended in time order."""

    def __init__(self, signal_labels: Sequence[str], spec_labels: Sequence[str]) -> None:
        self.signal_labels = tuple(signal_labels)
        self.spec_labels = tuple(spec_labels)
        self.dt_s: list[float] = []
        self._signals: list[list[float]] = [[] for _ in self.signal_labels]
        self._specs: list[list[float]] = [[] for _ in self.spec_labels]
        self.commands: list[CommandRecord] = []

    def add_sample(self, dt_s: float, signals: Sequence[Value], specs: Sequence[Value]) -> None:
        if len(signals) != len(self._signals) or len(specs) != len(self._specs):
            raise ValueError(
                f"a sample needs {len(self._signals)} signals and {len(self._specs)} specs, "
                f"got {len(signals)} and {len(specs)}"
            )
        if self.dt_s and dt_s < self.dt_s[-1]:
            raise ValueError(f"samples must come in time order ({dt_s} after {self.dt_s[-1]})")
        self.dt_s.append(float(dt_s))
        for column, value in zip(self._signals, signals, strict=True):
            column.append(_as_float(value))
        for column, value in zip(self._specs, specs, strict=True):
            column.append(_as_float(value))

    def add_command(self, dt_s: float, command: str, args: Mapping[str, Any] | None = None) -> None:
        record = CommandRecord(float(dt_s), command, dict(args or {}))
        if self.commands and record.dt_s < self.commands[-1].dt_s:
            bisect.insort(self.commands, record, key=lambda c: c.dt_s)
        else:
            self.commands.append(record)

    @property
    def n_samples(self) -> int:
        return len(self.dt_s)

    @property
    def end_dt_s(self) -> float:
        return self.dt_s[-1] if self.dt_s else 0.0

    def window(self, start_dt_s: float, end_dt_s: float) -> SampleWindow:
        """The samples with ``start_dt_s <= dt_s < end_dt_s``."""
        lo = bisect.bisect_left(self.dt_s, start_dt_s)
        hi = bisect.bisect_left(self.dt_s, end_dt_s)
        return SampleWindow(
            dt_s=np.asarray(self.dt_s[lo:hi], dtype=np.float64),
            signals={
                label: np.asarray(column[lo:hi], dtype=np.float64)
                for label, column in zip(self.signal_labels, self._signals, strict=True)
            },
            specs={
                label: np.asarray(column[lo:hi], dtype=np.float64)
                for label, column in zip(self.spec_labels, self._specs, strict=True)
            },
        )

    def commands_before(self, dt_s: float) -> list[CommandRecord]:
        """The commands sent strictly before ``dt_s``, oldest first."""
        hi = bisect.bisect_left([c.dt_s for c in self.commands], dt_s)
        return self.commands[:hi]


def _as_float(value: Value) -> float:
    if value is None or isinstance(value, str):
        return float("nan")
    return float(value)
