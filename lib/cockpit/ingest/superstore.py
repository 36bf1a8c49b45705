"""Loader for the Tableau "Sample - Superstore" order-line export.

The mapping lives in parameters/sources/superstore.yaml and runs through the
generic loader. One CSV row is one order line: it becomes one
`transactions` row, and the customer and product columns feed the
`accounts` and `products` tables. Profit is stored as cost (Sales - Profit),
so revenue - cost gives the file's Profit back.

The module also keeps the CSV helpers that the macro loader reads exports
with.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

from cockpit.ingest.generic import ALTERNATE_NAMES_KEY, ingest_spec, update_source_meta
from cockpit.ingest.readers import read_csv_table, require_columns
from cockpit.ingest.spec import find_spec, load_spec
from cockpit.mart import LoadReport

logger = logging.getLogger(__name__)

SOURCE = "superstore"

__all__ = [
    "ALTERNATE_NAMES_KEY",
    "CsvExport",
    "ingest_superstore",
    "normalise_name",
    "read_export",
    "require_columns",
    "update_source_meta",
]


@dataclass(frozen=True)
class CsvExport:
    """The text of one CSV export: every cell a string, blanks as ''."""

    path: Path
    header: list[str]
    frame: pd.DataFrame
    lines: pd.Series
    """Line number in the file where each record starts (the header is line 1)."""


def read_export(
    path: Path, required: Sequence[str], encoding: str = "utf-8"
) -> CsvExport:
    """Read a CSV export as text, keeping each record's real line number.

    Raises IngestError when the file cannot be decoded, has no header,
    repeats a header name, lacks any of the `required` columns (all of them
    are named at once), or has a record with more cells than the header.
    """
    table = read_csv_table(path, encoding=encoding)
    require_columns(Path(path), table.header, required)
    return CsvExport(
        path=Path(path),
        header=table.header,
        frame=table.frame.astype(object),
        lines=table.lines,
    )


def normalise_name(name: object) -> str:
    """Return `name` in lower case without spaces or punctuation, for matching."""
    if name is None or (isinstance(name, float) and pd.isna(name)):
        return ""
    return re.sub(r"[\W_]+", "", str(name).lower())


def ingest_superstore(path: Path, con: duckdb.DuckDBPyConnection) -> list[LoadReport]:
    """Load the Superstore order-line CSV at `path` into the open mart `con`.

    Rows go to `accounts` (one per Customer ID), `products` (one per
    Product ID) and `transactions` (one per order line, keyed by Order ID
    and Row ID), as parameters/sources/superstore.yaml maps them. Sets the
    mart's company, currency and as-of date (the latest order date loaded).
    A file already loaded unchanged is skipped.

    Raises IngestError when the file is not UTF-8 or lacks a required
    column. Bad rows are quarantined.
    """
    return ingest_spec(load_spec(find_spec(SOURCE)), path, con)
