"""Time the dashboards in Chromium: navigation to KPI tiles, filter change to chart.

Usage:
    .venv/bin/python benchmarks/bench_dashboard.py --mart /tmp/demo7.duckdb

Without an existing --mart file the script builds the demo company at
--scale (7 gives about 1 M invoice lines) there first. It then writes an
access file with a token per viewer into a temporary folder, starts Voilà
the way `cockpit serve --access` does (one preheated kernel, background
preparation on), and drives Debian's chromium (/usr/bin/chromium) with
Playwright. It measures, per viewer (company, region, team, seller):

- navigation to visible tiles: from `page.goto` until the first tile group
  (results: revenue, margin, growth, attainment, won value, win rate)
  shows numbers, and until every tile, projection included, does;
- filter change to updated chart: from choosing a business unit until the
  monthly chart's bars change, and from choosing another period until the
  chart by team, region or account changes, plus until the status line
  is empty (every tile and the table done). Each change is measured right
  after the page finished and again after --idle seconds, when the
  background preparation of the other filter values has had time to run.

Before each navigation the script waits until the server's kernel pool is
full again, as it is for a viewer who arrives after the previous one.
The figures are printed and, unless --no-record is given, appended to
docs/benchmarks.md with the date, the machine and the command.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import voila

from cockpit import paths
from cockpit.access import hash_token
from cockpit.mart import connect
from cockpit.serve import HOST, POOL_SIZE, voila_command, voila_environment

RECORD_FILE = paths.PROJECT_ROOT / "docs" / "benchmarks.md"
SECTION_HEADING = "## Dashboards"
SECTION_TEXT = f"""{SECTION_HEADING}

`benchmarks/bench_dashboard.py` starts the dashboard server as `cockpit serve
--access` does and drives Debian's chromium with Playwright. Per viewer level
(company, region, team, seller) it times, from `page.goto`:

- first tiles: the results group (revenue, margin, growth, attainment, won
  value, win rate) shows numbers;
- all tiles: every tile, pipeline and projection included, shows numbers;
- whole view: charts, tiles and drill-down table are done.

Then, on the same page, choosing another business unit until the monthly chart
changes, and another period until the chart by child changes, each also until
the whole view is done. Both changes are timed right after the page finished
("at once", while the background preparation of other filter values runs) and
again after an idle pause, when that preparation is done. The server's kernel
pool is full again before each page load.
"""
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 180_000
FIRST_GROUP = (
    "revenue",
    "margin_pct",
    "growth_pct",
    "attainment_to_date_pct",
    "won_value",
    "win_rate",
)
ALL_TILES = (
    *FIRST_GROUP,
    "open_pipeline",
    "weighted_pipeline",
    "pipeline_coverage",
    "projected_attainment",
    "gap_to_target",
    "visits_per_seller",
    "calls_per_seller",
    "customer_time_share",
    "stale_deals",
    "slipped_deals",
)
FILLED = """
(names) => names.every((name) => {
  const el = document.querySelector(`.kpi-tile[data-kpi="${name}"] .kpi-value`);
  return el !== null && el.textContent.trim() !== '' && el.textContent.trim() !== '…';
})
"""
IDLE = """
() => {
  const status = document.querySelector('.cockpit-performance .cockpit-status');
  return status !== null && status.textContent.trim() === '';
}
"""
BARS = """
(css) => {
  const plot = document.querySelector(css + ' .js-plotly-plot');
  const bars = plot && plot._fullData && plot._fullData.find((t) => t.type === 'bar');
  return bars ? Array.from(bars.y).slice(0, 4).join(',') : null;
}
"""
CHANGED = """
([css, before]) => {
  const plot = document.querySelector(css + ' .js-plotly-plot');
  const bars = plot && plot._fullData && plot._fullData.find((t) => t.type === 'bar');
  return !!bars && Array.from(bars.y).slice(0, 4).join(',') !== before;
}
"""
KERNEL_READY = re.compile(r"copied \d+ table\(s\) of .* into memory")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mart", type=Path, required=True, help="DuckDB mart (built when missing)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=7.0,
        help="demo scale when the mart is built (7 gives about 1 M invoice lines)",
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="page loads per viewer (default: 3)"
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=30.0,
        help="seconds to wait before the second round of filter changes",
    )
    parser.add_argument(
        "--no-record", action="store_true", help=f"do not append to {RECORD_FILE}"
    )
    return parser.parse_args(argv)


def invoice_lines(mart: Path) -> int:
    with connect(mart, read_only=True) as con:
        return con.execute("SELECT count(*) FROM transactions").fetchone()[0]


def viewers(mart: Path) -> dict[str, dict[str, str]]:
    """Return one viewer per level, from the mart's first region, team and seller."""
    with connect(mart, read_only=True) as con:
        region, team = con.execute(
            "SELECT region, team FROM reps WHERE role = 'seller' ORDER BY rep_id LIMIT 1"
        ).fetchone()
        seller = con.execute(
            "SELECT rep_id FROM reps WHERE role = 'seller' AND team = ? ORDER BY rep_id "
            "LIMIT 1",
            [team],
        ).fetchone()[0]
    return {
        "company": {"level": "company"},
        "region": {"level": "region", "region": region},
        "team": {"level": "team", "team": team},
        "seller": {"level": "seller", "rep_id": seller},
    }


def write_access(folder: Path, users: dict[str, dict[str, str]]) -> Path:
    lines = ["authentication:", "  method: token", "users:"]
    for user, fields in users.items():
        lines.append(f"  {user}:")
        lines += [f"    {key}: {value}" for key, value in fields.items()]
        lines.append(f"    token_sha256: {hash_token('bench-' + user)}")
    path = folder / "access.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def wait_for_pool(log_path: Path, ready: int, deadline_s: float = 180.0) -> None:
    """Wait until the server log shows `ready` kernels that finished preparing."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if len(KERNEL_READY.findall(text)) >= ready:
            return
        time.sleep(0.2)
    raise TimeoutError(f"kernel pool not refilled; see {log_path}")


def change_filter(page, select: str, label: str, chart: str) -> tuple[float, float]:
    """Choose `label` in `select`; return seconds to the chart change and to idle."""
    before = page.evaluate(BARS, chart)
    start = time.monotonic()
    page.select_option(select, label=label)
    page.wait_for_function(CHANGED, arg=[chart, before], timeout=TIMEOUT_MS)
    chart_s = time.monotonic() - start
    page.wait_for_function(IDLE, timeout=TIMEOUT_MS)
    return chart_s, time.monotonic() - start


def measure(page, url: str, idle: float) -> dict[str, float]:
    result = {}
    start = time.monotonic()
    page.goto(url, wait_until="commit", timeout=TIMEOUT_MS)
    page.wait_for_function(FILLED, arg=list(FIRST_GROUP), timeout=TIMEOUT_MS)
    result["first tiles"] = time.monotonic() - start
    page.wait_for_function(FILLED, arg=list(ALL_TILES), timeout=TIMEOUT_MS)
    result["all tiles"] = time.monotonic() - start
    page.wait_for_function(IDLE, timeout=TIMEOUT_MS)
    result["whole view"] = time.monotonic() - start
    units = page.locator(".filter-business-unit select option").all_inner_texts()
    unit = units[1] if len(units) > 1 else None
    for round_name, pause in (("at once", 0.0), (f"after {idle:.0f} s idle", idle)):
        time.sleep(pause)
        if unit is not None:
            chart_s, idle_s = change_filter(
                page, ".filter-business-unit select", unit, ".chart-monthly"
            )
            result[f"unit change to chart, {round_name}"] = chart_s
            result[f"unit change to whole view, {round_name}"] = idle_s
        chart_s, idle_s = change_filter(
            page, ".filter-period select", "Quarter to date", ".chart-children"
        )
        result[f"period change to chart, {round_name}"] = chart_s
        result[f"period change to whole view, {round_name}"] = idle_s
        # Back to the defaults for the next round.
        page.select_option(".filter-period select", label="Year to date")
        page.wait_for_function(IDLE, timeout=TIMEOUT_MS)
        if unit is not None:
            page.select_option(".filter-business-unit select", label=units[0])
            page.wait_for_function(IDLE, timeout=TIMEOUT_MS)
    return result


def chromium_version() -> str:
    try:
        output = subprocess.run(
            [CHROMIUM, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "chromium (version unknown)"
    return output.strip() or "chromium (version unknown)"


def machine() -> str:
    memory_kib = 0
    with open("/proc/meminfo", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs (nproc), {memory_kib / 1024 / 1024:.1f} GiB memory, "
        f"{cpu}, Python {platform.python_version()}, Voilà {voila.__version__}, "
        f"{chromium_version()}"
    )


def report(results: dict[str, dict[str, list[float]]], args, lines: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(shlex.quote(part) for part in ["python", *sys.argv])
    text = [
        f"### Dashboards, {stamp}",
        "",
        f"- machine: {machine()}",
        f"- command: `{command}`",
        f"- mart: {lines:,} invoice lines; {args.runs} page load(s) per viewer; "
        f"pool of {POOL_SIZE} preheated kernel(s), refilled before each load",
        "- aims: 2 s from navigation to visible KPI tiles, 0.3 s from a filter "
        "change to the updated chart",
        "",
        "Median (max) seconds per viewer level:",
        "",
        "| measure | " + " | ".join(results) + " |",
        "| --- |" + " --- |" * len(results),
    ]
    measures = list(next(iter(results.values())))
    for name in measures:
        cells = []
        for values in results.values():
            found = values.get(name, [])
            cells.append(
                f"{statistics.median(found):.2f} ({max(found):.2f})" if found else "n/a"
            )
        text.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(text) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(CHROMIUM).exists():
        sys.stderr.write(f"error: {CHROMIUM} not found; install Debian's chromium\n")
        return 2
    if not args.mart.exists():
        from cockpit.demo import build_demo

        print(f"building the demo company at scale {args.scale} in {args.mart}")
        build_demo(args.mart, scale=args.scale)
    lines = invoice_lines(args.mart)
    users = viewers(args.mart)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as folder:
        folder = Path(folder)
        access = write_access(folder, users)
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = probe.getsockname()[1]
        log_path = folder / "voila.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                voila_command(port=port, access_file=access),
                env=voila_environment(args.mart, access_file=access),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        results: dict[str, dict[str, list[float]]] = {}
        taken = 0
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
                )
                for user in users:
                    context = browser.new_context(
                        viewport={"width": 1280, "height": 900}
                    )
                    results[user] = {}
                    for run in range(args.runs):
                        wait_for_pool(log_path, taken + POOL_SIZE)
                        page = context.new_page()
                        url = f"http://{HOST}:{port}/?token=bench-{user}"
                        values = measure(page, url, args.idle)
                        taken += 1
                        page.close()
                        for name, value in values.items():
                            results[user].setdefault(name, []).append(value)
                        print(
                            f"{user} run {run + 1}: "
                            + ", ".join(f"{k} {v:.2f}" for k, v in values.items())
                        )
                    context.close()
                browser.close()
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    text = report(results, args, lines)
    print(text)
    if not args.no_record:
        existing = (
            RECORD_FILE.read_text(encoding="utf-8") if RECORD_FILE.exists() else ""
        )
        with RECORD_FILE.open("a", encoding="utf-8") as handle:
            if SECTION_HEADING not in existing:
                handle.write("\n" + SECTION_TEXT)
            handle.write("\n" + text)
        print(f"appended to {RECORD_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
