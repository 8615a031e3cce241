"""The simulator's Arrow schema, and its tables written to and read from Parquet or CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

__all__ = ["SCHEMA", "read_table", "write_table"]

_FIELDS: list[pa.Field[Any]] = [
    pa.field("tx_id", pa.int64(), nullable=False),
    pa.field("tx_time", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("customer_id", pa.int64(), nullable=False),
    pa.field("terminal_id", pa.int64(), nullable=False),
    pa.field("amount", pa.float64(), nullable=False),
    pa.field("is_fraud", pa.int8(), nullable=False),
    pa.field("scenario", pa.int8(), nullable=False),
    pa.field("tx_time_seconds", pa.int64(), nullable=False),
    pa.field("tx_time_days", pa.int64(), nullable=False),
]
SCHEMA = pa.schema(_FIELDS)


def _format(path: Path) -> str:
    """Storage format chosen by file suffix."""
    suffix = path.suffix.lower()
    if suffix in {".parquet", ".pq"}:
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise ValueError(f"unsupported table file suffix {path.suffix!r}; use .parquet or .csv")


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write ``table`` as Parquet or CSV depending on the suffix of ``path``."""
    target = Path(path)
    if _format(target) == "parquet":
        pq.write_table(table, target)
    else:
        pa_csv.write_csv(table, target)


def read_table(path: str | Path) -> pa.Table:
    """Read a table written by :func:`write_table`, restoring the :data:`SCHEMA` types."""
    source = Path(path)
    if _format(source) == "parquet":
        return pq.read_table(source)
    options = pa_csv.ConvertOptions(column_types={field.name: field.type for field in SCHEMA})
    return pa_csv.read_csv(source, convert_options=options).select(SCHEMA.names).cast(SCHEMA)
