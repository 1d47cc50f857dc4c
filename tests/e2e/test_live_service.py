"""The live write path as clients see it, on both engines: `tickvault serve` in a process of
its own, clients logging every answer. What was acknowledged is stored, once; what was
answered with an error is not; the WebSocket stream answers in order; a full queue is a 503
with Retry-After."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from fastapi import WebSocketDisconnect
from fastapi.testclient import TestClient

from tests.integration.migration_data import run_on
from tickvault.api import create_app
from tickvault.bench.load import serving
from tickvault.settings import Settings, get_settings

T0 = datetime(2026, 2, 2, 10, 0, tzinfo=UTC)
LOCKER = """
import asyncio, sqlite3, sys, time
url, hold, gap, seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
end = time.time() + seconds
if url.startswith("sqlite"):
    c = sqlite3.connect(url.split("///", 1)[1], isolation_level=None, timeout=30)
    print("ready", flush=True)
    while time.time() < end:
        c.execute("BEGIN IMMEDIATE"); time.sleep(hold); c.execute("COMMIT"); time.sleep(gap)
else:
    import asyncpg
    async def main():
        c = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
        print("ready", flush=True)
        while time.time() < end:
            async with c.transaction():
                await c.execute("LOCK TABLE market_data IN EXCLUSIVE MODE")
                await asyncio.sleep(hold)
            await asyncio.sleep(gap)
    asyncio.run(main())
"""


@contextlib.contextmanager
def competing_writer(url: str, hold: float, gap: float, seconds: float) -> Iterator[None]:
    """Another process takes the write lock for ``hold`` seconds every ``hold + gap``."""
    with subprocess.Popen(
        [sys.executable, "-c", LOCKER, url, str(hold), str(gap), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    ) as locker:
        assert locker.stdout is not None
        assert locker.stdout.readline().strip() == "ready"
        yield
        assert locker.wait(timeout=30) == 0


def scalar(url: str, sql: str, **params: Any) -> Any:
    return run_on(url, lambda c: c.execute(sa.text(sql), params).scalar())


def seed_one_instrument(url: str) -> None:
    def seed(connection: sa.Connection) -> None:
        connection.execute(sa.text("INSERT INTO instruments (symbol, name) VALUES ('AAA', 'A')"))
        connection.execute(
            sa.text(
                "INSERT INTO alert_rules (name, instrument_id, condition, threshold) "
                "VALUES ('above', 1, 'price_above', 100.5)"
            )
        )

    run_on(url, seed)


@dataclass
class Ledger:
    """Every answer the clients got."""

    acknowledged: dict[str, int] = field(default_factory=dict)  # timestamp -> id
    refused: list[str] = field(default_factory=list)  # answered with an error status
    unanswered: list[str] = field(default_factory=list)  # no answer: outcome unknown
    statuses: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def post_ticks_for(port: int, ledger: Ledger, client: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    n = 0
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        while time.monotonic() < deadline:
            n += 1
            stamp = (T0 + timedelta(seconds=n, microseconds=client)).isoformat()
            body = {"ticks": [{"instrument_id": 1, "timestamp": stamp, "price": 100 + n % 2}]}
            try:
                response = http.post("/market-data", json=body)
            except httpx.HTTPError:
                with ledger.lock:
                    ledger.unanswered.append(stamp)
                time.sleep(0.05)
                continue
            with ledger.lock:
                ledger.statuses.append(response.status_code)
                if response.status_code == 200 and response.json()["accepted"] == 1:
                    ledger.acknowledged[stamp] = response.json()["ids"][0]
                else:
                    ledger.refused.append(stamp)


def stored_ticks(url: str) -> dict[str, int]:
    rows = run_on(url, lambda c: c.execute(sa.text("SELECT timestamp, id FROM market_data")).all())
    stored: dict[str, int] = {}
    for stamp, id_ in rows:
        when = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(stamp)
        key = (
            when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
        ).isoformat()
        assert key not in stored, f"tick at {key} stored twice"
        stored[key] = id_
    return stored


def check_ledger(url: str, ledger: Ledger) -> None:
    stored = stored_ticks(url)
    assert ledger.acknowledged, "no tick was acknowledged"
    for stamp, id_ in ledger.acknowledged.items():
        assert stored.get(stamp) == id_, f"acknowledged tick {stamp} (id {id_}) not stored"
    assert not [stamp for stamp in ledger.refused if stamp in stored], "refused but stored"
    unknown = set(ledger.unanswered)
    assert set(stored) <= set(ledger.acknowledged) | unknown


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TICKVAULT_SQLITE_BUSY_TIMEOUT_MS", "200")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_competing_writer_gets_503s_only_for_ticks_not_stored(
    head_url: str, short_busy_timeout: None
) -> None:
    """Another process takes the write lock for 400 ms at a time, past SQLite's 200 ms busy
    timeout: some requests fail, and exactly those ticks are missing; alert rules run on
    every stored tick (one log per crossing of 100.5)."""
    seed_one_instrument(head_url)
    ledger = Ledger()
    with serving(head_url) as port, competing_writer(head_url, 0.4, 0.15, 3):
        clients = [
            threading.Thread(target=post_ticks_for, args=(port, ledger, c, 3.5)) for c in range(4)
        ]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
    check_ledger(head_url, ledger)
    if head_url.startswith("sqlite"):
        assert 503 in ledger.statuses  # the lock was held past the busy timeout
    assert set(ledger.statuses) <= {200, 503}
    # Alert rules ran on the stored ticks (101 crosses the rule's 100.5), in the ticks'
    # transactions; that they ran exactly as one by one is test_live_writes' to show.
    assert scalar(head_url, "SELECT count(*) FROM alert_logs") > 0


def test_sigkill_under_load_keeps_every_acknowledged_tick(head_url: str) -> None:
    seed_one_instrument(head_url)
    ledger = Ledger()
    with serving(head_url) as port:
        clients = [
            threading.Thread(target=post_ticks_for, args=(port, ledger, c, 3.0)) for c in range(4)
        ]
        for thread in clients:
            thread.start()
        time.sleep(1.5)
        server = [p for p in _children() if f"--port {port}" in p[1]]
        assert server, f"the server process was not found: {_children()}"
        os.kill(server[0][0], signal.SIGKILL)
        for thread in clients:
            thread.join()
    assert ledger.unanswered  # the kill was felt
    check_ledger(head_url, ledger)


def _children() -> list[tuple[int, str]]:
    out = subprocess.run(
        ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(os.getpid())],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [(int(line.split(None, 1)[0]), line.split(None, 1)[1]) for line in out.splitlines()]


def test_the_stream_answers_each_message_in_order_once_committed(head_url: str) -> None:
    seed_one_instrument(head_url)
    app = create_app(head_url, settings=Settings(database_url=head_url, api_key="k"))
    with (
        TestClient(app) as client,
        client.websocket_connect("/market-data/stream", headers={"X-API-Key": "k"}) as ws,
    ):
        for seq in range(20):  # sent without waiting for answers
            ticks = [
                {
                    "instrument_id": 1,
                    "timestamp": (T0 + timedelta(seconds=seq * 10 + i)).isoformat(),
                    "price": 100.0 + i,
                }
                for i in range(5)
            ]
            if seq == 7:
                ticks[3] = {"instrument_id": 99, "timestamp": ticks[3]["timestamp"]}
            ws.send_text(json.dumps({"seq": seq, "ticks": ticks}))
        ws.send_text("{not json")
        ws.send_text(json.dumps({"seq": "last", "ticks": [{"symbol": "AAA"}]}))
        answers = [ws.receive_json() for _ in range(22)]
    assert [a["seq"] for a in answers] == [*range(20), None, "last"]
    ids = [i for a in answers[:20] for i in a["ids"]]
    assert len(ids) == 99
    assert ids == sorted(ids)
    assert answers[7]["accepted"] == 4
    assert answers[7]["rejected"] == [{"position": 3, "reason": "unknown instrument 99"}]
    assert "error" in answers[20]
    assert answers[20]["accepted"] == 0
    assert answers[21]["rejected"] == [{"position": 0, "reason": "timestamp is missing"}]
    assert scalar(head_url, "SELECT count(*) FROM market_data") == 99
    assert (
        scalar(
            head_url, "SELECT count(*) FROM market_data WHERE id IN (:a, :b)", a=ids[0], b=ids[-1]
        )
        == 2
    )


def test_the_stream_needs_the_key(head_url: str) -> None:
    """A wrong key: the handshake completes, then a close a client can read (1008, why)."""
    app = create_app(head_url, settings=Settings(database_url=head_url, api_key="k"))
    with (
        TestClient(app) as client,
        client.websocket_connect("/market-data/stream", headers={"X-API-Key": "x"}) as ws,
        pytest.raises(WebSocketDisconnect) as refused,
    ):
        ws.receive_text()
    assert refused.value.code == 1008
    assert refused.value.reason == "missing or wrong API key (X-API-Key, or Authorization: Bearer)"


def test_the_stream_takes_the_key_as_a_bearer_token_too(head_url: str) -> None:
    app = create_app(head_url, settings=Settings(database_url=head_url, api_key="k"))
    with TestClient(app) as client:
        with client.websocket_connect(
            "/market-data/stream", headers={"Authorization": "Bearer k"}
        ) as ws:
            ws.send_json({"seq": 1, "ticks": []})
            assert ws.receive_json()["seq"] == 1  # answered: the connection was kept
        with (
            client.websocket_connect(
                "/market-data/stream", headers={"Authorization": "Bearer x"}
            ) as ws,
            pytest.raises(WebSocketDisconnect) as refused,
        ):
            ws.receive_text()
    assert refused.value.code == 1008


def test_a_full_write_queue_is_a_503_with_retry_after(head_url: str) -> None:
    seed_one_instrument(head_url)
    settings = Settings(database_url=head_url, write_queue_ticks=5)

    def tick(n: int) -> dict[str, Any]:
        stamp = (T0 + timedelta(seconds=n)).isoformat()
        return {"instrument_id": 1, "timestamp": stamp, "price": 99.0}

    with (
        competing_writer(head_url, 2, 0, 2),
        TestClient(create_app(head_url, settings=settings)) as client,
    ):
        first: list[httpx.Response] = []
        waiting = threading.Thread(
            target=lambda: first.append(client.post("/market-data", json={"ticks": [tick(0)]}))
        )
        waiting.start()
        time.sleep(0.5)  # its tick is in the writer, waiting for the lock
        full = client.post("/market-data", json={"ticks": [tick(n) for n in range(1, 6)]})
        assert full.status_code == 503
        assert full.headers["Retry-After"] == "1"
        assert "write queue is full" in full.json()["detail"]
        waiting.join()
    assert first[0].status_code == 200
    assert first[0].json()["accepted"] == 1
    assert scalar(head_url, "SELECT count(*) FROM market_data") == 1
