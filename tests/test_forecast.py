"""Tests of monthly series, forecasts with fallbacks, backtests and batches."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import date

import numpy as np
import pandas as pd
import pytest

from cockpit.backtesting import (
    backtest_by_region_unit,
    rolling_backtest,
    summarise_backtest,
)
from cockpit.drivers import (
    OneOffWindow,
    RegressorSpec,
    external_regressors,
    prepare_regressors,
    read_scenario,
    working_days,
)
from cockpit.errors import ForecastError
from cockpit.forecast import (
    MANY_COLUMNS,
    ForecastOptions,
    backtest,
    forecast_many,
    forecast_series,
    forecast_table,
    monthly_series,
    weekly_series,
)
from cockpit.forecast_store import accuracy_over_time, forecast_actuals, store_forecast
from cockpit.hierarchy import compare_region_unit, hierarchy_series
from cockpit.ingest import ingest_source
from cockpit.mart import connect, load_frame
from cockpit.scope import Scope


def _history(values, start: str = "2020-01-01") -> pd.DataFrame:
    ds = pd.date_range(start, periods=len(values), freq="MS")
    return pd.DataFrame({"ds": ds, "y": np.asarray(values, dtype=float)})


def _seasonal_trend(months: int, seed: int = 1) -> pd.DataFrame:
    """Revenue growing by 8 a month around 200, with a yearly wave of 60."""
    t = np.arange(months)
    noise = np.random.default_rng(seed).normal(0, 4, months)
    return _history(200 + 8 * t + 60 * np.sin(2 * np.pi * t / 12) + noise)


# ---------------------------------------------------------------- mart series


@pytest.fixture
def small_mart(tmp_path):
    con = connect(tmp_path / "mart.duckdb")
    load_frame(
        con,
        "products",
        pd.DataFrame(
            {
                "product_id": ["P1", "P2", "P3"],
                "name": ["Drill", "Saw", "Glue"],
                "product_line": ["Power", "Hand", None],
                "business_unit": ["Tools", "Tools", "Supplies"],
            }
        ),
        source="test",
        source_file="products.csv",
    )
    load_frame(
        con,
        "transactions",
        pd.DataFrame(
            {
                "invoice_id": ["I1", "I2", "I3", "I4", "I5", "I6"],
                "line": [1, 1, 1, 1, 1, 1],
                "date": [
                    "2024-01-15",
                    "2024-01-20",
                    "2024-03-05",
                    "2024-02-10",
                    "2024-04-30",
                    "2024-02-01",
                ],
                "product_id": ["P1", "P1", "P1", "P2", "P1", "P3"],
                "region": ["East", "East", "West", "East", "East", "East"],
                "business_unit": [
                    "Tools",
                    "Tools",
                    "Tools",
                    "Tools",
                    "Tools",
                    "Supplies",
                ],
                "net_revenue": [100.0, 50.0, 30.0, 70.0, 999.0, 5.0],
                "currency": ["EUR"] * 6,
            }
        ),
        source="test",
        source_file="transactions.csv",
    )
    yield con
    con.close()


def _values(frame: pd.DataFrame, series_id: str) -> list[float]:
    return frame.loc[frame["series_id"] == series_id, "y"].tolist()


def test_monthly_series_fills_zero_months(small_mart):
    frame = monthly_series(small_mart, end=date(2024, 3, 31))
    assert _values(frame, "Power") == [150.0, 0.0, 30.0]
    assert _values(frame, "Hand") == [70.0, 0.0]
    assert _values(frame, "(missing)") == [5.0, 0.0]


def test_monthly_series_columns(small_mart):
    frame = monthly_series(small_mart, end=date(2024, 3, 31))
    assert list(frame.columns) == ["series_id", "ds", "y"]
    starts = frame.loc[frame["series_id"] == "Power", "ds"].tolist()
    assert starts == list(pd.date_range("2024-01-01", "2024-03-01", freq="MS"))


def test_monthly_series_drops_partial_month(small_mart):
    frame = monthly_series(small_mart, by=None, end=date(2024, 4, 29))
    assert frame["ds"].max() == pd.Timestamp("2024-03-01")


def test_monthly_series_keeps_ended_month(small_mart):
    frame = monthly_series(small_mart, by=None, end=date(2024, 4, 30))
    assert _values(frame, "total") == [150.0, 75.0, 30.0, 999.0]


def test_monthly_series_end_defaults_to_latest(small_mart):
    frame = monthly_series(small_mart, by=None)
    assert frame["ds"].max() == pd.Timestamp("2024-04-01")


def test_monthly_series_scope(small_mart):
    scope = Scope(region="East", business_unit="Tools")
    frame = monthly_series(small_mart, scope, by="region", end=date(2024, 3, 31))
    assert _values(frame, "East") == [150.0, 70.0, 0.0]


def test_monthly_series_empty_scope(small_mart):
    frame = monthly_series(small_mart, Scope(region="North"), end=date(2024, 3, 31))
    assert frame.empty
    assert list(frame.columns) == ["series_id", "ds", "y"]


def test_monthly_series_unknown_by(small_mart):
    with pytest.raises(ForecastError, match="colour"):
        monthly_series(small_mart, by="colour")


# ---------------------------------------------------------------- one series


def test_prophet_used_on_long_series():
    result = forecast_series(_seasonal_trend(36), 6)
    assert result.method == "prophet"
    assert result.note == ""
    assert list(result.frame.columns) == ["ds", "yhat", "yhat_lower", "yhat_upper"]
    assert result.frame["ds"].iloc[0] == pd.Timestamp("2023-01-01")
    assert len(result.frame) == 6


def test_prophet_beats_last_year_plus_growth():
    scores = backtest(_seasonal_trend(48), holdout=12).set_index("method")
    assert "prophet" in scores.index
    assert scores.loc["prophet", "wape"] < scores.loc["last_year_plus_growth", "wape"]


def test_prophet_interval_contains_forecast():
    frame = forecast_series(_seasonal_trend(36), 6).frame
    assert (frame["yhat_lower"] <= frame["yhat"]).all()
    assert (frame["yhat"] <= frame["yhat_upper"]).all()


def test_constant_series_falls_back():
    result = forecast_series(_history([40.0] * 30), 4)
    assert result.method == "seasonal_naive"
    assert "constant" in result.note
    assert result.frame["yhat"].tolist() == [40.0] * 4


def test_short_series_uses_last_three_months():
    result = forecast_series(_history([10, 20, 30, 40, 50, 60, 70, 80]), 3)
    assert result.method == "naive"
    assert "only 8 months" in result.note
    assert result.frame["yhat"].tolist() == [70.0, 70.0, 70.0]


def test_short_series_with_a_year_is_seasonal():
    values = list(range(1, 19))
    result = forecast_series(_history(values), 14)
    assert result.method == "seasonal_naive"
    assert result.frame["yhat"].tolist() == values[6:] + values[6:8]


def test_all_zero_series_forecasts_zero():
    result = forecast_series(_history([0.0] * 30), 5)
    assert result.method == "zero"
    assert result.frame[["yhat", "yhat_lower", "yhat_upper"]].to_numpy().max() == 0.0


def test_intermittent_series_uses_sba():
    values = [0.0] * 36
    values[3] = 500.0
    values[17] = 250.0
    values[30] = 90.0
    result = forecast_series(_history(values), 12)
    assert result.method == "sba"
    assert "intermittent" in result.note
    # Start: size = mean(500, 250, 90) = 280, interval = 33 months / 3 = 11.
    # Demand at month 17 after 14 months: size 277, interval 11.3.
    # Demand at month 30 after 13 months: size 258.3, interval 11.47.
    expected = (1 - 0.1 / 2) * 258.3 / 11.47
    np.testing.assert_allclose(result.frame["yhat"], expected, rtol=1e-12)


def test_sba_in_sample_fit():
    values = [0.0, 4.0, 0.0, 0.0, 2.0, 0.0]
    result = forecast_series(_history(values), 1)
    assert result.method == "sba"
    # Size starts at 3 and the interval at 5 months / 2 demands = 2.5.
    first = 0.95 * 3 / 2.5
    assert np.isnan(result.fitted[1])
    assert result.fitted[2] == pytest.approx(first)
    # Demand of 2 after 3 months: size 2.9, interval 2.55.
    assert result.fitted[5] == pytest.approx(0.95 * 2.9 / 2.55)


def test_declining_series_clipped_at_zero():
    history = _history(600 - 15 * np.arange(36))
    frame = forecast_series(history, 12).frame
    assert frame["yhat"].min() == 0.0
    assert frame["yhat_lower"].min() >= 0.0
    assert frame["yhat"].iloc[0] > 0.0


def test_fallback_interval_clipped_at_zero():
    frame = forecast_series(_history([5, 100, 2, 90, 1, 80]), 2).frame
    assert frame["yhat_lower"].min() == 0.0


def test_missing_months_count_as_zero():
    history = _history([10, 20, 30, 40]).drop(index=[1, 2])
    result = forecast_series(history, 1)
    assert result.frame["yhat"].iloc[0] == pytest.approx((0 + 0 + 40) / 3)


def test_regressor_without_future_values_dropped():
    history = _seasonal_trend(36)
    months = pd.date_range("2020-01-01", periods=42, freq="MS")
    regressors = pd.DataFrame(
        {
            "ds": months,
            "full": np.linspace(1.0, 2.0, 42),
            "ends_early": np.r_[np.linspace(1.0, 2.0, 38), [np.nan] * 4],
        }
    )
    result = forecast_series(history, 6, regressors=regressors)
    assert result.method == "prophet"
    assert "ends_early dropped" in result.note
    assert "full" not in result.note


def test_reserved_regressor_name_rejected():
    months = pd.date_range("2020-01-01", periods=40, freq="MS")
    regressors = pd.DataFrame({"ds": months, "trend": np.arange(40.0)})
    with pytest.raises(ForecastError, match="trend"):
        forecast_series(_seasonal_trend(36), 4, regressors=regressors)


def test_zero_horizon_rejected():
    with pytest.raises(ForecastError, match="horizon"):
        forecast_series(_history([1.0, 2.0]), 0)


def test_missing_value_rejected():
    with pytest.raises(ForecastError, match="2020-02"):
        forecast_series(_history([1.0, np.nan, 3.0]), 1)


def test_repeated_month_rejected():
    history = pd.DataFrame({"ds": ["2020-01-01", "2020-01-15"], "y": [1.0, 2.0]})
    with pytest.raises(ForecastError, match="2020-01"):
        forecast_series(history, 1)


_FIT_SCRIPT = """
import numpy as np, pandas as pd
from cockpit.forecast import forecast_series
t = np.arange(30)
history = pd.DataFrame({
    "ds": pd.date_range("2020-01-01", periods=30, freq="MS"),
    "y": 200 + 8 * t + 60 * np.sin(2 * np.pi * t / 12)
    + np.random.default_rng(3).normal(0, 4, 30),
})
assert forecast_series(history, 3).method == "prophet"
"""


def test_prophet_prints_nothing(capfd):
    # The fit runs in a fresh interpreter because pytest's own logging
    # handlers would swallow cmdstanpy's records. Without handlers, as in a
    # script or a notebook, cmdstanpy attaches a console handler of its own.
    subprocess.run([sys.executable, "-c", _FIT_SCRIPT], check=True)
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == ""


# ---------------------------------------------------------------- backtest


def test_backtest_hand_computed():
    train = [100.0, 200.0] + [50.0] * 10
    scores = backtest(_history([*train, 110.0, 180.0]), holdout=2).set_index("method")
    # Seasonal naive repeats January and February: 100 and 200 against 110 and 180.
    assert scores.loc["seasonal_naive", "wape"] == pytest.approx(30 / 290)
    assert scores.loc["seasonal_naive", "bias"] == pytest.approx(10 / 290)
    # Last year plus 5 %: 105 and 210.
    assert scores.loc["last_year_plus_growth", "wape"] == pytest.approx(35 / 290)
    assert scores.loc["last_year_plus_growth", "bias"] == pytest.approx(25 / 290)
    assert scores.loc["last_year_plus_growth", "forecast"] == pytest.approx(315.0)
    assert scores.loc["last_year_plus_growth", "actual"] == pytest.approx(290.0)


def test_backtest_method_order():
    scores = backtest(_seasonal_trend(30), holdout=4)
    assert scores["method"].tolist() == [
        "prophet",
        "seasonal_naive",
        "last_year_plus_growth",
    ]
    assert scores["chosen"].tolist() == [True, False, False]


def test_backtest_fallback_listed_once():
    scores = backtest(_history([*range(1, 13), 5.0, 6.0]), holdout=2)
    # 12 training months are fewer than 24, so the rules choose seasonal naive.
    assert scores["method"].tolist() == ["seasonal_naive", "last_year_plus_growth"]
    assert scores["chosen"].tolist() == [True, False]


def test_backtest_zero_actuals_undefined():
    scores = backtest(_history([*range(1, 13), 0.0, 0.0]), holdout=2)
    assert scores["wape"].isna().all()
    assert scores["bias"].isna().all()


def test_backtest_short_training_has_no_baselines():
    scores = backtest(_history([1.0, 2.0, 3.0, 4.0, 5.0]), holdout=2)
    assert scores["method"].tolist() == [
        "naive",
        "seasonal_naive",
        "last_year_plus_growth",
    ]
    assert math.isfinite(scores["wape"].iloc[0])
    assert scores["wape"].iloc[1:].isna().all()


def test_backtest_holdout_too_long():
    with pytest.raises(ForecastError, match="holdout"):
        backtest(_history([1.0] * 12), holdout=12)


# ---------------------------------------------------------------- many series


def _many() -> pd.DataFrame:
    parts = []
    for series_id, history in {
        "trend": _seasonal_trend(30),
        "short": _history([3.0, 6.0, 9.0, 12.0]),
        "zeros": _history([0.0] * 14),
    }.items():
        parts.append(history.assign(series_id=series_id))
    return pd.concat(parts, ignore_index=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_forecast_many_matches_single(workers):
    series = _many()
    many = forecast_many(series, 4, workers=workers)
    assert list(many.columns) == MANY_COLUMNS
    assert many["series_id"].unique().tolist() == ["trend", "short", "zeros"]
    for series_id, group in series.groupby("series_id"):
        single = forecast_series(group[["ds", "y"]], 4)
        rows = many[many["series_id"] == series_id]
        assert rows["method"].unique().tolist() == [single.method]
        assert rows["note"].unique().tolist() == [single.note]
        assert rows["ds"].tolist() == single.frame["ds"].tolist()
        # Interval bounds come from random draws, the point forecast does not.
        np.testing.assert_allclose(rows["yhat"], single.frame["yhat"], rtol=1e-6)


def test_forecast_many_progress_bar(capfd):
    forecast_many(_many(), 2, progress=True)
    assert "3/3" in capfd.readouterr().err


def test_forecast_many_names_bad_series():
    series = _many()
    series.loc[0, "y"] = np.nan
    with pytest.raises(ForecastError, match="trend"):
        forecast_many(series, 2)


def test_forecast_table_columns():
    frame = forecast_series(_history([1.0, 2.0, 3.0]), 2).frame
    table = forecast_table(frame, date(2024, 6, 30), "East", "Tools")
    assert list(table.columns) == [
        "as_of",
        "level",
        "region",
        "business_unit",
        "frequency",
        "ds",
        "yhat",
        "yhat_lower",
        "yhat_upper",
        "created_at",
    ]
    assert table["as_of"].unique().tolist() == [date(2024, 6, 30)]
    assert table["region"].unique().tolist() == ["East"]
    assert table["frequency"].unique().tolist() == ["month"]


def test_forecast_table_loads_into_mart(tmp_path):
    many = forecast_many(_many(), 2)
    table = forecast_table(many, date(2024, 6, 30), None, None, level="product_line")
    with connect(tmp_path / "mart.duckdb") as con:
        report = store_forecast(con, table)
        stored = con.execute("SELECT count(*) FROM forecasts").fetchone()[0]
    assert report.rows_loaded == len(table)
    assert report.rows_quarantined == 0
    assert stored == len(table)


# ---------------------------------------------------------------- real export


def _superstore_orders(shared_data) -> pd.DataFrame:
    orders = pd.read_csv(shared_data / "superstore" / "Sample - Superstore.csv")
    orders["ds"] = (
        pd.to_datetime(orders["Order Date"], format="%m/%d/%Y")
        .dt.to_period("M")
        .dt.to_timestamp()
    )
    return orders


def test_superstore_monthly_series(shared_data, tmp_path):
    mart = tmp_path / "superstore.duckdb"
    ingest_source(
        "superstore", shared_data / "superstore" / "Sample - Superstore.csv", mart
    )
    with connect(mart, read_only=True) as con:
        series = monthly_series(
            con, Scope(region="West"), by="business_unit", end=date(2021, 12, 31)
        )
    orders = _superstore_orders(shared_data)
    west = orders[orders["Region"] == "West"]
    expected = west.groupby(["Category", "ds"])["Sales"].sum()
    merged = series.merge(
        expected.rename("sales").reset_index(),
        left_on=["series_id", "ds"],
        right_on=["Category", "ds"],
        how="left",
    )
    assert sorted(series["series_id"].unique()) == sorted(west["Category"].unique())
    assert series["ds"].max() == pd.Timestamp("2021-12-01")
    np.testing.assert_allclose(merged["y"], merged["sales"].fillna(0.0), rtol=1e-9)
    assert series["y"].sum() == pytest.approx(725_457.82, abs=0.01)


def test_superstore_backtest(shared_data):
    orders = _superstore_orders(shared_data)
    months = pd.date_range("2018-01-01", "2021-12-01", freq="MS")
    monthly = orders.groupby(["Region", "Category", "ds"])["Sales"].sum()
    scores = []
    for (region, category), values in monthly.groupby(level=[0, 1]):
        history = (
            values.droplevel([0, 1])
            .reindex(months, fill_value=0.0)
            .rename_axis("ds")
            .reset_index(name="y")
        )
        result = backtest(history, holdout=12, growth_pct=0.05)
        scores.append(result.assign(region=region, category=category))
    table = pd.concat(scores, ignore_index=True)

    assert len(table) == 36
    assert np.isfinite(table["wape"]).all()
    assert table["method"].value_counts()["prophet"] == 12
    held_out = orders.loc[orders["ds"] >= "2021-01-01", "Sales"].sum()
    model_rows = table[table["method"] == "prophet"]
    assert model_rows["actual"].sum() == pytest.approx(held_out, rel=1e-9)


# ---------------------------------------------------------------- drivers


def _indicators(months: int = 30) -> pd.DataFrame:
    ds = pd.date_range("2020-01-01", periods=months, freq="MS")
    return pd.DataFrame({"ds": ds, "indpro": 100.0 + np.arange(months)})


def test_regressor_lag_shifts_values():
    spec = RegressorSpec("indpro", lag=2)
    result = prepare_regressors(
        _indicators(), [spec], pd.Timestamp("2020-01-01"), pd.Timestamp("2022-06-01")
    )
    values = result.frame.set_index("ds")["indpro_lag2"]
    assert np.isnan(values[pd.Timestamp("2020-02-01")])
    assert values[pd.Timestamp("2020-03-01")] == 100.0
    assert values[pd.Timestamp("2022-08-01") - pd.DateOffset(months=2)] == 127.0
    assert "lag 2 months" in result.notes[0]


def test_regressor_carried_forward_and_noted():
    spec = RegressorSpec("indpro", lag=1, extension="carry_forward")
    result = prepare_regressors(
        _indicators(), [spec], pd.Timestamp("2020-01-01"), pd.Timestamp("2022-12-01")
    )
    values = result.frame.set_index("ds")["indpro_lag1"]
    # Data end 2022-06 (129), lagged to 2022-07; later months repeat it.
    assert values[pd.Timestamp("2022-07-01")] == 129.0
    assert values[pd.Timestamp("2022-12-01")] == 129.0
    assert "data to 2022-06" in result.notes[0]
    assert "2022-08..2022-12 extended by last value carried forward" in result.notes[0]


def test_regressor_year_on_year_growth():
    frame = _indicators(24)
    frame["indpro"] = np.r_[np.full(12, 100.0), np.full(12, 110.0)]
    frame.loc[12, "indpro"] = 121.0
    spec = RegressorSpec("indpro", extension="yoy_growth")
    result = prepare_regressors(
        frame, [spec], pd.Timestamp("2020-01-01"), pd.Timestamp("2022-03-01")
    )
    values = result.frame.set_index("ds")["indpro"]
    # Last year-on-year growth: 110 / 100 = +10 %; January 2022 = 121 x 1.1.
    assert values[pd.Timestamp("2022-01-01")] == pytest.approx(133.1)
    assert values[pd.Timestamp("2022-02-01")] == pytest.approx(121.0)
    assert "growth +10.0% a year" in result.notes[0]


def test_regressor_scenario_file_wins(tmp_path):
    scenario = tmp_path / "scenario.csv"
    scenario.write_text(
        "date,indicator,value\n2022-07-01,indpro,150\n2022-08-01,indpro,160\n",
        encoding="utf-8",
    )
    spec = RegressorSpec("indpro")
    result = prepare_regressors(
        _indicators(),
        [spec],
        pd.Timestamp("2020-01-01"),
        pd.Timestamp("2022-10-01"),
        scenario=read_scenario(scenario),
        scenario_name="scenario file scenario.csv",
    )
    values = result.frame.set_index("ds")["indpro"]
    assert values[pd.Timestamp("2022-07-01")] == 150.0
    assert values[pd.Timestamp("2022-10-01")] == 160.0
    assert "2022-07..2022-08 from scenario file scenario.csv" in result.notes[0]
    assert "2022-09..2022-10 extended by last value carried forward" in result.notes[0]


def test_scenario_file_bad_value(tmp_path):
    scenario = tmp_path / "scenario.csv"
    scenario.write_text(
        "date,indicator,value\n2022-07-01,indpro,150\n2022-08-01,indpro,high\n",
        encoding="utf-8",
    )
    with pytest.raises(ForecastError, match="line 3, column value"):
        read_scenario(scenario)


def test_regressor_spec_unknown_rule():
    with pytest.raises(ForecastError, match="guess"):
        RegressorSpec("indpro", extension="guess")


def test_external_regressor_note_reaches_result(tmp_path):
    with connect(tmp_path / "mart.duckdb") as con:
        months = pd.date_range("2019-01-01", "2021-02-01", freq="MS")
        load_frame(
            con,
            "external",
            pd.DataFrame(
                {
                    "date": months,
                    "region": "ALL",
                    "indicator": "indpro",
                    "value": 100 + np.sin(np.arange(len(months))),
                }
            ),
            source="test",
            source_file="indpro.csv",
        )
        history = _seasonal_trend(36)
        regressors = external_regressors(
            con,
            [RegressorSpec("indpro", lag=3)],
            history["ds"].iloc[0],
            pd.Timestamp("2023-06-01"),
        )
    result = forecast_series(history, 6, regressors=regressors)
    assert result.method == "prophet"
    assert "regressor indpro (region ALL, lag 3 months)" in result.note
    assert "2021-06..2023-06 extended by last value carried forward" in result.note


def test_external_regressor_unknown_indicator(tmp_path):
    con = connect(tmp_path / "mart.duckdb")
    with pytest.raises(ForecastError, match="gdp"):
        external_regressors(
            con,
            [RegressorSpec("gdp")],
            pd.Timestamp("2020-01-01"),
            pd.Timestamp("2020-06-01"),
        )
    con.close()


def test_working_days_germany_may_2024():
    counts, note = working_days(pd.DatetimeIndex(["2024-05-01"]), "month", "DE")
    # 23 weekdays less 1 May, Ascension (9 May) and Whit Monday (20 May).
    assert counts.tolist() == [20.0]
    assert "DE" in note


def test_working_days_unknown_country():
    with pytest.raises(ForecastError, match="XX"):
        working_days(pd.DatetimeIndex(["2024-05-01"]), "month", "XX")


def test_holidays_noted_in_result():
    options = ForecastOptions(holidays_country="DE")
    result = forecast_series(_seasonal_trend(36), 3, options=options)
    assert result.method == "prophet"
    assert "working days of DE" in result.note


def _shutdown_history() -> pd.DataFrame:
    """Steady revenue of about 1,000 with a plant shutdown in August 2021."""
    t = np.arange(36)
    values = 1000 + 5 * t + np.random.default_rng(4).normal(0, 10, 36)
    values[19] = 150.0
    return _history(values)


def test_one_off_window_does_not_repeat():
    window = OneOffWindow("shutdown", date(2021, 8, 1), date(2021, 8, 31))
    options = ForecastOptions(one_off=(window,))
    result = forecast_series(_shutdown_history(), 12, options=options)
    yhat = result.frame.set_index("ds")["yhat"]
    august = yhat[pd.Timestamp("2023-08-01")]
    neighbours = (
        yhat[pd.Timestamp("2023-07-01")] + yhat[pd.Timestamp("2023-09-01")]
    ) / 2
    assert august > 0.95 * neighbours
    assert "one-off window shutdown" in result.note
    assert "is 0 in the forecast" in result.note


def test_one_off_dip_repeats_without_window():
    # Control: without the window, yearly seasonality learns the dip.
    yhat = forecast_series(_shutdown_history(), 12).frame.set_index("ds")["yhat"]
    august = yhat[pd.Timestamp("2023-08-01")]
    neighbours = (
        yhat[pd.Timestamp("2023-07-01")] + yhat[pd.Timestamp("2023-09-01")]
    ) / 2
    assert august < 0.95 * neighbours


def test_one_off_window_replaced_in_simple_method():
    values = [10.0 * (m + 1) for m in range(12)] + [10.0 * (m + 1) for m in range(6)]
    values[13] = 1.0
    window = OneOffWindow("strike", date(2021, 2, 1), date(2021, 2, 28))
    result = forecast_series(
        _history(values), 12, options=ForecastOptions(one_off=(window,))
    )
    assert result.method == "seasonal_naive"
    # February 2021 (month 13) was 1; the same month a year earlier was 20.
    assert result.frame["yhat"].iloc[7] == 20.0
    assert "1 period(s) of one-off window(s) strike replaced" in result.note


def test_one_off_window_outside_history_ignored():
    window = OneOffWindow("planned", date(2030, 1, 1), date(2030, 1, 31))
    options = ForecastOptions(one_off=(window,))
    result = forecast_series(_seasonal_trend(36), 3, options=options)
    assert "outside the history" in result.note


# ---------------------------------------------------------------- weekly


def test_weekly_series_mondays(small_mart):
    frame = weekly_series(small_mart, by=None, end=date(2024, 2, 4))
    assert (frame["ds"].dt.day_of_week == 0).all()
    # Weeks from Monday 2024-01-15 to the week ending Sunday 2024-02-04.
    weekly = frame.set_index("ds")["y"]
    assert weekly[pd.Timestamp("2024-01-15")] == 150.0
    assert weekly[pd.Timestamp("2024-01-29")] == 5.0
    assert frame["ds"].max() == pd.Timestamp("2024-01-29")


def test_weekly_forecast_prophet():
    weeks = pd.date_range("2021-01-04", periods=130, freq="W-MON")
    t = np.arange(130)
    history = pd.DataFrame(
        {"ds": weeks, "y": 500 + 2 * t + 80 * np.sin(2 * np.pi * t / 52)}
    )
    options = ForecastOptions(frequency="week")
    result = forecast_series(history, 8, options=options)
    assert result.method == "prophet"
    assert result.frame["ds"].iloc[0] == weeks[-1] + pd.Timedelta(weeks=1)
    assert (result.frame["ds"].dt.day_of_week == 0).all()


def test_weekly_short_series_seasonal_naive():
    weeks = pd.date_range("2023-01-02", periods=60, freq="W-MON")
    history = pd.DataFrame({"ds": weeks, "y": np.arange(1.0, 61.0)})
    result = forecast_series(history, 3, options=ForecastOptions(frequency="week"))
    assert result.method == "seasonal_naive"
    # 60 weeks < 105 needed for Prophet; the last 52 weeks start at value 9.
    assert result.frame["yhat"].tolist() == [9.0, 10.0, 11.0]


# ---------------------------------------------------------------- rolling backtest


def test_rolling_backtest_hand_computed():
    values = [100.0, 200.0, *[50.0] * 10, 110.0, 180.0]
    scores = rolling_backtest(_history(values), origins=2, horizon=1, step=1)
    assert scores["origin"].unique().tolist() == [
        pd.Timestamp("2020-12-01"),
        pd.Timestamp("2021-01-01"),
    ]
    rows = scores.set_index(["origin", "method"])
    first = rows.loc[(pd.Timestamp("2020-12-01"), "seasonal_naive")]
    # January 2021 (110) against January 2020 (100).
    assert first["abs_error"] == pytest.approx(10.0)
    old = rows.loc[(pd.Timestamp("2021-01-01"), "last_year_plus_growth")]
    # February 2021 (180) against February 2020 x 1.05 (210).
    assert old["forecast"] == pytest.approx(210.0)
    assert old["bias"] == pytest.approx(30 / 180)
    # 12 and 13 training months are short, so the rules chose seasonal naive.
    assert set(scores.loc[scores["method"] == "prophet", "ran"]) == {"seasonal_naive"}


def test_rolling_backtest_summary_fva():
    values = [100.0, 200.0, *[50.0] * 10, 110.0, 180.0]
    scores = rolling_backtest(_history(values), origins=2, horizon=1, step=1)
    summary = summarise_backtest(scores).set_index("method")
    naive_wape = (10 + 20) / 290
    old_wape = (5 + 30) / 290
    assert summary.loc["seasonal_naive", "wape"] == pytest.approx(naive_wape)
    assert summary.loc["last_year_plus_growth", "wape"] == pytest.approx(old_wape)
    assert summary.loc["seasonal_naive", "fva"] == pytest.approx(old_wape - naive_wape)
    assert summary.loc["last_year_plus_growth", "fva"] == 0.0
    assert summary.loc["seasonal_naive", "origins"] == 2


def test_rolling_backtest_origin_dates():
    scores = rolling_backtest(
        _history(np.arange(1.0, 31.0)), origins=[pd.Timestamp("2021-06-01")], horizon=3
    )
    assert scores["origin"].unique().tolist() == [pd.Timestamp("2021-06-01")]


def test_rolling_backtest_too_many_origins():
    with pytest.raises(ForecastError, match="origin"):
        rolling_backtest(_history(np.arange(1.0, 15.0)), origins=5, horizon=6, step=3)


def test_backtest_by_region_unit(small_demo_mart):
    with connect(small_demo_mart, read_only=True) as con:
        report, scores = backtest_by_region_unit(
            con, Scope(region="East"), origins=2, horizon=6
        )
        last_six = con.execute(
            "SELECT sum(net_revenue) FROM transactions WHERE region = 'East' "
            "AND date >= DATE '2026-04-01' AND date < DATE '2026-10-01'"
        ).fetchone()[0]
    assert len(report) == 3 * 3 + 3
    pooled = report[report["region"] == "(all)"].set_index("method")
    assert pooled.loc["last_year_plus_growth", "fva"] == 0.0
    latest = scores[scores["origin"] == scores["origin"].max()]
    latest_prophet = latest[latest["method"] == "prophet"]
    assert latest_prophet["actual"].sum() == pytest.approx(last_six, rel=1e-9)


# ---------------------------------------------------------------- accuracy over time


def test_accuracy_over_time_hand_computed(small_mart):
    frame = pd.DataFrame(
        {
            "series_id": ["East", "East", "East"],
            "ds": pd.to_datetime(["2024-03-01", "2024-04-01", "2024-05-01"]),
            "yhat": [40.0, 900.0, 500.0],
        }
    )
    table = forecast_table(frame, date(2024, 2, 29), None, None, level="region")
    store_forecast(small_mart, table)
    unlabelled = forecast_table(frame, date(2024, 2, 29), None, None)
    store_forecast(small_mart, unlabelled)
    accuracy = accuracy_over_time(small_mart)
    assert len(accuracy) == 1
    row = accuracy.iloc[0]
    # East: March 0 (forecast 40), April 999 (forecast 900); May not complete.
    assert row["periods"] == 2
    assert row["actual"] == pytest.approx(999.0)
    assert row["wape"] == pytest.approx((40 + 99) / 999)
    assert row["bias"] == pytest.approx((940 - 999) / 999)


def test_forecast_actuals_periods_ahead(small_mart):
    frame = pd.DataFrame(
        {
            "series_id": ["total", "total"],
            "ds": pd.to_datetime(["2024-03-01", "2024-04-01"]),
            "yhat": [1.0, 2.0],
        }
    )
    store_forecast(
        small_mart,
        forecast_table(frame, date(2024, 2, 29), None, None, level="company"),
    )
    joined = forecast_actuals(small_mart)
    assert joined["periods_ahead"].tolist() == [1, 2]
    assert joined["actual"].tolist() == [30.0, 999.0]


def test_accuracy_over_time_unknown_level(small_mart):
    with pytest.raises(ForecastError, match="colour"):
        accuracy_over_time(small_mart, level="colour")


def test_superstore_region_category_check(shared_data, superstore_mart):
    with connect(superstore_mart, read_only=True) as con:
        hierarchy = hierarchy_series(
            con,
            levels=("company", "region", "business_unit", "region/business_unit"),
            end=date(2021, 12, 31),
        )
    report = compare_region_unit(
        hierarchy, origins=[pd.Timestamp("2020-12-01")], horizon=12
    )
    rows = report[report["region"] != "(all)"]
    table = rows.pivot_table(
        index=["region", "business_unit"], columns="method", values="wape"
    )
    assert len(table) == 12
    assert list(table.columns) == sorted(
        ["prophet", "prophet_reconciled", "seasonal_naive", "last_year_plus_growth"]
    )
    assert np.isfinite(table.to_numpy()).all()

    orders = _superstore_orders(shared_data)
    monthly = orders.groupby(["Region", "Category", "ds"])["Sales"].sum()
    months = pd.date_range("2021-01-01", "2021-12-01", freq="MS")
    errors, actual_total = 0.0, 0.0
    for _, values in monthly.groupby(level=[0, 1]):
        values = values.droplevel([0, 1])
        actual = values.reindex(months, fill_value=0.0).to_numpy()
        last_year = values.reindex(months - pd.DateOffset(years=1), fill_value=0.0)
        errors += np.abs(actual - 1.05 * last_year.to_numpy()).sum()
        actual_total += actual.sum()
    pooled = report[report["region"] == "(all)"].set_index("method")
    assert pooled.loc["last_year_plus_growth", "wape"] == pytest.approx(
        errors / actual_total, rel=1e-9
    )
