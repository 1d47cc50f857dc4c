import pytest

from tickvault.database.admin import create_database, drop_database
from tickvault.errors import ConfigurationError


@pytest.mark.parametrize("name", ['x"; DROP DATABASE test; --', "", "1abc", "a-b", "a" * 64])
async def test_only_plain_identifiers_are_accepted(name: str) -> None:
    # Refused before any connection is made: the server URL is never reached.
    with pytest.raises(ConfigurationError, match="is not a plain identifier"):
        await create_database("postgresql://nobody@host.invalid:1/x", name)
    with pytest.raises(ConfigurationError, match="is not a plain identifier"):
        await drop_database("postgresql://nobody@host.invalid:1/x", name)
