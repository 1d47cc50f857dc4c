"""A validated batch of ticks as Arrow columns, and the drivers' parameters made from them
a column at a time (the values of a batch never pass through a Python dict per row).

On SQLite, the parameters of multi-row INSERTs: each column to Python values through
numpy's ``tolist`` (about 15 ns a value; Arrow's ``to_pylist`` of a zoned timestamp takes
microseconds), the timestamps as the text SQLAlchemy stores, laid out row after row. On
PostgreSQL, COPY's binary format built from the columns' buffers: no Python object per
value at all.

Without numpy (pyarrow does not require it), plain ``to_pylist`` and COPY from records.
"""

import struct
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

# COPY ... (FORMAT binary): signature, flags, header extension length; -1 fields at the end.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
POSTGRES_EPOCH_US = 946_684_800_000_000  # 2000-01-01 UTC, in Unix microseconds
# Each column's binary type in market_data: integer, timestamptz, 6 double, bigint.
COPY_TYPES = (">i4", ">i8", ">f8", ">f8", ">f8", ">f8", ">f8", ">f8", ">i8")


@dataclass
class TickColumns:
    """A validated batch as Arrow arrays in ``bulk.TICK_COLUMNS`` order: instrument_id
    int64, timestamp ``timestamp[us, tz=UTC]``, six float64 prices, volume int64 (nulls for
    none). Built by ``tickvault.services.columnar``; needs pyarrow."""

    arrays: tuple[Any, ...]
    _made: dict[str, Any] = field(default_factory=dict, repr=False)

    def prepare(self, dialect: str) -> None:
        """Make the driver's parameters now (while the batch before is being written)."""
        if dialect == "postgresql":
            self.postgres_copy()
        else:
            self.sqlite_values()

    def __len__(self) -> int:
        return len(self.arrays[0])

    def records(self) -> list[tuple[Any, ...]]:
        """The batch as validated records (for alert rules, and COPY without numpy)."""
        return list(zip(*(array.to_pylist() for array in self.arrays), strict=True))

    def sqlite_values(self) -> tuple[Any, ...]:
        """The batch's values row after row in one flat tuple, the parameters of multi-row
        INSERTs (``bulk.sqlite_insert``); timestamps as ``sqlite_timestamp`` writes them."""
        if "sqlite" in self._made:
            return self._made["sqlite"]  # type: ignore[no-any-return]
        import pyarrow as pa

        # A naive microsecond timestamp as text: 2024-01-02 09:30:00.000000, always with the
        # microseconds (20 times faster than pyarrow.compute.strftime).
        stamps = self.arrays[1].cast(pa.timestamp("us")).cast(pa.string())
        arrays = (self.arrays[0], stamps, *self.arrays[2:])
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - depends on the install
            values = tuple(chain.from_iterable(zip(*(a.to_pylist() for a in arrays), strict=True)))
        else:  # a column at a time: numpy makes the Python values, and lays them out
            grid = np.empty((len(self), len(arrays)), object)  # None: no value
            for i, array in enumerate(arrays):
                if array.null_count == len(array):
                    continue
                grid[:, i] = _values(array)
            values = tuple(grid.ravel().tolist())
        self._made["sqlite"] = values
        return values

    def postgres_copy(self) -> bytes | None:
        """The batch in COPY's binary format (None without numpy: COPY from records then)."""
        if "copy" in self._made:
            return self._made["copy"]  # type: ignore[no-any-return]
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - depends on the install
            self._made["copy"] = None
            return None
        import pyarrow as pa

        arrays = [
            pa.compute.subtract(array.cast(pa.int64()), POSTGRES_EPOCH_US)
            if pa.types.is_timestamp(array.type)
            else array
            for array in self.arrays
        ]
        n = len(self)
        if all(array.null_count in (0, n) for array in arrays):
            rows = _fixed_rows(np, arrays)
        else:
            rows = _masked_rows(np, arrays)
        copy = self._made["copy"] = COPY_HEADER + rows + COPY_TRAILER
        return copy


def _fixed_rows(np: Any, arrays: list[Any]) -> bytes:
    """COPY's rows when each column is all values or all nulls (a file's columns are there
    or not): every row has the same layout, a numpy record of big-endian fields."""
    fields = [("count", ">i2")]
    for i, (array, kind) in enumerate(zip(arrays, COPY_TYPES, strict=True)):
        fields.append((f"length{i}", ">i4"))
        if not array.null_count:
            fields.append((f"value{i}", kind))
    rows = np.empty(len(arrays[0]), np.dtype(fields))  # packed: no padding between fields
    rows["count"] = len(COPY_TYPES)
    for i, (array, kind) in enumerate(zip(arrays, COPY_TYPES, strict=True)):
        if array.null_count:
            rows[f"length{i}"] = -1  # a null is its length alone
        else:
            rows[f"length{i}"] = np.dtype(kind).itemsize
            rows[f"value{i}"] = array.to_numpy()
    return bytes(rows.tobytes())


def _masked_rows(np: Any, arrays: list[Any]) -> bytes:
    """COPY's rows when some column has values and nulls: each row built with every field
    present, then the bytes of its null values dropped."""
    import pyarrow as pa

    n = len(arrays[0])
    slots = [4 + np.dtype(kind).itemsize for kind in COPY_TYPES]
    width = 2 + sum(slots)
    data = np.zeros((n, width), np.uint8)  # each row's fields, every one present
    keep = np.ones((n, width), bool)  # and which bytes of them a row keeps
    data[:, :2] = np.frombuffer(struct.pack(">h", len(COPY_TYPES)), np.uint8)
    offset = 2
    for array, kind, slot in zip(arrays, COPY_TYPES, slots, strict=True):
        size = slot - 4
        valid = array.is_valid().to_numpy(zero_copy_only=False)
        values = array.fill_null(pa.scalar(0, array.type)).to_numpy().astype(kind)
        lengths = np.where(valid, size, -1).astype(">i4")
        data[:, offset : offset + 4] = lengths.view(np.uint8).reshape(n, 4)
        data[:, offset + 4 : offset + slot] = values.view(np.uint8).reshape(n, size)
        keep[:, offset + 4 : offset + slot] = valid[:, None]  # a null is its length alone
        offset += slot
    return bytes(data[keep].tobytes())


def _values(array: Any) -> Any:
    """An Arrow array as numpy's Python objects (None for null); numpy must be there."""
    import pyarrow as pa

    if not array.null_count:
        return array.to_numpy(zero_copy_only=False)
    values: list[Any] = array.fill_null(pa.scalar(0, array.type)).to_numpy().tolist()
    for index in array.is_null().to_numpy(zero_copy_only=False).nonzero()[0].tolist():
        values[index] = None
    return values
