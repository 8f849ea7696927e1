"""The HTTP boundary: who may call what, and what a request may carry, before any route runs.

:class:`RequestGuard` is a pure ASGI middleware in front of the routes. For each protected
route it checks, in this order and without reading a byte of the body first:

1. the credential (``Authorization: Bearer``; 401 without a valid token, 403 with a token of
   another scope), see :mod:`atomlab.swarm.auth`;
2. the media type of a mutating request: JSON only (415 for forms, text, anything else, so a
   cross-site form post cannot reach a route);
3. the size: ``Content-Length`` or the bytes actually received above ``max_body_bytes`` → 413,
   the rest of the body is not read;
4. for a JSON body: UTF-8 and at most :data:`MAX_JSON_DEPTH` levels deep, else 400.

Everything it refuses has the service's one error shape and is counted
(``atomlab_swarm_rejected_requests_total{reason}``, ``atomlab_swarm_auth_failures_total``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atomlab.core.logging import get_logger
from atomlab.sim.swarm_wire import json_hazard
from atomlab.swarm.auth import Scope as TokenScope
from atomlab.swarm.auth import SwarmTokens, bearer_token
from atomlab.swarm.metrics import SwarmMetrics

MAX_JSON_DEPTH = 32  # the deepest valid body, a sensor-data batch, is 3
JSON_MEDIA_TYPES = frozenset({"application/json"})
READ_METHODS = frozenset({"GET", "HEAD"})
AUTH_REALM = 'Bearer realm="atomlab-swarm"'

ErrorResponder = Callable[..., Any]

log = get_logger(__name__)


@dataclass(frozen=True)
class Protected:
    """A route the guard checks: its scope, and whether it takes a JSON body."""

    scope: TokenScope
    body: bool


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``"application/json; charset=UTF-8"`` → ``("application/json", {"charset": "utf-8"})``."""
    if not content_type:
        return "", {}
    kind, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"').lower()
    return kind.strip().lower(), params


def is_json(content_type: str | None) -> bool:
    kind, params = media_type(content_type)
    json_kind = kind in JSON_MEDIA_TYPES or (
        kind.startswith("application/") and kind.endswith("+json")
    )
    return json_kind and params.get("charset", "utf-8") in ("utf-8", "utf8")


class RequestGuard:
    """See the module docstring. ``routes`` maps ``(method, path)`` to what protects it;
    ``read_paths`` are prefixes of the read routes (checked only when a read token exists)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: SwarmTokens,
        routes: Mapping[tuple[str, str], Protected],
        read_paths: tuple[str, ...],
        max_body_bytes: int,
        metrics: SwarmMetrics,
        error: ErrorResponder,
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.routes = dict(routes)
        self.read_paths = read_paths
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.error = error

    def _protection(self, method: str, path: str) -> Protected | None:
        found = self.routes.get((method, path))
        if found is not None:
            return found
        reading = method in READ_METHODS and not self.tokens.reads_public
        if reading and any(path == p or path.startswith(p + "/") for p in self.read_paths):
            return Protected("read", body=False)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope.get("method", "GET")
        protection = self._protection(method, scope.get("path", ""))
        if protection is None:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        refusal = self._check_credential(protection.scope, headers.get("authorization"))
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        if method in READ_METHODS:
            await self.app(scope, receive, send)
            return
        refused = await self._check_body(protection, headers, receive)
        if isinstance(refused, Refusal):
            await refused(scope, receive, send)
            return
        await self.app(scope, _replay(refused, receive), send)

    def _check_credential(self, scope: TokenScope, authorization: str | None) -> Any:
        if scope == "read" and self.tokens.reads_public:
            return None
        presented = bearer_token(authorization)
        if self.tokens.accepts(scope, presented):
            return None
        self.metrics.auth_failures.labels(scope=scope).inc()
        if presented is not None and self.tokens.granted(presented) is not None:
            log.warning("http.forbidden", scope=scope)
            return self.error(
                403,
                "FORBIDDEN",
                f"this token does not grant the {scope!r} scope; use the {scope} token "
                "(or the control token)",
            )
        log.warning("http.unauthorized", scope=scope, presented=presented is not None)
        response = self.error(
            401,
            "UNAUTHORIZED",
            f"this route needs a bearer token with the {scope!r} scope: send "
            "'Authorization: Bearer <token>' (tokens: ATOMLAB_SWARM__<SCOPE>_TOKEN or the "
            "service's tokens file, <home>/swarm/tokens.json)",
        )
        response.headers["WWW-Authenticate"] = AUTH_REALM
        return response

    async def _check_body(
        self, protection: Protected, headers: dict[str, str], receive: Receive
    ) -> bytes | Refusal:
        content_type = headers.get("content-type")
        length_text = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        declared: int | None = None
        if length_text is not None:
            try:
                declared = int(length_text)
            except ValueError:
                return self._refuse(
                    400, "BAD_REQUEST", "bad_length", "Content-Length is not a number"
                )
            if declared < 0:
                return self._refuse(400, "BAD_REQUEST", "bad_length", "Content-Length is negative")
        has_body = chunked or (declared is not None and declared > 0)
        if (content_type or has_body or protection.body) and not is_json(content_type):
            shown = (content_type or "none")[:100]
            return self._refuse(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "unsupported_media_type",
                f"this route takes JSON only (Content-Type: application/json), not {shown!r}",
            )
        if declared is not None and declared > self.max_body_bytes:
            return self._too_large()
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return Refusal(None)
            body.extend(message.get("body", b""))
            if len(body) > self.max_body_bytes:
                return self._too_large()
            if not message.get("more_body", False):
                break
        data = bytes(body)
        if not data:
            return data
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return self._refuse(
                400, "BAD_REQUEST", "not_utf8", f"the body is not UTF-8 (byte {exc.start})"
            )
        try:
            parsed = json.loads(text)
        except RecursionError:
            return self._deep()
        except ValueError as exc:
            return self._refuse(
                400, "BAD_REQUEST", "not_json", f"the body is not JSON: {str(exc)[:200]}"
            )
        hazard = json_hazard(parsed, MAX_JSON_DEPTH)
        if hazard == "deep":
            return self._deep()
        if hazard == "surrogate":
            return self._refuse(
                400,
                "BAD_REQUEST",
                "surrogate",
                "the body holds an unpaired UTF-16 surrogate (a \\ud800-style escape); send "
                "real characters",
            )
        return data

    def _deep(self) -> Refusal:
        return self._refuse(
            400,
            "BAD_REQUEST",
            "too_deep",
            f"the body is nested deeper than {MAX_JSON_DEPTH} levels",
        )

    def _too_large(self) -> Refusal:
        refusal = self._refuse(
            413,
            "PAYLOAD_TOO_LARGE",
            "too_large",
            f"the body has more than {self.max_body_bytes} bytes (swarm.max_body_bytes); send "
            "smaller batches (atomlab swarm ingest sends 1000 defects per request)",
        )
        if refusal.response is not None:
            # The rest of the body is not read: the connection cannot be reused.
            refusal.response.headers["Connection"] = "close"
        return refusal

    def _refuse(self, status: int, code: str, reason: str, message: str) -> Refusal:
        self.metrics.rejected_requests.labels(reason=reason).inc()
        log.warning("http.request_refused", status=status, reason=reason)
        return Refusal(self.error(status, code, message, field="body", constraint=reason))


@dataclass
class Refusal:
    """A request the guard answers itself (``response`` None: the client went away)."""

    response: Any

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.response is not None:
            await self.response(scope, receive, send)


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in scope.get("headers", []):
        name = key.decode("latin-1").lower()
        found.setdefault(name, value.decode("latin-1"))
    return found


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the buffered body over once, then waits on the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


__all__ = ["MAX_JSON_DEPTH", "Protected", "RequestGuard", "is_json", "media_type"]
