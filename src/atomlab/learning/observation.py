"""The learner's observation: features of what the trajectory monitor recorded, nothing else.

:func:`observe` is the one function that turns a :class:`Recording` into the observation at a
decision time. The dataset builder calls it on recordings read from a trajectory database and the
environment calls it on the recording of its in-process simulator, so a policy sees in closed loop
exactly what it was trained on. Its inputs are recorded numbers only (signals and specs looked up
by label, command times); an import-linter contract keeps this module away from the simulator.

Features over the last decision window ``[t - W, t)``: the tunnelling current relative to the
setpoint (median, spread, sample-to-sample step, peak) and the Z noise, which rise when the tip
apex changes; the last setpoint, P gain, controller state and bias; and the recent command
history (pulses since the last tip shaping, time since each kind of conditioning).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from atomlab.learning.actions import P_GAIN, PULSE, SETPOINT, TIP_SHAPER, WITHDRAW, Z_ON
from atomlab.learning.recording import CommandRecord, Recording

CURRENT_LABEL: Final = "Tunnel Current"
Z_LABEL: Final = "Z Position"
BIAS_LABEL: Final = "Bias"
REQUIRED_SIGNALS: Final = (CURRENT_LABEL, Z_LABEL)
REQUIRED_SPECS: Final = (BIAS_LABEL, SETPOINT, Z_ON, P_GAIN)

REFERENCE_SETPOINT_A: Final = 100e-12
REFERENCE_P_GAIN_M: Final = 3e-11
CURRENT_FLOOR_A: Final = 1e-15
Z_NOISE_UNIT_M: Final = 1e-12
RECENT_PULSE_WINDOWS: Final = 2.5
"""Pulses count as 'recent' for this many decision windows (two pulses in a row, then shape)."""
SINCE_CAP_WINDOWS: Final = 10.0

FEATURE_NAMES: Final = (
    "current_log_median",
    "current_log_std",
    "current_log_mad",
    "current_log_step_mean",
    "current_log_step_median",
    "current_log_max",
    "z_step_std_log",
    "z_step_mad_log",
    "z_step_median_log",
    "setpoint_log",
    "p_gain_log",
    "z_controller_on",
    "bias_v",
    "recent_pulses",
    "since_pulse",
    "since_tip_shaper",
    "since_withdraw",
)
"""Current features are log10(|I| / setpoint) over the window; Z features are of the sample-to-
sample Z steps in pm, as log10(1 + value). Spread is measured twice, plainly (std, mean step) and
robustly (median absolute deviation, median step), so a single transient (the jump when a pulse
restores the tip) does not read as a noisy tip."""
N_FEATURES: Final = len(FEATURE_NAMES)


class EmptyWindowError(ValueError):
    """No sample was recorded in the decision window (a gap in the recording)."""


def observe(recording: Recording, t_s: float, *, window_s: float) -> NDArray[np.float32]:
    """The observation at decision time ``t_s`` (seconds from the run's start)."""
    window = recording.window(t_s - window_s, t_s)
    if window.count == 0:
        raise EmptyWindowError(f"no samples in [{t_s - window_s:.3f}, {t_s:.3f}) s")
    setpoint = np.maximum(np.abs(window.specs[SETPOINT]), CURRENT_FLOOR_A)
    current = np.maximum(np.abs(window.signals[CURRENT_LABEL]), CURRENT_FLOOR_A)
    log_ratio = np.log10(current / setpoint)
    median = float(np.median(log_ratio))
    steps = np.abs(np.diff(log_ratio))
    z_steps = np.diff(window.signals[Z_LABEL]) / Z_NOISE_UNIT_M
    commands = recording.commands_before(t_s)
    features = (
        median,
        float(np.std(log_ratio)),
        float(np.median(np.abs(log_ratio - median))),
        _mean(steps),
        _median(steps),
        float(log_ratio.max()),
        math.log10(1.0 + (float(np.std(z_steps)) if z_steps.size else 0.0)),
        math.log10(1.0 + _median(np.abs(z_steps - _median(z_steps)))),
        math.log10(1.0 + _median(np.abs(z_steps))),
        _log_ratio(window.specs[SETPOINT][-1], REFERENCE_SETPOINT_A),
        _log_ratio(window.specs[P_GAIN][-1], REFERENCE_P_GAIN_M),
        float(window.specs[Z_ON][-1]),
        float(window.specs[BIAS_LABEL][-1]),
        float(recent_pulses(commands, t_s, window_s=window_s)),
        _since(commands, PULSE, t_s, window_s),
        _since(commands, TIP_SHAPER, t_s, window_s),
        _since(commands, WITHDRAW, t_s, window_s),
    )
    out = np.asarray(features, dtype=np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def recent_pulses(commands: Sequence[CommandRecord], t_s: float, *, window_s: float) -> int:
    """Bias pulses sent in the last ``RECENT_PULSE_WINDOWS`` windows since the last tip shaping.

    The scripted expert uses the same count: two pulses in a row that did not help, then shape.
    """
    since = t_s - RECENT_PULSE_WINDOWS * window_s
    count = 0
    for record in reversed(commands):
        if record.dt_s >= t_s:
            continue
        if record.dt_s < since or record.command == TIP_SHAPER:
            break
        if record.command == PULSE:
            count += 1
    return count


def _since(commands: Sequence[CommandRecord], command: str, t_s: float, window_s: float) -> float:
    """Time since the last ``command`` in windows, capped and scaled to 0..1 (1: long ago/never)."""
    for record in reversed(commands):
        if record.command == command and record.dt_s < t_s:
            windows = (t_s - record.dt_s) / window_s
            return min(windows, SINCE_CAP_WINDOWS) / SINCE_CAP_WINDOWS
    return 1.0


def _mean(values: NDArray[np.float64]) -> float:
    return float(values.mean()) if values.size else 0.0


def _median(values: NDArray[np.float64]) -> float:
    return float(np.median(values)) if values.size else 0.0


def _log_ratio(value: float, reference: float) -> float:
    if not math.isfinite(value) or value <= 0:
        return 0.0
    return math.log10(value / reference)
