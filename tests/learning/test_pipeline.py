"""The whole pipeline as a user runs it: five tracked steps, real simulator processes, metrics,
artifacts, models and a comparison; the same dataset and seed give the same numbers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from atomlab.core.errors import InvalidInputError
from atomlab.learning import PipelineConfig, run_pipeline
from atomlab.learning.dataset import build_dataset, write_dataset
from atomlab.learning.errors import DatasetError
from atomlab.learning.models import load_model
from atomlab.learning.presets import Preset
from atomlab.learning.task import TaskConfig
from atomlab.learning.training_config import BcConfig, DaggerConfig, PpoConfig
from atomlab.tracking import read_metrics, read_run
from atomlab.trajectory import open_store
from tests.conftest import CliResult
from tests.learning.conftest import RecordedRun

torch.set_num_threads(1)

TINY = Preset(
    name="tiny",
    description="for tests",
    task=TaskConfig(tip_change_rate_per_s=1.0, episode_s=6.0),
    expert_episodes=1,
    collect_episodes=2,
    collect_parallel=2,
    collect_episode_s=7.0,
    bc=BcConfig(hidden=(16, 16), epochs=5),
    finetune="dagger",
    dagger=DaggerConfig(iterations=1, episodes_per_iteration=1, epochs=2),
    ppo=PpoConfig(total_steps=32, n_steps=16, batch_size=8, n_epochs=1),
    selection_episodes=1,
    eval_episodes=1,
    min_actions=1,
)
ROW_KEYS = {"policy", "score", "good_line_fraction", "recovery_s", "crashes", "episodes"}


@pytest.mark.slow
def test_the_pipeline_runs_end_to_end_over_the_nanonis_protocol(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = run_pipeline(PipelineConfig(preset=TINY, seed=1, home=home))
    record = read_run(result.run_dir)
    assert record.status.value == "completed"
    assert [s.name for s in record.steps] == ["expert", "collect", "bc", "finetune", "compare"]
    # the expert's guarded commands reached the trajectory database as command actions
    assert result.trajectory_db is not None and len(result.trajectory_run_names) == 2
    with open_store(result.trajectory_db) as store:
        for name, collected in zip(result.trajectory_run_names, result.collect, strict=True):
            commands = store.actions(name, kind="command")
            assert len(commands) == collected["expert"]["steps"] - collected["expert"][
                "actions"
            ].get("0", 0)
            assert all(c.source == "self" for c in commands)
            assert store.run(name).status == "completed"
    assert result.trajectory_run_name == result.trajectory_run_names[0]
    # metrics, artifacts and models
    metrics = read_metrics(result.run_dir)
    assert [p.step for p in metrics["bc/loss"]] == list(range(5))
    assert {"expert/score", "finetune/score", "compare/expert/score"} <= set(metrics)
    assert {a.name for a in record.artifacts} >= {
        "bc.pt",
        "finetuned.pt",
        "expert.pt",
        "comparison.json",
        "comparison.png",
    }
    assert result.dataset_path.is_file()
    bc = load_model(result.models["bc"])
    assert bc.dataset_sha256 == result.dataset_sha256 and bc.task == TINY.task
    rows = json.loads(result.artifacts["comparison_json"].read_text())
    assert [r["policy"] for r in rows] == ["expert", "bc", "finetuned", "noop", "random"]
    assert all(set(r) >= ROW_KEYS for r in result.comparison) and rows == result.comparison
    assert json.loads(json.dumps(result.to_dict()))["run_id"] == result.run_id


@pytest.fixture
def dataset_file(recorder: Callable[..., RecordedRun], tmp_path: Path) -> Path:
    recorder("op-1", seed=3)
    recorder("op-2", seed=4)
    dataset = build_dataset(tmp_path / "trajectories.sqlite", min_actions=1)
    return write_dataset(dataset, tmp_path / "episodes.npz")


def test_the_same_dataset_and_seed_give_the_same_numbers(
    dataset_file: Path, tmp_path: Path
) -> None:
    runs = [
        run_pipeline(
            PipelineConfig(preset=TINY, seed=2, home=tmp_path / "home", dataset=dataset_file)
        )
        for _ in range(2)
    ]
    assert runs[0].comparison == runs[1].comparison
    assert runs[0].run_id != runs[1].run_id
    assert runs[0].dataset_sha256 == runs[1].dataset_sha256
    assert read_run(runs[0].run_dir).steps[1].status.value == "skipped"  # no collection


def test_ppo_fine_tuning_runs_and_is_named(dataset_file: Path, tmp_path: Path) -> None:
    result = run_pipeline(
        PipelineConfig(
            preset=TINY, seed=2, home=tmp_path / "home", dataset=dataset_file, finetune="ppo"
        )
    )
    assert result.finetune == "ppo"
    assert load_model(result.models["finetuned"]).kind == "ppo"
    assert next(r for r in result.comparison if r["policy"] == "finetuned")["method"] == "ppo"


def test_bad_configurations_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for kwargs in (
        {"preset": "huge"},
        {"seed": -1},
        {"device": "tpu"},
        {"finetune": "sac"},
        {"threads": 0},
    ):
        with pytest.raises(InvalidInputError):
            PipelineConfig(home=home, **kwargs)  # type: ignore[arg-type]
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DatasetError):
        run_pipeline(PipelineConfig(preset=TINY, home=home, dataset=tmp_path / "junk.npz"))
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_run_command_refuses_bad_input(cli: Callable[..., CliResult], tmp_path: Path) -> None:
    for args, expected in (
        (["--preset", "nope"], "no preset 'nope'"),
        (["--dataset", str(tmp_path / "missing.npz")], "no dataset file"),
        (["--finetune", "sac"], "finetune 'sac'"),
    ):
        result = cli("learn", "run", *args, "--json")
        assert result.exit_code == 3, result.stdout
        assert expected in result.json["error"]["message"]
