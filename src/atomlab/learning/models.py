"""Model files: a policy with everything needed to trust and rerun it (needs torch).

One file per policy (``.pt``, read with ``torch.load(weights_only=True)``, so loading never runs
code from the file): the network weights (none for the scripted expert), and as JSON the model's
kind, the task it was trained and is evaluated in, its training configuration, the SHA-256 of the
dataset it learnt from, the feature and action names, the atomlab version and the model format
version. A file of another format version, or built for other features or actions, is refused
(:class:`ModelFileError`, exit 3)::

    save_model(path, kind="bc", net=net, task=task, config={...}, dataset_sha256=digest)
    model = load_model(path)
    model.policy()                      # a policy for evaluate()
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import torch

from atomlab import __version__
from atomlab.learning.actions import ACTION_NAMES
from atomlab.learning.atomic_file import atomic_output
from atomlab.learning.bc import PolicyNetwork, TorchPolicy
from atomlab.learning.errors import ModelFileError
from atomlab.learning.expert import ScriptedExpert
from atomlab.learning.observation import FEATURE_NAMES
from atomlab.learning.policies import ExpertPolicy, Policy
from atomlab.learning.task import TaskConfig

MODEL_FORMAT: Final = "atomlab-learn-model"
MODEL_FORMAT_VERSION: Final = 1
KINDS: Final = ("expert", "bc", "dagger", "ppo")


@dataclass
class SavedModel:
    kind: str
    task: TaskConfig
    config: dict[str, Any]
    dataset_sha256: str | None
    atomlab_version: str
    format_version: int
    created_at: str
    network: PolicyNetwork | None = None
    expert: ScriptedExpert | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def policy(self) -> Policy:
        if self.expert is not None:
            return ExpertPolicy(self.expert)
        assert self.network is not None
        return TorchPolicy(self.network, name=self.kind)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "format_version": self.format_version,
            "atomlab_version": self.atomlab_version,
            "dataset_sha256": self.dataset_sha256,
            "created_at": self.created_at,
            "task": self.task.to_dict(),
            "config": self.config,
            **({"network": _shape(self.network)} if self.network is not None else {}),
        }


def save_model(
    path: Path,
    *,
    kind: str,
    task: TaskConfig,
    config: dict[str, Any],
    created_at: str,
    dataset_sha256: str | None = None,
    net: PolicyNetwork | None = None,
    expert: ScriptedExpert | None = None,
) -> Path:
    """Write a model file atomically; exactly one of ``net`` and ``expert`` is given."""
    if (net is None) == (expert is None) or kind not in KINDS:
        raise ValueError("save_model needs a known kind and exactly one of net and expert")
    header = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "atomlab_version": __version__,
        "kind": kind,
        "created_at": created_at,
        "task": task.to_dict(),
        "config": config,
        "dataset_sha256": dataset_sha256,
        "feature_names": list(FEATURE_NAMES),
        "action_names": list(ACTION_NAMES),
        "network": _shape(net) if net is not None else None,
        "expert": expert.to_dict() if expert is not None else None,
    }
    payload: dict[str, Any] = {"header": json.dumps(header)}
    if net is not None:
        payload["state_dict"] = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    with atomic_output(Path(path), what="model") as temp, temp.open("wb") as fh:
        torch.save(payload, fh)
    return Path(path)


def load_model(path: Path) -> SavedModel:
    """Read and check a model file written by :func:`save_model`."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no model file at {str(path)!r}", path=str(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        header = json.loads(payload["header"])
    except Exception as exc:  # not a torch file, damaged, or unexpected content
        raise ModelFileError(
            f"{str(path)!r} is not an atomlab model file ({type(exc).__name__}); "
            "give a .pt file written by `atomlab learn run`",
            path=str(path),
        ) from None
    if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{str(path)!r} is not an atomlab model file", path=str(path))
    version = header.get("format_version")
    if version != MODEL_FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} is model format version {version!r} (atomlab "
            f"{header.get('atomlab_version')}); this atomlab ({__version__}) reads version "
            f"{MODEL_FORMAT_VERSION}. Retrain it with `atomlab learn run`",
            path=str(path),
            format_version=version,
        )
    if header.get("feature_names") != list(FEATURE_NAMES) or header.get("action_names") != list(
        ACTION_NAMES
    ):
        raise ModelFileError(
            f"{str(path)!r} was trained on other observation features or actions than this "
            f"atomlab ({__version__}) has; retrain it with `atomlab learn run`",
            path=str(path),
        )
    try:
        model = SavedModel(
            kind=str(header["kind"]),
            task=TaskConfig.from_dict(header["task"]),
            config=dict(header.get("config") or {}),
            dataset_sha256=header.get("dataset_sha256"),
            atomlab_version=str(header.get("atomlab_version")),
            format_version=int(version),
            created_at=str(header.get("created_at", "")),
        )
        if header.get("expert") is not None:
            model.expert = ScriptedExpert.from_dict(header["expert"])
        else:
            shape = header["network"]
            net = PolicyNetwork(
                int(shape["n_features"]), int(shape["n_actions"]), tuple(shape["hidden"])
            )
            net.load_state_dict(payload["state_dict"])
            model.network = net.eval()
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(
            f"{str(path)!r} is damaged ({type(exc).__name__}: {exc}); retrain it",
            path=str(path),
        ) from None
    return model


def _shape(net: PolicyNetwork | None) -> dict[str, Any]:
    assert net is not None
    return {"n_features": net.n_features, "n_actions": net.n_actions, "hidden": list(net.hidden)}
