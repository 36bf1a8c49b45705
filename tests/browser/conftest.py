"""Fixtures of the dashboard tests: a demo mart, a Voilà server and Chromium.

The server runs the command `cockpit serve` runs (`voila_command`) as a
subprocess on a free loopback port. The browser is Debian's chromium driven
by Playwright through `executable_path`; Playwright's own browser builds are
not used. Without /usr/bin/chromium the browser tests skip, unless
COCKPIT_REQUIRE_BROWSER=1 makes them fail.
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
from dataclasses import dataclass
from pathlib import Path

import pytest

from cockpit.serve import HOST, voila_command, voila_environment

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
SERVER_TIMEOUT = 60.0
DEMO_SCALE = 0.2


@dataclass
class DashboardServer:
    """A running Voilà subprocess and the URL it serves."""

    url: str
    port: int
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        """Return the end of the server's combined stdout and stderr."""
        return self.log_path.read_text(errors="replace")[-chars:]


def free_port() -> int:
    """Return a TCP port on the loopback interface that nothing listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def http_get(url: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET `url` without any proxy; return status and body, also for 4xx/5xx."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


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


@pytest.fixture(scope="session")
def demo_mart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo mart at scale 0.2 in a session folder."""
    from cockpit.demo import build_demo

    path = tmp_path_factory.mktemp("mart") / "demo.duckdb"
    build_demo(path, scale=DEMO_SCALE)
    return path


@pytest.fixture(scope="session")
def dashboard_server(
    demo_mart: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DashboardServer]:
    """Voilà serving the dashboard of the demo mart, as `cockpit serve` starts it."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("voila") / "voila.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            voila_command(port=port),
            env=voila_environment(demo_mart),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = DashboardServer(f"http://{HOST}:{port}/", port, process, log_path)
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


@pytest.fixture(scope="module")
def browser_context(chromium_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """A headless Chromium context with a fresh user data folder."""
    from playwright.sync_api import sync_playwright

    user_data = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(user_data),
            executable_path=str(chromium_path),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def screenshot_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder under pytest's tmp path for the screenshots of one test module."""
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def save_screenshot(screenshot_folder: Path) -> Callable[[object, str], Path]:
    """Return a function that saves a full-page screenshot of a step.

    The file goes to the module's tmp folder and is copied to
    test-artifacts/screenshots/ (ignored by git) for people to look at.
    """

    def save(page, step: str) -> Path:
        path = screenshot_folder / f"{step}.png"
        page.screenshot(path=str(path), full_page=True)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, ARTIFACTS / path.name)
        return path

    return save
