"""Datasets from real trajectory databases: the operator's decisions, the same observations as
in the environment, a standard episode format, and clear refusals."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from atomlab.learning.actions import KEEP_SCANNING
from atomlab.learning.dataset import build_dataset, load_dataset, write_dataset
from atomlab.learning.errors import DatasetError
from atomlab.learning.observation import observe
from atomlab.trajectory import open_store
from tests.conftest import CliResult
from tests.learning.conftest import RecordedRun


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "trajectories.sqlite"


def test_the_monitor_records_the_operators_commands_as_action_events(
    recorder: Callable[..., RecordedRun], db: Path
) -> None:
    run = recorder("op-1", seed=3)
    acted = [(t, a) for t, a in run.decisions if a != KEEP_SCANNING]
    assert acted
    with open_store(db) as store:
        commands = store.actions("op-1", kind="command")
    assert [c.command for c in commands] == [
        "Bias.Pulse" if a in (1, 2, 3, 4) else "TipShaper.Start" for _, a in acted
    ]
    assert all(c.source == "self" for c in commands)
    assert [round(c.dt_s, 6) for c in commands] == [round(t, 6) for t, _ in acted]


def test_decisions_and_observations_are_rebuilt_exactly(
    recorder: Callable[..., RecordedRun], db: Path
) -> None:
    run = recorder("op-1", seed=3)
    dataset = build_dataset(db, min_actions=1)
    episode = dataset.episodes[0]
    rebuilt = list(zip(episode.infos["dt_s"].tolist(), episode.actions.tolist(), strict=True))
    assert [(round(t, 6), a) for t, a in rebuilt if a] == [
        (round(t, 6), a) for t, a in run.decisions if a
    ]
    # every decision the operator made is there; this operator can only act right after a sample,
    # so a keep-scanning decision may come up to one monitor interval after the rebuilt one
    assert len(rebuilt) >= len(run.decisions)
    for (t_made, a_made), (t_rebuilt, a_rebuilt) in zip(run.decisions, rebuilt, strict=False):
        assert a_made == a_rebuilt and 0 <= t_made - t_rebuilt <= 0.1 + 1e-6
    assert run.live is not None
    for t, observed in zip(episode.infos["dt_s"], episode.observations, strict=False):
        assert np.array_equal(observe(run.live, float(t), window_s=1.0), observed)
    assert episode.observations.shape == (
        episode.total_steps + 1,
        len(dataset.metadata["feature_names"]),
    )
    assert episode.truncations[-1] and not episode.terminations.any()


def test_runs_are_episodes_and_formats_round_trip(
    recorder: Callable[..., RecordedRun], db: Path, tmp_path: Path
) -> None:
    recorder("op-1", seed=3)
    recorder("op-2", seed=4)
    dataset = build_dataset(db, min_actions=1)
    assert [e.run_name for e in dataset.episodes] == ["op-1", "op-2"]
    assert dataset.total_steps == sum(e.total_steps for e in dataset.episodes)
    for name in ("data.npz", "data.h5"):
        path = write_dataset(dataset, tmp_path / name)
        loaded = load_dataset(path)
        assert loaded.sha256() == dataset.sha256()
        assert [e.run_name for e in loaded.episodes] == ["op-1", "op-2"]
        assert np.array_equal(loaded.episodes[1].observations, dataset.episodes[1].observations)
    only = build_dataset(db, run_names=["op-2"], min_actions=1)
    assert [e.run_name for e in only.episodes] == ["op-2"]
    assert only.sha256() != dataset.sha256()
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left


def test_a_database_without_operator_actions_is_refused(
    recorder: Callable[..., RecordedRun], db: Path
) -> None:
    recorder("idle", seed=3, acts=False)
    with pytest.raises(DatasetError, match="no operator actions") as caught:
        build_dataset(db)
    assert caught.value.exit_code == 3


def test_too_few_actions_are_refused_naming_the_count(
    recorder: Callable[..., RecordedRun], db: Path
) -> None:
    recorder("op-1", seed=3)
    acted = build_dataset(db, min_actions=1).action_counts()
    count = sum(n for name, n in acted.items() if name != "keep_scanning")
    with pytest.raises(DatasetError, match=f"holds {count} operator action"):
        build_dataset(db, min_actions=count + 1)


def test_a_run_without_the_observed_signals_is_refused(
    recorder: Callable[..., RecordedRun], db: Path
) -> None:
    recorder("z-only", seed=3, signals=("Z Position",))
    with pytest.raises(DatasetError, match="did not record Tunnel Current"):
        build_dataset(db, min_actions=1)


def test_damaged_or_foreign_dataset_files_are_refused(
    recorder: Callable[..., RecordedRun], db: Path, tmp_path: Path
) -> None:
    recorder("op-1", seed=3)
    path = write_dataset(build_dataset(db, min_actions=1), tmp_path / "data.npz")
    data = dict(np.load(path))
    metadata = json.loads(str(data["metadata"]))
    for change, message in (
        ({"format_version": 99}, "format version 99"),
        ({"sha256": "0" * 64}, "damaged"),
    ):
        data["metadata"] = np.asarray(json.dumps({**metadata, **change}))
        bad = tmp_path / "bad.npz"
        np.savez(bad, **data)
        with pytest.raises(DatasetError, match=message):
            load_dataset(bad)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="not a readable dataset"):
        load_dataset(tmp_path / "junk.npz")
    with pytest.raises(DatasetError, match="suffix"):
        write_dataset(build_dataset(db, min_actions=1), tmp_path / "data.txt")


def test_export_dataset_command(
    cli: Callable[..., CliResult], recorder: Callable[..., RecordedRun], db: Path, tmp_path: Path
) -> None:
    recorder("op-1", seed=3)
    recorder("op-2", seed=4)
    out = tmp_path / "out" / "episodes.npz"
    result = cli(
        "learn",
        "export-dataset",
        "--db-path",
        str(db),
        "--out",
        str(out),
        "--min-actions",
        "1",
        "--json",
    )
    assert result.exit_code == 0, result.stdout
    assert result.json["episodes"] == 2 and result.json["format"] == "npz"
    assert load_dataset(out).sha256() == result.json["sha256"]
    refused = cli(
        "learn",
        "export-dataset",
        "--db-path",
        str(db),
        "--out",
        str(tmp_path / "x.npz"),
        "--min-actions",
        "500",
        "--json",
    )
    assert refused.exit_code == 3 and refused.json["error"]["type"] == "dataset_error"
    assert not (tmp_path / "x.npz").exists()
    missing = cli(
        "learn",
        "export-dataset",
        "--db-path",
        str(tmp_path / "none.sqlite"),
        "--out",
        str(tmp_path / "y.npz"),
        "--json",
    )
    assert missing.exit_code in (3, 4) and not (tmp_path / "y.npz").exists()
