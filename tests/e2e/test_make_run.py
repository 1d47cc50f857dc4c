"""`make run` as a user starts it: the service comes up on a fresh database with the demo
feed flowing, takes a tick and gives it back, shows up in `tickvault monitor`, and stops on
Ctrl-C.

The Makefile runs the `tickvault` of the Python this suite runs under (``VENV=`` names a
directory whose ``bin/tickvault`` is that one, already set up), so the program under test is
the one installed here, whatever state the checkout's own ``.venv`` is in. Every wait is for
something the service does (answering /health, storing the feed's ticks, exiting); the cap on
each is only there so that a hang fails instead of blocking the run.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]
TICKVAULT = Path(sys.executable).with_name("tickvault")
HANG = 600.0  # seconds: far past anything the machine needs, under any load

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(base: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=HANG) as response:
        return json.load(response)


def venv_of_this_python(tmp_path: Path) -> Path:
    """A VENV for the Makefile: bin/tickvault is this interpreter's, and its install stamp
    is newer than pyproject.toml, so `make run` sets nothing up and runs the code under test."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "tickvault").symlink_to(TICKVAULT)
    (venv / ".installed").touch()
    return venv


def wait_until(what: str, process: subprocess.Popen[str], done: Callable[[], T | None]) -> T:
    """Poll ``done`` until it returns something; fail at once if `make run` exits."""
    cap = time.monotonic() + HANG
    while time.monotonic() < cap:
        if process.poll() is not None:
            raise AssertionError(f"make run exited before {what}:\n{process.stdout.read()}")  # type: ignore[union-attr]
        result = done()
        if result is not None:
            return result
        time.sleep(0.2)
    raise AssertionError(f"hung: no {what} after {HANG:.0f} s")


def test_make_run_serves_a_live_feed_and_stops_on_ctrl_c(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TICKVAULT_DATABASE_URL": database_url}
    env.pop("TICKVAULT_API_KEY", None)
    venv = venv_of_this_python(tmp_path)
    make = ["make", "--no-print-directory", "-C", str(REPO), f"VENV={venv}"]
    process = subprocess.Popen(
        [*make, "run", f"PORT={port}", "RATE=100"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )

    def healthy() -> bool | None:
        try:
            return call(base, "/health")["status"] == "ok" or None
        except (urllib.error.URLError, OSError):
            return None

    try:
        wait_until("an ok /health", process, healthy)
        symbols = {i["symbol"]: i["id"] for i in call(base, "/instruments")["items"]}
        assert sorted(symbols) == ["AAPL", "BTCUSD", "ES", "EURUSD", "MSFT", "SAP"]
        rules = call(base, "/alert-rules?limit=100")["items"]
        assert len(rules) == 4 * len(symbols)  # seeded: four demo rules per instrument

        report = call(
            base,
            "/market-data",
            {"ticks": [{"symbol": "AAPL", "timestamp": "2030-01-02T03:04:05Z", "price": 123.4567}]},
        )
        assert (report["accepted"], report["rejected"]) == (1, 0)
        window = "start=2030-01-02T00:00:00Z&end=2030-01-03T00:00:00Z"
        page = call(base, f"/market-data/range?instrument_id={symbols['AAPL']}&{window}")
        assert [t["price"] for t in page["items"]] == [123.4567]

        # The simulated feed flows: every demo instrument gets ticks of its own.
        def every_instrument_traded() -> list[dict[str, Any]] | None:
            ticks: list[dict[str, Any]] = call(base, "/market-data/latest")
            return ticks if len(ticks) == len(symbols) else None

        latest = wait_until("a feed tick for every instrument", process, every_instrument_traded)
        assert {t["instrument_id"] for t in latest} == set(symbols.values())
        fed = [t for t in latest if t["instrument_id"] != symbols["AAPL"]]
        assert all(t["timestamp"] < "2030" for t in fed)  # the feed's own ticks, not ours

        monitor = subprocess.run(
            [str(TICKVAULT), "monitor", "--once", "--api-url", base],
            capture_output=True,
            text=True,
            timeout=HANG,
            env=env,
        )
        assert monitor.returncode == 0, monitor.stderr
        assert "inserts" in monitor.stdout
        assert "market_data" in monitor.stdout
    finally:
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=HANG)
    assert "no TICKVAULT_API_KEY set" in output
    assert "Application shutdown complete" in output
