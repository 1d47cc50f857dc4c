"""The HTTP API as a client drives it, on SQLite and PostgreSQL: every endpoint, auth on and
off, the 4-decimal rule and every error code."""

import asyncio
import gc
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tickvault.api import create_app
from tickvault.database.engine import create_engine
from tickvault.settings import Settings, get_settings

KEY = "s3cret-key"
T0 = datetime(2024, 5, 6, 13, 30, tzinfo=UTC)


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def analyze(url: str, table: str) -> None:
    """Refresh PostgreSQL's statistics of ``table`` (one of tickvault's, never user input)."""

    async def run() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.execute(text(f"ANALYZE {table}"))
        finally:
            await engine.dispose()

    asyncio.run(run())


def make_client(url: str, **settings: object) -> TestClient:
    return TestClient(create_app(url, settings=Settings(database_url=url, **settings)))


@pytest.fixture
def client(head_url: str) -> Iterator[TestClient]:
    """The API with no key configured: every call is open."""
    with make_client(head_url) as client:
        yield client


def add_instrument(client: TestClient, symbol: str = "AAPL", **extra: object) -> int:
    response = client.post("/instruments", json={"symbol": symbol, "name": symbol, **extra})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def reason(response: object) -> str:
    """The message of an error response: one string, or a 422's per-field messages."""
    detail = response.json()["detail"]  # type: ignore[attr-defined]
    return detail if isinstance(detail, str) else " ".join(e["msg"] for e in detail)


def post_ticks(client: TestClient, ticks: list[dict[str, object]]) -> dict[str, object]:
    response = client.post("/market-data", json={"ticks": ticks})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_instruments_create_list_get_deactivate_reactivate(client: TestClient) -> None:
    first = add_instrument(client, "AAPL", exchange="XNAS")
    second = add_instrument(client, "EURUSD", asset_class="fx", currency="USD")
    body = client.get(f"/instruments/{first}").json()
    assert body["symbol"] == "AAPL"
    assert body["exchange"] == "XNAS"
    assert body["is_active"] is True
    assert body["created_at"].endswith("Z")

    assert (
        client.patch(f"/instruments/{second}", json={"is_active": False}).json()["is_active"]
        is False
    )
    assert [
        i["symbol"] for i in client.get("/instruments", params={"active": True}).json()["items"]
    ] == ["AAPL"]
    assert [
        i["symbol"] for i in client.get("/instruments", params={"active": False}).json()["items"]
    ] == ["EURUSD"]

    page = client.get("/instruments", params={"limit": 1}).json()
    assert [i["id"] for i in page["items"]] == [first]
    rest = client.get("/instruments", params={"limit": 1, "cursor": page["next_cursor"]}).json()
    assert [i["id"] for i in rest["items"]] == [second]
    assert rest["next_cursor"] is None

    assert (
        client.patch(f"/instruments/{second}", json={"is_active": True}).json()["is_active"] is True
    )


def test_duplicate_symbol_is_409_and_bad_fields_are_422_per_field(client: TestClient) -> None:
    add_instrument(client, "AAPL")
    response = client.post("/instruments", json={"symbol": "AAPL", "name": "again"})
    assert response.status_code == 409
    assert "already exists" in response.json()["detail"]

    response = client.post(
        "/instruments", json={"symbol": "bad symbol!", "name": "", "currency": "usd", "x": 1}
    )
    assert response.status_code == 422
    fields = {tuple(error["loc"])[-1] for error in response.json()["detail"]}
    assert fields == {"symbol", "name", "currency", "x"}
    response = client.post("/instruments", json={"symbol": "NUL", "name": "a\x00b"})
    assert response.status_code == 422


def test_ticks_posted_read_back_rounded_to_four_decimals(client: TestClient) -> None:
    aapl = add_instrument(client, "AAPL")
    msft = add_instrument(client, "MSFT")
    report = post_ticks(
        client,
        [
            {"symbol": "AAPL", "timestamp": iso(T0), "price": 101.12340000000001, "bid": 101.1,
             "ask": 101.15, "volume": 10},
            {"instrument_id": msft, "timestamp": iso(T0 + timedelta(seconds=1)),
             "price": 0.1 + 0.2},
            {"symbol": "AAPL", "timestamp": iso(T0 + timedelta(seconds=2)), "price": 101.5},
        ],
    )  # fmt: skip
    assert report["accepted"] == 3
    assert report["rejected"] == 0

    latest = client.get("/market-data/latest", params={"instrument_id": [aapl, msft]}).json()
    assert [(t["instrument_id"], t["price"]) for t in latest] == [(aapl, 101.5), (msft, 0.3)]
    first = client.get(
        "/market-data/range",
        params={"instrument_id": aapl, "start": iso(T0), "end": iso(T0 + timedelta(hours=1))},
    ).json()["items"][0]
    assert first["price"] == 101.1234  # not 101.12340000000001
    assert '"price":101.1234,' in client.get(f"/market-data/{first['id']}").text
    assert (first["bid"], first["ask"], first["volume"]) == (101.1, 101.15, 10)
    assert first["timestamp"] == "2024-05-06T13:30:00Z"


def test_bad_ticks_come_back_with_position_and_reason_the_rest_stored(client: TestClient) -> None:
    aapl = add_instrument(client, "AAPL")
    gone = add_instrument(client, "GONE")
    client.patch(f"/instruments/{gone}", json={"is_active": False})
    ticks = [
        {"symbol": "AAPL", "timestamp": iso(T0), "price": 1.0},
        {"symbol": "NOPE", "timestamp": iso(T0), "price": 1.0},
        {"symbol": "AAPL", "timestamp": "2024-05-06T13:30:00", "price": 1.0},
        {"symbol": "AAPL", "timestamp": iso(T0), "price": "abc"},
        {"symbol": "AAPL", "timestamp": iso(T0), "price": 1e12},
        {"symbol": "GONE", "timestamp": iso(T0), "price": 1.0},
        {"symbol": "AAPL", "timestamp": iso(T0), "high_price": 1.0, "low_price": 2.0},
        {"symbol": "AAPL", "timestamp": iso(T0), "volume": -1},
        {"timestamp": iso(T0), "price": 1.0},
        {"symbol": "AAPL", "timestamp": iso(T0 + timedelta(seconds=1)), "price": 2.0},
    ]
    report = post_ticks(client, ticks)
    assert (report["accepted"], report["rejected"]) == (2, 8)
    reasons = {r["position"]: r["reason"] for r in report["rejections"]}  # type: ignore[union-attr]
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert "unknown instrument symbol 'NOPE'" in reasons[1]
    assert "no time zone" in reasons[2]
    assert "not a number" in reasons[3]
    assert "outside" in reasons[4]
    assert "inactive" in reasons[5]
    assert "below low_price" in reasons[6]
    assert "negative" in reasons[7]
    assert "no instrument" in reasons[8]
    stored = client.get(
        "/market-data/range",
        params={"instrument_id": aapl, "start": iso(T0), "end": iso(T0 + timedelta(hours=1))},
    ).json()["items"]
    assert [t["price"] for t in stored] == [1.0, 2.0]


def test_csv_upload(client: TestClient) -> None:
    aapl = add_instrument(client, "AAPL")
    text = "symbol,timestamp,price,volume\nAAPL,2024-05-06T13:30:00Z,190.5,100\nAAPL,x,1,1\n"
    response = client.post(
        "/market-data/csv", files={"file": ("ticks.csv", text.encode(), "text/csv")}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert body["rejections"][0]["position"] == 1
    assert (
        client.get("/market-data/latest", params={"instrument_id": aapl}).json()[0]["price"]
        == 190.5
    )

    no_header = client.post("/market-data/csv", files={"file": ("t.csv", b"", "text/csv")})
    assert no_header.status_code == 422
    assert "header" in reason(no_header)
    not_text = client.post(
        "/market-data/csv", files={"file": ("t.csv", b"\xff\xfe\x00", "text/csv")}
    )
    assert not_text.status_code == 422
    assert "UTF-8" in reason(not_text)


def test_range_pages_and_ohlcv_bars(client: TestClient) -> None:
    aapl = add_instrument(client, "AAPL")
    prices = [10.0, 12.0, 9.0, 11.0, 20.0, 21.0]
    post_ticks(
        client,
        [
            {"instrument_id": aapl, "timestamp": iso(T0 + timedelta(seconds=20 * n)), "price": p,
             "volume": 10 * (n + 1)}
            for n, p in enumerate(prices)
        ],
    )  # fmt: skip
    window = {"instrument_id": aapl, "start": iso(T0), "end": iso(T0 + timedelta(hours=1))}
    seen, cursor = [], None
    while True:
        params = {**window, "limit": 4, **({"cursor": cursor} if cursor else {})}
        page = client.get("/market-data/range", params=params).json()
        seen += [t["price"] for t in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == prices

    bars = client.get("/market-data/ohlcv", params={**window, "interval": "1m"}).json()
    assert [
        (b["open"], b["high"], b["low"], b["close"], b["volume"], b["ticks"]) for b in bars
    ] == [
        (10.0, 12.0, 9.0, 9.0, 60, 3),
        (11.0, 21.0, 11.0, 21.0, 150, 3),
    ]
    assert bars[0]["vwap"] == round((10 * 10 + 12 * 20 + 9 * 30) / 60, 4)
    assert bars[0]["start"] == "2024-05-06T13:30:00Z"
    assert bars[0]["end"] == "2024-05-06T13:31:00Z"

    month = client.get(
        "/market-data/ohlcv",
        params={**window, "interval": "1s", "end": iso(T0 + timedelta(days=30))},
    )
    assert [b["ticks"] for b in month.json()] == [1] * 6  # only the seconds that hold ticks
    assert client.get("/market-data/ohlcv", params={**window, "interval": "7m"}).status_code == 422
    bad_cursor = client.get("/market-data/range", params={**window, "cursor": "nope"})
    assert bad_cursor.status_code == 422


def test_tick_soft_delete_hides_it_everywhere_and_restore_brings_it_back(
    client: TestClient,
) -> None:
    aapl = add_instrument(client, "AAPL")
    post_ticks(
        client,
        [
            {"instrument_id": aapl, "timestamp": iso(T0), "price": 1.0},
            {"instrument_id": aapl, "timestamp": iso(T0 + timedelta(seconds=1)), "price": 2.0},
        ],
    )
    window = {"instrument_id": aapl, "start": iso(T0), "end": iso(T0 + timedelta(hours=1))}
    newest = client.get("/market-data/latest", params={"instrument_id": aapl}).json()[0]

    deleted = client.delete(f"/market-data/{newest['id']}")
    assert deleted.status_code == 200
    assert deleted.json()["deleted_at"] is not None
    assert client.get(f"/market-data/{newest['id']}").status_code == 404
    assert (
        client.get("/market-data/latest", params={"instrument_id": aapl}).json()[0]["price"] == 1.0
    )
    assert [
        t["price"] for t in client.get("/market-data/range", params=window).json()["items"]
    ] == [1.0]
    with_deleted = client.get("/market-data/range", params={**window, "include_deleted": True})
    assert [t["price"] for t in with_deleted.json()["items"]] == [1.0, 2.0]
    assert [t["id"] for t in client.get("/market-data/deleted").json()["items"]] == [newest["id"]]

    restored = client.post(f"/market-data/{newest['id']}/restore")
    assert restored.status_code == 200
    assert restored.json()["deleted_at"] is None
    assert (
        client.get("/market-data/latest", params={"instrument_id": aapl}).json()[0]["price"] == 2.0
    )
    assert client.delete("/market-data/999999").status_code == 404


def test_alert_rules_fire_and_logs_are_listed_delivered_deleted_restored(
    client: TestClient,
) -> None:
    aapl = add_instrument(client, "AAPL")
    response = client.post(
        "/alert-rules",
        json={"name": "above 100", "instrument_id": aapl, "condition": "price_above",
              "threshold": "100.1234", "cooldown_seconds": 0},
    )  # fmt: skip
    assert response.status_code == 422  # a number, as the schema says
    rule = client.post(
        "/alert-rules",
        json={"name": "above 100", "instrument_id": aapl, "condition": "price_above",
              "threshold": 100.12341, "cooldown_seconds": 0},
    ).json()  # fmt: skip
    assert rule["threshold"] == 100.1234  # kept to NUMERIC(12,4)'s 4 decimals
    assert rule["is_active"] is True
    assert client.get(f"/alert-rules/{rule['id']}").json()["name"] == "above 100"
    assert [
        r["id"] for r in client.get("/alert-rules", params={"instrument_id": aapl}).json()["items"]
    ] == [rule["id"]]

    report = post_ticks(
        client,
        [
            {"instrument_id": aapl, "timestamp": iso(T0), "price": 99.0},
            {"instrument_id": aapl, "timestamp": iso(T0 + timedelta(seconds=1)), "price": 100.5},
        ],
    )
    assert report["alerts"] == 1
    logs = client.get("/alert-logs", params={"rule_id": rule["id"], "fired_status": "fired"}).json()
    (log,) = logs["items"]
    assert (log["trigger_value"], log["threshold_value"], log["delivery_status"]) == (
        100.5,
        100.1234,
        "pending",
    )
    assert client.get("/alert-logs", params={"delivery_status": "sent"}).json()["items"] == []

    sent = client.patch(f"/alert-logs/{log['id']}", json={"delivery_status": "sent"})
    assert sent.status_code == 200
    assert sent.json()["delivery_status"] == "sent"
    assert (
        client.patch(f"/alert-logs/{log['id']}", json={"delivery_status": "lost"}).status_code
        == 422
    )
    assert [
        x["id"]
        for x in client.get("/alert-logs", params={"delivery_status": "sent"}).json()["items"]
    ] == [log["id"]]

    assert client.delete(f"/alert-logs/{log['id']}").json()["deleted_at"] is not None
    assert client.get(f"/alert-logs/{log['id']}").status_code == 404
    assert client.get("/alert-logs", params={"rule_id": rule["id"]}).json()["items"] == []
    assert [
        x["id"] for x in client.get("/alert-logs", params={"deleted": True}).json()["items"]
    ] == [log["id"]]
    assert client.post(f"/alert-logs/{log['id']}/restore").json()["deleted_at"] is None

    # RESTRICT: the rule and the instrument have children, so they are deactivated instead.
    refused = client.delete(f"/alert-rules/{rule['id']}")
    assert refused.status_code == 409
    assert "deactivate" in refused.json()["detail"]
    assert client.delete(f"/instruments/{aapl}").status_code == 409
    changed = client.patch(f"/alert-rules/{rule['id']}", json={"is_active": False, "threshold": 5})
    assert (changed.json()["is_active"], changed.json()["threshold"]) == (False, 5.0)

    unused = add_instrument(client, "NEW")
    spare = client.post(
        "/alert-rules",
        json={"name": "x", "instrument_id": unused, "condition": "volume_above", "threshold": 1},
    ).json()
    assert client.delete(f"/alert-rules/{spare['id']}").status_code == 204
    assert client.delete(f"/instruments/{unused}").status_code == 204
    assert client.get(f"/instruments/{unused}").status_code == 404
    missing = client.post(
        "/alert-rules",
        json={"name": "x", "instrument_id": 424242, "condition": "price_below", "threshold": 1},
    )
    assert missing.status_code == 404


def _every_page(client: TestClient, path: str, **params: object) -> list[list[int]]:
    pages, cursor = [], None
    while True:
        page = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        pages.append([item["id"] for item in page.json()["items"]])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return pages
        assert cursor == str(pages[-1][-1])


def test_rules_and_logs_come_in_pages_each_once_logs_newest_first(client: TestClient) -> None:
    aapl = add_instrument(client, "AAPL")
    rules = [
        client.post(
            "/alert-rules",
            json={"name": f"above {p}", "instrument_id": aapl, "condition": "price_above",
                  "threshold": p, "cooldown_seconds": 0},
        ).json()["id"]
        for p in (10, 20, 30, 40, 50)
    ]  # fmt: skip
    assert _every_page(client, "/alert-rules", limit=2) == [rules[0:2], rules[2:4], rules[4:5]]

    # 15 fires 1 rule, 25 fires 2, 35 fires 3: logged in that order, rule by rule.
    report = post_ticks(
        client,
        [
            {"instrument_id": aapl, "timestamp": iso(T0 + timedelta(seconds=i)), "price": p}
            for i, p in enumerate([15, 25, 35])
        ],
    )
    assert report["alerts"] == 6
    every = client.get("/alert-logs", params={"limit": 100}).json()["items"]
    assert [(log["rule_id"], log["trigger_value"]) for log in every] == [
        (rules[2], 35.0),
        (rules[1], 35.0),
        (rules[0], 35.0),
        (rules[1], 25.0),
        (rules[0], 25.0),
        (rules[0], 15.0),
    ]
    ids = [log["id"] for log in every]
    assert ids == sorted(ids, reverse=True)
    assert _every_page(client, "/alert-logs", limit=4) == [ids[0:4], ids[4:6]]
    assert _every_page(client, "/alert-logs", limit=3) == [ids[0:3], ids[3:6]]
    assert _every_page(client, "/alert-logs", limit=2, rule_id=rules[0]) == [
        [ids[2], ids[4]],
        [ids[5]],
    ]


def test_performance_metrics_table_analysis_prometheus_and_health(
    client: TestClient, head_url: str
) -> None:
    aapl = add_instrument(client, "AAPL")
    post_ticks(client, [{"instrument_id": aapl, "timestamp": iso(T0), "price": 1.0}] * 5)
    client.get("/market-data/latest")

    metrics = client.get("/performance/metrics").json()
    assert metrics["timestamp"].endswith("Z")  # one time format in every answer
    assert metrics["total_rows_inserted"] == 6  # the instrument and five ticks
    # One batch: executemany (INSERT) on SQLite, COPY on PostgreSQL.
    writes = metrics["by_table"]["market_data"]
    (kind,) = {"INSERT", "COPY"} & set(writes)
    assert writes[kind]["rows"] == 5
    assert metrics["connection_pool"]["size"] >= 1
    assert metrics["connection_pool"]["overflow"] == 0  # a few connections open, none beyond
    numbers = [v for v in _leaves(metrics) if isinstance(v, float)]
    assert numbers
    assert all(round(v, 4) == v for v in numbers)

    # SQLite counts; PostgreSQL estimates from its statistics, exact for five rows once
    # ANALYZE has run (autovacuum would run it later).
    if head_url.startswith("postgresql"):
        analyze(head_url, "market_data")
    table = client.get("/performance/tables/market_data").json()
    assert table["table"] == "market_data"
    assert table["rows" if table["engine"] == "sqlite" else "rows_estimate"] == 5
    assert "ix_market_data_timestamp_instrument" in table["indexes"]
    assert client.get("/performance/tables/market_data; DROP TABLE x").status_code == 404

    prometheus = client.get("/metrics")
    assert prometheus.headers["content-type"].startswith("text/plain")
    assert f'tickvault_queries_total{{table="market_data",type="{kind}"}}' in prometheus.text
    assert "\ntickvault_pool_overflow 0.0\n" in prometheus.text

    assert client.get("/health").json() == {
        "status": "ok",
        "database": "reachable",
        "revision": "c2f8d4b6e913",
        "head": "c2f8d4b6e913",
        "detail": None,
    }


def test_metrics_scrape_counts_the_refused_delete_and_shows_the_pool(client: TestClient) -> None:
    aapl = add_instrument(client, "AAPL")
    post_ticks(client, [{"instrument_id": aapl, "timestamp": iso(T0), "price": 1.0}])
    assert client.delete(f"/instruments/{aapl}").status_code == 409  # RESTRICT: it has a tick
    assert client.delete(f"/instruments/{aapl}").status_code == 409

    text = client.get("/metrics").text
    pool = client.app.state.runtime.engine.sync_engine.pool  # type: ignore[attr-defined]
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("tickvault_query_errors_total", "tickvault_pool_", "tickvault_monitor"))
    }
    errors = {name: v for name, v in samples.items() if name.startswith("tickvault_query_e") and v}
    assert errors == {'tickvault_query_errors_total{table="instruments",type="DELETE"}': 2.0}
    assert samples["tickvault_monitor_collection_failures_total"] == 0.0
    assert (
        samples["tickvault_pool_size"],
        samples["tickvault_pool_checked_out"],
        samples["tickvault_pool_checked_in"],
        samples["tickvault_pool_overflow"],
    ) == (pool.size(), 0.0, pool.checkedin(), 0.0)
    assert samples["tickvault_pool_invalidations_total"] == 0.0


def test_health_reports_a_database_behind_the_code(database_url: str) -> None:
    from tickvault.services import schema

    schema.upgrade(database_url, "4a24cf1de90a")
    with make_client(database_url) as client:
        body = client.get("/health").json()
    assert (body["status"], body["revision"]) == ("degraded", "4a24cf1de90a")
    assert "tickvault db upgrade" in body["detail"]


def test_writes_need_the_key_when_one_is_set_reads_stay_open(head_url: str) -> None:
    with make_client(head_url, api_key=KEY) as client:
        body = {"symbol": "AAPL", "name": "Apple"}
        assert client.post("/instruments", json=body).status_code == 401
        wrong = client.post("/instruments", json=body, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401
        assert wrong.json()["detail"] == (
            "missing or wrong API key (X-API-Key, or Authorization: Bearer)"
        )
        assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
        assert client.post("/instruments", json=body, headers={"X-API-Key": KEY}).status_code == 201
        assert client.patch("/instruments/1", json={"is_active": False}).status_code == 401
        assert client.post("/market-data", json={"ticks": [{}]}).status_code == 401
        assert client.delete("/market-data/1").status_code == 401
        assert client.get("/instruments").status_code == 200
        assert client.get("/instruments/1").json()["symbol"] == "AAPL"


def test_reads_need_the_key_when_configured(head_url: str) -> None:
    with make_client(head_url, api_key=KEY, read_requires_key=True) as client:
        assert client.get("/instruments").status_code == 401
        assert client.get("/performance/metrics").status_code == 401
        assert client.get("/instruments", headers={"X-API-Key": KEY}).status_code == 200
        assert client.get("/health").status_code == 200  # for load balancers


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": f"Bearer {KEY}"}, 200),  # what Prometheus sends
        ({"Authorization": f"bearer  {KEY} "}, 200),  # the scheme is case-insensitive
        ({"Authorization": f"Bearer {KEY}", "X-API-Key": "nope"}, 200),  # either will do
        ({"Authorization": "Bearer nope"}, 401),
        ({"Authorization": f"Bearer {KEY}x"}, 401),
        ({"Authorization": f"Basic {KEY}"}, 401),
        ({"Authorization": KEY}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": "Bearer \u00e9t\u00e9".encode("latin-1")}, 401),
    ],
)
def test_the_key_is_taken_as_a_bearer_token_too(
    head_url: str, headers: dict[str, str | bytes], status: int
) -> None:
    with make_client(head_url, api_key=KEY, read_requires_key=True) as client:
        for path in ("/metrics", "/performance/metrics", "/instruments"):
            response = client.get(path, headers=headers)
            assert response.status_code == status, (path, response.text)
            if status == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        body = {"symbol": "AAPL", "name": "Apple"}
        assert client.post("/instruments", json=body, headers=headers).status_code in (
            {201} if status == 200 else {401}
        )


def test_request_body_over_the_limit_is_413_and_nothing_stored(head_url: str) -> None:
    with make_client(head_url, api_max_body_mb=0.01) as client:  # ~10 KB
        aapl = add_instrument(client, "AAPL")
        ticks = [{"instrument_id": aapl, "timestamp": iso(T0), "price": 1.0}] * 500
        response = client.post("/market-data", json={"ticks": ticks})
        assert response.status_code == 413
        # Streamed without a Content-Length: counted as it arrives.
        payload = json.dumps({"ticks": ticks}).encode()
        chunked = client.post(
            "/market-data",
            content=iter([payload[i : i + 4096] for i in range(0, len(payload), 4096)]),
            headers={"content-type": "application/json"},
        )
        assert chunked.status_code == 413
        assert client.get("/market-data/latest").json() == []


def test_a_request_holds_at_most_100_000_ticks(client: TestClient) -> None:
    aapl = add_instrument(client, "AAPL")
    ticks = [
        {"instrument_id": aapl, "timestamp": iso(T0 + timedelta(microseconds=i)), "price": 1.0}
        for i in range(100_001)
    ]
    refused = client.post("/market-data", json={"ticks": ticks})
    assert refused.status_code == 422
    assert [(e["loc"], e["msg"]) for e in refused.json()["detail"]] == [
        (["body", "ticks"], "List should have at most 100000 items after validation, not 100001")
    ]
    assert client.get("/market-data/latest").json() == []

    report = post_ticks(client, ticks[:100_000])
    assert (report["accepted"], report["rejected"]) == (100_000, 0)
    (latest,) = client.get("/market-data/latest").json()
    assert latest["timestamp"] == "2024-05-06T13:30:00.099999Z"


RULE = {"name": "x", "instrument_id": 1, "condition": "price_above", "threshold": 1}


def test_client_mistakes_are_4xx_never_500(client: TestClient) -> None:
    add_instrument(client, "AAPL")
    cases = [
        ("get", "/instruments/0", None, 422),
        ("get", f"/instruments/{2**31}", None, 422),
        ("get", "/instruments/abc", None, 422),
        ("get", "/instruments/424242", None, 404),
        ("get", "/market-data/latest?instrument_id=-1", None, 422),
        ("get", "/alert-logs?cursor=-5", None, 422),
        ("get", "/alert-logs?fired_status=maybe", None, 422),
        ("post", "/market-data", {"ticks": []}, 422),
        ("post", "/market-data", {"ticks": "AAPL"}, 422),
        ("post", "/market-data", [1, 2], 422),
        ("post", "/alert-rules", {**RULE, "condition": "moon"}, 422),
        ("post", "/alert-rules", {**RULE, "threshold": 1e9}, 422),
        ("post", "/alert-rules", {**RULE, "threshold": "NaN"}, 422),
        ("post", "/alert-rules", {**RULE, "cooldown_seconds": -1}, 422),
        ("patch", "/alert-rules/1", {"condition": "price_below"}, 422),
        ("patch", "/alert-logs/1", {"delivery_status": "sent"}, 404),
    ]  # fmt: skip
    for method, path, body, expected in cases:
        response = client.request(method, path, json=body)
        assert response.status_code == expected, (method, path, response.text)
    weird = post_ticks(
        client,
        [
            {"symbol": "AAPL", "timestamp": "0001-01-01T00:00:00+01:00", "price": 1},
            {"instrument_id": 2**40, "timestamp": iso(T0)},
            {"instrument_id": 1.5, "timestamp": iso(T0)},
            {"symbol": "AAPL", "timestamp": iso(T0), "price": 10**400},
            {"symbol": ["AAPL"], "timestamp": iso(T0)},
        ],
    )
    assert (weird["accepted"], weird["rejected"]) == (0, 5)
    assert [(r["position"], r["reason"]) for r in weird["rejections"]] == [  # type: ignore[union-attr]
        (0, "timestamp 0001-01-01T00:00:00+01:00 is out of range in UTC"),
        (1, f"unknown instrument {2**40}"),
        (2, "instrument_id 1.5 is not an integer"),
        (3, f"price {10**400} is not a number"),
        (4, "unknown instrument symbol \"['AAPL']\""),
    ]


def _leaves(value: object) -> Iterator[object]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/market-data", '{"ticks": NaN}', "ticks"),
        ("POST", "/market-data", '{"ticks": "\\ud800"}', "ticks"),
        ("POST", "/instruments", '{"symbol": "X", "name": "a\\ud800b"}', "name"),
        ("PATCH", "/instruments/1", '{"is_active": NaN}', "is_active"),
        ("PATCH", "/instruments/1", '{"is_active": Infinity}', "is_active"),
        (
            "POST",
            "/alert-rules",
            '{"name": "r", "instrument_id": 1, "condition": "price_above", "threshold": 1e400}',
            "threshold",
        ),
    ],
)
def test_hostile_json_is_a_422_naming_the_field_never_a_500(
    client: TestClient, method: str, path: str, body: str, field: str
) -> None:
    add_instrument(client)
    response = client.request(
        method, path, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [["body", field]]


def test_a_tick_with_an_unknown_field_or_a_symbol_of_another_instrument_is_refused_alone(
    client: TestClient,
) -> None:
    first = add_instrument(client, "AAPL")
    add_instrument(client, "MSFT")
    ticks = [
        {"symbol": "AAPL", "timestamp": iso(T0), "prcie": 101.0},
        {"symbol": "AAPL", "instrument_id": first + 1, "timestamp": iso(T0), "price": 1.0},
        {"symbol": "AAPL", "instrument_id": first, "timestamp": iso(T0), "price": 2.0},
    ]
    body = post_ticks(client, ticks)
    assert body["rejections"] == [
        {"position": 0, "reason": "unknown field 'prcie'"},
        {
            "position": 1,
            "reason": f"symbol 'AAPL' is not instrument {first + 1}: give one of "
            "instrument_id and symbol, or both of the same instrument",
        },
    ]
    assert len(body["ids"]) == 1
    assert client.get(f"/market-data/{body['ids'][0]}").json()["price"] == 2.0


def test_slow_queries_carry_their_times_in_the_api_s_format(
    head_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TICKVAULT_SLOW_QUERY_THRESHOLD_MS", "0.000001")
    get_settings.cache_clear()
    try:
        with make_client(head_url) as client:
            add_instrument(client)
            slow = client.get("/performance/slow-queries").json()
    finally:
        get_settings.cache_clear()
    # The one statement the application ran: the instrument's INSERT, its text, not its values.
    assert [(e["query_type"], e["table_name"]) for e in slow] == [("INSERT", "instruments")]
    assert slow[0]["statement"].startswith("INSERT INTO instruments (symbol, name, exchange, ")
    assert "AAPL" not in slow[0]["statement"]
    assert slow[0]["timestamp"].endswith("Z")


def test_the_error_table_of_docs_api_md_row_by_row(head_url: str) -> None:
    """docs/api.md's "Errors" table, one request per row, status and body (and 405's Allow).
    500 and 503 are in test_api_errors.py and test_outage.py: they need a broken or missing
    database."""
    with make_client(head_url, api_key=KEY, api_max_body_mb=0.01) as client:
        keyed = {"X-API-Key": KEY}
        first = client.post("/instruments", json={"symbol": "AAPL", "name": "A"}, headers=keyed)
        aapl = first.json()["id"]
        tick = {"instrument_id": aapl, "timestamp": iso(T0), "price": 1.0}
        tick_id = client.post("/market-data", json={"ticks": [tick]}, headers=keyed).json()["ids"][
            0
        ]
        rows = {}
        # A body that is not JSON at all: 400 (a JSON body the API cannot take is a 422).
        unparseable = client.post(
            "/instruments", content=b"{", headers={**keyed, "content-type": "application/json"}
        )
        rows["unparseable"] = (unparseable.status_code, unparseable.json())
        no_key = client.post("/instruments", json={"symbol": "X", "name": "X"})
        rows["401"] = (no_key.status_code, no_key.json())
        missing = client.get("/market-data/424242")
        rows["404 id"] = (missing.status_code, missing.json())
        client.delete(f"/market-data/{tick_id}", headers=keyed)
        deleted = client.get(f"/market-data/{tick_id}")
        rows["404 soft-deleted"] = (deleted.status_code, deleted.json())
        put = client.put("/instruments", json={}, headers=keyed)
        rows["405"] = (put.status_code, put.json(), put.headers.get("allow"))
        table = client.get("/performance/tables/orders")
        rows["404 table"] = (table.status_code, table.json())
        taken = client.post("/instruments", json={"symbol": "AAPL", "name": "A"}, headers=keyed)
        rows["409 symbol"] = (taken.status_code, taken.json())
        restrict = client.delete(f"/instruments/{aapl}", headers=keyed)
        rows["409 restrict"] = (restrict.status_code, restrict.json())
        big = client.post("/market-data", json={"ticks": [tick] * 500}, headers=keyed)
        rows["413"] = (big.status_code, big.text)
        zone = client.get(
            f"/market-data/range?instrument_id={aapl}&start=2024-01-01T00:00:00&end=2024-01-02T00:00:00Z"
        )
        rows["422"] = (zone.status_code, zone.json())
    tables = "alembic_version, alert_logs, alert_rules, instruments, market_data"
    assert rows == {
        "unparseable": (
            400,
            {
                "detail": "the body is not valid JSON: Expecting property name enclosed in "
                "double quotes (at character 1)"
            },
        ),
        "401": (401, {"detail": "missing or wrong API key (X-API-Key, or Authorization: Bearer)"}),
        "405": (405, {"detail": "Method Not Allowed"}, "GET, POST"),
        "404 id": (404, {"detail": "tick 424242 not found"}),
        "404 soft-deleted": (404, {"detail": f"tick {tick_id} not found"}),
        "404 table": (404, rows["404 table"][1]),  # the table list below: others may be added
        "409 symbol": (409, {"detail": "instrument 'AAPL': already exists"}),
        "409 restrict": (
            409,
            {
                "detail": f"instrument {aapl}: still has ticks, alert rules or alert logs "
                "(soft-deleted ones count); deactivate it instead"
            },
        ),
        "413": (413, "Content Too Large"),
        "422": (
            422,
            {
                "detail": [
                    {
                        "loc": ["query", "start"],
                        "msg": "Input should have timezone info",
                        "type": "timezone_aware",
                    }
                ]
            },
        ),
    }
    assert rows["404 table"][1]["detail"].startswith(
        f"unknown table 'orders': the database has {tables}"
    )


def test_gc_freeze_holds_the_startup_objects_while_the_app_runs(database_url: str) -> None:
    """``tickvault serve``'s ``gc_freeze``: what exists once the app started stays out of
    the garbage collector's full collections until it stops; without it, nothing is held."""
    with TestClient(create_app(database_url, gc_freeze=True)) as client:
        assert client.get("/health").status_code == 200
        assert gc.get_freeze_count() > 1_000  # the libraries and the app, at least
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(database_url)) as client:
        assert client.get("/health").status_code == 200
        assert gc.get_freeze_count() == 0
