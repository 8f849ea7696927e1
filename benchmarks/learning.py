"""Benchmark: the learning pipeline's training and rollouts against bare baselines, same run.

Run: ``uv run python benchmarks/learning.py [--quick] [--threads N] [--finetune-study]``.
Prints:

* behaviour-cloning optimiser steps/s of :func:`atomlab.learning.bc.train_bc` vs a bare PyTorch
  loop (the same MLP, loss, AdamW and batches, nothing else) on the same data;
* environment steps/s of :class:`~atomlab.learning.episode.SimulatedEpisode` (one decision: 1 s
  of physics, 10 monitor polls through the wire codec and ``InstrumentSource``, the observation)
  vs stepping the bare simulator physics through the same simulated second;
* with ``--finetune-study``: DAgger vs PPO from the same BC policy on the same number of
  environment steps, scored on held-out seeds (the numbers behind docs/learning.md's choice).
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
from torch import nn

from atomlab.learning.actions import ACTIONS, KEEP_SCANNING
from atomlab.learning.bc import TorchPolicy, class_weights, train_bc
from atomlab.learning.dagger import dagger
from atomlab.learning.episode import SimulatedEpisode
from atomlab.learning.evaluation import compare
from atomlab.learning.expert import ScriptedExpert
from atomlab.learning.policies import ExpertPolicy, NoOpPolicy
from atomlab.learning.ppo import ppo_finetune
from atomlab.learning.task import TaskConfig
from atomlab.learning.training_config import BcConfig, DaggerConfig, PpoConfig
from atomlab.sim import Disturbances, StmPhysics
from atomlab.surface import Surface

TASK = TaskConfig(episode_s=30.0)


def expert_data(
    episodes: int, task: TaskConfig = TASK, first_seed: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """Expert decisions in the environment (the observation function is the dataset's)."""
    expert = ScriptedExpert()
    obs, actions = [], []
    for seed in range(first_seed, first_seed + episodes):
        episode = SimulatedEpisode(task=task, seed=seed)
        while not episode.done:
            obs.append(episode.observation())
            action = episode.expert_action(expert)
            actions.append(action)
            episode.step(action)
    return np.asarray(obs, np.float32), np.asarray(actions, np.int64)


def bare_loop(obs: np.ndarray, actions: np.ndarray, config: BcConfig) -> float:
    """The same training with nothing around it; returns seconds."""
    torch.manual_seed(config.seed)
    mean, std = obs.mean(0), np.maximum(obs.std(0), 1e-6)
    x = torch.as_tensor((obs - mean) / std)
    y = torch.as_tensor(actions)
    layers: list[nn.Module] = []
    width = obs.shape[1]
    for size in config.hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    net = nn.Sequential(*layers, nn.Linear(width, len(ACTIONS)))
    weight = torch.as_tensor(class_weights(actions, len(ACTIONS), config.class_weight_power))
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    n = len(y)
    start = time.perf_counter()
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=generator)
        for b in range(math.ceil(n / config.batch_size)):
            index = order[b * config.batch_size : (b + 1) * config.batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss_fn(net(x[index]), y[index]).backward()
            optimiser.step()
    return time.perf_counter() - start


def bench_bc(obs: np.ndarray, actions: np.ndarray, epochs: int) -> None:
    config = BcConfig(hidden=(64, 64), epochs=epochs)
    steps = epochs * math.ceil(len(actions) / config.batch_size)
    bare_loop(obs, actions, BcConfig(hidden=(64, 64), epochs=1))  # warm-up (optimiser import)
    bare = min(bare_loop(obs, actions, config) for _ in range(3))
    ours = []
    for _ in range(3):
        start = time.perf_counter()
        train_bc(obs, actions, config=config, n_actions=len(ACTIONS), device=torch.device("cpu"))
        ours.append(time.perf_counter() - start)
    best = min(ours)
    print(
        f"bc training: {steps / best:,.0f} optimiser steps/s (train_bc, {len(actions)} samples, "
        f"{epochs} epochs, batch 64, 2x64 MLP) vs {steps / bare:,.0f} bare loop: "
        f"ratio {bare / best:.2f} (1.0 = no overhead; ours also scores accuracy each epoch)"
    )


def bench_rollouts(steps: int) -> None:
    episode = SimulatedEpisode(task=TaskConfig(episode_s=60.0), seed=1)
    policy_steps = 0
    start = time.perf_counter()
    while policy_steps < steps:
        if episode.done:
            episode = SimulatedEpisode(task=TaskConfig(episode_s=60.0), seed=1 + policy_steps)
        episode.observation()
        episode.step(KEEP_SCANNING)
        policy_steps += 1
    ours = time.perf_counter() - start
    physics = StmPhysics(
        Surface.generate(1),
        seed=1,
        loop_rate_hz=TASK.loop_rate_hz,
        disturbances=Disturbances(tip_change_rate_per_s=TASK.tip_change_rate_per_s),
    )
    physics.start_scan(True)
    start = time.perf_counter()
    for k in range(1, steps + 1):
        physics.advance_to(k * TASK.decision_interval_s)
    bare = time.perf_counter() - start
    print(
        f"rollouts: {steps / ours:,.0f} environment steps/s (1 s of 500 Hz physics, 10 monitor "
        f"polls, the observation) vs {steps / bare:,.0f} bare physics seconds/s: "
        f"ratio {bare / ours:.2f} (the share of time spent simulating the instrument)"
    )


def finetune_study(budget: int, episodes: int, eval_episodes: int) -> None:
    """BC from ``episodes`` expert episodes (few, so that there is something left to fix)."""
    obs, actions = expert_data(episodes)
    config = BcConfig(hidden=(32, 32), epochs=40, weight_decay=1e-3, class_weight_power=0.25)
    net, _ = train_bc(
        obs, actions, config=config, n_actions=len(ACTIONS), device=torch.device("cpu")
    )
    steps_per_episode = int(TASK.episode_s / TASK.decision_interval_s)
    per_iteration = max(1, budget // (3 * steps_per_episode))
    start = time.perf_counter()
    tuned_dagger, _ = dagger(
        net,
        obs,
        actions,
        task=TASK,
        seeds=range(2_000, 3_000),
        expert=ScriptedExpert(),
        bc=config,
        config=DaggerConfig(iterations=3, episodes_per_iteration=per_iteration, epochs=15),
        device=torch.device("cpu"),
    )
    dagger_s = time.perf_counter() - start
    start = time.perf_counter()
    n_steps = min(512, max(64, budget // 4))
    tuned_ppo, _ = ppo_finetune(
        net,
        task=TASK,
        seeds=range(2_000, 3_000),
        config=PpoConfig(total_steps=budget, n_steps=n_steps, batch_size=min(64, n_steps)),
        device=torch.device("cpu"),
    )
    ppo_s = time.perf_counter() - start
    rows = compare(
        {
            "expert": ExpertPolicy(ScriptedExpert()),
            "bc": TorchPolicy(net),
            "dagger": TorchPolicy(tuned_dagger, "dagger"),
            "ppo": TorchPolicy(tuned_ppo, "ppo"),
            "noop": NoOpPolicy(),
        },
        task=TASK,
        seeds=range(100_000_000, 100_000_000 + eval_episodes),
    )
    print(
        f"fine-tuning study: {len(actions)} BC samples, {budget} environment steps each, "
        f"{eval_episodes} held-out 30 s episodes"
    )
    for row in rows:
        extra = {"dagger": f" ({dagger_s:.1f} s)", "ppo": f" ({ppo_s:.1f} s)"}.get(
            row["policy"], ""
        )
        print(
            f"  {row['policy']:7s} score {row['score']:.3f} ± {row['score_std']:.3f}, "
            f"vs expert {row['vs_expert']:.0%}{extra}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--finetune-study", action="store_true", help="DAgger vs PPO")
    parser.add_argument("--budget", type=int, default=540, help="env steps per fine-tuning")
    parser.add_argument(
        "--bc-episodes", type=int, default=2, help="expert episodes behind the study's BC"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )
    obs, actions = expert_data(4 if args.quick else 20)
    bench_bc(obs, actions, epochs=5 if args.quick else 30)
    bench_rollouts(60 if args.quick else 600)
    if args.finetune_study:
        finetune_study(args.budget, args.bc_episodes, 4 if args.quick else 20)


if __name__ == "__main__":
    main()
