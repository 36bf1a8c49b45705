"""Forecast history in the mart: store each run, score it when actuals arrive.

Every run appends its forecast to the `forecasts` table with its as-of date
(`store_forecast`), and nothing is replaced. `forecast_actuals` joins those
rows with the mart's revenue of the same series and period once the period
is complete. `accuracy_over_time` pools the errors per run, so the accuracy
of the forecasts can be followed from one as-of date to the next.

A stored row is matched to its actuals through its `level`: the dimension
names of `series_id` joined by "/" (for example "region/business_unit"
with series_id "East/Equipment"), or "company" for the total. Rows without
a level cannot be matched and are counted in a log message.
"""

from __future__ import annotations

import logging
from datetime import date

import duckdb
import numpy as np
import pandas as pd

from cockpit.drivers import check_frequency
from cockpit.errors import ForecastError
from cockpit.forecast import _BY_SQL, MISSING_LABEL, last_complete_period
from cockpit.mart import LoadReport, load_frame
from cockpit.mart.store import require_tables
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: Level name of the company total; its series_id is TOTAL_ID.
COMPANY_LEVEL = "company"
TOTAL_ID = "total"

#: Separator of dimension names in a level and of values in a series_id.
KEY_SEPARATOR = "/"

ACTUALS_COLUMNS = [
    "as_of",
    "level",
    "region",
    "business_unit",
    "frequency",
    "series_id",
    "ds",
    "periods_ahead",
    "yhat",
    "actual",
]
ACCURACY_COLUMNS = [
    "as_of",
    "level",
    "frequency",
    "series",
    "periods",
    "actual",
    "forecast",
    "wape",
    "bias",
]


def level_keys(level: str) -> tuple[str, ...]:
    """Dimension names of a level: () for company, else the '/'-separated names.

    Raises ForecastError for a dimension that revenue cannot be split by.
    """
    if level == COMPANY_LEVEL:
        return ()
    keys = tuple(level.split(KEY_SEPARATOR))
    unknown = [k for k in keys if k not in _BY_SQL]
    if unknown:
        raise ForecastError(
            f"level {level!r} names unknown dimension(s) {unknown}; use "
            f"{COMPANY_LEVEL!r} or names from {', '.join(_BY_SQL)} joined by '/'"
        )
    return keys


def store_forecast(con: duckdb.DuckDBPyConnection, table: pd.DataFrame) -> LoadReport:
    """Append a forecast table (from `forecast_table`) to the mart's `forecasts`.

    Rows go through `load_frame`, so a row without as_of, ds, yhat or
    created_at, or one that repeats a stored key, lands in quarantine.
    Returns the load report.
    """
    if table.empty:
        raise ForecastError("forecast table is empty; nothing to store")
    as_of = pd.Timestamp(table["as_of"].iloc[0]).date()
    report = load_frame(
        con,
        "forecasts",
        table,
        source="forecast",
        source_file=f"forecast run as of {as_of}",
    )
    logger.info("stored forecast as of %s: %s", as_of, report)
    return report


def forecast_actuals(
    con: duckdb.DuckDBPyConnection,
    frequency: str = "month",
    level: str | None = None,
    end: date | None = None,
) -> pd.DataFrame:
    """Join stored forecasts with the actual revenue of their periods.

    Only periods that are complete by `end` (default: the latest invoice
    date) and lie after the run's own last complete period are kept. When
    one as-of date was stored more than once for the same level and
    scope, the latest run (by created_at) is used. A period without
    invoice lines has actual 0. `periods_ahead` counts from 1 for the first
    period after the as-of date's last complete period.

    Returns ACTUALS_COLUMNS. Raises ForecastError for an unknown frequency
    or level, MartError when the mart lacks `forecasts` or `transactions`.
    """
    check_frequency(frequency)
    require_tables(con, ["forecasts", "transactions", "products", "reps"])
    stored = con.execute(
        """
        SELECT * FROM forecasts
        WHERE coalesce(frequency, 'month') = ?
        QUALIFY created_at = max(created_at) OVER (
            PARTITION BY as_of, level, region, business_unit, frequency)
        """,
        [frequency],
    ).df()
    if level is not None:
        level_keys(level)
        stored = stored[stored["level"] == level]
    unmatched = stored["level"].isna()
    if unmatched.any():
        logger.warning(
            "%d stored forecast row(s) have no level and are left out of the "
            "accuracy; store them with forecast_table(..., level=...)",
            int(unmatched.sum()),
        )
        stored = stored[~unmatched]
    if stored.empty:
        return pd.DataFrame(columns=ACTUALS_COLUMNS)

    if end is None:
        end = con.execute("SELECT max(date) FROM transactions").fetchone()[0]
    last = last_complete_period(end, frequency)
    stored["ds"] = pd.to_datetime(stored["ds"])
    stored["run_last"] = [
        last_complete_period(d, frequency) for d in pd.to_datetime(stored["as_of"])
    ]
    stored = stored[(stored["ds"] <= last) & (stored["ds"] > stored["run_last"])]
    if stored.empty:
        return pd.DataFrame(columns=ACTUALS_COLUMNS)

    parts = []
    scopes = stored.groupby(
        ["level", "region", "business_unit"], dropna=False, sort=False
    )
    for (lvl, region, unit), rows in scopes:
        actual = _actuals(
            con, level_keys(lvl), region, unit, frequency, rows["ds"].min(), last
        )
        merged = rows.merge(actual, on=["series_id", "ds"], how="left")
        merged["actual"] = merged["actual"].fillna(0.0)
        parts.append(merged)
    joined = pd.concat(parts, ignore_index=True)
    step = 1 if frequency == "month" else 7
    if frequency == "month":
        joined["periods_ahead"] = (
            (joined["ds"].dt.year - joined["run_last"].dt.year) * 12
            + joined["ds"].dt.month
            - joined["run_last"].dt.month
        )
    else:
        joined["periods_ahead"] = (joined["ds"] - joined["run_last"]).dt.days // step
    joined["as_of"] = pd.to_datetime(joined["as_of"]).dt.date
    return joined[ACTUALS_COLUMNS].sort_values(
        ["as_of", "level", "series_id", "ds"], ignore_index=True
    )


def _actuals(
    con: duckdb.DuckDBPyConnection,
    keys: tuple[str, ...],
    region: str | None,
    business_unit: str | None,
    frequency: str,
    first: pd.Timestamp,
    last: pd.Timestamp,
) -> pd.DataFrame:
    """Revenue per series_id and period of one level within one scope."""
    if keys:
        parts = [f"coalesce(CAST({_BY_SQL[k]} AS VARCHAR), ?)" for k in keys]
        key_sql = f" || '{KEY_SEPARATOR}' || ".join(parts)
        key_params = [MISSING_LABEL] * len(keys)
    else:
        key_sql, key_params = f"'{TOTAL_ID}'", []
    scope = Scope(
        region=None if pd.isna(region) else region,
        business_unit=None if pd.isna(business_unit) else business_unit,
    )
    where, params = scope.where("t.")
    step = pd.DateOffset(months=1) if frequency == "month" else pd.DateOffset(weeks=1)
    condition = f"t.date >= ? AND t.date < ? AND {where}"
    unit = "month" if frequency == "month" else "week"
    frame = con.execute(
        f"""
        SELECT {key_sql} AS series_id,
               CAST(date_trunc('{unit}', t.date) AS DATE) AS ds,
               sum(t.net_revenue) AS actual
        FROM transactions t
        LEFT JOIN products p ON p.product_id = t.product_id
        LEFT JOIN reps r ON r.rep_id = t.rep_id
        WHERE {condition}
        GROUP BY ALL
        """,
        [*key_params, first.date(), (last + step).date(), *params],
    ).df()
    frame["ds"] = pd.to_datetime(frame["ds"])
    return frame


def accuracy_over_time(
    con: duckdb.DuckDBPyConnection,
    frequency: str = "month",
    level: str | None = None,
    end: date | None = None,
) -> pd.DataFrame:
    """Score each stored run against the actuals that arrived after it.

    Returns one row per as-of date and level: series (count), periods
    (series x periods with actuals), actual and forecast (sums), wape =
    sum |actual - yhat| / sum |actual| and bias = sum(yhat - actual) /
    sum(actual), both NaN when the actuals sum to 0. Runs whose forecast
    periods have no complete actuals yet are absent. See `forecast_actuals`
    for which rows count.
    """
    joined = forecast_actuals(con, frequency, level, end)
    if joined.empty:
        return pd.DataFrame(columns=ACCURACY_COLUMNS)
    joined["abs_error"] = (joined["yhat"] - joined["actual"]).abs()
    grouped = joined.groupby(["as_of", "level", "frequency"], as_index=False).agg(
        series=("series_id", "nunique"),
        periods=("ds", "size"),
        actual=("actual", "sum"),
        forecast=("yhat", "sum"),
        abs_error=("abs_error", "sum"),
        absolute=("actual", lambda a: float(np.abs(a).sum())),
    )
    grouped["wape"] = grouped["abs_error"] / grouped["absolute"].replace(0, np.nan)
    grouped["bias"] = (grouped["forecast"] - grouped["actual"]) / grouped[
        "actual"
    ].replace(0, np.nan)
    return grouped[ACCURACY_COLUMNS]
