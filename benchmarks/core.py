"""Benchmark: BatchWriter throughput against one commit per row (the naive baseline).

Run: ``uv run python benchmarks/core.py [--rows N]``. Prints rows/s of both and their ratio.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from atomlab.core.sqlite import BatchWriter, connect, migrate

SCHEMA = "CREATE TABLE samples (idx INTEGER PRIMARY KEY, t REAL, value REAL);"


def write(conn: sqlite3.Connection, rows: list[tuple[int, float, float]]) -> None:
    conn.executemany("INSERT INTO samples VALUES (?, ?, ?)", rows)


def per_row_commits(path: Path, rows: int) -> float:
    conn = connect(path)
    migrate(conn, [SCHEMA])
    start = time.perf_counter()
    for i in range(rows):
        with conn:
            conn.execute("INSERT INTO samples VALUES (?, ?, ?)", (i, i * 0.1, i * 0.5))
    elapsed = time.perf_counter() - start
    conn.close()
    return rows / elapsed


def batch_writer(path: Path, rows: int) -> float:
    conn = connect(path)
    migrate(conn, [SCHEMA])
    conn.close()
    start = time.perf_counter()
    with BatchWriter(path, write, max_batch=500) as writer:
        for i in range(rows):
            writer.put((i, i * 0.1, i * 0.5))
    return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = per_row_commits(Path(tmp) / "naive.sqlite", args.rows)
        batched = batch_writer(Path(tmp) / "batched.sqlite", args.rows)
    print(f"rows: {args.rows}")
    print(f"baseline  one commit per row : {baseline:12,.0f} rows/s")
    print(f"atomlab   BatchWriter        : {batched:12,.0f} rows/s")
    print(f"ratio     BatchWriter/baseline: {batched / baseline:8.1f}x")


if __name__ == "__main__":
    main()
