import datetime as dt

import pytest

from services.mapping.domain import MappingDomainError, anchored, effective_date, next_period_start, period_start

d = dt.date


# --- periods -------------------------------------------------------------------------------------
@pytest.mark.parametrize("on, start, nxt", [
    (d(2026, 1, 15), d(2026, 1, 15), d(2026, 2, 15)),   # the start day itself
    (d(2026, 2, 14), d(2026, 1, 15), d(2026, 2, 15)),   # last day of the first period
    (d(2026, 2, 15), d(2026, 2, 15), d(2026, 3, 15)),   # first day of the second
    (d(2026, 12, 20), d(2026, 12, 15), d(2027, 1, 15)), # across the year end
    (d(2027, 1, 3), d(2026, 12, 15), d(2027, 1, 15)),
])
def test_periods_anchored_on_the_15th(on, start, nxt):
    assert period_start(d(2026, 1, 15), on) == start
    assert next_period_start(d(2026, 1, 15), on) == nxt


def test_start_on_the_1st_is_calendar_months():
    assert next_period_start(d(2026, 1, 1), d(2026, 4, 30)) == d(2026, 5, 1)
    assert next_period_start(d(2026, 1, 1), d(2026, 5, 1)) == d(2026, 6, 1)


def test_start_on_the_31st_uses_the_last_day_of_shorter_months():
    start = d(2026, 1, 31)
    assert [anchored(start, i) for i in range(5)] == [d(2026, 1, 31), d(2026, 2, 28), d(2026, 3, 31),
                                                      d(2026, 4, 30), d(2026, 5, 31)]


@pytest.mark.parametrize("on, start, nxt", [
    (d(2026, 2, 27), d(2026, 1, 31), d(2026, 2, 28)),
    (d(2026, 2, 28), d(2026, 2, 28), d(2026, 3, 31)),
    (d(2026, 3, 30), d(2026, 2, 28), d(2026, 3, 31)),
    (d(2026, 3, 31), d(2026, 3, 31), d(2026, 4, 30)),
    (d(2026, 4, 29), d(2026, 3, 31), d(2026, 4, 30)),
])
def test_periods_of_a_start_on_the_31st(on, start, nxt):
    assert period_start(d(2026, 1, 31), on) == start
    assert next_period_start(d(2026, 1, 31), on) == nxt


def test_leap_year_february_with_a_start_on_the_31st():
    assert next_period_start(d(2024, 1, 31), d(2024, 2, 10)) == d(2024, 2, 29)
    assert next_period_start(d(2024, 1, 31), d(2024, 2, 29)) == d(2024, 3, 31)


def test_start_on_the_29th_in_a_non_leap_february():
    assert next_period_start(d(2025, 1, 29), d(2025, 2, 1)) == d(2025, 2, 28)
    assert next_period_start(d(2025, 1, 29), d(2025, 2, 28)) == d(2025, 3, 29)


def test_start_on_leap_day_anchors_on_the_29th():
    start = d(2024, 2, 29)
    assert anchored(start, 12) == d(2025, 2, 28)
    assert anchored(start, 13) == d(2025, 3, 29)
    assert anchored(start, 48) == d(2028, 2, 29)


def test_short_month_does_not_drag_later_periods():
    # after Feb 28 the anchor is still the 30th, not the 28th
    assert next_period_start(d(2026, 1, 30), d(2026, 3, 1)) == d(2026, 3, 30)


def test_quarterly_periods():
    assert next_period_start(d(2026, 1, 15), d(2026, 2, 20), period_months=3) == d(2026, 4, 15)
    assert next_period_start(d(2026, 1, 15), d(2026, 4, 15), period_months=3) == d(2026, 7, 15)
    assert period_start(d(2026, 1, 15), d(2026, 4, 14), period_months=3) == d(2026, 1, 15)


def test_yearly_periods():
    assert next_period_start(d(2025, 6, 1), d(2026, 3, 10), period_months=12) == d(2026, 6, 1)


def test_before_the_contract_starts_the_next_period_is_the_start():
    assert next_period_start(d(2026, 5, 15), d(2026, 4, 1)) == d(2026, 5, 15)
    assert period_start(d(2026, 5, 15), d(2026, 4, 1)) == d(2026, 5, 15)


def test_unknown_start_uses_calendar_months():
    assert next_period_start(None, d(2026, 3, 10)) == d(2026, 4, 1)
    assert next_period_start(None, d(2026, 12, 31)) == d(2027, 1, 1)


def test_bad_period_length():
    with pytest.raises(MappingDomainError):
        next_period_start(d(2026, 1, 1), d(2026, 2, 1), period_months=0)


# --- effective dates -------------------------------------------------------------------------------
START = d(2026, 1, 15)
SEEN = d(2026, 3, 10)


def test_increase_is_effective_the_day_seen():
    assert effective_date("increase", seen_on=SEEN, contract_start=START) == SEEN


def test_new_line_is_effective_the_day_seen():
    assert effective_date("new_line", seen_on=SEEN, contract_start=START) == SEEN


@pytest.mark.parametrize("kind", ["decrease", "cancel"])
def test_decrease_and_cancel_wait_for_the_next_period(kind):
    assert effective_date(kind, seen_on=SEEN, contract_start=START) == d(2026, 3, 15)


@pytest.mark.parametrize("kind", ["decrease", "cancel"])
def test_credit_decreases_immediately(kind):
    assert effective_date(kind, seen_on=SEEN, contract_start=START, credit_decreases_immediately=True) == SEEN


def test_decrease_on_the_first_day_of_a_period_waits_a_whole_period():
    assert effective_date("decrease", seen_on=d(2026, 3, 15), contract_start=START) == d(2026, 4, 15)


def test_price_change_is_next_period_even_with_immediate_credit():
    assert effective_date("price_change", seen_on=SEEN, contract_start=START,
                          credit_decreases_immediately=True) == d(2026, 3, 15)


def test_override_wins():
    override = d(2026, 3, 1)
    for kind in ("increase", "decrease", "cancel", "price_change"):
        assert effective_date(kind, seen_on=SEEN, contract_start=START, override=override) == override


def test_increase_before_the_contract_start_is_clamped_to_the_start():
    assert effective_date("increase", seen_on=d(2026, 1, 2), contract_start=START) == START


def test_decrease_with_a_month_end_contract():
    assert effective_date("decrease", seen_on=d(2026, 2, 10), contract_start=d(2025, 12, 31)) == d(2026, 2, 28)


def test_unknown_kind():
    with pytest.raises(MappingDomainError):
        effective_date("upgrade", seen_on=SEEN)
