"""Seller behaviour: activity counts, time with customers, key-account contact.

Hand-built mart: tests/registry_mart.py (five activities in 2025). The
demo mart is checked against pandas on its own activities table.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from cockpit.behaviour import (
    SELLER_COLUMNS,
    key_accounts_without_contact,
    seller_activity,
    time_per_account,
)
from cockpit.errors import KpiError
from cockpit.mart import connect
from cockpit.scope import Scope
from tests.registry_mart import S3, build_registry_mart

H1 = (date(2025, 1, 1), date(2025, 6, 30))
H1_WEEKS = 181 / 7


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    path = build_registry_mart(tmp_path_factory.mktemp("behaviour") / "mart.duckdb")
    reader = connect(path, read_only=True)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def demo(small_demo_mart):
    reader = connect(small_demo_mart, read_only=True)
    yield reader
    reader.close()


def test_seller_activity_columns(con):
    assert list(seller_activity(con, None, *H1).columns) == SELLER_COLUMNS


def test_seller_activity_counts(con):
    row = seller_activity(con, None, *H1).set_index("rep_id").loc["r1"]
    # r1: a visit (60 min) and a call (15 min) with a1, an internal meeting (60).
    assert row["visits"] == 1
    assert row["calls"] == 1
    assert row["internal_meetings"] == 1
    assert row["customer_minutes"] == 75
    assert row["internal_minutes"] == 60


def test_seller_time_share(con):
    row = seller_activity(con, None, *H1).set_index("rep_id").loc["r1"]
    assert row["customer_time_share"] == pytest.approx(75 / 135)


def test_seller_minutes_per_account(con):
    row = seller_activity(con, None, *H1).set_index("rep_id").loc["r3"]
    assert row["minutes_per_account"] == 90


def test_seller_visits_per_week(con):
    row = seller_activity(con, None, *H1).set_index("rep_id").loc["r3"]
    assert row["visits_per_week"] == pytest.approx(1 / H1_WEEKS)


def test_seller_without_activity_zero(con):
    table = seller_activity(con, None, date(2025, 6, 1), date(2025, 6, 30))
    assert table["activities"].tolist() == [0, 0, 0]


def test_seller_share_undefined_without_minutes(con):
    table = seller_activity(con, None, date(2025, 6, 1), date(2025, 6, 30))
    assert table["customer_time_share"].isna().all()


def test_seller_scope_team(con):
    table = seller_activity(con, Scope(team="T2"), *H1)
    assert table["rep_id"].tolist() == ["r3"]


def test_seller_scope_unit_ignored(con):
    table = seller_activity(con, Scope(region="East", business_unit="Hardware"), *H1)
    assert table["rep_id"].tolist() == ["r1", "r2"]


def test_seller_period_reversed(con):
    with pytest.raises(KpiError, match="after its end"):
        seller_activity(con, None, H1[1], H1[0])


def test_time_per_account(con):
    table = time_per_account(con, None, *H1).set_index("account_id")
    assert table.loc["a3", "minutes"] == 90
    assert table.loc["a1", "activities"] == 2
    assert str(table.loc["a1", "last_contact"])[:10] == "2025-02-01"


def test_time_per_account_order(con):
    table = time_per_account(con, None, *H1)
    # a3 90, a1 75, a2 10 minutes.
    assert table["account_id"].tolist() == ["a3", "a1", "a2"]


def test_key_account_without_contact(con):
    table = key_accounts_without_contact(con, S3, days=30)
    # a1's last contact was on 1 February: 104 days before 16 May.
    assert table["account_id"].tolist() == ["a1"]
    assert table["days_since_contact"].tolist() == [104]


def test_key_account_recent_contact(con):
    table = key_accounts_without_contact(con, date(2025, 2, 15), days=30)
    assert table.empty


def test_key_account_never_contacted(con):
    table = key_accounts_without_contact(con, date(2025, 1, 5), days=30)
    assert table["never_contacted"].tolist() == [True]


def test_key_account_scope_region(con):
    table = key_accounts_without_contact(con, S3, Scope(region="West"), days=30)
    assert table.empty


def test_key_account_days_invalid(con):
    with pytest.raises(KpiError, match="days"):
        key_accounts_without_contact(con, S3, days=0)


# --- demo against pandas ------------------------------------------------------------


def test_demo_seller_activity_matches_pandas(demo):
    start, end = date(2026, 1, 1), date(2026, 9, 30)
    activities = demo.execute("SELECT * FROM activities").df()
    activities["date"] = pd.to_datetime(activities["date"])
    window = activities[
        (activities["date"] >= "2026-01-01") & (activities["date"] <= "2026-09-30")
    ]
    counts = window.groupby("rep_id")["type"].value_counts().unstack(fill_value=0)
    minutes = (
        window.assign(customer=window["account_id"].notna())
        .groupby(["rep_id", "customer"])["duration_minutes"]
        .sum()
        .unstack(fill_value=0.0)
    )
    table = seller_activity(demo, Scope(region="East"), start, end).set_index("rep_id")
    assert len(table) > 0
    for rep, row in table.iterrows():
        assert row["visits"] == counts.loc[rep, "visit"], rep
        assert row["calls"] == counts.loc[rep, "call"], rep
        share = minutes.loc[rep, True] / (
            minutes.loc[rep, True] + minutes.loc[rep, False]
        )
        assert row["customer_time_share"] == pytest.approx(share, rel=1e-12), rep


def test_demo_key_accounts_match_pandas(demo):
    as_of = date(2026, 9, 30)
    accounts = demo.execute("SELECT account_id FROM accounts WHERE is_key_account").df()
    activities = demo.execute(
        "SELECT account_id, date FROM activities WHERE account_id IS NOT NULL"
    ).df()
    activities["date"] = pd.to_datetime(activities["date"])
    last = (
        activities[activities["date"] <= pd.Timestamp(as_of)]
        .groupby("account_id")["date"]
        .max()
    )
    since = (pd.Timestamp(as_of) - last.reindex(accounts["account_id"])).dt.days
    expected = sorted(since[(since >= 30) | since.isna()].index)
    table = key_accounts_without_contact(demo, as_of, days=30)
    assert sorted(table["account_id"]) == expected
    assert len(expected) > 0
