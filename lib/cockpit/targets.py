"""Seller targets: the regional split and the top-down plan with role targets.

Two ways to set revenue targets live here.

`seller_targets` gives each active seller of one region × business unit a
part of that scope's forecast for a period, in proportion to the revenue the
seller booked in the scope over the 12 months before the as-of date. Sellers
without such revenue (new hires, sellers who moved in) get a small floor
instead. `target_rows` turns that split into rows of the mart's `targets`
table. The regional notebooks use this pair.

`plan_targets` sets a calendar year's targets top-down. The company target is
the forecast plus a stated ambition. `allocate_hierarchy` splits it over
regions, then business units within each region, then teams, then sellers,
each step by a blend of forecast share and potential-headroom share. Each
quarter is allocated on its own, in whole cents with the largest-remainder
rule, so at every level and in every quarter the children add up exactly to
their parent, and the year is the sum of its quarters. `role_targets` adds
the metric of each seller's role type (hunter, grower, key account manager).
`cockpit.target_log` stores plans, adjustments and re-sets in the mart.

Amounts are in the mart's reporting currency and targets are rounded to
cents. docs/targets.md describes the method.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

import duckdb
import numpy as np
import pandas as pd

from cockpit.errors import TargetError
from cockpit.mart.schema import TARGETS
from cockpit.mart.store import require_tables
from cockpit.potential import (
    PotentialSettings,
    account_spend,
    full_potential,
    headroom_by_unit,
    window_start,
)
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


# ==========================================================================
# Top-down plan: allocation in whole cents


#: Levels of the plan from the company down to the seller.
PLAN_LEVELS = ("company", "region", "business_unit", "team", "rep")

#: Columns that identify a node at each level of the plan.
LEVEL_COLUMNS: dict[str, tuple[str, ...]] = {
    "company": (),
    "region": ("region",),
    "business_unit": ("region", "business_unit"),
    "team": ("region", "business_unit", "team"),
    "rep": ("region", "business_unit", "team", "rep_id"),
}

#: Key of the one company node.
COMPANY_KEY = "company"

#: Columns of the frame `allocate_hierarchy` returns.
NODE_COLUMNS = [
    "level",
    "key",
    "region",
    "business_unit",
    "team",
    "rep_id",
    "history",
    "forecast_cents",
    "headroom",
    "forecast_share",
    "headroom_share",
    "weight",
    "rule",
    "top_down_cents",
]

#: Plain-words meaning of each split rule, used in basis sentences.
RULE_TEXT = {
    "company_target": "forecast plus ambition",
    "blend": "blend of forecast share and headroom share",
    "forecast_only": "forecast share (no headroom in the group)",
    "headroom_only": "headroom share (no forecast in the group)",
    "equal_split": "equal split (no forecast and no headroom in the group)",
    "new_seller_floor": "new-seller floor (no revenue and no headroom)",
}


@dataclass(frozen=True)
class TargetPolicy:
    """Parameters of a top-down plan.

    ambition_pct: company target = forecast × (1 + ambition_pct); 0.05 is 5 %.
    forecast_weight: weight of the forecast share in each split; the
        headroom share gets 1 - forecast_weight. 1 splits by forecast only.
    new_seller_floor: part of an equal split that a seller without revenue
        history and without headroom receives, as in `seller_targets`.
    history_months: months of seller revenue, ending on the as-of date, that
        split a region × unit forecast over teams and sellers.
    potential: settings of the account potential behind the headroom.
    """

    ambition_pct: float = 0.05
    forecast_weight: float = 0.8
    new_seller_floor: float = NEW_SELLER_FLOOR
    history_months: int = HISTORY_MONTHS
    potential: PotentialSettings = field(default_factory=PotentialSettings)

    def __post_init__(self) -> None:
        if not math.isfinite(self.ambition_pct) or self.ambition_pct <= -1.0:
            raise TargetError(
                f"ambition_pct {self.ambition_pct!r} must be a number above -1; "
                "0.05 asks for 5 % above the forecast"
            )
        if not 0.0 <= self.forecast_weight <= 1.0:
            raise TargetError(
                f"forecast_weight {self.forecast_weight!r} is outside [0, 1]; "
                "it is the weight of the forecast share, e.g. 0.8"
            )
        if not 0.0 <= self.new_seller_floor <= 1.0:
            raise TargetError(
                f"new_seller_floor {self.new_seller_floor!r} is outside [0, 1]; "
                "it is the part of an equal split a new seller gets, e.g. 0.5"
            )
        if self.history_months < 1:
            raise TargetError(
                f"history_months {self.history_months!r} is below 1; use e.g. 12"
            )


def allocate_cents(
    weights: Sequence[float] | np.ndarray, total_cents: int
) -> np.ndarray:
    """Split `total_cents` over `weights` in whole cents by largest remainder.

    Each part first gets the whole cents of its exact quota total × weight /
    sum(weights). The cents left over go one each to the parts with the
    largest fractional remainders, the earlier part first on ties. The parts
    add up to `total_cents` exactly and each differs from its quota by less
    than one cent. Returns an int64 array; an empty array for no weights
    when `total_cents` is 0.

    Raises TargetError when `total_cents` is negative, a weight is negative or
    not finite, or every weight is 0 while `total_cents` is not.
    """
    total = int(total_cents)
    values = np.asarray(weights, dtype=float)
    if total < 0:
        raise TargetError(
            f"cannot split {total} cents; a target total must not be negative"
        )
    if values.size and (not np.isfinite(values).all() or (values < 0).any()):
        raise TargetError(f"weights {values.tolist()} must be finite and non-negative")
    weight_sum = float(values.sum()) if values.size else 0.0
    if weight_sum <= 0:
        if total == 0:
            return np.zeros(values.size, dtype=np.int64)
        raise TargetError(
            f"cannot split {total} cents over {values.size} part(s) whose "
            "weights add up to 0"
        )
    quotas = values / weight_sum * total
    cents = np.floor(quotas).astype(np.int64)
    # The floors add up to at most the total (their sum is an integer no
    # larger than the sum of the quotas), and fewer than one cent per part
    # is left over.
    left = total - int(cents.sum())
    order = np.argsort(-(quotas - cents), kind="stable")
    cents[order[:left]] += 1
    return cents


def blend_shares(
    forecast: np.ndarray, headroom: np.ndarray, forecast_weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """Blend forecast shares and headroom shares of sibling nodes.

    weight = forecast_weight × forecast / sum(forecast)
             + (1 - forecast_weight) × headroom / sum(headroom).

    When the headroom adds up to 0 the forecast share alone is used, when the
    forecast adds up to 0 the headroom share alone, and when both do the
    split is equal. Negative inputs count as 0. Returns the weights, the
    forecast shares, the headroom shares (0 where their sum is 0) and the
    rule applied: blend, forecast_only, headroom_only or equal_split.
    """
    f = np.clip(np.asarray(forecast, dtype=float), 0, None)
    h = np.clip(np.asarray(headroom, dtype=float), 0, None)
    count = len(f)
    f_share = f / f.sum() if f.sum() > 0 else np.zeros(count)
    h_share = h / h.sum() if h.sum() > 0 else np.zeros(count)
    if f.sum() > 0 and h.sum() > 0:
        weights = forecast_weight * f_share + (1 - forecast_weight) * h_share
        return weights, f_share, h_share, "blend"
    if f.sum() > 0:
        return f_share, f_share, h_share, "forecast_only"
    if h.sum() > 0:
        return h_share, f_share, h_share, "headroom_only"
    return np.full(count, 1.0 / count), f_share, h_share, "equal_split"


def allocate_hierarchy(
    leaves: pd.DataFrame,
    unit_forecast: pd.DataFrame,
    target_cents: int,
    policy: TargetPolicy | None = None,
) -> pd.DataFrame:
    """Split a company target down to sellers, exact in cents at every level.

    `leaves` has one row per seller and business unit: rep_id, region, team,
    business_unit, history (the seller's revenue in the unit over the
    history window) and headroom (headroom of the accounts the seller owns,
    in the unit). `unit_forecast` has region, business_unit and
    forecast_cents (whole cents of the period's forecast).

    Forecast of a node: given per region × unit, summed above it, and split
    below it over teams and sellers by their history (by seller count when
    the history adds up to 0), in whole cents. Headroom of a node: the sum
    of its leaves. The target of each node is split over its children by
    `blend_shares` with `policy.forecast_weight`. Within a team × unit,
    sellers with neither history nor headroom are new sellers: each gets
    `policy.new_seller_floor` of an equal split and the others share the
    rest by the blend.

    Returns NODE_COLUMNS, one row per node, company first. A region × unit
    without sellers keeps its target at level business_unit.

    Raises TargetError when a column is missing, a seller and unit repeat,
    `target_cents` is negative or a forecast is negative.
    """
    policy = policy or TargetPolicy()
    leaves = _checked_leaves(leaves)
    units = _checked_unit_forecast(unit_forecast)
    if int(target_cents) < 0:
        raise TargetError(f"company target {target_cents} cents is negative")

    pairs = sorted(
        set(units.index)
        | set(zip(leaves["region"], leaves["business_unit"], strict=True))
    )
    unit_cents = {pair: int(units.get(pair, 0)) for pair in pairs}
    rows: list[dict] = []
    company = _node("company", COMPANY_KEY, leaves, sum(unit_cents.values()))
    company.update(
        forecast_share=1.0,
        headroom_share=1.0,
        weight=1.0,
        rule="company_target",
        top_down_cents=int(target_cents),
    )
    rows.append(company)

    regions = sorted({region for region, _ in pairs})
    region_nodes = [
        _node(
            "region",
            region,
            leaves[leaves["region"] == region],
            sum(cents for (r, _), cents in unit_cents.items() if r == region),
            region=region,
        )
        for region in regions
    ]
    _split_children(region_nodes, int(target_cents), policy)
    rows.extend(region_nodes)

    for region_node in region_nodes:
        region = region_node["region"]
        in_region = leaves[leaves["region"] == region]
        unit_nodes = [
            _node(
                "business_unit",
                unit,
                in_region[in_region["business_unit"] == unit],
                unit_cents[(r, unit)],
                region=region,
                business_unit=unit,
            )
            for r, unit in pairs
            if r == region
        ]
        _split_children(unit_nodes, region_node["top_down_cents"], policy)
        rows.extend(unit_nodes)
        for unit_node in unit_nodes:
            rows.extend(_team_and_rep_nodes(unit_node, in_region, policy))

    frame = pd.DataFrame(rows, columns=NODE_COLUMNS)
    frame["forecast_cents"] = frame["forecast_cents"].astype(np.int64)
    frame["top_down_cents"] = frame["top_down_cents"].astype(np.int64)
    return frame


def _checked_leaves(leaves: pd.DataFrame) -> pd.DataFrame:
    needed = ["rep_id", "region", "team", "business_unit", "history", "headroom"]
    missing = [c for c in needed if c not in leaves.columns]
    if missing:
        raise TargetError(
            f"seller frame lacks column(s) {missing}; it needs one row per seller "
            "and business unit with history and headroom"
        )
    leaves = leaves[needed].copy()
    repeated = leaves.duplicated(["rep_id", "business_unit"])
    if repeated.any():
        row = leaves[repeated].iloc[0]
        raise TargetError(
            f"seller {row['rep_id']} appears twice for business unit "
            f"{row['business_unit']}; give each seller one row per unit"
        )
    leaves["history"] = leaves["history"].fillna(0.0).astype(float)
    leaves["headroom"] = leaves["headroom"].fillna(0.0).astype(float)
    leaves["team"] = leaves["team"].fillna("(no team)")
    return leaves.sort_values(
        ["region", "business_unit", "team", "rep_id"]
    ).reset_index(drop=True)


def _checked_unit_forecast(unit_forecast: pd.DataFrame) -> pd.Series:
    needed = ["region", "business_unit", "forecast_cents"]
    missing = [c for c in needed if c not in unit_forecast.columns]
    if missing:
        raise TargetError(
            f"unit forecast lacks column(s) {missing}; it needs region, "
            "business_unit and forecast_cents"
        )
    negative = unit_forecast[unit_forecast["forecast_cents"] < 0]
    if len(negative):
        row = negative.iloc[0]
        raise TargetError(
            f"forecast of {row['region']} × {row['business_unit']} is negative "
            f"({row['forecast_cents']} cents); clip forecasts at 0 first"
        )
    return (
        unit_forecast.groupby(["region", "business_unit"])["forecast_cents"]
        .sum()
        .astype(np.int64)
    )


def _node(
    level: str,
    key: str,
    members: pd.DataFrame,
    forecast_cents: int,
    **where: str,
) -> dict:
    """Build a node dict with the history and headroom of its leaves."""
    return {
        "level": level,
        "key": key,
        "region": where.get("region"),
        "business_unit": where.get("business_unit"),
        "team": where.get("team"),
        "rep_id": where.get("rep_id"),
        "history": float(members["history"].sum()),
        "forecast_cents": int(forecast_cents),
        "headroom": float(members["headroom"].sum()),
    }


def _split_children(
    children: list[dict], parent_cents: int, policy: TargetPolicy, floor: bool = False
) -> None:
    """Set the target, shares, weight and rule of sibling nodes in place."""
    if not children:
        return
    forecast = np.array([c["forecast_cents"] for c in children], dtype=float)
    headroom = np.array([c["headroom"] for c in children], dtype=float)
    weights, f_share, h_share, rule = blend_shares(
        forecast, headroom, policy.forecast_weight
    )
    rules = [rule] * len(children)
    if floor:
        history = np.array([c["history"] for c in children], dtype=float)
        new = (history <= 0) & (headroom <= 0)
        if new.any() and not new.all() and policy.new_seller_floor > 0:
            floor_share = policy.new_seller_floor / len(children)
            rest, _, _, rest_rule = blend_shares(
                forecast[~new], headroom[~new], policy.forecast_weight
            )
            weights = np.zeros(len(children))
            weights[new] = floor_share
            weights[~new] = (1 - floor_share * int(new.sum())) * rest
            rules = ["new_seller_floor" if flag else rest_rule for flag in new.tolist()]
    cents = allocate_cents(weights, parent_cents)
    for child, share_f, share_h, weight, child_rule, amount in zip(
        children, f_share, h_share, weights, rules, cents, strict=True
    ):
        child.update(
            forecast_share=float(share_f),
            headroom_share=float(share_h),
            weight=float(weight),
            rule=child_rule,
            top_down_cents=int(amount),
        )


def _team_and_rep_nodes(
    unit_node: dict, in_region: pd.DataFrame, policy: TargetPolicy
) -> list[dict]:
    """Team × unit nodes of one region × unit and the seller nodes below them."""
    unit = unit_node["business_unit"]
    region = unit_node["region"]
    members = in_region[in_region["business_unit"] == unit]
    if members.empty:
        return []
    teams = sorted(members["team"].unique())
    team_members = [members[members["team"] == team] for team in teams]
    history = np.array([m["history"].clip(lower=0).sum() for m in team_members])
    basis = history if history.sum() > 0 else np.array([len(m) for m in team_members])
    team_cents = allocate_cents(basis, unit_node["forecast_cents"])
    team_nodes = [
        _node("team", team, m, cents, region=region, business_unit=unit, team=team)
        for team, m, cents in zip(teams, team_members, team_cents, strict=True)
    ]
    _split_children(team_nodes, unit_node["top_down_cents"], policy)
    rows = []
    for team_node, m in zip(team_nodes, team_members, strict=True):
        rows.append(team_node)
        seller_history = m["history"].clip(lower=0).to_numpy(float)
        basis = seller_history if seller_history.sum() > 0 else np.ones(len(m))
        seller_cents = allocate_cents(basis, team_node["forecast_cents"])
        seller_nodes = [
            _node(
                "rep",
                leaf.rep_id,
                m[m["rep_id"] == leaf.rep_id],
                cents,
                region=region,
                business_unit=unit,
                team=team_node["team"],
                rep_id=leaf.rep_id,
            )
            for leaf, cents in zip(m.itertuples(index=False), seller_cents, strict=True)
        ]
        _split_children(seller_nodes, team_node["top_down_cents"], policy, floor=True)
        rows.extend(seller_nodes)
    return rows


# ==========================================================================
# Top-down plan from the mart


#: Columns of TargetPlan.nodes.
PLAN_COLUMNS = ["period", "period_start", "period_end", *NODE_COLUMNS, "basis"]


def year_label(year: int) -> str:
    """Period label of a calendar year, e.g. '2026'."""
    return str(year)


def quarter_label(year: int, quarter: int) -> str:
    """Period label of a calendar quarter, e.g. '2026-Q3'."""
    return f"{year}-Q{quarter}"


def quarter_bounds(year: int, quarter: int) -> tuple[date, date]:
    """First and last day of a calendar quarter.

    Raises TargetError for a quarter outside 1-4.
    """
    if quarter not in (1, 2, 3, 4):
        raise TargetError(f"quarter {quarter!r} is not 1, 2, 3 or 4")
    start = date(year, 3 * quarter - 2, 1)
    end = (pd.Timestamp(start) + pd.DateOffset(months=3) - pd.Timedelta(days=1)).date()
    return start, end


@dataclass
class TargetPlan:
    """A top-down plan of one calendar year, or of its remaining quarters.

    `nodes` has PLAN_COLUMNS: one row per node and quarter of the plan and,
    when the plan covers all four quarters, one per node for the year, whose
    cents are the sums of its quarters. `bases` contains the role bases per
    seller (`role_bases`), `potential` the account potential used for
    headroom, `notes` what the reader of the plan should know.
    """

    year: int
    as_of: date
    policy: TargetPolicy
    quarters: tuple[int, ...]
    nodes: pd.DataFrame
    bases: pd.DataFrame
    potential: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def is_full_year(self) -> bool:
        """True when the plan covers all four quarters."""
        return self.quarters == (1, 2, 3, 4)

    def _company(self) -> pd.DataFrame:
        quarters = {quarter_label(self.year, q) for q in self.quarters}
        company = self.nodes[self.nodes["level"] == "company"]
        return company[company["period"].isin(quarters)]

    @property
    def company_target(self) -> float:
        """Company target over the plan's quarters, reporting currency."""
        return int(self._company()["top_down_cents"].sum()) / 100

    @property
    def forecast_total(self) -> float:
        """Forecast over the plan's quarters, reporting currency."""
        return int(self._company()["forecast_cents"].sum()) / 100


def plan_targets(
    con: duckdb.DuckDBPyConnection,
    year: int,
    forecast: pd.DataFrame,
    as_of: date,
    policy: TargetPolicy | None = None,
    *,
    potential: pd.DataFrame | None = None,
    quarters: Sequence[int] = (1, 2, 3, 4),
) -> TargetPlan:
    """Plan the revenue targets of `year` top-down from a forecast and potential.

    `forecast` is a monthly forecast per region × business unit with columns
    region, business_unit, ds (any day of the month) and yhat (net revenue,
    reporting currency), as `cockpit.forecast.forecast_table` shapes it.
    Negative yhat counts as 0. For each quarter in `quarters`:

    1. company target = round(forecast of the quarter × (1 + ambition_pct)),
       in cents;
    2. sellers are the reps with role seller who are active on the quarter's
       first day; each gets one leaf per business unit;
    3. history = the seller's net revenue per unit over `history_months` to
       `as_of`; headroom = headroom of the accounts the seller owns, split
       over units by `headroom_by_unit`;
    4. `allocate_hierarchy` splits the target down to sellers.

    `potential` defaults to `full_potential(con, as_of, policy.potential)`.
    Returns a TargetPlan; nothing is written to the mart (see
    `cockpit.target_log.publish_plan`).

    Raises TargetError when the forecast lacks a column, has a missing yhat
    or no month in one of the quarters, or `quarters` is empty or repeats;
    MartError when the mart lacks reps, transactions or accounts.
    """
    policy = policy or TargetPolicy()
    quarters = tuple(sorted(quarters))
    if not quarters or len(set(quarters)) != len(quarters):
        raise TargetError(
            f"quarters {quarters!r} must name each quarter once, e.g. (1, 2, 3, 4)"
        )
    for quarter in quarters:
        quarter_bounds(year, quarter)
    require_tables(con, ["reps", "transactions", "accounts"])
    notes: list[str] = []
    by_quarter = _quarter_forecasts(forecast, year, quarters, notes)
    if potential is None:
        potential = full_potential(con, as_of, policy.potential)
    headroom = _seller_headroom(con, potential, as_of, policy)
    history = _seller_unit_history(con, as_of, policy.history_months)
    units = sorted(
        set(by_quarter["business_unit"])
        | set(history["business_unit"])
        | set(headroom["business_unit"])
    )

    frames = []
    for quarter in quarters:
        start, end = quarter_bounds(year, quarter)
        sellers = _plan_sellers(con, start)
        leaves = _leaves(sellers, units, history, headroom)
        unit_forecast = by_quarter[by_quarter["quarter"] == quarter]
        forecast_cents = int(unit_forecast["forecast_cents"].sum())
        target_cents = round(forecast_cents * (1 + policy.ambition_pct))
        nodes = allocate_hierarchy(leaves, unit_forecast, target_cents, policy)
        nodes.insert(0, "period_end", end)
        nodes.insert(0, "period_start", start)
        nodes.insert(0, "period", quarter_label(year, quarter))
        frames.append(nodes)
        _note_unallocated(nodes, quarter_label(year, quarter), notes)
    nodes = pd.concat(frames, ignore_index=True)
    if quarters == (1, 2, 3, 4):
        nodes = pd.concat([nodes, _year_nodes(nodes, year)], ignore_index=True)
    nodes["basis"] = _basis_sentences(nodes, policy)
    bases = role_bases(con, as_of, potential, policy.history_months)
    plan = TargetPlan(
        year, as_of, policy, quarters, nodes[PLAN_COLUMNS], bases, potential, notes
    )
    logger.info(
        "plan %s quarters %s: forecast %.2f, company target %.2f, %d seller(s)",
        year,
        quarters,
        plan.forecast_total,
        plan.company_target,
        nodes.loc[nodes["level"] == "rep", "rep_id"].nunique(),
    )
    return plan


def _quarter_forecasts(
    forecast: pd.DataFrame, year: int, quarters: tuple[int, ...], notes: list[str]
) -> pd.DataFrame:
    """Forecast cents per quarter, region and business unit."""
    needed = ["region", "business_unit", "ds", "yhat"]
    missing = [c for c in needed if c not in forecast.columns]
    if missing:
        raise TargetError(
            f"forecast lacks column(s) {missing}; pass a monthly forecast with "
            "region, business_unit, ds and yhat"
        )
    frame = forecast[needed].copy()
    frame["ds"] = pd.to_datetime(frame["ds"])
    frame = frame[frame["ds"].dt.year == year]
    if frame["yhat"].isna().any():
        row = frame[frame["yhat"].isna()].iloc[0]
        raise TargetError(
            f"forecast of {row['region']} × {row['business_unit']} for "
            f"{row['ds']:%Y-%m} has no value; fill or drop the month"
        )
    negative = frame["yhat"] < 0
    if negative.any():
        notes.append(
            f"{int(negative.sum())} negative monthly forecast value(s) counted as 0"
        )
        frame.loc[negative, "yhat"] = 0.0
    frame["quarter"] = frame["ds"].dt.quarter
    for quarter in quarters:
        months = frame.loc[frame["quarter"] == quarter, "ds"].dt.month.unique()
        if len(months) == 0:
            raise TargetError(
                f"forecast has no month in {quarter_label(year, quarter)}; extend "
                "its horizon to the end of the plan year"
            )
        if len(months) < 3:
            notes.append(
                f"forecast covers only {len(months)} month(s) of "
                f"{quarter_label(year, quarter)}"
            )
    frame = frame[frame["quarter"].isin(quarters)]
    grouped = frame.groupby(["quarter", "region", "business_unit"], as_index=False)[
        "yhat"
    ].sum()
    grouped["forecast_cents"] = np.round(grouped["yhat"] * 100).astype(np.int64)
    return grouped.drop(columns="yhat")


def _seller_headroom(
    con: duckdb.DuckDBPyConnection,
    potential: pd.DataFrame,
    as_of: date,
    policy: TargetPolicy,
) -> pd.DataFrame:
    """Headroom per account owner and business unit."""
    settings = policy.potential
    unit_spend = account_spend(
        con, as_of, settings.months, settings.spend_source, by_unit=True
    )
    by_unit = headroom_by_unit(potential, unit_spend)
    owners = potential.set_index("account_id")["owner_rep_id"]
    by_unit["rep_id"] = by_unit["account_id"].map(owners)
    by_unit = by_unit[by_unit["rep_id"].notna()]
    return by_unit.groupby(["rep_id", "business_unit"], as_index=False)[
        "headroom"
    ].sum()


def _seller_unit_history(
    con: duckdb.DuckDBPyConnection, as_of: date, months: int
) -> pd.DataFrame:
    """Net revenue per rep and business unit over `months` months to as_of."""
    return con.execute(
        """
        SELECT rep_id, business_unit, sum(net_revenue) AS history
        FROM transactions
        WHERE rep_id IS NOT NULL AND business_unit IS NOT NULL
          AND date > ? AND date <= ?
        GROUP BY ALL
        """,
        [window_start(as_of, months), as_of],
    ).df()


def _plan_sellers(con: duckdb.DuckDBPyConnection, day: date) -> pd.DataFrame:
    """Reps with role seller active on `day`, with region and team."""
    return con.execute(
        """
        SELECT rep_id, name, region, team, role_type
        FROM reps
        WHERE role = 'seller'
          AND (active_from IS NULL OR active_from <= ?)
          AND (active_to IS NULL OR active_to >= ?)
        ORDER BY rep_id
        """,
        [day, day],
    ).df()


def _leaves(
    sellers: pd.DataFrame,
    units: list[str],
    history: pd.DataFrame,
    headroom: pd.DataFrame,
) -> pd.DataFrame:
    """One leaf per active seller and business unit."""
    sellers = sellers[sellers["region"].notna()]
    grid = sellers[["rep_id", "region", "team"]].merge(
        pd.DataFrame({"business_unit": units}), how="cross"
    )
    grid = grid.merge(history, on=["rep_id", "business_unit"], how="left")
    grid = grid.merge(headroom, on=["rep_id", "business_unit"], how="left")
    return grid.fillna({"history": 0.0, "headroom": 0.0})


def _note_unallocated(nodes: pd.DataFrame, period: str, notes: list[str]) -> None:
    units = nodes[nodes["level"] == "business_unit"]
    teams = nodes[nodes["level"] == "team"]
    covered = set(zip(teams["region"], teams["business_unit"], strict=True))
    for row in units.itertuples(index=False):
        if (row.region, row.business_unit) not in covered and row.top_down_cents:
            notes.append(
                f"{period}: {row.region} × {row.business_unit} has no active seller; "
                f"its target {row.top_down_cents / 100:,.2f} stays at business-unit "
                "level"
            )


def _year_nodes(nodes: pd.DataFrame, year: int) -> pd.DataFrame:
    """Year rows: each node's quarters added up, shares recomputed on the sums."""
    keys = ["level", "key", "region", "business_unit", "team", "rep_id"]
    first = nodes.drop_duplicates(keys)[keys]
    sums = nodes.groupby(keys, dropna=False, as_index=False).agg(
        forecast_cents=("forecast_cents", "sum"),
        top_down_cents=("top_down_cents", "sum"),
        history=("history", "first"),
        headroom=("headroom", "first"),
    )
    year_rows = first.merge(sums, on=keys, how="left")
    start, _ = quarter_bounds(year, 1)
    _, end = quarter_bounds(year, 4)
    year_rows.insert(0, "period_end", end)
    year_rows.insert(0, "period_start", start)
    year_rows.insert(0, "period", year_label(year))
    parent = _parent_totals(year_rows)
    year_rows["forecast_share"] = _ratio(
        year_rows["forecast_cents"], parent["forecast_cents"]
    )
    year_rows["headroom_share"] = _ratio(year_rows["headroom"], parent["headroom"])
    year_rows["weight"] = _ratio(year_rows["top_down_cents"], parent["top_down_cents"])
    year_rows["rule"] = "sum_of_quarters"
    return year_rows


def _parent_totals(rows: pd.DataFrame) -> pd.DataFrame:
    """The forecast, headroom and target of each row's parent node."""
    result = pd.DataFrame(
        index=rows.index, columns=["forecast_cents", "headroom", "top_down_cents"]
    )
    for position, level in enumerate(PLAN_LEVELS):
        mine = rows["level"] == level
        if position == 0:
            result.loc[mine] = rows.loc[mine, list(result.columns)].to_numpy()
            continue
        parent_level = PLAN_LEVELS[position - 1]
        columns = list(LEVEL_COLUMNS[parent_level])
        parents = rows[rows["level"] == parent_level]
        if columns:
            merged = rows.loc[mine, columns].merge(
                parents[[*columns, *result.columns]], on=columns, how="left"
            )
        else:
            merged = pd.concat(
                [parents[list(result.columns)]] * int(mine.sum()), ignore_index=True
            )
        result.loc[mine] = merged[list(result.columns)].to_numpy()
    return result.astype(float)


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    denominator = denominator.astype(float)
    return (numerator.astype(float) / denominator.where(denominator > 0)).fillna(0.0)


def _basis_sentences(nodes: pd.DataFrame, policy: TargetPolicy) -> list[str]:
    """Explain each node's top-down target in one sentence."""
    sentences = []
    for row in nodes.itertuples(index=False):
        target = row.top_down_cents / 100
        baseline = row.forecast_cents / 100
        uplift = target - baseline
        if row.rule == "company_target":
            text = (
                f"{row.period}: forecast {baseline:,.2f} × (1 + ambition "
                f"{policy.ambition_pct:.1%}) = {target:,.2f}"
            )
        elif row.rule == "sum_of_quarters":
            text = (
                f"{row.period}: sum of the quarter targets = {target:,.2f}; "
                f"baseline forecast {baseline:,.2f}, uplift {uplift:+,.2f}"
            )
        else:
            text = (
                f"{row.period}: {row.weight:.2%} of the parent target by "
                f"{RULE_TEXT[row.rule]}"
            )
            if row.rule == "blend":
                text += (
                    f" ({policy.forecast_weight:.0%} × forecast share "
                    f"{row.forecast_share:.2%} + {1 - policy.forecast_weight:.0%} × "
                    f"headroom share {row.headroom_share:.2%})"
                )
            text += (
                f" = {target:,.2f}; baseline forecast {baseline:,.2f}, uplift "
                f"{uplift:+,.2f}"
            )
        sentences.append(text + ".")
    return sentences


# ==========================================================================
# Targets by role type


#: Main metric of each role type in reps.role_type.
ROLE_METRICS = {
    "hunter": "new_business_revenue",
    "grower": "revenue_growth",
    "key_account_manager": "key_account_revenue",
}

#: Every metric a role target can have, with its unit.
ROLE_METRIC_UNITS = {
    "new_business_revenue": "currency",
    "pipeline_created": "currency",
    "revenue_growth": "currency",
    "key_account_revenue": "currency",
    "key_account_share_of_wallet": "ratio",
}

ROLE_BASIS_COLUMNS = [
    "rep_id",
    "name",
    "region",
    "team",
    "role_type",
    "revenue_12m",
    "retention",
    "win_rate",
    "key_share",
    "key_accounts",
    "key_spend",
    "key_potential",
]

ROLE_TARGET_COLUMNS = [
    "rep_id",
    "region",
    "role_type",
    "period",
    "period_start",
    "period_end",
    "metric",
    "unit",
    "value",
    "basis",
]


def role_bases(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    potential: pd.DataFrame,
    months: int = HISTORY_MONTHS,
) -> pd.DataFrame:
    """Collect, per seller, the facts the role targets are computed from.

    For every rep with role seller: revenue_12m, the seller's net revenue
    over `months` months to `as_of`; retention, the net revenue retention
    of the seller's region (revenue in that window from accounts that bought
    in the window before, divided by the revenue of the window before; NaN
    without revenue in the window before); win_rate, the value win rate of
    the region (won amount / won and lost amount of the deals closed in the
    window, at the latest pipeline snapshot on or before `as_of`; NaN
    without closed deals or without an opportunities table); key_share,
    the share of the seller's revenue booked on key accounts (1 for a
    seller without revenue who owns key accounts, else 0); key_accounts,
    key_spend and key_potential, the number, spend and potential of the key
    accounts the seller owns (from `potential`).

    Returns ROLE_BASIS_COLUMNS ordered by rep_id. Raises MartError when the
    mart lacks reps, transactions or accounts.
    """
    require_tables(con, ["reps", "transactions", "accounts"])
    start = window_start(as_of, months)
    before = window_start(start, months)
    sellers = con.execute(
        """
        SELECT rep_id, name, region, team, role_type FROM reps
        WHERE role = 'seller' ORDER BY rep_id
        """
    ).df()
    revenue = con.execute(
        """
        SELECT t.rep_id,
               sum(t.net_revenue) AS revenue_12m,
               coalesce(sum(t.net_revenue) FILTER (WHERE a.is_key_account), 0)
                   AS key_revenue
        FROM transactions t LEFT JOIN accounts a USING (account_id)
        WHERE t.rep_id IS NOT NULL AND t.date > ? AND t.date <= ?
        GROUP BY t.rep_id
        """,
        [start, as_of],
    ).df()
    retention = con.execute(
        """
        WITH earlier AS (
            SELECT account_id, region, sum(net_revenue) AS revenue
            FROM transactions WHERE date > ? AND date <= ?
            GROUP BY ALL
        ),
        kept AS (
            SELECT t.region, sum(t.net_revenue) AS revenue
            FROM transactions t
            WHERE t.date > ? AND t.date <= ?
              AND t.account_id IN (
                  SELECT account_id FROM earlier
                  GROUP BY account_id HAVING sum(revenue) > 0
              )
            GROUP BY ALL
        )
        SELECT e.region, k.revenue / sum(e.revenue) AS retention
        FROM earlier e LEFT JOIN kept k USING (region)
        GROUP BY e.region, k.revenue
        HAVING sum(e.revenue) > 0
        """,
        [before, start, start, as_of],
    ).df()
    frame = sellers.merge(revenue, on="rep_id", how="left")
    frame["revenue_12m"] = frame["revenue_12m"].fillna(0.0).astype(float)
    frame["key_revenue"] = frame["key_revenue"].fillna(0.0).astype(float)
    frame = frame.merge(retention, on="region", how="left")
    frame = frame.merge(_region_win_rates(con, start, as_of), on="region", how="left")

    key = potential[potential["is_key_account"].fillna(False).astype(bool)]
    owned = key.groupby("owner_rep_id").agg(
        key_accounts=("account_id", "size"),
        key_spend=("spend", "sum"),
        key_potential=("potential", "sum"),
    )
    frame = frame.merge(owned, left_on="rep_id", right_index=True, how="left")
    frame["key_accounts"] = frame["key_accounts"].fillna(0).astype(int)
    frame[["key_spend", "key_potential"]] = frame[
        ["key_spend", "key_potential"]
    ].fillna(0.0)
    frame["key_share"] = np.where(
        frame["revenue_12m"] > 0,
        frame["key_revenue"] / frame["revenue_12m"].where(frame["revenue_12m"] > 0),
        np.where(frame["key_accounts"] > 0, 1.0, 0.0),
    )
    frame["key_share"] = frame["key_share"].clip(0.0, 1.0)
    return frame[ROLE_BASIS_COLUMNS].reset_index(drop=True)


def _region_win_rates(
    con: duckdb.DuckDBPyConnection, start: date, as_of: date
) -> pd.DataFrame:
    """Value win rate per region over deals closed in (start, as_of]."""
    present = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'opportunities'"
    ).fetchall()[0][0]
    if not present:
        return pd.DataFrame({"region": pd.Series(dtype=object), "win_rate": []})
    return con.execute(
        """
        WITH latest AS (
            SELECT * FROM opportunities WHERE snapshot_date <= ?
            QUALIFY snapshot_date = max(snapshot_date) OVER (PARTITION BY opportunity_id)
        )
        SELECT region,
               sum(amount) FILTER (WHERE status = 'won') / sum(amount) AS win_rate
        FROM latest
        WHERE status IN ('won', 'lost') AND closed_date > ? AND closed_date <= ?
          AND amount IS NOT NULL
        GROUP BY region
        HAVING sum(amount) > 0
        """,
        [as_of, start, as_of],
    ).df()


def role_targets(
    seller_targets: pd.DataFrame,
    bases: pd.DataFrame,
    phasing: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Derive each seller's role-type targets from their quarter revenue targets.

    `seller_targets` has rep_id, period, period_start, period_end and
    target_cents: the seller's revenue target summed over business units,
    one row per quarter (rows whose period has no "-Q" are ignored).
    `bases` comes from `role_bases`. `phasing` (rep_id, period, weight)
    spreads the seller's last-12-month revenue B over the quarters. It
    defaults to the quarter targets themselves, and the days of each quarter
    serve as weights when the given weights add up to 0. With R_q the quarter's revenue target and
    B_q the quarter's part of B:

    - hunter, new_business_revenue_q = max(0, R_q - retention × B_q): what
      the existing book is not expected to bring (retention 1 when
      unknown); pipeline_created_q = new_business_revenue_q / win_rate,
      when the region has a win rate;
    - grower, revenue_growth_q = R_q - B_q, negative when the quarter
      target is below the book;
    - key_account_manager, key_account_revenue_q = R_q × key_share; and
      key_account_share_of_wallet = year key_account_revenue /
      key_potential (year only), when the seller owns key accounts with
      potential.

    Each quarter depends only on its own revenue target, so changing one
    quarter leaves the other quarters' role targets alone. Currency values
    are computed in cents; the year is the sum of its quarters. Sellers
    without a role type get no role target. Returns ROLE_TARGET_COLUMNS in
    reporting currency (ratio for the share of wallet).

    Raises TargetError when `seller_targets` lacks a column.
    """
    needed = ["rep_id", "period", "period_start", "period_end", "target_cents"]
    missing = [c for c in needed if c not in seller_targets.columns]
    if missing:
        raise TargetError(
            f"seller target frame lacks column(s) {missing}; it needs one row per "
            "seller and quarter with target_cents"
        )
    quarters = seller_targets[seller_targets["period"].astype(str).str.contains("-Q")]
    if phasing is None:
        phasing = quarters.rename(columns={"target_cents": "weight"})
    weights = phasing.set_index(["rep_id", "period"])["weight"]
    known = bases.set_index("rep_id")
    rows: list[dict] = []
    for rep_id, periods in quarters.groupby("rep_id", sort=True):
        if rep_id not in known.index:
            continue
        basis = known.loc[rep_id]
        if basis["role_type"] not in ROLE_METRICS:
            continue
        periods = periods.sort_values("period_start").reset_index(drop=True)
        phase = np.array(
            [max(float(weights.get((rep_id, p), 0.0)), 0.0) for p in periods["period"]]
        )
        if phase.sum() <= 0:
            phase = np.array(
                [
                    (pd.Timestamp(e) - pd.Timestamp(s)).days + 1
                    for s, e in zip(
                        periods["period_start"], periods["period_end"], strict=True
                    )
                ],
                dtype=float,
            )
        rows.extend(_seller_role_rows(rep_id, basis, periods, phase))
    return pd.DataFrame(rows, columns=ROLE_TARGET_COLUMNS)


def _seller_role_rows(
    rep_id: str, basis: pd.Series, periods: pd.DataFrame, phase: np.ndarray
) -> list[dict]:
    """Quarter and year role rows of one seller."""
    role = basis["role_type"]
    book = max(round(float(basis["revenue_12m"]) * 100), 0)
    book_parts = allocate_cents(phase, book)
    revenue = periods["target_cents"].astype(np.int64).to_numpy()
    per_metric: dict[str, tuple[np.ndarray, str]] = {}
    if role == "hunter":
        retention = float(basis["retention"])
        rate = retention if math.isfinite(retention) else 1.0
        expected = allocate_cents(phase, round(book * rate))
        new_business = np.maximum(revenue - expected, 0)
        per_metric["new_business_revenue"] = (
            new_business,
            "revenue target minus the existing book's part {book} × retention "
            f"{rate:.1%}"
            + ("" if math.isfinite(retention) else " (unknown, taken as 100 %)")
            + ", floored at 0",
        )
        win_rate = float(basis["win_rate"])
        if math.isfinite(win_rate) and win_rate > 0:
            per_metric["pipeline_created"] = (
                np.round(new_business / win_rate).astype(np.int64),
                f"new-business target / value win rate {win_rate:.1%} of region "
                f"{basis['region']}",
            )
    elif role == "grower":
        per_metric["revenue_growth"] = (
            revenue - book_parts,
            "revenue target minus the book's part {book} of the last 12 months",
        )
    else:
        share = float(basis["key_share"])
        per_metric["key_account_revenue"] = (
            np.round(revenue * share).astype(np.int64),
            f"revenue target × key-account share {share:.1%} of the last 12 months",
        )

    rows = []
    first = periods.iloc[0]
    last = periods.iloc[-1]
    year = str(first["period"]).split("-Q")[0]
    for metric, (values, rule) in per_metric.items():
        for position, period in periods.iterrows():
            text = rule.replace("{book}", f"{book_parts[position] / 100:,.2f}")
            rows.append(
                _role_row(
                    rep_id,
                    basis,
                    period["period"],
                    period["period_start"],
                    period["period_end"],
                    metric,
                    int(values[position]) / 100,
                    f"{period['period']}: {text} = {values[position] / 100:,.2f}.",
                )
            )
        total = int(values.sum())
        rows.append(
            _role_row(
                rep_id,
                basis,
                year,
                first["period_start"],
                last["period_end"],
                metric,
                total / 100,
                f"{year}: sum of the quarters = {total / 100:,.2f} ({rule.replace(' {book}', '')}).",
            )
        )
    key_potential = float(basis["key_potential"])
    if role == "key_account_manager" and key_potential > 0:
        key_total = int(per_metric["key_account_revenue"][0].sum()) / 100
        current = float(basis["key_spend"]) / key_potential
        rows.append(
            _role_row(
                rep_id,
                basis,
                year,
                first["period_start"],
                last["period_end"],
                "key_account_share_of_wallet",
                key_total / key_potential,
                f"{year}: key-account target {key_total:,.2f} / potential "
                f"{key_potential:,.2f} of {int(basis['key_accounts'])} key "
                f"account(s); now {current:.1%}.",
            )
        )
    return rows


def _role_row(
    rep_id: str,
    basis: pd.Series,
    period: str,
    period_start,
    period_end,
    metric: str,
    value: float,
    sentence: str,
) -> dict:
    return {
        "rep_id": rep_id,
        "region": basis["region"],
        "role_type": basis["role_type"],
        "period": period,
        "period_start": period_start,
        "period_end": period_end,
        "metric": metric,
        "unit": ROLE_METRIC_UNITS[metric],
        "value": value,
        "basis": sentence,
    }
