"""The staged monitor configuration: what to record and how, kept in a small JSON file.

The run name is single-use: ``config set --run-name`` stages it, ``run`` consumes it and clears it
(also after an error or an interrupt), so two recordings never share a name by accident::

    config = load_staged(path)                       # defaults when nothing is staged
    save_staged(path, config.with_changes(run_name="tip-conditioning-3"))
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atomlab.core.errors import ConfigError, InvalidInputError
from atomlab.core.settings import MAX_COUNT, MAX_DURATION_S, AtomlabSettings

DEFAULT_INTERVAL_S = 0.1
DEFAULT_ROTATE_ENTRIES = 6000
DEFAULT_ACTION_WINDOW_S = 2.5
DEFAULT_FLUSH_INTERVAL_S = 0.25
CONFIG_FILENAME = "monitor-config.json"
DB_FILENAME = "trajectories.sqlite"
MAX_RUN_NAME_LENGTH = 128
#: Shortest interval: one tick is at least one TCP round trip per command, and a tick may start at
#: most half an interval late, so a shorter interval records nothing but missed ticks.
MIN_INTERVAL_S = 0.001
#: Longest action window and coalescing gap: the settings' bound on every duration (a week), so
#: whatever `trajectory.action_window_s`/`coalesce_s` accepts stages too; past it is a typo
#: (``1e308``) that would overflow a window's ``dt_s`` arithmetic.
MAX_WINDOW_S = MAX_DURATION_S

#: The origin's defaults (two fast signals, ten operator-facing specs), as our catalog names them.
DEFAULT_SIGNALS: tuple[str, ...] = ("Z Position", "Tunnel Current")
DEFAULT_SPECS: tuple[str, ...] = (
    "Bias",
    "Z Setpoint",
    "Z Controller Enabled",
    "Z Controller P Gain",
    "Z Controller Time Constant",
    "Scan Frame Center X",
    "Scan Frame Center Y",
    "Scan Frame Width",
    "Scan Frame Height",
    "Scan Frame Angle",
)

_RUN_NAME = re.compile(r"^[\w][\w .:@+#=,()\-/]*$")


class MonitorConfig(BaseModel):
    """Everything one recording needs; immutable (derive changes with :meth:`with_changes`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_name: str = ""
    signals: tuple[str, ...] = DEFAULT_SIGNALS
    specs: tuple[str, ...] = DEFAULT_SPECS
    interval_s: float = Field(
        default=DEFAULT_INTERVAL_S, ge=MIN_INTERVAL_S, le=3600, allow_inf_nan=False
    )
    rotate_entries: int = Field(default=DEFAULT_ROTATE_ENTRIES, ge=1, le=MAX_COUNT)
    action_window_s: float = Field(
        default=DEFAULT_ACTION_WINDOW_S, ge=0, le=MAX_WINDOW_S, allow_inf_nan=False
    )
    db_path: Path | None = None
    #: Absolute change a spec must exceed to count as an action (default 0: any change).
    tolerances: dict[str, float] = Field(default_factory=dict)
    #: Changes of one spec closer than this merge into one action (a ramp); 0 turns merging off.
    coalesce_s: float = Field(default=0.0, ge=0, le=MAX_WINDOW_S, allow_inf_nan=False)
    flush_interval_s: float = Field(
        default=DEFAULT_FLUSH_INTERVAL_S, gt=0, le=60, allow_inf_nan=False
    )

    @field_validator("run_name")
    @classmethod
    def _run_name_shape(cls, value: str) -> str:
        value = value.strip()
        if value and (len(value) > MAX_RUN_NAME_LENGTH or not _RUN_NAME.match(value)):
            raise ValueError(
                f"must be at most {MAX_RUN_NAME_LENGTH} characters, start with a letter or digit "
                "and use letters, digits, spaces or . : @ + # = , ( ) - / _"
            )
        return value

    @field_validator("signals", "specs")
    @classmethod
    def _labels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        labels = tuple(label.strip() for label in value if label.strip())
        if not labels:
            raise ValueError("needs at least one label")
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"lists {', '.join(duplicates)} more than once")
        return labels

    @field_validator("tolerances")
    @classmethod
    def _tolerances(cls, value: dict[str, float]) -> dict[str, float]:
        negative = sorted(
            label for label, tol in value.items() if not (tol >= 0 and math.isfinite(tol))
        )
        if negative:
            raise ValueError(f"tolerance must be a finite number >= 0 (see {', '.join(negative)})")
        return value

    def with_changes(self, **changes: Any) -> MonitorConfig:
        """A validated copy with ``changes`` applied (``None`` values are ignored)."""
        data = self.model_dump()
        data.update({key: value for key, value in changes.items() if value is not None})
        return build_config(data)

    def require_runnable(self) -> None:
        """Raise :class:`InvalidInputError` unless a run name is staged (and tolerances fit)."""
        if not self.run_name:
            raise InvalidInputError(
                "no run name is staged (run_name is empty); stage one with "
                "`atomlab trajectory monitor config set --run-name NAME` before each run",
                field="run_name",
                value=self.run_name,
            )
        self.require_tolerances_known()

    def require_tolerances_known(self) -> None:
        """Raise :class:`ConfigError` when a tolerance names a spec that is not recorded."""
        unknown = sorted(set(self.tolerances) - set(self.specs))
        if unknown:
            raise ConfigError(
                f"tolerances name {', '.join(unknown)}, which is not among the recorded specs; "
                "add the spec with --specs, or run `atomlab trajectory monitor config clear` "
                "and stage again without that --tolerance",
                field="tolerances",
                value=unknown,
            )

    def resolved_db_path(self, home: Path) -> Path:
        """The database to record into: ``db_path``, else ``<home>/trajectories.sqlite``."""
        return self.db_path if self.db_path is not None else home / DB_FILENAME


def build_config(data: Mapping[str, Any]) -> MonitorConfig:
    """Validate ``data`` into a :class:`MonitorConfig`; a bad value raises :class:`ConfigError`."""
    try:
        return MonitorConfig.model_validate(dict(data))
    except ValidationError as exc:
        field, value, message = _first_error(exc)
        flag = "--" + field.split(".")[0].replace("_", "-")
        raise ConfigError(
            f"invalid monitor config {field}={value!r}: {message}; fix it with "
            f"`atomlab trajectory monitor config set {flag} ...`",
            field=field,
            value=_json_safe(value),
        ) from None


def _first_error(exc: ValidationError) -> tuple[str, Any, str]:
    """``(field, value, rule)`` of the first problem pydantic found."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "config"
    return field, first.get("input"), str(first["msg"]).removeprefix("Value error, ")


def _json_safe(value: Any) -> Any:
    """``value`` as the error envelope can print it in strict JSON (NaN and inf as text)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def defaults_from_settings(settings: AtomlabSettings) -> MonitorConfig:
    """The config a fresh stage starts from: built-in defaults overlaid with the settings file."""
    section = settings.trajectory
    try:
        return MonitorConfig.model_validate(
            {
                "interval_s": section.interval_s,
                "rotate_entries": section.rotate_entries,
                "action_window_s": section.action_window_s,
                "db_path": section.db_path,
                "coalesce_s": section.coalesce_s,
                "flush_interval_s": section.flush_interval_s,
            }
        )
    except ValidationError as exc:  # a setting within the settings' bounds, past the monitor's
        field, value, message = _first_error(exc)
        raise ConfigError(
            f"setting trajectory.{field}={value!r} cannot be used by the trajectory monitor: "
            f"{message}; change it in atomlab.yaml (or ATOMLAB_TRAJECTORY__{field.upper()})",
            field=f"trajectory.{field}",
            value=_json_safe(value),
        ) from None


def default_config_path(settings: AtomlabSettings) -> Path:
    """Where the staged config lives unless ``--config-path`` says otherwise."""
    configured = settings.trajectory.config_path
    return configured if configured is not None else settings.home / "trajectory" / CONFIG_FILENAME


def load_staged(path: Path, *, defaults: MonitorConfig | None = None) -> MonitorConfig:
    """The staged config at ``path``, or ``defaults`` (built-in if None) when none is staged."""
    base = defaults or MonitorConfig()
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as exc:  # a name too long, a loop of links
        raise _unusable_path(path, exc) from None
    if not exists:
        return base
    if is_dir:
        raise _unusable_path(path, IsADirectoryError("it is a folder"))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"staged monitor config {str(path)!r} is unreadable ({exc}); "
            "reset it with `atomlab trajectory monitor config clear`",
            field="config_path",
            value=str(path),
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"staged monitor config {str(path)!r} must hold a JSON object; "
            "reset it with `atomlab trajectory monitor config clear`",
            field="config_path",
            value=str(path),
        )
    return base.with_changes(**data)


def save_staged(path: Path, config: MonitorConfig) -> None:
    """Write ``config`` to ``path`` atomically (a reader never sees half a file)."""
    text = json.dumps(config.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".monitor-config.", dir=path.parent)
    except OSError as exc:
        raise _unusable_path(path, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        Path(tmp).chmod(0o644)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def clear_staged(path: Path) -> bool:
    """Forget the staged config (back to defaults); True if something was staged."""
    existed = path.exists()
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise _unusable_path(path, exc) from None
    return existed


def _unusable_path(path: Path, exc: OSError) -> ConfigError:
    reason = exc.strerror or str(exc)
    shown = str(path) if len(str(path)) <= 200 else str(path)[:200] + "..."
    return ConfigError(
        f"cannot use {shown!r} for the staged monitor config ({reason}); pass "
        "--config-path a JSON file in a writable folder",
        field="config_path",
        value=shown,
    )


def clear_staged_run_name(path: Path) -> None:
    """Empty the staged run name, keeping every other staged value."""
    try:
        if not path.exists():
            return
    except OSError:
        return
    try:
        config = load_staged(path)
    except ConfigError:
        return  # an unreadable stage holds no usable run name either
    save_staged(path, config.with_changes(run_name=""))
