"""Weekly huddle packs: a team's KPIs, deal changes and suggested actions.

A huddle pack covers one team and one ISO week (Monday to Sunday). It holds:

- the seven KPIs of `parameters/huddle.yaml`, each a KPI of the registry
  (cockpit.kpi) with this week's value, last week's value and the change.
  Every value of a week is computed as the mart stood at that week's
  Sunday: flows up to that day, the pipeline from the last snapshot on or
  before it;
- each seller's top opportunities by amount, with what changed between the
  last snapshot of the previous week and the last snapshot of this week
  (new, won, lost, removed, stage, amount, expected close date);
- suggested actions from simple rules over those deals and the KPIs, and
  from the alert table of `cockpit.alerts` (the rules of
  `parameters/alerts.yaml` evaluated for the team at the week's Sunday).

`build_huddle` returns the pack as DataFrames, `render_huddle` turns it into
HTML or Markdown. The survey after the huddle lives in `cockpit.survey`.
"""

from __future__ import annotations

import html
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import numpy as np
import pandas as pd
import yaml

from cockpit.alerts import evaluate_alerts, load_rules
from cockpit.errors import HuddleError, ParameterError
from cockpit.kpi import KPIS, compute_kpi, format_value, kpi_values
from cockpit.kpi_periods import PERIODS as KPI_PERIODS
from cockpit.kpi_periods import resolve_period
from cockpit.mart import get_meta, require_tables
from cockpit.params import _describe, _error_order, _key_path, _Loader
from cockpit.paths import PARAMETERS_DIR
from cockpit.review import parse_as_of
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: File read when `load_huddle_settings` gets no path.
DEFAULT_HUDDLE_FILE = PARAMETERS_DIR / "huddle.yaml"

#: Number of KPIs every pack shows.
HUDDLE_KPI_COUNT = 7

#: Periods of the KPI registry (cockpit.kpi_periods), each read at the
#: Sunday of the week so that flows are counted up to that day. They are the
#: week itself, its month, quarter or year to date, the year to date, and
#: the 12 months to that Sunday. Target KPIs (target, attainment_pct) use
#: the target of the whole month, quarter or year.
REGISTRY_PERIODS = tuple(KPI_PERIODS)

#: Registry periods that start afresh each month, quarter or year. When the
#: two weeks of a pack fall in different such periods, their values are not
#: comparable and the line's direction is "new period".
RESETTING_PERIODS = ("month", "quarter", "year", "ytd")

#: Days of the huddle's own rolling periods, the Sunday of the week included.
ROLLING_DAYS = {"rolling_4_weeks": 28, "rolling_13_weeks": 91}

#: Periods a huddle KPI can be read over. to_date counts every row up to
#: the Sunday of the week. Use it for pipeline KPIs, because they are read
#: from the last snapshot on or before that Sunday whatever the period.
PERIODS = (*REGISTRY_PERIODS, *ROLLING_DAYS, "to_date")

#: Priority of each rule's actions: 1 is the most urgent.
RULE_PRIORITY = {
    "slipped": 1,
    "overdue": 1,
    "stale": 2,
    "no_visits": 2,
    "kpi_worse": 2,
    "loss_review": 3,
}


# --- settings ----------------------------------------------------------------


@dataclass(frozen=True)
class HuddleKpi:
    """One KPI line of the pack: a KPI of the registry over a period."""

    name: str
    label: str
    kpi: str
    period: str

    @property
    def unit(self) -> str:
        """Unit of the value, as in cockpit.kpi.UNITS."""
        return KPIS[self.kpi].unit

    @property
    def higher_is_better(self) -> bool:
        """True when a rise of the value is good news."""
        return KPIS[self.kpi].higher_is_better


@dataclass(frozen=True)
class HuddleRules:
    """Thresholds of the rules that suggest actions."""

    slipped_times: int = 2
    stale_weeks: int = 8
    min_customer_visits: int = 1
    kpi_drop_pct: float = 0.1
    review_losses_from: float = 0.0


@dataclass(frozen=True)
class HuddleSettings:
    """Checked contents of a huddle parameter file."""

    kpis: tuple[HuddleKpi, ...]
    top_opportunities: int = 3
    max_actions: int = 20
    stage_order: tuple[str, ...] | None = None
    rules: HuddleRules = field(default_factory=HuddleRules)
    source: Path | None = None


_KPI_ENTRY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "kpi", "period"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": r"^[a-z][a-z0-9_]*$",
            "description": "lower-case id with letters, digits and _",
        },
        "label": {"type": "string", "minLength": 1},
        "kpi": {"type": "string", "minLength": 1},
        "period": {"enum": list(PERIODS)},
    },
}

#: JSON Schema of a huddle parameter file.
SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kpis"],
    "properties": {
        "kpis": {
            "type": "array",
            "minItems": HUDDLE_KPI_COUNT,
            "maxItems": HUDDLE_KPI_COUNT,
            "items": _KPI_ENTRY_SCHEMA,
        },
        "top_opportunities": {"type": "integer", "minimum": 1, "maximum": 50},
        "max_actions": {"type": "integer", "minimum": 1, "maximum": 500},
        "stage_order": {
            "type": ["array", "null"],
            "items": {"type": "string", "minLength": 1},
            "uniqueItems": True,
        },
        "rules": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "properties": {
                "slipped_times": {"type": "integer", "minimum": 1},
                "stale_weeks": {"type": "integer", "minimum": 1},
                "min_customer_visits": {"type": "integer", "minimum": 0},
                "kpi_drop_pct": {"type": "number", "minimum": 0},
                "review_losses_from": {"type": "number", "minimum": 0},
            },
        },
    },
}


def load_huddle_settings(path: str | Path | None = None) -> HuddleSettings:
    """Read and check a huddle parameter file; `parameters/huddle.yaml` by default.

    Raises ParameterError naming the file, the key and what was expected,
    for every problem found. Problems are a missing file, invalid YAML, an
    unknown key, a value of the wrong type or range, a KPI the registry
    lacks, or a name used twice.
    """
    path = Path(path) if path is not None else DEFAULT_HUDDLE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ParameterError(
            f"huddle parameter file {path} not found; pass an existing YAML file "
            f"or restore {DEFAULT_HUDDLE_FILE}"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError(
            f"cannot read huddle parameter file {path}: {exc}; save it as UTF-8 text"
        ) from exc
    try:
        document = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ParameterError(
            f"{path}: invalid YAML: {exc}; fix the syntax (indent with spaces, "
            "one `key: value` per line)"
        ) from exc
    return parse_huddle_settings(document, path)


def parse_huddle_settings(
    document: Mapping[str, Any] | None, path: str | Path = "<settings>"
) -> HuddleSettings:
    """Check a parsed huddle parameter mapping and return its settings.

    `path` only names the source in error messages. Raises ParameterError
    as `load_huddle_settings` does.
    """
    if document is None:
        document = {}
    problems = _schema_problems(document, SETTINGS_SCHEMA, path)
    if problems:
        raise ParameterError("\n".join(problems))

    kpis = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(document["kpis"]):
        where = f"{path}: kpis[{index}]"
        name, kpi, period = entry["name"], entry["kpi"], entry["period"]
        if name in seen:
            problems.append(
                f"{where}.name: expected a name not used before, found {name!r} "
                f"(also kpis[{seen[name]}])"
            )
        seen[name] = index
        if kpi not in KPIS:
            problems.append(
                f"{where}.kpi: expected a KPI of the registry ({', '.join(KPIS)}), "
                f"found {kpi!r}"
            )
            continue
        label = entry.get("label") or KPIS[kpi].label
        kpis.append(HuddleKpi(name, label, kpi, period))
    if problems:
        raise ParameterError("\n".join(problems))

    rules = document.get("rules") or {}
    stage_order = document.get("stage_order")
    return HuddleSettings(
        kpis=tuple(kpis),
        top_opportunities=document.get("top_opportunities", 3),
        max_actions=document.get("max_actions", 20),
        stage_order=tuple(stage_order) if stage_order else None,
        rules=HuddleRules(**rules),
        source=Path(path) if not str(path).startswith("<") else None,
    )


def _schema_problems(
    document: Any, schema: Mapping[str, Any], path: str | Path
) -> list[str]:
    """Check `document` against `schema`; return one message per problem."""
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(document), key=_error_order):
        key = _key_path(error.absolute_path)
        if error.validator == "required":
            missing = error.message.split("'")[1]
            problems.append(f"{path}: {key}: missing required key {missing!r}")
        elif error.validator == "enum":
            allowed = ", ".join(map(str, error.validator_value))
            problems.append(
                f"{path}: {key}: expected one of {allowed}, found {error.instance!r}"
            )
        elif error.validator == "maxItems":
            problems.append(
                f"{path}: {key}: expected at most {error.validator_value} "
                f"item(s), found {len(error.instance)}"
            )
        else:
            problems.append(_describe(error, path))
    return problems


# --- weeks -------------------------------------------------------------------

_WEEK_LABEL = re.compile(r"^(\d{4})-[Ww](\d{2})$")


def parse_week(value: str | date | datetime | pd.Timestamp) -> date:
    """Return the Monday of a week given as a Monday or an ISO week label.

    Accepts a date, datetime or Timestamp that falls on a Monday, the text
    of such a date (YYYY-MM-DD), or an ISO week label such as 2026-W39.
    Raises HuddleError for any other value.
    """
    if isinstance(value, str):
        text = value.strip()
        match = _WEEK_LABEL.match(text)
        if match:
            year, week = int(match.group(1)), int(match.group(2))
            try:
                return date.fromisocalendar(year, week, 1)
            except ValueError as exc:
                raise HuddleError(
                    f"invalid week label {value!r}: {year} has no ISO week {week}; "
                    "give a week such as 2026-W39 or the Monday's date"
                ) from exc
        try:
            day = date.fromisoformat(text)
        except ValueError as exc:
            raise HuddleError(
                f"invalid week {value!r}; give an ISO week label such as 2026-W39 "
                "or a Monday as YYYY-MM-DD"
            ) from exc
    elif isinstance(value, datetime | pd.Timestamp):
        day = value.date()
    elif isinstance(value, date):
        day = value
    else:
        raise HuddleError(
            f"invalid week {value!r} ({type(value).__name__}); give an ISO week "
            "label such as 2026-W39 or a Monday as a date"
        )
    if day.weekday() != 0:
        monday = day - timedelta(days=day.weekday())
        raise HuddleError(
            f"week {day} is a {day:%A}, not a Monday; give the Monday {monday} "
            f"or the label {week_label(monday)}"
        )
    return day


def week_label(monday: date) -> str:
    """Return the ISO week label of a date, such as 2026-W39."""
    year, week, _ = monday.isocalendar()
    return f"{year}-W{week:02d}"


def latest_complete_week(con: duckdb.DuckDBPyConnection) -> date:
    """Return the Monday of the last week whose Sunday is on or before the as-of date.

    The as-of date is the mart's (mart_meta key as_of), else its last
    invoice date.
    """
    as_of = parse_as_of(None, con)
    sunday = as_of - timedelta(days=(as_of.weekday() + 1) % 7)
    return sunday - timedelta(days=6)


# --- KPIs --------------------------------------------------------------------


def huddle_value(
    con: duckdb.DuckDBPyConnection,
    line: HuddleKpi,
    scope: Scope,
    week_start: date,
) -> float | None:
    """Compute one KPI line of the pack for the week starting `week_start`.

    The KPI is read with the week's Sunday as its as-of date, so pipeline
    KPIs use the last snapshot on or before it, and its period ends on that
    Sunday. Returns None when the value is undefined.
    """
    end = week_start + timedelta(days=6)
    if line.period in REGISTRY_PERIODS:
        values = kpi_values(con, [line.kpi], scope, as_of=end, period=line.period)
    elif line.period in ROLLING_DAYS:
        start = end - timedelta(days=ROLLING_DAYS[line.period] - 1)
        values = kpi_values(con, [line.kpi], scope, start=start, end=end, as_of=end)
    else:
        values = kpi_values(con, [line.kpi], scope, end=end, as_of=end)
    return values[line.kpi]


def _period_restarted(period: str, week_start: date) -> bool:
    """True when a to-date period starts between last week's and this week's Sunday."""
    if period not in RESETTING_PERIODS:
        return False
    sunday = week_start + timedelta(days=6)
    this_start = resolve_period(period, sunday).start
    last_start = resolve_period(period, sunday - timedelta(days=7)).start
    return this_start != last_start


def huddle_kpis(
    con: duckdb.DuckDBPyConnection,
    team: str,
    week_start: date,
    settings: HuddleSettings,
) -> pd.DataFrame:
    """Compute the pack's KPI lines for a team, this week and the week before.

    Returns one row per line in settings order, with columns name, label,
    kpi, period, unit, higher_is_better, this_week, last_week, change
    (this_week - last_week; NaN when either is undefined) and direction
    (better, worse, unchanged, n/a, or new period when a month, quarter or
    year to date started afresh between the two Sundays). Percent values and their change are
    fractions, so a change of 0.02 is 2 percentage points.
    """
    scope = Scope(team=team)
    last_week_start = week_start - timedelta(days=7)
    rows = []
    for line in settings.kpis:
        this_week = huddle_value(con, line, scope, week_start)
        last_week = huddle_value(con, line, scope, last_week_start)
        this_value = np.nan if this_week is None else this_week
        last_value = np.nan if last_week is None else last_week
        change = this_value - last_value
        if _period_restarted(line.period, week_start):
            direction = "new period"
        elif math.isnan(change):
            direction = "n/a"
        elif change == 0:
            direction = "unchanged"
        elif (change > 0) == line.higher_is_better:
            direction = "better"
        else:
            direction = "worse"
        rows.append(
            {
                "name": line.name,
                "label": line.label,
                "kpi": line.kpi,
                "period": line.period,
                "unit": line.unit,
                "higher_is_better": line.higher_is_better,
                "this_week": this_value,
                "last_week": last_value,
                "change": change,
                "direction": direction,
            }
        )
    return pd.DataFrame(rows)


# --- opportunities -----------------------------------------------------------


def pipeline_snapshot(con: duckdb.DuckDBPyConnection, day: date) -> date | None:
    """Return the latest snapshot date on or before `day` that has an open deal.

    Dates whose rows are all closed deals (the single rows some CRM exports
    keep for deals closed before snapshots began) do not count, so they are
    never compared with a full weekly snapshot. Returns None when there is
    no such snapshot.
    """
    row = con.execute(
        "SELECT max(snapshot_date) FROM opportunities "
        "WHERE status = 'open' AND snapshot_date <= ?",
        [day],
    ).fetchone()
    return row[0]


def derive_stage_order(con: duckdb.DuckDBPyConnection, as_of: date) -> list[str]:
    """Order the open stages by the mean age in days of the deals seen in them.

    Reads the open rows of snapshots on or before `as_of`. Deals reach later
    stages when they are older, so this recovers the funnel order from the
    data alone.
    """
    # NOTE: a stage that few deals pass through, or that old stale deals
    # crowd, can land out of place; set stage_order in huddle.yaml then.
    rows = con.execute(
        """
        SELECT stage FROM opportunities
        WHERE status = 'open' AND snapshot_date <= ? AND created_date IS NOT NULL
        GROUP BY stage
        ORDER BY avg(date_diff('day', created_date, snapshot_date)), stage
        """,
        [as_of],
    ).fetchall()
    return [row[0] for row in rows]


_CHANGE_COLUMNS = [
    "rep_id",
    "seller",
    "opportunity_id",
    "account_id",
    "account_name",
    "business_unit",
    "stage",
    "stage_before",
    "status",
    "status_before",
    "amount",
    "amount_before",
    "amount_change",
    "close_date",
    "close_date_before",
    "close_shift_days",
    "closed_date",
    "created_date",
    "is_new",
    "outcome",
    "stage_move",
    "slips",
    "weeks_in_stage",
    "change",
    "rank",
]


def opportunity_changes(
    con: duckdb.DuckDBPyConnection,
    team: str,
    snapshot: date | None,
    previous_snapshot: date | None,
    stage_order: Sequence[str] | None = None,
    currency: str = "EUR",
) -> pd.DataFrame:
    """Compare a team's deals between two pipeline snapshots.

    A deal is listed when its owner belongs to `team` and it is open in
    `snapshot`, or it closed since `previous_snapshot` (its closed_date is
    after that snapshot, or it was open there), or it was open in
    `previous_snapshot` and is missing from `snapshot` (outcome removed).

    Columns: rep_id, seller, opportunity_id, account_id, account_name,
    business_unit, the values now and before of stage, status, amount and
    close_date (the expected close date), amount_change, close_shift_days
    (days the expected close date moved; positive means it slipped),
    closed_date, created_date, is_new (absent from the previous snapshot),
    outcome (won, lost, removed or None), stage_move (advanced, moved back
    or None), slips (times the expected close date of the deal moved later
    between consecutive snapshots while it was open, up to `snapshot`),
    weeks_in_stage (whole weeks since the deal entered its current stage,
    counted from the first snapshot that shows it there), change (a short
    text) and rank (1 for the largest amount of each seller). Amounts are
    in the reporting currency; `currency` only labels them in `change`.
    """
    if snapshot is None:
        return pd.DataFrame(columns=_CHANGE_COLUMNS)
    # Without a previous snapshot, deals closed in the 7 days up to
    # `snapshot` count as closed this week.
    if previous_snapshot is None:
        closed_after = snapshot - timedelta(days=7)
    else:
        closed_after = previous_snapshot
    frame = con.execute(
        """
        WITH team_reps AS (SELECT rep_id, name FROM reps WHERE team = ?),
        cur AS (SELECT * FROM opportunities WHERE snapshot_date = ?),
        prev AS (SELECT * FROM opportunities WHERE snapshot_date = ?)
        SELECT
            COALESCE(c.rep_id, p.rep_id) AS rep_id,
            t.name AS seller,
            COALESCE(c.opportunity_id, p.opportunity_id) AS opportunity_id,
            COALESCE(c.account_id, p.account_id) AS account_id,
            a.name AS account_name,
            COALESCE(c.business_unit, p.business_unit) AS business_unit,
            c.stage, p.stage AS stage_before,
            c.status, p.status AS status_before,
            c.amount, p.amount AS amount_before,
            c.expected_close_date AS close_date,
            p.expected_close_date AS close_date_before,
            c.closed_date,
            COALESCE(c.created_date, p.created_date) AS created_date,
            p.opportunity_id IS NULL AS absent_before,
            c.opportunity_id IS NULL AS absent_now
        FROM cur c
        FULL OUTER JOIN prev p ON p.opportunity_id = c.opportunity_id
        JOIN team_reps t ON t.rep_id = COALESCE(c.rep_id, p.rep_id)
        LEFT JOIN accounts a ON a.account_id = COALESCE(c.account_id, p.account_id)
        WHERE c.status = 'open'
           OR (c.status IN ('won', 'lost')
               AND (p.status = 'open' OR (p.opportunity_id IS NULL AND c.closed_date > ?)))
           OR (c.opportunity_id IS NULL AND p.status = 'open')
        """,
        [team, snapshot, previous_snapshot, closed_after],
    ).df()
    if frame.empty:
        return pd.DataFrame(columns=_CHANGE_COLUMNS)

    has_previous = previous_snapshot is not None
    for column in ("close_date", "close_date_before", "closed_date", "created_date"):
        frame[column] = pd.to_datetime(frame[column])
    frame["amount_change"] = frame["amount"] - frame["amount_before"]
    frame["close_shift_days"] = (
        frame["close_date"] - frame["close_date_before"]
    ).dt.days.astype("float64")
    frame["is_new"] = frame["absent_before"] & has_previous
    frame["outcome"] = np.select(
        [
            frame["absent_now"],
            (frame["status"] == "won") & (frame["status_before"] != "won"),
            (frame["status"] == "lost") & (frame["status_before"] != "lost"),
        ],
        ["removed", "won", "lost"],
        default=None,
    )
    frame["outcome"] = (
        frame["outcome"].astype("object").where(frame["outcome"].notna(), None)
    )
    order = list(stage_order) if stage_order else derive_stage_order(con, snapshot)
    frame["stage_move"] = [
        _stage_move(before, now, order)
        for before, now in zip(frame["stage_before"], frame["stage"], strict=True)
    ]

    history = _deal_history(con, frame["opportunity_id"].tolist(), snapshot)
    frame = frame.merge(history, on="opportunity_id", how="left")
    frame["slips"] = frame["slips"].fillna(0).astype("int64")
    open_now = frame["status"] == "open"
    frame["weeks_in_stage"] = frame["weeks_in_stage"].where(open_now)

    frame["change"] = [
        _change_text(row, has_previous, currency)
        for row in frame.itertuples(index=False)
    ]
    frame["_amount"] = frame["amount"].fillna(frame["amount_before"])
    frame = frame.sort_values(
        ["rep_id", "_amount", "opportunity_id"],
        ascending=[True, False, True],
        na_position="last",
    )
    frame["rank"] = frame.groupby("rep_id").cumcount() + 1
    return frame[_CHANGE_COLUMNS].reset_index(drop=True)


def _stage_move(before: Any, now: Any, order: Sequence[str]) -> str | None:
    if pd.isna(before) or pd.isna(now) or before == now:
        return None
    if before not in order or now not in order:
        return None
    return "advanced" if order.index(now) > order.index(before) else "moved back"


def _deal_history(
    con: duckdb.DuckDBPyConnection, opportunity_ids: list[str], snapshot: date
) -> pd.DataFrame:
    """Count slips and weeks in the current stage from each deal's snapshot rows."""
    ids = pd.DataFrame({"opportunity_id": opportunity_ids})
    con.register("_huddle_ids", ids)
    try:
        rows = con.execute(
            """
            SELECT o.opportunity_id, o.snapshot_date, o.stage, o.status,
                   o.expected_close_date
            FROM opportunities o
            JOIN _huddle_ids i ON i.opportunity_id = o.opportunity_id
            WHERE o.snapshot_date <= ?
            ORDER BY o.opportunity_id, o.snapshot_date
            """,
            [snapshot],
        ).df()
    finally:
        con.unregister("_huddle_ids")
    if rows.empty:
        return pd.DataFrame(columns=["opportunity_id", "slips", "weeks_in_stage"])
    rows["expected_close_date"] = pd.to_datetime(rows["expected_close_date"])
    rows["snapshot_date"] = pd.to_datetime(rows["snapshot_date"])
    deal = rows.groupby("opportunity_id", sort=False)
    was_open = deal["status"].shift() == "open"
    moved_later = rows["expected_close_date"] > deal["expected_close_date"].shift()
    rows["slip"] = was_open & moved_later
    new_spell = rows["stage"] != deal["stage"].shift()
    rows["spell"] = new_spell.groupby(rows["opportunity_id"]).cumsum()
    last_spell = rows["spell"] == rows.groupby("opportunity_id")["spell"].transform(
        "max"
    )
    since = rows[last_spell].groupby("opportunity_id")["snapshot_date"].min()
    result = pd.DataFrame(
        {
            "slips": rows.groupby("opportunity_id")["slip"].sum(),
            "weeks_in_stage": (pd.Timestamp(snapshot) - since).dt.days // 7,
        }
    )
    return result.reset_index()


def _change_text(row: Any, has_previous: bool, currency: str) -> str:
    """Describe in a few words how a deal changed between the two snapshots."""
    if not has_previous:
        return "no earlier snapshot to compare with"
    if row.outcome == "removed":
        return "no longer in the pipeline snapshot"
    parts = []
    if row.is_new:
        parts.append("new")
    if row.outcome in ("won", "lost"):
        parts.append(row.outcome)
    elif not row.is_new and row.stage != row.stage_before:
        move = f" ({row.stage_move})" if row.stage_move else ""
        parts.append(f"stage {row.stage_before} → {row.stage}{move}")
    if not row.is_new and _differs(row.amount, row.amount_before):
        parts.append(
            f"amount {format_value(row.amount_before, 'currency', currency)} → "
            f"{format_value(row.amount, 'currency', currency)}"
        )
    if not row.is_new and _differs(row.close_date, row.close_date_before):
        days = int(row.close_shift_days) if not pd.isna(row.close_shift_days) else 0
        before = _day_text(row.close_date_before)
        parts.append(
            f"close date {before} → {_day_text(row.close_date)} ({days:+d} days)"
        )
    return "; ".join(parts) if parts else "no change"


def _differs(now: Any, before: Any) -> bool:
    if pd.isna(now) and pd.isna(before):
        return False
    if pd.isna(now) or pd.isna(before):
        return True
    return now != before


def _day_text(value: Any) -> str:
    return "none" if pd.isna(value) else f"{pd.Timestamp(value):%Y-%m-%d}"


# --- suggested actions -------------------------------------------------------

_ACTION_COLUMNS = ["priority", "rule", "rep_id", "seller", "opportunity_id", "action"]


def seller_visits(
    con: duckdb.DuckDBPyConnection,
    sellers: pd.DataFrame,
    team: str,
    week_start: date,
) -> pd.DataFrame:
    """Add each seller's customer visits in the week (the visits KPI) to `sellers`.

    `sellers` needs a rep_id column; a seller without visits gets 0.
    """
    counts = compute_kpi(
        con,
        "visits",
        by=["rep_id"],
        scope=Scope(team=team),
        start=week_start,
        end=week_start + timedelta(days=6),
    )
    result = sellers.merge(counts, on="rep_id", how="left")
    result["visits"] = result["visits"].fillna(0).astype("int64")
    return result


def suggest_actions(
    changes: pd.DataFrame,
    kpis: pd.DataFrame,
    sellers: pd.DataFrame,
    snapshot: date | None,
    settings: HuddleSettings,
    alerts: pd.DataFrame | None = None,
    currency: str = "EUR",
) -> pd.DataFrame:
    """Suggest actions for the huddle from the deal changes, KPIs and alerts.

    Rules, with thresholds from `settings.rules`:

    - slipped: an open deal whose close date moved later `slipped_times`
      times or more: agree a close plan;
    - overdue: an open deal whose expected close date is before `snapshot`;
    - stale: an open deal `stale_weeks` or more weeks in one stage;
    - no_visits: a seller with fewer than `min_customer_visits` visits;
    - kpi_worse: a KPI that got worse by `kpi_drop_pct` of last week's
      value or more;
    - loss_review: a deal lost this week with an amount of at least
      `review_losses_from`;
    - alert:<check>: one action per row of `alerts` (see `alert_actions`).
      An alert of check deal_slips or stale_deals on a deal replaces the
      slipped or stale action of that deal.

    `changes` is the frame of `opportunity_changes`, `kpis` that of
    `huddle_kpis` and `sellers` that of `seller_visits`. Returns columns
    priority (1 most urgent), rule, rep_id, seller, opportunity_id and
    action, sorted by priority, then deal amount (largest first), and cut
    to `settings.max_actions` rows.
    """
    rules = settings.rules
    rows: list[dict[str, Any]] = []

    def add(rule: str, deal: Any | None, text: str, rep_id=None, seller=None):
        rows.append(
            {
                "priority": RULE_PRIORITY[rule],
                "rule": rule,
                "rep_id": deal.rep_id if deal is not None else rep_id,
                "seller": deal.seller if deal is not None else seller,
                "opportunity_id": deal.opportunity_id if deal is not None else None,
                "action": text,
                "_amount": _amount_of(deal),
            }
        )

    for deal in changes.itertuples(index=False):
        name = _deal_name(deal)
        if deal.status == "open":
            if deal.slips >= rules.slipped_times:
                add(
                    "slipped",
                    deal,
                    f"{name} slipped {deal.slips} times and is now due "
                    f"{_day_text(deal.close_date)}: agree a close plan with the customer.",
                )
            if (
                snapshot is not None
                and not pd.isna(deal.close_date)
                and deal.close_date < pd.Timestamp(snapshot)
            ):
                add(
                    "overdue",
                    deal,
                    f"{name} was due {_day_text(deal.close_date)} and is still open: "
                    "update the close date or close the deal.",
                )
            if (
                not pd.isna(deal.weeks_in_stage)
                and deal.weeks_in_stage >= rules.stale_weeks
            ):
                add(
                    "stale",
                    deal,
                    f"{name} has been in stage {deal.stage} for "
                    f"{int(deal.weeks_in_stage)} weeks: agree the next step or close "
                    "it as lost.",
                )
        if deal.outcome == "lost" and _amount_of(deal) >= rules.review_losses_from:
            amount = format_value(_amount_of(deal), "currency", currency)
            add(
                "loss_review",
                deal,
                f"{name} ({amount}) was lost this week: review why with {deal.seller}.",
            )

    for seller in sellers.itertuples(index=False):
        if seller.visits < rules.min_customer_visits:
            add(
                "no_visits",
                None,
                f"{seller.name} made {seller.visits} customer visit(s) this week: "
                "plan visits for next week.",
                rep_id=seller.rep_id,
                seller=seller.name,
            )

    for line in kpis.itertuples(index=False):
        if line.direction != "worse" or pd.isna(line.last_week) or line.last_week == 0:
            continue
        if abs(line.change) < rules.kpi_drop_pct * abs(line.last_week):
            continue
        before = format_value(line.last_week, line.unit, currency)
        now = format_value(line.this_week, line.unit, currency)
        add(
            "kpi_worse",
            None,
            f"{line.label} moved from {before} to {now}: discuss the cause with "
            "the team.",
        )

    if alerts is not None:
        from_alerts = alert_actions(alerts, sellers)
        # An alert on a deal replaces the own rule that checks the same thing.
        replaced = set()
        for action in from_alerts:
            check = action["rule"].removeprefix("alert:")
            if check in _RULES_REPLACED_BY_ALERTS:
                rule = _RULES_REPLACED_BY_ALERTS[check]
                replaced.add((rule, action["opportunity_id"]))
        rows = [
            row for row in rows if (row["rule"], row["opportunity_id"]) not in replaced
        ]
        rows.extend({**action, "_amount": 0.0} for action in from_alerts)

    if not rows:
        return pd.DataFrame(columns=_ACTION_COLUMNS)
    frame = pd.DataFrame(rows).sort_values(
        ["priority", "_amount"], ascending=[True, False], kind="stable"
    )
    return frame[_ACTION_COLUMNS].head(settings.max_actions).reset_index(drop=True)


#: Priority of an alert's action by the alert's severity.
ALERT_PRIORITY = {"high": 1, "medium": 2, "low": 3}

#: Next step suggested after an alert's message, by the alert's check.
ALERT_NEXT_STEPS = {
    "projected_attainment": "agree how to close the gap to target",
    "coverage": "plan prospecting to build pipeline",
    "kpi": "discuss the cause",
    "key_account_contact": "plan a visit or call",
    "deal_slips": "agree a close plan with the customer",
    "stale_deals": "agree the next step or close it as lost",
}

#: Own rules that an alert check on the same deal replaces.
_RULES_REPLACED_BY_ALERTS = {"deal_slips": "slipped", "stale_deals": "stale"}


def alert_actions(alerts: pd.DataFrame, sellers: pd.DataFrame) -> list[dict[str, Any]]:
    """Turn alert rows about the team and its sellers into huddle actions.

    `alerts` has the columns of cockpit.alerts.evaluate_alerts; message is
    required, and severity, check_type, rep_id and opportunity_id are read
    when present. Rows with a rep_id outside `sellers` are left out, and
    rows without one are kept as team-wide actions. Each action is the
    alert's message followed by the next step for its check
    (ALERT_NEXT_STEPS). Its priority is that of its severity (ALERT_PRIORITY,
    1 when the severity is unknown). An alert that replaces an own rule
    keeps that rule's priority when it is more urgent.
    """
    if alerts is None or alerts.empty or "message" not in alerts.columns:
        return []
    names = dict(zip(sellers["rep_id"], sellers["name"], strict=True))
    actions = []
    for row in alerts.to_dict("records"):
        rep_id = _text_or_none(row.get("rep_id"))
        if rep_id is not None and rep_id not in names:
            continue
        check = _text_or_none(row.get("check_type"))
        message = str(row["message"]).rstrip(". ")
        step = ALERT_NEXT_STEPS.get(check)
        priority = ALERT_PRIORITY.get(_text_or_none(row.get("severity")), 1)
        if check in _RULES_REPLACED_BY_ALERTS:
            priority = min(priority, RULE_PRIORITY[_RULES_REPLACED_BY_ALERTS[check]])
        actions.append(
            {
                "priority": priority,
                "rule": f"alert:{check}" if check else "alert",
                "rep_id": rep_id,
                "seller": names.get(rep_id),
                "opportunity_id": _text_or_none(row.get("opportunity_id")),
                "action": f"{message}: {step}." if step else f"{message}.",
            }
        )
    return actions


def _text_or_none(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


def _deal_name(deal: Any) -> str:
    if pd.isna(deal.account_name):
        return str(deal.opportunity_id)
    return f"{deal.opportunity_id} ({deal.account_name})"


def _amount_of(deal: Any | None) -> float:
    if deal is None:
        return 0.0
    amount = deal.amount if not pd.isna(deal.amount) else deal.amount_before
    return 0.0 if pd.isna(amount) else float(amount)


# --- the pack ----------------------------------------------------------------


@dataclass
class HuddlePack:
    """Everything a team's huddle needs for one week, as DataFrames.

    `kpis` comes from `huddle_kpis`, `changes` from `opportunity_changes`
    (every listed deal), `opportunities` contains the top deals of each seller
    from `changes`, `sellers` the team's sellers with their visits this
    week, and `actions` comes from `suggest_actions`. `snapshot` and
    `previous_snapshot` are the pipeline snapshots compared (None when the
    mart has none on or before the week's or previous week's Sunday).
    `notes` lists caveats worth showing with the pack.
    """

    team: str
    week_start: date
    snapshot: date | None
    previous_snapshot: date | None
    currency: str
    kpis: pd.DataFrame
    sellers: pd.DataFrame
    changes: pd.DataFrame
    opportunities: pd.DataFrame
    actions: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def week_end(self) -> date:
        """Sunday of the pack's week."""
        return self.week_start + timedelta(days=6)

    @property
    def week(self) -> str:
        """ISO label of the pack's week, such as 2026-W39."""
        return week_label(self.week_start)


def team_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Return the teams of the reps table, sorted."""
    rows = con.execute(
        "SELECT DISTINCT team FROM reps WHERE team IS NOT NULL ORDER BY team"
    ).fetchall()
    return [row[0] for row in rows]


def check_team(con: duckdb.DuckDBPyConnection, team: Any) -> str:
    """Return `team` when the reps table has it; raise HuddleError otherwise."""
    teams = team_names(con)
    if not isinstance(team, str) or team not in teams:
        raise HuddleError(
            f"unknown team {team!r}; choose one of {', '.join(teams) or '(none)'}"
        )
    return team


def _team_sellers(
    con: duckdb.DuckDBPyConnection, team: str, week_start: date
) -> pd.DataFrame:
    """Return the team's sellers active at some day of the week."""
    return con.execute(
        """
        SELECT rep_id, name FROM reps
        WHERE team = ? AND role = 'seller'
          AND (active_from IS NULL OR active_from <= ?)
          AND (active_to IS NULL OR active_to >= ?)
        ORDER BY rep_id
        """,
        [team, week_start + timedelta(days=6), week_start],
    ).df()


def build_huddle(
    con: duckdb.DuckDBPyConnection,
    team: str,
    week: str | date | None = None,
    settings: HuddleSettings | str | Path | None = None,
    alerts: pd.DataFrame | None = None,
) -> HuddlePack:
    """Build the huddle pack of `team` for one week.

    `week` is the Monday of the week or its ISO label (2026-W39); None takes
    the last complete week on or before the mart's as-of date. `settings`
    is a HuddleSettings, a parameter file path, or None for
    `parameters/huddle.yaml`. `alerts` is an alert table whose rows become
    actions (see `alert_actions`); None evaluates the rules of
    `parameters/alerts.yaml` for the team at the week's Sunday, and an
    empty frame leaves alerts out.

    Raises HuddleError for an unknown team or an invalid week or one that
    starts after the mart's as-of date, ParameterError for invalid
    settings, and MartError when a table the pack reads is missing.
    """
    require_tables(
        con, ["reps", "accounts", "transactions", "opportunities", "activities"]
    )
    if not isinstance(settings, HuddleSettings):
        settings = load_huddle_settings(settings)
    team = check_team(con, team)
    week_start = parse_week(week) if week is not None else latest_complete_week(con)
    as_of = parse_as_of(None, con)
    if week_start > as_of:
        raise HuddleError(
            f"week {week_label(week_start)} starts after the mart's as-of date "
            f"{as_of}; choose {week_label(latest_complete_week(con))} or earlier"
        )
    week_end = week_start + timedelta(days=6)
    notes = []
    if week_end > as_of:
        notes.append(
            f"The week ends after the mart's as-of date {as_of}, so this week's "
            "values are partial."
        )
    currency = get_meta(con).get("currency") or "EUR"

    kpis = huddle_kpis(con, team, week_start, settings)
    snapshot = pipeline_snapshot(con, week_end)
    previous_snapshot = pipeline_snapshot(con, week_end - timedelta(days=7))
    if snapshot is None:
        notes.append("The mart has no pipeline snapshot on or before this week.")
    elif previous_snapshot is None:
        notes.append(
            "The mart has no pipeline snapshot of last week, so deal changes "
            "cannot be shown and last week's pipeline KPIs count no open deal."
        )
    elif snapshot == previous_snapshot:
        notes.append(
            f"No new pipeline snapshot since {snapshot}; deals show no change."
        )
    changes = opportunity_changes(
        con, team, snapshot, previous_snapshot, settings.stage_order, currency
    )
    top = changes[changes["rank"] <= settings.top_opportunities].reset_index(drop=True)
    sellers = seller_visits(con, _team_sellers(con, team, week_start), team, week_start)
    if alerts is None:
        alerts = _team_alerts(con, team, week_end)
    actions = suggest_actions(
        changes, kpis, sellers, snapshot, settings, alerts, currency
    )
    pack = HuddlePack(
        team=team,
        week_start=week_start,
        snapshot=snapshot,
        previous_snapshot=previous_snapshot,
        currency=currency,
        kpis=kpis,
        sellers=sellers,
        changes=changes,
        opportunities=top,
        actions=actions,
        notes=notes,
    )
    logger.info(
        "huddle pack %s %s: %d deal(s) listed, %d action(s)",
        team,
        pack.week,
        len(top),
        len(actions),
    )
    return pack


def _team_alerts(
    con: duckdb.DuckDBPyConnection, team: str, as_of: date
) -> pd.DataFrame:
    """Evaluate the early-warning rules of parameters/alerts.yaml for the team."""
    return evaluate_alerts(con, load_rules(), as_of=as_of, scope=Scope(team=team))


# --- rendering ---------------------------------------------------------------


def format_change(change: float | None, unit: str, currency: str = "EUR") -> str:
    """Format a week-on-week change with its sign: '+EUR 1,200', '-2.5 pts', '+3'.

    Percent changes are differences of fractions, shown in percentage
    points. None and NaN give 'n/a'.
    """
    if change is None or pd.isna(change):
        return "n/a"
    if change > 0:
        sign = "+"
    elif change < 0:
        sign = "-"
    else:
        sign = "±"
    if unit == "percent":
        return f"{sign}{abs(change) * 100:,.1f} pts"
    return sign + format_value(abs(change), unit, currency)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>#|&~])")


def escape_markdown(text: Any) -> str:
    """Escape text for a Markdown table cell: backslash-escape markup, no newlines."""
    flat = " ".join(str(text).split())
    return _MARKDOWN_SPECIAL.sub(r"\\\1", flat)


def _pack_tables(pack: HuddlePack) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Return the pack's tables as header and rows of display text."""
    currency = pack.currency
    kpi_rows = [
        [
            row.label,
            format_value(row.this_week, row.unit, currency),
            format_value(row.last_week, row.unit, currency),
            format_change(row.change, row.unit, currency),
            row.direction,
        ]
        for row in pack.kpis.itertuples(index=False)
    ]
    deal_rows = [
        [
            row.seller,
            row.opportunity_id,
            "" if pd.isna(row.account_name) else row.account_name,
            row.stage if not pd.isna(row.stage) else str(row.stage_before),
            format_value(
                row.amount if not pd.isna(row.amount) else row.amount_before,
                "currency",
                currency,
            ),
            _day_text(row.close_date),
            row.change,
        ]
        for row in pack.opportunities.itertuples(index=False)
    ]
    action_rows = [
        [str(row.priority), "" if pd.isna(row.seller) else str(row.seller), row.action]
        for row in pack.actions.itertuples(index=False)
    ]
    return {
        "KPIs": (["KPI", "This week", "Last week", "Change", ""], kpi_rows),
        "Top opportunities": (
            ["Seller", "Deal", "Account", "Stage", "Amount", "Close date", "Change"],
            deal_rows,
        ),
        "Suggested actions": (["Priority", "Seller", "Action"], action_rows),
    }


def render_huddle(pack: HuddlePack, fmt: str = "html") -> str:
    """Render a huddle pack as a standalone HTML page or as Markdown.

    `fmt` is "html" or "markdown". Every name and text from the mart is
    escaped for the format. Raises HuddleError for another `fmt`.
    """
    if fmt not in ("html", "markdown"):
        raise HuddleError(f"unknown huddle format {fmt!r}; use 'html' or 'markdown'")
    title = (
        f"Huddle {pack.team}, week {pack.week} ({pack.week_start} to {pack.week_end})"
    )
    snapshots = (
        f"Pipeline snapshot {pack.snapshot or 'none'}, compared with "
        f"{pack.previous_snapshot or 'none'}."
    )
    tables = _pack_tables(pack)
    if fmt == "markdown":
        return _render_markdown(title, snapshots, pack.notes, tables)
    return _render_html(title, snapshots, pack.notes, tables)


def _render_markdown(
    title: str,
    snapshots: str,
    notes: list[str],
    tables: dict[str, tuple[list[str], list[list[str]]]],
) -> str:
    lines = [f"# {escape_markdown(title)}", "", escape_markdown(snapshots), ""]
    lines.extend(f"> {escape_markdown(note)}" for note in notes)
    for heading, (header, rows) in tables.items():
        lines.extend(["", f"## {heading}", ""])
        if not rows:
            lines.append("None this week.")
            continue
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row in rows:
            lines.append(
                "| " + " | ".join(escape_markdown(cell) for cell in row) + " |"
            )
    return "\n".join(lines) + "\n"


def _render_html(
    title: str,
    snapshots: str,
    notes: list[str],
    tables: dict[str, tuple[list[str], list[list[str]]]],
) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}"
        "table{border-collapse:collapse;margin-bottom:1em}"
        "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "td.better{color:#1a7f37}td.worse{color:#b42318}</style>",
        "</head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>{esc(snapshots)}</p>",
    ]
    parts.extend(f'<p class="note">{esc(note)}</p>' for note in notes)
    for heading, (header, rows) in tables.items():
        parts.append(f"<h2>{esc(heading)}</h2>")
        if not rows:
            parts.append("<p>None this week.</p>")
            continue
        parts.append(
            "<table><thead><tr>"
            + "".join(f"<th>{esc(cell)}</th>" for cell in header)
            + "</tr></thead><tbody>"
        )
        for row in rows:
            cells = []
            for index, cell in enumerate(row):
                css = (
                    f' class="{esc(cell)}"'
                    if heading == "KPIs" and index == 4 and cell in ("better", "worse")
                    else ""
                )
                cells.append(f"<td{css}>{esc(str(cell))}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
