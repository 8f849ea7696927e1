"""The simulated spectroscopy and sweeper modules: BiasSpectr, ZSpectr, GenSwp and BiasSwp.

A sweep steps a signal (the bias, Z, a lock-in setting...) through its points; at each point it
waits the settling time, then averages the recorded channels over the integration time. The
reply of ``Start`` comes when the sweep is done (in simulated time: a fake clock makes it
instant), with the data as rows of channels (the swept signal first) and columns of points;
backward sweeps add ``[bwd]`` channels; several sweeps are averaged.

Physics: by default the Z controller holds Z during a bias sweep (``BiasSpectr.AdvPropsSet``),
so the spectrum is ``I(V)`` at the constant height set by the feedback before the sweep, which
is what scanning tunnelling spectroscopy measures; with the lock-in modulating the bias, "LI
Demod 1 X" is about the modulation amplitude times dI/dV (:mod:`atomlab.sim.stm_tunnel` gives
each defect kind its own dI/dV signature). A Z spectrum's ``ln I`` falls by 2κ per metre, so
its slope gives the barrier height back. Thermal drift keeps moving the sample during a
sweep. Without the hold, the controller keeps the current constant and a sweep through 0 V
drives the tip into the surface, as it would on a real instrument.

Spectra are saved as ``.dat`` files in the session folder when autosave is on.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from atomlab.sim import stm_tunnel
from atomlab.sim.stm_files import next_path, write_dat
from atomlab.sim.stm_physics import CRASH_GAP_M, SAMPLE_TEMPERATURE_K
from atomlab.sim.stm_routes import (
    Args,
    CommandRefusedError,
    HandlerBase,
    Values,
    choice,
    finite,
    handles,
    non_negative,
    positive,
    tristate,
)
from atomlab.sim.stm_signals import (
    BIAS,
    CURRENT,
    LI_DEMOD_1_X,
    LI_DEMODULATORS,
    MEASUREMENT_CHANNELS,
    MEASUREMENT_SIGNALS,
    N_SIGNALS,
    SIGNAL_NAMES,
    Z,
)

MAX_POINTS: Final = 100_000
MAX_CHANNELS: Final = 24
MAX_SWEEPS: Final = 1_000
MAX_SWEEP_S: Final = 3_600.0
"""A sweep that would take longer is refused (it would hold the connection for hours)."""
STOP_POLL_S: Final = 0.05
BIAS_LIMIT_V: Final = 10.0
GENSWP_SIGNALS: Final = (
    "Bias (V)",
    "Z (m)",
    "Z Ctrl Setpoint (A)",
    "LI Mod 1 Amp (V)",
    "LI Mod 1 Freq (Hz)",
)
BIAS_FIXED_PARAMETERS: Final = ("Sweep Start (V)", "Sweep End (V)")
Z_FIXED_PARAMETERS: Final = ("Z offset (m)", "Z sweep distance (m)")
PARAMETERS: Final = (
    "X (m)",
    "Y (m)",
    "Z (m)",
    "Bias (V)",
    "Settling time (s)",
    "Integration time (s)",
    "Number of sweeps",
    "Temperature 1 (K)",
)


@dataclass(slots=True)
class Timing:
    """The timing shared by the spectroscopy modules (seconds; slew in units per second)."""

    z_averaging_s: float = 0.1
    initial_settling_s: float = 0.002
    max_slew_per_s: float = 10.0
    settling_s: float = 0.002
    integration_s: float = 0.01
    end_settling_s: float = 0.002
    z_control_s: float = 0.1


@dataclass(slots=True)
class SpectrumSettings:
    """One spectroscopy module's settings (BiasSpectr or ZSpectr)."""

    channels: list[int] = field(default_factory=lambda: [CURRENT])
    """Recorded signals (``ChsSet``), as indexes of the 128 signals (0: the current)."""
    points: int = 256
    sweeps: int = 1
    backward: bool = False
    save_all: bool = False
    autosave: bool = True
    save_dialog: bool = False
    basename: str = ""
    timing: Timing = field(default_factory=Timing)
    lockin_run: bool = False
    record_final_z: bool = False
    ttl: tuple[int, int, float, float] = (0, 0, 0.0, 0.0)
    pulse_seq: tuple[int, int] = (0, 0)
    dig_sync: int = 0


@dataclass(slots=True)
class BiasSettings(SpectrumSettings):
    start_v: float = -1.0
    end_v: float = 1.0
    z_offset_m: float = 0.0
    reset_bias: bool = True
    z_hold: bool = True
    z_offset_revert: bool = True
    alt_setpoint: tuple[int, float, float] = (0, 1e-10, 0.2)
    mls_mode: str = "Linear"
    mls_lockin_per_segment: int = 0
    mls_segments: list[tuple[float, float, float, float, float, int, int]] = field(
        default_factory=list
    )


@dataclass(slots=True)
class ZSettings(SpectrumSettings):
    z_offset_m: float = 0.0
    z_distance_m: float = 1e-9
    time_between_s: float = 0.0
    reset_z: bool = True
    retract_delay_s: float = 0.0
    retract: tuple[bool, float, int, int] = (False, 1e-8, CURRENT, 0)
    """Auto retract: (on, threshold, signal index, comparison 0 '>' / 1 '<')."""
    retract_second: tuple[int, float, int, int] = (0, 1e-8, CURRENT, 0)


@dataclass(slots=True)
class SweeperSettings:
    """The Generic Sweeper (GenSwp) and the Bias Sweep module (BiasSwp)."""

    signal: str = "Bias (V)"
    lower: float = -1.0
    upper: float = 1.0
    steps: int = 64
    initial_settling_s: float = 0.01
    settling_s: float = 0.002
    period_s: float = 0.01
    max_slew_per_s: float = 10.0
    autosave: bool = True
    save_dialog: bool = False
    basename: str = ""
    channels: list[int] = field(default_factory=lambda: [0])
    """Measurement channel indexes (``Signals.MeasNamesGet``)."""


@dataclass
class _Run:
    """A sweep being taken: the module and whether it was asked to stop."""

    module: str
    stop: bool = False


class SpectroscopyHandlers(HandlerBase):
    """BiasSpectr.*, ZSpectr.*, GenSwp.*, BiasSwp.*."""

    def __init__(self) -> None:
        save = self._session_dir is not None  # no session folder: no files unless asked
        self.bias_spectr = BiasSettings(autosave=save)
        self.z_spectr = ZSettings(autosave=save)
        self.gen_swp = SweeperSettings(autosave=save)
        self.bias_swp = SweeperSettings(steps=64, autosave=save)
        self._running: _Run | None = None
        self.saved_spectra: list[Path] = []

    # ================================================================ shared machinery
    def _check_idle(self, module: str) -> None:
        if self._running is not None:
            raise CommandRefusedError(
                f"a {self._running.module} sweep is running; wait for it or stop it first"
            )

    def _status(self, module: str) -> int:
        return int(self._running is not None and self._running.module == module)

    def _stop(self, module: str) -> Values:
        if self._running is not None and self._running.module == module:
            self._running.stop = True
        return {}

    async def _wait_sweep(self, run: _Run, duration_s: float) -> float:
        """Wait out a sweep, polling for a stop; the seconds actually taken."""
        start = self.clock.monotonic()
        end = start + duration_s
        while not run.stop:
            now = self.clock.monotonic()
            if now >= end:
                break
            await self._sleep_until(min(end, now + STOP_POLL_S))
        return self.clock.monotonic() - start

    def _point(
        self,
        signals: Sequence[int],
        *,
        bias_v: float,
        gap_m: float,
        z_m: float,
        averaging_s: float,
        lockin_forced: bool,
    ) -> list[float]:
        """The recorded signals at one sweep point, averaged over ``averaging_s``."""
        physics = self.physics
        now = physics.signal_values()
        samples = max(1.0, averaging_s * physics.loop_rate_hz)
        ideal = physics.saturate(physics.ideal_current(gap_m, bias_v))
        out: list[float] = []
        for index in signals:
            if index == CURRENT:
                sigma = physics.current_noise_a(ideal) / math.sqrt(samples)
                out.append(physics.saturate(ideal + physics.rng.gauss(0.0, sigma)))
            elif index == BIAS:
                out.append(bias_v)
            elif index == Z:
                out.append(z_m)
            elif LI_DEMOD_1_X <= index < LI_DEMOD_1_X + 2 * LI_DEMODULATORS:
                out.append(self._lockin_point(index, bias_v, gap_m, averaging_s, lockin_forced))
            else:
                out.append(now[index])
        return out

    def _lockin_point(
        self, index: int, bias_v: float, gap_m: float, averaging_s: float, forced: bool
    ) -> float:
        lockin = self.physics.lockin
        n, quadrature = divmod(index - LI_DEMOD_1_X, 2)
        demod = lockin.demodulators[n]
        mod = lockin.modulators[demod.phase_register - 1]
        was_on = mod.on
        if forced:
            mod.on = True
        try:
            amplitude, harmonic = lockin.bias_modulation(demod)
        finally:
            mod.on = was_on
        if amplitude == 0.0:
            return 0.0
        r = self.physics.demodulated(
            amplitude, harmonic, gap_m, averaging_s, demod.time_constant_s, bias_v
        )
        phase = math.radians(demod.phase_deg)
        return -r * math.sin(phase) if quadrature else r * math.cos(phase)

    def _gap_at(self, gap0: float, elapsed_s: float) -> float:
        """The gap with the controller holding Z, ``elapsed_s`` after the sweep began."""
        vz = self.physics.net_drift_velocity()[2]
        return gap0 - vz * elapsed_s  # the sample drifting up closes the gap

    def _parameters(self, settings: SpectrumSettings, z_m: float) -> list[float]:
        physics = self.physics
        return [
            physics.x_m,
            physics.y_m,
            z_m,
            physics.bias_v,
            settings.timing.settling_s,
            settings.timing.integration_s,
            float(settings.sweeps),
            SAMPLE_TEMPERATURE_K,
        ]

    def _save(
        self,
        settings: SpectrumSettings | SweeperSettings,
        default_base: str,
        experiment: str,
        header: dict[str, str],
        names: Sequence[str],
        rows: Sequence[Sequence[float]],
    ) -> Path | None:
        if not settings.autosave:
            return None
        base = settings.basename or default_base
        path = next_path(self.session_dir, base, ".dat", 5)
        try:
            write_dat(
                path,
                experiment=experiment,
                when=datetime.now(UTC),
                header=header,
                columns=list(zip(names, rows, strict=True)),
            )
        except OSError as exc:
            self.physics.events.append(self.physics.event("save_failed", str(exc)))
            return None
        self.saved_spectra.append(path)
        return path

    @staticmethod
    def _basename(value: str) -> str:
        if any(c in value for c in '/\\:*?"<>|') or value in (".", ".."):
            raise CommandRefusedError(f"save_base_name {value!r} is not a valid file name")
        return value

    @staticmethod
    def _channels(value: Sequence[int], limit: int, what: str) -> list[int]:
        channels = list(value)
        if len(set(channels)) != len(channels) or len(channels) > MAX_CHANNELS:
            raise CommandRefusedError(
                f"channel_indexes = {channels} must be up to {MAX_CHANNELS} distinct {what}"
            )
        for ch in channels:
            choice(f"channel index ({what})", ch, range(limit))
        return channels

    @staticmethod
    def _sweep_rows(
        points: Sequence[float],
        per_point: Callable[[int, float, float], list[float]],
        *,
        sweeps: int,
        backward: bool,
        time_per_point_s: float,
        start_s: float,
        n_channels: int,
    ) -> tuple[list[list[float]], list[list[float]], float]:
        """Run ``per_point(k, value, t)`` over the sweep; averaged forward and backward rows."""
        fwd = [[0.0] * len(points) for _ in range(n_channels)]
        bwd = [[0.0] * len(points) for _ in range(n_channels)]
        t = start_s
        for _ in range(sweeps):
            for direction, rows in ((1, fwd), (-1, bwd)):
                if direction == -1 and not backward:
                    continue
                order = range(len(points)) if direction == 1 else range(len(points) - 1, -1, -1)
                for k in order:
                    t += time_per_point_s
                    values = per_point(k, points[k], t)
                    for c in range(n_channels):
                        rows[c][k] += values[c] / sweeps
        return fwd, bwd, t

    # ================================================================ BiasSpectr
    @handles("BiasSpectr.Open")
    def bias_spectr_open(self, a: Args) -> Values:
        return {}

    @handles("BiasSpectr.StatusGet")
    def bias_spectr_status_get(self, a: Args) -> Values:
        return {"status": self._status("BiasSpectr")}

    @handles("BiasSpectr.Stop")
    def bias_spectr_stop(self, a: Args) -> Values:
        return self._stop("BiasSpectr")

    @handles("BiasSpectr.ChsSet")
    def bias_spectr_chs_set(self, a: Args) -> Values:
        channels = self._channels(a["channel_indexes"], N_SIGNALS, "signals 0..127")
        if not channels:
            raise CommandRefusedError("record at least one channel")
        self.bias_spectr.channels = channels
        return {}

    @handles("BiasSpectr.ChsGet")
    def bias_spectr_chs_get(self, a: Args) -> Values:
        channels = self.bias_spectr.channels
        return {
            "channel_indexes": list(channels),
            "channels": [SIGNAL_NAMES[s] for s in channels],
        }

    @handles("BiasSpectr.PropsSet")
    def bias_spectr_props_set(self, a: Args) -> Values:
        b = self.bias_spectr
        sweeps, points = a["number_of_sweeps"], a["number_of_points"]
        if not 0 <= sweeps <= MAX_SWEEPS or not (points == 0 or 2 <= points <= MAX_POINTS):
            raise CommandRefusedError(
                f"number_of_sweeps = {sweeps} (0..{MAX_SWEEPS}) or number_of_points = {points} "
                f"(0 or 2..{MAX_POINTS}) is out of range"
            )
        b.save_all = tristate("save_all", a["save_all"], b.save_all)
        b.backward = tristate("backward_sweep", a["backward_sweep"], b.backward)
        b.autosave = tristate("autosave", a["autosave"], b.autosave)
        b.save_dialog = tristate("show_save_dialog", a["show_save_dialog"], b.save_dialog)
        b.sweeps = sweeps or b.sweeps
        b.points = points or b.points
        b.z_offset_m = _keep(a, "z_offset_m", b.z_offset_m, finite)
        return {}

    @handles("BiasSpectr.PropsGet")
    def bias_spectr_props_get(self, a: Args) -> Values:
        b = self.bias_spectr
        return {
            "save_all": int(b.save_all),
            "number_of_sweeps": b.sweeps,
            "backward_sweep": int(b.backward),
            "number_of_points": b.points,
            "channels": [SIGNAL_NAMES[s] for s in b.channels],
            "parameters": list(PARAMETERS),
            "fixed_parameters": list(BIAS_FIXED_PARAMETERS),
        }

    @handles("BiasSpectr.AdvPropsSet")
    def bias_spectr_adv_props_set(self, a: Args) -> Values:
        b = self.bias_spectr
        b.reset_bias = tristate("reset_bias", a["reset_bias"], b.reset_bias)
        b.z_hold = tristate("z_controller_hold", a["z_controller_hold"], b.z_hold)
        b.record_final_z = tristate("record_final_z", a["record_final_z"], b.record_final_z)
        b.lockin_run = tristate("lockin_run", a["lockin_run"], b.lockin_run)
        return {}

    @handles("BiasSpectr.AdvPropsGet")
    def bias_spectr_adv_props_get(self, a: Args) -> Values:
        b = self.bias_spectr
        return {
            "reset_bias": int(b.reset_bias),
            "z_controller_hold": int(b.z_hold),
            "record_final_z": int(b.record_final_z),
            "lockin_run": int(b.lockin_run),
        }

    @handles("BiasSpectr.LimitsSet")
    def bias_spectr_limits_set(self, a: Args) -> Values:
        start, end = (
            finite("start_value_v", a["start_value_v"]),
            finite("end_value_v", a["end_value_v"]),
        )
        for name, value in (("start_value_v", start), ("end_value_v", end)):
            if abs(value) > BIAS_LIMIT_V:
                raise CommandRefusedError(f"{name} = {value:g} V is outside ±{BIAS_LIMIT_V:g} V")
        if start == end:
            raise CommandRefusedError("start_value_v and end_value_v must differ")
        self.bias_spectr.start_v, self.bias_spectr.end_v = start, end
        return {}

    @handles("BiasSpectr.LimitsGet")
    def bias_spectr_limits_get(self, a: Args) -> Values:
        return {"start_value_v": self.bias_spectr.start_v, "end_value_v": self.bias_spectr.end_v}

    def _timing_set(self, timing: Timing, a: Args) -> None:
        """NaN leaves a value unchanged, as on Nanonis (the vendor's examples send NaN)."""
        t = timing
        t.z_averaging_s = _keep(a, "z_averaging_time_s", t.z_averaging_s, non_negative)
        t.initial_settling_s = _keep(
            a, "initial_settling_time_s", t.initial_settling_s, non_negative
        )
        t.max_slew_per_s = _keep(a, "maximum_slew_rate_v_s", t.max_slew_per_s, positive)
        t.settling_s = _keep(a, "settling_time_s", t.settling_s, non_negative)
        t.integration_s = _keep(a, "integration_time_s", t.integration_s, non_negative)
        t.end_settling_s = _keep(a, "end_settling_time_s", t.end_settling_s, non_negative)
        t.z_control_s = _keep(a, "z_control_time_s", t.z_control_s, non_negative)

    @staticmethod
    def _timing_get(timing: Timing) -> Values:
        return {
            "z_averaging_time_s": timing.z_averaging_s,
            "initial_settling_time_s": timing.initial_settling_s,
            "maximum_slew_rate_v_s": timing.max_slew_per_s,
            "settling_time_s": timing.settling_s,
            "integration_time_s": timing.integration_s,
            "end_settling_time_s": timing.end_settling_s,
            "z_control_time_s": timing.z_control_s,
        }

    @handles("BiasSpectr.TimingSet")
    def bias_spectr_timing_set(self, a: Args) -> Values:
        self._timing_set(self.bias_spectr.timing, a)
        b = self.bias_spectr
        b.z_offset_m = _keep(a, "z_offset_m", b.z_offset_m, finite)
        return {}

    @handles("BiasSpectr.TimingGet")
    def bias_spectr_timing_get(self, a: Args) -> Values:
        return {
            **self._timing_get(self.bias_spectr.timing),
            "z_offset_m": self.bias_spectr.z_offset_m,
        }

    @handles("BiasSpectr.TTLSyncSet")
    def bias_spectr_ttl_sync_set(self, a: Args) -> Values:
        self.bias_spectr.ttl = _ttl(a)
        return {}

    @handles("BiasSpectr.TTLSyncGet")
    def bias_spectr_ttl_sync_get(self, a: Args) -> Values:
        return _ttl_values(self.bias_spectr.ttl)

    @handles("BiasSpectr.DigSyncSet")
    def bias_spectr_dig_sync_set(self, a: Args) -> Values:
        self.bias_spectr.dig_sync = choice("digital_sync", a["digital_sync"], (0, 1, 2, 3, 4))
        return {}

    @handles("BiasSpectr.DigSyncGet")
    def bias_spectr_dig_sync_get(self, a: Args) -> Values:
        return {"digital_sync": self.bias_spectr.dig_sync}

    @handles("BiasSpectr.PulseSeqSyncSet")
    def bias_spectr_pulse_seq_sync_set(self, a: Args) -> Values:
        self.bias_spectr.pulse_seq = (a["pulse_sequence_nr"], a["nr_periods"])
        return {}

    @handles("BiasSpectr.PulseSeqSyncGet")
    def bias_spectr_pulse_seq_sync_get(self, a: Args) -> Values:
        nr, periods = self.bias_spectr.pulse_seq
        return {"pulse_sequence_nr": nr, "nr_periods": periods}

    @handles("BiasSpectr.AltZCtrlSet")
    def bias_spectr_alt_z_ctrl_set(self, a: Args) -> Values:
        on = choice(
            "alternate_z_controller_setpoint", a["alternate_z_controller_setpoint"], (0, 1, 2)
        )
        current_on, _setpoint, _settle = self.bias_spectr.alt_setpoint
        self.bias_spectr.alt_setpoint = (
            current_on if on == 0 else int(on == 1),
            finite("setpoint", a["setpoint"]),
            non_negative("settling_time_s", a["settling_time_s"]),
        )
        return {}

    @handles("BiasSpectr.AltZCtrlGet")
    def bias_spectr_alt_z_ctrl_get(self, a: Args) -> Values:
        on, setpoint, settle = self.bias_spectr.alt_setpoint
        return {
            "alternate_z_controller_setpoint": on,
            "setpoint": setpoint,
            "settling_time_s": settle,
        }

    @handles("BiasSpectr.ZOffRevertSet")
    def bias_spectr_z_off_revert_set(self, a: Args) -> Values:
        b = self.bias_spectr
        b.z_offset_revert = tristate("z_offset_revert", a["z_offset_revert"], b.z_offset_revert)
        return {}

    @handles("BiasSpectr.ZOffRevertGet")
    def bias_spectr_z_off_revert_get(self, a: Args) -> Values:
        return {"z_offset_revert": int(self.bias_spectr.z_offset_revert)}

    @handles("BiasSpectr.MLSLockinPerSegSet")
    def bias_spectr_mls_lockin_per_seg_set(self, a: Args) -> Values:
        value = choice("lock_in_per_segment", a["lock_in_per_segment"], (0, 1))
        self.bias_spectr.mls_lockin_per_segment = value
        return {}

    @handles("BiasSpectr.MLSLockinPerSegGet")
    def bias_spectr_mls_lockin_per_seg_get(self, a: Args) -> Values:
        return {"lock_in_per_segment": self.bias_spectr.mls_lockin_per_segment}

    @handles("BiasSpectr.MLSModeSet")
    def bias_spectr_mls_mode_set(self, a: Args) -> Values:
        mode = a["sweep_mode"]
        if mode not in ("Linear", "MLS"):
            raise CommandRefusedError(f"sweep_mode = {mode!r} is not 'Linear' or 'MLS'")
        self.bias_spectr.mls_mode = mode
        return {}

    @handles("BiasSpectr.MLSModeGet")
    def bias_spectr_mls_mode_get(self, a: Args) -> Values:
        return {"sweep_mode": self.bias_spectr.mls_mode}

    @handles("BiasSpectr.MLSValsSet")
    def bias_spectr_mls_vals_set(self, a: Args) -> Values:
        n = a["number_of_segments"]
        if not 0 <= n <= 64:
            raise CommandRefusedError(f"number_of_segments = {n} must be 0..64")
        segments = []
        for i in range(n):
            start, end = a["bias_start_v"][i], a["bias_end_v"][i]
            steps = a["steps"][i]
            for name, value in (("bias_start_v", start), ("bias_end_v", end)):
                if not (math.isfinite(value) and abs(value) <= BIAS_LIMIT_V):
                    raise CommandRefusedError(f"{name}[{i}] = {value!r} is outside ±10 V")
            if not 1 <= steps <= MAX_POINTS:
                raise CommandRefusedError(f"steps[{i}] = {steps} must be 1..{MAX_POINTS}")
            segments.append(
                (
                    start,
                    end,
                    non_negative("initial_settling_time_s", a["initial_settling_time_s"][i]),
                    non_negative("settling_time_s", a["settling_time_s"][i]),
                    non_negative("integration_time_s", a["integration_time_s"][i]),
                    steps,
                    int(a["lock_in_run"][i]),
                )
            )
        self.bias_spectr.mls_segments = segments
        return {}

    @handles("BiasSpectr.MLSValsGet")
    def bias_spectr_mls_vals_get(self, a: Args) -> Values:
        segs = self.bias_spectr.mls_segments
        return {
            "number_of_segments": len(segs),
            "bias_start_v": [s[0] for s in segs],
            "bias_end_v": [s[1] for s in segs],
            "initial_settling_time_s": [s[2] for s in segs],
            "settling_time_s": [s[3] for s in segs],
            "integration_time_s": [s[4] for s in segs],
            "steps": [s[5] for s in segs],
            "lock_in_run": [max(s[6], 0) for s in segs],
        }

    def _bias_points(self) -> list[float]:
        b = self.bias_spectr
        if b.mls_mode == "MLS" and b.mls_segments:
            points: list[float] = []
            for start, end, _, _, _, steps, _ in b.mls_segments:
                points += [start + (end - start) * k / max(steps, 1) for k in range(steps)]
            points.append(b.mls_segments[-1][1])
            return points
        n = b.points
        return [b.start_v + (b.end_v - b.start_v) * k / (n - 1) for k in range(n)]

    @handles("BiasSpectr.Start")
    def bias_spectr_start(self, a: Args) -> Awaitable[Values]:
        self._check_idle("BiasSpectr")
        if a["save_base_name"]:
            self.bias_spectr.basename = self._basename(a["save_base_name"])
        return self._bias_sweep(bool(a["get_data"]))

    async def _bias_sweep(self, get_data: bool) -> Values:
        physics = self.physics
        b = self.bias_spectr
        t = b.timing
        points = self._bias_points()
        per_point = t.settling_s + t.integration_s
        slew_s = abs(points[-1] - points[0]) / t.max_slew_per_s / max(len(points) - 1, 1)
        lead_s = (
            t.z_averaging_s
            + t.initial_settling_s
            + abs(points[0] - physics.bias_v) / (t.max_slew_per_s)
        )
        n_points = len(points) * b.sweeps * (2 if b.backward else 1)
        duration = lead_s + n_points * (per_point + slew_s) + t.end_settling_s + t.z_control_s
        if duration > MAX_SWEEP_S:
            raise CommandRefusedError(
                f"this sweep would take {duration:.0f} s (over {MAX_SWEEP_S:.0f} s); use fewer "
                "points or shorter settling/integration times"
            )
        run = _Run("BiasSpectr")
        self._running = run
        start_bias = physics.bias_v
        z = physics.z
        held = z.on and b.z_hold
        feedback = z.on and not b.z_hold
        z_start = z.z_m
        z_sweep = z_start + b.z_offset_m
        gap0 = physics.gap() + b.z_offset_m
        signals = list(b.channels)
        crashed: list[float] = []

        def measure(k: int, bias: float, elapsed: float) -> list[float]:
            gap = self._gap_at(gap0, elapsed)
            if feedback:  # constant current: the controller follows every bias
                gap = stm_tunnel.equilibrium_gap(z.setpoint_a, bias, physics.local_dos())
            if gap < CRASH_GAP_M and not crashed:
                crashed.append(bias)
            return self._point(
                signals,
                bias_v=bias,
                gap_m=gap,
                z_m=z_sweep,
                averaging_s=t.integration_s,
                lockin_forced=b.lockin_run,
            )

        fwd, bwd, _ = self._sweep_rows(
            points,
            measure,
            sweeps=b.sweeps,
            backward=b.backward,
            time_per_point_s=per_point + slew_s,
            start_s=lead_s,
            n_channels=len(signals),
        )
        try:
            if held:
                z.hold = True
            # where the tip waits out the sweep (at its start if the sweep touched the surface:
            # the crash is counted once, below)
            z.z_m = z.integrator_m = z_start if crashed else z_sweep
            physics.bias_v = start_bias if crashed else points[-1]
            taken = await self._wait_sweep(run, duration)
        finally:
            self._running = None
            if b.reset_bias:
                physics.bias_v = start_bias
            if b.z_offset_revert:
                z.z_m = z.integrator_m = z_start
            if held:
                z.hold = False
                z.integrator_m = z.z_m  # bumpless
        if crashed:
            physics.crash(f"bias sweep through {crashed[0]:.3g} V with the Z controller on")
        if run.stop:
            _blank_after(fwd, bwd, lead_s, per_point + slew_s, taken, b.backward)
        names = ["Bias calc (V)"] + [SIGNAL_NAMES[s] for s in signals]
        rows: list[list[float]] = [points, *fwd]
        if b.backward:
            names += [_bwd(SIGNAL_NAMES[s]) for s in signals]
            rows += bwd
        fixed = [points[0], points[-1]]
        params = self._parameters(b, z_sweep)
        header = {
            "X (m)": f"{physics.x_m:.6E}",
            "Y (m)": f"{physics.y_m:.6E}",
            "Z (m)": f"{z_sweep:.6E}",
            "Z offset (m)": f"{b.z_offset_m:.6E}",
            "Settling time (s)": f"{t.settling_s:.6E}",
            "Integration time (s)": f"{t.integration_s:.6E}",
            "Z-Ctrl hold": "TRUE" if held else "FALSE",
            "Bias Spectroscopy>Sweep Start (V)": f"{points[0]:.6E}",
            "Bias Spectroscopy>Sweep End (V)": f"{points[-1]:.6E}",
            "Bias Spectroscopy>Number of sweeps": str(b.sweeps),
            "Bias>Bias (V)": f"{start_bias:.6E}",
            "Z-Controller>Setpoint": f"{z.setpoint_a:.6E}",
        }
        self._save(b, "Bias-Spectroscopy", "bias spectroscopy", header, names, rows)
        if not get_data:
            return {"channels_names": [], "data": [], "parameters": []}
        return {"channels_names": names, "data": rows, "parameters": fixed + params}

    # ================================================================ ZSpectr
    @handles("ZSpectr.Open")
    def z_spectr_open(self, a: Args) -> Values:
        return {}

    @handles("ZSpectr.StatusGet")
    def z_spectr_status_get(self, a: Args) -> Values:
        return {"status": self._status("ZSpectr")}

    @handles("ZSpectr.Stop")
    def z_spectr_stop(self, a: Args) -> Values:
        return self._stop("ZSpectr")

    @handles("ZSpectr.ChsSet")
    def z_spectr_chs_set(self, a: Args) -> Values:
        channels = self._channels(a["channel_indexes"], N_SIGNALS, "signals 0..127")
        if not channels:
            raise CommandRefusedError("record at least one channel")
        self.z_spectr.channels = channels
        return {}

    @handles("ZSpectr.ChsGet")
    def z_spectr_chs_get(self, a: Args) -> Values:
        channels = self.z_spectr.channels
        return {
            "channel_indexes": list(channels),
            "channels": [SIGNAL_NAMES[s] for s in channels],
        }

    @handles("ZSpectr.PropsSet")
    def z_spectr_props_set(self, a: Args) -> Values:
        zs = self.z_spectr
        points, sweeps = a["number_of_points"], a["number_of_sweeps"]
        if not (points == 0 or 2 <= points <= MAX_POINTS) or sweeps > MAX_SWEEPS:
            raise CommandRefusedError(
                f"number_of_points = {points} (0 or 2..{MAX_POINTS}) or number_of_sweeps = "
                f"{sweeps} (0..{MAX_SWEEPS}) is out of range"
            )
        zs.backward = tristate("backward_sweep", a["backward_sweep"], zs.backward)
        zs.autosave = tristate("autosave", a["autosave"], zs.autosave)
        zs.save_dialog = tristate("show_save_dialog", a["show_save_dialog"], zs.save_dialog)
        zs.save_all = tristate("save_all", a["save_all"], zs.save_all)
        zs.points = points or zs.points
        zs.sweeps = sweeps or zs.sweeps
        return {}

    @handles("ZSpectr.PropsGet")
    def z_spectr_props_get(self, a: Args) -> Values:
        zs = self.z_spectr
        return {
            "backward_sweep": int(zs.backward),
            "number_of_points": zs.points,
            "parameters": list(PARAMETERS),
            "fixed_parameters": list(Z_FIXED_PARAMETERS),
            "number_of_sweeps": zs.sweeps,
            "save_all": int(zs.save_all),
        }

    @handles("ZSpectr.AdvPropsSet")
    def z_spectr_adv_props_set(self, a: Args) -> Values:
        zs = self.z_spectr
        zs.time_between_s = non_negative(
            "time_between_forward_and_backward_sweep_s",
            a["time_between_forward_and_backward_sweep_s"],
        )
        zs.record_final_z = tristate("record_final_z", a["record_final_z"], zs.record_final_z)
        zs.lockin_run = tristate("lockin_run", a["lockin_run"], zs.lockin_run)
        zs.reset_z = tristate("reset_z", a["reset_z"], zs.reset_z)
        return {}

    @handles("ZSpectr.AdvPropsGet")
    def z_spectr_adv_props_get(self, a: Args) -> Values:
        zs = self.z_spectr
        return {
            "time_between_forward_and_backward_sweep_s": zs.time_between_s,
            "record_final_z": int(zs.record_final_z),
            "lockin_run": int(zs.lockin_run),
            "reset_z": int(zs.reset_z),
        }

    @handles("ZSpectr.RangeSet")
    def z_spectr_range_set(self, a: Args) -> Values:
        offset = finite("z_offset_m", a["z_offset_m"])
        distance = finite("z_sweep_distance_m", a["z_sweep_distance_m"])
        if distance == 0.0 or abs(distance) > 1e-6 or abs(offset) > 1e-6:
            raise CommandRefusedError(
                f"z_sweep_distance_m = {distance:g} must be non-zero and, like z_offset_m = "
                f"{offset:g}, within ±1 µm"
            )
        self.z_spectr.z_offset_m, self.z_spectr.z_distance_m = offset, distance
        return {}

    @handles("ZSpectr.RangeGet")
    def z_spectr_range_get(self, a: Args) -> Values:
        return {
            "z_offset_m": self.z_spectr.z_offset_m,
            "z_sweep_distance_m": self.z_spectr.z_distance_m,
        }

    @handles("ZSpectr.TimingSet")
    def z_spectr_timing_set(self, a: Args) -> Values:
        self._timing_set(self.z_spectr.timing, a)
        return {}

    @handles("ZSpectr.TimingGet")
    def z_spectr_timing_get(self, a: Args) -> Values:
        return self._timing_get(self.z_spectr.timing)

    @handles("ZSpectr.RetractDelaySet")
    def z_spectr_retract_delay_set(self, a: Args) -> Values:
        self.z_spectr.retract_delay_s = non_negative("retract_delay_s", a["retract_delay_s"])
        return {}

    @handles("ZSpectr.RetractDelayGet")
    def z_spectr_retract_delay_get(self, a: Args) -> Values:
        return {"retract_delay_s": self.z_spectr.retract_delay_s}

    def _retract_args(
        self, a: Args, current: tuple[int, float, int, int], first: str
    ) -> tuple[int, float, int, int]:
        index = a["signal_index"]
        if index != -1:
            choice("signal_index", index, range(N_SIGNALS))
        comparison = choice("comparison", a["comparison"], (0, 1, 2))
        return (
            a[first],
            finite("threshold", a["threshold"]),
            current[2] if index == -1 else index,
            current[3] if comparison == 2 else comparison,
        )

    @handles("ZSpectr.RetractSet")
    def z_spectr_retract_set(self, a: Args) -> Values:
        on, threshold, index, comparison = self.z_spectr.retract
        enable = choice("enable", a["enable"], (0, 1, 2))
        _, threshold, index, comparison = self._retract_args(
            a, (int(on), threshold, index, comparison), "enable"
        )
        self.z_spectr.retract = (on if enable == 0 else enable == 1, threshold, index, comparison)
        return {}

    @handles("ZSpectr.RetractGet")
    def z_spectr_retract_get(self, a: Args) -> Values:
        on, threshold, index, comparison = self.z_spectr.retract
        return {
            "enable": int(on),
            "threshold": threshold,
            "signal_index": index,
            "comparison": comparison,
        }

    @handles("ZSpectr.RetractSecondSet")
    def z_spectr_retract_second_set(self, a: Args) -> Values:
        condition = choice("second_condition", a["second_condition"], (-1, 0, 1, 2))
        current = self.z_spectr.retract_second
        values = self._retract_args(a, current, "second_condition")
        self.z_spectr.retract_second = (
            current[0] if condition == -1 else condition,
            values[1],
            values[2],
            values[3],
        )
        return {}

    @handles("ZSpectr.RetractSecondGet")
    def z_spectr_retract_second_get(self, a: Args) -> Values:
        condition, threshold, index, comparison = self.z_spectr.retract_second
        return {
            "second_condition": condition,
            "threshold": threshold,
            "signal_index": index,
            "comparison": comparison,
        }

    @handles("ZSpectr.TTLSyncSet")
    def z_spectr_ttl_sync_set(self, a: Args) -> Values:
        self.z_spectr.ttl = _ttl(a)
        return {}

    @handles("ZSpectr.TTLSyncGet")
    def z_spectr_ttl_sync_get(self, a: Args) -> Values:
        return _ttl_values(self.z_spectr.ttl)

    @handles("ZSpectr.DigSyncSet")
    def z_spectr_dig_sync_set(self, a: Args) -> Values:
        self.z_spectr.dig_sync = choice("digital_sync", a["digital_sync"], (0, 1, 2, 3, 4))
        return {}

    @handles("ZSpectr.DigSyncGet")
    def z_spectr_dig_sync_get(self, a: Args) -> Values:
        return {"digital_sync": self.z_spectr.dig_sync}

    @handles("ZSpectr.PulseSeqSyncSet")
    def z_spectr_pulse_seq_sync_set(self, a: Args) -> Values:
        self.z_spectr.pulse_seq = (a["pulse_sequence_nr"], a["nr_periods"])
        return {}

    @handles("ZSpectr.PulseSeqSyncGet")
    def z_spectr_pulse_seq_sync_get(self, a: Args) -> Values:
        nr, periods = self.z_spectr.pulse_seq
        return {"pulse_sequence_nr": nr, "nr_periods": periods}

    @handles("ZSpectr.Start")
    def z_spectr_start(self, a: Args) -> Awaitable[Values]:
        self._check_idle("ZSpectr")
        if a["save_base_name"]:
            self.z_spectr.basename = self._basename(a["save_base_name"])
        return self._z_sweep(bool(a["get_data"]))

    def _retract_triggered(self, values: Sequence[float], signals: Sequence[int]) -> bool:
        on, threshold, index, comparison = self.z_spectr.retract
        if not on or index not in signals:
            return False
        value = values[list(signals).index(index)]
        return value > threshold if comparison == 0 else value < threshold

    async def _z_sweep(self, get_data: bool) -> Values:
        physics = self.physics
        zs = self.z_spectr
        t = zs.timing
        z = physics.z
        n = zs.points
        rel = [zs.z_offset_m + zs.z_distance_m * k / (n - 1) for k in range(n)]
        per_point = t.settling_s + t.integration_s
        lead_s = t.z_averaging_s + t.initial_settling_s
        n_points = n * zs.sweeps * (2 if zs.backward else 1)
        duration = lead_s + n_points * per_point + zs.time_between_s + t.end_settling_s
        duration += t.z_control_s
        if duration > MAX_SWEEP_S:
            raise CommandRefusedError(
                f"this sweep would take {duration:.0f} s (over {MAX_SWEEP_S:.0f} s); use fewer "
                "points or shorter settling/integration times"
            )
        run = _Run("ZSpectr")
        self._running = run
        z_start = z.z_m
        gap0 = physics.gap()
        was_on = z.on
        signals = list(zs.channels)
        # the auto-retract condition watches its own signal, recorded or not
        watched = sorted({*signals, zs.retract[2]}) if zs.retract[0] else list(signals)
        retracted: list[int] = []
        crashed: list[float] = []

        def measure(k: int, dz: float, elapsed: float) -> list[float]:
            if retracted:
                return [math.nan] * len(signals)
            gap = self._gap_at(gap0, elapsed) + dz
            if gap < CRASH_GAP_M and not crashed:
                crashed.append(dz)
            values = self._point(
                watched,
                bias_v=physics.bias_v,
                gap_m=gap,
                z_m=z_start + dz,
                averaging_s=t.integration_s,
                lockin_forced=zs.lockin_run,
            )
            if self._retract_triggered(values, watched):
                retracted.append(k)
            return [values[watched.index(s)] for s in signals]

        fwd, bwd, _ = self._sweep_rows(
            rel,
            measure,
            sweeps=zs.sweeps,
            backward=zs.backward,
            time_per_point_s=per_point,
            start_s=lead_s,
            n_channels=len(signals),
        )
        if retracted:
            crashed.clear()  # the auto-retract pulled the tip back in time
            physics.events.append(physics.event("z_spectr_retract", f"point {retracted[0]}"))
        try:
            z.hold = was_on
            safe = retracted or crashed  # wait where the tip is not in contact
            z.z_m = z.integrator_m = z_start if safe else z_start + rel[-1]
            taken = await self._wait_sweep(run, duration)
        finally:
            self._running = None
            if zs.reset_z or retracted:
                z.z_m = z.integrator_m = z_start
            z.hold = False
            z.integrator_m = z.z_m
        if crashed:
            physics.crash(f"Z spectrum {crashed[0] * 1e9:.3g} nm towards the surface")
        if run.stop:
            _blank_after(fwd, bwd, lead_s, per_point, taken, zs.backward)
        names = ["Z rel (m)"] + [SIGNAL_NAMES[s] for s in signals]
        rows: list[list[float]] = [rel, *fwd]
        if zs.backward:
            names += [_bwd(SIGNAL_NAMES[s]) for s in signals]
            rows += bwd
        header = {
            "X (m)": f"{physics.x_m:.6E}",
            "Y (m)": f"{physics.y_m:.6E}",
            "Z (m)": f"{z_start:.6E}",
            "Bias>Bias (V)": f"{physics.bias_v:.6E}",
            "Z Spectroscopy>Z offset (m)": f"{zs.z_offset_m:.6E}",
            "Z Spectroscopy>Z sweep distance (m)": f"{zs.z_distance_m:.6E}",
            "Settling time (s)": f"{t.settling_s:.6E}",
            "Integration time (s)": f"{t.integration_s:.6E}",
        }
        self._save(zs, "Z-Spectroscopy", "Z spectroscopy", header, names, rows)
        if not get_data:
            return {"channels_names": [], "data": [], "parameters": []}
        fixed = [zs.z_offset_m, zs.z_distance_m]
        return {
            "channels_names": names,
            "data": rows,
            "parameters": fixed + self._parameters(zs, z_start),
        }

    # ================================================================ GenSwp and BiasSwp
    @handles("GenSwp.Open")
    def gen_swp_open(self, a: Args) -> Values:
        return {}

    @handles("GenSwp.Stop")
    def gen_swp_stop(self, a: Args) -> Values:
        return self._stop("GenSwp")

    @handles("GenSwp.SwpSignalListGet")
    def gen_swp_swp_signal_list_get(self, a: Args) -> Values:
        return {"channels_names": list(GENSWP_SIGNALS)}

    @handles("GenSwp.SwpSignalSet")
    def gen_swp_swp_signal_set(self, a: Args) -> Values:
        name = a["sweep_channel_name"]
        if name not in GENSWP_SIGNALS:
            raise CommandRefusedError(
                f"sweep_channel_name = {name!r} cannot be swept; GenSwp.SwpSignalListGet lists "
                f"{list(GENSWP_SIGNALS)}"
            )
        self.gen_swp.signal = name
        return {}

    @handles("GenSwp.SwpSignalGet")
    def gen_swp_swp_signal_get(self, a: Args) -> Values:
        return {"sweep_channel_name": self.gen_swp.signal}

    @handles("GenSwp.LimitsSet")
    def gen_swp_limits_set(self, a: Args) -> Values:
        return self._sweeper_limits_set(self.gen_swp, a)

    @handles("GenSwp.LimitsGet")
    def gen_swp_limits_get(self, a: Args) -> Values:
        return {"lower_limit": self.gen_swp.lower, "upper_limit": self.gen_swp.upper}

    @handles("GenSwp.PropsSet")
    def gen_swp_props_set(self, a: Args) -> Values:
        g = self.gen_swp
        steps, period = a["number_of_steps"], a["period_ms"]
        if not (steps == 0 or 2 <= steps <= MAX_POINTS):
            raise CommandRefusedError(f"number_of_steps = {steps} must be 0 or 2..{MAX_POINTS}")
        g.initial_settling_s = (
            non_negative("initial_settling_time_ms", a["initial_settling_time_ms"]) / 1000.0
        )
        g.max_slew_per_s = positive("maximum_slew_rate", a["maximum_slew_rate"])
        g.steps = steps or g.steps
        if period:
            g.period_s = period / 1000.0
        g.autosave = tristate("autosave", a["autosave"], g.autosave)
        g.save_dialog = tristate("save_dialog_box", a["save_dialog_box"], g.save_dialog)
        g.settling_s = non_negative("settling_time_ms", a["settling_time_ms"]) / 1000.0
        return {}

    @handles("GenSwp.PropsGet")
    def gen_swp_props_get(self, a: Args) -> Values:
        g = self.gen_swp
        return {
            "initial_settling_time_ms": g.initial_settling_s * 1000.0,
            "maximum_slew_rate": g.max_slew_per_s,
            "number_of_steps": g.steps,
            "period_ms": round(g.period_s * 1000.0),
            "autosave": int(g.autosave),
            "save_dialog_box": int(g.save_dialog),
            "settling_time_ms": g.settling_s * 1000.0,
        }

    @handles("GenSwp.AcqChsSet")
    def gen_swp_acq_chs_set(self, a: Args) -> Values:
        channels = self._channels(
            a["channel_indexes"], len(MEASUREMENT_CHANNELS), "measurement channels"
        )
        self.gen_swp.channels = channels
        return {}

    @handles("GenSwp.AcqChsGet")
    def gen_swp_acq_chs_get(self, a: Args) -> Values:
        channels = self.gen_swp.channels
        return {
            "channel_indexes": list(channels),
            "channel_names": [MEASUREMENT_CHANNELS[c] for c in channels],
        }

    @handles("GenSwp.Start")
    def gen_swp_start(self, a: Args) -> Awaitable[Values]:
        self._check_idle("GenSwp")
        direction_up = bool(choice("sweep_direction", a["sweep_direction"], (0, 1)))
        z_mode = choice("z_controller", a["z_controller"], (0, 1, 2))
        reset = bool(choice("reset_signal", a["reset_signal"], (0, 1)))
        if a["save_base_name"]:
            self.gen_swp.basename = self._basename(a["save_base_name"])
        if self.gen_swp.signal == "Z (m)" and self.physics.z.on and z_mode != 1:
            raise CommandRefusedError(
                "sweeping Z needs the Z controller off: start with z_controller = 1 (turn off)"
            )
        return self._sweeper_run(
            "GenSwp",
            self.gen_swp,
            signal=self.gen_swp.signal,
            get_data=bool(a["get_data"]),
            from_lower=direction_up,
            reset=reset,
            controller_off=z_mode == 1,
        )

    @handles("BiasSwp.Open")
    def bias_swp_open(self, a: Args) -> Values:
        return {}

    @handles("BiasSwp.LimitsSet")
    def bias_swp_limits_set(self, a: Args) -> Values:
        for name in ("lower_limit", "upper_limit"):
            if abs(finite(name, a[name])) > BIAS_LIMIT_V:
                raise CommandRefusedError(f"{name} = {a[name]:g} V is outside ±10 V")
        return self._sweeper_limits_set(self.bias_swp, a)

    @handles("BiasSwp.LimitsGet")
    def bias_swp_limits_get(self, a: Args) -> Values:
        return {"lower_limit": self.bias_swp.lower, "upper_limit": self.bias_swp.upper}

    @handles("BiasSwp.PropsSet")
    def bias_swp_props_set(self, a: Args) -> Values:
        s = self.bias_swp
        steps, period = a["number_of_steps"], a["period_ms"]
        if steps == 1:
            raise CommandRefusedError("number_of_steps = 1: a sweep needs 2 or more (0: no change)")
        s.steps = steps or s.steps
        if period:
            s.period_s = period / 1000.0
        s.autosave = tristate("autosave", a["autosave"], s.autosave)
        s.save_dialog = tristate("save_dialog_box", a["save_dialog_box"], s.save_dialog)
        return {}

    @handles("BiasSwp.Start")
    def bias_swp_start(self, a: Args) -> Awaitable[Values]:
        self._check_idle("BiasSwp")
        direction_up = bool(choice("sweep_direction", a["sweep_direction"], (0, 1)))
        z_mode = choice("z_controller_status", a["z_controller_status"], (0, 1, 2))
        reset = bool(choice("reset_bias", a["reset_bias"], (0, 1)))
        if a["save_base_name"]:
            self.bias_swp.basename = self._basename(a["save_base_name"])
        return self._sweeper_run(
            "BiasSwp",
            self.bias_swp,
            signal="Bias (V)",
            get_data=bool(a["get_data"]),
            from_lower=direction_up,
            reset=reset,
            controller_off=z_mode == 1,
        )

    @staticmethod
    def _sweeper_limits_set(settings: SweeperSettings, a: Args) -> Values:
        lower, upper = (
            finite("lower_limit", a["lower_limit"]),
            finite("upper_limit", a["upper_limit"]),
        )
        if lower == upper:
            raise CommandRefusedError("lower_limit and upper_limit must differ")
        settings.lower, settings.upper = lower, upper
        return {}

    def _sweeper_apply(self, signal: str, value: float) -> None:
        physics = self.physics
        if signal == "Bias (V)":
            if abs(value) > BIAS_LIMIT_V:
                raise CommandRefusedError(f"the sweep goes to {value:g} V, outside ±10 V")
            physics.bias_v = value
        elif signal == "Z (m)":
            physics.z.z_m = physics.z.integrator_m = value
        elif signal == "Z Ctrl Setpoint (A)":
            physics.z.setpoint_a = value
        elif signal == "LI Mod 1 Amp (V)":
            physics.lockin.modulator(1).amplitude = max(value, 0.0)
        elif signal == "LI Mod 1 Freq (Hz)":
            physics.lockin.modulator(1).frequency_hz = max(value, 1e-3)

    def _sweeper_value(self, signal: str) -> float:
        physics = self.physics
        return {
            "Bias (V)": physics.bias_v,
            "Z (m)": physics.z.z_m,
            "Z Ctrl Setpoint (A)": physics.z.setpoint_a,
            "LI Mod 1 Amp (V)": physics.lockin.modulator(1).amplitude,
            "LI Mod 1 Freq (Hz)": physics.lockin.modulator(1).frequency_hz,
        }[signal]

    async def _sweeper_run(
        self,
        module: str,
        s: SweeperSettings,
        *,
        signal: str,
        get_data: bool,
        from_lower: bool,
        reset: bool,
        controller_off: bool,
    ) -> Values:
        """Step ``signal`` from one limit to the other; the physics answers at every point."""
        physics = self.physics
        z = physics.z
        n = max(s.steps, 2)
        a, b = (s.lower, s.upper) if from_lower else (s.upper, s.lower)
        points = [a + (b - a) * k / (n - 1) for k in range(n)]
        per_point = s.settling_s + s.period_s
        duration = s.initial_settling_s + n * per_point
        if duration > MAX_SWEEP_S:
            raise CommandRefusedError(
                f"this sweep would take {duration:.0f} s (over {MAX_SWEEP_S:.0f} s)"
            )
        # the points are stepped through the physics: a bias sweep through 0 V with the Z
        # controller on drives the tip into the surface there, as on a real instrument
        start_value = self._sweeper_value(signal)
        was_on = z.on
        run = _Run(module)
        self._running = run
        channels = [MEASUREMENT_SIGNALS[c] for c in s.channels]
        rows: list[list[float]] = [[] for _ in channels]
        try:
            if controller_off:
                z.on = False
            await self._sleep_until(self.clock.monotonic() + s.initial_settling_s)
            for value in points:
                if run.stop:
                    break
                self._sweeper_apply(signal, value)
                await self._sleep_until(self.clock.monotonic() + per_point)
                gap = physics.gap()
                measured = self._point(
                    channels,
                    bias_v=physics.bias_v,
                    gap_m=gap,
                    z_m=z.z_m,
                    averaging_s=s.period_s,
                    lockin_forced=False,
                )
                for row, v in zip(rows, measured, strict=True):
                    row.append(v)
        finally:
            self._running = None
            if reset:
                self._sweeper_apply(signal, start_value)
            if controller_off and was_on:
                physics.set_z_on(True)
        for row in rows:  # a stopped sweep: the points not reached are NaN
            row += [math.nan] * (len(points) - len(row))
        names = [signal] + [MEASUREMENT_CHANNELS[c] for c in s.channels]
        data: list[list[float]] = [points, *rows]
        header = {
            "Sweep channel": signal,
            "Lower limit": f"{s.lower:.6E}",
            "Upper limit": f"{s.upper:.6E}",
            "Period (s)": f"{s.period_s:.6E}",
        }
        self._save(s, module, module, header, names, data)
        if not get_data:
            return {"channels_names": [], "data": []}
        return {"channels_names": names, "data": data}


def _bwd(name: str) -> str:
    """ "Current (A)" -> "Current [bwd] (A)", as Nanonis names backward columns."""
    if " (" in name:
        base, unit = name.rsplit(" (", 1)
        return f"{base} [bwd] ({unit}"
    return f"{name} [bwd]"


def _blank_after(
    fwd: list[list[float]],
    bwd: list[list[float]],
    lead_s: float,
    per_point_s: float,
    taken_s: float,
    backward: bool,
) -> None:
    """A stopped sweep: the points not measured before the stop become NaN."""
    n = len(fwd[0]) if fwd else 0
    done = max(0, math.floor((taken_s - lead_s) / per_point_s)) if per_point_s > 0 else n
    for rows, offset in ((fwd, 0), (bwd, n)):
        if rows is bwd and not backward:
            continue
        for row in rows:
            for k in range(n):
                position = offset + (k if rows is fwd else n - 1 - k)
                if position >= done:
                    row[k] = math.nan


def _keep(a: Args, name: str, current: float, check: Callable[[str, float], float]) -> float:
    """The argument ``name`` checked, or ``current`` when it is NaN ("no change")."""
    value = a[name]
    return current if isinstance(value, float) and math.isnan(value) else check(name, value)


def _ttl(a: Args) -> tuple[int, int, float, float]:
    return (
        choice("ttl_line", a["ttl_line"], range(9)),
        choice("ttl_polarity", a["ttl_polarity"], (0, 1, 2)),
        non_negative("time_to_on_s", a["time_to_on_s"]),
        non_negative("on_duration_s", a["on_duration_s"]),
    )


def _ttl_values(ttl: tuple[int, int, float, float]) -> Values:
    line, polarity, to_on, duration = ttl
    return {
        "ttl_line": line,
        "ttl_polarity": polarity,
        "time_to_on_s": to_on,
        "on_duration_s": duration,
    }
