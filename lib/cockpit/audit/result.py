"""The result of one audit: one table per family of checks and a summary."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pandas as pd

from cockpit.audit.common import FAIL, OK, WARN
from cockpit.scope import Scope


@dataclass(frozen=True)
class AuditResult:
    """Findings of one audit; every field but `scope` and `as_of` is a DataFrame."""

    scope: Scope
    as_of: date | None
    summary: pd.DataFrame
    completeness: pd.DataFrame
    duplicates: pd.DataFrame
    orphans: pd.DataFrame
    freshness: pd.DataFrame
    missing_links: pd.DataFrame
    categories: pd.DataFrame
    quarantine: pd.DataFrame
    load_balance: pd.DataFrame
    readiness: pd.DataFrame
    validity: pd.DataFrame
    outliers: pd.DataFrame
    linkage: pd.DataFrame

    @property
    def status(self) -> str:
        """Worst status in the summary: fail, warn or ok."""
        statuses = set(self.summary["status"])
        for level in (FAIL, WARN):
            if level in statuses:
                return level
        return OK

    def failures(self) -> pd.DataFrame:
        """Summary rows whose status is warn or fail, worst first."""
        bad = self.summary[self.summary["status"] != OK]
        order = bad["status"].map({FAIL: 0, WARN: 1})
        return bad.assign(_order=order).sort_values("_order").drop(columns="_order")
