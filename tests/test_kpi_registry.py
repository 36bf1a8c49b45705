"""Registry KPIs on a small hand-built mart: periods, customers, pipeline dynamics.

The mart has three sellers, four accounts, eight invoice lines over 2023 to
2025, revenue targets for 2025, activities and a CRM history of three
weekly snapshots (S1, S2, S3) plus deals closed before them. Comments next
to the tests show the arithmetic.
"""

from __future__ import annotations

import math
from datetime import date

import pandas as pd
import pytest

from cockpit.errors import KpiError
from cockpit.kpi import (
    KPIS,
    LEVELS,
    compare_kpi,
    compute_kpi,
    kpi_values,
    open_deal_table,
    stage_probabilities,
)
from cockpit.kpi_periods import PERIODS, resolve_period
from cockpit.mart import connect
from cockpit.potential import full_potential
from cockpit.scope import Scope
from tests.registry_mart import S3, build_registry_mart, deal_row, load_rows

KNOWN = {"start": date(2024, 1, 5), "end": date(2024, 12, 31)}
H1_2025 = {"start": date(2025, 1, 1), "end": date(2025, 6, 30)}


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    path = build_registry_mart(tmp_path_factory.mktemp("registry") / "mart.duckdb")
    reader = connect(path, read_only=True)
    yield reader
    reader.close()


def _by(frame: pd.DataFrame, key: str, name: str) -> dict:
    return dict(zip(frame[key], frame[name], strict=True))


# --- registry ----------------------------------------------------------------


def test_registry_grains_filled():
    for kpi in KPIS.values():
        assert kpi.grains, kpi.name


def test_registry_periods_known():
    for kpi in KPIS.values():
        assert set(kpi.periods) <= set(PERIODS), kpi.name


def test_registry_coverage_no_time_grain():
    assert "month" not in KPIS["pipeline_coverage"].grains


def test_registry_levels_are_grains():
    for grains in LEVELS.values():
        for grain in grains:
            assert grain in KPIS["revenue"].grains, grain


def test_every_new_kpi_computes(con):
    values = kpi_values(con, list(KPIS), period="ytd", as_of=S3)
    assert list(values) == list(KPIS)


# --- periods -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "start", "end"),
    [
        ("week", date(2025, 5, 12), date(2025, 5, 18)),
        ("month", date(2025, 5, 1), date(2025, 5, 31)),
        ("quarter", date(2025, 4, 1), date(2025, 6, 30)),
        ("year", date(2025, 1, 1), date(2025, 12, 31)),
        ("ytd", date(2025, 1, 1), date(2025, 5, 16)),
        ("r12m", date(2024, 5, 17), date(2025, 5, 16)),
    ],
)
def test_period_bounds(name, start, end):
    period = resolve_period(name, S3)
    assert (period.start, period.end) == (start, end)


def test_period_to_date_end():
    assert resolve_period("quarter", S3).to_date_end == S3


def test_period_days_left():
    # 17 May to 30 June.
    assert resolve_period("quarter", S3).days_left == 45


def test_period_last_year_leap_day():
    period = resolve_period("ytd", date(2024, 2, 29)).last_year()
    assert period.end == date(2023, 2, 28)


def test_period_labels():
    assert resolve_period("quarter", S3).label == "2025-Q2"


def test_period_unknown_name():
    with pytest.raises(KpiError, match="'fortnight'"):
        resolve_period("fortnight", S3)


def test_period_needs_as_of(con):
    with pytest.raises(KpiError, match="needs as_of"):
        compute_kpi(con, "revenue", period="ytd")


def test_period_with_start_rejected(con):
    with pytest.raises(KpiError, match="not both"):
        compute_kpi(con, "revenue", period="ytd", as_of=S3, start=date(2025, 1, 1))


def test_period_ytd_revenue(con):
    # 70 (a1, 1 Feb) + 60 (a4, 1 Mar); 10 on 30 June is after as_of.
    assert kpi_values(con, ["revenue"], period="ytd", as_of=S3)["revenue"] == 130


def test_period_quarter_to_date(con):
    # Q2 read on 16 May counts nothing yet: the 30 June line comes later.
    assert kpi_values(con, ["revenue"], period="quarter", as_of=S3)["revenue"] == 0


def test_period_r12m_revenue(con):
    # 17 May 2024 to 16 May 2025: 30 + 50 + 70 + 60.
    assert kpi_values(con, ["revenue"], period="r12m", as_of=S3)["revenue"] == 210


def test_period_year_target_whole(con):
    # The year target is read for the whole year even though flows stop at as_of.
    assert kpi_values(con, ["target"], period="year", as_of=S3)["target"] == 10000


def test_seller_alias_grain(con):
    frame = compute_kpi(con, "revenue", by=["seller"], period="ytd", as_of=S3)
    assert list(frame.columns) == ["rep_id", "revenue"]


def test_segment_grain(con):
    frame = compute_kpi(con, "revenue", by=["segment"], **H1_2025)
    # Corporate: a1 70 + a3 10; SMB: a4 60.
    assert _by(frame, "segment", "revenue") == {"Corporate": 80.0, "SMB": 60.0}


# --- targets to date and comparisons --------------------------------------------


def test_target_prorated_company(con):
    value = kpi_values(con, ["target_prorated"], period="ytd", as_of=S3)
    # 136 of the 365 days of the 2025 company target.
    assert value["target_prorated"] == pytest.approx(10000 * 136 / 365)


def test_target_prorated_month(con):
    value = kpi_values(con, ["target_prorated"], period="month", as_of=S3)
    # 1 to 16 May: 16 days.
    assert value["target_prorated"] == pytest.approx(10000 * 16 / 365)


def test_target_prorated_rep_quarter(con):
    value = kpi_values(
        con, ["target_prorated"], scope=Scope(rep_id="r1"), period="quarter", as_of=S3
    )
    # 1 April to 16 May is 46 of the 91 days of r1's Q2 target.
    assert value["target_prorated"] == pytest.approx(3000 * 46 / 91)


def test_attainment_to_date(con):
    value = kpi_values(con, ["attainment_to_date_pct"], period="ytd", as_of=S3)
    assert value["attainment_to_date_pct"] == pytest.approx(130 / (10000 * 136 / 365))


def test_compare_revenue_by_region(con):
    frame = compare_kpi(con, "revenue", by=["region"], period="ytd", as_of=S3)
    west = frame.set_index("region").loc["West"]
    # 2025 to 16 May: 60; 2024 to 16 May: 200 (a3 on 1 May 2024).
    assert west["value"] == 60
    assert west["last_year"] == 200
    assert west["change"] == -140
    assert west["change_pct"] == pytest.approx(-0.7)


def test_compare_target_to_date(con):
    frame = compare_kpi(con, "revenue", by=["region"], period="ytd", as_of=S3)
    east = frame.set_index("region").loc["East"]
    assert east["target"] == pytest.approx(6000 * 136 / 365)
    assert east["vs_target"] == pytest.approx(70 / (6000 * 136 / 365))


def test_compare_zero_base_undefined(con):
    frame = compare_kpi(con, "revenue", by=["region"], period="ytd", as_of=S3)
    # East sold nothing from January to 16 May 2024.
    assert math.isnan(frame.set_index("region").loc["East", "change_pct"])


def test_compare_no_target_metric(con):
    frame = compare_kpi(con, "win_rate", period="ytd", as_of=S3)
    assert math.isnan(frame["target"].iloc[0])


def test_compare_percent_change_points(con):
    frame = compare_kpi(con, "margin_pct", period="r12m", as_of=S3)
    # Every line has cost = revenue / 2, so margin is 50 % both years.
    assert frame["change"].iloc[0] == pytest.approx(0.0)
    assert math.isnan(frame["change_pct"].iloc[0])


def test_compare_month_labels_aligned(con):
    frame = compare_kpi(
        con, "revenue", by=["month"], start=date(2025, 5, 1), end=date(2025, 5, 31)
    )
    may = frame.set_index("month").loc["2025-05"]
    # May 2024: a3 200.
    assert may["last_year"] == 200


def test_compare_needs_start(con):
    with pytest.raises(KpiError, match="period start"):
        compare_kpi(con, "revenue")


# --- customers -------------------------------------------------------------------


def test_active_customers(con):
    # a1 (50), a2 (30) and a3 (200) bought in 2024 after 5 January.
    assert kpi_values(con, ["active_customers"], **KNOWN)["active_customers"] == 3


def test_new_customers(con):
    # a2 came back on 1 June 2024 after 486 days; a3 first bought on 1 May 2024.
    assert kpi_values(con, ["new_customers"], **KNOWN)["new_customers"] == 2


def test_lost_customers(con):
    # a2's purchase of 1 February 2023 lapsed on 1 February 2024.
    assert kpi_values(con, ["lost_customers"], **KNOWN)["lost_customers"] == 1


def test_customers_2025(con):
    values = kpi_values(
        con, ["active_customers", "new_customers", "lost_customers"], **H1_2025
    )
    # Active a1, a3, a4; new a4 (first positive line) and a3 (back after
    # 425 days); lost a3 (1 May 2025) and a2 (1 June 2025).
    assert values == {"active_customers": 3, "new_customers": 2, "lost_customers": 2}


def test_customers_by_region(con):
    frame = compute_kpi(con, "lost_customers", by=["region"], **H1_2025)
    assert _by(frame, "region", "lost_customers") == {"East": 1, "West": 1}


def test_new_customers_by_quarter(con):
    frame = compute_kpi(
        con,
        "new_customers",
        by=["quarter"],
        start=date(2024, 1, 5),
        end=date(2025, 6, 30),
    )
    # Quarters with only active or lost customers show 0 new.
    assert _by(frame, "quarter", "new_customers") == {
        "2024-Q1": 0,
        "2024-Q2": 2,
        "2024-Q3": 0,
        "2025-Q1": 1,
        "2025-Q2": 1,
    }


def test_new_customers_early_undefined(con):
    # The mart starts on 5 January 2023, so newness is unknown before 2024-01-05.
    value = kpi_values(
        con, ["new_customers"], start=date(2023, 6, 1), end=date(2023, 12, 31)
    )
    assert value["new_customers"] is None


def test_credit_only_account_inactive(con):
    value = kpi_values(
        con, ["active_customers"], start=date(2023, 1, 1), end=date(2023, 1, 9)
    )
    # a4's only line that week is a credit note of -20.
    assert value["active_customers"] == 0


# --- pipeline dynamics ---------------------------------------------------------------


def test_open_deals_at_s3(con):
    # D1, D2, D4 and D7 are open in the last snapshot.
    assert kpi_values(con, ["open_deals"], as_of=S3)["open_deals"] == 4


def test_weighted_pipeline_overall_rate(con):
    # Five closed deals (D3, H1, H3 won; D5, H2 lost): 3 / 5 for every stage.
    value = kpi_values(con, ["weighted_pipeline"], as_of=S3)["weighted_pipeline"]
    assert value == pytest.approx(2750 * 0.6)


def test_period_pipeline_year(con):
    value = kpi_values(con, ["period_pipeline"], period="year", as_of=S3)
    assert value["period_pipeline"] == 2750


def test_period_pipeline_quarter(con):
    # Only D2 (20 May) is expected by 30 June; D1 slipped to 1 July.
    value = kpi_values(con, ["period_pipeline"], period="quarter", as_of=S3)
    assert value["period_pipeline"] == 500


def test_pipeline_coverage_company(con):
    value = kpi_values(con, ["pipeline_coverage"], period="year", as_of=S3)
    assert value["pipeline_coverage"] == pytest.approx(2750 / (10000 - 130))


def test_pipeline_coverage_by_region(con):
    frame = compute_kpi(
        con, "pipeline_coverage", by=["region"], period="year", as_of=S3
    )
    got = _by(frame, "region", "pipeline_coverage")
    assert got["East"] == pytest.approx(1700 / (6000 - 70))
    assert got["West"] == pytest.approx(1050 / (4000 - 60))


def test_coverage_without_target_undefined(con):
    value = kpi_values(
        con, ["pipeline_coverage"], scope=Scope(team="T2"), period="year", as_of=S3
    )
    assert value["pipeline_coverage"] is None


def test_recent_win_rate(con):
    # Closed in the 365 days to S3: D3, H1 won; D5, H2 lost. H3 is older.
    assert kpi_values(con, ["recent_win_rate"], as_of=S3)["recent_win_rate"] == 0.5


def test_required_coverage(con):
    assert kpi_values(con, ["required_coverage"], as_of=S3)["required_coverage"] == 2.0


def test_pipeline_velocity(con):
    # 4 open x 0.5 x mean won 1500 / mean cycle (96 + 30) / 2 = 63 days.
    value = kpi_values(con, ["pipeline_velocity"], as_of=S3)["pipeline_velocity"]
    assert value == pytest.approx(4 * 0.5 * 1500 / 63)


def test_velocity_without_wins_undefined(con):
    # r2 has no deal won in the last 365 days.
    value = kpi_values(con, ["pipeline_velocity"], scope=Scope(rep_id="r2"), as_of=S3)
    assert value["pipeline_velocity"] is None


def test_slipped_deals(con):
    assert kpi_values(con, ["slipped_deals"], as_of=S3)["slipped_deals"] == 1


def test_close_date_slips(con):
    # D1: 1 June -> 15 June -> 1 July.
    assert kpi_values(con, ["close_date_slips"], as_of=S3)["close_date_slips"] == 2


def test_stale_deals(con):
    # D2 has not changed since its creation on 1 March: 76 days.
    assert kpi_values(con, ["stale_deals"], as_of=S3)["stale_deals"] == 1


def test_days_in_stage(con):
    # D1 7 (Proposal since S2), D2 76, D4 11 and D7 15 (since creation).
    value = kpi_values(con, ["days_in_stage"], as_of=S3)["days_in_stage"]
    assert value == pytest.approx((7 + 76 + 11 + 15) / 4)


def test_pipeline_created(con):
    values = kpi_values(
        con, ["pipeline_created", "deals_created"], period="ytd", as_of=S3
    )
    # D1 1200 + D2 500 + D3 2000 + D4 800 + D5 300 + D6 100 + D7 250 + H2 400.
    assert values == {"pipeline_created": 5550, "deals_created": 8}


def test_pipeline_created_by_month(con):
    frame = compute_kpi(con, "pipeline_created", by=["month"], period="ytd", as_of=S3)
    assert _by(frame, "month", "pipeline_created") == {
        "2025-01": 700.0,
        "2025-02": 2000.0,
        "2025-03": 500.0,
        "2025-04": 1300.0,
        "2025-05": 1050.0,
    }


def test_open_deal_table(con):
    deals = open_deal_table(con, as_of=S3).set_index("opportunity_id")
    assert sorted(deals.index) == ["D1", "D2", "D4", "D7"]
    assert deals.loc["D1", "weighted_amount"] == pytest.approx(1200 * 0.6)


def test_open_deal_table_slips(con):
    deals = open_deal_table(con, as_of=S3).set_index("opportunity_id")
    assert deals.loc["D1", "days_slipped"] == 30


# --- behaviour KPIs ------------------------------------------------------------------------


def test_visits_and_calls(con):
    values = kpi_values(con, ["visits", "calls", "visits_per_seller"], **H1_2025)
    assert values["visits"] == 2
    assert values["calls"] == 2
    assert values["visits_per_seller"] == pytest.approx(2 / 3)


# --- share of wallet -----------------------------------------------------------------------


def test_share_of_wallet_matches_potential(con):
    potential = full_potential(con, S3)
    expected = potential["spend"].clip(lower=0).sum() / potential["potential"].sum()
    value = kpi_values(con, ["share_of_wallet"], as_of=S3)["share_of_wallet"]
    assert value == pytest.approx(expected)


def test_share_of_wallet_by_region(con):
    potential = full_potential(con, S3)
    frame = compute_kpi(con, "share_of_wallet", by=["region"], as_of=S3)
    for region, rows in potential.groupby("region"):
        expected = rows["spend"].clip(lower=0).sum() / rows["potential"].sum()
        got = frame.set_index("region").loc[region, "share_of_wallet"]
        assert got == pytest.approx(expected), region


def test_share_of_wallet_unit_scope_undefined(con):
    value = kpi_values(
        con, ["share_of_wallet"], scope=Scope(business_unit="Hardware"), as_of=S3
    )
    assert value["share_of_wallet"] is None


# --- stage probabilities by segment ----------------------------------------------------------


@pytest.fixture(scope="module")
def segment_mart(tmp_path_factory):
    """40 Corporate deals (30 won) and 40 SMB deals (10 won) seen at Prospecting,
    5 Startup deals (5 won), and one open deal per segment."""
    path = tmp_path_factory.mktemp("segments") / "mart.duckdb"
    accounts, rows = [], []
    plan = [("Corporate", 40, 30), ("SMB", 40, 10), ("Startup", 5, 5)]
    for segment, deals, won in plan:
        account = f"acc-{segment}"
        accounts.append({"account_id": account, "name": segment, "segment": segment})
        for i in range(deals):
            deal = f"{segment}-{i}"
            status = "won" if i < won else "lost"
            common = {
                "account_id": account,
                "amount": 100.0,
                "created_date": "2025-01-01",
            }
            rows.append(
                deal_row(deal, date(2025, 1, 3), "Prospecting", "open", **common)
            )
            rows.append(
                deal_row(deal, date(2025, 1, 10), status.title(), status,
                      closed_date="2025-01-09", **common)
            )  # fmt: skip
        rows.append(
            deal_row(f"{segment}-open", date(2025, 1, 10), "Prospecting", "open",
                  account_id=account, amount=1000.0, created_date="2025-01-05")
        )  # fmt: skip
    with connect(path) as writer:
        load_rows(writer, "accounts", accounts)
        load_rows(writer, "opportunities", rows)
    reader = connect(path, read_only=True)
    yield reader
    reader.close()


def test_segment_probabilities(segment_mart):
    table = stage_probabilities(segment_mart, by="segment").set_index("segment")
    assert table.loc["Corporate", "probability"] == 0.75
    assert table.loc["SMB", "probability"] == 0.25


def test_segment_probability_fallback(segment_mart):
    table = stage_probabilities(segment_mart, by="segment").set_index("segment")
    # Startup has 5 closed deals, below 30: the stage rate (30 + 10 + 5) / 85.
    assert table.loc["Startup", "probability"] == pytest.approx(45 / 85)
    assert table.loc["Startup", "basis"] == "stage"


def test_segment_weighted_pipeline(segment_mart):
    value = kpi_values(segment_mart, ["weighted_pipeline"])["weighted_pipeline"]
    assert value == pytest.approx(1000 * (0.75 + 0.25 + 45 / 85))


def test_segment_by_unknown(segment_mart):
    with pytest.raises(KpiError, match="'industry'"):
        stage_probabilities(segment_mart, by="industry")


def test_deal_table_empty_mart(tmp_path):
    with connect(tmp_path / "empty.duckdb") as writer:
        deals = open_deal_table(writer)
    assert deals.empty
    assert "probability" in deals.columns
