"""``atomlab engine ...`` as a user runs it: offline runs, resume guards, cache care, migrate."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from atomlab.engine.journal import RunLock, RunPaths
from atomlab.engine.pipeline import builtin_pipelines_dir

Cli = Callable[..., Any]


def _sample(cli: Cli, name: str, path: Path) -> Path:
    result = cli("engine", "sample", name, "--output", str(path), "--json")
    assert result.exit_code == 0, result.stdout
    return path


def _run(cli: Cli, *args: str) -> Any:
    return cli("engine", "run", *args, "--provider", "offline", "--json")


def test_pipelines_lists_both_shipped_pipelines(cli: Cli) -> None:
    result = cli("engine", "pipelines", "--json")
    assert result.exit_code == 0
    assert [p["name"] for p in result.json["pipelines"]] == ["defect-triage", "service-evolution"]


@pytest.mark.parametrize("name", ["service-evolution", "defect-triage"])
def test_run_offline_writes_every_item_and_a_metrics_file(
    cli: Cli, name: str, tmp_path: Path
) -> None:
    src = _sample(cli, name, tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    result = _run(cli, name, "--input", str(src), "--output", str(out))
    assert result.exit_code == 0, result.stdout
    assert result.json["status"] == "complete"
    assert result.json["ok"] is True and result.json["items_ok"] == 4
    assert len(out.read_text().splitlines()) == 4
    metrics = Path(result.json["metrics_file"]).read_text()
    for name_ in (
        "atomlab_engine_queue_inflight",
        "atomlab_engine_queue_submitted_total",
        "atomlab_engine_queue_completed_total",
        "atomlab_engine_stage_duration_seconds_bucket",
        "atomlab_engine_cache_misses_total",
    ):
        assert name_ in metrics
    assert 'le="600.0"' in metrics


def test_resume_after_completion_makes_no_call_and_keeps_the_bytes(
    cli: Cli, tmp_path: Path
) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    _run(cli, "defect-triage", "-i", str(src), "-o", str(out))
    before = out.read_bytes()
    result = _run(cli, "defect-triage", "-i", str(src), "-o", str(out), "--resume")
    assert result.exit_code == 0
    assert result.json["calls"] == 0 and result.json["resumed_items"] == 4
    assert out.read_bytes() == before


def test_second_run_is_served_from_the_cache(cli: Cli, tmp_path: Path) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    first = _run(cli, "defect-triage", "-i", str(src), "-o", str(tmp_path / "a.jsonl"))
    second = _run(cli, "defect-triage", "-i", str(src), "-o", str(tmp_path / "b.jsonl"))
    assert first.json["calls"] == second.json["cache_hits"] > 0
    assert second.json["calls"] == 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()


def test_resume_with_a_changed_input_is_refused_naming_the_change(cli: Cli, tmp_path: Path) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    _run(cli, "defect-triage", "-i", str(src), "-o", str(out))
    src.write_text(src.read_text().splitlines()[0] + "\n")
    result = _run(cli, "defect-triage", "-i", str(src), "-o", str(out), "--resume")
    assert result.exit_code == 2
    assert result.json["error"]["type"] == "resume_refused"
    assert "the input changed" in result.json["error"]["message"]


def test_a_second_run_into_the_same_output_is_refused_while_the_first_holds_it(
    cli: Cli, tmp_path: Path
) -> None:
    """Two runs writing one output would delete each other's journal and part files."""
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    first = RunLock(RunPaths(out))
    first.acquire()  # a separate open file description: flock conflicts as across processes
    try:
        for extra in ((), ("--resume",)):
            busy = _run(cli, "defect-triage", "-i", str(src), "-o", str(out), *extra)
            assert busy.exit_code == 2, busy.stdout
            assert busy.json["error"]["type"] == "run_in_progress"
            assert f"pid {os.getpid()}" in busy.json["error"]["message"]
        assert not RunPaths(out).journal.exists() and not out.exists()
    finally:
        first.release()
    assert not RunPaths(out).lock.exists()
    stale = RunPaths(out).lock
    stale.write_text("12345")  # left by a killed run: the kernel dropped its flock
    done = _run(cli, "defect-triage", "-i", str(src), "-o", str(out))
    assert done.exit_code == 0, done.stdout
    assert not stale.exists()


@pytest.mark.parametrize("input_name", ["o.jsonl", "o.jsonl.journal"])
def test_an_output_that_would_overwrite_the_input_is_refused(
    cli: Cli, tmp_path: Path, input_name: str
) -> None:
    """As the output itself or as one of its side files, the input would be lost."""
    src = _sample(cli, "defect-triage", tmp_path / input_name)
    before = src.read_bytes()
    result = _run(cli, "defect-triage", "-i", str(src), "-o", str(tmp_path / "o.jsonl"))
    assert result.exit_code == 3, result.stdout
    assert "a file the run writes" in result.json["error"]["message"]
    assert src.read_bytes() == before


def test_an_output_that_is_a_directory_is_refused_before_any_call(cli: Cli, tmp_path: Path) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    (tmp_path / "results").mkdir()
    result = _run(cli, "defect-triage", "-i", str(src), "-o", str(tmp_path / "results"))
    assert result.exit_code == 3
    assert "is a folder" in result.json["error"]["message"]
    assert not list(tmp_path.glob("results.*"))  # no part file, journal or metrics


def test_resume_after_the_part_file_was_deleted_says_it_is_missing(
    cli: Cli, tmp_path: Path
) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    _run(cli, "defect-triage", "-i", str(src), "-o", str(out))
    out.unlink()  # a finished run whose output the user removed
    result = _run(cli, "defect-triage", "-i", str(src), "-o", str(out), "--resume")
    assert result.exit_code == 2
    assert "is missing, but the journal records" in result.json["error"]["message"]
    assert not RunPaths(out).part.exists()  # nothing half-made left behind


def test_invalid_input_names_the_line_and_field(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"scan_id": "a", "defects": []}\n{"defects": []}\n')
    result = _run(cli, "defect-triage", "-i", str(src), "-o", str(tmp_path / "o.jsonl"))
    assert result.exit_code == 3
    assert "line 2: missing field 'scan_id'" in result.json["error"]["message"]
    assert not (tmp_path / "o.jsonl").exists()


def test_two_levels_of_an_item_with_one_id_are_refused(cli: Cli, tmp_path: Path) -> None:
    """Level ids key the journal: two defects 'd1' would share answers on a resume."""
    src = tmp_path / "in.jsonl"
    defects = [{"defect_id": "d1", "kind_hint": "pit"}, {"defect_id": "d1", "kind_hint": "adatom"}]
    src.write_text(json.dumps({"scan_id": "a", "sample": "Cu", "size_nm": 5, "defects": defects}))
    result = _run(cli, "defect-triage", "-i", str(src), "-o", str(tmp_path / "o.jsonl"))
    assert result.exit_code == 3
    message = result.json["error"]["message"]
    assert "line 1: 'defects' has two entries with defect_id 'd1'" in message


def test_a_utf8_byte_order_mark_is_accepted_and_other_encodings_named(
    cli: Cli, tmp_path: Path
) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    with_bom = tmp_path / "bom.jsonl"
    with_bom.write_bytes(b"\xef\xbb\xbf" + src.read_bytes())
    result = _run(cli, "defect-triage", "-i", str(with_bom), "-o", str(tmp_path / "b.jsonl"))
    assert result.exit_code == 0, result.stdout
    assert result.json["items_ok"] == 4
    latin1 = tmp_path / "latin1.jsonl"
    extra = '{"scan_id": "\u00e9", "defects": []}\n'.encode("latin-1")
    latin1.write_bytes(src.read_bytes() + extra)
    refused = _run(cli, "defect-triage", "-i", str(latin1), "-o", str(tmp_path / "l.jsonl"))
    assert refused.exit_code == 3
    assert "line 5 is not UTF-8" in refused.json["error"]["message"]


def test_progress_is_hidden_when_stderr_is_not_a_terminal(cli: Cli, tmp_path: Path) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    result = cli("engine", "run", "defect-triage", "-i", str(src), "-o", str(tmp_path / "o.jsonl"))
    assert result.exit_code == 0
    assert result.stderr == ""
    assert "4 ok, 0 rejected" in result.stdout


def test_progress_shows_on_a_terminal_but_not_with_json_logs(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    shown = cli("engine", "run", "defect-triage", "-i", str(src), "-o", str(tmp_path / "a.jsonl"))
    assert "defect-triage" in shown.stderr
    hidden = cli(
        "engine", "run", "defect-triage", "-i", str(src), "-o", str(tmp_path / "b.jsonl"),
        "--json-logs",
    )  # fmt: skip
    assert "━" not in hidden.stderr and "defect-triage ━" not in hidden.stderr
    assert hidden.exit_code == 0


def test_trace_ids_print_the_request_ids_of_failed_items(cli: Cli, tmp_path: Path) -> None:
    """Replay with an empty cassette folder: every call misses, every item is rejected."""
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    out = tmp_path / "o.jsonl"
    result = cli(
        "engine", "run", "defect-triage", "-i", str(src), "-o", str(out),
        "--provider", "replay", "--trace-ids",
    )  # fmt: skip
    assert result.exit_code == 0
    assert "4 rejected" in result.stdout
    assert result.stderr.count("failed item ") == 4
    assert "(cassette_miss)" in result.stderr
    assert "failed item scan-0001 stage summary" in result.stderr
    rejects = [json.loads(x) for x in out.with_name("o.rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rejects] == ["scan-0001", "scan-0002", "scan-0003", "scan-0004"]


def test_json_success_flag_stays_true_when_every_item_is_rejected(cli: Cli, tmp_path: Path) -> None:
    """``ok`` is the envelope's success flag; the item count must not overwrite it."""
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    result = cli(
        "engine", "run", "defect-triage", "-i", str(src), "-o", str(tmp_path / "o.jsonl"),
        "--provider", "replay", "--json",
    )  # fmt: skip
    assert result.exit_code == 0
    assert result.json["ok"] is True
    assert result.json["items_ok"] == 0 and result.json["rejected"] == 4


def test_strict_mode_exits_with_the_documented_code(cli: Cli, tmp_path: Path) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    result = cli(
        "engine", "run", "defect-triage", "-i", str(src), "-o", str(tmp_path / "o.jsonl"),
        "--provider", "replay", "--strict", "--json",
    )  # fmt: skip
    assert result.exit_code == 3
    assert result.json["error"]["details"]["stage"] == "summary"


def test_cache_validate_reports_corrupt_entries_and_fix_repairs(cli: Cli, tmp_path: Path) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    cache = tmp_path / "cache"
    _run(
        cli,
        "defect-triage",
        "-i",
        str(src),
        "-o",
        str(tmp_path / "o.jsonl"),
        "--cache-dir",
        str(cache),
    )
    entries = sorted((cache / "entries").glob("*/*.json"))
    for entry in entries[:2]:
        entry.write_bytes(entry.read_bytes()[:-5])
    bad = cli("engine", "cache", "validate", "--cache-dir", str(cache), "--json")
    assert bad.exit_code == 3
    assert bad.json["error"]["details"]["corrupt"] == 2
    fixed = cli("engine", "cache", "validate", "--cache-dir", str(cache), "--fix", "--json")
    assert fixed.exit_code == 0 and fixed.json["purged"] == 2
    assert fixed.json["ok"] is True and fixed.json["entries_ok"] == len(entries) - 2
    stats = cli("engine", "cache", "stats", "--cache-dir", str(cache), "--json")
    assert stats.json["entries"] == len(entries) - 2
    rerun = _run(
        cli, "defect-triage", "-i", str(src), "-o", str(tmp_path / "p.jsonl"),
        "--cache-dir", str(cache),
    )  # fmt: skip
    assert rerun.json["calls"] == 2
    purged = cli("engine", "cache", "purge", "--cache-dir", str(cache), "--json")
    assert purged.json["purged"] == len(entries)


def test_status_shows_the_journal(cli: Cli, tmp_path: Path) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    out = tmp_path / "o.jsonl"
    _run(cli, "defect-triage", "-i", str(src), "-o", str(out))
    result = cli("engine", "status", "--output", str(out), "--json")
    assert result.json["status"] == "complete"
    assert result.json["ok"] is True and result.json["items_ok"] == 4
    assert result.json["items_finished"] == 4
    assert result.json["manifest"]["pipeline"] == "defect-triage"
    missing = cli("engine", "status", "--output", str(tmp_path / "nope.jsonl"), "--json")
    assert missing.exit_code == 3


def test_migrate_writes_a_valid_deterministic_file(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "old.jsonl"
    src.write_bytes(
        (builtin_pipelines_dir() / "service-evolution" / "sample-1.0.jsonl").read_bytes()
    )
    args = ("engine", "migrate", "--from", "1.0", "--to", "1.1", "-i", str(src))
    first = cli(*args, "-o", str(tmp_path / "a.jsonl"), "--json")
    cli(*args, "-o", str(tmp_path / "b.jsonl"), "--json")
    assert first.exit_code == 0 and first.json["records"] == 2
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    same = cli(*args, "-o", str(src), "--json")
    assert same.exit_code == 3


def test_environment_variables_override_engine_settings(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The origin silently ignored its env vars; ATOMLAB_ENGINE__* must win over defaults."""
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    first = _run(cli, "defect-triage", "-i", str(src), "-o", str(tmp_path / "a.jsonl"))
    assert first.json["calls"] > 0
    monkeypatch.setenv("ATOMLAB_ENGINE__CACHE_MODE", "off")
    second = _run(cli, "defect-triage", "-i", str(src), "-o", str(tmp_path / "b.jsonl"))
    assert second.json["cache_hits"] == 0
    assert second.json["calls"] == first.json["calls"]
    monkeypatch.setenv("ATOMLAB_ENGINE__CONCURRENCY", "0")
    bad = _run(cli, "defect-triage", "-i", str(src), "-o", str(tmp_path / "c.jsonl"))
    assert bad.exit_code == 3
    assert "ATOMLAB_ENGINE__CONCURRENCY" in bad.json["error"]["message"]


def test_run_accepts_a_pipeline_yaml_with_its_own_prompts_and_catalogues(
    cli: Cli, tmp_path: Path
) -> None:
    (tmp_path / "label" / "prompts").mkdir(parents=True)
    (tmp_path / "label" / "catalogues").mkdir()
    (tmp_path / "label" / "prompts" / "name.md").write_text("Name the sample {{ item.text }}")
    (tmp_path / "label.yaml").write_text(
        "name: label\nitem: {id: id, required: [text]}\n"
        "schemas:\n  Label: {label: {type: str, min_length: 1}}\n"
        "stages:\n  - {name: name, prompt: name, output: Label}\n"
    )
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "Cu(111)"}\n{"id": "b", "text": "HOPG"}\n')
    result = _run(
        cli, str(tmp_path / "label.yaml"), "-i", str(src), "-o", str(tmp_path / "o.jsonl")
    )
    assert result.exit_code == 0, result.stdout
    records = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["a", "b"]
    assert all(r["stages"]["name"]["label"] for r in records)


def _garbage_manifest(cache: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (cache / f"manifest.sqlite{suffix}").unlink(missing_ok=True)
    (cache / "manifest.sqlite").write_bytes(b"not a database" * 100)


def _entry_is_folder(cache: Path) -> None:
    entry = sorted((cache / "entries").glob("*/*.json"))[0]
    entry.unlink()
    entry.mkdir()


def _shard_is_file(cache: Path) -> None:
    shard = sorted((cache / "entries").iterdir())[0]
    for child in shard.iterdir():
        child.unlink()
    shard.rmdir()
    shard.write_text("x")


def _manifest_is_folder(cache: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (cache / f"manifest.sqlite{suffix}").unlink(missing_ok=True)
    (cache / "manifest.sqlite").mkdir()


def _manifest_deleted(cache: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (cache / f"manifest.sqlite{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize(
    "damage",
    [_garbage_manifest, _entry_is_folder, _shard_is_file, _manifest_is_folder, _manifest_deleted],
)
def test_a_damaged_cache_costs_misses_never_the_run(
    cli: Cli, tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    """These aborted the whole run with 'unexpected ...' (exit 1) and crashed validate --fix."""
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    cache = tmp_path / "cache"
    first = _run(cli, "defect-triage", "-i", str(src), "-o", str(tmp_path / "a.jsonl"),
                 "--cache-dir", str(cache))  # fmt: skip
    assert first.exit_code == 0
    damage(cache)
    again = _run(cli, "defect-triage", "-i", str(src), "-o", str(tmp_path / "b.jsonl"),
                 "--cache-dir", str(cache))  # fmt: skip
    assert again.exit_code == 0, again.stdout
    assert (tmp_path / "b.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()
    assert again.json["calls"] <= 2  # at most the damaged entries are asked again
    report = cli("engine", "cache", "validate", "--cache-dir", str(cache), "--json")
    stats = cli("engine", "cache", "stats", "--cache-dir", str(cache), "--json")
    assert stats.exit_code in (0, 3) and "Traceback" not in stats.stderr
    fixed = cli("engine", "cache", "validate", "--fix", "--cache-dir", str(cache), "--json")
    assert fixed.exit_code == 0, fixed.stdout
    clean = cli("engine", "cache", "validate", "--cache-dir", str(cache), "--json")
    assert clean.exit_code == 0 and clean.json["findings"] == []
    assert cli("engine", "cache", "stats", "--cache-dir", str(cache), "--json").exit_code == 0
    if report.exit_code == 3:
        assert report.json["error"]["details"]["damage"] >= 1
        assert "validate --fix" in report.json["error"]["message"]


def test_validate_in_text_mode_names_the_damage_and_the_fix(cli: Cli, tmp_path: Path) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    cache = tmp_path / "cache"
    _run(cli, "defect-triage", "-i", str(src), "-o", str(tmp_path / "a.jsonl"),
         "--cache-dir", str(cache))  # fmt: skip
    _garbage_manifest(cache)
    result = cli("engine", "cache", "validate", "--cache-dir", str(cache))
    assert result.exit_code == 3 and result.stdout == ""
    assert "manifest_damaged" in result.stderr and "validate --fix" in result.stderr
    stats = cli("engine", "cache", "stats", "--cache-dir", str(cache))
    assert stats.exit_code == 3 and "validate --fix" in stats.stderr


@pytest.mark.parametrize("command", [["run"], ["cache", "validate"], ["cache", "stats"]])
def test_a_cache_dir_that_is_a_file_is_refused_with_exit_3(
    cli: Cli, tmp_path: Path, command: list[str]
) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("mine")
    args = ["engine", *command, "--cache-dir", str(not_a_folder), "--json"]
    if command == ["run"]:
        args[2:2] = ["defect-triage", "-i", str(src), "-o", str(tmp_path / "o.jsonl")]
    result = cli(*args)
    assert result.exit_code == 3, result.stdout
    assert "--cache-dir" in result.json["error"]["message"]
    assert not_a_folder.read_text() == "mine"
    assert not (tmp_path / "o.jsonl.journal").exists()


def test_a_refused_resume_names_the_first_changed_line_and_its_item(
    cli: Cli, tmp_path: Path
) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    assert _run(cli, "defect-triage", "-i", str(src), "-o", str(out)).exit_code == 0
    lines = src.read_text().splitlines()
    third = json.loads(lines[2])
    third["defects"][0]["description"] = "edited by hand"
    lines[2] = json.dumps(third)
    src.write_text("\n".join(lines) + "\n")
    result = _run(cli, "defect-triage", "-i", str(src), "-o", str(out), "--resume")
    assert result.exit_code == 2
    error = result.json["error"]
    assert error["details"]["line"] == 3
    assert error["details"]["item_id"] == third["scan_id"]
    assert f"line 3 (item {third['scan_id']!r} changed)" in error["message"]
    src.write_text("\n".join(lines[:2]) + "\n")  # cut short
    short = _run(cli, "defect-triage", "-i", str(src), "-o", str(out), "--resume")
    assert "now ends before line 3" in short.json["error"]["message"]


def _garbage(path: Path) -> None:
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    path.write_bytes(b"\x00garbage" * 64)


def _folder(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    path.mkdir()


@pytest.mark.parametrize("damage", [_garbage, _folder])
def test_a_damaged_journal_is_named_with_exit_3_never_unexpected(
    cli: Cli, tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    assert _run(cli, "defect-triage", "-i", str(src), "-o", str(out)).exit_code == 0
    journal = RunPaths(out).journal
    damage(journal)
    for result in (
        _run(cli, "defect-triage", "-i", str(src), "-o", str(out), "--resume"),
        cli("engine", "status", "--output", str(out), "--json"),
    ):
        assert result.exit_code == 3, result.stdout
        assert str(journal) in result.json["error"]["message"]
    fresh = _run(cli, "defect-triage", "-i", str(src), "-o", str(out))
    if damage is _folder:  # a folder is never deleted for the user
        assert fresh.exit_code == 3 and journal.is_dir()
    else:
        assert fresh.exit_code == 0  # a run without --resume starts over


BLOCKING_RUN = """
import asyncio, sys
from pathlib import Path
from atomlab.engine import PipelineRunner, RunOptions, load_pipeline, run_blocking
from atomlab.llm import OfflineProvider

class Blocking(OfflineProvider):
    async def generate(self, request):
        print("calling", flush=True)
        await asyncio.Event().wait()  # never answers: the parent kills us

runner = PipelineRunner(load_pipeline("defect-triage"), Blocking(), options=RunOptions())
run_blocking(runner, Path(sys.argv[1]), Path(sys.argv[2]))
"""


def test_status_says_crashed_after_the_run_was_killed_with_sigkill(
    cli: Cli, tmp_path: Path
) -> None:
    import signal
    import subprocess

    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", BLOCKING_RUN, str(src), str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "calling"  # the journal says running now
        alive = cli("engine", "status", "--output", str(out), "--json")
        assert alive.json["status"] == "running"
        assert alive.json["writer"]["pid"] == child.pid
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    dead = cli("engine", "status", "--output", str(out), "--json")
    assert dead.exit_code == 0
    assert dead.json["status"] == "crashed"
    assert "--resume" in dead.json["hint"]
    resumed = _run(cli, "defect-triage", "-i", str(src), "-o", str(out), "--resume")
    assert resumed.exit_code == 0, resumed.stdout
    assert cli("engine", "status", "-o", str(out), "--json").json["status"] == "complete"


def test_every_run_summary_names_the_provider_that_answered(cli: Cli, tmp_path: Path) -> None:
    src = _sample(cli, "defect-triage", tmp_path / "in.jsonl")
    out = tmp_path / "o.jsonl"
    result = _run(cli, "defect-triage", "-i", str(src), "-o", str(out))
    assert (result.json["provider"], result.json["model"]) == ("offline", "offline-v1")
    record = json.loads(out.read_text().splitlines()[0])
    assert record["meta"]["provider"] == "offline"
    plain = cli(
        "engine", "run", "defect-triage", "-i", str(src), "-o", str(tmp_path / "p.jsonl"),
        "--provider", "offline",
    )  # fmt: skip
    assert "offline provider offline-v1" in plain.stdout
    assert "not by an LLM" in plain.stdout
