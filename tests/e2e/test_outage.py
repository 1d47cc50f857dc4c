"""The database goes away under `tickvault serve --simulate` and comes back: meanwhile every
endpoint answers 503 with Retry-After (never 500) and /health says so; afterwards the
simulated feed resumes by itself and writes are accepted again.

PostgreSQL: a throwaway cluster of the test's own (initdb, pg_ctl), stopped and started;
never the shared server. SQLite: another process holds the write lock past the busy timeout.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.e2e.test_live_service import competing_writer
from tests.integration.migration_data import run_on
from tickvault.bench.load import free_port, wait_for_port
from tickvault.cli import app
from tickvault.services import schema
from tickvault.services.demo import DEMO_INSTRUMENTS

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class Cluster:
    """A PostgreSQL cluster in a temporary folder, run as the ``postgres`` user."""

    def __init__(self, folder: Path) -> None:
        self.data = folder / "data"
        self.port = free_port()
        self.folder = folder

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        log = str(self.folder / "server.log")  # the server must not hold our pipes open
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", log, "-o", options, "-w", "start"
        )

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    if not (PG_BIN / "initdb").exists():
        if os.environ.get("TICKVAULT_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{PG_BIN / 'initdb'} is missing (TICKVAULT_REQUIRE_POSTGRES=1)")
        pytest.skip("PostgreSQL's server binaries are not installed")
    folder = Path(tempfile.mkdtemp(prefix="tickvault-cluster-"))
    cluster = Cluster(folder)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        subprocess.run(
            [*(["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []),
             str(PG_BIN / "pg_ctl"), "-D", str(cluster.data), "-m", "immediate", "stop"],
            capture_output=True, check=False,
        )  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def serving_with_feed(url: str, port: int, **env: str) -> Iterator[None]:
    """`tickvault serve --simulate` for the block; Ctrl-C at the end must stop it cleanly."""
    command = [sys.executable, "-c", "from tickvault.cli import main; main()", "serve",
               "--simulate", "--rate", "200", "--port", str(port),
               "--database-url", url]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if k != "TICKVAULT_API_KEY"}
    with (
        tempfile.TemporaryFile() as log,
        subprocess.Popen(command, stdout=log, stderr=log, env={**environment, **env}) as server,
    ):
        try:
            wait_for_port(port, server, log)
            yield
        finally:
            server.send_signal(signal.SIGINT)
            code = server.wait(timeout=30)
        log.seek(0)
        assert code == 0, log.read().decode()[-2000:]


def ticks(url: str) -> int:
    return int(
        run_on(url, lambda c: c.execute(sa.text("SELECT count(*) FROM market_data")).scalar_one())
    )


def eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.1)


def flowing(url: str) -> Callable[[], bool]:
    seen = [ticks(url)]

    def check() -> bool:
        now = ticks(url)
        grew, seen[0] = now > seen[0], now
        return grew

    return check


def post_one(http: httpx.Client, second: int) -> httpx.Response:
    tick = {"symbol": DEMO_INSTRUMENTS[0][0], "timestamp": f"2026-03-03T10:00:{second:02d}Z",
            "price": 100.5}  # fmt: skip
    return http.post("/market-data", json={"ticks": [tick]})


def seeded(url: str) -> str:
    schema.upgrade(url, "head")
    assert CliRunner().invoke(app, ["seed", "--database-url", url]).exit_code == 0
    return url


def test_postgresql_stopped_and_started_under_the_feed(own_cluster: Cluster) -> None:
    url = seeded(own_cluster.url)
    port = free_port()
    with (
        serving_with_feed(url, port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        eventually(flowing(url), 10, "the feed stores ticks")
        assert http.get("/health").json()["status"] == "ok"
        own_cluster.stop()
        time.sleep(0.5)
        for response in (
            post_one(http, 1),
            http.get("/market-data/latest"),
            http.get("/instruments"),
            http.get("/health"),
        ):
            assert response.status_code == 503, (response.request.url, response.text)
            assert response.headers["Retry-After"] == "1" or "health" in str(response.url)
        own_cluster.start()
        eventually(flowing(url), 10, "the feed resumes by itself")
        assert post_one(http, 2).status_code == 200
        eventually(lambda: http.get("/health").json()["status"] == "ok", 5, "health ok")


def test_sqlite_locked_past_the_busy_timeout_under_the_feed(tmp_path: Path) -> None:
    url = seeded(f"sqlite+aiosqlite:///{tmp_path}/outage.db")
    port = free_port()
    with (
        serving_with_feed(url, port, TICKVAULT_SQLITE_BUSY_TIMEOUT_MS="200"),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        eventually(flowing(url), 10, "the feed stores ticks")
        with competing_writer(url, 3, 0, 3):
            time.sleep(0.5)
            response = post_one(http, 1)
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "1"
            health = http.get("/health").json()
            assert health["status"] == "degraded", health
            assert http.get("/market-data/latest").status_code == 200  # reads go on
        eventually(flowing(url), 10, "the feed resumes by itself")
        assert post_one(http, 2).status_code == 200
        eventually(lambda: http.get("/health").json()["status"] == "ok", 5, "health ok")
