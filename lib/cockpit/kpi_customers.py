"""Customer counts of the KPI registry: active, new and lost customers.

A purchase is an invoice line with positive net revenue and an account.
Within each group of the requested grains (other than month, quarter and
year), an account

- is active in a period when its net revenue there is positive;
- becomes new on a purchase with no purchase in the CUSTOMER_LAPSE_DAYS
  before it;
- becomes lost CUSTOMER_LAPSE_DAYS after its last purchase when it buys
  nothing in between.

New and lost are events with a date, and a customer counts in the period
and the month, quarter or year group where its event falls. A new event is
only known from CUSTOMER_LAPSE_DAYS after the mart's first invoice, so
new_customers is undefined for a period (or group) that starts earlier. A
lost event is only known up to the mart's last invoice date, so later
losses are not counted yet.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

import numpy as np
import pandas as pd

from cockpit.kpi_query import GRAIN_SQL, KpiRequest, time_sql, undefined_measures

logger = logging.getLogger(__name__)

MEASURES = ("active_customers", "new_customers", "lost_customers")


def _bucket_start(grain: str, label: str) -> date:
    if grain == "month":
        return date(int(label[:4]), int(label[5:7]), 1)
    if grain == "quarter":
        return date(int(label[:4]), 3 * int(label[-1]) - 2, 1)
    return date(int(label), 1, 1)


def customer_frame(
    req: KpiRequest, by: tuple[str, ...], lapse_days: int
) -> pd.DataFrame:
    """Count active, new and lost customers per group of `by` for a request.

    Returns a frame [*by, active_customers, new_customers, lost_customers]
    with one row per group that has any of the three (a single row without
    `by`). new_customers is NaN where the period or group starts less than
    `lapse_days` after the mart's first invoice.
    """
    first, last = req.date_span("transactions")
    keys = [g for g in by if g not in ("month", "quarter", "year")]
    time_grains = [g for g in by if g in ("month", "quarter", "year")]
    key_sql = [f"{GRAIN_SQL[g][0]} AS {g}" for g in keys]
    joins = " ".join(dict.fromkeys(GRAIN_SQL[g][1] for g in keys if GRAIN_SQL[g][1]))
    scope_sql, scope_params = req.scope.where("f.")
    lines = f"""
        SELECT {", ".join([*key_sql, "f.account_id", "f.date", "f.net_revenue"])}
        FROM transactions f {joins}
        WHERE f.account_id IS NOT NULL AND {scope_sql}
    """
    partition = ", ".join([*keys, "account_id"])
    window = f"PARTITION BY {partition} ORDER BY date"

    bounds: list[str] = []
    bound_params: list = []
    if req.start is not None:
        bounds.append("event >= ?")
        bound_params.append(req.start)
    if req.end is not None:
        bounds.append("event <= ?")
        bound_params.append(req.end)
    bound_sql = " AND ".join(bounds) or "TRUE"

    def grouped(events_sql: str, measure: str, params: list) -> pd.DataFrame:
        labels = time_sql("event")
        group_sql = [*keys, *(f"{labels[g]} AS {g}" for g in time_grains)]
        select = ", ".join([*group_sql, f"count(DISTINCT account_id) AS {measure}"])
        group_by = (
            " GROUP BY " + ", ".join(str(i + 1) for i in range(len(group_sql)))
            if group_sql
            else ""
        )
        sql = (
            f"WITH lines AS ({lines}), events AS ({events_sql}) "
            f"SELECT {select} FROM events WHERE {bound_sql}{group_by}"
        )
        logger.debug("customer query %s", sql)
        return req.con.execute(sql, [*scope_params, *params, *bound_params]).df()

    key_list = ", ".join([*keys, "account_id"])
    active_events = f"""
        SELECT {key_list}, date AS event, net_revenue FROM lines
    """
    # Active: positive net revenue summed per account within each group.
    labels = time_sql("event")
    group_sql = [*keys, *(f"{labels[g]} AS {g}" for g in time_grains)]
    inner_select = ", ".join([*group_sql, "account_id", "sum(net_revenue) AS total"])
    inner_group = " GROUP BY " + ", ".join(
        str(i + 1) for i in range(len(group_sql) + 1)
    )
    outer_keys = [*keys, *time_grains]
    outer_group = " GROUP BY " + ", ".join(outer_keys) if outer_keys else ""
    active_sql = (
        f"WITH lines AS ({lines}), events AS ({active_events}) "
        f"SELECT {', '.join([*outer_keys, 'count(*) FILTER (WHERE total > 0) AS active_customers'])} "
        f"FROM (SELECT {inner_select} FROM events WHERE {bound_sql}{inner_group}){outer_group}"
    )
    active = req.con.execute(active_sql, [*scope_params, *bound_params]).df()

    purchases = f"""
        SELECT {key_list}, date,
               lag(date) OVER ({window}) AS previous,
               lead(date) OVER ({window}) AS next
        FROM (SELECT DISTINCT {key_list}, date FROM lines WHERE net_revenue > 0)
    """
    lapse = int(lapse_days)
    new = grouped(
        f"""
        SELECT {key_list}, date AS event FROM ({purchases})
        WHERE (previous IS NULL OR date_diff('day', previous, date) > {lapse})
          AND date >= CAST(? AS DATE) + {lapse}
        """,
        "new_customers",
        [first],
    )
    lost = grouped(
        f"""
        SELECT {key_list}, CAST(date + {lapse} AS DATE) AS event FROM ({purchases})
        WHERE (next IS NULL OR date_diff('day', date, next) > {lapse})
          AND CAST(date + {lapse} AS DATE) <= CAST(? AS DATE)
        """,
        "lost_customers",
        [last],
    )

    group_keys = list(by)
    if group_keys:
        merged = active.merge(new, on=group_keys, how="outer").merge(
            lost, on=group_keys, how="outer"
        )
    else:
        merged = pd.concat([active, new, lost], axis=1)
    for measure in MEASURES:
        merged[measure] = merged[measure].fillna(0).astype("float64")
    _mask_new(req, merged, time_grains, first, lapse)
    return merged[[*by, *MEASURES]]


def _mask_new(
    req: KpiRequest,
    merged: pd.DataFrame,
    time_grains: list[str],
    first: date | None,
    lapse: int,
) -> None:
    """Set new_customers to NaN where the group starts before new is knowable."""
    if first is None:
        merged["new_customers"] = np.nan
        return
    known_from = pd.Timestamp(first + timedelta(days=lapse))
    begin = pd.Series(
        pd.Timestamp(req.start) if req.start is not None else pd.Timestamp(first),
        index=merged.index,
    )
    for grain in time_grains:
        starts = merged[grain].map(
            lambda label, grain=grain: (
                pd.NaT if pd.isna(label) else pd.Timestamp(_bucket_start(grain, label))
            )
        )
        begin = pd.concat([begin, starts], axis=1).max(axis=1)
    merged.loc[begin < known_from, "new_customers"] = np.nan


#: Grains and scope fields the share-of-wallet KPIs support: potential is
#: estimated per account, so business units and products cannot split it.
WALLET_GRAINS = ("region", "team", "rep_id", "account_id", "segment")
WALLET_SCOPE = ("region", "team", "rep_id", "account_id")

WALLET_MEASURES = ("wallet_spend", "potential", "headroom")


def wallet_frame(req: KpiRequest, by: tuple[str, ...]) -> pd.DataFrame:
    """Sum spend, full potential and headroom of the accounts per group.

    Potential comes from `cockpit.potential.full_potential` with its default
    settings (80th percentile of the 12-month spend of peer accounts), read
    at the request's as_of, else its end, else the last invoice date. An
    account belongs to its own region and segment and to its owner's
    rep_id and team. Accounts without an estimate are left out; negative
    spend counts as 0, as in the potential estimate.
    """
    # Imported here: cockpit.potential is optional for the other KPIs.
    from cockpit.potential import full_potential

    _, last = req.date_span("transactions")
    reference = req.as_of or req.end or last
    if reference is None:
        return undefined_measures(by, WALLET_MEASURES)
    potential = req.cached(
        ("potential", reference), lambda: full_potential(req.con, reference)
    )
    extra = req.con.execute(
        "SELECT a.account_id, a.segment, r.team FROM accounts a "
        "LEFT JOIN reps r ON r.rep_id = a.owner_rep_id"
    ).df()
    accounts = potential.merge(extra, on="account_id", how="left")
    accounts = accounts.rename(columns={"owner_rep_id": "rep_id"})
    accounts = accounts[accounts["potential"].notna()]
    for field in WALLET_SCOPE:
        value = getattr(req.scope, field)
        if value is not None:
            accounts = accounts[accounts[field] == value]
    accounts = accounts.assign(wallet_spend=accounts["spend"].clip(lower=0))
    measures = list(WALLET_MEASURES)
    if not by:
        return pd.DataFrame({m: [accounts[m].sum()] for m in measures})
    return (
        accounts.groupby(list(by), dropna=False, sort=False)[measures]
        .sum()
        .reset_index()
    )
