"""Target planning from the command line: forecast, plan, publish, export.

Glue between `cockpit.forecast` and the target plan in `cockpit.targets` and
`cockpit.target_log`, so `cockpit targets plan` needs only a mart and a year.
"""

from __future__ import annotations

import logging
from datetime import date

import duckdb
import pandas as pd

from cockpit.forecast import forecast_series, monthly_series
from cockpit.scope import Scope
from cockpit.target_log import publish_plan
from cockpit.targets import TargetPolicy, plan_targets

logger = logging.getLogger(__name__)


def region_unit_forecast(
    con: duckdb.DuckDBPyConnection, as_of: date, until: date
) -> pd.DataFrame:
    """Forecast monthly net revenue per region × business unit up to `until`.

    Each pair's total series is forecast on its own (Prophet, or the
    fallback the series needs). Returns columns region, business_unit, ds,
    yhat, method, note.
    """
    pairs = con.execute(
        """
        SELECT DISTINCT region, business_unit FROM transactions
        WHERE region IS NOT NULL AND business_unit IS NOT NULL
        ORDER BY 1, 2
        """
    ).fetchall()
    frames = []
    for region, unit in pairs:
        history = monthly_series(
            con, Scope(region=region, business_unit=unit), by=None, end=as_of
        )
        if history.empty:
            continue
        last = pd.Timestamp(history["ds"].max())
        horizon = (until.year - last.year) * 12 + (until.month - last.month)
        if horizon < 1:
            continue
        result = forecast_series(history[["ds", "y"]].reset_index(drop=True), horizon)
        frame = result.frame[["ds", "yhat"]].copy()
        frame.insert(0, "business_unit", unit)
        frame.insert(0, "region", region)
        frame["method"] = result.method
        frame["note"] = result.note
        frames.append(frame)
    logger.info("forecast %d region × unit series up to %s", len(frames), until)
    if not frames:
        return pd.DataFrame(
            columns=["region", "business_unit", "ds", "yhat", "method", "note"]
        )
    return pd.concat(frames, ignore_index=True)


def plan_and_publish(
    con: duckdb.DuckDBPyConnection,
    year: int,
    as_of: date,
    set_by: str,
    reason: str,
    ambition_pct: float = 0.05,
    forecast_weight: float = 0.8,
    quarters: tuple[int, ...] = (1, 2, 3, 4),
) -> tuple[int, list[str]]:
    """Forecast, plan the year's targets top-down and store them as a new version.

    Returns the version written and the plan's notes. `con` must be
    writable.
    """
    forecast = region_unit_forecast(con, as_of, date(year, 12, 31))
    policy = TargetPolicy(ambition_pct=ambition_pct, forecast_weight=forecast_weight)
    plan = plan_targets(con, year, forecast, as_of, policy, quarters=quarters)
    version = publish_plan(con, plan, set_by=set_by, reason=reason)
    return version, list(plan.notes)
