"""Pilot recommendation: the region whose data is best, as the hub would pick it."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from cockpit.audit.common import HISTORY_MONTHS, READINESS_WEIGHTS
from cockpit.errors import MartError

logger = logging.getLogger(__name__)

#: Months of history a pilot region needs: one full year lets a forecast
#: see every month once and a backtest compare a year with the one before.
PILOT_MIN_MONTHS = 12.0

#: Fact rows (invoice lines plus opportunities) a pilot region needs.
# NOTE: a judgement call of about 20 rows a month over two years. Raise it
# for marts where a region routinely has thousands of lines a month.
PILOT_MIN_ROWS = 500

RANKING_COLUMNS = [
    "rank",
    "region",
    "eligible",
    "score",
    *READINESS_WEIGHTS,
    "months",
    "rows",
    "revenue",
    "units",
    "best_unit",
    "best_unit_score",
]


@dataclass(frozen=True)
class PilotRecommendation:
    """The region recommended for a pilot, the business unit to start with, and why.

    `score` is the region's readiness (0-100), the mean of its cells'
    scores weighted by their rows. `eligible` is False when no region has
    PILOT_MIN_MONTHS of history and PILOT_MIN_ROWS rows, and the best of
    them is named anyway. `ranking` has one row per region, best first.
    """

    region: str
    business_unit: str
    score: float
    eligible: bool
    reasons: tuple[str, ...]
    ranking: pd.DataFrame

    def markdown(self) -> str:
        """Return the recommendation and its reasons as Markdown."""
        head = (
            f"**Pilot recommendation: {self.region}**, starting with "
            f"{self.business_unit} (readiness {self.score:.1f})"
        )
        return head + "\n\n" + "\n".join(f"- {reason}" for reason in self.reasons)


def rank_regions(readiness: pd.DataFrame) -> pd.DataFrame:
    """Rank regions by their readiness, best first.

    Each region's score, parts and months are the means of its cells
    weighted by rows. A region is eligible with at least PILOT_MIN_MONTHS
    months of history and PILOT_MIN_ROWS rows. Order: eligible first, then
    higher score, longer history up to HISTORY_MONTHS, more rows, and the
    region name. History beyond HISTORY_MONTHS is not compared, because a
    forecast gains little from it. Scores and months are compared rounded
    to one decimal, as shown. Columns: rank,
    region, eligible, score, the five parts, months, rows, revenue, units,
    best_unit, best_unit_score.
    """
    rows = []
    for region, cells in readiness.groupby("region", sort=True):
        weights = cells["rows"].astype(float)
        total = weights.sum()

        def weighted(column: str, cells=cells, weights=weights, total=total) -> float:
            return float((cells[column] * weights).sum() / total) if total else 0.0

        best = cells.sort_values(
            ["score", "rows", "business_unit"], ascending=[False, False, True]
        ).iloc[0]
        revenue = cells["revenue"].dropna()
        row = {
            "region": region,
            "score": round(weighted("score"), 1),
            **{part: round(weighted(part), 1) for part in READINESS_WEIGHTS},
            "months": round(weighted("months"), 1),
            "rows": int(total),
            "revenue": float(revenue.sum()) if len(revenue) else None,
            "units": len(cells),
            "best_unit": best["business_unit"],
            "best_unit_score": float(best["score"]),
        }
        row["eligible"] = bool(
            row["months"] >= PILOT_MIN_MONTHS and row["rows"] >= PILOT_MIN_ROWS
        )
        rows.append(row)
    ranking = pd.DataFrame(rows)
    if ranking.empty:
        return pd.DataFrame(columns=RANKING_COLUMNS)
    ranking["_history"] = ranking["months"].clip(upper=HISTORY_MONTHS)
    ranking = ranking.sort_values(
        ["eligible", "score", "_history", "rows", "region"],
        ascending=[False, False, False, False, True],
    ).reset_index(drop=True)
    ranking["rank"] = range(1, len(ranking) + 1)
    return ranking[RANKING_COLUMNS]


def recommend_pilot(result) -> PilotRecommendation:
    """Recommend the pilot region of an audit, with the reasons for the choice.

    `result` is an AuditResult; its readiness table is ranked with
    `rank_regions`. The reasons name the runner-up and the margin, say
    which criterion broke a tie on the score, state history and volume
    against the pilot minimums, name regions that fall short of them, the
    region's weakest part, and the business unit to start with (its best
    cell). The same audit always gives the same recommendation.

    Raises MartError when the audit found no fact rows with a region and a
    business unit.
    """
    ranking = rank_regions(result.readiness)
    if ranking.empty:
        raise MartError(
            "no transactions or opportunities with a region and business unit "
            f"in scope ({result.scope.label()}); load ERP or CRM data first"
        )
    best = ranking.iloc[0]
    reasons = [_lead_reason(ranking)]
    if len(ranking) > 1:
        tie = _tie_reason(best, ranking.iloc[1])
        if tie:
            reasons.append(tie)
    reasons.append(
        f"History {best['months']:.1f} months (pilot minimum "
        f"{PILOT_MIN_MONTHS:.0f}); volume {best['rows']:,} rows (minimum "
        f"{PILOT_MIN_ROWS:,})."
    )
    short = ranking[~ranking["eligible"]]
    if best["eligible"] and len(short):
        names = ", ".join(
            f"{r.region} ({r.months:.1f} months, {r.rows:,} rows)"
            for r in short.itertuples()
        )
        reasons.append(f"Below the pilot minimums: {names}.")
    if not best["eligible"]:
        reasons.append(
            "No region meets the pilot minimums; this is the best of them, so "
            "plan a longer history or more data before the pilot."
        )
    parts = {part: best[part] for part in READINESS_WEIGHTS}
    weakest = min(parts, key=lambda part: (parts[part], part))
    if parts[weakest] < 100.0:
        reasons.append(f"Weakest part: {weakest} ({parts[weakest]:.1f}).")
    reasons.append(
        f"Start with {best['best_unit']}: its readiness is "
        f"{best['best_unit_score']:.1f}, the best of the region's "
        f"{best['units']} business unit(s)."
    )
    recommendation = PilotRecommendation(
        region=str(best["region"]),
        business_unit=str(best["best_unit"]),
        score=float(best["score"]),
        eligible=bool(best["eligible"]),
        reasons=tuple(reasons),
        ranking=ranking,
    )
    logger.info(
        "pilot recommendation: %s, %s (readiness %.1f)",
        recommendation.region,
        recommendation.business_unit,
        recommendation.score,
    )
    return recommendation


def _lead_reason(ranking: pd.DataFrame) -> str:
    best = ranking.iloc[0]
    text = (
        f"{best['region']} has the best data of {len(ranking)} region(s): "
        f"readiness {best['score']:.1f}, weighted by rows over its "
        f"{best['units']} business unit(s)"
    )
    if len(ranking) > 1:
        others = ", ".join(
            f"{r.region} {r.score:.1f}" for r in ranking.iloc[1:].itertuples()
        )
        text += f", ahead of {others}"
    return text + "."


def _tie_reason(best: pd.Series, second: pd.Series) -> str | None:
    """Explain which criterion put `best` ahead of `second` when their scores tie."""
    if best["eligible"] != second["eligible"] or best["score"] != second["score"]:
        return None
    lead = (
        f"{best['region']} and {second['region']} tie at {best['score']:.1f}; "
        f"{best['region']} comes first on"
    )
    history = [min(row["months"], HISTORY_MONTHS) for row in (best, second)]
    if history[0] != history[1]:
        return (
            f"{lead} history: {best['months']:.1f} against "
            f"{second['months']:.1f} months."
        )
    same_history = (
        f"history counts up to {HISTORY_MONTHS} months and both have that"
        if history[0] == HISTORY_MONTHS
        else "history ties"
    )
    if best["rows"] != second["rows"]:
        return (
            f"{lead} volume: {best['rows']:,} against {second['rows']:,} rows "
            f"({same_history})."
        )
    return f"{lead} name order, as {same_history} and volume ties too."
