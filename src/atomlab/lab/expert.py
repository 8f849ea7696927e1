"""Stage 1: a scripted expert prepares the STM for imaging while the trajectory monitor records.

The expert's moves are what an operator does before a survey scan of a rough surface: raise the
bias and lower the setpoint (a wider, safer gap), stiffen the feedback so the tip follows tall
clusters at scan speed, and frame the whole sample. Every move goes through the
:class:`~atomlab.instrument.WriteGuard` (bounded, ramped, audited); the monitor, recording on its
own connection, turns each into an action event with its signal window and tags it ``self``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atomlab.core.errors import AtomlabError
from atomlab.instrument import NanonisClient, WriteGuard, load_catalog
from atomlab.lab.config import SCAN_LOOP_HZ
from atomlab.trajectory import (
    DEFAULT_SPECS,
    InstrumentSource,
    Monitor,
    OwnWrites,
    RunSummary,
    build_config,
    open_store,
)

MONITOR_JOIN_S = 10.0
CONDITIONING_PULSE = {
    "bias_v": 1.5,
    "width_s": 0.05,
    "wait_until_done": 1,
    "z_hold": 1,
    "absolute": 0,
}
"""A 1.5 V, 50 ms pulse on top of the bias with Z held: harmless to a good tip."""
BASELINE_EXTRA_S = 0.3
"""Recorded before the first move beyond one action window, so its window is complete."""
COALESCE_S = 0.3
"""A guarded ramp (the bias in 0.1 V steps) is one action, not one per step."""
SIGNALS = ("Z Position", "Tunnel Current", "Setpoint Error")
SPECS = (*DEFAULT_SPECS, "Scan Forward Speed")


@dataclass(frozen=True)
class ExpertMove:
    """One setting the expert changes (``spec`` to ``value``), or one guarded command it sends
    (``command`` with ``args``), and why."""

    spec: str
    value: float
    why: str
    command: str | None = None
    args: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.command or self.spec


def imaging_moves(*, frame_nm: float, speed_nm_s: float) -> list[ExpertMove]:
    """The expert's preparation for a survey scan of ``frame_nm`` at ``speed_nm_s``."""
    return [
        ExpertMove(
            "",
            0.0,
            "a short conditioning pulse before imaging",
            command="Bias.Pulse",
            args=dict(CONDITIONING_PULSE),
        ),
        ExpertMove("bias_v", 0.5, "raise the bias: the same current at a wider gap"),
        ExpertMove("zctrl_setpoint_a", 50e-12, "lower the setpoint: the tip backs off further"),
        ExpertMove("zctrl_p_gain", 60e-12, "stiffer feedback, to follow clusters at speed"),
        ExpertMove("zctrl_time_constant_s", 2.5e-4, "shorter time constant: more integral gain"),
        ExpertMove("scan_frame_width_m", frame_nm * 1e-9, "frame the whole surface"),
        ExpertMove("scan_frame_height_m", frame_nm * 1e-9, "frame the whole surface"),
        ExpertMove("scan_speed_m_s", speed_nm_s * 1e-9, "survey speed"),
    ]


@dataclass
class ExpertSession:
    """What stage 1 recorded."""

    run_name: str
    db_path: Path
    summary: RunSummary | None = None
    moves: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        summary = self.summary.to_dict() if self.summary else {}
        return {
            "run_name": self.run_name,
            "db_path": str(self.db_path),
            "samples": summary.get("samples"),
            "actions": len(self.actions),
            "self_actions": sum(a["source"] == "self" for a in self.actions),
            "missed_ticks": summary.get("missed_ticks"),
            "errors": summary.get("errors"),
            "duration_s": summary.get("duration_s"),
            "moves": self.moves,
            "action_list": self.actions,
        }


def record_expert_session(
    *,
    host: str,
    port: int,
    db_path: Path,
    run_name: str,
    audit_log: Path,
    moves: list[ExpertMove],
    interval_s: float,
    action_window_s: float,
    hold_s: float,
    note: Callable[[str], None] = lambda _m: None,
) -> ExpertSession:
    """Record a monitor run while the expert makes ``moves``; returns what was recorded.

    The monitor records a baseline of one action window first and keeps recording one window
    (and the attribution grace) after the last move, so every action's window is complete.
    """
    catalog = load_catalog()
    config = build_config(
        {
            "run_name": run_name,
            "signals": list(SIGNALS),
            "specs": list(SPECS),
            "interval_s": interval_s,
            "action_window_s": action_window_s,
            "db_path": str(db_path),
            "flush_interval_s": 0.25,
            "coalesce_s": COALESCE_S,
        }
    )
    session = ExpertSession(run_name=run_name, db_path=db_path)
    own = OwnWrites()
    with (
        NanonisClient(host, port) as monitor_client,
        NanonisClient(host, port) as expert_client,
        open_store(db_path, read_only=False) as store,
    ):
        monitor = Monitor(InstrumentSource(monitor_client, catalog), config, store, own_writes=own)
        guard = WriteGuard(
            expert_client, catalog, allow_writes=True, audit_log=audit_log, who="demo-expert"
        )
        guard.add_listener(own.observe)
        outcome: dict[str, Any] = {}

        def record() -> None:
            try:
                outcome["summary"] = monitor.run()
            except BaseException as exc:  # reported by the caller's thread
                outcome["error"] = exc

        recorder = threading.Thread(target=record, name="demo-monitor", daemon=True)
        recorder.start()
        try:
            _wait(action_window_s + BASELINE_EXTRA_S, recorder)
            # Not a catalog spec (so no guarded write and no action): the controller's loop rate,
            # which the stiffer feedback below needs.
            expert_client.call("Util.RTFreqSet", {"frequency_hz": SCAN_LOOP_HZ})
            note(f"expert: Z controller loop at {SCAN_LOOP_HZ / 1000:g} kHz")
            for k, move in enumerate(moves, start=1):
                if move.command is not None:
                    sent = guard.command(move.command, move.args)
                    session.moves.append(
                        {"command": move.command, "args": move.args, "outcome": sent.outcome}
                    )
                    told = f"{move.command} {move.args}"
                else:
                    result = guard.set(move.spec, move.value)
                    session.moves.append(
                        {
                            "spec": move.spec,
                            "value": move.value,
                            "readback": result.readback,
                            "steps": result.steps_sent,
                            "why": move.why,
                        }
                    )
                    told = f"{move.spec} -> {move.value:g}"
                note(f"expert move {k}/{len(moves)}: {told} ({move.why})")
                _wait(hold_s, recorder)
            # One more window after the last move, and the grace in which a change is matched
            # to the guard's write (docs/trajectory.md).
            _wait(action_window_s + 0.6, recorder)
        finally:
            monitor.stop()
            recorder.join(MONITOR_JOIN_S)
        if "error" in outcome:
            error = outcome["error"]
            raise error if isinstance(error, AtomlabError) else RuntimeError(str(error))
        session.summary = outcome.get("summary")
    with open_store(db_path) as reader:
        session.actions = [_action_dict(a) for a in reader.actions(run_name)]
    return session


def _wait(seconds: float, recorder: threading.Thread) -> None:
    """Let the recording run ``seconds`` (returns early if the recorder died)."""
    recorder.join(seconds)
    if not recorder.is_alive():
        raise RuntimeError("the trajectory monitor stopped recording during the expert session")


def _action_dict(action: Any) -> dict[str, Any]:
    keys = (
        "action_idx",
        "kind",
        "command",
        "spec_label",
        "old_value",
        "new_value",
        "delta",
        "dt_s",
        "end_dt_s",
        "source",
        "window_start_dt_s",
        "window_end_dt_s",
    )
    return {k: getattr(action, k, None) for k in keys}


def session_run_name(seed: int) -> str:
    """A run name unique to this demo run's database (each demo run has its own)."""
    return f"demo expert seed {seed} {time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
