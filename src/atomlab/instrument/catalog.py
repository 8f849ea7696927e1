"""The signal/spec catalog: what can be read and written on the instrument, with units and limits.

The packaged ``catalog.yaml`` is the default; a lab can point at its own file. The catalog is
validated when it is loaded: a duplicate label or name, an unknown command or a field that the
command does not have is a :class:`ConfigError` that names the entry::

    catalog = load_catalog()
    bias = catalog.find("bias_v")           # by name or label ("Bias")
    bias.limits.max, bias.safety.max_step   # 5.0, 0.1
    read_values(client, catalog.signals)    # {"Tunnel Current": 1.2e-10, ...} in few round trips
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from atomlab.core.errors import ConfigError, NotFoundError
from atomlab.instrument.catalog_index import coerce_value
from atomlab.instrument.client import NanonisClient
from atomlab.instrument.commands import COMMANDS, WireType, lookup

DEFAULT_RAMP_INTERVAL_S: Final = 0.05
PACKAGED_CATALOG: Final = "catalog.yaml"

ValueType = Literal["float", "int", "bool"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Model):
    """A command and the field of it that holds the value; ``args`` are fixed arguments."""

    command: str
    field: str
    args: dict[str, Any] = Field(default_factory=dict)


class Limits(_Model):
    min: float
    max: float

    @model_validator(mode="after")
    def _ordered(self) -> Limits:
        if not self.min < self.max:
            raise ValueError(f"min ({self.min}) must be below max ({self.max})")
        return self

    def contains(self, value: float) -> bool:
        return self.min <= value <= self.max


class Safety(_Model):
    max_step: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_slew_per_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    cooldown_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    ramp_interval_s: float = Field(default=DEFAULT_RAMP_INTERVAL_S, ge=0, allow_inf_nan=False)
    zero_unsafe_while: str | None = None
    """A catalog entry (``zctrl_on``): while it reads non-zero, writes of this spec never
    reach or dwell at 0 (atomlab.instrument.zero_crossing)."""


class CatalogEntry(_Model):
    """One signal (read-only) or spec (settable)."""

    label: str = Field(min_length=1)
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    kind: Literal["signal", "spec"]
    unit: str = ""
    type: ValueType = "float"
    description: str = ""
    get: Source
    set: Source | None = None
    signal: str | None = None
    limits: Limits | None = None
    safety: Safety = Field(default_factory=Safety)

    @property
    def writable(self) -> bool:
        return self.set is not None

    def coerce(self, value: Any, *, float32: bool = False) -> float | int | bool:
        """A raw wire value as this entry's type.

        ``float32``: the value came off the wire as a float32, so give the shortest decimal that
        encodes to the same float32 (0.1, not 0.10000000149011612); it re-encodes bit-identically.
        """
        return coerce_value(self.type, value, float32=float32)

    def describe(self) -> dict[str, Any]:
        """A plain dict for JSON output."""
        return self.model_dump(mode="json", exclude_none=True)


class ArgBounds(_Model):
    """What a guarded command's argument may be.

    Numbers: inclusive ``min``/``max`` (``min == max`` pins one value). Text: a ``pattern`` the
    whole value must match. ``default`` fills the argument when the caller leaves it out (an
    argument the command itself gives no default needs one, or the caller must always give it).
    """

    min: float | None = Field(default=None, allow_inf_nan=False)
    max: float | None = Field(default=None, allow_inf_nan=False)
    pattern: str | None = Field(default=None, max_length=256)
    default: float | str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ArgBounds:
        numeric = self.min is not None or self.max is not None
        if numeric and (self.min is None or self.max is None):
            raise ValueError("give both min and max")
        if numeric and self.pattern is not None:
            raise ValueError("give min/max for a number or pattern for text, not both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must not be above max ({self.max})")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(
                    f"pattern {self.pattern!r} is not a regular expression: {exc}"
                ) from None
        if self.default is not None and not self.allows(self.default):
            raise ValueError(f"default {self.default!r} is outside the rule itself")
        return self

    @property
    def numeric(self) -> bool:
        return self.min is not None

    def allows(self, value: float | str) -> bool:
        if self.pattern is not None:
            return isinstance(value, str) and re.fullmatch(self.pattern, value) is not None
        if isinstance(value, str) or self.min is None or self.max is None:
            return False
        return self.min <= float(value) <= self.max

    def contains(self, value: float) -> bool:
        return self.allows(value)


class CommandPolicy(_Model):
    """A one-shot command ``WriteGuard.command`` may send: argument bounds and a cooldown."""

    command: str
    description: str = ""
    cooldown_s: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    args: dict[str, ArgBounds] = Field(default_factory=dict)


class Catalog:
    """Signals and specs, looked up by name or label (case-insensitive), and the guarded
    commands (``commands``), looked up by their Nanonis name."""

    def __init__(
        self,
        entries: Sequence[CatalogEntry],
        *,
        source: str = "<memory>",
        commands: Sequence[CommandPolicy] = (),
    ) -> None:
        self.entries: tuple[CatalogEntry, ...] = tuple(entries)
        self.source = source
        self._by_key: dict[str, CatalogEntry] = {}
        for entry in self.entries:
            self._by_key[entry.name.lower()] = entry
            self._by_key[entry.label.lower()] = entry
        self.commands: tuple[CommandPolicy, ...] = tuple(commands)
        self._commands = {policy.command: policy for policy in self.commands}

    def command_policy(self, command: str) -> CommandPolicy | None:
        """The policy of the guarded command ``command`` (``"Bias.Pulse"``), None if unlisted."""
        return self._commands.get(command)

    def __repr__(self) -> str:
        return f"Catalog({len(self.signals)} signals, {len(self.specs)} specs, from {self.source})"

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def signals(self) -> tuple[CatalogEntry, ...]:
        return tuple(e for e in self.entries if e.kind == "signal")

    @property
    def specs(self) -> tuple[CatalogEntry, ...]:
        return tuple(e for e in self.entries if e.kind == "spec")

    def find(self, key: str) -> CatalogEntry:
        """The entry whose name or label is ``key``; NotFoundError listing the names otherwise."""
        entry = self._by_key.get(key.strip().lower())
        if entry is None:
            names = ", ".join(e.name for e in self.entries)
            raise NotFoundError(
                f"no signal or spec called {key!r} in the catalog ({self.source}); known: {names}",
                name=key,
            )
        return entry

    def spec(self, key: str) -> CatalogEntry:
        """Like :meth:`find`, but the entry must be writable."""
        entry = self.find(key)
        if not entry.writable:
            raise NotFoundError(
                f"{entry.name!r} ({entry.label}) is read-only; writable specs: "
                + ", ".join(e.name for e in self.specs),
                name=key,
            )
        return entry


def load_catalog(path: Path | str | None = None) -> Catalog:
    """Load and validate a catalog file (the packaged ``catalog.yaml`` when ``path`` is None)."""
    if path is None:
        text = resources.files("atomlab.instrument").joinpath(PACKAGED_CATALOG).read_text("utf-8")
        source = f"atomlab/instrument/{PACKAGED_CATALOG}"
    else:
        shown = str(path)[:200]  # a 10,000-character path stays readable in the message
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"the catalog {shown} is not a UTF-8 text file (byte {exc.start}: "
                f"{exc.object[exc.start : exc.start + 1]!r}); give a YAML catalog",
                path=shown,
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"cannot read the catalog {shown}: {exc.strerror or exc}; give a YAML catalog",
                path=shown,
            ) from None
        except ValueError as exc:  # a NUL byte in the path
            raise ConfigError(f"cannot read the catalog {shown!r}: {exc}", path=shown) from None
        source = shown
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise ConfigError(f"catalog {source} is not valid YAML: {exc}", path=source) from None
    return parse_catalog(data, source=source)


def parse_catalog(data: Any, *, source: str = "<memory>") -> Catalog:
    """Validate catalog data (``{"signals": [...], "specs": [...], "commands": [...]}``)."""
    if not isinstance(data, Mapping) or not set(data) <= {"signals", "specs", "commands"}:
        raise ConfigError(
            f"catalog {source} must be a mapping with the keys 'signals' and 'specs' "
            "(and optionally 'commands')",
            path=source,
        )
    entries: list[CatalogEntry] = []
    for kind in ("signal", "spec"):
        raw_list = data.get(kind + "s") or []
        if not isinstance(raw_list, list):
            raise ConfigError(f"catalog {source}: '{kind}s' must be a list", path=source)
        for i, raw in enumerate(raw_list):
            entries.append(_parse_entry(raw, kind, i, source))
    _check_unique(entries, source)
    _check_watched(entries, source)
    return Catalog(entries, source=source, commands=_parse_commands(data.get("commands"), source))


def _check_watched(entries: Sequence[CatalogEntry], source: str) -> None:
    """``safety.zero_unsafe_while`` must name another entry of the catalog."""
    keys = {e.name.lower() for e in entries} | {e.label.lower() for e in entries}
    for entry in entries:
        watched = entry.safety.zero_unsafe_while
        if watched is not None and watched.strip().lower() not in keys:
            raise ConfigError(
                f"catalog {source}: {entry.kind} {entry.label!r}: safety.zero_unsafe_while "
                f"names {watched!r}, which is not an entry of the catalog",
                path=source,
                field="safety.zero_unsafe_while",
            )


def _parse_commands(raw_list: Any, source: str) -> list[CommandPolicy]:
    """The ``commands`` section: known commands, listed once, numeric arguments bounded."""
    if raw_list is None:
        return []
    if not isinstance(raw_list, list):
        raise ConfigError(f"catalog {source}: 'commands' must be a list", path=source)
    policies: list[CommandPolicy] = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_list):
        name = raw.get("command") if isinstance(raw, Mapping) else None
        where = f"catalog {source}: command #{i + 1}" + (f" ({name!r})" if name else "")
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: an entry must be a mapping", path=source)
        try:
            policy = CommandPolicy.model_validate(dict(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{where}: {loc}: {first['msg']}", path=source, field=loc) from None
        spec = COMMANDS.get(policy.command)
        if spec is None:
            raise ConfigError(
                f"{where}: {policy.command!r} is not a known Nanonis command",
                path=source,
                field="command",
            )
        if policy.command in seen:
            raise ConfigError(f"{where}: {policy.command} is listed twice", path=source)
        seen.add(policy.command)
        by_name = {f.name: f for f in spec.args}
        for arg in policy.args:
            wire = by_name.get(arg)
            if wire is None:
                raise ConfigError(
                    f"{where}: {policy.command} has no argument {arg!r}; arguments: "
                    f"{list(spec.arg_names)}",
                    path=source,
                    field=f"args.{arg}",
                )
            rule = policy.args[arg]
            if wire.type.is_scalar and not rule.numeric:
                raise ConfigError(
                    f"{where}: argument {arg!r} is a number ({wire.type.value}); give it min and "
                    "max",
                    path=source,
                    field=f"args.{arg}",
                )
            if wire.type is WireType.STR and rule.pattern is None:
                raise ConfigError(
                    f"{where}: argument {arg!r} is text; give it a pattern", path=source,
                    field=f"args.{arg}",
                )  # fmt: skip
            if not wire.type.is_scalar and wire.type is not WireType.STR:
                raise ConfigError(
                    f"{where}: argument {arg!r} is {wire.type.value}; only numbers and text can "
                    "be allowed in a guarded command",
                    path=source,
                    field=f"args.{arg}",
                )
        missing = [f.name for f in spec.args if f.required and f.name not in policy.args]
        if missing:
            raise ConfigError(
                f"{where}: argument {missing[0]!r} has no default, so it needs a rule under args",
                path=source,
                field=f"args.{missing[0]}",
            )
        policies.append(policy)
    return policies


def _where(kind: str, index: int, raw: Any, source: str) -> str:
    label = raw.get("label") if isinstance(raw, Mapping) else None
    return f"catalog {source}: {kind} #{index + 1}" + (f" ({label!r})" if label else "")


def _parse_entry(raw: Any, kind: str, index: int, source: str) -> CatalogEntry:
    where = _where(kind, index, raw, source)
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: an entry must be a mapping", path=source)
    try:
        entry = CatalogEntry.model_validate({**raw, "kind": kind})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: {loc}: {first['msg']}", path=source, field=loc) from None
    _check_sources(entry, where, source)
    return entry


def _check_sources(entry: CatalogEntry, where: str, source: str) -> None:
    if entry.kind == "signal" and entry.set is not None:
        raise ConfigError(f"{where}: a signal is read-only; move it to specs", path=source)
    if entry.kind == "spec" and entry.set is None:
        raise ConfigError(f"{where}: a spec needs 'set'; read-only values are signals", path=source)
    if entry.kind == "spec" and entry.limits is None:
        raise ConfigError(f"{where}: a spec needs 'limits' (min and max)", path=source)
    for role, src, fields_of in (
        ("get", entry.get, "reply"),
        ("set", entry.set, "args"),
    ):
        if src is None:
            continue
        spec = COMMANDS.get(src.command)
        if spec is None:
            raise ConfigError(
                f"{where}: {role}.command {src.command!r} is not a known Nanonis command",
                path=source,
                field=f"{role}.command",
            )
        names = spec.reply_names if fields_of == "reply" else spec.arg_names
        if src.field not in names:
            raise ConfigError(
                f"{where}: {src.command} has no {fields_of} field {src.field!r}; "
                f"fields: {list(names)}",
                path=source,
                field=f"{role}.field",
            )
        unknown = [a for a in src.args if a not in spec.arg_names]
        if unknown:
            raise ConfigError(f"{where}: {src.command} has no argument {unknown[0]!r}", path=source)


def _check_unique(entries: Iterable[CatalogEntry], source: str) -> None:
    seen: dict[str, CatalogEntry] = {}
    for entry in entries:
        for key in {entry.label.lower(), entry.name.lower()}:
            other = seen.get(key)
            if other is not None:
                raise ConfigError(
                    f"catalog {source}: {entry.kind} {entry.label!r} reuses {key!r}, already "
                    f"used by {other.kind} {other.label!r}; labels and names must be unique",
                    path=source,
                    label=entry.label,
                )
            seen[key] = entry


# --- reading ---------------------------------------------------------------------------------


def read_values(
    client: NanonisClient, entries: Iterable[CatalogEntry], *, use_signals: bool = True
) -> dict[str, float | int | bool]:
    """Current values by entry name, in as few round trips as possible.

    Entries with a ``signal`` are read together with one ``Signals.ValsGet``; the others with one
    call per distinct command (the five scan-frame specs cost one ``Scan.FrameGet``).
    """
    chosen = list(entries)
    out: dict[str, float | int | bool] = {}
    batched: list[tuple[CatalogEntry, int]] = []
    if use_signals and any(e.signal is not None for e in chosen):
        names = client.signal_names()
        for entry in chosen:
            if entry.signal is not None and entry.signal in names:
                batched.append((entry, names.index(entry.signal)))
    if batched:
        values = client.read_signals([index for _, index in batched])
        for (entry, _), value in zip(batched, values, strict=True):
            out[entry.name] = entry.coerce(value, float32=True)
    replies: dict[tuple[str, tuple[tuple[str, Any], ...]], Mapping[str, Any]] = {}
    for entry in chosen:
        if entry.name in out:
            continue
        key = (entry.get.command, tuple(sorted(entry.get.args.items())))
        if key not in replies:
            replies[key] = client.call(entry.get.command, entry.get.args).values
        is_f32 = lookup(entry.get.command).reply_field(entry.get.field).type is WireType.F32
        out[entry.name] = entry.coerce(replies[key][entry.get.field], float32=is_f32)
    return {e.name: out[e.name] for e in chosen}


def read_value(client: NanonisClient, entry: CatalogEntry) -> float | int | bool:
    """The current value of one entry through its ``get`` command."""
    return read_values(client, [entry], use_signals=False)[entry.name]
