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
import hashlib, sys, threading, time
import psutil
from atomlab.core.settings import TrackingSettings
from atomlab.tracking import RunTracker

def announce_when_inside_the_c_call(run_dir):
    # The main thread is inside pbkdf2 once it has burnt 0.3 s of CPU on that line: only then
    # may the test send SIGTERM (sent earlier, the main thread would handle it by itself).
    main = threading.main_thread()
    frames = sys._current_frames
    me = psutil.Process()
    while True:
        frame = frames()[main.ident]
        if frame.f_code.co_filename == "<string>" and frame.f_lineno == LINE:
            cpu = {t.id: t.user_time + t.system_time for t in me.threads()}
            start = cpu[main.native_id]
            while cpu[main.native_id] - start < 0.3:
                time.sleep(0.02)
                cpu = {t.id: t.user_time + t.system_time for t in me.threads()}
            print(run_dir, flush=True)
            return
        time.sleep(0.01)

with RunTracker("stuck", ["busy"], home=sys.argv[1], settings=TrackingSettings(gpu=False)) as run:
    with run.step("busy"):
        LINE = sys._getframe().f_lineno + 3  # the pbkdf2 line
        threading.Thread(target=announce_when_inside_the_c_call, args=(run.run_dir,)).start()
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

        def run_cancelled_event() -> dict | None:  # appended just after run.json is replaced
            events = iter_jsonl(Path(run_dir) / "events.jsonl")
            return next((e for e in events if e["event"] == "run.cancelled"), None)

        assert wait_until(run_cancelled_event, timeout_s=30)["recorded_by"] == "monitor"
    finally:
        proc.kill()
        proc.communicate()
