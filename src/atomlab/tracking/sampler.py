"""Telemetry samples: the run's whole process tree, the system, disk and network I/O, and GPUs.

The tree is the tracking process plus every descendant (the step subprocesses and whatever
they start), so a pipeline whose work runs in children is measured where the work is. Walking
``/proc`` for descendants costs about a millisecond, so it is redone every
``rescan_interval_s`` or when a step starts, while the known processes are read every sample::

    sampler = TelemetrySampler(gpu=GpuProbe())
    sample = sampler.sample()      # a flat dict, one line of telemetry.jsonl
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

import psutil

from atomlab.core.clock import Clock, SystemClock, utc_iso
from atomlab.tracking.gpu import GpuProbe

DEFAULT_RESCAN_INTERVAL_S = 5.0
MIB = 1024 * 1024


class ProcessTree:
    """The processes of one run: a root and its descendants, with primed CPU counters."""

    def __init__(
        self,
        root_pid: int | None = None,
        *,
        rescan_interval_s: float = DEFAULT_RESCAN_INTERVAL_S,
        clock: Clock | None = None,
    ) -> None:
        self.root = psutil.Process(root_pid or os.getpid())
        self._procs: dict[int, psutil.Process] = {self.root.pid: self.root}
        self._extra_roots: dict[int, psutil.Process] = {}
        self._interval = rescan_interval_s
        self._clock = clock or SystemClock()
        self._next_scan = 0.0
        self._lock = threading.Lock()  # watch() runs on the main thread, sample() on the monitor
        self.root.cpu_percent(None)

    def watch(self, pid: int) -> None:
        """Also follow ``pid`` and its descendants (a step subprocess), starting now."""
        with contextlib.suppress(psutil.Error), self._lock:
            proc = psutil.Process(pid)
            proc.cpu_percent(None)
            self._extra_roots[pid] = proc
            self._procs[pid] = proc
        self._next_scan = 0.0

    def invalidate(self) -> None:
        """Rescan descendants on the next sample."""
        self._next_scan = 0.0

    def _rescan(self) -> None:
        found: dict[int, psutil.Process] = {self.root.pid: self.root}
        for top in [self.root, *self._extra_roots.values()]:
            found.setdefault(top.pid, top)
            with contextlib.suppress(psutil.Error):
                for child in top.children(recursive=True):
                    found.setdefault(child.pid, child)
        for pid, proc in found.items():
            known = self._procs.get(pid)
            if known is not None and _create_time(known) == _create_time(proc):
                found[pid] = known  # keep the primed counters
            else:
                with contextlib.suppress(psutil.Error):
                    proc.cpu_percent(None)
        self._procs = found
        self._extra_roots = {p: q for p, q in self._extra_roots.items() if q.is_running()}

    def sample(self) -> dict[str, Any]:
        with self._lock:
            return self._sample()

    def _sample(self) -> dict[str, Any]:
        now = self._clock.monotonic()
        if now >= self._next_scan:
            self._rescan()
            self._next_scan = now + self._interval
        cpu = rss = 0.0
        threads = count = 0
        read = write = 0
        gone: list[int] = []
        for pid, proc in self._procs.items():
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
                    threads += proc.num_threads()
                    with contextlib.suppress(psutil.Error, AttributeError):
                        io = proc.io_counters()
                        read += io.read_bytes
                        write += io.write_bytes
                count += 1
            except psutil.Error:
                gone.append(pid)
        for pid in gone:
            self._procs.pop(pid, None)
        return {
            "proc_cpu_pct": round(cpu, 1),
            "proc_rss_mb": round(rss / MIB, 1),
            "proc_count": count,
            "proc_threads": threads,
            "proc_read_mb": round(read / MIB, 2),
            "proc_write_mb": round(write / MIB, 2),
        }

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return sorted(self._procs)


def _create_time(proc: psutil.Process) -> float | None:
    try:
        return proc.create_time()
    except psutil.Error:
        return None


class TelemetrySampler:
    """Builds one telemetry sample; cheap enough (well under 1 ms) to run every second."""

    def __init__(
        self,
        *,
        root_pid: int | None = None,
        gpu: GpuProbe | None = None,
        clock: Clock | None = None,
        rescan_interval_s: float = DEFAULT_RESCAN_INTERVAL_S,
    ) -> None:
        self._clock = clock or SystemClock()
        self.tree = ProcessTree(root_pid, rescan_interval_s=rescan_interval_s, clock=self._clock)
        self.gpu = gpu
        self.cpu_count = psutil.cpu_count() or 1
        self._start = self._clock.monotonic()
        self._last_t = self._start
        self._last_disk = _disk()
        self._last_net = _net()
        self._notes_sent = 0
        psutil.cpu_percent(None)

    def sample(self, *, step: str | None = None) -> dict[str, Any]:
        now = self._clock.monotonic()
        elapsed = max(now - self._last_t, 1e-9)
        self._last_t = now
        record: dict[str, Any] = {
            "t": utc_iso(self._clock.now()),
            "dt_s": round(now - self._start, 3),
            "step": step,
        }
        tree = self.tree.sample()
        record.update(tree)
        record["proc_cpu_norm_pct"] = round(tree["proc_cpu_pct"] / self.cpu_count, 1)
        memory = psutil.virtual_memory()
        record["sys_cpu_pct"] = psutil.cpu_percent(None)
        # total - available, not .used, which under-reports on Linux
        record["sys_mem_pct"] = round(100.0 * (memory.total - memory.available) / memory.total, 1)
        record["sys_mem_total_mb"] = round(memory.total / MIB, 1)
        disk, net = _disk(), _net()
        record["disk_read_mb_s"] = _rate(disk[0], self._last_disk[0], elapsed)
        record["disk_write_mb_s"] = _rate(disk[1], self._last_disk[1], elapsed)
        record["net_sent_mb_s"] = _rate(net[0], self._last_net[0], elapsed)
        record["net_recv_mb_s"] = _rate(net[1], self._last_net[1], elapsed)
        self._last_disk, self._last_net = disk, net
        if self.gpu is not None:
            devices, notes = self.gpu.sample(self.tree.pids)
            if devices:
                record["gpus"] = devices
            if len(notes) > self._notes_sent:
                record["notes"] = notes[self._notes_sent :]
                self._notes_sent = len(notes)
        return record


def _disk() -> tuple[int | None, int | None]:
    with contextlib.suppress(Exception):
        counters = psutil.disk_io_counters()
        if counters is not None:
            return counters.read_bytes, counters.write_bytes
    return None, None


def _net() -> tuple[int | None, int | None]:
    with contextlib.suppress(Exception):
        counters = psutil.net_io_counters()
        return counters.bytes_sent, counters.bytes_recv
    return None, None


def _rate(now: int | None, before: int | None, seconds: float) -> float | None:
    if now is None or before is None:
        return None
    return round(max(now - before, 0) / MIB / seconds, 3)


__all__ = ["DEFAULT_RESCAN_INTERVAL_S", "ProcessTree", "TelemetrySampler"]
