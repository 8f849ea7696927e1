"""Benchmark: ``atomlab demo`` as a user runs it, a real process per run.

Run: ``uv run python benchmarks/demo.py [--preset standard] [--seed 0] [--stops 2]``.

1. The whole demo: wall time against the 3-minute budget, each stage's time, and the part of it
   that is the simulated instrument's own real time (the two scans' nominal raster time: the
   simulator scans in real time, so no software can go below it). Ratios are against the
   budget and against that floor, measured in the same run.
2. Ctrl-C: a demo is interrupted (SIGINT) during its survey scan, ``--stops`` times; the time
   from the signal to the demo's exit, with every server it started gone, against the 2 s budget.

The machine's load (1-minute average) is printed before and after: record it with the figures
(docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from atomlab.lab import demo_config

BUDGET_S = 180.0
STOP_BUDGET_S = 2.0


def demo_argv(home: Path, preset: str, seed: int) -> list[str]:
    """``atomlab --home HOME demo --preset PRESET --seed SEED`` in this interpreter."""
    return [
        sys.executable,
        "-m",
        "atomlab",
        "--home",
        str(home),
        "demo",
        "--preset",
        preset,
        "--seed",
        str(seed),
    ]


def run_demo(home: Path, preset: str, seed: int) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    proc = subprocess.run(
        [*demo_argv(home, preset, seed), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"the demo failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return wall, json.loads(proc.stdout)


def stop_once(home: Path, preset: str, seed: int) -> tuple[float, int, int]:
    """Seconds from SIGINT to exit, the exit code, and how many servers outlived it."""
    proc = subprocess.Popen(
        demo_argv(home, preset, seed),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "survey scan: line" in line:
            break
    children = psutil.Process(proc.pid).children(recursive=True)
    started = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    proc.wait()
    took = time.perf_counter() - started
    proc.stderr.read()
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    return took, proc.returncode, len(alive)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stops", type=int, default=2)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load before {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="atomlab-demo-bench-") as tmp:
        home = Path(tmp)
        wall, result = run_demo(home, args.preset, args.seed)
        config = demo_config(args.preset, home=home)
        lines = config.scan_pixels
        floor = 2 * (2 * lines * config.frame_nm / config.scan_speed_nm_s)  # two scans
        print(f"\n1. atomlab demo --preset {args.preset} --seed {args.seed}")
        print(f"   wall time {wall:6.1f} s  = {wall / BUDGET_S:.2f}x the {BUDGET_S:.0f} s budget")
        print(f"   scan floor {floor:5.1f} s (two {lines}-line scans in the simulator's real time)")
        print(f"   wall / floor = {wall / floor:.2f}x")
        for name, stage in result["stages"].items():  # type: ignore[union-attr]
            note = f" ({stage['reason']})" if stage.get("reason") else ""
            print(f"   {name:<9} {stage['status']:<8} {stage['duration_s']:6.1f} s{note[:90]}")
        survey = result["stages"]["survey"].get("survey")  # type: ignore[index]
        if survey:
            d, v = survey["detection"], survey["verification"]
            print(
                f"   detection precision {d['precision']}, recall {d['recall']} "
                f"(tolerance {d['tolerance_nm']} nm, mean error {d['mean_error_nm']} nm); "
                f"{v['verified']}/{d['detected']} repairs verified; swarm "
                f"{survey['swarm']['duration_s']} s"
            )
        print(f"\n2. Ctrl-C during the survey scan, {args.stops} times")
        for k in range(args.stops):
            took, code, left = stop_once(home, args.preset, args.seed + 100 + k)
            print(
                f"   stop {k + 1}: {took:.2f} s to exit {code} "
                f"(= {took / STOP_BUDGET_S:.2f}x the {STOP_BUDGET_S:.0f} s budget), "
                f"{left} servers left"
            )
    print(f"\nload after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
