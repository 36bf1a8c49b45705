"""Full potential of each account from its peers: share of wallet and headroom.

An account's full potential is what it could buy from us in 12 months if
it bought like the strong buyers among comparable accounts. Two estimates
are offered:

- ``peer_quantile``: the q-quantile (default 0.8) of 12-month spend among
  the buying accounts of the same industry and size band. When that group
  has fewer than `min_peers` buyers, the account is flagged and the wider
  group is used instead: first the same size band across industries, then
  every buying account. The note of the row names the group and the reason.
- ``quantile_regression``: the q-quantile line of log spend on log size
  (employees or annual revenue), fitted over every buying account with a
  known size. Accounts without a size get the peer estimate and a note.

Potential is the larger of the estimate and the account's own spend, so an
account that already buys more than the estimate has no headroom and a share
of wallet of 1. Share of wallet = spend / potential; headroom = potential -
spend, never negative. Spend is net invoice revenue (`transactions`) or the
value of won deals (`opportunities`), in the mart's reporting currency.

docs/targets.md describes the method and its limits.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import date

import duckdb
import numpy as np
import pandas as pd

from cockpit.errors import PotentialError
from cockpit.mart.store import require_tables

logger = logging.getLogger(__name__)

#: Size bands from smallest to largest.
SIZE_BANDS = ("small", "medium", "large", "enterprise")
#: Employee counts where the next band starts: small < 50 <= medium < 250 <=
#: large < 1000 <= enterprise.
SIZE_BAND_LIMITS = (50, 250, 1000)

METHODS = ("peer_quantile", "quantile_regression")
SIZE_MEASURES = ("employees", "annual_revenue")
SPEND_SOURCES = ("transactions", "won_deals")

#: Peer groups from narrowest to widest, as the account columns that define them.
PEER_LEVELS: tuple[tuple[str, ...], ...] = (
    ("industry", "size_band"),
    ("size_band",),
    (),
)

POTENTIAL_COLUMNS = [
    "account_id",
    "name",
    "region",
    "industry",
    "size_band",
    "size",
    "owner_rep_id",
    "is_key_account",
    "spend",
    "peer_group",
    "peer_level",
    "peers",
    "estimate",
    "potential",
    "share_of_wallet",
    "headroom",
    "method",
    "too_few_peers",
    "note",
]


@dataclass(frozen=True)
class PotentialSettings:
    """Parameters of the potential estimate.

    quantile: the peer quantile that defines potential, in (0, 1).
    min_peers: buying accounts a peer group needs before it is used.
    method: "peer_quantile" or "quantile_regression".
    size_measure: regressor of the quantile regression, "employees" or
        "annual_revenue" (the account's own yearly revenue).
    months: length of the spend window that ends on the as-of date.
    spend_source: "transactions" (net invoice revenue) or "won_deals" (value
        of the deals won in the window, for a CRM-only mart).
    min_fit_accounts: buying accounts with a size the regression needs; with
        fewer, every account gets the peer estimate and a note.
    """

    quantile: float = 0.8
    min_peers: int = 5
    method: str = "peer_quantile"
    size_measure: str = "employees"
    months: int = 12
    spend_source: str = "transactions"
    min_fit_accounts: int = 20

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 1.0:
            raise PotentialError(
                f"quantile {self.quantile!r} is outside (0, 1); use e.g. 0.8 for "
                "the 80th percentile of peer spend"
            )
        if self.min_peers < 1:
            raise PotentialError(f"min_peers {self.min_peers!r} is below 1; use e.g. 5")
        if self.method not in METHODS:
            raise PotentialError(
                f"unknown potential method {self.method!r}; use one of {METHODS}"
            )
        if self.size_measure not in SIZE_MEASURES:
            raise PotentialError(
                f"unknown size measure {self.size_measure!r}; use one of "
                f"{SIZE_MEASURES}"
            )
        if self.months < 1:
            raise PotentialError(f"months {self.months!r} is below 1; use e.g. 12")
        if self.spend_source not in SPEND_SOURCES:
            raise PotentialError(
                f"unknown spend source {self.spend_source!r}; use one of "
                f"{SPEND_SOURCES}"
            )
        if self.min_fit_accounts < 3:
            raise PotentialError(
                f"min_fit_accounts {self.min_fit_accounts!r} is below 3; a line "
                "through fewer points says nothing, use e.g. 20"
            )


# --------------------------------------------------------------------------
# Reading the mart


def size_band(employees: pd.Series) -> pd.Series:
    """Return the size band of each employee count; missing counts give None.

    Bands follow SIZE_BAND_LIMITS: small below 50 employees, medium below
    250, large below 1000, enterprise from 1000.
    """
    counts = pd.to_numeric(employees, errors="coerce")
    positions = np.searchsorted(SIZE_BAND_LIMITS, counts.fillna(0), side="right")
    labels = np.array(SIZE_BANDS, dtype=object)[positions]
    labels[counts.isna().to_numpy()] = None
    return pd.Series(labels, index=counts.index, dtype=object)


def window_start(as_of: date, months: int) -> date:
    """First excluded day of a spend window: the window is (start, as_of]."""
    return (pd.Timestamp(as_of) - pd.DateOffset(months=months)).date()


def account_spend(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    months: int = 12,
    source: str = "transactions",
    by_unit: bool = False,
) -> pd.DataFrame:
    """Sum each account's spend over the `months` months that end on `as_of`.

    The window is as_of - months < date <= as_of. With source "transactions"
    spend is net revenue of the invoice lines, credit notes included. With
    "won_deals" it is the amount of the deals that are won at the latest
    snapshot on or before `as_of` and closed in the window. Lines or deals without an account are left out. Returns
    account_id, business_unit when `by_unit`, and spend (reporting currency);
    accounts without lines or deals have no row.

    Raises PotentialError for an unknown source, MartError when the mart lacks
    the table the source reads.
    """
    if source not in SPEND_SOURCES:
        raise PotentialError(
            f"unknown spend source {source!r}; use one of {SPEND_SOURCES}"
        )
    start = window_start(as_of, months)
    unit = "business_unit, " if by_unit else ""
    if source == "transactions":
        require_tables(con, ["transactions"])
        query = f"""
            SELECT account_id, {unit}sum(net_revenue) AS spend
            FROM transactions
            WHERE account_id IS NOT NULL AND date > ? AND date <= ?
            GROUP BY ALL
        """
        params: list[object] = [start, as_of]
    else:
        require_tables(con, ["opportunities"])
        query = f"""
            WITH latest AS (
                SELECT * FROM opportunities
                WHERE snapshot_date <= ?
                QUALIFY snapshot_date = max(snapshot_date)
                    OVER (PARTITION BY opportunity_id)
            )
            SELECT account_id, {unit}sum(amount) AS spend
            FROM latest
            WHERE account_id IS NOT NULL AND status = 'won'
              AND closed_date > ? AND closed_date <= ?
            GROUP BY ALL
        """
        params = [as_of, start, as_of]
    frame = con.execute(query, params).df()
    frame["spend"] = frame["spend"].astype(float)
    return frame


def read_accounts(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Return the accounts table with a size band for every account with a size.

    An account whose size_band is empty gets the band of its employee count
    (see `size_band`).

    Raises MartError when the mart lacks the accounts table.
    """
    require_tables(con, ["accounts"])
    accounts = con.execute(
        """
        SELECT account_id, name, region, industry, size_band, employees,
               annual_revenue, owner_rep_id, is_key_account
        FROM accounts
        ORDER BY account_id
        """
    ).df()
    derived = size_band(accounts["employees"])
    accounts["size_band"] = accounts["size_band"].where(
        accounts["size_band"].notna(), derived
    )
    return accounts


def full_potential(
    con: duckdb.DuckDBPyConnection,
    as_of: date,
    settings: PotentialSettings | None = None,
) -> pd.DataFrame:
    """Estimate every account's full potential, share of wallet and headroom.

    Reads the accounts and their spend over `settings.months` months to
    `as_of` from the mart, then applies `estimate_potential`. Returns the
    columns of POTENTIAL_COLUMNS, one row per account, ordered by account_id.

    Raises MartError when the mart lacks accounts or the spend table.
    """
    settings = settings or PotentialSettings()
    accounts = read_accounts(con)
    spend = account_spend(con, as_of, settings.months, settings.spend_source)
    result = estimate_potential(accounts, spend, settings)
    logger.info(
        "potential of %d account(s) to %s: %.2f, headroom %.2f, %d flagged",
        len(result),
        as_of,
        result["potential"].sum(),
        result["headroom"].sum(),
        int(result["too_few_peers"].sum()),
    )
    return result


# --------------------------------------------------------------------------
# Estimates


def estimate_potential(
    accounts: pd.DataFrame,
    spend: pd.DataFrame,
    settings: PotentialSettings | None = None,
) -> pd.DataFrame:
    """Estimate potential from an accounts frame and a spend frame.

    `accounts` needs account_id, industry and size_band; name, region,
    owner_rep_id, is_key_account and the size measure are used when present.
    `spend` has account_id and spend (one row per account; accounts without
    a row spent 0). Buying accounts are those with spend > 0; only they
    count as peers, and an account's own spend counts among its peers.

    Returns POTENTIAL_COLUMNS. `estimate` is the peer quantile or the
    regression value, `potential` = max(estimate, spend), `share_of_wallet`
    = spend / potential (NaN when potential is 0 or unknown), `headroom` =
    potential - spend (0 when the account buys above its estimate).
    `too_few_peers` is true when the industry × size band group had fewer
    than `min_peers` buyers, and `note` then names the wider group used.
    When no account buys at all, estimates are NaN and the note states why.

    Raises PotentialError when a required column is missing or account_id
    repeats in `accounts`.
    """
    settings = settings or PotentialSettings()
    frame = _prepare(accounts, spend, settings)
    peers = peer_estimates(frame, settings.quantile, settings.min_peers)
    frame = frame.join(peers)
    frame["method"] = "peer_quantile"
    if settings.method == "quantile_regression":
        frame = _apply_regression(frame, settings)

    frame["potential"] = np.fmax(frame["estimate"], frame["spend"].clip(lower=0))
    frame.loc[frame["estimate"].isna(), "potential"] = np.nan
    frame["headroom"] = (frame["potential"] - frame["spend"]).clip(lower=0)
    frame["share_of_wallet"] = frame["spend"].clip(lower=0) / frame["potential"].where(
        frame["potential"] > 0
    )
    return frame[POTENTIAL_COLUMNS].reset_index(drop=True)


def _prepare(
    accounts: pd.DataFrame, spend: pd.DataFrame, settings: PotentialSettings
) -> pd.DataFrame:
    """Join spend to accounts and add the optional columns as missing."""
    required = ["account_id", "industry", "size_band"]
    missing = [c for c in required if c not in accounts.columns]
    if missing:
        raise PotentialError(
            f"accounts frame lacks column(s) {missing}; pass the frame "
            "read_accounts returns"
        )
    missing = [c for c in ("account_id", "spend") if c not in spend.columns]
    if missing:
        raise PotentialError(
            f"spend frame lacks column(s) {missing}; pass the frame "
            "account_spend returns"
        )
    repeated = accounts["account_id"][accounts["account_id"].duplicated()]
    if len(repeated):
        raise PotentialError(
            f"account_id {repeated.iloc[0]!r} appears more than once in the "
            "accounts frame; remove the duplicate accounts first"
        )
    frame = accounts.copy()
    for column in ("name", "region", "owner_rep_id", "is_key_account"):
        if column not in frame.columns:
            frame[column] = None
    measure = settings.size_measure
    frame["size"] = (
        pd.to_numeric(frame[measure], errors="coerce")
        if measure in frame.columns
        else np.nan
    )
    totals = spend.groupby("account_id")["spend"].sum()
    frame["spend"] = frame["account_id"].map(totals).fillna(0.0).astype(float)
    return frame.set_index("account_id", drop=False)


def peer_estimates(
    frame: pd.DataFrame, quantile: float, min_peers: int
) -> pd.DataFrame:
    """Find each account's peer group and the `quantile` of its peers' spend.

    `frame` has industry, size_band and spend, indexed by account. Peer
    groups are tried from narrowest to widest (PEER_LEVELS), and the first
    with at least `min_peers` buying accounts is used. The whole set of
    buyers is the last resort even when it is smaller. An account whose
    industry or size band is empty skips the groups that need it. Quantiles
    interpolate linearly between order statistics (numpy's default).

    Returns, on the same index: peer_group (label), peer_level (position in
    PEER_LEVELS), peers (buyers in the group), estimate, too_few_peers and
    note.
    """
    buyers = frame[frame["spend"] > 0]
    result = pd.DataFrame(index=frame.index)
    result["peer_group"] = None
    result["peer_level"] = -1
    result["peers"] = 0
    result["estimate"] = np.nan
    pending = pd.Series(True, index=frame.index)
    first_group: pd.Series = pd.Series("", index=frame.index)
    first_count = pd.Series(0, index=frame.index)

    for level, columns in enumerate(PEER_LEVELS):
        label = _group_labels(frame, columns)
        if columns:
            groups = buyers.groupby(list(columns))["spend"].agg(
                count="size", value=lambda spend: spend.quantile(quantile)
            )
            matched = frame[list(columns)].merge(
                groups, left_on=list(columns), right_index=True, how="left"
            )
            count = pd.Series(matched["count"].to_numpy(), index=frame.index)
            value = pd.Series(matched["value"].to_numpy(float), index=frame.index)
            known = frame[list(columns)].notna().all(axis=1)
        else:
            count = pd.Series(len(buyers), index=frame.index)
            value = pd.Series(
                buyers["spend"].quantile(quantile) if len(buyers) else np.nan,
                index=frame.index,
            )
            known = pd.Series(True, index=frame.index)
        count = count.fillna(0).astype(int)
        if level == 0:
            first_group = label.where(known, "")
            first_count = count.where(known, 0)
        last_resort = level == len(PEER_LEVELS) - 1
        take = pending & known & ((count >= min_peers) | (last_resort & (count > 0)))
        result.loc[take, "peer_group"] = label[take]
        result.loc[take, "peer_level"] = level
        result.loc[take, "peers"] = count[take]
        result.loc[take, "estimate"] = value[take]
        pending &= ~take

    result["too_few_peers"] = result["peer_level"] != 0
    result["note"] = [
        _peer_note(row, first_group[index], int(first_count[index]), min_peers, frame)
        for index, row in result.iterrows()
    ]
    return result


def _group_labels(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.Series:
    if not columns:
        return pd.Series("all accounts", index=frame.index)
    parts = [frame[c].astype("string").fillna("?") for c in columns]
    if len(parts) == 1:
        return ("size band " + parts[0]).astype(object)
    return (parts[0] + " × " + parts[1]).astype(object)


def _peer_note(
    row: pd.Series,
    first_group: str,
    first_count: int,
    min_peers: int,
    frame: pd.DataFrame,
) -> str:
    if row["peer_level"] == 0:
        return ""
    if row["peer_level"] < 0:
        return "no buying account in the spend window, so no peer estimate"
    if first_group:
        reason = (
            f"only {first_count} buying peer(s) in {first_group} (minimum {min_peers})"
        )
    else:
        account = frame.loc[row.name]
        empty = [c for c in ("industry", "size_band") if pd.isna(account[c])]
        reason = f"{' and '.join(empty)} unknown"
    wider = (
        "every buying account"
        if row["peer_group"] == "all accounts"
        else f"{row['peer_group']} across industries"
    )
    fewer = (
        f", itself below the minimum of {min_peers}" if row["peers"] < min_peers else ""
    )
    return f"{reason}; used {wider} ({row['peers']} peers{fewer})"


def _apply_regression(frame: pd.DataFrame, settings: PotentialSettings) -> pd.DataFrame:
    """Replace peer estimates by the quantile-regression line where it applies."""
    frame = frame.copy()
    usable = (frame["spend"] > 0) & (frame["size"] > 0)
    if int(usable.sum()) < settings.min_fit_accounts:
        note = (
            f"quantile regression needs {settings.min_fit_accounts} buying accounts "
            f"with {settings.size_measure}, found {int(usable.sum())}; peer "
            "estimate used"
        )
        logger.warning("%s", note)
        frame["note"] = [_join_notes(note, old) for old in frame["note"]]
        return frame
    x = np.log(frame.loc[usable, "size"].to_numpy(float))
    y = np.log(frame.loc[usable, "spend"].to_numpy(float))
    intercept, slope = quantile_line(x, y, settings.quantile)
    logger.info(
        "quantile %.2f line of log spend on log %s over %d accounts: "
        "intercept %.4f, slope %.4f",
        settings.quantile,
        settings.size_measure,
        len(x),
        intercept,
        slope,
    )
    sized = frame["size"] > 0
    frame.loc[sized, "estimate"] = np.exp(
        intercept + slope * np.log(frame.loc[sized, "size"].to_numpy(float))
    )
    frame.loc[sized, "method"] = "quantile_regression"
    frame.loc[sized, "peer_group"] = f"line over {len(x)} buying accounts"
    frame.loc[sized, "peers"] = len(x)
    frame.loc[sized, "too_few_peers"] = False
    frame.loc[sized, "note"] = ""
    frame.loc[~sized, "note"] = [
        _join_notes(f"{settings.size_measure} unknown; peer estimate used", old)
        for old in frame.loc[~sized, "note"]
    ]
    return frame


def _join_notes(first: str, second: str) -> str:
    return f"{first}; {second}" if second else first


def quantile_line(x: np.ndarray, y: np.ndarray, quantile: float) -> tuple[float, float]:
    """Fit y = intercept + slope * x by quantile regression at `quantile`.

    Minimises the check loss sum(rho(y - intercept - slope * x)) with
    rho(r) = quantile * r for r >= 0 and (quantile - 1) * r otherwise. For a
    fixed slope the best intercept is the `quantile` of the residuals, and
    the remaining loss is convex in the slope, so a golden-section search
    over the slope finds the minimum. The search stops when the slope is
    known to within 1e-10 of its scale. When every x is equal the slope is 0.

    Raises PotentialError when x and y differ in length, are empty or hold
    values that are not finite.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(x) == 0:
        raise PotentialError(
            f"quantile_line needs two 1-d arrays of equal, non-zero length; got "
            f"shapes {x.shape} and {y.shape}"
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise PotentialError(
            "quantile_line got a value that is not finite; drop accounts with "
            "zero or missing spend or size before taking logs"
        )

    def intercept_for(slope: float) -> float:
        return float(np.quantile(y - slope * x, quantile, method="inverted_cdf"))

    def loss(slope: float) -> float:
        residual = y - slope * x - intercept_for(slope)
        return float(
            np.sum(
                np.where(residual >= 0, quantile * residual, (quantile - 1) * residual)
            )
        )

    if np.ptp(x) == 0:
        return intercept_for(0.0), 0.0

    low, high = _bracket(loss, _least_squares_slope(x, y))
    ratio = (math.sqrt(5) - 1) / 2
    inner_low = high - ratio * (high - low)
    inner_high = low + ratio * (high - low)
    loss_low, loss_high = loss(inner_low), loss(inner_high)
    scale = 1.0 + abs(low) + abs(high)
    while high - low > 1e-10 * scale:
        if loss_low <= loss_high:
            high, inner_high, loss_high = inner_high, inner_low, loss_low
            inner_low = high - ratio * (high - low)
            loss_low = loss(inner_low)
        else:
            low, inner_low, loss_low = inner_low, inner_high, loss_high
            inner_high = low + ratio * (high - low)
            loss_high = loss(inner_high)
    slope = (low + high) / 2
    return intercept_for(slope), slope


def _least_squares_slope(x: np.ndarray, y: np.ndarray) -> float:
    centred = x - x.mean()
    return float(np.dot(centred, y - y.mean()) / np.dot(centred, centred))


def _bracket(loss, start: float) -> tuple[float, float]:
    """Return an interval around `start` that contains a minimum of convex `loss`."""
    step = max(abs(start), 1.0) * 0.1
    centre = loss(start)
    low = start - step
    while loss(low) < centre:
        step *= 2
        low = start - step
    step = max(abs(start), 1.0) * 0.1
    high = start + step
    while loss(high) < centre:
        step *= 2
        high = start + step
    return low, high


# --------------------------------------------------------------------------
# Headroom by business unit


def headroom_by_unit(potential: pd.DataFrame, unit_spend: pd.DataFrame) -> pd.DataFrame:
    """Split each account's headroom over business units by its peers' spend mix.

    `potential` is the frame `estimate_potential` returns; `unit_spend` has
    account_id, business_unit and spend (`account_spend(..., by_unit=True)`).
    An account's headroom goes to each unit in proportion to what the buyers
    of its peer group (`peer_level`, the same group the peer estimate uses)
    spend in that unit, so white space follows where comparable accounts
    buy. Negative unit spend counts as 0. A group without positive spend by
    unit uses the mix of every buyer.

    Returns account_id, business_unit and headroom; accounts without headroom
    are left out. Each account's rows add up to its headroom up to
    floating-point error.

    Raises PotentialError when a column is missing.
    """
    missing = [
        c for c in ("account_id", "business_unit", "spend") if c not in unit_spend
    ]
    if missing:
        raise PotentialError(
            f"unit spend frame lacks column(s) {missing}; pass "
            "account_spend(..., by_unit=True)"
        )
    columns = ["account_id", "business_unit", "headroom"]
    spend = unit_spend[unit_spend["business_unit"].notna()]
    spend = spend.groupby(["account_id", "business_unit"], as_index=False)[
        "spend"
    ].sum()
    spend["spend"] = spend["spend"].clip(lower=0)
    spend = spend.merge(
        potential[["account_id", "industry", "size_band"]], on="account_id", how="inner"
    )
    overall = _unit_mix(spend, [])
    if overall.empty:
        return pd.DataFrame(columns=columns)

    accounts = potential[potential["headroom"] > 0]
    parts = []
    for level, group_columns in enumerate(PEER_LEVELS):
        members = accounts[accounts["peer_level"] == level]
        if not group_columns or members.empty:
            continue
        mix = _unit_mix(spend, list(group_columns))
        joined = members[["account_id", "headroom", *group_columns]].merge(
            mix, on=list(group_columns), how="inner"
        )
        parts.append(joined[["account_id", "business_unit", "headroom", "share"]])
    placed = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["account_id", "business_unit", "headroom", "share"])
    )
    rest = accounts[~accounts["account_id"].isin(placed["account_id"])]
    rest = rest[["account_id", "headroom"]].merge(overall, how="cross")
    result = pd.concat([placed, rest], ignore_index=True)
    result["headroom"] = result["headroom"] * result["share"]
    return (
        result[columns]
        .sort_values(["account_id", "business_unit"])
        .reset_index(drop=True)
    )


def _unit_mix(spend: pd.DataFrame, group_columns: list[str]) -> pd.DataFrame:
    """Share of each business unit in the positive spend of each group.

    Groups whose spend adds up to 0 are left out.
    """
    by_unit = spend.groupby([*group_columns, "business_unit"], as_index=False)[
        "spend"
    ].sum()
    if group_columns:
        totals = by_unit.groupby(group_columns)["spend"].transform("sum")
    else:
        totals = pd.Series(by_unit["spend"].sum(), index=by_unit.index)
    by_unit = by_unit[totals > 0].assign(share=by_unit["spend"] / totals)
    return by_unit[[*group_columns, "business_unit", "share"]]
