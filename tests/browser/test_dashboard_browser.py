"""The Voilà dashboard in Chromium: tiles, chart, filters, hidden code, loopback.

Expected tile texts are computed here from the same mart with kpi_values and
format_value. Revenue and the monthly chart are also checked against plain
SQL sums over the invoice lines.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cockpit.kpi import KPIS, format_value, kpi_values
from cockpit.mart import connect, get_meta
from cockpit.scope import Scope

from .conftest import ARTIFACTS, SERVER_TIMEOUT

pytestmark = pytest.mark.browser

TILES = (
    "revenue",
    "margin_pct",
    "attainment_pct",
    "won_value",
    "win_rate",
    "open_pipeline",
    "weighted_pipeline",
)
AS_OF = date(2026, 9, 30)
YEAR_START = date(2026, 1, 1)
YEAR_END = date(2026, 12, 31)
TIMEOUT_MS = SERVER_TIMEOUT * 1000
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
CODE_FRAGMENTS = ("dashboard_view(", "COCKPIT_MART", "import os", "mart_path =")

#: JavaScript that is true once every tile shows the given texts.
_TILES_SHOW = """
(expected) => Object.entries(expected).every(([name, text]) => {
  const el = document.querySelector(`.kpi-tile[data-kpi="${name}"] .kpi-value`);
  return el !== null && el.textContent.trim() === text;
})
"""

#: JavaScript that is true once every tile has a computed value.
_TILES_FILLED = """
(names) => names.every((name) => {
  const el = document.querySelector(`.kpi-tile[data-kpi="${name}"] .kpi-value`);
  return el !== null && el.textContent.trim() !== '' && el.textContent.trim() !== '…';
})
"""

#: JavaScript that is true once the dashboard's status line is empty.
_IDLE = """
() => {
  const status = document.querySelector('.cockpit-status');
  return status !== null && status.textContent.trim() === '';
}
"""


def expected_texts(mart: Path, scope: Scope) -> dict[str, str]:
    """Tile texts for `scope`: year to date up to the demo's as-of date."""
    with connect(mart, read_only=True) as con:
        currency = get_meta(con).get("currency", "EUR")
        values = kpi_values(
            con,
            [name for name in TILES if name != "attainment_pct"],
            scope=scope,
            start=YEAR_START,
            end=AS_OF,
            as_of=AS_OF,
        )
        target = kpi_values(
            con, ["target"], scope=scope, start=YEAR_START, end=YEAR_END, as_of=AS_OF
        )["target"]
    values["attainment_pct"] = values["revenue"] / target
    return {
        name: format_value(values[name], KPIS[name].unit, currency=currency)
        for name in TILES
    }


def sql_revenue(mart: Path, region: str | None = None) -> dict[str, float]:
    """Net revenue per month of 2026 up to the as-of date, by plain SQL."""
    with connect(mart, read_only=True) as con:
        rows = con.execute(
            """
            SELECT strftime(date, '%Y-%m'), sum(net_revenue) FROM transactions
            WHERE date BETWEEN ? AND ? AND (? IS NULL OR region = ?)
            GROUP BY 1 ORDER BY 1
            """,
            [YEAR_START, AS_OF, region, region],
        ).fetchall()
    return dict(rows)


def tile_texts(page) -> dict[str, str]:
    """Texts the page's tiles show now."""
    return {
        name: page.locator(f'.kpi-tile[data-kpi="{name}"] .kpi-value')
        .inner_text()
        .strip()
        for name in TILES
    }


def chart_revenue(page) -> dict[str, float]:
    """Month and revenue of the chart's bar trace, as plotly.js drew them.

    `_fullData` holds the decoded arrays; `data` keeps plotly's base64 form.
    """
    data = page.evaluate(
        """() => {
          const plot = document.querySelector('.cockpit-chart .js-plotly-plot');
          const bars = plot._fullData.find((trace) => trace.type === 'bar');
          return {x: Array.from(bars.x), y: Array.from(bars.y)};
        }"""
    )
    return {
        month: value
        for month, value in zip(data["x"], data["y"], strict=True)
        if value is not None and not math.isnan(value)
    }


def is_loopback(url: str) -> bool:
    """True for data:, blob: and about: URLs and for URLs whose host is loopback."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about"):
        return True
    return parts.hostname in LOOPBACK


@dataclass
class LoadedPage:
    """The dashboard page after its tiles filled, with what it requested."""

    page: object
    requests: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def wait_for_tiles(self, expected: dict[str, str]) -> float:
        """Wait until the tiles show `expected`; return the seconds waited."""
        start = time.monotonic()
        self.page.wait_for_function(_TILES_SHOW, arg=expected, timeout=TIMEOUT_MS)
        return time.monotonic() - start

    def wait_until_idle(self) -> None:
        """Wait until the status line no longer shows that the page is updating."""
        self.page.wait_for_function(_IDLE, timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def loaded(browser_context, dashboard_server, save_screenshot):
    """The dashboard opened in Chromium, once per module, tiles filled."""
    page = browser_context.new_page()
    result = LoadedPage(page)
    page.on("request", lambda request: result.requests.append(request.url))
    page.on("websocket", lambda socket: result.requests.append(socket.url))
    start = time.monotonic()
    page.goto(dashboard_server.url, wait_until="commit", timeout=TIMEOUT_MS)
    page.wait_for_function(_TILES_FILLED, arg=list(TILES), timeout=TIMEOUT_MS)
    result.timings["navigation_to_tiles_s"] = time.monotonic() - start
    page.wait_for_selector(".cockpit-chart .js-plotly-plot", timeout=TIMEOUT_MS)
    result.timings["navigation_to_chart_s"] = time.monotonic() - start
    result.wait_until_idle()
    save_screenshot(page, "01-dashboard-loaded")
    yield result
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    timings = {name: round(value, 2) for name, value in result.timings.items()}
    (ARTIFACTS / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(f"dashboard timings: {timings}")
    page.close()


def test_tiles_show_company_values(loaded, demo_mart):
    expected = expected_texts(demo_mart, Scope())
    shown = tile_texts(loaded.page)
    for name in TILES:
        assert shown[name] == expected[name], name


def test_revenue_tile_matches_sql(loaded, demo_mart):
    total = sum(sql_revenue(demo_mart).values())
    assert tile_texts(loaded.page)["revenue"] == f"EUR {round(total):,}"


def test_as_of_date_shown(loaded):
    as_of = loaded.page.locator(".as-of")
    assert as_of.get_attribute("data-as-of") == AS_OF.isoformat()
    assert "30 Sep 2026" in as_of.inner_text()


def test_chart_bars_match_sql(loaded, demo_mart):
    expected = sql_revenue(demo_mart)
    shown = chart_revenue(loaded.page)
    assert sorted(shown) == sorted(expected)
    for month, value in expected.items():
        assert shown[month] == pytest.approx(value, rel=1e-9), month


def test_chart_title_names_year(loaded):
    title = loaded.page.locator(".cockpit-chart .gtitle").text_content()
    assert "2026" in title


def test_page_has_no_code(loaded):
    html = loaded.page.content()
    for fragment in CODE_FRAGMENTS:
        assert fragment not in html, fragment
    assert loaded.page.locator(".jp-InputArea").count() == 0
    assert "Traceback" not in html


def test_region_filter_updates_tiles(loaded, demo_mart, save_screenshot):
    company = expected_texts(demo_mart, Scope())
    north = expected_texts(demo_mart, Scope(region="North"))
    assert north["revenue"] != company["revenue"]

    start = time.monotonic()
    loaded.page.select_option(".filter-region select", label="North")
    loaded.timings["region_change_to_tiles_s"] = loaded.wait_for_tiles(north)
    loaded.wait_until_idle()
    loaded.timings["region_change_to_idle_s"] = time.monotonic() - start
    save_screenshot(loaded.page, "02-region-north")

    shown = tile_texts(loaded.page)
    for name in TILES:
        assert shown[name] == north[name], name
    assert "region North" in loaded.page.locator(".cockpit-header").inner_text()


def test_region_filter_updates_chart(loaded, demo_mart):
    loaded.page.select_option(".filter-region select", label="North")
    loaded.wait_for_tiles(expected_texts(demo_mart, Scope(region="North")))
    expected = sql_revenue(demo_mart, region="North")
    loaded.page.wait_for_function(
        """(january) => {
          const plot = document.querySelector('.cockpit-chart .js-plotly-plot');
          const bars = plot && plot._fullData.find((trace) => trace.type === 'bar');
          return bars && Math.abs(Array.from(bars.y)[0] - january) < 0.01;
        }""",
        arg=expected["2026-01"],
        timeout=TIMEOUT_MS,
    )
    shown = chart_revenue(loaded.page)
    for month, value in expected.items():
        assert shown[month] == pytest.approx(value, rel=1e-9), month


def test_unit_filter_narrows_region(loaded, demo_mart, save_screenshot):
    loaded.page.select_option(".filter-region select", label="North")
    expected = expected_texts(
        demo_mart, Scope(region="North", business_unit="Services")
    )
    start = time.monotonic()
    loaded.page.select_option(".filter-business-unit select", label="Services")
    loaded.wait_for_tiles(expected)
    loaded.timings["unit_change_to_tiles_s"] = time.monotonic() - start
    loaded.wait_until_idle()
    save_screenshot(loaded.page, "03-north-services")
    shown = tile_texts(loaded.page)
    for name in TILES:
        assert shown[name] == expected[name], name


def test_requests_stay_on_loopback(loaded):
    outside = [url for url in loaded.requests if not is_loopback(url)]
    assert loaded.requests
    assert outside == []
