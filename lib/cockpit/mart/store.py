"""Open the mart, create its tables and load checked rows into them.

`load_frame` is the one door into the canonical tables: it coerces every
column to its declared type, and a row whose value is missing, invalid or
whose key repeats goes to `quarantine` with its file, line, column, value
and reason. Each call appends one `load_log` row, for which
rows read = rows loaded + rows quarantined.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from cockpit.errors import MartError
from cockpit.mart.schema import TABLES, Table

logger = logging.getLogger(__name__)

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


@dataclass(frozen=True)
class LoadReport:
    """Row accounting of one load of one source into one table."""

    load_id: str
    table: str
    source_file: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int

    @property
    def balanced(self) -> bool:
        """True when every row read was either loaded or quarantined."""
        return self.rows_read == self.rows_loaded + self.rows_quarantined

    def __str__(self) -> str:
        return (
            f"{self.table} from {self.source_file}: read {self.rows_read}, "
            f"loaded {self.rows_loaded}, quarantined {self.rows_quarantined}"
        )


def connect(path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the mart at `path`, creating the file and its tables when writable.

    Raises MartError when a read-only open finds no file, or when another
    process holds the write lock.
    """
    path = Path(path)
    check_mart_file(path)
    if read_only and not path.exists():
        raise MartError(
            f"mart file {path} does not exist; build one with "
            f"`cockpit demo --mart {path}` or `cockpit ingest ... --mart {path}`"
        )
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        raise MartError(
            f"cannot open mart {path}: {exc}. Close other programs that "
            "write to it (a running batch or notebook) and try again"
        ) from exc
    if not read_only:
        create_schema(con)
    return con


#: Bytes 8-11 of every DuckDB database file.
_DUCKDB_MAGIC = b"DUCK"


def check_mart_file(path: str | Path) -> None:
    """Raise MartError when `path` exists but is not a DuckDB database.

    DuckDB would otherwise open, say, a CSV file as an in-memory database,
    and whatever is loaded into it would be lost on exit.
    """
    path = Path(path)
    if path.is_dir():
        raise MartError(
            f"mart path {path} is a folder; give a file name such as {path / 'mart.duckdb'}"
        )
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as handle:
        header = handle.read(12)
    if header[8:12] != _DUCKDB_MAGIC:
        raise MartError(
            f"{path} exists but is not a DuckDB mart; choose another --mart file name "
            "(the cockpit never overwrites other files)"
        )


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every canonical table and view that does not exist yet."""
    for table in TABLES.values():
        con.execute(table.ddl())
        _add_missing_columns(con, table)
    con.execute(
        """
        CREATE OR REPLACE VIEW opportunities_current AS
        SELECT * FROM opportunities
        QUALIFY snapshot_date = max(snapshot_date) OVER (PARTITION BY opportunity_id)
        """
    )


def _add_missing_columns(con: duckdb.DuckDBPyConnection, table: Table) -> None:
    """Add columns declared since the mart file was created, as empty columns.

    A mart built by an older version keeps working once it has been opened
    for writing. Read-only opens cannot migrate, so they see the old shape.
    """
    present = {
        row[0]
        for row in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?",
            [table.name],
        ).fetchall()
    }
    for column in table.columns:
        if column.name not in present:
            con.execute(
                f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.dtype}"
            )
            logger.info("added column %s.%s to an older mart", table.name, column.name)


def require_tables(con: duckdb.DuckDBPyConnection, names: Iterable[str]) -> None:
    """Raise MartError when any of `names` is missing from the mart."""
    present = {
        row[0]
        for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
    }
    missing = [name for name in names if name not in present]
    if missing:
        raise MartError(
            f"mart lacks table(s) {', '.join(missing)}; load the data first "
            "(`cockpit demo` or `cockpit ingest`)"
        )


def set_meta(con: duckdb.DuckDBPyConnection, values: Mapping[str, object]) -> None:
    """Store key-value facts about the mart, replacing earlier values."""
    for key, value in values.items():
        con.execute("DELETE FROM mart_meta WHERE key = ?", [key])
        con.execute(
            "INSERT INTO mart_meta VALUES (?, ?)",
            [key, None if value is None else str(value)],
        )


def get_meta(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Return every key-value fact stored about the mart."""
    return dict(con.execute("SELECT key, value FROM mart_meta").fetchall())


def file_checksum(path: str | Path) -> str:
    """SHA-256 of a file's bytes, for the load log."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_bool(values: pd.Series) -> pd.Series:
    lowered = values.astype("string").str.strip().str.lower()
    result = pd.Series(pd.NA, index=values.index, dtype="boolean")
    result[lowered.isin(_TRUE)] = True
    result[lowered.isin(_FALSE)] = False
    return result


def _blank(values: pd.Series) -> pd.Series:
    """True where a raw value is missing or only white space."""
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        text = values.astype("string").str.strip()
        return values.isna() | (text == "").fillna(True)
    return values.isna()


def _coerce(values: pd.Series, dtype: str, date_format: str | None) -> pd.Series:
    """Convert raw values to `dtype`; values that fail become missing."""
    if dtype == "VARCHAR":
        text = values.astype("string").str.strip()
        return text.mask(text == "")
    if dtype in ("DATE", "TIMESTAMP"):
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            parsed = values
        else:
            parsed = pd.to_datetime(values, format=date_format, errors="coerce")
        if getattr(parsed.dt, "tz", None) is not None:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        return parsed.dt.normalize() if dtype == "DATE" else parsed
    if dtype == "DOUBLE":
        numbers = pd.to_numeric(values, errors="coerce").astype("float64")
        # Overflowing text such as 1e309 parses as infinity; no amount is infinite.
        return numbers.where(np.isfinite(numbers))
    if dtype == "BIGINT":
        numbers = pd.to_numeric(values, errors="coerce")
        integral = numbers.notna() & (numbers == np.floor(numbers))
        return numbers.where(integral).astype("Int64")
    if dtype == "BOOLEAN":
        if pd.api.types.is_bool_dtype(values.dtype):
            return values.astype("boolean")
        return _parse_bool(values)
    raise ValueError(f"unknown column type {dtype}")


def load_frame(
    con: duckdb.DuckDBPyConnection,
    table_name: str,
    frame: pd.DataFrame,
    *,
    source: str,
    source_file: str | Path,
    lines: pd.Series | None = None,
    date_formats: Mapping[str, str] | None = None,
    checksum: str | None = None,
) -> LoadReport:
    """Check `frame` against the canonical table and append the valid rows.

    `frame` contains one source row per row, with columns named as in the
    canonical table; columns it lacks are loaded as missing. `lines` gives
    each row's line number in the source file (default: position + 2, the
    header being line 1). `date_formats` maps a date column to its strptime
    format; without one, pandas infers the format.

    Rows with a missing required value, a value that does not parse as the
    column's type, a value outside the column's allowed set, or a key that
    repeats an earlier row (in this frame or already in the mart) go to
    `quarantine`, one row there per problem.
    """
    table: Table = TABLES[table_name]
    unknown = [c for c in frame.columns if c not in table.column_names]
    if unknown:
        raise ValueError(
            f"{table_name} has no column(s) {unknown}; rename or drop them before loading"
        )
    frame = frame.reset_index(drop=True)
    line_numbers = (
        pd.Series(np.arange(len(frame)) + 2, dtype="int64")
        if lines is None
        else pd.Series(np.asarray(lines), dtype="int64")
    )
    date_formats = dict(date_formats or {})
    load_id = uuid.uuid4().hex[:12]
    problems: list[pd.DataFrame] = []
    clean = pd.DataFrame(index=frame.index)

    for column in table.columns:
        if column.name not in frame.columns:
            clean[column.name] = pd.Series(pd.NA, index=frame.index, dtype="object")
            if column.required:
                problems.append(
                    _problem_rows(
                        frame.index, column.name, None, "missing required column"
                    )
                )
            continue
        raw = frame[column.name]
        blank = _blank(raw)
        coerced = _coerce(raw, column.dtype, date_formats.get(column.name))
        invalid = coerced.isna() & ~blank
        if invalid.any():
            problems.append(
                _problem_rows(
                    frame.index[invalid],
                    column.name,
                    raw[invalid],
                    f"invalid {column.dtype.lower()} value",
                )
            )
        if column.required and blank.any():
            problems.append(
                _problem_rows(
                    frame.index[blank], column.name, None, "missing required value"
                )
            )
        if column.allowed is not None:
            outside = coerced.notna() & ~coerced.isin(column.allowed)
            if outside.any():
                problems.append(
                    _problem_rows(
                        frame.index[outside],
                        column.name,
                        raw[outside],
                        f"value not in allowed set {list(column.allowed)}",
                    )
                )
        clean[column.name] = coerced

    bad_rows = (
        pd.Index(pd.concat(problems)["row"].unique()) if problems else pd.Index([])
    )
    if table.key:
        problems.extend(_key_problems(con, table, clean, bad_rows, line_numbers))

    problem_frame = (
        pd.concat(problems, ignore_index=True)
        if problems
        else pd.DataFrame(columns=["row", "column_name", "value", "reason"])
    )
    quarantined_rows = pd.Index(problem_frame["row"].unique())
    good = clean.drop(index=quarantined_rows)

    if len(good):
        con.register("_incoming", good)
        columns = ", ".join(table.column_names)
        con.execute(
            f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM _incoming"
        )
        con.unregister("_incoming")

    source_file = str(source_file)
    if len(problem_frame):
        _write_quarantine(
            con, load_id, table.name, source_file, frame, problem_frame, line_numbers
        )

    report = LoadReport(
        load_id=load_id,
        table=table.name,
        source_file=source_file,
        rows_read=len(frame),
        rows_loaded=len(good),
        rows_quarantined=len(quarantined_rows),
    )
    con.execute(
        "INSERT INTO load_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            load_id,
            source,
            source_file,
            checksum,
            table.name,
            datetime.now(timezone.utc).replace(tzinfo=None),
            report.rows_read,
            report.rows_loaded,
            report.rows_quarantined,
        ],
    )
    logger.info("%s", report)
    return report


def _problem_rows(rows: Iterable, column: str, values, reason: str) -> pd.DataFrame:
    rows = list(rows)
    if values is None:
        value_list = [None] * len(rows)
    else:
        value_list = [None if pd.isna(v) else str(v) for v in values]
    return pd.DataFrame(
        {"row": rows, "column_name": column, "value": value_list, "reason": reason}
    )


def _key_problems(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    clean: pd.DataFrame,
    bad_rows: pd.Index,
    line_numbers: pd.Series,
) -> list[pd.DataFrame]:
    """Flag rows whose key repeats an earlier valid row or a row in the mart."""
    problems: list[pd.DataFrame] = []
    candidates = clean.drop(index=bad_rows)
    key = list(table.key)
    key_parts = candidates[key].astype("string").fillna("<missing>")
    key_text = key_parts[key[0]]
    for column in key[1:]:
        key_text = key_text + "|" + key_parts[column]
    repeated = key_text.duplicated(keep="first")
    if repeated.any():
        first_row_of_key = dict(
            zip(key_text[~repeated].tolist(), key_text.index[~repeated], strict=True)
        )
        first_lines = [
            int(line_numbers.loc[first_row_of_key[k]]) for k in key_text[repeated]
        ]
        problems.append(
            pd.DataFrame(
                {
                    "row": key_text.index[repeated],
                    "column_name": ",".join(key),
                    "value": key_text[repeated].values,
                    "reason": [
                        f"duplicate key; first seen at line {line}"
                        for line in first_lines
                    ],
                }
            )
        )
    unique = candidates.loc[~repeated, key]
    if len(unique):
        con.register("_keys", unique.reset_index())
        join = " AND ".join(f"t.{k} IS NOT DISTINCT FROM k.{k}" for k in key)
        existing = con.execute(
            f"SELECT k.index FROM _keys k JOIN {table.name} t ON {join}"
        ).fetchall()
        con.unregister("_keys")
        if existing:
            rows = [row[0] for row in existing]
            problems.append(
                pd.DataFrame(
                    {
                        "row": rows,
                        "column_name": ",".join(key),
                        "value": key_text.loc[rows].values,
                        "reason": "key already in the mart",
                    }
                )
            )
    return problems


def _write_quarantine(
    con: duckdb.DuckDBPyConnection,
    load_id: str,
    table_name: str,
    source_file: str,
    frame: pd.DataFrame,
    problems: pd.DataFrame,
    line_numbers: pd.Series,
) -> None:
    raw_rows = {
        row: json.dumps(
            {k: (None if pd.isna(v) else str(v)) for k, v in frame.loc[row].items()}
        )
        for row in problems["row"].unique()
    }
    out = pd.DataFrame(
        {
            "load_id": load_id,
            "table_name": table_name,
            "source_file": source_file,
            "line": line_numbers.loc[problems["row"].values].values,
            "column_name": problems["column_name"].values,
            "value": problems["value"].values,
            "reason": problems["reason"].values,
            "raw_row": [raw_rows[row] for row in problems["row"]],
        }
    )
    con.register("_quarantine", out)
    con.execute("INSERT INTO quarantine SELECT * FROM _quarantine")
    con.unregister("_quarantine")
    logger.warning(
        "%d row(s) of %s quarantined for %s",
        problems["row"].nunique(),
        source_file,
        table_name,
    )


def fill_dimensions(con: duckdb.DuckDBPyConnection) -> None:
    """Resolve missing region and business unit on the fact tables.

    Region comes from the account, else from the seller; business unit from
    the product. Values the export already carried are kept.
    """
    for fact in ("transactions", "opportunities"):
        con.execute(
            f"""
            UPDATE {fact} f SET region = a.region
            FROM accounts a
            WHERE f.region IS NULL AND f.account_id = a.account_id AND a.region IS NOT NULL
            """
        )
        con.execute(
            f"""
            UPDATE {fact} f SET region = r.region
            FROM reps r
            WHERE f.region IS NULL AND f.rep_id = r.rep_id AND r.region IS NOT NULL
            """
        )
        con.execute(
            f"""
            UPDATE {fact} f SET business_unit = p.business_unit
            FROM products p
            WHERE f.business_unit IS NULL AND f.product_id = p.product_id
            """
        )
    con.execute(
        """
        UPDATE activities f SET region = r.region
        FROM reps r
        WHERE f.region IS NULL AND f.rep_id = r.rep_id
        """
    )
