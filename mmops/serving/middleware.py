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
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


async def _answer(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
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
            await _answer(send, 401, "missing or wrong bearer token (Authorization: Bearer <MMOPS_API_TOKEN>)",
                          [(b"www-authenticate", b'Bearer realm="mmops"')])
            return
        await self.app(scope, receive, send)


class BodyLimit:
    """413 for a body over the limit: at once from Content-Length, else while the chunks arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes or int(os.environ.get("MMOPS_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES))

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
                    await _answer(send, 413, f"request body is {declared} bytes, over the {self.max_bytes}-byte limit")
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
                await _answer(send, 413, f"request body over the {self.max_bytes}-byte limit")
                return
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
