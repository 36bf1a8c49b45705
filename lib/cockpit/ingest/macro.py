"""Loader for monthly and quarterly economic indicators (external regressors).

Every CSV file of the folder is read. Files listed in KNOWN_FILES (FRED
series, US CPI, bond yields, Brent oil, US GDP, exchange rates) get readable
indicator names. Any other CSV with a `date` column is loaded too: each of
its other columns becomes one monthly indicator named after the file and
the column. Values land in `external` with region 'ALL' and their date moved
to the first day of the month or quarter they cover.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd

from cockpit.errors import IngestError
from cockpit.ingest.generic import SkippedLoad
from cockpit.ingest.superstore import CsvExport, read_export, require_columns
from cockpit.mart import LoadReport, file_checksum, load_frame

logger = logging.getLogger(__name__)

SOURCE = "macro"
REGION = "ALL"
DATE_FORMAT = "%Y-%m-%d"
FREQUENCIES = {"month": "M", "quarter": "Q"}


@dataclass(frozen=True)
class Series:
    """Mapping of one file's columns onto indicators.

    A wide file has a date column and one column per indicator, and `values`
    maps each column to its indicator name. A long file has a date column, a
    `key_column` naming the series and one value column. Its indicator is
    `prefix` followed by the key in snake_case.
    """

    date_column: str
    frequency: str
    values: dict[str, str] = field(default_factory=dict)
    key_column: str | None = None
    prefix: str = ""

    @property
    def columns(self) -> list[str]:
        """Columns the file must have."""
        key = [self.key_column] if self.key_column else []
        return [self.date_column, *key, *self.values]


#: Files the loader recognises by name, with their indicator names.
KNOWN_FILES: dict[str, Series] = {
    "INDPRO.csv": Series("DATE", "month", {"INDPRO": "indpro"}),
    "UNRATE.csv": Series("DATE", "month", {"UNRATE": "unrate"}),
    "CPILFESL.csv": Series("DATE", "month", {"CPILFESL": "core_cpi_index"}),
    "PPIACO.csv": Series("DATE", "month", {"PPIACO": "ppi_index"}),
    "BUSLOANS.csv": Series("DATE", "month", {"BUSLOANS": "business_loans"}),
    "cpi-us_cpiai.csv": Series(
        "Date", "month", {"Index": "cpi_index", "Inflation": "cpi_inflation"}
    ),
    "bond-yields-us-10y_monthly.csv": Series("Date", "month", {"Rate": "us_10y_yield"}),
    "oil-prices_brent-monthly.csv": Series("Date", "month", {"Price": "brent_price"}),
    "gdp-us_quarter.csv": Series(
        "date",
        "quarter",
        {
            "level-current": "gdp_current",
            "level-chained": "gdp_chained",
            "change-current": "gdp_growth_current",
            "change-chained": "gdp_growth_chained",
        },
    ),
    "exchange-rates_monthly.csv": Series(
        "Date",
        "month",
        {"Exchange rate": ""},
        key_column="Country",
        prefix="fx_",
    ),
}


def snake_case(text: str) -> str:
    """Return `text` in lower snake_case, e.g. 'New Zealand' -> 'new_zealand'."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text.strip())
    return re.sub(r"[\W_]+", "_", spaced.lower()).strip("_")


def _already_loaded(con: duckdb.DuckDBPyConnection, path: Path, checksum: str) -> bool:
    """True when this file's exact content is already in the mart's load log."""
    rows = con.execute(
        """
        SELECT count(*) FROM load_log
        WHERE source = ? AND source_file = ? AND checksum = ? AND rows_loaded > 0
        """,
        [SOURCE, str(path), checksum],
    ).fetchall()
    return rows[0][0] > 0


def _skipped(con: duckdb.DuckDBPyConnection, path: Path, checksum: str) -> LoadReport:
    """Log a load that read nothing because the file is loaded unchanged."""
    load_id = uuid.uuid4().hex[:12]
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    con.execute(
        "INSERT INTO load_log (load_id, source, source_file, checksum, table_name, "
        "loaded_at, rows_read, rows_loaded, rows_quarantined) "
        "VALUES (?, ?, ?, ?, 'external', ?, 0, 0, 0)",
        [load_id, SOURCE, str(path), checksum, now],
    )
    report = SkippedLoad(
        load_id, "external", str(path), 0, 0, 0, reason="unchanged since its last load"
    )
    logger.info("%s", report)
    return report


def ingest_macro(directory: Path, con: duckdb.DuckDBPyConnection) -> list[LoadReport]:
    """Load every CSV in `directory` into the `external` table of `con`.

    A wide file is loaded once per value column, and a long file once, so
    each load_log row covers every line of its file. Logs each indicator's
    first and last date and its value count. Does not change the mart's
    as-of date, because indicators run on past the company's own data.

    Raises IngestError when `directory` is not a folder or contains no CSV,
    when a known file lacks a column, or when an unknown file has no
    `date` column. Every file is checked before anything is loaded.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise IngestError(
            f"{directory} is not a folder; pass the folder of indicator CSV files"
        )
    paths = sorted(directory.glob("*.csv"))
    if not paths:
        raise IngestError(f"{directory}: no .csv files found")
    planned = [_plan(path) for path in paths]

    reports: list[LoadReport] = []
    for export, series in planned:
        checksum = file_checksum(export.path)
        if _already_loaded(con, export.path, checksum):
            reports.append(_skipped(con, export.path, checksum))
            continue
        for frame in _frames(export, series):
            reports.append(
                load_frame(
                    con,
                    "external",
                    frame,
                    source=SOURCE,
                    source_file=export.path,
                    lines=export.lines,
                    date_formats={"date": DATE_FORMAT},
                    checksum=checksum,
                )
            )
        _log_spans(con, export.path.name)
    return reports


def _plan(path: Path) -> tuple[CsvExport, Series]:
    """Read `path` and decide how its columns map onto indicators."""
    known = KNOWN_FILES.get(path.name)
    if known is not None:
        return read_export(path, known.columns), known
    export = read_export(path, [])
    date_columns = [name for name in export.header if name.lower() == "date"]
    if not date_columns:
        require_columns(path, export.header, ["date"])
    value_columns = [name for name in export.header if name != date_columns[0]]
    if len(value_columns) == 1:
        names = {value_columns[0]: snake_case(path.stem)}
    else:
        names = {c: snake_case(f"{path.stem}_{c}") for c in value_columns}
    logger.info(
        "%s is not a known indicator file; loading %s as monthly values",
        path.name,
        ", ".join(names.values()),
    )
    return export, Series(date_columns[0], "month", names)


def _period_start(raw: pd.Series, frequency: str) -> pd.Series:
    """First day of the month or quarter of each date, as YYYY-MM-DD text.

    Text that does not parse is returned unchanged, so `load_frame`
    quarantines the row with the bad value.
    """
    parsed = pd.to_datetime(raw.str.strip(), format=DATE_FORMAT, errors="coerce")
    start = parsed.dt.to_period(FREQUENCIES[frequency]).dt.start_time
    out = raw.astype("object").copy()
    known = start.notna()
    out[known] = start[known].dt.strftime(DATE_FORMAT)
    return out


def _frames(export: CsvExport, series: Series) -> list[pd.DataFrame]:
    raw = export.frame
    dates = _period_start(raw[series.date_column], series.frequency)
    source = export.path.name
    if series.key_column is not None:
        value_column = next(iter(series.values))
        keys = raw[series.key_column].map(snake_case)
        indicator = (series.prefix + keys).where(keys != "")
        frame = pd.DataFrame(
            {
                "date": dates,
                "region": REGION,
                "indicator": indicator,
                "value": raw[value_column],
                "source": source,
            }
        )
        return [frame]
    return [
        pd.DataFrame(
            {
                "date": dates,
                "region": REGION,
                "indicator": name,
                "value": raw[column],
                "source": source,
            }
        )
        for column, name in series.values.items()
    ]


def _log_spans(con: duckdb.DuckDBPyConnection, source: str) -> None:
    spans = con.execute(
        """
        SELECT indicator, min(date), max(date), count(*)
        FROM external WHERE source = ?
        GROUP BY indicator ORDER BY indicator
        """,
        [source],
    ).fetchall()
    for indicator, first, last, count in spans:
        logger.info(
            "indicator %s from %s: %d values, %s to %s",
            indicator,
            source,
            count,
            first,
            last,
        )
