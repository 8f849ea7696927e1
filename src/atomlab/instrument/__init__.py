"""Talk to a Nanonis SPM controller (or the atomlab simulator) over the Nanonis TCP protocol.

::

    from atomlab.instrument import NanonisClient, WriteGuard, load_catalog

    with NanonisClient("127.0.0.1", 6501) as nanonis:
        frame = nanonis.call("Scan.FrameGet")                 # named fields: frame["width_m"]
        guard = WriteGuard(nanonis, load_catalog(), allow_writes=True)
        guard.set("bias_v", 0.5)                              # bounded, ramped, audited

The protocol codec (:mod:`atomlab.instrument.protocol`) and the command table
(:mod:`atomlab.instrument.commands`) are shared with the simulator. The QCodes driver lives in
:mod:`atomlab.instrument.qcodes_driver` (needs the ``qcodes`` extra).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atomlab.instrument.catalog import (
        ArgBounds,
        Catalog,
        CatalogEntry,
        CommandPolicy,
        Limits,
        Safety,
        Source,
        load_catalog,
        parse_catalog,
        read_value,
        read_values,
    )
    from atomlab.instrument.client import (
        DEFAULT_CALL_TIMEOUT_S,
        DEFAULT_CONNECT_TIMEOUT_S,
        DEFAULT_PORT,
        DEFAULT_PORTS,
        NanonisClient,
        PortProbe,
        probe_port,
        probe_ports,
        signal_index,
    )
    from atomlab.instrument.commands import (
        COMMANDS,
        CommandSpec,
        Field,
        WireType,
        is_known,
        lookup,
    )
    from atomlab.instrument.errors import (
        ArgumentError,
        FramingError,
        InstrumentError,
        ProtocolError,
        UnknownCommandError,
    )
    from atomlab.instrument.guard import (
        AUDIT_LOG_NAME,
        CommandEvent,
        CommandResult,
        GuardEvent,
        WriteEvent,
        WriteGuard,
        WriteListener,
        WritePlan,
        WriteResult,
        read_audit_log,
    )
    from atomlab.instrument.protocol import ErrorInfo, Reply
    from atomlab.instrument.spectroscopy import (
        BiasSweep,
        Spectroscopy,
        Spectrum,
        SpectrumPlan,
        ZSweep,
        barrier_height_ev,
    )

# Where each public name lives. The package imports a module only when one of its names is first
# used (PEP 562): the command line's fast path needs the client and the codec, not the catalog's
# pydantic models, YAML or the guard.
_HOMES: dict[str, str] = {
    **dict.fromkeys(
        (
            "ArgBounds",
            "Catalog",
            "CatalogEntry",
            "CommandPolicy",
            "Limits",
            "Safety",
            "Source",
            "load_catalog",
            "parse_catalog",
            "read_value",
            "read_values",
        ),
        "catalog",
    ),
    **dict.fromkeys(
        (
            "DEFAULT_CALL_TIMEOUT_S",
            "DEFAULT_CONNECT_TIMEOUT_S",
            "DEFAULT_PORT",
            "DEFAULT_PORTS",
            "NanonisClient",
            "PortProbe",
            "probe_port",
            "probe_ports",
            "signal_index",
        ),
        "client",
    ),
    **dict.fromkeys(
        ("COMMANDS", "CommandSpec", "Field", "WireType", "is_known", "lookup"), "commands"
    ),
    **dict.fromkeys(
        (
            "ArgumentError",
            "FramingError",
            "InstrumentError",
            "ProtocolError",
            "UnknownCommandError",
        ),
        "errors",
    ),
    **dict.fromkeys(
        (
            "AUDIT_LOG_NAME",
            "CommandEvent",
            "CommandResult",
            "GuardEvent",
            "WriteEvent",
            "WriteGuard",
            "WriteListener",
            "WritePlan",
            "WriteResult",
            "read_audit_log",
        ),
        "guard",
    ),
    **dict.fromkeys(("ErrorInfo", "Reply"), "protocol"),
    **dict.fromkeys(
        (
            "BiasSweep",
            "Spectroscopy",
            "Spectrum",
            "SpectrumPlan",
            "ZSweep",
            "barrier_height_ev",
        ),
        "spectroscopy",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'atomlab.instrument' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"atomlab.instrument.{home}"), name)
    globals()[name] = value  # the next use is a plain attribute lookup
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
    "AUDIT_LOG_NAME",
    "COMMANDS",
    "DEFAULT_CALL_TIMEOUT_S",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_PORT",
    "DEFAULT_PORTS",
    "ArgBounds",
    "ArgumentError",
    "BiasSweep",
    "Catalog",
    "CatalogEntry",
    "CommandEvent",
    "CommandPolicy",
    "CommandResult",
    "CommandSpec",
    "ErrorInfo",
    "Field",
    "FramingError",
    "GuardEvent",
    "InstrumentError",
    "Limits",
    "NanonisClient",
    "PortProbe",
    "ProtocolError",
    "Reply",
    "Safety",
    "Source",
    "Spectroscopy",
    "Spectrum",
    "SpectrumPlan",
    "UnknownCommandError",
    "WireType",
    "WriteEvent",
    "WriteGuard",
    "WriteListener",
    "WritePlan",
    "WriteResult",
    "ZSweep",
    "barrier_height_ev",
    "is_known",
    "load_catalog",
    "lookup",
    "parse_catalog",
    "probe_port",
    "probe_ports",
    "read_audit_log",
    "read_value",
    "read_values",
    "signal_index",
]
