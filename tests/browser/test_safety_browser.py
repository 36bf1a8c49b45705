"""Names from the data stay text, and a failing cell shows no traceback.

The module serves a copy of the demo mart whose company, team, seller and
account names are HTML and script markup, with a copy of the dashboard
notebook that ends in a failing cell. Markup that ran would set
`window.__xss` or open a dialog, and the tests fail on either. They also
check that the names are shown as the characters they are. The same names go through
the two HTML reports of the project (the huddle pack and a notebook
export) and are checked in Chromium too.
"""

from __future__ import annotations

import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from cockpit.huddle import build_huddle, render_huddle
from cockpit.mart import connect
from cockpit.report import export_html
from cockpit.serve import DASHBOARD_NOTEBOOK

from .conftest import TIMEOUT_MS, running_server, wait_idle

pytestmark = pytest.mark.browser

ACCOUNT = "<script>window.__xss = 1; alert(1)</script>"
SELLER = '<img src=x onerror="window.__xss = 2">'
TEAM = '<svg onload="window.__xss = 3">'
COMPANY = "<i>Acme & Sons</i>"
SECRET = "secret-detail-42"
FAILING_CELL = f"raise RuntimeError('{SECRET}')"


@pytest.fixture(scope="module")
def hostile_mart(demo_mart, tmp_path_factory):
    """The demo mart with markup in place of a team, a seller and an account name."""
    path = tmp_path_factory.mktemp("hostile") / "demo.duckdb"
    shutil.copy(demo_mart, path)
    with connect(path) as con:
        account = con.execute(
            """
            SELECT account_id FROM transactions WHERE rep_id = 'REP-002'
            GROUP BY 1 ORDER BY sum(net_revenue) DESC LIMIT 1
            """
        ).fetchone()[0]
        con.execute(
            "UPDATE accounts SET name = ? WHERE account_id = ?", [ACCOUNT, account]
        )
        con.execute("UPDATE reps SET name = ? WHERE rep_id = 'REP-002'", [SELLER])
        con.execute("UPDATE reps SET team = ? WHERE team = 'North-1'", [TEAM])
        con.execute("UPDATE mart_meta SET value = ? WHERE key = 'company'", [COMPANY])
    return path


@pytest.fixture(scope="module")
def failing_notebook(tmp_path_factory):
    """The dashboard notebook with a last cell that raises."""
    notebook = nbformat.read(DASHBOARD_NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(FAILING_CELL))
    path = tmp_path_factory.mktemp("notebook") / "dashboard.ipynb"
    nbformat.write(notebook, path)
    return path


@pytest.fixture(scope="module")
def hostile_server(hostile_mart, access_file, failing_notebook, tmp_path_factory):
    with running_server(
        hostile_mart,
        access_file,
        tmp_path_factory.mktemp("voila-hostile"),
        notebook=failing_notebook,
        pool_size=1,
        extra_env={"COCKPIT_PREFETCH": "0"},
    ) as server:
        yield server


@pytest.fixture(scope="module")
def ceo_page(contexts, hostile_server):
    context = contexts("ceo")
    dialogs: list[str] = []
    page = context.new_page()
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(hostile_server.page_url("ceo"), wait_until="commit", timeout=TIMEOUT_MS)
    page.wait_for_selector(".kpi-tile", timeout=TIMEOUT_MS)
    wait_idle(page)
    page.dialogs = dialogs
    yield page
    page.close()


def markup_ran(page) -> bool:
    return page.evaluate("() => window.__xss !== undefined")


def test_failing_cell_shows_friendly_message(ceo_page, hostile_server, save_screenshot):
    ceo_page.wait_for_selector(
        "text=This part of the dashboard cannot be shown", timeout=TIMEOUT_MS
    )
    save_screenshot(ceo_page, "safety-01-failing-cell")
    html = ceo_page.content()
    assert SECRET not in html
    assert "RuntimeError" not in html
    assert "Traceback" not in html
    assert SECRET in hostile_server.log()


def test_company_name_is_text(ceo_page):
    assert COMPANY in ceo_page.locator(".cockpit-header").inner_text()
    assert ceo_page.locator(".cockpit-header i").count() == 0


def test_names_inert_through_drill_down(ceo_page, save_screenshot):
    page = ceo_page
    page.locator("button.drill-name", has_text="North").first.click()
    page.wait_for_selector(f"button.drill-name:text-is('{TEAM}')", timeout=TIMEOUT_MS)
    wait_idle(page)
    page.locator("button.drill-name", has_text=TEAM).first.click()
    page.wait_for_selector(f"button.drill-name:text-is('{SELLER}')", timeout=TIMEOUT_MS)
    wait_idle(page)
    save_screenshot(page, "safety-02-team")
    assert TEAM in page.locator(".cockpit-breadcrumb").inner_text()
    page.locator("button.drill-name", has_text=SELLER).first.click()
    page.wait_for_selector(".cockpit-details table", timeout=TIMEOUT_MS)
    wait_idle(page)
    save_screenshot(page, "safety-03-seller")
    details = page.locator(".cockpit-details").inner_text()
    assert ACCOUNT in details
    assert SELLER in page.locator(".cockpit-header").inner_text()
    assert page.locator(".cockpit-dashboard script").count() == 0
    assert page.locator(".cockpit-dashboard img[src='x']").count() == 0
    assert page.locator(".cockpit-dashboard svg[onload]").count() == 0
    assert not markup_ran(page)
    assert page.dialogs == []


def test_names_inert_in_chart_labels(ceo_page):
    labels = ceo_page.evaluate(
        """() => Array.from(document.querySelectorAll('.chart-children .xtick text'))
             .map((node) => node.textContent)"""
    )
    assert any("<script>" in label for label in labels)
    assert not markup_ran(ceo_page)


def test_names_inert_in_huddle(ceo_page, save_screenshot):
    page = ceo_page
    page.locator("button.crumb-2").click()
    wait_idle(page)
    page.locator(".lm-TabBar-tab", has_text="Huddle").first.click()
    page.wait_for_selector("table.huddle-deals", timeout=TIMEOUT_MS)
    wait_idle(page, ".cockpit-huddle")
    save_screenshot(page, "safety-04-huddle")
    text = page.locator(".cockpit-huddle").inner_text()
    assert TEAM in text
    assert SELLER in text
    assert not markup_ran(page)
    assert page.dialogs == []


def test_huddle_report_inert(browser, hostile_mart, tmp_path, save_screenshot):
    with connect(hostile_mart, read_only=True) as con:
        pack = build_huddle(con, TEAM)
    report = tmp_path / "huddle.html"
    report.write_text(render_huddle(pack, "html"), encoding="utf-8")
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(report.as_uri())
    text = page.locator("body").inner_text()
    save_screenshot(page, "safety-05-huddle-report")
    ran = markup_ran(page)
    page.close()
    assert TEAM in text
    assert SELLER in text
    assert not ran
    assert dialogs == []


def test_notebook_report_inert(browser, hostile_mart, tmp_path, save_screenshot):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            "import plotly.graph_objects as go\n"
            "from cockpit.mart import connect\n"
            "from cockpit.report import show_figure, show_table\n"
            f"con = connect({str(hostile_mart)!r}, read_only=True)\n"
            'names = con.execute("SELECT name FROM accounts ORDER BY name LIMIT 3").df()\n'
            "names = names.assign(seller=con.execute(\n"
            "    \"SELECT name FROM reps WHERE rep_id = 'REP-002'\").fetchone()[0])\n"
            "show_table(names, caption='Accounts')\n"
            "show_figure(go.Figure(go.Bar(x=list(names['name']), y=[1, 2, 3])))"
        )
    ]
    notebook.metadata.kernelspec = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    executed = tmp_path / "names.ipynb"
    NotebookClient(notebook, timeout=120).execute()
    nbformat.write(notebook, executed)
    report = export_html(executed, tmp_path / "names.html")
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(report.as_uri())
    page.wait_for_selector("table", timeout=TIMEOUT_MS)
    text = page.locator("body").inner_text()
    save_screenshot(page, "safety-06-notebook-report")
    ran = markup_ran(page)
    page.close()
    assert ACCOUNT in text
    assert SELLER in text
    assert not ran
    assert dialogs == []
