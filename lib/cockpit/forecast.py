"""Revenue forecasts: series from the mart, Prophet, fallbacks, backtests.

`monthly_series` and `weekly_series` turn invoice lines into one revenue
series per member of a dimension. `forecast_series` fits Prophet with
yearly seasonality to one series. `ForecastOptions` and the regressors add
drivers: market indicators, working days and one-off windows (see
cockpit.drivers). When the series is too short, constant,
mostly zero or intermittent, a simple method runs instead and
`ForecastResult.note` records why. `backtest` compares the chosen method
with seasonal naive and the last-year-plus-growth rule on held-out months.
`forecast_many` runs many series in parallel processes, and
`forecast_table` stamps a result with its as-of date so that it can be
appended to the mart's `forecasts` table (cockpit.forecast_store).

Amounts are in the mart's reporting currency. Periods are identified by
their first day (`ds`, a pandas Timestamp): the first of the month, or the
Monday of the week. Forecasts and their intervals are clipped at 0 because
revenue of a period is not expected to be negative.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import date, datetime, timezone

import duckdb
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cockpit.drivers import (
    WORKING_DAYS_COLUMN,
    OneOffWindow,
    RegressorSet,
    check_frequency,
    one_off_columns,
    period_start,
    working_days,
)
from cockpit.errors import ForecastError
from cockpit.mart.store import require_tables
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: Methods a forecast can come from, from the richest to the simplest.
METHODS = ("prophet", "seasonal_naive", "sba", "naive", "zero")

#: Width of the prediction interval of every method (Prophet's default).
INTERVAL_WIDTH = 0.8

#: Fourier order of Prophet's yearly seasonality for monthly series. Twelve
#: monthly points a year determine at most 6 harmonics, and the 6th only
#: alternates sign between month starts. The order was chosen on the demo
#: mart at scale 1 with a rolling-origin backtest of the 12 region x unit
#: series (origins 2025-03, 2025-06 and 2025-09, 12 months ahead). There the
#: pooled WAPE was 0.142 with order 3, 0.107 with order 5 and 0.128 with
#: Prophet's default 10; docs/forecasting.md has the table.
YEARLY_FOURIER_ORDER = 5

#: Fourier order of the yearly seasonality for weekly series (Prophet's default).
WEEKLY_YEARLY_FOURIER_ORDER = 10

#: Standard normal quantile for a central 80 % interval.
_Z_80 = 1.2815515655446004

#: A series whose share of zero periods exceeds this is treated as intermittent.
INTERMITTENT_ZERO_SHARE = 0.5

#: Months of history the naive method averages.
NAIVE_MONTHS = 3

#: Smoothing constant of Croston's method, as in Syntetos and Boylan (2005).
CROSTON_ALPHA = 0.1

#: Periods a year per frequency, the season length of the simple methods.
SEASON = {"month": 12, "week": 52}

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
class ForecastOptions:
    """Settings of `forecast_series` beyond the history and the horizon.

    `frequency` is "month" or "week". `yearly_order` is the Fourier order
    of Prophet's yearly seasonality; None takes YEARLY_FOURIER_ORDER for
    months and WEEKLY_YEARLY_FOURIER_ORDER for weeks. `seasonality_mode`
    is Prophet's "additive" or "multiplicative". `holidays_country` (an
    ISO code such as "DE") adds the working days of each period as a
    regressor. `one_off` lists windows (a shutdown) whose effect must not
    repeat. `uncertainty_samples` is passed to Prophet; 0 skips the
    sampling and the interval then equals the point forecast. With
    `use_prophet` false every series gets the simple method its history
    calls for, which the hierarchy uses for its fine levels.
    """

    frequency: str = "month"
    yearly_order: int | None = None
    seasonality_mode: str = "additive"
    holidays_country: str | None = None
    one_off: tuple[OneOffWindow, ...] = ()
    uncertainty_samples: int = 1000
    use_prophet: bool = True

    def __post_init__(self) -> None:
        check_frequency(self.frequency)
        if self.seasonality_mode not in ("additive", "multiplicative"):
            raise ForecastError(
                f"unknown seasonality mode {self.seasonality_mode!r}; use "
                "additive or multiplicative"
            )
        if self.yearly_order is not None and self.yearly_order < 1:
            raise ForecastError(
                f"yearly_order must be at least 1, got {self.yearly_order}"
            )

    @property
    def season(self) -> int:
        """Periods in a year at this frequency."""
        return SEASON[self.frequency]

    @property
    def step(self) -> pd.DateOffset:
        """Offset from one period start to the next."""
        return (
            pd.DateOffset(months=1)
            if self.frequency == "month"
            else pd.DateOffset(weeks=1)
        )

    @property
    def order(self) -> int:
        """Fourier order of the yearly seasonality that Prophet gets."""
        if self.yearly_order is not None:
            return self.yearly_order
        if self.frequency == "month":
            return YEARLY_FOURIER_ORDER
        return WEEKLY_YEARLY_FOURIER_ORDER

    def periods(self, months: int) -> int:
        """Number of periods that cover `months` months, rounded up."""
        return math.ceil(months * self.season / 12)


@dataclass(frozen=True)
class ForecastResult:
    """Forecast of one series.

    `frame` has one row per forecast period: ds (period start), yhat,
    yhat_lower and yhat_upper (80 % interval), all clipped at 0. `method` is
    one of METHODS. `note` explains a fallback, a dropped or extended
    regressor and the calendar drivers used, and is empty when Prophet ran
    on the series as given. `fitted` contains the method's in-sample fit per
    history period (NaN where the method has none, such as the first year
    of seasonal naive), used to estimate forecast error covariances.
    """

    frame: pd.DataFrame
    method: str
    note: str = ""
    fitted: np.ndarray | None = field(default=None, compare=False, repr=False)


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
    return _period_series(con, scope, by, end, "month")


def weekly_series(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    by: str | None = "product_line",
    end: date | None = None,
) -> pd.DataFrame:
    """Sum net revenue per week (Monday to Sunday) and per value of `by`.

    Same as `monthly_series` with weeks: ds is the Monday, and the week
    containing `end` counts only when `end` is its Sunday.
    """
    return _period_series(con, scope, by, end, "week")


def _period_series(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None,
    by: str | None,
    end: date | None,
    frequency: str,
) -> pd.DataFrame:
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
    last_period = last_complete_period(end, frequency)
    step = pd.DateOffset(months=1) if frequency == "month" else pd.DateOffset(weeks=1)

    key_sql = "'total'" if by is None else f"coalesce({_BY_SQL[by]}, ?)"
    key_params = [] if by is None else [MISSING_LABEL]
    where_sql, where_params = scope.where("t.")
    unit = "month" if frequency == "month" else "week"
    query = f"""
        SELECT CAST({key_sql} AS VARCHAR) AS series_id,
               CAST(date_trunc('{unit}', t.date) AS DATE) AS ds,
               sum(t.net_revenue) AS y
        FROM transactions t
        LEFT JOIN products p ON p.product_id = t.product_id
        LEFT JOIN reps r ON r.rep_id = t.rep_id
        WHERE {where_sql} AND t.date < ?
        GROUP BY ALL
    """
    first_excluded = (last_period + step).date()
    raw = con.execute(query, [*key_params, *where_params, first_excluded]).df()
    if raw.empty:
        logger.info("no revenue in %s up to %s", scope.label(), last_period.date())
        return _empty_series()

    raw["ds"] = pd.to_datetime(raw["ds"])
    freq = "MS" if frequency == "month" else "W-MON"
    frames = []
    for series_id, group in raw.groupby("series_id", sort=True):
        periods = pd.date_range(group["ds"].min(), last_period, freq=freq)
        values = group.set_index("ds")["y"].reindex(periods, fill_value=0.0)
        frames.append(
            pd.DataFrame(
                {"series_id": series_id, "ds": periods, "y": values.to_numpy(float)}
            )
        )
    result = pd.concat(frames, ignore_index=True)
    logger.info(
        "%d %sly series of %s up to %s",
        len(frames),
        frequency,
        scope.label(),
        last_period.date(),
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
    return last_complete_period(end, "month")


def last_complete_period(end: date, frequency: str = "month") -> pd.Timestamp:
    """Start of the last month or week (Monday) that `end` covers entirely."""
    end_ts = pd.Timestamp(end).normalize()
    if frequency == "week":
        monday = end_ts - pd.Timedelta(days=end_ts.weekday())
        return monday if end_ts.weekday() == 6 else monday - pd.Timedelta(weeks=1)
    check_frequency(frequency)
    month = end_ts.to_period("M").to_timestamp()
    if end_ts == month + pd.offsets.MonthEnd(0):
        return month
    return month - pd.DateOffset(months=1)


# --------------------------------------------------------------------------
# One series


def forecast_series(
    history: pd.DataFrame,
    horizon: int,
    regressors: pd.DataFrame | RegressorSet | None = None,
    min_months: int = 24,
    options: ForecastOptions | None = None,
) -> ForecastResult:
    """Forecast `horizon` periods after the last period of `history`.

    `history` has columns ds (any day of the period) and y (revenue of that
    period); periods are months unless `options.frequency` is "week".
    Periods missing between the first and the last are taken as 0. Prophet
    with yearly seasonality runs when the series covers at least
    `min_months` months, is not constant and has no more than half of its
    periods at 0. Otherwise a simple method runs and the note names the
    rule that applied. An intermittent series (more than half zeros) gets
    Croston's method with the Syntetos-Boylan correction (SBA). A series
    with at least a year of history repeats its last year (seasonal
    naive), a shorter one repeats the mean of its last 3 months (naive),
    and an all-zero one gets 0.
    Prophet failing to fit also falls back to a simple method with a note.

    `regressors` has ds and one numeric column per external regressor, with
    a value for every history and forecast period, or is a RegressorSet
    whose notes (lags, extensions) are copied into the result's note.
    Prophet uses each regressor that covers that span; the others are
    dropped with a note. `options` adds working days and one-off windows
    (see ForecastOptions). Simple methods ignore regressors and working
    days. They replace one-off periods of the history by the same period
    a year earlier or later before they repeat it.

    Raises ForecastError when `history` is empty, lacks ds or y, has a
    missing or infinite y, repeats a period, when `horizon` < 1, or when
    `regressors` lack ds, repeat a period or use a name Prophet reserves.
    """
    options = options or ForecastOptions()
    if horizon < 1:
        raise ForecastError(f"horizon must be at least 1 period, got {horizon}")
    series = _prepare_history(history, options.frequency)
    y = series["y"].to_numpy(float)
    future = pd.date_range(
        series["ds"].iloc[-1] + options.step,
        periods=horizon,
        freq="MS" if options.frequency == "month" else "W-MON",
    )
    regressor_notes: list[str] = []
    if isinstance(regressors, RegressorSet):
        regressor_notes = list(regressors.notes)
        regressors = regressors.frame

    reason = _simple_reason(y, options.periods(min_months), options)
    if reason is None and not options.use_prophet:
        reason = "simple method chosen for this level"
    if reason is not None:
        if regressors is not None:
            reason += "; regressors ignored"
        return _simple_forecast(y, series["ds"], future, reason, options)

    calendar, calendar_notes = _calendar_regressors(series["ds"], future, options)
    if calendar is not None:
        regressors = (
            calendar
            if regressors is None
            else _merge_regressors(regressors, calendar, options.frequency)
        )
    used, dropped = _usable_regressors(
        regressors, series["ds"], future, options.frequency
    )
    notes = [*regressor_notes, *calendar_notes]
    notes += [f"regressor {name} dropped: {why}" for name, why in dropped]
    names = [] if used is None else list(used.columns.drop("ds"))
    model = _new_prophet(names, options)
    try:
        frame, fitted = _prophet_forecast(model, series, future, used)
    except (RuntimeError, ValueError) as exc:
        logger.warning("Prophet failed on a %d-period series: %s", len(y), exc)
        fallback = f"Prophet failed ({exc}); simple method used"
        return _simple_forecast(
            y, series["ds"], future, "; ".join([fallback, *notes]), options
        )
    return ForecastResult(_clip(frame), "prophet", "; ".join(notes), fitted)


def _prepare_history(history: pd.DataFrame, frequency: str = "month") -> pd.DataFrame:
    """Check `history` and return it as consecutive period starts with float y."""
    missing = [c for c in ("ds", "y") if c not in history.columns]
    if missing:
        raise ForecastError(
            f"history lacks column(s) {missing}; pass a frame with ds (period "
            "start) and y (revenue)"
        )
    if history.empty:
        raise ForecastError(
            "history is empty; a forecast needs at least one period of revenue"
        )
    label = "%Y-%m" if frequency == "month" else "%Y-%m-%d"
    try:
        ds = period_start(history["ds"], frequency)
    except (ValueError, TypeError) as exc:
        raise ForecastError(
            f"history column ds does not parse as dates ({exc}); pass period "
            "start dates such as 2024-01-01"
        ) from exc
    ds.index = history.index
    y = pd.to_numeric(history["y"], errors="coerce").astype(float)
    bad = ~np.isfinite(y.to_numpy())
    if bad.any():
        period = ds[bad].iloc[0].strftime(label)
        raise ForecastError(
            f"history y is missing or not a finite number for {period}; "
            "put 0 for a period without revenue"
        )
    repeated = ds.duplicated()
    if repeated.any():
        period = ds[repeated].iloc[0].strftime(label)
        raise ForecastError(
            f"history has more than one row for {period}; sum revenue per "
            f"{frequency} first"
        )

    frame = pd.DataFrame({"ds": ds.to_numpy(), "y": y.to_numpy()}).sort_values("ds")
    freq = "MS" if frequency == "month" else "W-MON"
    periods = pd.date_range(frame["ds"].iloc[0], frame["ds"].iloc[-1], freq=freq)
    values = frame.set_index("ds")["y"].reindex(periods, fill_value=0.0)
    return pd.DataFrame({"ds": periods, "y": values.to_numpy(float)})


def _simple_reason(
    y: np.ndarray, min_periods: int, options: ForecastOptions | None = None
) -> str | None:
    """Why a simple method replaces Prophet, or None when Prophet should run."""
    unit = "months" if options is None or options.frequency == "month" else "weeks"
    if np.all(y == 0):
        return f"every {unit[:-1]} of the history is 0"
    if len(y) < min_periods:
        return f"only {len(y)} {unit} of history, Prophet needs {min_periods}"
    if np.all(y == y[0]):
        return f"history is constant at {y[0]:,.2f}"
    zero_share = float(np.mean(y == 0))
    if zero_share > INTERMITTENT_ZERO_SHARE:
        return (
            f"intermittent series: {zero_share:.0%} of {unit} are 0 "
            f"(limit {INTERMITTENT_ZERO_SHARE:.0%})"
        )
    return None


def _simple_forecast(
    y: np.ndarray,
    history_ds: pd.Series,
    future: pd.DatetimeIndex,
    reason: str,
    options: ForecastOptions,
) -> ForecastResult:
    """Forecast with the simplest method the history allows, noting `reason`."""
    horizon = len(future)
    season = options.season
    if np.all(y == 0):
        zeros = np.zeros(horizon)
        return ForecastResult(
            _frame(future, zeros, zeros, zeros),
            "zero",
            f"{reason}; forecast is 0",
            np.zeros(len(y)),
        )
    y, window_note = _without_one_off(y, history_ds, options)
    if window_note:
        reason = f"{reason}; {window_note}"
    zero_share = float(np.mean(y == 0))
    if zero_share > INTERMITTENT_ZERO_SHARE and np.count_nonzero(y) >= 2:
        yhat, spread, fitted = _sba(y, horizon)
        note = f"{reason}; Croston's method with SBA correction used"
        method = "sba"
    elif len(y) >= season:
        yhat, spread = _seasonal_naive(y, horizon, season)
        fitted = np.r_[np.full(season, np.nan), y[:-season]]
        note = f"{reason}; seasonal naive (same period of the last year) used"
        method = "seasonal_naive"
    else:
        naive_periods = options.periods(NAIVE_MONTHS)
        yhat, spread = _naive(y, horizon, naive_periods)
        fitted = _naive_fitted(y, naive_periods)
        shown = min(naive_periods, len(y))
        unit = "months" if options.frequency == "month" else "weeks"
        note = f"{reason}; mean of the last {shown} {unit} used"
        method = "naive"
    frame = _frame(future, yhat, yhat - _Z_80 * spread, yhat + _Z_80 * spread)
    logger.info("%s forecast: %s", method, note)
    return ForecastResult(_clip(frame), method, note, fitted)


def _seasonal_naive(
    y: np.ndarray, horizon: int, season: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """Repeat the last season; spread from the year-on-year differences.

    The spread (a standard deviation) grows with the square root of the
    number of years ahead, as for a seasonal random walk.
    """
    steps = np.arange(horizon)
    yhat = y[len(y) - season + steps % season]
    year_diffs = y[season:] - y[:-season]
    sd = float(np.std(year_diffs, ddof=1)) if len(year_diffs) >= 2 else 0.0
    return yhat, sd * np.sqrt(steps // season + 1)


def _naive(
    y: np.ndarray, horizon: int, periods: int = NAIVE_MONTHS
) -> tuple[np.ndarray, np.ndarray]:
    """Repeat the mean of the last `periods` periods; spread from the whole history."""
    level = float(np.mean(y[-periods:]))
    sd = float(np.std(y, ddof=1)) if len(y) >= 2 else 0.0
    return np.full(horizon, level), np.full(horizon, sd)


def _naive_fitted(y: np.ndarray, periods: int) -> np.ndarray:
    fitted = np.full(len(y), np.nan)
    for t in range(1, len(y)):
        fitted[t] = np.mean(y[max(0, t - periods) : t])
    return fitted


def _sba(y: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Croston's method with the Syntetos-Boylan correction.

    Demand sizes z and intervals p between non-zero periods are smoothed
    with CROSTON_ALPHA. They start from the mean demand size and the mean
    interval since the first demand, so that leading zeros (before an
    account's first purchase) do not count. The forecast per period is
    (1 - alpha / 2) * z / p. The spread is the standard deviation of the
    one-step-ahead errors. Returns the forecast, the spread and the
    one-step-ahead in-sample fit.
    """
    alpha = CROSTON_ALPHA
    correction = 1 - alpha / 2
    demand = np.flatnonzero(y != 0)
    size = float(np.mean(y[demand]))
    interval = (len(y) - demand[0]) / len(demand)
    since = 0
    fitted = np.full(len(y), np.nan)
    for t in range(demand[0] + 1, len(y)):
        fitted[t] = correction * size / interval
        since += 1
        if y[t] != 0:
            size += alpha * (y[t] - size)
            interval += alpha * (since - interval)
            since = 0
    level = correction * size / interval
    errors = (y - fitted)[np.isfinite(fitted)]
    sd = float(np.std(errors, ddof=1)) if len(errors) >= 2 else 0.0
    return np.full(horizon, level), np.full(horizon, sd), fitted


def _without_one_off(
    y: np.ndarray, history_ds: pd.Series, options: ForecastOptions
) -> tuple[np.ndarray, str]:
    """Replace one-off periods by the same period a year before or after.

    A period counts as one-off when any of its days lies in a window. When
    neither neighbouring year is usable, the mean of the other periods is
    used. Returns the cleaned values and a note (empty when nothing changed).
    """
    if not options.one_off:
        return y, ""
    periods = pd.DatetimeIndex(history_ds)
    shares = one_off_columns(periods, options.frequency, options.one_off)
    marked = (shares.drop(columns="ds").to_numpy() > 0).any(axis=1)
    if not marked.any():
        return y, ""
    cleaned = y.copy()
    season = options.season
    for t in np.flatnonzero(marked):
        for other in (t - season, t + season):
            if 0 <= other < len(y) and not marked[other]:
                cleaned[t] = y[other]
                break
        else:
            cleaned[t] = float(np.mean(y[~marked])) if (~marked).any() else y[t]
    names = ", ".join(w.name for w in options.one_off)
    return (
        cleaned,
        f"{int(marked.sum())} period(s) of one-off window(s) {names} replaced",
    )


def _calendar_regressors(
    history_ds: pd.Series, future: pd.DatetimeIndex, options: ForecastOptions
) -> tuple[pd.DataFrame | None, list[str]]:
    """Working days and one-off window columns for history and future periods."""
    periods = pd.DatetimeIndex(history_ds).append(future)
    frame = pd.DataFrame({"ds": periods})
    notes: list[str] = []
    if options.holidays_country:
        counts, note = working_days(
            periods, options.frequency, options.holidays_country
        )
        frame[WORKING_DAYS_COLUMN] = counts
        notes.append(note)
    if options.one_off:
        shares = one_off_columns(periods, options.frequency, options.one_off)
        in_history = len(history_ds)
        for window in options.one_off:
            column = shares[window.column].to_numpy()
            if not (column[:in_history] > 0).any():
                notes.append(
                    f"one-off window {window.name} ({window.start}..{window.end}) "
                    "is outside the history, so its effect cannot be estimated; "
                    "ignored"
                )
                continue
            frame[window.column] = column
            where = (
                "is 0 in the forecast"
                if not (column[in_history:] > 0).any()
                else ("applies again only inside the window")
            )
            notes.append(
                f"one-off window {window.name} ({window.start}..{window.end}) "
                f"modelled as a regressor that {where}"
            )
    if frame.shape[1] == 1:
        return None, notes
    return frame, notes


def _merge_regressors(
    regressors: pd.DataFrame, calendar: pd.DataFrame, frequency: str
) -> pd.DataFrame:
    if "ds" not in regressors.columns:
        raise ForecastError(
            "regressors lack a ds column; pass one row per period with ds and "
            "one column per regressor"
        )
    external = regressors.copy()
    external["ds"] = period_start(external["ds"], frequency).to_numpy()
    clash = [c for c in calendar.columns if c != "ds" and c in external.columns]
    if clash:
        raise ForecastError(
            f"regressor column(s) {clash} clash with the calendar regressors; "
            "rename them"
        )
    return calendar.merge(external, on="ds", how="left")


def _usable_regressors(
    regressors: pd.DataFrame | None,
    history_ds: pd.Series,
    future: pd.DatetimeIndex,
    frequency: str = "month",
) -> tuple[pd.DataFrame | None, list[tuple[str, str]]]:
    """Keep the regressor columns that have a value for every needed period.

    Returns the kept columns with ds (None when none is kept) and the
    (name, reason) pairs of the dropped ones.
    """
    if regressors is None:
        return None, []
    if "ds" not in regressors.columns:
        raise ForecastError(
            "regressors lack a ds column; pass one row per period with ds and "
            "one column per regressor"
        )

    label = "%Y-%m" if frequency == "month" else "%Y-%m-%d"
    frame = regressors.copy()
    frame["ds"] = period_start(frame["ds"], frequency).to_numpy()
    repeated = frame["ds"].duplicated()
    if repeated.any():
        period = frame.loc[repeated, "ds"].iloc[0].strftime(label)
        raise ForecastError(
            f"regressors have more than one row for {period}; keep one per period"
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
                    f"no value for {len(gaps)} needed period(s) from "
                    f"{gaps[0].strftime(label)}",
                )
            )
            logger.warning("regressor %s dropped: no value for %s", name, gaps[0])
            continue
        history_values = values.to_numpy()[: len(history_ds)]
        if np.all(history_values == history_values[0]):
            dropped.append((str(name), "constant over the history"))
            logger.warning("regressor %s dropped: constant over the history", name)
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


def _new_prophet(regressor_names: list[str], options: ForecastOptions | None = None):
    """Build a Prophet model with yearly seasonality and the given regressors."""
    options = options or ForecastOptions()
    _silence_stan()
    from prophet import Prophet

    model = Prophet(
        yearly_seasonality=options.order,
        weekly_seasonality=False,
        daily_seasonality=False,
        seasonality_mode=options.seasonality_mode,
        interval_width=INTERVAL_WIDTH,
        uncertainty_samples=options.uncertainty_samples,
    )
    for name in regressor_names:
        one_off = name.startswith("one_off_")
        try:
            # One-off windows act additively and unscaled, so that 0 in the
            # forecast means exactly "no event".
            model.add_regressor(
                name,
                standardize=False if one_off else "auto",
                mode="additive" if one_off else options.seasonality_mode,
            )
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
) -> tuple[pd.DataFrame, np.ndarray]:
    """Fit `model` to `series`; return the forecast periods and the in-sample fit."""
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
        # One predict call covers history and future. On a 33-month series
        # a Prophet 1.5 predict call took longer than the fit (about 0.10 s
        # against 0.06 s on a 2-core machine), so a second call would cost.
        both = pd.concat([train.drop(columns="y"), ahead], ignore_index=True)
        predicted = model.predict(both)
    inside = len(train)
    yhat = predicted["yhat"].to_numpy(float)
    lower = predicted.get("yhat_lower", predicted["yhat"]).to_numpy(float)
    upper = predicted.get("yhat_upper", predicted["yhat"]).to_numpy(float)
    frame = _frame(future, yhat[inside:], lower[inside:], upper[inside:])
    return frame, yhat[:inside]


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
    history: pd.DataFrame,
    holdout: int = 12,
    growth_pct: float = 0.05,
    options: ForecastOptions | None = None,
    regressors: pd.DataFrame | RegressorSet | None = None,
) -> pd.DataFrame:
    """Score three methods on the last `holdout` periods of `history`.

    Each method is fitted on the periods before the holdout only. Rows, in
    order: the method `forecast_series` chooses for that training span
    ("prophet" or its fallback), "seasonal_naive" (same period a year
    earlier) and "last_year_plus_growth" (same period a year earlier times
    1 + `growth_pct`, compounded per further year). Each method appears
    once: when the rules choose seasonal naive, its row is the chosen one
    and no second seasonal-naive row follows. `options` and `regressors`
    go to `forecast_series`.

    Columns: method; wape = sum |actual - forecast| / sum |actual|; bias =
    sum(forecast - actual) / sum(actual), positive when the method
    over-forecasts; actual and forecast, the sums over the holdout; chosen,
    True on the row of the method `forecast_series` would use. wape is NaN
    when every held-out period is 0 and bias when the held-out periods sum
    to 0. The year-earlier rows are NaN when the training span is shorter
    than a year.

    Raises ForecastError when `holdout` < 1 or `history` has no more than
    `holdout` periods.
    """
    options = options or ForecastOptions()
    if holdout < 1:
        raise ForecastError(f"holdout must be at least 1 period, got {holdout}")
    series = _prepare_history(history, options.frequency)
    if len(series) <= holdout:
        raise ForecastError(
            f"history has {len(series)} periods, not more than the holdout of "
            f"{holdout}; use a shorter holdout or a longer history"
        )
    train = series.iloc[:-holdout]
    actual = series["y"].iloc[-holdout:].to_numpy(float)
    train_y = train["y"].to_numpy(float)

    chosen = forecast_series(train, holdout, regressors=regressors, options=options)
    rows = [_score(chosen.method, actual, chosen.frame["yhat"].to_numpy(float))]
    same_period, growth = last_year_baseline(train_y, holdout, growth_pct, options)
    if chosen.method != "seasonal_naive":
        rows.append(_score("seasonal_naive", actual, same_period))
    rows.append(_score("last_year_plus_growth", actual, same_period * growth))
    frame = pd.DataFrame(rows, columns=BACKTEST_COLUMNS)
    frame["chosen"] = frame["method"] == chosen.method
    return frame


def last_year_baseline(
    train_y: np.ndarray,
    horizon: int,
    growth_pct: float,
    options: ForecastOptions | None = None,
) -> tuple[np.ndarray, np.ndarray | float]:
    """Same period a year earlier, and the growth factor of the old method.

    Returns the seasonal naive forecast of `horizon` periods (NaN when the
    training span is shorter than a year) and the factor 1 + `growth_pct`
    compounded once per year ahead, so the old method's forecast is their
    product.
    """
    season = (options or ForecastOptions()).season
    if len(train_y) >= season:
        same_period, _ = _seasonal_naive(train_y, horizon, season)
        years_ahead = np.arange(horizon) // season + 1
        return same_period, (1.0 + growth_pct) ** years_ahead
    return np.full(horizon, np.nan), 1.0


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
    options: ForecastOptions | None = None,
    regressors: Mapping[object, pd.DataFrame | RegressorSet]
    | pd.DataFrame
    | RegressorSet
    | None = None,
) -> pd.DataFrame:
    """Forecast every series of `series` with `forecast_series`.

    `series` has columns series_id, ds and y, as `monthly_series` returns.
    With `workers` > 1 the series are fitted in that many processes; a
    tqdm progress bar on stderr counts finished series when `progress` is
    true. `options` applies to every series. `regressors` is one frame or
    RegressorSet for every series, or a mapping from series_id to its own
    (series missing from the mapping get none). Returns series_id, ds,
    yhat, yhat_lower, yhat_upper, method and note, series in order of first
    appearance.

    Raises ForecastError naming the series when one cannot be forecast, or
    when `series` lacks a column or `workers` < 1.
    """
    results = forecast_many_results(
        series, horizon, workers, progress, min_months, options, regressors
    )
    if not results:
        return pd.DataFrame(columns=MANY_COLUMNS)
    frames = []
    for series_id, result in results.items():
        frame = result.frame.copy()
        frame.insert(0, "series_id", series_id)
        frame["method"] = result.method
        frame["note"] = result.note
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)[MANY_COLUMNS]


def forecast_many_results(
    series: pd.DataFrame,
    horizon: int,
    workers: int = 1,
    progress: bool = False,
    min_months: int = 24,
    options: ForecastOptions | None = None,
    regressors: Mapping[object, pd.DataFrame | RegressorSet]
    | pd.DataFrame
    | RegressorSet
    | None = None,
) -> dict[object, ForecastResult]:
    """Run `forecast_many` but return each series' ForecastResult, in order.

    The results keep the in-sample fit, which the hierarchy uses to
    estimate error covariances.
    """
    missing = [c for c in SERIES_COLUMNS if c not in series.columns]
    if missing:
        raise ForecastError(
            f"series lacks column(s) {missing}; pass the frame monthly_series returns"
        )
    if workers < 1:
        raise ForecastError(f"workers must be at least 1, got {workers}")
    options = options or ForecastOptions()
    jobs = []
    for series_id, group in series.groupby("series_id", sort=False):
        if isinstance(regressors, Mapping):
            own = regressors.get(series_id)
        else:
            own = regressors
        history = group[["ds", "y"]].reset_index(drop=True)
        jobs.append((series_id, history, horizon, min_months, options, own))
    if not jobs:
        return {}

    results: dict[object, ForecastResult] = {}
    with tqdm(
        total=len(jobs), disable=not progress, desc="forecast", unit="series"
    ) as bar:
        for series_id, result in _run_jobs(jobs, workers):
            results[series_id] = result
            bar.update(1)
    return {job[0]: results[job[0]] for job in jobs}


#: Series a worker process forecasts per task; batching keeps the cost of
#: sending histories between processes small next to the fits.
_JOBS_PER_TASK = 8


def _run_jobs(
    jobs: list[tuple], workers: int
) -> Iterator[tuple[object, ForecastResult]]:
    """Yield each job's result as it finishes, in this process or in a pool."""
    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            yield _forecast_job(job)
        return
    executor: Executor = ProcessPoolExecutor(
        max_workers=min(workers, len(jobs)), mp_context=_process_context()
    )
    size = max(1, min(_JOBS_PER_TASK, len(jobs) // (4 * workers)))
    batches = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    with executor:
        futures = [executor.submit(_forecast_batch, batch) for batch in batches]
        try:
            for future in as_completed(futures):
                yield from future.result()
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


def _forecast_batch(batch: list[tuple]) -> list[tuple[object, ForecastResult]]:
    """Forecast a batch of series in a worker; module level so it pickles."""
    return [_forecast_job(job) for job in batch]


def _forecast_job(job: tuple) -> tuple[object, ForecastResult]:
    """Forecast one series; module level so it pickles."""
    series_id, history, horizon, min_months, options, regressors = job
    try:
        result = forecast_series(
            history, horizon, regressors, min_months=min_months, options=options
        )
    except ForecastError as exc:
        raise ForecastError(f"series {series_id!r}: {exc}") from exc
    return series_id, result


# --------------------------------------------------------------------------
# Storage shape


def forecast_table(
    result_frame: pd.DataFrame,
    as_of: date,
    region: str | None,
    business_unit: str | None,
    level: str | None = None,
    frequency: str = "month",
) -> pd.DataFrame:
    """Stamp a forecast frame with the run's as-of date, scope and creation time.

    Returns a copy of `result_frame` with as_of (date), level, region and
    business_unit (None for "all") and frequency ("month" or "week") in
    front and created_at (UTC, without zone) at the end, ready to be
    appended to the mart's `forecasts` table with
    `cockpit.forecast_store.store_forecast`. A level or frequency column
    already in `result_frame` is kept. `level` names the dimension the
    series_id values belong to (e.g. "product_line"); accuracy over time
    can only be computed for rows that have one. Nothing is written here.

    Raises ForecastError when `result_frame` lacks ds or yhat.
    """
    missing = [c for c in ("ds", "yhat") if c not in result_frame.columns]
    if missing:
        raise ForecastError(
            f"forecast frame lacks column(s) {missing}; pass ForecastResult.frame "
            "or the frame forecast_many returns"
        )
    check_frequency(frequency)
    table = result_frame.copy()
    if "frequency" not in table.columns:
        table.insert(0, "frequency", frequency)
    table.insert(0, "business_unit", business_unit)
    table.insert(0, "region", region)
    if "level" not in table.columns:
        table.insert(0, "level", level)
    else:
        table.insert(0, "level", table.pop("level"))
    table.insert(0, "as_of", pd.Timestamp(as_of).date())
    table["created_at"] = pd.Timestamp(datetime.now(timezone.utc).replace(tzinfo=None))
    return table.reset_index(drop=True)
