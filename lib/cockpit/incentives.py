"""Incentive plans: live bonus per seller, what-if from open deals, statements.

Plans live in `parameters/incentive_plans.yaml` (see that file for every
key). A plan pays a target bonus at 100 % attainment of the seller's revenue
target for the plan period, shaped by an attainment curve:

- below the threshold nothing is paid;
- from the threshold to 100 % the payout share runs linearly through the
  plan's break points and reaches 1.0 at 100 %;
- above 100 % each accelerator segment adds `rate` payout per unit of
  attainment, and the cap bounds the share.

The team pool share of the target bonus is paid through the same curve on
the team's attainment, the rest on the seller's own. Product accelerators
count the revenue of chosen product lines or business units several times
toward the seller's own attainment. The close-out bonus pays for each deal
won in the last weeks of a quarter or of the plan period.

Revenue is the net revenue of the seller's invoice lines dated from the
plan start to the earlier of the plan end and the as-of date. The target is
the `target` KPI of the registry for the seller (or team) over the plan
period. Amounts are in the mart's reporting currency.

Component attribution of a statement, with `individual` the part of the
target bonus not in the team pool and f the capped curve:

- curve to 100 %: individual x f(min(plain attainment, 1));
- accelerators: individual x (uncapped curve(plain) - f(min(plain, 1)));
- cap: individual x (f(plain) - uncapped curve(plain)), zero or negative;
- product accelerators: individual x (f(credited) - f(plain)), where the
  credited attainment counts accelerated revenue with its multiplier;
- team pool: team share x f(team attainment);
- close-out: sum over the qualifying won deals of per_deal + rate x amount.

Each component is rounded to cents and the total is their sum.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import pandas as pd
import yaml

from cockpit.errors import IncentiveError, ParameterError
from cockpit.kpi import format_value, kpi_values, stage_probabilities
from cockpit.mart import get_meta, require_tables
from cockpit.params import _describe, _error_order, _key_path, _Loader
from cockpit.paths import PARAMETERS_DIR
from cockpit.review import parse_as_of
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: File read when `load_plans` gets no path.
DEFAULT_PLANS_FILE = PARAMETERS_DIR / "incentive_plans.yaml"

#: Statement components in the order they are listed.
COMPONENTS = (
    "curve",
    "accelerator",
    "cap",
    "product_accelerator",
    "team_pool",
    "close_out",
)

COMPONENT_LABELS = {
    "curve": "Attainment curve up to 100 %",
    "accelerator": "Accelerators above 100 %",
    "cap": "Cap",
    "product_accelerator": "Product accelerators",
    "team_pool": "Team pool",
    "close_out": "Close-out bonus",
}


# --- plans -------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """Payout share of the target bonus as a function of attainment.

    `points` are (attainment, payout) pairs from the threshold to (1.0,
    1.0), both ends included. `accelerators` are (from, rate) pairs with
    the first from equal to 1.0. `cap` is None for no cap.
    """

    threshold: float
    points: tuple[tuple[float, float], ...]
    accelerators: tuple[tuple[float, float], ...]
    cap: float | None

    def uncapped(self, attainment: float) -> float:
        """Return the payout share at `attainment` before the cap."""
        if math.isnan(attainment):
            return math.nan
        if attainment < self.threshold:
            return 0.0
        if attainment <= 1.0:
            return _interpolate(self.points, attainment)
        payout = 1.0
        bounds = [start for start, _ in self.accelerators[1:]] + [math.inf]
        for (start, rate), stop in zip(self.accelerators, bounds, strict=True):
            payout += rate * max(0.0, min(attainment, stop) - start)
        return payout

    def payout(self, attainment: float) -> float:
        """Return the payout share at `attainment`, capped; NaN for NaN."""
        share = self.uncapped(attainment)
        if self.cap is None or math.isnan(share):
            return share
        return min(share, self.cap)


def _interpolate(points: Sequence[tuple[float, float]], x: float) -> float:
    """Linear interpolation through `points`, sorted by x, for x within them."""
    for (x0, y0), (x1, y1) in pairwise(points):
        if x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


@dataclass(frozen=True)
class ProductAccelerator:
    """Multiplier on the revenue of some product lines or business units."""

    name: str
    product_lines: tuple[str, ...]
    business_units: tuple[str, ...]
    multiplier: float

    def matches(self, product_line: Any, business_unit: Any) -> bool:
        """True when a revenue line of this product line or unit is accelerated."""
        return (
            product_line in self.product_lines or business_unit in self.business_units
        )


@dataclass(frozen=True)
class CloseOut:
    """Bonus per deal won in the last `weeks` weeks of a quarter or the period."""

    weeks: int
    per: str
    rate: float
    per_deal: float

    def deal_bonus(self, amount: float) -> float:
        """Return the close-out bonus of one qualifying deal of `amount`."""
        return self.per_deal + self.rate * (0.0 if math.isnan(amount) else amount)


@dataclass(frozen=True)
class IncentivePlan:
    """One checked incentive plan; see the module documentation."""

    name: str
    period_start: date
    period_end: date
    target_bonus: float
    curve: Curve
    team_pool_share: float = 0.0
    product_accelerators: tuple[ProductAccelerator, ...] = ()
    close_out: CloseOut | None = None
    eligible: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {"roles": ("seller",)}
    )
    source: str = "<plans>"

    def close_out_windows(self) -> list[tuple[date, date]]:
        """Return the first and last day of each close-out window of the plan."""
        if self.close_out is None:
            return []
        length = timedelta(days=7 * self.close_out.weeks - 1)
        if self.close_out.per == "period":
            ends = [self.period_end]
        else:
            quarters = pd.period_range(self.period_start, self.period_end, freq="Q")
            ends = [min(q.end_time.date(), self.period_end) for q in quarters]
        return [(max(end - length, self.period_start), end) for end in ends]

    def in_close_out(self, day: date) -> bool:
        """True when a deal closed on `day` earns the close-out bonus."""
        return any(start <= day <= end for start, end in self.close_out_windows())

    def multiplier(self, product_line: Any, business_unit: Any) -> float:
        """Return the credit multiplier of revenue of one product line and unit."""
        matching = [
            accelerator.multiplier
            for accelerator in self.product_accelerators
            if accelerator.matches(product_line, business_unit)
        ]
        return max(matching) if matching else 1.0


_NUMBER = {"type": "number"}
_SHARE = {"type": "number", "minimum": 0, "maximum": 1}
_NAMES = {
    "type": "array",
    "items": {"type": "string", "minLength": 1},
    "uniqueItems": True,
}

_PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["period_start", "period_end", "target_bonus", "curve"],
    "properties": {
        "description": {"type": "string"},
        "period_start": {"type": "string", "format": "date"},
        "period_end": {"type": "string", "format": "date"},
        "target_bonus": {
            "type": "number",
            "minimum": 0,
            "description": "bonus at 100 % attainment, reporting currency",
        },
        "eligible": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "properties": {
                "roles": _NAMES,
                "teams": _NAMES,
                "regions": _NAMES,
                "role_types": _NAMES,
                "rep_ids": _NAMES,
            },
        },
        "curve": {
            "type": "object",
            "additionalProperties": False,
            "required": ["threshold", "payout_at_threshold"],
            "properties": {
                "threshold": {**_SHARE, "description": "attainment, 0 to 1"},
                "payout_at_threshold": {**_SHARE, "description": "share, 0 to 1"},
                "points": {
                    "type": ["array", "null"],
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["attainment", "payout"],
                        "properties": {"attainment": _SHARE, "payout": _SHARE},
                    },
                },
                "accelerators": {
                    "type": ["array", "null"],
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["from", "rate"],
                        "properties": {
                            "from": {
                                "type": "number",
                                "minimum": 1,
                                "description": "attainment where the segment starts",
                            },
                            "rate": {
                                "type": "number",
                                "minimum": 0,
                                "description": "payout per unit of attainment",
                            },
                        },
                    },
                },
                "cap": {
                    "type": ["number", "null"],
                    "minimum": 1,
                    "description": "highest payout share, 1.0 or more",
                },
            },
        },
        "team_pool_share": {**_SHARE, "description": "part of the target bonus"},
        "product_accelerators": {
            "type": ["array", "null"],
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "multiplier"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "product_lines": _NAMES,
                    "business_units": _NAMES,
                    "multiplier": {"type": "number", "exclusiveMinimum": 0},
                },
            },
        },
        "close_out": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "required": ["weeks"],
            "properties": {
                "weeks": {"type": "integer", "minimum": 1, "maximum": 13},
                "per": {"enum": ["quarter", "period"]},
                "rate": {**_NUMBER, "minimum": 0},
                "per_deal": {**_NUMBER, "minimum": 0},
            },
        },
    },
}

#: JSON Schema of an incentive plan file.
PLANS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["plans"],
    "properties": {
        "plans": {
            "type": "object",
            "minProperties": 1,
            "propertyNames": {"pattern": r"^[A-Za-z0-9_.-]+$"},
            "additionalProperties": _PLAN_SCHEMA,
        }
    },
}


def load_plans(path: str | Path | None = None) -> dict[str, IncentivePlan]:
    """Read and check an incentive plan file; `parameters/incentive_plans.yaml` by default.

    Returns the plans by name, in file order. Raises ParameterError naming
    the file, the key path, what was expected and what was found, for every
    problem at once.
    """
    path = Path(path) if path is not None else DEFAULT_PLANS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ParameterError(
            f"incentive plan file {path} not found; pass an existing YAML file "
            f"or restore {DEFAULT_PLANS_FILE}"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError(
            f"cannot read incentive plan file {path}: {exc}; save it as UTF-8 text"
        ) from exc
    try:
        document = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ParameterError(
            f"{path}: invalid YAML: {exc}; fix the syntax (indent with spaces, "
            "one `key: value` per line)"
        ) from exc
    return parse_plans(document, path)


def parse_plans(
    document: Mapping[str, Any] | None, path: str | Path = "<plans>"
) -> dict[str, IncentivePlan]:
    """Check a parsed plan mapping ({"plans": {name: plan}}) and build its plans.

    Dates may be text (YYYY-MM-DD) or date objects. `path` only names the
    source in error messages. Raises ParameterError as `load_plans` does.
    """
    document = _dates_as_text(document if document is not None else {})
    validator = jsonschema.Draft202012Validator(
        PLANS_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    problems = [
        _describe_error(error, path)
        for error in sorted(validator.iter_errors(document), key=_error_order)
    ]
    if problems:
        raise ParameterError("\n".join(problems))
    plans = {}
    for name, entry in document["plans"].items():
        plan, plan_problems = _build_plan(name, entry, str(path))
        problems.extend(plan_problems)
        if plan is not None:
            plans[name] = plan
    if problems:
        raise ParameterError("\n".join(problems))
    return plans


def get_plan(plans: Mapping[str, IncentivePlan], name: str) -> IncentivePlan:
    """Return the plan called `name`; raise IncentiveError naming the known plans."""
    if name not in plans:
        raise IncentiveError(
            f"unknown incentive plan {name!r}; choose one of {', '.join(plans)}"
        )
    return plans[name]


def _dates_as_text(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _dates_as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_dates_as_text(item) for item in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


def _describe_error(error: jsonschema.ValidationError, path: str | Path) -> str:
    key = _key_path(error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return f"{path}: {key}: missing required key {missing!r}"
    if error.validator == "enum":
        allowed = ", ".join(map(str, error.validator_value))
        return f"{path}: {key}: expected one of {allowed}, found {error.instance!r}"
    if error.validator == "exclusiveMinimum":
        return (
            f"{path}: {key}: expected a number > {error.validator_value}, "
            f"found {error.instance!r}"
        )
    if error.validator == "minProperties":
        return f"{path}: {key}: expected at least one plan, found none"
    if error.validator == "pattern" and list(error.absolute_path) == ["plans"]:
        return (
            f"{path}: plans: expected a plan name of letters, digits, _ . or -, "
            f"found {error.instance!r}"
        )
    return _describe(error, path)


def _build_plan(
    name: str, entry: Mapping[str, Any], path: str
) -> tuple[IncentivePlan | None, list[str]]:
    """Check what the schema cannot and build the plan; return it and problems."""
    where = f"{path}: plans.{name}"
    problems = []
    start = date.fromisoformat(entry["period_start"])
    end = date.fromisoformat(entry["period_end"])
    if end < start:
        problems.append(
            f"{where}.period_end: expected a date on or after period_start "
            f"{start}, found {end}"
        )

    curve_entry = entry["curve"]
    threshold = float(curve_entry["threshold"])
    at_threshold = float(curve_entry["payout_at_threshold"])
    points = [(threshold, at_threshold)]
    for index, point in enumerate(curve_entry.get("points") or []):
        x, y = float(point["attainment"]), float(point["payout"])
        key = f"{where}.curve.points[{index}]"
        if not points[-1][0] < x < 1.0:
            problems.append(
                f"{key}.attainment: expected a value above {points[-1][0]} and "
                f"below 1.0, found {x}"
            )
        if y < points[-1][1]:
            problems.append(
                f"{key}.payout: expected at least {points[-1][1]} (payout may not "
                f"fall as attainment rises), found {y}"
            )
        points.append((x, y))
    if threshold == 1.0 and at_threshold != 1.0:
        problems.append(
            f"{where}.curve.payout_at_threshold: expected 1.0 when the threshold "
            f"is 1.0 (100 % attainment pays the target bonus), found {at_threshold}"
        )
    points.append((1.0, 1.0))

    accelerators = [
        (float(item["from"]), float(item["rate"]))
        for item in curve_entry.get("accelerators") or [{"from": 1.0, "rate": 1.0}]
    ]
    if accelerators[0][0] != 1.0:
        problems.append(
            f"{where}.curve.accelerators[0].from: expected 1.0 (the first segment "
            f"starts at 100 %), found {accelerators[0][0]}"
        )
    for index in range(1, len(accelerators)):
        if accelerators[index][0] <= accelerators[index - 1][0]:
            problems.append(
                f"{where}.curve.accelerators[{index}].from: expected a value above "
                f"{accelerators[index - 1][0]}, found {accelerators[index][0]}"
            )

    product_accelerators = []
    for index, item in enumerate(entry.get("product_accelerators") or []):
        lines = tuple(item.get("product_lines") or ())
        units = tuple(item.get("business_units") or ())
        if not lines and not units:
            problems.append(
                f"{where}.product_accelerators[{index}]: expected product_lines or "
                "business_units with at least one name, found neither"
            )
        product_accelerators.append(
            ProductAccelerator(item["name"], lines, units, float(item["multiplier"]))
        )

    close_out = None
    if entry.get("close_out"):
        item = entry["close_out"]
        close_out = CloseOut(
            weeks=int(item["weeks"]),
            per=item.get("per", "quarter"),
            rate=float(item.get("rate", 0.0)),
            per_deal=float(item.get("per_deal", 0.0)),
        )
        if close_out.rate == 0 and close_out.per_deal == 0:
            problems.append(
                f"{where}.close_out: expected rate or per_deal above 0, found both 0; "
                "remove close_out to pay no close-out bonus"
            )

    eligible = {
        key: tuple(values)
        for key, values in (entry.get("eligible") or {"roles": ["seller"]}).items()
    }
    if problems:
        return None, problems
    plan = IncentivePlan(
        name=name,
        period_start=start,
        period_end=end,
        target_bonus=float(entry["target_bonus"]),
        curve=Curve(
            threshold,
            tuple(points),
            tuple(accelerators),
            None if curve_entry.get("cap") is None else float(curve_entry["cap"]),
        ),
        team_pool_share=float(entry.get("team_pool_share", 0.0)),
        product_accelerators=tuple(product_accelerators),
        close_out=close_out,
        eligible=eligible,
        source=path,
    )
    return plan, []


# --- bonus arithmetic --------------------------------------------------------


@dataclass(frozen=True)
class BonusInputs:
    """The measured inputs of one seller's bonus under one plan.

    Revenue and targets are in the reporting currency. `close_out_value` is
    the summed bonus of the qualifying deals and `close_out_deals` their
    number.
    """

    revenue: float
    credited_revenue: float
    target: float
    team_revenue: float
    team_target: float
    close_out_value: float = 0.0
    close_out_deals: int = 0

    @property
    def attainment(self) -> float:
        """Revenue divided by target; NaN without a positive target."""
        return _ratio(self.revenue, self.target)

    @property
    def credited_attainment(self) -> float:
        """Credited revenue divided by target; NaN without a positive target."""
        return _ratio(self.credited_revenue, self.target)

    @property
    def team_attainment(self) -> float:
        """Team revenue divided by team target; NaN without a positive target."""
        return _ratio(self.team_revenue, self.team_target)


def _ratio(numerator: float, denominator: float) -> float:
    if denominator is None or math.isnan(denominator) or denominator <= 0:
        return math.nan
    return numerator / denominator


def bonus_components(plan: IncentivePlan, inputs: BonusInputs) -> dict[str, float]:
    """Split the bonus of `inputs` under `plan` into COMPONENTS, plus total.

    Each component is rounded to cents, and total is their sum. A component
    is NaN when an attainment it needs is undefined (no positive target),
    and total is then NaN too. The team pool is 0 when the plan has no team
    share, whatever the team's data.
    """
    individual = (1.0 - plan.team_pool_share) * plan.target_bonus
    team = plan.team_pool_share * plan.target_bonus
    curve = plan.curve
    plain = inputs.attainment
    credited = inputs.credited_attainment
    up_to_target = curve.payout(min(plain, 1.0)) if not math.isnan(plain) else math.nan
    values = {
        "curve": individual * up_to_target,
        "accelerator": individual * (curve.uncapped(plain) - up_to_target),
        "cap": individual * (curve.payout(plain) - curve.uncapped(plain)),
        "product_accelerator": individual
        * (curve.payout(credited) - curve.payout(plain)),
        "team_pool": team * curve.payout(inputs.team_attainment) if team else 0.0,
        "close_out": inputs.close_out_value,
    }
    rounded = {key: _cents(value) for key, value in values.items()}
    rounded["total"] = _cents(sum(rounded.values()))
    return rounded


def bonus_at(
    plan: IncentivePlan,
    attainment: float,
    team_attainment: float | None = None,
    credited_attainment: float | None = None,
) -> float:
    """Return the bonus (without close-out) at given attainments, in currency.

    `team_attainment` and `credited_attainment` default to `attainment`.
    Not rounded. Used to draw the plan's curve and to test its shape.
    """
    team_attainment = attainment if team_attainment is None else team_attainment
    credited = attainment if credited_attainment is None else credited_attainment
    individual = (1.0 - plan.team_pool_share) * plan.target_bonus
    team = plan.team_pool_share * plan.target_bonus
    team_part = team * plan.curve.payout(team_attainment) if team else 0.0
    return individual * plan.curve.payout(credited) + team_part


def _cents(value: float) -> float:
    return value if math.isnan(value) else round(value + 0.0, 2) + 0.0


# --- measuring actuals -------------------------------------------------------


def plan_as_of(con: duckdb.DuckDBPyConnection, as_of: date | None) -> date:
    """Return `as_of`, or the mart's as-of date (else its last invoice date)."""
    return parse_as_of(as_of, con)


def eligible_sellers(
    con: duckdb.DuckDBPyConnection, plan: IncentivePlan, scope: Scope | None = None
) -> pd.DataFrame:
    """Return the reps the plan covers, active at some day of its period.

    `scope` narrows the list by region, team or rep_id (the fields a rep
    has). Columns: rep_id, name, role, role_type, team, region, sorted by
    rep_id. Raises IncentiveError for a scope on another field.
    """
    scope = scope or Scope()
    extra = [
        name
        for name in ("business_unit", "account_id", "product_line")
        if getattr(scope, name) is not None
    ]
    if extra:
        raise IncentiveError(
            f"bonus scope cannot filter on {', '.join(extra)}; a seller's bonus "
            "covers all their revenue, so narrow by region, team or rep_id"
        )
    reps = con.execute(
        """
        SELECT rep_id, name, role, role_type, team, region FROM reps
        WHERE (active_from IS NULL OR active_from <= ?)
          AND (active_to IS NULL OR active_to >= ?)
        ORDER BY rep_id
        """,
        [plan.period_end, plan.period_start],
    ).df()
    columns = {
        "roles": "role",
        "teams": "team",
        "regions": "region",
        "role_types": "role_type",
        "rep_ids": "rep_id",
    }
    keep = pd.Series(True, index=reps.index)
    for key, values in plan.eligible.items():
        keep &= reps[columns[key]].isin(values)
    for name in ("region", "team", "rep_id"):
        value = getattr(scope, name)
        if value is not None:
            keep &= reps[name] == value
    return reps[keep].reset_index(drop=True)


def _check_accelerator_names(con: duckdb.DuckDBPyConnection, plan: IncentivePlan):
    """Raise ParameterError for a product line or unit the mart does not have."""
    lines = {r[0] for r in con.execute("SELECT product_line FROM products").fetchall()}
    units = {r[0] for r in con.execute("SELECT business_unit FROM products").fetchall()}
    problems = []
    for index, accelerator in enumerate(plan.product_accelerators):
        where = f"{plan.source}: plans.{plan.name}.product_accelerators[{index}]"
        for name in accelerator.product_lines:
            if name not in lines:
                known = ", ".join(sorted(str(x) for x in lines if x is not None))
                problems.append(
                    f"{where}.product_lines: unknown product line {name!r}; "
                    f"expected one of {known}"
                )
        for name in accelerator.business_units:
            if name not in units:
                known = ", ".join(sorted(str(x) for x in units if x is not None))
                problems.append(
                    f"{where}.business_units: unknown business unit {name!r}; "
                    f"expected one of {known}"
                )
    if problems:
        raise ParameterError("\n".join(problems))


def _revenue_by_line(
    con: duckdb.DuckDBPyConnection, plan: IncentivePlan, as_of: date, rep_ids: list
) -> pd.DataFrame:
    """Return each seller's revenue per product line and unit in the plan period."""
    end = min(plan.period_end, as_of)
    frame = con.execute(
        """
        SELECT t.rep_id, p.product_line,
               COALESCE(t.business_unit, p.business_unit) AS business_unit,
               sum(t.net_revenue) AS revenue
        FROM transactions t
        LEFT JOIN products p ON p.product_id = t.product_id
        WHERE t.date BETWEEN ? AND ? AND list_contains(?, t.rep_id)
        GROUP BY ALL
        """,
        [plan.period_start, end, rep_ids],
    ).df()
    frame["multiplier"] = [
        plan.multiplier(line, unit)
        for line, unit in zip(
            frame["product_line"], frame["business_unit"], strict=True
        )
    ]
    return frame


def _won_deals(
    con: duckdb.DuckDBPyConnection, plan: IncentivePlan, as_of: date, rep_ids: list
) -> pd.DataFrame:
    """Return the deals won in the plan period up to as_of, as they stood then."""
    return con.execute(
        """
        SELECT opportunity_id, rep_id, amount, closed_date FROM (
            SELECT * FROM opportunities WHERE snapshot_date <= ?
            QUALIFY snapshot_date = max(snapshot_date)
                OVER (PARTITION BY opportunity_id)
        )
        WHERE status = 'won' AND closed_date BETWEEN ? AND ?
          AND list_contains(?, rep_id)
        ORDER BY rep_id, closed_date, opportunity_id
        """,
        [as_of, plan.period_start, min(plan.period_end, as_of), rep_ids],
    ).df()


@dataclass
class _Actuals:
    """Measured inputs of every eligible seller of one plan at one as-of date."""

    plan: IncentivePlan
    as_of: date
    sellers: pd.DataFrame
    inputs: dict[str, BonusInputs]
    notes: dict[str, str]
    close_out_deals: pd.DataFrame


def _measure(
    con: duckdb.DuckDBPyConnection,
    plan: IncentivePlan,
    as_of: date | None,
    scope: Scope | None,
) -> _Actuals:
    require_tables(
        con, ["reps", "products", "transactions", "targets", "opportunities"]
    )
    as_of = plan_as_of(con, as_of)
    _check_accelerator_names(con, plan)
    sellers = eligible_sellers(con, plan, scope)
    rep_ids = sellers["rep_id"].tolist()
    revenue = _revenue_by_line(con, plan, as_of, rep_ids)
    revenue["credited"] = revenue["revenue"] * revenue["multiplier"]
    per_rep = revenue.groupby("rep_id")[["revenue", "credited"]].sum()

    deals = _won_deals(con, plan, as_of, rep_ids)
    if plan.close_out is not None and not deals.empty:
        qualifies = [
            plan.in_close_out(day.date())
            for day in pd.to_datetime(deals["closed_date"])
        ]
        deals = deals[qualifies].copy()
        deals["bonus"] = [plan.close_out.deal_bonus(a) for a in deals["amount"]]
    else:
        deals = deals.iloc[0:0].assign(bonus=pd.Series(dtype="float64"))

    team_values: dict[str, tuple[float, float]] = {}
    inputs, notes = {}, {}
    for seller in sellers.itertuples(index=False):
        target = _target(con, Scope(rep_id=seller.rep_id), plan)
        if seller.team not in team_values:
            team_values[seller.team] = _team_values(con, seller.team, plan, as_of)
        team_revenue, team_target = team_values[seller.team]
        mine = deals[deals["rep_id"] == seller.rep_id]
        inputs[seller.rep_id] = BonusInputs(
            revenue=float(per_rep["revenue"].get(seller.rep_id, 0.0)),
            credited_revenue=float(per_rep["credited"].get(seller.rep_id, 0.0)),
            target=target,
            team_revenue=team_revenue,
            team_target=team_target,
            close_out_value=float(mine["bonus"].sum()),
            close_out_deals=len(mine),
        )
        problems = []
        if not target > 0:
            problems.append("no positive revenue target for the plan period")
        if plan.team_pool_share and not team_target > 0:
            problems.append(f"team {seller.team} has no positive revenue target")
        if problems:
            notes[seller.rep_id] = "; ".join(problems)
    return _Actuals(plan, as_of, sellers, inputs, notes, deals)


def _target(con: duckdb.DuckDBPyConnection, scope: Scope, plan: IncentivePlan) -> float:
    value = kpi_values(
        con, ["target"], scope, start=plan.period_start, end=plan.period_end
    )["target"]
    return math.nan if value is None else value


def _team_values(
    con: duckdb.DuckDBPyConnection, team: Any, plan: IncentivePlan, as_of: date
) -> tuple[float, float]:
    """Return the team's revenue to date and revenue target for the plan period."""
    if team is None or pd.isna(team):
        return 0.0, math.nan
    scope = Scope(team=team)
    end = min(plan.period_end, as_of)
    revenue = kpi_values(con, ["revenue"], scope, start=plan.period_start, end=end)
    return revenue["revenue"] or 0.0, _target(con, scope, plan)


# --- live bonus --------------------------------------------------------------

_LIVE_COLUMNS = [
    "plan",
    "rep_id",
    "seller",
    "team",
    "target",
    "revenue",
    "credited_revenue",
    "attainment",
    "credited_attainment",
    "team_attainment",
    *COMPONENTS,
    "close_out_deals",
    "total",
    "note",
]


def live_bonus(
    con: duckdb.DuckDBPyConnection,
    plan: IncentivePlan,
    as_of: date | None = None,
    scope: Scope | None = None,
) -> pd.DataFrame:
    """Compute each eligible seller's bonus earned so far under `plan`.

    Actuals run from the plan start to the earlier of its end and `as_of`
    (default: the mart's as-of date); the target is the whole period's.
    Returns one row per seller with the inputs (target, revenue,
    credited_revenue, attainment, credited_attainment, team_attainment),
    each component of COMPONENTS, close_out_deals, total and note (why a
    value is undefined, else empty). Amounts are in the reporting currency
    and attainments are fractions.

    Raises ParameterError when a product accelerator names a product line
    or unit the mart lacks, IncentiveError for a scope the bonus cannot
    use, and MartError for a missing table.
    """
    actuals = _measure(con, plan, as_of, scope)
    rows = [
        _live_row(actuals, seller) for seller in actuals.sellers.itertuples(index=False)
    ]
    logger.info(
        "live bonus of plan %s as of %s: %d seller(s)",
        plan.name,
        actuals.as_of,
        len(rows),
    )
    return pd.DataFrame(rows, columns=_LIVE_COLUMNS)


def _live_row(actuals: _Actuals, seller: Any) -> dict[str, Any]:
    inputs = actuals.inputs[seller.rep_id]
    components = bonus_components(actuals.plan, inputs)
    return {
        "plan": actuals.plan.name,
        "rep_id": seller.rep_id,
        "seller": seller.name,
        "team": seller.team,
        "target": inputs.target,
        "revenue": inputs.revenue,
        "credited_revenue": inputs.credited_revenue,
        "attainment": inputs.attainment,
        "credited_attainment": inputs.credited_attainment,
        "team_attainment": inputs.team_attainment,
        **{name: components[name] for name in COMPONENTS},
        "close_out_deals": inputs.close_out_deals,
        "total": components["total"],
        "note": actuals.notes.get(seller.rep_id, ""),
    }


# --- what-if from open pipeline ----------------------------------------------

_DEAL_COLUMNS = [
    "rep_id",
    "seller",
    "opportunity_id",
    "account_name",
    "stage",
    "amount",
    "expected_close_date",
    "assumed_close_date",
    "probability",
    "multiplier",
    "close_out",
    "marginal_bonus",
]

_SELLER_COLUMNS = [
    "rep_id",
    "seller",
    "open_deals",
    "open_amount",
    "bonus_now",
    "bonus_if_all_close",
    "uplift_if_all_close",
    "bonus_if_weighted",
    "uplift_if_weighted",
]


@dataclass
class WhatIf:
    """Bonus of each seller if open deals close, and each deal's marginal effect.

    `deals` has one row per open deal counted, `sellers` one row per
    eligible seller; see `what_if` for their columns. `snapshot` is the
    pipeline snapshot the deals come from (None when there is none).
    """

    plan: IncentivePlan
    as_of: date
    snapshot: date | None
    deals: pd.DataFrame
    sellers: pd.DataFrame


def what_if(
    con: duckdb.DuckDBPyConnection,
    plan: IncentivePlan,
    as_of: date | None = None,
    scope: Scope | None = None,
) -> WhatIf:
    """Compute what each seller would earn if their open deals closed as expected.

    The deals are those open in the last pipeline snapshot on or before
    `as_of` (a snapshot with at least one open deal) whose expected close
    date is on or before the plan's end. Each deal is assumed won at its
    full amount on the later of its expected close date and the day after
    `as_of`. Its amount counts as revenue of its seller, times the product
    accelerator multiplier for the seller's own attainment and plainly for
    the team's. It earns the close-out bonus when its close day lies in a
    close-out window. Nothing is counted once `as_of` is on or after the
    plan's end.

    `deals` columns: rep_id, seller, opportunity_id, account_name, stage,
    amount, expected_close_date, assumed_close_date, probability (the
    stage's calibrated win probability), multiplier, close_out (bool) and
    marginal_bonus (total bonus with this deal alone closed minus the
    bonus now). `sellers` columns: rep_id, seller, open_deals, open_amount,
    bonus_now, bonus_if_all_close and bonus_if_weighted (every deal counted
    at amount times probability), with the uplift of each over bonus_now.
    Amounts are in the reporting currency; bonuses are NaN where the live
    bonus is.
    """
    actuals = _measure(con, plan, as_of, scope)
    as_of = actuals.as_of
    snapshot = con.execute(
        "SELECT max(snapshot_date) FROM opportunities "
        "WHERE status = 'open' AND snapshot_date <= ?",
        [as_of],
    ).fetchone()[0]
    deals = _open_deals(con, actuals, snapshot)
    names = dict(zip(actuals.sellers["rep_id"], actuals.sellers["name"], strict=True))

    marginal = []
    for deal in deals.itertuples(index=False):
        now = bonus_components(plan, actuals.inputs[deal.rep_id])["total"]
        added = _with_deals(plan, actuals.inputs[deal.rep_id], [deal], weight=False)
        marginal.append(bonus_components(plan, added)["total"] - now)
    deals["marginal_bonus"] = [_cents(value) for value in marginal]

    rows = []
    for rep_id, inputs in actuals.inputs.items():
        mine = list(deals[deals["rep_id"] == rep_id].itertuples(index=False))
        now = bonus_components(plan, inputs)["total"]
        all_close = bonus_components(plan, _with_deals(plan, inputs, mine, False))
        weighted = bonus_components(plan, _with_deals(plan, inputs, mine, True))
        rows.append(
            {
                "rep_id": rep_id,
                "seller": names[rep_id],
                "open_deals": len(mine),
                "open_amount": float(sum(_amount(deal) for deal in mine)),
                "bonus_now": now,
                "bonus_if_all_close": all_close["total"],
                "uplift_if_all_close": _cents(all_close["total"] - now),
                "bonus_if_weighted": weighted["total"],
                "uplift_if_weighted": _cents(weighted["total"] - now),
            }
        )
    logger.info(
        "what-if of plan %s as of %s: %d open deal(s) from snapshot %s",
        plan.name,
        as_of,
        len(deals),
        snapshot,
    )
    return WhatIf(
        plan,
        as_of,
        snapshot,
        deals[_DEAL_COLUMNS].reset_index(drop=True),
        pd.DataFrame(rows, columns=_SELLER_COLUMNS),
    )


def _open_deals(
    con: duckdb.DuckDBPyConnection, actuals: _Actuals, snapshot: date | None
) -> pd.DataFrame:
    plan, as_of = actuals.plan, actuals.as_of
    if snapshot is None or as_of >= plan.period_end or actuals.sellers.empty:
        return pd.DataFrame(columns=_DEAL_COLUMNS)
    deals = con.execute(
        """
        SELECT o.rep_id, r.name AS seller, o.opportunity_id, a.name AS account_name,
               o.stage, o.amount, o.expected_close_date, p.product_line,
               COALESCE(o.business_unit, p.business_unit) AS business_unit
        FROM opportunities o
        JOIN reps r ON r.rep_id = o.rep_id
        LEFT JOIN accounts a ON a.account_id = o.account_id
        LEFT JOIN products p ON p.product_id = o.product_id
        WHERE o.snapshot_date = ? AND o.status = 'open'
          AND o.expected_close_date <= ? AND list_contains(?, o.rep_id)
        ORDER BY o.rep_id, o.amount DESC, o.opportunity_id
        """,
        [snapshot, plan.period_end, actuals.sellers["rep_id"].tolist()],
    ).df()
    probabilities = stage_probabilities(con, as_of=as_of).set_index("stage")
    deals["probability"] = (
        deals["stage"].map(probabilities["probability"]).astype("float64")
    )
    deals["expected_close_date"] = pd.to_datetime(deals["expected_close_date"])
    earliest = pd.Timestamp(as_of + timedelta(days=1))
    deals["assumed_close_date"] = deals["expected_close_date"].clip(lower=earliest)
    deals["multiplier"] = [
        plan.multiplier(line, unit)
        for line, unit in zip(
            deals["product_line"], deals["business_unit"], strict=True
        )
    ]
    deals["close_out"] = [
        plan.close_out is not None and plan.in_close_out(day.date())
        for day in deals["assumed_close_date"]
    ]
    return deals


def _amount(deal: Any) -> float:
    return 0.0 if pd.isna(deal.amount) else float(deal.amount)


def _with_deals(
    plan: IncentivePlan, inputs: BonusInputs, deals: Sequence[Any], weight: bool
) -> BonusInputs:
    """Return `inputs` with the deals added as won, at full or weighted amounts."""
    revenue = credited = close_out = 0.0
    count = 0
    for deal in deals:
        share = 1.0
        if weight:
            share = 0.0 if pd.isna(deal.probability) else float(deal.probability)
        amount = _amount(deal) * share
        revenue += amount
        credited += amount * deal.multiplier
        if deal.close_out:
            close_out += plan.close_out.deal_bonus(_amount(deal)) * share
            count += 1
    return replace(
        inputs,
        revenue=inputs.revenue + revenue,
        credited_revenue=inputs.credited_revenue + credited,
        team_revenue=inputs.team_revenue + revenue,
        close_out_value=inputs.close_out_value + close_out,
        close_out_deals=inputs.close_out_deals + count,
    )


# --- statements --------------------------------------------------------------


@dataclass
class BonusStatement:
    """One seller's bonus under one plan, component by component.

    `components` has columns component, label, basis (how the amount
    follows from the inputs, in words) and amount, one row per COMPONENTS
    entry and a last row total. `deals` lists the seller's open deals of
    the what-if with their marginal bonus, and `what_if` their summary row.
    """

    plan: IncentivePlan
    rep_id: str
    seller: str
    team: str | None
    as_of: date
    currency: str
    inputs: BonusInputs
    components: pd.DataFrame
    deals: pd.DataFrame
    what_if: dict[str, Any]
    note: str = ""

    @property
    def total(self) -> float:
        """Total bonus earned so far; NaN when undefined."""
        return float(self.components["amount"].iloc[-1])


def bonus_statement(
    con: duckdb.DuckDBPyConnection,
    plan: IncentivePlan,
    rep_id: str,
    as_of: date | None = None,
) -> BonusStatement:
    """Explain one seller's live bonus under `plan`, component by component.

    Arguments and data as in `live_bonus` and `what_if`. Raises
    IncentiveError when the plan does not cover `rep_id` in its period.
    """
    scenario = what_if(con, plan, as_of, Scope(rep_id=rep_id))
    if scenario.sellers.empty:
        raise IncentiveError(
            f"plan {plan.name} does not cover rep {rep_id!r}: no such rep, or the "
            f"rep is not eligible ({_eligibility_text(plan)}) or not active between "
            f"{plan.period_start} and {plan.period_end}"
        )
    actuals = _measure(con, plan, scenario.as_of, Scope(rep_id=rep_id))
    seller = actuals.sellers.iloc[0]
    inputs = actuals.inputs[rep_id]
    currency = get_meta(con).get("currency") or "EUR"
    amounts = bonus_components(plan, inputs)
    bases = _bases(plan, inputs, seller["team"], actuals.close_out_deals, currency)
    rows = [
        {
            "component": name,
            "label": COMPONENT_LABELS[name],
            "basis": bases[name],
            "amount": amounts[name],
        }
        for name in COMPONENTS
    ]
    rows.append(
        {
            "component": "total",
            "label": "Total",
            "basis": "Sum of the components above.",
            "amount": amounts["total"],
        }
    )
    return BonusStatement(
        plan=plan,
        rep_id=rep_id,
        seller=str(seller["name"]),
        team=None if pd.isna(seller["team"]) else str(seller["team"]),
        as_of=scenario.as_of,
        currency=currency,
        inputs=inputs,
        components=pd.DataFrame(rows),
        deals=scenario.deals,
        what_if=scenario.sellers.iloc[0].to_dict(),
        note=actuals.notes.get(rep_id, ""),
    )


def _eligibility_text(plan: IncentivePlan) -> str:
    return "; ".join(
        f"{key}: {', '.join(values)}" for key, values in plan.eligible.items()
    )


def _money(value: float, currency: str) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    sign = "-" if value < 0 else ""
    return f"{sign}{currency} {abs(value):,.2f}"


def _pct(value: float) -> str:
    return format_value(value, "percent")


def _bases(
    plan: IncentivePlan,
    inputs: BonusInputs,
    team: Any,
    close_out_deals: pd.DataFrame,
    currency: str,
) -> dict[str, str]:
    """Explain in words how each component follows from the inputs."""
    curve = plan.curve
    individual = (1.0 - plan.team_pool_share) * plan.target_bonus
    plain = inputs.attainment
    bases: dict[str, str] = {}
    if math.isnan(plain):
        bases["curve"] = (
            f"Revenue {_money(inputs.revenue, currency)} has no positive target "
            "to compare with, so attainment and bonus are undefined."
        )
    elif plain < curve.threshold:
        bases["curve"] = (
            f"Attainment {_pct(plain)} (revenue {_money(inputs.revenue, currency)} "
            f"of target {_money(inputs.target, currency)}) is below the threshold "
            f"{_pct(curve.threshold)}, so the individual part pays nothing."
        )
    else:
        bases["curve"] = (
            f"Attainment {_pct(plain)} (revenue {_money(inputs.revenue, currency)} "
            f"of target {_money(inputs.target, currency)}) pays "
            f"{_pct(curve.payout(min(plain, 1.0)))} of the individual part "
            f"{_money(individual, currency)}."
        )

    if not math.isnan(plain) and plain > 1.0:
        bases["accelerator"] = (
            f"{_pct(plain - 1.0)} above 100 % adds "
            f"{_pct(curve.uncapped(plain) - 1.0)} of the individual part "
            f"(rates {', '.join(f'{r:g} from {_pct(s)}' for s, r in curve.accelerators)})."
        )
    else:
        bases["accelerator"] = "Attainment is not above 100 %."

    if curve.cap is None:
        bases["cap"] = "The plan has no cap."
    elif not math.isnan(plain) and curve.uncapped(plain) > curve.cap:
        bases["cap"] = (
            f"The payout share {_pct(curve.uncapped(plain))} is capped at "
            f"{_pct(curve.cap)}."
        )
    else:
        bases["cap"] = (
            f"The cap at {_pct(curve.cap)} of the target bonus is not reached."
        )

    if not plan.product_accelerators:
        bases["product_accelerator"] = "The plan has no product accelerators."
    else:
        names = ", ".join(
            f"{item.name} x{item.multiplier:g}" for item in plan.product_accelerators
        )
        bases["product_accelerator"] = (
            f"Credited revenue {_money(inputs.credited_revenue, currency)} ({names}) "
            f"gives attainment {_pct(inputs.credited_attainment)} instead of "
            f"{_pct(plain)}."
        )

    if not plan.team_pool_share:
        bases["team_pool"] = "The plan has no team pool."
    else:
        team_part = plan.team_pool_share * plan.target_bonus
        bases["team_pool"] = (
            f"Team {team} attainment {_pct(inputs.team_attainment)} (revenue "
            f"{_money(inputs.team_revenue, currency)} of target "
            f"{_money(inputs.team_target, currency)}) pays "
            f"{_pct(curve.payout(inputs.team_attainment))} of the team part "
            f"{_money(team_part, currency)} ({_pct(plan.team_pool_share)} of the "
            "target bonus)."
        )

    if plan.close_out is None:
        bases["close_out"] = "The plan has no close-out bonus."
    else:
        rule = plan.close_out
        terms = " + ".join(
            part
            for part in (
                f"{_money(rule.per_deal, currency)} per deal" if rule.per_deal else "",
                f"{_pct(rule.rate)} of its amount" if rule.rate else "",
            )
            if part
        )
        window = f"the last {rule.weeks} week(s) of each {rule.per}"
        if inputs.close_out_deals:
            bases["close_out"] = (
                f"{inputs.close_out_deals} deal(s) won in {window} pay {terms}."
            )
        else:
            bases["close_out"] = f"No deal won yet in {window} ({terms} each)."
    return bases


def render_statement(statement: BonusStatement) -> str:
    """Render a bonus statement as plain text, one line per component.

    Amounts show cents, so the total is visibly the sum of the components.
    """
    plan = statement.plan
    currency = statement.currency
    lines = [
        f"Bonus statement of {statement.seller} ({statement.rep_id}), "
        f"team {statement.team or 'none'}",
        f"Plan {plan.name}, {plan.period_start} to {plan.period_end}, as of "
        f"{statement.as_of}. Target bonus {_money(plan.target_bonus, currency)}.",
        "",
    ]
    width = max(len(label) for label in statement.components["label"])
    for row in statement.components.itertuples(index=False):
        amount = _money(row.amount, currency)
        if row.component == "total":
            lines.append("")
        lines.append(f"{row.label:<{width}}  {amount:>16}  {row.basis}")
    if statement.note:
        lines.extend(["", f"Note: {statement.note}."])
    summary = statement.what_if
    if summary["open_deals"]:
        lines.extend(
            [
                "",
                f"If your {summary['open_deals']} open deal(s) worth "
                f"{_money(summary['open_amount'], currency)} close by their expected "
                f"dates: {_money(summary['bonus_if_all_close'], currency)} "
                f"({_money(summary['uplift_if_all_close'], currency)} more). "
                "Weighted by stage win probability: "
                f"{_money(summary['bonus_if_weighted'], currency)}.",
            ]
        )
        for deal in statement.deals.itertuples(index=False):
            lines.append(
                f"  {deal.opportunity_id} {deal.account_name}: "
                f"{_money(_amount(deal), currency)}, {deal.stage}, due "
                f"{deal.expected_close_date:%Y-%m-%d}: "
                f"{_money(deal.marginal_bonus, currency)} on its own"
            )
    return "\n".join(lines) + "\n"
