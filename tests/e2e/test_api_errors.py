"""Server-side errors of the HTTP API, on both engines: exact OHLCV volumes past 64 bits, a
permanent database error is a 500 that says so (never a 503 "unavailable"), and every
unexpected error is logged with its traceback."""

import logging
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.e2e.test_api import make_client
from tests.e2e.test_cli_errors import poison
from tests.integration.migration_data import run_on
from tickvault.database.failures import DRIVER_ERRORS
from tickvault.services.validation import MAX_VOLUME

WINDOW = {"start": "2024-05-06T13:30:00Z", "end": "2024-05-06T14:30:00Z"}


@pytest.fixture
def client(head_url: str) -> Iterator[TestClient]:
    with make_client(head_url) as client:
        response = client.post("/instruments", json={"symbol": "AAPL", "name": "Apple"})
        assert response.status_code == 201, response.text
        yield client


def test_ohlcv_volumes_past_64_bits_are_exact(client: TestClient) -> None:
    ticks = [
        {"instrument_id": 1, "timestamp": f"2024-05-06T13:30:0{n}Z", "price": 2.5, "volume": v}
        for n, v in enumerate([MAX_VOLUME, MAX_VOLUME, MAX_VOLUME, 1])
    ]
    assert client.post("/market-data", json={"ticks": ticks}).json()["accepted"] == 4

    response = client.get(
        "/market-data/ohlcv", params={"instrument_id": 1, "interval": "1h", **WINDOW}
    )

    assert response.status_code == 200, response.text
    [bar] = response.json()
    assert (bar["volume"], bar["vwap"], bar["ticks"]) == (3 * MAX_VOLUME + 1, 2.5, 4)
    assert '"volume":27670116110564327422' in response.text  # a JSON integer, not a float


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_permanent_database_error_on_a_read_is_a_logged_500(
    client: TestClient, head_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    run_on(head_url, lambda c: c.execute(sa.text("ALTER TABLE market_data RENAME TO gone")))

    response = client.get(
        "/market-data/ohlcv", params={"instrument_id": 1, "interval": "1m", **WINDOW}
    )

    assert response.status_code == 500, response.text
    assert "Retry-After" not in response.headers
    assert response.json()["detail"].startswith("database error: ")
    assert "market_data" in response.json()["detail"]
    [record] = errors_logged(caplog)
    assert record.exc_info is not None  # the traceback


def test_a_permanent_database_error_on_a_write_is_a_logged_500(
    client: TestClient, head_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    poison(head_url)  # every tick priced 1,000 or more: an error that is no row's fault

    response = client.post(
        "/market-data",
        json={"ticks": [{"instrument_id": 1, "timestamp": WINDOW["start"], "price": 1000}]},
    )

    assert response.status_code == 500, response.text
    assert "Retry-After" not in response.headers
    assert response.json()["detail"].startswith("the database refused the write: ")
    # The driver's error with its traceback, not only the message it became.
    logged = [r.exc_info[1] for r in errors_logged(caplog) if r.exc_info is not None]
    assert any(isinstance(error, DRIVER_ERRORS) for error in logged), logged
