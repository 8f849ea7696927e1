"""The task: keep the tip good while imaging, and how well a policy did it (the task score).

An episode images a 5 nm frame (a line every 0.25 s) while the simulator's tip changes at random;
every decision window (1 s) the operator keeps scanning or conditions the tip (a table action).
A window is *good* when the operator kept scanning and the tip was healthy throughout it; the
time a conditioning action takes (a pulse, 2.5 s of tip shaping) is never good. Per episode:

- ``good_line_fraction`` = good time / total time (the share of scan lines imaged with a good tip),
- ``recovery_s`` = mean time from a tip change or crash until the tip is healthy again (a damage
  still open at the end counts until the end),
- ``crashes``, and ``score = good_line_fraction - crash_penalty x crashes``.

Tip health comes from the simulator's ground truth (privileged); only the expert and the scorer
see it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from atomlab.core.errors import InvalidInputError
from atomlab.learning.observation import REQUIRED_SIGNALS, REQUIRED_SPECS

FRAME_SIZE_M: Final = 5e-9
"""A 5 nm frame at the default 40 nm/s: 0.25 s per line, 64 s per 256-line frame."""
FRAME_TIME_S: Final = 64.0
TIP_SHAPER_PROPS: Final[Mapping[str, float | int]] = {
    "switch_off_delay_s": 0.05,
    "change_bias": 1,
    "bias_v": 0.1,
    "tip_lift_m": -2e-9,
    "lift_time_1_s": 1.0,
    "bias_lift_v": 4.0,
    "bias_settling_time_s": 0.2,
    "lift_height_m": 2e-9,
    "lift_time_2_s": 1.0,
    "end_wait_time_s": 0.3,
    "restore_feedback": 1,
}
"""Tip-shaper settings the task uses: one shaping takes 2.5 s (lift, settle, lift, wait)."""
TIP_SHAPER_DURATION_S: Final = sum(
    float(TIP_SHAPER_PROPS[k])
    for k in ("lift_time_1_s", "bias_settling_time_s", "lift_time_2_s", "end_wait_time_s")
)
MONITOR_SPECS: Final = (*REQUIRED_SPECS, "Z Controller Time Constant")


@dataclass(frozen=True, kw_only=True)
class TaskConfig:
    """The world and the rules of one task; the environment and the collection share it."""

    tip_change_rate_per_s: float = 0.125
    loop_rate_hz: float = 500.0
    """The simulator's control-loop rate (``atomlab sim spm --loop-rate``); half the default
    1 kHz halves the cost of simulating the task and keeps the Z controller stable."""
    decision_interval_s: float = 1.0
    monitor_interval_s: float = 0.1
    episode_s: float = 40.0
    crash_penalty: float = 0.1
    signals: tuple[str, ...] = REQUIRED_SIGNALS
    specs: tuple[str, ...] = MONITOR_SPECS

    def __post_init__(self) -> None:
        checks = {
            "tip_change_rate_per_s": 0 <= self.tip_change_rate_per_s <= 10,
            "loop_rate_hz": 100 <= self.loop_rate_hz <= 20_000,
            "decision_interval_s": 0.1 <= self.decision_interval_s <= 60,
            "monitor_interval_s": 0.001 <= self.monitor_interval_s <= self.decision_interval_s / 3,
            "episode_s": 2 * self.decision_interval_s
            <= self.episode_s
            <= FRAME_TIME_S - TIP_SHAPER_DURATION_S,
            "crash_penalty": 0 <= self.crash_penalty <= 10,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if not (ok and math.isfinite(value)):
                raise InvalidInputError(
                    f"task {name} = {value!r} is out of range (episodes must fit in one "
                    f"{FRAME_TIME_S:g} s frame, the monitor must sample a window at least 3 times)",
                    field=name,
                    value=value,
                )
        missing = [s for s in REQUIRED_SIGNALS if s not in self.signals] + [
            s for s in REQUIRED_SPECS if s not in self.specs
        ]
        if missing:
            raise InvalidInputError(
                f"the task must record {', '.join(missing)}: the observation is built from them",
                field="signals/specs",
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskConfig:
        values = dict(data)
        for key in ("signals", "specs"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


# --- tip health (privileged) -------------------------------------------------------------------

HEALTHY, DAMAGED, CRASHED = "healthy", "damaged", "crashed"
TIP_EVENTS: Final = frozenset({"tip_change", "tip_crash", "tip_restored"})


@dataclass(frozen=True)
class TipStatus:
    """What the expert may know and a learner never sees."""

    state: str
    since_s: float

    @property
    def healthy(self) -> bool:
        return self.state == HEALTHY

    @property
    def crashed(self) -> bool:
        return self.state == CRASHED


class TipTimeline:
    """Tip health over time, from the simulator's events (``tip_change``, ``tip_crash``,
    ``tip_restored``) on the simulator's clock. The tip starts healthy."""

    def __init__(self, start_s: float) -> None:
        self.start_s = start_s
        self._changes: list[tuple[float, str]] = [(start_s, HEALTHY)]
        self.crash_times: list[float] = []

    def add(self, t_s: float, kind: str) -> None:
        """Feed one simulator event (others than the tip events are ignored)."""
        if kind not in TIP_EVENTS:
            return
        state = {"tip_change": DAMAGED, "tip_crash": CRASHED, "tip_restored": HEALTHY}[kind]
        if kind == "tip_crash":
            self.crash_times.append(t_s)
        current = self._changes[-1][1]
        if state == DAMAGED and current == CRASHED:
            state = CRASHED  # a blunt tip that also changes is still a crashed tip
        self._changes.append((max(t_s, self._changes[-1][0]), state))

    def extend(self, events: Iterable[tuple[float, str]]) -> None:
        for t_s, kind in events:
            self.add(t_s, kind)

    def status_at(self, t_s: float) -> TipStatus:
        last = 0
        for i, (t, _) in enumerate(self._changes):
            if t > t_s:
                break
            last = i
        state = self._changes[last][1]
        first = last
        while first > 0 and self._changes[first - 1][1] == state:
            first -= 1
        return TipStatus(state, self._changes[first][0])

    def healthy_throughout(self, start_s: float, end_s: float) -> bool:
        """True when the tip was healthy at ``start_s`` and stayed so until ``end_s``."""
        if not self.status_at(start_s).healthy:
            return False
        return not any(start_s < t < end_s and s != HEALTHY for t, s in self._changes)

    def crashes_between(self, start_s: float, end_s: float) -> int:
        return sum(1 for t in self.crash_times if start_s <= t < end_s)

    def damage_periods(self, end_s: float) -> list[tuple[float, float]]:
        """(start, end) of each stretch with a bad tip that began before ``end_s``."""
        periods: list[tuple[float, float]] = []
        opened: float | None = None
        for t_s, state in self._changes:
            if t_s >= end_s:
                break
            if state != HEALTHY and opened is None:
                opened = t_s
            elif state == HEALTHY and opened is not None:
                periods.append((opened, t_s))
                opened = None
        if opened is not None:
            periods.append((opened, end_s))
        return periods


# --- scoring -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slot:
    """One decision: the action taken at ``start_s`` and the window recorded until ``end_s``."""

    start_s: float
    end_s: float
    action: int
    good: bool
    crashes: int


@dataclass
class EpisodeStats:
    """How one episode went; :meth:`row` gives the comparison's fields."""

    seed: int
    crash_penalty: float
    good_s: float = 0.0
    total_s: float = 0.0
    crashes: int = 0
    steps: int = 0
    recoveries_s: list[float] = field(default_factory=list)
    actions: Counter[int] = field(default_factory=Counter)

    @property
    def good_line_fraction(self) -> float:
        return self.good_s / self.total_s if self.total_s > 0 else 0.0

    @property
    def score(self) -> float:
        return self.good_line_fraction - self.crash_penalty * self.crashes

    def add_slot(self, slot: Slot, window_s: float) -> None:
        self.steps += 1
        self.total_s += slot.end_s - slot.start_s
        if slot.good:
            self.good_s += window_s
        self.crashes += slot.crashes
        self.actions[slot.action] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "score": self.score,
            "good_line_fraction": self.good_line_fraction,
            "recovery_s": _mean(self.recoveries_s),
            "tip_events": len(self.recoveries_s),
            "crashes": self.crashes,
            "steps": self.steps,
            "total_s": self.total_s,
            "actions": {str(k): v for k, v in sorted(self.actions.items())},
        }


def slot_reward(slot: Slot, *, crash_penalty: float) -> float:
    """The per-decision reward: 1 for a good window, minus the penalty per crash in it (an
    episode's return is the number of good windows minus the crash penalties)."""
    return (1.0 if slot.good else 0.0) - crash_penalty * slot.crashes


def summarise(policy: str, episodes: list[EpisodeStats]) -> dict[str, Any]:
    """One row of the comparison table: means over episodes, crashes summed."""
    scores = [e.score for e in episodes]
    recoveries = [r for e in episodes for r in e.recoveries_s]
    return {
        "policy": policy,
        "score": _mean(scores),
        "score_std": _std(scores),
        "good_line_fraction": _mean([e.good_line_fraction for e in episodes]),
        "recovery_s": _mean(recoveries),
        "tip_events": len(recoveries),
        "crashes": sum(e.crashes for e in episodes),
        "episodes": len(episodes),
        "steps": sum(e.steps for e in episodes),
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
