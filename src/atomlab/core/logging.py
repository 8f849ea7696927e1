"""Structured logging on stderr (console or JSON lines) with a correlation id in a contextvar.

configure_logging(level="INFO", fmt="json")
with correlation_scope() as cid:      # every line logged inside carries correlation_id=cid
    get_logger(__name__).info("scan.started", frame=3)
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["console", "json"]

_correlation_id: ContextVar[str | None] = ContextVar("atomlab_correlation_id", default=None)


def current_correlation_id() -> str | None:
    """The correlation id of the current scope, or None outside any scope."""
    return _correlation_id.get()


@contextmanager
def correlation_scope(correlation_id: str | None = None) -> Iterator[str]:
    """Bind a correlation id (a new one unless given) for everything logged inside the block."""
    cid = correlation_id or uuid.uuid4().hex[:16]
    token = _correlation_id.set(cid)
    try:
        yield cid
    finally:
        _correlation_id.reset(token)


def _add_correlation_id(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    cid = _correlation_id.get()
    if cid is not None:
        event_dict.setdefault("correlation_id", cid)
    return event_dict


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the moment of writing.

    Binding the stream object at configuration time breaks when it is later replaced and closed
    (test capture, daemonisation): every late log line would then fail with "closed file".
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(
    level: str = "INFO", fmt: LogFormat = "console", stream: TextIO | None = None
) -> None:
    """Route structlog and the standard library's logging to ``stream`` (stderr by default)."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    out: Any = stream if stream is not None else _CurrentStderr()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        _add_correlation_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_atomlab", False):
            root.removeHandler(existing)
    handler._atomlab = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(numeric)


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger; keyword arguments are bound to every line it logs."""
    return structlog.get_logger(name, **initial)
