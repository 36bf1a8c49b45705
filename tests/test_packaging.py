"""The pip and conda package lists name the same packages and versions."""

from __future__ import annotations

import re

import tomllib
import yaml

from tests.conftest import REPO_ROOT


def _normalise(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    assert match, requirement
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project = data["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(_normalise(r) for r in requirements)


def _conda_requirements() -> dict[str, str]:
    data = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    entries = [d for d in data["dependencies"] if isinstance(d, str)]
    pairs = dict(_normalise(e) for e in entries)
    pairs.pop("python", None)
    pairs.pop("pip", None)
    return pairs


def test_conda_and_pip_name_same_packages():
    assert sorted(_conda_requirements()) == sorted(_pyproject_requirements())


def test_conda_and_pip_pin_same_versions():
    assert _conda_requirements() == _pyproject_requirements()


def test_core_packages_declared():
    declared = _pyproject_requirements()
    for package in (
        "jupyterlab",
        "papermill",
        "voila",
        "ipywidgets",
        "pandas",
        "prophet",
        "nbconvert",
        "duckdb",
        "plotly",
    ):
        assert package in declared, package
