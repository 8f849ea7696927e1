"""The pipeline's sizes: ``demo`` (a minute and a half on two cores) and ``full`` (the real size).

Seeds never overlap between uses: the collection's simulators, the environment's training
episodes (expert check, fine-tuning) and the held-out evaluation all draw from their own range,
offset by the pipeline seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final, Literal

from atomlab.core.errors import InvalidInputError
from atomlab.learning.task import TaskConfig
from atomlab.learning.training_config import BcConfig, DaggerConfig, PpoConfig

Finetune = Literal["dagger", "ppo"]
FINETUNE_METHODS: Final = ("dagger", "ppo")
SEED_STRIDE: Final = 10_000
"""Pipeline seed ``s`` owns simulator seeds ``s * 10000 + 0..9999`` (and a held-out range)."""
TRAIN_OFFSET: Final = 0
SELECTION_OFFSET: Final = 1_000
FINETUNE_OFFSET: Final = 2_000
COLLECT_OFFSET: Final = 5_000
HELD_OUT_OFFSET: Final = 100_000_000
MAX_SEED: Final = 9_999


@dataclass(frozen=True, kw_only=True)
class Preset:
    name: str
    description: str
    task: TaskConfig
    expert_episodes: int
    collect_episodes: int
    collect_parallel: int
    collect_episode_s: float
    bc: BcConfig
    finetune: Finetune
    dagger: DaggerConfig
    ppo: PpoConfig
    selection_episodes: int
    """Training-world episodes that decide whether the fine-tuned policy replaces BC."""
    eval_episodes: int
    min_actions: int = 5

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["task"] = self.task.to_dict()
        out["bc"] = self.bc.to_dict()
        return out

    def expected_s(self) -> dict[str, float]:
        """Rough step durations on an idle two-core machine, the ETA's priors."""
        steps_per_s = 60.0
        episode_steps = self.task.episode_s / self.task.decision_interval_s
        batches = -(-self.collect_episodes // max(1, self.collect_parallel))
        finetune_steps = (
            self.dagger.iterations * self.dagger.episodes_per_iteration * episode_steps
            if self.finetune == "dagger"
            else self.ppo.total_steps
        ) + 2 * self.selection_episodes * episode_steps
        return {
            "expert": 1.0 + self.expert_episodes * episode_steps / steps_per_s,
            "collect": batches * (self.collect_episode_s + 4.0),
            "bc": 4.0 + self.bc.epochs * 0.02,
            "finetune": 1.0 + finetune_steps / steps_per_s,
            "compare": 5 * self.eval_episodes * episode_steps / steps_per_s,
        }


PRESETS: Final[dict[str, Preset]] = {
    "demo": Preset(
        name="demo",
        description="at most 90 s on two CPU cores: 6 x 25 s recorded, 12 held-out episodes",
        task=TaskConfig(episode_s=30.0),
        expert_episodes=2,
        collect_episodes=6,
        collect_parallel=6,
        collect_episode_s=25.0,
        bc=BcConfig(hidden=(32, 32), epochs=40, weight_decay=1e-3, class_weight_power=0.25),
        finetune="dagger",
        dagger=DaggerConfig(iterations=2, episodes_per_iteration=3, epochs=15),
        ppo=PpoConfig(total_steps=512, n_steps=128),
        selection_episodes=12,
        eval_episodes=12,
    ),
    "full": Preset(
        name="full",
        description="the real size: 24 x 60 s recorded, 30 held-out one-minute episodes",
        task=TaskConfig(episode_s=60.0),
        expert_episodes=10,
        collect_episodes=24,
        collect_parallel=6,
        collect_episode_s=60.0,
        bc=BcConfig(hidden=(64, 64), epochs=60, weight_decay=1e-3, class_weight_power=0.25),
        finetune="dagger",
        dagger=DaggerConfig(iterations=5, episodes_per_iteration=8, epochs=20),
        ppo=PpoConfig(total_steps=20_480, n_steps=512),
        selection_episodes=10,
        eval_episodes=30,
    ),
}


def preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name is invalid input (exit 3) listing them."""
    found = PRESETS.get(name)
    if found is None:
        raise InvalidInputError(
            f"no preset {name!r}; presets: {', '.join(PRESETS)} (see `atomlab learn presets`)",
            field="preset",
            value=name,
        )
    return found


def seeds(seed: int, offset: int, count: int) -> list[int]:
    """``count`` seeds of one use (training, collection, held-out) for pipeline seed ``seed``."""
    if not 0 <= seed <= MAX_SEED or count > 3_000:
        raise ValueError(f"seed {seed} or count {count} out of range")
    base = offset + seed * SEED_STRIDE
    return list(range(base, base + count))
