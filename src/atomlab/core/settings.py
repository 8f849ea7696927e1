"""The one settings model of atomlab, with a section per capability, and where each value came from.

Precedence, highest first: CLI flag > environment (``ATOMLAB_<SECTION>__<KEY>``, or
``ATOMLAB_HOME``) > ``atomlab.yaml`` (current directory, or ``--config PATH``) > defaults::

    loaded = load_settings(overrides={"trajectory": {"interval_s": 0.05}})
    loaded.settings.trajectory.interval_s   # 0.05
    loaded.sources["trajectory.interval_s"]  # "cli"
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from platformdirs import user_data_dir
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from atomlab.core.errors import ConfigError

ENV_PREFIX = "ATOMLAB_"
ENV_NESTED_DELIMITER = "__"
DEFAULT_CONFIG_FILENAME = "atomlab.yaml"

Source = Literal["default", "file", "env", "cli"]

# Bounds every duration, rate and count setting shares: a value past them is a typo (``inf``,
# ``1e308``, ``2**70``) that would otherwise overflow a timer, a sleep or an SQLite integer later.
MAX_DURATION_S = 7 * 24 * 3600.0  # a week: no timeout, interval or window is longer
MAX_COUNT = 1_000_000_000
MAX_PORT = 65535
NAME_MAX_BYTES = 255  # per path component on every common file system
MAX_ENGINE_CONCURRENCY = 1024  # provider calls at once; far above any provider's parallel limit
Port = Annotated[int, Field(ge=0, le=MAX_PORT)]  # 0: any free port


def default_home() -> Path:
    """The platform's user data directory for atomlab (``~/.local/share/atomlab`` on Linux)."""
    return Path(user_data_dir("atomlab", appauthor=False))


class Section(BaseModel):
    """Base of every settings section: unknown keys are errors, so typos never pass silently."""

    # allow_inf_nan=False: ``inf`` and ``nan`` are refused for every float (speeds, rates,
    # tolerances, windows); pydantic accepts them by default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LogSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    format: Literal["console", "json"] = "console"


class InstrumentSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=6501, ge=1, le=MAX_PORT)
    connect_timeout_s: float = Field(default=2.0, gt=0, le=MAX_DURATION_S)
    call_timeout_s: float = Field(default=5.0, gt=0, le=MAX_DURATION_S)
    allow_writes: bool = False
    catalog_path: Path | None = None
    audit_log: Path | None = None


class SimSettings(Section):
    host: str = "127.0.0.1"
    ports: list[Port] = Field(default_factory=lambda: [6501, 6502, 6503, 6504])
    seed: int = Field(default=0, ge=0, le=2**63 - 1)


class TrajectorySettings(Section):
    db_path: Path | None = None
    interval_s: float = Field(default=0.1, gt=0, le=MAX_DURATION_S)
    rotate_entries: int = Field(default=6000, ge=1, le=MAX_COUNT)
    action_window_s: float = Field(default=2.5, gt=0, le=MAX_DURATION_S)
    config_path: Path | None = None
    flush_interval_s: float = Field(default=0.25, gt=0, le=MAX_DURATION_S)
    coalesce_s: float = Field(default=0.0, ge=0, le=MAX_DURATION_S)


class TrackingSettings(Section):
    # None: keep every run (retention deletes nothing unless configured).
    retention_runs: int | None = Field(default=None, ge=1)
    telemetry_interval_s: float = Field(default=1.0, gt=0, le=MAX_DURATION_S)
    heartbeat_interval_s: float = Field(default=5.0, gt=0, le=MAX_DURATION_S)
    stale_after_s: float = Field(default=15.0, gt=0, le=MAX_DURATION_S)
    progress_interval_s: float = Field(default=10.0, gt=0, le=10.0)
    process_rescan_s: float = Field(default=5.0, gt=0, le=MAX_DURATION_S)
    gpu: bool = True
    tensorboard_dir: Path | None = None
    perf_suites: list[dict[str, Any]] = Field(default_factory=list)


class LlmSettings(Section):
    provider: Literal["auto", "gemini", "openai", "offline", "replay"] = "auto"
    model: str = "gemini-2.5-flash"
    timeout_s: float = Field(default=60.0, gt=0, le=MAX_DURATION_S)
    max_attempts: int = Field(default=5, ge=1, le=100)
    base_url: str | None = None  # OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    cassette_dir: Path | None = None  # replay provider; default <home>/llm/cassettes
    record: bool = False  # replay provider: call the real provider on a miss and record
    retry_initial_delay_s: float = Field(default=0.5, gt=0, le=MAX_DURATION_S)
    retry_max_delay_s: float = Field(default=30.0, gt=0, le=MAX_DURATION_S)
    breaker_failure_threshold: int = Field(default=5, ge=1, le=MAX_COUNT)
    breaker_reset_s: float = Field(default=30.0, gt=0, le=MAX_DURATION_S)
    budget_usd: float | None = Field(default=None, ge=0)
    budget_tokens: int | None = Field(default=None, ge=0, le=2**63 - 1)
    requests_per_minute: float | None = Field(default=None, gt=0)  # client-side RPM quota
    tokens_per_minute: float | None = Field(default=None, gt=0)  # client-side TPM quota
    prices: dict[str, tuple[float, float]] = Field(default_factory=dict)  # model: (in, out) $/Mtok

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str | None) -> str | None:
        """``http(s)://host[:port][/path]``: a typo fails here, not at the first call."""
        if value is None:
            return None
        try:
            parts = urlsplit(value)
            port = parts.port  # raises ValueError for a port out of range or not a number
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
            raise ValueError(
                "must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:11434/v1"
            )
        del port
        return value


class EngineSettings(Section):
    concurrency: int = Field(default=8, ge=1, le=MAX_ENGINE_CONCURRENCY)
    cache_dir: Path | None = None  # default <home>/engine/cache
    cache_mode: Literal["read-write", "read-only", "refresh", "off"] = "read-write"
    queue: bool = True  # route provider calls through the LLM queue (retries, breaker, budget)
    strict: bool = False  # a failed stage stops the run instead of rejecting the item
    # default: 2 x concurrency
    max_items_in_flight: int | None = Field(default=None, ge=1, le=MAX_COUNT)


class SwarmZone(Section):
    """An axis-aligned no-go box of the swarm service, in nm."""

    x: tuple[float, float]
    y: tuple[float, float]
    z: tuple[float, float] = (0.0, 2.0)


class SwarmSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=MAX_PORT)  # 0: any free port (serve prints it)
    db_url: str | None = None
    bounds_x_nm: tuple[float, float] = (0.0, 20.0)
    bounds_y_nm: tuple[float, float] = (0.0, 20.0)
    bounds_z_nm: tuple[float, float] = (0.0, 2.0)
    no_go_zones: list[SwarmZone] = Field(default_factory=list)
    max_temperature_c: float = Field(default=120.0, gt=0, le=120.0)
    repair_thermal_budget_c: float = Field(default=95.0, gt=0, le=120.0)
    thermal_headroom_c: float = Field(default=45.0, ge=0, le=120.0)  # start a repair this far below
    separation_nm: float = Field(default=0.5, ge=0.5, le=100.0)
    planning_margin_nm: float = Field(default=0.2, ge=0.0, le=100.0)
    heartbeat_interval_s: float = Field(default=10.0, gt=0, le=3600.0)
    missed_heartbeats: int = Field(default=3, ge=1, le=1000)
    ack_timeout_s: float = Field(default=5.0, gt=0, le=3600.0)
    retry_budget: int = Field(default=3, ge=1, le=1000)
    command_timeout_s: float = Field(default=60.0, gt=0, le=MAX_DURATION_S)
    assignment: Literal["hungarian", "round_robin"] = "hungarian"
    llm_planner: Literal["auto", "on", "off"] = "auto"  # auto: on when an LLM key/server is set
    llm_timeout_s: float = Field(default=2.0, gt=0, le=600.0)
    # Authentication (docs/swarm.md "Authentication"): a token per scope from the environment
    # (ATOMLAB_SWARM__INGEST_TOKEN ...) or the tokens file; serve creates the file (0600) with
    # random tokens on first start when no token is configured. Reads are public unless
    # read_token is set.
    tokens_file: Path | None = None  # default <home>/swarm/tokens.json
    ingest_token: SecretStr | None = None
    control_token: SecretStr | None = None
    link_token: SecretStr | None = None
    read_token: SecretStr | None = None
    link_peer_policy: Literal["refuse", "takeover"] = "refuse"  # a second simulator connects
    # Limits on what a network peer may send.
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_frame_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024, le=16 * 1024 * 1024)
    max_connections: int = Field(default=1000, ge=8, le=100_000)
    # 202 means durable: an ingest waits at most this long for its commit, else 503.
    durable_timeout_s: float = Field(default=10.0, gt=0, le=600.0)
    db_synchronous: Literal["normal", "full"] = "normal"  # SQLite; full: survives power loss too

    @model_validator(mode="after")
    def _bounds_are_ranges(self) -> SwarmSettings:
        for name in ("bounds_x_nm", "bounds_y_nm", "bounds_z_nm"):
            low, high = getattr(self, name)
            if not -SWARM_MAX_COORDINATE_NM <= low <= high <= SWARM_MAX_COORDINATE_NM:
                raise ValueError(
                    f"{name} must be [low, high] with low <= high, within "
                    f"+-{SWARM_MAX_COORDINATE_NM:g} nm"
                )
        return self

    @field_serializer("db_url", when_used="json")
    def _db_url_without_password(self, value: str | None) -> str | None:
        return redact_url_password(value) if value is not None else None


SWARM_MAX_COORDINATE_NM = 1_000_000.0  # 1 mm: beyond any probe's reach


def redact_url_password(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` (for display)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, tail = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostport}{slash}{tail}"


class DashboardSettings(Section):
    """``atomlab dashboard``: where it listens and what it reads (docs/dashboard.md)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)  # 0: any free port (the command prints it)
    allow_remote: bool = False  # a host other than loopback is refused unless this is true
    trajectory_db: Path | None = None  # default: the staged monitor config's db_path
    instrument_host: str | None = None  # scan images; default: instrument.host
    instrument_port: int | None = Field(default=None, ge=1, le=65535)  # default: instrument.port
    scan_image: bool = True  # read the latest scan image from the instrument


class AtomlabSettings(BaseSettings):
    """Every setting of atomlab. Build it with :func:`load_settings`, not directly."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        validate_default=True,
    )

    home: Path = Field(default_factory=default_home)
    log: LogSettings = Field(default_factory=LogSettings)
    instrument: InstrumentSettings = Field(default_factory=InstrumentSettings)
    sim: SimSettings = Field(default_factory=SimSettings)
    trajectory: TrajectorySettings = Field(default_factory=TrajectorySettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    swarm: SwarmSettings = Field(default_factory=SwarmSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)

    @field_validator("home")
    @classmethod
    def _home_is_a_usable_path(cls, value: Path) -> Path:
        """Refuse a name no file system accepts (a 10,000-character --home) up front."""
        if any(len(os.fsencode(part)) > NAME_MAX_BYTES for part in value.parts):
            raise ValueError(f"a path with a name longer than {NAME_MAX_BYTES} bytes")
        return value


@dataclass(frozen=True)
class LoadedSettings:
    """Validated settings plus, per dotted key, the source that set it."""

    settings: AtomlabSettings
    sources: dict[str, Source] = field(default_factory=dict)
    config_path: Path | None = None

    def describe(self) -> dict[str, dict[str, Any]]:
        """``{"section.key": {"value": ..., "source": ...}}`` for every leaf setting."""
        values = _flatten(self.settings.model_dump(mode="json"))
        return {key: {"value": value, "source": self.sources[key]} for key, value in values.items()}


def load_settings(
    *,
    config_path: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> LoadedSettings:
    """Merge defaults, the YAML file, the environment and CLI ``overrides``; validate the result.

    ``config_path`` must exist when given; without it ``atomlab.yaml`` in ``cwd`` is used if
    present. Raises :class:`ConfigError` naming the field, the value and the reason.
    """
    path = _resolve_config_path(config_path, cwd or Path.cwd())
    layers: list[tuple[Source, dict[str, Any]]] = [
        ("file", _read_yaml(path) if path else {}),
        ("env", _read_env(environ if environ is not None else os.environ)),
        ("cli", _without_none(dict(overrides or {}))),
    ]
    merged: dict[str, Any] = {}
    for _, layer in layers:
        _deep_merge(merged, layer)
    try:
        settings = AtomlabSettings.model_validate(merged)
    except ValidationError as exc:
        raise _config_error(exc, layers) from None
    sources: dict[str, Source] = {
        key: "default" for key in _flatten(settings.model_dump(mode="json"))
    }
    for source, layer in layers:
        for key in _flatten(layer):
            for known in sources:
                if known == key or known.startswith(key + "."):
                    sources[known] = source
    return LoadedSettings(settings=settings, sources=sources, config_path=path)


def _resolve_config_path(config_path: Path | str | None, cwd: Path) -> Path | None:
    if config_path is not None:
        path = Path(config_path).expanduser()
        try:
            found = path.is_file()
        except OSError as exc:  # too long a name, a loop of links
            raise ConfigError(
                f"config file {_shown(path)} cannot be read ({exc.strerror or exc}); pass an "
                "existing YAML file to --config",
                field="config",
                value=str(path)[:120],
            ) from None
        if not found:
            what = "is a folder" if path.is_dir() else "does not exist"
            raise ConfigError(
                f"config file {_shown(path)} {what}; pass an existing YAML file to --config",
                field="config",
                value=str(path)[:120],
            )
        return path
    candidate = cwd / DEFAULT_CONFIG_FILENAME
    return candidate if candidate.is_file() else None


def _shown(path: Path, limit: int = 120) -> str:
    text = str(path)
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}… ({len(text)} characters)"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {_shown(path)} is not UTF-8 text (byte {exc.start + 1}); "
            "pass a YAML text file",
            field="config",
            value=str(path)[:120],
        ) from None
    except RecursionError:
        raise ConfigError(
            f"config file {_shown(path)} is nested too deeply; fix the YAML",
            field="config",
            value=str(path)[:120],
        ) from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(
            f"cannot read config file {_shown(path)}: {exc}; fix the YAML syntax",
            field="config",
            value=str(path)[:120],
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of sections, got {type(data).__name__}",
            field="config",
            value=str(path),
        )
    return data


def _check_env_sections(environ: Mapping[str, str]) -> None:
    """Refuse ``ATOMLAB_<SECTION>__<KEY>`` variables whose section does not exist.

    pydantic-settings silently ignores a variable that matches no field, so a misspelt section
    (``ATOMLAB_LOGGING__LEVEL``) would do nothing; a misspelt key inside a known section is already
    refused by the section's ``extra="forbid"``. Variables without ``__`` (``ATOMLAB_HOME``, the
    tracker's ``ATOMLAB_RUN_ID`` passed to its steps ...) are not section settings: left alone.
    """
    sections = _sections()
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or ENV_NESTED_DELIMITER not in upper[len(ENV_PREFIX) :]:
            continue
        section = upper[len(ENV_PREFIX) :].split(ENV_NESTED_DELIMITER, 1)[0].lower()
        if section not in sections:
            raise ConfigError(
                f"unknown setting section {section!r} in environment variable {name}"
                f"{_did_you_mean(section, sections)}; the sections are {', '.join(sections)} "
                f"(e.g. ATOMLAB_LOG__LEVEL=DEBUG): rename or unset {name}",
                field=section,
                value=_jsonable(environ[name]),
                source="env",
                variable=name,
            )


def _sections() -> list[str]:
    return [
        name
        for name, info in AtomlabSettings.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, Section)
    ]


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    _check_env_sections(environ)
    source = EnvSettingsSource(
        AtomlabSettings,
        case_sensitive=False,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
    )
    source.env_vars = {key.lower(): value for key, value in environ.items()}
    try:
        values = source()
    except Exception as exc:  # pydantic-settings raises SettingsError for undecodable JSON
        raise ConfigError(f"invalid ATOMLAB_ environment variable: {exc}") from None
    return _without_none(dict(values))


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            nested = _without_none(value)
            if nested:
                cleaned[key] = nested
        elif value is not None:
            cleaned[key] = value
    return cleaned


def _deep_merge(target: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        elif isinstance(value, Mapping):
            target[key] = dict(value)
            _deep_merge(target[key], {})
        else:
            target[key] = value


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _config_error(exc: ValidationError, layers: list[tuple[Source, dict[str, Any]]]) -> ConfigError:
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"]]
    dotted = ".".join(loc)
    value = first.get("input")
    origin: Source = "default"
    setting = dotted  # the key as the source wrote it (``sim.ports`` for ``sim.ports.0``)
    for source, layer in layers:
        for key in _flatten(layer):
            if key == dotted or dotted.startswith(key + "."):
                origin, setting = source, key
            elif key.startswith(dotted + "."):
                origin, setting = source, dotted
    hint = {
        "file": "fix it in the config file",
        "env": f"fix the environment variable {_env_name(setting)}",
        "cli": "fix the command-line flag",
        "default": "set a valid value",
    }[origin]
    if first["type"] == "extra_forbidden":
        if len(loc) == 1:
            known = _sections()
            what = f"unknown setting section {dotted!r}{_did_you_mean(loc[0], known)}"
            choices = f"the sections are {', '.join(known)}"
        else:
            keys = _section_keys(loc[:-1])
            what = f"unknown setting {dotted}{_did_you_mean(loc[-1], keys)}"
            choices = f"the keys of {'.'.join(loc[:-1])} are {', '.join(keys)}"
        message = f"{what} (from {origin}); {choices}; {hint}"
    else:
        reason = first["msg"].removeprefix("Value error, ")
        text = repr(str(value) if isinstance(value, Path) else value)
        text = text if len(text) <= 120 else f"{text[:120]}… ({len(text)} characters)"
        message = f"invalid setting {dotted}={text} (from {origin}): {reason}; {hint}"
    return ConfigError(message, field=dotted, value=_jsonable(value), source=origin)


def _section_keys(loc: list[str]) -> list[str]:
    """The field names at ``loc`` (e.g. ``["llm"]``), or none when ``loc`` is not a model."""
    model: Any = AtomlabSettings
    for part in loc:
        info = getattr(model, "model_fields", {}).get(part)
        if info is None:
            return []
        model = info.annotation
    return list(getattr(model, "model_fields", {}))


def _env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.upper().replace(".", ENV_NESTED_DELIMITER)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 120:
        return value[:120] + "…"
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return _jsonable(repr(value))
