"""Batch runner: execute the notebooks once per region x business unit.

`run_batch` plans one task per region x business unit and hands the tasks
to an executor: local worker processes by default, or a Dask cluster. Each
task runs that pair's notebooks in order with papermill and exports each one
to HTML. A failing notebook is recorded and never stops the others.

Layout of one run, `run_id` being a UTC timestamp plus a random suffix so
that two runs never share a folder::

    out_dir/<run_id>/index.html, index.json
    out_dir/<run_id>/<region>/<unit>/<notebook>.ipynb and .html
    out_dir/<run_id>/<region>/<unit>/results/<table>.parquet

Notebooks open the mart read-only. After every notebook finished,
`publish_results` appends the result Parquet files to the mart from this one
process, in one transaction.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cockpit import paths
from cockpit.errors import BatchError, MartError, ReportError
from cockpit.mart.schema import TABLES
from cockpit.mart.store import connect, file_checksum, get_meta, load_frame
from cockpit.params import ParameterSet, load_parameters

logger = logging.getLogger(__name__)

#: Jupyter kernel every notebook runs in.
KERNEL_NAME = "python3"

#: Seconds one cell may run before its notebook fails.
# NOTE: a guessed ceiling, sized for a Prophet fit with backtests on one
# region x unit; raise it for much larger marts.
CELL_TIMEOUT_S = 3600

#: Seconds to wait for a kernel to start.
KERNEL_START_TIMEOUT_S = 120

#: Seconds to keep trying to reach a Dask scheduler given by address.
DASK_CONNECT_TIMEOUT_S = 20

#: Folder, inside each region x unit folder, of the result tables to publish.
RESULTS_FOLDER = "results"

#: Mart tables that notebooks may not publish into.
PROTECTED_TABLES = frozenset({"quarantine", "load_log", "mart_meta"})

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NOTEBOOK_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

Task = TypeVar("Task")
Outcome = TypeVar("Outcome")


@dataclass(frozen=True)
class RunResult:
    """Outcome of one notebook for one region x business unit.

    `status` is "succeeded" or "failed"; `duration_s` covers execution and
    HTML export, in seconds; `error` is a one-line reason for a failure.
    Output paths are None when the file was not written. `result_files` are
    the results/*.parquet files this notebook created or changed.
    """

    region: str
    business_unit: str
    notebook: str
    status: str
    duration_s: float
    output_ipynb: Path | None
    output_html: Path | None
    error: str | None = None
    as_of: str | None = None
    result_files: tuple[Path, ...] = ()


@dataclass(frozen=True)
class PublishedTable:
    """Row counts of one result file appended to the mart.

    `note` gives the reason a file was skipped (rows_loaded is then 0).
    """

    table: str
    file: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    note: str | None = None


@dataclass
class BatchResult:
    """Outcome of one batch run; `failed` counts failed notebooks."""

    run_id: str
    run_dir: Path
    index_path: Path
    succeeded: int
    failed: int
    results: list[RunResult]
    published: list[PublishedTable] = field(default_factory=list)


@dataclass(frozen=True)
class PairTask:
    """The notebooks of one region x business unit, run in order in one task.

    `notebooks` contains (name, source path) pairs. `parameters` are the
    papermill parameters shared by those notebooks.
    """

    region: str
    business_unit: str
    folder: Path
    notebooks: tuple[tuple[str, Path], ...]
    parameters: dict[str, Any]
    cell_timeout_s: float | None = CELL_TIMEOUT_S


class Executor(Protocol):
    """Runs tasks somewhere and yields each outcome as soon as it is known."""

    description: str

    def run(
        self, function: Callable[[Task], Outcome], tasks: Sequence[Task]
    ) -> Iterator[tuple[Task, Outcome | BaseException]]:
        """Call `function` on every task; yield (task, result or exception)."""
        ...

    def close(self) -> None:
        """Release what the executor started."""
        ...


class LocalProcessExecutor:
    """Runs tasks in a pool of `workers` local processes (spawned, not forked)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.description = f"local processes ({workers} workers)"

    def run(
        self, function: Callable[[Task], Outcome], tasks: Sequence[Task]
    ) -> Iterator[tuple[Task, Outcome | BaseException]]:
        """Call `function` on every task in the pool; yield outcomes as they end."""
        if not tasks:
            return
        # Spawned workers start clean: a forked copy of a parent with threads
        # (DuckDB, tqdm) can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            max_workers=min(self.workers, len(tasks)), mp_context=context
        ) as pool:
            futures = {pool.submit(function, task): task for task in tasks}
            for future in as_completed(futures):
                task = futures[future]
                try:
                    yield task, future.result()
                except Exception as exc:  # a worker died or the task raised
                    yield task, exc

    def close(self) -> None:
        """Nothing to release: the pool ends with each `run`."""


class DaskExecutor:
    """Runs tasks on a Dask distributed cluster through `client`.

    With `owns_client`, `close` also closes the client.
    """

    def __init__(self, client: Any, owns_client: bool = False) -> None:
        self.client = client
        self.owns_client = owns_client
        self.description = f"dask ({client.scheduler.address})"

    def run(
        self, function: Callable[[Task], Outcome], tasks: Sequence[Task]
    ) -> Iterator[tuple[Task, Outcome | BaseException]]:
        """Submit every task to the cluster; yield outcomes as they end."""
        from distributed import as_completed as dask_as_completed

        futures = {
            self.client.submit(function, task, pure=False): task for task in tasks
        }
        for future in dask_as_completed(list(futures)):
            task = futures[future]
            try:
                yield task, future.result()
            except Exception as exc:  # the worker died or the task raised
                yield task, exc

    def close(self) -> None:
        """Close the client when this executor opened it."""
        if self.owns_client:
            self.client.close()


def make_executor(executor: Any, workers: int) -> Executor:
    """Return the executor that `run_batch`'s `executor` argument names.

    None or "local" gives `workers` local processes, and "dask:<address>"
    connects to that Dask scheduler. A `distributed.Client` is used as it is
    and left open. An object with `run` and `close` methods is returned
    unchanged. Raises BatchError for anything else or an unreachable
    scheduler.
    """
    if executor is None or executor == "local":
        return LocalProcessExecutor(workers)
    if isinstance(executor, str) and executor.startswith("dask:"):
        address = executor.removeprefix("dask:")
        from distributed import Client

        try:
            client = Client(address, timeout=DASK_CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise BatchError(
                f"cannot reach the Dask scheduler at {address!r}: {exc}; start "
                "one with `dask scheduler` or drop the dask: executor"
            ) from exc
        return DaskExecutor(client, owns_client=True)
    if type(executor).__module__.startswith("distributed"):
        return DaskExecutor(executor, owns_client=False)
    if callable(getattr(executor, "run", None)) and callable(
        getattr(executor, "close", None)
    ):
        return executor
    raise BatchError(
        f"unknown executor {executor!r}; use None, 'local', "
        "'dask:<scheduler address>' or a distributed.Client"
    )


def run_batch(
    mart: str | Path,
    out_dir: str | Path,
    params_file: str | Path | None = None,
    regions: Iterable[str] | None = None,
    units: Iterable[str] | None = None,
    notebooks: Iterable[str] | None = None,
    workers: int = 2,
    as_of: date | str | None = None,
    notebooks_dir: str | Path | None = None,
    executor: Any = None,
) -> BatchResult:
    """Run the notebooks for every region x business unit, then publish results.

    `regions` and `units` narrow the pairs found in the mart (default: every
    pair with transactions or opportunities). `notebooks` replaces the
    notebook list of the parameter file. `as_of` overrides every other
    as-of date. `workers` is the number of region x unit tasks that run at
    once on the local executor. See `make_executor` for `executor`.

    Raises ParameterError for an invalid parameter file and BatchError when
    nothing can start (unknown region, missing notebook, no as-of date) or
    when publishing fails after the notebooks ran. A failing notebook does
    not raise: it is counted in `failed` and listed in the index.
    """
    if not isinstance(workers, int) or workers < 1:
        raise BatchError(f"workers must be a whole number >= 1, got {workers!r}")
    mart = Path(mart).resolve()
    out_dir = Path(out_dir).resolve()
    selection = {
        "params_file": params_file,
        "regions": regions,
        "units": units,
        "notebooks": notebooks,
        "as_of": as_of,
        "notebooks_dir": notebooks_dir,
    }
    # Planning, the executor and the kernel check raise before any folder exists.
    run_id = new_run_id()
    plan = plan_batch(mart, out_dir / run_id, **selection)
    runner = make_executor(executor, workers)
    try:
        if isinstance(runner, LocalProcessExecutor):
            _check_kernel()
        out_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            try:
                (out_dir / run_id).mkdir()
                break
            except FileExistsError:
                run_id = new_run_id()
                plan = plan_batch(mart, out_dir / run_id, **selection)
        else:
            raise BatchError(f"cannot create a new run folder in {out_dir}; check it")
        run_dir = out_dir / run_id
        tasks = plan.tasks
        started_at = _now()
        logger.info(
            "run %s: %d notebook(s) for %d region x unit pair(s) on %s, into %s",
            run_id,
            sum(len(task.notebooks) for task in tasks),
            len(tasks),
            runner.description,
            run_dir,
        )
        results = _execute(runner, tasks, run_id)
    finally:
        runner.close()

    index = {
        "run_id": run_id,
        "mart": str(mart),
        "started_at": started_at,
        "finished_at": _now(),
        "executor": runner.description,
        "workers": workers,
        "parameters_file": str(plan.parameters_file) if plan.parameters_file else None,
        "succeeded": sum(r.status == "succeeded" for r in results),
        "failed": sum(r.status != "succeeded" for r in results),
        "results": [_index_row(result, run_dir, tasks) for result in results],
        "published": [],
        "publish_error": None,
    }
    from cockpit.report import write_run_index

    index_path = write_run_index(run_dir, index)
    try:
        published = publish_results(run_dir, mart)
    except (BatchError, MartError) as exc:
        index["publish_error"] = str(exc)
        write_run_index(run_dir, index)
        raise BatchError(
            f"the notebooks of run {run_id} finished (see {index_path}) but their "
            f"results were not published: {exc}. Fix that, then call "
            f"cockpit.batch.publish_results({str(run_dir)!r}, {str(mart)!r})"
        ) from exc
    index["published"] = [asdict(table) for table in published]
    write_run_index(run_dir, index)
    logger.info(
        "run %s: %d succeeded, %d failed; index %s",
        run_id,
        index["succeeded"],
        index["failed"],
        index_path,
    )
    return BatchResult(
        run_id=run_id,
        run_dir=run_dir,
        index_path=index_path,
        succeeded=index["succeeded"],
        failed=index["failed"],
        results=results,
        published=published,
    )


@dataclass(frozen=True)
class BatchPlan:
    """Tasks of one run and the parameter file they came from (None: built-in)."""

    tasks: list[PairTask]
    parameters_file: Path | None


def plan_batch(
    mart: str | Path,
    run_dir: str | Path,
    params_file: str | Path | None = None,
    regions: Iterable[str] | None = None,
    units: Iterable[str] | None = None,
    notebooks: Iterable[str] | None = None,
    as_of: date | str | None = None,
    notebooks_dir: str | Path | None = None,
) -> BatchPlan:
    """Check the inputs of a run and return its tasks, one per region x unit.

    Arguments are those of `run_batch`; `run_dir` is where the run will
    write, and is not created here. Each task carries the papermill
    parameters of its notebooks. Raises ParameterError or BatchError as
    `run_batch` does, before anything is written.
    """
    mart = Path(mart).resolve()
    notebooks_dir = Path(notebooks_dir or paths.NOTEBOOKS_DIR).resolve()
    parameters = load_parameters(params_file)
    all_pairs, mart_as_of = read_mart_scope(mart)
    parameters.check_scopes(all_pairs)
    pairs = _select_pairs(all_pairs, regions, units)
    tasks = _plan_tasks(
        pairs,
        parameters,
        _notebook_names(notebooks),
        notebooks_dir,
        Path(run_dir).resolve(),
        mart,
        as_of,
        mart_as_of,
    )
    return BatchPlan(tasks, parameters.source)


def read_mart_scope(mart: str | Path) -> tuple[list[tuple[str, str]], date | None]:
    """Return the mart's (region, business unit) pairs and its default as-of date.

    Pairs are those with at least one transaction or opportunity. The as-of
    date is `mart_meta` key "as_of", else the latest transaction date, else
    None. The read-only connection is closed before returning. Raises
    MartError for a missing or locked mart.
    """
    with connect(mart, read_only=True) as con:
        tables = {
            row[0]
            for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        sources = [name for name in ("transactions", "opportunities") if name in tables]
        if not sources:
            raise MartError(
                f"mart {mart} has neither transactions nor opportunities; "
                "load data first (`cockpit demo` or `cockpit ingest`)"
            )
        union = " UNION ALL ".join(
            f"SELECT region, business_unit FROM {name}" for name in sources
        )
        pairs = [
            (str(region), str(unit))
            for region, unit in con.execute(
                f"""
                SELECT DISTINCT region, business_unit FROM ({union})
                WHERE region IS NOT NULL AND business_unit IS NOT NULL
                ORDER BY region, business_unit
                """
            ).fetchall()
        ]
        unassigned = con.execute(
            f"SELECT count(*) FROM ({union}) "
            "WHERE region IS NULL OR business_unit IS NULL"
        ).fetchall()[0][0]
        meta = get_meta(con) if "mart_meta" in tables else {}
        latest = (
            con.execute("SELECT max(date) FROM transactions").fetchall()[0][0]
            if "transactions" in tables
            else None
        )
    if unassigned:
        logger.warning(
            "%d fact row(s) in %s have no region or business unit and belong to no run",
            unassigned,
            mart,
        )
    as_of_text = meta.get("as_of")
    if as_of_text:
        return pairs, _parse_date(as_of_text, f"mart_meta as_of of {mart}")
    return pairs, latest


def _select_pairs(
    pairs: list[tuple[str, str]],
    regions: Iterable[str] | None,
    units: Iterable[str] | None,
) -> list[tuple[str, str]]:
    if not pairs:
        raise BatchError(
            "the mart has no transactions or opportunities with both a region "
            "and a business unit; load data first"
        )
    known_regions = sorted({region for region, _ in pairs})
    known_units = sorted({unit for _, unit in pairs})
    regions = list(regions) if regions else None
    units = list(units) if units else None
    for requested, known, word in (
        (regions, known_regions, "region"),
        (units, known_units, "business unit"),
    ):
        unknown = [value for value in requested or [] if value not in known]
        if unknown:
            raise BatchError(
                f"unknown {word}(s) {unknown}; the mart has {', '.join(known)}"
            )
    selected = [
        (region, unit)
        for region, unit in pairs
        if (regions is None or region in regions) and (units is None or unit in units)
    ]
    if not selected:
        raise BatchError(
            f"no data for regions {regions} x business units {units}; "
            f"the mart's pairs are {', '.join(f'{r}/{u}' for r, u in pairs)}"
        )
    return selected


def _notebook_names(notebooks: Iterable[str] | None) -> list[str] | None:
    if notebooks is None:
        return None
    names = [str(name).removesuffix(".ipynb") for name in notebooks]
    bad = [name for name in names if not _NOTEBOOK_NAME.match(name)]
    if bad or not names:
        raise BatchError(
            f"invalid notebook name(s) {bad or names}; give names such as "
            "02_forecast (letters, digits, _ . -)"
        )
    return names


def _plan_tasks(
    pairs: list[tuple[str, str]],
    parameters: ParameterSet,
    chosen_notebooks: list[str] | None,
    notebooks_dir: Path,
    run_dir: Path,
    mart: Path,
    as_of: date | str | None,
    mart_as_of: date | None,
) -> list[PairTask]:
    region_folders = folder_names(region for region, _ in pairs)
    unit_folders = folder_names(unit for _, unit in pairs)
    forced_as_of = _parse_date(as_of, "as_of argument") if as_of else None
    tasks: list[PairTask] = []
    missing: set[Path] = set()
    for region, unit in pairs:
        values = parameters.for_pair(region, unit)
        names = chosen_notebooks or values["notebooks"]
        sources = tuple((name, notebooks_dir / f"{name}.ipynb") for name in names)
        missing.update(source for _, source in sources if not source.is_file())
        pair_as_of = forced_as_of
        if pair_as_of is None and values["as_of"]:
            pair_as_of = _parse_date(values["as_of"], f"as_of for {region}/{unit}")
        pair_as_of = pair_as_of or mart_as_of
        if pair_as_of is None:
            raise BatchError(
                f"no as-of date for {region}/{unit}: the mart has no mart_meta "
                "as_of and no transactions; pass --as-of YYYY-MM-DD or set as_of "
                "in the parameter file"
            )
        folder = run_dir / region_folders[region] / unit_folders[unit]
        notebook_parameters = {
            key: value
            for key, value in values.items()
            if key not in ("notebooks", "as_of")
        }
        notebook_parameters.update(
            region=region,
            business_unit=unit,
            as_of=pair_as_of.isoformat(),
            mart_path=str(mart),
            output_dir=str(folder),
        )
        tasks.append(PairTask(region, unit, folder, sources, notebook_parameters))
    if missing:
        raise BatchError(
            f"notebook file(s) not found: {', '.join(sorted(map(str, missing)))}; "
            f"check the names in the parameter file or --notebooks, or the "
            f"notebooks folder {notebooks_dir}"
        )
    return tasks


def _execute(runner: Executor, tasks: list[PairTask], run_id: str) -> list[RunResult]:
    """Run every task, show progress, and return results in plan order."""
    from tqdm.auto import tqdm

    outcomes: dict[tuple[str, str], list[RunResult]] = {}
    total = sum(len(task.notebooks) for task in tasks)
    failed = 0
    with tqdm(total=total, desc=f"run {run_id}", unit="notebook", disable=None) as bar:
        for task, outcome in runner.run(run_pair, tasks):
            if isinstance(outcome, BaseException):
                logger.error(
                    "task %s/%s failed as a whole: %s",
                    task.region,
                    task.business_unit,
                    outcome,
                )
                outcome = _task_failure(task, outcome)
            outcomes[(task.region, task.business_unit)] = outcome
            failed += sum(result.status != "succeeded" for result in outcome)
            bar.update(len(outcome))
            bar.set_postfix(failed=failed)
    return [
        result
        for task in tasks
        for result in outcomes[(task.region, task.business_unit)]
    ]


def _task_failure(task: PairTask, exc: BaseException) -> list[RunResult]:
    """Results for a task whose worker died before it returned anything."""
    error = f"worker failed: {type(exc).__name__}: {_first_line(str(exc))}"
    # Which notebook wrote what is unknown, so every result file counts as
    # written by each of them and none is published.
    written = tuple(sorted(_result_file_stamps(task.folder)))
    results = []
    for name, _ in task.notebooks:
        ipynb = task.folder / f"{name}.ipynb"
        html = task.folder / f"{name}.html"
        results.append(
            RunResult(
                region=task.region,
                business_unit=task.business_unit,
                notebook=name,
                status="failed",
                duration_s=0.0,
                output_ipynb=ipynb if ipynb.exists() else None,
                output_html=html if html.exists() else None,
                error=error,
                as_of=task.parameters["as_of"],
                result_files=written,
            )
        )
    return results


def run_pair(task: PairTask) -> list[RunResult]:
    """Run one region x unit's notebooks in order and export each to HTML.

    Runs in a worker. Every notebook runs even when an earlier one failed;
    each failure becomes a failed RunResult, never an exception.
    """
    # Papermill warns for every parameter a notebook does not declare; the
    # batch passes the same set to every notebook, so that is expected.
    logging.getLogger("papermill").setLevel(logging.ERROR)
    task.folder.mkdir(parents=True, exist_ok=True)
    results = []
    for name, source in task.notebooks:
        before = _result_file_stamps(task.folder)
        result = _run_notebook(task, name, source)
        after = _result_file_stamps(task.folder)
        written = tuple(
            sorted(p for p, stamp in after.items() if before.get(p) != stamp)
        )
        results.append(replace(result, result_files=written))
    return results


def _result_file_stamps(folder: Path) -> dict[Path, tuple[int, int]]:
    """Modification time and size of each result file in a pair's folder."""
    stamps = {}
    for path in (folder / RESULTS_FOLDER).glob("*.parquet"):
        stat = path.stat()
        stamps[path] = (stat.st_mtime_ns, stat.st_size)
    return stamps


def _run_notebook(task: PairTask, name: str, source: Path) -> RunResult:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from cockpit.report import export_html

    out_ipynb = task.folder / f"{name}.ipynb"
    out_html = task.folder / f"{name}.html"
    error: str | None = None
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(out_ipynb),
            parameters=dict(task.parameters),
            kernel_name=KERNEL_NAME,
            progress_bar=False,
            log_output=False,
            start_timeout=KERNEL_START_TIMEOUT_S,
            execution_timeout=task.cell_timeout_s,
            # The kernel starts in the pair's folder; passing papermill's
            # `cwd` instead would chdir the whole worker process.
            resources={"metadata": {"path": str(task.folder)}},
            kernel_manager_class=_kernel_manager_logging_to(
                task.folder / f"{name}.kernel.log"
            ),
        )
    except PapermillExecutionError as exc:
        error = (
            f"{exc.ename}: {_first_line(exc.evalue)} (cell {exc.exec_count})"
            if exc.evalue
            else f"{exc.ename} (cell {exc.exec_count})"
        )
    except Exception as exc:  # kernel died or timed out, notebook unreadable
        error = f"{type(exc).__name__}: {_first_line(str(exc))}"
    html_written = False
    if out_ipynb.exists():
        try:
            export_html(
                out_ipynb,
                out_html,
                title=f"{name} · {task.region} / {task.business_unit}",
            )
            html_written = True
        except ReportError as exc:
            error = error or f"HTML export failed: {_first_line(str(exc))}"
    duration = time.perf_counter() - started
    if error:
        logger.warning(
            "%s for %s/%s failed: %s", name, task.region, task.business_unit, error
        )
    return RunResult(
        region=task.region,
        business_unit=task.business_unit,
        notebook=name,
        status="failed" if error else "succeeded",
        duration_s=duration,
        output_ipynb=out_ipynb if out_ipynb.exists() else None,
        output_html=out_html if html_written else None,
        error=error,
        as_of=task.parameters["as_of"],
    )


def _kernel_manager_logging_to(log_path: Path) -> type:
    """Return a kernel manager class that writes the kernel's output to `log_path`.

    Cell output still reaches the notebook. The file receives what the kernel
    process itself prints, such as start-up warnings and crash messages,
    because those would otherwise interleave on the terminal of parallel runs.
    """
    from jupyter_client.manager import AsyncKernelManager

    class KernelManagerWithLog(AsyncKernelManager):
        async def start_kernel(self, **kw: Any) -> None:
            with open(log_path, "ab") as log:
                kw.setdefault("stdout", log)
                kw.setdefault("stderr", log)
                await super().start_kernel(**kw)

    return KernelManagerWithLog


def publish_results(run_dir: str | Path, mart: str | Path) -> list[PublishedTable]:
    """Append every result Parquet file of a run to the mart, in one transaction.

    Each `run_dir/<region>/<unit>/results/<table>.parquet` goes to mart table
    `<table>`. Canonical tables (such as targets) are loaded through
    `load_frame`, so bad rows go to quarantine. Other tables get a `run_id`
    column when the file has none, and are created from the first file when
    missing. Files written by a notebook that failed (per the run's
    index.json) are skipped, and so are files already published (same path
    and checksum in load_log), so publishing twice adds nothing. Raises
    BatchError, after rolling back, when any file cannot be appended.
    """
    import pandas as pd

    run_dir = Path(run_dir).resolve()
    run_id = run_dir.name
    files = sorted(run_dir.glob(f"*/*/{RESULTS_FOLDER}/*.parquet"))
    if not files:
        logger.info("run %s wrote no result tables", run_id)
        return []
    failed_files = _files_of_failed_notebooks(run_dir)
    published: list[PublishedTable] = []
    con = connect(mart)
    try:
        con.begin()
        for path in files:
            relative = path.relative_to(run_dir).as_posix()
            table = path.stem
            if path in failed_files:
                note = f"not published: written by {failed_files[path]}, which failed"
                published.append(PublishedTable(table, relative, 0, 0, 0, note=note))
                continue
            checksum = file_checksum(path)
            if _already_loaded(con, path, checksum):
                published.append(
                    PublishedTable(table, relative, 0, 0, 0, note="already published")
                )
                continue
            frame = pd.read_parquet(path)
            published.append(
                _append_table(con, table, frame, path, relative, run_id, checksum)
            )
        con.commit()
    except Exception as exc:
        con.rollback()
        if isinstance(exc, BatchError):
            raise
        raise BatchError(
            f"publishing run {run_id} into {mart} failed: {type(exc).__name__}: "
            f"{exc}; nothing was written"
        ) from exc
    finally:
        con.close()
    loaded = sum(table.rows_loaded for table in published)
    logger.info(
        "run %s: published %d row(s) from %d file(s)", run_id, loaded, len(files)
    )
    return published


def _append_table(
    con: Any,
    table: str,
    frame: Any,
    path: Path,
    relative: str,
    run_id: str,
    checksum: str,
) -> PublishedTable:
    """Append one result file to its mart table; raise BatchError if it does not fit."""
    if not _TABLE_NAME.match(table) or table in PROTECTED_TABLES:
        raise BatchError(
            f"result file {path} names table {table!r}, which notebooks may not "
            "write; name result files <table>.parquet with letters, digits and _ "
            f"and not {', '.join(sorted(PROTECTED_TABLES))}"
        )
    source = f"batch {run_id}"
    if table in TABLES:
        try:
            report = load_frame(
                con, table, frame, source=source, source_file=path, checksum=checksum
            )
        except ValueError as exc:
            raise BatchError(
                f"result file {path} does not fit table {table}: {exc}"
            ) from exc
        return PublishedTable(
            table,
            relative,
            report.rows_read,
            report.rows_loaded,
            report.rows_quarantined,
        )
    if "run_id" not in frame.columns:
        frame = frame.assign(run_id=run_id)
    _insert_result_frame(con, table, frame, path)
    con.execute(
        "INSERT INTO load_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            secrets.token_hex(6),
            source,
            str(path),
            checksum,
            table,
            datetime.now(timezone.utc).replace(tzinfo=None),
            len(frame),
            len(frame),
            0,
        ],
    )
    return PublishedTable(table, relative, len(frame), len(frame), 0)


def _insert_result_frame(con: Any, table: str, frame: Any, path: Path) -> None:
    """Append `frame` to a non-canonical table; create the table when missing."""
    rows = con.execute(
        "SELECT table_type FROM information_schema.tables "
        "WHERE table_schema = 'main' AND table_name = ?",
        [table],
    ).fetchall()
    table_type = rows[0][0] if rows else None
    if table_type not in (None, "BASE TABLE"):
        raise BatchError(
            f"result file {path} names {table!r}, which is a view in the mart; "
            "rename the result file"
        )
    con.register("_published", frame)
    try:
        if table_type is None:
            con.execute(f'CREATE TABLE "{table}" AS SELECT * FROM _published')
        else:
            con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM _published')
    except Exception as exc:  # duckdb raises several Error subclasses here
        # No unregister here: the aborted transaction rejects every statement
        # until the caller rolls back.
        raise BatchError(
            f"cannot append {path} to mart table {table}: {exc}; make the file's "
            "columns match the table's (names and types)"
        ) from exc
    con.unregister("_published")


def _already_loaded(con: Any, path: Path, checksum: str) -> bool:
    rows = con.execute(
        "SELECT count(*) FROM load_log WHERE source_file = ? AND checksum = ?",
        [str(path), checksum],
    ).fetchall()
    return rows[0][0] > 0


def _files_of_failed_notebooks(run_dir: Path) -> dict[Path, str]:
    """Map each result file that a failed notebook wrote to that notebook's name.

    Reads the run's index.json; without one, no file counts as failed.
    """
    import json

    index_file = run_dir / "index.json"
    if not index_file.is_file():
        return {}
    index = json.loads(index_file.read_text(encoding="utf-8"))
    failed: dict[Path, list[str]] = defaultdict(list)
    for row in index.get("results", []):
        if row.get("status") == "succeeded":
            continue
        for relative in row.get("result_files") or []:
            failed[run_dir / relative].append(row["notebook"])
    return {path: ", ".join(names) for path, names in failed.items()}


def safe_name(value: str) -> str:
    """Turn a region or unit name into a folder name of letters, digits, _ . -.

    Other characters become "_"; leading and trailing dots and underscores
    are dropped, so the result can never be "." or "..". At most 80
    characters; "unnamed" when nothing remains.
    """
    name = re.sub(r"[^\w.-]+", "_", value.strip()).strip("._")
    return name[:80] or "unnamed"


def folder_names(values: Iterable[str]) -> dict[str, str]:
    """Map each distinct value to a folder name, unique even on case-blind disks.

    Values whose `safe_name` would clash ("A/B" and "A_B", or "East" and
    "east") get a short hash of the value appended.
    """
    distinct = sorted(set(values))
    groups: dict[str, list[str]] = defaultdict(list)
    for value in distinct:
        groups[safe_name(value).lower()].append(value)
    names = {}
    for value in distinct:
        name = safe_name(value)
        if len(groups[name.lower()]) > 1:
            digest = hashlib.sha1(value.encode("utf-8")).hexdigest()[:6]
            name = f"{name}-{digest}"
        names[value] = name
    return names


def new_run_id() -> str:
    """Return a run id: UTC time to the second plus 6 random hex digits."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def _check_kernel() -> None:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel as exc:
        raise BatchError(
            f"Jupyter kernel {KERNEL_NAME!r} not found; install it with "
            f"`.venv/bin/python -m ipykernel install --sys-prefix --name {KERNEL_NAME}`"
        ) from exc


def _index_row(
    result: RunResult, run_dir: Path, tasks: list[PairTask]
) -> dict[str, Any]:
    task = next(
        t
        for t in tasks
        if t.region == result.region and t.business_unit == result.business_unit
    )
    return {
        "region": result.region,
        "business_unit": result.business_unit,
        "notebook": result.notebook,
        "as_of": result.as_of,
        "status": result.status,
        "duration_s": round(result.duration_s, 3),
        "folder": task.folder.relative_to(run_dir).as_posix(),
        "output_ipynb": _relative(result.output_ipynb, run_dir),
        "output_html": _relative(result.output_html, run_dir),
        "error": result.error,
        "result_files": [_relative(path, run_dir) for path in result.result_files],
        "parameters": {
            key: value
            for key, value in task.parameters.items()
            if key not in ("mart_path", "output_dir")
        },
    }


def _relative(path: Path | None, run_dir: Path) -> str | None:
    return None if path is None else path.relative_to(run_dir).as_posix()


def _parse_date(value: date | str, origin: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return datetime.fromisoformat(str(value).strip()).date()
    except ValueError as exc:
        raise BatchError(f"invalid date {value!r} in {origin}; use YYYY-MM-DD") from exc


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
