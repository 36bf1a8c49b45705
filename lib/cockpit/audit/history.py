"""Audit results kept in the mart per run, so quality can be followed over time."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import duckdb
import pandas as pd

from cockpit.audit.common import SUMMARY_COLUMNS, _has_table
from cockpit.audit.result import AuditResult
from cockpit.errors import ParameterError

logger = logging.getLogger(__name__)

#: Table that keeps the summary of every saved audit.
AUDIT_TABLE = "audit_results"

#: Columns of AUDIT_TABLE and their types. The batch's publish step appends
#: the 01 notebook's results to the same table, by column name.
AUDIT_COLUMNS: dict[str, str] = {
    "run_id": "VARCHAR",
    "audited_at": "TIMESTAMP",
    "as_of": "DATE",
    "scope": "VARCHAR",
    "table": "VARCHAR",
    "check": "VARCHAR",
    "region": "VARCHAR",
    "business_unit": "VARCHAR",
    "value": "VARCHAR",
    "threshold": "VARCHAR",
    "status": "VARCHAR",
    "detail": "VARCHAR",
}

RUN_COLUMNS = [
    "run_id",
    "scope",
    "audited_at",
    "as_of",
    "checks",
    "ok",
    "warn",
    "fail",
    "readiness",
]


def audit_table(
    result: AuditResult, run_id: str, audited_at: datetime | None = None
) -> pd.DataFrame:
    """Return the audit's summary as rows of AUDIT_TABLE.

    Values and thresholds become text, because one column contains numbers,
    dates and names. `audited_at` defaults to the current UTC time.
    """
    audited_at = audited_at or datetime.now(timezone.utc).replace(tzinfo=None)
    frame = result.summary[SUMMARY_COLUMNS].copy()
    frame["value"] = [None if _blank(v) else str(v) for v in frame["value"]]
    frame["threshold"] = [None if _blank(v) else str(v) for v in frame["threshold"]]
    frame.insert(0, "run_id", run_id)
    frame.insert(1, "audited_at", pd.Timestamp(audited_at))
    frame.insert(2, "as_of", result.as_of)
    frame.insert(3, "scope", result.scope.label())
    return frame[list(AUDIT_COLUMNS)]


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value))


def create_audit_table(con: duckdb.DuckDBPyConnection) -> None:
    """Create AUDIT_TABLE, or add the columns an older copy of it lacks."""
    columns = ",\n".join(f'    "{name}" {kind}' for name, kind in AUDIT_COLUMNS.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS {AUDIT_TABLE} (\n{columns}\n)")
    for name, kind in AUDIT_COLUMNS.items():
        con.execute(
            f'ALTER TABLE {AUDIT_TABLE} ADD COLUMN IF NOT EXISTS "{name}" {kind}'
        )


def save_audit(
    con: duckdb.DuckDBPyConnection,
    result: AuditResult,
    run_id: str,
    audited_at: datetime | None = None,
) -> int:
    """Append the audit's summary to AUDIT_TABLE under `run_id`; return the rows written.

    `con` must be writable. Saving the same run and scope again replaces
    the earlier rows, so a repeated save does not count twice. Raises
    ParameterError when `run_id` is empty.
    """
    if not isinstance(run_id, str) or not run_id.strip():
        raise ParameterError(
            f"run_id {run_id!r} is empty; pass a name such as a timestamp"
        )
    frame = audit_table(result, run_id, audited_at)
    con.begin()
    try:
        create_audit_table(con)
        con.execute(
            f"DELETE FROM {AUDIT_TABLE} WHERE run_id = ? AND scope = ?",
            [run_id, result.scope.label()],
        )
        con.register("_audit_rows", frame)
        con.execute(f"INSERT INTO {AUDIT_TABLE} BY NAME SELECT * FROM _audit_rows")
        con.unregister("_audit_rows")
        con.commit()
    except duckdb.Error:
        con.rollback()
        raise
    logger.info(
        "saved %d audit row(s) of run %s (%s)",
        len(frame),
        run_id,
        result.scope.label(),
    )
    return len(frame)


def audit_history(
    con: duckdb.DuckDBPyConnection, check: str | None = None
) -> pd.DataFrame:
    """Return the saved audits, oldest first.

    Without `check`: one row per run and scope with the number of checks,
    how many are ok, warn and fail, and readiness (the mean readiness score
    of its region x business unit rows, 0-100). Columns: run_id, scope,
    audited_at, as_of, checks, ok, warn, fail, readiness.

    With `check` (e.g. "readiness score"): that check's rows of every run,
    with number (the value as a number, empty when it is not one). An
    empty frame means no audit was saved.
    """
    if not _has_table(con, AUDIT_TABLE):
        columns = RUN_COLUMNS if check is None else [*AUDIT_COLUMNS, "number"]
        return pd.DataFrame(columns=columns)
    if check is not None:
        return con.execute(
            f"""
            SELECT *, try_cast(value AS DOUBLE) AS number FROM {AUDIT_TABLE}
            WHERE "check" = ?
            ORDER BY audited_at, run_id, region NULLS FIRST,
                     business_unit NULLS FIRST, "table"
            """,
            [check],
        ).df()
    return con.execute(
        f"""
        SELECT run_id, scope, max(audited_at) AS audited_at, max(as_of) AS as_of,
               count(*) AS checks,
               count(*) FILTER (WHERE status = 'ok') AS ok,
               count(*) FILTER (WHERE status = 'warn') AS warn,
               count(*) FILTER (WHERE status = 'fail') AS fail,
               avg(try_cast(value AS DOUBLE))
                   FILTER (WHERE "check" = 'readiness score') AS readiness
        FROM {AUDIT_TABLE}
        GROUP BY run_id, scope
        ORDER BY audited_at, run_id, scope NULLS FIRST
        """
    ).df()
