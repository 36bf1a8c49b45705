"""Pipeline analytics: week-on-week movement, slips, stale deals and stage times.

`pipeline_movement` compares two CRM snapshots deal by deal and explains
the change of open pipeline value between them as a waterfall whose steps
add up exactly: start + new + moved in - won - lost - removed - moved out +
amount changes = end. Deals open at both snapshots are also flagged when
they advanced or moved back a stage and when their expected close date
slipped or was pulled in. Those flags move no value.

Amounts are in the mart's reporting currency; an empty amount counts as 0,
as it does for the open_pipeline KPI.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd

from cockpit.errors import KpiError
from cockpit.kpi import STALE_DAYS, compute_kpi, open_deal_table
from cockpit.kpi_deals import deal_history, stage_order, stage_spells
from cockpit.mart.store import require_tables
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: Waterfall steps in display order, with the sign of their value.
WATERFALL_STEPS = (
    "new",
    "moved_in",
    "won",
    "lost",
    "removed",
    "moved_out",
    "amount_up",
    "amount_down",
)

#: Movement of a deal between two snapshots, one per deal.
MOVEMENTS = (
    "new",
    "moved_in",
    "won",
    "lost",
    "removed",
    "moved_out",
    "continuing",
)

_DEAL_COLUMNS = [
    "opportunity_id",
    "rep_id",
    "region",
    "business_unit",
    "account_id",
    "stage",
    "status",
    "amount",
    "expected_close_date",
    "in_scope",
]


@dataclass(frozen=True)
class PipelineMovement:
    """Movement of the open pipeline between two snapshots of one scope.

    `deals` has one row per deal open at either snapshot, `summary` one row
    per movement and flag with its deals and value, and `waterfall` the
    steps from the start value to the end value.
    """

    start_snapshot: date
    end_snapshot: date
    deals: pd.DataFrame
    summary: pd.DataFrame
    waterfall: pd.DataFrame


def snapshot_dates(con: duckdb.DuckDBPyConnection) -> list[date]:
    """Return the distinct snapshot dates of the opportunities table, oldest first."""
    require_tables(con, ["opportunities"])
    rows = con.execute(
        "SELECT DISTINCT snapshot_date FROM opportunities ORDER BY 1"
    ).fetchall()
    return [row[0] for row in rows]


def _pick_snapshots(
    con: duckdb.DuckDBPyConnection, as_of: date | None, previous: date | None
) -> tuple[date, date]:
    dates = snapshot_dates(con)
    ends = [d for d in dates if as_of is None or d <= as_of]
    if not ends:
        raise KpiError(
            f"no pipeline snapshot on or before {as_of}; load CRM snapshots or "
            "pass a later as_of"
        )
    end = ends[-1]
    if previous is None:
        starts = [d for d in dates if d <= end - timedelta(days=7)]
        if not starts:
            raise KpiError(
                f"no snapshot a week or more before {end}; week-on-week movement "
                "needs two snapshots at least 7 days apart"
            )
        return starts[-1], end
    starts = [d for d in dates if d <= previous]
    if not starts or starts[-1] >= end:
        raise KpiError(
            f"no snapshot on or before {previous} that is earlier than {end}; pass "
            f"previous= one of {', '.join(str(d) for d in dates if d < end) or 'none'}"
        )
    return starts[-1], end


def _snapshot_rows(
    con: duckdb.DuckDBPyConnection, snapshot: date, scope: Scope
) -> pd.DataFrame:
    scope_sql, scope_params = scope.where("f.")
    frame = con.execute(
        f"""
        SELECT f.opportunity_id, f.rep_id, f.region, f.business_unit, f.account_id,
               f.stage, f.status, f.amount, f.expected_close_date,
               ({scope_sql}) AS in_scope
        FROM opportunities f WHERE f.snapshot_date = ?
        """,
        [*scope_params, snapshot],
    ).df()
    frame["expected_close_date"] = pd.to_datetime(frame["expected_close_date"])
    return frame[_DEAL_COLUMNS]


def pipeline_movement(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    as_of: date | None = None,
    previous: date | None = None,
) -> PipelineMovement:
    """Explain how the open pipeline of `scope` moved between two snapshots.

    The end snapshot is the latest on or before `as_of` (the latest in the
    mart when None). The start snapshot is the latest on or before
    `previous`, by default the latest at least 7 days before the end. A deal
    belongs to the scope at a snapshot when its row there matches it.

    Each deal open in scope at either snapshot gets one movement:

    - new: open at the end, not open at the start (created since, first
      exported or reopened);
    - moved_in / moved_out: open at both, in scope at only one of them;
    - won / lost: open at the start, closed with that status at the end;
    - removed: open at the start, absent from the end snapshot;
    - continuing: open in scope at both.

    Continuing deals carry the flags advanced, moved_back (stage order
    learned by `cockpit.kpi_deals.stage_order`), slipped, pulled_in and
    amount_changed. Raises KpiError when the mart lacks the two snapshots.
    """
    scope = scope or Scope()
    start, end = _pick_snapshots(con, as_of, previous)
    before = _snapshot_rows(con, start, scope)
    after = _snapshot_rows(con, end, scope)
    history = deal_history(con, None, end)
    order = {stage: rank for rank, stage in enumerate(stage_order(history))}

    merged = before.merge(
        after, on="opportunity_id", how="outer", suffixes=("_start", "_end")
    )
    open_start = (merged["status_start"] == "open") & merged["in_scope_start"].eq(True)
    open_end = (merged["status_end"] == "open") & merged["in_scope_end"].eq(True)
    deals = merged[open_start | open_end].copy()
    open_start = open_start[deals.index]
    open_end = open_end[deals.index]

    was_open_elsewhere = (deals["status_start"] == "open") & ~open_start
    still_open_elsewhere = (deals["status_end"] == "open") & ~open_end
    movement = np.select(
        [
            open_start & open_end,
            ~open_start & open_end & was_open_elsewhere,
            ~open_start & open_end,
            open_start & (deals["status_end"] == "won"),
            open_start & (deals["status_end"] == "lost"),
            open_start & still_open_elsewhere,
        ],
        ["continuing", "moved_in", "new", "won", "lost", "moved_out"],
        default="removed",
    )
    deals["movement"] = movement
    amount_start = deals["amount_start"].fillna(0.0).where(open_start, 0.0)
    amount_end = deals["amount_end"].fillna(0.0).where(open_end, 0.0)
    deals["value_change"] = amount_end - amount_start

    continuing = deals["movement"] == "continuing"
    rank_start = deals["stage_start"].map(order)
    rank_end = deals["stage_end"].map(order)
    deals["advanced"] = continuing & (rank_end > rank_start)
    deals["moved_back"] = continuing & (rank_end < rank_start)
    close_start = deals["expected_close_date_start"]
    close_end = deals["expected_close_date_end"]
    deals["slipped"] = continuing & (close_end > close_start)
    deals["pulled_in"] = continuing & (close_end < close_start)
    deals["amount_changed"] = continuing & (amount_end != amount_start)

    for column in ("rep_id", "region", "business_unit", "account_id"):
        deals[column] = deals[f"{column}_end"].where(open_end, deals[f"{column}_start"])
    columns = [
        "opportunity_id",
        "rep_id",
        "region",
        "business_unit",
        "account_id",
        "movement",
        "stage_start",
        "stage_end",
        "amount_start",
        "amount_end",
        "value_change",
        "expected_close_date_start",
        "expected_close_date_end",
        "advanced",
        "moved_back",
        "slipped",
        "pulled_in",
        "amount_changed",
    ]
    deals = deals[columns].sort_values("opportunity_id").reset_index(drop=True)

    start_value = float(amount_start.sum())
    end_value = float(amount_end.sum())
    table = waterfall(deals, start_value, end_value)
    summary = _summary(deals)
    logger.info(
        "pipeline %s moved from %.2f on %s to %.2f on %s over %d deals",
        scope.label(),
        start_value,
        start,
        end_value,
        end,
        len(deals),
    )
    return PipelineMovement(start, end, deals, summary, table)


def _step_values(deals: pd.DataFrame) -> dict[str, tuple[int, float]]:
    """Return deals and value of each waterfall step of a movement table."""
    steps: dict[str, tuple[int, float]] = {}
    for step in ("new", "moved_in", "won", "lost", "removed", "moved_out"):
        rows = deals[deals["movement"] == step]
        steps[step] = (len(rows), math.fsum(rows["value_change"]))
    continuing = deals[deals["movement"] == "continuing"]
    up = continuing[continuing["value_change"] > 0]
    down = continuing[continuing["value_change"] < 0]
    steps["amount_up"] = (len(up), math.fsum(up["value_change"]))
    steps["amount_down"] = (len(down), math.fsum(down["value_change"]))
    return steps


def waterfall(
    deals: pd.DataFrame, start_value: float, end_value: float
) -> pd.DataFrame:
    """Build the waterfall of a movement table: start, each step, end.

    Columns: step, deals, value, running_total. Step values carry their
    sign (won is negative). The end row's value is `end_value`. An error is
    logged when the steps miss it by more than a cent, because rows would
    then be missing from `deals`.
    """
    rows = [("start", np.nan, start_value)]
    steps = _step_values(deals)
    rows += [(step, steps[step][0], steps[step][1]) for step in WATERFALL_STEPS]
    total = math.fsum([start_value, *(value for _, _, value in rows[1:])])
    if abs(total - end_value) > 0.01:
        logger.error(
            "pipeline waterfall does not reconcile: start %.2f plus steps gives %.2f, "
            "end is %.2f",
            start_value,
            total,
            end_value,
        )
    rows.append(("end", np.nan, end_value))
    table = pd.DataFrame(rows, columns=["step", "deals", "value"])
    running = [start_value]
    for value in table["value"].iloc[1:-1]:
        running.append(running[-1] + value)
    running.append(end_value)
    table["running_total"] = running
    table["deals"] = table["deals"].astype("Int64")
    return table


def waterfall_by(movement: PipelineMovement, by: str) -> pd.DataFrame:
    """Spread the waterfall over the values of column `by` of the deals table.

    Returns one row per value (rep_id, region, business_unit or account_id)
    with columns start, the WATERFALL_STEPS, and end, where start + steps =
    end row by row.
    """
    if by not in ("rep_id", "region", "business_unit", "account_id"):
        raise KpiError(
            f"cannot spread the waterfall by {by!r}; choose rep_id, region, "
            "business_unit or account_id"
        )
    rows = []
    for key, deals in movement.deals.groupby(by, dropna=False, sort=True):
        start_value = math.fsum(
            deals["amount_start"]
            .fillna(0.0)
            .where(~deals["movement"].isin(["new", "moved_in"]), 0.0)
        )
        steps = _step_values(deals)
        values = {step: steps[step][1] for step in WATERFALL_STEPS}
        end_value = math.fsum([start_value, *values.values()])
        rows.append({by: key, "start": start_value, **values, "end": end_value})
    return pd.DataFrame(rows, columns=[by, "start", *WATERFALL_STEPS, "end"])


def _summary(deals: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for name in MOVEMENTS:
        chosen = deals[deals["movement"] == name]
        rows.append((name, len(chosen), math.fsum(chosen["value_change"])))
    for flag in ("advanced", "moved_back", "slipped", "pulled_in", "amount_changed"):
        chosen = deals[deals[flag]]
        # Flags move no value; their value is the amount now at stake.
        rows.append((flag, len(chosen), math.fsum(chosen["amount_end"].fillna(0.0))))
    return pd.DataFrame(rows, columns=["movement", "deals", "value"])


def slipped_deals(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    as_of: date | None = None,
    min_slips: int = 1,
) -> pd.DataFrame:
    """List the open deals whose expected close date moved later `min_slips` times.

    Reads the deals open at the pipeline snapshot (the latest on or before
    `as_of`) with their slips, first and current expected close date and
    days slipped, most slips first. Raises KpiError for min_slips below 1.
    """
    if min_slips < 1:
        raise KpiError(f"min_slips must be 1 or more, got {min_slips}")
    deals = open_deal_table(con, scope, as_of)
    chosen = deals[deals["slips"] >= min_slips]
    columns = [
        "opportunity_id",
        "rep_id",
        "team",
        "region",
        "business_unit",
        "account_id",
        "stage",
        "amount",
        "first_expected_close",
        "expected_close_date",
        "slips",
        "days_slipped",
    ]
    return (
        chosen[columns]
        .sort_values(
            ["slips", "days_slipped", "opportunity_id"], ascending=[False, False, True]
        )
        .reset_index(drop=True)
    )


def stale_deals(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    as_of: date | None = None,
    days: int = STALE_DAYS,
) -> pd.DataFrame:
    """List the open deals with no change of stage, amount or close date for `days`.

    A change is seen between consecutive snapshots; a deal without one is
    dated from its creation (or its first snapshot). Returns the deals of
    the pipeline snapshot with days_since_change >= days, longest first.
    Raises KpiError for days below 1.
    """
    if days < 1:
        raise KpiError(f"stale days must be 1 or more, got {days}")
    deals = open_deal_table(con, scope, as_of)
    deals["days_since_change"] = (deals["snapshot_date"] - deals["last_change"]).dt.days
    chosen = deals[deals["days_since_change"] >= days]
    columns = [
        "opportunity_id",
        "rep_id",
        "team",
        "region",
        "business_unit",
        "account_id",
        "stage",
        "amount",
        "last_change",
        "days_since_change",
    ]
    return (
        chosen[columns]
        .sort_values(["days_since_change", "opportunity_id"], ascending=[False, True])
        .reset_index(drop=True)
    )


def stage_durations(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    as_of: date | None = None,
) -> pd.DataFrame:
    """Summarise days in stage per open stage, from the snapshots up to `as_of`.

    Columns: stage (in learned stage order), completed_spells and
    mean_days_completed / median_days_completed over the stage spells that
    ended with another stage, won or lost included (snapshot resolution),
    open_deals and
    mean_days_open over the deals in that stage at the pipeline snapshot.
    """
    history = deal_history(con, scope, as_of)
    spells = stage_spells(history)
    done = spells[spells["completed"]]
    completed = done.groupby("stage")["days"].agg(["count", "mean", "median"])
    deals = open_deal_table(con, scope, as_of)
    in_stage = (deals["snapshot_date"] - deals["stage_since"]).dt.days
    current = in_stage.groupby(deals["stage"]).agg(["count", "mean"])
    stages = stage_order(history)
    table = pd.DataFrame({"stage": stages})
    table["completed_spells"] = table["stage"].map(completed["count"]).fillna(0)
    table["mean_days_completed"] = table["stage"].map(completed["mean"])
    table["median_days_completed"] = table["stage"].map(completed["median"])
    table["open_deals"] = table["stage"].map(current["count"]).fillna(0)
    table["mean_days_open"] = table["stage"].map(current["mean"])
    for column in ("completed_spells", "open_deals"):
        table[column] = table[column].astype("int64")
    return table


#: KPIs of `pipeline_summary`, in column order.
SUMMARY_KPIS = (
    "open_deals",
    "open_pipeline",
    "weighted_pipeline",
    "period_pipeline",
    "target",
    "revenue",
    "pipeline_coverage",
    "recent_win_rate",
    "required_coverage",
    "avg_deal_size",
    "sales_cycle_days",
    "pipeline_velocity",
    "days_in_stage",
    "slipped_deals",
    "close_date_slips",
    "stale_deals",
)


def pipeline_summary(
    con: duckdb.DuckDBPyConnection,
    by: Sequence[str] = (),
    scope: Scope | None = None,
    period: str = "year",
    as_of: date | None = None,
    kpis: Sequence[str] = SUMMARY_KPIS,
) -> pd.DataFrame:
    """Compute the pipeline KPIs side by side per group of `by`.

    Each KPI is computed by `compute_kpi` with the named `period` read at
    `as_of` (required). A KPI that cannot be grouped by `by` is left out.
    Adds coverage_gap, pipeline_coverage minus required_coverage, which is
    negative when the pipeline is short of what the recent win rate needs.
    Raises KpiError as compute_kpi does.
    """
    if as_of is None:
        raise KpiError("pipeline_summary needs as_of; pass as_of=date(...)")
    by = (by,) if isinstance(by, str) else tuple(by)
    frame: pd.DataFrame | None = None
    for name in kpis:
        try:
            values = compute_kpi(
                con, name, by=by, scope=scope, period=period, as_of=as_of
            )
        except KpiError as exc:
            logger.info("pipeline summary leaves out %s: %s", name, exc)
            continue
        frame = (
            values
            if frame is None
            else (
                frame.merge(values, on=list(by), how="outer")
                if by
                else pd.concat([frame, values], axis=1)
            )
        )
    if frame is None:
        return pd.DataFrame(columns=list(by))
    if {"pipeline_coverage", "required_coverage"} <= set(frame.columns):
        frame["coverage_gap"] = frame["pipeline_coverage"] - frame["required_coverage"]
    if by:
        frame = frame.sort_values(list(by), na_position="last", kind="stable")
    return frame.reset_index(drop=True)
