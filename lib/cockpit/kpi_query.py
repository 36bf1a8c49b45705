"""Query building blocks shared by the KPI registry and its source modules.

A `KpiRequest` carries one scope, period and as-of date, and caches what
the sources of the registry read for it, so that several KPIs of one call
read each table once. `fact_frame` aggregates a fact table at the grains of
the registry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date

import duckdb
import numpy as np
import pandas as pd

from cockpit.scope import Scope

logger = logging.getLogger(__name__)


@dataclass
class KpiRequest:
    """One scope, period and as-of date, with the source frames read so far.

    `start` and `end` bound the flows that are counted (invoice lines,
    closed deals, activities). `period_end` is the last day of the whole
    period, which can lie after `end` when a period is read to date. Targets
    and the pipeline expected to close in the period use it. `target_metric`
    is the metric of the targets rows read.
    """

    con: duckdb.DuckDBPyConnection
    scope: Scope
    start: date | None
    end: date | None
    as_of: date | None
    period_end: date | None = None
    target_metric: str = "revenue"
    cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.period_end is None:
            self.period_end = self.end

    def cached(self, key: tuple, compute: Callable[[], object]):
        """Return the value stored under `key`, computing it on first use."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

    def snapshot_date(self) -> date | None:
        """Return the date of the pipeline snapshot, the latest on or before as_of.

        NOTE: every snapshot_date counts, including a date whose rows are all
        closed deals, which then gives an open pipeline of 0 rather than NaN.
        """

        def query() -> date | None:
            if self.as_of is None:
                row = self.con.execute(
                    "SELECT max(snapshot_date) FROM opportunities"
                ).fetchone()
            else:
                row = self.con.execute(
                    "SELECT max(snapshot_date) FROM opportunities WHERE snapshot_date <= ?",
                    [self.as_of],
                ).fetchone()
            return row[0]

        return self.cached(("snapshot",), query)

    def date_span(self, table: str) -> tuple[date | None, date | None]:
        """Return the first and last date of a dated table over the whole mart."""
        return self.cached(
            ("span", table),
            lambda: tuple(
                self.con.execute(f"SELECT min(date), max(date) FROM {table}").fetchone()
            ),
        )

    def deal_states(self) -> tuple[str, list]:
        """Return SQL and parameters for each deal at its latest snapshot by as_of."""
        if self.as_of is None:
            return "opportunities_current", []
        return (
            "(SELECT * FROM opportunities WHERE snapshot_date <= ? "
            "QUALIFY snapshot_date = max(snapshot_date) OVER (PARTITION BY opportunity_id))",
            [self.as_of],
        )

    def probabilities(self) -> pd.DataFrame:
        """Return stage probabilities per segment, calibrated on this scope and as_of."""
        # Imported here because cockpit.kpi imports this module.
        from cockpit.kpi import stage_probabilities

        return self.cached(
            ("probabilities",),
            lambda: stage_probabilities(
                self.con, self.scope, as_of=self.as_of, by="segment"
            ),
        )


def undefined_measures(by: tuple[str, ...], measures) -> pd.DataFrame:
    """Frame of undefined (NaN) measures: no rows per group, one row without `by`.

    Sources return it when the data a measure needs is absent, so the KPI is
    undefined rather than 0.
    """
    rows = 0 if by else 1
    return pd.DataFrame(
        {**{g: [None] * rows for g in by}, **{m: [np.nan] * rows for m in measures}}
    )


def time_sql(expr: str) -> dict[str, str]:
    """Return SQL for the month, quarter and year labels of the date `expr`."""
    return {
        "month": f"strftime({expr}, '%Y-%m')",
        "quarter": f"CAST(year({expr}) AS VARCHAR) || '-Q' || CAST(quarter({expr}) AS VARCHAR)",
        "year": f"CAST(year({expr}) AS VARCHAR)",
    }


#: SQL of each non-calendar grain over a fact table aliased f, and the join
#: that the grain needs (None when the fact table has the column).
GRAIN_SQL = {
    "region": ("f.region", None),
    "business_unit": ("f.business_unit", None),
    "team": ("r.team", "LEFT JOIN reps r ON r.rep_id = f.rep_id"),
    "rep_id": ("f.rep_id", None),
    "account_id": ("f.account_id", None),
    "product_id": ("f.product_id", None),
    "product_line": (
        "p.product_line",
        "LEFT JOIN products p ON p.product_id = f.product_id",
    ),
    "segment": ("a.segment", "LEFT JOIN accounts a ON a.account_id = f.account_id"),
}


def fact_frame(
    req: KpiRequest,
    by: tuple[str, ...],
    *,
    relation: str,
    date_expr: str,
    measures: str,
    relation_params: Sequence = (),
    filters: Sequence[str] = (),
    filter_params: Sequence = (),
    start: date | None = None,
    end: date | None = None,
    extra_group: Sequence[str] = (),
    joins: Sequence[str] = (),
) -> pd.DataFrame:
    """Aggregate `measures` over a fact relation aliased f, grouped by `by`.

    Rows are kept when `date_expr` lies within [start, end] (a None bound does
    not filter) and the request's scope matches the row. `extra_group` adds
    SQL group expressions after the grains, and `joins` adds joins that
    `extra_group` or `measures` need, next to those of the grains.
    """
    grain_sql = {name: sql for name, (sql, _) in GRAIN_SQL.items()}
    grain_sql.update(time_sql(date_expr))
    groups = [f"{grain_sql[g]} AS {g}" for g in by] + list(extra_group)
    needed = [GRAIN_SQL[g][1] for g in by if g in GRAIN_SQL and GRAIN_SQL[g][1]]
    join_sql = "".join(f" {join}" for join in dict.fromkeys([*needed, *joins]))

    where = list(filters)
    params = [*relation_params, *filter_params]
    if start is not None:
        where.append(f"{date_expr} >= ?")
        params.append(start)
    if end is not None:
        where.append(f"{date_expr} <= ?")
        params.append(end)
    scope_sql, scope_params = req.scope.where("f.")
    where.append(scope_sql)
    params.extend(scope_params)

    select = ", ".join([*groups, measures])
    sql = f"SELECT {select} FROM {relation} f{join_sql} WHERE {' AND '.join(where)}"
    if groups:
        sql += " GROUP BY " + ", ".join(str(i + 1) for i in range(len(groups)))
    logger.debug("KPI query %s with %s", sql, params)
    return req.con.execute(sql, params).df()
