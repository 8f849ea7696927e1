"""What one demo run does: the preset sizes, the seed, where it writes (docs/demo.md).

::

    config = demo_config("standard", seed=0, home=Path("~/.local/share/atomlab"))
    config.surface_nm, config.scan_pixels
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomlab.core.errors import InvalidInputError

DEFAULT_PRESET = "standard"
LEARNING_PRESET = "demo"

MONITOR_INTERVAL_S = 0.05
"""The trajectory monitor samples at 20 Hz during the expert session."""
ACTION_WINDOW_S = 1.0
SCAN_SPEED_NM_S = 600.0
SCAN_LOOP_HZ = 10_000.0
"""The Z controller's loop rate from the expert's first move on: the stiff feedback a survey at
the demo's speed needs is unstable at the default 1 kHz (the tip oscillates into the surface)."""
SCAN_MARGIN_NM = 2.5
"""The frame reaches this far beyond each edge of the surface: on the periodic surface, one of
the two copies of a defect near an edge is then seen whole (a cluster reaches about 2.5 nm)."""
PIXEL_NM = 0.16
REPAIR_REACH_NM = 0.5
"""The swarm agents' tool acts on a defect within this distance of its target: the tolerance
detections are judged by (docs/demo.md, "Detection")."""
SWARM_TIME_SCALE = 4.0
"""The swarm simulator runs four simulated seconds per real second."""


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """One demo run. Build it with :func:`demo_config`; every field has the preset's value."""

    preset: str = DEFAULT_PRESET
    seed: int = 0
    home: Path
    keep: bool = False
    surface_nm: float = 20.0
    defects: int = 12
    agents: int = 16
    expert_hold_s: float = 0.8
    """How long the expert waits after each change (so each action gets its own window)."""
    scan_margin_nm: float = SCAN_MARGIN_NM
    pixel_nm: float = PIXEL_NM
    scan_speed_nm_s: float = SCAN_SPEED_NM_S
    repair_reach_nm: float = REPAIR_REACH_NM
    swarm_time_scale: float = SWARM_TIME_SCALE
    swarm_timeout_s: float = 120.0
    learning_preset: str = LEARNING_PRESET
    start_timeout_s: float = 60.0
    skip: tuple[str, ...] = ()
    """Stages to leave out on request (``learning``, ``triage``, ``report``)."""

    @property
    def frame_nm(self) -> float:
        return self.surface_nm + 2 * self.scan_margin_nm

    @property
    def scan_pixels(self) -> int:
        """Pixels (and lines) of a scan: the frame at ``pixel_nm``, a multiple of 16 as on
        Nanonis."""
        pixels = self.frame_nm / self.pixel_nm
        return max(16, int(-(-pixels // 16) * 16))

    @property
    def surface_units(self) -> int:
        """The surface side in lattice units (0.1 nm)."""
        return round(self.surface_nm * 10)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["home"] = str(self.home)
        data["skip"] = list(self.skip)
        data["frame_nm"] = self.frame_nm
        data["scan_pixels"] = self.scan_pixels
        return data


SKIPPABLE = ("learning", "triage", "report")

PRESETS: dict[str, dict[str, Any]] = {
    # The full demo: the swarm service's default 20 x 20 nm surface, 12 defects, 16 agents.
    "standard": {},
    # A smaller world for tests and slow machines: 14 x 14 nm, 5 defects, 4 agents.
    "small": {"surface_nm": 14.0, "defects": 5, "agents": 4, "swarm_timeout_s": 90.0},
}


def demo_config(preset: str = DEFAULT_PRESET, **fields: Any) -> DemoConfig:
    """The config of ``preset`` with ``fields`` (``seed``, ``home``, ``keep``...) on top."""
    if preset not in PRESETS:
        raise InvalidInputError(
            f"unknown demo preset {preset!r}; use one of {', '.join(PRESETS)}",
            field="preset",
            value=preset,
        )
    if "home" not in fields:
        raise InvalidInputError("the demo needs a data home", field="home")
    skip = tuple(fields.pop("skip", ()) or ())
    unknown = [name for name in skip if name not in SKIPPABLE]
    if unknown:
        raise InvalidInputError(
            f"cannot skip {', '.join(map(repr, unknown))}; stages that can be skipped: "
            f"{', '.join(SKIPPABLE)} (the expert session and the survey are the demo's spine)",
            field="skip",
            value=unknown,
        )
    fields["skip"] = skip
    return DemoConfig(preset=preset, **{**PRESETS[preset], **fields})
