"""Projected period-end attainment on the hand-built mart of tests/registry_mart.py.

As of S3 (16 May 2025) the year has 229 days left. Every open deal gets the
overall win rate 3 / 5 = 0.6 (too few closed deals to calibrate a stage).
The repeat-business run-rate looks at the 13 weeks from 15 February to
16 May 2025: West sold 60 (a4 on 1 March) and won no deal; East sold
nothing there and won D3 (2000), so its repeat revenue is 0.
"""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pytest

from cockpit.errors import KpiError
from cockpit.kpi_periods import Period
from cockpit.mart import connect
from cockpit.projection import COLUMNS, DEFAULT_Z, project_attainment
from cockpit.scope import Scope
from tests.registry_mart import S3, build_registry_mart

DAYS_LEFT = 229
WEST_WEEKLY = np.array([60.0] + [0.0] * 12)


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    path = build_registry_mart(tmp_path_factory.mktemp("projection") / "mart.duckdb")
    reader = connect(path, read_only=True)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def regions(con):
    return project_attainment(con, S3, level="region").set_index("region")


def test_projection_columns(con):
    frame = project_attainment(con, S3, level="region")
    assert list(frame.columns) == ["region", *COLUMNS]


def test_projection_days_left(regions):
    assert regions.loc["West", "days_left"] == DAYS_LEFT


def test_projection_actual(regions):
    assert regions.loc["East", "actual"] == 70
    assert regions.loc["West", "actual"] == 60


def test_projection_pipeline(regions):
    # East: (D1 1200 + D2 500) x 0.6; West: (D4 800 + D7 250) x 0.6.
    assert regions.loc["East", "pipeline_expected"] == pytest.approx(1020)
    assert regions.loc["West", "pipeline_expected"] == pytest.approx(630)


def test_projection_run_rate(regions):
    assert regions.loc["West", "run_rate_expected"] == pytest.approx(
        60 / 91 * DAYS_LEFT
    )
    assert regions.loc["East", "run_rate_expected"] == 0


def test_projection_total(regions):
    expected = 60 + 630 + 60 / 91 * DAYS_LEFT
    assert regions.loc["West", "projected"] == pytest.approx(expected)
    assert regions.loc["West", "projected_attainment"] == pytest.approx(expected / 4000)


def test_projection_range(regions):
    pipeline_variance = 0.24 * (800**2 + 250**2)
    run_variance = WEST_WEEKLY.var(ddof=1) * DAYS_LEFT / 7
    spread = DEFAULT_Z * math.sqrt(pipeline_variance + run_variance)
    projected = regions.loc["West", "projected"]
    assert regions.loc["West", "projected_high"] == pytest.approx(projected + spread)
    assert regions.loc["West", "projected_low"] == pytest.approx(projected - spread)


def test_projection_low_floor(regions):
    # East's spread (z x sqrt(0.24 x (1200^2 + 500^2))) exceeds its 1020 expected.
    assert regions.loc["East", "projected_low"] == 70


def test_projection_gap(regions):
    gap = 6000 - regions.loc["East", "projected"]
    assert regions.loc["East", "gap_to_target"] == pytest.approx(gap)


def test_projection_company(con):
    frame = project_attainment(con, S3, level="company")
    assert len(frame) == 1
    assert frame["target"].iloc[0] == 10000
    assert frame["pipeline_expected"].iloc[0] == pytest.approx(0.6 * 2750)


def test_projection_sellers(con):
    frame = project_attainment(con, S3, level="seller").set_index("rep_id")
    # r3 owns D4 and D7 at S3 and has no target of its own.
    assert frame.loc["r3", "pipeline_expected"] == pytest.approx(0.6 * 1050)
    assert np.isnan(frame.loc["r3", "projected_attainment"])


def test_projection_scope(con):
    frame = project_attainment(con, S3, level="team", scope=Scope(region="East"))
    assert frame["team"].tolist() == ["T1"]


def test_projection_period_over(con):
    quarter = Period("quarter", date(2025, 1, 1), date(2025, 3, 31), S3)
    frame = project_attainment(con, S3, level="region", period=quarter)
    # Nothing is left to close after 31 March: the projection is the actual.
    assert frame["projected"].tolist() == frame["actual"].tolist()


def test_projection_unknown_level(con):
    with pytest.raises(KpiError, match="'account'"):
        project_attainment(con, S3, level="account")


def test_projection_negative_z(con):
    with pytest.raises(KpiError, match="z must be"):
        project_attainment(con, S3, level="region", z=-1)
