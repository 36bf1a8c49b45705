"""Tests of seller target allocation and of its rows for the targets table."""

from __future__ import annotations

from datetime import date, datetime

import pandas as pd
import pytest

from cockpit.errors import TargetError
from cockpit.ingest import ingest_source
from cockpit.mart import TABLES, connect, load_frame
from cockpit.scope import Scope
from cockpit.targets import TARGET_COLUMNS, seller_targets, target_rows

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
