"""The survey scan through the Nanonis protocol, and detection on what comes back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atomlab.instrument import NanonisClient, WriteGuard, load_catalog
from atomlab.lab import Located, detect_defects, match
from atomlab.lab.expert import imaging_moves
from atomlab.lab.scanning import scan_surface
from atomlab.sim import SimulatorThread
from atomlab.surface import Surface


def test_a_survey_scan_brings_back_both_traces_and_its_defects_are_found(
    small_stm: tuple[SimulatorThread, Surface], tmp_path: Path
) -> None:
    sim, surface = small_stm
    lines_seen: list[tuple[int, int]] = []
    with NanonisClient("127.0.0.1", sim.ports[0], call_timeout_s=10.0) as client:
        guard = WriteGuard(client, load_catalog(), allow_writes=True, audit_log=tmp_path / "a")
        client.call("Util.RTFreqSet", {"frequency_hz": 10_000})
        for move in imaging_moves(frame_nm=13.0, speed_nm_s=600.0):
            if move.command is None:
                guard.set(move.spec, move.value)
        image = scan_surface(
            client,
            guard,
            frame_nm=13.0,
            pixels=96,
            speed_nm_s=600.0,
            origin_nm=(5.0, 5.0),
            on_progress=lambda done, total: lines_seen.append((done, total)),
        )
        frame = client.call("Scan.FrameGet")
    assert image.shape == (96, 96)
    assert np.isfinite(image.forward).all() and image.backward is not None
    assert np.isfinite(image.backward).all()
    assert frame["width_m"] == pytest.approx(13e-9, rel=1e-6)  # f32 on the wire
    assert lines_seen[-1] == (96, 96)
    assert sim.physics.snapshot()["tip"]["crashes"] == 0
    found = detect_defects(image, keep_within_nm=(10.0, 10.0))
    truth = [Located(f"d{d.id}", d.x / 10, d.y / 10, d.kind.value) for d in surface.defects]
    detected = [Located(d.id, d.x_nm, d.y_nm, d.kind) for d in found.detections]
    report = match(detected, truth, period_nm=(10.0, 10.0))
    assert report.precision == report.recall == 1.0, report.to_dict()
