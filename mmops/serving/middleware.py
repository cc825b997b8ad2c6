"""ASGI middleware in front of the prediction service: bearer-token auth and a request-body size limit.

Both are plain ASGI (no Starlette request objects), so they wrap BentoML's app as it is and answer before a
byte of an unauthorised or oversized body is parsed.

- `MMOPS_API_TOKEN` set: every route except the probes (`/healthz`, `/livez`, `/readyz`) and `/metrics`
  needs `Authorization: Bearer <token>`; otherwise 401. The token is compared in constant time and never
  logged (not even a prefix).
- Bodies over `MMOPS_MAX_BODY_BYTES` (default 64 MiB: 256 records with a few images each) get 413, whether
  the client declares the length or streams chunks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("mmops.serving")

OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
# A refused request's body (401, 413) is read and dropped up to this size before the answer, so that the
# client, still sending, reads the answer rather than a connection reset
DRAIN_BYTES = 64 * 1024 * 1024


async def _answer(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None,
                  detail: str | None = None) -> None:
    body = json.dumps({"error": message, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class BearerAuth:
    """401 unless the request carries a configured bearer token (no token configured: a pass-through).

    `MMOPS_API_TOKEN` may hold several tokens separated by whitespace, each accepted: to rotate, deploy
    "NEW OLD", move the clients to NEW, then deploy "NEW" (docs/operations.md)."""

    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app = app
        token = os.environ.get("MMOPS_API_TOKEN", "") if token is None else token
        # only digests are kept: no token sits in this object, so no repr can print one
        self._digests = [hashlib.sha256(t.encode()).digest() for t in token.split()]

    def allowed(self, scope: Scope) -> bool:
        if not self._digests or scope.get("path", "") in OPEN_PATHS or scope.get("method") == "OPTIONS":
            return True
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                scheme, _, given = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    digest = hashlib.sha256(given.strip().encode()).digest()
                    # every digest is compared (no early exit): the time taken says nothing about which matched
                    return sum(hmac.compare_digest(digest, d) for d in self._digests) > 0
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.allowed(scope):
            # Read (and drop) the body first: a server that answers and closes while the client is still
            # sending makes the client see a reset or a broken pipe instead of this 401. Up to DRAIN_BYTES; a
            # client that sends more is answered at once and the connection closed.
            headers = [(b"www-authenticate", b'Bearer realm="mmops"')]
            if not await _drain(scope, receive, DRAIN_BYTES):
                headers.append((b"connection", b"close"))
            await _answer(send, 401, "missing or wrong bearer token (Authorization: Bearer <MMOPS_API_TOKEN>)",
                          headers)
            return
        await self.app(scope, receive, send)


def body_limit() -> int:
    return int(os.environ.get("MMOPS_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _drain(scope: Scope, receive: Receive, limit: int) -> bool:
    """Read and drop a request's body, up to `limit` bytes; False when it is (or declares to be) larger."""
    if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
        return True
    declared = _declared_length(scope)
    if declared is not None and declared > limit:
        return False
    seen = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return True
        seen += len(message.get("body", b""))
        if seen > limit:
            return False
        if not message.get("more_body", False):
            return True


class BodyLimit:
    """413 for a body over the limit: at once from Content-Length, else while the chunks arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes or body_limit()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _answer(send, 400, "Content-Length is not a number")
                    return
                if declared > self.max_bytes:
                    drained = await _drain(scope, receive, DRAIN_BYTES)
                    await _answer(send, 413, f"request body is {declared} bytes, over the {self.max_bytes}-byte limit",
                                  [] if drained else [(b"connection", b"close")])
                    return
                await self.app(scope, receive, send)  # declared and within the limit: the server enforces it
                return
        # streamed (chunked) body: read it here, up to the limit, then hand it on as one message
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                chunks.clear()
                drained = not message.get("more_body", False) or await _drain(scope, receive, DRAIN_BYTES - seen)
                await _answer(send, 413, f"request body over the {self.max_bytes}-byte limit",
                              [] if drained else [(b"connection", b"close")])
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)


class RequestCheck:
    """Checks the JSON bodies of the service's API routes before BentoML parses them, so that every client
    mistake is a 4xx in one shape (`{"error", "detail"}`) with a bounded body and a one-line log entry: a
    body that is not JSON, or not of the route's schema (the first few errors named, the rest counted), or
    sent as another media type than the route takes (415). BentoML's own handling answers such requests
    with every pydantic error echoed, a traceback in the log per request, and 500 for a multipart body
    without a boundary."""

    def __init__(self, app: ASGIApp, routes: dict[str, Any] | None = None) -> None:
        from mmops.serving.schemas import CanaryIn, ExplainIn, PredictIn, ReloadIn, ShadowIn

        self.app = app
        self.routes: dict[str, Any] = routes if routes is not None else {
            "/predict": PredictIn, "/explain": ExplainIn, "/admin/reload": ReloadIn, "/admin/shadow": ShadowIn,
            "/admin/canary": CanaryIn}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        model = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if model is None or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        from pydantic import ValidationError

        from mmops.serving.schemas import validation_error

        chunks = []
        while True:  # BodyLimit, outside this middleware, bounds what arrives here
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        path = scope["path"]
        ctype = next((v.decode("latin-1") for n, v in scope.get("headers", []) if n.lower() == b"content-type"),
                     "application/json").split(";")[0].strip().lower()
        if ctype != "application/json":
            await _refuse(send, 415, path, f"{path} takes application/json, not {ctype or 'an empty type'}")
            return
        try:
            model.model_validate_json(body or b"{}")
        except ValidationError as exc:
            if any(e["type"] == "json_invalid" for e in exc.errors()):
                await _refuse(send, 400, path, f"the request body is not valid JSON: {exc.errors()[0]['msg']}")
                return
            err = validation_error(exc)
            await _refuse(send, 400, path, err.error, err.detail)
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands on a body already read, as one message, then the connection's own."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _refuse(send: Send, status: int, path: str, message: str, detail: str | None = None) -> None:
    log.info("%d on %s: %s", status, path, (message + (f": {detail}" if detail else ""))[:300])
    await _answer(send, status, message, detail=detail)
