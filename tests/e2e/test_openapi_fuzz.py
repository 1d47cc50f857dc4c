"""Property-based run of the OpenAPI schema (schemathesis) against a live server on each
engine, every check on: whatever a client sends, no 500 and no response that breaks the
schema; what the schema allows is accepted and what it forbids refused; each path answers
405 with all its methods to one it does not take. Then chains of calls linked by the ids
they return (create, read, change, delete, read again).

``FUZZ_EXAMPLES=300`` runs as many examples per operation as the outside test did."""

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings

from tests.conftest import ENGINES, postgres_admin_url
from tests.e2e import fuzz_hooks
from tickvault.api import create_app
from tickvault.bench.data import throwaway
from tickvault.database.engine import create_engine, create_session_factory
from tickvault.services import schema as migrations
from tickvault.services.demo import seed_demo
from tickvault.services.market_data import MarketDataService
from tickvault.settings import Settings

KEY = "fuzz-key"
ROOT = Path(__file__).parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _populate(url: str) -> None:
    """Demo instruments and rules, a few hundred ticks: ids the fuzzer can hit."""
    engine = create_engine(url)
    try:
        factory = create_session_factory(engine)
        await seed_demo(factory)
        rows = [
            {"symbol": symbol, "timestamp": f"2024-05-06T13:{n // 60:02d}:{n % 60:02d}Z",
             "price": 100 + n / 7, "volume": n}
            for n in range(300)
            for symbol in ("AAPL", "MSFT")
        ]  # fmt: skip
        await MarketDataService(factory).ingest(rows)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module", params=ENGINES)
def live_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """A populated database at head, served over HTTP for the whole module."""
    admin_url = postgres_admin_url() if request.param == "postgresql" else None
    with throwaway(request.param, admin_url) as url:
        migrations.upgrade(url, "head")
        asyncio.run(_populate(url))
        port = _free_port()
        app = create_app(url, settings=Settings(database_url=url, api_key=KEY))
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)


# The schema is the app's own; the cases go to the live server of each engine.
schema = schemathesis.openapi.from_dict(
    create_app(settings=Settings(database_url="sqlite://")).openapi()
)


EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@schema.parametrize()
@SETTINGS
def test_no_server_errors_and_responses_match_the_schema(
    case: schemathesis.Case, live_server: str
) -> None:
    case.call_and_validate(base_url=live_server, headers={"X-API-Key": KEY})


def test_sequences_of_calls_keep_to_the_schema(live_server: str, tmp_path: Path) -> None:
    """The stateful phase, as `schemathesis run` drives it: chains of calls linked by the
    ids they return, every check on. Its engine, unlike Hypothesis' state machine under
    pytest, does not take a server whose rows changed since the last chain for flakiness."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{live_server}/openapi.json",
            "--phases=stateful",
            "--checks=all",
            f"--max-examples={max(EXAMPLES, 100)}",  # chains are cheap; the more, the deeper
            f"--header=X-API-Key: {KEY}",
            "--generation-database=none",
            "--no-color",
        ],
        cwd=tmp_path,  # nothing of the run is written into the repository
        env={**os.environ, "SCHEMATHESIS_HOOKS": fuzz_hooks.__name__, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    assert "Scenarios:" in run.stdout, run.stdout
