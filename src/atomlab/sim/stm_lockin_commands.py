"""The simulated LockIn module's commands: modulators and demodulators 1–8.

The state and what the demodulators measure are in :mod:`atomlab.sim.stm_lockin`; field names
follow the official client's signatures (``atomlab.instrument.official_table``).
"""

from __future__ import annotations

from atomlab.sim.stm_lockin import N_MODULATORS, Demodulator, Modulator
from atomlab.sim.stm_routes import (
    Args,
    CommandRefusedError,
    HandlerBase,
    Values,
    choice,
    finite,
    handles,
    non_negative,
    positive,
)
from atomlab.sim.stm_signals import LI_DEMODULATORS, N_SIGNALS

MAX_HARMONIC = 8
MAX_FILTER_ORDER = 8


class LockInHandlers(HandlerBase):
    """LockIn.Mod* and LockIn.Demod*."""

    def __init__(self) -> None:
        pass

    def _mod(self, a: Args) -> Modulator:
        number = a["modulator_number"]
        if not 1 <= number <= N_MODULATORS:
            raise CommandRefusedError(
                f"modulator_number = {number} is not a modulator (1..{N_MODULATORS})"
            )
        return self.physics.lockin.modulator(number)

    def _demod(self, a: Args) -> Demodulator:
        number = a["demodulator_number"]
        if not 1 <= number <= LI_DEMODULATORS:
            raise CommandRefusedError(
                f"demodulator_number = {number} is not a demodulator (1..{LI_DEMODULATORS})"
            )
        return self.physics.lockin.demodulator(number)

    @staticmethod
    def _signal(name: str, index: int) -> int:
        return choice(f"{name} (a signal index, Signals.NamesGet)", index, range(N_SIGNALS))

    # ----------------------------------------------------------------- modulators
    @handles("LockIn.ModOnOffSet")
    def lockin_mod_on_off_set(self, a: Args) -> Values:
        self._mod(a).on = bool(choice("on", a["on"], (0, 1)))
        return {}

    @handles("LockIn.ModOnOffGet")
    def lockin_mod_on_off_get(self, a: Args) -> Values:
        return {"on": int(self._mod(a).on)}

    @handles("LockIn.ModSignalSet")
    def lockin_mod_signal_set(self, a: Args) -> Values:
        mod = self._mod(a)
        mod.signal_index = self._signal("modulator_signal_index", a["modulator_signal_index"])
        return {}

    @handles("LockIn.ModSignalGet")
    def lockin_mod_signal_get(self, a: Args) -> Values:
        return {"modulator_signal_index": self._mod(a).signal_index}

    @handles("LockIn.ModPhasRegSet")
    def lockin_mod_phas_reg_set(self, a: Args) -> Values:
        index = choice("phase_register_index", a["phase_register_index"], range(1, 9))
        self._mod(a).phase_register = index
        return {}

    @handles("LockIn.ModPhasRegGet")
    def lockin_mod_phas_reg_get(self, a: Args) -> Values:
        return {"phase_register_index": self._mod(a).phase_register}

    @handles("LockIn.ModHarmonicSet")
    def lockin_mod_harmonic_set(self, a: Args) -> Values:
        self._mod(a).harmonic = choice("harmonic", a["harmonic"], range(1, MAX_HARMONIC + 1))
        return {}

    @handles("LockIn.ModHarmonicGet")
    def lockin_mod_harmonic_get(self, a: Args) -> Values:
        return {"harmonic": self._mod(a).harmonic}

    @handles("LockIn.ModPhasSet")
    def lockin_mod_phas_set(self, a: Args) -> Values:
        self._mod(a).phase_deg = finite("phase_deg", a["phase_deg"])
        return {}

    @handles("LockIn.ModPhasGet")
    def lockin_mod_phas_get(self, a: Args) -> Values:
        return {"phase_deg": self._mod(a).phase_deg}

    @handles("LockIn.ModAmpSet")
    def lockin_mod_amp_set(self, a: Args) -> Values:
        amplitude = non_negative("amplitude", a["amplitude"])
        if amplitude > 5.0:
            raise CommandRefusedError(f"amplitude = {amplitude:g} V is above the 5 V maximum")
        self._mod(a).amplitude = amplitude
        return {}

    @handles("LockIn.ModAmpGet")
    def lockin_mod_amp_get(self, a: Args) -> Values:
        return {"amplitude": self._mod(a).amplitude}

    @handles("LockIn.ModPhasFreqSet")
    def lockin_mod_phas_freq_set(self, a: Args) -> Values:
        frequency = positive("frequency_hz", a["frequency_hz"])
        if frequency > 100_000.0:
            raise CommandRefusedError(f"frequency_hz = {frequency:g} is above 100 kHz")
        self._mod(a).frequency_hz = frequency
        return {}

    @handles("LockIn.ModPhasFreqGet")
    def lockin_mod_phas_freq_get(self, a: Args) -> Values:
        return {"frequency_hz": self._mod(a).frequency_hz}

    # ----------------------------------------------------------------- demodulators
    @handles("LockIn.DemodSignalSet")
    def lockin_demod_signal_set(self, a: Args) -> Values:
        demod = self._demod(a)
        demod.signal_index = self._signal("demodulator_signal_index", a["demodulator_signal_index"])
        return {}

    @handles("LockIn.DemodSignalGet")
    def lockin_demod_signal_get(self, a: Args) -> Values:
        return {"demodulator_signal_index": self._demod(a).signal_index}

    @handles("LockIn.DemodHarmonicSet")
    def lockin_demod_harmonic_set(self, a: Args) -> Values:
        self._demod(a).harmonic = choice("harmonic", a["harmonic"], range(1, MAX_HARMONIC + 1))
        return {}

    @handles("LockIn.DemodHarmonicGet")
    def lockin_demod_harmonic_get(self, a: Args) -> Values:
        return {"harmonic": self._demod(a).harmonic}

    @handles("LockIn.DemodHPFilterSet")
    def lockin_demod_hp_filter_set(self, a: Args) -> Values:
        demod = self._demod(a)
        order = choice("hp_filter_order", a["hp_filter_order"], range(-1, MAX_FILTER_ORDER + 1))
        if order >= 0:  # -1: no change
            demod.hp_order = order
        demod.hp_cutoff_hz = non_negative(
            "hp_filter_cutoff_frequency_hz", a["hp_filter_cutoff_frequency_hz"]
        )
        return {}

    @handles("LockIn.DemodHPFilterGet")
    def lockin_demod_hp_filter_get(self, a: Args) -> Values:
        demod = self._demod(a)
        return {
            "hp_filter_order": demod.hp_order,
            "hp_filter_cutoff_frequency_hz": demod.hp_cutoff_hz,
        }

    @handles("LockIn.DemodLPFilterSet")
    def lockin_demod_lp_filter_set(self, a: Args) -> Values:
        demod = self._demod(a)
        order = choice("lp_filter_order", a["lp_filter_order"], range(-1, MAX_FILTER_ORDER + 1))
        if order >= 0:
            demod.lp_order = order
        demod.lp_cutoff_hz = positive(
            "lp_filter_cutoff_frequency_hz", a["lp_filter_cutoff_frequency_hz"]
        )
        return {}

    @handles("LockIn.DemodLPFilterGet")
    def lockin_demod_lp_filter_get(self, a: Args) -> Values:
        demod = self._demod(a)
        return {
            "lp_filter_order": demod.lp_order,
            "lp_filter_cutoff_frequency_hz": demod.lp_cutoff_hz,
        }

    @handles("LockIn.DemodPhasRegSet")
    def lockin_demod_phas_reg_set(self, a: Args) -> Values:
        index = choice("phase_register_index", a["phase_register_index"], range(1, 9))
        self._demod(a).phase_register = index
        return {}

    @handles("LockIn.DemodPhasRegGet")
    def lockin_demod_phas_reg_get(self, a: Args) -> Values:
        return {"phase_register_index": self._demod(a).phase_register}

    @handles("LockIn.DemodPhasSet")
    def lockin_demod_phas_set(self, a: Args) -> Values:
        self._demod(a).phase_deg = finite("phase_deg", a["phase_deg"])
        return {}

    @handles("LockIn.DemodPhasGet")
    def lockin_demod_phas_get(self, a: Args) -> Values:
        return {"phase_deg": self._demod(a).phase_deg}

    @handles("LockIn.DemodSyncFilterSet")
    def lockin_demod_sync_filter_set(self, a: Args) -> Values:
        self._demod(a).sync_filter = bool(choice("sync_filter", a["sync_filter"], (0, 1)))
        return {}

    @handles("LockIn.DemodSyncFilterGet")
    def lockin_demod_sync_filter_get(self, a: Args) -> Values:
        return {"sync_filter": int(self._demod(a).sync_filter)}

    @handles("LockIn.DemodRTSignalsSet")
    def lockin_demod_rt_signals_set(self, a: Args) -> Values:
        self._demod(a).rt_signals = choice("rt_signals", a["rt_signals"], (0, 1))
        return {}

    @handles("LockIn.DemodRTSignalsGet")
    def lockin_demod_rt_signals_get(self, a: Args) -> Values:
        return {"rt_signals": self._demod(a).rt_signals}
