"""`tickvault db partition` / `unpartition` as a user runs them: on PostgreSQL they convert
and say so; on SQLite they refuse in one line."""

import sqlalchemy as sa
from typer.testing import CliRunner

from tests.integration.migration_data import run_on
from tickvault.cli import app

SEED_INSTRUMENT = "INSERT INTO instruments (symbol, name) VALUES ('ES', 'e')"
# 3,000 ticks over the 70 days before this month: 3 months, then this one and 1 ahead.
SEED_TICKS = (
    "INSERT INTO market_data (instrument_id, timestamp, price) SELECT 1, "
    "date_trunc('month', now()) - make_interval(days => 1 + g % 70), g "
    "FROM generate_series(1, 3000) g"
)


def tickvault(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_partition_and_unpartition(database_url: str) -> None:
    url = ["--database-url", database_url]
    assert tickvault("db", "upgrade", *url)[0] == 0
    if database_url.startswith("sqlite"):
        for command in (["partition", "--interval", "1d"], ["unpartition"]):
            code, out, err = tickvault("db", *command, *url)
            assert code == 1
            assert err.startswith(f"error: `tickvault db {command[0]}` is for PostgreSQL")
            assert len(err.strip().splitlines()) == 1
        return
    run_on(database_url, lambda c: c.execute(sa.text(SEED_INSTRUMENT)))
    run_on(database_url, lambda c: c.execute(sa.text(SEED_TICKS)))

    code, out, err = tickvault("db", "partition", "--interval", "1mo", "--ahead", "1", *url)
    assert code == 0, err
    assert out.startswith("market_data partitioned by 1mo: 3,000 rows copied, 6 partitions (")
    assert out.rstrip().endswith("market_data_default)")

    code, out, err = tickvault("db", "partition", "--interval", "1mo", "--ahead", "2", *url)
    assert code == 0, err
    assert out.startswith("market_data already partitioned by 1mo; partitions created: market_")
    code, out, err = tickvault("db", "partition", "--interval", "1w", *url)
    assert code == 1
    assert err.startswith("error: market_data is already partitioned by 1mo; run `tickvault db")

    code, out, err = tickvault("purge", "--older-than", "0d", "--dry-run", *url)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("market_data partitions wholly before ")
    assert lines[0].endswith(": would drop 3 (3,000 rows)")
    assert [line.split(" [")[0] for line in lines[1:4]] == [
        f"  {name}" for name in partitions(database_url)[:3]
    ]
    assert "will need --yes" not in out  # 3,000 rows: under the default --confirm-above
    code, out, err = tickvault("purge", "--older-than", "0d", "--confirm-above", "100", *url)
    assert code == 1
    assert "market_data partitions: 3,000), more than 100; nothing was deleted" in err

    code, out, err = tickvault("db", "unpartition", *url)
    assert (code, out.strip()) == (0, "market_data is one table again: 3,000 rows copied"), err
    code, _, err = tickvault("db", "unpartition", *url)
    assert (code, err.strip()) == (1, "error: market_data is not partitioned: nothing to undo")
    total = run_on(
        database_url,
        lambda c: tuple(c.execute(sa.text("SELECT count(*), sum(price) FROM market_data")).one()),
    )
    assert total == (3000, sum(range(1, 3001)))

    # Partitioned again, a purge with --yes drops the three past months.
    assert tickvault("db", "partition", "--interval", "1mo", *url)[0] == 0
    code, out, err = tickvault("purge", "--older-than", "0d", "--yes", *url)
    assert code == 0, err
    # The partitions' statistics are those of the conversion's ANALYZE.
    assert out.splitlines()[0].endswith(": dropped 3 (about 3,000 rows)")
    assert run_on(database_url, lambda c: c.scalar(sa.text(COUNT))) == 0


COUNT = "SELECT count(*) FROM market_data"


def partitions(url: str) -> list[str]:
    query = (
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'market_data'::regclass AND c.relname <> 'market_data_default'"
    )
    return sorted(run_on(url, lambda c: list(c.execute(sa.text(query)).scalars())))
