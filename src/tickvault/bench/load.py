"""Concurrent writers of single ticks, through ``MarketDataService`` and through the HTTP API.

Each writer inserts one tick at a time for a fixed time. A write counts as acknowledged
when the call returned without error (or the API answered 200 with the tick accepted);
afterwards the table must hold exactly that many new rows. Errors are counted by kind, and
"database is locked" separately: on SQLite none may reach a caller.
"""

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO, Any

from sqlalchemy import text

from tickvault.bench.cases import percentiles
from tickvault.bench.data import INSTRUMENTS
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.services.alerts import AlertService
from tickvault.services.market_data import MarketDataService

# Load ticks are stamped after everything else, so they never collide with other cases.
LOAD_START = datetime(2025, 6, 1, tzinfo=UTC)


@dataclass
class LoadResult:
    writers: int
    seconds: float
    acknowledged: int = 0
    errors: int = 0
    locked_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    stored: int = 0

    def summary(self) -> dict[str, Any]:
        figures = percentiles(self.latencies_ms) if self.latencies_ms else {}
        return {
            "writers": self.writers,
            "ticks_per_second": round(self.acknowledged / self.seconds, 1),
            **{k: round(v, 3) for k, v in figures.items()},
            "acknowledged": self.acknowledged,
            "stored": self.stored,
            "all_acknowledged_stored": self.stored == self.acknowledged,
            "errors": self.errors,
            "database_locked_errors": self.locked_errors,
        }


class _Ticks:
    """Unique tick payloads shared by every writer (timestamps one microsecond apart)."""

    def __init__(self, offset: int) -> None:
        self._next = offset
        self._lock = threading.Lock()

    def next(self) -> dict[str, Any]:
        with self._lock:
            n = self._next
            self._next += 1
        return {
            "instrument_id": 1 + n % INSTRUMENTS,
            "timestamp": LOAD_START + timedelta(microseconds=n),
            "price": round(100 + n % 1000 / 100, 4),
            "volume": 1 + n % 500,
        }


async def count_ticks(url: str) -> int:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return int(
                (await connection.execute(text("SELECT count(*) FROM market_data"))).scalar_one()
            )
    finally:
        await engine.dispose()


def _note_error(result: LoadResult, message: str) -> None:
    result.errors += 1
    if "locked" in message.lower():
        result.locked_errors += 1


async def through_service(url: str, writers: int, seconds: float, offset: int) -> LoadResult:
    """``writers`` tasks calling ``insert_market_data`` in a loop for ``seconds``."""
    before = await count_ticks(url)
    engine = create_engine(url, pool_size=max(5, writers))
    sessions = create_session_factory(engine)
    # With alert rules evaluated, as the API's service does: the two paths differ by HTTP.
    service = MarketDataService(sessions, alerts=AlertService(sessions))
    result = LoadResult(writers, seconds)
    ticks = _Ticks(offset)
    deadline = time.perf_counter() + seconds

    async def writer() -> None:
        while time.perf_counter() < deadline:
            tick = ticks.next()
            started = time.perf_counter()
            try:
                await service.insert_market_data(tick)
            except Exception as exc:  # counted, never raised: the run must finish
                _note_error(result, str(exc))
                continue
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.acknowledged += 1

    try:
        await asyncio.gather(*(writer() for _ in range(writers)))
    finally:
        await service.aclose()
        await engine.dispose()
    result.stored = await count_ticks(url) - before
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(url: str) -> Iterator[int]:
    """``tickvault serve`` on a free local port, in a process of its own (as in production:
    the clients here do not share its interpreter), for the duration of the block."""
    port = free_port()
    command = [sys.executable, "-c", "from tickvault.cli import main; main()", "serve"]
    # Its log goes to a file: a pipe nobody reads would fill up and stall the server.
    with (
        tempfile.TemporaryFile() as log,
        subprocess.Popen(
            [*command, "--port", str(port), "--database-url", url],
            stdout=log,
            stderr=log,
            env={k: v for k, v in os.environ.items() if k != "TICKVAULT_API_KEY"},
        ) as process,
    ):
        try:
            wait_for_port(port, process, log)
            yield port
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_for_port(port: int, process: "subprocess.Popen[bytes]", log: IO[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            raise RuntimeError(f"the API did not start: {log.read().decode()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)


def through_http(url: str, port: int, writers: int, seconds: float, offset: int) -> LoadResult:
    """``writers`` threads POSTing one tick per request for ``seconds``."""
    before = asyncio.run(count_ticks(url))
    result = LoadResult(writers, seconds)
    ticks = _Ticks(offset)
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def writer() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while time.perf_counter() < deadline:
                tick = ticks.next()
                body = json.dumps({"ticks": [{**tick, "timestamp": tick["timestamp"].isoformat()}]})
                started = time.perf_counter()
                try:
                    connection.request(
                        "POST", "/market-data", body, {"content-type": "application/json"}
                    )
                    response = connection.getresponse()
                    payload = response.read().decode()
                except (OSError, http.client.HTTPException) as exc:
                    with lock:
                        _note_error(result, str(exc))
                    connection.close()
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    if response.status == 200 and json.loads(payload)["accepted"] == 1:
                        result.acknowledged += 1
                        result.latencies_ms.append(elapsed)
                    else:
                        _note_error(result, payload)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.stored = asyncio.run(count_ticks(url)) - before
    return result
