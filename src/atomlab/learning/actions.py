"""The operator's action table (in the spirit of DeepSPM) and how recorded actions map onto it.

Every table action is something an STM operator does while imaging: keep scanning, a bias pulse
of a few voltages, the tip shaper, retract and re-approach, or a setpoint or gain change. A
command action (``Bias.Pulse``, ``TipShaper.Start``, ``ZCtrl.Withdraw``) is sent through the write
guard's ``command``; a spec change (``Z Setpoint``, ``Z Controller P Gain``) through its ``set``.
The trajectory monitor records both, so :func:`table_action_of` can turn a recorded action back
into the table index it came from. This module imports nothing of the simulator or instrument.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

ActionKind = Literal["keep", "command", "spec"]

PULSE: Final = "Bias.Pulse"
TIP_SHAPER: Final = "TipShaper.Start"
WITHDRAW: Final = "ZCtrl.Withdraw"
SETPOINT: Final = "Z Setpoint"
P_GAIN: Final = "Z Controller P Gain"
Z_ON: Final = "Z Controller Enabled"

PULSE_WIDTH_S: Final = 0.05
"""Bias pulses last 50 ms with the Z controller held (DeepSPM used tens of ms)."""
FACTOR_TOLERANCE: Final = 0.05
"""A recorded spec change within 5 % of a table factor is that table action."""
PULSE_TOLERANCE_V: Final = 0.01


def _pulse_args(bias_v: float) -> dict[str, Any]:
    return {
        "wait_until_done": 1,
        "width_s": PULSE_WIDTH_S,
        "bias_v": bias_v,
        "z_hold": 1,
        "absolute": 2,
    }


@dataclass(frozen=True)
class TableAction:
    """One row of the action table."""

    index: int
    name: str
    title: str
    kind: ActionKind
    command: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    spec: str | None = None
    factor: float | None = None
    """For a spec change: the new value is the current one times this."""

    @property
    def is_conditioning(self) -> bool:
        """Anything but keep-scanning interrupts the image line it happens in."""
        return self.kind != "keep"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "command": self.command,
            "args": dict(self.args),
            "spec": self.spec,
            "factor": self.factor,
        }


ACTIONS: Final[tuple[TableAction, ...]] = (
    TableAction(0, "keep_scanning", "keep scanning (no-op)", "keep"),
    TableAction(1, "pulse_+1.5V", "bias pulse +1.5 V", "command", PULSE, _pulse_args(1.5)),
    TableAction(2, "pulse_+3V", "bias pulse +3 V", "command", PULSE, _pulse_args(3.0)),
    TableAction(3, "pulse_-3V", "bias pulse -3 V", "command", PULSE, _pulse_args(-3.0)),
    TableAction(4, "pulse_+6V", "bias pulse +6 V", "command", PULSE, _pulse_args(6.0)),
    TableAction(
        5, "tip_shaper", "tip shaper", "command", TIP_SHAPER, {"wait": 1, "timeout_ms": -1}
    ),
    TableAction(
        6,
        "withdraw_reapproach",
        "withdraw, then re-approach (Z controller on)",
        "command",
        WITHDRAW,
        {"wait": 1, "timeout_ms": -1},
    ),
    TableAction(7, "setpoint_down", "setpoint x0.5", "spec", spec=SETPOINT, factor=0.5),
    TableAction(8, "setpoint_up", "setpoint x2", "spec", spec=SETPOINT, factor=2.0),
    TableAction(9, "gain_down", "P gain x0.5", "spec", spec=P_GAIN, factor=0.5),
    TableAction(10, "gain_up", "P gain x2", "spec", spec=P_GAIN, factor=2.0),
)
"""The action table; the index is the action a policy outputs."""

KEEP_SCANNING: Final = 0
ACTION_NAMES: Final = tuple(a.name for a in ACTIONS)


def action_by_name(name: str) -> TableAction:
    for action in ACTIONS:
        if action.name == name:
            return action
    raise KeyError(f"no table action {name!r}; actions: {', '.join(ACTION_NAMES)}")


def table_action_of(
    *,
    kind: str,
    command: str | None = None,
    args: Mapping[str, Any] | None = None,
    spec_label: str | None = None,
    old_value: Any = None,
    new_value: Any = None,
) -> int | None:
    """The table index of a recorded action, or None when the table has no such action.

    ``kind`` is the monitor's ``action_kind``: ``command`` (with ``command``/``args``) or
    ``spec-change`` (with ``spec_label``/``old_value``/``new_value``).
    """
    if kind == "command":
        return _command_action(command or "", args or {})
    if kind == "spec-change":
        return _spec_action(spec_label or "", old_value, new_value)
    return None


def _command_action(command: str, args: Mapping[str, Any]) -> int | None:
    if command == PULSE:
        volts = _number(args.get("bias_v"))
        if volts is None:
            return None
        for action in ACTIONS:
            if action.command == PULSE and abs(action.args["bias_v"] - volts) <= PULSE_TOLERANCE_V:
                return action.index
        return None
    for action in ACTIONS:
        if action.command == command and action.command != PULSE:
            return action.index
    return None


def _spec_action(label: str, old: Any, new: Any) -> int | None:
    old_value, new_value = _number(old), _number(new)
    if old_value is None or new_value is None or old_value <= 0:
        return None
    ratio = new_value / old_value
    for action in ACTIONS:
        if (
            action.spec == label
            and action.factor is not None
            and abs(ratio / action.factor - 1.0) <= FACTOR_TOLERANCE
        ):
            return action.index
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
