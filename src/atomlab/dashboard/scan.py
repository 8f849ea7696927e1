"""The latest scan image, read from the instrument (a Nanonis controller or the simulator).

Only getters are sent (``Scan.BufferGet``, ``Signals.InSlotsGet``, ``Scan.FrameGet``,
``Scan.FrameDataGrab``, ``Scan.StatusGet``): the dashboard never changes the instrument. One
grab serves every open page for ``min_interval_s``; after a failure nothing is sent for
``retry_after_s``, so a missing instrument costs one connect timeout per retry, not one per
page per tick. Which image: the first recorded channel whose name starts with ``Z`` (the
topography), else the first recorded channel, looked up by name (signal indexes differ
between controllers). The buffer's channel indexes are the Signals Manager's slots (0..23), named
by ``Signals.InSlotsGet``; a controller without it is read with ``Signals.NamesGet``.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from atomlab.core.clock import Clock, utc_iso
from atomlab.core.errors import AtomlabError, UnavailableError
from atomlab.instrument import NanonisClient

CONNECT_TIMEOUT_S = 1.0
CALL_TIMEOUT_S = 10.0
MIN_INTERVAL_S = 1.0
RETRY_AFTER_S = 10.0
NM_PER_M = 1e9


@dataclass(frozen=True)
class ScanImage:
    """One grabbed frame: the image (rows top to bottom) and where it lies, in nm."""

    channel: str
    unit: str
    image: np.ndarray[Any, Any]
    width_nm: float
    height_nm: float
    center_nm: tuple[float, float]
    scanning: bool
    grabbed_at: str
    digest: str
    scanned_fraction: float


def channel_unit(name: str) -> tuple[str, str]:
    """``"Z (m)"`` -> ``("Z", "m")``."""
    if name.endswith(")") and " (" in name:
        label, unit = name[:-1].rsplit(" (", 1)
        return label, unit
    return name, ""


class ScanSource:
    """Grabs the latest frame from ``host:port``; thread-safe; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        clock: Clock,
        min_interval_s: float = MIN_INTERVAL_S,
        retry_after_s: float = RETRY_AFTER_S,
    ) -> None:
        self.host, self.port = host, port
        self._clock = clock
        self._min_interval_s = min_interval_s
        self._retry_after_s = retry_after_s
        self._lock = threading.Lock()
        self._client: NanonisClient | None = None
        self._last: ScanImage | None = None
        self._last_at: float | None = None
        self._failed_at: float | None = None
        self._error: AtomlabError | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def latest(self) -> ScanImage:
        """The newest frame (cached ``min_interval_s``); UnavailableError when there is none."""
        with self._lock:
            now = self._clock.monotonic()
            fresh = self._last_at is not None and now - self._last_at < self._min_interval_s
            if self._last is not None and fresh:
                return self._last
            waiting = self._failed_at is not None and now - self._failed_at < self._retry_after_s
            if self._error is not None and waiting:
                raise self._error
            try:
                image = self._grab()
            except AtomlabError as exc:
                self._drop_client()
                self._failed_at = now
                self._error = UnavailableError(
                    f"no scan image from the instrument at {self.address}: {exc.message} "
                    "(start `atomlab sim spm`, or pass --instrument HOST:PORT / --no-instrument)",
                    address=self.address,
                )
                raise self._error from None
            self._error = None
            self._last, self._last_at = image, now
            return image

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "enabled": True,
                "address": self.address,
                "last_grab": self._last.grabbed_at if self._last else None,
                "error": self._error.message if self._error else None,
            }

    def close(self) -> None:
        with self._lock:
            self._drop_client()

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _grab(self) -> ScanImage:
        if self._client is None:
            self._client = NanonisClient(
                self.host,
                self.port,
                connect_timeout_s=CONNECT_TIMEOUT_S,
                call_timeout_s=CALL_TIMEOUT_S,
            )
        client = self._client
        recorded = list(client.call("Scan.BufferGet")["channels"])
        names = _slot_names(client)
        if not recorded:
            raise UnavailableError("the scan buffer records no channel", address=self.address)
        index = next(
            (i for i in recorded if 0 <= i < len(names) and names[i].upper().startswith("Z")),
            recorded[0],
        )
        frame = client.call("Scan.FrameGet")
        grab = client.call("Scan.FrameDataGrab", {"channel_index": index, "forward": 1})
        scanning = bool(client.get("Scan.StatusGet", "running"))
        data = np.asarray(grab["data"], dtype=float)
        label, unit = channel_unit(str(grab["channel_name"]) or names[index])
        finite = np.isfinite(data)
        return ScanImage(
            channel=label,
            unit=unit,
            image=data,
            width_nm=float(frame["width_m"]) * NM_PER_M,
            height_nm=float(frame["height_m"]) * NM_PER_M,
            center_nm=(
                float(frame["center_x_m"]) * NM_PER_M,
                float(frame["center_y_m"]) * NM_PER_M,
            ),
            scanning=scanning,
            grabbed_at=utc_iso(self._clock.now()),
            digest=hashlib.sha256(data.tobytes()).hexdigest()[:16],
            scanned_fraction=float(finite.mean()) if data.size else 0.0,
        )


def _slot_names(client: NanonisClient) -> list[str]:
    """The names of the 24 slots the scan buffer's channel indexes refer to."""
    try:
        return [str(n) for n in client.call("Signals.InSlotsGet")["names"]]
    except AtomlabError:  # an older controller: the indexes are the signal list's
        return client.signal_names()
