"""Tests of account potential: peer quantiles, quantile regression, headroom."""

from __future__ import annotations

import itertools
from datetime import date

import numpy as np
import pandas as pd
import pytest

from cockpit.errors import PotentialError
from cockpit.mart import connect
from cockpit.potential import (
    POTENTIAL_COLUMNS,
    PotentialSettings,
    account_spend,
    estimate_potential,
    full_potential,
    headroom_by_unit,
    quantile_line,
    size_band,
)

DEMO_AS_OF = date(2025, 12, 31)
MAVEN_AS_OF = date(2017, 12, 31)


def _check_loss(x, y, q, intercept, slope) -> float:
    residual = y - intercept - slope * x
    return float(np.sum(np.where(residual >= 0, q * residual, (q - 1) * residual)))


def _accounts(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["account_id", "industry", "size_band", "spend"])


# --------------------------------------------------------------------------
# Size bands and settings


def test_size_band_limits():
    bands = size_band(pd.Series([1, 49, 50, 249, 250, 999, 1000, 50_000]))
    assert bands.tolist() == [
        "small",
        "small",
        "medium",
        "medium",
        "large",
        "large",
        "enterprise",
        "enterprise",
    ]


def test_size_band_missing():
    bands = size_band(pd.Series([None, 10], dtype="float"))
    assert bands.iloc[0] is None
    assert bands.iloc[1] == "small"


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("quantile", 1.0, "quantile 1.0"),
        ("quantile", 0.0, "quantile 0.0"),
        ("min_peers", 0, "min_peers 0"),
        ("method", "median", "'median'"),
        ("size_measure", "turnover", "'turnover'"),
        ("months", 0, "months 0"),
        ("spend_source", "orders", "'orders'"),
        ("min_fit_accounts", 2, "min_fit_accounts 2"),
    ],
)
def test_settings_rejected(field, value, fragment):
    with pytest.raises(PotentialError, match=fragment):
        PotentialSettings(**{field: value})


# --------------------------------------------------------------------------
# Peer quantiles on hand-made frames


def test_peer_quantile_by_hand():
    rows = [
        (f"A{i}", "Retail", "small", float(spend))
        for i, spend in enumerate(range(1, 7))
    ]
    result = estimate_potential(
        _accounts(rows), _accounts(rows)[["account_id", "spend"]]
    )
    expected = np.quantile([1, 2, 3, 4, 5, 6], 0.8)  # linear: 5.0
    assert result["estimate"].tolist() == pytest.approx([expected] * 6)
    assert result["peers"].tolist() == [6] * 6
    assert not result["too_few_peers"].any()
    assert list(result.columns) == POTENTIAL_COLUMNS


def test_potential_floor_at_spend():
    rows = [
        (f"A{i}", "Retail", "small", float(spend))
        for i, spend in enumerate(range(1, 7))
    ]
    result = estimate_potential(
        _accounts(rows), _accounts(rows)[["account_id", "spend"]]
    )
    top = result.set_index("account_id").loc["A5"]  # spends 6, above the 5.0 estimate
    assert top["potential"] == 6.0
    assert top["headroom"] == 0.0
    assert top["share_of_wallet"] == 1.0
    low = result.set_index("account_id").loc["A0"]  # spends 1
    assert low["headroom"] == pytest.approx(4.0)
    assert low["share_of_wallet"] == pytest.approx(1 / 5)


def test_peer_fallback_to_band():
    rows = [(f"R{i}", "Retail", "small", float(10 * (i + 1))) for i in range(5)]
    rows += [("H0", "Health", "small", 100.0), ("H1", "Health", "small", 0.0)]
    frame = _accounts(rows)
    result = estimate_potential(frame, frame[["account_id", "spend"]]).set_index(
        "account_id"
    )
    band = np.quantile([10, 20, 30, 40, 50, 100], 0.8)
    assert result.loc["H1", "estimate"] == pytest.approx(band)
    assert result.loc["H1", "too_few_peers"]
    assert result.loc["H1", "peer_group"] == "size band small"
    assert result.loc["H1", "note"] == (
        "only 1 buying peer(s) in Health × small (minimum 5); used size band small "
        "across industries (6 peers)"
    )
    assert result.loc["R0", "estimate"] == pytest.approx(
        np.quantile([10, 20, 30, 40, 50], 0.8)
    )
    assert not result.loc["R0", "too_few_peers"]


def test_peer_fallback_to_all():
    rows = [(f"S{i}", "Retail", "small", 10.0) for i in range(2)]
    rows += [(f"L{i}", "Retail", "large", 100.0 * (i + 1)) for i in range(2)]
    frame = _accounts(rows)
    result = estimate_potential(
        frame, frame[["account_id", "spend"]], PotentialSettings(min_peers=3)
    ).set_index("account_id")
    assert result.loc["S0", "peer_group"] == "all accounts"
    assert result.loc["S0", "estimate"] == pytest.approx(
        np.quantile([10, 10, 100, 200], 0.8)
    )
    assert result.loc["S0", "note"] == (
        "only 2 buying peer(s) in Retail × small (minimum 3); used every buying "
        "account (4 peers)"
    )


def test_peer_unknown_industry():
    rows = [(f"A{i}", "Retail", "small", float(i + 1)) for i in range(5)]
    rows.append(("X", None, "small", 0.0))
    frame = _accounts(rows)
    result = estimate_potential(frame, frame[["account_id", "spend"]]).set_index(
        "account_id"
    )
    assert result.loc["X", "peer_group"] == "size band small"
    assert result.loc["X", "note"].startswith("industry unknown; used size band small")


def test_no_buyers_gives_nan():
    frame = _accounts([("A", "Retail", "small", 0.0), ("B", "Retail", "small", 0.0)])
    result = estimate_potential(frame, frame[["account_id", "spend"]])
    assert result["estimate"].isna().all()
    assert result["headroom"].isna().all()
    assert result["note"].iloc[0] == (
        "no buying account in the spend window, so no peer estimate"
    )


def test_no_spend_rows_at_all():
    accounts = pd.DataFrame(
        {"account_id": ["A", "B"], "industry": [None, "X"], "size_band": [None, None]}
    )
    spend = pd.DataFrame({"account_id": [], "spend": []})
    result = estimate_potential(accounts, spend)
    assert result["estimate"].isna().all()
    assert result["spend"].tolist() == [0.0, 0.0]


def test_negative_spend_counts_as_zero():
    rows = [(f"A{i}", "Retail", "small", float(i + 1)) for i in range(5)]
    rows.append(("C", "Retail", "small", -50.0))
    frame = _accounts(rows)
    result = estimate_potential(frame, frame[["account_id", "spend"]]).set_index(
        "account_id"
    )
    assert result.loc["C", "share_of_wallet"] == 0.0
    assert result.loc["C", "headroom"] == pytest.approx(
        result.loc["C", "potential"] + 50
    )


def test_duplicate_account_rejected():
    frame = _accounts([("A", "Retail", "small", 1.0), ("A", "Retail", "small", 2.0)])
    with pytest.raises(PotentialError, match="'A' appears more than once"):
        estimate_potential(frame, frame[["account_id", "spend"]])


def test_missing_column_rejected():
    frame = _accounts([("A", "Retail", "small", 1.0)]).drop(columns="industry")
    with pytest.raises(PotentialError, match="industry"):
        estimate_potential(frame, frame[["account_id", "spend"]])


# --------------------------------------------------------------------------
# Quantile regression


def test_quantile_line_exact_fit():
    x = np.linspace(0.0, 5.0, 30)
    intercept, slope = quantile_line(x, 2.0 + 0.5 * x, 0.8)
    assert intercept == pytest.approx(2.0, abs=1e-8)
    assert slope == pytest.approx(0.5, abs=1e-8)


@pytest.mark.parametrize("q", [0.2, 0.5, 0.8, 0.9])
def test_quantile_line_matches_brute_force(q):
    rng = np.random.default_rng(11)
    x = rng.normal(3, 1, 25)
    y = 1.0 + 0.7 * x + rng.standard_t(3, 25)
    intercept, slope = quantile_line(x, y, q)
    # The minimum of the check loss lies on a line through two data points.
    best = min(
        _check_loss(
            x,
            y,
            q,
            y[i] - (y[j] - y[i]) / (x[j] - x[i]) * x[i],
            (y[j] - y[i]) / (x[j] - x[i]),
        )
        for i, j in itertools.combinations(range(len(x)), 2)
    )
    assert _check_loss(x, y, q, intercept, slope) == pytest.approx(best, rel=1e-9)


def test_quantile_line_share_above():
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 10, 400)
    y = 3 + 0.4 * x + rng.normal(0, 1, 400)
    intercept, slope = quantile_line(x, y, 0.8)
    above = np.mean(y > intercept + slope * x)
    assert above == pytest.approx(0.2, abs=0.01)


def test_quantile_line_constant_x():
    intercept, slope = quantile_line(np.ones(5), np.array([1.0, 2, 3, 4, 5]), 0.5)
    assert slope == 0.0
    assert intercept == 3.0


def test_quantile_line_rejects_nan():
    with pytest.raises(PotentialError, match="not finite"):
        quantile_line(np.array([1.0, np.nan]), np.array([1.0, 2.0]), 0.5)


def test_regression_estimates():
    rng = np.random.default_rng(3)
    size = np.round(rng.lognormal(5, 1, 40)) + 1
    spend = np.exp(2 + 0.6 * np.log(size) + rng.normal(0, 0.3, 40))
    frame = pd.DataFrame(
        {
            "account_id": [f"A{i}" for i in range(40)] + ["NOSIZE"],
            "industry": "Retail",
            "size_band": "medium",
            "employees": [*size, np.nan],
        }
    )
    spend_frame = pd.DataFrame({"account_id": frame["account_id"][:40], "spend": spend})
    settings = PotentialSettings(method="quantile_regression")
    result = estimate_potential(frame, spend_frame, settings).set_index("account_id")
    intercept, slope = quantile_line(np.log(size), np.log(spend), 0.8)
    assert result.loc["A0", "estimate"] == pytest.approx(
        np.exp(intercept + slope * np.log(size[0]))
    )
    assert result.loc["A0", "method"] == "quantile_regression"
    assert result.loc["NOSIZE", "method"] == "peer_quantile"
    assert result.loc["NOSIZE", "estimate"] == pytest.approx(np.quantile(spend, 0.8))
    assert result.loc["NOSIZE", "note"] == "employees unknown; peer estimate used"


def test_regression_too_few_accounts():
    frame = pd.DataFrame(
        {
            "account_id": ["A", "B", "C"],
            "industry": "Retail",
            "size_band": "small",
            "employees": [10, 20, 30],
        }
    )
    spend = pd.DataFrame({"account_id": ["A", "B", "C"], "spend": [1.0, 2.0, 3.0]})
    settings = PotentialSettings(method="quantile_regression", min_peers=1)
    result = estimate_potential(frame, spend, settings)
    assert result["method"].unique().tolist() == ["peer_quantile"]
    assert (
        result["note"]
        .iloc[0]
        .startswith(
            "quantile regression needs 20 buying accounts with employees, found 3"
        )
    )


# --------------------------------------------------------------------------
# Headroom by business unit


def test_headroom_split_by_peer_mix():
    accounts = _accounts([(f"A{i}", "Retail", "small", 0.0) for i in range(6)])
    unit_spend = pd.DataFrame(
        {
            "account_id": ["A0", "A0", "A1", "A2", "A3", "A4"],
            "business_unit": ["Tools", "Parts", "Tools", "Tools", "Parts", "Tools"],
            "spend": [30.0, 10.0, 20.0, 20.0, 40.0, 40.0],
        }
    )
    totals = unit_spend.groupby("account_id")["spend"].sum().reset_index()
    potential = estimate_potential(accounts, totals)
    split = headroom_by_unit(potential, unit_spend)
    a5 = split[split["account_id"] == "A5"].set_index("business_unit")["headroom"]
    headroom = potential.set_index("account_id").loc["A5", "headroom"]
    assert a5["Tools"] == pytest.approx(headroom * 110 / 160)
    assert a5["Parts"] == pytest.approx(headroom * 50 / 160)
    per_account = split.groupby("account_id")["headroom"].sum()
    expected = potential.set_index("account_id")["headroom"]
    expected = expected[expected > 0]
    assert per_account.to_dict() == pytest.approx(expected.to_dict())


# --------------------------------------------------------------------------
# Demo mart


@pytest.fixture(scope="module")
def demo(small_demo_mart):
    con = connect(small_demo_mart, read_only=True)
    yield con
    con.close()


def test_demo_spend_matches_sql(demo):
    spend = account_spend(demo, DEMO_AS_OF).set_index("account_id")["spend"]
    lines = demo.execute("SELECT account_id, net_revenue, date FROM transactions").df()
    lines["date"] = pd.to_datetime(lines["date"])
    inside = lines[(lines["date"] > "2024-12-31") & (lines["date"] <= "2025-12-31")]
    expected = inside.groupby("account_id")["net_revenue"].sum()
    assert len(spend) == len(expected)
    assert spend.sort_index().to_numpy() == pytest.approx(
        expected.sort_index().to_numpy()
    )


def test_demo_potential_bounds(demo):
    result = full_potential(demo, DEMO_AS_OF)
    accounts = demo.execute("SELECT count(*) FROM accounts").fetchall()[0][0]
    assert len(result) == accounts
    assert (result["headroom"] >= 0).all()
    assert (result["potential"] >= result["spend"].clip(lower=0)).all()
    assert result["share_of_wallet"].between(0, 1).all()
    flagged = result[result["too_few_peers"]]
    assert flagged["note"].str.startswith("only ").all()


def test_demo_unit_headroom_adds_up(demo):
    result = full_potential(demo, DEMO_AS_OF)
    split = headroom_by_unit(result, account_spend(demo, DEMO_AS_OF, by_unit=True))
    assert split["headroom"].sum() == pytest.approx(result["headroom"].sum())
    assert set(split["business_unit"]) == {"Equipment", "Consumables", "Services"}


def test_demo_regression_runs(demo):
    settings = PotentialSettings(
        method="quantile_regression", size_measure="annual_revenue"
    )
    result = full_potential(demo, DEMO_AS_OF, settings)
    assert result["method"].unique().tolist() == ["quantile_regression"]
    assert (result["headroom"] >= 0).all()


# --------------------------------------------------------------------------
# Real Maven CRM accounts, won deals as spend


def _maven_by_hand(shared_data, quantile=0.8, min_peers=5) -> pd.DataFrame:
    accounts = pd.read_csv(shared_data / "maven-crm" / "accounts.csv")
    pipeline = pd.read_csv(shared_data / "maven-crm" / "sales_pipeline.csv")
    won = (
        pipeline[pipeline["deal_stage"] == "Won"]
        .groupby("account")["close_value"]
        .sum()
    )
    accounts["spend"] = accounts["account"].map(won).fillna(0.0)
    accounts["band"] = pd.cut(
        accounts["employees"],
        [-np.inf, 50, 250, 1000, np.inf],
        right=False,
        labels=["small", "medium", "large", "enterprise"],
    ).astype(str)
    buyers = accounts[accounts["spend"] > 0]
    estimates = {}
    for row in accounts.itertuples(index=False):
        group = buyers[(buyers["sector"] == row.sector) & (buyers["band"] == row.band)]
        if len(group) < min_peers:
            group = buyers[buyers["band"] == row.band]
        if len(group) < min_peers:
            group = buyers
        estimates[row.account] = group["spend"].quantile(quantile)
    accounts["estimate"] = accounts["account"].map(estimates)
    return accounts.set_index("account")


@pytest.fixture(scope="module")
def maven(maven_mart):
    con = connect(maven_mart, read_only=True)
    yield con
    con.close()


def test_maven_won_spend(maven, shared_data):
    spend = account_spend(maven, MAVEN_AS_OF, source="won_deals")
    assert spend["spend"].sum() == pytest.approx(10_005_534)
    hand = _maven_by_hand(shared_data)
    assert spend.set_index("account_id")["spend"].to_dict() == pytest.approx(
        hand["spend"].to_dict()
    )


def test_maven_peer_estimates(maven, shared_data):
    settings = PotentialSettings(spend_source="won_deals")
    result = full_potential(maven, MAVEN_AS_OF, settings).set_index("account_id")
    hand = _maven_by_hand(shared_data)
    assert len(result) == 85
    assert result["estimate"].to_dict() == pytest.approx(hand["estimate"].to_dict())
    expected_potential = np.maximum(hand["estimate"], hand["spend"])
    assert result["potential"].to_dict() == pytest.approx(expected_potential.to_dict())
    assert result["share_of_wallet"].to_dict() == pytest.approx(
        (hand["spend"] / expected_potential).to_dict()
    )


def test_maven_flags_small_groups(maven, shared_data):
    settings = PotentialSettings(spend_source="won_deals")
    result = full_potential(maven, MAVEN_AS_OF, settings).set_index("account_id")
    hand = _maven_by_hand(shared_data)
    group_size = hand.groupby(["sector", "band"])["spend"].transform("size")
    assert result["too_few_peers"].to_dict() == (group_size < 5).to_dict()
    assert result.loc["Betasoloin", "note"] == (
        "only 2 buying peer(s) in medical × large (minimum 5); used size band "
        "large across industries (11 peers)"
    )


@pytest.mark.parametrize(
    ("measure", "column", "unit"),
    [("employees", "employees", 1), ("annual_revenue", "revenue", 1_000_000)],
)
def test_maven_regression_optimal(maven, shared_data, measure, column, unit):
    settings = PotentialSettings(
        spend_source="won_deals", method="quantile_regression", size_measure=measure
    )
    result = full_potential(maven, MAVEN_AS_OF, settings).set_index("account_id")
    hand = _maven_by_hand(shared_data)
    # accounts.csv gives revenue in millions; the mart stores it in units.
    x = np.log(hand[column].to_numpy(float) * unit)
    y = np.log(hand["spend"].to_numpy(float))
    fitted = np.log(result.loc[hand.index, "estimate"].to_numpy(float))
    slope = (fitted[1] - fitted[0]) / (x[1] - x[0])
    intercept = fitted[0] - slope * x[0]
    best = min(
        _check_loss(
            x,
            y,
            0.8,
            y[i] - (y[j] - y[i]) / (x[j] - x[i]) * x[i],
            (y[j] - y[i]) / (x[j] - x[i]),
        )
        for i, j in itertools.combinations(range(len(x)), 2)
        if x[i] != x[j]
    )
    assert _check_loss(x, y, 0.8, intercept, slope) == pytest.approx(best, rel=1e-9)
    assert (result["headroom"] >= 0).all()
