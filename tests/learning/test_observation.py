"""The observation: recorded data in, features out; no privileged value can reach it."""

from __future__ import annotations

import ast
import inspect
import math
from pathlib import Path

import numpy as np
import pytest

import atomlab.learning.observation as observation_module
from atomlab.learning.actions import ACTIONS, KEEP_SCANNING, action_by_name
from atomlab.learning.episode import SimulatedEpisode
from atomlab.learning.expert import ScriptedExpert
from atomlab.learning.observation import (
    FEATURE_NAMES,
    EmptyWindowError,
    observe,
    recent_pulses,
)
from atomlab.learning.recording import CommandRecord, Recording
from atomlab.learning.task import TaskConfig
from atomlab.sim import SimEvent

SIGNALS = ("Tunnel Current", "Z Position")
SPECS = ("Bias", "Z Setpoint", "Z Controller Enabled", "Z Controller P Gain")


def recording(noise: float, seed: int = 0) -> Recording:
    rng = np.random.default_rng(seed)
    rec = Recording(SIGNALS, SPECS)
    for k in range(20):
        current = 100e-12 * (1 + noise * rng.standard_normal())
        z = 1e-9 + noise * 1e-11 * rng.standard_normal()
        rec.add_sample(k * 0.1, [current, z], [0.1, 100e-12, 1, 3e-11])
    return rec


def test_a_noisier_tip_reads_as_larger_spread_features() -> None:
    quiet, noisy = (
        observe(recording(0.002), 2.0, window_s=1.0),
        observe(recording(0.05), 2.0, window_s=1.0),
    )
    assert quiet.shape == (len(FEATURE_NAMES),) and quiet.dtype == np.float32
    for name in ("current_log_std", "current_log_mad", "current_log_step_mean", "z_step_std_log"):
        i = FEATURE_NAMES.index(name)
        assert noisy[i] > 3 * quiet[i], name
    assert quiet[FEATURE_NAMES.index("setpoint_log")] == pytest.approx(0.0, abs=1e-6)
    assert quiet[FEATURE_NAMES.index("z_controller_on")] == 1.0


def test_only_samples_before_the_decision_count() -> None:
    rec = recording(0.002)
    before = observe(rec, 1.0, window_s=1.0)
    rec.add_sample(2.0, [1e-8, 5e-9], [0.1, 100e-12, 1, 3e-11])  # a spike after the decision
    assert np.array_equal(observe(rec, 1.0, window_s=1.0), before)
    with pytest.raises(EmptyWindowError):
        observe(rec, 30.0, window_s=1.0)


def test_recent_pulses_count_until_a_tip_shaping() -> None:
    pulse = CommandRecord(0.0, "Bias.Pulse", {})
    commands = [CommandRecord(1.0, "Bias.Pulse", {}), CommandRecord(2.0, "Bias.Pulse", {})]
    assert recent_pulses(commands, 2.5, window_s=1.0) == 2
    assert recent_pulses(commands, 2.0, window_s=1.0) == 1  # not the one sent at the decision
    assert recent_pulses([pulse, *commands], 4.0, window_s=1.0) == 1  # older ones age out
    shaped = [*commands, CommandRecord(2.2, "TipShaper.Start", {})]
    assert recent_pulses(shaped, 3.0, window_s=1.0) == 0
    rec = recording(0.002)
    for command in shaped:
        rec.add_command(command.dt_s, command.command)
    features = observe(rec, 2.0, window_s=1.0)  # a window of the pulses at 1.0 s only
    assert features[FEATURE_NAMES.index("recent_pulses")] == 1.0
    assert features[FEATURE_NAMES.index("since_pulse")] == pytest.approx(0.1)
    assert features[FEATURE_NAMES.index("since_tip_shaper")] == 1.0  # never, before 2.0 s


def test_the_observation_takes_recorded_data_and_imports_nothing_that_could_reach_a_simulator() -> (
    None
):
    assert list(inspect.signature(observe).parameters) == ["recording", "t_s", "window_s"]
    folder = Path(observation_module.__file__).parent
    for module in ("observation.py", "recording.py", "actions.py"):
        tree = ast.parse((folder / module).read_text(encoding="utf-8"))
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        } | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        atomlab = {name for name in imported if name.startswith("atomlab")}
        assert atomlab <= {"atomlab.learning.actions", "atomlab.learning.recording"}, module


def test_worlds_that_differ_only_in_ground_truth_give_identical_observations() -> None:
    """Two episodes of one seed; in one the simulator's ground truth says the tip crashed (an
    event only: no recorded signal changes). The learner sees the same, the expert does not."""
    task = TaskConfig(tip_change_rate_per_s=0.0, episode_s=6.0)
    plain, told = SimulatedEpisode(task=task, seed=11), SimulatedEpisode(task=task, seed=11)
    physics = told.simulator.physics
    physics.events.append(SimEvent(physics.t_s, "tip_crash", "ground truth only"))
    expert = ScriptedExpert()
    for _ in range(3):
        assert np.array_equal(plain.observation(), told.observation())
        plain.step(KEEP_SCANNING)
        told.step(KEEP_SCANNING)
    assert plain.recording.dt_s == told.recording.dt_s
    for label in (*task.signals,):
        a = plain.recording.window(0, 99).signals[label]
        b = told.recording.window(0, 99).signals[label]
        assert np.array_equal(a, b)
    assert np.array_equal(plain.observation(), told.observation())
    assert plain.tip_status().healthy and told.tip_status().crashed
    assert plain.expert_action(expert) == KEEP_SCANNING
    assert told.expert_action(expert) == action_by_name("tip_shaper").index
    assert all(math.isfinite(v) for v in told.observation())
    assert len(ACTIONS) > 1
