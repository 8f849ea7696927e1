"""The run registry: ``engine run`` notes each start in the data home, and a reader finds every
run again and reads how far it got without writing anything."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atomlab.engine import count_items, known_runs, register_run, run_progress
from atomlab.engine.journal import RunPaths
from atomlab.engine.registry import registry_path

Cli = Callable[..., Any]


def test_a_cli_run_is_registered_and_its_progress_read_back(
    cli: Cli, tmp_path: Path, isolated_home: Path
) -> None:
    src = tmp_path / "in.jsonl"
    assert cli("engine", "sample", "defect-triage", "--output", str(src), "--json").exit_code == 0
    out = tmp_path / "out" / "triage.jsonl"
    result = cli("engine", "run", "defect-triage", "-i", str(src), "-o", str(out), "--json")
    assert result.exit_code == 0, result.stdout
    [ref] = known_runs(isolated_home)
    assert (ref.output, ref.input, ref.pipeline) == (out.resolve(), src.resolve(), "defect-triage")
    journal = RunPaths(out).journal
    before = journal.stat().st_mtime_ns
    progress = run_progress(ref.output)
    assert progress["status"] == "complete"
    assert progress["items_finished"] == count_items(src) == result.json["items"]
    assert progress["ok"] + progress["rejected"] == progress["items_finished"]
    assert journal.stat().st_mtime_ns == before  # reading wrote nothing


def test_the_latest_start_of_each_output_wins_and_damaged_lines_are_skipped(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    register_run(home, output=tmp_path / "a.jsonl", input_path=tmp_path / "in", pipeline="p1")
    register_run(home, output=tmp_path / "b.jsonl", input_path=tmp_path / "in", pipeline="p1")
    with registry_path(home).open("ab") as handle:
        handle.write(b'{"output": 3}\nnot json\n')
    register_run(home, output=tmp_path / "a.jsonl", input_path=tmp_path / "in", pipeline="p2")
    refs = known_runs(home)
    assert [(r.output.name, r.pipeline) for r in refs] == [("a.jsonl", "p2"), ("b.jsonl", "p1")]
    assert run_progress(refs[0].output)["status"] == "missing"  # no journal: never ran
    assert count_items(tmp_path / "absent.jsonl") is None


def test_a_refused_run_is_not_registered(cli, tmp_path, isolated_home) -> None:
    """A run refused before it starts (an input line without its id) changes nothing."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"defects": []}\n')
    result = cli(
        "engine", "run", "defect-triage", "-i", str(bad), "-o", str(tmp_path / "o.jsonl"),
        "--provider", "offline", "--json",
    )  # fmt: skip
    assert result.exit_code == 3
    assert not registry_path(isolated_home).exists()


def test_progress_of_a_run_whose_process_is_gone_reads_crashed(tmp_path) -> None:
    from atomlab.engine.journal import Journal, RunManifest, Writer

    out = tmp_path / "o.jsonl"
    journal = Journal(RunPaths(out).journal)
    journal.begin(RunManifest("0" * 64, "p", "d", {}))
    journal.claim()
    journal.close()
    assert run_progress(out)["status"] == "running"  # this test process is the writer
    conn = sqlite3.connect(RunPaths(out).journal)
    dead = Writer(pid=2**22 + 7, host=socket.gethostname(), started=1.0)
    with conn:
        conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'writer'", (json.dumps(dead.to_dict()),)
        )
    conn.close()
    assert run_progress(out)["status"] == "crashed"
