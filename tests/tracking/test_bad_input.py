"""`atomlab runs` under hostile input: the documented exit code, one JSON object, no traceback,
nothing changed; a damaged history index is rebuilt from the run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LONG = "x" * 10_000


def _ok(cli, *args: str) -> dict:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    return result.json


def _refused(cli, *args: str, code: int = 3) -> dict:
    result = cli(*args, "--json")
    assert result.exit_code == code, (args[:3], result.stdout)
    assert len(result.stdout.strip().splitlines()) == 1
    body = json.loads(result.stdout)
    assert body["ok"] is False and body["exit_code"] == code
    assert "Traceback" not in result.stderr
    assert len(body["error"]["message"]) < 1_000  # a long value is cut in the message
    return body["error"]


def _runs(cli) -> list[dict]:
    return _ok(cli, "runs", "list")["runs"]


def test_list_limits_and_ages_that_overflow(cli):
    _ok(cli, "runs", "exec", "-p", "one", "-s", "a=true")
    assert len(_ok(cli, "runs", "list", "--limit", str(2**70))["runs"]) == 1  # "all of them"
    assert len(_ok(cli, "runs", "list", "--since", f"{10**30}d")["runs"]) == 1
    for args in (
        ["--limit", "inf"],
        ["--limit", "1e308"],
        ["--limit", "0"],
        ["--since", "inf"],
        ["--since", "1e308d"],
        ["--since", LONG],
    ):
        _refused(cli, "runs", "list", *args)


def test_exec_refuses_bad_names_priors_and_places_before_anything_runs(cli, tmp_path, home):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for args in (
        ["-p", "../../escape", "-s", "a=true"],
        ["-p", "", "-s", "a=true"],
        ["-p", LONG, "-s", "a=true"],
        ["-p", "ok", "-s", f"{LONG}=true"],
        ["-p", "ok", "-s", "a=true", "--expect", "a=inf"],
        ["-p", "ok", "-s", "a=true", "--expect", "a=nan"],
        ["-p", "ok", "-s", "a=true", "--tensorboard", str(a_file)],
        ["-p", "ok", "-s", "a=true", "--tensorboard", f"/{LONG}"],
    ):
        error = _refused(cli, "runs", "exec", *args)
        assert error["type"] in ("invalid_input", "usage_error")
    assert _runs(cli) == []
    assert not (tmp_path / "escape").exists() and not (home.parent / "escape").exists()
    assert a_file.read_text() == "x"


def test_watch_tensorboard_and_export_refuse_bad_values(cli, tmp_path):
    run_id = _ok(cli, "runs", "exec", "-p", "one", "-s", "a=true")["run"]["run_id"]
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    _refused(cli, "runs", "watch", run_id, "--interval", "inf")
    _refused(cli, "runs", "tensorboard", run_id, "--logdir", str(a_file))
    _refused(cli, "runs", "export", run_id, "--format", "md", "--output", f"/{LONG}")
    _refused(cli, "runs", "export", run_id, "--format", "md", "--output", str(tmp_path))
    _refused(cli, "runs", "export", run_id, "--format", "csv", "--output", str(a_file))
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "folder"])
def test_a_damaged_index_is_moved_aside_and_rebuilt(cli, home, damage):
    ids = {_ok(cli, "runs", "exec", "-p", "p", "-s", "a=true")["run"]["run_id"] for _ in range(2)}
    index = home / "runs" / "index.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    if damage == "garbage":
        index.write_bytes(b"this is not a database" * 100)
    elif damage == "truncated":
        index.write_bytes(index.read_bytes()[:1500])
    else:
        index.unlink()
        index.mkdir()
    for command in (["list"], ["status"], ["ps"], ["reindex"], ["prune", "--dry-run"]):
        result = cli("runs", *command, "--json")
        assert result.exit_code == 0, (command, result.stdout, result.stderr)
    assert {r["run_id"] for r in _runs(cli)} == ids
    assert list((home / "runs").glob("index.sqlite.broken-*"))  # kept, never deleted


# Each refused before the history is opened: the data home is not even created.
REFUSED_ON_A_FRESH_HOME = [
    ["exec", "--pipeline", "", "--step", "a=true"],
    ["export", ""],
    ["export", LONG],
    ["list", "--status", ""],
    ["list", "--status", "bogus"],
    ["list", "--since", "not a date"],
    ["list", "--limit", "0"],
    ["perf-tests", "--suite", ""],
    ["prune", "--keep", "-1"],
    ["show", ""],
    ["status", ""],
    ["summary", " "],
    ["tensorboard", "latest", "--logdir", f"/{LONG}"],
    ["watch", "--interval", "nan"],
    ["watch", "--interval", "0.1"],
]


@pytest.mark.parametrize("args", REFUSED_ON_A_FRESH_HOME, ids=lambda a: " ".join(a)[:40])
def test_a_refused_command_creates_nothing_on_a_fresh_home(cli, home, args):
    error = _refused(cli, "runs", *args)
    assert error["type"] in ("invalid_input", "usage_error")
    assert not home.exists()


def test_a_refused_command_leaves_an_existing_history_as_it_was(cli, home, tmp_path):
    _ok(cli, "runs", "exec", "-p", "one", "-s", "a=true")
    before = _state(home)
    for args in REFUSED_ON_A_FRESH_HOME:
        _refused(cli, "runs", *args)
    assert _state(home) == before


def _state(home: Path) -> dict[Path, tuple[int, int]]:
    """Every file of the data home with its size and time, every folder by name (SQLite's
    -wal/-shm come and go with readers, and with them a folder's time)."""
    return {
        p: (0, 0) if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
        for p in home.rglob("*")
        if not p.name.endswith(("-wal", "-shm"))
    }


def test_queries_on_a_home_without_history_answer_without_creating_it(cli, home):
    assert _ok(cli, "runs", "list")["runs"] == []
    assert _ok(cli, "runs", "ps")["runs"] == []
    assert _ok(cli, "runs", "prune", "--keep", "1")["removed"] == []
    error = _refused(cli, "runs", "show", "no-such-run")  # unknown: refused, still nothing made
    assert error["type"] == "not_found"
    _refused(cli, "runs", "status")  # "no runs recorded yet"
    _refused(cli, "runs", "tensorboard", "no-such-run", "--logdir", str(home.parent / "tb"))
    assert not home.exists() and not (home.parent / "tb").exists()
    assert _ok(cli, "runs", "reindex")["indexed"] == 0  # rebuilding is asked for: it creates
    assert (home / "runs" / "index.sqlite").is_file()
