"""Loader for the Maven Analytics "CRM Sales Opportunities" export.

The export is a folder of four CSV files: sales_pipeline.csv (one row per
opportunity), accounts.csv, products.csv and sales_teams.csv. Names are the
keys: an account, product or seller is identified by its name as the file
spells it.

The pipeline is one picture of every opportunity, so it is loaded as one
snapshot dated on the latest date found in the pipeline file. The pipeline
and products.csv spell some product names differently (e.g. `GTXPro` and
`GTX Pro`). Business unit and list price are therefore looked up by
normalised name, while product_id keeps the pipeline's spelling so that the
audit can report the mismatch.
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import duckdb
import pandas as pd

from cockpit.errors import IngestError
from cockpit.ingest.superstore import (
    CsvExport,
    normalise_name,
    numbers_or_raw,
    parse_numbers,
    read_export,
    update_source_meta,
)
from cockpit.mart import LoadReport, file_checksum, load_frame

logger = logging.getLogger(__name__)

SOURCE = "maven-crm"
COMPANY = "MavenTech"
CURRENCY = "USD"
DATE_FORMAT = "%Y-%m-%d"

#: accounts.csv gives revenue in millions of USD; the mart stores USD.
REVENUE_UNIT = 1_000_000

#: Files of the export and the columns the loader reads from each.
FILES: dict[str, tuple[str, ...]] = {
    "sales_pipeline.csv": (
        "opportunity_id",
        "sales_agent",
        "product",
        "account",
        "deal_stage",
        "engage_date",
        "close_date",
        "close_value",
    ),
    "accounts.csv": (
        "account",
        "sector",
        "revenue",
        "employees",
        "office_location",
        "subsidiary_of",
    ),
    "products.csv": ("product", "series", "sales_price"),
    "sales_teams.csv": ("sales_agent", "manager", "regional_office"),
}

#: Deal stages that close an opportunity; every other stage is open.
CLOSED_STATUS = {"won": "won", "lost": "lost"}


def ingest_maven_crm(
    directory: Path, con: duckdb.DuckDBPyConnection
) -> list[LoadReport]:
    """Load the Maven CRM export folder `directory` into the open mart `con`.

    Loads accounts, products, reps (each agent as a seller whose team is
    named after their manager, and each manager as a manager) and one
    snapshot of every opportunity. Won and lost deals carry their
    close_value; open deals without one are valued at the product's list
    price with amount_is_estimate set. Open deals without an account keep
    an empty account_id. An account's region is the regional office that
    handles most of its deals. Sets the mart's company, currency (USD) and
    as-of date (the snapshot date).

    Raises IngestError when `directory` is not a folder, a file is missing,
    a file lacks required columns, or the pipeline has no valid date.
    """
    directory = Path(directory)
    exports = _read_files(directory)
    pipeline = exports["sales_pipeline.csv"]
    teams = exports["sales_teams.csv"]
    products = exports["products.csv"]

    snapshot = _snapshot_date(pipeline)
    agent_region = _first_by_key(teams.frame, "sales_agent", "regional_office")
    catalogue = _catalogue(products.frame)

    reports: list[LoadReport] = []
    accounts = exports["accounts.csv"]
    reports.append(
        _load(
            con,
            "accounts",
            _accounts(accounts.frame, pipeline.frame, agent_region),
            accounts,
        )
    )
    reports.append(_load(con, "products", _products(products.frame), products))
    sellers, managers, manager_lines = _reps(teams)
    reports.append(_load(con, "reps", sellers, teams))
    reports.append(_load(con, "reps", managers, teams, lines=manager_lines))
    reports.append(
        _load(
            con,
            "opportunities",
            _opportunities(pipeline.frame, snapshot, agent_region, catalogue),
            pipeline,
            date_formats={
                "snapshot_date": DATE_FORMAT,
                "created_date": DATE_FORMAT,
                "closed_date": DATE_FORMAT,
            },
        )
    )
    update_source_meta(con, company=COMPANY, currency=CURRENCY, as_of=snapshot)
    logger.info("%s: pipeline snapshot dated %s", directory, snapshot)
    return reports


def _read_files(directory: Path) -> dict[str, CsvExport]:
    """Read every file first, so a bad one stops the load before any write."""
    if not directory.is_dir():
        raise IngestError(
            f"{directory} is not a folder; pass the folder that contains "
            f"{', '.join(FILES)}"
        )
    missing = [name for name in FILES if not (directory / name).is_file()]
    if missing:
        present = sorted(p.name for p in directory.iterdir())
        raise IngestError(
            f"{directory}: missing file(s) {', '.join(missing)}; the folder has "
            f"{', '.join(present) or 'no files'}"
        )
    return {
        name: read_export(directory / name, columns) for name, columns in FILES.items()
    }


def _load(
    con: duckdb.DuckDBPyConnection,
    table: str,
    frame: pd.DataFrame,
    export: CsvExport,
    lines: pd.Series | None = None,
    date_formats: dict[str, str] | None = None,
) -> LoadReport:
    return load_frame(
        con,
        table,
        frame,
        source=SOURCE,
        source_file=export.path,
        lines=export.lines if lines is None else lines,
        date_formats=date_formats,
        checksum=file_checksum(export.path),
    )


def _snapshot_date(pipeline: CsvExport) -> date:
    """Return the latest engage or close date in the pipeline file."""
    frame = pipeline.frame
    dates = pd.concat(
        [
            pd.to_datetime(frame["engage_date"], format=DATE_FORMAT, errors="coerce"),
            pd.to_datetime(frame["close_date"], format=DATE_FORMAT, errors="coerce"),
        ]
    )
    if dates.notna().sum() == 0:
        raise IngestError(
            f"{pipeline.path}: no engage_date or close_date parses as YYYY-MM-DD; "
            "the snapshot date cannot be set. Export the dates in ISO format"
        )
    return dates.max().date()


def _first_by_key(frame: pd.DataFrame, key: str, value: str) -> dict[str, str]:
    """Map each non-blank `key` to the `value` of its first row."""
    pairs = frame[[key, value]].apply(lambda column: column.str.strip())
    pairs = pairs[pairs[key] != ""].drop_duplicates(key)
    return dict(zip(pairs[key], pairs[value], strict=True))


def _catalogue(products: pd.DataFrame) -> pd.DataFrame:
    """Series and list price of each product, indexed by normalised name."""
    catalogue = pd.DataFrame(
        {
            "key": products["product"].map(normalise_name),
            "series": products["series"].str.strip(),
            "price": parse_numbers(products["sales_price"]),
        }
    )
    catalogue = catalogue[catalogue["key"] != ""]
    return catalogue.drop_duplicates("key").set_index("key")


def _accounts(
    accounts: pd.DataFrame, pipeline: pd.DataFrame, agent_region: dict[str, str]
) -> pd.DataFrame:
    revenue = parse_numbers(accounts["revenue"]) * REVENUE_UNIT
    deals = pd.DataFrame(
        {
            "account": pipeline["account"].str.strip(),
            "region": pipeline["sales_agent"].str.strip().map(agent_region),
        }
    ).dropna()
    deals = deals[deals["account"] != ""]
    counts = deals.value_counts(["account", "region"]).reset_index(name="deals")
    # Most deals first; an equal count falls back to the region name.
    counts = counts.sort_values(
        ["account", "deals", "region"], ascending=[True, False, True]
    )
    home = counts.drop_duplicates("account").set_index("account")["region"]
    return pd.DataFrame(
        {
            "account_id": accounts["account"],
            "name": accounts["account"],
            "region": accounts["account"].str.strip().map(home),
            "country": accounts["office_location"],
            "industry": accounts["sector"],
            "employees": accounts["employees"],
            "annual_revenue": numbers_or_raw(revenue, accounts["revenue"]),
            "parent_account_id": accounts["subsidiary_of"],
            "source": SOURCE,
        }
    )


def _products(products: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product_id": products["product"],
            "name": products["product"],
            "business_unit": products["series"],
            "list_price": products["sales_price"],
            "source": SOURCE,
        }
    )


def _reps(teams: CsvExport) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Sellers from every row, and one manager row per distinct manager.

    A manager's region is the region most of their agents work in, and the
    line of a manager row is the first line that names the manager.
    """
    frame = teams.frame
    sellers = pd.DataFrame(
        {
            "rep_id": frame["sales_agent"],
            "name": frame["sales_agent"],
            "role": "seller",
            "team": frame["manager"],
            "manager_id": frame["manager"],
            "region": frame["regional_office"],
            "source": SOURCE,
        }
    )
    staff = pd.DataFrame(
        {
            "manager": frame["manager"].str.strip(),
            "region": frame["regional_office"].str.strip(),
            "line": teams.lines.values,
        }
    )
    staff = staff[staff["manager"] != ""]
    first_line = staff.groupby("manager", sort=False)["line"].min()
    counts = (
        staff[staff["region"] != ""]
        .value_counts(["manager", "region"])
        .reset_index(name="agents")
        .sort_values(["manager", "agents", "region"], ascending=[True, False, True])
    )
    region = counts.drop_duplicates("manager").set_index("manager")["region"]
    split = counts["manager"].value_counts()
    for manager in split[split > 1].index:
        logger.warning(
            "manager %s leads agents in several regions; region set to %s",
            manager,
            region[manager],
        )
    managers = pd.DataFrame(
        {
            "rep_id": first_line.index,
            "name": first_line.index,
            "role": "manager",
            "team": first_line.index,
            "region": region.reindex(first_line.index).values,
            "source": SOURCE,
        }
    )
    return sellers, managers, first_line.reset_index(drop=True)


def _opportunities(
    pipeline: pd.DataFrame,
    snapshot: date,
    agent_region: dict[str, str],
    catalogue: pd.DataFrame,
) -> pd.DataFrame:
    stage = pipeline["deal_stage"].str.strip()
    status = stage.str.lower().map(CLOSED_STATUS).fillna("open")
    status[stage == ""] = None

    product_key = pipeline["product"].map(normalise_name)
    list_price = product_key.map(catalogue["price"])
    close_value = parse_numbers(pipeline["close_value"])
    blank_value = pipeline["close_value"].str.strip() == ""
    estimate = (status == "open") & blank_value & list_price.notna()
    amount = pipeline["close_value"].astype("object").copy()
    amount[estimate] = list_price[estimate]
    amount[close_value.notna()] = close_value[close_value.notna()]

    return pd.DataFrame(
        {
            "opportunity_id": pipeline["opportunity_id"],
            "snapshot_date": snapshot.isoformat(),
            "account_id": pipeline["account"],
            "rep_id": pipeline["sales_agent"],
            "product_id": pipeline["product"],
            "region": pipeline["sales_agent"].str.strip().map(agent_region),
            "business_unit": product_key.map(catalogue["series"]),
            "stage": stage,
            "status": status,
            "amount": amount,
            "amount_is_estimate": estimate,
            "currency": CURRENCY,
            "created_date": pipeline["engage_date"],
            "closed_date": pipeline["close_date"],
            "source": SOURCE,
        }
    )
