"""The simulated STM's physics, stepped directly (no sockets, no sleeping)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atomlab.sim import CRASH_GAP_M, KAPPA_PER_M, Disturbances, StmPhysics, stm_tunnel
from atomlab.sim.stm_tunnel import G0_S
from atomlab.surface import Defect, DefectKind, Surface


def quiet(surface: Surface | None = None, seed: int = 0) -> StmPhysics:
    return StmPhysics(
        surface or Surface.generate(0, n_defects=0), seed=seed, disturbances=Disturbances.none()
    )


def mean_current(physics: StmPhysics, seconds: float) -> float:
    samples = []
    t = physics.t_s
    for k in range(1, int(seconds * physics.loop_rate_hz) + 1):
        physics.advance_to(t + k * physics.dt_s + 1e-9)
        samples.append(physics.current_a)
    return float(np.mean(samples))


def test_current_follows_the_tunnelling_model() -> None:
    """I = G0 · exp(-2κ(V)·gap) · ∫ρ: on the clean surface at 0.1 V within 10 % of the ohmic
    G0 · V · exp(-2κ·gap) (the barrier lowered by V/2 makes it a little larger)."""
    physics = quiet()
    physics.set_z_on(False)
    gap = physics.gap()
    measured = mean_current(physics, 1.0)
    assert measured == pytest.approx(stm_tunnel.current(physics.bias_v, gap), rel=0.02)
    ohmic = G0_S * physics.bias_v * math.exp(-2 * KAPPA_PER_M * gap)
    assert measured == pytest.approx(ohmic, rel=0.10) and measured > ohmic


def test_retracting_by_one_angstrom_divides_the_current_by_e_squared() -> None:
    physics = quiet()
    physics.set_z_on(False)
    near = mean_current(physics, 1.0)
    physics.z.z_m += 1e-10
    far = mean_current(physics, 1.0)
    assert near / far == pytest.approx(math.exp(2.0), rel=0.03)


def test_current_is_noisy_but_not_wildly() -> None:
    physics = quiet()
    physics.set_z_on(False)
    samples = []
    for k in range(1, 500):
        physics.advance_to(k * physics.dt_s + 1e-9)
        samples.append(physics.current_a)
    spread = float(np.std(samples))
    assert 0.3e-12 < spread < 5e-12


def test_z_controller_holds_the_setpoint_and_follows_a_step_edge_up() -> None:
    physics = quiet()
    physics.advance_to(0.5)
    z_before = physics.z.z_m
    assert mean_current(physics, 0.5) == pytest.approx(physics.z.setpoint_a, rel=0.05)
    physics.folme.target = (15e-9, 0.0)  # crosses the step at surface x = 33.3 nm
    physics.advance_to(physics.t_s + 1.0)
    assert physics.x_m == 15e-9
    assert physics.z.z_m - z_before == pytest.approx(
        physics.surface.lattice.step_height_m, abs=0.2e-10
    )
    assert mean_current(physics, 0.3) == pytest.approx(physics.z.setpoint_a, rel=0.05)


def test_ten_times_the_setpoint_brings_the_tip_closer_by_ln10_over_2kappa() -> None:
    physics = quiet()
    physics.advance_to(0.5)
    z_before = physics.z.z_m
    physics.z.setpoint_a *= 10
    physics.advance_to(1.0)
    assert z_before - physics.z.z_m == pytest.approx(math.log(10) / (2 * KAPPA_PER_M), rel=0.05)


def test_closing_the_gap_crashes_the_tip_until_it_is_reshaped() -> None:
    physics = quiet()
    physics.set_z_on(False)
    physics.z.z_m = physics.surface_height() + 0.5 * CRASH_GAP_M
    physics.advance_to(0.01)
    assert physics.tip.crashed and physics.tip.crashes == 1
    assert abs(physics.current_a) == pytest.approx(physics.saturation_a)
    assert [e.kind for e in physics.events] == ["tip_crash"]
    physics.restore_tip("test")
    assert physics.tip.healthy


def test_a_tip_change_shifts_z_by_the_log_of_the_current_factor() -> None:
    physics = quiet(seed=3)
    physics.advance_to(0.5)
    z_before = physics.z.z_m
    physics.tip_change()
    factor = physics.tip.current_factor
    physics.advance_to(1.5)
    shift = math.log(factor) / (2 * KAPPA_PER_M)
    assert physics.z.z_m - z_before == pytest.approx(shift, abs=3e-12)
    assert physics.events[-1].kind == "tip_change"


def test_seeded_tip_changes_happen_at_their_rate() -> None:
    physics = StmPhysics(
        Surface.generate(0, n_defects=0),
        seed=1,
        disturbances=Disturbances(tip_change_rate_per_s=2.0, drift_xy_m_s=0, drift_z_m_s=0),
    )
    physics.advance_to(10.0)
    assert 5 <= physics.tip.changes <= 40
    assert not physics.tip.healthy


def test_drift_moves_the_sample_linearly_and_compensation_cancels_it() -> None:
    physics = StmPhysics(Surface.generate(0), seed=4)
    vx, vy, vz = physics.drift.velocity
    assert vx != 0 and vy != 0 and vz != 0
    physics.advance_to(10.0)
    assert physics.drift.offset == pytest.approx([vx * 10, vy * 10, vz * 10], rel=1e-6)
    physics.drift.compensation_on = True
    physics.drift.compensation = (vx, vy, vz)
    before = list(physics.drift.offset)
    physics.advance_to(20.0)
    assert physics.drift.offset == pytest.approx(before, abs=1e-18)


def test_the_same_seed_gives_the_same_history() -> None:
    def run(seed: int) -> dict[str, object]:
        physics = StmPhysics(
            Surface.generate(seed),
            seed=seed,
            disturbances=Disturbances(tip_change_rate_per_s=1.0),
        )
        physics.advance_to(5.0)
        return physics.snapshot()

    assert run(7) == run(7)
    assert run(7) != run(8)


def scan_peak(physics: StmPhysics) -> tuple[float, tuple[int, int]]:
    physics.scan.buffer.pixels = 32
    physics.scan.buffer.lines = 16
    physics.scan.frame.width_m = physics.scan.frame.height_m = 4e-9
    physics.start_scan(direction_up=True)
    physics.advance_to(physics.t_s + 5.0)
    assert not physics.scan.running and physics.scan.scans_finished >= 1
    image = physics.scan.images[(2, True)]
    assert not np.isnan(image).any()
    peak = float(image.max() - np.median(image))
    row, col = np.unravel_index(int(np.argmax(image)), image.shape)
    return peak, (int(row), int(col))


def test_a_scan_images_an_adatom_and_a_rescan_after_repair_does_not() -> None:
    clean = Surface.generate(0, n_defects=0)
    surface = Surface(clean.lattice, [Defect(1, DefectKind.ADATOM, 249, 249, 10)])
    physics = quiet(surface)
    peak, (row, col) = scan_peak(physics)
    assert peak > 1.0e-10
    assert abs(row - 7.5) <= 2 and abs(col - 15.5) <= 3
    surface.remove_defect(1)
    physics.z.z_m = physics.surface_height() + physics.equilibrium_gap()
    peak_after, _ = scan_peak(physics)
    assert peak_after < 0.3e-10


def test_a_long_clock_jump_is_fast_forwarded_and_finishes_the_scan() -> None:
    physics = quiet(Surface.generate(0))
    physics.scan.buffer.pixels, physics.scan.buffer.lines = 16, 64
    physics.start_scan(direction_up=False)
    physics.advance_to(3600.0)
    assert physics.scan.scans_finished == 1
    assert np.isfinite(physics.scan.images[(2, False)]).all()
    assert physics.t_s == pytest.approx(3600.0, abs=physics.dt_s)


def test_published_signals_are_averaged_over_the_acquisition_period() -> None:
    physics = quiet()
    physics.set_z_on(False)
    instantaneous, published = [], []
    period_steps = round(physics.acq_period_s * physics.loop_rate_hz)
    for k in range(1, 60 * period_steps + 1):
        physics.advance_to(k * physics.dt_s + 1e-9)
        instantaneous.append(physics.current_a)
        if k % period_steps == 0:
            published.append(physics.published[0])
    assert np.mean(published) == pytest.approx(np.mean(instantaneous), rel=0.01)
    assert np.std(published) < 0.5 * np.std(instantaneous)


def test_drift_compensation_also_holds_across_a_fast_forward() -> None:
    physics = StmPhysics(Surface.generate(0), seed=4)
    physics.drift.compensation_on = True
    physics.drift.compensation = physics.drift.velocity
    physics.advance_to(500.0)
    assert physics.drift.offset == pytest.approx([0.0, 0.0, 0.0], abs=1e-18)


def test_far_too_much_gain_makes_the_loop_oscillate_into_a_crash() -> None:
    physics = quiet()
    physics.z.p_gain_m = 3e-10  # loop gain > 2: unstable
    physics.advance_to(1.0)
    assert physics.tip.crashes >= 1


def test_zero_bias_with_the_controller_on_drives_the_tip_into_the_surface() -> None:
    physics = quiet()
    physics.bias_v = 0.0
    physics.advance_to(1.0)
    assert physics.tip.crashes == 1 and physics.tip.in_contact


def test_the_snapshot_is_json() -> None:
    import json

    physics = quiet()
    physics.advance_to(0.1)
    assert json.loads(json.dumps(physics.snapshot()))["z_on"] is True
