"""Generic loader: load any export into the mart from its YAML source spec.

For each load of the spec the loader reads the input, maps and parses every
column, maps stages, converts amounts into the reporting currency with
dated rates, flags returns, and hands the rows to `cockpit.mart.load_frame`.
A row with any problem goes to quarantine with one quarantine row per
problem (file, line, column, value, reason), and its load_log row keeps
rows read = rows loaded + rows quarantined.

Problems that concern a whole file (unreadable file, missing columns, a
date column whose day/month order is ambiguous) are gathered over every
input of the spec and raised together as one IngestError before anything
is written.

Loads are idempotent. A file whose checksum matches the current load of
the same source, file and table is skipped, and a skipped load is logged
with zero rows. A changed file replaces the rows its previous version
loaded, found by the `source` and `source_file` columns. When the path is a
folder, each file that matches the input's pattern is one load, so running
the same folder again loads only new and changed files.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from cockpit.errors import IngestError
from cockpit.ingest.parsers import (
    INVALID_NUMBER,
    DateOrderError,
    parse_dates,
    parse_numbers,
)
from cockpit.ingest.readers import (
    RawTable,
    missing_columns,
    missing_columns_message,
    read_csv_table,
    read_excel_table,
    read_parquet_table,
    read_sql_table,
)
from cockpit.ingest.spec import (
    AMOUNT_COLUMNS,
    Expression,
    InputSpec,
    LoadSpec,
    LookupSpec,
    SourceSpec,
    stage_key,
)
from cockpit.mart import LoadReport, file_checksum, get_meta, load_frame, set_meta
from cockpit.mart.schema import TABLES, Table

logger = logging.getLogger(__name__)

#: Prefix of the mart_meta keys that list the names a grouped load did not keep.
ALTERNATE_NAMES_KEY = "alternate_names:"

#: Column that keeps the source-currency amount, per converted amount column.
SOURCE_AMOUNT_COLUMNS = {"net_revenue": "net_revenue_source", "amount": "amount_source"}

_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}

MISSING_VALUE = "missing required value"

#: Columns computed from another one; a problem with the source column is
#: not reported a second time as a missing derived value.
DERIVED_COLUMNS = {"status": "stage"}


@dataclass(frozen=True)
class SkippedLoad(LoadReport):
    """A load that wrote nothing because the same content is already loaded."""

    reason: str = ""

    def __str__(self) -> str:
        return f"{self.table} from {self.source_file}: skipped, {self.reason}"


class _FileProblem(Exception):
    """A problem that stops the whole load; gathered and raised as one IngestError."""


@dataclass
class _Column:
    """Typed values of one target column, with each bad cell's reason and raw text."""

    values: pd.Series
    reasons: pd.Series
    raw_text: pd.Series


@dataclass
class _Prepared:
    """Rows of one load, parsed and checked, ready to be written."""

    load: LoadSpec
    raw: RawTable
    frame: pd.DataFrame
    lines: pd.Series
    problems: pd.DataFrame
    display: pd.DataFrame
    alternates: dict[str, list[str]] = field(default_factory=dict)


# --- entry point ---------------------------------------------------------------


def ingest_spec(
    spec: SourceSpec, path: str | Path | None, con: duckdb.DuckDBPyConnection
) -> list[LoadReport]:
    """Load the export at `path` into the open mart `con` as `spec` describes.

    `path` is a file, or a folder whose matching files are each loaded in
    turn. It may be None when every input is an SQL query. Sets the mart's
    reporting currency, and also its company and as-of date when the spec
    names them.

    Raises IngestError when the path does not fit the spec, or when any
    file has problems that stop the load (every problem is listed). Nothing
    of a batch is written when it fails.
    """
    upgrade_schema(con)
    reports: list[LoadReport] = []
    for batch in _plan_batches(spec, path):
        reports.extend(_ingest_batch(spec, batch, con))
    return reports


def _plan_batches(
    spec: SourceSpec, path: str | Path | None
) -> list[dict[str, Path | None]]:
    """Decide which file each input reads, as one dict per batch loaded together.

    A file path feeds every file input. A folder gives one batch per
    matching file when all inputs share one pattern, else one batch in
    which each input's pattern must match exactly one file.
    """
    file_inputs = [item for item in spec.inputs.values() if item.format != "sql"]
    sql_only = {
        name: None for name, item in spec.inputs.items() if item.format == "sql"
    }
    if not file_inputs:
        return [sql_only]

    if path is None:
        raise IngestError(
            f"source {spec.name} reads files; pass the export file or folder"
        )
    path = Path(path)
    if not path.exists():
        raise IngestError(
            f"export {path} not found; check the path (quote names with spaces)"
        )

    patterns = sorted({item.pattern for item in file_inputs if item.pattern})
    if path.is_file():
        if len(patterns) > 1:
            raise IngestError(
                f"{path} is not a folder; pass the folder that contains "
                f"{', '.join(patterns)}"
            )
        return [{**sql_only, **{item.name: path for item in file_inputs}}]

    if len(patterns) == 1:
        matches = sorted(p for p in path.glob(patterns[0]) if p.is_file())
        if not matches:
            raise IngestError(
                f"{path}: no file matches {patterns[0]}; check the folder or the "
                f"file pattern in {spec.path}"
            )
        return [
            {**sql_only, **{item.name: match for item in file_inputs}}
            for match in matches
        ]
    return [{**sql_only, **_one_file_each(path, file_inputs)}]


def _one_file_each(folder: Path, file_inputs: list[InputSpec]) -> dict[str, Path]:
    """Find the one file of `folder` that each input's pattern names."""
    batch: dict[str, Path] = {}
    missing: list[str] = []
    several: list[str] = []
    for item in file_inputs:
        matches = sorted(p for p in folder.glob(item.pattern or "") if p.is_file())
        if not matches:
            missing.append(item.pattern or "")
        elif len(matches) > 1:
            names = ", ".join(m.name for m in matches)
            several.append(f"{item.pattern} matches {names}")
        else:
            batch[item.name] = matches[0]
    if not (missing or several):
        return batch

    present = sorted(p.name for p in folder.iterdir())
    parts = []
    if missing:
        parts.append(f"missing file(s) {', '.join(missing)}")
    if several:
        parts.append(", ".join(several) + " (expected one file each)")
    raise IngestError(
        f"{folder}: {'. '.join(parts)}. The folder has "
        f"{', '.join(present) or 'no files'}"
    )


def _ingest_batch(
    spec: SourceSpec, batch: dict[str, Path | None], con: duckdb.DuckDBPyConnection
) -> list[LoadReport]:
    if all(file is not None for file in batch.values()):
        checksums = {name: file_checksum(file) for name, file in batch.items()}
        files = {
            name: _source_file_name(spec.inputs[name], file)
            for name, file in batch.items()
        }
        skipped = _skip_if_loaded(spec, files, checksums, con)
        if skipped is not None:
            return skipped

    tables, problems = _read_inputs(spec, batch)
    if not problems and any(file is None for file in batch.values()):
        files = {name: raw.source_file for name, raw in tables.items()}
        checksums = {name: raw.checksum for name, raw in tables.items()}
        skipped = _skip_if_loaded(spec, files, checksums, con)
        if skipped is not None:
            return skipped
    # Loads whose inputs are sound are still prepared when another input
    # failed, so that one error lists the problems of every file.
    context = _Context(spec, tables, con)
    prepared: list[_Prepared] = []
    for load in spec.loads:
        if not _inputs_of(spec, load) <= set(tables):
            continue
        try:
            prepared.append(_prepare_load(load, context))
        except _FileProblem as exc:
            problems.extend(exc.args)
    if problems:
        listed = "\n  ".join(problems)
        raise IngestError(
            f"source {spec.name} ({spec.path.name}): {len(problems)} problem(s), nothing "
            f"loaded:\n  {listed}"
        )
    return _write_batch(spec, prepared, con)


def _source_file_name(spec_input: InputSpec, file: Path) -> str:
    return f"{file}#{spec_input.sheet}" if spec_input.format == "excel" else str(file)


# --- idempotence ---------------------------------------------------------------


def _latest_checksum(
    con: duckdb.DuckDBPyConnection, source: str, source_file: str, table: str
) -> str | None:
    row = con.execute(
        """
        SELECT checksum FROM load_log
        WHERE source = ? AND source_file = ? AND table_name = ?
        ORDER BY loaded_at DESC, rowid DESC LIMIT 1
        """,
        [source, source_file, table],
    ).fetchone()
    return None if row is None else row[0]


def _current_copy(
    con: duckdb.DuckDBPyConnection,
    source: str,
    table: str,
    checksum: str,
    source_file: str,
) -> str | None:
    """Another file of the source whose current load of `table` has this checksum."""
    row = con.execute(
        """
        SELECT source_file FROM (
            SELECT source_file, checksum,
                   row_number() OVER (
                       PARTITION BY source_file ORDER BY loaded_at DESC, rowid DESC
                   ) AS n
            FROM load_log WHERE source = ? AND table_name = ?
        ) WHERE n = 1 AND checksum = ? AND source_file <> ?
        ORDER BY source_file LIMIT 1
        """,
        [source, table, checksum, source_file],
    ).fetchone()
    return None if row is None else row[0]


def _skip_if_loaded(
    spec: SourceSpec,
    files: dict[str, str],
    checksums: dict[str, str],
    con: duckdb.DuckDBPyConnection,
) -> list[LoadReport] | None:
    """Log and return skipped loads when every load's input is already loaded as is."""
    reasons: list[str] = []
    for load in spec.loads:
        source_file, checksum = files[load.source], checksums[load.source]
        if _latest_checksum(con, spec.name, source_file, load.table) == checksum:
            reasons.append("unchanged since its last load")
            continue
        copy = _current_copy(con, spec.name, load.table, checksum, source_file)
        if copy is None:
            return None
        reasons.append(f"same content as {copy}, already loaded")
    reports: list[LoadReport] = []
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    for load, reason in zip(spec.loads, reasons, strict=True):
        load_id = uuid.uuid4().hex[:12]
        source_file = files[load.source]
        con.execute(
            "INSERT INTO load_log (load_id, source, source_file, checksum, table_name, "
            "loaded_at, rows_read, rows_loaded, rows_quarantined) "
            "VALUES (?, ?, ?, ?, ?, ?, 0, 0, 0)",
            [load_id, spec.name, source_file, checksums[load.source], load.table, now],
        )
        report = SkippedLoad(load_id, load.table, source_file, 0, 0, 0, reason=reason)
        logger.info("%s", report)
        reports.append(report)
    return reports


def load_history(
    con: duckdb.DuckDBPyConnection, source: str | None = None
) -> pd.DataFrame:
    """Return the load log with each load's status, oldest first.

    status is `skipped` for a load that read nothing because its checksum
    was already loaded, `replaced` for a load whose rows a later load of a
    changed version of the same file replaced, and `current` otherwise.
    """
    clause = "WHERE source = ?" if source is not None else ""
    frame = con.execute(
        f"""
        WITH log AS (
            SELECT *, rowid AS _order FROM load_log {clause}
        ), marked AS (
            SELECT *,
                   rows_read = 0 AND EXISTS (
                       SELECT 1 FROM log e
                       WHERE e.source = log.source AND e.table_name = log.table_name
                         AND e.checksum = log.checksum
                         AND (e.loaded_at < log.loaded_at
                              OR (e.loaded_at = log.loaded_at AND e._order < log._order))
                   ) AS skipped
            FROM log
        )
        SELECT load_id, source, source_file, checksum, table_name, loaded_at,
               rows_read, rows_loaded, rows_quarantined,
               CASE
                   WHEN skipped THEN 'skipped'
                   WHEN EXISTS (
                       SELECT 1 FROM marked later
                       WHERE later.source = marked.source
                         AND later.source_file = marked.source_file
                         AND later.table_name = marked.table_name
                         AND NOT later.skipped
                         AND later.checksum IS DISTINCT FROM marked.checksum
                         AND (later.loaded_at > marked.loaded_at
                              OR (later.loaded_at = marked.loaded_at
                                  AND later._order > marked._order))
                   ) THEN 'replaced'
                   ELSE 'current'
               END AS status
        FROM marked ORDER BY loaded_at, _order
        """,
        [source] if source is not None else [],
    ).df()
    return frame


def upgrade_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Add columns that the schema gained since the mart file was created."""
    present: dict[str, set[str]] = {}
    for table_name, column_name in con.execute(
        "SELECT table_name, column_name FROM duckdb_columns()"
    ).fetchall():
        present.setdefault(table_name, set()).add(column_name)
    for table in TABLES.values():
        if table.name not in present:
            continue
        for column in table.columns:
            if column.name not in present[table.name]:
                con.execute(
                    f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.dtype}"
                )
                logger.info("mart: added column %s.%s", table.name, column.name)


# --- reading -------------------------------------------------------------------


def _read_inputs(
    spec: SourceSpec, batch: dict[str, Path | None]
) -> tuple[dict[str, RawTable], list[str]]:
    """Read every input of a batch; return the sound tables and every file problem."""
    tables: dict[str, RawTable] = {}
    problems: list[str] = []
    for name, spec_input in spec.inputs.items():
        try:
            raw = _read_input(spec_input, batch.get(name))
        except IngestError as exc:
            problems.append(str(exc))
            continue
        missing = missing_columns(raw.header, spec.required_columns(name))
        if missing:
            problems.append(
                missing_columns_message(raw.source_file, raw.header, missing)
            )
        else:
            tables[name] = raw
    return tables, problems


def _inputs_of(spec: SourceSpec, load: LoadSpec) -> set[str]:
    """Inputs a load reads, its own and those of the lookups it uses."""
    names = {load.source}
    pending = [
        e.lookup
        for expression in load.columns.values()
        for e in (expression, expression.estimate)
        if e is not None and e.kind == "lookup"
    ]
    while pending:
        lookup = spec.lookups[pending.pop()]
        names.add(lookup.source)
        if lookup.value.kind == "lookup":
            pending.append(lookup.value.lookup)
    return names


def _read_input(spec_input: InputSpec, file: Path | None) -> RawTable:
    if spec_input.format == "sql":
        import os

        url = spec_input.url
        if spec_input.url_env:
            url = os.environ.get(spec_input.url_env) or url
        if not url:
            raise IngestError(
                f"input {spec_input.name}: environment variable {spec_input.url_env} "
                "is not set; set it to the database URL"
            )
        return read_sql_table(url, spec_input.query or "", name=spec_input.name)
    assert file is not None
    if spec_input.format == "csv":
        return read_csv_table(
            file,
            name=spec_input.name,
            encoding=spec_input.encoding,
            delimiter=spec_input.delimiter,
            quotechar=spec_input.quotechar,
        )
    if spec_input.format == "excel":
        return read_excel_table(
            file,
            spec_input.sheet or "",
            name=spec_input.name,
            header_row=spec_input.header_row,
        )
    return read_parquet_table(file, name=spec_input.name)


# --- cell conversion -----------------------------------------------------------


def cell_text(cells: pd.Series) -> pd.Series:
    """Return cells as stripped text, missing where blank; numbers lose a trailing .0."""
    if pd.api.types.is_string_dtype(cells.dtype) and cells.dtype != object:
        stripped = cells.str.strip()
        return stripped.where(stripped != "")
    if pd.api.types.is_datetime64_any_dtype(
        cells.dtype
    ) or pd.api.types.is_integer_dtype(cells.dtype):
        return cells.astype("str").where(cells.notna())

    def one(cell: object) -> object:
        if cell is None or cell is pd.NaT:
            return None
        if isinstance(cell, str):
            return cell.strip() or None
        if isinstance(cell, float):
            if np.isnan(cell):
                return None
            return str(int(cell)) if cell.is_integer() else repr(cell)
        if isinstance(cell, (pd.Timestamp, datetime)):
            stamp = pd.Timestamp(cell)
            return (
                stamp.date().isoformat()
                if stamp == stamp.normalize()
                else stamp.isoformat()
            )
        if not isinstance(cell, (list, dict)) and pd.isna(cell):
            return None
        return str(cell)

    return pd.Series(
        [one(cell) for cell in cells.tolist()], index=cells.index, dtype="str"
    )


def _no_reasons(index: pd.Index) -> pd.Series:
    return pd.Series(None, index=index, dtype="object")


def _typed(
    cells: pd.Series,
    dtype: str,
    spec_input: InputSpec,
    expression: Expression | None = None,
) -> _Column:
    """Parse raw cells to the target column type; bad cells get a reason."""
    text = cell_text(cells)
    if dtype == "VARCHAR":
        return _Column(text, _no_reasons(cells.index), text)
    if dtype in ("DOUBLE", "BIGINT"):
        parsed = parse_numbers(cells, spec_input.decimal, spec_input.thousands)
        values = parsed.values
        if expression is not None and expression.scale is not None:
            values = values * expression.scale
        reasons = parsed.reasons.copy()
        if dtype == "BIGINT":
            # Same words as load_frame uses for a BIGINT cell it cannot read.
            failed = reasons.notna()
            reasons[failed] = [
                reason.replace(INVALID_NUMBER, "invalid bigint value", 1)
                for reason in reasons[failed]
            ]
            fractional = values.notna() & (values != np.floor(values))
            reasons[fractional & reasons.isna()] = "invalid bigint value"
            values = values.mask(fractional)
        return _Column(values, reasons, text)
    if dtype in ("DATE", "TIMESTAMP"):
        formats = spec_input.date_format
        day_first = spec_input.day_first
        if expression is not None:
            formats = expression.formats or formats
            day_first = (
                expression.day_first if expression.day_first is not None else day_first
            )
        parsed = parse_dates(
            cells,
            formats,
            day_first=day_first,
            timezone=spec_input.timezone,
            excel_serial=spec_input.excel_serial,
            excel_epoch=spec_input.excel_epoch,
        )
        values = parsed.values.dt.normalize() if dtype == "DATE" else parsed.values
        return _Column(values, parsed.reasons, text)
    lowered = text.str.lower()
    values = pd.Series(pd.NA, index=cells.index, dtype="boolean")
    values[lowered.isin(_TRUE).fillna(False).astype(bool)] = True
    values[lowered.isin(_FALSE).fillna(False).astype(bool)] = False
    reasons = _no_reasons(cells.index)
    reasons[(values.isna() & text.notna()).to_numpy()] = "invalid boolean value"
    return _Column(values, reasons, text)


# --- context: inputs and lookups of one batch ---------------------------------------


class _Context:
    """Inputs of one batch with the lookups built from them, built once each."""

    def __init__(
        self,
        spec: SourceSpec,
        tables: dict[str, RawTable],
        con: duckdb.DuckDBPyConnection,
    ) -> None:
        self.spec = spec
        self.tables = tables
        self.con = con
        self._lookups: dict[str, dict[str, str]] = {}

    def lookup_map(self, name: str) -> dict[str, str]:
        """Map of normalised key to text value for the lookup called `name`."""
        if name not in self._lookups:
            self._lookups[name] = self._build_lookup(self.spec.lookups[name])
        return self._lookups[name]

    def _build_lookup(self, lookup: LookupSpec) -> dict[str, str]:
        raw = self.tables[lookup.source]
        keys = match_key(cell_text(raw.frame[lookup.key]), lookup.match)
        if lookup.value.kind == "lookup":
            values = self.apply_lookup(raw, lookup.value)
        else:
            values = cell_text(raw.frame[lookup.value.column])
        pairs = pd.DataFrame({"key": keys, "value": values}).dropna(subset=["key"])
        if lookup.pick == "first":
            first = pairs.drop_duplicates("key")
            return {
                k: v
                for k, v in zip(first["key"], first["value"], strict=True)
                if pd.notna(v)
            }
        counted = pairs.dropna().value_counts(["key", "value"]).reset_index(name="n")
        counted = counted.sort_values(
            ["key", "n", "value"], ascending=[True, False, True]
        )
        best = counted.drop_duplicates("key")
        return dict(zip(best["key"], best["value"], strict=True))

    def apply_lookup(self, raw: RawTable, expression: Expression) -> pd.Series:
        """Text value of a lookup for each row of `raw`, missing where the key is unknown."""
        lookup = self.spec.lookups[expression.lookup or ""]
        keys = match_key(cell_text(raw.frame[expression.key]), lookup.match)
        return keys.map(self.lookup_map(lookup.name)).astype("str")


def match_key(keys: pd.Series, match: str) -> pd.Series:
    """Keys in the form lookups compare them: as is, or lower case without punctuation."""
    if match == "exact":
        return keys
    normal = keys.str.lower().str.replace(r"[\W_]+", "", regex=True)
    return normal.where(normal != "")


# --- preparing one load ----------------------------------------------------------


def _prepare_load(load: LoadSpec, context: _Context) -> _Prepared:
    """Parse and check the rows of one load; raise _FileProblem for whole-file faults."""
    raw = context.tables[load.source]
    spec_input = context.spec.inputs[load.source]
    table = TABLES[load.table]
    if load.group_by is not None:
        rows, group_keys = _group_rows(raw, load.group_by)
        subset = raw.frame.iloc[rows].reset_index(drop=True)
    else:
        # Every row is loaded: use the frame as it is rather than a copy.
        rows = np.arange(len(raw.frame))
        group_keys = None
        subset = raw.frame.reset_index(drop=True)
    columns: dict[str, _Column] = {}
    file_problems: list[str] = []
    directly_mapped = {
        expression.column
        for expression in load.columns.values()
        if expression.kind == "column"
    }
    for target, expression in load.columns.items():
        dtype = table.column(target).dtype
        try:
            columns[target] = _evaluate(
                expression,
                dtype,
                raw,
                subset,
                rows,
                group_keys,
                spec_input,
                context,
                directly_mapped,
            )
        except DateOrderError as exc:
            file_problems.append(
                _date_order_message(raw, expression, target, exc, context.spec)
            )
        except _FileProblem as exc:
            file_problems.extend(exc.args)
    if file_problems:
        raise _FileProblem(*file_problems)

    frame = pd.DataFrame({name: column.values for name, column in columns.items()})
    problems: list[pd.DataFrame] = [
        _problems(column.reasons, name, column.raw_text)
        for name, column in columns.items()
    ]
    if load.stages is not None:
        problems.append(_map_stages(frame, columns, load, context.spec))
    for target, expression in load.columns.items():
        if expression.estimate is not None:
            _apply_estimate(
                frame, target, expression, raw, subset, rows, spec_input, context, table
            )
    if load.table == "transactions":
        _mark_returns(frame, load, subset)
    if load.table in AMOUNT_COLUMNS:
        problems.append(_convert_currency(frame, load, subset, context, columns))
    frame["source"] = context.spec.name
    frame["source_file"] = raw.source_file
    problems.append(_check_required(frame, table, problems))

    lines = raw.lines.reset_index(drop=True)
    if group_keys is not None:
        lines = raw.lines.iloc[rows].reset_index(drop=True)
    problem_frame = pd.concat(problems, ignore_index=True)
    if load.keep == "last":
        problem_frame = pd.concat(
            [problem_frame, _earlier_duplicates(frame, table, problem_frame, lines)],
            ignore_index=True,
        )
    display = pd.DataFrame(
        {
            name: column.raw_text.where(column.raw_text.notna(), None)
            for name, column in columns.items()
        }
    )
    prepared = _Prepared(load, raw, frame, lines, problem_frame, display)
    if load.alternates is not None and group_keys is not None:
        prepared.alternates = _alternates(raw, load, group_keys)
    if group_keys is not None:
        prepared = _drop_existing_keys(prepared, table, context)
    return prepared


def _group_rows(raw: RawTable, column: str) -> tuple[np.ndarray, pd.Series]:
    """First row of each non-blank key, in order of appearance, and every row's key."""
    keys = cell_text(raw.frame[column])
    present = keys.notna().to_numpy()
    first = ~keys.duplicated(keep="first").to_numpy() & present
    return np.flatnonzero(first), keys


def _evaluate(
    expression: Expression,
    dtype: str,
    raw: RawTable,
    subset: pd.DataFrame,
    rows: np.ndarray,
    group_keys: pd.Series | None,
    spec_input: InputSpec,
    context: _Context,
    directly_mapped: set[str | None],
) -> _Column:
    """Compute one target column for the rows of the load."""
    index = subset.index
    if expression.kind == "column":
        return _typed(subset[expression.column], dtype, spec_input, expression)
    if expression.kind == "value":
        constant = pd.Series([expression.value] * len(index), index=index, dtype=object)
        if isinstance(expression.value, str):
            constant = constant.astype("str")
        return _typed(constant, dtype, spec_input)
    if expression.kind == "subtract":
        return _subtract(expression, subset, spec_input, directly_mapped)
    if expression.kind == "lookup":
        values = context.apply_lookup(raw, expression).iloc[rows].reset_index(drop=True)
        return _typed(
            values,
            dtype,
            context.spec.inputs[context.spec.lookups[expression.lookup or ""].source],
        )
    if expression.kind == "most":
        assert group_keys is not None
        best = _most(raw, group_keys, expression, spec_input)
        values = group_keys.iloc[rows].reset_index(drop=True).map(best).astype("str")
        return _typed(values, dtype, spec_input)
    return _latest(expression, dtype, raw, index, spec_input, context.spec)


def _subtract(
    expression: Expression,
    subset: pd.DataFrame,
    spec_input: InputSpec,
    directly_mapped: set[str | None],
) -> _Column:
    """First column minus second; a bad operand is reported here unless mapped elsewhere."""
    first_name, second_name = expression.columns
    first = _typed(subset[first_name], "DOUBLE", spec_input)
    second = _typed(subset[second_name], "DOUBLE", spec_input)
    values = first.values - second.values
    reasons = _no_reasons(subset.index)
    raw_text = pd.Series(None, index=subset.index, dtype="object")
    for operand, name in ((second, second_name), (first, first_name)):
        if name in directly_mapped:
            continue
        bad = operand.reasons.notna()
        reasons[bad] = operand.reasons[bad]
        raw_text[bad] = operand.raw_text[bad]
    return _Column(values, reasons, raw_text)


def _most(
    raw: RawTable, keys: pd.Series, expression: Expression, spec_input: InputSpec
) -> dict[str, str]:
    """Per key, the value with the largest total weight (or most rows); ties by name."""
    values = cell_text(raw.frame[expression.column])
    if expression.weight:
        weight = parse_numbers(
            raw.frame[expression.weight], spec_input.decimal, spec_input.thousands
        )
        weights = weight.values.fillna(0.0)
    else:
        weights = pd.Series(1.0, index=raw.frame.index)
    frame = pd.DataFrame({"key": keys, "value": values, "weight": weights}).dropna(
        subset=["key", "value"]
    )
    totals = frame.groupby(["key", "value"], as_index=False)["weight"].sum()
    totals = totals.sort_values(
        ["key", "weight", "value"], ascending=[True, False, True]
    )
    best = totals.drop_duplicates("key")
    split = totals["key"].value_counts()
    if (split > 1).any():
        logger.info(
            "%s: %d key(s) have several %s values; kept the one with the largest %s",
            raw.source_file,
            int((split > 1).sum()),
            expression.column,
            f"total {expression.weight}" if expression.weight else "row count",
        )
    return dict(zip(best["key"], best["value"], strict=True))


def _latest(
    expression: Expression,
    dtype: str,
    raw: RawTable,
    index: pd.Index,
    spec_input: InputSpec,
    spec: SourceSpec,
) -> _Column:
    """The latest date in any of the expression's columns, repeated for every row."""
    latest = pd.NaT
    for name in expression.columns:
        column = _typed(raw.frame[name], "DATE", spec_input, expression)
        if column.values.notna().any():
            candidate = column.values.max()
            latest = candidate if pd.isna(latest) else max(latest, candidate)
    if pd.isna(latest):
        raise _FileProblem(
            f"{raw.source_file}: no value of {', '.join(expression.columns)} parses as a "
            f"date, so the date cannot be set. Check date_format in {spec.path}"
        )
    values = pd.Series(latest, index=index, dtype="datetime64[us]")
    if dtype == "DATE":
        values = values.dt.normalize()
    return _Column(
        values, _no_reasons(index), values.dt.strftime("%Y-%m-%d").astype("str")
    )


def _date_order_message(
    raw: RawTable,
    expression: Expression,
    target: str,
    exc: DateOrderError,
    spec: SourceSpec,
) -> str:
    name = expression.column or ", ".join(expression.columns)
    examples = ", ".join(
        f"{text!r} at line {int(raw.lines.iloc[position])}"
        for position, text in exc.examples[:3]
    )
    if exc.kind == "ambiguous":
        what = f"every date, e.g. {examples}, reads as day/month and as month/day"
    else:
        what = f"the dates mix day-first and month-first order ({examples})"
    return (
        f"{raw.source_file}: column {name!r} ({target}): {what}. Set date_format, "
        f"e.g. '%d/%m/%Y' or '%m/%d/%Y', or day_first for this input in {spec.path}"
    )


def _problems(reasons: pd.Series, column: str, raw_text: pd.Series) -> pd.DataFrame:
    bad = reasons.notna().to_numpy()
    positions = np.flatnonzero(bad)
    return pd.DataFrame(
        {
            "row": positions,
            "column_name": column,
            "value": [
                None if pd.isna(v) else str(v)
                for v in raw_text.iloc[positions].tolist()
            ],
            "reason": reasons.iloc[positions].tolist(),
        }
    )


def _empty_problems() -> pd.DataFrame:
    return pd.DataFrame(columns=["row", "column_name", "value", "reason"])


def _map_stages(
    frame: pd.DataFrame, columns: dict[str, _Column], load: LoadSpec, spec: SourceSpec
) -> pd.DataFrame:
    """Rename stages through the spec's table and derive status; flag unknown labels."""
    assert load.stages is not None
    labels = frame["stage"]
    keys = labels.map(
        lambda label: stage_key(label) if isinstance(label, str) else None
    )
    found = keys.map(lambda key: load.stages.get(key) if key is not None else None)
    known = found.notna()
    frame["stage"] = found.map(lambda s: s.stage if s is not None else None).astype(
        "str"
    )
    frame["status"] = found.map(lambda s: s.status if s is not None else None).astype(
        "str"
    )
    unknown = labels.notna() & ~known
    if not unknown.any():
        return _empty_problems()
    frame.loc[unknown, "stage"] = labels[unknown]
    reasons = pd.Series(None, index=frame.index, dtype="object")
    reasons[unknown] = (
        f"unknown stage; add it under stages in {spec.path.name} with its status "
        f"({', '.join(sorted({s.status for s in load.stages.values()}))})"
    )
    for label in sorted(set(labels[unknown].tolist()))[:10]:
        logger.warning("%s: unknown stage %r", spec.path.name, label)
    return _problems(reasons, "stage", columns["stage"].raw_text)


def _apply_estimate(
    frame: pd.DataFrame,
    target: str,
    expression: Expression,
    raw: RawTable,
    subset: pd.DataFrame,
    rows: np.ndarray,
    spec_input: InputSpec,
    context: _Context,
    table: Table,
) -> None:
    """Fill blank cells from the estimate, and mark them in `<target>_is_estimate`."""
    assert expression.estimate is not None
    dtype = table.column(target).dtype
    estimate = _evaluate(
        expression.estimate, dtype, raw, subset, rows, None, spec_input, context, set()
    )
    blank = cell_text(subset[expression.column]).isna()
    usable = blank & estimate.values.notna() & estimate.reasons.isna()
    if expression.estimate_when and "status" in frame:
        usable &= (
            frame["status"].isin(expression.estimate_when).fillna(False).astype(bool)
        )
    frame.loc[usable, target] = estimate.values[usable]
    flag = f"{target}_is_estimate"
    if flag in table.column_names:
        frame[flag] = usable.astype(bool)


def _mark_returns(frame: pd.DataFrame, load: LoadSpec, subset: pd.DataFrame) -> None:
    """Set is_return for negative lines and lines the returns marker names."""
    marked = pd.Series(False, index=frame.index)
    if load.returns_column is not None:
        wanted = {value.casefold() for value in load.returns_values}
        text = cell_text(subset[load.returns_column])
        marked = text.str.casefold().isin(wanted).fillna(False).astype(bool)
        if load.returns_negate:
            for name in ("net_revenue", "cost", "quantity"):
                if name in frame:
                    frame.loc[marked, name] = -frame.loc[marked, name].abs()
    negative = pd.Series(False, index=frame.index)
    for name in ("net_revenue", "quantity"):
        if name in frame:
            negative |= (frame[name] < 0).fillna(False).astype(bool)
    frame["is_return"] = marked | negative


def _convert_currency(
    frame: pd.DataFrame,
    load: LoadSpec,
    subset: pd.DataFrame,
    context: _Context,
    columns: dict[str, _Column],
) -> pd.DataFrame:
    """Convert amounts into the reporting currency with the rate in force on the row's date.

    The rate is the latest fx_rates row for the currency on or before the
    date. A row whose currency has no such rate is quarantined; amounts are
    never added up in their source currency.
    """
    reporting = context.spec.reporting_currency
    index = frame.index
    if load.currency_column is not None:
        text = cell_text(subset[load.currency_column])
        codes = text.str.upper()
        raw_text = text
    elif load.currency is not None:
        codes = pd.Series(load.currency, index=index, dtype="str")
        raw_text = codes
    else:
        codes = frame["currency"].str.upper()
        raw_text = columns["currency"].raw_text
    valid = codes.str.fullmatch(r"[A-Z]{3}").fillna(False).astype(bool)
    reasons = pd.Series(None, index=index, dtype="object")
    reasons[(codes.notna() & ~valid).to_numpy()] = (
        "invalid currency code; expected three letters such as EUR"
    )
    frame["currency"] = codes.where(valid)

    amounts = [name for name in AMOUNT_COLUMNS[load.table] if name in frame]
    for name in amounts:
        if name in SOURCE_AMOUNT_COLUMNS:
            frame[SOURCE_AMOUNT_COLUMNS[name]] = frame[name]
    foreign = valid & (codes != reporting).fillna(False).astype(bool)
    if foreign.any() and load.fx_date in frame:
        dates = pd.to_datetime(frame[load.fx_date])
        need = foreign & dates.notna()
        rates = _rates(context.con, sorted(set(codes[need].tolist())))
        left = pd.DataFrame(
            {
                "row": np.flatnonzero(need.to_numpy()),
                "currency": codes[need].to_numpy(),
                "date": dates[need].to_numpy(),
            }
        )
        left["date"] = left["date"].astype("datetime64[us]")
        left["currency"] = left["currency"].astype("str")
        left = left.sort_values("date")
        merged = pd.merge_asof(
            left, rates, on="date", by="currency", direction="backward"
        )
        merged = merged.set_index("row").sort_index()
        rate = pd.Series(np.nan, index=index)
        rate.iloc[merged.index.to_numpy()] = merged["rate"].to_numpy()
        missing_rate = need & rate.isna()
        for position in np.flatnonzero(missing_rate.to_numpy()):
            day = pd.Timestamp(dates.iloc[position]).strftime("%Y-%m-%d")
            reasons.iloc[position] = (
                f"no fx rate from {codes.iloc[position]} to {reporting} on or before "
                f"{day}; load fx_rates for {codes.iloc[position]} first"
            )
        # Rows without a rate keep their amount; the currency problem rejects them.
        have = need & rate.notna()
        for name in amounts:
            frame.loc[have, name] = frame.loc[have, name] * rate[have]
    return _problems(reasons, "currency", raw_text)


def _rates(con: duckdb.DuckDBPyConnection, currencies: list[str]) -> pd.DataFrame:
    if not currencies:
        return pd.DataFrame(
            {
                "date": pd.Series([], dtype="datetime64[us]"),
                "currency": pd.Series([], dtype="str"),
                "rate": pd.Series([], dtype="float64"),
            }
        )
    rates = con.execute(
        """
        SELECT CAST(date AS TIMESTAMP) AS date, currency, rate_to_reporting AS rate
        FROM fx_rates WHERE currency IN (SELECT unnest(?)) AND rate_to_reporting > 0
        ORDER BY date
        """,
        [currencies],
    ).df()
    rates["date"] = rates["date"].astype("datetime64[us]")
    rates["currency"] = rates["currency"].astype("str")
    return rates


def _check_required(
    frame: pd.DataFrame, table: Table, problems: list[pd.DataFrame]
) -> pd.DataFrame:
    """Flag blank required cells and values outside allowed sets, as load_frame would."""
    reported = pd.concat(problems, ignore_index=True) if problems else _empty_problems()
    flagged = set(zip(reported["row"], reported["column_name"], strict=True))
    found: list[pd.DataFrame] = []
    for column in table.columns:
        if column.name not in frame:
            continue
        values = frame[column.name]
        derived_from = DERIVED_COLUMNS.get(column.name)
        if column.required:
            blank = values.isna().to_numpy()
            rows = [
                r
                for r in np.flatnonzero(blank)
                if (r, column.name) not in flagged and (r, derived_from) not in flagged
            ]
            flagged.update((r, column.name) for r in rows)
            if rows:
                found.append(
                    pd.DataFrame(
                        {
                            "row": rows,
                            "column_name": column.name,
                            "value": None,
                            "reason": MISSING_VALUE,
                        }
                    )
                )
        if column.allowed is not None:
            outside = (values.notna() & ~values.isin(column.allowed)).to_numpy()
            rows = [
                r for r in np.flatnonzero(outside) if (r, column.name) not in flagged
            ]
            if rows:
                found.append(
                    pd.DataFrame(
                        {
                            "row": rows,
                            "column_name": column.name,
                            "value": [str(values.iloc[r]) for r in rows],
                            "reason": f"value not in allowed set {list(column.allowed)}",
                        }
                    )
                )
    return pd.concat(found, ignore_index=True) if found else _empty_problems()


def _earlier_duplicates(
    frame: pd.DataFrame, table: Table, problems: pd.DataFrame, lines: pd.Series
) -> pd.DataFrame:
    """For `keep: last`, flag every earlier row whose key a later valid row repeats."""
    good = ~frame.index.isin(problems["row"].unique())
    key = list(table.key)
    key_text = (
        frame.loc[good, key].astype("string").fillna("<missing>").agg("|".join, axis=1)
    )
    earlier = key_text.duplicated(keep="last")
    if not earlier.any():
        return _empty_problems()
    last_row = {k: row for row, k in key_text.items()}
    rows = key_text.index[earlier]
    return pd.DataFrame(
        {
            "row": rows,
            "column_name": ",".join(key),
            "value": key_text[earlier].to_numpy(),
            "reason": [
                f"duplicate key; replaced by line {int(lines.iloc[last_row[key_text[r]]])}"
                for r in rows
            ],
        }
    )


def _alternates(raw: RawTable, load: LoadSpec, keys: pd.Series) -> dict[str, list[str]]:
    """Other values of the `alternates` column per key, after the first one."""
    column = load.columns[load.alternates or ""].column
    names = cell_text(raw.frame[column])
    pairs = (
        pd.DataFrame({"key": keys, "name": names})
        .dropna(subset=["key"])
        .drop_duplicates()
    )
    first = pairs.drop_duplicates("key").set_index("key")["name"]
    others: dict[str, list[str]] = {}
    for key, name in pairs.itertuples(index=False):
        if name != first[key]:
            others.setdefault(key, []).append(name)
    return others


def _drop_existing_keys(
    prepared: _Prepared, table: Table, context: _Context
) -> _Prepared:
    """Leave out grouped rows whose key this source already loaded from another file.

    NOTE: when that other file is later replaced by a version without the
    key, the row goes with it even though this file still names the key.
    """
    key = list(table.key)
    existing = context.con.execute(
        f"SELECT DISTINCT {', '.join(key)} FROM {table.name} WHERE source = ? AND source_file <> ?",
        [context.spec.name, prepared.raw.source_file],
    ).df()
    if existing.empty:
        return prepared
    key_text = (
        prepared.frame[key].astype("string").fillna("<missing>").agg("|".join, axis=1)
    )
    known = set(existing.astype("string").fillna("<missing>").agg("|".join, axis=1))
    keep = ~key_text.isin(known).to_numpy()
    logger.info(
        "%s: %d %s row(s) already loaded from other files of %s; left out",
        prepared.raw.source_file,
        int((~keep).sum()),
        table.name,
        context.spec.name,
    )
    kept = np.flatnonzero(keep)
    renumber = {old: new for new, old in enumerate(kept)}
    problems = prepared.problems[prepared.problems["row"].isin(renumber)].copy()
    problems["row"] = problems["row"].map(renumber)
    prepared.frame = prepared.frame.iloc[kept].reset_index(drop=True)
    prepared.lines = prepared.lines.iloc[kept].reset_index(drop=True)
    prepared.display = prepared.display.iloc[kept].reset_index(drop=True)
    prepared.problems = problems
    return prepared


# --- writing -------------------------------------------------------------------


def _write_batch(
    spec: SourceSpec, prepared: list[_Prepared], con: duckdb.DuckDBPyConnection
) -> list[LoadReport]:
    """Replace earlier versions of the batch's files and load every prepared load."""
    con.execute("BEGIN TRANSACTION")
    try:
        _remove_previous_versions(spec, prepared, con)
        reports = [_write_load(spec, item, con) for item in prepared]
        _update_meta(spec, prepared, con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return reports


def _remove_previous_versions(
    spec: SourceSpec, prepared: list[_Prepared], con: duckdb.DuckDBPyConnection
) -> None:
    targets = dict.fromkeys(
        (item.load.table, item.raw.source_file) for item in prepared
    )
    for table, source_file in targets:
        removed = con.execute(
            f"DELETE FROM {table} WHERE source = ? AND source_file = ?",
            [spec.name, source_file],
        ).fetchone()[0]
        if removed:
            logger.info(
                "%s: replaced %d %s row(s) of the previous version",
                source_file,
                removed,
                table,
            )


def _write_load(
    spec: SourceSpec, item: _Prepared, con: duckdb.DuckDBPyConnection
) -> LoadReport:
    """Load the valid rows with load_frame, then quarantine the rows rejected here."""
    bad_rows = pd.Index(item.problems["row"].unique())
    good, good_lines = item.frame, item.lines
    if len(bad_rows):
        good, good_lines = good.drop(index=bad_rows), good_lines.drop(index=bad_rows)
    report = load_frame(
        con,
        item.load.table,
        good,
        source=spec.name,
        source_file=item.raw.source_file,
        lines=good_lines,
        checksum=item.raw.checksum,
    )
    if len(bad_rows) == 0:
        return report
    problems = item.problems.sort_values(["row"], kind="stable")
    raw_rows = {
        row: json.dumps(
            {
                k: (None if v is None or pd.isna(v) else str(v))
                for k, v in item.display.loc[row].items()
            }
        )
        for row in bad_rows
    }
    quarantine = pd.DataFrame(
        {
            "load_id": report.load_id,
            "table_name": item.load.table,
            "source_file": item.raw.source_file,
            "line": item.lines.iloc[problems["row"].to_numpy()].to_numpy(),
            "column_name": problems["column_name"].to_numpy(),
            "value": problems["value"].to_numpy(),
            "reason": problems["reason"].to_numpy(),
            "raw_row": [raw_rows[row] for row in problems["row"]],
        }
    )
    con.register("_rejected", quarantine)
    con.execute(
        "INSERT INTO quarantine (load_id, table_name, source_file, line, column_name, "
        "value, reason, raw_row) SELECT load_id, table_name, source_file, line, "
        "column_name, value, reason, raw_row FROM _rejected"
    )
    con.unregister("_rejected")
    rejected = len(bad_rows)
    con.execute(
        """
        UPDATE load_log SET rows_read = rows_read + ?, rows_quarantined = rows_quarantined + ?
        WHERE load_id = ?
        """,
        [rejected, rejected, report.load_id],
    )
    logger.warning(
        "%d row(s) of %s rejected for %s",
        rejected,
        item.raw.source_file,
        item.load.table,
    )
    return LoadReport(
        load_id=report.load_id,
        table=report.table,
        source_file=report.source_file,
        rows_read=report.rows_read + rejected,
        rows_loaded=report.rows_loaded,
        rows_quarantined=report.rows_quarantined + rejected,
    )


def _update_meta(
    spec: SourceSpec, prepared: list[_Prepared], con: duckdb.DuckDBPyConnection
) -> None:
    as_of = None
    if spec.as_of is not None:
        table, column = spec.as_of
        value = con.execute(
            f"SELECT max({column}) FROM {table} WHERE source = ?", [spec.name]
        ).fetchone()[0]
        as_of = value.date() if isinstance(value, datetime) else value
    extra: dict[str, object] = {}
    for item in prepared:
        if item.load.alternates is None:
            continue
        key = f"{ALTERNATE_NAMES_KEY}{item.load.table}"
        stored = get_meta(con).get(key)
        merged = json.loads(stored) if stored else {}
        merged.update(item.alternates)
        extra[key] = json.dumps(merged)
        if item.alternates:
            logger.warning(
                "%s: %d key(s) carry more than one %s; the first is kept",
                item.raw.source_file,
                len(item.alternates),
                item.load.alternates,
            )
    update_source_meta(
        con,
        company=spec.company,
        currency=spec.reporting_currency,
        as_of=as_of,
        extra=extra,
    )


def update_source_meta(
    con: duckdb.DuckDBPyConnection,
    *,
    company: str | None,
    currency: str,
    as_of: date | None,
    extra: dict[str, object] | None = None,
) -> None:
    """Store company, reporting currency and as-of date of a loaded export.

    The as-of date only moves forward: loading an older export into a mart
    keeps the later date already stored. A different company name or
    currency replaces the stored one with a warning. A company of None
    leaves the stored one alone.
    """
    meta = get_meta(con)
    values: dict[str, object] = {"currency": currency}
    if company is not None:
        values["company"] = company
    for key, value in values.items():
        if meta.get(key) not in (None, value):
            logger.warning("mart %s changes from %r to %r", key, meta[key], value)
    if as_of is not None:
        stored = meta.get("as_of")
        if stored is None or date.fromisoformat(stored) < as_of:
            values["as_of"] = as_of.isoformat()
    values.update(extra or {})
    set_meta(con, values)
