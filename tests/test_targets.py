"""Tests of seller targets: the regional split, the top-down plan and role targets."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cockpit.errors import TargetError
from cockpit.ingest import ingest_source
from cockpit.mart import TABLES, connect, load_frame
from cockpit.scope import Scope
from cockpit.targets import (
    LEVEL_COLUMNS,
    PLAN_LEVELS,
    ROLE_TARGET_COLUMNS,
    TARGET_COLUMNS,
    TargetPolicy,
    allocate_cents,
    allocate_hierarchy,
    blend_shares,
    plan_targets,
    quarter_bounds,
    role_targets,
    seller_targets,
    target_rows,
)

EAST_TOOLS = Scope(region="East", business_unit="Tools")
START = date(2025, 1, 1)
END = date(2025, 12, 31)
AS_OF = date(2024, 12, 31)


@pytest.fixture
def mart(tmp_path):
    con = connect(tmp_path / "mart.duckdb")
    load_frame(
        con,
        "reps",
        pd.DataFrame(
            {
                "rep_id": ["S1", "S2", "S3", "S4", "S5", "M1"],
                "name": ["Ana", "Ben", "Cleo", "Dan", "Eve", "Max"],
                "role": ["seller"] * 5 + ["manager"],
                "team": ["T1"] * 4 + ["T2", "T1"],
                "region": ["East"] * 4 + ["West", "East"],
                "active_from": [None, None, "2024-11-01", None, None, None],
                "active_to": [None, None, None, "2024-12-31", None, None],
            }
        ),
        source="test",
        source_file="reps.csv",
    )
    lines = [
        # rep, date, region, business unit, revenue
        ("S1", "2024-01-01", "East", "Tools", 200.0),
        ("S1", "2024-12-31", "East", "Tools", 100.0),
        ("S1", "2023-12-31", "East", "Tools", 5000.0),  # before the window
        ("S1", "2025-01-02", "East", "Tools", 5000.0),  # after as_of
        ("S2", "2024-06-15", "East", "Tools", 130.0),
        ("S2", "2024-07-15", "East", "Tools", -30.0),  # credit note
        ("S2", "2024-06-15", "East", "Supplies", 9000.0),  # other unit
        ("S4", "2024-05-01", "East", "Tools", 50.0),  # seller who left
        ("S5", "2024-05-01", "West", "Tools", 700.0),  # other region
        ("M1", "2024-05-01", "East", "Tools", 80.0),  # a manager's own deal
    ]
    frame = pd.DataFrame(
        lines, columns=["rep_id", "date", "region", "business_unit", "net_revenue"]
    )
    frame.insert(0, "invoice_id", [f"I{n}" for n in range(len(frame))])
    frame.insert(1, "line", 1)
    frame["currency"] = "EUR"
    load_frame(con, "transactions", frame, source="test", source_file="lines.csv")
    yield con
    con.close()


def _by_rep(frame: pd.DataFrame, column: str) -> dict:
    return dict(zip(frame["rep_id"], frame[column], strict=True))


def test_targets_active_sellers_only(mart):
    frame = seller_targets(mart, EAST_TOOLS, START, END, 1000.0, AS_OF)
    assert frame["rep_id"].tolist() == ["S1", "S2", "S3"]
    assert list(frame.columns) == TARGET_COLUMNS


def test_targets_history_window(mart):
    frame = seller_targets(mart, EAST_TOOLS, START, END, 1000.0, AS_OF)
    assert _by_rep(frame, "last_year_revenue") == {"S1": 300.0, "S2": 100.0, "S3": 0.0}


def test_targets_shares_hand_computed(mart):
    frame = seller_targets(mart, EAST_TOOLS, START, END, 1000.0, AS_OF)
    shares = _by_rep(frame, "share")
    # S3 has no history: half an equal split over 3 sellers is 1/6.
    # S1 and S2 share the remaining 5/6 as 300 : 100.
    assert shares["S3"] == pytest.approx(1 / 6)
    assert shares["S1"] == pytest.approx(5 / 6 * 0.75)
    assert shares["S2"] == pytest.approx(5 / 6 * 0.25)
    assert _by_rep(frame, "target") == {"S1": 625.0, "S2": 208.33, "S3": 166.67}


def test_targets_methods(mart):
    frame = seller_targets(mart, EAST_TOOLS, START, END, 1000.0, AS_OF)
    assert _by_rep(frame, "method") == {
        "S1": "revenue_share",
        "S2": "revenue_share",
        "S3": "new_seller_floor",
    }


def test_targets_scope_columns(mart):
    frame = seller_targets(mart, EAST_TOOLS, START, END, 1000.0, AS_OF)
    assert frame["region"].unique().tolist() == ["East"]
    assert frame["business_unit"].unique().tolist() == ["Tools"]
    assert frame["name"].tolist() == ["Ana", "Ben", "Cleo"]


def test_targets_sum_exactly(mart):
    total = 1_234_567.89
    frame = seller_targets(mart, EAST_TOOLS, START, END, total, AS_OF)
    cents = (frame["target"] * 100).round().astype(int)
    assert cents.sum() == 123_456_789
    assert frame["target"].sum() == pytest.approx(total, abs=1e-6)


def test_targets_rounding_on_largest(mart):
    # 7 cents: 4.375, 1.458 and 1.167 round to 4, 1 and 1, so S1 takes the lost cent.
    frame = seller_targets(mart, EAST_TOOLS, START, END, 0.07, AS_OF)
    assert _by_rep(frame, "target") == {"S1": 0.05, "S2": 0.01, "S3": 0.01}
    assert "+0.01 added for rounding" in frame["basis"].iloc[0]
    assert "rounding" not in frame["basis"].iloc[1]


def test_targets_equal_split_without_history(mart):
    frame = seller_targets(mart, EAST_TOOLS, START, END, 100.0, date(2020, 12, 31))
    assert frame["method"].unique().tolist() == ["equal_split"]
    assert frame["target"].tolist() == [33.34, 33.33, 33.33]


def test_targets_floor_fraction_zero(mart):
    frame = seller_targets(
        mart, EAST_TOOLS, START, END, 1000.0, AS_OF, floor_fraction=0.0
    )
    assert _by_rep(frame, "target") == {"S1": 750.0, "S2": 250.0, "S3": 0.0}


def test_targets_basis_sentences(mart):
    frame = seller_targets(mart, EAST_TOOLS, START, END, 1000.0, AS_OF)
    basis = _by_rep(frame, "basis")
    assert basis["S1"].startswith("62.50% of the forecast of 1,000.00")
    assert "booked 300.00 of the 400.00 revenue" in basis["S1"]
    assert "new-seller floor" in basis["S3"]


def test_targets_team_scope(mart):
    frame = seller_targets(mart, Scope(team="T2"), START, END, 10.0, AS_OF)
    assert frame["rep_id"].tolist() == ["S5"]
    assert frame["target"].tolist() == [10.0]
    assert frame["region"].tolist() == ["West"]


def test_targets_empty_scope(mart):
    frame = seller_targets(mart, Scope(region="North"), START, END, 500.0, AS_OF)
    assert frame.empty
    assert list(frame.columns) == TARGET_COLUMNS


def test_targets_mart_without_reps(tmp_path):
    with connect(tmp_path / "empty.duckdb") as con:
        frame = seller_targets(con, EAST_TOOLS, START, END, 500.0, AS_OF)
    assert frame.empty
    assert list(frame.columns) == TARGET_COLUMNS


def test_targets_superstore_has_no_sellers(shared_data, tmp_path):
    mart = tmp_path / "superstore.duckdb"
    ingest_source(
        "superstore", shared_data / "superstore" / "Sample - Superstore.csv", mart
    )
    scope = Scope(region="West", business_unit="Technology")
    with connect(mart, read_only=True) as con:
        frame = seller_targets(con, scope, START, END, 90_000.0, date(2021, 12, 31))
    assert frame.empty
    assert list(frame.columns) == TARGET_COLUMNS


def test_targets_period_reversed(mart):
    with pytest.raises(TargetError, match="2024-01-01"):
        seller_targets(mart, EAST_TOOLS, START, date(2024, 1, 1), 1.0, AS_OF)


def test_targets_negative_total(mart):
    with pytest.raises(TargetError, match="-5"):
        seller_targets(mart, EAST_TOOLS, START, END, -5.0, AS_OF)


def test_target_rows_match_table(mart):
    frame = seller_targets(mart, EAST_TOOLS, START, END, 1000.0, AS_OF)
    rows = target_rows(
        frame, "2025", START, END, "hub", "first targets", 1, datetime(2025, 1, 2, 9)
    )
    assert list(rows.columns) == TABLES["targets"].column_names
    assert rows["level"].unique().tolist() == ["rep"]
    assert rows["metric"].unique().tolist() == ["revenue"]
    assert rows["method"].unique().tolist() == ["forecast_share"]
    assert rows["key"].tolist() == ["S1", "S2", "S3"]
    assert rows["value"].tolist() == [625.0, 208.33, 166.67]


def test_target_rows_load_into_mart(mart):
    frame = seller_targets(mart, EAST_TOOLS, START, END, 1000.0, AS_OF)
    rows = target_rows(frame, "2025", START, END, "hub", None, 1, datetime(2025, 1, 2))
    report = load_frame(mart, "targets", rows, source="targets", source_file="run")
    assert report.rows_loaded == 3
    assert report.rows_quarantined == 0
    stored = mart.execute("SELECT sum(value) FROM targets").fetchone()[0]
    assert stored == pytest.approx(1000.0)


def test_target_rows_empty_frame():
    rows = target_rows(
        pd.DataFrame(columns=TARGET_COLUMNS),
        "2025",
        START,
        END,
        "hub",
        None,
        1,
        datetime(2025, 1, 2),
    )
    assert rows.empty
    assert list(rows.columns) == TABLES["targets"].column_names


# ==========================================================================
# Top-down plan: cents, blend and hierarchy


@given(
    weights=st.lists(
        st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=30
    ),
    total=st.integers(min_value=0, max_value=10**13),
)
def test_allocate_cents_exact(weights, total):
    if sum(weights) == 0:
        weights = [1.0] * len(weights)
    cents = allocate_cents(weights, total)
    assert int(cents.sum()) == total
    assert (cents >= 0).all()
    quotas = [w / sum(weights) * total for w in weights]
    assert max(abs(c - q) for c, q in zip(cents, quotas, strict=True)) < 1 + 1e-6


def test_allocate_cents_largest_remainder():
    # Quotas 3.5, 1.75, 1.75: floors 3, 1, 1 and the two cents left go to
    # the largest remainders (0.75, 0.75) before 0.5.
    assert allocate_cents([0.5, 0.25, 0.25], 7).tolist() == [3, 2, 2]
    assert allocate_cents([1, 1, 1], 100).tolist() == [34, 33, 33]


def test_allocate_cents_rejects_bad_input():
    with pytest.raises(TargetError, match="-5 cents"):
        allocate_cents([1.0], -5)
    with pytest.raises(TargetError, match="add up to 0"):
        allocate_cents([0.0, 0.0], 10)
    with pytest.raises(TargetError, match="non-negative"):
        allocate_cents([1.0, -1.0], 10)


def test_blend_shares_by_hand():
    weights, f_share, h_share, rule = blend_shares(
        np.array([300.0, 100.0]), np.array([0.0, 50.0]), 0.8
    )
    assert rule == "blend"
    assert f_share.tolist() == [0.75, 0.25]
    assert h_share.tolist() == [0.0, 1.0]
    assert weights.tolist() == pytest.approx([0.6, 0.4])


@pytest.mark.parametrize(
    ("forecast", "headroom", "rule", "weights"),
    [
        ([1.0, 3.0], [0.0, 0.0], "forecast_only", [0.25, 0.75]),
        ([0.0, 0.0], [1.0, 1.0], "headroom_only", [0.5, 0.5]),
        ([0.0, 0.0], [0.0, 0.0], "equal_split", [0.5, 0.5]),
    ],
)
def test_blend_shares_fallbacks(forecast, headroom, rule, weights):
    result = blend_shares(np.array(forecast), np.array(headroom), 0.8)
    assert result[3] == rule
    assert result[0].tolist() == pytest.approx(weights)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("ambition_pct", -1.0, "ambition_pct -1.0"),
        ("forecast_weight", 1.5, "forecast_weight 1.5"),
        ("new_seller_floor", -0.1, "new_seller_floor -0.1"),
        ("history_months", 0, "history_months 0"),
    ],
)
def test_policy_rejected(field, value, fragment):
    with pytest.raises(TargetError, match=fragment):
        TargetPolicy(**{field: value})


def _leaves(rows) -> pd.DataFrame:
    return pd.DataFrame(
        rows,
        columns=["rep_id", "region", "team", "business_unit", "history", "headroom"],
    )


def test_hierarchy_by_hand():
    leaves = _leaves(
        [
            ("S1", "East", "T1", "Tools", 300.0, 0.0),
            ("S2", "East", "T1", "Tools", 100.0, 50.0),
        ]
    )
    units = pd.DataFrame(
        {"region": ["East"], "business_unit": ["Tools"], "forecast_cents": [40_000]}
    )
    nodes = allocate_hierarchy(leaves, units, 42_000, TargetPolicy(forecast_weight=0.8))
    reps = nodes[nodes["level"] == "rep"].set_index("rep_id")
    # Forecast 400.00 split 3:1 by history; target 420.00 split by
    # 0.8 x (0.75, 0.25) + 0.2 x (0, 1) = (0.6, 0.4).
    assert reps["forecast_cents"].to_dict() == {"S1": 30_000, "S2": 10_000}
    assert reps["top_down_cents"].to_dict() == {"S1": 25_200, "S2": 16_800}
    assert nodes.loc[nodes["level"] == "team", "top_down_cents"].tolist() == [42_000]


def test_hierarchy_new_seller_floor():
    leaves = _leaves(
        [
            ("S1", "East", "T1", "Tools", 300.0, 0.0),
            ("S2", "East", "T1", "Tools", 100.0, 0.0),
            ("S3", "East", "T1", "Tools", 0.0, 0.0),
        ]
    )
    units = pd.DataFrame(
        {"region": ["East"], "business_unit": ["Tools"], "forecast_cents": [60_000]}
    )
    nodes = allocate_hierarchy(leaves, units, 60_000, TargetPolicy())
    reps = nodes[nodes["level"] == "rep"].set_index("rep_id")
    # S3 gets half of an equal third (100.00); S1 and S2 share 500.00 by 3:1.
    assert reps["top_down_cents"].to_dict() == {
        "S1": 37_500,
        "S2": 12_500,
        "S3": 10_000,
    }
    assert reps.loc["S3", "rule"] == "new_seller_floor"


def test_hierarchy_unit_without_sellers():
    leaves = _leaves([("S1", "East", "T1", "Tools", 10.0, 0.0)])
    units = pd.DataFrame(
        {
            "region": ["East", "East"],
            "business_unit": ["Tools", "Parts"],
            "forecast_cents": [1_000, 3_000],
        }
    )
    nodes = allocate_hierarchy(leaves, units, 4_000, TargetPolicy())
    parts = nodes[(nodes["level"] == "business_unit") & (nodes["key"] == "Parts")]
    assert parts["top_down_cents"].tolist() == [3_000]
    assert nodes.loc[nodes["level"] == "rep", "top_down_cents"].tolist() == [1_000]


def test_hierarchy_rejects_duplicates():
    leaves = _leaves(
        [
            ("S1", "East", "T1", "Tools", 1.0, 0.0),
            ("S1", "East", "T1", "Tools", 2.0, 0.0),
        ]
    )
    units = pd.DataFrame(
        {"region": ["East"], "business_unit": ["Tools"], "forecast_cents": [1]}
    )
    with pytest.raises(TargetError, match="S1 appears twice"):
        allocate_hierarchy(leaves, units, 1, TargetPolicy())


def _children_add_up(nodes: pd.DataFrame, column: str) -> list[str]:
    """Return the parents whose children do not add up to them in `column`."""
    wrong = []
    for position, level in enumerate(PLAN_LEVELS[:-1]):
        child_level = PLAN_LEVELS[position + 1]
        columns = list(LEVEL_COLUMNS[level])
        children = nodes[nodes["level"] == child_level]
        for _, parent in nodes[nodes["level"] == level].iterrows():
            mine = children
            for c in columns:
                mine = mine[mine[c] == parent[c]]
            if len(mine) and int(mine[column].sum()) != int(parent[column]):
                wrong.append(f"{level} {parent['key']}")
    return wrong


@st.composite
def _hierarchies(draw):
    rows = []
    regions = draw(st.integers(1, 3))
    units = [f"U{u}" for u in range(draw(st.integers(1, 3)))]
    money = st.floats(min_value=-50, max_value=1e6, allow_nan=False)
    headroom = st.one_of(st.just(0.0), st.floats(min_value=0, max_value=1e6))
    for r in range(regions):
        for t in range(draw(st.integers(1, 3))):
            for s in range(draw(st.integers(1, 4))):
                for unit in units:
                    rows.append(
                        (
                            f"S{r}{t}{s}",
                            f"R{r}",
                            f"T{r}{t}",
                            unit,
                            draw(money),
                            draw(headroom),
                        )
                    )
    forecast = [
        (f"R{r}", unit, draw(st.integers(0, 10**10)))
        for r in range(regions + 1)  # one region without sellers
        for unit in units
    ]
    return (
        _leaves(rows),
        pd.DataFrame(forecast, columns=["region", "business_unit", "forecast_cents"]),
        draw(st.integers(0, 10**11)),
        draw(st.floats(0, 1)),
    )


@settings(max_examples=60, deadline=None)
@given(_hierarchies())
def test_hierarchy_sums_exact(case):
    leaves, units, target, weight = case
    nodes = allocate_hierarchy(
        leaves, units, target, TargetPolicy(forecast_weight=weight)
    )
    company = nodes[nodes["level"] == "company"].iloc[0]
    assert int(company["top_down_cents"]) == target
    assert int(company["forecast_cents"]) == int(units["forecast_cents"].sum())
    assert _children_add_up(nodes, "top_down_cents") == []
    assert _children_add_up(nodes, "forecast_cents") == []
    assert (nodes["top_down_cents"] >= 0).all()
    assert len(nodes[nodes["level"] == "rep"]) == len(leaves)


# --------------------------------------------------------------------------
# Plan on the demo mart


PLAN_AS_OF = date(2025, 12, 31)


def demo_forecast(con) -> pd.DataFrame:
    """Monthly 2026 forecast per region x unit: the same month of 2025 + 4 %."""
    return con.execute(
        """
        SELECT region, business_unit,
               CAST(date_trunc('month', date) + INTERVAL 1 YEAR AS DATE) AS ds,
               sum(net_revenue) * 1.04 AS yhat
        FROM transactions
        WHERE date >= '2025-01-01' AND date <= '2025-12-31'
        GROUP BY ALL
        """
    ).df()


@pytest.fixture(scope="module")
def demo(small_demo_mart):
    con = connect(small_demo_mart, read_only=True)
    yield con
    con.close()


@pytest.fixture(scope="module")
def plan(demo):
    return plan_targets(demo, 2026, demo_forecast(demo), PLAN_AS_OF)


def test_plan_sums_every_level(plan):
    for period, nodes in plan.nodes.groupby("period"):
        assert _children_add_up(nodes, "top_down_cents") == [], period
        assert _children_add_up(nodes, "forecast_cents") == [], period


def test_plan_company_target(plan, demo):
    forecast = demo_forecast(demo)
    quarter = pd.to_datetime(forecast["ds"]).dt.quarter
    company = plan.nodes[plan.nodes["level"] == "company"].set_index("period")
    for q in (1, 2, 3, 4):
        cents = (
            (
                forecast.loc[quarter == q]
                .groupby(["region", "business_unit"])["yhat"]
                .sum()
                * 100
            )
            .round()
            .sum()
        )
        assert company.loc[f"2026-Q{q}", "forecast_cents"] == int(cents)
        assert company.loc[f"2026-Q{q}", "top_down_cents"] == round(int(cents) * 1.05)


def test_plan_year_sums_quarters(plan):
    nodes = plan.nodes
    keys = ["level", "key", "region", "business_unit", "team"]
    quarters = (
        nodes[nodes["period"] != "2026"]
        .groupby(keys, dropna=False)["top_down_cents"]
        .sum()
    )
    year = nodes[nodes["period"] == "2026"].set_index(keys)["top_down_cents"]
    assert year.sort_index().tolist() == quarters.sort_index().tolist()
    assert (
        plan.company_target
        == int(year.loc[("company", "company", None, None, None)]) / 100
    )


def test_plan_sellers_match_reps(plan, demo):
    active = demo.execute(
        """
        SELECT count(*) FROM reps WHERE role = 'seller'
          AND (active_from IS NULL OR active_from <= DATE '2026-01-01')
          AND (active_to IS NULL OR active_to >= DATE '2026-01-01')
        """
    ).fetchall()[0][0]
    reps = plan.nodes[
        (plan.nodes["level"] == "rep") & (plan.nodes["period"] == "2026-Q1")
    ]
    assert reps["rep_id"].nunique() == active
    assert len(reps) == active * 3


def test_plan_history_matches_sql(plan, demo):
    expected = demo.execute(
        """
        SELECT rep_id, business_unit, sum(net_revenue) FROM transactions
        WHERE date > DATE '2024-12-31' AND date <= DATE '2025-12-31'
        GROUP BY ALL
        """
    ).fetchall()
    reps = plan.nodes[
        (plan.nodes["level"] == "rep") & (plan.nodes["period"] == "2026-Q1")
    ]
    history = reps.set_index(["rep_id", "business_unit"])["history"]
    for rep_id, unit, revenue in expected:
        if (rep_id, unit) in history.index:
            assert history[(rep_id, unit)] == pytest.approx(revenue)


def test_plan_blend_weight_one(demo):
    plan = plan_targets(
        demo,
        2026,
        demo_forecast(demo),
        PLAN_AS_OF,
        TargetPolicy(forecast_weight=1.0, ambition_pct=0.0),
        quarters=(1,),
    )
    reps = plan.nodes[plan.nodes["level"] == "rep"]
    assert (reps["top_down_cents"] == reps["forecast_cents"]).all()


def test_plan_missing_quarter(demo):
    forecast = demo_forecast(demo)
    forecast = forecast[pd.to_datetime(forecast["ds"]).dt.month <= 6]
    with pytest.raises(TargetError, match="no month in 2026-Q3"):
        plan_targets(demo, 2026, forecast, PLAN_AS_OF)


def test_plan_forecast_without_column(demo):
    with pytest.raises(TargetError, match="yhat"):
        plan_targets(demo, 2026, demo_forecast(demo).drop(columns="yhat"), PLAN_AS_OF)


def test_plan_basis_sentence(plan):
    rep = plan.nodes[
        (plan.nodes["level"] == "rep") & (plan.nodes["rule"] == "blend")
    ].iloc[0]
    assert rep["basis"].startswith(
        f"{rep['period']}: {rep['weight']:.2%} of the parent"
    )
    assert f"baseline forecast {rep['forecast_cents'] / 100:,.2f}" in rep["basis"]


# --------------------------------------------------------------------------
# Role targets


def _basis(role, **values) -> pd.DataFrame:
    row = {
        "rep_id": "S1",
        "name": "Ana",
        "region": "East",
        "team": "T1",
        "role_type": role,
        "revenue_12m": 0.0,
        "retention": np.nan,
        "win_rate": np.nan,
        "key_share": 0.0,
        "key_accounts": 0,
        "key_spend": 0.0,
        "key_potential": 0.0,
    }
    row.update(values)
    return pd.DataFrame([row])


def _quarters(euros) -> pd.DataFrame:
    rows = []
    for q, value in enumerate(euros, start=1):
        start, end = quarter_bounds(2026, q)
        rows.append(("S1", f"2026-Q{q}", start, end, round(value * 100)))
    return pd.DataFrame(
        rows, columns=["rep_id", "period", "period_start", "period_end", "target_cents"]
    )


def _values(frame: pd.DataFrame, metric: str) -> dict[str, float]:
    rows = frame[frame["metric"] == metric]
    return dict(zip(rows["period"], rows["value"], strict=True))


def test_role_hunter():
    # Book 300.00 x retention 110 % = 330.00, phased equally: 82.50 a quarter.
    bases = _basis("hunter", revenue_12m=300.0, retention=1.1, win_rate=0.25)
    result = role_targets(_quarters([100, 100, 100, 100]), bases)
    new_business = _values(result, "new_business_revenue")
    assert new_business == {
        "2026-Q1": 17.5,
        "2026-Q2": 17.5,
        "2026-Q3": 17.5,
        "2026-Q4": 17.5,
        "2026": 70.0,
    }
    assert _values(result, "pipeline_created")["2026"] == 280.0
    assert list(result.columns) == ROLE_TARGET_COLUMNS


def test_role_hunter_floor_and_unknown_retention():
    bases = _basis("hunter", revenue_12m=800.0)
    result = role_targets(
        _quarters([100, 200, 300, 400]),
        bases,
        _quarters([1, 1, 1, 1]).rename(columns={"target_cents": "weight"}),
    )
    # Retention unknown counts as 100 %: 200.00 of book a quarter.
    assert _values(result, "new_business_revenue") == {
        "2026-Q1": 0.0,
        "2026-Q2": 0.0,
        "2026-Q3": 100.0,
        "2026-Q4": 200.0,
        "2026": 300.0,
    }
    assert "pipeline_created" not in set(result["metric"])
    assert "unknown, taken as 100 %" in result["basis"].iloc[0]


def test_role_grower():
    bases = _basis("grower", revenue_12m=800.0)
    result = role_targets(_quarters([100, 200, 300, 400]), bases)
    # Book phased like the targets: 80, 160, 240, 320.
    assert _values(result, "revenue_growth") == {
        "2026-Q1": 20.0,
        "2026-Q2": 40.0,
        "2026-Q3": 60.0,
        "2026-Q4": 80.0,
        "2026": 200.0,
    }


def test_role_key_account_manager():
    bases = _basis(
        "key_account_manager",
        revenue_12m=900.0,
        key_share=0.75,
        key_accounts=2,
        key_spend=600.0,
        key_potential=1000.0,
    )
    result = role_targets(_quarters([100, 200, 300, 400]), bases)
    assert _values(result, "key_account_revenue") == {
        "2026-Q1": 75.0,
        "2026-Q2": 150.0,
        "2026-Q3": 225.0,
        "2026-Q4": 300.0,
        "2026": 750.0,
    }
    assert _values(result, "key_account_share_of_wallet") == {"2026": 0.75}
    sow = result[result["metric"] == "key_account_share_of_wallet"].iloc[0]
    assert sow["unit"] == "ratio"
    assert "now 60.0%" in sow["basis"]


def test_role_without_type():
    result = role_targets(_quarters([100] * 4), _basis(None, revenue_12m=10.0))
    assert result.empty


def test_role_bases_match_sql(demo, plan):
    bases = plan.bases.set_index("rep_id")
    revenue = dict(
        demo.execute(
            """
            SELECT rep_id, sum(net_revenue) FROM transactions
            WHERE date > DATE '2024-12-31' AND date <= DATE '2025-12-31'
            GROUP BY rep_id
            """
        ).fetchall()
    )
    for rep_id, value in revenue.items():
        if rep_id in bases.index:
            assert bases.loc[rep_id, "revenue_12m"] == pytest.approx(value)
    lines = demo.execute(
        "SELECT account_id, region, date, net_revenue FROM transactions"
    ).df()
    lines["date"] = pd.to_datetime(lines["date"])
    earlier = lines[(lines["date"] > "2023-12-31") & (lines["date"] <= "2024-12-31")]
    later = lines[(lines["date"] > "2024-12-31") & (lines["date"] <= "2025-12-31")]
    buyers = earlier.groupby("account_id")["net_revenue"].sum()
    buyers = buyers[buyers > 0].index
    for region in ("North", "East"):
        kept = later[(later["region"] == region) & later["account_id"].isin(buyers)]
        expected = (
            kept["net_revenue"].sum()
            / earlier.loc[earlier["region"] == region, "net_revenue"].sum()
        )
        assert bases[bases["region"] == region]["retention"].iloc[0] == pytest.approx(
            expected
        )


def test_role_bases_key_share(demo, plan):
    bases = plan.bases.set_index("rep_id")
    kam = bases[bases["role_type"] == "key_account_manager"].index[0]
    key, total = demo.execute(
        """
        SELECT sum(t.net_revenue) FILTER (WHERE a.is_key_account), sum(t.net_revenue)
        FROM transactions t JOIN accounts a USING (account_id)
        WHERE t.rep_id = ? AND t.date > DATE '2024-12-31' AND t.date <= DATE '2025-12-31'
        """,
        [kam],
    ).fetchall()[0]
    assert bases.loc[kam, "key_share"] == pytest.approx(key / total)


def test_role_targets_from_plan(plan):
    reps = plan.nodes[(plan.nodes["level"] == "rep") & (plan.nodes["period"] != "2026")]
    sellers = (
        reps.groupby(
            ["rep_id", "period", "period_start", "period_end"], as_index=False
        )["top_down_cents"]
        .sum()
        .rename(columns={"top_down_cents": "target_cents"})
    )
    result = role_targets(sellers, plan.bases)
    roles = plan.bases.set_index("rep_id")["role_type"]
    metrics = (
        result.groupby("rep_id")["metric"]
        .first()
        .map(
            {
                "new_business_revenue": "hunter",
                "pipeline_created": "hunter",
                "revenue_growth": "grower",
                "key_account_revenue": "key_account_manager",
            }
        )
    )
    assert metrics.to_dict() == roles[metrics.index].to_dict()
    growth = result[
        (result["metric"] == "revenue_growth") & (result["period"] == "2026")
    ]
    grower = growth.iloc[0]
    year_target = sellers.loc[
        sellers["rep_id"] == grower["rep_id"], "target_cents"
    ].sum()
    book = plan.bases.set_index("rep_id").loc[grower["rep_id"], "revenue_12m"]
    assert grower["value"] == pytest.approx(year_target / 100 - round(book * 100) / 100)
