"""Point spectroscopy on a Nanonis controller: I(V) and dI/dV (BiasSpectr), I(z) (ZSpectr).

A spectrum configures the controller's spectroscopy module (recorded channels, by name, sent as
signal indexes as the vendor's example scripts do; range, points,
timing, the lock-in for dI/dV), starts it and returns the data by channel name. Every setting
that moves the bias or the tip, and the start itself, goes through
:meth:`~atomlab.instrument.guard.WriteGuard.command`, so the catalog's ``commands`` section
bounds it (bias range, Z offset, approach distance, modulation amplitude), writes must be
allowed, everything is audited, and a trajectory monitor records the spectrum, data included,
as a ``command`` action. Only the channel list (an array, which the guard cannot bound) is
sent directly::

    spectroscopy = Spectroscopy(client, guard)
    spectrum = spectroscopy.bias(BiasSweep(start_v=-1.0, end_v=1.0, lockin_amplitude_v=0.01))
    spectrum.sweep_values, spectrum["Current (A)"], spectrum.didv()
    z = spectroscopy.z(ZSweep(distance_m=3e-10))
    barrier_height_ev(z.sweep_values, z["Current (A)"])     # about φ − |V|/2

Without a guard (``Spectroscopy(client)``) the commands go straight to the client.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

from atomlab.core.errors import InvalidInputError, NotFoundError
from atomlab.instrument.client import NanonisClient
from atomlab.instrument.guard import WriteGuard
from atomlab.instrument.protocol import shortest_float32

HBAR_J_S: Final = 1.054571817e-34
ELECTRON_MASS_KG: Final = 9.1093837015e-31
EV_J: Final = 1.602176634e-19
MAX_POINTS: Final = 10_000
DEFAULT_CHANNELS: Final = ("Current (A)",)
LOCKIN_CHANNEL: Final = "LI Demod 1 X (A)"
LOCKIN_MODULATOR: Final = 1

Kind = Literal["bias", "z"]


@dataclass(frozen=True)
class BiasSweep:
    """A bias spectroscopy: the sweep, its timing and what to record.

    ``lockin_amplitude_v`` switches lock-in modulator 1 on with that amplitude (on the bias)
    for the sweep and records "LI Demod 1 X (A)", whose ratio to the amplitude is dI/dV.
    Z is held at the feedback's height during the sweep and the bias is put back afterwards.
    """

    start_v: float = -1.0
    end_v: float = 1.0
    points: int = 201
    sweeps: int = 1
    backward: bool = False
    settling_s: float = 0.002
    integration_s: float = 0.01
    z_offset_m: float = 0.0
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    lockin_amplitude_v: float | None = None
    autosave: bool = False
    """Let the controller also save the spectrum as a file (its own base name and folder)."""


@dataclass(frozen=True)
class ZSweep:
    """A Z spectroscopy from ``offset_m`` over ``distance_m`` (negative: towards the sample).

    ``retract_current_a``: the controller's auto-retract stops the sweep when the current
    passes it (None: no retract condition).
    """

    offset_m: float = 0.0
    distance_m: float = 5e-10
    points: int = 128
    sweeps: int = 1
    backward: bool = False
    settling_s: float = 0.002
    integration_s: float = 0.01
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    retract_current_a: float | None = 5e-9
    autosave: bool = False


@dataclass(frozen=True)
class Spectrum:
    """A measured spectrum: columns by channel name, the swept one first."""

    kind: Kind
    command: str
    sweep_channel: str
    channels: dict[str, list[float]]
    parameters: list[float]
    settings: dict[str, Any]
    command_id: str | None = None
    at_utc: str | None = None

    @property
    def sweep_values(self) -> list[float]:
        return self.channels[self.sweep_channel]

    @property
    def points(self) -> int:
        return len(self.sweep_values)

    def __getitem__(self, name: str) -> list[float]:
        try:
            return self.channels[name]
        except KeyError:
            raise NotFoundError(
                f"the spectrum has no channel {name!r}; channels: {list(self.channels)}",
                name=name,
            ) from None

    def didv(self) -> list[float]:
        """dI/dV in siemens: the lock-in X over the modulation amplitude when it was recorded,
        else the numerical derivative of the current."""
        amplitude = self.settings.get("lockin_amplitude_v")
        if LOCKIN_CHANNEL in self.channels and amplitude:
            return [x / amplitude for x in self.channels[LOCKIN_CHANNEL]]
        return derivative(self.sweep_values, self["Current (A)"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SpectrumPlan:
    """What a spectrum would send (``plan_only``): the commands in order, nothing sent."""

    kind: Kind
    commands: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "outcome": "dry_run", "commands": self.commands}


def derivative(x: Sequence[float], y: Sequence[float]) -> list[float]:
    """dy/dx by central differences (one-sided at the ends); NaN where y is NaN."""
    n = len(x)
    if n != len(y) or n < 2:
        raise InvalidInputError("a derivative needs two equally long series of 2+ points")
    out: list[float] = []
    for i in range(n):
        lo, hi = max(i - 1, 0), min(i + 1, n - 1)
        dx = x[hi] - x[lo]
        out.append((y[hi] - y[lo]) / dx if dx else math.nan)
    return out


FIT_FLOOR: Final = 0.02
"""Currents below this fraction of the largest are left out of an I(z) fit: there the noise,
not the exponential, sets ln|I|."""


def decay_constant(
    z_m: Sequence[float], current_a: Sequence[float], *, floor: float = FIT_FLOOR
) -> float:
    """κ (1/m) from a least-squares line through ln|I| against z: I ∝ exp(−2κz)."""
    finite = [
        (z, abs(i))
        for z, i in zip(z_m, current_a, strict=True)
        if math.isfinite(z) and math.isfinite(i) and i != 0.0
    ]
    largest = max((i for _, i in finite), default=0.0)
    pairs = [(z, math.log(i)) for z, i in finite if i >= floor * largest]
    n = len(pairs)
    if n < 2:
        raise InvalidInputError("an I(z) fit needs at least two finite, non-zero currents")
    mean_z = sum(z for z, _ in pairs) / n
    mean_l = sum(v for _, v in pairs) / n
    sxx = sum((z - mean_z) ** 2 for z, _ in pairs)
    if sxx == 0.0:
        raise InvalidInputError("an I(z) fit needs at least two different heights")
    sxy = sum((z - mean_z) * (v - mean_l) for z, v in pairs)
    return -0.5 * sxy / sxx


def barrier_height_ev(
    z_m: Sequence[float], current_a: Sequence[float], *, floor: float = FIT_FLOOR
) -> float:
    """The apparent tunnelling barrier φ = ħ²κ²/2m in eV from an I(z) spectrum."""
    kappa = decay_constant(z_m, current_a, floor=floor)
    return math.copysign((HBAR_J_S * kappa) ** 2 / (2.0 * ELECTRON_MASS_KG * EV_J), kappa)


class Spectroscopy:
    """Takes spectra on one instrument, through ``guard`` when given (see the module doc)."""

    def __init__(self, client: NanonisClient, guard: WriteGuard | None = None) -> None:
        self.client = client
        self.guard = guard
        self._planned: list[dict[str, Any]] | None = None

    # ------------------------------------------------------------------ public
    def bias(self, sweep: BiasSweep, *, plan_only: bool = False) -> Spectrum | SpectrumPlan:
        """Take (or with ``plan_only`` only plan) a bias spectrum."""
        _check_sweep(sweep.points, sweep.sweeps, sweep.settling_s, sweep.integration_s)
        for name, value in (("start_v", sweep.start_v), ("end_v", sweep.end_v)):
            _finite(name, value)
        if sweep.start_v == sweep.end_v:
            raise InvalidInputError("start_v and end_v must differ", field="end_v")
        _finite("z_offset_m", sweep.z_offset_m)
        lockin = sweep.lockin_amplitude_v
        if lockin is not None and not (math.isfinite(lockin) and lockin > 0):
            raise InvalidInputError(
                f"lockin_amplitude_v must be a positive number, got {lockin!r}",
                field="lockin_amplitude_v",
            )
        channels = list(dict.fromkeys(sweep.channels))
        if lockin is not None and LOCKIN_CHANNEL not in channels:
            channels.append(LOCKIN_CHANNEL)
        self._begin(plan_only)
        indexes = self._channel_indexes(channels)
        self._direct("BiasSpectr.ChsSet", {"channel_indexes": indexes})
        self._guarded(
            "BiasSpectr.LimitsSet", {"start_value_v": sweep.start_v, "end_value_v": sweep.end_v}
        )
        self._guarded(
            "BiasSpectr.PropsSet",
            {
                "save_all": 2,
                "number_of_sweeps": sweep.sweeps,
                "backward_sweep": 1 if sweep.backward else 2,
                "number_of_points": sweep.points,
                "z_offset_m": sweep.z_offset_m,
                "autosave": 1 if sweep.autosave else 2,
                "show_save_dialog": 2,
            },
        )
        self._guarded(
            "BiasSpectr.TimingSet",
            {
                "z_averaging_time_s": 0.1,
                "z_offset_m": sweep.z_offset_m,
                "initial_settling_time_s": max(sweep.settling_s, 0.002),
                "maximum_slew_rate_v_s": 10.0,
                "settling_time_s": sweep.settling_s,
                "integration_time_s": sweep.integration_s,
                "end_settling_time_s": sweep.settling_s,
                "z_control_time_s": 0.1,
            },
        )
        self._guarded(
            "BiasSpectr.AdvPropsSet",
            {"reset_bias": 1, "z_controller_hold": 1, "record_final_z": 2, "lockin_run": 2},
        )
        if lockin is not None:
            self._guarded(
                "LockIn.ModAmpSet", {"modulator_number": LOCKIN_MODULATOR, "amplitude": lockin}
            )
            self._guarded("LockIn.ModOnOffSet", {"modulator_number": LOCKIN_MODULATOR, "on": 1})
        try:
            return self._start("bias", "BiasSpectr.Start", asdict(sweep))
        finally:
            if lockin is not None and not plan_only:
                self._guarded("LockIn.ModOnOffSet", {"modulator_number": LOCKIN_MODULATOR, "on": 0})

    def z(self, sweep: ZSweep, *, plan_only: bool = False) -> Spectrum | SpectrumPlan:
        """Take (or with ``plan_only`` only plan) a Z spectrum."""
        _check_sweep(sweep.points, sweep.sweeps, sweep.settling_s, sweep.integration_s)
        _finite("offset_m", sweep.offset_m)
        _finite("distance_m", sweep.distance_m)
        if sweep.distance_m == 0.0:
            raise InvalidInputError("distance_m must not be 0", field="distance_m")
        retract = sweep.retract_current_a
        if retract is not None and not (math.isfinite(retract) and retract > 0):
            raise InvalidInputError(
                f"retract_current_a must be a positive number, got {retract!r}",
                field="retract_current_a",
            )
        channels = list(dict.fromkeys(sweep.channels))
        self._begin(plan_only)
        indexes = self._channel_indexes(channels)
        self._direct("ZSpectr.ChsSet", {"channel_indexes": indexes})
        self._guarded(
            "ZSpectr.RangeSet",
            {"z_offset_m": sweep.offset_m, "z_sweep_distance_m": sweep.distance_m},
        )
        self._guarded(
            "ZSpectr.PropsSet",
            {
                "backward_sweep": 1 if sweep.backward else 2,
                "number_of_points": sweep.points,
                "number_of_sweeps": sweep.sweeps,
                "autosave": 1 if sweep.autosave else 2,
                "show_save_dialog": 2,
                "save_all": 2,
            },
        )
        self._guarded(
            "ZSpectr.TimingSet",
            {
                "z_averaging_time_s": 0.1,
                "initial_settling_time_s": max(sweep.settling_s, 0.002),
                "maximum_slew_rate_v_s": 1e-6,
                "settling_time_s": sweep.settling_s,
                "integration_time_s": sweep.integration_s,
                "end_settling_time_s": sweep.settling_s,
                "z_control_time_s": 0.1,
            },
        )
        self._guarded(
            "ZSpectr.RetractSet",
            {
                "enable": 2 if retract is None else 1,
                "threshold": retract or 1e-8,
                "signal_index": -1 if retract is None else self._signal_index("Current (A)"),
                "comparison": 0,
            },
        )
        return self._start("z", "ZSpectr.Start", asdict(sweep))

    # ------------------------------------------------------------------ plumbing
    def _begin(self, plan_only: bool) -> None:
        self._planned = [] if plan_only else None

    def _direct(self, command: str, args: Mapping[str, Any]) -> None:
        if self._planned is not None:
            self._planned.append({"command": command, "args": dict(args), "guarded": False})
            return
        self.client.call(command, args)

    def _guarded(self, command: str, args: Mapping[str, Any]) -> dict[str, Any]:
        plan_only = self._planned is not None
        if self.guard is None:
            if plan_only:
                assert self._planned is not None
                self._planned.append({"command": command, "args": dict(args), "guarded": False})
                return {}
            return dict(self.client.call(command, args).values)
        result = self.guard.command(command, args, plan_only=plan_only)
        if self._planned is not None:
            self._planned.append({"command": command, "args": result.args, "guarded": True})
        return result.reply

    def _start(self, kind: Kind, command: str, settings: dict[str, Any]) -> Spectrum | SpectrumPlan:
        if self._planned is not None:
            self._guarded(command, {"get_data": 1})
            plan = SpectrumPlan(kind, self._planned)
            self._planned = None
            return plan
        command_id: str | None = None
        at_utc: str | None = None
        if self.guard is not None:
            result = self.guard.command(command, {"get_data": 1})
            reply, command_id, at_utc = result.reply, result.id, result.at_utc
        else:
            reply = dict(self.client.call(command, {"get_data": 1}).values)
        names = list(reply.get("channels_names") or [])
        rows = list(reply.get("data") or [])
        if not names or len(names) != len(rows):
            raise InvalidInputError(
                f"{command} returned {len(names)} channel names for {len(rows)} data rows",
                command=command,
            )
        return Spectrum(
            kind=kind,
            command=command,
            sweep_channel=names[0],
            # float32 on the wire: keep the shortest decimal that is the same float32
            channels={
                name: [shortest_float32(v) for v in row]
                for name, row in zip(names, rows, strict=True)
            },
            parameters=[shortest_float32(v) for v in reply.get("parameters") or []],
            settings=settings,
            command_id=command_id,
            at_utc=at_utc,
        )

    def _channel_indexes(self, channels: Sequence[str]) -> list[int]:
        """Signal indexes (0..127, as the vendor's scripts pass them) of the channels by name."""
        names = self.client.signal_names()
        indexes: list[int] = []
        for channel in channels:
            found = next(
                (
                    i
                    for i, name in enumerate(names)
                    if name == channel or name.split(" (", 1)[0] == channel
                ),
                None,
            )
            if found is None:
                raise NotFoundError(
                    f"no signal {channel!r} on {self.client.address}; signals include "
                    f"{names[:8]}... (Signals.NamesGet)",
                    channel=channel,
                )
            indexes.append(found)
        return indexes

    def _signal_index(self, name: str) -> int:
        return self.client.signal_index(name)


def _finite(name: str, value: float) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}", field=name)


def _check_sweep(points: int, sweeps: int, settling_s: float, integration_s: float) -> None:
    if not 2 <= points <= MAX_POINTS:
        raise InvalidInputError(f"points must be 2..{MAX_POINTS}, got {points}", field="points")
    if not 1 <= sweeps <= 100:
        raise InvalidInputError(f"sweeps must be 1..100, got {sweeps}", field="sweeps")
    for name, value in (("settling_s", settling_s), ("integration_s", integration_s)):
        if not (math.isfinite(value) and 0 <= value <= 10):
            raise InvalidInputError(f"{name} must be 0..10 s, got {value!r}", field=name)
