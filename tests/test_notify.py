"""Notifications sent to a real SMTP server and a real HTTP server on 127.0.0.1.

The SMTP server is aiosmtpd's, the HTTP server is http.server's; both are
started by the fixtures on free loopback ports and stopped afterwards.
The mart is the hand-built one of tests/registry_mart.py at S3.
"""

from __future__ import annotations

import json
import socket
import threading
from datetime import date
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from cockpit.alerts import evaluate_alerts, parse_rules
from cockpit.errors import NotifyError
from cockpit.mart import connect
from cockpit.notify import (
    build_notification,
    check_host,
    post_webhook,
    recent_wins,
    send_email,
    write_digest,
)
from tests.registry_mart import S3, build_registry_mart

SINCE = date(2025, 5, 1)
RULES = """
rules:
  - {name: slipped, check: deal_slips, min_slips: 2}
  - {name: stale, check: stale_deals, days: 30, severity: low}
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Inbox:
    """aiosmtpd handler that keeps every envelope it receives."""

    def __init__(self) -> None:
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 Message accepted"


@pytest.fixture
def smtp():
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        yield controller, inbox
    finally:
        controller.stop()


def _http_server(status: int):
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            received.append(
                {
                    "path": self.path,
                    "type": self.headers["Content-Type"],
                    "body": self.rfile.read(length),
                }
            )
            self.send_response(status)
            self.end_headers()

        def log_message(self, format, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread, received


@pytest.fixture
def webhook():
    server, thread, received = _http_server(204)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/team", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def failing_webhook():
    server, thread, _ = _http_server(500)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/team"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    path = build_registry_mart(tmp_path_factory.mktemp("notify") / "mart.duckdb")
    reader = connect(path, read_only=True)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def notification(con):
    alerts = evaluate_alerts(con, parse_rules(RULES), S3)
    return build_notification(con, "T1", S3, alerts, since=SINCE)


# --- content ----------------------------------------------------------------------


def test_recent_wins(con):
    wins = recent_wins(con, SINCE, S3)
    # D3 (2000) is the only deal won after 1 May.
    assert wins["opportunity_id"].tolist() == ["D3"]
    assert wins["amount"].tolist() == [2000.0]


def test_recent_wins_bad_window(con):
    with pytest.raises(NotifyError, match="before as_of"):
        recent_wins(con, S3, SINCE)


def test_notification_subject(notification):
    assert (
        notification.subject
        == "Team T1, 2025-05-16: 1 win(s) worth EUR 2,000, 2 alert(s)"
    )


def test_notification_team_alerts(notification):
    # D1 slipped twice and D2 is stale; both belong to team T1.
    assert notification.alerts["key"].tolist() == ["D1", "D2"]


def test_notification_other_team(con):
    alerts = evaluate_alerts(con, parse_rules(RULES), S3)
    other = build_notification(con, "T2", S3, alerts, since=SINCE)
    assert other.alerts.empty
    assert other.wins.empty


def test_notification_text_lists_win(notification):
    assert "D3: EUR 2,000, R1, account a1, closed 2025-05-08" in notification.text


# --- e-mail --------------------------------------------------------------------------


def test_email_arrives(smtp, notification):
    controller, inbox = smtp
    send_email(
        notification,
        ["team-t1@example.test"],
        "cockpit@example.test",
        host=controller.hostname,
        port=controller.port,
    )
    assert len(inbox.envelopes) == 1
    envelope = inbox.envelopes[0]
    assert envelope.mail_from == "cockpit@example.test"
    assert envelope.rcpt_tos == ["team-t1@example.test"]


def test_email_content(smtp, notification):
    controller, inbox = smtp
    send_email(
        notification,
        ["a@example.test", "b@example.test"],
        "cockpit@example.test",
        host="127.0.0.1",
        port=controller.port,
    )
    message = message_from_bytes(inbox.envelopes[0].content, policy=default_policy)
    assert message["Subject"] == notification.subject
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "D3: EUR 2,000" in text
    assert "<td>D3</td>" in html
    assert inbox.envelopes[0].rcpt_tos == ["a@example.test", "b@example.test"]


def test_email_server_down(notification):
    port = _free_port()
    with pytest.raises(NotifyError, match=f"127.0.0.1:{port}"):
        send_email(
            notification,
            ["a@example.test"],
            "c@example.test",
            "127.0.0.1",
            port,
            timeout=2,
        )


def test_email_remote_refused(notification):
    with pytest.raises(NotifyError, match="not a loopback"):
        send_email(
            notification, ["a@example.test"], "c@example.test", host="192.0.2.10"
        )


def test_email_needs_recipient(notification):
    with pytest.raises(NotifyError, match="no recipient"):
        send_email(notification, [], "c@example.test")


def test_email_bad_address(notification):
    with pytest.raises(NotifyError, match="'team-t1'"):
        send_email(notification, ["team-t1"], "c@example.test")


# --- webhook -------------------------------------------------------------------------


def test_webhook_posts_json(webhook, notification):
    url, received = webhook
    status = post_webhook(notification, url)
    assert status == 204
    assert len(received) == 1
    assert received[0]["path"] == "/hooks/team"
    assert received[0]["type"].startswith("application/json")


def test_webhook_payload(webhook, notification):
    url, received = webhook
    post_webhook(notification, url)
    payload = json.loads(received[0]["body"])
    assert payload["team"] == "T1"
    assert payload["as_of"] == "2025-05-16"
    assert [win["opportunity_id"] for win in payload["wins"]] == ["D3"]
    assert payload["wins"][0]["closed_date"] == "2025-05-08"
    assert [alert["key"] for alert in payload["alerts"]] == ["D1", "D2"]


def test_webhook_http_error(failing_webhook, notification):
    with pytest.raises(NotifyError, match="HTTP 500"):
        post_webhook(notification, failing_webhook)


def test_webhook_remote_refused(notification):
    with pytest.raises(NotifyError, match="not a loopback"):
        post_webhook(notification, "https://hooks.example.test/team")


def test_webhook_scheme_refused(notification):
    with pytest.raises(NotifyError, match="not an http"):
        post_webhook(notification, "ftp://127.0.0.1/team")


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "127.8.9.10", "::1", "[::1]"]
)
def test_loopback_hosts_allowed(host):
    check_host(host)


# --- digest ----------------------------------------------------------------------------


def test_digest_markdown(tmp_path, notification):
    path = write_digest(notification, tmp_path / "digests" / "t1.md")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# Team T1, as of 2025-05-16")
    assert "| D3 | R1 | a1 | EUR 2,000 | 2025-05-08 |" in text
    assert "## Alerts: 2" in text


def test_digest_html(tmp_path, notification):
    text = write_digest(notification, tmp_path / "t1.html").read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<title>Team T1, 2025-05-16" in text


def test_digest_bad_suffix(tmp_path, notification):
    with pytest.raises(NotifyError, match=r"\.md"):
        write_digest(notification, tmp_path / "t1.txt")
