"""``atomlab learn`` as a user runs it: a full demo run from a dataset, Ctrl-C, start-up cost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from atomlab.learning.dataset import build_dataset, write_dataset
from tests.conftest import CliResult
from tests.learning.conftest import RecordedRun

LAUNCH = [sys.executable, "-c", "from atomlab.cli.main import main; main()"]


def test_the_cli_never_imports_torch_to_start() -> None:
    code = (
        "import sys, atomlab.cli.learn, atomlab.learning, atomlab.cli.main as m; "
        "m.register_groups(); "
        "heavy = ('torch', 'gymnasium', 'stable_baselines3', 'matplotlib'); "
        "print([n for n in heavy if n in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_presets_command(cli: Callable[..., CliResult]) -> None:
    result = cli("learn", "presets", "--json")
    assert result.exit_code == 0 and set(result.json["presets"]) == {"demo", "full"}
    assert result.json["presets"]["demo"]["finetune"] == "dagger"


@pytest.mark.slow
def test_run_the_demo_preset_from_a_dataset(
    cli: Callable[..., CliResult], recorder: Callable[..., RecordedRun], tmp_path: Path
) -> None:
    recorder("op-1", seed=3)
    recorder("op-2", seed=4)
    dataset = write_dataset(
        build_dataset(tmp_path / "trajectories.sqlite", min_actions=1), tmp_path / "episodes.npz"
    )
    logdir = tmp_path / "tb"
    result = cli(
        "learn",
        "run",
        "--preset",
        "demo",
        "--seed",
        "1",
        "--dataset",
        str(dataset),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--home",
        str(tmp_path / "home"),
        "--tensorboard",
        str(logdir),
        "--json",
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    payload = result.json
    assert [r["policy"] for r in payload["comparison"]] == [
        "expert",
        "bc",
        "finetuned",
        "noop",
        "random",
    ]
    assert payload["device"] == "cpu" and payload["trajectory_db"] is None
    assert Path(payload["models"]["finetuned"]).is_file()
    assert list(logdir.rglob("events.out.tfevents.*"))
    # the tracker's progress went to stderr; the skipped collection leaves four steps
    assert "Step 4/4: Compare on held-out seeds completed" in result.stderr


def test_ctrl_c_during_collection_stops_the_simulators(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "ATOMLAB_TRACKING__PROGRESS_INTERVAL_S": "1"}
    proc = subprocess.Popen(
        [*LAUNCH, "--home", str(home), "learn", "run", "--preset", "demo", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        seen = 0
        for line in proc.stderr:  # the tracker reports the collect step once a second
            seen += "Step 2/5: Collect" in line
            if seen >= 3 and list((home / "runs").glob("*/collect/*.events.jsonl")):
                break
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert json.loads(out.strip().splitlines()[-1])["error"]["type"] == "interrupted"
    run_dir = next(p.parent for p in (home / "runs").glob("*/run.json"))
    assert json.loads((run_dir / "run.json").read_text())["status"] == "cancelled"
    marker = str(run_dir / "collect")
    leftovers = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if any(marker in part for part in cmdline):
            leftovers.append(process.pid)
    assert leftovers == []  # every simulator the collection started was stopped
