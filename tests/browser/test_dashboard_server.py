"""The Voilà server of `cockpit serve`, checked over plain HTTP (no browser)."""

from __future__ import annotations

import re

import pytest

from .conftest import http_get


@pytest.fixture(scope="module")
def rendered_page(dashboard_server) -> str:
    """HTML of the dashboard page, with its notebook executed by the server."""
    status, body = http_get(dashboard_server.url, timeout=60.0)
    assert status == 200, dashboard_server.log_tail()
    return body


def test_page_strips_code(rendered_page):
    for fragment in ("dashboard_view(", "COCKPIT_MART", "import os"):
        assert fragment not in rendered_page, fragment


def test_page_has_widget_output(rendered_page):
    assert "application/vnd.jupyter.widget-view+json" in rendered_page


def test_page_links_stay_local(rendered_page):
    external = re.findall(r'(?:src|href)="(https?://[^"]+)"', rendered_page)
    assert external == []


@pytest.mark.parametrize("path", ["voila/tree", "tree", "voila/render/dashboard.ipynb"])
def test_tree_not_served(dashboard_server, path):
    status, _ = http_get(dashboard_server.url + path)
    assert status in (403, 404), path


def test_notebook_file_not_served(dashboard_server):
    status, _ = http_get(dashboard_server.url + "voila/files/dashboard.ipynb")
    assert status in (403, 404)


def listening_addresses(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on `port`."""
    addresses = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            next(handle)
            for line in handle:
                local, state = line.split()[1], line.split()[3]
                address, port_hex = local.split(":")
                if state == "0A" and int(port_hex, 16) == port:
                    addresses.append(address)
    return addresses


def test_server_listens_on_loopback(dashboard_server):
    addresses = listening_addresses(dashboard_server.port)
    assert addresses
    # 0100007F is 127.0.0.1 in /proc/net/tcp's little-endian hex.
    assert set(addresses) == {"0100007F"}


def test_kernel_logs_reach_server_log(rendered_page, dashboard_server):
    assert "cockpit.dashboard: dashboard refreshed for whole company" in (
        dashboard_server.log_tail(chars=200_000)
    )
