"""The `cockpit` command, run as a user would, on the real exports."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pandas as pd
import pytest

from cockpit.cli import main
from tests.conftest import SHARED_DATA, SUPERSTORE_CSV


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cockpit.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ingest_superstore_prints_accounting(tmp_path):
    mart = tmp_path / "store.duckdb"
    result = _run("ingest", "superstore", str(SUPERSTORE_CSV), "--mart", str(mart))
    assert result.returncode == 0, result.stderr
    assert "transactions from" in result.stdout
    assert "read 9994, loaded 9994, quarantined 0" in result.stdout


def test_ingest_unknown_source_fails(tmp_path):
    result = _run(
        "ingest", "nosuch", str(SUPERSTORE_CSV), "--mart", str(tmp_path / "m.duckdb")
    )
    assert result.returncode == 2
    assert "unknown source 'nosuch'" in result.stderr


def test_ingest_missing_file_fails(tmp_path):
    result = _run(
        "ingest",
        "superstore",
        str(tmp_path / "absent.csv"),
        "--mart",
        str(tmp_path / "m.duckdb"),
    )
    assert result.returncode == 2
    assert "absent.csv not found" in result.stderr


def test_kpi_missing_mart_fails(tmp_path):
    result = _run("kpi", "revenue", "--mart", str(tmp_path / "absent.duckdb"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr


def _kpi_frame(capsys, *args: str, fmt: str = "csv") -> pd.DataFrame:
    assert main(["kpi", *args, "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "json":
        return pd.DataFrame(json.loads(out))
    return pd.read_csv(io.StringIO(out))


def test_kpi_revenue_by_region_csv(capsys, superstore_mart):
    frame = _kpi_frame(
        capsys, "revenue", "--mart", str(superstore_mart), "--by", "region"
    )
    orders = pd.read_csv(SUPERSTORE_CSV, encoding="utf-8")
    expected = orders.groupby("Region")["Sales"].sum()
    got = frame.set_index("region")["revenue"]
    for region, value in expected.items():
        assert got[region] == pytest.approx(value, abs=0.005), region


def test_kpi_total_revenue_json(capsys, superstore_mart):
    frame = _kpi_frame(capsys, "revenue", "--mart", str(superstore_mart), fmt="json")
    assert frame["revenue"].iloc[0] == pytest.approx(2_297_200.86, abs=0.005)


def test_kpi_margin_matches_profit(capsys, superstore_mart):
    frame = _kpi_frame(capsys, "margin", "--mart", str(superstore_mart))
    assert frame["margin"].iloc[0] == pytest.approx(286_397.02, abs=0.005)


def test_kpi_region_and_unit_grain(capsys, superstore_mart):
    frame = _kpi_frame(
        capsys,
        "revenue",
        "--mart",
        str(superstore_mart),
        "--by",
        "region,business_unit",
    )
    orders = pd.read_csv(SUPERSTORE_CSV, encoding="utf-8")
    expected = orders.groupby(["Region", "Category"])["Sales"].sum()
    assert len(frame) == len(expected)
    got = frame.set_index(["region", "business_unit"])["revenue"]
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=0.005), key


def test_kpi_won_value_maven(capsys, maven_mart):
    frame = _kpi_frame(capsys, "won_value", "--mart", str(maven_mart))
    assert frame["won_value"].iloc[0] == pytest.approx(10_005_534)


def test_kpi_win_rate_maven(capsys, maven_mart):
    frame = _kpi_frame(capsys, "win_rate", "--mart", str(maven_mart))
    assert frame["win_rate"].iloc[0] == pytest.approx(4238 / 6711)


def test_kpi_open_pipeline_maven(capsys, maven_mart):
    pipeline = pd.read_csv(SHARED_DATA / "maven-crm" / "sales_pipeline.csv")
    products = pd.read_csv(SHARED_DATA / "maven-crm" / "products.csv")
    prices = dict(zip(products["product"], products["sales_price"], strict=True))
    prices["GTXPro"] = prices["GTX Pro"]
    open_deals = pipeline[pipeline["deal_stage"].isin(["Engaging", "Prospecting"])]
    expected = open_deals["product"].map(prices).sum()
    frame = _kpi_frame(capsys, "open_pipeline", "--mart", str(maven_mart))
    assert frame["open_pipeline"].iloc[0] == pytest.approx(expected)


def test_kpi_weighted_below_open(capsys, maven_mart):
    weighted = _kpi_frame(capsys, "weighted_pipeline", "--mart", str(maven_mart))[
        "weighted_pipeline"
    ].iloc[0]
    total = _kpi_frame(capsys, "open_pipeline", "--mart", str(maven_mart))[
        "open_pipeline"
    ].iloc[0]
    assert 0 < weighted < total


def test_kpi_unknown_name_fails(capsys, maven_mart):
    assert main(["kpi", "happiness", "--mart", str(maven_mart)]) == 2
    assert "happiness" in capsys.readouterr().err


def test_audit_reports_gtxpro(capsys, maven_mart):
    assert main(["audit", "--mart", str(maven_mart), "--format", "csv"]) == 0
    out = capsys.readouterr().out
    assert "GTXPro" in out


def test_targets_plan_propose_decide_export(capsys, small_demo_mart, tmp_path):
    import shutil

    import duckdb
    import openpyxl

    mart = tmp_path / "plan.duckdb"
    shutil.copy(small_demo_mart, mart)
    assert (
        main(
            [
                "targets",
                "plan",
                "--mart",
                str(mart),
                "--year",
                "2027",
                "--reason",
                "yearly plan",
            ]
        )
        == 0
    )
    assert "published targets of 2027 as version 1" in capsys.readouterr().out

    with duckdb.connect(str(mart), read_only=True) as con:
        rep, manager, unit = con.execute(
            """
            SELECT t.key, r.manager_id, t.business_unit FROM targets t JOIN reps r ON r.rep_id = t.key
            WHERE t.period = '2027' AND t.level = 'rep' AND t.metric = 'revenue' AND t.business_unit IS NOT NULL
            ORDER BY t.value DESC LIMIT 1
            """
        ).fetchone()
    propose = [
        "targets",
        "propose",
        "--mart",
        str(mart),
        "--year",
        "2027",
        "--rep",
        rep,
        "--unit",
        unit,
    ]
    propose += ["--value", "1000000", "--by", manager, "--reason", "key account lost"]
    assert main(propose) == 0
    change_id = capsys.readouterr().out.split()[-1]
    decide = [
        "targets",
        "decide",
        "--mart",
        str(mart),
        "--change",
        change_id,
        "--by",
        "region head",
    ]
    assert main([*decide, "--decision", "approve"]) == 0
    capsys.readouterr()

    with duckdb.connect(str(mart), read_only=True) as con:
        value, set_by = con.execute(
            """
            SELECT value, set_by FROM targets
            WHERE period = '2027' AND level = 'rep' AND key = ? AND business_unit = ? AND metric = 'revenue'
            ORDER BY version DESC LIMIT 1
            """,
            [rep, unit],
        ).fetchone()
    assert value == pytest.approx(1_000_000, abs=0.01)
    assert set_by == "region head"

    xlsx, csv = tmp_path / "targets.xlsx", tmp_path / "targets.csv"
    assert (
        main(
            [
                "targets",
                "export",
                "--mart",
                str(mart),
                "--year",
                "2027",
                "--xlsx",
                str(xlsx),
                "--csv",
                str(csv),
            ]
        )
        == 0
    )
    assert sorted(openpyxl.load_workbook(xlsx).sheetnames) == [
        "East",
        "North",
        "South",
        "West",
    ]
    exported = pd.read_csv(csv)
    assert set(exported["plan_year"]) == {2027}


def test_kpi_unknown_region_fails(capsys, superstore_mart):
    assert (
        main(["kpi", "revenue", "--mart", str(superstore_mart), "--region", "west"])
        == 2
    )
    err = capsys.readouterr().err
    assert "region 'west' is not in the mart" in err
    assert "West" in err


def test_kpi_attainment_needs_period(capsys, small_demo_mart):
    assert main(["kpi", "attainment_pct", "--mart", str(small_demo_mart)]) == 2
    assert "give --period" in capsys.readouterr().err


def test_kpi_attainment_for_year(capsys, small_demo_mart):
    import duckdb

    frame = _kpi_frame(
        capsys, "attainment_pct", "--mart", str(small_demo_mart), "--period", "year"
    )
    with duckdb.connect(str(small_demo_mart), read_only=True) as con:
        revenue = con.execute(
            "SELECT sum(net_revenue) FROM transactions WHERE date BETWEEN DATE '2026-01-01' AND DATE '2026-09-30'"
        ).fetchone()[0]
        target = con.execute(
            "SELECT sum(value) FROM targets WHERE period = '2026' AND level = 'rep'"
        ).fetchone()[0]
    assert frame["attainment_pct"].iloc[0] == pytest.approx(revenue / target)


def test_mart_that_is_a_csv_fails(capsys):
    assert main(["kpi", "revenue", "--mart", str(SUPERSTORE_CSV)]) == 2
    assert "is not a DuckDB mart" in capsys.readouterr().err


def test_demo_never_overwrites_other_file(capsys, tmp_path):
    other = tmp_path / "notes.csv"
    other.write_text("a,b\n1,2\n")
    assert main(["demo", "--mart", str(other)]) == 2
    assert other.read_text() == "a,b\n1,2\n"


def test_ingest_overflowing_amount_quarantined(tmp_path):
    lines = SUPERSTORE_CSV.read_text(encoding="utf-8").splitlines()
    header, first = lines[0], lines[1].split(",")
    sales = header.split(",").index("Sales")
    first[sales] = "1e309"
    bad = tmp_path / "overflow.csv"
    bad.write_text(header + "\n" + ",".join(first) + "\n", encoding="utf-8")
    mart = tmp_path / "m.duckdb"
    assert main(["ingest", "superstore", str(bad), "--mart", str(mart)]) == 0
    import duckdb

    with duckdb.connect(str(mart), read_only=True) as con:
        loaded = con.execute("SELECT count(*) FROM transactions").fetchone()[0]
        reason = con.execute("SELECT column_name, value FROM quarantine").fetchone()
    assert loaded == 0
    assert reason[1] == "1e309"
