"""Tunnelling through a vacuum barrier into a sample whose density of states varies with place.

The simulated current is the Tersoff–Hamann / WKB picture with a flat tip density of states::

    I(V, gap) = G0 · exp(-2 κ(V) · gap) · N(V),   N(V) = ∫₀^V ρ(E) dE   (E in eV, V in volts)
    κ(V) = √(2 m (φ − e|V|/2)) / ħ                 (a trapezoidal barrier's mean height)

so ``dI/dV`` at small gap-independent bias is proportional to the sample's local density of
states ρ(eV) (scanning tunnelling spectroscopy), and ``d ln I / dz = −2κ`` gives the apparent
barrier height back (``φ_app = ħ²κ²/2m``, about φ − |V|/2).

ρ is the clean surface's — a gentle slope plus a surface-state onset at −0.45 eV — plus one
resonance per nearby defect, Lorentzian in energy and Gaussian in space. Each defect kind has
its own signature, so defects can be told apart in dI/dV:

=============  ====================================================  ===================
kind           signature                                             reach (σ, lateral)
=============  ====================================================  ===================
adatom         sharp unoccupied resonance at +0.45 eV (Γ 0.08 eV)     0.4 nm
vacancy        depletion around the Fermi level (−0.6 at 0 eV, Γ 0.3) 0.5 nm
               and a resonance at +0.8 eV (Γ 0.15)
contamination  broad occupied-state peak at −0.7 eV (Γ 0.25)          1.0 nm
step_edge      kink state at −0.25 eV (Γ 0.10)                        0.6 nm
=============  ====================================================  ===================

Amplitudes scale with the defect's severity (1–10). Everything is in closed form (the integral
of a Lorentzian is an arctangent), so one current evaluation costs a few microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from atomlab.surface import Defect, DefectKind

HBAR_J_S: Final = 1.054571817e-34
ELECTRON_MASS_KG: Final = 9.1093837015e-31
EV_J: Final = 1.602176634e-19
G0_S: Final = 7.748091729e-5
"""Conductance quantum: the current at zero gap into a flat density of states is G0 · V."""
BARRIER_EV: Final = 3.81
"""Mean work function of tip and sample; κ(0) = 1.0e10 m⁻¹ (the current changes e² per Å)."""
MIN_BARRIER_EV: Final = 0.5
"""Field emission is not modelled: the effective barrier never drops below this."""
SURFACE_STATE_EV: Final = -0.45
SURFACE_STATE_WEIGHT: Final = 0.3
SURFACE_STATE_WIDTH_EV: Final = 0.03
DOS_SLOPE_PER_EV: Final = 0.15
LOCKIN_POINTS: Final = 16
"""Quadrature points per modulation period when demodulating the current."""


def kappa_per_m(barrier_ev: float) -> float:
    """Decay constant of the tunnelling current for a barrier of ``barrier_ev``."""
    return math.sqrt(2.0 * ELECTRON_MASS_KG * barrier_ev * EV_J) / HBAR_J_S


def barrier_ev_of_kappa(kappa: float) -> float:
    """The barrier height that gives the decay constant ``kappa`` (the inverse of kappa_per_m)."""
    return (HBAR_J_S * kappa) ** 2 / (2.0 * ELECTRON_MASS_KG * EV_J)


KAPPA_PER_M: Final = kappa_per_m(BARRIER_EV)


@dataclass(frozen=True, slots=True)
class Resonance:
    """A Lorentzian feature of the density of states: ``weight · Γ² / ((E − E0)² + Γ²)``."""

    energy_ev: float
    width_ev: float
    weight: float

    def density(self, energy_ev: float) -> float:
        g = self.width_ev
        return self.weight * g * g / ((energy_ev - self.energy_ev) ** 2 + g * g)

    def integral(self, energy_ev: float) -> float:
        """∫₀^E of :meth:`density`."""
        g = self.width_ev
        return (
            self.weight
            * g
            * (math.atan((energy_ev - self.energy_ev) / g) - math.atan(-self.energy_ev / g))
        )


@dataclass(frozen=True, slots=True)
class DefectSignature:
    resonances: tuple[Resonance, ...]
    reach_m: float


SIGNATURES: Final[dict[DefectKind, DefectSignature]] = {
    DefectKind.ADATOM: DefectSignature((Resonance(0.45, 0.08, 2.5),), 0.4e-9),
    DefectKind.VACANCY: DefectSignature(
        (Resonance(0.0, 0.3, -0.6), Resonance(0.8, 0.15, 1.0)), 0.5e-9
    ),
    DefectKind.CONTAMINATION: DefectSignature((Resonance(-0.7, 0.25, 1.5),), 1.0e-9),
    DefectKind.STEP_EDGE: DefectSignature((Resonance(-0.25, 0.10, 1.2),), 0.6e-9),
}
MAX_REACH_M: Final = 4.0 * max(s.reach_m for s in SIGNATURES.values())


def _step(energy_ev: float) -> float:
    """The surface-state onset: 0 below, 1 above SURFACE_STATE_EV (an arctangent edge)."""
    return 0.5 + math.atan((energy_ev - SURFACE_STATE_EV) / SURFACE_STATE_WIDTH_EV) / math.pi


def _step_integral(energy_ev: float) -> float:
    """∫₀^E of :func:`_step`."""
    w = SURFACE_STATE_WIDTH_EV

    def antiderivative(e: float) -> float:
        u = (e - SURFACE_STATE_EV) / w
        return 0.5 * e + w * (u * math.atan(u) - 0.5 * math.log1p(u * u)) / math.pi

    return antiderivative(energy_ev) - antiderivative(0.0)


_CLEAN_NORM: Final = 1.0 + SURFACE_STATE_WEIGHT * _step(0.0)
"""Scales the clean surface's density to 1 at the Fermi level."""


@dataclass(frozen=True, slots=True)
class LocalDos:
    """The sample's density of states under the tip: the clean surface plus resonances."""

    resonances: tuple[Resonance, ...] = ()

    def density(self, energy_ev: float) -> float:
        """ρ(E), 1 at the Fermi level of the clean surface; never below a small floor."""
        clean = (
            1.0 + DOS_SLOPE_PER_EV * energy_ev + SURFACE_STATE_WEIGHT * _step(energy_ev)
        ) / _CLEAN_NORM
        return max(clean + sum(r.density(energy_ev) for r in self.resonances), 0.02)

    def integral(self, bias_v: float) -> float:
        """N(V) = ∫₀^V ρ(E) dE (negative for negative bias)."""
        clean = (
            bias_v
            + 0.5 * DOS_SLOPE_PER_EV * bias_v * bias_v
            + SURFACE_STATE_WEIGHT * _step_integral(bias_v)
        ) / _CLEAN_NORM
        return clean + sum(r.integral(bias_v) for r in self.resonances)


CLEAN: Final = LocalDos()


def local_dos(defects: Iterable[tuple[Defect, float]]) -> LocalDos:
    """The density of states at a point, from ``(defect, distance in metres)`` pairs."""
    resonances: list[Resonance] = []
    for defect, distance in defects:
        signature = SIGNATURES[defect.kind]
        spread = math.exp(-0.5 * (distance / signature.reach_m) ** 2) * defect.severity / 10.0
        if spread < 1e-3:
            continue
        resonances.extend(
            Resonance(r.energy_ev, r.width_ev, r.weight * spread) for r in signature.resonances
        )
    return LocalDos(tuple(resonances)) if resonances else CLEAN


def kappa_at_bias(bias_v: float, barrier_ev: float = BARRIER_EV) -> float:
    """κ(V) for the trapezoidal barrier: its mean height is φ − e|V|/2."""
    return kappa_per_m(max(barrier_ev - 0.5 * abs(bias_v), MIN_BARRIER_EV))


def current(bias_v: float, gap_m: float, dos: LocalDos = CLEAN) -> float:
    """The ideal tunnelling current in amperes (before tip factor, noise and saturation)."""
    return G0_S * math.exp(-2.0 * kappa_at_bias(bias_v) * max(gap_m, 0.0)) * dos.integral(bias_v)


def equilibrium_gap(setpoint_a: float, bias_v: float, dos: LocalDos = CLEAN) -> float:
    """The gap at which the current is ``setpoint_a``: 0 (contact) when even contact cannot
    give that much current (at 0 V nothing can), 1 nm for a zero setpoint."""
    if setpoint_a == 0.0:
        return 1e-9
    n = abs(dos.integral(bias_v))
    if G0_S * n <= abs(setpoint_a):
        return 0.0
    return math.log(G0_S * n / abs(setpoint_a)) / (2.0 * kappa_at_bias(bias_v))


def demodulate(
    bias_v: float, amplitude_v: float, gap_m: float, dos: LocalDos, harmonic: int = 1
) -> float:
    """The in-phase amplitude of the current's ``harmonic`` under a bias modulation
    ``V + A sin ωt``: about ``A · dI/dV`` for the first harmonic and a small ``A``."""
    if amplitude_v == 0.0:
        return 0.0
    total = 0.0
    for k in range(LOCKIN_POINTS):
        theta = 2.0 * math.pi * (k + 0.5) / LOCKIN_POINTS
        total += current(bias_v + amplitude_v * math.sin(theta), gap_m, dos) * math.sin(
            harmonic * theta
        )
    return 2.0 * total / LOCKIN_POINTS


def conductance(bias_v: float, gap_m: float, dos: LocalDos = CLEAN, dv: float = 1e-4) -> float:
    """dI/dV in siemens (a central difference of :func:`current`)."""
    return (current(bias_v + dv, gap_m, dos) - current(bias_v - dv, gap_m, dos)) / (2.0 * dv)
