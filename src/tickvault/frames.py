"""Arrow tables of ticks and bars as pandas or Polars data frames (optional extras).

::

    table = await MarketDataRepository(session).range(1, start, end, as_arrow=True)
    frame = to_pandas(table)      # pip install 'tickvault[pandas]'
    frame = to_polars(table)      # pip install 'tickvault[polars]'

The values are those of the JSON API: timestamps UTC (``datetime64[us, UTC]`` in pandas),
prices to 4 decimals, and whole numbers stay whole: pandas' nullable ``Int64``/``Int32``
for ids, counts and volumes (a plain conversion would turn a volume column with a gap
into floats), NaN for a missing price.
"""

from typing import Any

from tickvault.errors import NotAcceptable


def to_pandas(table: Any) -> Any:
    """A ``pandas.DataFrame`` of ``table`` (a ``pyarrow.Table`` from ``range`` or ``ohlcv``)."""
    try:
        import pandas as pd
        import pyarrow as pa
    except ImportError as exc:
        raise NotAcceptable("pandas frames need pandas: pip install 'tickvault[pandas]'") from exc
    whole = {pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}
    return table.to_pandas(types_mapper=whole.get)


def to_polars(table: Any) -> Any:
    """A ``polars.DataFrame`` of ``table``; Polars keeps Arrow's types as they are."""
    try:
        import polars as pl
    except ImportError as exc:
        raise NotAcceptable("Polars frames need polars: pip install 'tickvault[polars]'") from exc
    return pl.from_arrow(table)
