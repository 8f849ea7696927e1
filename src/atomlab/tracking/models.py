"""The run tracker's data model: what a run, a step, a telemetry sample and a recommendation are.

Everything here is plain data that round-trips through JSON (``run.json``, ``events.jsonl``,
``telemetry.jsonl``) and the SQLite index; behaviour lives in the other modules.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from atomlab.core.errors import InvalidInputError

SCHEMA_VERSION = 1
_STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class RunStatus(StrEnum):
    """Life cycle of a run. ``crashed`` is set by the reaper, never by the run itself."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"

    @property
    def is_active(self) -> bool:
        return self in (RunStatus.PENDING, RunStatus.RUNNING)


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def is_done(self) -> bool:
        return self not in (StepStatus.PENDING, StepStatus.RUNNING)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=False)


class StepSpec(_Model):
    """One declared step of a pipeline: its name, an optional display title and prior.

    ``expected_s`` is the prior duration used by the ETA until the pipeline has history;
    ``units`` is the amount of work inside the step (episodes, epochs) that
    :meth:`RunTracker.advance` counts towards.
    """

    name: str
    title: str | None = None
    expected_s: float | None = Field(default=None, gt=0)
    units: float | None = Field(default=None, gt=0)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _STEP_NAME.match(value):
            raise ValueError(
                f"step name {value[:60]!r} must be 1-64 letters, digits, '_', '.' or '-' "
                "and start with a letter or digit"
            )
        return value

    @property
    def label(self) -> str:
        return self.title or self.name


def step_specs(steps: list[StepSpec | str] | tuple[StepSpec | str, ...]) -> list[StepSpec]:
    """Normalise declared steps (names or :class:`StepSpec`) and refuse duplicates or none."""
    try:
        specs = [StepSpec(name=s) if isinstance(s, str) else s for s in steps]
    except ValidationError as exc:
        raise InvalidInputError(f"invalid step: {exc.errors()[0]['msg']}", field="steps") from None
    if not specs:
        raise InvalidInputError("a pipeline needs at least one step; declare its steps")
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise InvalidInputError(
                f"step {spec.name!r} is declared twice; give every step a unique name",
                field="steps",
                value=spec.name,
            )
        seen.add(spec.name)
    return specs


class StepRecord(_Model):
    """The state of one step inside a run."""

    name: str
    title: str | None = None
    order: int
    status: StepStatus = StepStatus.PENDING
    expected_s: float | None = None
    units_total: float | None = None
    units_done: float = 0.0
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    command: list[str] | None = None
    pid: int | None = None
    #: The step process's start time (epoch s): tells its process group from a reused pid.
    pid_started: float | None = None
    exit_code: int | None = None
    log_path: str | None = None
    reason: str | None = None

    @property
    def label(self) -> str:
        return self.title or self.name

    @property
    def fraction(self) -> float | None:
        """Share of the step's declared work done, or None when it declared none."""
        if not self.units_total:
            return None
        return max(0.0, min(1.0, self.units_done / self.units_total))


class EtaEstimate(_Model):
    """Seconds left for the whole run, with a band and where the numbers came from."""

    remaining_s: float | None = None
    low_s: float | None = None
    high_s: float | None = None
    basis: str = "none"


class Recommendation(_Model):
    """One finding of the rule engine, with the numbers behind it and what to do about it."""

    rule: str
    severity: Severity
    message: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    actions: list[str] = Field(min_length=1)
    step: str | None = None


class ArtifactRecord(_Model):
    """A file stored with a run: ``path`` is relative to the run directory."""

    name: str
    path: str
    bytes: int
    sha256: str
    kind: str | None = None


class RunRecord(_Model):
    """Everything about one run: the content of ``run.json`` and the source of the index row."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    pipeline: str
    status: RunStatus = RunStatus.PENDING
    created_at: str
    started_at: str | None = None
    ended_at: str | None = None
    heartbeat_at: str | None = None
    duration_s: float | None = None
    host: str
    pid: int
    run_dir: str
    steps: list[StepRecord] = Field(default_factory=list)
    eta: EtaEstimate = Field(default_factory=EtaEstimate)
    reason: str | None = None
    exit_signal: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    summary: dict[str, Any] = Field(default_factory=dict)
    recommendations: list[Recommendation] = Field(default_factory=list)
    #: The user's parameters (``log_params``), merged; JSON values only.
    params: dict[str, Any] = Field(default_factory=dict)
    #: Files stored with the run (``log_artifact``), one entry per name.
    artifacts: list[ArtifactRecord] = Field(default_factory=list)

    @property
    def steps_done(self) -> int:
        return sum(1 for s in self.steps if s.status is StepStatus.COMPLETED)

    @property
    def steps_total(self) -> int:
        """Declared steps minus skipped ones: skipping a step shrinks N."""
        return sum(1 for s in self.steps if s.status is not StepStatus.SKIPPED)

    @property
    def current_step(self) -> StepRecord | None:
        for step in self.steps:
            if step.status is StepStatus.RUNNING:
                return step
        return None

    def step(self, name: str) -> StepRecord:
        for step in self.steps:
            if step.name == name:
                return step
        known = ", ".join(s.name for s in self.steps)
        raise InvalidInputError(
            f"run {self.run_id} has no step {name!r}; declared steps: {known}",
            field="step",
            value=name,
        )

    def position(self, step: StepRecord) -> int:
        """1-based position of ``step`` among the steps that count (not skipped)."""
        counted = [s for s in self.steps if s.status is not StepStatus.SKIPPED]
        return counted.index(step) + 1 if step in counted else step.order


class PerfResult(_Model):
    """One measurement of a performance suite, judged against the suite's stored history."""

    suite: str
    metric: str
    value: float | None
    unit: str = ""
    higher_is_better: bool = True
    baseline: float | None = None
    baseline_runs: int = 0
    ratio: float | None = None
    status: str = "passed"
    note: str | None = None
    created_at: str = ""
    run_id: str | None = None


__all__ = [
    "SCHEMA_VERSION",
    "ArtifactRecord",
    "EtaEstimate",
    "PerfResult",
    "Recommendation",
    "RunRecord",
    "RunStatus",
    "Severity",
    "StepRecord",
    "StepSpec",
    "StepStatus",
    "step_specs",
]
