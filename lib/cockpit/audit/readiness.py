"""Readiness score per region x business unit, explained by its parts."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date

import duckdb
import pandas as pd

from cockpit.audit.common import (
    FACT_TABLES,
    FRESH_OK_DAYS,
    HISTORY_MONTHS,
    KEY_COLUMNS,
    LINKS,
    READINESS_WEIGHTS,
    _count,
    _frame,
    _has_table,
    _non_empty,
    _scalar,
    table_filter,
)
from cockpit.audit.validity import invalid_condition
from cockpit.mart import get_meta
from cockpit.scope import Scope

logger = logging.getLogger(__name__)


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
    - validity: share of the cell's rows read that were loaded (not
      quarantined) and break no invalid rule of `cockpit.audit.validity`.
    - linkage: share of non-empty account, product and seller keys found in
      their dimension table.
    - freshness: 100 up to FRESH_OK_DAYS behind the as-of date, then falling
      linearly to 0 at 365 days; the freshest fact table counts.
    - history: months of dated history over HISTORY_MONTHS, capped at 100;
      the fact table with the longest history counts.

    Columns: region, business_unit, rows, the five parts, score, weakest,
    months, days_behind, revenue, invalid_rows, quarantined_rows and
    explanation. rows counts transactions plus opportunities in their latest
    snapshot, and months the history. revenue is the net revenue of the
    cell's transactions in the reporting currency, empty without them.
    explanation lists the parts below 100 with the points each costs,
    largest first.
    """
    scope = scope or Scope()
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    currency = get_meta(con).get("currency")
    for table in FACT_TABLES:
        if not _count(con, table, scope):
            continue
        measures = _cell_measures(con, table, scope, as_of, currency)
        for cell, table_measures in measures.items():
            _merge_measures(cells.setdefault(cell, {}), table_measures)
    rows: list[dict] = []
    for (region, unit), measures in sorted(cells.items()):
        parts = {
            name: 100.0 * measures[name][0] / measures[name][1]
            if measures.get(name, [0, 0])[1]
            else 100.0
            for name in ("completeness", "validity", "linkage")
        }
        days_behind = measures["days_behind"][0]
        months = measures["months"][0]
        parts["freshness"] = _freshness_score(days_behind)
        parts["history"] = min(100.0, 100.0 * months / HISTORY_MONTHS)
        score = sum(READINESS_WEIGHTS[name] * value for name, value in parts.items())
        rows.append(
            {
                "region": region,
                "business_unit": unit,
                "rows": int(measures["rows"][0]),
                **{name: round(value, 1) for name, value in parts.items()},
                "score": round(score, 1),
                "weakest": _weakest(parts),
                "months": round(months, 1),
                "days_behind": days_behind,
                "revenue": measures["revenue"][0],
                "invalid_rows": int(measures["invalid"][0]),
                "quarantined_rows": int(measures["quarantined"][0]),
                "explanation": explain_score(score, parts),
            }
        )
    return _frame(rows, READINESS_COLUMNS)


READINESS_COLUMNS = [
    "region",
    "business_unit",
    "rows",
    *READINESS_WEIGHTS,
    "score",
    "weakest",
    "months",
    "days_behind",
    "revenue",
    "invalid_rows",
    "quarantined_rows",
    "explanation",
]


def _merge_measures(
    merged: dict[str, list[float]], measures: dict[str, list[float]]
) -> None:
    """Add one fact table's measures of a cell to those of the other tables.

    Counts add up. Days behind keeps the freshest table and months the
    longest history, so a cell with both invoices and deals is judged on
    its best source of each.
    """
    for name, pair in measures.items():
        if name not in merged:
            merged[name] = list(pair)
        elif name == "days_behind":
            known = [d for d in (merged[name][0], pair[0]) if d is not None]
            merged[name][0] = min(known) if known else None
        elif name == "months":
            merged[name][0] = max(merged[name][0], pair[0])
        elif name == "revenue":
            known = [v for v in (merged[name][0], pair[0]) if v is not None]
            merged[name][0] = sum(known) if known else None
        else:
            merged[name][0] += pair[0]
            merged[name][1] += pair[1]


def explain_score(score: float, parts: dict[str, float]) -> str:
    """Describe a readiness score by the points each part below 100 costs.

    E.g. "88.6 = 100 - 8.0 history (59.8) - 1.8 linkage (91.1)".
    """
    lost = sorted(
        (
            (READINESS_WEIGHTS[name] * (100.0 - value), name, value)
            for name, value in parts.items()
            if value < 100.0
        ),
        key=lambda item: (-item[0], item[1]),
    )
    if not lost:
        return f"{score:.1f}: every part scores full marks"
    terms = " ".join(
        f"- {points:.1f} {name} ({value:.1f})" for points, name, value in lost
    )
    return f"{score:.1f} = 100 {terms}"


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
    con: duckdb.DuckDBPyConnection,
    table: str,
    scope: Scope,
    as_of: date | None,
    currency: str | None,
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
    invalid = invalid_condition(table, as_of, currency)
    if table == "transactions":
        history = "min(f.date), max(f.date)"
        latest = "max(f.date)"
        revenue = "sum(f.net_revenue)"
    else:
        history = (
            "least(min(f.created_date), min(f.closed_date)), "
            "greatest(max(f.created_date), max(f.closed_date))"
        )
        latest = "max(f.snapshot_date)"
        revenue = "NULL"

    result = con.execute(
        f"""
        SELECT f.region, f.business_unit, count(*), {filled}, {link_known},
               {link_found}, {history}, {latest}, {revenue},
               count(*) FILTER (WHERE {invalid})
        FROM {source} f
        WHERE {where} AND f.region IS NOT NULL AND f.business_unit IS NOT NULL
        GROUP BY f.region, f.business_unit
        """,
        params,
    ).fetchall()

    quarantined = _quarantined_by_cell(con, table)
    cells: dict[tuple[str, str], dict[str, list[float]]] = {}
    for (
        region,
        unit,
        count,
        n_filled,
        n_known,
        n_found,
        first,
        last,
        newest,
        value,
        n_invalid,
    ) in result:
        months = 0.0
        if first is not None and last is not None:
            months = (last - first).days / 30.4375
        behind = (as_of - newest).days if as_of and newest else None
        bad = quarantined.get((region, unit), 0)
        cells[(region, unit)] = {
            "rows": [count, 0],
            "completeness": [n_filled, count * len(provided)],
            "validity": [count - n_invalid, count + bad],
            "linkage": [n_found, n_known],
            "days_behind": [behind, 0],
            "months": [months, 0],
            "revenue": [value, 0],
            "invalid": [n_invalid, 0],
            "quarantined": [bad, 0],
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
