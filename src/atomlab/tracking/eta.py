"""Time left in a pipeline run, from the pipeline's past runs, this run's pace and in-step progress.

The algorithm (documented with its measured error in docs/tracking.md):

1. **Scaled priors.** For every past completed run ``r`` of the same pipeline (the last five), the
   pace of this run relative to ``r`` is ``pace_r = sum(actual of steps done here) /
   sum(r's durations of those steps)`` (1 when nothing is done yet). Each remaining step ``j``
   gets the estimate ``p_j = median_r(d_rj * pace_r)``. A slow machine, a bigger config or a
   busy host shows up in ``pace_r`` after the first step, while the *shape* of the pipeline
   (which step is long) comes from history. Steps without history use their declared
   ``expected_s`` times the pace measured against declared priors.
2. **The current step.** With elapsed ``e`` and in-step progress ``f`` (from ``advance``), the
   progress rate gives ``e * (1 - f) / f``, the prior gives ``max(p - e, 0)``; they are blended
   with weight ``sqrt(f)`` for the rate. Without progress only the prior counts; a step that
   overruns its prior is given ``RUNOVER_SHARE`` of its elapsed time again.
3. **Skipped steps** count zero and leave N. A pending step with neither history nor a declared
   prior is assumed to last as long as the average step that has an estimate; with no priors
   and no history at all, as long as the average step completed so far in this run.
4. **Band.** The same sum for each past run alone gives the spread; without history the band
   is ``±NO_HISTORY_BAND`` of the estimate.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from atomlab.tracking.models import EtaEstimate, StepRecord, StepStatus

RUNOVER_SHARE = 0.25
NO_HISTORY_BAND = 0.5
PACE_LIMITS = (0.05, 20.0)

StepHistory = Sequence[Mapping[str, float]]


def estimate_remaining(
    steps: Sequence[StepRecord],
    *,
    history: StepHistory = (),
    current_elapsed_s: float | None = None,
) -> EtaEstimate:
    """Seconds left for ``steps`` (one run's step records) with a band and its basis.

    ``history`` holds, per past completed run of the pipeline, ``{step name: duration_s}``.
    ``current_elapsed_s`` is how long the running step has run so far.
    """
    done = [s for s in steps if s.status is StepStatus.COMPLETED and s.duration_s is not None]
    left = [s for s in steps if s.status in (StepStatus.PENDING, StepStatus.RUNNING)]
    if not left:
        return EtaEstimate(remaining_s=0.0, low_s=0.0, high_s=0.0, basis="done")
    per_run = _per_run_estimates(done, left, history)
    static = _static_estimates(done, left)
    if per_run:
        basis = "history" + ("+pace" if done else "")
    elif static is not None:
        basis = "priors" + ("+pace" if done else "")
    elif done:
        # Nothing declared and no history: every step left is assumed to be an average step.
        average = sum(s.duration_s or 0.0 for s in done) / len(done)
        static = {s.name: average for s in left}
        basis = "average-step"
    else:
        basis = "progress"
    totals: list[float] = []
    for candidate in per_run or ([static] if static is not None else [{}]):
        total = _sum_remaining(left, candidate, current_elapsed_s)
        if total is None:
            return EtaEstimate(basis="none")
        totals.append(total)
    if per_run:
        remaining = _sum_remaining(left, _median_of(per_run), current_elapsed_s)
        assert remaining is not None
        low, high = min(totals), max(totals)
    else:
        remaining = totals[0]
        low, high = remaining * (1 - NO_HISTORY_BAND), remaining * (1 + NO_HISTORY_BAND)
    return EtaEstimate(
        remaining_s=round(remaining, 3),
        low_s=round(min(low, remaining), 3),
        high_s=round(max(high, remaining), 3),
        basis=basis,
    )


def _per_run_estimates(
    done: Sequence[StepRecord], left: Sequence[StepRecord], history: StepHistory
) -> list[dict[str, float]]:
    """One ``{step: scaled duration}`` per usable past run (covers done and left steps)."""
    estimates: list[dict[str, float]] = []
    actual = sum(s.duration_s or 0.0 for s in done)
    for past in history:
        if not all(s.name in past for s in done) or not any(s.name in past for s in left):
            continue
        reference = sum(past[s.name] for s in done)
        pace = _clamp(actual / reference) if done and reference > 0 else 1.0
        estimates.append({s.name: past[s.name] * pace for s in left if s.name in past})
    if not estimates:
        return []
    # Steps no past run knows fall back to their declared prior scaled by the static pace.
    static = _static_estimates(done, left) or {}
    for estimate in estimates:
        for step in left:
            if step.name not in estimate and step.name in static:
                estimate[step.name] = static[step.name]
    return estimates


def _static_estimates(
    done: Sequence[StepRecord], left: Sequence[StepRecord]
) -> dict[str, float] | None:
    """Declared priors scaled by this run's pace against them; None when no prior is declared."""
    with_prior = [s for s in done if s.expected_s]
    pace = 1.0
    if with_prior:
        pace = _clamp(
            sum(s.duration_s or 0.0 for s in with_prior)
            / sum(s.expected_s or 0.0 for s in with_prior)
        )
    priors = {s.name: s.expected_s * pace for s in left if s.expected_s}
    if not priors:
        return None
    return priors


def _sum_remaining(
    left: Sequence[StepRecord], estimate: Mapping[str, float], current_elapsed_s: float | None
) -> float | None:
    known = [v for v in estimate.values() if v > 0]
    # A step nobody knows anything about is assumed to be as long as the average known one.
    stand_in = sum(known) / len(known) if known else None
    total = 0.0
    for step in left:
        prior = estimate.get(step.name)
        if step.status is StepStatus.RUNNING:
            part = _current_step_remaining(step, prior, current_elapsed_s or 0.0)
        else:
            part = prior if prior is not None else stand_in
        if part is None:
            return None
        total += part
    return total


def _current_step_remaining(step: StepRecord, prior: float | None, elapsed: float) -> float | None:
    fraction = step.fraction
    by_rate = None
    if fraction is not None and fraction > 0 and elapsed > 0:
        by_rate = elapsed * (1 - fraction) / fraction
    by_prior = None
    if prior is not None:
        by_prior = prior - elapsed if elapsed < prior else RUNOVER_SHARE * elapsed
    if by_rate is None:
        return by_prior
    if by_prior is None:
        return by_rate
    weight = math.sqrt(fraction or 0.0)
    return weight * by_rate + (1 - weight) * by_prior


def _median_of(estimates: Sequence[Mapping[str, float]]) -> dict[str, float]:
    names = {name for estimate in estimates for name in estimate}
    return {
        name: statistics.median(e[name] for e in estimates if name in e) for name in sorted(names)
    }


def _clamp(pace: float) -> float:
    low, high = PACE_LIMITS
    return min(max(pace, low), high)


def format_duration(seconds: float | None) -> str:
    """``3s``, ``2m04s``, ``1h02m`` or ``--`` when unknown."""
    if seconds is None or math.isnan(seconds):
        return "--"
    total = round(max(seconds, 0.0))
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    return f"{total // 3600}h{(total % 3600) // 60:02d}m"


__all__ = ["NO_HISTORY_BAND", "RUNOVER_SHARE", "estimate_remaining", "format_duration"]
