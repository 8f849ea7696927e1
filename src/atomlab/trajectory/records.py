"""The plain records a recording is made of: catalog entries, samples, actions, errors, misses.

The monitor produces them, the store writes them, the queries read them back; nothing here
knows about SQLite or the instrument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Value = float | int | bool | str | None
ActionSource = Literal["self", "external"]
MissReason = Literal["late", "disconnected", "error"]
ActionKind = Literal["spec-change", "command"]
RunStatus = Literal["running", "completed", "interrupted", "terminated", "failed", "crashed"]
"""``crashed``: the recorder died without finishing the run (kill -9, power loss); readers see it
by the recorder's process (same host) or its expired lease, and mark it so."""


@dataclass(frozen=True)
class ChannelInfo:
    """One recorded signal or spec as the catalog describes it."""

    label: str
    unit: str = ""
    source_command: str = ""
    source_field: str = ""
    value_type: str = "float"
    min_value: float | None = None
    max_value: float | None = None
    set_command: str = ""
    #: Index in the instrument's signal list (``Signals.ValsGet``); -1 for specs.
    signal_index: int = -1
    description: str = ""


@dataclass(frozen=True)
class Sample:
    """One tick: the signals and specs read, when, and how long the reads took."""

    sample_idx: int
    tick_idx: int
    dt_s: float
    scheduled_dt_s: float
    latency_s: float
    signals: tuple[Value, ...]
    specs: tuple[Value, ...]


@dataclass(frozen=True)
class ActionEvent:
    """An operator action: a spec changed (or a ramp of changes merged into one), ``kind``
    ``spec-change``; or a guarded command was sent (``Bias.Pulse``, ``TipShaper.Start`` ...),
    ``kind`` ``command`` with its ``command``, ``args`` and the reply as ``payload``
    (``spec_label`` is then the command's name and the values are None).
    """

    action_idx: int
    sample_idx: int
    dt_s: float
    end_dt_s: float
    detected_at_utc: str
    spec_label: str
    old_value: Value
    new_value: Value
    delta: float | None
    steps: int
    source: ActionSource
    window_start_dt_s: float
    window_end_dt_s: float
    kind: ActionKind = "spec-change"
    command: str | None = None
    args: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None


@dataclass(frozen=True)
class MonitorError:
    """A poll or connection failure; the run went on."""

    dt_s: float
    at_utc: str
    error_type: str
    message: str
    command: str = ""
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class MissedTicks:
    """Consecutive scheduled ticks that were not polled (late, or the instrument was away)."""

    first_tick_idx: int
    count: int
    scheduled_dt_s: float
    detected_dt_s: float
    reason: MissReason


@dataclass(frozen=True)
class LeaseRenewal:
    """The recorder is alive: the writer renews the run's lease (and commits what it holds)."""


@dataclass(frozen=True)
class RunAnchor:
    """The wall time of ``dt_s = 0``, stored by the writer as soon as the recording starts."""

    started_at_utc: str


Record = Sample | ActionEvent | MonitorError | MissedTicks | LeaseRenewal | RunAnchor
