"""Source specs: checking the YAML, finding specs by name, and what they drive."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from cockpit.errors import IngestError, ParameterError
from cockpit.ingest import ingest_source
from cockpit.ingest.spec import find_spec, load_spec
from cockpit.mart import connect
from tests.conftest import REPO_ROOT

SOURCES = REPO_ROOT / "parameters" / "sources"

#: Export columns the earlier hand-written Superstore loader required.
SUPERSTORE_COLUMNS = {
    "Row ID",
    "Order ID",
    "Order Date",
    "Customer ID",
    "Customer Name",
    "Segment",
    "Country",
    "Region",
    "Product ID",
    "Category",
    "Sub-Category",
    "Product Name",
    "Sales",
    "Quantity",
    "Profit",
}


def _write(folder: Path, text: str, name: str = "source.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", sorted(SOURCES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_spec_valid(path):
    spec = load_spec(path)
    assert spec.loads, path.name


def test_superstore_spec_columns():
    spec = load_spec(SOURCES / "superstore.yaml")
    assert set(spec.required_columns("orders")) == SUPERSTORE_COLUMNS


def test_spec_problems_listed_at_once(tmp_path):
    path = _write(
        tmp_path,
        """
name: broken
inputs:
  lines: {format: xlsx, decimal: ";"}
loads:
  - table: invoices
  - table: transactions
    colour: red
    currency: {fixed: USD}
    columns:
      invoice_id: invoice
      line: line
      date: date
      net_revenue: {column: amount, scale: lots}
""",
    )
    with pytest.raises(ParameterError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert message.startswith(f"source spec {path} has 5 problem(s):\n")
    lines = message.splitlines()[1:]
    assert (
        lines[0]
        == "  inputs.lines.format: expected one of csv, excel, parquet, sql, got 'xlsx'"
    )
    assert lines[1] == "  inputs.lines.decimal: expected '.' or ',', got ';'"
    assert lines[2].startswith("  loads[0].table: expected a mart table (accounts, ")
    assert lines[2].endswith("), got 'invoices'")
    assert lines[3] == (
        "  loads[1].colour: unknown key; expected one of table, from, columns, "
        "group_by, alternates, stages, currency, fx_date, returns, keep"
    )
    assert lines[4] == (
        "  loads[1] (transactions).columns.net_revenue.scale: expected a number, "
        "got 'lots'"
    )


def test_spec_unmapped_required_columns(tmp_path):
    path = _write(
        tmp_path,
        """
name: short
inputs: {lines: {format: csv}}
loads:
  - table: transactions
    currency: {fixed: EUR}
    columns: {invoice_id: invoice}
""",
    )
    with pytest.raises(ParameterError) as caught:
        load_spec(path)
    assert str(caught.value).splitlines()[1] == (
        "  loads[0] (transactions).columns: required column(s) line, date, "
        "net_revenue not mapped"
    )


def test_spec_unknown_stage_status(tmp_path):
    path = _write(
        tmp_path,
        """
name: crm
inputs: {rows: {format: csv}}
loads:
  - table: opportunities
    currency: USD
    stages: {Won: victory}
    columns: {opportunity_id: id, snapshot_date: day, stage: stage}
""",
    )
    with pytest.raises(ParameterError) as caught:
        load_spec(path)
    assert str(caught.value).splitlines()[1] == (
        "  loads[0] (opportunities).stages.Won: expected a status among open, won, "
        "lost, got 'victory'"
    )


def test_spec_constant_outside_allowed(tmp_path):
    path = _write(
        tmp_path,
        """
name: people
inputs: {rows: {format: csv}}
loads:
  - table: reps
    columns: {rep_id: id, name: name, role: {value: boss}}
""",
    )
    with pytest.raises(ParameterError) as caught:
        load_spec(path)
    assert str(caught.value).splitlines()[1] == (
        "  loads[0] (reps).columns.role.value: expected one of seller, manager, "
        "got 'boss'"
    )


def test_spec_reserved_column(tmp_path):
    path = _write(
        tmp_path,
        """
name: people
inputs: {rows: {format: csv}}
loads:
  - table: reps
    columns: {rep_id: id, name: name, role: {value: seller}, source: origin}
""",
    )
    with pytest.raises(ParameterError) as caught:
        load_spec(path)
    assert str(caught.value).splitlines()[1] == (
        "  loads[0] (reps).columns.source: the loader fills source itself; remove it"
    )


def test_spec_sql_needs_query(tmp_path):
    path = _write(
        tmp_path,
        """
name: db
inputs: {rows: {format: sql}}
loads:
  - table: reps
    columns: {rep_id: id, name: name, role: {value: seller}}
""",
    )
    with pytest.raises(ParameterError) as caught:
        load_spec(path)
    assert str(caught.value).splitlines()[1:] == [
        "  inputs.rows.query: expected an SQL query, got nothing",
        "  inputs.rows.url: expected a database URL, or url_env naming a variable "
        "that contains one, got nothing",
    ]


def test_spec_invalid_yaml(tmp_path):
    path = _write(tmp_path, "name: [unclosed\n")
    with pytest.raises(ParameterError, match=r"not valid YAML"):
        load_spec(path)


def test_spec_file_missing(tmp_path):
    with pytest.raises(ParameterError) as caught:
        find_spec(tmp_path / "absent.yaml")
    assert str(caught.value) == (
        f"source spec {tmp_path / 'absent.yaml'} not found; check the path"
    )


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("superstore", "superstore.yaml"),
        ("maven-crm", "maven_crm.yaml"),
        ("maven_crm", "maven_crm.yaml"),
        ("superstore-xls", "superstore_xls.yaml"),
        ("erp-invoices", "example_erp_invoices.yaml"),
    ],
)
def test_find_spec_by_name(name, file):
    assert find_spec(name).name == file


def test_find_spec_unknown():
    with pytest.raises(ParameterError) as caught:
        find_spec("nosuch")
    message = str(caught.value)
    assert message.startswith("unknown source 'nosuch'; no spec of that name in ")
    assert "Known: crm-snapshots, erp-invoices, erp-postgres" in message


def test_ingest_unknown_source(tmp_path):
    with pytest.raises(IngestError, match="unknown source 'nosuch'"):
        ingest_source("nosuch", tmp_path, tmp_path / "mart.duckdb")


def test_ingest_spec_path(tmp_path, shared_data):
    mart = tmp_path / "mart.duckdb"
    reports = ingest_source(
        str(SOURCES / "maven_crm.yaml"), shared_data / "maven-crm", mart
    )
    assert [r.table for r in reports] == [
        "accounts",
        "products",
        "reps",
        "reps",
        "opportunities",
    ]


def test_multi_file_spec_needs_folder(tmp_path, shared_data):
    with pytest.raises(IngestError) as caught:
        ingest_source(
            "maven-crm",
            shared_data / "maven-crm" / "accounts.csv",
            tmp_path / "m.duckdb",
        )
    assert str(caught.value) == (
        f"{shared_data / 'maven-crm' / 'accounts.csv'} is not a folder; pass the "
        "folder that contains accounts.csv, products.csv, sales_pipeline.csv, "
        "sales_teams.csv"
    )


def test_folder_without_matching_file(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(IngestError) as caught:
        ingest_source("superstore", folder, tmp_path / "m.duckdb")
    assert str(caught.value).startswith(f"{folder}: no file matches *.csv;")


def test_old_mart_gains_columns(tmp_path, shared_data):
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        # The transactions table as marts of the first release created it.
        con.execute(
            """
            CREATE TABLE transactions (
                invoice_id VARCHAR, line BIGINT, date DATE, account_id VARCHAR,
                product_id VARCHAR, rep_id VARCHAR, region VARCHAR,
                business_unit VARCHAR, quantity DOUBLE, net_revenue DOUBLE,
                cost DOUBLE, currency VARCHAR, source VARCHAR
            )
            """
        )
    ingest_source(
        "superstore", shared_data / "superstore" / "Sample - Superstore.csv", path
    )
    with connect(path, read_only=True) as con:
        count, files = con.execute(
            "SELECT count(*), count(DISTINCT source_file) FROM transactions"
        ).fetchone()
    assert (count, files) == (9994, 1)
