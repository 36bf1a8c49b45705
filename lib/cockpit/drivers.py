"""Forecast drivers besides a series' own history.

Three kinds of driver feed Prophet as extra regressors:

- market indicators from the mart's `external` table (`external_regressors`),
  shifted by a lag in months and extended past their last value by a
  stated rule or a scenario file (`prepare_regressors`);
- working days per period from a country's public holidays
  (`working_days`), taken from the holiday tables Prophet itself uses;
- one-off windows such as a plant shutdown (`one_off_columns`), which are
  1 inside the window and 0 outside, so their effect is learnt from the
  history and not repeated in the forecast.

Every choice that changes the data (a lag, an extension, a window that
cannot be used) is written into `notes`, which the forecast result carries
to the report.

Periods are identified by their first day: the first of the month for
monthly series and the Monday for weekly ones.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from cockpit.errors import ForecastError
from cockpit.mart.store import require_tables

logger = logging.getLogger(__name__)

#: Rules that extend an indicator past its last value.
EXTENSION_RULES = ("carry_forward", "yoy_growth")

#: Human-readable name of each extension rule, used in notes.
EXTENSION_LABELS = {
    "carry_forward": "last value carried forward",
    "yoy_growth": "same month a year earlier times the last year-on-year growth",
}

#: Frequencies a series can have, with the pandas alias of their period starts.
FREQUENCIES = {"month": "MS", "week": "W-MON"}

#: Name of the working-days regressor column.
WORKING_DAYS_COLUMN = "working_days"

#: Prefix of one-off window regressor columns.
ONE_OFF_PREFIX = "one_off_"


@dataclass(frozen=True)
class RegressorSpec:
    """One market indicator used as a regressor.

    `indicator` and `region` select rows of the mart's `external` table;
    region None means the region of the series being forecast. The value
    used for month m is the indicator's value of month m - `lag`. Past the
    indicator's last value, `extension` ("carry_forward" or "yoy_growth")
    fills the months a scenario file does not cover.
    """

    indicator: str
    region: str | None = "ALL"
    lag: int = 0
    extension: str = "carry_forward"

    def __post_init__(self) -> None:
        if self.lag < 0:
            raise ForecastError(
                f"regressor {self.indicator}: lag must be 0 or more months, "
                f"got {self.lag}"
            )
        if self.extension not in EXTENSION_RULES:
            raise ForecastError(
                f"regressor {self.indicator}: unknown extension rule "
                f"{self.extension!r}; use one of {', '.join(EXTENSION_RULES)}"
            )

    @property
    def column(self) -> str:
        """Regressor column name: the indicator, with _lagN when lagged."""
        return self.indicator if self.lag == 0 else f"{self.indicator}_lag{self.lag}"


@dataclass(frozen=True)
class RegressorSet:
    """Regressor values per period with the notes that explain them.

    `frame` has ds (period start) and one numeric column per regressor.
    """

    frame: pd.DataFrame
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class OneOffWindow:
    """A past or planned event that must not repeat, such as a shutdown.

    The window covers `start` to `end`, both days included.
    """

    name: str
    start: date
    end: date

    def __post_init__(self) -> None:
        if pd.Timestamp(self.end) < pd.Timestamp(self.start):
            raise ForecastError(
                f"one-off window {self.name!r} ends ({self.end}) before it starts "
                f"({self.start}); swap the dates"
            )

    @property
    def column(self) -> str:
        """Regressor column name of the window."""
        cleaned = "".join(c if c.isalnum() else "_" for c in self.name.lower())
        return f"{ONE_OFF_PREFIX}{cleaned}"


def check_frequency(frequency: str) -> str:
    """Return the pandas alias of `frequency`; raise ForecastError if unknown."""
    try:
        return FREQUENCIES[frequency]
    except KeyError:
        raise ForecastError(
            f"unknown frequency {frequency!r}; use one of {', '.join(FREQUENCIES)}"
        ) from None


def period_start(values: pd.Series | pd.DatetimeIndex, frequency: str) -> pd.Series:
    """Map dates to the first day of their month or the Monday of their week."""
    ds = pd.Series(pd.to_datetime(values))
    if frequency == "week":
        day = ds.dt.normalize()
        return day - pd.to_timedelta(day.dt.day_of_week, unit="D")
    check_frequency(frequency)
    return ds.dt.to_period("M").dt.to_timestamp()


# --------------------------------------------------------------------------
# Market indicators


def read_indicators(
    con: duckdb.DuckDBPyConnection, specs: Sequence[RegressorSpec], region: str | None
) -> pd.DataFrame:
    """Read the indicators of `specs` from `external` as one monthly frame.

    Returns ds (month start) and one column per spec named `spec.indicator`
    at region `spec.region`, or at `region` when the spec's region is None.
    A quarterly indicator keeps its value for the three months of its
    quarter. Raises ForecastError naming the indicator, region and the
    indicators the mart has when one is missing.
    """
    require_tables(con, ["external"])
    frames = []
    for spec in specs:
        where = spec.region if spec.region is not None else region
        if where is None:
            raise ForecastError(
                f"regressor {spec.indicator} takes the region of the series, but "
                "the series has none; give the spec a region such as 'ALL'"
            )
        rows = con.execute(
            "SELECT date, value FROM external WHERE indicator = ? AND region = ? "
            "ORDER BY date",
            [spec.indicator, where],
        ).df()
        if rows.empty:
            known = con.execute(
                "SELECT DISTINCT indicator || ' (' || region || ')' FROM external "
                "ORDER BY 1"
            ).fetchall()
            listed = ", ".join(k[0] for k in known[:20]) or "none"
            raise ForecastError(
                f"indicator {spec.indicator!r} for region {where!r} not found in "
                f"the mart's external table; it has: {listed}"
            )
        frames.append(_monthly(rows, spec.indicator))
    if not frames:
        return pd.DataFrame({"ds": pd.Series(dtype="datetime64[ns]")})
    wide = frames[0]
    for frame in frames[1:]:
        wide = wide.merge(frame, on="ds", how="outer")
    return wide.sort_values("ds").reset_index(drop=True)


def _monthly(rows: pd.DataFrame, name: str) -> pd.DataFrame:
    """Put one indicator's dated values on a month-start grid."""
    ds = pd.to_datetime(rows["date"]).dt.to_period("M").dt.to_timestamp()
    values = pd.Series(rows["value"].to_numpy(float), index=ds)
    values = values[~values.index.duplicated(keep="last")]
    spacing = np.median(np.diff(values.index.to_numpy()).astype("timedelta64[D]"))
    quarterly = len(values) > 1 and spacing >= np.timedelta64(80, "D")
    end = values.index[-1] + pd.DateOffset(months=2 if quarterly else 0)
    months = pd.date_range(values.index[0], end, freq="MS")
    monthly = values.reindex(months)
    if quarterly:
        monthly = monthly.ffill(limit=2)
    return pd.DataFrame({"ds": months, name: monthly.to_numpy(float)})


def read_scenario(path: str | Path) -> pd.DataFrame:
    """Read a scenario CSV of future indicator values.

    The file has columns date (YYYY-MM-DD, any day of the month), indicator
    and value, and optionally region. Returns those columns with date as
    month start and region None where the file has none. Raises
    ForecastError naming the file, line and column of the first bad value.
    """
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ForecastError(
            f"cannot read scenario file {path}: {exc}; pass a CSV with columns "
            "date, indicator, value"
        ) from exc
    missing = [c for c in ("date", "indicator", "value") if c not in raw.columns]
    if missing:
        raise ForecastError(
            f"scenario file {path} lacks column(s) {missing}; it needs date, "
            "indicator and value (region is optional)"
        )
    dates = pd.to_datetime(raw["date"], format="%Y-%m-%d", errors="coerce")
    values = pd.to_numeric(raw["value"], errors="coerce")
    for column, parsed in (("date", dates), ("value", values)):
        bad = parsed.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ForecastError(
                f"scenario file {path}, line {row + 2}, column {column}: invalid "
                f"value {raw[column].iloc[row]!r}; dates are YYYY-MM-DD and values "
                "numbers"
            )
    region = raw["region"] if "region" in raw.columns else None
    return pd.DataFrame(
        {
            "date": dates.dt.to_period("M").dt.to_timestamp(),
            "indicator": raw["indicator"].str.strip(),
            "region": None if region is None else region.str.strip(),
            "value": values.astype(float),
        }
    )


def prepare_regressors(
    indicators: pd.DataFrame,
    specs: Sequence[RegressorSpec],
    start: pd.Timestamp,
    until: pd.Timestamp,
    scenario: pd.DataFrame | None = None,
    region: str | None = None,
    scenario_name: str = "scenario file",
) -> RegressorSet:
    """Lag and extend monthly indicators to cover `start` to `until`.

    `indicators` has ds (month start) and one column per `spec.indicator`.
    For each spec, the value of month m is the indicator's value of month
    m - lag. Months after the last lagged value take the scenario's values
    (rows of `scenario` for that indicator and for the spec's region or no
    region, also lagged), then the spec's extension rule. Gaps inside the
    data are interpolated linearly. Every lag, gap and extension is stated
    in the returned notes. A column stays empty before the indicator's first
    value, so the forecast drops such a regressor with a note.
    """
    months = pd.date_range(
        pd.Timestamp(start).to_period("M").to_timestamp(),
        pd.Timestamp(until).to_period("M").to_timestamp(),
        freq="MS",
    )
    columns: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for spec in specs:
        if spec.indicator not in indicators.columns:
            raise ForecastError(
                f"indicator {spec.indicator!r} is not among the indicator columns "
                f"{[c for c in indicators.columns if c != 'ds']}"
            )
        source = indicators.set_index("ds")[spec.indicator].dropna()
        if source.empty:
            raise ForecastError(f"indicator {spec.indicator!r} has no values")
        where = spec.region if spec.region is not None else region
        values, note = _lag_and_extend(
            source, spec, months, scenario, where, scenario_name
        )
        columns[spec.column] = values
        notes.append(note)
        logger.info("%s", note)
    frame = pd.DataFrame({"ds": months, **columns})
    return RegressorSet(frame, tuple(notes))


def _lag_and_extend(
    source: pd.Series,
    spec: RegressorSpec,
    months: pd.DatetimeIndex,
    scenario: pd.DataFrame | None,
    region: str | None,
    scenario_name: str,
) -> tuple[np.ndarray, str]:
    label = f"regressor {spec.indicator} (region {region}"
    label += f", lag {spec.lag} months)" if spec.lag else ")"
    full = pd.date_range(source.index[0], source.index[-1], freq="MS")
    data = source.reindex(full)
    gaps = int(data.isna().sum())
    data = data.interpolate()
    last_data = data.index[-1]

    if scenario is not None and len(scenario):
        rows = scenario[scenario["indicator"] == spec.indicator]
        if "region" in rows.columns:
            rows = rows[rows["region"].isna() | (rows["region"] == region)]
        future = rows.set_index("date")["value"]
        future = future[future.index > last_data]
        future = future[~future.index.duplicated(keep="last")]
    else:
        future = pd.Series(dtype=float, index=pd.DatetimeIndex([]))

    lagged = data.copy()
    lagged.index = lagged.index + pd.DateOffset(months=spec.lag)
    from_scenario = future.copy()
    from_scenario.index = from_scenario.index + pd.DateOffset(months=spec.lag)
    combined = lagged.combine_first(from_scenario).reindex(
        pd.date_range(lagged.index[0], max(months[-1], lagged.index[-1]), freq="MS")
    )
    parts = [f"{label}: data to {last_data:%Y-%m}"]
    if gaps:
        parts.append(f"{gaps} missing month(s) inside the data interpolated")
    used_scenario = from_scenario.index[from_scenario.index <= months[-1]]
    if len(used_scenario):
        parts.append(
            f"{used_scenario[0]:%Y-%m}..{used_scenario[-1]:%Y-%m} from {scenario_name}"
        )

    missing = combined.index[combined.isna()]
    missing = missing[missing > lagged.index[-1]]
    if len(missing):
        rule = spec.extension
        if rule == "yoy_growth" and combined.notna().sum() < 13:
            rule = "carry_forward"
            parts.append("too short for year-on-year growth")
        combined, detail = _extend(combined, missing, rule)
        parts.append(
            f"{missing[0]:%Y-%m}..{missing[-1]:%Y-%m} extended by "
            f"{EXTENSION_LABELS[rule]} ({detail})"
        )
    else:
        parts.append("covers the forecast horizon")
    values = combined.reindex(months).to_numpy(float)
    return values, "; ".join(parts)


def _extend(
    values: pd.Series, missing: pd.DatetimeIndex, rule: str
) -> tuple[pd.Series, str]:
    """Fill the months `missing` (all after the known values) by `rule`."""
    filled = values.copy()
    known = filled.dropna()
    last = known.index[-1]
    if rule == "carry_forward":
        filled.loc[missing] = filled.ffill().loc[missing]
        return filled, f"value {known.iloc[-1]:,.4g}"
    year_before = last - pd.DateOffset(months=12)
    base = known.get(year_before, np.nan)
    growth = known.iloc[-1] / base if base and np.isfinite(base) else 1.0
    for month in missing:
        earlier = filled.get(month - pd.DateOffset(months=12), np.nan)
        filled.loc[month] = earlier * growth if np.isfinite(earlier) else known.iloc[-1]
    return filled, f"growth {growth - 1:+.1%} a year"


def external_regressors(
    con: duckdb.DuckDBPyConnection,
    specs: Sequence[RegressorSpec],
    start: pd.Timestamp,
    until: pd.Timestamp,
    region: str | None = None,
    scenario_file: str | Path | None = None,
    frequency: str = "month",
) -> RegressorSet:
    """Read, lag and extend the indicators of `specs` from the mart.

    Covers the periods from `start` to `until` at `frequency` ("month" or
    "week"; a week takes the value of the month its Monday falls in).
    `region` is the series' region, used by specs whose region is None.
    `scenario_file` is a CSV read by `read_scenario` whose values replace
    the extension rule where they reach. See `prepare_regressors` for the
    notes. Raises ForecastError for a missing indicator or a bad scenario.
    """
    check_frequency(frequency)
    indicators = read_indicators(con, specs, region)
    scenario = read_scenario(scenario_file) if scenario_file is not None else None
    name = f"scenario file {Path(scenario_file).name}" if scenario_file else ""
    monthly = prepare_regressors(
        indicators, specs, start, until, scenario, region, name or "scenario file"
    )
    if frequency == "month":
        return monthly
    return RegressorSet(to_weeks(monthly.frame, start, until), monthly.notes)


def to_weeks(monthly: pd.DataFrame, start: pd.Timestamp, until: pd.Timestamp):
    """Give each week from `start` to `until` the values of its Monday's month."""
    weeks = pd.date_range(
        period_start(pd.Series([start]), "week").iloc[0], until, freq="W-MON"
    )
    month_of_week = weeks.to_period("M").to_timestamp()
    values = monthly.set_index("ds").reindex(month_of_week)
    values.index = weeks
    return values.rename_axis("ds").reset_index()


# --------------------------------------------------------------------------
# Calendar: working days and one-off windows


def working_days(
    periods: pd.DatetimeIndex, frequency: str, country: str
) -> tuple[np.ndarray, str]:
    """Count Monday-to-Friday days that are not public holidays, per period.

    `periods` are month starts or week Mondays. Holidays come from
    `prophet.make_holidays.make_holidays_df`, the table behind Prophet's
    `add_country_holidays`, which reads the locally installed `holidays`
    package. Returns the counts and a note. Raises ForecastError for a
    country that package does not know.
    """
    from prophet.make_holidays import make_holidays_df

    check_frequency(frequency)
    step = pd.DateOffset(months=1) if frequency == "month" else pd.DateOffset(weeks=1)
    first = periods[0]
    last = periods[-1] + step - pd.Timedelta(days=1)
    years = list(range(first.year, last.year + 1))
    try:
        with warnings.catch_warnings():
            # Prophet 1.5 calls a pandas API that pandas 3 deprecates.
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)
            table = make_holidays_df(year_list=years, country=country)
    except (AttributeError, KeyError, NotImplementedError) as exc:
        raise ForecastError(
            f"no holiday calendar for country {country!r} ({exc}); use an ISO "
            "code such as DE, FR or US"
        ) from exc
    holidays = set(pd.to_datetime(table["ds"]).dt.normalize())
    days = pd.date_range(first, last, freq="D")
    workday = (days.day_of_week < 5) & ~days.isin(list(holidays))
    owner = period_start(pd.Series(days), frequency).to_numpy()
    counts = pd.Series(workday.astype(float), index=owner).groupby(level=0).sum()
    values = counts.reindex(periods, fill_value=0.0).to_numpy(float)
    return values, f"working days of {country} (weekdays less public holidays) used"


def one_off_columns(
    periods: pd.DatetimeIndex, frequency: str, windows: Sequence[OneOffWindow]
) -> pd.DataFrame:
    """Share of each period's days inside each one-off window (0 to 1).

    Returns ds and one column per window, named by `OneOffWindow.column`.
    """
    check_frequency(frequency)
    step = pd.DateOffset(months=1) if frequency == "month" else pd.DateOffset(weeks=1)
    frame = pd.DataFrame({"ds": periods})
    ends = periods + step
    for window in windows:
        start = pd.Timestamp(window.start)
        stop = pd.Timestamp(window.end) + pd.Timedelta(days=1)
        overlap = (np.minimum(ends, stop) - np.maximum(periods, start)) / pd.Timedelta(
            days=1
        )
        length = (ends - periods) / pd.Timedelta(days=1)
        frame[window.column] = np.clip(np.asarray(overlap / length, float), 0.0, 1.0)
    return frame
