"""One registry of KPI definitions, computed at any grain, scope and period.

Every KPI the cockpit shows is declared once in `KPIS`, with its unit and its
formula in words, and computed from the mart's canonical tables by
`compute_kpi` (a table with one row per group) or `kpi_values` (one number
per KPI). Values that cannot be defined, such as a win rate with no closed
deal, are NaN in frames and None in `kpi_values`, never 0.

Named periods (week, month, quarter, year, ytd, r12m; see cockpit.kpi_periods)
are read to date: flows stop at as_of while targets cover the whole period.
Customer counts live in cockpit.kpi_customers, deal histories from snapshots
(slips, stage times, stale deals) in cockpit.kpi_deals, and the shared query
code in cockpit.kpi_query. `compare_kpi` adds last year and target to date.

Each KPI reads one or more sources. The date that places a row in a period,
and in a month, quarter or year group, is the source's own date:

- invoice lines (`transactions`): the invoice date;
- closed deals: the close date of each deal as it stood at its latest
  snapshot on or before `as_of` (without `as_of`, the `opportunities_current`
  view);
- open pipeline: the deals with status open in the pipeline snapshot, which
  is the latest `snapshot_date` on or before `as_of`. Pipeline KPIs are a
  stock at that date, so `start` and `end` do not apply; month, quarter and
  year group them by expected close date;
- activities: the activity date;
- sellers (the denominator of activities per seller): reps with role seller
  whose active dates overlap the period or the group's month, quarter or
  year;
- targets: the target's period, which must lie within the requested period
  and, for a month, quarter or year grain, within one group.

How a scope selects target rows
-------------------------------
The target KPI reads the latest version of each row of `targets` with metric
revenue, keyed by (period, level, key, region, business_unit). A row that
another kept row of the same level, key, region and business unit covers
with a longer period is dropped, so a year target and its quarter targets
are not added together. Each row then gets four attributes:

- region: its region column, else its key at level region, else the region
  of the rep at level rep;
- business unit: its business_unit column, else its key at level
  business_unit;
- team: its key at level team, else the team of the rep at level rep;
- rep: its key at level rep.

A row matches a scope when every field the scope sets equals the row's
attribute, so a company-level row never matches a region scope, and a rep
row matches the region, team and rep of that rep. Within each output group,
only the matching rows of the coarsest level (company, region,
business_unit, team, rep, in that order) are added. At one level, rows that
carry no region or business unit beyond their level are preferred to rows
split by them. Target rows have no account or product, so scopes and grains
on account_id, product_id or product_line leave the target undefined.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd

from cockpit.errors import KpiError
from cockpit.kpi_customers import (
    WALLET_GRAINS,
    WALLET_SCOPE,
    customer_frame,
    wallet_frame,
)
from cockpit.kpi_deals import (
    DEAL_MEASURES,
    deal_history,
    deal_summary,
    open_deal_measures,
)
from cockpit.kpi_periods import PERIODS, Period, resolve_period
from cockpit.kpi_query import KpiRequest as _Request
from cockpit.kpi_query import fact_frame as _fact_frame
from cockpit.kpi_query import time_sql as _time_sql
from cockpit.kpi_query import undefined_measures as _undefined_measures
from cockpit.mart.store import require_tables
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: Units a KPI may have; percent values are fractions (0.25 means 25 %).
UNITS = ("currency", "percent", "count", "ratio", "days")

#: Grains `compute_kpi` can group by. `segment` is the account's segment.
GRAINS = (
    "region",
    "business_unit",
    "team",
    "rep_id",
    "account_id",
    "product_id",
    "product_line",
    "segment",
    "month",
    "quarter",
    "year",
)

#: Calendar grains; their values are ISO labels such as 2026-03, 2026-Q1, 2026.
TIME_GRAINS = ("month", "quarter", "year")

#: Other names `compute_kpi` accepts in `by`, and the grain each stands for.
GRAIN_ALIASES = {"seller": "rep_id", "account": "account_id", "product": "product_id"}

#: Organisation levels and the grains that give one row per member; the
#: company level is the whole scope, so it has no grain.
LEVELS: dict[str, tuple[str, ...]] = {
    "company": (),
    "region": ("region",),
    "business_unit": ("business_unit",),
    "team": ("team",),
    "seller": ("rep_id",),
    "account": ("account_id",),
    "product": ("product_id",),
}

#: Closed deals a stage needs before its own win share replaces the overall rate.
MIN_STAGE_DEALS = 30

#: Target levels from coarsest to finest.
TARGET_LEVELS = ("company", "region", "business_unit", "team", "rep")

#: Days without a change of stage, amount or expected close date after which
#: an open deal counts as stale in the stale_deals KPI.
STALE_DAYS = 30

#: Days of closed deals before the pipeline snapshot that calibrate the win
#: rate, deal size and cycle length of pipeline velocity and required coverage.
RECENT_DAYS = 365

#: Days without a purchase after which a customer counts as lost, and before
#: a purchase for the customer to count as new.
CUSTOMER_LAPSE_DAYS = 365


@dataclass(frozen=True)
class KpiDefinition:
    """One KPI of the registry: its name, label, unit and formula in words.

    `additive` is true when the values of the groups of one `compute_kpi`
    call add up to the value of the whole scope. `grains` lists the grains
    it can be grouped by, filled by the registry from the tables the KPI
    reads. `periods` lists the named periods it supports. `stock` marks a
    KPI read at the pipeline snapshot rather than summed over the period.
    `target_metric` is the metric of the `targets` rows it is compared
    with, None when it has no target.
    """

    name: str
    label: str
    unit: str
    higher_is_better: bool
    additive: bool
    description: str
    grains: tuple[str, ...] = ()
    periods: tuple[str, ...] = PERIODS
    stock: bool = False
    target_metric: str | None = None

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"KPI {self.name}: unknown unit {self.unit!r}")
        unknown = [p for p in self.periods if p not in PERIODS]
        if unknown:
            raise ValueError(f"KPI {self.name}: unknown period(s) {unknown}")


#: KPIs added to the first set: customers, pipeline dynamics, coverage,
#: velocity and behaviour.
NEW_KPIS = (
    KpiDefinition(
        "target_prorated",
        "Revenue target to date",
        "currency",
        True,
        True,
        "Sum of the latest revenue targets that overlap the period counted to "
        "date, each times the share of its days that fall in it. As for target, "
        "a longer target hides the shorter ones of the same level and key.",
    ),
    KpiDefinition(
        "attainment_to_date_pct",
        "Attainment to date",
        "percent",
        True,
        False,
        "Revenue divided by target_prorated. Undefined when that target is "
        "undefined or 0.",
    ),
    KpiDefinition(
        "active_customers",
        "Active customers",
        "count",
        True,
        False,
        "Accounts whose net revenue within the period, summed per group, is positive.",
    ),
    KpiDefinition(
        "new_customers",
        "New customers",
        "count",
        True,
        False,
        "Accounts with a purchase within the period and no purchase in the "
        "CUSTOMER_LAPSE_DAYS before it (within the group). Undefined for a period "
        "starting less than CUSTOMER_LAPSE_DAYS after the mart's first invoice.",
    ),
    KpiDefinition(
        "lost_customers",
        "Lost customers",
        "count",
        False,
        False,
        "Accounts whose last purchase plus CUSTOMER_LAPSE_DAYS falls within the "
        "period with no purchase in between, up to the mart's last invoice date.",
    ),
    KpiDefinition(
        "share_of_wallet",
        "Share of wallet",
        "percent",
        True,
        False,
        "Spend of the 12 months to as_of (else the period end) divided by the "
        "full potential of the same accounts, from cockpit.potential (80th "
        "percentile of peer spend). Accounts count at their own region and "
        "segment and their owner's team and rep.",
        stock=True,
    ),
    KpiDefinition(
        "potential",
        "Full potential",
        "currency",
        True,
        True,
        "Sum of the accounts' 12-month full potential, as for share_of_wallet.",
        stock=True,
    ),
    KpiDefinition(
        "headroom",
        "Headroom",
        "currency",
        True,
        True,
        "Sum of potential minus spend over the accounts, each at least 0.",
        stock=True,
    ),
    KpiDefinition(
        "pipeline_created",
        "Pipeline created",
        "currency",
        True,
        True,
        "Sum of amount, as at the latest snapshot on or before as_of, over the "
        "deals created within the period, whatever their status now.",
    ),
    KpiDefinition(
        "deals_created",
        "Deals created",
        "count",
        True,
        True,
        "Number of deals created within the period.",
    ),
    KpiDefinition(
        "period_pipeline",
        "Pipeline closing in period",
        "currency",
        True,
        True,
        "Sum of amount over the open deals in the pipeline snapshot whose "
        "expected close date is on or before the end of the whole period, "
        "overdue deals included. Without a period end, the whole open pipeline.",
        stock=True,
    ),
    KpiDefinition(
        "pipeline_coverage",
        "Pipeline coverage",
        "ratio",
        True,
        False,
        "period_pipeline divided by the remaining target: the target of the "
        "whole period minus the revenue to date. Undefined without a target or "
        "when nothing remains.",
        stock=True,
    ),
    KpiDefinition(
        "recent_win_rate",
        "Win rate, last 12 months",
        "percent",
        True,
        False,
        "Deals won divided by deals closed over the deals closed in the "
        "RECENT_DAYS up to the pipeline snapshot. Undefined when none closed.",
        stock=True,
    ),
    KpiDefinition(
        "required_coverage",
        "Required coverage",
        "ratio",
        False,
        False,
        "1 divided by recent_win_rate: the pipeline, as a multiple of the "
        "remaining target, that the recent win rate needs. Undefined when that "
        "win rate is undefined or 0.",
        stock=True,
    ),
    KpiDefinition(
        "pipeline_velocity",
        "Pipeline velocity per day",
        "currency",
        True,
        False,
        "Open deals times recent_win_rate times the average won amount, divided "
        "by the mean cycle in days, all from the deals closed in the RECENT_DAYS "
        "up to the snapshot: expected won value per day. Undefined when any "
        "factor is undefined or the cycle is 0.",
        stock=True,
    ),
    KpiDefinition(
        "days_in_stage",
        "Days in stage",
        "days",
        False,
        False,
        "Mean over the open deals in the pipeline snapshot of the days since "
        "the deal entered its current stage, estimated from the snapshots.",
        stock=True,
    ),
    KpiDefinition(
        "slipped_deals",
        "Slipped deals",
        "count",
        False,
        True,
        "Open deals in the pipeline snapshot whose expected close date moved "
        "later at least once between snapshots.",
        stock=True,
    ),
    KpiDefinition(
        "close_date_slips",
        "Close-date slips",
        "count",
        False,
        True,
        "Number of times the expected close dates of the open deals in the "
        "pipeline snapshot moved later between snapshots.",
        stock=True,
    ),
    KpiDefinition(
        "stale_deals",
        "Stale deals",
        "count",
        False,
        True,
        "Open deals in the pipeline snapshot whose stage, amount and expected "
        "close date have not changed for STALE_DAYS days or more (since "
        "creation when no change was seen).",
        stock=True,
    ),
    KpiDefinition(
        "visits",
        "Visits",
        "count",
        True,
        True,
        "Number of activities of type visit dated within the period.",
    ),
    KpiDefinition(
        "calls",
        "Calls",
        "count",
        True,
        True,
        "Number of activities of type call dated within the period.",
    ),
    KpiDefinition(
        "visits_per_seller",
        "Visits per seller",
        "ratio",
        True,
        False,
        "Visits divided by the number of sellers counted as for "
        "activities_per_seller. Undefined with no seller.",
    ),
    KpiDefinition(
        "calls_per_seller",
        "Calls per seller",
        "ratio",
        True,
        False,
        "Calls divided by the number of sellers counted as for "
        "activities_per_seller. Undefined with no seller.",
    ),
)


KPIS: dict[str, KpiDefinition] = {
    kpi.name: kpi
    for kpi in (
        KpiDefinition(
            "revenue",
            "Revenue",
            "currency",
            True,
            True,
            "Sum of net_revenue over the invoice lines dated within the period.",
            target_metric="revenue",
        ),
        KpiDefinition(
            "cost",
            "Cost of sales",
            "currency",
            False,
            True,
            "Sum of cost over the invoice lines dated within the period. "
            "Undefined when any of those lines has no cost.",
        ),
        KpiDefinition(
            "margin",
            "Margin",
            "currency",
            True,
            True,
            "Revenue minus cost. Undefined when cost is undefined.",
        ),
        KpiDefinition(
            "margin_pct",
            "Margin %",
            "percent",
            True,
            False,
            "Margin divided by revenue. Undefined when revenue is 0.",
        ),
        KpiDefinition(
            "revenue_last_year",
            "Revenue last year",
            "currency",
            True,
            True,
            "Revenue of the same period one year earlier: the invoice lines whose "
            "date plus one year falls within the period. An open end stops at the "
            "last invoice date in the mart. Undefined when the mart's first invoice "
            "is in a later month than the start of that earlier period.",
        ),
        KpiDefinition(
            "growth_pct",
            "Growth vs last year",
            "percent",
            True,
            False,
            "Revenue divided by revenue_last_year, minus 1. Undefined when last "
            "year's revenue is undefined, zero or negative.",
        ),
        KpiDefinition(
            "target",
            "Revenue target",
            "currency",
            True,
            True,
            "Sum of the latest version of the revenue targets whose period lies "
            "within the period, read at the coarsest level that matches the scope "
            "(see the module documentation of cockpit.kpi).",
        ),
        KpiDefinition(
            "attainment_pct",
            "Target attainment",
            "percent",
            True,
            False,
            "Revenue divided by target. Undefined when the target is undefined or 0.",
        ),
        KpiDefinition(
            "won_value",
            "Won value",
            "currency",
            True,
            True,
            "Sum of amount over the deals won with a close date within the period.",
        ),
        KpiDefinition(
            "won_count",
            "Deals won",
            "count",
            True,
            True,
            "Number of deals won with a close date within the period.",
        ),
        KpiDefinition(
            "lost_count",
            "Deals lost",
            "count",
            False,
            True,
            "Number of deals lost with a close date within the period.",
        ),
        KpiDefinition(
            "win_rate",
            "Win rate",
            "percent",
            True,
            False,
            "Deals won divided by deals won plus deals lost, over the deals closed "
            "within the period. Undefined when none closed.",
        ),
        KpiDefinition(
            "avg_deal_size",
            "Average deal size",
            "currency",
            True,
            False,
            "Won value divided by the number of deals won. Undefined when none was won.",
        ),
        KpiDefinition(
            "sales_cycle_days",
            "Sales cycle",
            "days",
            False,
            False,
            "Mean number of days from created_date to closed_date over the deals won "
            "within the period. Deals lacking either date are left out.",
        ),
        KpiDefinition(
            "open_pipeline",
            "Open pipeline",
            "currency",
            True,
            True,
            "Sum of amount over the open deals in the pipeline snapshot (the latest "
            "snapshot on or before as_of). Deals without an amount add nothing.",
            stock=True,
        ),
        KpiDefinition(
            "open_deals",
            "Open deals",
            "count",
            True,
            True,
            "Number of open deals in the pipeline snapshot.",
            stock=True,
        ),
        KpiDefinition(
            "weighted_pipeline",
            "Weighted pipeline",
            "currency",
            True,
            True,
            "Sum over the open deals in the pipeline snapshot of amount times the "
            "win probability of the deal's stage, calibrated by stage_probabilities "
            "on the closed deals of the requested scope, per account segment where "
            "the segment has MIN_STAGE_DEALS closed deals seen at the stage.",
            stock=True,
        ),
        KpiDefinition(
            "activities",
            "Activities",
            "count",
            True,
            True,
            "Number of activities (customer interactions and internal meetings) "
            "dated within the period.",
        ),
        KpiDefinition(
            "activities_per_seller",
            "Activities per seller",
            "ratio",
            True,
            False,
            "Activities divided by the number of sellers (reps with role seller) in "
            "scope whose active dates overlap the period. Undefined with no seller.",
        ),
        KpiDefinition(
            "customer_time_share",
            "Customer time share",
            "percent",
            True,
            False,
            "Minutes of activities with an account divided by the minutes of all "
            "activities within the period. Undefined when no minutes are recorded.",
        ),
        *NEW_KPIS,
    )
}


# --- sources -----------------------------------------------------------------


def _sales_frame(req: _Request, by: tuple[str, ...]) -> pd.DataFrame:
    return _fact_frame(
        req,
        by,
        relation="transactions",
        date_expr="f.date",
        measures=(
            "COALESCE(sum(f.net_revenue), 0) AS revenue, "
            "CASE WHEN count(f.cost) = count(*) THEN COALESCE(sum(f.cost), 0) END AS cost"
        ),
        start=req.start,
        end=req.end,
    )


def _sales_last_year_frame(req: _Request, by: tuple[str, ...]) -> pd.DataFrame:
    # Invoice lines are moved forward one year, so the requested period and
    # its month, quarter and year labels select and group last year's lines.
    _, last = req.date_span("transactions")
    return _fact_frame(
        req,
        by,
        relation="transactions",
        date_expr="CAST(f.date + INTERVAL 1 YEAR AS DATE)",
        measures="COALESCE(sum(f.net_revenue), 0) AS revenue_last_year",
        start=req.start,
        end=req.end if req.end is not None else last,
    )


def _closed_frame(req: _Request, by: tuple[str, ...]) -> pd.DataFrame:
    relation, params = req.deal_states()
    return _fact_frame(
        req,
        by,
        relation=relation,
        relation_params=params,
        date_expr="f.closed_date",
        filters=["f.status IN ('won', 'lost')"],
        measures=(
            "COALESCE(sum(f.amount) FILTER (WHERE f.status = 'won'), 0) AS won_value, "
            "count(*) FILTER (WHERE f.status = 'won') AS won_count, "
            "count(*) FILTER (WHERE f.status = 'lost') AS lost_count, "
            "avg(date_diff('day', f.created_date, f.closed_date)) "
            "FILTER (WHERE f.status = 'won') AS sales_cycle_days"
        ),
        start=req.start,
        end=req.end,
    )


def _pipeline_frame(req: _Request, by: tuple[str, ...]) -> pd.DataFrame:
    measures = ["open_pipeline", "open_deals", "weighted_pipeline", "period_pipeline"]
    snapshot = req.snapshot_date()
    if snapshot is None:
        logger.warning(
            "no pipeline snapshot on or before %s; pipeline KPIs are undefined",
            req.as_of,
        )
        return _undefined_measures(by, measures)
    if req.period_end is None:
        in_period = "TRUE"
    else:
        # A date object formats as YYYY-MM-DD, so the literal is safe.
        in_period = f"f.expected_close_date <= DATE '{req.period_end.isoformat()}'"
    by_stage = _fact_frame(
        req,
        by,
        relation="opportunities",
        date_expr="f.expected_close_date",
        filters=["f.snapshot_date = ?", "f.status = 'open'"],
        filter_params=[snapshot],
        measures=(
            "COALESCE(sum(f.amount), 0) AS open_pipeline, count(*) AS open_deals, "
            f"COALESCE(sum(f.amount) FILTER (WHERE {in_period}), 0) AS period_pipeline"
        ),
        extra_group=["f.stage AS _stage", "a.segment AS _segment"],
        joins=["LEFT JOIN accounts a ON a.account_id = f.account_id"],
    )
    by_stage["weighted_pipeline"] = by_stage["open_pipeline"] * _deal_probability(
        req.probabilities(), by_stage["_segment"], by_stage["_stage"]
    )
    if not by:
        return pd.DataFrame(
            {
                "open_pipeline": [by_stage["open_pipeline"].sum()],
                "open_deals": [by_stage["open_deals"].sum()],
                "weighted_pipeline": [by_stage["weighted_pipeline"].sum(min_count=1)]
                if len(by_stage)
                else [0.0],
                "period_pipeline": [by_stage["period_pipeline"].sum()],
            }
        )
    grouped = by_stage.groupby(list(by), dropna=False, sort=False)
    return pd.DataFrame(
        {
            "open_pipeline": grouped["open_pipeline"].sum(),
            "open_deals": grouped["open_deals"].sum(),
            "weighted_pipeline": grouped["weighted_pipeline"].sum(min_count=1),
            "period_pipeline": grouped["period_pipeline"].sum(),
        }
    ).reset_index()


def _deal_probability(
    probabilities: pd.DataFrame, segments: pd.Series, stages: pd.Series
) -> pd.Series:
    """Look up the win probability of each (segment, stage) pair.

    A segment missing from `probabilities` (or empty) gets the stage's
    probability over all segments.
    """
    per_stage = (
        probabilities.drop_duplicates("stage")
        .set_index("stage")["stage_probability"]
        .astype("float64")
    )
    known = probabilities.dropna(subset=["segment"]).set_index(["segment", "stage"])[
        "probability"
    ]
    pairs = pd.MultiIndex.from_arrays([segments, stages])
    by_segment = pd.Series(known.reindex(pairs).to_numpy(), index=stages.index)
    fallback = stages.map(per_stage)
    return by_segment.fillna(fallback).astype("float64")


def _activity_frame(req: _Request, by: tuple[str, ...]) -> pd.DataFrame:
    return _fact_frame(
        req,
        by,
        relation="activities",
        date_expr="f.date",
        measures=(
            "count(*) AS activities, "
            "COALESCE(sum(f.duration_minutes) FILTER (WHERE f.account_id IS NOT NULL), 0) "
            "AS customer_minutes, "
            "COALESCE(sum(f.duration_minutes), 0) AS activity_minutes, "
            "count(*) FILTER (WHERE f.type = 'visit') AS visits, "
            "count(*) FILTER (WHERE f.type = 'call') AS calls"
        ),
        start=req.start,
        end=req.end,
    )


def _recent_closed_frame(req: _Request, by: tuple[str, ...]) -> pd.DataFrame:
    """Closed deals of the RECENT_DAYS up to the pipeline snapshot, per group."""
    measures = ["recent_won", "recent_lost", "recent_won_value", "recent_cycle_days"]
    snapshot = req.snapshot_date()
    if snapshot is None:
        return _undefined_measures(by, measures)
    relation, params = req.deal_states()
    return _fact_frame(
        req,
        by,
        relation=relation,
        relation_params=params,
        date_expr="f.closed_date",
        filters=["f.status IN ('won', 'lost')"],
        measures=(
            "count(*) FILTER (WHERE f.status = 'won') AS recent_won, "
            "count(*) FILTER (WHERE f.status = 'lost') AS recent_lost, "
            "COALESCE(sum(f.amount) FILTER (WHERE f.status = 'won'), 0) "
            "AS recent_won_value, "
            "avg(date_diff('day', f.created_date, f.closed_date)) "
            "FILTER (WHERE f.status = 'won') AS recent_cycle_days"
        ),
        start=snapshot - timedelta(days=RECENT_DAYS - 1),
        end=snapshot,
    )


def _created_frame(req: _Request, by: tuple[str, ...]) -> pd.DataFrame:
    relation, params = req.deal_states()
    return _fact_frame(
        req,
        by,
        relation=relation,
        relation_params=params,
        date_expr="f.created_date",
        measures=(
            "COALESCE(sum(f.amount), 0) AS pipeline_created, count(*) AS deals_created"
        ),
        start=req.start,
        end=req.end,
    )


def _customer_frame(req: _Request, by: tuple[str, ...]) -> pd.DataFrame:
    return customer_frame(req, by, CUSTOMER_LAPSE_DAYS)


def _deal_frame(req: _Request, by: tuple[str, ...]) -> pd.DataFrame:
    summary = req.cached(
        ("deal_summary",),
        lambda: deal_summary(deal_history(req.con, req.scope, req.as_of)),
    )
    return open_deal_measures(summary, req.snapshot_date(), by, STALE_DAYS)


def _time_buckets(time_grains: Sequence[str], start: date, end: date) -> pd.DataFrame:
    """Return the month, quarter or year groups of [start, end] and their bounds."""
    rows = []
    for month in pd.period_range(start, end, freq="M"):
        rows.append(
            {
                "month": str(month),
                "quarter": f"{month.year}-Q{month.quarter}",
                "year": str(month.year),
                "bucket_start": max(month.start_time.normalize(), pd.Timestamp(start)),
                "bucket_end": min(month.end_time.normalize(), pd.Timestamp(end)),
            }
        )
    months = pd.DataFrame(rows)
    return (
        months.groupby(list(time_grains), sort=False)
        .agg(bucket_start=("bucket_start", "min"), bucket_end=("bucket_end", "max"))
        .reset_index()
    )


def _seller_frame(req: _Request, by: tuple[str, ...]) -> pd.DataFrame:
    """Count the sellers in scope whose active dates overlap each group's dates.

    An open start or end of the period falls back to the first or last
    activity in the mart, and a rep without active dates counts as active.
    """
    first, last = req.date_span("activities")
    start = req.start if req.start is not None else first
    end = req.end if req.end is not None else last
    scope_sql, scope_params = req.scope.where("s.")
    reps = req.con.execute(
        "SELECT s.rep_id, s.region, s.team, s.active_from, s.active_to "
        f"FROM reps s WHERE s.role = 'seller' AND {scope_sql}",
        scope_params,
    ).df()

    time_grains = [g for g in by if g in TIME_GRAINS]
    if time_grains:
        if start is None or end is None:
            return pd.DataFrame({**{g: [] for g in by}, "sellers": []})
        buckets = _time_buckets(time_grains, start, end)
    else:
        buckets = pd.DataFrame(
            {
                "bucket_start": [pd.NaT if start is None else pd.Timestamp(start)],
                "bucket_end": [pd.NaT if end is None else pd.Timestamp(end)],
            }
        )

    pairs = buckets.merge(reps, how="cross")
    active_from = pd.to_datetime(pairs["active_from"])
    active_to = pd.to_datetime(pairs["active_to"])
    started = (
        active_from.isna()
        | pairs["bucket_end"].isna()
        | (active_from <= pairs["bucket_end"])
    )
    not_ended = (
        active_to.isna()
        | pairs["bucket_start"].isna()
        | (active_to >= pairs["bucket_start"])
    )
    pairs = pairs[started & not_ended]

    if not by:
        return pd.DataFrame({"sellers": [pairs["rep_id"].nunique()]})
    return (
        pairs.groupby(list(by), dropna=False, sort=False)["rep_id"]
        .nunique()
        .rename("sellers")
        .reset_index()
    )


def _target_frame(
    req: _Request, by: tuple[str, ...], prorate: bool = False
) -> pd.DataFrame:
    # The selection rule is described in the module documentation. With
    # `prorate`, rows overlapping [start, end] count with the share of their
    # days inside it; a longer row still hides the shorter rows it covers.
    start_labels = _time_sql("t.period_start")
    end_labels = _time_sql("t.period_end")
    first, last = (req.start, req.end) if prorate else (req.start, req.period_end)

    # A row enters when its period lies within [start, end] and, for each
    # month, quarter or year grain, within one group. Rows outside are left
    # out before longer periods hide shorter ones.
    period = [f"{start_labels[g]} = {end_labels[g]}" for g in by if g in TIME_GRAINS]
    params: list = [req.target_metric]
    if prorate:
        if first is not None:
            period.append("t.period_end >= ?")
            params.append(first)
        if last is not None:
            period.append("t.period_start <= ?")
            params.append(last)
    else:
        if first is not None:
            period.append("t.period_start >= ?")
            params.append(first)
        if last is not None:
            period.append("t.period_end <= ?")
            params.append(last)
    period_sql = " AND ".join(period) or "TRUE"
    if prorate:
        # Date objects format as YYYY-MM-DD, so the literals are safe.
        low = f"DATE '{first.isoformat()}'" if first is not None else "k.period_start"
        high = f"DATE '{last.isoformat()}'" if last is not None else "k.period_end"
        value_sql = (
            f"k.value * (date_diff('day', greatest(k.period_start, {low}), "
            f"least(k.period_end, {high})) + 1) "
            "/ (date_diff('day', k.period_start, k.period_end) + 1)"
        )
    else:
        value_sql = "k.value"

    level_rank = " ".join(
        f"WHEN '{level}' THEN {rank}" for rank, level in enumerate(TARGET_LEVELS)
    )
    groups = [f"t.{g}" if g not in TIME_GRAINS else start_labels[g] for g in by]

    where = [f"t.{g} IS NOT NULL" for g in by if g not in TIME_GRAINS]
    for scope_field in fields(req.scope):
        value = getattr(req.scope, scope_field.name)
        if value is not None:
            where.append(f"t.{scope_field.name} = ?")
            params.append(value)
    where_sql = " AND ".join(where) or "TRUE"

    partition = ", ".join(groups)
    select_groups = ", ".join(
        f"{sql} AS {g}" for sql, g in zip(groups, by, strict=True)
    )
    group_by = (
        " GROUP BY " + ", ".join(str(i + 1) for i in range(len(by))) if by else ""
    )
    sql = f"""
        WITH latest AS (
            SELECT * FROM targets
            WHERE metric = ?
            QUALIFY version = max(version) OVER (
                PARTITION BY period, level, key, region, business_unit, metric
            )
        ),
        dated AS (
            SELECT * FROM latest t WHERE {period_sql}
        ),
        kept AS (
            SELECT a.* FROM dated a
            WHERE NOT EXISTS (
                SELECT 1 FROM dated b
                WHERE b.level = a.level AND b.key = a.key
                  AND b.region IS NOT DISTINCT FROM a.region
                  AND b.business_unit IS NOT DISTINCT FROM a.business_unit
                  AND b.period_start <= a.period_start
                  AND b.period_end >= a.period_end
                  AND (b.period_start < a.period_start OR b.period_end > a.period_end)
            )
        ),
        resolved AS (
            SELECT
                {value_sql} AS value,
                k.period_start,
                k.period_end,
                3 * (CASE k.level {level_rank} END)
                  + CASE WHEN k.region IS NOT NULL AND k.level <> 'region' THEN 1 ELSE 0 END
                  + CASE WHEN k.business_unit IS NOT NULL AND k.level <> 'business_unit'
                         THEN 1 ELSE 0 END AS specificity,
                COALESCE(k.region, CASE WHEN k.level = 'region' THEN k.key END, r.region)
                    AS region,
                COALESCE(k.business_unit, CASE WHEN k.level = 'business_unit' THEN k.key END)
                    AS business_unit,
                CASE k.level WHEN 'team' THEN k.key WHEN 'rep' THEN r.team END AS team,
                CASE WHEN k.level = 'rep' THEN k.key END AS rep_id
            FROM kept k
            LEFT JOIN reps r ON k.level = 'rep' AND r.rep_id = k.key
            WHERE k.level IN ({", ".join(f"'{level}'" for level in TARGET_LEVELS)})
        ),
        matched AS (
            SELECT t.*, min(t.specificity) OVER ({"PARTITION BY " + partition if by else ""})
                AS best
            FROM resolved t
            WHERE {where_sql}
        )
        SELECT {select_groups + ", " if by else ""}sum(t.value) AS target
        FROM matched t
        WHERE t.specificity = t.best{group_by}
    """
    logger.debug("target query %s with %s", sql, params)
    return req.con.execute(sql, params).df()


@dataclass(frozen=True)
class _Source:
    """A relation that KPIs read, the grains and scope fields it supports, and
    the value of each of its measures for a group without rows."""

    read: Callable[[_Request, tuple[str, ...]], pd.DataFrame]
    tables: tuple[str, ...]
    grains: tuple[str, ...]
    scope_fields: tuple[str, ...]
    empty: Mapping[str, float]


_ALL_SCOPE = tuple(f.name for f in fields(Scope))
_NON_TIME_GRAINS = tuple(g for g in GRAINS if g not in TIME_GRAINS)

_SOURCES: dict[str, _Source] = {
    "sales": _Source(
        _sales_frame,
        ("transactions",),
        GRAINS,
        _ALL_SCOPE,
        {"revenue": 0.0, "cost": 0.0},
    ),
    "sales_last_year": _Source(
        _sales_last_year_frame,
        ("transactions",),
        GRAINS,
        _ALL_SCOPE,
        {"revenue_last_year": 0.0},
    ),
    "closed": _Source(
        _closed_frame,
        ("opportunities",),
        GRAINS,
        _ALL_SCOPE,
        {"won_value": 0.0, "won_count": 0, "lost_count": 0, "sales_cycle_days": np.nan},
    ),
    "pipeline": _Source(
        _pipeline_frame,
        ("opportunities",),
        GRAINS,
        _ALL_SCOPE,
        {"open_pipeline": 0.0, "open_deals": 0, "weighted_pipeline": 0.0},
    ),
    "activity": _Source(
        _activity_frame,
        ("activities", "reps"),
        ("region", "team", "rep_id", "account_id", "segment", *TIME_GRAINS),
        ("region", "team", "rep_id", "account_id"),
        {
            "activities": 0,
            "customer_minutes": 0.0,
            "activity_minutes": 0.0,
            "visits": 0,
            "calls": 0,
        },
    ),
    "sellers": _Source(
        _seller_frame,
        ("activities", "reps"),
        ("region", "team", "rep_id", *TIME_GRAINS),
        ("region", "team", "rep_id"),
        {"sellers": 0},
    ),
    "targets": _Source(
        _target_frame,
        ("targets", "reps"),
        ("region", "business_unit", "team", "rep_id", *TIME_GRAINS),
        ("region", "business_unit", "team", "rep_id"),
        {"target": np.nan},
    ),
    "targets_prorated": _Source(
        lambda req, by: _target_frame(req, by, prorate=True).rename(
            columns={"target": "target_prorated"}
        ),
        ("targets", "reps"),
        ("region", "business_unit", "team", "rep_id"),
        ("region", "business_unit", "team", "rep_id"),
        {"target_prorated": np.nan},
    ),
    "recent": _Source(
        _recent_closed_frame,
        ("opportunities",),
        _NON_TIME_GRAINS,
        _ALL_SCOPE,
        {
            "recent_won": 0,
            "recent_lost": 0,
            "recent_won_value": 0.0,
            "recent_cycle_days": np.nan,
        },
    ),
    "created": _Source(
        _created_frame,
        ("opportunities",),
        GRAINS,
        _ALL_SCOPE,
        {"pipeline_created": 0.0, "deals_created": 0},
    ),
    "customers": _Source(
        _customer_frame,
        ("transactions",),
        GRAINS,
        _ALL_SCOPE,
        {"active_customers": 0.0, "new_customers": 0.0, "lost_customers": 0.0},
    ),
    "wallet": _Source(
        wallet_frame,
        ("transactions", "accounts", "reps"),
        WALLET_GRAINS,
        WALLET_SCOPE,
        {"wallet_spend": 0.0, "potential": 0.0, "headroom": 0.0},
    ),
    "deals": _Source(
        _deal_frame,
        ("opportunities", "reps", "products", "accounts"),
        GRAINS,
        _ALL_SCOPE,
        dict(DEAL_MEASURES),
    ),
}


# --- recipes -----------------------------------------------------------------


def _divide(
    numerator: pd.Series, denominator: pd.Series, positive_only: bool = False
) -> pd.Series:
    """Divide element-wise, giving NaN where the denominator is 0 (or not positive)."""
    num = numerator.astype("float64")
    den = denominator.astype("float64")
    valid = den > 0 if positive_only else den != 0
    return (num / den.where(valid)).where(valid)


def _recent_win_rate(m: pd.DataFrame) -> pd.Series:
    return _divide(m["recent_won"], m["recent_won"] + m["recent_lost"])


def _velocity(m: pd.DataFrame) -> pd.Series:
    """Open deals x recent win rate x recent average won amount / recent cycle."""
    average_won = _divide(m["recent_won_value"], m["recent_won"])
    per_cycle = m["open_deals"].astype("float64") * _recent_win_rate(m) * average_won
    return _divide(per_cycle, m["recent_cycle_days"].astype("float64"))


@dataclass(frozen=True)
class _Recipe:
    """Sources a KPI reads and how its value follows from their measures."""

    sources: tuple[str, ...]
    value: Callable[[pd.DataFrame], pd.Series]
    time_grains: bool = True


_RECIPES: dict[str, _Recipe] = {
    "revenue": _Recipe(("sales",), lambda m: m["revenue"]),
    "cost": _Recipe(("sales",), lambda m: m["cost"]),
    "margin": _Recipe(("sales",), lambda m: m["revenue"] - m["cost"]),
    "margin_pct": _Recipe(
        ("sales",), lambda m: _divide(m["revenue"] - m["cost"], m["revenue"])
    ),
    "revenue_last_year": _Recipe(
        ("sales_last_year",), lambda m: m["revenue_last_year"]
    ),
    "growth_pct": _Recipe(
        ("sales", "sales_last_year"),
        lambda m: _divide(m["revenue"], m["revenue_last_year"], positive_only=True) - 1,
    ),
    "target": _Recipe(("targets",), lambda m: m["target"]),
    "attainment_pct": _Recipe(
        ("sales", "targets"), lambda m: _divide(m["revenue"], m["target"])
    ),
    "won_value": _Recipe(("closed",), lambda m: m["won_value"]),
    "won_count": _Recipe(("closed",), lambda m: m["won_count"]),
    "lost_count": _Recipe(("closed",), lambda m: m["lost_count"]),
    "win_rate": _Recipe(
        ("closed",),
        lambda m: _divide(m["won_count"], m["won_count"] + m["lost_count"]),
    ),
    "avg_deal_size": _Recipe(
        ("closed",), lambda m: _divide(m["won_value"], m["won_count"])
    ),
    "sales_cycle_days": _Recipe(("closed",), lambda m: m["sales_cycle_days"]),
    "open_pipeline": _Recipe(("pipeline",), lambda m: m["open_pipeline"]),
    "open_deals": _Recipe(("pipeline",), lambda m: m["open_deals"]),
    "weighted_pipeline": _Recipe(("pipeline",), lambda m: m["weighted_pipeline"]),
    "activities": _Recipe(("activity",), lambda m: m["activities"]),
    "activities_per_seller": _Recipe(
        ("activity", "sellers"), lambda m: _divide(m["activities"], m["sellers"])
    ),
    "customer_time_share": _Recipe(
        ("activity",),
        lambda m: _divide(m["customer_minutes"], m["activity_minutes"]),
    ),
    "target_prorated": _Recipe(("targets_prorated",), lambda m: m["target_prorated"]),
    "attainment_to_date_pct": _Recipe(
        ("sales", "targets_prorated"),
        lambda m: _divide(m["revenue"], m["target_prorated"]),
    ),
    "active_customers": _Recipe(("customers",), lambda m: m["active_customers"]),
    "new_customers": _Recipe(("customers",), lambda m: m["new_customers"]),
    "lost_customers": _Recipe(("customers",), lambda m: m["lost_customers"]),
    "share_of_wallet": _Recipe(
        ("wallet",), lambda m: _divide(m["wallet_spend"], m["potential"])
    ),
    "potential": _Recipe(("wallet",), lambda m: m["potential"]),
    "headroom": _Recipe(("wallet",), lambda m: m["headroom"]),
    "pipeline_created": _Recipe(("created",), lambda m: m["pipeline_created"]),
    "deals_created": _Recipe(("created",), lambda m: m["deals_created"]),
    "period_pipeline": _Recipe(("pipeline",), lambda m: m["period_pipeline"]),
    "pipeline_coverage": _Recipe(
        ("pipeline", "targets", "sales"),
        lambda m: _divide(
            m["period_pipeline"], m["target"] - m["revenue"], positive_only=True
        ),
        time_grains=False,
    ),
    "recent_win_rate": _Recipe(("recent",), lambda m: _recent_win_rate(m)),
    "required_coverage": _Recipe(
        ("recent",),
        lambda m: _divide(pd.Series(1.0, index=m.index), _recent_win_rate(m)),
    ),
    "pipeline_velocity": _Recipe(("pipeline", "recent"), lambda m: _velocity(m)),
    "days_in_stage": _Recipe(
        ("deals",), lambda m: _divide(m["stage_days_sum"], m["stage_days_count"])
    ),
    "slipped_deals": _Recipe(("deals",), lambda m: m["slipped_deals"]),
    "close_date_slips": _Recipe(("deals",), lambda m: m["close_date_slips"]),
    "stale_deals": _Recipe(("deals",), lambda m: m["stale_deals"]),
    "visits": _Recipe(("activity",), lambda m: m["visits"]),
    "calls": _Recipe(("activity",), lambda m: m["calls"]),
    "visits_per_seller": _Recipe(
        ("activity", "sellers"), lambda m: _divide(m["visits"], m["sellers"])
    ),
    "calls_per_seller": _Recipe(
        ("activity", "sellers"), lambda m: _divide(m["calls"], m["sellers"])
    ),
}


def _fill_grains() -> None:
    """Store in each registry entry the grains its sources support."""
    for name, kpi in list(KPIS.items()):
        KPIS[name] = replace(kpi, grains=_grains_of(name))


def _grains_of(name: str) -> tuple[str, ...]:
    """Return the grains every source of KPI `name` can be grouped by."""
    recipe = _RECIPES[name]
    sources = [_SOURCES[s] for s in recipe.sources]
    return tuple(
        g
        for g in GRAINS
        if all(g in s.grains for s in sources)
        and (recipe.time_grains or g not in TIME_GRAINS)
    )


_fill_grains()


def _scope_gaps(name: str, scope: Scope) -> list[str]:
    """Return the scope fields set in `scope` that a source of `name` cannot filter."""
    sources = [_SOURCES[s] for s in _RECIPES[name].sources]
    return [
        f.name
        for f in fields(scope)
        if getattr(scope, f.name) is not None
        and any(f.name not in s.scope_fields for s in sources)
    ]


# --- computation -------------------------------------------------------------


def _check_name(name: str) -> None:
    if name not in KPIS:
        raise KpiError(f"unknown KPI {name!r}; choose one of {', '.join(KPIS)}")


def _check_grains(name: str, by: tuple[str, ...]) -> None:
    for grain in by:
        if grain not in GRAINS:
            raise KpiError(f"unknown grain {grain!r}; choose from {', '.join(GRAINS)}")
    repeated = sorted({g for g in by if by.count(g) > 1})
    if repeated:
        raise KpiError(f"grain {', '.join(repeated)} given twice in by={list(by)}")
    allowed = _grains_of(name)
    for grain in by:
        if grain not in allowed:
            raise KpiError(
                f"KPI {name} cannot be grouped by {grain}; its grains are "
                f"{', '.join(allowed)}"
            )


def _check_period(start: date | None, end: date | None) -> None:
    if start is not None and end is not None and start > end:
        raise KpiError(
            f"period start {start} is after its end {end}; swap the two dates"
        )


def _bucket_start(grain: str, label: str) -> date:
    """First day of a month, quarter or year label such as 2026-03 or 2026-Q2."""
    if grain == "month":
        return date(int(label[:4]), int(label[5:7]), 1)
    if grain == "quarter":
        return date(int(label[:4]), 3 * int(label[-1]) - 2, 1)
    return date(int(label), 1, 1)


def _mask_uncovered(req: _Request, merged: pd.DataFrame, by: tuple[str, ...]) -> None:
    """Set revenue_last_year to NaN where the mart does not reach back a year.

    The earlier period of a group starts one year before the later of the
    requested start (else the first invoice) and the group's month, quarter
    or year. It counts as covered when the mart's first invoice falls in that
    month or earlier, so an export that starts on 3 January covers January.
    """
    first, _ = req.date_span("transactions")
    if first is None:
        merged["revenue_last_year"] = np.nan
        return
    window_start = req.start if req.start is not None else first
    time_grains = [g for g in by if g in TIME_GRAINS]
    covered = []
    for _, row in merged.iterrows():
        begin = pd.Timestamp(window_start)
        for grain in time_grains:
            label = row[grain]
            if pd.isna(label):
                continue
            begin = max(begin, pd.Timestamp(_bucket_start(grain, str(label))))
        earlier = begin - pd.DateOffset(years=1)
        covered.append((earlier.year, earlier.month) >= (first.year, first.month))
    merged.loc[~np.array(covered, dtype=bool), "revenue_last_year"] = np.nan


def _merge_sources(
    req: _Request, source_names: tuple[str, ...], by: tuple[str, ...]
) -> pd.DataFrame:
    """Read each source once per request and join their measures on `by`."""
    frames = []
    for source_name in source_names:
        source = _SOURCES[source_name]
        key = ("source", source_name, by)
        if key not in req.cache:
            require_tables(req.con, source.tables)
            req.cache[key] = source.read(req, by)
        frames.append((source, req.cache[key]))

    if not by:
        return pd.concat([frame.reset_index(drop=True) for _, frame in frames], axis=1)

    # A source with no rows, or only missing keys, can come back with a
    # float key column; align the key types so the outer join works.
    for column in by:
        if len({str(frame[column].dtype) for _, frame in frames}) > 1:
            frames = [
                (source, frame.astype({column: "object"})) for source, frame in frames
            ]
    merged = None
    for index, (_, frame) in enumerate(frames):
        marked = frame.assign(**{f"_in_{index}": True})
        merged = (
            marked
            if merged is None
            else merged.merge(marked, on=list(by), how="outer", sort=False)
        )
    for index, (source, _) in enumerate(frames):
        absent = merged[f"_in_{index}"].isna()
        for measure, empty in source.empty.items():
            merged.loc[absent, measure] = empty
        merged = merged.drop(columns=f"_in_{index}")
    return merged


def _undefined_frame(name: str, by: tuple[str, ...]) -> pd.DataFrame:
    if by:
        return pd.DataFrame(
            {**{g: [] for g in by}, name: pd.Series([], dtype="float64")}
        )
    return pd.DataFrame({name: [np.nan]})


def _compute(req: _Request, name: str, by: tuple[str, ...]) -> pd.DataFrame:
    gaps = _scope_gaps(name, req.scope)
    if gaps:
        tables = sorted(
            {t for source in _RECIPES[name].sources for t in _SOURCES[source].tables}
        )
        logger.warning(
            "KPI %s is undefined for a scope on %s because the tables it reads (%s) "
            "cannot be filtered that way; remove that part of the scope to get a value",
            name,
            ", ".join(gaps),
            ", ".join(tables),
        )
        return _undefined_frame(name, by)
    recipe = _RECIPES[name]
    merged = _merge_sources(req, recipe.sources, by)
    if "sales_last_year" in recipe.sources:
        merged = merged.copy()
        _mask_uncovered(req, merged, by)
    result = merged[list(by)].copy()
    values = recipe.value(merged)
    if KPIS[name].unit == "count" and not values.isna().any():
        values = values.astype("int64")
    else:
        values = values.astype("float64")
    result[name] = values.to_numpy()
    if by:
        result = result.sort_values(list(by), na_position="last", kind="stable")
    return result.reset_index(drop=True)


def _request(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None,
    start: date | None,
    end: date | None,
    as_of: date | None,
    period: str | Period | None,
) -> _Request:
    """Build the request of one call, resolving a named period if given."""
    if period is None:
        _check_period(start, end)
        return _Request(con, scope or Scope(), start, end, as_of)
    if start is not None or end is not None:
        raise KpiError(
            f"pass either period={period!r} or start/end, not both; drop start and "
            "end to use the named period"
        )
    if isinstance(period, str):
        if as_of is None:
            raise KpiError(
                f"period {period!r} needs as_of, the date it is read at; pass "
                "as_of=date(...)"
            )
        period = resolve_period(period, as_of)
    return _Request(
        con,
        scope or Scope(),
        period.start,
        period.to_date_end,
        period.as_of,
        period_end=period.end,
    )


def _normalise_by(by: Sequence[str] | str) -> tuple[str, ...]:
    by = (by,) if isinstance(by, str) else tuple(by)
    return tuple(GRAIN_ALIASES.get(grain, grain) for grain in by)


def compute_kpi(
    con: duckdb.DuckDBPyConnection,
    name: str,
    by: Sequence[str] = (),
    scope: Scope | None = None,
    start: date | None = None,
    end: date | None = None,
    as_of: date | None = None,
    period: str | Period | None = None,
) -> pd.DataFrame:
    """Compute KPI `name` for `scope`, grouped by the grains in `by`.

    Returns a frame with columns [*by, name] and one row per group that has
    data in any source the KPI reads, sorted by `by`. Without `by` the frame
    has one row. Month, quarter and year values are ISO labels (2026-03,
    2026-Q1, 2026). `by` also accepts seller, account and product for
    rep_id, account_id and product_id, and the columns keep the grain name.

    `start` and `end` bound the period, both inclusive, and None leaves that
    side open. `as_of` picks the pipeline snapshot, which is the latest
    snapshot_date on or before it (default: the latest in the mart). It also
    fixes the state of closed deals. The unit of the value is
    `KPIS[name].unit`, and percent values are fractions.

    `period` replaces `start` and `end` with a named period (one of
    PERIODS, read at `as_of`, which is then required) or a Period. Flows are
    then counted from the period's first day to the earlier of its last day
    and as_of, while target, period_pipeline and pipeline_coverage use the
    whole period.

    A scope on a field that a source of the KPI lacks (business unit for
    activities, account for targets) leaves the KPI undefined. The result is
    then NaN without `by` and an empty frame with it, and a warning is
    logged.

    Raises KpiError for an unknown KPI, grain or period, a grain the KPI
    cannot be grouped by, a start after the end, or a period given with
    start or end or without as_of. Raises MartError when a table the KPI
    reads is missing.
    """
    _check_name(name)
    by = _normalise_by(by)
    _check_grains(name, by)
    req = _request(con, scope, start, end, as_of, period)
    frame = _compute(req, name, by)
    # Grain values are labels: a grain with only missing values (an export
    # without sellers) must not come back as a float column, or callers that
    # join two KPIs on it fail.
    for column in by:
        if column in frame and pd.api.types.is_float_dtype(frame[column].dtype):
            frame[column] = frame[column].astype("object")
    return frame


def kpi_values(
    con: duckdb.DuckDBPyConnection,
    names: Sequence[str],
    scope: Scope | None = None,
    start: date | None = None,
    end: date | None = None,
    as_of: date | None = None,
    period: str | Period | None = None,
) -> dict[str, float | None]:
    """Compute one value per KPI in `names` for the whole scope and period.

    Arguments mean what they mean for `compute_kpi`; each source table is read
    once for all names. Returns the values in the order of `names`, with None
    for an undefined value. Raises KpiError for an unknown name or period,
    or a start after the end.
    """
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        _check_name(name)
    req = _request(con, scope, start, end, as_of, period)
    values: dict[str, float | None] = {}
    for name in names:
        value = _compute(req, name, ())[name].iloc[0]
        values[name] = None if pd.isna(value) else float(value)
    return values


def _shift_labels(frame: pd.DataFrame, by: tuple[str, ...], years: int) -> None:
    """Move month, quarter and year labels in `frame` by `years` years."""
    for grain in by:
        if grain in TIME_GRAINS:
            frame[grain] = [
                None if pd.isna(label) else f"{int(label[:4]) + years}{label[4:]}"
                for label in frame[grain]
            ]


def compare_kpi(
    con: duckdb.DuckDBPyConnection,
    name: str,
    by: Sequence[str] = (),
    scope: Scope | None = None,
    start: date | None = None,
    end: date | None = None,
    as_of: date | None = None,
    period: str | Period | None = None,
) -> pd.DataFrame:
    """Compare KPI `name` with the same period last year and with its target.

    Arguments mean what they mean for `compute_kpi`. Returns a frame
    [*by, value, last_year, change, change_pct, target, vs_target], one row
    per group of this year or last year. last_year is the KPI over the
    period one year earlier, read at as_of one year earlier; month, quarter
    and year labels of last year are moved forward a year to line up. change
    is value - last_year (percentage points for percent KPIs), and
    change_pct is value / last_year - 1, undefined when last_year is not
    positive or the unit is percent.

    target is the target to date: targets of the KPI's `target_metric`
    prorated to the days counted (see target_prorated), and vs_target is
    value / target. Both are NaN for a KPI without a target metric, for a
    grain the targets table lacks and when no target row applies.

    Raises KpiError as `compute_kpi` does, and also when a period is open
    at the start, because last year would then have no start either.
    """
    _check_name(name)
    by = _normalise_by(by)
    _check_grains(name, by)
    req = _request(con, scope, start, end, as_of, period)
    if req.start is None and not KPIS[name].stock:
        raise KpiError(
            f"comparing {name} with last year needs a period start; pass start= "
            "or period="
        )
    current = _compute(req, name, by).rename(columns={name: "value"})

    def year_back(day: date | None) -> date | None:
        return (
            None if day is None else (pd.Timestamp(day) - pd.DateOffset(years=1)).date()
        )

    earlier = _Request(
        con,
        req.scope,
        year_back(req.start),
        year_back(req.end),
        year_back(req.as_of)
        if req.as_of is not None
        else year_back(req.snapshot_date()),
        period_end=year_back(req.period_end),
    )
    previous = _compute(earlier, name, by).rename(columns={name: "last_year"})
    _shift_labels(previous, by, 1)
    merged = (
        current.merge(previous, on=list(by), how="outer")
        if by
        else pd.concat([current, previous], axis=1)
    )
    value = merged["value"].astype("float64")
    last_year = merged["last_year"].astype("float64")
    merged["change"] = value - last_year
    if KPIS[name].unit == "percent":
        merged["change_pct"] = np.nan
    else:
        merged["change_pct"] = _divide(value, last_year, positive_only=True) - 1

    metric = KPIS[name].target_metric
    target_grains = _SOURCES["targets_prorated"].grains
    if metric is None or any(g not in target_grains for g in by):
        merged["target"] = np.nan
    else:
        target_req = replace(req, target_metric=metric, cache={})
        target = _compute(target_req, "target_prorated", by).rename(
            columns={"target_prorated": "target"}
        )
        merged = (
            merged.merge(target, on=list(by), how="left")
            if by
            else pd.concat([merged, target], axis=1)
        )
    merged["vs_target"] = _divide(value, merged["target"].astype("float64"))
    columns = [*by, "value", "last_year", "change", "change_pct", "target", "vs_target"]
    result = merged[columns]
    if by:
        result = result.sort_values(list(by), na_position="last", kind="stable")
    return result.reset_index(drop=True)


def open_deal_table(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    as_of: date | None = None,
) -> pd.DataFrame:
    """List the open deals of the pipeline snapshot with their win probability.

    The snapshot is the latest on or before `as_of`. Columns: the
    `deal_summary` columns of each deal (grains, stage, amount, expected
    close date, slips, stage_since, last_change) plus probability, the
    calibrated win probability of its segment and stage, and weighted_amount,
    amount times probability (an empty amount counts as 0). Raises MartError
    when a table it reads is missing.
    """
    req = _Request(con, scope or Scope(), None, None, as_of)
    snapshot = req.snapshot_date()
    summary = deal_summary(deal_history(con, req.scope, as_of))
    if snapshot is None:
        deals = summary.iloc[0:0].copy()
    else:
        deals = summary[
            (summary["snapshot_date"] == pd.Timestamp(snapshot))
            & (summary["status"] == "open")
        ].copy()
    # With no deals the columns come back untyped; keep dates as dates so
    # callers can compare and subtract them either way.
    for column in _DEAL_DATE_COLUMNS:
        if column in deals:
            deals[column] = pd.to_datetime(deals[column])
    deals["probability"] = _deal_probability(
        req.probabilities(), deals["segment"], deals["stage"]
    ).to_numpy(dtype="float64")
    deals["weighted_amount"] = deals["amount"].fillna(0.0) * deals["probability"]
    return deals.reset_index(drop=True)


_DEAL_DATE_COLUMNS = (
    "snapshot_date",
    "created_date",
    "expected_close_date",
    "closed_date",
    "stage_since",
    "last_change",
)


def stage_probabilities(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    as_of: date | None = None,
    by: str | None = None,
) -> pd.DataFrame:
    """Calibrate the win probability of each open stage on closed deals.

    Only snapshots on or before `as_of` are read (all of them when None). A
    deal counts as closed when its latest snapshot has status won or lost,
    and its row there must match `scope`. For each stage that some open deal
    in scope was at, the probability is the share won among the closed deals
    that were at that stage, with status open, in some snapshot. A stage with
    fewer than MIN_STAGE_DEALS such deals gets the overall win rate of the
    closed deals in scope instead, and a stage's probability is NaN when the
    scope has no closed deal at all.

    Without `by`, returns a frame [stage, probability, deals] sorted by
    stage, where deals is the number of closed deals seen at the stage (the
    calibration sample, even when the stage fell back to the overall rate).

    With `by="segment"`, the calibration is repeated per account segment:
    a (segment, stage) pair with at least MIN_STAGE_DEALS closed deals gets
    its own share won, and other pairs get the stage's probability above.
    The frame is then [segment, stage, probability, deals, stage_probability,
    basis], with one row per stage for each segment of a closed or open deal
    in scope plus a row with an empty segment; basis is 'segment', 'stage'
    or 'overall'. Probabilities are fractions. Raises KpiError for another
    `by` and MartError when the opportunities table is missing.
    """
    if by not in (None, "segment"):
        raise KpiError(
            f"stage probabilities cannot be split by {by!r}; pass by=None or "
            "by='segment'"
        )
    require_tables(con, ["opportunities", "accounts"])
    scope = scope or Scope()
    scope_sql, scope_params = scope.where("f.")
    history_sql = "SELECT * FROM opportunities"
    history_params: list = []
    if as_of is not None:
        history_sql += " WHERE snapshot_date <= ?"
        history_params.append(as_of)
    prefix = f"""
        WITH history AS ({history_sql}),
        final AS (
            SELECT * FROM history
            QUALIFY snapshot_date = max(snapshot_date) OVER (PARTITION BY opportunity_id)
        ),
        closed AS (
            SELECT f.opportunity_id, f.status = 'won' AS won, a.segment
            FROM final f LEFT JOIN accounts a ON a.account_id = f.account_id
            WHERE f.status IN ('won', 'lost') AND {scope_sql}
        ),
        open_stages AS (
            SELECT DISTINCT f.stage FROM history f WHERE f.status = 'open' AND {scope_sql}
        ),
        seen AS (
            SELECT DISTINCT opportunity_id, stage FROM history WHERE status = 'open'
        )
    """
    params = [*history_params, *scope_params, *scope_params]
    overall_won, overall_closed = con.execute(
        prefix + "SELECT count(*) FILTER (WHERE won), count(*) FROM closed", params
    ).fetchone()
    overall = overall_won / overall_closed if overall_closed else np.nan

    stages = con.execute(
        prefix
        + """
        SELECT s.stage,
               count(c.opportunity_id) AS deals,
               count(c.opportunity_id) FILTER (WHERE c.won) AS won
        FROM open_stages s
        LEFT JOIN seen ON seen.stage = s.stage
        LEFT JOIN closed c ON c.opportunity_id = seen.opportunity_id
        GROUP BY s.stage
        ORDER BY s.stage
        """,
        params,
    ).df()

    calibrated = stages["deals"] >= MIN_STAGE_DEALS
    share = stages["won"] / stages["deals"].where(calibrated)
    stages["probability"] = share.where(calibrated, overall).astype("float64")
    stages["basis"] = np.where(calibrated, "stage", "overall")
    fallback = stages.loc[~calibrated, "stage"].tolist()
    if fallback:
        logger.info(
            "stage(s) %s have fewer than %d closed deals; using the overall win rate %s",
            ", ".join(map(str, fallback)),
            MIN_STAGE_DEALS,
            overall,
        )
    if by is None:
        return stages[["stage", "probability", "deals"]].reset_index(drop=True)

    pairs = con.execute(
        prefix
        + f"""
        , open_segments AS (
            SELECT DISTINCT a.segment FROM history f
            LEFT JOIN accounts a ON a.account_id = f.account_id
            WHERE f.status = 'open' AND {scope_sql}
        )
        SELECT c.segment, seen.stage, count(*) AS deals,
               count(*) FILTER (WHERE c.won) AS won
        FROM closed c JOIN seen ON seen.opportunity_id = c.opportunity_id
        GROUP BY c.segment, seen.stage
        UNION ALL
        SELECT segment, NULL, 0, 0 FROM open_segments
        """,
        [*params, *scope_params],
    ).df()
    segments = pd.Series([None, *pairs["segment"].dropna().unique()], dtype=object)
    segments = segments.drop_duplicates().sort_values(na_position="first")
    grid = pd.DataFrame({"segment": segments}).merge(
        stages[["stage", "probability", "basis"]].rename(
            columns={"probability": "stage_probability"}
        ),
        how="cross",
    )
    counts = pairs.dropna(subset=["stage", "segment"])
    grid = grid.merge(counts, on=["segment", "stage"], how="left")
    grid[["deals", "won"]] = grid[["deals", "won"]].fillna(0).astype("int64")
    own = grid["segment"].notna() & (grid["deals"] >= MIN_STAGE_DEALS)
    grid["probability"] = (
        (grid["won"] / grid["deals"].where(own))
        .where(own, grid["stage_probability"])
        .astype("float64")
    )
    grid["basis"] = np.where(own, "segment", grid["basis"])
    columns = ["segment", "stage", "probability", "deals", "stage_probability", "basis"]
    return grid[columns].reset_index(drop=True)


def format_value(value: float | None, unit: str, currency: str = "EUR") -> str:
    """Format a KPI value for people: 'EUR 1,234,567', '63.2%', '1,204', 'n/a'.

    Currency amounts are rounded to whole units and prefixed with `currency`.
    Percent values are fractions, shown as percentages with one decimal.
    Counts get thousands separators, ratios two decimals and days one
    decimal. None, NaN and infinite values give 'n/a'.

    Raises KpiError for an unknown unit or a value that is not a number.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return "n/a"
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise KpiError(
            f"KPI value {value!r} is not a number; pass a float or None"
        ) from exc
    if not math.isfinite(number):
        return "n/a"
    if unit == "currency":
        return f"{currency} {round(number) + 0:,}"
    if unit == "percent":
        return f"{round(number * 100, 1) + 0.0:,.1f}%"
    if unit == "count":
        return f"{round(number) + 0:,}"
    if unit == "ratio":
        return f"{round(number, 2) + 0.0:,.2f}"
    if unit == "days":
        return f"{round(number, 1) + 0.0:,.1f} days"
    raise KpiError(f"unknown unit {unit!r}; choose one of {', '.join(UNITS)}")
