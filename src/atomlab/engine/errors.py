"""The ways a pipeline run goes wrong, each tied to the CLI exit code it ends with.

Stage failures carry the item id and the stage key (``features@3``, ``mapping.data@3``) so a user
can find the item in the input and the rejects file.
"""

from __future__ import annotations

from typing import Any

from atomlab.core.errors import ConfigError, InvalidInputError, PolicyRefusedError


class PipelineError(ConfigError):
    """A pipeline definition (YAML, prompt template, catalogue) is invalid."""

    type_name = "pipeline_error"


class ProcessingError(InvalidInputError):
    """A stage of one item failed: the provider's answer was unusable or the call failed.

    ``item_id`` and ``stage`` say where; ``request_id`` finds the call in the provider's logs.
    """

    type_name = "processing_error"

    def __init__(
        self,
        message: str,
        *,
        item_id: str,
        stage: str,
        request_id: str | None = None,
        **details: Any,
    ) -> None:
        super().__init__(
            f"item {item_id!r}, stage {stage!r}: {message}",
            item_id=item_id,
            stage=stage,
            **({"request_id": request_id} if request_id else {}),
            **details,
        )
        self.item_id = item_id
        self.stage = stage
        self.request_id = request_id


class MappingError(ProcessingError):
    """A mapping stage's answer did not map its sources onto the catalogue."""

    type_name = "mapping_error"


class ResumeRefusedError(PolicyRefusedError):
    """``--resume`` was asked for, but the journal belongs to a different run."""

    type_name = "resume_refused"


class JournalDamagedError(InvalidInputError):
    """A run journal cannot be read (not a database, malformed, inconsistent)."""

    type_name = "journal_damaged"


class RunBusyError(PolicyRefusedError):
    """Another process is running the pipeline into the same output file."""

    type_name = "run_in_progress"


__all__ = [
    "JournalDamagedError",
    "MappingError",
    "PipelineError",
    "ProcessingError",
    "ResumeRefusedError",
    "RunBusyError",
]
