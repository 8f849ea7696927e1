"""Who may do what on the swarm service: scoped operator tokens and the link credential.

Scopes (docs/swarm.md "Authentication"):

* ``ingest``: ``POST /api/sensor-data``;
* ``control``: ``POST /api/commands/distribute``, ``POST /api/agents/resume`` (and everything
  ``ingest`` may do);
* ``read``: the ``GET`` routes, but only when a read token is configured (public otherwise;
  ``/health`` and the OpenAPI document are always public); any operator token reads too;
* ``link``: the simulator's ``/ws/isaac`` connection, and nothing else.

Each token comes from the environment / settings (``ATOMLAB_SWARM__INGEST_TOKEN`` ...) or from the
tokens file (``swarm.tokens_file``, default ``<home>/swarm/tokens.json``, mode 0600). ``swarm
serve`` creates that file with random tokens on its first start when a scope has no token
(``create=True``), like Jupyter does, and every atomlab client reads the same file, so a setup
in one data home needs no flags::

    tokens = load_tokens(settings, create=True)      # the service
    bearer_headers(settings, "ingest")               # a client: {"Authorization": "Bearer ..."}

Tokens are compared in constant time (:func:`hmac.compare_digest`) and never logged or echoed.
This module imports nothing heavy: clients use it without loading the service.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from atomlab.core.errors import InvalidInputError
from atomlab.core.settings import AtomlabSettings

Scope = Literal["read", "ingest", "control", "link"]
SCOPES: tuple[Scope, ...] = ("ingest", "control", "link", "read")
GENERATED_SCOPES: tuple[Scope, ...] = ("ingest", "control", "link")  # read stays public
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_LENGTH = 1024
TOKEN_BYTES = 32  # secrets.token_urlsafe(32): 43 characters, 256 bits
TOKENS_FILE_MODE = 0o600
TOKENS_DIR_MODE = 0o700
TOKENS_SUBDIR = "swarm"
TOKENS_FILENAME = "tokens.json"

#: Which tokens a route's scope accepts: a stronger operator token may do what a weaker may.
ACCEPTED_BY: dict[Scope, tuple[Scope, ...]] = {
    "read": ("read", "ingest", "control"),
    "ingest": ("ingest", "control"),
    "control": ("control",),
    "link": ("link",),
}


_GRANT_ORDER: tuple[Scope, ...] = ("control", "ingest", "read", "link")


def default_tokens_path(home: Path) -> Path:
    return home / TOKENS_SUBDIR / TOKENS_FILENAME


def tokens_path(settings: AtomlabSettings) -> Path:
    """Where the tokens file is (``swarm.tokens_file``, else ``<home>/swarm/tokens.json``)."""
    configured = settings.swarm.tokens_file
    return configured.expanduser() if configured is not None else default_tokens_path(settings.home)


@dataclass(frozen=True)
class SwarmTokens:
    """The token of each scope (None: no token for that scope) and where each came from."""

    ingest: str | None = field(default=None, repr=False)
    control: str | None = field(default=None, repr=False)
    link: str | None = field(default=None, repr=False)
    read: str | None = field(default=None, repr=False)
    sources: Mapping[str, str] = field(default_factory=dict)  # scope -> "settings" | "file"
    path: Path | None = None  # the tokens file, when one was read or created

    def token(self, scope: Scope) -> str | None:
        value: str | None = getattr(self, scope)
        return value

    @property
    def reads_public(self) -> bool:
        return self.read is None

    def accepts(self, scope: Scope, presented: str | None) -> bool:
        """True when ``presented`` is a token allowed for ``scope``.

        Every candidate is compared, each with :func:`hmac.compare_digest`, so the time taken
        does not tell which token (or how much of one) matched.
        """
        if presented is None:
            return False
        offered = presented.encode("utf-8", "surrogateescape")
        matched = False
        for candidate in ACCEPTED_BY[scope]:
            expected = self.token(candidate)
            if expected is not None:
                matched |= hmac.compare_digest(offered, expected.encode("utf-8"))
        return matched

    def granted(self, presented: str | None) -> Scope | None:
        """The strongest operator scope ``presented`` belongs to (for a 401/403 decision)."""
        for scope in _GRANT_ORDER:
            if self.accepts(scope, presented):
                return scope
        return None

    def describe(self) -> dict[str, str]:
        """Where each scope's token comes from, for logs and banners (never the tokens)."""
        return {scope: self.sources.get(scope, "none") for scope in SCOPES}


def _from_settings(settings: AtomlabSettings) -> dict[Scope, str]:
    swarm = settings.swarm
    configured: tuple[tuple[Scope, SecretStr | None], ...] = (
        ("ingest", swarm.ingest_token),
        ("control", swarm.control_token),
        ("link", swarm.link_token),
        ("read", swarm.read_token),
    )
    return {
        scope: _checked(secret.get_secret_value(), f"swarm.{scope}_token")
        for scope, secret in configured
        if secret is not None
    }


def _checked(token: str, where: str) -> str:
    """A usable token, else InvalidInputError naming where it came from (never its value)."""
    if not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
        raise InvalidInputError(
            f"{where} must be {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters long (it has "
            f"{len(token)}); generate one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'",
            field=where,
        )
    if not token.isprintable() or any(ch.isspace() for ch in token):
        raise InvalidInputError(f"{where} must be printable characters without spaces", field=where)
    return token


def read_tokens_file(path: Path) -> dict[Scope, str]:
    """The tokens in ``path`` (``{"ingest": "...", ...}``); InvalidInputError when unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(
            f"cannot read the swarm tokens file {path}: {exc.strerror or exc}; fix its "
            "permissions, or delete it so that 'atomlab swarm serve' writes a new one",
            field="swarm.tokens_file",
            value=str(path),
        ) from None
    except UnicodeDecodeError:
        raise InvalidInputError(
            f"the swarm tokens file {path} is not UTF-8 text; delete it so that "
            "'atomlab swarm serve' writes a new one",
            field="swarm.tokens_file",
            value=str(path),
        ) from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise InvalidInputError(
            f'the swarm tokens file {path} must hold a JSON object like {{"ingest": "...", '
            '"control": "...", "link": "..."}; delete it so that serve writes a new one',
            field="swarm.tokens_file",
            value=str(path),
        )
    unknown = sorted(set(data) - set(SCOPES))
    if unknown:
        raise InvalidInputError(
            f"the swarm tokens file {path} names unknown scopes {unknown[:5]}; the scopes are "
            f"{', '.join(SCOPES)}",
            field="swarm.tokens_file",
            value=str(path),
        )
    found: dict[Scope, str] = {}
    for scope in SCOPES:
        value = data.get(scope)
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidInputError(
                f"the {scope!r} token in {path} must be a string", field=f"tokens.{scope}"
            )
        found[scope] = _checked(value, f"the {scope!r} token in {path}")
    return found


def _write_new_tokens_file(path: Path) -> dict[Scope, str] | None:
    """Create ``path`` (0600, exclusively) with a random token per generated scope; None when
    another process created it first."""
    tokens: dict[Scope, str] = {
        scope: secrets.token_urlsafe(TOKEN_BYTES) for scope in GENERATED_SCOPES
    }
    try:
        path.parent.mkdir(mode=TOKENS_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, TOKENS_FILE_MODE)
    except FileExistsError:
        return None
    except OSError as exc:
        raise InvalidInputError(
            f"cannot create the swarm tokens file {path}: {exc.strerror or exc}; set "
            "swarm.tokens_file to a writable place or give the tokens through "
            "ATOMLAB_SWARM__INGEST_TOKEN / _CONTROL_TOKEN / _LINK_TOKEN",
            field="swarm.tokens_file",
            value=str(path),
        ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(tokens, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return tokens


def _refuse_loose_permissions(path: Path) -> None:
    """A tokens file others can read is refused, as ssh refuses such a key."""
    if os.name != "posix":
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidInputError(
            f"the swarm tokens file {path} is readable by others (mode "
            f"{stat.S_IMODE(mode):04o}); run: chmod 600 {path}",
            field="swarm.tokens_file",
            value=str(path),
        )


def load_tokens(settings: AtomlabSettings, *, create: bool = False) -> SwarmTokens:
    """Every scope's token: settings / environment first, then the tokens file.

    ``create=True`` (the service) writes the tokens file with random ingest, control and link
    tokens when it does not exist and one of those scopes has no token from the settings; a
    client (``create=False``) just reads it when it is there.
    """
    found: dict[Scope, str] = _from_settings(settings)
    sources: dict[str, str] = {scope: "settings" for scope in found}
    path = tokens_path(settings)
    missing = [scope for scope in GENERATED_SCOPES if scope not in found]
    from_file: dict[Scope, str] = {}
    used: Path | None = None
    if path.is_file():
        if create:
            _refuse_loose_permissions(path)
        from_file = read_tokens_file(path)
        used = path
    elif path.exists():
        raise InvalidInputError(
            f"the swarm tokens file {path} is not a file; remove it or set swarm.tokens_file",
            field="swarm.tokens_file",
            value=str(path),
        )
    elif create and missing:
        written = _write_new_tokens_file(path)
        from_file = written if written is not None else read_tokens_file(path)
        used = path
    for scope, token in from_file.items():
        if scope not in found:
            found[scope] = token
            sources[scope] = "file"
    return SwarmTokens(
        ingest=found.get("ingest"),
        control=found.get("control"),
        link=found.get("link"),
        read=found.get("read"),
        sources=sources,
        path=used,
    )


def client_token(settings: AtomlabSettings, scope: Scope) -> str | None:
    """The token a client should present for ``scope`` (the scope's own, else a stronger one
    the client has), or None when it has none (reads may be public)."""
    tokens = load_tokens(settings)
    for candidate in ACCEPTED_BY[scope]:
        token = tokens.token(candidate)
        if token is not None:
            return token
    return None


def bearer_headers(settings: AtomlabSettings, scope: Scope) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}`` for ``scope``, or ``{}`` without a token."""
    token = client_token(settings, scope)
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None."""
    if not authorization:
        return None
    kind, _, token = authorization.strip().partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


__all__ = [
    "ACCEPTED_BY",
    "SCOPES",
    "Scope",
    "SwarmTokens",
    "bearer_headers",
    "bearer_token",
    "client_token",
    "default_tokens_path",
    "load_tokens",
    "read_tokens_file",
    "tokens_path",
]
