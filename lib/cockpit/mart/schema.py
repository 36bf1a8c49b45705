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
        _col(
            "source_file",
            "VARCHAR",
            False,
            "Export file the row came from; a changed file replaces its rows.",
        ),
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
        _col(
            "source_file",
            "VARCHAR",
            False,
            "Export file the row came from; a changed file replaces its rows.",
        ),
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
        _col(
            "source_file",
            "VARCHAR",
            False,
            "Export file the row came from; a changed file replaces its rows.",
        ),
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
        _col(
            "is_return",
            "BOOLEAN",
            False,
            "True for credit notes and returns, so sales figures can leave them out.",
        ),
        _col(
            "net_revenue_source",
            "DOUBLE",
            False,
            "Net revenue in the source currency, before conversion.",
        ),
        _col(
            "source_file",
            "VARCHAR",
            False,
            "Export file the row came from; a changed file replaces its rows.",
        ),
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
        _col(
            "amount_source",
            "DOUBLE",
            False,
            "Deal value in the source currency, before conversion.",
        ),
        _col(
            "source_file",
            "VARCHAR",
            False,
            "Export file the row came from; a changed file replaces its rows.",
        ),
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
        _col(
            "source_file",
            "VARCHAR",
            False,
            "Export file the row came from; a changed file replaces its rows.",
        ),
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
        _col(
            "source_file",
            "VARCHAR",
            False,
            "Export file the row came from; a changed file replaces its rows.",
        ),
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
        _col("source", "VARCHAR"),
        _col(
            "source_file",
            "VARCHAR",
            False,
            "Export file the row came from; a changed file replaces its rows.",
        ),
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

HUDDLE_SURVEYS = Table(
    "huddle_surveys",
    "One response to the short survey after a team's weekly huddle.",
    (
        _col("survey_id", "VARCHAR", True),
        _col("team", "VARCHAR", True, "Team whose huddle was rated."),
        _col("week_start", "DATE", True, "Monday of the week the huddle pack covers."),
        _col("respondent", "VARCHAR", True, "Name or id of the person who responded."),
        _col(
            "helpfulness",
            "BIGINT",
            True,
            "How helpful the huddle was, from 1 (not at all) to 5 (very).",
        ),
        _col("comment", "VARCHAR"),
        _col("recorded_at", "TIMESTAMP", True, "When the response was stored (UTC)."),
    ),
    ("survey_id",),
)

FORECASTS = Table(
    "forecasts",
    "One forecast period of one series from one run; runs are appended, never replaced.",
    (
        _col("as_of", "DATE", True, "As-of date of the run: data up to this day."),
        _col(
            "level",
            "VARCHAR",
            False,
            "Dimensions of series_id joined by '/', e.g. region/business_unit; "
            "company for the total.",
        ),
        _col("region", "VARCHAR", False, "Region scope of the run; empty for all."),
        _col(
            "business_unit",
            "VARCHAR",
            False,
            "Business unit scope of the run; empty for all.",
        ),
        _col("frequency", "VARCHAR", False, "month or week", ("month", "week")),
        _col(
            "series_id",
            "VARCHAR",
            False,
            "Values of the level's dimensions joined by '/'; total for company.",
        ),
        _col("ds", "DATE", True, "First day of the forecast month or week."),
        _col("yhat", "DOUBLE", True, "Point forecast, reporting currency."),
        _col("yhat_lower", "DOUBLE", False, "Lower end of the 80 % interval."),
        _col("yhat_upper", "DOUBLE", False, "Upper end of the 80 % interval."),
        _col("method", "VARCHAR", False, "Method that produced the forecast."),
        _col("note", "VARCHAR", False, "Fallback, regressor and reconciliation notes."),
        _col("created_at", "TIMESTAMP", True, "When the run stored the rows (UTC)."),
    ),
    (
        "as_of",
        "level",
        "region",
        "business_unit",
        "frequency",
        "series_id",
        "ds",
        "created_at",
    ),
)

TARGET_ALLOCATIONS = Table(
    "target_allocations",
    "How one top-down target of a published plan was computed; one row per "
    "node, quarter and plan version.",
    (
        _col("version", "BIGINT", True, "Version of the targets rows the plan wrote."),
        _col("period", "VARCHAR", True, "Quarter label such as 2026-Q3."),
        _col("period_start", "DATE", True),
        _col("period_end", "DATE", True),
        _col("level", "VARCHAR", True, "company, region, business_unit, team or rep"),
        _col("key", "VARCHAR", True, "Member of the level, e.g. a rep_id."),
        _col("region", "VARCHAR"),
        _col("business_unit", "VARCHAR"),
        _col("team", "VARCHAR"),
        _col("as_of", "DATE", True, "Last day of the history the plan used."),
        _col("history", "DOUBLE", False, "Net revenue over the history window."),
        _col("forecast", "DOUBLE", True, "Baseline forecast of the quarter."),
        _col("headroom", "DOUBLE", False, "Account headroom of the node."),
        _col("forecast_share", "DOUBLE", False, "Share of the siblings' forecast."),
        _col("headroom_share", "DOUBLE", False, "Share of the siblings' headroom."),
        _col("weight", "DOUBLE", False, "Share of the parent target allocated."),
        _col("rule", "VARCHAR", False, "Split rule, e.g. blend or new_seller_floor."),
        _col("top_down", "DOUBLE", True, "Target the allocation gave the node."),
        _col("ambition_pct", "DOUBLE", True),
        _col("forecast_weight", "DOUBLE", True),
        _col("created_at", "TIMESTAMP", True),
    ),
    ("period", "level", "key", "region", "business_unit", "version"),
)

TARGET_ROLE_BASES = Table(
    "target_role_bases",
    "Facts behind one seller's role targets in one published plan.",
    (
        _col("period", "VARCHAR", True, "Plan year, e.g. 2026."),
        _col("version", "BIGINT", True, "Version of the plan that stored them."),
        _col("rep_id", "VARCHAR", True),
        _col("role_type", "VARCHAR"),
        _col("region", "VARCHAR"),
        _col("as_of", "DATE", True),
        _col(
            "revenue_12m", "DOUBLE", False, "Seller's net revenue, 12 months to as_of."
        ),
        _col("retention", "DOUBLE", False, "Net revenue retention of the region."),
        _col("win_rate", "DOUBLE", False, "Value win rate of the region."),
        _col("key_share", "DOUBLE", False, "Share of revenue on key accounts."),
        _col("key_accounts", "BIGINT"),
        _col("key_spend", "DOUBLE"),
        _col("key_potential", "DOUBLE"),
        _col("created_at", "TIMESTAMP", True),
    ),
    ("period", "version", "rep_id"),
)

#: Events of the target change log.
TARGET_CHANGE_STATUSES = (
    "published",
    "reset",
    "proposed",
    "approved",
    "rejected",
    "absorbed",
)

TARGET_CHANGES = Table(
    "target_changes",
    "One event in the life of one target row: published, re-set, proposed, "
    "approved, rejected or absorbed. Events are appended, never changed.",
    (
        _col(
            "change_id",
            "VARCHAR",
            True,
            "Id shared by a proposal, its decision and the rows it moved.",
        ),
        _col("status", "VARCHAR", True, "Event type.", TARGET_CHANGE_STATUSES),
        _col("period", "VARCHAR", True),
        _col("period_start", "DATE"),
        _col("period_end", "DATE"),
        _col("level", "VARCHAR", True),
        _col("key", "VARCHAR", True),
        _col("region", "VARCHAR"),
        _col("business_unit", "VARCHAR"),
        _col("metric", "VARCHAR", True),
        _col("old_value", "DOUBLE", False, "Value in force before the event."),
        _col("new_value", "DOUBLE", False, "Value in force after the event."),
        _col(
            "requested_value",
            "DOUBLE",
            False,
            "Yearly value a proposal asked for, before effective dating.",
        ),
        _col("effective_from", "DATE", False, "First day the new value applies."),
        _col("version", "BIGINT", False, "Version of the targets row written."),
        _col("actor", "VARCHAR", True, "Who acted."),
        _col("acted_at", "TIMESTAMP", True, "When (UTC)."),
        _col("reason", "VARCHAR", False, "Why."),
    ),
    (
        "change_id",
        "status",
        "period",
        "level",
        "key",
        "region",
        "business_unit",
        "metric",
    ),
)

#: Severities an alert may have, from least to most urgent.
ALERT_SEVERITIES = ("low", "medium", "high")

ALERTS = Table(
    "alerts",
    "One early warning raised by one rule for one member at one as-of date.",
    (
        _col("as_of", "DATE", True, "Date the rules were evaluated at."),
        _col("scope", "VARCHAR", True, "Label of the scope evaluated."),
        _col("rule", "VARCHAR", True, "Name of the rule in the alert rules file."),
        _col("check_type", "VARCHAR", True, "Kind of check the rule runs."),
        _col("severity", "VARCHAR", True, "low, medium or high", ALERT_SEVERITIES),
        _col(
            "level", "VARCHAR", True, "company, region, team, seller, account or deal"
        ),
        _col("key", "VARCHAR", True, "Member the alert is about, e.g. a rep_id."),
        _col("region", "VARCHAR"),
        _col("business_unit", "VARCHAR"),
        _col("team", "VARCHAR"),
        _col("rep_id", "VARCHAR"),
        _col("account_id", "VARCHAR"),
        _col("opportunity_id", "VARCHAR"),
        _col("kpi", "VARCHAR", False, "KPI or measure compared with the threshold."),
        _col("value", "DOUBLE", False, "Measured value, in the KPI's unit."),
        _col("threshold", "DOUBLE", False, "Threshold the value crossed."),
        _col("message", "VARCHAR", True, "Sentence for the team."),
        _col("created_at", "TIMESTAMP", True),
    ),
    ("as_of", "scope", "rule", "level", "key"),
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
        HUDDLE_SURVEYS,
        FORECASTS,
        TARGET_ALLOCATIONS,
        TARGET_ROLE_BASES,
        TARGET_CHANGES,
        ALERTS,
    )
}
