"""Seller targets: split a region x business-unit forecast over its sellers.

`seller_targets` gives each active seller of a scope a part of the forecast
total for a period, in proportion to the revenue the seller booked in that
scope over the 12 months before the as-of date. Sellers without such revenue
(new hires, sellers who moved in) get a small floor instead. Every row explains
in a `basis` sentence how its number was derived. `target_rows` turns the
allocation into rows of the mart's `targets` table, for the publish step to
append.

Amounts are in the mart's reporting currency and targets are rounded to
cents.
"""

from __future__ import annotations

import logging
import math
from datetime import date, datetime

import duckdb
import numpy as np
import pandas as pd

from cockpit.errors import TargetError
from cockpit.mart.schema import TARGETS
from cockpit.mart.store import require_tables
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: Share of an equal split that a seller without history receives by default.
NEW_SELLER_FLOOR = 0.5

#: Months of revenue history that set each seller's share.
HISTORY_MONTHS = 12

TARGET_COLUMNS = [
    "rep_id",
    "name",
    "region",
    "business_unit",
    "last_year_revenue",
    "share",
    "target",
    "method",
    "basis",
]


def seller_targets(
    con: duckdb.DuckDBPyConnection,
    scope: Scope,
    period_start: date,
    period_end: date,
    forecast_total: float,
    as_of: date,
    *,
    floor_fraction: float = NEW_SELLER_FLOOR,
) -> pd.DataFrame:
    """Allocate `forecast_total` for the period to the active sellers of `scope`.

    Sellers are the reps with role 'seller' who are active on `period_start`:
    active_from is empty or on or before it, and active_to is empty or on or
    after it. Where the scope sets region (matched against the rep's home
    region), team or rep_id, sellers must match it too. History is their net revenue on
    `transactions` inside the whole scope (region, business unit and any
    other field) with as_of - 12 months < date <= as_of.

    Allocation rule, with n active sellers:

    - A seller whose history is zero or negative is a new seller and gets
      ``floor_fraction / n`` of the total (by default half an equal split).
    - The rest of the total goes to the sellers with positive history, in
      proportion to that history.
    - When no seller has positive history, every seller gets 1 / n.

    `forecast_total` is rounded to cents first, each target is rounded to
    cents, and the cents lost or gained by rounding go to the seller with
    the largest share, so the targets add up to the rounded total exactly.

    Returns rep_id, name, region, business_unit, last_year_revenue, share,
    target, method (revenue_share, new_seller_floor or equal_split) and
    basis (a sentence on how the target was derived), ordered by rep_id.
    A scope without active sellers gives an empty frame with these columns.

    Raises TargetError when the period ends before it starts, when
    `forecast_total` is negative or not finite, or when `floor_fraction` is
    outside [0, 1]; MartError when the mart lacks reps or transactions.
    """
    _check_arguments(period_start, period_end, forecast_total, floor_fraction)
    require_tables(con, ["reps", "transactions"])
    sellers = _active_sellers(con, scope, period_start)
    if sellers.empty:
        logger.info("no active seller in %s on %s", scope.label(), period_start)
        return pd.DataFrame(columns=TARGET_COLUMNS)

    history = _seller_revenue(con, scope, as_of)
    sellers["last_year_revenue"] = (
        sellers["rep_id"].map(history).fillna(0.0).astype(float)
    )
    shares, methods = _shares(sellers["last_year_revenue"].to_numpy(), floor_fraction)
    total_cents = round(forecast_total * 100)
    cents, adjusted_at, adjustment = _allocate_cents(shares, total_cents)

    result = pd.DataFrame(
        {
            "rep_id": sellers["rep_id"],
            "name": sellers["name"],
            "region": scope.region if scope.region is not None else sellers["region"],
            "business_unit": scope.business_unit,
            "last_year_revenue": sellers["last_year_revenue"],
            "share": shares,
            "target": cents / 100.0,
            "method": methods,
        }
    ).reset_index(drop=True)
    context = _BasisContext(
        scope_label=scope.label(),
        total=total_cents / 100.0,
        period_start=period_start,
        period_end=period_end,
        as_of=as_of,
        sellers=len(result),
        floor_fraction=floor_fraction,
        history_total=float(
            result.loc[result["method"] == "revenue_share", "last_year_revenue"].sum()
        ),
        new_sellers=int((result["method"] == "new_seller_floor").sum()),
    )
    result["basis"] = [
        context.sentence(row, adjustment if position == adjusted_at else 0)
        for position, row in enumerate(result.itertuples(index=False))
    ]
    logger.info(
        "targets for %d seller(s) of %s sum to %.2f",
        len(result),
        scope.label(),
        total_cents / 100.0,
    )
    return result[TARGET_COLUMNS]


def _check_arguments(
    period_start: date, period_end: date, forecast_total: float, floor_fraction: float
) -> None:
    if period_end < period_start:
        raise TargetError(
            f"period ends on {period_end}, before it starts on {period_start}; "
            "swap the dates"
        )
    if not math.isfinite(forecast_total) or forecast_total < 0:
        raise TargetError(
            f"forecast total {forecast_total!r} is not a non-negative number; "
            "pass the forecast revenue of the period"
        )
    if not 0.0 <= floor_fraction <= 1.0:
        raise TargetError(
            f"floor_fraction {floor_fraction!r} is outside [0, 1]; it is the part "
            "of an equal split a new seller gets, e.g. 0.5"
        )


def _active_sellers(
    con: duckdb.DuckDBPyConnection, scope: Scope, period_start: date
) -> pd.DataFrame:
    """Sellers of the scope active on `period_start`, ordered by rep_id."""
    clauses = [
        "role = 'seller'",
        "(active_from IS NULL OR active_from <= ?)",
        "(active_to IS NULL OR active_to >= ?)",
    ]
    params: list[object] = [period_start, period_start]
    for column in ("region", "team", "rep_id"):
        value = getattr(scope, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    query = f"""
        SELECT rep_id, name, region
        FROM reps
        WHERE {" AND ".join(clauses)}
        ORDER BY rep_id
    """
    return con.execute(query, params).df()


def _seller_revenue(
    con: duckdb.DuckDBPyConnection, scope: Scope, as_of: date
) -> pd.Series:
    """Net revenue per rep_id inside the scope over the 12 months to as_of."""
    window_start = (pd.Timestamp(as_of) - pd.DateOffset(months=HISTORY_MONTHS)).date()
    where_sql, where_params = scope.where("t.")
    query = f"""
        SELECT t.rep_id, sum(t.net_revenue) AS revenue
        FROM transactions t
        WHERE {where_sql} AND t.rep_id IS NOT NULL AND t.date > ? AND t.date <= ?
        GROUP BY t.rep_id
    """
    frame = con.execute(query, [*where_params, window_start, as_of]).df()
    return frame.set_index("rep_id")["revenue"]


def _shares(revenue: np.ndarray, floor_fraction: float) -> tuple[np.ndarray, list[str]]:
    """Share of the total and allocation method of each seller."""
    count = len(revenue)
    has_history = revenue > 0
    if not has_history.any():
        return np.full(count, 1.0 / count), ["equal_split"] * count
    floor_share = floor_fraction / count
    remaining = 1.0 - floor_share * int((~has_history).sum())
    history = np.where(has_history, revenue, 0.0)
    shares = np.where(has_history, remaining * history / history.sum(), floor_share)
    methods = ["revenue_share" if flag else "new_seller_floor" for flag in has_history]
    return shares, methods


def _allocate_cents(
    shares: np.ndarray, total_cents: int
) -> tuple[np.ndarray, int, int]:
    """Round each share of `total_cents` to whole cents, fixing the sum.

    Returns the cents per seller, the position of the seller who absorbed
    the rounding difference (the largest share, first on ties) and that
    difference in cents.
    """
    cents = np.round(shares * total_cents).astype(np.int64)
    difference = int(total_cents - cents.sum())
    largest = int(np.argmax(shares))
    cents[largest] += difference
    return cents, largest, difference


class _BasisContext:
    """Facts shared by every seller's basis sentence in one allocation."""

    def __init__(
        self,
        *,
        scope_label: str,
        total: float,
        period_start: date,
        period_end: date,
        as_of: date,
        sellers: int,
        floor_fraction: float,
        history_total: float,
        new_sellers: int,
    ) -> None:
        self.scope_label = scope_label
        self.total = total
        self.period_start = period_start
        self.period_end = period_end
        self.as_of = as_of
        self.sellers = sellers
        self.floor_fraction = floor_fraction
        self.history_total = history_total
        self.new_sellers = new_sellers

    def sentence(self, row, adjustment_cents: int) -> str:
        """Explain one seller's target in plain words."""
        lead = (
            f"{row.share:.2%} of the forecast of {self.total:,.2f} for "
            f"{self.scope_label} from {self.period_start} to {self.period_end}"
        )
        if row.method == "revenue_share":
            text = (
                f"{lead}: the seller booked {row.last_year_revenue:,.2f} of the "
                f"{self.history_total:,.2f} revenue of sellers with history in "
                f"the 12 months to {self.as_of}"
            )
            if self.new_sellers:
                text += (
                    f", shared after setting aside the floor of "
                    f"{self.new_sellers} new seller(s)"
                )
        elif row.method == "new_seller_floor":
            text = (
                f"{lead}: no revenue in the 12 months to {self.as_of}, so the "
                f"new-seller floor applies ({self.floor_fraction:.0%} of an "
                f"equal split over {self.sellers} sellers)"
            )
        else:
            text = (
                f"{lead}: no seller booked revenue in the 12 months to "
                f"{self.as_of}, so the total is split equally over "
                f"{self.sellers} sellers"
            )
        if adjustment_cents:
            text += (
                f"; {adjustment_cents / 100:+.2f} added for rounding so that "
                "targets add up to the total"
            )
        return text + "."


def target_rows(
    frame: pd.DataFrame,
    period: str,
    period_start: date,
    period_end: date,
    set_by: str,
    reason: str | None,
    version: int,
    created_at: datetime,
) -> pd.DataFrame:
    """Shape a `seller_targets` frame as rows of the mart's `targets` table.

    Each seller becomes one row with level "rep", key = rep_id, metric
    "revenue", method "forecast_share", value = target and the seller's
    basis sentence. Columns follow the table's declaration, so the result
    can go straight to `load_frame(con, "targets", ...)`. Nothing is written
    here.

    Raises TargetError when `frame` lacks a column `seller_targets` returns.
    """
    missing = [c for c in TARGET_COLUMNS if c not in frame.columns]
    if missing:
        raise TargetError(
            f"target frame lacks column(s) {missing}; pass the frame "
            "seller_targets returns"
        )
    rows = pd.DataFrame(
        {
            "period": period,
            "period_start": pd.Timestamp(period_start),
            "period_end": pd.Timestamp(period_end),
            "level": "rep",
            "key": frame["rep_id"].astype("string"),
            "region": frame["region"],
            "business_unit": frame["business_unit"],
            "metric": "revenue",
            "value": frame["target"].astype(float),
            "method": "forecast_share",
            "basis": frame["basis"],
            "version": version,
            "set_by": set_by,
            "reason": reason,
            "created_at": pd.Timestamp(created_at),
        },
        index=frame.index,
    )
    return rows[TARGETS.column_names].reset_index(drop=True)
