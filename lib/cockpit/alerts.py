"""Early warnings: rules from YAML, evaluated into an alert table.

Rules live in `parameters/alerts.yaml` (see the comments there). Each rule
names a check and, for checks on KPIs, thresholds per organisation level.
`evaluate_alerts` runs every enabled rule for one scope and as-of date. It
returns one row per alert, with the columns of the mart's `alerts` table.
`save_alerts` stores such a table in the mart and replaces the alerts of
the same as-of date and scope.

The file is checked before any rule runs. Every problem is reported at once
as `FILE: rules[i].key: expected ..., found ...`, so a typo never turns a
rule off silently.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import yaml

from cockpit.behaviour import NO_CONTACT_DAYS, key_accounts_without_contact
from cockpit.errors import ParameterError
from cockpit.kpi import KPIS, STALE_DAYS, compute_kpi, format_value
from cockpit.kpi_periods import PERIODS
from cockpit.mart.schema import ALERT_SEVERITIES, ALERTS
from cockpit.mart.store import LoadReport, load_frame
from cockpit.paths import PARAMETERS_DIR
from cockpit.pipeline import slipped_deals, stale_deals
from cockpit.projection import project_attainment
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: File `load_rules` reads when given no path.
DEFAULT_RULES_FILE = PARAMETERS_DIR / "alerts.yaml"

#: Checks a rule may run.
CHECKS = (
    "projected_attainment",
    "coverage",
    "kpi",
    "key_account_contact",
    "deal_slips",
    "stale_deals",
)

#: Levels a rule's thresholds may name, and the KPI grain of each.
LEVEL_GRAINS = {
    "company": (),
    "region": ("region",),
    "business_unit": ("business_unit",),
    "team": ("team",),
    "seller": ("rep_id",),
}

#: Levels each per-level check supports.
_CHECK_LEVELS = {
    "projected_attainment": ("company", "region", "team", "seller"),
    "coverage": ("company", "region", "business_unit", "team", "seller"),
    "kpi": tuple(LEVEL_GRAINS),
}

#: Threshold keys of each per-level check; kpi needs at least one of its two.
_THRESHOLDS = {
    "projected_attainment": ("below",),
    "coverage": ("below_required",),
    "kpi": ("below", "above"),
}

#: Keys of a rule besides name, check, severity, description and enabled.
_CHECK_KEYS = {
    "projected_attainment": ("period", "levels", "z"),
    "coverage": ("period", "levels"),
    "kpi": ("kpi", "period", "levels"),
    "key_account_contact": ("days",),
    "deal_slips": ("min_slips",),
    "stale_deals": ("days",),
}

_COMMON_KEYS = ("name", "check", "severity", "description", "enabled")

#: Columns of an alert table, as in the mart's alerts table.
ALERT_COLUMNS = ALERTS.column_names


@dataclass(frozen=True)
class Rule:
    """One checked early-warning rule.

    `levels` maps a level (company, region, business_unit, team, seller)
    to its thresholds, e.g. {"seller": {"below": 0.85}}. Fractions are
    used for percent KPIs. Fields that a check does not use keep their
    defaults.
    """

    name: str
    check: str
    severity: str = "medium"
    description: str = ""
    enabled: bool = True
    period: str | None = None
    levels: dict[str, dict[str, float]] = field(default_factory=dict)
    kpi: str | None = None
    days: int | None = None
    min_slips: int = 2
    z: float = 1.645


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that rejects a key repeated within one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} repeats the one on line {seen[key]}",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _found(value: Any) -> str:
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    kind = (
        "list"
        if isinstance(value, list)
        else "mapping"
        if isinstance(value, dict)
        else None
    )
    kind = kind or kinds.get(type(value), type(value).__name__)
    text = "null" if value is None else repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Checker:
    """Collects the problems of one rules document."""

    def __init__(self, path: str | Path) -> None:
        self.path = path
        self.problems: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.problems.append(f"{self.path}: {where}: {message}")

    def number(
        self, where: str, value: Any, low: float, high: float | None = None
    ) -> bool:
        upper = f" and {high}" if high is not None else ""
        expected = (
            f"a number between {low}{upper}"
            if high is not None
            else f"a number >= {low}"
        )
        if not _is_number(value) or value < low or (high is not None and value > high):
            self.add(where, f"expected {expected}, found {_found(value)}")
            return False
        return True

    def integer(self, where: str, value: Any, low: int) -> bool:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            self.add(where, f"expected an integer >= {low}, found {_found(value)}")
            return False
        return True


def _check_levels(checker: _Checker, where: str, rule: dict, check: str) -> None:
    levels = rule.get("levels")
    if levels is None:
        checker.add(
            f"{where}.levels",
            "missing; expected a mapping of level to thresholds, e.g. "
            "{seller: {below: 0.85}}",
        )
        return
    if not isinstance(levels, dict) or not levels:
        checker.add(
            f"{where}.levels",
            f"expected a non-empty mapping of level to thresholds, found {_found(levels)}",
        )
        return
    allowed_levels = _CHECK_LEVELS[check]
    keys = _THRESHOLDS[check]
    for level, thresholds in levels.items():
        spot = f"{where}.levels.{level}"
        if level not in allowed_levels:
            checker.add(
                spot,
                f"unknown level for check {check}; expected one of "
                f"{', '.join(allowed_levels)}",
            )
            continue
        if check == "kpi" and rule.get("kpi") in KPIS:
            grains = LEVEL_GRAINS[level]
            if any(g not in KPIS[rule["kpi"]].grains for g in grains):
                checker.add(
                    spot,
                    f"KPI {rule['kpi']} cannot be computed per {level}; its grains "
                    f"are {', '.join(KPIS[rule['kpi']].grains)}",
                )
        if not isinstance(thresholds, dict) or not thresholds:
            checker.add(
                spot,
                f"expected a mapping with {' or '.join(keys)}, found {_found(thresholds)}",
            )
            continue
        for key, value in thresholds.items():
            if key not in keys:
                checker.add(
                    f"{spot}.{key}", f"unknown key; expected {' or '.join(keys)}"
                )
            elif key == "below_required":
                checker.number(f"{spot}.{key}", value, 0)
            else:
                checker.number(f"{spot}.{key}", value, -1e12, 1e12)


def _check_rule(checker: _Checker, index: int, rule: Any, names: set[str]) -> None:
    where = f"rules[{index}]"
    if not isinstance(rule, dict):
        checker.add(
            where, f"expected a mapping with name and check, found {_found(rule)}"
        )
        return
    name = rule.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        checker.add(
            f"{where}.name",
            f"expected a rule name of letters, digits, _ . or -, found {_found(name)}",
        )
    elif name in names:
        checker.add(f"{where}.name", f"rule name {name!r} is used twice; rename one")
    else:
        names.add(name)

    check = rule.get("check")
    if check not in CHECKS:
        checker.add(
            f"{where}.check",
            f"expected one of {', '.join(CHECKS)}, found {_found(check)}",
        )
        return

    allowed = (*_COMMON_KEYS, *_CHECK_KEYS[check])
    for key in rule:
        if key not in allowed:
            checker.add(
                f"{where}.{key}",
                f"unknown key for check {check}; expected one of {', '.join(allowed)}",
            )
    if "severity" in rule and rule["severity"] not in ALERT_SEVERITIES:
        checker.add(
            f"{where}.severity",
            f"expected one of {', '.join(ALERT_SEVERITIES)}, found {_found(rule['severity'])}",
        )
    if "description" in rule and not isinstance(rule["description"], str):
        checker.add(
            f"{where}.description",
            f"expected text, found {_found(rule['description'])}",
        )
    if "enabled" in rule and not isinstance(rule["enabled"], bool):
        checker.add(
            f"{where}.enabled",
            f"expected true or false, found {_found(rule['enabled'])}",
        )

    if "period" in rule and rule["period"] not in PERIODS:
        checker.add(
            f"{where}.period",
            f"expected one of {', '.join(PERIODS)}, found {_found(rule['period'])}",
        )
    if check == "kpi" and rule.get("kpi") not in KPIS:
        checker.add(
            f"{where}.kpi",
            f"expected a KPI name of the registry (e.g. win_rate, revenue), found "
            f"{_found(rule.get('kpi'))}",
        )

    if "days" in rule:
        checker.integer(f"{where}.days", rule["days"], 1)
    if "min_slips" in rule:
        checker.integer(f"{where}.min_slips", rule["min_slips"], 1)
    if "z" in rule:
        checker.number(f"{where}.z", rule["z"], 0, 10)
    if check in _THRESHOLDS:
        _check_levels(checker, where, rule, check)


def parse_rules(text: str, path: str | Path = "<text>") -> list[Rule]:
    """Parse and check the YAML `text` of a rules file; return its rules.

    `path` only names the file in messages. Raises ParameterError naming the
    file, the key path, what was expected and what was found, for every
    problem at once.
    """
    try:
        # _Loader is a SafeLoader subclass, so no tag can build Python objects.
        document = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ParameterError(
            f"{where}: invalid YAML: {exc.problem or exc.context}; fix the syntax at "
            "that line"
        ) from exc
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path}: invalid YAML: {exc}") from exc
    checker = _Checker(path)
    if not isinstance(document, dict) or "rules" not in document:
        checker.add(
            "(top level)",
            f"expected a mapping with a rules list, found {_found(document)}",
        )
        raise ParameterError("\n".join(checker.problems))
    for key in document:
        if key != "rules":
            checker.add(str(key), "unknown key; expected rules")
    rules = document["rules"]
    if not isinstance(rules, list):
        checker.add("rules", f"expected a list of rules, found {_found(rules)}")
        raise ParameterError("\n".join(checker.problems))
    names: set[str] = set()
    for index, rule in enumerate(rules):
        _check_rule(checker, index, rule, names)
    if checker.problems:
        raise ParameterError("\n".join(checker.problems))
    return [_to_rule(rule) for rule in rules]


def _to_rule(raw: dict) -> Rule:
    values = dict(raw)
    levels = {
        level: {key: float(value) for key, value in thresholds.items()}
        for level, thresholds in (values.pop("levels", None) or {}).items()
    }
    defaults = {
        "projected_attainment": {"period": "year"},
        "coverage": {"period": "year"},
        "kpi": {"period": "ytd"},
        "key_account_contact": {"days": NO_CONTACT_DAYS},
        "stale_deals": {"days": STALE_DAYS},
    }.get(values["check"], {})
    merged = {**defaults, **values}
    if "z" in merged:
        merged["z"] = float(merged["z"])
    return Rule(levels=levels, **merged)


def load_rules(path: str | Path | None = None) -> list[Rule]:
    """Read and check the alert rules in `path` (default parameters/alerts.yaml).

    Raises ParameterError for a missing or unreadable file and for every
    problem `parse_rules` finds.
    """
    path = Path(path) if path is not None else DEFAULT_RULES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ParameterError(
            f"alert rules file {path} not found; pass an existing YAML file or "
            f"create {DEFAULT_RULES_FILE}"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError(
            f"cannot read alert rules file {path}: {exc}; save it as UTF-8 text"
        ) from exc
    return parse_rules(text, path)


# --- evaluation --------------------------------------------------------------


def _currency(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute("SELECT value FROM mart_meta WHERE key = 'currency'").fetchone()
    return row[0] if row and row[0] else "EUR"


def _rep_names(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(con.execute("SELECT rep_id, name FROM reps").fetchall())


def _rep_teams(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str]]:
    rows = con.execute("SELECT rep_id, team, region FROM reps").fetchall()
    return {rep: (team, region) for rep, team, region in rows}


def _member(level: str, key: str | None, names: dict[str, str]) -> str:
    if level == "company":
        return "The company"
    if level == "seller":
        return f"Seller {names.get(key, key)} ({key})"
    return f"{level.replace('_', ' ').capitalize()} {key}"


def _alert(
    rule: Rule,
    level: str,
    key: str | None,
    message: str,
    *,
    kpi: str | None = None,
    value: float | None = None,
    threshold: float | None = None,
    **where: str | None,
) -> dict[str, Any]:
    row = {
        "rule": rule.name,
        "check_type": rule.check,
        "severity": rule.severity,
        "level": level,
        "key": "company" if key is None else str(key),
        "kpi": kpi,
        "value": value,
        "threshold": threshold,
        "message": message,
    }
    row.update(where)
    return row


def _level_where(level: str, key: Any, teams: dict[str, tuple[str, str]]) -> dict:
    if level == "seller":
        team, region = teams.get(key, (None, None))
        return {"rep_id": key, "team": team, "region": region}
    if level in ("region", "business_unit", "team"):
        return {level: key}
    return {}


def _per_level(
    con: duckdb.DuckDBPyConnection, rule: Rule, scope: Scope, as_of: date
) -> list[dict]:
    names = _rep_names(con)
    teams = _rep_teams(con)
    alerts = []
    for level, thresholds in rule.levels.items():
        grains = LEVEL_GRAINS[level]
        column = grains[0] if grains else None
        if rule.check == "projected_attainment":
            frame = project_attainment(
                con,
                as_of,
                level="rep_id" if level == "seller" else level,
                scope=scope,
                period=rule.period,
                z=rule.z,
            )
            limit = thresholds["below"]
            for _, row in frame.iterrows():
                value = row["projected_attainment"]
                if pd.isna(value) or value >= limit:
                    continue
                key = row[column] if column else None
                message = (
                    f"{_member(level, key, names)} is projected at "
                    f"{format_value(value, 'percent')} of target by the end of the "
                    f"{rule.period} (range {format_value(row['attainment_low'], 'percent')}"
                    f" to {format_value(row['attainment_high'], 'percent')}), below "
                    f"{format_value(limit, 'percent')}."
                )
                alerts.append(
                    _alert(
                        rule, level, key, message, kpi="projected_attainment",
                        value=float(value), threshold=limit,
                        **_level_where(level, key, teams),
                    )
                )  # fmt: skip
        elif rule.check == "coverage":
            common = {
                "by": grains,
                "scope": scope,
                "period": rule.period,
                "as_of": as_of,
            }
            coverage = compute_kpi(con, "pipeline_coverage", **common)
            required = compute_kpi(con, "required_coverage", **common)
            frame = (
                coverage.merge(required, on=list(grains), how="inner")
                if grains
                else pd.concat([coverage, required], axis=1)
            )
            factor = thresholds["below_required"]
            for _, row in frame.iterrows():
                value, needed = row["pipeline_coverage"], row["required_coverage"]
                if pd.isna(value) or pd.isna(needed) or value >= factor * needed:
                    continue
                key = row[column] if column else None
                message = (
                    f"{_member(level, key, names)} has pipeline coverage "
                    f"{format_value(value, 'ratio')}x of the remaining target, below "
                    f"the {format_value(factor * needed, 'ratio')}x that its recent "
                    "win rate needs."
                )
                alerts.append(
                    _alert(
                        rule, level, key, message, kpi="pipeline_coverage",
                        value=float(value), threshold=float(factor * needed),
                        **_level_where(level, key, teams),
                    )
                )  # fmt: skip
        else:
            name = rule.kpi
            frame = compute_kpi(
                con, name, by=grains, scope=scope, period=rule.period, as_of=as_of
            )
            unit = KPIS[name].unit
            for _, row in frame.iterrows():
                value = row[name]
                if pd.isna(value):
                    continue
                key = row[column] if column else None
                for side, limit in thresholds.items():
                    crossed = value < limit if side == "below" else value > limit
                    if not crossed:
                        continue
                    message = (
                        f"{_member(level, key, names)} has {KPIS[name].label.lower()} "
                        f"{format_value(value, unit)}, {side} "
                        f"{format_value(limit, unit)} ({rule.period})."
                    )
                    alerts.append(
                        _alert(
                            rule, level, key, message, kpi=name, value=float(value),
                            threshold=limit, **_level_where(level, key, teams),
                        )
                    )  # fmt: skip
    return alerts


def _per_item(
    con: duckdb.DuckDBPyConnection, rule: Rule, scope: Scope, as_of: date
) -> list[dict]:
    names = _rep_names(con)
    alerts = []
    if rule.check == "key_account_contact":
        frame = key_accounts_without_contact(con, as_of, scope, days=rule.days)
        for _, row in frame.iterrows():
            owner = row["owner_rep_id"]
            owner_text = f"owner {names.get(owner, owner)}" if owner else "no owner"
            if row["never_contacted"]:
                how_long = "has never been contacted"
                value = None
            else:
                how_long = (
                    f"has had no contact for {int(row['days_since_contact'])} days "
                    f"(last {row['last_contact']:%Y-%m-%d})"
                )
                value = float(row["days_since_contact"])
            message = f"Key account {row['name']} ({row['account_id']}, {owner_text}) {how_long}."
            alerts.append(
                _alert(
                    rule, "account", row["account_id"], message,
                    kpi="days_since_contact", value=value, threshold=float(rule.days),
                    region=row["region"], team=row["team"], rep_id=owner,
                    account_id=row["account_id"],
                )
            )  # fmt: skip
        return alerts
    if rule.check == "deal_slips":
        currency = _currency(con)
        frame = slipped_deals(con, scope, as_of, min_slips=rule.min_slips)
        for _, row in frame.iterrows():
            amount = format_value(row["amount"], "currency", currency)
            message = (
                f"Deal {row['opportunity_id']} of {names.get(row['rep_id'], row['rep_id'])} "
                f"({amount}) slipped {int(row['slips'])} times, by "
                f"{int(row['days_slipped'])} days in all; it is now expected on "
                f"{row['expected_close_date']:%Y-%m-%d}."
            )
            alerts.append(
                _alert(
                    rule, "deal", row["opportunity_id"], message,
                    kpi="close_date_slips", value=float(row["slips"]),
                    threshold=float(rule.min_slips), region=row["region"],
                    business_unit=row["business_unit"], team=row["team"],
                    rep_id=row["rep_id"], account_id=row["account_id"],
                    opportunity_id=row["opportunity_id"],
                )
            )  # fmt: skip
        return alerts
    frame = stale_deals(con, scope, as_of, days=rule.days)
    for _, row in frame.iterrows():
        message = (
            f"Deal {row['opportunity_id']} of {names.get(row['rep_id'], row['rep_id'])} "
            f"in stage {row['stage']} has not changed for {int(row['days_since_change'])} "
            f"days (since {row['last_change']:%Y-%m-%d})."
        )
        alerts.append(
            _alert(
                rule, "deal", row["opportunity_id"], message,
                kpi="days_since_change", value=float(row["days_since_change"]),
                threshold=float(rule.days), region=row["region"],
                business_unit=row["business_unit"], team=row["team"],
                rep_id=row["rep_id"], account_id=row["account_id"],
                opportunity_id=row["opportunity_id"],
            )
        )  # fmt: skip
    return alerts


def evaluate_alerts(
    con: duckdb.DuckDBPyConnection,
    rules: Sequence[Rule],
    as_of: date,
    scope: Scope | None = None,
) -> pd.DataFrame:
    """Run each enabled rule for `scope` at `as_of`; return the alert table.

    One row per alert, with the columns of the mart's alerts table
    (ALERT_COLUMNS): as_of, scope (its label), rule, check_type, severity,
    level, key, the region, business unit, team, rep, account and deal it
    concerns where known, kpi, value, threshold and message. Rows are sorted
    by severity (high first), rule and key. An empty table means no rule
    fired. Raises the errors of the KPI functions it calls (KpiError,
    MartError).
    """
    scope = scope or Scope()
    rows: list[dict] = []
    for rule in rules:
        if not rule.enabled:
            logger.info("alert rule %s is disabled", rule.name)
            continue
        if rule.check in _THRESHOLDS:
            found = _per_level(con, rule, scope, as_of)
        else:
            found = _per_item(con, rule, scope, as_of)
        logger.info(
            "alert rule %s raised %d alert(s) for %s",
            rule.name,
            len(found),
            scope.label(),
        )
        rows.extend(found)
    frame = pd.DataFrame(
        rows,
        columns=[c for c in ALERT_COLUMNS if c not in ("as_of", "scope", "created_at")],
    )
    frame.insert(0, "scope", scope.label())
    frame.insert(0, "as_of", pd.Timestamp(as_of))
    frame["created_at"] = pd.Timestamp(datetime.now().replace(microsecond=0))
    rank = frame["severity"].map(
        {s: i for i, s in enumerate(reversed(ALERT_SEVERITIES))}
    )
    frame = (
        frame.assign(_rank=rank)
        .sort_values(["_rank", "rule", "key"], kind="stable")
        .drop(columns="_rank")
    )
    return frame[ALERT_COLUMNS].reset_index(drop=True)


def save_alerts(
    con: duckdb.DuckDBPyConnection,
    alerts: pd.DataFrame,
    as_of: date,
    scope: Scope | None = None,
) -> LoadReport:
    """Store the alert table of one evaluation in the mart's alerts table.

    Alerts already stored for `as_of` and the label of `scope` are deleted
    first, so a rerun replaces them, even with an empty table. The rows go
    through `load_frame`, so a row with a missing required value is
    quarantined as for any load. Needs a writable connection. Raises
    ParameterError when a row has another as_of or scope.
    """
    label = (scope or Scope()).label()
    other = alerts[
        (pd.to_datetime(alerts["as_of"]) != pd.Timestamp(as_of))
        | (alerts["scope"] != label)
    ]
    if len(other):
        raise ParameterError(
            f"{len(other)} alert row(s) are for another as_of or scope than "
            f"{as_of} / {label}; save each evaluation on its own"
        )
    con.execute("DELETE FROM alerts WHERE as_of = ? AND scope = ?", [as_of, label])
    report = load_frame(
        con,
        "alerts",
        alerts,
        source="alerts",
        source_file="cockpit.alerts.evaluate_alerts",
    )
    logger.info("saved alerts: %s", report)
    return report
