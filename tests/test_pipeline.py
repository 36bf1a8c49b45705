"""Pipeline movement, waterfall, slips, stale deals and stage times.

The hand-built mart of tests/registry_mart.py has three snapshots; its
docstring lists the deals. The demo mart checks that the waterfall
reconciles on 26 generated weekly snapshots.
"""

from __future__ import annotations

import math
from datetime import date

import pandas as pd
import pytest

from cockpit.errors import KpiError
from cockpit.kpi import kpi_values
from cockpit.mart import connect
from cockpit.pipeline import (
    WATERFALL_STEPS,
    pipeline_movement,
    pipeline_summary,
    slipped_deals,
    snapshot_dates,
    stage_durations,
    stale_deals,
    waterfall_by,
)
from cockpit.scope import Scope
from tests.registry_mart import S1, S2, S3, build_registry_mart


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    path = build_registry_mart(tmp_path_factory.mktemp("pipeline") / "mart.duckdb")
    reader = connect(path, read_only=True)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def demo(small_demo_mart):
    reader = connect(small_demo_mart, read_only=True)
    yield reader
    reader.close()


def _steps(movement) -> dict[str, float]:
    return dict(
        zip(movement.waterfall["step"], movement.waterfall["value"], strict=True)
    )


# --- movement between S1 and S2 ---------------------------------------------------


def test_movement_snapshots(con):
    movement = pipeline_movement(con, as_of=S2)
    assert (movement.start_snapshot, movement.end_snapshot) == (S1, S2)


def test_movement_start_value(con):
    # Open at S1: D1 1000, D2 500, D3 2000, D5 300, D6 100.
    assert _steps(pipeline_movement(con, as_of=S2))["start"] == 3900


def test_movement_steps(con):
    steps = _steps(pipeline_movement(con, as_of=S2))
    # D4 and D7 are new, D3 won, D5 lost, D6 gone from the export.
    assert steps["new"] == 800 + 250
    assert steps["won"] == -2000
    assert steps["lost"] == -300
    assert steps["removed"] == -100


def test_movement_end_value(con):
    # Open at S2: D1 1000, D2 500, D4 800, D7 250.
    assert _steps(pipeline_movement(con, as_of=S2))["end"] == 2550


def test_movement_reconciles(con):
    table = pipeline_movement(con, as_of=S2).waterfall
    assert math.fsum(table["value"].iloc[:-1]) == table["value"].iloc[-1]


def test_movement_running_total_ends(con):
    table = pipeline_movement(con, as_of=S2).waterfall
    assert table["running_total"].iloc[-2] == table["value"].iloc[-1]


def test_movement_advanced_and_slipped(con):
    deals = pipeline_movement(con, as_of=S2).deals.set_index("opportunity_id")
    # D1 went from Prospecting to Proposal and from 1 June to 15 June.
    assert bool(deals.loc["D1", "advanced"])
    assert bool(deals.loc["D1", "slipped"])
    assert not bool(deals.loc["D2", "advanced"])


def test_movement_summary_counts(con):
    summary = pipeline_movement(con, as_of=S2).summary.set_index("movement")
    assert summary.loc["new", "deals"] == 2
    assert summary.loc["advanced", "deals"] == 1
    assert summary.loc["slipped", "deals"] == 1


# --- movement between S2 and S3 -------------------------------------------------------


def test_movement_amount_up(con):
    steps = _steps(pipeline_movement(con, as_of=S3))
    # D1 grew from 1000 to 1200.
    assert steps["amount_up"] == 200
    assert steps["end"] == 2750


def test_movement_scope_moved_out(con):
    steps = _steps(pipeline_movement(con, Scope(region="East"), as_of=S3))
    # D7 moved to West: East starts at 1750 and ends at 1700.
    assert steps["moved_out"] == -250
    assert steps["start"] == 1750
    assert steps["end"] == 1700


def test_movement_scope_moved_in(con):
    steps = _steps(pipeline_movement(con, Scope(region="West"), as_of=S3))
    assert steps["moved_in"] == 250
    assert steps["end"] == 1050


def test_movement_explicit_previous(con):
    movement = pipeline_movement(con, as_of=S3, previous=S1)
    assert movement.start_snapshot == S1


def test_movement_needs_two_snapshots(con):
    # The only snapshot by then is H3's row of 1 March 2024.
    with pytest.raises(KpiError, match="7 days"):
        pipeline_movement(con, as_of=date(2024, 3, 5))


def test_movement_before_snapshots(con):
    with pytest.raises(KpiError, match="no pipeline snapshot"):
        pipeline_movement(con, as_of=date(2020, 1, 1))


def test_waterfall_by_rep(con):
    table = waterfall_by(pipeline_movement(con, as_of=S2), "rep_id").set_index("rep_id")
    # r1: D1 1000 and D3 2000 at S1; D3 won.
    assert table.loc["r1", "start"] == 3000
    assert table.loc["r1", "won"] == -2000
    assert table.loc["r1", "end"] == 1000


def test_waterfall_by_rows_reconcile(con):
    table = waterfall_by(pipeline_movement(con, as_of=S2), "rep_id")
    for _, row in table.iterrows():
        total = math.fsum([row["start"], *(row[step] for step in WATERFALL_STEPS)])
        assert total == row["end"], row["rep_id"]


def test_waterfall_by_unknown_column(con):
    with pytest.raises(KpiError, match="'stage'"):
        waterfall_by(pipeline_movement(con, as_of=S2), "stage")


# --- slips, stale deals, stage times ----------------------------------------------------


def test_slipped_twice(con):
    table = slipped_deals(con, as_of=S3, min_slips=2)
    assert table["opportunity_id"].tolist() == ["D1"]
    assert table["days_slipped"].tolist() == [30]


def test_slipped_min_invalid(con):
    with pytest.raises(KpiError, match="min_slips"):
        slipped_deals(con, as_of=S3, min_slips=0)


def test_stale_deals_list(con):
    table = stale_deals(con, as_of=S3, days=30)
    assert table["opportunity_id"].tolist() == ["D2"]
    assert table["days_since_change"].tolist() == [76]


def test_stale_deals_shorter_limit(con):
    # At 10 days D4 (11 days) and D7 (15 days) join D2.
    table = stale_deals(con, as_of=S3, days=10)
    assert sorted(table["opportunity_id"]) == ["D2", "D4", "D7"]


def test_stage_durations_open(con):
    table = stage_durations(con, as_of=S3).set_index("stage")
    # Prospecting now: D2 (76 days) and D4 (11 days).
    assert table.loc["Prospecting", "open_deals"] == 2
    assert table.loc["Prospecting", "mean_days_open"] == pytest.approx(43.5)


def test_stage_durations_completed(con):
    table = stage_durations(con, as_of=S3).set_index("stage")
    # D1 advanced and D5 was lost one week after S1.
    assert table.loc["Prospecting", "completed_spells"] == 2
    assert table.loc["Prospecting", "mean_days_completed"] == 7


def test_stage_order_learnt(con):
    stages = stage_durations(con, as_of=S3)["stage"].tolist()
    assert stages.index("Prospecting") < stages.index("Proposal")


def test_snapshot_dates(con):
    assert snapshot_dates(con)[-3:] == [S1, S2, S3]


# --- summary --------------------------------------------------------------------------------


def test_pipeline_summary_by_region(con):
    table = pipeline_summary(con, ["region"], as_of=S3).set_index("region")
    assert table.loc["East", "open_pipeline"] == 1700
    assert table.loc["West", "pipeline_coverage"] == pytest.approx(1050 / (4000 - 60))


def test_pipeline_summary_coverage_gap(con):
    table = pipeline_summary(con, as_of=S3)
    coverage = 2750 / (10000 - 130)
    assert table["coverage_gap"].iloc[0] == pytest.approx(coverage - 2.0)


def test_pipeline_summary_needs_as_of(con):
    with pytest.raises(KpiError, match="as_of"):
        pipeline_summary(con)


# --- demo mart ---------------------------------------------------------------------------


def test_demo_waterfall_reconciles(demo):
    dates = snapshot_dates(demo)
    for end in dates[-4:]:
        movement = pipeline_movement(demo, as_of=end)
        table = movement.waterfall
        steps = math.fsum(table["value"].iloc[:-1])
        assert steps == pytest.approx(table["value"].iloc[-1], abs=1e-6), end


def test_demo_waterfall_matches_kpi(demo):
    dates = snapshot_dates(demo)
    movement = pipeline_movement(demo, Scope(region="North"), as_of=dates[-1])
    start = kpi_values(
        demo,
        ["open_pipeline"],
        scope=Scope(region="North"),
        as_of=movement.start_snapshot,
    )
    end = kpi_values(
        demo, ["open_pipeline"], scope=Scope(region="North"), as_of=dates[-1]
    )
    assert movement.waterfall["value"].iloc[0] == pytest.approx(start["open_pipeline"])
    assert movement.waterfall["value"].iloc[-1] == pytest.approx(end["open_pipeline"])


def test_demo_slips_match_kpi(demo):
    table = slipped_deals(demo, min_slips=1)
    value = kpi_values(demo, ["slipped_deals", "close_date_slips"])
    assert len(table) == value["slipped_deals"]
    assert table["slips"].sum() == value["close_date_slips"]


def test_demo_movement_has_every_step(demo):
    movement = pipeline_movement(demo, as_of=snapshot_dates(demo)[-1])
    summary = movement.summary.set_index("movement")
    for name in ("new", "won", "lost", "advanced"):
        assert summary.loc[name, "deals"] > 0, name
    assert isinstance(movement.deals, pd.DataFrame)
