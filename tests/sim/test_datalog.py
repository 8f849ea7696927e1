"""The simulated Data Logger records the chosen slots into a .dat file a Nanonis reader opens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atomlab.core.clock import FakeClock
from atomlab.instrument import NanonisClient
from atomlab.sim import Disturbances, start_simulator_in_thread


def test_a_timed_acquisition_averages_the_slots_and_saves_them(tmp_path: Path) -> None:
    read = pytest.importorskip("nanonispy2.read")
    clock = FakeClock()
    with start_simulator_in_thread(
        seed=0, ports=[0], clock=clock, disturbances=Disturbances.none(), tick_interval_s=None,
        session_dir=tmp_path,
    ) as sim, NanonisClient("127.0.0.1", sim.ports[0]) as client:  # fmt: skip
        client.call("DataLog.ChsSet", {"channel_indexes": [0, 1, 2]})  # Current, Bias, Z
        client.call(
            "DataLog.PropsSet",
            {"acquisition_mode": 2, "duration_hours": 0, "duration_minutes": 0,
             "duration_seconds": 1.0, "averaging": 5, "basename": "drift", "comment": "night",
             "modules": ["Bias"]},
        )  # fmt: skip
        client.call("DataLog.Start")
        clock.advance(0.5)
        running = client.call("DataLog.StatusGet")
        assert running["saved_file_path"] == "" and 0 < running["saved_points"] < 10
        clock.advance(1.0)  # past the 1 s duration: it stopped and saved by itself
        status = client.call("DataLog.StatusGet")
        assert status["stop_time"] and status["saved_points"] == 10  # 1 s / (5 x 20 ms)
        assert status["elapsed_seconds"] == pytest.approx(1.0, abs=0.05)
        path = Path(status["saved_file_path"])
        assert path == tmp_path / "drift00001.dat"
        spec = read.Spec(str(path))
        assert spec.header["Experiment"] == "Data Logger" and spec.header["Comment"] == "night"
        assert list(spec.signals) == ["Time (s)", "Current (A)", "Bias (V)", "Z (m)"]
        assert np.allclose(spec.signals["Bias (V)"], 0.1)
        assert np.allclose(spec.signals["Current (A)"], 1e-10, rtol=0.1)
        assert np.diff(spec.signals["Time (s)"]) == pytest.approx(np.full(9, 0.1), abs=2e-3)
        assert client.call("DataLog.PropsGet")["averaging"] == 5
