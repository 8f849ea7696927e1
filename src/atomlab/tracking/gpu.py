"""GPU metrics through NVML (``nvidia-ml-py``, imported as ``pynvml``), per device by UUID.

Silent and cheap without a GPU: one failed import or ``nvmlInit`` disables the probe for good
and leaves a note. Each metric is read on its own, so an unsupported one (utilisation on a MIG
slice raises ``NVMLError_NotSupported``) blanks only itself. ``CUDA_VISIBLE_DEVICES`` is honoured:
only the devices a CUDA program would see are reported, matched by UUID or index. The NVML
module is injectable so the layer is testable without a GPU::

    probe = GpuProbe()                 # or GpuProbe(nvml=fake_module) in tests
    devices, notes = probe.sample()
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024


@dataclass
class _Device:
    handle: Any
    uuid: str
    nvml_index: int
    cuda_index: int
    name: str | None


@dataclass
class GpuProbe:
    """Reads utilisation, memory, temperature and power of the visible NVIDIA GPUs."""

    nvml: Any | None = None
    environ: Mapping[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    _devices: list[_Device] | None = None
    _disabled: bool = False
    _reported: set[str] = field(default_factory=set)

    def sample(self, pids: Collection[int] = ()) -> tuple[list[dict[str, Any]], list[str]]:
        """``(per-device metrics, notes)``; an empty list when no GPU can be read.

        With ``pids`` (the run's process tree), each device also reports ``run_mem_mb``: the GPU
        memory those processes hold, from NVML's list of compute processes.
        """
        if self._disabled:
            return [], self.notes
        if self._devices is None:
            self._devices = self._discover()
            if self._disabled:
                return [], self.notes
        return [self._read(device, pids) for device in self._devices], self.notes

    def close(self) -> None:
        if self._devices is not None and self.nvml is not None and not self._disabled:
            with contextlib.suppress(Exception):
                self.nvml.nvmlShutdown()
        self._disabled = True

    @property
    def available(self) -> bool:
        if self._devices is None and not self._disabled:
            self._devices = self._discover()
        return not self._disabled and bool(self._devices)

    # -- discovery -------------------------------------------------------------------------------

    def _discover(self) -> list[_Device]:
        if self.nvml is None:
            try:
                import pynvml
            except ImportError:
                return self._disable("nvidia-ml-py is not installed (pip install 'atomlab[gpu]')")
            self.nvml = pynvml
        nvml = self.nvml
        try:
            nvml.nvmlInit()
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as exc:
            return self._disable(f"NVML unavailable: {exc}")
        every: list[_Device] = []
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            except Exception as exc:
                self.notes.append(f"GPU {index} skipped: {exc}")
                continue
            name = self._guard(uuid, "name", _bind(nvml.nvmlDeviceGetName, handle))
            name = _text(name) if name is not None else None
            every.append(_Device(handle, uuid, index, index, name))
        visible = self._visible(every)
        if not visible:
            return self._disable("no visible NVIDIA GPU")
        return visible

    def _visible(self, every: list[_Device]) -> list[_Device]:
        env = os.environ if self.environ is None else self.environ
        spec = env.get("CUDA_VISIBLE_DEVICES")
        if spec is None:
            return every
        chosen: list[_Device] = []
        for entry in (part.strip() for part in spec.split(",")):
            if not entry:
                continue
            device = self._match(entry, every, env)
            if device is None:
                # CUDA stops at the first invalid entry; so do we.
                self.notes.append(f"CUDA_VISIBLE_DEVICES entry {entry!r} matches no GPU")
                break
            chosen.append(
                _Device(device.handle, device.uuid, device.nvml_index, len(chosen), device.name)
            )
        return chosen

    def _match(self, entry: str, every: list[_Device], env: Mapping[str, str]) -> _Device | None:
        if entry.lstrip("-").isdigit():
            index = int(entry)
            if index < 0:
                return None
            if env.get("CUDA_DEVICE_ORDER", "") != "PCI_BUS_ID":
                _note_once(
                    self,
                    "order",
                    "integer CUDA_VISIBLE_DEVICES mapped in PCI bus order; set "
                    "CUDA_DEVICE_ORDER=PCI_BUS_ID or use GPU UUIDs for an exact match",
                )
            return next((d for d in every if d.nvml_index == index), None)
        if entry.startswith("MIG-"):
            try:
                handle = self.nvml.nvmlDeviceGetHandleByUUID(entry) if self.nvml else None
            except Exception:
                return None
            return _Device(handle, entry, -1, -1, None) if handle is not None else None
        matches = [d for d in every if d.uuid.startswith(entry)]
        return matches[0] if len(matches) == 1 else None

    def _disable(self, reason: str) -> list[_Device]:
        self.notes.append(reason)
        self._disabled = True
        return []

    # -- reading -----------------------------------------------------------------------------------

    def _read(self, device: _Device, pids: Collection[int] = ()) -> dict[str, Any]:
        nvml, handle, uuid = self.nvml, device.handle, device.uuid
        assert nvml is not None
        util = self._guard(uuid, "utilization", lambda: nvml.nvmlDeviceGetUtilizationRates(handle))
        memory = self._guard(uuid, "memory", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        temp = self._guard(
            uuid,
            "temperature",
            lambda: nvml.nvmlDeviceGetTemperature(handle, getattr(nvml, "NVML_TEMPERATURE_GPU", 0)),
        )
        power = self._guard(uuid, "power", lambda: nvml.nvmlDeviceGetPowerUsage(handle))
        run_mem = None
        if pids:
            procs = self._guard(
                uuid, "processes", lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle)
            )
            if procs is not None:
                wanted = set(pids)
                used = [getattr(p, "usedGpuMemory", None) for p in procs if p.pid in wanted]
                run_mem = _num(sum(u for u in used if u is not None), MIB)
        return {
            "uuid": uuid,
            "index": device.cuda_index,
            "name": device.name,
            "util_pct": _num(getattr(util, "gpu", None)),
            "mem_used_mb": _num(getattr(memory, "used", None), MIB),
            "mem_total_mb": _num(getattr(memory, "total", None), MIB),
            "temp_c": _num(temp),
            "power_w": _num(power, 1000),
            "run_mem_mb": run_mem,
        }

    def _guard(self, uuid: str, metric: str, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except Exception as exc:
            kind = type(exc).__name__.removeprefix("NVMLError_") or "error"
            _note_once(self, f"{uuid}:{metric}", f"{metric} unavailable on {uuid} ({kind})")
            return None


def _note_once(probe: GpuProbe, key: str, note: str) -> None:
    if key not in probe._reported:
        probe._reported.add(key)
        probe.notes.append(note)


def _bind(read: Callable[[Any], Any], handle: Any) -> Callable[[], Any]:
    return lambda: read(handle)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _num(value: Any, divisor: float = 1.0) -> float | None:
    if value is None:
        return None
    try:
        return round(float(value) / divisor, 2)
    except (TypeError, ValueError):
        return None


__all__ = ["GpuProbe"]
