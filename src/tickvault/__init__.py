"""tickvault: the database layer of a trading platform.

Market data (ticks and quotes per instrument) and the log of fired price alerts, on SQLite
by default and PostgreSQL in production, through SQLAlchemy 2 (asyncio) and Alembic.
"""

__version__ = "0.1.0"
