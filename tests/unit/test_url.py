import pytest

from tickvault.database.url import display_url, to_async_url
from tickvault.errors import ConfigurationError


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("sqlite:///tickvault.db", "sqlite+aiosqlite:///tickvault.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u:pw@db:5432/ticks", "postgresql+asyncpg://u:pw@db:5432/ticks"),
        ("postgres://u@db/ticks", "postgresql+asyncpg://u@db/ticks"),
        ("postgresql+psycopg2://u@db/ticks", "postgresql+asyncpg://u@db/ticks"),
        ("postgresql+asyncpg://u@db/ticks", "postgresql+asyncpg://u@db/ticks"),
    ],
)
def test_sync_urls_map_to_the_async_drivers(given: str, expected: str) -> None:
    assert to_async_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ("mysql://root@localhost/db", "unsupported database 'mysql'"),
        ("not a url", "cannot parse database URL 'not a url'"),
    ],
)
def test_unusable_urls_are_refused_with_the_reason(given: str, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        to_async_url(given)


def test_passwords_never_reach_messages() -> None:
    with pytest.raises(ConfigurationError) as caught:
        to_async_url("oracle://scott:tiger@db/orcl")
    assert "tiger" not in str(caught.value)
    assert "tiger" not in display_url("postgresql://scott:tiger@db/x")


def test_an_in_memory_sqlite_url_keeps_its_database() -> None:
    url = to_async_url("sqlite+pysqlite:///:memory:")
    assert (url.drivername, url.database) == ("sqlite+aiosqlite", ":memory:")
