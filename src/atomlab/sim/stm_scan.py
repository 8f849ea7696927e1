"""The scan engine of the simulated STM: frame, buffer, speed, line-by-line tip path and images.

The engine only knows geometry and time; the physics tells it what each recorded signal is when
the tip passes a pixel centre. Images are ``lines x pixels`` float32 arrays; row 0 is the top of
the frame (largest y in frame coordinates), column 0 its left edge; unscanned pixels are NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

DEFAULT_FRAME_SIZE_M = 20e-9
DEFAULT_PIXELS = 256
DEFAULT_LINES = 256
DEFAULT_SCAN_SPEED_M_S = 40e-9
DEFAULT_CHANNELS = (0, 2)
PIXEL_MULTIPLE = 16
MAX_PIXELS = 4096


@dataclass(slots=True)
class ScanFrame:
    """Centre, size (metres) and rotation (degrees) of the scan frame."""

    center_x_m: float = 0.0
    center_y_m: float = 0.0
    width_m: float = DEFAULT_FRAME_SIZE_M
    height_m: float = DEFAULT_FRAME_SIZE_M
    angle_deg: float = 0.0

    def to_xy(self, u_m: float, v_m: float) -> tuple[float, float]:
        """Frame coordinates (origin at the centre, u along the lines) to piezo x, y."""
        theta = math.radians(self.angle_deg)
        c, s = math.cos(theta), math.sin(theta)
        return self.center_x_m + u_m * c - v_m * s, self.center_y_m + u_m * s + v_m * c


@dataclass(slots=True)
class ScanSpeed:
    """Line speeds; ``keep_constant`` 1 keeps the speeds when the frame changes, 2 line times."""

    forward_speed_m_s: float = DEFAULT_SCAN_SPEED_M_S
    backward_speed_m_s: float = DEFAULT_SCAN_SPEED_M_S
    forward_time_per_line_s: float = DEFAULT_FRAME_SIZE_M / DEFAULT_SCAN_SPEED_M_S
    backward_time_per_line_s: float = DEFAULT_FRAME_SIZE_M / DEFAULT_SCAN_SPEED_M_S
    keep_constant: int = 1
    speed_ratio: float = 1.0

    def line_times(self, width_m: float) -> tuple[float, float]:
        """Forward and backward line times for a frame ``width_m`` wide."""
        if self.keep_constant == 2:
            return self.forward_time_per_line_s, self.backward_time_per_line_s
        return width_m / self.forward_speed_m_s, width_m / self.backward_speed_m_s

    def speeds(self, width_m: float) -> tuple[float, float]:
        """Forward and backward speeds for a frame ``width_m`` wide."""
        if self.keep_constant == 2:
            return width_m / self.forward_time_per_line_s, width_m / self.backward_time_per_line_s
        return self.forward_speed_m_s, self.backward_speed_m_s


@dataclass(slots=True)
class ScanBuffer:
    """Which signals a scan records and the image size."""

    channels: tuple[int, ...] = DEFAULT_CHANNELS
    pixels: int = DEFAULT_PIXELS
    lines: int = DEFAULT_LINES


def coerce_pixels(pixels: int) -> int:
    """Nanonis keeps pixels a multiple of 16: round up, at least 16."""
    return max(PIXEL_MULTIPLE, math.ceil(pixels / PIXEL_MULTIPLE) * PIXEL_MULTIPLE)


SampleFn = Callable[[Sequence[int]], list[float]]
"""Returns the current values of the given signal indexes."""


@dataclass
class ScanEngine:
    """A running (or finished) scan: where the tip is along the raster and what it has recorded."""

    frame: ScanFrame = field(default_factory=ScanFrame)
    speed: ScanSpeed = field(default_factory=ScanSpeed)
    buffer: ScanBuffer = field(default_factory=ScanBuffer)
    running: bool = False
    paused: bool = False
    continuous: bool = False
    """Start the next frame when one finishes (``Scan.PropsSet``)."""
    bouncy: bool = False
    """With continuous scanning: alternate up and down frames."""
    direction_up: bool = True
    line: int = 0
    forward: bool = True
    phase_elapsed_s: float = 0.0
    pixels_done: int = 0
    scans_finished: int = 0
    images: dict[tuple[int, bool], NDArray[np.float32]] = field(default_factory=dict)
    """(channel, forward) -> image of the current or last scan."""

    @property
    def status_running(self) -> bool:
        return self.running and not self.paused

    def start(self, direction_up: bool) -> None:
        """Begin a new scan from the first line; previous images are discarded."""
        self.running, self.paused = True, False
        self.direction_up = direction_up
        self.line, self.forward, self.phase_elapsed_s, self.pixels_done = 0, True, 0.0, 0
        shape = (self.buffer.lines, self.buffer.pixels)
        self.images = {
            (ch, fwd): np.full(shape, np.nan, dtype=np.float32)
            for ch in self.buffer.channels
            for fwd in (True, False)
        }

    def stop(self) -> None:
        self.running, self.paused = False, False

    def tip_position(self) -> tuple[float, float]:
        """Where the raster puts the tip now (piezo x, y)."""
        fwd_time, bwd_time = self.speed.line_times(self.frame.width_m)
        phase_time = fwd_time if self.forward else bwd_time
        frac = min(1.0, self.phase_elapsed_s / phase_time) if phase_time > 0 else 1.0
        w, h = self.frame.width_m, self.frame.height_m
        u = -0.5 * w + frac * w if self.forward else 0.5 * w - frac * w
        v_from_bottom = (self.line + 0.5) * h / self.buffer.lines
        v = -0.5 * h + v_from_bottom if self.direction_up else 0.5 * h - v_from_bottom
        return self.frame.to_xy(u, v)

    def start_position(self) -> tuple[float, float]:
        w, h = self.frame.width_m, self.frame.height_m
        v = -0.5 * h + 0.5 * h / self.buffer.lines
        return self.frame.to_xy(-0.5 * w, v if self.direction_up else -v)

    def advance(self, dt: float, sample: SampleFn) -> bool:
        """Move along the raster by ``dt`` seconds, recording pixels whose centre was passed.

        ``sample`` must describe the tip at its position *before* this step's move (the physics
        calls it right after updating the current at that position). Returns True when the scan
        finished during this step.
        """
        if not self.status_running:
            return False
        fwd_time, bwd_time = self.speed.line_times(self.frame.width_m)
        phase_time = fwd_time if self.forward else bwd_time
        self.phase_elapsed_s += dt
        frac = self.phase_elapsed_s / phase_time if phase_time > 0 else 1.0
        pixels = self.buffer.pixels
        due = min(pixels, math.floor(frac * pixels + 0.5))
        if due > self.pixels_done:
            self._record(range(self.pixels_done, due), sample)
            self.pixels_done = due
        if frac < 1.0:
            return False
        self.phase_elapsed_s, self.pixels_done = 0.0, 0
        if self.forward:
            self.forward = False
            return False
        self.forward = True
        self.line += 1
        if self.line >= self.buffer.lines:
            self.running = False
            self.line = self.buffer.lines - 1
            self.scans_finished += 1
            return True
        return False

    def skip_lines(
        self, lines: int, fill: Callable[[int, bool], dict[int, NDArray[np.float64]]]
    ) -> bool:
        """Jump ``lines`` whole lines ahead, filling them with ``fill(line, forward)``.

        Used when the simulator must catch up a long stretch of time at once. Returns True when
        the scan finished.
        """
        for _ in range(lines):
            if not self.status_running:
                break
            for fwd in (True, False):
                values = fill(self.line, fwd)
                for ch, row_values in values.items():
                    image = self.images.get((ch, fwd))
                    if image is not None:
                        row = self._row(self.line)
                        image[row, :] = row_values if fwd else row_values[::-1]
            self.line += 1
            self.phase_elapsed_s, self.pixels_done, self.forward = 0.0, 0, True
            if self.line >= self.buffer.lines:
                self.running = False
                self.line = self.buffer.lines - 1
                self.scans_finished += 1
                return True
        return False

    def line_path(self, line: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Piezo x, y of the pixel centres of ``line`` (left to right)."""
        w, h = self.frame.width_m, self.frame.height_m
        pixels = self.buffer.pixels
        u = -0.5 * w + (np.arange(pixels) + 0.5) * w / pixels
        v_from_bottom = (line + 0.5) * h / self.buffer.lines
        v = -0.5 * h + v_from_bottom if self.direction_up else 0.5 * h - v_from_bottom
        theta = math.radians(self.frame.angle_deg)
        c, s = math.cos(theta), math.sin(theta)
        xs = self.frame.center_x_m + u * c - v * s
        ys = self.frame.center_y_m + u * s + v * c
        return xs, ys

    def _row(self, line: int) -> int:
        # row 0 is the top of the frame; an upward scan starts at the bottom
        return self.buffer.lines - 1 - line if self.direction_up else line

    def _record(self, pixel_range: range, sample: SampleFn) -> None:
        channels = self.buffer.channels
        values = sample(channels)
        row = self._row(self.line)
        pixels = self.buffer.pixels
        for ch, value in zip(channels, values, strict=True):
            image = self.images.get((ch, self.forward))
            if image is None:
                continue
            for i in pixel_range:
                column = i if self.forward else pixels - 1 - i
                image[row, column] = value
