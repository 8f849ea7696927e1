"""The bias never passes through 0 V while the Z controller is on.

At 0 V no current flows, so a feedback that chases the current setpoint drives the tip into the
surface: a ramp from +0.1 V to −0.3 V in 0.1 V steps dwells at 0 V for one step interval and
crashes the tip. A spec whose catalog safety names ``zero_unsafe_while: <entry>`` (the packaged
catalog: ``bias_v`` with ``zctrl_on``) follows this rule whenever that entry reads non-zero:

* ``set`` to the other polarity crosses 0 V in **one** step, from +h to −h with h = max_step / 2
  (so no value sent is nearer 0 V than h, and no step is larger than max_step): 0.1 V → −0.3 V
  becomes 0.05, −0.05, −0.15, −0.25, −0.3 V. The current stays within a factor of about 2 of
  the setpoint at every step, so the feedback only moves the tip a fraction of an ångström.
* ``set`` to 0 V, and a ``ramp`` whose values reach or pass 0 V, are refused (exit 2): a ramp is
  an explicit list of values, and sending one at or through 0 V is the crash. Switch the Z
  controller off first (``atomlab instrument set zctrl_on 0``), or use ``set``.

With the controller off the bias may take any value in its limits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Final

MAX_PLAN_STEPS: Final = 10_000
"""A plan with more steps is refused: it would run for hours and a typo made it (1e-9 V steps)."""

RampValues = Callable[[float, float, float], list[float]]
Refuse = Callable[[str], None]


def plan_steps(n_steps: float, what: str) -> None:
    """Raise ValueError when a plan would have more than :data:`MAX_PLAN_STEPS` steps."""
    if n_steps > MAX_PLAN_STEPS:
        raise ValueError(
            f"{what} would take {n_steps:.3g} steps, more than the {MAX_PLAN_STEPS} a plan may "
            "have; use a larger step"
        )


def crossing_set_steps(
    old: float,
    target: float,
    steps: list[float],
    max_step: float | None,
    ramp_values: RampValues,
    refuse: Refuse,
    name: str,
) -> tuple[list[float], str | None]:
    """The steps of a ``set`` with the feedback on: unchanged unless they touch or cross 0 V."""
    if target == 0.0:
        refuse(
            f"{name} = 0 with the Z controller on drives the tip into the surface (no current "
            "flows at 0 V); switch the controller off first (atomlab instrument set zctrl_on 0) "
            "or pick a bias away from 0; nothing was sent"
        )
    if old == 0.0 or (old > 0) == (target > 0):
        return steps, None
    if max_step is None:
        return [target], f"crosses 0 V in one step ({old:g} -> {target:g}) with the feedback on"
    half = max_step / 2.0
    near_old = math.copysign(half, old) if abs(old) > half else old
    near_new = math.copysign(min(half, abs(target)), target)
    leg_out = ramp_values(old, near_old, max_step)[1:] if near_old != old else []
    leg_in = [near_new] + (
        ramp_values(near_new, target, max_step)[1:] if near_new != target else []
    )
    note = (
        f"crosses 0 V in one step ({near_old:g} -> {near_new:g}): the Z controller is on, and "
        "the bias must not dwell near 0 V"
    )
    return leg_out + leg_in, note


def check_ramp(values: Sequence[float], step: float, refuse: Refuse, name: str) -> None:
    """Refuse a ramp (with the feedback on) whose values reach, or pass through, 0 V."""
    touches = any(abs(v) < step / 2.0 for v in values)
    crosses = min(values) < 0.0 < max(values)
    if touches or crosses:
        refuse(
            f"the ramp of {name} goes through 0 V while the Z controller is on, which drives "
            "the tip into the surface; switch the controller off first (atomlab instrument set "
            "zctrl_on 0), keep the ramp on one side of 0 V, or use `set`, which crosses 0 V in "
            "one step; nothing was sent"
        )
