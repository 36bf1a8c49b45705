"""Macro loader: indicator names, period dates, values and spans."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest

from cockpit.errors import IngestError
from cockpit.ingest import ingest_source
from cockpit.mart import connect

#: Wide files: (file, column, indicator).
WIDE = [
    ("INDPRO.csv", "INDPRO", "indpro"),
    ("UNRATE.csv", "UNRATE", "unrate"),
    ("CPILFESL.csv", "CPILFESL", "core_cpi_index"),
    ("PPIACO.csv", "PPIACO", "ppi_index"),
    ("BUSLOANS.csv", "BUSLOANS", "business_loans"),
    ("cpi-us_cpiai.csv", "Index", "cpi_index"),
    ("cpi-us_cpiai.csv", "Inflation", "cpi_inflation"),
    ("bond-yields-us-10y_monthly.csv", "Rate", "us_10y_yield"),
    ("oil-prices_brent-monthly.csv", "Price", "brent_price"),
    ("gdp-us_quarter.csv", "level-current", "gdp_current"),
    ("gdp-us_quarter.csv", "level-chained", "gdp_chained"),
    ("gdp-us_quarter.csv", "change-current", "gdp_growth_current"),
    ("gdp-us_quarter.csv", "change-chained", "gdp_growth_chained"),
]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def folder(shared_data: Path) -> Path:
    return shared_data / "macro"


@pytest.fixture(scope="module")
def loaded(folder: Path, tmp_path_factory) -> tuple[Path, list[str]]:
    path = tmp_path_factory.mktemp("macro") / "mart.duckdb"
    handler = _Records()
    logger = logging.getLogger("cockpit.ingest.macro")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        ingest_source("macro", folder, path)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    return path, handler.messages


@pytest.fixture(scope="module")
def mart(loaded) -> Path:
    return loaded[0]


def _query(mart: Path, sql: str, params=None):
    with connect(mart, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def _series(mart: Path, indicator: str) -> pd.Series:
    rows = _query(
        mart,
        "SELECT date, value FROM external WHERE indicator = ? ORDER BY date",
        [indicator],
    )
    return pd.Series([v for _, v in rows], index=[pd.Timestamp(d) for d, _ in rows])


@pytest.mark.parametrize(("file", "column", "indicator"), WIDE)
def test_wide_values_match_pandas(mart, folder, file, column, indicator):
    raw = pd.read_csv(folder / file)
    date_column = raw.columns[0]
    frequency = "Q" if "quarter" in file else "M"
    expected = pd.Series(
        raw[column].values,
        index=pd.to_datetime(raw[date_column]).dt.to_period(frequency).dt.start_time,
    ).dropna()
    loaded = _series(mart, indicator)
    assert list(loaded.index) == list(expected.index)
    assert loaded.tolist() == pytest.approx(expected.tolist())


def test_fx_countries_match_pandas(mart, folder):
    raw = pd.read_csv(folder / "exchange-rates_monthly.csv")
    expected = {
        "fx_" + country.lower().replace(" ", "_"): n
        for country, n in raw["Country"].value_counts().items()
    }
    loaded = dict(
        _query(
            mart,
            "SELECT indicator, count(*) FROM external "
            "WHERE indicator LIKE 'fx_%' GROUP BY 1",
        )
    )
    assert loaded == expected


def test_fx_euro_values(mart, folder):
    raw = pd.read_csv(folder / "exchange-rates_monthly.csv")
    euro = raw[raw["Country"] == "Euro"]
    loaded = _series(mart, "fx_euro")
    assert loaded.tolist() == pytest.approx(euro["Exchange rate"].tolist())


def test_fx_two_word_country(mart):
    count = _query(
        mart, "SELECT count(*) FROM external WHERE indicator = 'fx_new_zealand'"
    )[0][0]
    assert count == 666


def test_brent_moved_to_month_start(mart):
    first = _query(
        mart,
        "SELECT min(date) FROM external WHERE indicator = 'brent_price'",
    )[0][0]
    assert first.isoformat() == "1987-05-01"


def test_dates_first_of_month(mart):
    days = _query(mart, "SELECT DISTINCT day(date) FROM external")
    assert days == [(1,)]


def test_gdp_dates_quarter_start(mart):
    months = _query(
        mart,
        "SELECT DISTINCT month(date) FROM external "
        "WHERE indicator = 'gdp_current' ORDER BY 1",
    )
    assert months == [(1,), (4,), (7,), (10,)]


def test_region_all(mart):
    assert _query(mart, "SELECT DISTINCT region FROM external") == [("ALL",)]


def test_source_is_file_name(mart):
    sources = _query(
        mart, "SELECT DISTINCT source FROM external WHERE indicator = 'unrate'"
    )
    assert sources == [("UNRATE.csv",)]


def test_load_log_balanced(mart):
    rows = _query(mart, "SELECT rows_read, rows_loaded, rows_quarantined FROM load_log")
    assert len(rows) == 14
    for read, loaded, quarantined in rows:
        assert read == loaded + quarantined


def test_blank_inflation_quarantined(mart):
    rows = _query(mart, "SELECT source_file, line, column_name, reason FROM quarantine")
    assert len(rows) == 1
    source_file, line, column, reason = rows[0]
    assert source_file.endswith("cpi-us_cpiai.csv")
    assert (line, column, reason) == (2, "value", "missing required value")


def test_span_logged(loaded):
    _, messages = loaded
    expected = "indicator unrate from UNRATE.csv: 866 values, 1948-01-01 to 2020-02-01"
    assert expected in messages


def test_every_indicator_logged(loaded):
    mart, messages = loaded
    indicators = [
        row[0] for row in _query(mart, "SELECT DISTINCT indicator FROM external")
    ]
    for indicator in indicators:
        assert any(m.startswith(f"indicator {indicator} from") for m in messages), (
            indicator
        )


def test_as_of_left_alone(mart):
    keys = [row[0] for row in _query(mart, "SELECT key FROM mart_meta")]
    assert "as_of" not in keys


# --- files written here ------------------------------------------------------


def test_known_file_missing_column(tmp_path):
    folder = tmp_path / "macro"
    folder.mkdir()
    (folder / "gdp-us_quarter.csv").write_text("date,level-current\n2020-01-01,1\n")
    with pytest.raises(IngestError) as caught:
        ingest_source("macro", folder, tmp_path / "mart.duckdb")
    message = str(caught.value)
    for column in ("level-chained", "change-current", "change-chained"):
        assert column in message, column
    assert "gdp-us_quarter.csv" in message


def test_unknown_file_loaded(tmp_path):
    folder = tmp_path / "macro"
    folder.mkdir()
    (folder / "Freight Index.csv").write_text(
        "Date,Rail,Road\n2020-01-15,1.5,2\n2020-02-15,1.6,x\nsoon,1.7,3\n"
    )
    mart = tmp_path / "mart.duckdb"
    ingest_source("macro", folder, mart)
    rows = _query(
        mart, "SELECT indicator, date, value FROM external ORDER BY indicator, date"
    )
    assert [(i, d.isoformat(), v) for i, d, v in rows] == [
        ("freight_index_rail", "2020-01-01", 1.5),
        ("freight_index_rail", "2020-02-01", 1.6),
        ("freight_index_road", "2020-01-01", 2.0),
    ]


def test_unknown_file_bad_rows(tmp_path):
    folder = tmp_path / "macro"
    folder.mkdir()
    (folder / "freight.csv").write_text(
        "Date,Rail,Road\n2020-01-15,1.5,2\n2020-02-15,1.6,x\nsoon,1.7,3\n"
    )
    mart = tmp_path / "mart.duckdb"
    ingest_source("macro", folder, mart)
    rows = _query(
        mart, "SELECT line, column_name, value, reason FROM quarantine ORDER BY line, 2"
    )
    assert rows == [
        (3, "value", "x", "invalid double value"),
        (4, "date", "soon", "invalid date value"),
        (4, "date", "soon", "invalid date value"),
    ]


def test_unknown_file_without_date(tmp_path):
    folder = tmp_path / "macro"
    folder.mkdir()
    (folder / "notes.csv").write_text("when,value\n2020-01-01,1\n")
    with pytest.raises(IngestError, match="date"):
        ingest_source("macro", folder, tmp_path / "mart.duckdb")


def test_empty_folder_rejected(tmp_path):
    folder = tmp_path / "macro"
    folder.mkdir()
    with pytest.raises(IngestError, match=r"no \.csv"):
        ingest_source("macro", folder, tmp_path / "mart.duckdb")


def test_second_load_is_skipped(folder, tmp_path):
    mart = tmp_path / "macro.duckdb"
    first = ingest_source("macro", folder, mart)
    second = ingest_source("macro", folder, mart)
    with connect(mart, read_only=True) as con:
        rows = con.execute("SELECT count(*) FROM external").fetchone()[0]
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    assert rows == sum(report.rows_loaded for report in first)
    assert all(report.rows_read == 0 for report in second)
    assert quarantined == sum(report.rows_quarantined for report in first)
