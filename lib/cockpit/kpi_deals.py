"""Deal histories from CRM snapshots: slips, stage spells and last changes.

The `opportunities` table keeps one row per deal and snapshot date. This
module reads those rows once and derives, per deal, what changed between
consecutive snapshots. The KPI registry (`cockpit.kpi`) and the pipeline
analytics (`cockpit.pipeline`) build on these frames.

Resolution is one snapshot interval: a change seen in a snapshot happened at
some point since the previous one, and it is dated on the later snapshot.
"""

from __future__ import annotations

import logging
from datetime import date

import duckdb
import numpy as np
import pandas as pd

from cockpit.kpi_query import undefined_measures
from cockpit.mart.store import require_tables
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: Columns of `deal_history`, in order.
HISTORY_COLUMNS = [
    "opportunity_id",
    "snapshot_date",
    "stage",
    "status",
    "amount",
    "expected_close_date",
    "created_date",
    "closed_date",
    "rep_id",
    "region",
    "business_unit",
    "account_id",
    "product_id",
    "team",
    "product_line",
    "segment",
]

_DATE_COLUMNS = ("snapshot_date", "expected_close_date", "created_date", "closed_date")


def deal_history(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    as_of: date | None = None,
) -> pd.DataFrame:
    """Read every snapshot row on or before `as_of` of the deals in `scope`.

    A deal is in scope when its latest row on or before `as_of` matches the
    scope. All its earlier rows come along, even rows assigned elsewhere. Each row gets the rep's team, the product's product line and
    the account's segment. Rows are sorted by opportunity_id, then
    snapshot_date. Date columns are pandas timestamps. Raises MartError when
    a table it reads is missing.
    """
    require_tables(con, ["opportunities", "reps", "products", "accounts"])
    scope = scope or Scope()
    scope_sql, scope_params = scope.where("f.")
    bound = "WHERE snapshot_date <= ?" if as_of is not None else ""
    bound_params = [as_of] if as_of is not None else []
    sql = f"""
        WITH history AS (SELECT * FROM opportunities {bound}),
        latest AS (
            SELECT * FROM history
            QUALIFY snapshot_date = max(snapshot_date) OVER (PARTITION BY opportunity_id)
        ),
        chosen AS (SELECT f.opportunity_id FROM latest f WHERE {scope_sql})
        SELECT h.opportunity_id, h.snapshot_date, h.stage, h.status, h.amount,
               h.expected_close_date, h.created_date, h.closed_date, h.rep_id,
               h.region, h.business_unit, h.account_id, h.product_id,
               r.team, p.product_line, a.segment
        FROM history h
        JOIN chosen USING (opportunity_id)
        LEFT JOIN reps r ON r.rep_id = h.rep_id
        LEFT JOIN products p ON p.product_id = h.product_id
        LEFT JOIN accounts a ON a.account_id = h.account_id
        ORDER BY h.opportunity_id, h.snapshot_date
    """
    frame = con.execute(sql, [*bound_params, *scope_params]).df()
    for column in _DATE_COLUMNS:
        frame[column] = pd.to_datetime(frame[column])
    return frame[HISTORY_COLUMNS].reset_index(drop=True)


def _changed(current: pd.Series, previous: pd.Series) -> pd.Series:
    """True where a value differs from the previous row's, nulls equal to nulls."""
    both_null = current.isna() & previous.isna()
    return ~both_null & (current.ne(previous) | current.isna() | previous.isna())


def deal_summary(history: pd.DataFrame) -> pd.DataFrame:
    """Summarise a `deal_history` frame to one row per deal, at its latest row.

    Added columns:

    - first_snapshot: date of the deal's first row.
    - first_expected_close: the first non-empty expected close date seen.
    - slips: how many times the expected close date moved later from one
      row to the next (both dates present).
    - days_slipped: days from first_expected_close to the latest expected
      close date, 0 when it did not move later.
    - stage_since: estimated day the deal entered its latest stage. It is
      the first row of the latest unbroken run of that stage. When the run
      starts at the deal's first row, the created date is used if it is
      earlier, because the deal may have had that stage since creation.
      This can overstate the days of a deal first exported at a later stage.
    - last_change: the latest row whose stage, amount or expected close
      date differs from the row before, else the created date, else the
      first row's date.
    """
    if history.empty:
        columns = [
            *HISTORY_COLUMNS,
            "first_snapshot",
            "first_expected_close",
            "slips",
            "days_slipped",
            "stage_since",
            "last_change",
        ]
        frame = pd.DataFrame({column: [] for column in columns})
        for column in ("slips", "days_slipped"):
            frame[column] = frame[column].astype("int64")
        return frame

    frame = history.sort_values(["opportunity_id", "snapshot_date"], kind="stable")
    frame = frame.reset_index(drop=True)
    deal = frame["opportunity_id"]
    first_row = deal.ne(deal.shift())
    grouped = frame.groupby("opportunity_id", sort=False)

    previous_expected = grouped["expected_close_date"].shift()
    slipped = (frame["expected_close_date"] > previous_expected) & ~first_row
    stage_changed = frame["stage"].ne(grouped["stage"].shift()) | first_row
    any_change = ~first_row & (
        _changed(frame["stage"], grouped["stage"].shift())
        | _changed(frame["amount"], grouped["amount"].shift())
        | _changed(frame["expected_close_date"], previous_expected)
    )

    frame["_slip"] = slipped.astype("int64")
    frame["_run_start"] = frame["snapshot_date"].where(stage_changed)
    frame["_run_start"] = frame.groupby("opportunity_id", sort=False)[
        "_run_start"
    ].ffill()
    frame["_run_is_first"] = first_row.astype("int64")
    frame["_run_is_first"] = (
        frame["_run_is_first"]
        .where(stage_changed)
        .groupby(frame["opportunity_id"], sort=False)
        .ffill()
        .astype(bool)
    )
    frame["_change"] = frame["snapshot_date"].where(any_change)

    grouped = frame.groupby("opportunity_id", sort=False)
    latest = grouped.tail(1).set_index("opportunity_id")
    summary = latest[HISTORY_COLUMNS[1:]].copy()
    summary["first_snapshot"] = grouped["snapshot_date"].min()
    summary["first_expected_close"] = grouped["expected_close_date"].first()
    summary["slips"] = grouped["_slip"].sum().astype("int64")
    moved = (summary["expected_close_date"] - summary["first_expected_close"]).dt.days
    summary["days_slipped"] = moved.clip(lower=0).fillna(0).astype("int64")

    run_start = latest["_run_start"]
    from_creation = latest["_run_is_first"] & (summary["created_date"] < run_start)
    summary["stage_since"] = run_start.where(~from_creation, summary["created_date"])

    last_change = grouped["_change"].max()
    fallback = summary["created_date"].fillna(summary["first_snapshot"])
    summary["last_change"] = last_change.fillna(fallback)
    return summary.reset_index()


def stage_spells(history: pd.DataFrame) -> pd.DataFrame:
    """Return every unbroken run of one stage per deal in a `deal_history` frame.

    Columns: opportunity_id, stage, status, entered, left, days, completed.
    `entered` is the first row of the run, `left` the first row of the next
    run (NaT while the run goes on), `days` the days between them and
    `completed` whether a later row shows another stage. Runs of closed
    statuses (won, lost) are left out.
    """
    columns = ["opportunity_id", "stage", "status", "entered", "left", "days"]
    if history.empty:
        frame = pd.DataFrame({column: [] for column in columns})
        frame["completed"] = pd.Series([], dtype=bool)
        return frame
    frame = history.sort_values(["opportunity_id", "snapshot_date"], kind="stable")
    frame = frame.reset_index(drop=True)
    first_row = frame["opportunity_id"].ne(frame["opportunity_id"].shift())
    new_run = first_row | frame["stage"].ne(frame["stage"].shift())
    frame["_run"] = new_run.cumsum()
    runs = (
        frame.groupby("_run", sort=False)
        .agg(
            opportunity_id=("opportunity_id", "first"),
            stage=("stage", "first"),
            status=("status", "first"),
            entered=("snapshot_date", "min"),
        )
        .reset_index(drop=True)
    )
    same_deal_next = runs["opportunity_id"].eq(runs["opportunity_id"].shift(-1))
    runs["left"] = runs["entered"].shift(-1).where(same_deal_next)
    runs["days"] = (runs["left"] - runs["entered"]).dt.days
    runs["completed"] = same_deal_next
    return runs[runs["status"] == "open"].reset_index(drop=True)


def days_between(later: pd.Series, earlier: pd.Series | pd.Timestamp) -> pd.Series:
    """Whole days from `earlier` to `later`, as floats with NaN for missing dates."""
    return (later - earlier).dt.days.astype("float64")


#: Fallback sort key for stages that no open deal was seen in.
_UNSEEN_STAGE = np.inf


def stage_order(history: pd.DataFrame) -> list[str]:
    """Order the open stages of a `deal_history` frame from first to last.

    Stage names differ between CRMs, so the order is learned from the data.
    Stages are sorted by the median age of the deal (days since created) at
    the first row that shows them, and by name when ages tie or are unknown.
    """
    open_rows = history[history["status"] == "open"]
    if open_rows.empty:
        return []
    first_seen = open_rows.groupby(["opportunity_id", "stage"], sort=False).agg(
        seen=("snapshot_date", "min"), created=("created_date", "first")
    )
    first_seen["age"] = (first_seen["seen"] - first_seen["created"]).dt.days
    median_age = first_seen.groupby(level="stage")["age"].median()
    keys = median_age.fillna(_UNSEEN_STAGE)
    return sorted(keys.index, key=lambda stage: (keys[stage], str(stage)))


def time_labels(dates: pd.Series, grain: str) -> pd.Series:
    """Return month (2026-03), quarter (2026-Q1) or year (2026) labels of dates."""
    if grain == "month":
        labels = dates.dt.strftime("%Y-%m")
    elif grain == "quarter":
        labels = dates.dt.year.astype("Int64").astype(str) + "-Q"
        labels = labels + dates.dt.quarter.astype("Int64").astype(str)
    else:
        labels = dates.dt.year.astype("Int64").astype(str)
    return labels.where(dates.notna(), None).astype(object)


#: Measures of `open_deal_measures`, with their value for a group without deals.
DEAL_MEASURES = {
    "slipped_deals": 0,
    "close_date_slips": 0,
    "stale_deals": 0,
    "stage_days_sum": 0.0,
    "stage_days_count": 0,
}


def open_deal_measures(
    summary: pd.DataFrame,
    snapshot: date | None,
    by: tuple[str, ...],
    stale_days: int,
) -> pd.DataFrame:
    """Aggregate the deals open at `snapshot` in a `deal_summary` frame by `by`.

    Month, quarter and year group by expected close date. Measures: deals
    that slipped at least once, the total of their slips, deals without a
    change for at least `stale_days` days, and the sum and count of days
    in the current stage (for a mean).
    """
    if snapshot is None:
        return undefined_measures(by, DEAL_MEASURES)
    day = pd.Timestamp(snapshot)
    deals = summary[
        (summary["snapshot_date"] == day) & (summary["status"] == "open")
    ].copy()
    for grain in by:
        if grain in ("month", "quarter", "year"):
            deals[grain] = time_labels(deals["expected_close_date"], grain)
    deals["slipped_deals"] = (deals["slips"] > 0).astype("int64")
    deals["close_date_slips"] = deals["slips"].astype("int64")
    since_change = days_between(pd.Series(day, index=deals.index), deals["last_change"])
    deals["stale_deals"] = (since_change >= stale_days).astype("int64")
    in_stage = days_between(pd.Series(day, index=deals.index), deals["stage_since"])
    deals["stage_days_sum"] = in_stage.fillna(0.0)
    deals["stage_days_count"] = in_stage.notna().astype("int64")
    measures = list(DEAL_MEASURES)
    if not by:
        return pd.DataFrame({m: [deals[m].sum()] for m in measures})
    return (
        deals.groupby(list(by), dropna=False, sort=False)[measures].sum().reset_index()
    )
