"""Alert rules: YAML checking with clear errors, evaluation and storage.

Evaluation runs on the hand-built mart of tests/registry_mart.py at S3
(16 May 2025); comments give the numbers behind each alert.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from cockpit.alerts import (
    ALERT_COLUMNS,
    DEFAULT_RULES_FILE,
    evaluate_alerts,
    load_rules,
    parse_rules,
    save_alerts,
)
from cockpit.errors import ParameterError
from cockpit.mart import connect
from cockpit.mart.schema import TABLES
from cockpit.scope import Scope
from tests.registry_mart import S3, build_registry_mart

RULES = """
rules:
  - name: attainment
    check: projected_attainment
    severity: high
    levels:
      region: {below: 0.9}
  - name: coverage
    check: coverage
    levels:
      region: {below_required: 1.0}
  - name: win_rate
    check: kpi
    kpi: recent_win_rate
    severity: low
    levels:
      seller: {below: 0.5}
  - name: key_accounts
    check: key_account_contact
    severity: high
    days: 30
  - name: slipped
    check: deal_slips
    min_slips: 2
  - name: stale
    check: stale_deals
    severity: low
    days: 30
"""


@pytest.fixture(scope="module")
def mart_path(tmp_path_factory):
    return build_registry_mart(tmp_path_factory.mktemp("alerts") / "mart.duckdb")


@pytest.fixture(scope="module")
def alerts(mart_path):
    con = connect(mart_path, read_only=True)
    try:
        yield evaluate_alerts(con, parse_rules(RULES), S3)
    finally:
        con.close()


def _keys(alerts: pd.DataFrame, rule: str) -> list[str]:
    return sorted(alerts.loc[alerts["rule"] == rule, "key"])


# --- rules file -----------------------------------------------------------------------


def test_default_rules_load():
    rules = load_rules()
    assert {rule.check for rule in rules} == {
        "projected_attainment",
        "coverage",
        "kpi",
        "key_account_contact",
        "deal_slips",
        "stale_deals",
    }


def test_default_rules_thresholds():
    rules = {rule.name: rule for rule in load_rules(DEFAULT_RULES_FILE)}
    assert rules["projected_attainment_low"].levels["seller"] == {"below": 0.85}
    assert rules["key_account_without_contact"].days == 30
    assert rules["deal_slipped_twice"].min_slips == 2


def test_rule_defaults():
    rules = parse_rules("rules:\n  - {name: k, check: key_account_contact}\n")
    assert rules[0].days == 30
    assert rules[0].severity == "medium"


def _problems(text: str) -> str:
    with pytest.raises(ParameterError) as error:
        parse_rules(text, "alerts.yaml")
    return str(error.value)


def test_error_unknown_check():
    message = _problems("rules:\n  - {name: a, check: hunch}\n")
    assert "alerts.yaml: rules[0].check: expected one of" in message
    assert "'hunch'" in message


def test_error_missing_levels():
    message = _problems("rules:\n  - {name: a, check: coverage}\n")
    assert "rules[0].levels: missing" in message


def test_error_threshold_type():
    text = "rules:\n  - {name: a, check: kpi, kpi: win_rate, levels: {seller: {below: high}}}\n"
    message = _problems(text)
    assert "rules[0].levels.seller.below: expected a number" in message
    assert "'high' (string)" in message


def test_error_unknown_level():
    text = "rules:\n  - {name: a, check: projected_attainment, levels: {account: {below: 1}}}\n"
    assert "rules[0].levels.account: unknown level" in _problems(text)


def test_error_unknown_kpi():
    text = "rules:\n  - {name: a, check: kpi, kpi: turnover, levels: {seller: {below: 1}}}\n"
    assert "rules[0].kpi: expected a KPI name" in _problems(text)


def test_error_kpi_level_unsupported():
    text = (
        "rules:\n  - {name: a, check: kpi, kpi: share_of_wallet, "
        "levels: {business_unit: {below: 0.5}}}\n"
    )
    assert "cannot be computed per business_unit" in _problems(text)


def test_error_unknown_key():
    text = "rules:\n  - {name: a, check: deal_slips, min_slip: 2}\n"
    message = _problems(text)
    assert "rules[0].min_slip: unknown key" in message
    assert "min_slips" in message


def test_error_days_not_integer():
    text = "rules:\n  - {name: a, check: stale_deals, days: 1.5}\n"
    assert "rules[0].days: expected an integer >= 1" in _problems(text)


def test_error_repeated_name():
    text = (
        "rules:\n  - {name: a, check: deal_slips}\n  - {name: a, check: stale_deals}\n"
    )
    assert "rules[1].name: rule name 'a' is used twice" in _problems(text)


def test_error_repeated_yaml_key():
    text = "rules:\n  - name: a\n    name: b\n    check: deal_slips\n"
    message = _problems(text)
    assert "alerts.yaml:3:" in message
    assert "repeats" in message


def test_error_bad_severity():
    text = "rules:\n  - {name: a, check: deal_slips, severity: urgent}\n"
    assert "rules[0].severity: expected one of low, medium, high" in _problems(text)


def test_error_not_a_list():
    assert "rules: expected a list of rules" in _problems("rules: {a: 1}\n")


def test_error_invalid_yaml():
    assert "invalid YAML" in _problems("rules: [\n")


def test_errors_all_reported():
    text = "rules:\n  - {name: a, check: hunch}\n  - {name: b, check: stale_deals, days: 0}\n"
    message = _problems(text)
    assert "rules[0].check" in message
    assert "rules[1].days" in message


def test_missing_file(tmp_path):
    with pytest.raises(ParameterError, match="not found"):
        load_rules(tmp_path / "absent.yaml")


# --- evaluation ---------------------------------------------------------------------------


def test_alert_columns(alerts):
    assert list(alerts.columns) == ALERT_COLUMNS


def test_alert_projected_attainment(alerts):
    # East (70 + 0.6 x 1700) / 6000 = 18 % and West about 21 %: both below 90 %.
    assert _keys(alerts, "attainment") == ["East", "West"]


def test_alert_attainment_value(alerts):
    east = alerts[(alerts["rule"] == "attainment") & (alerts["key"] == "East")]
    assert east["value"].iloc[0] == pytest.approx((70 + 0.6 * 1700) / 6000)
    assert east["threshold"].iloc[0] == 0.9


def test_alert_coverage(alerts):
    # East: 1700 / 5930 against 1 / (2 / 3); West won nothing recently, so
    # its required coverage is undefined and raises no alert.
    rows = alerts[alerts["rule"] == "coverage"]
    assert rows["key"].tolist() == ["East"]
    assert rows["threshold"].iloc[0] == pytest.approx(1.5)


def test_alert_kpi_rule(alerts):
    # r2 lost H2 and r3 lost D5; r1 won D3 and H1.
    assert _keys(alerts, "win_rate") == ["r2", "r3"]


def test_alert_kpi_team_filled(alerts):
    row = alerts[(alerts["rule"] == "win_rate") & (alerts["key"] == "r3")].iloc[0]
    assert row["team"] == "T2"
    assert row["region"] == "West"


def test_alert_key_account(alerts):
    row = alerts[alerts["rule"] == "key_accounts"].iloc[0]
    assert row["key"] == "a1"
    assert row["value"] == 104
    assert "104 days" in row["message"]


def test_alert_deal_slipped(alerts):
    assert _keys(alerts, "slipped") == ["D1"]


def test_alert_stale(alerts):
    assert _keys(alerts, "stale") == ["D2"]


def test_alert_severity_order(alerts):
    order = {"high": 0, "medium": 1, "low": 2}
    ranks = alerts["severity"].map(order).tolist()
    assert ranks == sorted(ranks)


def test_alert_messages_present(alerts):
    assert alerts["message"].str.len().min() > 20


def test_alert_disabled_rule(mart_path):
    con = connect(mart_path, read_only=True)
    try:
        text = "rules:\n  - {name: s, check: deal_slips, enabled: false}\n"
        frame = evaluate_alerts(con, parse_rules(text), S3)
    finally:
        con.close()
    assert frame.empty


def test_alert_scope(mart_path):
    con = connect(mart_path, read_only=True)
    try:
        frame = evaluate_alerts(con, parse_rules(RULES), S3, Scope(region="West"))
    finally:
        con.close()
    assert "a1" not in set(frame["key"])
    assert set(frame["scope"]) == {"region West"}


# --- storage ---------------------------------------------------------------------------------


def test_alerts_table_last():
    assert list(TABLES)[-1] == "alerts"


def test_save_alerts_replaces(tmp_path, alerts):
    path = build_registry_mart(tmp_path / "mart.duckdb")
    with connect(path) as con:
        first = save_alerts(con, alerts, S3)
        second = save_alerts(con, alerts, S3)
        stored = con.execute("SELECT count(*) FROM alerts").fetchone()[0]
    assert first.rows_loaded == len(alerts)
    assert second.rows_quarantined == 0
    assert stored == len(alerts)


def test_save_empty_clears(tmp_path, alerts):
    path = build_registry_mart(tmp_path / "mart.duckdb")
    with connect(path) as con:
        save_alerts(con, alerts, S3)
        save_alerts(con, alerts.iloc[0:0], S3)
        stored = con.execute("SELECT count(*) FROM alerts").fetchone()[0]
    assert stored == 0


def test_save_other_date_rejected(tmp_path, alerts):
    path = build_registry_mart(tmp_path / "mart.duckdb")
    with connect(path) as con, pytest.raises(ParameterError, match="another as_of"):
        save_alerts(con, alerts, date(2025, 1, 1))
