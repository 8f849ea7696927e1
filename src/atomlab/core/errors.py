"""One exception hierarchy for atomlab, each class tied to the process exit code the CLI uses.

Raise the most specific class with a message a user can act on: name the field, the value and
the fix. The CLI maps any :class:`AtomlabError` to its ``exit_code`` and prints the message; every
other exception is "unexpected" (exit 1).
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, ClassVar


class ExitCode(IntEnum):
    """Process exit codes shared by every ``atomlab`` command (see docs/cli.md)."""

    OK = 0
    UNEXPECTED = 1
    POLICY_REFUSED = 2
    INVALID_INPUT = 3
    UNAVAILABLE = 4
    CONNECTION = 5
    INTERRUPTED = 130
    TERMINATED = 143


class AtomlabError(Exception):
    """Base of every error atomlab raises on purpose."""

    exit_code: ClassVar[ExitCode] = ExitCode.UNEXPECTED
    type_name: ClassVar[str] = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` member of the CLI's JSON error envelope."""
        payload: dict[str, Any] = {"type": self.type_name, "message": self.message}
        if self.details:
            payload["details"] = self.details
        return payload


class PolicyRefusedError(AtomlabError):
    """A guard or safety policy refused the request; nothing was done."""

    exit_code = ExitCode.POLICY_REFUSED
    type_name = "policy_refused"


class InvalidInputError(AtomlabError):
    """Input (an argument, a setting, a file) is invalid; nothing was done."""

    exit_code = ExitCode.INVALID_INPUT
    type_name = "invalid_input"


class ConfigError(InvalidInputError):
    """A setting has an invalid value."""

    type_name = "config_error"


class NotFoundError(InvalidInputError):
    """A named thing (a run, an action, a file) does not exist."""

    type_name = "not_found"


class UnavailableError(AtomlabError):
    """A needed resource is missing: an optional extra, a device, a free port."""

    exit_code = ExitCode.UNAVAILABLE
    type_name = "unavailable"


class ConnectionFailedError(AtomlabError):
    """A peer could not be reached or answered too late."""

    exit_code = ExitCode.CONNECTION
    type_name = "connection_error"


class OperationTimeoutError(ConnectionFailedError):
    """A call to a peer did not complete within its timeout."""

    type_name = "timeout"


class CircuitOpenError(UnavailableError):
    """A circuit breaker is open: the call was refused without reaching the peer."""

    type_name = "circuit_open"

    def __init__(self, name: str, retry_in_s: float) -> None:
        super().__init__(
            f"circuit {name!r} is open after repeated failures; retry in {retry_in_s:.1f} s",
            breaker=name,
            retry_in_s=round(retry_in_s, 3),
        )
        self.breaker = name
        self.retry_in_s = retry_in_s


class InterruptedRunError(AtomlabError):
    """The operator interrupted the command (Ctrl-C)."""

    exit_code = ExitCode.INTERRUPTED
    type_name = "interrupted"


class TerminatedError(AtomlabError):
    """The process received SIGTERM and stopped cleanly."""

    exit_code = ExitCode.TERMINATED
    type_name = "terminated"


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code a command ends with when ``exc`` escapes it."""
    if isinstance(exc, AtomlabError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    return ExitCode.UNEXPECTED
