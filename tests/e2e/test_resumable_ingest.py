"""`tickvault ingest` is exactly-once, on both engines: killed with SIGKILL anywhere and run
again, it continues after the last committed row (the table then equals the file, no
duplicate, and the rejects file lists each refused row once); a file already loaded stores
nothing; `--force` loads it again; two loads of one file at once store it once."""

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from tests.integration.migration_data import run_on
from tickvault.cli import app

TICKVAULT = str(Path(sys.executable).with_name("tickvault"))
ROWS = 300_000
BAD_EVERY = 997  # rows refused by validation (an unknown symbol)
TRIALS = 5


def write_file(path: Path, rows: int) -> None:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["symbol", "timestamp", "price", "volume"])
        for i in range(rows):
            symbol = "NOPE" if i % BAD_EVERY == 5 else ("AAPL", "MSFT")[i % 2]
            seconds, micros = divmod(i, 1000)
            stamp = f"2024-05-06T{9 + seconds // 3600:02d}:{seconds // 60 % 60:02d}:"
            out.writerow([symbol, f"{stamp}{seconds % 60:02d}.{micros:06d}Z", 100 + i % 997, i])


def expected_rows(rows: int) -> list[tuple[int, int]]:
    """(volume, price) of every good row: the volume is the row's position."""
    return sorted((i, 100 + i % 997) for i in range(rows) if i % BAD_EVERY != 5)


def stored(url: str) -> list[tuple[int, int]]:
    def work(connection: sa.Connection) -> list[tuple[int, int]]:
        result = connection.execute(sa.text("SELECT volume, price FROM market_data"))
        return sorted((int(volume), round(price)) for volume, price in result)

    return run_on(url, work)


def count(url: str) -> int:
    return int(
        run_on(url, lambda c: c.execute(sa.text("SELECT count(*) FROM market_data")).scalar_one())
    )


def refused_positions(path: Path) -> list[int]:
    with path.open(newline="") as handle:
        return [int(row["position"]) for row in csv.DictReader(handle)]


def ingest(url: str, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TICKVAULT, "ingest", str(path), "--database-url", url, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def seeded(url: str) -> None:
    result = CliRunner().invoke(app, ["seed", "--database-url", url])
    assert result.exit_code == 0, result.output


def reset(url: str) -> None:
    def work(connection: sa.Connection) -> None:
        connection.execute(sa.text("DELETE FROM market_data"))
        connection.execute(sa.text("DELETE FROM write_receipts"))

    run_on(url, work)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("load") / "ticks.csv"
    write_file(path, ROWS)
    return path


def test_killed_loads_resume_to_exactly_the_file(
    head_url: str, big_file: Path, tmp_path: Path
) -> None:
    seeded(head_url)
    source = tmp_path / big_file.name
    source.write_bytes(big_file.read_bytes())
    rejects = source.with_name(source.name + ".rejects.csv")
    bad = [i for i in range(ROWS) if i % BAD_EVERY == 5]
    rng = random.Random(20261127)
    resumed_from_middle = 0
    for trial in range(TRIALS):
        reset(head_url)
        rejects.unlink(missing_ok=True)
        target = rng.randrange(1, ROWS - 20_000)  # kill once this many rows are stored
        process = subprocess.Popen(
            [TICKVAULT, "ingest", str(source), "--database-url", head_url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while process.poll() is None and count(head_url) < target:
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.1))  # anywhere in the next batch
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.wait()
        at_kill = count(head_url)
        assert at_kill < len(expected_rows(ROWS)), f"trial {trial}: the load was not cut short"

        again = ingest(head_url, source)
        assert again.returncode == 2, again.stderr  # the refused rows
        if at_kill:
            resumed_from_middle += 1
            assert f"resuming {source} after row " in again.stdout, again.stdout
        assert stored(head_url) == expected_rows(ROWS), f"trial {trial} (killed at {at_kill})"
        assert refused_positions(rejects) == bad, f"trial {trial}"

        third = ingest(head_url, source)
        assert third.returncode == 0, third.stderr
        assert f"{source} was already loaded" in third.stdout
        assert "nothing stored" in third.stdout
        assert count(head_url) == len(expected_rows(ROWS))
    assert resumed_from_middle >= TRIALS - 1

    forced = ingest(head_url, source, "--force")
    assert forced.returncode == 2, forced.stderr
    doubled = sorted(expected_rows(ROWS) * 2)
    assert stored(head_url) == doubled


def test_two_loads_of_one_file_at_once_store_it_once(head_url: str, tmp_path: Path) -> None:
    seeded(head_url)
    source = tmp_path / "ticks.csv"
    write_file(source, 60_000)
    processes = [
        subprocess.Popen(
            [TICKVAULT, "ingest", str(source), "--database-url", head_url, "--batch-size", "2000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results: list[tuple[int, str, str]] = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        results.append((process.returncode, out, err))
    assert stored(head_url) == expected_rows(60_000), results
    stopped = [r for r in results if r[0] == 1]
    for _, _, err in stopped:
        assert "another load of the same input" in err
        assert "Traceback" not in err
    finished = [r for r in results if r[0] in (0, 2)]
    assert finished, results
    assert len(stopped) + len(finished) == 2


def test_a_loaded_file_under_another_name_is_the_same_load(head_url: str, tmp_path: Path) -> None:
    seeded(head_url)
    first = tmp_path / "a.csv"
    write_file(first, 1_000)
    renamed = tmp_path / "b.csv"
    renamed.write_bytes(first.read_bytes())
    assert ingest(head_url, first).returncode == 2
    again = ingest(head_url, renamed)
    assert again.returncode == 0, again.stderr
    assert f"{renamed} was already loaded" in again.stdout
    assert stored(head_url) == expected_rows(1_000)
    # Other content is another load, from its first row.
    changed = tmp_path / "c.csv"
    changed.write_bytes(first.read_bytes() + b"AAPL,2024-05-06T10:00:00Z,1,1000\r\n")
    assert ingest(head_url, changed).returncode == 2
    assert count(head_url) == 2 * len(expected_rows(1_000)) + 1


def test_a_load_stopped_by_an_error_says_how_many_rows_it_stored(
    head_url: str, big_file: Path, tmp_path: Path
) -> None:
    seeded(head_url)
    source = tmp_path / big_file.name
    source.write_bytes(big_file.read_bytes())
    process = subprocess.Popen(
        [TICKVAULT, "ingest", str(source), "--database-url", head_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while process.poll() is None and count(head_url) == 0:
        time.sleep(0.02)
    # Another load of the same file moves the receipt: this one must stop at its next batch.
    run_on(
        head_url,
        lambda c: c.execute(
            sa.text("UPDATE write_receipts SET rows_consumed = rows_consumed + 1000000000")
        ),
    )
    out, err = process.communicate(timeout=300)
    assert process.returncode == 1, (out, err)
    stored_rows = count(head_url)
    assert 0 < stored_rows < len(expected_rows(ROWS))
    assert f"stopped: {stored_rows:,} rows of {source} were stored by this run" in err
    assert "error: another load of the same input moved its receipt" in err
    assert "Traceback" not in err
