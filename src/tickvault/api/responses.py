"""The error responses each route documents in OpenAPI (and so may return)."""

from typing import Any

from pydantic import BaseModel


class Problem(BaseModel):
    detail: str


def _error(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


UNREADABLE = {400: _error("The request body cannot be parsed.")}
UNAUTHORIZED = {401: _error("Missing or wrong X-API-Key (when a key is configured).")}
UNAVAILABLE = {503: _error("The database is unavailable (locked past the busy timeout, down).")}
NOT_FOUND = {404: _error("No such row, or it is soft-deleted.")}
CONFLICT = {409: _error("A unique value is taken, or RESTRICT: rows still refer to it.")}
TOO_LARGE = {
    413: {
        "description": "The request body is over TICKVAULT_API_MAX_BODY_MB.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
# Every route: an unreadable body, the key (when configured), the database's availability.
COMMON = {**UNREADABLE, **UNAUTHORIZED, **UNAVAILABLE}
