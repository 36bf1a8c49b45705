"""Current status of the mart: which sources are present, how good, what is missing."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import duckdb
import pandas as pd

from cockpit.audit.common import FAIL, KEY_COLUMNS, OK, WARN, _has_table
from cockpit.audit.result import AuditResult
from cockpit.linking import ERP_REVENUE, account_sides, linked_share

logger = logging.getLogger(__name__)

MISSING, NOT_NEEDED = "missing", "not needed"
EASY, MEDIUM = "easy", "medium"


@dataclass(frozen=True)
class Area:
    """One kind of data the cockpit uses, the table it lands in, and how to add it."""

    name: str
    table: str
    period: tuple[str, str] | None
    addition: str
    effort: str


AREAS: tuple[Area, ...] = (
    Area(
        "ERP invoice lines",
        "transactions",
        ("date", "date"),
        "load the ERP's invoice-line export (customer, product, date, net "
        "amount per line) with a source YAML file",
        MEDIUM,
    ),
    Area(
        "CRM opportunities",
        "opportunities",
        ("created_date", "snapshot_date"),
        "export the CRM's opportunity report (one row per deal with stage, "
        "amount, account and owner) and map it with a source YAML file",
        EASY,
    ),
    Area(
        "Customer accounts",
        "accounts",
        None,
        "export the customer master with region and industry",
        EASY,
    ),
    Area(
        "Products",
        "products",
        None,
        "export the product list with product line and business unit",
        EASY,
    ),
    Area(
        "Sellers and managers",
        "reps",
        None,
        "export the seller list (CRM users or HR) with team, manager and region",
        EASY,
    ),
    Area(
        "Seller activities",
        "activities",
        ("date", "date"),
        "export the CRM's activity log (calls, visits, e-mails with date, "
        "seller and account) and map it with a source YAML file",
        EASY,
    ),
    Area(
        "Targets",
        "targets",
        ("period_start", "period_end"),
        "set targets with the 03 targets notebook, or load the current target sheet",
        EASY,
    ),
    Area(
        "External indicators",
        "external",
        ("date", "date"),
        "load public indicators, e.g. the monthly macro CSV files with "
        "`cockpit ingest macro <folder>`",
        EASY,
    ),
    Area(
        "Exchange rates",
        "fx_rates",
        ("date", "date"),
        "load dated rates from each source currency to the reporting currency",
        EASY,
    ),
)

#: Area name of the ERP-CRM account links, which no single table holds.
LINKS_AREA = "ERP-CRM account links"

STATUS_COLUMNS = [
    "area",
    "table",
    "present",
    "status",
    "rows",
    "sources",
    "first_date",
    "last_date",
    "findings",
    "gaps",
    "addition",
    "effort",
]

#: Findings listed per area in the status table.
MAX_FINDINGS = 3


def current_status(
    con: duckdb.DuckDBPyConnection, result: AuditResult | None = None
) -> pd.DataFrame:
    """Summarise which data the mart has, its quality, and what to add next.

    `result` is a company-wide audit of `con`; without it one is run. One
    row per area of AREAS plus the ERP-CRM account links. status is the
    worst audit status of the area's checks (ok, warn, fail), `missing` for
    an absent table the cockpit needs, or `not needed` (exchange rates when
    every amount is in the reporting currency, links when only one system
    is loaded). findings lists the worst checks, and gaps the key columns no
    loaded export fills. addition describes how to fill an absent area or
    its gaps, and effort how hard that is (easy or medium). Columns: area,
    table, present, status, rows, sources, first_date, last_date, findings,
    gaps, addition, effort.
    """
    if result is None:
        from cockpit.audit.runner import audit_connection

        result = audit_connection(con)
    rows = [_area_row(con, area, result) for area in AREAS]
    rows.append(_links_row(con, result))
    return pd.DataFrame(rows, columns=STATUS_COLUMNS)


def _area_row(con, area: Area, result: AuditResult) -> dict:
    rows = _rows(con, area.table)
    row = {
        "area": area.name,
        "table": area.table,
        "present": rows > 0,
        "rows": rows,
        "sources": _sources(con, area.table),
        "first_date": None,
        "last_date": None,
        "findings": "",
        "gaps": "",
        "addition": "",
        "effort": "",
    }
    if rows == 0:
        needed = area.table != "fx_rates" or _needs_rates(con)
        row["status"] = MISSING if needed else NOT_NEEDED
        if needed:
            row["addition"] = area.addition
            row["effort"] = area.effort
        else:
            row["findings"] = "every amount is in the reporting currency"
        return row
    if area.period:
        start, end = area.period
        first, last = con.execute(
            f"SELECT min({start}), max({end}) FROM {area.table}"
        ).fetchall()[0]
        row["first_date"], row["last_date"] = first, last
    checks = result.summary[result.summary["table"] == area.table]
    row["status"] = _worst(checks["status"])
    row["findings"] = _findings(checks)
    gaps = _gaps(result.completeness, area.table)
    if gaps:
        row["gaps"] = ", ".join(gaps)
        row["addition"] = f"map {', '.join(gaps)} from the export, if it has them"
        row["effort"] = MEDIUM
    return row


def _links_row(con, result: AuditResult) -> dict:
    erp, crm = account_sides(con)
    row = {
        "area": LINKS_AREA,
        "table": "account_links",
        "present": bool(len(erp) and len(crm)),
        "rows": 0,
        "sources": "",
        "first_date": None,
        "last_date": None,
        "findings": "",
        "gaps": "",
        "addition": "",
        "effort": "",
    }
    if not len(erp) or not len(crm):
        row["status"] = NOT_NEEDED
        row["findings"] = (
            f"only one system loaded: {len(erp)} ERP customer(s), "
            f"{len(crm)} CRM account(s)"
        )
        return row
    if _has_table(con, "account_links"):
        row["rows"] = int(
            con.execute("SELECT count(*) FROM account_links").fetchall()[0][0]
        )
    checks = result.summary[result.summary["table"] == "account_links"]
    row["status"] = _worst(checks["status"]) if len(checks) else OK
    row["findings"] = _findings(checks)
    share = linked_share(result.linkage, ERP_REVENUE)
    if share is not None:
        revenue = f"{share:.1%} of ERP revenue has a CRM account"
        row["findings"] = "; ".join(t for t in (revenue, row["findings"]) if t)
    if share is not None and share < 1.0:
        row["addition"] = (
            "run `cockpit.linking.link_mart` and decide the matches in "
            "parameters/review/account_matches.csv"
        )
        row["effort"] = EASY
    return row


def _rows(con, table: str) -> int:
    if not _has_table(con, table):
        return 0
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


def _sources(con, table: str) -> str:
    names = con.execute(
        "SELECT DISTINCT source FROM load_log WHERE table_name = ? ORDER BY 1",
        [table],
    ).fetchall()
    return ", ".join(name for (name,) in names)


def _needs_rates(con) -> bool:
    """True when some amount is in a currency other than the reporting one."""
    reporting = con.execute(
        "SELECT value FROM mart_meta WHERE key = 'currency'"
    ).fetchall()
    currencies = {
        currency
        for table in ("transactions", "opportunities")
        for (currency,) in con.execute(
            f"SELECT DISTINCT currency FROM {table} WHERE currency IS NOT NULL"
        ).fetchall()
    }
    if not currencies:
        return False
    return len(currencies) > 1 or not reporting or currencies != {reporting[0][0]}


def _worst(statuses: pd.Series) -> str:
    for level in (FAIL, WARN):
        if (statuses == level).any():
            return level
    return OK


def _findings(checks: pd.DataFrame) -> str:
    bad = checks[checks["status"] != OK]
    order = bad["status"].map({FAIL: 0, WARN: 1})
    bad = bad.assign(_order=order).sort_values("_order", kind="stable")
    texts = [f"{row.status}: {row.check} ({row.value})" for row in bad.itertuples()]
    more = len(texts) - MAX_FINDINGS
    shown = "; ".join(texts[:MAX_FINDINGS])
    return shown + (f"; and {more} more" if more > 0 else "")


def _gaps(completeness: pd.DataFrame, table: str) -> list[str]:
    rows = completeness[
        (completeness["table"] == table) & (completeness["non_empty"] == 0)
    ]
    return [c for c in rows["column"] if c in KEY_COLUMNS.get(table, ())]


def status_markdown(status: pd.DataFrame) -> str:
    """Render a `current_status` frame as Markdown: a table, then what to add.

    The table lists each area with status, rows, period and findings; the
    lists below name the missing areas and the additions marked easy.
    """
    lines = [
        "| area | status | rows | period | sources | findings |",
        "|---|---|---:|---|---|---|",
    ]
    for row in status.itertuples(index=False):
        period = (
            f"{row.first_date} to {row.last_date}"
            if row.first_date is not None and not pd.isna(row.first_date)
            else ""
        )
        findings = row.findings + (f"; not provided: {row.gaps}" if row.gaps else "")
        lines.append(
            f"| {row.area} | {row.status} | {row.rows:,} | {period} | "
            f"{row.sources} | {findings.replace('|', '/')} |"
        )
    missing = status[status["status"] == MISSING]
    easy = status[status["effort"] == EASY]
    lines.append("")
    lines.append(
        "**Missing:** "
        + (", ".join(missing["area"]) if len(missing) else "nothing the cockpit needs")
    )
    if len(easy):
        lines.append("")
        lines.append("**Easy additions:**")
        lines.extend(f"- {row.area}: {row.addition}" for row in easy.itertuples())
    return "\n".join(lines) + "\n"
