"""Parsers for the numbers and dates found in real ERP and CRM exports.

Both parsers work on a whole column. They return the parsed values together
with one reason per cell that failed, so a loader can quarantine every bad
cell of a file in one pass instead of stopping at the first.

Numbers may carry currency symbols or ISO codes, thousands separators
(including spaces and non-breaking spaces), a decimal comma, and a negative
sign written as a leading or trailing minus, parentheses or a trailing `CR`.

Dates may be ISO 8601 (with or without time and UTC offset), day/month/year
or month/day/year with any of `/ . -`, compact `YYYYMMDD`, written with an
English month name, or Excel serial day numbers. A column whose day/month
order cannot be told from its values raises `DateOrderError` unless the
caller gives the format or the order.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

#: Reason for a number cell that does not parse; load_frame uses the same words.
INVALID_NUMBER = "invalid double value"

#: Reason for a date cell that does not parse; load_frame uses the same words.
INVALID_DATE = "invalid date value"

#: Space characters that exports put between digit groups or around values.
SPACES = " \u00a0\u202f\u2009\u2007"

_CURRENCY_SIGNS = "$€£¥₹₩₽₺₪₫₱¢"
# A three-letter code must be set apart by a space, so that text such as
# "ABC123" stays invalid instead of reading as 123.
_CURRENCY_PREFIX = re.compile(
    rf"^(?:[A-Z]{{3}}(?=[{SPACES}])|[A-Z]{{0,2}}[{_CURRENCY_SIGNS}])"
)
_CURRENCY_SUFFIX = re.compile(rf"(?:(?<=[{SPACES}])[A-Z]{{3}}|[{_CURRENCY_SIGNS}])$")
_CREDIT_SUFFIX = re.compile(r"(CR|DR)\.?$", re.IGNORECASE)
_MINUS_SIGNS = "-\u2212"

#: Excel stores day 60 of the 1900 system as 29 February 1900, a day that never was.
EXCEL_PHANTOM_LEAP_DAY = 60

#: Largest Excel serial number, 9999-12-31 in the 1900 system.
EXCEL_MAX_SERIAL = 2_958_465


class NumberFormatError(ValueError):
    """A text cell that is not a number in the declared format."""


class DateOrderError(ValueError):
    """The day/month order of a date column cannot be decided from its values.

    `kind` is "ambiguous" when every value reads both ways, or "mixed" when
    some values only read day first and others only month first. `examples`
    contains (position, text) pairs of cells that show the problem.
    """

    def __init__(self, kind: str, examples: list[tuple[int, str]]) -> None:
        self.kind = kind
        self.examples = examples
        shown = ", ".join(repr(text) for _, text in examples[:3])
        if kind == "ambiguous":
            message = (
                f"day/month order is ambiguous: every value, e.g. {shown}, reads "
                "as day/month and as month/day"
            )
        else:
            message = (
                f"day/month order is mixed: {shown} cannot all have the same order"
            )
        super().__init__(message)


@dataclass(frozen=True)
class ParseResult:
    """Parsed values of one column and the reason each failed cell failed.

    `values` is float64 for numbers and naive datetime64 for dates, with NaN
    or NaT where a cell was blank or invalid. `reasons` contains None where a
    cell parsed or was blank, else the reason text.
    """

    values: pd.Series
    reasons: pd.Series

    @property
    def invalid(self) -> pd.Series:
        """True where a non-blank cell failed to parse."""
        return self.reasons.notna()


# --- numbers ---------------------------------------------------------------


def _strip_signs(text: str) -> tuple[str, int]:
    """Remove currency marks and negative markers; return the core and the count."""
    negatives = 0
    text = text.strip(SPACES)
    credit = _CREDIT_SUFFIX.search(text)
    if credit and (credit.start() == 0 or not text[credit.start() - 1].isalpha()):
        if credit.group(1).upper() == "CR":
            negatives += 1
        text = text[: credit.start()].strip(SPACES)
    if text.startswith("(") and text.endswith(")"):
        negatives += 1
        text = text[1:-1].strip(SPACES)
    # Signs and currency may come in either order on both sides: -$5, $-5, 5 €-.
    for _ in range(2):
        if text and text[0] in _MINUS_SIGNS:
            negatives += 1
            text = text[1:].strip(SPACES)
        elif text.startswith("+"):
            text = text[1:].strip(SPACES)
        if text and text[-1] in _MINUS_SIGNS:
            negatives += 1
            text = text[:-1].strip(SPACES)
        prefix = _CURRENCY_PREFIX.match(text)
        if prefix and len(text) > prefix.end():
            text = text[prefix.end() :].strip(SPACES)
        suffix = _CURRENCY_SUFFIX.search(text)
        if suffix and suffix.start() > 0:
            text = text[: suffix.start()].strip(SPACES)
    return text, negatives


@functools.lru_cache(maxsize=16)
def _core_pattern(decimal: str, thousands: str | None) -> re.Pattern[str]:
    dec = re.escape(decimal)
    separators = set(SPACES)
    if thousands:
        separators.add(thousands)
    group = "[" + "".join(re.escape(s) for s in sorted(separators)) + "]"
    return re.compile(
        rf"^(?:\d+(?:{dec}\d*)?|{dec}\d+)(?:[eE][+-]?\d+)?$"
        rf"|^\d{{1,3}}({group})\d{{3}}(?:\1\d{{3}})*(?:{dec}\d*)?$"
    )


def _core_value(core: str, decimal: str, thousands: str | None) -> float | None:
    """Return the value of an unsigned core, or None when it does not match."""
    if not _core_pattern(decimal, thousands).match(core):
        return None
    for separator in {*SPACES, thousands or ""} - {""}:
        core = core.replace(separator, "")
    return float(core.replace(decimal, "."))


def parse_number(
    text: object, decimal: str = ".", thousands: str | None = ","
) -> float | None:
    """Return the number written in `text`, or None when the cell is blank.

    `decimal` is the decimal mark and `thousands` the digit-group separator
    (None or "" for none). Spaces and non-breaking spaces are accepted as
    group separators too. Parentheses, a leading or trailing minus and a
    trailing `CR` make the value negative. Currency symbols and three-letter
    codes before or after the digits are ignored.
    NOTE: such a mark is not compared with the row's currency column.

    Raises NumberFormatError with the reason when the text is not a number
    in this format.
    """
    if text is None:
        return None
    if isinstance(text, bool):
        raise NumberFormatError(INVALID_NUMBER)
    if isinstance(text, (int, float, Decimal, np.integer, np.floating)):
        value = float(text)
        return None if math.isnan(value) else value
    raw = str(text).strip(SPACES + "\t\r\n")
    if not raw:
        return None
    core, negatives = _strip_signs(raw)
    if negatives > 1:
        raise NumberFormatError(f"{INVALID_NUMBER}: more than one negative marker")
    value = _core_value(core, decimal, thousands)
    if value is None:
        raise NumberFormatError(_number_reason(core, decimal, thousands))
    if math.isinf(value):
        raise NumberFormatError(f"{INVALID_NUMBER}: out of range")
    return -value if negatives else value


def _number_reason(core: str, decimal: str, thousands: str | None) -> str:
    """Explain why `core` failed, naming the separators that would read it."""
    other = "," if decimal == "." else "."
    if other in core:
        swapped = _core_value(core, other, decimal if thousands else None)
        if swapped is not None:
            return (
                f"{INVALID_NUMBER}: reads as a number only with decimal mark "
                f"{other!r}, but the source declares {decimal!r} (set decimal "
                "and thousands in the source YAML)"
            )
    return INVALID_NUMBER


def _fast_number_pattern(decimal: str) -> str:
    dec = re.escape(decimal)
    return rf"[+-]?(?:\d+(?:{dec}\d*)?|{dec}\d+)(?:[eE][+-]?\d+)?"


def parse_numbers(
    values: pd.Series, decimal: str = ".", thousands: str | None = ","
) -> ParseResult:
    """Parse a column of numbers written in any of the forms `parse_number` reads.

    Cells that are already numbers (from Excel, Parquet or SQL) pass through.
    Plain numbers are converted in one vectorised step; only the other
    distinct texts go through `parse_number`.
    """
    index = values.index
    if pd.api.types.is_bool_dtype(values.dtype):
        reasons = pd.Series(INVALID_NUMBER, index=index, dtype="object")
        return ParseResult(pd.Series(np.nan, index=index), reasons)
    if pd.api.types.is_numeric_dtype(values.dtype):
        numbers = values.astype("float64")
        return ParseResult(numbers, pd.Series(None, index=index, dtype="object"))

    out = np.full(len(values), np.nan)
    reasons = np.full(len(values), None, dtype=object)
    text, typed = _split_typed(values)
    for position, value in typed.items():
        try:
            parsed = parse_number(value, decimal, thousands)
        except NumberFormatError as exc:
            reasons[position] = str(exc)
        else:
            out[position] = np.nan if parsed is None else parsed

    stripped = text.str.strip(SPACES + "\t\r\n")
    present = stripped.notna() & (stripped != "")
    fast = present & stripped.str.fullmatch(_fast_number_pattern(decimal)).fillna(
        False
    ).astype(bool)
    if fast.any():
        plain = stripped[fast]
        if decimal != ".":
            plain = plain.str.replace(decimal, ".", regex=False)
        positions = np.flatnonzero(fast.to_numpy())
        out[positions] = _plain_to_float(plain)
        overflow = positions[np.isinf(out[positions])]
        out[overflow] = np.nan
        reasons[overflow] = f"{INVALID_NUMBER}: out of range"
    slow = present & ~fast
    if slow.any():
        positions = np.flatnonzero(slow.to_numpy())
        cache: dict[str, tuple[float | None, str | None]] = {}
        for position, cell in zip(positions, stripped[slow].tolist(), strict=True):
            if cell not in cache:
                try:
                    cache[cell] = (parse_number(cell, decimal, thousands), None)
                except NumberFormatError as exc:
                    cache[cell] = (None, str(exc))
            number, reason = cache[cell]
            if reason is None:
                out[position] = np.nan if number is None else number
            else:
                reasons[position] = reason
    return ParseResult(
        pd.Series(out, index=index, dtype="float64"),
        pd.Series(reasons, index=index, dtype="object"),
    )


def _plain_to_float(plain: pd.Series) -> np.ndarray:
    """Convert text that matched the plain-number pattern to floats."""
    try:
        # pyarrow's cast is many times faster than pd.to_numeric on strings.
        return pc.cast(pa.array(plain.array), pa.float64()).to_numpy(
            zero_copy_only=False
        )
    except (TypeError, ValueError, pa.ArrowException):
        return pd.to_numeric(plain).to_numpy(dtype="float64")


def _split_typed(values: pd.Series) -> tuple[pd.Series, dict[int, object]]:
    """Split a column into its text cells and its cells of other types.

    Returns the text as a string Series (other cells missing) and a mapping
    from position to each non-text, non-missing cell.
    """
    if pd.api.types.is_string_dtype(values.dtype) and values.dtype != object:
        return values.reset_index(drop=True), {}
    cells = values.tolist()
    typed: dict[int, object] = {}
    text: list[object] = []
    for position, cell in enumerate(cells):
        if isinstance(cell, str):
            text.append(cell)
        else:
            text.append(None)
            if cell is not None and not _is_missing(cell):
                typed[position] = cell
    return pd.Series(text, dtype="str"), typed


def _is_missing(cell: object) -> bool:
    try:
        return bool(pd.isna(cell))
    except (TypeError, ValueError):
        return False


# --- dates -------------------------------------------------------------------

_TIME = r"(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?)?"
_ZONE = r"(?:\s?(?:Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?))"
_ISO = re.compile(rf"\d{{4}}([-/.])\d{{1,2}}\1\d{{1,2}}{_TIME}{_ZONE}?")
_ISO_ZONED = re.compile(rf".*\d{_ZONE}")
_NUMERIC = re.compile(
    r"(?P<first>\d{1,2})(?P<sep>[/.\-])(?P<second>\d{1,2})(?P=sep)(?P<year>\d{4}|\d{2})"
    r"(?:[ T](?P<hour>\d{1,2}):(?P<minute>\d{2})(?::(?P<second_of_minute>\d{2}))?"
    r"\s?(?P<ampm>[AaPp][Mm])?)?"
)
_COMPACT = re.compile(r"\d{8}")
_SERIAL = re.compile(r"\d{1,7}(?:\.\d+)?")

#: Formats tried, in order, for dates written with an English month name.
TEXT_MONTH_FORMATS = (
    "%d %b %Y",
    "%d %B %Y",
    "%d-%b-%Y",
    "%d-%b-%y",
    "%d %b %y",
    "%d/%b/%Y",
    "%d-%B-%Y",
    "%d. %B %Y",
    "%b %d, %Y",
    "%B %d, %Y",
    "%b %d %Y",
    "%B %d %Y",
    "%a, %d %b %Y",
    "%A, %B %d, %Y",
    "%d %b %Y %H:%M",
    "%d %b %Y %H:%M:%S",
    "%d-%b-%Y %H:%M:%S",
)


def excel_serial_to_timestamp(serial: float, epoch: int = 1900) -> pd.Timestamp:
    """Convert an Excel serial day number to a timestamp.

    In the 1900 system day 1 is 1900-01-01 and Excel counts a 29 February
    1900 that never existed as day 60, so serials from 61 on are one day
    ahead. In the 1904 system day 0 is 1904-01-01. Fractions are the time
    of day, rounded to the second.

    Raises ValueError for day 60 and for serials outside Excel's range.
    """
    if epoch not in (1900, 1904):
        raise ValueError(f"Excel epoch must be 1900 or 1904, got {epoch}")
    lowest = 0 if epoch == 1904 else 1
    if not lowest <= serial <= EXCEL_MAX_SERIAL:
        raise ValueError(
            f"Excel serial {serial} is outside {lowest}..{EXCEL_MAX_SERIAL}"
        )
    if epoch == 1900 and math.floor(serial) == EXCEL_PHANTOM_LEAP_DAY:
        raise ValueError("Excel serial 60 is 29 February 1900, which does not exist")
    if epoch == 1904:
        origin = pd.Timestamp("1904-01-01")
    elif serial < EXCEL_PHANTOM_LEAP_DAY:
        origin = pd.Timestamp("1899-12-31")
    else:
        origin = pd.Timestamp("1899-12-30")
    return (origin + pd.to_timedelta(serial, unit="D")).round("s")


def parse_dates(
    values: pd.Series,
    formats: str | Sequence[str] | None = None,
    *,
    day_first: bool | None = None,
    timezone: str = "UTC",
    excel_serial: bool = True,
    excel_epoch: int = 1900,
) -> ParseResult:
    """Parse a column of dates or timestamps to naive datetimes.

    `formats` lists strptime formats tried in order; the names "iso" and
    "excel" stand for ISO 8601 and Excel serial numbers. Without formats the
    kind of each cell is recognised from its shape, and the day/month order
    of numeric dates is taken from the column: a first part above 12 means
    day first, a second part above 12 means month first. `day_first` sets
    the order instead.

    Timestamps with a UTC offset are converted to `timezone` (an IANA name)
    and the offset dropped; naive ones are taken to be in that zone already.
    Cells that are numbers (as Excel, Parquet or SQL deliver them) are Excel
    serial days when `excel_serial` is true, and text that is a bare number
    is too when no format is given.

    Raises DateOrderError when no format and no `day_first` is given and
    the day/month order of the numeric dates is ambiguous or mixed.
    """
    index = values.index
    out = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[us]")
    reasons = np.full(len(values), None, dtype=object)

    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        converted = _to_zone(values.reset_index(drop=True), timezone)
        return ParseResult(
            pd.Series(converted.to_numpy(dtype="datetime64[us]"), index=index),
            pd.Series(None, index=index, dtype="object"),
        )

    text, typed = _split_typed(values)
    for position, cell in typed.items():
        stamp, reason = _typed_date(cell, timezone, excel_serial, excel_epoch)
        if reason is None:
            out[position] = stamp.to_datetime64()
        else:
            reasons[position] = reason

    stripped = text.str.strip(SPACES + "\t\r\n")
    present = (stripped.notna() & (stripped != "")).to_numpy()
    if present.any():
        positions = np.flatnonzero(present)
        cells = stripped.iloc[positions].reset_index(drop=True)
        if formats is None:
            try:
                parsed, failed = _parse_inferred(
                    cells, day_first, timezone, excel_serial, excel_epoch
                )
            except DateOrderError as exc:
                examples = [(int(positions[i]), text) for i, text in exc.examples]
                raise DateOrderError(exc.kind, examples) from exc
        else:
            names = [formats] if isinstance(formats, str) else list(formats)
            parsed, failed = _parse_with_formats(cells, names, timezone, excel_epoch)
        out[positions] = parsed.to_numpy(dtype="datetime64[us]")
        for offset, reason in failed.items():
            reasons[positions[offset]] = reason
    return ParseResult(
        pd.Series(out, index=index),
        pd.Series(reasons, index=index, dtype="object"),
    )


def _typed_date(
    cell: object, timezone: str, excel_serial: bool, excel_epoch: int
) -> tuple[pd.Timestamp | None, str | None]:
    """Convert one non-text cell; return (timestamp, None) or (None, reason)."""
    if isinstance(cell, (datetime, date, pd.Timestamp, np.datetime64)):
        stamp = pd.Timestamp(cell)
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert(timezone).tz_localize(None)
        return stamp, None
    if isinstance(cell, bool) or not isinstance(
        cell, (int, float, Decimal, np.integer, np.floating)
    ):
        return None, INVALID_DATE
    if not excel_serial:
        return None, f"{INVALID_DATE}: a number where a date was expected"
    try:
        return excel_serial_to_timestamp(float(cell), excel_epoch), None
    except ValueError as exc:
        return None, f"{INVALID_DATE}: {exc}"


def _to_zone(stamps: pd.Series, timezone: str) -> pd.Series:
    if getattr(stamps.dt, "tz", None) is None:
        return stamps
    return stamps.dt.tz_convert(timezone).dt.tz_localize(None)


def _parse_iso(cells: pd.Series, timezone: str) -> pd.Series:
    """Parse ISO 8601 text; cells with a UTC offset are converted to `timezone`."""
    normal = cells.str.replace(r"\s?(?:UTC|GMT)$", "Z", regex=True)
    normal = normal.str.replace(r"^(\d{4})[/.](\d{1,2})[/.]", r"\1-\2-", regex=True)
    normal = normal.str.replace(r"(:\d{2}),(\d+)", r"\1.\2", regex=True)
    zoned = normal.str.fullmatch(_ISO_ZONED.pattern).fillna(False).astype(bool)
    result = pd.Series(pd.NaT, index=cells.index, dtype="datetime64[us]")
    if (~zoned).any():
        naive = pd.to_datetime(normal[~zoned], format="ISO8601", errors="coerce")
        result[~zoned] = naive.astype("datetime64[us]")
    if zoned.any():
        aware = pd.to_datetime(
            normal[zoned], format="ISO8601", errors="coerce", utc=True
        )
        result[zoned] = _to_zone(aware, timezone).astype("datetime64[us]")
    return result


def _parse_numeric(
    cells: pd.Series, day_first: bool | None
) -> tuple[pd.Series, pd.Series]:
    """Parse d/m/y or m/d/y text; return the timestamps and the bad-cell mask."""
    parts = cells.str.extract(_NUMERIC.pattern)
    first = parts["first"].astype(int)
    second = parts["second"].astype(int)
    if day_first is None:
        day_first = _decide_day_first(cells, first, second)
    day, month = (first, second) if day_first else (second, first)
    year = parts["year"].astype(int)
    short = parts["year"].str.len() == 2
    # Two-digit years follow strptime: 69-99 are 1900s, 00-68 are 2000s.
    year = year.where(~short, np.where(year >= 69, 1900 + year, 2000 + year))
    hour = parts["hour"].fillna("0").astype(int)
    ampm = parts["ampm"].str.lower()
    bad_hour = ampm.notna() & ((hour < 1) | (hour > 12))
    hour = hour.where(~((ampm == "pm") & (hour < 12)), hour + 12)
    hour = hour.where(~((ampm == "am") & (hour == 12)), 0)
    stamps = pd.to_datetime(
        pd.DataFrame(
            {
                "year": year,
                "month": month,
                "day": day,
                "hour": hour,
                "minute": parts["minute"].fillna("0").astype(int),
                "second": parts["second_of_minute"].fillna("0").astype(int),
            }
        ),
        errors="coerce",
    )
    stamps = stamps.mask(bad_hour)
    return stamps, stamps.isna()


def _decide_day_first(cells: pd.Series, first: pd.Series, second: pd.Series) -> bool:
    """Return True when the column is day first; raise DateOrderError when unsure."""
    usable = ~((first > 12) & (second > 12))
    day_evidence = usable & (first > 12)
    month_evidence = usable & (second > 12)
    if day_evidence.any() and month_evidence.any():
        examples = [
            (int(i), cells[i]) for i in (day_evidence.idxmax(), month_evidence.idxmax())
        ]
        raise DateOrderError("mixed", examples)
    if day_evidence.any():
        return True
    if month_evidence.any():
        return False
    differing = first != second
    if differing.any():
        examples = [(int(i), cells[i]) for i in differing.index[differing][:3]]
        raise DateOrderError("ambiguous", examples)
    return True


def _parse_text_month(cell: str) -> pd.Timestamp | None:
    text = " ".join(re.sub(r"\s*,\s*", ", ", cell).split())
    for form in TEXT_MONTH_FORMATS:
        try:
            return pd.Timestamp(datetime.strptime(text, form))
        except ValueError:
            continue
    return None


def _parse_inferred(
    cells: pd.Series,
    day_first: bool | None,
    timezone: str,
    excel_serial: bool,
    excel_epoch: int,
) -> tuple[pd.Series, dict[int, str]]:
    """Parse text cells by recognising the shape of each one."""
    result = pd.Series(pd.NaT, index=cells.index, dtype="datetime64[us]")
    failed: dict[int, str] = {}
    remaining = pd.Series(True, index=cells.index)

    iso = cells.str.fullmatch(_ISO.pattern).fillna(False).astype(bool)
    if iso.any():
        result[iso] = _parse_iso(cells[iso], timezone)
        remaining &= ~iso

    numeric = remaining & cells.str.fullmatch(_NUMERIC.pattern).fillna(False).astype(
        bool
    )
    if numeric.any():
        stamps, bad = _parse_numeric(cells[numeric], day_first)
        result[numeric] = stamps.astype("datetime64[us]")
        for offset in bad[bad].index:
            failed[int(offset)] = INVALID_DATE
        remaining &= ~numeric

    compact = remaining & cells.str.fullmatch(_COMPACT.pattern).fillna(False).astype(
        bool
    )
    if compact.any():
        result[compact] = pd.to_datetime(
            cells[compact], format="%Y%m%d", errors="coerce"
        ).astype("datetime64[us]")
        remaining &= ~compact

    serial = remaining & cells.str.fullmatch(_SERIAL.pattern).fillna(False).astype(bool)
    if serial.any():
        for offset, cell in cells[serial].items():
            stamp, reason = _typed_date(
                float(cell), timezone, excel_serial, excel_epoch
            )
            if reason is None:
                result[offset] = stamp
            else:
                failed[int(offset)] = reason
        remaining &= ~serial

    if remaining.any():
        cache: dict[str, pd.Timestamp | None] = {}
        for offset, cell in cells[remaining].items():
            if cell not in cache:
                cache[cell] = _parse_text_month(cell)
            if cache[cell] is not None:
                result[offset] = cache[cell]

    for offset in result.index[result.isna()]:
        failed.setdefault(int(offset), INVALID_DATE)
    return result, failed


def _parse_with_formats(
    cells: pd.Series, formats: list[str], timezone: str, excel_epoch: int
) -> tuple[pd.Series, dict[int, str]]:
    """Parse text cells with each of `formats` in turn; the first match wins."""
    result = pd.Series(pd.NaT, index=cells.index, dtype="datetime64[us]")
    remaining = pd.Series(True, index=cells.index)
    for form in formats:
        if not remaining.any():
            break
        todo = cells[remaining]
        if form == "iso":
            shaped = todo.str.fullmatch(_ISO.pattern).fillna(False).astype(bool)
            parsed = pd.Series(pd.NaT, index=todo.index, dtype="datetime64[us]")
            if shaped.any():
                parsed[shaped] = _parse_iso(todo[shaped], timezone)
        elif form == "excel":
            parsed = pd.Series(pd.NaT, index=todo.index, dtype="datetime64[us]")
            for offset, cell in todo.items():
                if _SERIAL.fullmatch(cell):
                    stamp, reason = _typed_date(
                        float(cell), timezone, True, excel_epoch
                    )
                    if reason is None:
                        parsed[offset] = stamp
        else:
            zoned = "%z" in form or "%Z" in form
            parsed = pd.to_datetime(todo, format=form, errors="coerce", utc=zoned)
            parsed = _to_zone(parsed, timezone).astype("datetime64[us]")
        hit = parsed.notna()
        result[hit[hit].index] = parsed[hit]
        remaining[hit[hit].index] = False
    failed = {int(offset): INVALID_DATE for offset in result.index[result.isna()]}
    return result, failed
