"""Bytes of the Nanonis TCP Programming Interface: one codec for the client and the simulator.

A request is a 40-byte header (command name NUL-padded to 32 bytes, int32 body size, uint16
send-response flag, 2 zero bytes) and the arguments. A response is a 40-byte header (name, int32
body size, 4 zero bytes), the reply values, then the error section (uint32 status, int32 length,
description). Everything is big-endian.

Client side::

    wire = encode_request("Bias.Set", {"bias_v": 0.25})
    header = read_response_header(sock_recv_exactly(40))
    reply = decode_reply("Bias.Set", sock_recv_exactly(header.body_size))
    reply.raise_for_error()

Server side (the simulator)::

    header = read_request_header(first_40_bytes)        # FramingError: close the connection
    body = recv_exactly(header.body_size)
    try:
        spec = lookup(header.name)                        # UnknownCommandError
        args = decode_args(spec, body)                    # ArgumentError
    except ProtocolError as exc:
        out = encode_error_reply(header.name, exc.message)
    else:
        out = encode_reply(spec, {"bias_v": 0.1})         # or error=ErrorInfo.of("why")
    if header.send_response:
        writer.write(out)                                  # one write: header + body
"""

from __future__ import annotations

import math
import numbers
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from atomlab.instrument.commands import (
    SCALAR_FORMATS,
    STRING_ENCODING,
    CommandSpec,
    Field,
    WireType,
    lookup,
)
from atomlab.instrument.errors import ArgumentError, FramingError, InstrumentError, ProtocolError

HEADER_SIZE: Final = 40
NAME_SIZE: Final = 32
MAX_BODY_SIZE: Final = 64 * 1024 * 1024
"""Larger bodies are treated as garbage: no Nanonis command comes close."""

_REQUEST_HEADER: Final = struct.Struct(">32siHH")
_RESPONSE_HEADER: Final = struct.Struct(">32si4x")
_ERROR_HEAD: Final = struct.Struct(">Ii")
_I32: Final = struct.Struct(">i")
_I32_PAIR: Final = struct.Struct(">ii")

_INTEGER_LIMITS: Final[Mapping[WireType, tuple[int, int]]] = {
    WireType.U16: (0, 0xFFFF),
    WireType.I16: (-0x8000, 0x7FFF),
    WireType.U32: (0, 0xFFFF_FFFF),
    WireType.I32: (-0x8000_0000, 0x7FFF_FFFF),
}
_ARRAY_ITEM: Final[Mapping[WireType, str]] = {
    WireType.I8_ARRAY: "b",
    WireType.I32_ARRAY: "i",
    WireType.U32_ARRAY: "I",
    WireType.F32_ARRAY: "f",
    WireType.F64_ARRAY: "d",
}
_BARE_ITEM: Final[Mapping[WireType, str]] = {
    WireType.I32_BARE: "i",
    WireType.U32_BARE: "I",
    WireType.F32_BARE: "f",
    WireType.F64_BARE: "d",
}
_I8 = WireType.I8_ARRAY  # element type of an i8[] (checked against -128..127 below)
_ARRAY_ELEMENT: Final[Mapping[WireType, WireType]] = {
    WireType.I32_ARRAY: WireType.I32,
    WireType.U32_ARRAY: WireType.U32,
    WireType.F32_ARRAY: WireType.F32,
    WireType.F64_ARRAY: WireType.F64,
    WireType.I32_BARE: WireType.I32,
    WireType.U32_BARE: WireType.U32,
    WireType.F32_BARE: WireType.F32,
    WireType.F64_BARE: WireType.F64,
}
_ITEM_SIZE: Final[Mapping[str, int]] = {"b": 1, "i": 4, "I": 4, "f": 4, "d": 8}
_F32_MAX: Final = 3.4028234663852886e38


# --- headers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestHeader:
    name: str
    body_size: int
    send_response: bool


@dataclass(frozen=True, slots=True)
class ResponseHeader:
    name: str
    body_size: int


def pad_name(name: str) -> bytes:
    """The command name as the 32 NUL-padded ASCII bytes of a header."""
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raise ArgumentError(f"command name {name!r} is not ASCII", command=name) from None
    if not raw or len(raw) > NAME_SIZE:
        raise ArgumentError(
            f"command name {name!r} must have 1 to {NAME_SIZE} characters", command=name
        )
    return raw.ljust(NAME_SIZE, b"\0")


def _unpad_name(raw: bytes) -> str:
    name = raw.rstrip(b"\0")
    if not name or b"\0" in name or not all(0x20 < c < 0x7F for c in name):
        raise FramingError(f"header does not start with a command name: {raw[:NAME_SIZE]!r}")
    return name.decode("ascii")


def _check_body_size(size: int) -> None:
    if size < 0 or size > MAX_BODY_SIZE:
        raise FramingError(f"header announces a body of {size} bytes (0..{MAX_BODY_SIZE} allowed)")


def read_request_header(data: bytes) -> RequestHeader:
    """Parse the 40-byte request header; :class:`FramingError` when the bytes cannot be one."""
    if len(data) != HEADER_SIZE:
        raise FramingError(f"a request header has {HEADER_SIZE} bytes, got {len(data)}")
    raw_name, size, send_response, _ = _REQUEST_HEADER.unpack(data)
    name = _unpad_name(raw_name)
    _check_body_size(size)
    return RequestHeader(name, size, send_response != 0)


def read_response_header(data: bytes) -> ResponseHeader:
    """Parse the 40-byte response header; :class:`FramingError` when the bytes cannot be one."""
    if len(data) != HEADER_SIZE:
        raise FramingError(f"a response header has {HEADER_SIZE} bytes, got {len(data)}")
    raw_name, size = _RESPONSE_HEADER.unpack(data)
    name = _unpad_name(raw_name)
    _check_body_size(size)
    return ResponseHeader(name, size)


# --- value codec -----------------------------------------------------------------------------


class _TruncatedError(Exception):
    pass


def _check_value(command: str, f: Field, value: Any) -> Any:
    """Coerce ``value`` for ``f`` or raise an ArgumentError that names the field and value."""

    def bad(reason: str) -> ArgumentError:
        return ArgumentError(
            f"{command}: argument {f.name!r} = {value!r} {reason}",
            command=command,
            field=f.name,
            value=repr(value),
        )

    t = f.type
    if t in _INTEGER_LIMITS:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, numbers.Integral):
            value = int(value)  # numpy integers, and True/False as 1/0
        if not isinstance(value, int):
            raise bad(f"is not an integer ({t.value})")
        low, high = _INTEGER_LIMITS[t]
        if not low <= value <= high:
            raise bad(f"is outside the {t.value} range {low}..{high}")
        return int(value)
    if t in (WireType.F32, WireType.F64):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise bad(f"is not a number ({t.value})")
        number = float(value)
        if t is WireType.F32 and math.isfinite(number) and abs(number) > _F32_MAX:
            raise bad("does not fit a float32")
        return number
    if t is WireType.STR:
        if not isinstance(value, str):
            raise bad("is not a string")
        _check_encodable(value, bad)
        return value
    if t in (WireType.STR_ARRAY, WireType.STR_BARE):
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise bad("is not a list of strings")
        for v in value:
            _check_encodable(v, bad)
        return list(value)
    if t is WireType.I8_ARRAY:
        if isinstance(value, str | bytes) or not all(
            isinstance(v, int) and not isinstance(v, bool) and -128 <= v <= 127 for v in value
        ):
            raise bad("is not a list of integers -128..127")
        return list(value)
    element = _ARRAY_ELEMENT.get(t)
    if element is not None:
        if isinstance(value, str | bytes):
            raise bad("is not a list of numbers")
        item = Field(f.name, element)
        return [_check_value(command, item, v) for v in value]
    if t in (WireType.F32_2D, WireType.STR_2D):
        rows = _rows(value)
        if rows is None:
            raise bad("is not a 2-D array (a list of equally long rows)")
        cell = Field(f.name, WireType.F32 if t is WireType.F32_2D else WireType.STR)
        return [[_check_value(command, cell, v) for v in row] for row in rows]
    raise bad(f"has an unsupported wire type {t}")  # pragma: no cover - table is closed


def _check_encodable(text: str, bad: Any) -> None:
    try:
        text.encode(STRING_ENCODING)
    except UnicodeEncodeError:
        raise bad("has characters the controller's 8-bit encoding (Latin-1) cannot carry") from None


def _rows(value: Any) -> list[list[Any]] | None:
    """A 2-D value (nested lists, or anything with ``tolist``, e.g. numpy) as rows, or None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return None
    rows = [list(row) for row in value if isinstance(row, Sequence) and not isinstance(row, str)]
    if len(rows) != len(value) or len({len(row) for row in rows}) > 1:
        return None
    return rows


def _encode_one(f: Field, value: Any, out: bytearray) -> None:
    t = f.type
    fmt = SCALAR_FORMATS.get(t)
    if fmt is not None:
        out += struct.pack(">" + fmt, value)
    elif t is WireType.STR:
        raw = value.encode(STRING_ENCODING)
        out += _I32.pack(len(raw)) + raw
    elif t in _ARRAY_ITEM:
        n = len(value)
        out += _I32.pack(n) + struct.pack(f">{n}{_ARRAY_ITEM[t]}", *value)
    elif t in _BARE_ITEM:
        out += struct.pack(f">{len(value)}{_BARE_ITEM[t]}", *value)
    elif t is WireType.STR_ARRAY:
        items = [s.encode(STRING_ENCODING) for s in value]
        total = sum(4 + len(s) for s in items)
        out += _I32_PAIR.pack(total, len(items))
        for s in items:
            out += _I32.pack(len(s)) + s
    elif t is WireType.STR_BARE:
        for s in value:
            raw = s.encode(STRING_ENCODING)
            out += _I32.pack(len(raw)) + raw
    elif t is WireType.F32_2D:
        if hasattr(value, "astype"):  # numpy: one conversion, no per-value Python work
            array = value.astype(">f4")
            rows, cols = array.shape
            out += _I32_PAIR.pack(rows, cols) + array.tobytes()
        else:
            rows_ = [list(row) for row in value]
            cols = len(rows_[0]) if rows_ else 0
            flat = [v for row in rows_ for v in row]
            out += _I32_PAIR.pack(len(rows_), cols) + struct.pack(f">{len(flat)}f", *flat)
    elif t is WireType.STR_2D:
        rows_ = [list(row) for row in value]
        out += _I32_PAIR.pack(len(rows_), len(rows_[0]) if rows_ else 0)
        for row in rows_:
            for s in row:
                raw = s.encode(STRING_ENCODING)
                out += _I32.pack(len(raw)) + raw


def _take(body: bytes | memoryview, offset: int, n: int) -> int:
    end = offset + n
    if n < 0 or end > len(body):
        raise _TruncatedError
    return end


def _decode_string(body: bytes | memoryview, offset: int) -> tuple[str, int]:
    end = _take(body, offset, 4)
    (length,) = _I32.unpack_from(body, offset)
    start = end
    end = _take(body, start, length)
    return bytes(body[start:end]).decode(STRING_ENCODING), end


def _decode_one(
    t: WireType, body: bytes | memoryview, offset: int, count: int = 0
) -> tuple[Any, int]:
    fmt = SCALAR_FORMATS.get(t)
    if fmt is not None:
        s = struct.Struct(">" + fmt)
        end = _take(body, offset, s.size)
        return s.unpack_from(body, offset)[0], end
    bare = _BARE_ITEM.get(t)
    if bare is not None:
        if count < 0:
            raise _TruncatedError
        end = _take(body, offset, count * _ITEM_SIZE[bare])
        return list(struct.unpack_from(f">{count}{bare}", body, offset)), end
    if t is WireType.STR_BARE:
        if count < 0:
            raise _TruncatedError
        items: list[str] = []
        for _ in range(count):
            text, offset = _decode_string(body, offset)
            items.append(text)
        return items, offset
    end = _take(body, offset, 4)
    (n,) = _I32.unpack_from(body, offset)
    offset = end
    if n < 0:
        raise _TruncatedError
    if t is WireType.STR:
        end = _take(body, offset, n)
        return bytes(body[offset:end]).decode(STRING_ENCODING), end
    item = _ARRAY_ITEM.get(t)
    if item is not None:
        end = _take(body, offset, n * _ITEM_SIZE[item])
        return list(struct.unpack_from(f">{n}{item}", body, offset)), end
    if t is WireType.STR_ARRAY:
        # n is the total byte size; the official client writes a wrong one, so trust the count.
        end = _take(body, offset, 4)
        (count,) = _I32.unpack_from(body, offset)
        offset = end
        if count < 0:
            raise _TruncatedError
        names: list[str] = []
        for _ in range(count):
            text, offset = _decode_string(body, offset)
            names.append(text)
        return names, offset
    if t in (WireType.F32_2D, WireType.STR_2D):
        end = _take(body, offset, 4)
        (cols,) = _I32.unpack_from(body, offset)
        rows, offset = n, end
        if cols < 0:
            raise _TruncatedError
        if t is WireType.STR_2D:
            table: list[list[str]] = []
            for _ in range(rows):
                row: list[str] = []
                for _ in range(cols):
                    text, offset = _decode_string(body, offset)
                    row.append(text)
                table.append(row)
            return table, offset
        end = _take(body, offset, rows * cols * 4)
        flat = struct.unpack_from(f">{rows * cols}f", body, offset)
        return [list(flat[r * cols : (r + 1) * cols]) for r in range(rows)], end
    raise _TruncatedError  # pragma: no cover - table is closed


@dataclass(frozen=True, slots=True)
class _Codec:
    """A compiled field list: one struct when every field is a scalar, field by field otherwise."""

    fields: tuple[Field, ...]
    names: tuple[str, ...]
    scalar: struct.Struct | None

    @classmethod
    def compile(cls, fields: tuple[Field, ...]) -> _Codec:
        names = tuple(f.name for f in fields)
        if all(f.type.is_scalar for f in fields):
            fmt = ">" + "".join(SCALAR_FORMATS[f.type] for f in fields)
            return cls(fields, names, struct.Struct(fmt))
        return cls(fields, names, None)

    def ordered(self, command: str, values: Mapping[str, Any], *, kind: str) -> list[Any]:
        """Values in wire order, defaults filled in; unknown or missing names are errors."""
        extra = [k for k in values if k not in self.names]
        if extra:
            raise ArgumentError(
                f"{command} has no {kind} {extra[0]!r}; {kind}s: {list(self.names)}",
                command=command,
                field=extra[0],
            )
        out: list[Any] = []
        for f in self.fields:
            if f.name in values:
                out.append(values[f.name])
            elif f.required:
                raise ArgumentError(
                    f"{command} needs the {kind} {f.name!r} ({f.type.value}"
                    f"{', ' + f.unit if f.unit else ''})",
                    command=command,
                    field=f.name,
                )
            else:
                out.append(f.default)
        return out

    def encode(self, command: str, ordered: Sequence[Any]) -> bytes:
        if self.scalar is not None:
            try:
                return self.scalar.pack(*ordered)
            except (struct.error, OverflowError, TypeError):
                pass  # fall through to the checked path for a message that names the field
        else:
            fast = self._encode_unchecked(ordered)
            if fast is not None:
                return fast
        checked = [_check_value(command, f, v) for f, v in zip(self.fields, ordered, strict=True)]
        self._check_counts(command, checked)
        out = bytearray()
        for f, v in zip(self.fields, checked, strict=True):
            _encode_one(f, v, out)
        return bytes(out)

    def _check_counts(self, command: str, ordered: Sequence[Any]) -> None:
        """A bare array must be as long as the value of its count field says."""
        by_name = dict(zip(self.names, ordered, strict=True))
        for f in self.fields:
            if f.count and len(by_name[f.name]) != by_name[f.count]:
                raise ArgumentError(
                    f"{command}: {f.name} has {len(by_name[f.name])} elements but "
                    f"{f.count} = {by_name[f.count]!r}; they must agree",
                    command=command,
                    field=f.name,
                )

    def _encode_unchecked(self, ordered: Sequence[Any]) -> bytes | None:
        """Encode without per-element checks (the simulator's hot path for arrays); None when
        a value does not pack as is, so the checked path can name the bad field."""
        if any(f.count for f in self.fields):
            return None  # bare arrays: the checked path compares them with their counts
        out = bytearray()
        try:
            for f, v in zip(self.fields, ordered, strict=True):
                if isinstance(v, str | bool) and f.type is not WireType.STR:
                    return None
                _encode_one(f, v, out)
        except (
            struct.error,
            OverflowError,
            TypeError,
            ValueError,
            AttributeError,
            UnicodeEncodeError,
            IndexError,
        ):
            return None
        return bytes(out)

    def decode(self, body: bytes | memoryview, offset: int = 0) -> tuple[dict[str, Any], int]:
        """Values by name and the offset after them; raises ``_TruncatedError`` on short bodies."""
        if self.scalar is not None:
            end = _take(body, offset, self.scalar.size)
            return dict(zip(self.names, self.scalar.unpack_from(body, offset), strict=True)), end
        values: dict[str, Any] = {}
        for f in self.fields:
            count = _count_of(values, f) if f.count else 0
            values[f.name], offset = _decode_one(f.type, body, offset, count)
        return values, offset

    def zero_values(self) -> list[Any]:
        return [_zero(f.type) for f in self.fields]


def _count_of(values: Mapping[str, Any], f: Field) -> int:
    count = values.get(f.count)
    if not isinstance(count, int) or count < 0:
        raise _TruncatedError
    return count


def _zero(t: WireType) -> Any:
    if t.is_integer:
        return 0
    if t.is_scalar:
        return 0.0
    if t is WireType.STR:
        return ""
    return []


@dataclass(slots=True)
class CommandCodec:
    """One command's compiled codec; get it with :func:`codec` and keep it for hot loops."""

    spec: CommandSpec
    name32: bytes
    args: _Codec
    reply: _Codec
    args_size: int = 0
    ok_body: struct.Struct | None = None
    request_prefix: struct.Struct | None = None
    ok_reply: struct.Struct | None = None

    def encode_request(
        self, args: Mapping[str, Any] | None = None, *, send_response: bool = True
    ) -> bytes:
        """See :func:`encode_request`."""
        ordered = self.args.ordered(self.spec.name, args or {}, kind="argument")
        flag = 1 if send_response else 0
        if self.request_prefix is not None:
            try:
                return self.request_prefix.pack(self.name32, self.args_size, flag, 0, *ordered)
            except (struct.error, OverflowError, TypeError):
                pass  # the checked path below names the bad field
        body = self.args.encode(self.spec.name, ordered)
        return _REQUEST_HEADER.pack(self.name32, len(body), flag, 0) + body

    def decode_reply(self, body: bytes | memoryview) -> Reply:
        """See :func:`decode_reply`."""
        name = self.spec.name
        if self.ok_body is not None and len(body) == self.ok_body.size:
            *fields, status, length = self.ok_body.unpack(body)
            if status == 0 and length == 0:  # the common case: scalars and no error
                return Reply(name, dict(zip(self.reply.names, fields, strict=True)))
        try:
            values, offset = self.reply.decode(body)
            error = _read_error_section(body, offset)
        except _TruncatedError:
            error = _bare_error_section(body)
            if error is None:
                raise ProtocolError(
                    f"{name}: reply body of {len(body)} bytes does not match the fields "
                    f"{list(self.reply.names)} followed by an error section",
                    command=name,
                ) from None
            return Reply(name, {}, error)
        return Reply(name, values, error)


_COMPILED: dict[str, CommandCodec] = {}


def codec(command: str | CommandSpec) -> CommandCodec:
    """The compiled codec of a command (cached): ``codec("Bias.Get").decode_reply(body)``."""
    spec = lookup(command) if isinstance(command, str) else command
    hit = _COMPILED.get(spec.name)
    if hit is not None and hit.spec is spec:
        return hit
    args, reply = _Codec.compile(spec.args), _Codec.compile(spec.reply)
    compiled = CommandCodec(spec, pad_name(spec.name), args, reply)
    if args.scalar is not None:
        compiled.args_size = args.scalar.size
        compiled.request_prefix = struct.Struct(">32siHH" + args.scalar.format[1:])
    if reply.scalar is not None:
        compiled.ok_body = struct.Struct(reply.scalar.format + "Ii")
        compiled.ok_reply = struct.Struct(">32si4x" + reply.scalar.format[1:] + "Ii")
    _COMPILED[spec.name] = compiled
    return compiled


def spec_of(command: str | CommandSpec) -> CommandSpec:
    """The :class:`CommandSpec` for a name or a spec (names resolve through the table)."""
    return command if isinstance(command, CommandSpec) else lookup(command)


_F32: Final = struct.Struct(">f")


def shortest_float32(value: float) -> float:
    """The shortest decimal that encodes to the same float32 as ``value`` (0.1, not
    0.10000000149011612): friendlier to print and store, and bit-identical on the wire."""
    value = float(value)
    if not math.isfinite(value):
        return value
    try:
        wire = _F32.pack(value)
    except OverflowError:
        return value
    for digits in range(1, 10):  # 9 significant digits always round-trip a float32
        candidate = float(f"{value:.{digits}g}")
        if _F32.pack(candidate) == wire:
            return candidate
    return float(_F32.unpack(wire)[0])  # pragma: no cover - 9 digits always suffice


# --- errors and replies ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The error section of a reply. The official client only looks at ``description``."""

    status: int
    description: str

    @classmethod
    def of(cls, description: str) -> ErrorInfo:
        """An error with status 1 (what Nanonis sends)."""
        return cls(1, description or "error")

    @property
    def is_error(self) -> bool:
        return self.status != 0 or bool(self.description)


@dataclass(slots=True)
class Reply:
    """A decoded reply: values by field name, and the error section when it reports one."""

    command: str
    values: dict[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def __getitem__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise KeyError(
                f"{self.command} reply has no field {name!r}; fields: {list(self.values)}"
            ) from None

    def display_values(self) -> dict[str, Any]:
        """Values with float32 fields given as their shortest decimal (see shortest_float32)."""
        spec = codec(self.command).spec
        f32 = {f.name for f in spec.reply if f.type is WireType.F32}
        return {k: shortest_float32(v) if k in f32 else v for k, v in self.values.items()}

    def raise_for_error(self) -> Reply:
        """Return self, or raise :class:`InstrumentError` when the instrument reported an error."""
        if self.error is not None:
            raise InstrumentError(self.command, self.error.description, self.error.status)
        return self


def _error_section(error: ErrorInfo | None) -> bytes:
    if error is None:
        return _ERROR_HEAD.pack(0, 0)
    raw = error.description.encode(STRING_ENCODING, errors="replace")
    return _ERROR_HEAD.pack(error.status, len(raw)) + raw


# --- client side -------------------------------------------------------------------------------


def encode_request(
    command: str | CommandSpec,
    args: Mapping[str, Any] | None = None,
    *,
    send_response: bool = True,
) -> bytes:
    """Header and body of one request. Missing arguments take their defaults or raise
    :class:`ArgumentError` naming the argument; so do unknown names and out-of-range values."""
    return codec(command).encode_request(args, send_response=send_response)


def decode_reply(command: str | CommandSpec, body: bytes | memoryview) -> Reply:
    """Decode a reply body (the bytes after the 40-byte header) into named values.

    A body that holds only an error section (what a server sends for a command it does not
    know) decodes to a reply without values. Raises :class:`ProtocolError` on malformed bodies.
    """
    return codec(command).decode_reply(body)


def _read_error_section(body: bytes | memoryview, offset: int) -> ErrorInfo | None:
    end = _take(body, offset, 8)
    status, length = _ERROR_HEAD.unpack_from(body, offset)
    if length < 0 or end + length != len(body):
        raise _TruncatedError
    description = bytes(body[end : end + length]).decode(STRING_ENCODING)
    if status == 0 and not description:
        return None
    return ErrorInfo(status, description)


def _bare_error_section(body: bytes | memoryview) -> ErrorInfo | None:
    try:
        error = _read_error_section(body, 0)
    except _TruncatedError:
        return None
    return error


# --- server side -------------------------------------------------------------------------------


def decode_args(command: str | CommandSpec, body: bytes | memoryview) -> dict[str, Any]:
    """Decode a request body into arguments by name.

    Raises :class:`ArgumentError` when the body is shorter or longer than the signature needs.
    """
    c = codec(command)
    try:
        values, offset = c.args.decode(body)
    except _TruncatedError:
        raise ArgumentError(
            f"{c.spec.name}: request body of {len(body)} bytes is too short for the arguments "
            f"{_describe(c.spec.args)}",
            command=c.spec.name,
        ) from None
    if offset != len(body):
        raise ArgumentError(
            f"{c.spec.name}: request body has {len(body)} bytes, the arguments "
            f"{_describe(c.spec.args)} take {offset}",
            command=c.spec.name,
        )
    return values


def encode_reply(
    command: str | CommandSpec,
    values: Mapping[str, Any] | None = None,
    error: ErrorInfo | None = None,
) -> bytes:
    """Header, reply values and error section of one response, as one buffer to send at once.

    With an ``error`` and no ``values`` the reply fields are zeros, so any client can still
    parse the error section.
    """
    c = codec(command)
    name = c.spec.name
    if values is None:
        if error is None and c.spec.reply:
            raise ArgumentError(f"{name}: a reply without an error needs its values", command=name)
        ordered = c.reply.zero_values()
    else:
        ordered = c.reply.ordered(name, values, kind="reply field")
    if error is None and c.ok_reply is not None:
        try:
            return c.ok_reply.pack(c.name32, c.ok_reply.size - HEADER_SIZE, *ordered, 0, 0)
        except (struct.error, OverflowError, TypeError):
            pass  # the checked path below names the bad field
    body = c.reply.encode(name, ordered) + _error_section(error)
    return _RESPONSE_HEADER.pack(c.name32, len(body)) + body


def encode_error_reply(name: str, description: str, status: int = 1) -> bytes:
    """A response carrying only an error section, for a command name the server does not know."""
    try:
        name32 = pad_name(name)
    except ArgumentError:
        name32 = b"?".ljust(NAME_SIZE, b"\0")
    body = _error_section(ErrorInfo(status, description))
    return _RESPONSE_HEADER.pack(name32, len(body)) + body


def decode_request(data: bytes | memoryview) -> tuple[RequestHeader, dict[str, Any]]:
    """Header and arguments of one complete request (header + body) held in memory."""
    header = read_request_header(bytes(data[:HEADER_SIZE]))
    body = data[HEADER_SIZE:]
    if len(body) != header.body_size:
        raise ArgumentError(
            f"{header.name}: header announces {header.body_size} body bytes, got {len(body)}",
            command=header.name,
        )
    return header, decode_args(header.name, body)


def _describe(fields: Iterable[Field]) -> str:
    parts = [f"{f.name}:{f.type.value}" for f in fields]
    return "(" + ", ".join(parts) + ")" if parts else "(none)"


__all__ = [
    "HEADER_SIZE",
    "MAX_BODY_SIZE",
    "NAME_SIZE",
    "CommandCodec",
    "ErrorInfo",
    "Reply",
    "RequestHeader",
    "ResponseHeader",
    "codec",
    "decode_args",
    "decode_reply",
    "decode_request",
    "encode_error_reply",
    "encode_reply",
    "encode_request",
    "pad_name",
    "read_request_header",
    "read_response_header",
    "shortest_float32",
    "spec_of",
]
