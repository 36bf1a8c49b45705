"""Link ERP customers to CRM accounts and harmonise product keys.

Two systems rarely share keys. This module matches them and keeps the
result in two mart tables:

- `account_links`: one row per ERP customer and CRM account pair, matched
  by id, or by company name once case, punctuation, spacing and legal
  forms (Inc, Ltd, GmbH, Corp, ...) are set aside.
- `product_links`: one row per product key that a fact table uses but the
  products table lacks (e.g. a pipeline's `GTXPro` for the catalogue's
  `GTX Pro`), and per ERP product matched to a CRM product when each
  system has its own catalogue.

Every match has a confidence from 0 to 1 (see `compare_entries`). Matches at
or above the threshold are linked at once, with status `auto`. Uncertain
ones get status `review` and go to a CSV review file, where a person writes
`confirm` or `reject` in the `decision` column. The next `link_mart` run
reads those decisions and stores them as `confirmed` or `rejected`, with who
decided and when. For a rejected pair it proposes the next candidate.
Decisions stay in the mart, so a deleted review file loses none of them.

Which accounts belong to which system is read from the mart: an account
is on the ERP side when transactions use it or its source loaded
transactions, and on the CRM side when opportunities use it or its source
loaded opportunities. An account on both sides links to itself by id.
"""

from __future__ import annotations

import csv
import difflib
import logging
import os
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pandas as pd

from cockpit import paths
from cockpit.errors import ParameterError
from cockpit.scope import Scope

logger = logging.getLogger(__name__)

#: Confidence at or above which a match is linked without review.
LINK_THRESHOLD = 0.9

#: Confidence below which a candidate is not even proposed for review.
MIN_CONFIDENCE = 0.7

#: Confidence of each kind of match. A spelling match scores
#: SIMILAR_NAME_WEIGHT times the difflib ratio of the two names, so it stays
#: below an exact match and, at the default threshold, always goes to review.
ID_CONFIDENCE = 1.0
SAME_NAME_CONFIDENCE = 1.0
NORMALISED_NAME_CONFIDENCE = 0.95
LEGAL_FORM_DIFFERS_CONFIDENCE = 0.8
SIMILAR_NAME_WEIGHT = 0.9

#: difflib ratio of two normalised names from which they count as similar.
MIN_SIMILARITY = 0.8

#: Spelling candidates compared per name, picked by shared letter triples,
#: so matching stays near linear in the number of names.
MAX_SPELLING_CANDIDATES = 25

#: A candidate this close in confidence to the best one is named in the note.
CLOSE_CANDIDATE = 0.05

#: Legal-form words and abbreviations, each mapped to one canonical form.
#: Dots are removed before lookup, so "S.A." is "sa" and "Co." is "co".
LEGAL_FORMS: dict[str, str] = {
    "inc": "inc",
    "incorporated": "inc",
    "corp": "corp",
    "corporation": "corp",
    "co": "co",
    "company": "co",
    "cie": "co",
    "ltd": "ltd",
    "limited": "ltd",
    "llc": "llc",
    "llp": "llp",
    "lp": "lp",
    "plc": "plc",
    "pty": "pty",
    "gmbh": "gmbh",
    "mbh": "gmbh",
    "ag": "ag",
    "kg": "kg",
    "kgaa": "kgaa",
    "ug": "ug",
    "se": "se",
    "sa": "sa",
    "sas": "sas",
    "sarl": "sarl",
    "srl": "srl",
    "spa": "spa",
    "sl": "sl",
    "bv": "bv",
    "nv": "nv",
    "ab": "ab",
    "oy": "oy",
    "oyj": "oy",
    "as": "as",
    "asa": "asa",
    "aps": "aps",
    "kk": "kk",
    "sro": "sro",
}

#: A legal form is kept as part of the name when removing it would leave
#: fewer characters than this (so "Y-corporation" stays "y corporation").
MIN_CORE_CHARS = 3

#: Link statuses; `auto` and `confirmed` count as linked.
AUTO, REVIEW, CONFIRMED, REJECTED = "auto", "review", "confirmed", "rejected"
LINKED_STATUSES = (AUTO, CONFIRMED)

#: Values a person may write in the decision column of a review file.
DECISIONS = {
    "confirm": CONFIRMED,
    "confirmed": CONFIRMED,
    "reject": REJECTED,
    "rejected": REJECTED,
}

#: Name stored in decided_by for an automatic link.
MATCHER = "matcher"

#: Name of the review files inside the review folder.
ACCOUNT_REVIEW_FILE = "account_matches.csv"
PRODUCT_REVIEW_FILE = "product_matches.csv"


@dataclass(frozen=True)
class LinkKind:
    """Column names of one kind of link in its mart table and review file."""

    table: str
    left_id: str
    left_name: str
    right_id: str
    right_name: str
    extra: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        """Columns of the link table, in order."""
        return [
            self.left_id,
            self.left_name,
            *self.extra,
            self.right_id,
            self.right_name,
            "method",
            "confidence",
            "status",
            "decided_by",
            "decided_at",
            "note",
        ]

    @property
    def review_columns(self) -> list[str]:
        """Columns of the review file, in order."""
        return [
            self.left_id,
            self.left_name,
            *self.extra,
            self.right_id,
            self.right_name,
            "method",
            "confidence",
            "note",
            "decision",
            "decided_by",
        ]

    def ddl(self) -> str:
        """CREATE TABLE statement of the link table."""
        types = {"confidence": "DOUBLE", "decided_at": "TIMESTAMP"}
        lines = [f"    {c} {types.get(c, 'VARCHAR')}" for c in self.columns]
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} (\n" + ",\n".join(lines) + "\n)"
        )


ACCOUNTS = LinkKind(
    "account_links", "erp_account_id", "erp_name", "crm_account_id", "crm_name"
)
PRODUCTS = LinkKind(
    "product_links",
    "product_key",
    "key_name",
    "product_id",
    "product_name",
    extra=("used_in",),
)


@dataclass(frozen=True)
class NameParts:
    """A name split for matching: its core words and the legal forms removed."""

    core: str
    key: str
    forms: frozenset[str]
    full_key: str


@dataclass(frozen=True)
class Entry:
    """One account or product, prepared for matching."""

    id: str
    name: str
    exact: str
    key: str
    forms: frozenset[str]
    digits: tuple[str, ...]
    full_key: str


@dataclass(frozen=True)
class LinkResult:
    """Outcome of one `link_mart` run.

    `accounts` and `products` contain every row now in the link tables.
    `rates` is `linkage_rates` after the run. `review_files` maps "accounts"
    and "products" to the review file written.
    """

    accounts: pd.DataFrame
    products: pd.DataFrame
    rates: pd.DataFrame
    review_files: dict[str, Path]

    @property
    def pending(self) -> int:
        """Number of matches waiting for a person's decision."""
        return int(
            (self.accounts["status"] == REVIEW).sum()
            + (self.products["status"] == REVIEW).sum()
        )


# --- names --------------------------------------------------------------------


def _words(name: object) -> list[str]:
    """Split a name into lower-case ASCII words; '&' becomes 'and'."""
    if name is None or (isinstance(name, float) and pd.isna(name)):
        return []
    text = unicodedata.normalize("NFKD", str(name))
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = text.replace("&", " and ").replace(".", "")
    return re.findall(r"[a-z0-9]+", text)


def company_name_parts(name: object) -> NameParts:
    """Split a company name into its core words and its legal forms.

    Case, accents, punctuation and spacing are ignored. Legal forms are
    removed from the end (repeatedly, so "GmbH & Co. KG" goes whole), as is
    a leading "the". `key` is the core without spaces, so "Green-Plus" and
    "GreenPlus" share a key; `full_key` keeps the legal forms.
    """
    words = _words(name)
    if words[:1] == ["the"] and len(words) > 1:
        words = words[1:]
    forms: set[str] = set()
    while words:
        last = words[-1]
        if last == "and" and forms:
            words = words[:-1]
            continue
        form = LEGAL_FORMS.get(last)
        if form is None or len("".join(words[:-1])) < MIN_CORE_CHARS:
            break
        forms.add(form)
        words = words[:-1]
    core = " ".join(words)
    return NameParts(
        core=core,
        key=core.replace(" ", ""),
        forms=frozenset(forms),
        full_key="".join(_words(name)),
    )


def product_name_key(name: object) -> str:
    """Return a product name in lower-case letters and digits only.

    "GTXPro", "GTX Pro" and "gtx-pro" share the key "gtxpro".
    """
    return "".join(_words(name))


def _entry(entry_id: object, name: object, company: bool) -> Entry:
    entry_id = "" if entry_id is None else str(entry_id).strip()
    name = entry_id if name is None or pd.isna(name) else str(name).strip()
    if company:
        parts = company_name_parts(name)
    else:
        key = product_name_key(name)
        parts = NameParts(core="", key=key, forms=frozenset(), full_key=key)
    return Entry(
        id=entry_id,
        name=name,
        exact=" ".join(name.casefold().split()),
        key=parts.key,
        forms=parts.forms,
        digits=tuple(re.findall(r"\d+", parts.key)),
        full_key=parts.full_key,
    )


def compare_entries(left: Entry, right: Entry) -> tuple[str, float] | None:
    """Return how `left` matches `right` and the confidence, or None.

    From most to least certain:

    - "id": the same id, 1.0.
    - "same name": the same name ignoring case and spacing, 1.0.
    - "normalised name": the same name once punctuation and legal forms are
      set aside, 0.95.
    - "legal form differs": as above, but both names carry legal forms and
      these differ, 0.8. Inc and GmbH suggest two legal entities.
    - "similar name": 0.9 x the difflib ratio of the two names, with or
      without their legal forms. The ratio must be at least MIN_SIMILARITY
      and both names must contain the same numbers.
    """
    if left.id and left.id == right.id:
        return "id", ID_CONFIDENCE
    if left.exact and left.exact == right.exact:
        return "same name", SAME_NAME_CONFIDENCE
    if not left.key or not right.key:
        return None
    if left.key == right.key:
        if left.forms and right.forms and not left.forms & right.forms:
            return "legal form differs", LEGAL_FORM_DIFFERS_CONFIDENCE
        return "normalised name", NORMALISED_NAME_CONFIDENCE
    if left.digits != right.digits:
        return None
    ratio = difflib.SequenceMatcher(None, left.key, right.key).ratio()
    if left.full_key != left.key or right.full_key != right.key:
        # A typo inside a legal form ("Corporatoin") hides the form, so the
        # names are also compared whole.
        whole = difflib.SequenceMatcher(None, left.full_key, right.full_key)
        ratio = max(ratio, whole.ratio())
    if ratio < MIN_SIMILARITY:
        return None
    return "similar name", round(SIMILAR_NAME_WEIGHT * ratio, 3)


# --- matching -----------------------------------------------------------------


def _triples(key: str) -> set[str]:
    padded = f"  {key} "
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


class _Index:
    """Right-hand entries indexed by id, exact name, key and letter triples."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self.entries = list(entries)
        self.by_id: dict[str, list[int]] = defaultdict(list)
        self.by_exact: dict[str, list[int]] = defaultdict(list)
        self.by_key: dict[str, list[int]] = defaultdict(list)
        self.by_triple: dict[str, list[int]] = defaultdict(list)
        for i, entry in enumerate(self.entries):
            self.by_id[entry.id].append(i)
            self.by_exact[entry.exact].append(i)
            self.by_key[entry.key].append(i)
            for triple in _triples(entry.key):
                self.by_triple[triple].append(i)

    def exact_candidates(self, left: Entry) -> set[int]:
        """Entries sharing the id, the name or the normalised key of `left`."""
        found = set(self.by_id.get(left.id, ()))
        found.update(self.by_exact.get(left.exact, ()))
        found.update(self.by_key.get(left.key, ()))
        return found

    def spelling_candidates(self, left: Entry) -> set[int]:
        """Entries sharing the most letter triples with the key of `left`."""
        shared: Counter[int] = Counter()
        for triple in _triples(left.key):
            shared.update(self.by_triple.get(triple, ()))
        return {i for i, _ in shared.most_common(MAX_SPELLING_CANDIDATES)}


def _entries(frame: pd.DataFrame, company: bool) -> list[Entry]:
    entries = [
        _entry(row[0], row[1], company)
        for row in frame[["id", "name"]].itertuples(index=False)
    ]
    return [e for e in entries if e.id]


def match_entries(
    left: pd.DataFrame,
    right: pd.DataFrame,
    *,
    company: bool,
    threshold: float = LINK_THRESHOLD,
    decisions: pd.DataFrame | None = None,
    now: datetime | None = None,
) -> pd.DataFrame:
    """Match every `left` entry to its best `right` entry.

    `left` and `right` have columns id and name (name may be empty). With
    `company` names are compared as company names, else as product names.
    `decisions` (columns left_id, right_id, status, decided_by, decided_at)
    are a person's confirmations and rejections: a confirmed pair is the
    link whatever the matcher finds, and a rejected pair is never proposed
    again. Several right entries may carry the same id (a product by name
    and by id); the best match per id counts.

    Returns one row per link or candidate with columns left_id, left_name,
    right_id, right_name, method, confidence, status, decided_by,
    decided_at, note. Status is `auto` at or above `threshold`, `review`
    below it or when two right entries tie for the best match, and
    `confirmed` or `rejected` for decided pairs. Left entries without any
    candidate of at least MIN_CONFIDENCE get no row.
    """
    now = now or _now()
    index = _Index(_entries(right, company))
    names: dict[str, str] = {}
    for other in index.entries:
        names.setdefault(other.id, other.name)
    decided = _decision_map(decisions)
    rows: list[dict] = []
    for entry in _entries(left, company):
        found = _compare_all(entry, index, index.exact_candidates(entry))
        # A spelling match scores at most SIMILAR_NAME_WEIGHT, so it cannot
        # beat a normalised-name match. Skipping the search then saves time,
        # but the note names no look-alike spelling.
        best = max((c for _, c in found.values()), default=0.0)
        if best < NORMALISED_NAME_CONFIDENCE:
            spelled = index.spelling_candidates(entry)
            for right_id, result in _compare_all(entry, index, spelled).items():
                if result[1] > found.get(right_id, ("", -1.0))[1]:
                    found[right_id] = result
        mine = decided.get(entry.id, {})
        for right_id, decision in sorted(mine.items()):
            method, confidence = found.get(right_id, ("manual", None))
            rows.append(
                _link(entry, right_id, names.get(right_id), method, confidence)
                | decision
            )
        if any(d["status"] == CONFIRMED for d in mine.values()):
            continue
        ranked = sorted(
            (
                (confidence, right_id, method)
                for right_id, (method, confidence) in found.items()
                if confidence >= MIN_CONFIDENCE and right_id not in mine
            ),
            key=lambda item: (-item[0], item[1]),
        )
        if not ranked:
            continue
        confidence, right_id, method = ranked[0]
        row = _link(entry, right_id, names[right_id], method, confidence)
        tied = [r for c, r, _ in ranked[1:] if c == confidence]
        close = [
            f"{names[r]} ({c:.2f})"
            for c, r, _ in ranked[1:4]
            if confidence - c <= CLOSE_CANDIDATE
        ]
        if tied:
            row["note"] = f"tie with {', '.join(names[r] for r in tied)}"
        elif close:
            row["note"] = f"also close: {', '.join(close)}"
        if confidence >= threshold and not tied:
            row.update(status=AUTO, decided_by=MATCHER, decided_at=now)
        rows.append(row)
    return pd.DataFrame(rows, columns=_GENERIC_COLUMNS)


def _compare_all(
    entry: Entry, index: _Index, candidates: Iterable[int]
) -> dict[str, tuple[str, float]]:
    """Return the best (method, confidence) per right id among `candidates`."""
    found: dict[str, tuple[str, float]] = {}
    for i in sorted(candidates):
        other = index.entries[i]
        result = compare_entries(entry, other)
        if result and result[1] > found.get(other.id, ("", -1.0))[1]:
            found[other.id] = result
    return found


_GENERIC_COLUMNS = [
    "left_id",
    "left_name",
    "right_id",
    "right_name",
    "method",
    "confidence",
    "status",
    "decided_by",
    "decided_at",
    "note",
]


def _link(entry: Entry, right_id, right_name, method, confidence) -> dict:
    return {
        "left_id": entry.id,
        "left_name": entry.name,
        "right_id": right_id,
        "right_name": right_name,
        "method": method,
        "confidence": confidence,
        "status": REVIEW,
        "decided_by": None,
        "decided_at": None,
        "note": "",
    }


def _decision_map(decisions: pd.DataFrame | None) -> dict[str, dict[str, dict]]:
    decided: dict[str, dict[str, dict]] = defaultdict(dict)
    if decisions is None:
        return decided
    for row in decisions.itertuples(index=False):
        decided[row.left_id][row.right_id] = {
            "status": row.status,
            "decided_by": row.decided_by,
            "decided_at": row.decided_at,
        }
    return decided


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)


# --- the two sides in the mart ------------------------------------------------


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]
    ).fetchall()[0][0]
    views = con.execute(
        "SELECT count(*) FROM duckdb_views() WHERE view_name = ?", [name]
    ).fetchall()[0][0]
    return bool(found or views)


def _sources_of(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    return [
        row[0]
        for row in con.execute(
            "SELECT DISTINCT source FROM load_log WHERE table_name = ? ORDER BY 1",
            [table],
        ).fetchall()
    ]


def account_sides(
    con: duckdb.DuckDBPyConnection,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return the ERP customers and the CRM accounts of the mart.

    Each frame has columns id and name. An account is an ERP customer when
    transactions use its id or its source loaded transactions, and a CRM
    account when opportunities use its id or its source loaded
    opportunities. Ids that transactions use but the accounts table lacks
    are ERP customers without a name.
    """
    erp = _side(con, "transactions")
    crm = _side(con, "opportunities")
    return erp, crm


def _side(con: duckdb.DuckDBPyConnection, fact: str) -> pd.DataFrame:
    sources = _sources_of(con, fact)
    marks = ", ".join("?" for _ in sources) or "NULL"
    return con.execute(
        f"""
        SELECT account_id AS id, name FROM accounts
        WHERE source IN ({marks})
           OR account_id IN (SELECT account_id FROM {fact})
        UNION
        SELECT DISTINCT f.account_id, NULL FROM {fact} f
        WHERE f.account_id IS NOT NULL AND trim(f.account_id) <> ''
          AND f.account_id NOT IN (SELECT account_id FROM accounts
                                   WHERE account_id IS NOT NULL)
        ORDER BY 1
        """,
        sources,
    ).df()


def product_keys(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Return product keys that facts use but the products table lacks.

    Opportunities are read in their latest snapshot. Columns: id, name
    (the key itself), used_in (the fact tables that use the key, comma
    separated), rows.
    """
    frames = []
    for table in ("opportunities_current", "transactions"):
        frames.append(
            con.execute(
                f"""
                SELECT product_id AS id, count(*) AS rows FROM {table}
                WHERE product_id IS NOT NULL AND trim(product_id) <> ''
                  AND product_id NOT IN (SELECT product_id FROM products
                                         WHERE product_id IS NOT NULL)
                GROUP BY product_id
                """
            )
            .df()
            .assign(used_in=table.replace("_current", ""))
        )
    keys = pd.concat(frames, ignore_index=True)
    if keys.empty:
        return pd.DataFrame(columns=["id", "name", "used_in", "rows"])
    grouped = keys.groupby("id", as_index=False).agg(
        used_in=("used_in", lambda v: ", ".join(sorted(v))), rows=("rows", "sum")
    )
    return grouped.assign(name=grouped["id"])[["id", "name", "used_in", "rows"]]


def product_sides(
    con: duckdb.DuckDBPyConnection,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ERP-only products and CRM-only products, for cross-system links.

    A product is ERP-only when its source loaded transactions but no
    opportunities, and CRM-only the other way round. A mart where one
    source loads both has one catalogue, and both frames are empty.
    Columns: id, name.
    """
    erp_sources = set(_sources_of(con, "transactions"))
    crm_sources = set(_sources_of(con, "opportunities"))
    frames = []
    for mine, theirs in ((erp_sources, crm_sources), (crm_sources, erp_sources)):
        only = sorted(mine - theirs)
        marks = ", ".join("?" for _ in only) or "NULL"
        frames.append(
            con.execute(
                f"SELECT product_id AS id, name FROM products "
                f"WHERE source IN ({marks}) ORDER BY 1",
                only,
            ).df()
        )
    erp, crm = frames
    if erp.empty or crm.empty:
        empty = pd.DataFrame(columns=["id", "name"])
        return empty, empty.copy()
    return erp, crm


def propose_links(
    con: duckdb.DuckDBPyConnection,
    *,
    threshold: float = LINK_THRESHOLD,
    account_decisions: pd.DataFrame | None = None,
    product_decisions: pd.DataFrame | None = None,
    now: datetime | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Match accounts and products in the open mart `con` without writing.

    Decisions are frames as `read_decisions` returns them. Returns the
    account links and product links with the columns of the account_links
    and product_links tables.
    """
    now = now or _now()
    erp, crm = account_sides(con)
    accounts = match_entries(
        erp,
        crm,
        company=True,
        threshold=threshold,
        decisions=account_decisions,
        now=now,
    )
    accounts = _named(accounts, ACCOUNTS)

    keys = product_keys(con)
    catalogue = con.execute(
        "SELECT product_id AS id, name FROM products UNION ALL "
        "SELECT product_id, product_id FROM products"
    ).df()
    orphan_links = match_entries(
        keys,
        catalogue,
        company=False,
        threshold=threshold,
        decisions=_decisions_for(product_decisions, set(keys["id"])),
        now=now,
    )
    used_in = dict(zip(keys["id"], keys["used_in"], strict=True))
    orphan_links["used_in"] = orphan_links["left_id"].map(used_in)

    erp_products, crm_products = product_sides(con)
    cross = match_entries(
        erp_products,
        crm_products,
        company=False,
        threshold=threshold,
        decisions=_decisions_for(product_decisions, set(erp_products["id"])),
        now=now,
    )
    cross["used_in"] = "ERP products"
    products = _named(
        pd.concat([orphan_links, cross], ignore_index=True)
        if len(cross)
        else orphan_links,
        PRODUCTS,
    )
    return accounts, products


def _decisions_for(
    decisions: pd.DataFrame | None, left_ids: set[str]
) -> pd.DataFrame | None:
    if decisions is None:
        return None
    return decisions[decisions["left_id"].isin(left_ids)]


def _named(frame: pd.DataFrame, kind: LinkKind) -> pd.DataFrame:
    renamed = frame.rename(
        columns={
            "left_id": kind.left_id,
            "left_name": kind.left_name,
            "right_id": kind.right_id,
            "right_name": kind.right_name,
        }
    )
    for column in kind.columns:
        if column not in renamed:
            renamed[column] = None
    renamed["confidence"] = renamed["confidence"].astype("float64")
    renamed["decided_at"] = pd.to_datetime(renamed["decided_at"])
    return renamed[kind.columns].reset_index(drop=True)


# --- review files -------------------------------------------------------------


def default_review_dir() -> Path:
    """Return the folder of the review files: parameters/review of the project."""
    return paths.PARAMETERS_DIR / "review"


def read_decisions(path: str | Path, kind: LinkKind = ACCOUNTS) -> pd.DataFrame:
    """Read the decisions a person wrote into a review file.

    The file is CSV with a header; the delimiter is detected, so a file
    saved by a spreadsheet with semicolons reads too. Rows whose decision is
    blank are skipped. A missing file gives no decisions. Returns columns
    left_id, right_id, status (confirmed or rejected), decided_by
    (the file's decided_by, else "review file"), decided_at (NaT), line.

    Raises ParameterError listing every missing column, every decision that
    is not confirm or reject, and every left id confirmed for two different
    right ids, with the file's line numbers.
    """
    path = Path(path)
    columns = ["left_id", "right_id", "status", "decided_by", "decided_at", "line"]
    if not path.is_file():
        return pd.DataFrame(columns=columns)
    frame = _read_review_csv(path)
    missing = [c for c in (kind.left_id, kind.right_id, "decision") if c not in frame]
    if missing:
        raise ParameterError(
            f"review file {path} lacks column(s) {', '.join(missing)}; keep the "
            f"header the cockpit wrote: {', '.join(kind.review_columns)}"
        )
    frame["line"] = range(2, len(frame) + 2)
    frame["decision"] = frame["decision"].str.strip().str.lower()
    decided = frame[frame["decision"] != ""]
    problems = []
    for row in decided.itertuples(index=False):
        if row.decision not in DECISIONS:
            problems.append(
                f"line {row.line}, column decision: {row.decision!r} is not "
                "confirm or reject"
            )
        if not getattr(row, kind.left_id).strip():
            problems.append(f"line {row.line}, column {kind.left_id}: empty")
        if not getattr(row, kind.right_id).strip():
            problems.append(f"line {row.line}, column {kind.right_id}: empty")
    if problems:
        raise ParameterError(
            f"review file {path} has invalid rows: {'; '.join(problems)}. Write "
            "confirm or reject in the decision column, or leave it blank"
        )
    decided_by = (
        decided["decided_by"].str.strip()
        if "decided_by" in decided
        else pd.Series("", index=decided.index)
    )
    result = pd.DataFrame(
        {
            "left_id": decided[kind.left_id].str.strip(),
            "right_id": decided[kind.right_id].str.strip(),
            "status": decided["decision"].map(DECISIONS),
            "decided_by": decided_by.where(decided_by != "", "review file"),
            "decided_at": pd.NaT,
            "line": decided["line"],
        }
    )
    _check_single_confirmation(result, path, kind)
    return result.drop_duplicates(["left_id", "right_id"], keep="last")


def _read_review_csv(path: Path) -> pd.DataFrame:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        sample = handle.read(4096)
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    try:
        return pd.read_csv(
            path,
            sep=delimiter,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
        )
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise ParameterError(
            f"review file {path} cannot be read as UTF-8 CSV: {exc}; save it "
            "as CSV UTF-8 from the spreadsheet"
        ) from exc


def _check_single_confirmation(
    decisions: pd.DataFrame, path: Path, kind: LinkKind
) -> None:
    confirmed = decisions[decisions["status"] == CONFIRMED]
    confirmed = confirmed.drop_duplicates(["left_id", "right_id"])
    repeated = confirmed[confirmed["left_id"].duplicated(keep=False)]
    if repeated.empty:
        return
    lines = "; ".join(
        f"{left_id}: lines {', '.join(str(n) for n in group['line'])}"
        for left_id, group in repeated.groupby("left_id")
    )
    raise ParameterError(
        f"review file {path} confirms more than one {kind.right_id} for the "
        f"same {kind.left_id} ({lines}); confirm one and reject the others"
    )


def write_review(path: str | Path, links: pd.DataFrame, kind: LinkKind) -> Path:
    """Write the review file: pending matches first, then every decision.

    Pending matches (status review) leave the decision column blank and are
    sorted by falling confidence. Decided pairs keep their decision, so a
    person can still change it. The file is replaced in one step.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pending = links[links["status"] == REVIEW].sort_values(
        ["confidence", kind.left_id], ascending=[False, True]
    )
    decided = links[links["status"].isin([CONFIRMED, REJECTED])].sort_values(
        [kind.left_id, kind.right_id]
    )
    decision_word = {CONFIRMED: "confirm", REJECTED: "reject"}
    rows = pd.concat([pending, decided], ignore_index=True)
    out = rows.reindex(columns=kind.review_columns)
    out["decision"] = rows["status"].map(decision_word).fillna("")
    out["decided_by"] = rows["decided_by"].where(rows["status"] != REVIEW, "")
    out["confidence"] = rows["confidence"].round(3)
    partial = path.with_name(path.name + ".partial")
    out.to_csv(partial, index=False, encoding="utf-8")
    os.replace(partial, path)
    logger.info(
        "%s: %d match(es) to review, %d decision(s) kept",
        path,
        len(pending),
        len(decided),
    )
    return path


# --- link tables in the mart --------------------------------------------------


def create_link_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create account_links and product_links when they do not exist yet."""
    for kind in (ACCOUNTS, PRODUCTS):
        con.execute(kind.ddl())


def stored_links(
    con: duckdb.DuckDBPyConnection, kind: LinkKind = ACCOUNTS
) -> pd.DataFrame | None:
    """Return the rows of a link table, or None when the mart has no such table."""
    if not _has_table(con, kind.table):
        return None
    columns = ", ".join(kind.columns)
    return con.execute(f"SELECT {columns} FROM {kind.table}").df()


def _stored_decisions(con, kind: LinkKind) -> pd.DataFrame | None:
    stored = stored_links(con, kind)
    if stored is None:
        return None
    decided = stored[stored["status"].isin([CONFIRMED, REJECTED])]
    return pd.DataFrame(
        {
            "left_id": decided[kind.left_id],
            "right_id": decided[kind.right_id],
            "status": decided["status"],
            "decided_by": decided["decided_by"],
            "decided_at": decided["decided_at"],
        }
    )


def _merge_decisions(
    stored: pd.DataFrame | None,
    from_file: pd.DataFrame,
    path: Path,
    kind: LinkKind,
    now: datetime,
) -> pd.DataFrame:
    """Overlay the file's decisions on the stored ones.

    A pair listed in the file takes the file's decision, a blank decision
    there clearing the stored one. A pair the file no longer lists keeps its
    stored decision. An unchanged decision keeps its first decided_at.
    """
    stored = stored if stored is not None else pd.DataFrame(columns=_DECISION_COLUMNS)
    listed = _listed_pairs(path, kind)
    keep = [
        (left, right) not in listed
        for left, right in zip(stored["left_id"], stored["right_id"], strict=True)
    ]
    kept = stored[keep]
    previous = {
        (row.left_id, row.right_id): (row.status, row.decided_at)
        for row in stored.itertuples(index=False)
    }
    new_rows = from_file.copy()
    new_rows["decided_at"] = [
        previous[(left, right)][1]
        if previous.get((left, right), (None,))[0] == status
        else now
        for left, right, status in zip(
            new_rows["left_id"], new_rows["right_id"], new_rows["status"], strict=True
        )
    ]
    parts = [frame for frame in (kept, new_rows[_DECISION_COLUMNS]) if len(frame)]
    if not parts:
        return pd.DataFrame(columns=_DECISION_COLUMNS)
    return pd.concat(parts, ignore_index=True)


_DECISION_COLUMNS = ["left_id", "right_id", "status", "decided_by", "decided_at"]


def _listed_pairs(path: Path, kind: LinkKind) -> set[tuple[str, str]]:
    """Return the (left id, right id) pairs a review file lists, decided or not."""
    if not path.is_file():
        return set()
    frame = _read_review_csv(path)[[kind.left_id, kind.right_id]]
    return {
        (left.strip(), right.strip()) for left, right in frame.itertuples(index=False)
    }


def link_mart(
    con: duckdb.DuckDBPyConnection,
    review_dir: str | Path | None = None,
    *,
    threshold: float = LINK_THRESHOLD,
    now: datetime | None = None,
) -> LinkResult:
    """Match accounts and products in the writable mart `con` and store the links.

    Reads the decisions in `review_dir` (default parameters/review of the
    project): account_matches.csv and product_matches.csv. Replaces the
    rows of account_links and product_links in one transaction, then
    rewrites both review files with the matches still to decide and every
    decision. `threshold` is the confidence (0-1) from which a match links
    without review. `now` stamps new decisions and automatic links (default:
    the current UTC time).

    Raises ParameterError when a review file is invalid (nothing is written
    then) or `threshold` is outside 0-1.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ParameterError(
            f"link threshold {threshold} is outside 0-1; use e.g. {LINK_THRESHOLD}"
        )
    now = now or _now()
    folder = Path(review_dir) if review_dir is not None else default_review_dir()
    files = {
        "accounts": folder / ACCOUNT_REVIEW_FILE,
        "products": folder / PRODUCT_REVIEW_FILE,
    }
    create_link_tables(con)
    decisions = {}
    for name, kind in (("accounts", ACCOUNTS), ("products", PRODUCTS)):
        from_file = read_decisions(files[name], kind)
        decisions[name] = _merge_decisions(
            _stored_decisions(con, kind), from_file, files[name], kind, now
        )
    accounts, products = propose_links(
        con,
        threshold=threshold,
        account_decisions=decisions["accounts"],
        product_decisions=decisions["products"],
        now=now,
    )
    _check_confirmed_targets(accounts, ACCOUNTS, files["accounts"])
    _check_confirmed_targets(products, PRODUCTS, files["products"])
    con.begin()
    try:
        for kind, frame in ((ACCOUNTS, accounts), (PRODUCTS, products)):
            con.execute(f"DELETE FROM {kind.table}")
            if len(frame):
                con.register("_links", frame)
                columns = ", ".join(kind.columns)
                con.execute(
                    f"INSERT INTO {kind.table} ({columns}) SELECT {columns} FROM _links"
                )
                con.unregister("_links")
        con.commit()
    except duckdb.Error:
        con.rollback()
        raise
    write_review(files["accounts"], accounts, ACCOUNTS)
    write_review(files["products"], products, PRODUCTS)
    result = LinkResult(
        accounts=accounts,
        products=products,
        rates=linkage_rates(con, links=Links(accounts, products, "stored")),
        review_files=files,
    )
    logger.info(
        "linked %d account(s) and %d product key(s); %d match(es) wait for review",
        int(accounts["status"].isin(LINKED_STATUSES).sum()),
        int(products["status"].isin(LINKED_STATUSES).sum()),
        result.pending,
    )
    return result


def _check_confirmed_targets(links: pd.DataFrame, kind: LinkKind, path: Path) -> None:
    """Raise ParameterError when a confirmed link points to an unknown id."""
    unknown = links[(links["status"] == CONFIRMED) & links[kind.right_name].isna()]
    if unknown.empty:
        return
    pairs = ", ".join(
        f"{left} -> {right}"
        for left, right in unknown[[kind.left_id, kind.right_id]].itertuples(
            index=False
        )
    )
    raise ParameterError(
        f"review file {path} confirms {kind.right_id} values the mart does not "
        f"have: {pairs}; correct the id or clear the decision"
    )


# --- linkage rates ------------------------------------------------------------

RATE_COLUMNS = [
    "region",
    "business_unit",
    "measure",
    "unit",
    "numerator",
    "denominator",
    "share",
    "links",
]

#: Measures of `linkage_rates`, in report order.
ERP_REVENUE = "ERP revenue with a CRM account"
ERP_CUSTOMERS = "ERP customers with a CRM account"
OPPS_ACCOUNT = "opportunities with a known account"
OPPS_PRODUCT_LOADED = "opportunities with a known product, as loaded"
OPPS_PRODUCT = "opportunities with a known product, after harmonisation"


@dataclass(frozen=True)
class Links:
    """Account and product links, and where they come from.

    `basis` is "stored" (the mart's link tables), "proposed" (matched now,
    without review decisions, because the mart has no link tables yet) or
    "given" (frames a caller passed).
    """

    accounts: pd.DataFrame
    products: pd.DataFrame
    basis: str = "given"

    @property
    def pending(self) -> int:
        """Number of matches waiting for a person's decision."""
        return int(
            (self.accounts["status"] == REVIEW).sum()
            + (self.products["status"] == REVIEW).sum()
        )


def current_links(con: duckdb.DuckDBPyConnection) -> Links:
    """Return the mart's stored links, or links proposed now when none are stored.

    Works on a read-only connection: proposing writes nothing.
    """
    accounts = stored_links(con, ACCOUNTS)
    products = stored_links(con, PRODUCTS)
    if accounts is not None and products is not None:
        return Links(accounts, products, "stored")
    accounts, products = propose_links(con)
    return Links(accounts, products, "proposed")


def linkage_rates(
    con: duckdb.DuckDBPyConnection,
    scope: Scope | None = None,
    *,
    by_cell: bool = False,
    links: Links | None = None,
) -> pd.DataFrame:
    """Measure how well ERP and CRM data link, within `scope`.

    Measures:

    - ERP revenue (sum of net_revenue, reporting currency) whose customer
      has a CRM account, and ERP customers with a CRM account.
    - Opportunities in their latest snapshot whose account is in the
      accounts table.
    - Opportunities whose product is in the products table as loaded, and
      after the product links.

    `links` defaults to `current_links(con)`. Only links with status auto
    or confirmed count, and the links column gives their basis.

    With `by_cell` there is one row per region x business unit and measure
    (region or unit empty where the rows lack one), else one row per
    measure. A measure whose table has no rows in scope is left out.
    Columns: region, business_unit, measure, unit (revenue or rows),
    numerator, denominator, share (0-1).
    """
    scope = scope or Scope()
    links = links or current_links(con)
    accounts, products = links.accounts, links.products
    linked_accounts = accounts.loc[
        accounts["status"].isin(LINKED_STATUSES), "erp_account_id"
    ]
    linked_keys = products.loc[products["status"].isin(LINKED_STATUSES), "product_key"]
    frames = [
        _transaction_rates(con, scope, by_cell, sorted(set(linked_accounts.dropna()))),
        _opportunity_rates(con, scope, by_cell, sorted(set(linked_keys.dropna()))),
    ]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=RATE_COLUMNS)
    rates = pd.concat(frames, ignore_index=True)
    rates["share"] = [
        n / d if d else None
        for n, d in zip(rates["numerator"], rates["denominator"], strict=True)
    ]
    rates["links"] = links.basis
    if not by_cell:
        rates["region"] = scope.region
        rates["business_unit"] = scope.business_unit
    return rates[RATE_COLUMNS]


def _transaction_rates(
    con, scope: Scope, by_cell: bool, linked: list[str]
) -> pd.DataFrame:
    where, params = scope.where("t.")
    cell = "t.region, t.business_unit" if by_cell else "NULL, NULL"
    rows = con.execute(
        f"""
        SELECT {cell},
               coalesce(sum(t.net_revenue) FILTER (WHERE l.id IS NOT NULL), 0),
               sum(t.net_revenue),
               count(DISTINCT t.account_id) FILTER (WHERE l.id IS NOT NULL),
               count(DISTINCT t.account_id), count(*)
        FROM transactions t
        LEFT JOIN (SELECT DISTINCT unnest(?::VARCHAR[]) AS id) l
               ON l.id = t.account_id
        WHERE {where}
        GROUP BY ALL HAVING count(*) > 0
        ORDER BY ALL
        """,
        [linked, *params],
    ).fetchall()
    out = []
    for region, unit, linked, revenue, linked_customers, customers, _ in rows:
        out.append(_rate(region, unit, ERP_REVENUE, "revenue", linked, revenue))
        out.append(
            _rate(region, unit, ERP_CUSTOMERS, "rows", linked_customers, customers)
        )
    return pd.DataFrame(out)


def _opportunity_rates(
    con, scope: Scope, by_cell: bool, linked: list[str]
) -> pd.DataFrame:
    where, params = scope.where("o.")
    cell = "o.region, o.business_unit" if by_cell else "NULL, NULL"
    rows = con.execute(
        f"""
        SELECT {cell}, count(*),
               count(*) FILTER (WHERE a.account_id IS NOT NULL),
               count(*) FILTER (WHERE p.product_id IS NOT NULL),
               count(*) FILTER (WHERE p.product_id IS NOT NULL OR l.id IS NOT NULL)
        FROM opportunities_current o
        LEFT JOIN (SELECT DISTINCT account_id FROM accounts) a
               ON a.account_id = o.account_id
        LEFT JOIN (SELECT DISTINCT product_id FROM products) p
               ON p.product_id = o.product_id
        LEFT JOIN (SELECT DISTINCT unnest(?::VARCHAR[]) AS id) l
               ON l.id = o.product_id
        WHERE {where}
        GROUP BY ALL HAVING count(*) > 0
        ORDER BY ALL
        """,
        [linked, *params],
    ).fetchall()
    out = []
    for region, unit, total, with_account, loaded, harmonised in rows:
        out.append(_rate(region, unit, OPPS_ACCOUNT, "rows", with_account, total))
        out.append(_rate(region, unit, OPPS_PRODUCT_LOADED, "rows", loaded, total))
        out.append(_rate(region, unit, OPPS_PRODUCT, "rows", harmonised, total))
    return pd.DataFrame(out)


def _rate(region, unit, measure, kind, numerator, denominator) -> dict:
    return {
        "region": region,
        "business_unit": unit,
        "measure": measure,
        "unit": kind,
        "numerator": float(numerator or 0),
        "denominator": float(denominator or 0),
    }


def linked_share(rates: pd.DataFrame, measure: str) -> float | None:
    """Return the share of one measure of a `linkage_rates` frame, summed over cells.

    Returns None when the frame lacks the measure or its denominator is 0.
    """
    rows = rates[rates["measure"] == measure]
    denominator = rows["denominator"].sum()
    if rows.empty or not denominator:
        return None
    return float(rows["numerator"].sum() / denominator)
