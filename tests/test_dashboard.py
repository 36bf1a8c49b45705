"""The dashboards' data layer and widgets on a real demo mart, without a browser.

Expected numbers come from kpi_values, compute_kpi and plain SQL on the mart
file, never from the dashboard's own data layer.
"""

from __future__ import annotations

import html
import logging
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from cockpit.access import ACCESS_VARIABLE, ANONYMOUS, VIEWER_VARIABLE, Viewer
from cockpit.dashboard import (
    CockpitApp,
    Request,
    build_app,
    dashboard_view,
    log_to_server_console,
    open_dashboard,
    parse_request,
    prepare_dashboard,
)
from cockpit.dashboard_data import (
    CHILD_KPIS,
    FLOW_TILES,
    PIPELINE_TILES,
    DashboardData,
    Filters,
    node_level,
)
from cockpit.dashboard_html import (
    FRIENDLY_ERROR,
    figure_output,
    format_cell,
    plot_text,
    table_html,
    tile_html,
)
from cockpit.errors import MartError, ScopeError
from cockpit.kpi import compute_kpi, format_value, kpi_values
from cockpit.kpi_periods import resolve_period
from cockpit.mart import connect
from cockpit.scope import Scope

AS_OF = date(2026, 9, 30)
NORTH = Viewer(
    "head.north", "Head of North", "region", Scope(region="North"), "head.north"
)
LEAD = Viewer("lead", "Lead", "team", Scope(team="North-1"), "REP-001")
SELLER = Viewer("seller", "Seller", "seller", Scope(rep_id="REP-002"), "seller")


@pytest.fixture(autouse=True)
def no_prefetch(monkeypatch):
    """Background preparation off unless a test turns it on."""
    monkeypatch.setenv("COCKPIT_PREFETCH", "0")


@pytest.fixture(scope="module")
def mart(small_demo_mart) -> Path:
    return small_demo_mart


@pytest.fixture
def data(mart) -> DashboardData:
    return DashboardData(mart)


def year() -> object:
    return resolve_period("year", AS_OF)


def expected(mart: Path, names, scope: Scope, period: str = "year") -> dict:
    with connect(mart, read_only=True) as con:
        return kpi_values(
            con,
            list(names),
            scope=scope,
            period=resolve_period(period, AS_OF),
            as_of=AS_OF,
        )


def close(shown: float | None, wanted: float | None) -> bool:
    """True when both are undefined or both are numbers equal to 1e-9 relative."""
    if shown is None or wanted is None:
        return shown is None and wanted is None
    return shown == pytest.approx(wanted, rel=1e-9)


# --- data layer ----------------------------------------------------------------


def test_copy_reads_meta(data):
    assert data.as_of == AS_OF
    assert data.currency == "EUR"


def test_copy_leaves_file_writable(data, mart, tmp_path):
    copy = tmp_path / "copy.duckdb"
    shutil.copy(mart, copy)
    DashboardData(copy)
    with connect(copy) as con:
        con.execute("CREATE TABLE probe (x INTEGER)")


def test_missing_mart_raises(tmp_path):
    with pytest.raises(MartError, match="does not exist"):
        DashboardData(tmp_path / "none.duckdb")


def test_flow_tiles_match_kpi_values(data, mart):
    shown = data.flow_tiles(Scope(region="North"), Filters())
    wanted = expected(mart, [*FLOW_TILES, "target"], Scope(region="North"))
    for name, value in wanted.items():
        assert close(shown[name], value), name


def test_pipeline_tiles_match_kpi_values(data, mart):
    filters = Filters(period="quarter", business_unit="Services")
    shown = data.pipeline_tiles(Scope(team="North-1"), filters)
    wanted = expected(
        mart, PIPELINE_TILES, Scope(team="North-1", business_unit="Services"), "quarter"
    )
    for name, value in wanted.items():
        assert close(shown[name], value), name


def test_revenue_matches_sql(data, mart):
    with connect(mart, read_only=True) as con:
        total = con.execute(
            "SELECT sum(net_revenue) FROM transactions "
            "WHERE region = 'North' AND date BETWEEN '2026-01-01' AND '2026-09-30'"
        ).fetchone()[0]
    assert data.flow_tiles(Scope(region="North"), Filters())[
        "revenue"
    ] == pytest.approx(total, rel=1e-9)


def test_projection_matches_module(data, mart):
    from cockpit.projection import project_attainment

    with connect(mart, read_only=True) as con:
        table = project_attainment(
            con, AS_OF, level="team", scope=Scope(team="North-1"), period=year()
        )
    row = table[table["team"] == "North-1"].iloc[0]
    shown = data.projection(Scope(team="North-1"), Filters())
    assert shown["projected_attainment"] == pytest.approx(row["projected_attainment"])
    assert shown["gap_to_target"] == pytest.approx(row["gap_to_target"])


def test_children_match_compute_kpi(data, mart):
    table = data.children(Scope(region="North"), Filters())
    with connect(mart, read_only=True) as con:
        for name in CHILD_KPIS:
            frame = compute_kpi(
                con,
                name,
                by=("team",),
                scope=Scope(region="North"),
                period=year(),
                as_of=AS_OF,
            ).set_index("team")[name]
            shown = table.set_index("key")[name]
            for team, value in frame.items():
                assert shown[team] == pytest.approx(value, rel=1e-9, nan_ok=True), (
                    name,
                    team,
                )


def test_children_sorted_by_revenue(data):
    table = data.children(Scope(), Filters())
    assert list(table["revenue"]) == sorted(table["revenue"], reverse=True)
    assert set(table["key"]) == {"North", "South", "East", "West"}


def test_seller_children_are_accounts(data, mart):
    table = data.children(Scope(rep_id="REP-002"), Filters())
    with connect(mart, read_only=True) as con:
        names = dict(con.execute("SELECT account_id, name FROM accounts").fetchall())
    assert table["attainment_to_date_pct"].isna().all()
    assert list(table["label"]) == [names[key] for key in table["key"]]


def test_monthly_matches_sql(data, mart):
    frame = data.monthly(Scope(region="West"), Filters()).set_index("month")
    with connect(mart, read_only=True) as con:
        rows = con.execute(
            "SELECT strftime(date, '%Y-%m'), sum(net_revenue) FROM transactions "
            "WHERE region = 'West' AND date BETWEEN '2026-01-01' AND '2026-09-30' "
            "GROUP BY 1"
        ).fetchall()
    assert list(frame.index) == [f"2026-{m:02d}" for m in range(1, 13)]
    for month, value in rows:
        assert frame.loc[month, "revenue"] == pytest.approx(value, rel=1e-9), month


def test_open_deals_match_sql(data, mart):
    deals = data.open_deals(Scope(rep_id="REP-002"), Filters())
    with connect(mart, read_only=True) as con:
        count = con.execute(
            """
            SELECT count(*) FROM opportunities WHERE rep_id = 'REP-002'
              AND status = 'open' AND snapshot_date =
                (SELECT max(snapshot_date) FROM opportunities WHERE snapshot_date <= ?)
            """,
            [AS_OF],
        ).fetchone()[0]
    assert len(deals) == count


def test_cache_returns_same_object(data):
    first = data.children(Scope(), Filters())
    assert data.children(Scope(), Filters()) is first


def test_failed_computation_not_cached(data):
    calls = []

    def broken():
        calls.append(1)
        raise RuntimeError("once")

    with pytest.raises(RuntimeError):
        data.cached("key", broken)
    assert data.cached("key", lambda: 5) == 5
    assert calls == [1]


def test_authorize_narrows(data):
    data.restrict(Scope(region="North"))
    assert data.authorize(Scope(team="North-1")) == Scope(
        region="North", team="North-1"
    )


def test_authorize_rejects_other_region(data):
    data.restrict(Scope(region="North"))
    with pytest.raises(ScopeError, match="region='West'"):
        data.flow_tiles(Scope(region="West"), Filters())


def test_authorize_rejects_team_of_other_region(data):
    data.restrict(Scope(region="North"))
    with pytest.raises(ScopeError, match="team 'West-1' is not in region 'North'"):
        data.children(Scope(team="West-1"), Filters())


def test_authorize_rejects_seller_of_other_team(data):
    data.restrict(Scope(team="North-1"))
    with pytest.raises(ScopeError, match="not in team 'North-1'"):
        data.authorize(Scope(rep_id="REP-038"))


def test_authorize_rejects_other_unit(data):
    data.restrict(Scope(business_unit="Services"))
    with pytest.raises(ScopeError, match="business_unit='Equipment'"):
        data.flow_tiles(Scope(), Filters(business_unit="Equipment"))


def test_restrict_only_once(data):
    data.restrict(Scope(region="North"))
    with pytest.raises(ScopeError, match="one viewer"):
        data.restrict(Scope())


def test_unknown_period_rejected(data):
    with pytest.raises(ScopeError, match="unknown period 'decade'"):
        data.flow_tiles(Scope(), Filters(period="decade"))


def test_filter_options_follow_viewer(data):
    data.restrict(Scope(business_unit="Services"))
    options = data.filter_options()
    assert options["business_unit"] == [("Services", "Services")]
    assert {unit for unit, _ in options["product_line"]} == {"Services"}


def test_write_then_reload(mart, tmp_path):
    from cockpit.survey import record_survey

    copy = tmp_path / "copy.duckdb"
    shutil.copy(mart, copy)
    data = DashboardData(copy)
    assert data.reload(["huddle_surveys"]) is False
    survey_id = data.write(
        lambda con: record_survey(con, "North-1", date(2026, 9, 21), "REP-001", 4),
        tables=["huddle_surveys"],
    )
    rows = (
        data.cursor()
        .execute("SELECT survey_id, helpfulness FROM huddle_surveys")
        .fetchall()
    )
    assert rows == [(survey_id, 4)]


def test_write_waits_for_lock(mart, tmp_path, monkeypatch):
    import cockpit.dashboard_data as module

    copy = tmp_path / "copy.duckdb"
    shutil.copy(mart, copy)
    data = DashboardData(copy)
    monkeypatch.setattr(module, "WRITE_ATTEMPTS", 2)
    monkeypatch.setattr(module, "WRITE_PAUSE", 0.01)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(copy)!r}); "
            "print('locked', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MartError, match="stayed locked"):
            data.write(lambda con: None, tables=[])
    finally:
        holder.kill()
        holder.wait()


def test_prefetch_fills_cache(data):
    data.restrict(Scope(region="North"))
    node = Scope(region="North")
    data.prefetch(
        [
            (
                ("flow", data.scope_for(node, Filters(period="quarter")), "quarter"),
                lambda: data.flow_tiles(node, Filters(period="quarter")),
            )
        ]
    )
    deadline = time.monotonic() + 60
    while data.prefetch_pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    key = ("flow", data.scope_for(node, Filters(period="quarter")), "quarter")
    while not data.is_cached(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert data.is_cached(key)


def test_prefetch_waits_for_foreground(data):
    ran = []
    with data.foreground():
        data.prefetch([("job", lambda: ran.append(1) or data.cached("job", lambda: 1))])
        time.sleep(0.3)
        assert ran == []
    deadline = time.monotonic() + 10
    while not ran and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ran == [1]


def test_node_levels():
    assert node_level(Scope()) == "company"
    assert node_level(Scope(region="North")) == "region"
    assert node_level(Scope(region="North", team="North-1")) == "team"
    assert node_level(Scope(team="North-1", rep_id="REP-002")) == "seller"


# --- requests ------------------------------------------------------------------


def test_request_reads_known_keys():
    request = parse_request(
        "region=North&team=North-1&seller=REP-002&view=huddle&period=quarter&unit=Services&line=Repairs"
    )
    assert request == Request(
        view="huddle",
        node=Scope(region="North", team="North-1", rep_id="REP-002"),
        period="quarter",
        business_unit="Services",
        product_line="Repairs",
    )


def test_request_ignores_token_and_repeats():
    request = parse_request("token=secret&region=North&region=West&scope=company")
    assert request.node == Scope(region="North")


def test_request_empty():
    assert parse_request(None) == Request()


# --- the page --------------------------------------------------------------------


def app_of(widget) -> CockpitApp:
    return widget._cockpit_app


def test_page_tiles_match_kpis(mart):
    app = app_of(dashboard_view(mart, NORTH))
    wanted = expected(mart, ["revenue", "win_rate"], Scope(region="North"))
    assert app.performance.texts["revenue"] == format_value(
        wanted["revenue"], "currency"
    )
    assert app.performance.texts["win_rate"] == format_value(
        wanted["win_rate"], "percent"
    )


def test_page_header_has_as_of(mart):
    app = app_of(dashboard_view(mart, NORTH))
    assert 'data-as-of="2026-09-30"' in app.header.value
    assert "as of 30 Sep 2026" in app.header.value


def test_query_outside_scope_shows_notice(mart, caplog):
    app = app_of(dashboard_view(mart, NORTH, "region=West"))
    assert app.node == Scope(region="North")
    assert "You do not have access to region West" in app.notice.value
    assert "outside their scope" in caplog.text


def test_query_opens_team(mart):
    app = app_of(dashboard_view(mart, NORTH, "team=North-1"))
    assert app.node == Scope(region="North", team="North-1")
    assert [label for label, _ in app.path()] == ["North", "North-1"]


def test_query_bad_filter_ignored(mart):
    app = app_of(dashboard_view(mart, NORTH, "unit=Nothing&period=decade"))
    assert "filters in the address are not available" in app.notice.value
    assert app.performance.filters() == Filters()


def test_drill_and_back(mart):
    app = app_of(dashboard_view(mart, NORTH))
    first = app.performance.child_table["key"].iloc[0]
    app.performance._on_drill(0)
    assert app.node == Scope(region="North", team=first)
    app.navigate(app.path()[0][1])
    assert app.node == Scope(region="North")


def test_navigate_outside_keeps_node(mart):
    app = app_of(dashboard_view(mart, NORTH))
    app.navigate(Scope(region="West"))
    assert app.node == Scope(region="North")
    assert "You do not have access" in app.notice.value


def test_seller_path_starts_at_seller(mart):
    app = app_of(dashboard_view(mart, SELLER, "seller=REP-002"))
    assert [node for _, node in app.path()] == [Scope(rep_id="REP-002")]


def test_filter_change_recomputes(mart):
    app = app_of(dashboard_view(mart, NORTH))
    app.performance.business_unit.value = "Services"
    wanted = expected(
        mart, ["revenue"], Scope(region="North", business_unit="Services")
    )
    assert app.performance.values["revenue"] == pytest.approx(
        wanted["revenue"], rel=1e-9
    )


def test_unit_limits_product_lines(mart):
    app = app_of(dashboard_view(mart, ANONYMOUS))
    app.performance.business_unit.value = "Services"
    lines = [value for _, value in app.performance.product_line.options]
    with connect(mart, read_only=True) as con:
        wanted = [
            row[0]
            for row in con.execute(
                "SELECT DISTINCT product_line FROM products WHERE business_unit = 'Services' ORDER BY 1"
            ).fetchall()
        ]
    assert lines == ["", *wanted]


def test_refresh_error_shows_friendly_message(mart, monkeypatch, caplog):
    app = app_of(dashboard_view(mart, NORTH))

    def broken(*args, **kwargs):
        raise RuntimeError("chart data broke")

    monkeypatch.setattr(app.data, "monthly", broken)
    app.performance.period.value = "quarter"
    assert html.escape(FRIENDLY_ERROR) in app.performance.status.value
    assert "chart data broke" not in app.performance.status.value
    assert "RuntimeError: chart data broke" in caplog.text


def test_missing_mart_friendly(tmp_path):
    widget = dashboard_view(tmp_path / "nowhere.duckdb", NORTH)
    assert html.escape(FRIENDLY_ERROR) in widget.value
    assert "nowhere" not in widget.value


def test_open_dashboard_reads_viewer(mart, tmp_path):
    access = tmp_path / "access.yaml"
    access.write_text("users:\n  head.north:\n    level: region\n    region: North\n")
    widget = open_dashboard(
        prepare_dashboard(mart),
        {
            ACCESS_VARIABLE: str(access),
            VIEWER_VARIABLE: "head.north",
            "QUERY_STRING": "region=West",
        },
    )
    app = app_of(widget)
    assert app.viewer.user == "head.north"
    assert app.node == Scope(region="North")


def test_open_dashboard_refuses_unknown(mart, tmp_path):
    access = tmp_path / "access.yaml"
    access.write_text("users:\n  ceo:\n    level: company\n")
    widget = open_dashboard(
        prepare_dashboard(mart), {ACCESS_VARIABLE: str(access), VIEWER_VARIABLE: "x"}
    )
    assert "not registered" in widget.value


def test_open_dashboard_without_access_is_anonymous(mart):
    app = app_of(open_dashboard(prepare_dashboard(mart), {}))
    assert app.viewer is ANONYMOUS


def test_background_refresh_shows_first_step(mart):
    data = DashboardData(mart)
    widget = build_app(data, NORTH, background=True)
    app = app_of(widget)
    assert app.performance.texts["revenue"] != "…"
    widget._view_count = 1
    deadline = time.monotonic() + 60
    while "gap_to_target" not in app.performance.texts and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "gap_to_target" in app.performance.texts


# --- acting tabs -------------------------------------------------------------------


def test_huddle_for_team_lead(mart):
    app = app_of(dashboard_view(mart, LEAD, "view=huddle"))
    assert app.huddle.team == "North-1"
    assert not app.huddle.submit.disabled


def test_huddle_anonymous_cannot_answer(mart):
    app = app_of(dashboard_view(mart, ANONYMOUS, "team=North-1&view=huddle"))
    assert app.huddle.submit.disabled


def test_huddle_seller_sees_own_deals(mart):
    app = app_of(dashboard_view(mart, SELLER, "view=huddle"))
    page = app.huddle.body.children[0].value
    with connect(mart, read_only=True) as con:
        others = [
            row[0]
            for row in con.execute(
                "SELECT name FROM reps WHERE team = 'North-1' AND rep_id <> 'REP-002'"
            ).fetchall()
        ]
    for name in others:
        assert html.escape(name) not in page, name


def test_totals_hide_region_from_team_lead(mart):
    app = app_of(dashboard_view(mart, LEAD, "view=targets"))
    totals = app.targets.totals("REP-002", "Equipment", 1000.0)
    assert [label.split()[0] for label in totals["total"]] == ["Seller", "Team", "All"]


def test_totals_for_region_head(mart):
    app = app_of(dashboard_view(mart, NORTH, "view=targets"))
    totals = app.targets.totals("REP-002", "Equipment", 1000.0).set_index("total")
    with connect(mart, read_only=True) as con:
        north = con.execute(
            "SELECT sum(value) FROM targets t JOIN reps r ON r.rep_id = t.key "
            "WHERE t.level = 'rep' AND r.region = 'North'"
        ).fetchone()[0]
    assert totals.loc["Region North", "before"] == pytest.approx(north)


def test_target_form_rejects_other_seller(mart):
    app = app_of(dashboard_view(mart, LEAD, "view=targets"))
    with pytest.raises(ScopeError):
        app.targets._check_seller("REP-038")


def test_incentives_need_team_or_seller(mart):
    app = app_of(dashboard_view(mart, NORTH, "view=incentives"))
    assert "Open a team or a seller" in app.incentives.body.children[0].value


# --- html ---------------------------------------------------------------------------


def test_tile_escapes_text():
    markup = tile_html("revenue", "<b>1</b>", note="a & b")
    assert "&lt;b&gt;1&lt;/b&gt;" in markup
    assert "a &amp; b" in markup
    assert 'class="kpi-tile" data-kpi="revenue"' in markup


def test_table_escapes_and_formats():
    frame = pd.DataFrame({"name": ["<script>x</script>"], "revenue": [1234.4]})
    markup = table_html(
        frame, [("name", "Name", None), ("revenue", "Revenue", "currency")], "EUR"
    )
    assert "&lt;script&gt;x&lt;/script&gt;" in markup
    assert "<script>" not in markup
    assert "EUR 1,234" in markup


def test_table_counts_hidden_rows():
    frame = pd.DataFrame({"n": range(5)})
    assert "3 more row(s) not shown" in table_html(
        frame, [("n", "N", "count")], "EUR", max_rows=2
    )


def test_plot_labels_escaped():
    assert plot_text(["<b>x</b>"]) == ["&lt;b&gt;x&lt;/b&gt;"]


def test_cell_formats():
    assert format_cell(pd.Timestamp("2026-09-30"), None, "EUR") == "2026-09-30"
    assert (
        format_cell(pd.Timestamp("2026-09-30 14:05"), None, "EUR") == "2026-09-30 14:05"
    )
    assert format_cell(float("nan"), None, "EUR") == ""
    assert format_cell(None, "percent", "EUR") == "n/a"


def test_figure_output_carries_plotly_mime():
    output = figure_output(go.Figure(go.Bar(x=["a"], y=[1])), "text")
    assert output["output_type"] == "display_data"
    assert "application/vnd.plotly.v1+json" in output["data"]


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
