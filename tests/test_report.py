"""HTML reports: notebook export, offline figures, escaped tables, run index."""

from __future__ import annotations

import logging
import re
from datetime import date
from html.parser import HTMLParser

import nbformat
import pandas as pd
import plotly.graph_objects as go
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from cockpit import report
from cockpit.errors import ReportError

# A script or link tag whose src or href reaches the network.
REMOTE_TAG = re.compile(
    r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//",
    re.IGNORECASE,
)
PLOTLY_BUNDLE_MARK = "plotly.js v"
XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


class TextCollector(HTMLParser):
    """Collect the text a reader sees, leaving out scripts and styles."""

    def __init__(self):
        super().__init__()
        self.parts = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def visible_text(page: str) -> str:
    collector = TextCollector()
    collector.feed(page)
    return "".join(collector.parts)


def html_output(text: str):
    return new_output("display_data", data={"text/html": text, "text/plain": "<HTML>"})


@pytest.fixture
def executed_notebook(tmp_path):
    """A notebook as papermill leaves it: code, outputs, markdown and math."""
    figure = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    notebook = new_notebook(
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3"},
            "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}},
        }
    )

    secret_code = new_code_cell("revenue = con.execute('SELECT 42').fetchall()")
    secret_code.execution_count = 1
    secret_code.outputs = [
        new_output("stream", name="stdout", text="total revenue 1,234.50\n")
    ]

    figures = new_code_cell("show_figure(fig)\nshow_figure(fig)")
    figures.execution_count = 2
    figures.outputs = [
        html_output(report.figure_html(figure, include_plotlyjs=True)),
        html_output(report.figure_html(figure, include_plotlyjs=False)),
    ]

    table = new_code_cell("show_table(frame)")
    table.execution_count = 3
    table.outputs = [
        html_output(
            report.table_html(pd.DataFrame({"account": [XSS], "revenue": [1.5]}))
        )
    ]

    hidden = new_code_cell("print('internal detail')")
    hidden.metadata["tags"] = ["remove-cell"]
    hidden.outputs = [new_output("stream", name="stdout", text="internal detail\n")]

    notebook.cells = [
        new_markdown_cell("# Review\n\nGrowth is $g = 5\\%$."),
        secret_code,
        figures,
        table,
        hidden,
    ]
    path = tmp_path / "review.ipynb"
    nbformat.write(notebook, path)
    return path


@pytest.fixture
def exported(executed_notebook, tmp_path):
    html_path = report.export_html(executed_notebook, tmp_path / "out" / "review.html")
    return html_path.read_text(encoding="utf-8")


def test_export_writes_file(executed_notebook, tmp_path):
    target = tmp_path / "deep" / "folder" / "review.html"
    assert report.export_html(executed_notebook, target) == target
    assert target.is_file()


def test_export_drops_code(exported):
    text = visible_text(exported)
    assert "con.execute" not in text
    assert "show_figure(fig)" not in text
    assert "hl-ipython3" not in exported


def test_export_drops_prompts(exported):
    assert "In&nbsp;[" not in exported
    assert 'class="jp-InputPrompt' not in exported
    assert 'class="jp-OutputPrompt' not in exported


def test_export_keeps_outputs(exported):
    text = visible_text(exported)
    assert "total revenue 1,234.50" in text
    assert "Growth is" in text


def test_export_removes_tagged_cell(exported):
    assert "internal detail" not in exported


def test_export_no_remote_scripts(exported):
    assert REMOTE_TAG.findall(exported) == []


def test_export_no_cdn_loaders(exported):
    assert "require.min.js" not in exported
    assert "MathJax.js" not in exported
    assert "mermaid.esm" not in exported
    assert "html-manager" not in exported


def test_export_plotly_inline_once(exported):
    assert exported.count(PLOTLY_BUNDLE_MARK) == 1
    assert exported.count("Plotly.newPlot") == 2


def test_export_escapes_table(exported):
    assert XSS_ESCAPED in exported
    assert XSS not in exported


def test_export_title(executed_notebook, tmp_path):
    page = report.export_html(
        executed_notebook, tmp_path / "t.html", title="02_forecast · East / Furniture"
    ).read_text(encoding="utf-8")
    assert "<title>02_forecast · East / Furniture</title>" in page


def test_export_warns_on_remote(tmp_path, caplog):
    notebook = new_notebook()
    cell = new_code_cell("fig.show()")
    cell.outputs = [html_output('<script src="https://cdn.example.org/x.js"></script>')]
    notebook.cells = [cell]
    path = tmp_path / "remote.ipynb"
    nbformat.write(notebook, path)
    with caplog.at_level(logging.WARNING, logger="cockpit.report"):
        page = report.export_html(path, tmp_path / "remote.html").read_text()
    assert report.remote_references(page) == ["https://cdn.example.org/x.js"]
    assert "1 remote resource(s)" in caplog.text


def test_export_missing_notebook(tmp_path):
    with pytest.raises(ReportError) as caught:
        report.export_html(tmp_path / "absent.ipynb", tmp_path / "absent.html")
    assert "absent.ipynb" in str(caught.value)


def test_export_invalid_notebook(tmp_path):
    path = tmp_path / "broken.ipynb"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ReportError):
        report.export_html(path, tmp_path / "broken.html")


def test_remote_references_kinds():
    page = (
        '<script src="//cdn.example.org/a.js"></script>'
        '<link rel="stylesheet" href="HTTP://example.org/a.css">'
        '<script src="local.js"></script>'
        '<a href="https://example.org">a plain link is fine</a>'
        "<script>var u = '<script src=\"https://x\">';</script>"
    )
    assert report.remote_references(page) == [
        "//cdn.example.org/a.js",
        "HTTP://example.org/a.css",
    ]


def test_figure_html_with_bundle():
    fragment = report.figure_html(go.Figure(), include_plotlyjs=True)
    assert PLOTLY_BUNDLE_MARK in fragment
    assert REMOTE_TAG.findall(fragment) == []


def test_figure_html_without_bundle():
    fragment = report.figure_html(go.Figure(), include_plotlyjs=False)
    assert PLOTLY_BUNDLE_MARK not in fragment
    assert "Plotly.newPlot" in fragment


def test_figure_html_height():
    fragment = report.figure_html(go.Figure(layout={"height": 321}), False)
    assert "height:321px" in fragment


def test_show_figure_embeds_once(monkeypatch):
    monkeypatch.setattr(report, "_plotlyjs_shown", False)
    InteractiveShell.instance()
    with capture_output() as captured:
        report.show_figure(go.Figure())
        report.show_figure(go.Figure())
        report.show_figure(go.Figure(), embed_plotlyjs=True)
    pages = [output.data["text/html"] for output in captured.outputs]
    assert [PLOTLY_BUNDLE_MARK in page for page in pages] == [True, False, True]


def test_table_escapes_values():
    page = report.table_html(pd.DataFrame({"name": [XSS]}))
    assert XSS_ESCAPED in page
    assert XSS not in page


def test_table_escapes_headers():
    page = report.table_html(pd.DataFrame({"<b>region</b>": ["East"]}))
    assert "<th>&lt;b&gt;region&lt;/b&gt;</th>" in page


def test_table_escapes_formatted():
    page = report.table_html(pd.DataFrame({"name": ["x"]}), {"name": lambda v: XSS})
    assert XSS not in page


def test_table_formats():
    frame = pd.DataFrame({"revenue": [1234567.891], "share": [0.1234]})
    page = report.table_html(frame, {"revenue": "{:,.0f}", "share": "{:.1%}"})
    assert '<td class="num">1,234,568</td>' in page
    assert '<td class="num">12.3%</td>' in page


def test_table_default_formats():
    frame = pd.DataFrame(
        {
            "count": [1234567],
            "amount": [1234.5],
            "day": [pd.Timestamp("2024-06-30")],
            "when": [pd.Timestamp("2024-06-30 13:45")],
            "plain": [date(2024, 1, 2)],
        }
    )
    page = report.table_html(frame)
    assert ">1,234,567<" in page
    assert ">1,234.50<" in page
    assert ">2024-06-30<" in page
    assert ">2024-06-30 13:45:00<" in page
    assert ">2024-01-02<" in page


def test_table_missing_blank():
    page = report.table_html(pd.DataFrame({"x": [1.0, None], "y": ["a", None]}))
    assert page.count('<td class="num"></td>') == 1
    assert page.count("<td></td>") == 1


def test_table_unknown_format_column():
    with pytest.raises(ValueError) as caught:
        report.table_html(pd.DataFrame({"revenue": [1]}), {"revnue": "{:.0f}"})
    assert "'revnue'" in str(caught.value)


def test_table_max_rows():
    page = report.table_html(pd.DataFrame({"x": range(10)}), max_rows=3)
    assert page.count("<tr>") == 1 + 3 + 1
    assert "7 more row(s) not shown" in page


def test_table_empty():
    page = report.table_html(pd.DataFrame({"x": [], "y": []}))
    assert '<tr><td colspan="2">no rows</td></tr>' in page


def test_table_named_index_shown():
    frame = pd.DataFrame({"revenue": [1.0]}, index=pd.Index(["East"], name="region"))
    page = report.table_html(frame)
    assert "<th>region</th>" in page
    assert "<td>East</td>" in page


def test_table_range_index_hidden():
    page = report.table_html(pd.DataFrame({"x": ["a"]}))
    assert page.count("<th>") == 1


def test_table_caption_escaped():
    page = report.table_html(pd.DataFrame({"x": [1]}), caption="R&D <East>")
    assert "<caption>R&amp;D &lt;East&gt;</caption>" in page


def index_document(**changes):
    document = {
        "run_id": "20240101T000000Z-abc123",
        "mart": "/data/mart.duckdb",
        "started_at": "2024-01-01T00:00:00+00:00",
        "finished_at": "2024-01-01T00:01:00+00:00",
        "executor": "local processes (2 workers)",
        "parameters_file": None,
        "succeeded": 1,
        "failed": 1,
        "results": [
            {
                "region": "East",
                "business_unit": "Office Supplies",
                "notebook": "02_forecast",
                "as_of": "2024-06-30",
                "status": "succeeded",
                "duration_s": 12.345,
                "output_ipynb": "East/Office_Supplies/02_forecast.ipynb",
                "output_html": "East/Office_Supplies/02_forecast.html",
                "error": None,
            },
            {
                "region": XSS,
                "business_unit": "R&D",
                "notebook": "03_targets",
                "as_of": "2024-06-30",
                "status": "failed",
                "duration_s": 1.0,
                "output_ipynb": None,
                "output_html": None,
                "error": "ValueError: bad <img src=x onerror=alert(1)>",
            },
        ],
        "published": [],
        "publish_error": None,
    }
    document.update(changes)
    return document


def test_index_escapes_text():
    page = report.render_run_index(index_document())
    assert XSS not in page
    assert XSS_ESCAPED in page
    assert "<img" not in page
    assert "R&amp;D" in page


def test_index_lists_rows():
    page = report.render_run_index(index_document())
    assert page.count('<tr class="succeeded">') == 1
    assert page.count('<tr class="failed">') == 1
    assert '<a href="East/Office_Supplies/02_forecast.html">HTML</a>' in page
    assert ">12.3<" in page


def test_index_quotes_hrefs():
    document = index_document()
    document["results"][0]["output_html"] = "East/A B#1/02_forecast.html"
    page = report.render_run_index(document)
    assert 'href="East/A%20B%231/02_forecast.html"' in page


def test_index_no_remote(tmp_path):
    path = report.write_run_index(tmp_path, index_document())
    assert REMOTE_TAG.findall(path.read_text(encoding="utf-8")) == []
    assert (tmp_path / "index.json").is_file()


def test_index_publish_error():
    page = report.render_run_index(index_document(publish_error="mart <locked>"))
    assert "mart &lt;locked&gt;" in page
