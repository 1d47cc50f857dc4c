"""The live write path, measured side by side in one run (``tickvault bench``'s load part).

- ``single_vs_orm``: one producer's ``insert_market_data`` against a plain ORM add + commit,
  alternating, p50 and p99 of each;
- ``stream``: one WebSocket connection sending ``per_message`` ticks a message without
  waiting for answers, against ``bulk_rate`` (``MarketDataService.ingest`` of the same
  kind of rows) in the same run;
- ``http_vs_bare``: ``wrk`` posting one tick per request to ``tickvault serve`` and to a
  bare FastAPI endpoint that only parses the same body (``tickvault.bench.bare``), in the
  same uvicorn, one after the other.

Every case checks that the ticks acknowledged are the ticks stored.
"""

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from typing import Any

from tickvault.bench.cases import percentiles
from tickvault.bench.data import INSTRUMENTS
from tickvault.bench.load import LOAD_START, count_ticks, free_port, serving, wait_for_port
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.models import MarketData
from tickvault.services.alerts import AlertService
from tickvault.services.market_data import MarketDataService

# wrk: each connection posts one tick per request, timestamps unique per thread.
WRK_SCRIPT = """
local counter = 0
local thread_id = 0
local threads = 0
function setup(thread) thread:set("id", threads); threads = threads + 1 end
function init(args) thread_id = id end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local n = BASE + thread_id * 100000000 + counter
  local body = string.format('{"ticks": [{"instrument_id": %d, "timestamp": "%s", '
    .. '"price": 101.25, "volume": 10}]}', 1 + n % INSTRUMENTS, stamp(n))
  return wrk.format(nil, "/market-data", nil, body)
end
function stamp(n)
  local seconds = math.floor(n / 1000000)
  return os.date("!%Y-%m-%dT%H:%M:%S", EPOCH + seconds) .. string.format(".%06dZ", n % 1000000)
end
"""


def _tick(n: int) -> dict[str, Any]:
    return {
        "instrument_id": 1 + n % INSTRUMENTS,
        "timestamp": LOAD_START + timedelta(microseconds=n),
        "price": round(100 + n % 1000 / 100, 4),
        "volume": 1 + n % 500,
    }


async def single_vs_orm(url: str, n: int, offset: int) -> dict[str, Any]:
    """p50/p99 of ``insert_market_data`` and of an ORM add + commit, ``n`` each, alternating."""
    engine = create_engine(url)
    sessions = create_session_factory(engine)
    live: list[float] = []
    orm: list[float] = []
    try:
        async with MarketDataService(sessions, alerts=AlertService(sessions)) as service:
            # Warm up both paths on every instrument: the service learns each instrument's
            # previous price once, and neither should be timed opening connections.
            for i in range(INSTRUMENTS):
                await service.insert_market_data(_tick(offset - 2 * INSTRUMENTS + i))
                async with sessions() as session:
                    session.add(MarketData(**_tick(offset - INSTRUMENTS + i)))
                    await session.commit()
            for i in range(n):
                started = time.perf_counter()
                await service.insert_market_data(_tick(offset + 2 * i))
                live.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                async with sessions() as session:
                    session.add(MarketData(**_tick(offset + 2 * i + 1)))
                    await session.commit()
                orm.append((time.perf_counter() - started) * 1000)
    finally:
        await engine.dispose()
    figures = {"live": percentiles(live), "orm": percentiles(orm)}
    return {
        **figures,
        "p50_ratio": round(figures["live"]["p50_ms"] / figures["orm"]["p50_ms"], 3),
        "p99_ratio": round(figures["live"]["p99_ms"] / figures["orm"]["p99_ms"], 3),
    }


async def bulk_rate(url: str, rows: int, offset: int) -> float:
    """Rows a second through ``MarketDataService.ingest`` (the file-load path)."""
    engine = create_engine(url)
    try:
        sessions = create_session_factory(engine)
        async with MarketDataService(sessions, alerts=AlertService(sessions)) as service:
            ticks = [_tick(offset + i) for i in range(rows)]
            started = time.perf_counter()
            report = await service.ingest(ticks)
            elapsed = time.perf_counter() - started
        assert report.accepted == rows, report
    finally:
        await engine.dispose()
    return round(rows / elapsed, 1)


def stream(url: str, port: int, per_message: int, seconds: float, offset: int) -> dict[str, Any]:
    """One WebSocket connection sending for ``seconds`` without waiting for answers."""
    from websockets.sync.client import connect

    before = asyncio.run(count_ticks(url))
    sent: list[int] = []
    answers: list[dict[str, Any]] = []
    with connect(f"ws://127.0.0.1:{port}/market-data/stream", max_size=None) as ws:
        done = threading.Event()

        def receive() -> None:
            while not done.is_set() or len(answers) < len(sent):
                answers.append(json.loads(ws.recv()))

        started = time.perf_counter()
        receiver = threading.Thread(target=receive)
        receiver.start()
        n = offset
        while time.perf_counter() - started < seconds:
            ticks = []
            for _ in range(per_message):
                tick = _tick(n)
                ticks.append({**tick, "timestamp": tick["timestamp"].isoformat()})
                n += 1
            ws.send(json.dumps({"seq": len(sent), "ticks": ticks}))
            sent.append(per_message)
        done.set()
        receiver.join()
        elapsed = time.perf_counter() - started
    acknowledged = sum(a["accepted"] for a in answers)
    stored = asyncio.run(count_ticks(url)) - before
    return {
        "ticks_per_message": per_message,
        "messages": len(sent),
        "ticks_per_second": round(acknowledged / elapsed, 1),
        "acknowledged": acknowledged,
        "stored": stored,
        "all_acknowledged_stored": acknowledged == stored,
        "in_order": [a["seq"] for a in answers] == list(range(len(sent))),
        "errors": sum(1 for a in answers if "error" in a),
    }


def http_vs_bare(url: str, seconds: float, connections: int, offset: int) -> dict[str, Any]:
    """``wrk`` against the bare endpoint, then against ``tickvault serve``; None-valued
    figures and a note when wrk is not installed (Debian: ``apt-get install wrk``)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return {"skipped": "wrk is not installed (Debian: apt-get install wrk)"}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            WRK_SCRIPT.replace("INSTRUMENTS", str(INSTRUMENTS))
            .replace("BASE", str(offset))
            .replace("EPOCH", str(int(LOAD_START.timestamp())))
        )
    try:
        bare = _wrk_bare(wrk, script.name, seconds, connections)
        with serving(url) as port:
            _wrk(wrk, script.name, port, 1, connections)  # warm-up, not counted
            time.sleep(0.5)  # its last requests finish before counting
            before = asyncio.run(count_ticks(url))
            served = _wrk(wrk, script.name, port, seconds, connections)
            # wrk stops with requests in flight: let them finish before counting.
            time.sleep(0.5)
            stored = asyncio.run(count_ticks(url)) - before
    finally:
        os.unlink(script.name)
    acknowledged = served["requests"] - served["errors"]
    return {
        "connections": connections,
        "bare_requests_per_second": bare["requests_per_second"],
        "tickvault_requests_per_second": served["requests_per_second"],
        "ratio": round(served["requests_per_second"] / bare["requests_per_second"], 3),
        "tickvault_p50_ms": served["p50_ms"],
        "tickvault_p99_ms": served["p99_ms"],
        "acknowledged": acknowledged,
        "stored": stored,
        # Requests still in flight when wrk stops are stored but not counted by wrk.
        "all_acknowledged_stored": acknowledged <= stored <= acknowledged + connections,
        "errors": served["errors"],
    }


def _wrk_bare(wrk: str, script: str, seconds: float, connections: int) -> dict[str, Any]:
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "tickvault.bench.bare:app", "--port", str(port),
               "--log-level", "warning", "--no-access-log"]  # fmt: skip
    with tempfile.TemporaryFile() as log, subprocess.Popen(command, stdout=log, stderr=log) as p:
        try:
            wait_for_port(port, p, log)
            _wrk(wrk, script, port, 1, connections)  # warm-up, not counted
            return _wrk(wrk, script, port, seconds, connections)
        finally:
            p.terminate()
            p.wait(timeout=30)


def _wrk(wrk: str, script: str, port: int, seconds: float, connections: int) -> dict[str, Any]:
    out = subprocess.run(
        [wrk, "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "--timeout", "30s",
         "-s", script, f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests": int(_found(r"(\d+) requests in", out)),
        "requests_per_second": float(_found(r"Requests/sec:\s+([\d.]+)", out)),
        "p50_ms": _wrk_ms(re.search(r"50%\s+([\d.]+)(us|ms|s)", out)),
        "p99_ms": _wrk_ms(re.search(r"99%\s+([\d.]+)(us|ms|s)", out)),
        "errors": (int(errors.group(1)) if errors else 0)
        + (sum(map(int, socket.groups())) if socket else 0),
    }


def _found(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"wrk's output has no {pattern!r}: {text[-500:]}")
    return match.group(1)


def _wrk_ms(match: "re.Match[str] | None") -> float | None:
    if match is None:
        return None
    value, unit = float(match.group(1)), match.group(2)
    return round(value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 3)
