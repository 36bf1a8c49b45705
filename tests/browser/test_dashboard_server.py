"""The Voilà server of `cockpit serve --access`, checked over plain HTTP (no browser)."""

from __future__ import annotations

import re

import pytest

from .conftest import http_get, running_server, token_of


@pytest.fixture(scope="module")
def rendered_page(dashboard_server) -> str:
    """HTML of the CEO's page, with its notebook executed by the server."""
    status, body = http_get(
        dashboard_server.url,
        timeout=90.0,
        headers={"Authorization": f"token {token_of('ceo')}"},
    )
    assert status == 200, dashboard_server.log_tail()
    return body


def test_page_strips_code(rendered_page):
    for fragment in (
        "open_dashboard(",
        "prepare_dashboard(",
        "COCKPIT_MART",
        "import os",
    ):
        assert fragment not in rendered_page, fragment


def test_page_has_widget_output(rendered_page):
    assert "application/vnd.jupyter.widget-view+json" in rendered_page


def test_page_links_stay_local(rendered_page):
    external = re.findall(r'(?:src|href)="(https?://[^"]+)"', rendered_page)
    assert external == []


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
    assert "cockpit.dashboard: dashboard opened for ceo (whole company)" in (
        dashboard_server.log()
    )


def test_token_not_logged(rendered_page, dashboard_server):
    assert token_of("ceo") not in dashboard_server.log()


@pytest.fixture(scope="module")
def header_server(demo_mart, tmp_path_factory):
    """A server that trusts X-Forwarded-User, as behind a reverse proxy."""
    folder = tmp_path_factory.mktemp("header-mode")
    access = folder / "access.yaml"
    access.write_text(
        "authentication:\n  method: header\n"
        "users:\n  head.north:\n    level: region\n    region: North\n"
    )
    with running_server(
        demo_mart, access, folder, pool_size=0, extra_env={"COCKPIT_PREFETCH": "0"}
    ) as server:
        yield server


def test_header_mode_serves_user(header_server):
    status, body = http_get(
        header_server.url,
        timeout=90.0,
        headers={"X-Forwarded-User": "head.north", "X-Cockpit-Viewer": "ceo"},
    )
    assert status == 200
    assert "application/vnd.jupyter.widget-view+json" in body
    assert "dashboard opened for head.north (region North)" in header_server.log()
    assert "dashboard opened for ceo" not in header_server.log()


def test_header_mode_rejects_unknown_user(header_server):
    status, _ = http_get(
        header_server.url, headers={"X-Forwarded-User": "mallory"}, follow=True
    )
    assert status == 403


def test_header_mode_rejects_missing_header(header_server):
    status, _ = http_get(header_server.url, follow=True)
    assert status == 403
