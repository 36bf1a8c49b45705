"""The real regional notebooks, batch-run with papermill on the demo and real marts."""

from __future__ import annotations

import json
import re
import shutil

import duckdb
import nbformat
import pytest

from cockpit.batch import run_batch
from cockpit.paths import NOTEBOOKS_DIR
from cockpit.report import remote_references

pytestmark = pytest.mark.slow

NOTEBOOKS = [
    "01_data_audit",
    "02_forecast",
    "03_targets",
    "04_kpi_review",
    "05_pipeline_behaviour",
    "06_gap_and_warnings",
]


@pytest.fixture(scope="module")
def demo_run(small_demo_mart, tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo-batch")
    mart = folder / "demo.duckdb"
    shutil.copy(small_demo_mart, mart)
    params = NOTEBOOKS_DIR.parent / "parameters" / "demo.yaml"
    result = run_batch(
        mart=mart, out_dir=folder / "runs", params_file=params, workers=2
    )
    return mart, result


def test_demo_batch_all_succeed(demo_run):
    _, result = demo_run
    failures = [
        (r.region, r.business_unit, r.notebook, r.error)
        for r in result.results
        if r.status != "succeeded"
    ]
    assert failures == []
    assert result.succeeded == 4 * 3 * len(NOTEBOOKS)


def test_demo_batch_index_lists_every_report(demo_run):
    _, result = demo_run
    index = json.loads((result.run_dir / "index.json").read_text())
    assert len(index["results"]) == 4 * 3 * len(NOTEBOOKS)
    page = result.index_path.read_text()
    for notebook in NOTEBOOKS:
        assert notebook in page


def test_demo_batch_html_has_no_code(demo_run):
    _, result = demo_run
    html = (result.run_dir / "North" / "Equipment" / "02_forecast.html").read_text()
    assert "review.forecast_review(" not in html
    assert "from cockpit.scope import Scope" not in html
    assert "hl-ipython3" not in html


def test_demo_batch_html_works_offline(demo_run):
    _, result = demo_run
    for path in (result.run_dir / "West" / "Services").glob("*.html"):
        assert remote_references(path.read_text()) == [], path.name


def test_demo_batch_embeds_plotly_once(demo_run):
    _, result = demo_run
    html = (result.run_dir / "South" / "Consumables" / "04_kpi_review.html").read_text()
    assert len(re.findall(r"plotly\.js v\d", html)) == 1
    assert "Plotly.newPlot" in html


def test_demo_batch_report_kpis_match_mart(demo_run):
    mart, result = demo_run
    with duckdb.connect(str(mart), read_only=True) as con:
        revenue = con.execute(
            """
            SELECT sum(net_revenue) FROM transactions
            WHERE region = 'East' AND business_unit = 'Equipment'
              AND date BETWEEN DATE '2026-01-01' AND DATE '2026-09-30'
            """
        ).fetchone()[0]
    html = (result.run_dir / "East" / "Equipment" / "04_kpi_review.html").read_text()
    assert f"EUR {revenue:,.0f}" in html


def test_demo_batch_publishes_results(demo_run):
    mart, _ = demo_run
    with duckdb.connect(str(mart), read_only=True) as con:
        forecast_pairs = con.execute(
            "SELECT count(DISTINCT region || business_unit) FROM forecasts"
        ).fetchone()[0]
        batch_targets = con.execute(
            "SELECT count(*) FROM targets WHERE set_by = 'batch'"
        ).fetchone()[0]
        alerts = con.execute("SELECT count(*) FROM alerts").fetchone()[0]
    assert forecast_pairs == 12
    assert batch_targets > 0
    assert alerts > 0


def _planted_notebooks(folder):
    """Copy 01 and 04 into `folder`, with 04 made to fail for region South."""
    folder.mkdir()
    for name in ("01_data_audit", "04_kpi_review"):
        shutil.copy(NOTEBOOKS_DIR / f"{name}.ipynb", folder / f"{name}.ipynb")
    planted = nbformat.read(folder / "04_kpi_review.ipynb", as_version=4)
    failing = nbformat.v4.new_code_cell(
        'if region == "South":\n    raise RuntimeError("planted failure")'
    )
    planted.cells.insert(3, failing)
    nbformat.write(planted, folder / "04_kpi_review.ipynb")
    return folder


def test_failed_run_spares_others(small_demo_mart, tmp_path):
    notebooks = _planted_notebooks(tmp_path / "notebooks")
    mart = tmp_path / "demo.duckdb"
    shutil.copy(small_demo_mart, mart)
    result = run_batch(
        mart=mart,
        out_dir=tmp_path / "runs",
        regions=["North", "South"],
        units=["Services"],
        notebooks=["01_data_audit", "04_kpi_review"],
        notebooks_dir=notebooks,
        workers=2,
    )
    failed = [(r.region, r.notebook) for r in result.results if r.status != "succeeded"]
    assert failed == [("South", "04_kpi_review")]
    assert result.succeeded == 3


def test_failed_run_exit_code(small_demo_mart, tmp_path, capsys):
    from cockpit.cli import main

    notebooks = _planted_notebooks(tmp_path / "notebooks")
    mart = tmp_path / "demo.duckdb"
    shutil.copy(small_demo_mart, mart)
    arguments = ["run", "--mart", str(mart), "--out", str(tmp_path / "runs")]
    arguments += [
        "--regions",
        "North,South",
        "--units",
        "Services",
        "--notebooks",
        "04_kpi_review",
    ]
    arguments += ["--notebooks-dir", str(notebooks)]
    assert main(arguments) == 1
    assert "1 run(s) succeeded, 1 failed" in capsys.readouterr().out


def test_superstore_batch_one_region(superstore_mart, tmp_path):
    mart = tmp_path / "store.duckdb"
    shutil.copy(superstore_mart, mart)
    result = run_batch(
        mart=mart, out_dir=tmp_path / "runs", regions=["West"], workers=2
    )
    failures = [
        (r.business_unit, r.notebook, r.error)
        for r in result.results
        if r.status != "succeeded"
    ]
    assert failures == []
    units = sorted(p.name for p in (result.run_dir / "West").iterdir() if p.is_dir())
    assert units == ["Furniture", "Office_Supplies", "Technology"]


def test_demo_batch_reports_regressor_extension(demo_run):
    _, result = demo_run
    html = (result.run_dir / "North" / "Equipment" / "02_forecast.html").read_text()
    assert "regressor industrial_production (region North, lag 1 months)" in html
    assert "extended by last value carried forward" in html
