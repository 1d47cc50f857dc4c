"""Who may call what.

Writes need ``X-API-Key`` equal to ``TICKVAULT_API_KEY``; reads too when
``TICKVAULT_READ_REQUIRES_KEY`` is set. With no key configured every call is open, which is
why ``tickvault serve`` then listens on 127.0.0.1 only.
"""

import secrets
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

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


async def require_read_key(
    request: Request,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    # Not a security scheme in OpenAPI: reads are open unless TICKVAULT_READ_REQUIRES_KEY.
    if request.app.state.runtime.settings.read_requires_key:
        _check(request, x_api_key)


READ = [Depends(require_read_key)]
WRITE = [Depends(require_write_key)]
