"""The monitor's source on a real (or simulated) Nanonis instrument: reads only, batched.

Labels resolve through the instrument catalog; a signal that the catalog lacks may be named as
in ``Signals.NamesGet`` ("Input 3 (V)" or "Input 3"). Each poll makes one ``Signals.ValsGet``
for every signal the signal list holds, then one call per distinct get-command (the five
scan-frame specs share one ``Scan.FrameGet``), and picks every value by its field name::

    source = InstrumentSource(NanonisClient(host, port), load_catalog())
    signals, specs = source.channels(["Tunnel Current"], ["Bias", "Scan Frame Width"])
    signal_values, spec_values = source.poll()
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from atomlab.core.errors import InvalidInputError
from atomlab.instrument import Catalog, CatalogEntry, NanonisClient, WireType, lookup
from atomlab.trajectory.records import ChannelInfo, Value

VALS_GET = "Signals.ValsGet"


@dataclass(frozen=True)
class _Read:
    kind: int  # 0: signal, 1: spec
    position: int
    field: str
    coerce: Callable[[Any], Value]


class InstrumentSource:
    """Reads signals and specs from a :class:`NanonisClient`; never sends a write command."""

    def __init__(self, client: NanonisClient, catalog: Catalog) -> None:
        self.client = client
        self.catalog = catalog
        self._batched: list[tuple[int, int]] = []  # (signal position, Signals index)
        self._calls: dict[tuple[str, tuple[tuple[str, Any], ...]], list[_Read]] = {}
        self._sizes = (0, 0)

    def identity(self) -> dict[str, Any]:
        """Where the data came from, stored with the run (versions when the controller tells)."""
        identity: dict[str, Any] = {
            "kind": "nanonis-tcp",
            "address": self.client.address,
            "catalog": self.catalog.source,
            "signal_list_size": len(self.client.signal_names()),
        }
        try:
            identity["versions"] = dict(self.client.call("Util.VersionGet").values)
        except InvalidInputError as exc:  # an older controller: record why, record anyway
            identity["versions"] = {"unavailable": exc.message}
        return identity

    def channels(
        self, signals: Sequence[str], specs: Sequence[str]
    ) -> tuple[list[ChannelInfo], list[ChannelInfo]]:
        """Resolve labels (unknown ones raise :class:`InvalidInputError`) and plan the reads."""
        self._batched, self._calls = [], {}
        names = self.client.signal_names()
        signal_channels = [self._signal(i, label, names) for i, label in enumerate(signals)]
        spec_channels = [self._spec(i, label) for i, label in enumerate(specs)]
        self._sizes = (len(signal_channels), len(spec_channels))
        return signal_channels, spec_channels

    def poll(self) -> tuple[list[Value], list[Value]]:
        """One read of everything: a ``Signals.ValsGet`` and one call per get-command."""
        out: tuple[list[Value], list[Value]] = ([None] * self._sizes[0], [None] * self._sizes[1])
        if self._batched:
            values = self.client.read_signals([index for _, index in self._batched])
            for (position, _), value in zip(self._batched, values, strict=True):
                out[0][position] = float(value)
        for (command, args), reads in self._calls.items():
            reply = self.client.call(command, dict(args)).values
            for read in reads:
                out[read.kind][read.position] = read.coerce(reply[read.field])
        return out

    def reconnect(self) -> None:
        self.client.close()
        self.client.connect()

    # ------------------------------------------------------------------ planning

    def _signal(self, position: int, label: str, names: Sequence[str]) -> ChannelInfo:
        entry = self._catalog_entry(label)
        if entry is not None and entry.kind == "signal":
            index = _signal_index(entry.signal, names) if entry.signal else None
            if index is not None:
                self._batched.append((position, index))
                return _channel(entry, VALS_GET, names[index], signal_index=index)
            self._plan_get(entry, 0, position)
            return _channel(entry, entry.get.command, entry.get.field)
        if entry is not None:
            raise InvalidInputError(
                f"{entry.label!r} is a spec (settable), not a signal; record it with --specs, "
                "see `atomlab trajectory monitor list-specs`",
                field="signals",
                value=label,
            )
        index = _signal_index(label, names)
        if index is None:
            known = ", ".join(e.label for e in self.catalog.signals)
            raise InvalidInputError(
                f"no signal called {label!r}: not in the catalog ({known}) nor in the "
                "instrument's signal list; see `atomlab trajectory monitor list-signals`",
                field="signals",
                value=label,
            )
        full = names[index]
        self._batched.append((position, index))
        unit = full.rsplit(" (", 1)[1].rstrip(")") if " (" in full else ""
        return ChannelInfo(
            label=label,
            unit=unit,
            source_command=VALS_GET,
            source_field=full,
            signal_index=index,
        )

    def _spec(self, position: int, label: str) -> ChannelInfo:
        entry = self._catalog_entry(label)
        if entry is None or entry.kind != "spec":
            known = ", ".join(e.label for e in self.catalog.specs)
            what = "a read-only signal" if entry is not None else "not in the catalog"
            raise InvalidInputError(
                f"{label!r} is {what}; specs are settable catalog entries: {known} "
                "(see `atomlab trajectory monitor list-specs`)",
                field="specs",
                value=label,
            )
        self._plan_get(entry, 1, position)
        return _channel(entry, entry.get.command, entry.get.field)

    def _catalog_entry(self, label: str) -> CatalogEntry | None:
        try:
            return self.catalog.find(label)
        except InvalidInputError:
            return None

    def _plan_get(self, entry: CatalogEntry, kind: int, position: int) -> None:
        key = (entry.get.command, tuple(sorted(entry.get.args.items())))
        is_f32 = lookup(entry.get.command).reply_field(entry.get.field).type is WireType.F32

        def coerce(value: Any) -> Value:
            return entry.coerce(value, float32=is_f32)

        self._calls.setdefault(key, []).append(_Read(kind, position, entry.get.field, coerce))


def _signal_index(name: str | None, names: Sequence[str]) -> int | None:
    if name is None:
        return None
    for i, candidate in enumerate(names):
        if candidate == name or candidate.split(" (", 1)[0] == name:
            return i
    return None


def _channel(
    entry: CatalogEntry, command: str, field: str, *, signal_index: int = -1
) -> ChannelInfo:
    return ChannelInfo(
        label=entry.label,
        unit=entry.unit,
        source_command=command,
        source_field=field,
        value_type=entry.type,
        min_value=entry.limits.min if entry.limits else None,
        max_value=entry.limits.max if entry.limits else None,
        set_command=entry.set.command if entry.set else "",
        signal_index=signal_index,
        description=entry.description,
    )


#: A signal outside the catalog, named as ``Signals.NamesGet`` lists it: "Input 3 (V)".
INSTRUMENT_SIGNAL_NAME = re.compile(r"^\S.{0,126} \([^()]{0,16}\)$")


def check_labels(
    catalog: Catalog, *, signals: Sequence[str] = (), specs: Sequence[str] = ()
) -> None:
    """Refuse labels a recording could not resolve, before anything is staged or recorded.

    Specs must be settable catalog entries. Signals must be catalog signals, or look like an
    entry of the instrument's signal list with its unit (``Input 3 (V)``); whether the
    instrument has it is checked when the recording starts.
    """
    for label in specs:
        entry = _find(catalog, label)
        if entry is None or entry.kind != "spec":
            what = "a read-only signal" if entry is not None else "not in the catalog"
            known = ", ".join(e.label for e in catalog.specs)
            raise InvalidInputError(
                f"spec {label[:80]!r} is {what}; specs are settable catalog entries: {known} "
                "(see `atomlab trajectory monitor list-specs`)",
                field="specs",
                value=label[:80],
            )
    for label in signals:
        entry = _find(catalog, label)
        if entry is not None and entry.kind == "spec":
            raise InvalidInputError(
                f"{entry.label!r} is a spec (settable), not a signal; record it with --specs",
                field="signals",
                value=label[:80],
            )
        if entry is None and not INSTRUMENT_SIGNAL_NAME.match(label):
            known = ", ".join(e.label for e in catalog.signals)
            raise InvalidInputError(
                f"signal {label[:80]!r} is not in the catalog ({known}); a signal of the "
                "instrument's own list is named with its unit as Signals.NamesGet gives it, "
                "e.g. 'Input 3 (V)' (see `atomlab trajectory monitor list-signals` and "
                "`atomlab instrument signals`)",
                field="signals",
                value=label[:80],
            )


def _find(catalog: Catalog, label: str) -> CatalogEntry | None:
    try:
        return catalog.find(label)
    except InvalidInputError:
        return None


def catalog_listing(catalog: Catalog, kind: str) -> list[dict[str, Any]]:
    """The catalog's ``signals`` or ``specs`` as plain dicts (label, unit, limits, source)."""
    entries = catalog.signals if kind == "signals" else catalog.specs
    rows: list[dict[str, Any]] = []
    for entry in entries:
        row: dict[str, Any] = {
            "label": entry.label,
            "name": entry.name,
            "unit": entry.unit,
            "type": entry.type,
            "get_command": entry.get.command,
            "get_field": entry.get.field,
            "description": entry.description,
        }
        if entry.kind == "signal":
            row["signal"] = entry.signal
        else:
            assert entry.set is not None and entry.limits is not None
            row["set_command"] = entry.set.command
            row["min"] = entry.limits.min
            row["max"] = entry.limits.max
            row["max_step"] = entry.safety.max_step
        rows.append(row)
    return rows
