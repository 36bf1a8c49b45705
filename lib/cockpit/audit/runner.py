"""Run every audit check on a mart, for the whole company or one slice."""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb

from cockpit.audit.checks import (
    check_completeness,
    check_freshness,
    check_load_balance,
    count_quarantine,
    find_category_variants,
    find_duplicates,
    find_missing_links,
    find_orphans,
)
from cockpit.audit.common import mart_as_of
from cockpit.audit.readiness import score_readiness
from cockpit.audit.result import AuditResult
from cockpit.audit.summary import summarise
from cockpit.audit.validity import check_validity, find_outliers
from cockpit.linking import current_links, linkage_rates
from cockpit.mart import connect, get_meta
from cockpit.scope import Scope

logger = logging.getLogger(__name__)


def run_audit(
    mart: str | Path, region: str | None = None, business_unit: str | None = None
) -> AuditResult:
    """Audit the mart file `mart`, for one region and business unit if given.

    Opens the mart read-only. Raises MartError when the file does not exist
    or another process holds its write lock.
    """
    scope = Scope(region=region, business_unit=business_unit)
    with connect(mart, read_only=True) as con:
        result = audit_connection(con, scope)
    logger.info(
        "audit of %s (%s): %d checks, status %s",
        mart,
        scope.label(),
        len(result.summary),
        result.status,
    )
    return result


def audit_connection(
    con: duckdb.DuckDBPyConnection, scope: Scope | None = None
) -> AuditResult:
    """Run every check on the open mart `con` within `scope` (default: company).

    Reads only, so `con` may be read-only. Linkage uses the mart's link
    tables, or matches proposed on the fly when `cockpit.linking.link_mart`
    has not run yet.
    """
    scope = scope or Scope()
    as_of = mart_as_of(con)
    currency = get_meta(con).get("currency")
    links = current_links(con)
    parts = {
        "completeness": check_completeness(con, scope),
        "duplicates": find_duplicates(con, scope),
        "orphans": find_orphans(con, scope),
        "freshness": check_freshness(con, scope, as_of),
        "missing_links": find_missing_links(con, scope),
        "categories": find_category_variants(con, scope),
        "quarantine": count_quarantine(con, scope),
        "load_balance": check_load_balance(con),
        "readiness": score_readiness(con, scope, as_of),
        "validity": check_validity(con, scope, as_of, currency),
        "outliers": find_outliers(con, scope),
        "linkage": linkage_rates(con, scope, by_cell=True, links=links),
    }
    summary = summarise(con, scope, as_of, links=links, **parts)
    return AuditResult(scope=scope, as_of=as_of, summary=summary, **parts)
