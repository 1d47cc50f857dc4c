"""The error responses each route documents in OpenAPI (and so may return)."""

from typing import Any

from pydantic import BaseModel


class Problem(BaseModel):
    detail: str


Responses = dict[int | str, dict[str, Any]]


def _error(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


UNREADABLE: Responses = {
    400: {
        "description": "The request cannot be parsed: its body (JSON), or the HTTP request "
        "itself, such as a request line over the server's limit (plain text, from the HTTP "
        "server before the API sees it).",
        "model": Problem,
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
UNAUTHORIZED: Responses = {
    401: _error("Missing or wrong key, X-API-Key or bearer token (when a key is configured).")
}
UNAVAILABLE: Responses = {
    503: _error(
        "Nothing was done; try again after Retry-After: the database is unreachable, starting "
        "up or locked past the busy timeout, or the write queue is full."
    )
}
SERVER_ERROR: Responses = {500: _error("The database refused the request (what it said).")}
NOT_FOUND: Responses = {404: _error("No such row, or it is soft-deleted.")}
CONFLICT: Responses = {409: _error("A unique value is taken, or RESTRICT: rows still refer to it.")}
TOO_LARGE: Responses = {
    413: {
        "description": "The request body is over TICKVAULT_API_MAX_BODY_MB.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}
# Every route: an unreadable body, the key (when configured), the database's availability.
COMMON: Responses = {**UNREADABLE, **UNAUTHORIZED, **UNAVAILABLE, **SERVER_ERROR}
