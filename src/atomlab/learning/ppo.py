"""PPO fine-tuning of the behaviour-cloned policy (stable-baselines3), as the origin's pipeline did.

The BC network becomes PPO's actor: its input standardisation is folded into the first layer and
its layers are copied into SB3's policy (same sizes, ReLU), so PPO starts from the cloned
behaviour; the critic starts fresh. After training the actor is copied back into a
:class:`~atomlab.learning.bc.PolicyNetwork`, so a PPO model is saved and evaluated like a BC one.
docs/learning.md compares it with DAgger on the same number of environment steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from atomlab.learning.bc import PolicyNetwork
from atomlab.learning.env import TipMaintenanceEnv
from atomlab.learning.task import TaskConfig
from atomlab.learning.training_config import PpoConfig

UpdateCallback = Callable[[int, dict[str, float]], None]


def ppo_finetune(
    net: PolicyNetwork,
    *,
    task: TaskConfig,
    seeds: Sequence[int],
    config: PpoConfig,
    device: torch.device,
    on_update: UpdateCallback | None = None,
) -> tuple[PolicyNetwork, list[dict[str, float]]]:
    """Fine-tune ``net`` with PPO; returns the actor as a network and one entry per rollout
    (``score``: mean task score of the episodes that ended in it, ``return``, ``steps``)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    env = TipMaintenanceEnv(task=task, seeds=seeds)
    model = PPO(
        "MlpPolicy",
        env,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        n_epochs=config.n_epochs,
        learning_rate=config.learning_rate,
        clip_range=config.clip_range,
        gamma=config.gamma,
        ent_coef=config.ent_coef,
        seed=config.seed,
        device=device,
        policy_kwargs={
            "net_arch": {"pi": list(net.hidden), "vf": list(net.hidden)},
            "activation_fn": nn.ReLU,
        },
        verbose=0,
    )
    _load_actor(model.policy, net)
    history: list[dict[str, float]] = []

    class _Progress(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self._returns: list[float] = []
            self._return = 0.0
            self._seen = 0

        def _on_step(self) -> bool:
            self._return += float(self.locals["rewards"][0])
            if bool(self.locals["dones"][0]):
                self._returns.append(self._return)
                self._return = 0.0
            return True

        def _on_rollout_end(self) -> None:
            self._scores = [stats.score for stats in env.finished[self._seen :]]
            self._seen = len(env.finished)
            entry = {
                "update": float(len(history)),
                "steps": float(self.num_timesteps),
                "score": float(np.mean(self._scores)) if self._scores else float("nan"),
                "return": float(np.mean(self._returns)) if self._returns else float("nan"),
            }
            history.append(entry)
            if on_update is not None:
                on_update(len(history) - 1, entry)
            self._returns = []

    model.learn(total_timesteps=config.total_steps, callback=_Progress())
    return _extract_actor(model.policy, net), history


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _load_actor(policy: Any, net: PolicyNetwork) -> None:
    source = _linears(net.mlp)
    target = [*_linears(policy.mlp_extractor.policy_net), policy.action_net]
    if [t.weight.shape for t in target] != [s.weight.shape for s in source]:
        raise ValueError("the PPO actor and the BC network have different layer sizes")
    mean, std = net.mean, net.std
    with torch.no_grad():
        first, rest = source[0], source[1:]
        # standardisation folded in: W (x - m) / s + b = (W / s) x + (b - W (m / s))
        target[0].weight.copy_(first.weight / std)
        target[0].bias.copy_(first.bias - first.weight @ (mean / std))
        for dst, src in zip(target[1:], rest, strict=True):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)


def _extract_actor(policy: Any, template: PolicyNetwork) -> PolicyNetwork:
    net = PolicyNetwork(template.n_features, template.n_actions, template.hidden)
    source = [*_linears(policy.mlp_extractor.policy_net), policy.action_net]
    with torch.no_grad():
        for dst, src in zip(_linears(net.mlp), source, strict=True):
            dst.weight.copy_(src.weight.detach().cpu())
            dst.bias.copy_(src.bias.detach().cpu())
    return net.eval()
