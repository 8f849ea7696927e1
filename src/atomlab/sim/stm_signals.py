"""The simulated controller's signals: the 128-signal default layout, the 24 slots, the
measurement channels.

A Nanonis controller has 128 real-time signals (``Signals.NamesGet``): 0–23 are the analog
inputs (Input 1 is renamed "Current (A)"), 24–31 the analog outputs (Output 1 "Bias (V)",
Outputs 5–7 drive the X, Y and Z piezos), the rest internal signals (lock-in demodulators,
oscillation control, counters...). The vendor's example scripts read index 0 as the current,
24 as the bias, 30 as Z and 86/87 as lock-in demodulator 1 X/Y; those indexes are fixed here.
Where the other internal signals sit is atomlab's choice (docs/instrument.md): clients look
signals up by name.

24 of the 128 signals are assigned to the slots of the Signals Manager (``Signals.InSlotsGet``);
the scan buffer and the spectroscopy modules record slots, not signal indexes. Sweepers record
"measurement channels" (``Signals.MeasNamesGet``), a list of their own.
"""

from __future__ import annotations

from typing import Final

N_SIGNALS: Final = 128
N_SLOTS: Final = 24

CURRENT: Final = 0
BIAS: Final = 24
X: Final = 28
Y: Final = 29
Z: Final = 30
SETPOINT: Final = 32
SETPOINT_ERROR: Final = 33
TIME: Final = 34
TEMPERATURE: Final = 35
COUNTER_1: Final = 36
LI_MOD_1_AMP: Final = 40
LI_MOD_1_FREQ: Final = 41
PHASE: Final = 72
AMPLITUDE: Final = 73
FREQUENCY_SHIFT: Final = 74
EXCITATION: Final = 75
LI_DEMOD_1_X: Final = 86
LI_DEMOD_1_Y: Final = 87
LI_DEMODULATORS: Final = 8
"""Lock-in demodulators 1–8 publish X and Y at 86 + 2(n-1) and 87 + 2(n-1)."""


def _names() -> tuple[str, ...]:
    names = [f"Internal {i} (V)" for i in range(N_SIGNALS)]
    for i in range(24):
        names[i] = f"Input {i + 1} (V)"
    for i in range(8):
        names[24 + i] = f"Output {i + 1} (V)"
    fixed = {
        CURRENT: "Current (A)",
        BIAS: "Bias (V)",
        X: "X (m)",
        Y: "Y (m)",
        Z: "Z (m)",
        SETPOINT: "Z Ctrl Setpoint (A)",
        SETPOINT_ERROR: "Setpoint Error (A)",
        TIME: "Time (s)",
        TEMPERATURE: "Temperature 1 (K)",
        COUNTER_1: "Counter 1 (Hz)",
        37: "Counter 2 (Hz)",
        LI_MOD_1_AMP: "LI Mod 1 Amp (V)",
        LI_MOD_1_FREQ: "LI Mod 1 Freq (Hz)",
        PHASE: "Phase (deg)",
        AMPLITUDE: "Amplitude (m)",
        FREQUENCY_SHIFT: "Frequency Shift (Hz)",
        EXCITATION: "Excitation (V)",
    }
    for n in range(LI_DEMODULATORS):
        fixed[LI_DEMOD_1_X + 2 * n] = f"LI Demod {n + 1} X (A)"
        fixed[LI_DEMOD_1_Y + 2 * n] = f"LI Demod {n + 1} Y (A)"
    for index, name in fixed.items():
        names[index] = name
    return tuple(names)


SIGNAL_NAMES: Final[tuple[str, ...]] = _names()
"""``Signals.NamesGet``: the 128 signals, index 0 first."""

DEFAULT_SLOTS: Final[tuple[int, ...]] = (
    CURRENT,
    BIAS,
    Z,
    X,
    Y,
    SETPOINT_ERROR,
    LI_DEMOD_1_X,
    LI_DEMOD_1_Y,
    SETPOINT,
    TIME,
    TEMPERATURE,
    COUNTER_1,
    PHASE,
    AMPLITUDE,
    FREQUENCY_SHIFT,
    EXCITATION,
    LI_DEMOD_1_X + 2,
    LI_DEMOD_1_Y + 2,
    1,
    2,
    3,
    25,
    26,
    27,
)
"""The signal in each of the 24 slots of the Signals Manager (``Signals.InSlotsGet``): slot 0
is the current, 1 the bias, 2 Z, as a scan buffer's channels 0 and 2 expect."""

MEASUREMENT_CHANNELS: Final[tuple[str, ...]] = (
    "Current (A)",
    "Bias (V)",
    "Z (m)",
    "X (m)",
    "Y (m)",
    "LI Demod 1 X (A)",
    "LI Demod 1 Y (A)",
    "LI Demod 2 X (A)",
    "LI Demod 2 Y (A)",
    "Setpoint Error (A)",
    "Z Ctrl Setpoint (A)",
    "Time (s)",
    "Temperature 1 (K)",
    "Counter 1 (Hz)",
)
"""``Signals.MeasNamesGet``: what the sweepers (GenSwp) can record, by index."""

MEASUREMENT_SIGNALS: Final[tuple[int, ...]] = tuple(
    SIGNAL_NAMES.index(name) for name in MEASUREMENT_CHANNELS
)

assert len(SIGNAL_NAMES) == N_SIGNALS and len(DEFAULT_SLOTS) == N_SLOTS


def signal_unit(index: int) -> str:
    """The unit in a signal's name: "Current (A)" -> "A"."""
    name = SIGNAL_NAMES[index]
    return name.rsplit("(", 1)[1].rstrip(")") if "(" in name else ""


def signal_base_name(index: int) -> str:
    """A signal's name without its unit: "Current (A)" -> "Current"."""
    return SIGNAL_NAMES[index].rsplit(" (", 1)[0]
