"""Canonical tables of the commercial data mart.

Each table is declared once here. The loaders coerce and check incoming rows
against these declarations, the audit reads them to know which columns are
required and which form the key, and `create_schema` turns them into DuckDB
DDL.

Fact tables (transactions, opportunities) carry `region` and `business_unit`
resolved at load time: region from the line itself when the export has one,
else from the account, else from the seller; business unit from the product.
Storing them makes every KPI query and every viewer-scope filter a plain
`WHERE` on one table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: DuckDB types a column may have.
COLUMN_TYPES = ("VARCHAR", "DATE", "DOUBLE", "BIGINT", "BOOLEAN", "TIMESTAMP")

#: Opportunity status values; every stage maps to exactly one of them.
OPPORTUNITY_STATUSES = ("open", "won", "lost")


@dataclass(frozen=True)
class Column:
    """One column of a canonical table."""

    name: str
    dtype: str
    required: bool = False
    description: str = ""
    allowed: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in COLUMN_TYPES:
            raise ValueError(f"column {self.name}: unknown type {self.dtype!r}")


@dataclass(frozen=True)
class Table:
    """One canonical table: its columns, key and meaning."""

    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = field(default_factory=tuple)

    @property
    def column_names(self) -> list[str]:
        """Names of the columns in declaration order."""
        return [column.name for column in self.columns]

    @property
    def required(self) -> list[str]:
        """Names of the columns that may not be empty."""
        return [column.name for column in self.columns if column.required]

    def column(self, name: str) -> Column:
        """Return the column called `name`."""
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(f"table {self.name} has no column {name!r}")

    def ddl(self) -> str:
        """CREATE TABLE statement for DuckDB."""
        lines = [f"    {c.name} {c.dtype}" for c in self.columns]
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n" + ",\n".join(lines) + "\n)"


def _col(
    name: str, dtype: str, required: bool = False, description: str = "", allowed=None
) -> Column:
    return Column(name, dtype, required, description, allowed)


ACCOUNTS = Table(
    "accounts",
    "One customer account.",
    (
        _col(
            "account_id", "VARCHAR", True, "Account key as the source system spells it."
        ),
        _col("name", "VARCHAR", True),
        _col("region", "VARCHAR", False, "Home sales region of the account."),
        _col("country", "VARCHAR"),
        _col("industry", "VARCHAR"),
        _col("segment", "VARCHAR", False, "Customer segment, e.g. Corporate."),
        _col(
            "size_band",
            "VARCHAR",
            False,
            "Size class: small, medium, large, enterprise.",
        ),
        _col("employees", "BIGINT"),
        _col("annual_revenue", "DOUBLE", False, "Account's own yearly revenue."),
        _col("parent_account_id", "VARCHAR"),
        _col("owner_rep_id", "VARCHAR"),
        _col("is_key_account", "BOOLEAN"),
        _col("source", "VARCHAR", False, "Name of the export that delivered the row."),
    ),
    ("account_id",),
)

PRODUCTS = Table(
    "products",
    "One sellable product.",
    (
        _col("product_id", "VARCHAR", True),
        _col("name", "VARCHAR", True),
        _col("product_line", "VARCHAR"),
        _col("business_unit", "VARCHAR", True),
        _col("list_price", "DOUBLE"),
        _col("unit_cost", "DOUBLE"),
        _col("source", "VARCHAR"),
    ),
    ("product_id",),
)

REPS = Table(
    "reps",
    "One seller or manager.",
    (
        _col("rep_id", "VARCHAR", True),
        _col("name", "VARCHAR", True),
        _col("role", "VARCHAR", True, "seller or manager", ("seller", "manager")),
        _col(
            "role_type",
            "VARCHAR",
            False,
            "Sales role: hunter, grower or key_account_manager.",
        ),
        _col(
            "team", "VARCHAR", False, "Team name; a seller's team is led by manager_id."
        ),
        _col("manager_id", "VARCHAR"),
        _col("region", "VARCHAR"),
        _col("active_from", "DATE"),
        _col("active_to", "DATE"),
        _col("source", "VARCHAR"),
    ),
    ("rep_id",),
)

TRANSACTIONS = Table(
    "transactions",
    "One invoice line from the ERP; negative lines are credit notes or returns.",
    (
        _col("invoice_id", "VARCHAR", True),
        _col("line", "BIGINT", True),
        _col("date", "DATE", True, "Invoice date."),
        _col("account_id", "VARCHAR"),
        _col("product_id", "VARCHAR"),
        _col("rep_id", "VARCHAR"),
        _col("region", "VARCHAR"),
        _col("business_unit", "VARCHAR"),
        _col("quantity", "DOUBLE"),
        _col(
            "net_revenue",
            "DOUBLE",
            True,
            "Revenue net of discounts, reporting currency.",
        ),
        _col("cost", "DOUBLE", False, "Cost of goods sold, reporting currency."),
        _col("currency", "VARCHAR", True, "Currency of the source amount."),
        _col("source", "VARCHAR"),
    ),
    ("invoice_id", "line"),
)

OPPORTUNITIES = Table(
    "opportunities",
    "One opportunity as it stood at one snapshot date (CRM).",
    (
        _col("opportunity_id", "VARCHAR", True),
        _col("snapshot_date", "DATE", True),
        _col("account_id", "VARCHAR"),
        _col("rep_id", "VARCHAR"),
        _col("product_id", "VARCHAR"),
        _col("region", "VARCHAR"),
        _col("business_unit", "VARCHAR"),
        _col("stage", "VARCHAR", True),
        _col("status", "VARCHAR", True, "open, won or lost", OPPORTUNITY_STATUSES),
        _col("amount", "DOUBLE", False, "Deal value, reporting currency."),
        _col(
            "amount_is_estimate",
            "BOOLEAN",
            False,
            "True when the export had no amount and list price stood in.",
        ),
        _col("currency", "VARCHAR"),
        _col("created_date", "DATE"),
        _col("expected_close_date", "DATE"),
        _col("closed_date", "DATE"),
        _col("source", "VARCHAR"),
    ),
    ("opportunity_id", "snapshot_date"),
)

ACTIVITIES = Table(
    "activities",
    "One customer interaction or internal meeting of a seller.",
    (
        _col("activity_id", "VARCHAR", True),
        _col("rep_id", "VARCHAR", True),
        _col("account_id", "VARCHAR", False, "Empty for internal meetings."),
        _col("type", "VARCHAR", True, "visit, call, email or internal"),
        _col("date", "DATE", True),
        _col("duration_minutes", "DOUBLE"),
        _col("region", "VARCHAR"),
        _col("source", "VARCHAR"),
    ),
    ("activity_id",),
)

EXTERNAL = Table(
    "external",
    "One value of an external market indicator; region 'ALL' for national series.",
    (
        _col(
            "date", "DATE", True, "First day of the month or quarter the value covers."
        ),
        _col("region", "VARCHAR", True),
        _col("indicator", "VARCHAR", True),
        _col("value", "DOUBLE", True),
        _col("source", "VARCHAR"),
    ),
    ("date", "region", "indicator"),
)

TARGETS = Table(
    "targets",
    "One version of one target; versions are appended, never overwritten.",
    (
        _col("period", "VARCHAR", True, "Period label such as 2026 or 2026-Q3."),
        _col("period_start", "DATE", True),
        _col("period_end", "DATE", True),
        _col("level", "VARCHAR", True, "company, region, business_unit, team or rep"),
        _col("key", "VARCHAR", True, "Member of the level, e.g. a rep_id."),
        _col("region", "VARCHAR"),
        _col("business_unit", "VARCHAR"),
        _col("metric", "VARCHAR", True, "KPI the target applies to, e.g. revenue."),
        _col("value", "DOUBLE", True),
        _col("method", "VARCHAR", True, "How the value was set."),
        _col("basis", "VARCHAR", False, "Human-readable derivation of the value."),
        _col("version", "BIGINT", True),
        _col("set_by", "VARCHAR", True),
        _col("reason", "VARCHAR"),
        _col("created_at", "TIMESTAMP", True),
    ),
    ("period", "level", "key", "region", "business_unit", "metric", "version"),
)

FX_RATES = Table(
    "fx_rates",
    "Dated conversion rate from a currency to the reporting currency.",
    (
        _col("date", "DATE", True),
        _col("currency", "VARCHAR", True),
        _col("rate_to_reporting", "DOUBLE", True),
    ),
    ("date", "currency"),
)

QUARANTINE = Table(
    "quarantine",
    "One problem found in one source row that was not loaded.",
    (
        _col("load_id", "VARCHAR", True),
        _col("table_name", "VARCHAR", True),
        _col("source_file", "VARCHAR", True),
        _col(
            "line", "BIGINT", True, "Line number in the source file (header is line 1)."
        ),
        _col("column_name", "VARCHAR"),
        _col("value", "VARCHAR"),
        _col("reason", "VARCHAR", True),
        _col("raw_row", "VARCHAR", False, "The source row as JSON."),
    ),
)

LOAD_LOG = Table(
    "load_log",
    "One load of one source file into one table.",
    (
        _col("load_id", "VARCHAR", True),
        _col("source", "VARCHAR", True),
        _col("source_file", "VARCHAR", True),
        _col("checksum", "VARCHAR"),
        _col("table_name", "VARCHAR", True),
        _col("loaded_at", "TIMESTAMP", True),
        _col("rows_read", "BIGINT", True),
        _col("rows_loaded", "BIGINT", True),
        _col("rows_quarantined", "BIGINT", True),
    ),
)

META = Table(
    "mart_meta",
    "Key-value facts about the mart, such as the company name and as-of date.",
    (_col("key", "VARCHAR", True), _col("value", "VARCHAR")),
    ("key",),
)

TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        ACCOUNTS,
        PRODUCTS,
        REPS,
        TRANSACTIONS,
        OPPORTUNITIES,
        ACTIVITIES,
        EXTERNAL,
        TARGETS,
        FX_RATES,
        QUARANTINE,
        LOAD_LOG,
        META,
    )
}
