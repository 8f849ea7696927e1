"""DAgger fine-tuning: the learner drives, the expert labels what it would have done.

Behaviour cloning sees only the states the expert visits; a learner that errs once drifts into
states nobody showed it (after a needless pulse, a tip left damaged a step longer). Each DAgger
iteration rolls the current policy out in the environment, asks the privileged expert for the
right action in every state it reached, adds those pairs to the data and retrains (Ross, Gordon
and Bagnell 2011). With probability ``beta`` per step the expert's action is executed instead of
the learner's (``beta = beta0 * decay ** iteration``)::

    net, history = dagger(net, obs, actions, task=task, seeds=seeds, expert=ScriptedExpert(),
                          bc=BcConfig(), config=DaggerConfig(), device=torch.device("cpu"))
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from atomlab.learning.actions import ACTIONS
from atomlab.learning.bc import PolicyNetwork, TorchPolicy, train_bc
from atomlab.learning.episode import SimulatedEpisode
from atomlab.learning.expert import ScriptedExpert
from atomlab.learning.task import TaskConfig
from atomlab.learning.training_config import BcConfig, DaggerConfig

IterationCallback = Callable[[int, dict[str, float]], None]


def dagger(
    net: PolicyNetwork,
    obs: NDArray[np.float32],
    actions: NDArray[np.int64],
    *,
    task: TaskConfig,
    seeds: Sequence[int],
    expert: ScriptedExpert,
    bc: BcConfig,
    config: DaggerConfig,
    device: torch.device,
    on_iteration: IterationCallback | None = None,
    on_episode: Callable[[], None] | None = None,
) -> tuple[PolicyNetwork, list[dict[str, float]]]:
    """Fine-tune ``net`` (trained on ``obs``/``actions``); returns it and one entry per iteration
    (``score``: the mean task score of that iteration's rollouts, ``samples``, ``loss``)."""
    retrain = dataclasses.replace(bc, class_weight_power=config.class_weight_power)
    data_obs, data_act = [obs], [actions]
    rng = random.Random(f"dagger:{config.seed}")
    seed_iter = iter(_cycle(seeds))
    history: list[dict[str, float]] = []
    for iteration in range(config.iterations):
        beta = config.beta0 * config.beta_decay**iteration
        policy = TorchPolicy(net)
        new_obs: list[NDArray[np.float32]] = []
        new_act: list[int] = []
        scores = []
        for _ in range(config.episodes_per_iteration):
            episode = SimulatedEpisode(task=task, seed=next(seed_iter))
            while not episode.done:
                observation = episode.observation()
                label = episode.expert_action(expert)
                new_obs.append(observation)
                new_act.append(label)
                action = label if rng.random() < beta else policy.act(observation)
                episode.step(action)
            scores.append(episode.stats.score)
            if on_episode is not None:
                on_episode()
        data_obs.append(np.asarray(new_obs, dtype=np.float32))
        data_act.append(np.asarray(new_act, dtype=np.int64))
        all_obs, all_act = np.concatenate(data_obs), np.concatenate(data_act)
        net, fit = train_bc(
            all_obs,
            all_act,
            config=retrain,
            n_actions=len(ACTIONS),
            device=device,
            init=net,
            epochs=config.epochs,
        )
        entry = {
            "iteration": float(iteration),
            "beta": beta,
            "score": float(np.mean(scores)),
            "samples": float(len(all_act)),
            "loss": fit[-1]["loss"],
            "accuracy": fit[-1]["accuracy"],
        }
        history.append(entry)
        if on_iteration is not None:
            on_iteration(iteration, entry)
    return net, history


def _cycle(seeds: Sequence[int]) -> Any:
    while True:
        yield from seeds
