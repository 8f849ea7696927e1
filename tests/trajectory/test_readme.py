"""The README's recording and run-tracking examples, run as written (bash, real processes).

`uv run atomlab` is mapped to this interpreter's atomlab; the simulator the README starts on 6501
runs here on a free port named by ATOMLAB_INSTRUMENT__PORT. Nothing else is changed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from atomlab.trajectory import open_store

README = Path(__file__).resolve().parents[2] / "README.md"
SHIM = f"""
uv() {{
  if [ "$1" = run ] && [ "$2" = atomlab ]; then
    shift 2
    "{sys.executable}" -c 'from atomlab.cli.main import main; main()' "$@"
  else
    echo "unexpected: uv $*" >&2; return 99
  fi
}}
set -e
"""


def _block(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, heading
    return match.group(1)


def _run(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", SHIM + script],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
    )


@pytest.mark.slow
def test_the_readme_recording_example_records_an_action_it_can_show(sim, isolated_home, tmp_path):
    env = {
        **os.environ,
        "ATOMLAB_HOME": str(isolated_home),
        "ATOMLAB_INSTRUMENT__PORT": str(sim.ports[0]),
    }
    done = _run(_block("## Record what happens at the instrument"), env, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert (tmp_path / "action-0.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "exports" / "tip-prep-1-signals.csv").exists()
    with open_store(isolated_home / "trajectories.sqlite") as store:
        actions = store.actions("tip-prep-1")
    assert actions and actions[0].spec_label == "Bias" and actions[0].source == "self"


@pytest.mark.slow
def test_the_readme_run_tracking_example_runs_as_written(isolated_home, tmp_path):
    env = {**os.environ, "ATOMLAB_HOME": str(isolated_home), "ATOMLAB_TRACKING__GPU": "false"}
    done = _run(_block("## Track long pipelines"), env, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = list((isolated_home / "runs").glob("*/run.json"))
    assert len(runs) == 1
    assert json.loads(runs[0].read_text())["status"] == "completed"
