"""Target versions in the mart: publish, adjust, re-set, reconcile and export.

Nothing here overwrites a row. Every change appends:

- `targets` gets a new version of each target row that changes (the KPI
  registry reads the latest version of each row);
- `target_changes` gets one event per changed row with who, when, why,
  the old and the new value and the status (published, reset, proposed,
  approved, rejected, absorbed);
- `target_allocations` and `target_role_bases` keep, per plan version, the
  forecast, headroom, weights and role facts that made each top-down value.

Versions are numbered per plan year: each write takes the largest version of
the year's rows plus one, so a higher version is always a later event.

Revenue targets exist per quarter and per year for every node of the plan:
company, region, region × business unit, team × unit and seller × unit. A
year row is always the sum of its four quarter rows. Role targets
(`cockpit.targets.role_targets`) are rep rows with their own metric, kept
in step with the seller's revenue targets.

In the bottom-up workflow, `propose_adjustment` records a manager's request
for a seller's year target in one business unit, with a reason and an
optional effective date. `decide_adjustment` lets the next level approve it
(new versions, optionally absorbed by the other sellers of the team) or
reject it (nothing changes). `reconcile` reports the gap between the
sellers' targets and the top-down targets above them.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from cockpit.errors import TargetError
from cockpit.mart.schema import TABLES
from cockpit.mart.store import load_frame, require_tables
from cockpit.targets import (
    LEVEL_COLUMNS,
    PLAN_LEVELS,
    ROLE_BASIS_COLUMNS,
    ROLE_METRIC_UNITS,
    TargetPlan,
    allocate_cents,
    quarter_bounds,
    quarter_label,
    role_targets,
    year_label,
)

logger = logging.getLogger(__name__)

#: Columns that identify one target row apart from its version.
ROW_KEY = ["period", "level", "key", "region", "business_unit", "metric"]

#: source name of every load this module makes, as it appears in load_log.
SOURCE = "target_log"

#: Ways to balance an approved adjustment. "none" keeps the team's top-down
#: target and reports the gap. "team" takes the difference from, or gives it
#: to, the other sellers of the same team and business unit.
ABSORB_OPTIONS = ("none", "team")

#: Columns of the compensation CSV, in order.
COMPENSATION_COLUMNS = [
    "plan_year",
    "period",
    "period_start",
    "period_end",
    "rep_id",
    "rep_name",
    "region",
    "team",
    "role_type",
    "metric",
    "unit",
    "target",
    "currency",
    "version",
    "changed_at",
    "changed_by",
]


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _periods(year: int) -> list[str]:
    return [year_label(year)] + [quarter_label(year, q) for q in (1, 2, 3, 4)]


def _cents(value: float | None) -> int:
    return 0 if value is None or pd.isna(value) else round(float(value) * 100)


def _key(row) -> tuple:
    """Hashable identity of a target row; missing region or unit become None."""
    get = row.get if isinstance(row, dict) else row.__getitem__
    return tuple(None if pd.isna(get(c)) else get(c) for c in ROW_KEY)


# --------------------------------------------------------------------------
# Reading


def in_force(
    con: duckdb.DuckDBPyConnection, year: int, metric: str | None = "revenue"
) -> pd.DataFrame:
    """Return the latest version of every target row of `year` and its quarters.

    With `metric` None every metric is returned. Rows keep the columns of
    the targets table. Raises MartError when the mart lacks the table.
    """
    require_tables(con, ["targets"])
    periods = _periods(year)
    placeholders = ", ".join("?" for _ in periods)
    metric_sql = "" if metric is None else "AND metric = ?"
    params: list[object] = [*periods] + ([] if metric is None else [metric])
    return con.execute(
        f"""
        SELECT * FROM targets
        WHERE period IN ({placeholders}) {metric_sql}
        QUALIFY version = max(version) OVER (
            PARTITION BY period, level, key, region, business_unit, metric
        )
        ORDER BY period, level, key, region, business_unit, metric
        """,
        params,
    ).df()


def _next_version(con: duckdb.DuckDBPyConnection, year: int) -> int:
    periods = _periods(year)
    placeholders = ", ".join("?" for _ in periods)
    latest = con.execute(
        f"""
        SELECT max(v) FROM (
            SELECT max(version) AS v FROM targets WHERE period IN ({placeholders})
            UNION ALL
            SELECT max(version) FROM target_allocations WHERE period IN ({placeholders})
        )
        """,
        [*periods, *periods],
    ).fetchall()[0][0]
    return int(latest or 0) + 1


def _next_change_id(con: duckdb.DuckDBPyConnection) -> str:
    count = con.execute(
        "SELECT count(DISTINCT change_id) FROM target_changes"
    ).fetchall()[0][0]
    return f"C{int(count) + 1:06d}"


def latest_allocations(con: duckdb.DuckDBPyConnection, year: int) -> pd.DataFrame:
    """Return, for each quarter of `year`, the allocation of the latest plan.

    A plan allocates every node of its quarters, so a node that a later
    plan of the quarter left out (a seller who left) has no row. Columns
    follow the target_allocations table. Empty when no plan of the year was
    published.
    """
    require_tables(con, ["target_allocations"])
    quarters = [quarter_label(year, q) for q in (1, 2, 3, 4)]
    return con.execute(
        """
        SELECT * FROM target_allocations
        WHERE period IN (?, ?, ?, ?)
        QUALIFY version = max(version) OVER (PARTITION BY period)
        """,
        quarters,
    ).df()


def latest_role_bases(con: duckdb.DuckDBPyConnection, year: int) -> pd.DataFrame:
    """Return the role bases stored by the latest plan of `year`."""
    require_tables(con, ["target_role_bases"])
    return con.execute(
        """
        SELECT * FROM target_role_bases
        WHERE period = ?
        QUALIFY version = max(version) OVER (PARTITION BY period)
        ORDER BY rep_id
        """,
        [year_label(year)],
    ).df()


def change_history(
    con: duckdb.DuckDBPyConnection,
    year: int | None = None,
    key: str | None = None,
    change_id: str | None = None,
) -> pd.DataFrame:
    """Return the change log, oldest event first, filtered as requested.

    `year` keeps the events of that year and its quarters, `key` those of one
    member (e.g. a rep_id), `change_id` those of one change.
    """
    require_tables(con, ["target_changes"])
    clauses, params = [], []
    if year is not None:
        periods = _periods(year)
        clauses.append(f"period IN ({', '.join('?' for _ in periods)})")
        params.extend(periods)
    if key is not None:
        clauses.append("key = ?")
        params.append(key)
    if change_id is not None:
        clauses.append("change_id = ?")
        params.append(change_id)
    where = " AND ".join(clauses) or "TRUE"
    return con.execute(
        f"""
        SELECT * FROM target_changes WHERE {where}
        ORDER BY acted_at, change_id, period, level, key, metric, status
        """,
        params,
    ).df()


# --------------------------------------------------------------------------
# Writing


def _load(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, what: str):
    """Append rows through load_frame; any quarantined row fails the step."""
    columns = TABLES[table].column_names
    report = load_frame(
        con, table, frame[columns], source=SOURCE, source_file=f"{table}: {what}"
    )
    if report.rows_quarantined:
        reasons = con.execute(
            "SELECT DISTINCT reason FROM quarantine WHERE load_id = ?",
            [report.load_id],
        ).fetchall()
        raise TargetError(
            f"{report.rows_quarantined} {table} row(s) of {what} were rejected "
            f"({'; '.join(r[0] for r in reasons)}); another process may have "
            "written the same version, so read the targets again and retry"
        )


class _Transaction:
    """Run a block in one DuckDB transaction; roll back on any error."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        self.con.begin()
        return self.con

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.con.commit()
        else:
            self.con.rollback()


def _require_log_tables(con: duckdb.DuckDBPyConnection) -> None:
    require_tables(
        con,
        [
            "targets",
            "target_changes",
            "target_allocations",
            "target_role_bases",
            "reps",
        ],
    )


@dataclass(frozen=True)
class _Event:
    """Who, when, why and which change a write belongs to."""

    change_id: str
    status: str
    actor: str
    acted_at: datetime
    reason: str | None
    version: int


def _write_rows(
    con: duckdb.DuckDBPyConnection,
    rows: pd.DataFrame,
    current: pd.DataFrame,
    event: _Event,
    *,
    write_unchanged: bool = False,
    requested: dict[tuple, float] | None = None,
    effective_from: date | None = None,
) -> pd.DataFrame:
    """Append new versions of `rows` and their change events.

    `rows` has ROW_KEY plus period_start, period_end, value, method and
    basis. Rows whose value equals the one in force in `current` are
    skipped unless `write_unchanged`. Returns the change events written.
    """
    before = {_key(r): r["value"] for _, r in current.iterrows()}
    keep = []
    old_values = []
    for _, row in rows.iterrows():
        old = before.get(_key(row))
        changed = old is None or _cents(old) != _cents(row["value"])
        keep.append(changed or write_unchanged)
        old_values.append(old)
    rows = rows.assign(old_value=old_values)[keep]
    if rows.empty:
        return pd.DataFrame(columns=TABLES["target_changes"].column_names)
    targets = rows.assign(
        version=event.version,
        set_by=event.actor,
        reason=event.reason,
        created_at=pd.Timestamp(event.acted_at),
    )
    _load(con, "targets", targets, f"{event.status} {event.change_id}")
    changes = pd.DataFrame(
        {
            "change_id": event.change_id,
            "status": event.status,
            "period": rows["period"],
            "period_start": rows["period_start"],
            "period_end": rows["period_end"],
            "level": rows["level"],
            "key": rows["key"],
            "region": rows["region"],
            "business_unit": rows["business_unit"],
            "metric": rows["metric"],
            "old_value": rows["old_value"].astype(float),
            "new_value": rows["value"].astype(float),
            "requested_value": [
                (requested or {}).get(_key(r)) for _, r in rows.iterrows()
            ],
            "effective_from": effective_from,
            "version": event.version,
            "actor": event.actor,
            "acted_at": pd.Timestamp(event.acted_at),
            "reason": event.reason,
        }
    )
    _load(con, "target_changes", changes, f"{event.status} {event.change_id}")
    return changes


# --------------------------------------------------------------------------
# Publishing a plan or a quarterly re-set


def publish_plan(
    con: duckdb.DuckDBPyConnection,
    plan: TargetPlan,
    set_by: str,
    reason: str,
    *,
    at: datetime | None = None,
    carry_adjustments: bool = True,
) -> int:
    """Store a plan as a new version of the year's targets; return the version.

    A plan of all four quarters is a publication (status "published"). A plan
    of the remaining quarters is a quarterly re-set (status "reset"), which
    needs an earlier published plan of the year. For each quarter of the plan
    every node gets its top-down target. With `carry_adjustments`, a seller
    row keeps the adjustment it carried in that quarter (value in force
    minus the latest top-down value), floored at 0. A row of those quarters
    that is in force but absent from the plan (a seller who left) is set to
    0. Year rows become the sum of their quarters. Role targets are derived
    again from the sellers' revenue targets.

    Also stores the plan's allocations and role bases, and one change event
    per row written. Everything is one transaction.

    Raises TargetError when `set_by` or `reason` is empty, a re-set finds no
    published plan of the year, or a row is rejected by the mart.
    """
    if not set_by or not str(set_by).strip():
        raise TargetError("set_by is empty; give the person or job publishing the plan")
    if not reason or not str(reason).strip():
        raise TargetError("reason is empty; say why the plan is published")
    _require_log_tables(con)
    at = at or _now()
    year = plan.year
    status = "published" if plan.is_full_year else "reset"
    allocations = latest_allocations(con, year)
    if status == "reset" and allocations.empty:
        raise TargetError(
            f"no published plan of {year} to re-set; publish a plan of all four "
            "quarters first"
        )
    with _Transaction(con):
        version = _next_version(con, year)
        event = _Event(_next_change_id(con), status, set_by, at, reason, version)
        current = in_force(con, year)
        quarter_rows = _plan_quarter_rows(
            plan, current, allocations if carry_adjustments else None
        )
        quarter_rows = _with_dropped_rows(
            quarter_rows, current, set(quarter_rows["period"])
        )
        all_quarters = _merge_quarters(current, quarter_rows)
        year_rows = _year_rows(all_quarters, year, "sum_of_quarters")
        if plan.is_full_year:
            year_rows = _with_dropped_rows(year_rows, current, {year_label(year)})
        rows = pd.concat([quarter_rows, year_rows], ignore_index=True)
        _write_rows(con, rows, current, event, write_unchanged=True)
        _load(con, "target_allocations", _allocation_rows(plan, version, at), status)
        _load(con, "target_role_bases", _basis_rows(plan, version, at), status)
        _refresh_role_targets(con, year, None, event)
    logger.info(
        "%s plan %s as version %d (%s): company target %.2f",
        status,
        year,
        version,
        event.change_id,
        plan.company_target,
    )
    return version


def _target_frame(rows: list[dict]) -> pd.DataFrame:
    columns = [
        "period",
        "period_start",
        "period_end",
        "level",
        "key",
        "region",
        "business_unit",
        "metric",
        "value",
        "method",
        "basis",
    ]
    return pd.DataFrame(rows, columns=columns)


def _plan_quarter_rows(
    plan: TargetPlan, current: pd.DataFrame, allocations: pd.DataFrame | None
) -> pd.DataFrame:
    """Revenue rows of the plan's quarters, with carried adjustments."""
    quarters = {quarter_label(plan.year, q) for q in plan.quarters}
    nodes = plan.nodes[plan.nodes["period"].isin(quarters)]
    carried = _carried_adjustments(current, allocations, quarters)
    rows = []
    for node in nodes.itertuples(index=False):
        value = node.top_down_cents
        basis = node.basis
        method = "top_down"
        if node.level == "rep":
            delta = carried.get(
                (node.period, node.key, node.region, node.business_unit), 0
            )
            if delta:
                value = max(0, value + delta)
                method = "top_down_with_adjustment"
                basis = basis[:-1] + (
                    f"; adjustment {delta / 100:+,.2f} carried from the version in "
                    "force" + (", floored at 0." if value == 0 else ".")
                )
        rows.append(
            {
                "period": node.period,
                "period_start": node.period_start,
                "period_end": node.period_end,
                "level": node.level,
                "key": node.key,
                "region": node.region,
                "business_unit": node.business_unit,
                "metric": "revenue",
                "value": value / 100,
                "method": method,
                "basis": basis,
            }
        )
    return _target_frame(rows)


def _carried_adjustments(
    current: pd.DataFrame, allocations: pd.DataFrame | None, quarters: set[str]
) -> dict[tuple, int]:
    """Value in force minus latest top-down value, in cents, per seller row."""
    if allocations is None or allocations.empty:
        return {}
    reps = current[(current["level"] == "rep") & current["period"].isin(quarters)]
    alloc = allocations[allocations["level"] == "rep"]
    merged = reps.merge(
        alloc[["period", "key", "region", "business_unit", "top_down"]],
        on=["period", "key", "region", "business_unit"],
        how="inner",
    )
    return {
        (row.period, row.key, row.region, row.business_unit): _cents(row.value)
        - _cents(row.top_down)
        for row in merged.itertuples(index=False)
        if _cents(row.value) != _cents(row.top_down)
    }


def _with_dropped_rows(
    rows: pd.DataFrame, current: pd.DataFrame, periods: set[str]
) -> pd.DataFrame:
    """Add a zero row for each row in force in `periods` that `rows` lacks."""
    present = {_key(r) for _, r in rows.iterrows()}
    dropped = []
    for _, row in current[current["period"].isin(periods)].iterrows():
        if _key(row) in present or _cents(row["value"]) == 0:
            continue
        dropped.append(
            {
                **{c: row[c] for c in ROW_KEY},
                "period_start": row["period_start"],
                "period_end": row["period_end"],
                "value": 0.0,
                "method": "not_in_plan",
                "basis": f"{row['period']}: not part of the new plan, so set to 0.",
            }
        )
    return pd.concat([rows, _target_frame(dropped)], ignore_index=True)


def _merge_quarters(current: pd.DataFrame, new_rows: pd.DataFrame) -> pd.DataFrame:
    """Quarter rows in force once `new_rows` are written."""
    is_quarter = current["period"].str.contains("-Q", regex=False)
    old = current[is_quarter]
    replaced = {_key(r) for _, r in new_rows.iterrows()}
    kept = old[[(_key(r) not in replaced) for _, r in old.iterrows()]]
    return pd.concat([kept, new_rows], ignore_index=True)


def _year_rows(quarters: pd.DataFrame, year: int, method: str) -> pd.DataFrame:
    """Build one year row per node as the sum of its quarter rows, in cents."""
    start, _ = quarter_bounds(year, 1)
    _, end = quarter_bounds(year, 4)
    quarters = quarters.assign(cents=[_cents(v) for v in quarters["value"]])
    node = ["level", "key", "region", "business_unit", "metric"]
    rows = []
    for keys, group in quarters.groupby(node, dropna=False, sort=True):
        parts = ", ".join(
            f"{p[-2:]} {c / 100:,.2f}"
            for p, c in sorted(zip(group["period"], group["cents"], strict=True))
        )
        total = int(group["cents"].sum())
        rows.append(
            {
                "period": year_label(year),
                "period_start": start,
                "period_end": end,
                **{
                    column: (None if pd.isna(value) else value)
                    for column, value in zip(node, keys, strict=True)
                },
                "value": total / 100,
                "method": method,
                "basis": f"{year}: sum of the quarters ({parts}) = {total / 100:,.2f}.",
            }
        )
    return _target_frame(rows)


def _allocation_rows(plan: TargetPlan, version: int, at: datetime) -> pd.DataFrame:
    quarters = {quarter_label(plan.year, q) for q in plan.quarters}
    nodes = plan.nodes[plan.nodes["period"].isin(quarters)]
    return pd.DataFrame(
        {
            "version": version,
            "period": nodes["period"],
            "period_start": nodes["period_start"],
            "period_end": nodes["period_end"],
            "level": nodes["level"],
            "key": nodes["key"],
            "region": nodes["region"],
            "business_unit": nodes["business_unit"],
            "team": nodes["team"],
            "as_of": plan.as_of,
            "history": nodes["history"],
            "forecast": nodes["forecast_cents"] / 100,
            "headroom": nodes["headroom"],
            "forecast_share": nodes["forecast_share"],
            "headroom_share": nodes["headroom_share"],
            "weight": nodes["weight"],
            "rule": nodes["rule"],
            "top_down": nodes["top_down_cents"] / 100,
            "ambition_pct": plan.policy.ambition_pct,
            "forecast_weight": plan.policy.forecast_weight,
            "created_at": pd.Timestamp(at),
        }
    )


def _basis_rows(plan: TargetPlan, version: int, at: datetime) -> pd.DataFrame:
    bases = plan.bases[ROLE_BASIS_COLUMNS].drop(columns=["name", "team"])
    return bases.assign(
        period=year_label(plan.year),
        version=version,
        as_of=plan.as_of,
        created_at=pd.Timestamp(at),
    )


def _refresh_role_targets(
    con: duckdb.DuckDBPyConnection,
    year: int,
    rep_ids: set[str] | None,
    event: _Event,
) -> pd.DataFrame:
    """Derive role targets again from the revenue targets in force.

    Limited to `rep_ids` when given. Role rows in force that the new
    derivation no longer produces are set to 0.
    """
    bases = latest_role_bases(con, year)
    if bases.empty:
        return pd.DataFrame()
    revenue = in_force(con, year)
    revenue = revenue[revenue["level"] == "rep"]
    if rep_ids is not None:
        revenue = revenue[revenue["key"].isin(rep_ids)]
        bases = bases[bases["rep_id"].isin(rep_ids)]
    sellers = (
        revenue.assign(cents=[_cents(v) for v in revenue["value"]])
        .groupby(["key", "period", "period_start", "period_end"], as_index=False)[
            "cents"
        ]
        .sum()
        .rename(columns={"key": "rep_id", "cents": "target_cents"})
    )
    allocations = latest_allocations(con, year)
    allocations = allocations[allocations["level"] == "rep"]
    phasing = (
        allocations.assign(weight=[_cents(v) for v in allocations["top_down"]])
        .groupby(["key", "period"], as_index=False)["weight"]
        .sum()
        .rename(columns={"key": "rep_id"})
    )
    derived = role_targets(sellers, bases, phasing)
    rows = _target_frame(
        [
            {
                "period": r.period,
                "period_start": r.period_start,
                "period_end": r.period_end,
                "level": "rep",
                "key": r.rep_id,
                "region": r.region,
                "business_unit": None,
                "metric": r.metric,
                "value": r.value,
                "method": "role_target",
                "basis": r.basis,
            }
            for r in derived.itertuples(index=False)
        ]
    )
    current = in_force(con, year, metric=None)
    current = current[current["metric"].isin(ROLE_METRIC_UNITS)]
    if rep_ids is not None:
        current = current[current["key"].isin(rep_ids)]
    rows = _with_dropped_rows(rows, current, set(_periods(year)))
    return _write_rows(con, rows, current, event)


# --------------------------------------------------------------------------
# Bottom-up adjustments


def propose_adjustment(
    con: duckdb.DuckDBPyConnection,
    year: int,
    rep_id: str,
    business_unit: str,
    new_value: float,
    proposed_by: str,
    reason: str,
    *,
    effective_from: date | None = None,
    at: datetime | None = None,
) -> str:
    """Record a proposal to change a seller's year revenue target in one unit.

    `new_value` is the requested year target, in reporting currency. With `effective_from` (a day of the year) it applies from that
    day only: quarters before keep their values, quarters after take the
    new value phased like the current quarters, and the quarter that
    contains the day is prorated by days. Nothing changes in `targets` until
    `decide_adjustment` approves. Returns the change id.

    The proposer may not be the seller. When the proposer is a rep of the
    mart, they must be the seller's manager (manager_id) or a manager of the
    seller's team. Other names, such as hub staff or regional heads not kept
    in reps, are accepted and logged.

    Raises TargetError when the reason or proposer is empty, the value is
    negative or not finite, the day lies outside the year, the seller has no
    target of the year in that unit, a proposal on the same target is still
    open, or the proposer may not propose for this seller.
    """
    _require_log_tables(con)
    at = at or _now()
    if not reason or not str(reason).strip():
        raise TargetError("reason is empty; say why the target should change")
    if not proposed_by or not str(proposed_by).strip():
        raise TargetError("proposed_by is empty; give the proposer's rep_id or name")
    if not math.isfinite(new_value) or new_value < 0:
        raise TargetError(
            f"proposed target {new_value!r} is not a non-negative number; give the "
            "year target in reporting currency"
        )
    if effective_from is not None and effective_from.year != year:
        raise TargetError(
            f"effective_from {effective_from} is outside {year}; pick a day of the "
            "plan year"
        )
    seller = _seller(con, rep_id)
    _check_proposer(con, seller, proposed_by)
    year_row = _year_target(con, year, rep_id, business_unit)
    pending = _open_proposal(con, year, rep_id, business_unit)
    if pending:
        raise TargetError(
            f"change {pending} on {rep_id} × {business_unit} {year} is still open; "
            "approve or reject it first"
        )
    preview = _adjusted_values(con, year, year_row, new_value, effective_from)
    with _Transaction(con):
        change_id = _next_change_id(con)
        row = {
            "change_id": change_id,
            "status": "proposed",
            "period": year_label(year),
            "period_start": year_row["period_start"],
            "period_end": year_row["period_end"],
            "level": "rep",
            "key": rep_id,
            "region": year_row["region"],
            "business_unit": business_unit,
            "metric": "revenue",
            "old_value": float(year_row["value"]),
            "new_value": preview.year_cents / 100,
            "requested_value": float(new_value),
            "effective_from": effective_from,
            "version": None,
            "actor": proposed_by,
            "acted_at": pd.Timestamp(at),
            "reason": reason,
        }
        _load(con, "target_changes", pd.DataFrame([row]), f"proposed {change_id}")
    logger.info(
        "%s proposed %s: %s × %s %s from %.2f to %.2f",
        proposed_by,
        change_id,
        rep_id,
        business_unit,
        year,
        float(year_row["value"]),
        preview.year_cents / 100,
    )
    return change_id


def decide_adjustment(
    con: duckdb.DuckDBPyConnection,
    change_id: str,
    decided_by: str,
    approve: bool,
    *,
    comment: str | None = None,
    absorb: str = "none",
    at: datetime | None = None,
) -> pd.DataFrame:
    """Approve or reject a proposal; return the change events written.

    Rejecting records a "rejected" event and leaves every target as it was.
    Approving writes new versions of the seller's changed quarter rows and
    year row (method "adjustment"), events with status "approved", and
    derives the seller's role targets again. With absorb="team" the change
    of each quarter is taken from, or given to, the other sellers of the
    same team and unit in proportion to their targets of that quarter
    (events "absorbed"), so the team total stays; with "none" the sellers'
    sum moves away from the top-down target and `reconcile` shows the gap.

    The decider must differ from the proposer and from the seller, and when
    the proposer has a manager_id in reps, must be that manager.

    Raises TargetError when the change is unknown or already decided, the
    decider may not decide it, the target changed since the proposal, or
    absorbing would need more than the other sellers' targets.
    """
    _require_log_tables(con)
    if absorb not in ABSORB_OPTIONS:
        raise TargetError(f"absorb {absorb!r} is not one of {ABSORB_OPTIONS}")
    if not decided_by or not str(decided_by).strip():
        raise TargetError("decided_by is empty; give the approver's rep_id or name")
    at = at or _now()
    proposal = _proposal(con, change_id)
    _check_decider(con, proposal, decided_by)
    year = int(proposal["period"])
    rep_id = proposal["key"]
    unit = proposal["business_unit"]
    year_row = _year_target(con, year, rep_id, unit)

    if not approve:
        with _Transaction(con):
            event = {
                **proposal,
                "status": "rejected",
                "old_value": float(year_row["value"]),
                "new_value": float(year_row["value"]),
                "version": None,
                "actor": decided_by,
                "acted_at": pd.Timestamp(at),
                "reason": comment,
            }
            frame = pd.DataFrame([event])
            _load(con, "target_changes", frame, f"rejected {change_id}")
        logger.info("%s rejected %s", decided_by, change_id)
        return frame[TABLES["target_changes"].column_names]

    if _cents(year_row["value"]) != _cents(proposal["old_value"]):
        raise TargetError(
            f"the target of {rep_id} × {unit} {year} is {year_row['value']:,.2f} now, "
            f"not {proposal['old_value']:,.2f} as when {change_id} was proposed; "
            "reject it and propose again"
        )
    effective = proposal["effective_from"]
    effective = None if pd.isna(effective) else pd.Timestamp(effective).date()
    values = _adjusted_values(
        con, year, year_row, float(proposal["requested_value"]), effective
    )
    reason = (
        f"{proposal['reason']} (change {change_id}, proposed by {proposal['actor']}, "
        f"approved by {decided_by}" + (f": {comment}" if comment else "") + ")"
    )
    with _Transaction(con):
        version = _next_version(con, year)
        current = in_force(con, year)
        approved = _Event(change_id, "approved", decided_by, at, reason, version)
        rows = _adjusted_rows(values, proposal, decided_by, effective)
        requested = {
            _key(r): float(proposal["requested_value"]) for r in rows.to_dict("records")
        }
        events = [
            _write_rows(
                con,
                rows,
                current,
                approved,
                requested=requested,
                effective_from=effective,
            )
        ]
        touched = {rep_id}
        if absorb == "team":
            absorbed_rows = _absorption_rows(con, year, current, values, proposal)
            touched |= set(absorbed_rows["key"])
            absorbed = _Event(change_id, "absorbed", decided_by, at, reason, version)
            events.append(_write_rows(con, absorbed_rows, current, absorbed))
        events.append(_refresh_role_targets(con, year, touched, approved))
        if not len(events[0]):
            unchanged = {
                **proposal,
                "status": "approved",
                "old_value": float(year_row["value"]),
                "new_value": float(year_row["value"]),
                "actor": decided_by,
                "acted_at": pd.Timestamp(at),
                "reason": f"{reason}; no target value changed",
            }
            events[0] = pd.DataFrame([unchanged])
            _load(con, "target_changes", events[0], f"approved {change_id}")
    logger.info(
        "%s approved %s: %s × %s %s now %.2f (absorb %s)",
        decided_by,
        change_id,
        rep_id,
        unit,
        year,
        values.year_cents / 100,
        absorb,
    )
    written = [e for e in events if len(e)]
    return pd.concat(written, ignore_index=True) if written else pd.DataFrame()


def _seller(con: duckdb.DuckDBPyConnection, rep_id: str) -> pd.Series:
    found = con.execute("SELECT * FROM reps WHERE rep_id = ?", [rep_id]).df()
    if found.empty:
        raise TargetError(f"rep {rep_id!r} is not in the reps table; check the rep_id")
    return found.iloc[0]


def _check_proposer(
    con: duckdb.DuckDBPyConnection, seller: pd.Series, proposed_by: str
) -> None:
    if proposed_by == seller["rep_id"]:
        raise TargetError(
            f"{proposed_by} cannot propose a change to their own target; their "
            "manager proposes it"
        )
    proposer = con.execute("SELECT * FROM reps WHERE rep_id = ?", [proposed_by]).df()
    if proposer.empty:
        return
    proposer = proposer.iloc[0]
    manages = seller["manager_id"] == proposed_by or (
        proposer["role"] == "manager" and proposer["team"] == seller["team"]
    )
    if not manages:
        raise TargetError(
            f"{proposed_by} does not manage {seller['rep_id']} (team "
            f"{seller['team']}, manager {seller['manager_id']}); the seller's "
            "manager proposes changes"
        )


def _check_decider(
    con: duckdb.DuckDBPyConnection, proposal: dict, decided_by: str
) -> None:
    if decided_by in (proposal["actor"], proposal["key"]):
        raise TargetError(
            f"{decided_by} proposed {proposal['change_id']} or owns the target, so "
            "cannot decide it; the next level decides"
        )
    # NOTE: levels above the team manager (regional heads) are not kept in
    # reps, so when the proposer has no manager_id any other person may decide.
    found = con.execute(
        "SELECT manager_id FROM reps WHERE rep_id = ?", [proposal["actor"]]
    ).fetchall()
    boss = found[0] if found else None
    if boss and boss[0] and boss[0] != decided_by:
        raise TargetError(
            f"{proposal['change_id']} was proposed by {proposal['actor']}, whose "
            f"manager {boss[0]} decides it, not {decided_by}"
        )


def _year_target(
    con: duckdb.DuckDBPyConnection, year: int, rep_id: str, business_unit: str
) -> pd.Series:
    current = in_force(con, year)
    found = current[
        (current["period"] == year_label(year))
        & (current["level"] == "rep")
        & (current["key"] == rep_id)
        & (current["business_unit"] == business_unit)
    ]
    if found.empty:
        raise TargetError(
            f"{rep_id} has no {year} revenue target in business unit "
            f"{business_unit!r}; publish a plan first or check the unit"
        )
    if len(found) > 1:
        raise TargetError(
            f"{rep_id} has {len(found)} {year} targets in {business_unit} (regions "
            f"{found['region'].tolist()}); keep one region per seller"
        )
    return found.iloc[0]


def _open_proposal(
    con: duckdb.DuckDBPyConnection, year: int, rep_id: str, business_unit: str
) -> str | None:
    rows = con.execute(
        """
        SELECT change_id FROM target_changes
        WHERE period = ? AND level = 'rep' AND key = ? AND business_unit = ?
          AND metric = 'revenue'
        GROUP BY change_id
        HAVING bool_and(status = 'proposed')
        ORDER BY change_id LIMIT 1
        """,
        [year_label(year), rep_id, business_unit],
    ).fetchall()
    return rows[0][0] if rows else None


def _proposal(con: duckdb.DuckDBPyConnection, change_id: str) -> dict:
    events = con.execute(
        "SELECT * FROM target_changes WHERE change_id = ?", [change_id]
    ).df()
    proposed = events[events["status"] == "proposed"]
    if proposed.empty:
        raise TargetError(
            f"no proposal with change id {change_id!r}; list open ones with "
            "change_history"
        )
    decided = events[events["status"].isin(["approved", "rejected"])]
    if len(decided):
        raise TargetError(
            f"change {change_id} was already {decided['status'].iloc[0]} by "
            f"{decided['actor'].iloc[0]} at {decided['acted_at'].iloc[0]}"
        )
    return proposed.iloc[0].to_dict()


@dataclass(frozen=True)
class _AdjustedValues:
    """Quarter values of one seller × unit before and after an adjustment."""

    periods: list[str]
    starts: list[date]
    ends: list[date]
    old_cents: list[int]
    new_cents: list[int]
    region: str | None
    year_cents: int
    detail: list[str]


def _adjusted_values(
    con: duckdb.DuckDBPyConnection,
    year: int,
    year_row: pd.Series,
    requested: float,
    effective_from: date | None,
) -> _AdjustedValues:
    """Quarter values once `requested` applies from `effective_from`.

    The requested year value is phased over the quarters like the current
    quarter values (by days when they add up to 0). Quarters that end
    before the day keep their value, quarters that start on or after it
    take the phased value, and the quarter containing it mixes both in
    proportion to the days before and from the day, rounded to the cent.
    """
    current = in_force(con, year)
    rows = current[
        (current["level"] == "rep")
        & (current["key"] == year_row["key"])
        & (current["business_unit"] == year_row["business_unit"])
        & (current["region"] == year_row["region"])
    ]
    periods, starts, ends, old = [], [], [], []
    for quarter in (1, 2, 3, 4):
        label = quarter_label(year, quarter)
        start, end = quarter_bounds(year, quarter)
        found = rows[rows["period"] == label]
        periods.append(label)
        starts.append(start)
        ends.append(end)
        old.append(_cents(found["value"].iloc[0]) if len(found) else 0)
    days = [(end - start).days + 1 for start, end in zip(starts, ends, strict=True)]
    weights = old if sum(old) > 0 else days
    phased = allocate_cents(np.array(weights, dtype=float), round(requested * 100))
    new, detail = [], []
    for label, start, end, before, full, length in zip(
        periods, starts, ends, old, phased.tolist(), days, strict=True
    ):
        if effective_from is None or effective_from <= start:
            new.append(int(full))
            detail.append(f"{label}: {full / 100:,.2f}")
        elif effective_from > end:
            new.append(before)
            detail.append(f"{label}: unchanged {before / 100:,.2f}")
        else:
            days_before = (effective_from - start).days
            days_after = length - days_before
            mixed = (2 * (before * days_before + full * days_after) + length) // (
                2 * length
            )
            new.append(int(mixed))
            detail.append(
                f"{label}: {before / 100:,.2f} × {days_before}/{length} days + "
                f"{full / 100:,.2f} × {days_after}/{length} days = {mixed / 100:,.2f}"
            )
    return _AdjustedValues(
        periods, starts, ends, old, new, year_row["region"], sum(new), detail
    )


def _adjusted_rows(
    values: _AdjustedValues, proposal: dict, decided_by: str, effective: date | None
) -> pd.DataFrame:
    year = int(proposal["period"])
    start, _ = quarter_bounds(year, 1)
    _, end = quarter_bounds(year, 4)
    when = f" from {effective}" if effective else ""
    lead = (
        f"adjusted to {float(proposal['requested_value']):,.2f} a year{when} by "
        f"{proposal['change_id']} (proposed by {proposal['actor']}, approved by "
        f"{decided_by})"
    )
    rows = []
    for label, q_start, q_end, new, text in zip(
        values.periods,
        values.starts,
        values.ends,
        values.new_cents,
        values.detail,
        strict=True,
    ):
        rows.append(
            _adjusted_row(proposal, label, q_start, q_end, new, f"{text}; {lead}.")
        )
    rows.append(
        _adjusted_row(
            proposal,
            year_label(year),
            start,
            end,
            values.year_cents,
            f"{year}: sum of the quarters = {values.year_cents / 100:,.2f}; {lead}.",
        )
    )
    return _target_frame(rows)


def _adjusted_row(
    proposal: dict, period: str, start: date, end: date, cents: int, basis: str
) -> dict:
    return {
        "period": period,
        "period_start": start,
        "period_end": end,
        "level": "rep",
        "key": proposal["key"],
        "region": proposal["region"],
        "business_unit": proposal["business_unit"],
        "metric": "revenue",
        "value": cents / 100,
        "method": "adjustment",
        "basis": basis,
    }


def _absorption_rows(
    con: duckdb.DuckDBPyConnection,
    year: int,
    current: pd.DataFrame,
    values: _AdjustedValues,
    proposal: dict,
) -> pd.DataFrame:
    """New quarter and year rows of the team mates who absorb an adjustment."""
    rep_id = proposal["key"]
    unit = proposal["business_unit"]
    # NOTE: team mates come from reps as it is now, so a seller who moved
    # team since the plan absorbs with the new team.
    team = _seller(con, rep_id)["team"]
    mates = con.execute(
        "SELECT rep_id FROM reps WHERE team = ? AND rep_id <> ? AND role = 'seller'",
        [team, rep_id],
    ).df()["rep_id"]
    rows = current[
        (current["level"] == "rep")
        & current["key"].isin(mates)
        & (current["business_unit"] == unit)
        & (current["region"] == values.region)
    ]
    quarter_rows = []
    for label, start, end, old, new in zip(
        values.periods,
        values.starts,
        values.ends,
        values.old_cents,
        values.new_cents,
        strict=True,
    ):
        delta = new - old
        if delta == 0:
            continue
        others = rows[rows["period"] == label].sort_values("key")
        cents = np.array([_cents(v) for v in others["value"]], dtype=np.int64)
        if others.empty or (delta > 0 and cents.sum() < delta):
            raise TargetError(
                f"team {team} cannot absorb {delta / 100:+,.2f} in {label} × {unit}: "
                f"the other sellers' targets add up to {cents.sum() / 100:,.2f}; "
                "approve with absorb='none' instead"
            )
        weights = cents if cents.sum() > 0 else np.ones(len(cents))
        parts = allocate_cents(weights.astype(float), abs(delta))
        moved = cents - parts if delta > 0 else cents + parts
        for (_, other), value, part in zip(
            others.iterrows(), moved, parts, strict=True
        ):
            sign = "-" if delta > 0 else "+"
            quarter_rows.append(
                {
                    **{c: other[c] for c in ROW_KEY},
                    "period_start": start,
                    "period_end": end,
                    "value": int(value) / 100,
                    "method": "absorption",
                    "basis": (
                        f"{label}: {other['value']:,.2f} {sign} {part / 100:,.2f} to "
                        f"absorb {proposal['change_id']} of {rep_id} in team {team}."
                    ),
                }
            )
    changed = _target_frame(quarter_rows)
    if changed.empty:
        return changed
    mates_now = _merge_quarters(rows[rows["key"].isin(set(changed["key"]))], changed)
    years = _year_rows(mates_now, year, "absorption")
    return pd.concat([changed, years], ignore_index=True)


# --------------------------------------------------------------------------
# Decomposition, reconciliation and spread


def seller_decomposition(
    con: duckdb.DuckDBPyConnection, year: int, *, by_unit: bool = False
) -> pd.DataFrame:
    """Split each seller's target into baseline forecast, potential uplift and adjustments.

    For every seller row of the latest allocations, baseline_forecast is the
    forecast the plan gave the seller. potential_uplift is the top-down
    target minus that baseline, the effect of ambition and headroom share,
    and is negative when the seller's headroom share is below the forecast
    share. adjustments is the target in force minus the top-down target:
    approved adjustments, absorptions and carried changes. Year rows are the sums of
    the quarters. target = baseline_forecast + potential_uplift +
    adjustments exactly, in cents.

    Returns rep_id, name, team, region, role_type, (business_unit when
    `by_unit`), period, baseline_forecast, potential_uplift, adjustments
    and target, ordered by rep_id and period.
    """
    allocations = latest_allocations(con, year)
    allocations = allocations[allocations["level"] == "rep"]
    current = in_force(con, year)
    current = current[current["level"] == "rep"]
    merged = allocations.merge(
        current[["period", "key", "region", "business_unit", "value"]],
        on=["period", "key", "region", "business_unit"],
        how="left",
    )
    merged["baseline"] = [_cents(v) for v in merged["forecast"]]
    merged["top"] = [_cents(v) for v in merged["top_down"]]
    merged["target_cents"] = [_cents(v) for v in merged["value"]]
    group = ["key", "period"] + (["business_unit"] if by_unit else [])
    sums = merged.groupby(group, as_index=False)[
        ["baseline", "top", "target_cents"]
    ].sum()
    year_sums = sums.groupby([c for c in group if c != "period"], as_index=False)[
        ["baseline", "top", "target_cents"]
    ].sum()
    year_sums["period"] = year_label(year)
    sums = pd.concat([sums, year_sums], ignore_index=True)
    result = pd.DataFrame(
        {
            "rep_id": sums["key"],
            "period": sums["period"],
            "baseline_forecast": sums["baseline"] / 100,
            "potential_uplift": (sums["top"] - sums["baseline"]) / 100,
            "adjustments": (sums["target_cents"] - sums["top"]) / 100,
            "target": sums["target_cents"] / 100,
        }
    )
    if by_unit:
        result.insert(1, "business_unit", sums["business_unit"])
    reps = con.execute("SELECT rep_id, name, team, region, role_type FROM reps").df()
    result = reps.merge(result, on="rep_id", how="right")
    order = ["rep_id", "business_unit", "period"] if by_unit else ["rep_id", "period"]
    return result.sort_values(order).reset_index(drop=True)


def reconcile(
    con: duckdb.DuckDBPyConnection, year: int, period: str | None = None
) -> pd.DataFrame:
    """Compare each node's target with the sum of its children's targets.

    For every company, region, region × unit and team × unit row in force in
    `period` (the year by default) returns: top_down (the latest allocation,
    summed over the quarters for the year; NaN for a row no plan made),
    target (in force), children (sum of the targets in force one level
    down), gap = children - target, sellers (sum of the seller targets below
    the node), seller_gap = sellers - target, adjustments (net seller
    adjustments below the node: target in force minus top-down),
    adjusted_sellers (seller rows below the node with an adjustment) and a
    note on how the adjustments were absorbed. A node without children (a
    unit without sellers) has children 0 and a note that states it.
    """
    period = period or year_label(year)
    current = in_force(con, year)
    current = current[current["period"] == period].copy()
    current["cents"] = [_cents(v) for v in current["value"]]
    for column in ("region", "business_unit"):
        current[column] = [_none(v) for v in current[column]]
    allocations = latest_allocations(con, year)
    top_down = _top_down_by_node(allocations, period)
    team_of = {
        (node[1], node[2], node[3]): team
        for node, team in _team_by_rep(allocations).items()
    }
    current["team"] = [
        row.key
        if row.level == "team"
        else team_of.get((row.key, row.region, row.business_unit))
        for row in current.itertuples(index=False)
    ]
    reps = current[current["level"] == "rep"].copy()
    reps["adjustment"] = [
        row.cents - round(top_down[node] * 100) if node in top_down else 0
        for row, node in zip(
            reps.itertuples(index=False),
            [
                ("rep", k, r, u)
                for k, r, u in zip(
                    reps["key"], reps["region"], reps["business_unit"], strict=True
                )
            ],
            strict=True,
        )
    ]

    rows = []
    for position, level in enumerate(PLAN_LEVELS[:-1]):
        child_level = PLAN_LEVELS[position + 1]
        columns = list(LEVEL_COLUMNS[level])
        children = current[current["level"] == child_level]
        for parent in current[current["level"] == level].itertuples(index=False):
            mine, below = children, reps
            for column in columns:
                mine = mine[mine[column] == getattr(parent, column)]
                below = below[below[column] == getattr(parent, column)]
            child_cents = int(mine["cents"].sum())
            gap = child_cents - parent.cents
            seller_cents = int(below["cents"].sum())
            seller_gap = seller_cents - parent.cents
            net = int(below["adjustment"].sum())
            adjusted = int((below["adjustment"] != 0).sum())
            node = (level, parent.key, parent.region, parent.business_unit)
            rows.append(
                {
                    "period": period,
                    "level": level,
                    "key": parent.key,
                    "region": parent.region,
                    "business_unit": parent.business_unit,
                    "top_down": top_down.get(node, math.nan),
                    "target": parent.cents / 100,
                    "children": child_cents / 100,
                    "gap": gap / 100,
                    "sellers": seller_cents / 100,
                    "seller_gap": seller_gap / 100,
                    "adjustments": net / 100,
                    "adjusted_sellers": adjusted,
                    "note": _reconcile_note(
                        seller_gap, net, adjusted, len(below), len(mine), child_level
                    ),
                }
            )
    return pd.DataFrame(rows)


def _none(value):
    """Return None for a missing value, else the value."""
    return None if value is None or pd.isna(value) else value


def _team_by_rep(allocations: pd.DataFrame) -> dict[tuple, str]:
    reps = allocations[allocations["level"] == "rep"]
    return {
        ("rep", row.key, _none(row.region), _none(row.business_unit)): row.team
        for row in reps.itertuples(index=False)
    }


def _top_down_by_node(allocations: pd.DataFrame, period: str) -> dict[tuple, float]:
    """Top-down target per node: of the quarter, or of the whole year."""
    chosen = (
        allocations[allocations["period"] == period] if "-Q" in period else allocations
    )
    sums: dict[tuple, int] = {}
    for row in chosen.itertuples(index=False):
        node = (row.level, row.key, _none(row.region), _none(row.business_unit))
        sums[node] = sums.get(node, 0) + _cents(row.top_down)
    return {node: cents / 100 for node, cents in sums.items()}


def _reconcile_note(
    seller_gap: int,
    net: int,
    adjusted: int,
    sellers: int,
    children: int,
    child_level: str,
) -> str:
    """Describe in one sentence how the sellers' total relates to a node's target."""
    if children == 0:
        return f"no {child_level} below this node; its target is not allocated further"
    if sellers == 0:
        return "no seller below this node"
    if seller_gap == 0 and adjusted:
        return (
            f"adjustments of {adjusted} seller row(s), net {net / 100:+,.2f}, were "
            "absorbed within their teams; the sellers add up to the target"
        )
    if seller_gap == 0:
        return "the sellers add up to the target"
    if adjusted:
        return (
            f"the sellers differ from the target by {seller_gap / 100:+,.2f}: "
            f"adjustments of {adjusted} seller row(s), net {net / 100:+,.2f}, were "
            "not absorbed, so the bottom-up total stands apart from the top-down "
            "target"
        )
    return f"the sellers differ from the target by {seller_gap / 100:+,.2f}"


def target_summary(con: duckdb.DuckDBPyConnection, year: int) -> pd.DataFrame:
    """Company target against the sum of seller targets, per period.

    Returns period, company_target, sellers (count with a target row),
    seller_total, unallocated (targets of region × units without sellers),
    gap = seller_total + unallocated - company_target, and gap_pct (of the
    company target).
    """
    current = in_force(con, year)
    current = current.assign(cents=[_cents(v) for v in current["value"]])
    rows = []
    for period in _periods(year):
        rows_of = current[current["period"] == period]
        company = int(rows_of.loc[rows_of["level"] == "company", "cents"].sum())
        reps = rows_of[rows_of["level"] == "rep"]
        units = rows_of[rows_of["level"] == "business_unit"]
        teams = rows_of[rows_of["level"] == "team"]
        covered = set(zip(teams["region"], teams["business_unit"], strict=True))
        unallocated = int(
            units[
                [
                    (r, u) not in covered
                    for r, u in zip(
                        units["region"], units["business_unit"], strict=True
                    )
                ]
            ]["cents"].sum()
        )
        sellers_total = int(reps["cents"].sum())
        gap = sellers_total + unallocated - company
        rows.append(
            {
                "period": period,
                "company_target": company / 100,
                "sellers": int(reps["key"].nunique()),
                "seller_total": sellers_total / 100,
                "unallocated": unallocated / 100,
                "gap": gap / 100,
                "gap_pct": gap / company if company else math.nan,
            }
        )
    return pd.DataFrame(rows)


#: Quantiles reported by `growth_spread`.
SPREAD_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def growth_spread(
    con: duckdb.DuckDBPyConnection, year: int
) -> tuple[pd.DataFrame, pd.Series]:
    """Required growth per seller and its distribution across sellers.

    Required growth = year revenue target (sum over units, in force) /
    revenue of the 12 months to the plan's as-of date - 1. Sellers without
    such revenue have NaN and are left out of the statistics.

    Returns (per seller: rep_id, name, region, team, role_type, target,
    revenue_12m, required_growth) and a Series with sellers, with_history,
    mean, std, min, p10, p25, median, p75, p90 and max of required growth.
    """
    current = in_force(con, year)
    reps = current[
        (current["level"] == "rep") & (current["period"] == year_label(year))
    ]
    targets = (
        reps.assign(cents=[_cents(v) for v in reps["value"]])
        .groupby("key", as_index=False)["cents"]
        .sum()
    )
    bases = latest_role_bases(con, year)[["rep_id", "revenue_12m"]]
    sellers = con.execute("SELECT rep_id, name, region, team, role_type FROM reps").df()
    frame = targets.rename(columns={"key": "rep_id"}).merge(
        bases, on="rep_id", how="left"
    )
    frame["target"] = frame["cents"] / 100
    history = frame["revenue_12m"].where(frame["revenue_12m"] > 0)
    frame["required_growth"] = frame["target"] / history - 1
    frame = sellers.merge(frame.drop(columns="cents"), on="rep_id", how="right")
    growth = frame["required_growth"].dropna()
    stats = {
        "sellers": len(frame),
        "with_history": len(growth),
        "mean": growth.mean(),
        "std": growth.std(),
        "min": growth.min(),
    }
    for quantile in SPREAD_QUANTILES:
        name = "median" if quantile == 0.5 else f"p{round(quantile * 100)}"
        stats[name] = growth.quantile(quantile)
    stats["max"] = growth.max()
    columns = [
        "rep_id",
        "name",
        "region",
        "team",
        "role_type",
        "target",
        "revenue_12m",
        "required_growth",
    ]
    return frame[columns].sort_values("rep_id").reset_index(drop=True), pd.Series(stats)


# --------------------------------------------------------------------------
# Exports


#: Columns of each region sheet of the workbook.
WORKBOOK_COLUMNS = [
    "rep_id",
    "name",
    "team",
    "role_type",
    "business_unit",
    "target",
    "Q1",
    "Q2",
    "Q3",
    "Q4",
    "baseline_forecast",
    "potential_uplift",
    "adjustments",
]


def workbook_tables(
    con: duckdb.DuckDBPyConnection, year: int
) -> dict[str, pd.DataFrame]:
    """Return the seller × unit table of each region, as the workbook shows it.

    Keys are region names in order. Each table has WORKBOOK_COLUMNS, one row
    per seller and business unit with a year target in force, ordered by
    rep_id and unit.
    """
    current = in_force(con, year)
    reps = current[current["level"] == "rep"]
    wide = reps.pivot_table(
        index=["key", "region", "business_unit"],
        columns="period",
        values="value",
        aggfunc="sum",
    ).reset_index()
    wide = wide.rename(
        columns={
            "key": "rep_id",
            year_label(year): "target",
            **{quarter_label(year, q): f"Q{q}" for q in (1, 2, 3, 4)},
        }
    )
    for column in ("target", "Q1", "Q2", "Q3", "Q4"):
        if column not in wide:
            wide[column] = np.nan
    parts = seller_decomposition(con, year, by_unit=True)
    parts = parts[parts["period"] == year_label(year)][
        [
            "rep_id",
            "business_unit",
            "baseline_forecast",
            "potential_uplift",
            "adjustments",
        ]
    ]
    reps_table = con.execute("SELECT rep_id, name, team, role_type FROM reps").df()
    wide = wide.merge(reps_table, on="rep_id", how="left").merge(
        parts, on=["rep_id", "business_unit"], how="left"
    )
    wide = wide[wide["target"].notna()]
    tables = {}
    for region, rows in wide.groupby(wide["region"].fillna("(no region)"), sort=True):
        tables[str(region)] = rows.sort_values(["rep_id", "business_unit"])[
            WORKBOOK_COLUMNS
        ].reset_index(drop=True)
    return tables


def export_workbook(
    con: duckdb.DuckDBPyConnection, year: int, path: str | Path
) -> Path:
    """Write the year's targets to an Excel workbook with one sheet per region.

    Each sheet starts with a header row of WORKBOOK_COLUMNS and one row per
    seller and business unit (`workbook_tables`). A blank row and three
    lines follow: the region's top-down target, the sum of the seller
    targets and the gap between them. Amounts use the format #,##0.00.
    Returns the path written.

    Raises TargetError when the year has no seller targets.
    """
    from openpyxl import Workbook
    from openpyxl.utils import get_column_letter

    tables = workbook_tables(con, year)
    if not tables:
        raise TargetError(
            f"no seller targets of {year} in the mart; publish a plan first"
        )
    current = in_force(con, year)
    regions = current[
        (current["level"] == "region") & (current["period"] == year_label(year))
    ].set_index("key")["value"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    book = Workbook()
    book.remove(book.active)
    for region, table in tables.items():
        sheet = book.create_sheet(_sheet_name(region))
        sheet.append(WORKBOOK_COLUMNS)
        for row in table.itertuples(index=False):
            sheet.append([None if pd.isna(v) else v for v in row])
        seller_total = round(float(table["target"].sum()), 2)
        top_down = float(regions.get(region, math.nan))
        sheet.append([])
        sheet.append(["region target (top-down)", None, None, None, None, top_down])
        sheet.append(["sum of seller targets", None, None, None, None, seller_total])
        sheet.append(["gap", None, None, None, None, round(seller_total - top_down, 2)])
        for column in range(6, len(WORKBOOK_COLUMNS) + 1):
            letter = get_column_letter(column)
            for cell in sheet[letter][1:]:
                cell.number_format = "#,##0.00"
        sheet.freeze_panes = "A2"
    book.save(path)
    logger.info("wrote %d region sheet(s) of %s targets to %s", len(tables), year, path)
    return path


def _sheet_name(region: str) -> str:
    """Excel sheet name: at most 31 characters, without []:*?/\\."""
    cleaned = "".join("_" if c in "[]:*?/\\" else c for c in region)
    return cleaned[:31] or "(no region)"


def compensation_rows(con: duckdb.DuckDBPyConnection, year: int) -> pd.DataFrame:
    """Return the compensation export: one row per seller, metric and period.

    Revenue is the seller's target summed over business units, and role
    metrics come as stored. Columns are COMPENSATION_COLUMNS. The target is
    rounded to 2 decimals for currency and 4 for ratios. version,
    changed_at and changed_by are those of the latest row behind the value.
    """
    current = in_force(con, year, metric=None)
    reps = current[current["level"] == "rep"].copy()
    reps["cents"] = [_cents(v) for v in reps["value"]]
    reps = reps.sort_values("version")
    grouped = reps.groupby(["key", "period", "metric"], as_index=False).agg(
        period_start=("period_start", "first"),
        period_end=("period_end", "first"),
        cents=("cents", "sum"),
        value=("value", "sum"),
        version=("version", "last"),
        changed_at=("created_at", "last"),
        changed_by=("set_by", "last"),
    )
    people = con.execute("SELECT rep_id, name, region, team, role_type FROM reps").df()
    grouped = grouped.merge(people, left_on="key", right_on="rep_id", how="left")
    unit = grouped["metric"].map(ROLE_METRIC_UNITS).fillna("currency")
    target = np.where(
        unit == "currency", grouped["cents"] / 100, grouped["value"].round(4)
    )
    result = pd.DataFrame(
        {
            "plan_year": year,
            "period": grouped["period"],
            "period_start": pd.to_datetime(grouped["period_start"]).dt.date,
            "period_end": pd.to_datetime(grouped["period_end"]).dt.date,
            "rep_id": grouped["key"],
            "rep_name": grouped["name"],
            "region": grouped["region"],
            "team": grouped["team"],
            "role_type": grouped["role_type"],
            "metric": grouped["metric"],
            "unit": unit,
            "target": target,
            "currency": np.where(unit == "currency", _currency(con), ""),
            "version": grouped["version"].astype(int),
            "changed_at": pd.to_datetime(grouped["changed_at"]).dt.strftime(
                "%Y-%m-%dT%H:%M:%S"
            ),
            "changed_by": grouped["changed_by"],
        }
    )
    return result.sort_values(["rep_id", "metric", "period"]).reset_index(drop=True)[
        COMPENSATION_COLUMNS
    ]


def export_compensation_csv(
    con: duckdb.DuckDBPyConnection, year: int, path: str | Path
) -> Path:
    """Write `compensation_rows` as a UTF-8, comma-separated CSV with a header.

    Dates are ISO 8601, decimals use a dot, and currency targets have two
    decimals. Returns the path written. Raises TargetError when the year has
    no seller targets.
    """
    rows = compensation_rows(con, year)
    if rows.empty:
        raise TargetError(
            f"no seller targets of {year} in the mart; publish a plan first"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    formatted = rows.copy()
    formatted["target"] = [
        f"{value:.2f}" if unit == "currency" else f"{value:.4f}"
        for value, unit in zip(rows["target"], rows["unit"], strict=True)
    ]
    formatted.to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    logger.info("wrote %d compensation row(s) of %s to %s", len(rows), year, path)
    return path


def _currency(con: duckdb.DuckDBPyConnection) -> str:
    rows = con.execute("SELECT value FROM mart_meta WHERE key = 'currency'").fetchall()
    return rows[0][0] if rows and rows[0][0] else "EUR"
