"""Behaviour cloning and model files: trained deterministically, saved with their provenance,
refused when they come from another format."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from atomlab.core.errors import UnavailableError
from atomlab.learning.actions import ACTIONS
from atomlab.learning.bc import TorchPolicy, class_weights, pick_device, train_bc
from atomlab.learning.errors import ModelFileError
from atomlab.learning.expert import ScriptedExpert
from atomlab.learning.models import load_model, save_model
from atomlab.learning.observation import N_FEATURES
from atomlab.learning.policies import ExpertPolicy
from atomlab.learning.task import TaskConfig
from atomlab.learning.training_config import BcConfig
from tests.conftest import CliResult

CONFIG = BcConfig(hidden=(16, 16), epochs=30, seed=3)
TASK = TaskConfig(tip_change_rate_per_s=0.4, episode_s=6.0)


def separable(n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    obs = rng.standard_normal((n, N_FEATURES)).astype(np.float32)
    actions = np.where(obs[:, 1] > 0.8, 2, 0).astype(np.int64)  # act when the spread is high
    return obs, actions


def test_bc_learns_a_separable_rule_and_is_deterministic() -> None:
    obs, actions = separable()
    net, history = train_bc(
        obs,
        actions,
        config=CONFIG,
        n_actions=len(ACTIONS),
        device=torch.device("cpu"),
        valid=(obs[:50], actions[:50]),
    )
    assert history[-1]["accuracy"] > 0.95 and history[-1]["loss"] < history[0]["loss"]
    assert "valid_accuracy" in history[-1]
    again, _ = train_bc(
        obs, actions, config=CONFIG, n_actions=len(ACTIONS), device=torch.device("cpu")
    )
    for a, b in zip(net.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    policy = TorchPolicy(net)
    assert policy.act(obs[np.argmax(obs[:, 1])]) == 2


def test_rare_actions_weigh_more() -> None:
    weights = class_weights(np.array([0, 0, 0, 0, 2]), 4, 0.5)
    assert weights[0] == 1.0 and weights[2] == pytest.approx(2.0) and weights[1] == 0.0


def test_a_saved_model_carries_its_provenance_and_acts_the_same(tmp_path: Path) -> None:
    obs, actions = separable()
    net, _ = train_bc(
        obs, actions, config=CONFIG, n_actions=len(ACTIONS), device=torch.device("cpu")
    )
    path = save_model(
        tmp_path / "m.pt",
        kind="bc",
        task=TASK,
        config={"bc": CONFIG.to_dict()},
        created_at="2026-01-01T00:00:00Z",
        dataset_sha256="ab" * 32,
        net=net,
    )
    model = load_model(path)
    assert model.kind == "bc" and model.dataset_sha256 == "ab" * 32 and model.task == TASK
    assert model.describe()["network"]["hidden"] == [16, 16]
    loaded = model.policy()
    assert isinstance(loaded, TorchPolicy)
    assert [loaded.act(o) for o in obs[:40]] == [TorchPolicy(net).act(o) for o in obs[:40]]
    expert_path = save_model(
        tmp_path / "e.pt",
        kind="expert",
        task=TASK,
        config={},
        created_at="2026-01-01T00:00:00Z",
        expert=ScriptedExpert(reaction_s=0.2),
    )
    expert = load_model(expert_path).policy()
    assert isinstance(expert, ExpertPolicy) and expert.expert.reaction_s == 0.2


def _rewrite_header(src: Path, dst: Path, **changes: object) -> None:
    payload = torch.load(src, weights_only=True)
    header = json.loads(payload["header"])
    header.update(changes)
    payload["header"] = json.dumps(header)
    torch.save(payload, dst)


def test_model_files_from_another_version_or_damaged_are_refused(tmp_path: Path) -> None:
    obs, actions = separable(60)
    net, _ = train_bc(
        obs,
        actions,
        config=BcConfig(hidden=(8,), epochs=1),
        n_actions=len(ACTIONS),
        device=torch.device("cpu"),
    )
    good = save_model(tmp_path / "m.pt", kind="bc", task=TASK, config={}, created_at="x", net=net)
    cases = {
        "old.pt": ({"format_version": 0}, "format version 0"),
        "features.pt": ({"feature_names": ["a"]}, "other observation features"),
        "foreign.pt": ({"format": "something-else"}, "not an atomlab model"),
    }
    for name, (changes, message) in cases.items():
        _rewrite_header(good, tmp_path / name, **changes)
        with pytest.raises(ModelFileError, match=message) as caught:
            load_model(tmp_path / name)
        assert caught.value.exit_code == 3
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ModelFileError, match="not an atomlab model file"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(ModelFileError, match="no model file"):
        load_model(tmp_path / "missing.pt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_is_unavailable() -> None:
    assert pick_device("auto").type == "cpu"
    with pytest.raises(UnavailableError, match="no CUDA GPU") as caught:
        pick_device("cuda")
    assert caught.value.exit_code == 4


def test_eval_command(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    path = save_model(
        tmp_path / "e.pt",
        kind="expert",
        task=TASK,
        config={},
        created_at="2026-01-01T00:00:00Z",
        expert=ScriptedExpert(),
    )
    result = cli("learn", "eval", str(path), "--episodes", "2", "--seed", "1", "--json")
    assert result.exit_code == 0, result.stdout
    assert result.json["kind"] == "expert" and result.json["result"]["episodes"] == 2
    again = cli("learn", "eval", str(path), "--episodes", "2", "--seed", "1", "--json")
    assert again.json["result"] == result.json["result"]  # the same seed, the same numbers
    (tmp_path / "bad.pt").write_text("no")
    bad = cli("learn", "eval", str(tmp_path / "bad.pt"), "--json")
    assert bad.exit_code == 3 and bad.json["error"]["type"] == "model_file_error"


def test_continuing_training_leaves_the_given_network_untouched() -> None:
    obs, actions = separable(120)
    net, _ = train_bc(
        obs, actions, config=CONFIG, n_actions=len(ACTIONS), device=torch.device("cpu")
    )
    before = {k: v.clone() for k, v in net.state_dict().items()}
    tuned, _ = train_bc(
        obs,
        2 - actions,
        config=CONFIG,
        n_actions=len(ACTIONS),
        device=torch.device("cpu"),
        init=net,
        epochs=3,
    )
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items())
