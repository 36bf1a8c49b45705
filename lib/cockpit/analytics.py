"""What sets top sellers apart, and which deal factors go with winning.

`top_performers` splits the sellers of a scope by a performance KPI and
compares their behaviour: for each behaviour, the difference of the two
means with a bootstrap 95 % confidence interval, the rank-biserial
correlation as effect size and a two-sided Mann-Whitney U p-value.

`win_drivers` fits an L2-regularised logistic regression of won versus lost
on the closed deals, on standardised factors, so each coefficient is the
change in log-odds of winning for one standard deviation of its factor. It
only speaks with at least `min_closed` closed deals and MIN_CLASS_DEALS won
and lost; below that it returns status "not enough data" with the counts.
Both describe associations in past data, not causes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import duckdb
import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from cockpit.behaviour import seller_activity
from cockpit.errors import KpiError
from cockpit.kpi import KPIS, compute_kpi
from cockpit.kpi_deals import deal_history, stage_spells
from cockpit.mart.store import require_tables
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: Sellers each group needs before top and rest are compared.
MIN_GROUP_SELLERS = 3

#: Closed deals `win_drivers` needs by default before it fits a model.
MIN_CLOSED_DEALS = 200

#: Won and lost deals each that `win_drivers` needs.
MIN_CLASS_DEALS = 20

#: Cross-validated AUC below which the model's message warns that the
#: factors barely separate won from lost deals.
WEAK_AUC = 0.6

#: Deals a category needs to keep its own level; rarer ones become "other".
MIN_CATEGORY_DEALS = 10

#: Behaviours compared by `top_performers`: columns of `seller_activity`
#: plus deals_created_per_week.
BEHAVIOURS = (
    "visits_per_week",
    "calls_per_week",
    "internal_meetings_per_week",
    "customer_time_share",
    "accounts_contacted",
    "minutes_per_account",
    "deals_created_per_week",
)

NOT_ENOUGH_DATA = "not enough data"


@dataclass(frozen=True)
class PerformerComparison:
    """Behaviour of top sellers against the rest of one scope and period.

    `status` is "ok" or "not enough data". `sellers` has one row per seller
    with the performance KPI, the group and the behaviours. `behaviours`
    has one row per behaviour with the statistics, empty unless status is
    ok.
    """

    status: str
    metric: str
    top_sellers: int
    rest_sellers: int
    sellers: pd.DataFrame
    behaviours: pd.DataFrame
    message: str


def _bootstrap_difference(
    top: np.ndarray, rest: np.ndarray, rng: np.random.Generator, resamples: int
) -> tuple[float, float]:
    """Percentile 95 % interval of mean(top) - mean(rest) by resampling each group."""
    top_means = rng.choice(top, (resamples, len(top))).mean(axis=1)
    rest_means = rng.choice(rest, (resamples, len(rest))).mean(axis=1)
    low, high = np.percentile(top_means - rest_means, [2.5, 97.5])
    return float(low), float(high)


def compare_groups(
    top: Sequence[float],
    rest: Sequence[float],
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Compare two samples: means, difference, bootstrap CI, effect size, p-value.

    NaN values are dropped first. Returns mean_top, mean_rest, difference
    (mean_top - mean_rest), ci_low and ci_high (bootstrap percentile 95 %
    interval of the difference, `resamples` draws seeded by `seed`),
    rank_biserial (2 U / (n_top n_rest) - 1, from -1 to 1, positive when top
    values tend to be larger) and p_value (two-sided Mann-Whitney U). With
    fewer than 2 values in a group, every statistic but the means is NaN.
    """
    a = np.asarray(top, dtype="float64")
    b = np.asarray(rest, dtype="float64")
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    result = {
        "n_top": float(len(a)),
        "n_rest": float(len(b)),
        "mean_top": float(a.mean()) if len(a) else np.nan,
        "mean_rest": float(b.mean()) if len(b) else np.nan,
        "difference": np.nan,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "rank_biserial": np.nan,
        "p_value": np.nan,
    }
    if len(a) < 2 or len(b) < 2:
        return result
    result["difference"] = result["mean_top"] - result["mean_rest"]
    rng = np.random.default_rng(seed)
    result["ci_low"], result["ci_high"] = _bootstrap_difference(a, b, rng, resamples)
    test = mannwhitneyu(a, b, alternative="two-sided")
    result["rank_biserial"] = float(2 * test.statistic / (len(a) * len(b)) - 1)
    result["p_value"] = float(test.pvalue)
    return result


def top_performers(
    con: duckdb.DuckDBPyConnection,
    start: date,
    end: date,
    scope: Scope | None = None,
    metric: str = "attainment_to_date_pct",
    top_share: float = 0.25,
    behaviours: Sequence[str] = BEHAVIOURS,
    as_of: date | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> PerformerComparison:
    """Compare the behaviour of the top sellers of `scope` with the rest.

    Sellers come from `seller_activity` for [start, end]. Each gets the KPI
    `metric` by rep_id over the same period (as_of as for compute_kpi);
    sellers without a value are left out. The top group is the
    ceil(top_share x sellers) best by the metric (ties broken by rep_id);
    the rest is everyone else. Behaviours are compared by `compare_groups`.

    Returns status "not enough data" when either group has fewer than
    MIN_GROUP_SELLERS sellers. Raises KpiError for an unknown metric or
    behaviour, a metric that cannot be grouped by seller, or top_share
    outside (0, 1).
    """
    if metric not in KPIS:
        raise KpiError(
            f"unknown performance KPI {metric!r}; choose one of {', '.join(KPIS)}"
        )
    if not 0 < top_share < 1:
        raise KpiError(f"top_share must lie between 0 and 1, got {top_share}")
    sellers = seller_activity(con, scope, start, end)
    sellers["internal_meetings_per_week"] = (
        sellers["internal_meetings"] / sellers["active_weeks"]
    )
    created = compute_kpi(
        con,
        "deals_created",
        by=["rep_id"],
        scope=scope,
        start=start,
        end=end,
        as_of=as_of,
    )
    sellers = sellers.merge(created, on="rep_id", how="left")
    sellers["deals_created"] = sellers["deals_created"].fillna(0)
    sellers["deals_created_per_week"] = (
        sellers["deals_created"] / sellers["active_weeks"]
    )
    unknown = [name for name in behaviours if name not in sellers.columns]
    if unknown:
        raise KpiError(
            f"unknown behaviour(s) {', '.join(unknown)}; choose from "
            f"{', '.join(BEHAVIOURS)} or a column of seller_activity"
        )
    performance = compute_kpi(
        con, metric, by=["rep_id"], scope=scope, start=start, end=end, as_of=as_of
    )
    sellers = sellers.merge(performance, on="rep_id", how="left")
    sellers = sellers[sellers[metric].notna()].copy()
    ranked = sellers.sort_values([metric, "rep_id"], ascending=[False, True])
    n_top = int(np.ceil(top_share * len(ranked)))
    top_ids = set(ranked["rep_id"].iloc[:n_top])
    sellers["group"] = np.where(sellers["rep_id"].isin(top_ids), "top", "rest")
    sellers = sellers[["rep_id", "name", "team", metric, "group", *behaviours]]
    sellers = sellers.sort_values([metric, "rep_id"], ascending=[False, True])
    sellers = sellers.reset_index(drop=True)
    n_rest = len(sellers) - n_top
    empty = pd.DataFrame(
        columns=["behaviour", "mean_top", "mean_rest", "difference", "ci_low",
                 "ci_high", "rank_biserial", "p_value"]
    )  # fmt: skip
    if n_top < MIN_GROUP_SELLERS or n_rest < MIN_GROUP_SELLERS:
        message = (
            f"{n_top} top and {n_rest} other sellers with a {metric} value; each "
            f"group needs {MIN_GROUP_SELLERS}"
        )
        logger.info("top performers: %s", message)
        return PerformerComparison(
            NOT_ENOUGH_DATA, metric, n_top, n_rest, sellers, empty, message
        )
    rows = []
    for index, name in enumerate(behaviours):
        stats = compare_groups(
            sellers.loc[sellers["group"] == "top", name],
            sellers.loc[sellers["group"] == "rest", name],
            resamples=resamples,
            seed=seed + index,
        )
        rows.append({"behaviour": name, **stats})
    table = pd.DataFrame(rows).drop(columns=["n_top", "n_rest"])
    table = table.reindex(
        table["rank_biserial"].abs().sort_values(ascending=False).index
    ).reset_index(drop=True)
    message = f"top {n_top} sellers by {metric} against the other {n_rest}"
    return PerformerComparison("ok", metric, n_top, n_rest, sellers, table, message)


# --- win-rate drivers --------------------------------------------------------


@dataclass(frozen=True)
class DriverResult:
    """Outcome of `win_drivers`.

    `status` is "ok" or "not enough data". `coefficients` has one row per
    model column: factor, level (the category, empty for a number),
    coefficient (log-odds per standard deviation), odds_ratio
    (exp(coefficient)) and direction. `cv_auc` is the mean area under the
    ROC curve over 5 stratified folds, a check of how much the factors
    explain (0.5 is chance). `deals` is the table the model was fitted on.
    """

    status: str
    closed_deals: int
    won: int
    lost: int
    min_closed: int
    message: str
    coefficients: pd.DataFrame = field(default_factory=pd.DataFrame)
    cv_auc: float | None = None
    deals: pd.DataFrame = field(default_factory=pd.DataFrame)


#: Numeric and categorical factors `win_drivers` considers.
NUMERIC_FACTORS = ("log_deal_size", "stage_days_mean", "activities_per_30_days")
CATEGORICAL_FACTORS = ("product_line", "business_unit", "industry", "segment", "region")


def deal_factors(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    as_of: date | None = None,
    start: date | None = None,
    end: date | None = None,
) -> pd.DataFrame:
    """Build one row per closed deal with its outcome and candidate factors.

    Closed deals are those whose latest snapshot on or before `as_of` is won
    or lost, matches `scope`, and whose close date lies in [start, end].
    Factors:

    - log_deal_size: log(1 + amount) at the first snapshot where the deal
      was open. A deal never seen open gets the product's list price,
      because some CRMs blank the amount of lost deals;
    - stage_days_mean: mean days of the deal's completed open-stage spells
      in the snapshots, NaN when none was seen;
    - activities_per_30_days: customer activities of the deal's seller with
      its account from creation to close, per 30 days of the deal's life;
    - product_line, business_unit, industry, segment and region.
    """
    require_tables(con, ["opportunities", "products", "accounts", "activities"])
    history = deal_history(con, scope, as_of)
    latest = history.groupby("opportunity_id", sort=False).tail(1)
    closed = latest[latest["status"].isin(["won", "lost"])].copy()
    if start is not None:
        closed = closed[closed["closed_date"] >= pd.Timestamp(start)]
    if end is not None:
        closed = closed[closed["closed_date"] <= pd.Timestamp(end)]

    open_rows = history[history["status"] == "open"]
    first_amount = open_rows.groupby("opportunity_id")["amount"].first()
    prices = con.execute("SELECT product_id, list_price FROM products").df()
    price = prices.set_index("product_id")["list_price"]
    amount = closed["opportunity_id"].map(first_amount)
    amount = amount.fillna(closed["product_id"].map(price))
    closed["log_deal_size"] = np.log1p(amount.clip(lower=0).astype("float64"))

    spells = stage_spells(history)
    done = spells[spells["completed"]]
    closed["stage_days_mean"] = closed["opportunity_id"].map(
        done.groupby("opportunity_id")["days"].mean()
    )

    accounts = (
        con.execute("SELECT account_id, industry FROM accounts")
        .df()
        .set_index("account_id")["industry"]
    )
    closed["industry"] = closed["account_id"].map(accounts)

    contacts = _deal_contacts(con, closed)
    closed = closed.merge(contacts, on="opportunity_id", how="left")
    life = (closed["closed_date"] - closed["created_date"]).dt.days.clip(lower=1)
    closed["activities_per_30_days"] = 30 * closed["activities"].fillna(0) / life
    closed["won"] = (closed["status"] == "won").astype("int64")
    columns = [
        "opportunity_id",
        "rep_id",
        "won",
        *NUMERIC_FACTORS,
        *CATEGORICAL_FACTORS,
    ]
    return closed[columns].reset_index(drop=True)


def _deal_contacts(
    con: duckdb.DuckDBPyConnection, closed: pd.DataFrame
) -> pd.DataFrame:
    """Count the seller's activities with each deal's account during its life."""
    deals = closed[
        ["opportunity_id", "account_id", "rep_id", "created_date", "closed_date"]
    ]
    con.register("_win_driver_deals", deals)
    try:
        return con.execute(
            """
            SELECT d.opportunity_id, count(a.activity_id) AS activities
            FROM _win_driver_deals d
            LEFT JOIN activities a
              ON a.account_id = d.account_id AND a.rep_id = d.rep_id
             AND a.date >= CAST(d.created_date AS DATE)
             AND a.date <= CAST(d.closed_date AS DATE)
            GROUP BY d.opportunity_id
            """
        ).df()
    finally:
        con.unregister("_win_driver_deals")


def _prepare(deals: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Keep informative factors: numbers mostly present, categories that vary."""
    frame = deals.copy()
    numeric = []
    for name in NUMERIC_FACTORS:
        values = frame[name].astype("float64")
        if values.notna().mean() < 0.5 or values.nunique(dropna=True) < 2:
            logger.info("win drivers leave out %s: too few distinct values", name)
            continue
        frame[name] = values.fillna(values.median())
        numeric.append(name)
    categorical = []
    for name in CATEGORICAL_FACTORS:
        values = frame[name].astype(object).where(frame[name].notna(), "unknown")
        counts = values.value_counts()
        rare = counts[counts < MIN_CATEGORY_DEALS].index
        values = values.where(~values.isin(rare), "other")
        if values.nunique() < 2:
            logger.info("win drivers leave out %s: a single category", name)
            continue
        frame[name] = values.astype(str)
        categorical.append(name)
    return frame, numeric, categorical


def _model(numeric: list[str], categorical: list[str], seed: int) -> Pipeline:
    encode = ColumnTransformer(
        [
            ("number", "passthrough", numeric),
            (
                "category",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                categorical,
            ),
        ]
    )
    return make_pipeline(
        encode,
        StandardScaler(),
        LogisticRegression(C=1.0, max_iter=2000, random_state=seed),
    )


def win_drivers(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    as_of: date | None = None,
    start: date | None = None,
    end: date | None = None,
    min_closed: int = MIN_CLOSED_DEALS,
    seed: int = 0,
) -> DriverResult:
    """Rank the factors that go with winning, from the closed deals of a scope.

    Factors come from `deal_factors`. Numbers with fewer than half their
    values present, and categories with one level, are left out; missing
    numbers get the median, and categories with fewer than
    MIN_CATEGORY_DEALS deals are pooled as "other". Every model column is
    standardised, so coefficients compare across factors. Returns status
    "not enough data" and the counts when there are fewer than `min_closed`
    closed deals, fewer than MIN_CLASS_DEALS won or lost, or no usable
    factor. Raises KpiError for min_closed below 2 * MIN_CLASS_DEALS.
    """
    if min_closed < 2 * MIN_CLASS_DEALS:
        raise KpiError(
            f"min_closed must be at least {2 * MIN_CLASS_DEALS}, got {min_closed}"
        )
    deals = deal_factors(con, scope, as_of, start, end)
    won = int(deals["won"].sum())
    lost = len(deals) - won
    counts = {
        "closed_deals": len(deals),
        "won": won,
        "lost": lost,
        "min_closed": min_closed,
    }
    if len(deals) < min_closed or won < MIN_CLASS_DEALS or lost < MIN_CLASS_DEALS:
        message = (
            f"{len(deals)} closed deals ({won} won, {lost} lost); the model needs "
            f"{min_closed} closed deals with at least {MIN_CLASS_DEALS} won and "
            f"{MIN_CLASS_DEALS} lost"
        )
        logger.info("win drivers: %s", message)
        return DriverResult(NOT_ENOUGH_DATA, message=message, deals=deals, **counts)
    frame, numeric, categorical = _prepare(deals)
    if not numeric and not categorical:
        message = "no factor varies across the closed deals"
        return DriverResult(NOT_ENOUGH_DATA, message=message, deals=deals, **counts)

    features = frame[numeric + categorical]
    target = frame["won"].to_numpy()
    model = _model(numeric, categorical, seed)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    auc = float(
        cross_val_score(model, features, target, cv=folds, scoring="roc_auc").mean()
    )
    model.fit(features, target)

    names = model[0].get_feature_names_out()
    coefficients = model[-1].coef_[0]
    rows = []
    for name, coefficient in zip(names, coefficients, strict=True):
        kind, column = name.split("__", 1)
        if kind == "number":
            factor, level = column, ""
        else:
            factor = next(c for c in categorical if column.startswith(f"{c}_"))
            level = column[len(factor) + 1 :]
        rows.append(
            {
                "factor": factor,
                "level": level,
                "coefficient": float(coefficient),
                "odds_ratio": float(np.exp(coefficient)),
                "direction": "goes with winning"
                if coefficient > 0
                else "goes with losing",
            }
        )
    table = pd.DataFrame(rows)
    table = table.reindex(
        table["coefficient"].abs().sort_values(ascending=False).index
    ).reset_index(drop=True)
    message = (
        f"logistic regression on {len(deals)} closed deals ({won} won); "
        f"cross-validated AUC {auc:.3f}"
    )
    if auc < WEAK_AUC:
        message += (
            f", below {WEAK_AUC}: these factors tell won and lost deals apart little "
            "better than chance"
        )
    logger.info("win drivers: %s", message)
    return DriverResult(
        "ok",
        message=message,
        coefficients=table,
        cv_auc=auc,
        deals=deals,
        **counts,
    )
