"""Behaviour cloning: a small MLP that maps observations to the expert's table actions (PyTorch).

The network standardises its input with the training set's mean and spread (kept as buffers, so a
saved model carries them), and is trained with class-weighted cross-entropy: keep-scanning is most
of what an operator does, and an unweighted loss would learn to never pulse. Imported only when a
pipeline step needs it (torch is heavy)::

    net, history = train_bc(obs, actions, config=BcConfig(), device=pick_device("auto"))
    policy = TorchPolicy(net)          # .act(observation) -> table index
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Final

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from atomlab.core.errors import UnavailableError
from atomlab.learning.training_config import BcConfig

MIN_STD: Final = 1e-6
EpochCallback = Callable[[int, dict[str, float]], None]


class PolicyNetwork(nn.Module):
    """Standardise, then an MLP with ReLU; outputs one logit per table action."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        n_features: int,
        n_actions: int,
        hidden: tuple[int, ...],
        *,
        mean: NDArray[np.float32] | None = None,
        std: NDArray[np.float32] | None = None,
    ) -> None:
        super().__init__()
        self.n_features, self.n_actions, self.hidden = n_features, n_actions, tuple(hidden)
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        if mean is not None and std is not None:
            self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.std.copy_(torch.as_tensor(np.maximum(std, MIN_STD), dtype=torch.float32))
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, n_actions))
        self.mlp = nn.Sequential(*layers)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.mlp((obs - self.mean) / self.std)
        return logits


def pick_device(device: str) -> torch.device:
    """``auto``: CUDA when present, else CPU; ``cuda`` without a GPU is unavailable (exit 4)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UnavailableError(
            "device cuda asked for, but torch sees no CUDA GPU "
            f"(torch {torch.__version__}); use --device auto or cpu",
            field="device",
        )
    return torch.device(device)


def class_weights(actions: NDArray[np.int64], n_actions: int, power: float) -> NDArray[np.float32]:
    counts = np.bincount(actions, minlength=n_actions).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_actions)
    weights[present] = (counts[present] / counts.max()) ** -power
    return weights.astype(np.float32)


def train_bc(
    obs: NDArray[np.float32],
    actions: NDArray[np.int64],
    *,
    config: BcConfig,
    n_actions: int,
    device: torch.device,
    valid: tuple[NDArray[np.float32], NDArray[np.int64]] | None = None,
    on_epoch: EpochCallback | None = None,
    init: PolicyNetwork | None = None,
    epochs: int | None = None,
) -> tuple[PolicyNetwork, list[dict[str, float]]]:
    """Train (or, with ``init``, continue training a copy of) a policy network; returns it on
    the CPU.

    The history has one entry per epoch: ``loss`` (mean weighted cross-entropy), ``accuracy``
    on the training set, and ``valid_accuracy``/``valid_loss`` when ``valid`` is given.
    """
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    if init is None:
        net = PolicyNetwork(
            obs.shape[1],
            n_actions,
            config.hidden,
            mean=obs.mean(axis=0),
            std=obs.std(axis=0),
        )
    else:
        net = copy.deepcopy(init)  # the caller's network stays as it was
    net = net.to(device)
    x = torch.as_tensor(obs, dtype=torch.float32, device=device)
    y = torch.as_tensor(actions, dtype=torch.int64, device=device)
    weight = torch.as_tensor(
        class_weights(actions, n_actions, config.class_weight_power), device=device
    )
    loss_fn = nn.CrossEntropyLoss(weight=weight)
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    valid_t = None
    if valid is not None and len(valid[1]):
        valid_t = (
            torch.as_tensor(valid[0], dtype=torch.float32, device=device),
            torch.as_tensor(valid[1], dtype=torch.int64, device=device),
        )
    history: list[dict[str, float]] = []
    n = x.shape[0]
    batches = max(1, math.ceil(n / config.batch_size))
    for epoch in range(config.epochs if epochs is None else epochs):
        net.train()
        order = torch.randperm(n, generator=generator).to(device)
        total = 0.0
        for b in range(batches):
            index = order[b * config.batch_size : (b + 1) * config.batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(net(x[index]), y[index])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(index)
        entry = {"loss": total / n, "accuracy": _accuracy(net, x, y)}
        if valid_t is not None:
            entry["valid_accuracy"] = _accuracy(net, *valid_t)
            with torch.no_grad():
                entry["valid_loss"] = float(loss_fn(net(valid_t[0]), valid_t[1]))
        history.append(entry)
        if on_epoch is not None:
            on_epoch(epoch, entry)
    return net.to("cpu").eval(), history


def _accuracy(net: PolicyNetwork, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        return float((net(x).argmax(dim=1) == y).float().mean())


class TorchPolicy:
    """A trained network as a policy: the most likely table action (deterministic)."""

    privileged = False

    def __init__(self, net: PolicyNetwork, name: str = "bc") -> None:
        self.net = net.to("cpu").eval()
        self.name = name

    def act(self, obs: NDArray[np.float32]) -> int:
        with torch.no_grad():
            logits = self.net(torch.from_numpy(np.asarray(obs, dtype=np.float32)).unsqueeze(0))
        return int(logits.argmax(dim=1)[0])
