"""Loaders that map real exports onto the mart's canonical tables.

Every source except `macro` is described by a YAML spec (see
parameters/sources/) and run by the generic loader in
`cockpit.ingest.generic`.
"""

from __future__ import annotations

from pathlib import Path

from cockpit.errors import IngestError, ParameterError
from cockpit.mart import LoadReport, connect, fill_dimensions

#: Source names with a loader of their own instead of a YAML spec.
PYTHON_LOADERS = ("macro",)


def ingest_source(
    source: str, path: str | Path | None, mart: str | Path
) -> list[LoadReport]:
    """Load the export at `path` with the source `source` into `mart`.

    `source` is `macro`, the name of a spec in parameters/sources (such as
    `superstore` or `maven-crm`), or the path to a spec's YAML file. `path`
    is the export file or folder, and may be None for a spec that only runs
    SQL queries. Region and business unit of the fact tables are resolved
    afterwards.

    Raises IngestError for an unknown source or a missing export, and when
    the export cannot be loaded; ParameterError when the spec is invalid.
    """
    from cockpit.ingest.generic import ingest_spec
    from cockpit.ingest.macro import ingest_macro
    from cockpit.ingest.spec import find_spec, load_spec

    if source in PYTHON_LOADERS:
        if path is None or not Path(path).exists():
            raise IngestError(
                f"export {path} not found; check the path (quote names with spaces)"
            )
        with connect(mart) as con:
            reports = ingest_macro(Path(path), con)
            fill_dimensions(con)
        return reports
    try:
        spec_path = find_spec(source)
    except ParameterError as exc:
        raise IngestError(str(exc)) from exc
    spec = load_spec(spec_path)
    with connect(mart) as con:
        reports = ingest_spec(spec, path, con)
        fill_dimensions(con)
    return reports
