"""A QCodes driver for a Nanonis STM: one Parameter per catalog entry, writes through the guard.

Needs the ``qcodes`` extra (``pip install 'atomlab[qcodes]'``); the rest of
:mod:`atomlab.instrument` works without it::

    stm = NanonisSTM("stm", host="127.0.0.1", port=6501, allow_writes=True)
    station = qcodes.Station(stm)
    stm.bias_v(0.5)          # bounded, ramped and audited by the WriteGuard
    stm.scan_frame_height_m()
    stm.spectrum_start_v(-0.5); stm.spectrum_end_v(0.5); stm.spectrum_points(101)
    stm.spectrum_current_a()  # an I(V) spectrum (ParameterWithSetpoints over spectrum_bias_v)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from atomlab.core.errors import InvalidInputError, UnavailableError
from atomlab.instrument.catalog import Catalog, CatalogEntry, load_catalog, read_value
from atomlab.instrument.client import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_HOST,
    DEFAULT_PORT,
    NanonisClient,
)
from atomlab.instrument.guard import WriteGuard
from atomlab.instrument.spectroscopy import BiasSweep, Spectroscopy, Spectrum

try:
    import numpy as np
    from qcodes.instrument import Instrument
    from qcodes.parameters import Parameter, ParameterWithSetpoints
    from qcodes.validators import Arrays, Bool, Ints, Numbers, Validator
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
        audit_log: Path | str | None = None,
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
            self.client,
            self.catalog,
            allow_writes=allow_writes,
            audit_log=_audit_path(audit_log),
        )
        if who:
            self.guard.who = who
        for entry in self.catalog:
            self._add_entry(entry)
        self.spectroscopy = Spectroscopy(self.client, self.guard)
        self.last_spectrum: Spectrum | None = None
        self._add_spectrum_parameters()
        self.client.connect()

    # ------------------------------------------------------------------ spectrum
    def _add_spectrum_parameters(self) -> None:
        """An I(V) spectrum as QCodes parameters: the sweep's settings, the bias axis, and
        ``spectrum_current_a`` / ``spectrum_didv_s`` with it as setpoints. Getting the current
        takes a spectrum through the guard; dI/dV comes from the same spectrum."""
        for name, label, unit, default, vals in (
            ("spectrum_start_v", "Spectrum start", "V", -1.0, Numbers(-10.0, 10.0)),
            ("spectrum_end_v", "Spectrum end", "V", 1.0, Numbers(-10.0, 10.0)),
            ("spectrum_points", "Spectrum points", "", 201, Ints(2, 10_000)),
            ("spectrum_integration_s", "Integration time", "s", 0.01, Numbers(0.0, 10.0)),
            ("spectrum_lockin_amplitude_v", "Lock-in amplitude", "V", 0.0, Numbers(0.0, 0.1)),
        ):
            self.add_parameter(
                name,
                parameter_class=Parameter,
                label=label,
                unit=unit,
                initial_value=default,
                get_cmd=None,
                set_cmd=None,
                vals=vals,
            )
        self.add_parameter(
            "spectrum_backward",
            parameter_class=Parameter,
            label="Spectrum backward sweep",
            initial_value=False,
            get_cmd=None,
            set_cmd=None,
            vals=Bool(),
        )
        shape = (self.parameters["spectrum_points"],)
        self.add_parameter(
            "spectrum_bias_v",
            parameter_class=Parameter,
            label="Bias",
            unit="V",
            get_cmd=self._bias_axis,
            set_cmd=False,
            vals=Arrays(shape=shape),
        )
        self.add_parameter(
            "spectrum_current_a",
            parameter_class=ParameterWithSetpoints,
            label="Tunnel current",
            unit="A",
            setpoints=(self.parameters["spectrum_bias_v"],),
            get_cmd=self._take_spectrum,
            set_cmd=False,
            vals=Arrays(shape=shape),
            docstring="I(V) at the feedback's height; taking it runs BiasSpectr.Start.",
        )
        self.add_parameter(
            "spectrum_didv_s",
            parameter_class=ParameterWithSetpoints,
            label="dI/dV",
            unit="S",
            setpoints=(self.parameters["spectrum_bias_v"],),
            get_cmd=self._didv,
            set_cmd=False,
            vals=Arrays(shape=shape),
            docstring="dI/dV of the last spectrum (lock-in when its amplitude is > 0).",
        )

    def _sweep(self) -> BiasSweep:
        amplitude = float(self.parameters["spectrum_lockin_amplitude_v"]())
        return BiasSweep(
            start_v=float(self.parameters["spectrum_start_v"]()),
            end_v=float(self.parameters["spectrum_end_v"]()),
            points=int(self.parameters["spectrum_points"]()),
            backward=bool(self.parameters["spectrum_backward"]()),
            integration_s=float(self.parameters["spectrum_integration_s"]()),
            lockin_amplitude_v=amplitude or None,
        )

    def _bias_axis(self) -> Any:
        sweep = self._sweep()
        return np.linspace(sweep.start_v, sweep.end_v, sweep.points)

    def _take_spectrum(self) -> Any:
        spectrum = self.spectroscopy.bias(self._sweep())
        assert isinstance(spectrum, Spectrum)
        self.last_spectrum = spectrum
        return np.asarray(spectrum["Current (A)"], dtype=float)

    def _didv(self) -> Any:
        spectrum = self.last_spectrum
        if spectrum is None or spectrum.points != int(self.parameters["spectrum_points"]()):
            self._take_spectrum()
            spectrum = self.last_spectrum
        assert spectrum is not None
        return np.asarray(spectrum.didv(), dtype=float)

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


def _audit_path(audit_log: Path | str | None) -> Path | None:
    """The audit log as a Path (a str is fine too, as anywhere a path is taken)."""
    if audit_log is None or isinstance(audit_log, Path):
        return audit_log
    if not isinstance(audit_log, str) or not audit_log.strip():
        raise InvalidInputError(
            f"audit_log must be a path (str or Path), got {audit_log!r}", field="audit_log"
        )
    return Path(audit_log).expanduser()


def _validator(entry: CatalogEntry) -> Validator[Any] | None:
    if entry.limits is None:
        return None
    if entry.type in ("int", "bool"):
        return Ints(int(entry.limits.min), int(entry.limits.max))
    return Numbers(entry.limits.min, entry.limits.max)
