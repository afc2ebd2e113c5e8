"""Dates, monthly contract periods and the per-line unit ledger.

Autotask never stores a unit count on a ContractService: the count is the running
sum of ContractServiceAdjustments by effective date, reported per contract period
by ContractServiceUnits. This module holds that arithmetic.
"""
from __future__ import annotations

import bisect
import calendar
import datetime as dt
import re

DATE_FMT = "%Y-%m-%dT%H:%M:%S"
MAX_PERIODS = 600  # ids of unit rows are contractServiceID * 1000 + period index

_ISO_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$")


class DateError(ValueError):
    pass


def fmt_datetime(value: dt.datetime) -> str:
    """Autotask's wire format: UTC, no zone suffix, milliseconds."""
    return value.strftime(DATE_FMT) + f".{value.microsecond // 1000:03d}"


def fmt_date(value: dt.date) -> str:
    return f"{value.isoformat()}T00:00:00.000"


def parse_wire(value, date_only: bool) -> str:
    """Normalise an input date/datetime to the wire format.

    Date-only fields keep the calendar date as written (no zone shift: a client
    sending 2026-11-01T00:00:00+02:00 means 1 November). Datetime fields are
    converted to UTC.
    """
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        return fmt_date(value)
    elif isinstance(value, str):
        m = _ISO_RE.match(value.strip())
        if not m:
            raise DateError(f"'{value}' is not a valid date")
        y, mo, d, hh, mi, ss, frac, zone = m.groups()
        try:
            if date_only:
                return fmt_date(dt.date(int(y), int(mo), int(d)))
            micro = int((frac or "0").ljust(6, "0")[:6])
            parsed = dt.datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0), micro)
        except ValueError as exc:
            raise DateError(f"'{value}' is not a valid date") from exc
        if zone and zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            digits = zone[1:].replace(":", "")
            offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
            parsed = parsed - sign * offset
    else:
        raise DateError(f"'{value}' is not a valid date")
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if date_only:
        return fmt_date(parsed.date())
    return fmt_datetime(parsed)


def to_date(wire: str) -> dt.date:
    return dt.date(int(wire[0:4]), int(wire[5:7]), int(wire[8:10]))


def add_months(day: dt.date, months: int, anchor_day: int | None = None) -> dt.date:
    """Same day-of-month `months` later, clamped to the month's length (31 Jan + 1 = 28/29 Feb)."""
    total = day.year * 12 + (day.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    want = anchor_day or day.day
    return dt.date(year, month, min(want, calendar.monthrange(year, month)[1]))


class Periods:
    """Monthly periods anchored on the contract start date; index 0 starts on startDate."""

    def __init__(self, start: dt.date, end: dt.date | None, horizon: dt.date):
        self.start = start
        last_day = end if end is not None else horizon
        self.starts: list[dt.date] = []
        self.ends: list[dt.date] = []
        k = 0
        while k < MAX_PERIODS:
            p_start = add_months(start, k, start.day)
            if p_start > last_day:
                break
            p_end = add_months(start, k + 1, start.day) - dt.timedelta(days=1)
            if end is not None and p_end > end:
                p_end = end
            self.starts.append(p_start)
            self.ends.append(p_end)
            k += 1
        # wire strings cached once: rows are built many times
        self.start_wire = [fmt_date(d) for d in self.starts]
        self.end_wire = [fmt_date(d) for d in self.ends]

    def __len__(self) -> int:
        return len(self.starts)

    def index_of(self, day: dt.date) -> int:
        """Index of the period containing `day` (clamped into range)."""
        if not self.starts:
            return 0
        i = bisect.bisect_right(self.starts, day) - 1
        return max(0, min(i, len(self.starts) - 1))


class Ledger:
    """Unit changes and price changes of one ContractService, by date."""

    def __init__(self):
        self.dates: list[dt.date] = []
        self.changes: list[int] = []
        self.cum: list[int] = []
        self.price_dates: list[dt.date] = []
        self.prices: list[tuple[float | None, float | None]] = []

    def add(self, day: dt.date, change: int) -> None:
        i = bisect.bisect_right(self.dates, day)
        self.dates.insert(i, day)
        self.changes.insert(i, change)
        running = self.cum[i - 1] if i else 0
        self.cum[i:] = []
        for c in self.changes[i:]:
            running += c
            self.cum.append(running)

    def units_at(self, day: dt.date) -> int:
        i = bisect.bisect_right(self.dates, day)
        return self.cum[i - 1] if i else 0

    def would_go_negative(self, day: dt.date, change: int) -> bool:
        """True when adding `change` on `day` makes the running total negative on any later date."""
        if self.units_at(day) + change < 0:
            return True
        i = bisect.bisect_right(self.dates, day)
        return any(c + change < 0 for c in self.cum[i:])

    def first_date(self) -> dt.date | None:
        return self.dates[0] if self.dates else None

    def set_price(self, day: dt.date, price: float | None, cost: float | None) -> None:
        i = bisect.bisect_right(self.price_dates, day)
        self.price_dates.insert(i, day)
        self.prices.insert(i, (price, cost))

    def price_at(self, day: dt.date) -> tuple[float | None, float | None]:
        """Price/cost in force at `day`; before the first change, the first known price."""
        if not self.prices:
            return None, None
        i = bisect.bisect_right(self.price_dates, day)
        return self.prices[i - 1] if i else self.prices[0]
