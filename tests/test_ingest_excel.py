"""Excel and Parquet readers through YAML specs.

The real Superstore workbook is loaded with parameters/sources/superstore_xls.yaml
(Orders and People sheets) and compared with pandas reading the same sheets.
Small workbooks and Parquet files written here cover typed cells, serial
dates, blank rows and missing sheets.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
import yaml

from cockpit.errors import IngestError
from cockpit.ingest import ingest_source
from cockpit.ingest.readers import read_excel_table
from cockpit.mart import connect


@pytest.fixture(scope="module")
def workbook(shared_data: Path) -> Path:
    return shared_data / "superstore" / "Sample - Superstore.xls"


@pytest.fixture(scope="module")
def orders(workbook: Path) -> pd.DataFrame:
    return pd.read_excel(workbook, sheet_name="Orders")


@pytest.fixture(scope="module")
def people(workbook: Path) -> pd.DataFrame:
    return pd.read_excel(workbook, sheet_name="People")


@pytest.fixture(scope="module")
def mart(workbook: Path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("superstore-xls") / "mart.duckdb"
    ingest_source("superstore-xls", workbook, path)
    return path


def _query(mart: Path, sql: str, params=None) -> list[tuple]:
    with connect(mart, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


# --- the real workbook -------------------------------------------------------------


def test_xls_every_line_loaded(mart, orders):
    count = _query(mart, "SELECT count(*) FROM transactions")[0][0]
    assert count == len(orders) == 10194


def test_xls_nothing_quarantined(mart):
    assert _query(mart, "SELECT count(*) FROM quarantine") == [(0,)]


def test_xls_sales_match_pandas(mart, orders):
    total = _query(mart, "SELECT sum(net_revenue) FROM transactions")[0][0]
    assert total == pytest.approx(orders["Sales"].sum(), abs=1e-6)


def test_xls_profit_match_pandas(mart, orders):
    profit = _query(mart, "SELECT sum(net_revenue - cost) FROM transactions")[0][0]
    assert profit == pytest.approx(orders["Profit"].sum(), abs=1e-6)


def test_xls_region_sales_match_pandas(mart, orders):
    loaded = dict(
        _query(mart, "SELECT region, sum(net_revenue) FROM transactions GROUP BY 1")
    )
    expected = orders.groupby("Region")["Sales"].sum()
    assert sorted(loaded) == sorted(expected.index)
    for region, sales in expected.items():
        assert loaded[region] == pytest.approx(sales, abs=1e-6), region


def test_xls_dates_match_pandas(mart, orders):
    first, last = _query(mart, "SELECT min(date), max(date) FROM transactions")[0]
    assert first == orders["Order Date"].min().date()
    assert last == orders["Order Date"].max().date()


def test_xls_first_line_date(mart, orders):
    first = orders.iloc[0]
    day = _query(
        mart,
        "SELECT date FROM transactions WHERE invoice_id = ? AND line = ?",
        [first["Order ID"], int(first["Row ID"])],
    )
    assert day == [(first["Order Date"].date(),)]


def test_xls_canada_lines_kept(mart, orders):
    canada = orders[orders["Country/Region"] == "Canada"]
    loaded = set(_query(mart, "SELECT invoice_id, line FROM transactions"))
    expected = set(zip(canada["Order ID"], canada["Row ID"], strict=True))
    assert len(expected) == 200
    assert expected <= loaded


def test_xls_people_sheet_reps(mart, people):
    reps = _query(mart, "SELECT rep_id, region, role FROM reps ORDER BY rep_id")
    expected = sorted(zip(people["Regional Manager"], people["Region"], strict=True))
    assert reps == [(name, region, "manager") for name, region in expected]


def test_xls_lines_credited_to_manager(mart, orders, people):
    manager = dict(zip(people["Region"], people["Regional Manager"], strict=True))
    loaded = dict(_query(mart, "SELECT rep_id, count(*) FROM transactions GROUP BY 1"))
    expected = orders["Region"].map(manager).value_counts().to_dict()
    assert loaded == expected


def test_xls_load_log_names_sheets(mart, workbook):
    files = {row[0] for row in _query(mart, "SELECT source_file FROM load_log")}
    assert files == {f"{workbook}#Orders", f"{workbook}#People"}


def test_xls_second_load_skipped(workbook, tmp_path):
    path = tmp_path / "mart.duckdb"
    ingest_source("superstore-xls", workbook, path)
    reports = ingest_source("superstore-xls", workbook, path)
    assert [r.rows_read for r in reports] == [0, 0, 0, 0]
    assert _query(path, "SELECT count(*) FROM transactions") == [(10194,)]


def test_xls_sheet_lines(workbook):
    table = read_excel_table(workbook, "People")
    assert table.lines.tolist() == [2, 3, 4, 5]
    assert table.header == ["Regional Manager", "Region"]


def test_xls_missing_sheet_named(workbook):
    with pytest.raises(IngestError) as caught:
        read_excel_table(workbook, "Invoices")
    assert str(caught.value) == (
        f"{workbook}: no sheet named 'Invoices'; the workbook has Orders, People, "
        "Returns"
    )


# --- workbooks and Parquet files written here -------------------------------------------


SPEC = {
    "name": "typed-lines",
    "reporting_currency": "USD",
    "inputs": {"lines": {"format": "excel", "sheet": "Lines"}},
    "loads": [
        {
            "table": "transactions",
            "currency": {"fixed": "USD"},
            "columns": {
                "invoice_id": "Invoice",
                "line": "Line",
                "date": "Date",
                "net_revenue": "Amount",
            },
        }
    ],
}


def _write_spec(folder: Path, **input_changes) -> Path:
    spec = yaml.safe_load(yaml.safe_dump(SPEC))
    spec["inputs"]["lines"].update(input_changes)
    path = folder / "typed.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


@pytest.fixture
def small_workbook(tmp_path: Path) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Lines"
    sheet.append(["Invoice", "Line", "Date", "Amount"])
    sheet.append(["F1", 1, datetime(2021, 3, 4), 10.5])  # row 2: a real date cell
    sheet.append(["F1", 2, 44259, "1,234.50"])  # row 3: serial number, text amount
    sheet.append([None, None, None, None])  # row 4: blank, skipped
    sheet.append(["F2", 1, "2021-03-06", "(5.00)"])  # row 5: ISO text, negative
    sheet.append(["F2", 2, "soon", 7])  # row 6: bad date
    path = tmp_path / "lines.xlsx"
    book.save(path)
    return path


def test_xlsx_typed_cells(small_workbook, tmp_path):
    mart = tmp_path / "mart.duckdb"
    ingest_source(str(_write_spec(tmp_path)), small_workbook, mart)
    rows = _query(
        mart,
        "SELECT invoice_id, line, date, net_revenue FROM transactions ORDER BY 1, 2",
    )
    assert rows == [
        ("F1", 1, date(2021, 3, 4), 10.5),
        ("F1", 2, date(2021, 3, 4), 1234.5),
        ("F2", 1, date(2021, 3, 6), -5.0),
    ]


def test_xlsx_quarantine_sheet_row(small_workbook, tmp_path):
    mart = tmp_path / "mart.duckdb"
    ingest_source(str(_write_spec(tmp_path)), small_workbook, mart)
    rows = _query(
        mart, "SELECT source_file, line, column_name, value, reason FROM quarantine"
    )
    assert rows == [
        (f"{small_workbook}#Lines", 6, "date", "soon", "invalid date value")
    ]
    assert _query(
        mart, "SELECT rows_read, rows_loaded, rows_quarantined FROM load_log"
    ) == [(4, 3, 1)]


def test_xlsx_header_row_below_title(tmp_path):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "Lines"
    sheet.append(["Sales export, March 2021"])
    sheet.append([])
    sheet.append(["Invoice", "Line", "Date", "Amount"])
    sheet.append(["F1", 1, datetime(2021, 3, 4), 10])
    path = tmp_path / "titled.xlsx"
    book.save(path)
    mart = tmp_path / "mart.duckdb"
    ingest_source(str(_write_spec(tmp_path, header_row=3)), path, mart)
    assert _query(mart, "SELECT invoice_id, net_revenue FROM transactions") == [
        ("F1", 10.0)
    ]


def test_parquet_typed_columns(tmp_path):
    frame = pd.DataFrame(
        {
            "Invoice": ["F1", "F1", "F2"],
            "Line": [1, 2, 1],
            "Date": pd.to_datetime(["2021-03-04", "2021-03-05", None]),
            "Amount": [10.5, -2.0, 3.0],
        }
    )
    path = tmp_path / "lines.parquet"
    frame.to_parquet(path)
    spec = yaml.safe_load(yaml.safe_dump(SPEC))
    spec["inputs"]["lines"] = {"format": "parquet"}
    spec_path = tmp_path / "parquet.yaml"
    spec_path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    mart = tmp_path / "mart.duckdb"
    ingest_source(str(spec_path), path, mart)
    rows = _query(mart, "SELECT invoice_id, line, date, net_revenue FROM transactions")
    assert rows == [
        ("F1", 1, date(2021, 3, 4), 10.5),
        ("F1", 2, date(2021, 3, 5), -2.0),
    ]
    quarantined = _query(mart, "SELECT line, column_name, reason FROM quarantine")
    assert quarantined == [(3, "date", "missing required value")]
