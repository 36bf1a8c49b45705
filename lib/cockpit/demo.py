"""Built-in demo company: a generated B2B seller loaded into a fresh mart.

`build_demo` writes a mart that looks like the exports of a mid-sized
industrial supplier that invoices in euro. At scale 1 it has 4 regions, 3
business units, about 40 sellers in 8 teams and about 1,500 accounts. The
mart holds invoice lines from 2023-01-01 to the as-of date, a CRM pipeline
with 26 weekly snapshots, seller activities, regional market indicators
and 2026 revenue targets.

Everything is drawn from numpy generators seeded with `seed` and a fixed
stream number per table and month, so the same seed and scale give the
same table contents on the same numpy version. Transactions and activities
are generated and loaded one month at a time (and, above about 250,000
expected lines a month, one block of accounts at a time), so memory stays
bounded at any scale. Every table passes through `load_frame`, which keeps
the load log balanced as for real exports.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from cockpit.errors import ParameterError
from cockpit.mart import LoadReport, connect, fill_dimensions, load_frame, set_meta
from cockpit.mart.store import check_mart_file

logger = logging.getLogger(__name__)

COMPANY = "Demo company"
CURRENCY = "EUR"
#: Fixed as-of date, so two builds with the same seed are identical.
AS_OF = date(2026, 9, 30)
HISTORY_START = date(2023, 1, 1)
EXTERNAL_START = date(2022, 1, 1)
#: Last month of the indicators. The months after AS_OF are the scenario.
EXTERNAL_END = date(2027, 6, 1)
FX_START = date(2022, 1, 1)
FX_END = date(2027, 12, 1)
SNAPSHOT_WEEKS = 26
TARGET_YEAR = 2026
TARGET_GROWTH = 0.05
TARGETS_CREATED_AT = datetime(2025, 12, 15, 9, 0)
SOURCE = "demo"

#: Invoice lines, accounts and opportunities at scale 1. Lines grow with
#: scale, accounts and opportunities with its square root.
LINES_AT_SCALE_1 = 150_000
ACCOUNTS_AT_SCALE_1 = 1_500
OPPORTUNITIES_AT_SCALE_1 = 6_000
MIN_SCALE = 0.01
#: Expected invoice lines per generated chunk. A month with more is split
#: into blocks of accounts.
CHUNK_LINES = 250_000

REGIONS = ("North", "South", "East", "West")
BUSINESS_UNITS = ("Equipment", "Consumables", "Services")
INDUSTRIES = (
    "Manufacturing",
    "Construction",
    "Automotive",
    "Food & Beverage",
    "Chemicals",
    "Logistics",
    "Healthcare",
)
SIZE_BANDS = ("small", "medium", "large", "enterprise")
ROLE_TYPES = ("hunter", "grower", "key_account_manager")
ACTIVITY_TYPES = ("visit", "call", "email", "internal")

# Random stream numbers. Each table draws from its own stream, so a change
# in one table's generator leaves the others as they were.
_STREAM_PRODUCTS = 1
_STREAM_REPS = 2
_STREAM_ACCOUNTS = 3
_STREAM_MACRO = 4
_STREAM_TRANSACTIONS = 10
_STREAM_OPPORTUNITIES = 11
_STREAM_ACTIVITIES = 12


@dataclass(frozen=True)
class _ProductLine:
    business_unit: str
    name: str
    stem: str
    products: int
    price_range: tuple[float, float]
    quantity_mean: float


_PRODUCT_LINES = (
    _ProductLine("Equipment", "Compressors", "Compressor", 5, (6_000, 28_000), 1.2),
    _ProductLine("Equipment", "Pumps", "Pump", 5, (1_500, 9_000), 1.6),
    _ProductLine("Equipment", "Generators", "Generator", 5, (4_000, 35_000), 1.1),
    _ProductLine("Equipment", "Material Handling", "Lift", 5, (3_000, 20_000), 1.2),
    _ProductLine("Consumables", "Filters", "Filter", 6, (20, 160), 20),
    _ProductLine("Consumables", "Lubricants", "Lubricant", 6, (15, 110), 25),
    _ProductLine("Consumables", "Safety Supplies", "Safety Kit", 6, (8, 90), 30),
    _ProductLine("Consumables", "Wear Parts", "Wear Part", 6, (30, 400), 8),
    _ProductLine(
        "Services", "Maintenance Contracts", "Maintenance Plan", 4, (1_500, 9_000), 1.3
    ),
    _ProductLine("Services", "Repairs", "Repair Hour", 4, (90, 150), 8),
    _ProductLine("Services", "Installation", "Installation", 4, (1_000, 6_000), 1.2),
    _ProductLine("Services", "Training", "Training Course", 4, (400, 2_000), 3),
)

#: Gross margin at list price per business unit. Discounts lower the
#: realised margin by a few points.
_LIST_MARGIN = {"Equipment": 0.40, "Consumables": 0.28, "Services": 0.65}
#: Share of an account's usual discount that each business unit grants.
_DISCOUNT_SHARE = {"Equipment": 1.0, "Consumables": 0.8, "Services": 0.5}

#: Invoice-line frequency of each product line (columns in _PRODUCT_LINES
#: order) for each industry (rows in INDUSTRIES order).
_LINE_MIX = np.array(
    [
        [4, 3, 2, 4, 10, 12, 8, 10, 6, 9, 3, 3],
        [3, 4, 6, 5, 6, 8, 14, 8, 3, 8, 3, 3],
        [5, 2, 1, 4, 10, 14, 8, 12, 6, 9, 3, 4],
        [3, 5, 2, 2, 16, 8, 6, 5, 9, 8, 3, 3],
        [4, 6, 2, 2, 12, 8, 10, 6, 8, 8, 3, 3],
        [1, 1, 3, 8, 4, 8, 8, 6, 6, 8, 3, 4],
        [2, 2, 4, 1, 10, 2, 10, 2, 12, 6, 4, 6],
    ],
    dtype=float,
)

#: Invoice-line count per calendar month (January first): a summer dip in
#: August and a year-end peak in December.
_SEASON = np.array(
    [0.86, 0.92, 1.04, 0.98, 1.0, 1.04, 0.94, 0.68, 1.02, 1.06, 1.12, 1.30]
)
#: Extra weight of each business unit per calendar month: equipment budgets
#: are spent at year end, service work pauses in August.
_UNIT_SEASON = np.array(
    [
        [0.9, 0.9, 1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 1.0, 1.0, 1.2, 1.5],
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 1.0, 1.0, 1.0, 0.9],
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 1.0, 1.0, 1.0, 1.0],
    ]
)
#: Seasonal factor of construction orders (January first).
_CONSTRUCTION_SEASON = np.array(
    [0.82, 0.86, 0.98, 1.04, 1.08, 1.08, 1.04, 0.96, 1.04, 1.04, 0.98, 0.86]
)
#: Yearly trend growth of revenue per region (REGIONS order).
_REGION_GROWTH = np.array([0.04, 0.0, 0.07, 0.02])
#: Revenue change per unit of the regional business cycle.
_CYCLE_EFFECT = 0.08
#: Yearly list-price increase, applied each 1 January. List prices in the
#: products table are those of the as-of year.
_PRICE_INFLATION = 0.03
#: Share of invoice lines booked to a seller other than the account owner.
_OTHER_SELLER_SHARE = 0.08
_CREDIT_NOTE_SHARE = 0.01

_COUNTRIES = {
    "North": (("Germany", 0.6), ("Netherlands", 0.25), ("Denmark", 0.15)),
    "South": (("Italy", 0.55), ("Spain", 0.3), ("Portugal", 0.15)),
    "East": (("Poland", 0.5), ("Austria", 0.3), ("Czechia", 0.2)),
    "West": (("France", 0.6), ("Belgium", 0.25), ("Ireland", 0.15)),
}
_LEGAL_FORMS = {
    "Germany": "GmbH",
    "Netherlands": "B.V.",
    "Denmark": "A/S",
    "Italy": "S.r.l.",
    "Spain": "S.L.",
    "Portugal": "Lda",
    "Poland": "Sp. z o.o.",
    "Austria": "GmbH",
    "Czechia": "s.r.o.",
    "France": "SAS",
    "Belgium": "NV",
    "Ireland": "Ltd",
}
#: Account revenue per employee by industry (INDUSTRIES order), EUR.
_REVENUE_PER_EMPLOYEE = np.array(
    [220_000, 180_000, 300_000, 250_000, 400_000, 160_000, 120_000], dtype=float
)
#: Employee limits of the size bands: small < 50 <= medium < 250 <= large
#: < 1000 <= enterprise.
_SIZE_LIMITS = np.array([50, 250, 1000])
_SEGMENTS = ("SMB", "Mid-market", "Corporate", "Corporate")
#: Quantity multiplier and usual discount per size band.
_SIZE_QUANTITY = np.array([0.6, 1.0, 1.6, 2.4])
_SIZE_DISCOUNT = np.array([0.03, 0.06, 0.09, 0.12])

_NAME_HEADS = (
    "Nord", "Alpen", "Ster", "Vela", "Kron", "Orbi", "Tera", "Lumi", "Ferro",
    "Agri", "Mari", "Volta", "Rhen", "Silva", "Castel", "Brenn", "Aqua", "Pola",
    "Delta", "Mont", "Vitra", "Euro", "Hansa", "Iber", "Danu", "Loire", "Baltic",
    "Karst", "Tatra", "Ardenn",
)  # fmt: skip
_NAME_TAILS = (
    "tec", "bau", "form", "line", "werk", "gen", "tronic", "pack", "chem", "log",
    "med", "mont", "plast", "metal", "tex", "flow", "port", "sys", "dyn", "fer",
)  # fmt: skip
_FIRST_NAMES = (
    "Anna", "Lukas", "Marie", "Jonas", "Sofia", "Marco", "Elena", "Pablo",
    "Lucia", "Tomasz", "Agnieszka", "Jan", "Claire", "Hugo", "Camille", "Liam",
    "Sarah", "David", "Ines", "Pedro", "Katrin", "Felix", "Laura", "Matteo",
    "Giulia", "Piotr", "Eva", "Niels", "Emma", "Louis", "Sven", "Mia",
    "Carlos", "Nina", "Paul", "Julia", "Tobias", "Chiara", "Martin", "Lea",
)  # fmt: skip
_LAST_NAMES = (
    "Berger", "Rossi", "Nowak", "Dubois", "Jensen", "Garcia", "Huber", "Ferrari",
    "Kowalski", "Martin", "de Vries", "Santos", "Novak", "Lambert", "Schmidt",
    "Romano", "Wagner", "Moreau", "Costa", "Visser", "Fischer", "Bianchi",
    "Lewandowski", "Laurent", "Hansen", "Lopez", "Bauer", "Ricci", "Peeters",
    "Murphy", "Keller", "Silva", "Weber", "Conti", "Dvorak", "Fontaine",
)  # fmt: skip

#: Open stages in order. A deal ends in stage Won or Lost.
OPEN_STAGES = ("Prospecting", "Qualification", "Proposal", "Negotiation")
#: Median sales cycle of a deal per business unit, days.
_CYCLE_DAYS = np.array([80.0, 40.0, 55.0])
#: Median deal amount per business unit (EUR) for a medium account.
_DEAL_AMOUNT = np.array([45_000.0, 18_000.0, 22_000.0])
_DEAL_SIZE_FACTOR = np.array([0.45, 0.8, 1.5, 2.6])
#: Extra weight of each business unit in the pipeline over its share of
#: invoice lines: equipment sells through deals, consumables through orders.
_DEAL_UNIT_TILT = np.array([4.0, 0.4, 1.5])
#: Average win probability of a seller with average skill.
_WIN_RATE = 0.37

#: Activities a seller logs per week at scale 1 (ACTIVITY_TYPES order).
_WEEKLY_ACTIVITIES = np.array([2.5, 6.0, 5.0, 1.5])
#: Share of key accounts whose contacts stopped 61 to 180 days before AS_OF.
_NEGLECTED_KEY_SHARE = 0.2


@dataclass
class _Company:
    """Dimensions of one generated company, as parallel numpy arrays."""

    seed: int
    scale: float
    months: pd.DatetimeIndex  # first day of each history month
    # products
    product_ids: np.ndarray
    product_unit: np.ndarray  # index into BUSINESS_UNITS
    product_line: np.ndarray  # index into _PRODUCT_LINES
    list_price: np.ndarray
    unit_cost: np.ndarray
    quantity_mean: np.ndarray
    products: pd.DataFrame
    # sellers: a slot is one seller position, held by one seller at a time
    seller_ids: np.ndarray
    seller_region: np.ndarray
    seller_skill: np.ndarray
    seller_active_to: list[date | None]
    region_slots: np.ndarray  # (regions, slots per region) of slot indices
    occupant: np.ndarray  # (slots, months) of seller indices
    reps: pd.DataFrame
    # accounts
    account_ids: np.ndarray
    account_region: np.ndarray
    account_industry: np.ndarray
    account_size: np.ndarray
    account_slot: np.ndarray
    account_key: np.ndarray
    account_discount: np.ndarray
    account_start: np.ndarray  # first month index with purchases
    account_end: np.ndarray  # last month index with purchases
    account_weight: np.ndarray  # relative purchase volume
    neglected_after: np.ndarray  # datetime64[D], NaT unless contacts stop
    accounts: pd.DataFrame
    # market
    cycle: np.ndarray  # (regions, external months + 3) business cycle
    line_rate: np.ndarray  # (accounts, months) expected invoice lines


def build_demo(mart: str | Path, scale: float = 1.0, seed: int = 7) -> list[LoadReport]:
    """Build the demo company's mart at `mart`, replacing any file there.

    `scale` multiplies the number of invoice lines, and 1 gives about
    150,000. Accounts and opportunities grow with the square root of
    `scale`, and above scale 1 so does the number of teams. `seed` (an
    integer >= 0) fixes every random draw, so the same seed and scale give
    identical table contents. The as-of date is AS_OF. Returns one
    LoadReport per load, in load order.

    Raises ParameterError for a scale below MIN_SCALE or a negative seed,
    and MartError when the file cannot be opened for writing.
    """
    scale = _check_scale(scale)
    seed = _check_seed(seed)
    path = Path(mart)
    check_mart_file(path)
    for stale in (path, Path(f"{path}.wal")):
        stale.unlink(missing_ok=True)

    started = time.perf_counter()
    company = _make_company(seed, scale)
    reports: list[LoadReport] = []
    con = connect(path)
    try:
        reports.append(_load(con, "products", company.products, "products"))
        reports.append(_load(con, "reps", company.reps, "reps"))
        reports.append(_load(con, "accounts", company.accounts, "accounts"))
        revenue_cents = np.zeros((len(company.seller_ids), 3), dtype=np.int64)
        for label, frame in _transaction_chunks(company, revenue_cents):
            reports.append(_load(con, "transactions", frame, label))
        reports.append(
            _load(con, "opportunities", _opportunities(company), "opportunities")
        )
        for label, frame in _activity_chunks(company):
            reports.append(_load(con, "activities", frame, label))
        reports.append(_load(con, "external", _external(company), "external"))
        reports.append(_load(con, "fx_rates", _fx_rates(), "fx_rates"))
        reports.append(
            _load(con, "targets", _targets(company, revenue_cents), "targets")
        )
        fill_dimensions(con)
        set_meta(
            con,
            {
                "company": COMPANY,
                "as_of": AS_OF.isoformat(),
                "currency": CURRENCY,
                "seed": seed,
                "scale": scale,
            },
        )
        con.execute("CHECKPOINT")
    finally:
        con.close()
    logger.info(
        "demo mart %s built in %.1f s (seed %d, scale %g, %d loads)",
        path,
        time.perf_counter() - started,
        seed,
        scale,
        len(reports),
    )
    return reports


def _check_scale(scale: float) -> float:
    try:
        value = float(scale)
    except (TypeError, ValueError) as exc:
        raise ParameterError(
            f"invalid demo scale {scale!r}; give a number such as 1 or 0.2"
        ) from exc
    if not math.isfinite(value) or value < MIN_SCALE:
        raise ParameterError(
            f"invalid demo scale {scale!r}; give a number of at least {MIN_SCALE}"
        )
    return value


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(
            f"invalid demo seed {seed!r}; give an integer of at least 0"
        )
    return int(seed)


def _load(con, table: str, frame: pd.DataFrame, part: str) -> LoadReport:
    return load_frame(
        con, table, frame, source=SOURCE, source_file=f"demo/{table}/{part}"
    )


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _month_index(days: np.ndarray) -> np.ndarray:
    """Return the history month index (0 = January 2023) of datetime64[D] values."""
    months = days.astype("datetime64[M]").astype(np.int64)
    return months - np.datetime64(HISTORY_START, "M").astype(np.int64)


# ---------------------------------------------------------------------------
# Dimensions: products, sellers, accounts, business cycle


def _make_company(seed: int, scale: float) -> _Company:
    months = pd.date_range(HISTORY_START, AS_OF, freq="MS")
    products = _make_products(seed)
    sellers = _make_sellers(seed, scale, len(months))
    accounts = _make_accounts(seed, scale, len(months), sellers)
    cycle = _make_cycle(seed)
    company = _Company(
        seed=seed,
        scale=scale,
        months=months,
        **products,
        **sellers,
        **accounts,
        cycle=cycle,
        line_rate=np.empty((0, 0)),
    )
    company.line_rate = _line_rates(company)
    return company


def _make_products(seed: int) -> dict:
    rng = _rng(seed, _STREAM_PRODUCTS)
    rows = []
    for line_index, line in enumerate(_PRODUCT_LINES):
        low, high = line.price_range
        # Log-uniform prices, so each line has cheap and premium models.
        prices = np.exp(rng.uniform(np.log(low), np.log(high), line.products))
        models = rng.choice(np.arange(100, 1000), line.products, replace=False)
        margin = _LIST_MARGIN[line.business_unit]
        for price, model in zip(np.sort(prices), np.sort(models), strict=True):
            list_price = round(float(price), 2 if price < 1000 else 0)
            unit_margin = margin + rng.normal(0, 0.03)
            rows.append(
                {
                    "name": f"{line.stem} {line.stem[:2].upper()}-{model}",
                    "product_line": line.name,
                    "business_unit": line.business_unit,
                    "list_price": list_price,
                    "unit_cost": round(list_price * (1 - unit_margin), 2),
                    "line_index": line_index,
                    "quantity_mean": line.quantity_mean,
                }
            )
    frame = pd.DataFrame(rows)
    frame.insert(0, "product_id", [f"PRD-{i:03d}" for i in range(1, len(frame) + 1)])
    frame["source"] = SOURCE
    return {
        "product_ids": frame["product_id"].to_numpy(object),
        "product_unit": frame["business_unit"].map(BUSINESS_UNITS.index).to_numpy(),
        "product_line": frame["line_index"].to_numpy(),
        "list_price": frame["list_price"].to_numpy(float),
        "unit_cost": frame["unit_cost"].to_numpy(float),
        "quantity_mean": frame["quantity_mean"].to_numpy(float),
        "products": frame.drop(columns=["line_index", "quantity_mean"]),
    }


def _make_sellers(seed: int, scale: float, n_months: int) -> dict:
    """Generate the managers, the sellers and the seller slots of every team.

    Each team has 1 key account manager, 2 growers and 2 hunters. Two
    sellers leave between October 2023 and September 2024, and a successor
    takes over their slot and accounts on the first day of the next month.
    """
    rng = _rng(seed, _STREAM_REPS)
    teams_per_region = max(2, round(2 * math.sqrt(scale)))
    slot_roles = ("key_account_manager", "grower", "grower", "hunter", "hunter")
    n_slots = len(REGIONS) * teams_per_region * len(slot_roles)
    n_managers = len(REGIONS) * teams_per_region
    leaver_slots = rng.choice(
        [s for s in range(n_slots) if s % len(slot_roles) != 0], 2, replace=False
    )
    n_people = n_managers + n_slots + len(leaver_slots)
    names = _person_names(rng, n_people)

    rep_rows: list[dict] = []
    occupant = np.zeros((n_slots, n_months), dtype=np.int64)
    seller_ids: list[str] = []
    seller_region: list[int] = []
    seller_active_to: list[date | None] = []
    successors: list[tuple[int, int, str, str, int]] = []
    slot = 0
    for region_index, region in enumerate(REGIONS):
        for team_number in range(1, teams_per_region + 1):
            team = f"{region}-{team_number}"
            manager_id = f"REP-{len(rep_rows) + 1:03d}"
            rep_rows.append(
                {
                    "rep_id": manager_id,
                    "name": names[len(rep_rows)],
                    "role": "manager",
                    "role_type": None,
                    "team": team,
                    "manager_id": None,
                    "region": region,
                    "active_from": _random_day(
                        rng, date(2010, 1, 1), date(2021, 12, 31)
                    ),
                    "active_to": None,
                }
            )
            for role_type in slot_roles:
                rep_id = f"REP-{len(rep_rows) + 1:03d}"
                active_to = None
                if slot in leaver_slots:
                    leave_month = int(rng.integers(9, 21))
                    next_start = (
                        pd.Timestamp(HISTORY_START)
                        + pd.DateOffset(months=leave_month + 1)
                    ).date()
                    active_to = next_start - timedelta(days=1)
                    successors.append(
                        (slot, leave_month + 1, team, manager_id, region_index)
                    )
                rep_rows.append(
                    {
                        "rep_id": rep_id,
                        "name": names[len(rep_rows)],
                        "role": "seller",
                        "role_type": role_type,
                        "team": team,
                        "manager_id": manager_id,
                        "region": region,
                        "active_from": _random_day(
                            rng, date(2014, 1, 1), date(2022, 10, 31)
                        ),
                        "active_to": active_to,
                    }
                )
                occupant[slot, :] = len(seller_ids)
                seller_ids.append(rep_id)
                seller_region.append(region_index)
                seller_active_to.append(active_to)
                slot += 1

    for slot_index, first_month, team, manager_id, region_index in successors:
        rep_id = f"REP-{len(rep_rows) + 1:03d}"
        active_from = (
            pd.Timestamp(HISTORY_START) + pd.DateOffset(months=first_month)
        ).date()
        rep_rows.append(
            {
                "rep_id": rep_id,
                "name": names[len(rep_rows)],
                "role": "seller",
                "role_type": slot_roles[slot_index % len(slot_roles)],
                "team": team,
                "manager_id": manager_id,
                "region": REGIONS[region_index],
                "active_from": active_from,
                "active_to": None,
            }
        )
        occupant[slot_index, first_month:] = len(seller_ids)
        seller_ids.append(rep_id)
        seller_region.append(region_index)
        seller_active_to.append(None)

    reps = pd.DataFrame(rep_rows)
    reps["active_from"] = pd.to_datetime(reps["active_from"])
    reps["active_to"] = pd.to_datetime(reps["active_to"])
    reps["source"] = SOURCE
    slots_per_region = n_slots // len(REGIONS)
    return {
        "seller_ids": np.array(seller_ids, dtype=object),
        "seller_region": np.array(seller_region),
        "seller_skill": rng.normal(0, 1, len(seller_ids)),
        "seller_active_to": seller_active_to,
        "region_slots": np.arange(n_slots).reshape(len(REGIONS), slots_per_region),
        "occupant": occupant,
        "reps": reps,
    }


def _person_names(rng: np.random.Generator, count: int) -> list[str]:
    pairs = len(_FIRST_NAMES) * len(_LAST_NAMES)
    picks = rng.choice(pairs, count, replace=count > pairs)
    names = [
        f"{_FIRST_NAMES[p // len(_LAST_NAMES)]} {_LAST_NAMES[p % len(_LAST_NAMES)]}"
        for p in picks
    ]
    return _unique_names(names)


def _unique_names(names: list[str]) -> list[str]:
    """Append 2, 3, ... to repeated names so that every name is unique."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name} {seen[name]}")
    return unique


def _random_day(rng: np.random.Generator, first: date, last: date) -> date:
    return first + timedelta(days=int(rng.integers(0, (last - first).days + 1)))


def _make_accounts(seed: int, scale: float, n_months: int, sellers: dict) -> dict:
    """Generate accounts with firmographics, owner, volume and life span.

    About 8 % are won during the history (owned by hunters) and 5 % stop
    buying. Key accounts are the top 5 % by purchase volume and belong to
    the key account managers of their region.
    """
    rng = _rng(seed, _STREAM_ACCOUNTS)
    n = max(len(REGIONS) * 10, round(ACCOUNTS_AT_SCALE_1 * math.sqrt(scale)))
    region = rng.choice(len(REGIONS), n, p=[0.3, 0.22, 0.2, 0.28])
    industry = rng.choice(
        len(INDUSTRIES), n, p=[0.24, 0.16, 0.12, 0.14, 0.1, 0.14, 0.1]
    )
    employees = np.maximum(3, np.round(rng.lognormal(np.log(120), 1.3, n))).astype(
        np.int64
    )
    size = np.searchsorted(_SIZE_LIMITS, employees, side="right")
    annual_revenue = np.round(
        employees * _REVENUE_PER_EMPLOYEE[industry] * rng.lognormal(0, 0.35, n), -3
    )
    weight = employees**0.45 * rng.lognormal(0, 0.5, n) * _SIZE_QUANTITY[size]
    key = weight >= np.quantile(weight, 0.95)

    start = np.zeros(n, dtype=np.int64)
    end = np.full(n, n_months - 1, dtype=np.int64)
    new = ~key & (rng.random(n) < 0.08)
    start[new] = rng.integers(3, n_months, new.sum())
    churned = ~key & ~new & (rng.random(n) < 0.05)
    end[churned] = rng.integers(12, n_months - 4, churned.sum())

    slot = _assign_owners(rng, region, key, new, sellers)
    discount = np.clip(
        _SIZE_DISCOUNT[size] + 0.03 * key + rng.normal(0, 0.015, n), 0.0, 0.3
    )

    country = np.empty(n, dtype=object)
    for region_index, name in enumerate(REGIONS):
        members = np.flatnonzero(region == region_index)
        options = _COUNTRIES[name]
        country[members] = rng.choice(
            [c for c, _ in options], len(members), p=[p for _, p in options]
        )
    names = _account_names(rng, country, industry)

    parent = np.full(n, -1, dtype=np.int64)
    big = np.flatnonzero(size >= 2)
    n_parents = min(len(big) // 4, max(1, round(12 * math.sqrt(scale))))
    parents = rng.choice(big, n_parents, replace=False)
    free = np.setdiff1d(np.arange(n), parents)
    children = rng.choice(free, min(len(free), 3 * n_parents), replace=False)
    parent[children] = parents[rng.integers(0, n_parents, len(children))]

    neglected_after = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    key_index = np.flatnonzero(key)
    n_neglected = max(1, round(_NEGLECTED_KEY_SHARE * len(key_index)))
    neglected = rng.choice(key_index, min(n_neglected, len(key_index)), replace=False)
    neglected_after[neglected] = np.datetime64(AS_OF, "D") - rng.integers(
        61, 181, len(neglected)
    )

    account_ids = np.array([f"ACC-{i:05d}" for i in range(1, n + 1)], dtype=object)
    occupant_now = sellers["occupant"][slot, -1]
    frame = pd.DataFrame(
        {
            "account_id": account_ids,
            "name": names,
            "region": np.array(REGIONS, dtype=object)[region],
            "country": country,
            "industry": np.array(INDUSTRIES, dtype=object)[industry],
            "segment": np.array(_SEGMENTS, dtype=object)[size],
            "size_band": np.array(SIZE_BANDS, dtype=object)[size],
            "employees": employees,
            "annual_revenue": annual_revenue,
            "parent_account_id": np.where(
                parent >= 0, account_ids[np.maximum(parent, 0)], None
            ),
            "owner_rep_id": sellers["seller_ids"][occupant_now],
            "is_key_account": key,
            "source": SOURCE,
        }
    )
    return {
        "account_ids": account_ids,
        "account_region": region,
        "account_industry": industry,
        "account_size": size,
        "account_slot": slot,
        "account_key": key,
        "account_discount": discount,
        "account_start": start,
        "account_end": end,
        "account_weight": weight,
        "neglected_after": neglected_after,
        "accounts": frame,
    }


def _assign_owners(
    rng: np.random.Generator,
    region: np.ndarray,
    key: np.ndarray,
    new: np.ndarray,
    sellers: dict,
) -> np.ndarray:
    """Choose each account's owner slot among the slots of its region.

    Key accounts go to key account managers, accounts won during the
    history to hunters, and the rest to growers (twice as often) and
    hunters.
    """
    slots = sellers["region_slots"]
    role_of_position = np.arange(slots.shape[1]) % 5  # 0 KAM, 1-2 grower, 3-4 hunter
    kam = role_of_position == 0
    hunter = role_of_position >= 3
    grower_weight = np.where(role_of_position == 0, 0.0, np.where(hunter, 1.0, 2.0))
    owner = np.zeros(len(region), dtype=np.int64)
    for region_index in range(len(REGIONS)):
        in_region = region == region_index
        for mask, weights in (
            (in_region & key, kam.astype(float)),
            (in_region & new, hunter.astype(float)),
            (in_region & ~key & ~new, grower_weight),
        ):
            positions = rng.choice(
                slots.shape[1], mask.sum(), p=weights / weights.sum()
            )
            owner[mask] = slots[region_index, positions]
    return owner


def _account_names(
    rng: np.random.Generator, country: np.ndarray, industry: np.ndarray
) -> list[str]:
    words = {
        "Manufacturing": "Industries",
        "Construction": "Bau",
        "Automotive": "Automotive",
        "Food & Beverage": "Foods",
        "Chemicals": "Chemie",
        "Logistics": "Logistics",
        "Healthcare": "Medical",
    }
    heads = rng.integers(0, len(_NAME_HEADS), len(country))
    tails = rng.integers(0, len(_NAME_TAILS), len(country))
    names = [
        f"{_NAME_HEADS[h]}{_NAME_TAILS[t]} {words[INDUSTRIES[i]]} {_LEGAL_FORMS[c]}"
        for h, t, i, c in zip(heads, tails, industry, country, strict=True)
    ]
    return _unique_names(names)


def _make_cycle(seed: int) -> np.ndarray:
    """Draw the business cycle per region and month from EXTERNAL_START.

    Values lie roughly between -1 and 1. The series has 3 months more than the indicators, because construction orders
    lead the cycle by 3 months.
    """
    rng = _rng(seed, _STREAM_MACRO)
    n = _months_between(EXTERNAL_START, EXTERNAL_END) + 3
    t = np.arange(n)
    common = 0.7 * np.sin(2 * np.pi * t / 42 + rng.uniform(0, 2 * np.pi))
    cycle = np.empty((len(REGIONS), n))
    for region_index in range(len(REGIONS)):
        local = 0.3 * np.sin(2 * np.pi * t / 18 + rng.uniform(0, 2 * np.pi))
        noise = np.zeros(n)
        shocks = rng.normal(0, 0.12, n)
        for i in range(1, n):
            noise[i] = 0.7 * noise[i - 1] + shocks[i]
        cycle[region_index] = common + local + noise
    return cycle


def _months_between(first: date, last: date) -> int:
    """Count the months from `first` to `last`, both included."""
    return (last.year - first.year) * 12 + last.month - first.month + 1


def _line_rates(company: _Company) -> np.ndarray:
    """Compute expected invoice lines per account and month.

    The rate combines the account's volume, its region's trend and business
    cycle, the season, business days in the month, its owner's skill (good
    sellers grow their accounts) and the account's life span, with a
    six-month ramp-up for new accounts. The rates are scaled so that their
    sum is LINES_AT_SCALE_1 x scale.
    """
    n_months = len(company.months)
    month_number = company.months.month.to_numpy() - 1
    years = np.arange(n_months) / 12
    first_cycle_month = _months_between(EXTERNAL_START, HISTORY_START) - 1
    cycle = company.cycle[:, first_cycle_month : first_cycle_month + n_months]
    business_days = np.array([len(_business_days(m)) for m in company.months])
    region_factor = (
        (1 + _REGION_GROWTH[:, None]) ** years[None, :]
        * (1 + _CYCLE_EFFECT * cycle)
        * _SEASON[month_number][None, :]
        * business_days[None, :]
        / 21
    )
    owner_skill = company.seller_skill[company.occupant[company.account_slot]]
    rate = (
        company.account_weight[:, None]
        * region_factor[company.account_region]
        * (1 + 0.03 * owner_skill) ** years[None, :]
    )
    month = np.arange(n_months)[None, :]
    since_start = month - company.account_start[:, None]
    ramp = np.minimum(1.0, 0.4 + 0.1 * since_start)
    ramp = np.where(company.account_start[:, None] > 0, ramp, 1.0)
    rate *= np.where(since_start < 0, 0.0, ramp)
    rate *= month <= company.account_end[:, None]
    return rate * (LINES_AT_SCALE_1 * company.scale / rate.sum())


def _business_days(month_start: pd.Timestamp) -> np.ndarray:
    """Return the Monday-to-Friday days of a month up to AS_OF (datetime64[D])."""
    last = min(month_start + pd.offsets.MonthEnd(0), pd.Timestamp(AS_OF))
    return pd.bdate_range(month_start, last).to_numpy().astype("datetime64[D]")


# ---------------------------------------------------------------------------
# Invoice lines


def _transaction_chunks(
    company: _Company, revenue_cents: np.ndarray
) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yield invoice lines one month (or month and account block) at a time.

    Adds each seller's net revenue of TARGET_YEAR - 1 per business unit, in
    cents, to `revenue_cents` (sellers x business units) as lines are made.
    """
    n_accounts = len(company.account_ids)
    for m, month_start in enumerate(company.months):
        expected = company.line_rate[:, m].sum()
        blocks = max(1, math.ceil(expected / CHUNK_LINES))
        bounds = np.linspace(0, n_accounts, blocks + 1).astype(np.int64)
        invoice_count = 0
        credit_count = 0
        for block in range(blocks):
            rng = _rng(company.seed, _STREAM_TRANSACTIONS, m, block)
            accounts = np.arange(bounds[block], bounds[block + 1])
            frame, seller, unit, invoices, credits = _month_lines(
                company, rng, m, month_start, accounts, invoice_count, credit_count
            )
            invoice_count += invoices
            credit_count += credits
            if month_start.year == TARGET_YEAR - 1:
                cents = np.rint(frame["net_revenue"].to_numpy() * 100).astype(np.int64)
                np.add.at(revenue_cents, (seller, unit), cents)
            label = f"{month_start:%Y-%m}"
            yield (label if blocks == 1 else f"{label}/block-{block + 1}"), frame


def _month_lines(
    company: _Company,
    rng: np.random.Generator,
    m: int,
    month_start: pd.Timestamp,
    accounts: np.ndarray,
    invoice_offset: int,
    credit_offset: int,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, int, int]:
    """Generate the invoice lines of a block of accounts in one month.

    Returns five values. The first is the frame of lines, sorted by
    invoice and line. Next come the seller index and business unit index
    of each of those lines. The last two are the numbers of invoices and
    credit notes used, from which the next block of the month continues.
    """
    counts = rng.poisson(company.line_rate[accounts, m])
    account = np.repeat(accounts, counts)
    n = len(account)
    product = _draw_products(company, rng, account, month_start.month - 1)
    unit = company.product_unit[product]
    size = company.account_size[account]

    quantity = 1 + rng.poisson(
        (company.quantity_mean[product] - 1) * _SIZE_QUANTITY[size]
    ).astype(float)
    discount_share = np.array([_DISCOUNT_SHARE[u] for u in BUSINESS_UNITS])
    discount = np.clip(
        company.account_discount[account] * discount_share[unit]
        + rng.normal(0, 0.02, n),
        0.0,
        0.4,
    )
    price_index = (1 + _PRICE_INFLATION) ** (month_start.year - AS_OF.year)
    unit_price = np.round(company.list_price[product] * price_index * (1 - discount), 2)
    unit_cost = company.unit_cost[product] * price_index * rng.lognormal(0, 0.05, n)

    credit = rng.random(n) < _CREDIT_NOTE_SHARE
    returned = np.ceil(quantity * rng.uniform(0.2, 1.0, n))
    quantity = np.where(credit, -returned, quantity)
    net_revenue = np.round(quantity * unit_price, 2)
    cost = np.round(quantity * unit_cost, 2)

    owner = company.occupant[company.account_slot[account], m]
    other = rng.random(n) < _OTHER_SELLER_SHARE
    region = company.account_region[account]
    positions = rng.integers(0, company.region_slots.shape[1], n)
    colleague = company.occupant[company.region_slots[region, positions], m]
    seller = np.where(other, colleague, owner)

    days = _business_days(month_start)
    invoice_id = np.empty(n, dtype=object)
    line_number = np.ones(n, dtype=np.int64)
    invoice_date = np.empty(n, dtype="datetime64[D]")
    normal = np.flatnonzero(~credit)
    n_invoices = _number_invoices(
        rng,
        account[normal],
        days,
        f"INV-{month_start:%Y%m}-",
        invoice_offset,
        normal,
        invoice_id,
        line_number,
        invoice_date,
    )
    credits = np.flatnonzero(credit)
    invoice_date[credits] = np.sort(days[rng.integers(0, len(days), len(credits))])
    invoice_id[credits] = [
        f"CN-{month_start:%Y%m}-{credit_offset + i + 1:06d}"
        for i in range(len(credits))
    ]

    frame = pd.DataFrame(
        {
            "invoice_id": invoice_id,
            "line": line_number,
            "date": invoice_date,
            "account_id": company.account_ids[account],
            "product_id": company.product_ids[product],
            "rep_id": company.seller_ids[seller],
            "region": np.array(REGIONS, dtype=object)[region],
            "business_unit": np.array(BUSINESS_UNITS, dtype=object)[unit],
            "quantity": quantity,
            "net_revenue": net_revenue,
            "cost": cost,
            "currency": CURRENCY,
            "source": SOURCE,
        }
    )
    order = np.lexsort((line_number, invoice_id.astype(str)))
    frame = frame.take(order).reset_index(drop=True)
    return frame, seller[order], unit[order], n_invoices, len(credits)


def _draw_products(
    company: _Company, rng: np.random.Generator, account: np.ndarray, month: int
) -> np.ndarray:
    """Draw each line's product from the mix of its industry and month."""
    line_weight = _LINE_MIX * _UNIT_SEASON[_line_units(), month][None, :]
    product_weight = (
        line_weight[:, company.product_line] * _model_shares(company)[None, :]
    )
    cumulative = np.cumsum(product_weight, axis=1)
    cumulative /= cumulative[:, -1:]
    industry = company.account_industry[account]
    draws = rng.random(len(account))
    product = np.empty(len(account), dtype=np.int64)
    for industry_index in range(len(INDUSTRIES)):
        rows = np.flatnonzero(industry == industry_index)
        product[rows] = np.searchsorted(
            cumulative[industry_index], draws[rows], side="right"
        )
    return np.minimum(product, len(company.product_ids) - 1)


def _model_shares(company: _Company) -> np.ndarray:
    """Return each product's share of its product line's invoice lines.

    Cheaper models sell more often.
    """
    weight = 1 / np.sqrt(company.list_price)
    line_total = np.bincount(company.product_line, weights=weight)
    return weight / line_total[company.product_line]


def _line_units() -> np.ndarray:
    return np.array(
        [BUSINESS_UNITS.index(line.business_unit) for line in _PRODUCT_LINES]
    )


def _number_invoices(
    rng: np.random.Generator,
    account: np.ndarray,
    days: np.ndarray,
    prefix: str,
    offset: int,
    rows: np.ndarray,
    invoice_id: np.ndarray,
    line_number: np.ndarray,
    invoice_date: np.ndarray,
) -> int:
    """Group an account's lines of a month into invoices of 1 to about 5 lines.

    Invoices are numbered in date order from `offset` + 1; the ids, line
    numbers and dates are written into the output arrays at `rows`.
    Returns the number of invoices.
    """
    if len(account) == 0:
        return 0
    _, group_start, group = np.unique(account, return_index=True, return_inverse=True)
    position = np.arange(len(account)) - group_start[group]
    lines_per_invoice = 1 + rng.poisson(1.2, len(group_start))
    line = position % lines_per_invoice[group] + 1
    invoice = np.cumsum(line == 1) - 1
    n_invoices = int(invoice[-1]) + 1
    dates = days[rng.integers(0, len(days), n_invoices)]
    order = np.argsort(dates, kind="stable")
    rank = np.empty(n_invoices, dtype=np.int64)
    rank[order] = np.arange(n_invoices)
    numbers = [f"{prefix}{offset + r + 1:07d}" for r in rank]
    invoice_id[rows] = np.array(numbers, dtype=object)[invoice]
    line_number[rows] = line
    invoice_date[rows] = dates[invoice]
    return n_invoices


# ---------------------------------------------------------------------------
# Pipeline


def last_snapshot_date() -> date:
    """Return the date of the latest weekly pipeline snapshot.

    Snapshots are taken on Fridays, and the latest is the last Friday on or
    before AS_OF. It is also the CRM extract date, so deals created after
    it are not in the mart.
    """
    return AS_OF - timedelta(days=(AS_OF.weekday() - 4) % 7)


def _opportunities(company: _Company) -> pd.DataFrame:
    """Generate the opportunity history, one row per deal and snapshot.

    A deal closed before the week of the first snapshot has one row, dated
    on its closed_date. Within the SNAPSHOT_WEEKS snapshots, an open deal
    has one row per snapshot with the stage, amount and expected close date
    it had then. A closed deal has a row in the snapshot of its closing
    week (Saturday to Friday) and in every later one.
    """
    rng = _rng(company.seed, _STREAM_OPPORTUNITIES)
    horizon = np.datetime64(last_snapshot_date(), "D")
    snapshots = horizon - 7 * np.arange(SNAPSHOT_WEEKS)[::-1]
    first_week_start = snapshots[0] - 6
    n = max(50, round(OPPORTUNITIES_AT_SCALE_1 * math.sqrt(company.scale)))

    days = pd.bdate_range(HISTORY_START, horizon.item()).to_numpy()
    days = days.astype("datetime64[D]")
    # About 6 % more deals are created each year.
    density = 1.06 ** ((days - days[0]).astype(float) / 365.25)
    created = np.sort(days[rng.choice(len(days), n, p=density / density.sum())])
    created_month = _month_index(created)
    account = _deal_accounts(company, rng, created_month)
    product = _deal_products(company, rng, account)
    unit = company.product_unit[product]

    seller_slot = np.empty(len(company.seller_ids), dtype=np.int64)
    seller_slot[company.occupant] = np.arange(len(company.occupant))[:, None]
    owner = company.occupant[company.account_slot[account], created_month]
    positions = rng.integers(0, company.region_slots.shape[1], n)
    colleague_slot = company.region_slots[company.account_region[account], positions]
    colleague = company.occupant[colleague_slot, created_month]
    creator = np.where(rng.random(n) < 0.1, colleague, owner)
    win_probability = np.clip(
        _WIN_RATE + 0.08 * company.seller_skill[creator], 0.15, 0.65
    )
    won = rng.random(n) < win_probability

    cycle = _CYCLE_DAYS[unit] * rng.lognormal(0, 0.5, n)
    cycle = np.where(won, cycle, cycle * rng.uniform(0.35, 1.0, n))
    cycle = np.where(rng.random(n) < 0.05, cycle * 3, cycle)  # stale deals
    cycle = np.clip(np.round(cycle), 5, 540).astype(np.int64)
    closed = np.busday_offset(created + cycle, 0, roll="forward")
    cycle = (closed - created).astype(np.int64)

    # When the creating seller has left by the close (or by the extract
    # date), the deal belongs to the successor in that seller's slot.
    final_month = _month_index(np.minimum(closed, horizon))
    rep = company.occupant[seller_slot[creator], final_month]

    entries = _stage_entries(rng, created, cycle, won)
    first_expected = created + np.maximum(
        7, np.round(_CYCLE_DAYS[unit] * rng.lognormal(-0.1, 0.3, n))
    ).astype(np.int64)
    slip_step = 7 * rng.integers(2, 6, n)
    first_amount = np.maximum(
        500,
        np.round(
            _DEAL_AMOUNT[unit]
            * _DEAL_SIZE_FACTOR[company.account_size[account]]
            * rng.lognormal(0, 0.6, n),
            -2,
        ),
    )
    changed = rng.random(n) < 0.25
    change_day = created + np.round(rng.uniform(0.2, 0.9, n) * cycle).astype(np.int64)
    final_amount = np.where(
        changed,
        np.maximum(500, np.round(first_amount * rng.uniform(0.75, 1.3, n), -2)),
        first_amount,
    )

    # Each row of the table is one (deal, snapshot date) pair.
    before_window = closed < first_week_start
    parts = [(np.flatnonzero(before_window), closed[before_window])]
    for snapshot in snapshots:
        open_then = np.flatnonzero((created <= snapshot) & (closed > snapshot))
        closed_then = np.flatnonzero(~before_window & (closed <= snapshot))
        deals = np.concatenate([open_then, closed_then])
        parts.append((deals, np.full(len(deals), snapshot)))
    deal = np.concatenate([p[0] for p in parts])
    snapshot_date = np.concatenate([p[1] for p in parts]).astype("datetime64[D]")
    is_closed = closed[deal] <= snapshot_date

    stage_index = (entries[deal] <= snapshot_date[:, None]).sum(axis=1) - 1
    stage = np.array(OPEN_STAGES, dtype=object)[stage_index]
    stage[is_closed] = np.where(won[deal[is_closed]], "Won", "Lost")
    status = np.where(is_closed, np.where(won[deal], "won", "lost"), "open")
    seen_on = np.where(is_closed, closed[deal], snapshot_date)
    overdue = np.maximum(0, (seen_on - first_expected[deal]).astype(np.int64))
    step = slip_step[deal]
    expected = first_expected[deal] + step * -(-overdue // step)
    amount = np.where(
        changed[deal] & (seen_on >= change_day[deal]),
        final_amount[deal],
        np.round(first_amount[deal], -2),
    )

    opportunity_ids = np.array([f"OPP-{i:06d}" for i in range(1, n + 1)], dtype=object)
    frame = pd.DataFrame(
        {
            "opportunity_id": opportunity_ids[deal],
            "snapshot_date": snapshot_date,
            "account_id": company.account_ids[account[deal]],
            "rep_id": company.seller_ids[rep[deal]],
            "product_id": company.product_ids[product[deal]],
            "region": np.array(REGIONS, dtype=object)[
                company.account_region[account[deal]]
            ],
            "business_unit": np.array(BUSINESS_UNITS, dtype=object)[unit[deal]],
            "stage": stage,
            "status": status,
            "amount": amount,
            "amount_is_estimate": False,
            "currency": CURRENCY,
            "created_date": created[deal],
            "expected_close_date": expected,
            "closed_date": np.where(is_closed, closed[deal], np.datetime64("NaT", "D")),
            "source": SOURCE,
        }
    )
    order = np.lexsort((snapshot_date, deal))
    return frame.take(order).reset_index(drop=True)


def _deal_accounts(
    company: _Company, rng: np.random.Generator, month: np.ndarray
) -> np.ndarray:
    """Draw the account of each deal among accounts buying in its month.

    Accounts that start buying within 3 months count too (hunters work on
    them first). Bigger accounts and key accounts get more deals.
    """
    weight = np.sqrt(company.account_weight) * np.where(company.account_key, 2.0, 1.0)
    account = np.empty(len(month), dtype=np.int64)
    for m in np.unique(month):
        deals = np.flatnonzero(month == m)
        live = (company.account_start <= m + 3) & (company.account_end >= m)
        candidates = np.flatnonzero(live)
        p = weight[candidates] / weight[candidates].sum()
        account[deals] = rng.choice(candidates, len(deals), p=p)
    return account


def _deal_products(
    company: _Company, rng: np.random.Generator, account: np.ndarray
) -> np.ndarray:
    product_weight = (
        _LINE_MIX[:, company.product_line]
        * _model_shares(company)[None, :]
        * _DEAL_UNIT_TILT[company.product_unit][None, :]
    )
    cumulative = np.cumsum(product_weight, axis=1)
    cumulative /= cumulative[:, -1:]
    industry = company.account_industry[account]
    draws = rng.random(len(account))
    product = np.empty(len(account), dtype=np.int64)
    for industry_index in range(len(INDUSTRIES)):
        rows = np.flatnonzero(industry == industry_index)
        product[rows] = np.searchsorted(
            cumulative[industry_index], draws[rows], side="right"
        )
    return np.minimum(product, len(company.product_ids) - 1)


def _stage_entries(
    rng: np.random.Generator,
    created: np.ndarray,
    cycle: np.ndarray,
    won: np.ndarray,
) -> np.ndarray:
    """Draw the day each deal enters each open stage (9999-12-31 if never).

    A won deal passes all open stages. A lost deal drops out in a random
    stage, early stages being more likely.
    """
    n = len(created)
    last_stage = np.where(won, 3, rng.choice(4, n, p=[0.3, 0.3, 0.25, 0.15]))
    shares = rng.dirichlet([1.5, 2.0, 2.5, 3.0], n)
    offsets = np.floor(np.cumsum(shares[:, :3], axis=1) * cycle[:, None])
    entries = np.empty((n, 4), dtype="datetime64[D]")
    entries[:, 0] = created
    entries[:, 1:] = created[:, None] + offsets.astype(np.int64)
    reached = np.arange(4)[None, :] <= last_stage[:, None]
    return np.where(reached, entries, np.datetime64("9999-12-31"))


# ---------------------------------------------------------------------------
# Activities


#: Activity rate multiplier per slot position (key account manager, two
#: growers, two hunters) and type (visit, call, email, internal).
_ROLE_ACTIVITY = np.array(
    [
        [1.4, 0.8, 1.2, 1.2],
        [1.0, 1.0, 1.0, 1.0],
        [1.0, 1.0, 1.0, 1.0],
        [0.8, 1.5, 1.0, 0.8],
        [0.8, 1.5, 1.0, 0.8],
    ]
)
#: Activity level per calendar month (holidays in August and December).
_ACTIVITY_SEASON = np.array(
    [0.95, 1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.5, 1.0, 1.0, 1.0, 0.75]
)


def _activity_chunks(company: _Company) -> Iterator[tuple[str, pd.DataFrame]]:
    """Yield the sellers' activities one month at a time.

    Customer activities (visits, calls, emails) go to the accounts of the
    seller's slot. Sellers with more skill spend more time with customers
    and less in internal meetings. Below scale 1, customer activity shrinks
    with the square root of scale, as accounts per seller do. Contacts with
    the neglected key accounts stop 61 to 180 days before AS_OF.
    """
    n_slots = len(company.occupant)
    position = np.arange(n_slots) % 5
    intensity = min(1.0, math.sqrt(company.scale))
    weight = np.sqrt(company.account_weight) * np.where(company.account_key, 3.0, 1.0)
    slot_accounts = [np.flatnonzero(company.account_slot == s) for s in range(n_slots)]
    activity_types = np.array(ACTIVITY_TYPES, dtype=object)
    next_id = 1
    for m, month_start in enumerate(company.months):
        rng = _rng(company.seed, _STREAM_ACTIVITIES, m)
        days = _business_days(month_start)
        seller = company.occupant[:, m]
        skill = company.seller_skill[seller]
        factor = np.column_stack(
            [np.exp(0.25 * skill * intensity)] * 3 + [np.exp(-0.2 * skill)]
        )
        factor[:, :3] *= intensity
        rate = (
            _WEEKLY_ACTIVITIES[None, :]
            * _ROLE_ACTIVITY[position]
            * factor
            * (len(days) / 5)
            * _ACTIVITY_SEASON[month_start.month - 1]
        )
        counts = rng.poisson(rate)

        kinds, sellers, accounts = [], [], []
        for slot in range(n_slots):
            candidates = slot_accounts[slot]
            live = candidates[
                (company.account_start[candidates] <= m + 6)
                & (company.account_end[candidates] >= m)
            ]
            customer = counts[slot, :3] if len(live) else np.zeros(3, dtype=np.int64)
            total = int(customer.sum())
            p = weight[live] / weight[live].sum() if len(live) else None
            chosen = rng.choice(live, total, p=p) if total else np.empty(0, np.int64)
            kinds.append(np.repeat(np.arange(4), [*customer, counts[slot, 3]]))
            accounts.append(np.concatenate([chosen, np.full(counts[slot, 3], -1)]))
            sellers.append(np.full(total + counts[slot, 3], seller[slot]))
        kind = np.concatenate(kinds)
        account = np.concatenate(accounts).astype(np.int64)
        rep = np.concatenate(sellers).astype(np.int64)
        day = days[rng.integers(0, len(days), len(kind))]
        duration = _activity_minutes(rng, kind)

        cutoff = company.neglected_after[np.maximum(account, 0)]
        keep = (account < 0) | np.isnat(cutoff) | (day <= cutoff)
        kind, account, rep, day, duration = (
            kind[keep],
            account[keep],
            rep[keep],
            day[keep],
            duration[keep],
        )
        order = np.lexsort((kind, rep, day))
        kind, account, rep, day, duration = (
            kind[order],
            account[order],
            rep[order],
            day[order],
            duration[order],
        )
        ids = [f"ACT-{next_id + i:08d}" for i in range(len(kind))]
        next_id += len(kind)
        frame = pd.DataFrame(
            {
                "activity_id": np.array(ids, dtype=object),
                "rep_id": company.seller_ids[rep],
                "account_id": np.where(
                    account >= 0, company.account_ids[np.maximum(account, 0)], None
                ),
                "type": activity_types[kind],
                "date": day,
                "duration_minutes": duration,
                "region": np.array(REGIONS, dtype=object)[company.seller_region[rep]],
                "source": SOURCE,
            }
        )
        yield f"{month_start:%Y-%m}", frame


def _activity_minutes(rng: np.random.Generator, kind: np.ndarray) -> np.ndarray:
    """Draw activity durations in minutes.

    Means: visits 80, calls 17, emails 6.5 and internal meetings 51.
    """
    n = len(kind)
    visit = 15 * np.maximum(2, np.round(rng.lognormal(np.log(5), 0.35, n)))
    call = 5 * np.maximum(1, np.round(rng.lognormal(np.log(3), 0.5, n)))
    email = 5 * (1 + rng.poisson(0.3, n))
    internal = 15 * rng.choice([2, 3, 4, 6], n, p=[0.3, 0.3, 0.25, 0.15])
    return np.choose(kind, [visit, call, email, internal]).astype(float)


# ---------------------------------------------------------------------------
# Market indicators, exchange rates, targets


def _external(company: _Company) -> pd.DataFrame:
    """Generate monthly industrial production and construction orders per region.

    Both are indices (about 100 in January 2022). Industrial production
    moves with the regional business cycle that also drives revenue.
    Construction orders lead that cycle by 3 months and have a seasonal
    pattern. Months after AS_OF are the scenario.
    """
    rng = _rng(company.seed, _STREAM_MACRO, 1)
    months = pd.date_range(EXTERNAL_START, EXTERNAL_END, freq="MS")
    n = len(months)
    years = np.arange(n) / 12
    season = _CONSTRUCTION_SEASON[months.month.to_numpy() - 1]
    frames = []
    for region_index, region in enumerate(REGIONS):
        growth = _REGION_GROWTH[region_index]
        cycle = company.cycle[region_index]
        production = 100 * (1 + 0.5 * growth + 0.005) ** years * (
            1 + 0.05 * cycle[:n]
        ) + rng.normal(0, 0.3, n)
        orders = 100 * (1 + 0.8 * growth) ** years * (
            1 + 0.12 * cycle[3 : n + 3]
        ) * season + rng.normal(0, 1.5, n)
        for indicator, values in (
            ("industrial_production", production),
            ("construction_orders", orders),
        ):
            frames.append(
                pd.DataFrame(
                    {
                        "date": months,
                        "region": region,
                        "indicator": indicator,
                        "value": np.round(values, 1),
                        "source": SOURCE,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def _fx_rates() -> pd.DataFrame:
    """Return monthly EUR rates of 1.0, because the company invoices only in euro."""
    months = pd.date_range(FX_START, FX_END, freq="MS")
    return pd.DataFrame(
        {"date": months, "currency": CURRENCY, "rate_to_reporting": 1.0}
    )


def _targets(company: _Company, revenue_cents: np.ndarray) -> pd.DataFrame:
    """Compute the revenue targets of TARGET_YEAR per seller and business unit.

    Each target is the seller's net revenue of the year before in that
    unit times 1 + TARGET_GROWTH, rounded to the cent. Sellers who left
    before the target year and units without revenue get no target.
    """
    base_year = TARGET_YEAR - 1
    year_start = date(TARGET_YEAR, 1, 1)
    rows = []
    for seller, unit in zip(*np.nonzero(revenue_cents > 0), strict=True):
        active_to = company.seller_active_to[seller]
        if active_to is not None and active_to < year_start:
            continue
        cents = int(revenue_cents[seller, unit])
        target_cents = (cents * round(100 * (1 + TARGET_GROWTH)) + 50) // 100
        rows.append(
            {
                "period": str(TARGET_YEAR),
                "period_start": pd.Timestamp(year_start),
                "period_end": pd.Timestamp(date(TARGET_YEAR, 12, 31)),
                "level": "rep",
                "key": company.seller_ids[seller],
                "region": REGIONS[company.seller_region[seller]],
                "business_unit": BUSINESS_UNITS[unit],
                "metric": "revenue",
                "value": target_cents / 100,
                "method": "last_year_plus_growth",
                "basis": (
                    f"{base_year} net revenue {cents / 100:,.2f} {CURRENCY} "
                    f"x {1 + TARGET_GROWTH:.2f}"
                ),
                "version": 1,
                "set_by": "demo",
                "reason": f"baseline target: {base_year} revenue plus "
                f"{TARGET_GROWTH:.0%}",
                "created_at": pd.Timestamp(TARGETS_CREATED_AT),
            }
        )
    return pd.DataFrame(rows)
