"""SQL reader: load through a YAML spec from a real PostgreSQL server.

The module starts its own server: initdb into a temporary folder, pg_ctl
start listening on 127.0.0.1 on a free port only (socket folder inside the
temporary folder), as the `postgres` system user when the tests run as
root. The server is stopped at the end of the module.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from cockpit.errors import IngestError
from cockpit.ingest import ingest_source
from cockpit.ingest.generic import SkippedLoad
from cockpit.mart import connect

FAULTS = Path(__file__).parent / "fixtures" / "faults"
SERVER_USER = "postgres"
DATABASE_USER = "cockpit"

ORDER_LINES = [
    # order, line, ordered at (UTC offset), customer, sku, qty, amount, currency
    (
        "SO-1",
        1,
        "2021-02-10 09:00:00+00",
        "C1",
        "P1",
        Decimal("2"),
        Decimal("100.00"),
        "USD",
    ),
    (
        "SO-1",
        2,
        "2021-02-10 09:00:00+00",
        "C1",
        "P2",
        Decimal("1"),
        Decimal("50.50"),
        "EUR",
    ),
    (
        "SO-2",
        1,
        "2021-03-31 23:30:00-05",
        "C2",
        "P1",
        Decimal("1"),
        Decimal("80.00"),
        "USD",
    ),
    (
        "SO-3",
        1,
        "2021-03-05 10:00:00+00",
        "C2",
        "P1",
        Decimal("-1"),
        Decimal("-20.00"),
        "USD",
    ),
    ("SO-4", 1, "2021-03-06 10:00:00+00", "C3", "P3", Decimal("1"), None, "USD"),
]


def _postgres_bin() -> Path | None:
    """Folder of the newest installed PostgreSQL server binaries."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: (
            int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0
        ),
    )
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """Start a throw-away PostgreSQL server on 127.0.0.1 and yield its URL."""
    binaries = _postgres_bin()
    if binaries is None:
        if os.environ.get("COCKPIT_ALLOW_SKIP_POSTGRES") == "1":
            pytest.skip("PostgreSQL server binaries are not installed")
        pytest.fail(
            "PostgreSQL server binaries not found under /usr/lib/postgresql; "
            "run `apt-get install postgresql`, or set COCKPIT_ALLOW_SKIP_POSTGRES=1 "
            "to skip these tests"
        )

    root = Path(tempfile.mkdtemp(prefix="cockpit-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        # initdb and postgres refuse to run as root.
        account = pwd.getpwnam(SERVER_USER)
        os.chown(root, account.pw_uid, account.pw_gid)
        run_as = ["runuser", "-u", SERVER_USER, "--"]

    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    port = _free_port()
    subprocess.run(
        [*run_as, "mkdir", str(sockets)], check=True, capture_output=True, text=True
    )
    subprocess.run(
        [
            *run_as,
            str(binaries / "initdb"),
            "-D",
            str(data),
            "-U",
            DATABASE_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
        ],
        check=True,
        capture_output=True,
        text=True,
    )

    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets}"
    pg_ctl = str(binaries / "pg_ctl")
    started = subprocess.run(
        [
            *run_as,
            pg_ctl,
            "-D",
            str(data),
            "-l",
            str(log),
            "-o",
            options,
            "-w",
            "start",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if started.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {started.stdout}{started.stderr}")

    try:
        yield f"postgresql+psycopg2://{DATABASE_USER}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(root, ignore_errors=True)


def _fill(url: str, rows: list[tuple]) -> None:
    engine = create_engine(url)
    with engine.begin() as con:
        con.execute(text("CREATE SCHEMA IF NOT EXISTS sales"))
        con.execute(text("DROP TABLE IF EXISTS sales.order_lines"))
        con.execute(
            text(
                """
                CREATE TABLE sales.order_lines (
                    order_id text, line_no integer, ordered_at timestamptz,
                    customer_id text, sku text, qty numeric(10, 2),
                    net_amount numeric(12, 2), currency char(3)
                )
                """
            )
        )
        con.execute(
            text(
                "INSERT INTO sales.order_lines VALUES "
                "(:o, :l, :t, :c, :s, :q, :a, :cur)"
            ),
            [
                dict(zip(["o", "l", "t", "c", "s", "q", "a", "cur"], row, strict=True))
                for row in rows
            ],
        )
    engine.dispose()


def _spec(folder: Path, query: str = "") -> Path:
    spec = {
        "name": "erp-postgres",
        "reporting_currency": "USD",
        "as_of": "transactions.date",
        "inputs": {
            "orders": {
                "format": "sql",
                "url_env": "COCKPIT_TEST_ERP_URL",
                "query": query
                or "SELECT * FROM sales.order_lines ORDER BY order_id, line_no",
            }
        },
        "loads": [
            {
                "table": "transactions",
                "currency": {"column": "currency"},
                "columns": {
                    "invoice_id": "order_id",
                    "line": "line_no",
                    "date": "ordered_at",
                    "account_id": "customer_id",
                    "product_id": "sku",
                    "quantity": "qty",
                    "net_revenue": "net_amount",
                },
            }
        ],
    }
    path = folder / "erp_postgres.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def loaded(server, tmp_path, monkeypatch) -> tuple[Path, Path, list]:
    _fill(server, ORDER_LINES)
    monkeypatch.setenv("COCKPIT_TEST_ERP_URL", server)
    mart = tmp_path / "mart.duckdb"
    rates = tmp_path / "fx.yaml"
    shutil.copy(FAULTS / "fx_rates.yaml", rates)
    ingest_source(str(rates), FAULTS / "fx_rates.csv", mart)
    spec = _spec(tmp_path)
    reports = ingest_source(str(spec), None, mart)
    return mart, spec, reports


def _query(mart: Path, sql: str, params=None) -> list[tuple]:
    with connect(mart, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def test_sql_rows_balanced(loaded):
    _, _, reports = loaded
    assert [(r.rows_read, r.rows_loaded, r.rows_quarantined) for r in reports] == [
        (5, 4, 1)
    ]


def test_sql_amounts_converted(loaded):
    mart, _, _ = loaded
    rows = _query(
        mart,
        "SELECT invoice_id, line, net_revenue, net_revenue_source, currency "
        "FROM transactions ORDER BY 1, 2",
    )
    # 50.50 EUR at the February rate 1.25 is 63.125 USD.
    assert rows == [
        ("SO-1", 1, 100.0, 100.0, "USD"),
        ("SO-1", 2, 63.125, 50.5, "EUR"),
        ("SO-2", 1, 80.0, 80.0, "USD"),
        ("SO-3", 1, -20.0, -20.0, "USD"),
    ]


def test_sql_timestamptz_to_utc_date(loaded):
    mart, _, _ = loaded
    day = _query(mart, "SELECT date FROM transactions WHERE invoice_id = 'SO-2'")
    assert day == [(date(2021, 4, 1),)]


def test_sql_return_flagged(loaded):
    mart, _, _ = loaded
    flagged = _query(mart, "SELECT invoice_id FROM transactions WHERE is_return")
    assert flagged == [("SO-3",)]


def test_sql_null_amount_quarantined(loaded, server):
    mart, _, _ = loaded
    rows = _query(
        mart, "SELECT source_file, line, column_name, value, reason FROM quarantine"
    )
    # Parquet and SQL rows are numbered from 1; the URL has no password to hide.
    assert rows == [
        (f"{server}#orders", 5, "net_revenue", None, "missing required value")
    ]


def test_sql_second_load_skipped(loaded):
    mart, spec, _ = loaded
    reports = ingest_source(str(spec), None, mart)
    assert [type(r) for r in reports] == [SkippedLoad]
    assert _query(mart, "SELECT count(*) FROM transactions") == [(4,)]


def test_sql_changed_result_replaces_rows(loaded, server):
    mart, spec, _ = loaded
    _fill(server, ORDER_LINES[:2])
    reports = ingest_source(str(spec), None, mart)
    assert [(r.rows_read, r.rows_loaded) for r in reports] == [(2, 2)]
    assert _query(mart, "SELECT count(*) FROM transactions") == [(2,)]


def test_sql_bad_query_named(server, tmp_path, monkeypatch):
    monkeypatch.setenv("COCKPIT_TEST_ERP_URL", server)
    spec = _spec(tmp_path, "SELECT * FROM sales.no_such_table")
    with pytest.raises(IngestError) as caught:
        ingest_source(str(spec), None, tmp_path / "mart.duckdb")
    message = str(caught.value)
    assert f"query 'orders' on {server} failed: ProgrammingError" in message
    assert 'relation "sales.no_such_table" does not exist' in message


def test_sql_missing_url_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("COCKPIT_TEST_ERP_URL", raising=False)
    spec = _spec(tmp_path)
    with pytest.raises(IngestError) as caught:
        ingest_source(str(spec), None, tmp_path / "mart.duckdb")
    assert (
        "input orders: environment variable COCKPIT_TEST_ERP_URL is not set; set it "
        "to the database URL"
    ) in str(caught.value)
