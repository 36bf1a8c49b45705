"""Named reporting periods: turn a period name and an as-of date into dates.

A period has a first day, a last day and the as-of date it was read at. For
week, month, quarter and year the last day is the end of the calendar
period that contains the as-of date, so a target for the whole period can
be read. Flows (revenue, deals closed, activities) are counted to date,
from the first day to the earlier of the last day and the as-of date. Year
to date and rolling 12 months end on the as-of date itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pandas as pd

from cockpit.errors import KpiError

logger = logging.getLogger(__name__)

#: Period names `resolve_period` accepts.
PERIODS = ("week", "month", "quarter", "year", "ytd", "r12m")

#: Period names and what they cover, for help text and error messages.
PERIOD_LABELS = {
    "week": "ISO week (Monday to Sunday) containing the as-of date",
    "month": "calendar month containing the as-of date",
    "quarter": "calendar quarter containing the as-of date",
    "year": "calendar year containing the as-of date",
    "ytd": "1 January of the as-of year to the as-of date",
    "r12m": "rolling 12 months ending on the as-of date",
}


@dataclass(frozen=True)
class Period:
    """One reporting period read at an as-of date; all bounds are inclusive."""

    name: str
    start: date
    end: date
    as_of: date

    @property
    def to_date_end(self) -> date:
        """Last day counted for flows: the earlier of `end` and `as_of`."""
        return min(self.end, self.as_of)

    @property
    def days(self) -> int:
        """Number of days from `start` to `end`."""
        return (self.end - self.start).days + 1

    @property
    def days_left(self) -> int:
        """Days after `as_of` up to `end`; 0 once the period is over."""
        return max(0, (self.end - self.as_of).days)

    @property
    def label(self) -> str:
        """Short label such as 2026-W39, 2026-09, 2026-Q3, 2026, YTD 2026-09-30."""
        if self.name == "week":
            year, week, _ = self.start.isocalendar()
            return f"{year}-W{week:02d}"
        if self.name == "month":
            return f"{self.start:%Y-%m}"
        if self.name == "quarter":
            return f"{self.start.year}-Q{(self.start.month - 1) // 3 + 1}"
        if self.name == "year":
            return str(self.start.year)
        if self.name == "ytd":
            return f"YTD {self.as_of.isoformat()}"
        return f"12 months to {self.as_of.isoformat()}"

    def last_year(self) -> Period:
        """Return the same period one year earlier, read one year earlier.

        29 February moves to 28 February.
        """
        return Period(
            self.name,
            _minus_year(self.start),
            _minus_year(self.end),
            _minus_year(self.as_of),
        )


def _minus_year(day: date) -> date:
    return (pd.Timestamp(day) - pd.DateOffset(years=1)).date()


def resolve_period(name: str, as_of: date) -> Period:
    """Return the period called `name` that contains `as_of`.

    `name` is one of PERIODS. Raises KpiError for another name or an as_of
    that is not a date.
    """
    if name not in PERIODS:
        choices = "; ".join(f"{key}: {text}" for key, text in PERIOD_LABELS.items())
        raise KpiError(f"unknown period {name!r}; choose one of {choices}")
    if not isinstance(as_of, date):
        raise KpiError(
            f"period {name} needs an as-of date, got {as_of!r}; pass a "
            "datetime.date such as date(2026, 9, 30)"
        )
    if isinstance(as_of, datetime):
        as_of = as_of.date()
    if name == "week":
        start = as_of - timedelta(days=as_of.weekday())
        end = start + timedelta(days=6)
    elif name == "month":
        start = as_of.replace(day=1)
        end = (pd.Timestamp(start) + pd.offsets.MonthEnd(1)).date()
    elif name == "quarter":
        start = date(as_of.year, 3 * ((as_of.month - 1) // 3) + 1, 1)
        end = (pd.Timestamp(start) + pd.offsets.QuarterEnd(1)).date()
    elif name == "year":
        start, end = date(as_of.year, 1, 1), date(as_of.year, 12, 31)
    elif name == "ytd":
        start, end = date(as_of.year, 1, 1), as_of
    else:
        start, end = _minus_year(as_of) + timedelta(days=1), as_of
    return Period(name, start, end, as_of)
