"""A region head cannot reach another region: not by URL, query string or forged widget messages.

The head of North opens the dashboard, then tries to reach region West in
three ways. After each, the tiles must show North's numbers (computed here
with kpi_values), West's revenue must appear nowhere on the page, and the
server log must show that no view of West was computed.

Forged widget messages are sent on the page's own kernel websocket, which
the test relays through Playwright (`page.route_web_socket`): a message
the browser sent is copied with a changed state and sent again, as a
viewer with the browser's developer tools could.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime, timezone

import pytest

from cockpit.kpi import format_value, kpi_values
from cockpit.kpi_periods import resolve_period
from cockpit.mart import connect
from cockpit.scope import Scope

from .conftest import (
    AS_OF,
    TIMEOUT_MS,
    expected_tiles,
    http_get,
    open_dashboard,
    token_of,
    wait_idle,
    wait_tiles,
)

pytestmark = pytest.mark.browser


def decode(message: bytes | str) -> dict:
    """Decode a kernel websocket message (JSON text or the binary v1 protocol)."""
    if isinstance(message, str):
        return json.loads(message)
    count = int.from_bytes(message[:8], "little")
    offsets = [
        int.from_bytes(message[8 + 8 * i : 16 + 8 * i], "little") for i in range(count)
    ]
    parts = [message[offsets[i] : offsets[i + 1]] for i in range(count - 1)]
    header, parent, metadata, content = (json.loads(part) for part in parts[1:5])
    return {
        "channel": parts[0].decode(),
        "header": header,
        "parent_header": parent,
        "metadata": metadata,
        "content": content,
        "buffers": parts[5:],
    }


def encode(message: dict, binary: bool) -> bytes | str:
    """Encode `message` the way `decode` reads it."""
    if not binary:
        return json.dumps({k: v for k, v in message.items() if k != "buffers"})
    parts = [message["channel"].encode()] + [
        json.dumps(message[key]).encode()
        for key in ("header", "parent_header", "metadata", "content")
    ]
    count = len(parts) + 1
    offsets = [8 * (1 + count)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = count.to_bytes(8, "little") + b"".join(
        offset.to_bytes(8, "little") for offset in offsets
    )
    return head + b"".join(parts)


class KernelTap:
    """Relays a page's kernel websocket, keeps what the page sent, and forges messages."""

    def __init__(self, page) -> None:
        self.sent: list[dict] = []
        self.binary = True
        self.server = None
        page.route_web_socket(re.compile(r".*/api/kernels/.*/channels.*"), self._route)

    def _route(self, socket) -> None:
        server = socket.connect_to_server()
        self.server = server

        def from_page(message):
            self.binary = not isinstance(message, str)
            self.sent.append(decode(message))
            server.send(message)

        socket.on_message(from_page)

    def comm_messages(self) -> list[dict]:
        """comm_msg messages the page sent so far."""
        return [m for m in self.sent if m["header"].get("msg_type") == "comm_msg"]

    def forge(self, template: dict, data: dict) -> None:
        """Send a copy of comm message `template` with `data` in place of its data."""
        header = dict(template["header"])
        header["msg_id"] = uuid.uuid4().hex
        header["date"] = datetime.now(timezone.utc).isoformat()
        message = {
            "channel": "shell",
            "header": header,
            "parent_header": {},
            "metadata": {},
            "content": {"comm_id": template["content"]["comm_id"], "data": data},
        }
        self.server.send(encode(message, self.binary))


@pytest.fixture(scope="module")
def west_revenue(demo_mart) -> str:
    with connect(demo_mart, read_only=True) as con:
        value = kpi_values(
            con,
            ["revenue"],
            scope=Scope(region="West"),
            period=resolve_period("year", AS_OF),
            as_of=AS_OF,
        )["revenue"]
    return format_value(value, "currency")


@pytest.fixture(scope="module")
def north(demo_mart) -> dict[str, str]:
    return expected_tiles(demo_mart, Scope(region="North"))


def assert_north_only(page, north, west_revenue, server) -> None:
    wait_tiles(page, north)
    text = page.locator(".cockpit-dashboard").inner_text()
    assert west_revenue not in text
    assert "region West" not in page.locator(".cockpit-header").inner_text()
    assert "performance view of region West" not in server.log()


@pytest.mark.parametrize(
    ("query", "unit"),
    [
        ("region=West", None),
        ("team=West-1", None),
        ("seller=REP-038", None),
        ("region=West&unit=Services", "Services"),
    ],
)
def test_query_string_cannot_widen(
    contexts, dashboard_server, demo_mart, west_revenue, save_screenshot, query, unit
):
    page = open_dashboard(
        contexts("head.north"), dashboard_server.page_url("head.north", query)
    )
    assert "do not have access" in page.locator(".cockpit-notice").first.inner_text()
    expected = expected_tiles(demo_mart, Scope(region="North", business_unit=unit))
    assert_north_only(page, expected, west_revenue, dashboard_server)
    wait_idle(page)
    save_screenshot(page, f"access-query-{query.split('&')[0].replace('=', '-')}")
    page.close()


def test_query_string_targets_tab(contexts, dashboard_server, demo_mart):
    page = contexts("head.north").new_page()
    page.goto(
        dashboard_server.page_url("head.north", "region=West&view=targets"),
        wait_until="commit",
    )
    page.wait_for_selector("table.target-table", timeout=TIMEOUT_MS)
    wait_idle(page, ".cockpit-targets")
    with connect(demo_mart, read_only=True) as con:
        west = [
            row[0]
            for row in con.execute(
                "SELECT name FROM reps WHERE region = 'West' AND name NOT IN "
                "(SELECT name FROM reps WHERE region <> 'West')"
            ).fetchall()
        ]
    table = page.locator("table.target-table").inner_text()
    assert "do not have access" in page.locator(".cockpit-notice").first.inner_text()
    assert west
    for name in west:
        assert name not in table, name
    page.close()


def test_forged_viewer_header_ignored(browser, dashboard_server, north, west_revenue):
    context = browser.new_context(
        extra_http_headers={"X-Cockpit-Viewer": "ceo", "X-Forwarded-User": "ceo"}
    )
    page = open_dashboard(context, dashboard_server.page_url("head.north"))
    assert_north_only(page, north, west_revenue, dashboard_server)
    assert (
        "signed in as Test head.north" in page.locator(".cockpit-header").inner_text()
    )
    context.close()


def test_forged_widget_messages(
    contexts, dashboard_server, demo_mart, north, west_revenue, save_screenshot
):
    page = contexts("head.north").new_page()
    tap = KernelTap(page)
    page.goto(dashboard_server.page_url("head.north"), wait_until="commit")
    wait_tiles(page, north)
    wait_idle(page)

    # Legitimate actions first, to learn the widgets' comm ids.
    page.select_option(".filter-business-unit select", label="Services")
    wait_tiles(
        page, expected_tiles(demo_mart, Scope(region="North", business_unit="Services"))
    )
    unit_update = next(
        m
        for m in reversed(tap.comm_messages())
        if m["content"]["data"].get("method") == "update"
    )
    page.select_option(".filter-business-unit select", label="All business units")
    wait_tiles(page, north)
    wait_idle(page)
    page.locator("button.drill-name", has_text="North-1").first.click()
    team = expected_tiles(demo_mart, Scope(region="North", team="North-1"))
    wait_tiles(page, team)
    wait_idle(page)
    click = next(
        m
        for m in reversed(tap.comm_messages())
        if m["content"]["data"].get("content", {}).get("event") == "click"
    )
    page.locator("button.crumb-0").click()
    wait_tiles(page, north)
    wait_idle(page)

    # An index beyond the drop-down's options is rejected by the kernel.
    tap.forge(
        unit_update, {"method": "update", "state": {"index": 99}, "buffer_paths": []}
    )
    time.sleep(1.0)
    wait_tiles(page, north)

    # Options renamed to West: the kernel keeps its own option values, so
    # index 1 still means the first business unit.
    with connect(demo_mart, read_only=True) as con:
        first_unit = con.execute("SELECT min(business_unit) FROM products").fetchone()[
            0
        ]
    tap.forge(
        unit_update,
        {
            "method": "update",
            "state": {"_options_labels": ["All business units", "West"], "index": 1},
            "buffer_paths": [],
        },
    )
    wait_tiles(
        page, expected_tiles(demo_mart, Scope(region="North", business_unit=first_unit))
    )
    wait_idle(page)
    tap.forge(
        unit_update, {"method": "update", "state": {"index": 0}, "buffer_paths": []}
    )
    wait_tiles(page, north)
    wait_idle(page)

    # A drill button renamed to West and clicked opens the team behind it.
    tap.forge(
        click,
        {"method": "update", "state": {"description": "West"}, "buffer_paths": []},
    )
    tap.forge(click, {"method": "custom", "content": {"event": "click"}})
    wait_tiles(page, team)
    wait_idle(page)
    text = page.locator(".cockpit-dashboard").inner_text()
    assert west_revenue not in text
    assert "region West" not in page.locator(".cockpit-header").inner_text()
    assert "performance view of region West" not in dashboard_server.log()
    save_screenshot(page, "access-forged-messages")
    page.close()


@pytest.mark.parametrize(
    "path",
    [
        "voila/tree",
        "tree",
        "voila/render/dashboard.ipynb",
        "voila/files/dashboard.ipynb",
        "voila/files/../parameters/access.yaml",
        "voila/api/contents/",
    ],
)
def test_other_urls_not_served(dashboard_server, path):
    status, body = http_get(
        f"{dashboard_server.url}{path}",
        headers={"Authorization": f"token {token_of('ceo')}"},
        follow=True,
    )
    assert status in (403, 404), path
    assert "token_sha256" not in body


def test_no_token_redirects_to_login(dashboard_server):
    status, _ = http_get(dashboard_server.url)
    assert status == 302


def test_wrong_token_redirects_to_login(dashboard_server):
    status, _ = http_get(f"{dashboard_server.url}?token=not-a-token")
    assert status == 302


def test_kernel_api_needs_sign_in(dashboard_server):
    status, _ = http_get(f"{dashboard_server.url}api/kernels/{uuid.uuid4()}")
    assert status == 403


def test_login_form_signs_in(contexts, dashboard_server, demo_mart, save_screenshot):
    page = contexts("login-form").new_page()
    page.goto(dashboard_server.url, wait_until="load")
    assert "/login" in page.url
    save_screenshot(page, "access-login-form")
    page.fill("input[type=password]", token_of("head.west"))
    page.press("input[type=password]", "Enter")
    page.wait_for_selector(".kpi-tile", timeout=TIMEOUT_MS)
    wait_tiles(page, expected_tiles(demo_mart, Scope(region="West")))
    page.close()
