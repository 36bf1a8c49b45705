"""Checks on completeness, keys, freshness, categories and row accounting."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable
from datetime import date

import duckdb
import pandas as pd

from cockpit.audit.common import (
    AMOUNT_COLUMN,
    CATEGORY_COLUMNS,
    DATE_COLUMN,
    INDUSTRY_TERMS,
    LINKS,
    MAX_FUZZY_VALUES,
    SIMILARITY,
    SNAPSHOT_DUPLICATES,
    _count,
    _frame,
    _has_table,
    _non_empty,
    _scalar,
    normalise,
    table_filter,
)
from cockpit.mart import TABLES
from cockpit.scope import Scope

logger = logging.getLogger(__name__)


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
