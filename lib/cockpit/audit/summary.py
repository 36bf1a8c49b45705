"""Summary of an audit: one row per check with its status and detail."""

from __future__ import annotations

import json
import logging
import math
from datetime import date

import duckdb
import pandas as pd

from cockpit.audit.checks import _quarantine_filter
from cockpit.audit.common import (
    COMPLETE_FAIL,
    COMPLETE_OK,
    EXTERNAL_OK_DAYS,
    FAIL,
    FRESH_FAIL_DAYS,
    FRESH_OK_DAYS,
    KEY_COLUMNS,
    OK,
    ORPHAN_FAIL,
    READINESS_WEIGHTS,
    READY_FAIL,
    READY_OK,
    SNAPSHOT_DUPLICATES,
    SUMMARY_COLUMNS,
    WARN,
    _count,
)
from cockpit.audit.validity import (
    INVALID,
    INVALID_FAIL,
    NOTE,
    OUTLIER_MIN_FACTOR,
    OUTLIER_OK_SHARE,
    OUTLIER_Z,
)
from cockpit.ingest.superstore import ALTERNATE_NAMES_KEY
from cockpit.linking import (
    ERP_CUSTOMERS,
    ERP_REVENUE,
    REVIEW,
    Links,
    account_sides,
    default_review_dir,
)
from cockpit.mart import get_meta
from cockpit.scope import Scope

logger = logging.getLogger(__name__)


# --- summary ------------------------------------------------------------------


def summarise(
    con: duckdb.DuckDBPyConnection,
    scope: Scope,
    as_of: date | None,
    *,
    completeness: pd.DataFrame,
    duplicates: pd.DataFrame,
    orphans: pd.DataFrame,
    freshness: pd.DataFrame,
    missing_links: pd.DataFrame,
    categories: pd.DataFrame,
    quarantine: pd.DataFrame,
    load_balance: pd.DataFrame,
    readiness: pd.DataFrame,
    validity: pd.DataFrame | None = None,
    outliers: pd.DataFrame | None = None,
    linkage: pd.DataFrame | None = None,
    links: Links | None = None,
) -> pd.DataFrame:
    """Build the summary: one row per check.

    Each row has value, threshold, status (ok, warn, fail) and detail.
    validity, outliers, linkage and links are summarised when given.
    """
    add = _SummaryBuilder(scope)
    _summarise_meta(con, add, as_of)
    _summarise_loads(add, con, scope, load_balance, quarantine)
    _summarise_completeness(add, completeness)
    _summarise_duplicates(add, duplicates)
    _summarise_orphans(add, orphans)
    _summarise_missing_links(add, missing_links, completeness)
    _summarise_categories(add, categories)
    _summarise_freshness(add, freshness)
    if validity is not None:
        _summarise_validity(add, validity)
    if outliers is not None:
        _summarise_outliers(add, outliers)
    if linkage is not None:
        _summarise_linkage(add, con, linkage, links)
    for row in readiness.itertuples(index=False):
        status = _grade_high(row.score, READY_OK, READY_FAIL)
        parts = ", ".join(
            f"{name} {getattr(row, name):.0f}" for name in READINESS_WEIGHTS
        )
        explanation = getattr(row, "explanation", "")
        add(
            "readiness",
            "readiness score",
            row.score,
            f">= {READY_OK:.0f} ok, < {READY_FAIL:.0f} fail",
            status,
            parts
            + (f"; weakest: {row.weakest}" if row.weakest else "")
            + (f"; {explanation}" if explanation else ""),
            region=row.region,
            business_unit=row.business_unit,
        )
    return add.frame()


#: Tables whose checks cover the whole mart whatever the scope.
COMPANY_WIDE_TABLES = ("mart_meta", "load_log", "external")


class _SummaryBuilder:
    """Collects summary rows; region and unit default to the audit's scope.

    Rows of COMPANY_WIDE_TABLES, and rows added with company_wide=True,
    leave region and unit empty because no scope narrows them.
    """

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.rows: list[dict] = []

    def __call__(
        self,
        table: str,
        check: str,
        value: object,
        threshold: str,
        status: str,
        detail: str = "",
        *,
        region: str | None = None,
        business_unit: str | None = None,
        company_wide: bool = False,
    ) -> None:
        if not company_wide and table not in COMPANY_WIDE_TABLES:
            region = region or self.scope.region
            business_unit = business_unit or self.scope.business_unit
        self.rows.append(
            {
                "table": table,
                "check": check,
                "region": region,
                "business_unit": business_unit,
                "value": value,
                "threshold": threshold,
                "status": status,
                "detail": detail,
            }
        )

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=SUMMARY_COLUMNS)


def _grade_high(value: float, ok: float, fail: float) -> str:
    """Return the status of a measure where higher is better."""
    if value >= ok:
        return OK
    return WARN if value >= fail else FAIL


def _grade_low(value: float, ok: float, fail: float) -> str:
    """Return the status of a measure where lower is better."""
    if value <= ok:
        return OK
    return WARN if value <= fail else FAIL


def _summarise_meta(con, add: _SummaryBuilder, as_of: date | None) -> None:
    meta = get_meta(con)
    add(
        "mart_meta",
        "as-of date",
        as_of.isoformat() if as_of else None,
        "set",
        OK if meta.get("as_of") else WARN,
        "" if meta.get("as_of") else "as_of missing; derived from the latest fact date",
    )
    for key, value in sorted(meta.items()):
        if not key.startswith(ALTERNATE_NAMES_KEY) or not value:
            continue
        table = key[len(ALTERNATE_NAMES_KEY) :]
        alternates = json.loads(value)
        examples = "; ".join(
            f"{k}: also {' / '.join(v)}" for k, v in list(alternates.items())[:3]
        )
        add(
            table,
            "IDs with several names",
            len(alternates),
            "0",
            WARN if alternates else OK,
            f"first name kept; e.g. {examples}" if examples else "",
            company_wide=True,
        )


def _summarise_loads(
    add: _SummaryBuilder,
    con: duckdb.DuckDBPyConnection,
    scope: Scope,
    load_balance: pd.DataFrame,
    quarantine: pd.DataFrame,
) -> None:
    unbalanced = load_balance[~load_balance["balanced"].astype(bool)]
    add(
        "load_log",
        "rows read = loaded + quarantined",
        len(unbalanced),
        "0 unbalanced loads",
        OK if unbalanced.empty else FAIL,
        f"{len(load_balance)} loads checked"
        + (
            f"; unbalanced: {', '.join(unbalanced['load_id'])}"
            if len(unbalanced)
            else ""
        ),
    )
    inconsistent = load_balance[~load_balance["consistent"].astype(bool)]
    add(
        "load_log",
        "quarantined rows match quarantine table",
        len(inconsistent),
        "0 loads",
        OK if inconsistent.empty else FAIL,
        ", ".join(inconsistent["load_id"]),
    )
    clauses, params = _quarantine_filter(scope)
    bad_lines = dict(
        con.execute(
            f"""
            SELECT table_name, count(DISTINCT load_id || ':' || line)
            FROM quarantine WHERE {clauses} GROUP BY table_name
            """,
            params,
        ).fetchall()
    )
    for table in sorted(set(load_balance["table"])):
        bad = int(bad_lines.get(table, 0))
        # Rows loaded are the rows now in the table, so read = in table + quarantined.
        total = _count(con, table, scope) + bad
        share = bad / total if total else 0.0
        reasons = quarantine[quarantine["table"] == table]
        detail = "; ".join(
            f"{r.reason} ({r.column}): {r.rows}" for r in reasons.head(4).itertuples()
        )
        add(
            table,
            "rows quarantined",
            bad,
            "0 ok, >= 5% of rows read fail",
            OK if bad == 0 else (FAIL if share >= 0.05 else WARN),
            f"{bad} of {total} rows read" + (f"; {detail}" if detail else ""),
        )


def _summarise_completeness(add, completeness: pd.DataFrame) -> None:
    threshold = f">= {COMPLETE_OK:.0%} ok, < {COMPLETE_FAIL:.0%} fail"
    for row in completeness.itertuples(index=False):
        if row.column not in KEY_COLUMNS.get(row.table, ()):
            continue
        if row.non_empty == 0:
            status, detail = WARN, "no loaded export provides this column"
        else:
            status = _grade_high(row.share, COMPLETE_OK, COMPLETE_FAIL)
            detail = f"{row.non_empty} of {row.rows} rows"
        add(
            row.table,
            f"{row.column} filled",
            round(row.share, 4),
            threshold,
            status,
            detail,
        )


def _summarise_duplicates(add, duplicates: pd.DataFrame) -> None:
    for row in duplicates.itertuples(index=False):
        if row.check == SNAPSHOT_DUPLICATES:
            # The opportunities key row already counts these; snapshots stay in detail.
            continue
        bad = FAIL if row.check == "duplicate key" else WARN
        add(
            row.table,
            row.check,
            row.duplicate_keys,
            "0",
            OK if row.duplicate_keys == 0 else bad,
            f"key {row.key}; {row.extra_rows} extra rows"
            + (f"; {row.detail}" if row.detail else ""),
        )


def _summarise_orphans(add, orphans: pd.DataFrame) -> None:
    for (table, column), group in orphans.groupby(["table", "column"], sort=True):
        rows = int(group["rows"].sum())
        share = float(group["share"].sum())
        examples = "; ".join(
            f"{r.key}" + (f" -> {r.suggestion} ({r.match})" if r.suggestion else "")
            for r in group.head(5).itertuples()
        )
        add(
            table,
            f"{column} not in {group['dimension'].iloc[0]}",
            len(group),
            f"0 keys ok, >= {ORPHAN_FAIL:.0%} of rows fail",
            FAIL if share >= ORPHAN_FAIL else WARN,
            f"{rows} rows ({share:.1%}); {examples}",
        )


def _summarise_missing_links(
    add, missing: pd.DataFrame, completeness: pd.DataFrame
) -> None:
    filled = completeness.set_index(["table", "column"])["non_empty"]
    for row in missing.itertuples(index=False):
        # A column no export provides is reported once, by the completeness check.
        if row.rows == 0 or filled.get((row.table, row.link), 1) == 0:
            continue
        label = f"{row.status} " if row.status else ""
        amount = "" if pd.isna(row.amount) else f", value {row.amount:,.2f}"
        add(
            row.table,
            f"{label}rows without {row.link}",
            row.rows,
            f"0 ok, < {COMPLETE_FAIL:.0%} filled fail",
            FAIL if 1 - row.share < COMPLETE_FAIL else WARN,
            f"{row.rows} of {row.of_rows} rows ({row.share:.1%}){amount}",
        )


def _summarise_categories(add, categories: pd.DataFrame) -> None:
    for row in categories.itertuples(index=False):
        add(
            row.table,
            f"{row.column} spelling variant",
            row.value,
            "no variants",
            WARN,
            f"{row.value!r} ({row.rows} rows) looks like {row.likely!r} "
            f"({row.likely_rows} rows): {row.basis}, similarity {row.similarity:.2f}",
        )


def _summarise_freshness(add, freshness: pd.DataFrame) -> None:
    for row in freshness[freshness["table"] != "external"].itertuples(index=False):
        if row.days_behind is None or pd.isna(row.days_behind):
            continue
        add(
            row.table,
            "days behind as-of",
            int(row.days_behind),
            f"<= {FRESH_OK_DAYS} ok, > {FRESH_FAIL_DAYS} fail",
            _grade_low(row.days_behind, FRESH_OK_DAYS, FRESH_FAIL_DAYS),
            f"latest {row.date_column} {row.last_date}",
        )
    external = freshness[freshness["table"] == "external"]
    if external.empty:
        return
    stale = external[external["days_behind"] > EXTERNAL_OK_DAYS]
    names = ", ".join(
        f"{r.series} ends {r.last_date}" for r in stale.head(8).itertuples()
    )
    more = f" and {len(stale) - 8} more" if len(stale) > 8 else ""
    add(
        "external",
        "indicators ending before as-of",
        len(stale),
        f"0 ending more than {EXTERNAL_OK_DAYS} days before as-of",
        WARN if len(stale) else OK,
        f"{len(stale)} of {len(external)} indicators"
        + (f": {names}{more}" if names else ""),
    )


def _cell_name(region: object, unit: object) -> str:
    names = [str(v) for v in (region, unit) if v is not None and not pd.isna(v)]
    return " / ".join(names)


def _summarise_validity(add, validity: pd.DataFrame) -> None:
    for (table, rule, severity), group in validity.groupby(
        ["table", "rule", "severity"], sort=False
    ):
        rows = int(group["rows"].sum())
        total = int(group["of_rows"].sum())
        share = rows / total if total else 0.0
        if severity == INVALID:
            threshold = f"0 ok, >= {INVALID_FAIL:.0%} of rows fail"
            status = OK if rows == 0 else (FAIL if share >= INVALID_FAIL else WARN)
        elif severity == NOTE:
            threshold, status = "reported only", OK
        else:
            threshold, status = "0 ok", OK if rows == 0 else WARN
        detail = f"{rows} of {total} rows ({share:.1%})"
        amount = group["amount"].dropna()
        if rows and len(amount):
            detail += f", value {amount.sum():,.2f}"
        hit = group[group["rows"] > 0]
        if len(hit) and len(group) > 1:
            worst = hit.sort_values("rows", ascending=False, kind="stable").iloc[0]
            cell = _cell_name(worst["region"], worst["business_unit"])
            if cell:
                detail += f"; most in {cell} ({int(worst['rows'])})"
        examples = hit["example"].dropna()
        if len(examples):
            detail += f"; e.g. {examples.min()}"
        add(table, rule, rows, threshold, status, detail)


def _distance(ratios: pd.Series) -> pd.Series:
    """Return how far each value-to-median ratio is from 1, on the log scale."""
    return ratios.map(lambda r: abs(math.log(r)) if r and r > 0 else 0.0)


def _summarise_outliers(add, outliers: pd.DataFrame) -> None:
    for (table, column), group in outliers.groupby(["table", "column"], sort=False):
        flagged = int(group["outliers"].sum())
        values = int(group["values"].sum())
        share = flagged / values if values else 0.0
        detail = (
            f"{flagged} of {values} values at least {OUTLIER_MIN_FACTOR:.0f} times "
            "off the median of their product or region x business unit, with a "
            f"robust z-score over {OUTLIER_Z} on the log scale"
        )
        hit = group[group["outliers"] > 0]
        if len(hit):
            top = hit.assign(
                _ratio=hit["example_value"] / hit["example_median"]
            ).sort_values("_ratio", ascending=False, key=_distance, kind="stable")
            top = top.iloc[0]
            cell = _cell_name(top["region"], top["business_unit"])
            detail += (
                f"; farthest: {top['example']} with {top['example_value']:,.2f} "
                f"against a median of {top['example_median']:,.2f}"
                + (f" in {cell}" if cell else "")
            )
        add(
            table,
            f"{column} outliers",
            flagged,
            f"<= {OUTLIER_OK_SHARE:.0%} of values ok",
            OK if share <= OUTLIER_OK_SHARE else WARN,
            detail,
        )


#: Linked share at or above which a linkage measure is ok, and below which
#: it fails.
LINKED_OK, LINKED_FAIL = 0.95, 0.8

#: Summary table of each linkage measure.
_LINKAGE_TABLE = {ERP_REVENUE: "account_links", ERP_CUSTOMERS: "account_links"}


def _summarise_linkage(add, con, linkage: pd.DataFrame, links: Links | None) -> None:
    crm_accounts = None
    for measure, group in linkage.groupby("measure", sort=False):
        numerator = float(group["numerator"].sum())
        denominator = float(group["denominator"].sum())
        if not denominator:
            continue
        share = numerator / denominator
        unit = group["unit"].iloc[0]
        if unit == "revenue":
            detail = f"{numerator:,.2f} of {denominator:,.2f}"
        else:
            detail = f"{numerator:,.0f} of {denominator:,.0f} rows"
        status = _grade_high(share, LINKED_OK, LINKED_FAIL)
        table = _LINKAGE_TABLE.get(measure, "opportunities")
        if table == "account_links":
            if crm_accounts is None:
                crm_accounts = len(account_sides(con)[1])
            if crm_accounts == 0:
                status = WARN
                detail += "; the mart has no CRM accounts to link to"
        if links is not None:
            detail += f"; {links.basis} links"
        add(
            table,
            measure,
            round(share, 4),
            f">= {LINKED_OK:.0%} ok, < {LINKED_FAIL:.0%} fail",
            status,
            detail,
        )
    if links is not None:
        _summarise_pending(add, links)


def _summarise_pending(add, links: Links) -> None:
    folder = default_review_dir()
    for table, frame, name in (
        ("account_links", links.accounts, "account_matches.csv"),
        ("product_links", links.products, "product_matches.csv"),
    ):
        if frame.empty:
            continue
        pending = int((frame["status"] == REVIEW).sum())
        if links.basis == "proposed":
            where = (
                "links proposed on the fly; run cockpit.linking.link_mart to "
                f"store them and write {folder / name}"
            )
        else:
            where = f"decide them in {folder / name}"
        add(
            table,
            "matches waiting for review",
            pending,
            "0",
            OK if pending == 0 else WARN,
            f"{pending} of {len(frame)} matches; {where}",
            company_wide=True,
        )
