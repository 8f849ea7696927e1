"""Stage 1: the expert's guarded moves, recorded by the trajectory monitor as 'self' actions."""

from __future__ import annotations

from pathlib import Path

from atomlab.instrument import read_audit_log
from atomlab.lab.expert import CONDITIONING_PULSE, ExpertMove, record_expert_session
from atomlab.sim import SimulatorThread
from atomlab.surface import Surface
from atomlab.trajectory import open_store


def test_each_move_is_one_self_action_with_a_complete_window(
    small_stm: tuple[SimulatorThread, Surface], tmp_path: Path
) -> None:
    sim, _surface = small_stm
    moves = [
        ExpertMove("", 0.0, "condition", command="Bias.Pulse", args=dict(CONDITIONING_PULSE)),
        ExpertMove("bias_v", 0.4, "wider gap"),  # a guarded ramp of three 0.1 V steps
        ExpertMove("zctrl_setpoint_a", 60e-12, "back off"),
    ]
    notes: list[str] = []
    session = record_expert_session(
        host="127.0.0.1",
        port=sim.ports[0],
        db_path=tmp_path / "traj.sqlite",
        run_name="expert-test",
        audit_log=tmp_path / "audit.jsonl",
        moves=moves,
        interval_s=0.05,
        action_window_s=0.5,
        hold_s=0.6,
        note=notes.append,
    )
    assert [(a["kind"], a["spec_label"], a["source"]) for a in session.actions] == [
        ("command", "Bias.Pulse", "self"),
        ("spec-change", "Bias", "self"),
        ("spec-change", "Z Setpoint", "self"),
    ]
    bias = session.actions[1]
    assert (bias["old_value"], bias["new_value"]) == (0.1, 0.4)
    with open_store(tmp_path / "traj.sqlite") as store:
        for action in store.actions("expert-test"):
            window = store.signal_window(
                action.window_start_dt_s, action.window_end_dt_s, "expert-test"
            )
            assert window.complete, window.partial_reason
            assert window.count > 0
    data = session.to_dict()
    assert data["self_actions"] == 3 and data["errors"] == 0
    assert [m.get("readback") for m in data["moves"]] == [None, 0.4, 60e-12]
    assert data["moves"][0]["outcome"] == "done"
    assert len(notes) == 4  # the loop rate, then one line per move
    audited = [r for r in read_audit_log(tmp_path / "audit.jsonl") if r["outcome"] == "done"]
    assert [r.get("what") or r.get("command") for r in audited] == [
        "Bias.Pulse",
        "bias_v",
        "zctrl_setpoint_a",
    ]
    assert {r["who"] for r in audited} == {"demo-expert"}
