"""The physics of the simulated STM, stepped at a fixed loop rate on an injectable clock.

Tunnelling current ``I = G0 · exp(-2κ(V)·gap) · ∫₀^V ρ(E) dE`` (:mod:`atomlab.sim.stm_tunnel`:
κ ≈ 1e10 m⁻¹, a local density of states with a signature per defect kind) with preamplifier
noise and saturation; a PI Z controller on log10(|I| / setpoint) with Nanonis' gain convention
(``I gain = P / time constant``); tip motion (Follow Me and the scan raster); a lock-in
amplifier; seeded disturbances (tip changes, thermal drift, tip crashes when the gap closes);
the auto-approach and the safe-tip protection.

Time only moves when :meth:`StmPhysics.advance_to` is called with a later clock reading, so a
test drives it with a :class:`~atomlab.core.clock.FakeClock` and never sleeps.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from atomlab.sim import stm_tunnel
from atomlab.sim.stm_lockin import LockIn
from atomlab.sim.stm_scan import ScanEngine
from atomlab.sim.stm_signals import (
    BIAS,
    COUNTER_1,
    CURRENT,
    DEFAULT_SLOTS,
    LI_DEMOD_1_X,
    LI_MOD_1_AMP,
    LI_MOD_1_FREQ,
    SETPOINT,
    SETPOINT_ERROR,
    SIGNAL_NAMES,
    TEMPERATURE,
    TIME,
    X,
    Y,
    Z,
)
from atomlab.sim.stm_tunnel import G0_S, KAPPA_PER_M, LocalDos
from atomlab.surface import LATTICE_UNIT_M, Surface

CURRENT_FLOOR_A = 1e-15
CRASH_GAP_M = 1.0e-10
"""A gap below this is a tip crash."""

DEFAULT_LOOP_RATE_HZ = 1000.0
DEFAULT_ACQ_PERIOD_S = 0.02
DEFAULT_BIAS_V = 0.1
DEFAULT_SETPOINT_A = 100e-12
DEFAULT_P_GAIN_M = 3e-11
DEFAULT_TIME_CONSTANT_S = 1e-3
DEFAULT_Z_HIGH_M = 200e-9
DEFAULT_Z_LOW_M = -200e-9
HOME_Z_M = 50e-9
DEFAULT_FOLME_SPEED_M_S = 100e-9
PREAMP_NOISE_A = 1e-12
RELATIVE_NOISE = 0.01
PREAMP_GAINS = (1e6, 1e7, 1e8, 1e9, 1e10)
"""Selectable preamplifier gains in V/A; the current saturates at 10 V / gain."""
DEFAULT_GAIN_INDEX = 3
PREAMP_OUTPUT_LIMIT_V = 10.0
COARSE_STEP_XY_M = 100e-9
COARSE_STEP_Z_M = 50e-9
MAX_EVENTS = 10_000
"""The event log keeps this many of the latest events."""
MAX_CATCHUP_S = 30.0
"""Longer gaps between clock readings are fast-forwarded instead of stepped one by one."""
SAMPLE_TEMPERATURE_K = 4.3
DOS_CELL_M = 1e-10
"""The local density of states is looked up once per 0.1 nm cell the tip visits."""
APPROACH_STEP_S = 0.05
"""One auto-approach cycle: extend the Z piezo, and if no current, retract and one coarse step."""
APPROACH_MAX_STEPS = 20_000


@dataclass(frozen=True, slots=True)
class Disturbances:
    """How often things go wrong. All draws come from the simulator's seeded generator."""

    tip_change_rate_per_s: float = 1.0 / 240.0
    drift_xy_m_s: float = 5e-12
    drift_z_m_s: float = 2e-12
    crashes: bool = True

    @classmethod
    def none(cls) -> Disturbances:
        """No tip changes, no drift (crashes still happen: they are the operator's doing)."""
        return cls(tip_change_rate_per_s=0.0, drift_xy_m_s=0.0, drift_z_m_s=0.0)


@dataclass(frozen=True, slots=True)
class SimEvent:
    """Something that happened to the instrument: ``tip_change``, ``tip_crash``, ``tip_restored``,
    ``scan_started``, ``scan_finished``..."""

    t_s: float
    kind: str
    detail: str = ""


@dataclass(slots=True)
class TipState:
    """The tip apex: a healthy tip has factor 1 and no extra noise."""

    current_factor: float = 1.0
    extra_noise_a: float = 0.0
    crashed: bool = False
    in_contact: bool = False
    changes: int = 0
    crashes: int = 0

    @property
    def healthy(self) -> bool:
        return self.current_factor == 1.0 and self.extra_noise_a == 0.0 and not self.crashed


@dataclass(slots=True)
class ZController:
    """Nanonis-style PI controller state. ``GainGet`` reports I = P / T."""

    on: bool = True
    setpoint_a: float = DEFAULT_SETPOINT_A
    p_gain_m: float = DEFAULT_P_GAIN_M
    time_constant_s: float = DEFAULT_TIME_CONSTANT_S
    z_m: float = 0.0
    integrator_m: float = 0.0
    high_m: float = DEFAULT_Z_HIGH_M
    low_m: float = DEFAULT_Z_LOW_M
    switch_off_delay_s: float = 0.0
    tip_lift_m: float = 0.0
    hold: bool = False
    """On but not regulating (a spectroscopy holds Z); ``ZCtrl.StatusGet`` reports 3."""

    @property
    def i_gain(self) -> float:
        return self.p_gain_m / self.time_constant_s if self.time_constant_s > 0 else 0.0


@dataclass(slots=True)
class FollowMe:
    target: tuple[float, float] | None = None
    speed_m_s: float = DEFAULT_FOLME_SPEED_M_S
    custom_speed: bool = True


@dataclass(slots=True)
class SafeTip:
    """Nanonis' safe-tip protection: a current above the threshold withdraws the tip."""

    on: bool = False
    threshold_a: float = 5e-9
    auto_recovery: bool = False
    auto_pause_scan: bool = True
    triggered: int = 0


@dataclass(slots=True)
class Approach:
    """The auto-approach: Z piezo extends, and coarse steps follow until the current appears."""

    running: bool = False
    steps: int = 0
    next_s: float = 0.0


@dataclass(slots=True)
class DriftState:
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)
    offset: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    compensation_on: bool = False
    compensation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    saturation_limit: float = 0.1


class StmPhysics:
    """The simulated instrument's state and its time evolution.

    Piezo coordinates (x, y, z) are what the controller reports; the surface is sampled at
    ``piezo + coarse offset + drift``, with piezo (0, 0) over the centre of the surface.
    """

    def __init__(
        self,
        surface: Surface,
        *,
        seed: int = 0,
        start_s: float = 0.0,
        loop_rate_hz: float = DEFAULT_LOOP_RATE_HZ,
        acq_period_s: float = DEFAULT_ACQ_PERIOD_S,
        disturbances: Disturbances | None = None,
    ) -> None:
        self.surface = surface
        self.seed = seed
        self.rng = random.Random(f"stm:{seed}")
        self.disturbances = disturbances if disturbances is not None else Disturbances()
        self.t_s = start_s
        self._t0_s = start_s
        self._steps = 0
        self.loop_rate_hz = loop_rate_hz
        self.dt_s = 1.0 / loop_rate_hz
        self.acq_period_s = acq_period_s
        self._next_publish_s = start_s + acq_period_s
        self.published: list[float] = []
        self.published_at_s = start_s
        self.publications = 0
        """How many samples have been published (one per acquisition period)."""
        # running sums of the oversampled signals (current, Z, setpoint error) since the last
        # publication: a published value is their average over the acquisition period
        self._sum_current = 0.0
        self._sum_z = 0.0
        self._samples = 0

        self.bias_v = DEFAULT_BIAS_V
        self.z = ZController()
        self.x_m = 0.0
        self.y_m = 0.0
        self.folme = FollowMe()
        self.scan = ScanEngine()
        self.tip = TipState()
        self.drift = DriftState(velocity=self._draw_drift())
        self.gain_index = DEFAULT_GAIN_INDEX
        self.coarse_steps = [0, 0, 0]
        self.step_counters = [0, 0, 0]
        """Coarse steps made per axis since the last reset (``Motor.StepCounterGet``)."""
        self.events: deque[SimEvent] = deque(maxlen=MAX_EVENTS)
        self.current_a = 0.0
        self._was_below_crash = False
        self.slots: list[int] = list(DEFAULT_SLOTS)
        """The signal index in each of the 24 slots of the Signals Manager."""
        self.lockin = LockIn()
        self.safe_tip = SafeTip()
        self.approach = Approach()
        self.on_scan_finished: Callable[[], None] | None = None
        self.on_publish: Callable[[float, list[float]], None] | None = None
        """Called with (time, values) at every publication (the Data Logger records them)."""
        """Called when a frame completes (the Scan module saves it)."""
        self._dos_key: tuple[int, int, int] | None = None
        self._dos: LocalDos = stm_tunnel.CLEAN
        self._tunnel_key: tuple[float, int] | None = None
        self._kappa = KAPPA_PER_M
        self._n_of_v = 0.0

        self.z.z_m = self.surface_height() + self.equilibrium_gap()
        self.z.integrator_m = self.z.z_m
        self.current_a = self._measure(self.gap())
        self.published = self.signal_values()

    # ----------------------------------------------------------------- geometry
    def surface_xy(self) -> tuple[float, float]:
        """Where on the surface (metres, surface frame) the tip apex is."""
        cx = self.surface.width * LATTICE_UNIT_M / 2 + self.coarse_steps[0] * COARSE_STEP_XY_M
        cy = self.surface.height * LATTICE_UNIT_M / 2 + self.coarse_steps[1] * COARSE_STEP_XY_M
        return self.x_m + cx + self.drift.offset[0], self.y_m + cy + self.drift.offset[1]

    def surface_height(self) -> float:
        """Surface height under the tip in the piezo's z frame (coarse Z and drift included)."""
        sx, sy = self.surface_xy()
        return (
            self.surface.height_at(sx, sy)
            + self.drift.offset[2]
            - self.coarse_steps[2] * COARSE_STEP_Z_M
        )

    def gap(self) -> float:
        return self.z.z_m - self.surface_height()

    def equilibrium_gap(self) -> float:
        """The gap at which a healthy tip draws exactly the setpoint current at this bias."""
        return stm_tunnel.equilibrium_gap(self.z.setpoint_a, self.bias_v, self.local_dos())

    def local_dos(self) -> LocalDos:
        """The sample's density of states under the tip (defects within a few nm count)."""
        sx, sy = self.surface_xy()
        key = (round(sx / DOS_CELL_M), round(sy / DOS_CELL_M), self.surface.version)
        if key != self._dos_key:
            self._dos_key = key
            self._dos = self._dos_at(sx, sy)
        return self._dos

    def _dos_at(self, sx: float, sy: float) -> LocalDos:
        surface = self.surface
        w_m = surface.width * LATTICE_UNIT_M
        h_m = surface.height * LATTICE_UNIT_M
        reach_units = math.ceil(stm_tunnel.MAX_REACH_M / LATTICE_UNIT_M)
        near = surface.defects_within(
            round(sx / LATTICE_UNIT_M) % surface.width,
            round(sy / LATTICE_UNIT_M) % surface.height,
            reach_units,
        )
        pairs = []
        for defect in near:
            dx = (defect.x_m - sx + 0.5 * w_m) % w_m - 0.5 * w_m
            dy = (defect.y_m - sy + 0.5 * h_m) % h_m - 0.5 * h_m
            pairs.append((defect, math.hypot(dx, dy)))
        return stm_tunnel.local_dos(pairs)

    def ideal_current(self, gap: float, bias_v: float | None = None) -> float:
        """The noise-free current of this tip at ``gap`` (and ``bias_v``, default the bias)."""
        dos = self.local_dos()
        if bias_v is None or bias_v == self.bias_v:
            key = (self.bias_v, id(dos))
            if key != self._tunnel_key:
                self._tunnel_key = key
                self._kappa = stm_tunnel.kappa_at_bias(self.bias_v)
                self._n_of_v = dos.integral(self.bias_v)
            ideal = G0_S * math.exp(-2.0 * self._kappa * max(gap, 0.0)) * self._n_of_v
        else:
            ideal = stm_tunnel.current(bias_v, gap, dos)
        return ideal * self.tip.current_factor

    def current_noise_a(self, current_a: float) -> float:
        """Standard deviation of one current sample (one loop period)."""
        return PREAMP_NOISE_A + RELATIVE_NOISE * abs(current_a) + self.tip.extra_noise_a

    @property
    def saturation_a(self) -> float:
        return PREAMP_OUTPUT_LIMIT_V / PREAMP_GAINS[self.gain_index]

    # ----------------------------------------------------------------- time
    def advance_to(self, t_s: float) -> None:
        """Run the control loop up to clock time ``t_s`` in fixed steps of ``1 / loop_rate``."""
        span = t_s - self.t_s
        if span < self.dt_s:
            return
        if span > MAX_CATCHUP_S:
            self._fast_forward(span - MAX_CATCHUP_S)
        steps = int((t_s - self.t_s) / self.dt_s)
        step = self._step
        for _ in range(steps):
            step()

    def set_loop_rate(self, loop_rate_hz: float) -> None:
        """Change the control-loop rate (``Util.RTFreqSet``) from now on."""
        self._t0_s, self._steps = self.t_s, 0
        self.loop_rate_hz = loop_rate_hz
        self.dt_s = 1.0 / loop_rate_hz

    def _step(self) -> None:
        dt = self.dt_s
        self._steps += 1
        # time from a step count, so a long run does not accumulate rounding
        self.t_s = self._t0_s + self._steps * dt
        self._move_tip(dt)
        self._drift(dt)
        if self.disturbances.tip_change_rate_per_s > 0 and (
            self.rng.random() < self.disturbances.tip_change_rate_per_s * dt
        ):
            self.tip_change()
        if self.approach.running:
            self._approach_step()
        gap = self.gap()
        self._check_crash(gap)
        self.current_a = self._measure(gap)
        if self.safe_tip.on and abs(self.current_a) > self.safe_tip.threshold_a:
            self._safe_tip_trip()
        if self.z.on and not self.z.hold:
            self._control(dt)
        if self.scan.status_running and self.scan.advance(dt, self.signal_subset):
            self._scan_finished()
        self._sum_current += self.current_a
        self._sum_z += self.z.z_m
        self._samples += 1
        if self.t_s >= self._next_publish_s:
            self._publish()
            self._next_publish_s += self.acq_period_s
            if self._next_publish_s <= self.t_s:
                self._next_publish_s = self.t_s + self.acq_period_s

    def _publish(self) -> None:
        values = self.signal_values(self.acq_period_s)
        if self._samples:
            mean_current = self._sum_current / self._samples
            values[CURRENT] = mean_current
            values[Z] = self._sum_z / self._samples
            values[SETPOINT_ERROR] = mean_current - self._signed_setpoint()
        self.published = values
        self.published_at_s = self.t_s
        self.publications += 1
        self._sum_current = self._sum_z = 0.0
        self._samples = 0
        if self.on_publish is not None:
            self.on_publish(self.t_s, values)

    def _move_tip(self, dt: float) -> None:
        if self.scan.status_running:
            self.x_m, self.y_m = self.scan.tip_position()
            return
        target = self.folme.target
        if target is None:
            return
        dx, dy = target[0] - self.x_m, target[1] - self.y_m
        dist = math.hypot(dx, dy)
        travel = self.folme_speed() * dt
        if dist <= travel:
            self.x_m, self.y_m = target
            self.folme.target = None
        else:
            self.x_m += dx * travel / dist
            self.y_m += dy * travel / dist

    def net_drift_velocity(self) -> tuple[float, float, float]:
        """Thermal drift minus the drift compensation, when that is on (m/s)."""
        vx, vy, vz = self.drift.velocity
        if self.drift.compensation_on:
            cx, cy, cz = self.drift.compensation
            vx, vy, vz = vx - cx, vy - cy, vz - cz
        return vx, vy, vz

    def _drift(self, dt: float) -> None:
        vx, vy, vz = self.net_drift_velocity()
        offset = self.drift.offset
        offset[0] += vx * dt
        offset[1] += vy * dt
        offset[2] += vz * dt

    def _control(self, dt: float) -> None:
        z = self.z
        error = math.log10(
            max(abs(self.current_a), CURRENT_FLOOR_A) / max(abs(z.setpoint_a), CURRENT_FLOOR_A)
        )
        z.integrator_m = min(z.high_m, max(z.low_m, z.integrator_m + z.i_gain * error * dt))
        z.z_m = min(z.high_m, max(z.low_m, z.integrator_m + z.p_gain_m * error))

    def _check_crash(self, gap: float) -> None:
        below = gap < CRASH_GAP_M
        self.tip.in_contact = below
        if below and not self._was_below_crash:
            self.crash(f"gap {gap * 1e9:.3f} nm")
        self._was_below_crash = below

    def crash(self, reason: str) -> None:
        """The tip touched the surface: it is blunt and noisy until it is reshaped."""
        if not self.disturbances.crashes:
            return
        self.tip.crashed = True
        self.tip.crashes += 1
        self.tip.current_factor *= self.rng.uniform(0.05, 0.3)
        self.tip.extra_noise_a += self.rng.uniform(20e-12, 80e-12)
        self.events.append(SimEvent(self.t_s, "tip_crash", reason))

    def _measure(self, gap: float) -> float:
        true_a = self.ideal_current(gap)
        measured = true_a + self.rng.gauss(0.0, self.current_noise_a(true_a))
        limit = self.saturation_a
        return min(limit, max(-limit, measured))

    def measure_now(self) -> float:
        """A fresh current sample at the tip's present state (what ``Current.Get`` reads)."""
        self.current_a = self._measure(self.gap())
        return self.current_a

    def saturate(self, current_a: float) -> float:
        limit = self.saturation_a
        return min(limit, max(-limit, current_a))

    def _safe_tip_trip(self) -> None:
        self.safe_tip.triggered += 1
        self.events.append(SimEvent(self.t_s, "safe_tip", f"current {self.current_a:.3g} A"))
        if self.safe_tip.auto_pause_scan and self.scan.running:
            self.scan.paused = True
        self.withdraw()

    # ----------------------------------------------------------------- auto approach
    def start_approach(self) -> None:
        """Begin the auto-approach from wherever the coarse motor left the sample."""
        self.approach = Approach(running=True, next_s=self.t_s)
        self.z.on, self.z.hold = False, False
        self.events.append(SimEvent(self.t_s, "approach_started"))

    def stop_approach(self, reason: str = "stopped") -> None:
        if self.approach.running:
            self.approach.running = False
            self.events.append(SimEvent(self.t_s, "approach_" + reason))

    def _approach_step(self) -> None:
        approach = self.approach
        if self.t_s < approach.next_s:
            return
        approach.next_s = self.t_s + APPROACH_STEP_S
        # extend the piezo fully (safely, in the model): is the surface within reach?
        target = self.surface_height() + self.equilibrium_gap()
        if self.z.low_m <= target <= self.z.high_m:
            self.z.z_m = self.z.integrator_m = min(self.z.high_m, target + 5e-10)
            self.set_z_on(True)
            self.stop_approach("finished")
            return
        if target > self.z.high_m or approach.steps >= APPROACH_MAX_STEPS:
            self.stop_approach("failed")  # the sample is behind the tip: a real crash risk
            return
        # retract, then one coarse step towards the sample (Z-)
        self.z.z_m = self.z.integrator_m = self.z.high_m
        self.coarse_steps[2] -= 1
        self.step_counters[2] -= 1
        approach.steps += 1

    def _fast_forward(self, span: float) -> None:
        """Skip ``span`` seconds without stepping: drift, tip changes and whole scan lines."""
        self.t_s += span
        self._t0_s, self._steps = self.t_s, 0
        vx, vy, vz = self.net_drift_velocity()
        self.drift.offset[0] += vx * span
        self.drift.offset[1] += vy * span
        self.drift.offset[2] += vz * span
        expected = self.disturbances.tip_change_rate_per_s * span
        if expected > 0 and self.rng.random() < 1.0 - math.exp(-expected):
            self.tip_change()
        if self.scan.status_running:
            fwd, bwd = self.scan.speed.line_times(self.scan.frame.width_m)
            lines = int(span / (fwd + bwd)) if fwd + bwd > 0 else self.scan.buffer.lines
            if self.scan.skip_lines(lines, self._ideal_line):
                self._scan_finished()
        if self.folme.target is not None:
            self.x_m, self.y_m = self.folme.target
            self.folme.target = None
        if self.z.on:
            self.z.z_m = self.surface_height() + self.equilibrium_gap()
            self.z.integrator_m = self.z.z_m
        self._next_publish_s = self.t_s + self.acq_period_s
        self._sum_current = self._sum_z = 0.0
        self._samples = 0

    def _ideal_line(self, line: int, forward: bool) -> dict[int, NDArray[np.float64]]:
        """A scan line as a perfectly tracking controller would record it (fast-forward only)."""
        xs, ys = self.scan.line_path(line)
        offset_x, offset_y = self.surface_xy()
        heights = self.surface.heights(xs + offset_x - self.x_m, ys + offset_y - self.y_m)
        z = heights + self.drift.offset[2] + self.equilibrium_gap()
        values: dict[int, NDArray[np.float64]] = {}
        now = self.signal_values()
        for slot in self.scan.buffer.channels:
            signal = self.slots[slot]
            if signal == Z:
                values[slot] = z
            elif signal == CURRENT:
                values[slot] = np.full_like(z, self.z.setpoint_a)
            elif signal == X:
                values[slot] = xs
            elif signal == Y:
                values[slot] = ys
            else:
                values[slot] = np.full_like(z, now[signal])
        return values

    def _draw_drift(self) -> tuple[float, float, float]:
        d = self.disturbances

        def draw(scale: float) -> float:
            return self.rng.choice((-1.0, 1.0)) * self.rng.uniform(0.5, 1.5) * scale

        return draw(d.drift_xy_m_s), draw(d.drift_xy_m_s), draw(d.drift_z_m_s)

    # ----------------------------------------------------------------- actions
    def folme_speed(self) -> float:
        if self.folme.custom_speed:
            return self.folme.speed_m_s
        return self.scan.speed.speeds(self.scan.frame.width_m)[0]

    def tip_change(self) -> None:
        """The apex picks up or loses an atom: the current jumps by a factor and gets noisier."""
        factor = math.exp(self.rng.uniform(-1.2, 1.2))
        self.tip.current_factor *= factor
        self.tip.extra_noise_a += self.rng.uniform(3e-12, 20e-12)
        self.tip.changes += 1
        self.events.append(SimEvent(self.t_s, "tip_change", f"current x{factor:.2f}"))

    def restore_tip(self, reason: str) -> None:
        self.tip.current_factor = 1.0
        self.tip.extra_noise_a = 0.0
        self.tip.crashed = False
        self.events.append(SimEvent(self.t_s, "tip_restored", reason))

    def bias_pulse(self, pulse_v: float) -> bool:
        """A pulse of 2 V or more fixes a damaged tip half of the time. Returns True if it did."""
        if self.tip.healthy or abs(pulse_v) < 2.0:
            return False
        if self.rng.random() < 0.5:
            self.restore_tip(f"bias pulse {pulse_v:g} V")
            return True
        return False

    def set_z_on(self, on: bool) -> None:
        if on and not self.z.on:
            self.z.integrator_m = self.z.z_m  # bumpless switch-on
        self.z.on = on
        self.z.hold = False

    def withdraw(self) -> None:
        self.z.on = False
        self.z.hold = False
        self.z.z_m = self.z.high_m
        self.z.integrator_m = self.z.z_m

    def home(self) -> None:
        self.z.on = False
        self.z.hold = False
        self.z.z_m = min(self.z.high_m, max(self.z.low_m, HOME_Z_M))
        self.z.integrator_m = self.z.z_m

    def event(self, kind: str, detail: str = "") -> SimEvent:
        """A :class:`SimEvent` stamped now."""
        return SimEvent(self.t_s, kind, detail)

    def _scan_finished(self) -> None:
        self.events.append(SimEvent(self.t_s, "scan_finished"))
        if self.on_scan_finished is not None:
            self.on_scan_finished()
        if self.scan.continuous:
            self.start_scan(self.scan.direction_up != self.scan.bouncy)

    def start_scan(self, direction_up: bool) -> None:
        self.folme.target = None
        self.scan.start(direction_up)
        self.x_m, self.y_m = self.scan.start_position()
        self.events.append(SimEvent(self.t_s, "scan_started"))

    # ----------------------------------------------------------------- signals
    def signal_values(self, averaging_s: float | None = None) -> list[float]:
        """Every signal now, in :data:`SIGNAL_NAMES` order (128 values); lock-in outputs carry
        the noise left after averaging over ``averaging_s`` (default one loop period)."""
        values = [0.0] * len(SIGNAL_NAMES)
        self._fill_core(values)
        values[SETPOINT] = self.z.setpoint_a
        values[TIME] = self.t_s
        values[TEMPERATURE] = SAMPLE_TEMPERATURE_K
        values[COUNTER_1] = 0.0
        mod = self.lockin.modulator(1)
        values[LI_MOD_1_AMP] = mod.amplitude
        values[LI_MOD_1_FREQ] = mod.frequency_hz
        self._fill_lockin(values, self.dt_s if averaging_s is None else averaging_s)
        return values

    def signal_subset(self, slots: Sequence[int]) -> list[float]:
        """The values of the signals in a few slots now (what a scan records at each pixel)."""
        indexes = [self.slots[slot] for slot in slots]
        core = (CURRENT, BIAS, X, Y, Z)
        if all(i in core for i in indexes):
            values = [0.0] * len(SIGNAL_NAMES)
            self._fill_core(values)
            return [values[i] for i in indexes]
        values = self.signal_values()
        return [values[i] for i in indexes]

    def _fill_core(self, values: list[float]) -> None:
        values[CURRENT] = self.current_a
        values[BIAS] = self.bias_v
        values[Z] = self.z.z_m
        values[X] = self.x_m
        values[Y] = self.y_m
        values[SETPOINT_ERROR] = self.current_a - self._signed_setpoint()

    def _fill_lockin(self, values: list[float], averaging_s: float) -> None:
        """Demodulator outputs X and Y (or R and phase), with the noise left after averaging."""
        lockin = self.lockin
        if not any(m.on for m in lockin.modulators):
            return
        gap = self.gap()
        for n, demod in enumerate(lockin.demodulators):
            amplitude, harmonic = lockin.bias_modulation(demod)
            if amplitude == 0.0:
                continue
            r = self.demodulated(amplitude, harmonic, gap, averaging_s, demod.time_constant_s)
            phase = math.radians(demod.phase_deg)
            x, y = r * math.cos(phase), -r * math.sin(phase)
            if demod.rt_signals == 1:
                x, y = math.hypot(x, y), math.degrees(math.atan2(y, x))
            values[LI_DEMOD_1_X + 2 * n] = x
            values[LI_DEMOD_1_X + 2 * n + 1] = y

    def demodulated(
        self,
        amplitude_v: float,
        harmonic: int,
        gap: float,
        averaging_s: float,
        time_constant_s: float = 0.0,
        bias_v: float | None = None,
    ) -> float:
        """The in-phase current amplitude at ``harmonic`` of a bias modulation, with noise."""
        bias = self.bias_v if bias_v is None else bias_v
        ideal = stm_tunnel.demodulate(bias, amplitude_v, gap, self.local_dos(), harmonic)
        ideal *= self.tip.current_factor
        samples = max(1.0, max(averaging_s, time_constant_s) * self.loop_rate_hz)
        sigma = self.current_noise_a(self.ideal_current(gap, bias)) * math.sqrt(2.0 / samples)
        return ideal + self.rng.gauss(0.0, sigma)

    def _signed_setpoint(self) -> float:
        """The setpoint with the sign the current has at this bias."""
        return abs(self.z.setpoint_a) if self.bias_v >= 0 else -abs(self.z.setpoint_a)

    def snapshot(self) -> dict[str, object]:
        """A JSON-able view of the state, for logs, tests and demos."""
        return {
            "t_s": self.t_s,
            "bias_v": self.bias_v,
            "current_a": self.current_a,
            "z_m": self.z.z_m,
            "z_on": self.z.on,
            "z_hold": self.z.hold,
            "setpoint_a": self.z.setpoint_a,
            "gap_m": self.gap(),
            "x_m": self.x_m,
            "y_m": self.y_m,
            "scan_running": self.scan.status_running,
            "tip": {
                "healthy": self.tip.healthy,
                "crashed": self.tip.crashed,
                "changes": self.tip.changes,
                "crashes": self.tip.crashes,
                "current_factor": self.tip.current_factor,
            },
            "drift_offset_m": list(self.drift.offset),
            "coarse_steps": list(self.coarse_steps),
            "approach": {"running": self.approach.running, "steps": self.approach.steps},
            "surface_version": self.surface.version,
        }
