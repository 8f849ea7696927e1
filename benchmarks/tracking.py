"""Benchmark: the run tracker against its baselines, measured in the same process.

Run: ``uv run python benchmarks/tracking.py [--quick] [--only NAME]``. Prints, each with its
target:

* tracker overhead on a CPU-bound workload with 1 s sampling vs the same workload untracked;
* median cost of one telemetry sample (process tree + system + NVML probe) vs an
  orchestrator-only sample (what the origin measured);
* cost of one step event (start or finish: ``run.json`` replaced atomically + an event line);
* ``atomlab runs list`` over 10,000 runs (SQLite index) vs parsing every run's manifest, in
  process and as a fresh ``atomlab runs list --json`` command vs a fresh ``atomlab --version``;
* ``atomlab runs show`` on a run with 12 MB of telemetry vs reading the whole telemetry file;
* time from SIGTERM to the terminal state on disk, for a real ``atomlab runs exec`` process.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from atomlab.cli.main import run as cli_run
from atomlab.core.settings import TrackingSettings
from atomlab.tracking import (
    GpuProbe,
    RunIndex,
    RunRecord,
    RunStatus,
    RunTracker,
    StepRecord,
    StepStatus,
    TelemetrySampler,
    report,
)
from atomlab.tracking.store import JsonlAppender, save_run, write_json_atomic

CLI = "from atomlab.cli.main import main; main()"


def workload(iterations: int) -> float:
    total = 0.0
    for i in range(iterations):
        total += (i % 7) * 0.5
    return total


def calibrate(seconds: float) -> int:
    n = 200_000
    while True:
        start = time.perf_counter()
        workload(n)
        took = time.perf_counter() - start
        if took > 0.2:
            return int(n * seconds / took)
        n *= 2


def overhead(seconds: float, pairs: int) -> None:
    n = calibrate(seconds)
    wall, cpu = [], []
    for _ in range(pairs):
        start, cpu_start = time.perf_counter(), time.process_time()
        workload(n)
        plain, plain_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        with tempfile.TemporaryDirectory() as home:
            tracker = RunTracker(
                "bench", ["work"], home=Path(home), settings=TrackingSettings(), gpu=GpuProbe()
            )
            with tracker:
                start, cpu_start = time.perf_counter(), time.process_time()
                with tracker.step("work"):
                    workload(n)
                tracked = time.perf_counter() - start
                tracked_cpu = time.process_time() - cpu_start  # includes the monitor thread
        wall.append(tracked / plain)
        cpu.append(tracked_cpu / plain_cpu)
    print(
        f"overhead        CPU-bound {seconds:.0f} s workload, 1 s sampling, {pairs} pairs: "
        f"CPU time tracked/untracked median {statistics.median(cpu):.4f} "
        f"({(statistics.median(cpu) - 1) * 100:+.2f} %), wall clock median "
        f"{(statistics.median(wall) - 1) * 100:+.2f} % (pairs "
        f"{', '.join(f'{(r - 1) * 100:+.1f}%' for r in wall)}); target <= 1 %, never > 5 %"
    )


def sample_cost(count: int) -> None:
    sampler = TelemetrySampler(gpu=GpuProbe())
    children = [subprocess.Popen(["sleep", "30"]) for _ in range(4)]  # a small process tree
    try:
        sampler.tree.invalidate()
        with tempfile.TemporaryDirectory() as tmp:
            out = JsonlAppender(Path(tmp) / "telemetry.jsonl")
            ours = []
            for _ in range(count):
                start = time.perf_counter()
                out.append(sampler.sample())
                ours.append(time.perf_counter() - start)
            me = psutil.Process()
            me.cpu_percent(None)
            origin = []
            for _ in range(count):
                start = time.perf_counter()
                record = {
                    "cpu_percent_process": me.cpu_percent(None),
                    "cpu_percent_system": psutil.cpu_percent(None),
                    "memory_rss_mb": me.memory_info().rss / 2**20,
                }
                out.append(record)
                origin.append(time.perf_counter() - start)
            out.close()
    finally:
        for child in children:
            child.kill()
            child.wait()
    med, p95 = statistics.median(ours), sorted(ours)[int(0.95 * count)]
    base = statistics.median(origin)
    print(
        f"sample          one telemetry sample (tree of {len(sampler.tree.pids)} processes, "
        f"system, disk, net, NVML probe) + JSONL append: median {med * 1e6:.0f} us, "
        f"p95 {p95 * 1e6:.0f} us; orchestrator-only baseline {base * 1e6:.0f} us "
        f"(x{med / base:.1f} for the whole tree); target median <= 1 ms"
    )


def event_cost(steps: int) -> None:
    with tempfile.TemporaryDirectory() as home:
        names = [f"s{i}" for i in range(steps)]
        tracker = RunTracker(
            "bench",
            names,
            home=Path(home),
            settings=TrackingSettings(gpu=False),
            telemetry=False,
            monitor=False,
            handle_signals=False,
        )
        with tracker:
            start = time.perf_counter()
            for name in names:
                tracker.start_step(name)
                tracker.advance()
                tracker.finish_step(name)
            took = time.perf_counter() - start
            assert tracker.record is not None
            body = tracker.record.model_dump(mode="json")
            start = time.perf_counter()
            for _ in range(2 * steps):
                write_json_atomic(Path(home) / "bare.json", body)
            bare = time.perf_counter() - start
    per_event, per_write = took / (2 * steps), bare / (2 * steps)
    print(
        f"event           step start/finish in a {steps}-step run: {per_event * 1e6:.0f} us per "
        f"event; the bare atomic write+rename of run.json alone costs {per_write * 1e6:.0f} us "
        f"on this disk (x{per_event / per_write:.2f})"
    )


def synthetic_run(root: Path, i: int) -> RunRecord:
    run_id = f"20260101T{i // 3600 % 24:02d}{i // 60 % 60:02d}{i % 60:02d}Z-bench-{i:06x}"
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    day, hour, minute, second = 1 + i // 86400 % 28, i // 3600 % 24, i // 60 % 60, i % 60
    stamp = f"2026-01-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}.{i % 1000:03d}000Z"
    status = RunStatus.FAILED if i % 10 == 0 else RunStatus.COMPLETED
    steps = [
        StepRecord(name=f"step{k}", order=k, status=StepStatus.COMPLETED, duration_s=10.0 + k)
        for k in range(1, 6)
    ]
    record = RunRecord(
        run_id=run_id,
        pipeline=f"pipe{i % 3}",
        status=status,
        created_at=stamp,
        started_at=stamp,
        ended_at=stamp,
        host="bench",
        pid=1,
        run_dir=str(run_dir),
        steps=steps,
        duration_s=65.0,
    )
    save_run(record)
    return record


def quiet_cli(*args: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return cli_run(list(args))


def history_query(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        root = home / "runs"
        start = time.perf_counter()
        with RunIndex.open(home) as index:
            for i in range(runs):
                index.upsert(synthetic_run(root, i))
        build = time.perf_counter() - start
        ours = []
        for _ in range(5):
            start = time.perf_counter()
            code = quiet_cli("--home", str(home), "runs", "list", "--status", "failed", "--json")
            ours.append(time.perf_counter() - start)
            assert code == 0
        query = []
        for _ in range(5):
            start = time.perf_counter()
            with RunIndex.open(home) as index:  # what the command does: reap, query, print
                index.reap()
                rows = index.list_runs(status="failed", limit=20)
                json.dumps([r.to_dict() for r in rows])
            query.append(time.perf_counter() - start)
        scan = []
        for _ in range(2):
            start = time.perf_counter()
            found = []
            for path in root.glob("*/run.json"):
                data = json.loads(path.read_bytes())
                if data["status"] == "failed":
                    found.append(data)
            found.sort(key=lambda d: d["created_at"], reverse=True)
            _ = found[:20]
            scan.append(time.perf_counter() - start)
        command, bare = fresh_process(["--home", str(home), "runs", "list", "--json"], 7)
    cli_ms, query_ms, scan_ms = (statistics.median(v) * 1000 for v in (ours, query, scan))
    print(
        f"list            {runs} runs (built in {build:.1f} s): `runs list --status failed` "
        f"in-process {cli_ms:.1f} ms incl. Typer start-up (reap + query + JSON {query_ms:.2f} ms); "
        f"parsing every "
        f"manifest {scan_ms:.0f} ms (x{scan_ms / cli_ms:.0f} slower); target <= 200 ms"
    )
    print(
        f"list command    fresh `atomlab runs list --json` process over {runs} runs: median "
        f"{command * 1000:.0f} ms; a fresh `atomlab --version` (interpreter + imports) "
        f"{bare * 1000:.0f} ms, so the command's own share is {(command - bare) * 1000:.0f} ms"
    )


def fresh_process(args: list[str], repeats: int) -> tuple[float, float]:
    """Median wall time of ``atomlab ARGS`` and of ``atomlab --version``, each a new process."""

    def timed(argv: list[str]) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", CLI, *argv], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    timed(["--version"])  # warm the OS file cache
    pairs = [(timed(args), timed(["--version"])) for _ in range(repeats)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def show_big_run(megabytes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        with RunIndex.open(home) as index:
            record = synthetic_run(home / "runs", 1)
            index.upsert(record)
        sampler = TelemetrySampler()
        line = json.dumps(sampler.sample()) + "\n"
        path = Path(record.run_dir) / "telemetry.jsonl"
        with path.open("w") as handle:
            handle.write(line * (megabytes * 2**20 // len(line)))
        size = path.stat().st_size / 2**20
        ours = []
        for _ in range(5):
            start = time.perf_counter()
            assert quiet_cli("--home", str(home), "runs", "show", record.run_id, "--json") == 0
            ours.append(time.perf_counter() - start)
        work = []
        for _ in range(5):
            start = time.perf_counter()
            with RunIndex.open(home) as index:  # what the command does
                index.reap()
                json.dumps(report.live_view(index.load(record.run_id), index))
            work.append(time.perf_counter() - start)
        full = []
        for _ in range(3):
            start = time.perf_counter()
            _ = [json.loads(x) for x in path.read_bytes().splitlines()]
            full.append(time.perf_counter() - start)
    ours_ms, full_ms = statistics.median(ours) * 1000, statistics.median(full) * 1000
    work_ms = statistics.median(work) * 1000
    print(
        f"show            run with {size:.1f} MB telemetry: `runs show --json` in-process "
        f"{ours_ms:.1f} ms incl. Typer start-up (reap + load + live view + JSON {work_ms:.1f} ms); "
        f"reading the whole telemetry {full_ms:.0f} ms (x{full_ms / work_ms:.0f}); target <= 50 ms"
    )
    typer_only = []
    for _ in range(5):
        start = time.perf_counter()
        quiet_cli("runs", "--help")
        typer_only.append(time.perf_counter() - start)
    print(
        f"cli             Typer building the whole `atomlab` command tree (`runs --help`): "
        f"{statistics.median(typer_only) * 1000:.1f} ms, shared by every command"
    )


def sigterm_flush(repeats: int) -> None:
    latencies, exits = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "ATOMLAB_HOME": tmp, "ATOMLAB_TRACKING__GPU": "false"}
            proc = subprocess.Popen(
                [sys.executable, "-c", CLI, "runs", "exec", "-p", "flush", "-s", "s=sleep 60"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            run_json = None
            deadline = time.monotonic() + 60
            while run_json is None and time.monotonic() < deadline:
                for path in Path(tmp, "runs").glob("*/run.json"):
                    with contextlib.suppress(ValueError, OSError):
                        if json.loads(path.read_bytes())["steps"][0].get("pid"):
                            run_json = path
                time.sleep(0.02)
            assert run_json is not None, "run did not start"
            start = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            while json.loads(run_json.read_bytes())["status"] == "running":
                time.sleep(0.0005)
            latencies.append(time.perf_counter() - start)
            proc.wait(timeout=30)
            exits.append(time.perf_counter() - start)
    print(
        f"sigterm         terminal state on disk {statistics.median(latencies) * 1000:.1f} ms "
        f"after SIGTERM (max {max(latencies) * 1000:.1f} ms, {repeats} runs); process exit incl. "
        f"stopping the step's group {statistics.median(exits) * 1000:.0f} ms; target <= 1 s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller, faster measurements")
    parser.add_argument("--only", choices=MEASUREMENTS, help="run only this measurement")
    parser.add_argument("--runs", type=int, help="runs in the history for `list` (10,000)")
    args = parser.parse_args()
    quick = args.quick
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    plan = {
        "sample": lambda: sample_cost(200 if quick else 1000),
        "event": lambda: event_cost(10),
        "list": lambda: history_query(args.runs or (2_000 if quick else 10_000)),
        "show": lambda: show_big_run(12),
        "sigterm": lambda: sigterm_flush(3 if quick else 5),
        "overhead": lambda: overhead(3.0 if quick else 20.0, 2 if quick else 5),
    }
    for name in MEASUREMENTS:
        if args.only in (None, name):
            plan[name]()


MEASUREMENTS = ("sample", "event", "list", "show", "sigterm", "overhead")


if __name__ == "__main__":
    main()
