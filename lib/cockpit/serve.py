"""Serve the KPI dashboard notebook with Voilà on the loopback interface.

The server renders notebooks/dashboard.ipynb only: no file tree, code cells
stripped, tracebacks hidden from viewers (Voilà's `show_tracebacks` stays
off). The page uses the "cockpit" Voilà template shipped under
cockpit/templates/jupyter, which leaves out the stock template's CDN
stylesheets, so the browser fetches every file from this server.

Put a reverse proxy with authentication in front of it to reach it from
other machines; Voilà itself listens on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from cockpit.errors import MartError, ServeError
from cockpit.paths import NOTEBOOKS_DIR, TEMPLATES_DIR

logger = logging.getLogger(__name__)

#: The only interface the server listens on.
HOST = "127.0.0.1"

#: Notebook the server renders.
DASHBOARD_NOTEBOOK = NOTEBOOKS_DIR / "dashboard.ipynb"

#: Jupyter data folder containing voila/templates/cockpit, put first in JUPYTER_PATH.
TEMPLATE_ROOT = TEMPLATES_DIR / "jupyter"

#: Name of the Voilà template of the dashboards.
TEMPLATE_NAME = "cockpit"

#: Environment variable that gives the notebook its mart file.
MART_VARIABLE = "COCKPIT_MART"

#: Seconds to wait for Voilà to stop after an interrupt before killing it.
STOP_TIMEOUT = 10.0


def voila_command(
    port: int = 8866,
    notebook: str | Path = DASHBOARD_NOTEBOOK,
    open_browser: bool = False,
) -> list[str]:
    """Return the argument list that starts Voilà on `HOST`:`port` for `notebook`.

    Run it with the environment of `voila_environment`, which gives the
    notebook its mart. Voilà does not move to another port when `port` is
    taken (`port_retries=0`); it exits with an error instead.
    """
    command = [
        sys.executable,
        "-m",
        "voila",
        str(Path(notebook).resolve()),
        f"--port={port}",
        f"--Voila.ip={HOST}",
        "--Voila.port_retries=0",
        f"--template={TEMPLATE_NAME}",
        "--theme=light",
        "--strip_sources=True",
        "--VoilaConfiguration.show_tracebacks=False",
    ]
    if not open_browser:
        command.append("--no-browser")
    return command


def voila_environment(
    mart: str | Path, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return the environment for `voila_command`: `base` (default os.environ) plus

    COCKPIT_MART set to the absolute path of `mart`, and JUPYTER_PATH
    starting with `TEMPLATE_ROOT` so that Voilà finds the cockpit template.
    """
    environment = dict(os.environ if base is None else base)
    environment[MART_VARIABLE] = str(Path(mart).resolve())
    paths = [str(TEMPLATE_ROOT)]
    if environment.get("JUPYTER_PATH"):
        paths.append(environment["JUPYTER_PATH"])
    environment["JUPYTER_PATH"] = os.pathsep.join(paths)
    return environment


def check_port(port: int) -> None:
    """Raise ServeError when `port` is out of range or already in use on `HOST`."""
    if not 1 <= port <= 65535:
        raise ServeError(
            f"port {port} is out of range; pass --port between 1 and 65535"
        )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise ServeError(
                f"port {port} on {HOST} is in use ({exc.strerror}); "
                "stop the other server or pass another --port"
            ) from exc


def serve_dashboards(
    mart: str | Path,
    port: int = 8866,
    access_file: str | Path | None = None,
    open_browser: bool = False,
) -> int:
    """Serve the dashboard of `mart` on http://127.0.0.1:`port`/ until stopped.

    Blocks while Voilà runs and returns its exit code; a Voilà stopped by a
    signal gives 128 + the signal number. On Ctrl-C, Voilà gets SIGTERM
    and STOP_TIMEOUT seconds to stop before it is killed.

    Raises MartError when `mart` does not exist, and ServeError when the
    notebook is missing, the port is taken, or `access_file` is given:
    viewer-specific scopes are not implemented yet, and serving the whole
    company to a viewer who should see one region would leak data.
    """
    mart = Path(mart)
    if access_file is not None:
        # TODO: map viewers to scopes from the access file once viewers
        # can be identified (e.g. by a header set by an authenticating proxy).
        raise ServeError(
            f"access file {access_file}: viewer-specific scopes are not "
            "supported yet; serve without --access (every viewer then sees "
            "the whole company) or keep the server private"
        )
    if not mart.is_file():
        raise MartError(
            f"mart file {mart} does not exist; build one with "
            f"`cockpit demo --mart {mart}` or `cockpit ingest ... --mart {mart}`"
        )
    if not DASHBOARD_NOTEBOOK.is_file():
        raise ServeError(
            f"dashboard notebook {DASHBOARD_NOTEBOOK} not found; "
            "set COCKPIT_NOTEBOOKS to the folder that contains dashboard.ipynb"
        )
    check_port(port)

    command = voila_command(port=port, open_browser=open_browser)
    logger.info(
        "serving the dashboard of %s at http://%s:%d/ (Ctrl-C stops it)",
        mart,
        HOST,
        port,
    )
    logger.debug("voila command: %s", command)
    process = subprocess.Popen(command, env=voila_environment(mart))
    try:
        returncode = process.wait()
    except KeyboardInterrupt:
        logger.info("stopping the dashboard server (pid %d)", process.pid)
        process.terminate()
        try:
            returncode = process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning(
                "Voilà (pid %d) did not stop within %.0f s; killing it",
                process.pid,
                STOP_TIMEOUT,
            )
            process.kill()
            returncode = process.wait()
    if returncode < 0:
        returncode = 128 - returncode
    logger.info("dashboard server exited with code %d", returncode)
    return returncode
