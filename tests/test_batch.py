"""Notebook batch: real papermill runs on fixture notebooks and a fixture mart.

The fixture notebooks live in tests/fixtures/notebooks. `summary` sums
revenue per account up to as_of, shows a table and two plotly figures, and
writes results/summary.parquet. `check` reads that file, writes
results/checked.parquet and then raises for region West. `crash_worker`
kills the worker process that runs it.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import nbformat
import pandas as pd
import pytest

from cockpit import batch as batch_module
from cockpit.batch import (
    LocalProcessExecutor,
    folder_names,
    make_executor,
    publish_results,
    read_mart_scope,
    run_batch,
    safe_name,
)
from cockpit.errors import BatchError, MartError, ParameterError
from cockpit.mart.store import connect, load_frame, set_meta

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).parent / "fixtures" / "notebooks"
AS_OF = "2024-06-30"
XSS = "<script>alert(1)</script>"

TRANSACTIONS = pd.DataFrame(
    {
        "invoice_id": ["I1", "I2", "I3", "I4", "I5", "I6"],
        "line": [1, 1, 1, 1, 1, 1],
        "date": [
            "2024-01-10",
            "2024-02-10",
            "2024-03-10",
            "2024-07-10",
            "2024-03-01",
            "2024-04-01",
        ],
        "account_id": [XSS, "A2", "A2", "A2", "B1", "C1"],
        "region": ["East", "East", "East", "East", "East", "West"],
        "business_unit": [
            "Furniture",
            "Furniture",
            "Furniture",
            "Furniture",
            "Technology",
            "Furniture",
        ],
        "net_revenue": [100.0, 250.5, 49.5, 1000.0, 75.25, 10.0],
        "currency": ["USD"] * 6,
    }
)

# South / Office Supplies has an opportunity and no invoice.
OPPORTUNITIES = pd.DataFrame(
    {
        "opportunity_id": ["O1"],
        "snapshot_date": ["2024-06-01"],
        "region": ["South"],
        "business_unit": ["Office Supplies"],
        "stage": ["Prospecting"],
        "status": ["open"],
        "amount": [500.0],
    }
)

PARAMETERS = """
defaults:
  growth_pct: 0.05
  notebooks: [summary, check]
overrides:
  East/Technology:
    growth_pct: 0.10
"""


def build_mart(path: Path, as_of: str | None = AS_OF) -> Path:
    with connect(path) as con:
        load_frame(
            con, "transactions", TRANSACTIONS, source="test", source_file="t.csv"
        )
        load_frame(
            con, "opportunities", OPPORTUNITIES, source="test", source_file="o.csv"
        )
        if as_of:
            set_meta(con, {"as_of": as_of})
    return path


def expected_revenue(as_of: str) -> pd.DataFrame:
    """Revenue per region, unit and account up to `as_of`, computed by hand."""
    frame = TRANSACTIONS.assign(date=pd.to_datetime(TRANSACTIONS["date"]))
    frame = frame[frame["date"] <= pd.Timestamp(as_of)]
    return (
        frame.groupby(["region", "business_unit", "account_id"], as_index=False)[
            "net_revenue"
        ]
        .sum()
        .rename(columns={"net_revenue": "revenue"})
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    params = root / "run.yaml"
    params.write_text(PARAMETERS, encoding="utf-8")
    return root, build_mart(root / "mart.duckdb"), params


@pytest.fixture(scope="module")
def batch(workspace):
    root, mart, params = workspace
    return run_batch(
        mart,
        root / "runs",
        params_file=params,
        workers=2,
        notebooks_dir=NOTEBOOKS,
    )


def result_for(batch, region, unit, notebook):
    return next(
        r
        for r in batch.results
        if (r.region, r.business_unit, r.notebook) == (region, unit, notebook)
    )


class RowParser(HTMLParser):
    """Collect the cells and links of each row of the index's reports table."""

    def __init__(self):
        super().__init__()
        self.rows, self.table, self.cell = [], None, None

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "table":
            self.table = attributes.get("id")
        elif tag == "tr" and self.table == "reports":
            self.rows.append({"cells": [], "links": []})
        elif tag == "td" and self.rows:
            self.cell = ""
        elif tag == "a" and self.rows and self.table == "reports":
            self.rows[-1]["links"].append(attributes["href"])

    def handle_endtag(self, tag):
        if tag == "td" and self.cell is not None:
            self.rows[-1]["cells"].append(self.cell.strip())
            self.cell = None
        elif tag == "table":
            self.table = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def index_rows(batch):
    parser = RowParser()
    parser.feed(batch.index_path.read_text(encoding="utf-8"))
    return [row for row in parser.rows if row["cells"]]


def test_batch_counts(batch):
    assert batch.succeeded == 7
    assert batch.failed == 1
    assert len(batch.results) == 8


def test_batch_failure_isolated(batch):
    failed = [r for r in batch.results if r.status == "failed"]
    assert [(r.region, r.business_unit, r.notebook) for r in failed] == [
        ("West", "Furniture", "check")
    ]
    assert failed[0].error == "ValueError: no plan for region West (cell 5)"


def test_batch_failed_report_exported(batch):
    failed = result_for(batch, "West", "Furniture", "check")
    assert failed.output_html.is_file()
    assert "no plan for region West" in failed.output_html.read_text()


def test_batch_pairs_from_mart(batch):
    pairs = {(r.region, r.business_unit) for r in batch.results}
    assert pairs == {
        ("East", "Furniture"),
        ("East", "Technology"),
        ("South", "Office Supplies"),
        ("West", "Furniture"),
    }


def test_batch_run_id(batch, workspace):
    root, _, _ = workspace
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", batch.run_id)
    assert batch.run_dir == root.resolve() / "runs" / batch.run_id


def test_batch_layout(batch):
    for result in batch.results:
        folder = batch.run_dir / result.region / result.business_unit.replace(" ", "_")
        assert result.output_ipynb == folder / f"{result.notebook}.ipynb"
        assert result.output_html == folder / f"{result.notebook}.html"
        assert result.output_ipynb.is_file()
        assert result.output_html.is_file()


def test_batch_index_files(batch):
    assert batch.index_path == batch.run_dir / "index.html"
    assert (batch.run_dir / "index.json").is_file()


def test_index_html_rows(batch):
    rows = index_rows(batch)
    assert len(rows) == 8
    cells = [row["cells"][:5] for row in rows]
    assert ["East", "Furniture", "summary", AS_OF, "succeeded"] in cells
    assert ["West", "Furniture", "check", AS_OF, "failed"] in cells


def test_index_html_links(batch):
    for row in index_rows(batch):
        region, unit, notebook = row["cells"][:3]
        folder = f"{region}/{unit.replace(' ', '_')}"
        assert row["links"] == [
            f"{folder}/{notebook}.html",
            f"{folder}/{notebook}.ipynb",
        ]
        assert (batch.run_dir / row["links"][0]).is_file()


def test_index_html_duration(batch):
    rows = {tuple(row["cells"][:3]): row["cells"] for row in index_rows(batch)}
    result = result_for(batch, "East", "Furniture", "summary")
    assert rows[("East", "Furniture", "summary")][5] == f"{result.duration_s:.1f}"


def test_index_html_error(batch):
    rows = {tuple(row["cells"][:3]): row["cells"] for row in index_rows(batch)}
    assert rows[("West", "Furniture", "check")][7] == (
        "ValueError: no plan for region West (cell 5)"
    )
    assert rows[("East", "Furniture", "check")][7] == ""


def test_index_json(batch):
    index = json.loads((batch.run_dir / "index.json").read_text())
    assert index["run_id"] == batch.run_id
    assert index["succeeded"] == 7
    assert index["failed"] == 1
    assert [row["status"] for row in index["results"]] == [
        r.status for r in batch.results
    ]
    assert index["results"][0]["output_html"] == "East/Furniture/summary.html"


def test_index_json_parameters(batch):
    index = json.loads((batch.run_dir / "index.json").read_text())
    by_pair = {
        (r["region"], r["business_unit"]): r["parameters"] for r in index["results"]
    }
    assert by_pair[("East", "Technology")]["growth_pct"] == 0.10
    assert by_pair[("East", "Furniture")]["growth_pct"] == 0.05


def test_notebooks_run_in_order(batch):
    check = result_for(batch, "East", "Furniture", "check")
    notebook = nbformat.read(check.output_ipynb, as_version=4)
    printed = "".join(
        output.get("text", "")
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )
    assert "2 account(s) in the summary" in printed


def test_papermill_parameters(batch, workspace):
    _, mart, _ = workspace
    summary = result_for(batch, "East", "Technology", "summary")
    notebook = nbformat.read(summary.output_ipynb, as_version=4)
    injected = next(
        cell.source
        for cell in notebook.cells
        if "injected-parameters" in cell.metadata.get("tags", [])
    )
    assert 'region = "East"' in injected
    assert 'business_unit = "Technology"' in injected
    assert f'as_of = "{AS_OF}"' in injected
    assert f'mart_path = "{mart.resolve()}"' in injected
    assert f'output_dir = "{summary.output_ipynb.parent}"' in injected
    assert "growth_pct = 0.1\n" in injected
    assert "forecast_horizon = 12" in injected


def test_report_has_no_code(batch):
    page = result_for(batch, "East", "Furniture", "summary").output_html.read_text()
    assert "duckdb.connect" not in page
    assert "hl-ipython3" not in page
    assert "In&nbsp;[" not in page


def test_report_plotly_inline_once(batch):
    page = result_for(batch, "East", "Furniture", "summary").output_html.read_text()
    assert page.count("plotly.js v") == 1
    assert page.count("Plotly.newPlot") == 2


def test_report_offline(batch):
    remote = re.compile(
        r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//", re.I
    )
    for result in batch.results:
        assert remote.findall(result.output_html.read_text()) == []


def test_report_escapes_names(batch):
    page = result_for(batch, "East", "Furniture", "summary").output_html.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert XSS not in page


def test_publish_matches_hand_sums(batch, workspace):
    _, mart, _ = workspace
    with duckdb.connect(str(mart), read_only=True) as con:
        published = con.execute(
            "SELECT region, business_unit, account_id, revenue, target, run_id "
            "FROM summary ORDER BY region, business_unit, account_id"
        ).df()
    expected = expected_revenue(AS_OF)
    keys = ["region", "business_unit", "account_id"]
    assert published[keys].values.tolist() == expected[keys].values.tolist()
    assert published["revenue"].tolist() == pytest.approx(expected["revenue"].tolist())
    assert set(published["run_id"]) == {batch.run_id}


def test_publish_applies_override(batch, workspace):
    _, mart, _ = workspace
    with duckdb.connect(str(mart), read_only=True) as con:
        rows = con.execute(
            "SELECT business_unit, revenue, target FROM summary WHERE region = 'East'"
        ).fetchall()
    targets = {unit: (revenue, target) for unit, revenue, target in rows}
    assert targets["Technology"][1] == pytest.approx(75.25 * 1.10)
    assert targets["Furniture"][1] == pytest.approx(300.0 * 1.05)


def test_publish_skips_failed_notebook(batch):
    notes = {p.file: p.note for p in batch.published}
    assert notes["West/Furniture/results/checked.parquet"] == (
        "not published: written by check, which failed"
    )
    assert notes["West/Furniture/results/summary.parquet"] is None
    assert notes["East/Furniture/results/checked.parquet"] is None


def test_publish_checked_rows(batch, workspace):
    _, mart, _ = workspace
    with duckdb.connect(str(mart), read_only=True) as con:
        rows = con.execute(
            "SELECT region, business_unit, accounts FROM checked ORDER BY ALL"
        ).fetchall()
    assert rows == [
        ("East", "Furniture", 2),
        ("East", "Technology", 1),
        ("South", "Office Supplies", 0),
    ]


def test_result_files_attributed(batch):
    index = json.loads((batch.run_dir / "index.json").read_text())
    files = {
        (row["region"], row["business_unit"], row["notebook"]): row["result_files"]
        for row in index["results"]
    }
    assert files[("East", "Furniture", "summary")] == [
        "East/Furniture/results/summary.parquet"
    ]
    assert files[("West", "Furniture", "check")] == [
        "West/Furniture/results/checked.parquet"
    ]


def test_publish_logs_load(batch, workspace):
    _, mart, _ = workspace
    with duckdb.connect(str(mart), read_only=True) as con:
        loads = con.execute(
            "SELECT rows_read, rows_loaded FROM load_log WHERE table_name = 'summary'"
        ).fetchall()
    assert sorted(loads) == [(0, 0), (1, 1), (1, 1), (2, 2)]


def test_publish_twice_adds_nothing(batch, workspace):
    _, mart, _ = workspace
    again = publish_results(batch.run_dir, mart)
    notes = {p.file: p.note for p in again}
    assert notes.pop("West/Furniture/results/checked.parquet").startswith(
        "not published"
    )
    assert set(notes.values()) == {"already published"}
    with duckdb.connect(str(mart), read_only=True) as con:
        count = con.execute("SELECT count(*) FROM summary").fetchall()[0][0]
    assert count == 4


def test_publish_canonical_table(tmp_path):
    mart = build_mart(tmp_path / "mart.duckdb")
    folder = tmp_path / "run1" / "East" / "Furniture" / "results"
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "invoice_id": ["N1", "N2"],
            "line": [1, 1],
            "date": ["2024-05-01", "not a date"],
            "net_revenue": [5.0, 6.0],
            "currency": ["USD", "USD"],
        }
    ).to_parquet(folder / "transactions.parquet")
    published = publish_results(tmp_path / "run1", mart)
    assert [(p.rows_read, p.rows_loaded, p.rows_quarantined) for p in published] == [
        (2, 1, 1)
    ]


def test_publish_protected_table(tmp_path):
    mart = build_mart(tmp_path / "mart.duckdb")
    folder = tmp_path / "run1" / "East" / "Furniture" / "results"
    folder.mkdir(parents=True)
    pd.DataFrame({"key": ["as_of"], "value": ["2030-01-01"]}).to_parquet(
        folder / "mart_meta.parquet"
    )
    with pytest.raises(BatchError) as caught:
        publish_results(tmp_path / "run1", mart)
    assert "mart_meta" in str(caught.value)


def test_publish_rolls_back(tmp_path):
    mart = build_mart(tmp_path / "mart.duckdb")
    for unit, frame in (
        ("A", pd.DataFrame({"x": [1]})),
        ("B", pd.DataFrame({"y": [2]})),
    ):
        folder = tmp_path / "run1" / "East" / unit / "results"
        folder.mkdir(parents=True)
        frame.to_parquet(folder / "scores.parquet")
    with pytest.raises(BatchError) as caught:
        publish_results(tmp_path / "run1", mart)
    assert "East/B/results/scores.parquet" in str(caught.value)
    with duckdb.connect(str(mart), read_only=True) as con:
        tables = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
    assert "scores" not in tables


def test_as_of_argument_wins(tmp_path):
    mart = build_mart(tmp_path / "mart.duckdb")
    result = run_batch(
        mart,
        tmp_path / "runs",
        regions=["East"],
        units=["Furniture"],
        notebooks=["summary"],
        as_of="2024-12-31",
        notebooks_dir=NOTEBOOKS,
    )
    assert [r.as_of for r in result.results] == ["2024-12-31"]
    with duckdb.connect(str(mart), read_only=True) as con:
        total = con.execute("SELECT sum(revenue) FROM summary").fetchall()[0][0]
    expected = expected_revenue("2024-12-31")
    east = expected[
        (expected["region"] == "East") & (expected["business_unit"] == "Furniture")
    ]
    assert total == pytest.approx(east["revenue"].sum())


def test_worker_crash_recorded(tmp_path):
    mart = build_mart(tmp_path / "mart.duckdb")
    result = run_batch(
        mart,
        tmp_path / "runs",
        regions=["East"],
        units=["Technology"],
        notebooks=["summary", "crash_worker"],
        notebooks_dir=NOTEBOOKS,
    )
    assert result.failed == 2
    for notebook in result.results:
        assert notebook.error.startswith("worker failed: BrokenProcessPool")
    assert result.results[0].output_html.is_file()
    assert [p.note for p in result.published] == [
        "not published: written by summary, crash_worker, which failed"
    ]


def test_dask_client(tmp_path):
    from distributed import Client, LocalCluster

    mart = build_mart(tmp_path / "mart.duckdb")
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        result = run_batch(
            mart,
            tmp_path / "runs",
            regions=["West"],
            notebooks=["summary", "check"],
            notebooks_dir=NOTEBOOKS,
            executor=client,
        )
        assert client.status == "running"
    assert (result.succeeded, result.failed) == (1, 1)
    index = json.loads((result.run_dir / "index.json").read_text())
    assert index["executor"].startswith("dask (")


def test_dask_address(tmp_path):
    from distributed import LocalCluster

    mart = build_mart(tmp_path / "mart.duckdb")
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        scheduler_port=0,
        dashboard_address=None,
    ) as cluster:
        result = run_batch(
            mart,
            tmp_path / "runs",
            regions=["East"],
            units=["Technology"],
            notebooks=["summary"],
            notebooks_dir=NOTEBOOKS,
            executor=f"dask:{cluster.scheduler_address}",
        )
    assert result.succeeded == 1
    assert result.results[0].output_html.is_file()


def test_dask_unreachable(monkeypatch):
    monkeypatch.setattr(batch_module, "DASK_CONNECT_TIMEOUT_S", 1)
    with pytest.raises(BatchError) as caught:
        make_executor("dask:tcp://127.0.0.1:1", workers=1)
    assert "cannot reach the Dask scheduler" in str(caught.value)


def test_unknown_executor():
    with pytest.raises(BatchError):
        make_executor("threads", workers=2)


def test_local_executor_default():
    assert isinstance(make_executor(None, workers=3), LocalProcessExecutor)


def test_unknown_region(workspace, tmp_path):
    _, mart, _ = workspace
    with pytest.raises(BatchError) as caught:
        run_batch(mart, tmp_path / "runs", regions=["Nowhere"], notebooks_dir=NOTEBOOKS)
    assert "unknown region(s) ['Nowhere']" in str(caught.value)
    assert "East" in str(caught.value)


def test_missing_notebook(workspace, tmp_path):
    _, mart, _ = workspace
    with pytest.raises(BatchError) as caught:
        run_batch(
            mart, tmp_path / "runs", notebooks=["absent"], notebooks_dir=NOTEBOOKS
        )
    assert str(NOTEBOOKS / "absent.ipynb") in str(caught.value)
    assert not (tmp_path / "runs").exists()


def test_bad_parameters_stop_run(workspace, tmp_path):
    _, mart, _ = workspace
    params = tmp_path / "bad.yaml"
    params.write_text("defaults:\n  forecast_horizon: soon\n", encoding="utf-8")
    with pytest.raises(ParameterError) as caught:
        run_batch(mart, tmp_path / "runs", params_file=params, notebooks_dir=NOTEBOOKS)
    assert "defaults.forecast_horizon: expected integer" in str(caught.value)
    assert not (tmp_path / "runs").exists()


def test_override_unknown_region(workspace, tmp_path):
    _, mart, _ = workspace
    params = tmp_path / "typo.yaml"
    params.write_text("overrides:\n  Eats:\n    growth_pct: 0.1\n", encoding="utf-8")
    with pytest.raises(ParameterError) as caught:
        run_batch(mart, tmp_path / "runs", params_file=params, notebooks_dir=NOTEBOOKS)
    assert "no region 'Eats'" in str(caught.value)


def test_bad_workers(workspace, tmp_path):
    _, mart, _ = workspace
    with pytest.raises(BatchError):
        run_batch(mart, tmp_path / "runs", workers=0, notebooks_dir=NOTEBOOKS)


def test_missing_mart(tmp_path):
    with pytest.raises(MartError):
        run_batch(tmp_path / "absent.duckdb", tmp_path / "runs")


def test_scope_as_of_from_meta(workspace):
    _, mart, _ = workspace
    pairs, as_of = read_mart_scope(mart)
    assert len(pairs) == 4
    assert as_of.isoformat() == AS_OF


def test_scope_as_of_from_transactions(tmp_path):
    mart = build_mart(tmp_path / "mart.duckdb", as_of=None)
    _, as_of = read_mart_scope(mart)
    assert as_of.isoformat() == TRANSACTIONS["date"].max()


def test_safe_name_cases():
    assert safe_name("Office Supplies") == "Office_Supplies"
    assert safe_name("../etc") == "etc"
    assert safe_name("..") == "unnamed"
    assert safe_name("Île-de-France") == "Île-de-France"
    assert safe_name("A/B") == "A_B"


def test_folder_names_unique():
    names = folder_names(["A/B", "A_B", "East", "east", "West"])
    assert names["West"] == "West"
    assert len({name.lower() for name in names.values()}) == 5
    assert names["A/B"].startswith("A_B-")
