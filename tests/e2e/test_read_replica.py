"""TICKVAULT_READ_REPLICA_URL with a real streaming replica: a throwaway primary cluster and
a standby made from it by ``pg_basebackup -R`` on another port (never the shared server).

With the standby's replay paused, what a read answers shows where it was read: the read-only
endpoints answer the replica's (older) data, writes and their answers use the primary,
/health and the monitor report the lag; once replay resumes the reads catch up; with the
replica stopped the reads come from the primary.
"""

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.e2e.test_api import make_client
from tests.e2e.test_outage import PG_BIN, Cluster, eventually
from tests.integration.migration_data import run_on
from tickvault.services import schema

AS_POSTGRES = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _stop_now(cluster: Cluster) -> None:
    subprocess.run([*AS_POSTGRES, str(PG_BIN / "pg_ctl"), "-D", str(cluster.data), "-m",
                    "immediate", "stop"], capture_output=True, check=False)  # fmt: skip


@pytest.fixture
def primary_and_replica() -> Iterator[tuple[Cluster, Cluster]]:
    if not (PG_BIN / "pg_basebackup").exists():
        if os.environ.get("TICKVAULT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{PG_BIN / 'pg_basebackup'} is missing (TICKVAULT_REQUIRE_POSTGRES=1)")
        pytest.skip("PostgreSQL's server binaries are not installed")
    with streaming_pair() as pair:
        yield pair


@contextmanager
def streaming_pair() -> Iterator[tuple[Cluster, Cluster]]:
    """A throwaway primary cluster and a standby streaming from it, stopped and removed
    afterwards (also used by benchmarks/replica.py)."""
    folders = [Path(tempfile.mkdtemp(prefix="tickvault-cluster-")) for _ in range(2)]
    primary, replica = Cluster(folders[0]), Cluster(folders[1])
    try:
        primary.init()  # initdb's pg_hba.conf lets 127.0.0.1 replicate (trust)
        primary.start()
        if os.geteuid() == 0:
            shutil.chown(replica.folder, "postgres")
        replica._run(str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
                     "-U", "postgres", "-D", str(replica.data), "-R", "-X", "stream",
                     "--checkpoint=fast")  # fmt: skip
        replica.start()
        yield primary, replica
    finally:
        for cluster in (replica, primary):
            _stop_now(cluster)
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def scalar(url: str, sql: str) -> object:
    return run_on(url, lambda c: c.execute(sa.text(sql)).scalar_one())


def replayed_all(primary: str, replica: str) -> bool:
    lsn = scalar(primary, "SELECT pg_current_wal_lsn()::text")
    return bool(scalar(replica, f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"))


def latest_prices(client: TestClient) -> list[float]:
    response = client.get("/market-data/latest")
    assert response.status_code == 200, response.text
    return [tick["price"] for tick in response.json()]


def prometheus(client: TestClient) -> dict[str, float]:
    """/metrics' samples without labels."""
    lines = client.get("/metrics").text.splitlines()
    return {
        line.split()[0]: float(line.split()[1])
        for line in lines
        if line and not line.startswith("#") and "{" not in line
    }


def arrow_prices(client: TestClient, window: dict[str, object]) -> list[float]:
    response = client.get(
        "/market-data/range",
        params=window,
        headers={"Accept": "application/vnd.apache.arrow.stream"},
    )
    assert response.status_code == 200, response.text
    return pa.ipc.open_stream(response.content).read_all().column("price").to_pylist()


def selects(client: TestClient) -> float:
    series = 'tickvault_queries_total{table="market_data",type="SELECT"} '
    (line,) = [x for x in client.get("/metrics").text.splitlines() if x.startswith(series)]
    return float(line.split()[-1])


def test_reads_go_to_the_replica_writes_to_the_primary(
    primary_and_replica: tuple[Cluster, Cluster],
) -> None:
    primary, replica = (cluster.url for cluster in primary_and_replica)
    schema.upgrade(primary, "head")
    with make_client(primary, read_replica_url=replica) as client:
        aapl = client.post("/instruments", json={"symbol": "AAPL", "name": "Apple"}).json()["id"]
        first = {"instrument_id": aapl, "timestamp": "2026-03-03T10:00:00Z", "price": 100.5}
        assert client.post("/market-data", json={"ticks": [first]}).status_code == 200
        eventually(lambda: replayed_all(primary, replica), 60, "the replica replays the tick")
        assert latest_prices(client) == [100.5]
        health = client.get("/health").json()
        assert (health["status"], health["replica"]["state"]) == ("ok", "streaming")

        scalar(replica, "SELECT pg_wal_replay_pause()::text")
        second = {**first, "timestamp": "2026-03-03T10:00:01Z", "price": 101.25}
        posted = client.post("/market-data", json={"ticks": [second]})
        assert posted.status_code == 200
        (tick_id,) = posted.json()["ids"]
        # The replica has not replayed it: the reads answer what the replica holds.
        assert latest_prices(client) == [100.5]
        assert client.get(f"/market-data/{tick_id}").status_code == 404
        # A write reads the primary: the tick it soft-deletes is there, and its answer too.
        deleted = client.delete(f"/market-data/{tick_id}")
        assert (deleted.status_code, deleted.json()["price"]) == (200, 101.25)
        assert client.post(f"/market-data/{tick_id}/restore").status_code == 200
        lagging = client.get("/health").json()["replica"]
        assert lagging["state"] == "streaming"
        assert lagging["lag_bytes"] > 0, lagging
        assert lagging["lag_seconds"] > 0, lagging
        metrics = client.get("/performance/metrics").json()
        assert metrics["replication"]["state"] == "streaming"
        assert metrics["replication"]["lag_bytes"] > 0
        gauges = prometheus(client)  # as of that collection
        assert gauges["tickvault_replica_up"] == 1
        assert gauges["tickvault_replica_lag_bytes"] == metrics["replication"]["lag_bytes"]
        # The monitor measures the replica's statements too: one SELECT per range read.
        before = selects(client)
        window = {"instrument_id": aapl, "start": "2026-03-03T10:00:00Z",
                  "end": "2026-03-03T10:01:00Z"}  # fmt: skip
        for _ in range(5):
            page = client.get("/market-data/range", params=window).json()
            assert [tick["price"] for tick in page["items"]] == [100.5]
        assert selects(client) == before + 5
        # The Arrow stream reads through ADBC, on the replica too (and is counted there).
        assert arrow_prices(client, window) == [100.5]
        assert selects(client) == before + 6

        scalar(replica, "SELECT pg_wal_replay_resume()::text")
        eventually(lambda: latest_prices(client) == [101.25], 60, "the replica catches up")
        assert client.get(f"/market-data/{tick_id}").json()["price"] == 101.25
        eventually(
            lambda: client.get("/health").json()["replica"]["lag_bytes"] == 0, 60, "no lag left"
        )

        primary_and_replica[1].stop()
        third = {**first, "timestamp": "2026-03-03T10:00:02Z", "price": 102.75}
        assert client.post("/market-data", json={"ticks": [third]}).status_code == 200
        # The replica is down: the reads fall back to the primary, which has the new tick.
        assert latest_prices(client) == [102.75]
        assert arrow_prices(client, window) == [100.5, 101.25, 102.75]
        assert len(client.get("/market-data/ohlcv", params={
            "instrument_id": aapl, "interval": "1m", "start": "2026-03-03T10:00:00Z",
            "end": "2026-03-03T10:01:00Z"}).json()) == 1  # fmt: skip
        response = client.get("/health")
        body = response.json()
        assert (response.status_code, body["status"]) == (200, "degraded")
        assert body["replica"]["state"] == "unreachable"
        assert body["detail"] == "the read replica is unreachable: reads go to the primary"
        assert client.get("/performance/metrics").json()["replication"]["state"] == "unreachable"
        assert prometheus(client)["tickvault_replica_up"] == 0
        assert "tickvault_replica_lag_bytes" not in prometheus(client)
