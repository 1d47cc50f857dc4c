"""market_data's time partitions on PostgreSQL: their catalog, intervals and bounds.

::

    layout = await read_layout(connection)      # None: market_data is a plain table
    layout.interval.name, [p.name for p in layout.partitions]
    await create_ahead(connection, layout, now, periods=4)

A partitioned market_data is ``PARTITION BY RANGE ("timestamp")`` with one partition per
period (a UTC day, an ISO week from Monday, a calendar month), named after the period's
first day (``market_data_p20261127``), and ``market_data_default`` for rows no period
covers. The interval is read back from the partitions' own bounds. Alembic's autogenerate
leaves these tables out (``is_partition_name``): they are not in the models.

Everything here runs on the caller's connection and transaction; ``tickvault.services.
partitioning`` converts the table, ``tickvault.services.purge`` drops expired partitions.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tickvault.errors import ValidationError

TABLE = "market_data"
DEFAULT_PARTITION = f"{TABLE}_default"
_PARTITION_NAME = re.compile(rf"^{TABLE}_(p\d{{6}}|p\d{{8}}|default|new)$")
_BOUNDS = re.compile(r"FOR VALUES FROM \('([^']+)'\) TO \('([^']+)'\)")


@dataclass(frozen=True)
class Interval:
    """The size of one partition: ``1d``, ``1w`` (Monday to Monday) or ``1mo``."""

    name: str

    def floor(self, moment: datetime) -> datetime:
        """The start of the period holding ``moment`` (UTC)."""
        day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        if self.name == "1w":
            return day - timedelta(days=day.weekday())
        if self.name == "1mo":
            return day.replace(day=1)
        return day

    def following(self, start: datetime) -> datetime:
        """The start of the period after the one starting at ``start``."""
        if self.name == "1d":
            return start + timedelta(days=1)
        if self.name == "1w":
            return start + timedelta(weeks=1)
        if start.month == 12:
            return start.replace(year=start.year + 1, month=1)
        return start.replace(month=start.month + 1)

    def partition_name(self, start: datetime) -> str:
        return f"{TABLE}_p{start:%Y%m}" if self.name == "1mo" else f"{TABLE}_p{start:%Y%m%d}"


INTERVALS = {name: Interval(name) for name in ("1d", "1w", "1mo")}


def interval_of(name: str) -> Interval:
    try:
        return INTERVALS[name]
    except KeyError:
        raise ValidationError(f"interval {name!r} not understood: use 1d, 1w or 1mo") from None


def is_partition_name(name: str) -> bool:
    """A table tickvault's partitioning creates (a partition, the default one, a partition
    detached by purge, the table of a conversion under way)."""
    return _PARTITION_NAME.match(name) is not None


@dataclass(frozen=True)
class Partition:
    """One partition; ``lower``/``upper`` are None for the default partition."""

    name: str
    lower: datetime | None
    upper: datetime | None

    @property
    def is_default(self) -> bool:
        return self.lower is None


@dataclass(frozen=True)
class Layout:
    interval: Interval | None  # None: no range partition to tell it by
    partitions: list[Partition]  # ranges oldest first, then the default (if any)

    @property
    def default(self) -> Partition | None:
        return next((p for p in self.partitions if p.is_default), None)


async def is_partitioned(connection: AsyncConnection, table: str = TABLE) -> bool:
    kind = await connection.scalar(
        text("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(:table)"), {"table": table}
    )
    return bool(kind == "p")


async def read_layout(connection: AsyncConnection) -> Layout | None:
    """market_data's partitions, or None when it is a plain table (or SQLite)."""
    if connection.dialect.name != "postgresql" or not await is_partitioned(connection):
        return None
    # The bounds are printed in the session's time zone: read them in UTC.
    await connection.execute(text("SET LOCAL TimeZone = 'UTC'"))
    rows = await connection.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            f"JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = '{TABLE}'::regclass"
        )
    )
    ranges, defaults = [], []
    for relname, bound in rows:
        found = _BOUNDS.match(bound)
        if found is None:
            defaults.append(Partition(relname, None, None))
            continue
        lower, upper = (datetime.fromisoformat(value) for value in found.groups())
        ranges.append(Partition(relname, lower, upper))
    ranges.sort(key=lambda p: p.lower or datetime.min.replace(tzinfo=UTC))
    return Layout(_interval_of(ranges), ranges + defaults)


def _interval_of(ranges: list[Partition]) -> Interval | None:
    """The size of the newest range partition: 1 day, 7 days, or a month (28 to 31)."""
    if not ranges or ranges[-1].lower is None or ranges[-1].upper is None:
        return None
    days = (ranges[-1].upper - ranges[-1].lower).days
    return INTERVALS["1d" if days <= 1 else "1w" if days <= 7 else "1mo"]


def periods(interval: Interval, first: datetime, last: datetime) -> list[tuple[datetime, datetime]]:
    """The periods from the one holding ``first`` to the one holding ``last``, inclusive."""
    start, found = interval.floor(first), []
    while start <= last:
        end = interval.following(start)
        found.append((start, end))
        start = end
    return found


def create_sql(parent: str, interval: Interval, start: datetime, end: datetime) -> str:
    return (
        f"CREATE TABLE {interval.partition_name(start)} PARTITION OF {parent} "
        f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
    )


async def create_ahead(
    connection: AsyncConnection,
    layout: Layout,
    interval: Interval,
    now: datetime,
    periods_ahead: int,
) -> list[str]:
    """Create the partitions missing from the period holding ``now`` to ``periods_ahead``
    periods after it, and those of the periods the default partition holds rows of;
    returns their names.

    A new partition's range must hold no row of the default partition (PostgreSQL checks it
    when it attaches): those rows are moved into it, in this transaction."""
    last = now
    for _ in range(periods_ahead):
        last = interval.following(interval.floor(last))
    have = {p.lower for p in layout.partitions if not p.is_default}
    wanted = periods(interval, now, last)
    if layout.default is not None:
        # Periods the default partition holds rows of get their partition too.
        trunc = {"1d": "day", "1w": "week", "1mo": "month"}[interval.name]
        strays = await connection.execute(
            text(
                f"SELECT DISTINCT date_trunc('{trunc}', \"timestamp\" AT TIME ZONE 'UTC') "
                f"FROM {layout.default.name}"
            )
        )
        starts = {start.replace(tzinfo=UTC) for (start,) in strays}
        wanted += [(start, interval.following(start)) for start in sorted(starts)]
    created = []
    for start, end in sorted(set(wanted)):
        if start in have or _overlaps(layout, start, end):
            continue
        name = interval.partition_name(start)
        if layout.default is None:
            await connection.execute(text(create_sql(TABLE, interval, start, end)))
        else:
            await _create_from_default(connection, layout.default.name, name, start, end)
        created.append(name)
    return created


def _overlaps(layout: Layout, start: datetime, end: datetime) -> bool:
    return any(
        p.lower is not None and p.upper is not None and p.lower < end and start < p.upper
        for p in layout.partitions
    )


async def _create_from_default(
    connection: AsyncConnection, default: str, name: str, start: datetime, end: datetime
) -> None:
    bounds = {"start": start, "end": end}
    await connection.execute(
        text(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    )
    where = '"timestamp" >= :start AND "timestamp" < :end'
    await connection.execute(
        text(
            f"WITH moved AS (DELETE FROM {default} WHERE {where} RETURNING *) "
            f"INSERT INTO {name} SELECT * FROM moved"
        ),
        bounds,
    )
    await connection.execute(
        text(
            f"ALTER TABLE {TABLE} ATTACH PARTITION {name} "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
    )


async def count_rows(connection: AsyncConnection, partition: Partition) -> int:
    return int(await connection.scalar(text(f"SELECT count(*) FROM {partition.name}")) or 0)


async def estimated_rows(connection: AsyncConnection, partitions: list[Partition]) -> list[int]:
    """Each partition's row count as its statistics hold it (``pg_class.reltuples``, set by
    ANALYZE and VACUUM, autovacuum's included): no scan. -1 for one never analyzed."""
    rows = await connection.execute(
        text(
            "SELECT (SELECT reltuples FROM pg_class WHERE oid = to_regclass(n)) "
            "FROM unnest(CAST(:names AS text[])) WITH ORDINALITY AS t(n, i) ORDER BY i"
        ),
        {"names": [p.name for p in partitions]},
    )
    return [-1 if tuples is None or tuples < 0 else round(tuples) for tuples in rows.scalars()]


def expired(layout: Layout, cutoff: datetime) -> list[Partition]:
    """The range partitions whose every possible row is older than ``cutoff``."""
    return [p for p in layout.partitions if p.upper is not None and p.upper <= cutoff]


DETACHED = "tickvault: detached by purge, to be dropped;"
_MARK = re.compile(re.escape(DETACHED) + r" from (\S+) to (\S+)$")


async def detach(connection: AsyncConnection, partitions: list[Partition]) -> None:
    """Detach ``partitions`` and mark each (its comment), in one statement: ACCESS EXCLUSIVE
    on market_data, catalog work only. A purge stopped before its DROP leaves marked
    tables, which the next purge finds (``detached``) and drops."""
    steps = []
    for p in partitions:
        assert p.lower is not None
        assert p.upper is not None
        mark = f"{DETACHED} from {p.lower.isoformat()} to {p.upper.isoformat()}"
        steps.append(f"ALTER TABLE {TABLE} DETACH PARTITION {p.name}; ")
        steps.append(f"COMMENT ON TABLE {p.name} IS '{mark}'; ")
    await connection.execute(text(f"DO $$BEGIN {''.join(steps)}END$$"))


async def detached(connection: AsyncConnection) -> list[Partition]:
    """Tables a purge detached and has not dropped yet."""
    rows = await connection.execute(
        text(
            "SELECT relname, obj_description(oid, 'pg_class') FROM pg_class "
            "WHERE relkind = 'r' AND NOT relispartition AND relname LIKE :prefix "
            "AND starts_with(obj_description(oid, 'pg_class'), :mark) ORDER BY relname"
        ),
        {"prefix": f"{TABLE}_p%", "mark": DETACHED},
    )
    found = []
    for name, comment in rows:
        bounds = _MARK.match(comment)
        if bounds is not None:
            lower, upper = (datetime.fromisoformat(value) for value in bounds.groups())
            found.append(Partition(name, lower, upper))
    return found


async def drop(connection: AsyncConnection, names: list[str]) -> None:
    """Drop detached partitions in one statement (their files go at COMMIT: on a disk
    where each goes with an fsync, most of a purge's time); one a concurrent purge dropped
    already is passed over."""
    await connection.execute(text(f"DROP TABLE IF EXISTS {', '.join(names)}"))
