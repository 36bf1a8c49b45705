"""Source specifications: YAML files that describe how an export maps onto the mart.

A spec names its inputs (CSV files, Excel sheets, Parquet files or SQL
queries), optional lookups between them, and one or more loads, each of
which fills one canonical table from one input through a column mapping.
parameters/sources/README.md documents every key with examples.

`load_spec` checks the whole file and raises one ParameterError that lists
every problem, each with the YAML file, the key path, what was expected and
what was found.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cockpit.errors import ParameterError
from cockpit.mart.schema import OPPORTUNITY_STATUSES, TABLES

logger = logging.getLogger(__name__)

FORMATS = ("csv", "excel", "parquet", "sql")

#: File pattern an input uses when its spec gives none.
DEFAULT_PATTERNS = {"csv": "*.csv", "excel": "*.xls*", "parquet": "*.parquet"}

#: Expression kinds a column mapping may use.
EXPRESSION_KINDS = ("column", "value", "subtract", "lookup", "most", "latest")

#: Tables the loader writes itself; a spec may not load into them.
RESERVED_TABLES = ("quarantine", "load_log", "mart_meta")

#: Columns the loader fills itself; a spec may not map them.
RESERVED_COLUMNS = ("source", "source_file")

#: Amount columns converted into the reporting currency, per table.
AMOUNT_COLUMNS = {
    "transactions": ("net_revenue", "cost"),
    "opportunities": ("amount",),
}

#: Column whose date picks the exchange rate, per table.
FX_DATE_COLUMNS = {"transactions": "date", "opportunities": "snapshot_date"}

_CURRENCY_CODE = re.compile(r"[A-Z]{3}")


@dataclass(frozen=True)
class Expression:
    """How one canonical column gets its value from an input row.

    Kinds: `column` (a source column, parsed to the target type), `value`
    (a constant), `subtract` (first column minus second), `lookup` (value
    of a named lookup for the row's `key` column), `most` (in grouped loads:
    the value with the largest total `weight`, or the most rows) and
    `latest` (the latest date found in any of `columns`, the same for all
    rows).
    """

    kind: str
    column: str | None = None
    columns: tuple[str, ...] = ()
    value: Any = None
    lookup: str | None = None
    key: str | None = None
    weight: str | None = None
    formats: tuple[str, ...] | None = None
    day_first: bool | None = None
    scale: float | None = None
    estimate: Expression | None = None
    estimate_when: tuple[str, ...] = ()

    def source_columns(self) -> list[str]:
        """Columns of the load's own input that this expression reads."""
        names: list[str] = []
        if self.column:
            names.append(self.column)
        names.extend(self.columns)
        if self.kind == "lookup" and self.key:
            names.append(self.key)
        if self.weight:
            names.append(self.weight)
        if self.estimate is not None:
            names.extend(self.estimate.source_columns())
        return names


@dataclass(frozen=True)
class InputSpec:
    """One export file, sheet or query that loads read from."""

    name: str
    format: str
    file: str | None = None
    sheet: str | None = None
    header_row: int = 1
    encoding: str = "utf-8"
    delimiter: str = ","
    quotechar: str = '"'
    decimal: str = "."
    thousands: str | None = ","
    date_format: tuple[str, ...] | None = None
    day_first: bool | None = None
    timezone: str = "UTC"
    excel_serial: bool = True
    excel_epoch: int = 1900
    query: str | None = None
    url: str | None = None
    url_env: str | None = None
    required: tuple[str, ...] = ()

    @property
    def pattern(self) -> str | None:
        """File name or glob pattern, with the format's default when none is set."""
        if self.format == "sql":
            return None
        return self.file or DEFAULT_PATTERNS[self.format]


@dataclass(frozen=True)
class LookupSpec:
    """A key-to-value map built from one input, used by `lookup` expressions."""

    name: str
    source: str
    key: str
    value: Expression
    match: str = "exact"
    pick: str = "first"


@dataclass(frozen=True)
class StageSpec:
    """Canonical stage name and status for one stage label of the export."""

    stage: str
    status: str


@dataclass(frozen=True)
class LoadSpec:
    """One load: rows of one input mapped onto one canonical table."""

    table: str
    source: str
    columns: dict[str, Expression]
    group_by: str | None = None
    alternates: str | None = None
    stages: dict[str, StageSpec] | None = None
    currency: str | None = None
    currency_column: str | None = None
    fx_date: str | None = None
    returns_column: str | None = None
    returns_values: tuple[str, ...] = ()
    returns_negate: bool = False
    keep: str = "first"

    def source_columns(self) -> list[str]:
        """Columns of the input this load reads."""
        names: list[str] = []
        for expression in self.columns.values():
            names.extend(expression.source_columns())
        for extra in (self.group_by, self.currency_column, self.returns_column):
            if extra:
                names.append(extra)
        return names


@dataclass(frozen=True)
class SourceSpec:
    """A whole source specification, read from one YAML file."""

    name: str
    path: Path
    inputs: dict[str, InputSpec]
    loads: list[LoadSpec]
    lookups: dict[str, LookupSpec] = field(default_factory=dict)
    description: str = ""
    company: str | None = None
    reporting_currency: str = "USD"
    as_of: tuple[str, str] | None = None

    def required_columns(self, input_name: str) -> list[str]:
        """Every column of `input_name` that a load or lookup reads, without repeats."""
        names = list(self.inputs[input_name].required)
        for load in self.loads:
            if load.source == input_name:
                names.extend(load.source_columns())
        for lookup in self.lookups.values():
            if lookup.source == input_name:
                names.append(lookup.key)
                names.extend(lookup.value.source_columns())
        return list(dict.fromkeys(names))


# --- reading and checking ----------------------------------------------------


class _Checker:
    """Collects every problem of one YAML file with the key path it sits at."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []

    def fail(self, where: str, expected: str, got: object) -> None:
        found = "nothing" if got is None else repr(got)
        self.problems.append(f"{where}: expected {expected}, got {found}")

    def mapping(self, data: object, where: str) -> dict[str, Any]:
        if isinstance(data, Mapping):
            return dict(data)
        self.fail(where, "a mapping of keys to values", data)
        return {}

    def keys(
        self, data: Mapping[str, Any], allowed: tuple[str, ...], where: str
    ) -> None:
        for key in data:
            if key not in allowed:
                self.problems.append(
                    f"{where}.{key}: unknown key; expected one of {', '.join(allowed)}"
                )

    def text(
        self,
        data: Mapping[str, Any],
        key: str,
        where: str,
        default=None,
        required=False,
    ):
        if key not in data or data[key] is None:
            if required:
                self.fail(f"{where}.{key}", "a text value", None)
            return default
        value = data[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or (required and not value.strip()):
            self.fail(f"{where}.{key}", "a text value", value)
            return default
        return value

    def flag(self, data: Mapping[str, Any], key: str, where: str, default=None):
        if key not in data or data[key] is None:
            return default
        if not isinstance(data[key], bool):
            self.fail(f"{where}.{key}", "true or false", data[key])
            return default
        return data[key]

    def choice(self, data, key, where, choices, default):
        value = data.get(key, default)
        if value not in choices:
            self.fail(f"{where}.{key}", f"one of {', '.join(map(str, choices))}", value)
            return default
        return value

    def text_list(self, data, key, where, default=()):
        if key not in data or data[key] is None:
            return tuple(default) if default is not None else None
        value = data[key]
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return tuple(value)
        self.fail(f"{where}.{key}", "a text value or a list of text values", value)
        return tuple(default) if default is not None else None


def _parse_expression(raw: object, where: str, check: _Checker) -> Expression | None:
    if isinstance(raw, str):
        if not raw.strip():
            check.fail(where, "a source column name", raw)
            return None
        return Expression("column", column=raw)
    if not isinstance(raw, Mapping):
        check.fail(
            where,
            "a source column name or a mapping with one of "
            + ", ".join(EXPRESSION_KINDS),
            raw,
        )
        return None
    kinds = [kind for kind in EXPRESSION_KINDS if kind in raw]
    if len(kinds) != 1:
        check.fail(where, "exactly one of " + ", ".join(EXPRESSION_KINDS), dict(raw))
        return None
    kind = kinds[0]
    allowed = {
        "column": (
            "column",
            "format",
            "day_first",
            "scale",
            "estimate",
            "estimate_when",
        ),
        "value": ("value",),
        "subtract": ("subtract",),
        "lookup": ("lookup", "key"),
        "most": ("most", "weight"),
        "latest": ("latest", "format", "day_first"),
    }[kind]
    check.keys(raw, allowed, where)
    formats = check.text_list(raw, "format", where, default=None)
    day_first = check.flag(raw, "day_first", where)
    if kind == "column":
        column = check.text(raw, "column", where, required=True)
        scale = raw.get("scale")
        if scale is not None and (
            isinstance(scale, bool) or not isinstance(scale, (int, float))
        ):
            check.fail(f"{where}.scale", "a number", scale)
            scale = None
        estimate = None
        if "estimate" in raw:
            estimate = _parse_expression(raw["estimate"], f"{where}.estimate", check)
        when = check.text_list(raw, "estimate_when", where)
        for status in when:
            if status not in OPPORTUNITY_STATUSES:
                check.fail(
                    f"{where}.estimate_when",
                    f"statuses among {', '.join(OPPORTUNITY_STATUSES)}",
                    status,
                )
        return Expression(
            "column",
            column=column,
            formats=formats,
            day_first=day_first,
            scale=None if scale is None else float(scale),
            estimate=estimate,
            estimate_when=when,
        )
    if kind == "value":
        value = raw["value"]
        if isinstance(value, (list, dict)):
            check.fail(f"{where}.value", "a single constant", value)
            value = None
        return Expression("value", value=value)
    if kind == "subtract":
        pair = raw["subtract"]
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(p, str) for p in pair)
        ):
            check.fail(f"{where}.subtract", "a list of two source column names", pair)
            return None
        return Expression("subtract", columns=tuple(pair))
    if kind == "lookup":
        return Expression(
            "lookup",
            lookup=check.text(raw, "lookup", where, required=True),
            key=check.text(raw, "key", where, required=True),
        )
    if kind == "most":
        return Expression(
            "most",
            column=check.text(raw, "most", where, required=True),
            weight=check.text(raw, "weight", where),
        )
    columns = check.text_list(raw, "latest", where)
    return Expression("latest", columns=columns, formats=formats, day_first=day_first)


_INPUT_KEYS = (
    "format",
    "file",
    "sheet",
    "header_row",
    "encoding",
    "delimiter",
    "quotechar",
    "decimal",
    "thousands",
    "date_format",
    "day_first",
    "timezone",
    "excel_serial",
    "excel_epoch",
    "query",
    "url",
    "url_env",
    "required",
)


def _parse_input(name: str, raw: object, where: str, check: _Checker) -> InputSpec:
    data = check.mapping(raw, where)
    check.keys(data, _INPUT_KEYS, where)
    form = check.choice(data, "format", where, FORMATS, "csv")
    if "format" not in data:
        check.fail(f"{where}.format", f"one of {', '.join(FORMATS)}", None)
    delimiter = check.text(data, "delimiter", where, ",")
    if delimiter == "\\t":
        delimiter = "\t"
    if delimiter != "auto" and len(delimiter) != 1:
        check.fail(f"{where}.delimiter", "one character or auto", delimiter)
    decimal = check.text(data, "decimal", where, ".")
    if decimal not in (".", ","):
        check.fail(f"{where}.decimal", "'.' or ','", decimal)
        decimal = "."
    thousands = data.get("thousands", "," if decimal == "." else ".")
    if thousands in ("", None):
        thousands = None
    elif thousands not in (",", ".", " ", "'", "\u00a0") or thousands == decimal:
        check.fail(
            f"{where}.thousands",
            "one of ',', '.', ' ', \"'\" or '' that differs from decimal",
            thousands,
        )
        thousands = None
    header_row = data.get("header_row", 1)
    if (
        isinstance(header_row, bool)
        or not isinstance(header_row, int)
        or header_row < 1
    ):
        check.fail(f"{where}.header_row", "a row number from 1", header_row)
        header_row = 1
    epoch = data.get("excel_epoch", 1900)
    if epoch not in (1900, 1904):
        check.fail(f"{where}.excel_epoch", "1900 or 1904", epoch)
        epoch = 1900
    spec = InputSpec(
        name=name,
        format=form,
        file=check.text(data, "file", where),
        sheet=check.text(data, "sheet", where),
        header_row=header_row,
        encoding=check.text(data, "encoding", where, "utf-8"),
        delimiter=delimiter,
        quotechar=check.text(data, "quotechar", where, '"'),
        decimal=decimal,
        thousands=thousands,
        date_format=check.text_list(data, "date_format", where, default=None),
        day_first=check.flag(data, "day_first", where),
        timezone=check.text(data, "timezone", where, "UTC"),
        excel_serial=check.flag(data, "excel_serial", where, True),
        excel_epoch=epoch,
        query=check.text(data, "query", where),
        url=check.text(data, "url", where),
        url_env=check.text(data, "url_env", where),
        required=check.text_list(data, "required", where),
    )
    if form == "excel" and not spec.sheet:
        check.fail(f"{where}.sheet", "the name of the sheet to read", None)
    if form == "sql":
        if not spec.query:
            check.fail(f"{where}.query", "an SQL query", None)
        if not (spec.url or spec.url_env):
            check.fail(
                f"{where}.url",
                "a database URL, or url_env naming a variable that contains one",
                None,
            )
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(spec.timezone)
    except (KeyError, ValueError):
        check.fail(
            f"{where}.timezone",
            "an IANA time zone such as UTC or Europe/Paris",
            spec.timezone,
        )
    return spec


def _parse_lookup(
    name: str, raw: object, where: str, inputs, check: _Checker
) -> LookupSpec | None:
    data = check.mapping(raw, where)
    check.keys(data, ("from", "key", "value", "match", "pick"), where)
    source = check.text(data, "from", where, required=True)
    if source is not None and source not in inputs:
        check.fail(f"{where}.from", f"an input name ({', '.join(inputs)})", source)
    value = _parse_expression(data.get("value"), f"{where}.value", check)
    if value is not None and value.kind not in ("column", "lookup"):
        check.fail(f"{where}.value", "a source column or a lookup", value.kind)
    key = check.text(data, "key", where, required=True)
    if source is None or key is None or value is None:
        return None
    return LookupSpec(
        name=name,
        source=source,
        key=key,
        value=value,
        match=check.choice(data, "match", where, ("exact", "normalised"), "exact"),
        pick=check.choice(data, "pick", where, ("first", "most"), "first"),
    )


_LOAD_KEYS = (
    "table",
    "from",
    "columns",
    "group_by",
    "alternates",
    "stages",
    "currency",
    "fx_date",
    "returns",
    "keep",
)


def _parse_stages(raw: object, where: str, check: _Checker) -> dict[str, StageSpec]:
    stages: dict[str, StageSpec] = {}
    for label, target in check.mapping(raw, where).items():
        place = f"{where}.{label}"
        if isinstance(target, str):
            stage, status = str(label), target
        elif isinstance(target, Mapping):
            check.keys(target, ("stage", "status"), place)
            stage = check.text(target, "stage", place, str(label))
            status = target.get("status")
        else:
            check.fail(place, "a status or a mapping with stage and status", target)
            continue
        if status not in OPPORTUNITY_STATUSES:
            check.fail(
                place, f"a status among {', '.join(OPPORTUNITY_STATUSES)}", status
            )
            continue
        stages[_stage_key(str(label))] = StageSpec(stage, status)
    return stages


def _stage_key(label: str) -> str:
    """Stage labels match without regard to case or surrounding spaces."""
    return " ".join(label.split()).casefold()


def _parse_load(
    index: int, raw: object, inputs, lookups, check: _Checker
) -> LoadSpec | None:
    where = f"loads[{index}]"
    data = check.mapping(raw, where)
    check.keys(data, _LOAD_KEYS, where)
    table_name = check.text(data, "table", where, required=True)
    if table_name is None:
        return None
    if table_name not in TABLES or table_name in RESERVED_TABLES:
        allowed = [t for t in TABLES if t not in RESERVED_TABLES]
        check.fail(f"{where}.table", f"a mart table ({', '.join(allowed)})", table_name)
        return None
    table = TABLES[table_name]
    where = f"loads[{index}] ({table_name})"
    source = data.get("from")
    if source is None and len(inputs) == 1:
        source = next(iter(inputs))
    if source not in inputs:
        check.fail(f"{where}.from", f"an input name ({', '.join(inputs)})", source)
        return None

    columns: dict[str, Expression] = {}
    for target, expr in check.mapping(data.get("columns"), f"{where}.columns").items():
        place = f"{where}.columns.{target}"
        if target in RESERVED_COLUMNS:
            check.problems.append(
                f"{place}: the loader fills {target} itself; remove it"
            )
            continue
        if target not in table.column_names:
            check.fail(
                place,
                f"a column of {table_name} ({', '.join(table.column_names)})",
                target,
            )
            continue
        parsed = _parse_expression(expr, place, check)
        if parsed is None:
            continue
        if parsed.kind == "lookup" and parsed.lookup not in lookups:
            check.fail(
                f"{place}.lookup",
                f"a lookup name ({', '.join(lookups) or 'none defined'})",
                parsed.lookup,
            )
        if (
            parsed.estimate is not None
            and parsed.estimate.kind == "lookup"
            and parsed.estimate.lookup not in lookups
        ):
            check.fail(
                f"{place}.estimate.lookup",
                f"a lookup name ({', '.join(lookups) or 'none defined'})",
                parsed.estimate.lookup,
            )
        if (
            parsed.kind == "value"
            and parsed.value is not None
            and table.column(target).allowed
        ) and parsed.value not in table.column(target).allowed:
            check.fail(
                f"{place}.value",
                f"one of {', '.join(table.column(target).allowed)}",
                parsed.value,
            )
        columns[target] = parsed

    group_by = check.text(data, "group_by", where)
    if group_by is None:
        for target, parsed in columns.items():
            if parsed.kind == "most":
                check.problems.append(
                    f"{where}.columns.{target}: most needs group_by in the same load"
                )
    alternates = check.text(data, "alternates", where)
    if alternates is not None and (
        group_by is None
        or alternates not in columns
        or columns[alternates].kind != "column"
    ):
        check.problems.append(
            f"{where}.alternates: expected a column mapped from a source column in a load with group_by, got {alternates!r}"
        )

    stages = None
    if "stages" in data:
        if "stage" not in columns:
            check.problems.append(
                f"{where}.stages: map the stage column too (columns.stage)"
            )
        stages = _parse_stages(data["stages"], f"{where}.stages", check)
    elif table_name == "opportunities" and "status" not in columns:
        check.problems.append(
            f"{where}: map status, or give stages to derive it from stage"
        )

    currency = currency_column = None
    if "currency" in data:
        raw_currency = data["currency"]
        if isinstance(raw_currency, str):
            currency = raw_currency
        elif (
            isinstance(raw_currency, Mapping)
            and len(raw_currency) == 1
            and ("fixed" in raw_currency or "column" in raw_currency)
        ):
            currency = raw_currency.get("fixed")
            currency_column = raw_currency.get("column")
        else:
            check.fail(
                f"{where}.currency",
                "a currency code, {fixed: CODE} or {column: NAME}",
                raw_currency,
            )
        if currency is not None and not _CURRENCY_CODE.fullmatch(str(currency)):
            check.fail(
                f"{where}.currency",
                "a three-letter currency code such as EUR",
                currency,
            )
        if "currency" in columns:
            check.problems.append(
                f"{where}: give the currency either under currency or under columns, not both"
            )
    elif table_name in AMOUNT_COLUMNS and "currency" not in columns:
        check.problems.append(
            f"{where}.currency: expected {{fixed: CODE}} or {{column: NAME}} for the amounts, got nothing"
        )

    fx_date = check.text(data, "fx_date", where, FX_DATE_COLUMNS.get(table_name))
    if fx_date is not None and fx_date not in table.column_names:
        check.fail(f"{where}.fx_date", f"a date column of {table_name}", fx_date)

    returns_column = None
    returns_values: tuple[str, ...] = ()
    returns_negate = False
    if "returns" in data:
        if table_name != "transactions":
            check.problems.append(f"{where}.returns: only transactions have returns")
        returns = check.mapping(data["returns"], f"{where}.returns")
        check.keys(returns, ("column", "values", "negate"), f"{where}.returns")
        returns_column = check.text(
            returns, "column", f"{where}.returns", required=True
        )
        returns_values = check.text_list(returns, "values", f"{where}.returns")
        returns_negate = check.flag(returns, "negate", f"{where}.returns", False)

    missing = [
        column
        for column in table.required
        if column not in columns
        and not (column == "status" and stages is not None)
        and not (column == "currency" and (currency or currency_column))
    ]
    if missing:
        check.problems.append(
            f"{where}.columns: required column(s) {', '.join(missing)} not mapped"
        )

    return LoadSpec(
        table=table_name,
        source=source,
        columns=columns,
        group_by=group_by,
        alternates=alternates,
        stages=stages,
        currency=currency,
        currency_column=currency_column,
        fx_date=fx_date,
        returns_column=returns_column,
        returns_values=returns_values,
        returns_negate=returns_negate,
        keep=check.choice(data, "keep", where, ("first", "last"), "first"),
    )


def load_spec(path: str | Path) -> SourceSpec:
    """Read and check the source specification at `path`.

    Raises ParameterError listing every problem, each with the file, the
    key path, the expected value and the value found.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ParameterError(f"cannot read source spec {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path}: not valid YAML ({exc})") from exc
    check = _Checker(path)
    data = check.mapping(data, "top level")
    check.keys(
        data,
        (
            "name",
            "description",
            "company",
            "reporting_currency",
            "as_of",
            "inputs",
            "lookups",
            "loads",
        ),
        "top level",
    )
    name = check.text(data, "name", "top level", required=True) or path.stem
    reporting = check.text(data, "reporting_currency", "top level", "USD")
    if not _CURRENCY_CODE.fullmatch(reporting):
        check.fail(
            "reporting_currency", "a three-letter currency code such as USD", reporting
        )
    as_of = None
    raw_as_of = check.text(data, "as_of", "top level")
    if raw_as_of is not None:
        table, _, column = raw_as_of.partition(".")
        if table not in TABLES or column not in TABLES[table].column_names:
            check.fail(
                "as_of",
                "table.column of a date column, e.g. transactions.date",
                raw_as_of,
            )
        else:
            as_of = (table, column)

    inputs: dict[str, InputSpec] = {}
    raw_inputs = check.mapping(data.get("inputs"), "inputs")
    if not raw_inputs:
        check.problems.append("inputs: expected at least one input, got none")
    for input_name, raw in raw_inputs.items():
        inputs[str(input_name)] = _parse_input(
            str(input_name), raw, f"inputs.{input_name}", check
        )

    lookups: dict[str, LookupSpec] = {}
    for lookup_name, raw in check.mapping(data.get("lookups") or {}, "lookups").items():
        parsed = _parse_lookup(
            str(lookup_name), raw, f"lookups.{lookup_name}", inputs, check
        )
        if parsed is not None:
            lookups[str(lookup_name)] = parsed
    for lookup in lookups.values():
        if lookup.value.kind == "lookup" and lookup.value.lookup not in lookups:
            check.fail(
                f"lookups.{lookup.name}.value.lookup",
                "a lookup name",
                lookup.value.lookup,
            )

    loads: list[LoadSpec] = []
    raw_loads = data.get("loads")
    if not isinstance(raw_loads, list) or not raw_loads:
        check.fail("loads", "a list of at least one load", raw_loads)
        raw_loads = []
    for index, raw in enumerate(raw_loads):
        parsed = _parse_load(index, raw, inputs, lookups, check)
        if parsed is not None:
            loads.append(parsed)

    if check.problems:
        listed = "\n  ".join(check.problems)
        raise ParameterError(
            f"source spec {path} has {len(check.problems)} problem(s):\n  {listed}"
        )
    return SourceSpec(
        name=name,
        path=path,
        inputs=inputs,
        loads=loads,
        lookups=lookups,
        description=check.text(data, "description", "top level", "") or "",
        company=check.text(data, "company", "top level"),
        reporting_currency=reporting,
        as_of=as_of,
    )


def spec_directories() -> list[Path]:
    """Folders searched for source specs: parameters/sources, then the project's own."""
    from cockpit.paths import PARAMETERS_DIR, PROJECT_ROOT

    folders = [PARAMETERS_DIR / "sources", PROJECT_ROOT / "parameters" / "sources"]
    return list(dict.fromkeys(folder.resolve() for folder in folders))


def find_spec(source: str | Path) -> Path:
    """Return the YAML file of `source`: a path to a YAML file or a spec name.

    A name matches `<name>.yaml` (with '-' and '_' treated alike) or the
    `name:` written inside a spec in one of `spec_directories()`.

    Raises ParameterError naming the folders searched and the specs found.
    """
    candidate = Path(source)
    if candidate.suffix in (".yaml", ".yml"):
        if candidate.is_file():
            return candidate
        raise ParameterError(f"source spec {candidate} not found; check the path")
    text = str(source)
    stems = {text, text.replace("-", "_"), text.replace("_", "-")}
    known: list[str] = []
    for folder in spec_directories():
        if not folder.is_dir():
            continue
        files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
        for file in files:
            if file.stem in stems:
                return file
        for file in files:
            try:
                declared = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                continue
            name = declared.get("name") if isinstance(declared, Mapping) else None
            if name is not None:
                known.append(str(name))
            if name == text:
                return file
    folders = ", ".join(str(f) for f in spec_directories())
    raise ParameterError(
        f"unknown source {text!r}; no spec of that name in {folders}. Known: "
        f"{', '.join(sorted(set(known))) or 'none'}, macro. Pass a path to a YAML file "
        "or add one there"
    )


def stage_key(label: str) -> str:
    """Return the form in which stage labels are compared (case and spaces ignored)."""
    return _stage_key(label)
