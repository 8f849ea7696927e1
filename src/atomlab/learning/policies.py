"""Policies that act in an episode: the expert (privileged), no-op, random, and learners.

A learner's :meth:`act` gets the observation and nothing else. Only :class:`ExpertPolicy` is
handed the episode, and only to ask it for the ground-truth tip state.
"""

from __future__ import annotations

import random
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from atomlab.learning.actions import ACTIONS, KEEP_SCANNING
from atomlab.learning.episode import SimulatedEpisode
from atomlab.learning.expert import ScriptedExpert


@runtime_checkable
class LearnerPolicy(Protocol):
    """Maps an observation to a table index."""

    name: str

    def act(self, obs: NDArray[np.float32]) -> int: ...


class NoOpPolicy:
    """Always keeps scanning: what an unattended instrument does."""

    name = "noop"

    def act(self, obs: NDArray[np.float32]) -> int:
        return KEEP_SCANNING


class RandomPolicy:
    """Uniform over the action table, seeded per episode (the same seed, the same choices)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(f"random-policy:{seed}")

    def reseed(self, seed: int) -> None:
        self._rng = random.Random(f"random-policy:{seed}")

    def act(self, obs: NDArray[np.float32]) -> int:
        return self._rng.randrange(len(ACTIONS))


class ExpertPolicy:
    """The scripted expert; it reads the episode's ground-truth tip state."""

    name = "expert"

    def __init__(self, expert: ScriptedExpert) -> None:
        self.expert = expert

    def act_in(self, episode: SimulatedEpisode) -> int:
        return episode.expert_action(self.expert)


Policy = LearnerPolicy | ExpertPolicy


def choose(policy: Policy, episode: SimulatedEpisode) -> int:
    """The policy's action now: the expert asks the episode, a learner sees the observation."""
    if isinstance(policy, ExpertPolicy):
        return policy.act_in(episode)
    return policy.act(episode.observation())
