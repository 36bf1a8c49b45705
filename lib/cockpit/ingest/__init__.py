"""Loaders that map real exports onto the mart's canonical tables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cockpit.errors import IngestError
from cockpit.mart import LoadReport, connect, fill_dimensions


def _loaders() -> dict[str, Callable]:
    from cockpit.ingest.macro import ingest_macro
    from cockpit.ingest.maven_crm import ingest_maven_crm
    from cockpit.ingest.superstore import ingest_superstore

    return {
        "superstore": ingest_superstore,
        "maven-crm": ingest_maven_crm,
        "macro": ingest_macro,
    }


def ingest_source(source: str, path: str | Path, mart: str | Path) -> list[LoadReport]:
    """Load the export at `path` with the loader named `source` into `mart`.

    Region and business unit of the fact tables are resolved afterwards.
    """
    loaders = _loaders()
    if source not in loaders:
        raise IngestError(
            f"unknown source {source!r}; choose one of {', '.join(sorted(loaders))}"
        )
    path = Path(path)
    if not path.exists():
        raise IngestError(
            f"export {path} not found; check the path (quote names with spaces)"
        )
    with connect(mart) as con:
        reports = loaders[source](path, con)
        fill_dimensions(con)
    return reports
