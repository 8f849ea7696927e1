"""What the simulated STM does for each Nanonis command: one handler per command name.

Decoding and encoding go through :mod:`atomlab.instrument.protocol` and its command table, so
the simulator and the client share one implementation of the protocol. :meth:`dispatch` never
raises: an unknown command, a body that does not fit the signature, bad argument values and even
a bug in a handler all become an error reply on the same connection.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from atomlab.core.clock import Clock
from atomlab.core.logging import get_logger
from atomlab.instrument import CommandSpec, ProtocolError, lookup
from atomlab.instrument.protocol import (
    ErrorInfo,
    decode_args,
    encode_error_reply,
    encode_reply,
)
from atomlab.sim.stm_datalog import DataLogHandlers
from atomlab.sim.stm_lockin_commands import LockInHandlers
from atomlab.sim.stm_physics import (
    COARSE_STEP_XY_M,
    COARSE_STEP_Z_M,
    PREAMP_GAINS,
    StmPhysics,
)
from atomlab.sim.stm_routes import (
    ROUTES,
    Args,
    CommandRefusedError,
    Handler,
    HandlerBase,
    Values,
    choice,
    finite,
    handles,
    positive,
    tristate,
)
from atomlab.sim.stm_scan_commands import ScanHandlers
from atomlab.sim.stm_signals import (
    BIAS,
    CURRENT,
    MEASUREMENT_CHANNELS,
    N_SIGNALS,
    N_SLOTS,
    SIGNAL_NAMES,
    X,
    Y,
    Z,
)
from atomlab.sim.stm_spectroscopy import SpectroscopyHandlers

PIEZO_RANGE_XY_M: Final = 1e-6
PIEZO_RANGE_Z_M: Final = 4e-7
PIEZO_CALIBRATION_M_PER_V: Final = (3.8e-9, 3.8e-9, 9.0e-10)
HVA_GAINS: Final = (1.0, 14.5, 14.5, 14.5)
BIAS_RANGES: Final = ("±10 V", "±1 V")
BIAS_LIMITS_V: Final = (10.0, 1.0)
CURRENT_FILTERS: Final = ("10 kHz", "1 kHz", "100 Hz")
FOLME_OVERSAMPLING: Final = 10
Z_CONTROLLERS: Final = ("log Current", "Current")
_ARGS_CACHE_SIZE: Final = 4096
_ARGS_CACHE_BODY: Final = 512
_log = get_logger("atomlab.sim")

# kept for callers that imported them from here
_finite, _positive, _choice, _handles = finite, positive, choice, handles


@dataclass(frozen=True, slots=True)
class _Route:
    spec: CommandSpec
    handler: Handler


class StmCommands(SpectroscopyHandlers, LockInHandlers, ScanHandlers, DataLogHandlers, HandlerBase):
    """The command handlers of one simulated STM, bound to its physics and clock.

    ``session_dir`` is where saved scans and spectra go (a temporary folder when not given).
    """

    def __init__(
        self, physics: StmPhysics, clock: Clock, *, session_dir: Path | None = None
    ) -> None:
        self.physics = physics
        self.clock = clock
        self._session_dir = session_dir
        self.calls = 0
        self.errors = 0
        self._bias_range = 0
        self._bias_calibration = (1.0, 0.0)
        self._filter_index = 0
        self._motor_freq_amp = (1000.0, 100.0)
        self._tilt = (0.0, 0.0)
        self._tip_shaper_props: Values = {
            "switch_off_delay_s": 0.05,
            "change_bias": 1,
            "bias_v": 0.1,
            "tip_lift_m": -2e-9,
            "lift_time_1_s": 0.1,
            "bias_lift_v": 4.0,
            "bias_settling_time_s": 0.05,
            "lift_height_m": 2e-9,
            "lift_time_2_s": 0.1,
            "end_wait_time_s": 0.05,
            "restore_feedback": 1,
        }
        self._rt_oversampling = 10
        self._folme_oversampling = FOLME_OVERSAMPLING
        self._piezo_range = (PIEZO_RANGE_XY_M, PIEZO_RANGE_XY_M, PIEZO_RANGE_Z_M)
        self._piezo_sens = PIEZO_CALIBRATION_M_PER_V
        self._xyz_limits: Values = {
            "enable_limits": 0,
            "voltage_limit_x_low_v": -10.0,
            "voltage_limit_x_high_v": 10.0,
            "voltage_limit_y_low_v": -10.0,
            "voltage_limit_y_high_v": 10.0,
            "voltage_limit_z_low_v": -10.0,
            "voltage_limit_z_high_v": 10.0,
        }
        self._hysteresis_on = 0
        self._home_props = (1, 50e-9)
        self._limits_enabled = 1
        self._withdraw_rate_m_s = 1e-6
        self._active_controller = 0
        self._current_calibrations = {i: (1.0 / g, 0.0) for i, g in enumerate(PREAMP_GAINS)}
        self._locked = False
        SpectroscopyHandlers.__init__(self)
        LockInHandlers.__init__(self)
        ScanHandlers.__init__(self)
        DataLogHandlers.__init__(self)
        self._args_cache: dict[tuple[str, bytes], Args] = {}
        self.routes: dict[str, _Route] = {}
        for command, method_name in ROUTES.items():
            handler = getattr(self, method_name)
            self.routes[command] = _Route(lookup(command), handler)

    # ----------------------------------------------------------------- dispatch
    def handle(self, name: str, body: bytes) -> bytes | Coroutine[Any, Any, bytes]:
        """The complete response (header + body) to one request, never raising.

        Most requests are answered at once (bytes); one that must wait (``wait = 1``,
        ``Scan.WaitEndOfScan``, a tip move...) returns a coroutine that produces the bytes.
        """
        self.calls += 1
        route = self.routes.get(name)
        if route is None:
            return self._unrouted(name)
        try:
            args = self._decode(route, body)
            self.physics.advance_to(self.clock.monotonic())
            result = route.handler(args)
            if inspect.isawaitable(result):
                return self._finish(route, result)
            return encode_reply(route.spec, result)
        except Exception as exc:  # a bug must not take the connection down
            return self._failed(route, exc)

    async def dispatch(self, name: str, body: bytes) -> bytes:
        """:meth:`handle`, awaited when it has to wait."""
        reply = self.handle(name, body)
        return reply if isinstance(reply, bytes) else await reply

    def _decode(self, route: _Route, body: bytes) -> Args:
        # polling clients repeat identical requests; their decoded arguments are reused
        # (handlers never mutate their arguments)
        key = (route.spec.name, body)
        args = self._args_cache.get(key)
        if args is None:
            args = decode_args(route.spec, body)
            if len(body) <= _ARGS_CACHE_BODY and len(self._args_cache) < _ARGS_CACHE_SIZE:
                self._args_cache[key] = args
        return args

    async def _finish(self, route: _Route, pending: Awaitable[Values]) -> bytes:
        try:
            return encode_reply(route.spec, await pending)
        except Exception as exc:  # a bug must not take the connection down
            return self._failed(route, exc)

    def _failed(self, route: _Route, exc: Exception) -> bytes:
        self.errors += 1
        if isinstance(exc, ProtocolError | CommandRefusedError):
            return encode_reply(route.spec, error=ErrorInfo.of(exc.message))
        _log.error("simulator handler failed", command=route.spec.name, exc_info=exc)
        return encode_reply(
            route.spec, error=ErrorInfo.of(f"internal simulator error: {type(exc).__name__}")
        )

    def _unrouted(self, name: str) -> bytes:
        self.errors += 1
        try:
            spec = lookup(name)
        except ProtocolError as exc:
            return encode_error_reply(name, exc.message)
        if spec.name != name:  # lookup is lenient ("Bias_Get"); the wire is not
            return encode_error_reply(
                name, f"unknown command {name!r}; did you mean {spec.name!r}?"
            )
        return encode_reply(spec, error=ErrorInfo.of(f"{spec.name} is not simulated"))

    # ----------------------------------------------------------------- Bias
    @handles("Bias.Set")
    def bias_set(self, a: Args) -> Values:
        bias = finite("bias_v", a["bias_v"])
        limit = BIAS_LIMITS_V[self._bias_range]
        if abs(bias) > limit:
            raise CommandRefusedError(
                f"bias_v = {bias:g} V is outside the selected range ±{limit:g} V"
            )
        self.physics.bias_v = bias
        return {}

    @handles("Bias.Get")
    def bias_get(self, a: Args) -> Values:
        return {"bias_v": self.physics.bias_v}

    @handles("Bias.RangeSet")
    def bias_range_set(self, a: Args) -> Values:
        self._bias_range = choice("range_index", a["range_index"], range(len(BIAS_RANGES)))
        return {}

    @handles("Bias.RangeGet")
    def bias_range_get(self, a: Args) -> Values:
        return {"ranges": list(BIAS_RANGES), "range_index": self._bias_range}

    @handles("Bias.CalibrSet")
    def bias_calibr_set(self, a: Args) -> Values:
        self._bias_calibration = (
            finite("calibration", a["calibration"]),
            finite("offset", a["offset"]),
        )
        return {}

    @handles("Bias.CalibrGet")
    def bias_calibr_get(self, a: Args) -> Values:
        return {"calibration": self._bias_calibration[0], "offset": self._bias_calibration[1]}

    @handles("Bias.Pulse")
    async def bias_pulse(self, a: Args) -> Values:
        width = positive("width_s", a["width_s"])
        if width > 10.0:
            raise CommandRefusedError(
                f"width_s = {width:g} s is longer than the 10 s a pulse may last"
            )
        amplitude = finite("bias_v", a["bias_v"])
        pulse = amplitude if a["absolute"] == 2 else self.physics.bias_v + amplitude
        if a["wait_until_done"]:
            await self._sleep_until(self.clock.monotonic() + width)
        self.physics.bias_pulse(pulse)
        return {}

    # ----------------------------------------------------------------- Current
    @handles("Current.Get")
    def current_get(self, a: Args) -> Values:
        return {"current_a": self.physics.measure_now()}

    @handles("Current.GainSet")
    def current_gain_set(self, a: Args) -> Values:
        self.physics.gain_index = choice("gain_index", a["gain_index"], range(len(PREAMP_GAINS)))
        if a["filter_index"] != -1:
            self._filter_index = choice(
                "filter_index", a["filter_index"], range(len(CURRENT_FILTERS))
            )
        return {}

    @handles("Current.GainsGet")
    def current_gains_get(self, a: Args) -> Values:
        return {
            "gains": [f"10^{round(math.log10(g))} V/A" for g in PREAMP_GAINS],
            "gain_index": self.physics.gain_index,
            "filters": list(CURRENT_FILTERS),
            "filter_index": self._filter_index,
        }

    @handles("Current.CalibrGet")
    def current_calibr_get(self, a: Args) -> Values:
        index = a["gain_index"]
        if index == -1:
            index = self.physics.gain_index
        choice("gain_index", index, range(len(PREAMP_GAINS)))
        calibration, offset = self._current_calibrations[index]
        return {"calibration": calibration, "offset": offset}

    @handles("Current.CalibrSet")
    def current_calibr_set(self, a: Args) -> Values:
        index = choice("gain_index", a["gain_index"], range(len(PREAMP_GAINS)))
        self._current_calibrations[index] = (
            finite("calibration", a["calibration"]),
            finite("offset", a["offset"]),
        )
        return {}

    # ----------------------------------------------------------------- Z controller
    @handles("ZCtrl.ZPosSet")
    def zctrl_zpos_set(self, a: Args) -> Values:
        z = self.physics.z
        value = finite("z_m", a["z_m"])
        if z.on:
            raise CommandRefusedError(
                "the Z controller is on and owns Z; switch it off (ZCtrl.OnOffSet 0) first"
            )
        if not z.low_m <= value <= z.high_m:
            raise CommandRefusedError(
                f"z_m = {value:g} m is outside the Z limits {z.low_m:g}..{z.high_m:g} m"
            )
        z.z_m = value
        z.integrator_m = value
        return {}

    @handles("ZCtrl.ZPosGet")
    def zctrl_zpos_get(self, a: Args) -> Values:
        return {"z_m": self.physics.z.z_m}

    @handles("ZCtrl.OnOffSet")
    def zctrl_onoff_set(self, a: Args) -> Values:
        self.physics.set_z_on(bool(choice("on", a["on"], (0, 1))))
        return {}

    @handles("ZCtrl.OnOffGet")
    def zctrl_onoff_get(self, a: Args) -> Values:
        return {"on": int(self.physics.z.on)}

    @handles("ZCtrl.SetpntSet")
    def zctrl_setpnt_set(self, a: Args) -> Values:
        self.physics.z.setpoint_a = finite("setpoint", a["setpoint"])
        return {}

    @handles("ZCtrl.SetpntGet")
    def zctrl_setpnt_get(self, a: Args) -> Values:
        return {"setpoint": self.physics.z.setpoint_a}

    @handles("ZCtrl.GainSet")
    def zctrl_gain_set(self, a: Args) -> Values:
        p = finite("p_gain", a["p_gain"])
        if p < 0:
            raise CommandRefusedError(f"p_gain = {p:g} must not be negative")
        t = positive("time_constant_s", a["time_constant_s"])
        # Nanonis stores P and T and derives I = P / T; the I argument is ignored.
        self.physics.z.p_gain_m, self.physics.z.time_constant_s = p, t
        return {}

    @handles("ZCtrl.GainGet")
    def zctrl_gain_get(self, a: Args) -> Values:
        z = self.physics.z
        return {"p_gain": z.p_gain_m, "time_constant_s": z.time_constant_s, "i_gain": z.i_gain}

    @handles("ZCtrl.SwitchOffDelaySet")
    def zctrl_switch_off_delay_set(self, a: Args) -> Values:
        delay = finite("delay_s", a["delay_s"])
        if delay < 0:
            raise CommandRefusedError(f"delay_s = {delay:g} must not be negative")
        self.physics.z.switch_off_delay_s = delay
        return {}

    @handles("ZCtrl.SwitchOffDelayGet")
    def zctrl_switch_off_delay_get(self, a: Args) -> Values:
        return {"delay_s": self.physics.z.switch_off_delay_s}

    @handles("ZCtrl.TipLiftSet")
    def zctrl_tip_lift_set(self, a: Args) -> Values:
        self.physics.z.tip_lift_m = finite("lift_m", a["lift_m"])
        return {}

    @handles("ZCtrl.TipLiftGet")
    def zctrl_tip_lift_get(self, a: Args) -> Values:
        return {"lift_m": self.physics.z.tip_lift_m}

    @handles("ZCtrl.Home")
    def zctrl_home(self, a: Args) -> Values:
        self.physics.home()
        return {}

    @handles("ZCtrl.Withdraw")
    def zctrl_withdraw(self, a: Args) -> Values:
        self.physics.withdraw()
        return {}

    @handles("ZCtrl.LimitsSet")
    def zctrl_limits_set(self, a: Args) -> Values:
        high, low = finite("high_m", a["high_m"]), finite("low_m", a["low_m"])
        if high <= low:
            raise CommandRefusedError(f"high_m = {high:g} must be above low_m = {low:g}")
        z = self.physics.z
        z.high_m, z.low_m = high, low
        z.z_m = min(high, max(low, z.z_m))
        z.integrator_m = min(high, max(low, z.integrator_m))
        return {}

    @handles("ZCtrl.LimitsGet")
    def zctrl_limits_get(self, a: Args) -> Values:
        return {"high_m": self.physics.z.high_m, "low_m": self.physics.z.low_m}

    @handles("ZCtrl.StatusGet")
    def zctrl_status_get(self, a: Args) -> Values:
        z = self.physics.z
        return {"status": (3 if z.hold else 2) if z.on else 1}

    @handles("ZCtrl.CtrlListGet")
    def zctrl_ctrl_list_get(self, a: Args) -> Values:
        return {
            "list_of_controllers": list(Z_CONTROLLERS),
            "active_z_controller_index": self._active_controller,
        }

    @handles("ZCtrl.ActiveCtrlSet")
    def zctrl_active_ctrl_set(self, a: Args) -> Values:
        index = choice("z_controller_index", a["z_controller_index"], range(len(Z_CONTROLLERS)))
        self._active_controller = index
        return {}

    @handles("ZCtrl.HomePropsSet")
    def zctrl_home_props_set(self, a: Args) -> Values:
        mode = choice("relative_or_absolute", a["relative_or_absolute"], (0, 1, 2))
        self._home_props = (
            self._home_props[0] if mode == 0 else mode,
            finite("home_position_m", a["home_position_m"]),
        )
        return {}

    @handles("ZCtrl.HomePropsGet")
    def zctrl_home_props_get(self, a: Args) -> Values:
        mode, position = self._home_props
        return {"relative_or_absolute": mode, "home_position_m": position}

    @handles("ZCtrl.LimitsEnabledSet")
    def zctrl_limits_enabled_set(self, a: Args) -> Values:
        self._limits_enabled = choice("limit_z_status", a["limit_z_status"], (0, 1))
        return {}

    @handles("ZCtrl.LimitsEnabledGet")
    def zctrl_limits_enabled_get(self, a: Args) -> Values:
        return {"limit_z_status": self._limits_enabled}

    @handles("ZCtrl.WithdrawRateSet")
    def zctrl_withdraw_rate_set(self, a: Args) -> Values:
        self._withdraw_rate_m_s = positive("withdraw_slew_rate_m_s", a["withdraw_slew_rate_m_s"])
        return {}

    @handles("ZCtrl.WithdrawRateGet")
    def zctrl_withdraw_rate_get(self, a: Args) -> Values:
        return {"withdraw_slew_rate_m_s": self._withdraw_rate_m_s}

    # ----------------------------------------------------------------- Follow Me
    @handles("FolMe.XYPosSet")
    async def folme_xypos_set(self, a: Args) -> Values:
        physics = self.physics
        if physics.scan.running:
            raise CommandRefusedError(
                "a scan is running; stop it (Scan.Action 1) before moving the tip"
            )
        x, y = finite("x_m", a["x_m"]), finite("y_m", a["y_m"])
        half = PIEZO_RANGE_XY_M / 2
        if abs(x) > half or abs(y) > half:
            raise CommandRefusedError(
                f"({x:g}, {y:g}) m is outside the piezo range ±{half:g} m; use Motor.StartMove"
            )
        physics.folme.target = (x, y)
        if a["wait"]:
            distance = math.hypot(x - physics.x_m, y - physics.y_m)
            await self._sleep_until(self.clock.monotonic() + distance / physics.folme_speed())
            if physics.folme.target == (x, y):  # not redirected by another client meanwhile
                physics.x_m, physics.y_m = x, y
                physics.folme.target = None
        return {}

    @handles("FolMe.XYPosGet")
    def folme_xypos_get(self, a: Args) -> Values | Awaitable[Values]:
        return self._sampled(a["wait"], self._tip_xy)

    @handles("FolMe.SpeedSet")
    def folme_speed_set(self, a: Args) -> Values:
        self.physics.folme.speed_m_s = positive("speed_m_s", a["speed_m_s"])
        self.physics.folme.custom_speed = bool(choice("custom", a["custom"], (0, 1)))
        return {}

    @handles("FolMe.SpeedGet")
    def folme_speed_get(self, a: Args) -> Values:
        folme = self.physics.folme
        return {"speed_m_s": folme.speed_m_s, "custom": int(folme.custom_speed)}

    @handles("FolMe.Stop")
    def folme_stop(self, a: Args) -> Values:
        self.physics.folme.target = None
        return {}

    @handles("FolMe.OversamplGet")
    def folme_oversampl_get(self, a: Args) -> Values:
        rate = self.physics.loop_rate_hz / self._folme_oversampling
        return {"oversampling": self._folme_oversampling, "sample_rate_hz": rate}

    @handles("FolMe.OversamplSet")
    def folme_oversampl_set(self, a: Args) -> Values:
        value = a["oversampling"]
        if not 1 <= value <= 10_000:
            raise CommandRefusedError(f"oversampling = {value} must be 1..10000")
        self._folme_oversampling = value
        return {}

    # ----------------------------------------------------------------- Signals
    def _signal_index(self, index: int) -> int:
        if not 0 <= index < N_SIGNALS:
            raise CommandRefusedError(
                f"signal index {index} is out of range 0..{N_SIGNALS - 1} "
                "(Signals.NamesGet lists them)"
            )
        return index

    @handles("Signals.NamesGet")
    def signals_names_get(self, a: Args) -> Values:
        return {"names": list(SIGNAL_NAMES)}

    @handles("Signals.InSlotsGet")
    def signals_in_slots_get(self, a: Args) -> Values:
        slots = self.physics.slots
        return {"names": [SIGNAL_NAMES[i] for i in slots], "indexes": list(slots)}

    @handles("Signals.InSlotSet")
    def signals_in_slot_set(self, a: Args) -> Values:
        slot = choice("slot", a["slot"], range(N_SLOTS))
        self.physics.slots[slot] = self._signal_index(a["signal_index"])
        return {}

    @handles("Signals.MeasNamesGet")
    def signals_meas_names_get(self, a: Args) -> Values:
        return {"names": list(MEASUREMENT_CHANNELS)}

    @handles("Signals.ValGet")
    def signals_val_get(self, a: Args) -> Values | Awaitable[Values]:
        index = self._signal_index(a["index"])
        return self._sampled(a["wait"], lambda: {"value": self.physics.published[index]})

    @handles("Signals.ValsGet")
    def signals_vals_get(self, a: Args) -> Values | Awaitable[Values]:
        indexes = a["indexes"]
        if indexes and (min(indexes) < 0 or max(indexes) >= N_SIGNALS):
            for index in indexes:
                self._signal_index(index)

        def read() -> Values:
            published = self.physics.published
            return {"values": [published[i] for i in indexes]}

        return self._sampled(a["wait"], read)

    @handles("Signals.CalibrGet")
    def signals_calibr_get(self, a: Args) -> Values:
        index = self._signal_index(a["index"])
        calibration = 1.0 / PREAMP_GAINS[self.physics.gain_index] if index == CURRENT else 1.0
        if index in (X, Y, Z):
            calibration = self._piezo_sens[(X, Y, Z).index(index)]
        return {"calibration_per_v": calibration, "offset": 0.0}

    @handles("Signals.RangeGet")
    def signals_range_get(self, a: Args) -> Values:
        index = self._signal_index(a["index"])
        limit = {
            CURRENT: self.physics.saturation_a,
            BIAS: BIAS_LIMITS_V[self._bias_range],
            Z: self.physics.z.high_m,
            X: self._piezo_range[0] / 2,
            Y: self._piezo_range[1] / 2,
        }.get(index, 10.0)
        return {"max": limit, "min": -limit}

    # ----------------------------------------------------------------- Util
    @handles("Util.AcqPeriodSet")
    def util_acq_period_set(self, a: Args) -> Values:
        period = positive("period_s", a["period_s"])
        if not 1e-3 <= period <= 10.0:
            raise CommandRefusedError(f"period_s = {period:g} s must be 0.001..10 s")
        self.physics.acq_period_s = period
        return {}

    @handles("Util.AcqPeriodGet")
    def util_acq_period_get(self, a: Args) -> Values:
        return {"period_s": self.physics.acq_period_s}

    @handles("Util.RTFreqSet")
    def util_rt_freq_set(self, a: Args) -> Values:
        frequency = positive("frequency_hz", a["frequency_hz"])
        if not 100.0 <= frequency <= 20_000.0:
            raise CommandRefusedError(f"frequency_hz = {frequency:g} must be 100..20000 Hz")
        self.physics.set_loop_rate(frequency)
        return {}

    @handles("Util.RTFreqGet")
    def util_rt_freq_get(self, a: Args) -> Values:
        return {"frequency_hz": self.physics.loop_rate_hz}

    @handles("Util.SessionPathGet")
    def util_session_path_get(self, a: Args) -> Values:
        return {"path": str(self.session_dir)}

    @handles("Util.RTOversamplSet")
    def util_rt_oversampl_set(self, a: Args) -> Values:
        value = a["rt_oversampling"]
        if not 1 <= value <= 1000:
            raise CommandRefusedError(f"rt_oversampling = {value} must be 1..1000")
        self._rt_oversampling = value
        return {}

    @handles("Util.RTOversamplGet")
    def util_rt_oversampl_get(self, a: Args) -> Values:
        return {"rt_oversampling": self._rt_oversampling}

    @handles("Util.Lock")
    def util_lock(self, a: Args) -> Values:
        self._locked = True
        return {}

    @handles("Util.UnLock")
    def util_unlock(self, a: Args) -> Values:
        self._locked = False
        return {}

    def _settings_path(self, raw: str) -> Path:
        if not raw:
            raise CommandRefusedError("the settings file path is empty")
        path = Path(raw)
        return path if path.is_absolute() else self.session_dir / path

    @handles("Util.SettingsSave")
    def util_settings_save(self, a: Args) -> Values:
        path = self._settings_path(a["settings_file_path"])
        physics = self.physics
        state = {
            "bias_v": physics.bias_v,
            "setpoint_a": physics.z.setpoint_a,
            "p_gain_m": physics.z.p_gain_m,
            "time_constant_s": physics.z.time_constant_s,
            "acq_period_s": physics.acq_period_s,
            "slots": list(physics.slots),
        }
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(state, indent=1), encoding="utf-8")
        except OSError as exc:
            raise CommandRefusedError(f"cannot save settings to {path}: {exc.strerror}") from None
        return {}

    @handles("Util.SettingsLoad")
    def util_settings_load(self, a: Args) -> Values:
        path = self._settings_path(a["settings_file_path"])
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            bias, setpoint = float(state["bias_v"]), float(state["setpoint_a"])
            p_gain, tau = float(state["p_gain_m"]), float(state["time_constant_s"])
            period, slots = float(state["acq_period_s"]), [int(i) for i in state["slots"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CommandRefusedError(f"cannot load settings from {path}: {exc}") from None
        if len(slots) != N_SLOTS or not all(0 <= i < N_SIGNALS for i in slots):
            raise CommandRefusedError(f"settings file {path} has a bad slot list")
        physics = self.physics
        physics.bias_v = finite("bias_v", bias)
        physics.z.setpoint_a = finite("setpoint_a", setpoint)
        physics.z.p_gain_m, physics.z.time_constant_s = p_gain, positive("time_constant_s", tau)
        physics.acq_period_s = positive("acq_period_s", period)
        physics.slots[:] = slots
        return {}

    @handles("Util.VersionGet")
    def util_version_get(self, a: Args) -> Values:
        return {
            "product_line": "Nanonis SPM Control Software (atomlab simulator)",
            "version": "Generic 5",
            "host_app_release": 13520,
            "rt_engine_release": 13520,
        }

    # ----------------------------------------------------------------- Motor
    @handles("Motor.StartMove")
    def motor_start_move(self, a: Args) -> Values:
        direction = choice("direction", a["direction"], range(6))
        steps = a["steps"]
        axis, sign = divmod(direction, 2)
        delta = steps if sign == 0 else -steps
        self.physics.coarse_steps[axis] += delta
        self.physics.step_counters[axis] += delta
        return {}

    @handles("Motor.StopMove")
    def motor_stop_move(self, a: Args) -> Values:
        return {}

    @handles("Motor.PosGet")
    def motor_pos_get(self, a: Args) -> Values:
        steps = self.physics.coarse_steps
        return {
            "x_m": steps[0] * COARSE_STEP_XY_M,
            "y_m": steps[1] * COARSE_STEP_XY_M,
            "z_m": steps[2] * COARSE_STEP_Z_M,
        }

    @handles("Motor.StepCounterGet")
    def motor_step_counter_get(self, a: Args) -> Values:
        counters = list(self.physics.step_counters)
        for axis, flag in enumerate((a["reset_x"], a["reset_y"], a["reset_z"])):
            if flag:
                self.physics.step_counters[axis] = 0
        return {"x_steps": counters[0], "y_steps": counters[1], "z_steps": counters[2]}

    @handles("Motor.FreqAmpGet")
    def motor_freq_amp_get(self, a: Args) -> Values:
        frequency, amplitude = self._motor_freq_amp
        return {"frequency_hz": frequency, "amplitude_v": amplitude}

    @handles("Motor.FreqAmpSet")
    def motor_freq_amp_set(self, a: Args) -> Values:
        self._motor_freq_amp = (
            positive("frequency_hz", a["frequency_hz"]),
            positive("amplitude_v", a["amplitude_v"]),
        )
        return {}

    # ----------------------------------------------------------------- Piezo
    @handles("Piezo.RangeGet")
    def piezo_range_get(self, a: Args) -> Values:
        x, y, z = self._piezo_range
        return {"x_m": x, "y_m": y, "z_m": z}

    @handles("Piezo.RangeSet")
    def piezo_range_set(self, a: Args) -> Values:
        self._piezo_range = (
            positive("x_m", a["x_m"]),
            positive("y_m", a["y_m"]),
            positive("z_m", a["z_m"]),
        )
        return {}

    @handles("Piezo.SensGet")
    def piezo_sens_get(self, a: Args) -> Values:
        x, y, z = self._piezo_sens
        return {"calibration_x": x, "calibration_y": y, "calibration_z": z}

    @handles("Piezo.SensSet")
    def piezo_sens_set(self, a: Args) -> Values:
        self._piezo_sens = (
            positive("calibration_x", a["calibration_x"]),
            positive("calibration_y", a["calibration_y"]),
            positive("calibration_z", a["calibration_z"]),
        )
        return {}

    @handles("Piezo.CalibrGet")
    def piezo_calibr_get(self, a: Args) -> Values:
        x, y, z = self._piezo_sens
        return {"calibration_x": x, "calibration_y": y, "calibration_z": z}

    @handles("Piezo.HVAInfoGet")
    def piezo_hva_info_get(self, a: Args) -> Values:
        aux, gx, gy, gz = HVA_GAINS
        return {
            "gain_aux": aux,
            "gain_x": gx,
            "gain_y": gy,
            "gain_z": gz,
            "x_y_enabled_status": 1,
            "z_enabled_status": 1,
            "aux_enabled_status": 0,
        }

    @handles("Piezo.HVAStatusLEDGet")
    def piezo_hva_status_led_get(self, a: Args) -> Values:
        return {
            "overheated_status": 0,
            "hv_supply_status": 1,
            "high_temperature_status": 0,
            "output_connector_status": 1,
        }

    @handles("Piezo.XYZLimitsSet")
    def piezo_xyz_limits_set(self, a: Args) -> Values:
        enable = choice("enable_limits", a["enable_limits"], (0, 1, 2))
        values = dict(self._xyz_limits)
        for axis in "xyz":
            low = finite(f"voltage_limit_{axis}_low_v", a[f"voltage_limit_{axis}_low_v"])
            high = finite(f"voltage_limit_{axis}_high_v", a[f"voltage_limit_{axis}_high_v"])
            if low >= high:
                raise CommandRefusedError(
                    f"the {axis} voltage limits {low:g}..{high:g} V are empty"
                )
            values[f"voltage_limit_{axis}_low_v"], values[f"voltage_limit_{axis}_high_v"] = (
                low,
                high,
            )
        if enable:
            values["enable_limits"] = int(enable == 1)
        self._xyz_limits = values
        return {}

    @handles("Piezo.XYZLimitsGet")
    def piezo_xyz_limits_get(self, a: Args) -> Values:
        return dict(self._xyz_limits)

    @handles("Piezo.HystOnOffSet")
    def piezo_hyst_on_off_set(self, a: Args) -> Values:
        self._hysteresis_on = choice("on_off", a["on_off"], (0, 1))
        return {}

    @handles("Piezo.HystOnOffGet")
    def piezo_hyst_on_off_get(self, a: Args) -> Values:
        return {"on_off": self._hysteresis_on}

    @handles("Piezo.TiltSet")
    def piezo_tilt_set(self, a: Args) -> Values:
        self._tilt = (
            finite("tilt_x_deg", a["tilt_x_deg"]),
            finite("tilt_y_deg", a["tilt_y_deg"]),
        )
        return {}

    @handles("Piezo.TiltGet")
    def piezo_tilt_get(self, a: Args) -> Values:
        return {"tilt_x_deg": self._tilt[0], "tilt_y_deg": self._tilt[1]}

    @handles("Piezo.DriftCompSet")
    def piezo_drift_comp_set(self, a: Args) -> Values:
        drift = self.physics.drift
        on = choice("on", a["on"], (0, 1, 2))
        if on:
            drift.compensation_on = on == 1
        drift.compensation = (
            finite("vx_m_s", a["vx_m_s"]),
            finite("vy_m_s", a["vy_m_s"]),
            finite("vz_m_s", a["vz_m_s"]),
        )
        drift.saturation_limit = finite("saturation_limit", a["saturation_limit"])
        return {}

    @handles("Piezo.DriftCompGet")
    def piezo_drift_comp_get(self, a: Args) -> Values:
        drift = self.physics.drift
        vx, vy, vz = drift.compensation
        return {
            "on": int(drift.compensation_on),
            "vx_m_s": vx,
            "vy_m_s": vy,
            "vz_m_s": vz,
            "x_saturated": 0,
            "y_saturated": 0,
            "z_saturated": 0,
            "saturation_limit": drift.saturation_limit,
        }

    # ----------------------------------------------------------------- Tip shaper
    @handles("TipShaper.Start")
    async def tip_shaper_start(self, a: Args) -> Values:
        props = self._tip_shaper_props
        duration = sum(
            props[k]
            for k in ("lift_time_1_s", "bias_settling_time_s", "lift_time_2_s", "end_wait_time_s")
        )
        if a["wait"]:
            await self._sleep_until(self.clock.monotonic() + max(0.0, duration))
        self.physics.restore_tip("tip shaper")
        return {}

    @handles("TipShaper.PropsSet")
    def tip_shaper_props_set(self, a: Args) -> Values:
        for key, value in a.items():
            if isinstance(value, float):
                finite(key, value)
        self._tip_shaper_props = dict(a)
        return {}

    @handles("TipShaper.PropsGet")
    def tip_shaper_props_get(self, a: Args) -> Values:
        return dict(self._tip_shaper_props)

    # ----------------------------------------------------------------- Safe tip
    @handles("SafeTip.OnOffSet")
    def safe_tip_on_off_set(self, a: Args) -> Values:
        safe = self.physics.safe_tip
        safe.on = tristate("safe_tip_status", a["safe_tip_status"], safe.on)
        return {}

    @handles("SafeTip.OnOffGet")
    def safe_tip_on_off_get(self, a: Args) -> Values:
        return {"safe_tip_status": int(self.physics.safe_tip.on)}

    @handles("SafeTip.PropsSet")
    def safe_tip_props_set(self, a: Args) -> Values:
        safe = self.physics.safe_tip
        safe.auto_recovery = bool(choice("auto_recovery", a["auto_recovery"], (0, 1)))
        safe.auto_pause_scan = bool(choice("auto_pause_scan", a["auto_pause_scan"], (0, 1)))
        safe.threshold_a = positive("threshold", a["threshold"])
        return {}

    @handles("SafeTip.PropsGet")
    def safe_tip_props_get(self, a: Args) -> Values:
        safe = self.physics.safe_tip
        return {
            "auto_recovery": int(safe.auto_recovery),
            "auto_pause_scan": int(safe.auto_pause_scan),
            "threshold": safe.threshold_a,
        }

    @handles("SafeTip.SignalGet")
    def safe_tip_signal_get(self, a: Args) -> Values:
        return {"signal_value": self.physics.current_a}

    # ----------------------------------------------------------------- Auto approach
    @handles("AutoApproach.Open")
    def auto_approach_open(self, a: Args) -> Values:
        return {}

    @handles("AutoApproach.OnOffSet")
    def auto_approach_on_off_set(self, a: Args) -> Values:
        on = choice("on_off", a["on_off"], (0, 1))
        physics = self.physics
        if on and not physics.approach.running:
            if physics.scan.running:
                raise CommandRefusedError("a scan is running; stop it before approaching")
            physics.start_approach()
        elif not on:
            physics.stop_approach()
        return {}

    @handles("AutoApproach.OnOffGet")
    def auto_approach_on_off_get(self, a: Args) -> Values:
        return {"status": int(self.physics.approach.running)}
