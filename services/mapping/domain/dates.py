"""Billing periods and effective dates.

A contract bills in periods anchored on its start date: a monthly contract that starts on
2026-01-15 has periods 15th..14th. A start on the 29th-31st uses the last day of shorter months
(start 2026-01-31 -> periods start Jan 31, Feb 28, Mar 31, Apr 30, ...); the anchor is always the
start date itself, so a short month never drags later periods to an earlier day.
"""
import calendar
import datetime as dt

from .errors import MappingDomainError

NEW_LINE, INCREASE, DECREASE, CANCEL, PRICE_CHANGE, NO_CHANGE = (
    "new_line", "increase", "decrease", "cancel", "price_change", "no_change")
CHANGE_KINDS = (NEW_LINE, INCREASE, DECREASE, CANCEL, PRICE_CHANGE, NO_CHANGE)
ON_THE_DAY_SEEN = (NEW_LINE, INCREASE, NO_CHANGE)
NEXT_PERIOD_UNLESS_CREDIT = (DECREASE, CANCEL)


def last_day_of_month(year, month):
    return calendar.monthrange(year, month)[1]


def anchored(anchor, months):
    """The date ``months`` months after ``anchor``, on the anchor's day of the month or the last
    day of a shorter month (anchor 2024-01-31, 1 -> 2024-02-29)."""
    index = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return dt.date(year, month, min(anchor.day, last_day_of_month(year, month)))


def _check_period(period_months):
    if isinstance(period_months, bool) or not isinstance(period_months, int) or period_months < 1:
        raise MappingDomainError(f"period_months must be a whole number >= 1, not {period_months!r}")


def period_index(contract_start, on, period_months=1):
    """Which period (0 = the first) contains day ``on``; -1 before the contract starts."""
    _check_period(period_months)
    if on < contract_start:
        return -1
    months = (on.year - contract_start.year) * 12 + on.month - contract_start.month
    k = months // period_months
    while anchored(contract_start, k * period_months) > on:
        k -= 1
    return k


def period_start(contract_start, on, period_months=1):
    """First day of the billing period that contains ``on`` (the contract start before it starts)."""
    return anchored(contract_start, max(period_index(contract_start, on, period_months), 0) * period_months)


def next_period_start(contract_start, on, period_months=1):
    """First day of the billing period after the one containing ``on``. Before the contract
    starts, its first period is the next one: the contract start date.

    ``contract_start`` None (unknown): calendar months are assumed (the 1st of the next month).
    """
    if contract_start is None:
        contract_start = dt.date(2000, 1, 1)
    k = period_index(contract_start, on, period_months)
    return contract_start if k < 0 else anchored(contract_start, (k + 1) * period_months)


def effective_date(kind, *, seen_on, contract_start=None, period_months=1,
                   credit_decreases_immediately=False, override=None):
    """When a change takes effect in the PSA.

    - ``override`` (a person's date on an approval) wins over everything.
    - new line / increase: the day the change was seen (the PSA prorates it).
    - decrease / cancel: first day of the contract's next billing period (no prorated credit),
      or the day seen when the tenant chose credit_decreases_immediately.
    - price change: first day of the next billing period, whatever the credit setting.
    No automatic date is earlier than the contract start date.
    """
    if override is not None:
        return override
    if kind not in CHANGE_KINDS:
        raise MappingDomainError(f"unknown change kind {kind!r}")
    if kind in ON_THE_DAY_SEEN or (kind in NEXT_PERIOD_UNLESS_CREDIT and credit_decreases_immediately):
        return max(seen_on, contract_start) if contract_start else seen_on
    return next_period_start(contract_start, seen_on, period_months)
