"""What the simulated STM does for each Nanonis command: one handler per command name.

Decoding and encoding go through :mod:`atomlab.instrument.protocol` and its command table, so
the simulator and the client share one implementation of the protocol. :meth:`dispatch` never
raises: an unknown command, a body that does not fit the signature, bad argument values and even
a bug in a handler all become an error reply on the same connection.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

from atomlab.core.clock import Clock
from atomlab.core.errors import InvalidInputError
from atomlab.core.logging import get_logger
from atomlab.instrument import CommandSpec, ProtocolError, lookup
from atomlab.instrument.protocol import (
    ErrorInfo,
    decode_args,
    encode_error_reply,
    encode_reply,
)
from atomlab.sim.stm_physics import (
    COARSE_STEP_XY_M,
    COARSE_STEP_Z_M,
    PREAMP_GAINS,
    SIGNAL_NAMES,
    StmPhysics,
)
from atomlab.sim.stm_scan import MAX_PIXELS, coerce_pixels

Args = dict[str, Any]
Values = dict[str, Any]
Handler = Callable[[Args], Any]
"""Returns reply values, or an awaitable of them when the reply has to wait."""

PIEZO_RANGE_XY_M: Final = 1e-6
PIEZO_RANGE_Z_M: Final = 4e-7
BIAS_RANGES: Final = ("±10 V", "±1 V")
BIAS_LIMITS_V: Final = (10.0, 1.0)
CURRENT_FILTERS: Final = ("10 kHz", "1 kHz", "100 Hz")
FOLME_OVERSAMPLING: Final = 10
MAX_WAIT_S: Final = 600.0
WAIT_POLL_S: Final = 0.01
SESSION_PATH: Final = "sim://atomlab/session"
_ARGS_CACHE_SIZE: Final = 4096
_ARGS_CACHE_BODY: Final = 512
_log = get_logger("atomlab.sim")


class CommandRefusedError(InvalidInputError):
    """The simulated instrument refuses a request; the message goes into the error reply."""

    type_name = "command_refused"


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise CommandRefusedError(f"{name} = {value!r} must be a finite number")
    return value


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise CommandRefusedError(f"{name} = {value!r} must be a positive number")
    return value


def _choice(name: str, value: int, allowed: range | tuple[int, ...]) -> int:
    if value not in allowed:
        raise CommandRefusedError(f"{name} = {value} is not one of {list(allowed)}")
    return value


@dataclass(frozen=True, slots=True)
class _Route:
    spec: CommandSpec
    handler: Handler


_ROUTES: dict[str, str] = {}
"""Nanonis command name -> handler method name, filled by :func:`_handles`."""


def _handles(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(method: Callable[..., Any]) -> Callable[..., Any]:
        _ROUTES[name] = method.__name__
        return method

    return register


class StmCommands:
    """The command handlers of one simulated STM, bound to its physics and clock."""

    def __init__(self, physics: StmPhysics, clock: Clock) -> None:
        self.physics = physics
        self.clock = clock
        self.calls = 0
        self.errors = 0
        self._bias_range = 0
        self._bias_calibration = (1.0, 0.0)
        self._filter_index = 0
        self._motor_freq_amp = (1000.0, 100.0)
        self._step_counters = [0, 0, 0]
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
        self._args_cache: dict[tuple[str, bytes], Args] = {}
        self.routes: dict[str, _Route] = {}
        for command, method_name in _ROUTES.items():
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

    # ----------------------------------------------------------------- waiting
    async def _sleep_until(self, t_s: float) -> None:
        now = self.clock.monotonic()
        if t_s > now:
            await self.clock.sleep_async(min(t_s - now, MAX_WAIT_S))
        self.physics.advance_to(self.clock.monotonic())

    def _sampled(self, wait: int, read: Callable[[], Values]) -> Values | Awaitable[Values]:
        """``read()`` now (wait = 0: the last published sample, 0..Tap old), or after a full
        acquisition period measured after the call (wait = 1: the reply comes Tap..2Tap later)."""
        if not wait:
            return read()
        return self._read_fresh(read)

    async def _read_fresh(self, read: Callable[[], Values]) -> Values:
        physics = self.physics
        # the sample in flight (published next) is discarded; the one after it is returned
        wanted = physics.publications + 2
        wake = physics.published_at_s + 2 * physics.acq_period_s
        while physics.publications < wanted:
            await self._sleep_until(wake)
            wake = self.clock.monotonic() + physics.dt_s
        return read()

    # ----------------------------------------------------------------- Bias
    @_handles("Bias.Set")
    def bias_set(self, a: Args) -> Values:
        bias = _finite("bias_v", a["bias_v"])
        limit = BIAS_LIMITS_V[self._bias_range]
        if abs(bias) > limit:
            raise CommandRefusedError(
                f"bias_v = {bias:g} V is outside the selected range ±{limit:g} V"
            )
        self.physics.bias_v = bias
        return {}

    @_handles("Bias.Get")
    def bias_get(self, a: Args) -> Values:
        return {"bias_v": self.physics.bias_v}

    @_handles("Bias.RangeSet")
    def bias_range_set(self, a: Args) -> Values:
        self._bias_range = _choice("range_index", a["range_index"], range(len(BIAS_RANGES)))
        return {}

    @_handles("Bias.RangeGet")
    def bias_range_get(self, a: Args) -> Values:
        return {"ranges": list(BIAS_RANGES), "range_index": self._bias_range}

    @_handles("Bias.CalibrSet")
    def bias_calibr_set(self, a: Args) -> Values:
        self._bias_calibration = (
            _finite("calibration", a["calibration"]),
            _finite("offset", a["offset"]),
        )
        return {}

    @_handles("Bias.CalibrGet")
    def bias_calibr_get(self, a: Args) -> Values:
        return {"calibration": self._bias_calibration[0], "offset": self._bias_calibration[1]}

    @_handles("Bias.Pulse")
    async def bias_pulse(self, a: Args) -> Values:
        width = _positive("width_s", a["width_s"])
        if width > 10.0:
            raise CommandRefusedError(
                f"width_s = {width:g} s is longer than the 10 s a pulse may last"
            )
        amplitude = _finite("bias_v", a["bias_v"])
        pulse = amplitude if a["absolute"] == 2 else self.physics.bias_v + amplitude
        if a["wait_until_done"]:
            await self._sleep_until(self.clock.monotonic() + width)
        self.physics.bias_pulse(pulse)
        return {}

    # ----------------------------------------------------------------- Current
    @_handles("Current.Get")
    def current_get(self, a: Args) -> Values:
        return {"current_a": self.physics.current_a}

    @_handles("Current.GainSet")
    def current_gain_set(self, a: Args) -> Values:
        self.physics.gain_index = _choice("gain_index", a["gain_index"], range(len(PREAMP_GAINS)))
        if a["filter_index"] != -1:
            self._filter_index = _choice(
                "filter_index", a["filter_index"], range(len(CURRENT_FILTERS))
            )
        return {}

    @_handles("Current.GainsGet")
    def current_gains_get(self, a: Args) -> Values:
        return {
            "gains": [f"10^{round(math.log10(g))} V/A" for g in PREAMP_GAINS],
            "gain_index": self.physics.gain_index,
            "filters": list(CURRENT_FILTERS),
            "filter_index": self._filter_index,
        }

    @_handles("Current.CalibrGet")
    def current_calibr_get(self, a: Args) -> Values:
        index = a["gain_index"]
        if index == -1:
            index = self.physics.gain_index
        _choice("gain_index", index, range(len(PREAMP_GAINS)))
        return {"calibration": 1.0 / PREAMP_GAINS[index], "offset": 0.0}

    # ----------------------------------------------------------------- Z controller
    @_handles("ZCtrl.ZPosSet")
    def zctrl_zpos_set(self, a: Args) -> Values:
        z = self.physics.z
        value = _finite("z_m", a["z_m"])
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

    @_handles("ZCtrl.ZPosGet")
    def zctrl_zpos_get(self, a: Args) -> Values:
        return {"z_m": self.physics.z.z_m}

    @_handles("ZCtrl.OnOffSet")
    def zctrl_onoff_set(self, a: Args) -> Values:
        self.physics.set_z_on(bool(_choice("on", a["on"], (0, 1))))
        return {}

    @_handles("ZCtrl.OnOffGet")
    def zctrl_onoff_get(self, a: Args) -> Values:
        return {"on": int(self.physics.z.on)}

    @_handles("ZCtrl.SetpntSet")
    def zctrl_setpnt_set(self, a: Args) -> Values:
        self.physics.z.setpoint_a = _finite("setpoint", a["setpoint"])
        return {}

    @_handles("ZCtrl.SetpntGet")
    def zctrl_setpnt_get(self, a: Args) -> Values:
        return {"setpoint": self.physics.z.setpoint_a}

    @_handles("ZCtrl.GainSet")
    def zctrl_gain_set(self, a: Args) -> Values:
        p = _finite("p_gain", a["p_gain"])
        if p < 0:
            raise CommandRefusedError(f"p_gain = {p:g} must not be negative")
        t = _positive("time_constant_s", a["time_constant_s"])
        # Nanonis stores P and T and derives I = P / T; the I argument is ignored.
        self.physics.z.p_gain_m, self.physics.z.time_constant_s = p, t
        return {}

    @_handles("ZCtrl.GainGet")
    def zctrl_gain_get(self, a: Args) -> Values:
        z = self.physics.z
        return {"p_gain": z.p_gain_m, "time_constant_s": z.time_constant_s, "i_gain": z.i_gain}

    @_handles("ZCtrl.SwitchOffDelaySet")
    def zctrl_switch_off_delay_set(self, a: Args) -> Values:
        delay = _finite("delay_s", a["delay_s"])
        if delay < 0:
            raise CommandRefusedError(f"delay_s = {delay:g} must not be negative")
        self.physics.z.switch_off_delay_s = delay
        return {}

    @_handles("ZCtrl.SwitchOffDelayGet")
    def zctrl_switch_off_delay_get(self, a: Args) -> Values:
        return {"delay_s": self.physics.z.switch_off_delay_s}

    @_handles("ZCtrl.TipLiftSet")
    def zctrl_tip_lift_set(self, a: Args) -> Values:
        self.physics.z.tip_lift_m = _finite("lift_m", a["lift_m"])
        return {}

    @_handles("ZCtrl.TipLiftGet")
    def zctrl_tip_lift_get(self, a: Args) -> Values:
        return {"lift_m": self.physics.z.tip_lift_m}

    @_handles("ZCtrl.Home")
    def zctrl_home(self, a: Args) -> Values:
        self.physics.home()
        return {}

    @_handles("ZCtrl.Withdraw")
    def zctrl_withdraw(self, a: Args) -> Values:
        self.physics.withdraw()
        return {}

    @_handles("ZCtrl.LimitsSet")
    def zctrl_limits_set(self, a: Args) -> Values:
        high, low = _finite("high_m", a["high_m"]), _finite("low_m", a["low_m"])
        if high <= low:
            raise CommandRefusedError(f"high_m = {high:g} must be above low_m = {low:g}")
        z = self.physics.z
        z.high_m, z.low_m = high, low
        z.z_m = min(high, max(low, z.z_m))
        z.integrator_m = min(high, max(low, z.integrator_m))
        return {}

    @_handles("ZCtrl.LimitsGet")
    def zctrl_limits_get(self, a: Args) -> Values:
        return {"high_m": self.physics.z.high_m, "low_m": self.physics.z.low_m}

    @_handles("ZCtrl.StatusGet")
    def zctrl_status_get(self, a: Args) -> Values:
        return {"status": 2 if self.physics.z.on else 1}

    # ----------------------------------------------------------------- Follow Me
    @_handles("FolMe.XYPosSet")
    async def folme_xypos_set(self, a: Args) -> Values:
        physics = self.physics
        if physics.scan.running:
            raise CommandRefusedError(
                "a scan is running; stop it (Scan.Action 1) before moving the tip"
            )
        x, y = _finite("x_m", a["x_m"]), _finite("y_m", a["y_m"])
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

    @_handles("FolMe.XYPosGet")
    def folme_xypos_get(self, a: Args) -> Values | Awaitable[Values]:
        return self._sampled(a["wait"], self._tip_xy)

    def _tip_xy(self) -> Values:
        return {"x_m": self.physics.x_m, "y_m": self.physics.y_m}

    @_handles("FolMe.SpeedSet")
    def folme_speed_set(self, a: Args) -> Values:
        self.physics.folme.speed_m_s = _positive("speed_m_s", a["speed_m_s"])
        self.physics.folme.custom_speed = bool(_choice("custom", a["custom"], (0, 1)))
        return {}

    @_handles("FolMe.SpeedGet")
    def folme_speed_get(self, a: Args) -> Values:
        folme = self.physics.folme
        return {"speed_m_s": folme.speed_m_s, "custom": int(folme.custom_speed)}

    @_handles("FolMe.Stop")
    def folme_stop(self, a: Args) -> Values:
        self.physics.folme.target = None
        return {}

    @_handles("FolMe.OversamplGet")
    def folme_oversampl_get(self, a: Args) -> Values:
        rate = self.physics.loop_rate_hz / FOLME_OVERSAMPLING
        return {"oversampling": FOLME_OVERSAMPLING, "sample_rate_hz": rate}

    # ----------------------------------------------------------------- Scan
    @_handles("Scan.Action")
    def scan_action(self, a: Args) -> Values:
        action = _choice("action", a["action"], range(7))
        scan = self.physics.scan
        if action == 0:
            self.physics.start_scan(direction_up=bool(a["direction_up"]))
        elif action == 1:
            scan.stop()
        elif action in (2, 4):
            scan.paused = scan.running
        elif action in (3, 5):
            scan.paused = False
        elif scan.running:
            raise CommandRefusedError("cannot go to the frame centre while a scan is running")
        else:
            self.physics.folme.target = (scan.frame.center_x_m, scan.frame.center_y_m)
        return {}

    @_handles("Scan.StatusGet")
    def scan_status_get(self, a: Args) -> Values:
        return {"running": int(self.physics.scan.status_running)}

    @_handles("Scan.WaitEndOfScan")
    async def scan_wait_end(self, a: Args) -> Values:
        scan = self.physics.scan
        timeout_ms = a["timeout_ms"]
        start = self.clock.monotonic()
        deadline = math.inf if timeout_ms < 0 else start + timeout_ms / 1000.0  # -1: forever
        finished = scan.scans_finished
        while scan.running and scan.scans_finished == finished:
            now = self.clock.monotonic()
            if now >= deadline:
                return {"timed_out": 1, "file_path": ""}
            await self._sleep_until(min(deadline, now + WAIT_POLL_S))
        return {"timed_out": 0, "file_path": self._scan_file(scan.scans_finished)}

    def _scan_file(self, number: int) -> str:
        return f"{SESSION_PATH}/sim_{self.physics.seed}_{number:04d}.sxm" if number else ""

    @_handles("Scan.FrameSet")
    def scan_frame_set(self, a: Args) -> Values:
        if self.physics.scan.running:
            raise CommandRefusedError(
                "a scan is running; stop it (Scan.Action 1) to change the frame"
            )
        frame = self.physics.scan.frame
        cx, cy = _finite("center_x_m", a["center_x_m"]), _finite("center_y_m", a["center_y_m"])
        width, height = _positive("width_m", a["width_m"]), _positive("height_m", a["height_m"])
        angle = _finite("angle_deg", a["angle_deg"])
        if width > PIEZO_RANGE_XY_M or height > PIEZO_RANGE_XY_M:
            raise CommandRefusedError(
                f"the frame is larger than the {PIEZO_RANGE_XY_M:g} m piezo range"
            )
        frame.center_x_m, frame.center_y_m = cx, cy
        frame.width_m, frame.height_m, frame.angle_deg = width, height, angle
        return {}

    @_handles("Scan.FrameGet")
    def scan_frame_get(self, a: Args) -> Values:
        f = self.physics.scan.frame
        return {
            "center_x_m": f.center_x_m,
            "center_y_m": f.center_y_m,
            "width_m": f.width_m,
            "height_m": f.height_m,
            "angle_deg": f.angle_deg,
        }

    @_handles("Scan.BufferSet")
    def scan_buffer_set(self, a: Args) -> Values:
        scan = self.physics.scan
        if scan.running:
            raise CommandRefusedError(
                "a scan is running; stop it (Scan.Action 1) to change the buffer"
            )
        channels = list(a["channels"])
        if not channels or len(set(channels)) != len(channels) or len(channels) > 24:
            raise CommandRefusedError(
                f"channels = {channels} must be 1 to 24 distinct signal indexes"
            )
        for ch in channels:
            _choice("channel", ch, range(len(SIGNAL_NAMES)))
        pixels, lines = a["pixels"], a["lines"]
        if not 1 <= pixels <= MAX_PIXELS or not 1 <= lines <= MAX_PIXELS:
            raise CommandRefusedError(
                f"pixels = {pixels} and lines = {lines} must each be 1..{MAX_PIXELS}"
            )
        scan.buffer.channels = tuple(channels)
        scan.buffer.pixels = coerce_pixels(pixels)
        scan.buffer.lines = lines
        return {}

    @_handles("Scan.BufferGet")
    def scan_buffer_get(self, a: Args) -> Values:
        b = self.physics.scan.buffer
        return {"channels": list(b.channels), "pixels": b.pixels, "lines": b.lines}

    @_handles("Scan.SpeedSet")
    def scan_speed_set(self, a: Args) -> Values:
        speed = self.physics.scan.speed
        keep = _choice("keep_constant", a["keep_constant"], (0, 1, 2)) or speed.keep_constant
        ratio = _positive("speed_ratio", a["speed_ratio"])
        if keep == 1:
            speed.forward_speed_m_s = _positive("forward_speed_m_s", a["forward_speed_m_s"])
            speed.backward_speed_m_s = _positive("backward_speed_m_s", a["backward_speed_m_s"])
        else:
            speed.forward_time_per_line_s = _positive(
                "forward_time_per_line_s", a["forward_time_per_line_s"]
            )
            speed.backward_time_per_line_s = _positive(
                "backward_time_per_line_s", a["backward_time_per_line_s"]
            )
        speed.keep_constant, speed.speed_ratio = keep, ratio
        return {}

    @_handles("Scan.SpeedGet")
    def scan_speed_get(self, a: Args) -> Values:
        scan = self.physics.scan
        fwd_speed, bwd_speed = scan.speed.speeds(scan.frame.width_m)
        fwd_time, bwd_time = scan.speed.line_times(scan.frame.width_m)
        return {
            "forward_speed_m_s": fwd_speed,
            "backward_speed_m_s": bwd_speed,
            "forward_time_per_line_s": fwd_time,
            "backward_time_per_line_s": bwd_time,
            "keep_constant": scan.speed.keep_constant,
            "speed_ratio": scan.speed.speed_ratio,
        }

    @_handles("Scan.XYPosGet")
    def scan_xypos_get(self, a: Args) -> Values | Awaitable[Values]:
        return self._sampled(a["wait"], self._tip_xy)

    @_handles("Scan.FrameDataGrab")
    def scan_frame_data_grab(self, a: Args) -> Values:
        scan = self.physics.scan
        channel = a["channel_index"]
        forward = bool(_choice("forward", a["forward"], (0, 1)))
        image = scan.images.get((channel, forward))
        if image is None:
            if channel not in scan.buffer.channels:
                raise CommandRefusedError(
                    f"channel {channel} is not recorded; record it with Scan.BufferSet "
                    f"(recorded: {list(scan.buffer.channels)})"
                )
            raise CommandRefusedError("no scan data yet; start a scan with Scan.Action 0")
        return {
            "channel_name": SIGNAL_NAMES[channel],
            "data": image,
            "direction_up": int(scan.direction_up),
        }

    # ----------------------------------------------------------------- Signals
    def _signal_index(self, index: int) -> int:
        if not 0 <= index < len(SIGNAL_NAMES):
            raise CommandRefusedError(
                f"signal index {index} is out of range 0..{len(SIGNAL_NAMES) - 1} "
                "(Signals.NamesGet lists them)"
            )
        return index

    @_handles("Signals.NamesGet")
    def signals_names_get(self, a: Args) -> Values:
        return {"names": list(SIGNAL_NAMES)}

    @_handles("Signals.ValGet")
    def signals_val_get(self, a: Args) -> Values | Awaitable[Values]:
        index = self._signal_index(a["index"])
        return self._sampled(a["wait"], lambda: {"value": self.physics.published[index]})

    @_handles("Signals.ValsGet")
    def signals_vals_get(self, a: Args) -> Values | Awaitable[Values]:
        indexes = a["indexes"]
        if indexes and (min(indexes) < 0 or max(indexes) >= len(SIGNAL_NAMES)):
            for index in indexes:
                self._signal_index(index)

        def read() -> Values:
            published = self.physics.published
            return {"values": [published[i] for i in indexes]}

        return self._sampled(a["wait"], read)

    @_handles("Signals.CalibrGet")
    def signals_calibr_get(self, a: Args) -> Values:
        index = self._signal_index(a["index"])
        calibration = 1.0 / PREAMP_GAINS[self.physics.gain_index] if index == 0 else 1.0
        return {"calibration_per_v": calibration, "offset": 0.0}

    @_handles("Signals.RangeGet")
    def signals_range_get(self, a: Args) -> Values:
        index = self._signal_index(a["index"])
        limit = {
            0: self.physics.saturation_a,
            1: BIAS_LIMITS_V[self._bias_range],
            2: self.physics.z.high_m,
            3: PIEZO_RANGE_XY_M / 2,
            4: PIEZO_RANGE_XY_M / 2,
        }.get(index, 10.0)
        return {"max": limit, "min": -limit}

    # ----------------------------------------------------------------- Util
    @_handles("Util.AcqPeriodSet")
    def util_acq_period_set(self, a: Args) -> Values:
        period = _positive("period_s", a["period_s"])
        if not 1e-3 <= period <= 10.0:
            raise CommandRefusedError(f"period_s = {period:g} s must be 0.001..10 s")
        self.physics.acq_period_s = period
        return {}

    @_handles("Util.AcqPeriodGet")
    def util_acq_period_get(self, a: Args) -> Values:
        return {"period_s": self.physics.acq_period_s}

    @_handles("Util.RTFreqSet")
    def util_rt_freq_set(self, a: Args) -> Values:
        frequency = _positive("frequency_hz", a["frequency_hz"])
        if not 100.0 <= frequency <= 20_000.0:
            raise CommandRefusedError(f"frequency_hz = {frequency:g} must be 100..20000 Hz")
        self.physics.set_loop_rate(frequency)
        return {}

    @_handles("Util.RTFreqGet")
    def util_rt_freq_get(self, a: Args) -> Values:
        return {"frequency_hz": self.physics.loop_rate_hz}

    @_handles("Util.SessionPathGet")
    def util_session_path_get(self, a: Args) -> Values:
        return {"path": SESSION_PATH}

    @_handles("Util.VersionGet")
    def util_version_get(self, a: Args) -> Values:
        return {
            "product_line": "Nanonis SPM Control Software (atomlab simulator)",
            "version": "Generic 5",
            "host_app_release": 13520,
            "rt_engine_release": 13520,
        }

    # ----------------------------------------------------------------- Motor
    @_handles("Motor.StartMove")
    def motor_start_move(self, a: Args) -> Values:
        direction = _choice("direction", a["direction"], range(6))
        steps = a["steps"]
        axis, sign = divmod(direction, 2)
        delta = steps if sign == 0 else -steps
        self.physics.coarse_steps[axis] += delta
        self._step_counters[axis] += delta
        return {}

    @_handles("Motor.StopMove")
    def motor_stop_move(self, a: Args) -> Values:
        return {}

    @_handles("Motor.PosGet")
    def motor_pos_get(self, a: Args) -> Values:
        steps = self.physics.coarse_steps
        return {
            "x_m": steps[0] * COARSE_STEP_XY_M,
            "y_m": steps[1] * COARSE_STEP_XY_M,
            "z_m": steps[2] * COARSE_STEP_Z_M,
        }

    @_handles("Motor.StepCounterGet")
    def motor_step_counter_get(self, a: Args) -> Values:
        counters = list(self._step_counters)
        for axis, flag in enumerate((a["reset_x"], a["reset_y"], a["reset_z"])):
            if flag:
                self._step_counters[axis] = 0
        return {"x_steps": counters[0], "y_steps": counters[1], "z_steps": counters[2]}

    @_handles("Motor.FreqAmpGet")
    def motor_freq_amp_get(self, a: Args) -> Values:
        frequency, amplitude = self._motor_freq_amp
        return {"frequency_hz": frequency, "amplitude_v": amplitude}

    @_handles("Motor.FreqAmpSet")
    def motor_freq_amp_set(self, a: Args) -> Values:
        self._motor_freq_amp = (
            _positive("frequency_hz", a["frequency_hz"]),
            _positive("amplitude_v", a["amplitude_v"]),
        )
        return {}

    # ----------------------------------------------------------------- Piezo
    @_handles("Piezo.RangeGet")
    def piezo_range_get(self, a: Args) -> Values:
        return {"x_m": PIEZO_RANGE_XY_M, "y_m": PIEZO_RANGE_XY_M, "z_m": PIEZO_RANGE_Z_M}

    @_handles("Piezo.TiltSet")
    def piezo_tilt_set(self, a: Args) -> Values:
        self._tilt = (
            _finite("tilt_x_deg", a["tilt_x_deg"]),
            _finite("tilt_y_deg", a["tilt_y_deg"]),
        )
        return {}

    @_handles("Piezo.TiltGet")
    def piezo_tilt_get(self, a: Args) -> Values:
        return {"tilt_x_deg": self._tilt[0], "tilt_y_deg": self._tilt[1]}

    @_handles("Piezo.DriftCompSet")
    def piezo_drift_comp_set(self, a: Args) -> Values:
        drift = self.physics.drift
        on = _choice("on", a["on"], (0, 1, 2))
        if on:
            drift.compensation_on = on == 1
        drift.compensation = (
            _finite("vx_m_s", a["vx_m_s"]),
            _finite("vy_m_s", a["vy_m_s"]),
            _finite("vz_m_s", a["vz_m_s"]),
        )
        drift.saturation_limit = _finite("saturation_limit", a["saturation_limit"])
        return {}

    @_handles("Piezo.DriftCompGet")
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
    @_handles("TipShaper.Start")
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

    @_handles("TipShaper.PropsSet")
    def tip_shaper_props_set(self, a: Args) -> Values:
        for key, value in a.items():
            if isinstance(value, float):
                _finite(key, value)
        self._tip_shaper_props = dict(a)
        return {}

    @_handles("TipShaper.PropsGet")
    def tip_shaper_props_get(self, a: Args) -> Values:
        return dict(self._tip_shaper_props)
