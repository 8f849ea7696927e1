"""The CLI's safety net: exceptions that escape a command but describe a user's mistake.

Commands validate their own input at the boundary and raise an ``AtomlabError`` naming the option;
what slips past (a 10,000-character path, a folder where a file goes, a binary file read as text,
``1e308`` overflowing a conversion, JSON nested 100,000 deep) must still end with the documented
exit code and a message naming the file and the fix, never "unexpected" (exit 1) and a traceback.
:func:`as_user_error` turns such an exception into the ``AtomlabError`` to report, or None for a
genuine bug. Nothing heavy is imported here (the CLI's start-up path).
"""

from __future__ import annotations

import errno
from typing import Any

from atomlab.core.errors import (
    AtomlabError,
    ConnectionFailedError,
    InvalidInputError,
    UnavailableError,
)

SHOWN_PATH_CHARS = 120

# errno -> (error class, what it means for the path, the fix)
_PATH_ERRORS: dict[int, tuple[type[AtomlabError], str, str]] = {
    errno.ENAMETOOLONG: (InvalidInputError, "is too long a name", "use a shorter path"),
    errno.EISDIR: (InvalidInputError, "is a folder where a file is expected", "pass a file"),
    errno.ENOTDIR: (
        InvalidInputError,
        "has a file where a folder is expected",
        "pass a path whose parent folders are folders",
    ),
    errno.ENOENT: (InvalidInputError, "does not exist", "check the path"),
    errno.EEXIST: (
        InvalidInputError,
        "already exists (a file where a folder is expected?)",
        "pass another path",
    ),
    errno.EACCES: (
        InvalidInputError,
        "is not accessible (permission denied)",
        "check its permissions",
    ),
    errno.EPERM: (InvalidInputError, "is not permitted", "check its permissions"),
    errno.EROFS: (InvalidInputError, "is on a read-only file system", "pass a writable path"),
    errno.ELOOP: (InvalidInputError, "has a loop of symbolic links", "fix the links"),
    errno.EINVAL: (InvalidInputError, "is not a valid path here", "pass another path"),
    errno.ENOSPC: (UnavailableError, "cannot be written: no space left", "free some disk space"),
    errno.EDQUOT: (UnavailableError, "cannot be written: disk quota exceeded", "free some space"),
}
_NETWORK_ERRORS: dict[int, tuple[type[AtomlabError], str]] = {
    errno.ECONNREFUSED: (ConnectionFailedError, "connection refused: is the peer running?"),
    errno.ECONNRESET: (ConnectionFailedError, "the peer reset the connection"),
    errno.ECONNABORTED: (ConnectionFailedError, "the connection was aborted"),
    errno.ETIMEDOUT: (ConnectionFailedError, "the connection timed out"),
    errno.EHOSTUNREACH: (ConnectionFailedError, "the host is unreachable"),
    errno.ENETUNREACH: (ConnectionFailedError, "the network is unreachable"),
    errno.EPIPE: (ConnectionFailedError, "the peer closed the connection"),
    errno.EADDRINUSE: (UnavailableError, "the address is already in use"),
    errno.EADDRNOTAVAIL: (InvalidInputError, "the address is not available on this machine"),
    errno.EMFILE: (UnavailableError, "too many open files"),
    errno.ENFILE: (UnavailableError, "too many open files on the system"),
    errno.ENOMEM: (UnavailableError, "out of memory"),
}


def shown(text: str, limit: int = SHOWN_PATH_CHARS) -> str:
    """``text`` quoted, cut to ``limit`` characters with its length when longer."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


def as_user_error(exc: BaseException) -> AtomlabError | None:
    """The ``AtomlabError`` a user should see for ``exc``, or None when it is a bug."""
    if isinstance(exc, OSError):
        return _os_error(exc)
    if isinstance(exc, UnicodeDecodeError):
        return InvalidInputError(
            f"a file or value is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            "pass a UTF-8 text file (not a binary one)",
            cause="UnicodeDecodeError",
        )
    if isinstance(exc, UnicodeEncodeError):
        bad = shown(str(exc.object[exc.start : exc.end]))
        return InvalidInputError(
            f"a value cannot be encoded ({exc.reason}: {bad}); pass plain text",
            cause="UnicodeEncodeError",
        )
    if isinstance(exc, UnicodeError):  # IDNA: an empty or over-long host name label
        return InvalidInputError(
            f"invalid host name ({exc}); pass a host such as 127.0.0.1 or lab-pc.local",
            cause="UnicodeError",
        )
    if isinstance(exc, RecursionError):
        return InvalidInputError(
            "the input is nested too deeply to process; pass flatter JSON or YAML",
            cause="RecursionError",
        )
    if isinstance(exc, OverflowError):
        return InvalidInputError(
            f"a number is too large ({exc}); pass a value in the documented range",
            cause="OverflowError",
        )
    if isinstance(exc, MemoryError):
        return UnavailableError(
            "out of memory; pass a smaller input or fewer items", cause="MemoryError"
        )
    return _by_name(exc)


def _os_error(exc: OSError) -> AtomlabError | None:
    code = exc.errno if isinstance(exc.errno, int) else -1
    path = exc.filename if isinstance(exc.filename, str | bytes) else None
    details: dict[str, Any] = {"errno": errno.errorcode.get(code, str(code))}
    if path is not None:
        text = path if isinstance(path, str) else path.decode(errors="replace")
        details["path"] = text[:SHOWN_PATH_CHARS]
        cls, meaning, fix = _PATH_ERRORS.get(
            code, (InvalidInputError, f"cannot be used ({exc.strerror or exc})", "check the path")
        )
        return cls(f"{shown(text)} {meaning}; {fix}", **details)
    if code in _NETWORK_ERRORS:
        cls, meaning = _NETWORK_ERRORS[code]
        return cls(f"{meaning} ({exc.strerror or exc})", **details)
    if type(exc).__name__ == "gaierror":  # socket.gaierror: DNS
        return ConnectionFailedError(
            f"cannot resolve the host name ({exc.strerror or exc}); check the host", **details
        )
    return None


def _by_name(exc: BaseException) -> AtomlabError | None:
    """Errors of libraries the CLI does not import at start-up, recognised by name."""
    module = type(exc).__module__.split(".")[0]
    name = type(exc).__name__
    if module == "httpx" and name in ("InvalidURL", "UnsupportedProtocol"):
        return InvalidInputError(f"invalid URL ({exc}); pass an http:// or https:// URL")
    if module == "sqlite3" and name == "DatabaseError":
        return InvalidInputError(
            f"a file is not a usable SQLite database ({exc}); check the path you passed"
        )
    if module == "sqlite3" and name == "OperationalError" and "locked" in str(exc):
        return UnavailableError(f"the database is busy ({exc}); try again when the writer is done")
    return None


__all__ = ["as_user_error", "shown"]
