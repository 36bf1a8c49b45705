"""Time `run_batch` against plain sequential papermill runs of the same notebooks.

Usage:
    .venv/bin/python benchmarks/bench_batch.py --mart outputs/demo.duckdb

Both runs work on a temporary copy of the mart, so the results they publish
never reach the original. In one invocation the script measures:

- the fixed cost of one papermill run: an empty notebook, median of 3;
- sequential: one `papermill.execute_notebook` call after another, for every
  region x unit and notebook, with the parameters `run_batch` would pass;
- HTML export of each sequential output with `cockpit.report.export_html`;
- `run_batch` with `--workers` workers, wall time from call to return
  (planning, execution, HTML export, index and publish included).

The figures are printed and, unless --no-record is given, appended to
docs/benchmarks.md with the date, the machine and the command.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat
import papermill
from nbformat.v4 import new_code_cell, new_notebook

from cockpit import paths
from cockpit.batch import KERNEL_NAME, plan_batch, run_batch
from cockpit.mart.store import connect
from cockpit.report import export_html

RECORD_FILE = paths.PROJECT_ROOT / "docs" / "benchmarks.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mart",
        type=Path,
        required=True,
        help="DuckDB mart; the runs use a temporary copy",
    )
    parser.add_argument(
        "--notebooks-dir",
        type=Path,
        default=paths.NOTEBOOKS_DIR,
        help="folder of the notebooks (default: notebooks/)",
    )
    parser.add_argument(
        "--notebooks", help="comma-separated notebook names (default: parameter file)"
    )
    parser.add_argument("--params", type=Path, help="parameter YAML file")
    parser.add_argument("--regions", help="comma-separated regions (default: all)")
    parser.add_argument("--units", help="comma-separated business units (default: all)")
    parser.add_argument(
        "--workers", type=int, default=2, help="run_batch workers (default: 2)"
    )
    parser.add_argument(
        "--no-record", action="store_true", help=f"do not append to {RECORD_FILE}"
    )
    return parser.parse_args(argv)


def split(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def time_empty_notebook(folder: Path, repeats: int = 3) -> float:
    """Median seconds of papermill on a notebook with one trivial cell."""
    kernelspec = {"name": KERNEL_NAME, "display_name": "Python 3", "language": "python"}
    notebook = new_notebook(metadata={"kernelspec": kernelspec})
    parameters = new_code_cell("x = 0")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, new_code_cell("x + 1")]
    source = folder / "empty.ipynb"
    nbformat.write(notebook, source)
    times = []
    for attempt in range(repeats):
        started = time.perf_counter()
        papermill.execute_notebook(
            str(source),
            str(folder / f"empty_out_{attempt}.ipynb"),
            parameters={"x": attempt},
            kernel_name=KERNEL_NAME,
            progress_bar=False,
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_sequential(plan, folder: Path) -> tuple[float, list[float], int, list[Path]]:
    """Run every notebook of `plan` one after another into `folder`.

    Returns wall seconds, per-notebook papermill seconds, the number of
    notebooks that raised, and the executed notebooks' paths.
    """
    execute_times, outputs, failures = [], [], 0
    started = time.perf_counter()
    for index, task in enumerate(plan.tasks):
        out = folder / f"pair{index}"
        out.mkdir(parents=True)
        parameters = dict(task.parameters, output_dir=str(out))
        for name, source in task.notebooks:
            output = out / f"{name}.ipynb"
            begin = time.perf_counter()
            try:
                papermill.execute_notebook(
                    str(source),
                    str(output),
                    parameters=parameters,
                    kernel_name=KERNEL_NAME,
                    progress_bar=False,
                    cwd=str(out),
                )
            except papermill.PapermillExecutionError:
                failures += 1
            execute_times.append(time.perf_counter() - begin)
            outputs.append(output)
    return time.perf_counter() - started, execute_times, failures, outputs


def time_exports(notebooks: list[Path]) -> list[float]:
    """Seconds of `export_html` for each executed notebook."""
    times = []
    for notebook in notebooks:
        begin = time.perf_counter()
        export_html(notebook, notebook.with_suffix(".html"))
        times.append(time.perf_counter() - begin)
    return times


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
        f"{cpu}, Python {platform.python_version()}, papermill {papermill.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_at_start = os.getloadavg()[0]
    # As in run_batch: papermill warns for each parameter a notebook does not
    # declare, and both runs pass the same set.
    logging.getLogger("papermill").setLevel(logging.ERROR)
    mart = args.mart.resolve()
    if not mart.is_file():
        sys.stderr.write(
            f"mart {mart} not found; build one with `cockpit demo --mart {mart}`\n"
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as temporary:
        work = Path(temporary)
        copy = work / "mart.duckdb"
        shutil.copyfile(mart, copy)
        selection = {
            "params_file": args.params,
            "regions": split(args.regions),
            "units": split(args.units),
            "notebooks": split(args.notebooks),
            "notebooks_dir": args.notebooks_dir,
        }
        with connect(copy, read_only=True) as con:
            invoice_lines = con.execute("SELECT count(*) FROM transactions").fetchall()
        plan = plan_batch(copy, work / "sequential-plan", **selection)
        count = sum(len(task.notebooks) for task in plan.tasks)
        print(f"{count} notebook(s) for {len(plan.tasks)} region x unit pair(s)")

        (work / "empty").mkdir()
        empty_s = time_empty_notebook(work / "empty")
        print(f"empty notebook, papermill: {empty_s:.2f} s")

        sequential_s, execute_times, sequential_failures, outputs = run_sequential(
            plan, work / "sequential"
        )
        print(f"sequential papermill: {sequential_s:.1f} s")
        export_times = time_exports(outputs)
        print(f"HTML export of those: {sum(export_times):.1f} s")

        started = time.perf_counter()
        result = run_batch(copy, work / "runs", workers=args.workers, **selection)
        batch_s = time.perf_counter() - started
        print(f"run_batch, {args.workers} workers: {batch_s:.1f} s")

    batch_durations = [r.duration_s for r in result.results]
    mean_execute = statistics.mean(execute_times)
    mean_export = statistics.mean(export_times)
    mean_batch = statistics.mean(batch_durations)
    rows = [
        ("notebooks (region x unit x notebook)", f"{count}"),
        ("failed: sequential / run_batch", f"{sequential_failures} / {result.failed}"),
        ("empty notebook, one papermill run (median of 3)", f"{empty_s:.2f} s"),
        ("sequential papermill, wall", f"{sequential_s:.1f} s"),
        ("sequential, mean papermill per notebook", f"{mean_execute:.2f} s"),
        ("sequential, mean HTML export per notebook", f"{mean_export:.2f} s"),
        (
            "sequential papermill + HTML export, wall",
            f"{sequential_s + sum(export_times):.1f} s",
        ),
        (f"run_batch, {args.workers} workers, wall", f"{batch_s:.1f} s"),
        (
            "speed-up (sequential papermill + export / run_batch)",
            f"{(sequential_s + sum(export_times)) / batch_s:.2f}x",
        ),
        ("run_batch, mean per notebook (execute + export)", f"{mean_batch:.2f} s"),
        (
            "per-notebook overhead (run_batch mean - sequential papermill mean)",
            f"{mean_batch - mean_execute:+.2f} s",
        ),
    ]
    command = "python benchmarks/bench_batch.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"### Notebook batch, {stamp}",
        "",
        f"- machine: {machine()}",
        f"- 1-minute load average at start / end: {load_at_start:.1f} / "
        f"{os.getloadavg()[0]:.1f} (other processes on the machine share the cores)",
        f"- command: `{command}`",
        f"- mart: {mart.name}, {invoice_lines[0][0]:,} invoice lines, "
        f"{len(plan.tasks)} region x unit pairs; notebooks from {args.notebooks_dir}",
        "",
        "| measure | value |",
        "| --- | --- |",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
    ]
    text = "\n".join(lines)
    print()
    print(text)
    if not args.no_record:
        if not RECORD_FILE.exists():
            RECORD_FILE.parent.mkdir(parents=True, exist_ok=True)
            RECORD_FILE.write_text("# Benchmarks\n\n", encoding="utf-8")
        with RECORD_FILE.open("a", encoding="utf-8") as handle:
            handle.write("\n" + text)
        print(f"appended to {RECORD_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
