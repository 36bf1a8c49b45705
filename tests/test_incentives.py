"""Incentive plans: hand-computed bonuses, plan checks, and the demo mart.

The hand plan below pays a target bonus of 10,000 with this curve.
Attainment below 50 % pays 0, and 50 %, 80 % and 100 % pay 25 %, 60 % and
100 % of it, linearly in between. From 100 % each unit of attainment adds
2 units of payout, and from 120 % 3 units. The payout share is capped at
180 %.
"""

from __future__ import annotations

import math
import shutil
from datetime import date

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cockpit.errors import IncentiveError, ParameterError
from cockpit.incentives import (
    COMPONENTS,
    DEFAULT_PLANS_FILE,
    BonusInputs,
    bonus_at,
    bonus_components,
    bonus_statement,
    get_plan,
    live_bonus,
    load_plans,
    parse_plans,
    render_statement,
    what_if,
)
from cockpit.scope import Scope

AS_OF = date(2026, 9, 30)
TARGET = 100_000.0


def _hand_plan(**changes) -> dict:
    plan = {
        "period_start": "2026-01-01",
        "period_end": "2026-12-31",
        "target_bonus": 10_000,
        "curve": {
            "threshold": 0.5,
            "payout_at_threshold": 0.25,
            "points": [{"attainment": 0.8, "payout": 0.6}],
            "accelerators": [{"from": 1.0, "rate": 2.0}, {"from": 1.2, "rate": 3.0}],
            "cap": 1.8,
        },
    }
    plan.update(changes)
    return plan


def _plan(**changes):
    return parse_plans({"plans": {"hand": _hand_plan(**changes)}})["hand"]


def _inputs(revenue: float, credited: float | None = None, team: float | None = None):
    return BonusInputs(
        revenue=revenue,
        credited_revenue=revenue if credited is None else credited,
        target=TARGET,
        team_revenue=revenue if team is None else team,
        team_target=TARGET,
    )


# --- hand-computed bonuses ---------------------------------------------------


def test_bonus_below_threshold():
    parts = bonus_components(_plan(), _inputs(40_000))
    assert parts["total"] == 0.0


def test_bonus_at_threshold():
    # 50 % pays 25 % of 10,000.
    assert bonus_components(_plan(), _inputs(50_000))["total"] == 2_500.0


def test_bonus_between_points():
    # 65 %: 0.25 + (0.65 - 0.5) / (0.8 - 0.5) x (0.6 - 0.25) = 0.425.
    assert bonus_components(_plan(), _inputs(65_000))["total"] == 4_250.0


def test_bonus_at_target():
    parts = bonus_components(_plan(), _inputs(100_000))
    assert parts["curve"] == 10_000.0
    assert parts["accelerator"] == 0.0
    assert parts["total"] == 10_000.0


def test_bonus_accelerator_first_segment():
    # 110 %: 1 + 2 x 0.1 = 1.2.
    parts = bonus_components(_plan(), _inputs(110_000))
    assert parts["curve"] == 10_000.0
    assert parts["accelerator"] == 2_000.0
    assert parts["total"] == 12_000.0


def test_bonus_accelerator_second_segment():
    # 130 %: 1 + 2 x 0.2 + 3 x 0.1 = 1.7.
    parts = bonus_components(_plan(), _inputs(130_000))
    assert parts["accelerator"] == 7_000.0
    assert parts["cap"] == 0.0
    assert parts["total"] == 17_000.0


def test_bonus_at_cap():
    # 150 %: uncapped 1 + 0.4 + 0.9 = 2.3, capped at 1.8.
    parts = bonus_components(_plan(), _inputs(150_000))
    assert parts["accelerator"] == 13_000.0
    assert parts["cap"] == -5_000.0
    assert parts["total"] == 18_000.0


def test_bonus_above_cap_flat():
    assert bonus_components(_plan(), _inputs(250_000))["total"] == 18_000.0


def test_bonus_team_pool():
    # 20 % pool: own 110 % pays 0.8 x 10,000 x 1.2 = 9,600; team 90 % pays
    # 0.2 x 10,000 x (0.6 + 0.5 x 0.4) = 1,600.
    plan = _plan(team_pool_share=0.2)
    parts = bonus_components(plan, _inputs(110_000, team=90_000))
    assert parts["curve"] == 8_000.0
    assert parts["accelerator"] == 1_600.0
    assert parts["team_pool"] == 1_600.0
    assert parts["total"] == 11_200.0


def test_bonus_product_accelerator():
    # 80,000 revenue of which 20,000 counts twice: credited 100,000. Plain
    # 80 % pays 6,000; credited 100 % pays 10,000.
    plan = _plan(
        product_accelerators=[
            {"name": "services", "business_units": ["Services"], "multiplier": 2.0}
        ]
    )
    parts = bonus_components(plan, _inputs(80_000, credited=100_000))
    assert parts["curve"] == 6_000.0
    assert parts["product_accelerator"] == 4_000.0
    assert parts["total"] == 10_000.0


def test_bonus_close_out_added():
    inputs = BonusInputs(100_000, 100_000, TARGET, 0, TARGET, 750.0, 3)
    parts = bonus_components(_plan(), inputs)
    assert parts["close_out"] == 750.0
    assert parts["total"] == 10_750.0


def test_bonus_undefined_without_target():
    inputs = BonusInputs(50_000, 50_000, math.nan, 50_000, TARGET)
    assert math.isnan(bonus_components(_plan(), inputs)["total"])


def test_close_out_windows_quarters():
    plan = _plan(close_out={"weeks": 2, "per": "quarter", "rate": 0.01})
    assert plan.close_out_windows() == [
        (date(2026, 3, 18), date(2026, 3, 31)),
        (date(2026, 6, 17), date(2026, 6, 30)),
        (date(2026, 9, 17), date(2026, 9, 30)),
        (date(2026, 12, 18), date(2026, 12, 31)),
    ]


def test_close_out_window_period():
    plan = _plan(close_out={"weeks": 1, "per": "period", "per_deal": 100})
    assert plan.close_out_windows() == [(date(2026, 12, 25), date(2026, 12, 31))]


def test_close_out_deal_bonus():
    plan = _plan(close_out={"weeks": 1, "rate": 0.02, "per_deal": 100})
    assert plan.close_out.deal_bonus(10_000) == 300.0


# --- monotonicity ------------------------------------------------------------


@st.composite
def plan_documents(draw) -> dict:
    """Draw any plan the checks accept."""
    threshold = draw(st.floats(0.0, 1.0))
    at_threshold = 1.0 if threshold == 1.0 else draw(st.floats(0.0, 1.0))
    xs = sorted(set(draw(st.lists(st.floats(0.0, 1.0), max_size=4))) - {threshold, 1.0})
    xs = [x for x in xs if threshold < x < 1.0]
    ys = sorted(
        draw(st.lists(st.floats(at_threshold, 1.0), min_size=len(xs), max_size=len(xs)))
    )
    starts = sorted(set(draw(st.lists(st.floats(1.0, 3.0), max_size=3))) - {1.0})
    rates = draw(
        st.lists(
            st.floats(0.0, 5.0), min_size=len(starts) + 1, max_size=len(starts) + 1
        )
    )
    cap = draw(st.one_of(st.none(), st.floats(1.0, 4.0)))
    return _hand_plan(
        target_bonus=draw(st.floats(0.0, 100_000.0)),
        team_pool_share=draw(st.floats(0.0, 1.0)),
        curve={
            "threshold": threshold,
            "payout_at_threshold": at_threshold,
            "points": [
                {"attainment": x, "payout": y} for x, y in zip(xs, ys, strict=True)
            ],
            "accelerators": [
                {"from": start, "rate": rate}
                for start, rate in zip([1.0, *starts], rates, strict=True)
            ],
            "cap": cap,
        },
    )


@settings(max_examples=300, deadline=None)
@given(
    document=plan_documents(),
    low=st.floats(0.0, 4.0),
    step=st.floats(0.0, 2.0),
)
def test_bonus_never_falls_with_attainment(document, low, step):
    plan = parse_plans({"plans": {"drawn": document}})["drawn"]
    high = low + step
    assert bonus_at(plan, high) >= bonus_at(plan, low) - 1e-9


@settings(max_examples=200, deadline=None)
@given(
    document=plan_documents(),
    low=st.floats(0.0, 400_000.0),
    step=st.floats(0.0, 200_000.0),
)
def test_total_never_falls_with_revenue(document, low, step):
    plan = parse_plans({"plans": {"drawn": document}})["drawn"]
    before = bonus_components(plan, _inputs(low))["total"]
    after = bonus_components(plan, _inputs(low + step))["total"]
    # Components are rounded to cents, so allow a cent per component.
    assert after >= before - 0.01 * len(COMPONENTS)


# --- plan checks -------------------------------------------------------------


def _problems(document: dict) -> str:
    with pytest.raises(ParameterError) as caught:
        parse_plans({"plans": {"bad": document}}, "plans.yaml")
    return str(caught.value)


def test_plan_threshold_above_one():
    curve = {**_hand_plan()["curve"], "threshold": 1.5}
    message = _problems(_hand_plan(curve=curve))
    assert "plans.yaml: plans.bad.curve.threshold: expected number <= 1" in message


def test_plan_missing_target_bonus():
    document = _hand_plan()
    del document["target_bonus"]
    message = _problems(document)
    assert "plans.bad: missing required key 'target_bonus'" in message


def test_plan_unknown_key():
    message = _problems(_hand_plan(bonus=5))
    assert "plans.bad.bonus: unknown key" in message


def test_plan_falling_points():
    curve = {
        **_hand_plan()["curve"],
        "points": [
            {"attainment": 0.7, "payout": 0.5},
            {"attainment": 0.9, "payout": 0.4},
        ],
    }
    message = _problems(_hand_plan(curve=curve))
    assert "plans.bad.curve.points[1].payout: expected at least 0.5" in message


def test_plan_point_below_threshold():
    curve = {**_hand_plan()["curve"], "points": [{"attainment": 0.4, "payout": 0.5}]}
    message = _problems(_hand_plan(curve=curve))
    assert "curve.points[0].attainment: expected a value above 0.5" in message


def test_plan_accelerator_start():
    curve = {**_hand_plan()["curve"], "accelerators": [{"from": 1.2, "rate": 2}]}
    message = _problems(_hand_plan(curve=curve))
    assert "curve.accelerators[0].from: expected 1.0" in message


def test_plan_cap_below_one():
    curve = {**_hand_plan()["curve"], "cap": 0.9}
    message = _problems(_hand_plan(curve=curve))
    assert "plans.bad.curve.cap: expected number or null >= 1" in message


def test_plan_end_before_start():
    message = _problems(_hand_plan(period_end="2025-12-31"))
    assert "plans.bad.period_end: expected a date on or after" in message


def test_plan_bad_date():
    message = _problems(_hand_plan(period_start="2026-13-01"))
    assert "plans.bad.period_start: expected a date as YYYY-MM-DD" in message


def test_plan_bad_close_out_per():
    message = _problems(_hand_plan(close_out={"weeks": 2, "per": "month", "rate": 1}))
    assert "plans.bad.close_out.per: expected one of quarter, period" in message


def test_plan_close_out_pays_nothing():
    message = _problems(_hand_plan(close_out={"weeks": 2}))
    assert "plans.bad.close_out: expected rate or per_deal above 0" in message


def test_plan_accelerator_without_names():
    accelerators = [{"name": "empty", "multiplier": 2}]
    message = _problems(_hand_plan(product_accelerators=accelerators))
    assert (
        "product_accelerators[0]: expected product_lines or business_units" in message
    )


def test_plan_file_named_in_error(tmp_path):
    path = tmp_path / "plans.yaml"
    path.write_text(
        "plans:\n  p:\n    period_start: 2026-01-01\n    period_end: 2026-12-31\n"
        "    target_bonus: -1\n    curve: {threshold: 0.5, payout_at_threshold: 0.2}\n",
        encoding="utf-8",
    )
    with pytest.raises(ParameterError) as caught:
        load_plans(path)
    assert f"{path}: plans.p.target_bonus: expected number >= 0" in str(caught.value)


def test_plan_file_missing(tmp_path):
    with pytest.raises(ParameterError, match="not found"):
        load_plans(tmp_path / "absent.yaml")


def test_default_plan_file_loads():
    plans = load_plans()
    assert DEFAULT_PLANS_FILE.is_file()
    assert "sellers_2026" in plans


def test_unknown_plan_name():
    with pytest.raises(IncentiveError, match="unknown incentive plan 'x'"):
        get_plan(load_plans(), "x")


# --- the demo mart -----------------------------------------------------------

LINEAR = {
    "period_start": "2026-01-01",
    "period_end": "2026-12-31",
    "target_bonus": 10_000,
    "curve": {"threshold": 0.0, "payout_at_threshold": 0.0, "cap": None},
    "team_pool_share": 0.2,
    "product_accelerators": [
        {
            "name": "contracts",
            "product_lines": ["Maintenance Contracts"],
            "multiplier": 2.0,
        }
    ],
    "close_out": {"weeks": 2, "per": "quarter", "rate": 0.01, "per_deal": 50},
}
SELLER = "REP-003"
TEAM = "North-1"


@pytest.fixture(scope="module")
def demo(small_demo_mart):
    con = duckdb.connect(str(small_demo_mart), read_only=True)
    yield con
    con.close()


@pytest.fixture(scope="module")
def linear_plan():
    return parse_plans({"plans": {"linear": LINEAR}})["linear"]


def _hand_actuals(con, rep_id: str) -> dict:
    """Measure the seller's inputs with plain SQL, independently of the module."""
    revenue = con.execute(
        "SELECT sum(net_revenue) FROM transactions "
        "WHERE rep_id = ? AND date BETWEEN '2026-01-01' AND '2026-09-30'",
        [rep_id],
    ).fetchone()[0]
    contracts = con.execute(
        "SELECT COALESCE(sum(t.net_revenue), 0) FROM transactions t "
        "JOIN products p USING (product_id) WHERE t.rep_id = ? "
        "AND p.product_line = 'Maintenance Contracts' "
        "AND t.date BETWEEN '2026-01-01' AND '2026-09-30'",
        [rep_id],
    ).fetchone()[0]
    target = con.execute(
        "SELECT sum(value) FROM targets WHERE level = 'rep' AND key = ? "
        "AND period = '2026' AND metric = 'revenue'",
        [rep_id],
    ).fetchone()[0]
    team_revenue = con.execute(
        "SELECT sum(net_revenue) FROM transactions WHERE date BETWEEN "
        "'2026-01-01' AND '2026-09-30' AND rep_id IN "
        "(SELECT rep_id FROM reps WHERE team = ?)",
        [TEAM],
    ).fetchone()[0]
    team_target = con.execute(
        "SELECT sum(value) FROM targets WHERE level = 'rep' AND period = '2026' "
        "AND key IN (SELECT rep_id FROM reps WHERE team = ?)",
        [TEAM],
    ).fetchone()[0]
    return {
        "revenue": revenue,
        "contracts": contracts,
        "target": target,
        "team_revenue": team_revenue,
        "team_target": team_target,
    }


def _close_out_by_hand(con, rep_id: str, as_of: date = AS_OF) -> tuple[int, float]:
    """Count the seller's deals won in the quarter-end windows of two weeks."""
    rows = con.execute(
        """
        SELECT amount FROM (
            SELECT * FROM opportunities WHERE snapshot_date <= ?
            QUALIFY snapshot_date = max(snapshot_date) OVER (PARTITION BY opportunity_id)
        )
        WHERE rep_id = ? AND status = 'won' AND closed_date <= ? AND (
            closed_date BETWEEN '2026-03-18' AND '2026-03-31'
            OR closed_date BETWEEN '2026-06-17' AND '2026-06-30'
            OR closed_date BETWEEN '2026-09-17' AND '2026-09-30')
        """,
        [as_of, rep_id, as_of],
    ).fetchall()
    amounts = [row[0] for row in rows]
    return len(amounts), sum(50 + 0.01 * amount for amount in amounts)


def test_live_bonus_by_hand(demo, linear_plan):
    hand = _hand_actuals(demo, SELLER)
    deals, close_out = _close_out_by_hand(demo, SELLER)
    row = live_bonus(demo, linear_plan, as_of=AS_OF, scope=Scope(rep_id=SELLER))
    row = row.iloc[0]
    credited = hand["revenue"] + hand["contracts"]
    # Linear curve: the payout share equals attainment below 100 %.
    own = 8_000 * hand["revenue"] / hand["target"]
    product = 8_000 * credited / hand["target"] - own
    team = 2_000 * hand["team_revenue"] / hand["team_target"]
    assert row["revenue"] == pytest.approx(hand["revenue"], abs=0.005)
    assert row["credited_revenue"] == pytest.approx(credited, abs=0.005)
    assert row["target"] == pytest.approx(hand["target"], abs=0.005)
    assert row["curve"] == pytest.approx(own, abs=0.006)
    assert row["product_accelerator"] == pytest.approx(product, abs=0.006)
    assert row["team_pool"] == pytest.approx(team, abs=0.006)
    assert row["close_out_deals"] == deals
    assert row["close_out"] == pytest.approx(close_out, abs=0.006)
    assert row["total"] == pytest.approx(own + product + team + close_out, abs=0.02)


def test_live_bonus_seller_count(demo, linear_plan):
    frame = live_bonus(demo, linear_plan, as_of=AS_OF)
    expected = demo.execute(
        "SELECT count(*) FROM reps WHERE role = 'seller' "
        "AND (active_to IS NULL OR active_to >= '2026-01-01')"
    ).fetchone()[0]
    assert len(frame) == expected


def test_live_bonus_has_close_out_deals(demo, linear_plan):
    # Guards the close-out test above against a mart without such deals.
    frame = live_bonus(demo, linear_plan, as_of=AS_OF)
    assert frame["close_out_deals"].sum() > 0


def test_live_bonus_unknown_line(demo):
    document = {
        **LINEAR,
        "product_accelerators": [
            {"name": "x", "product_lines": ["Hovercraft"], "multiplier": 2}
        ],
    }
    plan = parse_plans({"plans": {"p": document}}, "plans.yaml")["p"]
    with pytest.raises(ParameterError) as caught:
        live_bonus(demo, plan, as_of=AS_OF)
    assert "plans.p.product_accelerators[0].product_lines" in str(caught.value)


def test_live_bonus_scope_unit(demo, linear_plan):
    with pytest.raises(IncentiveError, match="business_unit"):
        live_bonus(demo, linear_plan, scope=Scope(business_unit="Services"))


def test_what_if_marginal_by_hand(demo, linear_plan):
    hand = _hand_actuals(demo, SELLER)
    scenario = what_if(demo, linear_plan, as_of=AS_OF, scope=Scope(rep_id=SELLER))
    assert len(scenario.deals) > 0
    deal = scenario.deals.iloc[0]
    # Below 100 % on both levels the linear plan pays amount / target per unit.
    close_out = (50 + 0.01 * deal["amount"]) if deal["close_out"] else 0.0
    expected = (
        8_000 * deal["amount"] * deal["multiplier"] / hand["target"]
        + 2_000 * deal["amount"] / hand["team_target"]
        + close_out
    )
    assert deal["marginal_bonus"] == pytest.approx(expected, abs=0.03)


def test_what_if_deals_from_snapshot(demo, linear_plan):
    scenario = what_if(demo, linear_plan, as_of=AS_OF, scope=Scope(rep_id=SELLER))
    expected = demo.execute(
        "SELECT opportunity_id FROM opportunities WHERE snapshot_date = '2026-09-25' "
        "AND status = 'open' AND rep_id = ? AND expected_close_date <= '2026-12-31' "
        "ORDER BY opportunity_id",
        [SELLER],
    ).fetchall()
    assert sorted(scenario.deals["opportunity_id"]) == [row[0] for row in expected]


def test_what_if_all_close(demo, linear_plan):
    scenario = what_if(demo, linear_plan, as_of=AS_OF, scope=Scope(rep_id=SELLER))
    seller = scenario.sellers.iloc[0]
    # The linear plan stays below 100 %, so the uplift is the sum of marginals.
    assert seller["uplift_if_all_close"] == pytest.approx(
        scenario.deals["marginal_bonus"].sum(), abs=0.05
    )
    assert seller["bonus_if_weighted"] <= seller["bonus_if_all_close"]


def test_what_if_after_period(demo, linear_plan):
    scenario = what_if(demo, linear_plan, as_of=date(2027, 1, 5))
    assert scenario.deals.empty


def test_statement_sums_to_total(demo):
    plan = get_plan(load_plans(), "sellers_2026")
    statement = bonus_statement(demo, plan, SELLER, as_of=AS_OF)
    parts = statement.components.set_index("component")["amount"]
    assert list(parts.index) == [*COMPONENTS, "total"]
    assert parts["total"] == pytest.approx(parts[list(COMPONENTS)].sum(), abs=1e-6)


def test_statement_matches_live(demo):
    plan = get_plan(load_plans(), "sellers_2026")
    statement = bonus_statement(demo, plan, SELLER, as_of=AS_OF)
    live = live_bonus(demo, plan, as_of=AS_OF, scope=Scope(rep_id=SELLER)).iloc[0]
    assert statement.total == live["total"]


def test_statement_text(demo):
    plan = get_plan(load_plans(), "sellers_2026")
    statement = bonus_statement(demo, plan, SELLER, as_of=AS_OF)
    text = render_statement(statement)
    assert statement.seller in text
    for row in statement.components.itertuples(index=False):
        assert f"EUR {row.amount:,.2f}" in text.replace("-EUR ", "EUR -")
    assert "If your" in text


def test_statement_ineligible_rep(demo):
    plan = get_plan(load_plans(), "sellers_2026")
    with pytest.raises(IncentiveError, match="does not cover rep 'REP-001'"):
        bonus_statement(demo, plan, "REP-001", as_of=AS_OF)


def test_live_bonus_no_target(small_demo_mart, tmp_path, linear_plan):
    path = tmp_path / "mart.duckdb"
    shutil.copy(small_demo_mart, path)
    con = duckdb.connect(str(path))
    con.execute("DELETE FROM targets WHERE key = ?", [SELLER])
    row = live_bonus(con, linear_plan, as_of=AS_OF, scope=Scope(rep_id=SELLER))
    con.close()
    assert math.isnan(row.iloc[0]["total"])
    assert "no positive revenue target" in row.iloc[0]["note"]


def test_close_out_as_of_mid_window(demo, linear_plan):
    # On 16 September the third-quarter window (17 to 30 September) is ahead.
    early = date(2026, 9, 16)
    row = live_bonus(demo, linear_plan, as_of=early, scope=Scope(rep_id=SELLER))
    deals, close_out = _close_out_by_hand(demo, SELLER, early)
    assert row.iloc[0]["close_out_deals"] == deals
    assert row.iloc[0]["close_out"] == pytest.approx(close_out, abs=0.006)
