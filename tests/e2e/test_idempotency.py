"""`Idempotency-Key` on `POST /market-data` and `POST /market-data/csv`, on both engines: a
retry gets the first response and stores nothing again, another body with the key is 422,
the same key sent twice at once is stored once, and a restarted server still knows the key
(the receipt is committed with the ticks)."""

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.e2e.test_live_service import seed_one_instrument
from tests.integration.migration_data import run_on
from tickvault.api import create_app
from tickvault.bench.load import serving
from tickvault.settings import Settings

T0 = datetime(2024, 5, 6, 13, 30, tzinfo=UTC)


def ticks(n: int, first: int = 0) -> dict[str, Any]:
    return {
        "ticks": [
            {
                "instrument_id": 1,
                "timestamp": (T0 + timedelta(seconds=first + i)).isoformat(),
                "price": 100 + i,
            }
            for i in range(n)
        ]
    }


def stored(url: str) -> int:
    return int(
        run_on(url, lambda c: c.execute(sa.text("SELECT count(*) FROM market_data")).scalar_one())
    )


def client_for(url: str) -> TestClient:
    return TestClient(create_app(url, settings=Settings(database_url=url)))


def test_a_retry_gets_the_first_answer_and_stores_nothing_again(head_url: str) -> None:
    seed_one_instrument(head_url)
    body = ticks(3)
    body["ticks"].append({"instrument_id": 99, "timestamp": T0.isoformat()})  # refused
    with client_for(head_url) as client:
        first = client.post("/market-data", json=body, headers={"Idempotency-Key": "a-1"})
        again = client.post("/market-data", json=body, headers={"Idempotency-Key": "a-1"})
        other = client.post("/market-data", json=ticks(2, 50), headers={"Idempotency-Key": "a-1"})
        fresh = client.post("/market-data", json=body, headers={"Idempotency-Key": "a-2"})
    assert first.status_code == 200, first.text
    assert first.json()["accepted"] == 3
    assert [r["position"] for r in first.json()["rejections"]] == [3]
    assert "Idempotent-Replayed" not in first.headers
    assert (again.status_code, again.json()) == (200, first.json())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 422
    assert "was used for a different request" in other.text
    assert fresh.json()["ids"] != first.json()["ids"]  # another key is another request
    assert stored(head_url) == 6

    # A new server process on the same database: the key's receipt is in the database.
    with client_for(head_url) as client:
        later = client.post("/market-data", json=body, headers={"Idempotency-Key": "a-1"})
        reused = client.post("/market-data", json=ticks(1), headers={"Idempotency-Key": "a-1"})
    assert (later.status_code, later.json()) == (200, first.json())
    assert later.headers["Idempotent-Replayed"] == "true"
    assert reused.status_code == 422
    assert stored(head_url) == 6


def test_a_key_that_is_empty_or_too_long_is_a_422_naming_the_header(head_url: str) -> None:
    seed_one_instrument(head_url)
    csv = {"file": ("ticks.csv", b"instrument_id,timestamp,price\n1,2024-05-06T13:30:00Z,1\n")}
    with client_for(head_url) as client:
        answers = [
            send(key)
            for key in ("", "k" * 256)
            for send in (
                lambda key: client.post(
                    "/market-data", json=ticks(1), headers={"Idempotency-Key": key}
                ),
                lambda key: client.post(
                    "/market-data/csv", files=csv, headers={"Idempotency-Key": key}
                ),
            )
        ]
        longest = client.post("/market-data", json=ticks(1), headers={"Idempotency-Key": "k" * 255})
    for answer in answers:
        assert answer.status_code == 422, answer.text
        [error] = answer.json()["detail"]
        assert error["loc"] == ["header", "Idempotency-Key"]
    assert [a.json()["detail"][0]["type"] for a in answers] == [
        "string_too_short", "string_too_short", "string_too_long", "string_too_long"
    ]  # fmt: skip
    assert longest.status_code == 200, longest.text
    assert stored(head_url) == 1


def test_a_csv_retry_matches_on_the_file_not_the_multipart_boundary(head_url: str) -> None:
    seed_one_instrument(head_url)
    content = b"instrument_id,timestamp,price\n1,2024-05-06T13:30:00Z,101.5\n"
    with client_for(head_url) as client:
        answers = [
            client.post(
                "/market-data/csv",
                files={"file": (f"ticks{i}.csv", content, "text/csv")},
                headers={"Idempotency-Key": "csv-1"},
            )
            for i in range(2)
        ]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[0].json() == answers[1].json()
    assert answers[1].headers["Idempotent-Replayed"] == "true"
    assert stored(head_url) == 1


def test_the_same_key_at_once_is_stored_once_among_other_writes(head_url: str) -> None:
    """Against a real server: keyed requests sent twice at once, among unkeyed ones, on
    several connections; a key whose first request is still running answers 409."""
    seed_one_instrument(head_url)
    answers: dict[str, list[httpx.Response]] = {}
    lock = threading.Lock()
    with serving(head_url) as port:

        def client(name: str, keyed: bool, first: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                for round_ in range(20):
                    headers = {"Idempotency-Key": f"k{round_}"} if keyed else {}
                    body = ticks(5, 1000 * round_) if keyed else ticks(5, first + 10 * round_)
                    reply = http.post("/market-data", json=body, headers=headers)
                    with lock:
                        answers.setdefault(f"{name}:{round_}", []).append(reply)

        threads = [
            threading.Thread(target=client, args=(f"keyed{i}", True, 0)) for i in range(3)
        ] + [
            threading.Thread(target=client, args=(f"plain{i}", False, 100_000 * (i + 1)))
            for i in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    plain = [r for name, rs in answers.items() if name.startswith("plain") for r in rs]
    assert [r.status_code for r in plain] == [200] * 60
    for round_ in range(20):
        keyed = [answers[f"keyed{i}:{round_}"][0] for i in range(3)]
        ok = [r for r in keyed if r.status_code == 200]
        assert ok, [r.text for r in keyed]
        assert all(r.status_code in (200, 409) for r in keyed), [r.text for r in keyed]
        assert all(r.json() == ok[0].json() for r in ok)  # one answer, however often given
        assert all(r.json()["detail"] for r in keyed if r.status_code == 409)
    assert stored(head_url) == 60 * 5 + 20 * 5


def test_a_stream_message_with_a_key_is_stored_once_across_reconnects(head_url: str) -> None:
    seed_one_instrument(head_url)
    message = {"key": "m-1", **ticks(4)}
    with client_for(head_url) as client:
        with client.websocket_connect("/market-data/stream") as ws:
            ws.send_json({"seq": 1, **message})
            ws.send_json({"seq": 2, **message})  # while the first may still be running
            first, second = ws.receive_json(), ws.receive_json()
            ws.send_json({"seq": 3, **message})
            third = ws.receive_json()
            ws.send_json({"seq": 4, "key": "m-1", **ticks(1, 90)})
            other = ws.receive_json()
        with client.websocket_connect("/market-data/stream") as ws:
            ws.send_json({"seq": 5, **message})
            after_reconnect = ws.receive_json()
    assert (first["seq"], first["accepted"], "replayed" in first) == (1, 4, False)
    assert second["seq"] == 2
    assert second.get("replayed") or "still running" in second["error"], second
    for answer in (third, after_reconnect):
        assert answer["replayed"] is True
        assert (answer["accepted"], answer["ids"]) == (4, first["ids"])
    assert "was used for a different request" in other["error"]
    assert stored(head_url) == 4
