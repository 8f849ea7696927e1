"""Guarded one-shot commands (contract C2): the catalog's commands section, bounds, gate,
cooldown, dry run, the audit log's ``kind: command`` lines and the listeners."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from atomlab.core.clock import FakeClock
from atomlab.core.errors import (
    ConfigError,
    ConnectionFailedError,
    InvalidInputError,
    PolicyRefusedError,
)
from atomlab.instrument import (
    CommandEvent,
    NanonisClient,
    WriteEvent,
    WriteGuard,
    load_catalog,
    parse_catalog,
    read_audit_log,
)
from atomlab.sim import SimulatorThread

from .conftest import StateServer

CATALOG = load_catalog()


@pytest.fixture
def client(state_server: StateServer) -> Iterator[NanonisClient]:
    with NanonisClient("127.0.0.1", state_server.port) as nanonis:
        yield nanonis


def guard(client: NanonisClient, audit: Path, **kw: Any) -> WriteGuard:
    return WriteGuard(
        client,
        CATALOG,
        allow_writes=kw.pop("allow_writes", True),
        audit_log=audit,
        who="tester",
        clock=kw.pop("clock", FakeClock()),
        **kw,
    )


def test_the_packaged_catalog_allows_pulses_tip_shaping_and_withdraw():
    allowed = {policy.command for policy in CATALOG.commands}
    assert {"Bias.Pulse", "TipShaper.Start", "ZCtrl.Withdraw"} <= allowed
    assert CATALOG.command_policy("Bias.Set") is None  # a spec's setter is not a command


def test_a_command_is_sent_audited_and_heard(client, state_server, tmp_path):
    audit = tmp_path / "audit.jsonl"
    g = guard(client, audit)
    heard: list[WriteEvent | CommandEvent] = []
    g.add_listener(heard.append)
    result = g.command("Bias.Pulse", {"width_s": 0.05, "bias_v": 3.0})
    assert state_server.requests[-1] == "Bias.Pulse"
    assert result.outcome == "done" and result.command == "Bias.Pulse"
    assert result.args == {
        "wait_until_done": 1,
        "width_s": 0.05,
        "bias_v": 3.0,
        "z_hold": 0,
        "absolute": 0,
    }
    (line,) = read_audit_log(audit)
    assert line["kind"] == "command" and line["outcome"] == "done"
    for key in ("id", "command", "args", "at_utc", "at_monotonic", "who", "reply"):
        assert line[key] == getattr(result, key, line[key])
    assert line["who"] == "tester" and line["reply"] == {}
    (event,) = heard
    assert isinstance(event, CommandEvent)
    assert (event.id, event.command, event.args) == (result.id, "Bias.Pulse", result.args)


@pytest.mark.parametrize(
    ("name", "args", "error", "match"),
    [
        ("Bias.Nope", None, PolicyRefusedError, "not a known Nanonis command"),
        ("Bias.Set", {"bias_v": 0.1}, PolicyRefusedError, "not allowed"),
        ("Bias.Pulse", {"width_s": 5.0, "bias_v": 1.0}, PolicyRefusedError, "outside its bounds"),
        ("Bias.Pulse", {"width_s": 0.1, "bias_v": 99.0}, PolicyRefusedError, "outside"),
        ("TipShaper.Start", {"timeout_ms": 10**9}, PolicyRefusedError, "outside its bounds"),
        ("Bias.Pulse", {"width_s": 0.1}, InvalidInputError, "needs the argument 'bias_v'"),
        ("Bias.Pulse", {"width_s": float("nan"), "bias_v": 1}, InvalidInputError, "finite"),
        ("Bias.Pulse", {"width_s": "0.1", "bias_v": 1}, InvalidInputError, "not a number"),
        ("Bias.Pulse", {"width_s": 0.1, "bias_v": 1, "z_hold": 1.5}, InvalidInputError, "whole"),
        ("Bias.Pulse", {"width_s": 0.1, "bias_v": 1, "nope": 1}, InvalidInputError, "no argument"),
    ],
)
def test_refused_and_invalid_commands_send_nothing(
    client, state_server, tmp_path, name, args, error, match
):
    audit = tmp_path / "audit.jsonl"
    with pytest.raises(error, match=match) as info:
        guard(client, audit).command(name, args)
    assert state_server.requests == []
    if error is PolicyRefusedError:
        assert int(info.value.exit_code) == 2
        (line,) = read_audit_log(audit)
        assert line["kind"] == "command" and line["outcome"] == "refused"
    else:
        assert int(info.value.exit_code) == 3


def test_an_unbounded_argument_may_only_take_its_default(tmp_path, client, state_server):
    catalog = parse_catalog(
        {
            "signals": [],
            "specs": [],
            "commands": [{"command": "ZCtrl.Withdraw", "args": {"wait": {"min": 0, "max": 1}}}],
        }
    )
    g = WriteGuard(client, catalog, allow_writes=True, audit_log=tmp_path / "a.jsonl")
    with pytest.raises(PolicyRefusedError, match="not bounded"):
        g.command("ZCtrl.Withdraw", {"timeout_ms": 5})
    assert g.command("ZCtrl.Withdraw").args == {"wait": 1, "timeout_ms": -1}


def test_disabled_writes_plan_only_and_cooldown(client, state_server, tmp_path):
    audit = tmp_path / "audit.jsonl"
    off = guard(client, audit, allow_writes=False)
    with pytest.raises(PolicyRefusedError, match="writes are disabled"):
        off.command("TipShaper.Start")
    planned = off.command("TipShaper.Start", plan_only=True)
    assert planned.outcome == "dry_run" and state_server.requests == []
    clock = FakeClock()
    on = guard(client, audit, clock=clock)
    on.command("TipShaper.Start")
    with pytest.raises(PolicyRefusedError, match="cooldown") as info:
        on.command("TipShaper.Start")
    assert info.value.details["retry_in_s"] == pytest.approx(2.0)
    # A new guard (another process, a restart) finds the last command in the audit log.
    later = guard(client, audit, clock=clock)
    with pytest.raises(PolicyRefusedError, match="cooldown"):
        later.command("TipShaper.Start")
    clock.advance(2.5)
    assert later.command("TipShaper.Start").outcome == "done"
    assert state_server.requests.count("TipShaper.Start") == 2
    outcomes = [line["outcome"] for line in read_audit_log(audit)]
    assert outcomes == ["refused", "dry_run", "done", "refused", "refused", "done"]


class _Interrupted:
    """A client whose reply never comes: the operator presses Ctrl-C while it waits."""

    def call(self, command: str, args: Any = None, **kw: Any) -> Any:
        raise KeyboardInterrupt


def test_a_command_that_fails_or_is_interrupted_is_audited_as_failed(tmp_path):
    audit = tmp_path / "audit.jsonl"
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nobody = NanonisClient("127.0.0.1", port, connect_timeout_s=2.0)  # connects on first call
    with pytest.raises(ConnectionFailedError) as failed:
        guard(nobody, audit).command("TipShaper.Start")
    with pytest.raises(KeyboardInterrupt):
        guard(cast(NanonisClient, _Interrupted()), audit).command("TipShaper.Start")
    lines = read_audit_log(audit)
    assert [(line["kind"], line["command"], line["outcome"]) for line in lines] == [
        ("command", "TipShaper.Start", "failed"),
        ("command", "TipShaper.Start", "failed"),
    ]
    assert [line["reason"] for line in lines] == [
        failed.value.message,
        "interrupted by the operator",
    ]


def test_commands_reach_the_real_simulator(sim: SimulatorThread, tmp_path):
    with NanonisClient("127.0.0.1", sim.ports[0]) as nanonis:
        g = WriteGuard(nanonis, CATALOG, allow_writes=True, audit_log=tmp_path / "a.jsonl")
        pulse = g.command("Bias.Pulse", {"width_s": 0.01, "bias_v": 2.5})
        shaped = g.command("TipShaper.Start", {"wait": 1})
    assert pulse.outcome == shaped.outcome == "done"
    assert shaped.duration_s > 0  # it waited for the procedure
    reasons = [event.detail for event in sim.physics.events if event.kind == "tip_restored"]
    assert "tip shaper" in reasons


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"command": "Nope.Start"}, "not a known Nanonis command"),
        ({"command": "Bias.Pulse", "args": {"width_s": {"min": 0, "max": 1}}}, "'bias_v'"),
        ({"command": "ZCtrl.Withdraw", "args": {"zz": {"min": 0, "max": 1}}}, "no argument"),
        ({"command": "ZCtrl.Withdraw", "args": {"wait": {"min": 2, "max": 1}}}, "must not be"),
        ({"command": "ZCtrl.Withdraw", "cooldown_s": -1}, "cooldown_s"),
        ({"command": "ZCtrl.Withdraw", "args": {"wait": {"min": 0, "max": "inf"}}}, "max"),
    ],
)
def test_a_bad_commands_section_is_refused_naming_the_entry(entry, match):
    with pytest.raises(ConfigError, match=match):
        parse_catalog({"signals": [], "specs": [], "commands": [entry]})


def test_a_command_listed_twice_is_refused():
    entry = {"command": "ZCtrl.Withdraw"}
    with pytest.raises(ConfigError, match="twice"):
        parse_catalog({"signals": [], "specs": [], "commands": [entry, entry]})


SPECTRUM = {
    "channels_names": ["Bias (V)", "Current (A)"],
    "data": [[-1.0, 0.0, 1.0], [-2e-10, 0.0, 2e-10]],
    "parameters": [0.5, 3.0],
}


def test_a_spectrum_reply_comes_back_as_lists_and_text_arguments_follow_their_pattern(
    client, state_server, tmp_path
):
    state_server.state["BiasSpectr.Start"] = SPECTRUM
    audit = tmp_path / "audit.jsonl"
    result = guard(client, audit).command("BiasSpectr.Start")
    assert result.args == {"get_data": 1, "save_base_name": ""}  # the catalog's defaults
    assert result.reply["channels_names"] == SPECTRUM["channels_names"]
    assert result.reply["data"][1] == pytest.approx(SPECTRUM["data"][1])
    assert read_audit_log(audit)[-1]["reply"]["parameters"] == pytest.approx([0.5, 3.0])
    with pytest.raises(PolicyRefusedError, match="does not match"):
        guard(client, audit).command("BiasSpectr.Start", {"save_base_name": "../../etc/x"})
    with pytest.raises(InvalidInputError, match="must be text"):
        guard(client, audit).command("BiasSpectr.Start", {"save_base_name": 7})
    assert state_server.requests.count("BiasSpectr.Start") == 1


def test_text_and_number_rules_are_checked_when_the_catalog_loads():
    def commands(args):
        return {
            "signals": [],
            "specs": [],
            "commands": [{"command": "ZSpectr.Start", "args": args}],
        }

    with pytest.raises(ConfigError, match="give it a pattern"):
        parse_catalog(commands({"get_data": {"min": 0, "max": 1}, "save_base_name": {}}))
    with pytest.raises(ConfigError, match="give it min and max"):
        parse_catalog(commands({"get_data": {"pattern": "x"}, "save_base_name": {"pattern": ""}}))
    with pytest.raises(ConfigError, match="outside the rule"):
        parse_catalog(
            commands(
                {"get_data": {"min": 0, "max": 1, "default": 2}, "save_base_name": {"pattern": ""}}
            )
        )
