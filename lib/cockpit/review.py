"""One call per regional notebook: the numbers and figures each report shows.

The notebooks under notebooks/ stay thin: they take their papermill
parameters, call one function here and display what it returns. Tests call
the same functions, so every number in a report is covered by a test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from cockpit import charts
from cockpit.forecast import backtest, forecast_many, forecast_table, monthly_series
from cockpit.kpi import KPIS, compute_kpi, format_value, kpi_values
from cockpit.scope import Scope
from cockpit.targets import seller_targets, target_rows

logger = logging.getLogger(__name__)

#: KPI tiles of the 04 review, in display order.
REVIEW_KPIS = (
    "revenue",
    "margin_pct",
    "growth_pct",
    "target",
    "attainment_pct",
    "open_pipeline",
    "weighted_pipeline",
    "win_rate",
    "activities_per_seller",
)

#: KPIs read from the activities table, which has no business unit.
ACTIVITY_KPIS = ("activities", "activities_per_seller")

#: Folder inside a run's output folder where notebooks leave result tables.
RESULTS_FOLDER = "results"


def parse_as_of(value: str | date | None, con: duckdb.DuckDBPyConnection) -> date:
    """Return the as-of date: the given one, else the mart's, else its last invoice."""
    if isinstance(value, date):
        return value
    if value:
        return date.fromisoformat(str(value))
    row = con.execute("SELECT value FROM mart_meta WHERE key = 'as_of'").fetchone()
    if row and row[0]:
        return date.fromisoformat(row[0])
    latest = con.execute("SELECT max(date) FROM transactions").fetchone()[0]
    return latest or date.today()


def _months_after_history(series: pd.DataFrame, as_of: date) -> int:
    """Months between the last complete history month and the as-of month.

    The history ends with the last complete month, so when `as_of` falls
    inside a month the forecast must run that much longer to reach the
    end of the next period.
    """
    if series.empty:
        return 0
    last = pd.Timestamp(series["ds"].max())
    return (as_of.year - last.year) * 12 + (as_of.month - last.month)


def mart_currency(con: duckdb.DuckDBPyConnection) -> str:
    """Reporting currency stored in the mart's metadata; EUR when unset."""
    row = con.execute("SELECT value FROM mart_meta WHERE key = 'currency'").fetchone()
    return row[0] if row and row[0] else "EUR"


def audit_result_table(audit, as_of: date) -> pd.DataFrame:
    """Audit summary stamped with as-of date and run time, kept per run in the mart."""
    frame = audit.summary.copy()
    frame.insert(0, "as_of", pd.Timestamp(as_of))
    frame.insert(1, "audited_at", pd.Timestamp.now(tz="UTC").tz_localize(None))
    frame["value"] = frame["value"].astype("string")
    frame["threshold"] = frame["threshold"].astype("string")
    return frame


def write_result(output_dir: str | Path, table: str, frame: pd.DataFrame) -> Path:
    """Save a result table for the batch's publish step to merge into the mart."""
    folder = Path(output_dir) / RESULTS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{table}.parquet"
    frame.to_parquet(path, index=False)
    logger.info("wrote %d row(s) of %s to %s", len(frame), table, path)
    return path


def format_table(
    frame: pd.DataFrame, units: dict[str, str], currency: str = "EUR"
) -> pd.DataFrame:
    """Return a copy of `frame` with the named columns formatted for people."""
    shown = frame.copy()
    for column, unit in units.items():
        if column in shown:
            shown[column] = [
                format_value(v, unit, currency=currency) for v in shown[column]
            ]
    return shown


# --- 02 forecast -----------------------------------------------------------


@dataclass
class ForecastReview:
    """Forecast of one region × business unit, with its backtest."""

    series: pd.DataFrame
    forecast: pd.DataFrame
    backtests: pd.DataFrame
    summary: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    figures: list = field(default_factory=list)
    rolling: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def forecast_total(self) -> float:
        """Sum of the point forecasts over every series and month."""
        return float(self.forecast["yhat"].sum()) if len(self.forecast) else 0.0


def forecast_review(
    con: duckdb.DuckDBPyConnection,
    scope: Scope,
    as_of: date,
    horizon: int = 12,
    holdout: int = 12,
    growth_pct: float = 0.05,
    regressors: list[dict] | None = None,
    scenario_file: str | None = None,
) -> ForecastReview:
    """Forecast monthly revenue per product line and backtest it.

    The backtest holds out the last `holdout` complete months of every
    product line and of the region × unit total, and compares Prophet (or
    the fallback the series needs), seasonal naive and "last year + growth"
    by WAPE. The summary's WAPE over product lines adds absolute errors
    across lines before dividing by actuals.
    """
    series = monthly_series(con, scope, by="product_line", end=as_of)
    total = monthly_series(con, scope, by=None, end=as_of)
    rows = []
    for series_id, history in list(series.groupby("series_id")) + list(
        total.groupby("series_id")
    ):
        result = backtest(
            history[["ds", "y"]].reset_index(drop=True),
            holdout=holdout,
            growth_pct=growth_pct,
        )
        result.insert(0, "series_id", series_id)
        rows.append(result)
    backtests = (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=BACKTEST_COLUMNS)
    )
    summary = _backtest_summary(backtests)
    horizon = horizon + _months_after_history(series, as_of)
    regressor_set = _regressor_set(
        con, scope, series, horizon, regressors, scenario_file
    )
    forecast = (
        forecast_many(series, horizon=horizon, regressors=regressor_set)
        if len(series)
        else pd.DataFrame(columns=FORECAST_COLUMNS)
    )
    notes = (
        []
        if len(series)
        else ["no invoice lines in this scope, so there is nothing to forecast"]
    )
    if len(forecast):
        for (series_id, method, note), _ in forecast.groupby(
            ["series_id", "method", "note"], dropna=False
        ):
            if isinstance(note, str) and note:
                notes.append(f"{series_id}: {method} ({note})")
    figures = []
    for series_id, history in series.groupby("series_id"):
        figures.append(
            charts.forecast_figure(
                history,
                forecast[forecast["series_id"] == series_id],
                f"{series_id}: monthly net revenue",
            )
        )
    if len(summary):
        lines_only = summary[summary["level"] == "product lines"]
        figures.insert(
            0,
            charts.backtest_figure(lines_only, f"Backtest WAPE, last {holdout} months"),
        )
    rolling = (
        _rolling_report(con, scope, as_of, growth_pct)
        if len(series)
        else pd.DataFrame()
    )
    return ForecastReview(series, forecast, backtests, summary, notes, figures, rolling)


#: Columns of forecast_many's output.
FORECAST_COLUMNS = [
    "series_id",
    "ds",
    "yhat",
    "yhat_lower",
    "yhat_upper",
    "method",
    "note",
]

#: Columns of the per-series backtest table.
BACKTEST_COLUMNS = [
    "series_id",
    "method",
    "wape",
    "bias",
    "actual",
    "forecast",
    "chosen",
]

#: Labels of the compared methods in the backtest summary.
METHOD_LABELS = {
    "chosen": "cockpit forecast",
    "seasonal_naive": "seasonal naive",
    "last_year_plus_growth": "last year + growth",
}


def _regressor_set(
    con: duckdb.DuckDBPyConnection,
    scope: Scope,
    series: pd.DataFrame,
    horizon: int,
    regressors: list[dict] | None,
    scenario_file: str | None,
):
    """Market indicators for the forecast, lagged and extended; None without any.

    Each entry of `regressors` has indicator, and optionally region (null:
    the scope's region), lag in months and extension (carry_forward or
    yoy_growth). How each was lagged or extended is carried in the notes
    that the forecast rows keep.
    """
    if not regressors or series.empty:
        return None
    from cockpit.drivers import RegressorSpec, external_regressors

    specs = [
        RegressorSpec(
            indicator=entry["indicator"],
            region=entry.get("region"),
            lag=int(entry.get("lag", 0)),
            extension=entry.get("extension", "carry_forward"),
        )
        for entry in regressors
    ]
    start = pd.Timestamp(series["ds"].min())
    until = pd.Timestamp(series["ds"].max()) + pd.DateOffset(months=horizon)
    return external_regressors(
        con, specs, start, until, region=scope.region, scenario_file=scenario_file
    )


def _rolling_report(
    con: duckdb.DuckDBPyConnection, scope: Scope, as_of: date, growth_pct: float
) -> pd.DataFrame:
    """Rolling-origin backtest of the region × unit total, with forecast value added.

    Three origins, each scored on the following 12 months; forecast value
    added is the old method's WAPE minus each method's WAPE.
    """
    from cockpit.backtesting import backtest_by_region_unit

    report, _ = backtest_by_region_unit(
        con, scope, end=as_of, origins=3, horizon=12, growth_pct=growth_pct
    )
    return report[report["region"] != "(all)"].reset_index(drop=True)


def _backtest_summary(backtests: pd.DataFrame) -> pd.DataFrame:
    """Pool backtest errors per level and compared method.

    "cockpit forecast" is whatever method the rules chose per series
    (Prophet, or its fallback for short or sparse series).
    """
    if backtests.empty:
        return pd.DataFrame(columns=["level", "method", "wape", "bias"])
    chosen = backtests[backtests["chosen"]].assign(method=METHOD_LABELS["chosen"])
    baselines = backtests[
        backtests["method"].isin(["seasonal_naive", "last_year_plus_growth"])
    ]
    baselines = baselines.assign(method=baselines["method"].map(METHOD_LABELS))
    frame = pd.concat([chosen, baselines], ignore_index=True)
    frame["level"] = np.where(
        frame["series_id"] == "total", "region × unit total", "product lines"
    )
    frame["abs_error"] = frame["wape"] * frame["actual"].abs()
    grouped = frame.groupby(["level", "method"], as_index=False, sort=False).agg(
        abs_error=("abs_error", "sum"),
        actual=("actual", "sum"),
        forecast=("forecast", "sum"),
    )
    grouped["wape"] = grouped["abs_error"] / grouped["actual"].abs().replace(0, np.nan)
    grouped["bias"] = (grouped["forecast"] - grouped["actual"]) / grouped[
        "actual"
    ].replace(0, np.nan)
    return grouped[["level", "method", "wape", "bias"]]


def forecast_result_table(
    review: ForecastReview, as_of: date, scope: Scope
) -> pd.DataFrame:
    """Forecast rows stamped with as-of date and scope, for the mart."""
    return forecast_table(
        review.forecast, as_of, scope.region, scope.business_unit, level="product_line"
    )


# --- 03 targets ------------------------------------------------------------


def next_period(as_of: date, months: int = 12) -> tuple[date, date, str]:
    """First and last day of the `months` months after the as-of month, and a label."""
    start = (as_of.replace(day=1) + timedelta(days=32)).replace(day=1)
    end_month = (
        pd.Timestamp(start) + pd.DateOffset(months=months) - pd.Timedelta(days=1)
    )
    end = end_month.date()
    return start, end, f"{start:%Y-%m}..{end:%Y-%m}"


def read_forecast_total(output_dir: str | Path, start: date, end: date) -> float | None:
    """Sum the 02 notebook's saved forecast over [start, end]; None when absent."""
    path = Path(output_dir) / RESULTS_FOLDER / "forecasts.parquet"
    if not path.exists():
        return None
    frame = pd.read_parquet(path)
    ds = pd.to_datetime(frame["ds"])
    inside = (ds >= pd.Timestamp(start)) & (ds <= pd.Timestamp(end))
    return float(frame.loc[inside, "yhat"].sum())


@dataclass
class TargetReview:
    """Seller targets of one region × business unit for the next period."""

    period: str
    period_start: date
    period_end: date
    forecast_total: float
    forecast_source: str
    targets: pd.DataFrame
    figures: list = field(default_factory=list)
    ambition_pct: float = 0.0

    @property
    def target_total(self) -> float:
        """Forecast total raised by the ambition: what the sellers' targets add up to."""
        return round(self.forecast_total * (1 + self.ambition_pct), 2)


def target_review(
    con: duckdb.DuckDBPyConnection,
    scope: Scope,
    as_of: date,
    output_dir: str | Path,
    months: int = 12,
    ambition_pct: float = 0.0,
) -> TargetReview:
    """Allocate the forecast of the next period, raised by an ambition, to the sellers.

    The sellers' targets add up to forecast × (1 + `ambition_pct`).

    The forecast total comes from the 02 notebook's saved forecast when it
    ran for this region × unit in the same batch. Otherwise it is computed
    here with the same method.
    """
    start, end, label = next_period(as_of, months)
    total = read_forecast_total(output_dir, start, end)
    source = "forecast saved by the 02 notebook of this run"
    if total is None:
        series = monthly_series(con, scope, by="product_line", end=as_of)
        horizon = months + _months_after_history(series, as_of)
        forecast = (
            forecast_many(series, horizon=horizon)
            if len(series)
            else pd.DataFrame(columns=["ds", "yhat"])
        )
        ds = pd.to_datetime(forecast["ds"])
        total = float(
            forecast.loc[
                (ds >= pd.Timestamp(start)) & (ds <= pd.Timestamp(end)), "yhat"
            ].sum()
        )
        source = "forecast computed by the 03 notebook (no saved 02 forecast)"
    target_total = round(total * (1 + ambition_pct), 2)
    targets = seller_targets(con, scope, start, end, target_total, as_of)
    figures = []
    if len(targets):
        figures.append(
            charts.bar_figure(
                targets, "name", "target", f"Seller targets {label}", "net revenue"
            )
        )
    return TargetReview(
        label, start, end, total, source, targets, figures, ambition_pct
    )


def target_result_table(
    review: TargetReview,
    con: duckdb.DuckDBPyConnection | None = None,
    set_by: str = "batch",
) -> pd.DataFrame:
    """Target rows shaped like the mart's targets table.

    The version is one above the highest the mart already holds for the
    period (1 without a connection), so a batch run again on the same mart
    adds a new version instead of clashing with the earlier one.
    """
    version = 1
    if con is not None:
        latest = con.execute(
            "SELECT max(version) FROM targets WHERE period = ? AND level = 'rep'",
            [review.period],
        ).fetchone()[0]
        version = int(latest) + 1 if latest is not None else 1
    return target_rows(
        review.targets,
        period=review.period,
        period_start=review.period_start,
        period_end=review.period_end,
        set_by=set_by,
        reason="next-period allocation of the regional forecast",
        version=version,
        created_at=pd.Timestamp.now(tz="UTC").tz_localize(None),
    )


# --- 04 KPI review ---------------------------------------------------------


@dataclass
class KpiReview:
    """Year-to-date KPIs of one scope, per seller and by month."""

    as_of: date
    currency: str
    tiles: dict[str, float | None]
    tiles_text: dict[str, str]
    by_seller: pd.DataFrame
    by_month: pd.DataFrame
    pipeline_by_stage: pd.DataFrame
    figures: list = field(default_factory=list)


def kpi_review(
    con: duckdb.DuckDBPyConnection,
    scope: Scope,
    as_of: date,
    currency: str | None = None,
) -> KpiReview:
    """Compute the KPI tiles, per-seller table and monthly chart for a scope.

    Backward-looking KPIs cover the calendar year of `as_of` up to `as_of`;
    the target is the full-year target, so attainment reads as progress
    towards it. Pipeline KPIs use the latest snapshot on or before `as_of`.
    """
    currency = currency or mart_currency(con)
    year_start = date(as_of.year, 1, 1)
    year_end = date(as_of.year, 12, 31)
    period = {"start": year_start, "end": min(as_of, year_end), "as_of": as_of}
    tiles = kpi_values(
        con, [k for k in REVIEW_KPIS if k not in ACTIVITY_KPIS], scope=scope, **period
    )
    # Activities carry no business unit, so activity KPIs cover the seller's
    # whole region even in a region × unit report.
    activity_scope = replace(scope, business_unit=None)
    tiles.update(kpi_values(con, list(ACTIVITY_KPIS), scope=activity_scope, **period))
    target_full_year = kpi_values(
        con, ["target"], scope=scope, start=year_start, end=year_end, as_of=as_of
    )["target"]
    tiles["target"] = target_full_year
    revenue = tiles.get("revenue")
    tiles["attainment_pct"] = (
        revenue / target_full_year
        if revenue is not None and target_full_year and target_full_year > 0
        else None
    )
    tiles_text = {
        name: format_value(value, KPIS[name].unit, currency=currency)
        for name, value in tiles.items()
    }

    seller_kpis = [
        "revenue",
        "margin_pct",
        "won_value",
        "win_rate",
        "open_pipeline",
        "activities",
    ]
    by_seller = None
    for name in seller_kpis:
        kpi_scope = activity_scope if name in ACTIVITY_KPIS else scope
        frame = compute_kpi(con, name, by=["rep_id"], scope=kpi_scope, **period)
        by_seller = (
            frame
            if by_seller is None
            else by_seller.merge(frame, on="rep_id", how="outer")
        )
    names = con.execute("SELECT rep_id, name FROM reps").df()
    by_seller = (
        names.merge(by_seller, on="rep_id", how="right")
        .sort_values("revenue", ascending=False)
        .reset_index(drop=True)
    )

    this_year = compute_kpi(con, "revenue", by=["month"], scope=scope, **period)
    last_year = compute_kpi(
        con,
        "revenue",
        by=["month"],
        scope=scope,
        start=year_start.replace(year=as_of.year - 1),
        end=year_end.replace(year=as_of.year - 1),
        as_of=as_of,
    )
    last_year["month"] = [f"{int(m[:4]) + 1}{m[4:]}" for m in last_year["month"]]
    by_month = pd.DataFrame({"month": [f"{as_of.year}-{m:02d}" for m in range(1, 13)]})
    by_month = by_month.merge(this_year, on="month", how="left").merge(
        last_year.rename(columns={"revenue": "revenue_last_year"}),
        on="month",
        how="left",
    )
    by_month["target"] = (
        (target_full_year or np.nan) / 12 if target_full_year else np.nan
    )

    pipeline = _pipeline_by_stage(con, scope, as_of)
    figures = [
        charts.revenue_vs_target_figure(
            by_month, f"Revenue by month, {as_of.year}, against last year and target"
        ),
        charts.bar_figure(
            pipeline, "stage", "amount", "Open pipeline by stage", "amount"
        ),
    ]
    if len(by_seller):
        figures.append(
            charts.bar_figure(
                by_seller,
                "name",
                "activities",
                "Activities per seller, year to date",
                "count",
            )
        )
    return KpiReview(
        as_of, currency, tiles, tiles_text, by_seller, by_month, pipeline, figures
    )


def tiles_frame(result: KpiReview) -> pd.DataFrame:
    """KPI tiles as a two-column table (label, formatted value) for reports."""
    return pd.DataFrame(
        {
            "KPI": [KPIS[name].label for name in result.tiles_text],
            "value": list(result.tiles_text.values()),
        }
    )


def _pipeline_by_stage(
    con: duckdb.DuckDBPyConnection, scope: Scope, as_of: date
) -> pd.DataFrame:
    where, params = scope.where("o.")
    return con.execute(
        f"""
        WITH snap AS (
            SELECT max(snapshot_date) AS d FROM opportunities WHERE snapshot_date <= ?
        )
        SELECT o.stage, count(*) AS deals, sum(o.amount) AS amount
        FROM opportunities o, snap
        WHERE o.snapshot_date = snap.d AND o.status = 'open' AND {where}
        GROUP BY o.stage ORDER BY amount DESC
        """,
        [as_of, *params],
    ).df()


# --- 05 pipeline and behaviour --------------------------------------------


@dataclass
class PipelineReview:
    """Forward-looking and behaviour analyses of one region × business unit."""

    as_of: date
    summary: pd.DataFrame
    waterfall: pd.DataFrame
    movement_window: str
    slipped: pd.DataFrame
    stale: pd.DataFrame
    activity: pd.DataFrame
    silent_key_accounts: pd.DataFrame
    performers: object
    drivers: object
    figures: list = field(default_factory=list)


def pipeline_review(
    con: duckdb.DuckDBPyConnection, scope: Scope, as_of: date
) -> PipelineReview:
    """Compute pipeline health, week-on-week movement and seller behaviour.

    Pipeline KPIs are per seller for the calendar year of `as_of`; the
    movement compares the last two snapshots on or before `as_of`.
    Behaviour covers the year to `as_of` and, because activities carry no
    business unit, the seller's whole region.
    """
    from cockpit import analytics, behaviour, pipeline

    year_start = date(as_of.year, 1, 1)
    activity_scope = replace(scope, business_unit=None)
    summary = pipeline.pipeline_summary(con, ["rep_id"], scope, "year", as_of)
    if len(pipeline.snapshot_dates(con)) >= 2:
        movement = pipeline.pipeline_movement(con, scope, as_of)
        waterfall = movement.waterfall
        window = (
            f"{movement.start_snapshot:%Y-%m-%d} to {movement.end_snapshot:%Y-%m-%d}"
        )
    else:
        waterfall = pd.DataFrame(columns=["step", "deals", "value", "running_total"])
        window = "only one pipeline snapshot, so no week-on-week movement"
    slipped = pipeline.slipped_deals(con, scope, as_of)
    stale = pipeline.stale_deals(con, scope, as_of)
    activity = behaviour.seller_activity(con, activity_scope, year_start, as_of)
    silent = behaviour.key_accounts_without_contact(con, as_of, activity_scope)
    performers = analytics.top_performers(
        con, year_start, as_of, activity_scope, as_of=as_of
    )
    if performers.status != "ok":
        # Without targets there is no attainment; rank sellers by won value.
        performers = analytics.top_performers(
            con, year_start, as_of, activity_scope, metric="won_value", as_of=as_of
        )
    drivers = analytics.win_drivers(con, scope, as_of)
    figures = []
    if len(waterfall) and "value" in waterfall:
        figures.append(
            charts.bar_figure(
                waterfall,
                "step",
                "value",
                f"Pipeline movement, {window}",
                "amount",
            )
        )
    return PipelineReview(
        as_of,
        summary,
        waterfall,
        window,
        slipped,
        stale,
        activity,
        silent,
        performers,
        drivers,
        figures,
    )


# --- 06 gap to target, warnings and incentives ------------------------------


@dataclass
class GapReview:
    """Projected attainment, early warnings and live bonuses of one scope."""

    as_of: date
    by_seller: pd.DataFrame
    by_team: pd.DataFrame
    alerts: pd.DataFrame
    bonuses: pd.DataFrame
    bonus_note: str
    figures: list = field(default_factory=list)


def gap_review(
    con: duckdb.DuckDBPyConnection,
    scope: Scope,
    as_of: date,
    plan_name: str | None = None,
    alert_rules: str | Path | None = None,
    plans_file: str | Path | None = None,
) -> GapReview:
    """Project period-end attainment, evaluate the warning rules and the bonuses.

    Projections and bonuses cover the calendar year of `as_of`. Bonuses use
    the plan `plan_name` from the incentive plan file. Without a name, the
    plan whose period contains `as_of` is used. No bonus is shown when no
    plan covers `as_of` or the plan does not fit the mart.
    """
    from cockpit import alerts, incentives, projection
    from cockpit.errors import CockpitError

    by_seller = projection.project_attainment(con, as_of, "rep_id", scope, "year")
    by_team = projection.project_attainment(con, as_of, "team", scope, "year")
    table = alerts.evaluate_alerts(con, alerts.load_rules(alert_rules), as_of, scope)

    bonuses = pd.DataFrame()
    note = ""
    try:
        plans = incentives.load_plans(plans_file)
        plan = None
        if plan_name:
            plan = incentives.get_plan(plans, plan_name)
        else:
            covering = [
                p for p in plans.values() if p.period_start <= as_of <= p.period_end
            ]
            plan = covering[0] if covering else None
        if plan is None:
            note = f"no incentive plan covers {as_of:%Y-%m-%d}"
        else:
            # A seller's bonus covers all their revenue, so only the region
            # of a region × unit scope applies.
            region_scope = replace(scope, business_unit=None)
            bonuses = incentives.live_bonus(con, plan, as_of, region_scope)
            note = f"plan {plan.name}, {plan.period_start:%Y-%m-%d} to {plan.period_end:%Y-%m-%d}"
    except CockpitError as exc:
        note = f"bonuses not computed: {exc}"
        logger.warning("bonuses not computed for %s: %s", scope.label(), exc)

    figures = []
    if len(by_seller) and "projected_attainment" in by_seller:
        figures.append(
            charts.bar_figure(
                by_seller,
                "rep_id",
                "projected_attainment",
                "Projected attainment at year end",
                "share of target",
            )
        )
    return GapReview(as_of, by_seller, by_team, table, bonuses, note, figures)
