"""The NVML layer against a fake ``pynvml`` module (no GPU on the test machines)."""

from __future__ import annotations

from types import SimpleNamespace

from atomlab.tracking import GpuProbe


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801, N818 - pynvml's own names
    pass


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801, N818 - pynvml's own names
    pass


def fake_nvml(devices: list[dict], *, init_error: Exception | None = None) -> SimpleNamespace:
    """A module object with the pynvml functions GpuProbe calls."""
    calls: list[str] = []

    def value(index: int, key: str):
        item = devices[index][key]
        if isinstance(item, Exception):
            raise item
        return item

    def init() -> None:
        calls.append("init")
        if init_error is not None:
            raise init_error

    return SimpleNamespace(
        calls=calls,
        NVMLError=NVMLError,
        NVMLError_NotSupported=NVMLError_NotSupported,
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: len(devices),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetHandleByUUID=lambda u: next(
            i for i, d in enumerate(devices) if d["uuid"] == u
        ),
        nvmlDeviceGetUUID=lambda h: devices[h]["uuid"],
        nvmlDeviceGetName=lambda h: b"Fake H100",
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=value(h, "util"), memory=0),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(
            used=value(h, "used"), total=80 * 1024**3, free=0
        ),
        nvmlDeviceGetTemperature=lambda h, sensor: value(h, "temp"),
        nvmlDeviceGetPowerUsage=lambda h: value(h, "power"),
        nvmlDeviceGetComputeRunningProcesses=lambda h: [
            SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in value(h, "procs")
        ],
    )


def device(uuid: str, **over: object) -> dict:
    base = {
        "uuid": uuid,
        "util": 55,
        "used": 2 * 1024**3,
        "temp": 61,
        "power": 250_000,
        "procs": [],
    }
    base.update(over)
    return base


def test_reads_every_metric_per_device_by_uuid():
    nvml = fake_nvml([device("GPU-aaa"), device("GPU-bbb", util=5)])
    devices, notes = GpuProbe(nvml=nvml, environ={}).sample()
    assert [d["uuid"] for d in devices] == ["GPU-aaa", "GPU-bbb"]
    first = devices[0]
    assert first == {
        "uuid": "GPU-aaa",
        "index": 0,
        "name": "Fake H100",
        "util_pct": 55.0,
        "mem_used_mb": 2048.0,
        "mem_total_mb": 81920.0,
        "temp_c": 61.0,
        "power_w": 250.0,
        "run_mem_mb": None,
    }
    assert devices[1]["util_pct"] == 5.0
    assert notes == []


def test_unsupported_metric_blanks_only_itself_and_is_noted_once():
    nvml = fake_nvml([device("MIG-1", util=NVMLError_NotSupported("Not Supported"))])
    probe = GpuProbe(nvml=nvml, environ={})
    (first,), notes = probe.sample()
    assert first["util_pct"] is None
    assert first["mem_used_mb"] == 2048.0 and first["temp_c"] == 61.0 and first["power_w"] == 250.0
    assert notes == ["utilization unavailable on MIG-1 (NotSupported)"]
    probe.sample()
    assert len(probe.notes) == 1


def test_cuda_visible_devices_selects_and_orders_devices():
    nvml = fake_nvml([device("GPU-aaa"), device("GPU-bbb"), device("GPU-ccc")])
    env = {"CUDA_VISIBLE_DEVICES": "GPU-ccc,1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    devices, notes = GpuProbe(nvml=nvml, environ=env).sample()
    assert [(d["index"], d["uuid"]) for d in devices] == [(0, "GPU-ccc"), (1, "GPU-bbb")]
    assert notes == []


def test_cuda_visible_devices_stops_at_an_invalid_entry_and_notes_index_order():
    nvml = fake_nvml([device("GPU-aaa"), device("GPU-bbb")])
    devices, notes = GpuProbe(nvml=nvml, environ={"CUDA_VISIBLE_DEVICES": "1,7,0"}).sample()
    assert [d["uuid"] for d in devices] == ["GPU-bbb"]
    assert any("'7' matches no GPU" in n for n in notes)
    assert any("PCI bus order" in n for n in notes)


def test_hidden_gpus_or_missing_driver_are_silent_and_disable_the_probe():
    nvml = fake_nvml([device("GPU-aaa")])
    devices, notes = GpuProbe(nvml=nvml, environ={"CUDA_VISIBLE_DEVICES": ""}).sample()
    assert devices == [] and notes == ["no visible NVIDIA GPU"]
    broken = fake_nvml([], init_error=NVMLError_LibraryNotFound("NVML Shared Library Not Found"))
    probe = GpuProbe(nvml=broken, environ={})
    assert probe.sample() == ([], ["NVML unavailable: NVML Shared Library Not Found"])
    probe.sample()
    assert broken.calls == ["init"]  # no retry per sample: cheap without a GPU
    assert probe.available is False


def test_real_pynvml_without_a_gpu_is_silent():
    probe = GpuProbe(environ={})
    devices, notes = probe.sample()
    if devices:  # a machine with a GPU: the real layer answered
        assert all(d["uuid"] for d in devices)
    else:
        assert len(notes) == 1
    probe.close()


def test_gpu_memory_of_the_run_process_tree():
    procs = [(100, 512 * 1024**2), (101, None), (999, 4 * 1024**3)]  # 999 is not ours
    nvml = fake_nvml([device("GPU-aaa", procs=procs)])
    (dev,), _ = GpuProbe(nvml=nvml, environ={}).sample(pids=[100, 101, 102])
    assert dev["run_mem_mb"] == 512.0
    unsupported = fake_nvml([device("GPU-aaa", procs=NVMLError_NotSupported("Not Supported"))])
    (dev,), notes = GpuProbe(nvml=unsupported, environ={}).sample(pids=[100])
    assert dev["run_mem_mb"] is None and dev["util_pct"] == 55.0
    assert notes == ["processes unavailable on GPU-aaa (NotSupported)"]
