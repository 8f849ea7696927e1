"""The simulated Data Logger: the recorded slots averaged into points, saved as a ``.dat`` file.

``DataLog.Start`` begins recording the slots chosen with ``DataLog.ChsSet`` (0..23, as the
Signals Manager's slots); each point averages ``averaging`` published samples (one per
acquisition period, ``Util.AcqPeriodGet``: the simulator's real-time samples are oversampled
into those). In timed mode the acquisition stops by itself after the duration; ``DataLog.Stop``
stops it otherwise. The points are saved (``<basename><nnnnn>.dat`` in the session folder, a
"Time (s)" column first) when the acquisition stops, and ``DataLog.StatusGet`` reports the
file, the points saved and the elapsed time.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from atomlab.sim.stm_files import next_path, write_dat
from atomlab.sim.stm_routes import (
    Args,
    CommandRefusedError,
    HandlerBase,
    Values,
    choice,
    handles,
)
from atomlab.sim.stm_signals import N_SLOTS, SIGNAL_NAMES

MAX_POINTS: Final = 1_000_000
"""A continuous acquisition keeps at most this many points (then it stops and saves)."""
DEFAULT_BASENAME: Final = "Data-Logger"
MODULES: Final = ("Bias", "Current", "Z-Controller")


class DataLogHandlers(HandlerBase):
    """DataLog.*."""

    def __init__(self) -> None:
        self._log_channels: list[int] = [0]
        self._log_mode = 1
        self._log_duration = (0, 1, 0.0)
        self._log_averaging = 1
        self._log_basename = DEFAULT_BASENAME
        self._log_comment = ""
        self._log_modules: list[str] = []
        self._log_running = False
        self._log_started_s = 0.0
        self._log_stopped_s = 0.0
        self._log_start_utc = ""
        self._log_stop_utc = ""
        self._log_saved = ""
        self._log_saved_points = 0
        self._log_times: list[float] = []
        self._log_rows: list[list[float]] = []
        self._log_sum: list[float] = []
        self._log_count = 0
        self.physics.on_publish = self._log_sample

    @handles("DataLog.Open")
    def datalog_open(self, a: Args) -> Values:
        return {}

    @handles("DataLog.ChsSet")
    def datalog_chs_set(self, a: Args) -> Values:
        channels = list(a["channel_indexes"])
        if not channels or len(set(channels)) != len(channels):
            raise CommandRefusedError(
                f"channel_indexes = {channels} must be 1 to 24 distinct slots (0..23)"
            )
        for ch in channels:
            choice("channel index (a slot, Signals.InSlotsGet)", ch, range(N_SLOTS))
        if self._log_running:
            raise CommandRefusedError("the Data Logger is running; stop it to change channels")
        self._log_channels = channels
        return {}

    @handles("DataLog.ChsGet")
    def datalog_chs_get(self, a: Args) -> Values:
        return {"channel_indexes": list(self._log_channels)}

    @handles("DataLog.PropsSet")
    def datalog_props_set(self, a: Args) -> Values:
        mode = choice("acquisition_mode", a["acquisition_mode"], (0, 1, 2))
        hours, minutes, seconds = self._log_duration
        parts = (a["duration_hours"], a["duration_minutes"], a["duration_seconds"])
        for name, value in zip(("duration_hours", "duration_minutes", "duration_seconds"), parts,
                               strict=True):  # fmt: skip
            if value != -1 and not (math.isfinite(value) and value >= 0):
                raise CommandRefusedError(f"{name} = {value!r} must be >= 0 (-1: no change)")
        averaging = a["averaging"]
        if not 1 <= averaging <= 100_000:
            raise CommandRefusedError(f"averaging = {averaging} must be 1..100000")
        unknown = [m for m in a["modules"] if m not in MODULES]
        if unknown:
            raise CommandRefusedError(f"modules has {unknown[0]!r}; known: {list(MODULES)}")
        basename = a["basename"]
        if any(c in basename for c in '/\\\\:*?"<>|'):
            raise CommandRefusedError(f"basename {basename!r} is not a valid file name")
        self._log_mode = mode or self._log_mode
        self._log_duration = (
            hours if parts[0] == -1 else int(parts[0]),
            minutes if parts[1] == -1 else int(parts[1]),
            seconds if parts[2] == -1 else float(parts[2]),
        )
        self._log_averaging = averaging
        self._log_basename = basename or self._log_basename
        self._log_comment = a["comment"]
        self._log_modules = list(a["modules"])
        return {}

    @handles("DataLog.PropsGet")
    def datalog_props_get(self, a: Args) -> Values:
        hours, minutes, seconds = self._log_duration
        return {
            "acquisition_mode": self._log_mode,
            "duration_hours": hours,
            "duration_minutes": minutes,
            "duration_seconds": seconds,
            "averaging": self._log_averaging,
            "basename": self._log_basename,
            "comment": self._log_comment,
        }

    @handles("DataLog.Start")
    def datalog_start(self, a: Args) -> Values:
        if self._log_running:
            raise CommandRefusedError("the Data Logger is already running")
        self._log_running = True
        self._log_started_s = self.physics.t_s
        self._log_start_utc = datetime.now(UTC).strftime("%d.%m.%Y %H:%M:%S")
        self._log_stop_utc = ""
        self._log_saved_points = 0
        self._log_times, self._log_rows = [], []
        self._log_sum, self._log_count = [0.0] * len(self._log_channels), 0
        return {}

    @handles("DataLog.Stop")
    def datalog_stop(self, a: Args) -> Values:
        if self._log_running:
            self._log_finish()
        return {}

    @handles("DataLog.StatusGet")
    def datalog_status_get(self, a: Args) -> Values:
        end = self.physics.t_s if self._log_running else self._log_stopped_s
        elapsed = max(0.0, end - self._log_started_s) if self._log_start_utc else 0.0
        hours, rest = divmod(elapsed, 3600.0)
        minutes, seconds = divmod(rest, 60.0)
        return {
            "start_time": self._log_start_utc,
            "elapsed_hours": min(int(hours), 0xFFFF),
            "elapsed_minutes": int(minutes),
            "elapsed_seconds": seconds,
            "stop_time": self._log_stop_utc,
            "saved_file_path": self._log_saved,
            "saved_points": self._log_saved_points
            if not self._log_running
            else len(self._log_times),
        }

    _log_elapsed = 0.0

    def _log_duration_s(self) -> float:
        hours, minutes, seconds = self._log_duration
        return hours * 3600.0 + minutes * 60.0 + seconds

    def _log_sample(self, t_s: float, values: list[float]) -> None:
        """A publication (every acquisition period): average it into the current point."""
        if not self._log_running:
            return
        slots = self.physics.slots
        for i, slot in enumerate(self._log_channels):
            self._log_sum[i] += values[slots[slot]]
        self._log_count += 1
        if self._log_count >= self._log_averaging:
            self._log_times.append(t_s - self._log_started_s)
            self._log_rows.append([v / self._log_count for v in self._log_sum])
            self._log_sum, self._log_count = [0.0] * len(self._log_channels), 0
        timed_out = self._log_mode == 2 and t_s - self._log_started_s >= self._log_duration_s()
        if timed_out or len(self._log_times) >= MAX_POINTS:
            self._log_finish()

    def _log_finish(self) -> None:
        self._log_running = False
        self._log_stopped_s = self.physics.t_s
        self._log_stop_utc = datetime.now(UTC).strftime("%d.%m.%Y %H:%M:%S")
        slots = self.physics.slots
        names = ["Time (s)"] + [SIGNAL_NAMES[slots[s]] for s in self._log_channels]
        columns: list[tuple[str, list[float]]] = [(names[0], list(self._log_times))]
        for i, name in enumerate(names[1:]):
            columns.append((name, [row[i] for row in self._log_rows]))
        path: Path = next_path(self.session_dir, self._log_basename, ".dat", 5)
        try:
            write_dat(
                path,
                experiment="Data Logger",
                when=datetime.now(UTC),
                header={
                    "Comment": self._log_comment,
                    "Averaging": str(self._log_averaging),
                    "Acquisition period (s)": f"{self.physics.acq_period_s:.6E}",
                    **{f"{m}>active": "TRUE" for m in self._log_modules},
                },
                columns=columns,
            )
        except OSError as exc:
            self.physics.events.append(self.physics.event("save_failed", str(exc)))
            return
        self._log_saved = str(path)
        self._log_saved_points = len(self._log_times)
