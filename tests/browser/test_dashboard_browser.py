"""Every view in Chromium shows the numbers of the library, for each viewer level.

Expected tile texts come from kpi_values and project_attainment on the mart
file (conftest.expected_tiles); drill-down rows from compute_kpi; the huddle
from build_huddle; the bonus from bonus_statement. One Voilà server serves
the whole module, and each viewer has a browser context of their own.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import pytest

from cockpit.huddle import build_huddle
from cockpit.incentives import bonus_statement, load_plans
from cockpit.kpi import compute_kpi, format_value
from cockpit.kpi_periods import resolve_period
from cockpit.mart import connect
from cockpit.scope import Scope
from cockpit.target_log import in_force

from .conftest import (
    ARTIFACTS,
    AS_OF,
    TILES,
    TIMEOUT_MS,
    expected_tiles,
    open_dashboard,
    tile_texts,
    wait_idle,
    wait_tiles,
)

pytestmark = pytest.mark.browser

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
CODE_FRAGMENTS = ("open_dashboard(", "prepare_dashboard(", "COCKPIT_MART", "import os")
TIMINGS: dict[str, float] = {}


def rep_name(mart, rep_id: str) -> str:
    with connect(mart, read_only=True) as con:
        return con.execute(
            "SELECT name FROM reps WHERE rep_id = ?", [rep_id]
        ).fetchone()[0]


def click_drill(page, label: str) -> None:
    page.locator("button.drill-name", has_text=label).first.click()


def click_tab(page, title: str) -> None:
    page.locator(".lm-TabBar-tab", has_text=title).first.click()


@pytest.fixture(scope="module")
def ceo_page(contexts, dashboard_server, save_screenshot):
    """The CEO's dashboard, opened once per module."""
    requests: list[str] = []
    context = contexts("ceo")
    context.on("request", lambda request: requests.append(request.url))
    start = time.monotonic()
    page = open_dashboard(context, dashboard_server.page_url("ceo"))
    TIMINGS["ceo_navigation_to_tiles_s"] = time.monotonic() - start
    wait_idle(page)
    save_screenshot(page, "views-01-company")
    page.requests = requests
    yield page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "timings-views.json").write_text(
        json.dumps({k: round(v, 2) for k, v in TIMINGS.items()}, indent=2) + "\n"
    )
    page.close()


def test_company_tiles_match_kpis(ceo_page, demo_mart):
    expected = expected_tiles(demo_mart, Scope())
    wait_tiles(ceo_page, expected)
    shown = tile_texts(ceo_page)
    for name in TILES:
        assert shown[name] == expected[name], name


def test_as_of_shown(ceo_page):
    as_of = ceo_page.locator(".as-of")
    assert as_of.get_attribute("data-as-of") == AS_OF.isoformat()
    assert "30 Sep 2026" in as_of.inner_text()


def test_region_rows_match_compute_kpi(ceo_page, demo_mart):
    with connect(demo_mart, read_only=True) as con:
        revenue = compute_kpi(
            con,
            "revenue",
            by=("region",),
            period=resolve_period("year", AS_OF),
            as_of=AS_OF,
        )
    rows = ceo_page.locator(".cockpit-drill button.drill-name")
    shown = sorted(rows.all_inner_texts())
    assert shown == sorted(revenue["region"])
    cells = ceo_page.locator(".cockpit-drill .drill-cell").all_inner_texts()
    for value in revenue["revenue"]:
        assert format_value(value, "currency") in cells


def test_page_has_no_code(ceo_page):
    html = ceo_page.content()
    for fragment in CODE_FRAGMENTS:
        assert fragment not in html, fragment
    assert ceo_page.locator(".jp-InputArea").count() == 0
    assert "Traceback" not in html


def test_drill_down_and_back(ceo_page, demo_mart, save_screenshot):
    page = ceo_page
    click_drill(page, "North")
    wait_tiles(page, expected_tiles(demo_mart, Scope(region="North")))
    wait_idle(page)
    save_screenshot(page, "views-02-drill-region")
    assert "North" in page.locator(".cockpit-breadcrumb").inner_text()

    click_drill(page, "North-1")
    team = Scope(region="North", team="North-1")
    wait_tiles(page, expected_tiles(demo_mart, team))
    wait_idle(page)
    save_screenshot(page, "views-03-drill-team")

    seller = rep_name(demo_mart, "REP-002")
    click_drill(page, seller)
    wait_tiles(
        page,
        expected_tiles(
            demo_mart, Scope(region="North", team="North-1", rep_id="REP-002")
        ),
    )
    wait_idle(page)
    assert page.locator(".cockpit-details table").count() == 2
    save_screenshot(page, "views-04-drill-seller")
    assert page.locator(".cockpit-breadcrumb").inner_text().count("›") == 3

    page.locator("button.crumb-1").click()
    wait_tiles(page, expected_tiles(demo_mart, Scope(region="North")))
    page.locator("button.crumb-0").click()
    wait_tiles(page, expected_tiles(demo_mart, Scope()))
    wait_idle(page)
    save_screenshot(page, "views-05-back-to-company")


def test_period_filter_updates(ceo_page, demo_mart, save_screenshot):
    page = ceo_page
    start = time.monotonic()
    page.select_option(".filter-period select", label="Quarter to date")
    wait_tiles(page, expected_tiles(demo_mart, Scope(), period="quarter"))
    TIMINGS["period_change_to_tiles_s"] = time.monotonic() - start
    wait_idle(page)
    save_screenshot(page, "views-06-quarter")
    page.select_option(".filter-period select", label="Year to date")
    wait_tiles(page, expected_tiles(demo_mart, Scope()))


def test_unit_filter_updates_chart(ceo_page, demo_mart):
    page = ceo_page
    with connect(demo_mart, read_only=True) as con:
        months = compute_kpi(
            con,
            "revenue",
            by=("month",),
            scope=Scope(business_unit="Services"),
            start=resolve_period("year", AS_OF).start,
            end=AS_OF,
            as_of=AS_OF,
        )
    january = float(months.loc[months["month"] == "2026-01", "revenue"].iloc[0])
    start = time.monotonic()
    page.select_option(".filter-business-unit select", label="Services")
    page.wait_for_function(
        """(january) => {
          const plot = document.querySelector('.chart-monthly .js-plotly-plot');
          const bars = plot && plot._fullData && plot._fullData.find((t) => t.type === 'bar');
          return bars && Math.abs(Array.from(bars.y)[0] - january) < 0.01;
        }""",
        arg=january,
        timeout=TIMEOUT_MS,
    )
    TIMINGS["unit_change_to_chart_s"] = time.monotonic() - start
    wait_tiles(page, expected_tiles(demo_mart, Scope(business_unit="Services")))
    wait_idle(page)


def test_product_line_filter_updates(ceo_page, demo_mart, save_screenshot):
    page = ceo_page
    page.select_option(".filter-business-unit select", label="Services")
    page.select_option(".filter-product-line select", label="Repairs")
    expected = expected_tiles(
        demo_mart, Scope(business_unit="Services", product_line="Repairs")
    )
    wait_tiles(page, expected)
    wait_idle(page)
    save_screenshot(page, "views-07-services-repairs")
    page.select_option(".filter-product-line select", label="All product lines")
    page.select_option(".filter-business-unit select", label="All business units")
    wait_tiles(page, expected_tiles(demo_mart, Scope()))
    wait_idle(page)


def test_requests_stay_on_loopback(ceo_page):
    outside = [
        url
        for url in ceo_page.requests
        if urlsplit(url).scheme not in ("data", "blob", "about")
        and urlsplit(url).hostname not in LOOPBACK
    ]
    assert ceo_page.requests
    assert outside == []


@pytest.mark.parametrize(
    ("user", "scope"),
    [
        ("head.north", Scope(region="North")),
        ("lead.north-1", Scope(team="North-1")),
        ("seller.rep-002", Scope(rep_id="REP-002")),
        ("head.services", Scope(business_unit="Services")),
    ],
)
def test_viewer_home_tiles(
    contexts, dashboard_server, demo_mart, save_screenshot, user, scope
):
    start = time.monotonic()
    page = open_dashboard(contexts(user), dashboard_server.page_url(user))
    TIMINGS[f"{user}_navigation_to_tiles_s"] = time.monotonic() - start
    expected = expected_tiles(demo_mart, scope)
    wait_tiles(page, expected)
    wait_idle(page)
    save_screenshot(page, f"views-home-{user}")
    shown = tile_texts(page)
    page.close()
    for name in TILES:
        assert shown[name] == expected[name], name


def test_huddle_tab_shows_pack(contexts, dashboard_server, demo_mart, save_screenshot):
    page = open_dashboard(
        contexts("lead.north-1"), dashboard_server.page_url("lead.north-1")
    )
    click_tab(page, "Huddle")
    page.wait_for_selector("table.huddle-kpis", timeout=TIMEOUT_MS)
    wait_idle(page, ".cockpit-huddle")
    save_screenshot(page, "views-08-huddle")
    with connect(demo_mart, read_only=True) as con:
        pack = build_huddle(con, "North-1")
    rows = page.locator("table.huddle-kpis tbody tr")
    assert rows.count() == 7
    labels = page.locator("table.huddle-kpis td[data-column='label']").all_inner_texts()
    assert labels == list(pack.kpis["label"])
    this_week = page.locator(
        "table.huddle-kpis td[data-column='this_week_text']"
    ).all_inner_texts()
    assert this_week == [
        format_value(v, u)
        for v, u in zip(pack.kpis["this_week"], pack.kpis["unit"], strict=True)
    ]
    assert page.locator(".survey-submit").count() == 1
    page.close()


def test_incentive_tab_shows_bonus(
    contexts, dashboard_server, demo_mart, save_screenshot
):
    page = open_dashboard(
        contexts("seller.rep-002"), dashboard_server.page_url("seller.rep-002")
    )
    click_tab(page, "Incentives")
    page.wait_for_selector(".bonus-now", timeout=TIMEOUT_MS)
    wait_idle(page, ".cockpit-incentives")
    save_screenshot(page, "views-09-incentives")
    plan = next(iter(load_plans().values()))
    with connect(demo_mart, read_only=True) as con:
        statement = bonus_statement(con, plan, "REP-002", AS_OF)
    components = statement.components.set_index("component")["amount"]
    assert (
        format_value(components["total"], "currency")
        in page.locator(".bonus-now").inner_text()
    )
    deals = page.locator("table.bonus-deals tbody tr")
    assert deals.count() == max(len(statement.deals), 1)
    page.close()


def test_target_tab_lists_targets(
    contexts, dashboard_server, demo_mart, save_screenshot
):
    page = open_dashboard(
        contexts("head.north"), dashboard_server.page_url("head.north")
    )
    click_tab(page, "Targets")
    page.wait_for_selector("table.target-table", timeout=TIMEOUT_MS)
    wait_idle(page, ".cockpit-targets")
    save_screenshot(page, "views-10-targets")
    with connect(demo_mart, read_only=True) as con:
        rows = in_force(con, 2026)
        north = set(
            row[0]
            for row in con.execute(
                "SELECT rep_id FROM reps WHERE region = 'North' AND role = 'seller'"
            ).fetchall()
        )
    rows = rows[(rows["level"] == "rep") & (rows["period"] == "2026")]
    total = rows.loc[rows["key"].isin(north), "value"].sum()
    cells = page.locator(
        "table.target-table td[data-column='target']"
    ).all_inner_texts()
    shown = sum(float(text.replace("EUR ", "").replace(",", "")) for text in cells)
    assert shown == pytest.approx(total, abs=len(cells))
    assert page.locator(".as-of").count() == 1
    page.close()
