"""The one place tickvault's errors become HTTP responses."""

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from tickvault.errors import (
    ConflictError,
    DatabaseError,
    MigrationError,
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
    (ValidationError, status.HTTP_422_UNPROCESSABLE_CONTENT),
    (ConflictError, status.HTTP_409_CONFLICT),
    (StillReferenced, status.HTTP_409_CONFLICT),
    (MigrationError, status.HTTP_409_CONFLICT),
    (DatabaseError, status.HTTP_503_SERVICE_UNAVAILABLE),
]


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
    return JSONResponse({"detail": str(exc)}, status_code=status_of(exc))


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # "database is locked" past the busy timeout, a dropped connection: try again later.
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return JSONResponse(
        {"detail": f"database unavailable: {reason}"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "1"},
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(TickvaultError, _tickvault_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
