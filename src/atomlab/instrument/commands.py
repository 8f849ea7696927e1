"""The one table of Nanonis TCP command signatures, shared by the client and the simulator.

Each :class:`CommandSpec` names its arguments and its reply fields in wire order, with their wire
types and units. Argument orders and types follow the official ``nanonis-spm`` client and the
Nanonis "TCP Protocol" reference. Size prefixes are part of the composite types: a ``STR`` is an
int32 byte count then the bytes, an ``I32_ARRAY`` an int32 element count then the elements, a
``STR_ARRAY`` an int32 total byte size, an int32 count, then each item with its int32 length, an
``F32_2D`` int32 rows, int32 columns, then the values row by row, and a ``STR_2D`` the same with
strings. A "bare" array (``F32_BARE``...) has no prefix: its length is the value of an earlier
field, named by :attr:`Field.count`::

    spec = lookup("Scan.FrameGet")
    spec.reply_names       # ('center_x_m', 'center_y_m', 'width_m', 'height_m', 'angle_deg')
    lookup("Scan.Nope")    # raises UnknownCommandError

The table has two parts. The commands below are described by hand (names, units, defaults,
documentation); every other command of the official client comes from
:mod:`atomlab.instrument.official_table`, generated from that client, so any command can be
passed through to a real controller and answered by the simulator with the right reply shape.
Specs are built on first use: importing this module stays cheap for the command line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from atomlab.instrument.errors import UnknownCommandError


class WireType(StrEnum):
    """How one value is laid out on the wire (always big-endian)."""

    U16 = "u16"
    I16 = "i16"
    U32 = "u32"
    I32 = "i32"
    F32 = "f32"
    F64 = "f64"
    STR = "str"
    I8_ARRAY = "i8[]"
    I32_ARRAY = "i32[]"
    U32_ARRAY = "u32[]"
    F32_ARRAY = "f32[]"
    F64_ARRAY = "f64[]"
    STR_ARRAY = "str[]"
    F32_2D = "f32[][]"
    STR_2D = "str[][]"
    I32_BARE = "i32[*]"
    U32_BARE = "u32[*]"
    F32_BARE = "f32[*]"
    F64_BARE = "f64[*]"
    STR_BARE = "str[*]"

    @property
    def is_scalar(self) -> bool:
        return self in SCALAR_FORMATS

    @property
    def is_integer(self) -> bool:
        return self in (WireType.U16, WireType.I16, WireType.U32, WireType.I32)

    @property
    def is_bare(self) -> bool:
        """An array without a length prefix; :attr:`Field.count` names its length field."""
        return self.value.endswith("[*]")


SCALAR_FORMATS: Final[Mapping[WireType, str]] = MappingProxyType(
    {
        WireType.U16: "H",
        WireType.I16: "h",
        WireType.U32: "I",
        WireType.I32: "i",
        WireType.F32: "f",
        WireType.F64: "d",
    }
)

STRING_ENCODING: Final = "latin-1"
"""Strings travel in the controller's 8-bit encoding, not UTF-8: "±" is the one byte 0xB1
(the official client decodes every byte with ``chr``, so UTF-8 would show as "Â±")."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final[Any] = _Required()
"""Marks a :class:`Field` without a default: the caller must give it."""


@dataclass(frozen=True)
class Field:
    """One argument or reply value of a command."""

    name: str
    type: WireType
    unit: str = ""
    doc: str = ""
    default: Any = REQUIRED
    count: str = ""
    """For a bare array: the earlier field whose value is its length."""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class CommandSpec:
    """The signature of one Nanonis command: its arguments and reply fields, in wire order."""

    name: str
    args: tuple[Field, ...] = ()
    reply: tuple[Field, ...] = ()
    doc: str = ""
    module: str = field(init=False)
    described: bool = True
    """False for a command known only from the official client's signature (generated names)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "module", self.name.split(".", 1)[0])
        for kind, fields in (("argument", self.args), ("reply field", self.reply)):
            names = [f.name for f in fields]
            if len(set(names)) != len(names):
                raise ValueError(f"{self.name}: duplicate {kind} name in {names}")
            for i, f in enumerate(fields):
                if f.type.is_bare and f.count not in names[:i]:
                    raise ValueError(f"{self.name}: {f.name} needs an earlier count field")

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.args)

    @property
    def reply_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.reply)

    def reply_field(self, name: str) -> Field:
        """The reply field called ``name``; ``KeyError`` naming the valid ones otherwise."""
        for f in self.reply:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no reply field {name!r}; fields: {list(self.reply_names)}")


def _f(
    name: str,
    type_: WireType,
    unit: str = "",
    doc: str = "",
    default: Any = REQUIRED,
    count: str = "",
) -> Field:
    return Field(name, type_, unit, doc, default, count)


U16, I16, U32, I32 = WireType.U16, WireType.I16, WireType.U32, WireType.I32
F32, F64, STR = WireType.F32, WireType.F64, WireType.STR
I32_ARRAY, F32_ARRAY, STR_ARRAY, F32_2D = (
    WireType.I32_ARRAY,
    WireType.F32_ARRAY,
    WireType.STR_ARRAY,
    WireType.F32_2D,
)

_WAIT_NEWEST = _f(
    "wait", U32, doc="1: skip the sample in flight, return the next full one", default=0
)

_TABLE: tuple[CommandSpec, ...] = (
    # --- Bias -------------------------------------------------------------------------------
    CommandSpec("Bias.Set", (_f("bias_v", F32, "V"),), doc="Set the tip bias."),
    CommandSpec("Bias.Get", reply=(_f("bias_v", F32, "V"),), doc="Read the tip bias."),
    CommandSpec("Bias.RangeSet", (_f("range_index", U16),), doc="Select the bias range."),
    CommandSpec(
        "Bias.RangeGet",
        reply=(_f("ranges", STR_ARRAY), _f("range_index", U16)),
        doc="Selectable bias ranges and the selected one.",
    ),
    CommandSpec(
        "Bias.CalibrSet",
        (_f("calibration", F32), _f("offset", F32)),
        doc="Set the bias calibration and offset.",
    ),
    CommandSpec(
        "Bias.CalibrGet",
        reply=(_f("calibration", F32), _f("offset", F32)),
        doc="Read the bias calibration and offset.",
    ),
    CommandSpec(
        "Bias.Pulse",
        (
            _f("wait_until_done", U32, default=1),
            _f("width_s", F32, "s"),
            _f("bias_v", F32, "V"),
            _f("z_hold", U16, doc="0 no change, 1 hold, 2 don't hold", default=0),
            _f("absolute", U16, doc="0 no change, 1 relative, 2 absolute", default=0),
        ),
        doc="Apply one bias pulse.",
    ),
    # --- Current ----------------------------------------------------------------------------
    CommandSpec("Current.Get", reply=(_f("current_a", F32, "A"),), doc="Read the tunnel current."),
    CommandSpec(
        "Current.GainSet",
        (_f("gain_index", I32), _f("filter_index", I32, default=-1)),
        doc="Select the preamplifier gain and filter.",
    ),
    CommandSpec(
        "Current.GainsGet",
        reply=(
            _f("gains", STR_ARRAY),
            _f("gain_index", I32),
            _f("filters", STR_ARRAY),
            _f("filter_index", I32),
        ),
        doc="Selectable gains and filters, and the selected ones.",
    ),
    CommandSpec(
        "Current.CalibrGet",
        (_f("gain_index", I32, default=-1),),
        (_f("calibration", F64), _f("offset", F64)),
        doc="Calibration and offset of one gain (-1: the selected gain).",
    ),
    # --- Z controller -----------------------------------------------------------------------
    CommandSpec("ZCtrl.ZPosSet", (_f("z_m", F32, "m"),), doc="Move Z (controller off)."),
    CommandSpec("ZCtrl.ZPosGet", reply=(_f("z_m", F32, "m"),), doc="Read the Z position."),
    CommandSpec(
        "ZCtrl.OnOffSet", (_f("on", U32, doc="0 off, 1 on"),), doc="Switch the Z controller."
    ),
    CommandSpec(
        "ZCtrl.OnOffGet",
        reply=(_f("on", U32, doc="0 off, 1 on (real-time state)"),),
        doc="Is the Z controller on?",
    ),
    CommandSpec("ZCtrl.SetpntSet", (_f("setpoint", F32, "A"),), doc="Set the Z setpoint."),
    CommandSpec("ZCtrl.SetpntGet", reply=(_f("setpoint", F32, "A"),), doc="Read the Z setpoint."),
    CommandSpec(
        "ZCtrl.GainSet",
        (_f("p_gain", F32, "m"), _f("time_constant_s", F32, "s"), _f("i_gain", F32, "m/s")),
        doc="Set P and the time constant; Nanonis derives I = P / T and ignores the I argument.",
    ),
    CommandSpec(
        "ZCtrl.GainGet",
        reply=(_f("p_gain", F32, "m"), _f("time_constant_s", F32, "s"), _f("i_gain", F32, "m/s")),
        doc="Read P, the time constant and I (= P / T).",
    ),
    CommandSpec(
        "ZCtrl.SwitchOffDelaySet",
        (_f("delay_s", F32, "s"),),
        doc="Set the Z averaging time before switching off.",
    ),
    CommandSpec(
        "ZCtrl.SwitchOffDelayGet",
        reply=(_f("delay_s", F32, "s"),),
        doc="Read the switch-off delay.",
    ),
    CommandSpec("ZCtrl.TipLiftSet", (_f("lift_m", F32, "m"),), doc="Set the tip lift."),
    CommandSpec("ZCtrl.TipLiftGet", reply=(_f("lift_m", F32, "m"),), doc="Read the tip lift."),
    CommandSpec("ZCtrl.Home", doc="Move the tip to its home Z position."),
    CommandSpec(
        "ZCtrl.Withdraw",
        (_f("wait", U32, default=1), _f("timeout_ms", I32, "ms", default=-1)),
        doc="Switch the controller off and withdraw the tip.",
    ),
    CommandSpec(
        "ZCtrl.LimitsSet",
        (_f("high_m", F32, "m"), _f("low_m", F32, "m")),
        doc="Set the Z limits.",
    ),
    CommandSpec(
        "ZCtrl.LimitsGet",
        reply=(_f("high_m", F32, "m"), _f("low_m", F32, "m")),
        doc="Read the Z limits.",
    ),
    CommandSpec(
        "ZCtrl.StatusGet",
        reply=(
            _f(
                "status", U16, doc="1 off, 2 on, 3 hold, 4 switching off, 5 safe tip, 6 withdrawing"
            ),
        ),
        doc="Z controller status code.",
    ),
    # --- Follow Me (tip position) -----------------------------------------------------------
    CommandSpec(
        "FolMe.XYPosSet",
        (_f("x_m", F64, "m"), _f("y_m", F64, "m"), _f("wait", U32, default=1)),
        doc="Move the tip to (x, y).",
    ),
    CommandSpec(
        "FolMe.XYPosGet",
        (_WAIT_NEWEST,),
        (_f("x_m", F64, "m"), _f("y_m", F64, "m")),
        doc="Read the tip position.",
    ),
    CommandSpec(
        "FolMe.SpeedSet",
        (_f("speed_m_s", F32, "m/s"), _f("custom", U32, doc="1: use this speed", default=1)),
        doc="Set the tip move speed.",
    ),
    CommandSpec(
        "FolMe.SpeedGet",
        reply=(_f("speed_m_s", F32, "m/s"), _f("custom", U32)),
        doc="Read the tip move speed.",
    ),
    CommandSpec("FolMe.Stop", doc="Stop a tip move."),
    CommandSpec(
        "FolMe.OversamplGet",
        reply=(_f("oversampling", I32), _f("sample_rate_hz", F32, "Hz")),
        doc="Oversampling and resulting sample rate.",
    ),
    # --- Scan -------------------------------------------------------------------------------
    CommandSpec(
        "Scan.Action",
        (
            _f(
                "action",
                U16,
                doc="0 start, 1 stop, 2 pause, 3 resume, 4 freeze, 5 unfreeze, 6 centre",
            ),
            _f("direction_up", U32, doc="1 up, 0 down", default=1),
        ),
        doc="Start, stop, pause or resume the scan.",
    ),
    CommandSpec(
        "Scan.StatusGet",
        reply=(_f("running", U32, doc="1 running, 0 not"),),
        doc="Is a scan running?",
    ),
    CommandSpec(
        "Scan.WaitEndOfScan",
        (_f("timeout_ms", I32, "ms", default=-1),),
        (_f("timed_out", U32), _f("file_path", STR)),
        doc="Wait for the end of the scan.",
    ),
    CommandSpec(
        "Scan.FrameSet",
        (
            _f("center_x_m", F32, "m"),
            _f("center_y_m", F32, "m"),
            _f("width_m", F32, "m"),
            _f("height_m", F32, "m"),
            _f("angle_deg", F32, "deg"),
        ),
        doc="Set the scan frame.",
    ),
    CommandSpec(
        "Scan.FrameGet",
        reply=(
            _f("center_x_m", F32, "m"),
            _f("center_y_m", F32, "m"),
            _f("width_m", F32, "m"),
            _f("height_m", F32, "m"),
            _f("angle_deg", F32, "deg"),
        ),
        doc="Read the scan frame.",
    ),
    CommandSpec(
        "Scan.BufferSet",
        (_f("channels", I32_ARRAY), _f("pixels", I32), _f("lines", I32)),
        doc="Set recorded channels and the image size (pixels coerced to multiples of 16).",
    ),
    CommandSpec(
        "Scan.BufferGet",
        reply=(_f("channels", I32_ARRAY), _f("pixels", I32), _f("lines", I32)),
        doc="Read recorded channels and the image size.",
    ),
    CommandSpec(
        "Scan.SpeedSet",
        (
            _f("forward_speed_m_s", F32, "m/s"),
            _f("backward_speed_m_s", F32, "m/s"),
            _f("forward_time_per_line_s", F32, "s"),
            _f("backward_time_per_line_s", F32, "s"),
            _f("keep_constant", U16, doc="0 no change, 1 speed, 2 time per line", default=0),
            _f("speed_ratio", F32, default=1.0),
        ),
        doc="Set the scan speed.",
    ),
    CommandSpec(
        "Scan.SpeedGet",
        reply=(
            _f("forward_speed_m_s", F32, "m/s"),
            _f("backward_speed_m_s", F32, "m/s"),
            _f("forward_time_per_line_s", F32, "s"),
            _f("backward_time_per_line_s", F32, "s"),
            _f("keep_constant", U16),
            _f("speed_ratio", F32),
        ),
        doc="Read the scan speed.",
    ),
    CommandSpec(
        "Scan.XYPosGet",
        (_WAIT_NEWEST,),
        (_f("x_m", F32, "m"), _f("y_m", F32, "m")),
        doc="Read the X and Y signals.",
    ),
    CommandSpec(
        "Scan.FrameDataGrab",
        (_f("channel_index", U32), _f("forward", U32, doc="1 forward, 0 backward", default=1)),
        (_f("channel_name", STR), _f("data", F32_2D), _f("direction_up", U32)),
        doc="The image of one recorded channel.",
    ),
    # --- Signals ----------------------------------------------------------------------------
    CommandSpec(
        "Signals.NamesGet",
        reply=(_f("names", STR_ARRAY),),
        doc="Names of the signals, index 0 first.",
    ),
    CommandSpec(
        "Signals.InSlotsGet",
        reply=(_f("names", STR_ARRAY), _f("indexes", I32_ARRAY)),
        doc="The 24 signals in the slots of the Signals Manager: names and signal indexes.",
    ),
    CommandSpec(
        "Signals.InSlotSet",
        (_f("slot", I32, doc="0..23"), _f("signal_index", I32, doc="0..127")),
        doc="Assign one of the 128 signals to a slot of the Signals Manager.",
    ),
    CommandSpec(
        "Signals.MeasNamesGet",
        reply=(_f("names", STR_ARRAY),),
        doc="Measurement channels the sweepers can record (GenSwp.AcqChsSet indexes).",
    ),
    CommandSpec(
        "Signals.ValGet",
        (_f("index", I32), _WAIT_NEWEST),
        (_f("value", F32),),
        doc="One signal value (oversampled over the acquisition period).",
    ),
    CommandSpec(
        "Signals.ValsGet",
        (_f("indexes", I32_ARRAY), _WAIT_NEWEST),
        (_f("values", F32_ARRAY),),
        doc="Several signal values in one call.",
    ),
    CommandSpec(
        "Signals.CalibrGet",
        (_f("index", I32),),
        (_f("calibration_per_v", F32), _f("offset", F32)),
        doc="Calibration of one signal.",
    ),
    CommandSpec(
        "Signals.RangeGet",
        (_f("index", I32),),
        (_f("max", F32), _f("min", F32)),
        doc="Range limits of one signal.",
    ),
    # --- Spectroscopy and sweepers (the rest: the official client's signatures) -------------
    CommandSpec(
        "BiasSpectr.StatusGet",
        reply=(_f("status", U32, doc="0 not running, 1 running"),),
        doc="Is a bias spectroscopy running? (the official client decodes no status)",
    ),
    CommandSpec(
        "BiasSpectr.Start",
        (
            _f("get_data", U32, doc="1: reply with the data", default=1),
            _f("save_base_name", STR, doc="file base name; empty: no change", default=""),
        ),
        (_f("channels_names", STR_ARRAY), _f("data", F32_2D), _f("parameters", F32_ARRAY)),
        doc="Run a bias spectroscopy; rows of data are channels (the bias first), columns points.",
    ),
    CommandSpec(
        "ZSpectr.Start",
        (
            _f("get_data", U32, doc="1: reply with the data", default=1),
            _f("save_base_name", STR, doc="file base name; empty: no change", default=""),
        ),
        (_f("channels_names", STR_ARRAY), _f("data", F32_2D), _f("parameters", F32_ARRAY)),
        doc="Run a Z spectroscopy; rows of data are channels (Z rel first), columns points.",
    ),
    CommandSpec(
        "BiasSpectr.MLSValsSet",
        (
            _f("number_of_segments", I32),
            _f("bias_start_v", WireType.F32_BARE, "V", count="number_of_segments"),
            _f("bias_end_v", WireType.F32_BARE, "V", count="number_of_segments"),
            _f("initial_settling_time_s", WireType.F32_BARE, "s", count="number_of_segments"),
            _f("settling_time_s", WireType.F32_BARE, "s", count="number_of_segments"),
            _f("integration_time_s", WireType.F32_BARE, "s", count="number_of_segments"),
            _f("steps", WireType.I32_BARE, count="number_of_segments"),
            _f("lock_in_run", WireType.I32_BARE, count="number_of_segments"),
        ),
        doc="The segments of a multi-line-segment (MLS) bias sweep.",
    ),
    CommandSpec(
        "GenSwp.PropsSet",
        (
            _f("initial_settling_time_ms", F32, "ms"),
            _f("maximum_slew_rate", F32, "units/s"),
            _f("number_of_steps", I32, doc="0: no change"),
            _f("period_ms", U16, "ms", doc="integration time per point; 0: no change"),
            _f("autosave", I32, doc="0 no change, 1 on, 2 off"),
            _f("save_dialog_box", I32, doc="0 no change, 1 on, 2 off"),
            _f("settling_time_ms", F32, "ms"),
        ),
        doc="Configure the Generic Sweeper.",
    ),
    CommandSpec(
        "GenSwp.PropsGet",
        reply=(
            _f("initial_settling_time_ms", F32, "ms"),
            _f("maximum_slew_rate", F32, "units/s"),
            _f("number_of_steps", I32),
            _f("period_ms", U16, "ms"),
            _f("autosave", U32),
            _f("save_dialog_box", U32),
            _f("settling_time_ms", F32, "ms"),
        ),
        doc="The Generic Sweeper's configuration.",
    ),
    CommandSpec(
        "GenSwp.AcqChsSet",
        (_f("channel_indexes", I32_ARRAY), _f("channel_names", STR_ARRAY)),
        doc="Recorded channels of the Generic Sweeper (indexes of Signals.MeasNamesGet).",
    ),
    CommandSpec(
        "GenSwp.AcqChsGet",
        reply=(_f("channel_indexes", I32_ARRAY), _f("channel_names", STR_ARRAY)),
        doc="Recorded channels of the Generic Sweeper.",
    ),
    # --- Data logger ------------------------------------------------------------------------
    CommandSpec(
        "DataLog.PropsSet",
        (
            _f("acquisition_mode", U16, doc="0 no change, 1 continuous, 2 timed"),
            _f("duration_hours", I32, "h", doc="-1: no change"),
            _f("duration_minutes", I32, "min", doc="-1: no change"),
            _f("duration_seconds", F32, "s", doc="-1: no change"),
            _f("averaging", I32, doc="samples averaged per saved point"),
            _f("basename", STR),
            _f("comment", STR),
            _f("modules", STR_ARRAY, doc="modules whose parameters go in the file header"),
        ),
        doc="Configure the Data Logger.",
    ),
    CommandSpec(
        "DataLog.PropsGet",
        reply=(
            _f("acquisition_mode", U16, doc="1 continuous, 2 timed"),
            _f("duration_hours", I32, "h"),
            _f("duration_minutes", I32, "min"),
            _f("duration_seconds", F32, "s"),
            _f("averaging", I32),
            _f("basename", STR),
            _f("comment", STR),
        ),
        doc="The Data Logger's configuration.",
    ),
    CommandSpec(
        "DataLog.StatusGet",
        reply=(
            _f("start_time", STR),
            _f("elapsed_hours", U16, "h"),
            _f("elapsed_minutes", U16, "min"),
            _f("elapsed_seconds", F32, "s"),
            _f("stop_time", STR),
            _f("saved_file_path", STR),
            _f("saved_points", I32),
        ),
        doc="Start and stop times, elapsed time, the last saved file and the points saved.",
    ),
    # --- Lock-in (the rest: the official client's signatures) ------------------------------
    CommandSpec(
        "LockIn.ModOnOffSet",
        (_f("modulator_number", I32, doc="1..8"), _f("on", U32, doc="0 off, 1 on")),
        doc="Switch a lock-in modulator on or off.",
    ),
    CommandSpec(
        "LockIn.ModOnOffGet",
        (_f("modulator_number", I32, doc="1..8"),),
        (_f("on", U32, doc="0 off, 1 on"),),
        doc="Is a lock-in modulator on?",
    ),
    # --- Util -------------------------------------------------------------------------------
    CommandSpec(
        "Util.AcqPeriodSet", (_f("period_s", F32, "s"),), doc="Set the acquisition period."
    ),
    CommandSpec(
        "Util.AcqPeriodGet",
        reply=(_f("period_s", F32, "s"),),
        doc="Acquisition period Tap of the TCP receiver.",
    ),
    CommandSpec("Util.RTFreqSet", (_f("frequency_hz", F32, "Hz"),), doc="Set the RT frequency."),
    CommandSpec(
        "Util.RTFreqGet", reply=(_f("frequency_hz", F32, "Hz"),), doc="Read the RT frequency."
    ),
    CommandSpec("Util.SessionPathGet", reply=(_f("path", STR),), doc="The session folder."),
    CommandSpec(
        "Util.VersionGet",
        reply=(
            _f("product_line", STR),
            _f("version", STR),
            _f("host_app_release", U32),
            _f("rt_engine_release", U32),
        ),
        doc="Software versions.",
    ),
    # --- Motor (coarse approach) ------------------------------------------------------------
    CommandSpec(
        "Motor.StartMove",
        (
            _f("direction", U32, doc="0 X+, 1 X-, 2 Y+, 3 Y-, 4 Z+, 5 Z-"),
            _f("steps", U16),
            _f("group", U32, default=0),
            _f("wait", U32, default=1),
        ),
        doc="Move the coarse motor by a number of steps.",
    ),
    CommandSpec("Motor.StopMove", doc="Stop the coarse motor."),
    CommandSpec(
        "Motor.PosGet",
        (_f("group", U32, default=0), _f("timeout_ms", U32, "ms", default=500)),
        (_f("x_m", F64, "m"), _f("y_m", F64, "m"), _f("z_m", F64, "m")),
        doc="Coarse motor position.",
    ),
    CommandSpec(
        "Motor.StepCounterGet",
        (
            _f("reset_x", U32, default=0),
            _f("reset_y", U32, default=0),
            _f("reset_z", U32, default=0),
        ),
        (_f("x_steps", I32), _f("y_steps", I32), _f("z_steps", I32)),
        doc="Step counters (optionally reset after reading).",
    ),
    CommandSpec(
        "Motor.FreqAmpGet",
        (_f("axis", U16, doc="0 default, 1 X, 2 Y, 3 Z", default=0),),
        (_f("frequency_hz", F32, "Hz"), _f("amplitude_v", F32, "V")),
        doc="Coarse motor frequency and amplitude.",
    ),
    CommandSpec(
        "Motor.FreqAmpSet",
        (
            _f("frequency_hz", F32, "Hz"),
            _f("amplitude_v", F32, "V"),
            _f("axis", U16, doc="0 all, 1 X, 2 Y, 3 Z", default=0),
        ),
        doc="Set the coarse motor frequency and amplitude.",
    ),
    # --- Piezo ------------------------------------------------------------------------------
    CommandSpec(
        "Piezo.RangeGet",
        reply=(_f("x_m", F32, "m"), _f("y_m", F32, "m"), _f("z_m", F32, "m")),
        doc="Piezo ranges.",
    ),
    CommandSpec(
        "Piezo.RangeSet",
        (_f("x_m", F32, "m"), _f("y_m", F32, "m"), _f("z_m", F32, "m")),
        doc="Set the piezo ranges.",
    ),
    CommandSpec(
        "Piezo.TiltSet",
        (_f("tilt_x_deg", F32, "deg"), _f("tilt_y_deg", F32, "deg")),
        doc="Set the plane tilt correction.",
    ),
    CommandSpec(
        "Piezo.TiltGet",
        reply=(_f("tilt_x_deg", F32, "deg"), _f("tilt_y_deg", F32, "deg")),
        doc="Read the plane tilt correction.",
    ),
    CommandSpec(
        "Piezo.DriftCompSet",
        (
            _f("on", U32, doc="0 no change, 1 on, 2 off"),
            _f("vx_m_s", F32, "m/s"),
            _f("vy_m_s", F32, "m/s"),
            _f("vz_m_s", F32, "m/s"),
            _f("saturation_limit", F32, default=0.1),
        ),
        doc="Set the drift compensation.",
    ),
    CommandSpec(
        "Piezo.DriftCompGet",
        reply=(
            _f("on", U32),
            _f("vx_m_s", F32, "m/s"),
            _f("vy_m_s", F32, "m/s"),
            _f("vz_m_s", F32, "m/s"),
            _f("x_saturated", U32),
            _f("y_saturated", U32),
            _f("z_saturated", U32),
            _f("saturation_limit", F32),
        ),
        doc="Read the drift compensation.",
    ),
    # --- Tip shaper -------------------------------------------------------------------------
    CommandSpec(
        "TipShaper.Start",
        (_f("wait", U32, default=1), _f("timeout_ms", I32, "ms", default=-1)),
        doc="Run the tip-shaping procedure.",
    ),
    CommandSpec(
        "TipShaper.PropsSet",
        (
            _f("switch_off_delay_s", F32, "s"),
            _f("change_bias", U32, doc="0 no change, 1 yes, 2 no"),
            _f("bias_v", F32, "V"),
            _f("tip_lift_m", F32, "m"),
            _f("lift_time_1_s", F32, "s"),
            _f("bias_lift_v", F32, "V"),
            _f("bias_settling_time_s", F32, "s"),
            _f("lift_height_m", F32, "m"),
            _f("lift_time_2_s", F32, "s"),
            _f("end_wait_time_s", F32, "s"),
            _f("restore_feedback", U32, doc="0 no change, 1 yes, 2 no"),
        ),
        doc="Configure the tip-shaping procedure.",
    ),
    CommandSpec(
        "TipShaper.PropsGet",
        reply=(
            _f("switch_off_delay_s", F32, "s"),
            _f("change_bias", U32),
            _f("bias_v", F32, "V"),
            _f("tip_lift_m", F32, "m"),
            _f("lift_time_1_s", F32, "s"),
            _f("bias_lift_v", F32, "V"),
            _f("bias_settling_time_s", F32, "s"),
            _f("lift_height_m", F32, "m"),
            _f("lift_time_2_s", F32, "s"),
            _f("end_wait_time_s", F32, "s"),
            _f("restore_feedback", U32),
        ),
        doc="Read the tip-shaping configuration.",
    ),
)


def _parse_field(text: str) -> Field:
    """``name:type[:unit][@count]`` (the official table's compact field form) as a Field."""
    text, _, count = text.partition("@")
    name, wire, *unit = text.split(":", 2)
    return Field(name, WireType(wire), unit[0] if unit else "", count=count)


class _CommandTable(Mapping[str, CommandSpec]):
    """The hand-described commands over the generated signatures of every official command.

    Specs are built when first looked up, so importing the table costs next to nothing.
    """

    def __init__(self, described: tuple[CommandSpec, ...]) -> None:
        self._described = described
        self._specs: dict[str, CommandSpec] | None = None
        self._generated: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None
        self._names: tuple[str, ...] | None = None

    def _hand(self) -> dict[str, CommandSpec]:
        if self._specs is None:
            specs: dict[str, CommandSpec] = {}
            for spec in self._described:
                if spec.name in specs:
                    raise ValueError(f"command {spec.name!r} is listed twice")
                specs[spec.name] = spec
            self._specs = specs
        return self._specs

    def _official(self) -> Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        if self._generated is None:
            from atomlab.instrument.official_table import SIGNATURES

            self._generated = SIGNATURES
        return self._generated

    def __getitem__(self, name: str) -> CommandSpec:
        specs = self._hand()
        spec = specs.get(name)
        if spec is not None:
            return spec
        signature = self._official().get(name)
        if signature is None:
            raise KeyError(name)
        args, reply = signature
        spec = CommandSpec(
            name,
            tuple(_parse_field(f) for f in args),
            tuple(_parse_field(f) for f in reply),
            doc="Signature from the official nanonis-spm client.",
            described=False,
        )
        specs[name] = spec
        return spec

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._hand() or name in self._official())

    def __iter__(self) -> Iterator[str]:
        if self._names is None:
            self._names = tuple(sorted({*self._hand(), *self._official()}))
        return iter(self._names)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def described(self) -> tuple[str, ...]:
        """Names of the commands described by hand (the rest come from the official client)."""
        return tuple(spec.name for spec in self._described)


COMMANDS: Final[_CommandTable] = _CommandTable(_TABLE)
"""Every command this package can encode and decode, by Nanonis name (``"Bias.Get"``)."""


def is_known(name: str) -> bool:
    """True when ``name`` is in :data:`COMMANDS`."""
    return name in COMMANDS


def lookup(name: str) -> CommandSpec:
    """The signature of the command called ``name`` (``"Bias.Get"``, also ``"Bias_Get"``).

    Raises :class:`UnknownCommandError` naming the command and a close known one.
    """
    for candidate in (name, name.replace("_", ".", 1)):
        if candidate in COMMANDS:
            return COMMANDS[candidate]
    module = name.split(".", 1)[0].split("_", 1)[0]
    near = sorted(n for n in COMMANDS if n.split(".", 1)[0] == module)
    hint = f"; known {module} commands: {', '.join(near[:40])}" if near else ""
    raise UnknownCommandError(f"unknown command {name!r}{hint}", command=name)
