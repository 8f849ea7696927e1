"""Perf suites: judged against stored history; user suites declared as commands."""

from __future__ import annotations

import sys

import pytest

from atomlab.core.errors import InvalidInputError
from atomlab.core.settings import TrackingSettings
from atomlab.tracking import RunIndex, perf


def suite(value: float | None, higher: bool = True) -> perf.PerfSuite:
    return perf.PerfSuite("s", "m", "x/s", lambda: value, higher_is_better=higher)


@pytest.mark.parametrize(
    ("value", "status"),
    [(110.0, "passed"), (80.0, "passed"), (70.0, "soft-breach"), (40.0, "failed")],
)
def test_judge_against_median_of_history(value, status):
    result = perf.judge(suite(value), value, [100.0, 90.0, 110.0])
    assert (result.status, result.baseline) == (status, 100.0)


def test_lower_is_better_and_missing_baseline_and_missing_value():
    assert perf.judge(suite(None, higher=False), 300.0, [100.0]).status == "failed"
    first = perf.judge(suite(5.0), 5.0, [])
    assert first.status == "passed" and "no baseline" in (first.note or "")
    assert perf.judge(suite(None), None, [1.0]).status == "failed"


def test_run_suites_stores_history_and_detects_a_regression(home):
    values = iter([100.0, 100.0, 100.0, 40.0])
    flaky = perf.PerfSuite("flaky", "ops", "ops/s", lambda: next(values))
    with RunIndex.open(home) as index:
        statuses = [perf.run_suites(index, [flaky])[0].status for _ in range(4)]
        assert statuses == ["passed", "passed", "passed", "failed"]
        assert index.perf_history("flaky", "ops") == [100.0, 100.0, 100.0]
    findings = perf.recommendations_for(
        [perf.judge(flaky, 40.0, [100.0]), perf.judge(flaky, 50.0, [])]
    )
    assert [(f.rule, f.severity.value) for f in findings] == [
        ("throughput_below_baseline", "critical"),
        ("baseline_missing", "info"),
    ]


def test_user_suite_from_settings_reads_json_or_regex_metric(cli, tmp_path):
    script = tmp_path / "bench.py"
    script.write_text('print("warming up")\nprint(\'{"rate": 42.5}\')\n')
    config = tmp_path / "atomlab.yaml"
    config.write_text(
        "tracking:\n  perf_suites:\n"
        f"    - {{name: mine, command: '{sys.executable} {script}', metric: rate, unit: x/s}}\n"
    )
    listed = cli("--config", str(config), "runs", "perf-tests", "--list", "--json").json
    assert "mine" in [s["name"] for s in listed["suites"]]
    result = cli("--config", str(config), "runs", "perf-tests", "--suite", "mine", "--json")
    assert result.exit_code == 0, result.stdout
    (only,) = result.json["results"]
    assert (only["suite"], only["value"], only["status"]) == ("mine", 42.5, "passed")
    assert perf.read_metric("took 3.5 s", r"took ([\d.]+) s") == 3.5
    assert perf.read_metric("nothing", "rate") is None


def test_unknown_suite_and_bad_declaration_are_input_errors(cli):
    assert cli("runs", "perf-tests", "--suite", "nope").exit_code == 3
    with pytest.raises(InvalidInputError, match="needs name, command and metric"):
        perf.available_suites(TrackingSettings(perf_suites=[{"name": "x"}]))


def test_builtin_suites_run_through_the_cli(cli):
    result = cli("runs", "perf-tests", "--suite", "tracking.telemetry", "--json")
    assert result.exit_code == 0
    assert result.json["results"][0]["value"] > 0
    assert cli("runs", "list", "--pipeline", "perf-tests", "--json").json["runs"]


def test_a_suite_that_raises_fails_alone(home):
    def broken() -> float:
        raise RuntimeError("simulator API changed")

    suites = [perf.PerfSuite("broken", "x", "", broken), suite(5.0)]
    with RunIndex.open(home) as index:
        first, second = perf.run_suites(index, suites)
    assert (first.status, first.note) == (
        "failed",
        "the suite raised RuntimeError: simulator API changed",
    )
    assert second.status == "passed"


def test_capability_suites_are_listed(cli):
    names = [s["name"] for s in cli("runs", "perf-tests", "--list", "--json").json["suites"]]
    assert {"core.sqlite-batch", "tracking.events", "tracking.telemetry", "sim.physics"} <= set(
        names
    )
