"""The environment: the same seed gives the same world, actions cost, the expert helps."""

from __future__ import annotations

import numpy as np
from gymnasium.utils.env_checker import check_env

from atomlab.learning.actions import KEEP_SCANNING, action_by_name
from atomlab.learning.env import TipMaintenanceEnv
from atomlab.learning.episode import SimulatedEpisode
from atomlab.learning.evaluation import compare, format_table, run_episode
from atomlab.learning.expert import ScriptedExpert
from atomlab.learning.policies import ExpertPolicy, NoOpPolicy, RandomPolicy
from atomlab.learning.task import TaskConfig

TASK = TaskConfig(tip_change_rate_per_s=0.4, episode_s=10.0)


def test_the_same_seed_and_actions_give_the_same_recording_and_score() -> None:
    runs = []
    for _ in range(2):
        episode = SimulatedEpisode(task=TASK, seed=4)
        while not episode.done:
            episode.step(
                action_by_name("pulse_+3V").index
                if len(episode.recording.commands) < 2
                else KEEP_SCANNING
            )
        runs.append(episode)
    a, b = runs
    assert a.recording.dt_s == b.recording.dt_s
    assert np.array_equal(a.observation(), b.observation())
    assert a.stats.to_dict() == b.stats.to_dict()
    assert [c.command for c in a.recording.commands] == ["Bias.Pulse", "Bias.Pulse"]


def test_a_conditioning_action_is_never_a_good_window() -> None:
    episode = SimulatedEpisode(task=TaskConfig(tip_change_rate_per_s=0.0, episode_s=4.0), seed=1)
    kept = episode.step(KEEP_SCANNING)
    shaped = episode.step(action_by_name("tip_shaper").index)
    assert kept.slot.good and kept.reward == 1.0
    assert not shaped.slot.good and shaped.reward == 0.0
    assert shaped.slot.end_s - shaped.slot.start_s > 3.0  # 2.5 s of shaping, then a window
    assert episode.recording.commands[-1].command == "TipShaper.Start"


def test_expert_beats_no_op_and_random_on_fixed_seeds() -> None:
    rows = compare(
        {"expert": ExpertPolicy(ScriptedExpert()), "noop": NoOpPolicy(), "random": RandomPolicy()},
        task=TASK,
        seeds=[101, 102],
    )
    scores = {row["policy"]: row["score"] for row in rows}
    assert scores["expert"] > scores["noop"] > scores["random"]
    assert rows[1]["vs_expert"] < 1.0
    assert "| expert |" in format_table(rows)
    again = run_episode(RandomPolicy(), task=TASK, seed=101)
    assert again.to_dict() == run_episode(RandomPolicy(), task=TASK, seed=101).to_dict()


def test_the_gymnasium_environment_passes_the_checker_and_hides_ground_truth() -> None:
    env = TipMaintenanceEnv(task=TASK, seeds=[7, 8])
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=7)
    assert env.observation_space.contains(obs)
    done = False
    while not done:
        obs, _reward, terminated, truncated, info = env.step(0)
        done = terminated or truncated
    assert set(info) == {"action", "refused"}
    assert env.finished and env.finished[-1].steps == 9  # decisions at 1..9 s of 10 s
