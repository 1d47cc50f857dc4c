"""`make run` as a user starts it: the service comes up on a fresh database with the demo
feed flowing, takes a tick and gives it back, shows up in `tickvault monitor`, and stops on
Ctrl-C."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(base: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def wait_for(base: str, process: subprocess.Popen[str], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"make run exited early:\n{process.stdout.read()}")  # type: ignore[union-attr]
        try:
            if call(base, "/health")["status"] == "ok":
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise AssertionError("the service did not come up")


def test_make_run_serves_a_live_feed_and_stops_on_ctrl_c(database_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TICKVAULT_DATABASE_URL": database_url}
    env.pop("TICKVAULT_API_KEY", None)
    process = subprocess.Popen(
        ["make", "--no-print-directory", "-C", str(REPO), "run", f"PORT={port}", "RATE=100"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(base, process)
        symbols = {i["symbol"]: i["id"] for i in call(base, "/instruments")["items"]}
        assert {"AAPL", "MSFT", "BTCUSD"} <= set(symbols)
        assert call(base, "/alert-rules")["items"]

        report = call(
            base,
            "/market-data",
            {"ticks": [{"symbol": "AAPL", "timestamp": "2030-01-02T03:04:05Z", "price": 123.4567}]},
        )
        assert (report["accepted"], report["rejected"]) == (1, 0)
        window = "start=2030-01-02T00:00:00Z&end=2030-01-03T00:00:00Z"
        page = call(base, f"/market-data/range?instrument_id={symbols['AAPL']}&{window}")
        assert [t["price"] for t in page["items"]] == [123.4567]

        # The simulated feed flows: ticks keep arriving for the demo instruments.
        deadline = time.monotonic() + 30
        while len(call(base, "/market-data/latest")) < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(call(base, "/market-data/latest")) >= 4
        assert call(base, "/performance/metrics")["total_rows_inserted"] > 1

        monitor = subprocess.run(
            [str(REPO / ".venv/bin/tickvault"), "monitor", "--once", "--api-url", base],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert monitor.returncode == 0, monitor.stderr
        assert "inserts" in monitor.stdout
        assert "market_data" in monitor.stdout
    finally:
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert "no TICKVAULT_API_KEY set" in output
    assert "Application shutdown complete" in output
