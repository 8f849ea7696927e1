"""Signals against a real child process: clean stop (130/143), hard kill, then an exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from atomlab.engine import PipelineRunner, RunOptions, RunPaths, load_pipeline
from atomlab.llm import OfflineProvider

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from atomlab.core.errors import AtomlabError
    from atomlab.engine import PipelineRunner, RunOptions, load_pipeline, run_blocking
    from atomlab.llm import OfflineProvider

    def progress(done, total):
        print(f"progress {done}", flush=True)

    runner = PipelineRunner(
        load_pipeline("defect-triage"),
        OfflineProvider(latency_s=0.02),  # a real, slow-ish provider call in the child only
        options=RunOptions(concurrency=2),
        on_progress=progress,
    )
    try:
        run_blocking(runner, Path(sys.argv[1]), Path(sys.argv[2]))
    except AtomlabError as exc:
        print(f"stopped {exc.exit_code}: {exc.message}", flush=True)
        sys.exit(int(exc.exit_code))
    """
)
ITEMS = 40


def _input(path: Path, items: int = ITEMS) -> Path:
    with path.open("w") as out:
        for n in range(items):
            defects = [{"defect_id": f"d{k}", "kind_hint": f"hint {n}-{k}"} for k in range(2)]
            item = {"scan_id": f"scan-{n:03d}", "sample": "Cu(111)", "size_nm": 20}
            out.write(json.dumps({**item, "defects": defects}) + "\n")
    return path


async def _uninterrupted(src: Path, out: Path) -> Path:
    runner = PipelineRunner(
        load_pipeline("defect-triage"), OfflineProvider(), options=RunOptions(write_metrics=False)
    )
    await runner.run(src, out)
    return out


def _start_and_wait_for_progress(tmp_path: Path, src: Path, out: Path) -> subprocess.Popen[str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child = subprocess.Popen(
        [sys.executable, str(script), str(src), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert child.stdout is not None
    for line in child.stdout:  # readiness: the child reports its own progress
        if line.startswith("progress 3"):
            return child
    child.wait(timeout=30)
    pytest.fail(f"child ended before making progress (exit {child.returncode})")


@pytest.mark.parametrize(
    ("signals", "exit_code"),
    [
        ((signal.SIGINT,), 130),
        ((signal.SIGTERM,), 143),
        ((signal.SIGINT, signal.SIGINT), 130),
        ((signal.SIGKILL,), -signal.SIGKILL),
    ],
    ids=["sigint", "sigterm", "double-sigint", "sigkill"],
)
async def test_a_stopped_run_exits_with_its_code_and_resumes_to_identical_bytes(
    signals: tuple[signal.Signals, ...], exit_code: int, tmp_path: Path
) -> None:
    src = _input(tmp_path / "in.jsonl")
    expected = await _uninterrupted(src, tmp_path / "expected.jsonl")
    out = tmp_path / "out.jsonl"
    child = _start_and_wait_for_progress(tmp_path, src, out)
    for sig in signals:
        child.send_signal(sig)
    assert child.wait(timeout=30) == exit_code
    if child.stdout is not None:
        child.stdout.close()
    assert not out.exists()
    assert RunPaths(out).part.exists()
    resumed = PipelineRunner(
        load_pipeline("defect-triage"),
        OfflineProvider(),
        options=RunOptions(resume=True, write_metrics=False),
    )
    summary = await resumed.run(src, out)
    assert summary.resumed_items >= 3
    assert out.read_bytes() == expected.read_bytes()


def test_the_cli_exits_130_on_sigint_and_resume_completes_every_item_once(
    tmp_path: Path, cli: Any
) -> None:
    src = _input(tmp_path / "in.jsonl", items=1500)
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "ATOMLAB_HOME": str(tmp_path / "home")}
    child = subprocess.Popen(
        [sys.executable, "-c", "from atomlab.cli.main import main; main()",
         "engine", "run", "defect-triage", "-i", str(src), "-o", str(out),
         "--provider", "offline", "--cache-mode", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    part = RunPaths(out).part
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size > 0):  # cross-process readiness
        assert child.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    assert child.returncode == 130
    assert "continue with --resume" in stderr
    result = cli(
        "engine", "run", "defect-triage", "-i", str(src), "-o", str(out),
        "--provider", "offline", "--cache-mode", "off", "--resume", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout
    assert 0 < result.json["resumed_items"] < 1500
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [f"scan-{n:03d}" for n in range(1500)]
