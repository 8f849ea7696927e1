"""The training configurations (behaviour cloning, DAgger, PPO): plain values, no torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class BcConfig:
    hidden: tuple[int, ...] = (64, 64)
    epochs: int = 60
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    class_weight_power: float = 0.5
    """Class weights are (count / max count) ** -power: 0 unweighted, 1 fully balanced."""
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BcConfig:
        values = dict(data)
        if "hidden" in values:
            values["hidden"] = tuple(values["hidden"])
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class DaggerConfig:
    iterations: int = 3
    episodes_per_iteration: int = 4
    epochs: int = 20
    """Training epochs per iteration (warm-started from the previous network)."""
    beta0: float = 0.0
    beta_decay: float = 0.5
    class_weight_power: float = 0.0
    """Retraining on the aggregate is unweighted: the learner's own rollouts hold plenty of every
    action the expert takes, and up-weighting rare actions there makes a policy act on
    ambiguous windows (measured: 0.54 vs 0.67 after 3000 steps, docs/learning.md)."""
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class PpoConfig:
    total_steps: int = 2048
    n_steps: int = 256
    batch_size: int = 64
    n_epochs: int = 4
    learning_rate: float = 1e-4
    clip_range: float = 0.1
    gamma: float = 0.95
    ent_coef: float = 0.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
