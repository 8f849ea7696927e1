"""Telemetry samples measure the whole process tree, not just the tracking process."""

from __future__ import annotations

import subprocess
import sys

from atomlab.tracking import TelemetrySampler

from .conftest import wait_until

BUSY = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"


def test_sample_has_system_and_tree_fields():
    sample = TelemetrySampler().sample(step="x")
    for key in (
        "proc_cpu_pct",
        "proc_rss_mb",
        "proc_count",
        "sys_cpu_pct",
        "sys_mem_pct",
        "disk_read_mb_s",
        "net_sent_mb_s",
        "dt_s",
        "t",
    ):
        assert key in sample
    assert sample["step"] == "x" and sample["proc_count"] >= 1 and sample["proc_rss_mb"] > 0
    assert "gpus" not in sample


def test_busy_child_process_shows_up_in_the_tree_cpu():
    sampler = TelemetrySampler(rescan_interval_s=0.0)
    child = subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=True)
    try:
        sampler.tree.watch(child.pid)

        def busy_sample() -> dict | None:
            sample = sampler.sample()
            return sample if sample["proc_cpu_pct"] > 10 else None

        sample = wait_until(busy_sample, timeout_s=60)
        assert sample["proc_count"] >= 2
        assert child.pid in sampler.tree.pids
    finally:
        child.kill()
        child.wait()
    after = sampler.sample()
    assert child.pid not in sampler.tree.pids or after["proc_count"] >= 1


def test_gpu_notes_appear_once():
    from atomlab.tracking import GpuProbe

    from .test_gpu import NVMLError_LibraryNotFound, fake_nvml

    nvml = fake_nvml([], init_error=NVMLError_LibraryNotFound("no driver"))
    sampler = TelemetrySampler(gpu=GpuProbe(nvml=nvml, environ={}))
    first, second = sampler.sample(), sampler.sample()
    assert first["notes"] == ["NVML unavailable: no driver"]
    assert "notes" not in second and first["proc_count"] >= 1
