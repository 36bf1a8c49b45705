"""Rolling-origin backtests: the new forecast against the old method.

`rolling_backtest` refits a series at several forecast origins and scores
three methods on the periods after each origin. They are the cockpit
forecast ("prophet", or the fallback its rules choose, named in `ran`),
seasonal naive, and "last year + growth %", the method targets were set
with before. `summarise_backtest` pools the errors over origins and adds the
forecast value added (FVA) of each method relative to the old one.
`backtest_by_region_unit` runs this for every region x business unit of a
mart: the "new system against old system" report.

WAPE = sum |actual - forecast| / sum |actual| and bias = sum(forecast -
actual) / sum(actual), both pooled over every scored period. FVA = WAPE of
last year + growth - WAPE of the method, in WAPE points, so a positive
value means the method beats the old one; fva_pct is the same difference
relative to the old method's WAPE.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from datetime import date

import duckdb
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cockpit.drivers import RegressorSet, RegressorSpec, external_regressors
from cockpit.errors import ForecastError
from cockpit.forecast import (
    ForecastOptions,
    _prepare_history,
    _process_context,
    forecast_series,
    last_year_baseline,
    monthly_series,
    weekly_series,
)
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: Compared methods, in report order; the last is the old method.
BACKTEST_METHODS = ("prophet", "seasonal_naive", "last_year_plus_growth")
OLD_METHOD = "last_year_plus_growth"

ROLLING_COLUMNS = [
    "origin",
    "method",
    "ran",
    "abs_error",
    "actual",
    "forecast",
    "wape",
    "bias",
]
SUMMARY_COLUMNS = ["method", "origins", "wape", "bias", "fva", "fva_pct"]


def origin_positions(
    periods: pd.DatetimeIndex,
    origins: int | Sequence[pd.Timestamp],
    horizon: int,
    step: int | None = None,
    frequency: str = "month",
) -> list[int]:
    """Positions in `periods` of the forecast origins (last training periods).

    An integer requests that many origins: the latest leaves exactly
    `horizon` periods after it, and each earlier one is `step` periods
    before the next (default: a quarter, 3 months or 13 weeks). A list
    gives the origin dates themselves. Positions are returned oldest
    first. Raises ForecastError when an origin leaves no training period
    or fewer than `horizon` periods to score.
    """
    if horizon < 1:
        raise ForecastError(f"horizon must be at least 1 period, got {horizon}")
    if step is None:
        step = 3 if frequency == "month" else 13
    if step < 1:
        raise ForecastError(f"step must be at least 1 period, got {step}")
    last = len(periods) - 1 - horizon
    if isinstance(origins, (int, np.integer)):
        if origins < 1:
            raise ForecastError(f"origins must be at least 1, got {origins}")
        positions = [last - k * step for k in range(int(origins))][::-1]
    else:
        positions = []
        for origin in origins:
            found = periods.get_indexer([pd.Timestamp(origin)])[0]
            if found < 0:
                raise ForecastError(
                    f"origin {pd.Timestamp(origin):%Y-%m-%d} is not a period of the "
                    f"history ({periods[0]:%Y-%m-%d} to {periods[-1]:%Y-%m-%d})"
                )
            positions.append(int(found))
        positions.sort()
    for position in positions:
        if position < 0 or position > last:
            raise ForecastError(
                f"a forecast origin at position {position} of {len(periods)} periods "
                f"leaves no training data or fewer than {horizon} periods to score; "
                "use fewer origins, a smaller step or a shorter horizon"
            )
    return positions


def rolling_backtest(
    history: pd.DataFrame,
    origins: int | Sequence[pd.Timestamp] = 3,
    horizon: int = 12,
    step: int | None = None,
    growth_pct: float = 0.05,
    min_months: int = 24,
    options: ForecastOptions | None = None,
    regressors: pd.DataFrame | RegressorSet | None = None,
) -> pd.DataFrame:
    """Score the compared methods at several forecast origins of one series.

    `history` has ds and y as for `forecast_series`. For each origin (see
    `origin_positions`) the methods are fitted on the periods up to and
    including the origin and scored on the next `horizon` periods.
    "prophet" is `forecast_series`, and its `ran` column names the fallback
    when the rules chose one. "seasonal_naive" repeats the last year and
    "last_year_plus_growth" multiplies it by 1 + `growth_pct` per year
    ahead. Regressors are used as given, so their values after the origin
    are the realised ones.

    Returns ROLLING_COLUMNS, one row per origin and method, oldest origin
    first. The year-earlier rows are NaN when the training span is shorter
    than a year.
    """
    options = options or ForecastOptions()
    series = _prepare_history(history, options.frequency)
    positions = origin_positions(
        pd.DatetimeIndex(series["ds"]), origins, horizon, step, options.frequency
    )
    y = series["y"].to_numpy(float)
    rows = []
    for position in positions:
        train = series.iloc[: position + 1]
        actual = y[position + 1 : position + 1 + horizon]
        result = forecast_series(
            train, horizon, regressors, min_months=min_months, options=options
        )
        same_period, growth = last_year_baseline(
            train["y"].to_numpy(float), horizon, growth_pct, options
        )
        forecasts = {
            "prophet": (result.frame["yhat"].to_numpy(float), result.method),
            "seasonal_naive": (same_period, "seasonal_naive"),
            OLD_METHOD: (same_period * growth, OLD_METHOD),
        }
        for method, (forecast, ran) in forecasts.items():
            rows.append(
                _score_row(series["ds"].iloc[position], method, ran, actual, forecast)
            )
    return pd.DataFrame(rows, columns=ROLLING_COLUMNS)


def _score_row(
    origin: pd.Timestamp,
    method: str,
    ran: str,
    actual: np.ndarray,
    forecast: np.ndarray,
) -> dict:
    total = float(np.sum(actual))
    absolute = float(np.sum(np.abs(actual)))
    error = float(np.sum(np.abs(actual - forecast)))
    predicted = float(np.sum(forecast))
    return {
        "origin": origin,
        "method": method,
        "ran": ran,
        "abs_error": error,
        "actual": total,
        "forecast": predicted,
        "wape": error / absolute if absolute else np.nan,
        "bias": (predicted - total) / total if total else np.nan,
    }


def summarise_backtest(
    scores: pd.DataFrame, by: Sequence[str] = (), old_method: str = OLD_METHOD
) -> pd.DataFrame:
    """Pool rolling-backtest rows per method (and per `by` columns).

    Returns the `by` columns, then SUMMARY_COLUMNS: origins (count), wape,
    bias, fva (old method's WAPE minus this method's, in WAPE points) and
    fva_pct (fva / old method's WAPE). Rows with a NaN forecast (no year
    of training data) are left out of the pools.
    """
    keys = [*by, "method"]
    usable = scores[np.isfinite(scores["forecast"].to_numpy(float))].copy()
    usable["absolute"] = usable["actual"].abs()
    grouped = usable.groupby(keys, as_index=False, sort=False).agg(
        origins=("origin", "nunique"),
        abs_error=("abs_error", "sum"),
        actual=("actual", "sum"),
        forecast=("forecast", "sum"),
    )
    # Absolute actual per origin equals |actual| for revenue series that are
    # never negative in a period; the pooled WAPE uses the summed errors.
    grouped["wape"] = grouped["abs_error"] / grouped["actual"].abs().replace(0, np.nan)
    grouped["bias"] = (grouped["forecast"] - grouped["actual"]) / grouped[
        "actual"
    ].replace(0, np.nan)
    old = grouped[grouped["method"] == old_method][[*by, "wape"]].rename(
        columns={"wape": "old_wape"}
    )
    if by:
        grouped = grouped.merge(old, on=list(by), how="left")
    else:
        grouped["old_wape"] = old["old_wape"].iloc[0] if len(old) else np.nan
    grouped["fva"] = grouped["old_wape"] - grouped["wape"]
    grouped["fva_pct"] = grouped["fva"] / grouped["old_wape"].replace(0, np.nan)
    return grouped[[*by, *SUMMARY_COLUMNS]]


def backtest_by_region_unit(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    end: date | None = None,
    origins: int | Sequence[pd.Timestamp] = 3,
    horizon: int = 12,
    step: int | None = None,
    growth_pct: float = 0.05,
    options: ForecastOptions | None = None,
    regressors: Sequence[RegressorSpec] = (),
    workers: int = 1,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rolling backtest of every region x business unit revenue series.

    Series come from `monthly_series` (or `weekly_series` when
    `options.frequency` is "week") per region of `scope`, up to `end`.
    `regressors` are read from the mart for each series' region with
    `external_regressors`, extended to the end of the last scored period.
    Series are backtested in `workers` processes, with a tqdm bar when
    `progress` is true.

    Returns (report, scores). report has region, business_unit, then
    SUMMARY_COLUMNS per method, plus rows with region and business_unit
    "(all)" that pool every series. scores has the rolling_backtest rows
    with region and business_unit in front.
    """
    options = options or ForecastOptions()
    scope = scope or Scope()
    reader = monthly_series if options.frequency == "month" else weekly_series
    regions = [scope.region] if scope.region else _regions(con, scope)
    jobs = []
    for region in regions:
        units = reader(con, replace(scope, region=region), by="business_unit", end=end)
        for unit, history in units.groupby("series_id", sort=True):
            if scope.business_unit and unit != scope.business_unit:
                continue
            history = history[["ds", "y"]].reset_index(drop=True)
            extra = None
            if regressors:
                extra = external_regressors(
                    con,
                    regressors,
                    history["ds"].iloc[0],
                    history["ds"].iloc[-1] + options.step * horizon,
                    region=region,
                    frequency=options.frequency,
                )
            jobs.append(
                (
                    region,
                    unit,
                    history,
                    origins,
                    horizon,
                    step,
                    growth_pct,
                    options,
                    extra,
                )
            )
    if not jobs:
        raise ForecastError(f"no revenue series in {scope.label()} to backtest")

    parts = []
    with tqdm(
        total=len(jobs), disable=not progress, desc="backtest", unit="series"
    ) as bar:
        for frame in _run_backtests(jobs, workers):
            parts.append(frame)
            bar.update(1)
    scores = pd.concat(parts, ignore_index=True).sort_values(
        ["region", "business_unit", "origin"], ignore_index=True, kind="stable"
    )
    report = summarise_backtest(scores, by=["region", "business_unit"])
    pooled = summarise_backtest(scores).assign(region="(all)", business_unit="(all)")
    report = pd.concat([report, pooled[report.columns]], ignore_index=True)
    return report, scores


def _regions(con: duckdb.DuckDBPyConnection, scope: Scope) -> list[str]:
    where, params = scope.where("t.")
    rows = con.execute(
        f"SELECT DISTINCT region FROM transactions t WHERE {where} "
        "AND region IS NOT NULL ORDER BY region",
        params,
    ).fetchall()
    return [row[0] for row in rows]


def _run_backtests(jobs: list[tuple], workers: int):
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            yield _backtest_job(job)
        return
    with ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)), mp_context=_process_context()
    ) as executor:
        futures = [executor.submit(_backtest_job, job) for job in jobs]
        for future in as_completed(futures):
            yield future.result()


def _backtest_job(job: tuple) -> pd.DataFrame:
    """Backtest one region x unit series; module level so it pickles."""
    region, unit, history, origins, horizon, step, growth_pct, options, extra = job
    try:
        scores = rolling_backtest(
            history,
            origins=origins,
            horizon=horizon,
            step=step,
            growth_pct=growth_pct,
            options=options,
            regressors=extra,
        )
    except ForecastError as exc:
        raise ForecastError(f"region {region}, business unit {unit}: {exc}") from exc
    scores.insert(0, "business_unit", unit)
    scores.insert(0, "region", region)
    return scores
