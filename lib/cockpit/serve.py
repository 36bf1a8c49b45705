"""Serve the dashboard notebook with Voilà on the loopback interface.

The server renders notebooks/dashboard.ipynb only: no file tree, no other
file, code cells stripped, tracebacks hidden from viewers (Voilà's
`show_tracebacks` stays off and a failing cell shows `CELL_ERROR_TEXT`).
The page uses the "cockpit" Voilà template shipped under
cockpit/templates/jupyter, which leaves out the stock template's CDN
stylesheets, so the browser fetches every file from this server.

With an access file, every request must come from a user of that file
(`cockpit.voila_auth`), and each dashboard kernel shows only that user's
scope. Kernels are preheated: a pool of kernels runs the notebook up to the
point where it needs the viewer, so a page opens without waiting for the
mart to load.

Voilà itself listens on 127.0.0.1 only; put a reverse proxy in front of it
to reach it from other machines (docs/dashboards.md).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from cockpit.access import ACCESS_VARIABLE, VIEWER_HEADER, VIEWER_VARIABLE, load_access
from cockpit.errors import MartError, ParameterError, ServeError
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

#: Preheated kernels kept ready per notebook. Each keeps a copy of the mart in
#: memory (a kernel measured 0.55 GB resident with a mart of 1 M invoice
#: lines), so raise it with care.
POOL_SIZE = 1

#: Seconds after a preheated kernel is taken before its replacement starts, so
#: the new kernel's start-up does not compete with the first page for the CPU.
REFILL_DELAY = 4.0

#: Identity provider class Voilà loads when an access file is given.
IDENTITY_PROVIDER = "cockpit.voila_auth.CockpitIdentityProvider"

#: Text shown in place of a failing cell's error. Voilà (0.5) puts "There was
#: an error when executing cell [n]." before it.
CELL_ERROR_TEXT = (
    "This part of the dashboard cannot be shown. Please reload the page or "
    "tell the commercial operations hub; the details are in the server log."
)


def voila_command(
    port: int = 8866,
    notebook: str | Path = DASHBOARD_NOTEBOOK,
    open_browser: bool = False,
    access_file: str | Path | None = None,
    pool_size: int = POOL_SIZE,
) -> list[str]:
    """Return the argument list that starts Voilà on `HOST`:`port` for `notebook`.

    Run it with the environment of `voila_environment`, which gives the
    notebook its mart. Voilà does not move to another port when `port` is
    taken (`port_retries=0`); it exits with an error instead. With
    `access_file`, users sign in as that file defines and the kernels learn
    the user from the X-Cockpit-Viewer header. `pool_size` preheated
    kernels wait for requests; 0 starts a kernel per request instead.
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
        f"--VoilaExecutor.cell_error_instruction={CELL_ERROR_TEXT}",
        "--VoilaConfiguration.allow_template_override=NO",
        "--VoilaConfiguration.allow_theme_override=NO",
        # No file of the notebook folder is served, images included.
        "--VoilaConfiguration.file_denylist=.*",
        # Code highlighting is not needed on pages without code.
        "--VoilaConfiguration.extension_denylist=jupyterlab_pygments",
    ]
    if pool_size > 0:
        command += [
            "--VoilaConfiguration.preheat_kernel=True",
            f"--VoilaConfiguration.default_pool_size={pool_size}",
            f"--VoilaKernelManager.fill_delay={REFILL_DELAY}",
        ]
    if access_file is not None:
        command += [
            f"--Voila.identity_provider_class={IDENTITY_PROVIDER}",
            f"--CockpitIdentityProvider.access_file={Path(access_file).resolve()}",
            f"--VoilaConfiguration.http_header_envs={VIEWER_HEADER}",
        ]
    if not open_browser:
        command.append("--no-browser")
    return command


def voila_environment(
    mart: str | Path,
    base: Mapping[str, str] | None = None,
    access_file: str | Path | None = None,
) -> dict[str, str]:
    """Return the environment for `voila_command`: `base` (default os.environ) plus

    COCKPIT_MART set to the absolute path of `mart`, and JUPYTER_PATH
    starting with `TEMPLATE_ROOT` so that Voilà finds the cockpit template.
    With `access_file`, COCKPIT_ACCESS names it, so kernels enforce it. A
    viewer name or access file inherited from `base` is removed, because
    only the server may set them.
    """
    environment = dict(os.environ if base is None else base)
    environment.pop(VIEWER_VARIABLE, None)
    environment.pop(ACCESS_VARIABLE, None)
    environment[MART_VARIABLE] = str(Path(mart).resolve())
    if access_file is not None:
        environment[ACCESS_VARIABLE] = str(Path(access_file).resolve())
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


def check_access_file(access_file: str | Path, mart: str | Path) -> None:
    """Check the access file and that every region, team and seller it names exists.

    Raises ParameterError listing every problem.
    """
    from cockpit.access import check_access_against_mart
    from cockpit.mart import connect

    access = load_access(access_file)
    with connect(mart, read_only=True) as con:
        problems = check_access_against_mart(access, con)
    if problems:
        raise ParameterError("\n".join(problems))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def serve_dashboards(
    mart: str | Path,
    port: int = 8866,
    access_file: str | Path | None = None,
    open_browser: bool = False,
) -> int:
    """Serve the dashboards of `mart` on http://127.0.0.1:`port`/ until stopped.

    Blocks while Voilà runs and returns its exit code; a Voilà stopped by a
    signal gives 128 + the signal number. On Ctrl-C, Voilà gets SIGTERM
    and STOP_TIMEOUT seconds to stop before it is killed. Without
    `access_file` every viewer sees the whole company, read only, and a
    warning is logged.

    Raises MartError when `mart` does not exist, ParameterError when the
    access file is invalid or names a region, team or seller the mart
    lacks, and ServeError when the notebook is missing or the port is
    taken.
    """
    mart = Path(mart)
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
    if access_file is not None:
        check_access_file(access_file, mart)
    else:
        logger.warning(
            "no --access file: every viewer sees the whole company; keep the "
            "server private"
        )
    check_port(port)

    command = voila_command(
        port=port, open_browser=open_browser, access_file=access_file
    )
    logger.info(
        "serving the dashboards of %s at http://%s:%d/ (Ctrl-C stops it)",
        mart,
        HOST,
        port,
    )
    logger.debug("voila command: %s", command)
    process = subprocess.Popen(
        command, env=voila_environment(mart, access_file=access_file)
    )
    # A service manager stops the command with SIGTERM; treat it like Ctrl-C
    # so Voilà and its kernels are stopped too instead of left orphaned.
    previous = signal.signal(signal.SIGTERM, _interrupt)
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
    finally:
        signal.signal(signal.SIGTERM, previous)
    if returncode < 0:
        returncode = 128 - returncode
    logger.info("dashboard server exited with code %d", returncode)
    return returncode
