"""The HTTP API keeps the promises of its OpenAPI description, on SQLite and PostgreSQL: the
status codes it documents, the methods each path takes, and what a schema-valid request gets.
"""

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.e2e.test_api import add_instrument, make_client


@pytest.fixture
def client(head_url: str) -> Iterator[TestClient]:
    with make_client(head_url) as client:
        yield client


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/instruments", '{"symbol": "MSFT", "name": '),
        ("PATCH", "/instruments/1", "is_active=false"),
        ("POST", "/market-data", '{"ticks": [{"symbol": "AAPL"},]}'),
        ("POST", "/alert-rules", "\xff"),
    ],
)
def test_a_body_that_is_not_json_is_the_documented_400(
    client: TestClient, method: str, path: str, body: str
) -> None:
    add_instrument(client, "AAPL")
    response = client.request(
        method, path, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert "not valid JSON" in response.json()["detail"]
    template = path.replace("/1", "/{instrument_id}")
    documented = client.get("/openapi.json").json()["paths"][template][method.lower()]
    assert documented["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }
    assert [i["symbol"] for i in client.get("/instruments").json()["items"]] == ["AAPL"]
    assert client.get("/market-data/latest").json() == []


def _documented_methods(client: TestClient) -> dict[str, set[str]]:
    """Each path of the OpenAPI description, as a client would write it, and its methods."""
    paths = client.get("/openapi.json").json()["paths"]
    return {
        path.replace("{table}", "market_data").format_map({"instrument_id": 1, "tick_id": 1,
            "rule_id": 1, "log_id": 1}): {method.upper() for method in operations}
        for path, operations in paths.items()
    }  # fmt: skip


def test_every_path_answers_an_undeclared_method_with_405_and_all_its_methods(
    client: TestClient,
) -> None:
    documented = _documented_methods(client)
    assert documented["/market-data/latest"] == {"GET"}
    assert documented["/instruments/1"] == {"GET", "PATCH", "DELETE"}
    for path, methods in documented.items():
        for method in {"OPTIONS", "PUT", "GET", "POST", "PATCH", "DELETE"} - methods:
            response = client.request(method, path)
            assert response.status_code == 405, (method, path, response.text)
            assert set(response.headers["allow"].split(", ")) == methods, (method, path)
