"""The HTTP API keeps the promises of its OpenAPI description, on SQLite and PostgreSQL: the
status codes it documents, the methods each path takes, and what a schema-valid request gets.
"""

import re
from collections.abc import Iterator
from typing import Any

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


def _openapi(client: TestClient) -> dict[str, Any]:
    return dict(client.get("/openapi.json").json())


def test_names_the_schema_allows_are_stored_and_those_it_forbids_are_refused(
    client: TestClient,
) -> None:
    name = _openapi(client)["components"]["schemas"]["InstrumentCreate"]["properties"]["name"]
    allowed = [" Apple ", "Société Générale", "\ufeff", "x" * name["maxLength"]]
    forbidden = ["", "   ", "a\x00b", "tab\there", "bell\x07", "\x7f"]
    assert all(re.search(name["pattern"], text) for text in allowed)
    assert not any(re.search(name["pattern"], text) for text in forbidden)
    for n, text in enumerate(allowed):
        response = client.post("/instruments", json={"symbol": f"S{n}", "name": text})
        assert response.status_code == 201, (text, response.text)
        assert response.json()["name"] == text.strip()
    for text in forbidden:
        response = client.post("/instruments", json={"symbol": "BAD", "name": text})
        assert response.status_code == 422, text
        assert [e["loc"] for e in response.json()["detail"]] == [["body", "name"]]


def test_numbers_are_json_numbers_and_integers_may_be_written_19_0(client: TestClient) -> None:
    aapl = add_instrument(client, "AAPL")
    rule = {"name": "r", "instrument_id": float(aapl), "condition": "price_above",
            "threshold": 1.00004, "cooldown_seconds": 60.0}  # fmt: skip
    created = client.post("/alert-rules", json=rule)
    assert created.status_code == 201, created.text
    assert (created.json()["instrument_id"], created.json()["threshold"]) == (aapl, 1.0)
    changed = client.patch(f"/alert-rules/{created.json()['id']}", json={"threshold": -0.00006})
    assert changed.json()["threshold"] == -0.0001
    for field, value in [("threshold", "1"), ("threshold", True), ("instrument_id", 1.5),
                         ("instrument_id", str(aapl)), ("cooldown_seconds", "60")]:  # fmt: skip
        refused = client.post("/alert-rules", json={**rule, field: value})
        assert refused.status_code == 422, (field, value)
        assert [e["loc"] for e in refused.json()["detail"]] == [["body", field]]
