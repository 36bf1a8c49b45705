"""Run parameters of the notebook batch: load, check and merge `run.yaml`.

The file has two sections. `defaults` applies to every notebook run, and
`overrides` maps a region ("East") or a region and business unit
("East/Furniture") to the values that differ there. Values merge in the
order built-in defaults < `defaults` < region < region/unit.

Every value is checked against a JSON Schema before any notebook starts, and
keys the schema does not know are errors, so a typo cannot silently fall
back to a default. YAML timestamps are read as text, so `as_of: 2024-06-30`
is checked as a date string and reaches the notebooks unchanged.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cockpit.errors import ParameterError
from cockpit.paths import PARAMETERS_DIR

logger = logging.getLogger(__name__)

#: File read when `run_batch` gets no parameter file.
DEFAULT_PARAMETERS_FILE = PARAMETERS_DIR / "run.yaml"

#: Values every run starts from before the file's `defaults` apply.
BUILTIN_DEFAULTS: dict[str, Any] = {
    "as_of": None,
    "forecast_horizon": 12,
    "growth_pct": 0.05,
    "backtest_holdout": 12,
    "incentive_plan": None,
    "regressors": [],
    "scenario_file": None,
    "notebooks": [
        "01_data_audit",
        "02_forecast",
        "03_targets",
        "04_kpi_review",
        "05_pipeline_behaviour",
        "06_gap_and_warnings",
    ],
}

#: Schema of one set of parameter values, shared by `defaults` and overrides.
PARAMETER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "as_of": {
            "type": ["string", "null"],
            "format": "date",
            "description": "as-of date YYYY-MM-DD; null takes the mart's as-of date",
        },
        "forecast_horizon": {
            "type": "integer",
            "minimum": 1,
            "maximum": 60,
            "description": "months to forecast",
        },
        "growth_pct": {
            "type": "number",
            "minimum": -1,
            "maximum": 1,
            "description": "growth as a fraction, 0.05 for 5 %",
        },
        "backtest_holdout": {
            "type": "integer",
            "minimum": 1,
            "maximum": 60,
            "description": "months held out to backtest the forecast",
        },
        "regressors": {
            "type": "array",
            "description": "market indicators for the forecast: indicator, region, lag, extension",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["indicator"],
                "properties": {
                    "indicator": {"type": "string"},
                    "region": {"type": ["string", "null"]},
                    "lag": {"type": "integer", "minimum": 0, "maximum": 24},
                    "extension": {"enum": ["carry_forward", "yoy_growth"]},
                },
            },
        },
        "scenario_file": {
            "type": ["string", "null"],
            "description": "CSV of indicator values that replace the extension rule",
        },
        "incentive_plan": {
            "type": ["string", "null"],
            "description": "plan name in parameters/incentive_plans.yaml; null takes the plan covering as_of",
        },
        "notebooks": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"},
            "description": "notebook names, without .ipynb, run in this order",
        },
    },
}

#: Schema of the whole file.
FILE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "defaults": {"anyOf": [{"type": "null"}, PARAMETER_SCHEMA]},
        "overrides": {
            "type": ["object", "null"],
            "propertyNames": {"type": "string", "pattern": r"^[^/]+(/[^/]+)?$"},
            "additionalProperties": {"anyOf": [{"type": "null"}, PARAMETER_SCHEMA]},
        },
    },
}

_INTEGER_KEYS = ("forecast_horizon", "backtest_holdout")

_JSON_TYPE_WORDS = {
    "object": "mapping",
    "array": "list",
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "null": "null",
}


@dataclass(frozen=True)
class ParameterSet:
    """Checked parameter values of one run: defaults and per-scope overrides.

    `overrides` maps "Region" or "Region/Unit" to the values set there.
    `source` is the file they came from, or None for the built-in defaults.
    """

    defaults: dict[str, Any]
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: Path | None = None

    def for_pair(self, region: str, business_unit: str) -> dict[str, Any]:
        """Return the merged values for one region and business unit.

        Order: built-in defaults < `defaults` < region < region/unit.
        """
        merged = copy.deepcopy(BUILTIN_DEFAULTS)
        merged.update(copy.deepcopy(self.defaults))
        merged.update(copy.deepcopy(self.overrides.get(region, {})))
        merged.update(
            copy.deepcopy(self.overrides.get(f"{region}/{business_unit}", {}))
        )
        return merged

    def check_scopes(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Raise ParameterError for an override naming no known region or pair.

        `pairs` are the (region, business unit) pairs the mart has. An override
        for a misspelt region would otherwise never apply, silently.
        """
        pairs = list(pairs)
        regions = {region for region, _ in pairs}
        known = {f"{region}/{unit}" for region, unit in pairs}
        problems = []
        for key in self.overrides:
            if "/" in key and key not in known:
                problems.append(
                    f"{self._where()}: overrides.{_quote(key)}: no region/unit "
                    f"pair {key!r} in the mart; known pairs: {', '.join(sorted(known))}"
                )
            elif "/" not in key and key not in regions:
                problems.append(
                    f"{self._where()}: overrides.{_quote(key)}: no region {key!r} "
                    f"in the mart; known regions: {', '.join(sorted(regions))}"
                )
        if problems:
            raise ParameterError(
                "\n".join(problems) + "\nFix the override key or remove the override."
            )

    def _where(self) -> str:
        return str(self.source) if self.source else "built-in parameters"


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping in the YAML text repeats a key."""


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that keeps dates as text and rejects repeated keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                continue  # the base loader raises for unhashable keys
            if key in seen:
                raise _DuplicateKeyError(
                    None,
                    None,
                    f"key {key!r} repeats the one on line {seen[key].line + 1}",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_parameters(path: str | Path | None = None) -> ParameterSet:
    """Read, check and return the run parameters in `path`.

    With `path` None, reads `parameters/run.yaml` when it exists and falls
    back to the built-in defaults otherwise. Raises ParameterError naming the
    file, the key path, the expected type and the value found, for every
    problem at once: a missing file, invalid YAML, an unknown key or a value
    of the wrong type or range.
    """
    if path is None:
        if not DEFAULT_PARAMETERS_FILE.is_file():
            logger.info("no %s; using the built-in parameters", DEFAULT_PARAMETERS_FILE)
            return ParameterSet(defaults={})
        path = DEFAULT_PARAMETERS_FILE
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ParameterError(
            f"parameter file {path} not found; pass an existing YAML file or "
            f"leave the option out to use {DEFAULT_PARAMETERS_FILE}"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterError(
            f"cannot read parameter file {path}: {exc}; save it as UTF-8 text"
        ) from exc
    document = parse_parameters(text, path)
    return ParameterSet(
        defaults=_normalise(document.get("defaults") or {}),
        overrides={
            key: _normalise(values or {})
            for key, values in (document.get("overrides") or {}).items()
        },
        source=path,
    )


def parse_parameters(text: str, path: str | Path = "<text>") -> dict[str, Any]:
    """Parse and check the YAML `text` of a parameter file; return its mapping.

    `path` only names the file in error messages. Raises ParameterError as
    `load_parameters` does.
    """
    try:
        # _Loader is a SafeLoader subclass, so no tag can build Python objects.
        document = yaml.load(text, Loader=_Loader)
    except _DuplicateKeyError as exc:
        raise ParameterError(
            f"{_mark(path, exc)}: invalid YAML: {exc.problem}; remove or rename "
            "one of the two"
        ) from exc
    except yaml.MarkedYAMLError as exc:
        raise ParameterError(
            f"{_mark(path, exc)}: invalid YAML: {exc.problem or exc.context}; fix "
            "the syntax at that line (indent with spaces, one `key: value` per line)"
        ) from exc
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path}: invalid YAML: {exc}") from exc
    if document is None:
        return {}
    validator = jsonschema.Draft202012Validator(
        FILE_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    problems = [
        _describe(error, path)
        for error in sorted(validator.iter_errors(document), key=_error_order)
    ]
    if problems:
        raise ParameterError("\n".join(problems))
    return document


def _mark(path: str | Path, exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    return f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)


def _normalise(values: Mapping[str, Any]) -> dict[str, Any]:
    """Turn integral floats such as 12.0 into int for the integer keys."""
    result = dict(values)
    for key in _INTEGER_KEYS:
        if isinstance(result.get(key), float):
            result[key] = int(result[key])
    return result


def _error_order(error: jsonschema.ValidationError) -> tuple[str, ...]:
    return tuple(str(part) for part in error.absolute_path)


def _describe(error: jsonschema.ValidationError, path: str | Path) -> str:
    """Render one schema error as `file: key.path: expected ..., found ...`."""
    # An `anyOf` of null or the parameter mapping fails as a whole, so report
    # the mapping branch's own errors, which name the bad key inside it.
    if error.validator == "anyOf" and isinstance(error.instance, dict):
        inner = [
            sub
            for sub in error.context or []
            if not (sub.validator == "type" and sub.validator_value == "null")
        ]
        if inner:
            return "\n".join(_describe(sub, path) for sub in inner)
    key_path = _key_path(error.absolute_path)
    found = _found(error.instance)
    if error.validator == "anyOf":
        return f"{path}: {key_path}: expected mapping or null, found {found}"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed), key=str)
        return "\n".join(
            f"{path}: {_key_path([*error.absolute_path, key])}: unknown key; "
            f"expected one of {', '.join(allowed)}"
            for key in unknown
        )
    return f"{path}: {key_path}: {_expectation(error)}, found {found}"


def _expectation(error: jsonschema.ValidationError) -> str:
    """Describe the value a schema error expected, e.g. "expected integer >= 1"."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    note = f" ({schema['description']})" if "description" in schema else ""
    if error.validator == "type":
        return f"expected {_type_words(error.validator_value)}{note}"
    if error.validator in ("minimum", "maximum"):
        sign = ">=" if error.validator == "minimum" else "<="
        expected = _type_words(schema.get("type", "number"))
        return f"expected {expected} {sign} {error.validator_value}{note}"
    if error.validator == "format":
        return "expected a date as YYYY-MM-DD"
    if error.validator == "pattern" and "notebooks" in error.absolute_path:
        return "expected a notebook name of letters, digits, _ . or -"
    if error.validator == "pattern" and _is_override_key(error):
        return "expected an override key 'Region' or 'Region/Unit'"
    if error.validator == "pattern":
        return f"expected text matching {error.validator_value}"
    if error.validator == "minItems":
        return f"expected a list of at least {error.validator_value} item(s)"
    if error.validator == "uniqueItems":
        return "expected a list without repeats"
    return error.message


def _is_override_key(error: jsonschema.ValidationError) -> bool:
    return list(error.absolute_path) == ["overrides"]


def _key_path(parts: Iterable[Any]) -> str:
    rendered = []
    for part in parts:
        if isinstance(part, int):
            rendered.append(f"[{part}]")
        else:
            rendered.append(("." if rendered else "") + _quote(str(part)))
    return "".join(rendered) or "(top level)"


def _quote(key: str) -> str:
    """Quote a key that would be ambiguous in a dotted path."""
    return key if key.replace("_", "").isalnum() else f'"{key}"'


def _type_words(json_type: str | list[str]) -> str:
    types = [json_type] if isinstance(json_type, str) else list(json_type)
    return " or ".join(_JSON_TYPE_WORDS.get(name, name) for name in types)


def _found(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        kind = "boolean"
    elif isinstance(value, int):
        kind = "integer"
    elif isinstance(value, float):
        kind = "number"
    elif isinstance(value, str):
        kind = "string"
    elif isinstance(value, list):
        kind = "list"
    elif isinstance(value, dict):
        kind = "mapping"
    else:
        kind = type(value).__name__
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"
