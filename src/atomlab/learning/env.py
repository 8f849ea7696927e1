"""The task as a Gymnasium environment (for stable-baselines3 and any other RL library).

Observations are :data:`~atomlab.learning.observation.FEATURE_NAMES` (what the monitor recorded),
actions the :data:`~atomlab.learning.actions.ACTIONS` table, one step one decision window, the
reward 1 for a good window minus the crash penalty per crash. ``info`` never carries the
simulator's ground truth; the score of the last episode is ``env.episode.stats`` (outside the
learner's view)::

    env = TipMaintenanceEnv(task=TaskConfig(), seeds=range(100))
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numpy.typing import NDArray

from atomlab.learning.actions import ACTIONS
from atomlab.learning.episode import SimulatedEpisode
from atomlab.learning.observation import N_FEATURES
from atomlab.learning.task import EpisodeStats, TaskConfig

OBSERVATION_BOUND = 1e3
"""Every feature is a log ratio, a few volts, a count or a 0..1 fraction: far inside this."""


class TipMaintenanceEnv(gym.Env[NDArray[np.float32], np.int64]):
    """Keep the tip good while imaging; episodes cycle through ``seeds`` (else random seeds)."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(self, *, task: TaskConfig | None = None, seeds: Sequence[int] = ()) -> None:
        self.task = task or TaskConfig()
        self.seeds = list(seeds)
        self.observation_space = spaces.Box(
            low=-OBSERVATION_BOUND, high=OBSERVATION_BOUND, shape=(N_FEATURES,), dtype=np.float32
        )
        self.action_space = spaces.Discrete(len(ACTIONS))
        self._next = 0
        self.episode: SimulatedEpisode | None = None
        self.finished: list[EpisodeStats] = []
        """Stats of every episode that ended (vector wrappers reset before callbacks look)."""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            episode_seed = seed
        elif self.seeds:
            episode_seed = self.seeds[self._next % len(self.seeds)]
            self._next += 1
        else:
            episode_seed = int(self.np_random.integers(0, 2**31 - 1))
        self.episode = SimulatedEpisode(task=self.task, seed=episode_seed)
        return self.episode.observation(), {"seed": episode_seed}

    def step(
        self, action: np.int64 | int
    ) -> tuple[NDArray[np.float32], float, bool, bool, dict[str, Any]]:
        if self.episode is None:
            raise RuntimeError("call reset() before step()")
        result = self.episode.step(int(action))
        if result.done:
            self.finished.append(self.episode.stats)
        observation = self.episode.observation()
        info = {"action": ACTIONS[int(action)].name, "refused": result.refused}
        return observation, result.reward, False, result.done, info
