"""Tests of monthly series, forecasts with fallbacks, backtests and batches."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import date

import numpy as np
import pandas as pd
import pytest

from cockpit.errors import ForecastError
from cockpit.forecast import (
    MANY_COLUMNS,
    backtest,
    forecast_many,
    forecast_series,
    forecast_table,
    monthly_series,
)
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


def test_intermittent_series_falls_back():
    values = [0.0] * 36
    values[3] = 500.0
    values[17] = 250.0
    values[30] = 90.0
    result = forecast_series(_history(values), 12)
    assert result.method == "seasonal_naive"
    assert "intermittent" in result.note
    assert result.frame["yhat"].tolist() == values[24:]


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
        "region",
        "business_unit",
        "ds",
        "yhat",
        "yhat_lower",
        "yhat_upper",
        "created_at",
    ]
    assert table["as_of"].unique().tolist() == [date(2024, 6, 30)]
    assert table["region"].unique().tolist() == ["East"]


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
