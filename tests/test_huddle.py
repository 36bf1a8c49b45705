"""Huddle packs on the demo mart, checked against plain SQL over its tables.

The demo mart's as-of date is Wednesday 2026-09-30. Its weekly pipeline
snapshots are taken on Fridays, so the last complete week is 2026-W39 (21
to 27 September, snapshot 25 September). The week before has the
snapshot of 18 September.
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from itertools import pairwise

import duckdb
import pandas as pd
import pytest

from cockpit.errors import HuddleError, ParameterError
from cockpit.huddle import (
    DEFAULT_HUDDLE_FILE,
    HUDDLE_KPI_COUNT,
    build_huddle,
    escape_markdown,
    format_change,
    latest_complete_week,
    load_huddle_settings,
    opportunity_changes,
    parse_huddle_settings,
    parse_week,
    pipeline_snapshot,
    render_huddle,
    suggest_actions,
    team_names,
    week_label,
)
from cockpit.kpi import kpi_values
from cockpit.scope import Scope

TEAM = "North-1"
WEEK = date(2026, 9, 21)
SUNDAY = date(2026, 9, 27)
LAST_SUNDAY = date(2026, 9, 20)
NO_ALERTS = pd.DataFrame()


@pytest.fixture(scope="module")
def demo(small_demo_mart):
    con = duckdb.connect(str(small_demo_mart), read_only=True)
    yield con
    con.close()


@pytest.fixture(scope="module")
def pack(demo):
    return build_huddle(demo, TEAM, WEEK, alerts=NO_ALERTS)


def _kpi(pack, name: str) -> pd.Series:
    return pack.kpis.set_index("name").loc[name]


def _scalar(con, sql: str, params: list):
    return con.execute(sql, params).fetchone()[0]


TEAM_REPS = "rep_id IN (SELECT rep_id FROM reps WHERE team = ?)"


# --- weeks -------------------------------------------------------------------


def test_week_from_label():
    assert parse_week("2026-W39") == WEEK


def test_week_from_monday_text():
    assert parse_week("2026-09-21") == WEEK


def test_week_from_date():
    assert parse_week(WEEK) == WEEK


def test_week_not_monday():
    with pytest.raises(HuddleError, match="is a Wednesday, not a Monday"):
        parse_week("2026-09-23")


def test_week_label_out_of_range():
    with pytest.raises(HuddleError, match="has no ISO week 54"):
        parse_week("2026-W54")


def test_week_garbage():
    with pytest.raises(HuddleError, match="invalid week 'soon'"):
        parse_week("soon")


def test_week_label_round_trip():
    assert week_label(parse_week("2027-W01")) == "2027-W01"


def test_latest_complete_week(demo):
    assert latest_complete_week(demo) == WEEK


# --- settings ----------------------------------------------------------------


def _settings_document() -> dict:
    return {
        "kpis": [
            {"name": f"line_{i}", "kpi": "revenue", "period": "week"}
            for i in range(HUDDLE_KPI_COUNT)
        ]
    }


def test_settings_default_file():
    settings = load_huddle_settings()
    assert DEFAULT_HUDDLE_FILE.is_file()
    assert len(settings.kpis) == HUDDLE_KPI_COUNT


def test_settings_six_kpis():
    document = _settings_document()
    document["kpis"].pop()
    with pytest.raises(ParameterError, match="expected a list of at least 7"):
        parse_huddle_settings(document, "huddle.yaml")


def test_settings_unknown_kpi():
    document = _settings_document()
    document["kpis"][2]["kpi"] = "happiness"
    with pytest.raises(ParameterError) as caught:
        parse_huddle_settings(document, "huddle.yaml")
    assert "huddle.yaml: kpis[2].kpi: expected a KPI of the registry" in str(
        caught.value
    )


def test_settings_bad_period():
    document = _settings_document()
    document["kpis"][0]["period"] = "fortnight"
    with pytest.raises(ParameterError) as caught:
        parse_huddle_settings(document, "huddle.yaml")
    assert "huddle.yaml: kpis[0].period: expected one of week" in str(caught.value)


def test_settings_repeated_name():
    document = _settings_document()
    document["kpis"][3]["name"] = "line_0"
    with pytest.raises(ParameterError, match=r"kpis\[3\].name: expected a name not"):
        parse_huddle_settings(document, "huddle.yaml")


def test_settings_unknown_rule(tmp_path):
    path = tmp_path / "huddle.yaml"
    text = DEFAULT_HUDDLE_FILE.read_text(encoding="utf-8")
    path.write_text(text + "  slow_weeks: 3\n", encoding="utf-8")
    with pytest.raises(ParameterError) as caught:
        load_huddle_settings(path)
    assert f"{path}: rules.slow_weeks: unknown key" in str(caught.value)


# --- KPIs against hand computation -------------------------------------------


def test_pack_has_seven_kpis(pack):
    expected = [line.name for line in load_huddle_settings().kpis]
    assert list(pack.kpis["name"]) == expected


def test_pack_kpis_defined(pack):
    assert pack.kpis["this_week"].notna().all()
    assert pack.kpis["last_week"].notna().all()


def test_change_is_difference(pack):
    difference = pack.kpis["this_week"] - pack.kpis["last_week"]
    assert (pack.kpis["change"] - difference).abs().max() < 1e-9


def _revenue(con, start: date, end: date) -> float:
    return _scalar(
        con,
        f"SELECT sum(net_revenue) FROM transactions WHERE date BETWEEN ? AND ? "
        f"AND {TEAM_REPS}",
        [start, end, TEAM],
    )


def test_revenue_qtd_by_hand(demo, pack):
    this_week = _revenue(demo, date(2026, 7, 1), SUNDAY)
    last_week = _revenue(demo, date(2026, 7, 1), LAST_SUNDAY)
    line = _kpi(pack, "revenue_qtd")
    assert line["this_week"] == pytest.approx(this_week, abs=0.005)
    assert line["last_week"] == pytest.approx(last_week, abs=0.005)
    assert line["change"] == pytest.approx(this_week - last_week, abs=0.01)


def test_attainment_by_hand(demo, pack):
    target = _scalar(
        demo,
        "SELECT sum(value) FROM targets WHERE period = '2026' AND level = 'rep' "
        "AND metric = 'revenue' AND key IN (SELECT rep_id FROM reps WHERE team = ?)",
        [TEAM],
    )
    this_week = _revenue(demo, date(2026, 1, 1), SUNDAY) / target
    last_week = _revenue(demo, date(2026, 1, 1), LAST_SUNDAY) / target
    line = _kpi(pack, "attainment_year")
    assert line["this_week"] == pytest.approx(this_week, rel=1e-12)
    assert line["change"] == pytest.approx(this_week - last_week, rel=1e-9)


def _open_pipeline(con, snapshot: date) -> float:
    return _scalar(
        con,
        f"SELECT sum(amount) FROM opportunities WHERE snapshot_date = ? "
        f"AND status = 'open' AND {TEAM_REPS}",
        [snapshot, TEAM],
    )


def test_open_pipeline_by_hand(demo, pack):
    this_week = _open_pipeline(demo, date(2026, 9, 25))
    last_week = _open_pipeline(demo, date(2026, 9, 18))
    line = _kpi(pack, "open_pipeline")
    assert line["this_week"] == this_week
    assert line["change"] == this_week - last_week


def test_weighted_pipeline_reads_week_end(demo, pack):
    # The weighting belongs to the KPI registry; the pack must read it at
    # each week's Sunday.
    scope = Scope(team=TEAM)
    this_week = kpi_values(demo, ["weighted_pipeline"], scope, as_of=SUNDAY)
    last_week = kpi_values(demo, ["weighted_pipeline"], scope, as_of=LAST_SUNDAY)
    line = _kpi(pack, "weighted_pipeline")
    assert line["this_week"] == pytest.approx(this_week["weighted_pipeline"])
    assert line["last_week"] == pytest.approx(last_week["weighted_pipeline"])


def _win_rate(con, sunday: date) -> float:
    won, closed = con.execute(
        f"""
        SELECT count(*) FILTER (WHERE status = 'won'), count(*) FROM (
            SELECT * FROM opportunities WHERE snapshot_date <= ?
            QUALIFY snapshot_date = max(snapshot_date) OVER (PARTITION BY opportunity_id)
        )
        WHERE status IN ('won', 'lost') AND closed_date BETWEEN ? AND ?
          AND {TEAM_REPS}
        """,
        [sunday, sunday - timedelta(days=90), sunday, TEAM],
    ).fetchone()
    return won / closed


def test_win_rate_by_hand(demo, pack):
    this_week, last_week = _win_rate(demo, SUNDAY), _win_rate(demo, LAST_SUNDAY)
    line = _kpi(pack, "win_rate_13w")
    assert line["this_week"] == pytest.approx(this_week, rel=1e-12)
    assert line["change"] == pytest.approx(this_week - last_week, rel=1e-9)


def _visits(con, monday: date) -> int:
    return _scalar(
        con,
        f"SELECT count(*) FROM activities WHERE type = 'visit' "
        f"AND date BETWEEN ? AND ? AND {TEAM_REPS}",
        [monday, monday + timedelta(days=6), TEAM],
    )


def test_visits_by_hand(demo, pack):
    this_week, last_week = _visits(demo, WEEK), _visits(demo, WEEK - timedelta(7))
    line = _kpi(pack, "customer_visits")
    assert line["this_week"] == this_week
    assert line["change"] == this_week - last_week


def _created(con, monday: date) -> float:
    sunday = monday + timedelta(days=6)
    return _scalar(
        con,
        f"""
        SELECT COALESCE(sum(amount), 0) FROM (
            SELECT * FROM opportunities WHERE snapshot_date <= ?
            QUALIFY snapshot_date = max(snapshot_date) OVER (PARTITION BY opportunity_id)
        )
        WHERE created_date BETWEEN ? AND ? AND {TEAM_REPS}
        """,
        [sunday, monday, sunday, TEAM],
    )


def test_pipeline_created_by_hand(demo, pack):
    this_week = _created(demo, WEEK)
    last_week = _created(demo, WEEK - timedelta(days=7))
    line = _kpi(pack, "pipeline_created")
    assert line["this_week"] == this_week
    assert line["change"] == this_week - last_week


def test_quarter_start_not_compared(demo):
    # Sunday 5 July is in the third quarter, Sunday 28 June in the second.
    pack = build_huddle(demo, TEAM, "2026-W27", alerts=NO_ALERTS)
    line = _kpi(pack, "revenue_qtd")
    assert line["direction"] == "new period"
    assert not pack.actions["action"].str.startswith(line["label"]).any()


def test_direction_of_change(pack):
    for row in pack.kpis.itertuples(index=False):
        if row.change > 0:
            assert row.direction == "better", row.name
        elif row.change < 0:
            assert row.direction == "worse", row.name


# --- deal changes against the snapshots --------------------------------------


def _snapshot_rows(con, snapshot: date) -> pd.DataFrame:
    return (
        con.execute("SELECT * FROM opportunities WHERE snapshot_date = ?", [snapshot])
        .df()
        .set_index("opportunity_id")
    )


def _hand_changes(con, team: str, snapshot: date, previous: date) -> pd.DataFrame:
    """List the team's deals open now, closed since `previous` or dropped."""
    now, before = _snapshot_rows(con, snapshot), _snapshot_rows(con, previous)
    reps = {
        row[0]
        for row in con.execute(
            "SELECT rep_id FROM reps WHERE team = ?", [team]
        ).fetchall()
    }
    rows = []
    for deal in now.index.union(before.index):
        current = now.loc[deal] if deal in now.index else None
        prior = before.loc[deal] if deal in before.index else None
        owner = (current if current is not None else prior)["rep_id"]
        if owner not in reps:
            continue
        if current is None:
            keep = prior["status"] == "open"
        elif current["status"] == "open":
            keep = True
        elif prior is None:
            keep = pd.Timestamp(current["closed_date"]) > pd.Timestamp(previous)
        else:
            keep = prior["status"] == "open"
        if keep:
            rows.append(
                {
                    "opportunity_id": deal,
                    "rep_id": owner,
                    "amount": (current if current is not None else prior)["amount"],
                    "now": current,
                    "before": prior,
                }
            )
    return pd.DataFrame(rows).set_index("opportunity_id")


@pytest.mark.parametrize("snapshot", [date(2026, 9, 25), date(2026, 9, 18)])
def test_changes_match_snapshots(demo, snapshot):
    previous = snapshot - timedelta(days=7)
    for team in team_names(demo):
        changes = opportunity_changes(demo, team, snapshot, previous)
        hand = _hand_changes(demo, team, snapshot, previous)
        assert sorted(changes["opportunity_id"]) == sorted(hand.index), team
        for row in changes.itertuples(index=False):
            now, before = hand.loc[row.opportunity_id, ["now", "before"]]
            assert row.is_new == (before is None), row.opportunity_id
            if before is None:
                continue
            assert row.stage_before == before["stage"], row.opportunity_id
            assert row.stage == now["stage"], row.opportunity_id
            assert row.amount_change == now["amount"] - before["amount"]
            shift = (now["expected_close_date"] - before["expected_close_date"]).days
            assert row.close_shift_days == shift, row.opportunity_id
            if now["status"] != "open":
                assert row.outcome == now["status"], row.opportunity_id


def test_changes_cover_every_kind(demo):
    # Guards the comparison above: the two weeks hold every kind of change.
    kinds = set()
    for snapshot in (date(2026, 9, 25), date(2026, 9, 18)):
        for team in team_names(demo):
            changes = opportunity_changes(
                demo, team, snapshot, snapshot - timedelta(days=7)
            )
            kinds |= {"new"} if changes["is_new"].any() else set()
            kinds |= set(changes["outcome"].dropna())
            kinds |= (
                {"amount"} if (changes["amount_change"].fillna(0) != 0).any() else set()
            )
            kinds |= (
                {"close"}
                if (changes["close_shift_days"].fillna(0) != 0).any()
                else set()
            )
            kinds |= set(changes["stage_move"].dropna())
    assert {"new", "won", "lost", "amount", "close", "advanced"} <= kinds


def test_top_opportunities_are_largest(demo, pack):
    hand = _hand_changes(demo, TEAM, date(2026, 9, 25), date(2026, 9, 18))
    top = (
        hand.reset_index()
        .sort_values(
            ["rep_id", "amount", "opportunity_id"], ascending=[True, False, True]
        )
        .groupby("rep_id")
        .head(3)
    )
    assert list(pack.opportunities["opportunity_id"]) == list(top["opportunity_id"])


def test_slip_count_by_hand(demo, pack):
    deal = pack.changes.sort_values("slips").iloc[-1]
    history = demo.execute(
        "SELECT status, expected_close_date FROM opportunities "
        "WHERE opportunity_id = ? AND snapshot_date <= '2026-09-25' "
        "ORDER BY snapshot_date",
        [deal["opportunity_id"]],
    ).fetchall()
    slips = sum(
        1
        for (status, before), (_, after) in pairwise(history)
        if status == "open" and after > before
    )
    assert slips >= 1
    assert deal["slips"] == slips


def test_weeks_in_stage_by_hand(demo, pack):
    open_deals = pack.changes.dropna(subset=["weeks_in_stage"])
    deal = open_deals.sort_values("weeks_in_stage").iloc[-1]
    rows = demo.execute(
        "SELECT snapshot_date, stage FROM opportunities WHERE opportunity_id = ? "
        "AND snapshot_date <= '2026-09-25' ORDER BY snapshot_date DESC",
        [deal["opportunity_id"]],
    ).fetchall()
    since = rows[0][0]
    for day, stage in rows:
        if stage != deal["stage"]:
            break
        since = day
    assert deal["weeks_in_stage"] == (date(2026, 9, 25) - since).days // 7


def test_edited_snapshot_changes(small_demo_mart, tmp_path):
    path = tmp_path / "mart.duckdb"
    shutil.copy(small_demo_mart, path)
    con = duckdb.connect(str(path))
    snapshot, previous = date(2026, 9, 25), date(2026, 9, 18)
    deals = con.execute(
        f"SELECT c.opportunity_id, c.stage FROM opportunities c JOIN opportunities p "
        f"ON p.opportunity_id = c.opportunity_id AND p.snapshot_date = ? "
        f"WHERE c.snapshot_date = ? AND c.status = 'open' AND p.status = 'open' "
        f"AND c.stage = p.stage AND c.{TEAM_REPS} ORDER BY c.opportunity_id",
        [previous, snapshot, TEAM],
    ).df()
    later = deals[deals["stage"].isin(["Proposal", "Negotiation"])]
    moved, stage = later.iloc[0]
    others = deals[deals["opportunity_id"] != moved]["opportunity_id"]
    dropped, pulled = others.iloc[0], others.iloc[1]
    slips_before = opportunity_changes(con, TEAM, snapshot, previous).set_index(
        "opportunity_id"
    )["slips"]
    con.execute(
        "UPDATE opportunities SET expected_close_date = expected_close_date - 14 "
        "WHERE opportunity_id = ? AND snapshot_date = ?",
        [pulled, snapshot],
    )
    con.execute(
        "UPDATE opportunities SET stage = 'Prospecting', amount = amount + 1000 "
        "WHERE opportunity_id = ? AND snapshot_date = ?",
        [moved, snapshot],
    )
    con.execute(
        "DELETE FROM opportunities WHERE opportunity_id = ? AND snapshot_date = ?",
        [dropped, snapshot],
    )
    changes = opportunity_changes(con, TEAM, snapshot, previous).set_index(
        "opportunity_id"
    )
    con.close()
    assert changes.loc[moved, "stage_move"] == "moved back"
    assert changes.loc[moved, "amount_change"] == 1000
    assert f"stage {stage} → Prospecting (moved back)" in changes.loc[moved, "change"]
    assert changes.loc[dropped, "outcome"] == "removed"
    assert changes.loc[pulled, "close_shift_days"] == -14
    assert changes.loc[pulled, "slips"] == slips_before[pulled]


# --- actions -----------------------------------------------------------------


def test_slipped_deals_get_actions(demo):
    settings = load_huddle_settings()
    pack = build_huddle(demo, TEAM, WEEK, settings=settings, alerts=NO_ALERTS)
    slipped = pack.changes[
        (pack.changes["status"] == "open")
        & (pack.changes["slips"] >= settings.rules.slipped_times)
    ]
    assert len(slipped) > 0
    actions = pack.actions[pack.actions["rule"] == "slipped"]
    assert set(actions["opportunity_id"]) == set(slipped["opportunity_id"])


def test_no_visit_sellers_get_actions(pack):
    idle = pack.sellers[pack.sellers["visits"] < 1]
    actions = pack.actions[pack.actions["rule"] == "no_visits"]
    assert set(actions["rep_id"]) == set(idle["rep_id"])


def test_actions_sorted_by_priority(pack):
    assert pack.actions["priority"].is_monotonic_increasing


def test_alert_rows_become_actions(pack):
    deal = pack.changes[pack.changes["slips"] >= 2].iloc[0]
    alerts = pd.DataFrame(
        [
            {
                "severity": "medium",
                "check_type": "deal_slips",
                "rep_id": deal["rep_id"],
                "opportunity_id": deal["opportunity_id"],
                "message": f"Deal {deal['opportunity_id']} slipped twice.",
            },
            {
                "severity": "high",
                "check_type": "coverage",
                "rep_id": None,
                "opportunity_id": None,
                "message": "Team coverage is short.",
            },
            {
                "severity": "low",
                "check_type": "kpi",
                "rep_id": "REP-999",
                "opportunity_id": None,
                "message": "Someone else.",
            },
        ]
    )
    settings = load_huddle_settings()
    actions = suggest_actions(
        pack.changes, pack.kpis, pack.sellers, pack.snapshot, settings, alerts
    )
    texts = list(actions["action"])
    assert (
        f"Deal {deal['opportunity_id']} slipped twice: agree a close plan with the customer."
        in texts
    )
    assert "Team coverage is short: plan prospecting to build pipeline." in texts
    assert not any("Someone else" in text for text in texts)
    slipped = actions[actions["opportunity_id"] == deal["opportunity_id"]]
    assert "slipped" not in set(slipped["rule"])


def test_pack_uses_alert_rules(demo):
    pack = build_huddle(demo, TEAM, WEEK)
    assert pack.actions["rule"].str.startswith("alert:").any()


# --- validation --------------------------------------------------------------


def test_unknown_team(demo):
    with pytest.raises(HuddleError, match="unknown team 'Atlantis'; choose one of"):
        build_huddle(demo, "Atlantis", WEEK, alerts=NO_ALERTS)


def test_week_after_as_of(demo):
    with pytest.raises(HuddleError, match="starts after the mart's as-of date"):
        build_huddle(demo, TEAM, "2026-W41", alerts=NO_ALERTS)


def test_partial_week_noted(demo):
    pack = build_huddle(demo, TEAM, "2026-W40", alerts=NO_ALERTS)
    assert any("partial" in note for note in pack.notes)


def test_snapshot_needs_open_deal(demo):
    assert pipeline_snapshot(demo, SUNDAY) == date(2026, 9, 25)


# --- rendering ---------------------------------------------------------------


def test_format_change_units():
    assert format_change(0.0123, "percent") == "+1.2 pts"
    assert format_change(-1500.4, "currency") == "-EUR 1,500"
    assert format_change(0, "count") == "±0"


def test_escape_markdown_cell():
    assert escape_markdown("a|b *c*\n<d>") == r"a\|b \*c\* \<d\>"


def test_render_escapes_names(small_demo_mart, tmp_path):
    path = tmp_path / "mart.duckdb"
    shutil.copy(small_demo_mart, path)
    con = duckdb.connect(str(path))
    pack = build_huddle(con, TEAM, WEEK, alerts=NO_ALERTS)
    account = con.execute(
        "SELECT account_id FROM opportunities WHERE opportunity_id = ? LIMIT 1",
        [pack.opportunities["opportunity_id"].iloc[0]],
    ).fetchone()[0]
    rep = pack.opportunities["rep_id"].iloc[0]
    con.execute(
        "UPDATE accounts SET name = '<b>Fish & Chips | *Ltd*</b>' WHERE account_id = ?",
        [account],
    )
    con.execute("UPDATE reps SET name = '<script>x</script>' WHERE rep_id = ?", [rep])
    pack = build_huddle(con, TEAM, WEEK, alerts=NO_ALERTS)
    con.close()
    page = render_huddle(pack, "html")
    markdown = render_huddle(pack, "markdown")
    assert "<script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "&lt;b&gt;Fish &amp; Chips | *Ltd*&lt;/b&gt;" in page
    assert r"\<b\>Fish \& Chips \| \*Ltd\*\</b\>" in markdown
    assert r"\<script\>x\</script\>" in markdown


def test_render_lists_every_kpi(pack):
    page = render_huddle(pack, "html")
    for label in pack.kpis["label"]:
        assert label.replace("'", "&#x27;") in page


def test_render_unknown_format(pack):
    with pytest.raises(HuddleError, match="unknown huddle format 'pdf'"):
        render_huddle(pack, "pdf")
