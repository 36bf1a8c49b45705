"""HTML pieces of the dashboards: tiles, tables and messages, always escaped.

Every text that comes from the data (names of accounts, sellers, teams,
deals) and every formatted number passes through `html.escape` before it
is put into markup, so a name such as ``<script>alert(1)</script>`` is
shown as those characters and never runs. Plotly labels are escaped as
well (`plot_text`), because plotly reads a few HTML tags in labels.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from cockpit.kpi import KPIS, format_value

logger = logging.getLogger(__name__)

#: Shown to viewers when data cannot be read; details go to the server log.
FRIENDLY_ERROR = (
    "The dashboard cannot show its data right now. "
    "Please try again later or tell the commercial operations hub; "
    "the details are in the dashboard server's log."
)

#: Notice shown when a page requests data outside the viewer's scope.
OUTSIDE_SCOPE = "You do not have access to {what}. Showing {home} instead."

#: Labels and descriptions of tiles that are not in the KPI registry.
EXTRA_TILES = {
    "projected_attainment": (
        "Projected attainment",
        "Projected period-end revenue (actual, plus open deals weighted by win "
        "probability, plus the repeat-business run-rate) divided by the "
        "period's target.",
    ),
    "gap_to_target": (
        "Gap to target",
        "The period's revenue target minus the projected period-end revenue; "
        "negative when the projection exceeds the target.",
    ),
}

STYLE = """
<style>
.cockpit-dashboard { font-family: var(--jp-ui-font-family, sans-serif); color: #1f2328; }
.cockpit-header h2 { margin: 0 0 2px 0; font-size: 22px; }
.cockpit-header .cockpit-subtitle { color: #57606a; }
.cockpit-breadcrumb { align-items: center; gap: 2px; }
.cockpit-breadcrumb .widget-label { color: #57606a; margin: 0 2px; }
.cockpit-crumb button, button.cockpit-crumb { background: none; border: none;
  color: #0969da; text-decoration: underline; padding: 0 4px; }
.cockpit-group-title { font-weight: 600; margin: 10px 0 4px 0; color: #57606a;
  text-transform: uppercase; font-size: 12px; letter-spacing: .04em; }
.cockpit-tiles { display: flex; flex-wrap: wrap; gap: 10px; }
.kpi-tile { border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 12px;
  min-width: 150px; min-height: 96px; box-sizing: border-box; background: #f8fafc; }
.kpi-tile .kpi-label { font-size: 12px; color: #57606a; }
.kpi-tile .kpi-value { font-size: 22px; font-weight: 600; margin-top: 4px;
  font-variant-numeric: tabular-nums; }
.kpi-tile .kpi-note { font-size: 11px; color: #57606a; margin-top: 2px; }
.cockpit-status-error, .cockpit-notice-error { color: #b42318; font-weight: 600; }
.cockpit-notice { color: #9a6700; }
.cockpit-ok { color: #1a7f37; font-weight: 600; }
table.cockpit-table { border-collapse: collapse; margin: 4px 0 12px 0; font-size: 13px; }
table.cockpit-table th { text-align: left; border-bottom: 2px solid #d0d7de;
  padding: 4px 10px; color: #57606a; font-weight: 600; }
table.cockpit-table td { border-bottom: 1px solid #eaeef2; padding: 4px 10px; }
table.cockpit-table td.num, table.cockpit-table th.num { text-align: right;
  font-variant-numeric: tabular-nums; white-space: nowrap; }
.cockpit-drill { grid-gap: 0; align-items: center; font-size: 13px; }
.cockpit-drill .drill-head { font-weight: 600; color: #57606a; border-bottom: 2px solid #d0d7de; }
.cockpit-drill .num-head { text-align: right; padding: 2px 8px; }
.cockpit-drill .drill-cell { text-align: right; font-variant-numeric: tabular-nums;
  border-bottom: 1px solid #eaeef2; padding: 2px 8px; }
.cockpit-drill button.drill-name { justify-content: flex-start; text-align: left;
  background: none; border: none; color: #0969da; text-decoration: underline; }
</style>
"""


def escape(value: Any) -> str:
    """Return `value` as text with HTML special characters escaped."""
    return html.escape("" if value is None else str(value))


def message_html(text: str, css_class: str = "cockpit-status") -> str:
    """Return `text` escaped inside a div of class `css_class`."""
    return f'<div class="{escape(css_class)}">{escape(text)}</div>'


def tile_label(name: str) -> tuple[str, str]:
    """Return the label and description of a tile."""
    if name in EXTRA_TILES:
        return EXTRA_TILES[name]
    definition = KPIS[name]
    return definition.label, definition.description


def tile_html(name: str, text: str, note: str = "") -> str:
    """Return the HTML of one KPI tile; label, value and note are escaped.

    The tile is ``<div class="kpi-tile" data-kpi="NAME">`` and its value is
    in a ``.kpi-value`` child, so tests and scripts can find it.
    """
    label, description = tile_label(name)
    note_html = f'<div class="kpi-note">{escape(note)}</div>' if note else ""
    return (
        f'<div class="kpi-tile" data-kpi="{escape(name)}" title="{escape(description)}">'
        f'<div class="kpi-label">{escape(label)}</div>'
        f'<div class="kpi-value">{escape(text)}</div>'
        f"{note_html}</div>"
    )


def format_cell(value: Any, unit: str | None, currency: str) -> str:
    """Format one table cell: a KPI unit ('currency', 'percent', ...) or plain text.

    Dates are shown as ISO dates, missing values as an empty cell for text
    and 'n/a' for numbers.
    """
    if unit is None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if value is pd.NaT:
            return ""
        if isinstance(value, pd.Timestamp | datetime):
            if (value.hour, value.minute, value.second) == (0, 0, 0):
                return value.strftime("%Y-%m-%d")
            return value.strftime("%Y-%m-%d %H:%M")
        if isinstance(value, date):
            return value.isoformat()
        return str(value)
    if unit == "amount":
        return format_value(value, "currency", currency=currency)
    return format_value(value, unit, currency=currency)


def table_html(
    frame: pd.DataFrame,
    columns: Sequence[tuple[str, str, str | None]],
    currency: str,
    css_class: str = "cockpit-table",
    max_rows: int | None = None,
) -> str:
    """Return `frame` as an HTML table; every cell is escaped.

    `columns` lists (column, header, unit) with unit None for text and a
    KPI unit for numbers, which are right-aligned. With `max_rows`, only
    the first rows are shown and a last row counts the rows left out.
    """
    shown = frame if max_rows is None else frame.head(max_rows)
    head = "".join(
        f'<th class="{"num" if unit else "text"}">{escape(header)}</th>'
        for _, header, unit in columns
    )
    body = []
    for row in shown.itertuples(index=False):
        record = row._asdict()
        cells = "".join(
            f'<td class="{"num" if unit else "text"}" data-column="{escape(column)}">'
            f"{escape(format_cell(record.get(column), unit, currency))}</td>"
            for column, _, unit in columns
        )
        body.append(f"<tr>{cells}</tr>")
    if max_rows is not None and len(frame) > max_rows:
        body.append(
            f'<tr><td colspan="{len(columns)}">{escape(len(frame) - max_rows)} more '
            "row(s) not shown</td></tr>"
        )
    if not body:
        body.append(f'<tr><td colspan="{len(columns)}">No rows.</td></tr>')
    return (
        f'<table class="{escape(css_class)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def plot_text(values: Sequence[Any]) -> list[str]:
    """Return labels for plotly with HTML special characters escaped."""
    return [escape(value) for value in values]


def figure_output(figure: go.Figure, text: str) -> dict:
    """Return `figure` as a display_data output for an Output widget.

    The output carries plotly's own MIME type, which the jupyterlab-plotly
    renderer of the Voilà page draws with its bundled plotly.js, so the
    page needs no script from outside the dashboard server. `text` is the
    plain-text alternative.
    """
    spec = json.loads(figure.to_json())
    spec["config"] = {"displaylogo": False, "responsive": True}
    return {
        "output_type": "display_data",
        "data": {"application/vnd.plotly.v1+json": spec, "text/plain": text},
        "metadata": {},
    }
