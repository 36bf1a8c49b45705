"""HTML reports: notebook export, figures and tables for notebooks, run index.

`export_html` turns an executed notebook into one self-contained HTML file:
no code cells, no prompts and no script or stylesheet fetched from the
network. Notebooks call `show_figure` and `show_table` so that what they show
survives that export: plotly.js travels inline inside the first figure of a
kernel, and every value from the data is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import logging
import numbers
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd

from cockpit.errors import ReportError
from cockpit.paths import TEMPLATES_DIR

logger = logging.getLogger(__name__)

#: nbconvert template (under TEMPLATES_DIR) for notebook reports.
REPORT_TEMPLATE = "cockpit_report"

#: Cell tags that drop a whole cell, or only its output, from the report.
REMOVE_CELL_TAGS = frozenset({"remove-cell", "remove_cell"})
REMOVE_OUTPUT_TAGS = frozenset({"remove-output", "remove_output"})

#: Rows `show_table` prints before it cuts a table short.
DEFAULT_MAX_ROWS = 500

# JupyterLab's stylesheet right-aligns every cell of rendered HTML tables with
# a more specific selector, so the alignment rules here need !important.
_TABLE_STYLE = (
    "<style>"
    "table.cockpit-table{border-collapse:collapse;margin:.5em 0;font-size:13px}"
    "table.cockpit-table th,table.cockpit-table td{padding:3px 10px;"
    "border-bottom:1px solid #ddd;text-align:left!important}"
    "table.cockpit-table th{background:#f4f4f4}"
    "table.cockpit-table td.num{text-align:right!important;"
    "font-variant-numeric:tabular-nums}"
    "table.cockpit-table caption{text-align:left;font-weight:bold;padding:4px 0}"
    "</style>"
)

# Set once this kernel has displayed plotly.js; later figures reuse it.
_plotlyjs_shown = False

Formatter = str | Callable[[Any], str]


def export_html(
    ipynb_path: str | Path, html_path: str | Path, title: str | None = None
) -> Path:
    """Write `ipynb_path` as a self-contained HTML report at `html_path`.

    Code cells' inputs and all prompts are left out, and so are cells tagged
    `remove-cell` and outputs of cells tagged `remove-output`. The page loads
    nothing from the network. A warning is logged when a notebook output
    itself references an http(s) script or stylesheet. `title` defaults to
    the notebook's file name. Returns `html_path`. Raises ReportError when
    the notebook cannot be read or converted.
    """
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    ipynb_path = Path(ipynb_path)
    html_path = Path(html_path)
    try:
        notebook = nbformat.read(ipynb_path, as_version=4)
    except (OSError, ValueError) as exc:
        raise ReportError(
            f"cannot read notebook {ipynb_path}: {exc}; check that it is an "
            "executed .ipynb file"
        ) from exc

    exporter = HTMLExporter(
        template_name=REPORT_TEMPLATE, extra_template_basedirs=[str(TEMPLATES_DIR)]
    )
    exporter.exclude_input = True
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.register_preprocessor(
        TagRemovePreprocessor(
            remove_cell_tags=set(REMOVE_CELL_TAGS),
            remove_all_outputs_tags=set(REMOVE_OUTPUT_TAGS),
            enabled=True,
        ),
        enabled=True,
    )
    resources = {"metadata": {"name": title or ipynb_path.stem}}
    try:
        body, _ = exporter.from_notebook_node(notebook, resources=resources)
    except Exception as exc:  # nbconvert raises many types: Jinja, traitlets, …
        raise ReportError(
            f"cannot convert {ipynb_path} to HTML: {type(exc).__name__}: {exc}"
        ) from exc

    remote = remote_references(body)
    if remote:
        logger.warning(
            "%s references %d remote resource(s), e.g. %s; the report needs a "
            "network to show them. Display figures with cockpit.report.show_figure",
            ipynb_path,
            len(remote),
            remote[0],
        )
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(body, encoding="utf-8")
    return html_path


class _ResourceFinder(HTMLParser):
    """Collect `src` and `href` of script and link tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.references: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("script", "link"):
            return
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.references.append((tag, value))


def resource_references(page: str) -> list[tuple[str, str]]:
    """Return (tag, url) for every `src`/`href` of a script or link tag in `page`."""
    finder = _ResourceFinder()
    finder.feed(page)
    finder.close()
    return finder.references


def remote_references(page: str) -> list[str]:
    """Return the script and link URLs in `page` that need a network.

    Those are URLs starting with http://, https:// or a bare //.
    """
    return [
        url
        for _, url in resource_references(page)
        if url.strip().lower().startswith(("http://", "https://", "//"))
    ]


def figure_html(figure: Any, include_plotlyjs: bool) -> str:
    """Render a plotly figure as an HTML fragment.

    With `include_plotlyjs`, the fragment carries the whole plotly.js bundle
    inline (about 4.8 MB for plotly 7.1); without it, the page must already
    have loaded plotly.js. The fragment never refers to a CDN.
    """
    height = figure.layout.height
    return figure.to_html(
        include_plotlyjs=include_plotlyjs,
        include_mathjax=False,
        full_html=False,
        default_width="100%",
        default_height=f"{height}px" if height else "450px",
        config={"displaylogo": False, "responsive": True},
    )


def show_figure(figure: Any, embed_plotlyjs: bool | None = None) -> None:
    """Display a plotly figure as HTML that works offline.

    The first figure shown in a kernel embeds plotly.js inline and later ones
    reuse it, so an executed notebook and its HTML export render with no
    network. `embed_plotlyjs` True or False forces the choice.

    NOTE: a later figure relies on an earlier output in the same page. A
    first-figure cell re-run on its own in JupyterLab loses the bundle from
    its output, so restart the kernel and run all cells before saving.
    """
    from IPython.display import HTML, display

    global _plotlyjs_shown
    embed = (not _plotlyjs_shown) if embed_plotlyjs is None else embed_plotlyjs
    display(HTML(figure_html(figure, include_plotlyjs=embed)))
    if embed:
        _plotlyjs_shown = True


def table_html(
    frame: pd.DataFrame,
    formats: Mapping[str, Formatter] | None = None,
    caption: str | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
) -> str:
    """Render `frame` as an HTML table with every value escaped.

    `formats` maps a column to a `str.format` pattern such as "{:,.0f}" or
    "{:.1%}", or to a function returning text. Other columns print numbers
    with thousands separators, dates as YYYY-MM-DD and missing values as
    empty cells. A named or non-default index is shown as leading columns.
    Rows past `max_rows` are left out and counted in a last row; an empty
    frame shows one "no rows" line. Raises
    ValueError when `formats` names a column the frame lacks.
    """
    formats = dict(formats or {})
    if _has_meaningful_index(frame):
        frame = frame.reset_index()
    unknown = [name for name in formats if name not in frame.columns]
    if unknown:
        raise ValueError(
            f"formats name column(s) {unknown} that the table lacks; "
            f"columns are {[str(c) for c in frame.columns]}"
        )
    visible = frame if max_rows is None else frame.head(max_rows)
    numeric = {
        column: pd.api.types.is_numeric_dtype(frame[column])
        and not pd.api.types.is_bool_dtype(frame[column])
        for column in frame.columns
    }
    parts = [_TABLE_STYLE, '<table class="cockpit-table">']
    if caption:
        parts.append(f"<caption>{html.escape(caption)}</caption>")
    header = "".join(f"<th>{html.escape(str(column))}</th>" for column in frame.columns)
    parts.append(f"<thead><tr>{header}</tr></thead><tbody>")
    for row in visible.itertuples(index=False, name=None):
        cells = []
        for column, value in zip(frame.columns, row, strict=True):
            text = _format_value(value, formats.get(column))
            css = ' class="num"' if numeric[column] else ""
            cells.append(f"<td{css}>{html.escape(text)}</td>")
        parts.append(f"<tr>{''.join(cells)}</tr>")
    left_out = len(frame) - len(visible)
    if frame.empty:
        parts.append(
            f'<tr><td colspan="{max(len(frame.columns), 1)}">no rows</td></tr>'
        )
    elif left_out:
        parts.append(
            f'<tr><td colspan="{len(frame.columns)}">… {left_out:,} more row(s) '
            "not shown</td></tr>"
        )
    parts.append("</tbody></table>")
    return "".join(parts)


def show_table(
    frame: pd.DataFrame,
    formats: Mapping[str, Formatter] | None = None,
    caption: str | None = None,
    max_rows: int | None = DEFAULT_MAX_ROWS,
) -> None:
    """Display `frame` as a readable, escaped HTML table (see `table_html`)."""
    from IPython.display import HTML, display

    display(HTML(table_html(frame, formats, caption=caption, max_rows=max_rows)))


def _has_meaningful_index(frame: pd.DataFrame) -> bool:
    index = frame.index
    if any(name is not None for name in index.names):
        return True
    return not (
        isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
    )


def _format_value(value: Any, formatter: Formatter | None) -> str:
    if _is_missing(value):
        return ""
    if formatter is not None:
        if callable(formatter):
            return str(formatter(value))
        return formatter.format(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{value:,}"
    if isinstance(value, numbers.Real):
        return f"{value:,.2f}"
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        if value.time() == time(0) and value.tzinfo is None:
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False  # list-like values are never "missing"


def render_run_index(index: Mapping[str, Any]) -> str:
    """Render the index page of one batch run from its index.json mapping.

    Each entry of `index["results"]` needs region, business_unit, notebook,
    as_of, status, duration_s and error, plus output_html and output_ipynb
    as paths relative to the run folder (or None). Every text is escaped.
    """
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    rows = []
    for result in index.get("results", []):
        row = dict(result)
        row["html_href"] = _href(result.get("output_html"))
        row["ipynb_href"] = _href(result.get("output_ipynb"))
        rows.append(row)
    view = {
        **{key: index.get(key) for key in _INDEX_KEYS},
        "results": rows,
        "published": index.get("published") or [],
        "publish_error": index.get("publish_error"),
    }
    template = environment.get_template("run_index.html.j2")
    return template.render(index=view)


_INDEX_KEYS = (
    "run_id",
    "mart",
    "started_at",
    "finished_at",
    "executor",
    "parameters_file",
    "succeeded",
    "failed",
)


def _href(relative: str | None) -> str | None:
    """Percent-encode a run-relative path for use in an href."""
    if not relative:
        return None
    return "/".join(urllib.parse.quote(part) for part in Path(relative).parts)


def write_run_index(run_dir: str | Path, index: Mapping[str, Any]) -> Path:
    """Write index.json and index.html of a run into `run_dir`; return the HTML path."""
    run_dir = Path(run_dir)
    (run_dir / "index.json").write_text(
        json.dumps(index, indent=2, default=str) + "\n", encoding="utf-8"
    )
    html_path = run_dir / "index.html"
    html_path.write_text(render_run_index(index), encoding="utf-8")
    return html_path
