"""Who may call what, and how much they may send.

Writes need ``X-API-Key`` equal to ``TICKVAULT_API_KEY``; reads too when
``TICKVAULT_READ_REQUIRES_KEY`` is set. With no key configured every call is open, which is
why ``tickvault serve`` then listens on 127.0.0.1 only.
"""

import json
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="Needed for writes when TICKVAULT_API_KEY is set (and for reads with "
    "TICKVAULT_READ_REQUIRES_KEY).",
)
ApiKey = Annotated[str | None, Security(_api_key)]


def _check(request: Request, given: str | None) -> None:
    expected = request.app.state.runtime.settings.api_key
    if expected is None:
        return
    if given is None or not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="missing or wrong X-API-Key header",
            headers={"WWW-Authenticate": "APIKey"},
        )


async def require_write_key(request: Request, key: ApiKey) -> None:
    _check(request, key)


async def require_read_key(request: Request, key: ApiKey) -> None:
    if request.app.state.runtime.settings.read_requires_key:
        _check(request, key)


READ = [Depends(require_read_key)]
WRITE = [Depends(require_write_key)]


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException passes through FastAPI's body parsing unchanged.
                    raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, self._detail)
            return message

        await self.app(scope, limited, send)

    @property
    def _detail(self) -> str:
        return f"request body larger than {self.max_bytes} bytes (TICKVAULT_API_MAX_BODY_MB)"

    async def _too_large(self, send: Send) -> None:
        body = json.dumps({"detail": self._detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
