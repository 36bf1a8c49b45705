"""Number and date parsers: examples of real-export forms and properties."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cockpit.ingest.parsers import (
    INVALID_DATE,
    INVALID_NUMBER,
    DateOrderError,
    NumberFormatError,
    excel_serial_to_timestamp,
    parse_dates,
    parse_number,
    parse_numbers,
)

# Cents as integers keep the expected values exact.
cents = st.integers(min_value=-(10**12), max_value=10**12)
days = st.dates(min_value=date(1901, 1, 1), max_value=date(2099, 12, 31))


def _money(value_cents: int, decimal: str = ".", thousands: str = ",") -> str:
    text = f"{abs(value_cents) / 100:,.2f}"
    return text.replace(",", "\x00").replace(".", decimal).replace("\x00", thousands)


def _one_date(text: str, **options) -> date | None:
    result = parse_dates(pd.Series([text]), **options)
    value = result.values.iloc[0]
    return None if pd.isna(value) else value.date()


# --- numbers: examples -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1234.5", 1234.5),
        ("1,234.50", 1234.5),
        ("$1,234.50", 1234.5),
        ("-$1,234.50", -1234.5),
        ("$-1,234.50", -1234.5),
        ("($1,234.50)", -1234.5),
        ("1,234.50 CR", -1234.5),
        ("1,234.50cr", -1234.5),
        ("1,234.50 DR", 1234.5),
        ("1,234.50-", -1234.5),
        ("USD 99", 99.0),
        ("99.00 EUR", 99.0),
        ("US$5", 5.0),
        ("£7.25", 7.25),
        ("1\u00a0234.5", 1234.5),
        ("\u00a012\u00a0", 12.0),
        ("1 234 567.89", 1234567.89),
        (".5", 0.5),
        ("+3", 3.0),
        ("1e3", 1000.0),
        ("\u22125", -5.0),
    ],
)
def test_number_point_decimal(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.234,56", 1234.56),
        ("0,99", 0.99),
        ("1 234,56 €", 1234.56),
        ("1.234,50-", -1234.5),
        ("(12,5)", -12.5),
    ],
)
def test_number_comma_decimal(text, expected):
    assert parse_number(text, decimal=",", thousands=".") == expected


@pytest.mark.parametrize("text", ["", "   ", "\u00a0", None])
def test_number_blank_is_none(text):
    assert parse_number(text) is None


@pytest.mark.parametrize("text", ["abc", "ABC123", "12abc", "-", "1,23,456", "1..2"])
def test_number_invalid_reason(text):
    with pytest.raises(NumberFormatError) as caught:
        parse_number(text)
    assert str(caught.value) == INVALID_NUMBER


def test_number_decimal_comma_reason():
    with pytest.raises(NumberFormatError) as caught:
        parse_number("1,5")
    assert str(caught.value) == (
        "invalid double value: reads as a number only with decimal mark ',', but "
        "the source declares '.' (set decimal and thousands in the source YAML)"
    )


def test_number_two_negative_markers():
    with pytest.raises(NumberFormatError) as caught:
        parse_number("(5) CR")
    assert str(caught.value) == "invalid double value: more than one negative marker"


def test_numbers_column_reasons():
    result = parse_numbers(pd.Series(["1", " 2.5 ", "", "x", "(3)"]))
    assert result.values.tolist()[:2] == [1.0, 2.5]
    assert math.isnan(result.values.iloc[2])
    assert result.values.iloc[4] == -3.0
    assert result.reasons.tolist() == [None, None, None, INVALID_NUMBER, None]


def test_numbers_typed_cells_pass():
    result = parse_numbers(pd.Series([1, 2.5, None, "4"], dtype=object))
    assert result.values.tolist()[:2] == [1.0, 2.5]
    assert result.values.iloc[3] == 4.0
    assert result.invalid.sum() == 0


# --- numbers: properties ---------------------------------------------------------------


@given(cents)
def test_number_us_format_round_trip(value):
    text = ("-" if value < 0 else "") + _money(value)
    assert parse_number(text) == pytest.approx(value / 100, abs=1e-9)


@given(cents)
def test_number_european_round_trip(value):
    text = ("-" if value < 0 else "") + _money(value, ",", ".")
    parsed = parse_number(text, decimal=",", thousands=".")
    assert parsed == pytest.approx(value / 100, abs=1e-9)


@given(
    cents.filter(lambda v: v != 0),
    st.sampled_from(
        ["({})", "{} CR", "{}CR", "{}-", "-{}", "-$ {}", "$-{}", "({} USD)"]
    ),
)
def test_number_negative_forms(value, form):
    text = form.format(_money(value))
    assert parse_number(text) == pytest.approx(-abs(value) / 100, abs=1e-9)


@given(cents, st.sampled_from(["\u00a0", "\u202f", " "]))
def test_number_space_groups(value, space):
    text = _money(abs(value), ".", space)
    assert parse_number(text) == pytest.approx(abs(value) / 100, abs=1e-9)


@given(st.text(alphabet="0123456789.,-+()$€ CRDUSE\u00a0e", max_size=14))
def test_number_any_text_parses_or_explains(text):
    try:
        value = parse_number(text)
    except NumberFormatError as exc:
        assert str(exc).startswith(INVALID_NUMBER)
    else:
        assert value is None or math.isfinite(value)


@given(st.lists(st.text(alphabet="0123456789.,-() $", max_size=10), max_size=20))
def test_numbers_column_matches_scalar(texts):
    result = parse_numbers(pd.Series(texts, dtype="str"))
    for position, text in enumerate(texts):
        try:
            expected, reason = parse_number(text), None
        except NumberFormatError as exc:
            expected, reason = None, str(exc)
        assert result.reasons.iloc[position] == reason
        got = result.values.iloc[position]
        if expected is None:
            assert math.isnan(got)
        else:
            assert got == expected


# --- dates: examples ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-03-04", date(2021, 3, 4)),
        ("2021-3-4", date(2021, 3, 4)),
        ("2021/03/04", date(2021, 3, 4)),
        ("2021.03.04", date(2021, 3, 4)),
        ("20210304", date(2021, 3, 4)),
        ("4 Mar 2021", date(2021, 3, 4)),
        ("4-Mar-2021", date(2021, 3, 4)),
        ("March 4, 2021", date(2021, 3, 4)),
        ("Mar 4 2021", date(2021, 3, 4)),
        ("Thu, 04 Mar 2021", date(2021, 3, 4)),
        ("44259", date(2021, 3, 4)),
        ("2021-03-04T10:30:00", date(2021, 3, 4)),
        ("2021-03-04 23:30:00-05:00", date(2021, 3, 5)),
        ("2021-03-04T01:00:00+02:00", date(2021, 3, 3)),
        ("2021-03-04 12:00 UTC", date(2021, 3, 4)),
    ],
)
def test_date_shapes(text, expected):
    assert _one_date(text) == expected


@pytest.mark.parametrize("text", ["someday", "2021-02-30", "2021-13-01", "31/31/2021"])
def test_date_invalid(text):
    result = parse_dates(pd.Series([text]))
    assert result.reasons.tolist() == [INVALID_DATE]


def test_date_ambiguous_column_raises():
    with pytest.raises(DateOrderError) as caught:
        parse_dates(pd.Series(["03/04/2021", "05/06/2021"]))
    assert caught.value.kind == "ambiguous"
    assert caught.value.examples == [(0, "03/04/2021"), (1, "05/06/2021")]


def test_date_mixed_column_raises():
    with pytest.raises(DateOrderError) as caught:
        parse_dates(pd.Series(["x", "13/02/2021", "02/14/2021"]))
    assert caught.value.kind == "mixed"
    assert caught.value.examples == [(1, "13/02/2021"), (2, "02/14/2021")]


def test_date_same_day_and_month_not_ambiguous():
    assert _one_date("05/05/2021") == date(2021, 5, 5)


def test_date_format_wins_over_inference():
    assert _one_date("03/04/2021", formats="%m/%d/%Y") == date(2021, 3, 4)


def test_date_format_list_tried_in_order():
    result = parse_dates(
        pd.Series(["04.03.2021", "2021-03-05", "44260"]),
        formats=["%d.%m.%Y", "iso", "excel"],
    )
    assert [v.date() for v in result.values] == [
        date(2021, 3, 4),
        date(2021, 3, 5),
        date(2021, 3, 5),
    ]


def test_date_format_mismatch_invalid():
    result = parse_dates(pd.Series(["2021-03-04"]), formats="%d/%m/%Y")
    assert result.reasons.tolist() == [INVALID_DATE]


def test_date_us_time_with_pm():
    result = parse_dates(pd.Series(["1/5/2021 2:30 PM"]), day_first=False)
    assert result.values.iloc[0] == pd.Timestamp("2021-01-05 14:30")


def test_date_typed_cells():
    cells = pd.Series(
        [datetime(2021, 1, 2), 44197.5, pd.Timestamp("2021-01-03", tz="UTC")],
        dtype=object,
    )
    result = parse_dates(cells)
    assert result.values.tolist() == [
        pd.Timestamp("2021-01-02"),
        pd.Timestamp("2021-01-01 12:00"),
        pd.Timestamp("2021-01-03"),
    ]


def test_date_serial_off_for_text():
    result = parse_dates(pd.Series(["44197"]), excel_serial=False)
    assert result.reasons.tolist() == [
        "invalid date value: a number where a date was expected"
    ]


def test_excel_phantom_leap_day():
    with pytest.raises(ValueError, match="29 February 1900"):
        excel_serial_to_timestamp(60)


@pytest.mark.parametrize(
    ("serial", "epoch", "expected"),
    [
        (1, 1900, "1900-01-01"),
        (59, 1900, "1900-02-28"),
        (61, 1900, "1900-03-01"),
        (44197, 1900, "2021-01-01"),
        (0, 1904, "1904-01-01"),
        (42735, 1904, "2021-01-01"),
    ],
)
def test_excel_serial_examples(serial, epoch, expected):
    assert excel_serial_to_timestamp(serial, epoch) == pd.Timestamp(expected)


# --- dates: properties ------------------------------------------------------------------


@given(days)
def test_date_iso_round_trip(day):
    assert _one_date(day.isoformat()) == day


@given(days, st.sampled_from(["%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%b-%Y"]))
def test_date_given_format_round_trip(day, form):
    assert _one_date(day.strftime(form), formats=form) == day


@given(days.filter(lambda d: d >= date(1900, 3, 1)))
def test_date_excel_serial_round_trip(day):
    serial = (day - date(1899, 12, 30)).days
    assert _one_date(str(serial)) == day


@given(
    st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2090, 1, 1)),
    st.integers(min_value=-12 * 60, max_value=14 * 60),
)
def test_date_offset_converted_to_utc(moment, minutes):
    zone = timezone(timedelta(minutes=minutes))
    stamp = moment.replace(microsecond=0, tzinfo=zone)
    result = parse_dates(pd.Series([stamp.isoformat()]))
    expected = stamp.astimezone(timezone.utc).replace(tzinfo=None)
    assert result.values.iloc[0] == pd.Timestamp(expected)


@settings(max_examples=50)
@given(st.lists(days, min_size=1, max_size=15))
def test_date_day_first_column_inferred(column):
    # One unambiguous value (day 25) settles the order of the whole column.
    texts = [d.strftime("%d/%m/%Y") for d in column] + ["25/12/2020"]
    result = parse_dates(pd.Series(texts))
    assert [v.date() for v in result.values] == [*column, date(2020, 12, 25)]


@settings(max_examples=50)
@given(st.lists(days, min_size=1, max_size=15))
def test_date_month_first_column_inferred(column):
    texts = [d.strftime("%m/%d/%Y") for d in column] + ["12/25/2020"]
    result = parse_dates(pd.Series(texts))
    assert [v.date() for v in result.values] == [*column, date(2020, 12, 25)]


@given(
    st.lists(
        days.filter(lambda d: d.day <= 12 and d.day != d.month), min_size=1, max_size=8
    )
)
def test_date_ambiguous_column_rejected(column):
    texts = [d.strftime("%d/%m/%Y") for d in column]
    with pytest.raises(DateOrderError):
        parse_dates(pd.Series(texts))


@given(st.text(max_size=20))
def test_date_any_text_parses_or_explains(text):
    try:
        result = parse_dates(pd.Series([text]))
    except DateOrderError:
        return
    reason = result.reasons.iloc[0]
    value = result.values.iloc[0]
    if reason is not None:
        assert reason.startswith(INVALID_DATE)
        assert pd.isna(value)
