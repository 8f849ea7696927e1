"""Talk to a Nanonis SPM controller (or the atomlab simulator) over the Nanonis TCP protocol."""

from __future__ import annotations

from atomlab.instrument.commands import COMMANDS, CommandSpec, Field, WireType, is_known, lookup
from atomlab.instrument.errors import (
    ArgumentError,
    FramingError,
    InstrumentError,
    ProtocolError,
    UnknownCommandError,
)
from atomlab.instrument.protocol import ErrorInfo, Reply

__all__ = [
    "COMMANDS",
    "ArgumentError",
    "CommandSpec",
    "ErrorInfo",
    "Field",
    "FramingError",
    "InstrumentError",
    "ProtocolError",
    "Reply",
    "UnknownCommandError",
    "WireType",
    "is_known",
    "lookup",
]
