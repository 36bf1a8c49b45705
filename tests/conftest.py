"""Fixtures shared by every test: where the real sample exports live."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real public CRM, ERP and macro exports, read in place."""
    if not SHARED_DATA.is_dir():
        pytest.fail(
            f"real sample data not found at {SHARED_DATA}; clone next to shared/"
        )
    return SHARED_DATA


SUPERSTORE_CSV = SHARED_DATA / "superstore" / "Sample - Superstore.csv"


@pytest.fixture(scope="session")
def superstore_mart(tmp_path_factory) -> Path:
    """Mart file loaded from the real Superstore CSV (read it read-only)."""
    from cockpit.ingest import ingest_source

    path = tmp_path_factory.mktemp("superstore-mart") / "mart.duckdb"
    ingest_source("superstore", SUPERSTORE_CSV, path)
    return path


@pytest.fixture(scope="session")
def maven_mart(tmp_path_factory) -> Path:
    """Mart file loaded from the real Maven CRM folder (read it read-only)."""
    from cockpit.ingest import ingest_source

    path = tmp_path_factory.mktemp("maven-mart") / "mart.duckdb"
    ingest_source("maven-crm", SHARED_DATA / "maven-crm", path)
    return path


@pytest.fixture(scope="session")
def small_demo_mart(tmp_path_factory) -> Path:
    """Demo company at scale 0.2, shared by the tests that only read it."""
    from cockpit.demo import build_demo

    path = tmp_path_factory.mktemp("demo-mart") / "demo.duckdb"
    build_demo(path, scale=0.2, seed=7)
    return path
