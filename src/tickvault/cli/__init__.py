"""The ``tickvault`` command line: a thin shell over ``tickvault.services``.

    tickvault db upgrade|downgrade|current|history    migrate the schema
    tickvault db partition --interval 1d|unpartition   PostgreSQL: time-partitioned market_data
    tickvault serve [--simulate]                       the HTTP API
    tickvault seed                                     demo instruments and alert rules
    tickvault simulate                                 a random-walk feed
    tickvault ingest FILE                              load a CSV / Parquet file
    tickvault export --instrument … --start … --end … FILE   ticks to Parquet / Arrow
    tickvault purge --older-than 30d [--dry-run]       hard-delete old soft-deleted rows (and
                                                       drop expired partitions)
    tickvault monitor                                  a live view of a running service
    tickvault analyze TABLE                            a table's size and index usage
    tickvault bench [--quick]                          the original performance claims, measured

Every command that opens the database reads ``TICKVAULT_DATABASE_URL`` and takes
``--database-url``.
"""

import typer

from tickvault.cli import bench, data, service
from tickvault.cli import export as export_commands
from tickvault.cli import monitor as monitor_commands
from tickvault.cli.db import db_app

app = typer.Typer(
    help="tickvault: market data and alert logs on SQLite and PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(db_app, name="db")
service.register(app)
data.register(app)
export_commands.register(app)
monitor_commands.register(app)
bench.register(app)


def main() -> None:
    app()
