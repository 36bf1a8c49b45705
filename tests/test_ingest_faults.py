"""Generic loader on small faulty exports: one file per real-export fault.

Each file under tests/fixtures/faults/ carries one fault. The tests load it
through a YAML spec of the same folder and check the exact error, or the
exact quarantine rows and the row accounting of the load log.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest
import yaml

from cockpit.errors import IngestError
from cockpit.ingest import ingest_source
from cockpit.ingest.generic import SkippedLoad, load_history
from cockpit.mart import connect

FAULTS = Path(__file__).parent / "fixtures" / "faults"

#: Spec whose input options the European-style files need.
EUROPEAN = {"delimiter": ";", "decimal": ",", "date_format": "%d.%m.%Y"}


def _spec(folder: Path, base: str, load: dict | None = None, **options) -> Path:
    """Copy a fault spec to `folder`, with input options and load keys changed."""
    data = yaml.safe_load((FAULTS / f"{base}.yaml").read_text(encoding="utf-8"))
    input_name = next(iter(data["inputs"]))
    data["inputs"][input_name].update(options)
    data["loads"][0].update(load or {})
    path = folder / f"{base}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _load(
    tmp_path: Path,
    file: str,
    base: str = "invoices",
    load: dict | None = None,
    rates: bool = False,
    **options,
) -> Path:
    mart = tmp_path / "mart.duckdb"
    if rates:
        ingest_source(str(_spec(tmp_path, "fx_rates")), FAULTS / "fx_rates.csv", mart)
    spec = _spec(tmp_path, base, load, **options)
    ingest_source(str(spec), FAULTS / file, mart)
    return mart


def _error(tmp_path: Path, file: str, base: str = "invoices", **options) -> str:
    spec = _spec(tmp_path, base, **options)
    with pytest.raises(IngestError) as caught:
        ingest_source(str(spec), FAULTS / file, tmp_path / "mart.duckdb")
    return str(caught.value)


def _batch_error(file: str, problem: str) -> str:
    """Whole message of a load stopped by one file problem."""
    return (
        "source fault-invoices (invoices.yaml): 1 problem(s), nothing loaded:\n  "
        f"{FAULTS / file}: {problem}"
    )


def _query(mart: Path, sql: str, params=None) -> list[tuple]:
    with connect(mart, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def _quarantine(mart: Path) -> list[tuple]:
    return _query(
        mart,
        "SELECT line, column_name, value, reason FROM quarantine "
        "ORDER BY line, column_name",
    )


def _accounting(mart: Path, table: str = "transactions") -> list[tuple]:
    return _query(
        mart,
        "SELECT rows_read, rows_loaded, rows_quarantined FROM load_log "
        "WHERE table_name = ?",
        [table],
    )


def _column(mart: Path, column: str, table: str = "transactions") -> list:
    key = "invoice_id, line" if table == "transactions" else "opportunity_id"
    rows = _query(mart, f"SELECT {column} FROM {table} ORDER BY {key}")
    return [row[0] for row in rows]


# --- dates ---------------------------------------------------------------------


def test_dates_several_formats_parsed(tmp_path):
    mart = _load(tmp_path, "dates_several_formats.csv")
    assert _column(mart, "date") == [
        date(2021, 3, 4),
        date(2021, 3, 4),
        date(2021, 3, 5),
        date(2021, 3, 6),
        date(2021, 3, 7),
    ]


def test_dates_several_formats_quarantine(tmp_path):
    mart = _load(tmp_path, "dates_several_formats.csv")
    assert _quarantine(mart) == [(7, "date", "someday", "invalid date value")]
    assert _accounting(mart) == [(6, 5, 1)]


def test_dates_ambiguous_order_rejected(tmp_path):
    message = _error(tmp_path, "dates_ambiguous_order.csv")
    assert message == _batch_error(
        "dates_ambiguous_order.csv",
        "column 'date' (date): every date, e.g. '03/04/2021' at line 2, "
        "'05/06/2021' at line 3, '07/08/2021' at line 4, reads as day/month and "
        "as month/day. Set date_format, e.g. '%d/%m/%Y' or '%m/%d/%Y', or "
        f"day_first for this input in {tmp_path / 'invoices.yaml'}",
    )


def test_dates_ambiguous_order_loads_nothing(tmp_path):
    _error(tmp_path, "dates_ambiguous_order.csv")
    assert _query(tmp_path / "mart.duckdb", "SELECT count(*) FROM load_log") == [(0,)]


def test_dates_ambiguous_order_with_format(tmp_path):
    mart = _load(tmp_path, "dates_ambiguous_order.csv", date_format="%d/%m/%Y")
    assert _column(mart, "date") == [
        date(2021, 4, 3),
        date(2021, 6, 5),
        date(2021, 8, 7),
    ]
    assert _accounting(mart) == [(3, 3, 0)]


def test_dates_ambiguous_order_with_day_first(tmp_path):
    mart = _load(tmp_path, "dates_ambiguous_order.csv", day_first=False)
    assert _column(mart, "date")[0] == date(2021, 3, 4)


def test_dates_mixed_order_rejected(tmp_path):
    message = _error(tmp_path, "dates_mixed_order.csv")
    assert message == _batch_error(
        "dates_mixed_order.csv",
        "column 'date' (date): the dates mix day-first and month-first order "
        "('13/02/2021' at line 2, '02/14/2021' at line 3). Set date_format, e.g. "
        "'%d/%m/%Y' or '%m/%d/%Y', or day_first for this input in "
        f"{tmp_path / 'invoices.yaml'}",
    )


def test_dates_day_first_inferred(tmp_path):
    mart = _load(tmp_path, "dates_day_first.csv")
    assert _column(mart, "date") == [date(2021, 2, 13), date(2021, 4, 3)]


def test_dates_excel_serial(tmp_path):
    mart = _load(tmp_path, "dates_excel_serial.csv")
    assert _column(mart, "date") == [
        date(2021, 1, 1),
        date(2021, 1, 1),
        date(1900, 2, 28),
    ]


def test_dates_excel_phantom_leap_day(tmp_path):
    mart = _load(tmp_path, "dates_excel_serial.csv")
    assert _quarantine(mart) == [
        (
            4,
            "date",
            "60",
            "invalid date value: Excel serial 60 is 29 February 1900, which does "
            "not exist",
        )
    ]
    assert _accounting(mart) == [(4, 3, 1)]


def test_dates_timezone_to_utc(tmp_path):
    mart = _load(tmp_path, "dates_timezone.csv")
    assert _column(mart, "date") == [
        date(2021, 4, 1),
        date(2021, 3, 31),
        date(2021, 4, 1),
        date(2021, 4, 1),
    ]


def test_dates_timezone_to_new_york(tmp_path):
    mart = _load(tmp_path, "dates_timezone.csv", timezone="America/New_York")
    assert _column(mart, "date")[3] == date(2021, 3, 31)


def test_dates_not_calendar(tmp_path):
    mart = _load(tmp_path, "dates_not_calendar.csv")
    assert _quarantine(mart) == [
        (2, "date", "2021-02-30", "invalid date value"),
        (3, "date", "2021-13-01", "invalid date value"),
    ]
    assert _accounting(mart) == [(3, 1, 2)]


def test_dates_two_digit_year(tmp_path):
    mart = _load(tmp_path, "dates_two_digit_year.csv", date_format="%d/%m/%y")
    assert _column(mart, "date") == [date(1999, 12, 31), date(2003, 2, 1)]


# --- amounts -------------------------------------------------------------------


def test_amounts_currency_symbols(tmp_path):
    mart = _load(tmp_path, "amounts_currency_symbols.csv")
    assert _column(mart, "net_revenue") == [1234.5, 99.0, 1000.0, 5.0]
    assert _accounting(mart) == [(4, 4, 0)]


def test_amounts_thousands_separators(tmp_path):
    mart = _load(tmp_path, "amounts_thousands.csv")
    assert _column(mart, "net_revenue") == [1234567.89, 12345.0, 1234567.0]


def test_amounts_parentheses_negative(tmp_path):
    mart = _load(tmp_path, "amounts_parentheses.csv")
    assert _column(mart, "net_revenue") == [-150.0, 200.0]
    assert _column(mart, "is_return") == [True, False]


def test_amounts_trailing_cr_negative(tmp_path):
    mart = _load(tmp_path, "amounts_trailing_cr.csv")
    assert _column(mart, "net_revenue") == [-150.0, -75.5, 20.0]
    assert _column(mart, "is_return") == [True, True, False]


def test_amounts_two_negative_markers(tmp_path):
    mart = _load(tmp_path, "amounts_two_negative_markers.csv")
    assert _quarantine(mart) == [
        (
            2,
            "net_revenue",
            "(100.00) CR",
            "invalid double value: more than one negative marker",
        )
    ]
    assert _accounting(mart) == [(2, 1, 1)]


def test_amounts_decimal_comma(tmp_path):
    mart = _load(tmp_path, "amounts_decimal_comma.csv", **EUROPEAN)
    assert _column(mart, "net_revenue") == [1234.56, 0.99, 12.0]
    assert _column(mart, "date")[0] == date(2021, 3, 4)


def test_amounts_decimal_comma_undeclared(tmp_path):
    mart = _load(tmp_path, "amounts_decimal_comma_undeclared.csv")
    reason = (
        "invalid double value: reads as a number only with decimal mark ',', but "
        "the source declares '.' (set decimal and thousands in the source YAML)"
    )
    assert _quarantine(mart) == [
        (2, "net_revenue", "1,5", reason),
        (3, "net_revenue", "1.234,56", reason),
    ]
    assert _accounting(mart) == [(3, 1, 2)]


def test_amounts_trailing_minus(tmp_path):
    mart = _load(tmp_path, "amounts_trailing_minus.csv", **EUROPEAN)
    assert _column(mart, "net_revenue") == [-1234.5, -0.5, 1000.0]


def test_amounts_not_a_number(tmp_path):
    mart = _load(tmp_path, "amounts_not_a_number.csv")
    assert _quarantine(mart) == [
        (2, "net_revenue", "n/a", "invalid double value"),
        (3, "net_revenue", None, "missing required value"),
        (4, "net_revenue", "12abc", "invalid double value"),
    ]
    assert _accounting(mart) == [(4, 1, 3)]


def test_line_number_fraction(tmp_path):
    mart = _load(tmp_path, "amounts_bigint_fraction.csv")
    assert _quarantine(mart) == [
        (3, "line", "2.5", "invalid bigint value"),
        (4, "line", "x3", "invalid bigint value"),
    ]
    assert _accounting(mart) == [(3, 1, 2)]


# --- encodings, separators and line ends --------------------------------------------


def test_utf8_bom_header_read(tmp_path):
    mart = _load(tmp_path, "encoding_utf8_bom.csv")
    assert _column(mart, "invoice_id") == ["F1", "F1"]
    assert _column(mart, "account_id") == ["Zoë", "Zoë"]


def test_windows_1252_declared(tmp_path):
    mart = _load(tmp_path, "encoding_windows_1252.csv", encoding="windows-1252")
    assert _column(mart, "product_id") == ["Café crème", "Bière"]
    assert _column(mart, "net_revenue") == [12.5, 3.0]


def test_windows_1252_read_as_utf8(tmp_path):
    message = _error(tmp_path, "encoding_windows_1252.csv")
    assert message == _batch_error(
        "encoding_windows_1252.csv",
        "not valid UTF-8 text at byte 82 (0xe9). Save the export as UTF-8, or set "
        "encoding: windows-1252 in the source YAML if it uses that code page",
    )


def test_non_breaking_spaces(tmp_path):
    mart = _load(tmp_path, "nbsp_in_values.csv")
    assert _column(mart, "net_revenue") == [1234.5, 8.0]
    assert _column(mart, "account_id")[0] == "C1"
    assert _column(mart, "product_id")[1] == "P\u00a01"


def test_carriage_return_line_ends(tmp_path):
    mart = _load(tmp_path, "line_endings_cr.csv")
    assert _quarantine(mart) == [(3, "net_revenue", "oops", "invalid double value")]
    assert _accounting(mart) == [(3, 2, 1)]


def test_multiline_value_line_numbers(tmp_path):
    mart = _load(tmp_path, "multiline_quoted.csv")
    assert _quarantine(mart) == [(4, "net_revenue", "oops", "invalid double value")]
    assert _column(mart, "product_id")[0] == "Desk\r\nlarge"


def test_tab_delimiter_detected(tmp_path):
    mart = _load(tmp_path, "delimiter_tab.tsv", delimiter="auto")
    assert _column(mart, "net_revenue") == [10.0, 5.0]


def test_semicolon_delimiter_detected(tmp_path):
    mart = _load(tmp_path, "delimiter_semicolon.csv", delimiter="auto")
    assert _column(mart, "net_revenue") == [10.0, 5.0]


def test_extra_cells_rejected(tmp_path):
    message = _error(tmp_path, "extra_cells.csv")
    assert message == _batch_error(
        "extra_cells.csv",
        "2 record(s) have more cells than the 8 header columns (line 3 has 9, "
        "line 5 has 10); quote values that contain the delimiter",
    )


def test_short_row_padded(tmp_path):
    mart = _load(tmp_path, "short_row.csv")
    assert _quarantine(mart) == [
        (3, "currency", None, "missing required value"),
        (3, "net_revenue", None, "missing required value"),
    ]
    assert _accounting(mart) == [(3, 2, 1)]


def test_empty_lines_skipped(tmp_path):
    mart = _load(tmp_path, "empty_lines.csv")
    assert _quarantine(mart) == [(6, "net_revenue", "bad", "invalid double value")]
    assert _accounting(mart) == [(2, 1, 1)]


# --- columns and keys -------------------------------------------------------------


def test_missing_columns_listed_at_once(tmp_path):
    message = _error(tmp_path, "missing_columns.csv")
    assert message == _batch_error(
        "missing_columns.csv",
        "missing required column(s) date, amount, currency. The file has invoice, "
        "line, customer, product, quantity. Rename the columns in the export or map "
        "them in the source YAML",
    )


def test_duplicate_header_rejected(tmp_path):
    message = _error(tmp_path, "duplicate_header.csv")
    assert message == _batch_error(
        "duplicate_header.csv",
        "header repeats column(s) amount; rename them so that each column name is "
        "unique",
    )


def test_empty_file_rejected(tmp_path):
    message = _error(tmp_path, "empty.csv")
    assert message == _batch_error(
        "empty.csv", "the file is empty; expected a header line"
    )


def test_required_values_blank(tmp_path):
    mart = _load(tmp_path, "required_blank.csv")
    assert _quarantine(mart) == [
        (3, "invoice_id", None, "missing required value"),
        (4, "currency", None, "missing required value"),
    ]
    assert _accounting(mart) == [(3, 1, 2)]


def test_duplicate_key_first_kept(tmp_path):
    mart = _load(tmp_path, "duplicate_key.csv")
    assert _quarantine(mart) == [
        (4, "invoice_id,line", "F1|1", "duplicate key; first seen at line 2")
    ]
    assert _column(mart, "net_revenue") == [10.0, 10.0]


def test_every_problem_of_a_row(tmp_path):
    mart = _load(tmp_path, "several_problems.csv")
    assert _quarantine(mart) == [
        (
            3,
            "currency",
            "EURO",
            "invalid currency code; expected three letters such as EUR",
        ),
        (3, "date", "31/31/2021", "invalid date value"),
        (3, "net_revenue", "ten", "invalid double value"),
    ]
    assert _accounting(mart) == [(3, 2, 1)]


def test_quarantine_keeps_raw_row(tmp_path):
    mart = _load(tmp_path, "several_problems.csv")
    raw = _query(mart, "SELECT DISTINCT raw_row, source_file FROM quarantine")
    assert len(raw) == 1
    row, source_file = raw[0]
    assert source_file == str(FAULTS / "several_problems.csv")
    assert json.loads(row)["net_revenue"] == "ten"


def test_several_problems_in_one_error(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(FAULTS / "dates_ambiguous_order.csv", folder / "a.csv")
    shutil.copy(FAULTS / "missing_columns.csv", folder / "b.csv")
    data = yaml.safe_load((FAULTS / "invoices.yaml").read_text(encoding="utf-8"))
    data["inputs"] = {
        "first": {"format": "csv", "file": "a.csv"},
        "second": {"format": "csv", "file": "b.csv"},
    }
    data["loads"][0]["from"] = "first"
    data["loads"].append({**data["loads"][0], "from": "second"})
    spec = tmp_path / "two.yaml"
    spec.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(IngestError) as caught:
        ingest_source(str(spec), folder, tmp_path / "mart.duckdb")
    message = str(caught.value)
    assert message.startswith("source fault-invoices (two.yaml): 2 problem(s)")
    assert f"{folder / 'a.csv'}: column 'date' (date): every date" in message
    assert f"{folder / 'b.csv'}: missing required column(s) date, amount" in message


# --- returns and currencies --------------------------------------------------------


@pytest.fixture
def returns_mart(tmp_path: Path) -> Path:
    load = {
        "returns": {
            "column": "doc_type",
            "values": ["CN", "Credit Note"],
            "negate": True,
        }
    }
    return _load(tmp_path, "returns_credit_notes.csv", load=load)


def test_credit_notes_negated(returns_mart):
    assert _column(returns_mart, "net_revenue") == [200.0, -50.0, -30.0, -80.0]
    assert _column(returns_mart, "quantity") == [2.0, -1.0, -1.0, -1.0]


def test_credit_notes_flagged(returns_mart):
    assert _column(returns_mart, "is_return") == [False, True, True, True]


def test_sales_apart_from_returns(returns_mart):
    totals = dict(
        _query(
            returns_mart,
            "SELECT is_return, sum(net_revenue) FROM transactions GROUP BY 1",
        )
    )
    assert totals == {False: 200.0, True: -160.0}


def test_currencies_converted(tmp_path):
    mart = _load(tmp_path, "currencies_mixed.csv", rates=True)
    # 100 EUR at 1.20 (January rate), 100 EUR at 1.25 (February), 100 GBP at 1.40.
    assert _column(mart, "net_revenue") == [120.0, 125.0, 140.0, 100.0]
    assert _column(mart, "net_revenue_source") == [100.0, 100.0, 100.0, 100.0]
    assert _column(mart, "currency") == ["EUR", "EUR", "GBP", "USD"]


def test_currencies_total_in_reporting(tmp_path):
    mart = _load(tmp_path, "currencies_mixed.csv", rates=True)
    total = _query(mart, "SELECT sum(net_revenue) FROM transactions")[0][0]
    assert total == pytest.approx(120.0 + 125.0 + 140.0 + 100.0)


def test_missing_rate_quarantined(tmp_path):
    mart = _load(tmp_path, "currencies_missing_rate.csv", rates=True)
    assert _quarantine(mart) == [
        (
            2,
            "currency",
            "EUR",
            "no fx rate from EUR to USD on or before 2020-12-31; load fx_rates for "
            "EUR first",
        ),
        (
            3,
            "currency",
            "JPY",
            "no fx rate from JPY to USD on or before 2021-03-01; load fx_rates for "
            "JPY first",
        ),
    ]
    assert _accounting(mart) == [(3, 1, 2)]


def test_invalid_currency_code(tmp_path):
    mart = _load(tmp_path, "currency_invalid_code.csv")
    reason = "invalid currency code; expected three letters such as EUR"
    assert _quarantine(mart) == [
        (2, "currency", "EURO", reason),
        (3, "currency", "€", reason),
    ]
    assert _column(mart, "currency") == ["USD"]


# --- opportunities -------------------------------------------------------------------


def test_snapshot_duplicate_quarantined(tmp_path):
    mart = _load(tmp_path, "snapshots_duplicated.csv", base="opportunities")
    assert _quarantine(mart) == [
        (
            5,
            "opportunity_id,snapshot_date",
            "O1|2021-02-28",
            "duplicate key; first seen at line 3",
        )
    ]
    assert _accounting(mart, "opportunities") == [(4, 3, 1)]


def test_snapshot_history_kept(tmp_path):
    mart = _load(tmp_path, "snapshots_duplicated.csv", base="opportunities")
    current = _query(
        mart,
        "SELECT opportunity_id, stage, amount FROM opportunities_current ORDER BY 1",
    )
    assert current == [("O1", "Qualify", 1200.0), ("O2", "Prospecting", 500.0)]


def test_snapshot_correction_keeps_last(tmp_path):
    mart = _load(
        tmp_path, "snapshots_corrected.csv", base="opportunities", load={"keep": "last"}
    )
    assert _quarantine(mart) == [
        (
            2,
            "opportunity_id,snapshot_date",
            "O1|2021-02-28",
            "duplicate key; replaced by line 3",
        )
    ]
    assert _column(mart, "amount", "opportunities") == [1500.0, 500.0]


def test_stages_renamed(tmp_path):
    mart = _load(tmp_path, "stages_renamed.csv", base="opportunities")
    rows = _query(mart, "SELECT stage, status FROM opportunities ORDER BY 1")
    assert rows == [("Lost", "lost"), ("Qualify", "open"), ("Won", "won")]


def test_stages_unknown_flagged(tmp_path):
    mart = _load(tmp_path, "stages_unknown.csv", base="opportunities")
    assert _quarantine(mart) == [
        (
            3,
            "stage",
            "Negotiation",
            "unknown stage; add it under stages in opportunities.yaml with its "
            "status (lost, open, won)",
        ),
        (4, "stage", None, "missing required value"),
    ]
    assert _accounting(mart, "opportunities") == [(3, 1, 2)]


# --- every fault file balances ---------------------------------------------------------

LOADABLE = {
    "dates_several_formats.csv": {},
    "dates_day_first.csv": {},
    "dates_excel_serial.csv": {},
    "dates_timezone.csv": {},
    "dates_not_calendar.csv": {},
    "amounts_currency_symbols.csv": {},
    "amounts_thousands.csv": {},
    "amounts_parentheses.csv": {},
    "amounts_trailing_cr.csv": {},
    "amounts_two_negative_markers.csv": {},
    "amounts_decimal_comma_undeclared.csv": {},
    "amounts_not_a_number.csv": {},
    "amounts_bigint_fraction.csv": {},
    "amounts_decimal_comma.csv": EUROPEAN,
    "amounts_trailing_minus.csv": EUROPEAN,
    "encoding_utf8_bom.csv": {},
    "nbsp_in_values.csv": {},
    "line_endings_cr.csv": {},
    "multiline_quoted.csv": {},
    "short_row.csv": {},
    "empty_lines.csv": {},
    "required_blank.csv": {},
    "duplicate_key.csv": {},
    "several_problems.csv": {},
    "currency_invalid_code.csv": {},
}


def test_corpus_has_thirty_faults():
    faulty = [p for p in FAULTS.iterdir() if p.suffix in (".csv", ".tsv")]
    assert len(faulty) - 1 >= 30  # fx_rates.csv contains rates, not a fault


@pytest.mark.parametrize("file", sorted(LOADABLE))
def test_rows_read_balance(tmp_path, file):
    mart = _load(tmp_path, file, **LOADABLE[file])
    (read, loaded, quarantined), *_ = _accounting(mart)
    in_table = _query(mart, "SELECT count(*) FROM transactions")[0][0]
    bad_lines = _query(mart, "SELECT count(DISTINCT line) FROM quarantine")[0][0]
    assert read == loaded + quarantined
    assert loaded == in_table
    assert quarantined == bad_lines


# --- idempotent loads and refresh ----------------------------------------------------------


def test_same_file_twice_skipped(tmp_path):
    mart = _load(tmp_path, "duplicate_key.csv")
    spec = tmp_path / "invoices.yaml"
    reports = ingest_source(str(spec), FAULTS / "duplicate_key.csv", mart)
    assert [type(r) for r in reports] == [SkippedLoad]
    assert str(reports[0]) == (
        f"transactions from {FAULTS / 'duplicate_key.csv'}: skipped, unchanged "
        "since its last load"
    )


def test_same_file_twice_changes_nothing(tmp_path):
    mart = _load(tmp_path, "duplicate_key.csv")
    before = _query(mart, "SELECT * FROM transactions ORDER BY invoice_id, line")
    ingest_source(str(tmp_path / "invoices.yaml"), FAULTS / "duplicate_key.csv", mart)
    after = _query(mart, "SELECT * FROM transactions ORDER BY invoice_id, line")
    assert after == before
    assert _query(mart, "SELECT count(*) FROM quarantine") == [(1,)]


def test_skipped_load_logged(tmp_path):
    mart = _load(tmp_path, "duplicate_key.csv")
    ingest_source(str(tmp_path / "invoices.yaml"), FAULTS / "duplicate_key.csv", mart)
    with connect(mart, read_only=True) as con:
        history = load_history(con)
    assert history["status"].tolist() == ["current", "skipped"]
    assert history["rows_read"].tolist() == [3, 0]
    assert history["checksum"].nunique() == 1


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(FAULTS / "dates_day_first.csv", export / "2021-02.csv")
    # Each month has its own invoice numbers, so keys do not collide.
    march = (FAULTS / "amounts_trailing_cr.csv").read_bytes().replace(b"F1,", b"F3,")
    (export / "2021-03.csv").write_bytes(march)
    return export


def _refresh(tmp_path: Path, folder: Path) -> list:
    spec = tmp_path / "invoices.yaml"
    if not spec.exists():
        _spec(tmp_path, "invoices")
    return ingest_source(str(spec), folder, tmp_path / "mart.duckdb")


def test_refresh_loads_each_file(tmp_path, folder):
    reports = _refresh(tmp_path, folder)
    assert [(Path(r.source_file).name, r.rows_loaded) for r in reports] == [
        ("2021-02.csv", 2),
        ("2021-03.csv", 3),
    ]


def test_refresh_loads_only_new_file(tmp_path, folder):
    _refresh(tmp_path, folder)
    (folder / "2021-04.csv").write_bytes(
        (FAULTS / "duplicate_key.csv").read_bytes().replace(b"F1,", b"F4,")
    )
    reports = _refresh(tmp_path, folder)
    kinds = [(Path(r.source_file).name, type(r).__name__) for r in reports]
    assert kinds == [
        ("2021-02.csv", "SkippedLoad"),
        ("2021-03.csv", "SkippedLoad"),
        ("2021-04.csv", "LoadReport"),
    ]


def test_refresh_replaces_changed_file(tmp_path, folder):
    _refresh(tmp_path, folder)
    changed = folder / "2021-03.csv"
    changed.write_bytes(changed.read_bytes().replace(b"20.00 DR", b"25.00"))
    _refresh(tmp_path, folder)
    rows = _query(
        tmp_path / "mart.duckdb",
        "SELECT line, net_revenue FROM transactions WHERE source_file = ? ORDER BY 1",
        [str(changed)],
    )
    assert rows == [(1, -150.0), (2, -75.5), (3, 25.0)]


def test_refresh_keeps_other_files(tmp_path, folder):
    _refresh(tmp_path, folder)
    changed = folder / "2021-03.csv"
    changed.write_bytes(changed.read_bytes().replace(b"20.00 DR", b"25.00"))
    _refresh(tmp_path, folder)
    count = _query(tmp_path / "mart.duckdb", "SELECT count(*) FROM transactions")
    assert count == [(5,)]


def test_refresh_history_statuses(tmp_path, folder):
    _refresh(tmp_path, folder)
    changed = folder / "2021-03.csv"
    changed.write_bytes(changed.read_bytes().replace(b"20.00 DR", b"25.00"))
    _refresh(tmp_path, folder)
    with connect(tmp_path / "mart.duckdb", read_only=True) as con:
        history = load_history(con)
    statuses = [
        (Path(f).name, s)
        for f, s in zip(history["source_file"], history["status"], strict=True)
    ]
    assert statuses == [
        ("2021-02.csv", "current"),
        ("2021-03.csv", "replaced"),
        ("2021-02.csv", "skipped"),
        ("2021-03.csv", "current"),
    ]


def test_refresh_copy_skipped(tmp_path, folder):
    _refresh(tmp_path, folder)
    shutil.copy(folder / "2021-02.csv", folder / "2021-02 copy.csv")
    reports = _refresh(tmp_path, folder)
    copy = [r for r in reports if r.source_file.endswith("copy.csv")]
    assert str(copy[0]) == (
        f"transactions from {folder / '2021-02 copy.csv'}: skipped, same content "
        f"as {folder / '2021-02.csv'}, already loaded"
    )
