"""The action table and how recorded actions map back onto it."""

from __future__ import annotations

import pytest

from atomlab.learning.actions import ACTION_NAMES, ACTIONS, action_by_name, table_action_of


def test_the_table_is_indexed_by_position_with_unique_names() -> None:
    assert [a.index for a in ACTIONS] == list(range(len(ACTIONS)))
    assert len(set(ACTION_NAMES)) == len(ACTIONS)
    assert ACTIONS[0].name == "keep_scanning" and not ACTIONS[0].is_conditioning
    assert all(a.is_conditioning for a in ACTIONS[1:])


@pytest.mark.parametrize("name", ["pulse_+1.5V", "pulse_+3V", "pulse_-3V", "pulse_+6V"])
def test_a_recorded_pulse_maps_to_its_voltage(name: str) -> None:
    action = action_by_name(name)
    recorded = {**action.args, "bias_v": action.args["bias_v"] + 0.001}  # float32 round trip
    assert table_action_of(kind="command", command="Bias.Pulse", args=recorded) == action.index


def test_commands_and_spec_changes_map_and_others_do_not() -> None:
    assert table_action_of(kind="command", command="TipShaper.Start") == 5
    assert table_action_of(kind="command", command="ZCtrl.Withdraw") == 6
    assert table_action_of(kind="command", command="Bias.Pulse", args={"bias_v": 2.0}) is None
    assert table_action_of(kind="command", command="TipShaper.PropsSet") is None
    assert table_action_of(kind="command", command="Scan.Action") is None
    spec = {"kind": "spec-change", "spec_label": "Z Setpoint", "old_value": 1e-10}
    assert table_action_of(**spec, new_value=2e-10) == action_by_name("setpoint_up").index
    assert table_action_of(**spec, new_value=0.5e-10) == action_by_name("setpoint_down").index
    assert table_action_of(**spec, new_value=1.3e-10) is None
    gain = {"kind": "spec-change", "spec_label": "Z Controller P Gain", "old_value": 3e-11}
    assert table_action_of(**gain, new_value=6e-11) == action_by_name("gain_up").index
    assert (
        table_action_of(kind="spec-change", spec_label="Bias", old_value=0.1, new_value=0.2) is None
    )
    assert (
        table_action_of(kind="spec-change", spec_label="Z Setpoint", old_value=0, new_value=1)
        is None
    )
    with pytest.raises(KeyError, match="keep_scanning"):
        action_by_name("jump")
