"""`atomlab runs ...` end to end, in-process through the cli fixture."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

PY = sys.executable
BUSY_STEP = f'{PY} -c "import time; e=time.time()+0.3\nwhile time.time()<e: pass"'


def run_exec(cli, *steps: str, pipeline: str = "demo", extra: tuple[str, ...] = ()):
    args = ["runs", "exec", "--pipeline", pipeline]
    for step in steps:
        args += ["--step", step]
    return cli(*args, *extra, "--json")


def test_exec_runs_steps_and_prints_the_run(cli):
    result = run_exec(cli, f"prep={PY} -c 'print(1)'", "work=true", extra=("--expect", "prep=2"))
    assert result.exit_code == 0, result.stderr
    run = result.json["run"]
    assert run["status"] == "completed"
    assert [s["status"] for s in run["steps"]] == ["completed", "completed"]
    assert run["steps"][0]["expected_s"] == 2
    assert "Step 1/2: prep started" in result.stderr  # plain progress lines in --json mode
    assert Path(run["steps"][0]["log_path"]).read_text().strip() == "1"


def test_exec_failure_exits_1_with_the_step_and_log(cli):
    result = run_exec(cli, "ok=true", "bad=sh -c 'echo why it broke; exit 2'", "never=true")
    assert result.exit_code == 1
    assert "  | why it broke" in result.stderr  # the log's last lines, where the user looks
    error = result.json["error"]
    assert error["type"] == "step_failed" and "'bad'" in error["message"]
    status = cli("runs", "status", "--json").json["run"]
    assert status["status"] == "failed"
    assert [s["status"] for s in status["steps"]] == ["completed", "failed", "skipped"]


def test_exec_input_errors_exit_3(cli):
    assert run_exec(cli, "no-equals-sign").exit_code == 3
    assert run_exec(cli, "a=true", extra=("--expect", "zzz=3")).exit_code == 3
    assert run_exec(cli, "a=true", extra=("--expect", "a=-1")).exit_code == 3
    bad_quote = run_exec(cli, "a=true", "b=echo 'unterminated")
    assert bad_quote.exit_code == 3 and "quoting" in bad_quote.json["error"]["message"]
    bad_name = run_exec(cli, "my step=true")
    assert bad_name.exit_code == 3 and "step name" in bad_name.json["error"]["message"]
    assert cli("runs", "list", "--json").json["runs"] == []  # nothing ran for bad input


def test_list_show_export_summary(cli, tmp_path):
    run_exec(cli, "a=true", pipeline="alpha")
    run_exec(cli, "a=false", pipeline="beta")
    listed = cli("runs", "list", "--json").json["runs"]
    assert [r["pipeline"] for r in listed] == ["beta", "alpha"]
    failed = cli("runs", "list", "--status", "failed", "--json").json["runs"]
    assert [r["pipeline"] for r in failed] == ["beta"]
    assert (
        cli("runs", "list", "--pipeline", "alpha", "--limit", "1", "--json").json["runs"][0][
            "pipeline"
        ]
        == "alpha"
    )
    assert cli("runs", "list", "--since", "1h", "--json").json["runs"]
    assert cli("runs", "list", "--status", "nonsense").exit_code == 3
    table = cli("runs", "list").stdout.splitlines()
    assert table[0].split() == ["RUN", "STATUS", "STEPS", "CREATED", "(UTC)", "TIME", "PIPELINE"]
    assert table[1].split()[:3] == [listed[0]["run_id"], "failed", "0/1"]

    run_id = listed[1]["run_id"]
    text = cli("runs", "show", run_id)
    assert text.exit_code == 0 and f"Run {run_id} (alpha): completed" in text.stdout
    assert "telemetry_samples: " in text.stdout and ": None" not in text.stdout  # n/a instead
    md = cli("runs", "show", run_id, "--format", "md").stdout
    assert md.startswith(f"# Run {run_id}") and "| 1 | a | completed |" in md
    assert "- throughput: " in md and ": None" not in md
    as_json = cli("runs", "show", run_id, "--format", "json").json
    assert as_json["run"]["run_id"] == run_id

    target = tmp_path / "report.md"
    exported = cli("runs", "export", run_id, "--format", "md", "--output", str(target), "--json")
    assert exported.json["path"] == str(target)
    assert target.read_text().startswith(f"# Run {run_id}")
    out = cli("runs", "export", run_id, "--format", "json")
    assert json.loads(out.stdout)["run_id"] == run_id

    summary = cli("runs", "summary", run_id, "--json").json
    assert summary["summary"]["telemetry_samples"] >= 1
    assert summary["recommendations"] == []
    assert cli("runs", "show", "nope").exit_code == 3


def test_status_ps_prune_reindex_on_an_empty_and_a_used_home(cli):
    assert cli("runs", "status").exit_code == 3  # no runs yet: not found
    assert cli("runs", "ps", "--json").json["runs"] == []
    run_exec(cli, "a=true")
    assert cli("runs", "status", "--json").json["run"]["steps_done"] == 1
    assert cli("runs", "prune", "--dry-run", "--json").json["removed"] == []
    assert cli("runs", "reindex", "--json").json["indexed"] == 1
    watched = cli("runs", "watch", "--json")
    assert watched.exit_code == 0 and watched.json["run"]["status"] == "completed"


def test_watch_exits_1_for_a_failed_run(cli):
    run_exec(cli, "a=false")
    assert cli("runs", "watch").exit_code == 1


def test_cpu_saturating_run_gets_a_recommendation(cli, monkeypatch):
    """Recommendations fire on a run built to saturate the CPU (thresholds shortened)."""
    from atomlab.tracking import recommend

    monkeypatch.setattr(
        recommend,
        "DEFAULT_THRESHOLDS",
        recommend.RuleThresholds(sustain_s=0.5, cpu_saturated_pct=80),
    )
    monkeypatch.setenv("ATOMLAB_TRACKING__TELEMETRY_INTERVAL_S", "0.05")
    burn = (
        f'{PY} -c "import os, time\n'
        "for _ in range(os.cpu_count()-1):\n"
        "    if os.fork()==0: break\n"
        'e=time.time()+2\nwhile time.time()<e: pass"'
    )
    result = run_exec(cli, f"burn={burn}", pipeline="hot")
    assert result.exit_code == 0, result.stdout
    findings = result.json["run"]["recommendations"]
    assert [f["rule"] for f in findings] == ["cpu_saturation"]


def test_exec_shell_mode_runs_pipelines_of_commands(cli):
    result = run_exec(cli, "count=echo hi | wc -c", extra=("--shell",))
    assert result.exit_code == 0
    log = result.json["run"]["steps"][0]["log_path"]
    assert Path(log).read_text().strip() == "3"


def test_prune_deletes_nothing_unless_configured_and_dry_run_shows_what_would_go(cli):
    for _ in range(3):
        run_exec(cli, "a=true")
    unconfigured = cli("runs", "prune", "--json").json
    assert unconfigured["removed"] == [] and "no retention is configured" in unconfigured["note"]
    assert len(cli("runs", "list", "--json").json["runs"]) == 3
    oldest = cli("runs", "list", "--json").json["runs"][-1]["run_id"]
    would = cli("runs", "prune", "--keep", "2", "--dry-run", "--json").json
    assert would["removed"] == [oldest] and would["dry_run"] is True
    assert len(cli("runs", "list", "--json").json["runs"]) == 3  # a dry run deletes nothing
    assert cli("runs", "prune", "--keep", "2", "--json").json["removed"] == [oldest]
    assert [r["run_id"] for r in cli("runs", "list", "--json").json["runs"]].count(oldest) == 0


def _tracked_run_with_metrics(home: Path) -> str:
    from atomlab.core.settings import TrackingSettings
    from atomlab.tracking import RunTracker

    with (
        RunTracker(
            "tables",
            ["train"],
            home=home,
            settings=TrackingSettings(gpu=False),
            monitor=False,
            handle_signals=False,
        ) as run,
        run.step("train"),
    ):
        run.log_params({"seed": 3})
        run.tick()
        for loss in (0.9, 0.5):
            run.log_metric("bc/loss", loss)
    return run.run_id


def test_export_tables_as_csv_with_telemetry_metrics_and_steps(cli, isolated_home, tmp_path):
    run_id = _tracked_run_with_metrics(isolated_home)
    out = tmp_path / "tables"
    result = cli("runs", "export", run_id, "--format", "csv", "--output", str(out), "--json")
    assert result.exit_code == 0, result.stdout
    files = {k: Path(v) for k, v in result.json["files"].items()}
    assert set(files) == {"steps", "telemetry", "metrics", "meta"}
    with files["metrics"].open() as fh:
        metrics = list(csv.DictReader(fh))
    assert [(m["name"], m["step"], float(m["value"])) for m in metrics] == [
        ("bc/loss", "0", 0.9),
        ("bc/loss", "1", 0.5),
    ]
    assert metrics[0]["at"].endswith("Z")
    with files["telemetry"].open() as fh:
        telemetry = list(csv.DictReader(fh))
    assert len(telemetry) >= 2 and telemetry[0]["t"].endswith("Z")
    assert float(telemetry[0]["proc_rss_mb"]) > 0
    with files["steps"].open() as fh:
        (step,) = csv.DictReader(fh)
    assert step["name"] == "train" and step["status"] == "completed"
    meta = json.loads(files["meta"].read_text())
    assert meta["run"]["run_id"] == run_id and meta["params"] == {"seed": 3}
    assert meta["units"]["telemetry"]["proc_rss_mb"] == "MB"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_export_tables_as_parquet_with_timestamps_units_and_metadata(cli, isolated_home, tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    run_id = _tracked_run_with_metrics(isolated_home)
    result = cli("runs", "export", run_id, "-f", "parquet", "-o", str(tmp_path / "t"), "--json")
    assert result.exit_code == 0, result.stdout
    files = result.json["files"]
    metrics = pq.read_table(files["metrics"])
    assert metrics.schema.field("at").type == pa.timestamp("us", tz="UTC")
    assert metrics.column("value").to_pylist() == [0.9, 0.5]
    assert metrics.column("step").type == pa.int64()
    telemetry = pq.read_table(files["telemetry"])
    assert telemetry.schema.field("t").type == pa.timestamp("us", tz="UTC")
    assert telemetry.schema.field("proc_rss_mb").metadata == {b"unit": b"MB"}
    assert json.loads(telemetry.schema.metadata[b"atomlab.run"])["run_id"] == run_id
    assert json.loads(telemetry.schema.metadata[b"atomlab.params"]) == {"seed": 3}


def test_a_blank_run_id_never_means_the_newest_run(cli):
    run_exec(cli, "a=true")
    for hint in ("", "   ", "x" * 10_000):
        for command in ("show", "status", "summary", "export"):
            result = cli("runs", command, hint, "--json")
            assert result.exit_code == 3, (command, hint[:5], result.stdout)
            assert result.json["error"]["details"]["field"] == "run"
