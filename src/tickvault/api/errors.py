"""The one place tickvault's errors become HTTP responses.

400 means the body is not JSON at all; 422, per field, that it is JSON the API cannot take.
405 lists in Allow every method of the path, whichever route answered. 503 with Retry-After
means "nothing was done, try again": the database is unreachable, starting up, locked past
the busy timeout, or the write queue is full. Any other database error is a 500 that says
what the database said (and is logged with its traceback).
"""

import logging

from fastapi import FastAPI, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match

from tickvault.database.failures import DRIVER_ERRORS, Failure, kind_of, reason_of
from tickvault.errors import (
    ConflictError,
    DatabaseError,
    DatabaseUnavailable,
    MigrationError,
    NotAcceptable,
    NotFoundError,
    StillReferenced,
    TickvaultError,
    UnknownTableError,
    ValidationError,
)

# First match wins: subclasses before their parents.
STATUS_OF: list[tuple[type[TickvaultError], int]] = [
    (NotFoundError, status.HTTP_404_NOT_FOUND),
    (UnknownTableError, status.HTTP_404_NOT_FOUND),
    (NotAcceptable, status.HTTP_406_NOT_ACCEPTABLE),
    (ValidationError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (ConflictError, status.HTTP_409_CONFLICT),
    (StillReferenced, status.HTTP_409_CONFLICT),
    (MigrationError, status.HTTP_409_CONFLICT),
    (DatabaseUnavailable, status.HTTP_503_SERVICE_UNAVAILABLE),
    (DatabaseError, status.HTTP_500_INTERNAL_SERVER_ERROR),
]
RETRY_AFTER = {"Retry-After": "1"}
logger = logging.getLogger(__name__)


def status_of(exc: TickvaultError) -> int:
    return next(
        (code for kind, code in STATUS_OF if isinstance(exc, kind)),
        status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


async def _tickvault_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TickvaultError)
    if isinstance(exc, ValidationError):
        # The same shape as FastAPI's own 422s, so a client reads every 422 one way.
        where = "query" if request.method in ("GET", "DELETE") else "body"
        detail = [{"loc": [where], "msg": str(exc), "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    code = status_of(exc)
    if code == status.HTTP_503_SERVICE_UNAVAILABLE:
        return JSONResponse({"detail": str(exc)}, status_code=code, headers=RETRY_AFTER)
    if code == status.HTTP_500_INTERNAL_SERVER_ERROR:
        logger.error("%s %s: %s", request.method, request.url.path, exc, exc_info=exc)
    return JSONResponse({"detail": str(exc)}, status_code=code)


def _text(value: object) -> str | int:
    """A value safe to encode as JSON: lone surrogates escaped, never NaN."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's per-field 422, without echoing the input: a client's NaN, infinity or lone
    surrogate cannot be written back as JSON (the default handler then fails with a 500).
    A body that is not JSON at all has no fields to name: 400, with where it stopped."""
    assert isinstance(exc, RequestValidationError)
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            where = error.get("loc", ())[-1]
            what = _text(error.get("ctx", {}).get("error", "JSON decode error"))
            return JSONResponse(
                {"detail": f"the body is not valid JSON: {what} (at character {_text(where)})"},
                status_code=status.HTTP_400_BAD_REQUEST,
            )
    detail = [
        {
            "loc": [_text(part) for part in error.get("loc", ())],
            "msg": _text(error.get("msg", "")),
            "type": _text(error.get("type", "")),
        }
        for error in exc.errors()
    ]
    return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def _driver_error(request: Request, exc: Exception) -> JSONResponse:
    """A database or connection error that no repository translated."""
    reason = reason_of(exc)
    if kind_of(exc) is Failure.UNAVAILABLE:
        return JSONResponse(
            {"detail": f"database unavailable: {reason}"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers=RETRY_AFTER,
        )
    logger.error("%s %s: database error", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": f"database error: {reason}"},
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
    )


METHODS = ("DELETE", "GET", "HEAD", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this request's path. Starlette's own 405 names only
    the methods of the first route whose path matched (so OPTIONS /instruments said POST)."""
    return [
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = await http_exception_handler(request, exc)  # with the raiser's own Allow
    # A mounted app (the docs' static files) answers its own 405: no route here matches.
    if methods := allowed_methods(request):
        response.headers["Allow"] = ", ".join(methods)
    return response


def install(app: FastAPI) -> None:
    app.add_exception_handler(TickvaultError, _tickvault_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(status.HTTP_405_METHOD_NOT_ALLOWED, _method_not_allowed)
    # Connection errors reach here as SQLAlchemy's, asyncpg's or the OS's own.
    for kind in DRIVER_ERRORS:
        app.add_exception_handler(kind, _driver_error)
