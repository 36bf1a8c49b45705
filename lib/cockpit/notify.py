"""Notifications: recent wins and alerts for a team, by e-mail, webhook or file.

`build_notification` collects a team's deals won since a date and its
alerts into one message with a plain-text and an HTML body. `send_email`
delivers it through an SMTP server (smtplib), `post_webhook` posts it as
JSON to a URL (urllib), and `write_digest` writes it as a Markdown or HTML
file.

Only loopback hosts (localhost, 127.0.0.0/8, ::1) are accepted unless the
caller passes allow_remote=True, so no default and no test setting can send
anything off the machine.
"""

from __future__ import annotations

import html
import ipaddress
import json
import logging
import smtplib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from cockpit.errors import NotifyError
from cockpit.kpi import format_value
from cockpit.mart.store import require_tables
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: SMTP host and port used when none is given: a relay on this machine.
DEFAULT_SMTP_HOST = "localhost"
DEFAULT_SMTP_PORT = 25

#: Seconds to wait for an SMTP or HTTP server.
DEFAULT_TIMEOUT = 10.0

#: Alert columns carried into messages.
_ALERT_FIELDS = ["severity", "rule", "level", "key", "message"]
_WIN_FIELDS = [
    "opportunity_id",
    "rep_id",
    "seller",
    "account_id",
    "amount",
    "closed_date",
]


@dataclass(frozen=True)
class Notification:
    """One message for one team: subject, text and HTML bodies, and the data."""

    team: str
    as_of: date
    since: date
    subject: str
    text: str
    html: str
    wins: pd.DataFrame = field(default_factory=pd.DataFrame)
    alerts: pd.DataFrame = field(default_factory=pd.DataFrame)
    currency: str = "EUR"

    def payload(self) -> dict[str, Any]:
        """Return the notification as a JSON-ready mapping (dates as ISO text)."""
        wins = self.wins.copy()
        if "closed_date" in wins:
            wins["closed_date"] = pd.to_datetime(wins["closed_date"]).dt.strftime(
                "%Y-%m-%d"
            )
        return {
            "team": self.team,
            "as_of": self.as_of.isoformat(),
            "since": self.since.isoformat(),
            "subject": self.subject,
            "text": self.text,
            "currency": self.currency,
            "wins": json.loads(wins.to_json(orient="records")),
            "alerts": json.loads(self.alerts.to_json(orient="records")),
        }


def recent_wins(
    con: duckdb.DuckDBPyConnection,
    since: date,
    as_of: date,
    scope: Scope | None = None,
) -> pd.DataFrame:
    """List the deals won with a close date after `since`, up to `as_of`.

    A deal's state is its latest snapshot on or before `as_of`, which must
    match `scope`. Columns: opportunity_id, rep_id, seller (name),
    account_id, amount, closed_date; largest amount first. Raises
    NotifyError when since is not before as_of.
    """
    if since >= as_of:
        raise NotifyError(
            f"since {since} must be before as_of {as_of}; pass an earlier since"
        )
    require_tables(con, ["opportunities", "reps"])
    scope_sql, scope_params = (scope or Scope()).where("f.")
    frame = con.execute(
        f"""
        WITH states AS (
            SELECT * FROM opportunities WHERE snapshot_date <= ?
            QUALIFY snapshot_date = max(snapshot_date) OVER (PARTITION BY opportunity_id)
        )
        SELECT f.opportunity_id, f.rep_id, r.name AS seller, f.account_id, f.amount,
               f.closed_date
        FROM states f LEFT JOIN reps r ON r.rep_id = f.rep_id
        WHERE f.status = 'won' AND f.closed_date > ? AND f.closed_date <= ?
          AND {scope_sql}
        ORDER BY f.amount DESC NULLS LAST, f.opportunity_id
        """,
        [as_of, since, as_of, *scope_params],
    ).df()
    frame["closed_date"] = pd.to_datetime(frame["closed_date"])
    return frame[_WIN_FIELDS]


def _currency(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute("SELECT value FROM mart_meta WHERE key = 'currency'").fetchone()
    return row[0] if row and row[0] else "EUR"


def build_notification(
    con: duckdb.DuckDBPyConnection,
    team: str,
    as_of: date,
    alerts: pd.DataFrame | None = None,
    since: date | None = None,
) -> Notification:
    """Build the message of `team`: its wins since `since` and its alerts.

    `since` defaults to 7 days before `as_of`. `alerts` is a table from
    `cockpit.alerts.evaluate_alerts`; only rows whose team column equals
    `team` are kept, high severity first. Raises NotifyError when since is
    not before as_of.
    """
    since = since or as_of - timedelta(days=7)
    currency = _currency(con)
    wins = recent_wins(con, since, as_of, Scope(team=team))
    if alerts is None or alerts.empty:
        chosen = pd.DataFrame(columns=_ALERT_FIELDS)
    else:
        chosen = alerts[alerts["team"] == team][_ALERT_FIELDS].reset_index(drop=True)
    won_total = float(wins["amount"].fillna(0).sum())
    subject = (
        f"Team {team}, {as_of:%Y-%m-%d}: {len(wins)} win(s) worth "
        f"{format_value(won_total, 'currency', currency)}, {len(chosen)} alert(s)"
    )
    text = _text_body(team, as_of, since, wins, chosen, currency)
    body = _html_body(team, as_of, since, wins, chosen, currency)
    return Notification(team, as_of, since, subject, text, body, wins, chosen, currency)


def _win_line(row: pd.Series, currency: str) -> str:
    amount = format_value(row["amount"], "currency", currency)
    seller = row["seller"] if isinstance(row["seller"], str) else row["rep_id"]
    return (
        f"{row['opportunity_id']}: {amount}, {seller}, account {row['account_id']}, "
        f"closed {row['closed_date']:%Y-%m-%d}"
    )


def _text_body(
    team: str,
    as_of: date,
    since: date,
    wins: pd.DataFrame,
    alerts: pd.DataFrame,
    currency: str,
) -> str:
    lines = [f"Team {team}, as of {as_of:%Y-%m-%d}", ""]
    lines.append(f"Wins since {since:%Y-%m-%d}: {len(wins)}")
    lines += [f"- {_win_line(row, currency)}" for _, row in wins.iterrows()]
    lines += ["", f"Alerts: {len(alerts)}"]
    lines += [f"- [{row['severity']}] {row['message']}" for _, row in alerts.iterrows()]
    return "\n".join(lines) + "\n"


def _html_body(
    team: str,
    as_of: date,
    since: date,
    wins: pd.DataFrame,
    alerts: pd.DataFrame,
    currency: str,
) -> str:
    escape = html.escape
    parts = [
        f"<h1>Team {escape(team)}, as of {as_of:%Y-%m-%d}</h1>",
        f"<h2>Wins since {since:%Y-%m-%d}: {len(wins)}</h2>",
    ]
    if len(wins):
        parts.append(
            "<table><thead><tr><th>Deal</th><th>Seller</th><th>Account</th>"
            "<th>Amount</th><th>Closed</th></tr></thead><tbody>"
        )
        for _, row in wins.iterrows():
            seller = row["seller"] if isinstance(row["seller"], str) else row["rep_id"]
            parts.append(
                f"<tr><td>{escape(str(row['opportunity_id']))}</td>"
                f"<td>{escape(str(seller))}</td>"
                f"<td>{escape(str(row['account_id']))}</td>"
                f"<td>{escape(format_value(row['amount'], 'currency', currency))}</td>"
                f"<td>{row['closed_date']:%Y-%m-%d}</td></tr>"
            )
        parts.append("</tbody></table>")
    parts.append(f"<h2>Alerts: {len(alerts)}</h2>")
    if len(alerts):
        parts.append("<ul>")
        parts += [
            f"<li><strong>{escape(str(row['severity']))}</strong> "
            f"{escape(str(row['message']))}</li>"
            for _, row in alerts.iterrows()
        ]
        parts.append("</ul>")
    return "\n".join(parts) + "\n"


def check_host(host: str, allow_remote: bool = False) -> None:
    """Raise NotifyError unless `host` is loopback or `allow_remote` is true.

    Loopback means the name localhost or an IPv4 or IPv6 loopback address.
    Other names are not resolved, so they count as remote.
    """
    if allow_remote:
        return
    name = host.strip("[]").lower()
    if name == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise NotifyError(
            f"host {host!r} is not a loopback address; pass allow_remote=True to "
            "send to another machine"
        )


def send_email(
    notification: Notification,
    recipients: list[str],
    sender: str,
    host: str = DEFAULT_SMTP_HOST,
    port: int = DEFAULT_SMTP_PORT,
    timeout: float = DEFAULT_TIMEOUT,
    allow_remote: bool = False,
) -> EmailMessage:
    """Send `notification` by SMTP to `recipients`; return the message sent.

    The message has a plain-text part and an HTML alternative. Raises
    NotifyError for no recipient, an address without @, a host refused by
    `check_host`, or a connection or SMTP failure (with host and port).
    """
    if not recipients:
        raise NotifyError("no recipient given; pass at least one e-mail address")
    for address in [sender, *recipients]:
        if "@" not in address:
            raise NotifyError(f"e-mail address {address!r} has no @; fix the address")
    check_host(host, allow_remote)
    message = EmailMessage()
    message["Subject"] = notification.subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message.set_content(notification.text)
    message.add_alternative(notification.html, subtype="html")
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as server:
            server.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise NotifyError(
            f"sending e-mail through {host}:{port} failed: {exc}; check that the "
            "SMTP server runs and accepts the addresses"
        ) from exc
    logger.info(
        "sent notification of team %s to %d recipient(s) through %s:%d",
        notification.team,
        len(recipients),
        host,
        port,
    )
    return message


def post_webhook(
    notification: Notification,
    url: str,
    timeout: float = DEFAULT_TIMEOUT,
    allow_remote: bool = False,
) -> int:
    """POST `notification.payload()` as JSON to `url`; return the HTTP status.

    Raises NotifyError for a URL that is not http or https, a host refused
    by `check_host`, a status other than 2xx, or a connection failure.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NotifyError(f"webhook URL {url!r} is not an http(s) URL with a host")
    check_host(parts.hostname, allow_remote)
    body = json.dumps(notification.payload()).encode("utf-8")
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        raise NotifyError(
            f"webhook {url} returned HTTP {exc.code}; check the URL and the "
            "receiving service"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        raise NotifyError(f"posting to webhook {url} failed: {exc}") from exc
    logger.info(
        "posted notification of team %s to %s: HTTP %d", notification.team, url, status
    )
    return status


def write_digest(notification: Notification, path: str | Path) -> Path:
    """Write `notification` to `path` as Markdown (.md) or HTML (.html, .htm).

    Creates the parent folder. Returns the path. Raises NotifyError for
    another suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".md":
        content = _markdown(notification)
    elif suffix in (".html", ".htm"):
        title = html.escape(notification.subject)
        content = (
            '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            f"<title>{title}</title></head><body>\n{notification.html}</body></html>\n"
        )
    else:
        raise NotifyError(f"digest file {path} must end in .md, .html or .htm")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    logger.info("wrote digest of team %s to %s", notification.team, path)
    return path


def _markdown(notification: Notification) -> str:
    wins, alerts = notification.wins, notification.alerts
    lines = [
        f"# Team {notification.team}, as of {notification.as_of:%Y-%m-%d}",
        "",
        f"## Wins since {notification.since:%Y-%m-%d}: {len(wins)}",
        "",
    ]
    if len(wins):
        lines += [
            "| Deal | Seller | Account | Amount | Closed |",
            "|---|---|---|---:|---|",
        ]
        for _, row in wins.iterrows():
            seller = row["seller"] if isinstance(row["seller"], str) else row["rep_id"]
            amount = format_value(row["amount"], "currency", notification.currency)
            lines.append(
                f"| {_cell(row['opportunity_id'])} | {_cell(seller)} | "
                f"{_cell(row['account_id'])} | {amount} | {row['closed_date']:%Y-%m-%d} |"
            )
        lines.append("")
    lines += [f"## Alerts: {len(alerts)}", ""]
    lines += [
        f"- **{row['severity']}** {row['message']}" for _, row in alerts.iterrows()
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


def _cell(value: Any) -> str:
    """Text of a Markdown table cell, with pipes escaped."""
    return str(value).replace("|", "\\|")
