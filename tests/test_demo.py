"""Tests of the built-in demo company on real DuckDB marts.

One scale-1 demo (about 150,000 invoice lines) is built per session; a
second build with the same seed and one with another seed check
repeatability. Expected figures are computed with SQL or pandas on the
mart, independently of the generator's internals.
"""

from __future__ import annotations

from datetime import date, timedelta
from itertools import pairwise

import duckdb
import numpy as np
import pandas as pd
import pytest

from cockpit import demo
from cockpit.errors import MartError, ParameterError
from cockpit.mart import TABLES, connect

SEED = 7
#: Tables whose contents must repeat exactly; the load log and quarantine
#: carry load ids and load times.
REPEATED_TABLES = [
    name for name in TABLES if name not in ("load_log", "quarantine", "mart_meta")
]


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory):
    """The scale-1 demo mart and the load reports of its build."""
    path = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    reports = demo.build_demo(path, scale=1.0, seed=SEED)
    return path, reports


@pytest.fixture(scope="session")
def con(demo_build):
    connection = connect(demo_build[0], read_only=True)
    yield connection
    connection.close()


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params=None):
    return con.execute(sql, params or []).fetchone()[0]


def table_contents(path, name: str) -> pd.DataFrame:
    """All rows of a table, sorted by every column so order does not matter."""
    with connect(path, read_only=True) as connection:
        columns = TABLES[name].column_names
        order = ", ".join(columns)
        return connection.execute(f"SELECT * FROM {name} ORDER BY {order}").df()


def cents_total(path) -> int:
    with connect(path, read_only=True) as connection:
        return scalar(
            connection,
            "SELECT sum(CAST(round(net_revenue * 100) AS BIGINT)) FROM transactions",
        )


def row_counts(path) -> dict[str, int]:
    with connect(path, read_only=True) as connection:
        return {
            name: scalar(connection, f"SELECT count(*) FROM {name}")
            for name in REPEATED_TABLES
        }


# ---------------------------------------------------------------------------
# Repeatability


def test_same_seed_same_revenue(demo_build, tmp_path):
    again = tmp_path / "again.duckdb"
    demo.build_demo(again, scale=1.0, seed=SEED)
    assert cents_total(again) == cents_total(demo_build[0])
    assert row_counts(again) == row_counts(demo_build[0])
    for name in REPEATED_TABLES:
        pd.testing.assert_frame_equal(
            table_contents(again, name),
            table_contents(demo_build[0], name),
            check_exact=True,
            obj=name,
        )


def test_other_seed_differs(demo_build, tmp_path):
    other = tmp_path / "other.duckdb"
    demo.build_demo(other, scale=1.0, seed=SEED + 1)
    assert cents_total(other) != cents_total(demo_build[0])
    accounts = table_contents(other, "accounts")
    assert not accounts.equals(table_contents(demo_build[0], "accounts"))


def test_rebuild_replaces_file(tmp_path):
    path = tmp_path / "small.duckdb"
    demo.build_demo(path, scale=0.1, seed=SEED + 1)
    (tmp_path / "small.duckdb.wal").write_bytes(b"stale log")
    demo.build_demo(path, scale=0.1, seed=SEED)
    with connect(path, read_only=True) as connection:
        lines = scalar(connection, "SELECT count(*) FROM transactions")
        accounts = scalar(connection, "SELECT count(*) FROM accounts")
    # Scale 0.1: lines are a tenth of 150,000, accounts 1,500 x sqrt(0.1).
    assert 13_000 <= lines <= 17_000
    assert accounts == round(1500 * 0.1**0.5)


def test_rebuild_refuses_other_file(tmp_path):
    path = tmp_path / "notes.duckdb"
    path.write_bytes(b"not a duckdb file")
    with pytest.raises(MartError, match="is not a DuckDB mart"):
        demo.build_demo(path, scale=0.1, seed=SEED)
    assert path.read_bytes() == b"not a duckdb file"


def test_split_months_keep_keys(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "CHUNK_LINES", 500)
    path = tmp_path / "blocks.duckdb"
    reports = demo.build_demo(path, scale=0.1, seed=SEED)
    labels = [r.source_file for r in reports if r.table == "transactions"]
    assert any("block-" in label for label in labels)
    assert sum(r.rows_quarantined for r in reports) == 0
    with connect(path, read_only=True) as connection:
        rows = scalar(connection, "SELECT count(*) FROM transactions")
        keys = scalar(
            connection, "SELECT count(DISTINCT (invoice_id, line)) FROM transactions"
        )
    assert keys == rows


@pytest.mark.parametrize("scale", [0, -1, 0.001, float("nan"), "big"])
def test_invalid_scale_raises(tmp_path, scale):
    with pytest.raises(ParameterError, match="scale"):
        demo.build_demo(tmp_path / "x.duckdb", scale=scale)


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_invalid_seed_raises(tmp_path, seed):
    with pytest.raises(ParameterError, match="seed"):
        demo.build_demo(tmp_path / "x.duckdb", seed=seed)


# ---------------------------------------------------------------------------
# Loads and metadata


def test_every_load_balanced(demo_build, con):
    reports = demo_build[1]
    assert all(report.balanced for report in reports)
    assert sum(report.rows_quarantined for report in reports) == 0
    assert scalar(con, "SELECT count(*) FROM load_log") == len(reports)
    unbalanced = scalar(
        con,
        "SELECT count(*) FROM load_log "
        "WHERE rows_read <> rows_loaded + rows_quarantined",
    )
    assert unbalanced == 0
    assert scalar(con, "SELECT count(*) FROM quarantine") == 0


def test_load_log_matches_tables(con):
    logged = dict(
        con.execute(
            "SELECT table_name, sum(rows_loaded) FROM load_log GROUP BY table_name"
        ).fetchall()
    )
    for name, rows in logged.items():
        assert scalar(con, f"SELECT count(*) FROM {name}") == rows, name


def test_meta_values(con):
    meta = dict(con.execute("SELECT key, value FROM mart_meta").fetchall())
    assert meta["company"] == "Demo company"
    assert meta["as_of"] == "2026-09-30"
    assert meta["currency"] == "EUR"
    assert meta["seed"] == str(SEED)
    assert float(meta["scale"]) == 1.0


# ---------------------------------------------------------------------------
# Company shape


def test_regions_and_units_present(con):
    pairs = set(
        con.execute(
            "SELECT DISTINCT region, business_unit FROM transactions"
        ).fetchall()
    )
    expected = {
        (region, unit)
        for region in ("North", "South", "East", "West")
        for unit in ("Equipment", "Consumables", "Services")
    }
    assert pairs == expected


def test_seller_count(con):
    sellers = scalar(con, "SELECT count(*) FROM reps WHERE role = 'seller'")
    assert 35 <= sellers <= 45


def test_teams_have_five_sellers(con):
    frame = con.execute(
        """
        SELECT s.team, count(*) AS sellers, any_value(m.role) AS manager_role,
               bool_and(s.region = m.region) AS same_region
        FROM reps s JOIN reps m ON s.manager_id = m.rep_id
        WHERE s.role = 'seller' AND s.active_to IS NULL
        GROUP BY s.team
        """
    ).df()
    assert len(frame) == 8
    assert (frame["sellers"] == 5).all()
    assert (frame["manager_role"] == "manager").all()
    assert frame["same_region"].all()


def test_leavers_have_successors(con):
    leavers = scalar(con, "SELECT count(*) FROM reps WHERE active_to IS NOT NULL")
    assert leavers == 2
    late_joiners = scalar(
        con, "SELECT count(*) FROM reps WHERE active_from > DATE '2023-01-01'"
    )
    assert late_joiners == leavers


def test_account_count(con):
    accounts = scalar(con, "SELECT count(*) FROM accounts")
    assert 1_300 <= accounts <= 1_700


def test_size_band_follows_employees(con):
    frame = con.execute("SELECT size_band, employees FROM accounts").df()
    expected = pd.cut(
        frame["employees"],
        [0, 49, 249, 999, np.inf],
        labels=["small", "medium", "large", "enterprise"],
    ).astype(str)
    assert (frame["size_band"] == expected).all()


def test_key_account_share(con):
    share = scalar(con, "SELECT avg(CAST(is_key_account AS DOUBLE)) FROM accounts")
    assert 0.04 <= share <= 0.06


def test_owner_in_account_region(con):
    mismatched = scalar(
        con,
        """
        SELECT count(*) FROM accounts a JOIN reps r ON a.owner_rep_id = r.rep_id
        WHERE r.region <> a.region OR r.role <> 'seller' OR r.active_to IS NOT NULL
        """,
    )
    assert mismatched == 0
    assert scalar(con, "SELECT count(*) FROM accounts WHERE owner_rep_id IS NULL") == 0


def test_parents_exist(con):
    parents = scalar(
        con,
        "SELECT count(DISTINCT parent_account_id) FROM accounts "
        "WHERE parent_account_id IS NOT NULL",
    )
    assert parents >= 5
    orphans = scalar(
        con,
        """
        SELECT count(*) FROM accounts c
        WHERE parent_account_id IS NOT NULL
          AND parent_account_id NOT IN (SELECT account_id FROM accounts)
        """,
    )
    assert orphans == 0


def test_product_catalog(con):
    frame = con.execute(
        "SELECT business_unit, count(DISTINCT product_line) lines, count(*) n "
        "FROM products GROUP BY business_unit"
    ).df()
    assert sorted(frame["business_unit"]) == ["Consumables", "Equipment", "Services"]
    assert frame["lines"].between(3, 4).all()
    assert 50 <= frame["n"].sum() <= 70


# ---------------------------------------------------------------------------
# Transactions


def test_line_count_near_target(con):
    lines = scalar(con, "SELECT count(*) FROM transactions")
    assert 140_000 <= lines <= 160_000


def test_first_and_last_date(con):
    first, last = con.execute(
        "SELECT min(date), max(date) FROM transactions"
    ).fetchone()
    assert (first.year, first.month) == (2023, 1)
    assert last <= demo.AS_OF
    assert last >= demo.AS_OF - timedelta(days=7)


def test_every_line_has_dimensions(con):
    missing = scalar(
        con,
        "SELECT count(*) FROM transactions "
        "WHERE region IS NULL OR business_unit IS NULL",
    )
    assert missing == 0


def test_dimensions_match_masters(con):
    wrong = scalar(
        con,
        """
        SELECT count(*) FROM transactions t
        JOIN accounts a USING (account_id) JOIN products p USING (product_id)
        WHERE t.region <> a.region OR t.business_unit <> p.business_unit
        """,
    )
    assert wrong == 0


def test_seasonality_december_over_august(con):
    monthly = con.execute(
        """
        SELECT year(date) AS y, month(date) AS m, sum(net_revenue) AS revenue
        FROM transactions GROUP BY ALL
        """
    ).df()
    december = monthly.loc[monthly["m"] == 12, "revenue"].mean()
    august = monthly.loc[monthly["m"] == 8, "revenue"].mean()
    assert december > 1.3 * august


def test_regions_grow_differently(con):
    growth = con.execute(
        """
        SELECT region,
               sum(net_revenue) FILTER (WHERE year(date) = 2025)
             / sum(net_revenue) FILTER (WHERE year(date) = 2023) AS ratio
        FROM transactions GROUP BY region
        """
    ).df()
    assert growth["ratio"].max() - growth["ratio"].min() > 0.05


def test_margin_band_per_unit(con):
    margin = dict(
        con.execute(
            "SELECT business_unit, 1 - sum(cost) / sum(net_revenue) "
            "FROM transactions GROUP BY business_unit"
        ).fetchall()
    )
    assert 0.50 <= margin["Services"] <= 0.75
    assert 0.25 <= margin["Equipment"] <= 0.45
    assert 0.12 <= margin["Consumables"] <= 0.32
    assert margin["Services"] > margin["Equipment"]
    assert margin["Equipment"] > margin["Consumables"]


def test_credit_note_share(con):
    negative, total, wrong_sign = con.execute(
        """
        SELECT count(*) FILTER (WHERE net_revenue < 0), count(*),
               count(*) FILTER (WHERE sign(net_revenue) <> sign(quantity))
        FROM transactions
        """
    ).fetchone()
    assert 0.005 <= negative / total <= 0.015
    assert wrong_sign == 0


def test_owner_books_most_lines(con):
    share = scalar(
        con,
        """
        SELECT avg(CAST(t.rep_id = a.owner_rep_id AS DOUBLE))
        FROM transactions t JOIN accounts a USING (account_id)
        WHERE t.date >= DATE '2025-01-01'
        """,
    )
    assert 0.85 <= share <= 0.97


def test_leaver_lines_before_leaving(con):
    late = scalar(
        con,
        """
        SELECT count(*) FROM transactions t JOIN reps r USING (rep_id)
        WHERE t.date > r.active_to OR t.date < r.active_from
        """,
    )
    assert late == 0


def test_single_currency(con):
    currencies = con.execute("SELECT DISTINCT currency FROM transactions").fetchall()
    assert currencies == [("EUR",)]
    rates = con.execute(
        "SELECT DISTINCT currency, rate_to_reporting FROM fx_rates"
    ).fetchall()
    assert rates == [("EUR", 1.0)]


# ---------------------------------------------------------------------------
# Opportunities


def test_opportunity_count(con):
    deals = scalar(con, "SELECT count(DISTINCT opportunity_id) FROM opportunities")
    assert 5_500 <= deals <= 6_500


def test_open_deals_in_latest_snapshot(con):
    latest = scalar(con, "SELECT max(snapshot_date) FROM opportunities")
    open_deals = con.execute(
        "SELECT snapshot_date FROM opportunities_current WHERE status = 'open'"
    ).df()
    assert len(open_deals) > 100
    assert (open_deals["snapshot_date"] == pd.Timestamp(latest)).all()


def test_snapshot_dates_weekly(con):
    dates = [
        row[0]
        for row in con.execute(
            "SELECT DISTINCT snapshot_date FROM opportunities "
            "WHERE status = 'open' ORDER BY 1"
        ).fetchall()
    ]
    assert len(dates) == 26
    gaps = {(later - earlier).days for earlier, later in pairwise(dates)}
    assert gaps == {7}
    assert dates[-1] <= demo.AS_OF
    assert dates[-1] > demo.AS_OF - timedelta(days=7)


def test_open_deal_once_per_snapshot(con):
    repeats = scalar(
        con,
        """
        SELECT count(*) FROM (
            SELECT opportunity_id, snapshot_date FROM opportunities
            GROUP BY ALL HAVING count(*) > 1)
        """,
    )
    assert repeats == 0


def test_closed_deals_stay_closed(con):
    frame = con.execute(
        """
        SELECT opportunity_id, snapshot_date, status, closed_date
        FROM opportunities ORDER BY opportunity_id, snapshot_date
        """
    ).df()
    closed = frame[frame["status"] != "open"]
    assert (closed["closed_date"] <= closed["snapshot_date"]).all()
    reopened = (
        frame.groupby("opportunity_id")["status"]
        .apply(lambda s: (s.ne("open").cummax() & s.eq("open")).any())
        .sum()
    )
    assert reopened == 0


def test_early_closes_appear_once(con):
    latest = scalar(con, "SELECT max(snapshot_date) FROM opportunities")
    window_start = latest - timedelta(weeks=25, days=6)
    frame = con.execute(
        """
        SELECT opportunity_id, count(*) AS rows, min(snapshot_date) AS first,
               any_value(closed_date) AS closed
        FROM opportunities WHERE closed_date < ? GROUP BY opportunity_id
        """,
        [window_start],
    ).df()
    assert len(frame) > 1_000
    assert (frame["rows"] == 1).all()
    assert (frame["first"] == frame["closed"]).all()


def test_closed_in_window_appear_weekly(con):
    latest = scalar(con, "SELECT max(snapshot_date) FROM opportunities")
    window_start = latest - timedelta(weeks=25, days=6)
    frame = con.execute(
        """
        SELECT opportunity_id, any_value(closed_date) AS closed, count(*) AS rows
        FROM opportunities WHERE status <> 'open' AND closed_date >= ?
        GROUP BY opportunity_id
        """,
        [window_start],
    ).df()
    assert len(frame) > 100
    # One row in the snapshot of the closing week and one in each later one.
    snapshots_since = (pd.Timestamp(latest) - frame["closed"]).dt.days // 7 + 1
    assert (frame["rows"] == snapshots_since).all()


def test_stages_advance(con):
    frame = con.execute(
        """
        SELECT opportunity_id, snapshot_date, stage FROM opportunities
        WHERE status = 'open' ORDER BY opportunity_id, snapshot_date
        """
    ).df()
    order = {"Prospecting": 0, "Qualification": 1, "Proposal": 2, "Negotiation": 3}
    frame["rank"] = frame["stage"].map(order)
    step = frame.groupby("opportunity_id")["rank"].diff()
    assert (step.dropna() >= 0).all()
    assert (step > 0).sum() > 100


def test_some_deals_slip_and_change(con):
    slipped, changed = con.execute(
        """
        SELECT count(*) FILTER (WHERE dates > 1), count(*) FILTER (WHERE amounts > 1)
        FROM (
            SELECT opportunity_id, count(DISTINCT expected_close_date) AS dates,
                   count(DISTINCT amount) AS amounts
            FROM opportunities GROUP BY opportunity_id)
        """
    ).fetchone()
    assert slipped > 50
    assert changed > 50


def test_win_rate_band(con):
    rate = scalar(
        con,
        """
        SELECT count(*) FILTER (WHERE status = 'won')
             / count(*) FILTER (WHERE status IN ('won', 'lost'))
        FROM opportunities_current
        """,
    )
    assert 0.30 <= rate <= 0.45


def test_win_rate_varies_by_seller(con):
    rates = con.execute(
        """
        SELECT rep_id, avg(CAST(status = 'won' AS DOUBLE)) AS rate
        FROM opportunities_current WHERE status <> 'open'
        GROUP BY rep_id HAVING count(*) >= 50
        """
    ).df()
    assert rates["rate"].max() - rates["rate"].min() > 0.15


# ---------------------------------------------------------------------------
# Activities, indicators, targets


def test_activities_per_seller_week(con):
    per_week = scalar(
        con,
        """
        SELECT avg(n) FROM (
            SELECT rep_id, date_trunc('week', date) AS week, count(*) AS n
            FROM activities GROUP BY ALL)
        """,
    )
    assert 8 <= per_week <= 25


def test_internal_meetings_without_account(con):
    frame = con.execute(
        "SELECT type, count(*) AS n, count(account_id) AS with_account "
        "FROM activities GROUP BY type"
    ).df()
    counts = frame.set_index("type")
    assert set(counts.index) == {"visit", "call", "email", "internal"}
    assert counts.loc["internal", "with_account"] == 0
    customer = counts.drop(index="internal")
    assert (customer["with_account"] == customer["n"]).all()


def test_top_sellers_more_customer_time(con):
    frame = con.execute(
        """
        WITH time AS (
            SELECT rep_id,
                   sum(duration_minutes) FILTER (WHERE type <> 'internal')
                 / sum(duration_minutes) AS customer_share
            FROM activities GROUP BY rep_id),
        wins AS (
            SELECT rep_id, avg(CAST(status = 'won' AS DOUBLE)) AS win_rate
            FROM opportunities_current WHERE status <> 'open' GROUP BY rep_id)
        SELECT customer_share, win_rate FROM time JOIN wins USING (rep_id)
        """
    ).df()
    assert frame["customer_share"].corr(frame["win_rate"]) > 0.2


def test_key_accounts_without_contact(con):
    silent = scalar(
        con,
        """
        SELECT count(*) FROM accounts a
        WHERE is_key_account AND NOT EXISTS (
            SELECT 1 FROM activities x
            WHERE x.account_id = a.account_id AND x.date > ?::DATE - 60)
        """,
        [demo.AS_OF],
    )
    assert silent >= 3


def test_indicator_range(con):
    first, last, regions, rows = con.execute(
        "SELECT min(date), max(date), count(DISTINCT region), count(*) FROM external"
    ).fetchone()
    assert first == date(2022, 1, 1)
    assert last == date(2027, 6, 1)
    assert regions == 4
    assert rows == 66 * 4 * 2


def test_indicator_tracks_revenue(con):
    revenue = con.execute(
        """
        SELECT region, date_trunc('month', date) AS month, sum(net_revenue) AS revenue
        FROM transactions GROUP BY ALL
        """
    ).df()
    production = con.execute(
        "SELECT region, date AS month, value FROM external "
        "WHERE indicator = 'industrial_production'"
    ).df()
    frame = revenue.merge(production, on=["region", "month"]).sort_values("month")
    grouped = frame.groupby("region")
    # Year-over-year change removes the seasonal pattern of revenue.
    frame["revenue_change"] = grouped["revenue"].pct_change(12)
    frame["production_change"] = grouped["value"].pct_change(12)
    assert frame["revenue_change"].corr(frame["production_change"]) > 0.3


def test_targets_are_last_year_plus_5(con):
    frame = con.execute(
        """
        WITH revenue AS (
            SELECT rep_id, sum(net_revenue) AS revenue
            FROM transactions WHERE year(date) = 2025 GROUP BY rep_id),
        target AS (
            SELECT key AS rep_id, sum(value) AS target, count(*) AS units
            FROM targets GROUP BY key)
        SELECT * FROM revenue FULL JOIN target USING (rep_id)
        """
    ).df()
    assert frame["target"].notna().all()
    assert frame["revenue"].notna().all()
    gap = (frame["target"] - 1.05 * frame["revenue"]).abs()
    assert (gap <= 0.01 * frame["units"] + 1e-6).all()


def test_target_rows_fields(con):
    frame = con.execute("SELECT * FROM targets").df()
    assert set(frame["level"]) == {"rep"}
    assert set(frame["metric"]) == {"revenue"}
    assert set(frame["method"]) == {"last_year_plus_growth"}
    assert set(frame["period"]) == {"2026"}
    assert set(frame["version"]) == {1}
    assert set(frame["set_by"]) == {"demo"}
    assert frame["basis"].str.contains("2025").all()
    assert frame["region"].notna().all()
    assert frame["business_unit"].notna().all()
