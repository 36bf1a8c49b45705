"""A small hand-built mart shared by the registry, pipeline and alert tests.

Three sellers: r1 and r2 in team T1 (East), r3 in team T2 (West). Four
accounts, ten invoice lines from 2023 to 2025, revenue targets for 2025
and five activities. The CRM history has three weekly snapshots S1, S2,
S3 and three deals closed before them:

- D1 (r1, East): Prospecting 1000 at S1, Proposal at S2, 1200 at S3; its
  expected close date moves 1 June -> 15 June -> 1 July (two slips).
- D2 (r2, East): 500, unchanged since its creation on 1 March.
- D3 (r1, East): 2000, won on 8 May. D5 (r3, West): 300, lost on 7 May.
- D4 (r3, West): 800, new at S2. D6 (r2, East): 100, gone after S1.
- D7: 250, East and r2 at S2, West and r3 at S3.
- H1 won 1000 (cycle 30 days), H2 lost, H3 won 5000 in March 2024.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pandas as pd

from cockpit.mart import connect, load_frame

S1, S2, S3 = date(2025, 5, 2), date(2025, 5, 9), date(2025, 5, 16)


def load_rows(con, table: str, rows: list[dict]) -> None:
    report = load_frame(
        con, table, pd.DataFrame(rows), source="test", source_file="test"
    )
    assert report.rows_quarantined == 0, f"{table} rows quarantined"


def _seller(rep: str, team: str, region: str) -> dict:
    return {
        "rep_id": rep,
        "name": rep.upper(),
        "role": "seller",
        "team": team,
        "region": region,
        "active_from": "2020-01-01",
    }


def _line(invoice: str, day: str, account: str, rep: str, product: str, value: float):
    region = "East" if account in ("a1", "a2") else "West"
    unit = "Hardware" if product == "p1" else "Services"
    return {
        "invoice_id": invoice,
        "line": 1,
        "date": day,
        "account_id": account,
        "product_id": product,
        "rep_id": rep,
        "region": region,
        "business_unit": unit,
        "net_revenue": value,
        "cost": value / 2,
        "currency": "EUR",
    }


def deal_row(deal: str, snapshot: date, stage: str, status: str, **values) -> dict:
    row = {
        "opportunity_id": deal,
        "snapshot_date": snapshot,
        "stage": stage,
        "status": status,
        "currency": "EUR",
        "business_unit": "Hardware",
    }
    row.update(values)
    return row


def _opportunities() -> list[dict]:
    east_r1 = {"rep_id": "r1", "account_id": "a1", "region": "East", "product_id": "p1"}
    east_r2 = {"rep_id": "r2", "account_id": "a2", "region": "East", "product_id": "p2"}
    west_r3 = {"rep_id": "r3", "account_id": "a3", "region": "West", "product_id": "p1"}
    d1 = {**east_r1, "created_date": "2025-04-01"}
    d2 = {**east_r2, "created_date": "2025-03-01", "amount": 500.0}
    d3 = {**east_r1, "created_date": "2025-02-01", "amount": 2000.0}
    d4 = {**west_r3, "created_date": "2025-05-05", "amount": 800.0}
    d5 = {**west_r3, "created_date": "2025-01-10", "amount": 300.0}
    d6 = {**east_r2, "created_date": "2025-04-20", "amount": 100.0}
    d7 = {"created_date": "2025-05-01", "amount": 250.0, "product_id": "p1"}
    rows = [
        # D1: slips twice, advances at S2, grows at S3.
        deal_row("D1", S1, "Prospecting", "open", amount=1000.0, expected_close_date="2025-06-01", **d1),
        deal_row("D1", S2, "Proposal", "open", amount=1000.0, expected_close_date="2025-06-15", **d1),
        deal_row("D1", S3, "Proposal", "open", amount=1200.0, expected_close_date="2025-07-01", **d1),
        # D2: never changes, so it is stale (created 76 days before S3).
        *[
            deal_row("D2", s, "Prospecting", "open", expected_close_date="2025-05-20", **d2)
            for s in (S1, S2, S3)
        ],
        # D3: won on 2025-05-08.
        deal_row("D3", S1, "Proposal", "open", expected_close_date="2025-05-30", **d3),
        *[
            deal_row("D3", s, "Won", "won", expected_close_date="2025-05-30",
                  closed_date="2025-05-08", **d3)
            for s in (S2, S3)
        ],
        # D4: new at S2.
        *[
            deal_row("D4", s, "Prospecting", "open", expected_close_date="2025-12-31", **d4)
            for s in (S2, S3)
        ],
        # D5: lost on 2025-05-07.
        deal_row("D5", S1, "Prospecting", "open", expected_close_date="2025-04-30", **d5),
        *[
            deal_row("D5", s, "Lost", "lost", expected_close_date="2025-04-30",
                  closed_date="2025-05-07", **d5)
            for s in (S2, S3)
        ],
        # D6: dropped from the export after S1.
        deal_row("D6", S1, "Prospecting", "open", expected_close_date="2025-06-01", **d6),
        # D7: East and r2 at S2, moved to West and r3 at S3.
        deal_row("D7", S2, "Qualification", "open", expected_close_date="2025-09-01",
              rep_id="r2", account_id="a2", region="East", **d7),
        deal_row("D7", S3, "Qualification", "open", expected_close_date="2025-09-01",
              rep_id="r3", account_id="a3", region="West", **d7),
        # Closed before the snapshots, one row each on the close date.
        deal_row("H1", date(2025, 1, 15), "Won", "won", amount=1000.0,
              created_date="2024-12-16", closed_date="2025-01-15", **east_r1),
        deal_row("H2", date(2025, 2, 1), "Lost", "lost", amount=400.0,
              created_date="2025-01-01", closed_date="2025-02-01", **east_r2),
        deal_row("H3", date(2024, 3, 1), "Won", "won", amount=5000.0,
              created_date="2024-01-01", closed_date="2024-03-01", **east_r1),
    ]  # fmt: skip
    return rows


def _targets() -> list[dict]:
    common = {
        "metric": "revenue",
        "method": "manual",
        "version": 1,
        "set_by": "test",
        "created_at": datetime(2024, 12, 1),
    }
    year = {"period": "2025", "period_start": "2025-01-01", "period_end": "2025-12-31"}
    quarter = {
        "period": "2025-Q2",
        "period_start": "2025-04-01",
        "period_end": "2025-06-30",
    }
    return [
        {**common, **year, "level": "company", "key": "company", "value": 10000.0},
        {**common, **year, "level": "region", "key": "East", "value": 6000.0},
        {**common, **year, "level": "region", "key": "West", "value": 4000.0},
        {**common, **quarter, "level": "rep", "key": "r1", "value": 3000.0},
    ]


def _activities() -> list[dict]:
    rows = [
        ("v1", "r1", "a1", "visit", "2025-01-10", 60, "East"),
        ("c1", "r1", "a1", "call", "2025-02-01", 15, "East"),
        ("i1", "r1", None, "internal", "2025-02-02", 60, "East"),
        ("c2", "r2", "a2", "call", "2025-03-01", 10, "East"),
        ("v2", "r3", "a3", "visit", "2025-04-01", 90, "West"),
    ]
    keys = [
        "activity_id",
        "rep_id",
        "account_id",
        "type",
        "date",
        "duration_minutes",
        "region",
    ]
    return [dict(zip(keys, row, strict=True)) for row in rows]


def build_registry_mart(path: Path) -> Path:
    """Write the mart described in the module docstring to `path`."""
    with connect(path) as writer:
        load_rows(
            writer,
            "reps",
            [
                _seller("r1", "T1", "East"),
                _seller("r2", "T1", "East"),
                _seller("r3", "T2", "West"),
            ],
        )
        load_rows(
            writer,
            "products",
            [
                {"product_id": "p1", "name": "Widget", "product_line": "Tools",
                 "business_unit": "Hardware", "list_price": 100.0},
                {"product_id": "p2", "name": "Plan", "product_line": "Plans",
                 "business_unit": "Services", "list_price": 50.0},
            ],
        )  # fmt: skip
        accounts = [
            ("a1", "East", "Corporate", "r1", True),
            ("a2", "East", "SMB", "r2", False),
            ("a3", "West", "Corporate", "r3", False),
            ("a4", "West", "SMB", "r3", False),
        ]
        load_rows(
            writer,
            "accounts",
            [
                {"account_id": a, "name": a.upper(), "region": r, "segment": s,
                 "owner_rep_id": o, "is_key_account": k, "industry": "Retail",
                 "size_band": "medium"}
                for a, r, s, o, k in accounts
            ],
        )  # fmt: skip
        load_rows(
            writer,
            "transactions",
            [
                _line("i1", "2023-01-10", "a1", "r1", "p1", 100.0),
                _line("i2", "2023-11-01", "a1", "r1", "p1", 80.0),
                _line("i3", "2024-09-01", "a1", "r1", "p1", 50.0),
                _line("i4", "2025-02-01", "a1", "r1", "p1", 70.0),
                _line("i5", "2023-02-01", "a2", "r2", "p2", 40.0),
                _line("i6", "2024-06-01", "a2", "r2", "p2", 30.0),
                _line("i7", "2024-05-01", "a3", "r3", "p1", 200.0),
                _line("i8", "2025-06-30", "a3", "r3", "p1", 10.0),
                _line("i9", "2023-01-05", "a4", "r3", "p2", -20.0),
                _line("i10", "2025-03-01", "a4", "r3", "p2", 60.0),
            ],
        )
        load_rows(writer, "targets", _targets())
        load_rows(writer, "opportunities", _opportunities())
        load_rows(writer, "activities", _activities())
    return path
