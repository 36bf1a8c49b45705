"""Audit depth: validity, outliers, linkage, pilot choice, current status, history."""

from __future__ import annotations

import math
import shutil
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cockpit.audit import (
    READINESS_WEIGHTS,
    audit_connection,
    audit_history,
    check_validity,
    current_status,
    find_outliers,
    recommend_pilot,
    run_audit,
    save_audit,
    score_readiness,
    status_markdown,
)
from cockpit.audit.validity import MAD_TO_Z, OUTLIER_MIN_FACTOR, OUTLIER_Z
from cockpit.errors import MartError, ParameterError
from cockpit.mart import connect, set_meta
from cockpit.review import audit_result_table
from cockpit.scope import Scope

AS_OF = date(2024, 2, 29)


@pytest.fixture(scope="module")
def maven(maven_mart):
    return run_audit(maven_mart)


@pytest.fixture(scope="module")
def store(superstore_mart):
    return run_audit(superstore_mart)


@pytest.fixture(scope="module")
def demo(small_demo_mart):
    return run_audit(small_demo_mart)


@pytest.fixture(scope="module")
def pipeline(shared_data: Path) -> pd.DataFrame:
    return pd.read_csv(shared_data / "maven-crm" / "sales_pipeline.csv")


@pytest.fixture(scope="module")
def orders(shared_data: Path) -> pd.DataFrame:
    return pd.read_csv(shared_data / "superstore" / "Sample - Superstore.csv")


def _summary_row(result, table: str, check: str) -> pd.Series:
    rows = result.summary[
        (result.summary["table"] == table) & (result.summary["check"] == check)
    ]
    assert len(rows) == 1, f"{table} / {check}: {len(rows)} rows"
    return rows.iloc[0]


def _rule(validity: pd.DataFrame, table: str, rule: str) -> int:
    rows = validity[(validity["table"] == table) & (validity["rule"] == rule)]
    return int(rows["rows"].sum())


# --- made-up faults ------------------------------------------------------------


def _insert(con, table: str, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)
    con.register("_rows", frame)
    columns = ", ".join(frame.columns)
    con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM _rows")
    con.unregister("_rows")


def _sale(n: int, day: str, **values) -> dict:
    row = {
        "invoice_id": f"T{n}",
        "line": 1,
        "date": day,
        "region": "East",
        "business_unit": "Tools",
        "quantity": 1.0,
        "net_revenue": 100.0,
        "cost": 60.0,
        "currency": "EUR",
    }
    row.update(values)
    return row


def _deal(n: int, status: str, **values) -> dict:
    row = {
        "opportunity_id": f"O{n}",
        "snapshot_date": "2024-02-29",
        "region": "East",
        "business_unit": "Tools",
        "stage": status,
        "status": status,
        "amount": 500.0,
        "created_date": "2023-12-01",
    }
    row.update(values)
    return row


@pytest.fixture
def faults(tmp_path) -> Path:
    """Mart with one row per validity fault, in region East, unit Tools."""
    path = tmp_path / "faults.duckdb"
    with connect(path) as con:
        set_meta(con, {"as_of": AS_OF.isoformat(), "currency": "EUR"})
        _insert(
            con,
            "transactions",
            [
                _sale(1, "2024-01-10"),
                _sale(2, "2024-03-01"),
                _sale(3, "2024-01-11", cost=-5.0),
                _sale(4, "2024-01-12", currency="USD"),
                _sale(5, "2024-01-13", net_revenue=-50.0, cost=-30.0),
                _sale(6, "2024-01-14", currency="eur"),
            ],
        )
        _insert(
            con,
            "opportunities",
            [
                _deal(1, "won", closed_date="2024-01-15"),
                _deal(2, "won", created_date="2024-01-10", closed_date="2024-01-05"),
                _deal(3, "open", closed_date="2024-02-01"),
                _deal(4, "won", amount=0.0, closed_date="2024-02-01"),
                _deal(5, "open", expected_close_date="2024-02-01"),
            ],
        )
        _insert(
            con,
            "activities",
            [
                {
                    "activity_id": f"A{i}",
                    "rep_id": "R1",
                    "type": kind,
                    "date": "2024-01-10",
                    "duration_minutes": minutes,
                    "account_id": account,
                    "region": "East",
                }
                for i, (kind, minutes, account) in enumerate(
                    [
                        ("visit", 30.0, "C1"),
                        ("call", 0.0, "C1"),
                        ("visit", 900.0, "C1"),
                        ("meeting", 30.0, "C1"),
                        ("internal", 60.0, "C1"),
                    ]
                )
            ],
        )
    return path


@pytest.fixture
def fault_validity(faults) -> pd.DataFrame:
    with connect(faults, read_only=True) as con:
        return check_validity(con, Scope(), AS_OF, "EUR")


@pytest.mark.parametrize(
    ("table", "rule", "rows"),
    [
        ("transactions", "date after as-of", 1),
        ("transactions", "negative cost on a sales line", 1),
        ("transactions", "currency code not three capital letters", 1),
        ("transactions", "foreign currency without exchange rate", 2),
        ("transactions", "negative line (credit note or return)", 1),
        ("transactions", "zero net revenue", 0),
        ("opportunities", "closed before created", 1),
        ("opportunities", "open with a close date", 1),
        ("opportunities", "won with zero amount", 1),
        ("opportunities", "open past expected close", 1),
        ("opportunities", "negative amount", 0),
        ("activities", "duration not positive", 1),
        ("activities", "duration over 12 hours", 1),
        ("activities", "unknown activity type", 1),
        ("activities", "internal meeting with an account", 1),
    ],
)
def test_validity_rule_counts(fault_validity, table, rule, rows):
    assert _rule(fault_validity, table, rule) == rows


def test_validity_example_named(fault_validity):
    row = fault_validity[fault_validity["rule"] == "closed before created"].iloc[0]
    assert row["example"] == "O2"


def test_validity_amount_summed(fault_validity):
    row = fault_validity[
        fault_validity["rule"] == "foreign currency without exchange rate"
    ].iloc[0]
    assert row["amount"] == 200.0


def test_validity_cells(fault_validity):
    facts = fault_validity[fault_validity["table"] == "transactions"]
    cells = set(zip(facts["region"], facts["business_unit"], strict=True))
    assert cells == {("East", "Tools")}


def test_validity_without_as_of(faults):
    with connect(faults, read_only=True) as con:
        validity = check_validity(con, Scope(), None, "EUR")
    assert "date after as-of" not in set(validity["rule"])


def test_validity_statuses(faults):
    result = run_audit(faults)
    assert _summary_row(result, "transactions", "date after as-of")["status"] == "fail"
    assert (
        _summary_row(result, "transactions", "negative line (credit note or return)")[
            "status"
        ]
        == "ok"
    )
    assert (
        _summary_row(result, "opportunities", "open past expected close")["status"]
        == "warn"
    )


def test_readiness_counts_invalid_rows(faults):
    readiness = run_audit(faults).readiness.iloc[0]
    # 4 of 6 invoice lines and 3 of 5 deals break an invalid rule.
    assert readiness["invalid_rows"] == 7
    assert readiness["validity"] == round(100 * 4 / 11, 1)


def test_readiness_freshest_table(tmp_path):
    path = tmp_path / "mart.duckdb"
    with connect(path) as con:
        set_meta(con, {"as_of": AS_OF.isoformat(), "currency": "EUR"})
        _insert(con, "transactions", [_sale(1, "2022-01-01"), _sale(2, "2023-12-31")])
        _insert(con, "opportunities", [_deal(1, "open", snapshot_date="2024-02-20")])
    row = run_audit(path).readiness.iloc[0]
    months = (date(2023, 12, 31) - date(2022, 1, 1)).days / 30.4375
    assert row["days_behind"] == (AS_OF - date(2024, 2, 20)).days
    assert row["months"] == round(months, 1)
    assert row["freshness"] == 100.0


# --- outliers -----------------------------------------------------------------


def _lines(values, products=None) -> list[dict]:
    products = products or [None] * len(values)
    return [
        _sale(i, "2024-01-10", net_revenue=v, cost=0.0, product_id=p)
        for i, (v, p) in enumerate(zip(values, products, strict=True))
    ]


def _numpy_outliers(values: np.ndarray) -> int:
    logs = np.log(values)
    median = np.median(logs)
    mad = np.median(np.abs(logs - median))
    spread = max(OUTLIER_Z / MAD_TO_Z * mad, math.log(OUTLIER_MIN_FACTOR))
    return int((np.abs(logs - median) > spread).sum())


def test_outlier_needs_factor(tmp_path):
    values = [100.0 + i for i in range(40)] + [5000.0, 900.0]
    path = tmp_path / "mart.duckdb"
    with connect(path) as con:
        _insert(con, "transactions", _lines(values))
        found = find_outliers(con)
    row = found[found["column"] == "net_revenue"].iloc[0]
    assert row["outliers"] == _numpy_outliers(np.array(values)) == 1
    assert row["example_value"] == 5000.0
    assert row["example"] == "T40 line 1"


def test_outliers_per_product(tmp_path):
    cheap = [50.0 + i % 7 for i in range(40)]
    dear = [5000.0 + 10 * (i % 7) for i in range(40)]
    values = [*cheap, *dear, 600.0]
    products = ["A"] * 40 + ["B"] * 40 + ["A"]
    path = tmp_path / "mart.duckdb"
    with connect(path) as con:
        _insert(con, "transactions", _lines(values, products))
        found = find_outliers(con)
    row = found[found["column"] == "net_revenue"].iloc[0]
    assert _numpy_outliers(np.array(values)) == 0
    assert row["product_groups"] == 2
    assert row["outliers"] == 1
    assert row["example_value"] == 600.0


def test_small_cell_not_scanned(tmp_path):
    path = tmp_path / "mart.duckdb"
    with connect(path) as con:
        _insert(con, "transactions", _lines([100.0] * 10 + [99999.0]))
        found = find_outliers(con)
    assert found.empty


def test_store_outliers_match_pandas(store, orders):
    found = store.outliers[store.outliers["column"] == "net_revenue"]
    expected = orders.groupby(["Region", "Category"])["Sales"].apply(
        lambda s: _numpy_outliers(s.to_numpy())
    )
    got = found.set_index(["region", "business_unit"])["outliers"]
    assert got.sort_index().to_dict() == expected.sort_index().to_dict()


def test_store_outliers_cell_level(store):
    assert (store.outliers["product_groups"] == 0).all()


def test_store_outliers_ok(store, orders):
    row = _summary_row(store, "transactions", "net_revenue outliers")
    expected = orders.groupby(["Region", "Category"])["Sales"].apply(
        lambda s: _numpy_outliers(s.to_numpy())
    )
    assert row["value"] == expected.sum()
    assert row["status"] == "ok"


def test_maven_outliers_none(maven):
    row = _summary_row(maven, "opportunities", "amount outliers")
    assert row["value"] == 0


# --- validity and linkage on the real marts -------------------------------------


def test_maven_estimates_noted(maven, pipeline):
    open_deals = pipeline[~pipeline["deal_stage"].isin(["Won", "Lost"])]
    expected = int(open_deals["close_value"].isna().sum())
    assert _rule(
        maven.validity, "opportunities", "amount estimated from list price"
    ) == (expected)


def test_maven_no_invalid_rows(maven):
    invalid = maven.validity[maven.validity["severity"] == "invalid"]
    assert invalid["rows"].sum() == 0


def test_store_no_invalid_rows(store):
    invalid = store.validity[store.validity["severity"] == "invalid"]
    assert len(invalid) > 0
    assert invalid["rows"].sum() == 0


def test_demo_credit_notes(demo, small_demo_mart):
    with connect(small_demo_mart, read_only=True) as con:
        lines = con.execute("SELECT net_revenue FROM transactions").df()
    negative = lines[lines["net_revenue"] < 0]
    rule = demo.validity[
        demo.validity["rule"] == "negative line (credit note or return)"
    ]
    assert rule["rows"].sum() == len(negative)
    assert rule["amount"].sum() == pytest.approx(negative["net_revenue"].sum())


def test_maven_product_linkage(maven, pipeline):
    loaded = _summary_row(
        maven, "opportunities", "opportunities with a known product, as loaded"
    )
    harmonised = _summary_row(
        maven,
        "opportunities",
        "opportunities with a known product, after harmonisation",
    )
    expected = (pipeline["product"] != "GTXPro").mean()
    assert loaded["value"] == round(expected, 4)
    assert harmonised["value"] == 1.0
    assert harmonised["status"] == "ok"


def test_maven_account_linkage(maven, pipeline):
    row = _summary_row(maven, "opportunities", "opportunities with a known account")
    assert row["value"] == round(pipeline["account"].notna().mean(), 4)
    assert row["status"] == "warn"


def test_store_revenue_unlinked(store):
    row = _summary_row(store, "account_links", "ERP revenue with a CRM account")
    assert row["value"] == 0.0
    assert row["status"] == "warn"
    assert "no CRM accounts" in row["detail"]


def test_demo_revenue_linked(demo):
    row = _summary_row(demo, "account_links", "ERP revenue with a CRM account")
    assert (row["value"], row["status"]) == (1.0, "ok")


def test_scoped_new_checks(maven_mart):
    result = run_audit(maven_mart, region="West", business_unit="MG")
    validity = result.validity[result.validity["table"] == "opportunities"]
    for frame in (validity, result.outliers, result.linkage):
        assert set(frame["region"]) == {"West"}
        assert set(frame["business_unit"]) == {"MG"}


def test_scoped_linkage_counts(maven_mart, pipeline, shared_data):
    teams = pd.read_csv(shared_data / "maven-crm" / "sales_teams.csv")
    deals = pipeline.merge(teams, on="sales_agent")
    cell = deals[
        (deals["regional_office"] == "West") & deals["product"].str.startswith("MG")
    ]
    result = run_audit(maven_mart, region="West", business_unit="MG")
    row = result.linkage[
        result.linkage["measure"] == "opportunities with a known account"
    ].iloc[0]
    assert row["denominator"] == len(cell)
    assert row["numerator"] == cell["account"].notna().sum()


# --- readiness explained --------------------------------------------------------


def test_explanation_adds_up(maven):
    for row in maven.readiness.itertuples():
        lost = sum(
            READINESS_WEIGHTS[part] * (100 - getattr(row, part))
            for part in READINESS_WEIGHTS
        )
        head = float(row.explanation.split(" ")[0])
        assert head == row.score, row
        assert 100 - lost == pytest.approx(row.score, abs=0.1), row


def test_explanation_orders_parts(maven):
    row = maven.readiness[
        (maven.readiness["region"] == "Central")
        & (maven.readiness["business_unit"] == "GTX")
    ].iloc[0]
    assert row["explanation"].startswith(f"{row['score']:.1f} = 100 - ")
    assert row["explanation"].index("history") < row["explanation"].index("linkage")


def test_full_marks_explained(store):
    assert set(store.readiness["explanation"]) == {
        "100.0: every part scores full marks"
    }


# --- pilot recommendation -------------------------------------------------------


def test_maven_pilot_region(maven):
    pilot = recommend_pilot(maven)
    assert (pilot.region, pilot.business_unit) == ("West", "MG")


def test_maven_pilot_scores(maven):
    ranking = recommend_pilot(maven).ranking.set_index("region")
    readiness = maven.readiness
    for region, cells in readiness.groupby("region"):
        weighted = (cells["score"] * cells["rows"]).sum() / cells["rows"].sum()
        assert ranking.loc[region, "score"] == round(weighted, 1), region


def test_maven_pilot_reasons(maven):
    pilot = recommend_pilot(maven)
    ranking = pilot.ranking
    runner_up = ranking.iloc[1]
    assert pilot.reasons[0].startswith("West has the best data of 3 region(s)")
    assert (
        f"ahead of {runner_up['region']} {runner_up['score']:.1f}" in (pilot.reasons[0])
    )
    assert any(reason.startswith("Weakest part: history") for reason in pilot.reasons)


def test_pilot_deterministic(maven_mart):
    first = recommend_pilot(run_audit(maven_mart))
    second = recommend_pilot(run_audit(maven_mart))
    assert (first.region, first.business_unit, first.reasons) == (
        second.region,
        second.business_unit,
        second.reasons,
    )


def test_store_pilot_tie_on_volume(store, orders):
    pilot = recommend_pilot(store)
    rows = orders["Region"].value_counts()
    assert pilot.region == rows.index[0] == "West"
    assert pilot.reasons[1] == (
        f"West and East tie at 100.0; West comes first on volume: "
        f"{rows['West']:,} against {rows['East']:,} rows (history counts up "
        "to 24 months and both have that)."
    )


def test_demo_pilot(demo):
    pilot = recommend_pilot(demo)
    ranking = pilot.ranking
    assert pilot.region == ranking.iloc[0]["region"]
    assert ranking["rows"].iloc[0] == ranking["rows"].max()
    assert "tie at 100.0" in pilot.reasons[1]


def test_pilot_markdown(maven):
    text = recommend_pilot(maven).markdown()
    assert text.startswith("**Pilot recommendation: West**, starting with MG")


def test_short_history_not_eligible(tmp_path):
    path = tmp_path / "mart.duckdb"
    with connect(path) as con:
        set_meta(con, {"as_of": AS_OF.isoformat(), "currency": "EUR"})
        _insert(con, "transactions", [_sale(1, "2024-01-10"), _sale(2, "2024-02-10")])
    pilot = recommend_pilot(run_audit(path))
    assert pilot.eligible is False
    assert any("No region meets the pilot minimums" in r for r in pilot.reasons)


def test_pilot_needs_facts(tmp_path):
    path = tmp_path / "mart.duckdb"
    connect(path).close()
    with pytest.raises(MartError, match="no transactions or opportunities"):
        recommend_pilot(run_audit(path))


# --- current status -------------------------------------------------------------


@pytest.fixture(scope="module")
def maven_status(maven_mart, maven) -> pd.DataFrame:
    with connect(maven_mart, read_only=True) as con:
        return current_status(con, maven).set_index("area")


@pytest.mark.parametrize(
    ("area", "status", "effort"),
    [
        ("Seller activities", "missing", "easy"),
        ("Targets", "missing", "easy"),
        ("External indicators", "missing", "easy"),
        ("ERP invoice lines", "missing", "medium"),
        ("Exchange rates", "not needed", ""),
        ("ERP-CRM account links", "not needed", ""),
    ],
)
def test_maven_status_gaps(maven_status, area, status, effort):
    assert maven_status.loc[area, "status"] == status
    assert maven_status.loc[area, "effort"] == effort


def test_maven_status_present(maven_status):
    present = maven_status[maven_status["present"]]
    assert sorted(present.index) == [
        "CRM opportunities",
        "Customer accounts",
        "Products",
        "Sellers and managers",
    ]


def test_maven_status_quality(maven_status):
    row = maven_status.loc["CRM opportunities"]
    assert row["status"] == "fail"
    assert "product_id not in products" in row["findings"]


def test_maven_status_period(maven_status, pipeline):
    row = maven_status.loc["CRM opportunities"]
    assert row["first_date"] == date.fromisoformat(pipeline["engage_date"].min())
    assert row["last_date"] == date(2017, 12, 31)
    assert row["rows"] == len(pipeline)


def test_maven_status_markdown(maven_status):
    text = status_markdown(maven_status.reset_index())
    assert (
        "**Missing:** ERP invoice lines, Seller activities, Targets, "
        "External indicators" in text
    )
    assert "- Seller activities: export the CRM's activity log" in text


def test_store_status(superstore_mart, store):
    with connect(superstore_mart, read_only=True) as con:
        status = current_status(con, store).set_index("area")
    assert status.loc["CRM opportunities", "status"] == "missing"
    assert status.loc["Sellers and managers", "status"] == "missing"
    assert status.loc["ERP invoice lines", "gaps"] == "rep_id"


def test_demo_status_complete(small_demo_mart, demo):
    with connect(small_demo_mart, read_only=True) as con:
        status = current_status(con, demo).set_index("area")
    assert (status["status"] != "missing").all()
    assert status.loc["ERP-CRM account links", "findings"].startswith(
        "100.0% of ERP revenue has a CRM account"
    )


def test_status_runs_audit(maven_mart):
    with connect(maven_mart, read_only=True) as con:
        status = current_status(con)
    assert len(status) == 10


# --- history --------------------------------------------------------------------


@pytest.fixture
def maven_copy(maven_mart, tmp_path) -> Path:
    path = tmp_path / "mart.duckdb"
    shutil.copy(maven_mart, path)
    return path


def _counts(result) -> dict[str, int]:
    return result.summary["status"].value_counts().to_dict()


def test_history_two_runs(maven_copy):
    with connect(maven_copy) as con:
        first = audit_connection(con)
        save_audit(con, first, "run-1", datetime(2024, 1, 1))
        con.execute(
            "UPDATE opportunities SET product_id = 'GTX Pro' WHERE product_id = 'GTXPro'"
        )
        second = audit_connection(con)
        save_audit(con, second, "run-2", datetime(2024, 2, 1))
        history = audit_history(con)
    assert history["run_id"].tolist() == ["run-1", "run-2"]
    for result, row in zip((first, second), history.itertuples(), strict=True):
        counts = _counts(result)
        assert row.checks == len(result.summary)
        assert (row.ok, row.warn, row.fail) == tuple(
            counts.get(s, 0) for s in ("ok", "warn", "fail")
        )


def test_history_shows_fix(maven_copy):
    with connect(maven_copy) as con:
        save_audit(con, audit_connection(con), "run-1", datetime(2024, 1, 1))
        con.execute(
            "UPDATE opportunities SET product_id = 'GTX Pro' WHERE product_id = 'GTXPro'"
        )
        save_audit(con, audit_connection(con), "run-2", datetime(2024, 2, 1))
        history = audit_history(con)
    assert history["fail"].iloc[1] == history["fail"].iloc[0] - 1
    assert history["readiness"].iloc[1] > history["readiness"].iloc[0]


def test_history_of_one_check(maven_copy, maven):
    with connect(maven_copy) as con:
        save_audit(con, maven, "run-1", datetime(2024, 1, 1))
        save_audit(con, maven, "run-2", datetime(2024, 2, 1))
        scores = audit_history(con, "readiness score")
    first = scores[scores["run_id"] == "run-1"]
    assert len(first) == len(maven.readiness)
    assert first["number"].tolist() == maven.readiness["score"].tolist()
    assert (first["as_of"] == pd.Timestamp(maven.as_of)).all()


def test_history_mean_readiness(maven_copy, maven):
    with connect(maven_copy) as con:
        save_audit(con, maven, "run-1", datetime(2024, 1, 1))
        history = audit_history(con)
    assert history["readiness"].iloc[0] == pytest.approx(
        maven.readiness["score"].mean()
    )


def test_save_same_run_replaces(maven_copy, maven):
    with connect(maven_copy) as con:
        save_audit(con, maven, "run-1", datetime(2024, 1, 1))
        written = save_audit(con, maven, "run-1", datetime(2024, 1, 2))
        history = audit_history(con)
    assert written == len(maven.summary)
    assert history["checks"].tolist() == [len(maven.summary)]


def test_history_after_batch_rows(maven_copy, maven):
    batch_rows = audit_result_table(maven, maven.as_of).assign(run_id="batch-1")
    with connect(maven_copy) as con:
        con.register("_batch", batch_rows)
        con.execute("CREATE TABLE audit_results AS SELECT * FROM _batch")
        con.unregister("_batch")
        save_audit(con, maven, "run-2")
        history = audit_history(con)
    assert history["run_id"].tolist() == ["batch-1", "run-2"]
    assert history["scope"].isna().tolist() == [True, False]


def test_history_empty(maven_mart):
    with connect(maven_mart, read_only=True) as con:
        assert audit_history(con).empty


def test_save_needs_run_id(maven_copy, maven):
    with connect(maven_copy) as con, pytest.raises(ParameterError, match="run_id"):
        save_audit(con, maven, " ")


def test_readiness_scope_filter(maven_mart):
    with connect(maven_mart, read_only=True) as con:
        frame = score_readiness(con, Scope(region="East"))
    assert set(frame["region"]) == {"East"}
