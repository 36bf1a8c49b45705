"""The access file: users, scopes, tokens, and the viewer a kernel serves."""

from __future__ import annotations

import hashlib
import logging

import pytest

from cockpit.access import (
    ACCESS_VARIABLE,
    ANONYMOUS,
    DEFAULT_ACCESS_FILE,
    VIEWER_VARIABLE,
    check_access_against_mart,
    hash_token,
    load_access,
    main,
    new_token,
    parse_access,
    viewer_from_environment,
)
from cockpit.errors import ParameterError, ScopeError
from cockpit.mart import connect
from cockpit.scope import Scope

DOCUMENT = {
    "authentication": {"method": "token"},
    "users": {
        "ceo": {"level": "company", "token_sha256": hash_token("t-ceo")},
        "head.north": {
            "name": "Head of North",
            "level": "region",
            "region": "North",
            "token_sha256": hash_token("t-north"),
        },
        "lead": {
            "level": "team",
            "team": "North-1",
            "acts_as": "REP-001",
            "token_sha256": hash_token("t-lead"),
        },
        "seller": {"level": "seller", "rep_id": "REP-002", "business_unit": "Services"},
    },
}


def test_scopes_from_levels():
    access = parse_access(DOCUMENT)
    assert access.viewers["ceo"].scope == Scope()
    assert access.viewers["head.north"].scope == Scope(region="North")
    assert access.viewers["lead"].scope == Scope(team="North-1")
    assert access.viewers["seller"].scope == Scope(
        rep_id="REP-002", business_unit="Services"
    )


def test_actor_defaults_to_user():
    access = parse_access(DOCUMENT)
    assert access.viewers["head.north"].actor == "head.north"
    assert access.viewers["lead"].actor == "REP-001"


def test_name_defaults_to_user():
    access = parse_access(DOCUMENT)
    assert access.viewers["ceo"].name == "ceo"
    assert access.viewers["head.north"].name == "Head of North"


def test_token_finds_user():
    access = parse_access(DOCUMENT)
    assert access.user_for_token("t-north") == "head.north"
    assert access.user_for_token("t-unknown") is None
    assert access.user_for_token("") is None


def test_hash_is_sha256():
    assert hash_token("abc") == hashlib.sha256(b"abc").hexdigest()


def test_new_token_hash_matches():
    token, digest = new_token()
    assert len(token) >= 40
    assert hash_token(token) == digest


def test_default_method_is_token():
    access = parse_access({"users": {"ceo": {"level": "company"}}})
    assert access.method == "token"
    assert access.user_header == "X-Forwarded-User"


def test_header_method_and_name():
    access = parse_access(
        {
            "authentication": {"method": "header", "header": "X-Remote-User"},
            "users": {"ceo": {"level": "company"}},
        }
    )
    assert access.method == "header"
    assert access.user_header == "X-Remote-User"


def test_missing_region_rejected():
    with pytest.raises(
        ParameterError, match=r"users\.head: level region needs a region"
    ):
        parse_access({"users": {"head": {"level": "region"}}}, "access.yaml")


def test_extra_field_rejected():
    with pytest.raises(ParameterError, match="remove region"):
        parse_access({"users": {"lead": {"level": "team", "team": "A", "region": "B"}}})


def test_company_with_region_rejected():
    with pytest.raises(ParameterError, match="level company takes no region"):
        parse_access({"users": {"ceo": {"level": "company", "region": "North"}}})


def test_unknown_key_rejected():
    with pytest.raises(ParameterError, match=r"users\.ceo\.regoin: unknown key"):
        parse_access(
            {"users": {"ceo": {"level": "company", "regoin": "North"}}}, "access.yaml"
        )


def test_unknown_level_rejected():
    with pytest.raises(ParameterError, match="level"):
        parse_access({"users": {"ceo": {"level": "galaxy"}}})


def test_bad_user_name_rejected():
    with pytest.raises(ParameterError):
        parse_access({"users": {"a b": {"level": "company"}}})


def test_shared_token_rejected():
    digest = hash_token("same")
    with pytest.raises(ParameterError, match="share one token_sha256"):
        parse_access(
            {
                "users": {
                    "a": {"level": "company", "token_sha256": digest},
                    "b": {"level": "company", "token_sha256": digest},
                }
            }
        )


def test_user_without_token_warned(caplog):
    with caplog.at_level(logging.WARNING, logger="cockpit.access"):
        parse_access({"users": {"ceo": {"level": "company"}}}, "access.yaml")
    assert "ceo have no token_sha256" in caplog.text


def test_missing_file_named(tmp_path):
    missing = tmp_path / "none.yaml"
    with pytest.raises(ParameterError, match=str(missing)):
        load_access(missing)


def test_invalid_yaml_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("users: [unclosed\n")
    with pytest.raises(ParameterError, match="not valid YAML"):
        load_access(path)


def test_repeated_key_rejected(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text(
        "users:\n  ceo:\n    level: company\n  ceo:\n    level: region\n"
        "    region: North\n"
    )
    with pytest.raises(ParameterError, match="repeats"):
        load_access(path)


def test_shipped_file_valid():
    access = load_access(DEFAULT_ACCESS_FILE)
    assert access.viewers["head.north"].scope == Scope(region="North")
    assert access.viewers["head.services"].scope == Scope(business_unit="Services")


def test_shipped_file_matches_demo(small_demo_mart):
    access = load_access(DEFAULT_ACCESS_FILE)
    with connect(small_demo_mart, read_only=True) as con:
        assert check_access_against_mart(access, con) == []


def test_unknown_region_listed(small_demo_mart):
    access = parse_access(
        {"users": {"head": {"level": "region", "region": "Nort"}}}, "access.yaml"
    )
    with connect(small_demo_mart, read_only=True) as con:
        problems = check_access_against_mart(access, con)
    assert problems == [
        "user head: region 'Nort' is not in the mart; correct it in access.yaml"
    ]


def test_environment_without_access_is_anonymous():
    assert viewer_from_environment({}) is ANONYMOUS
    assert not ANONYMOUS.can_write


def test_environment_names_viewer(tmp_path):
    path = tmp_path / "access.yaml"
    path.write_text("users:\n  head.north:\n    level: region\n    region: North\n")
    viewer = viewer_from_environment(
        {ACCESS_VARIABLE: str(path), VIEWER_VARIABLE: "head.north"}
    )
    assert viewer.scope == Scope(region="North")
    assert viewer.can_write


def test_environment_without_viewer_refused(tmp_path):
    path = tmp_path / "access.yaml"
    path.write_text("users:\n  ceo:\n    level: company\n")
    with pytest.raises(ScopeError, match="X-Cockpit-Viewer"):
        viewer_from_environment({ACCESS_VARIABLE: str(path)})


def test_environment_unknown_viewer_refused(tmp_path):
    path = tmp_path / "access.yaml"
    path.write_text("users:\n  ceo:\n    level: company\n")
    with pytest.raises(ScopeError, match="'intruder' is not in the access file"):
        viewer_from_environment(
            {ACCESS_VARIABLE: str(path), VIEWER_VARIABLE: "intruder"}
        )


def test_command_prints_token(capsys):
    assert main(["new-token"]) == 0
    lines = capsys.readouterr().out.splitlines()
    token = lines[0].split()[-1]
    digest = lines[1].split()[-1]
    assert hash_token(token) == digest


def test_command_checks_file(capsys):
    assert main(["check", str(DEFAULT_ACCESS_FILE)]) == 0
    assert "head.north: region, region North" in capsys.readouterr().out


def test_command_usage(capsys):
    assert main(["what"]) == 2
    assert "usage" in capsys.readouterr().err
