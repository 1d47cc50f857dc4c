"""Who may call what.

Writes need the key ``TICKVAULT_API_KEY``; reads too when ``TICKVAULT_READ_REQUIRES_KEY`` is
set. The key goes in ``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` (what Prometheus
and most HTTP tooling send), on every endpoint that takes it, the WebSocket handshake too;
either is compared in constant time. With no key configured every call is open, which is why
``tickvault serve`` then listens on 127.0.0.1 only.
"""

import secrets
from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPBearer

REFUSED = "missing or wrong API key (X-API-Key, or Authorization: Bearer)"

_api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="Needed for writes when TICKVAULT_API_KEY is set (and for reads with "
    "TICKVAULT_READ_REQUIRES_KEY).",
)
_bearer = HTTPBearer(
    auto_error=False,
    description="The same key as `Authorization: Bearer <key>`, instead of X-API-Key.",
)


def _bearer_token(authorization: str | None) -> str | None:
    # RFC 9110: the scheme is case-insensitive, one or more spaces before the token.
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def key_matches(expected: str, headers: Mapping[str, str]) -> bool:
    """Whether ``headers`` carry ``expected`` as X-API-Key or as a bearer token."""
    wanted = expected.encode()
    given = [headers.get("x-api-key"), _bearer_token(headers.get("authorization"))]
    # Both compared, in constant time each, whichever was sent.
    matches = [
        secrets.compare_digest(candidate.encode(), wanted)
        for candidate in given
        if candidate is not None
    ]
    return any(matches)


def _check(request: Request) -> None:
    expected = request.app.state.runtime.settings.api_key
    if expected is None or key_matches(expected, request.headers):
        return
    raise HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail=REFUSED,
        headers={"WWW-Authenticate": 'Bearer realm="tickvault"'},
    )


async def require_write_key(
    request: Request,
    # Declared for OpenAPI (either scheme will do); the check reads the headers itself.
    _key: Annotated[str | None, Security(_api_key)],
    _token: Annotated[object, Security(_bearer)],
) -> None:
    _check(request)


async def require_read_key(request: Request) -> None:
    # Not a security scheme in OpenAPI: reads are open unless TICKVAULT_READ_REQUIRES_KEY.
    if request.app.state.runtime.settings.read_requires_key:
        _check(request)


async def check_write_key(request: Request) -> None:
    # WRITE's check as one plain dependency, for POST /market-data: there, FastAPI's two
    # security dependencies cost about as much as all the rest of the request's handling.
    _check(request)


READ = [Depends(require_read_key)]
WRITE = [Depends(require_write_key)]
WRITE_CHECK = [Depends(check_write_key)]
# What OpenAPI says of a WRITE route, for a route that checks the key with WRITE_CHECK.
WRITE_SECURITY: list[dict[str, list[str]]] = [{"APIKeyHeader": []}, {"HTTPBearer": []}]
