"""Tests of the revenue hierarchy and of forecast reconciliation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cockpit.errors import ForecastError
from cockpit.forecast import ForecastOptions
from cockpit.hierarchy import (
    RECONCILIATION_METHODS,
    build_hierarchy,
    forecast_hierarchy,
    hierarchy_backtest,
    hierarchy_series,
    reconcile,
    shrinkage_intensity,
    summarise_hierarchy_backtest,
)
from cockpit.mart import connect


def _cells(periods: int = 30, seed: int = 3) -> pd.DataFrame:
    """Monthly revenue of 2 regions x 2 units x 2 product lines."""
    rng = np.random.default_rng(seed)
    rows = []
    months = pd.date_range("2021-01-01", periods=periods, freq="MS")
    lines = {"Tools": ("Drills", "Saws"), "Supplies": ("Glue", "Tape")}
    for region in ("East", "West"):
        for unit, names in lines.items():
            for line in names:
                level = rng.uniform(50, 200)
                season = 1 + 0.2 * np.sin(2 * np.pi * np.arange(periods) / 12)
                values = level * season + rng.normal(0, 5, periods)
                rows.append(
                    pd.DataFrame(
                        {
                            "region": region,
                            "business_unit": unit,
                            "product_line": line,
                            "ds": months,
                            "y": values,
                        }
                    )
                )
    return pd.concat(rows, ignore_index=True)


LEVELS = ("company", "region", "business_unit", "region/business_unit", "product_line")


@pytest.fixture(scope="module")
def small():
    return build_hierarchy(_cells(), LEVELS)


def _tiny():
    """Company with two cells A and B: S = [[1, 1], [1, 0], [0, 1]]."""
    cells = pd.DataFrame(
        {
            "region": ["A", "B", "A", "B"],
            "ds": pd.to_datetime(["2024-01-01"] * 2 + ["2024-02-01"] * 2),
            "y": [3.0, 1.0, 5.0, 7.0],
        }
    )
    return build_hierarchy(cells, ("company", "region"))


# ---------------------------------------------------------------- structure


def test_build_nodes_per_level(small):
    counts = small.nodes.groupby("level").size().to_dict()
    assert counts == {
        "company": 1,
        "region": 2,
        "business_unit": 2,
        "region/business_unit": 4,
        "product_line": 4,
        "region/business_unit/product_line": 8,
    }


def test_build_values_are_sums(small):
    cells = _cells()
    nodes = small.nodes
    east = int(np.flatnonzero((nodes["series_id"] == "East").to_numpy())[0])
    expected = cells[cells["region"] == "East"].groupby("ds")["y"].sum()
    np.testing.assert_allclose(small.values[:, east], expected.to_numpy())
    company = int(np.flatnonzero((nodes["level"] == "company").to_numpy())[0])
    np.testing.assert_allclose(
        small.values[:, company], cells.groupby("ds")["y"].sum().to_numpy()
    )


def test_build_tiny_values():
    tiny = _tiny()
    assert tiny.nodes["series_id"].tolist() == ["total", "A", "B"]
    assert tiny.values.tolist() == [[4.0, 3.0, 1.0], [12.0, 5.0, 7.0]]


def test_build_rejects_missing_column():
    cells = _cells().drop(columns="product_line")
    with pytest.raises(ForecastError, match="product_line"):
        build_hierarchy(cells, LEVELS)


def test_build_rejects_unknown_level():
    with pytest.raises(ForecastError, match="colour"):
        build_hierarchy(_cells(), ("company", "colour"))


# ---------------------------------------------------------------- reconcile


@pytest.mark.parametrize("method", RECONCILIATION_METHODS)
def test_reconcile_adds_up_exactly(small, method):
    rng = np.random.default_rng(5)
    base = rng.uniform(0, 500, (len(small.nodes), 6))
    residuals = rng.normal(0, 10, (30, len(small.nodes)))
    result = reconcile(small, base, method, residuals)
    bottom = result[small.n_aggregate :]
    assert np.array_equal(result, small.aggregate(bottom))
    levels = small.nodes["level"].to_numpy()
    for level in LEVELS:
        np.testing.assert_allclose(
            result[levels == level].sum(axis=0), result[0], rtol=1e-12
        )


@pytest.mark.parametrize("method", RECONCILIATION_METHODS)
def test_reconcile_never_negative(small, method):
    rng = np.random.default_rng(8)
    base = rng.normal(0, 100, (len(small.nodes), 4))
    residuals = rng.normal(0, 10, (30, len(small.nodes)))
    result = reconcile(small, base, method, residuals)
    assert result.min() >= 0.0


def test_bottom_up_hand_computed():
    result = reconcile(_tiny(), np.array([[10.0], [4.0], [5.0]]), "bottom_up")
    assert result[:, 0].tolist() == [9.0, 4.0, 5.0]


def test_top_down_hand_computed():
    # Shares of the history: A 8 of 16, B 8 of 16.
    result = reconcile(_tiny(), np.array([[10.0], [4.0], [5.0]]), "top_down")
    assert result[:, 0].tolist() == [10.0, 5.0, 5.0]


def test_ols_hand_computed():
    # b = (S'S)^-1 S' y = [13/3, 16/3] for y = [10, 4, 5].
    result = reconcile(_tiny(), np.array([[10.0], [4.0], [5.0]]), "ols")
    np.testing.assert_allclose(result[:, 0], [29 / 3, 13 / 3, 16 / 3], rtol=1e-12)


def test_wls_struct_hand_computed():
    # W = diag(2, 1, 1): b = (S'W^-1 S)^-1 S'W^-1 y = [4.25, 5.25].
    result = reconcile(_tiny(), np.array([[10.0], [4.0], [5.0]]), "wls_struct")
    np.testing.assert_allclose(result[:, 0], [9.5, 4.25, 5.25], rtol=1e-12)


def _dense_mint(hierarchy, base, residuals):
    """MinT-shrink with a dense summing matrix and a pairwise lambda, then clipped."""
    n_nodes = len(hierarchy.nodes)
    n_bottom = hierarchy.n_bottom
    summing = np.zeros((n_nodes, n_bottom))
    summing[hierarchy.n_aggregate :] = np.eye(n_bottom)
    for parents in hierarchy.parents.values():
        summing[parents, np.arange(n_bottom)] = 1.0
    periods = residuals.shape[0]
    covariance = residuals.T @ residuals / periods
    scale = np.sqrt(np.diag(covariance))
    x = residuals / scale
    w = np.einsum("ti,tj->tij", x, x)
    mean = w.mean(axis=0)
    variance = ((w - mean) ** 2).sum(axis=0) / (periods * (periods - 1))
    off = ~np.eye(n_nodes, dtype=bool)
    lam = np.clip(variance[off].sum() / (mean[off] ** 2).sum(), 0, 1)
    weights = lam * np.diag(np.diag(covariance)) + (1 - lam) * covariance
    inverse = np.linalg.inv(weights)
    gain = np.linalg.solve(summing.T @ inverse @ summing, summing.T @ inverse)
    return summing @ np.clip(gain @ base, 0.0, None), lam


def test_shrinkage_intensity_matches_pairwise():
    rng = np.random.default_rng(11)
    residuals = rng.normal(0, 1, (20, 6)) + rng.normal(0, 1, (20, 1))
    periods = residuals.shape[0]
    scale = np.sqrt((residuals**2).mean(axis=0))
    x = residuals / scale
    w = np.einsum("ti,tj->tij", x, x)
    mean = w.mean(axis=0)
    variance = ((w - mean) ** 2).sum(axis=0) / (periods * (periods - 1))
    off = ~np.eye(6, dtype=bool)
    expected = variance[off].sum() / (mean[off] ** 2).sum()
    assert shrinkage_intensity(residuals) == pytest.approx(expected, rel=1e-9)


def test_mint_shrink_matches_dense(small):
    rng = np.random.default_rng(13)
    base = rng.uniform(50, 400, (len(small.nodes), 3))
    residuals = rng.normal(0, 10, (30, len(small.nodes)))
    residuals += rng.normal(0, 5, (30, 1))
    expected, lam = _dense_mint(small, base, residuals)
    assert 0 < lam < 1
    result = reconcile(small, base, "mint_shrink", residuals)
    np.testing.assert_allclose(result, expected, rtol=1e-7)


def test_mint_shrink_needs_residuals(small):
    base = np.ones((len(small.nodes), 2))
    with pytest.raises(ForecastError, match="residuals"):
        reconcile(small, base, "mint_shrink")


def test_reconcile_unknown_method(small):
    with pytest.raises(ForecastError, match="median"):
        reconcile(small, np.ones((len(small.nodes), 1)), "median")


def test_reconcile_wrong_shape(small):
    with pytest.raises(ForecastError, match="shape"):
        reconcile(small, np.ones((3, 1)), "ols")


def test_top_down_needs_company():
    regions_only = build_hierarchy(_cells(), ("region", "region/business_unit"))
    base = np.ones((len(regions_only.nodes), 1))
    with pytest.raises(ForecastError, match="company"):
        reconcile(regions_only, base, "top_down")


# ---------------------------------------------------------------- forecasts


def test_forecast_hierarchy_coherent(small):
    result = forecast_hierarchy(small, 6, reconciliation="wls_struct")
    frame = result.frame
    company = frame[frame["level"] == "company"].set_index("ds")["yhat"]
    for level in LEVELS[1:]:
        sums = frame[frame["level"] == level].groupby("ds")["yhat"].sum()
        np.testing.assert_allclose(sums.to_numpy(), company.to_numpy(), rtol=1e-12)
    assert (frame["yhat_lower"] <= frame["yhat"]).all()
    assert (frame["yhat"] <= frame["yhat_upper"]).all()
    assert frame["note"].str.contains("reconciled with wls_struct").all()


def test_forecast_hierarchy_methods_named(small):
    result = forecast_hierarchy(small, 3, reconciliation="bottom_up")
    methods = set(result.frame["method"])
    assert methods == {"prophet+bottom_up"}


def test_hierarchy_backtest_levels(small):
    scores = hierarchy_backtest(small, origins=1, horizon=6, methods=("bottom_up",))
    summary = summarise_hierarchy_backtest(scores)
    assert set(summary["method"]) == {"base", "bottom_up"}
    assert len(summary) == 2 * 6
    truth = small.values[-6:, 0].sum()
    company = scores[(scores["level"] == "company") & (scores["method"] == "base")]
    assert company["actual"].iloc[0] == pytest.approx(truth)


# ---------------------------------------------------------------- from the mart


def test_hierarchy_series_matches_sql(small_demo_mart):
    with connect(small_demo_mart, read_only=True) as con:
        hierarchy = hierarchy_series(
            con, levels=("company", "region", "account_id"), end=None
        )
        total = con.execute(
            "SELECT sum(net_revenue) FROM transactions WHERE date < DATE '2026-10-01'"
        ).fetchone()[0]
    company = hierarchy.values[:, 0]
    assert company.sum() == pytest.approx(total, rel=1e-9)
    assert hierarchy.bottom_level == "region/account_id"


def test_weekly_hierarchy_coherent(small_demo_mart):
    with connect(small_demo_mart, read_only=True) as con:
        hierarchy = hierarchy_series(
            con, levels=("company", "region"), frequency="week"
        )
    assert (hierarchy.periods.day_of_week == 0).all()
    result = forecast_hierarchy(
        hierarchy,
        8,
        reconciliation="ols",
        options=ForecastOptions(uncertainty_samples=0),
    )
    frame = result.frame
    company = frame[frame["level"] == "company"].set_index("ds")["yhat"]
    regions = frame[frame["level"] == "region"].groupby("ds")["yhat"].sum()
    np.testing.assert_allclose(regions.to_numpy(), company.to_numpy(), rtol=1e-12)
    assert len(company) == 8
