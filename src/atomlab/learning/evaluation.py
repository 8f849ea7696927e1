"""Closed-loop evaluation: run policies on seeded episodes and compare their task scores.

Every policy meets the same held-out seeds (the same surfaces and the same tip-change draws until
their actions make the worlds diverge), and every number depends only on the seeds and the
policies, so the same seed reproduces the same table::

    rows = compare({"expert": ExpertPolicy(ScriptedExpert()), "noop": NoOpPolicy()},
                   task=TaskConfig(), seeds=range(1000, 1010))
    print(format_table(rows))
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from atomlab.learning.atomic_file import atomic_output
from atomlab.learning.episode import SimulatedEpisode
from atomlab.learning.policies import Policy, RandomPolicy, choose
from atomlab.learning.task import EpisodeStats, TaskConfig, summarise

EpisodeCallback = Callable[[str, EpisodeStats], None]
TABLE_COLUMNS = (
    ("policy", "policy", "{}"),
    ("score", "score", "{:.3f}"),
    ("score_std", "± std", "{:.3f}"),
    ("good_line_fraction", "good lines", "{:.1%}"),
    ("recovery_s", "recovery s", "{:.2f}"),
    ("crashes", "crashes", "{}"),
    ("episodes", "episodes", "{}"),
    ("vs_expert", "vs expert", "{:.0%}"),
)


def run_episode(policy: Policy, *, task: TaskConfig, seed: int) -> EpisodeStats:
    """One episode of ``policy`` on the world of ``seed``."""
    if isinstance(policy, RandomPolicy):
        policy.reseed(seed)
    episode = SimulatedEpisode(task=task, seed=seed)
    while not episode.done:
        episode.step(choose(policy, episode))
    return episode.stats


def evaluate(
    name: str,
    policy: Policy,
    *,
    task: TaskConfig,
    seeds: Sequence[int],
    on_episode: EpisodeCallback | None = None,
) -> tuple[dict[str, Any], list[EpisodeStats]]:
    """The comparison row of ``policy`` over ``seeds`` and the per-episode stats."""
    episodes = []
    for seed in seeds:
        stats = run_episode(policy, task=task, seed=seed)
        episodes.append(stats)
        if on_episode is not None:
            on_episode(name, stats)
    return summarise(name, episodes), episodes


def compare(
    policies: Mapping[str, Policy],
    *,
    task: TaskConfig,
    seeds: Sequence[int],
    on_episode: EpisodeCallback | None = None,
) -> list[dict[str, Any]]:
    """One row per policy (in the given order), with ``vs_expert`` when an expert is present."""
    rows = [
        evaluate(name, policy, task=task, seeds=seeds, on_episode=on_episode)[0]
        for name, policy in policies.items()
    ]
    expert = next((r for r in rows if r["policy"] == "expert"), None)
    for row in rows:
        if expert is not None and expert["score"] > 0:
            row["vs_expert"] = row["score"] / expert["score"]
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table of the comparison (also what the CLI prints)."""
    columns = [c for c in TABLE_COLUMNS if any(c[0] in row for row in rows)]
    lines = [
        "| " + " | ".join(title for _, title, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        cells = [fmt.format(row[key]) if key in row else "" for key, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_comparison(rows: Sequence[Mapping[str, Any]], folder: Path) -> dict[str, Path]:
    """``comparison.json``, ``comparison.md`` and ``comparison.csv`` in ``folder`` (atomic)."""
    paths = {
        "json": folder / "comparison.json",
        "md": folder / "comparison.md",
        "csv": folder / "comparison.csv",
    }
    with atomic_output(paths["json"], what="comparison") as temp:
        temp.write_text(json.dumps(list(rows), indent=2) + "\n", encoding="utf-8")
    with atomic_output(paths["md"], what="comparison") as temp:
        temp.write_text(format_table(rows) + "\n", encoding="utf-8")
    keys = [key for key, _, _ in TABLE_COLUMNS if any(key in row for row in rows)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_output(paths["csv"], what="comparison") as temp:
        temp.write_text(buffer.getvalue(), encoding="utf-8")
    return paths
