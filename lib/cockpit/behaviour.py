"""Seller behaviour from the activities table: contacts, time and coverage.

Activities carry a seller, a type (visit, call, email or internal), a date,
a duration and, for customer contacts, an account. Internal meetings have
no account. Activities have no business unit, so a scope's business_unit
and product_line cannot filter them. The functions here drop those two
fields and log that they did.

Durations are in minutes. Rates per week divide by the seller's active
weeks within the period: the days from the later of the period start and
active_from to the earlier of the period end and active_to, divided by 7.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date

import duckdb
import pandas as pd

from cockpit.errors import KpiError
from cockpit.mart.store import require_tables
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: Days without customer contact after which a key account is listed.
NO_CONTACT_DAYS = 30

#: Columns of `seller_activity`, in order.
SELLER_COLUMNS = [
    "rep_id",
    "name",
    "team",
    "region",
    "role_type",
    "visits",
    "calls",
    "emails",
    "internal_meetings",
    "activities",
    "customer_minutes",
    "internal_minutes",
    "customer_time_share",
    "accounts_contacted",
    "minutes_per_account",
    "active_weeks",
    "visits_per_week",
    "calls_per_week",
]


def _activity_scope(scope: Scope | None) -> Scope:
    scope = scope or Scope()
    if scope.business_unit is not None or scope.product_line is not None:
        logger.info(
            "activities have no business unit or product line; %s is read for "
            "the whole region, team or seller",
            scope.label(),
        )
    return replace(scope, business_unit=None, product_line=None)


def _date_bounds(
    con: duckdb.DuckDBPyConnection, start: date | None, end: date | None
) -> tuple[date | None, date | None]:
    if start is not None and end is not None and start > end:
        raise KpiError(
            f"period start {start} is after its end {end}; swap the two dates"
        )
    first, last = con.execute("SELECT min(date), max(date) FROM activities").fetchone()
    return (start if start is not None else first, end if end is not None else last)


def seller_activity(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    start: date | None = None,
    end: date | None = None,
) -> pd.DataFrame:
    """Count each seller's visits, calls and time with customers in a period.

    Sellers are the reps with role seller whose home region, team and
    rep_id match the scope and whose active dates overlap [start, end]
    (inclusive; an open side falls back to the first or last activity in
    the mart). A seller without activities gets zeros. customer_time_share
    is customer minutes over all minutes (NaN without minutes),
    minutes_per_account is customer minutes over the accounts contacted
    (NaN when none), and the per-week rates divide by active_weeks.
    Returns the columns of SELLER_COLUMNS, sorted by rep_id. Raises
    KpiError for a start after the end and MartError for missing tables.
    """
    require_tables(con, ["activities", "reps"])
    scope = _activity_scope(scope)
    start, end = _date_bounds(con, start, end)
    clauses = ["s.role = 'seller'"]
    params: list = []
    for field, column in (
        ("region", "s.region"),
        ("team", "s.team"),
        ("rep_id", "s.rep_id"),
    ):
        value = getattr(scope, field)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if scope.account_id is not None:
        logger.info("seller activity ignores the account in %s", scope.label())
    sellers = con.execute(
        "SELECT s.rep_id, s.name, s.team, s.region, s.role_type, s.active_from, "
        f"s.active_to FROM reps s WHERE {' AND '.join(clauses)} ORDER BY s.rep_id",
        params,
    ).df()
    if start is None or end is None:
        return pd.DataFrame(columns=SELLER_COLUMNS)
    active_from = pd.to_datetime(sellers["active_from"]).fillna(pd.Timestamp(start))
    active_to = pd.to_datetime(sellers["active_to"]).fillna(pd.Timestamp(end))
    first = active_from.clip(lower=pd.Timestamp(start))
    last = active_to.clip(upper=pd.Timestamp(end))
    days = (last - first).dt.days + 1
    sellers = sellers[days > 0].copy()
    sellers["active_weeks"] = days[days > 0] / 7.0

    counts = con.execute(
        """
        SELECT rep_id,
               count(*) FILTER (WHERE type = 'visit') AS visits,
               count(*) FILTER (WHERE type = 'call') AS calls,
               count(*) FILTER (WHERE type = 'email') AS emails,
               count(*) FILTER (WHERE type = 'internal') AS internal_meetings,
               count(*) AS activities,
               COALESCE(sum(duration_minutes) FILTER (WHERE account_id IS NOT NULL), 0)
                   AS customer_minutes,
               COALESCE(sum(duration_minutes) FILTER (WHERE account_id IS NULL), 0)
                   AS internal_minutes,
               count(DISTINCT account_id) AS accounts_contacted
        FROM activities
        WHERE date >= ? AND date <= ?
        GROUP BY rep_id
        """,
        [start, end],
    ).df()
    table = sellers.merge(counts, on="rep_id", how="left")
    for column in (
        "visits",
        "calls",
        "emails",
        "internal_meetings",
        "activities",
        "accounts_contacted",
    ):
        table[column] = table[column].fillna(0).astype("int64")
    for column in ("customer_minutes", "internal_minutes"):
        table[column] = table[column].fillna(0.0).astype("float64")
    minutes = table["customer_minutes"] + table["internal_minutes"]
    table["customer_time_share"] = (table["customer_minutes"] / minutes).where(
        minutes > 0
    )
    table["minutes_per_account"] = (
        table["customer_minutes"] / table["accounts_contacted"]
    ).where(table["accounts_contacted"] > 0)
    table["visits_per_week"] = table["visits"] / table["active_weeks"]
    table["calls_per_week"] = table["calls"] / table["active_weeks"]
    return table[SELLER_COLUMNS].reset_index(drop=True)


def time_per_account(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    start: date | None = None,
    end: date | None = None,
) -> pd.DataFrame:
    """Sum the customer activities per account within [start, end].

    The scope filters activities on their region, the seller's team and
    rep_id and the account. Columns: account_id, name, is_key_account,
    owner_rep_id, activities, visits, calls, minutes, sellers (distinct
    reps), last_contact; sorted by minutes, largest first.
    """
    require_tables(con, ["activities", "accounts", "reps"])
    scope = _activity_scope(scope)
    scope_sql, scope_params = scope.where("f.")
    bounds, bound_params = [], []
    if start is not None:
        bounds.append("f.date >= ?")
        bound_params.append(start)
    if end is not None:
        bounds.append("f.date <= ?")
        bound_params.append(end)
    where = " AND ".join(["f.account_id IS NOT NULL", *bounds, scope_sql])
    return con.execute(
        f"""
        SELECT f.account_id, a.name, a.is_key_account, a.owner_rep_id,
               count(*) AS activities,
               count(*) FILTER (WHERE f.type = 'visit') AS visits,
               count(*) FILTER (WHERE f.type = 'call') AS calls,
               COALESCE(sum(f.duration_minutes), 0) AS minutes,
               count(DISTINCT f.rep_id) AS sellers,
               max(f.date) AS last_contact
        FROM activities f LEFT JOIN accounts a ON a.account_id = f.account_id
        WHERE {where}
        GROUP BY ALL
        ORDER BY minutes DESC, f.account_id
        """,
        [*bound_params, *scope_params],
    ).df()


def key_accounts_without_contact(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    scope: Scope | None = None,
    days: int = NO_CONTACT_DAYS,
) -> pd.DataFrame:
    """List the key accounts with no customer activity for `days` days by `as_of`.

    Key accounts are accounts with is_key_account true whose region, owner
    (rep_id, or the owner's team) and account_id match the scope. The last
    contact is the latest activity with the account by any seller on or
    before `as_of`. days_since_contact is as_of minus that date, NaN when
    the account was never contacted; such accounts are listed too, with
    never_contacted true. Sorted by days since contact, never contacted
    first. Raises KpiError for days below 1.
    """
    if days < 1:
        raise KpiError(f"days without contact must be 1 or more, got {days}")
    require_tables(con, ["activities", "accounts", "reps"])
    scope = _activity_scope(scope)
    clauses = ["a.is_key_account"]
    params: list = [as_of]
    if scope.region is not None:
        clauses.append("a.region = ?")
        params.append(scope.region)
    if scope.team is not None:
        clauses.append("a.owner_rep_id IN (SELECT rep_id FROM reps WHERE team = ?)")
        params.append(scope.team)
    if scope.rep_id is not None:
        clauses.append("a.owner_rep_id = ?")
        params.append(scope.rep_id)
    if scope.account_id is not None:
        clauses.append("a.account_id = ?")
        params.append(scope.account_id)
    frame = con.execute(
        f"""
        WITH contacts AS (
            SELECT account_id, max(date) AS last_contact FROM activities
            WHERE account_id IS NOT NULL AND date <= ?
            GROUP BY account_id
        )
        SELECT a.account_id, a.name, a.region, a.owner_rep_id, r.team,
               c.last_contact
        FROM accounts a
        LEFT JOIN contacts c ON c.account_id = a.account_id
        LEFT JOIN reps r ON r.rep_id = a.owner_rep_id
        WHERE {" AND ".join(clauses)}
        """,
        params,
    ).df()
    frame["last_contact"] = pd.to_datetime(frame["last_contact"])
    frame["days_since_contact"] = (pd.Timestamp(as_of) - frame["last_contact"]).dt.days
    frame["never_contacted"] = frame["last_contact"].isna()
    chosen = frame[frame["never_contacted"] | (frame["days_since_contact"] >= days)]
    return chosen.sort_values(
        ["never_contacted", "days_since_contact", "account_id"],
        ascending=[False, False, True],
    ).reset_index(drop=True)
