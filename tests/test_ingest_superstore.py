"""Superstore loader: reference figures, row accounting and bad rows."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from cockpit.errors import IngestError
from cockpit.ingest import ingest_source
from cockpit.mart import connect

# Published figures for the 9,994-line CSV. South is exactly 391,721.905 in
# decimal arithmetic, so it is compared to the cent with half a cent of slack.
REFERENCE_SALES = 2_297_200.86
REFERENCE_PROFIT = 286_397.02
REFERENCE_REGIONS = {
    "Central": 501_239.89,
    "East": 678_781.24,
    "South": 391_721.90,
    "West": 725_457.82,
}

HEADER = (
    "Row ID,Order ID,Order Date,Ship Date,Ship Mode,Customer ID,Customer Name,"
    "Segment,Country,City,State,Postal Code,Region,Product ID,Category,"
    "Sub-Category,Product Name,Sales,Quantity,Discount,Profit"
)


def _row(row_id, order="CA-1", day="1/5/2021", sales="10", profit="2", name="Pen"):
    return (
        f"{row_id},{order},{day},1/9/2021,Standard Class,AB-1,Ann Bee,Consumer,"
        f"United States,Austin,Texas,73301,Central,OFF-1,Office Supplies,Art,"
        f"{name},{sales},1,0,{profit}"
    )


@pytest.fixture(scope="module")
def csv_path(shared_data: Path) -> Path:
    return shared_data / "superstore" / "Sample - Superstore.csv"


@pytest.fixture(scope="module")
def raw(csv_path: Path) -> pd.DataFrame:
    return pd.read_csv(csv_path, encoding="utf-8")


@pytest.fixture(scope="module")
def mart(csv_path: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("superstore") / "mart.duckdb"
    ingest_source("superstore", csv_path, path)
    return path


def _query(mart: Path, sql: str, params=None):
    with connect(mart, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def test_total_sales_matches_pandas(mart, raw):
    total = _query(mart, "SELECT sum(net_revenue) FROM transactions")[0][0]
    assert total == pytest.approx(raw["Sales"].sum(), abs=1e-6)


def test_total_sales_matches_reference(mart):
    total = _query(mart, "SELECT sum(net_revenue) FROM transactions")[0][0]
    assert round(total, 2) == REFERENCE_SALES


def test_profit_matches_pandas(mart, raw):
    profit = _query(mart, "SELECT sum(net_revenue - cost) FROM transactions")[0][0]
    assert profit == pytest.approx(raw["Profit"].sum(), abs=1e-6)


def test_profit_matches_reference(mart):
    profit = _query(mart, "SELECT sum(net_revenue - cost) FROM transactions")[0][0]
    assert round(profit, 2) == REFERENCE_PROFIT


@pytest.mark.parametrize("region", sorted(REFERENCE_REGIONS))
def test_region_sales_match_pandas(mart, raw, region):
    sales = _query(
        mart, "SELECT sum(net_revenue) FROM transactions WHERE region = ?", [region]
    )[0][0]
    expected = raw.loc[raw["Region"] == region, "Sales"].sum()
    assert sales == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("region", sorted(REFERENCE_REGIONS))
def test_region_sales_match_reference(mart, region):
    sales = _query(
        mart, "SELECT sum(net_revenue) FROM transactions WHERE region = ?", [region]
    )[0][0]
    assert abs(sales - REFERENCE_REGIONS[region]) <= 0.006


def test_every_line_loaded(mart, raw):
    count = _query(mart, "SELECT count(*) FROM transactions")[0][0]
    assert count == len(raw) == 9994


def test_nothing_quarantined(mart):
    assert _query(mart, "SELECT count(*) FROM quarantine")[0][0] == 0


def test_load_log_balanced(mart):
    rows = _query(
        mart,
        "SELECT table_name, rows_read, rows_loaded, rows_quarantined FROM load_log",
    )
    assert len(rows) == 3
    for table, read, loaded, quarantined in rows:
        assert read == loaded + quarantined, table


def test_load_log_names_file(mart, csv_path):
    files = {row[0] for row in _query(mart, "SELECT source_file FROM load_log")}
    assert files == {str(csv_path)}


def test_order_date_month_first(mart):
    # Row ID 1 is order CA-2020-152156 of 11/8/2020, i.e. 8 November.
    day = _query(
        mart,
        "SELECT date FROM transactions WHERE invoice_id = 'CA-2020-152156' AND line = 1",
    )[0][0]
    assert day == date(2020, 11, 8)


def test_dates_match_pandas(mart, raw):
    first, last = _query(mart, "SELECT min(date), max(date) FROM transactions")[0]
    parsed = pd.to_datetime(raw["Order Date"], format="%m/%d/%Y")
    assert (first, last) == (parsed.min().date(), parsed.max().date())


def test_rep_id_empty(mart):
    filled = _query(mart, "SELECT count(rep_id) FROM transactions")[0][0]
    assert filled == 0


def test_currency_usd(mart):
    currencies = _query(mart, "SELECT DISTINCT currency FROM transactions")
    assert currencies == [("USD",)]


def test_business_unit_is_category(mart, raw):
    units = _query(
        mart,
        "SELECT business_unit, sum(net_revenue) FROM transactions GROUP BY 1 ORDER BY 1",
    )
    expected = raw.groupby("Category")["Sales"].sum()
    assert [u for u, _ in units] == list(expected.index)
    for unit, sales in units:
        assert sales == pytest.approx(expected[unit], abs=1e-6), unit


def test_accounts_one_per_customer(mart, raw):
    count = _query(mart, "SELECT count(*) FROM accounts")[0][0]
    assert count == raw["Customer ID"].nunique() == 793


def test_account_region_most_sales(mart, raw):
    by_region = raw.groupby(["Customer ID", "Region"])["Sales"].sum().reset_index()
    by_region = by_region.sort_values(
        ["Customer ID", "Sales", "Region"], ascending=[True, False, True]
    )
    expected = by_region.drop_duplicates("Customer ID").set_index("Customer ID")
    loaded = dict(_query(mart, "SELECT account_id, region FROM accounts"))
    assert loaded == expected["Region"].to_dict()


def test_account_segment(mart):
    row = _query(
        mart,
        "SELECT name, segment, country FROM accounts WHERE account_id = 'CG-12520'",
    )
    assert row == [("Claire Gute", "Consumer", "United States")]


def test_products_one_per_id(mart, raw):
    count = _query(mart, "SELECT count(*) FROM products")[0][0]
    assert count == raw["Product ID"].nunique() == 1862


def test_product_keeps_first_name(mart, raw):
    first = raw.drop_duplicates("Product ID").set_index("Product ID")["Product Name"]
    loaded = dict(_query(mart, "SELECT product_id, name FROM products"))
    assert loaded == {k: v.strip() for k, v in first.items()}


def test_product_line_is_sub_category(mart):
    row = _query(
        mart,
        "SELECT product_line, business_unit FROM products WHERE product_id = 'FUR-BO-10001798'",
    )
    assert row == [("Bookcases", "Furniture")]


def test_alternate_names_counted(mart, raw):
    names = raw.groupby("Product ID")["Product Name"].nunique()
    stored = _query(
        mart, "SELECT value FROM mart_meta WHERE key = 'alternate_names:products'"
    )[0][0]
    alternates = json.loads(stored)
    assert len(alternates) == int((names > 1).sum()) == 32


def test_meta_company_and_currency(mart):
    meta = dict(_query(mart, "SELECT key, value FROM mart_meta"))
    assert (meta["company"], meta["currency"]) == ("Superstore", "USD")


def test_meta_as_of_latest_order(mart):
    meta = dict(_query(mart, "SELECT key, value FROM mart_meta"))
    assert meta["as_of"] == "2021-12-30"


# --- a faulty export written here ------------------------------------------


@pytest.fixture
def faulty(tmp_path: Path) -> tuple[Path, Path]:
    lines = [
        HEADER,
        _row(1),  # line 2: good
        _row(2, day="13/45/2021"),  # line 3: bad date
        _row(3, sales="abc"),  # line 4: non-numeric amount
        _row(4, name='"Pen, blue\nlong"'),  # lines 5-6: good, name spans two lines
        _row(1),  # line 7: repeats Order ID and Row ID of line 2
        _row(5, order=""),  # line 8: Order ID missing
        _row(6, profit="n/a"),  # line 9: Profit not a number
    ]
    path = tmp_path / "orders.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    mart = tmp_path / "mart.duckdb"
    ingest_source("superstore", path, mart)
    return path, mart


def test_faulty_quarantine_reasons(faulty):
    _, mart = faulty
    rows = _query(
        mart,
        """
        SELECT line, column_name, value, reason FROM quarantine
        WHERE table_name = 'transactions' ORDER BY line
        """,
    )
    assert rows == [
        (3, "date", "13/45/2021", "invalid date value"),
        (4, "net_revenue", "abc", "invalid double value"),
        (7, "invoice_id,line", "CA-1|1", "duplicate key; first seen at line 2"),
        (8, "invoice_id", None, "missing required value"),
        (9, "cost", "n/a", "invalid double value"),
    ]


def test_faulty_rows_loaded(faulty):
    _, mart = faulty
    rows = _query(
        mart, "SELECT line, net_revenue, cost FROM transactions ORDER BY line"
    )
    assert rows == [(1, 10.0, 8.0), (4, 10.0, 8.0)]


def test_faulty_load_balanced(faulty):
    _, mart = faulty
    row = _query(
        mart,
        """
        SELECT rows_read, rows_loaded, rows_quarantined FROM load_log
        WHERE table_name = 'transactions'
        """,
    )
    assert row == [(7, 2, 5)]


def test_faulty_multiline_name_kept(faulty):
    _, mart = faulty
    names = _query(mart, "SELECT name FROM products")
    assert names == [("Pen",)]


def test_missing_columns_all_named(tmp_path):
    path = tmp_path / "short.csv"
    header = HEADER.replace(",Region", "").replace(",Sales", "").replace(",Profit", "")
    path.write_text(header + "\n", encoding="utf-8")
    with pytest.raises(IngestError) as caught:
        ingest_source("superstore", path, tmp_path / "mart.duckdb")
    message = str(caught.value)
    for column in ("Region", "Sales", "Profit"):
        assert column in message, column
    assert str(path) in message
    assert "Customer ID" in message


def test_missing_columns_load_nothing(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("Row ID,Order ID\n1,CA-1\n", encoding="utf-8")
    mart = tmp_path / "mart.duckdb"
    with pytest.raises(IngestError):
        ingest_source("superstore", path, mart)
    assert _query(mart, "SELECT count(*) FROM load_log")[0][0] == 0


def test_windows_1252_file_rejected(tmp_path):
    path = tmp_path / "latin.csv"
    text = HEADER + "\n" + _row(1, name="Pen\xa0blue") + "\n"
    path.write_bytes(text.encode("cp1252"))
    with pytest.raises(IngestError, match="UTF-8"):
        ingest_source("superstore", path, tmp_path / "mart.duckdb")


def test_extra_cells_rejected(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text(HEADER + "\n" + _row(1) + ",surplus\n", encoding="utf-8")
    with pytest.raises(IngestError, match="line 2"):
        ingest_source("superstore", path, tmp_path / "mart.duckdb")
