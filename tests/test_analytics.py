"""Top performers against the rest, and win-rate drivers.

Synthetic marts plant a known difference: sellers who visit more sell more,
and deals of one product line win more. The tests check that the analysis
finds it, with the statistics worked out by hand where they are exact.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from cockpit.analytics import (
    MIN_CLASS_DEALS,
    NOT_ENOUGH_DATA,
    compare_groups,
    top_performers,
    win_drivers,
)
from cockpit.errors import KpiError
from cockpit.mart import connect
from tests.registry_mart import S3, build_registry_mart, load_rows

YEAR = (date(2025, 1, 1), date(2025, 12, 31))


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    path = build_registry_mart(tmp_path_factory.mktemp("analytics") / "mart.duckdb")
    reader = connect(path, read_only=True)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def sellers_mart(tmp_path_factory):
    """Twelve sellers: seller i makes i visits and sells 1000 i in 2025."""
    path = tmp_path_factory.mktemp("sellers") / "mart.duckdb"
    reps, lines, activities = [], [], []
    for i in range(1, 13):
        rep = f"s{i:02d}"
        reps.append(
            {
                "rep_id": rep,
                "name": rep,
                "role": "seller",
                "team": "T",
                "region": "East",
            }
        )
        lines.append(
            {"invoice_id": f"i{i}", "line": 1, "date": "2025-06-01", "account_id": "a1",
             "product_id": "p1", "rep_id": rep, "region": "East",
             "business_unit": "Hardware", "net_revenue": 1000.0 * i, "currency": "EUR"}
        )  # fmt: skip
        for visit in range(i):
            activities.append(
                {"activity_id": f"{rep}-{visit}", "rep_id": rep, "account_id": "a1",
                 "type": "visit", "date": date(2025, 2, 1) + timedelta(days=visit),
                 "duration_minutes": 60.0, "region": "East"}
            )  # fmt: skip
    with connect(path) as writer:
        load_rows(writer, "reps", reps)
        load_rows(writer, "accounts", [{"account_id": "a1", "name": "A1"}])
        load_rows(
            writer,
            "products",
            [{"product_id": "p1", "name": "P", "business_unit": "Hardware"}],
        )
        load_rows(writer, "transactions", lines)
        load_rows(writer, "activities", activities)
    reader = connect(path, read_only=True)
    yield reader
    reader.close()


def _driver_mart(path, deals_per_line: int, seed: int = 3):
    """Closed deals of two product lines: Tools wins 80 %, Plans 20 %."""
    rng = np.random.default_rng(seed)
    rows = []
    for product, rate in (("p1", 0.8), ("p2", 0.2)):
        wins = rng.random(deals_per_line) < rate
        for i, won in enumerate(wins):
            status = "won" if won else "lost"
            rows.append(
                {"opportunity_id": f"{product}-{i}", "snapshot_date": "2025-03-01",
                 "account_id": "a1", "rep_id": "r1", "product_id": product,
                 "stage": status.title(), "status": status, "amount": 100.0,
                 "created_date": "2025-01-01", "closed_date": "2025-02-15"}
            )  # fmt: skip
    with connect(path) as writer:
        load_rows(
            writer,
            "accounts",
            [{"account_id": "a1", "name": "A1", "industry": "Retail"}],
        )
        load_rows(
            writer,
            "products",
            [
                {"product_id": "p1", "name": "Drill", "product_line": "Tools",
                 "business_unit": "Hardware", "list_price": 100.0},
                {"product_id": "p2", "name": "Care", "product_line": "Plans",
                 "business_unit": "Services", "list_price": 100.0},
            ],
        )  # fmt: skip
        load_rows(writer, "opportunities", rows)
    return connect(path, read_only=True)


# --- compare_groups -------------------------------------------------------------------


def test_compare_groups_means():
    stats = compare_groups([3, 4, 5], [1, 2])
    assert stats["mean_top"] == 4
    assert stats["mean_rest"] == 1.5
    assert stats["difference"] == 2.5


def test_compare_groups_rank_biserial():
    # Every top value beats every other value: U = 6 of 6 pairs.
    assert compare_groups([3, 4, 5], [1, 2])["rank_biserial"] == 1.0


def test_compare_groups_exact_p_value():
    # Exact two-sided test: 2 of the C(5, 2) = 10 rank splits are as extreme.
    assert compare_groups([3, 4, 5], [1, 2])["p_value"] == pytest.approx(0.2)


def test_compare_groups_interval_holds_difference():
    stats = compare_groups([3, 4, 5, 7], [1, 2, 2, 6])
    assert stats["ci_low"] <= stats["difference"] <= stats["ci_high"]


def test_compare_groups_seeded():
    first = compare_groups([3, 4, 5, 7], [1, 2, 2, 6], seed=5)
    second = compare_groups([3, 4, 5, 7], [1, 2, 2, 6], seed=5)
    assert first == second


def test_compare_groups_too_small():
    stats = compare_groups([3], [1, 2])
    assert np.isnan(stats["p_value"])


def test_compare_groups_drops_nan():
    assert compare_groups([3, np.nan, 5], [1, 2])["mean_top"] == 4


# --- top_performers --------------------------------------------------------------------


def test_top_performers_finds_visits(sellers_mart):
    result = top_performers(sellers_mart, *YEAR, metric="revenue")
    row = result.behaviours.set_index("behaviour").loc["visits_per_week"]
    # Top 3 (s10 to s12) make 11 visits on average, the other nine 5.
    weeks = 365 / 7
    assert row["mean_top"] == pytest.approx(11 / weeks)
    assert row["mean_rest"] == pytest.approx(5 / weeks)
    assert row["rank_biserial"] == 1.0


def test_top_performers_p_value(sellers_mart):
    result = top_performers(sellers_mart, *YEAR, metric="revenue")
    row = result.behaviours.set_index("behaviour").loc["visits_per_week"]
    # Exact: 2 / C(12, 3) = 2 / 220.
    assert row["p_value"] == pytest.approx(2 / 220)


def test_top_performers_groups(sellers_mart):
    result = top_performers(sellers_mart, *YEAR, metric="revenue")
    top = result.sellers[result.sellers["group"] == "top"]["rep_id"]
    assert sorted(top) == ["s10", "s11", "s12"]
    assert (result.top_sellers, result.rest_sellers) == (3, 9)


def test_top_performers_sorted_by_effect(sellers_mart):
    table = top_performers(sellers_mart, *YEAR, metric="revenue").behaviours
    effects = table["rank_biserial"].abs().fillna(0).tolist()
    assert effects == sorted(effects, reverse=True)


def test_top_performers_not_enough(registry):
    result = top_performers(registry, *YEAR, metric="revenue")
    assert result.status == NOT_ENOUGH_DATA
    assert result.behaviours.empty


def test_top_performers_unknown_metric(registry):
    with pytest.raises(KpiError, match="'sales'"):
        top_performers(registry, *YEAR, metric="sales")


def test_top_performers_share_invalid(registry):
    with pytest.raises(KpiError, match="top_share"):
        top_performers(registry, *YEAR, metric="revenue", top_share=1.5)


# --- win_drivers ---------------------------------------------------------------------------


def test_drivers_not_enough(registry):
    result = win_drivers(registry, as_of=S3)
    # Five deals closed by S3: D3, H1, H3 won; D5, H2 lost.
    assert result.status == NOT_ENOUGH_DATA
    assert (result.closed_deals, result.won, result.lost) == (5, 3, 2)


def test_drivers_threshold_counts(tmp_path):
    con = _driver_mart(tmp_path / "small.duckdb", deals_per_line=90)
    try:
        result = win_drivers(con, min_closed=200)
    finally:
        con.close()
    assert result.status == NOT_ENOUGH_DATA
    assert result.closed_deals == 180
    assert "180 closed deals" in result.message


def test_drivers_min_closed_invalid(registry):
    with pytest.raises(KpiError, match="min_closed"):
        win_drivers(registry, min_closed=2 * MIN_CLASS_DEALS - 1)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    con = _driver_mart(tmp_path_factory.mktemp("drivers") / "mart.duckdb", 200)
    yield win_drivers(con, min_closed=200)
    con.close()


def test_drivers_planted_direction(planted):
    table = planted.coefficients.set_index(["factor", "level"])
    assert table.loc[("product_line", "Tools"), "coefficient"] > 0
    assert table.loc[("product_line", "Plans"), "coefficient"] < 0


def test_drivers_planted_top_factor(planted):
    assert planted.coefficients["factor"].iloc[0] in ("product_line", "business_unit")


def test_drivers_planted_auc(planted):
    # Predicting 80 % against 20 % wins gives an AUC near 0.8.
    assert planted.cv_auc > 0.7


def test_drivers_constant_factor_dropped(planted):
    # Same list price and one industry: neither can explain anything.
    assert "log_deal_size" not in set(planted.coefficients["factor"])
    assert "industry" not in set(planted.coefficients["factor"])


def test_drivers_odds_ratio(planted):
    table = planted.coefficients
    assert np.allclose(table["odds_ratio"], np.exp(table["coefficient"]))


def test_drivers_maven_counts(maven_mart, shared_data):
    con = connect(maven_mart, read_only=True)
    try:
        result = win_drivers(con)
    finally:
        con.close()
    pipeline = pd.read_csv(shared_data / "maven-crm" / "sales_pipeline.csv")
    stages = pipeline["deal_stage"].value_counts()
    assert result.status == "ok"
    assert result.won == stages["Won"]
    assert result.lost == stages["Lost"]
    assert 0.0 <= result.cv_auc <= 1.0
