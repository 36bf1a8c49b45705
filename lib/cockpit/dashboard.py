"""The cockpit dashboards: ipywidgets views of one mart, served by Voilà.

notebooks/dashboard.ipynb makes two calls. `prepare_dashboard(mart)` runs
while a preheated kernel waits for its viewer: it copies the mart into
memory (`cockpit.dashboard_data`). `open_dashboard(prepared)` then waits
for the request, reads the viewer from the environment the server set
(`cockpit.access.viewer_from_environment`) and the wanted view from the
query string, and returns the page's widget.

The page has a header (company, viewer, "as of" date), a breadcrumb of the
drill-down path, and four tabs:

- Performance: filters (period, business unit, product line), KPI tiles in
  three groups (results, outlook, behaviour), revenue by month against
  last year and target, and the children of the current position (regions
  of the company, teams of a region, sellers of a team) with a button each
  to drill down; a seller shows accounts and open deals.
- Huddle, Targets and Incentives: see `cockpit.dashboard_actions`.

The viewer's scope is applied where data is read (`DashboardData.authorize`),
so neither the query string nor a widget value can reach rows outside it.
Errors are logged in the server log with their details; viewers see
`FRIENDLY_ERROR`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import duckdb
import ipywidgets as widgets
import pandas as pd
import plotly.graph_objects as go

from cockpit import charts
from cockpit.access import ANONYMOUS, Viewer, viewer_from_environment
from cockpit.dashboard_data import (
    CHILD_GRAIN,
    CHILD_KPIS,
    FLOW_TILES,
    NODE_FIELDS,
    PERIODS,
    PIPELINE_TILES,
    PROJECTION_TILES,
    TILE_GROUPS,
    DashboardData,
    Filters,
    kpi_unit,
    node_level,
    node_of,
)
from cockpit.dashboard_html import (
    FRIENDLY_ERROR,
    OUTSIDE_SCOPE,
    STYLE,
    escape,
    figure_output,
    message_html,
    plot_text,
    table_html,
    tile_html,
)
from cockpit.errors import CockpitError, ScopeError
from cockpit.kpi import KPIS, format_value
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

__all__ = [
    "FRIENDLY_ERROR",
    "CockpitApp",
    "PerformanceView",
    "Request",
    "dashboard_view",
    "log_to_server_console",
    "open_dashboard",
    "parse_request",
    "prepare_dashboard",
]

#: Tabs of the page, in order: query-string name and title.
TABS: tuple[tuple[str, str], ...] = (
    ("performance", "Performance"),
    ("huddle", "Huddle"),
    ("targets", "Targets"),
    ("incentives", "Incentives"),
)

#: Query-string keys a page understands and the field each one sets.
QUERY_KEYS = {
    "view": "view",
    "region": "region",
    "team": "team",
    "seller": "rep_id",
    "period": "period",
    "unit": "business_unit",
    "line": "product_line",
}

#: Drop-down value that means "no filter". Real names are never empty.
ALL = ""

#: Most children listed with a drill button; the rest are counted.
MAX_DRILL_ROWS = 40

#: Seconds the first refresh waits for the browser to display the page.
DISPLAY_WAIT = 20.0

#: Set COCKPIT_PREFETCH=0 to stop preparing other filter values in the background.
PREFETCH_VARIABLE = "COCKPIT_PREFETCH"

#: Headers of the drill-down table per child grain.
CHILD_HEADERS = {
    "region": "Region",
    "team": "Team",
    "rep_id": "Seller",
    "account_id": "Account",
}


@dataclass(frozen=True)
class Request:
    """The view, position and filters a page's query string requests.

    No field is trusted: the app checks each against the viewer's scope.
    """

    view: str = "performance"
    node: Scope = field(default_factory=Scope)
    period: str | None = None
    business_unit: str | None = None
    product_line: str | None = None


def parse_request(query: str | None) -> Request:
    """Read view, region, team, seller, period, unit and line from a query string.

    Other keys (such as the sign-in token) are ignored, and so is a key
    given more than once after its first value. Values are not checked
    here: the app checks them against the viewer's scope when it applies
    them.
    """
    values: dict[str, str] = {}
    for key, found in parse_qs(query or "", keep_blank_values=False).items():
        if key in QUERY_KEYS and found:
            values[QUERY_KEYS[key]] = found[0][:200]
    node = Scope(
        region=values.get("region"),
        team=values.get("team"),
        rep_id=values.get("rep_id"),
    )
    return Request(
        view=values.get("view", "performance"),
        node=node,
        period=values.get("period"),
        business_unit=values.get("business_unit"),
        product_line=values.get("product_line"),
    )


def _in_kernel() -> bool:
    """True when this process is an IPython kernel, as under Voilà."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def log_to_server_console() -> None:
    """Send the cockpit's log records of level INFO and above to the server log.

    Inside a kernel, `sys.stderr` goes to the page; `sys.__stderr__` is the
    kernel process's own stderr, which Voilà writes to its console. The
    handler is added once per process; the "cockpit" logger's level is set
    to INFO only when no level was set before.
    """
    package_logger = logging.getLogger("cockpit")
    for handler in package_logger.handlers:
        if getattr(handler, "_cockpit_server_console", False):
            return
    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler._cockpit_server_console = True  # type: ignore[attr-defined]
    package_logger.addHandler(handler)
    if package_logger.level == logging.NOTSET:
        package_logger.setLevel(logging.INFO)


def _log_failure(action: str, exc: BaseException) -> None:
    """Log a caught error: one line for expected ones, the traceback otherwise."""
    if isinstance(exc, CockpitError | duckdb.Error):
        logger.error("%s failed: %s: %s", action, type(exc).__name__, exc)
    else:
        logger.error("%s failed", action, exc_info=exc)


class PerformanceView:
    """The Performance tab: filters, tiles, charts and the drill-down table."""

    def __init__(self, app: CockpitApp) -> None:
        self.app = app
        data = app.data
        options = data.filter_options()
        self.period = widgets.Dropdown(
            options=[(label, name) for name, label in PERIODS.items()],
            value="year",
            description="Period",
        )
        self.business_unit = self._dropdown(
            "Business unit",
            "business-unit",
            options["business_unit"],
            data.viewer_scope.business_unit,
        )
        self.product_line = self._dropdown(
            "Product line",
            "product-line",
            [(line, line) for _, line in options["product_line"]],
            data.viewer_scope.product_line,
        )
        self.period.add_class("filter-period")
        self._product_lines = options["product_line"]
        self.status = widgets.HTML("", layout=widgets.Layout(min_height="22px"))
        self.status.add_class("cockpit-status")
        self.tiles: dict[str, widgets.HTML] = {}
        groups = []
        for title, names in TILE_GROUPS:
            tiles = [widgets.HTML(tile_html(name, "…")) for name in names]
            self.tiles.update(zip(names, tiles, strict=True))
            box = widgets.Box(tiles)
            box.add_class("cockpit-tiles")
            heading = widgets.HTML(message_html(title, "cockpit-group-title"))
            groups.append(widgets.VBox([heading, box]))
        self.monthly_chart = widgets.Output()
        self.monthly_chart.add_class("cockpit-chart")
        self.monthly_chart.add_class("chart-monthly")
        self.children_chart = widgets.Output()
        self.children_chart.add_class("cockpit-chart")
        self.children_chart.add_class("chart-children")
        self.children_title = widgets.HTML()
        self.drill = widgets.GridBox(
            layout=widgets.Layout(
                grid_template_columns="minmax(180px, 2fr) repeat(6, minmax(90px, 1fr))"
            )
        )
        self.drill.add_class("cockpit-drill")
        self._drill_rows: list[tuple[widgets.Button, list[widgets.HTML]]] = []
        self._drill_keys: list[Any] = []
        self.drill_note = widgets.HTML()
        self.details = widgets.HTML()
        self.details.add_class("cockpit-details")
        self.values: dict[str, float | None] = {}
        self.texts: dict[str, str] = {}
        self.monthly = pd.DataFrame()
        self.child_table = pd.DataFrame()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.period, self.business_unit, self.product_line]),
                self.status,
                *groups,
                self.monthly_chart,
                self.children_title,
                self.children_chart,
                self.drill,
                self.drill_note,
                self.details,
            ]
        )
        self.widget.add_class("cockpit-performance")
        self.period.observe(self._on_filter, names="value")
        self.business_unit.observe(self._on_unit, names="value")
        self.product_line.observe(self._on_filter, names="value")
        self._quiet = False

    def _dropdown(
        self, label: str, css: str, choices: list[tuple[str, str]], fixed: str | None
    ) -> widgets.Dropdown:
        """Build a filter drop-down; a field the viewer's scope fixes shows only that value."""
        if fixed is not None:
            dropdown = widgets.Dropdown(
                options=[(fixed, fixed)], value=fixed, description=label, disabled=True
            )
        else:
            dropdown = widgets.Dropdown(
                options=[(f"All {label.lower()}s", ALL), *choices],
                value=ALL,
                description=label,
            )
        dropdown.style.description_width = "initial"
        dropdown.add_class(f"filter-{css}")
        return dropdown

    # --- filters ---------------------------------------------------------

    def filters(self) -> Filters:
        """Return the filters the drop-downs show."""
        return Filters(
            period=self.period.value,
            business_unit=self.business_unit.value or None,
            product_line=self.product_line.value or None,
        )

    def set_filters(self, filters: Filters) -> None:
        """Show `filters` in the drop-downs without refreshing.

        Raises ScopeError for a value the drop-downs do not offer.
        """
        self._quiet = True
        try:
            self._set(self.period, filters.period, "period")
            self._set(self.business_unit, filters.business_unit or ALL, "business unit")
            self._limit_lines()
            self._set(self.product_line, filters.product_line or ALL, "product line")
        finally:
            self._quiet = False

    @staticmethod
    def _set(dropdown: widgets.Dropdown, value: str, what: str) -> None:
        values = [option[1] for option in dropdown.options]
        if value not in values:
            raise ScopeError(f"{what} {value!r} is not offered to this viewer")
        dropdown.value = value

    def _limit_lines(self) -> None:
        """Offer only the product lines of the chosen business unit."""
        if self.product_line.disabled:
            return
        unit = self.business_unit.value
        lines = [
            (line, line)
            for line_unit, line in self._product_lines
            if not unit or line_unit == unit
        ]
        current = self.product_line.value
        self.product_line.options = [("All product lines", ALL), *lines]
        self.product_line.value = current if (current, current) in lines else ALL

    def _on_unit(self, change: dict) -> None:
        if self._quiet:
            return
        self._quiet = True
        try:
            self._limit_lines()
        finally:
            self._quiet = False
        self._on_filter(change)

    def _on_filter(self, change: dict) -> None:
        if self._quiet:
            return
        self.app.refresh_current(charts_first=True)

    # --- refresh ---------------------------------------------------------

    def refresh(
        self,
        charts_first: bool = False,
        checkpoint: Callable[[], None] | None = None,
    ) -> None:
        """Recompute tiles, charts and children for the app's node and filters.

        The page fills in step by step as the numbers arrive: the tiles
        counted over the period, the two charts, the pipeline tiles, the
        projection tiles, then the drill-down table. With `charts_first`
        (after a filter change) the charts come before the tiles.
        `checkpoint` is called after the first step (see
        CockpitApp.refresh_in_background). Raises whatever the data layer
        raises; the app shows it.
        """
        app = self.app
        node, filters = app.node, self.filters()
        data = app.data
        start = time.perf_counter()
        self.status.value = message_html("Updating…")
        for tile_name, tile in self.tiles.items():
            tile.value = tile_html(tile_name, "…")
        values: dict[str, float | None] = {}

        def show_flow() -> None:
            values.update(data.flow_tiles(node, filters))
            self._show_tiles(values, FLOW_TILES)

        if not charts_first:
            show_flow()
        if checkpoint is not None:
            checkpoint()
        self._show_charts(node, filters)
        chart_time = time.perf_counter() - start
        if charts_first:
            show_flow()
        values.update(data.pipeline_tiles(node, filters))
        self._show_tiles(values, PIPELINE_TILES)
        values.update(data.projection(node, filters))
        self._show_tiles(values, PROJECTION_TILES)
        self.values = values

        if node_level(node) == "seller":
            self._show_seller_details(node, filters)
        else:
            self._show_drill(node, filters)
        self.status.value = ""
        logger.info(
            "performance view of %s (%s) ready in %.2f s, charts after %.2f s",
            data.scope_for(node, filters).label(),
            filters.period,
            time.perf_counter() - start,
            chart_time,
        )
        self.app.prefetch_variants()

    def _show_charts(self, node: Scope, filters: Filters) -> None:
        data = self.app.data
        self.monthly = data.monthly(node, filters)
        self.monthly_chart.outputs = (
            figure_output(
                charts.revenue_vs_target_figure(
                    self.monthly,
                    f"Revenue by month, {data.as_of.year}, against last year "
                    "and target",
                ),
                "Revenue against target by month",
            ),
        )
        self._show_children_chart(data.child_revenue(node, filters))

    def _show_tiles(
        self, values: Mapping[str, float | None], names: tuple[str, ...]
    ) -> None:
        currency = self.app.data.currency
        for name in names:
            text = format_value(values.get(name), kpi_unit(name), currency=currency)
            self.texts[name] = text
            self.tiles[name].value = tile_html(name, text, self._note(name, values))

    def _note(self, name: str, values: Mapping[str, float | None]) -> str:
        currency = self.app.data.currency
        period_label = PERIODS[self.period.value].lower()
        if name == "attainment_to_date_pct":
            target = values.get("target")
            return f"period target {format_value(target, 'currency', currency)}"
        if name == "projected_attainment":
            low, high = values.get("attainment_low"), values.get("attainment_high")
            if low is None or high is None:
                return ""
            return (
                f"range {format_value(low, 'percent')} – "
                f"{format_value(high, 'percent')}"
            )
        if name == "gap_to_target":
            return "target minus projected revenue"
        if name in ("revenue", "won_value", "margin_pct", "growth_pct", "win_rate"):
            return period_label
        return ""

    def _show_children_chart(self, table: pd.DataFrame) -> None:
        grain = CHILD_GRAIN[node_level(self.app.node)]
        heading = CHILD_HEADERS[grain]
        shown = table.head(15)
        figure = go.Figure()
        figure.add_trace(
            go.Bar(
                x=plot_text(shown["label"]),
                y=shown["revenue"],
                name="revenue",
                opacity=0.7,
            )
        )
        if shown["target_prorated"].notna().any():
            figure.add_trace(
                go.Scatter(
                    x=plot_text(shown["label"]),
                    y=shown["target_prorated"],
                    name="target to date",
                    mode="markers",
                    marker={"symbol": "line-ew-open", "size": 28, "line": {"width": 3}},
                )
            )
        figure.update_layout(
            title=f"Revenue by {heading.lower()}, {PERIODS[self.period.value].lower()}",
            template="plotly_white",
            height=340,
            margin={"l": 50, "r": 20, "t": 50, "b": 80},
            legend={"orientation": "h", "y": -0.3},
            yaxis_title="net revenue",
        )
        self.children_chart.outputs = (
            figure_output(figure, f"Revenue by {heading.lower()}"),
        )

    def _drill_row(self, index: int) -> tuple[widgets.Button, list[widgets.HTML]]:
        while len(self._drill_rows) <= index:
            position = len(self._drill_rows)
            button = widgets.Button(layout=widgets.Layout(width="auto"))
            button.add_class("drill-name")
            button.on_click(lambda _, position=position: self._on_drill(position))
            cells = [widgets.HTML() for _ in CHILD_KPIS]
            for cell in cells:
                cell.add_class("drill-cell")
            self._drill_rows.append((button, cells))
        return self._drill_rows[index]

    def _show_drill(self, node: Scope, filters: Filters) -> None:
        data = self.app.data
        grain = CHILD_GRAIN[node_level(node)]
        table = data.children(node, filters)
        self.child_table = table
        currency = data.currency
        title = {"region": "Regions", "team": "Teams", "rep_id": "Sellers"}[grain]
        self.children_title.value = (
            f"<h3>{escape(title)} of {escape(data.node_label(node))}</h3>"
            "<div class='cockpit-subtitle'>Click a name to open it.</div>"
        )
        headers = [widgets.HTML(f"<b>{escape(CHILD_HEADERS[grain])}</b>")]
        numbers = [
            widgets.HTML(f"<b>{escape(KPIS[name].label)}</b>") for name in CHILD_KPIS
        ]
        for header in numbers:
            header.add_class("num-head")
        headers += numbers
        for header in headers:
            header.add_class("drill-head")
        shown = table.head(MAX_DRILL_ROWS)
        cells: list[widgets.Widget] = list(headers)
        self._drill_keys = list(shown["key"])
        for index, row in enumerate(shown.itertuples(index=False)):
            button, numbers = self._drill_row(index)
            button.description = str(row.label)
            button.tooltip = f"Open {row.label}"
            for cell, name in zip(numbers, CHILD_KPIS, strict=True):
                cell.value = escape(
                    format_value(getattr(row, name), KPIS[name].unit, currency=currency)
                )
            cells += [button, *numbers]
        self.drill.children = cells
        self.drill_note.value = (
            message_html(
                f"{len(table) - MAX_DRILL_ROWS} more not listed", "cockpit-notice"
            )
            if len(table) > MAX_DRILL_ROWS
            else ""
        )
        self.details.value = ""

    def _on_drill(self, position: int) -> None:
        if position >= len(self._drill_keys):
            return
        key = self._drill_keys[position]
        node = self.app.node
        child_field = dict(NODE_FIELDS)[
            {"company": "region", "region": "team", "team": "seller"}[node_level(node)]
        ]
        self.app.navigate(replace(node, **{child_field: key}))

    def _show_seller_details(self, node: Scope, filters: Filters) -> None:
        data = self.app.data
        currency = data.currency
        accounts = data.children(node, filters)
        self.child_table = accounts
        deals = data.open_deals(node, filters)
        self.drill.children = ()
        self._drill_keys = []
        self.drill_note.value = ""
        self.children_title.value = (
            f"<h3>Accounts and open deals of {escape(data.node_label(node))}</h3>"
        )
        account_columns = [
            ("label", "Account", None),
            ("revenue", "Revenue", "currency"),
            ("margin_pct", "Margin %", "percent"),
            ("growth_pct", "Growth vs last year", "percent"),
            ("open_pipeline", "Open pipeline", "currency"),
            ("win_rate", "Win rate", "percent"),
        ]
        deal_columns = [
            ("opportunity_id", "Deal", None),
            ("account", "Account", None),
            ("stage", "Stage", None),
            ("amount", "Amount", "currency"),
            ("expected_close_date", "Expected close", None),
            ("probability", "Win probability", "percent"),
            ("weighted_amount", "Weighted", "currency"),
            ("slips", "Close-date slips", "count"),
        ]
        self.details.value = (
            "<h4>Accounts</h4>"
            + table_html(accounts, account_columns, currency, max_rows=30)
            + "<h4>Open deals</h4>"
            + table_html(deals, deal_columns, currency, max_rows=30)
        )


class CockpitApp:
    """The page of one viewer: header, breadcrumb, tabs and the current position.

    `node` is the drill-down position (a Scope with region, team and
    rep_id); `navigate` moves it after checking it against the viewer's
    scope. `widget` is the box to display.
    """

    def __init__(
        self,
        data: DashboardData,
        viewer: Viewer,
        request: Request | None = None,
        defer_refresh: bool = False,
    ) -> None:
        from cockpit.dashboard_actions import HuddleView, IncentiveView, TargetView

        self._lock = threading.RLock()
        self.data = data
        self.viewer = viewer
        self.home = node_of(viewer.scope)
        self.node = self.home
        self.header = widgets.HTML()
        self.header.add_class("cockpit-header")
        self.breadcrumb = widgets.HBox()
        self.breadcrumb.add_class("cockpit-breadcrumb")
        self.notice = widgets.HTML()
        self.notice.add_class("cockpit-notice-box")
        self.performance = PerformanceView(self)
        self.huddle = HuddleView(self)
        self.targets = TargetView(self)
        self.incentives = IncentiveView(self)
        self.views = {
            "performance": self.performance,
            "huddle": self.huddle,
            "targets": self.targets,
            "incentives": self.incentives,
        }
        self._stale = set(self.views)
        self.tabs = widgets.Tab(children=[view.widget for view in self.views.values()])
        for index, (_, title) in enumerate(TABS):
            self.tabs.set_title(index, title)
        self.tabs.add_class("cockpit-tabs")
        self.widget = widgets.VBox(
            [widgets.HTML(STYLE), self.header, self.breadcrumb, self.notice, self.tabs]
        )
        self.widget.add_class("cockpit-dashboard")
        self._apply(request or Request())
        self.tabs.observe(self._on_tab, names="selected_index")
        if not defer_refresh:
            self.refresh_current()

    def refresh_in_background(self, wait: float = DISPLAY_WAIT) -> threading.Thread:
        """Refresh the selected tab in a thread; return once its first step is shown.

        The first step (the tiles counted over the period) is computed
        before this returns, so the page the kernel sends already shows
        them. The thread then waits until the browser displayed the page
        (the widget's view count, at most `wait` seconds), because the
        browser requests every widget's state from the kernel while it
        builds the page, and a busy kernel replies slowly. Widget events
        wait for this refresh, because refreshes hold the app's lock.
        """
        first_step = threading.Event()
        displayed = threading.Event()

        def on_view_count(change: dict) -> None:
            if change["new"]:
                displayed.set()

        self.widget.observe(on_view_count, names="_view_count")
        self.widget._view_count = 0

        def checkpoint() -> None:
            first_step.set()
            if not displayed.wait(wait):
                logger.info("page not displayed after %.0f s; computing on", wait)

        def run() -> None:
            self.refresh_current(checkpoint=checkpoint)
            first_step.set()

        thread = threading.Thread(
            target=run, name="dashboard-first-refresh", daemon=True
        )
        thread.start()
        first_step.wait(wait)
        return thread

    # --- navigation ------------------------------------------------------

    def _apply(self, request: Request) -> None:
        """Apply a parsed query string: filters, then position, then tab."""
        notices = []
        filters = self.performance.filters()
        requested_filters = Filters(
            period=request.period or filters.period,
            business_unit=request.business_unit or filters.business_unit,
            product_line=request.product_line or filters.product_line,
        )
        try:
            self.data.authorize(
                Scope(
                    business_unit=requested_filters.business_unit,
                    product_line=requested_filters.product_line,
                )
            )
            self.performance.set_filters(requested_filters)
        except ScopeError as exc:
            logger.warning("viewer %s: filter rejected: %s", self.viewer.user, exc)
            notices.append("The filters in the address are not available to you.")
        node = self.home
        requested = node_of(request.node)
        if requested != Scope():
            try:
                self.data.authorize(requested)
                node = self._full_path(requested)
            except ScopeError as exc:
                logger.warning(
                    "viewer %s asked for %s outside their scope: %s",
                    self.viewer.user,
                    requested.label(),
                    exc,
                )
                notices.append(
                    OUTSIDE_SCOPE.format(what=requested.label(), home=self.home.label())
                )
        names = [name for name, _ in TABS]
        if request.view in names:
            self.tabs.selected_index = names.index(request.view)
        else:
            self.tabs.selected_index = 0
        self.node = node
        self.show_notices(notices)
        self._render_location()

    def _full_path(self, node: Scope) -> Scope:
        """Fill in the region and team above a requested team or seller.

        The breadcrumb then shows the whole path. The path is taken from the
        reps table and kept only when it stays within the viewer's scope.
        """
        reps = self.data.reps
        team, region = node.team, node.region
        if node.rep_id is not None:
            match = reps[reps["rep_id"] == node.rep_id]
            if not match.empty:
                team = team or match.iloc[0]["team"]
                region = region or match.iloc[0]["region"]
        if team is not None and region is None:
            match = reps[reps["team"] == team]
            if not match.empty:
                region = match.iloc[0]["region"]
        full = Scope(region=region, team=team, rep_id=node.rep_id)
        try:
            self.data.authorize(full)
        except ScopeError:
            return node
        # Levels above the viewer's own position are not shown.
        if self.home.region is None and self.viewer.level in ("team", "seller"):
            full = replace(full, region=None)
        if self.viewer.level == "seller":
            full = replace(full, team=None)
        return full

    def navigate(self, node: Scope) -> None:
        """Move to `node` and refresh the visible tab.

        A node outside the viewer's scope is not opened: the viewer gets a
        notice and the server log a warning.
        """
        try:
            self.data.authorize(node)
        except ScopeError as exc:
            logger.warning(
                "viewer %s: navigation to %s rejected: %s",
                self.viewer.user,
                node.label(),
                exc,
            )
            self.show_notices(
                [OUTSIDE_SCOPE.format(what=node.label(), home=self.node.label())]
            )
            return
        self.node = node
        self.show_notices([])
        self._stale = set(self.views)
        self._render_location()
        self.refresh_current()

    def show_notices(self, notices: list[str]) -> None:
        """Show `notices` above the tabs, or nothing."""
        self.notice.value = "".join(
            message_html(text, "cockpit-notice") for text in notices
        )

    def path(self) -> list[tuple[str, Scope]]:
        """Return the breadcrumb: (label, node) from the viewer's home to `node`."""
        steps = [(self._home_label(), self.home)]
        current = self.home
        for _level, name in NODE_FIELDS:
            value = getattr(self.node, name)
            if value is None or getattr(current, name) == value:
                continue
            current = replace(current, **{name: value})
            steps.append((self.data.node_label(current), current))
        return steps

    def _home_label(self) -> str:
        if node_level(self.home) == "company":
            return self.data.company
        return self.data.node_label(self.home)

    def _render_location(self) -> None:
        scope_label = self.data.scope_for(self.node, Filters()).label()
        self.header.value = (
            f"<h2>{escape(self.data.company)} · commercial performance</h2>"
            f'<div class="cockpit-subtitle">{escape(self.data.node_label(self.node))}'
            f" ({escape(scope_label)}) · signed in as {escape(self.viewer.name)} · "
            f'<span class="as-of" data-as-of="{self.data.as_of.isoformat()}">'
            f"as of {self.data.as_of:%d %b %Y}</span></div>"
        )
        crumbs: list[widgets.Widget] = []
        steps = self.path()
        for index, (label, node) in enumerate(steps):
            if index:
                crumbs.append(widgets.Label("›"))
            if index == len(steps) - 1:
                current = widgets.HTML(f"<b>{escape(label)}</b>")
                current.add_class("crumb-current")
                crumbs.append(current)
            else:
                button = widgets.Button(description=label, tooltip=f"Back to {label}")
                button.add_class("cockpit-crumb")
                button.add_class(f"crumb-{index}")
                button.layout.width = "auto"
                button.on_click(lambda _, node=node: self.navigate(node))
                crumbs.append(button)
        self.breadcrumb.children = crumbs

    # --- refresh ---------------------------------------------------------

    def current_view_name(self) -> str:
        """Name of the selected tab."""
        return TABS[self.tabs.selected_index or 0][0]

    def refresh_current(
        self,
        charts_first: bool = False,
        checkpoint: Callable[[], None] | None = None,
    ) -> None:
        """Refresh the selected tab; errors become the friendly message.

        `charts_first` and `checkpoint` are passed to the Performance tab
        (see PerformanceView.refresh); another tab calls `checkpoint` first.
        """
        with self._lock, self.data.foreground():
            self._refresh_current(charts_first, checkpoint)

    def _refresh_current(
        self, charts_first: bool, checkpoint: Callable[[], None] | None
    ) -> None:
        name = self.current_view_name()
        view = self.views[name]
        self._stale.discard(name)
        try:
            if name == "performance":
                view.refresh(charts_first=charts_first, checkpoint=checkpoint)
            else:
                if checkpoint is not None:
                    checkpoint()
                view.refresh()
        except ScopeError as exc:
            logger.warning("viewer %s: %s", self.viewer.user, exc)
            self._fail(view, "That selection is outside what you may see.")
        except Exception as exc:
            _log_failure(f"{name} view of {self.node.label()}", exc)
            self._fail(view, FRIENDLY_ERROR)

    def _fail(self, view: Any, text: str) -> None:
        if hasattr(view, "show_failure"):
            view.show_failure(text)
        else:
            view.status.value = message_html(text, "cockpit-status-error")

    def _on_tab(self, change: dict) -> None:
        if self.current_view_name() in self._stale:
            self.refresh_current()

    def prefetch_variants(self) -> None:
        """Prepare, in the background, the other filter values of this position.

        Charts first, then tiles; the children of the position come last.
        Skipped when COCKPIT_PREFETCH is 0.
        """
        if os.environ.get(PREFETCH_VARIABLE, "1") == "0":
            return
        data, node = self.data, self.node
        current = self.performance.filters()
        variants = [
            replace(current, period=name) for name in PERIODS if name != current.period
        ]
        if not self.performance.business_unit.disabled:
            units = [value for _, value in self.performance.business_unit.options]
            variants += [
                replace(current, business_unit=unit or None, product_line=None)
                for unit in units
                if (unit or None) != current.business_unit
            ]
        jobs = []
        for kind in ("charts", "flow", "pipeline", "projection", "children"):
            for filters in variants:
                jobs += self._jobs(kind, node, filters)
        data.prefetch(jobs)

    def _jobs(
        self, kind: str, node: Scope, filters: Filters
    ) -> list[tuple[Any, Callable]]:
        data = self.data
        try:
            scope = data.scope_for(node, filters)
        except ScopeError:
            return []
        period = filters.period
        if kind == "charts":
            return [
                (("monthly", scope), lambda: data.monthly(node, filters)),
                (
                    ("child_revenue", scope, period),
                    lambda: data.child_revenue(node, filters),
                ),
            ]
        if kind == "flow":
            return [(("flow", scope, period), lambda: data.flow_tiles(node, filters))]
        if kind == "pipeline":
            return [
                (
                    ("pipeline", scope, period),
                    lambda: data.pipeline_tiles(node, filters),
                )
            ]
        if kind == "projection":
            return [
                (("projection", scope, period), lambda: data.projection(node, filters))
            ]
        if node_level(node) == "seller":
            return []
        return [(("children", scope, period), lambda: data.children(node, filters))]


def prepare_dashboard(mart: str | Path) -> DashboardData | BaseException:
    """Copy the mart into memory for a dashboard page; return the data or the error.

    Runs before the viewer is known (in a preheated kernel). An error is
    logged and returned, so `open_dashboard` can show the friendly message.
    """
    if _in_kernel():
        log_to_server_console()
    try:
        return DashboardData(mart)
    except Exception as exc:
        _log_failure(f"loading mart {mart} for the dashboard", exc)
        return exc


def _wait_for_request() -> None:
    """Wait until Voilà hands a preheated kernel its request (no-op otherwise)."""
    if os.environ.get("VOILA_PREHEAT", "False") != "True":
        return
    from voila.utils import wait_for_request

    wait_for_request()


def open_dashboard(
    prepared: DashboardData | BaseException,
    environ: Mapping[str, str] | None = None,
) -> widgets.Widget:
    """Return the page of the viewer this kernel serves.

    Waits for the request in a preheated kernel, then reads the viewer
    (`viewer_from_environment`) and the query string (QUERY_STRING) from
    the environment. Any error is logged and the viewer sees
    `FRIENDLY_ERROR` or, for an unknown viewer, a short refusal.
    """
    if environ is None:
        _wait_for_request()
        environ = os.environ
    if isinstance(prepared, BaseException):
        return widgets.HTML(message_html(FRIENDLY_ERROR, "cockpit-status-error"))
    try:
        viewer = viewer_from_environment(environ)
    except ScopeError as exc:
        logger.warning("dashboard request rejected: %s", exc)
        return widgets.HTML(
            message_html(
                "You are not registered for these dashboards. Ask the commercial "
                "operations hub for access.",
                "cockpit-status-error",
            )
        )
    except Exception as exc:
        _log_failure("reading the viewer", exc)
        return widgets.HTML(message_html(FRIENDLY_ERROR, "cockpit-status-error"))
    return build_app(
        prepared,
        viewer,
        parse_request(environ.get("QUERY_STRING")),
        background=_in_kernel(),
    )


def build_app(
    data: DashboardData,
    viewer: Viewer,
    request: Request | None = None,
    background: bool = False,
) -> widgets.Widget:
    """Restrict `data` to the viewer and return the page widget (or the friendly message).

    With `background`, the first refresh runs in a thread
    (`CockpitApp.refresh_in_background`), so the widget returns at once.
    """
    try:
        data.restrict(viewer.scope)
        app = CockpitApp(data, viewer, request, defer_refresh=background)
        if background:
            app.refresh_in_background()
    except Exception as exc:
        _log_failure(f"dashboard for {viewer.user}", exc)
        return widgets.HTML(message_html(FRIENDLY_ERROR, "cockpit-status-error"))
    logger.info("dashboard opened for %s (%s)", viewer.user, viewer.scope.label())
    app.widget._cockpit_app = app  # type: ignore[attr-defined]
    return app.widget


def dashboard_view(
    mart: str | Path, viewer: Viewer | None = None, query: str = ""
) -> widgets.Widget:
    """Build the page of `mart` for `viewer` (default: the anonymous company viewer).

    The one-call form of `prepare_dashboard` and `open_dashboard`, for
    notebooks and tests that know their viewer. `query` is a query string
    such as "region=North&view=huddle".
    """
    prepared = prepare_dashboard(mart)
    if isinstance(prepared, BaseException):
        return widgets.HTML(message_html(FRIENDLY_ERROR, "cockpit-status-error"))
    return build_app(prepared, viewer or ANONYMOUS, parse_request(query))
