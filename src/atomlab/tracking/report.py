"""Views of a recorded run for people and tools: live status, text, Markdown and JSON.

The CLI only prints what these functions return, so everything it shows is available from
Python too.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from atomlab.core.clock import Clock, SystemClock
from atomlab.tracking import recommend
from atomlab.tracking.eta import estimate_remaining, format_duration
from atomlab.tracking.history import RunIndex
from atomlab.tracking.metrics import read_metrics, summarise_metrics
from atomlab.tracking.models import Recommendation, RunRecord, StepStatus
from atomlab.tracking.store import PROGRESS_DIR, TELEMETRY_FILE, iter_jsonl, tail_jsonl
from atomlab.tracking.tracker import run_throughput, summarise_samples

_MARK = {
    StepStatus.PENDING: " ",
    StepStatus.RUNNING: ">",
    StepStatus.COMPLETED: "x",
    StepStatus.FAILED: "!",
    StepStatus.SKIPPED: "-",
    StepStatus.CANCELLED: "c",
}


def live_view(
    record: RunRecord, index: RunIndex | None, clock: Clock | None = None
) -> dict[str, Any]:
    """The run as ``runs status`` shows it: live elapsed times and a fresh ETA while running."""
    now = (clock or SystemClock()).now()
    current = record.current_step
    if record.status.is_active and current is not None:
        record = _with_fresh_progress(record, current.name)
        current = record.current_step
    view = record.model_dump(mode="json")
    view["steps_done"] = record.steps_done
    view["steps_total"] = record.steps_total
    view["current_step"] = current.name if current else None
    view["position"] = record.position(current) if current else None
    view["elapsed_s"] = _elapsed(record.started_at, record.ended_at, now)
    if record.status.is_active:
        elapsed = _elapsed(current.started_at, None, now) if current else None
        history: list[dict[str, float]] = []
        if index is not None:
            with contextlib.suppress(sqlite3.Error):
                history = index.step_history(record.pipeline, exclude=record.run_id)
        eta = estimate_remaining(record.steps, history=history, current_elapsed_s=elapsed)
        view["eta"] = eta.model_dump(mode="json")
        view["current_step_elapsed_s"] = elapsed
        view["heartbeat_age_s"] = _elapsed(record.heartbeat_at, None, now)
    last = tail_jsonl(Path(record.run_dir) / TELEMETRY_FILE, 1)
    view["last_sample"] = last[0] if last else None
    view["metrics"] = summarise_metrics(read_metrics(record.run_dir))
    return view


def status_text(view: dict[str, Any]) -> str:
    """Human lines for ``runs status``: headline, step list, ETA."""
    lines = [
        f"Run {view['run_id']} ({view['pipeline']}): {view['status']}, "
        f"{view['steps_done']}/{view['steps_total']} steps, elapsed "
        f"{format_duration(view['elapsed_s'])}"
    ]
    if view.get("current_step"):
        eta = view.get("eta") or {}
        lines.append(
            f"Step {view['position']}/{view['steps_total']}: {view['current_step']} "
            f"(step {format_duration(view.get('current_step_elapsed_s'))}, ETA "
            f"{format_duration(eta.get('remaining_s'))} "
            f"[{format_duration(eta.get('low_s'))}-{format_duration(eta.get('high_s'))}], "
            f"basis {eta.get('basis', 'none')})"
        )
    for step in view["steps"]:
        status = StepStatus(step["status"])
        extra = (
            f" {format_duration(step['duration_s'])}" if step.get("duration_s") is not None else ""
        )
        if step.get("units_total"):
            extra += f" {step['units_done']:g}/{step['units_total']:g} units"
        if step.get("reason"):
            extra += f" ({step['reason']})"
        lines.append(
            f"  [{_MARK[status]}] {step['order']}. {step['title'] or step['name']}: "
            f"{status.value}{extra}"
        )
    if view.get("reason"):
        lines.append(f"Reason: {view['reason']}")
    lines.extend(user_data_lines(view))
    return "\n".join(lines)


def user_data_lines(view: dict[str, Any]) -> list[str]:
    """Lines for the user's params, metrics (last/min/max) and artifacts, when there are any."""
    lines: list[str] = []
    params = view.get("params") or {}
    if params:
        lines.append("Params:")
        lines.extend(
            f"  {key} = {json.dumps(value, ensure_ascii=False)}"
            for key, value in sorted(params.items())
        )
    metrics = view.get("metrics") or {}
    if metrics:
        lines.append("Metrics (last / min / max, points):")
        lines.extend(
            f"  {name}: {m['last']:.6g} @ step {m['last_step']} / {m['min']:.6g} / "
            f"{m['max']:.6g}, {m['count']}"
            for name, m in metrics.items()
        )
    artifacts = view.get("artifacts") or []
    if artifacts:
        lines.append("Artifacts:")
        lines.extend(
            f"  {a['name']}: {a['path']} ({a['bytes']} bytes"
            + (f", {a['kind']}" if a.get("kind") else "")
            + f", sha256 {a['sha256'][:12]})"
            for a in artifacts
        )
    return lines


def _with_fresh_progress(record: RunRecord, step_name: str) -> RunRecord:
    """A copy of ``record`` whose running subprocess step carries the progress its process last
    reported (``run.json`` has it only as of the last heartbeat, up to 5 s old)."""
    path = Path(record.run_dir) / PROGRESS_DIR / f"{step_name}.json"
    try:
        data = json.loads(path.read_bytes())
        done, total = float(data["done"]), data.get("total")
        total = float(total) if total else None
    except (OSError, ValueError, TypeError, KeyError):
        return record  # no progress reported (yet), or a non-subprocess step
    fresh = record.model_copy(deep=True)
    for step in fresh.steps:
        if step.name == step_name:
            step.units_done = done
            step.units_total = total or step.units_total
    return fresh


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """``key: value`` lines of a run summary; a value never measured (no GPU) reads ``n/a``."""
    units = {"throughput": " units/s", "throughput_baseline": " units/s"}
    lines = []
    for key, value in summary.items():
        if value is None:
            lines.append(f"{key}: n/a")
        elif key == "perf" and isinstance(value, list):  # perf-tests: one result per suite
            lines.extend(
                f"perf {r.get('suite')}: {_or_na(r.get('value'))} {r.get('unit') or ''} "
                f"{r.get('status')}"
                for r in value
                if isinstance(r, dict)
            )
        else:
            lines.append(f"{key}: {value}{units.get(key, '')}")
    return lines


def _or_na(value: Any) -> str:
    return "n/a" if value is None else str(value)


def load_samples(record: RunRecord) -> list[dict[str, Any]]:
    return list(iter_jsonl(Path(record.run_dir) / TELEMETRY_FILE))


def summarise(record: RunRecord, index: RunIndex | None) -> dict[str, Any]:
    """Telemetry aggregates and recommendations, recomputed from ``telemetry.jsonl``.

    Works for crashed runs too, whose tracker never wrote a summary.
    """
    samples = load_samples(record)
    for sample in samples:
        gpus = sample.get("gpus") or []
        utils = [g["util_pct"] for g in gpus if g.get("util_pct") is not None]
        if utils:
            sample["gpu_util_pct"] = sum(utils) / len(utils)
    summary = summarise_samples(samples)
    summary["throughput"] = record.summary.get("throughput", run_throughput(record))
    history: list[dict[str, float]] = []
    baseline, runs = None, 0
    if index is not None:
        with contextlib.suppress(sqlite3.Error):
            history = index.step_history(record.pipeline, exclude=record.run_id)
            baseline, runs = index.throughput_baseline(record.pipeline, exclude=record.run_id)
    summary["throughput_baseline"] = baseline
    summary["baseline_runs"] = runs
    findings = recommend.evaluate(
        recommend.RuleInput(
            record=record.model_copy(update={"summary": summary}),
            samples=samples,
            step_history=history,
            throughput_baseline=baseline,
            baseline_runs=runs,
        )
    )
    return {
        "run_id": record.run_id,
        "pipeline": record.pipeline,
        "status": record.status.value,
        "summary": summary,
        "recommendations": [f.model_dump(mode="json") for f in findings],
        "params": record.params,
        "metrics": summarise_metrics(read_metrics(record.run_dir)),
        "artifacts": [a.model_dump(mode="json") for a in record.artifacts],
    }


def recommendations_text(findings: Sequence[Recommendation | dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for item in findings:
        f = item if isinstance(item, Recommendation) else Recommendation.model_validate(item)
        lines.append(f"[{f.severity.value.upper()}] {f.rule}: {f.message}")
        evidence = ", ".join(f"{k}={v}" for k, v in f.evidence.items())
        lines.append(f"    evidence: {evidence}")
        lines.extend(f"    - {action}" for action in f.actions)
    return lines


def summary_text(data: dict[str, Any]) -> str:
    lines = [f"Run {data['run_id']} ({data['pipeline']}): {data['status']}", "Telemetry:"]
    lines.extend(f"  {line}" for line in summary_lines(data["summary"]))
    findings = data["recommendations"]
    lines.append("Recommendations:" if findings else "Recommendations: none (no rule fired)")
    lines.extend(recommendations_text(findings))
    lines.extend(user_data_lines(data))
    return "\n".join(lines)


def markdown(record: RunRecord) -> str:
    """The run as a Markdown report (``runs export --format md``)."""
    out = [
        f"# Run {record.run_id}",
        "",
        f"- Pipeline: `{record.pipeline}`",
        f"- Status: **{record.status.value}**" + (f" ({record.reason})" if record.reason else ""),
        f"- Started: {record.started_at}",
        f"- Ended: {record.ended_at or '-'}",
        f"- Duration: {format_duration(record.duration_s)}",
        f"- Host: {record.host} (pid {record.pid})",
        "",
        "## Steps",
        "",
        "| # | Step | Status | Duration | Units | Note |",
        "|---|------|--------|----------|-------|------|",
    ]
    for step in record.steps:
        units = f"{step.units_done:g}/{step.units_total:g}" if step.units_total else ""
        note = (step.reason or "").replace("|", "\\|")
        out.append(
            f"| {step.order} | {step.label} | {step.status.value} | "
            f"{format_duration(step.duration_s)} | {units} | {note} |"
        )
    out += _markdown_user_data(record)
    out += ["", "## Summary", ""]
    out += [f"- {line}" for line in summary_lines(record.summary)] or ["- (none)"]
    out += ["", "## Recommendations", ""]
    if not record.recommendations:
        out.append("None: no rule fired.")
    for f in record.recommendations:
        out.append(f"- **{f.severity.value.upper()}** `{f.rule}`: {f.message}")
        out.append(f"  - evidence: {', '.join(f'{k}={v}' for k, v in f.evidence.items())}")
        out.extend(f"  - action: {a}" for a in f.actions)
    return "\n".join(out) + "\n"


def _markdown_user_data(record: RunRecord) -> list[str]:
    out: list[str] = []
    if record.params:
        out += ["", "## Params", "", "| Name | Value |", "|------|-------|"]
        out += [
            f"| {_cell(k)} | `{_cell(json.dumps(v, ensure_ascii=False))}` |"
            for k, v in sorted(record.params.items())
        ]
    metrics = summarise_metrics(read_metrics(record.run_dir))
    if metrics:
        out += [
            "",
            "## Metrics",
            "",
            "| Metric | Last | Step | Min | Max | Points |",
            "|--------|------|------|-----|-----|--------|",
        ]
        out += [
            f"| {n} | {m['last']:.6g} | {m['last_step']} | {m['min']:.6g} | {m['max']:.6g} "
            f"| {m['count']} |"
            for n, m in metrics.items()
        ]
    if record.artifacts:
        out += ["", "## Artifacts", "", "| Name | Path | Bytes | Kind | SHA-256 |"]
        out += ["|------|------|-------|------|---------|"]
        out += [
            f"| {a.name} | {a.path} | {a.bytes} | {a.kind or ''} | `{a.sha256}` |"
            for a in record.artifacts
        ]
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _elapsed(start: str | None, end: str | None, now: datetime) -> float | None:
    if not start:
        return None
    try:
        begin = datetime.fromisoformat(start.replace("Z", "+00:00"))
        finish = datetime.fromisoformat(end.replace("Z", "+00:00")) if end else now
    except ValueError:
        return None
    return round((finish - begin.astimezone(UTC)).total_seconds(), 3)


__all__ = [
    "live_view",
    "load_samples",
    "markdown",
    "recommendations_text",
    "status_text",
    "summarise",
    "summary_lines",
    "summary_text",
    "user_data_lines",
]
