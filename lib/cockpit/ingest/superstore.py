"""Loader for the Tableau "Sample - Superstore" order-line export.

One CSV row is one order line. It becomes one `transactions` row, and the
customer and product columns feed the `accounts` and `products` tables.
Profit is stored as cost (Sales - Profit), so revenue - cost gives the
file's Profit back.

The module also contains the CSV reading and mart-meta helpers that the
other loaders of this package share.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from cockpit.errors import IngestError
from cockpit.mart import LoadReport, file_checksum, get_meta, load_frame, set_meta

logger = logging.getLogger(__name__)

SOURCE = "superstore"
COMPANY = "Superstore"
CURRENCY = "USD"
DATE_FORMAT = "%m/%d/%Y"

#: Export columns the loader reads; every one must be in the header.
REQUIRED_COLUMNS = (
    "Row ID",
    "Order ID",
    "Order Date",
    "Customer ID",
    "Customer Name",
    "Segment",
    "Country",
    "Region",
    "Product ID",
    "Category",
    "Sub-Category",
    "Product Name",
    "Sales",
    "Quantity",
    "Profit",
)

#: Prefix of the mart_meta keys that list the names a loader did not keep.
ALTERNATE_NAMES_KEY = "alternate_names:"


@dataclass(frozen=True)
class CsvExport:
    """The text of one CSV export: every cell a string, blanks as ''."""

    path: Path
    header: list[str]
    frame: pd.DataFrame
    lines: pd.Series
    """Line number in the file where each record starts (the header is line 1)."""


def read_export(
    path: Path, required: Sequence[str], encoding: str = "utf-8-sig"
) -> CsvExport:
    """Read a CSV export as text, keeping each record's real line number.

    Quoted fields may span several lines and lines may end in LF or CRLF.
    Empty lines are skipped. A record shorter than the header is padded with
    empty cells, which `load_frame` then treats as missing values.

    Raises IngestError when the file cannot be decoded with `encoding`, has
    no header, repeats a header name, lacks any of the `required` columns
    (all of them are named at once), or has a record with more cells than
    the header.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding=encoding) as handle:
            reader = csv.reader(handle)
            header = [name.strip() for name in next(reader, [])]
            records: list[list[str]] = []
            starts: list[int] = []
            start = reader.line_num + 1
            for record in reader:
                if record:
                    records.append(record)
                    starts.append(start)
                start = reader.line_num + 1
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{path}: not valid {encoding} text at byte {exc.start}; "
            f"save the export as UTF-8 and load it again"
        ) from exc
    except csv.Error as exc:
        raise IngestError(f"{path}: malformed CSV ({exc}); check its quoting") from exc

    if not header:
        raise IngestError(f"{path}: the file is empty; expected a header line")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise IngestError(
            f"{path}: header repeats column(s) {', '.join(repeated)}; "
            "rename them so that each column name is unique"
        )
    require_columns(path, header, required)

    width = len(header)
    too_long = [
        (line, len(record))
        for line, record in zip(starts, records, strict=True)
        if len(record) > width
    ]
    if too_long:
        examples = ", ".join(f"line {line} has {count}" for line, count in too_long[:5])
        raise IngestError(
            f"{path}: {len(too_long)} record(s) have more cells than the "
            f"{width} header columns ({examples}); quote values that contain commas"
        )
    padded = [record + [""] * (width - len(record)) for record in records]
    frame = pd.DataFrame(padded, columns=header, dtype="object")
    lines = pd.Series(starts, dtype="int64")
    logger.debug("read %d records from %s", len(frame), path)
    return CsvExport(path=path, header=header, frame=frame, lines=lines)


def require_columns(path: Path, header: Iterable[str], required: Iterable[str]) -> None:
    """Raise IngestError naming every column of `required` missing from `header`."""
    found = list(header)
    missing = [name for name in required if name not in found]
    if missing:
        raise IngestError(
            f"{path}: missing required column(s) {', '.join(missing)}; "
            f"the file has {', '.join(found) or 'no columns'}. "
            "Rename the columns in the export to the expected names"
        )


def parse_numbers(values: pd.Series) -> pd.Series:
    """Parse text to floats; blanks and text that is not a number give NaN."""
    return pd.to_numeric(values.str.strip(), errors="coerce").astype("float64")


def numbers_or_raw(numbers: pd.Series, raw: pd.Series) -> pd.Series:
    """Return `numbers` where they are known, else the raw text.

    A value derived from a bad cell keeps the bad text, so `load_frame`
    quarantines the row and shows that text instead of loading a silent gap.
    """
    out = raw.astype("object").copy()
    known = numbers.notna()
    out[known] = numbers[known]
    return out


def normalise_name(name: object) -> str:
    """Return `name` in lower case without spaces or punctuation, for matching."""
    if name is None or (isinstance(name, float) and pd.isna(name)):
        return ""
    return re.sub(r"[\W_]+", "", str(name).lower())


def update_source_meta(
    con: duckdb.DuckDBPyConnection,
    *,
    company: str,
    currency: str,
    as_of: date | None,
    extra: Mapping[str, object] | None = None,
) -> None:
    """Store company, reporting currency and as-of date of a loaded export.

    The as-of date only moves forward: loading an older export into a mart
    keeps the later date already stored. A different company name or
    currency replaces the stored one with a warning.
    """
    meta = get_meta(con)
    for key, value in (("company", company), ("currency", currency)):
        if meta.get(key) not in (None, value):
            logger.warning("mart %s changes from %r to %r", key, meta[key], value)
    values: dict[str, object] = {"company": company, "currency": currency}
    if as_of is not None:
        stored = meta.get("as_of")
        if stored is None or date.fromisoformat(stored) < as_of:
            values["as_of"] = as_of.isoformat()
    values.update(extra or {})
    set_meta(con, values)


def ingest_superstore(path: Path, con: duckdb.DuckDBPyConnection) -> list[LoadReport]:
    """Load the Superstore order-line CSV at `path` into the open mart `con`.

    Rows go to `accounts` (one per Customer ID), `products` (one per
    Product ID) and `transactions` (one per order line, keyed by Order ID
    and Row ID). Amounts are in USD and the file has no sellers, so rep_id
    stays empty. Sets the mart's company, currency and as-of date (the latest
    order date loaded).

    Raises IngestError when the file is not UTF-8 or lacks a required
    column. Bad rows are quarantined by `load_frame`.
    """
    path = Path(path)
    export = read_export(path, REQUIRED_COLUMNS)
    raw = export.frame
    checksum = file_checksum(path)
    common = {"source": SOURCE, "source_file": path, "checksum": checksum}

    accounts, account_lines = _accounts(raw, export.lines)
    products, product_lines, alternates = _products(raw, export.lines)
    reports = [
        load_frame(con, "accounts", accounts, lines=account_lines, **common),
        load_frame(con, "products", products, lines=product_lines, **common),
        load_frame(
            con,
            "transactions",
            _transactions(raw),
            lines=export.lines,
            date_formats={"date": DATE_FORMAT},
            **common,
        ),
    ]

    latest = con.execute(
        "SELECT max(date) FROM transactions WHERE source = ?", [SOURCE]
    ).fetchone()[0]
    update_source_meta(
        con,
        company=COMPANY,
        currency=CURRENCY,
        as_of=latest,
        extra={f"{ALTERNATE_NAMES_KEY}products": json.dumps(alternates)},
    )
    if alternates:
        logger.warning(
            "%s: %d product ID(s) carry more than one name; the first name is kept",
            path.name,
            len(alternates),
        )
    return reports


def _transactions(raw: pd.DataFrame) -> pd.DataFrame:
    sales = parse_numbers(raw["Sales"])
    profit = parse_numbers(raw["Profit"])
    cost = numbers_or_raw(sales - profit, raw["Profit"])
    # A bad Sales cell already quarantines the row through net_revenue.
    cost[sales.isna()] = None
    return pd.DataFrame(
        {
            "invoice_id": raw["Order ID"],
            "line": raw["Row ID"],
            "date": raw["Order Date"],
            "account_id": raw["Customer ID"],
            "product_id": raw["Product ID"],
            "region": raw["Region"],
            "business_unit": raw["Category"],
            "quantity": raw["Quantity"],
            "net_revenue": raw["Sales"],
            "cost": cost,
            "currency": CURRENCY,
            "source": SOURCE,
        }
    )


def _accounts(raw: pd.DataFrame, lines: pd.Series) -> tuple[pd.DataFrame, pd.Series]:
    """Build one account per Customer ID, in the region where it bought the most."""
    rows = raw.assign(
        _line=lines.values,
        _sales=parse_numbers(raw["Sales"]).fillna(0.0).values,
        _id=raw["Customer ID"].str.strip(),
    )
    rows = rows[rows["_id"] != ""]
    first = rows.drop_duplicates("_id", keep="first")
    by_region = rows.groupby(["_id", "Region"], as_index=False)["_sales"].sum()
    # Highest sales first; equal sales fall back to the region name.
    by_region = by_region.sort_values(
        ["_id", "_sales", "Region"], ascending=[True, False, True]
    )
    home = by_region.drop_duplicates("_id").set_index("_id")["Region"]
    accounts = pd.DataFrame(
        {
            "account_id": first["Customer ID"].values,
            "name": first["Customer Name"].values,
            "region": home.reindex(first["_id"]).values,
            "country": first["Country"].values,
            "segment": first["Segment"].values,
            "source": SOURCE,
        }
    )
    return accounts, first["_line"].reset_index(drop=True)


def _products(
    raw: pd.DataFrame, lines: pd.Series
) -> tuple[pd.DataFrame, pd.Series, dict[str, list[str]]]:
    """Build one product per Product ID with its first name, and list its other names."""
    rows = raw.assign(_line=lines.values, _id=raw["Product ID"].str.strip())
    rows = rows[rows["_id"] != ""]
    first = rows.drop_duplicates("_id", keep="first")
    first_names = dict(
        zip(first["_id"], first["Product Name"].str.strip(), strict=True)
    )
    alternates: dict[str, list[str]] = {}
    for product_id, name in (
        rows[["_id", "Product Name"]].drop_duplicates().itertuples(index=False)
    ):
        if name.strip() != first_names[product_id]:
            alternates.setdefault(product_id, []).append(name.strip())
    products = pd.DataFrame(
        {
            "product_id": first["Product ID"].values,
            "name": first["Product Name"].values,
            "product_line": first["Sub-Category"].values,
            "business_unit": first["Category"].values,
            "source": SOURCE,
        }
    )
    return products, first["_line"].reset_index(drop=True), alternates
