"""`cockpit serve`: the Voilà command, its checks and its exit code."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cockpit import serve
from cockpit.access import ACCESS_VARIABLE, VIEWER_VARIABLE
from cockpit.cli import main
from cockpit.errors import MartError, ParameterError, ServeError
from cockpit.serve import (
    CELL_ERROR_TEXT,
    DASHBOARD_NOTEBOOK,
    HOST,
    IDENTITY_PROVIDER,
    TEMPLATE_NAME,
    TEMPLATE_ROOT,
    serve_dashboards,
    voila_command,
    voila_environment,
)

TEMPLATE_DIR = TEMPLATE_ROOT / "voila" / "templates" / TEMPLATE_NAME


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@pytest.fixture
def mart_file(tmp_path: Path) -> Path:
    """A file where the mart should be; serve only checks that it exists."""
    path = tmp_path / "mart.duckdb"
    path.write_bytes(b"")
    return path


def test_command_listens_on_loopback():
    assert "--Voila.ip=127.0.0.1" in voila_command()


def test_command_keeps_port():
    command = voila_command(port=9123)
    assert "--port=9123" in command
    assert "--Voila.port_retries=0" in command


def test_command_serves_notebook_only():
    assert str(DASHBOARD_NOTEBOOK.resolve()) in voila_command()


def test_command_strips_code():
    assert "--strip_sources=True" in voila_command()


def test_command_hides_tracebacks():
    assert "--VoilaConfiguration.show_tracebacks=False" in voila_command()


def test_command_uses_template():
    assert f"--template={TEMPLATE_NAME}" in voila_command()


def test_command_browser_flag():
    assert "--no-browser" in voila_command()
    assert "--no-browser" not in voila_command(open_browser=True)


def test_environment_sets_mart(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    environment = voila_environment("demo.duckdb", base={})
    assert environment["COCKPIT_MART"] == str(tmp_path / "demo.duckdb")


def test_environment_prepends_template():
    environment = voila_environment("m.duckdb", base={"JUPYTER_PATH": "/opt/j"})
    assert environment["JUPYTER_PATH"] == os.pathsep.join(
        [str(TEMPLATE_ROOT), "/opt/j"]
    )


def test_template_extends_lab():
    assert (TEMPLATE_DIR / "conf.json").read_text().count('"lab"') == 1


def test_template_has_no_remote_url():
    template = (TEMPLATE_DIR / "index.html.j2").read_text()
    assert re.findall(r"https?://", template) == []


def test_notebook_reads_mart_variable():
    assert "COCKPIT_MART" in DASHBOARD_NOTEBOOK.read_text()


def test_missing_mart_raises(tmp_path):
    with pytest.raises(MartError, match="cockpit demo"):
        serve_dashboards(tmp_path / "none.duckdb", port=free_port())


def test_command_with_access_sets_sign_in(tmp_path):
    command = voila_command(access_file=tmp_path / "access.yaml")
    assert f"--Voila.identity_provider_class={IDENTITY_PROVIDER}" in command
    assert (
        f"--CockpitIdentityProvider.access_file={tmp_path / 'access.yaml'}" in command
    )
    assert "--VoilaConfiguration.http_header_envs=X-Cockpit-Viewer" in command


def test_command_without_access_has_no_sign_in():
    assert not any("identity_provider" in part for part in voila_command())


def test_command_preheats_kernels():
    command = voila_command(pool_size=3)
    assert "--VoilaConfiguration.preheat_kernel=True" in command
    assert "--VoilaConfiguration.default_pool_size=3" in command


def test_command_without_pool():
    assert not any("preheat" in part for part in voila_command(pool_size=0))


def test_command_serves_no_files():
    command = voila_command()
    assert "--VoilaConfiguration.file_denylist=.*" in command
    assert "--VoilaConfiguration.allow_template_override=NO" in command


def test_command_cell_error_text():
    assert (
        f"--VoilaExecutor.cell_error_instruction={CELL_ERROR_TEXT}" in voila_command()
    )


def test_environment_sets_access(tmp_path):
    environment = voila_environment(
        "m.duckdb", base={}, access_file=tmp_path / "a.yaml"
    )
    assert environment[ACCESS_VARIABLE] == str(tmp_path / "a.yaml")


def test_environment_drops_inherited_viewer():
    base = {VIEWER_VARIABLE: "ceo", ACCESS_VARIABLE: "/elsewhere.yaml"}
    environment = voila_environment("m.duckdb", base=base)
    assert VIEWER_VARIABLE not in environment
    assert ACCESS_VARIABLE not in environment


def test_access_file_checked_against_mart(small_demo_mart, tmp_path):
    access = tmp_path / "access.yaml"
    access.write_text("users:\n  head:\n    level: region\n    region: Nowhere\n")
    with pytest.raises(ParameterError, match="region 'Nowhere' is not in the mart"):
        serve_dashboards(small_demo_mart, port=free_port(), access_file=access)


def test_invalid_access_file_rejected(small_demo_mart, tmp_path):
    access = tmp_path / "access.yaml"
    access.write_text("users:\n  head:\n    level: region\n")
    with pytest.raises(ParameterError, match="needs a region"):
        serve_dashboards(small_demo_mart, port=free_port(), access_file=access)


def test_port_in_use_raises(mart_file):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServeError, match=f"port {port}"):
            serve_dashboards(mart_file, port=port)


def test_port_out_of_range_raises(mart_file):
    with pytest.raises(ServeError, match="70000"):
        serve_dashboards(mart_file, port=70000)


def test_exit_code_passed_through(mart_file, monkeypatch):
    monkeypatch.setattr(
        serve,
        "voila_command",
        lambda **_: [sys.executable, "-c", "raise SystemExit(3)"],
    )
    assert serve_dashboards(mart_file, port=free_port()) == 3


def test_signal_exit_code(mart_file, monkeypatch):
    script = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    monkeypatch.setattr(
        serve, "voila_command", lambda **_: [sys.executable, "-c", script]
    )
    assert serve_dashboards(mart_file, port=free_port()) == 128 + signal.SIGTERM


def test_cli_reports_missing_mart(tmp_path, capsys):
    assert main(["serve", "--mart", str(tmp_path / "none.duckdb")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_cli_signal_stops_voila(mart_file, tmp_path, stop_signal):
    port = free_port()
    log_path = tmp_path / "serve.log"
    command = [
        sys.executable,
        "-m",
        "cockpit.cli",
        "-v",
        "serve",
        "--mart",
        str(mart_file),
    ]
    command += ["--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
                if client.connect_ex((HOST, port)) == 0:
                    break
            assert process.poll() is None, log_path.read_text()
            time.sleep(0.2)
        else:
            pytest.fail(f"Voilà did not listen on {port}:\n{log_path.read_text()}")
        process.send_signal(stop_signal)
        returncode = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log_text = log_path.read_text()
    stopping = re.search(r"stopping the dashboard server \(pid (\d+)\)", log_text)
    assert returncode == 0, log_text
    assert stopping, log_text
    assert not Path(f"/proc/{stopping[1]}").exists()
