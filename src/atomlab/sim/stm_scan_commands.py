"""The simulated Scan module: frame, buffer, speed, the raster, images, properties and saving.

Recorded channels are slots of the Signals Manager (``Signals.InSlotsGet``), as on Nanonis. A
finished scan is saved as a real ``.sxm`` file in the session folder when autosave is on
(``Scan.PropsSet``; "All" by default when the simulator was given a session folder, off
otherwise) and ``Scan.WaitEndOfScan`` returns its path;
``Scan.Save`` saves the buffer at any time. Continuous scanning restarts a finished frame
(bouncy: in the other direction).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import numpy as np

from atomlab.sim.stm_files import SxmChannel, next_path, write_sxm
from atomlab.sim.stm_physics import PREAMP_GAINS, SAMPLE_TEMPERATURE_K
from atomlab.sim.stm_routes import (
    WAIT_POLL_S,
    Args,
    CommandRefusedError,
    HandlerBase,
    Values,
    choice,
    finite,
    handles,
    positive,
)
from atomlab.sim.stm_scan import MAX_PIXELS, coerce_pixels
from atomlab.sim.stm_signals import CURRENT, N_SLOTS, SIGNAL_NAMES, signal_base_name, signal_unit

PIEZO_RANGE_XY_M: Final = 1e-6
DEFAULT_SERIES: Final = "sim_"
SCAN_MODULES: Final = ("Bias", "Current", "Z-Controller")
_AUTOSAVE_SET: Final = {1: "all", 2: "next", 3: "off"}
_AUTOSAVE_GET: Final = {"all": 0, "next": 1, "off": 2}


class ScanHandlers(HandlerBase):
    """The Scan module's commands."""

    def _tip_xy(self) -> Values:
        return {"x_m": self.physics.x_m, "y_m": self.physics.y_m}

    def __init__(self) -> None:
        self._series = DEFAULT_SERIES
        self._comment = ""
        # with a session folder (atomlab sim spm, tests) finished frames are saved as on
        # Nanonis; without one (an in-process simulator, a learning run) only when asked
        self._autosave = "all" if self._session_dir is not None else "off"
        self._autopaste = "off"
        self._modules: list[str] = list(SCAN_MODULES)
        self._saved: dict[int, Path] = {}
        self.physics.on_scan_finished = self._scan_finished

    def _scan_finished(self) -> None:
        """Called by the physics as a frame completes: autosave, then maybe scan again."""
        scan = self.physics.scan
        if self._autosave in ("all", "next"):
            try:
                self._saved[scan.scans_finished] = self.save_scan()
            except OSError as exc:  # a full disk must not stop the instrument
                self.physics.events.append(
                    self.physics.event("save_failed", f"{type(exc).__name__}: {exc}")
                )
            if self._autosave == "next":
                self._autosave = "off"

    def save_scan(self) -> Path:
        """Write the scan buffer as a ``.sxm`` file in the session folder; its path."""
        physics = self.physics
        scan = physics.scan
        frame = scan.frame
        channels = []
        for slot in scan.buffer.channels:
            forward = scan.images.get((slot, True))
            backward = scan.images.get((slot, False))
            if forward is None or backward is None:
                shape = (scan.buffer.lines, scan.buffer.pixels)
                forward = backward = np.full(shape, np.nan, dtype=np.float32)
            signal = physics.slots[slot]
            calibration = 1.0 / PREAMP_GAINS[physics.gain_index] if signal == CURRENT else 1.0
            channels.append(
                SxmChannel(
                    signal,
                    signal_base_name(signal),
                    signal_unit(signal),
                    forward,
                    backward,
                    calibration,
                )
            )
        z = physics.z
        path = next_path(self.session_dir, self._series, ".sxm", 3)
        fwd_time, bwd_time = scan.speed.line_times(frame.width_m)
        return write_sxm(
            path,
            when=datetime.now(UTC),
            pixels=scan.buffer.pixels,
            lines=scan.buffer.lines,
            width_m=frame.width_m,
            height_m=frame.height_m,
            center_x_m=frame.center_x_m,
            center_y_m=frame.center_y_m,
            angle_deg=frame.angle_deg,
            direction_up=scan.direction_up,
            line_time_s=(fwd_time, bwd_time),
            bias_v=physics.bias_v,
            z_controller={
                "Name": "log Current",
                "on": str(int(z.on)),
                "Setpoint": f"{z.setpoint_a:.3E} A",
                "P-gain": f"{z.p_gain_m:.3E} m",
                "I-gain": f"{z.i_gain:.3E} m/s",
                "T-const": f"{z.time_constant_s:.3E} s",
            },
            comment=self._comment,
            temperature_k=SAMPLE_TEMPERATURE_K,
            acquisition_time_s=(fwd_time + bwd_time) * scan.buffer.lines,
            channels=channels,
            extra=self._module_parameters(),
        )

    def _module_parameters(self) -> dict[str, str]:
        physics = self.physics
        values = {
            "Bias": {"Bias (V)": f"{physics.bias_v:.6E}"},
            "Current": {"Gain": f"{PREAMP_GAINS[physics.gain_index]:.0E} V/A"},
            "Z-Controller": {
                "Setpoint": f"{physics.z.setpoint_a:.6E}",
                "Z (m)": f"{physics.z.z_m:.6E}",
                "Controller status": "ON" if physics.z.on else "OFF",
            },
        }
        out: dict[str, str] = {}
        for module in self._modules:
            for name, value in values.get(module, {}).items():
                out[f"{module}>{name}"] = value
        return out

    @handles("Scan.Action")
    def scan_action(self, a: Args) -> Values:
        action = choice("action", a["action"], range(7))
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

    @handles("Scan.StatusGet")
    def scan_status_get(self, a: Args) -> Values:
        return {"running": int(self.physics.scan.status_running)}

    @handles("Scan.WaitEndOfScan")
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
        saved = self._saved.get(scan.scans_finished)
        return {"timed_out": 0, "file_path": str(saved) if saved else ""}

    @handles("Scan.FrameSet")
    def scan_frame_set(self, a: Args) -> Values:
        if self.physics.scan.running:
            raise CommandRefusedError(
                "a scan is running; stop it (Scan.Action 1) to change the frame"
            )
        frame = self.physics.scan.frame
        cx, cy = finite("center_x_m", a["center_x_m"]), finite("center_y_m", a["center_y_m"])
        width, height = positive("width_m", a["width_m"]), positive("height_m", a["height_m"])
        angle = finite("angle_deg", a["angle_deg"])
        if width > PIEZO_RANGE_XY_M or height > PIEZO_RANGE_XY_M:
            raise CommandRefusedError(
                f"the frame is larger than the {PIEZO_RANGE_XY_M:g} m piezo range"
            )
        frame.center_x_m, frame.center_y_m = cx, cy
        frame.width_m, frame.height_m, frame.angle_deg = width, height, angle
        return {}

    @handles("Scan.FrameGet")
    def scan_frame_get(self, a: Args) -> Values:
        f = self.physics.scan.frame
        return {
            "center_x_m": f.center_x_m,
            "center_y_m": f.center_y_m,
            "width_m": f.width_m,
            "height_m": f.height_m,
            "angle_deg": f.angle_deg,
        }

    @handles("Scan.BufferSet")
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
            choice(
                "channel (a slot of the Signals Manager, Signals.InSlotsGet)", ch, range(N_SLOTS)
            )
        pixels, lines = a["pixels"], a["lines"]
        if not 1 <= pixels <= MAX_PIXELS or not 1 <= lines <= MAX_PIXELS:
            raise CommandRefusedError(
                f"pixels = {pixels} and lines = {lines} must each be 1..{MAX_PIXELS}"
            )
        scan.buffer.channels = tuple(channels)
        scan.buffer.pixels = coerce_pixels(pixels)
        scan.buffer.lines = lines
        return {}

    @handles("Scan.BufferGet")
    def scan_buffer_get(self, a: Args) -> Values:
        b = self.physics.scan.buffer
        return {"channels": list(b.channels), "pixels": b.pixels, "lines": b.lines}

    @handles("Scan.SpeedSet")
    def scan_speed_set(self, a: Args) -> Values:
        speed = self.physics.scan.speed
        keep = choice("keep_constant", a["keep_constant"], (0, 1, 2)) or speed.keep_constant
        ratio = positive("speed_ratio", a["speed_ratio"])
        if keep == 1:
            speed.forward_speed_m_s = positive("forward_speed_m_s", a["forward_speed_m_s"])
            speed.backward_speed_m_s = positive("backward_speed_m_s", a["backward_speed_m_s"])
        else:
            speed.forward_time_per_line_s = positive(
                "forward_time_per_line_s", a["forward_time_per_line_s"]
            )
            speed.backward_time_per_line_s = positive(
                "backward_time_per_line_s", a["backward_time_per_line_s"]
            )
        speed.keep_constant, speed.speed_ratio = keep, ratio
        return {}

    @handles("Scan.SpeedGet")
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

    @handles("Scan.XYPosGet")
    def scan_xypos_get(self, a: Args) -> Values | Awaitable[Values]:
        return self._sampled(a["wait"], self._tip_xy)

    @handles("Scan.FrameDataGrab")
    def scan_frame_data_grab(self, a: Args) -> Values:
        scan = self.physics.scan
        channel = a["channel_index"]
        forward = bool(choice("forward", a["forward"], (0, 1)))
        image = scan.images.get((channel, forward))
        if image is None:
            if channel not in scan.buffer.channels:
                raise CommandRefusedError(
                    f"channel {channel} is not recorded; record it with Scan.BufferSet "
                    f"(recorded: {list(scan.buffer.channels)})"
                )
            raise CommandRefusedError("no scan data yet; start a scan with Scan.Action 0")
        return {
            "channel_name": SIGNAL_NAMES[self.physics.slots[channel]],
            "data": image,
            "direction_up": int(scan.direction_up),
        }

    @handles("Scan.PropsSet")
    def scan_props_set(self, a: Args) -> Values:
        scan = self.physics.scan
        continuous = choice("continuous_scan", a["continuous_scan"], (0, 1, 2))
        bouncy = choice("bouncy_scan", a["bouncy_scan"], (0, 1, 2))
        autosave = choice("autosave", a["autosave"], (0, 1, 2, 3))
        autopaste = choice("autopaste", a["autopaste"], (0, 1, 2, 3))
        unknown = [m for m in a["modules_names"] if m not in SCAN_MODULES]
        if unknown:
            raise CommandRefusedError(
                f"modules_names has {unknown[0]!r}; the simulator's modules: {list(SCAN_MODULES)}"
            )
        if continuous:
            scan.continuous = continuous == 1
        if bouncy:
            scan.bouncy = bouncy == 1
        if autosave:
            self._autosave = _AUTOSAVE_SET[autosave]
        if autopaste:
            self._autopaste = _AUTOSAVE_SET[autopaste]
        if a["series_name"]:
            name = a["series_name"]
            if any(c in name for c in '/\\:*?"<>|') or name in (".", ".."):
                raise CommandRefusedError(f"series_name {name!r} is not a valid file name")
            self._series = name
        self._comment = a["comment"]
        if a["modules_names"]:
            self._modules = list(a["modules_names"])
        return {}

    @handles("Scan.PropsGet")
    def scan_props_get(self, a: Args) -> Values:
        scan = self.physics.scan
        params = {
            "Bias": ["Bias (V)"],
            "Current": ["Gain"],
            "Z-Controller": ["Setpoint", "Z (m)", "Controller status"],
        }
        rows = [params[m] for m in self._modules]
        width = max((len(r) for r in rows), default=0)
        return {
            "continuous_scan": int(scan.continuous),
            "bouncy_scan": int(scan.bouncy),
            "autosave": _AUTOSAVE_GET[self._autosave],
            "series_name": self._series,
            "comment": self._comment,
            "modules_names": list(self._modules),
            "number_of_parameters_per_module_array": [len(r) for r in rows],
            "parameters": [r + [""] * (width - len(r)) for r in rows],
            "autopaste": _AUTOSAVE_GET[self._autopaste],
        }

    @handles("Scan.Save")
    def scan_save(self, a: Args) -> Values | Awaitable[Values]:
        self.save_scan()
        return {"timed_out": 0}
