"""Infer operator actions from spec samples: a spec that changed beyond its tolerance is an action.

The first sample is the baseline (no action); a spec's value is compared with its reference (the
baseline or its last action's value), which a change within tolerance does not move. With
``coalesce_s > 0`` further changes of the same spec within ``coalesce_s`` of its previous change
extend one pending action (a ramp becomes one action from the first old value to the last new
value). Whether a change was made by atomlab itself is asked of an :class:`OwnWrites` ledger, fed
by the instrument guard's listener (in-process) or its audit log (another process). The same
ledger collects the guarded *commands* (``Bias.Pulse``, ``TipShaper.Start`` ...), which the
detector turns into ``command`` actions.
"""

from __future__ import annotations

import json
import math
import socket
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from atomlab.core.clock import Clock, SystemClock
from atomlab.trajectory.records import ActionEvent, Value

#: How long a write made through the guard stays attributable to a later change.
DEFAULT_OWN_WRITE_MEMORY_S = 60.0
#: The guard reports a write after the instrument has it, so the monitor may see the change
#: first; an unclaimed change waits this long for the report before it is called external.
DEFAULT_ATTRIBUTION_GRACE_S = 0.5
#: A guard in another process logs a write only when its whole plan (a ramp) is done.
AUDIT_LOG_ATTRIBUTION_GRACE_S = 3.0


#: How many command ids are remembered to drop a command reported twice (listener + audit log).
SEEN_COMMANDS_KEPT = 4096


@dataclass(frozen=True)
class GuardCommand:
    """A command sent through the guard: when (monotonic s of this process), how long, what."""

    id: str
    command: str
    args: dict[str, Any]
    reply: dict[str, Any]
    at_monotonic: float
    at_utc: str
    duration_s: float = 0.0
    who: str = ""


@dataclass(frozen=True)
class OwnWrite:
    """A write atomlab made through its guard: which spec, which value, when (monotonic s)."""

    spec_label: str
    value: Value
    at_monotonic: float


class OwnWrites:
    """Thread-safe ledger of the writes atomlab made itself, to tag actions ``self``.

    Feed it from the guard's write listener (:meth:`note`); the detector asks :meth:`claims`
    whether a change of a spec to a value matches a write made since the previous sample.
    """

    def __init__(self, *, memory_s: float = DEFAULT_OWN_WRITE_MEMORY_S) -> None:
        self._memory_s = memory_s
        self._writes: deque[OwnWrite] = deque()
        self._lock = threading.Lock()
        self._followers: list[AuditLogFollower] = []
        self._commands: list[GuardCommand] = []
        self._seen_ids: deque[str] = deque(maxlen=SEEN_COMMANDS_KEPT)

    @property
    def follows_audit_logs(self) -> bool:
        return bool(self._followers)

    def follow_audit_log(self, path: Path, clock: Clock) -> None:
        """Also count writes that guards in *other* processes append to ``path`` from now on."""
        self._followers.append(AuditLogFollower(path, self, clock))

    def observe(self, event: Any) -> None:
        """A guard listener: ``guard.add_listener(own.observe)`` notes every value written
        (``WriteEvent``) and collects every command sent (``CommandEvent``)."""
        if hasattr(event, "command") and hasattr(event, "reply") and hasattr(event, "id"):
            if getattr(event, "outcome", "done") == "done":
                self.note_command(
                    GuardCommand(
                        id=str(event.id),
                        command=str(event.command),
                        args=dict(event.args),
                        reply=dict(event.reply),
                        at_monotonic=float(event.at_monotonic),
                        at_utc=str(event.at_utc),
                        duration_s=float(getattr(event, "duration_s", 0.0) or 0.0),
                        who=str(getattr(event, "who", "")),
                    )
                )
            return
        self.note(event.label, event.value, event.monotonic_s)

    def note_command(self, command: GuardCommand) -> None:
        """Collect a command sent through the guard (once, however many routes report it)."""
        with self._lock:
            if command.id in self._seen_ids:
                return
            self._seen_ids.append(command.id)
            self._commands.append(command)

    def poll(self) -> None:
        """Read what guards in other processes appended to the followed audit logs."""
        for follower in self._followers:
            follower.read_new()

    def take_commands(self) -> list[GuardCommand]:
        """The commands collected since the last call, oldest first."""
        self.poll()
        with self._lock:
            taken, self._commands = self._commands, []
        return sorted(taken, key=lambda c: c.at_monotonic)

    def note(self, spec_label: str, value: Value, at_monotonic: float) -> None:
        with self._lock:
            self._writes.append(OwnWrite(spec_label, value, at_monotonic))
            while self._writes and self._writes[0].at_monotonic < at_monotonic - self._memory_s:
                self._writes.popleft()

    def claims(self, spec_label: str, value: Value, since: float, until: float, tol: float) -> bool:
        """True if a write of ``spec_label`` to ``value`` (within ``tol``) fell in the interval."""
        for follower in self._followers:
            follower.read_new()
        with self._lock:
            return any(
                w.spec_label == spec_label
                and since <= w.at_monotonic <= until
                and values_equal(w.value, value, tol)
                for w in self._writes
            )


class AuditLogFollower:
    """Reads the guard's JSON-lines audit log incrementally and notes every step it sent.

    The guard appends a record when a plan has finished (``when`` is then), with the plan's steps
    and pause; each step is noted at its estimated time on this process's monotonic clock. A
    ``"kind": "command"`` record that was sent (``outcome: done``) is collected as a command; its
    ``at_monotonic`` is used as is when it comes from this host (the monotonic clock is
    system-wide), else its ``at_utc`` is mapped through the wall clock.
    """

    def __init__(self, path: Path, own: OwnWrites, clock: Clock) -> None:
        self.path = path
        self._own = own
        self._clock = clock
        self._shared_monotonic = isinstance(clock, SystemClock)
        self._host = socket.gethostname()
        try:
            self._offset = path.stat().st_size if path.is_file() else 0
        except OSError:
            self._offset = 0
        self._partial = b""

    def read_new(self) -> None:
        try:
            size = self.path.stat().st_size
        except OSError:
            return
        if size <= self._offset:
            self._offset = min(self._offset, size)  # rotated or truncated: start over
            return
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            data = self._partial + fh.read(size - self._offset)
        self._offset = size
        *lines, self._partial = data.split(b"\n")
        for line in lines:
            self._note(line)

    def _note(self, line: bytes) -> None:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            return  # a torn or foreign line: nothing to attribute
        if not isinstance(record, dict):
            return
        if record.get("kind") == "command":
            self._note_command(record)
            return
        try:
            sent = int(record.get("steps_sent") or 0)
            plan = record["plan"]
            steps = list(plan["steps"])[:sent]
            pause = float(plan.get("interval_s") or 0.0)
            when = datetime.fromisoformat(str(record["when"]).replace("Z", "+00:00"))
            label = str(record["label"])
        except (ValueError, KeyError, TypeError):
            return  # not a write record (or a torn line): nothing to attribute
        ended = self._clock.monotonic() - (self._clock.now() - when).total_seconds()
        for i, value in enumerate(steps):
            self._own.note(label, value, ended - (len(steps) - 1 - i) * pause)

    def _note_command(self, record: Mapping[str, Any]) -> None:
        if record.get("outcome") != "done":
            return  # refused, dry-run or failed: nothing reached the instrument
        try:
            at_utc = str(record["at_utc"])
            sent = datetime.fromisoformat(at_utc.replace("Z", "+00:00"))
            mono = float(record["at_monotonic"])
            args = record.get("args") or {}
            reply = record.get("reply") or {}
            command = GuardCommand(
                id=str(record["id"]),
                command=str(record["command"]),
                args=dict(args) if isinstance(args, Mapping) else {},
                reply=dict(reply) if isinstance(reply, Mapping) else {},
                at_monotonic=mono,
                at_utc=at_utc,
                duration_s=max(0.0, float(record.get("duration_s") or 0.0)),
                who=str(record.get("who", "")),
            )
        except (KeyError, TypeError, ValueError):
            return
        if not (self._shared_monotonic and record.get("host") == self._host):
            mapped = self._clock.monotonic() - (self._clock.now() - sent).total_seconds()
            command = replace(command, at_monotonic=mapped)
        if math.isfinite(command.at_monotonic):
            self._own.note_command(command)


def values_equal(a: Value, b: Value, tolerance: float = 0.0) -> bool:
    """Numbers are equal within ``tolerance`` (NaN equals NaN); anything else by ``==``."""
    if _is_number(a) and _is_number(b):
        x, y = float(a), float(b)  # type: ignore[arg-type]
        if math.isnan(x) or math.isnan(y):
            return math.isnan(x) and math.isnan(y)
        return abs(x - y) <= tolerance
    return a == b


def _is_number(value: Value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class _Held:
    """A change waiting for its attribution: seen at ``seen_at``, previous sample at ``since``."""

    event: ActionEvent
    k: int
    since: float
    seen_at: float


@dataclass
class _Pending:
    event: ActionEvent
    last_change_dt_s: float
    held: _Held


class ActionDetector:
    """Turns a stream of spec samples into :class:`ActionEvent` s (see the module docstring)."""

    def __init__(
        self,
        labels: Sequence[str],
        *,
        tolerances: dict[str, float] | None = None,
        action_window_s: float,
        coalesce_s: float = 0.0,
        own_writes: OwnWrites | None = None,
        attribution_grace_s: float = DEFAULT_ATTRIBUTION_GRACE_S,
    ) -> None:
        self._labels = tuple(labels)
        self._tolerances = [float((tolerances or {}).get(label, 0.0)) for label in self._labels]
        self._window = action_window_s
        self._coalesce_s = coalesce_s
        self._own = own_writes
        self._last: tuple[Value, ...] | None = None
        self._last_monotonic = -math.inf
        self._pending: dict[int, _Pending] = {}
        self._held: list[_Held] = []
        self._grace_s = attribution_grace_s
        self._next_idx = 0

    @property
    def actions_started(self) -> int:
        return self._next_idx

    def observe(
        self,
        *,
        sample_idx: int,
        dt_s: float,
        at_utc: str,
        at_monotonic: float,
        values: Sequence[Value],
        emit: Callable[[ActionEvent], None],
    ) -> None:
        """Compare ``values`` with the previous sample; emit finished actions through ``emit``."""
        since = self._last_monotonic
        self._last_monotonic = at_monotonic
        self._release_held(at_monotonic, emit)
        if self._last is None:
            self._last = tuple(values)
            return
        self._emit_quiet(dt_s, at_monotonic, emit)
        # Each spec is compared with its reference: the baseline or the value of its last
        # action. A change within tolerance leaves the reference, so a slow drift made of steps
        # that are each below the tolerance still becomes an action once it adds up.
        previous = self._last
        reference = list(previous)
        for k, (old, new) in enumerate(zip(previous, values, strict=True)):
            if values_equal(old, new, self._tolerances[k]):
                continue
            reference[k] = new
            pending = self._pending.get(k)
            if pending is not None:
                pending.event = _extend(pending.event, new, dt_s, self._window)
                pending.last_change_dt_s = dt_s
                continue
            event = ActionEvent(
                action_idx=self._next_idx,
                sample_idx=sample_idx,
                dt_s=dt_s,
                end_dt_s=dt_s,
                detected_at_utc=at_utc,
                spec_label=self._labels[k],
                old_value=old,
                new_value=new,
                delta=_delta(old, new),
                steps=1,
                source="external",
                window_start_dt_s=dt_s - self._window,
                window_end_dt_s=dt_s + self._window,
            )
            self._next_idx += 1
            held = _Held(event, k, since, at_monotonic)
            if self._coalesce_s > 0:
                self._pending[k] = _Pending(event, dt_s, held)
            else:
                self._attribute(held, at_monotonic, emit)
        self._last = tuple(reference)

    def command(
        self,
        command: GuardCommand,
        *,
        sample_idx: int,
        dt_s: float,
        emit: Callable[[ActionEvent], None],
    ) -> ActionEvent:
        """A guarded command as a ``command`` action (emitted at once: it is atomlab's own).

        ``dt_s`` is when it was sent; the window spans from ``action_window_s`` before that to
        as long after its reply, the same rule as a (coalesced) spec change.
        """
        end = dt_s + max(0.0, command.duration_s)
        event = ActionEvent(
            action_idx=self._next_idx,
            sample_idx=sample_idx,
            dt_s=dt_s,
            end_dt_s=end,
            detected_at_utc=command.at_utc,
            spec_label=command.command,
            old_value=None,
            new_value=None,
            delta=None,
            steps=1,
            source="self",
            window_start_dt_s=dt_s - self._window,
            window_end_dt_s=end + self._window,
            kind="command",
            command=command.command,
            args=dict(command.args),
            payload=dict(command.reply),
        )
        self._next_idx += 1
        emit(event)
        return event

    def finish(self, emit: Callable[[ActionEvent], None]) -> None:
        """Emit every pending and held action; call once when the run ends."""
        self._emit_quiet(math.inf, math.inf, emit)
        self._release_held(math.inf, emit)

    def _emit_quiet(self, dt_s: float, now: float, emit: Callable[[ActionEvent], None]) -> None:
        for k in sorted(self._pending, key=lambda i: self._pending[i].event.action_idx):
            if dt_s - self._pending[k].last_change_dt_s > self._coalesce_s:
                pending = self._pending.pop(k)
                self._attribute(replace(pending.held, event=pending.event), now, emit)

    def _attribute(self, held: _Held, now: float, emit: Callable[[ActionEvent], None]) -> None:
        """Emit at once if the guard claims the change (or nobody can); else hold it a while."""
        if self._own is None:
            emit(held.event)
        elif self._claimed(held, now):
            emit(replace(held.event, source="self"))
        else:
            self._held.append(held)

    def _release_held(self, now: float, emit: Callable[[ActionEvent], None]) -> None:
        keep: list[_Held] = []
        for held in self._held:
            if self._claimed(held, now):
                emit(replace(held.event, source="self"))
            elif now - held.seen_at >= self._grace_s:
                emit(held.event)
            else:
                keep.append(held)
        self._held = keep

    def _claimed(self, held: _Held, now: float) -> bool:
        assert self._own is not None
        new = held.event.new_value
        tolerance = max(self._tolerances[held.k], _relative_eps(new))
        until = min(now, held.seen_at + self._grace_s)
        return self._own.claims(held.event.spec_label, new, held.since, until, tolerance)


def _extend(event: ActionEvent, new: Value, dt_s: float, window_s: float) -> ActionEvent:
    return replace(
        event,
        new_value=new,
        delta=_delta(event.old_value, new),
        end_dt_s=dt_s,
        steps=event.steps + 1,
        window_end_dt_s=dt_s + window_s,
    )


def _delta(old: Value, new: Value) -> float | None:
    if _is_number(old) and _is_number(new):
        return float(new) - float(old)  # type: ignore[arg-type]
    return None


def _relative_eps(value: Value) -> float:
    """Float32 wire values round-trip with ~1e-7 relative error; accept that when matching."""
    return abs(float(value)) * 1e-6 if _is_number(value) else 0.0  # type: ignore[arg-type]
