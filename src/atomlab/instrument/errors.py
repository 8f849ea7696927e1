"""The ways talking to a Nanonis instrument goes wrong, each tied to a CLI exit code."""

from __future__ import annotations

from typing import Any

from atomlab.core.errors import InvalidInputError


class ProtocolError(InvalidInputError):
    """Bytes that do not follow the Nanonis TCP framing or a command's signature."""

    type_name = "protocol_error"


class FramingError(ProtocolError):
    """A header that cannot be a Nanonis header (garbage bytes); the connection cannot recover."""

    type_name = "framing_error"


class UnknownCommandError(ProtocolError):
    """A command name that is not in the command table."""

    type_name = "unknown_command"


class ArgumentError(ProtocolError):
    """Arguments (or a request body) that do not match the command's signature."""

    type_name = "bad_arguments"


class InstrumentError(InvalidInputError):
    """The instrument answered a command with its error section set."""

    type_name = "instrument_error"

    def __init__(self, command: str, description: str, status: int = 1, **details: Any) -> None:
        super().__init__(
            f"{command} failed on the instrument: {description}",
            command=command,
            status=status,
            **details,
        )
        self.command = command
        self.description = description
        self.status = status
