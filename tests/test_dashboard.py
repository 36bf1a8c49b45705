"""The dashboard's widgets on a real demo mart, without a browser.

Tile numbers are checked against SQL written here over the canonical tables
(the target, whose level rules live in cockpit.kpi, comes from kpi_values).
"""

from __future__ import annotations

import html
import json
import logging
import shutil
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from cockpit.dashboard import (
    FRIENDLY_ERROR,
    TILE_KPIS,
    Dashboard,
    dashboard_view,
    figure_output,
    log_to_server_console,
    read_as_of,
    tile_html,
)
from cockpit.errors import MartError
from cockpit.kpi import kpi_values
from cockpit.mart import connect, load_frame, set_meta
from cockpit.scope import Scope

AS_OF = date(2026, 9, 30)
YEAR_START = date(2026, 1, 1)
YEAR_END = date(2026, 12, 31)


@pytest.fixture(scope="module")
def mart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cockpit.demo import build_demo

    path = tmp_path_factory.mktemp("dashboard") / "demo.duckdb"
    build_demo(path, scale=0.2)
    return path


def sql_filter(region: str | None, unit: str | None) -> tuple[str, list]:
    return (
        "(? IS NULL OR region = ?) AND (? IS NULL OR business_unit = ?)",
        [region, region, unit, unit],
    )


def hand_values(mart: Path, region: str | None = None, unit: str | None = None):
    """Tile values by plain SQL, year to date up to AS_OF."""
    where, params = sql_filter(region, unit)
    with connect(mart, read_only=True) as con:
        revenue, cost = con.execute(
            f"""SELECT sum(net_revenue), sum(cost) FROM transactions
            WHERE date BETWEEN ? AND ? AND {where}""",
            [YEAR_START, AS_OF, *params],
        ).fetchone()
        won_value, won, lost = con.execute(
            f"""
            WITH state AS (
                SELECT * FROM opportunities WHERE snapshot_date <= ?
                QUALIFY snapshot_date = max(snapshot_date)
                    OVER (PARTITION BY opportunity_id)
            )
            SELECT sum(amount) FILTER (WHERE status = 'won'),
                   count(*) FILTER (WHERE status = 'won'),
                   count(*) FILTER (WHERE status = 'lost')
            FROM state WHERE closed_date BETWEEN ? AND ? AND {where}
            """,
            [AS_OF, YEAR_START, AS_OF, *params],
        ).fetchone()
        open_pipeline = con.execute(
            f"""
            SELECT sum(amount) FROM opportunities
            WHERE status = 'open' AND {where} AND snapshot_date = (
                SELECT max(snapshot_date) FROM opportunities WHERE snapshot_date <= ?
            )
            """,
            [*params, AS_OF],
        ).fetchone()[0]
        scope = Scope(region=region, business_unit=unit)
        target = kpi_values(
            con, ["target"], scope=scope, start=YEAR_START, end=YEAR_END, as_of=AS_OF
        )["target"]
    return {
        "revenue": revenue,
        "margin_pct": (revenue - cost) / revenue,
        "attainment_pct": revenue / target,
        "won_value": won_value,
        "win_rate": won / (won + lost),
        "open_pipeline": open_pipeline,
    }


def hand_monthly(mart: Path, region: str | None = None) -> pd.Series:
    where, params = sql_filter(region, None)
    with connect(mart, read_only=True) as con:
        frame = con.execute(
            f"""SELECT strftime(date, '%Y-%m') AS month, sum(net_revenue) AS revenue
            FROM transactions WHERE date BETWEEN ? AND ? AND {where}
            GROUP BY 1 ORDER BY 1""",
            [YEAR_START, AS_OF, *params],
        ).df()
    return frame.set_index("month")["revenue"]


@pytest.fixture(scope="module")
def dashboard(mart: Path) -> Dashboard:
    return Dashboard(mart)


def test_as_of_from_mart(dashboard):
    assert dashboard.as_of == AS_OF


def test_tiles_match_sql(dashboard, mart):
    dashboard.region.value = ""
    dashboard.business_unit.value = ""
    expected = hand_values(mart)
    for name, value in expected.items():
        assert dashboard.values[name] == pytest.approx(value, rel=1e-9), name


def test_tile_texts_formatted(dashboard, mart):
    dashboard.region.value = ""
    dashboard.business_unit.value = ""
    expected = hand_values(mart)
    assert dashboard.texts["revenue"] == f"EUR {round(expected['revenue']):,}"
    assert dashboard.texts["win_rate"] == f"{expected['win_rate'] * 100:.1f}%"


def test_every_tile_has_text(dashboard):
    assert sorted(dashboard.texts) == sorted(TILE_KPIS)
    assert "n/a" not in dashboard.texts.values()


def test_region_change_recomputes(dashboard, mart):
    dashboard.business_unit.value = ""
    dashboard.region.value = "North"
    expected = hand_values(mart, region="North")
    for name, value in expected.items():
        assert dashboard.values[name] == pytest.approx(value, rel=1e-9), name
    assert "region North" in dashboard.header.value


def test_unit_change_combines_with_region(dashboard, mart):
    dashboard.region.value = "South"
    dashboard.business_unit.value = "Equipment"
    expected = hand_values(mart, region="South", unit="Equipment")
    for name, value in expected.items():
        assert dashboard.values[name] == pytest.approx(value, rel=1e-9), name


def test_region_options_from_mart(dashboard, mart):
    with connect(mart, read_only=True) as con:
        regions = [
            row[0]
            for row in con.execute(
                "SELECT DISTINCT region FROM transactions ORDER BY 1"
            ).fetchall()
        ]
    assert [value for _, value in dashboard.region.options] == ["", *regions]


def test_monthly_revenue_matches_sql(dashboard, mart):
    dashboard.business_unit.value = ""
    dashboard.region.value = "West"
    expected = hand_monthly(mart, region="West")
    monthly = dashboard.monthly.set_index("month")
    assert list(monthly.index) == [f"2026-{m:02d}" for m in range(1, 13)]
    for month, value in expected.items():
        assert monthly.loc[month, "revenue"] == pytest.approx(value, rel=1e-9), month
    assert monthly.loc["2026-10":, "revenue"].isna().all()


def test_monthly_target_is_twelfth(dashboard, mart):
    dashboard.business_unit.value = ""
    dashboard.region.value = "West"
    with connect(mart, read_only=True) as con:
        target = kpi_values(
            con,
            ["target"],
            scope=Scope(region="West"),
            start=YEAR_START,
            end=YEAR_END,
            as_of=AS_OF,
        )["target"]
    assert np.allclose(dashboard.monthly["target"], target / 12)


def test_chart_output_is_plotly_json(dashboard):
    output = dashboard.chart.outputs[0]
    spec = output["data"]["application/vnd.plotly.v1+json"]
    assert spec["data"][0]["type"] == "bar"
    assert json.dumps(output)


def test_fixed_region_disables_dropdown(mart):
    view = Dashboard(mart, Scope(region="East"))
    assert view.region.disabled
    assert [value for _, value in view.region.options] == ["East"]
    assert view.values["revenue"] == pytest.approx(
        hand_values(mart, region="East")["revenue"], rel=1e-9
    )


def test_fixed_region_keeps_scope(mart):
    view = Dashboard(mart, Scope(region="East"))
    view.business_unit.value = "Services"
    assert view.selected_scope() == Scope(region="East", business_unit="Services")


def test_header_escapes_names(mart):
    name = "<img src=x onerror=alert(1)>"
    view = Dashboard(mart, Scope(region=name))
    assert html.escape(name) in view.header.value
    assert "<img" not in view.header.value


def test_tile_escapes_text():
    markup = tile_html("revenue", "<b>1</b>", note="a & b")
    assert "&lt;b&gt;1&lt;/b&gt;" in markup
    assert "a &amp; b" in markup


def test_tile_has_data_attribute():
    assert 'class="kpi-tile" data-kpi="win_rate"' in tile_html("win_rate", "1%")


def test_figure_output_carries_plotly_mime():
    figure = go.Figure(go.Bar(x=["2026-01"], y=[np.float64(1.5)]))
    output = figure_output(figure)
    assert output["output_type"] == "display_data"
    assert "application/vnd.plotly.v1+json" in output["data"]


def test_missing_mart_shows_friendly_message(tmp_path):
    missing = tmp_path / "nowhere.duckdb"
    widget = dashboard_view(missing)
    assert html.escape(FRIENDLY_ERROR) in widget.value
    assert str(missing) not in widget.value


def test_refresh_error_blanks_tiles(mart, tmp_path):
    copy = tmp_path / "copy.duckdb"
    shutil.copy(mart, copy)
    view = Dashboard(copy)
    copy.unlink()
    view.region.value = "North"
    assert set(view.texts.values()) == {"n/a"}
    assert html.escape(FRIENDLY_ERROR) in view.status.value
    assert view.chart.outputs == ()


def test_bad_as_of_raises(tmp_path):
    path = tmp_path / "bad.duckdb"
    with connect(path) as con:
        set_meta(con, {"as_of": "end of September"})
        with pytest.raises(MartError, match="end of September"):
            read_as_of(con)


def test_as_of_falls_back_to_last_invoice(tmp_path):
    path = tmp_path / "lines.duckdb"
    lines = pd.DataFrame(
        {
            "invoice_id": ["A", "B"],
            "line": [1, 1],
            "date": ["2025-03-01", "2025-04-15"],
            "net_revenue": [10.0, 20.0],
            "currency": ["EUR", "EUR"],
        }
    )
    with connect(path) as con:
        load_frame(con, "transactions", lines, source="test", source_file="lines.csv")
        assert read_as_of(con) == date(2025, 4, 15)


def test_empty_mart_raises(tmp_path):
    with connect(tmp_path / "empty.duckdb") as con, pytest.raises(MartError):
        read_as_of(con)


@pytest.fixture
def cockpit_logger():
    """The "cockpit" logger, with its handlers and level restored afterwards."""
    package_logger = logging.getLogger("cockpit")
    handlers, level = list(package_logger.handlers), package_logger.level
    yield package_logger
    package_logger.handlers[:] = handlers
    package_logger.setLevel(level)


def test_server_console_handler_added_once(cockpit_logger):
    before = len(cockpit_logger.handlers)
    log_to_server_console()
    log_to_server_console()
    added = cockpit_logger.handlers[before:]
    assert len(added) == 1
    assert added[0].stream is sys.__stderr__


def test_dashboard_view_outside_kernel_keeps_logging(cockpit_logger, tmp_path):
    handlers = list(cockpit_logger.handlers)
    dashboard_view(tmp_path / "nowhere.duckdb")
    assert cockpit_logger.handlers == handlers


def test_unexpected_error_logs_traceback(mart, monkeypatch, caplog):
    view = Dashboard(mart)

    def broken(*args, **kwargs):
        raise RuntimeError("chart data broke")

    monkeypatch.setattr("cockpit.dashboard.monthly_revenue_vs_target", broken)
    view.region.value = "East"
    assert html.escape(FRIENDLY_ERROR) in view.status.value
    assert "chart data broke" not in view.status.value
    assert "RuntimeError: chart data broke" in caplog.text
