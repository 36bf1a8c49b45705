"""Invariants of the KPI registry on random small marts, checked with hypothesis.

- Additive KPIs: the groups of any grain add up to the value of the whole
  scope. Amounts are whole euros, so sums of money are exact; KPIs that
  multiply by a probability or a share of days are compared to 1e-9.
- Coverage and velocity are undefined (None), never 0, when the closed
  deals, targets or snapshots they need are missing.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cockpit.kpi import KPIS, compute_kpi, kpi_values
from cockpit.mart.store import create_schema, load_frame

REGIONS = ("East", "West")
UNITS = ("Hardware", "Services")
SEGMENTS = ("Corporate", "SMB", None)
REPS = {"r1": ("T1", "East"), "r2": ("T1", "East"), "r3": ("T2", "West")}
PRODUCTS = {"p1": ("Tools", "Hardware"), "p2": ("Plans", "Services")}
FIRST_DAY = date(2023, 1, 1)
SNAPSHOTS = (date(2024, 11, 29), date(2024, 12, 6))
AS_OF = SNAPSHOTS[-1]
PERIOD = {"start": date(2024, 1, 1), "end": date(2024, 12, 31), "as_of": AS_OF}

#: KPIs whose values come from a multiplication by a fraction.
INEXACT = {"weighted_pipeline", "target_prorated", "potential", "headroom"}

PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

days = st.integers(min_value=0, max_value=(date(2024, 12, 31) - FIRST_DAY).days)
accounts = st.sampled_from(["a1", "a2", "a3", "a4", None])

line = st.fixed_dictionaries(
    {
        "day": days,
        "account": accounts,
        "rep": st.sampled_from(sorted(REPS)),
        "product": st.sampled_from(sorted(PRODUCTS)),
        "euros": st.integers(min_value=-200, max_value=5000),
    }
)

deal = st.fixed_dictionaries(
    {
        "account": accounts,
        "rep": st.sampled_from(sorted(REPS)),
        "product": st.sampled_from(sorted(PRODUCTS)),
        "stage": st.sampled_from(["Prospecting", "Proposal"]),
        "outcome": st.sampled_from(["open", "won", "lost"]),
        "created": st.integers(min_value=0, max_value=600),
        "length": st.integers(min_value=1, max_value=200),
        "euros": st.integers(min_value=0, max_value=9000),
        "first_seen": st.sampled_from([0, 1]),
        "slip": st.integers(min_value=0, max_value=40),
    }
)

activity = st.fixed_dictionaries(
    {
        "day": days,
        "account": accounts,
        "rep": st.sampled_from(sorted(REPS)),
        "type": st.sampled_from(["visit", "call", "email", "internal"]),
        "minutes": st.integers(min_value=5, max_value=120),
    }
)

target = st.fixed_dictionaries(
    {
        "rep": st.sampled_from(sorted(REPS)),
        "unit": st.sampled_from(UNITS),
        "month": st.integers(min_value=1, max_value=12),
        "euros": st.integers(min_value=100, max_value=10000),
    }
)


def _load(con, table: str, rows: list[dict]) -> None:
    if rows:
        report = load_frame(
            con, table, pd.DataFrame(rows), source="test", source_file="hypothesis"
        )
        assert report.rows_quarantined == 0, table


#: A line on the first day, so the mart reaches back a year before the period
#: and last year's revenue is defined for every month of it.
ANCHOR = {"day": 0, "account": "a1", "rep": "r1", "product": "p1", "euros": 10}


def _build(lines, deals, activities, targets) -> duckdb.DuckDBPyConnection:
    lines = [ANCHOR, *lines]
    con = duckdb.connect()
    create_schema(con)
    _load(
        con,
        "reps",
        [
            {"rep_id": r, "name": r, "role": "seller", "team": t, "region": g}
            for r, (t, g) in REPS.items()
        ],
    )
    _load(
        con,
        "products",
        [
            {"product_id": p, "name": p, "product_line": line_, "business_unit": unit}
            for p, (line_, unit) in PRODUCTS.items()
        ],
    )
    _load(
        con,
        "accounts",
        [
            {
                "account_id": f"a{i + 1}",
                "name": f"A{i + 1}",
                "region": REGIONS[i % 2],
                "segment": SEGMENTS[i % 3],
                "owner_rep_id": sorted(REPS)[i % 3],
                "industry": "Retail",
                "size_band": "small",
            }
            for i in range(4)
        ],
    )
    _load(
        con,
        "transactions",
        [
            {
                "invoice_id": f"i{n}",
                "line": 1,
                "date": FIRST_DAY + timedelta(days=row["day"]),
                "account_id": row["account"],
                "product_id": row["product"],
                "rep_id": row["rep"],
                "region": REPS[row["rep"]][1],
                "business_unit": PRODUCTS[row["product"]][1],
                "net_revenue": float(row["euros"]),
                "cost": float(row["euros"] // 2),
                "currency": "EUR",
            }
            for n, row in enumerate(lines)
        ],
    )
    _load(con, "opportunities", _deal_rows(deals))
    _load(
        con,
        "activities",
        [
            {
                "activity_id": f"x{n}",
                "rep_id": row["rep"],
                "account_id": None if row["type"] == "internal" else row["account"],
                "type": row["type"],
                "date": FIRST_DAY + timedelta(days=row["day"]),
                "duration_minutes": float(row["minutes"]),
                "region": REPS[row["rep"]][1],
            }
            for n, row in enumerate(activities)
        ],
    )
    _load(con, "targets", _target_rows(targets))
    return con


def _deal_rows(deals) -> list[dict]:
    rows = []
    for n, row in enumerate(deals):
        created = date(2023, 6, 1) + timedelta(days=row["created"])
        closed = created + timedelta(days=row["length"])
        common = {
            "opportunity_id": f"d{n}",
            "account_id": row["account"],
            "rep_id": row["rep"],
            "product_id": row["product"],
            "region": REPS[row["rep"]][1],
            "business_unit": PRODUCTS[row["product"]][1],
            "amount": float(row["euros"]),
            "currency": "EUR",
            "created_date": created,
        }
        for index, snapshot in enumerate(SNAPSHOTS):
            if index < row["first_seen"] or created > snapshot:
                continue
            expected = closed + timedelta(days=row["slip"] * index)
            finished = row["outcome"] != "open" and closed <= snapshot
            status = row["outcome"] if finished else "open"
            rows.append(
                {
                    **common,
                    "snapshot_date": snapshot,
                    "stage": status.title() if finished else row["stage"],
                    "status": status,
                    "expected_close_date": expected,
                    "closed_date": closed if finished else None,
                }
            )
    return rows


def _target_rows(targets) -> list[dict]:
    rows = {}
    for row in targets:
        month = row["month"]
        start = date(2024, month, 1)
        end = (pd.Timestamp(start) + pd.offsets.MonthEnd(1)).date()
        key = (row["rep"], row["unit"], month)
        rows[key] = {
            "period": f"2024-{month:02d}",
            "period_start": start,
            "period_end": end,
            "level": "rep",
            "key": row["rep"],
            "region": REPS[row["rep"]][1],
            "business_unit": row["unit"],
            "metric": "revenue",
            "value": float(row["euros"]),
            "method": "test",
            "version": 1,
            "set_by": "test",
            "created_at": pd.Timestamp("2023-12-01"),
        }
    return list(rows.values())


ADDITIVE = sorted(name for name, kpi in KPIS.items() if kpi.additive)


GRAINS = sorted({grain for name in ADDITIVE for grain in KPIS[name].grains})


def _assert_adds_up(con, name: str, grain: str) -> None:
    total = kpi_values(con, [name], **PERIOD)[name]
    children = compute_kpi(con, name, by=[grain], **PERIOD)[name]
    if total is None:
        assert children.isna().all(), (name, grain)
        return
    summed = math.fsum(children.fillna(0.0))
    if name in INEXACT:
        assert summed == pytest.approx(total, rel=1e-9, abs=1e-9), (name, grain)
    else:
        assert summed == total, (name, grain)


@PROPERTY_SETTINGS
@given(
    lines=st.lists(line, min_size=1, max_size=25),
    deals=st.lists(deal, max_size=12),
    activities=st.lists(activity, max_size=12),
    targets=st.lists(target, max_size=8),
    grain=st.sampled_from(GRAINS),
)
def test_additive_kpis_add_up(lines, deals, activities, targets, grain):
    con = _build(lines, deals, activities, targets)
    try:
        for name in ADDITIVE:
            if grain in KPIS[name].grains:
                _assert_adds_up(con, name, grain)
    finally:
        con.close()


def test_additive_list_covers_money():
    for name in ("revenue", "margin", "won_value", "open_pipeline", "pipeline_created"):
        assert name in ADDITIVE, name


@PROPERTY_SETTINGS
@given(
    deals=st.lists(
        deal.filter(lambda row: row["outcome"] == "open"), min_size=1, max_size=8
    ),
    targets=st.lists(target, max_size=4),
)
def test_velocity_undefined_without_closed(deals, targets):
    # Open deals stay open in both snapshots, so nothing closed.
    open_only = [{**row, "length": 400} for row in deals]
    con = _build([], open_only, [], targets)
    try:
        values = kpi_values(
            con,
            ["recent_win_rate", "required_coverage", "pipeline_velocity"],
            as_of=AS_OF,
        )
    finally:
        con.close()
    assert values["recent_win_rate"] is None
    assert values["required_coverage"] is None
    assert values["pipeline_velocity"] is None


@PROPERTY_SETTINGS
@given(
    deals=st.lists(deal, min_size=1, max_size=10),
    lines=st.lists(line, max_size=10),
)
def test_coverage_undefined_without_target(deals, lines):
    con = _build(lines, deals, [], [])
    try:
        value = kpi_values(con, ["pipeline_coverage"], period="year", as_of=AS_OF)
    finally:
        con.close()
    assert value["pipeline_coverage"] is None


@PROPERTY_SETTINGS
@given(
    lines=st.lists(line, max_size=10),
    targets=st.lists(target, min_size=1, max_size=6),
)
def test_pipeline_kpis_undefined_without_snapshot(lines, targets):
    con = _build(lines, [], [], targets)
    try:
        values = kpi_values(
            con,
            ["pipeline_coverage", "pipeline_velocity", "required_coverage"],
            period="year",
            as_of=AS_OF,
        )
    finally:
        con.close()
    assert values == {
        "pipeline_coverage": None,
        "pipeline_velocity": None,
        "required_coverage": None,
    }


@PROPERTY_SETTINGS
@given(deals=st.lists(deal, min_size=1, max_size=10))
def test_velocity_undefined_without_cycle(deals):
    # Deals without a created date give no cycle length.
    con = _build([], deals, [], [])
    try:
        con.execute("UPDATE opportunities SET created_date = NULL")
        value = kpi_values(con, ["pipeline_velocity"], as_of=AS_OF)
    finally:
        con.close()
    assert value["pipeline_velocity"] is None


#: A deal won on 2024-07-05, within the 365 days before the last snapshot.
recent_win = deal.map(
    lambda row: {**row, "outcome": "won", "created": 300, "length": 100}
)


@PROPERTY_SETTINGS
@given(deals=st.lists(deal, max_size=10), win=recent_win)
def test_velocity_defined_with_wins(deals, win):
    con = _build([], [*deals, win], [], [])
    try:
        value = kpi_values(con, ["pipeline_velocity"], as_of=AS_OF)["pipeline_velocity"]
    finally:
        con.close()
    assert value is not None
    assert value >= 0
