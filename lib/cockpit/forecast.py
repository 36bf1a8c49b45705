"""Monthly revenue forecasts: series from the mart, Prophet, fallbacks, backtests.

`monthly_series` turns invoice lines into one monthly revenue series per
member of a dimension. `forecast_series` fits Prophet with yearly seasonality
to one series, or, when the series is too short, constant or mostly zero,
uses a simple method and records the reason in `ForecastResult.note`. `backtest`
compares the chosen method with seasonal naive and the last-year-plus-growth
rule on held-out months. `forecast_many` runs many series in parallel
processes, and `forecast_table` stamps a result with its as-of date so that
the publish step can append it to the mart's `forecasts` table.

Amounts are in the mart's reporting currency. Months are identified by their
first day (`ds`, a pandas Timestamp). Forecasts and their intervals are
clipped at 0 because revenue of a month is not expected to be negative.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import warnings
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date, datetime, timezone

import duckdb
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cockpit.errors import ForecastError
from cockpit.mart.store import require_tables
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: Methods a forecast can come from, from the richest to the simplest.
METHODS = ("prophet", "seasonal_naive", "naive", "zero")

#: Width of the prediction interval of every method (Prophet's default).
INTERVAL_WIDTH = 0.8

#: Fourier order of Prophet's yearly seasonality. Twelve monthly points a year
#: determine at most 6 harmonics, and the 6th is close to zero or an
#: alternating sign on month starts, so 5 is the richest useful order. On the
#: Superstore sample (12 region x category series, last 12 months held out)
#: the mean WAPE was 0.508 with order 5 against 0.555 with Prophet's default 10.
YEARLY_FOURIER_ORDER = 5

#: Standard normal quantile for a central 80 % interval.
_Z_80 = 1.2815515655446004

#: A series whose share of zero months exceeds this is treated as intermittent.
INTERMITTENT_ZERO_SHARE = 0.5

#: Months of history the naive method averages.
NAIVE_MONTHS = 3

#: Dimensions `monthly_series` can split by, with the SQL expression of each.
_BY_SQL = {
    "product_line": "p.product_line",
    "business_unit": "t.business_unit",
    "region": "t.region",
    "rep_id": "t.rep_id",
    "account_id": "t.account_id",
    "product_id": "t.product_id",
    "team": "r.team",
}

#: series_id given to revenue whose dimension value is empty in the mart.
MISSING_LABEL = "(missing)"

SERIES_COLUMNS = ["series_id", "ds", "y"]
FORECAST_COLUMNS = ["ds", "yhat", "yhat_lower", "yhat_upper"]
MANY_COLUMNS = ["series_id", *FORECAST_COLUMNS, "method", "note"]
BACKTEST_COLUMNS = ["method", "wape", "bias", "actual", "forecast"]


@dataclass(frozen=True)
class ForecastResult:
    """Forecast of one monthly series.

    `frame` has one row per forecast month: ds (month start), yhat,
    yhat_lower and yhat_upper (80 % interval), all clipped at 0. `method` is
    one of METHODS. `note` explains a fallback or a dropped regressor, and is
    empty when Prophet ran on the series as given.
    """

    frame: pd.DataFrame
    method: str
    note: str = ""


# --------------------------------------------------------------------------
# Series from the mart


def monthly_series(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    by: str | None = "product_line",
    end: date | None = None,
) -> pd.DataFrame:
    """Sum net revenue of `transactions` per month and per value of `by`.

    Returns columns series_id, ds (first day of the month) and y (net revenue
    in reporting currency), sorted by series_id then ds. `by` is one of
    product_line, business_unit, region, rep_id, account_id, product_id or
    team; with None every line goes to one series called "total". Lines
    whose `by` value is empty form the series "(missing)".

    Only complete months are kept: the month containing `end` counts only
    when `end` is its last day. Without `end`, the latest invoice date in
    the whole mart is used instead, so a month the export cuts short is
    left out. Each series runs from its first month with a line to the last
    complete month, and months without lines get 0.

    Raises ForecastError for an unknown `by`, MartError when the mart lacks
    the transactions, products or reps table.
    """
    require_tables(con, ["transactions", "products", "reps"])
    if by is not None and by not in _BY_SQL:
        raise ForecastError(
            f"cannot split revenue by {by!r}; use one of {', '.join(_BY_SQL)} "
            "or None for one total series"
        )
    scope = scope or Scope()

    if end is None:
        latest = con.execute("SELECT max(date) FROM transactions").fetchone()[0]
        if latest is None:
            return _empty_series()
        end = latest
    last_month = _last_complete_month(end)

    key_sql = "'total'" if by is None else f"coalesce({_BY_SQL[by]}, ?)"
    key_params = [] if by is None else [MISSING_LABEL]
    where_sql, where_params = scope.where("t.")
    query = f"""
        SELECT CAST({key_sql} AS VARCHAR) AS series_id,
               CAST(date_trunc('month', t.date) AS DATE) AS ds,
               sum(t.net_revenue) AS y
        FROM transactions t
        LEFT JOIN products p ON p.product_id = t.product_id
        LEFT JOIN reps r ON r.rep_id = t.rep_id
        WHERE {where_sql} AND t.date < ?
        GROUP BY ALL
    """
    first_excluded = (last_month + pd.DateOffset(months=1)).date()
    raw = con.execute(query, [*key_params, *where_params, first_excluded]).df()
    if raw.empty:
        logger.info("no revenue in %s up to %s", scope.label(), last_month.date())
        return _empty_series()

    raw["ds"] = pd.to_datetime(raw["ds"])
    frames = []
    for series_id, group in raw.groupby("series_id", sort=True):
        months = pd.date_range(group["ds"].min(), last_month, freq="MS")
        values = group.set_index("ds")["y"].reindex(months, fill_value=0.0)
        frames.append(
            pd.DataFrame(
                {"series_id": series_id, "ds": months, "y": values.to_numpy(float)}
            )
        )
    result = pd.concat(frames, ignore_index=True)
    logger.info(
        "%d monthly series of %s up to %s",
        len(frames),
        scope.label(),
        last_month.date(),
    )
    return result


def _empty_series() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "series_id": pd.Series(dtype="object"),
            "ds": pd.Series(dtype="datetime64[ns]"),
            "y": pd.Series(dtype="float64"),
        }
    )


def _last_complete_month(end: date) -> pd.Timestamp:
    """First day of the last month that `end` covers entirely."""
    end_ts = pd.Timestamp(end).normalize()
    month = end_ts.to_period("M").to_timestamp()
    if end_ts == month + pd.offsets.MonthEnd(0):
        return month
    return month - pd.DateOffset(months=1)


# --------------------------------------------------------------------------
# One series


def forecast_series(
    history: pd.DataFrame,
    horizon: int,
    regressors: pd.DataFrame | None = None,
    min_months: int = 24,
) -> ForecastResult:
    """Forecast `horizon` months after the last month of `history`.

    `history` has columns ds (any day of the month) and y (revenue of that
    month). Months missing between the first and the last are taken as 0.
    Prophet with yearly seasonality runs when the series has at least
    `min_months` months, is not constant and has no more than half of its
    months at 0. Otherwise the forecast repeats the last 12 months (seasonal
    naive, when at least 12 months exist), or the mean of the last 3 months
    (naive), or 0 when every month is 0, and `note` names the rule that applied.
    Prophet failing to fit also falls back to a simple method with a note.

    `regressors` has ds and one numeric column per external regressor, with
    a value for every history month and every forecast month. Prophet uses
    each regressor that covers that span; the others are dropped with a
    note. Simple methods ignore regressors.

    Raises ForecastError when `history` is empty, lacks ds or y, has a
    missing or infinite y, repeats a month, when `horizon` < 1, or when
    `regressors` lack ds, repeat a month or use a name Prophet reserves.
    """
    if horizon < 1:
        raise ForecastError(f"horizon must be at least 1 month, got {horizon}")
    series = _prepare_history(history)
    y = series["y"].to_numpy(float)
    future = pd.date_range(
        series["ds"].iloc[-1] + pd.DateOffset(months=1), periods=horizon, freq="MS"
    )

    reason = _simple_reason(y, min_months)
    if reason is not None:
        if regressors is not None:
            reason += "; regressors ignored"
        return _simple_forecast(y, future, reason)

    used, dropped = _usable_regressors(regressors, series["ds"], future)
    notes = [f"regressor {name} dropped: {why}" for name, why in dropped]
    model = _new_prophet([] if used is None else list(used.columns.drop("ds")))
    try:
        frame = _prophet_forecast(model, series, future, used)
    except (RuntimeError, ValueError) as exc:
        logger.warning("Prophet failed on a %d-month series: %s", len(y), exc)
        fallback = f"Prophet failed ({exc}); simple method used"
        return _simple_forecast(y, future, "; ".join([fallback, *notes]))
    return ForecastResult(_clip(frame), "prophet", "; ".join(notes))


def _prepare_history(history: pd.DataFrame) -> pd.DataFrame:
    """Check `history` and return it as consecutive month starts with float y."""
    missing = [c for c in ("ds", "y") if c not in history.columns]
    if missing:
        raise ForecastError(
            f"history lacks column(s) {missing}; pass a frame with ds (month) "
            "and y (revenue)"
        )
    if history.empty:
        raise ForecastError(
            "history is empty; a forecast needs at least one month of revenue"
        )

    try:
        ds = pd.to_datetime(history["ds"]).dt.to_period("M").dt.to_timestamp()
    except (ValueError, TypeError) as exc:
        raise ForecastError(
            f"history column ds does not parse as dates ({exc}); pass month "
            "start dates such as 2024-01-01"
        ) from exc
    y = pd.to_numeric(history["y"], errors="coerce").astype(float)
    bad = ~np.isfinite(y.to_numpy())
    if bad.any():
        month = ds[bad].iloc[0].strftime("%Y-%m")
        raise ForecastError(
            f"history y is missing or not a finite number for {month}; "
            "put 0 for a month without revenue"
        )
    repeated = ds.duplicated()
    if repeated.any():
        month = ds[repeated].iloc[0].strftime("%Y-%m")
        raise ForecastError(
            f"history has more than one row for {month}; sum revenue per month first"
        )

    frame = pd.DataFrame({"ds": ds.to_numpy(), "y": y.to_numpy()}).sort_values("ds")
    months = pd.date_range(frame["ds"].iloc[0], frame["ds"].iloc[-1], freq="MS")
    values = frame.set_index("ds")["y"].reindex(months, fill_value=0.0)
    return pd.DataFrame({"ds": months, "y": values.to_numpy(float)})


def _simple_reason(y: np.ndarray, min_months: int) -> str | None:
    """Why a simple method replaces Prophet, or None when Prophet should run."""
    if np.all(y == 0):
        return "every month of the history is 0"
    if len(y) < min_months:
        return f"only {len(y)} months of history, Prophet needs {min_months}"
    if np.all(y == y[0]):
        return f"history is constant at {y[0]:,.2f}"
    zero_share = float(np.mean(y == 0))
    if zero_share > INTERMITTENT_ZERO_SHARE:
        return (
            f"intermittent series: {zero_share:.0%} of months are 0 "
            f"(limit {INTERMITTENT_ZERO_SHARE:.0%})"
        )
    return None


def _simple_forecast(
    y: np.ndarray, future: pd.DatetimeIndex, reason: str
) -> ForecastResult:
    """Forecast with the simplest method the history allows, noting `reason`."""
    horizon = len(future)
    if np.all(y == 0):
        zeros = np.zeros(horizon)
        return ForecastResult(
            _frame(future, zeros, zeros, zeros), "zero", f"{reason}; forecast is 0"
        )
    if len(y) >= 12:
        yhat, spread = _seasonal_naive(y, horizon)
        note = f"{reason}; seasonal naive (same month of the last 12) used"
        method = "seasonal_naive"
    else:
        yhat, spread = _naive(y, horizon)
        note = f"{reason}; mean of the last {min(NAIVE_MONTHS, len(y))} months used"
        method = "naive"
    frame = _frame(future, yhat, yhat - _Z_80 * spread, yhat + _Z_80 * spread)
    logger.info("%s forecast: %s", method, note)
    return ForecastResult(_clip(frame), method, note)


def _seasonal_naive(y: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Repeat the last 12 months; spread from the year-on-year differences.

    The spread (a standard deviation) grows with the square root of the
    number of years ahead, as for a seasonal random walk.
    """
    steps = np.arange(horizon)
    yhat = y[len(y) - 12 + steps % 12]
    year_diffs = y[12:] - y[:-12]
    sd = float(np.std(year_diffs, ddof=1)) if len(year_diffs) >= 2 else 0.0
    return yhat, sd * np.sqrt(steps // 12 + 1)


def _naive(y: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Repeat the mean of the last 3 months; spread from the whole history."""
    level = float(np.mean(y[-NAIVE_MONTHS:]))
    sd = float(np.std(y, ddof=1)) if len(y) >= 2 else 0.0
    return np.full(horizon, level), np.full(horizon, sd)


def _usable_regressors(
    regressors: pd.DataFrame | None,
    history_ds: pd.Series,
    future: pd.DatetimeIndex,
) -> tuple[pd.DataFrame | None, list[tuple[str, str]]]:
    """Keep the regressor columns that have a value for every needed month.

    Returns the kept columns with ds (None when none is kept) and the
    (name, reason) pairs of the dropped ones.
    """
    if regressors is None:
        return None, []
    if "ds" not in regressors.columns:
        raise ForecastError(
            "regressors lack a ds column; pass one row per month with ds and "
            "one column per regressor"
        )

    frame = regressors.copy()
    frame["ds"] = pd.to_datetime(frame["ds"]).dt.to_period("M").dt.to_timestamp()
    repeated = frame["ds"].duplicated()
    if repeated.any():
        month = frame.loc[repeated, "ds"].iloc[0].strftime("%Y-%m")
        raise ForecastError(
            f"regressors have more than one row for {month}; keep one per month"
        )

    needed = pd.DatetimeIndex(history_ds).append(future)
    frame = frame.set_index("ds").reindex(needed)
    kept: list[str] = []
    dropped: list[tuple[str, str]] = []
    for name in frame.columns:
        values = pd.to_numeric(frame[name], errors="coerce")
        gaps = needed[values.isna().to_numpy()]
        if len(gaps):
            dropped.append(
                (
                    str(name),
                    f"no value for {len(gaps)} needed month(s) from "
                    f"{gaps[0].strftime('%Y-%m')}",
                )
            )
            logger.warning("regressor %s dropped: no value for %s", name, gaps[0])
            continue
        frame[name] = values
        kept.append(str(name))

    if not kept:
        return None, dropped
    used = frame[kept].rename_axis("ds").reset_index()
    return used, dropped


def _silence_stan() -> None:
    """Keep Prophet's and cmdstanpy's INFO log records off the console."""
    from cmdstanpy.utils import get_logger

    # cmdstanpy sets its logger to DEBUG on the first get_logger() call, so
    # make that call first and lower the level after it.
    get_logger()
    for name in ("cmdstanpy", "prophet"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _new_prophet(regressor_names: list[str]):
    """Build a Prophet model with yearly seasonality and the given regressors."""
    _silence_stan()
    from prophet import Prophet

    model = Prophet(
        yearly_seasonality=YEARLY_FOURIER_ORDER,
        weekly_seasonality=False,
        daily_seasonality=False,
        interval_width=INTERVAL_WIDTH,
    )
    for name in regressor_names:
        try:
            model.add_regressor(name)
        except ValueError as exc:
            raise ForecastError(
                f"regressor name {name!r} is rejected by Prophet ({exc}); rename "
                "the column"
            ) from exc
    return model


def _prophet_forecast(
    model,
    series: pd.DataFrame,
    future: pd.DatetimeIndex,
    regressors: pd.DataFrame | None,
) -> pd.DataFrame:
    """Fit `model` to `series` and return the forecast months."""
    train = series.copy()
    ahead = pd.DataFrame({"ds": future})
    if regressors is not None:
        train = train.merge(regressors, on="ds", how="left")
        ahead = ahead.merge(regressors, on="ds", how="left")
    with warnings.catch_warnings():
        # Prophet 1.5 calls pandas APIs that pandas 3 deprecates; the
        # warnings concern Prophet's code, not the caller's.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="prophet")
        model.fit(train)
        predicted = model.predict(ahead)
    return _frame(
        future,
        predicted["yhat"].to_numpy(float),
        predicted["yhat_lower"].to_numpy(float),
        predicted["yhat_upper"].to_numpy(float),
    )


def _frame(
    ds: pd.DatetimeIndex, yhat: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> pd.DataFrame:
    return pd.DataFrame(
        {"ds": ds, "yhat": yhat, "yhat_lower": lower, "yhat_upper": upper}
    )


def _clip(frame: pd.DataFrame) -> pd.DataFrame:
    clipped = frame.copy()
    for column in ("yhat", "yhat_lower", "yhat_upper"):
        clipped[column] = clipped[column].clip(lower=0.0)
    return clipped


# --------------------------------------------------------------------------
# Backtest


def backtest(
    history: pd.DataFrame, holdout: int = 12, growth_pct: float = 0.05
) -> pd.DataFrame:
    """Score three methods on the last `holdout` months of `history`.

    Each method is fitted on the months before the holdout only. Rows, in order:
    the method `forecast_series` chooses for that training span ("prophet"
    or its fallback), "seasonal_naive" (same month a year earlier) and
    "last_year_plus_growth" (same month a year earlier times 1 +
    `growth_pct`, compounded per further year). Each method appears once:
    when the rules choose seasonal naive, its row is the chosen one and no
    second seasonal-naive row follows.

    Columns: method; wape = sum |actual - forecast| / sum |actual|; bias =
    sum(forecast - actual) / sum(actual), positive when the method
    over-forecasts; actual and forecast, the sums over the holdout; chosen,
    True on the row of the method `forecast_series` would use. wape is NaN
    when every held-out month is 0 and bias when the held-out months sum
    to 0. The year-earlier rows are NaN when the training span has fewer
    than 12 months.

    Raises ForecastError when `holdout` < 1 or `history` has no more than
    `holdout` months.
    """
    if holdout < 1:
        raise ForecastError(f"holdout must be at least 1 month, got {holdout}")
    series = _prepare_history(history)
    if len(series) <= holdout:
        raise ForecastError(
            f"history has {len(series)} months, not more than the holdout of "
            f"{holdout}; use a shorter holdout or a longer history"
        )
    train = series.iloc[:-holdout]
    actual = series["y"].iloc[-holdout:].to_numpy(float)
    train_y = train["y"].to_numpy(float)

    chosen = forecast_series(train, holdout)
    rows = [_score(chosen.method, actual, chosen.frame["yhat"].to_numpy(float))]
    if len(train_y) >= 12:
        same_month, _ = _seasonal_naive(train_y, holdout)
        years_ahead = np.arange(holdout) // 12 + 1
        growth = (1.0 + growth_pct) ** years_ahead
    else:
        same_month = np.full(holdout, np.nan)
        growth = 1.0
    if chosen.method != "seasonal_naive":
        rows.append(_score("seasonal_naive", actual, same_month))
    rows.append(_score("last_year_plus_growth", actual, same_month * growth))
    frame = pd.DataFrame(rows, columns=BACKTEST_COLUMNS)
    frame["chosen"] = frame["method"] == chosen.method
    return frame


def _score(method: str, actual: np.ndarray, forecast: np.ndarray) -> dict:
    total_actual = float(np.sum(actual))
    total_forecast = float(np.sum(forecast))
    absolute = float(np.sum(np.abs(actual)))
    wape = float(np.sum(np.abs(actual - forecast))) / absolute if absolute else math.nan
    bias = (total_forecast - total_actual) / total_actual if total_actual else math.nan
    return {
        "method": method,
        "wape": wape,
        "bias": bias,
        "actual": total_actual,
        "forecast": total_forecast,
    }


# --------------------------------------------------------------------------
# Many series


def forecast_many(
    series: pd.DataFrame,
    horizon: int,
    workers: int = 1,
    progress: bool = False,
    min_months: int = 24,
) -> pd.DataFrame:
    """Forecast every series of `series` with `forecast_series`.

    `series` has columns series_id, ds and y, as `monthly_series` returns.
    With `workers` > 1 the series are fitted in that many processes; a
    tqdm progress bar on stderr counts finished series when `progress` is
    true. Returns series_id, ds, yhat, yhat_lower, yhat_upper, method and
    note, series in order of first appearance.

    Raises ForecastError naming the series when one cannot be forecast, or
    when `series` lacks a column or `workers` < 1.
    """
    missing = [c for c in SERIES_COLUMNS if c not in series.columns]
    if missing:
        raise ForecastError(
            f"series lacks column(s) {missing}; pass the frame monthly_series returns"
        )
    if workers < 1:
        raise ForecastError(f"workers must be at least 1, got {workers}")
    jobs = [
        (series_id, group[["ds", "y"]].reset_index(drop=True), horizon, min_months)
        for series_id, group in series.groupby("series_id", sort=False)
    ]
    if not jobs:
        return pd.DataFrame(columns=MANY_COLUMNS)

    results: dict[object, pd.DataFrame] = {}
    with tqdm(
        total=len(jobs), disable=not progress, desc="forecast", unit="series"
    ) as bar:
        for series_id, frame in _run_jobs(jobs, workers):
            results[series_id] = frame
            bar.update(1)
    ordered = [results[job[0]] for job in jobs]
    return pd.concat(ordered, ignore_index=True)[MANY_COLUMNS]


def _run_jobs(jobs: list[tuple], workers: int) -> Iterator[tuple[object, pd.DataFrame]]:
    """Yield each job's result as it finishes, in this process or in a pool."""
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            yield _forecast_job(job)
        return
    executor: Executor = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)), mp_context=_process_context()
    )
    with executor:
        futures = [executor.submit(_forecast_job, job) for job in jobs]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.cancel()


def _process_context() -> multiprocessing.context.BaseContext:
    # forkserver avoids forking a parent that runs threads (a Jupyter kernel
    # does); spawn is the portable fallback where forkserver is missing.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context(
        "forkserver" if "forkserver" in methods else "spawn"
    )


def _forecast_job(job: tuple) -> tuple[object, pd.DataFrame]:
    """Forecast one series in a worker; module level so it pickles."""
    series_id, history, horizon, min_months = job
    try:
        result = forecast_series(history, horizon, min_months=min_months)
    except ForecastError as exc:
        raise ForecastError(f"series {series_id!r}: {exc}") from exc
    frame = result.frame.copy()
    frame.insert(0, "series_id", series_id)
    frame["method"] = result.method
    frame["note"] = result.note
    return series_id, frame


# --------------------------------------------------------------------------
# Storage shape


def forecast_table(
    result_frame: pd.DataFrame,
    as_of: date,
    region: str | None,
    business_unit: str | None,
) -> pd.DataFrame:
    """Stamp a forecast frame with the run's as-of date, scope and creation time.

    Returns a copy of `result_frame` with as_of (date), region and
    business_unit (None for "all") in front and created_at (UTC, without
    zone) at the end, ready to be appended to the mart's `forecasts` table by
    the publish step. Nothing is written here.

    Raises ForecastError when `result_frame` lacks ds or yhat.
    """
    missing = [c for c in ("ds", "yhat") if c not in result_frame.columns]
    if missing:
        raise ForecastError(
            f"forecast frame lacks column(s) {missing}; pass ForecastResult.frame "
            "or the frame forecast_many returns"
        )
    table = result_frame.copy()
    table.insert(0, "business_unit", business_unit)
    table.insert(0, "region", region)
    table.insert(0, "as_of", pd.Timestamp(as_of).date())
    table["created_at"] = pd.Timestamp(datetime.now(timezone.utc).replace(tzinfo=None))
    return table.reset_index(drop=True)
