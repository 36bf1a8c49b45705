"""Maven CRM loader: reference figures, names that differ, faulty exports."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from cockpit.errors import IngestError
from cockpit.ingest import ingest_source
from cockpit.mart import connect

REFERENCE_WON_VALUE = 10_005_534
REFERENCE_WON, REFERENCE_CLOSED = 4_238, 6_711


def _key(name: str) -> str:
    return re.sub(r"[\W_]+", "", name.lower())


@pytest.fixture(scope="module")
def folder(shared_data: Path) -> Path:
    return shared_data / "maven-crm"


@pytest.fixture(scope="module")
def pipeline(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "sales_pipeline.csv")


@pytest.fixture(scope="module")
def teams(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "sales_teams.csv")


@pytest.fixture(scope="module")
def products(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "products.csv")


@pytest.fixture(scope="module")
def mart(folder: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("maven") / "mart.duckdb"
    ingest_source("maven-crm", folder, path)
    return path


def _query(mart: Path, sql: str, params=None):
    with connect(mart, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def test_won_value_matches_pandas(mart, pipeline):
    won = _query(mart, "SELECT sum(amount) FROM opportunities WHERE status = 'won'")
    expected = pipeline.loc[pipeline["deal_stage"] == "Won", "close_value"].sum()
    assert won[0][0] == expected


def test_won_value_matches_reference(mart):
    won = _query(mart, "SELECT sum(amount) FROM opportunities WHERE status = 'won'")
    assert won[0][0] == REFERENCE_WON_VALUE


def test_win_rate_counts_match_pandas(mart, pipeline):
    won, closed = _query(
        mart,
        """
        SELECT count(*) FILTER (WHERE status = 'won'),
               count(*) FILTER (WHERE status IN ('won', 'lost'))
        FROM opportunities
        """,
    )[0]
    stages = pipeline["deal_stage"].value_counts()
    assert (won, closed) == (stages["Won"], stages["Won"] + stages["Lost"])


def test_win_rate_matches_reference(mart):
    won, closed = _query(
        mart,
        """
        SELECT count(*) FILTER (WHERE status = 'won'),
               count(*) FILTER (WHERE status IN ('won', 'lost'))
        FROM opportunities
        """,
    )[0]
    assert (won, closed) == (REFERENCE_WON, REFERENCE_CLOSED)
    assert round(100 * won / closed, 2) == 63.15


def test_every_opportunity_loaded(mart, pipeline):
    count = _query(mart, "SELECT count(*) FROM opportunities")[0][0]
    assert count == len(pipeline) == 8800


def test_nothing_quarantined(mart):
    assert _query(mart, "SELECT count(*) FROM quarantine")[0][0] == 0


def test_load_log_balanced(mart):
    rows = _query(
        mart,
        "SELECT table_name, rows_read, rows_loaded, rows_quarantined FROM load_log",
    )
    assert len(rows) == 5
    for table, read, loaded, quarantined in rows:
        assert read == loaded + quarantined, table


def test_open_deals_without_account(mart, pipeline):
    count = _query(
        mart,
        "SELECT count(*) FROM opportunities WHERE status = 'open' AND account_id IS NULL",
    )[0][0]
    open_deals = ~pipeline["deal_stage"].isin(["Won", "Lost"])
    expected = int((open_deals & pipeline["account"].isna()).sum())
    assert count == expected == 1425


def test_status_from_stage(mart):
    pairs = _query(
        mart, "SELECT DISTINCT stage, status FROM opportunities ORDER BY stage"
    )
    assert pairs == [
        ("Engaging", "open"),
        ("Lost", "lost"),
        ("Prospecting", "open"),
        ("Won", "won"),
    ]


def test_snapshot_is_latest_date(mart, pipeline):
    snapshots = _query(mart, "SELECT DISTINCT snapshot_date FROM opportunities")
    dates = pd.to_datetime(pd.concat([pipeline["engage_date"], pipeline["close_date"]]))
    assert snapshots == [(dates.max().date(),)]


def test_meta_as_of_snapshot(mart):
    meta = dict(_query(mart, "SELECT key, value FROM mart_meta"))
    assert meta["as_of"] == "2017-12-31"


def test_meta_company_and_currency(mart):
    meta = dict(_query(mart, "SELECT key, value FROM mart_meta"))
    assert (meta["company"], meta["currency"]) == ("MavenTech", "USD")


def test_product_id_keeps_pipeline_spelling(mart, pipeline):
    count = _query(
        mart, "SELECT count(*) FROM opportunities WHERE product_id = 'GTXPro'"
    )[0][0]
    assert count == int((pipeline["product"] == "GTXPro").sum()) == 1480


def test_gtxpro_resolves_to_series(mart):
    units = _query(
        mart,
        "SELECT DISTINCT business_unit FROM opportunities WHERE product_id = 'GTXPro'",
    )
    assert units == [("GTX",)]


def test_business_units_match_pandas(mart, pipeline, products):
    series = dict(zip(products["product"].map(_key), products["series"], strict=True))
    expected = pipeline["product"].map(_key).map(series).value_counts().to_dict()
    loaded = dict(
        _query(mart, "SELECT business_unit, count(*) FROM opportunities GROUP BY 1")
    )
    assert loaded == expected


def test_region_from_agent_office(mart, pipeline, teams):
    merged = pipeline.merge(teams, on="sales_agent", how="left")
    expected = merged["regional_office"].value_counts().to_dict()
    loaded = dict(_query(mart, "SELECT region, count(*) FROM opportunities GROUP BY 1"))
    assert loaded == expected


def test_open_amount_is_list_price(mart, pipeline, products):
    prices = dict(
        zip(products["product"].map(_key), products["sales_price"], strict=True)
    )
    open_deals = pipeline[~pipeline["deal_stage"].isin(["Won", "Lost"])]
    expected = open_deals["product"].map(_key).map(prices).sum()
    total = _query(mart, "SELECT sum(amount) FROM opportunities WHERE status = 'open'")[
        0
    ][0]
    assert total == expected


def test_open_amount_flagged_estimate(mart):
    flags = _query(
        mart,
        "SELECT status, bool_and(amount_is_estimate), bool_or(amount_is_estimate) "
        "FROM opportunities GROUP BY status ORDER BY status",
    )
    assert flags == [
        ("lost", False, False),
        ("open", True, True),
        ("won", False, False),
    ]


def test_dates_mapped(mart):
    row = _query(
        mart,
        """
        SELECT created_date, closed_date, account_id, rep_id FROM opportunities
        WHERE opportunity_id = '1C1I7A6R'
        """,
    )
    assert row == [(date(2016, 10, 20), date(2017, 3, 1), "Cancity", "Moses Frase")]


def test_sellers_loaded(mart, teams):
    count = _query(mart, "SELECT count(*) FROM reps WHERE role = 'seller'")[0][0]
    assert count == len(teams) == 35


def test_managers_loaded(mart, teams):
    rows = _query(
        mart, "SELECT rep_id, region FROM reps WHERE role = 'manager' ORDER BY rep_id"
    )
    expected = teams.groupby("manager")["regional_office"].agg(lambda s: s.mode()[0])
    assert rows == list(expected.items())


def test_seller_team_is_manager(mart):
    row = _query(
        mart,
        "SELECT team, manager_id, region FROM reps WHERE rep_id = 'Anna Snelling'",
    )
    assert row == [("Dustin Brinkmann", "Dustin Brinkmann", "Central")]


def test_accounts_mapped(mart, folder):
    raw = pd.read_csv(folder / "accounts.csv")
    loaded = _query(
        mart,
        """
        SELECT account_id, industry, country, employees, annual_revenue,
               parent_account_id
        FROM accounts ORDER BY account_id
        """,
    )
    raw = raw.sort_values("account")
    assert len(loaded) == len(raw) == 85
    for row, (_, source) in zip(loaded, raw.iterrows(), strict=True):
        parent = None if pd.isna(source["subsidiary_of"]) else source["subsidiary_of"]
        assert row[0] == source["account"]
        assert row[1] == source["sector"]
        assert row[2] == source["office_location"]
        assert row[3] == source["employees"]
        assert row[4] == pytest.approx(source["revenue"] * 1_000_000)
        assert row[5] == parent


def test_account_region_most_deals(mart, pipeline, teams):
    merged = pipeline.dropna(subset=["account"]).merge(teams, on="sales_agent")
    counts = merged.groupby(["account", "regional_office"]).size().reset_index(name="n")
    counts = counts.sort_values(
        ["account", "n", "regional_office"], ascending=[True, False, True]
    )
    expected = counts.drop_duplicates("account").set_index("account")
    loaded = dict(_query(mart, "SELECT account_id, region FROM accounts"))
    assert loaded == expected["regional_office"].to_dict()


def test_sector_typo_kept(mart):
    count = _query(mart, "SELECT count(*) FROM accounts WHERE industry = 'technolgy'")[
        0
    ][0]
    assert count == 12


# --- faulty exports written here --------------------------------------------


def _write(folder: Path, name: str, rows: list[str]) -> None:
    (folder / name).write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8"))


@pytest.fixture
def small_export(tmp_path: Path) -> Path:
    folder = tmp_path / "crm"
    folder.mkdir()
    _write(
        folder,
        "accounts.csv",
        [
            "account,sector,year_established,revenue,employees,office_location,subsidiary_of",
            "Acme,retail,1990,2.5,100,Kenya,",
        ],
    )
    _write(folder, "products.csv", ["product,series,sales_price", "GTX Pro,GTX,4821"])
    _write(
        folder,
        "sales_teams.csv",
        ["sales_agent,manager,regional_office", "Ann,Boss,East"],
    )
    _write(
        folder,
        "sales_pipeline.csv",
        [
            "opportunity_id,sales_agent,product,account,deal_stage,engage_date,close_date,close_value",
            "A1,Ann,GTXPro,Acme,Won,2017-01-02,2017-02-03,4000",
            "A2,Ann,GTXPro,Acme,Won,2017-01-02,2017-31-03,4000",
            "A3,Ann,GTXPro,Acme,Lost,2017-01-02,2017-02-04,none",
            "A4,Ann,GTXPro,,Engaging,2017-01-05,,",
            "A1,Ann,GTXPro,Acme,Won,2017-01-02,2017-02-03,4000",
        ],
    )
    return folder


def test_faulty_pipeline_reasons(small_export, tmp_path):
    mart = tmp_path / "mart.duckdb"
    ingest_source("maven-crm", small_export, mart)
    rows = _query(
        mart,
        """
        SELECT line, column_name, value, reason FROM quarantine
        WHERE table_name = 'opportunities' ORDER BY line
        """,
    )
    assert rows == [
        (3, "closed_date", "2017-31-03", "invalid date value"),
        (4, "amount", "none", "invalid double value"),
        (
            6,
            "opportunity_id,snapshot_date",
            "A1|2017-02-04",
            "duplicate key; first seen at line 2",
        ),
    ]


def test_faulty_pipeline_open_deal_kept(small_export, tmp_path):
    mart = tmp_path / "mart.duckdb"
    ingest_source("maven-crm", small_export, mart)
    row = _query(
        mart,
        """
        SELECT account_id, amount, amount_is_estimate, business_unit, region
        FROM opportunities WHERE opportunity_id = 'A4'
        """,
    )
    assert row == [(None, 4821.0, True, "GTX", "East")]


def test_faulty_pipeline_balanced(small_export, tmp_path):
    mart = tmp_path / "mart.duckdb"
    ingest_source("maven-crm", small_export, mart)
    row = _query(
        mart,
        """
        SELECT rows_read, rows_loaded, rows_quarantined FROM load_log
        WHERE table_name = 'opportunities'
        """,
    )
    assert row == [(5, 2, 3)]


def test_missing_columns_all_named(small_export, tmp_path):
    _write(small_export, "sales_teams.csv", ["agent,office", "Ann,East"])
    with pytest.raises(IngestError) as caught:
        ingest_source("maven-crm", small_export, tmp_path / "mart.duckdb")
    message = str(caught.value)
    for column in ("sales_agent", "manager", "regional_office"):
        assert column in message, column
    assert "sales_teams.csv" in message
    assert "agent, office" in message


def test_missing_file_named(small_export, tmp_path):
    (small_export / "products.csv").unlink()
    with pytest.raises(IngestError, match=r"products\.csv"):
        ingest_source("maven-crm", small_export, tmp_path / "mart.duckdb")


def test_file_instead_of_folder(small_export, tmp_path):
    with pytest.raises(IngestError, match="not a folder"):
        ingest_source(
            "maven-crm", small_export / "accounts.csv", tmp_path / "mart.duckdb"
        )
