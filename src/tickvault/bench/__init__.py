"""``tickvault bench``: the original design's performance claims, measured.

The claims (index reduction: market_data INSERT ~2.5 -> ~1.5 ms, alert_logs ~4.0 -> ~2.0
ms; DECIMAL -> FLOAT: calculations 2-3x faster) next to measured figures, on throwaway
SQLite and PostgreSQL databases: ``run`` does the work, ``report`` shows it.
"""

from tickvault.bench.run import BenchConfig, run

__all__ = ["BenchConfig", "run"]
