"""`GET /market-data/range` and `/market-data/ohlcv` as Arrow streams and Parquet files, on
SQLite and PostgreSQL: the same rows as the JSON answer, value for value and in order; an
Arrow stream of one record batch per keyset page; 406 for an Accept the API cannot give."""

import io
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from tests.e2e.test_api import T0, add_instrument, iso, make_client, post_ticks
from tickvault.api.columnar import stream_ticks
from tickvault.api.routes import market_data
from tickvault.frames import to_pandas
from tickvault.repositories import native
from tickvault.repositories.sqlite_pages import SqlitePages

ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
WINDOW = {"start": iso(T0 - timedelta(days=1)), "end": iso(T0 + timedelta(days=1))}
PRICES = [101.12340000000001, 3701766.77475, 93580.07325, None, -18137.01365, 1.00005, 7.5]


@pytest.fixture
def client(head_url: str) -> Iterator[TestClient]:
    """The API with Arrow record batches of 2 rows: every answer takes several pages."""
    with make_client(head_url, export_batch_rows=2) as client:
        yield client


def _load(client: TestClient) -> list[int]:
    instrument = add_instrument(client, "AAPL")
    add_instrument(client, "MSFT")
    ticks: list[dict[str, object]] = [
        {
            "symbol": "AAPL",
            # Ticks 2, 3 and 4 share a timestamp: the pages split them.
            "timestamp": iso(
                T0 + timedelta(seconds=min(n, 2) + max(n - 4, 0), microseconds=min(n, 2))
            ),
            "price": price,
            "bid": None if price is None else price - 0.00015,
            "volume": None if n == 1 else n * 1000,
        }
        for n, price in enumerate(PRICES)
    ]
    ticks.append({"symbol": "MSFT", "timestamp": iso(T0), "price": 1.0})
    ids: list[int] = post_ticks(client, ticks)["ids"]  # type: ignore[assignment]
    assert client.delete(f"/market-data/{ids[5]}").status_code == 200
    assert instrument == 1
    return ids


def _parsed(row: dict[str, Any]) -> dict[str, Any]:
    return {
        key: datetime.fromisoformat(value) if key in ("timestamp", "deleted_at", "start", "end")
        and value is not None else value
        for key, value in row.items()
    }  # fmt: skip


def _json_range(client: TestClient, **params: object) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    query: dict[str, object] = {"instrument_id": 1, **WINDOW, "limit": 3, **params}
    while True:
        body = client.get("/market-data/range", params=query).json()
        rows += [_parsed(item) for item in body["items"]]
        if body["next_cursor"] is None:
            return rows
        query["cursor"] = body["next_cursor"]


def _arrow(client: TestClient, path: str, accept: str, **params: object) -> Any:
    query = {"instrument_id": 1, **WINDOW, **params}
    response = client.get(path, params=query, headers={"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == accept
    return response


def test_range_as_an_arrow_stream_is_the_json_range(client: TestClient) -> None:
    ids = _load(client)
    expected = _json_range(client)
    assert [row["id"] for row in expected] == [i for i in ids[:7] if i != ids[5]]
    reader = pa.ipc.open_stream(_arrow(client, "/market-data/range", ARROW).content)
    batches = list(reader)
    # 6 rows, 2 a page: three keyset pages, each sent as its own record batch.
    assert [batch.num_rows for batch in batches] == [2, 2, 2]
    table = pa.Table.from_batches(batches)
    assert table.to_pylist() == expected
    assert reader.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert table.column("price").to_pylist() == [
        101.1234, 3701766.7747, 93580.0733, None, -18137.0137, 7.5
    ]  # fmt: skip
    frame = to_pandas(table)
    assert frame["volume"].tolist()[:2] == [0, pd_na()]
    assert [t.isoformat() for t in frame["timestamp"]][:2] == [
        "2024-05-06T13:30:00+00:00",
        "2024-05-06T13:30:01.000001+00:00",
    ]


def pd_na() -> Any:
    import pandas as pd

    return pd.NA


def _chunks_as_read(client: TestClient) -> list[int]:
    """How many batches had been read when the answer started and at each chunk sent, as
    ``_batch_read`` counts them."""
    runtime = client.app.state.runtime  # type: ignore[attr-defined]

    async def read_at_each_chunk() -> list[int]:
        start, end = T0 - timedelta(days=1), T0 + timedelta(days=1)
        response = await stream_ticks(
            runtime, ARROW, 1, start, end, after=None, include_deleted=False
        )
        seen = [len(READ)]
        async for _chunk in response.body_iterator:
            seen.append(len(READ))
        return seen

    READ.clear()
    return client.portal.call(read_at_each_chunk)  # type: ignore[union-attr,no-any-return]


READ: list[int] = []


def test_each_page_is_sent_before_the_next_is_read(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamed, not buffered: the body's chunks come out as the keyset pages are read
    (through the session, as where the ADBC driver is not installed)."""
    _load(client)
    monkeypatch.setattr("tickvault.repositories.native.driver", lambda dialect: None)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]

    def on_statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM market_data" in statement:
            READ.append(1)

    event.listen(runtime.engine.sync_engine, "before_cursor_execute", on_statement)
    try:
        seen = _chunks_as_read(client)
    finally:
        event.remove(runtime.engine.sync_engine, "before_cursor_execute", on_statement)
    # Page 1 is read before the answer starts; pages 2 and 3 each after the previous chunk
    # went out; the 4th read finds nothing, and the end of the stream follows.
    assert seen == [1, 1, 2, 3, 4]


def test_on_a_connection_of_its_own_at_most_one_batch_is_read_ahead(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streamed, not buffered, through ``NativeReads`` (ADBC on PostgreSQL, keyset pages on
    SQLite): the next batch is read while one is sent, never more, so memory holds two
    batches however long the range."""
    _load(client)
    # Each batch is read by one of these, in a worker thread.
    for reader in (native._CopyRead, SqlitePages):
        read = reader.next_batch

        def counted(self: Any, read: Any = read) -> Any:
            batch = read(self)
            if batch is not None:
                READ.append(batch.num_rows)
            return batch

        monkeypatch.setattr(reader, "next_batch", counted)
    seen = _chunks_as_read(client)
    assert READ == [2, 2, 2]
    # When the answer starts and at each chunk: at most one batch more read than sent.
    assert all(read <= sent + 2 for sent, read in enumerate(seen)), seen
    assert seen[0] < 3


def test_range_as_parquet_is_the_json_range_with_deleted_ticks_when_asked(
    client: TestClient,
) -> None:
    ids = _load(client)
    expected = _json_range(client, include_deleted="true")
    response = _arrow(client, "/market-data/range", PARQUET, include_deleted="true")
    parquet = pq.ParquetFile(io.BytesIO(response.content))
    assert parquet.metadata.num_row_groups == 4  # 7 rows, a row group per page of 2
    assert parquet.read().to_pylist() == expected
    assert [row["id"] for row in expected if row["deleted_at"]] == [ids[5]]


def test_a_cursor_starts_the_arrow_stream_where_the_json_page_ended(client: TestClient) -> None:
    _load(client)
    first = client.get("/market-data/range", params={"instrument_id": 1, **WINDOW, "limit": 4})
    rest = _arrow(client, "/market-data/range", ARROW, cursor=first.json()["next_cursor"])
    assert pa.ipc.open_stream(rest.content).read_all().to_pylist() == _json_range(client)[4:]


@pytest.mark.parametrize("accept", [ARROW, PARQUET])
def test_empty_ranges_are_whole_empty_streams(client: TestClient, accept: str) -> None:
    _load(client)
    for params in (
        {"start": iso(T0 + timedelta(days=2)), "end": iso(T0 + timedelta(days=3))},  # no ticks
        {"start": iso(T0), "end": iso(T0)},  # end not after start
        {"instrument_id": 99},
    ):
        content = _arrow(client, "/market-data/range", accept, **params).content
        table = (
            pa.ipc.open_stream(content).read_all()
            if accept == ARROW
            else pq.read_table(io.BytesIO(content))
        )
        assert table.num_rows == 0
        assert table.column_names[:3] == ["id", "instrument_id", "timestamp"]
        bars = _arrow(client, "/market-data/ohlcv", accept, interval="1m", **params).content
        assert len(bars) > 0


@pytest.mark.parametrize("accept", [ARROW, PARQUET])
def test_ohlcv_as_arrow_is_the_json_bars_and_links_the_rest(
    client: TestClient, accept: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _load(client)
    params = {"instrument_id": 1, **WINDOW, "interval": "1s"}
    bars = [_parsed(bar) for bar in client.get("/market-data/ohlcv", params=params).json()]
    assert [bar["ticks"] for bar in bars] == [1, 1, 2, 1]
    response = _arrow(client, "/market-data/ohlcv", accept, interval="1s")
    table = (
        pa.ipc.open_stream(response.content).read_all()
        if accept == ARROW
        else pq.read_table(io.BytesIO(response.content))
    )
    assert table.to_pylist() == bars
    assert "Link" not in response.headers

    monkeypatch.setattr(market_data, "MAX_BARS", 2)
    linked = _arrow(client, "/market-data/ohlcv", accept, interval="1s")
    json_linked = client.get("/market-data/ohlcv", params=params)
    assert linked.headers["Link"] == json_linked.headers["Link"]
    assert linked.headers["Link"].endswith('rel="next"')
    again = (
        pa.ipc.open_stream(linked.content).read_all()
        if accept == ARROW
        else pq.read_table(io.BytesIO(linked.content))
    )
    assert again.to_pylist() == bars[:2]


@pytest.mark.parametrize("path", ["/market-data/range", "/market-data/ohlcv"])
def test_an_accept_the_api_cannot_give_is_a_406_that_says_what_it_gives(
    client: TestClient, path: str
) -> None:
    _load(client)
    params = {"instrument_id": 1, **WINDOW, "interval": "1m"}
    response = client.get(path, params=params, headers={"Accept": "text/csv"})
    assert response.status_code == 406
    assert response.json() == {
        "detail": "cannot answer with any type of Accept: text/csv; this endpoint answers "
        f"application/json, {ARROW} or {PARQUET}"
    }
    preferred = client.get(
        path, params=params, headers={"Accept": f"application/json;q=0.5, {PARQUET}"}
    )
    assert preferred.headers["content-type"] == PARQUET
    assert (
        client.get(path, params=params, headers={"Accept": "*/*"}).headers["content-type"]
        == "application/json"
    )


def test_openapi_documents_the_arrow_types_and_the_406(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/market-data/range", "/market-data/ohlcv"):
        responses = paths[path]["get"]["responses"]
        assert set(responses["200"]["content"]) == {"application/json", ARROW, PARQUET}
        assert responses["200"]["content"][ARROW]["schema"] == {
            "type": "string",
            "format": "binary",
        }
        assert "406" in responses
    assert "Link" in paths["/market-data/ohlcv"]["get"]["responses"]["200"]["headers"]


def test_bars_whose_volume_arrow_cannot_hold_are_a_406_json_still_exact(
    client: TestClient,
) -> None:
    add_instrument(client, "AAPL")
    big = 2**63 - 1  # the largest volume a tick may have
    post_ticks(client, [
        {"symbol": "AAPL", "timestamp": iso(T0), "price": 1.0, "volume": big},
        {"symbol": "AAPL", "timestamp": iso(T0 + timedelta(milliseconds=5)), "price": 2.0,
         "volume": big},
    ])  # fmt: skip
    params = {"instrument_id": 1, **WINDOW, "interval": "1s"}
    assert [bar["volume"] for bar in client.get("/market-data/ohlcv", params=params).json()] == [
        2 * big
    ]
    response = client.get("/market-data/ohlcv", params=params, headers={"Accept": ARROW})
    assert response.status_code == 406
    assert response.json() == {
        "detail": f"the bar at {T0.isoformat()} holds a volume of {2 * big}, past Arrow's "
        "int64: ask for these bars as JSON (application/json)"
    }
