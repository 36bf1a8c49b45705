"""Constants and helpers that every family of audit checks shares."""

from __future__ import annotations

import logging
import re
from dataclasses import fields
from datetime import date

import duckdb
import pandas as pd

from cockpit.mart import get_meta
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

OK, WARN, FAIL = "ok", "warn", "fail"

#: Scope fields each table can be filtered by.
SCOPE_FIELDS: dict[str, tuple[str, ...]] = {
    "transactions": tuple(f.name for f in fields(Scope)),
    "opportunities": tuple(f.name for f in fields(Scope)),
    "activities": ("region", "team", "rep_id", "account_id"),
    "accounts": ("region", "account_id"),
    "products": ("business_unit", "product_line"),
    "reps": ("region", "team", "rep_id"),
    "targets": ("region", "business_unit"),
}

#: Tables whose rows carry a region and business unit; readiness is scored on them.
FACT_TABLES = ("transactions", "opportunities")

#: Columns whose completeness the summary reports, per table.
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "transactions": (
        "account_id",
        "product_id",
        "rep_id",
        "region",
        "business_unit",
        "quantity",
        "cost",
    ),
    "opportunities": (
        "account_id",
        "rep_id",
        "product_id",
        "region",
        "business_unit",
        "amount",
        "created_date",
    ),
    # Internal meetings have no account, so activities.account_id is checked
    # among customer activities only, as a missing link.
    "activities": ("region", "duration_minutes"),
    "accounts": ("region",),
    "reps": ("region",),
}

#: Share of non-empty values at or above which a column is ok, and below
#: which it fails; in between it warns.
COMPLETE_OK, COMPLETE_FAIL = 0.98, 0.8

#: Foreign keys: (table, column, dimension table, dimension key).
LINKS = (
    ("transactions", "account_id", "accounts", "account_id"),
    ("transactions", "product_id", "products", "product_id"),
    ("transactions", "rep_id", "reps", "rep_id"),
    ("opportunities", "account_id", "accounts", "account_id"),
    ("opportunities", "product_id", "products", "product_id"),
    ("opportunities", "rep_id", "reps", "rep_id"),
    ("activities", "account_id", "accounts", "account_id"),
    ("activities", "rep_id", "reps", "rep_id"),
    ("accounts", "parent_account_id", "accounts", "account_id"),
    ("accounts", "owner_rep_id", "reps", "rep_id"),
    ("reps", "manager_id", "reps", "rep_id"),
)

#: Amount column summed for the value of a fact table's rows.
AMOUNT_COLUMN = {"transactions": "net_revenue", "opportunities": "amount"}

#: Orphan keys above this share of a table's rows fail; any orphan warns.
ORPHAN_FAIL = 0.05

#: Date column of each table for freshness and history.
DATE_COLUMN = {
    "transactions": "date",
    "opportunities": "snapshot_date",
    "activities": "date",
    "fx_rates": "date",
}

#: Days a fact table may lag the as-of date and still be ok, and beyond which it fails.
FRESH_OK_DAYS, FRESH_FAIL_DAYS = 31, 92

#: Days an external indicator may end before the as-of date and still be ok.
#: Quarterly series are published about a quarter late.
EXTERNAL_OK_DAYS = 92

#: Category columns scanned for spelling variants, per table.
CATEGORY_COLUMNS: dict[str, tuple[str, ...]] = {
    "accounts": ("industry", "segment", "size_band", "country", "region"),
    "products": ("product_line", "business_unit"),
    "reps": ("team", "region", "role_type"),
    "transactions": ("region", "business_unit", "currency"),
    "opportunities": ("region", "business_unit", "stage", "currency"),
    "activities": ("type",),
}

#: Common industry names; an industry value close to one of them but not
#: equal is reported as its misspelling.
INDUSTRY_TERMS = (
    "advertising",
    "aerospace",
    "agriculture",
    "automotive",
    "banking",
    "chemicals",
    "construction",
    "consulting",
    "defense",
    "education",
    "employment",
    "energy",
    "engineering",
    "entertainment",
    "finance",
    "government",
    "healthcare",
    "hospitality",
    "insurance",
    "logistics",
    "manufacturing",
    "marketing",
    "media",
    "medical",
    "mining",
    "pharmaceuticals",
    "real estate",
    "retail",
    "services",
    "software",
    "technology",
    "telecommunications",
    "transportation",
    "utilities",
    "wholesale",
)

#: Similarity (difflib ratio, 0-1) from which two category values count as
#: spelling variants of each other.
SIMILARITY = 0.85

#: A column with more distinct values than this is compared only after
#: normalising, because pairwise fuzzy matching grows with the square.
MAX_FUZZY_VALUES = 300

#: Weights of the readiness parts; they add up to 1.
READINESS_WEIGHTS = {
    "completeness": 0.25,
    "validity": 0.20,
    "linkage": 0.20,
    "freshness": 0.15,
    "history": 0.20,
}

#: Months of history that give full marks: two years let a forecast see
#: yearly seasonality twice.
HISTORY_MONTHS = 24

#: Readiness score at or above which a slice is ok, and below which it fails.
READY_OK, READY_FAIL = 80.0, 60.0

#: Check name of the per-snapshot breakdown of duplicate opportunity keys.
SNAPSHOT_DUPLICATES = "duplicate opportunity in snapshot"

SUMMARY_COLUMNS = [
    "table",
    "check",
    "region",
    "business_unit",
    "value",
    "threshold",
    "status",
    "detail",
]


# --- shared helpers ---------------------------------------------------------


def mart_as_of(con: duckdb.DuckDBPyConnection) -> date | None:
    """Return the mart's as-of date, else the latest fact date, else None."""
    stored = get_meta(con).get("as_of")
    if stored:
        return date.fromisoformat(stored[:10])
    latest = [
        _scalar(con, f"SELECT max({column}) FROM {table}")
        for table, column in DATE_COLUMN.items()
        if table != "fx_rates" and _has_table(con, table)
    ]
    latest = [value for value in latest if value is not None]
    if not latest:
        return None
    logger.warning("mart_meta has no as_of; using the latest fact date %s", max(latest))
    return max(latest)


def table_filter(table: str, scope: Scope, alias: str = "") -> tuple[str, list[str]]:
    """Return the SQL predicate and parameters that restrict `table` to `scope`.

    Only the scope fields listed for the table in SCOPE_FIELDS filter it;
    the others are ignored for that table.
    """
    allowed = SCOPE_FIELDS.get(table, ())
    narrowed = Scope(**{name: getattr(scope, name) for name in allowed})
    return narrowed.where(alias)


def normalise(value: object) -> str:
    """Return `value` in lower case without spaces or punctuation."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return re.sub(r"[\W_]+", "", str(value).lower())


def _has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [table]
    ).fetchone()
    views = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [table]
    ).fetchone()
    return bool(found[0] or views[0])


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    return con.execute(sql, params or []).fetchone()[0]


def _count(con: duckdb.DuckDBPyConnection, table: str, scope: Scope) -> int:
    if not _has_table(con, table):
        return 0
    where, params = table_filter(table, scope)
    return int(_scalar(con, f"SELECT count(*) FROM {table} WHERE {where}", params))


def _non_empty(column: str) -> str:
    """Return an SQL condition, true where `column` is neither NULL nor blank text."""
    return f"({column} IS NOT NULL AND trim(CAST({column} AS VARCHAR)) <> '')"


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)
