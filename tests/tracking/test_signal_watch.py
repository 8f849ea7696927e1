"""SIGTERM is recorded within the grace time even while the main thread sits in a long C call."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from atomlab.tracking import iter_jsonl

from .conftest import wait_until

STUCK = """
import hashlib, sys
from atomlab.core.settings import TrackingSettings
from atomlab.tracking import RunTracker
with RunTracker("stuck", ["busy"], home=sys.argv[1], settings=TrackingSettings(gpu=False)) as run:
    with run.step("busy"):
        print(run.run_dir, flush=True)
        # OpenSSL releases the GIL here; Python signal handlers wait until it returns.
        hashlib.pbkdf2_hmac("sha256", b"pw", b"salt", 10**9)
"""


def test_sigterm_recorded_by_the_monitor_while_main_thread_is_busy(home):
    proc = subprocess.Popen(
        [sys.executable, "-c", STUCK, str(home)], stdout=subprocess.PIPE, text=True
    )
    try:
        run_dir = proc.stdout.readline().strip()
        proc.send_signal(signal.SIGTERM)
        run_json = f"{run_dir}/run.json"

        def cancelled() -> dict | None:
            data = json.loads(Path(run_json).read_text())
            return data if data["status"] == "cancelled" else None

        record = wait_until(cancelled, timeout_s=30)
        assert proc.poll() is None  # still inside the C call: the monitor thread wrote this
        assert record["exit_signal"] == "SIGTERM"
        assert record["steps"][0]["status"] == "cancelled"
        events = list(iter_jsonl(Path(run_dir) / "events.jsonl"))
        assert events[-1]["event"] == "run.cancelled" and events[-1]["recorded_by"] == "monitor"
    finally:
        proc.kill()
        proc.communicate()
