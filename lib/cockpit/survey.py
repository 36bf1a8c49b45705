"""The short survey after a team's weekly huddle: store responses, summarise them.

`record_survey` validates one response (team, week, respondent, helpfulness
score from 1 to 5, optional comment) and appends it to the mart's
`huddle_surveys` table through `load_frame`, so each response is also a row
of the load log. `survey_summary` gives the mean score per team and week
with its change and a rolling mean.
"""

from __future__ import annotations

import logging
import uuid
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from cockpit.errors import HuddleError, MartError
from cockpit.huddle import check_team, parse_week, week_label
from cockpit.mart import TABLES, connect, load_frame, require_tables
from cockpit.review import parse_as_of

logger = logging.getLogger(__name__)

#: Maximum length of a survey comment, in characters.
MAX_COMMENT_CHARS = 1000
#: Maximum length of a respondent name or id, in characters.
MAX_RESPONDENT_CHARS = 200
#: Lowest and highest helpfulness score.
SCORE_RANGE = (1, 5)

_SUMMARY_COLUMNS = [
    "team",
    "week_start",
    "week",
    "responses",
    "mean_score",
    "min_score",
    "max_score",
    "comments",
    "change",
    "rolling_mean_4w",
]


def record_survey(
    mart: str | Path | duckdb.DuckDBPyConnection,
    team: str,
    week: str | date,
    respondent: str,
    helpfulness: int | str,
    comment: str | None = None,
) -> str:
    """Store one response to the post-huddle survey; return its survey_id.

    `mart` is a mart path (opened for writing and closed again) or a
    writable connection. `week` is the Monday of the huddle pack's week or
    its ISO label. `respondent` is kept as the text given, without
    surrounding white space. `helpfulness` is an integer from 1 to 5 (the
    text of one is accepted). `comment` may be None or up to
    MAX_COMMENT_CHARS characters.

    Raises HuddleError for an unknown team, an invalid week or one that
    starts after the mart's as-of date, and an empty or too long
    respondent. It is also raised for a score outside 1-5, a too long
    comment, and a second response of one respondent to one team's week. Raises MartError when the mart
    file does not exist or cannot be written.
    """
    if isinstance(mart, duckdb.DuckDBPyConnection):
        return _record_survey(mart, team, week, respondent, helpfulness, comment)
    if not Path(mart).is_file():
        raise MartError(
            f"mart file {mart} not found; give the path of an existing mart, such "
            "as the one the huddle pack was built from"
        )
    con = connect(mart)
    try:
        return _record_survey(con, team, week, respondent, helpfulness, comment)
    finally:
        con.close()


def _record_survey(
    con: duckdb.DuckDBPyConnection,
    team: str,
    week: str | date,
    respondent: str,
    helpfulness: int | str,
    comment: str | None,
) -> str:
    require_tables(con, ["reps"])
    team = check_team(con, team)
    week_start = parse_week(week)
    as_of = parse_as_of(None, con)
    if week_start > as_of:
        raise HuddleError(
            f"week {week_label(week_start)} starts after the mart's as-of date "
            f"{as_of}; record responses only for a week whose huddle pack exists"
        )
    respondent = _check_respondent(respondent)
    score = _check_score(helpfulness)
    comment = _check_comment(comment)
    try:
        con.execute(TABLES["huddle_surveys"].ddl())
    except duckdb.Error as exc:
        raise MartError(
            f"cannot create table huddle_surveys: {exc}; open the mart for writing "
            "with cockpit.mart.connect(path)"
        ) from exc

    earlier = con.execute(
        "SELECT survey_id, recorded_at FROM huddle_surveys "
        "WHERE team = ? AND week_start = ? AND respondent = ?",
        [team, week_start, respondent],
    ).fetchone()
    if earlier:
        raise HuddleError(
            f"{respondent!r} already answered the survey of team {team} for week "
            f"{week_label(week_start)} (survey_id {earlier[0]}, recorded "
            f"{earlier[1]:%Y-%m-%d %H:%M} UTC); each person responds once per huddle"
        )

    survey_id = uuid.uuid4().hex
    frame = pd.DataFrame(
        {
            "survey_id": [survey_id],
            "team": pd.Series([team], dtype="object"),
            "week_start": [pd.Timestamp(week_start)],
            "respondent": pd.Series([respondent], dtype="object"),
            "helpfulness": [score],
            "comment": pd.Series([comment], dtype="object"),
            "recorded_at": [datetime.now(timezone.utc).replace(tzinfo=None)],
        }
    )
    try:
        report = load_frame(
            con,
            "huddle_surveys",
            frame,
            source="huddle_survey",
            source_file=f"survey/{team}/{week_label(week_start)}",
        )
    except duckdb.Error as exc:
        raise MartError(
            f"cannot store the survey response: {exc}; open the mart for writing "
            "with cockpit.mart.connect(path)"
        ) from exc
    if report.rows_loaded != 1:
        raise HuddleError(
            f"survey response of {respondent!r} was not stored; see the quarantine "
            f"rows of load {report.load_id}"
        )
    logger.info(
        "survey response %s stored: team %s, week %s, helpfulness %d",
        survey_id,
        team,
        week_label(week_start),
        score,
    )
    return survey_id


def _check_respondent(respondent: Any) -> str:
    if not isinstance(respondent, str):
        raise HuddleError(
            f"invalid respondent {respondent!r} ({type(respondent).__name__}); "
            "give the name or id as text"
        )
    text = respondent.strip()
    if not text:
        raise HuddleError("respondent is empty; give the name or id of the person")
    if len(text) > MAX_RESPONDENT_CHARS:
        raise HuddleError(
            f"respondent has {len(text)} characters; shorten it to at most "
            f"{MAX_RESPONDENT_CHARS}"
        )
    if any(ch in text for ch in "\r\n\t"):
        raise HuddleError(
            f"invalid respondent {text!r}: it contains a line break or tab; give "
            "the name on one line"
        )
    return text


def _check_score(helpfulness: Any) -> int:
    low, high = SCORE_RANGE
    if isinstance(helpfulness, bool) or not isinstance(
        helpfulness, int | np.integer | str
    ):
        raise HuddleError(
            f"invalid helpfulness {helpfulness!r} ({type(helpfulness).__name__}); "
            f"give a whole number from {low} to {high}"
        )
    try:
        score = int(helpfulness)
    except ValueError as exc:
        raise HuddleError(
            f"invalid helpfulness {helpfulness!r}; give a whole number from "
            f"{low} to {high}"
        ) from exc
    if not low <= score <= high:
        raise HuddleError(
            f"helpfulness {score} is outside {low}-{high}; give a whole number "
            f"from {low} (not helpful) to {high} (very helpful)"
        )
    return score


def _check_comment(comment: Any) -> str | None:
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise HuddleError(
            f"invalid comment {comment!r} ({type(comment).__name__}); give text or None"
        )
    text = comment.strip()
    if len(text) > MAX_COMMENT_CHARS:
        raise HuddleError(
            f"comment has {len(text)} characters; shorten it to at most "
            f"{MAX_COMMENT_CHARS}"
        )
    return text or None


def survey_summary(
    con: duckdb.DuckDBPyConnection, team: str | None = None
) -> pd.DataFrame:
    """Summarise the survey responses per team and week, oldest week first.

    Columns: team, week_start, week (ISO label), responses, mean_score,
    min_score, max_score, comments (responses with a comment), change
    (mean_score minus the team's mean of its previous week with responses,
    NaN for its first) and rolling_mean_4w (mean of all the team's
    responses in this week and the three before). `team` None covers every team. A
    mart without the huddle_surveys table gives an empty frame.
    """
    present = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'huddle_surveys'"
    ).fetchone()[0]
    if not present:
        return pd.DataFrame(columns=_SUMMARY_COLUMNS)
    responses = con.execute(
        "SELECT team, week_start, helpfulness, comment FROM huddle_surveys "
        "WHERE ? IS NULL OR team = ?",
        [team, team],
    ).df()
    if responses.empty:
        return pd.DataFrame(columns=_SUMMARY_COLUMNS)
    responses["week_start"] = pd.to_datetime(responses["week_start"])
    weekly = (
        responses.groupby(["team", "week_start"])
        .agg(
            responses=("helpfulness", "size"),
            score_sum=("helpfulness", "sum"),
            min_score=("helpfulness", "min"),
            max_score=("helpfulness", "max"),
            comments=("comment", "count"),
        )
        .reset_index()
        .sort_values(["team", "week_start"])
    )
    weekly["mean_score"] = weekly["score_sum"] / weekly["responses"]
    weekly["change"] = weekly.groupby("team")["mean_score"].diff()
    rolling = []
    for row in weekly.itertuples(index=False):
        window = weekly[
            (weekly["team"] == row.team)
            & (weekly["week_start"] <= row.week_start)
            & (weekly["week_start"] > row.week_start - pd.Timedelta(weeks=4))
        ]
        rolling.append(window["score_sum"].sum() / window["responses"].sum())
    weekly["rolling_mean_4w"] = rolling
    weekly["week"] = [week_label(day.date()) for day in weekly["week_start"]]
    weekly["week_start"] = weekly["week_start"].dt.date
    return weekly[_SUMMARY_COLUMNS].reset_index(drop=True)
