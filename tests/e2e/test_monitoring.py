"""The monitor as its readers see it, on both engines, with `tickvault serve` in a process of
its own: two dashboards polling /performance/metrics while ticks flow, and a real Prometheus
scraping /metrics with the API key as its bearer token (skipped when no `prometheus` binary
is on PATH: Debian's package `prometheus`)."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.integration.migration_data import run_on
from tickvault.api import create_app
from tickvault.bench.load import free_port, serving, wait_for_port
from tickvault.settings import Settings

KEY = "scrape-key"
WINDOW = 2.0  # the server's TICKVAULT_MONITOR_INTERVAL_SECONDS: its trailing window
CLOCKS = timedelta(milliseconds=5)  # the server's wall clock against its monotonic one
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def seed_instrument(url: str) -> None:
    run_on(
        url,
        lambda c: c.execute(sa.text("INSERT INTO instruments (symbol, name) VALUES ('A', 'A')")),
    )


@dataclass(frozen=True)
class Post:
    """One POST /market-data: its ticks were inserted between ``sent`` and ``answered``."""

    sent: datetime
    answered: datetime
    rows: int


def steady_load(port: int, stop: threading.Event, posts: list[Post], failures: list[str]) -> None:
    """10 ticks every 20 ms (500 a second when the machine keeps up), each stamped with the
    moment its request left."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        due = time.monotonic()
        while not stop.is_set():
            sent = datetime.now(UTC)
            ticks = [
                {"instrument_id": 1, "timestamp": (sent + timedelta(microseconds=i)).isoformat(),
                 "price": 100.0}
                for i in range(10)
            ]  # fmt: skip
            response = http.post("/market-data", json={"ticks": ticks})
            answered = datetime.now(UTC)
            if response.status_code != 200 or response.json()["accepted"] != 10:
                failures.append(response.text)
                return
            posts.append(Post(sent, answered, 10))
            due = max(due + 0.02, time.monotonic())
            time.sleep(max(0.0, due - time.monotonic()))


def rows_in(posts: list[Post], start: datetime, end: datetime) -> tuple[int, int]:
    """(rows surely inserted within [start, end], rows possibly inserted within it)."""
    surely = sum(p.rows for p in posts if p.sent >= start + CLOCKS and p.answered <= end - CLOCKS)
    possibly = sum(p.rows for p in posts if p.answered >= start - CLOCKS and p.sent <= end + CLOCKS)
    return surely, possibly


def test_two_readers_polling_alternately_see_the_rate_of_the_rows_inserted(
    head_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reader used to reset one window shared by all: two dashboards read 0 and twice the
    # truth. Now both read a fixed trailing window, and what they report must agree with the
    # rows the load generator saw stored in that window. No assertion on how fast anything
    # runs: only the reported figures against the rows counted.
    monkeypatch.setenv("TICKVAULT_MONITOR_INTERVAL_SECONDS", str(WINDOW))
    seed_instrument(head_url)  # before the server starts: not one of the rows it counts
    posts: list[Post] = []
    failures: list[str] = []
    reads: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    stop = threading.Event()
    with serving(head_url) as port:
        load = threading.Thread(target=steady_load, args=(port, stop, posts, failures))
        load.start()
        try:
            time.sleep(WINDOW * 1.5)  # the readers come once a whole window has passed
            with (
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as a,
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as b,
            ):
                for _ in range(15):
                    for name, http in (("a", a), ("b", b)):
                        reads[name].append(http.get("/performance/metrics").json())
                        time.sleep(0.05)
        finally:
            stop.set()
            load.join()

    assert not failures
    stored = run_on(head_url, lambda c: c.execute(sa.text("SELECT count(*) FROM market_data")))
    assert stored.scalar_one() == sum(p.rows for p in posts)
    for name, metrics in reads.items():
        for figures in metrics:
            window = figures["window_seconds"]
            end = datetime.fromisoformat(figures["timestamp"])
            start = end - timedelta(seconds=window)
            surely, possibly = rows_in(posts, start, end)
            reported = figures["insert_rate"] * window
            assert WINDOW <= window < WINDOW * 1.1 + 1e-6, (name, figures)
            assert surely > 0, (name, figures)
            assert surely - 0.5 <= reported <= possibly + 0.5, (name, surely, possibly, figures)


# -- Prometheus ---------------------------------------------------------------------------


@contextlib.contextmanager
def serving_with_key(url: str) -> Iterator[int]:
    """`tickvault serve` with TICKVAULT_API_KEY and TICKVAULT_READ_REQUIRES_KEY set."""
    port = free_port()
    environment = {**os.environ, "TICKVAULT_API_KEY": KEY, "TICKVAULT_READ_REQUIRES_KEY": "true"}
    command = [sys.executable, "-c", "from tickvault.cli import main; main()", "serve",
               "--port", str(port), "--database-url", url]  # fmt: skip
    with (
        tempfile.TemporaryFile() as log,
        subprocess.Popen(command, stdout=log, stderr=log, env=environment) as server,
    ):
        try:
            wait_for_port(port, server, log)
            yield port
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()


@contextlib.contextmanager
def prometheus(config: dict[str, Any], folder: Path) -> Iterator[str]:
    """A Prometheus with ``config`` (JSON is YAML), its API's base URL for the block."""
    assert PROMETHEUS is not None
    (folder / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    command = [PROMETHEUS, f"--config.file={folder / 'prometheus.yml'}",
               f"--storage.tsdb.path={folder / 'data'}",
               f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    with (
        (folder / "prometheus.log").open("wb") as log,
        subprocess.Popen(command, stdout=log, stderr=log) as process,
    ):
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def eventually(check: Callable[[], Any], what: str, log: Path, seconds: float = 120) -> Any:
    """``check()``'s first truthy answer; a deadline only so that a broken setup ends."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(httpx.HTTPError):
            answer = check()
            if answer:
                return answer
        if time.monotonic() > deadline:
            pytest.fail(
                f"{what}: not within {seconds} s; Prometheus said:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.25)


def api(http: httpx.Client, path: str, **params: str) -> Any:
    """The ``data`` of a Prometheus API answer; None while it is starting (503)."""
    response = http.get(path, params=params)
    if response.status_code == 503:
        return None
    body = response.json()
    assert body["status"] == "success", body
    return body["data"]


def query(http: httpx.Client, promql: str) -> list[dict[str, Any]]:
    data = api(http, "/api/v1/query", query=promql)
    return list(data["result"]) if data else []


@pytest.mark.skipif(
    PROMETHEUS is None,
    reason="no `prometheus` binary on PATH (Debian package prometheus): the real-scrape check "
    "needs it; the bearer token itself is tested in test_api.py",
)
def test_prometheus_scrapes_metrics_with_the_key_as_its_bearer_token(
    head_url: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "tickvault.key"
    key_file.write_text(KEY + "\n")  # Prometheus trims the file's trailing newline
    with serving_with_key(head_url) as port:
        target = {"targets": [f"127.0.0.1:{port}"]}
        config = {
            # A generous timeout: the machine may be busy, and a timeout is not what is tested.
            "global": {"scrape_interval": "5s", "scrape_timeout": "5s"},
            "scrape_configs": [
                # As docs/monitoring.md shows it.
                {
                    "job_name": "tickvault",
                    "metrics_path": "/metrics",
                    "authorization": {"type": "Bearer", "credentials_file": str(key_file)},
                    "static_configs": [target],
                },
                {
                    "job_name": "tickvault-inline",
                    "authorization": {"credentials": KEY},
                    "static_configs": [target],
                },
                # The spelling older configurations use (deprecated in Prometheus 2).
                {
                    "job_name": "tickvault-legacy",
                    "bearer_token_file": str(key_file),
                    "static_configs": [target],
                },
                {"job_name": "no-key", "static_configs": [target]},
            ],
        }
        log = tmp_path / "prometheus.log"
        with prometheus(config, tmp_path) as base, httpx.Client(base_url=base, timeout=10) as http:

            def scraped() -> dict[str, dict[str, Any]] | None:
                data = api(http, "/api/v1/targets")
                health = {t["labels"]["job"]: t for t in (data or {}).get("activeTargets", [])}
                done = len(health) == 4 and all(t["health"] != "unknown" for t in health.values())
                return health if done else None

            targets = eventually(scraped, "every target scraped once", log)
            # Each tried once: with the key (in any spelling) up, without it refused.
            health = {job: (t["health"], t["lastError"]) for job, t in targets.items()}
            assert health.pop("no-key")[0] == "down", targets["no-key"]
            assert "401" in targets["no-key"]["lastError"]
            assert health == {
                job: ("up", "") for job in ("tickvault", "tickvault-inline", "tickvault-legacy")
            }

            def up() -> dict[str, str] | None:
                series = {r["metric"]["job"]: r["value"][1] for r in query(http, "up")}
                return series if len(series) == 4 else None

            assert eventually(up, "the up series", log) == {
                "tickvault": "1",
                "tickvault-inline": "1",
                "tickvault-legacy": "1",
                "no-key": "0",
            }
            pool = eventually(
                lambda: query(http, 'tickvault_pool_size{job="tickvault"}'),
                "a tickvault metric",
                log,
            )
            overflow = query(http, 'tickvault_pool_overflow{job="tickvault"}')

    assert float(pool[0]["value"][1]) >= 1
    assert float(overflow[0]["value"][1]) == 0


@pytest.mark.skipif(PROMTOOL is None, reason="no `promtool` on PATH (Debian package prometheus)")
def test_promtool_finds_nothing_to_say_about_the_metrics(head_url: str) -> None:
    assert PROMTOOL is not None
    with TestClient(create_app(head_url, settings=Settings(database_url=head_url))) as client:
        client.post("/instruments", json={"symbol": "AAPL", "name": "Apple"})
        client.get("/instruments")
        client.get("/performance/metrics")  # index statistics too, on PostgreSQL
        exposition = client.get("/metrics").content
    checked = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, check=False
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, b"", b"")


def test_the_app_collects_in_the_background_every_monitor_interval(head_url: str) -> None:
    """TICKVAULT_MONITOR_INTERVAL_SECONDS sets how often the service's monitor collects: at
    0.05 s three collections come while an app at 3600 s has made none. On PostgreSQL the
    collections alone put the index statistics into /metrics."""

    def app(interval: float) -> TestClient:
        settings = Settings(database_url=head_url, monitor_interval_seconds=interval)
        return TestClient(create_app(head_url, settings=settings))

    with app(0.05) as fast, app(3600) as slow:
        collected = fast.app.state.runtime.monitor.history  # type: ignore[attr-defined]
        cap = time.monotonic() + 600  # only against a hang
        while len(collected) < 3 and time.monotonic() < cap:
            time.sleep(0.01)
        assert len(collected) >= 3
        assert len(slow.app.state.runtime.monitor.history) == 0  # type: ignore[attr-defined]
        index_series = {
            name: [
                line.split(" ")[0]
                for line in client.get("/metrics").text.splitlines()
                if line.startswith("tickvault_index_size_bytes{")
            ]
            for name, client in (("fast", fast), ("slow", slow))
        }
    if head_url.startswith("sqlite"):
        assert index_series == {"fast": [], "slow": []}
    else:
        assert len(index_series["fast"]) == 18  # every index at head
        assert (
            'tickvault_index_size_bytes{index="pk_market_data",table="market_data"}'
            in (index_series["fast"])
        )
        assert index_series["slow"] == []
