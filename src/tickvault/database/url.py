"""Database URLs: what tickvault accepts and how it maps them to the async drivers.

``sqlite:///x.db`` becomes ``sqlite+aiosqlite:///x.db``; ``postgresql://…`` (and
``postgres://…``, ``postgresql+psycopg2://…``) becomes ``postgresql+asyncpg://…``.
"""

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from tickvault.errors import ConfigurationError

_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
_BACKEND_ALIASES = {"postgres": "postgresql"}


def to_async_url(url: str | URL) -> URL:
    """The URL tickvault connects with, or ``ConfigurationError`` naming what is wrong."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(
            f"cannot parse database URL {str(url)!r}: expected e.g. "
            "sqlite:///tickvault.db or postgresql://user@host/dbname"
        ) from exc
    backend = _BACKEND_ALIASES.get(parsed.get_backend_name(), parsed.get_backend_name())
    if backend not in _ASYNC_DRIVERS:
        raise ConfigurationError(
            f"unsupported database {parsed.get_backend_name()!r} in URL "
            f"{display_url(parsed)}: tickvault runs on sqlite and postgresql"
        )
    driver = _ASYNC_DRIVERS[backend]
    return parsed.set(drivername=f"{backend}+{driver}")


def display_url(url: str | URL) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"
