"""One test per rule, and the engine stays quiet on a healthy run."""

from __future__ import annotations

from atomlab.tracking import (
    RuleInput,
    RunRecord,
    RunStatus,
    Severity,
    StepRecord,
    StepStatus,
    evaluate,
)


def record(durations: dict[str, float] | None = None, throughput: float | None = 1.0) -> RunRecord:
    steps = [
        StepRecord(name=n, order=i, status=StepStatus.COMPLETED, duration_s=d)
        for i, (n, d) in enumerate((durations or {"a": 100.0, "b": 50.0}).items(), start=1)
    ]
    return RunRecord(
        run_id="r1",
        pipeline="p",
        status=RunStatus.COMPLETED,
        created_at="2026-01-01T00:00:00Z",
        host="h",
        pid=1,
        run_dir="/tmp/r1",
        steps=steps,
        summary={"throughput": throughput},
    )


def samples(seconds: int, **fields: object) -> list[dict]:
    base = {
        "sys_cpu_pct": 20.0,
        "proc_cpu_norm_pct": 15.0,
        "sys_mem_pct": 40.0,
        "proc_rss_mb": 500.0,
    }
    base.update(fields)
    return [{"dt_s": float(t), **base} for t in range(seconds)]


HEALTHY = RuleInput(
    record=record(),
    samples=samples(600),
    step_history=[{"a": 95.0, "b": 55.0}] * 5,
    throughput_baseline=1.05,
    baseline_runs=5,
)


def rules(findings):
    return [(f.rule, f.severity) for f in findings]


def test_healthy_run_gets_no_recommendation():
    assert evaluate(HEALTHY) == []


def test_sustained_cpu_saturation_fires_but_a_short_peak_does_not():
    peak = samples(20, sys_cpu_pct=100.0) + samples(600)
    assert evaluate(RuleInput(record=record(), samples=peak)) == []
    busy = samples(10) + [dict(s, dt_s=s["dt_s"] + 10) for s in samples(60, sys_cpu_pct=97.0)]
    (finding,) = evaluate(RuleInput(record=record(), samples=busy))
    assert (finding.rule, finding.severity) == ("cpu_saturation", Severity.WARNING)
    assert finding.evidence["longest_stretch_s"] == 59.0
    assert finding.evidence["mean_system_cpu_pct"] == 97.0
    assert finding.actions
    long = samples(400, proc_cpu_norm_pct=99.0)
    assert rules(evaluate(RuleInput(record=record(), samples=long))) == [
        ("cpu_saturation", Severity.CRITICAL)
    ]


def test_memory_pressure_warning_and_critical():
    warm = samples(60, sys_mem_pct=92.0)
    assert rules(evaluate(RuleInput(record=record(), samples=warm))) == [
        ("memory_pressure", Severity.WARNING)
    ]
    hot = samples(60, sys_mem_pct=97.0)
    (finding,) = evaluate(RuleInput(record=record(), samples=hot))
    assert (
        finding.severity is Severity.CRITICAL and finding.evidence["peak_system_memory_pct"] == 97
    )


def test_gpu_idle_while_cpu_busy():
    idle = samples(60, proc_cpu_norm_pct=80.0, gpus=[{"util_pct": 2.0}])
    (finding,) = evaluate(RuleInput(record=record(), samples=idle))
    assert finding.rule == "gpu_idle_cpu_busy" and finding.evidence["mean_gpu_util_pct"] == 2.0
    busy_gpu = samples(60, proc_cpu_norm_pct=80.0, gpus=[{"util_pct": 90.0}])
    assert evaluate(RuleInput(record=record(), samples=busy_gpu)) == []
    no_gpu = samples(60, proc_cpu_norm_pct=80.0)
    assert evaluate(RuleInput(record=record(), samples=no_gpu)) == []


def test_throughput_below_baseline_warning_critical_and_no_baseline():
    def check(measured: float, runs: int = 5):
        return rules(
            evaluate(
                RuleInput(
                    record=record(throughput=measured), throughput_baseline=1.0, baseline_runs=runs
                )
            )
        )

    assert check(0.8) == []
    assert check(0.74) == [("throughput_below_baseline", Severity.WARNING)]
    assert check(0.4) == [("throughput_below_baseline", Severity.CRITICAL)]
    assert check(0.4, runs=1) == []  # one past run is not a baseline
    assert evaluate(RuleInput(record=record(throughput=0.1))) == []


def test_step_much_slower_than_its_history():
    slow = record({"a": 250.0, "b": 50.0})
    (finding,) = evaluate(RuleInput(record=slow, step_history=[{"a": 100.0, "b": 50.0}] * 4))
    assert (finding.rule, finding.step, finding.severity) == (
        "step_slower_than_history",
        "a",
        Severity.WARNING,
    )
    assert finding.evidence == {
        "duration_s": 250.0,
        "median_s": 100.0,
        "ratio": 2.5,
        "history_runs": 4,
    }
    very = record({"a": 500.0, "b": 50.0})
    assert rules(evaluate(RuleInput(record=very, step_history=[{"a": 100.0}] * 3))) == [
        ("step_slower_than_history", Severity.CRITICAL)
    ]
    assert evaluate(RuleInput(record=very, step_history=[{"a": 100.0}] * 2)) == []


def test_cpu_saturation_says_when_other_processes_caused_it():
    crowded = samples(60, sys_cpu_pct=99.0, proc_cpu_norm_pct=10.0)
    (finding,) = evaluate(RuleInput(record=record(), samples=crowded))
    assert "mostly by other processes (this run used 10% of the machine)" in finding.message
    assert finding.actions[0].startswith("find what else runs on the host")
    ours = samples(60, sys_cpu_pct=99.0, proc_cpu_norm_pct=95.0)
    (finding,) = evaluate(RuleInput(record=record(), samples=ours))
    assert "other processes" not in finding.message
