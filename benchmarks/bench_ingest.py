"""Time the cockpit's CSV ingest against pandas and a bare DuckDB COPY.

Usage:
    .venv/bin/python benchmarks/bench_ingest.py [--rows 1000000] [--no-record]

The script writes one CSV of generated invoice lines to a temporary folder
and loads it three ways, each in a fresh Python process so that its peak
memory can be read on its own:

- cockpit: `cockpit.ingest.ingest_source` with a YAML spec, i.e. reading,
  parsing every number and date, checking types, required values and keys,
  quarantine bookkeeping and the load log;
- pandas: `pandas.read_csv` followed by `CREATE TABLE ... AS SELECT` from
  the DataFrame into a DuckDB file, DuckDB's equivalent of `to_sql`;
- duckdb: `COPY ... FROM` the CSV into a typed table, with no checks.

Each child reports its wall time for the load, imports excluded, and its
peak resident memory (ru_maxrss), which includes the interpreter and the
imports. The resident memory after imports is shown as a baseline. Every way must end
with the same row count and revenue total, or the script fails. The
figures are printed and, unless --no-record is given, appended to
docs/benchmarks.md with the date, the machine and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECORD_FILE = ROOT / "docs" / "benchmarks.md"
METHODS = ("cockpit", "pandas", "duckdb")

#: The mapping the cockpit uses for the generated file.
SPEC = {
    "name": "bench-invoices",
    "description": "Generated invoice lines for the ingest benchmark.",
    "reporting_currency": "USD",
    "as_of": "transactions.date",
    "inputs": {"lines": {"format": "csv", "file": "*.csv", "date_format": "%Y-%m-%d"}},
    "loads": [
        {
            "table": "transactions",
            "from": "lines",
            "currency": {"column": "currency"},
            "columns": {
                "invoice_id": "invoice_id",
                "line": "line",
                "date": "date",
                "account_id": "customer_id",
                "product_id": "product_id",
                "rep_id": "rep_id",
                "region": "region",
                "quantity": "quantity",
                "net_revenue": "net_revenue",
                "cost": "cost",
            },
        }
    ],
}

COPY_TABLE = """
CREATE TABLE transactions (
    invoice_id VARCHAR, line BIGINT, date DATE, customer_id VARCHAR,
    product_id VARCHAR, rep_id VARCHAR, region VARCHAR, quantity DOUBLE,
    net_revenue DOUBLE, cost DOUBLE, currency VARCHAR
)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="invoice lines to generate"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed of the data")
    parser.add_argument(
        "--no-record", action="store_true", help="print only; leave docs alone"
    )
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mart", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def generate(path: Path, rows: int, seed: int) -> None:
    """Write `rows` invoice lines: about 4 lines per invoice over three years."""
    rng = np.random.default_rng(seed)
    invoice = np.repeat(np.arange(rows // 4 + 1), 4)[:rows]
    line = np.tile(np.arange(1, 5), rows // 4 + 1)[:rows]
    days = rng.integers(0, 3 * 365, rows)
    quantity = rng.integers(1, 20, rows)
    price = rng.uniform(5, 500, rows).round(2)
    revenue = (quantity * price).round(2)
    frame = pd.DataFrame(
        {
            "invoice_id": pd.Series(invoice).map("INV-{:07d}".format),
            "line": line,
            "date": (np.datetime64("2022-01-01") + days).astype(str),
            "customer_id": pd.Series(rng.integers(0, 5000, rows)).map("C{:05d}".format),
            "product_id": pd.Series(rng.integers(0, 800, rows)).map("P{:04d}".format),
            "rep_id": pd.Series(rng.integers(0, 60, rows)).map("R{:03d}".format),
            "region": rng.choice(["North", "South", "East", "West"], rows),
            "quantity": quantity,
            "net_revenue": revenue,
            "cost": (revenue * rng.uniform(0.4, 0.8, rows)).round(2),
            "currency": "USD",
        }
    )
    frame.to_csv(path, index=False)


def rss_mb() -> float:
    """Peak resident memory of this process in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory of this process now, in MB."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_child(method: str, csv_path: Path, mart: Path, spec: Path) -> dict:
    """Load the CSV one way in this process and return the measurements."""
    import duckdb

    from cockpit.ingest import ingest_source

    baseline = current_rss_mb()
    start = time.perf_counter()
    if method == "cockpit":
        ingest_source(str(spec), csv_path, mart)
    elif method == "pandas":
        frame = pd.read_csv(csv_path)
        with duckdb.connect(str(mart)) as con:
            con.execute("CREATE TABLE transactions AS SELECT * FROM frame")
        del frame
    else:
        with duckdb.connect(str(mart)) as con:
            con.execute(COPY_TABLE)
            con.execute(f"COPY transactions FROM '{csv_path}' (HEADER)")
    seconds = time.perf_counter() - start
    with duckdb.connect(str(mart), read_only=True) as con:
        rows, revenue = con.execute(
            "SELECT count(*), round(sum(net_revenue), 2) FROM transactions"
        ).fetchone()
    return {
        "method": method,
        "seconds": seconds,
        "rows": rows,
        "revenue": revenue,
        "peak_mb": rss_mb(),
        "baseline_mb": baseline,
    }


def measure(method: str, csv_path: Path, folder: Path, spec: Path) -> dict:
    mart = folder / f"{method}.duckdb"
    command = [
        sys.executable,
        __file__,
        "--child",
        method,
        "--csv",
        str(csv_path),
        "--mart",
        str(mart),
        "--spec",
        str(spec),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{method} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(results: list[dict], rows: int, size_mb: float, command: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "",
        f"## Ingest of {rows:,} generated invoice lines from CSV ({stamp})",
        "",
        f"Command: `{command}`. Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, "
        f"pandas {pd.__version__}, DuckDB {_duckdb_version()}. "
        f"CSV: {size_mb:.0f} MB, 11 columns, ISO dates, plain decimals.",
        "",
        "| way | seconds | rows per second | peak memory (MB) | after imports (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for result in results:
        lines.append(
            f"| {result['method']} | {result['seconds']:.1f} | "
            f"{result['rows'] / result['seconds']:,.0f} | {result['peak_mb']:,.0f} | "
            f"{result['baseline_mb']:,.0f} |"
        )
    lines += [
        "",
        "cockpit = `ingest_source` with a YAML spec (parse, check, quarantine, "
        "load log); pandas = `read_csv` + `CREATE TABLE AS SELECT` from the "
        "DataFrame into DuckDB; duckdb = `COPY FROM` into a typed table without "
        "checks. Each way runs in its own process; peak memory is that process's "
        "ru_maxrss, imports included.",
        "",
    ]
    return "\n".join(lines)


def _duckdb_version() -> str:
    import duckdb

    return duckdb.__version__


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args.child, args.csv, args.mart, args.spec)))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        folder = Path(tmp)
        csv_path = folder / "invoice_lines.csv"
        start = time.perf_counter()
        generate(csv_path, args.rows, args.seed)
        size_mb = csv_path.stat().st_size / 2**20
        print(
            f"generated {args.rows:,} lines ({size_mb:.0f} MB) in "
            f"{time.perf_counter() - start:.1f} s"
        )
        spec = folder / "bench_invoices.yaml"
        spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
        results = []
        for method in METHODS:
            result = measure(method, csv_path, folder, spec)
            print(
                f"{method:8s} {result['seconds']:7.1f} s "
                f"{result['rows'] / result['seconds']:>12,.0f} rows/s "
                f"peak {result['peak_mb']:,.0f} MB "
                f"(after imports {result['baseline_mb']:,.0f} MB)"
            )
            results.append(result)
    counts = {(r["rows"], r["revenue"]) for r in results}
    if len(counts) != 1 or results[0]["rows"] != args.rows:
        raise SystemExit(f"the three ways loaded different data: {results}")
    if not args.no_record:
        command = "python benchmarks/bench_ingest.py " + shlex.join(
            a for a in (argv if argv is not None else sys.argv[1:])
        )
        with open(RECORD_FILE, "a", encoding="utf-8") as handle:
            handle.write(markdown(results, args.rows, size_mb, command.strip()))
        print(f"appended to {RECORD_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
