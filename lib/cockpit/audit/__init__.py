"""Data-quality audit of the mart, for the whole company or one slice.

`run_audit` opens a mart read-only and returns an `AuditResult`: one table
per family of checks plus a `summary` with one row per check and an
ok/warn/fail status. Each family is also a function of its own that takes an
open connection and a `Scope`, so a notebook for one region and business
unit can call only the checks it shows.

Scopes filter each table by the scope fields it carries: the fact tables by
all fields, accounts and reps by region, products by business unit, and
quarantined rows by the region and business unit written in their raw row.
External indicators and the load log are national or technical, so no scope
narrows them.

Modules:

- `checks`: completeness, duplicates, orphans, freshness, missing links,
  category variants, quarantine and row accounting.
- `validity`: validity rules and outliers.
- `readiness`: score per region x business unit.
- `pilot`: pilot recommendation.
- `status`: current status of the sources.
- `history`: audits kept per run in the mart.
- `summary`: one row per check.

Linkage between ERP and CRM comes from `cockpit.linking`.
"""

from cockpit.audit.checks import (
    check_completeness,
    check_freshness,
    check_load_balance,
    count_quarantine,
    find_category_variants,
    find_duplicates,
    find_missing_links,
    find_orphans,
    suggest_match,
)
from cockpit.audit.common import (
    AMOUNT_COLUMN,
    CATEGORY_COLUMNS,
    COMPLETE_FAIL,
    COMPLETE_OK,
    DATE_COLUMN,
    EXTERNAL_OK_DAYS,
    FACT_TABLES,
    FAIL,
    FRESH_FAIL_DAYS,
    FRESH_OK_DAYS,
    HISTORY_MONTHS,
    INDUSTRY_TERMS,
    KEY_COLUMNS,
    LINKS,
    MAX_FUZZY_VALUES,
    OK,
    ORPHAN_FAIL,
    READINESS_WEIGHTS,
    READY_FAIL,
    READY_OK,
    SCOPE_FIELDS,
    SIMILARITY,
    SNAPSHOT_DUPLICATES,
    SUMMARY_COLUMNS,
    WARN,
    mart_as_of,
    normalise,
    table_filter,
)
from cockpit.audit.history import (
    AUDIT_TABLE,
    audit_history,
    audit_table,
    save_audit,
)
from cockpit.audit.pilot import (
    PILOT_MIN_MONTHS,
    PILOT_MIN_ROWS,
    PilotRecommendation,
    rank_regions,
    recommend_pilot,
)
from cockpit.audit.readiness import explain_score, score_readiness
from cockpit.audit.result import AuditResult
from cockpit.audit.runner import audit_connection, run_audit
from cockpit.audit.status import AREAS, current_status, status_markdown
from cockpit.audit.summary import COMPANY_WIDE_TABLES, summarise
from cockpit.audit.validity import RULES, check_validity, find_outliers

__all__ = [
    "AMOUNT_COLUMN",
    "AREAS",
    "AUDIT_TABLE",
    "CATEGORY_COLUMNS",
    "COMPANY_WIDE_TABLES",
    "COMPLETE_FAIL",
    "COMPLETE_OK",
    "DATE_COLUMN",
    "EXTERNAL_OK_DAYS",
    "FACT_TABLES",
    "FAIL",
    "FRESH_FAIL_DAYS",
    "FRESH_OK_DAYS",
    "HISTORY_MONTHS",
    "INDUSTRY_TERMS",
    "KEY_COLUMNS",
    "LINKS",
    "MAX_FUZZY_VALUES",
    "OK",
    "ORPHAN_FAIL",
    "PILOT_MIN_MONTHS",
    "PILOT_MIN_ROWS",
    "READINESS_WEIGHTS",
    "READY_FAIL",
    "READY_OK",
    "RULES",
    "SCOPE_FIELDS",
    "SIMILARITY",
    "SNAPSHOT_DUPLICATES",
    "SUMMARY_COLUMNS",
    "WARN",
    "AuditResult",
    "PilotRecommendation",
    "audit_connection",
    "audit_history",
    "audit_table",
    "check_completeness",
    "check_freshness",
    "check_load_balance",
    "check_validity",
    "count_quarantine",
    "current_status",
    "explain_score",
    "find_category_variants",
    "find_duplicates",
    "find_missing_links",
    "find_orphans",
    "find_outliers",
    "mart_as_of",
    "normalise",
    "rank_regions",
    "recommend_pilot",
    "run_audit",
    "save_audit",
    "score_readiness",
    "status_markdown",
    "suggest_match",
    "summarise",
    "table_filter",
]
