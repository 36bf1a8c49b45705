"""The KPI dashboard: ipywidgets view of one mart, served by Voilà.

`dashboard_view(mart, scope)` is the one call of notebooks/dashboard.ipynb.
The view shows region and business-unit drop-downs, one tile per KPI of
`TILE_KPIS` for the calendar year of the mart's as-of date up to that date,
and revenue against target by month for that year. Every change of a
drop-down recomputes tiles and chart from the mart through a new read-only
connection, so the dashboard keeps no file handle between requests and
never writes to the mart.

The viewer's scope is applied in SQL (`Scope.where`), and the drop-downs
can only narrow it: their options are the regions and units found inside
the scope.

Each tile is an HTML element ``<div class="kpi-tile" data-kpi="NAME">``
whose ``.kpi-value`` child contains the formatted number, so browser tests
and people's own scripts can find it.
"""

from __future__ import annotations

import html
import json
import logging
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from cockpit import charts
from cockpit.errors import CockpitError, MartError
from cockpit.kpi import KPIS, compute_kpi, format_value, kpi_values
from cockpit.mart import connect, get_meta
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: KPI tiles in display order.
TILE_KPIS: tuple[str, ...] = (
    "revenue",
    "margin_pct",
    "attainment_pct",
    "won_value",
    "win_rate",
    "open_pipeline",
    "weighted_pipeline",
)

#: Drop-down value that means "no filter". Real names are never empty.
ALL = ""

#: Reporting currency when the mart does not name one.
DEFAULT_CURRENCY = "EUR"

#: Shown to viewers when data cannot be read; details go to the server log.
FRIENDLY_ERROR = (
    "The dashboard cannot show its data right now. "
    "Please try again later or tell the commercial operations hub; "
    "the details are in the dashboard server's log."
)

_STYLE = """
<style>
.cockpit-dashboard { font-family: var(--jp-ui-font-family, sans-serif); }
.cockpit-header h2 { margin: 0 0 4px 0; }
.cockpit-header .cockpit-subtitle { color: #555; }
.cockpit-tiles { display: flex; flex-wrap: wrap; gap: 12px; }
.kpi-tile {
  border: 1px solid #d0d7de; border-radius: 6px; padding: 10px 14px;
  min-width: 150px; min-height: 112px; box-sizing: border-box; background: #f8fafc;
}
.kpi-tile .kpi-label { font-size: 12px; color: #57606a; text-transform: uppercase; }
.kpi-tile .kpi-value { font-size: 24px; font-weight: 600; margin-top: 4px; }
.kpi-tile .kpi-note { font-size: 12px; color: #57606a; margin-top: 2px; }
.cockpit-status-error { color: #b42318; font-weight: 600; }
</style>
"""


@dataclass(frozen=True)
class Period:
    """Dates the tiles cover: `start`..`end` (inclusive) and the pipeline `as_of`."""

    start: date
    end: date
    as_of: date


def year_to_date(as_of: date) -> Period:
    """Return the period from 1 January of `as_of`'s year up to `as_of`."""
    return Period(start=date(as_of.year, 1, 1), end=as_of, as_of=as_of)


def read_as_of(con: duckdb.DuckDBPyConnection) -> date:
    """Return the mart's as-of date: `mart_meta.as_of`, else the last invoice date.

    Raises MartError when the stored value is not an ISO date or when the
    mart has neither an as-of date nor any invoice line.
    """
    stored = get_meta(con).get("as_of")
    if stored:
        try:
            return date.fromisoformat(stored)
        except ValueError as exc:
            raise MartError(
                f"mart_meta.as_of is {stored!r}, not a date; "
                "store it as YYYY-MM-DD with set_meta"
            ) from exc
    latest = con.execute("SELECT max(date) FROM transactions").fetchone()[0]
    if latest is None:
        raise MartError(
            "the mart has no as-of date and no invoice lines; "
            "load data with `cockpit demo` or `cockpit ingest` first"
        )
    logger.info("mart has no as_of in mart_meta; using last invoice date %s", latest)
    return latest


def read_currency(con: duckdb.DuckDBPyConnection) -> str:
    """Return the mart's reporting currency code, EUR when the mart names none."""
    meta = get_meta(con)
    return meta.get("currency") or meta.get("reporting_currency") or DEFAULT_CURRENCY


def filter_options(
    con: duckdb.DuckDBPyConnection, scope: Scope
) -> dict[str, list[str]]:
    """Return the regions and business units present inside `scope`, sorted.

    Both fact tables count: a region with open deals but no invoice yet is
    still offered. Keys of the result are "region" and "business_unit".
    """
    where, params = scope.where()
    options: dict[str, list[str]] = {}
    for column in ("region", "business_unit"):
        rows = con.execute(
            f"""
            SELECT DISTINCT {column} FROM (
                SELECT {column} FROM transactions WHERE {where}
                UNION ALL
                SELECT {column} FROM opportunities WHERE {where}
            )
            WHERE {column} IS NOT NULL
            ORDER BY {column}
            """,
            [*params, *params],
        ).fetchall()
        options[column] = [row[0] for row in rows]
    return options


def full_year_target(
    con: duckdb.DuckDBPyConnection, scope: Scope, as_of: date
) -> float | None:
    """Return the revenue target of `scope` for the calendar year of `as_of`.

    None when no target of the scope lies within that year.
    """
    return kpi_values(
        con,
        ["target"],
        scope=scope,
        start=date(as_of.year, 1, 1),
        end=date(as_of.year, 12, 31),
        as_of=as_of,
    )["target"]


def tile_values(
    con: duckdb.DuckDBPyConnection, scope: Scope, period: Period
) -> dict[str, float | None]:
    """Compute the value of every tile KPI for `scope` over `period`.

    Every tile but attainment is `kpi_values` over `period`. Attainment is
    year-to-date revenue divided by the full-year target ("target" in the
    result), so it reads as progress towards the year's target. The
    registry's attainment_pct cannot serve here, because a full-year target
    does not lie within a year-to-date period and so would be undefined.
    Attainment is None when the target is missing or not positive.
    """
    values = kpi_values(
        con,
        [name for name in TILE_KPIS if name != "attainment_pct"],
        scope=scope,
        start=period.start,
        end=period.end,
        as_of=period.as_of,
    )
    target = full_year_target(con, scope, period.as_of)
    revenue = values.get("revenue")
    values["target"] = target
    values["attainment_pct"] = (
        revenue / target
        if revenue is not None and target is not None and target > 0
        else None
    )
    return values


def monthly_revenue_vs_target(
    con: duckdb.DuckDBPyConnection, scope: Scope, as_of: date
) -> pd.DataFrame:
    """Return revenue, last year's revenue and target per month of `as_of`'s year.

    Columns: month (YYYY-MM, all twelve months), revenue (up to `as_of`,
    missing after it), revenue_last_year (same month a year earlier) and
    target. The target of a month is the scope's full-year revenue target
    divided by twelve, and missing when the scope has no target.
    """
    year_start = date(as_of.year, 1, 1)
    this_year = compute_kpi(
        con,
        "revenue",
        by=("month",),
        scope=scope,
        start=year_start,
        end=as_of,
        as_of=as_of,
    )
    last_year = compute_kpi(
        con,
        "revenue",
        by=("month",),
        scope=scope,
        start=date(as_of.year - 1, 1, 1),
        end=date(as_of.year - 1, 12, 31),
        as_of=as_of,
    )
    last_year = last_year.assign(
        month=[f"{int(str(m)[:4]) + 1}{str(m)[4:]}" for m in last_year["month"]]
    ).rename(columns={"revenue": "revenue_last_year"})
    target = full_year_target(con, scope, as_of)
    months = pd.DataFrame({"month": [f"{as_of.year}-{m:02d}" for m in range(1, 13)]})
    frame = months.merge(this_year.astype({"month": str}), on="month", how="left")
    frame = frame.merge(last_year, on="month", how="left")
    frame["target"] = target / 12 if target else np.nan
    return frame


def revenue_vs_target_figure(frame: pd.DataFrame, title: str) -> go.Figure:
    """Draw the frame of `monthly_revenue_vs_target` as bars and lines."""
    return charts.revenue_vs_target_figure(frame, title)


def figure_output(figure: go.Figure) -> dict:
    """Return `figure` as a display_data output for an Output widget.

    The output carries plotly's own MIME type, which the jupyterlab-plotly
    renderer of the Voilà page draws with its bundled plotly.js, so the
    page needs no script from outside the dashboard server.
    """
    spec = json.loads(figure.to_json())
    spec["config"] = {"displaylogo": False, "responsive": True}
    return {
        "output_type": "display_data",
        "data": {
            "application/vnd.plotly.v1+json": spec,
            "text/plain": "Revenue against target by month",
        },
        "metadata": {},
    }


#: Tile tooltips that differ from the KPI registry's description.
_TILE_DESCRIPTIONS = {
    "attainment_pct": "Year-to-date revenue divided by the full-year revenue target.",
}


def tile_html(name: str, text: str, note: str = "") -> str:
    """Return the HTML of one KPI tile; label, value and note are escaped."""
    definition = KPIS[name]
    description = _TILE_DESCRIPTIONS.get(name, definition.description)
    note_html = f'<div class="kpi-note">{html.escape(note)}</div>' if note else ""
    return (
        f'<div class="kpi-tile" data-kpi="{html.escape(name)}" '
        f'title="{html.escape(description)}">'
        f'<div class="kpi-label">{html.escape(definition.label)}</div>'
        f'<div class="kpi-value">{html.escape(text)}</div>'
        f"{note_html}</div>"
    )


def message_html(text: str, css_class: str = "cockpit-status") -> str:
    """Return `text` escaped inside a div of class `css_class`."""
    return f'<div class="{css_class}">{html.escape(text)}</div>'


class Dashboard:
    """Widgets of the KPI dashboard of one mart, for one viewer scope.

    `widget` is the box to display. `refresh()` recomputes tiles and chart
    for the current drop-down values; the drop-downs call it on change.
    `values` and `texts` contain the last tile numbers and their formatted
    text, `monthly` the last chart data.
    """

    def __init__(self, mart: str | Path, scope: Scope | None = None) -> None:
        self.mart = Path(mart)
        self.scope = scope or Scope()
        with connect(self.mart, read_only=True) as con:
            self.as_of = read_as_of(con)
            self.currency = read_currency(con)
            options = filter_options(con, self.scope)
        self.period = year_to_date(self.as_of)
        self.values: dict[str, float | None] = {}
        self.texts: dict[str, str] = {}
        self.monthly = pd.DataFrame()

        self.region = self._dropdown(
            "Region", "region", options["region"], self.scope.region
        )
        self.business_unit = self._dropdown(
            "Business unit",
            "business_unit",
            options["business_unit"],
            self.scope.business_unit,
        )
        self.header = widgets.HTML(self._header_html())
        self.header.add_class("cockpit-header")
        self.tiles = {name: widgets.HTML(tile_html(name, "…")) for name in TILE_KPIS}
        tile_box = widgets.Box(list(self.tiles.values()))
        tile_box.add_class("cockpit-tiles")
        self.chart = widgets.Output()
        self.chart.add_class("cockpit-chart")
        # A fixed height keeps the tiles in place while "Updating…" shows.
        self.status = widgets.HTML("", layout=widgets.Layout(min_height="24px"))
        self.status.add_class("cockpit-status")
        self.widget = widgets.VBox(
            [
                widgets.HTML(_STYLE),
                self.header,
                widgets.HBox([self.region, self.business_unit]),
                self.status,
                tile_box,
                self.chart,
            ]
        )
        self.widget.add_class("cockpit-dashboard")

        self.refresh()
        self.region.observe(self._on_filter_change, names="value")
        self.business_unit.observe(self._on_filter_change, names="value")

    def _dropdown(
        self, label: str, field: str, names: list[str], fixed: str | None
    ) -> widgets.Dropdown:
        """Build a drop-down; a field the scope fixes shows only that value."""
        if fixed is not None:
            dropdown = widgets.Dropdown(
                options=[(fixed, fixed)], value=fixed, description=label, disabled=True
            )
        else:
            choices = [(f"All {label.lower()}s", ALL)] + [(n, n) for n in names]
            dropdown = widgets.Dropdown(options=choices, value=ALL, description=label)
        dropdown.style.description_width = "initial"
        dropdown.add_class(f"filter-{field.replace('_', '-')}")
        return dropdown

    def selected_scope(self) -> Scope:
        """Return the viewer's scope narrowed by the drop-down values."""
        return self.scope.narrow(
            region=self.region.value or None,
            business_unit=self.business_unit.value or None,
        )

    def _header_html(self) -> str:
        return (
            "<h2>Commercial performance</h2>"
            '<div class="cockpit-subtitle">'
            f"{html.escape(self.selected_scope().label())} · year to date "
            f"{self.period.start:%d %b %Y} – {self.period.end:%d %b %Y} · "
            f'<span class="as-of" data-as-of="{self.as_of.isoformat()}">'
            f"as of {self.as_of:%d %b %Y}</span></div>"
        )

    def refresh(self) -> None:
        """Recompute header, tiles and chart for the current drop-down values.

        On any error the tiles show "n/a", the chart is cleared and the
        viewer sees `FRIENDLY_ERROR`, so no number of the previous selection
        stays next to the new one. A CockpitError or DuckDB error is logged
        as one line, any other exception with its traceback.
        """
        scope = self.selected_scope()
        self.status.value = message_html("Updating…")
        try:
            with connect(self.mart, read_only=True) as con:
                values = tile_values(con, scope, self.period)
                monthly = monthly_revenue_vs_target(con, scope, self.as_of)
            texts = {
                name: format_value(
                    values.get(name), KPIS[name].unit, currency=self.currency
                )
                for name in TILE_KPIS
            }
            target_text = format_value(
                values.get("target"), KPIS["target"].unit, currency=self.currency
            )
            figure = revenue_vs_target_figure(
                monthly,
                f"Revenue by month, {self.as_of.year}, against last year and target",
            )
        except (CockpitError, duckdb.Error) as exc:
            logger.error("dashboard refresh for %s failed: %s", scope.label(), exc)
            self._show_failure()
            return
        except Exception:
            # The viewer gets the friendly message, the log the traceback.
            logger.exception("dashboard refresh for %s failed", scope.label())
            self._show_failure()
            return

        self.values = values
        self.texts = texts
        self.monthly = monthly
        notes = {"attainment_pct": f"of {self.as_of.year} target {target_text}"}
        self.header.value = self._header_html()
        for name, tile in self.tiles.items():
            tile.value = tile_html(name, texts[name], notes.get(name, ""))
        self.chart.outputs = (figure_output(figure),)
        self.status.value = ""
        logger.info("dashboard refreshed for %s", scope.label())

    def _show_failure(self) -> None:
        """Blank tiles and chart and show `FRIENDLY_ERROR`."""
        self.values = {}
        self.texts = {name: "n/a" for name in TILE_KPIS}
        self.monthly = pd.DataFrame()
        self.header.value = self._header_html()
        for name, tile in self.tiles.items():
            tile.value = tile_html(name, self.texts[name])
        self.chart.outputs = ()
        self.status.value = message_html(FRIENDLY_ERROR, "cockpit-status-error")

    def _on_filter_change(self, change: dict) -> None:
        self.refresh()


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


def dashboard_view(mart: str | Path, scope: Scope | None = None) -> widgets.Widget:
    """Build the dashboard of `mart` for `scope` and return the widget to display.

    Inside a Jupyter kernel, logs go to the server log
    (`log_to_server_console`). When the mart cannot be read (missing file,
    missing table, bad as-of date) or building fails in any other way, the
    error is logged and the viewer sees `FRIENDLY_ERROR` in place of a
    traceback.
    """
    if _in_kernel():
        log_to_server_console()
    try:
        return Dashboard(mart, scope).widget
    except (CockpitError, duckdb.Error) as exc:
        logger.error("dashboard for mart %s cannot start: %s", mart, exc)
    except Exception:
        # The viewer gets the friendly message, the log the traceback.
        logger.exception("dashboard for mart %s cannot start", mart)
    return widgets.HTML(message_html(FRIENDLY_ERROR, "cockpit-status-error"))
