"""Run parameter files: loading, schema checks, merge order and messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cockpit.errors import ParameterError
from cockpit.params import (
    BUILTIN_DEFAULTS,
    DEFAULT_PARAMETERS_FILE,
    ParameterSet,
    load_parameters,
    parse_parameters,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> str:
    with pytest.raises(ParameterError) as caught:
        load_parameters(path)
    return str(caught.value)


def test_shipped_file_defaults():
    parameters = load_parameters(DEFAULT_PARAMETERS_FILE)
    assert parameters.defaults == {
        "as_of": None,
        "forecast_horizon": 12,
        "growth_pct": 0.05,
        "backtest_holdout": 12,
        "incentive_plan": None,
        "regressors": [],
        "scenario_file": None,
        "notebooks": [
            "01_data_audit",
            "02_forecast",
            "03_targets",
            "04_kpi_review",
            "05_pipeline_behaviour",
            "06_gap_and_warnings",
        ],
    }
    assert parameters.overrides == {}


def test_shipped_file_is_default():
    assert load_parameters(None).source == DEFAULT_PARAMETERS_FILE


def test_merge_order(tmp_path):
    path = write(
        tmp_path,
        """
defaults:
  forecast_horizon: 6
  growth_pct: 0.02
overrides:
  East:
    growth_pct: 0.08
    backtest_holdout: 3
  East/Furniture:
    growth_pct: 0.10
""",
    )
    parameters = load_parameters(path)
    furniture = parameters.for_pair("East", "Furniture")
    technology = parameters.for_pair("East", "Technology")
    west = parameters.for_pair("West", "Furniture")
    assert furniture["growth_pct"] == 0.10
    assert furniture["backtest_holdout"] == 3
    assert furniture["forecast_horizon"] == 6
    assert technology["growth_pct"] == 0.08
    assert west["growth_pct"] == 0.02
    assert west["backtest_holdout"] == BUILTIN_DEFAULTS["backtest_holdout"]
    assert west["notebooks"] == BUILTIN_DEFAULTS["notebooks"]


def test_merge_leaves_sources_alone(tmp_path):
    parameters = load_parameters(write(tmp_path, "defaults:\n  notebooks: [a]\n"))
    parameters.for_pair("East", "Furniture")["notebooks"].append("b")
    assert parameters.for_pair("East", "Furniture")["notebooks"] == ["a"]


def test_wrong_type_message(tmp_path):
    path = write(
        tmp_path,
        "overrides:\n  East/Furniture:\n    forecast_horizon: twelve\n",
    )
    message = error_of(path)
    assert str(path) in message
    assert 'overrides."East/Furniture".forecast_horizon' in message
    assert "expected integer" in message
    assert "'twelve' (string)" in message


def test_boolean_is_not_integer(tmp_path):
    message = error_of(write(tmp_path, "defaults:\n  backtest_holdout: true\n"))
    assert "defaults.backtest_holdout: expected integer" in message
    assert "found True (boolean)" in message


def test_unknown_key_message(tmp_path):
    path = write(tmp_path, "defaults:\n  horizon: 12\n")
    message = error_of(path)
    assert str(path) in message
    assert "defaults.horizon: unknown key" in message
    assert "forecast_horizon" in message


def test_unknown_top_level_key(tmp_path):
    message = error_of(write(tmp_path, "default:\n  growth_pct: 0.1\n"))
    assert "default: unknown key; expected one of defaults, overrides" in message


def test_bad_yaml_names_line(tmp_path):
    path = write(tmp_path, "defaults:\n  growth_pct: [0.1\n  forecast_horizon: 3\n")
    message = error_of(path)
    assert message.startswith(f"{path}:")
    assert "invalid YAML" in message


def test_bad_yaml_line_number(tmp_path):
    path = write(tmp_path, "defaults:\n  growth_pct: 0.1\n bad: [\n")
    message = error_of(path)
    assert f"{path}:3:" in message


def test_repeated_key(tmp_path):
    path = write(tmp_path, "defaults:\n  growth_pct: 0.1\n  growth_pct: 0.2\n")
    message = error_of(path)
    assert f"{path}:3:3" in message
    assert "key 'growth_pct' repeats the one on line 2" in message


def test_python_tag_rejected(tmp_path):
    path = write(tmp_path, "defaults:\n  as_of: !!python/object/apply:os.getcwd []\n")
    assert "invalid YAML" in error_of(path)


def test_as_of_stays_text(tmp_path):
    parameters = load_parameters(write(tmp_path, "defaults:\n  as_of: 2024-06-30\n"))
    assert parameters.defaults["as_of"] == "2024-06-30"


def test_invalid_date(tmp_path):
    message = error_of(write(tmp_path, "defaults:\n  as_of: 2024-02-30\n"))
    assert "defaults.as_of: expected a date as YYYY-MM-DD" in message
    assert "'2024-02-30'" in message


def test_growth_as_percent_rejected(tmp_path):
    message = error_of(write(tmp_path, "defaults:\n  growth_pct: 5\n"))
    assert "defaults.growth_pct: expected number <= 1" in message
    assert "0.05 for 5 %" in message


def test_empty_notebook_list(tmp_path):
    message = error_of(write(tmp_path, "defaults:\n  notebooks: []\n"))
    assert "defaults.notebooks: expected a list of at least 1 item(s)" in message


def test_bad_notebook_name(tmp_path):
    message = error_of(write(tmp_path, "defaults:\n  notebooks: [ok, ../evil]\n"))
    assert "defaults.notebooks[1]: expected a notebook name" in message


def test_bad_override_key(tmp_path):
    message = error_of(write(tmp_path, "overrides:\n  East/Furniture/Chairs: {}\n"))
    assert "overrides: expected an override key 'Region' or 'Region/Unit'" in message


def test_section_not_mapping(tmp_path):
    message = error_of(write(tmp_path, "defaults: [1, 2]\n"))
    assert "defaults: expected mapping or null, found [1, 2] (list)" in message


def test_all_problems_listed(tmp_path):
    message = error_of(
        write(tmp_path, "defaults:\n  growth_pct: x\n  forecast_horizon: 0\n")
    )
    assert "defaults.growth_pct: expected number" in message
    assert "defaults.forecast_horizon: expected integer >= 1" in message


def test_empty_sections_allowed(tmp_path):
    parameters = load_parameters(write(tmp_path, "defaults:\noverrides:\n  East:\n"))
    assert parameters.for_pair("East", "Furniture") == BUILTIN_DEFAULTS


def test_empty_file_allowed(tmp_path):
    parameters = load_parameters(write(tmp_path, ""))
    assert parameters.for_pair("East", "Furniture") == BUILTIN_DEFAULTS


def test_integral_float_becomes_int(tmp_path):
    parameters = load_parameters(
        write(tmp_path, "defaults:\n  forecast_horizon: 6.0\n")
    )
    assert parameters.defaults["forecast_horizon"] == 6
    assert isinstance(parameters.defaults["forecast_horizon"], int)


def test_missing_file(tmp_path):
    message = error_of(tmp_path / "absent.yaml")
    assert f"parameter file {tmp_path / 'absent.yaml'} not found" in message


def test_check_scopes_unknown_region():
    parameters = ParameterSet(defaults={}, overrides={"Est": {"growth_pct": 0.1}})
    with pytest.raises(ParameterError) as caught:
        parameters.check_scopes([("East", "Furniture")])
    assert "no region 'Est' in the mart; known regions: East" in str(caught.value)


def test_check_scopes_unknown_pair():
    parameters = ParameterSet(defaults={}, overrides={"East/Chairs": {}})
    with pytest.raises(ParameterError) as caught:
        parameters.check_scopes([("East", "Furniture")])
    assert "no region/unit pair 'East/Chairs'" in str(caught.value)


def test_check_scopes_known():
    parameters = ParameterSet(defaults={}, overrides={"East": {}, "East/Furniture": {}})
    parameters.check_scopes([("East", "Furniture")])


@given(st.integers(min_value=-1000, max_value=1000))
def test_horizon_range(horizon):
    text = f"defaults:\n  forecast_horizon: {horizon}\n"
    if 1 <= horizon <= 60:
        assert parse_parameters(text)["defaults"]["forecast_horizon"] == horizon
    else:
        with pytest.raises(ParameterError):
            parse_parameters(text)


def test_demo_file_names_regressor():
    parameters = load_parameters(DEFAULT_PARAMETERS_FILE.parent / "demo.yaml")
    assert parameters.defaults["regressors"][0]["indicator"] == "industrial_production"
