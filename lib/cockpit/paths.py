"""Paths of the project, built in one place from the repository root."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent.parent
NOTEBOOKS_DIR = Path(os.environ.get("COCKPIT_NOTEBOOKS", PROJECT_ROOT / "notebooks"))
PARAMETERS_DIR = Path(os.environ.get("COCKPIT_PARAMETERS", PROJECT_ROOT / "parameters"))
OUTPUTS_DIR = Path(os.environ.get("COCKPIT_OUTPUTS", PROJECT_ROOT / "outputs"))
TEMPLATES_DIR = PACKAGE_DIR / "templates"
DEFAULT_MART = OUTPUTS_DIR / "demo.duckdb"
