"""Runtime settings, read from ``TICKVAULT_*`` environment variables.

Nothing is read at import: call ``get_settings()``.
"""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///tickvault.db"


class Settings(BaseSettings):
    """tickvault's settings; each field is ``TICKVAULT_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="TICKVAULT_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    # A PostgreSQL streaming replica of database_url: the API's read-only endpoints read it
    # (the primary while it cannot be reached); writes stay on database_url. Empty: none.
    read_replica_url: str | None = None
    # SQLite page cache per connection, in MiB. Allocated lazily, so small databases
    # never use it; bulk inserts into many-index tables gain the most. 64 MiB matched
    # 256 MiB on a 1M-row bulk insert and keeps a full pool (15 connections) under 1 GiB.
    sqlite_cache_size_mb: int = Field(default=64, ge=1)
    # How long a SQLite writer waits for the lock before "database is locked".
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    # How long a PostgreSQL migration waits for a table lock before giving up.
    migration_lock_timeout_ms: int = Field(default=5000, ge=0)
    # A statement at least this slow goes to the monitor's slow-query log.
    slow_query_threshold_ms: float = Field(default=100.0, gt=0)

    # HTTP API. Writes need X-API-Key equal to api_key; with no key set, writes are open
    # and `tickvault serve` listens on 127.0.0.1 only.
    api_key: str | None = Field(default=None, min_length=1)
    read_requires_key: bool = False
    api_max_body_mb: float = Field(default=16.0, gt=0)
    # How often the service's monitor collects metrics in the background, and the trailing
    # window its figures cover.
    monitor_interval_seconds: float = Field(default=10.0, gt=0)
    # Ticks the live writer may hold waiting for their commit; past it producers wait (or
    # the HTTP API answers 503 with Retry-After).
    write_queue_ticks: int = Field(default=50_000, ge=1)
    # How long an Idempotency-Key's receipt is kept (and a retry answered from it); `tickvault
    # purge` removes older ones. File loads' receipts are kept for good.
    idempotency_key_hours: float = Field(default=24.0, gt=0)
    # Rows per Arrow record batch (one keyset page read from the database) in the API's Arrow
    # and Parquet answers and in `tickvault export`: memory holds about one batch.
    export_batch_rows: int = Field(default=65_536, ge=1)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, built on first use."""
    return Settings()
