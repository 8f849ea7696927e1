"""Scan the whole surface through the Nanonis protocol and bring back both Z traces.

Settings that are catalog specs (frame, speed) go through the :class:`WriteGuard`; the scan
itself (buffer, loop rate, start, wait, data) is plain instrument operation through the client.

::

    image = scan_surface(client, guard, frame_nm=23.0, pixels=144, speed_nm_s=600.0,
                         origin_nm=(10.0, 10.0))
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from atomlab.core.errors import InvalidInputError, OperationTimeoutError
from atomlab.instrument import NanonisClient, WriteGuard
from atomlab.lab.config import SCAN_LOOP_HZ
from atomlab.lab.detection import ScanImage

Z_SIGNAL = "Z (m)"
CURRENT_SIGNAL = "Current (A)"
WAIT_SLICE_MS = 1000
"""The scan is awaited in slices of this long, so progress can be shown (and Ctrl-C lands)."""
SCAN_TIMEOUT_FACTOR = 3.0
"""A scan is given up after this many times its nominal duration (plus a minute)."""

ScanProgress = Callable[[int, int], None]
"""Called with (lines done, lines) while a scan runs."""


def scan_surface(
    client: NanonisClient,
    guard: WriteGuard,
    *,
    frame_nm: float,
    pixels: int,
    speed_nm_s: float,
    origin_nm: tuple[float, float],
    on_progress: ScanProgress | None = None,
) -> ScanImage:
    """One up-scan of a square frame centred on piezo (0, 0); returns its Z traces."""
    z_slot = signal_slot(client, Z_SIGNAL)
    current_slot = signal_slot(client, CURRENT_SIGNAL)
    guard.set("scan_frame_center_x_m", 0.0)
    guard.set("scan_frame_center_y_m", 0.0)
    guard.set("scan_frame_width_m", frame_nm * 1e-9)
    guard.set("scan_frame_height_m", frame_nm * 1e-9)
    guard.set("scan_frame_angle_deg", 0.0)
    speed = speed_nm_s * 1e-9
    guard.set("scan_speed_m_s", speed)
    # The catalog's speed spec is the forward speed; the retrace runs at the same speed.
    client.call(
        "Scan.SpeedSet",
        {
            "forward_speed_m_s": speed,
            "backward_speed_m_s": speed,
            "forward_time_per_line_s": frame_nm * 1e-9 / speed,
            "backward_time_per_line_s": frame_nm * 1e-9 / speed,
            "keep_constant": 1,
            "speed_ratio": 1.0,
        },
    )
    client.call(
        "Scan.BufferSet",
        {"channels": [current_slot, z_slot], "pixels": pixels, "lines": pixels},
    )
    lines = int(client.call("Scan.BufferGet")["lines"])
    nominal_s = 2 * lines * frame_nm / speed_nm_s
    limit_s = SCAN_TIMEOUT_FACTOR * nominal_s + 60.0
    deadline = time.monotonic() + limit_s
    # The stiff feedback the expert set needs the fast loop (at 1 kHz it oscillates).
    client.call("Util.RTFreqSet", {"frequency_hz": SCAN_LOOP_HZ})
    client.call("Scan.Action", {"action": 0, "direction_up": 1})
    while True:
        reply = client.call(
            "Scan.WaitEndOfScan",
            {"timeout_ms": WAIT_SLICE_MS},
            timeout_s=WAIT_SLICE_MS / 1000 + client.call_timeout_s,
        )
        if not reply["timed_out"]:
            break
        if on_progress is not None:
            on_progress(_lines_done(client, z_slot), lines)
        if time.monotonic() > deadline:
            client.call("Scan.Action", {"action": 1, "direction_up": 1})
            raise OperationTimeoutError(
                f"the scan did not finish within {limit_s:.0f} s (nominal {nominal_s:.0f} s); "
                "the instrument may be stuck",
                nominal_s=nominal_s,
            )
    if on_progress is not None:
        on_progress(lines, lines)
    forward = _grab(client, z_slot, forward=True)
    backward = _grab(client, z_slot, forward=False)
    return ScanImage(
        forward=forward,
        backward=backward,
        frame_center_nm=(0.0, 0.0),
        frame_size_nm=(frame_nm, frame_nm),
        origin_nm=origin_nm,
        channel=Z_SIGNAL,
    )


def signal_slot(client: NanonisClient, name: str) -> int:
    """The slot of the Signals Manager that holds signal ``name``: the scan buffer records slots
    (``Signals.InSlotsGet``), not signal indexes."""
    index = client.signal_index(name)
    slots = client.call("Signals.InSlotsGet")
    for slot, held in enumerate(slots["indexes"]):
        if int(held) == index:
            return slot
    raise InvalidInputError(
        f"no slot of the Signals Manager holds {name!r} (signal {index}); assign it to one "
        "with Signals.InSlotSet",
        signal=name,
    )


def _grab(client: NanonisClient, index: int, *, forward: bool) -> NDArray[np.float64]:
    reply = client.call("Scan.FrameDataGrab", {"channel_index": index, "forward": int(forward)})
    return np.asarray(reply["data"], dtype=np.float64)


def _lines_done(client: NanonisClient, z_index: int) -> int:
    image = _grab(client, z_index, forward=False)
    return int(np.isfinite(image).all(axis=1).sum())
