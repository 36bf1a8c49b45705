"""Actions in Chromium land in the mart: a survey answer and a target adjustment.

The module serves its own copy of the demo mart, so the writes do not
change the numbers other modules expect. After each action the test reads
the mart file itself.
"""

from __future__ import annotations

import shutil

import pytest

from cockpit.incentives import load_plans, what_if
from cockpit.kpi import format_value
from cockpit.mart import connect
from cockpit.scope import Scope
from cockpit.target_log import in_force

from .conftest import AS_OF, TIMEOUT_MS, open_dashboard, running_server, wait_idle

pytestmark = pytest.mark.browser

COMMENT = "Good focus on <b>closing</b> & next steps"
REASON = "Lost the <i>largest</i> account to a competitor"


@pytest.fixture(scope="module")
def action_mart(demo_mart, tmp_path_factory):
    path = tmp_path_factory.mktemp("actions") / "demo.duckdb"
    shutil.copy(demo_mart, path)
    return path


@pytest.fixture(scope="module")
def action_server(action_mart, access_file, tmp_path_factory):
    with running_server(
        action_mart,
        access_file,
        tmp_path_factory.mktemp("voila-actions"),
        extra_env={"COCKPIT_PREFETCH": "0"},
    ) as server:
        yield server


@pytest.fixture(scope="module")
def manager(action_mart) -> str:
    with connect(action_mart, read_only=True) as con:
        return con.execute(
            "SELECT rep_id FROM reps WHERE team = 'North-1' AND role = 'manager' "
            "ORDER BY rep_id LIMIT 1"
        ).fetchone()[0]


def open_tab(context, server, user: str, title: str, ready: str):
    page = open_dashboard(context, server.page_url(user))
    page.locator(".lm-TabBar-tab", has_text=title).first.click()
    page.wait_for_selector(ready, timeout=TIMEOUT_MS)
    return page


def test_survey_answer_stored(
    contexts, action_server, action_mart, manager, save_screenshot
):
    page = open_tab(
        contexts("lead.north-1"),
        action_server,
        "lead.north-1",
        "Huddle",
        ".survey-submit",
    )
    wait_idle(page, ".cockpit-huddle")
    page.locator(".survey-score button", has_text="4").click()
    page.fill(".survey-comment textarea", COMMENT)
    page.locator(".survey-submit").click()
    page.wait_for_selector(".survey-result .cockpit-ok", timeout=TIMEOUT_MS)
    save_screenshot(page, "actions-01-survey")
    with connect(action_mart, read_only=True) as con:
        rows = con.execute(
            "SELECT team, respondent, helpfulness, comment FROM huddle_surveys"
        ).fetchall()
        logged = con.execute(
            "SELECT count(*) FROM load_log WHERE table_name = 'huddle_surveys'"
        ).fetchone()[0]
    page.close()
    assert rows == [("North-1", manager, 4, COMMENT)]
    assert logged == 1
    assert "survey answer" in action_server.log()


def test_second_answer_rejected(contexts, action_server, action_mart):
    page = open_tab(
        contexts("lead.north-1"),
        action_server,
        "lead.north-1",
        "Huddle",
        ".survey-submit",
    )
    wait_idle(page, ".cockpit-huddle")
    page.locator(".survey-score button", has_text="2").click()
    page.locator(".survey-submit").click()
    page.wait_for_selector(".cockpit-huddle .cockpit-status-error", timeout=TIMEOUT_MS)
    message = page.locator(".cockpit-huddle .cockpit-status-error").inner_text()
    page.close()
    with connect(action_mart, read_only=True) as con:
        count = con.execute("SELECT count(*) FROM huddle_surveys").fetchone()[0]
    assert "already answered" in message
    assert count == 1


def test_adjustment_proposed(
    contexts, action_server, action_mart, manager, save_screenshot
):
    with connect(action_mart, read_only=True) as con:
        rows = in_force(con, 2026)
    old = float(
        rows.loc[
            (rows["key"] == "REP-002")
            & (rows["business_unit"] == "Equipment")
            & (rows["period"] == "2026"),
            "value",
        ].iloc[0]
    )
    new = round(old * 0.8, 2)
    page = open_tab(
        contexts("lead.north-1"),
        action_server,
        "lead.north-1",
        "Targets",
        ".target-propose",
    )
    wait_idle(page, ".cockpit-targets")
    options = page.locator(".target-seller select option").all_inner_texts()
    page.select_option(
        ".target-seller select", label=next(o for o in options if "REP-002" in o)
    )
    page.select_option(".target-unit select", label="Equipment")
    page.fill(".target-value input", str(new))
    page.press(".target-value input", "Tab")
    page.fill(".target-reason textarea", REASON)
    page.locator(".target-preview").click()
    page.wait_for_selector("table.target-effect-table", timeout=TIMEOUT_MS)
    effect = page.locator("table.target-effect-table").inner_text()
    assert format_value(old, "currency") in effect
    assert format_value(new, "currency") in effect
    assert format_value(new - old, "currency") in effect
    page.locator(".target-propose").click()
    page.wait_for_selector(".target-result .cockpit-ok", timeout=TIMEOUT_MS)
    save_screenshot(page, "actions-02-proposal")
    page.close()
    with connect(action_mart, read_only=True) as con:
        events = con.execute(
            "SELECT status, key, business_unit, requested_value, actor, reason "
            "FROM target_changes WHERE status = 'proposed'"
        ).fetchall()
        still = in_force(con, 2026)
    assert events == [("proposed", "REP-002", "Equipment", new, manager, REASON)]
    unchanged = still.loc[
        (still["key"] == "REP-002")
        & (still["business_unit"] == "Equipment")
        & (still["period"] == "2026"),
        "value",
    ]
    assert float(unchanged.iloc[0]) == old


def test_adjustment_approved(contexts, action_server, action_mart, save_screenshot):
    with connect(action_mart, read_only=True) as con:
        change_id, requested = con.execute(
            "SELECT change_id, requested_value FROM target_changes WHERE status = 'proposed'"
        ).fetchone()
    page = open_tab(
        contexts("head.north"),
        action_server,
        "head.north",
        "Targets",
        ".target-pending",
    )
    wait_idle(page, ".cockpit-targets")
    save_screenshot(page, "actions-03-pending")
    page.locator(f".approve-{change_id}").click()
    page.wait_for_selector(".target-result .cockpit-ok", timeout=TIMEOUT_MS)
    wait_idle(page, ".cockpit-targets")
    save_screenshot(page, "actions-04-approved")
    page.close()
    with connect(action_mart, read_only=True) as con:
        decided = con.execute(
            "SELECT DISTINCT actor FROM target_changes "
            "WHERE change_id = ? AND status = 'approved'",
            [change_id],
        ).fetchall()
        rows = in_force(con, 2026)
    value = rows.loc[
        (rows["key"] == "REP-002")
        & (rows["business_unit"] == "Equipment")
        & (rows["period"] == "2026"),
        "value",
    ]
    assert decided == [("head.north",)]
    assert float(value.iloc[0]) == pytest.approx(requested, abs=0.01)


def test_seller_cannot_propose(contexts, action_server):
    page = open_tab(
        contexts("seller.rep-002"),
        action_server,
        "seller.rep-002",
        "Targets",
        "table.target-table",
    )
    wait_idle(page, ".cockpit-targets")
    assert page.locator(".target-propose").count() == 0
    page.close()


def test_what_if_all_deals(contexts, action_server, action_mart, save_screenshot):
    page = open_tab(
        contexts("seller.rep-002"),
        action_server,
        "seller.rep-002",
        "Incentives",
        ".whatif-deals",
    )
    wait_idle(page, ".cockpit-incentives")
    plan = next(iter(load_plans().values()))
    with connect(action_mart, read_only=True) as con:
        result = what_if(con, plan, AS_OF, Scope(rep_id="REP-002"))
    expected = result.sellers.set_index("rep_id").loc["REP-002", "bonus_if_all_close"]
    labels = page.locator(".whatif-deals select option").all_inner_texts()
    assert len(labels) == len(result.deals)
    page.select_option(".whatif-deals select", label=labels)
    page.wait_for_selector(".whatif-total", timeout=TIMEOUT_MS)
    save_screenshot(page, "actions-05-what-if")
    total = page.locator(".whatif-total").inner_text()
    page.close()
    assert total == format_value(expected, "currency")
