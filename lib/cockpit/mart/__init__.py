"""The commercial data mart: canonical tables in one DuckDB file."""

from cockpit.mart.schema import TABLES, Column, Table
from cockpit.mart.store import (
    LoadReport,
    connect,
    create_schema,
    file_checksum,
    fill_dimensions,
    get_meta,
    load_frame,
    require_tables,
    set_meta,
)

__all__ = [
    "TABLES",
    "Column",
    "LoadReport",
    "Table",
    "connect",
    "create_schema",
    "file_checksum",
    "fill_dimensions",
    "get_meta",
    "load_frame",
    "require_tables",
    "set_meta",
]
