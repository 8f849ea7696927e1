"""Guarded writes: nothing reaches the instrument unless the catalog's limits and safety allow it.

Two kinds of writes: a *spec* (a setting such as the bias) with :meth:`WriteGuard.set` /
:meth:`WriteGuard.ramp`, and a one-shot *command* (``Bias.Pulse``, ``TipShaper.Start``,
``ZCtrl.Withdraw`` ...) with :meth:`WriteGuard.command`, allowed only when the catalog's
``commands`` section lists it, with every numeric argument inside its bounds and its cooldown
over.

Every write of a spec goes through a :class:`WritePlan`: the allow-writes gate, the bounds, the
largest single step (a bigger ``set`` becomes a ramp of smaller steps), the slew limit (steps are
paced), the cooldown between writes, and a dry run that only prints the plan. Each attempt,
refused or not, is appended to a JSON-lines audit log (when, what, old, new, plan, who), and
in-process listeners hear about every step sent, so a trajectory recorder can tell operator
actions made through the guard from anything else::

    guard = WriteGuard(client, load_catalog(), allow_writes=True, audit_log=home / "audit.jsonl")
    guard.add_listener(lambda event: print(event.spec, event.value))
    guard.set("bias_v", 0.5)                        # ramps in 0.1 V steps at <= 1 V/s
    guard.plan_set("bias_v", 9.0)                   # PolicyRefusedError: outside -5..5 V
"""

from __future__ import annotations

import contextlib
import getpass
import json
import math
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from atomlab.core.clock import Clock, SystemClock, utc_iso
from atomlab.core.errors import AtomlabError, InvalidInputError, PolicyRefusedError
from atomlab.core.logging import get_logger
from atomlab.instrument import zero_crossing
from atomlab.instrument.catalog import (
    ArgBounds,
    Catalog,
    CatalogEntry,
    CommandPolicy,
    read_value,
)
from atomlab.instrument.client import NanonisClient
from atomlab.instrument.commands import CommandSpec, Field, WireType, lookup
from atomlab.instrument.errors import UnknownCommandError

AUDIT_LOG_NAME: Final = "instrument-audit.jsonl"
_REL_TOLERANCE: Final = (
    1e-6  # float32 on the wire: a step of exactly max_step may read back a hair over
)

Outcome = Literal["done", "dry_run", "refused", "failed"]

#: Longest text argument a guarded command may carry (a file base name, not a payload).
MAX_TEXT_ARG = 256

_log = get_logger("atomlab.instrument.guard")
_HOST = socket.gethostname()


@dataclass(frozen=True)
class WritePlan:
    """What a write will do: the values sent, in order, and the pause between them."""

    id: str
    spec: str
    label: str
    unit: str
    mode: Literal["set", "ramp"]
    command: str
    old: float
    target: float
    steps: tuple[float, ...]
    interval_s: float
    notes: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        return max(len(self.steps) - 1, 0) * self.interval_s

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["steps"] = list(self.steps)
        out["notes"] = list(self.notes)
        out["duration_s"] = round(self.duration_s, 6)
        return out


@dataclass(frozen=True)
class WriteEvent:
    """One value sent to the instrument through the guard."""

    plan_id: str
    spec: str
    label: str
    command: str
    step: int
    steps: int
    old: float
    value: float
    when: str
    monotonic_s: float
    who: str


@dataclass(frozen=True)
class CommandEvent:
    """One guarded command sent to the instrument (delivered to listeners after its reply).

    ``at_utc``/``at_monotonic`` are when it was sent, ``duration_s`` how long until the reply;
    ``reply`` holds the decoded reply fields (arrays as lists).
    """

    id: str
    command: str
    args: dict[str, Any]
    reply: dict[str, Any]
    outcome: Outcome
    at_utc: str
    at_monotonic: float
    who: str
    duration_s: float = 0.0
    host: str = ""


@dataclass(frozen=True)
class CommandResult:
    """What :meth:`WriteGuard.command` did: ``outcome`` is ``done`` or ``dry_run``."""

    id: str
    command: str
    args: dict[str, Any]
    reply: dict[str, Any]
    outcome: Outcome
    at_utc: str
    at_monotonic: float
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WriteResult:
    plan: WritePlan
    outcome: Outcome
    steps_sent: int = 0
    readback: float | int | bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "steps_sent": self.steps_sent,
            "readback": self.readback,
            "plan": self.plan.to_dict(),
        }


GuardEvent = WriteEvent | CommandEvent
#: A listener gets every :class:`WriteEvent` (a spec value sent) and :class:`CommandEvent`.
WriteListener = Callable[[GuardEvent], None]


def default_who() -> str:
    """``user@pid`` of this process, recorded in the audit log when no caller name is given."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@pid{os.getpid()}"


@dataclass
class WriteGuard:
    """The only way atomlab writes specs. Thread-safe; one guard per client."""

    client: NanonisClient
    catalog: Catalog
    allow_writes: bool = False
    dry_run: bool = False
    audit_log: Path | None = None
    who: str = field(default_factory=default_who)
    clock: Clock = field(default_factory=SystemClock)
    _listeners: list[WriteListener] = field(default_factory=list, init=False, repr=False)
    _last_write: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _last_command: dict[str, float] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)

    def add_listener(self, listener: WriteListener) -> Callable[[], None]:
        """Call ``listener`` after every value sent (:class:`WriteEvent`) and every command
        (:class:`CommandEvent`); returns a function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # --- planning ------------------------------------------------------------------------

    def plan_set(self, name: str, value: float) -> WritePlan:
        """Plan a write of ``value``; a change larger than ``max_step`` becomes paced steps."""
        entry = self.catalog.spec(name)
        target = self._checked_value(entry, value, "value")
        old = self._read_old(entry)
        safety = entry.safety
        steps: list[float] = [target]
        notes: list[str] = []
        if safety.max_step is not None and abs(target - old) > _allowed(safety.max_step):
            steps = _ramp_values(old, target, safety.max_step)[1:]
            notes.append(f"change of {_fmt(target - old, entry)} split into {len(steps)} steps")
        if self._feedback_on(entry):  # docs/instrument.md: never through 0 V with feedback on
            steps, note = zero_crossing.crossing_set_steps(
                old, target, steps, safety.max_step, _ramp_values,
                lambda why: self._refuse(entry, why), entry.name,
            )  # fmt: skip
            notes += [note] if note else []
        interval = safety.ramp_interval_s
        if safety.max_slew_per_s is not None and len(steps) > 1:
            paced = _largest_step(old, steps) / safety.max_slew_per_s
            if paced > interval:
                interval = paced
                notes.append(f"paced to {safety.max_slew_per_s:g} {entry.unit}/s")
        if len(steps) == 1 and safety.max_slew_per_s is not None and safety.max_step is None:
            notes.append("single step: slew limit needs max_step to split the change")
        return self._plan(entry, "set", old, target, steps, interval, notes)

    def plan_ramp(
        self,
        name: str,
        start: float,
        end: float,
        step: float,
        *,
        interval_s: float | None = None,
    ) -> WritePlan:
        """Plan a ramp from ``start`` to ``end`` in steps of ``step`` (sign is inferred)."""
        entry = self.catalog.spec(name)
        first = self._checked_value(entry, start, "start")
        last = self._checked_value(entry, end, "end")
        if not (math.isfinite(step) and step > 0):
            raise InvalidInputError(f"ramp step must be a positive number, got {step!r}", step=step)
        safety = entry.safety
        interval = safety.ramp_interval_s if interval_s is None else interval_s
        if interval < 0 or not math.isfinite(interval):
            raise InvalidInputError(f"--interval-s must be >= 0, got {interval!r}")
        if safety.max_step is not None and step > _allowed(safety.max_step):
            self._refuse(
                entry,
                f"ramp step {_fmt(step, entry)} exceeds max_step {_fmt(safety.max_step, entry)} "
                f"for {entry.name}; use a step <= {safety.max_step:g}",
            )
        old = self._read_old(entry)
        if safety.max_step is not None and abs(first - old) > _allowed(safety.max_step):
            self._refuse(
                entry,
                f"ramp starts {_fmt(first - old, entry)} away from the current value "
                f"{_fmt(old, entry)}, more than max_step {_fmt(safety.max_step, entry)}; start "
                f"the ramp nearer {old:g}",
            )
        steps = _ramp_values(first, last, step)
        if self._feedback_on(entry):
            zero_crossing.check_ramp(steps, step, lambda why: self._refuse(entry, why), entry.name)
        notes: list[str] = []
        if safety.max_slew_per_s is not None and len(steps) > 1:
            needed = _largest_step(first, steps[1:]) / safety.max_slew_per_s
            if interval + 1e-12 < needed:
                self._refuse(
                    entry,
                    f"steps of {_fmt(step, entry)} every {interval:g} s exceed the slew limit "
                    f"{safety.max_slew_per_s:g} {entry.unit}/s for {entry.name}; use "
                    f"--interval-s {needed:.3g} or more",
                )
        return self._plan(entry, "ramp", old, last, steps, interval, notes)

    def _plan(
        self,
        entry: CatalogEntry,
        mode: Literal["set", "ramp"],
        old: float,
        target: float,
        steps: list[float],
        interval: float,
        notes: list[str],
    ) -> WritePlan:
        assert entry.set is not None
        coerced = tuple(float(entry.coerce(v)) if entry.type != "float" else v for v in steps)
        return WritePlan(
            id=uuid.uuid4().hex[:12],
            spec=entry.name,
            label=entry.label,
            unit=entry.unit,
            mode=mode,
            command=entry.set.command,
            old=old,
            target=target,
            steps=coerced,
            interval_s=interval,
            notes=tuple(notes),
        )

    def _checked_value(self, entry: CatalogEntry, value: float, what: str) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidInputError(
                f"{entry.name}: {what} {value!r} is not a number", field=entry.name
            ) from None
        if not math.isfinite(number):
            raise InvalidInputError(f"{entry.name}: {what} must be finite, got {value!r}")
        if entry.type != "float" and not number.is_integer():
            raise InvalidInputError(
                f"{entry.name} takes whole numbers ({entry.type}); {what} {value!r} is not one",
                field=entry.name,
            )
        limits = entry.limits
        assert limits is not None  # validated by the catalog
        if not limits.contains(number):
            self._refuse(
                entry,
                f"{entry.name} = {_fmt(number, entry)} is outside its limits "
                f"{limits.min:g}..{limits.max:g} {entry.unit}".rstrip()
                + "; nothing was sent",
                value=number,
            )
        return number

    def _feedback_on(self, entry: CatalogEntry) -> bool:
        """True when the entry named by ``safety.zero_unsafe_while`` reads non-zero."""
        watched = entry.safety.zero_unsafe_while
        return watched is not None and bool(read_value(self.client, self.catalog.find(watched)))

    def _read_old(self, entry: CatalogEntry) -> float:
        return float(read_value(self.client, entry))

    def _refuse(self, entry: CatalogEntry, reason: str, **details: Any) -> None:
        self._audit(
            {"what": entry.name, "label": entry.label, "outcome": "refused", "reason": reason}
        )
        raise PolicyRefusedError(reason, spec=entry.name, **details)

    # --- executing -----------------------------------------------------------------------

    def set(self, name: str, value: float, *, plan_only: bool = False) -> WriteResult:
        """Plan and (unless ``plan_only`` or dry-run) execute a write of ``value``."""
        with self._lock:
            return self.execute(self.plan_set(name, value), plan_only=plan_only)

    def ramp(
        self,
        name: str,
        start: float,
        end: float,
        step: float,
        *,
        interval_s: float | None = None,
        plan_only: bool = False,
    ) -> WriteResult:
        """Plan and (unless ``plan_only`` or dry-run) execute a ramp."""
        with self._lock:
            plan = self.plan_ramp(name, start, end, step, interval_s=interval_s)
            return self.execute(plan, plan_only=plan_only)

    def execute(self, plan: WritePlan, *, plan_only: bool = False) -> WriteResult:
        """Send the plan's steps, paced, after the gate and the cooldown allow it."""
        entry = self.catalog.spec(plan.spec)
        if plan_only or self.dry_run:
            self._audit_plan(plan, "dry_run", 0)
            return WriteResult(plan, "dry_run")
        with self._lock:
            if not self.allow_writes:
                self._refuse(
                    entry,
                    "writes are disabled; enable them with instrument.allow_writes: true in "
                    "atomlab.yaml, ATOMLAB_INSTRUMENT__ALLOW_WRITES=1 or --allow-writes "
                    "(or use --plan-only to see the plan)",
                )
            self._check_cooldown(entry)
            base = self._base_args(entry)
            sent = 0
            try:
                for i, value in enumerate(plan.steps):
                    if i:
                        self.clock.sleep(plan.interval_s)
                    self._send(entry, plan, base, i, value)
                    sent += 1
            except AtomlabError as exc:
                self._audit_plan(plan, "failed", sent, reason=exc.message)
                raise
            except KeyboardInterrupt:
                self._audit_plan(plan, "failed", sent, reason="interrupted by the operator")
                raise
            finally:
                if sent:
                    self._last_write[entry.name] = self.clock.now().timestamp()
            readback = self._readback(entry)
            self._audit_plan(plan, "done", sent, readback=readback)
            return WriteResult(plan, "done", sent, readback)

    def _check_cooldown(self, entry: CatalogEntry) -> None:
        """Cooldowns count wall time and survive restarts: the audit log holds the last write."""
        cooldown = entry.safety.cooldown_s
        if cooldown <= 0:
            return
        last = self._last_write.get(entry.name)
        if last is None and self.audit_log is not None:
            last = _last_done_write(self.audit_log, entry.name)
        if last is None:
            return
        wait = cooldown - (self.clock.now().timestamp() - last)
        if wait > 0:
            self._refuse(
                entry,
                f"{entry.name} was written {cooldown - wait:.3g} s ago; its cooldown is "
                f"{cooldown:g} s, retry in {wait:.3g} s",
                retry_in_s=round(wait, 3),
            )

    def _base_args(self, entry: CatalogEntry) -> dict[str, Any]:
        """The other arguments of the set command, read from ``get`` so they do not change."""
        assert entry.set is not None
        set_spec = lookup(entry.set.command)
        others = [f for f in set_spec.args if f.name != entry.set.field]
        base: dict[str, Any] = {}
        if any(f.name not in entry.set.args and f.required for f in others):
            current = self.client.call(entry.get.command, entry.get.args).values
            for f in others:
                if f.name in current:
                    base[f.name] = current[f.name]
        base.update(entry.set.args)
        return base

    def _send(
        self, entry: CatalogEntry, plan: WritePlan, base: Mapping[str, Any], i: int, value: float
    ) -> None:
        assert entry.set is not None
        wire_value: Any = entry.coerce(value) if entry.type != "float" else value
        if entry.type == "bool":
            wire_value = int(wire_value)
        self.client.call(entry.set.command, {**base, entry.set.field: wire_value})
        event = WriteEvent(
            plan_id=plan.id,
            spec=entry.name,
            label=entry.label,
            command=entry.set.command,
            step=i,
            steps=len(plan.steps),
            old=plan.old if i == 0 else plan.steps[i - 1],
            value=value,
            when=utc_iso(self.clock.now()),
            monotonic_s=self.clock.monotonic(),
            who=self.who,
        )
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:  # a broken listener must not stop a ramp halfway
                _log.warning("write listener failed", error=repr(exc), spec=entry.name)

    def _readback(self, entry: CatalogEntry) -> float | int | bool | None:
        try:
            return entry.coerce(self._read_old(entry))
        except AtomlabError:
            return None

    # --- commands ------------------------------------------------------------------------

    def command(
        self, name: str, args: Mapping[str, Any] | None = None, *, plan_only: bool = False
    ) -> CommandResult:
        """Send the one-shot command ``name`` (e.g. ``"Bias.Pulse"``) if the catalog allows it.

        Refused (:class:`PolicyRefusedError`, exit 2, nothing sent): a command the catalog's
        ``commands`` section does not list, an argument it does not bound or a value outside
        the bounds, writes disabled, or the command's cooldown not over. A value that is not a
        finite number, or a missing argument, is :class:`InvalidInputError` (exit 3). Every
        attempt goes to the audit log (``"kind": "command"``); listeners hear every command sent.
        """
        with self._lock:
            spec, policy = self._command_policy(name)
            values = self._command_args(spec, policy, args or {})
            command_id = uuid.uuid4().hex[:12]
            if plan_only or self.dry_run:
                return self._command_done(command_id, spec.name, values, {}, "dry_run", 0.0)
            if not self.allow_writes:
                self._refuse_command(
                    spec.name,
                    values,
                    "writes are disabled; enable them with instrument.allow_writes: true in "
                    "atomlab.yaml, ATOMLAB_INSTRUMENT__ALLOW_WRITES=1 or --allow-writes "
                    "(or use --plan-only to check the command)",
                )
            self._check_command_cooldown(spec.name, policy, values)
            at_utc = utc_iso(self.clock.now())
            at_mono = self.clock.monotonic()
            try:
                reply = self.client.call(spec.name, values)
            except (AtomlabError, KeyboardInterrupt) as exc:
                reason = (
                    exc.message if isinstance(exc, AtomlabError) else "interrupted by the operator"
                )
                self._audit_command(
                    command_id, spec.name, values, {}, "failed", at_utc, at_mono, 0.0, reason=reason
                )
                raise
            duration = max(0.0, self.clock.monotonic() - at_mono)
            self._last_command[spec.name] = self.clock.now().timestamp()
            return self._command_done(
                command_id,
                spec.name,
                values,
                _plain(reply.values),
                "done",
                duration,
                at_utc=at_utc,
                at_mono=at_mono,
            )

    def _command_policy(self, name: str) -> tuple[CommandSpec, CommandPolicy]:
        allowed = ", ".join(p.command for p in self.catalog.commands) or "(none)"
        try:
            spec = lookup(name) if isinstance(name, str) else None
        except UnknownCommandError:
            spec = None
        policy = self.catalog.command_policy(spec.name) if spec is not None else None
        if spec is None or policy is None:
            what = "not a known Nanonis command" if spec is None else "not allowed"
            reason = (
                f"command {str(name)[:80]!r} is {what}; the catalog ({self.catalog.source}) allows "
                f"{allowed} (add it to the catalog's commands section to allow it); nothing was "
                "sent"
            )
            self._audit(
                {
                    "kind": "command",
                    "command": str(name)[:200],
                    "outcome": "refused",
                    "reason": reason,
                }
            )
            raise PolicyRefusedError(reason, command=str(name)[:200])
        return spec, policy

    def _command_args(
        self, spec: CommandSpec, policy: CommandPolicy, given: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The full argument set (defaults filled in), checked against the policy's bounds."""
        if not isinstance(given, Mapping):
            raise InvalidInputError(f"{spec.name}: args must be a mapping of argument names")
        by_name = {f.name: f for f in spec.args}
        for key in given:
            if key not in by_name:
                raise InvalidInputError(
                    f"{spec.name} has no argument {str(key)[:80]!r}; arguments: "
                    f"{list(spec.arg_names)}",
                    command=spec.name,
                    field=str(key)[:80],
                )
            if key not in policy.args:
                self._refuse_command(
                    spec.name,
                    {},
                    f"{spec.name}: argument {key!r} is not bounded by the catalog, so it may "
                    f"only take its default; bounded: {list(policy.args)}; nothing was sent",
                )
        values: dict[str, Any] = {}
        for wire in spec.args:
            rule = policy.args.get(wire.name)
            if wire.name in given:
                raw = given[wire.name]
            elif rule is not None and rule.default is not None:
                raw = rule.default
            elif not wire.required:
                raw = wire.default
            else:
                raise InvalidInputError(
                    f"{spec.name} needs the argument {wire.name!r}"
                    + (f" ({wire.unit})" if wire.unit else ""),
                    command=spec.name,
                    field=wire.name,
                )
            values[wire.name] = self._command_value(spec, wire, rule, raw)
        return values

    def _command_value(
        self, spec: CommandSpec, wire: Field, rule: ArgBounds | None, raw: Any
    ) -> Any:
        """One argument checked against its wire type and the catalog's rule."""
        if wire.type is WireType.STR:
            if not isinstance(raw, str) or len(raw) > MAX_TEXT_ARG:
                raise _bad_arg(spec, wire, f"must be text of at most {MAX_TEXT_ARG} characters")
            if rule is not None and not rule.allows(raw):
                self._refuse_command(
                    spec.name,
                    {},
                    f"{spec.name}: {wire.name} = {raw[:80]!r} does not match {rule.pattern!r}; "
                    "nothing was sent",
                    field=wire.name,
                )
            return raw
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise _bad_arg(spec, wire, f"= {str(raw)[:80]!r} is not a number")
        number = float(raw)
        if not math.isfinite(number):
            raise _bad_arg(spec, wire, f"must be finite, got {raw!r}")
        if wire.type.is_integer and not number.is_integer():
            raise _bad_arg(spec, wire, f"takes whole numbers; {raw!r} is not one")
        if rule is not None and not rule.allows(number):
            self._refuse_command(
                spec.name,
                {},
                f"{spec.name}: {wire.name} = {number:g}{' ' + wire.unit if wire.unit else ''}"
                f" is outside its bounds {rule.min:g}..{rule.max:g}; nothing was sent",
                field=wire.name,
                value=number,
            )
        return int(number) if wire.type.is_integer else number

    def _check_command_cooldown(
        self, command: str, policy: CommandPolicy, values: Mapping[str, Any]
    ) -> None:
        """Like spec cooldowns: wall time, remembered across restarts through the audit log."""
        if policy.cooldown_s <= 0:
            return
        last = self._last_command.get(command)
        if last is None and self.audit_log is not None:
            last = _last_done_command(self.audit_log, command)
        if last is None:
            return
        wait = policy.cooldown_s - (self.clock.now().timestamp() - last)
        if wait > 0:
            self._refuse_command(
                command,
                values,
                f"{command} was sent {policy.cooldown_s - wait:.3g} s ago; its cooldown is "
                f"{policy.cooldown_s:g} s, retry in {wait:.3g} s",
                retry_in_s=round(wait, 3),
            )

    def _refuse_command(
        self, command: str, values: Mapping[str, Any], reason: str, **details: Any
    ) -> None:
        self._audit(
            {
                "kind": "command",
                "command": command,
                "args": dict(values),
                "outcome": "refused",
                "reason": reason,
            }
        )
        raise PolicyRefusedError(reason, command=command, **details)

    def _command_done(
        self,
        command_id: str,
        command: str,
        values: dict[str, Any],
        reply: dict[str, Any],
        outcome: Outcome,
        duration: float,
        *,
        at_utc: str | None = None,
        at_mono: float | None = None,
    ) -> CommandResult:
        at_utc = at_utc if at_utc is not None else utc_iso(self.clock.now())
        at_mono = at_mono if at_mono is not None else self.clock.monotonic()
        self._audit_command(command_id, command, values, reply, outcome, at_utc, at_mono, duration)
        if outcome == "done":
            event = CommandEvent(
                id=command_id,
                command=command,
                args=dict(values),
                reply=reply,
                outcome=outcome,
                at_utc=at_utc,
                at_monotonic=at_mono,
                who=self.who,
                duration_s=duration,
                host=_HOST,
            )
            for listener in list(self._listeners):
                try:
                    listener(event)
                except Exception as exc:  # a broken listener must not fail the command
                    _log.warning("command listener failed", error=repr(exc), command=command)
        return CommandResult(
            id=command_id,
            command=command,
            args=dict(values),
            reply=reply,
            outcome=outcome,
            at_utc=at_utc,
            at_monotonic=at_mono,
            duration_s=duration,
        )

    def _audit_command(
        self,
        command_id: str,
        command: str,
        values: Mapping[str, Any],
        reply: Mapping[str, Any],
        outcome: Outcome,
        at_utc: str,
        at_mono: float,
        duration: float,
        **extra: Any,
    ) -> None:
        self._audit(
            {
                "kind": "command",
                "id": command_id,
                "command": command,
                "args": dict(values),
                "outcome": outcome,
                "at_utc": at_utc,
                "at_monotonic": at_mono,
                "duration_s": round(duration, 6),
                "host": _HOST,
                "reply": dict(reply),
                **extra,
            }
        )

    # --- audit ---------------------------------------------------------------------------

    def _audit_plan(self, plan: WritePlan, outcome: Outcome, sent: int, **extra: Any) -> None:
        self._audit(
            {
                "what": plan.spec,
                "label": plan.label,
                "command": plan.command,
                "old": plan.old,
                "new": plan.target,
                "outcome": outcome,
                "steps_sent": sent,
                "plan": plan.to_dict(),
                **extra,
            }
        )

    def _audit(self, record: dict[str, Any]) -> None:
        if self.audit_log is None:
            return
        line = json.dumps({"when": utc_iso(self.clock.now()), "who": self.who, **record})
        self.audit_log.parent.mkdir(parents=True, exist_ok=True)
        with self.audit_log.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def _bad_arg(spec: CommandSpec, wire: Field, problem: str) -> InvalidInputError:
    """A command argument that is no usable value (exit 3), naming the command and the field."""
    return InvalidInputError(
        f"{spec.name}: {wire.name} {problem}", command=spec.name, field=wire.name
    )


def read_audit_log(path: Path) -> list[dict[str, Any]]:
    """The audit records in ``path`` (oldest first); a torn last line is skipped."""
    records: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError), path.open(encoding="utf-8") as fh:
        for line in fh:
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def _last_done_write(path: Path, spec: str) -> float | None:
    """Wall time (epoch seconds) of the last completed write of ``spec`` in the audit log."""
    for record in reversed(read_audit_log(path)):
        if record.get("what") == spec and record.get("steps_sent", 0) > 0:
            with contextlib.suppress(KeyError, ValueError, TypeError):
                when = datetime.strptime(record["when"], "%Y-%m-%dT%H:%M:%S.%fZ")
                return when.replace(tzinfo=UTC).timestamp()
    return None


def _last_done_command(path: Path, command: str) -> float | None:
    """Wall time (epoch seconds) of the last command ``command`` sent, from the audit log."""
    for record in reversed(read_audit_log(path)):
        if (
            record.get("kind") == "command"
            and record.get("command") == command
            and record.get("outcome") == "done"
        ):
            with contextlib.suppress(KeyError, ValueError, TypeError):
                when = datetime.strptime(record["at_utc"], "%Y-%m-%dT%H:%M:%S.%fZ")
                return when.replace(tzinfo=UTC).timestamp()
    return None


def _plain(value: Any) -> Any:
    """A reply value as plain JSON data: arrays (and tuples) as lists, bytes as text."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain(value.tolist())
    return value


def _allowed(limit: float) -> float:
    return limit * (1 + _REL_TOLERANCE)


def _ramp_values(start: float, end: float, step: float) -> list[float]:
    """``start``, then values ``step`` apart towards ``end``, ending exactly on ``end``."""
    distance = end - start
    try:
        zero_crossing.plan_steps(abs(distance) / step, "the ramp")
    except ValueError as exc:  # 1e-9 V steps: a plan of 10^8 values would never finish
        raise InvalidInputError(str(exc), step=step) from None
    n = max(math.ceil(abs(distance) / step - _REL_TOLERANCE), 1) if distance else 0
    direction = 1.0 if distance >= 0 else -1.0
    values = [start + direction * step * i for i in range(n)]
    values.append(end)
    return values


def _largest_step(old: float, steps: list[float] | tuple[float, ...]) -> float:
    previous, largest = old, 0.0
    for value in steps:
        largest = max(largest, abs(value - previous))
        previous = value
    return largest


def _fmt(value: float, entry: CatalogEntry) -> str:
    return f"{value:g} {entry.unit}".rstrip()
