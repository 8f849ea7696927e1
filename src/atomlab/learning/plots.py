"""PNG figures of a pipeline run (matplotlib, the ``plot`` extra, imported only here).

``comparison.png``: task score (with the spread over episodes) and good-line fraction per policy.
``training.png``: behaviour-cloning loss and accuracy per epoch, and the fine-tuning score per
iteration (or PPO update).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from atomlab.core.errors import UnavailableError
from atomlab.learning.atomic_file import atomic_output


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise UnavailableError(
            "plots need matplotlib; install it with: pip install 'atomlab[plot]'", extra="plot"
        ) from None
    return plt


def plot_comparison(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    names = [str(r["policy"]) for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.bar(names, [r["score"] for r in rows], yerr=[r.get("score_std", 0.0) for r in rows])
    left.axhline(0.0, color="black", linewidth=0.8)
    left.set_title("task score (held-out episodes)")
    right.bar(names, [r["good_line_fraction"] for r in rows], color="tab:green")
    right.set_ylim(0, 1)
    right.set_title("scan lines imaged with a good tip")
    for axis in (left, right):
        axis.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    _save(fig, plt, path)
    return path


def plot_training(
    bc_history: Sequence[Mapping[str, float]],
    finetune_history: Sequence[Mapping[str, float]],
    path: Path,
    *,
    finetune: str,
) -> Path:
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = list(range(len(bc_history)))
    left.plot(epochs, [h["loss"] for h in bc_history], label="loss")
    left.plot(epochs, [h["accuracy"] for h in bc_history], label="train accuracy")
    if bc_history and "valid_accuracy" in bc_history[0]:
        left.plot(epochs, [h["valid_accuracy"] for h in bc_history], label="valid accuracy")
    left.set_xlabel("epoch")
    left.set_title("behaviour cloning")
    left.legend()
    right.plot(
        list(range(len(finetune_history))),
        [h.get("score", float("nan")) for h in finetune_history],
        marker="o",
    )
    right.set_xlabel("iteration" if finetune == "dagger" else "update")
    right.set_title(f"{finetune} rollout score")
    fig.tight_layout()
    _save(fig, plt, path)
    return path


def _save(fig: Any, plt: Any, path: Path) -> None:
    try:
        with atomic_output(path, what="plot") as temp:
            fig.savefig(temp, dpi=100, format="png")
    finally:
        plt.close(fig)
