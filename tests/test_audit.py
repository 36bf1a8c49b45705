"""Audit: findings on the real Maven and Superstore marts and on made-up faults."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from cockpit.audit import (
    READINESS_WEIGHTS,
    audit_connection,
    find_orphans,
    run_audit,
    suggest_match,
)
from cockpit.errors import MartError
from cockpit.ingest import ingest_source
from cockpit.mart import connect
from cockpit.scope import Scope


def _key(name: str) -> str:
    return re.sub(r"[\W_]+", "", name.lower())


@pytest.fixture(scope="module")
def maven_mart(shared_data: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audit") / "maven.duckdb"
    ingest_source("maven-crm", shared_data / "maven-crm", path)
    return path


@pytest.fixture(scope="module")
def store_mart(shared_data: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audit") / "store.duckdb"
    ingest_source(
        "superstore", shared_data / "superstore" / "Sample - Superstore.csv", path
    )
    ingest_source("macro", shared_data / "macro", path)
    return path


@pytest.fixture(scope="module")
def maven(maven_mart):
    return run_audit(maven_mart)


@pytest.fixture(scope="module")
def store(store_mart):
    return run_audit(store_mart)


@pytest.fixture(scope="module")
def pipeline(shared_data: Path) -> pd.DataFrame:
    folder = shared_data / "maven-crm"
    deals = pd.read_csv(folder / "sales_pipeline.csv")
    teams = pd.read_csv(folder / "sales_teams.csv")
    products = pd.read_csv(folder / "products.csv")
    deals = deals.merge(teams, on="sales_agent", how="left")
    products["key"] = products["product"].map(_key)
    deals["key"] = deals["product"].map(_key)
    return deals.merge(products[["key", "series", "sales_price"]], on="key", how="left")


def _summary_row(result, table: str, check: str) -> pd.Series:
    rows = result.summary[
        (result.summary["table"] == table) & (result.summary["check"] == check)
    ]
    assert len(rows) == 1, f"{table} / {check}: {len(rows)} rows"
    return rows.iloc[0]


# --- Maven mart ----------------------------------------------------------------


def test_gtxpro_orphan_found(maven):
    orphans = maven.orphans[maven.orphans["column"] == "product_id"]
    assert orphans["key"].tolist() == ["GTXPro"]


def test_gtxpro_suggests_gtx_pro(maven):
    orphan = maven.orphans[maven.orphans["key"] == "GTXPro"].iloc[0]
    assert (orphan["suggestion"], orphan["match"]) == (
        "GTX Pro",
        "same normalised name",
    )


def test_gtxpro_rows_and_value(maven, pipeline):
    orphan = maven.orphans[maven.orphans["key"] == "GTXPro"].iloc[0]
    deals = pipeline[pipeline["product"] == "GTXPro"]
    value = deals["close_value"].fillna(deals["sales_price"]).sum()
    assert orphan["rows"] == len(deals) == 1480
    assert orphan["amount"] == pytest.approx(value)


def test_gtxpro_in_summary(maven):
    row = _summary_row(maven, "opportunities", "product_id not in products")
    assert row["status"] == "fail"
    assert "GTXPro -> GTX Pro" in row["detail"]


def test_open_deals_without_account(maven, pipeline):
    links = maven.missing_links
    row = links[
        (links["table"] == "opportunities")
        & (links["link"] == "account_id")
        & (links["status"] == "open")
    ].iloc[0]
    open_deals = pipeline[~pipeline["deal_stage"].isin(["Won", "Lost"])]
    missing = open_deals[open_deals["account"].isna()]
    assert row["rows"] == len(missing) == 1425
    assert row["of_rows"] == len(open_deals)
    assert row["amount"] == pytest.approx(missing["sales_price"].sum())


def test_open_deals_without_account_in_summary(maven):
    row = _summary_row(maven, "opportunities", "open rows without account_id")
    assert row["value"] == 1425


def test_closed_deals_have_accounts(maven):
    links = maven.missing_links
    closed = links[
        (links["table"] == "opportunities")
        & (links["link"] == "account_id")
        & (links["status"].isin(["won", "lost"]))
    ]
    assert closed["rows"].tolist() == [0, 0]


def test_sector_typo_found(maven):
    found = maven.categories[maven.categories["column"] == "industry"]
    assert found[["value", "likely"]].values.tolist() == [["technolgy", "technology"]]


def test_sector_typo_rows(maven, shared_data):
    accounts = pd.read_csv(shared_data / "maven-crm" / "accounts.csv")
    found = maven.categories[maven.categories["value"] == "technolgy"].iloc[0]
    assert found["rows"] == int((accounts["sector"] == "technolgy").sum())


def test_sector_typo_in_summary(maven):
    row = _summary_row(maven, "accounts", "industry spelling variant")
    assert row["value"] == "technolgy"
    assert row["status"] == "warn"


def test_account_completeness(maven, pipeline):
    table = maven.completeness
    row = table[(table["table"] == "opportunities") & (table["column"] == "account_id")]
    expected = pipeline["account"].notna().mean()
    assert row["share"].iloc[0] == pytest.approx(expected)


def test_maven_loads_balanced(maven):
    assert maven.load_balance["balanced"].all()
    assert maven.load_balance["consistent"].all()


def test_maven_readiness_cells(maven, pipeline):
    cells = set(
        zip(maven.readiness["region"], maven.readiness["business_unit"], strict=True)
    )
    expected = set(zip(pipeline["regional_office"], pipeline["series"], strict=True))
    assert cells == expected


def test_readiness_rows_match_pandas(maven, pipeline):
    counts = pipeline.groupby(["regional_office", "series"]).size()
    for row in maven.readiness.itertuples():
        assert row.rows == counts[(row.region, row.business_unit)], row


def test_readiness_score_is_weighted_parts(maven):
    for row in maven.readiness.itertuples():
        score = sum(getattr(row, part) * w for part, w in READINESS_WEIGHTS.items())
        assert row.score == pytest.approx(score, abs=0.1), row


def test_readiness_linkage_counts_gtxpro(maven, pipeline):
    row = maven.readiness[
        (maven.readiness["region"] == "East")
        & (maven.readiness["business_unit"] == "GTX")
    ].iloc[0]
    cell = pipeline[
        (pipeline["regional_office"] == "East") & (pipeline["series"] == "GTX")
    ]
    known = cell["account"].notna().sum() + 2 * len(cell)
    found = known - (cell["product"] == "GTXPro").sum()
    assert row["linkage"] == pytest.approx(100 * found / known, abs=0.05)


def test_readiness_history_months(maven, pipeline):
    row = maven.readiness[
        (maven.readiness["region"] == "West")
        & (maven.readiness["business_unit"] == "MG")
    ].iloc[0]
    cell = pipeline[
        (pipeline["regional_office"] == "West") & (pipeline["series"] == "MG")
    ]
    dates = pd.to_datetime(pd.concat([cell["engage_date"], cell["close_date"]]))
    months = (dates.max() - dates.min()).days / 30.4375
    assert row["history"] == pytest.approx(100 * months / 24, abs=0.05)


def test_scoped_orphans(maven_mart, pipeline):
    result = run_audit(maven_mart, region="East", business_unit="GTX")
    expected = (
        (pipeline["regional_office"] == "East") & (pipeline["product"] == "GTXPro")
    ).sum()
    assert result.orphans["rows"].tolist() == [expected]


def test_scoped_missing_account(maven_mart, pipeline):
    result = run_audit(maven_mart, region="West", business_unit="MG")
    links = result.missing_links
    row = links[(links["link"] == "account_id") & (links["status"] == "open")].iloc[0]
    cell = pipeline[
        (pipeline["regional_office"] == "West")
        & (pipeline["series"] == "MG")
        & ~pipeline["deal_stage"].isin(["Won", "Lost"])
    ]
    assert row["rows"] == cell["account"].isna().sum()


def test_scoped_readiness_one_cell(maven_mart):
    result = run_audit(maven_mart, region="West", business_unit="MG")
    cells = list(
        zip(result.readiness["region"], result.readiness["business_unit"], strict=True)
    )
    assert cells == [("West", "MG")]


def test_scoped_summary_labels(maven_mart):
    result = run_audit(maven_mart, region="West", business_unit="MG")
    summary = result.summary
    facts = summary[summary["table"] == "opportunities"]
    loads = summary[summary["table"] == "load_log"]
    assert set(facts["region"]) == {"West"}
    assert loads["region"].isna().all()


def test_notebook_functions_take_scope(maven_mart):
    with connect(maven_mart, read_only=True) as con:
        orphans = find_orphans(con, Scope(region="Central"))
    assert orphans["key"].tolist() == ["GTXPro"]


# --- Superstore and macro mart -------------------------------------------------


def test_store_no_orphans(store):
    assert store.orphans.empty


def test_store_nothing_quarantined_but_cpi(store):
    quarantine = store.quarantine
    assert quarantine["table"].tolist() == ["external"]
    assert quarantine["rows"].tolist() == [1]


def test_store_identical_lines(store, shared_data):
    raw = pd.read_csv(shared_data / "superstore" / "Sample - Superstore.csv")
    columns = [c for c in raw.columns if c != "Row ID"]
    expected = int(raw.duplicated(columns).sum())
    row = store.duplicates[store.duplicates["check"] == "identical invoice lines"]
    assert row["extra_rows"].iloc[0] == expected == 1


def test_store_alternate_names(store):
    row = _summary_row(store, "products", "IDs with several names")
    assert row["value"] == 32


def test_store_rep_not_provided(store):
    row = _summary_row(store, "transactions", "rep_id filled")
    assert row["status"] == "warn"
    assert "no loaded export" in row["detail"]


def test_store_freshness(store):
    table = store.freshness
    row = table[table["table"] == "transactions"].iloc[0]
    assert (row["last_date"], row["days_behind"]) == (date(2021, 12, 30), 0)


def test_store_unrate_behind(store):
    table = store.freshness
    row = table[table["series"] == "unrate (ALL)"].iloc[0]
    assert row["days_behind"] == (date(2021, 12, 30) - date(2020, 2, 1)).days


def test_store_stale_indicators(store):
    row = _summary_row(store, "external", "indicators ending before as-of")
    stale = store.freshness[
        (store.freshness["table"] == "external") & (store.freshness["days_behind"] > 92)
    ]
    assert row["value"] == len(stale)
    assert "unrate (ALL)" in set(stale["series"])


def test_store_readiness_twelve_cells(store):
    assert len(store.readiness) == 12


def test_store_loads_balanced(store):
    row = _summary_row(store, "load_log", "rows read = loaded + quarantined")
    assert (row["value"], row["status"]) == (0, "ok")


# --- made-up faults ------------------------------------------------------------


def test_unbalanced_load_fails(tmp_path):
    mart = tmp_path / "mart.duckdb"
    with connect(mart) as con:
        con.execute(
            "INSERT INTO load_log VALUES "
            "('x1', 'test', 'f.csv', NULL, 'transactions', now(), 10, 7, 2)"
        )
    result = run_audit(mart)
    row = _summary_row(result, "load_log", "rows read = loaded + quarantined")
    assert (row["value"], row["status"]) == (1, "fail")


def test_quarantine_count_mismatch_fails(tmp_path):
    mart = tmp_path / "mart.duckdb"
    with connect(mart) as con:
        con.execute(
            "INSERT INTO load_log VALUES "
            "('x1', 'test', 'f.csv', NULL, 'transactions', now(), 10, 8, 2)"
        )
    result = run_audit(mart)
    row = _summary_row(result, "load_log", "quarantined rows match quarantine table")
    assert row["status"] == "fail"


def test_duplicate_key_fails(tmp_path):
    mart = tmp_path / "mart.duckdb"
    with connect(mart) as con:
        for _ in range(2):
            con.execute(
                "INSERT INTO accounts (account_id, name, region) VALUES ('A', 'Acme', 'East')"
            )
    result = run_audit(mart)
    row = _summary_row(result, "accounts", "duplicate key")
    assert (row["value"], row["status"]) == (1, "fail")


def test_same_name_accounts(tmp_path):
    mart = tmp_path / "mart.duckdb"
    with connect(mart) as con:
        con.execute(
            "INSERT INTO accounts (account_id, name) VALUES "
            "('A1', 'Acme Corp.'), ('A2', 'ACME corp'), ('B', 'Bolt')"
        )
    result = run_audit(mart)
    row = _summary_row(result, "accounts", "accounts with the same name")
    assert row["value"] == 1


def test_quarantine_reasons_counted(tmp_path):
    path = tmp_path / "orders.csv"
    header = (
        "Row ID,Order ID,Order Date,Customer ID,Customer Name,Segment,Country,"
        "Region,Product ID,Category,Sub-Category,Product Name,Sales,Quantity,Profit"
    )
    body = [
        "1,O1,1/2/2021,C1,Cy,Consumer,US,East,P1,Tech,Phones,Phone,10,1,2",
        "2,O1,1/2/2021,C1,Cy,Consumer,US,East,P1,Tech,Phones,Phone,ten,1,2",
        "3,O1,2/30/2021,C1,Cy,Consumer,US,West,P1,Tech,Phones,Phone,10,1,2",
        "1,O1,1/2/2021,C1,Cy,Consumer,US,East,P1,Tech,Phones,Phone,10,1,2",
    ]
    path.write_text("\n".join([header, *body]) + "\n")
    mart = tmp_path / "mart.duckdb"
    ingest_source("superstore", path, mart)
    result = run_audit(mart)
    counts = result.quarantine.set_index("reason")["rows"].to_dict()
    assert counts == {
        "invalid double value": 1,
        "invalid date value": 1,
        "duplicate key": 1,
    }


def test_quarantine_scoped_by_raw_region(tmp_path):
    path = tmp_path / "orders.csv"
    header = (
        "Row ID,Order ID,Order Date,Customer ID,Customer Name,Segment,Country,"
        "Region,Product ID,Category,Sub-Category,Product Name,Sales,Quantity,Profit"
    )
    body = [
        "1,O1,1/2/2021,C1,Cy,Consumer,US,East,P1,Tech,Phones,Phone,10,1,2",
        "2,O1,1/2/2021,C1,Cy,Consumer,US,East,P1,Tech,Phones,Phone,ten,1,2",
        "3,O1,2/30/2021,C1,Cy,Consumer,US,West,P1,Tech,Phones,Phone,10,1,2",
    ]
    path.write_text("\n".join([header, *body]) + "\n")
    mart = tmp_path / "mart.duckdb"
    ingest_source("superstore", path, mart)
    result = run_audit(mart, region="West")
    assert result.quarantine["reason"].tolist() == ["invalid date value"]


def test_readiness_validity_counts_quarantine(tmp_path):
    path = tmp_path / "orders.csv"
    header = (
        "Row ID,Order ID,Order Date,Customer ID,Customer Name,Segment,Country,"
        "Region,Product ID,Category,Sub-Category,Product Name,Sales,Quantity,Profit"
    )
    body = [
        "1,O1,1/2/2021,C1,Cy,Consumer,US,East,P1,Tech,Phones,Phone,10,1,2",
        "2,O1,1/2/2021,C1,Cy,Consumer,US,East,P1,Tech,Phones,Phone,ten,1,2",
        "3,O1,1/3/2021,C1,Cy,Consumer,US,East,P1,Tech,Phones,Phone,10,1,2",
        "4,O1,1/4/2021,C1,Cy,Consumer,US,East,P1,Tech,Phones,Phone,10,1,2",
    ]
    path.write_text("\n".join([header, *body]) + "\n")
    mart = tmp_path / "mart.duckdb"
    ingest_source("superstore", path, mart)
    readiness = run_audit(mart).readiness
    assert readiness[["region", "business_unit"]].values.tolist() == [["East", "Tech"]]
    assert readiness["validity"].iloc[0] == 75.0


def test_empty_mart_runs(tmp_path):
    mart = tmp_path / "mart.duckdb"
    connect(mart).close()
    result = run_audit(mart)
    assert result.readiness.empty
    assert result.status == "warn"


def test_missing_mart_raises(tmp_path):
    with pytest.raises(MartError, match="does not exist"):
        run_audit(tmp_path / "absent.duckdb")


def test_audit_leaves_mart_unchanged(maven_mart):
    with connect(maven_mart, read_only=True) as con:
        before = con.execute("SELECT count(*) FROM load_log").fetchone()
        audit_connection(con)
        after = con.execute("SELECT count(*) FROM load_log").fetchone()
    assert before == after


@pytest.mark.parametrize(
    ("value", "candidates", "expected"),
    [
        ("GTXPro", ["GTX Pro", "GTX Basic"], ("GTX Pro", "same normalised name")),
        ("GTX Bsic", ["GTX Pro", "GTX Basic"], ("GTX Basic", "similar spelling")),
        ("Widget", ["GTX Pro", "GTX Basic"], (None, None)),
    ],
)
def test_suggest_match(value, candidates, expected):
    assert suggest_match(value, candidates) == expected


def test_alternate_names_json(store_mart):
    with connect(store_mart, read_only=True) as con:
        stored = con.execute(
            "SELECT value FROM mart_meta WHERE key = 'alternate_names:products'"
        ).fetchone()[0]
    assert len(json.loads(stored)) == 32


def test_snapshot_duplicates_listed(tmp_path):
    mart = tmp_path / "mart.duckdb"
    with connect(mart) as con:
        for snapshot in ("2024-01-05", "2024-01-05", "2024-01-12"):
            con.execute(
                "INSERT INTO opportunities (opportunity_id, snapshot_date, stage, "
                "status, region, business_unit) VALUES ('D1', ?, 'Won', 'won', 'East', 'X')",
                [snapshot],
            )
    duplicates = run_audit(mart).duplicates
    rows = duplicates[duplicates["check"] == "duplicate opportunity in snapshot"]
    assert rows[["detail", "extra_rows"]].values.tolist() == [
        ["snapshot 2024-01-05", 1]
    ]
