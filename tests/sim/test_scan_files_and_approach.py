"""Scans saved as .sxm files a Nanonis reader opens, the auto-approach and the safe tip."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from atomlab.core.clock import FakeClock
from atomlab.instrument import NanonisClient
from atomlab.sim import Disturbances, SimulatorThread, start_simulator_in_thread
from atomlab.sim.stm_files import read_sxm_images


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[SimulatorThread, NanonisClient, FakeClock, Path]]:
    clock = FakeClock()
    session = tmp_path / "session"
    sim = start_simulator_in_thread(
        seed=0,
        ports=[0],
        clock=clock,
        disturbances=Disturbances.none(),
        tick_interval_s=None,
        session_dir=session,
    )
    client = NanonisClient("127.0.0.1", sim.ports[0], call_timeout_s=60.0)
    with client:
        yield sim, client, clock, session
    sim.stop()


def small_scan(client: NanonisClient, *, up: bool = True) -> str:
    client.call("Scan.BufferSet", {"channels": [0, 2, 1], "pixels": 32, "lines": 8})
    client.call(
        "Scan.FrameSet",
        {
            "center_x_m": 1e-9,
            "center_y_m": -2e-9,
            "width_m": 4e-9,
            "height_m": 2e-9,
            "angle_deg": 0.0,
        },
    )
    client.call("Scan.Action", {"action": 0, "direction_up": int(up)})
    reply = client.call("Scan.WaitEndOfScan", {"timeout_ms": -1})
    assert reply["timed_out"] == 0
    return str(reply["file_path"])


@pytest.mark.parametrize("up", [True, False])
def test_a_finished_scan_is_saved_as_an_sxm_file_a_nanonis_reader_opens(
    rig: tuple[SimulatorThread, NanonisClient, FakeClock, Path], up: bool
) -> None:
    read = pytest.importorskip("nanonispy2.read")
    _, client, _, session = rig
    client.call(
        "Scan.PropsSet",
        {
            "continuous_scan": 2,
            "bouncy_scan": 2,
            "autosave": 1,
            "series_name": "topo_",
            "comment": "atomlab ±",
            "modules_names": ["Bias", "Z-Controller"],
            "autopaste": 3,
        },
    )
    path = Path(small_scan(client, up=up))
    assert path == session / "topo_001.sxm" and path.is_file()
    scan = read.Scan(str(path))
    assert list(scan.header["scan_pixels"]) == [32, 8]
    assert list(scan.header["scan_range"]) == pytest.approx([4e-9, 2e-9])
    assert list(scan.header["scan_offset"]) == pytest.approx([1e-9, -2e-9])
    assert scan.header["bias"] == pytest.approx(0.1)
    assert scan.header["scan_dir"] == ("up" if up else "down")
    assert scan.header["data_info"]["Name"] == ("Current", "Z", "Bias")
    assert scan.header["data_info"]["Channel"] == ("0", "30", "24")  # the 128-signal indexes
    assert scan.header["comment"] == "atomlab ±"
    for slot, name in ((2, "Z"), (0, "Current")):
        for forward in (1, 0):
            grabbed = np.asarray(
                client.call("Scan.FrameDataGrab", {"channel_index": slot, "forward": forward})[
                    "data"
                ]
            )
            stored = scan.signals[name]["forward" if forward else "backward"]
            # the file holds rows in acquisition order, backward rows right to left
            shown = stored[::-1, :] if up else stored
            shown = shown if forward else shown[:, ::-1]
            assert np.allclose(shown, grabbed, rtol=1e-6), (name, forward)
    ours = read_sxm_images(path)
    assert np.allclose(
        ours["Z"][0],
        np.asarray(client.call("Scan.FrameDataGrab", {"channel_index": 2, "forward": 1})["data"]),
    )


def test_scan_save_writes_the_buffer_now_and_autosave_off_writes_nothing(
    rig: tuple[SimulatorThread, NanonisClient, FakeClock, Path],
) -> None:
    _, client, _, session = rig
    client.call(
        "Scan.PropsSet",
        {
            "continuous_scan": 0,
            "bouncy_scan": 0,
            "autosave": 3,
            "series_name": "",
            "comment": "",
            "modules_names": [],
            "autopaste": 0,
        },
    )
    assert small_scan(client) == ""
    assert not list(session.glob("*.sxm"))
    assert client.call("Scan.Save", {"wait_until_saved": 1, "timeout_ms": -1})["timed_out"] == 0
    assert [p.name for p in session.glob("*.sxm")] == ["sim_001.sxm"]
    props = client.call("Scan.PropsGet")
    assert props["autosave"] == 2 and props["modules_names"] == ["Bias", "Current", "Z-Controller"]
    assert props["number_of_parameters_per_module_array"] == [1, 1, 3]
    assert client.call("Util.SessionPathGet")["path"] == str(session)


def test_continuous_bouncy_scanning_alternates_direction(
    rig: tuple[SimulatorThread, NanonisClient, FakeClock, Path],
) -> None:
    sim, client, _clock, _ = rig
    client.call(
        "Scan.PropsSet",
        {
            "continuous_scan": 1,
            "bouncy_scan": 1,
            "autosave": 3,
            "series_name": "",
            "comment": "",
            "modules_names": [],
            "autopaste": 0,
        },
    )
    small_scan(client, up=True)
    assert client.call("Scan.StatusGet")["running"] == 1  # the next frame started by itself
    client.call("Scan.WaitEndOfScan", {"timeout_ms": -1})
    assert sim.physics.scan.scans_finished == 2 and sim.physics.scan.direction_up is True
    assert client.call("Scan.StatusGet")["running"] == 1
    client.call("Scan.Action", {"action": 1, "direction_up": 0})


def test_the_auto_approach_brings_a_retracted_sample_into_tunnelling(
    rig: tuple[SimulatorThread, NanonisClient, FakeClock, Path],
) -> None:
    sim, client, clock, _ = rig
    client.call("ZCtrl.Withdraw", {"wait": 1, "timeout_ms": -1})
    client.call("Motor.StartMove", {"direction": 4, "steps": 20, "group": 0, "wait": 1})  # Z+
    assert client.call("Current.Get")["current_a"] == pytest.approx(0.0, abs=5e-12)
    client.call("AutoApproach.Open")
    client.call("AutoApproach.OnOffSet", {"on_off": 1})
    assert client.call("AutoApproach.OnOffGet")["status"] == 1
    for _ in range(200):
        clock.advance(0.5)
        if client.call("AutoApproach.OnOffGet")["status"] == 0:
            break
    assert client.call("AutoApproach.OnOffGet")["status"] == 0
    clock.advance(1.0)
    assert client.call("ZCtrl.OnOffGet")["on"] == 1
    assert client.call("Current.Get")["current_a"] == pytest.approx(100e-12, rel=0.2)
    assert sim.physics.tip.crashes == 0
    assert any(e.kind == "approach_finished" for e in sim.physics.events)
    assert client.call("Motor.StepCounterGet")["z_steps"] < 20  # coarse steps back towards it


def test_the_safe_tip_withdraws_on_a_current_above_its_threshold(
    rig: tuple[SimulatorThread, NanonisClient, FakeClock, Path],
) -> None:
    sim, client, clock, _ = rig
    client.call("SafeTip.PropsSet", {"auto_recovery": 0, "auto_pause_scan": 1, "threshold": 1e-9})
    client.call("SafeTip.OnOffSet", {"safe_tip_status": 1})
    client.call("ZCtrl.SetpntSet", {"setpoint": 3e-9})  # the feedback drives past 1 nA
    clock.advance(0.5)
    assert client.call("ZCtrl.OnOffGet")["on"] == 0
    assert client.call("ZCtrl.ZPosGet")["z_m"] == pytest.approx(200e-9)
    assert sim.physics.safe_tip.triggered == 1 and sim.physics.tip.crashes == 0
    assert client.call("SafeTip.PropsGet").values == pytest.approx(
        {"auto_recovery": 0, "auto_pause_scan": 1, "threshold": 1e-9}
    )


def test_without_a_session_folder_nothing_is_saved_unless_asked() -> None:
    """An in-process simulator (a learning loop's) leaves no files behind by itself."""
    clock = FakeClock()
    with (
        start_simulator_in_thread(
            seed=0, ports=[0], clock=clock, disturbances=Disturbances.none(), tick_interval_s=None
        ) as sim,
        NanonisClient("127.0.0.1", sim.ports[0], call_timeout_s=60.0) as client,
    ):
        assert small_scan(client) == ""
        assert sim.sim.commands._session_dir is None  # no folder was even created
        assert client.call("Scan.PropsGet")["autosave"] == 2
        client.call("Scan.Save", {"wait_until_saved": 1, "timeout_ms": -1})
        saved = Path(client.call("Util.SessionPathGet")["path"])
        assert [p.name for p in saved.glob("*.sxm")] == ["sim_001.sxm"]
