"""The expert operator: a scripted rule book that may read the simulator's ground truth.

It does what a careful STM operator does while imaging: keep scanning while the tip is good; after
a tip change, a bias pulse, then one of the opposite polarity, and if two pulses in a row did not
help, the tip shaper; after a crash, the tip shaper at once. Unlike a learner it *knows* the tip
state (privileged :class:`~atomlab.learning.task.TipStatus`); its only other input, the number of
recent pulses, is the same count the learner observes.

It reacts like a person watching the image: to damage at least ``reaction_s`` old (half a
decision window by default). An expert that acted on a change 10 ms old would demonstrate what no
learner can see in the recording (the imitation gap): measured on the environment, a classifier of
the recorded window reaches 92 % with an instant expert's labels and 97 % with these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from atomlab.learning.actions import KEEP_SCANNING, action_by_name
from atomlab.learning.task import TipStatus


@dataclass(frozen=True, kw_only=True)
class ScriptedExpert:
    """Pulses (by table name), how many in a row before shaping, and the shaper's name."""

    pulses: tuple[str, ...] = ("pulse_+3V", "pulse_-3V")
    pulses_before_shaping: int = 2
    shaper: str = "tip_shaper"
    reaction_s: float = 0.5

    def act(self, status: TipStatus, recent_pulses: int, now_s: float) -> int:
        """The table index to take at ``now_s`` (the clock of ``status.since_s``)."""
        if status.healthy or now_s - status.since_s < self.reaction_s:
            return KEEP_SCANNING
        if status.crashed or recent_pulses >= self.pulses_before_shaping:
            return action_by_name(self.shaper).index
        return action_by_name(self.pulses[recent_pulses % len(self.pulses)]).index

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "scripted-expert", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScriptedExpert:
        values = {k: v for k, v in data.items() if k != "kind"}
        if "pulses" in values:
            values["pulses"] = tuple(values["pulses"])
        expert = cls(**values)
        for name in (*expert.pulses, expert.shaper):
            action_by_name(name)  # KeyError names the unknown action
        return expert
