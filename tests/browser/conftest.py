"""Fixtures of the dashboard tests: demo marts, Voilà servers, Chromium, viewers.

Each server runs the command `cockpit serve --access` runs (`voila_command`)
as a subprocess on a free loopback port, with an access file written here
that gives every test viewer a token. The browser is Debian's chromium
driven by Playwright through `executable_path`; Playwright's own browser
builds are not used. Without /usr/bin/chromium the browser tests skip,
unless COCKPIT_REQUIRE_BROWSER=1 makes them fail.

Expected numbers are computed here from the mart file with the library's
public functions (kpi_values, compute_kpi, project_attainment), never with
the dashboard's own data layer.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from cockpit.access import hash_token
from cockpit.kpi import format_value, kpi_values
from cockpit.kpi_periods import resolve_period
from cockpit.mart import connect
from cockpit.scope import Scope
from cockpit.serve import DASHBOARD_NOTEBOOK, HOST, voila_command, voila_environment

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Seconds to wait for Voilà to respond to HTTP and for widgets to appear.
SERVER_TIMEOUT = 90.0
TIMEOUT_MS = SERVER_TIMEOUT * 1000
DEMO_SCALE = 0.2
AS_OF = date(2026, 9, 30)

#: Tiles of the performance view in display order, and the registry KPIs among them.
TILES = (
    "revenue",
    "margin_pct",
    "growth_pct",
    "attainment_to_date_pct",
    "won_value",
    "win_rate",
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
PROJECTION = ("projected_attainment", "gap_to_target")
UNITS = {"projected_attainment": "percent", "gap_to_target": "currency"}

#: JavaScript: true once every tile shows a value (not the "…" placeholder).
TILES_FILLED = """
(names) => names.every((name) => {
  const el = document.querySelector(`.kpi-tile[data-kpi="${name}"] .kpi-value`);
  return el !== null && el.textContent.trim() !== '' && el.textContent.trim() !== '…';
})
"""

#: JavaScript: true once every tile shows the expected text.
TILES_SHOW = """
(expected) => Object.entries(expected).every(([name, text]) => {
  const el = document.querySelector(`.kpi-tile[data-kpi="${name}"] .kpi-value`);
  return el !== null && el.textContent.trim() === text;
})
"""

#: JavaScript: true once the visible tab's status line is empty.
IDLE = """
(css) => {
  const status = document.querySelector(css + ' .cockpit-status');
  return status !== null && status.textContent.trim() === '';
}
"""

#: Test viewers: level and the scope fields of each.
VIEWERS = {
    "ceo": {"level": "company"},
    "head.north": {"level": "region", "region": "North"},
    "head.west": {"level": "region", "region": "West"},
    "head.services": {"level": "company", "business_unit": "Services"},
    "lead.north-1": {"level": "team", "team": "North-1"},
    "seller.rep-002": {"level": "seller", "rep_id": "REP-002"},
}


def token_of(user: str) -> str:
    """Test token of `user` (a fixed text; the access file keeps its hash)."""
    return f"test-token-{user}"


def scope_of(user: str) -> Scope:
    """Scope the access file gives `user`."""
    fields = {k: v for k, v in VIEWERS[user].items() if k != "level"}
    return Scope(**fields)


@dataclass
class DashboardServer:
    """A running Voilà subprocess, the URL it serves and its mart."""

    url: str
    port: int
    process: subprocess.Popen
    log_path: Path
    mart: Path

    def log_tail(self, chars: int = 4000) -> str:
        """Return the end of the server's combined stdout and stderr."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def log(self) -> str:
        """Return the server's whole log."""
        return self.log_path.read_text(errors="replace")

    def page_url(self, user: str, query: str = "") -> str:
        """URL of the dashboard for `user`, signing in with their token."""
        extra = f"&{query}" if query else ""
        return f"{self.url}?token={token_of(user)}{extra}"


def free_port() -> int:
    """Return a TCP port on the loopback interface that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def http_get(
    url: str,
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
    follow: bool = False,
) -> tuple[int, str]:
    """GET `url` without any proxy; return status and body, also for 4xx/5xx.

    Redirects are followed only with `follow`, keeping `headers`.
    """

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    handlers: list = [urllib.request.ProxyHandler({})]
    if not follow:
        handlers.append(NoRedirect())
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def write_access_file(path: Path, mart: Path) -> Path:
    """Write an access file with a token per test viewer; the team lead acts as its manager."""
    with connect(mart, read_only=True) as con:
        manager = con.execute(
            "SELECT rep_id FROM reps WHERE team = 'North-1' AND role = 'manager' "
            "ORDER BY rep_id LIMIT 1"
        ).fetchone()[0]
    lines = ["authentication:", "  method: token", "users:"]
    for user, fields in VIEWERS.items():
        lines.append(f"  {user}:")
        lines.append(f"    name: Test {user}")
        for key, value in fields.items():
            lines.append(f"    {key}: {value}")
        if user == "lead.north-1":
            lines.append(f"    acts_as: {manager}")
        lines.append(f"    token_sha256: {hash_token(token_of(user))}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _wait_until_answering(server: DashboardServer) -> None:
    """Poll a cheap URL (the static files handler) until the server responds."""
    deadline = time.monotonic() + SERVER_TIMEOUT
    probe_url = f"{server.url}voila/static/voila.js"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"Voilà exited with code {server.process.returncode}:\n"
                f"{server.log_tail()}"
            )
        try:
            http_get(probe_url, timeout=2.0)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    pytest.fail(
        f"Voilà did not answer at {probe_url} within {SERVER_TIMEOUT:.0f} s:\n"
        f"{server.log_tail()}"
    )


@contextmanager
def running_server(
    mart: Path,
    access_file: Path,
    folder: Path,
    notebook: Path = DASHBOARD_NOTEBOOK,
    pool_size: int = 2,
    extra_env: dict[str, str] | None = None,
) -> Iterator[DashboardServer]:
    """Start Voilà as `cockpit serve --access` does; stop it afterwards."""
    port = free_port()
    log_path = folder / "voila.log"
    environment = voila_environment(mart, access_file=access_file)
    environment.update(extra_env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            voila_command(
                port=port,
                notebook=notebook,
                access_file=access_file,
                pool_size=pool_size,
            ),
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = DashboardServer(f"http://{HOST}:{port}/", port, process, log_path, mart)
    try:
        _wait_until_answering(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def demo_mart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo mart at scale 0.2 in a session folder; tests only read it."""
    from cockpit.demo import build_demo

    path = tmp_path_factory.mktemp("mart") / "demo.duckdb"
    build_demo(path, scale=DEMO_SCALE)
    return path


@pytest.fixture(scope="session")
def access_file(demo_mart: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Access file with a token for every test viewer."""
    return write_access_file(
        tmp_path_factory.mktemp("access") / "access.yaml", demo_mart
    )


@pytest.fixture(scope="session")
def dashboard_server(
    demo_mart: Path, access_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DashboardServer]:
    """Voilà serving the demo mart with access control; no test writes through it.

    Background preparation of other filter values is off, so pages opened
    one after another do not compete with it for the two test cores.
    """
    with running_server(
        demo_mart,
        access_file,
        tmp_path_factory.mktemp("voila"),
        extra_env={"COCKPIT_PREFETCH": "0"},
    ) as server:
        yield server


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Debian's chromium; skips (or fails with COCKPIT_REQUIRE_BROWSER=1) without it."""
    if CHROMIUM.exists():
        return CHROMIUM
    reason = (
        f"{CHROMIUM} not found; install Debian's chromium package "
        "(apt-get install chromium) to run the browser tests"
    )
    if os.environ.get("COCKPIT_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + " (COCKPIT_REQUIRE_BROWSER=1 forbids skipping)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser(chromium_path: Path):
    """One headless Chromium for the whole session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def contexts(browser):
    """Return a function giving one browser context (own cookies) per name."""
    opened: dict[str, object] = {}

    def context(name: str, **options):
        if name not in opened:
            opened[name] = browser.new_context(
                viewport={"width": 1280, "height": 900}, **options
            )
        return opened[name]

    yield context
    for item in opened.values():
        item.close()


@pytest.fixture(scope="module")
def screenshot_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder under pytest's tmp path for the screenshots of one test module."""
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def save_screenshot(screenshot_folder: Path) -> Callable[[object, str], Path]:
    """Return a function that saves a screenshot of the whole dashboard.

    The viewport is stretched to the page's height for the shot, because
    Voilà's page scrolls inside its own element. The file goes to the
    module's tmp folder and is copied to test-artifacts/screenshots/
    (ignored by git) for people to look at.
    """

    def save(page, step: str) -> Path:
        path = screenshot_folder / f"{step}.png"
        # Voilà's page scrolls inside an element, not the window: scroll every
        # ancestor of the dashboard back to the top and measure the dashboard.
        height = page.evaluate(
            """() => {
              const box = document.querySelector('.cockpit-dashboard') || document.body;
              for (let el = box; el; el = el.parentElement) { el.scrollTop = 0; }
              window.scrollTo(0, 0);
              const rect = box.getBoundingClientRect();
              return Math.ceil(rect.top + rect.height);
            }"""
        )
        page.set_viewport_size(
            {"width": 1280, "height": max(900, min(height + 40, 8000))}
        )
        page.screenshot(path=str(path), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, ARTIFACTS / path.name)
        return path

    return save


def expected_tiles(
    mart: Path, scope: Scope, period: str = "year", level: str | None = None
) -> dict[str, str]:
    """Tile texts for `scope` and a named period, from kpi_values and project_attainment.

    `level` is the projection level (company, region, team or rep_id) and
    defaults to the finest of region, team and rep_id the scope sets.
    """
    from cockpit.projection import project_attainment

    with connect(mart, read_only=True) as con:
        currency = con.execute(
            "SELECT value FROM mart_meta WHERE key = 'currency'"
        ).fetchone()[0]
        resolved = resolve_period(period, AS_OF)
        names = [name for name in TILES if name not in PROJECTION]
        values = kpi_values(con, names, scope=scope, period=resolved, as_of=AS_OF)
        if level is None:
            level = (
                "rep_id"
                if scope.rep_id
                else "team"
                if scope.team
                else "region"
                if scope.region
                else "company"
            )
        table = project_attainment(
            con, AS_OF, level=level, scope=scope, period=resolved
        )
    if level != "company":
        table = table[table[level] == getattr(scope, level)]
    for name in PROJECTION:
        value = table[name].iloc[0] if not table.empty else None
        values[name] = None if value is None or value != value else float(value)
    from cockpit.kpi import KPIS

    return {
        name: format_value(
            values[name], UNITS.get(name) or KPIS[name].unit, currency=currency
        )
        for name in TILES
    }


def tile_texts(page) -> dict[str, str]:
    """Texts the page's tiles show now."""
    return page.evaluate(
        """(names) => Object.fromEntries(names.map((name) => {
          const el = document.querySelector(`.kpi-tile[data-kpi="${name}"] .kpi-value`);
          return [name, el ? el.textContent.trim() : null];
        }))""",
        list(TILES),
    )


def open_dashboard(context, url: str):
    """Open `url` in a new page of `context` and wait until every tile has a value."""
    page = context.new_page()
    page.goto(url, wait_until="commit", timeout=TIMEOUT_MS)
    page.wait_for_function(TILES_FILLED, arg=list(TILES), timeout=TIMEOUT_MS)
    return page


def wait_idle(page, tab: str = ".cockpit-performance") -> None:
    """Wait until the tab's status line no longer says it is updating."""
    page.wait_for_function(IDLE, arg=tab, timeout=TIMEOUT_MS)


def wait_tiles(page, expected: dict[str, str]) -> None:
    """Wait until the tiles show `expected`; fail with what they show otherwise."""
    try:
        page.wait_for_function(TILES_SHOW, arg=expected, timeout=TIMEOUT_MS)
    except Exception as exc:  # playwright's TimeoutError; show what differs
        shown = tile_texts(page)
        differ = {
            k: (shown.get(k), v) for k, v in expected.items() if shown.get(k) != v
        }
        raise AssertionError(f"tiles differ (shown, expected): {differ}") from exc
