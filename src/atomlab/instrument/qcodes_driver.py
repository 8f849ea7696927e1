"""A QCodes driver for a Nanonis STM: one Parameter per catalog entry, writes through the guard.

Needs the ``qcodes`` extra (``pip install 'atomlab[qcodes]'``); the rest of
:mod:`atomlab.instrument` works without it::

    stm = NanonisSTM("stm", host="127.0.0.1", port=6501, allow_writes=True)
    station = qcodes.Station(stm)
    stm.bias_v(0.5)          # bounded, ramped and audited by the WriteGuard
    stm.scan_frame_height_m()
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from atomlab.core.errors import UnavailableError
from atomlab.instrument.catalog import Catalog, CatalogEntry, load_catalog, read_value
from atomlab.instrument.client import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_PORT,
    NanonisClient,
)
from atomlab.instrument.guard import WriteGuard

try:
    from qcodes.instrument import Instrument
    from qcodes.parameters import Parameter
    from qcodes.validators import Ints, Numbers, Validator
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise UnavailableError(
        "the QCodes driver needs qcodes; install it with: pip install 'atomlab[qcodes]'"
    ) from exc


class NanonisSTM(Instrument):
    """A Nanonis STM (or the atomlab simulator) as a QCodes instrument.

    Signals are read-only parameters; specs are settable parameters whose set goes through a
    :class:`~atomlab.instrument.guard.WriteGuard` (writes are refused unless ``allow_writes``).
    """

    def __init__(
        self,
        name: str,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        catalog: Catalog | None = None,
        allow_writes: bool = False,
        audit_log: Path | None = None,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        client: NanonisClient | None = None,
        who: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, **kwargs)
        self.client = client or NanonisClient(
            host, port, connect_timeout_s=connect_timeout_s, call_timeout_s=call_timeout_s
        )
        self.catalog = catalog or load_catalog()
        self.guard = WriteGuard(
            self.client, self.catalog, allow_writes=allow_writes, audit_log=audit_log
        )
        if who:
            self.guard.who = who
        for entry in self.catalog:
            self._add_entry(entry)
        self.client.connect()

    def _add_entry(self, entry: CatalogEntry) -> None:
        set_cmd: Callable[[float], None] | bool = False
        if entry.writable:
            set_cmd = self._setter(entry)
        self.add_parameter(
            entry.name,
            parameter_class=Parameter,
            label=entry.label,
            unit=entry.unit,
            docstring=entry.description or None,
            get_cmd=self._getter(entry),
            set_cmd=set_cmd,
            vals=_validator(entry),
        )

    def _getter(self, entry: CatalogEntry) -> Callable[[], float | int | bool]:
        return lambda: read_value(self.client, entry)

    def _setter(self, entry: CatalogEntry) -> Callable[[float], None]:
        def set_value(value: float) -> None:
            self.guard.set(entry.name, value)

        return set_value

    def get_idn(self) -> dict[str, str | None]:
        reply = self.client.call("Util.VersionGet", check=False)
        if not reply.ok:
            return {"vendor": "SPECS Nanonis", "model": None, "serial": None, "firmware": None}
        return {
            "vendor": "SPECS Nanonis",
            "model": str(reply["product_line"]) or None,
            "serial": None,
            "firmware": f"{reply['version']} (host {reply['host_app_release']}, "
            f"RT {reply['rt_engine_release']})",
        }

    def close(self) -> None:
        self.client.close()
        super().close()


def _validator(entry: CatalogEntry) -> Validator[Any] | None:
    if entry.limits is None:
        return None
    if entry.type in ("int", "bool"):
        return Ints(int(entry.limits.min), int(entry.limits.max))
    return Numbers(entry.limits.min, entry.limits.max)
