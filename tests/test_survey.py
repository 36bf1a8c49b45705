"""Post-huddle survey: responses stored in a copy of the demo mart, and summarised."""

from __future__ import annotations

import shutil
from datetime import date

import duckdb
import pytest

from cockpit.errors import HuddleError, MartError
from cockpit.mart import connect
from cockpit.survey import MAX_COMMENT_CHARS, record_survey, survey_summary

TEAM = "North-1"
WEEK = date(2026, 9, 21)


@pytest.fixture
def mart(small_demo_mart, tmp_path):
    path = tmp_path / "mart.duckdb"
    shutil.copy(small_demo_mart, path)
    return path


@pytest.fixture
def con(mart):
    connection = connect(mart)
    yield connection
    connection.close()


def _rows(con) -> list[tuple]:
    return con.execute(
        "SELECT team, week_start, respondent, helpfulness, comment "
        "FROM huddle_surveys ORDER BY recorded_at"
    ).fetchall()


# --- storing -----------------------------------------------------------------


def test_record_stores_response(con):
    record_survey(con, TEAM, "2026-W39", "Anna Hansen", 4, "Clear actions.")
    assert _rows(con) == [(TEAM, WEEK, "Anna Hansen", 4, "Clear actions.")]


def test_record_by_path(mart):
    survey_id = record_survey(mart, TEAM, WEEK, "Anna Hansen", "5")
    with duckdb.connect(str(mart), read_only=True) as con:
        stored = con.execute(
            "SELECT helpfulness FROM huddle_surveys WHERE survey_id = ?", [survey_id]
        ).fetchone()
    assert stored == (5,)


def test_respondent_kept_as_text(con):
    record_survey(con, TEAM, WEEK, "  007 ", 3)
    assert _rows(con)[0][2] == "007"


def test_empty_comment_stored_as_null(con):
    record_survey(con, TEAM, WEEK, "Anna Hansen", 3, "   ")
    assert _rows(con)[0][4] is None


def test_record_logged_as_load(con):
    before = con.execute("SELECT count(*) FROM load_log").fetchone()[0]
    record_survey(con, TEAM, WEEK, "Anna Hansen", 2)
    row = con.execute(
        "SELECT source_file, rows_read, rows_loaded FROM load_log "
        "WHERE table_name = 'huddle_surveys'"
    ).fetchone()
    assert con.execute("SELECT count(*) FROM load_log").fetchone()[0] == before + 1
    assert row == (f"survey/{TEAM}/2026-W39", 1, 1)


def test_comment_at_limit(con):
    record_survey(con, TEAM, WEEK, "Anna Hansen", 3, "x" * MAX_COMMENT_CHARS)
    assert len(_rows(con)[0][4]) == MAX_COMMENT_CHARS


# --- validation --------------------------------------------------------------


@pytest.mark.parametrize("score", [0, 6, -1, 4.5, True, "four", None])
def test_invalid_score(con, score):
    with pytest.raises(HuddleError, match="helpfulness"):
        record_survey(con, TEAM, WEEK, "Anna Hansen", score)


def test_score_error_names_range(con):
    with pytest.raises(HuddleError, match="helpfulness 6 is outside 1-5"):
        record_survey(con, TEAM, WEEK, "Anna Hansen", 6)


def test_unknown_team(con):
    with pytest.raises(HuddleError, match="unknown team 'North-9'"):
        record_survey(con, "North-9", WEEK, "Anna Hansen", 4)


def test_week_not_monday(con):
    with pytest.raises(HuddleError, match="not a Monday"):
        record_survey(con, TEAM, date(2026, 9, 22), "Anna Hansen", 4)


def test_week_in_future(con):
    with pytest.raises(HuddleError, match="starts after the mart's as-of date"):
        record_survey(con, TEAM, "2026-W42", "Anna Hansen", 4)


def test_comment_too_long(con):
    with pytest.raises(HuddleError, match="comment has 1001 characters"):
        record_survey(con, TEAM, WEEK, "Anna Hansen", 4, "x" * 1001)


def test_comment_not_text(con):
    with pytest.raises(HuddleError, match="invalid comment 5"):
        record_survey(con, TEAM, WEEK, "Anna Hansen", 4, 5)


@pytest.mark.parametrize("respondent", ["", "   ", 42, "Anna\nHansen", "x" * 201])
def test_invalid_respondent(con, respondent):
    with pytest.raises(HuddleError, match="respondent"):
        record_survey(con, TEAM, WEEK, respondent, 4)


def test_second_response_rejected(con):
    record_survey(con, TEAM, WEEK, "Anna Hansen", 4)
    with pytest.raises(HuddleError, match="already answered"):
        record_survey(con, TEAM, WEEK, "Anna Hansen", 2)


def test_invalid_response_not_stored(con):
    with pytest.raises(HuddleError):
        record_survey(con, TEAM, WEEK, "Anna Hansen", 9)
    assert _rows(con) == []


def test_read_only_mart(mart):
    con = duckdb.connect(str(mart), read_only=True)
    with pytest.raises(MartError, match="open the mart for writing"):
        record_survey(con, TEAM, WEEK, "Anna Hansen", 4)
    con.close()


def test_missing_mart_file(tmp_path):
    path = tmp_path / "absent.duckdb"
    with pytest.raises(MartError, match="not found"):
        record_survey(path, TEAM, WEEK, "Anna Hansen", 4)
    assert not path.exists()


# --- summary -----------------------------------------------------------------


def test_summary_without_responses(con):
    assert survey_summary(con).empty


def test_summary_by_hand(con):
    # Team North-1: W36 scores 2 and 4; W37 scores 5; W39 scores 3, 4 and 5.
    responses = [
        ("2026-W36", "a", 2),
        ("2026-W36", "b", 4),
        ("2026-W37", "a", 5),
        ("2026-W39", "a", 3),
        ("2026-W39", "b", 4),
        ("2026-W39", "c", 5),
    ]
    for week, person, score in responses:
        record_survey(con, TEAM, week, person, score, "ok" if person == "a" else None)
    record_survey(con, "South-1", "2026-W39", "z", 1)

    summary = survey_summary(con, TEAM)
    assert list(summary["week"]) == ["2026-W36", "2026-W37", "2026-W39"]
    assert list(summary["responses"]) == [2, 1, 3]
    assert list(summary["mean_score"]) == [3.0, 5.0, 4.0]
    assert list(summary["comments"]) == [1, 1, 1]
    assert summary["change"].isna().iloc[0]
    assert list(summary["change"].iloc[1:]) == [2.0, -1.0]
    # W39's four weeks (W36 to W39) contain all six responses: 23 / 6.
    assert summary["rolling_mean_4w"].iloc[2] == pytest.approx(23 / 6)
    assert summary["rolling_mean_4w"].iloc[1] == pytest.approx(11 / 3)


def test_summary_all_teams(con):
    record_survey(con, TEAM, WEEK, "a", 4)
    record_survey(con, "South-1", WEEK, "z", 1)
    summary = survey_summary(con)
    assert list(summary["team"]) == [TEAM, "South-1"]
    assert list(summary["mean_score"]) == [4.0, 1.0]


def test_summary_rolling_window_drops_old_weeks(con):
    record_survey(con, TEAM, "2026-W30", "a", 1)
    record_survey(con, TEAM, "2026-W39", "a", 5)
    summary = survey_summary(con, TEAM)
    assert summary["rolling_mean_4w"].iloc[1] == 5.0
