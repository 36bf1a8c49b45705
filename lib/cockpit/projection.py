"""Gap to target: projected period-end revenue and attainment with a range.

For each seller, team or region, the projection of the period's revenue is

    actual to date
    + expected closings: the open deals of the pipeline snapshot expected to
      close by the period end (overdue ones included), each weighted by its
      calibrated win probability
    + repeat business run-rate: the daily rate of invoice revenue that the
      CRM does not explain, times the days left in the period. That revenue
      is revenue minus the value of deals won, per week and floored at 0,
      over the RUN_RATE_WEEKS weeks up to as_of.

The range treats deals as independent wins (variance p (1 - p) amount^2)
and weekly repeat revenue as independent draws (variance of the weekly
values times the weeks left), and spans the projection plus or minus
`z` combined standard deviations (1.645 for a two-sided 90 % normal
interval). The low end never falls below the actual to date. It is an
estimate under those assumptions, not a guarantee.

Amounts are in the mart's reporting currency; attainment is a fraction.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd

from cockpit.errors import KpiError
from cockpit.kpi import GRAIN_ALIASES, compute_kpi, open_deal_table
from cockpit.kpi_periods import Period, resolve_period
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: Weeks of history up to as_of that set the repeat-business run-rate.
RUN_RATE_WEEKS = 13

#: Standard deviations on each side of the projection: a 90 % normal interval.
DEFAULT_Z = 1.645

#: Grains a projection can be made at; company is the whole scope.
PROJECTION_LEVELS = ("company", "region", "team", "rep_id")

COLUMNS = [
    "target",
    "actual",
    "pipeline_expected",
    "run_rate_expected",
    "projected",
    "projected_low",
    "projected_high",
    "projected_attainment",
    "attainment_low",
    "attainment_high",
    "gap_to_target",
    "days_left",
]


def _grain(level: str) -> tuple[str, ...]:
    grain = GRAIN_ALIASES.get(level, level)
    if grain not in PROJECTION_LEVELS:
        raise KpiError(
            f"cannot project at level {level!r}; choose one of "
            f"{', '.join(PROJECTION_LEVELS)} (or seller)"
        )
    return () if grain == "company" else (grain,)


def _values(frame: pd.DataFrame, by: tuple[str, ...], name: str) -> pd.Series:
    if not by:
        return pd.Series([frame[name].iloc[0]], index=pd.Index(["all"], name="_all"))
    return frame.set_index(by[0])[name]


def _weekly_repeat(
    con: duckdb.DuckDBPyConnection,
    by: tuple[str, ...],
    scope: Scope,
    as_of: date,
    weeks: int,
) -> pd.DataFrame:
    """Return repeat revenue (revenue - won value, floored at 0) per group and week."""
    rows = []
    for week in range(weeks):
        end = as_of - timedelta(days=7 * week)
        start = end - timedelta(days=6)
        window = {"start": start, "end": end, "as_of": as_of}
        revenue = compute_kpi(con, "revenue", by=by, scope=scope, **window)
        won = compute_kpi(con, "won_value", by=by, scope=scope, **window)
        merged = (
            revenue.merge(won, on=list(by), how="outer")
            if by
            else pd.concat([revenue, won], axis=1)
        )
        merged = merged.fillna({"revenue": 0.0, "won_value": 0.0})
        merged["repeat"] = (merged["revenue"] - merged["won_value"]).clip(lower=0.0)
        merged["week"] = week
        rows.append(merged)
    frame = pd.concat(rows, ignore_index=True)
    if not by:
        frame["_all"] = "all"
    return frame


def project_attainment(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    level: str = "rep_id",
    scope: Scope | None = None,
    period: str | Period = "year",
    z: float = DEFAULT_Z,
    run_rate_weeks: int = RUN_RATE_WEEKS,
) -> pd.DataFrame:
    """Project the period-end revenue and attainment of each member of `level`.

    `level` is company, region, team or rep_id (seller). `period` is a
    period name read at `as_of` (see `cockpit.kpi_periods`) or a Period;
    its end is the date projected to. Returns one row per member with a
    target, actual or open deal, and the columns target, actual,
    pipeline_expected, run_rate_expected, projected, projected_low,
    projected_high, projected_attainment, attainment_low, attainment_high
    (NaN without a target), gap_to_target (target minus projected) and
    days_left. The company row has the level column absent.

    Raises KpiError for an unknown level or period, z below 0 or
    run_rate_weeks below 2.
    """
    by = _grain(level)
    if z < 0:
        raise KpiError(f"z must be 0 or more, got {z}")
    if run_rate_weeks < 2:
        raise KpiError(f"run_rate_weeks must be 2 or more, got {run_rate_weeks}")
    scope = scope or Scope()
    if isinstance(period, str):
        period = resolve_period(period, as_of)
    days_left = period.days_left

    target = compute_kpi(con, "target", by=by, scope=scope, period=period)
    actual = compute_kpi(con, "revenue", by=by, scope=scope, period=period)
    table = pd.DataFrame(
        {
            "target": _values(target, by, "target"),
            "actual": _values(actual, by, "revenue"),
        }
    )

    deals = open_deal_table(con, scope, as_of)
    # An empty table (an export without opportunities) has no date dtype.
    close_dates = pd.to_datetime(deals["expected_close_date"])
    closing = deals[close_dates <= pd.Timestamp(period.end)].copy()
    if days_left == 0:
        closing = closing.iloc[0:0]
    amount = closing["amount"].fillna(0.0)
    closing["expected"] = amount * closing["probability"]
    closing["variance"] = (
        closing["probability"] * (1 - closing["probability"]) * amount**2
    )
    key = by[0] if by else "_all"
    if not by:
        closing["_all"] = "all"
    pipeline = closing.groupby(key, dropna=False)[["expected", "variance"]].sum(
        min_count=1
    )

    weekly = _weekly_repeat(con, by, scope, period.as_of, run_rate_weeks)
    # A week without lines or deals of a group counts as 0 for that group.
    grid = weekly.pivot_table(
        index=key, columns="week", values="repeat", aggfunc="sum", dropna=False
    ).reindex(columns=range(run_rate_weeks), fill_value=0.0)
    grid = grid.fillna(0.0)
    repeat = pd.DataFrame({"sum": grid.sum(axis=1), "std": grid.std(axis=1, ddof=1)})
    rate_per_day = repeat["sum"] / (7 * run_rate_weeks)
    weeks_left = days_left / 7
    run_expected = rate_per_day * days_left
    run_variance = repeat["std"].fillna(0.0) ** 2 * weeks_left

    table = table.join(
        pd.DataFrame(
            {
                "pipeline_expected": pipeline["expected"],
                "pipeline_variance": pipeline["variance"],
            }
        ),
        how="outer",
    ).join(
        pd.DataFrame({"run_rate_expected": run_expected, "run_variance": run_variance}),
        how="left",
    )
    table["actual"] = table["actual"].fillna(0.0)
    for column in ("pipeline_expected", "pipeline_variance"):
        table[column] = table[column].fillna(0.0)
    for column in ("run_rate_expected", "run_variance"):
        table[column] = table[column].fillna(0.0)
    table["projected"] = (
        table["actual"] + table["pipeline_expected"] + table["run_rate_expected"]
    )
    spread = z * np.sqrt(table["pipeline_variance"] + table["run_variance"])
    table["projected_low"] = np.maximum(table["actual"], table["projected"] - spread)
    table["projected_high"] = table["projected"] + spread
    valid = table["target"] > 0
    for column, source in (
        ("projected_attainment", "projected"),
        ("attainment_low", "projected_low"),
        ("attainment_high", "projected_high"),
    ):
        table[column] = (table[source] / table["target"]).where(valid)
    table["gap_to_target"] = table["target"] - table["projected"]
    table["days_left"] = days_left
    table = table[COLUMNS]
    if by:
        table = table.rename_axis(by[0]).reset_index()
        table = table.sort_values(by[0], na_position="last", kind="stable")
    else:
        table = table.reset_index(drop=True).iloc[:1]
    logger.info(
        "projected %s to %s at level %s for %s",
        period.label,
        period.end,
        level,
        scope.label(),
    )
    return table.reset_index(drop=True)
