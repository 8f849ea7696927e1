"""The simulated lock-in amplifier: 8 modulators and 8 demodulators, as on a Nanonis controller.

A modulator adds ``A sin(2π f t + φ)`` to one signal (normally the bias, index 24); a
demodulator multiplies another signal (normally the current) by the reference of a modulator's
harmonic and low-pass filters it, giving X (in phase) and Y (quadrature). With the bias
modulated and the current demodulated on harmonic 1, X is about ``A · dI/dV``: scanning
tunnelling spectroscopy. Demodulator n publishes its X and Y as signals 86 + 2(n−1) and
87 + 2(n−1) ("LI Demod n X (A)"). The current follows the bias without delay (no cable
capacitance is modelled), so with demodulator phase φ: X = R cos φ, Y = −R sin φ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from atomlab.sim.stm_signals import BIAS, CURRENT, LI_DEMODULATORS

N_MODULATORS: Final = 8
DEFAULT_AMPLITUDE_V: Final = 0.01
DEFAULT_FREQUENCY_HZ: Final = 973.0
DEFAULT_LP_CUTOFF_HZ: Final = 10.0


@dataclass(slots=True)
class Modulator:
    on: bool = False
    signal_index: int = BIAS
    amplitude: float = DEFAULT_AMPLITUDE_V
    phase_deg: float = 0.0
    frequency_hz: float = DEFAULT_FREQUENCY_HZ
    harmonic: int = 1
    phase_register: int = 1


@dataclass(slots=True)
class Demodulator:
    signal_index: int = CURRENT
    harmonic: int = 1
    phase_deg: float = 0.0
    phase_register: int = 1
    """Which modulator's reference this demodulator uses (1..8)."""
    lp_order: int = 4
    lp_cutoff_hz: float = DEFAULT_LP_CUTOFF_HZ
    hp_order: int = 0
    hp_cutoff_hz: float = 0.1
    sync_filter: bool = False
    rt_signals: int = 0
    """0: X/Y, 1: R/phi (what the demodulator publishes)."""

    @property
    def time_constant_s(self) -> float:
        """The low-pass filter's averaging time (its noise bandwidth is about 1 / (4 τ))."""
        return 1.0 / (6.283185307179586 * max(self.lp_cutoff_hz, 1e-3))


def _demodulators() -> list[Demodulator]:
    # demodulator 2 watches the second harmonic of modulator 1 (d²I/dV²), the rest the first
    return [Demodulator(harmonic=2 if n == 1 else 1) for n in range(LI_DEMODULATORS)]


@dataclass(slots=True)
class LockIn:
    modulators: list[Modulator] = field(
        default_factory=lambda: [Modulator() for _ in range(N_MODULATORS)]
    )
    demodulators: list[Demodulator] = field(default_factory=_demodulators)

    def modulator(self, number: int) -> Modulator:
        """Modulator ``number`` (1-based, as on the wire)."""
        return self.modulators[number - 1]

    def demodulator(self, number: int) -> Demodulator:
        return self.demodulators[number - 1]

    def bias_modulation(self, demod: Demodulator) -> tuple[float, int]:
        """(amplitude in V, harmonic) a demodulator sees on the current, 0 when nothing
        modulates the bias through its reference."""
        mod = self.modulators[demod.phase_register - 1]
        if not mod.on or mod.signal_index != BIAS or demod.signal_index != CURRENT:
            return 0.0, demod.harmonic
        return mod.amplitude, demod.harmonic * mod.harmonic
