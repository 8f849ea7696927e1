"""Nanonis data files written by the simulator: scans (``.sxm``) and spectra (``.dat``).

``.sxm``: an ASCII header of ``:TAG:`` lines each followed by its value lines, closed by
``:SCANIT_END:`` and three newlines, then the bytes ``0x1A 0x04`` and the images as big-endian
float32: for each channel of ``:DATA_INFO:`` (in order) the forward image, then the backward
one, each ``lines`` rows of ``pixels`` values in acquisition order. The first row stored is the
first line scanned (the bottom of the frame for an upward scan) and a backward row runs right
to left, as the tip moved; readers (Gwyddion, nanonispy) flip them for display. Unscanned
pixels are NaN.

``.dat``: tab-separated ``key<TAB>value<TAB>`` header lines with CRLF line ends, an empty line,
``[DATA]``, a line of column names, then one row per point.

Both are written to a temporary name in the same folder and renamed, so a reader never sees a
half-written file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

SXM_END: Final = b":SCANIT_END:\n\n\n\x1a\x04"
HEADER_ENCODING: Final = "utf-8"
"""File headers are UTF-8, which the usual readers (nanonispy, nanonispy2, nanonis-xarray)
decode; the TCP protocol itself carries Latin-1 (see atomlab.instrument.commands)."""


@dataclass(frozen=True)
class SxmChannel:
    """One recorded signal of a scan: its index in the 128-signal list, name, unit, images."""

    signal_index: int
    name: str
    unit: str
    forward: NDArray[np.float32]
    backward: NDArray[np.float32]
    calibration: float = 1.0


def next_path(folder: Path, basename: str, suffix: str, digits: int) -> Path:
    """``folder/basename<n>.suffix`` with the first counter not yet taken (as Nanonis names)."""
    n = 1
    while True:
        path = folder / f"{basename}{n:0{digits}d}{suffix}"
        if not path.exists():
            return path
        n += 1


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _e(value: float, digits: int = 6) -> str:
    return f"{value:.{digits}E}"


def sxm_bytes(
    *,
    path_name: str,
    when: datetime,
    pixels: int,
    lines: int,
    width_m: float,
    height_m: float,
    center_x_m: float,
    center_y_m: float,
    angle_deg: float,
    direction_up: bool,
    line_time_s: tuple[float, float],
    bias_v: float,
    z_controller: Mapping[str, str],
    comment: str,
    temperature_k: float,
    acquisition_time_s: float,
    channels: Sequence[SxmChannel],
    extra: Mapping[str, str] | None = None,
) -> bytes:
    """The bytes of a ``.sxm`` file (see the module docstring for the layout)."""
    z_names = "\t".join(z_controller)
    z_values = "\t".join(z_controller.values())
    entries: list[tuple[str, str]] = [
        ("NANONIS_VERSION", "2"),
        ("SCANIT_TYPE", "              FLOAT            MSBFIRST"),
        ("REC_DATE", when.strftime(" %d.%m.%Y")),
        ("REC_TIME", when.strftime("%H:%M:%S")),
        ("REC_TEMP", f"      {temperature_k:.10f}"),
        ("ACQ_TIME", f"       {acquisition_time_s:.1f}"),
        ("SCAN_PIXELS", f"       {pixels}       {lines}"),
        ("SCAN_FILE", path_name),
        ("SCAN_TIME", f"             {_e(line_time_s[0], 3)}             {_e(line_time_s[1], 3)}"),
        ("SCAN_RANGE", f"           {_e(width_m)}           {_e(height_m)}"),
        ("SCAN_OFFSET", f"             {_e(center_x_m)}         {_e(center_y_m)}"),
        ("SCAN_ANGLE", f"            {_e(angle_deg, 3)}"),
        ("SCAN_DIR", "up" if direction_up else "down"),
        ("BIAS", f"            {_e(bias_v, 3)}"),
        ("Z-CONTROLLER", f"\t{z_names}\n\t{z_values}"),
        ("COMMENT", comment.replace("\r", " ")),
    ]
    for key, value in (extra or {}).items():
        entries.append((key, value))
    info = ["\tChannel\tName\tUnit\tDirection\tCalibration\tOffset"]
    for ch in channels:
        calibration, offset = _e(ch.calibration, 3), _e(0.0, 3)
        info.append(f"\t{ch.signal_index}\t{ch.name}\t{ch.unit}\tboth\t{calibration}\t{offset}")
    entries.append(("DATA_INFO", "\n".join(info) + "\n"))
    header = "".join(f":{key}:\n{value}\n" for key, value in entries)
    body = bytearray(header.encode(HEADER_ENCODING, errors="replace"))
    body += SXM_END
    for ch in channels:
        for image, backward in ((ch.forward, False), (ch.backward, True)):
            stored = _acquisition_order(image, direction_up=direction_up, backward=backward)
            body += stored.astype(">f4").tobytes()
    return bytes(body)


def _acquisition_order(
    image: NDArray[np.float32], *, direction_up: bool, backward: bool
) -> NDArray[np.float32]:
    """An image held top row first, left to right, in the order the tip recorded it."""
    out = image[::-1, :] if direction_up else image
    return out[:, ::-1] if backward else out


def write_sxm(path: Path, **fields: object) -> Path:
    """Write a ``.sxm`` file (keyword arguments as for :func:`sxm_bytes`) and return its path."""
    _write_atomically(path, sxm_bytes(path_name=str(path), **fields))  # type: ignore[arg-type]
    return path


def dat_bytes(
    *,
    experiment: str,
    when: datetime,
    header: Mapping[str, str],
    columns: Sequence[tuple[str, Sequence[float]]],
) -> bytes:
    """The bytes of a ``.dat`` spectroscopy file (see the module docstring for the layout)."""
    lines = [f"Experiment\t{experiment}\t", f"Date\t{when.strftime('%d.%m.%Y %H:%M:%S')}\t"]
    lines += [f"{key}\t{value}\t" for key, value in header.items()]
    lines += ["", "[DATA]", "\t".join(name for name, _ in columns)]
    rows = zip(*(values for _, values in columns), strict=True)
    lines += ["\t".join(_e(float(v)) for v in row) for row in rows]
    return ("\r\n".join(lines) + "\r\n").encode(HEADER_ENCODING, errors="replace")


def write_dat(path: Path, **fields: object) -> Path:
    """Write a ``.dat`` file (keyword arguments as for :func:`dat_bytes`) and return its path."""
    _write_atomically(path, dat_bytes(**fields))  # type: ignore[arg-type]
    return path


def read_sxm_images(path: Path) -> dict[str, tuple[NDArray[np.float32], NDArray[np.float32]]]:
    """The images of a ``.sxm`` file by channel name, top row first (our own reader, for tests
    and tools that do not want a third-party one)."""
    data = path.read_bytes()
    head, _, payload = data.partition(SXM_END)
    text = head.decode(HEADER_ENCODING)
    pixels, lines = (int(v) for v in _tag(text, "SCAN_PIXELS").split())
    direction_up = _tag(text, "SCAN_DIR").strip() == "up"
    info = _tag(text, "DATA_INFO").strip("\n").split("\n")[1:]
    names = [row.strip("\t").split("\t")[1] for row in info if row.strip()]
    values = np.frombuffer(payload, dtype=">f4").astype(np.float32)
    size = pixels * lines
    out: dict[str, tuple[NDArray[np.float32], NDArray[np.float32]]] = {}
    for i, name in enumerate(names):
        pair = []
        for j, backward in enumerate((False, True)):
            block = values[(2 * i + j) * size : (2 * i + j + 1) * size].reshape(lines, pixels)
            pair.append(_acquisition_order(block, direction_up=direction_up, backward=backward))
        out[name] = (pair[0], pair[1])
    return out


def _tag(header: str, tag: str) -> str:
    start = header.index(f":{tag}:\n") + len(tag) + 3
    end = header.find("\n:", start)
    return header[start : end if end >= 0 else None]
