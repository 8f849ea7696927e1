"""Trajectory monitor benchmark: against the STM simulator over TCP, with QCodes' dataset as the
baseline measured in the same run.

    uv run python benchmarks/trajectory.py                  # about 2-4 minutes on 2 cores
    uv run python benchmarks/trajectory.py --large-samples 10000000   # the full 10 M database
    uv run python benchmarks/trajectory.py --kills 30 --kills-only   # kill -9 durability only

Prints one JSON object (and a short table on stderr):
  * layouts: a column per signal vs a row per value (write rate, bytes, window read);
  * max_rate_hz: the highest rate with 16 signals + 10 specs that ran without a missed tick;
  * jitter at 10 Hz (poll start minus schedule, p50/p99) and the recorder's CPU share of a core;
  * bytes per sample (signals + specs rows with their indexes);
  * `action show --with-signal-window` latency on a database of --large-samples samples (query,
    and query + the CLI's JSON rendering; the process start of the CLI is not included);
  * the same samples written through qcodes.dataset.Measurement (write rate, bytes per sample);
  * kill -9 durability: a real `atomlab trajectory monitor run` (10 Hz, flush interval 0.25 s)
    SIGKILLed at a random moment, --kills times: loss = kill time - wall time of the last
    committed sample (the bound is one flush interval), whether the .sqlite file alone (no -wal)
    opens with the run, how many samples it holds, and whether a reader sees the run crashed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atomlab.cli.output import to_jsonable
from atomlab.instrument import NanonisClient, load_catalog
from atomlab.trajectory import (
    DEFAULT_SPECS,
    ActionEvent,
    ChannelInfo,
    InstrumentSource,
    Monitor,
    MonitorConfig,
    RunInfo,
    Sample,
    TrajectoryStore,
    open_store,
)

SIGNALS_16 = (
    "Tunnel Current",
    "Z Position",
    "Tip X",
    "Tip Y",
    "Setpoint Error",
    *(f"Input {n} (V)" for n in range(1, 9)),
    "Output 1 (V)",
    "Output 2 (V)",
    "Output 3 (V)",
)
SPECS_10 = DEFAULT_SPECS  # the origin's ten operator-facing specs


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextlib.contextmanager
def simulator() -> Iterator[int]:
    """`atomlab sim spm` in its own process (as a user runs it), on a free port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-c", "from atomlab.cli.main import main; main()", "sim", "spm"]
    proc = subprocess.Popen(
        [*cmd, "--port", str(port), "--no-disturbances"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def record(port: int, db: Path, name: str, interval_s: float, duration_s: float) -> dict[str, Any]:
    config = MonitorConfig(
        run_name=name, signals=SIGNALS_16, specs=SPECS_10, interval_s=interval_s, db_path=db
    )
    with (
        NanonisClient("127.0.0.1", port) as client,
        open_store(db, read_only=False) as store,
    ):
        source = InstrumentSource(client, load_catalog())
        monitor = Monitor(source, config, store)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        wall0 = time.perf_counter()
        summary = monitor.run(duration_s=duration_s)
        wall = time.perf_counter() - wall0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    rows = list(open_store(db).samples("signals", name))
    lateness = [(r["dt_s"] - r["scheduled_dt_s"]) * 1e3 for r in rows]
    latency = [r["latency_s"] * 1e3 for r in rows]
    return {
        "interval_s": interval_s,
        "rate_hz": round(1 / interval_s, 1),
        "samples": summary.samples,
        "missed_ticks": summary.missed_ticks,
        "errors": summary.errors,
        "cpu_share_of_one_core": round(cpu / wall, 4),
        "jitter_ms_p50": round(percentile(lateness, 0.5), 3),
        "jitter_ms_p99": round(percentile(lateness, 0.99), 3),
        "jitter_ms_max": round(max(lateness), 3),
        "poll_latency_ms_p50": round(percentile(latency, 0.5), 3),
        "poll_latency_ms_p99": round(percentile(latency, 0.99), 3),
    }


def db_bytes(db: Path) -> int:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = (
        conn.execute("PRAGMA page_count").fetchone()[0]
        * conn.execute("PRAGMA page_size").fetchone()[0]
    )
    conn.close()
    return int(size)


def live(port: int, work: Path, rates: list[float], duration_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"rate_search": []}
    best = 0.0
    for rate in rates:
        db = work / f"rate-{rate:g}.sqlite"
        result = record(port, db, f"rate-{rate:g}", 1 / rate, duration_s)
        out["rate_search"].append(result)
        log(
            f"  {rate:7.0f} Hz: {result['samples']} samples, {result['missed_ticks']} missed, "
            f"poll p50 {result['poll_latency_ms_p50']} ms, cpu {result['cpu_share_of_one_core']}"
        )
        if result["missed_ticks"] == 0 and result["errors"] == 0:
            best = max(best, rate)
    out["max_rate_hz_without_missed_ticks"] = best
    db = work / "ten-hz.sqlite"
    ten = record(port, db, "ten-hz", 0.1, max(duration_s * 4, 20.0))
    out["at_10hz"] = ten
    out["bytes_per_sample"] = round(db_bytes(db) / max(ten["samples"], 1), 1)
    log(
        f"  10 Hz: jitter p99 {ten['jitter_ms_p99']} ms, cpu {ten['cpu_share_of_one_core']:.2%}, "
        f"{out['bytes_per_sample']} bytes/sample"
    )
    return out


def synthetic_samples(n: int, n_actions: int) -> Iterator[Sample | ActionEvent]:
    rng = random.Random(0)
    every = max(n // max(n_actions, 1), 1)
    bias = 0.1
    for k in range(n):
        dt = k * 0.1
        if k and k % every == 0:
            old, bias = bias, round(rng.uniform(-1, 1), 3)
            yield ActionEvent(
                k // every - 1, k, dt, dt, "2026-01-01T00:00:00Z", "Bias", old, bias,
                bias - old, 1, "external", dt - 2.5, dt + 2.5,
            )  # fmt: skip
        signals = tuple(rng.random() for _ in SIGNALS_16)
        specs = (bias, 1e-10, 1, 1e-12, 1e-3, 0.0, 0.0, 2e-8, 2e-8, 0.0)
        yield Sample(k, k, dt + 1e-4, dt, 3e-4, signals, specs)


def create_large_run(store: TrajectoryStore, db: Path) -> RunInfo:
    """The synthetic 16-signal, 10-spec run both large-database builders fill."""
    config = MonitorConfig(run_name="large", signals=SIGNALS_16, specs=SPECS_10, db_path=db)
    return store.create_run(
        config,
        signals=[ChannelInfo(label=s) for s in SIGNALS_16],
        specs=[ChannelInfo(label=s) for s in SPECS_10],
        instrument={"kind": "synthetic"},
        started_at_utc="2026-01-01T00:00:00Z",
    )


def build_large(db: Path, n: int) -> float:
    with open_store(db, read_only=False) as store:
        run = create_large_run(store, db)
        writer = store.record_writer(
            run, n_signals=16, n_specs=10, flush_interval_s=5.0, max_batch=20_000
        )
        t0 = time.perf_counter()
        for record_ in synthetic_samples(n, max(n // 3000, 10)):
            writer.put(record_)
        writer.close()
        return time.perf_counter() - t0


def bulk_build(db: Path, n: int, chunk: int = 50_000) -> float:
    """The large database, written straight through the store's SQL in big transactions (the
    monitor's own path, ``build_large``, is Python-bound at ~15 k samples/s on 2 cores)."""
    import numpy as np

    from atomlab.trajectory.store import _sample_insert

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    with open_store(db, read_only=False) as store:
        run = create_large_run(store, db)
        conn = store.connection
        sig_sql, spec_sql = _sample_insert("signal_samples", 16), _sample_insert("spec_samples", 10)
        every, action_idx, bias = 3000, 0, 0.1
        for base in range(0, n, chunk):
            ks = range(base, min(base + chunk, n))
            values = rng.random((len(ks), 16)).tolist()
            heads = [(run.id, k, k // 6000, k * 0.1 + 1e-4, k * 0.1, 3e-4) for k in ks]
            specs, actions = [], []
            for h, k in zip(heads, ks, strict=True):
                if k and k % every == 0:
                    old, bias = bias, round(float(rng.uniform(-1, 1)), 3)
                    dt = k * 0.1
                    actions.append((run.id, action_idx, k, dt, dt, "2026-01-01T00:00:00Z",
                                    "Bias", old, bias, bias - old, 1, "external", dt - 2.5,
                                    dt + 2.5))  # fmt: skip
                    action_idx += 1
                specs.append((*h, bias, 1e-10, 1, 1e-12, 1e-3, 0.0, 0.0, 2e-8, 2e-8, 0.0))
            with conn:
                conn.executemany(sig_sql, [(*h, *v) for h, v in zip(heads, values, strict=True)])
                conn.executemany(spec_sql, specs)
                conn.executemany(
                    "INSERT INTO action_events (run_id, action_idx, sample_idx, dt_s, end_dt_s,"
                    " detected_at_utc, spec_label, old_value, new_value, delta, steps, source,"
                    " window_start_dt_s, window_end_dt_s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    actions,
                )
            if base and base % 1_000_000 == 0:
                log(f"    {base:,} samples ({base / (time.perf_counter() - t0):,.0f}/s)")
        with conn:
            conn.execute(
                "UPDATE runs SET status = 'completed', samples = ?, actions = ?, last_dt_s = ?"
                " WHERE id = ?",
                (n, action_idx, (n - 1) * 0.1, run.id),
            )
    return time.perf_counter() - t0


def action_show(db: Path, n: int, queries: int) -> dict[str, Any]:
    build_s = bulk_build(db, n)
    log(f"  built {n:,} samples in {build_s:.0f} s ({n / build_s:,.0f} samples/s)")
    latencies: list[float] = []
    query_ms: list[float] = []
    rng = random.Random(1)
    with open_store(db) as store:
        count = len(store.actions())
        for _ in range(queries):
            idx = rng.randrange(count)
            t0 = time.perf_counter()
            action = store.action(idx)  # what `action show --with-signal-window` does
            window = store.signal_window(action.window_start_dt_s, action.window_end_dt_s)
            query_ms.append((time.perf_counter() - t0) * 1e3)
            json.dumps(to_jsonable({"action": action.__dict__, "signal_window": window.to_dict()}))
            latencies.append((time.perf_counter() - t0) * 1e3)
    return {
        "samples": n,
        "actions": count,
        "build_samples_per_s": round(n / build_s),
        "bytes_per_sample": round(db_bytes(db) / n, 1),
        "window_samples": window.count,
        "query_ms_p50": round(percentile(query_ms, 0.5), 3),
        "query_ms_p99": round(percentile(query_ms, 0.99), 3),
        "latency_ms_p50": round(percentile(latencies, 0.5), 3),
        "latency_ms_p99": round(percentile(latencies, 0.99), 3),
    }


def write_rate_ours(db: Path, n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    build_large(db, n)
    seconds = time.perf_counter() - t0
    return {"samples_per_s": round(n / seconds), "bytes_per_sample": round(db_bytes(db) / n, 1)}


def write_rate_qcodes(db: Path, n: int) -> dict[str, Any]:
    """The same samples (26 values + time) through qcodes.dataset.Measurement."""
    import qcodes
    from qcodes.dataset import (
        Measurement,
        initialise_or_create_database_at,
        load_or_create_experiment,
    )
    from qcodes.parameters import ManualParameter

    qcodes.config["core"]["db_location"] = str(db)
    initialise_or_create_database_at(str(db))
    exp = load_or_create_experiment("trajectory-benchmark", sample_name="sim")
    meas = Measurement(exp=exp)
    dt = ManualParameter("dt_s")
    meas.register_parameter(dt)
    names = [f"s{k}" for k in range(16)] + [f"p{k}" for k in range(10)]
    params = [ManualParameter(name) for name in names]
    for param in params:
        meas.register_parameter(param, setpoints=(dt,))
    meas.write_period = 0.25
    samples = [r for r in synthetic_samples(n, 0) if isinstance(r, Sample)]
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr), meas.run() as saver:
        for s in samples:
            values = (*s.signals, *s.specs)
            saver.add_result((dt, s.dt_s), *zip(params, values, strict=True))
    seconds = time.perf_counter() - t0
    return {"samples_per_s": round(n / seconds), "bytes_per_sample": round(db_bytes(db) / n, 1)}


def layouts(work: Path, n: int) -> dict[str, Any]:
    """A column per signal (chosen) vs a row per value, 16 signals, batches of 50 ticks."""
    results: dict[str, Any] = {}
    rng = random.Random(2)
    for layout in ("column_per_signal", "row_per_value"):
        db = work / f"{layout}.sqlite"
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        head = "run_id INT, sample_idx INT, segment_id INT, dt_s REAL, sched REAL, lat REAL"
        if layout == "column_per_signal":
            cols = ", ".join(f"v{i} REAL" for i in range(16))
            conn.execute(f"CREATE TABLE s ({head}, {cols}, PRIMARY KEY (run_id, sample_idx))")
        else:
            conn.execute(f"CREATE TABLE s ({head}, PRIMARY KEY (run_id, sample_idx))")
            conn.execute(
                "CREATE TABLE v (run_id INT, sample_idx INT, signal INT, value REAL, "
                "PRIMARY KEY (run_id, sample_idx, signal)) WITHOUT ROWID"
            )
        conn.execute("CREATE INDEX s_dt ON s (run_id, dt_s)")
        t0 = time.perf_counter()
        for base in range(0, n, 50):
            ticks = range(base, min(base + 50, n))
            with conn:
                if layout == "column_per_signal":
                    conn.executemany(
                        f"INSERT INTO s VALUES ({', '.join('?' * 22)})",  # noqa: S608
                        [(1, k, k // 6000, k * 0.1, k * 0.1, 3e-4,
                          *(rng.random() for _ in range(16))) for k in ticks],
                    )  # fmt: skip
                else:
                    conn.executemany(
                        "INSERT INTO s VALUES (?, ?, ?, ?, ?, ?)",
                        [(1, k, k // 6000, k * 0.1, k * 0.1, 3e-4) for k in ticks],
                    )
                    conn.executemany(
                        "INSERT INTO v VALUES (?, ?, ?, ?)",
                        [(1, k, i, rng.random()) for k in ticks for i in range(16)],
                    )
        write_s = time.perf_counter() - t0
        latencies = []
        for _ in range(200):
            mid = rng.uniform(5, n * 0.1 - 5)
            t1 = time.perf_counter()
            lo, hi = conn.execute(
                "SELECT min(sample_idx), max(sample_idx) FROM s WHERE run_id = 1 "
                "AND dt_s BETWEEN ? AND ?",
                (mid - 2.5, mid + 2.5),
            ).fetchone()
            if layout == "column_per_signal":
                conn.execute(
                    "SELECT * FROM s WHERE run_id = 1 AND sample_idx BETWEEN ? AND ?", (lo, hi)
                ).fetchall()
            else:
                conn.execute(
                    "SELECT sample_idx, signal, value FROM v WHERE run_id = 1 "
                    "AND sample_idx BETWEEN ? AND ?",
                    (lo, hi),
                ).fetchall()
            latencies.append((time.perf_counter() - t1) * 1e3)
        conn.close()
        results[layout] = {
            "ticks_per_s": round(n / write_s),
            "bytes_per_tick": round(db_bytes(db) / n, 1),
            "window_ms_p50": round(percentile(latencies, 0.5), 3),
            "window_ms_p99": round(percentile(latencies, 0.99), 3),
        }
    col, row = results["column_per_signal"], results["row_per_value"]
    results["ratios"] = {
        "write_speed": round(col["ticks_per_s"] / row["ticks_per_s"], 2),
        "bytes": round(row["bytes_per_tick"] / col["bytes_per_tick"], 2),
        "window_read": round(row["window_ms_p50"] / col["window_ms_p50"], 2),
    }
    return results


CLI = [sys.executable, "-c", "from atomlab.cli.main import main; main()"]


def _stamp_s(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def kill_trial(port: int, work: Path, k: int, rng: random.Random) -> dict[str, Any]:
    """Record at 10 Hz in a real CLI process, SIGKILL it at a random moment, read what is left."""
    import signal

    from atomlab.trajectory import save_staged

    home = work / f"kill-{k}"
    db = home / "trajectories.sqlite"
    flush_s = 0.25
    save_staged(
        home / "trajectory" / "monitor-config.json",
        MonitorConfig(run_name=f"kill-{k}", interval_s=0.1, flush_interval_s=flush_s),
    )
    proc = subprocess.Popen(
        [*CLI, "trajectory", "monitor", "run", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ATOMLAB_HOME": str(home)},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception), open_store(db) as store:
                if store.run().samples >= 5:
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError("the recorder did not start")
        time.sleep(rng.uniform(0.3, 8.0))
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    alone = work / f"alone-{k}.sqlite"
    alone.write_bytes(db.read_bytes())  # what a copy of the main file alone holds
    try:
        with open_store(alone) as copy:
            alone_samples = len(list(copy.samples("signals")))
            alone_ok = True
    except Exception:
        alone_samples, alone_ok = 0, False
    with open_store(db) as store:
        run = store.run()
        rows = store.connection.execute(
            "SELECT count(*), max(dt_s) FROM signal_samples WHERE run_id = ?", (run.id,)
        ).fetchone()
    loss = killed_at - (_stamp_s(run.started_at_utc) + float(rows[1]))
    return {
        "loss_s": round(loss, 4),
        "within_flush_interval": loss <= flush_s,
        "samples": int(rows[0]),
        "alone_opens": alone_ok,
        "alone_samples": alone_samples,
        "status_read": run.status,
    }


def kills(port: int, work: Path, n: int, seed: int = 0) -> dict[str, Any]:
    rng = random.Random(seed)
    trials = []
    for k in range(n):
        trial = kill_trial(port, work, k, rng)
        trials.append(trial)
        log(f"  kill {k + 1}/{n}: {trial}")
    losses = [t["loss_s"] for t in trials]
    return {
        "kills": n,
        "flush_interval_s": 0.25,
        "loss_s_max": max(losses),
        "loss_s_p50": round(percentile(losses, 0.5), 4),
        "loss_s_p90": round(percentile(losses, 0.9), 4),
        "within_flush_interval": sum(t["within_flush_interval"] for t in trials),
        "alone_opens": sum(t["alone_opens"] for t in trials),
        "alone_share_of_samples_min": round(
            min(t["alone_samples"] / t["samples"] for t in trials), 3
        ),
        "read_as_crashed": sum(t["status_read"] == "crashed" for t in trials),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "trials": trials,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-samples", type=int, default=1_000_000)
    parser.add_argument("--rates", default="50,100,200,400,800")
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--baseline-samples", type=int, default=20_000)
    parser.add_argument("--layout-ticks", type=int, default=200_000)
    parser.add_argument("--skip-live", action="store_true", help="No simulator runs.")
    parser.add_argument("--kills", type=int, default=30, help="kill -9 trials (0: none).")
    parser.add_argument("--kills-only", action="store_true", help="Only the kill -9 trials.")
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    with tempfile.TemporaryDirectory(prefix="atomlab-traj-bench-") as tmp:
        work = Path(tmp)
        if args.kills:
            log(f"kill -9 durability, {args.kills} kills of a 10 Hz recording...")
            with simulator() as port:
                report["kill_9"] = kills(port, work, args.kills)
            summary = {k: v for k, v in report["kill_9"].items() if k != "trials"}
            log(f"  {summary}")
            if args.kills_only:
                print(json.dumps(report, indent=2))
                return
        log("layouts (column per signal vs row per value)...")
        report["layouts"] = layouts(work, args.layout_ticks)
        log(f"  {report['layouts']['ratios']}")
        if not args.skip_live:
            log("live recording against `atomlab sim spm` (16 signals + 10 specs)...")
            with simulator() as port:
                rates = [float(r) for r in args.rates.split(",")]
                report["live"] = live(port, work, rates, args.duration_s)
        log(f"writes: atomlab vs qcodes.dataset.Measurement, {args.baseline_samples:,} samples...")
        ours = write_rate_ours(work / "ours.sqlite", args.baseline_samples)
        theirs = write_rate_qcodes(work / "qcodes.sqlite", args.baseline_samples)
        report["baseline"] = {
            "atomlab": ours,
            "qcodes_measurement": theirs,
            "write_speed_ratio": round(ours["samples_per_s"] / theirs["samples_per_s"], 2),
            "bytes_ratio_qcodes_over_atomlab": round(
                theirs["bytes_per_sample"] / ours["bytes_per_sample"], 2
            ),
        }
        log(f"  {report['baseline']}")
        log(f"action show --with-signal-window on {args.large_samples:,} samples...")
        report["action_show"] = action_show(work / "large.sqlite", args.large_samples, 200)
        log(f"  {report['action_show']}")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
