"""Benchmark: the engine against baselines measured in the same run.

Run: ``uv run python benchmarks/engine.py [--latency-ms 20] [--kills 50] [--quick]``. Prints:

1. throughput against concurrency (service-evolution, 21 calls per item, a provider with a fixed
   latency L driven by a real ``asyncio.sleep``): calls/s as a fraction of the ideal C/L and of a
   bare semaphore doing the same sleeps;
2. engine overhead per call with a provider that takes no time (cache off, journal on);
3. cache: items/s with the cache cold against warm;
4. pipelining: one item's makespan in units of L — pipelined levels against strictly
   level-by-level and against fully sequential stages;
5. memory: peak traced memory of a streamed run with 10x more items, and of holding the output
   in memory as the origin did;
6. kill and resume: a child process killed at random points (SIGINT and SIGKILL alternately)
   and resumed until done; the output must equal an uninterrupted run every time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from atomlab.core.logging import configure_logging
from atomlab.engine import (
    PipelineRunner,
    ResponseCache,
    RunOptions,
    RunPaths,
    load_pipeline,
)
from atomlab.llm import Generation, GenerationRequest, OfflineProvider, TokenUsage


class FixedLatencyProvider:
    """Sleeps ``latency_s`` then returns a valid answer (computed once per schema: cheap)."""

    name = "bench"
    model = "bench-1"

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self._texts: dict[type[BaseModel], str] = {}
        self._offline = OfflineProvider(model=self.model)
        self.calls = 0

    async def generate(self, request: GenerationRequest[Any]) -> Generation[Any]:
        self.calls += 1
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        text = self._texts.get(request.schema)
        if text is None:
            text = self._offline.answer_text(request)
            self._texts[request.schema] = text
        return Generation(
            value=request.schema.model_validate_json(text),
            usage=TokenUsage(10, 10),
            request_id=request.request_id,
            model=self.model,
            provider=self.name,
            raw_text=text,
        )


def service_items(path: Path, count: int) -> Path:
    with path.open("w") as out:
        for n in range(count):
            item = {"service_id": f"svc-{n:05d}", "name": f"Service {n}", "description": f"d{n}"}
            out.write(json.dumps(item) + "\n")
    return path


def triage_items(path: Path, count: int) -> Path:
    with path.open("w") as out:
        for n in range(count):
            defects = [{"defect_id": f"d{k}", "kind_hint": f"hint {n}-{k}"} for k in range(2)]
            item = {"scan_id": f"scan-{n:05d}", "sample": "Cu(111)", "size_nm": 20}
            out.write(json.dumps({**item, "defects": defects}) + "\n")
    return path


async def engine_run(
    pipeline: str,
    src: Path,
    out: Path,
    provider: Any,
    *,
    concurrency: int,
    cache: ResponseCache | None = None,
    max_levels: int | None = None,
) -> tuple[float, Any]:
    loaded = load_pipeline(pipeline)
    if max_levels is not None and loaded.spec.fanout is not None:
        fanout = loaded.spec.fanout.model_copy(update={"max_concurrent": max_levels})
        loaded.spec = loaded.spec.model_copy(update={"fanout": fanout})
    runner = PipelineRunner(
        loaded,
        provider,
        cache=cache,
        options=RunOptions(concurrency=concurrency, write_metrics=False),
    )
    started = time.perf_counter()
    summary = await runner.run(src, out)
    return time.perf_counter() - started, summary


async def bare_semaphore(calls: int, concurrency: int, latency_s: float) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await asyncio.sleep(latency_s)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(calls)))
    return time.perf_counter() - started


async def bench_throughput(work: Path, latency_s: float, quick: bool) -> None:
    print(f"\n1. throughput vs concurrency (L = {latency_s * 1000:.0f} ms, 21 calls/item)")
    print(f"{'C':>4} {'calls':>6} {'calls/s':>9} {'ideal':>8} {'of ideal':>9} {'of bare':>8}")
    for concurrency in (1, 4, 16, 64):
        items = (concurrency * (10 if quick else 60)) // 21 + 2
        src = service_items(work / f"tp-{concurrency}.jsonl", items)
        provider = FixedLatencyProvider(latency_s)
        elapsed, _ = await engine_run(
            "service-evolution", src, work / f"tp-{concurrency}.out", provider,
            concurrency=concurrency,
        )  # fmt: skip
        rate = provider.calls / elapsed
        ideal = concurrency / latency_s
        bare = provider.calls / await bare_semaphore(provider.calls, concurrency, latency_s)
        print(
            f"{concurrency:>4} {provider.calls:>6} {rate:>9.0f} {ideal:>8.0f} "
            f"{rate / ideal:>8.0%} {rate / bare:>8.0%}"
        )


async def bench_overhead(work: Path, quick: bool) -> None:
    """Best of 5 (this is a shared machine): wall and CPU time per call beyond the provider's."""
    items = 20 if quick else 60
    src = service_items(work / "oh.jsonl", items)
    schema = load_pipeline("service-evolution").stages[1].output_model
    assert schema is not None
    walls, cpus = [], []
    calls = 0
    for attempt in range(5):
        provider = FixedLatencyProvider(0.0)
        cpu = time.process_time()
        elapsed, _ = await engine_run(
            "service-evolution", src, work / f"oh-{attempt}.out", provider, concurrency=8
        )
        cpu = time.process_time() - cpu
        calls = provider.calls
        bare = FixedLatencyProvider(0.0)
        request = GenerationRequest(prompt="x", schema=schema)
        bare_cpu, started = time.process_time(), time.perf_counter()
        for _ in range(calls):
            await bare.generate(request)
        walls.append((elapsed - (time.perf_counter() - started)) / calls)
        cpus.append((cpu - (time.process_time() - bare_cpu)) / calls)
    print("\n2. engine overhead per call (zero-latency provider, cache off, journal on; best of 5)")
    print(
        f"   {calls} calls ({items} items): {min(walls) * 1000:.3f} ms/call wall, "
        f"{min(cpus) * 1000:.3f} ms/call CPU, {min(walls) * 21 * 1000:.1f} ms/item "
        f"(median of 5: {sorted(walls)[2] * 1000:.3f} ms/call wall; target ≤ 0.5 ms/call)"
    )


async def bench_cache(work: Path, latency_s: float, quick: bool) -> None:
    items = 10 if quick else 30
    src = service_items(work / "cache.jsonl", items)
    cache_dir = work / "cache"
    cold, _ = await engine_run(
        "service-evolution", src, work / "cold.out", FixedLatencyProvider(latency_s),
        concurrency=16, cache=ResponseCache(cache_dir),
    )  # fmt: skip
    warm, summary = await engine_run(
        "service-evolution", src, work / "warm.out", FixedLatencyProvider(latency_s),
        concurrency=16, cache=ResponseCache(cache_dir),
    )  # fmt: skip
    print("\n3. cache (C = 16)")
    print(
        f"   cold {items / cold:.1f} items/s, warm {items / warm:.1f} items/s "
        f"({summary.cache_hits} hits, {summary.calls} calls) → warm/cold = {cold / warm:.1f}x"
    )


async def bench_pipelining(work: Path, latency_s: float) -> None:
    src = service_items(work / "one.jsonl", 1)
    pipelined, _ = await engine_run(
        "service-evolution", src, work / "p.out", FixedLatencyProvider(latency_s),
        concurrency=64, max_levels=5,
    )  # fmt: skip
    by_level, _ = await engine_run(
        "service-evolution", src, work / "l.out", FixedLatencyProvider(latency_s),
        concurrency=64, max_levels=1,
    )  # fmt: skip
    sequential, _ = await engine_run(
        "service-evolution", src, work / "s.out", FixedLatencyProvider(latency_s),
        concurrency=1, max_levels=1,
    )  # fmt: skip
    print(f"\n4. pipelining: one item's makespan in units of L = {latency_s * 1000:.0f} ms")
    print(
        f"   pipelined {pipelined / latency_s:.1f} L, level by level {by_level / latency_s:.1f} L, "
        f"sequential {sequential / latency_s:.1f} L → speed-up {sequential / pipelined:.1f}x "
        f"vs sequential, {by_level / pipelined:.1f}x vs level by level"
    )


async def bench_memory(work: Path, quick: bool) -> None:
    small, large = (50, 500) if quick else (100, 1000)
    peaks = {}
    for count in (small, large):
        src = triage_items(work / f"mem-{count}.jsonl", count)
        tracemalloc.start()
        await engine_run("defect-triage", src, work / f"mem-{count}.out", FixedLatencyProvider(0),
                         concurrency=8)  # fmt: skip
        peaks[count] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    tracemalloc.start()
    held = [json.loads(line) for line in (work / f"mem-{large}.out").read_text().splitlines()]
    in_memory = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del held
    growth = peaks[large] / peaks[small]
    print(
        f"\n5. memory (peak traced): streamed {small} items {peaks[small] / 1e6:.1f} MB, "
        f"{large} items {peaks[large] / 1e6:.1f} MB (x{growth:.2f} for x{large // small} items); "
        f"holding the {large} output records in memory {in_memory / 1e6:.1f} MB"
    )


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from atomlab.core.errors import AtomlabError
    from atomlab.engine import PipelineRunner, RunOptions, load_pipeline, run_blocking
    from atomlab.llm import OfflineProvider

    runner = PipelineRunner(
        load_pipeline("defect-triage"),
        OfflineProvider(latency_s=0.005),
        options=RunOptions(concurrency=4, resume=sys.argv[3] == "resume", write_metrics=False),
        on_progress=lambda done, total: print(f"progress {done}", flush=True),
    )
    try:
        run_blocking(runner, Path(sys.argv[1]), Path(sys.argv[2]))
    except AtomlabError as exc:
        sys.exit(int(exc.exit_code))
    """
)


def bench_kill_resume(work: Path, kills: int, seed: int) -> None:
    """Each kill point: a fresh child killed after a random number of items, then a resume."""
    rng = random.Random(seed)
    items = 40
    src = triage_items(work / "kill.jsonl", items)
    expected = work / "kill-expected.out"
    asyncio.run(_offline_run(src, expected, resume=False))
    script = work / "child.py"
    script.write_text(CHILD)
    out = work / "kill.out"
    identical, stopped, codes = 0, 0, {"SIGINT": 0, "SIGKILL": 0}
    stop_s: list[float] = []
    for point in range(kills):
        sig = signal.SIGINT if point % 2 == 0 else signal.SIGKILL
        target = rng.randint(0, items - 2)
        child = subprocess.Popen(
            [sys.executable, str(script), str(src), str(out), "fresh"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert child.stdout is not None
        signalled = 0.0
        for line in child.stdout:
            if int(line.split()[1]) >= target:
                child.send_signal(sig)
                signalled = time.perf_counter()
                break
        code = child.wait()
        if sig == signal.SIGINT and code == 130:
            stop_s.append(time.perf_counter() - signalled)
        child.stdout.close()
        codes[sig.name] += 1
        stopped += code in (130, -signal.SIGKILL)
        asyncio.run(_offline_run(src, out, resume=True))
        identical += out.read_bytes() == expected.read_bytes()
        paths = RunPaths(out)
        for path in (out, paths.journal, paths.part, paths.rejects_part):
            path.unlink(missing_ok=True)
    print(
        f"\n6. kill and resume: {kills} random kill points ({codes['SIGINT']} SIGINT, "
        f"{codes['SIGKILL']} SIGKILL), {stopped} stopped mid-run; after resuming, the output "
        f"equals an uninterrupted run in {identical}/{kills} cases"
    )
    if stop_s:
        stop_s.sort()
        print(
            f"   SIGINT to process exit (flush, journal, metrics file): median "
            f"{stop_s[len(stop_s) // 2] * 1000:.0f} ms, max {stop_s[-1] * 1000:.0f} ms "
            "(target ≤ 1 s)"
        )


async def _offline_run(src: Path, out: Path, *, resume: bool) -> None:
    runner = PipelineRunner(
        load_pipeline("defect-triage"),
        OfflineProvider(),
        options=RunOptions(resume=resume, write_metrics=False),
    )
    await runner.run(src, out)


async def measure(args: argparse.Namespace, work: Path) -> None:
    latency_s = args.latency_ms / 1000
    wanted = (
        {args.only} if args.only else {"throughput", "overhead", "cache", "pipelining", "memory"}
    )
    if "throughput" in wanted:
        await bench_throughput(work, latency_s, args.quick)
        if not args.quick and args.only is None:
            await bench_throughput(work, 0.2, args.quick)
    if "overhead" in wanted:
        await bench_overhead(work, args.quick)
    if "cache" in wanted:
        await bench_cache(work, latency_s, args.quick)
    if "pipelining" in wanted:
        await bench_pipelining(work, max(latency_s, 0.05))
    if "memory" in wanted:
        await bench_memory(work, args.quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer kills")
    parser.add_argument(
        "--only",
        choices=["throughput", "overhead", "cache", "pipelining", "memory", "kill"],
        help="run one section",
    )
    args = parser.parse_args()
    configure_logging("ERROR", "console")
    work = Path(tempfile.mkdtemp(prefix="atomlab-bench-engine-"))
    try:
        if args.only != "kill":
            asyncio.run(measure(args, work))
        if args.only in (None, "kill"):
            bench_kill_resume(work, 10 if args.quick else args.kills, args.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
