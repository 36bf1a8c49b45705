"""Tests of stored targets: publication, adjustments, re-sets and exports."""

from __future__ import annotations

import csv
import shutil
from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook

from cockpit.errors import TargetError
from cockpit.kpi import kpi_values
from cockpit.mart import connect
from cockpit.scope import Scope
from cockpit.target_log import (
    COMPENSATION_COLUMNS,
    WORKBOOK_COLUMNS,
    change_history,
    decide_adjustment,
    export_compensation_csv,
    export_workbook,
    growth_spread,
    in_force,
    propose_adjustment,
    publish_plan,
    reconcile,
    seller_decomposition,
    target_summary,
)
from cockpit.targets import plan_targets
from tests.test_targets import PLAN_AS_OF, demo_forecast

PUBLISHED_AT = datetime(2026, 1, 5, 9, 0)
YEAR = 2026


def _cents(value) -> int:
    return round(float(value) * 100)


@pytest.fixture(scope="module")
def published(small_demo_mart, tmp_path_factory):
    """A copy of the demo mart with the 2026 plan published as version 2."""
    path = tmp_path_factory.mktemp("published") / "mart.duckdb"
    shutil.copy(small_demo_mart, path)
    with connect(path) as con:
        plan = plan_targets(con, YEAR, demo_forecast(con), PLAN_AS_OF)
        version = publish_plan(con, plan, "hub", "plan 2026", at=PUBLISHED_AT)
    return path, plan, version


@pytest.fixture
def mart(published, tmp_path):
    """A writable copy of the published mart for one test."""
    path = tmp_path / "mart.duckdb"
    shutil.copy(published[0], path)
    con = connect(path)
    yield con
    con.close()


def _row(con, rep_id, unit, period=str(YEAR)) -> pd.Series:
    current = in_force(con, YEAR)
    found = current[
        (current["level"] == "rep")
        & (current["key"] == rep_id)
        & (current["business_unit"] == unit)
        & (current["period"] == period)
    ]
    assert len(found) == 1
    return found.iloc[0]


def _quarter_cents(con, rep_id, unit) -> list[int]:
    return [
        _cents(_row(con, rep_id, unit, f"{YEAR}-Q{q}")["value"]) for q in (1, 2, 3, 4)
    ]


def _seller(con, role="grower", index=0) -> tuple[str, str, str]:
    """rep_id, manager_id and team of a seller of the given role."""
    rows = con.execute(
        """
        SELECT rep_id, manager_id, team FROM reps
        WHERE role = 'seller' AND role_type = ? AND active_to IS NULL
        ORDER BY rep_id
        """,
        [role],
    ).fetchall()
    return rows[index]


# --------------------------------------------------------------------------
# Publication


def test_publish_version_and_rows(published, mart):
    _, plan, version = published
    assert version == 2  # the demo's own 2026 targets are version 1
    rows = mart.execute(
        "SELECT count(*) FROM targets WHERE version = 2 AND metric = 'revenue'"
    ).fetchall()[0][0]
    assert rows == len(plan.nodes)
    kept = mart.execute("SELECT count(*) FROM targets WHERE version = 1").fetchall()[0][
        0
    ]
    assert kept > 0


def test_publish_logs_every_row(mart):
    log = change_history(mart, YEAR)
    written = mart.execute("SELECT count(*) FROM targets WHERE version = 2").fetchall()[
        0
    ][0]
    published = log[log["status"] == "published"]
    assert len(published) == written
    assert published["actor"].unique().tolist() == ["hub"]
    assert published["reason"].unique().tolist() == ["plan 2026"]
    assert published["acted_at"].unique().tolist() == [pd.Timestamp(PUBLISHED_AT)]


def test_publish_stores_allocations(published, mart):
    _, plan, _ = published
    stored = mart.execute("SELECT count(*) FROM target_allocations").fetchall()[0][0]
    assert stored == int((plan.nodes["period"] != str(YEAR)).sum())


def test_publish_sums_exact(mart):
    summary = target_summary(mart, YEAR).set_index("period")
    for period in summary.index:
        assert summary.loc[period, "gap"] == 0.0, period
    checks = reconcile(mart, YEAR)
    assert (checks["gap"] == 0).all()
    assert (checks["seller_gap"] == 0).all()
    for quarter in (1, 2, 3, 4):
        assert (reconcile(mart, YEAR, f"{YEAR}-Q{quarter}")["gap"] == 0).all()


def test_publish_year_is_sum_of_quarters(mart):
    current = in_force(mart, YEAR)
    current["cents"] = [_cents(v) for v in current["value"]]
    keys = ["level", "key", "region", "business_unit", "metric"]
    is_year = current["period"] == str(YEAR)
    year = current[is_year].set_index(keys)["cents"].sort_index()
    quarters = current[~is_year].groupby(keys, dropna=False)["cents"].sum().sort_index()
    assert year.tolist() == quarters.tolist()


def test_publish_kpi_reads_plan(published, mart):
    _, plan, _ = published
    target = kpi_values(
        mart, ["target"], scope=Scope(), start=date(YEAR, 1, 1), end=date(YEAR, 12, 31)
    )["target"]
    assert target == pytest.approx(plan.company_target)
    region = plan.nodes[
        (plan.nodes["level"] == "region") & (plan.nodes["period"] == "2026")
    ]
    north = region.set_index("key").loc["North", "top_down_cents"] / 100
    kpi = kpi_values(
        mart,
        ["target"],
        scope=Scope(region="North"),
        start=date(YEAR, 1, 1),
        end=date(YEAR, 12, 31),
    )["target"]
    assert kpi == pytest.approx(north)


def test_publish_rejects_empty_reason(published, mart):
    with pytest.raises(TargetError, match="reason is empty"):
        publish_plan(mart, published[1], "hub", " ")


def test_reset_needs_plan(small_demo_mart, tmp_path):
    path = tmp_path / "mart.duckdb"
    shutil.copy(small_demo_mart, path)
    with connect(path) as con:
        plan = plan_targets(con, YEAR, demo_forecast(con), PLAN_AS_OF, quarters=(4,))
        with pytest.raises(TargetError, match="no published plan of 2026"):
            publish_plan(con, plan, "hub", "Q4 re-set")


# --------------------------------------------------------------------------
# Decomposition and spread


def test_decomposition_adds_up(mart):
    parts = seller_decomposition(mart, YEAR)
    total = (
        parts["baseline_forecast"] + parts["potential_uplift"] + parts["adjustments"]
    )
    assert [_cents(v) for v in total] == [_cents(v) for v in parts["target"]]
    assert (parts["adjustments"] == 0).all()


def test_decomposition_baseline_is_forecast(published, mart):
    _, plan, _ = published
    parts = seller_decomposition(mart, YEAR)
    year = parts[parts["period"] == str(YEAR)]
    assert _cents(year["baseline_forecast"].sum()) == _cents(plan.forecast_total)
    assert _cents(year["target"].sum()) == _cents(plan.company_target)


def test_growth_spread_by_hand(mart):
    per_seller, stats = growth_spread(mart, YEAR)
    current = in_force(mart, YEAR)
    reps = current[(current["level"] == "rep") & (current["period"] == str(YEAR))]
    targets = reps.groupby("key")["value"].sum()
    revenue = dict(
        mart.execute(
            """
            SELECT rep_id, sum(net_revenue) FROM transactions
            WHERE date > DATE '2024-12-31' AND date <= DATE '2025-12-31'
            GROUP BY rep_id
            """
        ).fetchall()
    )
    expected = pd.Series({k: targets[k] / revenue[k] - 1 for k in targets.index})
    got = per_seller.set_index("rep_id")["required_growth"]
    assert got.sort_index().tolist() == pytest.approx(expected.sort_index().tolist())
    assert stats["median"] == pytest.approx(np.median(expected))
    assert stats["p90"] == pytest.approx(expected.quantile(0.9))
    assert stats["sellers"] == len(targets)


# --------------------------------------------------------------------------
# Adjustments


def test_proposal_changes_nothing(mart):
    rep_id, manager, _ = _seller(mart)
    before = _row(mart, rep_id, "Services")
    change_id = propose_adjustment(
        mart,
        YEAR,
        rep_id,
        "Services",
        99_999.0,
        manager,
        "new plant",
        at=datetime(2026, 3, 1),
    )
    after = _row(mart, rep_id, "Services")
    assert after["version"] == before["version"]
    assert after["value"] == before["value"]
    log = change_history(mart, change_id=change_id)
    assert log["status"].tolist() == ["proposed"]
    proposal = log.iloc[0]
    assert proposal["actor"] == manager
    assert proposal["reason"] == "new plant"
    assert proposal["old_value"] == before["value"]
    assert proposal["requested_value"] == 99_999.0
    assert proposal["acted_at"] == pd.Timestamp(2026, 3, 1)


def test_adjustment_versioned_and_traceable(mart):
    rep_id, manager, _ = _seller(mart)
    before = _row(mart, rep_id, "Services")
    change_id = propose_adjustment(
        mart,
        YEAR,
        rep_id,
        "Services",
        50_000.0,
        manager,
        "lost a contract",
        at=datetime(2026, 3, 1),
    )
    decide_adjustment(
        mart, change_id, "head", True, comment="agreed", at=datetime(2026, 3, 2)
    )
    after = _row(mart, rep_id, "Services")
    assert after["version"] == before["version"] + 1
    assert after["value"] == 50_000.0
    assert after["set_by"] == "head"
    assert after["method"] == "adjustment"
    assert (
        f"change {change_id}, proposed by {manager}, approved by head"
        in after["reason"]
    )
    old = mart.execute(
        """
        SELECT value FROM targets WHERE key = ? AND business_unit = 'Services'
          AND period = '2026' AND version = ?
        """,
        [rep_id, int(before["version"])],
    ).fetchall()
    assert old == [(before["value"],)]
    log = change_history(mart, change_id=change_id)
    approved = log[(log["status"] == "approved") & (log["period"] == "2026")]
    revenue = approved[approved["metric"] == "revenue"].iloc[0]
    assert revenue["old_value"] == before["value"]
    assert revenue["new_value"] == 50_000.0
    assert revenue["actor"] == "head"
    assert revenue["acted_at"] == pd.Timestamp(2026, 3, 2)
    assert revenue["version"] == after["version"]


def test_reject_keeps_approved_version(mart):
    rep_id, manager, _ = _seller(mart)
    first = propose_adjustment(
        mart, YEAR, rep_id, "Equipment", 70_000.0, manager, "plant"
    )
    decide_adjustment(mart, first, "head", True)
    approved = _row(mart, rep_id, "Equipment")
    quarters = _quarter_cents(mart, rep_id, "Equipment")
    second = propose_adjustment(mart, YEAR, rep_id, "Equipment", 10.0, manager, "typo")
    events = decide_adjustment(mart, second, "head", False, comment="no")
    after = _row(mart, rep_id, "Equipment")
    assert after["version"] == approved["version"]
    assert after["value"] == 70_000.0
    assert _quarter_cents(mart, rep_id, "Equipment") == quarters
    assert events["status"].tolist() == ["rejected"]
    assert events["reason"].tolist() == ["no"]


def test_adjustment_phased_like_quarters(mart):
    rep_id, manager, _ = _seller(mart)
    quarters = _quarter_cents(mart, rep_id, "Consumables")
    doubled = 2 * sum(quarters) / 100
    change_id = propose_adjustment(
        mart, YEAR, rep_id, "Consumables", doubled, manager, "x2"
    )
    decide_adjustment(mart, change_id, "head", True)
    assert _quarter_cents(mart, rep_id, "Consumables") == [2 * q for q in quarters]


def test_effective_date_splits_quarter(mart):
    rep_id, manager, _ = _seller(mart)
    q1, q2, q3, q4 = _quarter_cents(mart, rep_id, "Consumables")
    doubled = 2 * (q1 + q2 + q3 + q4) / 100
    change_id = propose_adjustment(
        mart,
        YEAR,
        rep_id,
        "Consumables",
        doubled,
        manager,
        "territory grows",
        effective_from=date(2026, 8, 15),
    )
    decide_adjustment(mart, change_id, "head", True)
    # Q3 has 92 days: 45 before 15 August at the old rate, 47 at the new one.
    mixed = (2 * (q3 * 45 + 2 * q3 * 47) + 92) // (2 * 92)
    assert _quarter_cents(mart, rep_id, "Consumables") == [q1, q2, mixed, 2 * q4]
    year = _row(mart, rep_id, "Consumables")
    assert _cents(year["value"]) == q1 + q2 + mixed + 2 * q4
    log = change_history(mart, change_id=change_id)
    approved = log[log["status"] == "approved"]
    assert set(approved.loc[approved["metric"] == "revenue", "period"]) == {
        "2026",
        "2026-Q3",
        "2026-Q4",
    }
    assert approved["effective_from"].dropna().unique().tolist() == [
        pd.Timestamp(2026, 8, 15)
    ]


def test_effective_date_on_quarter_start(mart):
    rep_id, manager, _ = _seller(mart)
    q1, q2, q3, q4 = _quarter_cents(mart, rep_id, "Consumables")
    doubled = 2 * (q1 + q2 + q3 + q4) / 100
    change_id = propose_adjustment(
        mart,
        YEAR,
        rep_id,
        "Consumables",
        doubled,
        manager,
        "H2",
        effective_from=date(2026, 7, 1),
    )
    decide_adjustment(mart, change_id, "head", True)
    assert _quarter_cents(mart, rep_id, "Consumables") == [q1, q2, 2 * q3, 2 * q4]


def test_absorb_team_keeps_total(mart):
    rep_id, manager, team = _seller(mart)
    before = reconcile(mart, YEAR)
    before_team = before[(before["level"] == "team") & (before["key"] == team)]
    current = _row(mart, rep_id, "Equipment")["value"]
    change_id = propose_adjustment(
        mart, YEAR, rep_id, "Equipment", current + 10_000, manager, "new site"
    )
    events = decide_adjustment(mart, change_id, "head", True, absorb="team")
    assert "absorbed" in set(events["status"])
    after = reconcile(mart, YEAR)
    team_rows = after[(after["level"] == "team") & (after["key"] == team)]
    equipment = team_rows[team_rows["business_unit"] == "Equipment"].iloc[0]
    assert equipment["seller_gap"] == 0.0
    assert (
        equipment["sellers"]
        == before_team[before_team["business_unit"] == "Equipment"]["sellers"].iloc[0]
    )
    assert equipment["adjusted_sellers"] == 5
    assert equipment["note"].startswith("adjustments of 5 seller row(s)")
    for quarter in (1, 2, 3, 4):
        checks = reconcile(mart, YEAR, f"{YEAR}-Q{quarter}")
        assert (checks["seller_gap"] == 0).all()


def test_absorb_none_reports_gap(mart):
    rep_id, manager, team = _seller(mart)
    current = _row(mart, rep_id, "Services")["value"]
    change_id = propose_adjustment(
        mart, YEAR, rep_id, "Services", current + 1_234.56, manager, "extra"
    )
    decide_adjustment(mart, change_id, "head", True)
    checks = reconcile(mart, YEAR)
    company = checks[checks["level"] == "company"].iloc[0]
    assert company["seller_gap"] == pytest.approx(1_234.56)
    teams = checks[(checks["level"] == "team") & (checks["key"] == team)]
    team_row = teams[teams["business_unit"] == "Services"].iloc[0]
    assert team_row["seller_gap"] == pytest.approx(1_234.56)
    assert team_row["note"].startswith(
        "the sellers differ from the target by +1,234.56"
    )
    summary = target_summary(mart, YEAR).set_index("period")
    assert summary.loc["2026", "gap"] == pytest.approx(1_234.56)


def test_adjustment_refreshes_role(mart):
    rep_id, manager, _ = _seller(mart, "grower")
    current = _row(mart, rep_id, "Services")["value"]
    change_id = propose_adjustment(
        mart, YEAR, rep_id, "Services", current + 1_000, manager, "more"
    )
    decide_adjustment(mart, change_id, "head", True)
    roles = in_force(mart, YEAR, metric="revenue_growth")
    growth = roles[(roles["key"] == rep_id) & (roles["period"] == "2026")].iloc[0]
    revenue = in_force(mart, YEAR)
    target = revenue[
        (revenue["key"] == rep_id)
        & (revenue["period"] == "2026")
        & (revenue["level"] == "rep")
    ]["value"].sum()
    book = mart.execute(
        """
        SELECT sum(net_revenue) FROM transactions
        WHERE rep_id = ? AND date > DATE '2024-12-31' AND date <= DATE '2025-12-31'
        """,
        [rep_id],
    ).fetchall()[0][0]
    assert _cents(growth["value"]) == _cents(target) - round(book * 100)
    assert growth["version"] == _row(mart, rep_id, "Services")["version"]


def test_decomposition_shows_adjustment(mart):
    rep_id, manager, _ = _seller(mart)
    before = seller_decomposition(mart, YEAR).set_index(["rep_id", "period"])
    current = _row(mart, rep_id, "Services")["value"]
    change_id = propose_adjustment(
        mart, YEAR, rep_id, "Services", current + 400, manager, "more"
    )
    decide_adjustment(mart, change_id, "head", True)
    after = seller_decomposition(mart, YEAR).set_index(["rep_id", "period"])
    row = after.loc[(rep_id, "2026")]
    assert row["adjustments"] == pytest.approx(400.0)
    assert row["baseline_forecast"] == before.loc[(rep_id, "2026"), "baseline_forecast"]
    assert _cents(row["target"]) == _cents(
        row["baseline_forecast"] + row["potential_uplift"] + row["adjustments"]
    )


# --------------------------------------------------------------------------
# Who may propose and decide


def test_seller_cannot_propose_own(mart):
    rep_id, _, _ = _seller(mart)
    with pytest.raises(TargetError, match="own target"):
        propose_adjustment(mart, YEAR, rep_id, "Services", 1.0, rep_id, "more")


def test_other_manager_cannot_propose(mart):
    rep_id, manager, _ = _seller(mart)
    other = mart.execute(
        "SELECT rep_id FROM reps WHERE role = 'manager' AND rep_id <> ? ORDER BY rep_id",
        [manager],
    ).fetchall()[0][0]
    with pytest.raises(TargetError, match=f"{other} does not manage {rep_id}"):
        propose_adjustment(mart, YEAR, rep_id, "Services", 1.0, other, "more")


def test_proposer_cannot_decide(mart):
    rep_id, manager, _ = _seller(mart)
    change_id = propose_adjustment(mart, YEAR, rep_id, "Services", 1.0, manager, "less")
    with pytest.raises(TargetError, match="cannot decide it"):
        decide_adjustment(mart, change_id, manager, True)


def test_decide_twice_rejected(mart):
    rep_id, manager, _ = _seller(mart)
    change_id = propose_adjustment(mart, YEAR, rep_id, "Services", 1.0, manager, "less")
    decide_adjustment(mart, change_id, "head", False)
    with pytest.raises(TargetError, match="already rejected by head"):
        decide_adjustment(mart, change_id, "head", True)


def test_open_proposal_blocks_second(mart):
    rep_id, manager, _ = _seller(mart)
    first = propose_adjustment(mart, YEAR, rep_id, "Services", 1.0, manager, "less")
    with pytest.raises(TargetError, match=f"change {first}"):
        propose_adjustment(mart, YEAR, rep_id, "Services", 2.0, manager, "again")


def test_stale_proposal_rejected(mart):
    rep_id, manager, _ = _seller(mart)
    first = propose_adjustment(mart, YEAR, rep_id, "Services", 1.0, manager, "less")
    other = propose_adjustment(mart, YEAR, rep_id, "Equipment", 2.0, manager, "less")
    decide_adjustment(mart, other, "head", True)
    mate = _seller(mart, "grower", 1)
    assert mate[2] == _seller(mart)[2]  # same team
    # Absorbing a change of the mate moves this seller's Services target.
    mate_value = _row(mart, mate[0], "Services")["value"]
    third = propose_adjustment(
        mart, YEAR, mate[0], "Services", mate_value + 500, manager, "more"
    )
    decide_adjustment(mart, third, "head", True, absorb="team")
    with pytest.raises(TargetError, match="reject it and propose again"):
        decide_adjustment(mart, first, "head", True)


def test_unknown_unit_rejected(mart):
    rep_id, manager, _ = _seller(mart)
    with pytest.raises(
        TargetError, match="no 2026 revenue target in business unit 'Toys'"
    ):
        propose_adjustment(mart, YEAR, rep_id, "Toys", 1.0, manager, "more")


def test_effective_date_outside_year(mart):
    rep_id, manager, _ = _seller(mart)
    with pytest.raises(TargetError, match="2027-01-01 is outside 2026"):
        propose_adjustment(
            mart,
            YEAR,
            rep_id,
            "Services",
            1.0,
            manager,
            "x",
            effective_from=date(2027, 1, 1),
        )


# --------------------------------------------------------------------------
# Quarterly re-set


def test_reset_replaces_remaining_quarters(mart):
    rep_id, manager, _ = _seller(mart)
    current = _row(mart, rep_id, "Services")["value"]
    change_id = propose_adjustment(
        mart, YEAR, rep_id, "Services", current + 800, manager, "more"
    )
    decide_adjustment(mart, change_id, "head", True)
    before = in_force(mart, YEAR)
    forecast = demo_forecast(mart)
    forecast["yhat"] *= 1.1
    plan = plan_targets(mart, YEAR, forecast, date(2026, 9, 30), quarters=(4,))
    version = publish_plan(mart, plan, "hub", "Q4 re-set", at=datetime(2026, 10, 1))
    after = in_force(mart, YEAR)
    keys = ["level", "key", "region", "business_unit"]
    for quarter in ("2026-Q1", "2026-Q2", "2026-Q3"):
        old = before[before["period"] == quarter].set_index(keys)["value"].sort_index()
        new = after[after["period"] == quarter].set_index(keys)["value"].sort_index()
        assert new.to_dict() == old.to_dict(), quarter
    q4 = after[after["period"] == "2026-Q4"]
    assert q4["version"].max() == version
    company = q4[q4["level"] == "company"]["value"].iloc[0]
    assert _cents(company) == _cents(plan.company_target)
    log = change_history(mart, YEAR)
    assert "reset" in set(log["status"])
    summary = target_summary(mart, YEAR).set_index("period")
    quarters = summary.loc[
        ["2026-Q1", "2026-Q2", "2026-Q3", "2026-Q4"], "company_target"
    ]
    assert _cents(summary.loc["2026", "company_target"]) == sum(
        _cents(v) for v in quarters
    )


def test_reset_carries_adjustment(mart):
    rep_id, manager, _ = _seller(mart)
    current = _row(mart, rep_id, "Services")["value"]
    change_id = propose_adjustment(
        mart, YEAR, rep_id, "Services", current + 800, manager, "more"
    )
    decide_adjustment(mart, change_id, "head", True)
    parts = seller_decomposition(mart, YEAR, by_unit=True)
    key = (parts["rep_id"] == rep_id) & (parts["business_unit"] == "Services")
    carried = parts[key & (parts["period"] == "2026-Q4")]["adjustments"].iloc[0]
    assert carried != 0
    plan = plan_targets(
        mart, YEAR, demo_forecast(mart), date(2026, 9, 30), quarters=(4,)
    )
    publish_plan(mart, plan, "hub", "Q4 re-set")
    nodes = plan.nodes
    top_down = nodes[
        (nodes["level"] == "rep")
        & (nodes["rep_id"] == rep_id)
        & (nodes["business_unit"] == "Services")
    ]["top_down_cents"].iloc[0]
    q4 = _row(mart, rep_id, "Services", "2026-Q4")
    assert _cents(q4["value"]) == top_down + _cents(carried)
    assert q4["method"] == "top_down_with_adjustment"
    after = seller_decomposition(mart, YEAR, by_unit=True)
    key = (after["rep_id"] == rep_id) & (after["business_unit"] == "Services")
    assert after[key & (after["period"] == "2026-Q4")]["adjustments"].iloc[0] == carried


# --------------------------------------------------------------------------
# Exports


def test_workbook_sheet_per_region(mart, tmp_path):
    path = export_workbook(mart, YEAR, tmp_path / "targets.xlsx")
    book = load_workbook(path)
    assert book.sheetnames == ["East", "North", "South", "West"]
    current = in_force(mart, YEAR)
    reps = current[(current["level"] == "rep") & (current["period"] == "2026")]
    regions = current[(current["level"] == "region") & (current["period"] == "2026")]
    for name in book.sheetnames:
        sheet = book[name]
        rows = list(sheet.iter_rows(values_only=True))
        assert list(rows[0]) == WORKBOOK_COLUMNS
        body = [r for r in rows[1:] if r and r[0] and str(r[0]).startswith("REP-")]
        expected = reps[reps["region"] == name]
        assert len(body) == len(expected)
        target = sum(r[5] for r in body)
        assert _cents(target) == sum(_cents(v) for v in expected["value"])
        labels = {
            r[0]: r[5] for r in rows if r and r[0] and not str(r[0]).startswith("REP-")
        }
        region_target = regions.set_index("key").loc[name, "value"]
        assert labels["region target (top-down)"] == pytest.approx(region_target)
        assert labels["gap"] == pytest.approx(0.0)


def test_workbook_quarters_add_up(mart, tmp_path):
    path = export_workbook(mart, YEAR, tmp_path / "targets.xlsx")
    sheet = load_workbook(path)["North"]
    for row in sheet.iter_rows(min_row=2, values_only=True):
        if not row or not row[0] or not str(row[0]).startswith("REP-"):
            continue
        assert _cents(row[5]) == sum(_cents(v) for v in row[6:10])
        assert _cents(row[5]) == _cents(row[10]) + _cents(row[11]) + _cents(row[12])


def test_compensation_csv_columns(mart, tmp_path):
    path = export_compensation_csv(mart, YEAR, tmp_path / "comp.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0].keys()) == COMPENSATION_COLUMNS
    frame = pd.DataFrame(rows)
    revenue = frame[(frame["metric"] == "revenue") & (frame["period"] == "2026")]
    current = in_force(mart, YEAR)
    reps = current[(current["level"] == "rep") & (current["period"] == "2026")]
    expected = reps.groupby("key")["value"].sum()
    got = revenue.set_index("rep_id")["target"]
    assert len(got) == len(expected)
    for rep_id, value in expected.items():
        assert got[rep_id] == f"{value:.2f}"
    assert set(frame["period"]) == {"2026", "2026-Q1", "2026-Q2", "2026-Q3", "2026-Q4"}
    roles = set(frame["metric"]) - {"revenue"}
    assert {"new_business_revenue", "revenue_growth", "key_account_revenue"} <= roles
    assert set(frame.loc[frame["unit"] == "currency", "currency"]) == {"EUR"}
    ratio = frame[frame["metric"] == "key_account_share_of_wallet"]
    assert (ratio["currency"] == "").all()
    assert frame["changed_by"].unique().tolist() == ["hub"]


def test_compensation_csv_after_adjustment(mart, tmp_path):
    rep_id, manager, _ = _seller(mart)
    current = _row(mart, rep_id, "Services")["value"]
    change_id = propose_adjustment(
        mart, YEAR, rep_id, "Services", current + 10, manager, "more"
    )
    decide_adjustment(mart, change_id, "head", True, at=datetime(2026, 4, 1, 8))
    path = export_compensation_csv(mart, YEAR, tmp_path / "comp.csv")
    frame = pd.read_csv(path, dtype=str)
    row = frame[
        (frame["rep_id"] == rep_id)
        & (frame["metric"] == "revenue")
        & (frame["period"] == "2026")
    ].iloc[0]
    assert row["changed_by"] == "head"
    assert row["changed_at"] == "2026-04-01T08:00:00"
    assert row["version"] == "3"
