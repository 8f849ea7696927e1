"""The Nanonis framing, byte for byte, and the command table against the official client."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import nanonis_spm
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atomlab.instrument import protocol
from atomlab.instrument.commands import COMMANDS, CommandSpec, Field, WireType, lookup
from atomlab.instrument.errors import (
    ArgumentError,
    FramingError,
    InstrumentError,
    ProtocolError,
    UnknownCommandError,
)
from atomlab.instrument.protocol import ErrorInfo
from tests.instrument.test_official_table import DOCUMENTED_DEVIATIONS


def name32(name: str) -> str:
    return name.encode().ljust(32, b"\0").hex()


# --- the byte-level examples of the research notes (official client <-> fake server) -------------


def test_bias_get_request_and_reply_bytes() -> None:
    assert protocol.encode_request("Bias.Get").hex() == name32("Bias.Get") + "0000000000010000"
    reply = protocol.encode_reply("Bias.Get", {"bias_v": 0.1})
    assert reply.hex() == name32("Bias.Get") + "0000000c00000000" + "3dcccccd0000000000000000"


def test_bias_set_request_and_reply_bytes() -> None:
    wire = protocol.encode_request("Bias.Set", {"bias_v": 0.25})
    assert wire.hex() == name32("Bias.Set") + "0000000400010000" + "3e800000"
    reply = protocol.encode_reply("Bias.Set", {})
    assert reply.hex() == name32("Bias.Set") + "0000000800000000" + "0000000000000000"


def test_folme_xyposget_matches_the_reference_example() -> None:
    wire = protocol.encode_request("FolMe.XYPosGet", {"wait": 1})
    assert wire[:14] == bytes.fromhex("466f6c4d652e5859506f73476574")
    assert wire.hex() == name32("FolMe.XYPosGet") + "0000000400010000" + "00000001"
    reply = protocol.encode_reply("FolMe.XYPosGet", {"x_m": 5e-9, "y_m": -5e-9})
    assert reply[32:].hex() == ("00000018000000003e35798ee2308c3abe35798ee2308c3a0000000000000000")


def test_signals_valsget_request_and_reply_bodies() -> None:
    wire = protocol.encode_request("Signals.ValsGet", {"indexes": [0, 2, 4], "wait": 0})
    assert wire[32:36].hex() == "00000014"
    assert wire[40:].hex() == "0000000300000000000000020000000400000000"
    reply = protocol.encode_reply("Signals.ValsGet", {"values": [0.0, 3.0, 6.0]})
    assert reply[40:].hex() == "00000003000000004040000040c000000000000000000000"


def test_signals_namesget_string_array_counts_prefixes_in_its_size() -> None:
    names = ["Current (A)", "Bias (V)", "Z (m)", "X (m)", "Y (m)"]
    body = protocol.encode_reply("Signals.NamesGet", {"names": names})[40:]
    assert body[:8].hex() == "0000003600000005"
    assert body[8 : 8 + 15] == b"\x00\x00\x00\x0bCurrent (A)"
    assert body[-8:] == bytes(8)
    assert protocol.decode_reply("Signals.NamesGet", body)["names"] == names


def test_small_reference_bodies() -> None:
    assert protocol.encode_reply("ZCtrl.OnOffGet", {"on": 1})[40:].hex() == "00000001" + "00" * 8
    assert protocol.encode_request("ZCtrl.SetpntSet", {"setpoint": 1e-10})[40:].hex() == "2edbe6ff"
    scan = protocol.encode_request("Scan.Action", {"action": 0, "direction_up": 1})
    assert scan[32:36].hex() == "00000006"
    assert scan[40:].hex() == "000000000001"


def test_error_reply_carries_status_and_description() -> None:
    wire = protocol.encode_error_reply("Scan.Action", "Unknown command: Scan.Action")
    assert wire[32:36].hex() == "00000024"
    assert wire[40:].hex() == "000000010000001c" + b"Unknown command: Scan.Action".hex()
    reply = protocol.decode_reply("Scan.Action", wire[40:])
    assert reply.error == ErrorInfo(1, "Unknown command: Scan.Action")
    with pytest.raises(InstrumentError, match="Unknown command"):
        reply.raise_for_error()


# --- headers ---------------------------------------------------------------------------------


def test_request_header_round_trip() -> None:
    wire = protocol.encode_request(
        "Scan.FrameSet",
        {
            "center_x_m": 1e-9,
            "center_y_m": 2e-9,
            "width_m": 3e-9,
            "height_m": 4e-9,
            "angle_deg": 5.0,
        },
        send_response=False,
    )
    header = protocol.read_request_header(wire[:40])
    assert header == protocol.RequestHeader("Scan.FrameSet", 20, False)


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff" * 40,
        b"\0" * 40,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"\0" * 14,
        protocol.pad_name("Bias.Get") + struct.pack(">iHH", -1, 1, 0),
        protocol.pad_name("Bias.Get") + struct.pack(">iHH", 2**31 - 1, 1, 0),
        b"short",
    ],
)
def test_garbage_headers_are_framing_errors(raw: bytes) -> None:
    with pytest.raises(FramingError):
        protocol.read_request_header(raw)


def test_response_header_reads_name_and_size() -> None:
    wire = protocol.encode_reply(
        "Scan.FrameGet", dict.fromkeys(lookup("Scan.FrameGet").reply_names, 0.0)
    )
    assert protocol.read_response_header(wire[:40]) == protocol.ResponseHeader("Scan.FrameGet", 28)


# --- arguments -------------------------------------------------------------------------------


def test_defaults_fill_optional_arguments() -> None:
    _, args = protocol.decode_request(protocol.encode_request("ZCtrl.Withdraw"))
    assert args == {"wait": 1, "timeout_ms": -1}


def test_missing_unknown_and_out_of_range_arguments_name_the_field() -> None:
    with pytest.raises(ArgumentError, match="'bias_v'"):
        protocol.encode_request("Bias.Set", {})
    with pytest.raises(ArgumentError, match="'volts'"):
        protocol.encode_request("Bias.Set", {"bias_v": 1.0, "volts": 2})
    with pytest.raises(ArgumentError, match="'action' = 70000 is outside the u16 range"):
        protocol.encode_request("Scan.Action", {"action": 70000})
    with pytest.raises(ArgumentError, match="'on' = 'yes' is not an integer"):
        protocol.encode_request("ZCtrl.OnOffSet", {"on": "yes"})
    with pytest.raises(ArgumentError, match="does not fit a float32"):
        protocol.encode_request("Bias.Set", {"bias_v": 1e40})
    with pytest.raises(ArgumentError, match="'indexes'"):
        protocol.encode_request("Signals.ValsGet", {"indexes": ["a"]})


def test_integral_floats_are_accepted_for_integer_fields() -> None:
    _, args = protocol.decode_request(protocol.encode_request("ZCtrl.OnOffSet", {"on": 1.0}))
    assert args == {"on": 1}


@pytest.mark.parametrize(
    ("command", "body"),
    [
        ("Bias.Set", b""),
        ("Bias.Set", b"\0\0"),
        ("Bias.Set", b"\0" * 8),
        ("Signals.ValsGet", struct.pack(">i", 5) + b"\0" * 8),
        ("Signals.ValsGet", struct.pack(">i", -3)),
        ("Scan.BufferSet", struct.pack(">i", 10**8)),
    ],
)
def test_bodies_that_do_not_match_the_signature_are_argument_errors(
    command: str, body: bytes
) -> None:
    with pytest.raises(ArgumentError, match=command):
        protocol.decode_args(command, body)


def test_unknown_command_names_near_commands() -> None:
    with pytest.raises(UnknownCommandError, match=r"Bias\.Get"):
        lookup("Bias.Gte")
    assert lookup("Bias_Get") is COMMANDS["Bias.Get"]


def test_malformed_reply_body_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match=r"Scan\.FrameGet"):
        protocol.decode_reply("Scan.FrameGet", b"\0" * 7)


def test_error_reply_with_zeroed_values_decodes_the_error() -> None:
    wire = protocol.encode_reply("Scan.FrameGet", None, ErrorInfo.of("frame locked"))
    reply = protocol.decode_reply("Scan.FrameGet", wire[40:])
    assert reply.error == ErrorInfo(1, "frame locked")
    assert reply["width_m"] == 0.0


def test_every_multi_field_reply_is_decoded_into_its_own_named_fields() -> None:
    """The origin returned the first field of every reply; every field must keep its own value."""
    multi = [spec for spec in COMMANDS.values() if len(spec.reply) > 1]
    assert len(multi) >= 15
    for spec in multi:
        values = _distinct_values(spec.reply)
        reply = protocol.decode_reply(spec, protocol.encode_reply(spec, values)[40:])
        assert reply.values == values, spec.name


def _counts(fields: tuple[Field, ...]) -> set[str]:
    return {f.count for f in fields if f.count}


def _distinct(f: Field, i: int, counts: set[str] | None = None, accent: str = "±") -> Any:
    """A value for ``f`` unlike the other fields' (bare arrays and their counts have 2 items)."""
    t = f.type
    if f.name in (counts or set()):
        return 2
    if t.is_integer:
        return i + 1
    if t.is_scalar:
        return float(i + 1) * 0.5
    if t is WireType.STR:
        return f"path-{i} {accent}"
    if t in (WireType.STR_ARRAY, WireType.STR_BARE):
        return [f"item-{i}", f"b{accent}"]
    if t is WireType.F32_2D:
        return [[float(i), 1.5], [2.5, 3.5]]
    if t is WireType.STR_2D:
        return [[f"a{i}", "b"], ["c", "d"]]
    if t is WireType.I8_ARRAY:
        return [i % 100, -3]
    if t in (WireType.I32_ARRAY, WireType.U32_ARRAY, WireType.I32_BARE, WireType.U32_BARE):
        return [i + 1, i + 2]
    return [0.5 * i, 1.25]


def _distinct_values(
    fields: tuple[Field, ...], offset: int = 0, accent: str = "±"
) -> dict[str, Any]:
    counts = _counts(fields)
    return {f.name: _distinct(f, i + offset, counts, accent) for i, f in enumerate(fields)}


# --- property: every command round-trips ---------------------------------------------------


_LATIN1 = st.characters(max_codepoint=255)


def _strategy(f: Field, n: int) -> st.SearchStrategy[Any]:
    """Values for ``f``; bare arrays (and their count fields) have exactly ``n`` items."""
    t = f.type
    ints = {
        WireType.U16: st.integers(0, 2**16 - 1),
        WireType.I16: st.integers(-(2**15), 2**15 - 1),
        WireType.U32: st.integers(0, 2**32 - 1),
        WireType.I32: st.integers(-(2**31), 2**31 - 1),
    }
    f32 = st.floats(width=32, allow_nan=False)
    f64 = st.floats(allow_nan=False)
    text = st.text(alphabet=_LATIN1, max_size=20)
    bare = {
        WireType.I32_BARE: ints[WireType.I32],
        WireType.U32_BARE: ints[WireType.U32],
        WireType.F32_BARE: f32,
        WireType.F64_BARE: f64,
        WireType.STR_BARE: text,
    }
    if t in bare:
        return st.lists(bare[t], min_size=n, max_size=n)
    if t in ints:
        return ints[t]
    if t is WireType.F32:
        return f32
    if t is WireType.F64:
        return f64
    if t is WireType.STR:
        return st.text(alphabet=_LATIN1, max_size=40)
    if t is WireType.STR_ARRAY:
        return st.lists(text, max_size=5)
    if t is WireType.I8_ARRAY:
        return st.lists(st.integers(-128, 127), max_size=8)
    if t in (WireType.I32_ARRAY, WireType.U32_ARRAY):
        return st.lists(ints[WireType.I32 if t is WireType.I32_ARRAY else WireType.U32], max_size=8)
    if t is WireType.F32_ARRAY:
        return st.lists(f32, max_size=8)
    if t is WireType.F64_ARRAY:
        return st.lists(f64, max_size=8)
    if t in (WireType.F32_2D, WireType.STR_2D):
        cell = f32 if t is WireType.F32_2D else text
        return st.integers(1, 3).flatmap(
            lambda cols: st.lists(
                st.lists(cell, min_size=cols, max_size=cols), min_size=1, max_size=3
            )
        )
    raise AssertionError(t)


@st.composite
def _values(draw: st.DrawFn, fields: tuple[Field, ...]) -> dict[str, Any]:
    n = draw(st.integers(0, 4))
    counts = _counts(fields)
    return {f.name: n if f.name in counts else draw(_strategy(f, n)) for f in fields}


@st.composite
def _command_with_values(draw: st.DrawFn) -> tuple[CommandSpec, dict[str, Any], dict[str, Any]]:
    spec = draw(st.sampled_from([COMMANDS[name] for name in COMMANDS]))
    return spec, draw(_values(spec.args)), draw(_values(spec.reply))


@settings(max_examples=300, deadline=None)
@given(_command_with_values())
def test_every_command_round_trips_arguments_and_replies(
    case: tuple[CommandSpec, dict[str, Any], dict[str, Any]],
) -> None:
    spec, args, values = case
    header, decoded = protocol.decode_request(protocol.encode_request(spec, args))
    assert header.name == spec.name and header.send_response
    assert decoded == args
    reply = protocol.decode_reply(spec, protocol.encode_reply(spec, values)[40:])
    assert reply.ok and reply.values == values


# --- the official client parses our replies and we decode its requests ----------------------


class _LoopbackConnection:
    """A socket stand-in for the official client: it answers each request with ``answer``."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.pending = b""

    def send(self, data: bytes) -> int:
        self.pending = self.answer(bytes(data))
        return len(data)

    def recv(self, n: int) -> bytes:
        chunk, self.pending = self.pending[:n], self.pending[n:]
        return chunk

    def settimeout(self, _: float) -> None:
        pass

    def close(self) -> None:
        pass


# Commands the official client (1.0.9) gets wrong itself, whatever the server sends: these are
# listed in docs/instrument.md ("What the official client does differently").
OFFICIAL_BROKEN = {
    "Util.VersionGet": "decodes the two strings with a type ('+*c') it cannot parse",
    "HSSwp.SwpChSigListGet": "decodes the string array with a type ('+*c') it cannot parse",
    "HSSwp.SaveBasenameGet": "misses the size of the second string",
    "Scan.PropsGet": "decodes the parameter counts (1-D int array) as strings",
    "PLLSignalAnlzr.OsciDataGet": "decodes the float64 array as strings",
    "Osci1T.TimebaseGet": "sends Osci1T.TimebaseSet",
    "Osci1T.TrigGet": "takes the reply values as arguments",
    "Osci2T.ChGet": "sends Osci1T.ChGet",
    "Osci2T.ChSet": "sends Osci1T.ChSet",
    "Osci2T.OversamplGet": "sends Osci2T.OversamplSet",
    "Osci2T.TimebaseGet": "sends Osci1T.TimebaseSet",
    "Osci2T.TimebaseSet": "sends Osci1T.TimebaseSet",
}


def _in_official_client(name: str) -> bool:
    return hasattr(nanonis_spm.Nanonis, name.replace(".", "_", 1))


@pytest.mark.parametrize(
    "name",
    sorted(
        n
        for n in COMMANDS
        if n not in OFFICIAL_BROKEN and n not in DOCUMENTED_DEVIATIONS and _in_official_client(n)
    ),
)
def test_official_client_round_trips_every_command(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = COMMANDS[name]
    # the official client sends strings as UTF-8 (a real controller reads them as Latin-1), so
    # its arguments stay ASCII; replies carry "±", which it must show as "±" (not "Â±")
    args = _distinct_values(spec.args, accent="+-")
    values = _distinct_values(spec.reply, offset=3)
    seen: list[dict[str, Any]] = []

    def answer(request: bytes) -> bytes:
        header, decoded = protocol.decode_request(request)
        assert header.name == name
        seen.append(decoded)
        return protocol.encode_reply(spec, values)

    client = nanonis_spm.Nanonis(_LoopbackConnection(answer))
    result = getattr(client, name.replace(".", "_"))(
        *[_official_arg(f, args[f.name]) for f in spec.args]
    )
    error, raw, parsed = result
    assert seen == [args]
    assert error == ""
    assert protocol.decode_reply(spec, raw).values == values
    if all(f.type.is_scalar for f in spec.reply):
        assert parsed == list(values.values())
    assert "error" not in capsys.readouterr().out


def _official_arg(f: Field, value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


# --- fuzz: malformed bytes only ever raise the protocol's own errors --------------------------


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(sorted(COMMANDS)),
    body=st.binary(max_size=64),
    head=st.binary(min_size=40, max_size=40),
)
def test_garbage_raises_only_protocol_errors(name: str, body: bytes, head: bytes) -> None:
    """Invariant: no byte string makes the codec raise anything but a ProtocolError."""
    for decode in (protocol.decode_args, protocol.decode_reply):
        with contextlib.suppress(ProtocolError):
            decode(name, body)
    for read in (protocol.read_request_header, protocol.read_response_header):
        try:
            header = read(head)
        except FramingError:
            continue
        assert 0 <= header.body_size <= protocol.MAX_BODY_SIZE
