"""Fixtures for the run tracker tests: a data home, a fake clock and a helper to run atomlab."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.settings import TrackingSettings

CLI = "from atomlab.cli.main import main; main()"


@pytest.fixture
def home(isolated_home: Path) -> Path:
    return isolated_home


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings() -> TrackingSettings:
    return TrackingSettings(gpu=False)


def atomlab_process(home: Path, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start ``atomlab ARGS`` as a real process with its own data home."""
    env = {**os.environ, "ATOMLAB_HOME": str(home), "ATOMLAB_TRACKING__GPU": "false"}
    return subprocess.Popen(
        [sys.executable, "-c", CLI, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def wait_until(condition: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll a cross-process condition with a deadline (real processes need real time)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout_s} s")
