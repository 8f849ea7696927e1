"""Learn an STM operator's behaviour from recorded trajectories (docs/learning.md).

The imitation pipeline (contract C3)::

    from atomlab.learning import PipelineConfig, run_pipeline

    result = run_pipeline(PipelineConfig(preset="demo", seed=0, home=home))
    print(result.table)                     # expert, bc, finetuned, noop, random on held-out seeds

Importing this package never imports torch, gymnasium or stable-baselines3; the pipeline imports
them when it runs. The environment is :class:`atomlab.learning.env.TipMaintenanceEnv` (needs
gymnasium); models load with :func:`atomlab.learning.models.load_model` (needs torch).
"""

from __future__ import annotations

from atomlab.learning.actions import ACTION_NAMES, ACTIONS, KEEP_SCANNING, TableAction
from atomlab.learning.dataset import (
    Dataset,
    EpisodeData,
    build_dataset,
    default_format,
    load_dataset,
    write_dataset,
)
from atomlab.learning.episode import SimulatedEpisode
from atomlab.learning.errors import DatasetError, ModelFileError
from atomlab.learning.evaluation import compare, evaluate, format_table, run_episode
from atomlab.learning.expert import ScriptedExpert
from atomlab.learning.observation import FEATURE_NAMES, observe
from atomlab.learning.pipeline import STEP_NAMES, PipelineConfig, PipelineResult, run_pipeline
from atomlab.learning.policies import ExpertPolicy, NoOpPolicy, RandomPolicy
from atomlab.learning.presets import PRESETS, Preset, preset
from atomlab.learning.recording import Recording
from atomlab.learning.task import EpisodeStats, TaskConfig, TipStatus

__all__ = [
    "ACTIONS",
    "ACTION_NAMES",
    "FEATURE_NAMES",
    "KEEP_SCANNING",
    "PRESETS",
    "STEP_NAMES",
    "Dataset",
    "DatasetError",
    "EpisodeData",
    "EpisodeStats",
    "ExpertPolicy",
    "ModelFileError",
    "NoOpPolicy",
    "PipelineConfig",
    "PipelineResult",
    "Preset",
    "RandomPolicy",
    "Recording",
    "ScriptedExpert",
    "SimulatedEpisode",
    "TableAction",
    "TaskConfig",
    "TipStatus",
    "build_dataset",
    "compare",
    "default_format",
    "evaluate",
    "format_table",
    "load_dataset",
    "observe",
    "preset",
    "run_episode",
    "run_pipeline",
    "write_dataset",
]
