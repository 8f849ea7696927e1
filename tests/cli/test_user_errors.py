"""The CLI's safety net: what escapes a command but is a user's mistake gets its documented code."""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path

import pytest

from atomlab.cli.user_errors import as_user_error
from atomlab.core.errors import ExitCode


def _os(code: int, path: str | None = None) -> OSError:
    return OSError(code, os.strerror(code), path)


@pytest.mark.parametrize(
    ("exc", "code", "words"),
    [
        (_os(errno.ENAMETOOLONG, "x" * 10_000), ExitCode.INVALID_INPUT, "too long a name"),
        (_os(errno.EISDIR, "/tmp/d"), ExitCode.INVALID_INPUT, "is a folder"),
        (_os(errno.ENOTDIR, "/tmp/f/x"), ExitCode.INVALID_INPUT, "a file where a folder"),
        (_os(errno.EACCES, "/root/x"), ExitCode.INVALID_INPUT, "permission denied"),
        (_os(errno.ENOSPC, "/tmp/big"), ExitCode.UNAVAILABLE, "no space left"),
        (_os(errno.ECONNREFUSED), ExitCode.CONNECTION, "connection refused"),
        (_os(errno.EADDRINUSE), ExitCode.UNAVAILABLE, "already in use"),
        (socket.gaierror(-2, "Name or service not known"), ExitCode.CONNECTION, "resolve"),
        (UnicodeError("label too long"), ExitCode.INVALID_INPUT, "invalid host name"),
        (RecursionError("maximum recursion depth"), ExitCode.INVALID_INPUT, "nested too deeply"),
        (OverflowError("int too large to convert"), ExitCode.INVALID_INPUT, "too large"),
    ],
)
def test_user_mistakes_map_to_their_exit_code(exc: BaseException, code: ExitCode, words: str):
    mapped = as_user_error(exc)
    assert mapped is not None and mapped.exit_code == code
    assert words in mapped.message
    assert len(mapped.message) < 400  # a 10,000-character path is shown cut short


def test_a_binary_file_read_as_text_is_invalid_input():
    try:
        b"\x00\xff\xfe".decode("utf-8")
    except UnicodeDecodeError as exc:
        mapped = as_user_error(exc)
    assert mapped is not None and mapped.exit_code == ExitCode.INVALID_INPUT
    assert "not UTF-8" in mapped.message


@pytest.mark.parametrize("exc", [KeyError("x"), AttributeError("y"), _os(errno.EIO)])
def test_a_bug_stays_unexpected(exc: BaseException):
    assert as_user_error(exc) is None


def test_emitted_json_is_strict(capsys, tmp_path: Path):
    from atomlab.cli import output

    output.reset_state(output.CliState(json=True))
    output.emit({"rate": float("inf"), "mean": float("nan"), "where": tmp_path, "raw": b"\x00"})
    text = capsys.readouterr().out
    body = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON output"))
    assert body["rate"] is None and body["mean"] is None and body["where"] == str(tmp_path)
