"""Data-quality audit of the mart, for the whole company or one slice.

`run_audit` opens a mart read-only and returns an `AuditResult`: one table
per family of checks plus a `summary` with one row per check and an
ok/warn/fail status. Each family is also a function of its own that takes an
open connection and a `Scope`, so a notebook for one region and business
unit can call only the checks it shows.

Scopes filter each table by the scope fields it carries: the fact tables by
all fields, accounts and reps by region, products by business unit, and
quarantined rows by the region and business unit written in their raw row.
External indicators and the load log are national or technical, so no scope
narrows them.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from cockpit.ingest.superstore import ALTERNATE_NAMES_KEY
from cockpit.mart import TABLES, connect, get_meta
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


@dataclass(frozen=True)
class AuditResult:
    """Findings of one audit; every field but `scope` and `as_of` is a DataFrame."""

    scope: Scope
    as_of: date | None
    summary: pd.DataFrame
    completeness: pd.DataFrame
    duplicates: pd.DataFrame
    orphans: pd.DataFrame
    freshness: pd.DataFrame
    missing_links: pd.DataFrame
    categories: pd.DataFrame
    quarantine: pd.DataFrame
    load_balance: pd.DataFrame
    readiness: pd.DataFrame

    @property
    def status(self) -> str:
        """Worst status in the summary: fail, warn or ok."""
        statuses = set(self.summary["status"])
        for level in (FAIL, WARN):
            if level in statuses:
                return level
        return OK

    def failures(self) -> pd.DataFrame:
        """Summary rows whose status is warn or fail, worst first."""
        bad = self.summary[self.summary["status"] != OK]
        order = bad["status"].map({FAIL: 0, WARN: 1})
        return bad.assign(_order=order).sort_values("_order").drop(columns="_order")


def run_audit(
    mart: str | Path, region: str | None = None, business_unit: str | None = None
) -> AuditResult:
    """Audit the mart file `mart`, for one region and business unit if given.

    Opens the mart read-only. Raises MartError when the file does not exist
    or another process holds its write lock.
    """
    scope = Scope(region=region, business_unit=business_unit)
    with connect(mart, read_only=True) as con:
        result = audit_connection(con, scope)
    logger.info(
        "audit of %s (%s): %d checks, status %s",
        mart,
        scope.label(),
        len(result.summary),
        result.status,
    )
    return result


def audit_connection(
    con: duckdb.DuckDBPyConnection, scope: Scope | None = None
) -> AuditResult:
    """Run every check on the open mart `con` within `scope` (default: company)."""
    scope = scope or Scope()
    as_of = mart_as_of(con)
    parts = {
        "completeness": check_completeness(con, scope),
        "duplicates": find_duplicates(con, scope),
        "orphans": find_orphans(con, scope),
        "freshness": check_freshness(con, scope, as_of),
        "missing_links": find_missing_links(con, scope),
        "categories": find_category_variants(con, scope),
        "quarantine": count_quarantine(con, scope),
        "load_balance": check_load_balance(con),
        "readiness": score_readiness(con, scope, as_of),
    }
    summary = summarise(con, scope, as_of, **parts)
    return AuditResult(scope=scope, as_of=as_of, summary=summary, **parts)


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


# --- completeness -------------------------------------------------------------


def check_completeness(
    con: duckdb.DuckDBPyConnection, scope: Scope | None = None
) -> pd.DataFrame:
    """Return the share of non-empty values per table and column.

    Tables without rows in scope are left out.

    Columns: table, column, required, rows, non_empty, share (0-1).
    """
    scope = scope or Scope()
    rows: list[dict] = []
    for name, table in TABLES.items():
        if name in ("quarantine", "load_log", "mart_meta") or not _has_table(con, name):
            continue
        where, params = table_filter(name, scope)
        counts = ", ".join(
            f"count(*) FILTER (WHERE {_non_empty(c.name)})" for c in table.columns
        )
        result = con.execute(
            f"SELECT count(*), {counts} FROM {name} WHERE {where}", params
        ).fetchone()
        total = int(result[0])
        if total == 0:
            continue
        for column, filled in zip(table.columns, result[1:], strict=True):
            rows.append(
                {
                    "table": name,
                    "column": column.name,
                    "required": column.required,
                    "rows": total,
                    "non_empty": int(filled),
                    "share": filled / total,
                }
            )
    return _frame(rows, ["table", "column", "required", "rows", "non_empty", "share"])


# --- duplicates ---------------------------------------------------------------


def find_duplicates(
    con: duckdb.DuckDBPyConnection, scope: Scope | None = None
) -> pd.DataFrame:
    """Find keys that occur more than once, and rows that look entered twice.

    Checks every keyed table's key, invoice lines identical in everything
    but their line number, and accounts whose names are equal once case,
    spaces and punctuation are ignored. Each opportunity snapshot that
    repeats an opportunity gets a row of its own. Columns: table, check,
    key, duplicate_keys, extra_rows, detail.
    """
    scope = scope or Scope()
    rows: list[dict] = []
    for name, table in TABLES.items():
        if not table.key or name == "mart_meta" or not _count(con, name, scope):
            continue
        key = ", ".join(table.key)
        where, params = table_filter(name, scope)
        keys, extra = con.execute(
            f"""
            SELECT count(*), coalesce(sum(n - 1), 0) FROM (
                SELECT count(*) AS n FROM {name} WHERE {where}
                GROUP BY {key} HAVING count(*) > 1
            )
            """,
            params,
        ).fetchone()
        rows.append(
            {
                "table": name,
                "check": "duplicate key",
                "key": key,
                "duplicate_keys": int(keys),
                "extra_rows": int(extra),
                "detail": "",
            }
        )
    rows.extend(_snapshot_duplicates(con, scope))
    rows.extend(_repeated_invoice_lines(con, scope))
    rows.extend(_same_name_accounts(con, scope))
    return _frame(
        rows, ["table", "check", "key", "duplicate_keys", "extra_rows", "detail"]
    )


def _snapshot_duplicates(con: duckdb.DuckDBPyConnection, scope: Scope) -> list[dict]:
    """One row per snapshot that lists an opportunity more than once."""
    if not _count(con, "opportunities", scope):
        return []
    where, params = table_filter("opportunities", scope)
    result = con.execute(
        f"""
        SELECT snapshot_date, count(*) AS keys, sum(n - 1) AS extra FROM (
            SELECT snapshot_date, count(*) AS n FROM opportunities WHERE {where}
            GROUP BY snapshot_date, opportunity_id HAVING count(*) > 1
        )
        GROUP BY snapshot_date ORDER BY snapshot_date
        """,
        params,
    ).fetchall()
    return [
        {
            "table": "opportunities",
            "check": SNAPSHOT_DUPLICATES,
            "key": "opportunity_id",
            "duplicate_keys": int(keys),
            "extra_rows": int(extra),
            "detail": f"snapshot {snapshot}",
        }
        for snapshot, keys, extra in result
    ]


def _repeated_invoice_lines(con: duckdb.DuckDBPyConnection, scope: Scope) -> list[dict]:
    if not _count(con, "transactions", scope):
        return []
    where, params = table_filter("transactions", scope)
    keys, extra = con.execute(
        f"""
        SELECT count(*), coalesce(sum(n - 1), 0) FROM (
            SELECT count(*) AS n FROM transactions WHERE {where}
            GROUP BY invoice_id, date, account_id, product_id, rep_id,
                     quantity, net_revenue, cost
            HAVING count(*) > 1
        )
        """,
        params,
    ).fetchone()
    return [
        {
            "table": "transactions",
            "check": "identical invoice lines",
            "key": "invoice_id, product_id, quantity, net_revenue, cost",
            "duplicate_keys": int(keys),
            "extra_rows": int(extra),
            "detail": "lines equal in all but their line number; check for double entry",
        }
    ]


def _same_name_accounts(con: duckdb.DuckDBPyConnection, scope: Scope) -> list[dict]:
    if not _count(con, "accounts", scope):
        return []
    where, params = table_filter("accounts", scope)
    accounts = con.execute(
        f"SELECT account_id, name FROM accounts WHERE {where}", params
    ).df()
    accounts["key"] = accounts["name"].map(normalise)
    accounts = accounts[accounts["key"] != ""]
    groups = accounts.groupby("key")["account_id"].agg(list)
    groups = groups[groups.map(len) > 1]
    examples = "; ".join(", ".join(ids) for ids in groups.head(5))
    return [
        {
            "table": "accounts",
            "check": "accounts with the same name",
            "key": "name (normalised)",
            "duplicate_keys": len(groups),
            "extra_rows": int(sum(len(ids) - 1 for ids in groups)),
            "detail": f"e.g. {examples}" if examples else "",
        }
    ]


# --- orphans ------------------------------------------------------------------


def find_orphans(
    con: duckdb.DuckDBPyConnection, scope: Scope | None = None
) -> pd.DataFrame:
    """Find keys that point to no row of their dimension table, with a likely match.

    Opportunities are read in their latest snapshot. The suggestion is the
    dimension key with the same normalised spelling (e.g. GTXPro for
    GTX Pro), else the closest spelling by difflib ratio of at least
    SIMILARITY. share is rows over the table's rows in scope. Columns:
    table, column, dimension, key, rows, share, amount, suggestion, match.
    """
    scope = scope or Scope()
    rows: list[dict] = []
    for table, column, dimension, dim_key in LINKS:
        if not _count(con, table, scope) or not _has_table(con, dimension):
            continue
        source = "opportunities_current" if table == "opportunities" else table
        where, params = table_filter(table, scope, "f.")
        amount = AMOUNT_COLUMN.get(table)
        amount_sql = f"sum(f.{amount})" if amount else "NULL"
        orphans = con.execute(
            f"""
            SELECT f.{column} AS key, count(*) AS rows, {amount_sql} AS amount
            FROM {source} f
            WHERE {where} AND {_non_empty("f." + column)}
              AND NOT EXISTS (SELECT 1 FROM {dimension} d WHERE d.{dim_key} = f.{column})
            GROUP BY f.{column} ORDER BY rows DESC, key
            """,
            params,
        ).fetchall()
        if not orphans:
            continue
        total = _scalar(con, f"SELECT count(*) FROM {source} f WHERE {where}", params)
        known = [
            row[0]
            for row in con.execute(
                f"SELECT DISTINCT {dim_key} FROM {dimension} WHERE {dim_key} IS NOT NULL"
            ).fetchall()
        ]
        fuzzy = len(orphans) * len(known) <= 200_000
        for key, count, value in orphans:
            suggestion, match = suggest_match(key, known, fuzzy=fuzzy)
            rows.append(
                {
                    "table": table,
                    "column": column,
                    "dimension": dimension,
                    "key": key,
                    "rows": int(count),
                    "share": count / total,
                    "amount": value,
                    "suggestion": suggestion,
                    "match": match,
                }
            )
    return _frame(
        rows,
        [
            "table",
            "column",
            "dimension",
            "key",
            "rows",
            "share",
            "amount",
            "suggestion",
            "match",
        ],
    )


def suggest_match(
    value: str, candidates: Iterable[str], fuzzy: bool = True
) -> tuple[str | None, str | None]:
    """Return the candidate `value` most likely means, and how it was found.

    The second item is 'same normalised name' when the two differ only in
    case, spaces or punctuation, 'similar spelling' for a difflib ratio of at
    least SIMILARITY on the normalised names, and None with no match.
    """
    candidates = list(candidates)
    key = normalise(value)
    by_key: dict[str, str] = {}
    for candidate in candidates:
        by_key.setdefault(normalise(candidate), candidate)
    if key and key in by_key and by_key[key] != value:
        return by_key[key], "same normalised name"
    if not fuzzy or not key:
        return None, None
    close = difflib.get_close_matches(key, list(by_key), n=1, cutoff=SIMILARITY)
    if close and by_key[close[0]] != value:
        return by_key[close[0]], "similar spelling"
    return None, None


# --- freshness ----------------------------------------------------------------


def check_freshness(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    as_of: date | None = None,
) -> pd.DataFrame:
    """Return the first and latest date per table and per external indicator.

    days_behind is as_of minus the latest date, in days; a negative value
    means data dated after the as-of date. Columns: table, series,
    date_column, first_date, last_date, as_of, days_behind.
    """
    scope = scope or Scope()
    rows: list[dict] = []
    for table, column in DATE_COLUMN.items():
        if not _count(con, table, scope):
            continue
        where, params = table_filter(table, scope)
        first, last = con.execute(
            f"SELECT min({column}), max({column}) FROM {table} WHERE {where}", params
        ).fetchone()
        rows.append(_freshness_row(table, "", column, first, last, as_of))
    if _count(con, "external", scope):
        series = con.execute(
            """
            SELECT indicator || ' (' || region || ')', min(date), max(date)
            FROM external GROUP BY indicator, region ORDER BY indicator, region
            """
        ).fetchall()
        for name, first, last in series:
            rows.append(_freshness_row("external", name, "date", first, last, as_of))
    return _frame(
        rows,
        [
            "table",
            "series",
            "date_column",
            "first_date",
            "last_date",
            "as_of",
            "days_behind",
        ],
    )


def _freshness_row(table, series, column, first, last, as_of) -> dict:
    behind = (as_of - last).days if as_of is not None and last is not None else None
    return {
        "table": table,
        "series": series,
        "date_column": column,
        "first_date": first,
        "last_date": last,
        "as_of": as_of,
        "days_behind": behind,
    }


# --- missing links ------------------------------------------------------------


def find_missing_links(
    con: duckdb.DuckDBPyConnection, scope: Scope | None = None
) -> pd.DataFrame:
    """Count rows whose link to an account, product, seller, region or unit is empty.

    Opportunities are read in their latest snapshot and split by status.
    Every check appears, with rows 0 when nothing is missing. Columns:
    table, link, status, rows, of_rows, share, amount.
    """
    scope = scope or Scope()
    rows: list[dict] = []
    if _count(con, "opportunities", scope):
        where, params = table_filter("opportunities", scope)
        for link in ("account_id", "rep_id", "product_id", "region", "business_unit"):
            result = con.execute(
                f"""
                SELECT status, count(*), count(*) FILTER (WHERE NOT {_non_empty(link)}),
                       sum(amount) FILTER (WHERE NOT {_non_empty(link)})
                FROM opportunities_current WHERE {where}
                GROUP BY status ORDER BY status
                """,
                params,
            ).fetchall()
            for status, total, missing, amount in result:
                rows.append(
                    _link_row("opportunities", link, status, missing, total, amount)
                )
        for status, column in (("won", "closed_date"), ("lost", "closed_date")):
            rows.append(_missing_where(con, scope, status, column))
        rows.append(_missing_where(con, scope, "won", "amount"))
    if _count(con, "transactions", scope):
        where, params = table_filter("transactions", scope)
        for link in ("account_id", "product_id", "rep_id", "region", "business_unit"):
            total, missing, amount = con.execute(
                f"""
                SELECT count(*), count(*) FILTER (WHERE NOT {_non_empty(link)}),
                       sum(net_revenue) FILTER (WHERE NOT {_non_empty(link)})
                FROM transactions WHERE {where}
                """,
                params,
            ).fetchone()
            rows.append(_link_row("transactions", link, "", missing, total, amount))
    for table, link, condition in (
        ("activities", "rep_id", "TRUE"),
        ("activities", "account_id", "type <> 'internal'"),
        ("activities", "region", "TRUE"),
        ("accounts", "region", "TRUE"),
        ("reps", "region", "TRUE"),
        ("reps", "manager_id", "role = 'seller'"),
    ):
        if not _count(con, table, scope):
            continue
        where, params = table_filter(table, scope)
        total, missing = con.execute(
            f"""
            SELECT count(*), count(*) FILTER (WHERE NOT {_non_empty(link)})
            FROM {table} WHERE {where} AND {condition}
            """,
            params,
        ).fetchone()
        status = {"reps": "seller", "activities": "customer"}.get(table, "")
        if condition == "TRUE":
            status = ""
        rows.append(_link_row(table, link, status, missing, total, None))
    return _frame(
        rows, ["table", "link", "status", "rows", "of_rows", "share", "amount"]
    )


def _missing_where(
    con: duckdb.DuckDBPyConnection, scope: Scope, status: str, column: str
) -> dict:
    where, params = table_filter("opportunities", scope)
    total, missing = con.execute(
        f"""
        SELECT count(*), count(*) FILTER (WHERE NOT {_non_empty(column)})
        FROM opportunities_current WHERE {where} AND status = ?
        """,
        [*params, status],
    ).fetchone()
    return _link_row("opportunities", column, status, missing, total, None)


def _link_row(table, link, status, missing, total, amount) -> dict:
    return {
        "table": table,
        "link": link,
        "status": status,
        "rows": int(missing),
        "of_rows": int(total),
        "share": missing / total if total else 0.0,
        "amount": amount,
    }


# --- category spelling variants -----------------------------------------------


def find_category_variants(
    con: duckdb.DuckDBPyConnection, scope: Scope | None = None
) -> pd.DataFrame:
    """Find category values that look like another spelling of one category.

    A value is reported when it equals another value of its column after
    normalising case, spaces and punctuation, or when their difflib ratio
    is at least SIMILARITY. The rarer value is reported against the more
    frequent one. Industry values are also checked against INDUSTRY_TERMS,
    so a misspelling is found even when the correct spelling never occurs.
    Columns: table, column, value, rows, likely, likely_rows, similarity,
    basis.
    """
    scope = scope or Scope()
    rows: list[dict] = []
    for table, columns in CATEGORY_COLUMNS.items():
        if not _count(con, table, scope):
            continue
        where, params = table_filter(table, scope)
        for column in columns:
            counts = dict(
                con.execute(
                    f"""
                    SELECT {column}, count(*) FROM {table}
                    WHERE {where} AND {_non_empty(column)} GROUP BY {column}
                    """,
                    params,
                ).fetchall()
            )
            terms = INDUSTRY_TERMS if column == "industry" else ()
            rows.extend(_variants(table, column, counts, terms))
    return _frame(
        rows,
        [
            "table",
            "column",
            "value",
            "rows",
            "likely",
            "likely_rows",
            "similarity",
            "basis",
        ],
    )


def _variants(
    table: str, column: str, counts: dict[str, int], terms: Iterable[str]
) -> list[dict]:
    found: list[dict] = []
    # Most frequent first, so each value is compared with the commoner ones.
    values = sorted(counts, key=lambda v: (-counts[v], str(v)))
    fuzzy = len(values) <= MAX_FUZZY_VALUES
    reported: set[str] = set()
    for i, value in enumerate(values):
        key = normalise(value)
        for other in values[:i]:
            other_key = normalise(other)
            ratio = difflib.SequenceMatcher(None, key, other_key).ratio()
            if key == other_key:
                basis = "same normalised spelling"
            elif fuzzy and ratio >= SIMILARITY:
                basis = "similar spelling"
            else:
                continue
            found.append(
                _variant_row(
                    table, column, value, counts, other, counts[other], ratio, basis
                )
            )
            reported.add(value)
            break
        if value in reported or not fuzzy:
            continue
        for term in terms:
            term_key = normalise(term)
            ratio = difflib.SequenceMatcher(None, key, term_key).ratio()
            if key != term_key and ratio >= SIMILARITY:
                likely_rows = sum(
                    n for v, n in counts.items() if normalise(v) == term_key
                )
                found.append(
                    _variant_row(
                        table,
                        column,
                        value,
                        counts,
                        term,
                        likely_rows,
                        ratio,
                        "close to a common industry name",
                    )
                )
                break
    return found


def _variant_row(table, column, value, counts, likely, likely_rows, ratio, basis):
    return {
        "table": table,
        "column": column,
        "value": value,
        "rows": int(counts[value]),
        "likely": likely,
        "likely_rows": int(likely_rows),
        "similarity": round(ratio, 3),
        "basis": basis,
    }


# --- quarantine and load balance ---------------------------------------------


def count_quarantine(
    con: duckdb.DuckDBPyConnection, scope: Scope | None = None
) -> pd.DataFrame:
    """Count quarantined source rows by table, file, column and reason.

    A scope keeps the rows whose raw row names the scope's region, business
    unit, seller or account. Rows whose raw row lacks that field are left
    out, so a scoped count can be lower than the company's. Columns: table,
    source_file, column, reason, rows (distinct source lines), problems.
    """
    scope = scope or Scope()
    clauses, params = _quarantine_filter(scope)
    frame = con.execute(
        f"""
        SELECT table_name AS "table", source_file, column_name AS "column",
               regexp_replace(reason, '; first seen at line [0-9]+', '') AS reason,
               count(DISTINCT load_id || ':' || line) AS rows, count(*) AS problems
        FROM quarantine WHERE {clauses}
        GROUP BY ALL ORDER BY "table", rows DESC, reason
        """,
        params,
    ).df()
    return frame


def _quarantine_filter(scope: Scope) -> tuple[str, list[str]]:
    clauses: list[str] = []
    params: list[str] = []
    for name in ("region", "business_unit", "rep_id", "account_id"):
        value = getattr(scope, name)
        if value is not None:
            clauses.append(f"json_extract_string(raw_row, '$.{name}') = ?")
            params.append(value)
    return (" AND ".join(clauses) or "TRUE"), params


def check_load_balance(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Check the row accounting of every load: read = loaded + quarantined.

    Also compares rows_quarantined with the distinct lines the quarantine
    table contains for the load. Columns: load_id, source, source_file, table,
    loaded_at, rows_read, rows_loaded, rows_quarantined, quarantine_lines,
    balanced, consistent.
    """
    return con.execute(
        """
        SELECT l.load_id, l.source, l.source_file, l.table_name AS "table",
               l.loaded_at, l.rows_read, l.rows_loaded, l.rows_quarantined,
               coalesce(q.lines, 0) AS quarantine_lines,
               l.rows_read = l.rows_loaded + l.rows_quarantined AS balanced,
               coalesce(q.lines, 0) = l.rows_quarantined AS consistent
        FROM load_log l
        LEFT JOIN (
            SELECT load_id, count(DISTINCT line) AS lines
            FROM quarantine GROUP BY load_id
        ) q USING (load_id)
        ORDER BY l.loaded_at, l.source_file, l.table_name
        """
    ).df()


# --- readiness ----------------------------------------------------------------


def score_readiness(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    as_of: date | None = None,
) -> pd.DataFrame:
    """Score each region x business unit from 0 to 100 on its fact rows.

    The score is the mean of five parts, each 0-100, weighted by
    READINESS_WEIGHTS:

    - completeness: mean share of non-empty values in the key columns that
      some loaded export provides. A column empty in the whole table is left
      out rather than scored as 0.
    - validity: share of the cell's rows that were loaded, not quarantined.
    - linkage: share of non-empty account, product and seller keys found in
      their dimension table.
    - freshness: 100 up to FRESH_OK_DAYS behind the as-of date, then falling
      linearly to 0 at 365 days.
    - history: months of dated history over HISTORY_MONTHS, capped at 100.

    Columns: region, business_unit, rows, the five parts, score, weakest.
    """
    scope = scope or Scope()
    columns = [
        "region",
        "business_unit",
        "rows",
        *READINESS_WEIGHTS,
        "score",
        "weakest",
    ]
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    for table in FACT_TABLES:
        if not _count(con, table, scope):
            continue
        for cell, measures in _cell_measures(con, table, scope, as_of).items():
            merged = cells.setdefault(cell, {})
            for name, pair in measures.items():
                totals = merged.setdefault(name, [0.0, 0.0])
                totals[0] += pair[0]
                totals[1] += pair[1]
    rows: list[dict] = []
    for (region, unit), measures in sorted(cells.items()):
        parts = {
            name: 100.0 * measures[name][0] / measures[name][1]
            if measures.get(name, [0, 0])[1]
            else 100.0
            for name in ("completeness", "validity", "linkage")
        }
        parts["freshness"] = _freshness_score(measures["days_behind"][0])
        parts["history"] = min(100.0, 100.0 * measures["months"][0] / HISTORY_MONTHS)
        score = sum(READINESS_WEIGHTS[name] * value for name, value in parts.items())
        rows.append(
            {
                "region": region,
                "business_unit": unit,
                "rows": int(measures["rows"][0]),
                **{name: round(value, 1) for name, value in parts.items()},
                "score": round(score, 1),
                "weakest": _weakest(parts),
            }
        )
    return _frame(rows, columns)


def _weakest(parts: dict[str, float]) -> str:
    """Return the name of the lowest part, or '' when every part scores full marks."""
    name = min(parts, key=parts.get)
    return name if parts[name] < 100.0 else ""


def _freshness_score(days: float | None) -> float:
    if days is None:
        return 0.0
    if days <= FRESH_OK_DAYS:
        return 100.0
    return max(0.0, 100.0 * (365 - days) / (365 - FRESH_OK_DAYS))


def _provided_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    """Return the key columns of `table` that are filled in at least one row."""
    provided = []
    for column in KEY_COLUMNS[table]:
        if _scalar(con, f"SELECT count(*) FROM {table} WHERE {_non_empty(column)}"):
            provided.append(column)
    return provided


def _cell_measures(
    con: duckdb.DuckDBPyConnection, table: str, scope: Scope, as_of: date | None
) -> dict[tuple[str, str], dict[str, list[float]]]:
    """Return numerators and denominators of each readiness part per cell of `table`."""
    where, params = table_filter(table, scope, "f.")
    source = "opportunities_current" if table == "opportunities" else table
    provided = [
        c for c in _provided_columns(con, table) if c not in ("region", "business_unit")
    ]
    links = [(c, d, k) for t, c, d, k in LINKS if t == table and _has_table(con, d)]

    filled = _sum_of_counts(_non_empty(f"f.{c}") for c in provided)
    link_known = _sum_of_counts(_non_empty(f"f.{c}") for c, _, _ in links)
    link_found = _sum_of_counts(
        f"{_non_empty(f'f.{c}')} AND EXISTS (SELECT 1 FROM {d} x WHERE x.{k} = f.{c})"
        for c, d, k in links
    )
    if table == "transactions":
        history = "min(f.date), max(f.date)"
        latest = "max(f.date)"
    else:
        history = (
            "least(min(f.created_date), min(f.closed_date)), "
            "greatest(max(f.created_date), max(f.closed_date))"
        )
        latest = "max(f.snapshot_date)"

    result = con.execute(
        f"""
        SELECT f.region, f.business_unit, count(*), {filled}, {link_known},
               {link_found}, {history}, {latest}
        FROM {source} f
        WHERE {where} AND f.region IS NOT NULL AND f.business_unit IS NOT NULL
        GROUP BY f.region, f.business_unit
        """,
        params,
    ).fetchall()

    quarantined = _quarantined_by_cell(con, table)
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    for region, unit, count, n_filled, n_known, n_found, first, last, newest in result:
        months = 0.0
        if first is not None and last is not None:
            months = (last - first).days / 30.4375
        behind = (as_of - newest).days if as_of and newest else None
        bad = quarantined.get((region, unit), 0)
        cells[(region, unit)] = {
            "rows": [count, 0],
            "completeness": [n_filled, count * len(provided)],
            "validity": [count, count + bad],
            "linkage": [n_found, n_known],
            "days_behind": [behind, 0],
            "months": [months, 0],
        }
    return cells


def _sum_of_counts(conditions: Iterable[str]) -> str:
    """Return SQL adding up the rows that meet each condition; '0' for none."""
    terms = [f"count(*) FILTER (WHERE {condition})" for condition in conditions]
    return " + ".join(terms) or "0"


def _quarantined_by_cell(
    con: duckdb.DuckDBPyConnection, table: str
) -> dict[tuple[str, str], int]:
    rows = con.execute(
        """
        SELECT json_extract_string(raw_row, '$.region'),
               json_extract_string(raw_row, '$.business_unit'),
               count(DISTINCT load_id || ':' || line)
        FROM quarantine WHERE table_name = ? GROUP BY ALL
        """,
        [table],
    ).fetchall()
    return {(region, unit): int(n) for region, unit, n in rows}


# --- summary ------------------------------------------------------------------


def summarise(
    con: duckdb.DuckDBPyConnection,
    scope: Scope,
    as_of: date | None,
    *,
    completeness: pd.DataFrame,
    duplicates: pd.DataFrame,
    orphans: pd.DataFrame,
    freshness: pd.DataFrame,
    missing_links: pd.DataFrame,
    categories: pd.DataFrame,
    quarantine: pd.DataFrame,
    load_balance: pd.DataFrame,
    readiness: pd.DataFrame,
) -> pd.DataFrame:
    """One row per check with value, threshold, status (ok, warn, fail) and detail."""
    add = _SummaryBuilder(scope)
    _summarise_meta(con, add, as_of)
    _summarise_loads(add, con, scope, load_balance, quarantine)
    _summarise_completeness(add, completeness)
    _summarise_duplicates(add, duplicates)
    _summarise_orphans(add, orphans)
    _summarise_missing_links(add, missing_links, completeness)
    _summarise_categories(add, categories)
    _summarise_freshness(add, freshness)
    for row in readiness.itertuples(index=False):
        status = _grade_high(row.score, READY_OK, READY_FAIL)
        parts = ", ".join(
            f"{name} {getattr(row, name):.0f}" for name in READINESS_WEIGHTS
        )
        add(
            "readiness",
            "readiness score",
            row.score,
            f">= {READY_OK:.0f} ok, < {READY_FAIL:.0f} fail",
            status,
            parts + (f"; weakest: {row.weakest}" if row.weakest else ""),
            region=row.region,
            business_unit=row.business_unit,
        )
    return add.frame()


#: Tables whose checks cover the whole mart whatever the scope.
COMPANY_WIDE_TABLES = ("mart_meta", "load_log", "external")


class _SummaryBuilder:
    """Collects summary rows; region and unit default to the audit's scope.

    Rows of COMPANY_WIDE_TABLES, and rows added with company_wide=True,
    leave region and unit empty because no scope narrows them.
    """

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.rows: list[dict] = []

    def __call__(
        self,
        table: str,
        check: str,
        value: object,
        threshold: str,
        status: str,
        detail: str = "",
        *,
        region: str | None = None,
        business_unit: str | None = None,
        company_wide: bool = False,
    ) -> None:
        if not company_wide and table not in COMPANY_WIDE_TABLES:
            region = region or self.scope.region
            business_unit = business_unit or self.scope.business_unit
        self.rows.append(
            {
                "table": table,
                "check": check,
                "region": region,
                "business_unit": business_unit,
                "value": value,
                "threshold": threshold,
                "status": status,
                "detail": detail,
            }
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=SUMMARY_COLUMNS)


def _grade_high(value: float, ok: float, fail: float) -> str:
    """Return the status of a measure where higher is better."""
    if value >= ok:
        return OK
    return WARN if value >= fail else FAIL


def _grade_low(value: float, ok: float, fail: float) -> str:
    """Return the status of a measure where lower is better."""
    if value <= ok:
        return OK
    return WARN if value <= fail else FAIL


def _summarise_meta(con, add: _SummaryBuilder, as_of: date | None) -> None:
    meta = get_meta(con)
    add(
        "mart_meta",
        "as-of date",
        as_of.isoformat() if as_of else None,
        "set",
        OK if meta.get("as_of") else WARN,
        "" if meta.get("as_of") else "as_of missing; derived from the latest fact date",
    )
    for key, value in sorted(meta.items()):
        if not key.startswith(ALTERNATE_NAMES_KEY) or not value:
            continue
        table = key[len(ALTERNATE_NAMES_KEY) :]
        alternates = json.loads(value)
        examples = "; ".join(
            f"{k}: also {' / '.join(v)}" for k, v in list(alternates.items())[:3]
        )
        add(
            table,
            "IDs with several names",
            len(alternates),
            "0",
            WARN if alternates else OK,
            f"first name kept; e.g. {examples}" if examples else "",
            company_wide=True,
        )


def _summarise_loads(
    add: _SummaryBuilder,
    con: duckdb.DuckDBPyConnection,
    scope: Scope,
    load_balance: pd.DataFrame,
    quarantine: pd.DataFrame,
) -> None:
    unbalanced = load_balance[~load_balance["balanced"].astype(bool)]
    add(
        "load_log",
        "rows read = loaded + quarantined",
        len(unbalanced),
        "0 unbalanced loads",
        OK if unbalanced.empty else FAIL,
        f"{len(load_balance)} loads checked"
        + (
            f"; unbalanced: {', '.join(unbalanced['load_id'])}"
            if len(unbalanced)
            else ""
        ),
    )
    inconsistent = load_balance[~load_balance["consistent"].astype(bool)]
    add(
        "load_log",
        "quarantined rows match quarantine table",
        len(inconsistent),
        "0 loads",
        OK if inconsistent.empty else FAIL,
        ", ".join(inconsistent["load_id"]),
    )
    clauses, params = _quarantine_filter(scope)
    bad_lines = dict(
        con.execute(
            f"""
            SELECT table_name, count(DISTINCT load_id || ':' || line)
            FROM quarantine WHERE {clauses} GROUP BY table_name
            """,
            params,
        ).fetchall()
    )
    for table in sorted(set(load_balance["table"])):
        bad = int(bad_lines.get(table, 0))
        # Rows loaded are the rows now in the table, so read = in table + quarantined.
        total = _count(con, table, scope) + bad
        share = bad / total if total else 0.0
        reasons = quarantine[quarantine["table"] == table]
        detail = "; ".join(
            f"{r.reason} ({r.column}): {r.rows}" for r in reasons.head(4).itertuples()
        )
        add(
            table,
            "rows quarantined",
            bad,
            "0 ok, >= 5% of rows read fail",
            OK if bad == 0 else (FAIL if share >= 0.05 else WARN),
            f"{bad} of {total} rows read" + (f"; {detail}" if detail else ""),
        )


def _summarise_completeness(add, completeness: pd.DataFrame) -> None:
    threshold = f">= {COMPLETE_OK:.0%} ok, < {COMPLETE_FAIL:.0%} fail"
    for row in completeness.itertuples(index=False):
        if row.column not in KEY_COLUMNS.get(row.table, ()):
            continue
        if row.non_empty == 0:
            status, detail = WARN, "no loaded export provides this column"
        else:
            status = _grade_high(row.share, COMPLETE_OK, COMPLETE_FAIL)
            detail = f"{row.non_empty} of {row.rows} rows"
        add(
            row.table,
            f"{row.column} filled",
            round(row.share, 4),
            threshold,
            status,
            detail,
        )


def _summarise_duplicates(add, duplicates: pd.DataFrame) -> None:
    for row in duplicates.itertuples(index=False):
        if row.check == SNAPSHOT_DUPLICATES:
            # The opportunities key row already counts these; snapshots stay in detail.
            continue
        bad = FAIL if row.check == "duplicate key" else WARN
        add(
            row.table,
            row.check,
            row.duplicate_keys,
            "0",
            OK if row.duplicate_keys == 0 else bad,
            f"key {row.key}; {row.extra_rows} extra rows"
            + (f"; {row.detail}" if row.detail else ""),
        )


def _summarise_orphans(add, orphans: pd.DataFrame) -> None:
    for (table, column), group in orphans.groupby(["table", "column"], sort=True):
        rows = int(group["rows"].sum())
        share = float(group["share"].sum())
        examples = "; ".join(
            f"{r.key}" + (f" -> {r.suggestion} ({r.match})" if r.suggestion else "")
            for r in group.head(5).itertuples()
        )
        add(
            table,
            f"{column} not in {group['dimension'].iloc[0]}",
            len(group),
            f"0 keys ok, >= {ORPHAN_FAIL:.0%} of rows fail",
            FAIL if share >= ORPHAN_FAIL else WARN,
            f"{rows} rows ({share:.1%}); {examples}",
        )


def _summarise_missing_links(
    add, missing: pd.DataFrame, completeness: pd.DataFrame
) -> None:
    filled = completeness.set_index(["table", "column"])["non_empty"]
    for row in missing.itertuples(index=False):
        # A column no export provides is reported once, by the completeness check.
        if row.rows == 0 or filled.get((row.table, row.link), 1) == 0:
            continue
        label = f"{row.status} " if row.status else ""
        amount = "" if pd.isna(row.amount) else f", value {row.amount:,.2f}"
        add(
            row.table,
            f"{label}rows without {row.link}",
            row.rows,
            f"0 ok, < {COMPLETE_FAIL:.0%} filled fail",
            FAIL if 1 - row.share < COMPLETE_FAIL else WARN,
            f"{row.rows} of {row.of_rows} rows ({row.share:.1%}){amount}",
        )


def _summarise_categories(add, categories: pd.DataFrame) -> None:
    for row in categories.itertuples(index=False):
        add(
            row.table,
            f"{row.column} spelling variant",
            row.value,
            "no variants",
            WARN,
            f"{row.value!r} ({row.rows} rows) looks like {row.likely!r} "
            f"({row.likely_rows} rows): {row.basis}, similarity {row.similarity:.2f}",
        )


def _summarise_freshness(add, freshness: pd.DataFrame) -> None:
    for row in freshness[freshness["table"] != "external"].itertuples(index=False):
        if row.days_behind is None or pd.isna(row.days_behind):
            continue
        add(
            row.table,
            "days behind as-of",
            int(row.days_behind),
            f"<= {FRESH_OK_DAYS} ok, > {FRESH_FAIL_DAYS} fail",
            _grade_low(row.days_behind, FRESH_OK_DAYS, FRESH_FAIL_DAYS),
            f"latest {row.date_column} {row.last_date}",
        )
    external = freshness[freshness["table"] == "external"]
    if external.empty:
        return
    stale = external[external["days_behind"] > EXTERNAL_OK_DAYS]
    names = ", ".join(
        f"{r.series} ends {r.last_date}" for r in stale.head(8).itertuples()
    )
    more = f" and {len(stale) - 8} more" if len(stale) > 8 else ""
    add(
        "external",
        "indicators ending before as-of",
        len(stale),
        f"0 ending more than {EXTERNAL_OK_DAYS} days before as-of",
        WARN if len(stale) else OK,
        f"{len(stale)} of {len(external)} indicators"
        + (f": {names}{more}" if names else ""),
    )
