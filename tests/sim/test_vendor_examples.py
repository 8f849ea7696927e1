"""The official client's own example scripts run against the simulator without an error.

Each script of ``nanonis_spm_examples`` connects to ``localhost:6501``; here it connects to the
simulator's free port instead, its ``time.sleep`` advances the simulator's fake clock (so its
waits cost nothing) and a stand-in ``keyboard`` module ends its "press a key to stop" loops.
The official client prints "The following error appeared" for every error reply: a script that
only uses simulated modules must print none.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atomlab.core.clock import FakeClock
from atomlab.sim import Disturbances, start_simulator_in_thread

examples = pytest.importorskip("nanonis_spm_examples")
FOLDER = Path(next(iter(examples.__path__)))

# The scripts that use only simulated modules (the others drive RF generators, PLLs or user
# outputs: pass-through only). Example_ScansAtDifferentBias calls Scan_PropsSet without the
# autopaste argument that client 1.0.9 requires, so it fails in the client itself.
SIMULATED = (
    "Example_AutoApproach",
    "Example_BiasPulsesAtVariousZ",
    "Example_BiasSpectroscopy",
    "Example_BiasSpectroscopy_MultiSegment",
    "Example_CustomBiasSweep",
    "Example_GenSweeper_MultipleSweeps",
    "Example_LockInSweep",
    "Example_SimpleSignalAcquisition",
    "Example_TipCleaner",
    "Example_TipShaper",
    "Example_ZDriftMeasurement",
)


def run_example(name: str, session: Path) -> tuple[str, dict[str, Any], Any]:
    clock = FakeClock()
    sim = start_simulator_in_thread(
        seed=0, ports=[0], clock=clock, disturbances=Disturbances.none(), tick_interval_s=None,
        session_dir=session,
    )  # fmt: skip
    source = (FOLDER / f"{name}.py").read_text(encoding="utf-8")
    source = source.replace('("localhost",6501)', f'("127.0.0.1",{sim.ports[0]})')
    source = re.sub(r"^import time\s*$", "", source, flags=re.MULTILINE)
    fake_time = types.SimpleNamespace(sleep=lambda s: clock.advance(max(float(s), 0.0)))
    presses = {"n": 0}

    def is_pressed(_key: str) -> bool:
        presses["n"] += 1
        return presses["n"] > 5  # the operator stops the loop after a few rounds

    keyboard = types.ModuleType("keyboard")
    keyboard.is_pressed = is_pressed  # type: ignore[attr-defined]
    namespace: dict[str, Any] = {"__name__": "__main__", "time": fake_time}
    out = io.StringIO()
    previous = sys.modules.get("keyboard")
    sys.modules["keyboard"] = keyboard
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(source, name, "exec"), namespace)  # noqa: S102 - the vendor's script
    finally:
        if previous is None:
            sys.modules.pop("keyboard", None)
        else:
            sys.modules["keyboard"] = previous
        physics = sim.physics
        sim.stop()
    return out.getvalue(), namespace, physics


@pytest.mark.parametrize("name", SIMULATED)
def test_a_vendor_example_runs_without_an_error_reply(name: str, tmp_path: Path) -> None:
    printed, _namespace, physics = run_example(name, tmp_path)
    errors = re.findall(r"The following error appeared: \n (.*)", printed)
    assert errors == [], errors
    if name != "Example_TipShaper":  # it dips the tip into the surface on purpose
        assert physics.tip.crashes == 0


def test_the_bias_spectroscopy_example_gets_current_and_bias(tmp_path: Path) -> None:
    """It asks for channels [0, 24], "Current and Bias", and reads data rows 1 and 2."""
    _printed, namespace, _physics = run_example("Example_BiasSpectroscopy", tmp_path)
    bias = np.asarray(namespace["AcqSignal_Bias"], dtype=float)
    current = np.asarray(namespace["AcqSignal_Current"], dtype=float)
    assert bias.shape == current.shape == (256,)
    assert bias[0] == pytest.approx(-2.0) and bias[-1] == pytest.approx(2.0)
    assert current[0] < 0 < current[-1]
    assert list(tmp_path.glob("Example_BiasSpectroscopy*.dat"))  # its autosave wrote a file
