"""Validity rules and outlier detection, per table and per region x business unit.

A validity rule is one SQL condition that flags rows whose values are each
well-formed but do not make sense together, such as a deal closed before it
was created. The loader has already quarantined values that do not parse,
so these rules look at what reached the mart.

Outliers are amounts far from the usual size within their own region x
business unit, found with a robust z-score on the logarithm of the value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

import duckdb
import pandas as pd

from cockpit.audit.common import _count, _frame, table_filter
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: Severity of a rule. Rows breaking an `invalid` rule count against the
#: readiness score; `suspect` rows warn; `note` rows are reported only.
INVALID, SUSPECT, NOTE = "invalid", "suspect", "note"

#: Share of a table's rows breaking an invalid rule from which the rule fails.
INVALID_FAIL = 0.05

#: Activity types of the canonical activities table.
ACTIVITY_TYPES = ("visit", "call", "email", "internal")

#: Maximum plausible duration of one activity, in minutes.
MAX_ACTIVITY_MINUTES = 12 * 60


@dataclass(frozen=True)
class Rule:
    """One validity rule: rows of `table` where `condition` is true break it.

    `condition` may use the placeholders {as_of} and {currency} (the mart's
    as-of date and reporting currency); the rule is skipped when the mart
    lacks the value.
    """

    table: str
    name: str
    condition: str
    severity: str = INVALID


RULES: tuple[Rule, ...] = (
    Rule("transactions", "date after as-of", "date > {as_of}"),
    Rule(
        "transactions",
        "negative cost on a sales line",
        "cost < 0 AND net_revenue >= 0",
    ),
    Rule(
        "transactions",
        "currency code not three capital letters",
        "NOT regexp_full_match(currency, '[A-Z]{{3}}')",
    ),
    Rule(
        "transactions",
        "foreign currency without exchange rate",
        "currency <> {currency} AND currency NOT IN "
        "(SELECT currency FROM fx_rates WHERE currency IS NOT NULL)",
    ),
    Rule(
        "transactions",
        "zero quantity with revenue",
        "quantity = 0 AND net_revenue <> 0",
        SUSPECT,
    ),
    Rule("transactions", "zero net revenue", "net_revenue = 0", SUSPECT),
    Rule(
        "transactions",
        "negative line (credit note or return)",
        "net_revenue < 0",
        NOTE,
    ),
    Rule("opportunities", "closed before created", "closed_date < created_date"),
    Rule(
        "opportunities",
        "open with a close date",
        "status = 'open' AND closed_date IS NOT NULL",
    ),
    Rule("opportunities", "created after snapshot", "created_date > snapshot_date"),
    Rule("opportunities", "closed after snapshot", "closed_date > snapshot_date"),
    Rule(
        "opportunities",
        "expected close before created",
        "expected_close_date < created_date",
    ),
    Rule("opportunities", "negative amount", "amount < 0"),
    Rule("opportunities", "won with zero amount", "status = 'won' AND amount = 0"),
    Rule(
        "opportunities",
        "open past expected close",
        "status = 'open' AND expected_close_date < snapshot_date",
        SUSPECT,
    ),
    Rule(
        "opportunities",
        "amount estimated from list price",
        "amount_is_estimate",
        NOTE,
    ),
    Rule("activities", "date after as-of", "date > {as_of}"),
    Rule("activities", "duration not positive", "duration_minutes <= 0"),
    Rule(
        "activities",
        f"duration over {MAX_ACTIVITY_MINUTES // 60} hours",
        f"duration_minutes > {MAX_ACTIVITY_MINUTES}",
    ),
    Rule(
        "activities",
        "unknown activity type",
        "type NOT IN (" + ", ".join(f"'{t}'" for t in ACTIVITY_TYPES) + ")",
    ),
    Rule(
        "activities",
        "internal meeting with an account",
        "type = 'internal' AND account_id IS NOT NULL AND trim(account_id) <> ''",
    ),
    Rule("accounts", "negative employees", "employees < 0"),
    Rule("accounts", "negative annual revenue", "annual_revenue < 0"),
    Rule("accounts", "own parent account", "parent_account_id = account_id"),
    Rule("products", "negative list price", "list_price < 0"),
    Rule("products", "unit cost above list price", "unit_cost > list_price", SUSPECT),
    Rule("reps", "active to before active from", "active_to < active_from"),
    Rule("reps", "own manager", "manager_id = rep_id"),
    Rule("targets", "period ends before it starts", "period_end < period_start"),
    Rule("targets", "negative target", "value < 0"),
    Rule("fx_rates", "rate not positive", "rate_to_reporting <= 0"),
    Rule(
        "fx_rates",
        "reporting currency rate not 1",
        "currency = {currency} AND rate_to_reporting <> 1",
    ),
    Rule("external", "value not finite", "isnan(value) OR isinf(value)"),
)

#: Columns each table is grouped by for per-cell findings.
CELL_COLUMNS: dict[str, tuple[str, ...]] = {
    "transactions": ("region", "business_unit"),
    "opportunities": ("region", "business_unit"),
    "targets": ("region", "business_unit"),
    "activities": ("region",),
    "accounts": ("region",),
    "reps": ("region",),
}

#: SQL naming one row of each table in examples.
ROW_LABEL = {
    "transactions": "invoice_id || ' line ' || CAST(line AS VARCHAR)",
    "opportunities": "opportunity_id",
    "activities": "activity_id",
    "accounts": "account_id",
    "products": "product_id",
    "reps": "rep_id",
    "targets": "level || ' ' || key || ' ' || period",
    "fx_rates": "currency || ' ' || CAST(date AS VARCHAR)",
    "external": "indicator || ' ' || region || ' ' || CAST(date AS VARCHAR)",
}

#: Amount summed over the rows breaking a rule, per table.
RULE_AMOUNT = {"transactions": "net_revenue", "opportunities": "amount"}

VALIDITY_COLUMNS = [
    "table",
    "rule",
    "severity",
    "region",
    "business_unit",
    "rows",
    "of_rows",
    "share",
    "amount",
    "example",
]


def source_of(table: str) -> str:
    """Return the relation a table is read from: opportunities in their latest snapshot."""
    return "opportunities_current" if table == "opportunities" else table


def rule_condition(rule: Rule, as_of: date | None, currency: str | None) -> str | None:
    """Return the rule's SQL condition with its placeholders filled, or None.

    None means the rule needs an as-of date or currency the mart lacks.
    """
    if "{as_of}" in rule.condition and as_of is None:
        return None
    if "{currency}" in rule.condition and not currency:
        return None
    return rule.condition.format(
        as_of=f"DATE '{as_of.isoformat()}'" if as_of else "NULL",
        currency=_quote(currency) if currency else "NULL",
    )


def invalid_condition(table: str, as_of: date | None, currency: str | None) -> str:
    """Return SQL true for rows of `table` that break any invalid rule; FALSE if none."""
    conditions = [
        rule_condition(rule, as_of, currency)
        for rule in RULES
        if rule.table == table and rule.severity == INVALID
    ]
    conditions = [f"coalesce(({c}), FALSE)" for c in conditions if c]
    return " OR ".join(conditions) or "FALSE"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _cell_sql(table: str) -> str:
    columns = CELL_COLUMNS.get(table, ())
    region = "region" if "region" in columns else "NULL"
    unit = "business_unit" if "business_unit" in columns else "NULL"
    return f"{region} AS region, {unit} AS business_unit"


def check_validity(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    as_of: date | None = None,
    currency: str | None = None,
) -> pd.DataFrame:
    """Count rows breaking each validity rule, per table and region x business unit.

    Tables without a region (products, fx_rates, external) and activities,
    accounts and reps (no business unit) leave those columns empty. Every
    rule of a table with rows in scope appears, with rows 0 when no row
    breaks it. Opportunities are read in their latest snapshot. amount is
    the net revenue or deal value of the rows breaking the rule. Columns:
    table, rule, severity, region, business_unit, rows, of_rows, share
    (0-1), amount, example (the first offending row in key order).
    """
    scope = scope or Scope()
    out: list[dict] = []
    for table in dict.fromkeys(rule.table for rule in RULES):
        if not _count(con, table, scope):
            continue
        rules = [
            (rule, condition)
            for rule in RULES
            if rule.table == table
            and (condition := rule_condition(rule, as_of, currency)) is not None
        ]
        if not rules:
            continue
        where, params = table_filter(table, scope)
        amount = RULE_AMOUNT.get(table)
        label = ROW_LABEL[table]
        measures = []
        for _, condition in rules:
            test = f"coalesce(({condition}), FALSE)"
            measures.append(f"count(*) FILTER (WHERE {test})")
            measures.append(
                f"sum({amount}) FILTER (WHERE {test})" if amount else "NULL"
            )
            measures.append(f"min({label}) FILTER (WHERE {test})")
        result = con.execute(
            f"""
            SELECT {_cell_sql(table)}, count(*), {", ".join(measures)}
            FROM {source_of(table)} WHERE {where}
            GROUP BY ALL ORDER BY ALL
            """,
            params,
        ).fetchall()
        for region, unit, total, *values in result:
            for i, (rule, _) in enumerate(rules):
                rows, value, example = values[3 * i : 3 * i + 3]
                out.append(
                    {
                        "table": table,
                        "rule": rule.name,
                        "severity": rule.severity,
                        "region": region,
                        "business_unit": unit,
                        "rows": int(rows),
                        "of_rows": int(total),
                        "share": rows / total if total else 0.0,
                        "amount": value,
                        "example": example,
                    }
                )
    return _frame(out, VALIDITY_COLUMNS)


# --- outliers -----------------------------------------------------------------

#: Amount columns scanned for outliers.
OUTLIER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("transactions", "net_revenue"),
    ("transactions", "quantity"),
    ("opportunities", "amount"),
    ("activities", "duration_minutes"),
)

#: Robust z-score beyond which a value is an outlier: 0.6745 (x - median) /
#: MAD on ln(value), with 3.5 as Iglewicz and Hoaglin recommend.
OUTLIER_Z = 3.5
MAD_TO_Z = 0.6745

#: Factor between a value and its group's median below which it is never an
#: outlier. Discounts and order sizes move values by a few times. A value ten
#: times off points to an entry error such as a wrong unit or an extra 0.
OUTLIER_MIN_FACTOR = 10.0

#: Values a reference group needs. A product with fewer values in a cell
#: is compared with the whole cell, and a cell with fewer is not scanned,
#: because median and MAD of a handful of values say little.
MIN_OUTLIER_VALUES = 30

#: Share of values flagged as outliers up to which the check is ok.
OUTLIER_OK_SHARE = 0.01

OUTLIER_RESULT_COLUMNS = [
    "table",
    "column",
    "region",
    "business_unit",
    "values",
    "outliers",
    "share",
    "product_groups",
    "outlier_amount",
    "example",
    "example_value",
    "example_median",
    "example_low_fence",
    "example_high_fence",
]


def find_outliers(
    con: duckdb.DuckDBPyConnection, scope: Scope | None = None
) -> pd.DataFrame:
    """Flag amounts far from the usual size of their product or region x business unit.

    Only positive values are scanned (negative lines are credit notes,
    reported by the validity rules). Each value is compared with a
    reference group. That is the same product in the same cell when the
    product has at least MIN_OUTLIER_VALUES values there, else the whole
    cell, so a cheap and a dear product of one unit do not flag each other.
    A value
    is an outlier when it is at least OUTLIER_MIN_FACTOR times above or
    below the group's median and its robust z-score on the log scale,
    0.6745 x (ln x - median) / MAD, exceeds OUTLIER_Z in absolute value (a
    MAD of 0 leaves the factor alone to decide). Cells with fewer than
    MIN_OUTLIER_VALUES values are skipped. Columns: table, column, region, business_unit, values, outliers,
    share (0-1), product_groups (products compared on their own),
    outlier_amount (sum of the flagged values), and for the value farthest
    from its group's median: example (its row), example_value,
    example_median and the group's fences in the column's unit.
    """
    scope = scope or Scope()
    reach = OUTLIER_Z / MAD_TO_Z
    out: list[dict] = []
    for table, column in OUTLIER_COLUMNS:
        if not _count(con, table, scope):
            continue
        where, params = table_filter(table, scope)
        item = "product_id" if table in RULE_AMOUNT else "NULL"
        spread = f"greatest({reach} * g.mad, ln({OUTLIER_MIN_FACTOR}))"
        flag = f"abs(g.lx - g.med) > {spread}"
        result = con.execute(
            f"""
            WITH v AS (
                SELECT {_cell_sql(table)}, {item} AS item, {column} AS x,
                       ln({column}) AS lx, {ROW_LABEL[table]} AS label
                FROM {source_of(table)} WHERE {where} AND {column} > 0
            ),
            c AS (
                SELECT region, business_unit, count(*) AS n,
                       median(lx) AS med, mad(lx) AS mad
                FROM v GROUP BY ALL
            ),
            p AS (
                SELECT region, business_unit, item, count(*) AS n,
                       median(lx) AS med, mad(lx) AS mad
                FROM v WHERE item IS NOT NULL GROUP BY ALL
                HAVING count(*) >= {MIN_OUTLIER_VALUES}
            ),
            g AS (
                SELECT v.*, c.n AS cell_n, p.item AS own_group,
                       coalesce(p.med, c.med) AS med, coalesce(p.mad, c.mad) AS mad
                FROM v
                JOIN c ON v.region IS NOT DISTINCT FROM c.region
                      AND v.business_unit IS NOT DISTINCT FROM c.business_unit
                LEFT JOIN p ON v.region IS NOT DISTINCT FROM p.region
                           AND v.business_unit IS NOT DISTINCT FROM p.business_unit
                           AND v.item = p.item
            )
            SELECT g.region, g.business_unit, count(*),
                   count(*) FILTER (WHERE {flag}),
                   count(DISTINCT g.own_group),
                   sum(g.x) FILTER (WHERE {flag}),
                   arg_max(g.label, abs(g.lx - g.med)) FILTER (WHERE {flag}),
                   arg_max(g.x, abs(g.lx - g.med)) FILTER (WHERE {flag}),
                   arg_max(exp(g.med), abs(g.lx - g.med)) FILTER (WHERE {flag}),
                   arg_max(exp(g.med - {spread}), abs(g.lx - g.med))
                       FILTER (WHERE {flag}),
                   arg_max(exp(g.med + {spread}), abs(g.lx - g.med))
                       FILTER (WHERE {flag})
            FROM g WHERE g.cell_n >= {MIN_OUTLIER_VALUES}
            GROUP BY g.region, g.business_unit ORDER BY ALL
            """,
            params,
        ).fetchall()
        for region, unit, n, flagged, groups, amount, *example in result:
            out.append(
                {
                    "table": table,
                    "column": column,
                    "region": region,
                    "business_unit": unit,
                    "values": int(n),
                    "outliers": int(flagged),
                    "share": flagged / n,
                    "product_groups": int(groups),
                    "outlier_amount": amount,
                    "example": example[0],
                    "example_value": example[1],
                    "example_median": example[2],
                    "example_low_fence": example[3],
                    "example_high_fence": example[4],
                }
            )
    return _frame(out, OUTLIER_RESULT_COLUMNS)
