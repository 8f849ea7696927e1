"""How table actions and the task's set-up reach an instrument: specs and commands via the guard.

The same code drives the simulator over TCP (the ``collect`` step) and in-process (the
environment), so an action means the same commands with the same arguments in both::

    instrument = GuardedInstrument(guard)
    prepare_instrument(instrument)                  # 5 nm frame, tip-shaper settings, scanning
    sent = perform(instrument, ACTIONS[2])          # a +3 V pulse: [("Bias.Pulse", {...})]
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from atomlab.instrument import WriteGuard, read_value
from atomlab.learning.actions import Z_ON, TableAction
from atomlab.learning.task import FRAME_SIZE_M, TIP_SHAPER_PROPS
from atomlab.surface import Surface

QUIET_STEP_MARGIN_M: Final = 1e-9
"""The frame keeps at least this far from a step edge."""
QUIET_GRID_M: Final = 0.5e-9

SCAN_START: dict[str, Any] = {"action": 0, "direction_up": 1}

Sent = list[tuple[str, dict[str, Any]]]
"""The commands an action sent, in order (spec writes are recorded by the monitor as specs)."""


@dataclass
class GuardedInstrument:
    """An instrument behind a :class:`WriteGuard`: every write is bounded and audited."""

    guard: WriteGuard

    def read_spec(self, label: str) -> float:
        return float(read_value(self.guard.client, self.guard.catalog.spec(label)))

    def set_spec(self, label: str, value: float) -> None:
        self.guard.set(label, value)

    def command(self, name: str, args: Mapping[str, Any]) -> None:
        self.guard.command(name, dict(args))


def quiet_frame_centre(surface: Surface, *, size_m: float = FRAME_SIZE_M) -> tuple[float, float]:
    """Piezo (x, y) of the frame that keeps farthest from defects, off the step edges.

    An operator images a clean terrace; over a cluster or a step the controller's tracking error
    would look like a noisy tip. Chosen from the seeded surface the simulator also builds.
    """
    w_m, h_m = surface.lattice.width_m, surface.lattice.height_m
    half = size_m / 2
    xs = np.arange(half, w_m - half, QUIET_GRID_M)
    ys = np.arange(half, h_m - half, QUIET_GRID_M)
    cx, cy = np.meshgrid(xs, ys, indexing="ij")
    clearance = np.full(cx.shape, np.inf)
    for defect in surface.defects:
        dx = np.maximum(np.abs(_wrap(cx - defect.x_m, w_m)) - half, 0.0)
        dy = np.maximum(np.abs(_wrap(cy - defect.y_m, h_m)) - half, 0.0)
        clearance = np.minimum(clearance, np.hypot(dx, dy))
    # the surface repeats with its terraces: x = 0 is a step down as tall as all steps together
    for step_x in (0.0, *(step.x_m for step in surface.steps)):
        off_step = np.abs(_wrap(cx - step_x, w_m)) - half >= QUIET_STEP_MARGIN_M
        clearance = np.where(off_step, clearance, -np.inf)
    # the most clearance; among equals, nearest the surface centre (piezo 0, 0)
    centre_distance = np.hypot(cx - w_m / 2, cy - h_m / 2)
    best = np.lexsort((centre_distance.ravel(), -clearance.ravel()))[0]
    return float(cx.ravel()[best] - w_m / 2), float(cy.ravel()[best] - h_m / 2)


def _wrap(delta: np.ndarray, period: float) -> np.ndarray:
    return (delta + period / 2) % period - period / 2


def prepare_instrument(
    instrument: GuardedInstrument, *, centre: tuple[float, float] = (0.0, 0.0)
) -> Sent:
    """The task's set-up: a 5 nm frame at ``centre``, the tip-shaper settings, a running scan."""
    instrument.set_spec("Scan Frame Center X", centre[0])
    instrument.set_spec("Scan Frame Center Y", centre[1])
    instrument.set_spec("Scan Frame Width", FRAME_SIZE_M)
    instrument.set_spec("Scan Frame Height", FRAME_SIZE_M)
    sent: Sent = [("TipShaper.PropsSet", dict(TIP_SHAPER_PROPS)), ("Scan.Action", SCAN_START)]
    for name, args in sent:
        instrument.command(name, args)
    return sent


def perform(instrument: GuardedInstrument, action: TableAction) -> Sent:
    """Carry out one table action; returns the commands it sent (none for spec changes)."""
    if action.kind == "keep":
        return []
    if action.kind == "spec":
        assert action.spec is not None and action.factor is not None
        instrument.set_spec(action.spec, instrument.read_spec(action.spec) * action.factor)
        return []
    assert action.command is not None
    args = dict(action.args)
    instrument.command(action.command, args)
    if action.name == "withdraw_reapproach":
        instrument.set_spec(Z_ON, 1)  # re-approach: the controller brings the tip back
    return [(action.command, args)]
