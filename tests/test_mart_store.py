"""The mart's single door: coercion, quarantine, key checks and migration."""

from __future__ import annotations

import duckdb
import pandas as pd

from cockpit.mart import connect, load_frame


def test_load_quarantines_each_problem(tmp_path):
    frame = pd.DataFrame(
        {
            "product_id": ["A", "B", "A", ""],
            "name": ["a", "b", "again", "x"],
            "business_unit": ["U", "U", "U", "U"],
            "list_price": ["1.5", "abc", "2", "4"],
        }
    )
    with connect(tmp_path / "m.duckdb") as con:
        report = load_frame(con, "products", frame, source="test", source_file="p.csv")
        problems = con.execute(
            "SELECT line, column_name, value, reason FROM quarantine ORDER BY line"
        ).fetchall()
    assert report.rows_read == 4
    assert report.rows_loaded == 1
    assert report.rows_quarantined == 3
    assert report.balanced
    assert problems == [
        (3, "list_price", "abc", "invalid double value"),
        (4, "product_id", "A", "duplicate key; first seen at line 2"),
        (5, "product_id", None, "missing required value"),
    ]


def test_load_rejects_key_already_in_mart(tmp_path):
    frame = pd.DataFrame({"product_id": ["A"], "name": ["a"], "business_unit": ["U"]})
    with connect(tmp_path / "m.duckdb") as con:
        load_frame(con, "products", frame, source="test", source_file="p.csv")
        again = load_frame(con, "products", frame, source="test", source_file="p.csv")
        reason = con.execute("SELECT reason FROM quarantine").fetchone()[0]
    assert again.rows_loaded == 0
    assert again.rows_quarantined == 1
    assert reason == "key already in the mart"


def test_load_log_records_counts(tmp_path):
    frame = pd.DataFrame(
        {"product_id": ["A", ""], "name": ["a", "b"], "business_unit": ["U", "U"]}
    )
    with connect(tmp_path / "m.duckdb") as con:
        load_frame(
            con, "products", frame, source="test", source_file="p.csv", checksum="abc"
        )
        row = con.execute(
            "SELECT rows_read, rows_loaded, rows_quarantined, checksum FROM load_log"
        ).fetchone()
    assert row == (2, 1, 1, "abc")


def test_connect_adds_new_columns_to_old_mart(tmp_path):
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as raw:
        raw.execute("CREATE TABLE products (product_id VARCHAR, name VARCHAR)")
        raw.execute("INSERT INTO products VALUES ('A', 'a')")
    with connect(path) as con:
        columns = {row[0] for row in con.execute("DESCRIBE products").fetchall()}
        kept = con.execute("SELECT name FROM products").fetchone()[0]
    assert {"business_unit", "list_price", "product_line"} <= columns
    assert kept == "a"
