"""Linking: Maven CRM accounts against an ERP customer list with messy names."""

from __future__ import annotations

import difflib
import re
import shutil
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from cockpit.errors import ParameterError
from cockpit.linking import (
    ACCOUNTS,
    ERP_CUSTOMERS,
    ERP_REVENUE,
    LINK_THRESHOLD,
    OPPS_ACCOUNT,
    OPPS_PRODUCT,
    OPPS_PRODUCT_LOADED,
    PRODUCTS,
    _entry,
    account_sides,
    company_name_parts,
    compare_entries,
    current_links,
    link_mart,
    linkage_rates,
    linked_share,
    match_entries,
    product_name_key,
    read_decisions,
)
from cockpit.mart import connect, load_frame

ERP_SOURCE = "erp-test"
FIRST_RUN = datetime(2024, 1, 8, 9, 0)
SECOND_RUN = datetime(2024, 1, 9, 9, 0)
THIRD_RUN = datetime(2024, 1, 10, 9, 0)

#: Variants that only change case, punctuation, spacing or add a legal form;
#: each must link without review.
SAFE_KINDS = ("upper case", "suffix Inc.", "lower case and Ltd", "spaces and GmbH")


def _swap_middle(name: str) -> str:
    i = len(name) // 2
    return name[:i] + name[i + 1] + name[i] + name[i + 2 :]


def _variant(i: int, name: str) -> tuple[str, str]:
    """Return an ERP spelling of a CRM account name and the kind of change."""
    kind = i % 5
    if kind == 0:
        return name.upper(), "upper case"
    if kind == 1:
        return f"{name} Inc.", "suffix Inc."
    if kind == 2:
        return f"{name.replace('-', ' ').lower()}, Ltd", "lower case and Ltd"
    if kind == 3:
        return f"  {name}   GmbH ", "spaces and GmbH"
    key = company_name_parts(name).key
    if len(key) >= 8 and name[len(name) // 2] != name[len(name) // 2 + 1]:
        return _swap_middle(name), "typo"
    return name, "same"


@pytest.fixture(scope="module")
def crm_accounts(shared_data: Path) -> pd.DataFrame:
    return pd.read_csv(shared_data / "maven-crm" / "accounts.csv")


@pytest.fixture(scope="module")
def erp_customers(crm_accounts: pd.DataFrame) -> pd.DataFrame:
    """ERP customer list: every Maven account renamed, plus three extra cases."""
    rows = []
    for i, name in enumerate(crm_accounts["account"]):
        erp_name, kind = _variant(i, name)
        rows.append({"id": f"E{i:03d}", "name": erp_name, "kind": kind, "truth": name})
    rows += [
        {
            "id": "E900",
            "name": "Globex Inc",
            "kind": "legal form differs",
            "truth": "Globex Corporation",
        },
        {"id": "E901", "name": "Dontech", "kind": "look-alike", "truth": None},
        {
            "id": "E902",
            "name": "Northwind Traders",
            "kind": "unrelated",
            "truth": None,
        },
    ]
    frame = pd.DataFrame(rows)
    frame["revenue"] = [100.0 * (i + 1) for i in range(len(frame))]
    return frame


@pytest.fixture(scope="module")
def combined_mart(maven_mart: Path, erp_customers, tmp_path_factory) -> Path:
    """Maven CRM mart plus an ERP with one invoice line per customer."""
    path = tmp_path_factory.mktemp("linking") / "combined.duckdb"
    shutil.copy(maven_mart, path)
    accounts = pd.DataFrame(
        {
            "account_id": erp_customers["id"],
            "name": erp_customers["name"],
            "region": "East",
            "source": ERP_SOURCE,
        }
    )
    lines = pd.DataFrame(
        {
            "invoice_id": "INV-" + erp_customers["id"],
            "line": 1,
            "date": "2017-06-30",
            "account_id": erp_customers["id"],
            "region": "East",
            "business_unit": "GTX",
            "net_revenue": erp_customers["revenue"],
            "currency": "USD",
            "source": ERP_SOURCE,
        }
    )
    with connect(path) as con:
        load_frame(con, "accounts", accounts, source=ERP_SOURCE, source_file="c.csv")
        load_frame(con, "transactions", lines, source=ERP_SOURCE, source_file="i.csv")
    return path


@pytest.fixture
def mart(combined_mart: Path, tmp_path: Path) -> Path:
    """A private copy of the combined mart, for tests that write links."""
    path = tmp_path / "mart.duckdb"
    shutil.copy(combined_mart, path)
    return path


@pytest.fixture(scope="module")
def first_links(combined_mart: Path, tmp_path_factory) -> pd.DataFrame:
    path = tmp_path_factory.mktemp("first") / "mart.duckdb"
    shutil.copy(combined_mart, path)
    review = path.parent / "review"
    with connect(path) as con:
        return link_mart(con, review, now=FIRST_RUN).accounts


def _by_erp(links: pd.DataFrame, erp_id: str) -> pd.DataFrame:
    return links[links["erp_account_id"] == erp_id]


# --- names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "forms"),
    [
        ("Acme Corporation", "acme", {"corp"}),
        ("ACME CORP.", "acme", {"corp"}),
        ("Gekko & Co", "gekko", {"co"}),
        ("Müller GmbH & Co. KG", "muller", {"gmbh", "co", "kg"}),
        ("The New York Inquirer", "newyorkinquirer", set()),
        ("Green-Plus", "greenplus", set()),
        ("Y-corporation", "ycorporation", set()),
        ("Zencorporation", "zencorporation", set()),
        ("Deltapack Chemie B.V.", "deltapackchemie", {"bv"}),
    ],
)
def test_company_name_parts(name, key, forms):
    parts = company_name_parts(name)
    assert parts.key == key
    assert parts.forms == frozenset(forms)


def test_product_key_joins_spellings():
    assert product_name_key("GTXPro") == product_name_key("GTX Pro") == "gtxpro"


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [
        (("A1", "Acme"), ("A1", "Other"), ("id", 1.0)),
        (("E1", "ACME  Corp"), ("C1", "acme corp"), ("same name", 1.0)),
        (("E1", "Acme Inc."), ("C1", "Acme"), ("normalised name", 0.95)),
        (("E1", "Acme Corp"), ("C1", "Acme Corporation"), ("normalised name", 0.95)),
        (("E1", "Acme Inc"), ("C1", "Acme GmbH"), ("legal form differs", 0.8)),
        (("E1", "Initech"), ("C1", "Inittech"), ("similar name", 0.84)),
        (("E1", "Acme 2"), ("C1", "Acme 3"), None),
        (("E1", "Acme"), ("C1", "Zotware"), None),
    ],
)
def test_compare_entries(left, right, expected):
    result = compare_entries(_entry(*left, True), _entry(*right, True))
    assert result == expected


def test_typo_inside_legal_form():
    method, confidence = compare_entries(
        _entry("E1", "Globex Croporation", True),
        _entry("C1", "Globex Corporation", True),
    )
    assert method == "similar name"
    assert confidence < LINK_THRESHOLD


# --- accounts on the combined mart ------------------------------------------------


def test_sides_from_sources(combined_mart, erp_customers, crm_accounts):
    with connect(combined_mart, read_only=True) as con:
        erp, crm = account_sides(con)
    assert sorted(erp["id"]) == sorted(erp_customers["id"])
    assert sorted(crm["id"]) == sorted(crm_accounts["account"])


def test_auto_links_are_right(first_links, erp_customers):
    auto = first_links[first_links["status"] == "auto"]
    truth = erp_customers.set_index("id")["truth"]
    wrong = auto[auto["crm_account_id"] != auto["erp_account_id"].map(truth)]
    assert len(auto) > 0
    assert wrong.empty, wrong


def test_safe_variants_link_at_once(first_links, erp_customers):
    safe = erp_customers[erp_customers["kind"].isin([*SAFE_KINDS, "same"])]
    auto = first_links[first_links["status"] == "auto"]
    assert sorted(auto["erp_account_id"]) == sorted(safe["id"])


def test_typos_wait_for_review(first_links, erp_customers):
    typos = erp_customers[erp_customers["kind"] == "typo"]
    review = first_links[first_links["status"] == "review"]
    found = review.set_index("erp_account_id")["crm_account_id"]
    assert len(typos) >= 5
    for row in typos.itertuples():
        assert found.get(row.id) == row.truth, row


def test_legal_form_conflict_reviewed(first_links):
    row = _by_erp(first_links, "E900").iloc[0]
    assert row["crm_account_id"] == "Globex Corporation"
    assert row["method"] == "legal form differs"
    assert row["status"] == "review"


def test_unrelated_customer_unlinked(first_links):
    assert _by_erp(first_links, "E902").empty


def test_review_count(first_links, erp_customers):
    expected = (erp_customers["kind"] == "typo").sum() + 2
    assert (first_links["status"] == "review").sum() == expected


def test_auto_link_stamped(first_links):
    auto = first_links[first_links["status"] == "auto"]
    assert set(auto["decided_by"]) == {"matcher"}
    assert set(auto["decided_at"]) == {pd.Timestamp(FIRST_RUN)}


def test_threshold_moves_conflict(erp_customers, crm_accounts):
    crm = pd.DataFrame({"id": crm_accounts["account"], "name": crm_accounts["account"]})
    erp = erp_customers[erp_customers["id"] == "E900"][["id", "name"]]
    strict = match_entries(erp, crm, company=True, threshold=0.9)
    loose = match_entries(erp, crm, company=True, threshold=0.8)
    assert strict["status"].tolist() == ["review"]
    assert loose["status"].tolist() == ["auto"]


def test_below_min_confidence_dropped(crm_accounts):
    crm = pd.DataFrame({"id": crm_accounts["account"], "name": crm_accounts["account"]})
    erp = pd.DataFrame({"id": ["E1"], "name": ["Qwerty Holdings"]})
    assert match_entries(erp, crm, company=True).empty


def test_erp_revenue_share(mart, erp_customers):
    with connect(mart) as con:
        result = link_mart(con, mart.parent / "review", now=FIRST_RUN)
    safe = erp_customers["kind"].isin([*SAFE_KINDS, "same"])
    expected = erp_customers.loc[safe, "revenue"].sum() / erp_customers["revenue"].sum()
    assert linked_share(result.rates, ERP_REVENUE) == pytest.approx(expected)


def test_erp_customer_share(mart, erp_customers):
    with connect(mart) as con:
        result = link_mart(con, mart.parent / "review", now=FIRST_RUN)
    safe = erp_customers["kind"].isin([*SAFE_KINDS, "same"])
    share = linked_share(result.rates, ERP_CUSTOMERS)
    assert share == pytest.approx(safe.sum() / len(erp_customers))


# --- review round trip -------------------------------------------------------------


def test_review_file_lists_pending(mart):
    folder = mart.parent / "review"
    with connect(mart) as con:
        result = link_mart(con, folder, now=FIRST_RUN)
    written = pd.read_csv(folder / "account_matches.csv", dtype=str).fillna("")
    assert list(written.columns) == ACCOUNTS.review_columns
    assert len(written) == result.pending
    assert set(written["decision"]) == {""}


def _decide(folder: Path, decisions: dict[str, tuple[str, str]]) -> None:
    path = folder / "account_matches.csv"
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for erp_id, (decision, person) in decisions.items():
        rows = frame["erp_account_id"] == erp_id
        frame.loc[rows, "decision"] = decision
        frame.loc[rows, "decided_by"] = person
    frame.to_csv(path, index=False)


def _typo_id(erp_customers: pd.DataFrame) -> str:
    return erp_customers.loc[erp_customers["kind"] == "typo", "id"].iloc[0]


def test_confirmed_typo_links(mart, erp_customers):
    folder = mart.parent / "review"
    typo = _typo_id(erp_customers)
    with connect(mart) as con:
        before = link_mart(con, folder, now=FIRST_RUN)
        _decide(folder, {typo: ("confirm", "Ana")})
        after = link_mart(con, folder, now=SECOND_RUN)
    row = _by_erp(after.accounts, typo).iloc[0]
    assert row["status"] == "confirmed"
    assert row["decided_by"] == "Ana"
    assert row["decided_at"] == pd.Timestamp(SECOND_RUN)
    revenue = erp_customers.set_index("id")["revenue"]
    gained = linked_share(after.rates, ERP_REVENUE) - linked_share(
        before.rates, ERP_REVENUE
    )
    assert gained == pytest.approx(revenue[typo] / revenue.sum())


def test_rejected_pair_not_proposed(mart):
    folder = mart.parent / "review"
    with connect(mart) as con:
        first = link_mart(con, folder, now=FIRST_RUN)
        _decide(folder, {"E901": ("reject", "Ben")})
        second = link_mart(con, folder, now=SECOND_RUN)
    proposed = _by_erp(first.accounts, "E901")
    rows = _by_erp(second.accounts, "E901").set_index("status")
    assert proposed["crm_account_id"].tolist() == ["Dontechi"]
    assert rows.loc["rejected", "crm_account_id"] == "Dontechi"
    assert rows.loc["rejected", "decided_by"] == "Ben"


def test_next_candidate_after_reject(mart, crm_accounts):
    folder = mart.parent / "review"
    with connect(mart) as con:
        link_mart(con, folder, now=FIRST_RUN)
        _decide(folder, {"E901": ("reject", "Ben")})
        second = link_mart(con, folder, now=SECOND_RUN)
    ratios = {
        name: difflib.SequenceMatcher(
            None, "dontech", re.sub(r"[\W_]+", "", name.lower())
        )
        for name in crm_accounts["account"]
        if name != "Dontechi"
    }
    best = max(ratios, key=lambda name: ratios[name].ratio())
    rows = _by_erp(second.accounts, "E901").set_index("status")
    assert rows.loc["review", "crm_account_id"] == best
    assert rows.loc["review", "confidence"] == round(0.9 * ratios[best].ratio(), 3)


def test_rejected_pair_stays_out_of_rates(mart, erp_customers):
    folder = mart.parent / "review"
    with connect(mart) as con:
        first = link_mart(con, folder, now=FIRST_RUN)
        _decide(folder, {"E901": ("reject", "Ben")})
        second = link_mart(con, folder, now=SECOND_RUN)
    assert linked_share(second.rates, ERP_REVENUE) == linked_share(
        first.rates, ERP_REVENUE
    )


def test_decision_kept_in_file(mart, erp_customers):
    folder = mart.parent / "review"
    typo = _typo_id(erp_customers)
    with connect(mart) as con:
        link_mart(con, folder, now=FIRST_RUN)
        _decide(folder, {typo: ("confirm", "Ana")})
        link_mart(con, folder, now=SECOND_RUN)
    written = pd.read_csv(folder / "account_matches.csv", dtype=str).fillna("")
    row = written[written["erp_account_id"] == typo].iloc[0]
    assert (row["decision"], row["decided_by"]) == ("confirm", "Ana")


def test_decision_time_kept(mart, erp_customers):
    folder = mart.parent / "review"
    typo = _typo_id(erp_customers)
    with connect(mart) as con:
        link_mart(con, folder, now=FIRST_RUN)
        _decide(folder, {typo: ("confirm", "Ana")})
        link_mart(con, folder, now=SECOND_RUN)
        third = link_mart(con, folder, now=THIRD_RUN)
    row = _by_erp(third.accounts, typo).iloc[0]
    assert row["decided_at"] == pd.Timestamp(SECOND_RUN)


def test_deleted_file_keeps_decisions(mart, erp_customers):
    folder = mart.parent / "review"
    typo = _typo_id(erp_customers)
    with connect(mart) as con:
        link_mart(con, folder, now=FIRST_RUN)
        _decide(folder, {typo: ("confirm", "Ana")})
        link_mart(con, folder, now=SECOND_RUN)
        (folder / "account_matches.csv").unlink()
        third = link_mart(con, folder, now=THIRD_RUN)
    assert _by_erp(third.accounts, typo)["status"].tolist() == ["confirmed"]


def test_cleared_decision_reopens(mart, erp_customers):
    folder = mart.parent / "review"
    typo = _typo_id(erp_customers)
    with connect(mart) as con:
        link_mart(con, folder, now=FIRST_RUN)
        _decide(folder, {typo: ("confirm", "Ana")})
        link_mart(con, folder, now=SECOND_RUN)
        _decide(folder, {typo: ("", "")})
        third = link_mart(con, folder, now=THIRD_RUN)
    assert _by_erp(third.accounts, typo)["status"].tolist() == ["review"]


def test_semicolon_file_read(tmp_path):
    path = tmp_path / "account_matches.csv"
    path.write_text(
        "\ufefferp_account_id;erp_name;crm_account_id;decision;decided_by\n"
        "E1;Acme Inc;Acme;Confirm;Ana\n"
        "E2;Bolt;Bolt Ltd;;\n",
        encoding="utf-8",
    )
    decisions = read_decisions(path, ACCOUNTS)
    assert decisions[
        ["left_id", "right_id", "status", "decided_by"]
    ].values.tolist() == [["E1", "Acme", "confirmed", "Ana"]]


def test_bad_decision_named(mart):
    folder = mart.parent / "review"
    with connect(mart) as con:
        link_mart(con, folder, now=FIRST_RUN)
        frame = pd.read_csv(folder / "account_matches.csv", dtype=str).fillna("")
        frame.loc[1, "decision"] = "maybe"
        frame.to_csv(folder / "account_matches.csv", index=False)
        with pytest.raises(ParameterError) as raised:
            link_mart(con, folder, now=SECOND_RUN)
    message = str(raised.value)
    assert "account_matches.csv" in message
    assert "line 3, column decision: 'maybe'" in message


def test_bad_file_writes_nothing(mart):
    folder = mart.parent / "review"
    with connect(mart) as con:
        link_mart(con, folder, now=FIRST_RUN)
        before = con.execute("SELECT * FROM account_links ORDER BY ALL").fetchall()
        frame = pd.read_csv(folder / "account_matches.csv", dtype=str).fillna("")
        frame.loc[0, "decision"] = "yes please"
        frame.to_csv(folder / "account_matches.csv", index=False)
        with pytest.raises(ParameterError):
            link_mart(con, folder, now=SECOND_RUN)
        after = con.execute("SELECT * FROM account_links ORDER BY ALL").fetchall()
    assert after == before


def test_two_confirmations_rejected(tmp_path):
    path = tmp_path / "account_matches.csv"
    path.write_text(
        "erp_account_id,crm_account_id,decision\n"
        "E1,Acme,confirm\n"
        "E1,Acme Two,confirm\n",
        encoding="utf-8",
    )
    with pytest.raises(ParameterError, match="E1: lines 2, 3"):
        read_decisions(path, ACCOUNTS)


def test_missing_columns_listed(tmp_path):
    path = tmp_path / "account_matches.csv"
    path.write_text("erp_account_id,verdict\nE1,confirm\n", encoding="utf-8")
    with pytest.raises(ParameterError, match="crm_account_id, decision"):
        read_decisions(path, ACCOUNTS)


def test_unknown_crm_id_rejected(mart):
    folder = mart.parent / "review"
    folder.mkdir()
    (folder / "account_matches.csv").write_text(
        "erp_account_id,crm_account_id,decision\nE902,Northwind,confirm\n",
        encoding="utf-8",
    )
    with connect(mart) as con, pytest.raises(ParameterError, match="E902 -> Northwind"):
        link_mart(con, folder, now=FIRST_RUN)


def test_manual_link_applied(mart, erp_customers):
    folder = mart.parent / "review"
    folder.mkdir()
    (folder / "account_matches.csv").write_text(
        "erp_account_id,crm_account_id,decision,decided_by\n"
        "E902,Zotware,confirm,Cleo\n",
        encoding="utf-8",
    )
    with connect(mart) as con:
        result = link_mart(con, folder, now=FIRST_RUN)
    row = _by_erp(result.accounts, "E902").iloc[0]
    assert (row["crm_account_id"], row["method"], row["status"]) == (
        "Zotware",
        "manual",
        "confirmed",
    )


def test_threshold_checked(mart):
    with connect(mart) as con, pytest.raises(ParameterError, match="outside 0-1"):
        link_mart(con, mart.parent / "review", threshold=90)


# --- products and the real marts -------------------------------------------------


def test_gtxpro_linked(maven_mart, tmp_path):
    path = tmp_path / "mart.duckdb"
    shutil.copy(maven_mart, path)
    with connect(path) as con:
        result = link_mart(con, tmp_path / "review", now=FIRST_RUN)
    rows = result.products[["product_key", "product_id", "method", "status"]]
    assert rows.values.tolist() == [["GTXPro", "GTX Pro", "normalised name", "auto"]]
    assert result.products["confidence"].iloc[0] >= LINK_THRESHOLD


def test_gtxpro_used_in(maven_mart, tmp_path):
    path = tmp_path / "mart.duckdb"
    shutil.copy(maven_mart, path)
    with connect(path) as con:
        result = link_mart(con, tmp_path / "review", now=FIRST_RUN)
    assert result.products["used_in"].tolist() == ["opportunities"]


def test_product_review_file_empty(maven_mart, tmp_path):
    path = tmp_path / "mart.duckdb"
    shutil.copy(maven_mart, path)
    with connect(path) as con:
        link_mart(con, tmp_path / "review", now=FIRST_RUN)
    written = pd.read_csv(tmp_path / "review" / "product_matches.csv")
    assert list(written.columns) == PRODUCTS.review_columns
    assert written.empty


@pytest.fixture(scope="module")
def maven_rates(maven_mart) -> pd.DataFrame:
    with connect(maven_mart, read_only=True) as con:
        return linkage_rates(con)


@pytest.fixture(scope="module")
def pipeline(shared_data: Path) -> pd.DataFrame:
    return pd.read_csv(shared_data / "maven-crm" / "sales_pipeline.csv")


def test_maven_known_account(maven_rates, pipeline, crm_accounts):
    known = pipeline["account"].isin(crm_accounts["account"])
    assert linked_share(maven_rates, OPPS_ACCOUNT) == pytest.approx(known.mean())


def test_maven_known_product_loaded(maven_rates, pipeline, shared_data):
    products = pd.read_csv(shared_data / "maven-crm" / "products.csv")
    known = pipeline["product"].isin(products["product"])
    assert known.sum() == 8800 - 1480
    assert linked_share(maven_rates, OPPS_PRODUCT_LOADED) == pytest.approx(known.mean())


def test_maven_known_product_harmonised(maven_rates):
    assert linked_share(maven_rates, OPPS_PRODUCT) == 1.0


def test_maven_rates_proposed(maven_rates):
    assert set(maven_rates["links"]) == {"proposed"}


def test_maven_has_no_erp_rates(maven_rates):
    assert linked_share(maven_rates, ERP_REVENUE) is None


def test_rates_by_cell_add_up(maven_mart, pipeline):
    with connect(maven_mart, read_only=True) as con:
        cells = linkage_rates(con, by_cell=True)
    rows = cells[cells["measure"] == OPPS_ACCOUNT]
    assert rows["denominator"].sum() == len(pipeline)
    assert rows["numerator"].sum() == pipeline["account"].notna().sum()


def test_superstore_has_no_crm(superstore_mart, shared_data):
    with connect(superstore_mart, read_only=True) as con:
        erp, crm = account_sides(con)
        rates = linkage_rates(con)
    raw = pd.read_csv(shared_data / "superstore" / "Sample - Superstore.csv")
    assert len(erp) == raw["Customer ID"].nunique()
    assert crm.empty
    assert linked_share(rates, ERP_REVENUE) == 0.0


def test_demo_links_by_id(small_demo_mart):
    with connect(small_demo_mart, read_only=True) as con:
        links = current_links(con)
        accounts = con.execute("SELECT count(*) FROM accounts").fetchall()[0][0]
        rates = linkage_rates(con, links=links)
    assert set(links.accounts["method"]) == {"id"}
    assert len(links.accounts) == accounts
    assert linked_share(rates, ERP_REVENUE) == 1.0
