"""KPI registry on small hand-built marts; every expected number is worked out by hand.

The mart below has three sellers and a manager, two products, seven invoice
lines over 2024 and 2025, a revenue target hierarchy, 48 opportunities over
two CRM snapshots and six activities. Comments next to the tests show the
arithmetic.
"""

from __future__ import annotations

import math
from datetime import date, datetime

import pandas as pd
import pytest

from cockpit.errors import KpiError
from cockpit.kpi import (
    GRAINS,
    KPIS,
    MIN_STAGE_DEALS,
    UNITS,
    compute_kpi,
    format_value,
    kpi_values,
    stage_probabilities,
)
from cockpit.mart import connect, load_frame
from cockpit.scope import Scope

Q1_2025 = {"start": date(2025, 1, 1), "end": date(2025, 3, 31)}
YEAR_2025 = {"start": date(2025, 1, 1), "end": date(2025, 12, 31)}
SNAPSHOT_1 = date(2025, 1, 31)
SNAPSHOT_2 = date(2025, 3, 31)


def _load(con, table: str, rows: list[dict]) -> None:
    report = load_frame(
        con, table, pd.DataFrame(rows), source="test", source_file="test"
    )
    assert report.rows_quarantined == 0, f"{table} rows quarantined"


def _reps() -> list[dict]:
    return [
        {
            "rep_id": "r1",
            "name": "Ann",
            "role": "seller",
            "team": "North",
            "manager_id": "m1",
            "region": "East",
            "active_from": "2020-01-01",
        },
        {
            "rep_id": "r2",
            "name": "Bob",
            "role": "seller",
            "team": "North",
            "manager_id": "m1",
            "region": "East",
            "active_from": "2020-01-01",
            "active_to": "2025-06-30",
        },
        {
            "rep_id": "r3",
            "name": "Cid",
            "role": "seller",
            "team": "South",
            "region": "West",
            "active_from": "2025-02-01",
        },
        {
            "rep_id": "m1",
            "name": "Mia",
            "role": "manager",
            "team": "North",
            "region": "East",
        },
    ]


def _transactions() -> list[dict]:
    rows = [
        # invoice, date, account, product, rep, region, unit, revenue, cost
        ("I1", "2024-01-15", "a1", "p1", "r1", "East", "Hardware", 100, 60),
        ("I2", "2024-03-10", "a2", "p2", "r3", "West", "Services", 50, 20),
        ("I3", "2025-01-20", "a1", "p1", "r1", "East", "Hardware", 150, 90),
        ("I4", "2025-01-20", "a1", "p2", "r2", "East", "Services", 40, 10),
        ("I5", "2025-02-05", "a2", "p1", "r3", "West", "Hardware", 200, 150),
        ("I6", "2025-03-31", "a2", "p2", "r3", "West", "Services", 30, 10),
        ("I7", "2025-03-31", "a2", "p2", "r3", "West", "Services", -30, -10),
    ]
    return [
        {
            "invoice_id": invoice,
            "line": 1,
            "date": day,
            "account_id": account,
            "product_id": product,
            "rep_id": rep,
            "region": region,
            "business_unit": unit,
            "quantity": 1,
            "net_revenue": revenue,
            "cost": cost,
            "currency": "EUR",
        }
        for invoice, day, account, product, rep, region, unit, revenue, cost in rows
    ]


def _targets() -> list[dict]:
    year = ("2025", "2025-01-01", "2025-12-31")
    q1 = ("2025-Q1", "2025-01-01", "2025-03-31")
    rows = [
        # period, level, key, region, metric, value, version
        (year, "company", "ACME", None, "revenue", 2000, 1),
        (year, "company", "ACME", None, "revenue", 2400, 2),
        (year, "region", "East", "East", "revenue", 1000, 1),
        (year, "region", "West", "West", "revenue", 1400, 1),
        (year, "rep", "r1", "East", "revenue", 500, 1),
        (q1, "rep", "r1", "East", "revenue", 120, 1),
        (q1, "rep", "r2", "East", "revenue", 80, 1),
        (q1, "rep", "r3", "West", "revenue", 300, 1),
        (q1, "rep", "r3", "West", "won_value", 9999, 1),
    ]
    return [
        {
            "period": period,
            "period_start": first,
            "period_end": last,
            "level": level,
            "key": key,
            "region": region,
            "metric": metric,
            "value": value,
            "method": "manual",
            "version": version,
            "set_by": "test",
            "created_at": datetime(2024, 12, 1),
        }
        for (period, first, last), level, key, region, metric, value, version in rows
    ]


def _deal(opportunity: str, snapshot: date, stage: str, status: str, **values) -> dict:
    row = {
        "opportunity_id": opportunity,
        "snapshot_date": snapshot,
        "stage": stage,
        "status": status,
        "amount": 100.0,
        "currency": "EUR",
    }
    row.update(values)
    return row


def _opportunities() -> list[dict]:
    """40 Proposal deals in the East (30 won), 5 Qualify deals in the West (2 won), 3 open."""
    rows = []
    east = {"rep_id": "r1", "region": "East", "account_id": "a1", "product_id": "p1"}
    west = {"rep_id": "r3", "region": "West", "account_id": "a2", "product_id": "p2"}
    for i in range(40):
        opportunity = f"D{i:02d}"
        dates = {"created_date": "2025-01-05"}
        rows.append(_deal(opportunity, SNAPSHOT_1, "Proposal", "open", **east, **dates))
        status = "won" if i < 30 else "lost"
        rows.append(
            _deal(
                opportunity,
                SNAPSHOT_2,
                status.title(),
                status,
                closed_date="2025-02-15",
                **east,
                **dates,
            )
        )
    for i in range(5):
        opportunity = f"E{i}"
        dates = {"created_date": "2025-01-10"}
        rows.append(_deal(opportunity, SNAPSHOT_1, "Qualify", "open", **west, **dates))
        status = "won" if i < 2 else "lost"
        rows.append(
            _deal(
                opportunity,
                SNAPSHOT_2,
                status.title(),
                status,
                amount=250.0,
                closed_date="2025-03-05",
                **west,
                **dates,
            )
        )
    rows.append(_deal("O1", SNAPSHOT_1, "Qualify", "open", amount=1000.0, **east))
    rows.append(_deal("O1", SNAPSHOT_2, "Proposal", "open", amount=1000.0, **east))
    rows.append(
        _deal(
            "O2",
            SNAPSHOT_2,
            "Qualify",
            "open",
            amount=500.0,
            expected_close_date="2025-05-10",
            **west,
        )
    )
    rows.append(_deal("O3", SNAPSHOT_2, "Qualify", "open", amount=None, **west))
    return rows


def _activities() -> list[dict]:
    rows = [
        ("A1", "r1", "a1", "visit", "2025-01-10", 60, "East"),
        ("A2", "r1", None, "internal", "2025-01-11", 30, "East"),
        ("A3", "r2", "a1", "call", "2025-02-01", 15, "East"),
        ("A4", "r3", "a2", "visit", "2025-02-03", 45, "West"),
        ("A5", "m1", None, "internal", "2025-02-04", 60, "East"),
        ("A6", "r2", "a1", "call", "2025-08-01", 20, "East"),
    ]
    return [
        {
            "activity_id": activity,
            "rep_id": rep,
            "account_id": account,
            "type": kind,
            "date": day,
            "duration_minutes": minutes,
            "region": region,
        }
        for activity, rep, account, kind, day, minutes, region in rows
    ]


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    path = tmp_path_factory.mktemp("kpi") / "mart.duckdb"
    with connect(path) as writer:
        _load(writer, "reps", _reps())
        _load(
            writer,
            "products",
            [
                {
                    "product_id": "p1",
                    "name": "Widget",
                    "product_line": "Tools",
                    "business_unit": "Hardware",
                },
                {
                    "product_id": "p2",
                    "name": "Service plan",
                    "product_line": "Plans",
                    "business_unit": "Services",
                },
            ],
        )
        _load(
            writer,
            "accounts",
            [
                {"account_id": "a1", "name": "Alpha", "region": "East"},
                {"account_id": "a2", "name": "Beta", "region": "West"},
            ],
        )
        _load(writer, "transactions", _transactions())
        _load(writer, "targets", _targets())
        _load(writer, "opportunities", _opportunities())
        _load(writer, "activities", _activities())
    reader = connect(path, read_only=True)
    yield reader
    reader.close()


def _value(frame: pd.DataFrame, name: str, **keys) -> float:
    rows = frame
    for column, value in keys.items():
        rows = rows[rows[column] == value]
    assert len(rows) == 1, f"expected one row for {keys}, got {len(rows)}"
    return float(rows[name].iloc[0])


def _single(con, name: str, **kwargs) -> float:
    frame = compute_kpi(con, name, **kwargs)
    assert list(frame.columns) == [name]
    return float(frame[name].iloc[0])


# --- registry ----------------------------------------------------------------


def test_registry_units_valid():
    for kpi in KPIS.values():
        assert kpi.unit in UNITS, kpi.name


def test_registry_required_kpis():
    required = {
        "revenue", "cost", "margin", "margin_pct", "revenue_last_year", "growth_pct",
        "target", "attainment_pct", "won_value", "won_count", "lost_count", "win_rate",
        "avg_deal_size", "sales_cycle_days", "open_pipeline", "open_deals",
        "weighted_pipeline", "activities", "activities_per_seller", "customer_time_share",
    }  # fmt: skip
    assert required <= set(KPIS)


def test_registry_names_match_keys():
    for key, kpi in KPIS.items():
        assert kpi.name == key


def test_registry_descriptions_present():
    for kpi in KPIS.values():
        assert kpi.description.endswith("."), kpi.name


def test_every_kpi_computes(con):
    values = kpi_values(con, list(KPIS), **YEAR_2025)
    assert list(values) == list(KPIS)


# --- revenue, cost and margin --------------------------------------------------


def test_revenue_total(con):
    # 100 + 50 + 150 + 40 + 200 + 30 - 30
    assert _single(con, "revenue") == pytest.approx(540)


def test_revenue_by_region(con):
    frame = compute_kpi(con, "revenue", by=["region"])
    assert frame["region"].tolist() == ["East", "West"]
    assert _value(frame, "revenue", region="East") == pytest.approx(290)
    assert _value(frame, "revenue", region="West") == pytest.approx(250)


def test_revenue_columns_order(con):
    frame = compute_kpi(con, "revenue", by=["year", "region"])
    assert list(frame.columns) == ["year", "region", "revenue"]


def test_revenue_sorted_by_grains(con):
    frame = compute_kpi(con, "revenue", by=["year", "region"])
    keys = list(zip(frame["year"], frame["region"], strict=True))
    assert keys == [
        ("2024", "East"),
        ("2024", "West"),
        ("2025", "East"),
        ("2025", "West"),
    ]


def test_revenue_period_inclusive(con):
    # Only I3 and I4 are dated 2025-01-20.
    day = date(2025, 1, 20)
    assert _single(con, "revenue", start=day, end=day) == pytest.approx(190)


def test_revenue_period_open_start(con):
    # Everything up to 2024-12-31: I1 + I2.
    assert _single(con, "revenue", end=date(2024, 12, 31)) == pytest.approx(150)


def test_revenue_by_month_labels(con):
    frame = compute_kpi(con, "revenue", by=["month"], **Q1_2025)
    assert frame["month"].tolist() == ["2025-01", "2025-02", "2025-03"]
    assert _value(frame, "revenue", month="2025-01") == pytest.approx(190)


def test_revenue_by_quarter_label(con):
    frame = compute_kpi(con, "revenue", by=["quarter"])
    assert frame["quarter"].tolist() == ["2024-Q1", "2025-Q1"]
    assert _value(frame, "revenue", quarter="2025-Q1") == pytest.approx(390)


def test_revenue_by_team(con):
    frame = compute_kpi(con, "revenue", by=["team"])
    # North: r1 and r2 (100 + 150 + 40); South: r3.
    assert _value(frame, "revenue", team="North") == pytest.approx(290)
    assert _value(frame, "revenue", team="South") == pytest.approx(250)


def test_revenue_by_product_line(con):
    frame = compute_kpi(con, "revenue", by=["product_line"])
    assert _value(frame, "revenue", product_line="Tools") == pytest.approx(450)
    assert _value(frame, "revenue", product_line="Plans") == pytest.approx(90)


def test_revenue_scope_team(con):
    assert _single(con, "revenue", scope=Scope(team="South")) == pytest.approx(250)


def test_revenue_scope_region_and_unit(con):
    scope = Scope(region="East", business_unit="Services")
    assert _single(con, "revenue", scope=scope) == pytest.approx(40)


def test_revenue_scope_product_line(con):
    scope = Scope(product_line="Tools")
    assert _single(con, "revenue", scope=scope, **Q1_2025) == pytest.approx(350)


def test_revenue_empty_scope_zero(con):
    assert _single(con, "revenue", scope=Scope(region="Nowhere")) == 0


def test_margin_q1(con):
    # Revenue 390, cost 90 + 10 + 150 + 10 - 10 = 250.
    assert _single(con, "margin", **Q1_2025) == pytest.approx(140)


def test_margin_pct_q1(con):
    assert _single(con, "margin_pct", **Q1_2025) == pytest.approx(140 / 390)


def test_margin_pct_zero_revenue_undefined(con):
    # March 2025 has a sale of 30 and its credit note of -30.
    frame = compute_kpi(con, "margin_pct", by=["month"], **Q1_2025)
    assert math.isnan(_value(frame, "margin_pct", month="2025-03"))


def test_margin_pct_by_unit(con):
    frame = compute_kpi(con, "margin_pct", by=["business_unit"])
    # Hardware 450 revenue, 300 cost; Services 90 revenue, 30 cost.
    assert _value(frame, "margin_pct", business_unit="Hardware") == pytest.approx(
        150 / 450
    )
    assert _value(frame, "margin_pct", business_unit="Services") == pytest.approx(
        60 / 90
    )


def test_cost_missing_line_undefined(tmp_path):
    with connect(tmp_path / "mart.duckdb") as writer:
        rows = _transactions()[:2]
        rows[1]["cost"] = None
        _load(writer, "transactions", rows)
        assert math.isnan(_single(writer, "cost"))
        assert math.isnan(_single(writer, "margin"))
        assert _single(writer, "revenue") == pytest.approx(150)


# --- last year and growth ------------------------------------------------------


def test_revenue_last_year_q1(con):
    # Q1 2024: I1 + I2.
    assert _single(con, "revenue_last_year", **Q1_2025) == pytest.approx(150)


def test_growth_q1(con):
    assert _single(con, "growth_pct", **Q1_2025) == pytest.approx(390 / 150 - 1)


def test_last_year_before_data_undefined(con):
    # The mart starts in January 2024, so Q1 2023 is not in it.
    frame = compute_kpi(
        con, "revenue_last_year", start=date(2024, 1, 1), end=date(2024, 3, 31)
    )
    assert math.isnan(frame["revenue_last_year"].iloc[0])


def test_last_year_open_period_undefined(con):
    assert math.isnan(_single(con, "revenue_last_year"))


def test_growth_by_year(con):
    frame = compute_kpi(con, "growth_pct", by=["year"])
    assert frame["year"].tolist() == ["2024", "2025"]
    assert math.isnan(_value(frame, "growth_pct", year="2024"))
    assert _value(frame, "growth_pct", year="2025") == pytest.approx(390 / 150 - 1)


def test_revenue_last_year_by_month(con):
    frame = compute_kpi(con, "revenue_last_year", by=["month"], **Q1_2025)
    # January 2024: I1; March 2024: I2; nothing in February 2024.
    assert frame["month"].tolist() == ["2025-01", "2025-03"]
    assert _value(frame, "revenue_last_year", month="2025-01") == pytest.approx(100)
    assert _value(frame, "revenue_last_year", month="2025-03") == pytest.approx(50)


def test_growth_by_month(con):
    frame = compute_kpi(con, "growth_pct", by=["month"], **Q1_2025)
    assert _value(frame, "growth_pct", month="2025-01") == pytest.approx(190 / 100 - 1)
    # February 2024 had no sales: growth from zero is undefined.
    assert math.isnan(_value(frame, "growth_pct", month="2025-02"))
    assert _value(frame, "growth_pct", month="2025-03") == pytest.approx(0 / 50 - 1)


def test_growth_by_region(con):
    frame = compute_kpi(con, "growth_pct", by=["region"], **Q1_2025)
    # East: 190 against 100; West: 200 against 50.
    assert _value(frame, "growth_pct", region="East") == pytest.approx(0.9)
    assert _value(frame, "growth_pct", region="West") == pytest.approx(3.0)


def test_growth_negative_base_undefined(tmp_path):
    # Q1 2024 nets to -100 (a sale of 100 and a credit of -200): no base to grow from.
    rows = _transactions()[:3]
    rows[1]["net_revenue"] = -200
    with connect(tmp_path / "mart.duckdb") as writer:
        _load(writer, "transactions", rows)
        assert _single(writer, "revenue_last_year", **Q1_2025) == pytest.approx(-100)
        assert math.isnan(_single(writer, "growth_pct", **Q1_2025))


# --- targets -------------------------------------------------------------------


def test_target_company_latest_version(con):
    assert _single(con, "target", **YEAR_2025) == pytest.approx(2400)


def test_target_by_region(con):
    frame = compute_kpi(con, "target", by=["region"], **YEAR_2025)
    assert _value(frame, "target", region="East") == pytest.approx(1000)
    assert _value(frame, "target", region="West") == pytest.approx(1400)


def test_target_scope_region(con):
    assert _single(
        con, "target", scope=Scope(region="West"), **YEAR_2025
    ) == pytest.approx(1400)


def test_target_rep_year_hides_quarter(con):
    # r1 has a year target of 500 and a Q1 target of 120 inside it.
    assert _single(
        con, "target", scope=Scope(rep_id="r1"), **YEAR_2025
    ) == pytest.approx(500)


def test_target_team_from_reps(con):
    # No team rows: r1's year target 500 plus r2's Q1 target 80.
    assert _single(
        con, "target", scope=Scope(team="North"), **YEAR_2025
    ) == pytest.approx(580)


def test_target_q1_from_rep_rows(con):
    # Year rows lie outside Q1; the rep rows add up to 120 + 80 + 300.
    assert _single(con, "target", **Q1_2025) == pytest.approx(500)


def test_target_by_quarter(con):
    frame = compute_kpi(con, "target", by=["quarter"], **YEAR_2025)
    assert frame["quarter"].tolist() == ["2025-Q1"]
    assert _value(frame, "target", quarter="2025-Q1") == pytest.approx(500)


def test_target_by_rep(con):
    frame = compute_kpi(con, "target", by=["rep_id"], **Q1_2025)
    assert _value(frame, "target", rep_id="r1") == pytest.approx(120)
    assert _value(frame, "target", rep_id="r3") == pytest.approx(300)


def test_target_unit_scope_undefined(con):
    frame = compute_kpi(
        con, "target", scope=Scope(business_unit="Hardware"), **YEAR_2025
    )
    assert math.isnan(frame["target"].iloc[0])


def test_target_account_scope_undefined(con):
    frame = compute_kpi(con, "target", scope=Scope(account_id="a1"), **YEAR_2025)
    assert math.isnan(frame["target"].iloc[0])


def test_attainment_q1(con):
    assert _single(con, "attainment_pct", **Q1_2025) == pytest.approx(390 / 500)


def test_attainment_by_region(con):
    frame = compute_kpi(con, "attainment_pct", by=["region"], **Q1_2025)
    # East: 190 against 120 + 80; West: 200 against 300.
    assert _value(frame, "attainment_pct", region="East") == pytest.approx(190 / 200)
    assert _value(frame, "attainment_pct", region="West") == pytest.approx(200 / 300)


def test_attainment_without_target_undefined(con):
    assert math.isnan(
        _single(con, "attainment_pct", start=date(2024, 1, 1), end=date(2024, 12, 31))
    )


# --- closed deals --------------------------------------------------------------


def test_won_value(con):
    # 30 East deals of 100 and 2 West deals of 250.
    assert _single(con, "won_value") == pytest.approx(3500)


def test_won_and_lost_counts(con):
    assert _single(con, "won_count") == 32
    assert _single(con, "lost_count") == 13


def test_win_rate(con):
    assert _single(con, "win_rate") == pytest.approx(32 / 45)


def test_win_rate_by_region(con):
    frame = compute_kpi(con, "win_rate", by=["region"])
    assert _value(frame, "win_rate", region="East") == pytest.approx(30 / 40)
    assert _value(frame, "win_rate", region="West") == pytest.approx(2 / 5)


def test_win_rate_by_month(con):
    frame = compute_kpi(con, "win_rate", by=["month"])
    # East deals closed on 2025-02-15, West deals on 2025-03-05.
    assert frame["month"].tolist() == ["2025-02", "2025-03"]
    assert _value(frame, "win_rate", month="2025-03") == pytest.approx(2 / 5)


def test_win_rate_none_closed_undefined(con):
    assert math.isnan(
        _single(con, "win_rate", start=date(2024, 1, 1), end=date(2024, 12, 31))
    )


def test_won_value_none_closed_zero(con):
    assert (
        _single(con, "won_value", start=date(2024, 1, 1), end=date(2024, 12, 31)) == 0
    )


def test_avg_deal_size(con):
    assert _single(con, "avg_deal_size") == pytest.approx(3500 / 32)


def test_sales_cycle_days(con):
    # East: 2025-01-05 to 2025-02-15 is 41 days; West: 2025-01-10 to 2025-03-05 is 54.
    assert _single(con, "sales_cycle_days") == pytest.approx((30 * 41 + 2 * 54) / 32)


def test_closed_deals_as_of_first_snapshot(con):
    # At the first snapshot no deal had closed yet.
    assert _single(con, "won_count", as_of=SNAPSHOT_1) == 0
    assert math.isnan(_single(con, "win_rate", as_of=SNAPSHOT_1))


# --- pipeline ------------------------------------------------------------------


def test_open_pipeline_latest(con):
    # O1 1000, O2 500, O3 without amount.
    assert _single(con, "open_pipeline") == pytest.approx(1500)


def test_open_deals_latest(con):
    assert _single(con, "open_deals") == 3


def test_open_pipeline_as_of_between(con):
    # 2025-02-10 picks the first snapshot: 45 deals of 100 and O1 at 1000.
    assert _single(con, "open_pipeline", as_of=date(2025, 2, 10)) == pytest.approx(5500)
    assert _single(con, "open_deals", as_of=date(2025, 2, 10)) == 46


def test_open_pipeline_before_snapshots_undefined(con):
    assert math.isnan(_single(con, "open_pipeline", as_of=date(2024, 12, 31)))


def test_open_pipeline_ignores_period(con):
    assert _single(con, "open_pipeline", start=date(2030, 1, 1)) == pytest.approx(1500)


def test_pipeline_month_by_expected_close(con):
    frame = compute_kpi(con, "open_pipeline", by=["month"])
    # Only O2 has an expected close date; O1 and O3 land in the empty group.
    assert _value(frame, "open_pipeline", month="2025-05") == pytest.approx(500)
    assert frame["month"].isna().sum() == 1


def test_stage_probabilities_calibrated(con):
    probabilities = stage_probabilities(con).set_index("stage")
    assert probabilities.loc["Proposal", "deals"] == 40
    assert probabilities.loc["Proposal", "probability"] == pytest.approx(30 / 40)


def test_stage_probabilities_fallback(con):
    probabilities = stage_probabilities(con).set_index("stage")
    # Qualify saw 5 closed deals, fewer than 30: the overall rate 32 / 45 applies.
    assert probabilities.loc["Qualify", "deals"] == 5
    assert probabilities.loc["Qualify", "probability"] == pytest.approx(32 / 45)


def test_stage_probabilities_columns(con):
    assert list(stage_probabilities(con).columns) == ["stage", "probability", "deals"]


def test_stage_probabilities_threshold(tmp_path):
    # Stage A saw exactly 30 closed deals (15 won), stage B saw 29 (none won).
    rows = []
    for stage, count, won in (
        ("A", MIN_STAGE_DEALS, 15),
        ("B", MIN_STAGE_DEALS - 1, 0),
    ):
        for i in range(count):
            status = "won" if i < won else "lost"
            rows.append(_deal(f"{stage}{i}", SNAPSHOT_1, stage, "open"))
            rows.append(_deal(f"{stage}{i}", SNAPSHOT_2, status.title(), status))
    with connect(tmp_path / "mart.duckdb") as writer:
        _load(writer, "opportunities", rows)
        probabilities = stage_probabilities(writer).set_index("stage")
    assert probabilities.loc["A", "probability"] == pytest.approx(15 / 30)
    assert probabilities.loc["B", "probability"] == pytest.approx(15 / 59)


def test_stage_probabilities_scope(con):
    probabilities = stage_probabilities(con, Scope(region="East")).set_index("stage")
    # East: 40 closed deals, 30 won; Qualify saw no closed East deal.
    assert probabilities.loc["Qualify", "probability"] == pytest.approx(30 / 40)


def test_stage_probabilities_no_history(con):
    probabilities = stage_probabilities(con, as_of=SNAPSHOT_1)
    assert probabilities["probability"].isna().all()


def test_weighted_pipeline(con):
    # O1 at Proposal 1000 x 0.75, O2 at Qualify 500 x 32/45, O3 adds nothing.
    assert _single(con, "weighted_pipeline") == pytest.approx(750 + 500 * 32 / 45)


def test_weighted_pipeline_by_region(con):
    frame = compute_kpi(con, "weighted_pipeline", by=["region"])
    assert _value(frame, "weighted_pipeline", region="East") == pytest.approx(750)
    assert _value(frame, "weighted_pipeline", region="West") == pytest.approx(
        500 * 32 / 45
    )


def test_weighted_pipeline_scope_calibration(con):
    # Within the East, every stage gets the East rate 0.75 or better data.
    assert _single(
        con, "weighted_pipeline", scope=Scope(region="East")
    ) == pytest.approx(750)


def test_weighted_pipeline_without_history_undefined(con):
    assert math.isnan(_single(con, "weighted_pipeline", as_of=date(2025, 2, 10)))


# --- activities ----------------------------------------------------------------


def test_activities_year(con):
    assert _single(con, "activities", **YEAR_2025) == 6


def test_activities_per_seller(con):
    # r1, r2 and r3 were active in 2025; the manager's activity still counts.
    assert _single(con, "activities_per_seller", **YEAR_2025) == pytest.approx(6 / 3)


def test_activities_per_seller_region(con):
    # East: A1, A2, A3, A5, A6 over sellers r1 and r2.
    scope = Scope(region="East")
    assert _single(
        con, "activities_per_seller", scope=scope, **YEAR_2025
    ) == pytest.approx(5 / 2)


def test_activities_per_seller_by_month(con):
    frame = compute_kpi(con, "activities_per_seller", by=["month"], **YEAR_2025)
    assert len(frame) == 12
    # January: r3 starts in February. August: r2 left at the end of June.
    assert _value(frame, "activities_per_seller", month="2025-01") == pytest.approx(
        2 / 2
    )
    assert _value(frame, "activities_per_seller", month="2025-02") == pytest.approx(
        3 / 3
    )
    assert _value(frame, "activities_per_seller", month="2025-08") == pytest.approx(
        1 / 2
    )
    assert _value(frame, "activities_per_seller", month="2025-05") == 0


def test_per_seller_without_sellers_undefined(con):
    scope = Scope(team="Nobody")
    assert math.isnan(_single(con, "activities_per_seller", scope=scope, **YEAR_2025))


def test_customer_time_share(con):
    # With an account: 60 + 15 + 45 + 20; all: 230 minutes.
    assert _single(con, "customer_time_share", **YEAR_2025) == pytest.approx(140 / 230)


def test_activities_unit_scope_undefined(con):
    frame = compute_kpi(con, "activities", scope=Scope(business_unit="Hardware"))
    assert math.isnan(frame["activities"].iloc[0])


def test_activities_unit_scope_grouped_empty(con):
    frame = compute_kpi(
        con, "activities", by=["rep_id"], scope=Scope(business_unit="Hardware")
    )
    assert list(frame.columns) == ["rep_id", "activities"]
    assert len(frame) == 0


# --- kpi_values ----------------------------------------------------------------


def test_kpi_values_numbers(con):
    values = kpi_values(con, ["revenue", "win_rate", "open_deals"], **Q1_2025)
    assert values["revenue"] == pytest.approx(390)
    assert values["win_rate"] == pytest.approx(32 / 45)
    assert values["open_deals"] == 3


def test_kpi_values_undefined_none(con):
    values = kpi_values(
        con, ["win_rate"], start=date(2024, 1, 1), end=date(2024, 12, 31)
    )
    assert values["win_rate"] is None


def test_kpi_values_unsupported_scope_none(con):
    values = kpi_values(
        con, ["activities", "revenue"], scope=Scope(business_unit="Hardware")
    )
    assert values["activities"] is None
    assert values["revenue"] == pytest.approx(450)


def test_kpi_values_unknown_name(con):
    with pytest.raises(KpiError, match="'turnover'"):
        kpi_values(con, ["turnover"])


# --- errors --------------------------------------------------------------------


def test_unknown_kpi_names_value(con):
    with pytest.raises(KpiError, match="'turnover'"):
        compute_kpi(con, "turnover")


def test_unknown_kpi_lists_valid(con):
    with pytest.raises(KpiError, match="win_rate"):
        compute_kpi(con, "turnover")


def test_unknown_grain_names_value(con):
    with pytest.raises(KpiError, match="'country'"):
        compute_kpi(con, "revenue", by=["country"])


def test_unknown_grain_lists_valid(con):
    with pytest.raises(KpiError) as error:
        compute_kpi(con, "revenue", by=["country"])
    for grain in GRAINS:
        assert grain in str(error.value)


def test_grain_unsupported_for_kpi(con):
    with pytest.raises(KpiError, match="product_id"):
        compute_kpi(con, "activities", by=["product_id"])


def test_grain_repeated(con):
    with pytest.raises(KpiError, match="twice"):
        compute_kpi(con, "revenue", by=["region", "region"])


def test_period_reversed(con):
    with pytest.raises(KpiError, match="after its end"):
        compute_kpi(con, "revenue", start=date(2025, 2, 1), end=date(2025, 1, 1))


# --- format_value --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (2297200.86, "currency", "EUR 2,297,201"),
        (-1234.6, "currency", "EUR -1,235"),
        (-0.4, "currency", "EUR 0"),
        (4238 / 6711, "percent", "63.2%"),
        (-0.0001, "percent", "0.0%"),
        (1.5, "percent", "150.0%"),
        (12345, "count", "12,345"),
        (2.5, "ratio", "2.50"),
        (41.8125, "days", "41.8 days"),
        (None, "currency", "n/a"),
        (float("nan"), "percent", "n/a"),
        (float("inf"), "ratio", "n/a"),
    ],
)
def test_format_value(value, unit, text):
    assert format_value(value, unit) == text


def test_format_value_currency_code():
    assert format_value(1000, "currency", currency="USD") == "USD 1,000"


def test_format_value_unknown_unit():
    with pytest.raises(KpiError, match="'euro'"):
        format_value(1.0, "euro")
