"""The HTTP API keeps the promises of its OpenAPI description, on SQLite and PostgreSQL: the
status codes it documents, the methods each path takes, and what a schema-valid request gets.
"""

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.e2e.test_api import T0, add_instrument, iso, make_client, post_ticks
from tickvault.api.routes import market_data


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


def test_an_id_in_a_query_string_is_digits(client: TestClient) -> None:
    """The schema says integer: "50.0" is refused with the rest of what is not one."""
    aapl = add_instrument(client, "AAPL")
    assert client.get("/market-data/latest", params={"instrument_id": str(aapl)}).status_code == 200
    for value in (f"{aapl}.0", f"{aapl}e0", f" {aapl}", "0x1", "1_0", "\u0661"):
        for path in ("/market-data/latest", "/market-data/deleted", "/alert-rules"):
            refused = client.get(path, params={"instrument_id": value})
            assert refused.status_code == 422, (path, value, refused.text)
            first = refused.json()["detail"][0]
            assert first["loc"][:2] == ["query", "instrument_id"], (path, value)


def _query_schema(client: TestClient, path: str, name: str) -> dict[str, Any]:
    (parameter,) = [p for p in _openapi(client)["paths"][path]["get"]["parameters"]
                    if p["name"] == name]  # fmt: skip
    (text,) = [s for s in parameter["schema"]["anyOf"] if s["type"] == "string"]
    return dict(text)


def test_every_cursor_the_schema_allows_is_a_position(client: TestClient) -> None:
    aapl = add_instrument(client, "AAPL")
    post_ticks(client, [{"instrument_id": aapl, "timestamp": iso(T0 + timedelta(seconds=n)),
                         "price": n} for n in range(3)])  # fmt: skip
    window = {"instrument_id": aapl, "start": iso(T0), "end": iso(T0 + timedelta(hours=1))}
    by_time = _query_schema(client, "/market-data/range", "cursor")["pattern"]
    by_id = _query_schema(client, "/instruments", "cursor")["pattern"]

    first = client.get("/market-data/range", params={**window, "limit": 1}).json()
    assert re.search(by_time, first["next_cursor"])
    for cursor, prices in [
        (first["next_cursor"], [1.0, 2.0]),
        ("0_0", [0.0, 1.0, 2.0]),  # 1970: before every tick
        ("-62135596800000001_5", [0.0, 1.0, 2.0]),  # before the calendar's first instant
        ("999999999999999999_0", []),  # past its last
        ("253402300799999999_9999999999999999999", []),
    ]:
        assert re.search(by_time, cursor)
        page = client.get("/market-data/range", params={**window, "cursor": cursor})
        assert page.status_code == 200, (cursor, page.text)
        assert [t["price"] for t in page.json()["items"]] == prices, cursor
    for cursor, ids in [("0", [aapl]), ("0000", [aapl]), ("9999999999999999999", [])]:
        assert re.search(by_id, cursor)
        page = client.get("/instruments", params={"cursor": cursor}).json()
        assert [i["id"] for i in page["items"]] == ids, cursor
    for path in ["/alert-rules", "/alert-logs", "/market-data/deleted"]:  # int and bigint ids
        page = client.get(path, params={"cursor": "9999999999999999999"})
        assert page.json() == {"items": [], "next_cursor": None}, path
    for cursor in ["abc", "-5", "2024-05-06T13:30:00Z|1"]:
        assert not re.search(by_id, cursor)
        assert not re.search(by_time, cursor)
        assert client.get("/alert-logs", params={"cursor": cursor}).status_code == 422
        bad = client.get("/market-data/range", params={**window, "cursor": cursor})
        assert bad.status_code == 422


def test_an_empty_or_backward_window_reads_nothing(client: TestClient) -> None:
    aapl = add_instrument(client, "AAPL")
    post_ticks(client, [{"instrument_id": aapl, "timestamp": iso(T0), "price": 1.0}])
    for start, end in [(T0, T0), (T0 + timedelta(hours=1), T0)]:
        window = {"instrument_id": aapl, "start": iso(start), "end": iso(end)}
        page = client.get("/market-data/range", params=window)
        assert page.status_code == 200, page.text
        assert page.json() == {"items": [], "next_cursor": None}
        bars = client.get("/market-data/ohlcv", params={**window, "interval": "1m"})
        assert bars.status_code == 200, bars.text
        assert bars.json() == []


def test_times_at_the_ends_of_the_calendar_are_read_as_its_ends(client: TestClient) -> None:
    aapl = add_instrument(client, "AAPL")
    post_ticks(client, [{"instrument_id": aapl, "timestamp": iso(T0), "price": 1.0}])
    # Both are valid RFC 3339 times; in UTC one is before year 1, the other after 9999.
    window = {
        "instrument_id": aapl,
        "start": "0001-01-01T00:00:00+01:00",
        "end": "9999-12-31T23:00:00-01:00",
    }
    page = client.get("/market-data/range", params=window)
    assert page.status_code == 200, page.text
    assert [t["price"] for t in page.json()["items"]] == [1.0]
    bars = client.get("/market-data/ohlcv", params={**window, "interval": "1d"}).json()
    assert [b["ticks"] for b in bars] == [1]
    logs = client.get("/alert-logs", params={"start": window["start"], "end": window["end"]})
    assert logs.status_code == 200, logs.text


def test_ohlcv_past_its_bar_limit_links_to_the_rest(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(market_data, "MAX_BARS", 2)
    aapl = add_instrument(client, "AAPL")
    post_ticks(client, [{"instrument_id": aapl, "timestamp": iso(T0 + timedelta(minutes=n)),
                         "price": 10.0 + n} for n in range(3)])  # fmt: skip
    window = {"instrument_id": aapl, "interval": "1m", "start": iso(T0),
              "end": iso(T0 + timedelta(hours=1))}  # fmt: skip
    first = client.get("/market-data/ohlcv", params=window)
    assert [b["open"] for b in first.json()] == [10.0, 11.0]
    link = first.headers["link"]
    assert link.endswith('>; rel="next"')
    rest = client.get(link[1 : link.index(">")])
    assert [b["open"] for b in rest.json()] == [12.0]
    assert "link" not in rest.headers
    documented = _openapi(client)["paths"]["/market-data/ohlcv"]["get"]["responses"]["200"]
    assert "Link" in documented["headers"]


def test_a_csv_upload_is_taken_exactly_when_it_matches_the_schema_s_pattern(
    client: TestClient,
) -> None:
    add_instrument(client, "AAPL")
    body = _openapi(client)["components"]["schemas"]["Body_upload_csv_market_data_csv_post"]
    pattern = body["properties"]["file"]["pattern"]
    tick = "AAPL,2024-05-06T13:30:00Z,1\n"
    taken = [
        "timestamp,symbol,price\n",
        f"symbol,timestamp,price\n{tick}",
        f'\ufeff"symbol","timestamp","price"\r\n{tick}',
        f'"a ""b""",symbol,x,timestamp,price\nq,{tick[:-1]},1\n',
    ]
    # The reader would take the last one; the API keeps to its schema.
    refused = ["", "\n", "timestamp\n", "price,volume\n1,2\n", "false", '""timestamp,symbol\n']
    for text in taken:
        assert re.search(pattern, text), text
        response = client.post("/market-data/csv", files={"file": ("t.csv", text.encode())})
        assert response.status_code == 200, (text, response.text)
    for text in refused:
        assert not re.search(pattern, text), text
        response = client.post("/market-data/csv", files={"file": ("t.csv", text.encode())})
        assert response.status_code == 422, (text, response.text)
    assert len(client.get("/market-data/range", params={"instrument_id": 1, "start": iso(T0),
               "end": iso(T0 + timedelta(hours=1))}).json()["items"]) == 2  # fmt: skip


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_docs_pages_load_everything_from_the_service_itself(
    client: TestClient, page: str
) -> None:
    html = client.get(page)
    assert html.status_code == 200
    assert html.headers["content-type"].startswith("text/html")
    # Every URL the page loads: src, href, ReDoc's spec-url and Swagger UI's url: '...'.
    urls = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']|url:\s*'([^']+)'""", html.text)
    loaded = {a or b for a, b in urls}
    assert not re.search(r"(?i)\b(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html.text), html.text
    assert "/openapi.json" in loaded
    assert any(url.endswith(".js") for url in loaded), loaded
    for url in loaded:
        assert url.startswith("/"), url
        assert client.get(url).status_code == 200, url
    script = next(url for url in loaded if url.endswith(".js"))
    assert client.post(script).headers["allow"] == "GET, HEAD"  # the files' own methods


def test_both_post_routes_document_the_same_key_header_and_security(client: TestClient) -> None:
    """POST /market-data declares its Idempotency-Key header and its security by hand (it
    reads them itself, for speed); they must say what FastAPI generates for the CSV route."""
    paths = _openapi(client)["paths"]
    post, csv = paths["/market-data"]["post"], paths["/market-data/csv"]["post"]

    def key(operation: dict[str, Any]) -> list[dict[str, Any]]:
        return [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]

    assert len(key(post)) == 1
    assert key(post) == key(csv)
    assert post["security"] == csv["security"]
    assert {"401"} <= post["responses"].keys()
