"""The simulators on one shared surface file: ``sim spm --surface`` images it and follows the
repairs written to it; ``sim swarm --surface`` refuses what it cannot honour."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from atomlab.instrument import NanonisClient
from atomlab.surface import Defect, DefectKind, Lattice, Surface, load_surface, save_surface
from tests.conftest import CliResult

DEADLINE_S = 60.0  # a hang guard for a loaded machine


def z_over(client: NanonisClient, x_m: float, y_m: float) -> float:
    """Park the tip at piezo (x, y) and read Z once the controller has settled there."""
    client.call("FolMe.XYPosSet", {"x_m": x_m, "y_m": y_m, "wait": 1})
    z_index = client.signal_index("Z (m)")
    readings = [client.read_signals([z_index], wait=True)[0] for _ in range(5)]
    return sorted(readings)[2]


def test_sim_spm_images_the_files_surface_and_follows_a_repair(tmp_path: Path) -> None:
    path = tmp_path / "surface.json"
    lattice = Lattice(width=100, height=100, steps=())
    save_surface(Surface(lattice, [Defect(1, DefectKind.ADATOM, 30, 60, 10)], seed=0), path)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "atomlab",
            "--home",
            str(tmp_path),
            "sim",
            "spm",
            "--port",
            "0",
            "--surface",
            str(path),
            "--no-disturbances",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        assert ready["defects"] == 1  # the file's surface, not the seeded 50 nm one
        with NanonisClient("127.0.0.1", ready["ports"][0], call_timeout_s=10.0) as client:
            # piezo (0, 0) is over the surface's centre (5, 5) nm; the adatom is at (3, 6) nm
            over_adatom = z_over(client, -2e-9, 1e-9)
            beside = z_over(client, 2e-9, -2e-9)
            assert over_adatom - beside > 100e-12  # a severity-10 adatom: 2 A high
            repaired = load_surface(path)
            repaired.remove_defect(1)
            save_surface(repaired, path)  # what sim swarm --surface does after a repair
            deadline = time.monotonic() + DEADLINE_S
            while z_over(client, -2e-9, 1e-9) - beside > 20e-12:
                assert time.monotonic() < deadline, "the simulator never saw the repair"
    finally:
        proc.terminate()
        proc.communicate(timeout=DEADLINE_S)
    assert proc.returncode == 143


def test_sim_swarm_refuses_a_surface_with_resume_and_a_bad_file(
    cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    path = tmp_path / "surface.json"
    save_surface(Surface.generate(1, width=100, height=100, n_defects=2, n_steps=0), path)
    both = cli("--json", "sim", "swarm", "--surface", str(path), "--resume")
    assert both.exit_code == 3
    assert both.json["error"]["details"]["field"] == "surface"
    bad = tmp_path / "bad.json"
    bad.write_text("[]", encoding="utf-8")
    refused = cli("--json", "sim", "swarm", "--surface", str(bad), "--connect-attempts", "1")
    assert refused.exit_code == 3
    assert str(bad) in refused.json["error"]["message"]
