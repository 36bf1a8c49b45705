"""Huddle, target and incentive tabs of the dashboards: the views that act.

- `HuddleView`: the team's huddle pack of the last complete week
  (`cockpit.huddle.build_huddle`): the seven KPIs, each seller's deal
  changes and the suggested actions, and the post-huddle survey, stored
  with `cockpit.survey.record_survey`. A seller gets only their own deals.
- `TargetView`: the sellers' year targets in force with revenue to date;
  a manager proposes an adjustment with a reason after previewing its
  effect on the totals (`cockpit.target_log.propose_adjustment`), and a
  viewer of the next level approves or rejects open proposals
  (`decide_adjustment`). Both are written to the target change log.
- `IncentiveView`: a seller's live bonus, component by component, and a
  what-if over their open deals (`cockpit.incentives`); a team shows every
  seller's live bonus.

Every write goes through `DashboardData.write`, after the viewer's scope
is checked against the team or seller it touches, and is logged with the
viewer's name. Viewers of a server without an access file cannot write.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np
import pandas as pd
import plotly.graph_objects as go

from cockpit.dashboard_data import node_level
from cockpit.dashboard_html import (
    FRIENDLY_ERROR,
    escape,
    figure_output,
    message_html,
    plot_text,
    table_html,
)
from cockpit.errors import CockpitError, HuddleError, ScopeError, TargetError
from cockpit.kpi import format_value
from cockpit.scope import Scope

if TYPE_CHECKING:
    from cockpit.dashboard import CockpitApp

logger = logging.getLogger(__name__)

#: Scores of the post-huddle survey, lowest to highest.
SURVEY_SCORES = ("1", "2", "3", "4", "5")


def _status(css: str, text: str) -> str:
    return message_html(text, css)


class _TabView:
    """Common parts of the three acting tabs: a status line and a body."""

    def __init__(self, app: CockpitApp, css: str) -> None:
        self.app = app
        self.status = widgets.HTML(layout=widgets.Layout(min_height="22px"))
        self.status.add_class("cockpit-status")
        self.body = widgets.VBox()
        self.widget = widgets.VBox([self.status, self.body])
        self.widget.add_class(css)

    def show_failure(self, text: str) -> None:
        """Show `text` as an error in place of the tab's content."""
        self.body.children = ()
        self.status.value = _status("cockpit-status-error", text)

    def _guard(self, action: str, run: Any) -> None:
        """Run a button's action; errors become messages, details go to the log."""
        try:
            run()
        except ScopeError as exc:
            logger.warning(
                "viewer %s: %s rejected: %s", self.app.viewer.user, action, exc
            )
            self.status.value = _status(
                "cockpit-status-error", "That is outside what you may change."
            )
        except CockpitError as exc:
            # Named errors carry a sentence for people (bad value and fix).
            logger.warning(
                "viewer %s: %s failed: %s", self.app.viewer.user, action, exc
            )
            self.status.value = _status("cockpit-status-error", str(exc))
        except Exception:
            logger.exception("viewer %s: %s failed", self.app.viewer.user, action)
            self.status.value = _status("cockpit-status-error", FRIENDLY_ERROR)

    def _hint(self, text: str) -> None:
        self.status.value = ""
        self.body.children = (widgets.HTML(_status("cockpit-hint", text)),)

    def teams_in_scope(self) -> list[str]:
        """Return the teams whose sellers lie within the viewer's scope."""
        reps = self.app.data.reps
        scope = self.app.data.viewer_scope
        mask = reps["team"].notna()
        for field, column in (
            ("region", "region"),
            ("team", "team"),
            ("rep_id", "rep_id"),
        ):
            value = getattr(scope, field)
            if value is not None:
                mask &= reps[column] == value
        return sorted(reps.loc[mask, "team"].unique())


# --- huddle ------------------------------------------------------------------


class HuddleView(_TabView):
    """The huddle pack of the current team, with the post-huddle survey."""

    def __init__(self, app: CockpitApp) -> None:
        super().__init__(app, "cockpit-huddle")
        self.pack: Any = None
        self.team: str | None = None
        self.score = widgets.ToggleButtons(
            options=SURVEY_SCORES,
            value=None,
            description="How helpful was the huddle? (1 = not at all, 5 = very)",
            style={"description_width": "initial", "button_width": "40px"},
        )
        self.score.add_class("survey-score")
        self.comment = widgets.Textarea(
            placeholder="Optional comment", layout=widgets.Layout(width="420px")
        )
        self.comment.add_class("survey-comment")
        self.submit = widgets.Button(description="Send answer", button_style="primary")
        self.submit.add_class("survey-submit")
        self.submit.on_click(lambda _: self._guard("survey answer", self._send))
        self.survey_result = widgets.HTML()
        self.survey_result.add_class("survey-result")

    def _team(self) -> str | None:
        node = self.app.node
        if node.team is not None:
            return node.team
        if node.rep_id is not None:
            reps = self.app.data.reps
            match = reps.loc[reps["rep_id"] == node.rep_id, "team"]
            return None if match.empty else match.iloc[0]
        return None

    def refresh(self) -> None:
        """Build the huddle pack of the current team and show it with the survey."""
        from cockpit.huddle import build_huddle

        team = self._team()
        if team is None:
            teams = self.teams_in_scope()
            self._hint(
                "Open a team (Performance tab, click a team) to see its huddle. "
                f"Teams you can open: {', '.join(teams) if teams else 'none'}."
            )
            return
        data = self.app.data
        if team not in self.teams_in_scope():
            raise ScopeError(f"team {team!r} is outside the viewer's scope")
        self.status.value = _status("cockpit-status", "Updating…")
        self.pack = data.cached(
            ("huddle", team), lambda: build_huddle(data.cursor(), team)
        )
        self.team = team
        seller = self.app.viewer.level == "seller"
        own = self.app.viewer.scope.rep_id
        currency = data.currency
        pack = self.pack
        parts = [
            f"<h3>Huddle of team {escape(team)}, week {escape(pack.week)}</h3>"
            f"<div class='cockpit-subtitle'>{escape(pack.week_start)} to "
            f"{escape(pack.week_end)}; pipeline snapshot {escape(pack.snapshot)} "
            f"against {escape(pack.previous_snapshot)}</div>"
        ]
        parts += [message_html(note, "cockpit-notice") for note in pack.notes]
        if not seller:
            kpis = pack.kpis.copy()
            kpis["this_week_text"] = [
                format_value(v, u, currency)
                for v, u in zip(kpis["this_week"], kpis["unit"], strict=True)
            ]
            kpis["last_week_text"] = [
                format_value(v, u, currency)
                for v, u in zip(kpis["last_week"], kpis["unit"], strict=True)
            ]
            kpis["change_text"] = [
                _change_text(v, u, currency)
                for v, u in zip(kpis["change"], kpis["unit"], strict=True)
            ]
            parts.append("<h4>The team's seven KPIs</h4>")
            parts.append(
                table_html(
                    kpis,
                    [
                        ("label", "KPI", None),
                        ("this_week_text", "This week", None),
                        ("last_week_text", "Last week", None),
                        ("change_text", "Change", None),
                        ("direction", "Direction", None),
                    ],
                    currency,
                    css_class="cockpit-table huddle-kpis",
                )
            )
        deals = pack.opportunities
        if seller:
            deals = deals[deals["rep_id"] == own]
        parts.append("<h4>Pipeline changes per seller</h4>")
        for _rep_id, rows in deals.groupby("rep_id", sort=True):
            parts.append(f"<h5>{escape(rows['seller'].iloc[0])}</h5>")
            parts.append(
                table_html(
                    rows,
                    [
                        ("opportunity_id", "Deal", None),
                        ("account_name", "Account", None),
                        ("stage", "Stage", None),
                        ("amount", "Amount", "currency"),
                        ("close_date", "Expected close", None),
                        ("change", "Change since last week", None),
                    ],
                    currency,
                    css_class="cockpit-table huddle-deals",
                )
            )
        actions = pack.actions
        if seller:
            actions = actions[actions["rep_id"] == own]
        parts.append("<h4>Suggested actions</h4>")
        parts.append(
            table_html(
                actions,
                [("seller", "Seller", None), ("action", "Action", None)],
                currency,
                css_class="cockpit-table huddle-actions",
                max_rows=20,
            )
        )
        can_answer = self.app.viewer.can_write
        self.submit.disabled = not can_answer
        survey_note = (
            f"Answering as {self.app.viewer.actor}."
            if can_answer
            else "Sign in to answer the survey."
        )
        self.body.children = (
            widgets.HTML("".join(parts)),
            widgets.HTML(
                f"<h4>After the huddle</h4><div class='cockpit-subtitle'>"
                f"{escape(survey_note)}</div>"
            ),
            self.score,
            self.comment,
            self.submit,
            self.survey_result,
        )
        self.status.value = ""

    def _send(self) -> None:
        from cockpit.survey import record_survey

        viewer = self.app.viewer
        if not viewer.can_write:
            raise ScopeError("anonymous viewers cannot answer the survey")
        if self.pack is None or self.team is None:
            raise HuddleError("no huddle is shown yet; open a team first")
        if self.team not in self.teams_in_scope():
            raise ScopeError(f"team {self.team!r} is outside the viewer's scope")
        if self.score.value is None:
            self.survey_result.value = _status(
                "cockpit-status-error", "Choose a score from 1 to 5 first."
            )
            return
        team, week = self.team, self.pack.week_start
        survey_id = self.app.data.write(
            lambda con: record_survey(
                con,
                team,
                week,
                viewer.actor,
                self.score.value,
                self.comment.value or None,
            ),
            tables=["huddle_surveys"],
        )
        logger.info(
            "survey answer %s stored: team %s, week %s, by %s (user %s), score %s",
            survey_id,
            team,
            self.pack.week,
            viewer.actor,
            viewer.user,
            self.score.value,
        )
        self.survey_result.value = _status(
            "cockpit-ok", f"Thank you, your answer is stored (answer {survey_id})."
        )
        self.submit.disabled = True


def _change_text(value: Any, unit: str, currency: str) -> str:
    from cockpit.huddle import format_change

    return format_change(
        None if value is None or pd.isna(value) else float(value), unit, currency
    )


# --- targets -----------------------------------------------------------------


class TargetView(_TabView):
    """Sellers' year targets: propose an adjustment, approve or reject one."""

    def __init__(self, app: CockpitApp) -> None:
        super().__init__(app, "cockpit-targets")
        self.year = app.data.as_of.year
        self.seller = widgets.Dropdown(
            description="Seller", layout=widgets.Layout(width="420px")
        )
        self.seller.add_class("target-seller")
        self.unit = widgets.Dropdown(description="Business unit")
        self.unit.add_class("target-unit")
        self.value = widgets.FloatText(description="New year target")
        self.value.add_class("target-value")
        self.reason = widgets.Textarea(
            description="Reason", layout=widgets.Layout(width="480px")
        )
        self.reason.add_class("target-reason")
        for control in (self.seller, self.unit, self.value, self.reason):
            control.style.description_width = "120px"
        self.preview_button = widgets.Button(description="Preview effect")
        self.preview_button.add_class("target-preview")
        self.propose_button = widgets.Button(
            description="Propose adjustment", button_style="primary"
        )
        self.propose_button.add_class("target-propose")
        self.preview = widgets.HTML()
        self.preview.add_class("target-effect")
        self.result = widgets.HTML()
        self.result.add_class("target-result")
        self.table = widgets.HTML()
        self.pending_box = widgets.VBox()
        self.pending_box.add_class("target-pending")
        self.history = widgets.HTML()
        self.targets = pd.DataFrame()
        self.preview_button.on_click(
            lambda _: self._guard("target preview", self._preview)
        )
        self.propose_button.on_click(
            lambda _: self._guard("target proposal", self._propose)
        )
        self.seller.observe(
            lambda _: self._guard("target form", self._fill_units), names="value"
        )

    # data

    def _sellers(self) -> pd.DataFrame:
        """Return the sellers within the current position and the viewer's scope."""
        reps = self.app.data.reps
        scope = self.app.data.authorize(self.app.node)
        mask = pd.Series(True, index=reps.index)
        for field in ("region", "team", "rep_id"):
            value = getattr(scope, field)
            if value is not None:
                mask &= reps[field] == value
        return reps[mask & (reps["role"] == "seller")]

    def _load(self) -> pd.DataFrame:
        from cockpit.target_log import in_force

        data = self.app.data
        sellers = self._sellers()
        rows = in_force(data.cursor(), self.year)
        rows = rows[(rows["level"] == "rep") & (rows["period"] == str(self.year))]
        rows = rows[rows["key"].isin(sellers["rep_id"])]
        unit = data.viewer_scope.business_unit
        if unit is not None:
            rows = rows[rows["business_unit"] == unit]
        names = dict(zip(sellers["rep_id"], sellers["name"], strict=True))
        teams = dict(zip(sellers["rep_id"], sellers["team"], strict=True))
        table = rows[["key", "business_unit", "value", "version"]].rename(
            columns={"key": "rep_id", "value": "target"}
        )
        table["seller"] = [names.get(key, key) for key in table["rep_id"]]
        table["team"] = [teams.get(key) for key in table["rep_id"]]
        return table.sort_values(["team", "seller", "business_unit"]).reset_index(
            drop=True
        )

    def refresh(self) -> None:
        """Reload targets and the change log from the mart and show the tab."""
        data = self.app.data
        self.status.value = _status("cockpit-status", "Updating…")
        data.reload(
            ["targets", "target_changes", "target_allocations", "target_role_bases"]
        )
        self.targets = self._load()
        currency = data.currency
        viewer = self.app.viewer
        self.table.value = (
            f"<h3>Year targets {self.year} of {escape(data.node_label(self.app.node))}</h3>"
            + table_html(
                self.targets,
                [
                    ("seller", "Seller", None),
                    ("team", "Team", None),
                    ("business_unit", "Business unit", None),
                    ("target", "Year target", "currency"),
                ],
                currency,
                css_class="cockpit-table target-table",
                max_rows=60,
            )
        )
        children: list[widgets.Widget] = [self.table]
        if viewer.can_write and viewer.level != "seller" and not self.targets.empty:
            choices = (
                self.targets[["seller", "rep_id"]]
                .drop_duplicates()
                .itertuples(index=False)
            )
            current = self.seller.value
            self.seller.options = [
                (f"{row.seller} ({row.rep_id})", row.rep_id) for row in choices
            ]
            if current in [value for _, value in self.seller.options]:
                self.seller.value = current
            self._fill_units()
            children += [
                widgets.HTML("<h4>Propose an adjustment</h4>"),
                self.seller,
                self.unit,
                self.value,
                self.reason,
                widgets.HBox([self.preview_button, self.propose_button]),
                self.preview,
                self.result,
            ]
        self._show_pending()
        children += [self.pending_box, self.history]
        self.body.children = children
        self.status.value = ""

    def _fill_units(self) -> None:
        rows = self.targets[self.targets["rep_id"] == self.seller.value]
        units = list(rows["business_unit"])
        current = self.unit.value
        self.unit.options = units
        if current in units:
            self.unit.value = current
        elif units:
            self.unit.value = units[0]
        if self.unit.value is not None and not rows.empty:
            match = rows[rows["business_unit"] == self.unit.value]
            if not match.empty and not self.value.value:
                self.value.value = round(float(match["target"].iloc[0]), 2)

    def _check_seller(self, rep_id: Any) -> str:
        """Return `rep_id` when it is a seller of the current view; else raise ScopeError."""
        if not isinstance(rep_id, str) or rep_id not in set(self._sellers()["rep_id"]):
            raise ScopeError(f"seller {rep_id!r} is outside the viewer's scope")
        self.app.data.authorize(Scope(rep_id=rep_id))
        return rep_id

    def totals(self, rep_id: str, unit: str, new_value: float) -> pd.DataFrame:
        """Return the effect of a new value on the sums of seller targets.

        One row per total (the seller, their team, their region, all
        sellers visible to the viewer) with columns total, before, after and
        change, from the year targets in force. The team and region totals
        are left out for viewers who do not see the whole team or region.
        """
        data = self.app.data
        from cockpit.target_log import in_force

        rows = in_force(data.cursor(), self.year)
        rows = rows[(rows["level"] == "rep") & (rows["period"] == str(self.year))]
        reps = data.reps.set_index("rep_id")
        rows = rows.assign(
            team=[reps["team"].get(key) for key in rows["key"]],
            rep_region=[reps["region"].get(key) for key in rows["key"]],
        )
        viewer = data.viewer_scope
        if viewer.business_unit is not None:
            rows = rows[rows["business_unit"] == viewer.business_unit]
        visible = rows[rows["key"].isin(self._visible_reps())]
        old = float(
            rows.loc[
                (rows["key"] == rep_id) & (rows["business_unit"] == unit), "value"
            ].sum()
        )
        delta = new_value - old
        team, region = reps["team"].get(rep_id), reps["region"].get(rep_id)
        seller_rows = rows[(rows["key"] == rep_id) & (rows["business_unit"] == unit)]
        groups = [(f"Seller {reps['name'].get(rep_id, rep_id)}, {unit}", seller_rows)]
        # A team or region total is shown only to viewers who see all of it.
        sees_region = viewer.region in (None, region) and viewer.rep_id is None
        if sees_region and viewer.team in (None, team):
            groups.append((f"Team {team}", rows[rows["team"] == team]))
        if sees_region and viewer.team is None:
            groups.append((f"Region {region}", rows[rows["rep_region"] == region]))
        groups.append(("All sellers you see", visible))
        records = []
        for label, frame in groups:
            before = float(frame["value"].sum())
            records.append(
                {
                    "total": label,
                    "before": before,
                    "after": before + delta,
                    "change": delta,
                }
            )
        return pd.DataFrame(records)

    def _visible_reps(self) -> list[str]:
        reps = self.app.data.reps
        scope = self.app.data.viewer_scope
        mask = pd.Series(True, index=reps.index)
        for field in ("region", "team", "rep_id"):
            value = getattr(scope, field)
            if value is not None:
                mask &= reps[field] == value
        return list(reps.loc[mask, "rep_id"])

    def _form(self) -> tuple[str, str, float, str]:
        rep_id = self._check_seller(self.seller.value)
        unit = self.unit.value
        if unit not in set(
            self.targets.loc[self.targets["rep_id"] == rep_id, "business_unit"]
        ):
            raise TargetError(
                f"seller {rep_id} has no {self.year} target in business unit "
                f"{unit!r}; choose one of the units listed for the seller"
            )
        value = float(self.value.value)
        if not math.isfinite(value) or value < 0:
            raise TargetError(
                f"new year target {value} is invalid; enter an amount of 0 or more"
            )
        return rep_id, unit, value, self.reason.value.strip()

    def _preview(self) -> None:
        rep_id, unit, value, _ = self._form()
        effect = self.totals(rep_id, unit, value)
        self.preview.value = (
            "<h4>Effect on the sums of seller targets</h4>"
            + table_html(
                effect,
                [
                    ("total", "Total", None),
                    ("before", "Before", "currency"),
                    ("after", "After", "currency"),
                    ("change", "Change", "currency"),
                ],
                self.app.data.currency,
                css_class="cockpit-table target-effect-table",
            )
        )

    def _propose(self) -> None:
        from cockpit.target_log import propose_adjustment

        viewer = self.app.viewer
        if not viewer.can_write or viewer.level == "seller":
            raise ScopeError("this viewer cannot propose target adjustments")
        rep_id, unit, value, reason = self._form()
        self._preview()
        change_id = self.app.data.write(
            lambda con: propose_adjustment(
                con, self.year, rep_id, unit, value, viewer.actor, reason
            ),
            tables=["targets", "target_changes"],
        )
        logger.info(
            "target change %s proposed by %s (user %s): %s %s year %d to %.2f, reason %r",
            change_id,
            viewer.actor,
            viewer.user,
            rep_id,
            unit,
            self.year,
            value,
            reason,
        )
        self.result.value = _status(
            "cockpit-ok",
            f"Proposal {change_id} is recorded and waits for approval by the next level.",
        )
        self._show_pending()

    def pending(self) -> pd.DataFrame:
        """Return the open proposals on sellers visible to the viewer, oldest first."""
        from cockpit.target_log import change_history

        events = change_history(self.app.data.cursor(), self.year)
        if events.empty:
            return events
        decided = set(
            events.loc[events["status"].isin(["approved", "rejected"]), "change_id"]
        )
        proposals = events[
            (events["status"] == "proposed") & ~events["change_id"].isin(decided)
        ]
        proposals = proposals[proposals["key"].isin(self._visible_reps())]
        names = dict(
            zip(self.app.data.reps["rep_id"], self.app.data.reps["name"], strict=True)
        )
        proposals = proposals.assign(
            seller=[names.get(key, key) for key in proposals["key"]]
        )
        return proposals.reset_index(drop=True)

    def _show_pending(self) -> None:
        from cockpit.target_log import change_history

        data = self.app.data
        viewer = self.app.viewer
        pending = self.pending()
        currency = data.currency
        rows: list[widgets.Widget] = [widgets.HTML("<h4>Open proposals</h4>")]
        if pending.empty:
            rows.append(widgets.HTML("<div>No open proposal.</div>"))
        can_decide = viewer.can_write and viewer.level in ("company", "region")
        for proposal in pending.itertuples(index=False):
            text = (
                f"{proposal.change_id}: {proposal.seller} ({proposal.key}), "
                f"{proposal.business_unit}: {format_value(proposal.old_value, 'currency', currency)}"
                f" → {format_value(proposal.requested_value, 'currency', currency)}, "
                f"proposed by {proposal.actor}. Reason: {proposal.reason}"
            )
            line: list[widgets.Widget] = [widgets.HTML(escape(text))]
            if can_decide:
                approve = widgets.Button(description="Approve", button_style="success")
                reject = widgets.Button(description="Reject", button_style="danger")
                approve.add_class(f"approve-{proposal.change_id}")
                reject.add_class(f"reject-{proposal.change_id}")
                change_id = proposal.change_id
                approve.on_click(
                    lambda _, c=change_id: self._guard(
                        "target decision", lambda: self._decide(c, True)
                    )
                )
                reject.on_click(
                    lambda _, c=change_id: self._guard(
                        "target decision", lambda: self._decide(c, False)
                    )
                )
                line += [approve, reject]
            rows.append(widgets.HBox(line))
        self.pending_box.children = rows
        events = change_history(data.cursor(), self.year)
        events = events[
            events["key"].isin(self._visible_reps())
            & (events["period"] == str(self.year))
        ]
        self.history.value = "<h4>Change log</h4>" + table_html(
            events.sort_values("acted_at", ascending=False),
            [
                ("change_id", "Change", None),
                ("status", "Status", None),
                ("key", "Seller", None),
                ("business_unit", "Business unit", None),
                ("old_value", "Before", "currency"),
                ("new_value", "After", "currency"),
                ("actor", "By", None),
                ("acted_at", "When (UTC)", None),
                ("reason", "Reason", None),
            ],
            currency,
            css_class="cockpit-table target-log",
            max_rows=20,
        )

    def _decide(self, change_id: str, approve: bool) -> None:
        from cockpit.target_log import decide_adjustment

        viewer = self.app.viewer
        if not viewer.can_write or viewer.level not in ("company", "region"):
            raise ScopeError("this viewer cannot decide target adjustments")
        pending = self.pending()
        match = pending[pending["change_id"] == change_id]
        if match.empty:
            raise ScopeError(
                f"change {change_id!r} is not an open proposal this viewer sees"
            )
        self._check_seller_visible(match.iloc[0]["key"])
        self.app.data.write(
            lambda con: decide_adjustment(con, change_id, viewer.actor, approve),
            tables=["targets", "target_changes", "target_role_bases"],
        )
        verb = "approved" if approve else "rejected"
        logger.info(
            "target change %s %s by %s (user %s)",
            change_id,
            verb,
            viewer.actor,
            viewer.user,
        )
        self.refresh()
        self.result.value = _status("cockpit-ok", f"Change {change_id} is {verb}.")

    def _check_seller_visible(self, rep_id: str) -> None:
        if rep_id not in set(self._visible_reps()):
            raise ScopeError(f"seller {rep_id!r} is outside the viewer's scope")


# --- incentives --------------------------------------------------------------


class IncentiveView(_TabView):
    """A seller's live bonus and what-if, or a team's live bonus table."""

    def __init__(self, app: CockpitApp) -> None:
        super().__init__(app, "cockpit-incentives")
        self.deal_choice = widgets.SelectMultiple(
            description="Deals assumed won",
            layout=widgets.Layout(width="640px", height="160px"),
            style={"description_width": "initial"},
        )
        self.deal_choice.add_class("whatif-deals")
        self.deal_choice.observe(
            lambda _: self._guard("what-if", self._what_if), names="value"
        )
        self.what_if_result = widgets.HTML()
        self.what_if_result.add_class("whatif-result")
        self.statement: Any = None
        self.plan: Any = None

    def _plan_for(self, scope: Scope) -> Any:
        from cockpit.incentives import eligible_sellers, load_plans

        data = self.app.data
        plans = data.cached(("plans",), load_plans)
        for plan in plans.values():
            current = plan.period_start <= data.as_of <= plan.period_end
            if (current or len(plans) == 1) and not eligible_sellers(
                data.cursor(), plan, scope
            ).empty:
                return plan
        return None

    def refresh(self) -> None:
        """Show the seller's bonus statement and what-if, or the team's bonus table."""
        node = self.app.node
        level = node_level(node)
        if level not in ("team", "seller"):
            self._hint("Open a team or a seller to see incentives.")
            return
        data = self.app.data
        scope = data.authorize(node)
        bonus_scope = Scope(region=scope.region, team=scope.team, rep_id=scope.rep_id)
        self.status.value = _status("cockpit-status", "Updating…")
        plan = self._plan_for(bonus_scope)
        if plan is None:
            self._hint("No incentive plan covers this team or seller.")
            return
        self.plan = plan
        if level == "team":
            self._show_team(plan, bonus_scope)
        else:
            self._show_seller(plan, bonus_scope)
        self.status.value = ""

    def _show_team(self, plan: Any, scope: Scope) -> None:
        from cockpit.incentives import live_bonus

        data = self.app.data
        table = data.cached(
            ("live_bonus", plan.name, scope),
            lambda: live_bonus(data.cursor(), plan, data.as_of, scope),
        )
        html = (
            f"<h3>Live bonus of team {escape(scope.team)} under plan {escape(plan.name)}</h3>"
            + table_html(
                table,
                [
                    ("seller", "Seller", None),
                    ("target", "Target", "currency"),
                    ("revenue", "Revenue", "currency"),
                    ("attainment", "Attainment", "percent"),
                    ("team_attainment", "Team attainment", "percent"),
                    ("total", "Bonus so far", "currency"),
                    ("note", "Note", None),
                ],
                data.currency,
                css_class="cockpit-table bonus-table",
            )
        )
        self.body.children = (widgets.HTML(html),)

    def _show_seller(self, plan: Any, scope: Scope) -> None:
        from cockpit.incentives import bonus_statement

        data = self.app.data
        rep_id = scope.rep_id
        statement = data.cached(
            ("statement", plan.name, rep_id),
            lambda: bonus_statement(data.cursor(), plan, rep_id, data.as_of),
        )
        self.statement = statement
        currency = data.currency
        summary = statement.what_if or {}
        total = statement.components.loc[
            statement.components["component"] == "total", "amount"
        ]
        bonus_now = float(total.iloc[0]) if not total.empty else float("nan")
        header = (
            f"<h3>Bonus of {escape(statement.seller)} under plan {escape(plan.name)}</h3>"
            f'<div class="bonus-now">Bonus earned so far: <b>'
            f"{escape(format_value(bonus_now, 'currency', currency))}</b></div>"
            f"<div>If every open deal closes as expected: "
            f"{escape(format_value(summary.get('bonus_if_all_close'), 'currency', currency))};"
            f" weighted by win probability: "
            f"{escape(format_value(summary.get('bonus_if_weighted'), 'currency', currency))}.</div>"
        )
        components = table_html(
            statement.components,
            [
                ("label", "Component", None),
                ("basis", "How", None),
                ("amount", "Amount", "currency"),
            ],
            currency,
            css_class="cockpit-table bonus-components",
        )
        deals = table_html(
            statement.deals,
            [
                ("opportunity_id", "Deal", None),
                ("account_name", "Account", None),
                ("stage", "Stage", None),
                ("amount", "Amount", "currency"),
                ("expected_close_date", "Expected close", None),
                ("probability", "Win probability", "percent"),
                ("marginal_bonus", "Bonus if it alone closes", "currency"),
            ],
            currency,
            css_class="cockpit-table bonus-deals",
        )
        self.deal_choice.options = [
            (
                f"{row.opportunity_id} · {row.account_name} · "
                f"{format_value(row.amount, 'currency', currency)}",
                row.opportunity_id,
            )
            for row in statement.deals.itertuples(index=False)
        ]
        self.deal_choice.value = ()
        self.what_if_result.value = ""
        self.body.children = (
            widgets.HTML(header + "<h4>Components</h4>" + components),
            widgets.Output(),
            widgets.HTML("<h4>What-if: open deals</h4>" + deals),
            self.deal_choice,
            self.what_if_result,
        )
        chart = self.body.children[1]
        chart.add_class("bonus-curve")
        chart.outputs = (self._curve(plan, statement),)

    def _curve(self, plan: Any, statement: Any) -> dict:
        from cockpit.incentives import bonus_at

        inputs = statement.inputs
        points = np.linspace(0, 1.6, 65)
        team = (
            inputs.team_attainment if not math.isnan(inputs.team_attainment) else None
        )
        figure = go.Figure(
            go.Scatter(
                x=points * 100,
                y=[bonus_at(plan, a, team_attainment=team) for a in points],
                mode="lines",
                name="bonus at attainment",
            )
        )
        if not math.isnan(inputs.attainment):
            figure.add_trace(
                go.Scatter(
                    x=[inputs.attainment * 100],
                    y=[bonus_at(plan, inputs.attainment, team_attainment=team)],
                    mode="markers",
                    marker={"size": 12},
                    name=plot_text(["now"])[0],
                )
            )
        figure.update_layout(
            title=(
                "Bonus by own attainment (team attainment as now; without "
                "product accelerators and close-out bonus)"
            ),
            xaxis_title="attainment (%)",
            yaxis_title="bonus",
            template="plotly_white",
            height=320,
            margin={"l": 50, "r": 20, "t": 50, "b": 40},
        )
        return figure_output(figure, "Bonus curve")

    def _what_if(self) -> None:
        # TODO: use a public helper of cockpit.incentives once it offers one for
        # a chosen set of deals; _with_deals is its internal step for that.
        from cockpit.incentives import _with_deals, bonus_components

        if self.statement is None or self.plan is None:
            return
        chosen = set(self.deal_choice.value)
        deals = self.statement.deals
        known = set(deals["opportunity_id"])
        if not chosen <= known:
            raise ScopeError(
                f"deals {sorted(chosen - known)} are not this seller's open deals"
            )
        selected = [
            row for row in deals.itertuples(index=False) if row.opportunity_id in chosen
        ]
        inputs = _with_deals(self.plan, self.statement.inputs, selected, weight=False)
        total = bonus_components(self.plan, inputs)["total"]
        amount = sum(float(row.amount or 0.0) for row in selected)
        currency = self.app.data.currency
        self.what_if_result.value = (
            f"<div>With {len(selected)} deal(s) worth "
            f"{escape(format_value(amount, 'currency', currency))} won: bonus "
            f"<b class='whatif-total'>{escape(format_value(total, 'currency', currency))}</b>"
            f" (attainment {escape(format_value(inputs.attainment, 'percent'))}).</div>"
        )
