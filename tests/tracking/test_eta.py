"""The ETA: unit behaviour and its error on replayed pipeline histories."""

from __future__ import annotations

import random
import statistics

import pytest

from atomlab.tracking import StepRecord, StepStatus, estimate_remaining, format_duration

PRIORS = {
    "train_expert": 1800.0,
    "collect": 900.0,
    "bc": 600.0,
    "finetune": 1200.0,
    "compare": 300.0,
}


def steps_at(done: dict[str, float], running: str | None = None, units: tuple = (None, 0)):
    records = []
    for order, (name, prior) in enumerate(PRIORS.items(), start=1):
        record = StepRecord(name=name, order=order, expected_s=prior)
        if name in done:
            record.status, record.duration_s = StepStatus.COMPLETED, done[name]
        elif name == running:
            record.status = StepStatus.RUNNING
            record.units_total, record.units_done = units
        records.append(record)
    return records


def test_no_history_uses_declared_priors_with_a_wide_band():
    eta = estimate_remaining(steps_at({}))
    assert eta.remaining_s == pytest.approx(4800)
    assert eta.low_s == pytest.approx(2400) and eta.high_s == pytest.approx(7200)
    assert eta.basis == "priors"


def test_pace_scales_the_remaining_priors():
    eta = estimate_remaining(steps_at({"train_expert": 3600}))  # twice as slow as declared
    assert eta.remaining_s == pytest.approx(2 * 3000)
    assert eta.basis == "priors+pace"


def test_running_step_subtracts_elapsed_and_uses_in_step_progress():
    no_progress = estimate_remaining(steps_at({}, "train_expert"), current_elapsed_s=600)
    assert no_progress.remaining_s == pytest.approx(4800 - 600)
    # 10% done after 600 s means 5400 s left in the step by rate; blended with the prior.
    slow = estimate_remaining(steps_at({}, "train_expert", (100, 10)), current_elapsed_s=600)
    assert slow.remaining_s > no_progress.remaining_s
    overrun = estimate_remaining(steps_at({}, "train_expert"), current_elapsed_s=2400)
    assert overrun.remaining_s == pytest.approx(600 + 3000)  # 25% of elapsed, not zero


def test_skipped_step_leaves_the_eta():
    records = steps_at({})
    records[4].status = StepStatus.SKIPPED
    assert estimate_remaining(records).remaining_s == pytest.approx(4500)


def test_unknown_priors_and_no_history_give_no_eta():
    records = [StepRecord(name="a", order=1), StepRecord(name="b", order=2)]
    assert estimate_remaining(records).remaining_s is None
    records[0].status = StepStatus.RUNNING
    records[0].units_total, records[0].units_done = 10, 5
    records[1].status = StepStatus.SKIPPED
    eta = estimate_remaining(records, current_elapsed_s=30)
    assert eta.remaining_s == pytest.approx(30) and eta.basis == "progress"


def test_all_done_is_zero():
    eta = estimate_remaining(steps_at(dict(PRIORS)))
    assert eta.remaining_s == 0 and eta.basis == "done"


def test_format_duration():
    assert [format_duration(v) for v in (None, 3, 124, 3720)] == ["--", "3s", "2m04s", "1h02m"]


def replay(
    seed: int,
    runs: int = 100,
    structure_sd: float = 0.5,
    speed_sd: float = 0.5,
    noise_sd: float = 0.15,
) -> tuple[list[float], list[float]]:
    """Simulated pipeline histories (as in docs/tracking.md): the declared priors are off by a
    per-step structure factor, every run has its own speed, every step its own noise. For each
    run after the fifth, estimate the remaining time right after step 2 from the five runs
    before it; return the relative errors of our estimate and of static priors."""
    rng = random.Random(seed)
    structure = {n: rng.lognormvariate(0, structure_sd) for n in PRIORS}
    history: list[dict[str, float]] = []
    ours, static = [], []
    for _ in range(runs):
        speed = rng.lognormvariate(0, speed_sd)
        actual = {
            n: p * structure[n] * speed * rng.lognormvariate(0, noise_sd) for n, p in PRIORS.items()
        }
        if len(history) >= 5:
            names = list(PRIORS)
            done = {n: actual[n] for n in names[:2]}
            truth = sum(actual[n] for n in names[2:])
            estimate = estimate_remaining(steps_at(done), history=history[-5:]).remaining_s
            ours.append(abs(estimate - truth) / truth)
            static.append(abs(sum(PRIORS[n] for n in names[2:]) - truth) / truth)
        history.append(actual)
    return ours, static


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_eta_error_on_replayed_histories_after_step_two(seed):
    ours, static = replay(seed)
    median_ours, median_static = statistics.median(ours), statistics.median(static)
    within_20 = sum(e <= 0.20 for e in ours) / len(ours)
    print(
        f"seed {seed}: median error {median_ours:.1%} (static priors {median_static:.1%}), "
        f"{within_20:.0%} within ±20%"
    )
    assert median_ours <= 0.15
    assert within_20 >= 0.65
    assert median_ours < median_static / 2


def test_step_without_any_estimate_borrows_the_average_known_one():
    records = [
        StepRecord(name="a", order=1, expected_s=30, status=StepStatus.COMPLETED, duration_s=60),
        StepRecord(name="b", order=2, expected_s=10),
        StepRecord(name="c", order=3),
    ]
    eta = estimate_remaining(records)
    assert eta.remaining_s == pytest.approx(20 + 20)  # b: 10 s x pace 2; c: the average, 20 s


def test_no_priors_no_history_uses_the_average_completed_step():
    records = [StepRecord(name=n, order=i) for i, n in enumerate("abcd", start=1)]
    records[0].status, records[0].duration_s = StepStatus.COMPLETED, 10.0
    records[1].status, records[1].duration_s = StepStatus.COMPLETED, 30.0
    records[2].status = StepStatus.RUNNING
    eta = estimate_remaining(records, current_elapsed_s=5)
    assert eta.remaining_s == pytest.approx(15 + 20) and eta.basis == "average-step"
