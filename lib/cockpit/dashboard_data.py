"""Data behind the dashboards: one in-memory copy of the mart, read within a scope.

`DashboardData` copies the mart file into an in-memory DuckDB database when
a dashboard kernel starts (a preheated kernel does this before any viewer
arrives) and closes the file again. Reads then never touch the file, so
other kernels can write survey answers and target changes to it, and one
page shows one consistent state of the mart.

Every read takes the scope the page requests and passes it through
`authorize`, which narrows it by the viewer's scope (`Scope.narrow`). A
page that requests another region gets ScopeError, never rows. Results are
cached per scope and period, so going back to a view already seen, or to
one `prefetch` prepared while the viewer was reading, does not scan the
invoice lines again.

The only writes are `write`, which opens the mart file for writing for one
action and then reloads the tables the action changed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import pandas as pd

from cockpit.errors import MartError, ScopeError
from cockpit.kpi import KPIS, compute_kpi, kpi_values, open_deal_table
from cockpit.kpi_periods import Period, resolve_period
from cockpit.mart import connect, get_meta
from cockpit.mart.store import create_schema
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Periods offered by the period filter, with their labels.
PERIODS: dict[str, str] = {
    "year": "Year to date",
    "quarter": "Quarter to date",
    "month": "Month to date",
    "r12m": "Last 12 months",
}

#: Tiles of the performance view, in three groups.
TILE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "Results",
        (
            "revenue",
            "margin_pct",
            "growth_pct",
            "attainment_to_date_pct",
            "won_value",
            "win_rate",
        ),
    ),
    (
        "Outlook",
        (
            "open_pipeline",
            "weighted_pipeline",
            "pipeline_coverage",
            "projected_attainment",
            "gap_to_target",
        ),
    ),
    (
        "Behaviour",
        (
            "visits_per_seller",
            "calls_per_seller",
            "customer_time_share",
            "stale_deals",
            "slipped_deals",
        ),
    ),
)

#: Tiles computed by `cockpit.projection.project_attainment`, not the registry.
PROJECTION_TILES = ("projected_attainment", "gap_to_target")

#: Every tile name, in display order.
TILE_NAMES: tuple[str, ...] = tuple(name for _, names in TILE_GROUPS for name in names)

#: Registry KPIs among the tiles that are read at the pipeline snapshot.
PIPELINE_TILES: tuple[str, ...] = (
    "open_pipeline",
    "weighted_pipeline",
    "pipeline_coverage",
    "stale_deals",
    "slipped_deals",
)

#: Registry KPIs among the tiles that are counted over the period.
FLOW_TILES: tuple[str, ...] = tuple(
    n for n in TILE_NAMES if n not in PROJECTION_TILES and n not in PIPELINE_TILES
)

#: Columns of the drill-down table, one row per child of the current node.
CHILD_KPIS: tuple[str, ...] = (
    "revenue",
    "attainment_to_date_pct",
    "margin_pct",
    "growth_pct",
    "open_pipeline",
    "win_rate",
)

#: Levels of the drill-down path and the scope field each one sets.
NODE_FIELDS: tuple[tuple[str, str], ...] = (
    ("region", "region"),
    ("team", "team"),
    ("seller", "rep_id"),
)

#: Grain of the children of each level.
CHILD_GRAIN = {
    "company": "region",
    "region": "team",
    "team": "rep_id",
    "seller": "account_id",
}

#: Projection level of each node level (see project_attainment).
PROJECTION_LEVEL = {
    "company": "company",
    "region": "region",
    "team": "team",
    "seller": "rep_id",
}

#: Tables left out of the in-memory copy: load bookkeeping the views never read.
SKIPPED_TABLES = ("load_log", "quarantine")

#: Attempts and pause (seconds) when the mart file is locked by another process.
WRITE_ATTEMPTS = 10
WRITE_PAUSE = 0.5


def node_level(node: Scope) -> str:
    """Return company, region, team or seller: the finest level `node` sets."""
    if node.rep_id is not None:
        return "seller"
    if node.team is not None:
        return "team"
    if node.region is not None:
        return "region"
    return "company"


def node_of(scope: Scope) -> Scope:
    """Return the drill-down position of `scope`: its region, team and rep_id only."""
    return Scope(region=scope.region, team=scope.team, rep_id=scope.rep_id)


def attach_source(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Attach the mart file read-only as `source`, waiting while a writer locks it.

    A writer (another kernel storing a survey answer) locks the file for
    well under a second, so the attach is retried WRITE_ATTEMPTS times,
    WRITE_PAUSE seconds apart. Raises MartError when the file stays locked
    or cannot be read.
    """
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            con.execute("ATTACH ? AS source (READ_ONLY)", [str(path)])
            return
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or attempt == WRITE_ATTEMPTS:
                raise MartError(
                    f"cannot open mart {path}: {exc}. Close programs that write "
                    "to it and reload the page"
                ) from exc
            logger.info(
                "mart %s is locked (attempt %d of %d)", path, attempt, WRITE_ATTEMPTS
            )
            time.sleep(WRITE_PAUSE)
        except duckdb.Error as exc:
            raise MartError(f"cannot open mart {path}: {exc}") from exc


def copy_mart(mart: str | Path) -> duckdb.DuckDBPyConnection:
    """Copy the mart file into a new in-memory database and return its connection.

    Every table but SKIPPED_TABLES is copied; tables the file lacks are
    created empty and the `opportunities_current` view is recreated. The
    file is opened read-only and detached before returning. Raises
    MartError when the file is missing or locked by a writer.
    """
    path = Path(mart)
    if not path.is_file():
        raise MartError(
            f"mart file {path} does not exist; build one with "
            f"`cockpit demo --mart {path}` or `cockpit ingest ... --mart {path}`"
        )
    start = time.perf_counter()
    memory = duckdb.connect(":memory:")
    try:
        attach_source(memory, path)
    except MartError:
        memory.close()
        raise
    try:
        tables = [
            row[0]
            for row in memory.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = 'source'"
            ).fetchall()
        ]
        for table in tables:
            if table in SKIPPED_TABLES:
                continue
            memory.execute(
                f'CREATE TABLE "{table}" AS SELECT * FROM source.main."{table}"'
            )
    finally:
        memory.execute("DETACH source")
    create_schema(memory)
    logger.info(
        "copied %d table(s) of %s into memory in %.2f s",
        len(tables),
        path,
        time.perf_counter() - start,
    )
    return memory


@dataclass(frozen=True)
class Filters:
    """The filter values of a page: a period name, a business unit, a product line."""

    period: str = "year"
    business_unit: str | None = None
    product_line: str | None = None


class DashboardData:
    """The mart of one dashboard kernel, read within the viewer's scope.

    Create it before the viewer is known (`restrict` sets the viewer's
    scope later, once). Reads run on per-thread cursors of one in-memory
    database, so `prefetch` can prepare views in a background thread.
    """

    def __init__(self, mart: str | Path) -> None:
        self.mart = Path(mart)
        self._db = copy_mart(self.mart)
        self._local = threading.local()
        self._cache: dict[Hashable, Future] = {}
        self._cache_lock = threading.Lock()
        self._viewer_scope = Scope()
        self._restricted = False
        self._prefetch_queue: list[tuple[Hashable, Callable[[], Any]]] = []
        self._prefetch_lock = threading.Condition()
        self._prefetcher: threading.Thread | None = None
        self._foreground = 0
        self.read_meta()

    # --- setup -----------------------------------------------------------

    def read_meta(self) -> None:
        """Read as-of date, currency, company name and the reps of the copy."""
        con = self.cursor()
        meta = get_meta(con)
        stored = meta.get("as_of")
        if stored:
            try:
                self.as_of = date.fromisoformat(stored)
            except ValueError as exc:
                raise MartError(
                    f"mart_meta.as_of is {stored!r}, not a date; store it as "
                    "YYYY-MM-DD with set_meta"
                ) from exc
        else:
            latest = con.execute("SELECT max(date) FROM transactions").fetchone()[0]
            if latest is None:
                raise MartError(
                    "the mart has no as-of date and no invoice lines; load data "
                    "with `cockpit demo` or `cockpit ingest` first"
                )
            self.as_of = latest
        self.currency = meta.get("currency") or meta.get("reporting_currency") or "EUR"
        self.company = meta.get("company") or "Company"
        self.reps = con.execute(
            "SELECT rep_id, name, role, team, region, manager_id FROM reps"
        ).df()

    @property
    def viewer_scope(self) -> Scope:
        """Scope every read is narrowed by."""
        return self._viewer_scope

    def restrict(self, scope: Scope) -> None:
        """Set the viewer's scope. Raises ScopeError when called a second time."""
        if self._restricted:
            raise ScopeError(
                f"the viewer scope is already {self._viewer_scope.label()}; a "
                "dashboard kernel serves one viewer"
            )
        self._viewer_scope = scope
        self._restricted = True
        logger.info("dashboard data restricted to %s", scope.label())

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """Return this thread's cursor on the in-memory copy."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._db.cursor()
            self._local.cursor = cursor
        return cursor

    # --- scope -----------------------------------------------------------

    def authorize(self, scope: Scope) -> Scope:
        """Return `scope` narrowed by the viewer's scope.

        Raises ScopeError when `scope` sets a field to another value than
        the viewer's scope does, e.g. region West for a head of North, and
        when the team or seller asked for belongs (in the reps table) to
        another region or team than the one the scope sets.
        """
        requested = {
            field.name: getattr(scope, field.name)
            for field in fields(scope)
            if getattr(scope, field.name) is not None
        }
        narrowed = self._viewer_scope.narrow(**requested)
        self._check_hierarchy(narrowed)
        return narrowed

    def _check_hierarchy(self, scope: Scope) -> None:
        """Raise ScopeError when a team or seller lies outside the region or team also set.

        The reps table records where each team and seller belongs. A rep
        without a region or team there is not checked on that field.
        """
        reps = self.reps
        if scope.team is not None and scope.region is not None:
            team = reps[reps["team"] == scope.team]
            regions = set(team["region"].dropna())
            if regions and scope.region not in regions:
                raise ScopeError(
                    f"team {scope.team!r} is not in region {scope.region!r}"
                )
        if scope.rep_id is not None:
            rep = reps[reps["rep_id"] == scope.rep_id]
            if rep.empty:
                raise ScopeError(f"seller {scope.rep_id!r} is not in the reps table")
            for name in ("team", "region"):
                wanted = getattr(scope, name)
                actual = rep.iloc[0][name]
                if wanted is not None and not pd.isna(actual) and actual != wanted:
                    raise ScopeError(
                        f"seller {scope.rep_id!r} is not in {name} {wanted!r}"
                    )

    def scope_for(self, node: Scope, filters: Filters) -> Scope:
        """Return the authorized scope of a drill-down position and its filters."""
        return self.authorize(
            Scope(
                region=node.region,
                team=node.team,
                rep_id=node.rep_id,
                business_unit=filters.business_unit,
                product_line=filters.product_line,
            )
        )

    def period(self, name: str) -> Period:
        """Return the named period read at the mart's as-of date."""
        if name not in PERIODS:
            raise ScopeError(
                f"unknown period {name!r}; choose one of {', '.join(PERIODS)}"
            )
        return resolve_period(name, self.as_of)

    # --- cache -----------------------------------------------------------

    def cached(self, key: Hashable, compute: Callable[[], T]) -> T:
        """Return the value stored under `key`, computing it once.

        A value being computed by another thread (the prefetcher) is waited
        for. A computation that raised is not kept, so a retry computes
        again.
        """
        with self._cache_lock:
            future = self._cache.get(key)
            owner = future is None
            if owner:
                future = Future()
                self._cache[key] = future
        if not owner:
            return future.result()
        try:
            value = compute()
        except BaseException as exc:
            with self._cache_lock:
                self._cache.pop(key, None)
            future.set_exception(exc)
            raise
        future.set_result(value)
        return value

    def is_cached(self, key: Hashable) -> bool:
        """True when `key` has a finished value."""
        with self._cache_lock:
            future = self._cache.get(key)
        return future is not None and future.done() and future.exception() is None

    def clear_cache(self) -> None:
        """Forget every cached value (after the mart changed)."""
        with self._cache_lock:
            self._cache.clear()

    def prefetch(self, jobs: Iterable[tuple[Hashable, Callable[[], Any]]]) -> None:
        """Queue computations for a background thread, replacing earlier jobs.

        Each job is a cache key and a function that fills it, normally the
        public read method that stores its result under that key. Jobs whose
        key is cached already are skipped. Errors are logged and dropped:
        the foreground computes again when the view is needed.
        """
        with self._prefetch_lock:
            self._prefetch_queue = [job for job in jobs if not self.is_cached(job[0])]
            if self._prefetcher is None:
                self._prefetcher = threading.Thread(
                    target=self._prefetch_loop, name="dashboard-prefetch", daemon=True
                )
                self._prefetcher.start()
            self._prefetch_lock.notify()

    @contextmanager
    def foreground(self) -> Iterator[None]:
        """Hold back the prefetcher while a viewer waits for a view.

        A prefetch job already running finishes; the next one starts only
        after every foreground block has ended.
        """
        with self._prefetch_lock:
            self._foreground += 1
        try:
            yield
        finally:
            with self._prefetch_lock:
                self._foreground -= 1
                self._prefetch_lock.notify_all()

    def prefetch_pending(self) -> int:
        """Number of queued prefetch jobs."""
        with self._prefetch_lock:
            return len(self._prefetch_queue)

    def _prefetch_loop(self) -> None:
        while True:
            with self._prefetch_lock:
                while not self._prefetch_queue or self._foreground:
                    self._prefetch_lock.wait()
                key, compute = self._prefetch_queue.pop(0)
            if self.is_cached(key):
                continue
            try:
                compute()
            except Exception as exc:
                logger.info("prefetch of %s failed: %s", key, exc)

    # --- reads -----------------------------------------------------------

    def flow_tiles(self, node: Scope, filters: Filters) -> dict[str, float | None]:
        """Return the tiles counted over the period, plus the period's target.

        One `kpi_values` call over the named period (flows to date, target
        over the whole period) for FLOW_TILES and "target".
        """
        scope = self.scope_for(node, filters)
        key = ("flow", scope, filters.period)
        return self.cached(
            key, lambda: self._kpis(scope, filters.period, [*FLOW_TILES, "target"])
        )

    def pipeline_tiles(self, node: Scope, filters: Filters) -> dict[str, float | None]:
        """Return the tiles read at the pipeline snapshot (PIPELINE_TILES)."""
        scope = self.scope_for(node, filters)
        key = ("pipeline", scope, filters.period)
        return self.cached(
            key, lambda: self._kpis(scope, filters.period, PIPELINE_TILES)
        )

    def _kpis(
        self, scope: Scope, period_name: str, names: Sequence[str]
    ) -> dict[str, float | None]:
        return kpi_values(
            self.cursor(),
            list(names),
            scope=scope,
            period=self.period(period_name),
            as_of=self.as_of,
        )

    def projection(self, node: Scope, filters: Filters) -> dict[str, float | None]:
        """Return the projection tiles of the node from `project_attainment`.

        Keys: projected_attainment, gap_to_target, attainment_low,
        attainment_high and projected, None where undefined.
        """
        scope = self.scope_for(node, filters)
        key = ("projection", scope, filters.period)
        return self.cached(
            key, lambda: self._projection(node, scope, self.period(filters.period))
        )

    def _projection(
        self, node: Scope, scope: Scope, period: Period
    ) -> dict[str, float | None]:
        from cockpit.projection import project_attainment

        level = PROJECTION_LEVEL[node_level(node)]
        table = project_attainment(
            self.cursor(), self.as_of, level=level, scope=scope, period=period
        )
        if level != "company":
            key = node.rep_id if level == "rep_id" else getattr(node, level)
            table = table[table[level] == key]
        columns = (
            "projected_attainment",
            "gap_to_target",
            "attainment_low",
            "attainment_high",
            "projected",
        )
        if table.empty:
            return dict.fromkeys(columns)
        row = table.iloc[0]
        return {
            column: None if pd.isna(row.get(column)) else float(row[column])
            for column in columns
        }

    def children(self, node: Scope, filters: Filters) -> pd.DataFrame:
        """Return one row per child of the node with the CHILD_KPIS.

        Children are the regions of the company, the teams of a region, the
        sellers of a team and the accounts of a seller, as `compute_kpi`
        groups the node's scope by them. Columns: key, label, then
        CHILD_KPIS. Rows are sorted by revenue, largest first.
        """
        scope = self.scope_for(node, filters)
        key = ("children", scope, filters.period)
        return self.cached(key, lambda: self._children(node, scope, filters.period))

    def _children(self, node: Scope, scope: Scope, period_name: str) -> pd.DataFrame:
        grain = CHILD_GRAIN[node_level(node)]
        period = self.period(period_name)
        con = self.cursor()
        table: pd.DataFrame | None = None
        for name in CHILD_KPIS:
            if grain not in KPIS[name].grains:
                continue
            frame = compute_kpi(
                con, name, by=(grain,), scope=scope, period=period, as_of=self.as_of
            )
            table = (
                frame if table is None else table.merge(frame, on=grain, how="outer")
            )
        table = table[table[grain].notna()].rename(columns={grain: "key"})
        for name in CHILD_KPIS:
            if name not in table:
                table[name] = np.nan
        table["label"] = self.labels(grain, table["key"])
        table = table.sort_values("revenue", ascending=False, na_position="last")
        return table[["key", "label", *CHILD_KPIS]].reset_index(drop=True)

    def child_revenue(self, node: Scope, filters: Filters) -> pd.DataFrame:
        """Return revenue and target to date per child of the node, for its chart.

        Columns key, label, revenue and target_prorated (NaN for accounts,
        which have no targets); largest revenue first.
        """
        scope = self.scope_for(node, filters)
        key = ("child_revenue", scope, filters.period)
        return self.cached(
            key, lambda: self._child_revenue(node, scope, filters.period)
        )

    def _child_revenue(
        self, node: Scope, scope: Scope, period_name: str
    ) -> pd.DataFrame:
        grain = CHILD_GRAIN[node_level(node)]
        period = self.period(period_name)
        con = self.cursor()
        table = compute_kpi(
            con, "revenue", by=(grain,), scope=scope, period=period, as_of=self.as_of
        )
        if grain in KPIS["target_prorated"].grains:
            target = compute_kpi(
                con,
                "target_prorated",
                by=(grain,),
                scope=scope,
                period=period,
                as_of=self.as_of,
            )
            table = table.merge(target, on=grain, how="outer")
        else:
            table["target_prorated"] = np.nan
        table = table[table[grain].notna()].rename(columns={grain: "key"})
        table["label"] = self.labels(grain, table["key"])
        table = table.sort_values("revenue", ascending=False, na_position="last")
        return table[["key", "label", "revenue", "target_prorated"]].reset_index(
            drop=True
        )

    def labels(self, grain: str, keys: Sequence[Any]) -> list[str]:
        """Return display names for members of `grain`: seller and account names."""
        if grain == "rep_id":
            names = dict(zip(self.reps["rep_id"], self.reps["name"], strict=True))
        elif grain == "account_id":
            rows = (
                self.cursor()
                .execute(
                    "SELECT account_id, name FROM accounts WHERE account_id IN "
                    "(SELECT unnest(?::VARCHAR[]))",
                    [[str(key) for key in keys]],
                )
                .fetchall()
            )
            names = dict(rows)
        else:
            names = {}
        return [str(names.get(key) or key) for key in keys]

    def node_label(self, node: Scope) -> str:
        """Return the name of the node's finest level: a region, team or seller."""
        level = node_level(node)
        if level == "seller":
            return self.labels("rep_id", [node.rep_id])[0]
        if level == "team":
            return str(node.team)
        if level == "region":
            return str(node.region)
        return self.company

    def monthly(self, node: Scope, filters: Filters) -> pd.DataFrame:
        """Return revenue, last year's revenue and target by month of the as-of year.

        Columns month (YYYY-MM, twelve months), revenue (up to as_of),
        revenue_last_year and target (the year's revenue target over 12).
        The period filter does not apply: the chart always shows the year.
        """
        scope = self.scope_for(node, filters)
        return self.cached(("monthly", scope), lambda: self._monthly(scope))

    def _monthly(self, scope: Scope) -> pd.DataFrame:
        con = self.cursor()
        as_of = self.as_of
        year_start = date(as_of.year, 1, 1)
        this_year = compute_kpi(
            con,
            "revenue",
            by=("month",),
            scope=scope,
            start=year_start,
            end=as_of,
            as_of=as_of,
        )
        last_year = compute_kpi(
            con,
            "revenue",
            by=("month",),
            scope=scope,
            start=date(as_of.year - 1, 1, 1),
            end=date(as_of.year - 1, 12, 31),
            as_of=as_of,
        )
        last_year = last_year.assign(
            month=[f"{int(str(m)[:4]) + 1}{str(m)[4:]}" for m in last_year["month"]]
        ).rename(columns={"revenue": "revenue_last_year"})
        target = kpi_values(
            con,
            ["target"],
            scope=scope,
            start=year_start,
            end=date(as_of.year, 12, 31),
            as_of=as_of,
        )["target"]
        months = pd.DataFrame(
            {"month": [f"{as_of.year}-{m:02d}" for m in range(1, 13)]}
        )
        frame = months.merge(this_year.astype({"month": str}), on="month", how="left")
        frame = frame.merge(last_year, on="month", how="left")
        frame["target"] = target / 12 if target else np.nan
        return frame

    def open_deals(self, node: Scope, filters: Filters) -> pd.DataFrame:
        """Return the open deals of the pipeline snapshot in the node's scope.

        Columns: opportunity_id, account, stage, amount, expected_close_date,
        probability, weighted_amount, slips; largest amount first.
        """
        scope = self.scope_for(node, filters)
        return self.cached(("deals", scope), lambda: self._open_deals(scope))

    def _open_deals(self, scope: Scope) -> pd.DataFrame:
        deals = open_deal_table(self.cursor(), scope, self.as_of)
        deals = deals.assign(account=self.labels("account_id", deals["account_id"]))
        columns = [
            "opportunity_id",
            "account",
            "stage",
            "amount",
            "expected_close_date",
            "probability",
            "weighted_amount",
            "slips",
        ]
        deals = deals.sort_values("amount", ascending=False, na_position="last")
        return deals[columns].reset_index(drop=True)

    def filter_options(self) -> dict[str, list[tuple[str, str]]]:
        """Return the business units and product lines within the viewer's scope.

        Keys: business_unit (sorted unit names) and product_line (pairs of
        unit and line, sorted), from the products table.
        """
        con = self.cursor()
        unit = self._viewer_scope.business_unit
        line = self._viewer_scope.product_line
        rows = con.execute(
            """
            SELECT DISTINCT business_unit, product_line FROM products
            WHERE business_unit IS NOT NULL AND product_line IS NOT NULL
              AND (? IS NULL OR business_unit = ?) AND (? IS NULL OR product_line = ?)
            ORDER BY 1, 2
            """,
            [unit, unit, line, line],
        ).fetchall()
        units = sorted({row[0] for row in rows})
        return {"business_unit": [(u, u) for u in units], "product_line": rows}

    # --- writes ----------------------------------------------------------

    def write(
        self, action: Callable[[duckdb.DuckDBPyConnection], T], tables: Sequence[str]
    ) -> T:
        """Run `action` on a writable connection to the mart file, then reload `tables`.

        The file is opened for this action only. When another process locks
        it, the open is retried WRITE_ATTEMPTS times, WRITE_PAUSE seconds
        apart. The cache is cleared afterwards. Raises MartError when the
        file stays locked, and whatever `action` raises.
        """
        last_error: MartError | None = None
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                con = connect(self.mart)
            except MartError as exc:
                last_error = exc
                logger.info(
                    "mart %s is locked (attempt %d of %d)",
                    self.mart,
                    attempt,
                    WRITE_ATTEMPTS,
                )
                time.sleep(WRITE_PAUSE)
                continue
            try:
                result = action(con)
            finally:
                con.close()
            self.reload(tables)
            return result
        raise MartError(
            f"the mart {self.mart} stayed locked by another program; try again "
            "in a minute"
        ) from last_error

    def reload(self, tables: Sequence[str]) -> bool:
        """Copy `tables` again from the mart file; return True when any changed.

        A table counts as changed when its row count differs from the copy
        (the tables reloaded here are only ever appended to). The cache is
        cleared when something changed. Raises MartError when the file
        cannot be opened.
        """
        con = self.cursor()
        attach_source(con, self.mart)
        changed = []
        try:
            present = {
                row[0]
                for row in con.execute(
                    "SELECT table_name FROM duckdb_tables() "
                    "WHERE database_name = 'source'"
                ).fetchall()
            }
            for table in tables:
                if table not in present:
                    continue
                before = con.execute(
                    f'SELECT count(*) FROM memory.main."{table}"'
                ).fetchone()[0]
                after = con.execute(
                    f'SELECT count(*) FROM source.main."{table}"'
                ).fetchone()[0]
                if before == after:
                    continue
                con.execute(
                    f'CREATE OR REPLACE TABLE memory.main."{table}" AS '
                    f'SELECT * FROM source.main."{table}"'
                )
                changed.append(table)
        finally:
            con.execute("DETACH source")
        if changed:
            self.clear_cache()
            logger.info("reloaded %s from %s", ", ".join(changed), self.mart)
        return bool(changed)


def kpi_unit(name: str) -> str:
    """Return the unit of a tile: the registry's, or that of a projection tile."""
    if name in KPIS:
        return KPIS[name].unit
    return {"projected_attainment": "percent", "gap_to_target": "currency"}[name]
