"""The DDL that would shard tickvault with Citus (not run by tickvault; docs/scaling.md).

Citus distributes a table by one column and refuses a primary key or unique constraint that
lacks it. ``KEYS`` (plain PostgreSQL, checked by the test suite on a database at head, plain
and partitioned) puts instrument_id into market_data's and alert_logs' primary keys;
``DISTRIBUTE`` (Citus only) makes the small tables reference tables and distributes the two
large ones, co-located, by instrument_id.
"""

# market_data's primary key is (id) on a plain table and (id, timestamp) on a partitioned
# one (PostgreSQL requires the partition key in every unique constraint).
KEYS = {
    "plain": [
        "ALTER TABLE market_data DROP CONSTRAINT pk_market_data, "
        "ADD CONSTRAINT pk_market_data PRIMARY KEY (id, instrument_id)",
        "ALTER TABLE alert_logs DROP CONSTRAINT pk_alert_logs, "
        "ADD CONSTRAINT pk_alert_logs PRIMARY KEY (id, instrument_id)",
    ],
    "partitioned": [
        "ALTER TABLE market_data DROP CONSTRAINT pk_market_data, "
        'ADD CONSTRAINT pk_market_data PRIMARY KEY (id, instrument_id, "timestamp")',
        "ALTER TABLE alert_logs DROP CONSTRAINT pk_alert_logs, "
        "ADD CONSTRAINT pk_alert_logs PRIMARY KEY (id, instrument_id)",
    ],
}

DISTRIBUTE = [
    "CREATE EXTENSION IF NOT EXISTS citus",
    "SELECT create_reference_table('instruments')",
    "SELECT create_reference_table('alert_rules')",
    "SELECT create_reference_table('write_receipts')",
    "SELECT create_distributed_table('market_data', 'instrument_id')",
    "SELECT create_distributed_table('alert_logs', 'instrument_id', "
    "colocate_with => 'market_data')",
]

REFERENCE_TABLES = ("instruments", "alert_rules", "write_receipts")
DISTRIBUTED_TABLES = ("market_data", "alert_logs")
DISTRIBUTION_COLUMN = "instrument_id"
