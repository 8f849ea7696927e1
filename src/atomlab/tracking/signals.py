"""Learn of a signal the moment it arrives, even while the main thread is busy in C code.

Python runs signal handlers on the main thread between bytecodes, so a run whose main thread sits
in a long call that releases the GIL (a BLAS product, a compiled training step) would record its
cancellation only when that call returns. ``signal.set_wakeup_fd`` makes the C-level handler
write the signal number to a pipe at once; the tracker's monitor thread waits on that pipe and
can record the cancellation itself.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading

_WAKE = b"\0"


class SignalWatch:
    """A wake-up pipe for signals plus a way to wake the reader for other reasons."""

    def __init__(self) -> None:
        self._read: int | None = None
        self._write: int | None = None

    @property
    def active(self) -> bool:
        return self._read is not None

    def install(self) -> bool:
        """Route signal numbers to the pipe; False (and nothing changed) when that is not ours
        to do: not the main thread, or someone (an asyncio loop) already owns the wake-up fd."""
        if threading.current_thread() is not threading.main_thread():
            return False
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        previous = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        if previous != -1:
            signal.set_wakeup_fd(previous)
            os.close(read)
            os.close(write)
            return False
        self._read, self._write = read, write
        return True

    def wait(self, timeout_s: float) -> list[int]:
        """Signal numbers received within ``timeout_s`` (empty on time-out or a plain wake-up)."""
        if self._read is None:
            return []
        ready, _, _ = select.select([self._read], [], [], max(timeout_s, 0.0))
        if not ready:
            return []
        with contextlib.suppress(BlockingIOError, OSError):
            data = os.read(self._read, 512)
            return [b for b in data if b]
        return []

    def wake(self) -> None:
        """Make a pending :meth:`wait` return now."""
        if self._write is not None:
            with contextlib.suppress(OSError):
                os.write(self._write, _WAKE)

    def uninstall(self) -> None:
        """Give the wake-up fd back; only the main thread may, so elsewhere the pipe stays open
        rather than leave the C handler writing to a closed (or reused) descriptor."""
        if self._read is None or threading.current_thread() is not threading.main_thread():
            return
        signal.set_wakeup_fd(-1)
        for fd in (self._read, self._write):
            if fd is not None:
                os.close(fd)
        self._read = self._write = None


__all__ = ["SignalWatch"]
