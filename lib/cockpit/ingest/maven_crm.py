"""Loader for the Maven Analytics "CRM Sales Opportunities" export.

The mapping lives in parameters/sources/maven_crm.yaml and runs through the
generic loader. The export is a folder of four CSV files:
sales_pipeline.csv (one row per opportunity), accounts.csv, products.csv
and sales_teams.csv. Names are the keys. The pipeline is loaded as one
snapshot dated on the latest date it contains, and product names are
matched to products.csv by normalised name (`GTXPro` and `GTX Pro`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb

from cockpit.ingest.generic import ingest_spec
from cockpit.ingest.spec import find_spec, load_spec
from cockpit.mart import LoadReport

logger = logging.getLogger(__name__)

SOURCE = "maven-crm"


def ingest_maven_crm(
    directory: Path, con: duckdb.DuckDBPyConnection
) -> list[LoadReport]:
    """Load the Maven CRM export folder `directory` into the open mart `con`.

    Loads accounts, products, reps (each agent as a seller whose team is
    named after their manager, and each manager as a manager) and one
    snapshot of every opportunity. Open deals without a close_value are
    valued at the product's list price with amount_is_estimate set. Sets
    the mart's company, currency (USD) and as-of date (the snapshot date).

    Raises IngestError when `directory` is not a folder, a file is missing,
    a file lacks required columns, or the pipeline has no valid date.
    """
    return ingest_spec(load_spec(find_spec(SOURCE)), directory, con)
