"""Numbers the regional notebooks show, checked against pandas on real files."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from cockpit import review
from cockpit.mart import connect
from cockpit.scope import Scope
from tests.conftest import SUPERSTORE_CSV

SUPERSTORE_AS_OF = date(2021, 12, 30)


@pytest.fixture(scope="module")
def orders() -> pd.DataFrame:
    frame = pd.read_csv(SUPERSTORE_CSV, encoding="utf-8")
    frame["Order Date"] = pd.to_datetime(frame["Order Date"], format="%m/%d/%Y")
    return frame


@pytest.fixture(scope="module")
def store(superstore_mart):
    con = connect(superstore_mart, read_only=True)
    yield con
    con.close()


@pytest.fixture(scope="module")
def demo(small_demo_mart):
    con = connect(small_demo_mart, read_only=True)
    yield con
    con.close()


def _slice(
    orders: pd.DataFrame, region: str, category: str, start: str, end: str
) -> pd.DataFrame:
    inside = orders["Order Date"].between(pd.Timestamp(start), pd.Timestamp(end))
    return orders[
        inside & (orders["Region"] == region) & (orders["Category"] == category)
    ]


def test_as_of_from_mart_meta(store):
    assert review.parse_as_of(None, store) == SUPERSTORE_AS_OF


def test_as_of_given_wins(store):
    assert review.parse_as_of("2020-06-30", store) == date(2020, 6, 30)


def test_next_period_after_month_end():
    assert review.next_period(date(2026, 9, 30)) == (
        date(2026, 10, 1),
        date(2027, 9, 30),
        "2026-10..2027-09",
    )


def test_next_period_inside_month():
    start, end, _ = review.next_period(date(2021, 12, 30), months=3)
    assert start == date(2022, 1, 1)
    assert end == date(2022, 3, 31)


def test_kpi_review_revenue_matches_pandas(store, orders):
    scope = Scope(region="West", business_unit="Furniture")
    result = review.kpi_review(store, scope, SUPERSTORE_AS_OF)
    expected = _slice(orders, "West", "Furniture", "2021-01-01", "2021-12-30")[
        "Sales"
    ].sum()
    assert result.tiles["revenue"] == pytest.approx(expected, abs=0.005)


def test_kpi_review_margin_matches_pandas(store, orders):
    scope = Scope(region="West", business_unit="Furniture")
    result = review.kpi_review(store, scope, SUPERSTORE_AS_OF)
    lines = _slice(orders, "West", "Furniture", "2021-01-01", "2021-12-30")
    assert result.tiles["margin_pct"] == pytest.approx(
        lines["Profit"].sum() / lines["Sales"].sum()
    )


def test_kpi_review_growth_matches_pandas(store, orders):
    scope = Scope(region="East", business_unit="Technology")
    result = review.kpi_review(store, scope, SUPERSTORE_AS_OF)
    this_year = _slice(orders, "East", "Technology", "2021-01-01", "2021-12-30")[
        "Sales"
    ].sum()
    last_year = _slice(orders, "East", "Technology", "2020-01-01", "2020-12-30")[
        "Sales"
    ].sum()
    assert result.tiles["growth_pct"] == pytest.approx(this_year / last_year - 1)


def test_kpi_review_without_targets_is_undefined(store):
    result = review.kpi_review(store, Scope(region="East"), SUPERSTORE_AS_OF)
    assert result.tiles["attainment_pct"] is None
    assert result.tiles_text["attainment_pct"] == "n/a"


def test_kpi_review_months_match_pandas(store, orders):
    result = review.kpi_review(store, Scope(region="South"), SUPERSTORE_AS_OF)
    march = orders[
        (orders["Region"] == "South")
        & (orders["Order Date"].dt.strftime("%Y-%m") == "2021-03")
    ]
    row = result.by_month.set_index("month").loc["2021-03"]
    assert row["revenue"] == pytest.approx(march["Sales"].sum())


def test_kpi_review_uses_store_currency(store):
    result = review.kpi_review(store, Scope(region="South"), SUPERSTORE_AS_OF)
    assert (
        result.tiles_text["revenue"].startswith("USD")
        or "$" in result.tiles_text["revenue"]
    )


def test_kpi_review_attainment_on_demo(demo):
    as_of = review.parse_as_of(None, demo)
    scope = Scope(region="North", business_unit="Services")
    result = review.kpi_review(demo, scope, as_of)
    targets = demo.execute(
        "SELECT sum(value) FROM targets WHERE region = 'North' AND business_unit = 'Services' AND period = '2026'"
    ).fetchone()[0]
    revenue = demo.execute(
        "SELECT sum(net_revenue) FROM transactions WHERE region = 'North' AND business_unit = 'Services' "
        "AND date BETWEEN DATE '2026-01-01' AND ?",
        [as_of],
    ).fetchone()[0]
    assert result.tiles["target"] == pytest.approx(targets)
    assert result.tiles["attainment_pct"] == pytest.approx(revenue / targets)


def test_kpi_review_sellers_sum_to_tile(demo):
    as_of = review.parse_as_of(None, demo)
    result = review.kpi_review(
        demo, Scope(region="West", business_unit="Consumables"), as_of
    )
    assert result.by_seller["revenue"].sum() == pytest.approx(result.tiles["revenue"])


def test_forecast_review_compares_three_methods(store):
    result = review.forecast_review(
        store, Scope(region="West", business_unit="Furniture"), SUPERSTORE_AS_OF
    )
    methods = set(result.summary["method"])
    assert methods == {"cockpit forecast", "seasonal naive", "last year + growth"}


def test_forecast_review_wape_finite(store):
    result = review.forecast_review(
        store, Scope(region="West", business_unit="Furniture"), SUPERSTORE_AS_OF
    )
    assert np.isfinite(result.summary["wape"]).all()


def test_forecast_review_never_negative(store):
    result = review.forecast_review(
        store, Scope(region="Central", business_unit="Furniture"), SUPERSTORE_AS_OF
    )
    assert (result.forecast["yhat"] >= 0).all()
    assert (result.forecast["yhat_lower"] >= 0).all()


def test_forecast_review_reaches_period_end(store):
    # The last complete month before 2021-12-30 is November, so the forecast
    # must run 13 months to cover the next period up to December 2022.
    result = review.forecast_review(
        store, Scope(region="East", business_unit="Technology"), SUPERSTORE_AS_OF
    )
    assert pd.Timestamp(result.forecast["ds"].max()) == pd.Timestamp("2022-12-01")


def test_forecast_review_total_backtest_matches_pandas(store, orders):
    # The total series' last-year-plus-growth forecast is reproducible by hand.
    result = review.forecast_review(
        store,
        Scope(region="East", business_unit="Office Supplies"),
        SUPERSTORE_AS_OF,
        growth_pct=0.05,
    )
    lines = orders[
        (orders["Region"] == "East") & (orders["Category"] == "Office Supplies")
    ]
    monthly = lines.groupby(lines["Order Date"].dt.to_period("M"))["Sales"].sum()
    holdout = monthly.loc["2020-12":"2021-11"]
    base = monthly.loc["2019-12":"2020-11"].to_numpy() * 1.05
    expected = np.abs(holdout.to_numpy() - base).sum() / holdout.sum()
    row = result.backtests[
        (result.backtests["series_id"] == "total")
        & (result.backtests["method"] == "last_year_plus_growth")
    ]
    assert float(row["wape"].iloc[0]) == pytest.approx(expected)


def test_target_review_without_sellers_is_empty(store, tmp_path):
    result = review.target_review(
        store,
        Scope(region="West", business_unit="Furniture"),
        SUPERSTORE_AS_OF,
        tmp_path,
    )
    assert result.targets.empty
    assert result.forecast_total > 0


def test_target_review_sums_to_forecast(demo, tmp_path):
    as_of = review.parse_as_of(None, demo)
    result = review.target_review(
        demo, Scope(region="South", business_unit="Equipment"), as_of, tmp_path
    )
    assert result.targets["target"].sum() == pytest.approx(
        result.forecast_total, abs=0.01
    )


def test_target_review_reads_saved_forecast(demo, tmp_path):
    as_of = review.parse_as_of(None, demo)
    start, end, _ = review.next_period(as_of)
    saved = pd.DataFrame({"ds": pd.date_range(start, end, freq="MS"), "yhat": 1000.0})
    review.write_result(tmp_path, "forecasts", saved)
    result = review.target_review(
        demo, Scope(region="South", business_unit="Equipment"), as_of, tmp_path
    )
    assert result.forecast_total == pytest.approx(12_000.0)
    assert "saved" in result.forecast_source


def test_target_result_table_loads_into_targets(demo, tmp_path):
    from cockpit.mart import load_frame

    as_of = review.parse_as_of(None, demo)
    result = review.target_review(
        demo, Scope(region="East", business_unit="Services"), as_of, tmp_path
    )
    table = review.target_result_table(result)
    with connect(tmp_path / "targets.duckdb") as con:
        report = load_frame(
            con, "targets", table, source="test", source_file="targets.parquet"
        )
    assert report.rows_loaded == len(result.targets)
    assert report.rows_quarantined == 0


def test_pipeline_review_waterfall_reconciles(demo):
    as_of = review.parse_as_of(None, demo)
    result = review.pipeline_review(
        demo, Scope(region="North", business_unit="Equipment"), as_of
    )
    steps = result.waterfall.set_index("step")["value"]
    moves = steps.drop(["start", "end"]).sum()
    assert steps["start"] + moves == pytest.approx(steps["end"])


def test_pipeline_review_open_matches_snapshot(demo):
    as_of = review.parse_as_of(None, demo)
    result = review.pipeline_review(
        demo, Scope(region="North", business_unit="Equipment"), as_of
    )
    expected = demo.execute(
        """
        SELECT sum(amount) FROM opportunities
        WHERE status = 'open' AND region = 'North' AND business_unit = 'Equipment'
          AND snapshot_date = (SELECT max(snapshot_date) FROM opportunities WHERE snapshot_date <= ?)
        """,
        [as_of],
    ).fetchone()[0]
    assert result.summary["open_pipeline"].sum() == pytest.approx(expected)


def test_pipeline_review_single_snapshot(maven_mart):
    with connect(maven_mart, read_only=True) as con:
        as_of = review.parse_as_of(None, con)
        result = review.pipeline_review(
            con, Scope(region="West", business_unit="MG"), as_of
        )
    assert result.waterfall.empty
    assert "only one pipeline snapshot" in result.movement_window


def test_pipeline_review_ranks_without_targets(maven_mart):
    with connect(maven_mart, read_only=True) as con:
        as_of = review.parse_as_of(None, con)
        result = review.pipeline_review(
            con, Scope(region="West", business_unit="MG"), as_of
        )
    assert result.performers.metric == "won_value"


def test_gap_review_projection_adds_parts(demo):
    as_of = review.parse_as_of(None, demo)
    result = review.gap_review(
        demo, Scope(region="South", business_unit="Services"), as_of
    )
    frame = result.by_seller
    parts = frame["actual"] + frame["pipeline_expected"] + frame["run_rate_expected"]
    assert np.allclose(parts, frame["projected"])


def test_gap_review_bonus_covers_region(demo):
    as_of = review.parse_as_of(None, demo)
    result = review.gap_review(
        demo, Scope(region="South", business_unit="Services"), as_of
    )
    sellers = demo.execute(
        "SELECT count(*) FROM reps WHERE role = 'seller' AND region = 'South'"
    ).fetchone()[0]
    assert result.bonus_note.startswith("plan sellers_2026")
    assert 0 < len(result.bonuses) <= sellers


def test_gap_review_without_plan_period(store):
    result = review.gap_review(
        store, Scope(region="West", business_unit="Furniture"), SUPERSTORE_AS_OF
    )
    assert result.bonuses.empty
    assert result.bonus_note == "no incentive plan covers 2021-12-30"


def test_target_review_adds_ambition(demo, tmp_path):
    as_of = review.parse_as_of(None, demo)
    scope = Scope(region="South", business_unit="Equipment")
    plain = review.target_review(demo, scope, as_of, tmp_path / "a")
    raised = review.target_review(demo, scope, as_of, tmp_path / "b", ambition_pct=0.10)
    assert raised.targets["target"].sum() == pytest.approx(
        plain.forecast_total * 1.10, abs=0.01
    )


def test_target_result_version_follows_mart(demo, tmp_path):
    as_of = review.parse_as_of(None, demo)
    result = review.target_review(
        demo, Scope(region="East", business_unit="Services"), as_of, tmp_path
    )
    assert set(review.target_result_table(result)["version"]) == {1}
    assert set(review.target_result_table(result, demo)["version"]) == {1}
