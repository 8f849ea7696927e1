"""A small rule engine that turns a run's telemetry and history into advice.

Each rule looks at *sustained* behaviour (a contiguous stretch of samples, not a single peak)
or at the pipeline's own stored history, and returns a :class:`Recommendation` with a severity,
the evidence (the numbers it used) and suggested actions, or nothing when the run is healthy::

    findings = evaluate(RuleInput(record=run, samples=telemetry, history=past_steps))
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from atomlab.tracking.models import Recommendation, RunRecord, Severity, StepStatus

Sample = Mapping[str, Any]


@dataclass(frozen=True)
class RuleThresholds:
    """Where each rule fires. Sustained means a contiguous stretch of at least ``sustain_s``."""

    sustain_s: float = 30.0
    critical_sustain_s: float = 300.0
    cpu_saturated_pct: float = 90.0
    memory_warning_pct: float = 90.0
    memory_critical_pct: float = 95.0
    gpu_idle_pct: float = 10.0
    cpu_busy_pct: float = 50.0
    throughput_warning_ratio: float = 0.75
    throughput_critical_ratio: float = 0.5
    min_baseline_runs: int = 2
    slow_step_warning_ratio: float = 2.0
    slow_step_critical_ratio: float = 4.0
    min_step_history: int = 3
    min_step_excess_s: float = 5.0


DEFAULT_THRESHOLDS = RuleThresholds()


@dataclass(frozen=True)
class RuleInput:
    """Everything a rule may look at."""

    record: RunRecord
    samples: Sequence[Sample] = ()
    step_history: Sequence[Mapping[str, float]] = ()
    throughput_baseline: float | None = None
    baseline_runs: int = 0
    thresholds: RuleThresholds | None = None

    @property
    def th(self) -> RuleThresholds:
        """The thresholds given, else the module's ``DEFAULT_THRESHOLDS`` (read at call time)."""
        return self.thresholds or DEFAULT_THRESHOLDS


Rule = Callable[[RuleInput], list[Recommendation]]


def _longest_stretch(
    samples: Sequence[Sample], holds: Callable[[Sample], bool]
) -> tuple[float, list[Sample]]:
    """Duration (s) and samples of the longest contiguous run of samples where ``holds``."""
    best: list[Sample] = []
    current: list[Sample] = []
    for sample in samples:
        if holds(sample):
            current.append(sample)
            if _span(current) > _span(best):
                best = list(current)
        else:
            current = []
    return _span(best), best


def _span(samples: Sequence[Sample]) -> float:
    if len(samples) < 2:
        return 0.0
    return float(samples[-1].get("dt_s", 0.0)) - float(samples[0].get("dt_s", 0.0))


def _mean(samples: Sequence[Sample], key: str) -> float | None:
    values = [float(s[key]) for s in samples if s.get(key) is not None]
    return round(statistics.fmean(values), 1) if values else None


def _gpu_util(sample: Sample) -> float | None:
    gpus = sample.get("gpus") or []
    values = [g["util_pct"] for g in gpus if g.get("util_pct") is not None]
    return statistics.fmean(values) if values else None


def cpu_saturation(data: RuleInput) -> list[Recommendation]:
    limit = data.th.cpu_saturated_pct

    def saturated(s: Sample) -> bool:
        return max(s.get("sys_cpu_pct") or 0.0, s.get("proc_cpu_norm_pct") or 0.0) >= limit

    span, stretch = _longest_stretch(data.samples, saturated)
    if span < data.th.sustain_s:
        return []
    severity = Severity.CRITICAL if span >= data.th.critical_sustain_s else Severity.WARNING
    system, ours = _mean(stretch, "sys_cpu_pct") or 0.0, _mean(stretch, "proc_cpu_norm_pct") or 0.0
    others = system - ours >= ours  # the run itself used less than half of the busy CPU
    message = f"CPU was saturated (>= {limit:.0f}%) for {span:.0f} s without a break"
    actions = [
        "run fewer jobs at once on this host (`atomlab runs ps` lists tracked runs)",
        "lower the step's parallelism (worker processes, threads, environments)",
        "move the run to a machine with more cores",
    ]
    if others:
        message += f", mostly by other processes (this run used {ours:.0f}% of the machine)"
        actions.insert(0, "find what else runs on the host (`top`, `atomlab runs ps`)")
    return [
        Recommendation(
            rule="cpu_saturation",
            severity=severity,
            message=message,
            evidence={
                "longest_stretch_s": round(span, 1),
                "threshold_pct": limit,
                "mean_system_cpu_pct": _mean(stretch, "sys_cpu_pct"),
                "mean_run_cpu_pct_of_machine": _mean(stretch, "proc_cpu_norm_pct"),
                "samples": len(stretch),
            },
            actions=actions,
        )
    ]


def memory_pressure(data: RuleInput) -> list[Recommendation]:
    warn = data.th.memory_warning_pct
    span, stretch = _longest_stretch(data.samples, lambda s: (s.get("sys_mem_pct") or 0.0) >= warn)
    if span < data.th.sustain_s:
        return []
    peak = max(float(s.get("sys_mem_pct") or 0.0) for s in stretch)
    critical = peak >= data.th.memory_critical_pct
    return [
        Recommendation(
            rule="memory_pressure",
            severity=Severity.CRITICAL if critical else Severity.WARNING,
            message=f"memory use stayed >= {warn:.0f}% for {span:.0f} s (peak {peak:.0f}%)",
            evidence={
                "longest_stretch_s": round(span, 1),
                "peak_system_memory_pct": peak,
                "max_run_rss_mb": max(float(s.get("proc_rss_mb") or 0.0) for s in stretch),
                "threshold_pct": warn,
            },
            actions=[
                "reduce batch size, buffer or dataset chunk size of the step",
                "close other memory-hungry programs or runs on this host",
                "add swap only as a stop-gap; prefer a machine with more memory",
            ],
        )
    ]


def gpu_idle_while_cpu_busy(data: RuleInput) -> list[Recommendation]:
    th = data.th

    def idle_gpu_busy_cpu(s: Sample) -> bool:
        util = _gpu_util(s)
        cpu = max(s.get("proc_cpu_norm_pct") or 0.0, s.get("sys_cpu_pct") or 0.0)
        return util is not None and util < th.gpu_idle_pct and cpu >= th.cpu_busy_pct

    span, stretch = _longest_stretch(data.samples, idle_gpu_busy_cpu)
    if span < th.sustain_s:
        return []
    utils = [u for u in (_gpu_util(s) for s in stretch) if u is not None]
    return [
        Recommendation(
            rule="gpu_idle_cpu_busy",
            severity=Severity.WARNING,
            message=f"the GPU sat idle (< {th.gpu_idle_pct:.0f}%) for {span:.0f} s "
            "while the CPU was busy",
            evidence={
                "longest_stretch_s": round(span, 1),
                "mean_gpu_util_pct": round(statistics.fmean(utils), 1) if utils else None,
                "mean_system_cpu_pct": _mean(stretch, "sys_cpu_pct"),
            },
            actions=[
                "check the step really runs on the GPU (device selection, CUDA build)",
                "move CPU-side data preparation off the critical path (more loader workers)",
                "if the step is CPU-only by design, run it on a machine without a GPU",
            ],
        )
    ]


def throughput_below_baseline(data: RuleInput) -> list[Recommendation]:
    th = data.th
    measured = data.record.summary.get("throughput")
    baseline = data.throughput_baseline
    if measured is None or baseline is None or baseline <= 0:
        return []
    if data.baseline_runs < th.min_baseline_runs:
        return []
    ratio = float(measured) / baseline
    if ratio > th.throughput_warning_ratio:
        return []
    critical = ratio <= th.throughput_critical_ratio
    return [
        Recommendation(
            rule="throughput_below_baseline",
            severity=Severity.CRITICAL if critical else Severity.WARNING,
            message=f"throughput {measured:.4g}/s is {100 * (1 - ratio):.0f}% below the "
            f"pipeline's baseline {baseline:.4g}/s",
            evidence={
                "throughput": measured,
                "baseline": baseline,
                "ratio": round(ratio, 3),
                "baseline_runs": data.baseline_runs,
            },
            actions=[
                "compare this run's telemetry with a recent healthy run (`atomlab runs summary`)",
                "look for other load on the host at the time (`atomlab runs ps`)",
                "check whether inputs or configuration changed since the baseline runs",
            ],
        )
    ]


def step_slower_than_history(data: RuleInput) -> list[Recommendation]:
    th = data.th
    findings: list[Recommendation] = []
    for step in data.record.steps:
        if step.status is not StepStatus.COMPLETED or step.duration_s is None:
            continue
        past = [h[step.name] for h in data.step_history if step.name in h]
        if len(past) < th.min_step_history:
            continue
        typical = statistics.median(past)
        if typical <= 0 or step.duration_s - typical < th.min_step_excess_s:
            continue
        ratio = step.duration_s / typical
        if ratio < th.slow_step_warning_ratio:
            continue
        critical = ratio >= th.slow_step_critical_ratio
        findings.append(
            Recommendation(
                rule="step_slower_than_history",
                severity=Severity.CRITICAL if critical else Severity.WARNING,
                step=step.name,
                message=f"step {step.name!r} took {step.duration_s:.0f} s, {ratio:.1f}x its "
                f"median of {typical:.0f} s over the last {len(past)} runs",
                evidence={
                    "duration_s": step.duration_s,
                    "median_s": round(typical, 3),
                    "ratio": round(ratio, 2),
                    "history_runs": len(past),
                },
                actions=[
                    "read the step's log for retries or warnings (`atomlab runs show` names it)",
                    "check the step's telemetry for CPU, memory or I/O limits during the step",
                    "check whether the step's input size grew",
                ],
            )
        )
    return findings


RULES: tuple[Rule, ...] = (
    cpu_saturation,
    memory_pressure,
    gpu_idle_while_cpu_busy,
    throughput_below_baseline,
    step_slower_than_history,
)

_ORDER = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


def evaluate(data: RuleInput, rules: Sequence[Rule] = RULES) -> list[Recommendation]:
    """Every rule's findings, most severe first."""
    findings = [finding for rule in rules for finding in rule(data)]
    return sorted(findings, key=lambda f: _ORDER[f.severity])


__all__ = [
    "DEFAULT_THRESHOLDS",
    "RULES",
    "Rule",
    "RuleInput",
    "RuleThresholds",
    "cpu_saturation",
    "evaluate",
    "gpu_idle_while_cpu_busy",
    "memory_pressure",
    "step_slower_than_history",
    "throughput_below_baseline",
]
